#include "store/deliver.h"

#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/err.h"
#include "lib/io.h"
#include "lib/log.h"
#include "lib/xmalloc.h"
#include "store/imap.h"
#include "store/maildir.h"

const char *
deliver_sent_folder(const struct conf_account *a)
{
	return a->sent_folder_set ? a->sent_folder : DELIVER_FOLDER_SENT;
}

const struct deliver_backend *
deliver_backend_for(enum conf_store_type t)
{
	switch (t) {
	case CONF_STORE_MAILDIR:
		return &maildir_backend;
	case CONF_STORE_IMAP:
		return &imap_backend;
	}
	return NULL;
}

/* This host's name as the Maildir spec wants it in file names: "/" and
 * ":" would split the name, so they become "\057" and "\072". */
static void
maildir_host(char *out, size_t size)
{
	char host[256];
	size_t i, o = 0;

	if (gethostname(host, sizeof host) == -1 || host[0] == '\0')
		snprintf(host, sizeof host, "localhost");
	host[sizeof host - 1] = '\0';
	for (i = 0; host[i] != '\0' && o + 5 < size; i++) {
		if (host[i] == '/' || host[i] == ':') {
			snprintf(out + o, size - o, "\\%03o", (unsigned char)host[i]);
			o += 4;
		} else
			out[o++] = host[i];
	}
	out[o] = '\0';
}

char *
deliver_key(const char *key_tag)
{
	/* Process-wide, and threads of the daemon's pool share it: two keys
	 * in the same microsecond of one process still differ. */
	static atomic_ulong seq;
	unsigned long q = atomic_fetch_add(&seq, 1) + 1;
	/* The host part is the same for every key of a process: worked out
	 * once per process (a forked child, maybe in a UTS namespace of its
	 * own, works it out again). */
	static char host[4 * 256 + 1];
	static pid_t host_pid;
	pid_t pid = getpid();
	struct timespec ts;

	/* The tag sits between "." separators of a file name that tmp_cleanup
	 * parses back: it must not hold one, nor "/" or ":". */
	if (strpbrk(key_tag, "./:") != NULL)
		fatalx("deliver_key: bad key tag \"%s\"", key_tag);
	clock_gettime(CLOCK_REALTIME, &ts);
	if (host_pid != pid) {
		maildir_host(host, sizeof host);
		host_pid = pid;
	}
	return xasprintf("%lld.M%ldP%ldQ%lu%s.%s", (long long)ts.tv_sec,
	    ts.tv_nsec / 1000, (long)pid, q, key_tag, host);
}

static const char *
skip_digits(const char *p)
{
	const char *q = p;

	while (*q >= '0' && *q <= '9')
		q++;
	return q == p ? NULL : q;
}

bool
deliver_key_has_tag(const char *name, const char *key_tag)
{
	size_t tl = strlen(key_tag);
	const char *p, *q;

	if ((p = skip_digits(name)) == NULL || strncmp(p, ".M", 2) != 0)
		return false;
	if ((p = skip_digits(p + 2)) == NULL || *p != 'P')
		return false;
	if ((p = skip_digits(p + 1)) == NULL || *p != 'Q')
		return false;
	/* Q's digits end where the tag starts; a tag could begin with a
	 * digit itself, so try every split after at least one digit. */
	for (q = p + 2; q[-1] >= '0' && q[-1] <= '9'; q++)
		if (strncmp(q, key_tag, tl) == 0 && q[tl] == '.')
			return true;
	return false;
}

int
deliver_tmp_sweep(const char *dir, const char *key_tag, const char *account, char **err)
{
	struct dirent *de;
	DIR *d;
	int r = 0;

	if ((d = opendir(dir)) == NULL)
		return errno == ENOENT ? 0 : err_errno(err, "opening %s", dir);
	while ((de = readdir(d)) != NULL) {
		if (!deliver_key_has_tag(de->d_name, key_tag))
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == -1 && errno != ENOENT) {
			r = err_errno(err, "removing %s/%s", dir, de->d_name);
			break;
		}
		log_debug("%s: removed %s/%s left by an interrupted run", account, dir,
		    de->d_name);
	}
	closedir(d);
	return r;
}

/* Copies path into fd converting line endings to the store's: LF, or CRLF
 * (a bare LF gains a CR; an existing CRLF is kept). */
static int
copy_converted(FILE *in, int fd, int crlf, uint64_t *size)
{
	char buf[65536];
	size_t n, o = 0;
	int c, prev = 0;

	*size = 0;
	while ((c = getc(in)) != EOF) {
		if (c == '\n' && crlf && prev != '\r')
			buf[o++] = '\r';
		else if (c == '\n' && !crlf && prev == '\r')
			o--;		/* CRLF -> LF: drop the CR just written */
		buf[o++] = (char)c;
		prev = c;
		if (o >= sizeof buf - 2) {
			/* Keep a trailing CR back: the next byte may be its LF. */
			n = (buf[o - 1] == '\r') ? o - 1 : o;
			if (io_write_all(fd, buf, n) == -1)
				return -1;
			*size += n;
			memmove(buf, buf + n, o - n);
			o -= n;
		}
	}
	if (ferror(in) || io_write_all(fd, buf, o) == -1)
		return -1;
	*size += o;
	return 0;
}

int
deliver_file(const struct conf *c, const struct conf_account *a, const char *folder,
    const char *key, const char *path, unsigned flags, time_t date, char **location,
    char **err)
{
	const struct deliver_backend *be = deliver_backend_for(c->store.type);
	struct deliver_msg m = { .key = key, .folder = folder, .fd = -1, .date = date,
	    .flags = flags };
	void *ctx = NULL;
	FILE *in = NULL;
	int rc = -1, found;

	if (location)
		*location = NULL;
	if (be == NULL) {
		*err = xstrdup("this store type is not supported");
		return -1;
	}
	if (strcmp(folder, DELIVER_FOLDER_SENT) == 0 && !be->special_use)
		m.folder = folder = DELIVER_SENT_DEFAULT;
	if (be->open(c, a, &ctx, err) < 0)
		return -1;
	if ((found = be->find(ctx, folder, key, &m.location, err)) != 0) {
		rc = found == 1 ? 0 : -1;
		goto out;
	}
	if ((in = fopen(path, "re")) == NULL) {
		*err = xasprintf("%s: %s", path, strerror(errno));
		goto out;
	}
	if (be->tmp_create(ctx, folder, key, 0, &m.fd, err) == -1)
		goto out;
	if (copy_converted(in, m.fd, be->crlf, &m.size) == -1) {
		*err = xasprintf("copying %s into the store: %s", path, strerror(errno));
		char *derr = NULL;

		close(m.fd);
		be->tmp_discard(ctx, folder, key, &derr);
		free(derr);
		goto out;
	}
	rc = be->deliver(ctx, &m, 1, err) < 0 ? -1 : 0;
out:
	if (in)
		fclose(in);
	if (rc == 0 && location)
		*location = m.location;
	else
		free(m.location);
	be->close(ctx);
	return rc;
}

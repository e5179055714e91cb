#include "store/deliver.h"

#include <sys/stat.h>

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

/* Copies in into fd converting line endings to the store's: LF, or CRLF
 * (a bare LF gains a CR; a CRLF stays one; a bare CR is kept as it is).
 * *size: the bytes written. */
static int
copy_converted(FILE *in, int fd, int crlf, uint64_t *size)
{
	char ib[65536], ob[2 * sizeof ib + 2];
	bool cr = false;	/* a CR was read and is held until the next byte */
	size_t n, i, o;

	*size = 0;
	while ((n = fread(ib, 1, sizeof ib, in)) > 0) {
		for (i = 0, o = 0; i < n; i++) {
			char c = ib[i];

			if (c == '\n') {
				if (crlf)
					ob[o++] = '\r';
				ob[o++] = '\n';
				cr = false;
				continue;
			}
			if (cr)
				ob[o++] = '\r';
			if (!(cr = c == '\r'))
				ob[o++] = c;
		}
		if (io_write_all(fd, ob, o) == -1)
			return -1;
		*size += o;
	}
	if (ferror(in) || (cr && io_write_all(fd, "\r", 1) == -1))
		return -1;
	*size += cr;
	return 0;
}

/* After a failed deliver_file(): its temp file goes now rather than at the
 * next attempt (a failure here only leaves it for that one). */
static void
tmp_discard_quietly(const struct deliver_backend *be, void *ctx, const char *folder,
    const char *key)
{
	char *err = NULL;

	if (be->tmp_discard(ctx, folder, key, &err) == -1)
		log_debug("%s", err);
	free(err);
}

/* Readies item it for the batch: its temp file written into *m. 1 when it
 * is to be delivered, 0 when it is settled already (found in the store,
 * or failed: it->err), -1 on a backend error that ends the batch. */
static int
prepare_item(const struct deliver_backend *be, void *ctx, const char *folder,
    struct deliver_file_item *it, struct deliver_msg *m)
{
	char *loc = NULL, *err = NULL;
	struct stat sb;
	FILE *in;
	int found;

	*m = (struct deliver_msg){ .key = it->key, .folder = folder, .fd = -1,
	    .date = it->date, .flags = it->flags };
	if (it->look_first) {
		if ((found = be->find(ctx, folder, it->key, &loc, &err)) == 1) {
			free(loc);
			it->stored = true;
			return 0;
		}
		if (found < 0) {
			it->err = err;
			return -1;
		}
	}
	if ((in = fopen(it->path, "re")) == NULL) {
		it->err = xasprintf("%s: %s", it->path, strerror(errno));
		return 0;
	}
	/* A fixed key's temp file may be left by an attempt that died between
	 * creating it and storing it (a crash, a failed rename, an APPEND cut
	 * off): not in the store, so it is ours to replace. Without this,
	 * every retry would fail on the exclusive create. */
	if (be->tmp_discard(ctx, folder, it->key, &it->err) == -1 ||
	    be->tmp_create(ctx, folder, it->key, fstat(fileno(in), &sb) == 0 ?
	    (uint64_t)sb.st_size : 0, &m->fd, &it->err) == -1) {
		fclose(in);
		return 0;
	}
	if (copy_converted(in, m->fd, be->crlf, &m->size) == -1) {
		it->err = xasprintf("copying %s into the store: %s", it->path, strerror(errno));
		close(m->fd);
		m->fd = -1;
		tmp_discard_quietly(be, ctx, folder, it->key);
		fclose(in);
		return 0;
	}
	fclose(in);
	return 1;
}

/* The outcome of a deliver() of msgs[0..k) for the items they came from. */
static void
settle(const struct deliver_backend *be, void *ctx, const char *folder,
    struct deliver_file_item **of, struct deliver_msg *msgs, size_t k, int rc,
    const char *err)
{
	for (size_t i = 0; i < k; i++) {
		struct deliver_file_item *it = of[i];

		if (rc == 0 && msgs[i].refused == NULL)
			it->stored = true;
		else if (rc == 0)
			/* The store said no to this message (quota, size,
			 * content): not stored, a failure like any other. */
			it->err = xasprintf("the store refused it: %s", msgs[i].refused);
		else
			it->err = xstrdup(err != NULL ? err : "the store failed");
		if (!it->stored)
			tmp_discard_quietly(be, ctx, folder, it->key);
		free(msgs[i].location);
		free(msgs[i].refused);
	}
}

/* The items an earlier attempt may have stored are looked up after a
 * failure or a crash: the backend is told them all first (recovering),
 * so that it looks them up at once and waits for a store still taking a
 * dead attempt's message. */
static void
looked_up_first(const struct deliver_backend *be, void *ctx, const char *folder,
    const struct deliver_file_item *v, size_t n)
{
	const char **folders, **keys;
	size_t i, k = 0;

	if (be->recovering == NULL)
		return;
	folders = xcalloc(n ? n : 1, sizeof *folders);
	keys = xcalloc(n ? n : 1, sizeof *keys);
	for (i = 0; i < n; i++)
		if (v[i].look_first) {
			folders[k] = folder;
			keys[k++] = v[i].key;
		}
	if (k > 0)
		be->recovering(ctx, folders, keys, k);
	free(folders);
	free(keys);
}

size_t
deliver_files(const struct conf *c, const struct conf_account *a, const char *folder,
    struct deliver_file_item *v, size_t n, char **err)
{
	const struct deliver_backend *be = deliver_backend_for(c->store.type);
	struct deliver_msg *msgs = xcalloc(n ? n : 1, sizeof *msgs);
	struct deliver_file_item **of = xcalloc(n ? n : 1, sizeof *of);
	size_t i, k = 0, stored = 0;
	char *derr = NULL;
	void *ctx = NULL;
	int rc = 0;

	for (i = 0; i < n; i++) {
		v[i].stored = false;
		v[i].err = NULL;
	}
	if (be == NULL)
		*err = xstrdup("this store type is not supported");
	/* A store without special-use flags files "\Sent" copies in "Sent". */
	if (be != NULL && strcmp(folder, DELIVER_FOLDER_SENT) == 0 && !be->special_use)
		folder = DELIVER_SENT_DEFAULT;
	if (be == NULL || be->open(c, a, &ctx, err) < 0) {
		free(msgs);
		free(of);
		return 0;
	}
	looked_up_first(be, ctx, folder, v, n);
	for (i = 0; i < n && rc != -1; i++) {
		if ((rc = prepare_item(be, ctx, folder, &v[i], &msgs[k])) == 1)
			of[k++] = &v[i];
	}
	if (rc == -1) {
		/* A broken backend: the items not settled share its error. */
		for (size_t j = 0; j < k; j++) {
			close(msgs[j].fd);
			tmp_discard_quietly(be, ctx, folder, of[j]->key);
		}
		for (size_t j = 0; j < n; j++)
			if (!v[j].stored && v[j].err == NULL)
				v[j].err = xstrdup(v[i - 1].err);
		k = 0;
	}
	if (k > 0) {
		rc = be->deliver(ctx, msgs, k, &derr);
		settle(be, ctx, folder, of, msgs, k, rc, derr);
	}
	be->close(ctx);
	for (i = 0; i < n; i++)
		stored += v[i].stored;
	free(derr);
	free(msgs);
	free(of);
	return stored;
}

int
deliver_file(const struct conf *c, const struct conf_account *a, const char *folder,
    const char *key, const char *path, unsigned flags, time_t date, char **err)
{
	struct deliver_file_item it = { .key = key, .path = path, .flags = flags,
	    .date = date, .look_first = true };

	if (deliver_files(c, a, folder, &it, 1, err) == 1)
		return 0;
	if (it.err != NULL) {
		free(*err);
		*err = it.err;
	}
	return -1;
}

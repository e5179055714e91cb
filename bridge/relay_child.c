#include "bridge/relay_child.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sysexits.h>
#include <unistd.h>

#include "bridge/relay.h"
#include "lib/io.h"
#include "lib/log.h"
#include "lib/xmalloc.h"

#define IMAGE_MAGIC "pop3bridge relay image 1\n"

/* The image: IMAGE_MAGIC, then numbers (u64, little endian as the host
 * has it: writer and reader are the same binary) and strings (u64
 * length + 1, then the bytes; length 0 stands for NULL). */

static void
put_u64(FILE *f, uint64_t v)
{
	fwrite(&v, sizeof v, 1, f);
}

static void
put_str(FILE *f, const char *s)
{
	put_u64(f, s ? strlen(s) + 1 : 0);
	if (s)
		fwrite(s, 1, strlen(s), f);
}

static void
write_image(FILE *f, const struct conf *c, pid_t parent, const int *fds, const bool *tls,
    size_t n)
{
	enum log_verbosity v;
	int sl;

	log_settings(&v, &sl);
	fputs(IMAGE_MAGIC, f);
	put_u64(f, (uint64_t)(int64_t)v);
	put_u64(f, (uint64_t)sl);
	put_u64(f, (uint64_t)parent);
	put_u64(f, n);
	for (size_t i = 0; i < n; i++) {
		put_u64(f, (uint64_t)fds[i]);
		put_u64(f, tls[i]);
	}
	put_str(f, c->path);
	put_str(f, c->state_dir);
	put_str(f, c->relay.passwd_file);
	put_str(f, c->relay.tls_cert);
	put_str(f, c->relay.tls_key);
	put_u64(f, c->relay.max_message_size);
	put_u64(f, c->relay.max_recipients);
	put_u64(f, c->relay.max_connections);
	put_u64(f, c->relay.timeout);
	put_u64(f, c->n_accounts);
	for (size_t i = 0; i < c->n_accounts; i++) {
		const struct conf_account *a = &c->accounts[i];

		put_str(f, a->name);
		put_str(f, a->local_user);
		put_u64(f, a->has_smtp);
		put_u64(f, a->n_addresses);
		for (size_t j = 0; j < a->n_addresses; j++)
			put_str(f, a->addresses[j]);
	}
}

void
relay_child_exec(const struct conf *c, pid_t parent, const int *fds, const bool *tls,
    size_t n)
{
	char *buf = NULL, fd_arg[32];
	size_t len = 0;
	FILE *f;
	int mfd;

	if ((mfd = memfd_create("pop3bridge-relay", 0)) == -1) {
		log_warn("relay: memfd_create");
		return;
	}
	if ((f = open_memstream(&buf, &len)) == NULL) {
		log_warn("relay: open_memstream");
		return;
	}
	write_image(f, c, parent, fds, tls, n);
	if (fclose(f) != 0 || io_write_all(mfd, buf, len) == -1 ||
	    lseek(mfd, 0, SEEK_SET) == -1) {
		log_warn("relay: writing its image");
		return;
	}
	free(buf);
	/* The sockets and the image go through exec; nothing else does. */
	for (size_t i = 0; i < n; i++)
		fcntl(fds[i], F_SETFD, 0);
	snprintf(fd_arg, sizeof fd_arg, "%d", mfd);
	execl("/proc/self/exe", "pop3bridge", RELAY_CHILD_ARG, fd_arg, (char *)NULL);
	log_warn("relay: exec /proc/self/exe");
}

/*
 * The new image's side.
 */

struct in {
	const char *p, *end;
	bool bad;
};

static uint64_t
get_u64(struct in *in)
{
	uint64_t v = 0;

	if (in->bad || (size_t)(in->end - in->p) < sizeof v) {
		in->bad = true;
		return 0;
	}
	memcpy(&v, in->p, sizeof v);
	in->p += sizeof v;
	return v;
}

static char *
get_str(struct in *in)
{
	uint64_t n = get_u64(in);
	char *s;

	if (n == 0 || in->bad)
		return NULL;
	if ((uint64_t)(in->end - in->p) < n - 1) {
		in->bad = true;
		return NULL;
	}
	s = xstrndup(in->p, (size_t)(n - 1));
	in->p += n - 1;
	return s;
}

static void
read_accounts(struct in *in, struct conf *c)
{
	uint64_t n = get_u64(in);

	if (in->bad || n > (uint64_t)(in->end - in->p)) {
		in->bad = true;
		return;
	}
	c->accounts = xcalloc(n ? n : 1, sizeof *c->accounts);
	for (c->n_accounts = 0; c->n_accounts < n && !in->bad; c->n_accounts++) {
		struct conf_account *a = &c->accounts[c->n_accounts];
		uint64_t k;

		a->name = get_str(in);
		a->local_user = get_str(in);
		a->has_smtp = get_u64(in) != 0;
		k = get_u64(in);
		if (in->bad || k > (uint64_t)(in->end - in->p)) {
			in->bad = true;
			break;
		}
		a->addresses = xcalloc(k ? k : 1, sizeof *a->addresses);
		for (a->n_addresses = 0; a->n_addresses < k; a->n_addresses++)
			a->addresses[a->n_addresses] = get_str(in);
	}
}

/* The image after its magic: log settings (applied), the daemon's pid,
 * the sockets, then the configuration part into c. false: damaged. */
static bool
read_image(struct in *in, struct conf *c, pid_t *parent, int **fds, bool **tls, size_t *n)
{
	enum log_verbosity v = (enum log_verbosity)(int64_t)get_u64(in);
	int sl = (int)get_u64(in);

	log_init(v, sl);
	*parent = (pid_t)get_u64(in);
	if ((*n = (size_t)get_u64(in)) > 4096)
		in->bad = true;
	*fds = xcalloc(*n && !in->bad ? *n : 1, sizeof **fds);
	*tls = xcalloc(*n && !in->bad ? *n : 1, sizeof **tls);
	for (size_t i = 0; i < *n && !in->bad; i++) {
		(*fds)[i] = (int)get_u64(in);
		(*tls)[i] = get_u64(in) != 0;
		fcntl((*fds)[i], F_SETFD, FD_CLOEXEC);
	}
	c->path = get_str(in);
	c->state_dir = get_str(in);
	c->relay.passwd_file = get_str(in);
	c->relay.tls_cert = get_str(in);
	c->relay.tls_key = get_str(in);
	c->relay.max_message_size = get_u64(in);
	c->relay.max_recipients = (unsigned)get_u64(in);
	c->relay.max_connections = (unsigned)get_u64(in);
	c->relay.timeout = (unsigned)get_u64(in);
	read_accounts(in, c);
	return !in->bad && c->state_dir != NULL && c->relay.passwd_file != NULL;
}

int
relay_child_main(const char *fd_arg)
{
	struct conf *c = xcalloc(1, sizeof *c);
	char *buf = NULL, *end, *path;
	int fd = (int)strtol(fd_arg, &end, 10), *fds = NULL, rc;
	size_t len = 0, n = 0, magic = strlen(IMAGE_MAGIC);
	bool *tls = NULL, ok;
	struct in in;
	pid_t parent;

	path = xasprintf("/proc/self/fd/%d", fd);
	if (*end != '\0' || io_read_file(path, 64u << 20, &buf, &len, NULL) == -1 ||
	    len < magic || memcmp(buf, IMAGE_MAGIC, magic) != 0) {
		fprintf(stderr, "pop3bridge: %s is for the relay process pop3bridge starts\n",
		    RELAY_CHILD_ARG);
		rc = EX_USAGE;
		goto out;
	}
	close(fd);
	in = (struct in){ buf + magic, buf + len, false };
	ok = read_image(&in, c, &parent, &fds, &tls, &n);
	free(buf);
	buf = NULL;
	if (!ok) {
		log_warnx("relay: its image is damaged");
		rc = EX_SOFTWARE;
	} else
		rc = relay_serve(c, parent, fds, tls, n);
out:
	free(path);
	free(buf);
	free(fds);
	free(tls);
	conf_free(c);
	return rc;
}

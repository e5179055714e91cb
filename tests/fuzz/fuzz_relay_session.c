/* The submission server's session (bridge/relay_session.c with
 * relay_auth.c, relay_msg.c, relay_io.c, relay_data.c): the input is what
 * a client sends, as one stream over a socketpair, into the real command
 * loop with a real config, passwd-file (alice / secret) and state
 * directory, so that EHLO, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA into the
 * queue, RSET, NOOP and the error limits are all reachable. The first
 * input byte says whether the peer is loopback (AUTH offered).
 * Then the DATA decoder alone: relay_data_decode over the input whole and
 * in pieces.
 * Properties: no memory error, no undefined behaviour; every reply line
 * is "DDD" + space or "-", printable, CRLF-ended, under 1000 bytes; the
 * decoder's output for the input whole equals its output in pieces, never
 * holds a bare CR or LF unless it flagged one, and never carries the
 * final CRLF.CRLF. */
#include <sys/socket.h>
#include <sys/stat.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge/relay_data.h"
#include "bridge/relay_session.h"
#include "conf/conf.h"
#include "lib/log.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct conf *conf;
static struct relay_session_ctx ctx;
static char spool[600], state_dir[300];
static unsigned long runs;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char path[600], *text;
	const char *dir;

	(void)argc;
	(void)argv;
	log_init(LOG_QUIET, 0);
	fuzz_quiet();
	signal(SIGPIPE, SIG_IGN);
	dir = fuzz_dir();
	snprintf(state_dir, sizeof state_dir, "%s/state", dir);
	snprintf(spool, sizeof spool, "%s/spool", state_dir);
	snprintf(path, sizeof path, "%s/passwd", dir);
	fuzz_write_file(path, "alice:{PLAIN}secret::::::\nbob:{PLAIN}hunter2::::::\n", 50, 0644);
	text = NULL;
	if (asprintf(&text,
	    "state_dir = \"%s\"\n"
	    "relay {\n  listen = { \"127.0.0.1:1\" }\n  passwd_file = \"%s\"\n"
	    "  max_message_size = 3000\n  max_recipients = 4\n  timeout = 30\n}\n"
	    "account \"work\" {\n  local_user = \"alice\"\n"
	    "  pop3 {\n    host = \"127.0.0.1\"\n    port = 1\n    tls = \"none\"\n"
	    "    user = \"alice\"\n    password = \"x\"\n    allow_plaintext = true\n  }\n"
	    "  smtp {\n    host = \"127.0.0.1\"\n    port = 1\n    tls = \"none\"\n  }\n"
	    "  addresses = { \"alice@example.com\", \"a@example.org\" }\n}\n",
	    state_dir, path) == -1)
		abort();
	snprintf(path, sizeof path, "%s/p3b.conf", dir);
	fuzz_write_file(path, text, strlen(text), 0600);
	free(text);
	if (conf_load(path, &conf, fuzz_errf()) != 0)
		abort();
	ctx.c = conf;
	ctx.cred = NULL;
	snprintf(ctx.hostname, sizeof ctx.hostname, "fuzz.example");
	return 0;
}

struct drain {
	int fd;
	char *buf;
	size_t len, cap;
};

/* The client side: reads every reply until the session closes. */
static void *
drain(void *arg)
{
	struct drain *d = arg;
	ssize_t n;

	for (;;) {
		if (d->len + 4096 > d->cap) {
			d->cap = d->cap ? 2 * d->cap : 65536;
			d->buf = realloc(d->buf, d->cap);
		}
		if ((n = read(d->fd, d->buf + d->len, 4096)) <= 0)
			break;
		d->len += (size_t)n;
	}
	return NULL;
}

static void
check_replies(const char *p, size_t n)
{
	while (n > 0) {
		const char *lf = memchr(p, '\n', n);
		size_t len;

		FUZZ_CHECK(lf != NULL, "reply without a line end");
		len = (size_t)(lf - p) + 1;
		FUZZ_CHECK(len >= 6 && len <= 1000, "reply line of %zu bytes", len);
		FUZZ_CHECK(p[len - 2] == '\r', "reply line without CRLF");
		FUZZ_CHECK(p[0] >= '2' && p[0] <= '5' && p[1] >= '0' && p[1] <= '9' &&
		    p[2] >= '0' && p[2] <= '9' && (p[3] == ' ' || p[3] == '-'),
		    "reply \"%.*s\"", (int)len - 2, p);
		for (size_t i = 0; i < len - 2; i++)
			FUZZ_CHECK((unsigned char)p[i] >= 0x20 && p[i] != 0x7f,
			    "control byte in a reply");
		p += len;
		n -= len;
	}
}

/* Queued messages are removed so that the spool stays small; the
 * database is started afresh now and then. */
static void
tidy(void)
{
	DIR *d = opendir(spool);
	struct dirent *e;
	char path[900];

	if (d != NULL) {
		while ((e = readdir(d)) != NULL)
			if (strstr(e->d_name, ".msg") != NULL) {
				snprintf(path, sizeof path, "%s/%s", spool, e->d_name);
				unlink(path);
			}
		closedir(d);
	}
	if (++runs % 2000 == 0) {
		static const char *const files[] = { "state.db", "state.db-wal", "state.db-shm" };

		for (size_t i = 0; i < 3; i++) {
			snprintf(path, sizeof path, "%s/%s", state_dir, files[i]);
			unlink(path);
		}
	}
}

static void
session(const uint8_t *data, size_t size, bool loopback)
{
	struct sockaddr_in peer = { .sin_family = AF_INET };
	struct drain d = { 0 };
	pthread_t th;
	int sv[2], sz = 1 << 20;
	size_t off = 0;

	peer.sin_addr.s_addr = htonl(loopback ? 0x7f000001 : 0xc0000207);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
		abort();
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
	while (off < size) {
		ssize_t n = write(sv[1], data + off, size - off);

		if (n <= 0)
			abort();
		off += (size_t)n;
	}
	shutdown(sv[1], SHUT_WR);
	d.fd = sv[1];
	if (pthread_create(&th, NULL, drain, &d) != 0)
		abort();
	/* Closes sv[0]. */
	relay_session_run(&ctx, sv[0], false, (const struct sockaddr *)&peer);
	pthread_join(th, NULL);
	close(sv[1]);
	check_replies(d.buf, d.len);
	free(d.buf);
	tidy();
}

/* The decoder, whole and in pieces of 1 to 8 bytes. */
static void
decode(const uint8_t *data, size_t size, size_t step)
{
	struct relay_data whole, parts;
	char *o1 = malloc(size + 1), *o2 = malloc(size + 2), *piece = malloc(step + 1);
	size_t n1, used1, n2 = 0, used2 = 0;

	relay_data_init(&whole);
	used1 = relay_data_decode(&whole, (const char *)data, size, o1, &n1);
	FUZZ_CHECK(used1 <= size && n1 <= size, "decoder output too long");
	relay_data_init(&parts);
	while (used2 < size && !parts.done) {
		size_t k = size - used2 < step ? size - used2 : step, got;

		size_t used = relay_data_decode(&parts, (const char *)data + used2, k, piece, &got);
		FUZZ_CHECK(got <= k + 1, "%zu bytes out of %zu in", got, k);
		FUZZ_CHECK(n2 + got <= size + 1, "more out than in");
		memcpy(o2 + n2, piece, got);
		n2 += got;
		used2 += used;
	}
	FUZZ_CHECK(whole.done == parts.done && whole.bare_eol == parts.bare_eol &&
	    used1 == used2, "whole and in pieces disagree on the end");
	FUZZ_CHECK(n1 == n2 && memcmp(o1, o2, n1) == 0, "whole and in pieces differ");
	if (whole.done) {
		FUZZ_CHECK(used1 >= 3 && memcmp(data + used1 - 3, ".\r\n", 3) == 0,
		    "the data did not end at CRLF.CRLF");
		if (!whole.bare_eol)
			for (size_t i = 0; i < n1; i++)
				FUZZ_CHECK((o1[i] != '\r' || (i + 1 < n1 && o1[i + 1] == '\n')) &&
				    (o1[i] != '\n' || (i > 0 && o1[i - 1] == '\r')),
				    "bare CR or LF passed without the flag");
	}
	free(o1);
	free(o2);
	free(piece);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	session(data + 1, size - 1, !(data[0] & 1));
	decode(data + 1, size - 1, 1 + ((data[0] >> 1) & 7));
	return 0;
}

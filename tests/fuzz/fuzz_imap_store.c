/* The IMAP store (store/imap*.c) against a hostile server: the input is
 * everything the server says, sent at once on a loopback connection
 * (then its end), while pop3bridge's backend does what a pass does: open
 * (greeting, CAPABILITY, LOGIN, CAPABILITY, LIST "" ""), find() a key in
 * INBOX (LIST, EXAMINE, UID SEARCH), deliver() one message into
 * "Work/Sub" (LIST, CREATE, SUBSCRIBE, APPEND with its continuation,
 * literal, tagged reply, APPENDUID, TRYCREATE retry), find() it, close
 * (LOGOUT). So libetpan's response parser and our reading of its results
 * (capabilities, delimiter, LIST flags, APPENDUID, SEARCH results,
 * UIDVALIDITY) see every reply the input holds; libetpan numbers its tags
 * 1, 2, 3, ... so seeds can answer them.
 * Properties: no memory error, no undefined behaviour; every error is one
 * line naming the store; a delivered message has a location of the form
 * "Work/Sub" or "Work/Sub;UIDVALIDITY=V;UID=U", a refused one a reason and
 * no location; a failed deliver() leaves no location set. */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libetpan/libetpan.h>

#include "conf/conf.h"
#include "lib/log.h"
#include "store/deliver.h"
#include "store/imap.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct conf *conf;
static int listener = -1;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof a;
	char path[600], *text = NULL;
	const char *dir;

	(void)argc;
	(void)argv;
	log_init(LOG_QUIET, 0);
	fuzz_quiet();
	signal(SIGPIPE, SIG_IGN);
	mailstream_network_delay.tv_sec = 5;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1 ||
	    bind(listener, (struct sockaddr *)&a, sizeof a) == -1 ||
	    listen(listener, 8) == -1 ||
	    getsockname(listener, (struct sockaddr *)&a, &alen) == -1)
		abort();
	dir = fuzz_dir();
	if (asprintf(&text,
	    "state_dir = \"%s/state\"\n"
	    "store {\n  type = \"imap\"\n  host = \"127.0.0.1\"\n  port = %u\n"
	    "  tls = \"none\"\n  allow_plaintext = true\n  user = \"%%u\"\n"
	    "  password = \"pw\"\n  timeout = 5\n}\n"
	    "account \"work\" {\n  local_user = \"alice\"\n  folder = \"Work/Sub\"\n"
	    "  pop3 {\n    host = \"127.0.0.1\"\n    port = 1\n    tls = \"none\"\n"
	    "    user = \"alice\"\n    password = \"x\"\n    allow_plaintext = true\n  }\n}\n",
	    dir, (unsigned)ntohs(a.sin_port)) == -1)
		abort();
	snprintf(path, sizeof path, "%s/p3b.conf", dir);
	fuzz_write_file(path, text, strlen(text), 0600);
	free(text);
	if (conf_load(path, &conf, fuzz_errf()) != 0)
		abort();
	return 0;
}

struct server {
	const uint8_t *data;
	size_t size;
};

/* One connection: says everything, then reads what the client sends
 * until it hangs up. */
static void *
serve(void *arg)
{
	struct server *s = arg;
	char sink[4096];
	size_t off = 0;
	int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);

	if (fd == -1)
		return NULL;
	while (off < s->size) {
		ssize_t n = write(fd, s->data + off, s->size - off);

		if (n <= 0)
			break;
		off += (size_t)n;
	}
	shutdown(fd, SHUT_WR);
	while (read(fd, sink, sizeof sink) > 0)
		;
	close(fd);
	return NULL;
}

static void
check_err(char **err)
{
	if (*err == NULL)
		return;
	FUZZ_CHECK(strchr(*err, '\n') == NULL && strchr(*err, '\r') == NULL,
	    "multi-line error: %s", *err);
	free(*err);
	*err = NULL;
}

static void
check_location(const char *loc)
{
	unsigned v, u;
	char rest;

	if (strcmp(loc, "Work/Sub") == 0)
		return;
	FUZZ_CHECK(sscanf(loc, "Work/Sub;UIDVALIDITY=%u;UID=%u%c", &v, &u, &rest) == 2,
	    "location %s", loc);
}

static void
pass(void)
{
	const struct deliver_backend *be = &imap_backend;
	const struct conf_account *a = &conf->accounts[0];
	static const char msg[] = "Subject: fuzz\r\n\r\nbody\r\n";
	struct deliver_msg m = { 0 };
	char *err = NULL, *loc = NULL, *key1, *key2;
	void *ctx = NULL;
	int fd = -1, r;

	if (be->open(conf, a, &ctx, &err) < 0) {
		FUZZ_CHECK(err != NULL && strstr(err, "imap store") != NULL,
		    "open error %s", err ? err : "(none)");
		check_err(&err);
		return;
	}
	key1 = deliver_key("X1");
	key2 = deliver_key("X1");
	r = be->find(ctx, "INBOX", key1, &loc, &err);
	FUZZ_CHECK(r <= 1 && (r < 0) == (err != NULL), "find %d", r);
	check_err(&err);
	free(loc);
	loc = NULL;

	if (be->tmp_create(ctx, "Work/Sub", key2, sizeof msg - 1, &fd, &err) == 0) {
		if (write(fd, msg, sizeof msg - 1) != (ssize_t)(sizeof msg - 1))
			abort();
		m.key = key2;
		m.folder = "Work/Sub";
		m.fd = fd;
		m.size = sizeof msg - 1;
		m.date = 1700000000;
		m.flags = DELIVER_SEEN;
		r = be->deliver(ctx, &m, 1, &err);
		FUZZ_CHECK((r < 0) == (err != NULL), "deliver %d", r);
		if (r == 0 && m.refused == NULL) {
			FUZZ_CHECK(m.location != NULL, "delivered without a location");
			check_location(m.location);
		}
		if (r == 0 && m.refused != NULL)
			FUZZ_CHECK(m.location == NULL && strchr(m.refused, '\n') == NULL,
			    "refused with a location");
		if (r < 0)
			FUZZ_CHECK(m.location == NULL, "failed with a location");
		check_err(&err);
		free(m.location);
		free(m.refused);
		r = be->find(ctx, "Work/Sub", key2, &loc, &err);
		FUZZ_CHECK(r <= 1 && (r < 0) == (err != NULL), "find %d", r);
		if (r == 1)
			check_location(loc);
		check_err(&err);
		free(loc);
		if (be->tmp_discard(ctx, "Work/Sub", key2, &err) < 0)
			check_err(&err);
	} else
		check_err(&err);
	be->close(ctx);
	free(key1);
	free(key2);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct server s = { data, size };
	pthread_t th;

	if (pthread_create(&th, NULL, serve, &s) != 0)
		abort();
	pass();
	pthread_join(th, NULL);
	return 0;
}

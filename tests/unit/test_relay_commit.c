/* The relay's group commit (bridge/relay_commit.c) over a real socketpair:
 * a session process submits, the relay side serves. A request the session
 * could not have made past MAIL (a sender the user may not use, another
 * account) is refused and queues nothing; an allowed one is queued once. */
#include <sys/socket.h>
#include <sys/wait.h>

#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge/relay_commit.h"
#include "lib/io.h"
#include "lib/xmalloc.h"
#include "store/outbox.h"
#include "store/state.h"
#include "tests/unit/check.h"

static char tmpdir[] = "/tmp/test_relay_commit.XXXXXX";

static struct conf *
load_conf(void)
{
	char *path = xasprintf("%s/p3b.conf", tmpdir), *text;
	struct conf *c = NULL;
	FILE *f;

	text = xasprintf("state_dir = \"%s/state\"\n"
	    "account \"a\" {\n  local_user = \"alice\"\n  pop3 { host = \"p\" }\n"
	    "  smtp { host = \"s\" }\n  addresses = { \"alice@x.test\" }\n}\n"
	    "account \"b\" {\n  local_user = \"bob\"\n  pop3 { host = \"p\" }\n"
	    "  smtp { host = \"s\" }\n  addresses = { \"bob@x.test\" }\n}\n", tmpdir);
	f = fopen(path, "w");
	CHECK(f != NULL);
	if (f != NULL) {
		fputs(text, f);
		fclose(f);
	}
	chmod(path, 0600);
	CHECK_INT(conf_load(path, &c, stderr), 0);
	free(text);
	free(path);
	return c;
}

/* In the session process: one submission; its exit code says how it went
 * (0 queued, 1 refused, 2 something else). */
static int
submit(const struct conf *c, int sock, const char *account, const char *user,
    const char *from)
{
	char *rcpts[] = { "rcpt@y.test" }, *err = NULL;
	int64_t id = 0;
	int fd = outbox_spool_file(c->state_dir, &err), r;

	if (fd == -1 || io_write_all(fd, "Subject: t\r\n\r\nbody\r\n", 20) == -1)
		return 2;
	r = relay_commit_submit(c, sock, fd, account, user, from, rcpts, 1, &id, &err);
	close(fd);
	if (r == 0 && id > 0)
		return 0;
	if (r == -1 && err != NULL && strstr(err, "not allowed") != NULL)
		return 1;
	fprintf(stderr, "submit: %d %s\n", r, err ? err : "");
	return 2;
}

/* Runs the session process's submissions against the served channel;
 * returns their exit codes, one per submission, as a number (base 4). */
static int
session_run(struct conf *c, const char *const (*subs)[3], size_t n)
{
	struct relay_commit *rc = relay_commit_new(c);
	int sv[2], status = 0, code = 0;
	pid_t pid;

	CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
	if ((pid = fork()) == 0) {
		close(sv[0]);
		for (size_t i = 0; i < n; i++)
			code = code * 4 + submit(c, sv[1], subs[i][0], subs[i][1], subs[i][2]);
		_exit(code);
	}
	close(sv[1]);
	for (;;) {
		struct pollfd p = { .fd = sv[0], .events = POLLIN };
		struct relay_commit_peer peer = { .fd = sv[0] };

		if (poll(&p, 1, 10000) <= 0)
			break;
		relay_commit_serve(rc, &peer, 1);
		if (peer.hangup)
			break;
	}
	waitpid(pid, &status, 0);
	close(sv[0]);
	relay_commit_free(rc);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void
test_refuses_what_mail_would(void)
{
	static const char *const subs[][3] = {
		{ "a", "alice", "alice@x.test" },       /* allowed */
		{ "a", "bob", "alice@x.test" },         /* not bob's address */
		{ "b", "alice", "alice@x.test" },       /* not account b's address */
		{ "nope", "alice", "alice@x.test" },    /* no such account */
	};
	struct conf *c = load_conf();
	struct outbox_msg *v = NULL;
	struct state *st = NULL;
	char *err = NULL;
	size_t n = 0;

	if (c == NULL)
		return;
	CHECK_INT(state_make_dir(c->state_dir, &err), 0);
	/* 0, then three refusals: 0111 in base 4. */
	CHECK_INT(session_run(c, subs, 4), 0 * 64 + 1 * 16 + 1 * 4 + 1);
	CHECK_INT(state_open_dir(c->state_dir, true, &st, &err), 0);
	if (st != NULL) {
		CHECK_INT(outbox_list(st, c->state_dir, &v, &n, &err), 0);
		CHECK(n == 1 && strcmp(v[0].account, "a") == 0 && v[0].auth_user != NULL &&
		    strcmp(v[0].auth_user, "alice") == 0);
		outbox_msgs_free(v, n);
		state_close(st);
	}
	conf_free(c);
}

int
main(void)
{
	if (!check_tmpdir(tmpdir))
		return 1;
	TEST(test_refuses_what_mail_would);
	check_rm_tree(tmpdir);
	CHECK_DONE();
}

/* Deadlines and the pass's limits (lib/deadline.c), the deadline-aware
 * libetpan stream (lib/dlstream.c) over a socket pair, and name resolution
 * in a child process, or none for localhost (lib/net.c). */
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libetpan/libetpan.h>

#include "lib/deadline.h"
#include "lib/dlstream.h"
#include "lib/net.h"
#include "tests/unit/check.h"

static void
test_deadline_math(void)
{
	char buf[DEADLINE_TEXT_MAX];
	struct deadline d;
	int64_t left;

	deadline_none(&d);
	CHECK(deadline_left_ms(&d) == INT64_MAX);
	CHECK(deadline_left_ms(NULL) == INT64_MAX);
	CHECK_INT(deadline_check(&d), DEADLINE_NONE);
	deadline_in_ms(&d, 5000);
	left = deadline_left_ms(&d);
	CHECK(left > 4900 && left <= 5000);
	CHECK_INT(deadline_check(&d), DEADLINE_NONE);
	CHECK_INT(deadline_slice_ms(&d), DEADLINE_SLICE_MS);
	deadline_in_ms(&d, 200);
	CHECK(deadline_slice_ms(&d) <= 200 && deadline_slice_ms(&d) > 100);
	deadline_in_ms(&d, 0);
	CHECK_INT(deadline_left_ms(&d), 0);
	CHECK_INT(deadline_check(&d), DEADLINE_OWN);
	CHECK_INT(deadline_slice_ms(&d), 1);
	deadline_in_ms(&d, UINT64_MAX);		/* saturates, no overflow */
	CHECK(deadline_left_ms(&d) > (int64_t)86400 * 365 * 1000);
	CHECK_STR(deadline_text(DEADLINE_OWN, 7, buf, sizeof buf), "timed out after 7 s");
	CHECK_STR(deadline_text(DEADLINE_STOP, 7, buf, sizeof buf),
	    "interrupted by a stop request");
}

static void
test_allowance(void)
{
	CHECK_INT(deadline_allowance(60, 0), 60);
	CHECK_INT(deadline_allowance(60, 1), 61);
	CHECK_INT(deadline_allowance(60, DEADLINE_MIN_RATE), 61);
	CHECK_INT(deadline_allowance(60, DEADLINE_MIN_RATE + 1), 62);
	CHECK_INT(deadline_allowance(60, 50000000), 60 + 3052);
	CHECK_INT(deadline_allowance(60, UINT64_MAX), UINT_MAX);
}

/* The pass's deadline and stop-awareness, and their order. */
static void
test_pass_limits(void)
{
	char buf[DEADLINE_TEXT_MAX];
	struct deadline d;

	CHECK_INT(deadline_pass_seconds(), 0);
	CHECK(deadline_pass_left_ms() == INT64_MAX);
	deadline_pass_arm(1, false);
	CHECK_INT(deadline_pass_seconds(), 1);
	CHECK(deadline_pass_left_ms() > 900);
	CHECK_STR(deadline_text(DEADLINE_PASS, 7, buf, sizeof buf),
	    "the pass exceeded its deadline of 1 s");
	deadline_in_ms(&d, 60000);
	CHECK(deadline_slice_ms(&d) <= 1000);
	CHECK_INT(deadline_check(&d), DEADLINE_NONE);
	usleep(1100000);
	CHECK_INT(deadline_check(&d), DEADLINE_PASS);
	CHECK_INT(deadline_check(NULL), DEADLINE_PASS);
	/* A stop is held pending but ends nothing until the pass asks for it. */
	check_stop_raise();
	CHECK_INT(deadline_check(NULL), DEADLINE_PASS);
	deadline_pass_arm(0, true);
	CHECK_INT(deadline_check(NULL), DEADLINE_STOP);
	check_stop_clear();
	CHECK_INT(deadline_check(NULL), DEADLINE_NONE);
	deadline_pass_arm(0, false);
}

/* A stop that arrives while deadline_poll() waits ends it within a slice. */
static void
test_poll_stop(void)
{
	struct timespec t0;
	struct deadline d;
	enum deadline_end end;
	short rev;
	int fds[2];
	pid_t pid;

	if (pipe(fds) == -1) {
		CHECK(!"pipe");
		return;
	}
	deadline_in_ms(&d, 300);
	CHECK_INT(deadline_poll(fds[0], POLLIN, &d, &rev, &end), 0);
	CHECK_INT(end, DEADLINE_OWN);
	CHECK(write(fds[1], "x", 1) == 1);
	deadline_in_ms(&d, 5000);
	CHECK_INT(deadline_poll(fds[0], POLLIN, &d, &rev, &end), 1);
	CHECK(rev & POLLIN);
	CHECK(read(fds[0], &rev, 1) == 1);
	check_stop_raise();
	check_stop_clear();		/* blocked, nothing pending */
	deadline_pass_arm(0, true);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if ((pid = fork()) == 0) {
		usleep(300000);
		kill(getppid(), SIGTERM);
		_exit(0);
	}
	deadline_in_ms(&d, 10000);
	CHECK_INT(deadline_poll(fds[0], POLLIN, &d, &rev, &end), 0);
	CHECK_INT(end, DEADLINE_STOP);
	CHECK(check_elapsed(&t0) < 2.0);
	waitpid(pid, NULL, 0);
	check_stop_clear();
	deadline_pass_arm(0, false);
	close(fds[0]);
	close(fds[1]);
}

/* A guarded libetpan stream on one end of a socket pair. */
static mailstream *
guarded(int *peer)
{
	int sv[2];
	mailstream *s;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
		return NULL;
	if ((s = mailstream_socket_open(sv[0])) == NULL || dlstream_guard(s) != 0) {
		close(sv[0]);
		close(sv[1]);
		return NULL;
	}
	CHECK_INT(dlstream_guard(s), 0);	/* twice: still one wrapper */
	*peer = sv[1];
	return s;
}

static void
test_dlstream_reads(void)
{
	char buf[64];
	struct timespec t0;
	struct deadline d;
	mailstream *s;
	int peer;

	if ((s = guarded(&peer)) == NULL) {
		CHECK(!"a guarded stream");
		return;
	}
	mailstream_low_set_timeout(mailstream_get_low(s), 10);
	CHECK(write(peer, "+OK hello\r\n", 11) == 11);
	CHECK_INT(mailstream_read(s, buf, sizeof buf), 11);
	CHECK(memcmp(buf, "+OK hello\r\n", 11) == 0);
	CHECK(mailstream_write(s, "NOOP\r\n", 6) == 6 && mailstream_flush(s) == 0);
	CHECK(read(peer, buf, sizeof buf) == 6);
	/* Quiet for the stream's timeout: one read fails after it, not at
	 * the first slice. */
	mailstream_low_set_timeout(mailstream_get_low(s), 2);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK_INT(mailstream_read(s, buf, sizeof buf), -1);
	CHECK(check_elapsed(&t0) >= 1.9 && check_elapsed(&t0) < 3.5);
	CHECK_INT(dlstream_end(s), DEADLINE_OWN);
	/* The stream's own deadline comes first. */
	mailstream_low_set_timeout(mailstream_get_low(s), 10);
	deadline_in_ms(&d, 400);
	dlstream_set_deadline(s, &d);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK_INT(mailstream_read(s, buf, sizeof buf), -1);
	CHECK(check_elapsed(&t0) < 1.5);
	CHECK_INT(dlstream_end(s), DEADLINE_OWN);
	CHECK(mailstream_write(s, "X\r\n", 3) != 3 || mailstream_flush(s) != 0);
	dlstream_set_deadline(s, NULL);
	/* The quiet slices never surface as errors: data still comes. */
	CHECK(write(peer, "late\r\n", 6) == 6);
	CHECK_INT(mailstream_read(s, buf, sizeof buf), 6);
	close(peer);
	CHECK_INT(mailstream_read(s, buf, sizeof buf), 0);
	mailstream_close(s);
}

/* A stop ends a read within a slice; the socket's bytes are untouched. */
static void
test_dlstream_stop(void)
{
	char buf[64];
	struct timespec t0;
	mailstream *s;
	int peer;
	pid_t pid;

	if ((s = guarded(&peer)) == NULL) {
		CHECK(!"a guarded stream");
		return;
	}
	mailstream_low_set_timeout(mailstream_get_low(s), 30);
	check_stop_raise();
	check_stop_clear();
	deadline_pass_arm(0, true);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if ((pid = fork()) == 0) {
		usleep(300000);
		kill(getppid(), SIGTERM);
		_exit(0);
	}
	CHECK_INT(mailstream_read(s, buf, sizeof buf), -1);
	CHECK(check_elapsed(&t0) < 2.0);
	CHECK_INT(dlstream_end(s), DEADLINE_STOP);
	waitpid(pid, NULL, 0);
	CHECK(mailstream_write(s, "QUIT\r\n", 6) != 6 || mailstream_flush(s) != 0);
	check_stop_clear();
	deadline_pass_arm(0, false);
	CHECK(write(peer, "+OK\r\n", 5) == 5);
	CHECK_INT(mailstream_read(s, buf, sizeof buf), 5);
	close(peer);
	mailstream_close(s);
}

/* A listening socket on 127.0.0.1; its port in *port. */
static int
listener(unsigned *port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof sin;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd == -1 || bind(fd, (struct sockaddr *)&sin, sizeof sin) == -1 ||
	    listen(fd, 4) == -1 || getsockname(fd, (struct sockaddr *)&sin, &len) == -1) {
		if (fd != -1)
			close(fd);
		return -1;
	}
	*port = ntohs(sin.sin_port);
	return fd;
}

static void
test_net(void)
{
	char *err = NULL;
	unsigned port;
	int lfd, fd = -1;

	if ((lfd = listener(&port)) == -1) {
		CHECK(!"a listener");
		return;
	}
	/* An IP literal, then a name resolved by the child (/etc/hosts). */
	CHECK_INT(net_connect("127.0.0.1", port, 5, &fd, &err), 0);
	if (fd != -1)
		close(fd);
	fd = -1;
	CHECK_INT(net_connect("localhost", port, 5, &fd, &err), 0);
	CHECK(err == NULL);
	if (fd != -1)
		close(fd);
	CHECK_INT(net_connect("name.invalid", port, 5, &fd, &err), -1);
	CHECK(err != NULL && strncmp(err, "cannot resolve name.invalid: ", 29) == 0);
	free(err);
	err = NULL;
	close(lfd);
	CHECK_INT(net_connect("127.0.0.1", port, 5, &fd, &err), -1);
	CHECK_STR(err, "connect: Connection refused");
	free(err);
	err = NULL;
	/* A stop before the resolution: nothing is even tried. */
	check_stop_raise();
	deadline_pass_arm(0, true);
	CHECK_INT(net_connect("localhost", port, 5, &fd, &err), -1);
	CHECK_STR(err, "cannot resolve localhost: interrupted by a stop request");
	free(err);
	check_stop_clear();
	deadline_pass_arm(0, false);
	/* No resolver child is left behind. */
	CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD);
}

static volatile sig_atomic_t children_ended;

static void
on_child(int sig)
{
	(void)sig;
	children_ended++;
}

/* A listening socket on ::1 at port; -1 where this host has no IPv6
 * loopback. */
static int
listener6(unsigned port)
{
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
	int one = 1, fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

	sin6.sin6_addr = in6addr_loopback;
	if (fd == -1 || setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) == -1 ||
	    bind(fd, (struct sockaddr *)&sin6, sizeof sin6) == -1 || listen(fd, 4) == -1) {
		if (fd != -1)
			close(fd);
		return -1;
	}
	return fd;
}

/* The family of the first address getaddrinfo() gives for no name: the
 * loopback it prefers. */
static int
preferred_loopback(void)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
	int family;

	if (getaddrinfo(NULL, "1", &hints, &ai) != 0)
		return AF_UNSPEC;
	family = ai->ai_family;
	freeaddrinfo(ai);
	return family;
}

/* Accepts what is waiting on fd, if anything: 1 one connection, 0 none. */
static int
accepted(int fd)
{
	struct pollfd pfd = { fd, POLLIN, 0 };
	int c;

	if (fd == -1 || poll(&pfd, 1, 0) != 1 || (c = accept(fd, NULL, NULL)) == -1)
		return 0;
	close(c);
	return 1;
}

/* RFC 6761 section 6.3: "localhost" and the names under it are loopback,
 * resolved without the child (no SIGCHLD), in getaddrinfo()'s order of
 * the loopback addresses; other names still go to the child. */
static void
test_localhost(void)
{
	static const char *const special[] = {
		"localhost", "LocalHost", "localhost.", "pop.localhost", "a.b.LOCALHOST.",
	};
	static const char *const ordinary[] = {
		"mylocalhost", "localhost.example", "localhostx", ".localhost.x", "",
		"localhost..", "ocalhost",
	};
	struct sigaction sa = { .sa_handler = on_child }, old;
	char *err = NULL;
	unsigned port;
	int l4, l6, fd = -1, first;

	for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
		CHECK(net_localhost_name(special[i]));
	for (size_t i = 0; i < sizeof ordinary / sizeof ordinary[0]; i++)
		CHECK(!net_localhost_name(ordinary[i]));
	CHECK(!net_localhost_name(NULL));
	if ((l4 = listener(&port)) == -1) {
		CHECK(!"a listener");
		return;
	}
	l6 = listener6(port);
	first = preferred_loopback();
	CHECK(first == AF_INET || first == AF_INET6);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGCHLD, &sa, &old);
	children_ended = 0;
	for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) {
		CHECK_INT(net_connect(special[i], port, 5, &fd, &err), 0);
		CHECK(err == NULL);
		if (fd != -1)
			close(fd);
		fd = -1;
		/* the preferred loopback took it (the other when this host
		 * cannot listen on ::1) */
		if (l6 != -1) {
			usleep(10000);
			CHECK_INT(accepted(first == AF_INET6 ? l6 : l4), 1);
			CHECK_INT(accepted(first == AF_INET6 ? l4 : l6), 0);
		} else
			CHECK_INT(accepted(l4), 1);
	}
	CHECK_INT(children_ended, 0);
	/* The counter can fail: an ordinary name forks its resolver. */
	CHECK_INT(net_connect("name.invalid", port, 5, &fd, &err), -1);
	CHECK(err != NULL && strncmp(err, "cannot resolve name.invalid: ", 29) == 0);
	free(err);
	err = NULL;
	CHECK(children_ended >= 1);
	sigaction(SIGCHLD, &old, NULL);
	/* Nothing listening: every loopback address refused. */
	close(l4);
	if (l6 != -1)
		close(l6);
	CHECK_INT(net_connect("localhost", port, 5, &fd, &err), -1);
	CHECK_STR(err, "connect: Connection refused");
	free(err);
}

int
main(void)
{
	mailstream_network_delay.tv_sec = 60;
	TEST(test_deadline_math);
	TEST(test_allowance);
	TEST(test_pass_limits);
	TEST(test_poll_stop);
	TEST(test_dlstream_reads);
	TEST(test_dlstream_stop);
	TEST(test_net);
	TEST(test_localhost);
	CHECK_DONE();
}

/* conf_password(): the literal password, or the first line printed by
 * password_command. The output is a secret: it never appears in an error
 * message and the buffer is wiped after use.
 *
 * The command runs in a process group of its own, so that a timeout kills
 * everything it started (a shell, a helper it forked), and every wait for
 * it (its output, its exit) is bounded by the block's timeout, the pass
 * deadline and a stop request (lib/deadline.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "lib/deadline.h"
#include "lib/xmalloc.h"

#define OUTPUT_MAX	4096
#define TIMEOUT_DEFAULT	60	/* as the protocol clients take 0 */

/* A limit ended a wait for the command (deadline_poll's end). */
#define LIMIT	(-2)

/* In the child: only async-signal-safe calls until exec, as the parent
 * may have threads. */
static void __attribute__((noreturn))
child(char *const argv[], int wfd)
{
	sigset_t none;
	int null;

	/* Its own process group, which a timeout kills as a whole (the
	 * parent sets it too, so that neither order of the two races). */
	setpgid(0, 0);
	/* Above 0..2, so that the dup2() below cannot clobber it. */
	if ((wfd = fcntl(wfd, F_DUPFD_CLOEXEC, 3)) == -1)
		_exit(127);
	if ((null = open("/dev/null", O_RDONLY)) == -1 ||
	    dup2(null, STDIN_FILENO) == -1 || dup2(wfd, STDOUT_FILENO) == -1)
		_exit(127);
	/* A daemon may ignore SIGPIPE or block signals; the command
	 * should not inherit that. */
	signal(SIGPIPE, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	execv("/bin/sh", argv);
	_exit(127);
}

/* Starts cmd with its stdout on a pipe; returns the pid and *rfd. */
static pid_t
spawn(const char *cmd, int *rfd, char **err)
{
	char *argv[] = { "sh", "-c", (char *)cmd, NULL };
	int fds[2];
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) == -1) {
		*err = xasprintf("password_command: pipe: %s", strerror(errno));
		return -1;
	}
	if ((pid = fork()) == -1) {
		*err = xasprintf("password_command: fork: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0)
		child(argv, fds[1]);
	setpgid(pid, pid);
	close(fds[1]);
	*rfd = fds[0];
	return pid;
}

/* Reads until end of file or until buf is full (*full), before d.
 * Returns the length, -1 with errno, or LIMIT with *end set. */
static ssize_t
read_bounded(int fd, char *buf, size_t cap, bool *full, const struct deadline *d,
    enum deadline_end *end)
{
	size_t len = 0;
	ssize_t n;
	short rev;
	int r;

	while (len < cap) {
		if ((r = deadline_poll(fd, POLLIN, d, &rev, end)) == 0)
			return LIMIT;
		if (r == -1)
			return -1;
		n = read(fd, buf + len, cap - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		if (n == 0)
			break;
		len += (size_t)n;
	}
	*full = len == cap;
	return (ssize_t)len;
}

/* Waits for pid to exit before d (a pidfd becomes readable then; a
 * kernel without pidfds is polled every 10 ms). 0 when it has exited (not
 * reaped yet), LIMIT with *end set. */
static int
wait_exit(pid_t pid, const struct deadline *d, enum deadline_end *end)
{
	const struct timespec tick = { 0, 10 * 1000000L };
	siginfo_t si;
	short rev;
	int pfd, r;

	if ((pfd = pidfd_open(pid, 0)) != -1) {
		r = deadline_poll(pfd, POLLIN, d, &rev, end);
		close(pfd);
		if (r == 0)
			return LIMIT;
		if (r == 1)
			return 0;
	}
	for (;;) {
		si.si_pid = 0;
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
		    si.si_pid == pid)
			return 0;
		if ((*end = deadline_check(d)) != DEADLINE_NONE)
			return LIMIT;
		nanosleep(&tick, NULL);
	}
}

/* Kills the command's whole process group and reaps the command. */
static void
kill_group(pid_t pid)
{
	kill(-pid, SIGKILL);
	kill(pid, SIGKILL);	/* had it not joined its group yet */
	while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
		;
}

/* The message for a command a limit ended. */
static int
limit_err(enum deadline_end end, unsigned timeout, char **err)
{
	char why[DEADLINE_TEXT_MAX];

	if (end == DEADLINE_OWN)
		*err = xasprintf("password_command timed out after %u s", timeout);
	else
		*err = xasprintf("password_command stopped: %s",
		    deadline_text(end, timeout, why, sizeof why));
	return LIMIT;
}

static int
reap(pid_t pid, bool cut_short, const struct deadline *d, unsigned timeout, char **err)
{
	enum deadline_end end = DEADLINE_NONE;
	int status;

	if (wait_exit(pid, d, &end) == LIMIT) {
		kill_group(pid);
		return limit_err(end, timeout, err);
	}
	while (waitpid(pid, &status, 0) == -1) {
		if (errno != EINTR) {
			*err = xasprintf("password_command: waitpid: %s",
			    strerror(errno));
			return -1;
		}
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	/* We closed the pipe after 4 KiB: a writer still going gets
	 * SIGPIPE, which is our doing, not its failure. The shell reports
	 * a pipeline killed so as exit status 128 + SIGPIPE. */
	if (cut_short && WIFSIGNALED(status) && WTERMSIG(status) == SIGPIPE)
		return 0;
	if (cut_short && WIFEXITED(status) &&
	    WEXITSTATUS(status) == 128 + SIGPIPE)
		return 0;
	if (WIFEXITED(status))
		*err = xasprintf("password_command failed (exit status %d)",
		    WEXITSTATUS(status));
	else
		*err = xasprintf("password_command failed (killed by signal "
		    "%d)", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	return -1;
}

/* The first line of the output, without its CR/LF ending. */
static int
first_line(const char *buf, size_t len, bool cut_short, char **out,
    char **err)
{
	const char *nl = memchr(buf, '\n', len);
	size_t n = nl != NULL ? (size_t)(nl - buf) : len;

	if (nl == NULL && cut_short) {
		*err = xstrdup("password_command printed no line end in its "
		    "first 4 KiB");
		return -1;
	}
	while (n > 0 && buf[n - 1] == '\r')
		n--;
	if (len == 0)
		*err = xstrdup("password_command printed nothing");
	else if (n == 0)
		*err = xstrdup("password_command printed an empty first line");
	else if (memchr(buf, '\0', n) != NULL)
		*err = xstrdup("password_command printed a NUL byte");
	else if (memchr(buf, '\r', n) != NULL)
		*err = xstrdup("password_command printed a CR inside the line");
	else {
		*out = xstrndup(buf, n);
		return 0;
	}
	return -1;
}

static int
run(const char *cmd, unsigned timeout, char **out, char **err)
{
	enum deadline_end end = DEADLINE_NONE;
	char buf[OUTPUT_MAX];
	struct deadline d;
	bool full = false;
	ssize_t len;
	pid_t pid;
	int fd, rc, saved;

	if ((pid = spawn(cmd, &fd, err)) == -1)
		return -1;
	deadline_in_ms(&d, (uint64_t)timeout * 1000);
	len = read_bounded(fd, buf, sizeof buf, &full, &d, &end);
	saved = errno;
	close(fd);
	if (len == LIMIT) {
		kill_group(pid);
		explicit_bzero(buf, sizeof buf);
		return limit_err(end, timeout, err);
	}
	rc = reap(pid, full, &d, timeout, err);
	if (rc == 0 && len == -1) {
		*err = xasprintf("password_command: read: %s", strerror(saved));
		rc = -1;
	}
	if (rc == 0)
		rc = first_line(buf, (size_t)len, full, out, err);
	explicit_bzero(buf, sizeof buf);
	return rc;
}

int
conf_password_run(const struct conf_server *s, char **out, char **err)
{
	*out = NULL;
	*err = NULL;
	if (s->password != NULL) {
		*out = xstrdup(s->password);
		return 0;
	}
	if (s->password_command == NULL)
		return 0;
	return run(s->password_command, s->timeout != 0 ? s->timeout : TIMEOUT_DEFAULT,
	    out, err);
}

int
conf_password(const struct conf_server *s, char **out, char **err)
{
	return conf_password_run(s, out, err) == 0 ? 0 : -1;
}

/* The queue runner as a child process of `run`: a crash or a hung
 * upstream cannot take the daemon with it, and it has its own SQLite
 * connection and libetpan state. */
#include "bridge/queue.h"

#include <sys/wait.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/proc.h"
#include "lib/xmalloc.h"
#include "store/outbox.h"

#define RUNNER_SLEEP	2	/* seconds between passes without new mail */
#define RUNNER_RESTART	5	/* seconds between restarts after a crash */
#define SPOOL_ORPHAN_AGE 86400	/* seconds before an unreferenced spool file goes */
#define RUNNER_NICE	5	/* added to the runner's nice value, and its workers' */

/* Once per runner start: spool files a crash orphaned (older than a day,
 * so never one an enqueue under way has linked but not yet committed). */
static void
sweep_spool(const struct conf *c, struct state *st)
{
	char *err = NULL;
	size_t n;

	if (outbox_sweep_orphans(st, c->state_dir, SPOOL_ORPHAN_AGE, &n, &err) == -1) {
		log_warnx("queue: %s", err);
		free(err);
	} else if (n > 0)
		log_info("queue: removed %zu spool files no queued message refers to", n);
}

static int
runner_main(const struct conf *c)
{
	struct state *st;
	char *err = NULL;
	int watch;

	if (state_open_dir(c->state_dir, true, &st, &err) == -1) {
		log_warnx("queue: %s", err);
		free(err);
		return EX_IOERR;
	}
	sweep_spool(c, st);
	/* New mail wakes the runner at once (outbox_notify after each enqueue
	 * commit); the pause is for retries that come due. */
	watch = outbox_watch(c->state_dir);
	while (!queue_stop) {
		outbox_watch_drain(watch);
		if (queue_pass(c, st, (int64_t)time(NULL), &err) == -1) {
			log_warnx("queue: %s", err);
			free(err);
			err = NULL;
		}
		/* A stop ends the pause at once. */
		if (!queue_stop && proc_pause_fd(RUNNER_SLEEP, watch))
			queue_stop = 1;
	}
	if (watch != -1)
		close(watch);
	state_close(st);
	return EX_OK;
}

void
queue_runner_start(struct queue_runner *q, const struct conf *c)
{
	pid_t parent = getpid(), pid;
	time_t now = time(NULL);

	if (q->pid != 0 || (q->started != 0 && now - q->started < RUNNER_RESTART))
		return;
	fflush(NULL);
	if ((pid = fork()) == -1) {
		log_warn("queue: fork");
		return;
	}
	if (pid == 0) {
		/* Like an account pass: it dies with the daemon. */
		if (!proc_child_init(parent, NULL, SIGKILL))
			_exit(EX_TEMPFAIL);
		/* Deliveries yield the CPU to the relay's sessions, whose
		 * clients wait for their 250s: 2,000 submissions over 8
		 * connections were accepted 15-30% faster, end to end no slower
		 * (bench/run --only relay, runs alternated on 2 cores). */
		errno = 0;
		if (nice(RUNNER_NICE) == -1 && errno != 0)
			log_warn("queue: nice");
		_exit(runner_main(c));
	}
	q->pid = pid;
	q->started = now;
}

bool
queue_runner_check(struct queue_runner *q)
{
	int status;
	pid_t r;

	if (q->pid == 0)
		return false;
	r = waitpid(q->pid, &status, WNOHANG);
	if (r == 0 || (r == -1 && errno != ECHILD))
		return true;
	if (r == q->pid && WIFSIGNALED(status))
		log_warnx("queue: runner killed by signal %d", WTERMSIG(status));
	else if (r == q->pid && WEXITSTATUS(status) != EX_OK)
		log_warnx("queue: runner exited with %d", WEXITSTATUS(status));
	q->pid = 0;
	return false;
}

void
queue_runner_signal(struct queue_runner *q, int sig)
{
	if (q->pid != 0)
		kill(q->pid, sig);
}

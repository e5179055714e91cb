#include "bridge/daemon.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "bridge/metrics.h"
#include "bridge/notify.h"
#include "bridge/queue.h"
#include "bridge/relay.h"
#include "bridge/sync_pool.h"
#include "lib/io.h"
#include "lib/log.h"
#include "lib/xmalloc.h"
#include "store/state.h"

/* When each account is due next, by name (so a reload keeps the schedule
 * of accounts that stay). */
struct due {
	char *name;
	time_t at;
};

/* Everything the daemon's one loop owns. */
struct sched {
	struct conf *c;
	const char *conf_path;
	struct due *due;        /* one per c->accounts[i] */
	struct sync_pool pool;
	struct queue_runner queue;	/* the outbound queue (queue.h) */
	struct relay_proc relay;	/* SMTP submission (relay.h) */
	bool stopping;          /* SIGTERM/SIGINT seen: waiting for the passes */
	bool metrics_due;       /* a pass ended since metrics_file was written */
	time_t metrics_at;      /* when it was last written */
	time_t summary_at;      /* when the last summary line was logged */
	time_t watchdog;        /* seconds between WATCHDOG=1 pings, 0 none */
};

/* The metrics file after passes ended: at most every METRICS_SPACING
 * seconds while passes run (each write reads every account's status), at
 * once when the pool is idle. */
#define METRICS_SPACING 10

static void
write_metrics(struct sched *s)
{
	time_t now = time(NULL);
	char *err = NULL;

	if (!s->metrics_due || (sync_pool_running(&s->pool) > 0 &&
	    now - s->metrics_at < METRICS_SPACING))
		return;
	s->metrics_due = false;
	s->metrics_at = now;
	if (metrics_write(s->c, &err) == -1) {
		log_warnx("metrics_file: %s", err);
		free(err);
	}
}

static unsigned
interval(const struct conf *c, const struct conf_account *a)
{
	return a->poll_interval ? a->poll_interval : c->poll_interval;
}

/* What the state says of the account's schedule (sync.c writes it after
 * each pass), on st (NULL: nothing to read): false when there is none.
 * The daemon's connections are its own, opened and closed around the
 * reads: one kept open must not be inherited by the children forked
 * later. */
static bool
read_schedule(struct state *st, const char *name, struct state_sched *sc)
{
	char *err = NULL;
	int64_t id;
	bool ok;

	ok = st != NULL && state_account_id(st, name, &id, &err) == 1 &&
	    state_schedule(st, id, sc, &err) == 0;
	if (err != NULL) {
		log_warnx("%s: reading the schedule: %s", name, err);
		free(err);
	}
	return ok;
}

/* The state for reading schedules, or NULL (said why; none yet is no
 * error). Reads only, so that the loop never waits for a pass's write
 * lock (WAL readers do not). */
static struct state *
schedule_state(const struct conf *c)
{
	struct state *st = NULL;
	char *err = NULL;

	if (state_open_dir(c->state_dir, false, &st, &err) == -1) {
		log_warnx("reading the schedule: %s", err);
		free(err);
		return NULL;
	}
	return st;
}

/* The earliest time the account may be polled after a pass that left the
 * schedule sc (NULL: it left none): never before the server allows a
 * login (LOGIN-DELAY, a refusal's backoff), nor before the next poll that
 * pass planned. */
static time_t
after_pass(const struct sync_pool_sched *sc, time_t at)
{
	if (sc == NULL)
		return at;
	if (sc->not_before > (int64_t)at)
		at = (time_t)sc->not_before;
	if (sc->next_poll_at > (int64_t)at)
		at = (time_t)sc->next_poll_at;
	return at;
}

/* When account name may be polled at the earliest, planned for at: never
 * before the server allows a login (LOGIN-DELAY, a busy refusal's wait),
 * and, while it fails, never before its backoff (the next poll its last
 * pass planned: a restart or a reload does not hammer a wrong password). */
static time_t
earliest(struct state *st, const char *name, time_t at)
{
	struct state_sched sc;

	if (!read_schedule(st, name, &sc))
		return at;
	if (sc.failures > 0 && sc.next_poll_at > (int64_t)at)
		at = (time_t)sc.next_poll_at;
	if (sc.not_before > (int64_t)at)
		at = (time_t)sc.not_before;
	return at;
}

/* Builds the schedule for c: accounts that were in old keep their due
 * time, but no later than their (new) interval from now, so that a
 * shorter poll_interval takes effect at once; the others are due now.
 * Both as earliest() allows, read on one connection for all accounts. */
static struct due *
schedule(const struct conf *c, const struct due *old, size_t n_old)
{
	struct due *d = xcalloc(c->n_accounts ? c->n_accounts : 1, sizeof *d);
	struct state *st = c->n_accounts ? schedule_state(c) : NULL;
	time_t now = time(NULL);

	for (size_t i = 0; i < c->n_accounts; i++) {
		time_t soonest = now + interval(c, &c->accounts[i]);

		d[i].name = xstrdup(c->accounts[i].name);
		d[i].at = now;
		for (size_t j = 0; j < n_old; j++)
			if (strcmp(old[j].name, d[i].name) == 0)
				d[i].at = old[j].at < soonest ? old[j].at : soonest;
		d[i].at = earliest(st, d[i].name, d[i].at);
	}
	state_close(st);
	return d;
}

static void
due_free(struct due *d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(d[i].name);
	free(d);
}

static void
reload(struct sched *s, const char *path)
{
	struct conf *nc;
	struct due *nd;

	if (conf_load(path, &nc, stderr) != 0) {
		log_warnx("reload: %s has errors, keeping the running configuration", path);
		return;
	}
	if (s->c->shard_n > 0)
		conf_shard(nc, s->c->shard_k, s->c->shard_n);
	nd = schedule(nc, s->due, s->c->n_accounts);
	due_free(s->due, s->c->n_accounts);
	conf_free(s->c);
	s->c = nc;
	s->due = nd;
	/* The old configuration and the new one's parse: garbage the passes
	 * forked from now on need not copy (sync_pool_init). */
	malloc_trim(0);
	log_info("reloaded %s: %zu accounts", path, nc->n_accounts);
}

static void log_summary(struct sched *s);

/* The schedule of a pass that told none (it died first): read from the
 * state, as it left it. */
static bool
sched_from_state(const struct conf *c, const char *name, struct sync_pool_sched *out)
{
	struct state *st = schedule_state(c);
	struct state_sched sc = { 0 };

	out->known = read_schedule(st, name, &sc);
	out->not_before = sc.not_before;
	out->next_poll_at = sc.next_poll_at;
	state_close(st);
	return out->known;
}

static void
reap_finished(struct sched *s)
{
	struct sync_pool_sched sc;
	char *name;
	int code;

	while (sync_pool_reap(&s->pool, false, &name, &code, &sc) == 1) {
		for (size_t i = 0; i < s->c->n_accounts; i++)
			if (strcmp(s->due[i].name, name) == 0)
				s->due[i].at = after_pass(sc.known || sched_from_state(s->c, name, &sc) ?
				    &sc : NULL, time(NULL) + interval(s->c, &s->c->accounts[i]));
		free(name);
		s->metrics_due = true;
	}
	write_metrics(s);
	log_summary(s);
}

/* One line per pass of the daemon over its accounts: when the passes it
 * started have all ended (or, when passes never stop overlapping, every
 * poll_interval): how many ran, failed, what they imported. */
static void
log_summary(struct sched *s)
{
	time_t now = time(NULL);
	struct sync_pool_stats st;

	if (s->pool.stats.passes == 0 || (sync_pool_running(&s->pool) > 0 &&
	    now - s->summary_at < (time_t)s->c->poll_interval))
		return;
	st = sync_pool_take_stats(&s->pool);
	log_info("pass: %lu account%s polled in %lds, %lu failed, %lu messages imported"
	    " (%llu bytes), %lu deleted", st.passes, st.passes == 1 ? "" : "s",
	    (long)(now - s->summary_at), st.failed, st.imported,
	    (unsigned long long)st.bytes, st.deleted);
	s->summary_at = now;
}

/* STATUS= for systemctl status: what the cycle is doing. */
static void
report_status(struct sched *s, time_t wait)
{
	size_t due = 0, n = s->c->n_accounts;
	time_t now = time(NULL);

	for (size_t i = 0; i < n; i++)
		due += s->due[i].at <= now && !sync_pool_has(&s->pool, s->due[i].name);
	if (s->stopping)
		notify_status("stopping: %zu passes still running", sync_pool_running(&s->pool));
	else if (sync_pool_running(&s->pool) > 0 || due > 0)
		notify_status("polling: %zu running, %zu waiting for a slot, %zu accounts",
		    sync_pool_running(&s->pool), due, n);
	else
		notify_status("idle: %zu accounts, next poll in %lds", n, (long)wait);
}

static const struct due *sort_due;

/* Due first the one due longest: an account with a short interval never
 * keeps the others of its server waiting. */
static int
by_due(const void *x, const void *y)
{
	size_t i = *(const size_t *)x, j = *(const size_t *)y;

	if (sort_due[i].at != sort_due[j].at)
		return sort_due[i].at < sort_due[j].at ? -1 : 1;
	return i < j ? -1 : i > j;
}

/* Starts every due account there is room for, those due longest first;
 * returns the seconds until the next account is due (at most 60). */
static time_t
start_due(struct sched *s)
{
	time_t now = time(NULL), wait = 60;
	size_t *due = xcalloc(s->c->n_accounts ? s->c->n_accounts : 1, sizeof *due), n = 0;

	for (size_t i = 0; i < s->c->n_accounts; i++) {
		if (sync_pool_has(&s->pool, s->c->accounts[i].name))
			continue;
		if (s->due[i].at <= now)
			due[n++] = i;
		else if (s->due[i].at - now < wait)
			wait = s->due[i].at - now;
	}
	sort_due = s->due;
	qsort(due, n, sizeof *due, by_due);
	for (size_t k = 0; k < n && sync_pool_running(&s->pool) < s->pool.limit; k++) {
		const struct conf_account *a = &s->c->accounts[due[k]];

		/* No room on its server (max_per_host): it stays due, and
		 * starts when a pass there ends. */
		if (sync_pool_on_host(&s->pool, a->pop3.host) >= s->c->max_per_host ||
		    sync_pool_start(&s->pool, s->c, a) == -1)
			continue;
		/* Not rescheduled until it finishes (reap_finished). */
		s->due[due[k]].at = now + interval(s->c, a);
	}
	free(due);
	return wait;
}

/* The signals the loop takes synchronously with sigtimedwait(), blocked
 * from now on: the one loop owns time, children and reloads. */
static void
block_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGCHLD);
	sigprocmask(SIG_BLOCK, set, NULL);
}

/* What a signal the loop took does: TERM/INT stop everything (passes under
 * way stop within about a second first), HUP reloads the configuration
 * and restarts the queue runner and the relay with it. SIGCHLD only wakes
 * the loop, which reaps. */
static void
handle_signal(struct sched *s, int sig)
{
	switch (sig) {
	case SIGTERM:
	case SIGINT:
		if (!s->stopping)
			log_info("stopping: waiting for %zu passes to stop",
			    sync_pool_running(&s->pool));
		s->stopping = true;
		notify_send("STOPPING=1");
		sync_pool_signal(&s->pool, SIGTERM);
		queue_runner_signal(&s->queue, SIGTERM);
		relay_stop(&s->relay);
		break;
	case SIGHUP:
		if (s->stopping)
			break;
		reload(s, s->conf_path);
		sync_pool_resize(&s->pool, s->c->max_parallel);
		/* It restarts with the new configuration. */
		queue_runner_signal(&s->queue, SIGTERM);
		relay_stop(&s->relay);
		relay_start(&s->relay, s->c);
		break;
	default:
		break;
	}
}

/* One turn of the loop before it waits: reap, keep the relay and the
 * queue runner alive, start due passes. Returns how long to wait, or -1
 * when everything has stopped. */
static time_t
tick(struct sched *s)
{
	time_t wait;

	reap_finished(s);
	if (!s->stopping)
		relay_check(&s->relay, s->c);
	/* The outbound queue runner: restarted if it ends while running. */
	if (!queue_runner_check(&s->queue) && !s->stopping)
		queue_runner_start(&s->queue, s->c);
	if (s->stopping && sync_pool_running(&s->pool) == 0 && s->queue.pid == 0)
		return -1;
	wait = s->stopping ? 60 : start_due(s);
	if (s->queue.pid == 0 && !s->stopping && wait > 5)
		wait = 5;
	notify_watchdog(s->watchdog);
	if (s->watchdog > 0 && wait > s->watchdog)
		wait = s->watchdog;
	report_status(s, wait);
	return wait > 0 ? wait : 1;
}

/* How long a new run waits for the children of a run that was killed
 * (SIGKILL, OOM) to let go of run.lock: their death signal ends them
 * within a second or two; a live holder is never waited for. */
#define LOCK_DEAD_WAIT_MS 10000

/* The holder written in run.lock is gone: only its children still hold
 * the lock, on their way out. */
static bool
holder_dead(pid_t holder)
{
	return holder > 0 && kill(holder, 0) == -1 && errno == ESRCH;
}

/* One `run` per STATE_DIR: a second one would poll every account twice
 * (the per-account locks only make it wait) and fight over the relay's
 * ports. The lock lives as long as the daemon (its children die with
 * it, which is why a restart right after a kill waits for them). Returns
 * the lock's fd, or -1 (said why). */
static int
lock_state_dir(const struct conf *c)
{
	char *path = xasprintf("%s/run.lock", c->state_dir), *err = NULL;
	struct timespec nap = { 0, 100 * 1000 * 1000 };
	pid_t holder;
	int fd, waited;

	fd = io_lock_pid(path, &holder, &err);
	for (waited = 0; fd == -2 && holder_dead(holder) && waited < LOCK_DEAD_WAIT_MS;
	    waited += 100) {
		if (waited == 0)
			log_info("the run that held %s (pid %ld) is gone; waiting for its "
			    "children to end", path, (long)holder);
		nanosleep(&nap, NULL);
		fd = io_lock_pid(path, &holder, &err);
	}
	if (fd == -2 && holder_dead(holder))
		log_warnx("the children of a killed run (pid %ld) still hold %s after %d s",
		    (long)holder, path, LOCK_DEAD_WAIT_MS / 1000);
	else if (fd == -2 && holder > 0)
		log_warnx("another pop3bridge run (pid %ld) holds %s", (long)holder, path);
	else if (fd == -2)
		log_warnx("another pop3bridge run holds %s", path);
	else if (fd == -1) {
		log_warnx("%s", err);
		free(err);
	}
	free(path);
	return fd < 0 ? -1 : fd;
}

int
daemon_run(const char *conf_path, struct conf *c)
{
	struct sched s = { .c = c, .conf_path = conf_path };
	struct timespec ts = { 0 };
	sigset_t set;
	siginfo_t si;
	int lockfd;

	if ((lockfd = lock_state_dir(c)) == -1) {
		conf_free(c);
		return EX_TEMPFAIL;
	}
	block_signals(&set);
	/* The relay binds its ports now: one in use is an error at start. */
	if (relay_start(&s.relay, c) == -1) {
		conf_free(c);
		close(lockfd);
		return EX_UNAVAILABLE;
	}
	s.due = schedule(c, NULL, 0);
	sync_pool_init(&s.pool, c->max_parallel, true, c->n_accounts > 1);
	s.summary_at = time(NULL);
	s.watchdog = notify_watchdog_interval();
	log_info("running: %zu accounts, up to %u at once, %u per server", c->n_accounts,
	    c->max_parallel, c->max_per_host);
	notify_send("READY=1");
	while ((ts.tv_sec = tick(&s)) != -1)
		handle_signal(&s, sigtimedwait(&set, &si, &ts));
	sync_pool_free(&s.pool);
	due_free(s.due, s.c->n_accounts);
	conf_free(s.c);
	log_info("stopped");
	close(lockfd);
	return EX_OK;
}

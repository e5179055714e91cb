#include "bridge/daemon.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "bridge/queue.h"
#include "bridge/relay.h"
#include "bridge/sync_pool.h"
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
};

/* sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET. */
static void
notify_systemd(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	socklen_t len;
	int fd;

	if (path == NULL || (path[0] != '/' && path[0] != '@') ||
	    strlen(path) >= sizeof sun.sun_path)
		return;
	strcpy(sun.sun_path, path);
	if (path[0] == '@')
		sun.sun_path[0] = '\0';
	len = offsetof(struct sockaddr_un, sun_path) + strlen(path);
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return;
	sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&sun, len);
	close(fd);
}

static unsigned
interval(const struct conf *c, const struct conf_account *a)
{
	return a->poll_interval ? a->poll_interval : c->poll_interval;
}

/* What the state says of the account's schedule (sync.c writes it after
 * each pass): false when there is nothing to read. Reads only, so that
 * the loop never waits for a pass's write lock (WAL readers do not). A
 * connection of its own each time: one kept open must not be inherited
 * by the children forked later. */
static bool
read_schedule(const struct conf *c, const char *name, struct state_sched *sc)
{
	struct state *st = NULL;
	char *err = NULL;
	int64_t id;
	bool ok;

	ok = state_open_dir(c->state_dir, false, &st, &err) == 0 && st != NULL &&
	    state_account_id(st, name, &id, &err) == 1 && state_schedule(st, id, sc, &err) == 0;
	if (err != NULL) {
		log_warnx("%s: reading the schedule: %s", name, err);
		free(err);
	}
	state_close(st);
	return ok;
}

/* The earliest time the account may be polled: never before the server
 * allows a login (LOGIN-DELAY, a refusal's backoff); after a pass also
 * never before the next poll that pass planned. */
static time_t
not_before(const struct conf *c, const char *name, time_t at, bool after_pass)
{
	struct state_sched sc;

	if (!read_schedule(c, name, &sc))
		return at;
	if (sc.not_before > (int64_t)at)
		at = (time_t)sc.not_before;
	if (after_pass && sc.next_poll_at > (int64_t)at)
		at = (time_t)sc.next_poll_at;
	return at;
}

/* Builds the schedule for c, keeping the due time of accounts that were
 * in old (all due now at start, unless the server allows no login yet). */
static struct due *
schedule(const struct conf *c, const struct due *old, size_t n_old)
{
	struct due *d = xcalloc(c->n_accounts, sizeof *d);
	time_t now = time(NULL);
	bool kept;

	for (size_t i = 0; i < c->n_accounts; i++) {
		d[i].name = xstrdup(c->accounts[i].name);
		d[i].at = now;
		kept = false;
		for (size_t j = 0; j < n_old; j++)
			if (strcmp(old[j].name, d[i].name) == 0) {
				d[i].at = old[j].at;
				kept = true;
			}
		if (!kept)
			d[i].at = not_before(c, d[i].name, now, false);
	}
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
	nd = schedule(nc, s->due, s->c->n_accounts);
	due_free(s->due, s->c->n_accounts);
	conf_free(s->c);
	s->c = nc;
	s->due = nd;
	log_info("reloaded %s: %zu accounts", path, nc->n_accounts);
}

static void
reap_finished(struct sched *s)
{
	char *name;
	int code;

	while (sync_pool_reap(&s->pool, false, &name, &code) == 1) {
		for (size_t i = 0; i < s->c->n_accounts; i++)
			if (strcmp(s->due[i].name, name) == 0)
				s->due[i].at = not_before(s->c, name, time(NULL) +
				    interval(s->c, &s->c->accounts[i]), true);
		free(name);
	}
}

/* Starts every due account there is room for; returns the seconds until
 * the next account is due (at most 60). */
static time_t
start_due(struct sched *s)
{
	time_t now = time(NULL), wait = 60;

	for (size_t i = 0; i < s->c->n_accounts; i++) {
		const struct conf_account *a = &s->c->accounts[i];

		if (sync_pool_has(&s->pool, a->name))
			continue;
		if (s->due[i].at <= now) {
			if (sync_pool_running(&s->pool) >= s->pool.max ||
			    sync_pool_start(&s->pool, s->c, a) == -1)
				continue;
			/* Not rescheduled until it finishes (reap_finished). */
			s->due[i].at = now + interval(s->c, a);
		} else if (s->due[i].at - now < wait)
			wait = s->due[i].at - now;
	}
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
		notify_systemd("STOPPING=1");
		sync_pool_signal(&s->pool, SIGTERM);
		queue_runner_signal(&s->queue, SIGTERM);
		relay_stop(&s->relay);
		break;
	case SIGHUP:
		if (s->stopping)
			break;
		reload(s, s->conf_path);
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
	return wait > 0 ? wait : 1;
}

int
daemon_run(const char *conf_path, struct conf *c)
{
	struct sched s = { .c = c, .conf_path = conf_path };
	struct timespec ts = { 0 };
	sigset_t set;
	siginfo_t si;

	block_signals(&set);
	/* The relay binds its ports now: one in use is an error at start. */
	if (relay_start(&s.relay, c) == -1) {
		conf_free(c);
		return EX_UNAVAILABLE;
	}
	s.due = schedule(c, NULL, 0);
	sync_pool_init(&s.pool, c->max_parallel, true);
	log_info("running: %zu accounts, up to %u at once", c->n_accounts, c->max_parallel);
	notify_systemd("READY=1");
	while ((ts.tv_sec = tick(&s)) != -1)
		handle_signal(&s, sigtimedwait(&set, &si, &ts));
	sync_pool_free(&s.pool);
	due_free(s.due, s.c->n_accounts);
	conf_free(s.c);
	log_info("stopped");
	return EX_OK;
}

#include "bridge/sync_pool.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "bridge/progress.h"
#include "bridge/sync.h"
#include "lib/deadline.h"
#include "lib/log.h"
#include "lib/proc.h"
#include "lib/tls_anchors.h"
#include "lib/xmalloc.h"
#include "store/state.h"

/* One report of a child, written in one write(2) (smaller than PIPE_BUF,
 * so atomic): progress, or its result at the end. */
enum { REPORT_PROGRESS, REPORT_DONE };
struct report {
	pid_t pid;
	int kind;
	struct sync_progress sp;
	unsigned long imported, deleted;
	uint64_t bytes;
	struct sync_pool_sched sched;   /* the daemon's passes: the schedule they left */
};

void
sync_pool_init(struct sync_pool *p, unsigned max, bool daemon, bool keep)
{
	memset(p, 0, sizeof *p);
	p->max = p->limit = max ? max : 1;
	p->jobs = xcalloc(p->max, sizeof *p->jobs);
	p->daemon = daemon;
	p->keep = keep && !sync_dry_run;
	/* The configuration's parse left its garbage in the heap (12 MB of
	 * free chunks for 1,000 accounts): given back now, every fork copies
	 * the page tables of what is in use only. */
	malloc_trim(0);
	p->err_fd = p->err_w = -1;
	if (pipe2(p->report, O_CLOEXEC) == -1)
		fatal("pipe");
	fcntl(p->report[0], F_SETFL, O_NONBLOCK);
}

void
sync_pool_free(struct sync_pool *p)
{
	for (unsigned i = 0; i < p->max; i++) {
		free(p->jobs[i].account);
		free(p->jobs[i].host);
	}
	free(p->jobs);
	p->jobs = NULL;
	close(p->report[0]);
	close(p->report[1]);
	/* SIGKILL: an idle connection holds nothing, and one still opening
	 * (waiting for a lock, migrating) is as safe to kill as any SQLite
	 * process; SIGTERM would wait for the open to end. */
	if (p->keeper > 0) {
		kill(p->keeper, SIGKILL);
		while (waitpid(p->keeper, NULL, 0) == -1 && errno == EINTR)
			;
		p->keeper = 0;
	}
}

void
sync_pool_resize(struct sync_pool *p, unsigned max)
{
	max = max ? max : 1;
	if (max <= p->max) {
		p->limit = max;
		return;
	}
	/* More slots; running jobs keep theirs. Fewer: the slots stay, and
	 * no pass starts while limit are running. */
	p->jobs = xreallocarray(p->jobs, max, sizeof *p->jobs);
	memset(p->jobs + p->max, 0, (max - p->max) * sizeof *p->jobs);
	p->max = p->limit = max;
}


/* The child's end of the report pipe, and when it last sent progress. */
static int child_report_fd = -1;
static double last_progress;

static double
mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One line per pass (two when some message was refused or skipped: what
 * was done, then what was not). */
static void
send_report(const struct report *r)
{
	/* Lost when the parent is gone: it would not read it anyway. */
	if (write(child_report_fd, r, sizeof *r) != (ssize_t)sizeof *r)
		log_debug("progress report not sent");
}

/* sync_progress_hook in a child: at most ten reports a second. */
static void
progress_hook(const struct sync_progress *sp)
{
	struct report r = { .pid = getpid(), .kind = REPORT_PROGRESS, .sp = *sp };
	double t = mono();

	if (!sp->finished && t - last_progress < 0.1)
		return;
	last_progress = t;
	send_report(&r);
}

static void
log_result(const struct sync_pool *p, const struct conf_account *a, const struct sync_result *r,
    int rc)
{
	char server[64] = "";

	if (rc != EX_OK)
		log_warnx("%s: %s", a->name, r->error ? r->error : "failed");
	if (rc != EX_OK && rc != EX_DATAERR)
		return;
	if (p->daemon && rc == EX_OK && r->imported == 0 && r->deleted == 0 &&
	    r->server_deleted == 0) {
		log_debug("%s: %lu on server, nothing new", a->name, r->listed);
		return;
	}
	if (r->server_deleted > 0)
		snprintf(server, sizeof server, ", %lu deleted by the server (EXPIRE 0)",
		    r->server_deleted);
	log_info("%s: %lu on server, %lu new, %lu imported (%llu bytes), %lu deleted%s%s%s",
	    a->name, r->listed, r->fresh, r->imported, (unsigned long long)r->bytes,
	    r->deleted, server, r->no_quit > 0 ? ", no QUIT (see above)" : "",
	    sync_stop ? ", interrupted" : "");
}

/* --dry-run: the state only read (and not made), no report. */
static int
child_dry(const struct conf *c, const struct conf_account *a)
{
	struct sync_result res;
	struct state *st = NULL;
	char *err = NULL;
	int rc;

	/* A dry run leaves the state's files as they are, to the byte. */
	if (state_open_dir_reader(c->state_dir, &st, &err) == -1) {
		log_warnx("%s: %s", a->name, err);
		free(err);
		return EX_IOERR;
	}
	if ((rc = sync_dry_account(c, a, st, &res)) != EX_OK)
		log_warnx("%s: %s", a->name, res.error ? res.error : "failed");
	sync_result_free(&res);
	if (st != NULL)
		state_close(st);
	return rc;
}

/* The schedule the pass just committed (sync.c log_pass, LOGIN-DELAY),
 * read on the pass's own connection: the daemon would otherwise open the
 * state once per finished pass to read it. Unknown when it cannot be
 * read (the daemon then reads it itself). */
static void
read_sched(struct state *st, const struct conf_account *a, struct sync_pool_sched *out)
{
	struct state_sched sc;
	char *err = NULL;
	int64_t id;

	out->known = state_account_id(st, a->name, &id, &err) == 1 &&
	    state_schedule(st, id, &sc, &err) == 0;
	if (out->known) {
		out->not_before = sc.not_before;
		out->next_poll_at = sc.next_poll_at;
	}
	free(err);
}

static int
child_pass(const struct sync_pool *p, const struct conf *c, const struct conf_account *a)
{
	struct report done = { .pid = getpid(), .kind = REPORT_DONE };
	struct sync_result res;
	struct state *st;
	char *err = NULL;
	int rc;

	/* From here on the pass has pass_timeout seconds, and a stop ends any
	 * wait of it within about a second (lib/deadline.h). */
	deadline_pass_arm(a->pass_timeout, true);
	if (sync_dry_run)
		return child_dry(c, a);
	if (state_open_dir(c->state_dir, true, &st, &err) == -1) {
		log_warnx("%s: %s", a->name, err);
		free(err);
		send_report(&done);
		return EX_IOERR;
	}
	rc = sync_account(c, a, st, &res);
	log_result(p, a, &res, rc);
	done.imported = res.imported;
	done.deleted = res.deleted;
	done.bytes = res.bytes;
	if (p->daemon)
		read_sched(st, a, &done.sched);
	send_report(&done);
	sync_result_free(&res);
	state_close(st);
	return rc;
}

/* The child's first steps: signals, its report pipe, its stderr. */
static void
child_setup(struct sync_pool *p, pid_t parent)
{
	/* TERM/INT end the pass within about a second (the message
	 * being fetched is abandoned, what was fetched is delivered);
	 * the child dies with its parent (as a whole process would),
	 * so that killing `pop3bridge sync` never leaves a pass
	 * running. */
	if (!proc_child_init(parent, NULL, SIGKILL))
		_exit(EX_TEMPFAIL);
	child_report_fd = p->report[1];
	close(p->report[0]);
	if (p->progress != NULL) {
		sync_progress_hook = progress_hook;
		if (p->err_fd != -1)
			close(p->err_fd);
		if (p->err_w != -1) {
			dup2(p->err_w, STDERR_FILENO);
			close(p->err_w);
		}
	}
}

/* The trust anchors the pass will verify its servers against, indexed
 * here in the parent (lib/tls_anchors.h), once for all its passes: each
 * child would otherwise decode the whole system bundle again. A file that
 * cannot be read is the pass's own error to report. */
static void
preload_anchors(const struct conf *c, const struct conf_account *a)
{
	bool pop3 = a->pop3.tls != CONF_TLS_NONE;
	bool imap = c->store.type == CONF_STORE_IMAP && c->store.imap.tls != CONF_TLS_NONE;
	const char *files[3];
	size_t n = 0;
	char *why = NULL;

	if (pop3 || imap)
		files[n++] = TLS_ANCHORS_SYSTEM_BUNDLE;
	if (pop3 && a->pop3.ca_file != NULL)
		files[n++] = a->pop3.ca_file;
	if (imap && c->store.imap.ca_file != NULL)
		files[n++] = c->store.imap.ca_file;
	for (size_t i = 0; i < n; i++)
		if (tls_anchors_preload(files[i], &why) == -1) {
			log_debug("%s: %s", a->name, why);
			free(why);
			why = NULL;
		}
}

/* The keeper (sync_pool_init): its connection, idle until SIGTERM or
 * SIGINT (a Ctrl-C of `sync`), its parent's death or sync_pool_free's
 * SIGKILL. Any failure is left to the passes, which open the same
 * database and say why. */
static void __attribute__((noreturn))
keeper(const char *state_dir, pid_t parent)
{
	struct state *st = NULL;
	char *err = NULL;

	if (!proc_child_init(parent, NULL, SIGKILL))
		_exit(0);
	if (state_open_dir(state_dir, false, &st, &err) == -1) {
		free(err);
		_exit(0);
	}
	while (!proc_pause(3600))
		;
	state_close(st);
	_exit(0);
}

static void
keeper_start(struct sync_pool *p, const struct conf *c)
{
	pid_t parent = getpid(), pid;

	if (!p->keep || !state_dir_has_db(c->state_dir))
		return;
	p->keep = false;
	fflush(NULL);
	if ((pid = fork()) == -1) {
		log_debug("keeping the state open: fork: %s", strerror(errno));
		return;
	}
	if (pid == 0) {
		close(p->report[0]);
		close(p->report[1]);
		keeper(c->state_dir, parent);
	}
	p->keeper = pid;
}

int
sync_pool_start(struct sync_pool *p, const struct conf *c, const struct conf_account *a)
{
	struct sync_pool_job *slot = NULL;
	pid_t parent = getpid(), pid;

	if (sync_pool_running(p) >= p->limit)
		return -1;
	for (unsigned i = 0; i < p->max && slot == NULL; i++)
		if (p->jobs[i].pid == 0)
			slot = &p->jobs[i];
	if (slot == NULL)
		return -1;
	keeper_start(p, c);
	preload_anchors(c, a);
	fflush(NULL);
	if ((pid = fork()) == -1) {
		log_warn("%s: fork", a->name);
		return -1;
	}
	if (pid == 0) {
		child_setup(p, parent);
		_exit(child_pass(p, c, a));
	}
	slot->pid = pid;
	slot->account = xstrdup(a->name);
	slot->host = xstrdup(a->pop3.host ? a->pop3.host : "");
	slot->reported = false;
	memset(&slot->sched, 0, sizeof slot->sched);
	return 0;
}

static struct sync_pool_job *
job_of(struct sync_pool *p, pid_t pid)
{
	for (unsigned i = 0; i < p->max; i++)
		if (p->jobs[i].pid == pid)
			return &p->jobs[i];
	return NULL;
}

/* Takes every report waiting in the pipe. */
static void
drain_reports(struct sync_pool *p)
{
	struct report r[64];
	ssize_t n;

	while ((n = read(p->report[0], r, sizeof r)) > 0) {
		for (size_t i = 0; i < (size_t)n / sizeof *r; i++) {
			struct sync_pool_job *j = job_of(p, r[i].pid);

			if (j == NULL)
				continue;
			if (r[i].kind == REPORT_DONE) {
				j->reported = true;
				j->sched = r[i].sched;
				p->stats.imported += r[i].imported;
				p->stats.deleted += r[i].deleted;
				p->stats.bytes += r[i].bytes;
			} else if (p->progress != NULL)
				progress_update(p->progress, j->account, &r[i].sp);
		}
	}
}

/* Frees slot i of the job whose exit status is status. */
static void
finish_job(struct sync_pool *p, unsigned i, int status, char **account, int *code,
    struct sync_pool_sched *sched)
{
	drain_reports(p);
	if (sched != NULL)
		*sched = p->jobs[i].sched;
	*account = p->jobs[i].account;
	p->jobs[i].account = NULL;
	p->jobs[i].pid = 0;
	free(p->jobs[i].host);
	p->jobs[i].host = NULL;
	if (WIFEXITED(status))
		*code = WEXITSTATUS(status);
	else {
		log_warnx("%s: pass killed by signal %d", *account, WTERMSIG(status));
		*code = EX_SOFTWARE;
	}
	p->stats.passes++;
	if (*code != EX_OK || !p->jobs[i].reported)
		p->stats.failed++;
	if (p->progress != NULL)
		progress_drop(p->progress, *account);
}

int
sync_pool_reap(struct sync_pool *p, bool block, char **account, int *code,
    struct sync_pool_sched *sched)
{
	int status;
	pid_t pid;

	if (sync_pool_running(p) == 0)
		return -1;
	if (!block) {
		/* The daemon has other children (relay, queue runner): ask for
		 * ours only, never reap theirs. */
		for (unsigned i = 0; i < p->max; i++)
			if (p->jobs[i].pid != 0 &&
			    waitpid(p->jobs[i].pid, &status, WNOHANG) == p->jobs[i].pid) {
				finish_job(p, i, status, account, code, sched);
				return 1;
			}
		drain_reports(p);
		return 0;
	}
	/* `sync` forks nothing else. EINTR returns 0 so that the caller sees
	 * the signal that woke it. */
	if ((pid = waitpid(-1, &status, 0)) <= 0)
		return 0;
	if (pid == p->keeper)
		p->keeper = 0;
	for (unsigned i = 0; i < p->max; i++)
		if (p->jobs[i].pid == pid) {
			finish_job(p, i, status, account, code, sched);
			return 1;
		}
	return 0;
}

size_t
sync_pool_running(const struct sync_pool *p)
{
	size_t n = 0;

	for (unsigned i = 0; i < p->max; i++)
		n += p->jobs[i].pid != 0;
	return n;
}

bool
sync_pool_has(const struct sync_pool *p, const char *account)
{
	for (unsigned i = 0; i < p->max; i++)
		if (p->jobs[i].pid != 0 && strcmp(p->jobs[i].account, account) == 0)
			return true;
	return false;
}

size_t
sync_pool_on_host(const struct sync_pool *p, const char *host)
{
	size_t n = 0;

	for (unsigned i = 0; i < p->max; i++)
		n += p->jobs[i].pid != 0 && strcasecmp(p->jobs[i].host, host ? host : "") == 0;
	return n;
}

void
sync_pool_signal(struct sync_pool *p, int sig)
{
	for (unsigned i = 0; i < p->max; i++)
		if (p->jobs[i].pid != 0)
			kill(p->jobs[i].pid, sig);
}

struct sync_pool_stats
sync_pool_take_stats(struct sync_pool *p)
{
	struct sync_pool_stats s = p->stats;

	memset(&p->stats, 0, sizeof p->stats);
	return s;
}

/* Ctrl-C / SIGTERM while `sync` waits: the children get it too (same
 * process group, or forwarded) and stop within about a second. */
static volatile sig_atomic_t sync_got_signal;

static void
on_sync_signal(int sig)
{
	sync_got_signal = sig;
}

/* `sync` on a terminal, not -q: progress drawn, the passes' stderr
 * through a pipe printed above it. */
static void
progress_setup(struct sync_pool *p)
{
	enum log_verbosity v;
	int sl, fds[2];

	log_settings(&v, &sl);
	if (v == LOG_QUIET || sl || sync_dry_run || !isatty(STDERR_FILENO) ||
	    getenv("POP3BRIDGE_NO_PROGRESS"))
		return;
	if (pipe2(fds, O_CLOEXEC) == -1)
		return;
	fcntl(fds[0], F_SETFL, O_NONBLOCK);
	p->err_fd = fds[0];
	p->err_w = fds[1];
	p->progress = progress_start(stderr);
}

static void
drain_stderr(struct sync_pool *p)
{
	char buf[4096];
	ssize_t n;

	while ((n = read(p->err_fd, buf, sizeof buf)) > 0)
		progress_print(p->progress, buf, (size_t)n);
}

/* Waits (a quarter second at most) for reports, log lines or a child's
 * end, with the progress drawn. */
static void
progress_wait(struct sync_pool *p)
{
	struct pollfd pfd[2] = { { p->report[0], POLLIN, 0 }, { p->err_fd, POLLIN, 0 } };

	if (poll(pfd, 2, 250) > 0) {
		drain_reports(p);
		drain_stderr(p);
	}
}

/* Starts every not yet started account there is room for (max_parallel,
 * max_per_host). -1 when a fork failed. */
static int
start_some(struct sync_pool *p, const struct conf *c, const struct conf_account **todo,
    bool *started, size_t total)
{
	for (size_t i = 0; i < total && !sync_got_signal; i++) {
		if (started[i] || sync_pool_running(p) >= p->limit)
			continue;
		if (sync_pool_on_host(p, todo[i]->pop3.host) >= c->max_per_host)
			continue;
		if (sync_pool_start(p, c, todo[i]) == -1)
			return -1;
		started[i] = true;
	}
	return 0;
}

int
sync_pool_run(const struct conf *c, char *const *names, size_t n)
{
	struct sigaction sa = { .sa_handler = on_sync_signal };
	size_t total = n ? n : c->n_accounts;
	const struct conf_account **todo = xcalloc(total ? total : 1, sizeof *todo);
	bool *started = xcalloc(total ? total : 1, sizeof *started);
	struct sync_pool p;
	int worst = EX_OK, code, r;
	char *done;

	for (size_t i = 0; i < total; i++)
		todo[i] = n ? conf_account(c, names[i]) : &c->accounts[i];
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sync_pool_init(&p, c->max_parallel, false, total > 1);
	progress_setup(&p);
	for (;;) {
		if (start_some(&p, c, todo, started, total) == -1 && worst == EX_OK)
			worst = EX_OSERR;
		if (sync_got_signal)
			sync_pool_signal(&p, SIGTERM);
		if (p.progress != NULL)
			progress_wait(&p);
		r = sync_pool_reap(&p, p.progress == NULL, &done, &code, NULL);
		if (r == -1)
			break;
		if (r == 0)
			continue;
		if (code != EX_OK && worst == EX_OK)
			worst = code;
		free(done);
	}
	if (p.progress != NULL) {
		drain_stderr(&p);
		progress_end(p.progress);
		close(p.err_fd);
		close(p.err_w);
	}
	sync_pool_free(&p);
	free(todo);
	free(started);
	if (sync_got_signal && worst == EX_OK)
		worst = EX_TEMPFAIL;
	return worst;
}

/* The queue runner: one pass over the due messages (see queue.h). The
 * Sent copy and the bounce are in queue_file.c. */
#include "bridge/queue.h"
#include "bridge/queue_priv.h"

#include <sys/file.h>
#include <sys/wait.h>

#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "bridge/upstream.h"
#include "lib/log.h"
#include "lib/proc.h"
#include "lib/xmalloc.h"
#include "store/outbox.h"

#define QUEUE_BACKOFF_MAX 3600
#define QUEUE_SYNC_EVERY 32	/* records between two synced ones */
#define QUEUE_PER_CONN	32	/* due messages per upstream connection, at least */
#define QUEUE_WORKERS_MAX 16	/* worker processes at once */

volatile sig_atomic_t queue_stop;

unsigned
queue_backoff(unsigned initial, unsigned n)
{
	unsigned d = initial ? initial : 1;

	while (n-- > 1 && d < QUEUE_BACKOFF_MAX)
		d *= 2;
	return d < QUEUE_BACKOFF_MAX ? d : QUEUE_BACKOFF_MAX;
}

/*
 * One attempt: MAIL, RCPT per pending recipient, DATA.
 */

static void
set_result(struct outbox_rcpt *r, enum outbox_rcpt_state state,
    const struct upstream_reply *rep)
{
	r->state = state;
	r->last_code = rep->code;
	free(r->last_response);
	r->last_response = xstrdup(rep->text);
}

/* A reply's verdict on a recipient: 2xx delivered (when ok2xx), 5xx
 * failed, else still pending. */
static void
apply(struct outbox_rcpt *r, const struct upstream_reply *rep, bool ok2xx)
{
	if (rep->code / 100 == 2 && ok2xx)
		set_result(r, RCPT_DELIVERED, rep);
	else if (rep->code / 100 == 5)
		set_result(r, RCPT_FAILED, rep);
	else
		set_result(r, RCPT_PENDING, rep);
}

static void
set_error(char **error, const char *what, const struct upstream_reply *rep)
{
	free(*error);
	*error = xasprintf("%s: %d %s", what, rep->code, rep->text);
}

/* The replies of a transaction, applied to m's pending recipients (pend[]
 * maps the transaction's recipients to m's); *error says why some stay
 * pending or failed. */
static void
apply_tx(struct outbox_msg *m, const size_t *pend, const struct upstream_tx *t,
    char **error)
{
	size_t i;

	if (t->mail.code != 0 && t->mail.code / 100 != 2) {
		for (i = 0; i < t->n_rcpts; i++)
			apply(&m->rcpts[pend[i]], &t->mail, false);
		set_error(error, "MAIL", &t->mail);
		return;
	}
	for (i = 0; i < t->n_rcpts; i++)
		if (t->rcpt[i].code != 0 && t->rcpt[i].code / 100 != 2) {
			apply(&m->rcpts[pend[i]], &t->rcpt[i], false);
			set_error(error, "RCPT", &t->rcpt[i]);
		}
	if (t->data.code == 0)
		return;
	for (i = 0; i < t->n_rcpts; i++)
		if (t->rcpt[i].code / 100 == 2)
			apply(&m->rcpts[pend[i]], &t->data, t->delivered);
	if (!t->delivered)
		set_error(error, "DATA", &t->data);
}

/* The transaction for m's pending recipients on an open session; *error
 * (allocated) says why recipients stay pending. */
static void
transact(struct upstream *sm, struct outbox_msg *m, int fd, char **error)
{
	size_t *pend = xcalloc(m->n_rcpts, sizeof *pend), k = 0, i;
	char **addrs = xcalloc(m->n_rcpts, sizeof *addrs);
	struct upstream_tx t = { .from = m->mail_from, .size = m->size, .fd = fd };

	for (i = 0; i < m->n_rcpts; i++)
		if (m->rcpts[i].state == RCPT_PENDING) {
			pend[k] = i;
			addrs[k++] = m->rcpts[i].addr;
		}
	t.rcpts = addrs;
	t.n_rcpts = k;
	/* Even after a failure midway, the refusals read so far count. */
	if (upstream_send(sm, &t, error) != UPSTREAM_OK) {
		char *why = *error;

		*error = NULL;
		apply_tx(m, pend, &t, error);
		free(*error);
		*error = why;
	} else
		apply_tx(m, pend, &t, error);
	upstream_tx_clear(&t);
	free(addrs);
	free(pend);
}

/*
 * Recording an attempt.
 */

static void
count(const struct outbox_msg *m, size_t n[3])
{
	n[0] = n[1] = n[2] = 0;
	for (size_t i = 0; i < m->n_rcpts; i++)
		n[m->rcpts[i].state]++;
}

/* Pending recipients past the queue lifetime fail, with the last reply
 * (a 4xx, kept as such) or the last error. */
static void
expire(struct outbox_msg *m, const char *error)
{
	struct outbox_rcpt *r;

	for (size_t i = 0; i < m->n_rcpts; i++) {
		r = &m->rcpts[i];
		if (r->state != RCPT_PENDING)
			continue;
		r->state = RCPT_FAILED;
		if (r->last_response == NULL || r->last_code == 0) {
			free(r->last_response);
			r->last_code = 0;
			r->last_response = xasprintf("not delivered within the queue"
			    " lifetime: %s", error ? error : "no attempt succeeded");
		}
	}
}

/* Records the attempt's results and decides what comes next: retry later,
 * or finished (sent, or bounced when some recipient failed). */
static void
record(const struct conf *c, struct state *st, struct outbox_msg *m, const char *error,
    bool durable)
{
	int64_t now = (int64_t)time(NULL), deadline, next = 0;
	enum outbox_state state;
	char *err = NULL;
	size_t n[3];

	deadline = m->created_at + (int64_t)c->relay.queue_lifetime;
	count(m, n);
	if (n[RCPT_PENDING] > 0 && now >= deadline) {
		expire(m, error);
		count(m, n);
	}
	if (n[RCPT_PENDING] > 0) {
		state = OUTBOX_QUEUED;
		next = now + queue_backoff(c->relay.retry_initial, m->attempts + 1);
		/* One last attempt at the deadline, then it bounces. */
		if (next > deadline)
			next = deadline > now ? deadline : now + 1;
	} else
		state = n[RCPT_FAILED] > 0 ? OUTBOX_BOUNCED : OUTBOX_SENT;
	if (outbox_record_attempt(st, m, state, next, error, durable, &err) == -1) {
		log_warnx("%s: queue id %lld: recording the attempt failed, it will be"
		    " repeated: %s", m->account, (long long)m->id, err);
		free(err);
		return;
	}
	m->state = state;
	m->attempts++;
	m->sent_copy_done = m->sent_copy_done || n[RCPT_DELIVERED] == 0;
	m->bounce_done = m->bounce_done || n[RCPT_FAILED] == 0;
	log_info("%s: queue id %lld: %zu delivered, %zu failed, %zu deferred%s%s",
	    m->account, (long long)m->id, n[RCPT_DELIVERED], n[RCPT_FAILED],
	    n[RCPT_PENDING], error ? ": " : "", error ? error : "");
}

/* One account's session for a pass, opened at its first message and
 * kept for the others. A login the server refused is not tried again
 * in the pass: every message gets that error. */
struct session {
	const struct conf_account *a;
	struct upstream *sm;
	char *refused;          /* why the session could not be opened */
};

static void
session_open(struct session *ss)
{
	const struct conf_account *a = ss->a;
	char *secret = NULL, *err = NULL;

	if (a == NULL || !a->has_smtp) {
		ss->refused = xasprintf("account %s has no smtp block", a ? a->name : "?");
		return;
	}
	/* The secret is fetched for each login (a refreshed OAuth2 token). */
	if (conf_password(&a->smtp, &secret, &err) == -1 ||
	    upstream_open(&ss->sm, &a->smtp, secret, &err) != UPSTREAM_OK) {
		ss->sm = NULL;
		ss->refused = err;
	}
	if (secret != NULL) {
		explicit_bzero(secret, strlen(secret));
		free(secret);
	}
}

static void
session_close(struct session *ss)
{
	upstream_close(ss->sm);
	free(ss->refused);
	memset(ss, 0, sizeof *ss);
}

/* One delivery attempt for m on the account's session, recorded before
 * the next message (and before QUIT), so that a crash after the
 * upstream's reply loses as little as possible. A session that broke
 * (network, protocol) is opened again for the next message. */
static void
attempt(const struct conf *c, struct state *st, struct session *ss, struct outbox_msg *m,
    bool durable)
{
	char *error = NULL;
	int fd = -1;

	if (ss->sm == NULL && ss->refused == NULL)
		session_open(ss);
	if (ss->refused != NULL)
		error = xstrdup(ss->refused);
	else if ((fd = outbox_msg_open(st, m, &error)) == -1)
		;
	else
		transact(ss->sm, m, fd, &error);
	if (ss->sm != NULL && !upstream_usable(ss->sm)) {
		upstream_close(ss->sm);
		ss->sm = NULL;
	}
	record(c, st, m, error, durable);
	if (fd != -1)
		close(fd);
	free(error);
}

/*
 * The pass.
 */

/* The pass lock, or -1 when another pass holds it (or it cannot be had). */
static int
lock_queue(const char *state_dir)
{
	char *path = xasprintf("%s/queue.lock", state_dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

	free(path);
	if (fd == -1)
		return -1;
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Files the pending copies of the finished ones among list[0..n), in
 * batches. */
static void
file_finished(const struct conf *c, struct state *st, const struct conf_account *a,
    struct outbox_msg **list, size_t n)
{
	struct outbox_msg **batch = xcalloc(QUEUE_FILE_BATCH, sizeof *batch);
	size_t k = 0;

	for (size_t i = 0; i <= n; i++) {
		if (i < n && (list[i]->state == OUTBOX_SENT || list[i]->state == OUTBOX_BOUNCED) &&
		    (!list[i]->sent_copy_done || !list[i]->bounce_done))
			batch[k++] = list[i];
		if (k > 0 && (k == QUEUE_FILE_BATCH || i == n)) {
			queue_file_copies(c, st, a, batch, k);
			k = 0;
		}
	}
	free(batch);
}

/* One account's due messages list[0..n), oldest first: each queued one
 * delivered on one upstream session, then the copies of the finished
 * ones filed in batches.
 *
 * Most records are not synced to disk one by one (the connection is at
 * outbox_set_synced(false)): every QUEUE_SYNC_EVERY-th and the last one
 * are durable, and each makes every record before it durable too. A
 * process killed in between loses no record; a power loss may lose the
 * others, and those messages are delivered again: the window that an
 * upstream's 250 before our commit always leaves (queue.h), widened to
 * those few, never a loss (the message and its rows were durable at
 * enqueue). */
static void
deliver_account(const struct conf *c, struct state *st, struct outbox_msg **list, size_t n)
{
	const struct conf_account *a = conf_account(c, list[0]->account);
	struct session ss = { .a = a };
	char *err = NULL;
	size_t i;

	if (outbox_set_synced(st, false, &err) == -1) {
		log_warnx("queue: %s", err);
		free(err);
	}

	for (i = 0; i < n; i++) {
		/* A stop is taken between messages (the runner holds SIGTERM). */
		if (queue_stop || proc_stop_requested()) {
			queue_stop = 1;
			break;
		}
		if (list[i]->state == OUTBOX_QUEUED)
			attempt(c, st, &ss, list[i],
			    i + 1 == n || (i + 1) % QUEUE_SYNC_EVERY == 0);
	}
	session_close(&ss);
	/* After a stop, the copies wait for the next pass. */
	if (!queue_stop)
		file_finished(c, st, a, list, n);
}

/*
 * Several upstream connections at once: the due messages are cut into
 * chunks, each one session on its own connection; with more than one,
 * each chunk runs in a worker process of its own (its own state
 * connection, its own libetpan session).
 */

/* One upstream session's share of the due messages, oldest first. */
struct chunk {
	struct outbox_msg **m;
	size_t n;
};

/* Per account: one chunk per QUEUE_PER_CONN messages, at most
 * relay.upstream_connections, dealt round robin. */
static struct chunk *
plan(const struct conf *c, struct outbox_msg *v, size_t n, size_t *n_chunks)
{
	struct chunk *ch = xcalloc(n ? n : 1, sizeof *ch);
	bool *done = xcalloc(n ? n : 1, sizeof *done);
	size_t i, j, k, m, w, first;

	*n_chunks = 0;
	for (i = 0; i < n; i++) {
		if (done[i])
			continue;
		for (j = i, m = 0; j < n; j++)
			m += strcmp(v[j].account, v[i].account) == 0;
		w = (m + QUEUE_PER_CONN - 1) / QUEUE_PER_CONN;
		if (w > c->relay.upstream_connections)
			w = c->relay.upstream_connections;
		if (w == 0)
			w = 1;
		first = *n_chunks;
		for (k = 0; k < w; k++)
			ch[first + k].m = xcalloc(m / w + 1, sizeof *ch->m);
		for (j = i, k = 0; j < n; j++)
			if (!done[j] && strcmp(v[j].account, v[i].account) == 0) {
				struct chunk *to = &ch[first + k++ % w];

				done[j] = true;
				to->m[to->n++] = &v[j];
			}
		*n_chunks += w;
	}
	free(done);
	return ch;
}

static void __attribute__((noreturn))
worker(const struct conf *c, const struct chunk *ch, pid_t parent)
{
	struct state *st;
	char *err = NULL;

	/* It dies with the runner, and holds TERM like it. */
	if (!proc_child_init(parent, NULL, SIGKILL))
		_exit(EX_TEMPFAIL);
	if (state_open_dir(c->state_dir, true, &st, &err) == -1) {
		log_warnx("queue: %s", err);
		_exit(EX_IOERR);
	}
	deliver_account(c, st, ch->m, ch->n);
	state_close(st);
	_exit(EX_OK);
}

/* Waits (at most a second) for a worker to end; a stop signal is passed
 * on to every worker, which then stops after its current message. */
static void
reap_workers(pid_t *pids, size_t n, size_t *live, const sigset_t *wait_for)
{
	struct timespec ts = { 1, 0 };
	int sig, status;

	sig = sigtimedwait(wait_for, NULL, &ts);
	if (sig == SIGTERM || sig == SIGINT) {
		queue_stop = 1;
		for (size_t i = 0; i < n; i++)
			if (pids[i] > 0)
				kill(pids[i], SIGTERM);
	}
	for (size_t i = 0; i < n; i++)
		if (pids[i] > 0 && waitpid(pids[i], &status, WNOHANG) == pids[i]) {
			if (WIFSIGNALED(status))
				log_warnx("queue: a delivery worker was killed by signal %d",
				    WTERMSIG(status));
			pids[i] = 0;
			(*live)--;
		}
}

/* Runs the chunks, at most QUEUE_WORKERS_MAX workers at a time. */
static void
run_chunks(const struct conf *c, struct state *st, struct chunk *ch, size_t n)
{
	pid_t *pids = xcalloc(n, sizeof *pids), parent = getpid(), pid;
	sigset_t wait_for, old;
	size_t next = 0, live = 0;

	/* SIGCHLD is held while workers run, so that none is missed; a stop
	 * is waited for too when it is held (the runner; `queue flush` dies
	 * of it as before). */
	sigprocmask(SIG_BLOCK, NULL, &old);
	sigemptyset(&wait_for);
	sigaddset(&wait_for, SIGCHLD);
	if (sigismember(&old, SIGTERM) == 1)
		sigaddset(&wait_for, SIGTERM);
	if (sigismember(&old, SIGINT) == 1)
		sigaddset(&wait_for, SIGINT);
	sigprocmask(SIG_BLOCK, &wait_for, NULL);
	while (next < n || live > 0) {
		while (live < QUEUE_WORKERS_MAX && next < n && !queue_stop &&
		    !proc_stop_requested()) {
			fflush(NULL);
			if ((pid = fork()) == 0)
				worker(c, &ch[next], parent);
			if (pid == -1) {
				log_warn("queue: fork");
				deliver_account(c, st, ch[next].m, ch[next].n);
			} else {
				pids[next] = pid;
				live++;
			}
			next++;
		}
		if (live == 0 && (queue_stop || proc_stop_requested())) {
			queue_stop = 1;
			break;
		}
		if (live > 0)
			reap_workers(pids, n, &live, &wait_for);
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	free(pids);
}

/* The due messages of v[0..n): one chunk runs here, more run in workers. */
static void
deliver_all(const struct conf *c, struct state *st, struct outbox_msg *v, size_t n)
{
	size_t n_chunks, i;
	struct chunk *ch = plan(c, v, n, &n_chunks);

	if (n_chunks == 1)
		deliver_account(c, st, ch[0].m, ch[0].n);
	else if (n_chunks > 1)
		run_chunks(c, st, ch, n_chunks);
	for (i = 0; i < n_chunks; i++)
		free(ch[i].m);
	free(ch);
}

int
queue_pass(const struct conf *c, struct state *st, int64_t now, char **err)
{
	struct outbox_msg *v;
	size_t n;
	int lock;

	if ((lock = lock_queue(c->state_dir)) == -1)
		return 1;
	if (outbox_due(st, c->state_dir, now, &v, &n, err) == -1) {
		close(lock);
		return -1;
	}
	deliver_all(c, st, v, n);
	outbox_msgs_free(v, n);
	if (outbox_cleanup(st, c->state_dir, err) == -1) {
		log_warnx("queue: %s", *err);
		free(*err);
		*err = NULL;
	}
	close(lock);
	return 0;
}

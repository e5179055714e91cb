/* The queue runner: one pass over the due messages (see queue.h). The
 * Sent copy and the bounce are in queue_file.c. */
#include "bridge/queue.h"
#include "bridge/queue_priv.h"

#include <sys/file.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bridge/upstream.h"
#include "lib/log.h"
#include "lib/proc.h"
#include "lib/xmalloc.h"
#include "store/outbox.h"

#define QUEUE_BACKOFF_MAX 3600

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

/* Applies a reply to every recipient in sel (NULL: every pending one):
 * 2xx delivered (when ok2xx), 5xx failed, else left pending. */
static void
apply_reply(struct outbox_msg *m, const bool *sel, const struct upstream_reply *rep,
    bool ok2xx)
{
	for (size_t i = 0; i < m->n_rcpts; i++) {
		if (m->rcpts[i].state != RCPT_PENDING || (sel != NULL && !sel[i]))
			continue;
		if (rep->code / 100 == 2 && ok2xx)
			set_result(&m->rcpts[i], RCPT_DELIVERED, rep);
		else if (rep->code / 100 == 5)
			set_result(&m->rcpts[i], RCPT_FAILED, rep);
		else
			set_result(&m->rcpts[i], RCPT_PENDING, rep);
	}
}

static char *
reply_error(const char *what, const struct upstream_reply *rep)
{
	return xasprintf("%s: %d %s", what, rep->code, rep->text);
}

/* RCPT for each pending recipient; ok[i] set for the accepted ones. */
static int
rcpts(struct upstream *sm, struct outbox_msg *m, bool *ok, size_t *n_ok, char **error)
{
	struct upstream_reply rep;
	size_t i;

	*n_ok = 0;
	for (i = 0; i < m->n_rcpts; i++) {
		if (m->rcpts[i].state != RCPT_PENDING)
			continue;
		if (upstream_rcpt(sm, m->rcpts[i].addr, &rep, error) != UPSTREAM_OK)
			return -1;
		if (rep.code / 100 == 2) {
			ok[i] = true;
			(*n_ok)++;
		} else {
			set_result(&m->rcpts[i], rep.code / 100 == 5 ? RCPT_FAILED :
			    RCPT_PENDING, &rep);
			free(*error);
			*error = reply_error("RCPT", &rep);
		}
	}
	return 0;
}

/* The transaction on an open session; *error (allocated) says why
 * recipients stay pending. */
static void
transact(struct upstream *sm, struct outbox_msg *m, int fd, char **error)
{
	bool *ok = xcalloc(m->n_rcpts, sizeof *ok);
	bool eightbit = queue_file_8bit(fd);
	struct upstream_reply rep;
	size_t n_ok;

	if (upstream_mail(sm, m->mail_from, m->size, eightbit, &rep, error) != UPSTREAM_OK)
		goto out;
	if (rep.code / 100 != 2) {
		apply_reply(m, NULL, &rep, false);
		*error = reply_error("MAIL", &rep);
		goto out;
	}
	if (rcpts(sm, m, ok, &n_ok, error) == -1)
		goto out;
	if (n_ok == 0) {
		upstream_rset(sm, NULL);
		goto out;
	}
	if (upstream_data(sm, fd, &rep, error) != UPSTREAM_OK)
		goto out;
	apply_reply(m, ok, &rep, rep.code / 100 == 2 && rep.code != 354);
	if (rep.code / 100 != 2) {
		free(*error);
		*error = reply_error("DATA", &rep);
	}
out:
	free(ok);
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
record(const struct conf *c, struct state *st, struct outbox_msg *m, const char *error)
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
	if (outbox_record_attempt(st, m, state, next, error, &err) == -1) {
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

/* One delivery attempt for m through account a, recorded before QUIT so
 * that a crash after the upstream's reply loses as little as possible. */
static void
attempt(const struct conf *c, struct state *st, const struct conf_account *a,
    struct outbox_msg *m)
{
	struct upstream *sm = NULL;
	char *secret = NULL, *error = NULL;
	int fd = -1;

	if (a == NULL || !a->has_smtp)
		error = xasprintf("account %s has no smtp block", m->account);
	else if ((fd = open(m->spool_path, O_RDONLY | O_CLOEXEC)) == -1)
		error = xasprintf("%s: %s", m->spool_path, strerror(errno));
	else if (conf_password(&a->smtp, &secret, &error) == 0 &&
	    upstream_open(&sm, &a->smtp, secret, &error) == UPSTREAM_OK)
		transact(sm, m, fd, &error);
	if (secret != NULL) {
		explicit_bzero(secret, strlen(secret));
		free(secret);
	}
	record(c, st, m, error);
	upstream_close(sm);
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

int
queue_pass(const struct conf *c, struct state *st, int64_t now, char **err)
{
	struct outbox_msg *v;
	size_t n, i;
	int lock;

	if ((lock = lock_queue(c->state_dir)) == -1)
		return 1;
	if (outbox_due(st, c->state_dir, now, &v, &n, err) == -1) {
		close(lock);
		return -1;
	}
	for (i = 0; i < n; i++) {
		const struct conf_account *a = conf_account(c, v[i].account);

		/* A stop is taken between messages (the runner holds SIGTERM). */
		if (queue_stop || proc_stop_requested()) {
			queue_stop = 1;
			break;
		}
		if (v[i].state == OUTBOX_QUEUED)
			attempt(c, st, a, &v[i]);
		if (v[i].state == OUTBOX_SENT || v[i].state == OUTBOX_BOUNCED)
			queue_file_copies(c, st, a, &v[i]);
	}
	outbox_msgs_free(v, n);
	if (outbox_cleanup(st, c->state_dir, err) == -1) {
		log_warnx("queue: %s", *err);
		free(*err);
		*err = NULL;
	}
	close(lock);
	return 0;
}

/* Group commit between the relay's sessions and the relay process (see
 * relay_commit.h). A request is one SOCK_SEQPACKET message: the spool
 * file's descriptor (SCM_RIGHTS) and "P3BQ2" NUL name NUL account NUL
 * auth_user NUL from NUL rcpt NUL ..., name being the file's durable name
 * in the spool (outbox_spool_link), or empty for a message small enough to
 * be read into its row by the relay process (OUTBOX_INLINE_MAX); the reply
 * is "OK <id>" or "ERR <why>". */
#include "bridge/relay_commit.h"

#include <sys/socket.h>
#include <sys/stat.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bridge/relay_session.h"
#include "lib/addr.h"
#include "lib/log.h"
#include "lib/xmalloc.h"
#include "store/outbox.h"
#include "store/state.h"

#define COMMIT_MAGIC	"P3BQ2"
/* A request's payload at most: far below a Unix socket's send buffer, and
 * 100 recipients (relay.max_recipients' default) of 255 bytes fit. Bigger
 * envelopes are queued by the session itself. */
#define COMMIT_MAX	(64 * 1024)
#define COMMIT_REPLY_MAX 600
/* Requests served in one group at most (every session has one at a time). */
#define COMMIT_GROUP_MAX 256

/*
 * The session side.
 */

/* The request payload, allocated, or NULL when over COMMIT_MAX. */
static char *
encode(const char *name, const char *account, const char *auth_user, const char *from,
    char *const *rcpts, size_t n, size_t *len)
{
	const char *fixed[] = { COMMIT_MAGIC, name, account, auth_user, from };
	size_t total = 0, o = 0, i;
	char *buf;

	for (i = 0; i < 5; i++)
		total += strlen(fixed[i]) + 1;
	for (i = 0; i < n; i++)
		total += strlen(rcpts[i]) + 1;
	if (total > COMMIT_MAX)
		return NULL;
	buf = xmalloc(total);
	for (i = 0; i < 5 + n; i++) {
		const char *s = i < 5 ? fixed[i] : rcpts[i - 5];
		size_t l = strlen(s) + 1;

		memcpy(buf + o, s, l);
		o += l;
	}
	*len = total;
	return buf;
}

/* Sends the payload with fd attached: 0, or -1 (nothing was taken). */
static int
send_request(int sock, int fd, const char *buf, size_t len)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
	    .msg_controllen = sizeof ctl.b };
	struct cmsghdr *cm;
	ssize_t r;

	memset(&ctl, 0, sizeof ctl);
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof fd);
	while ((r = sendmsg(sock, &mh, MSG_NOSIGNAL)) == -1 && errno == EINTR)
		;
	return r == (ssize_t)len ? 0 : -1;
}

/* Waits up to timeout seconds for the reply into buf: its length, or -1. */
static ssize_t
read_reply(int sock, char *buf, size_t size, unsigned timeout)
{
	struct pollfd p = { .fd = sock, .events = POLLIN };
	struct timespec now, end;
	ssize_t n;
	int ms;

	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += timeout;
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		ms = (int)((end.tv_sec - now.tv_sec) * 1000 +
		    (end.tv_nsec - now.tv_nsec) / 1000000);
		if (ms <= 0)
			return -1;
		/* EINTR: the session's own deadline alarm; the reply is near. */
		if (poll(&p, 1, ms) == -1 && errno != EINTR)
			return -1;
		if ((n = recv(sock, buf, size - 1, MSG_DONTWAIT)) >= 0)
			break;
		if (errno != EAGAIN && errno != EINTR)
			return -1;
	}
	buf[n] = '\0';
	return n;
}

/* Queues the named file here, when the relay process cannot: 0 with
 * *id, or -1 with *err. */
static int
enqueue_here(const char *state_dir, const struct outbox_submission *proto, int64_t *id,
    char **err)
{
	struct outbox_submission u = *proto;
	struct state *st;
	int r = -1;

	if (state_open_dir(state_dir, true, &st, err) == -1)
		return -1;
	if (outbox_enqueue_many(st, state_dir, &u, 1) == 1) {
		*id = u.id;
		outbox_notify(state_dir);
		r = 0;
	} else
		*err = u.err;
	state_close(st);
	return r;
}

int
relay_commit_submit(const struct conf *c, int sock, int fd, const char *account,
    const char *auth_user, const char *from, char *const *rcpts, size_t n_rcpts,
    int64_t *id, char **err)
{
	struct outbox_submission u = { .account = account, .auth_user = auth_user,
	    .mail_from = from, .rcpts = rcpts, .n_rcpts = n_rcpts, .fd = fd };
	char reply[COMMIT_REPLY_MAX], *req = NULL, *name = NULL, *end;
	struct stat sb;
	size_t len;
	ssize_t n;
	int r = -1;

	/* A small message is read into its row by the relay process: durable
	 * with the group's one sync. A big one's data and name are made
	 * durable here, in parallel with the other sessions (the kernel joins
	 * concurrent fsyncs into few journal commits): the relay process then
	 * has only the rows to commit. */
	if (fstat(fd, &sb) == -1) {
		*err = xasprintf("fstat of the message: %s", strerror(errno));
		return -1;
	}
	if ((uint64_t)sb.st_size > OUTBOX_INLINE_MAX &&
	    outbox_spool_link(c->state_dir, fd, &name, err) == -1)
		return -1;
	u.name = name;
	if (sock < 0 ||
	    (req = encode(name != NULL ? name : "", account, auth_user, from, rcpts, n_rcpts,
	    &len)) == NULL ||
	    send_request(sock, fd, req, len) == -1) {
		/* Nothing was handed over: no relay process (an old one gone
		 * after a reload), or an envelope too big for the channel. */
		r = enqueue_here(c->state_dir, &u, id, err);
		goto out;
	}
	if ((n = read_reply(sock, reply, sizeof reply, c->relay.timeout)) <= 0) {
		*err = xstrdup("the relay process did not answer (the message may be queued"
		    " or not)");
		goto out;
	}
	if (strncmp(reply, "OK ", 3) == 0) {
		errno = 0;
		*id = strtoll(reply + 3, &end, 10);
		if (errno == 0 && *end == '\0' && *id > 0) {
			r = 0;
			goto out;
		}
	}
	*err = xstrdup(strncmp(reply, "ERR ", 4) == 0 ? reply + 4 : "unreadable answer");
out:
	free(req);
	free(name);
	return r;
}

/*
 * The relay process side.
 */

struct relay_commit {
	const struct conf *c;
	struct state *st;
	char *buf;              /* COMMIT_MAX + 1 bytes for one request */
};

/* One request read from a peer. */
struct request {
	struct relay_commit_peer *peer;
	int fd;                 /* the spool file, -1 when none came */
	const char *name, *account, *auth_user, *from;
	char **rcpts;           /* point into payload */
	size_t n_rcpts;
	char *payload;          /* owned */
	char *refusal;          /* allocated: not queued, why */
};

struct relay_commit *
relay_commit_new(const struct conf *c)
{
	struct relay_commit *rc = xcalloc(1, sizeof *rc);

	rc->c = c;
	rc->buf = xmalloc(COMMIT_MAX + 1);
	return rc;
}

void
relay_commit_free(struct relay_commit *rc)
{
	if (rc == NULL)
		return;
	if (rc->st != NULL)
		state_close(rc->st);
	free(rc->buf);
	free(rc);
}

/* The descriptors that came with mh: the first is kept in *fd, any other
 * closed (a well-behaved session sends exactly one). */
static void
take_fds(struct msghdr *mh, int *fd)
{
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm != NULL; cm = CMSG_NXTHDR(mh, cm)) {
		size_t k;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		for (k = 0; (k + 1) * sizeof(int) <= cm->cmsg_len - CMSG_LEN(0); k++) {
			int f;

			memcpy(&f, CMSG_DATA(cm) + k * sizeof(int), sizeof f);
			if (*fd == -1)
				*fd = f;
			else
				close(f);
		}
	}
}

/* Splits the payload into its strings; false when it is not a request. */
static bool
parse(struct request *rq, size_t len)
{
	char *p = rq->payload, *end = p + len, *f[5];
	size_t i;

	if (len == 0 || end[-1] != '\0')
		return false;
	for (i = 0; i < 5; i++) {
		if (p >= end)
			return false;
		f[i] = p;
		p += strlen(p) + 1;
	}
	if (strcmp(f[0], COMMIT_MAGIC) != 0 || p >= end)
		return false;
	rq->name = f[1][0] != '\0' ? f[1] : NULL;
	rq->account = f[2];
	rq->auth_user = f[3];
	rq->from = f[4];
	for (; p < end; p += strlen(p) + 1) {
		rq->rcpts = xreallocarray(rq->rcpts, rq->n_rcpts + 1, sizeof *rq->rcpts);
		rq->rcpts[rq->n_rcpts++] = p;
	}
	return true;
}

/* What MAIL and RCPT checked, checked again: NULL, or why not. */
static char *
refusal(const struct conf *c, const struct request *rq)
{
	const struct conf_account *a = conf_account(c, rq->account);
	struct stat sb;

	if (a == NULL || !a->has_smtp ||
	    relay_session_sender_account(c, rq->auth_user, rq->from) != a)
		return xasprintf("sender <%s> not allowed for this user", rq->from);
	if (rq->n_rcpts == 0 || rq->n_rcpts > c->relay.max_recipients)
		return xstrdup("bad number of recipients");
	for (size_t i = 0; i < rq->n_rcpts; i++)
		if (!addr_ok(rq->rcpts[i]))
			return xstrdup("bad recipient address");
	if (rq->fd == -1 || fstat(rq->fd, &sb) == -1 || !S_ISREG(sb.st_mode))
		return xstrdup("no message file");
	return NULL;
}

/* Reads the peer's request into *rq: true when there was one (maybe to be
 * refused), false when there was none (or the peer hung up). */
static bool
read_request(struct relay_commit *rc, struct relay_commit_peer *p, struct request *rq)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(4 * sizeof(int))];
	} ctl;
	struct iovec iov = { .iov_base = rc->buf, .iov_len = COMMIT_MAX + 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
	    .msg_controllen = sizeof ctl.b };
	ssize_t n;

	memset(rq, 0, sizeof *rq);
	rq->peer = p;
	rq->fd = -1;
	n = recvmsg(p->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return false;
	if (n <= 0) {
		p->hangup = true;
		return false;
	}
	take_fds(&mh, &rq->fd);
	rq->payload = xmalloc((size_t)n);
	memcpy(rq->payload, rc->buf, (size_t)n);
	if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || (size_t)n > COMMIT_MAX ||
	    !parse(rq, (size_t)n))
		rq->refusal = xstrdup("unreadable request");
	else
		rq->refusal = refusal(rc->c, rq);
	return true;
}

static void
reply(struct relay_commit_peer *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
reply(struct relay_commit_peer *p, const char *fmt, ...)
{
	char buf[COMMIT_REPLY_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof buf)
		n = sizeof buf - 1;
	/* A session that went away is noticed by the poll loop. */
	if (send(p->fd, buf, (size_t)n + 1, MSG_NOSIGNAL | MSG_DONTWAIT) == -1)
		p->hangup = true;
}

/* Queues the requests rq[0..n) that are not refused, in one group. */
static void
commit_group(struct relay_commit *rc, struct request *rq, size_t n)
{
	struct outbox_submission *subs = xcalloc(n, sizeof *subs);
	size_t k = 0, i;
	char *err = NULL;

	for (i = 0; i < n; i++)
		if (rq[i].refusal == NULL)
			subs[k++] = (struct outbox_submission){ .account = rq[i].account,
			    .auth_user = rq[i].auth_user, .mail_from = rq[i].from,
			    .rcpts = rq[i].rcpts, .n_rcpts = rq[i].n_rcpts, .fd = rq[i].fd,
			    .name = rq[i].name };
	/* Its commits sync the WAL after releasing the write lock (durable
	 * all the same: outbox_set_synced), so that the queue runner's
	 * records are not held up by every group's sync. */
	if (k > 0 && rc->st == NULL &&
	    (state_open_dir(rc->c->state_dir, true, &rc->st, &err) == -1 ||
	    outbox_set_synced(rc->st, false, &err) == -1)) {
		state_close(rc->st);
		rc->st = NULL;
		for (i = 0; i < k; i++)
			subs[i].err = xstrdup(err);
		free(err);
	} else if (k > 0 && outbox_enqueue_many(rc->st, rc->c->state_dir, subs, k) > 0) {
		outbox_notify(rc->c->state_dir);
		log_debug("relay: %zu messages queued in one commit", k);
	}
	for (i = 0, k = 0; i < n; i++) {
		struct outbox_submission *u = rq[i].refusal == NULL ? &subs[k++] : NULL;

		if (u == NULL) {
			log_warnx("relay: refused a request of a session: %s", rq[i].refusal);
			reply(rq[i].peer, "ERR %s", rq[i].refusal);
		} else if (u->id > 0)
			reply(rq[i].peer, "OK %" PRId64, u->id);
		else {
			log_warnx("relay: %s: cannot queue: %s", u->account, u->err);
			reply(rq[i].peer, "ERR %s", u->err);
		}
		if (u != NULL)
			free(u->err);
	}
	free(subs);
}

void
relay_commit_serve(struct relay_commit *rc, struct relay_commit_peer *ready, size_t n)
{
	struct request *rq = xcalloc(n ? n : 1, sizeof *rq);
	size_t k = 0, i;

	for (i = 0; i < n && k < COMMIT_GROUP_MAX; i++)
		if (read_request(rc, &ready[i], &rq[k]))
			k++;
	if (k > 0)
		commit_group(rc, rq, k);
	for (i = 0; i < k; i++) {
		if (rq[i].fd != -1)
			close(rq[i].fd);
		free(rq[i].rcpts);
		free(rq[i].payload);
		free(rq[i].refusal);
	}
	free(rq);
}

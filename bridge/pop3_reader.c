/* The bounded POP3 reader: see pop3_reader.h. Memory stays constant
 * however long a line or a message is. */
#include "bridge/pop3_reader.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "lib/deadline.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xmalloc.h"

void
pop3_reader_init(struct pop3_reader *r, pop3_reader_src_fn *src, void *ctx, unsigned timeout)
{
	memset(r, 0, sizeof *r);
	r->src = src;
	r->ctx = ctx;
	r->timeout = timeout;
	r->buf = xmalloc(POP3_CHUNK);
}

void
pop3_reader_free(struct pop3_reader *r)
{
	free(r->buf);
	r->buf = NULL;
	r->off = r->len = 0;
}

size_t
pop3_reader_pending(const struct pop3_reader *r)
{
	return r->len - r->off;
}

/* Starts a step: the next bytes must arrive within the timeout. */
static void
rd_step(struct pop3_reader *r)
{
	if (r->timeout != 0)
		deadline_in_ms(&r->step, (uint64_t)r->timeout * 1000);
	else
		deadline_none(&r->step);
}

void
pop3_reader_expect(struct pop3_reader *r, uint64_t announced)
{
	r->expecting = r->timeout != 0;
	clock_gettime(CLOCK_MONOTONIC, &r->started);
	r->announced = announced;
	r->received = 0;
}

unsigned
pop3_reader_deadline(const struct pop3_reader *r)
{
	return deadline_allowance(r->timeout,
	    r->received > r->announced ? r->received : r->announced);
}

/* The response's deadline as it stands: its start plus its allowance. */
static void
rd_response(const struct pop3_reader *r, struct deadline *d)
{
	d->at = r->started;
	d->at.tv_sec += (time_t)pop3_reader_deadline(r);
	d->set = r->expecting;
}

/* Milliseconds the next read may wait: the least of the step's, the
 * response's and the pass's time left; -1 without any deadline. */
static int
rd_left(const struct pop3_reader *r)
{
	struct deadline resp;
	int64_t ms = deadline_left_ms(&r->step), left;

	rd_response(r, &resp);
	if ((left = deadline_left_ms(&resp)) < ms)
		ms = left;
	if ((left = deadline_pass_left_ms()) < ms)
		ms = left;
	if (ms == INT64_MAX)
		return -1;
	return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* Whether a limit has ended the wait, in the order a message should name
 * it: a stop, the pass's deadline, the response's, the step's. */
static int
rd_expired(const struct pop3_reader *r, char **err)
{
	char why[DEADLINE_TEXT_MAX];
	struct deadline resp;
	enum deadline_end end;

	rd_response(r, &resp);
	if ((end = deadline_check(NULL)) != DEADLINE_NONE)
		return err_code(err, end == DEADLINE_STOP ? POP3_ESTOP : POP3_EDEADLINE, "%s",
		    deadline_text(end, r->timeout, why, sizeof why));
	if (resp.set && deadline_left_ms(&resp) == 0)
		return err_code(err, POP3_EDEADLINE, "exceeded its deadline of %u s",
		    pop3_reader_deadline(r));
	if (r->step.set && deadline_left_ms(&r->step) == 0)
		return err_code(err, POP3_ENET, "timed out after %u s", r->timeout);
	return POP3_OK;
}

/* Moves the unread bytes to the front and reads more behind them. */
static int
rd_fill(struct pop3_reader *r, char **err)
{
	ssize_t n;
	int ms, rv;

	if (r->off > 0) {
		memmove(r->buf, r->buf + r->off, r->len - r->off);
		r->len -= r->off;
		r->off = 0;
	}
	if (r->len == POP3_CHUNK)
		fatalx("pop3 reader: no room to read into");
	if ((rv = rd_expired(r, err)) != POP3_OK)
		return rv;
	/* 0 left means a deadline passes right now: wait the least there is
	 * (0 would be "no limit" to the source), then say which one. */
	if ((ms = rd_left(r)) == 0)
		ms = 1;
	n = r->src(r->ctx, r->buf + r->len, POP3_CHUNK - r->len, ms);
	if (n > 0) {
		r->len += (size_t)n;
		r->received += (uint64_t)n;
		return POP3_OK;
	}
	if (n == 0)
		return err_code(err, POP3_ENET, "connection closed by the server");
	if ((rv = rd_expired(r, err)) != POP3_OK)
		return rv;
	return err_code(err, POP3_ENET, "connection lost");
}

/* Reads one line of at most POP3_LINE_MAX bytes into out (cap bytes),
 * without its CRLF or LF. */
static int
rd_line(struct pop3_reader *r, char *out, size_t cap, char **err)
{
	unsigned char *line, *lf;
	size_t n;
	int rv;

	while ((lf = memchr(r->buf + r->off, '\n', r->len - r->off)) == NULL) {
		if (r->len - r->off > POP3_LINE_MAX + 1)
			return err_code(err, POP3_EPROTO, "reply line too long");
		if ((rv = rd_fill(r, err)) != POP3_OK)
			return rv;
	}
	line = r->buf + r->off;
	n = (size_t)(lf - line);
	r->off += n + 1;
	if (n > 0 && line[n - 1] == '\r')
		n--;
	if (n > POP3_LINE_MAX || n >= cap)
		return err_code(err, POP3_EPROTO, "reply line too long");
	if (memchr(line, '\0', n) != NULL)
		return err_code(err, POP3_EPROTO, "NUL byte in a reply line");
	memcpy(out, line, n);
	out[n] = '\0';
	return POP3_OK;
}

int
pop3_reader_status(struct pop3_reader *r, enum pop3_status *st, char *text, size_t cap,
    char **err)
{
	const char *t;
	char *clean;
	int rv;

	rd_step(r);
	if ((rv = rd_line(r, text, cap, err)) != POP3_OK)
		return rv;
	if (pop3_parse_status(text, st, &t) == -1) {
		clean = pop3_parse_clean(text);
		rv = err_code(err, POP3_EPROTO, "malformed reply \"%.60s\"", clean);
		free(clean);
		return rv;
	}
	memmove(text, t, strlen(t) + 1);
	if (*st != POP3_ST_OK)
		r->expecting = false;	/* no lines follow a refusal */
	return POP3_OK;
}

int
pop3_reader_mline(struct pop3_reader *r, char *line, size_t cap, bool *end, char **err)
{
	int rv;

	rd_step(r);
	*end = false;
	if ((rv = rd_line(r, line, cap, err)) != POP3_OK)
		return rv;
	if (line[0] != '.')
		return POP3_OK;
	if (line[1] == '\0') {
		*end = true;
		r->expecting = false;
	}
	else
		memmove(line, line + 1, strlen(line));
	return POP3_OK;
}

/* At the start of a body line: detects the terminator and undoes the
 * dot-stuffing, which only ever concern the first bytes of a line. */
static int
body_line_start(struct pop3_reader *r, bool *end, char **err)
{
	const unsigned char *p;
	size_t avail;
	int rv;

	*end = false;
	/* Three bytes tell ".\r\n" apart; fewer do when a LF comes first. */
	while ((avail = r->len - r->off) < 3 &&
	    memchr(r->buf + r->off, '\n', avail) == NULL)
		if ((rv = rd_fill(r, err)) != POP3_OK)
			return rv;
	p = r->buf + r->off;
	if (p[0] != '.')
		return POP3_OK;
	if (p[1] == '\n' || (p[1] == '\r' && avail >= 3 && p[2] == '\n')) {
		r->off += p[1] == '\n' ? 2 : 3;
		*end = true;
		return POP3_OK;
	}
	r->off++;
	return POP3_OK;
}

/* Passes the rest of a line to sink, in pieces when it is longer than what
 * is buffered. A step is one line or POP3_CHUNK bytes of one, so a long
 * line gets more time only by delivering data at a useful rate. */
static int
body_line_rest(struct pop3_reader *r, pop3_reader_sink_fn *sink, void *ctx, char **err)
{
	unsigned char *p, *lf;
	size_t n, progress = 0;
	int rv;

	for (;;) {
		p = r->buf + r->off;
		n = r->len - r->off;
		if ((lf = memchr(p, '\n', n)) != NULL) {
			n = (size_t)(lf - p);
			r->off += n + 1;
			if (n > 0 && p[n - 1] == '\r')
				n--;
			return sink(ctx, p, n, true, err);
		}
		/* Hold back a final CR: it may be the first half of CRLF. */
		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (n > 0) {
			r->off += n;
			if ((rv = sink(ctx, p, n, false, err)) != POP3_OK)
				return rv;
			if ((progress += n) >= POP3_CHUNK) {
				rd_step(r);
				progress = 0;
			}
		}
		if ((rv = rd_fill(r, err)) != POP3_OK)
			return rv;
	}
}

int
pop3_reader_body(struct pop3_reader *r, pop3_reader_sink_fn *sink, void *ctx, char **err)
{
	bool end;
	int rv;

	for (;;) {
		rd_step(r);
		if ((rv = body_line_start(r, &end, err)) != POP3_OK)
			return rv;
		if (end) {
			r->expecting = false;
			return POP3_OK;
		}
		if ((rv = body_line_rest(r, sink, ctx, err)) != POP3_OK)
			return rv;
	}
}

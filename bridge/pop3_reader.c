/* The bounded POP3 reader and parsers: see pop3_reader.h. Nothing here
 * trusts the server: every line is capped, every number range-checked, and
 * memory stays constant however long a line or a message is. */
#include "bridge/pop3_reader.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "lib/err.h"
#include "lib/log.h"
#include "lib/xmalloc.h"

#define CLEAN_MAX	200	/* bytes of server text kept in a message */

void
pop3_rd_init(struct pop3_rd *r, pop3_src_fn *src, void *ctx, unsigned timeout)
{
	memset(r, 0, sizeof *r);
	r->src = src;
	r->ctx = ctx;
	r->timeout = timeout;
	r->buf = xmalloc(POP3_CHUNK);
}

void
pop3_rd_free(struct pop3_rd *r)
{
	free(r->buf);
	r->buf = NULL;
	r->off = r->len = 0;
}

size_t
pop3_rd_pending(const struct pop3_rd *r)
{
	return r->len - r->off;
}

/* Starts a step: the next bytes must arrive within the timeout. */
static void
rd_step(struct pop3_rd *r)
{
	if (r->timeout == 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &r->deadline);
	r->deadline.tv_sec += r->timeout;
}

/* Milliseconds left in the step: -1 without a deadline, 0 once past it. */
static int
rd_left(const struct pop3_rd *r)
{
	struct timespec now;
	long long ms;

	if (r->timeout == 0)
		return -1;
	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (long long)(r->deadline.tv_sec - now.tv_sec) * 1000 +
	    (r->deadline.tv_nsec - now.tv_nsec) / 1000000;
	if (ms <= 0)
		return 0;
	return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* Moves the unread bytes to the front and reads more behind them. */
static int
rd_fill(struct pop3_rd *r, char **err)
{
	ssize_t n;
	int ms;

	if (r->off > 0) {
		memmove(r->buf, r->buf + r->off, r->len - r->off);
		r->len -= r->off;
		r->off = 0;
	}
	if (r->len == POP3_CHUNK)
		fatalx("pop3 reader: no room to read into");
	if ((ms = rd_left(r)) == 0)
		return err_code(err, POP3_ENET, "timed out after %u s", r->timeout);
	n = r->src(r->ctx, r->buf + r->len, POP3_CHUNK - r->len, ms);
	if (n > 0) {
		r->len += (size_t)n;
		return POP3_OK;
	}
	if (n == 0)
		return err_code(err, POP3_ENET, "connection closed by the server");
	if (rd_left(r) == 0)
		return err_code(err, POP3_ENET, "timed out after %u s", r->timeout);
	return err_code(err, POP3_ENET, "connection lost");
}

/* Reads one line of at most POP3_LINE_MAX bytes into out (cap bytes),
 * without its CRLF or LF. */
static int
rd_line(struct pop3_rd *r, char *out, size_t cap, char **err)
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
pop3_parse_status(const char *line, enum pop3_status *st, const char **text)
{
	size_t n;

	if (strncmp(line, "+OK", 3) == 0) {
		*st = POP3_ST_OK;
		n = 3;
	} else if (strncmp(line, "-ERR", 4) == 0) {
		*st = POP3_ST_ERR;
		n = 4;
	} else if (line[0] == '+') {
		*st = POP3_ST_CONT;
		n = 1;
	} else
		return -1;
	/* "+OKAY" is not "+OK": the indicator must end the line or a word. */
	if (line[n] != '\0' && line[n] != ' ')
		return -1;
	*text = line[n] == '\0' ? line + n : line + n + 1;
	return 0;
}

int
pop3_rd_status(struct pop3_rd *r, enum pop3_status *st, char *text, size_t cap,
    char **err)
{
	const char *t;
	char *clean;
	int rv;

	rd_step(r);
	if ((rv = rd_line(r, text, cap, err)) != POP3_OK)
		return rv;
	if (pop3_parse_status(text, st, &t) == -1) {
		clean = pop3_clean_text(text);
		rv = err_code(err, POP3_EPROTO, "malformed reply \"%.60s\"", clean);
		free(clean);
		return rv;
	}
	memmove(text, t, strlen(t) + 1);
	return POP3_OK;
}

int
pop3_rd_mline(struct pop3_rd *r, char *line, size_t cap, bool *end, char **err)
{
	int rv;

	rd_step(r);
	*end = false;
	if ((rv = rd_line(r, line, cap, err)) != POP3_OK)
		return rv;
	if (line[0] != '.')
		return POP3_OK;
	if (line[1] == '\0')
		*end = true;
	else
		memmove(line, line + 1, strlen(line));
	return POP3_OK;
}

/* At the start of a body line: detects the terminator and undoes the
 * dot-stuffing, which only ever concern the first bytes of a line. */
static int
body_line_start(struct pop3_rd *r, bool *end, char **err)
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
body_line_rest(struct pop3_rd *r, pop3_sink_fn *sink, void *ctx, char **err)
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
pop3_rd_body(struct pop3_rd *r, pop3_sink_fn *sink, void *ctx, char **err)
{
	bool end;
	int rv;

	for (;;) {
		rd_step(r);
		if ((rv = body_line_start(r, &end, err)) != POP3_OK)
			return rv;
		if (end)
			return POP3_OK;
		if ((rv = body_line_rest(r, sink, ctx, err)) != POP3_OK)
			return rv;
	}
}

bool
pop3_resp_temporary(const char *text)
{
	static const char *const codes[] = { "[IN-USE]", "[LOGIN-DELAY]", "[SYS/TEMP]",
	    "[SYS/TEMP/" };
	size_t i;

	for (i = 0; i < sizeof codes / sizeof codes[0]; i++)
		if (strncasecmp(text, codes[i], strlen(codes[i])) == 0)
			return true;
	return false;
}

char *
pop3_clean_text(const char *text)
{
	char *out = xmalloc(CLEAN_MAX + 1);
	size_t i, n = 0;
	unsigned char c;

	for (i = 0; text[i] != '\0' && n < CLEAN_MAX; i++) {
		c = (unsigned char)text[i];
		if (c >= 0x20 && c != 0x7f)
			out[n++] = (char)c;
	}
	out[n] = '\0';
	return out;
}

void
pop3_caps_init(struct pop3_caps *c)
{
	memset(c, 0, sizeof *c);
	c->login_delay = -1;
	c->expire = -1;
}

/* A CAPA argument: seconds or days, or NEVER (for EXPIRE); -1 if invalid. */
static long
caps_number(const char *tok, bool never_ok)
{
	char *end;
	long v;

	if (tok == NULL)
		return -1;
	if (never_ok && strcasecmp(tok, "NEVER") == 0)
		return LONG_MAX;
	if (*tok < '0' || *tok > '9')
		return -1;
	errno = 0;
	v = strtol(tok, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	return v;
}

static void
caps_sasl(struct pop3_caps *c, char *save)
{
	char *tok;

	while ((tok = strtok_r(NULL, " ", &save)) != NULL) {
		if (strcasecmp(tok, "PLAIN") == 0)
			c->sasl_plain = true;
		else if (strcasecmp(tok, "XOAUTH2") == 0)
			c->sasl_xoauth2 = true;
	}
}

void
pop3_caps_line(struct pop3_caps *c, const char *line)
{
	char buf[POP3_LINE_MAX + 1], *name, *save = NULL;

	if (strlen(line) > POP3_LINE_MAX)
		return;
	strcpy(buf, line);
	if ((name = strtok_r(buf, " ", &save)) == NULL)
		return;
	if (strcasecmp(name, "UIDL") == 0)
		c->uidl = true;
	else if (strcasecmp(name, "TOP") == 0)
		c->top = true;
	else if (strcasecmp(name, "USER") == 0)
		c->user = true;
	else if (strcasecmp(name, "PIPELINING") == 0)
		c->pipelining = true;
	else if (strcasecmp(name, "STLS") == 0)
		c->stls = true;
	else if (strcasecmp(name, "SASL") == 0)
		caps_sasl(c, save);
	else if (strcasecmp(name, "LOGIN-DELAY") == 0)
		c->login_delay = caps_number(strtok_r(NULL, " ", &save), false);
	else if (strcasecmp(name, "EXPIRE") == 0)
		c->expire = caps_number(strtok_r(NULL, " ", &save), true);
}

/* Parses 1*DIGIT that fits in uint64_t; returns the end, NULL if none. */
static const char *
parse_u64(const char *s, uint64_t *v)
{
	const char *p;

	*v = 0;
	for (p = s; *p >= '0' && *p <= '9'; p++) {
		if (*v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return NULL;
		*v = *v * 10 + (uint64_t)(*p - '0');
	}
	return p == s ? NULL : p;
}

/* Parses the "num " that starts a listing line; returns the rest. */
static const char *
parse_num(const char *line, unsigned long *num)
{
	const char *p;
	uint64_t v;

	if ((p = parse_u64(line, &v)) == NULL || v > ULONG_MAX || *p != ' ')
		return NULL;
	*num = (unsigned long)v;
	return p + 1;
}

static int
bad_line(char **err, const char *what, const char *line)
{
	char *clean = pop3_clean_text(line);
	int rv;

	rv = err_code(err, POP3_EPROTO, "malformed %s line \"%.60s\"", what, clean);
	free(clean);
	return rv;
}

int
pop3_parse_list(const char *line, unsigned long *num, uint64_t *size, char **err)
{
	const char *p;

	/* RFC 1939 allows more after the size; nothing else. */
	if ((p = parse_num(line, num)) == NULL || (p = parse_u64(p, size)) == NULL ||
	    (*p != '\0' && *p != ' '))
		return bad_line(err, "LIST", line);
	return POP3_OK;
}

int
pop3_parse_uidl(const char *line, unsigned long *num, char **uidl, char **err)
{
	const char *p, *q;

	if ((p = parse_num(line, num)) == NULL || *p == '\0')
		return bad_line(err, "UIDL", line);
	for (q = p; *q != '\0'; q++)
		if (*q < 0x21 || *q > 0x7e)
			return err_code(err, POP3_EPROTO,
			    "UIDL of message %lu holds a byte outside 0x21-0x7E", *num);
	if (q - p > POP3_UIDL_MAX)
		return err_code(err, POP3_EPROTO, "UIDL of message %lu longer than %d bytes",
		    *num, POP3_UIDL_MAX);
	*uidl = xstrdup(p);
	return POP3_OK;
}

/* Message numbers: >= 1, strictly increasing, 1..N unless allow_gaps. */
static int
check_numbers(const struct pop3_entry *e, size_t n, const char *what, bool allow_gaps,
    char **err)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (e[i].num == 0)
			return err_code(err, POP3_EPROTO, "%s names message 0", what);
		if (i > 0 && e[i].num <= e[i - 1].num)
			return err_code(err, POP3_EPROTO, "%s repeats or reorders message %lu",
			    what, e[i].num);
		if (!allow_gaps && e[i].num != i + 1)
			return err_code(err, POP3_EPROTO, "%s lacks message %zu", what, i + 1);
	}
	return POP3_OK;
}

static int
check_same(const struct pop3_entry *list, size_t nlist, const struct pop3_entry *uidls,
    size_t nuidl, char **err)
{
	size_t i;

	for (i = 0; i < nlist && i < nuidl; i++)
		if (list[i].num != uidls[i].num)
			return err_code(err, POP3_EPROTO, "UIDL and LIST disagree: message %lu "
			    "in one, %lu in the other", uidls[i].num, list[i].num);
	if (nlist != nuidl)
		return err_code(err, POP3_EPROTO, "UIDL lists %zu messages, LIST %zu",
		    nuidl, nlist);
	return POP3_OK;
}

static int
cmp_uidl(const void *a, const void *b)
{
	const struct pop3_entry *const *x = a, *const *y = b;

	return strcmp((*x)->uidl, (*y)->uidl);
}

/* No UIDL may name two messages: that would make one of them unfetchable
 * or, worse, marked delivered by the other's delivery. */
static int
check_unique(struct pop3_entry *uidls, size_t n, char **err)
{
	struct pop3_entry **v;
	size_t i;
	int rv = POP3_OK;

	if (n < 2)
		return POP3_OK;
	v = xreallocarray(NULL, n, sizeof *v);
	for (i = 0; i < n; i++)
		v[i] = &uidls[i];
	qsort(v, n, sizeof *v, cmp_uidl);
	for (i = 1; i < n; i++) {
		unsigned long a = v[i - 1]->num, b = v[i]->num;

		if (strcmp(v[i - 1]->uidl, v[i]->uidl) != 0)
			continue;
		rv = err_code(err, POP3_EPROTO, "duplicate UIDL \"%s\" (messages %lu and %lu)",
		    v[i]->uidl, a < b ? a : b, a < b ? b : a);
		break;
	}
	free(v);
	return rv;
}

int
pop3_listing_merge(struct pop3_entry *list, size_t nlist, struct pop3_entry *uidls,
    size_t nuidl, bool have_uidl, bool allow_gaps, char **err)
{
	size_t i;
	int rv;

	if ((rv = check_numbers(list, nlist, "LIST", allow_gaps, err)) != POP3_OK)
		return rv;
	if (!have_uidl)
		return POP3_OK;
	if ((rv = check_numbers(uidls, nuidl, "UIDL", allow_gaps, err)) != POP3_OK ||
	    (rv = check_same(list, nlist, uidls, nuidl, err)) != POP3_OK ||
	    (rv = check_unique(uidls, nuidl, err)) != POP3_OK)
		return rv;
	for (i = 0; i < nlist; i++) {
		list[i].uidl = uidls[i].uidl;
		uidls[i].uidl = NULL;
	}
	return POP3_OK;
}

void
pop3_out_init(struct pop3_out *o, int fd, enum pop3_eol eol, uint64_t max_octets)
{
	memset(o, 0, sizeof *o);
	o->fd = fd;
	o->eol = eol;
	o->max_octets = max_octets;
	o->line_start = true;
	o->buf = xmalloc(POP3_CHUNK);
	if (gnutls_hash_init(&o->sha, GNUTLS_DIG_SHA256) < 0 ||
	    gnutls_hash_init(&o->hsha, GNUTLS_DIG_SHA256) < 0 ||
	    gnutls_hash_init(&o->bsha, GNUTLS_DIG_SHA256) < 0)
		fatalx("SHA-256 is not available from GnuTLS");
}

/* Writes the buffer out (handling EINTR and short writes) and hashes it.
 * After a failure nothing more is written: the error is kept for
 * pop3_out_finish and the reader drains the response. */
static void
out_flush(struct pop3_out *o)
{
	const unsigned char *p = o->buf;
	size_t left = o->len;
	ssize_t w;

	if (o->len == 0 || o->write_errno != 0)
		return;
	gnutls_hash(o->sha, o->buf, o->len);
	if (o->in_body)
		gnutls_hash(o->bsha, o->buf + o->body_off, o->len - o->body_off);
	o->body_off = 0;
	while (o->fd >= 0 && left > 0) {
		if ((w = write(o->fd, p, left)) < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			o->write_errno = w < 0 ? errno : EIO;
			return;
		}
		p += w;
		left -= (size_t)w;
	}
	o->written += o->len;
	o->len = 0;
}

static void
out_put(struct pop3_out *o, const void *data, size_t n)
{
	const unsigned char *p = data;
	size_t k;

	while (n > 0 && o->write_errno == 0) {
		if (o->len == POP3_CHUNK)
			out_flush(o);
		k = POP3_CHUNK - o->len < n ? POP3_CHUNK - o->len : n;
		memcpy(o->buf + o->len, p, k);
		o->len += k;
		p += k;
		n -= k;
	}
}

/* Keeps a copy of the header block, up to POP3_HEADER_MAX bytes: the
 * caller reads Message-ID and dates from it instead of the file. */
static void
head_keep(struct pop3_out *o, const void *p, size_t n)
{
	if (n > POP3_HEADER_MAX - o->head_len)
		n = POP3_HEADER_MAX - o->head_len;
	if (n == 0)
		return;
	if (o->head_len + n > o->head_cap) {
		o->head_cap = o->head_cap ? o->head_cap * 2 : 4096;
		while (o->head_cap < o->head_len + n)
			o->head_cap *= 2;
		o->head = xreallocarray(o->head, o->head_cap, 1);
	}
	memcpy(o->head + o->head_len, p, n);
	o->head_len += n;
}

/* Hashes (and keeps) a piece of the header block with CRLF line endings,
 * whatever eol the file gets: TOP n 0 must give the same hash. The empty
 * line ending the block belongs to it (TOP sends it); the body starts in
 * the buffer right after it. */
static void
out_header(struct pop3_out *o, const unsigned char *p, size_t n, bool eol)
{
	gnutls_hash(o->hsha, p, n);
	head_keep(o, p, n);
	if (eol)
		head_keep(o, "\r\n", 2);
	if (!eol) {
		o->line_start = o->line_start && n == 0;
		return;
	}
	gnutls_hash(o->hsha, "\r\n", 2);
	if (o->line_start && n == 0) {
		o->in_body = true;
		o->body_off = o->len;
	}
	o->line_start = true;
}

int
pop3_out_sink(void *ctx, const unsigned char *p, size_t n, bool eol, char **err)
{
	struct pop3_out *o = ctx;

	/* Octets as the server counts them (RFC 1939 LIST): lines end in CRLF. */
	o->octets += n + (eol ? 2 : 0);
	if (o->max_octets != 0 && o->octets > o->max_octets)
		return err_code(err, POP3_EPROTO, "message larger than %llu octets",
		    (unsigned long long)o->max_octets);
	out_put(o, p, n);
	if (eol)
		out_put(o, o->eol == POP3_EOL_CRLF ? "\r\n" : "\n",
		    o->eol == POP3_EOL_CRLF ? 2 : 1);
	if (!o->in_body)
		out_header(o, p, n, eol);
	return POP3_OK;
}

int
pop3_out_finish(struct pop3_out *o, struct pop3_retr *res, char **err)
{
	out_flush(o);
	if (o->write_errno != 0)
		return err_code(err, POP3_ELOCAL, "writing the message: %s",
		    strerror(o->write_errno));
	if (res != NULL) {
		res->octets = o->octets;
		res->written = o->written;
		gnutls_hash_output(o->sha, res->sha256);
		gnutls_hash_output(o->hsha, res->header_sha256);
		gnutls_hash_output(o->bsha, res->body_sha256);
		res->header = (char *)o->head;
		res->header_len = o->head_len;
		o->head = NULL;
	}
	return POP3_OK;
}

void
pop3_out_free(struct pop3_out *o)
{
	if (o->sha != NULL)
		gnutls_hash_deinit(o->sha, NULL);
	if (o->hsha != NULL)
		gnutls_hash_deinit(o->hsha, NULL);
	if (o->bsha != NULL)
		gnutls_hash_deinit(o->bsha, NULL);
	o->sha = o->hsha = o->bsha = NULL;
	free(o->head);
	o->head = NULL;
	free(o->buf);
	o->buf = NULL;
}

/* Unit tests of the bounded POP3 reader and parsers, fed from memory (whole
 * or one byte at a time, which splits every terminator and CRLF). */
#include <sys/mman.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>

#include "bridge/pop3_parse.h"
#include "bridge/pop3_reader.h"
#include "bridge/pop3_sink.h"
#include "lib/deadline.h"
#include "lib/xmalloc.h"
#include "tests/unit/check.h"

/* Frees an error message and forgets it, so a failed CHECK cannot turn
 * into a double free further on. */
static void
clear(char **err)
{
	free(*err);
	*err = NULL;
}

struct mem {
	const unsigned char *p;
	size_t len, off;
	size_t step;		/* bytes per read; 0: as many as fit */
	useconds_t delay;	/* before each read */
};

static ssize_t
mem_src(void *ctx, void *buf, size_t cap, int ms)
{
	struct mem *m = ctx;
	size_t n = m->len - m->off;

	(void)ms;
	if (m->delay != 0)
		usleep(m->delay);
	if (n > cap)
		n = cap;
	if (m->step != 0 && n > m->step)
		n = m->step;
	memcpy(buf, m->p + m->off, n);
	m->off += n;
	return (ssize_t)n;
}

static void
rd_open(struct pop3_reader *r, struct mem *m, const void *data, size_t len, size_t step)
{
	memset(m, 0, sizeof *m);
	m->p = data;
	m->len = len;
	m->step = step;
	pop3_reader_init(r, mem_src, m, 5);
}

/* Reads one status line from data; returns the code, the text in text. */
static int
status_of(const char *data, size_t step, enum pop3_status *st, char *text, char **err)
{
	struct pop3_reader r;
	struct mem m;
	int rv;

	rd_open(&r, &m, data, strlen(data), step);
	rv = pop3_reader_status(&r, st, text, POP3_LINE_MAX + 1, err);
	pop3_reader_free(&r);
	return rv;
}

static void
test_status(void)
{
	static const size_t steps[] = { 0, 1 };
	char text[POP3_LINE_MAX + 1], *err = NULL;
	enum pop3_status st;
	size_t i;

	for (i = 0; i < 2; i++) {
		CHECK_INT(status_of("+OK ready <1.2@x>\r\n", steps[i], &st, text, NULL), POP3_OK);
		CHECK_INT(st, POP3_ST_OK);
		CHECK_STR(text, "ready <1.2@x>");
		CHECK_INT(status_of("-ERR [IN-USE] locked\r\n", steps[i], &st, text, NULL),
		    POP3_OK);
		CHECK_INT(st, POP3_ST_ERR);
		CHECK_STR(text, "[IN-USE] locked");
		CHECK_INT(status_of("+OK\r\n", steps[i], &st, text, NULL), POP3_OK);
		CHECK_STR(text, "");
		CHECK_INT(status_of("+OK bare lf\n", steps[i], &st, text, NULL), POP3_OK);
		CHECK_STR(text, "bare lf");
		CHECK_INT(status_of("+ eyJzdGF0dXMiOiI0MDEifQ==\r\n", steps[i], &st, text, NULL),
		    POP3_OK);
		CHECK_INT(st, POP3_ST_CONT);
	}
	CHECK_INT(status_of("+OKAY\r\n", 0, &st, text, &err), POP3_EPROTO);
	CHECK(err != NULL && strstr(err, "malformed") != NULL);
	clear(&err);
	CHECK_INT(status_of("\r\n", 0, &st, text, NULL), POP3_EPROTO);
	CHECK_INT(status_of("OK fine\r\n", 0, &st, text, NULL), POP3_EPROTO);
	CHECK_INT(status_of("-ERRor\r\n", 1, &st, text, NULL), POP3_EPROTO);
	CHECK_INT(status_of("+OK half a line", 1, &st, text, &err), POP3_ENET);
	CHECK(err != NULL && strstr(err, "closed") != NULL);
	clear(&err);
	CHECK_INT(status_of("", 0, &st, text, NULL), POP3_ENET);
}

static void
test_status_limits(void)
{
	char text[POP3_LINE_MAX + 1], *line, *err = NULL;
	enum pop3_status st;
	struct pop3_reader r;
	struct mem m;

	line = malloc(POP3_LINE_MAX + 16);
	memcpy(line, "+OK ", 4);
	memset(line + 4, 'x', POP3_LINE_MAX - 4);
	strcpy(line + POP3_LINE_MAX, "\r\n");
	CHECK_INT(status_of(line, 0, &st, text, NULL), POP3_OK);	/* exactly the cap */
	CHECK_INT(strlen(text), POP3_LINE_MAX - 4);
	memset(line + 4, 'x', POP3_LINE_MAX - 3);
	strcpy(line + POP3_LINE_MAX + 1, "\r\n");
	CHECK_INT(status_of(line, 0, &st, text, &err), POP3_EPROTO);
	CHECK_STR(err, "reply line too long");
	clear(&err);
	free(line);
	/* An endless line without LF is refused once past the cap. */
	line = malloc(100000);
	memset(line, 'y', 100000);
	rd_open(&r, &m, line, 100000, 0);
	CHECK_INT(pop3_reader_status(&r, &st, text, sizeof text, NULL), POP3_EPROTO);
	CHECK(m.off < 2 * POP3_CHUNK);
	pop3_reader_free(&r);
	free(line);
	rd_open(&r, &m, "+OK a\0b\r\n", 9, 0);
	CHECK_INT(pop3_reader_status(&r, &st, text, sizeof text, &err), POP3_EPROTO);
	CHECK_STR(err, "NUL byte in a reply line");
	clear(&err);
	pop3_reader_free(&r);
}

/* A server dripping one byte every 0.3 s: per-read timeouts would never
 * fire, the per-step deadline (1 s here) does. */
static void
test_deadline(void)
{
	static const char drip[] = "+OK this line takes far too long to arrive\r\n";
	char text[POP3_LINE_MAX + 1], *err = NULL;
	struct timespec t0, t1;
	enum pop3_status st;
	struct pop3_reader r;
	struct mem m;

	rd_open(&r, &m, drip, sizeof drip - 1, 1);
	r.timeout = 1;
	m.delay = 300000;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK_INT(pop3_reader_status(&r, &st, text, sizeof text, &err), POP3_ENET);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	CHECK_STR(err, "timed out after 1 s");
	CHECK(t1.tv_sec - t0.tv_sec <= 2);
	CHECK(m.off < 10);
	clear(&err);
	pop3_reader_free(&r);
}

/* Collects a body into memory (the reader calls it piece by piece). */
struct collect {
	unsigned char *p;
	size_t len, lines, pieces;
};

static int
collect_sink(void *ctx, const unsigned char *p, size_t n, bool eol, char **err)
{
	struct collect *c = ctx;

	(void)err;
	c->p = realloc(c->p, c->len + n + 1);
	memcpy(c->p + c->len, p, n);
	c->len += n;
	c->pieces++;
	if (eol) {
		c->p[c->len++] = '|';
		c->lines++;
	}
	return POP3_OK;
}

/* The same inside a body line: pieces arriving do not restart the clock. */
static void
test_deadline_body(void)
{
	static const char drip[] = "a body line that never seems to end, dripping\r\n.\r\n";
	struct timespec t0, t1;
	struct collect c;
	struct pop3_reader r;
	struct mem m;
	char *err = NULL;

	memset(&c, 0, sizeof c);
	rd_open(&r, &m, drip, sizeof drip - 1, 1);
	r.timeout = 1;
	m.delay = 300000;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK_INT(pop3_reader_body(&r, collect_sink, &c, &err), POP3_ENET);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	CHECK_STR(err, "timed out after 1 s");
	CHECK(t1.tv_sec - t0.tv_sec <= 2);
	clear(&err);
	free(c.p);
	pop3_reader_free(&r);
}

/* A server that sends one body line every 0.3 s, well inside the 1 s step
 * timeout, for ever: the response's own deadline (1 s + what it sent at
 * DEADLINE_MIN_RATE, rounded up: 2 s) ends it. */
static void
test_response_deadline(void)
{
	static const char line[] = "a line\r\n";
	struct timespec t0;
	struct collect c;
	struct pop3_reader r;
	struct mem m;
	char *data, *err = NULL;
	size_t i, n = 200;

	data = xmalloc(n * (sizeof line - 1));
	for (i = 0; i < n; i++)
		memcpy(data + i * (sizeof line - 1), line, sizeof line - 1);
	memset(&c, 0, sizeof c);
	rd_open(&r, &m, data, n * (sizeof line - 1), sizeof line - 1);
	r.timeout = 1;
	m.delay = 300000;
	pop3_reader_expect(&r, 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK_INT(pop3_reader_body(&r, collect_sink, &c, &err), POP3_EDEADLINE);
	CHECK_STR(err, "exceeded its deadline of 2 s");
	CHECK(check_elapsed(&t0) >= 1.9 && check_elapsed(&t0) < 3.0);
	CHECK(c.lines >= 5 && c.lines < 12);
	CHECK_INT(pop3_reader_deadline(&r), 2);
	clear(&err);
	free(c.p);
	free(data);
	pop3_reader_free(&r);
}

/* The response deadline covers its status line and lines, and ends with
 * its terminator or a refusal; what follows has only the step timeout. */
static void
test_response_scope(void)
{
	static const char data[] = "-ERR no such message\r\n+OK\r\nline\r\n.\r\n+OK next\r\n";
	char text[POP3_LINE_MAX + 1], *err = NULL;
	enum pop3_status st;
	struct collect c;
	struct pop3_reader r;
	struct mem m;

	memset(&c, 0, sizeof c);
	rd_open(&r, &m, data, sizeof data - 1, 0);
	pop3_reader_expect(&r, 1000);
	CHECK(r.expecting);
	CHECK_INT(pop3_reader_status(&r, &st, text, sizeof text, &err), POP3_OK);
	CHECK(st == POP3_ST_ERR && !r.expecting);
	pop3_reader_expect(&r, 1000);
	CHECK_INT(pop3_reader_status(&r, &st, text, sizeof text, &err), POP3_OK);
	CHECK(st == POP3_ST_OK && r.expecting);
	CHECK_INT(pop3_reader_body(&r, collect_sink, &c, &err), POP3_OK);
	CHECK(!r.expecting);
	CHECK_INT(pop3_reader_deadline(&r), 5 + 1);	/* timeout 5 s + 1000 octets */
	CHECK_INT(pop3_reader_status(&r, &st, text, sizeof text, &err), POP3_OK);
	CHECK_STR(text, "next");
	free(c.p);
	pop3_reader_free(&r);
}

/* The pass's limits (lib/deadline.h) end any wait: a stop as POP3_ESTOP,
 * the pass deadline as POP3_EDEADLINE. */
static void
test_pass_limits(void)
{
	static const char drip[] = "+OK this line takes far too long to arrive\r\n";
	char text[POP3_LINE_MAX + 1], *err = NULL;
	struct timespec t0;
	enum pop3_status st;
	struct pop3_reader r;
	struct mem m;

	rd_open(&r, &m, drip, sizeof drip - 1, 1);
	check_stop_raise();
	deadline_pass_arm(0, true);
	CHECK_INT(pop3_reader_status(&r, &st, text, sizeof text, &err), POP3_ESTOP);
	CHECK_STR(err, "interrupted by a stop request");
	CHECK_INT(m.off, 0);
	clear(&err);
	check_stop_clear();
	pop3_reader_free(&r);

	rd_open(&r, &m, drip, sizeof drip - 1, 1);
	m.delay = 200000;
	deadline_pass_arm(1, true);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK_INT(pop3_reader_status(&r, &st, text, sizeof text, &err), POP3_EDEADLINE);
	CHECK_STR(err, "the pass exceeded its deadline of 1 s");
	CHECK(check_elapsed(&t0) < 1.5);
	clear(&err);
	deadline_pass_arm(0, false);
	pop3_reader_free(&r);
}

static void
test_mline(void)
{
	static const char capa[] = "+OK\r\nUIDL\r\n..dot\r\nSASL PLAIN\n.\r\n+OK next\r\n";
	char line[POP3_LINE_MAX + 1];
	enum pop3_status st;
	struct pop3_reader r;
	struct mem m;
	size_t step;
	bool end;

	for (step = 0; step < 2; step++) {
		rd_open(&r, &m, capa, sizeof capa - 1, step);
		CHECK_INT(pop3_reader_status(&r, &st, line, sizeof line, NULL), POP3_OK);
		CHECK_INT(pop3_reader_mline(&r, line, sizeof line, &end, NULL), POP3_OK);
		CHECK(!end);
		CHECK_STR(line, "UIDL");
		CHECK_INT(pop3_reader_mline(&r, line, sizeof line, &end, NULL), POP3_OK);
		CHECK_STR(line, ".dot");
		CHECK_INT(pop3_reader_mline(&r, line, sizeof line, &end, NULL), POP3_OK);
		CHECK_STR(line, "SASL PLAIN");
		CHECK_INT(pop3_reader_mline(&r, line, sizeof line, &end, NULL), POP3_OK);
		CHECK(end);
		/* Pipelined: the next reply follows in the same buffer. */
		CHECK_INT(pop3_reader_status(&r, &st, line, sizeof line, NULL), POP3_OK);
		CHECK_STR(line, "next");
		pop3_reader_free(&r);
	}
}

static int
body_of(const void *data, size_t len, size_t step, struct collect *c, size_t *left)
{
	struct pop3_reader r;
	struct mem m;
	int rv;

	memset(c, 0, sizeof *c);
	rd_open(&r, &m, data, len, step);
	rv = pop3_reader_body(&r, collect_sink, c, NULL);
	if (left != NULL)
		*left = m.len - m.off + pop3_reader_pending(&r);
	pop3_reader_free(&r);
	return rv;
}

static void
test_body(void)
{
	static const char body[] = "Subject: x\r\n\r\n..stuffed\r\n.\r\n";
	static const char body2[] = "a\nbare\r\n\r\nx\ry\r\n..\r\n.\r\n+OK";
	static const char want[] = "Subject: x||.stuffed|";
	static const char want2[] = "a|bare||x\ry|.|";
	struct collect c;
	size_t step, left;

	for (step = 0; step < 4; step++) {
		CHECK_INT(body_of(body, sizeof body - 1, step, &c, &left), POP3_OK);
		CHECK_INT(c.len, strlen(want));
		CHECK(c.p != NULL && memcmp(c.p, want, c.len) == 0);
		free(c.p);
		CHECK_INT(body_of(body2, sizeof body2 - 1, step, &c, &left), POP3_OK);
		CHECK_INT(c.len, strlen(want2));
		CHECK(c.p != NULL && memcmp(c.p, want2, c.len) == 0);
		CHECK_INT(left, 3);	/* "+OK" of the next reply is untouched */
		free(c.p);
	}
	/* Bare-LF terminator, and an empty body. */
	CHECK_INT(body_of("x\n.\n", 4, 1, &c, NULL), POP3_OK);
	CHECK_INT(c.lines, 1);
	free(c.p);
	CHECK_INT(body_of(".\r\n", 3, 1, &c, NULL), POP3_OK);
	CHECK_INT(c.len, 0);
	free(c.p);
	/* ". ", ".x" and ".\rx" are stuffed lines, not terminators. */
	CHECK_INT(body_of(". \r\n.x\r\n.\rx\r\n.\r\n", 16, 1, &c, NULL), POP3_OK);
	CHECK(c.len == 7 && memcmp(c.p, " |x|\rx|", 7) == 0);
	free(c.p);
}

static void
test_body_truncated(void)
{
	static const char *const cut[] = { "line\r\n", "line\r\n.", "line\r\n.\r",
	    "line\r\npartial", "" };
	struct collect c;
	size_t i;

	for (i = 0; i < sizeof cut / sizeof cut[0]; i++) {
		CHECK_INT(body_of(cut[i], strlen(cut[i]), 1, &c, NULL), POP3_ENET);
		free(c.p);
	}
}

static void
test_body_nul_and_long_line(void)
{
	size_t n = 1024 * 1024 + 7, i;
	unsigned char *big = malloc(n + 16);
	struct collect c;

	for (i = 0; i < n; i++)
		big[i] = (unsigned char)(i % 251);	/* NULs, CRs and dots included */
	for (i = 0; i < n; i++)
		if (big[i] == '\n')
			big[i] = 'n';
	big[0] = 'A';
	memcpy(big + n, "\r\n.\r\n", 5);
	CHECK_INT(body_of(big, n + 5, 0, &c, NULL), POP3_OK);
	CHECK_INT(c.len, n + 1);
	CHECK_INT(c.lines, 1);
	CHECK(c.pieces > 1);		/* streamed in pieces, never whole */
	CHECK(c.p != NULL && memcmp(c.p, big, n) == 0);
	free(c.p);
	/* A CR at a piece boundary is data when no LF follows it. */
	CHECK_INT(body_of("a\r", 2, 1, &c, NULL), POP3_ENET);
	free(c.p);
	CHECK_INT(body_of("a\rb\r\n.\r\n", 8, 1, &c, NULL), POP3_OK);
	CHECK(c.len == 4 && memcmp(c.p, "a\rb|", 4) == 0);
	free(c.p);
	free(big);
}

/* RETR into a file: both line-ending modes, hashes and octet counts. */
/* hdr: the header block with CRLF endings (as TOP n 0 would hash it);
 * body_off: where the body starts in want. */
static void
retr_check(const char *wire, size_t wlen, enum pop3_eol eol, const char *want,
    size_t wantlen, uint64_t octets, const char *hdr, size_t body_off)
{
	unsigned char sha[32], got[256];
	struct pop3_retr res;
	struct pop3_sink o;
	struct pop3_reader r;
	struct mem m;
	int fd = memfd_create("retr", 0);
	ssize_t n;

	rd_open(&r, &m, wire, wlen, 1);
	pop3_sink_init(&o, fd, eol, 0);
	CHECK_INT(pop3_reader_body(&r, pop3_sink_put, &o, NULL), POP3_OK);
	CHECK_INT(pop3_sink_finish(&o, &res, NULL), POP3_OK);
	pop3_sink_free(&o);
	pop3_reader_free(&r);
	n = pread(fd, got, sizeof got, 0);
	CHECK_INT(n, wantlen);
	CHECK(n >= 0 && memcmp(got, want, wantlen) == 0);
	CHECK_INT(res.written, wantlen);
	CHECK_INT(res.octets, octets);
	gnutls_hash_fast(GNUTLS_DIG_SHA256, want, wantlen, sha);
	CHECK(memcmp(sha, res.sha256, 32) == 0);
	gnutls_hash_fast(GNUTLS_DIG_SHA256, hdr, strlen(hdr), sha);
	CHECK(memcmp(sha, res.header_sha256, 32) == 0);
	/* The header block is also kept, exactly as hashed. */
	CHECK_INT(res.header_len, strlen(hdr));
	CHECK(res.header != NULL && memcmp(res.header, hdr, res.header_len) == 0);
	free(res.header);
	gnutls_hash_fast(GNUTLS_DIG_SHA256, want + body_off, wantlen - body_off, sha);
	CHECK(memcmp(sha, res.body_sha256, 32) == 0);
	close(fd);
}

/* A header block of 300 KB: the kept copy stops at POP3_HEADER_MAX, the
 * hash still covers all of it. */
static void
test_retr_header_cap(void)
{
	size_t lines = 3000, len = 0, i;
	char *wire = xmalloc(lines * 102 + 64);
	struct pop3_retr res;
	struct pop3_sink o;
	struct pop3_reader r;
	struct mem m;

	for (i = 0; i < lines; i++) {
		memcpy(wire + len, "X-Long: ", 8);
		memset(wire + len + 8, 'a', 92);
		memcpy(wire + len + 100, "\r\n", 2);
		len += 102;
	}
	static const char tail[] = "\r\nbody\r\n.\r\n";

	memcpy(wire + len, tail, sizeof tail - 1);
	len += sizeof tail - 1;
	rd_open(&r, &m, wire, len, 0);
	pop3_sink_init(&o, -1, POP3_EOL_LF, 0);
	CHECK_INT(pop3_reader_body(&r, pop3_sink_put, &o, NULL), POP3_OK);
	CHECK_INT(pop3_sink_finish(&o, &res, NULL), POP3_OK);
	CHECK_INT(res.header_len, POP3_HEADER_MAX);
	CHECK(res.header != NULL && memcmp(res.header, "X-Long: a", 9) == 0);
	free(res.header);
	pop3_sink_free(&o);
	pop3_reader_free(&r);
	free(wire);
}

static void
test_retr_out(void)
{
	static const char wire[] = "A: b\r\n\r\nnul\0here\nbare lf\r\n..dot\r\n.\r\n";
	static const char lf[] = "A: b\n\nnul\0here\nbare lf\n.dot\n";
	static const char crlf[] = "A: b\r\n\r\nnul\0here\r\nbare lf\r\n.dot\r\n";

	/* Octets as sent with CRLF, unstuffed: 4+0+8+7+4 bytes + 5 CRLF. */
	static const char hwire[] = "A: b\r\nC: d\n\r\n.\r\n";
	static const char hlf[] = "A: b\nC: d\n\n";

	retr_check(wire, sizeof wire - 1, POP3_EOL_LF, lf, sizeof lf - 1, 33,
	    "A: b\r\n\r\n", 6);
	retr_check(wire, sizeof wire - 1, POP3_EOL_CRLF, crlf, sizeof crlf - 1, 33,
	    "A: b\r\n\r\n", 8);
	/* TOP n 0: the header block only (bare LF counts as a line end). */
	retr_check(hwire, sizeof hwire - 1, POP3_EOL_LF, hlf, sizeof hlf - 1, 14,
	    "A: b\r\nC: d\r\n\r\n", sizeof hlf - 1);
}

static void
test_retr_limits(void)
{
	static const char wire[] = "0123456789\r\n0123456789\r\n.\r\n+OK after\r\n";
	char text[POP3_LINE_MAX + 1], *err = NULL;
	struct pop3_retr res;
	enum pop3_status st;
	struct pop3_sink o;
	struct pop3_reader r;
	struct mem m;
	int fd;

	rd_open(&r, &m, wire, sizeof wire - 1, 0);
	pop3_sink_init(&o, -1, POP3_EOL_LF, 23);
	CHECK_INT(pop3_reader_body(&r, pop3_sink_put, &o, &err), POP3_EPROTO);
	CHECK_STR(err, "message larger than 23 octets");
	clear(&err);
	pop3_sink_free(&o);
	pop3_reader_free(&r);
	/* A full disk: the reader still reads to the end, then ELOCAL. */
	if ((fd = open("/dev/full", O_WRONLY)) == -1)
		return;
	rd_open(&r, &m, wire, sizeof wire - 1, 1);
	pop3_sink_init(&o, fd, POP3_EOL_LF, 0);
	CHECK_INT(pop3_reader_body(&r, pop3_sink_put, &o, NULL), POP3_OK);
	CHECK_INT(pop3_sink_finish(&o, &res, &err), POP3_ELOCAL);
	CHECK(err != NULL && strstr(err, "No space") != NULL);
	clear(&err);
	pop3_sink_free(&o);
	CHECK_INT(pop3_reader_status(&r, &st, text, sizeof text, NULL), POP3_OK);
	CHECK_STR(text, "after");
	pop3_reader_free(&r);
	close(fd);
	/* Past the soft bound the message is read to its end but not kept:
	 * POP3_ETOOBIG, and the next reply is read as it should be. */
	rd_open(&r, &m, wire, sizeof wire - 1, 0);
	pop3_sink_init(&o, -1, POP3_EOL_LF, 1000);
	pop3_sink_bound(&o, 15);
	CHECK_INT(pop3_reader_body(&r, pop3_sink_put, &o, NULL), POP3_OK);
	CHECK_INT(pop3_sink_finish(&o, &res, &err), POP3_ETOOBIG);
	CHECK_STR(err, "message larger than 15 octets (24 came): not kept");
	clear(&err);
	pop3_sink_free(&o);
	CHECK_INT(pop3_reader_status(&r, &st, text, sizeof text, NULL), POP3_OK);
	CHECK_STR(text, "after");
	pop3_reader_free(&r);
	/* Within it, as before. */
	rd_open(&r, &m, wire, sizeof wire - 1, 0);
	pop3_sink_init(&o, -1, POP3_EOL_LF, 1000);
	pop3_sink_bound(&o, 24);
	CHECK_INT(pop3_reader_body(&r, pop3_sink_put, &o, NULL), POP3_OK);
	CHECK_INT(pop3_sink_finish(&o, &res, NULL), POP3_OK);
	CHECK_INT(res.octets, 24);
	free(res.header);
	pop3_sink_free(&o);
	pop3_reader_free(&r);
	CHECK(POP3_DRAIN_MAX(10) == 30 + ((uint64_t)64 << 20));
	CHECK(POP3_DRAIN_MAX(UINT64_MAX / 2) == 0);
}

static void
test_caps(void)
{
	struct pop3_caps c;

	pop3_parse_caps_init(&c);
	CHECK_INT(c.login_delay, -1);
	CHECK_INT(c.expire, -1);
	pop3_parse_caps_line(&c, "UIDL");
	pop3_parse_caps_line(&c, "top");
	pop3_parse_caps_line(&c, "USER");
	pop3_parse_caps_line(&c, "PIPELINING");
	pop3_parse_caps_line(&c, "STLS");
	pop3_parse_caps_line(&c, "SASL LOGIN PLAIN XOAUTH2");
	pop3_parse_caps_line(&c, "LOGIN-DELAY 900 USER");
	pop3_parse_caps_line(&c, "EXPIRE NEVER");
	pop3_parse_caps_line(&c, "IMPLEMENTATION Dovecot");
	CHECK(c.uidl && c.top && c.user && c.pipelining && c.stls);
	CHECK(c.sasl_plain && c.sasl_xoauth2);
	CHECK_INT(c.login_delay, 900);
	CHECK(c.expire == LONG_MAX);
	pop3_parse_caps_line(&c, "EXPIRE 31");
	CHECK_INT(c.expire, 31);
	pop3_parse_caps_line(&c, "EXPIRE -3");
	CHECK_INT(c.expire, -1);
	pop3_parse_caps_line(&c, "LOGIN-DELAY 99999999999999999999999");
	CHECK_INT(c.login_delay, -1);
	pop3_parse_caps_init(&c);
	pop3_parse_caps_line(&c, "SASL GSSAPI");
	pop3_parse_caps_line(&c, "");
	pop3_parse_caps_line(&c, "UIDLX");
	CHECK(!c.sasl_plain && !c.uidl);
	/* RFC 6856 UTF8 (Courier: "UTF8 USER"), RFC 7628 OAUTHBEARER. */
	pop3_parse_caps_line(&c, "UTF8 USER");
	pop3_parse_caps_line(&c, "SASL PLAIN LOGIN XOAUTH2 OAUTHBEARER");
	CHECK(c.utf8 && c.sasl_oauthbearer && c.sasl_xoauth2);
	CHECK(c.expire == -1 && c.login_delay == -1);
	/* GNU Mailutils 3.15: "600" for LOGIN-DELAY 600, "EXPIRE0" for
	 * EXPIRE 0. A proper LOGIN-DELAY line wins over a bare number. */
	pop3_parse_caps_line(&c, "600");
	pop3_parse_caps_line(&c, "EXPIRE0");
	CHECK_INT(c.login_delay, 600);
	CHECK_INT(c.expire, 0);
	pop3_parse_caps_line(&c, "EXPIRE31");
	CHECK_INT(c.expire, 31);
	pop3_parse_caps_line(&c, "LOGIN-DELAY 120");
	pop3_parse_caps_line(&c, "900");
	CHECK_INT(c.login_delay, 120);
	pop3_parse_caps_line(&c, "EXPIREX");
	CHECK_INT(c.expire, 31);
	/* EXPIRE without a valid value: the policy is unknown. */
	pop3_parse_caps_line(&c, "EXPIRE");
	CHECK_INT(c.expire, -1);
	pop3_parse_caps_init(&c);
	pop3_parse_caps_line(&c, "LOGIN-DELAY300");
	CHECK_INT(c.login_delay, 300);
	CHECK(!c.utf8 && !c.sasl_oauthbearer);
}

static void
test_parse_lines(void)
{
	unsigned long num;
	uint64_t size;
	char *uidl = NULL, *err = NULL;

	CHECK_INT(pop3_parse_list("1 120", &num, &size, NULL), POP3_OK);
	CHECK(num == 1 && size == 120);
	CHECK_INT(pop3_parse_list("2 18446744073709551615 extra", &num, &size, NULL), POP3_OK);
	CHECK(size == UINT64_MAX);
	CHECK_INT(pop3_parse_list("2 18446744073709551616", &num, &size, NULL), POP3_EPROTO);
	CHECK_INT(pop3_parse_list("2  5", &num, &size, NULL), POP3_EPROTO);
	CHECK_INT(pop3_parse_list("-1 5", &num, &size, NULL), POP3_EPROTO);
	CHECK_INT(pop3_parse_list("3 5x", &num, &size, &err), POP3_EPROTO);
	CHECK_STR(err, "malformed LIST line \"3 5x\"");
	clear(&err);
	CHECK_INT(pop3_parse_uidl("7 00000001abcdef", &num, &uidl, NULL), POP3_OK);
	CHECK(num == 7);
	CHECK_STR(uidl, "00000001abcdef");
	free(uidl);
	CHECK_INT(pop3_parse_uidl("7 a b", &num, &uidl, &err), POP3_EPROTO);
	CHECK_STR(err, "UIDL of message 7 holds a byte outside 0x21-0x7E");
	clear(&err);
	CHECK_INT(pop3_parse_uidl("7 caf\xc3\xa9", &num, &uidl, NULL), POP3_EPROTO);
	CHECK_INT(pop3_parse_uidl("7 ", &num, &uidl, NULL), POP3_EPROTO);
	CHECK_INT(pop3_parse_uidl("7", &num, &uidl, NULL), POP3_EPROTO);
	CHECK_INT(pop3_parse_uidl("7 "
	    "0123456789012345678901234567890123456789012345678901234567890123456789",
	    &num, &uidl, NULL), POP3_OK);
	free(uidl);
	CHECK_INT(pop3_parse_uidl("7 "
	    "0123456789012345678901234567890123456789012345678901234567890123456789X",
	    &num, &uidl, NULL), POP3_EPROTO);
}

static void
test_misc(void)
{
	char *s;

	CHECK(pop3_parse_temporary("[IN-USE] mailbox locked"));
	CHECK(pop3_parse_temporary("[login-delay] wait"));
	CHECK(pop3_parse_temporary("[SYS/TEMP] try later"));
	CHECK(!pop3_parse_temporary("[AUTH] Authentication failed."));
	CHECK(!pop3_parse_temporary("[SYS/PERM] gone"));
	CHECK_INT(pop3_parse_busy("[IN-USE] locked"), POP3_BUSY_IN_USE);
	CHECK_INT(pop3_parse_busy("[LOGIN-DELAY] wait"), POP3_BUSY_LOGIN_DELAY);
	CHECK_INT(pop3_parse_busy("[SYS/TEMP/DISK] full"), POP3_BUSY_SYS_TEMP);
	CHECK_INT(pop3_parse_busy("[AUTH] no"), POP3_BUSY_NONE);
	CHECK_INT(pop3_parse_busy("IN-USE"), POP3_BUSY_NONE);
	s = pop3_parse_clean("bad\x1b[31m\ttext\x7f!");
	CHECK_STR(s, "bad[31mtext!");
	free(s);
}

int
main(void)
{
	TEST(test_status);
	TEST(test_status_limits);
	TEST(test_deadline);
	TEST(test_deadline_body);
	TEST(test_response_deadline);
	TEST(test_response_scope);
	TEST(test_pass_limits);
	TEST(test_mline);
	TEST(test_body);
	TEST(test_body_truncated);
	TEST(test_body_nul_and_long_line);
	TEST(test_retr_out);
	TEST(test_retr_header_cap);
	TEST(test_retr_limits);
	TEST(test_caps);
	TEST(test_parse_lines);
	TEST(test_misc);
	CHECK_DONE();
}

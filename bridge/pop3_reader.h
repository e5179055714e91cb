/* The bounded POP3 reader behind bridge/pop3.c, kept apart from the
 * session so that it can be tested on memory buffers.
 *
 * The reader pulls bytes from a source callback (a libetpan mailstream in
 * the session, a buffer in tests) into one fixed 64 KiB buffer: memory does
 * not grow with line or message length. Three deadlines, all on the
 * monotonic clock, bound what a server can make us wait:
 *   - every step (a status line, one line of a multi-line response, or
 *     64 KiB of a longer body line) must complete within the timeout: a
 *     server that drips one byte at a time still times out (POP3_ENET);
 *   - a whole multi-line response announced by pop3_reader_expect() (RETR,
 *     TOP, UIDL, LIST, CAPA) must complete within its allowance, the
 *     timeout plus its size at DEADLINE_MIN_RATE (lib/deadline.h, which
 *     says why 16 KiB/s): a server that sends a line just before each step
 *     would time out still ends (POP3_EDEADLINE);
 *   - the pass's deadline (lib/deadline.h; POP3_EDEADLINE).
 * A stop request (lib/deadline.h) ends a wait as POP3_ESTOP: the source
 * should notice one while it waits (the session's does, lib/dlstream.h);
 * the reader looks before each read and after each failed one. Lines are
 * parsed by bridge/pop3_parse.c, message bodies written by
 * bridge/pop3_sink.c.
 *
 * Functions returning int return POP3_OK or a negative enum pop3_err; on
 * error *err (when err is not NULL) receives an allocated one-line message
 * without the "host:port: " prefix, which the session adds. */
#ifndef POP3BRIDGE_POP3_READER_H
#define POP3BRIDGE_POP3_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <stdint.h>
#include <time.h>

#include "bridge/pop3.h"
#include "bridge/pop3_parse.h"
#include "lib/deadline.h"

#define POP3_CHUNK	(64 * 1024)	/* read buffer and write buffer */

/* A byte source: reads at most cap bytes into buf, waiting at most ms
 * milliseconds (-1: no limit). Returns the count, 0 at end of stream, -1 on
 * error or timeout. */
typedef ssize_t pop3_reader_src_fn(void *ctx, void *buf, size_t cap, int ms);

/* A body sink: receives a multi-line response, dot-unstuffed, as pieces of
 * lines without their line ending; eol is true on the last piece of each
 * line. Returns POP3_OK, or an error that stops the reader. */
typedef int pop3_reader_sink_fn(void *ctx, const unsigned char *p, size_t n, bool eol,
    char **err);

struct pop3_reader {
	pop3_reader_src_fn *src;
	void *ctx;
	unsigned timeout;		/* seconds per step; 0: no deadline */
	struct deadline step;		/* of the current step */
	/* The multi-line response announced by pop3_reader_expect(). */
	bool expecting;
	struct timespec started;	/* when it was announced */
	uint64_t announced;		/* its size as LIST gave it, or 0 */
	uint64_t received;		/* octets read since it was announced */
	unsigned char *buf;		/* owned, POP3_CHUNK bytes */
	size_t off, len;		/* unread bytes are buf[off..len) */
};

/* Sets up r; ctx is passed to src and is not owned. Free with pop3_reader_free. */
void pop3_reader_init(struct pop3_reader *r, pop3_reader_src_fn *src, void *ctx, unsigned timeout);
void pop3_reader_free(struct pop3_reader *r);

/* Bytes received but not consumed yet (after STLS this must be 0, else the
 * server or a man in the middle injected plaintext). */
size_t pop3_reader_pending(const struct pop3_reader *r);

/* Announces a multi-line response (its status line and lines) of
 * announced octets (LIST's size for RETR; 0 when unknown). From
 * now until its terminator it must arrive within deadline_allowance(
 * timeout, max(announced, octets received so far)) seconds; a status line
 * other than +OK ends it (no lines follow). No effect with timeout 0. */
void pop3_reader_expect(struct pop3_reader *r, uint64_t announced);

/* The allowance of the response announced last, as it stands now (what
 * POP3_EDEADLINE's message names). */
unsigned pop3_reader_deadline(const struct pop3_reader *r);

/* Reads a status line: "+OK", "-ERR" or, for SASL, "+" continuation, each
 * alone or followed by a space and text. text (cap >= POP3_LINE_MAX + 1)
 * receives the text after the indicator. A line over POP3_LINE_MAX, holding
 * a NUL, or with any other indicator ("+OKAY", "") is POP3_EPROTO; end of
 * stream or timeout is POP3_ENET; a deadline or stop as above. */
int pop3_reader_status(struct pop3_reader *r, enum pop3_status *st, char *text, size_t cap,
    char **err);

/* Reads one line of a multi-line listing (CAPA, UIDL, LIST), unstuffed,
 * into line (cap >= POP3_LINE_MAX + 1). *end is set at the "." terminator.
 * Errors as pop3_reader_status. */
int pop3_reader_mline(struct pop3_reader *r, char *line, size_t cap, bool *end, char **err);

/* Streams a multi-line response (RETR, TOP) to sink up to and including
 * the "." terminator, in constant memory: lines may be of any length, NUL
 * bytes are kept, CRLF and bare LF both end a line, dot-stuffing is undone.
 * End of stream before the terminator or timeout is POP3_ENET, a
 * deadline or stop as above; a sink error is returned as is. */
int pop3_reader_body(struct pop3_reader *r, pop3_reader_sink_fn *sink, void *ctx, char **err);

#endif

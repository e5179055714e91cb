/* The bounded POP3 reader and parsers behind bridge/pop3.c, kept apart from
 * the session so that they can be tested on memory buffers.
 *
 * The reader pulls bytes from a source callback (a libetpan mailstream in
 * the session, a buffer in tests) into one fixed 64 KiB buffer: memory does
 * not grow with line or message length. Every step (a status line, one line
 * of a multi-line response, or 64 KiB of a longer body line) must complete
 * within the reader's timeout, measured on the monotonic clock: a server
 * that drips one byte at a time still times out.
 *
 * Functions returning int return POP3_OK or a negative enum pop3_err; on
 * error *err (when err is not NULL) receives an allocated one-line message
 * without the "host:port: " prefix, which the session adds. */
#ifndef POP3BRIDGE_POP3_READER_H
#define POP3BRIDGE_POP3_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <gnutls/crypto.h>

#include "bridge/pop3.h"

#define POP3_LINE_MAX	4096		/* status/listing line, without CRLF */
#define POP3_CHUNK	(64 * 1024)	/* read buffer and write buffer */
#define POP3_LIST_MAX	1000000		/* lines in a UIDL or LIST response */
#define POP3_UIDL_MAX	70		/* RFC 1939 */
#define POP3_HEADER_MAX	(256 * 1024)	/* header block kept for the caller */

/* A byte source: reads at most cap bytes into buf, waiting at most ms
 * milliseconds (-1: no limit). Returns the count, 0 at end of stream, -1 on
 * error or timeout. */
typedef ssize_t pop3_src_fn(void *ctx, void *buf, size_t cap, int ms);

/* A body sink: receives a multi-line response, dot-unstuffed, as pieces of
 * lines without their line ending; eol is true on the last piece of each
 * line. Returns POP3_OK, or an error that stops the reader. */
typedef int pop3_sink_fn(void *ctx, const unsigned char *p, size_t n, bool eol,
    char **err);

struct pop3_rd {
	pop3_src_fn *src;
	void *ctx;
	unsigned timeout;		/* seconds per step; 0: no deadline */
	struct timespec deadline;	/* of the current step */
	unsigned char *buf;		/* owned, POP3_CHUNK bytes */
	size_t off, len;		/* unread bytes are buf[off..len) */
};

enum pop3_status { POP3_ST_OK, POP3_ST_ERR, POP3_ST_CONT };

/* Sets up r; ctx is passed to src and is not owned. Free with pop3_rd_free. */
void pop3_rd_init(struct pop3_rd *r, pop3_src_fn *src, void *ctx, unsigned timeout);
void pop3_rd_free(struct pop3_rd *r);

/* Bytes received but not consumed yet (after STLS this must be 0, else the
 * server or a man in the middle injected plaintext). */
size_t pop3_rd_pending(const struct pop3_rd *r);

/* Reads a status line: "+OK", "-ERR" or, for SASL, "+" continuation, each
 * alone or followed by a space and text. text (cap >= POP3_LINE_MAX + 1)
 * receives the text after the indicator. A line over POP3_LINE_MAX, holding
 * a NUL, or with any other indicator ("+OKAY", "") is POP3_EPROTO; end of
 * stream or timeout is POP3_ENET. */
int pop3_rd_status(struct pop3_rd *r, enum pop3_status *st, char *text, size_t cap,
    char **err);

/* Reads one line of a multi-line listing (CAPA, UIDL, LIST), unstuffed,
 * into line (cap >= POP3_LINE_MAX + 1). *end is set at the "." terminator.
 * Errors as pop3_rd_status. */
int pop3_rd_mline(struct pop3_rd *r, char *line, size_t cap, bool *end, char **err);

/* Streams a multi-line response (RETR, TOP) to sink up to and including
 * the "." terminator, in constant memory: lines may be of any length, NUL
 * bytes are kept, CRLF and bare LF both end a line, dot-stuffing is undone.
 * End of stream before the terminator or timeout is POP3_ENET; a sink
 * error is returned as is. */
int pop3_rd_body(struct pop3_rd *r, pop3_sink_fn *sink, void *ctx, char **err);

/* Parses a status line. Returns 0 with *st and *text (pointing into line)
 * set, or -1 when the line is not a valid status line. */
int pop3_parse_status(const char *line, enum pop3_status *st, const char **text);

/* True when an -ERR text carries a response code that marks the failure as
 * temporary (RFC 2449/3206: IN-USE, LOGIN-DELAY, SYS/TEMP). */
bool pop3_resp_temporary(const char *text);

/* Returns an allocated copy of server text fit for one log line: control
 * characters are dropped and the result is cut at 200 bytes. */
char *pop3_clean_text(const char *text);

/* Resets c to "nothing announced" (login_delay and expire -1). */
void pop3_caps_init(struct pop3_caps *c);

/* Applies one CAPA response line to c; unknown or malformed lines are
 * ignored (capabilities are optional by nature). */
void pop3_caps_line(struct pop3_caps *c, const char *line);

/* Parses a LIST scan line "num size [...]". */
int pop3_parse_list(const char *line, unsigned long *num, uint64_t *size, char **err);

/* Parses a UIDL line "num uid"; *uidl is allocated. The uid must be 1 to 70
 * characters of 0x21..0x7E. */
int pop3_parse_uidl(const char *line, unsigned long *num, char **uidl, char **err);

/* Checks and merges a listing. list (nlist entries from LIST, uidl NULL)
 * and uidls (nuidl entries from UIDL, size unused) must each have message
 * numbers >= 1, strictly increasing, and consecutive from 1 unless
 * allow_gaps (messages deleted in this session); with have_uidl both must
 * name the same messages and no UIDL may repeat. On success the UIDL
 * strings move into list and the uidls entries are left with uidl NULL; on
 * POP3_EPROTO nothing moves. The caller frees both arrays. */
int pop3_listing_merge(struct pop3_entry *list, size_t nlist, struct pop3_entry *uidls,
    size_t nuidl, bool have_uidl, bool allow_gaps, char **err);

/* The RETR/TOP writer: a pop3_sink_fn (ctx = struct pop3_out) that writes
 * lines to fd with eol line endings through a 64 KiB buffer, hashes the
 * bytes written with SHA-256 and counts octets as sent (CRLF). Besides, it
 * hashes the header block with CRLF endings and the body as written, and
 * keeps the header block (see struct pop3_retr). fd -1 only hashes. After a write error it keeps
 * accepting (and dropping) data so the session can read the response to
 * its end; pop3_out_finish reports it. */
struct pop3_out {
	int fd;
	enum pop3_eol eol;
	uint64_t max_octets;		/* 0: no limit */
	uint64_t octets, written;
	gnutls_hash_hd_t sha;
	gnutls_hash_hd_t hsha, bsha;	/* header block, body */
	bool in_body;			/* the header block's empty line was seen */
	unsigned char *head;		/* the header block as received (owned) */
	size_t head_len, head_cap;
	bool line_start;		/* the next piece starts a line */
	size_t body_off;		/* in buf: where the body starts */
	int write_errno;		/* non-zero once a write failed */
	unsigned char *buf;		/* owned, POP3_CHUNK bytes */
	size_t len;
};

void pop3_out_init(struct pop3_out *o, int fd, enum pop3_eol eol, uint64_t max_octets);

/* The sink. More than max_octets octets is POP3_EPROTO. */
int pop3_out_sink(void *ctx, const unsigned char *p, size_t n, bool eol, char **err);

/* Flushes and fills res (may be NULL). POP3_ELOCAL if any write failed. */
int pop3_out_finish(struct pop3_out *o, struct pop3_retr *res, char **err);

/* Releases o; safe after pop3_out_finish or instead of it. */
void pop3_out_free(struct pop3_out *o);

#endif

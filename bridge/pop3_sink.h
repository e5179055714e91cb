/* The RETR/TOP writer behind bridge/pop3.c: where a message read by
 * bridge/pop3_reader.c goes, with its hashes (see struct pop3_retr). */
#ifndef POP3BRIDGE_POP3_SINK_H
#define POP3BRIDGE_POP3_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <gnutls/crypto.h>

#include "bridge/pop3.h"

#define POP3_HEADER_MAX	(256 * 1024)	/* header block kept for the caller */

/* A pop3_reader_sink_fn (ctx = struct pop3_sink) that writes lines to fd
 * with eol line endings through a POP3_CHUNK buffer, hashes the bytes
 * written with SHA-256 and counts octets as sent (CRLF). Besides, it
 * hashes the header block with CRLF endings and the body as written, and
 * keeps the header block (see struct pop3_retr). fd -1 only hashes. After
 * a write error it keeps accepting (and dropping) data so the session can
 * read the response to its end; pop3_sink_finish reports it. */
struct pop3_sink {
	int fd;
	enum pop3_eol eol;
	uint64_t max_octets;		/* 0: no limit */
	uint64_t keep_octets;		/* 0: no limit (pop3_sink_bound) */
	bool over;			/* more than keep_octets came */
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

void pop3_sink_init(struct pop3_sink *o, int fd, enum pop3_eol eol, uint64_t max_octets);

/* A softer bound below max_octets: a message longer than keep octets is
 * still read to its end (up to max_octets) so that the session stays
 * usable, but nothing past keep is written or hashed, and
 * pop3_sink_finish() reports POP3_ETOOBIG. */
void pop3_sink_bound(struct pop3_sink *o, uint64_t keep);

/* The sink. More than max_octets octets is POP3_EPROTO. */
int pop3_sink_put(void *ctx, const unsigned char *p, size_t n, bool eol, char **err);

/* Flushes and fills res (may be NULL). POP3_ELOCAL if any write failed,
 * POP3_ETOOBIG past the pop3_sink_bound() (res is then not filled). */
int pop3_sink_finish(struct pop3_sink *o, struct pop3_retr *res, char **err);

/* Releases o; safe after pop3_sink_finish or instead of it. */
void pop3_sink_free(struct pop3_sink *o);

#endif

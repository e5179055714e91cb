/* The RETR/TOP writer: see pop3_sink.h. */
#include "bridge/pop3_sink.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge/pop3_reader.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xmalloc.h"

void
pop3_sink_init(struct pop3_sink *o, int fd, enum pop3_eol eol, uint64_t max_octets)
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
 * pop3_sink_finish and the reader drains the response. */
static void
out_flush(struct pop3_sink *o)
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
out_put(struct pop3_sink *o, const void *data, size_t n)
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
head_keep(struct pop3_sink *o, const void *p, size_t n)
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
out_header(struct pop3_sink *o, const unsigned char *p, size_t n, bool eol)
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

void
pop3_sink_bound(struct pop3_sink *o, uint64_t keep)
{
	o->keep_octets = keep;
}

int
pop3_sink_put(void *ctx, const unsigned char *p, size_t n, bool eol, char **err)
{
	struct pop3_sink *o = ctx;

	/* Octets as the server counts them (RFC 1939 LIST): lines end in CRLF. */
	o->octets += n + (eol ? 2 : 0);
	if (o->max_octets != 0 && o->octets > o->max_octets)
		return err_code(err, POP3_EPROTO, "message larger than %llu octets",
		    (unsigned long long)o->max_octets);
	if (o->keep_octets != 0 && o->octets > o->keep_octets)
		o->over = true;
	if (o->over)
		return POP3_OK;
	out_put(o, p, n);
	if (eol)
		out_put(o, o->eol == POP3_EOL_CRLF ? "\r\n" : "\n",
		    o->eol == POP3_EOL_CRLF ? 2 : 1);
	if (!o->in_body)
		out_header(o, p, n, eol);
	return POP3_OK;
}

int
pop3_sink_finish(struct pop3_sink *o, struct pop3_retr *res, char **err)
{
	if (o->over)
		return err_code(err, POP3_ETOOBIG, "message larger than %llu octets "
		    "(%llu came): not kept", (unsigned long long)o->keep_octets,
		    (unsigned long long)o->octets);
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
pop3_sink_free(struct pop3_sink *o)
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

/* A RETR response body as a hostile server sends it: the reader
 * (bridge/pop3_reader.c, pop3_reader_body) streaming into the sink
 * (bridge/pop3_sink.c) that writes the temp file, both line-ending
 * conversions, the input handed out in pieces of a size the first byte
 * picks.
 * Properties: the file holds exactly what a plain reference decoder of
 * RFC 1939 3 makes of the input (lines end at LF, one CR before it
 * dropped, a leading dot removed, "." alone ends the message; NULs kept);
 * the octet count, SHA-256, header block and its hash, and body hash agree
 * with the reference; and reading the input whole or in pieces gives the
 * same result. */
#include <sys/mman.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gnutls/crypto.h>

#include "bridge/pop3_reader.h"
#include "bridge/pop3_sink.h"
#include "lib/log.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int memfd = -1;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_init(LOG_QUIET, 0);
	fuzz_quiet();
	if ((memfd = memfd_create("fuzz-retr", MFD_CLOEXEC)) == -1)
		abort();
	return 0;
}

struct ref {
	bool complete;			/* the terminator was found */
	uint8_t *out;			/* the file as it must be */
	size_t out_len;
	uint8_t *head;			/* the header block, CRLF */
	size_t head_len;
	size_t body_off;		/* in out: where the body starts */
	uint64_t octets;
};

/* The reference decoder, written for clarity rather than speed. */
static void
reference(const uint8_t *in, size_t n, enum pop3_eol eol, struct ref *r)
{
	size_t pos = 0;
	bool in_body = false;

	memset(r, 0, sizeof *r);
	r->out = malloc(2 * n + 1);
	r->head = malloc(2 * n + 1);
	while (pos < n) {
		const uint8_t *lf = memchr(in + pos, '\n', n - pos);
		size_t len, start = pos;

		if (lf == NULL)
			break;
		len = (size_t)(lf - (in + pos));
		pos += len + 1;
		if (len > 0 && in[start + len - 1] == '\r')
			len--;
		if (len == 1 && in[start] == '.') {
			r->complete = true;
			break;
		}
		if (len > 0 && in[start] == '.') {
			start++;
			len--;
		}
		memcpy(r->out + r->out_len, in + start, len);
		r->out_len += len;
		if (eol == POP3_EOL_CRLF)
			r->out[r->out_len++] = '\r';
		r->out[r->out_len++] = '\n';
		r->octets += len + 2;
		if (!in_body) {
			memcpy(r->head + r->head_len, in + start, len);
			r->head_len += len;
			r->head[r->head_len++] = '\r';
			r->head[r->head_len++] = '\n';
			if (len == 0) {
				in_body = true;
				r->body_off = r->out_len;
			}
		}
	}
	if (!in_body)
		r->body_off = r->out_len;
}

static void
sha(const void *p, size_t n, unsigned char out[32])
{
	if (gnutls_hash_fast(GNUTLS_DIG_SHA256, p, n, out) != 0)
		abort();
}

struct got {
	int rv;
	struct pop3_retr res;
	uint8_t *file;
	size_t file_len;
};

static void
run(const uint8_t *in, size_t n, size_t step, enum pop3_eol eol, struct got *g)
{
	struct fuzz_mem m = { .p = in, .len = n, .step = step };
	struct pop3_reader r;
	struct pop3_sink o;
	char *err = NULL;
	off_t len;

	memset(g, 0, sizeof *g);
	if (ftruncate(memfd, 0) == -1 || lseek(memfd, 0, SEEK_SET) == -1)
		abort();
	pop3_reader_init(&r, fuzz_mem_src, &m, 5);
	pop3_sink_init(&o, memfd, eol, 0);
	g->rv = pop3_reader_body(&r, pop3_sink_put, &o, &err);
	if (g->rv == POP3_OK)
		g->rv = pop3_sink_finish(&o, &g->res, &err);
	FUZZ_CHECK((g->rv == POP3_OK) == (err == NULL), "rv %d with err %s", g->rv,
	    err ? err : "(none)");
	free(err);
	pop3_sink_free(&o);
	pop3_reader_free(&r);
	len = lseek(memfd, 0, SEEK_END);
	g->file_len = (size_t)len;
	g->file = malloc(g->file_len + 1);
	if (pread(memfd, g->file, g->file_len, 0) != (ssize_t)g->file_len)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char h[32];
	enum pop3_eol eol;
	struct got whole, parts;
	struct ref ref;
	size_t step;

	if (size < 1)
		return 0;
	eol = (data[0] & 0x80) ? POP3_EOL_CRLF : POP3_EOL_LF;
	step = 1 + (data[0] & 0x0f);
	data++;
	size--;

	reference(data, size, eol, &ref);
	run(data, size, 0, eol, &whole);
	run(data, size, step, eol, &parts);

	FUZZ_CHECK(whole.rv == parts.rv, "whole %d, in pieces of %zu %d", whole.rv, step,
	    parts.rv);
	FUZZ_CHECK((whole.rv == POP3_OK) == ref.complete, "rv %d, terminator %s", whole.rv,
	    ref.complete ? "present" : "absent");
	if (whole.rv == POP3_OK) {
		FUZZ_CHECK(whole.file_len == ref.out_len &&
		    memcmp(whole.file, ref.out, ref.out_len) == 0, "file differs");
		FUZZ_CHECK(parts.file_len == ref.out_len &&
		    memcmp(parts.file, ref.out, ref.out_len) == 0, "file differs in pieces");
		FUZZ_CHECK(whole.res.octets == ref.octets && parts.res.octets == ref.octets,
		    "octets %llu/%llu, expected %llu", (unsigned long long)whole.res.octets,
		    (unsigned long long)parts.res.octets, (unsigned long long)ref.octets);
		FUZZ_CHECK(whole.res.written == ref.out_len, "written");
		sha(ref.out, ref.out_len, h);
		FUZZ_CHECK(memcmp(whole.res.sha256, h, 32) == 0 &&
		    memcmp(parts.res.sha256, h, 32) == 0, "sha256");
		sha(ref.head, ref.head_len, h);
		FUZZ_CHECK(memcmp(whole.res.header_sha256, h, 32) == 0 &&
		    memcmp(parts.res.header_sha256, h, 32) == 0, "header sha256");
		sha(ref.out + ref.body_off, ref.out_len - ref.body_off, h);
		FUZZ_CHECK(memcmp(whole.res.body_sha256, h, 32) == 0 &&
		    memcmp(parts.res.body_sha256, h, 32) == 0, "body sha256");
		size_t keep = ref.head_len < POP3_HEADER_MAX ? ref.head_len : POP3_HEADER_MAX;
		FUZZ_CHECK(whole.res.header_len == keep && (keep == 0 ||
		    memcmp(whole.res.header, ref.head, keep) == 0), "header block");
		FUZZ_CHECK(parts.res.header_len == keep && (keep == 0 ||
		    memcmp(parts.res.header, ref.head, keep) == 0), "header block in pieces");
	}
	free(whole.res.header);
	free(parts.res.header);
	free(whole.file);
	free(parts.file);
	free(ref.out);
	free(ref.head);
	return 0;
}

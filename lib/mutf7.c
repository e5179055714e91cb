#include "lib/mutf7.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/xmalloc.h"

/* RFC 3501's BASE64 variant: "," replaces "/" (which is a common hierarchy
 * separator) and there is no "=" padding. */
static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/* Decodes the UTF-8 sequence at s (n > 0 bytes left). Returns the code
 * point and sets *len, or returns -1 when the sequence is malformed. */
static int32_t
utf8_next(const unsigned char *s, size_t n, size_t *len)
{
	int32_t cp, min;
	size_t k, need;

	if (s[0] < 0x80) {
		*len = 1;
		return s[0];
	}
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		need = 1;
		cp = s[0] & 0x1f;
		min = 0x80;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		need = 2;
		cp = s[0] & 0x0f;
		min = 0x800;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		need = 3;
		cp = s[0] & 0x07;
		min = 0x10000;
	} else
		return -1;	/* a continuation byte, 0xc0, 0xc1 or above 0xf4 */
	if (n < need + 1)
		return -1;
	for (k = 1; k <= need; k++) {
		if ((s[k] & 0xc0) != 0x80)
			return -1;
		cp = (cp << 6) | (s[k] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	*len = need + 1;
	return cp;
}

bool
mutf7_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, len;

	while (i < n) {
		if (utf8_next(p + i, n - i, &len) < 0)
			return false;
		i += len;
	}
	return true;
}

static bool
printable(unsigned char c)
{
	return c >= 0x20 && c <= 0x7e;
}

/* The BASE64 state of one "&...-" run. */
struct b64run {
	char *out;
	size_t o;
	uint32_t bits;
	int nbits;
};

static void
put16(struct b64run *r, uint32_t unit)
{
	r->bits = (r->bits << 16) | unit;
	r->nbits += 16;
	while (r->nbits >= 6) {
		r->nbits -= 6;
		r->out[r->o++] = b64[(r->bits >> r->nbits) & 0x3f];
	}
	r->bits &= (1u << r->nbits) - 1;
}

/* Encodes the run of non-printable characters starting at s[*i] as
 * "&...-" into r. Returns -1 on malformed UTF-8. */
static int
encode_run(const unsigned char *s, size_t n, size_t *i, struct b64run *r)
{
	int32_t cp;
	size_t len;

	r->out[r->o++] = '&';
	r->bits = 0;
	r->nbits = 0;
	while (*i < n && !printable(s[*i])) {
		if ((cp = utf8_next(s + *i, n - *i, &len)) < 0)
			return -1;
		*i += len;
		if (cp >= 0x10000) {
			cp -= 0x10000;
			put16(r, 0xd800 | (uint32_t)(cp >> 10));
			put16(r, 0xdc00 | (uint32_t)(cp & 0x3ff));
		} else
			put16(r, (uint32_t)cp);
	}
	if (r->nbits > 0)
		r->out[r->o++] = b64[(r->bits << (6 - r->nbits)) & 0x3f];
	r->out[r->o++] = '-';
	return 0;
}

int
mutf7_encode(const char *utf8, char **out)
{
	const unsigned char *s = (const unsigned char *)utf8;
	size_t n = strlen(utf8), i = 0;
	struct b64run r;

	/* Worst case is a lone one-byte control character: "&AAE-", five
	 * bytes out per byte in. */
	r.out = xreallocarray(NULL, n + 1, 5);
	r.o = 0;
	while (i < n) {
		if (s[i] == '&') {
			r.out[r.o++] = '&';
			r.out[r.o++] = '-';
			i++;
		} else if (printable(s[i]))
			r.out[r.o++] = (char)s[i++];
		else if (encode_run(s, n, &i, &r) == -1) {
			free(r.out);
			return -1;
		}
	}
	r.out[r.o] = '\0';
	*out = r.out;
	return 0;
}

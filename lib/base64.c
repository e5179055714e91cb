#include "lib/base64.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "lib/xmalloc.h"

static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *
base64_encode(const void *p, size_t n)
{
	const unsigned char *s = p;
	char *out = xmalloc((n + 2) / 3 * 4 + 1), *o = out;
	unsigned long v;
	size_t i;

	for (i = 0; i + 2 < n; i += 3) {
		v = (unsigned long)s[i] << 16 | (unsigned long)s[i + 1] << 8 | s[i + 2];
		*o++ = alphabet[v >> 18 & 63];
		*o++ = alphabet[v >> 12 & 63];
		*o++ = alphabet[v >> 6 & 63];
		*o++ = alphabet[v & 63];
	}
	if (i < n) {
		v = (unsigned long)s[i] << 16 | (i + 1 < n ? (unsigned long)s[i + 1] << 8 : 0);
		*o++ = alphabet[v >> 18 & 63];
		*o++ = alphabet[v >> 12 & 63];
		*o++ = i + 1 < n ? alphabet[v >> 6 & 63] : '=';
		*o++ = '=';
	}
	*o = '\0';
	return out;
}

static int
value(unsigned char c)
{
	const char *p = c != '\0' ? strchr(alphabet, c) : NULL;

	return p != NULL ? (int)(p - alphabet) : -1;
}

/* Decodes one group of 4 characters (the last may end in padding) to out;
 * returns the bytes written, or -1. */
static int
group(const char *in, bool last, unsigned char *out)
{
	int v[4], pad = 0;
	unsigned long w;

	for (int k = 0; k < 4; k++) {
		if (in[k] == '=' && last && k >= 2) {
			v[k] = 0;
			pad++;
		} else if (pad > 0 || (v[k] = value((unsigned char)in[k])) < 0)
			return -1;
	}
	w = (unsigned long)v[0] << 18 | (unsigned long)v[1] << 12 | (unsigned long)v[2] << 6 |
	    (unsigned long)v[3];
	out[0] = w >> 16 & 0xff;
	out[1] = w >> 8 & 0xff;
	out[2] = w & 0xff;
	return 3 - pad;
}

char *
base64_decode(const char *in, size_t *len)
{
	size_t n = strlen(in), o = 0;
	unsigned char *out;
	int k;

	if (n % 4 != 0)
		return NULL;
	out = xmalloc(n / 4 * 3 + 1);
	for (size_t i = 0; i < n; i += 4) {
		if ((k = group(in + i, i + 4 == n, out + o)) < 0) {
			explicit_bzero(out, n / 4 * 3 + 1);
			free(out);
			return NULL;
		}
		o += (size_t)k;
	}
	out[o] = '\0';
	*len = o;
	return (char *)out;
}

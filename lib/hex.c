#include "lib/hex.h"

void
hex_encode(const void *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *s = p;

	for (size_t i = 0; i < n; i++) {
		*out++ = digits[s[i] >> 4];
		*out++ = digits[s[i] & 15];
	}
	*out = '\0';
}

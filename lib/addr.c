#include "lib/addr.h"

#include <string.h>

bool
addr_valid(const char *a, size_t len)
{
	size_t at = 0, n_at = 0;

	if (len == 0 || len > ADDR_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)a[i];

		if (ch <= 0x20 || ch >= 0x7f || strchr("<>()[]\\,;:\"", ch) != NULL)
			return false;
		if (ch == '@') {
			at = i;
			n_at++;
		}
	}
	return n_at == 1 && at > 0 && at < len - 1;
}

bool
addr_ok(const char *a)
{
	return addr_valid(a, strlen(a));
}

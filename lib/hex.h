/* Lower-case hex of binary digests and random names. */
#ifndef POP3BRIDGE_HEX_H
#define POP3BRIDGE_HEX_H

#include <stddef.h>

/* Writes the 2 * n hex digits of p[0..n) and a NUL to out, which holds
 * at least 2 * n + 1 bytes. */
void hex_encode(const void *p, size_t n, char *out);

#endif

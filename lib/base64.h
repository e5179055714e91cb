/* Base64 (RFC 4648, section 4: the standard alphabet, with padding), as
 * SASL exchanges carry it. Both results may hold a credential: callers
 * wipe them (explicit_bzero) before freeing. */
#ifndef POP3BRIDGE_BASE64_H
#define POP3BRIDGE_BASE64_H

#include <stddef.h>

/* The NUL-terminated encoding of p[0..n), allocated. */
char *base64_encode(const void *p, size_t n);

/* Decodes the NUL-terminated in strictly: a length that is a multiple of
 * 4, only the alphabet, "=" padding only at the end. Returns the bytes
 * (allocated, NUL-terminated; they may hold NULs of their own) with *len
 * their count, or NULL when in is not such base64. "" decodes to "". */
char *base64_decode(const char *in, size_t *len);

#endif

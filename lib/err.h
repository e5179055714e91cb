/* Error messages for the `char **err` convention: a module that fails
 * returns its error code and, when the caller passed err (it may be
 * NULL), an allocated one-line message in *err that the caller frees.
 * Messages are never truncated; like lib/xmalloc.c, formatting never fails
 * visibly (out of memory exits). */
#ifndef POP3BRIDGE_ERR_H
#define POP3BRIDGE_ERR_H

#include <stdarg.h>

/* Sets *err to the formatted message; returns -1. */
int err_set(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The same with ": strerror(errno)" appended (errno as it was on entry).
 * Returns -1. */
int err_errno(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* For modules with their own error codes: sets *err, returns code. */
int err_code(char **err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets *err to "prefix: message" (just the message when prefix is NULL),
 * for sessions that name their peer in every error. Returns -1. */
int err_at(char **err, const char *prefix, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int err_vat(char **err, const char *prefix, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#endif

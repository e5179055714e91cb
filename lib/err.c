#include "lib/err.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lib/xmalloc.h"

/* *err = [prefix ": "] message [": " suffix]. */
static void
set_message(char **err, const char *prefix, const char *suffix, const char *fmt, va_list ap)
{
	char *msg;

	if (err == NULL)
		return;
	msg = xvasprintf(fmt, ap);
	*err = xasprintf("%s%s%s%s%s", prefix != NULL ? prefix : "",
	    prefix != NULL ? ": " : "", msg, suffix != NULL ? ": " : "",
	    suffix != NULL ? suffix : "");
	free(msg);
}

int
err_set(char **err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	set_message(err, NULL, NULL, fmt, ap);
	va_end(ap);
	return -1;
}

int
err_errno(char **err, const char *fmt, ...)
{
	const char *why = strerror(errno);
	va_list ap;

	va_start(ap, fmt);
	set_message(err, NULL, why, fmt, ap);
	va_end(ap);
	return -1;
}

int
err_code(char **err, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	set_message(err, NULL, NULL, fmt, ap);
	va_end(ap);
	return code;
}

int
err_at(char **err, const char *prefix, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	set_message(err, prefix, NULL, fmt, ap);
	va_end(ap);
	return -1;
}

int
err_vat(char **err, const char *prefix, const char *fmt, va_list ap)
{
	set_message(err, prefix, NULL, fmt, ap);
	return -1;
}

#include "lib/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sysexits.h>

#include <libetpan/libetpan.h>

static enum log_verbosity verbosity = LOG_NORMAL;
static int to_syslog;

void
log_init(enum log_verbosity v, int use_syslog)
{
	verbosity = v;
	to_syslog = use_syslog;
	if (to_syslog)
		openlog("pop3bridge", LOG_PID | LOG_NDELAY, LOG_MAIL);
	/* libetpan logs USER/PASS and SASL steps in clear (doc/DESIGN.md,
	 * libetpan trap 6): no logger of it is ever installed, and its debug
	 * file stays off. */
	mailstream_debug = 0;
	mailstream_logger = NULL;
	mailstream_logger_id = NULL;
}

void
log_settings(enum log_verbosity *v, int *use_syslog)
{
	*v = verbosity;
	*use_syslog = to_syslog;
}

static void
vlog(int prio, const char *fmt, va_list ap, int with_errno)
{
	int saved = errno;
	char msg[2048];

	vsnprintf(msg, sizeof msg, fmt, ap);
	if (to_syslog) {
		if (with_errno)
			syslog(prio, "%s: %s", msg, strerror(saved));
		else
			syslog(prio, "%s", msg);
		return;
	}
	if (with_errno)
		fprintf(stderr, "pop3bridge: %s: %s\n", msg, strerror(saved));
	else
		fprintf(stderr, "pop3bridge: %s\n", msg);
}

#define LOG_FN(name, prio, min, with_errno)		\
void							\
name(const char *fmt, ...)				\
{							\
	va_list ap;					\
	if (verbosity < (min))				\
		return;					\
	va_start(ap, fmt);				\
	vlog(prio, fmt, ap, with_errno);		\
	va_end(ap);					\
}

LOG_FN(log_warn, LOG_WARNING, LOG_QUIET, 1)
LOG_FN(log_warnx, LOG_WARNING, LOG_QUIET, 0)
LOG_FN(log_info, LOG_INFO, LOG_NORMAL, 0)
LOG_FN(log_debug, LOG_DEBUG, LOG_VERBOSE, 0)

/* Like LOG_FN, but whatever the verbosity, and the process ends. */
#define FATAL_FN(name, with_errno)			\
void							\
name(const char *fmt, ...)				\
{							\
	va_list ap;					\
	va_start(ap, fmt);				\
	vlog(LOG_CRIT, fmt, ap, with_errno);		\
	va_end(ap);					\
	exit(EX_SOFTWARE);				\
}

FATAL_FN(fatal, 1)
FATAL_FN(fatalx, 0)

/* Logging: stderr in the foreground, syslog for the daemon.
 *
 * Every message about an account names it. Never pass a password, token or
 * AUTH exchange to these functions: nothing here can filter them out. */
#ifndef POP3BRIDGE_LOG_H
#define POP3BRIDGE_LOG_H

enum log_verbosity { LOG_QUIET = -1, LOG_NORMAL = 0, LOG_VERBOSE = 1 };

/* Sets verbosity and destination; also disables every libetpan logger
 * (they would write credentials: doc/DESIGN.md, libetpan trap 6). Call
 * once, early. */
void log_init(enum log_verbosity v, int use_syslog);

/* What log_init set, for a process that starts a fresh image of itself
 * (the relay) and must log the same way. */
void log_settings(enum log_verbosity *v, int *use_syslog);

/* log_warn appends ": strerror(errno)"; the x variants do not. */
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Log and exit(EX_SOFTWARE): for broken invariants only, never for input. */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif

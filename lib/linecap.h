/* A bound on what a server may send through a libetpan stream.
 *
 * libetpan reads a reply line into memory until its CRLF, however long
 * (doc/DESIGN.md, libetpan trap 9): a server that never ends a line grows
 * our memory until the timeout, which never comes while it keeps sending.
 * linecap_install() puts a filter under a mailstream that passes bytes
 * through as they arrive but counts each line: a line longer than the cap
 * makes the read fail, as a lost connection would. A caller's check can
 * also refuse a whole line: it runs when the line is complete, and the
 * bytes read with its LF are then not handed on, so libetpan never parses
 * a refused line. Nothing else is held back: bytes pipelined behind a
 * reply stay visible to libetpan's own checks (the STARTTLS injection
 * test). The stream ending inside a line is an error too: libetpan would
 * parse the line it has as if it were whole.
 *
 * The filter forwards everything else (fd, timeout, certificate chain,
 * cancel) to the stream it wraps, which it owns; a STARTTLS that replaces
 * the low-level stream removes it, so install it again after one. */
#ifndef POP3BRIDGE_LINECAP_H
#define POP3BRIDGE_LINECAP_H

#include <stdbool.h>
#include <stddef.h>

#include <libetpan/libetpan.h>

/* What a check says besides yes or no: the line goes on (*more) after
 * `literal` bytes of literal data (IMAP "{N}", N may be 0); those pass
 * unchecked, are added to the line, and the check runs again, on the
 * whole line, at the next LF. */
struct linecap_more {
	bool more;
	size_t literal;
};

/* A line so far (up to and including an LF; not NUL-terminated, NUL
 * bytes possible): NULL to accept it, else a static reason to refuse it.
 * ctx is the caller's; m is zeroed before the call. */
typedef const char *linecap_check_fn(void *ctx, const char *line, size_t len,
    struct linecap_more *m);

/* Wraps s's low-level stream: lines of at most max bytes (literals
 * included), each passed to check (may be NULL) with ctx (not owned; it
 * must live as long as s). */
void linecap_install(mailstream *s, size_t max, linecap_check_fn *check, void *ctx);

/* Why the filter of s failed a read ("a reply line longer than N bytes",
 * or the check's reason), or NULL when it did not (or is not installed).
 * The filter may be s's low-level stream or the one under a deadline
 * guard (lib/dlstream.h) that is. */
const char *linecap_refused(mailstream *s);

#endif

/* Which IMAP store replies libetpan may parse.
 *
 * libetpan 1.9.4's response parser crashes or leaks on malformed input
 * (found by tests/fuzz/fuzz_imap_store.c: a PERMANENTFLAGS list whose
 * first item is not a flag, an empty CAPABILITY, broken greetings; most of
 * it fixed in libetpan after 1.9.4). The store uses a small part of IMAP
 * (greeting, CAPABILITY, LOGIN, LIST, CREATE, SUBSCRIBE, EXAMINE, UID
 * SEARCH, APPEND, LOGOUT), so every reply line is checked against a strict
 * grammar of what those commands get back (RFC 3501, 4315, 5530) before
 * libetpan sees it; anything else breaks the session, as a lost
 * connection would ("unparsable reply" is what it is). The check runs
 * under libetpan as a linecap_check_fn (lib/linecap.h), on each physical
 * line; a literal ("{N}" at the end of a line: only a LIST mailbox name
 * may be one, N at most IMAP_GUARD_LITERAL_MAX) is announced so that its
 * bytes pass unread and the line then goes on. */
#ifndef POP3BRIDGE_IMAP_GUARD_H
#define POP3BRIDGE_IMAP_GUARD_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/linecap.h"

#define IMAP_GUARD_LITERAL_MAX	65536

/* A session's guard: zero it before the greeting (the first line must
 * be "* OK" or "* PREAUTH": libetpan leaks a "* BYE" greeting). */
struct imap_guard {
	bool greeted;
	bool bye;		/* the greeting was a BYE (refused) */
};

/* A linecap_check_fn, ctx a struct imap_guard: line[0..len) is a reply
 * line so far, up to and including its LF (with the literals it announced
 * inside). NULL when it may go to libetpan (m says whether it goes on
 * after a literal), else why not. */
const char *imap_guard_line(void *ctx, const char *line, size_t len,
    struct linecap_more *m);

#endif

/* Deadline-aware libetpan streams: a low-level driver wrapped around a
 * mailstream's own, so that every read on it — ours (bridge/pop3_reader.c)
 * and libetpan's parsers' (IMAP, SMTP replies) alike — waits in slices of
 * at most DEADLINE_SLICE_MS and ends early at the pass deadline or on a
 * stop request (lib/deadline.h), without a single EINTR ever reaching the
 * code above: libetpan takes a failed read for a dead connection, which
 * is right only when we mean to abandon it.
 *
 * A slice is ended by SIGALRM from ITIMER_REAL, armed only around one
 * low-level read (which is how a wait inside the TLS layer, e.g. for the
 * rest of a record, is cut too). A process using this must not use
 * SIGALRM or ITIMER_REAL otherwise (the relay's relay_io.c does, and does
 * not use this). Writes are not sliced: each is bounded by the stream's
 * timeout, and none starts once a limit has passed. */
#ifndef POP3BRIDGE_DLSTREAM_H
#define POP3BRIDGE_DLSTREAM_H

#include <libetpan/libetpan.h>

#include "lib/deadline.h"

/* Wraps s's low-level stream. Call after connecting and again after every
 * STARTTLS (which replaces the low-level stream with a new one). The
 * per-read timeout stays what mailstream_low_set_timeout(
 * mailstream_get_low(s), t) sets (t seconds; 0: libetpan's
 * mailstream_network_delay): a read that gets no byte for that long fails.
 * Closing and freeing s close and free the wrapped stream. 0, or -1 when s
 * has no low-level stream. */
int dlstream_guard(mailstream *s);

/* An absolute deadline for every read and write on s from now on (NULL:
 * none), e.g. for a whole reply; copied. Only for a guarded s. */
void dlstream_set_deadline(mailstream *s, const struct deadline *d);

/* Why the last read or write on s failed: DEADLINE_OWN when its timeout
 * or s's deadline passed, DEADLINE_PASS or DEADLINE_STOP for the pass's
 * limits, DEADLINE_NONE for any other failure (the connection's). */
enum deadline_end dlstream_end(mailstream *s);

/* The low-level stream low wraps when it is this guard, else NULL: how a
 * filter installed under the guard (lib/linecap.h) finds itself. */
mailstream_low *dlstream_inner(mailstream_low *low);

#endif

/* The POP3 reply parsers: status lines, CAPA, LIST and UIDL lines, and
 * the checks of a whole listing. Nothing here trusts the server: every
 * line is capped, every number range-checked.
 *
 * Functions returning int return POP3_OK or a negative enum pop3_err
 * (POP3_EPROTO); on error *err (when err is not NULL) receives an
 * allocated one-line message without the "host:port: " prefix. */
#ifndef POP3BRIDGE_POP3_PARSE_H
#define POP3BRIDGE_POP3_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge/pop3.h"

#define POP3_LINE_MAX	4096		/* status/listing line, without CRLF */
#define POP3_LIST_MAX	1000000		/* lines in a UIDL or LIST response */
#define POP3_UIDL_MAX	70		/* RFC 1939 */

enum pop3_status { POP3_ST_OK, POP3_ST_ERR, POP3_ST_CONT };

/* Parses a status line. Returns 0 with *st and *text (pointing into line)
 * set, or -1 when the line is not a valid status line. */
int pop3_parse_status(const char *line, enum pop3_status *st, const char **text);

/* True when an -ERR text carries a response code that marks the failure as
 * temporary (RFC 2449/3206: IN-USE, LOGIN-DELAY, SYS/TEMP). */
bool pop3_parse_temporary(const char *text);

/* Which of those codes the -ERR text begins with; POP3_BUSY_NONE if none. */
enum pop3_busy pop3_parse_busy(const char *text);

/* Returns an allocated copy of server text fit for one log line: control
 * characters are dropped and the result is cut at 200 bytes. */
char *pop3_parse_clean(const char *text);

/* Resets c to "nothing announced" (login_delay and expire -1). */
void pop3_parse_caps_init(struct pop3_caps *c);

/* Applies one CAPA response line to c; unknown or malformed lines are
 * ignored (capabilities are optional by nature), except GNU Mailutils'
 * "EXPIRE0" and bare "600", read as EXPIRE 0 and LOGIN-DELAY 600. */
void pop3_parse_caps_line(struct pop3_caps *c, const char *line);

/* Parses a LIST scan line "num size [...]". */
int pop3_parse_list(const char *line, unsigned long *num, uint64_t *size, char **err);

/* Parses a UIDL line "num uid"; *uidl is allocated. The uid must be 1 to 70
 * characters of 0x21..0x7E. */
int pop3_parse_uidl(const char *line, unsigned long *num, char **uidl, char **err);

/* Parses a line of a UIDL listing into e->num, e->uidl (allocated) and
 * e->uidl_status. A line without a valid message number is POP3_EPROTO
 * (the listing cannot be merged); a uid pop3_parse_uidl() refuses is not:
 * e->uidl stays NULL with POP3_UIDL_INVALID, and that one message is
 * identified by its fingerprint. */
int pop3_parse_uidl_entry(const char *line, struct pop3_entry *e, char **err);

/* Checks and merges a listing. list (nlist entries from LIST, uidl NULL)
 * and uidls (nuidl entries from pop3_parse_uidl_entry, size unused) must
 * each have message numbers >= 1, strictly increasing, and consecutive
 * from 1 unless allow_gaps (messages deleted in this session); with
 * have_uidl both must name the same messages. A UIDL that names more than
 * one message is taken from all of them (POP3_UIDL_DUPLICATE, uidl NULL).
 * On success the UIDL strings and statuses move into list and the uidls
 * entries are left with uidl NULL; on POP3_EPROTO nothing moves. The
 * caller frees both arrays. */
int pop3_parse_listing(struct pop3_entry *list, size_t nlist, struct pop3_entry *uidls,
    size_t nuidl, bool have_uidl, bool allow_gaps, char **err);

#endif

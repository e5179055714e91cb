/* The POP3 reply parsers: status lines, CAPA, LIST and UIDL lines (the
 * checks of a whole listing are bridge/pop3_listing.h's). Nothing here trusts the server: every
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

/* pop3_parse_uidl() without the copy: *uid points into line, *len bytes. */
int pop3_parse_uidl_ref(const char *line, unsigned long *num, const char **uid, size_t *len,
    char **err);

/* Parses the "num " that starts a listing line: the rest of the line, or
 * NULL when there is no valid message number. */
const char *pop3_parse_num(const char *line, unsigned long *num);

/* POP3_EPROTO with "malformed <what> line \"<line, cleaned, cut>\"". */
int pop3_parse_bad_line(char **err, const char *what, const char *line);

#endif

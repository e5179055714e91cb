/* Parsers of other POP3 fetchers' state files, for `import-state`: the
 * UIDLs fetchmail, getmail6 or mpop recorded as seen for one account.
 * Pure functions over a buffer (no I/O, no globals): the fuzz target and
 * the unit tests call them as the command does.
 *
 * The formats, as each tool writes them (doc/DESIGN.md, Importing
 * another tool's state):
 *   fetchmail  .fetchids: one "USER@HOST UIDL" line per message, for every
 *              account fetchmail polls (USER may hold '@' and blanks).
 *   getmail    oldmail-SERVER-PORT-USER (the name says whose): one
 *              "UIDL NUL TIMESTAMP" line per message.
 *   mpop       uidls file: '#' comments at the top, then lists, each a
 *              " COUNT HOST USER" line and COUNT UIDL lines.
 * Entries of other accounts (fetchmail's and mpop's files are shared) are
 * counted and skipped; anything that does not parse refuses the file. */
#ifndef POP3BRIDGE_IMPORT_PARSE_H
#define POP3BRIDGE_IMPORT_PARSE_H

#include <stddef.h>

enum import_tool { IMPORT_FETCHMAIL, IMPORT_GETMAIL, IMPORT_MPOP };

/* The account whose UIDLs are wanted: its POP3 server as configured. */
struct import_who {
	const char *host;
	unsigned port;
	const char *user;
};

/* What a parse found. uidls (allocated, each string too) are the
 * account's UIDLs in file order, without repeats. other counts entries of
 * other accounts; other_line is the line of the first (0 none) and
 * other_name ("USER@HOST", allocated) whose it is. */
struct import_uidls {
	char **uidls;
	size_t n;
	size_t other;
	unsigned long other_line;
	char *other_name;
};

/* The tool named by name ("fetchmail", "getmail", "mpop"): 0, or -1 when
 * none is. */
int import_parse_tool(const char *name, enum import_tool *out);

/* Parses buf[0..len) as tool's state file for who. Returns 0 with *out
 * filled (free with import_uidls_free; n may be 0), or -1 with *err
 * allocated as "LINE: why" (the caller puts the file name in front). */
int import_parse(enum import_tool tool, const char *buf, size_t len,
    const struct import_who *who, struct import_uidls *out, char **err);

/* The file name getmail gives who's state: "oldmail-HOST-PORT-USER" with
 * each run of / : ; < > | replaced by '-'. Allocated. */
char *import_parse_getmail_name(const struct import_who *who);

/* True if s is a UIDL as RFC 1939 defines it: 1 to 70 characters in
 * 0x21..0x7E. */
int import_parse_uidl_ok(const char *s, size_t len);

void import_uidls_free(struct import_uidls *u);

#endif

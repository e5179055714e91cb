/* Modified UTF-7 (RFC 3501 5.1.3): the encoding of IMAP mailbox names, and
 * the one Dovecot uses for Maildir++ folder names on disk (".Entw&APw-rfe"
 * for "Entwürfe"). Shared by the Maildir and IMAP backends. */
#ifndef POP3BRIDGE_MUTF7_H
#define POP3BRIDGE_MUTF7_H

#include <stdbool.h>
#include <stddef.h>

/* True if s[0..n) is well-formed UTF-8: no overlong forms, no surrogates,
 * nothing above U+10FFFF, no truncated sequence. */
bool mutf7_utf8_valid(const char *s, size_t n);

/* Encodes the UTF-8 string utf8 as modified UTF-7: printable ASCII stands
 * for itself, "&" becomes "&-", everything else is UTF-16 in modified
 * BASE64 between "&" and "-". Returns 0 with *out allocated (the caller
 * frees it), or -1 when utf8 is not valid UTF-8 (*out untouched). */
int mutf7_encode(const char *utf8, char **out);

#endif

/* The one rule for an e-mail address pop3bridge carries (an account's
 * addresses, the relay's MAIL FROM and RCPT TO, `sendmail`'s envelope,
 * the upstream's MAIL and RCPT): strict, not lenient. */
#ifndef POP3BRIDGE_ADDR_H
#define POP3BRIDGE_ADDR_H

#include <stdbool.h>
#include <stddef.h>

#define ADDR_MAX	254	/* RFC 5321 4.5.3.1.3, less the angle brackets */

/* True when a[0..len) is local@domain: 1 to ADDR_MAX bytes of printable
 * ASCII, exactly one '@' with something on either side, and none of the
 * specials that could confuse a later protocol line or a header
 * ("<>()[]\,;:" and the double quote). Quoted local parts, address
 * literals, source routes and SMTPUTF8 are refused. The null sender ""
 * is not an address: callers that accept it test for it first. */
bool addr_valid(const char *a, size_t len);

/* addr_valid() of a NUL-terminated string. */
bool addr_ok(const char *a);

#endif

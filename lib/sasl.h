/* SASL in one place: the client's initial responses (POP3 AUTH, SMTP
 * AUTH, and a check of the IMAP LOGIN refusal), the rule for refusals
 * that echo a credential, and the server's parsing of PLAIN (the relay).
 * The encoding is lib/base64.c. Every response returned here holds a
 * credential: the caller wipes it (explicit_bzero) before freeing. */
#ifndef POP3BRIDGE_SASL_H
#define POP3BRIDGE_SASL_H

#include <stdbool.h>
#include <stddef.h>

enum sasl_mech { SASL_PLAIN, SASL_XOAUTH2, SASL_OAUTHBEARER };

/* The mechanism's name as AUTH takes it: "PLAIN", "XOAUTH2", "OAUTHBEARER". */
const char *sasl_name(enum sasl_mech mech);

/* The raw initial response of mech for user and secret, allocated, with
 * its length in *len:
 *   PLAIN (RFC 4616)  authzid NUL user NUL secret, authzid empty when NULL;
 *   XOAUTH2           "user=" user ^A "auth=Bearer " secret ^A ^A;
 *   OAUTHBEARER       (RFC 7628 section 3.1) "n,a=" user "," ^A
 *                     "auth=Bearer " secret ^A ^A, without the optional
 *                     host and port (sasl_oauthbearer64() adds them);
 *                     "," and "=" in user escaped as RFC 5801 wants.
 * For XOAUTH2 and OAUTHBEARER authzid must be NULL. */
char *sasl_response(enum sasl_mech mech, const char *authzid, const char *user,
    const char *secret, size_t *len);

/* The OAUTHBEARER initial response (RFC 7628 section 3.1) for user and
 * the OAuth 2.0 access token, allocated and NUL-terminated (it holds no
 * NUL of its own):
 *   "n,a=" user "," ^A "host=" host ^A "port=" port ^A "auth=Bearer " token ^A ^A
 * with "," and "=" in user escaped as "=2C" and "=3D" (RFC 5801); the
 * authorization identity a= is what Dovecot requires. port 0 leaves
 * port= out. */
char *sasl_oauthbearer(const char *user, const char *host, unsigned port,
    const char *token);

/* The same, base64-encoded and NUL-terminated, as it goes on the wire.
 * The raw form is wiped. Allocated. */
char *sasl_response64(enum sasl_mech mech, const char *user, const char *secret);

/* sasl_oauthbearer() base64-encoded, the raw form wiped. Allocated. */
char *sasl_oauthbearer64(const char *user, const char *host, unsigned port,
    const char *token);

/* The answer a client sends to an error challenge ("+ base64(JSON)", RFC
 * 7628 section 3.2.3) to get the server's final refusal: "AQ==" (a ^A)
 * for OAUTHBEARER, an empty line for XOAUTH2, "*" (cancel, RFC 5034) for
 * the others. Static. */
const char *sasl_error_answer(enum sasl_mech mech);

/* The "status" of an OAuth error challenge: the challenge's text (base64
 * of a JSON object such as {"status":"401","schemes":"bearer"}) decoded
 * and the string or number value of its "status" member returned,
 * allocated, cut at 64 printable ASCII bytes; NULL when there is none.
 * Only a status is ever taken from it: the rest is the server's and goes
 * to no log. */
char *sasl_oauth_status(const char *challenge64);

/* True when a server's text (a refusal, which some servers make by
 * echoing the command) holds the secret, or a SASL response built around
 * it (PLAIN with or without the authorization identity, XOAUTH2), in
 * clear or in base64: such a text is withheld from every message. */
bool sasl_repeats_secret(const char *text, const char *user, const char *secret);

/* A decoded PLAIN response split into its three parts (pointing into the
 * response; not NUL-terminated of their own except passwd). */
struct sasl_plain {
	const char *authzid, *authcid, *passwd;
	size_t authzid_len, authcid_len, passwd_len;
};

/* Splits v[0..len) ("authzid NUL authcid NUL passwd", v[len] being a
 * NUL): 0, or -1 when it does not have two NULs. */
int sasl_plain_parse(const char *v, size_t len, struct sasl_plain *out);

#endif

/* One SMTP submission session (RFC 5321, 6409) on a connected socket: the
 * relay's command state machine, run in a child process per connection
 * (doc/DESIGN.md, The relay protocol).
 * Only authenticated users (bridge/passwd.c) may submit, only as an address
 * of one of their accounts, and a message is answered 250 only after
 * it is durable in the queue (through the relay process's group commit,
 * else outbox_enqueue()). */
#ifndef POP3BRIDGE_RELAY_SESSION_H
#define POP3BRIDGE_RELAY_SESSION_H

#include <stdbool.h>
#include <sys/socket.h>

#include <gnutls/gnutls.h>

#include "conf/conf.h"

/* What every session shares, set up by the relay process. */
struct relay_session_ctx {
	const struct conf *c;
	gnutls_certificate_credentials_t cred;  /* NULL: no TLS offered */
	char hostname[256];                     /* for the greeting and Received: */
	int commit_fd;                          /* the session's group-commit channel
	                                           (bridge/relay_commit.h), -1 none */
	bool auth_blocked;                      /* AUTH from this peer refused for now
	                                           (bridge/relay_penalty.h) */
};

/* Serves the client on fd until QUIT, EOF, a timeout or a fatal error,
 * then closes fd. implicit_tls: handshake before the greeting. Returns
 * the number of failed AUTHs (the relay process counts them per address). */
unsigned relay_session_run(const struct relay_session_ctx *x, int fd, bool implicit_tls,
    const struct sockaddr *peer);

/* The account user may send as addr, or NULL (never an open relay). */
const struct conf_account *relay_session_sender_account(const struct conf *c,
    const char *user, const char *addr);

/* Parses "FROM:<addr> PARAMS" / "TO:<addr> PARAMS" after the verb: kw is
 * "FROM:" or "TO:". Returns the address (allocated; "" for <>) and sets
 * *params to the rest (pointing into arg), or NULL when malformed. */
char *relay_session_parse_path(const char *arg, const char *kw, const char **params);

#endif

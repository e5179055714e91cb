/* Shared by the relay session's files (relay_smtp.c: commands; relay_auth.c:
 * AUTH; relay_msg.c: DATA into the queue). Not for other modules. */
#ifndef POP3BRIDGE_RELAY_PRIV_H
#define POP3BRIDGE_RELAY_PRIV_H

#include <netinet/in.h>
#include <stdbool.h>

#include "bridge/passwd.h"
#include "bridge/relay_io.h"
#include "bridge/relay_smtp.h"

#define RELAY_LINE_MAX		1000    /* a command line with its CRLF (RFC 5321 4.5.3.1.4) */
#define RELAY_MAX_ERRORS	10      /* bad commands before we hang up */
#define RELAY_MAX_AUTH_FAILS	3       /* failed AUTHs before we hang up */
/* A session's absolute deadlines, in relay.timeout units (300 s: 10 min
 * to authenticate, 1 h in all; DATA alone may take 2 timeouts per read). */
#define RELAY_PREAUTH_TIMEOUTS	2
#define RELAY_SESSION_TIMEOUTS	12

struct sess {
	const struct relay_ctx *x;
	struct rio io;
	char peer[INET6_ADDRSTRLEN];
	bool loopback;
	char helo[256];                 /* "" until EHLO/HELO */
	bool esmtp;
	char *user;                     /* authenticated user, NULL before AUTH */
	struct passwd_db *pw;
	unsigned errors, auth_fails;
	bool quit;
	/* the transaction: MAIL sets acct and from, RCPT adds rcpts */
	const struct conf_account *acct;
	char *from;
	char **rcpts;
	size_t n_rcpts;
};

/* Replies with a client error and hangs up after too many of them. */
void sess_error(struct sess *s, const char *reply);
/* Forgets the transaction (RSET, EHLO, after DATA). */
void sess_reset_tx(struct sess *s);

void relay_cmd_auth(struct sess *s, char *arg);
void relay_cmd_data(struct sess *s, char *arg);

#endif

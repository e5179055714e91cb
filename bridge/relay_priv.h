/* Shared by the relay session's files (relay_session.c: commands; relay_auth.c:
 * AUTH; relay_msg.c: DATA into the queue). Not for other modules. */
#ifndef POP3BRIDGE_RELAY_PRIV_H
#define POP3BRIDGE_RELAY_PRIV_H

#include <netinet/in.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "bridge/passwd.h"
#include "bridge/relay_io.h"
#include "bridge/relay_session.h"

#define RELAY_LINE_MAX		1000    /* a command line with its CRLF (RFC 5321 4.5.3.1.4) */
#define RELAY_MAX_ERRORS	10      /* bad commands before we hang up */
#define RELAY_MAX_AUTH_FAILS	3       /* failed AUTHs before we hang up */
/* A session's absolute deadlines, in relay.timeout units (300 s: 10 min
 * to authenticate, 1 h in all; DATA alone may take 2 timeouts per read). */
#define RELAY_PREAUTH_TIMEOUTS	2
#define RELAY_SESSION_TIMEOUTS	12

struct relay_session {
	const struct relay_session_ctx *x;
	struct relay_io io;
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
void relay_session_error(struct relay_session *s, const char *reply);
/* Forgets the transaction (RSET, EHLO, after DATA). */
void relay_session_reset_tx(struct relay_session *s);

/* bridge/relay_auth.c: the AUTH command, and its policy: PLAIN/LOGIN only
 * over TLS or from a loopback peer (127.0.0.0/8, ::1,
 * ::ffff:127.0.0.0/104). */
void relay_auth_cmd(struct relay_session *s, char *arg);
bool relay_auth_allowed(bool tls, const struct sockaddr *peer);

/* bridge/relay_msg.c: the DATA command. */
void relay_msg_data(struct relay_session *s, char *arg);

#endif

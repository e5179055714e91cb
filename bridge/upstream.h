/* The upstream SMTP client (an account's smtp {} block) over libetpan's
 * mailsmtp: libetpan connects, upgrades (STARTTLS) and authenticates
 * with a password (SASL PLAIN/LOGIN); EHLO, AUTH with a bearer token
 * (XOAUTH2, OAUTHBEARER), MAIL, RCPT, DATA, RSET and QUIT are ours, so
 * that every reply code is kept, MAIL can carry BODY=8BITMIME,
 * and DATA streams the spool file with our own dot-stuffing
 * (doc/DESIGN.md, libetpan traps 7, 8, 11). Not to be confused with the
 * relay's server side (bridge/relay_session.c).
 *
 * Functions return UPSTREAM_OK (0) or a negative enum upstream_err, with
 * *err (when not NULL) an allocated one-line message that never holds a
 * secret. A command the server answered with a failure is UPSTREAM_OK:
 * its reply is in struct upstream_reply. After UPSTREAM_ENET or
 * UPSTREAM_EPROTO only upstream_close() is left. */
#ifndef POP3BRIDGE_UPSTREAM_H
#define POP3BRIDGE_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"

enum upstream_err {
	UPSTREAM_OK = 0,
	UPSTREAM_ENET = -1,     /* connect, read, write failed or timed out */
	UPSTREAM_ETLS = -2,     /* certificate refused, or STARTTLS required but missing */
	UPSTREAM_EAUTH = -3,    /* credentials refused, or no usable mechanism */
	UPSTREAM_EPROTO = -4,   /* malformed or over-long reply, refused greeting */
	UPSTREAM_ECONFIG = -5,  /* policy: plaintext password, unsafe value or address */
	UPSTREAM_ELOCAL = -6,   /* reading the message file */
};

/* The server's reply to one command: code (e.g. 250, 451, 550) and its
 * text, lines joined by " ", at most UPSTREAM_REPLY_MAX bytes. */
#define UPSTREAM_REPLY_MAX 1024
struct upstream_reply {
	int code;
	char text[UPSTREAM_REPLY_MAX];
};

struct upstream;

/* Connects to s->host:s->port per s->tls (implicit TLS, or STARTTLS which
 * is never skipped: a server without it is UPSTREAM_ETLS), verifies the
 * certificate before any credential (tls_verify), sends EHLO with our
 * address literal, and authenticates per s->auth when s->user is set
 * (auto: PLAIN if offered, else LOGIN; xoauth2 and oauthbearer: secret is
 * the access token, sent on the AUTH line when it fits in 512 octets, else
 * in the two-step form; a refused token's error challenge is answered so
 * that the final reply and the challenge's "status" make the error).
 * A refused login is UPSTREAM_EAUTH, whose message never holds the
 * secret. A secret over tls=none is refused unless s->allow_plaintext. */
int upstream_open(struct upstream **out, const struct conf_server *s, const char *secret,
    char **err);

/* Whether the server announced 8BITMIME. */
bool upstream_has_8bitmime(const struct upstream *sm);

/* False after UPSTREAM_ENET or UPSTREAM_EPROTO: only upstream_close() is
 * left. */
bool upstream_usable(const struct upstream *sm);

/* One message's transaction. The caller fills the first fields (borrowed)
 * and reads the replies; upstream_tx_clear() frees rcpt. */
struct upstream_tx {
	const char *from;               /* "" for the null sender */
	uint64_t size;                  /* for SIZE=, 0: not sent */
	char *const *rcpts;
	size_t n_rcpts;
	int fd;                         /* the message, CRLF line endings */
	bool eightbit;                  /* out: the file has 8-bit bytes (BODY=8BITMIME
	                                   was asked for when the server offers it) */
	struct upstream_reply mail;     /* out: code 0 when not sent */
	struct upstream_reply *rcpt;    /* out: one per recipient, code 0 when not sent */
	struct upstream_reply data;     /* out: DATA's refusal (4xx, 5xx), else the
	                                   final reply after the body; code 0: none */
	bool delivered;                 /* out: the final reply was 2xx: every
	                                   recipient whose RCPT got 2xx has it */
};

/* MAIL FROM (SIZE=, BODY=8BITMIME when the file has 8-bit bytes and the
 * server offers it), RCPT TO per recipient, DATA, the file from its start
 * dot-stuffed and ended by CRLF "." CRLF (a final CRLF is not doubled),
 * and the final reply. With PIPELINING (RFC 2920) the commands go in one
 * write (at most 64 at a time) and a DATA the server accepts although MAIL
 * or every RCPT was refused gets a lone "."; without it they go one by
 * one, with no RCPT after a refused MAIL and no DATA without a recipient.
 * A transaction left open is RSET before the next one on this session, so
 * one session carries many messages. A reply to DATA other than 354 or a
 * refusal is UPSTREAM_EPROTO (no body is sent: a hostile server cannot
 * have recipients marked delivered without the message). Refused before
 * anything is sent: an address lib/addr.c refuses (UPSTREAM_ECONFIG), a
 * file holding a bare CR or LF (UPSTREAM_ELOCAL). */
int upstream_send(struct upstream *sm, struct upstream_tx *t, char **err);
void upstream_tx_clear(struct upstream_tx *t);

/* QUIT (when the session is usable) and closes; frees sm. */
void upstream_close(struct upstream *sm);

#endif

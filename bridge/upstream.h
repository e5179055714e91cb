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

/* MAIL FROM:<from> with SIZE=size (when announced) and BODY=8BITMIME when
 * eightbit and announced. An address (from may be "", the null sender)
 * that lib/addr.c refuses is UPSTREAM_ECONFIG (nothing sent). */
int upstream_mail(struct upstream *sm, const char *from, uint64_t size, bool eightbit,
    struct upstream_reply *r, char **err);
int upstream_rcpt(struct upstream *sm, const char *to, struct upstream_reply *r, char **err);

/* DATA, then the file at fd (CRLF line endings) from its start, dot-
 * stuffed, ending with CRLF "." CRLF (a final CRLF is not doubled), then
 * the final reply in r. A 354 missing: r holds the refusal when it is a
 * 4xx/5xx, any other reply is UPSTREAM_EPROTO. A file holding a bare CR or
 * bare LF is not sent (UPSTREAM_ELOCAL, after RSET). */
int upstream_data(struct upstream *sm, int fd, struct upstream_reply *r, char **err);

int upstream_rset(struct upstream *sm, char **err);

/* QUIT (when the session is usable) and closes; frees sm. */
void upstream_close(struct upstream *sm);

#endif

/* The upstream SMTP client (an account's smtp {} block) over libetpan's
 * mailsmtp: libetpan connects, upgrades (STARTTLS) and authenticates
 * (SASL PLAIN/LOGIN, XOAUTH2); EHLO, MAIL, RCPT, DATA, RSET and QUIT are
 * ours, so that every reply code is kept, MAIL can carry BODY=8BITMIME,
 * and DATA streams the spool file with our own dot-stuffing (LIBETPAN.md
 * traps 7, 8, 11).
 *
 * Functions return SMTP_OK (0) or a negative enum smtp_err, with *err
 * (when not NULL) an allocated one-line message that never holds a
 * secret. A command the server answered with a failure is SMTP_OK: its
 * reply is in struct smtp_reply. After SMTP_ENET or SMTP_EPROTO only
 * smtp_close() is left. */
#ifndef POP3BRIDGE_SMTP_H
#define POP3BRIDGE_SMTP_H

#include <stdbool.h>
#include <stdint.h>

#include "conf/conf.h"

enum smtp_err {
	SMTP_OK = 0,
	SMTP_ENET = -1,     /* connect, read, write failed or timed out */
	SMTP_ETLS = -2,     /* certificate refused, or STARTTLS required but missing */
	SMTP_EAUTH = -3,    /* credentials refused, or no usable mechanism */
	SMTP_EPROTO = -4,   /* malformed or over-long reply, refused greeting */
	SMTP_ECONFIG = -5,  /* policy: plaintext password, unsafe value or address */
	SMTP_ELOCAL = -6,   /* reading the message file */
};

/* The server's reply to one command: code (e.g. 250, 451, 550) and its
 * text, lines joined by " ", at most SMTP_REPLY_MAX bytes. */
#define SMTP_REPLY_MAX 1024
struct smtp_reply {
	int code;
	char text[SMTP_REPLY_MAX];
};

struct smtp;

/* Connects to s->host:s->port per s->tls (implicit TLS, or STARTTLS which
 * is never skipped: a server without it is SMTP_ETLS), verifies the
 * certificate before any credential (tls_verify), sends EHLO with our
 * address literal, and authenticates per s->auth when s->user is set
 * (auto: PLAIN if offered, else LOGIN; xoauth2: secret is the token).
 * A password over tls=none is refused unless s->allow_plaintext. */
int smtp_open(struct smtp **out, const struct conf_server *s, const char *secret,
    char **err);

/* Whether the server announced 8BITMIME. */
bool smtp_has_8bitmime(const struct smtp *sm);

/* MAIL FROM:<from> with SIZE=size (when announced) and BODY=8BITMIME when
 * eightbit and announced. An address (from may be "", the null sender)
 * that lib/addr.c refuses is SMTP_ECONFIG (nothing sent). */
int smtp_mail(struct smtp *sm, const char *from, uint64_t size, bool eightbit,
    struct smtp_reply *r, char **err);
int smtp_rcpt(struct smtp *sm, const char *to, struct smtp_reply *r, char **err);

/* DATA, then the file at fd (CRLF line endings) from its start, dot-
 * stuffed, ending with CRLF "." CRLF (a final CRLF is not doubled), then
 * the final reply in r. A 354 missing: r holds the refusal when it is a
 * 4xx/5xx, any other reply is SMTP_EPROTO. A file holding a bare CR or
 * bare LF is not sent (SMTP_ELOCAL, after RSET). */
int smtp_data(struct smtp *sm, int fd, struct smtp_reply *r, char **err);

int smtp_rset(struct smtp *sm, char **err);

/* QUIT (when the session is usable) and closes; frees sm. */
void smtp_close(struct smtp *sm);

#endif

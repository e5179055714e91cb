/* A POP3 client session. libetpan connects (plain, STLS, POP3S); every
 * command is spoken by our own bounded parser over its mailstream (see
 * doc/DESIGN.md, libetpan traps 2-5): streaming RETR, pipelining,
 * deadlines, APOP.
 *
 * Every function returning int returns POP3_OK (0) or a negative
 * enum pop3_err; on error *err (when err is not NULL) receives an allocated
 * one-line message that never contains a secret. After POP3_ENET,
 * POP3_EPROTO, POP3_EDEADLINE or POP3_ESTOP the session is unusable: only
 * pop3_abort() is left. */
#ifndef POP3BRIDGE_POP3_H
#define POP3BRIDGE_POP3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"

enum pop3_err {
	POP3_OK = 0,
	POP3_ENET = -1,     /* connect, read, write failed or timed out: retry later */
	POP3_ETLS = -2,     /* certificate refused, or STLS required but missing */
	POP3_EAUTH = -3,    /* credentials refused */
	POP3_EPROTO = -4,   /* malformed or over-long reply */
	POP3_ESERVER = -5,  /* -ERR to a command (session still usable) */
	POP3_ELOCAL = -6,   /* local I/O (writing the temp file) */
	POP3_ECONFIG = -7,  /* policy: plaintext password refused, unsafe value, no usable auth */
	POP3_EDEADLINE = -8,/* a response or the pass ran past its deadline: retry later */
	POP3_ESTOP = -9,    /* a stop was requested while waiting (lib/deadline.h) */
	POP3_ETOOBIG = -10, /* RETR brought more than its bound: read to its end and
	                       dropped (session still usable) */
};

struct pop3_caps {
	bool capa;          /* the server answered CAPA */
	bool uidl, top, user, pipelining, stls, sasl_plain, sasl_xoauth2,
	    sasl_oauthbearer, utf8, lang;
	long login_delay;   /* seconds, -1 when not announced */
	long expire;        /* days, -1 when not announced, LONG_MAX for NEVER */
};

/* What the UIDL listing said about one message. Only POP3_UIDL_OK gives a
 * usable uidl; the others are identified by their fingerprint instead
 * (bridge/sync.c). Stored in one byte (bridge/pop3_listing.h). */
enum pop3_uidl_status {
	POP3_UIDL_NONE = 0,     /* no UIDL listing (the server has none) */
	POP3_UIDL_OK,
	POP3_UIDL_INVALID,      /* empty, longer than 70, or a byte outside 0x21-0x7E */
	POP3_UIDL_DUPLICATE,    /* the same UIDL names another message too */
};

/* One message of a listing, as pop3_listing_entry() puts it together. */
struct pop3_entry {
	unsigned long num;  /* message number in this session */
	uint64_t size;      /* octets, from LIST */
	const char *uidl;   /* from UIDL; NULL unless uidl_status is POP3_UIDL_OK */
	enum pop3_uidl_status uidl_status;
};

struct pop3_listing;

enum pop3_eol { POP3_EOL_LF, POP3_EOL_CRLF };

/* How far pop3_retr() reads a message with bound m to keep the session
 * usable: up to three times m, plus 64 MiB; beyond, it gives up. */
#define POP3_DRAIN_MAX(m) ((m) > (UINT64_MAX - ((uint64_t)64 << 20)) / 3 ? 0 : \
	(m) * 3 + ((uint64_t)64 << 20))

/* The header block is the lines up to and including the first empty line
 * (all lines when there is none). header_sha256 hashes it with CRLF line
 * endings, exactly as pop3_top_hash() does from TOP n 0, so that a fetched
 * message and a listed one compare (the UIDL-reset fingerprint);
 * body_sha256 hashes what follows it as written (after EOL conversion). */
struct pop3_retr {
	uint64_t octets;         /* message octets as sent (CRLF, dot-unstuffed) */
	uint64_t written;        /* bytes written to the file (after EOL conversion) */
	unsigned char sha256[32];/* of the bytes written */
	unsigned char header_sha256[32];
	unsigned char body_sha256[32];
	char *header;            /* the header block as received (CRLF), at most
	                            POP3_HEADER_MAX bytes; allocated, the caller
	                            frees it */
	size_t header_len;
};

/* The RFC 2449/3206 response codes of a refused login that mean "not
 * now" rather than "wrong credentials". */
enum pop3_busy {
	POP3_BUSY_NONE = 0,
	POP3_BUSY_IN_USE,       /* [IN-USE]: another session holds the maildrop */
	POP3_BUSY_LOGIN_DELAY,  /* [LOGIN-DELAY]: logged in too recently */
	POP3_BUSY_SYS_TEMP,     /* [SYS/TEMP]: the server's own trouble */
};

/* What pop3_open() tells about the login, success or not. */
struct pop3_login {
	const char *mechanism;  /* the one that logged in ("USER", "APOP", "PLAIN",
	                           "XOAUTH2", "OAUTHBEARER"; static), NULL if none */
	char *refused;          /* auth = auto: the mechanisms refused before it,
	                           "APOP: -ERR ...; ..." (allocated), NULL if none */
	enum pop3_busy busy;    /* a temporary refusal (pop3_open gave POP3_ENET) */
	long login_delay;       /* LOGIN-DELAY announced before login, -1 none */
	bool utf8;              /* UTF8 (RFC 6856) is on for this session */
	char *utf8_refused;     /* the server announced UTF8 and refused it */
	bool lang;              /* LANG en (RFC 6856) accepted: replies in English */
};
void pop3_login_free(struct pop3_login *l);

struct pop3;

/* Connects to s->host:s->port per s->tls, verifies the certificate (before
 * any credential; STLS missing when tls=starttls is POP3_ETLS, never a
 * fallback), reads CAPA (re-read after STLS), authenticates with password
 * (may be NULL only for no-password setups; the bearer token for xoauth2
 * and oauthbearer) per s->auth, re-reads CAPA (the one after login is
 * authoritative, RFC 2449), turns UTF8 on when it is announced and asks
 * for English replies (LANG en) when LANG is.
 *   auto: the mechanisms the server offers, in turn until one logs in:
 *   APOP first over tls=none (it keeps the password itself off the wire),
 *   then SASL PLAIN, USER/PASS, and APOP last over TLS. A refusal moves on
 *   to the next (a server may have no APOP secret for a user); one that
 *   means "not now" ([IN-USE], [LOGIN-DELAY], [SYS/TEMP]) stops at once:
 *   POP3_ENET with login->busy set. All refused: POP3_EAUTH naming each.
 *   OAuth mechanisms only when s->auth names one. A token the server
 *   refuses gets its error challenge answered (sasl_error_answer) and the
 *   challenge's "status" named in *err; never the token.
 * A password over tls=none is refused (POP3_ECONFIG) unless
 * s->allow_plaintext. CR, LF or NUL in the user or password is
 * POP3_ECONFIG. s->timeout bounds every protocol step, and with
 * DEADLINE_MIN_RATE every multi-line response (bridge/pop3_reader.h); the
 * pass deadline and a stop request end any wait (lib/deadline.h). On
 * success *out is the session. login (may be NULL) is filled in every
 * case; free it with pop3_login_free. */
int pop3_open(struct pop3 **out, const struct conf_server *s, const char *password,
    struct pop3_login *login, char **err);

const struct pop3_caps *pop3_caps(const struct pop3 *p);

/* The mailbox listing into ls (bridge/pop3_listing.h; what it held is
 * freed first, and it is empty after an error), in server order: STAT
 * (its count sizes the arrays once) and UIDL, pipelined when announced,
 * checked (RFC 1939 numbering; duplicate UIDLs marked). No size is
 * read: pop3_sizes() asks for those a pass needs, so a poll that finds
 * nothing new costs one UIDL. A -ERR to UIDL from a server whose CAPA
 * announces UIDL is POP3_ESERVER (a temporary failure: deriving ids now
 * would import everything again); otherwise it means "no UIDL": the whole
 * LIST is read, every entry is POP3_UIDL_NONE with its size, and
 * pop3_uidl_refused() returns the server's text. */
int pop3_scan(struct pop3 *p, struct pop3_listing *ls, char **err);

/* Makes the LIST sizes of entries idx[0..k) of ls (from pop3_scan on this
 * session, any order, repeats allowed) known: "LIST n" for each (pipelined
 * when possible), or one whole LIST when that is cheaper (many of them,
 * or a server without PIPELINING), which also checks that LIST and UIDL
 * name the same messages. A server whose LIST n names another message, or
 * refuses one UIDL listed, is POP3_EPROTO. */
int pop3_sizes(struct pop3 *p, struct pop3_listing *ls, const size_t *idx, size_t k,
    char **err);

/* The -ERR text the last pop3_scan() got to UIDL, NULL when UIDL worked
 * (or was not refused). Owned by the session. */
const char *pop3_uidl_refused(const struct pop3 *p);

/* The messages the server may count as retrieved (RFC 2449 EXPIRE): the
 * numbers whose RETR or TOP got +OK in this session, in that order (a
 * number may repeat). Returns their count; *nums is owned by the session.
 * A pipelined RETR whose answer was never read is not listed: the session
 * is then broken and ends without QUIT anyway. */
size_t pop3_retrieved(const struct pop3 *p, const unsigned long **nums);

/* SHA-256 of the header block of message num (TOP num 0), for servers
 * without UIDL and for the UIDL-reset guard: the same bytes as
 * pop3_retr()'s header_sha256 of that message. */
int pop3_top_hash(struct pop3 *p, unsigned long num, unsigned char sha256[32], char **err);

/* Announces the RETRs of a batch: messages nums[0..n), sizes[i] the LIST
 * size of nums[i] (copied). When the server has PIPELINING they are sent
 * now in one write; otherwise pop3_retr() sends each in turn. The batch
 * must then be read with pop3_retr() in the same order. */
int pop3_retr_pipeline(struct pop3 *p, const unsigned long *nums, const uint64_t *sizes,
    size_t n, char **err);

/* Reads message num (sending RETR unless pipelined) into fd, streaming
 * line by line: memory does not grow with message size, NUL bytes are kept,
 * line endings become eol. A -ERR is POP3_ESERVER (session usable). More
 * than max_octets octets (0: no limit) is POP3_ETOOBIG: the rest is read
 * and dropped, the session stays usable, what fd got is incomplete; a
 * message going on past POP3_DRAIN_MAX(max_octets) is POP3_EPROTO. The
 * whole reply must arrive within the timeout plus listed (its LIST size)
 * at DEADLINE_MIN_RATE, else POP3_EDEADLINE. */
int pop3_retr(struct pop3 *p, unsigned long num, uint64_t listed, int fd, enum pop3_eol eol,
    uint64_t max_octets, struct pop3_retr *res, char **err);

/* The seconds the last multi-line response was allowed (RETR: timeout +
 * LIST size at DEADLINE_MIN_RATE), for the message after POP3_EDEADLINE. */
unsigned pop3_deadline(const struct pop3 *p);

/* Marks messages for deletion (DELE, pipelined when possible). They are
 * removed only by a successful pop3_quit(). */
int pop3_dele(struct pop3 *p, const unsigned long *nums, size_t n, char **err);

/* Sends QUIT and returns its real result (POP3_ESERVER on -ERR: the server
 * did not commit the deletions). Frees p in every case. */
int pop3_quit(struct pop3 *p, char **err);

/* Closes the connection without QUIT (no deletion is committed); frees p. */
void pop3_abort(struct pop3 *p);

#endif

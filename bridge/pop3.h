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
};

struct pop3_caps {
	bool capa;          /* the server answered CAPA */
	bool uidl, top, user, pipelining, stls, sasl_plain, sasl_xoauth2;
	long login_delay;   /* seconds, -1 when not announced */
	long expire;        /* days, -1 when not announced, LONG_MAX for NEVER */
};

struct pop3_entry {
	unsigned long num;  /* message number in this session */
	uint64_t size;      /* octets, from LIST */
	char *uidl;         /* from UIDL, NULL when the server has no UIDL */
};

enum pop3_eol { POP3_EOL_LF, POP3_EOL_CRLF };

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

struct pop3;

/* Connects to s->host:s->port per s->tls, verifies the certificate (before
 * any credential; STLS missing when tls=starttls is POP3_ETLS, never a
 * fallback), reads CAPA (re-read after STLS), authenticates with password
 * (may be NULL only for no-password setups) per s->auth:
 *   auto: SASL PLAIN if announced, else USER/PASS, else APOP;
 *   apop is preferred only when tls=none. A password over tls=none is
 *   refused (POP3_ECONFIG) unless s->allow_plaintext.
 * CR, LF or NUL in the user or password is POP3_ECONFIG. s->timeout bounds
 * every protocol step, and with DEADLINE_MIN_RATE every multi-line
 * response (bridge/pop3_reader.h); the pass deadline and a stop request end any
 * wait (lib/deadline.h). On success *out is the session. */
int pop3_open(struct pop3 **out, const struct conf_server *s, const char *password, char **err);

const struct pop3_caps *pop3_caps(const struct pop3 *p);

/* The mailbox listing: LIST merged with UIDL (when the server has it).
 * *entries is allocated (free with pop3_entries_free), in server order. */
int pop3_scan(struct pop3 *p, struct pop3_entry **entries, size_t *n, char **err);
void pop3_entries_free(struct pop3_entry *entries, size_t n);

/* SHA-256 of the header block of message num (TOP num 0), for servers
 * without UIDL and for the UIDL-reset guard: the same bytes as
 * pop3_retr()'s header_sha256 of that message. */
int pop3_top_hash(struct pop3 *p, unsigned long num, unsigned char sha256[32], char **err);

/* Announces the RETRs of a batch. When the server has PIPELINING they are
 * sent now in one write; otherwise pop3_retr() sends each in turn. The
 * batch must then be read with pop3_retr() in the same order. */
int pop3_retr_pipeline(struct pop3 *p, const unsigned long *nums, size_t n, char **err);

/* Reads message num (sending RETR unless pipelined) into fd, streaming
 * line by line: memory does not grow with message size, NUL bytes are kept,
 * line endings become eol. More than max_octets octets (0: no limit) is
 * POP3_EPROTO. The whole reply must arrive within the timeout plus its
 * LIST size (from pop3_scan) at DEADLINE_MIN_RATE, else POP3_EDEADLINE. */
int pop3_retr(struct pop3 *p, unsigned long num, int fd, enum pop3_eol eol,
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

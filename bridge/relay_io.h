/* The relay's connection I/O: one client socket, plaintext or GnuTLS,
 * with an input buffer (so that pipelined commands are read in order and
 * bytes pipelined behind STARTTLS can be thrown away) and an output buffer
 * that is flushed before the session waits for input (RFC 2920: replies to
 * a pipelined group go out together). Timeouts are socket timeouts: a
 * read or write that waits longer fails the session; rio_deadline() bounds
 * the whole session. */
#ifndef POP3BRIDGE_RELAY_IO_H
#define POP3BRIDGE_RELAY_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <gnutls/gnutls.h>

#define RIO_INBUF	16384
#define RIO_OUTBUF	4096

struct rio {
	int fd;
	gnutls_session_t tls;           /* NULL: plaintext */
	char in[RIO_INBUF];
	size_t in_off, in_len;          /* unread input: in[in_off .. in_len) */
	char out[RIO_OUTBUF];
	size_t out_len;
	bool dead;                      /* EOF, error or timeout: stop talking */
	bool write_cut;                 /* a write was cut by the deadline */
};

/* The session's absolute deadline (per-read timeouts alone let a client
 * that drips a byte at a time hold a session forever): secs from now,
 * replacing any earlier one. When it passes (SIGALRM), every read or
 * write under way or to come fails and the session is dead. One session
 * per process. */
void rio_deadline(unsigned secs);
/* True when the deadline has passed. */
bool rio_expired(void);
/* After the deadline: sends reply (e.g. "421 ...") when the stream is still
 * in a clean state, within a few seconds, and leaves the session dead. */
void rio_expire(struct rio *r, const char *reply);

void rio_init(struct rio *r, int fd);
/* Sets the socket's read and write timeouts. */
void rio_timeout(struct rio *r, unsigned secs);

/* Makes unread input available: returns the bytes at r->in + r->in_off
 * (reading from the peer only when none are buffered, after flushing the
 * replies), 0 when the session is dead. */
size_t rio_fill(struct rio *r);

/* Reads one line ending in LF into buf (NUL-terminated, without the CRLF
 * or LF). Returns its length, RIO_TOOLONG when it had more than max - 1
 * bytes (the rest of the line is read and dropped), RIO_DEAD at EOF, on an
 * error or a timeout. */
#define RIO_TOOLONG	(-2)
#define RIO_DEAD	(-1)
ssize_t rio_getline(struct rio *r, char *buf, size_t max);

/* Queues a reply line (CRLF is added); flushes when the buffer is full. */
void rio_reply(struct rio *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Writes out what is queued: 0, or -1 when the session is dead. */
int rio_flush(struct rio *r);

/* True when the client sent more than we have read (used to refuse input
 * pipelined behind STARTTLS). */
bool rio_pending(const struct rio *r);

/* Starts TLS as the server on the connection: discards every buffered
 * input byte first (no command injection across the upgrade), then does
 * the handshake. 0, or -1 (*err allocated) with the session dead. */
int rio_starttls(struct rio *r, gnutls_certificate_credentials_t cred, char **err);

/* Says goodbye to TLS if on, closes the socket. */
void rio_close(struct rio *r);

#endif

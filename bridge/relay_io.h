/* The relay's connection I/O: one client socket, plaintext or GnuTLS,
 * with an input buffer (so that pipelined commands are read in order and
 * bytes pipelined behind STARTTLS can be thrown away) and an output buffer
 * that is flushed before the session waits for input (RFC 2920: replies to
 * a pipelined group go out together). Timeouts are socket timeouts: a
 * read or write that waits longer fails the session; relay_io_deadline() bounds
 * the whole session. */
#ifndef POP3BRIDGE_RELAY_IO_H
#define POP3BRIDGE_RELAY_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <gnutls/gnutls.h>

#define RELAY_IO_INBUF	16384
#define RELAY_IO_OUTBUF	4096

struct relay_io {
	int fd;
	gnutls_session_t tls;           /* NULL: plaintext */
	char in[RELAY_IO_INBUF];
	size_t in_off, in_len;          /* unread input: in[in_off .. in_len) */
	char out[RELAY_IO_OUTBUF];
	size_t out_len;
	bool dead;                      /* EOF, error or timeout: stop talking */
	bool write_cut;                 /* a write was cut by the deadline */
};

/* The session's absolute deadline (per-read timeouts alone let a client
 * that drips a byte at a time hold a session forever): secs from now,
 * replacing any earlier one. When it passes (SIGALRM), every read or
 * write under way or to come fails and the session is dead. One session
 * per process. */
void relay_io_deadline(unsigned secs);
/* True when the deadline has passed. */
bool relay_io_expired(void);
/* After the deadline: sends reply (e.g. "421 ...") when the stream is still
 * in a clean state, within a few seconds, and leaves the session dead. */
void relay_io_expire(struct relay_io *r, const char *reply);

void relay_io_init(struct relay_io *r, int fd);
/* Sets the socket's read and write timeouts. */
void relay_io_timeout(struct relay_io *r, unsigned secs);

/* Makes unread input available: returns the bytes at r->in + r->in_off
 * (reading from the peer only when none are buffered, after flushing the
 * replies), 0 when the session is dead. */
size_t relay_io_fill(struct relay_io *r);

/* Reads one line ending in LF into buf (NUL-terminated, without the CRLF
 * or LF). Returns its length, RELAY_IO_TOOLONG when it had more than max - 1
 * bytes (the rest of the line is read and dropped), RELAY_IO_DEAD at EOF, on an
 * error or a timeout. */
#define RELAY_IO_TOOLONG	(-2)
#define RELAY_IO_DEAD	(-1)
ssize_t relay_io_getline(struct relay_io *r, char *buf, size_t max);

/* Queues a reply line (CRLF is added); flushes when the buffer is full. */
void relay_io_reply(struct relay_io *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Writes out what is queued: 0, or -1 when the session is dead. */
int relay_io_flush(struct relay_io *r);

/* True when the client sent more than we have read (used to refuse input
 * pipelined behind STARTTLS). */
bool relay_io_pending(const struct relay_io *r);

/* Starts TLS as the server on the connection: discards every buffered
 * input byte first (no command injection across the upgrade), then does
 * the handshake. 0, or -1 (*err allocated) with the session dead. */
int relay_io_starttls(struct relay_io *r, gnutls_certificate_credentials_t cred, char **err);

/* Says goodbye to TLS if on, closes the socket. */
void relay_io_close(struct relay_io *r);

#endif

/* TLS policy shared by every client (POP3, IMAP, SMTP): libetpan's GnuTLS
 * build does no certificate or host-name checks and sends no SNI, so each
 * connection sets SNI through tls_sni_callback (tls_stream_open() and
 * tls_stream_starttls() do it for our own streams, IMAP passes it to
 * libetpan's *_with_callback connect) and calls tls_verify() after the
 * handshake, before any credential. */
#ifndef POP3BRIDGE_TLS_H
#define POP3BRIDGE_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <libetpan/libetpan.h>

/* libetpan connect callback: sets SNI to data (a const char * host name).
 * Does nothing for IP literals, as RFC 6066 requires. */
void tls_sni_callback(struct mailstream_ssl_context *ctx, void *data);

/* Wraps the connected socket fd in a libetpan stream with a chunk-byte
 * buffer whose reads and writes time out after timeout seconds: TLS from
 * the first byte (SNI for host, handshake bounded by timeout) when
 * implicit_tls, else plain. Returns the stream, or NULL when the handshake
 * failed (fd is closed then). Dies when out of memory. */
mailstream *tls_stream_open(int fd, bool implicit_tls, const char *host,
    unsigned timeout, size_t chunk);

/* STARTTLS's switch on the plain stream s: a TLS layer (SNI for host,
 * handshake bounded by timeout) replaces the plain one on the same socket.
 * The caller has checked that no plaintext byte is left buffered (those
 * could have been injected, CVE-2020-15953), and calls tls_verify() next.
 * 0, or -1 when the handshake failed. */
int tls_stream_starttls(mailstream *s, const char *host, unsigned timeout);

/* Verifies the peer certificate chain of the TLS stream s against the
 * system trust store plus ca_file (NULL or "": none) and the host name (or IP
 * address) host, for the TLS server purpose. Returns 0 when trusted, else
 * -1 with *err allocated ("certificate for HOST not trusted: reason"). */
int tls_verify(mailstream *s, const char *host, const char *ca_file, char **err);

#endif

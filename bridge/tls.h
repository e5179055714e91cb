/* TLS policy shared by every client (POP3, IMAP, SMTP): libetpan's GnuTLS
 * build does no certificate or host-name checks and sends no SNI, so each
 * connection passes tls_sni_callback to libetpan's *_with_callback connect
 * and calls tls_verify() after the handshake, before any credential. */
#ifndef POP3BRIDGE_TLS_H
#define POP3BRIDGE_TLS_H

#include <libetpan/libetpan.h>

/* libetpan connect callback: sets SNI to data (a const char * host name).
 * Does nothing for IP literals, as RFC 6066 requires. */
void tls_sni_callback(struct mailstream_ssl_context *ctx, void *data);

/* Verifies the peer certificate chain of the TLS stream s against the
 * system trust store plus ca_file (NULL: none) and the host name (or IP
 * address) host, for the TLS server purpose. Returns 0 when trusted, else
 * -1 with *err allocated ("certificate for HOST not trusted: reason"). */
int tls_verify(mailstream *s, const char *host, const char *ca_file, char **err);

#endif

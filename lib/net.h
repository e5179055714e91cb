/* TCP connections for every client (POP3, SMTP): resolve, then connect
 * each address in turn, each within a deadline. */
#ifndef POP3BRIDGE_NET_H
#define POP3BRIDGE_NET_H

#include <stdbool.h>

/* Connects to host:port: the name is resolved within timeout seconds,
 * then all its addresses are tried within another timeout seconds. A
 * resolution that is not an IP literal runs getaddrinfo() in a child
 * process, killed when the deadline passes (getaddrinfo() itself cannot
 * be bounded: doc/DESIGN.md, libetpan trap 9) -- except for the names
 * net_localhost_name() accepts, which are the loopback addresses (::1 and
 * 127.0.0.1, in getaddrinfo()'s order) without asking anyone. Only the
 * addresses change: a TLS caller still checks the name it was given. Both
 * waits end early at the pass deadline or on a stop request
 * (lib/deadline.h). *fd is a
 * non-blocking, close-on-exec socket. 0, or -1 with *err allocated
 * ("cannot resolve HOST: why", "connect: why"; deadline_text() says why
 * when a limit ended the wait). */
int net_connect(const char *host, unsigned port, unsigned timeout, int *fd, char **err);

/* True for the names RFC 6761 section 6.3 reserves for loopback:
 * "localhost" and every name under ".localhost", in any case, with or
 * without the root's trailing dot. */
bool net_localhost_name(const char *host);

/* "host:port" as messages name a server, "[v6]:port" for an IPv6 literal
 * (so that the port stays readable), "(no host):port" for NULL.
 * Allocated. */
char *net_where(const char *host, unsigned port);

#endif

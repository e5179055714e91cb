/* TCP connections for every client (POP3, SMTP): resolve, then connect
 * each address in turn, all within one deadline. */
#ifndef POP3BRIDGE_NET_H
#define POP3BRIDGE_NET_H

/* Connects to host:port within timeout seconds (all addresses together;
 * getaddrinfo() itself cannot be bounded: doc/DESIGN.md, libetpan trap 9).
 * *fd is a blocking-mode-agnostic, close-on-exec socket. 0, or -1 with
 * *err allocated ("cannot resolve HOST: why", "connect: why"). */
int net_connect(const char *host, unsigned port, unsigned timeout, int *fd, char **err);

/* "host:port" as messages name a server, "[v6]:port" for an IPv6 literal
 * (so that the port stays readable), "(no host):port" for NULL.
 * Allocated. */
char *net_where(const char *host, unsigned port);

#endif

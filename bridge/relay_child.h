/* The relay process as a fresh image (doc/DESIGN.md, Process model). The
 * daemon's memory once held the whole configuration text (libconfuse's
 * lexer buffers are freed, not wiped); a forked relay would inherit those
 * pages. So the forked child writes what the relay needs — STATE_DIR, the
 * relay block, the accounts' names, local users and addresses, the
 * listening sockets — into a memfd and execs /proc/self/exe on it: the
 * relay never holds a POP3, SMTP or store secret, nor the configuration
 * text. The new image loads the certificate, drops its privileges
 * (relay_serve in bridge/relay.c) and serves. */
#ifndef POP3BRIDGE_RELAY_CHILD_H
#define POP3BRIDGE_RELAY_CHILD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "conf/conf.h"

/* The hidden argument main() recognises: `pop3bridge --relay-child FD`. */
#define RELAY_CHILD_ARG "--relay-child"

/* In the child relay_start() forked: execs the relay image with c's
 * relay-side part, parent (the daemon, whose death ends the relay) and
 * the listening sockets fds[0..n) (implicit TLS where tls[i]). Returns
 * only on failure (logged): the caller exits. */
void relay_child_exec(const struct conf *c, pid_t parent, const int *fds,
    const bool *tls, size_t n);

/* main() for RELAY_CHILD_ARG FD: reads the image from FD and runs the
 * relay (relay_serve). Returns an exit code when it cannot. */
int relay_child_main(const char *fd_arg);

#endif

/* The SMTP submission relay's process: `run` starts it beside the POP3
 * passes. It binds every relay.listen (and listen_tls) address in the
 * daemon, so that a port in use or a bad certificate is reported at start,
 * then forks one relay process that accepts connections and forks one
 * child per session (bridge/relay_session.c), at most relay.max_connections
 * at once (more get "421" and are closed). A crashed session takes no
 * other with it; sessions under way finish when the relay restarts.
 *
 * The relay runs when at least one account has `addresses` (without any,
 * there is no one it could send for). Queued messages are picked up by
 * the queue runner, which polls the outbox every few seconds: the relay
 * does not signal it. */
#ifndef POP3BRIDGE_RELAY_H
#define POP3BRIDGE_RELAY_H

#include <stdbool.h>
#include <sys/types.h>
#include <time.h>

#include "conf/conf.h"

struct relay_proc {
	pid_t pid;              /* 0: not running */
	time_t started;
};

/* True when c has an account the relay could send for. */
bool relay_wanted(const struct conf *c);

/* Starts the relay process for c (does nothing when !relay_wanted(c)).
 * Returns 0, or -1 when a listener or the certificate failed (logged). */
int relay_start(struct relay_proc *rp, const struct conf *c);

/* The relay process's work, in the fresh image bridge/relay_child.c
 * starts: takes parent's death as its own end, loads the certificate,
 * forgets every secret and drops its privileges (to STATE_DIR's owner when
 * root; no capability either way), then accepts on fds[0..n) (implicit TLS
 * where tls[i]) until SIGTERM. Returns only when it cannot start (an exit
 * code). c holds what the image carried. */
int relay_serve(const struct conf *c, pid_t parent, const int *fds, const bool *tls,
    size_t n);

/* Notices a relay process that died (also when someone else's waitpid(-1)
 * reaped it) and starts it again, at most every 10 seconds. */
void relay_check(struct relay_proc *rp, const struct conf *c);

/* Stops the relay process (SIGTERM, then waits): no new connections;
 * sessions under way finish on their own. */
void relay_stop(struct relay_proc *rp);

#endif

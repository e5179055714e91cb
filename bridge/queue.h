/* The outbound queue runner: delivers due messages of the outbox through
 * each account's smtp {} block, per recipient (2xx delivered, 5xx failed,
 * 4xx / network / timeout retried with exponential backoff until
 * relay.queue_lifetime), then files a \Seen copy into the account's
 * sent_folder and an RFC 3464 bounce for failed recipients into its INBOX.
 *
 * At most once per recipient, except for one window: the upstream
 * answered 250 to DATA and we were killed before committing that (the
 * commit follows the reply at once, before the next message and QUIT).
 * SMTP cannot close that window; after a crash there the message is sent
 * again. The records are synced every 32 messages of a connection (and at
 * its last): a power loss, unlike a killed process, may also take back
 * the records since the last synced one, and those messages are sent
 * again too — repeated, never lost.
 * One pass at a time: passes take an exclusive lock (STATE_DIR/queue.lock);
 * a pass may run its upstream connections in worker processes. */
#ifndef POP3BRIDGE_QUEUE_H
#define POP3BRIDGE_QUEUE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "conf/conf.h"
#include "store/state.h"

/* Set by a signal handler: the pass stops after its current message. */
extern volatile sig_atomic_t queue_stop;

/* Seconds to wait after the n-th failed attempt (n >= 1): initial,
 * doubling, at most one hour. */
unsigned queue_backoff(unsigned initial, unsigned n);

/* One pass: every message due at now (INT64_MAX: every queued one).
 * Returns 0, 1 when another pass holds the lock (nothing done), or -1
 * with *err allocated when the queue cannot be read. Per-message problems
 * are logged and recorded, not returned. */
int queue_pass(const struct conf *c, struct state *st, int64_t now, char **err);

/* `run`: the runner as a child process of the daemon, looping over
 * queue_pass() every few seconds until SIGTERM (after its current
 * message). */
struct queue_runner {
	pid_t pid;              /* 0 when not running */
	time_t started;
};

/* Starts the child (when not running, at most every few seconds). */
void queue_runner_start(struct queue_runner *q, const struct conf *c);
/* Notices the child's end without blocking (also when another waitpid(-1)
 * reaped it first). True while it runs. */
bool queue_runner_check(struct queue_runner *q);
void queue_runner_signal(struct queue_runner *q, int sig);

#endif

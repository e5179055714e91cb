/* Group commit for the relay: session children (one process per
 * connection) hand their received messages to the relay process, which
 * queues every message waiting at that moment in one transaction, one
 * sync (outbox_enqueue_many), then answers each session, which only then
 * says 250 (doc/DESIGN.md, The relay protocol). Each session has made its
 * file and its name durable itself, in parallel with the others. Eight
 * sessions submitting at once cost about what one costs.
 *
 * The channel is a SOCK_SEQPACKET socketpair per session, made before the
 * session's fork: one request (the message's spool file descriptor, passed
 * with SCM_RIGHTS, and its envelope) and one reply (the queue id or why
 * not) per message. The relay process checks every request again as if
 * it came from outside (the account, who may send as the sender, the
 * addresses): a compromised session cannot queue what MAIL would refuse. */
#ifndef POP3BRIDGE_RELAY_COMMIT_H
#define POP3BRIDGE_RELAY_COMMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"

/* The session side. Makes fd's data durable under its spool name
 * (outbox_spool_link), then hands it with its envelope to the relay
 * process over sock. Returns 0 with *id (queued: answer 250), or -1 with
 * *err allocated (not queued, or the outcome is unknown because the relay
 * process went away after taking the request: answer 4xx, the client
 * sends it again). When nothing could be handed over (no relay process,
 * sock -1, or an envelope too big for the channel) the message is queued
 * here (outbox_enqueue_many). */
int relay_commit_submit(const struct conf *c, int sock, int fd, const char *account,
    const char *auth_user, const char *from, char *const *rcpts, size_t n_rcpts,
    int64_t *id, char **err);

/* The relay process side. */
struct relay_commit;

/* For configuration c (borrowed): the state database is opened at the
 * first request and kept. */
struct relay_commit *relay_commit_new(const struct conf *c);
void relay_commit_free(struct relay_commit *rc);

/* One session's end of the channel, as relay.c polls it. */
struct relay_commit_peer {
	int fd;
	bool hangup;            /* out: closed by the session (or unusable) */
};

/* Reads the one waiting request of each peer in ready[0..n) (sockets that
 * poll() found readable), queues them all together, and answers each.
 * A peer whose socket hung up or sent something unreadable is marked
 * hangup (the caller closes it). Never blocks on a peer. */
void relay_commit_serve(struct relay_commit *rc, struct relay_commit_peer *ready,
    size_t n);

#endif

/* Between the queue runner's files (bridge/queue*.c) only. */
#ifndef POP3BRIDGE_QUEUE_PRIV_H
#define POP3BRIDGE_QUEUE_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include "conf/conf.h"
#include "store/outbox.h"
#include "store/state.h"

/* Seconds before the next try at a Sent copy or bounce that has failed
 * for `failing` seconds (since the message finished): as long again, at
 * least initial, at most an hour, so the waits double without a counter. */
#define QUEUE_FILE_BACKOFF_MAX 3600
unsigned queue_file_backoff(unsigned initial, int64_t failing);

/* The delivery key of m's Sent copy (what "sent") or bounce ("dsn"):
 * allocated, unguessable (from the spool file's random name), the same on
 * every retry; NULL when m has no spool file name. */
char *queue_file_copy_key(const struct outbox_msg *m, const char *what);

/* For the sent or bounced messages v[0..n) of account a (NULL: no longer
 * configured: the copies are given up): the \Seen copies into a's
 * sent_folder and the bounces into a's INBOX, each once (stable delivery
 * keys; one looked up first when an earlier try may have stored it), in
 * one batch of each, recorded as done. One not stored (the store refused
 * it, an I/O or network error) is logged and recorded with its reason and
 * a next try (queue_file_backoff), never as done. n: at most
 * QUEUE_FILE_BATCH (each copy holds an open file until the batch is
 * stored). */
#define QUEUE_FILE_BATCH 64
void queue_file_copies(const struct conf *c, struct state *st,
    const struct conf_account *a, struct outbox_msg **v, size_t n);

#endif

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

/* True when the file at fd holds a byte >= 0x80 (BODY=8BITMIME). */
bool queue_file_8bit(int fd);

/* The delivery key of m's Sent copy (what "sent") or bounce ("dsn"):
 * allocated, unguessable (from the spool file's random name), the same on
 * every retry; NULL when m has no spool file name. */
char *queue_file_copy_key(const struct outbox_msg *m, const char *what);

/* For a sent or bounced message: the \Seen copy into a's sent_folder
 * and the bounce into a's INBOX, each once (stable delivery keys), each
 * recorded as done. One not stored (the store refused it, an I/O or
 * network error) is logged and recorded with its reason and a next try
 * (queue_file_backoff), never as done. */
void queue_file_copies(const struct conf *c, struct state *st,
    const struct conf_account *a, struct outbox_msg *m);

#endif

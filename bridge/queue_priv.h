/* Between the queue runner's files (bridge/queue*.c) only. */
#ifndef POP3BRIDGE_QUEUE_PRIV_H
#define POP3BRIDGE_QUEUE_PRIV_H

#include <stdbool.h>

#include "conf/conf.h"
#include "store/outbox.h"
#include "store/state.h"

/* True when the file at fd holds a byte >= 0x80 (BODY=8BITMIME). */
bool queue_file_8bit(int fd);

/* The delivery key of m's Sent copy (what "sent") or bounce ("dsn"):
 * allocated, unguessable (from the spool file's random name), the same on
 * every retry; NULL when m has no spool file name. */
char *queue_file_copy_key(const struct outbox_msg *m, const char *what);

/* For a sent or bounced message: the \Seen copy into a's sent_folder
 * and the bounce into a's INBOX, each once (stable delivery keys), each
 * recorded as done. Problems are logged; the next pass tries again. */
void queue_file_copies(const struct conf *c, struct state *st,
    const struct conf_account *a, struct outbox_msg *m);

#endif

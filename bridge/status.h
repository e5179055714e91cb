/* What `status` and `check-config` print. */
#ifndef POP3BRIDGE_STATUS_H
#define POP3BRIDGE_STATUS_H

#include <stdbool.h>
#include <stdio.h>

#include "conf/conf.h"

/* Per account: store and folder, last poll time and result, messages
 * imported, pending, on the server, last error. As JSON with json.
 * Returns an exit code (EX_IOERR when the state cannot be read). */
int status_print(FILE *out, const struct conf *c, bool json);

/* `where ACCOUNT UIDL`: where one imported message went (state, store,
 * folder, location, IMAP UIDVALIDITY/UID when known, the account whose
 * copy it shares under dedup, times). Returns EX_OK, 1 (printing why on
 * stderr) when the state knows no such message, EX_USAGE when the
 * account is not configured, EX_IOERR when the state cannot be read. */
int status_where(FILE *out, const struct conf *c, const char *account, const char *uidl);

/* Everything status shows of account name, from the open state st (NULL:
 * nothing ran yet, all zero): the import's figures and the outbound
 * queue's. Also what the metrics file writes (bridge/metrics.c), so both
 * say the same. 0, or -1 with *err; free s with state_status_free. */
struct state;
struct state_status;
struct outbox_counts;
int status_account(struct state *st, const char *name, struct state_status *s,
    struct outbox_counts *q, char **err);

/* The summary check-config prints for a valid configuration. */
void status_print_config(FILE *out, const struct conf *c);

#endif

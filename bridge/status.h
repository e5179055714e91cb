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

/* The summary check-config prints for a valid configuration. */
void status_print_config(FILE *out, const struct conf *c);

#endif

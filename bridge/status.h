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

/* The summary check-config prints for a valid configuration. */
void status_print_config(FILE *out, const struct conf *c);

#endif

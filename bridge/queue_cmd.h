/* The queue's command (bridge/main.c dispatches to it). */
#ifndef POP3BRIDGE_QUEUE_CMD_H
#define POP3BRIDGE_QUEUE_CMD_H

#include "conf/conf.h"

/* `queue [list]`, `queue flush` (everything due now, then one delivery
 * pass here unless one runs already), `queue drop ID`. Returns an exit
 * code from <sysexits.h>. */
int queue_cmd_run(const struct conf *c, int argc, char **argv);

#endif

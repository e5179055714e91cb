/* The queue's commands (bridge/main.c dispatches to them). Both return an
 * exit code from <sysexits.h>. */
#ifndef POP3BRIDGE_QUEUE_CMD_H
#define POP3BRIDGE_QUEUE_CMD_H

#include "conf/conf.h"

/* `sendmail [-t] [-i|-oi] [-f FROM] [--] [RCPT...]`: reads a message on
 * stdin, converts it to CRLF, takes recipients from the arguments and
 * (-t) from To/Cc/Bcc (removing Bcc), the sender from -f or the From:
 * header, refuses a sender that is not among an account's addresses
 * (EX_NOPERM), and enqueues it. Prints nothing on success. */
int queue_cmd_sendmail(const struct conf *c, int argc, char **argv);

/* `queue [list]`, `queue flush` (everything due now, then one delivery
 * pass here unless one runs already), `queue drop ID`. */
int queue_cmd_queue(const struct conf *c, int argc, char **argv);

#endif

/* The `sendmail` command (bridge/main.c dispatches to it): local
 * submission into the outbound queue, as a sendmail(8) stand-in. */
#ifndef POP3BRIDGE_SENDMAIL_H
#define POP3BRIDGE_SENDMAIL_H

#include "conf/conf.h"

/* `sendmail [-t] [-i|-oi] [-f FROM] [--] [RCPT...]`: reads a message on
 * stdin, converts it to CRLF, takes recipients from the arguments and
 * (-t) from To/Cc/Bcc (removing Bcc), the sender from -f or the From:
 * header, refuses a sender that is not among an account's addresses
 * (EX_NOPERM), and enqueues it. Prints nothing on success. Returns an
 * exit code from <sysexits.h>. */
int sendmail_run(const struct conf *c, int argc, char **argv);

#endif

/* The `sendmail` command (bridge/main.c dispatches to it): local
 * submission into the outbound queue, as a sendmail(8) stand-in. */
#ifndef POP3BRIDGE_SENDMAIL_H
#define POP3BRIDGE_SENDMAIL_H

#include "conf/conf.h"

/* `sendmail [-t] [-i|-oi] [-f FROM] [--] [RCPT...]`: reads a message on
 * stdin, converts it to CRLF, takes recipients from the arguments and
 * (-t) from To/Cc/Bcc (removing Bcc), the sender from -f or the From:
 * header, and enqueues it. Refused, with one line on stderr and nothing
 * queued: a sender that is not an address of an account whose local_user
 * is the invoking user (root: of any account) (EX_NOPERM); an account
 * without an smtp {} block (EX_CONFIG); a header holding a NUL or a bare
 * CR, a bad recipient (EX_DATAERR). Prints nothing on success. Returns an
 * exit code from <sysexits.h>. */
int sendmail_run(const struct conf *c, int argc, char **argv);

#endif

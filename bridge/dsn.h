/* RFC 3464 delivery status notifications: the bounce the queue stores in
 * the sender's INBOX when recipients failed for good. */
#ifndef POP3BRIDGE_DSN_H
#define POP3BRIDGE_DSN_H

#include <stdio.h>
#include <time.h>

#include "store/outbox.h"

/* The RFC 3463 status for an upstream reply: the enhanced code at the
 * start of text when it has one of code's class, else "C.0.0" from the
 * reply code, "4.4.7" (expired) when code is 0 or 4xx. Writes into
 * out (at least 16 bytes). */
void dsn_status(int code, const char *text, char *out, size_t size);

/* Writes the bounce for the failed recipients of m (CRLF line endings):
 * multipart/report; report-type=delivery-status, with a human part, a
 * message/delivery-status part (Reporting-MTA: dns; mta, one block per
 * failed recipient) and the original header block, read from orig (at
 * most 64 KiB), as text/rfc822-headers. 0, or -1 on a write error. */
int dsn_write(FILE *out, const struct outbox_msg *m, FILE *orig, const char *mta,
    time_t now);

#endif

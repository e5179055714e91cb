/* How long a failing account waits before its next poll (doc/DESIGN.md,
 * Process model: Backoff). Pure: the pass (bridge/sync.c) calls it when
 * it plans the next poll; unit-tested. */
#ifndef POP3BRIDGE_BACKOFF_H
#define POP3BRIDGE_BACKOFF_H

#include <stdbool.h>
#include <stdint.h>

#define BACKOFF_MAX (6 * 3600)              /* seconds, any failure */
#define BACKOFF_MAX_REFUSED (24 * 3600)     /* the server refused login or TLS */

/* Seconds until the next poll after the failures-th failed pass in a row
 * (1 for the first) of an account polled every interval seconds:
 * interval x 2^(failures-1), or x 4^(failures-1) when refused (a wrong
 * password retried sooner only gets the account locked), at most
 * BACKOFF_MAX (BACKOFF_MAX_REFUSED), never less than interval, then
 * jittered by +-25% with rnd in [0, 1) (0.5: none), still at least
 * interval. */
int64_t backoff_delay(unsigned interval, unsigned long failures, bool refused, double rnd);

/* A uniform number in [0, 1) for the jitter (getrandom). */
double backoff_random(void);

#endif

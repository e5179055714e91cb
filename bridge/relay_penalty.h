/* Failed AUTHs counted per client address, across sessions: the relay
 * process keeps the table (sessions are its children and report their
 * failures as they end), refuses AUTH to an address that failed too often
 * lately, and logs a burst of failures once, not once per guess.
 *
 * Policy: RELAY_PENALTY_FAILS failures from one address within
 * RELAY_PENALTY_WINDOW seconds block AUTH from it for RELAY_PENALTY_BLOCK
 * seconds (a blocked session's AUTH is answered 454 without looking at
 * the password, so nothing can be learnt then, and it is not counted).
 * At most RELAY_PENALTY_MAX addresses are remembered; the oldest is
 * forgotten first. Not thread-safe; one table per relay process. */
#ifndef POP3BRIDGE_RELAY_PENALTY_H
#define POP3BRIDGE_RELAY_PENALTY_H

#include <stdbool.h>
#include <time.h>

#define RELAY_PENALTY_FAILS	10
#define RELAY_PENALTY_WINDOW	600
#define RELAY_PENALTY_BLOCK	900
#define RELAY_PENALTY_MAX	4096

struct relay_penalty;

/* An empty table. Free with relay_penalty_free. */
struct relay_penalty *relay_penalty_new(void);
void relay_penalty_free(struct relay_penalty *p);

/* Adds fails failed AUTHs from addr (a numeric address) at now: the first
 * of a burst and the start of a block are logged, one line each. */
void relay_penalty_add(struct relay_penalty *p, const char *addr, unsigned fails, time_t now);

/* True while AUTH from addr is refused. */
bool relay_penalty_blocked(struct relay_penalty *p, const char *addr, time_t now);

#endif

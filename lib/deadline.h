/* Deadlines on the monotonic clock, and the two limits of a whole process
 * that every wait of an account pass honours (doc/DESIGN.md, Process
 * model): the pass's absolute deadline, and a stop request (SIGTERM or
 * SIGINT held pending, lib/proc.h). A wait never sleeps longer than
 * DEADLINE_SLICE_MS before it looks at both again, so that a stop ends any
 * wait within about a second.
 *
 * Nothing here prints or allocates. The limits are off until
 * deadline_pass_arm() (only pass children call it): the daemon, the relay
 * and the queue runner wait on their own deadlines alone. */
#ifndef POP3BRIDGE_DEADLINE_H
#define POP3BRIDGE_DEADLINE_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* The longest a wait sleeps between two looks at the limits. */
#define DEADLINE_SLICE_MS	1000

/* The slowest a whole transfer (a POP3 message or listing, an IMAP APPEND)
 * may arrive on average beyond its timeout, in octets per second: 16 KiB/s
 * (128 kbit/s), half the upstream of the slowest ADSL lines that still
 * host mail servers and far below what any provider serves (hundreds of
 * KiB/s and more), so no real transfer is cut, while a tarpit that sends a
 * line per step (bytes per second) is cut after about the timeout. A
 * 50 MB message, the most providers accept, may take timeout + 51 min. */
#define DEADLINE_MIN_RATE	(16 * 1024)

/* The seconds a transfer of octets may take in all: timeout + octets /
 * DEADLINE_MIN_RATE, rounded up (UINT_MAX at most). */
unsigned deadline_allowance(unsigned timeout, uint64_t octets);

struct deadline {
	struct timespec at;	/* CLOCK_MONOTONIC */
	bool set;		/* false: no deadline */
};

/* Why a wait ended without its event. */
enum deadline_end {
	DEADLINE_NONE = 0,	/* nothing ended it: go on */
	DEADLINE_OWN,		/* the caller's deadline passed */
	DEADLINE_PASS,		/* the pass's deadline passed */
	DEADLINE_STOP,		/* a stop was requested */
};

/* d = now + ms (ms may be large; it saturates), or no deadline. */
void deadline_in_ms(struct deadline *d, uint64_t ms);
void deadline_none(struct deadline *d);

/* Milliseconds left before d: INT64_MAX when d is NULL or not set, 0 once
 * it has passed. */
int64_t deadline_left_ms(const struct deadline *d);

/* From now on, in this process: the pass ends seconds from now (0: no
 * pass deadline) and, when stop_aware, a pending SIGTERM/SIGINT ends every
 * wait. Called again, it replaces both. */
void deadline_pass_arm(unsigned seconds, bool stop_aware);

/* Milliseconds left before the pass deadline: INT64_MAX when there is
 * none, 0 once it has passed. */
int64_t deadline_pass_left_ms(void);

/* The seconds given to deadline_pass_arm (0 when none), for messages. */
unsigned deadline_pass_seconds(void);

/* What ends a wait now, in this order: a stop request, the pass deadline,
 * d (may be NULL). DEADLINE_NONE when none does. */
enum deadline_end deadline_check(const struct deadline *d);

/* How long the next sleep of a wait for d may be: the least of d's time
 * left, the pass's, and DEADLINE_SLICE_MS; at least 1 ms. */
int deadline_slice_ms(const struct deadline *d);

/* Waits until fd has one of events (poll(2) flags), d passes, the pass
 * deadline passes or a stop is requested, looking at the limits at least
 * every DEADLINE_SLICE_MS. Returns 1 with *revents set, 0 with *end saying
 * which limit ended the wait, or -1 with errno when poll() fails (EINTR is
 * retried). */
int deadline_poll(int fd, short events, const struct deadline *d, short *revents,
    enum deadline_end *end);

/* How messages say what ended a wait: DEADLINE_OWN "timed out after N s"
 * (N = seconds, the caller's timeout), DEADLINE_PASS "the pass exceeded
 * its deadline of P s", DEADLINE_STOP "interrupted by a stop request".
 * Writes into buf (DEADLINE_TEXT_MAX bytes suffice) and returns it. */
#define DEADLINE_TEXT_MAX	64
const char *deadline_text(enum deadline_end end, unsigned seconds, char *buf, size_t cap);

#endif

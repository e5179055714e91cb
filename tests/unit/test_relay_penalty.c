/* Unit tests of bridge/relay_penalty.c: the per-address AUTH failure
 * table (limit, window, block, forgetting the oldest). */
#include <stdio.h>

#include "bridge/relay_penalty.h"
#include "lib/log.h"
#include "tests/unit/check.h"

static void
test_block_after_limit(void)
{
	struct relay_penalty *p = relay_penalty_new();
	time_t t0 = 1000000;

	/* three sessions of three failures: still under the limit */
	for (int i = 0; i < 3; i++)
		relay_penalty_add(p, "192.0.2.1", 3, t0 + i);
	CHECK(!relay_penalty_blocked(p, "192.0.2.1", t0 + 3));
	relay_penalty_add(p, "192.0.2.1", 1, t0 + 4);
	CHECK(relay_penalty_blocked(p, "192.0.2.1", t0 + 4));
	CHECK(!relay_penalty_blocked(p, "192.0.2.2", t0 + 4));
	/* the block lasts RELAY_PENALTY_BLOCK seconds, then all is forgotten */
	CHECK(relay_penalty_blocked(p, "192.0.2.1", t0 + 4 + RELAY_PENALTY_BLOCK - 1));
	CHECK(!relay_penalty_blocked(p, "192.0.2.1", t0 + 4 + RELAY_PENALTY_BLOCK));
	relay_penalty_add(p, "192.0.2.1", RELAY_PENALTY_FAILS - 1, t0 + 4 + RELAY_PENALTY_BLOCK);
	CHECK(!relay_penalty_blocked(p, "192.0.2.1", t0 + 5 + RELAY_PENALTY_BLOCK));
	relay_penalty_free(p);
}

static void
test_window_expires(void)
{
	struct relay_penalty *p = relay_penalty_new();
	time_t t0 = 2000000;

	relay_penalty_add(p, "2001:db8::1", RELAY_PENALTY_FAILS - 1, t0);
	/* the next failure comes after the window: a new burst */
	relay_penalty_add(p, "2001:db8::1", 1, t0 + RELAY_PENALTY_WINDOW + 1);
	CHECK(!relay_penalty_blocked(p, "2001:db8::1", t0 + RELAY_PENALTY_WINDOW + 1));
	relay_penalty_add(p, "2001:db8::1", RELAY_PENALTY_FAILS - 1, t0 + RELAY_PENALTY_WINDOW + 2);
	CHECK(relay_penalty_blocked(p, "2001:db8::1", t0 + RELAY_PENALTY_WINDOW + 2));
	/* no failures: nothing to do */
	relay_penalty_add(p, "198.51.100.1", 0, t0);
	CHECK(!relay_penalty_blocked(p, "198.51.100.1", t0));
	relay_penalty_free(p);
}

static void
test_table_bounded(void)
{
	struct relay_penalty *p = relay_penalty_new();
	char a[64];
	time_t t0 = 3000000;

	relay_penalty_add(p, "10.0.0.1", RELAY_PENALTY_FAILS, t0);
	CHECK(relay_penalty_blocked(p, "10.0.0.1", t0));
	/* as many newer addresses as the table holds push the oldest out */
	for (int i = 0; i < RELAY_PENALTY_MAX; i++) {
		snprintf(a, sizeof a, "10.1.%d.%d", i / 256, i % 256);
		relay_penalty_add(p, a, 1, t0 + 1);
	}
	CHECK(!relay_penalty_blocked(p, "10.0.0.1", t0 + 2));
	relay_penalty_free(p);
}

int
main(void)
{
	log_init(LOG_QUIET, 0);
	TEST(test_block_after_limit);
	TEST(test_window_expires);
	TEST(test_table_bounded);
	CHECK_DONE();
}

/* Unit tests of bridge/backoff.c: the delays of a failing account. */
#include "bridge/backoff.h"

#include <stdio.h>

#include "tests/unit/check.h"

static void
test_doubling_and_cap(void)
{
	/* rnd 0.5: no jitter. */
	CHECK_INT(backoff_delay(300, 1, false, 0.5), 300);
	CHECK_INT(backoff_delay(300, 2, false, 0.5), 600);
	CHECK_INT(backoff_delay(300, 3, false, 0.5), 1200);
	CHECK_INT(backoff_delay(300, 7, false, 0.5), 19200);
	CHECK_INT(backoff_delay(300, 8, false, 0.5), BACKOFF_MAX);
	CHECK_INT(backoff_delay(300, 1000000, false, 0.5), BACKOFF_MAX);
}

static void
test_refusals_harder(void)
{
	CHECK_INT(backoff_delay(300, 1, true, 0.5), 300);
	CHECK_INT(backoff_delay(300, 2, true, 0.5), 1200);
	CHECK_INT(backoff_delay(300, 3, true, 0.5), 4800);
	CHECK_INT(backoff_delay(300, 5, true, 0.5), 76800);
	CHECK_INT(backoff_delay(300, 6, true, 0.5), BACKOFF_MAX_REFUSED);
	CHECK(backoff_delay(60, 4, true, 0.5) > backoff_delay(60, 4, false, 0.5));
}

static void
test_jitter_and_floor(void)
{
	/* +-25%, never below the interval. */
	CHECK_INT(backoff_delay(100, 3, false, 0.0), 300);
	CHECK_INT(backoff_delay(100, 3, false, 0.999999), 499);
	CHECK_INT(backoff_delay(100, 1, false, 0.0), 100);
	/* An interval above the cap is kept. */
	CHECK_INT(backoff_delay(30 * 3600, 5, false, 0.5), 30 * 3600);
	CHECK_INT(backoff_delay(0, 3, false, 0.5), 4);
	for (int i = 0; i < 1000; i++) {
		double r = backoff_random();

		CHECK(r >= 0 && r < 1);
	}
}

int
main(void)
{
	TEST(test_doubling_and_cap);
	TEST(test_refusals_harder);
	TEST(test_jitter_and_floor);
	CHECK_DONE();
}

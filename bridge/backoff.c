#include "bridge/backoff.h"

#include <sys/random.h>
#include <time.h>
#include <unistd.h>

int64_t
backoff_delay(unsigned interval, unsigned long failures, bool refused, double rnd)
{
	int64_t cap = refused ? BACKOFF_MAX_REFUSED : BACKOFF_MAX;
	int64_t d = interval > 0 ? interval : 1;
	unsigned shift = refused ? 2 : 1;

	for (unsigned long i = 1; i < failures && d < cap; i++)
		d <<= shift;
	if (d > cap)
		d = cap;
	if (d < (int64_t)interval)
		d = interval;
	/* +-25%: 0.75 .. 1.25 times the delay. */
	d = (int64_t)((double)d * (0.75 + rnd * 0.5));
	return d < (int64_t)interval ? (int64_t)interval : d;
}

double
backoff_random(void)
{
	uint32_t r;

	if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
		r = (uint32_t)time(NULL) * 2654435761u ^ (uint32_t)getpid();
	return (double)r / 4294967296.0;
}

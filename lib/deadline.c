/* Deadlines and the pass's limits: see deadline.h. */
#include "lib/deadline.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>

#include "lib/proc.h"

/* The limits of this process (deadline_pass_arm). */
static struct deadline pass_deadline;
static unsigned pass_seconds;
static bool pass_stop_aware;

void
deadline_in_ms(struct deadline *d, uint64_t ms)
{
	const uint64_t cap = (uint64_t)INT32_MAX * 1000;	/* 68 years */

	if (ms > cap)
		ms = cap;
	clock_gettime(CLOCK_MONOTONIC, &d->at);
	d->at.tv_sec += (time_t)(ms / 1000);
	d->at.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (d->at.tv_nsec >= 1000000000L) {
		d->at.tv_sec++;
		d->at.tv_nsec -= 1000000000L;
	}
	d->set = true;
}

unsigned
deadline_allowance(unsigned timeout, uint64_t octets)
{
	uint64_t s = (uint64_t)timeout + octets / DEADLINE_MIN_RATE +
	    (octets % DEADLINE_MIN_RATE != 0);

	return s > UINT_MAX ? UINT_MAX : (unsigned)s;
}

void
deadline_none(struct deadline *d)
{
	d->at.tv_sec = 0;
	d->at.tv_nsec = 0;
	d->set = false;
}

int64_t
deadline_left_ms(const struct deadline *d)
{
	struct timespec now;
	int64_t ms;

	if (d == NULL || !d->set)
		return INT64_MAX;
	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (int64_t)(d->at.tv_sec - now.tv_sec) * 1000 +
	    (d->at.tv_nsec - now.tv_nsec) / 1000000L;
	return ms > 0 ? ms : 0;
}

void
deadline_pass_arm(unsigned seconds, bool stop_aware)
{
	if (seconds > 0)
		deadline_in_ms(&pass_deadline, (uint64_t)seconds * 1000);
	else
		deadline_none(&pass_deadline);
	pass_seconds = seconds;
	pass_stop_aware = stop_aware;
}

int64_t
deadline_pass_left_ms(void)
{
	return deadline_left_ms(&pass_deadline);
}

unsigned
deadline_pass_seconds(void)
{
	return pass_seconds;
}

enum deadline_end
deadline_check(const struct deadline *d)
{
	if (pass_stop_aware && proc_stop_requested())
		return DEADLINE_STOP;
	if (pass_deadline.set && deadline_left_ms(&pass_deadline) == 0)
		return DEADLINE_PASS;
	if (d != NULL && d->set && deadline_left_ms(d) == 0)
		return DEADLINE_OWN;
	return DEADLINE_NONE;
}

int
deadline_slice_ms(const struct deadline *d)
{
	int64_t ms = DEADLINE_SLICE_MS, left;

	if ((left = deadline_left_ms(d)) < ms)
		ms = left;
	if ((left = deadline_left_ms(&pass_deadline)) < ms)
		ms = left;
	return ms > 0 ? (int)ms : 1;
}

int
deadline_poll(int fd, short events, const struct deadline *d, short *revents,
    enum deadline_end *end)
{
	struct pollfd pfd;
	int r;

	*revents = 0;
	*end = DEADLINE_NONE;
	for (;;) {
		if ((*end = deadline_check(d)) != DEADLINE_NONE)
			return 0;
		pfd.fd = fd;
		pfd.events = events;
		pfd.revents = 0;
		r = poll(&pfd, 1, deadline_slice_ms(d));
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1)
			return -1;
		if (r == 1) {
			*revents = pfd.revents;
			return 1;
		}
	}
}

const char *
deadline_text(enum deadline_end end, unsigned seconds, char *buf, size_t cap)
{
	switch (end) {
	case DEADLINE_STOP:
		snprintf(buf, cap, "interrupted by a stop request");
		break;
	case DEADLINE_PASS:
		snprintf(buf, cap, "the pass exceeded its deadline of %u s", pass_seconds);
		break;
	case DEADLINE_OWN:
	case DEADLINE_NONE:
		snprintf(buf, cap, "timed out after %u s", seconds);
		break;
	}
	return buf;
}

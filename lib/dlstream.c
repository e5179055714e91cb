/* The deadline-aware stream driver: see dlstream.h. */
#include "lib/dlstream.h"

#include <sys/time.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/xmalloc.h"

/* Our driver's data: the wrapped low-level stream and the limits. */
struct dl_data {
	mailstream_low *inner;
	struct deadline deadline;	/* dlstream_set_deadline */
	enum deadline_end end;		/* why the last read or write failed */
};

static mailstream_low_driver dl_driver;

/* Set by SIGALRM: the slice of the read under way is over. */
static volatile sig_atomic_t slice_over;

static void
on_alarm(int sig)
{
	(void)sig;
	slice_over = 1;
}

/* The SIGALRM handler, without SA_RESTART: the signal must end the poll()
 * inside the low-level read. */
static void
alarm_install(void)
{
	static bool done;
	struct sigaction sa;

	if (done)
		return;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGALRM, &sa, NULL) == -1)
		fatal("sigaction SIGALRM");
	done = true;
}

/* One wait of at most ms milliseconds on the wrapped stream: the bytes
 * read (> 0), 0 at end of stream, -1 on failure, -2 when the slice ended
 * first. The wrapped stream's own timeout is set longer than the slice,
 * so that only the timer ends a quiet wait and -1 always means failure. */
static ssize_t
slice_read(mailstream_low *inner, void *buf, size_t count, int ms)
{
	struct itimerval on = { .it_value = { ms / 1000, (ms % 1000) * 1000 } };
	struct itimerval off = { .it_value = { 0, 0 } };
	ssize_t n;

	mailstream_low_set_timeout(inner, (unsigned long)(ms / 1000) + 2);
	slice_over = 0;
	setitimer(ITIMER_REAL, &on, NULL);
	n = mailstream_low_read(inner, buf, count);
	setitimer(ITIMER_REAL, &off, NULL);
	if (n < 0 && slice_over)
		return -2;
	return n;
}

/* The wait a read may take: its timeout, or the stream's deadline when
 * that comes first. */
static void
read_deadline(const mailstream_low *s, const struct dl_data *d, struct deadline *own)
{
	unsigned long t = s->timeout != 0 ? s->timeout :
	    (unsigned long)mailstream_network_delay.tv_sec;

	deadline_in_ms(own, (uint64_t)t * 1000);
	if (d->deadline.set && deadline_left_ms(&d->deadline) < deadline_left_ms(own))
		*own = d->deadline;
}

static ssize_t
dl_read(mailstream_low *s, void *buf, size_t count)
{
	struct dl_data *d = s->data;
	struct deadline own;
	ssize_t n;

	read_deadline(s, d, &own);
	for (;;) {
		if ((d->end = deadline_check(&own)) != DEADLINE_NONE)
			return -1;
		n = slice_read(d->inner, buf, count, deadline_slice_ms(&own));
		if (n != -2)
			return n;
	}
}

static ssize_t
dl_write(mailstream_low *s, const void *buf, size_t count)
{
	struct dl_data *d = s->data;
	int64_t left;

	if ((d->end = deadline_check(&d->deadline)) != DEADLINE_NONE)
		return -1;
	/* One write waits at most the timeout, or what is left before the
	 * stream's deadline (whole seconds, at least 1). */
	left = deadline_left_ms(&d->deadline);
	if (d->deadline.set && (s->timeout == 0 || left / 1000 + 1 < (int64_t)s->timeout))
		mailstream_low_set_timeout(d->inner, (unsigned long)(left / 1000) + 1);
	else
		mailstream_low_set_timeout(d->inner, s->timeout);
	return mailstream_low_write(d->inner, buf, count);
}

static int
dl_close(mailstream_low *s)
{
	struct dl_data *d = s->data;

	return mailstream_low_close(d->inner);
}

static int
dl_get_fd(mailstream_low *s)
{
	struct dl_data *d = s->data;

	return mailstream_low_get_fd(d->inner);
}

/* libetpan's drivers free the low-level stream itself in their free. */
static void
dl_free(mailstream_low *s)
{
	struct dl_data *d = s->data;

	mailstream_low_free(d->inner);
	free(d);
	free(s);
}

static void
dl_cancel(mailstream_low *s)
{
	struct dl_data *d = s->data;

	mailstream_low_cancel(d->inner);
}

static struct mailstream_cancel *
dl_get_cancel(mailstream_low *s)
{
	struct dl_data *d = s->data;

	return mailstream_low_get_cancel(d->inner);
}

static carray *
dl_get_certificate_chain(mailstream_low *s)
{
	struct dl_data *d = s->data;

	return mailstream_low_get_certificate_chain(d->inner);
}

static mailstream_low_driver dl_driver = {
	.mailstream_read = dl_read,
	.mailstream_write = dl_write,
	.mailstream_close = dl_close,
	.mailstream_get_fd = dl_get_fd,
	.mailstream_free = dl_free,
	.mailstream_cancel = dl_cancel,
	.mailstream_get_cancel = dl_get_cancel,
	.mailstream_get_certificate_chain = dl_get_certificate_chain,
	/* IDLE is never used: NULL makes libetpan refuse it. */
};

int
dlstream_guard(mailstream *s)
{
	mailstream_low *inner, *low;
	struct dl_data *d;

	if (s == NULL || (inner = mailstream_get_low(s)) == NULL)
		return -1;
	if (inner->driver == &dl_driver)
		return 0;
	alarm_install();
	d = xcalloc(1, sizeof *d);
	d->inner = inner;
	deadline_none(&d->deadline);
	if ((low = mailstream_low_new(d, &dl_driver)) == NULL)
		fatalx("dlstream: out of memory");
	mailstream_low_set_timeout(low, inner->timeout);
	mailstream_set_low(s, low);
	return 0;
}

void
dlstream_set_deadline(mailstream *s, const struct deadline *dl)
{
	mailstream_low *low = mailstream_get_low(s);
	struct dl_data *d;

	if (low == NULL || low->driver != &dl_driver)
		fatalx("dlstream_set_deadline: the stream is not guarded");
	d = low->data;
	if (dl != NULL)
		d->deadline = *dl;
	else
		deadline_none(&d->deadline);
}

mailstream_low *
dlstream_inner(mailstream_low *low)
{
	if (low == NULL || low->driver != &dl_driver)
		return NULL;
	return ((struct dl_data *)low->data)->inner;
}

enum deadline_end
dlstream_end(mailstream *s)
{
	mailstream_low *low = mailstream_get_low(s);

	if (low == NULL || low->driver != &dl_driver)
		return DEADLINE_NONE;
	return ((struct dl_data *)low->data)->end;
}

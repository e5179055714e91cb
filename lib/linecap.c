/* The line-bounding stream filter: see linecap.h. */
#include "lib/linecap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/dlstream.h"
#include "lib/log.h"
#include "lib/xmalloc.h"

struct linecap {
	mailstream_low *inner;		/* owned */
	size_t max;
	linecap_check_fn *check;
	void *ctx;
	char *line;			/* the current line so far (max bytes) */
	size_t len;
	size_t literal;			/* literal bytes still to come in it */
	const char *why;		/* a line refused: reads fail from the next on */
	bool failed;			/* a read failed for why */		/* set once a read was refused */
	char why_buf[64];
};

static mailstream_low_driver linecap_driver;

static struct linecap *
lc_of(mailstream_low *s)
{
	return s->data;
}

/* Refuses from now on: what came before the refused line in this chunk
 * (bytes [0, i + 1 - its length here)) is still handed on, then every
 * read fails. */
static ssize_t
refuse(struct linecap *lc, const char *why, size_t i)
{
	size_t here = lc->len < i + 1 ? lc->len : i + 1;

	if (lc->why == NULL)
		lc->why = why;
	if (i + 1 - here > 0)
		return (ssize_t)(i + 1 - here);
	lc->failed = true;
	return -1;
}

static ssize_t
lc_read(mailstream_low *s, void *buf, size_t count)
{
	struct linecap *lc = lc_of(s);
	char *out = buf;
	const char *why;
	ssize_t n;
	size_t i;

	if (lc->why != NULL) {
		lc->failed = true;
		return -1;
	}
	if (count == 0)
		return 0;
	/* The wrapped stream reads with the timeout set on us. */
	lc->inner->timeout = s->timeout;
	if ((n = mailstream_low_read(lc->inner, out, count)) < 0)
		return n;
	/* At the end of the stream libetpan parses a line it has without its
	 * LF (mailstream_read_line): a line cut short is an error instead. */
	if (n == 0) {
		if (lc->len == 0)
			return 0;
		lc->why = "the connection ended inside a reply line";
		lc->failed = true;
		return -1;
	}
	/* A refused line is not handed on: libetpan parses a line only once
	 * it has its LF. */
	for (i = 0; i < (size_t)n; i++) {
		char c = out[i];
		struct linecap_more m = { false, 0 };

		if (lc->len == lc->max)
			return refuse(lc, lc->why_buf, i > 0 ? i - 1 : 0);
		lc->line[lc->len++] = c;
		if (lc->literal > 0) {
			lc->literal--;
			continue;
		}
		if (c != '\n')
			continue;
		if (lc->check != NULL && (why = lc->check(lc->ctx, lc->line, lc->len,
		    &m)) != NULL)
			return refuse(lc, why, i);
		if (m.more && m.literal > lc->max - lc->len)
			return refuse(lc, lc->why_buf, i);
		lc->literal = m.more ? m.literal : 0;
		if (!m.more)
			lc->len = 0;
	}
	return n;
}

static ssize_t
lc_write(mailstream_low *s, const void *buf, size_t count)
{
	struct linecap *lc = lc_of(s);

	lc->inner->timeout = s->timeout;
	return mailstream_low_write(lc->inner, buf, count);
}

static int
lc_close(mailstream_low *s)
{
	return mailstream_low_close(lc_of(s)->inner);
}

static int
lc_get_fd(mailstream_low *s)
{
	return mailstream_low_get_fd(lc_of(s)->inner);
}

static void
lc_free(mailstream_low *s)
{
	struct linecap *lc = lc_of(s);

	/* Frees the wrapped stream without closing its fd, as libetpan's
	 * STARTTLS expects of mailstream_low_free(). */
	mailstream_low_free(lc->inner);
	free(lc->line);
	free(lc);
	free(s);
}

static void
lc_cancel(mailstream_low *s)
{
	mailstream_low_cancel(lc_of(s)->inner);
}

static struct mailstream_cancel *
lc_get_cancel(mailstream_low *s)
{
	mailstream_low *in = lc_of(s)->inner;

	return in->driver->mailstream_get_cancel != NULL ?
	    in->driver->mailstream_get_cancel(in) : NULL;
}

static carray *
lc_get_certificate_chain(mailstream_low *s)
{
	return mailstream_low_get_certificate_chain(lc_of(s)->inner);
}

static mailstream_low_driver linecap_driver = {
	.mailstream_read = lc_read,
	.mailstream_write = lc_write,
	.mailstream_close = lc_close,
	.mailstream_get_fd = lc_get_fd,
	.mailstream_free = lc_free,
	.mailstream_cancel = lc_cancel,
	.mailstream_get_cancel = lc_get_cancel,
	.mailstream_get_certificate_chain = lc_get_certificate_chain,
};

void
linecap_install(mailstream *s, size_t max, linecap_check_fn *check, void *ctx)
{
	mailstream_low *inner = mailstream_get_low(s), *low;
	struct linecap *lc = xcalloc(1, sizeof *lc);

	lc->inner = inner;
	lc->max = max;
	lc->check = check;
	lc->ctx = ctx;
	lc->line = xmalloc(max);
	snprintf(lc->why_buf, sizeof lc->why_buf, "a reply line longer than %zu bytes", max);
	if ((low = mailstream_low_new(lc, &linecap_driver)) == NULL)
		fatalx("linecap: out of memory");
	low->timeout = inner->timeout;
	low->privacy = inner->privacy;
	mailstream_set_low(s, low);
}

const char *
linecap_refused(mailstream *s)
{
	mailstream_low *low = s != NULL ? mailstream_get_low(s) : NULL;

	/* Under a deadline guard (store/imap_conn.c stacks them so). */
	if (dlstream_inner(low) != NULL)
		low = dlstream_inner(low);
	if (low == NULL || low->driver != &linecap_driver || !lc_of(low)->failed)
		return NULL;
	return lc_of(low)->why;
}

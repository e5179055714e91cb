#include "lib/header.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <libetpan/libetpan.h>

#include "lib/xmalloc.h"

#define MESSAGE_ID_MAX 998

/* Length of the header line starting at p, continuation lines included
 * (RFC 5322 folding: a line starting with space or tab continues). */
static size_t
field_len(const char *p, const char *end)
{
	const char *q = p;

	for (;;) {
		const char *nl = memchr(q, '\n', end - q);

		if (nl == NULL)
			return end - p;
		q = nl + 1;
		if (q >= end || (*q != ' ' && *q != '\t'))
			return q - p;
	}
}

/* The value of field `name` if the field at p has that name, else NULL. */
static const char *
field_value(const char *p, size_t len, const char *name)
{
	size_t n = strlen(name);

	if (len <= n || strncasecmp(p, name, n) != 0 || p[n] != ':')
		return NULL;
	return p + n + 1;
}

static char *
parse_message_id(const char *v, size_t len)
{
	const char *lt = memchr(v, '<', len), *gt;

	if (lt == NULL)
		return NULL;
	gt = memchr(lt, '>', v + len - lt);
	if (gt == NULL || gt - lt + 1 > MESSAGE_ID_MAX)
		return NULL;
	for (const char *c = lt; c <= gt; c++)
		if ((unsigned char)*c <= ' ' || *c == 0x7f)
			return NULL;
	return xstrndup(lt, gt - lt + 1);
}

/* Received: ...; DATE — the date follows the last ';'. */
static time_t
parse_received(const char *v, size_t len)
{
	const char *semi = NULL;

	for (const char *c = v; c < v + len; c++)
		if (*c == ';')
			semi = c;
	return semi ? header_parse_date(semi + 1, v + len - semi - 1) : 0;
}

/* True at the empty line that ends the header block (or at its end). */
static bool
block_end(const char *p, const char *end)
{
	return p >= end || *p == '\n' || (*p == '\r' && p + 1 < end && p[1] == '\n');
}

void
header_scan(const char *buf, size_t len, struct header_info *h)
{
	const char *p = buf, *end = buf + len, *v;
	bool seen_received = false;

	memset(h, 0, sizeof *h);
	while (!block_end(p, end)) {
		size_t n = field_len(p, end);

		if (h->message_id == NULL && (v = field_value(p, n, "Message-ID")))
			h->message_id = parse_message_id(v, p + n - v);
		else if (!seen_received && (v = field_value(p, n, "Received"))) {
			seen_received = true;
			h->received = parse_received(v, p + n - v);
		} else if (h->date == 0 && (v = field_value(p, n, "Date")))
			h->date = header_parse_date(v, p + n - v);
		p += n;
	}
}

void
header_each(const char *buf, size_t len, const char *name,
    void (*fn)(void *arg, const char *value), void *arg)
{
	const char *p = buf, *end = buf + len, *v;
	char *u, *o;

	while (!block_end(p, end)) {
		size_t n = field_len(p, end);

		if ((v = field_value(p, n, name)) != NULL) {
			/* Unfold: the line breaks go, the folding white space stays. */
			u = o = xmalloc((size_t)(p + n - v) + 1);
			for (; v < p + n; v++)
				if (*v != '\r' && *v != '\n')
					*o++ = *v;
			*o = '\0';
			fn(arg, u);
			free(u);
		}
		p += n;
	}
}

void
header_info_free(struct header_info *h)
{
	free(h->message_id);
	h->message_id = NULL;
}

time_t
header_internal_date(const struct header_info *h, time_t fallback)
{
	if (h->received > 0)
		return h->received;
	if (h->date > 0)
		return h->date;
	return fallback;
}

/* libetpan's RFC 5322 date parser does the grammar; we turn the result
 * into a time_t. Its zone is +hhmm as a decimal number: -0130 is -130. */
time_t
header_parse_date(const char *s, size_t len)
{
	struct mailimf_date_time *dt = NULL;
	size_t idx = 0;
	char *copy = xstrndup(s, len);
	struct tm tm = { 0 };
	time_t t = 0;
	int zone, off;

	/* Unfold: the parser does not accept CR/LF inside the value. */
	for (char *c = copy; *c; c++)
		if (*c == '\r' || *c == '\n' || *c == '\t')
			*c = ' ';
	/* libetpan takes any run of digits as a number: a year, hour or
	 * zone far out of range is unparsable, checked before any
	 * arithmetic on it. */
	if (mailimf_date_time_parse(copy, strlen(copy), &idx, &dt) == MAILIMF_NO_ERROR) {
		zone = dt->dt_zone;
		if (dt->dt_year >= 1970 && dt->dt_year <= 9999 && dt->dt_month >= 1 &&
		    dt->dt_month <= 12 && dt->dt_day >= 1 && dt->dt_day <= 31 &&
		    dt->dt_hour >= 0 && dt->dt_hour <= 23 && dt->dt_min >= 0 &&
		    dt->dt_min <= 59 && dt->dt_sec >= 0 && dt->dt_sec <= 60 &&
		    zone >= -9959 && zone <= 9959 && abs(zone) % 100 <= 59) {
			tm.tm_year = dt->dt_year - 1900;
			tm.tm_mon = dt->dt_month - 1;
			tm.tm_mday = dt->dt_day;
			tm.tm_hour = dt->dt_hour;
			tm.tm_min = dt->dt_min;
			tm.tm_sec = dt->dt_sec;
			off = (abs(zone) / 100) * 3600 + (abs(zone) % 100) * 60;
			t = timegm(&tm);
			t -= zone < 0 ? -off : off;
		}
		mailimf_date_time_free(dt);
	}
	free(copy);
	return t > 0 ? t : 0;
}

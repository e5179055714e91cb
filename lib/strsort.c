/* Index sort of strings: see strsort.h. A bottom-up merge sort on 32-bit
 * indices (stable, O(n log n) in every case), runs of RUN first sorted by
 * insertion; input already in order costs about n comparisons. */
#include "lib/strsort.h"

#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/xmalloc.h"

#define RUN 16

size_t
strsort_at(const struct strsort *s, size_t p)
{
	return s->order != NULL ? s->order[p] : p;
}

const char *
strsort_key(const struct strsort *s, size_t i)
{
	const char *p;

	memcpy(&p, s->base + i * s->stride + s->offset, sizeof p);
	return p;
}

/* NULL first, then strcmp's order. */
static int
cmp(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return (a != NULL) - (b != NULL);
	return strcmp(a, b);
}

/* Ties keep the index order: the sort is stable, so equal strings stay in
 * increasing index order. */
static void
insertion(const struct strsort *s, uint32_t *v, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		uint32_t x = v[i];
		const char *k = strsort_key(s, x);
		size_t j = i;

		for (; j > 0 && cmp(strsort_key(s, v[j - 1]), k) > 0; j--)
			v[j] = v[j - 1];
		v[j] = x;
	}
}

static void
merge(const struct strsort *s, const uint32_t *a, size_t na, const uint32_t *b, size_t nb,
    uint32_t *out)
{
	size_t i = 0, j = 0, k = 0;

	/* Already in order (a listing of increasing UIDLs, as most servers
	 * number them): one comparison, no merge. */
	if (na > 0 && nb > 0 && cmp(strsort_key(s, a[na - 1]), strsort_key(s, b[0])) <= 0) {
		memcpy(out, a, na * sizeof *a);
		memcpy(out + na, b, nb * sizeof *b);
		return;
	}
	while (i < na && j < nb)
		out[k++] = cmp(strsort_key(s, b[j]), strsort_key(s, a[i])) < 0 ? b[j++] : a[i++];
	memcpy(out + k, a + i, (na - i) * sizeof *a);
	k += na - i;
	memcpy(out + k, b + j, (nb - j) * sizeof *b);
}

void
strsort_init(struct strsort *s, const void *base, size_t stride, size_t offset, size_t n)
{
	uint32_t *v, *tmp, *t;

	if (n > UINT32_MAX)
		fatalx("strsort: %zu strings are too many", n);
	s->base = base;
	s->stride = stride;
	s->offset = offset;
	s->n = n;
	s->order = NULL;
	/* Most servers list increasing UIDLs: then the order is the index,
	 * and no array is needed (4 bytes a string less at the peak of a
	 * poll of a big mailbox). */
	for (size_t i = 1; i < n; i++)
		if (cmp(strsort_key(s, i - 1), strsort_key(s, i)) > 0)
			goto sort;
	return;
sort:
	v = xreallocarray(NULL, n, sizeof *v);
	for (size_t i = 0; i < n; i++)
		v[i] = (uint32_t)i;
	for (size_t i = 0; i < n; i += RUN)
		insertion(s, v + i, n - i < RUN ? n - i : RUN);
	if (n > RUN) {
		tmp = xreallocarray(NULL, n, sizeof *tmp);
		for (size_t w = RUN; w < n; w *= 2) {
			for (size_t i = 0; i < n; i += 2 * w) {
				size_t na = n - i < w ? n - i : w;
				size_t nb = n - i - na < w ? n - i - na : w;

				merge(s, v + i, na, v + i + na, nb, tmp + i);
			}
			t = v;
			v = tmp;
			tmp = t;
		}
		free(tmp);
	}
	s->order = v;
}

void
strsort_free(struct strsort *s)
{
	free(s->order);
	s->order = NULL;
	s->n = 0;
}

size_t
strsort_lower(const struct strsort *s, const char *key)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (cmp(strsort_key(s, strsort_at(s, mid)), key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

void
strsort_cursor_init(struct strsort_cursor *c, const struct strsort *s)
{
	c->s = s;
	c->at = 0;
}

size_t
strsort_cursor_find(struct strsort_cursor *c, const char *key)
{
	const struct strsort *s = c->s;
	int d = 1;

	/* Behind the cursor: a new run of keys, or keys out of order. */
	if (c->at > 0 && cmp(strsort_key(s, strsort_at(s, c->at - 1)), key) >= 0)
		c->at = strsort_lower(s, key);
	while (c->at < s->n && (d = cmp(strsort_key(s, strsort_at(s, c->at)), key)) < 0)
		c->at++;
	return c->at < s->n && d == 0 ? c->at : s->n;
}

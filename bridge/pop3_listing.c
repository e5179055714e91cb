/* The compact mailbox listing: see pop3_listing.h. */
#include "bridge/pop3_listing.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/pop3_parse.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/strsort.h"
#include "lib/xmalloc.h"

/* An arena chunk: 64 KiB minus malloc's header, so that a chunk is one
 * allocation of a round size; a UIDL (<= 70 bytes) never straddles two. */
#define CHUNK_BYTES	(64 * 1024 - 64)

struct pop3_arena_chunk {
	struct pop3_arena_chunk *next;
	char data[];
};

void
pop3_listing_init(struct pop3_listing *ls)
{
	memset(ls, 0, sizeof *ls);
}

void
pop3_listing_free(struct pop3_listing *ls)
{
	struct pop3_arena_chunk *c, *next;

	for (c = ls->chunks; c != NULL; c = next) {
		next = c->next;
		free(c);
	}
	free(ls->id);
	free(ls->status);
	free(ls->num);
	free(ls->size);
	free(ls->sized_at);
	free(ls->sized);
	pop3_listing_init(ls);
}

/* A copy of s[0..len) in the arena. */
static const char *
arena_copy(struct pop3_listing *ls, const char *s, size_t len)
{
	struct pop3_arena_chunk *c;
	char *p;

	if (len + 1 > ls->left) {
		c = xmalloc(sizeof *c + CHUNK_BYTES);
		c->next = ls->chunks;
		ls->chunks = c;
		ls->at = c->data;
		ls->left = CHUNK_BYTES;
	}
	p = ls->at;
	memcpy(p, s, len);
	p[len] = '\0';
	ls->at += len + 1;
	ls->left -= len + 1;
	return p;
}

/* Makes room for cap entries in every array there is. */
static void
resize(struct pop3_listing *ls, size_t cap)
{
	ls->id = xreallocarray(ls->id, cap, sizeof *ls->id);
	if (ls->status != NULL)
		ls->status = xreallocarray(ls->status, cap, sizeof *ls->status);
	if (ls->num != NULL)
		ls->num = xreallocarray(ls->num, cap, sizeof *ls->num);
	if (ls->size != NULL)
		ls->size = xreallocarray(ls->size, cap, sizeof *ls->size);
	ls->cap = cap;
}

/* Room for one more entry. Without a reservation the arrays grow by half
 * (a large one is its own mapping, which realloc moves without copying);
 * pop3_listing_trim gives back what is left over. */
static void
grow(struct pop3_listing *ls)
{
	if (ls->n == ls->cap)
		resize(ls, ls->cap < 1024 ? 1024 : ls->cap + ls->cap / 2);
}

void
pop3_listing_reserve(struct pop3_listing *ls, size_t n)
{
	if (n > ls->cap)
		resize(ls, n);
}

void
pop3_listing_trim(struct pop3_listing *ls)
{
	size_t cap = ls->n > 0 ? ls->n : 1;

	if (ls->cap > cap)
		resize(ls, cap);
}

/* Sets entry i's status; the array appears with the first entry that is
 * not POP3_UIDL_OK (those before it are). */
static void
set_status(struct pop3_listing *ls, size_t i, enum pop3_uidl_status st)
{
	if (ls->status == NULL && st == POP3_UIDL_OK)
		return;
	if (ls->status == NULL) {
		ls->status = xreallocarray(NULL, ls->cap, sizeof *ls->status);
		memset(ls->status, POP3_UIDL_OK, ls->n);
	}
	ls->status[i] = (unsigned char)st;
}

enum pop3_uidl_status
pop3_listing_status(const struct pop3_listing *ls, size_t i)
{
	return ls->status != NULL ? (enum pop3_uidl_status)ls->status[i] : POP3_UIDL_OK;
}

/* Appends message num; the numbers array appears with the first one that
 * is not its position. */
static size_t
append(struct pop3_listing *ls, unsigned long num)
{
	size_t i;

	grow(ls);
	i = ls->n++;
	if (ls->num == NULL && num != i + 1) {
		ls->num = xreallocarray(NULL, ls->cap, sizeof *ls->num);
		for (size_t j = 0; j < i; j++)
			ls->num[j] = j + 1;
	}
	if (ls->num != NULL)
		ls->num[i] = num;
	ls->id[i] = NULL;
	return i;
}

int
pop3_listing_add_uidl(struct pop3_listing *ls, const char *line, char **err)
{
	unsigned long num;
	const char *uid;
	size_t len, i;

	if (pop3_parse_num(line, &num) == NULL)
		return pop3_parse_bad_line(err, "UIDL", line);
	i = append(ls, num);
	if (pop3_parse_uidl_ref(line, &num, &uid, &len, NULL) == POP3_OK) {
		ls->id[i] = arena_copy(ls, uid, len);
		set_status(ls, i, POP3_UIDL_OK);
	} else
		set_status(ls, i, POP3_UIDL_INVALID);
	return POP3_OK;
}

void
pop3_listing_add_list(struct pop3_listing *ls, unsigned long num, uint64_t size)
{
	size_t i;

	grow(ls);
	if (ls->size == NULL)
		ls->size = xreallocarray(NULL, ls->cap, sizeof *ls->size);
	i = append(ls, num);
	ls->size[i] = size;
	set_status(ls, i, POP3_UIDL_NONE);
}

unsigned long
pop3_listing_num(const struct pop3_listing *ls, size_t i)
{
	return ls->num != NULL ? ls->num[i] : i + 1;
}

size_t
pop3_listing_find(const struct pop3_listing *ls, unsigned long num)
{
	size_t lo = 0, hi = ls->n;

	if (ls->num == NULL)
		return num >= 1 && num <= ls->n ? num - 1 : ls->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (ls->num[mid] == num)
			return mid;
		if (ls->num[mid] < num)
			lo = mid + 1;
		else
			hi = mid;
	}
	return ls->n;
}

/* The position of entry i in sized_at, or nsized. */
static size_t
sized_pos(const struct pop3_listing *ls, size_t i)
{
	size_t lo = 0, hi = ls->nsized;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (ls->sized_at[mid] == i)
			return mid;
		if (ls->sized_at[mid] < i)
			lo = mid + 1;
		else
			hi = mid;
	}
	return ls->nsized;
}

bool
pop3_listing_sized(const struct pop3_listing *ls, size_t i)
{
	return ls->size != NULL || sized_pos(ls, i) < ls->nsized;
}

uint64_t
pop3_listing_size(const struct pop3_listing *ls, size_t i)
{
	size_t k;

	if (ls->size != NULL)
		return ls->size[i];
	if ((k = sized_pos(ls, i)) == ls->nsized)
		fatalx("pop3 listing: the size of message %lu was never asked",
		    pop3_listing_num(ls, i));
	return ls->sized[k];
}

void
pop3_listing_set_size(struct pop3_listing *ls, size_t i, uint64_t size)
{
	if (ls->size != NULL) {
		ls->size[i] = size;
		return;
	}
	if (ls->nsized > 0 && ls->sized_at[ls->nsized - 1] >= i)
		fatalx("pop3 listing: sizes set out of order");
	/* Sizes are asked for a few messages at a time (the new ones): the
	 * arrays grow by doubling, each a small fraction of the listing. */
	if ((ls->nsized & (ls->nsized - 1)) == 0) {
		size_t cap = ls->nsized ? ls->nsized * 2 : 16;

		ls->sized_at = xreallocarray(ls->sized_at, cap, sizeof *ls->sized_at);
		ls->sized = xreallocarray(ls->sized, cap, sizeof *ls->sized);
	}
	ls->sized_at[ls->nsized] = i;
	ls->sized[ls->nsized++] = size;
}

struct pop3_entry
pop3_listing_entry(const struct pop3_listing *ls, size_t i)
{
	struct pop3_entry e;

	e.num = pop3_listing_num(ls, i);
	e.size = pop3_listing_size(ls, i);
	e.uidl_status = pop3_listing_status(ls, i);
	e.uidl = e.uidl_status == POP3_UIDL_OK ? ls->id[i] : NULL;
	return e;
}

/* Message numbers: >= 1, strictly increasing, 1..N unless allow_gaps. */
static int
check_numbers(const struct pop3_listing *ls, const char *what, bool allow_gaps, char **err)
{
	unsigned long num, prev = 0;

	for (size_t i = 0; i < ls->n; i++) {
		num = pop3_listing_num(ls, i);
		if (num == 0)
			return err_code(err, POP3_EPROTO, "%s names message 0", what);
		if (i > 0 && num <= prev)
			return err_code(err, POP3_EPROTO, "%s repeats or reorders message %lu",
			    what, num);
		if (!allow_gaps && num != i + 1)
			return err_code(err, POP3_EPROTO, "%s lacks message %zu", what, i + 1);
		prev = num;
	}
	return POP3_OK;
}

/* A UIDL naming two messages identifies neither: one of them could be
 * taken for the other (marked delivered by the other's delivery, or never
 * fetched). Every message sharing one loses it (POP3_UIDL_DUPLICATE) and
 * is identified by its fingerprint like a message without UIDL. The index
 * sort puts the entries without an id (NULL) first; 4 bytes a message
 * while it runs, none when the UIDLs come in increasing order. */
static void
mark_duplicates(struct pop3_listing *ls)
{
	struct strsort so;
	const char *u;
	size_t i, j, n = ls->n;

	strsort_init(&so, ls->id, sizeof *ls->id, 0, n);
	for (i = 0; i < n; i = j) {
		u = ls->id[strsort_at(&so, i)];
		for (j = i + 1; j < n && u != NULL && strcmp(u, ls->id[strsort_at(&so, j)]) == 0;
		    j++)
			;
		if (j - i < 2)
			continue;
		for (size_t d = i; d < j; d++)
			set_status(ls, strsort_at(&so, d), POP3_UIDL_DUPLICATE);
	}
	strsort_free(&so);
	for (i = 0; i < n; i++)
		if (pop3_listing_status(ls, i) == POP3_UIDL_DUPLICATE)
			ls->id[i] = NULL;
}

int
pop3_listing_check(struct pop3_listing *ls, const char *what, bool allow_gaps, bool marks,
    char **err)
{
	int rv;

	if ((rv = check_numbers(ls, what, allow_gaps, err)) != POP3_OK)
		return rv;
	if (marks)
		mark_duplicates(ls);
	return POP3_OK;
}

void
pop3_merge_init(struct pop3_merge *m, struct pop3_listing *ls, bool allow_gaps)
{
	memset(m, 0, sizeof *m);
	m->ls = ls;
	m->allow_gaps = allow_gaps;
	/* Every entry gets its size from this LIST: the sizes LIST n gave
	 * before (if any) are superseded. */
	free(ls->size);
	ls->size = xcalloc(ls->cap > 0 ? ls->cap : 1, sizeof *ls->size);
}

/* check_numbers() for LIST, and the comparison with UIDL, one LIST line
 * at a time: the first fault of each is kept, to be reported in
 * pop3_merge_end's order. */
void
pop3_merge_line(struct pop3_merge *m, unsigned long num, uint64_t size)
{
	size_t i = m->nlist++;

	if (m->list_err == NULL) {
		if (num == 0)
			m->list_err = xasprintf("LIST names message 0");
		else if (i > 0 && num <= m->prev)
			m->list_err = xasprintf("LIST repeats or reorders message %lu", num);
		else if (!m->allow_gaps && num != i + 1)
			m->list_err = xasprintf("LIST lacks message %zu", i + 1);
	}
	m->prev = num;
	if (i >= m->ls->n)
		return;
	if (!m->differ && pop3_listing_num(m->ls, i) != num) {
		m->differ = true;
		m->differ_at = i;
		m->differ_num = num;
	}
	m->ls->size[i] = size;
}

int
pop3_merge_end(struct pop3_merge *m, char **err)
{
	int rv;

	if (m->list_err != NULL) {
		rv = err_code(err, POP3_EPROTO, "%s", m->list_err);
		free(m->list_err);
		m->list_err = NULL;
		return rv;
	}
	if ((rv = check_numbers(m->ls, "UIDL", m->allow_gaps, err)) != POP3_OK)
		return rv;
	if (m->differ)
		return err_code(err, POP3_EPROTO, "UIDL and LIST disagree: message %lu "
		    "in one, %lu in the other", pop3_listing_num(m->ls, m->differ_at),
		    m->differ_num);
	if (m->nlist != m->ls->n)
		return err_code(err, POP3_EPROTO, "UIDL lists %zu messages, LIST %zu",
		    m->ls->n, m->nlist);
	/* The whole LIST superseded the sizes of LIST n. */
	free(m->ls->sized_at);
	free(m->ls->sized);
	m->ls->sized_at = NULL;
	m->ls->sized = NULL;
	m->ls->nsized = 0;
	return POP3_OK;
}

/* Sorting and searching a list of strings by index, without moving or
 * copying them: the strings are the `const char *` found at
 * base + i * stride + offset for i in [0, n) (an array of pointers, or a
 * pointer field of an array of structs). Used where a listing of up to
 * 10^6 UIDLs must be matched or checked for repeats with little memory
 * and in O(n log n) whatever the strings are (no hash a hostile server
 * could flood). NULL strings sort before every other string. Order is
 * strcmp's, which is SQLite's BINARY collation for strings without NUL. */
#ifndef POP3BRIDGE_STRSORT_H
#define POP3BRIDGE_STRSORT_H

#include <stddef.h>
#include <stdint.h>

struct strsort {
	const char *base;
	size_t stride, offset, n;
	uint32_t *order;        /* indices in increasing string order (equal
	                           strings in increasing index order); NULL when
	                           that is 0..n-1: read it with strsort_at */
};

/* Sorts the n strings described by base, stride and offset (n at most
 * UINT32_MAX); s->order is allocated, freed by strsort_free. The strings
 * must stay where they are while s is used. Dies when out of memory. */
void strsort_init(struct strsort *s, const void *base, size_t stride, size_t offset,
    size_t n);
void strsort_free(struct strsort *s);

/* The index of the string at position p of the order (p < s->n). */
size_t strsort_at(const struct strsort *s, size_t p);

/* The string with index i (may be NULL). */
const char *strsort_key(const struct strsort *s, size_t i);

/* The first position p in s->order whose string is not less than key:
 * s->n when there is none. */
size_t strsort_lower(const struct strsort *s, const char *key);

/* A cursor for looking up keys that mostly come in increasing order (the
 * rows of an index scan): each look-up starts from the previous one, and
 * a key smaller than the last falls back to a binary search. Sorted
 * look-ups of m keys cost O(n + m) comparisons, others O(log n) each.
 * Returns the first position p whose string equals key (the others follow
 * it in s->order), or s->n when key is not in the list. */
struct strsort_cursor {
	const struct strsort *s;
	size_t at;
};
void strsort_cursor_init(struct strsort_cursor *c, const struct strsort *s);
size_t strsort_cursor_find(struct strsort_cursor *c, const char *key);

#endif

/* The compact listing (bridge/pop3_listing.c): UIDL lines into the arena,
 * RFC 1939's numbering checks, duplicate UIDLs, the streamed merge of a
 * whole LIST, and sizes learnt one message at a time. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/pop3_listing.h"
#include "bridge/pop3_parse.h"
#include "lib/xmalloc.h"
#include "tests/unit/check.h"

static void
clear(char **err)
{
	free(*err);
	*err = NULL;
}

/* A UIDL listing of nums[i] "uid". */
static int
uidl_listing(struct pop3_listing *ls, const unsigned long *nums, const char *const *uids,
    size_t n)
{
	char line[128];

	pop3_listing_init(ls);
	for (size_t i = 0; i < n; i++) {
		snprintf(line, sizeof line, "%lu %s", nums[i], uids[i]);
		if (pop3_listing_add_uidl(ls, line, NULL) != POP3_OK)
			return -1;
	}
	return 0;
}

/* A listing line with a bad uid names a message all the same: only a line
 * without a message number spoils the listing. */
static void
test_uidl_entry(void)
{
	static const char *const bad[] = {
		"7 a b", "7 caf\xc3\xa9", "7 ", "7 "
		"0123456789012345678901234567890123456789012345678901234567890123456789X",
	};
	struct pop3_listing ls;
	char *err = NULL;

	pop3_listing_init(&ls);
	CHECK_INT(pop3_listing_add_uidl(&ls, "7 abc", NULL), POP3_OK);
	CHECK(ls.n == 1 && pop3_listing_num(&ls, 0) == 7 &&
	    pop3_listing_status(&ls, 0) == POP3_UIDL_OK && ls.status == NULL);
	CHECK_STR(ls.id[0], "abc");
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		CHECK_INT(pop3_listing_add_uidl(&ls, bad[i], NULL), POP3_OK);
		CHECK(ls.n == i + 2 && pop3_listing_num(&ls, i + 1) == 7 &&
		    ls.id[i + 1] == NULL && pop3_listing_status(&ls, i + 1) == POP3_UIDL_INVALID);
	}
	CHECK_INT(pop3_listing_add_uidl(&ls, "7", &err), POP3_EPROTO);
	CHECK_STR(err, "malformed UIDL line \"7\"");
	clear(&err);
	CHECK_INT(pop3_listing_add_uidl(&ls, "x 1", NULL), POP3_EPROTO);
	CHECK_INT(ls.n, 5);
	/* The first entry kept its status when the array appeared. */
	CHECK_INT(pop3_listing_status(&ls, 0), POP3_UIDL_OK);
	pop3_listing_free(&ls);
	CHECK(ls.n == 0 && ls.id == NULL && ls.chunks == NULL);
}

/* 300,000 UIDLs of every length span many arena chunks; every pointer
 * keeps its string, the numbers array never appears for 1..n, and trim
 * leaves exactly n. */
static void
test_arena(void)
{
	enum { N = 300000 };
	struct pop3_listing ls;
	char line[128], want[80];
	bool same = true;

	pop3_listing_init(&ls);
	for (size_t i = 0; i < N; i++) {
		snprintf(line, sizeof line, "%zu %0*zx", i + 1, (int)(1 + i % 70), i);
		CHECK(pop3_listing_add_uidl(&ls, line, NULL) == POP3_OK);
	}
	CHECK(ls.num == NULL && ls.size == NULL && ls.status == NULL && ls.n == N &&
	    ls.cap >= N);
	pop3_listing_trim(&ls);
	CHECK_INT(ls.cap, N);
	for (size_t i = 0; i < N && same; i++) {
		snprintf(want, sizeof want, "%0*zx", (int)(1 + i % 70), i);
		same = ls.id[i] != NULL && strcmp(ls.id[i], want) == 0 &&
		    pop3_listing_status(&ls, i) == POP3_UIDL_OK && pop3_listing_num(&ls, i) == i + 1;
	}
	CHECK(same);
	CHECK_INT(pop3_listing_find(&ls, 1), 0);
	CHECK_INT(pop3_listing_find(&ls, N), N - 1);
	CHECK_INT(pop3_listing_find(&ls, N + 1), N);
	CHECK_INT(pop3_listing_find(&ls, 0), N);
	CHECK_INT(pop3_listing_check(&ls, "UIDL", false, true, NULL), POP3_OK);
	pop3_listing_free(&ls);
}

/* A reservation (STAT's count) is the size of the arrays: filled
 * exactly, nothing grows; one entry more than STAT said still fits. */
static void
test_reserve(void)
{
	struct pop3_listing ls;
	char line[32];
	const char **before;

	pop3_listing_init(&ls);
	pop3_listing_reserve(&ls, 5000);
	CHECK_INT(ls.cap, 5000);
	before = ls.id;
	for (size_t i = 0; i < 5000; i++) {
		snprintf(line, sizeof line, "%zu r%zu", i + 1, i);
		CHECK(pop3_listing_add_uidl(&ls, line, NULL) == POP3_OK);
	}
	CHECK(ls.cap == 5000 && ls.id == before);
	CHECK(pop3_listing_add_uidl(&ls, "5001 r5000", NULL) == POP3_OK);
	CHECK(ls.cap > 5000 && ls.n == 5001);
	CHECK_STR(ls.id[4999], "r4999");
	CHECK_STR(ls.id[5000], "r5000");
	pop3_listing_trim(&ls);
	CHECK_INT(ls.cap, 5001);
	pop3_listing_free(&ls);
}

/* Numbers that are not 1..n get their array (from the first gap on,
 * the ones before filled in); look-ups by number search it. */
static void
test_numbers(void)
{
	static const unsigned long gap[] = { 1, 2, 5, 9 };
	static const char *const u[] = { "a", "b", "c", "d" };
	struct pop3_listing ls;
	char *err = NULL;

	CHECK(uidl_listing(&ls, gap, u, 4) == 0);
	CHECK(ls.num != NULL);
	for (size_t i = 0; i < 4; i++)
		CHECK(pop3_listing_num(&ls, i) == gap[i]);
	CHECK_INT(pop3_listing_find(&ls, 5), 2);
	CHECK_INT(pop3_listing_find(&ls, 9), 3);
	CHECK_INT(pop3_listing_find(&ls, 3), 4);
	CHECK_INT(pop3_listing_check(&ls, "UIDL", false, true, &err), POP3_EPROTO);
	CHECK_STR(err, "UIDL lacks message 3");
	clear(&err);
	CHECK_INT(pop3_listing_check(&ls, "UIDL", true, true, NULL), POP3_OK);
	pop3_listing_free(&ls);
}

/* A UIDL naming two messages identifies neither: both lose it (and are
 * identified by their fingerprint), the listing stands. */
static void
test_duplicates(void)
{
	static const unsigned long n3[] = { 1, 2, 3 };
	static const char *const ud[] = { "a", "b", "a" };
	struct pop3_listing ls;
	char *err = NULL;

	CHECK(uidl_listing(&ls, n3, ud, 3) == 0);
	CHECK_INT(pop3_listing_check(&ls, "UIDL", false, true, &err), POP3_OK);
	CHECK(err == NULL);
	CHECK(ls.id[0] == NULL && pop3_listing_status(&ls, 0) == POP3_UIDL_DUPLICATE);
	CHECK(ls.id[2] == NULL && pop3_listing_status(&ls, 2) == POP3_UIDL_DUPLICATE);
	CHECK_STR(ls.id[1], "b");
	CHECK_INT(pop3_listing_status(&ls, 1), POP3_UIDL_OK);
	pop3_listing_free(&ls);
}

/* The order pop3_parse_listing() checked a LIST against a UIDL listing
 * in before the merge was streamed: LIST's numbers, UIDL's, the first
 * position where they differ, the counts. The merge must say the same. */
static int
ref_check(const unsigned long *e, size_t n, const char *what, bool gaps, char **err)
{
	for (size_t i = 0; i < n; i++) {
		if (e[i] == 0) {
			*err = xasprintf("%s names message 0", what);
			return POP3_EPROTO;
		}
		if (i > 0 && e[i] <= e[i - 1]) {
			*err = xasprintf("%s repeats or reorders message %lu", what, e[i]);
			return POP3_EPROTO;
		}
		if (!gaps && e[i] != i + 1) {
			*err = xasprintf("%s lacks message %zu", what, i + 1);
			return POP3_EPROTO;
		}
	}
	return POP3_OK;
}

static int
ref_listing(const unsigned long *ln, size_t nl, const unsigned long *un, size_t nu,
    bool gaps, char **err)
{
	int rv;

	if ((rv = ref_check(ln, nl, "LIST", gaps, err)) != POP3_OK ||
	    (rv = ref_check(un, nu, "UIDL", gaps, err)) != POP3_OK)
		return rv;
	for (size_t i = 0; i < nl && i < nu; i++)
		if (ln[i] != un[i]) {
			*err = xasprintf("UIDL and LIST disagree: message %lu in one, %lu in the"
			    " other", un[i], ln[i]);
			return POP3_EPROTO;
		}
	if (nl != nu) {
		*err = xasprintf("UIDL lists %zu messages, LIST %zu", nu, nl);
		return POP3_EPROTO;
	}
	return POP3_OK;
}

/* LIST ln[0..nl) (sizes 100 * num) merged into the UIDL listing un/u:
 * the reference's result and error; on success every size. */
static void
same_merge(const unsigned long *ln, size_t nl, const unsigned long *un,
    const char *const *u, size_t nu, bool gaps)
{
	struct pop3_listing ls;
	struct pop3_merge m;
	char *err1 = NULL, *err2 = NULL;
	int rv1 = ref_listing(ln, nl, un, nu, gaps, &err1), rv2;

	CHECK(uidl_listing(&ls, un, u, nu) == 0);
	pop3_merge_init(&m, &ls, gaps);
	for (size_t i = 0; i < nl; i++)
		pop3_merge_line(&m, ln[i], 100 * ln[i]);
	rv2 = pop3_merge_end(&m, &err2);
	CHECK_INT(rv2, rv1);
	CHECK((err1 == NULL) == (err2 == NULL));
	if (err1 != NULL && err2 != NULL)
		CHECK_STR(err2, err1);
	for (size_t i = 0; rv1 == POP3_OK && i < nl; i++) {
		CHECK(pop3_listing_sized(&ls, i));
		CHECK(pop3_listing_size(&ls, i) == 100 * ln[i]);
		CHECK(pop3_listing_num(&ls, i) == ln[i]);
	}
	free(err1);
	free(err2);
	free(m.list_err);
	pop3_listing_free(&ls);
}

static void
test_merge(void)
{
	static const unsigned long n3[] = { 1, 2, 3 }, gap[] = { 1, 3, 4 },
	    dup[] = { 1, 2, 2 }, zero[] = { 0, 1, 2 }, down[] = { 1, 3, 2 },
	    n4[] = { 1, 2, 3, 4 };
	static const char *const u3[] = { "a", "b", "c" }, *const ud[] = { "a", "b", "a" },
	    *const u4[] = { "a", "b", "c", "d" };
	struct pop3_listing ls;
	struct pop3_merge m;
	char *err = NULL;

	same_merge(n3, 3, n3, u3, 3, false);
	same_merge(n3, 3, n3, ud, 3, false);
	same_merge(gap, 3, gap, u3, 3, false);
	same_merge(gap, 3, gap, u3, 3, true);
	same_merge(dup, 3, dup, u3, 3, true);
	same_merge(down, 3, down, u3, 3, true);
	same_merge(zero, 3, zero, u3, 3, true);
	same_merge(n3, 3, n3, u3, 2, false);
	same_merge(n3, 2, n3, u3, 3, false);
	same_merge(n4, 4, n3, u3, 3, false);
	same_merge(n3, 3, gap, u3, 3, true);
	same_merge(gap, 3, n3, u3, 3, true);
	same_merge(gap, 3, n3, u3, 3, false);
	same_merge(n3, 3, dup, u3, 3, false);
	same_merge(n3, 3, n4, u4, 4, false);
	same_merge(n3, 0, n3, u3, 0, false);

	/* The errors a server gets, word for word. */
	CHECK(uidl_listing(&ls, gap, u3, 3) == 0);
	pop3_merge_init(&m, &ls, false);
	for (size_t i = 0; i < 3; i++)
		pop3_merge_line(&m, gap[i], 1);
	CHECK_INT(pop3_merge_end(&m, &err), POP3_EPROTO);
	CHECK_STR(err, "LIST lacks message 2");
	clear(&err);
	pop3_listing_free(&ls);
	CHECK(uidl_listing(&ls, gap, u3, 3) == 0);
	pop3_merge_init(&m, &ls, true);
	for (size_t i = 0; i < 3; i++)
		pop3_merge_line(&m, n3[i], 1);
	CHECK_INT(pop3_merge_end(&m, &err), POP3_EPROTO);
	CHECK(err != NULL && strstr(err, "disagree") != NULL);
	clear(&err);
	pop3_listing_free(&ls);
	CHECK(uidl_listing(&ls, n3, u3, 2) == 0);
	pop3_merge_init(&m, &ls, false);
	for (size_t i = 0; i < 3; i++)
		pop3_merge_line(&m, n3[i], 1);
	CHECK_INT(pop3_merge_end(&m, &err), POP3_EPROTO);
	CHECK_STR(err, "UIDL lists 2 messages, LIST 3");
	clear(&err);
	pop3_listing_free(&ls);
}

/* A server without UIDL: LIST lines are the entries, each with its size. */
static void
test_list_only(void)
{
	struct pop3_listing ls;
	struct pop3_entry e;

	pop3_listing_init(&ls);
	for (unsigned long i = 1; i <= 3; i++)
		pop3_listing_add_list(&ls, i, 100 * i);
	CHECK_INT(pop3_listing_check(&ls, "LIST", false, false, NULL), POP3_OK);
	e = pop3_listing_entry(&ls, 2);
	CHECK(e.num == 3 && e.size == 300 && e.uidl == NULL && e.uidl_status == POP3_UIDL_NONE);
	CHECK(ls.id[0] == NULL && pop3_listing_sized(&ls, 0));
	pop3_listing_free(&ls);
}

/* Sizes learnt by LIST n: only those are known, each where it was set;
 * a whole LIST afterwards gives every entry its size. */
static void
test_sparse_sizes(void)
{
	enum { N = 5000 };
	struct pop3_listing ls;
	struct pop3_merge m;
	struct pop3_entry e;
	char line[64];
	bool right = true;

	pop3_listing_init(&ls);
	for (size_t i = 0; i < N; i++) {
		snprintf(line, sizeof line, "%zu u%zu", i + 1, i);
		CHECK(pop3_listing_add_uidl(&ls, line, NULL) == POP3_OK);
	}
	for (size_t i = 3; i < N; i += 7)
		pop3_listing_set_size(&ls, i, 1000 + i);
	for (size_t i = 0; i < N; i++) {
		bool want = i >= 3 && (i - 3) % 7 == 0;

		right = right && pop3_listing_sized(&ls, i) == want &&
		    (!want || pop3_listing_size(&ls, i) == 1000 + i);
	}
	CHECK(right);
	e = pop3_listing_entry(&ls, 10);
	CHECK(e.num == 11 && e.size == 1010 && e.uidl_status == POP3_UIDL_OK);
	CHECK_STR(e.uidl, "u10");
	pop3_merge_init(&m, &ls, false);
	for (size_t i = 0; i < N; i++)
		pop3_merge_line(&m, i + 1, 7 * i);
	CHECK_INT(pop3_merge_end(&m, NULL), POP3_OK);
	CHECK(ls.nsized == 0 && ls.sized == NULL);
	right = true;
	for (size_t i = 0; i < N; i++)
		right = right && pop3_listing_sized(&ls, i) && pop3_listing_size(&ls, i) == 7 * i;
	CHECK(right);
	pop3_listing_free(&ls);
}

int
main(void)
{
	TEST(test_uidl_entry);
	TEST(test_arena);
	TEST(test_reserve);
	TEST(test_numbers);
	TEST(test_duplicates);
	TEST(test_merge);
	TEST(test_list_only);
	TEST(test_sparse_sizes);
	CHECK_DONE();
}

/* A tiny unit-test harness: each CHECK prints nothing when it holds and a
 * "FAIL" line when it does not; each TEST prints one "PASS name" or
 * "FAIL name" line that tests/run counts. main() returns the failures. */
#ifndef POP3BRIDGE_CHECK_H
#define POP3BRIDGE_CHECK_H

#include <dirent.h>
#include <ftw.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int check_failures, check_test_failed;

#define CHECK(cond) do { \
	if (!(cond)) { \
		printf("  check failed %s:%d: %s\n", __FILE__, __LINE__, #cond); \
		check_test_failed = 1; \
	} \
} while (0)

#define CHECK_STR(a, b) do { \
	const char *check_a_ = (a), *check_b_ = (b); \
	if (!check_a_ || !check_b_ || strcmp(check_a_, check_b_) != 0) { \
		printf("  check failed %s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, \
		    __LINE__, #a, check_a_ ? check_a_ : "(null)", check_b_ ? check_b_ : "(null)"); \
		check_test_failed = 1; \
	} \
} while (0)

#define CHECK_INT(a, b) do { \
	long long check_a_ = (long long)(a), check_b_ = (long long)(b); \
	if (check_a_ != check_b_) { \
		printf("  check failed %s:%d: %s == %lld, expected %lld\n", __FILE__, \
		    __LINE__, #a, check_a_, check_b_); \
		check_test_failed = 1; \
	} \
} while (0)

#define TEST(fn) do { \
	check_test_failed = 0; \
	fn(); \
	printf("%s %s\n", check_test_failed ? "FAIL" : "PASS", #fn); \
	check_failures += check_test_failed; \
} while (0)

#define CHECK_DONE() return check_failures ? 1 : 0

/* Creates the test's scratch directory from tmpl ("/tmp/name.XXXXXX",
 * rewritten in place). false, with the reason on stderr, when it cannot. */
static inline bool
check_tmpdir(char *tmpl)
{
	if (mkdtemp(tmpl) == NULL) {
		perror("mkdtemp");
		return false;
	}
	return true;
}

static inline int
check_rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
	(void)sb, (void)flag, (void)f;
	return remove(p);
}

/* Removes dir and everything in it, children first, never following a
 * symbolic link out of it. */
static inline void
check_rm_tree(const char *dir)
{
	nftw(dir, check_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Entries of dir besides "." and ".." (-1 when it cannot be opened). */
static inline int
check_count_entries(const char *dir)
{
	struct dirent *de;
	DIR *d = opendir(dir);
	int n = 0;

	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
	closedir(d);
	return n;
}

/* A stop request as a pass sees it (lib/proc.h): SIGTERM blocked, then
 * raised, so that it waits pending. */
static inline void
check_stop_raise(void)
{
	sigset_t term;

	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigprocmask(SIG_BLOCK, &term, NULL);
	raise(SIGTERM);
}

/* Takes a pending SIGTERM away again (the process stays blocking it). */
static inline void
check_stop_clear(void)
{
	const struct timespec none = { 0, 0 };
	sigset_t term;

	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	while (sigtimedwait(&term, NULL, &none) == SIGTERM)
		;
}

/* Seconds since *t0 (CLOCK_MONOTONIC). */
static inline double
check_elapsed(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (t1.tv_nsec - t0->tv_nsec) / 1e9;
}

#endif

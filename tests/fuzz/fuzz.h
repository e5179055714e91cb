/* What the libFuzzer harnesses in tests/fuzz/ share: a checked assertion,
 * a scratch directory removed at exit, files written whole, a memory byte
 * source for the POP3 reader that hands out input in pieces of a chosen
 * size, and a way to keep the program's own log lines off the terminal
 * (libFuzzer and the sanitizers write to fd 2 directly, not through
 * stdio's stderr, so their reports still show).
 *
 * Each harness is one file, fuzz_NAME.c, with LLVMFuzzerTestOneInput (and
 * LLVMFuzzerInitialize when it needs setup); its seeds are in
 * tests/fuzz/corpus/NAME/, the inputs of fixed crashes in
 * tests/fuzz/regress/NAME/ (tests/fuzz/run). */
#ifndef POP3BRIDGE_FUZZ_H
#define POP3BRIDGE_FUZZ_H

#include <sys/stat.h>

#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A property the code under test must keep: a violation is a crash, which
 * libFuzzer records like any other. */
#define FUZZ_CHECK(cond, ...) do {					\
	if (!(cond)) {							\
		fprintf(fuzz_errf(), "%s:%d: property violated: %s: ",	\
		    __FILE__, __LINE__, #cond);				\
		fprintf(fuzz_errf(), __VA_ARGS__);			\
		fputc('\n', fuzz_errf());					\
		abort();						\
	}								\
} while (0)

/* The real stderr, for FUZZ_CHECK, after fuzz_quiet(). */
static FILE *fuzz_err __attribute__((unused));

static inline FILE *
fuzz_errf(void)
{
	return fuzz_err != NULL ? fuzz_err : stderr;
}

/* Sends the program's log lines (lib/log.c writes to stdio's stderr) to
 * /dev/null. */
static inline void
fuzz_quiet(void)
{
	FILE *null = fopen("/dev/null", "w");

	fuzz_err = stderr;
	if (null != NULL)
		stderr = null;
}

static char fuzz_dir_path[256] __attribute__((unused));

static inline int
fuzz_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static inline void
fuzz_rm_dir(void)
{
	if (fuzz_dir_path[0] != '\0')
		nftw(fuzz_dir_path, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A scratch directory for this process (in /dev/shm when there is one:
 * fsync there costs nothing), removed at exit. */
static inline const char *
fuzz_dir(void)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

	if (fuzz_dir_path[0] != '\0')
		return fuzz_dir_path;
	snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s/p3b-fuzz-XXXXXX", base);
	if (mkdtemp(fuzz_dir_path) == NULL) {
		perror("mkdtemp");
		abort();
	}
	atexit(fuzz_rm_dir);
	return fuzz_dir_path;
}

/* Writes data[0..len) to path (created or truncated with mode). */
static inline void
fuzz_write_file(const char *path, const void *data, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	const char *p = data;

	if (fd == -1) {
		perror(path);
		abort();
	}
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n <= 0) {
			perror(path);
			abort();
		}
		p += n;
		len -= (size_t)n;
	}
	fchmod(fd, mode);
	close(fd);
}

/* A byte source over memory (a pop3_reader_src_fn): at most step bytes
 * per read (0: as many as fit), so that every boundary a network could
 * split lands inside a line, a CRLF or a terminator. */
struct fuzz_mem {
	const uint8_t *p;
	size_t len, off, step;
};

static inline ssize_t
fuzz_mem_src(void *ctx, void *buf, size_t cap, int ms)
{
	struct fuzz_mem *m = ctx;
	size_t n = m->len - m->off;

	(void)ms;
	if (n > cap)
		n = cap;
	if (m->step != 0 && n > m->step)
		n = m->step;
	memcpy(buf, m->p + m->off, n);
	m->off += n;
	return (ssize_t)n;
}

#endif

/* faultinject.so: an LD_PRELOAD shim for the disk-fault tests. It fails
 * the Nth call of one kind of file-system call with a chosen errno, as a
 * full or failing disk would, and can count and log those calls instead.
 *
 *   FAULT_CALL   kinds, comma-separated: write (write, writev), pwrite
 *                (pwrite, pwrite64, pwritev), fsync, fdatasync, syncfs,
 *                rename (rename, renameat, renameat2), link (link,
 *                linkat), mkdir (mkdir, mkdirat), open (open, open64,
 *                openat, openat64, creat with O_CREAT or O_TMPFILE),
 *                ftruncate; "all" for every kind
 *   FAULT_NTH    the matching call that fails, counted from 1; 0 or unset:
 *                nothing fails (counting mode)
 *   FAULT_TIMES  how many matching calls fail from the Nth on (1); "all"
 *   FAULT_ERRNO  EIO (default), ENOSPC, EDQUOT, EROFS, or a number
 *   FAULT_PATH   only calls whose path (or the path of whose fd, from
 *                /proc/self/fd) contains this substring match
 *   FAULT_SCOPE  "all" (default); "accept": only processes that
 *                accepted a connection, and the processes they fork (the
 *                relay's sessions, not the daemon or the queue runner);
 *                "first-session": only the process forked to serve the
 *                first connection accepted (and what it forks), so that a
 *                second session of the same server is never touched
 *   FAULT_LOG    a file that gets one line per matching call:
 *                "SEQ PID KIND FUNCTION PATH ok|failed ERRNO"
 *
 * The count is shared by every process forked from the one that loaded
 * the shim (an anonymous shared mapping made at load time), so that "the
 * Nth fsync of an import" means the same across pop3bridge's worker
 * processes. Programs the shimmed one executes (a password_command) run
 * unshimmed: the first process notes its executable in FAULT_SELF_EXE, and
 * a process of another executable removes LD_PRELOAD and does nothing.
 * The same executable run again (the relay's fresh image, /proc/self/exe
 * --relay-child) is shimmed with a count of its own: FAULT_SCOPE=accept
 * and first-session count from its accept() on, as before the exec.
 * Only calls that go through the dynamic linker are seen: glibc's stdio
 * writes from inside libc and are not (pop3bridge's import and its relay
 * spool use write/pwrite/fsync directly; SQLite uses pwrite64, fdatasync,
 * open64, ftruncate64). */
#define _GNU_SOURCE
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum kind { K_WRITE, K_PWRITE, K_FSYNC, K_FDATASYNC, K_SYNCFS, K_RENAME, K_LINK, K_MKDIR,
    K_OPEN, K_FTRUNCATE, K_N };

static const char *const kind_names[K_N] = { "write", "pwrite", "fsync", "fdatasync",
    "syncfs", "rename", "link", "mkdir", "open", "ftruncate" };

struct shared {
	atomic_ulong seq;	/* matching calls so far, every process */
	atomic_ulong accepts;	/* connections accepted so far */
};

static struct shared *shared;
static bool kinds[K_N];
static bool active;
static unsigned long nth, times = 1;
static int fail_errno = EIO;
static char *path_filter;
static bool scope_accept, scope_first, accepted;
static unsigned long accept_no;	/* the connection this process last accepted */
static pid_t acceptor;		/* the process that accepted it */
static int log_fd = -1;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_syncfs)(int);
static int (*real_rename)(const char *, const char *);
static int (*real_renameat)(int, const char *, int, const char *);
static int (*real_renameat2)(int, const char *, int, const char *, unsigned);
static int (*real_link)(const char *, const char *);
static int (*real_linkat)(int, const char *, int, const char *, int);
static int (*real_mkdir)(const char *, mode_t);
static int (*real_mkdirat)(int, const char *, mode_t);
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_creat)(const char *, mode_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_accept)(int, struct sockaddr *, socklen_t *);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);

static int
errno_named(const char *s)
{
	static const struct { const char *name; int value; } names[] = {
		{ "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EDQUOT", EDQUOT }, { "EROFS", EROFS },
		{ "EFBIG", EFBIG }, { "EACCES", EACCES }, { "EPERM", EPERM },
	};

	for (size_t i = 0; i < sizeof names / sizeof *names; i++)
		if (strcmp(s, names[i].name) == 0)
			return names[i].value;
	return atoi(s) > 0 ? atoi(s) : EIO;
}

#define REAL(name) real_##name = dlsym(RTLD_NEXT, #name)

/* Whether this process runs the executable the shim was first loaded
 * into (noted in FAULT_SELF_EXE by that first process). */
static bool
same_program(void)
{
	char self[4096];
	const char *first = getenv("FAULT_SELF_EXE");
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);

	if (n <= 0)
		return false;
	self[n] = '\0';
	if (first == NULL || *first == '\0')
		return setenv("FAULT_SELF_EXE", self, 1) == 0;
	return strcmp(first, self) == 0;
}

__attribute__((constructor)) static void
faultinject_init(void)
{
	const char *s;

	REAL(write); REAL(writev); REAL(pwrite); REAL(pwrite64); REAL(pwritev);
	REAL(fsync); REAL(fdatasync); REAL(syncfs); REAL(rename); REAL(renameat);
	REAL(renameat2); REAL(link); REAL(linkat); REAL(mkdir); REAL(mkdirat);
	REAL(open); REAL(open64); REAL(openat); REAL(openat64); REAL(creat);
	REAL(ftruncate); REAL(ftruncate64); REAL(accept); REAL(accept4);
	if (!same_program()) {
		unsetenv("LD_PRELOAD");
		return;
	}
	if ((s = getenv("FAULT_CALL")) == NULL || *s == '\0')
		return;
	char *list = strdup(s), *cur = list, *tok;

	while (list != NULL && (tok = strsep(&cur, ",")) != NULL)
		for (int k = 0; k < K_N; k++)
			if (strcmp(tok, kind_names[k]) == 0 || strcmp(tok, "all") == 0)
				kinds[k] = true;
	free(list);
	if ((s = getenv("FAULT_NTH")) != NULL)
		nth = strtoul(s, NULL, 10);
	if ((s = getenv("FAULT_TIMES")) != NULL)
		times = strcmp(s, "all") == 0 ? (unsigned long)-1 : strtoul(s, NULL, 10);
	if ((s = getenv("FAULT_ERRNO")) != NULL)
		fail_errno = errno_named(s);
	if ((s = getenv("FAULT_PATH")) != NULL && *s != '\0')
		path_filter = strdup(s);
	if ((s = getenv("FAULT_SCOPE")) != NULL && strcmp(s, "accept") == 0)
		scope_accept = true;
	if (s != NULL && strcmp(s, "first-session") == 0)
		scope_first = true;
	if ((s = getenv("FAULT_LOG")) != NULL && *s != '\0')
		log_fd = (int)syscall(SYS_openat, AT_FDCWD, s,
		    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED)
		return;
	atomic_init(&shared->seq, 0);
	atomic_init(&shared->accepts, 0);
	active = true;
}

/* The path an fd refers to ("" if unknown). */
static void
fd_path(int fd, char *buf, size_t cap)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	n = readlink(link, buf, cap - 1);
	buf[n > 0 ? n : 0] = '\0';
}

/* Decides one call: true when it must fail (errno set). */
static bool
decide(enum kind k, const char *fn, const char *path, int fd)
{
	char buf[4096], line[4600];
	unsigned long seq;
	bool fail;
	int saved = errno, n;

	if (!active || !kinds[k] || (scope_accept && !accepted))
		return false;
	if (scope_first && (accept_no != 1 || getpid() == acceptor))
		return false;
	if (path == NULL) {
		fd_path(fd, buf, sizeof buf);
		path = buf;
	}
	if (path_filter != NULL && strstr(path, path_filter) == NULL) {
		errno = saved;
		return false;
	}
	seq = atomic_fetch_add(&shared->seq, 1) + 1;
	fail = nth != 0 && seq >= nth && seq - nth < times;
	if (log_fd != -1) {
		n = snprintf(line, sizeof line, "%lu %d %s %s %s %s %d\n", seq, (int)getpid(),
		    kind_names[k], fn, path, fail ? "failed" : "ok", fail ? fail_errno : 0);
		if (n > 0)
			syscall(SYS_write, log_fd, line, (size_t)n < sizeof line ? (size_t)n :
			    sizeof line - 1);
	}
	errno = fail ? fail_errno : saved;
	return fail;
}

static const char *
at_path(int dirfd, const char *path, char *buf, size_t cap)
{
	char dir[4096];

	if (path[0] == '/' || dirfd == AT_FDCWD)
		return path;
	fd_path(dirfd, dir, sizeof dir);
	snprintf(buf, cap, "%s/%s", dir, path);
	return buf;
}

#define FAIL_IF(k, fn, path, fd) do {				\
	if (decide((k), (fn), (path), (fd)))			\
		return -1;					\
} while (0)

ssize_t
write(int fd, const void *p, size_t n)
{
	FAIL_IF(K_WRITE, "write", NULL, fd);
	return real_write(fd, p, n);
}

ssize_t
writev(int fd, const struct iovec *v, int cnt)
{
	FAIL_IF(K_WRITE, "writev", NULL, fd);
	return real_writev(fd, v, cnt);
}

ssize_t
pwrite(int fd, const void *p, size_t n, off_t off)
{
	FAIL_IF(K_PWRITE, "pwrite", NULL, fd);
	return real_pwrite(fd, p, n, off);
}

ssize_t
pwrite64(int fd, const void *p, size_t n, off_t off)
{
	FAIL_IF(K_PWRITE, "pwrite64", NULL, fd);
	return real_pwrite64(fd, p, n, off);
}

ssize_t
pwritev(int fd, const struct iovec *v, int cnt, off_t off)
{
	FAIL_IF(K_PWRITE, "pwritev", NULL, fd);
	return real_pwritev(fd, v, cnt, off);
}

int
fsync(int fd)
{
	FAIL_IF(K_FSYNC, "fsync", NULL, fd);
	return real_fsync(fd);
}

int
fdatasync(int fd)
{
	FAIL_IF(K_FDATASYNC, "fdatasync", NULL, fd);
	return real_fdatasync(fd);
}

int
syncfs(int fd)
{
	FAIL_IF(K_SYNCFS, "syncfs", NULL, fd);
	return real_syncfs(fd);
}

int
ftruncate(int fd, off_t len)
{
	FAIL_IF(K_FTRUNCATE, "ftruncate", NULL, fd);
	return real_ftruncate(fd, len);
}

int
ftruncate64(int fd, off_t len)
{
	FAIL_IF(K_FTRUNCATE, "ftruncate64", NULL, fd);
	return real_ftruncate64(fd, len);
}

int
rename(const char *a, const char *b)
{
	FAIL_IF(K_RENAME, "rename", b, -1);
	return real_rename(a, b);
}

int
renameat(int da, const char *a, int db, const char *b)
{
	char buf[4200];

	FAIL_IF(K_RENAME, "renameat", at_path(db, b, buf, sizeof buf), -1);
	return real_renameat(da, a, db, b);
}

int
renameat2(int da, const char *a, int db, const char *b, unsigned flags)
{
	char buf[4200];

	FAIL_IF(K_RENAME, "renameat2", at_path(db, b, buf, sizeof buf), -1);
	return real_renameat2(da, a, db, b, flags);
}

int
link(const char *a, const char *b)
{
	FAIL_IF(K_LINK, "link", b, -1);
	return real_link(a, b);
}

int
linkat(int da, const char *a, int db, const char *b, int flags)
{
	char buf[4200];

	FAIL_IF(K_LINK, "linkat", at_path(db, b, buf, sizeof buf), -1);
	return real_linkat(da, a, db, b, flags);
}

int
mkdir(const char *p, mode_t m)
{
	FAIL_IF(K_MKDIR, "mkdir", p, -1);
	return real_mkdir(p, m);
}

int
mkdirat(int d, const char *p, mode_t m)
{
	char buf[4200];

	FAIL_IF(K_MKDIR, "mkdirat", at_path(d, p, buf, sizeof buf), -1);
	return real_mkdirat(d, p, m);
}

static bool
creates(int flags)
{
	return (flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE;
}

static mode_t
mode_arg(int flags, va_list ap)
{
	return creates(flags) ? (mode_t)va_arg(ap, int) : 0;
}

int
open(const char *p, int flags, ...)
{
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = mode_arg(flags, ap);
	va_end(ap);
	if (creates(flags))
		FAIL_IF(K_OPEN, "open", p, -1);
	return real_open(p, flags, m);
}

int
open64(const char *p, int flags, ...)
{
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = mode_arg(flags, ap);
	va_end(ap);
	if (creates(flags))
		FAIL_IF(K_OPEN, "open64", p, -1);
	return real_open64(p, flags, m);
}

int
openat(int d, const char *p, int flags, ...)
{
	char buf[4200];
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = mode_arg(flags, ap);
	va_end(ap);
	if (creates(flags))
		FAIL_IF(K_OPEN, "openat", at_path(d, p, buf, sizeof buf), -1);
	return real_openat(d, p, flags, m);
}

int
openat64(int d, const char *p, int flags, ...)
{
	char buf[4200];
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = mode_arg(flags, ap);
	va_end(ap);
	if (creates(flags))
		FAIL_IF(K_OPEN, "openat64", at_path(d, p, buf, sizeof buf), -1);
	return real_openat64(d, p, flags, m);
}

int
creat(const char *p, mode_t m)
{
	FAIL_IF(K_OPEN, "creat", p, -1);
	return real_creat(p, m);
}

/* FAULT_SCOPE=accept: what this process does after it accepted a
 * connection, and its children, is in scope; first-session: the children
 * forked after the first accept (they inherit accept_no 1). */
static void
note_accept(void)
{
	accepted = true;
	acceptor = getpid();
	accept_no = shared != NULL ? atomic_fetch_add(&shared->accepts, 1) + 1 : 0;
}

int
accept(int fd, struct sockaddr *a, socklen_t *l)
{
	int r = real_accept(fd, a, l);

	if (r >= 0)
		note_accept();
	return r;
}

int
accept4(int fd, struct sockaddr *a, socklen_t *l, int flags)
{
	int r = real_accept4(fd, a, l, flags);

	if (r >= 0)
		note_accept();
	return r;
}

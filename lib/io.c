#include "lib/io.h"

#include <sys/file.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/err.h"
#include "lib/xmalloc.h"

int
io_write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	ssize_t w;

	while (n > 0) {
		if ((w = write(fd, p, n)) == -1 && errno == EINTR)
			continue;
		if (w <= 0) {
			if (w == 0)
				errno = EIO;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int
io_fsync_dir(const char *path, char **err)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r;

	if (fd == -1)
		return err_errno(err, "fsync %s", path);
	if ((r = fsync(fd)) == -1)
		err_errno(err, "fsync %s", path);
	close(fd);
	return r;
}

/* fsync of the directory holding path ("/" at the top, "." for a relative
 * name without a slash). */
static int
fsync_parent(const char *path, char **err)
{
	const char *slash = strrchr(path, '/');
	char *parent;
	int r;

	if (slash == NULL)
		return io_fsync_dir(".", err);
	parent = slash == path ? xstrdup("/") : xstrndup(path, (size_t)(slash - path));
	r = io_fsync_dir(parent, err);
	free(parent);
	return r;
}

static bool
is_dir(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int
io_mkdir_p(const char *path, mode_t mode, bool durable, char **err)
{
	char *p = xstrdup(path), *s = p, c;
	int made = 0, r = 0, saved;

	for (;;) {
		s += strspn(s, "/");
		s += strcspn(s, "/");
		c = *s;
		*s = '\0';
		made = mkdir(p, mode) == 0;
		saved = errno;
		/* EEXIST, or a refusal (EACCES...) for a directory that is
		 * there all the same: only what is missing is made. The error
		 * is mkdir's, not the stat's that looked (ENOENT). */
		if (!made && saved != EEXIST && !is_dir(p)) {
			errno = saved;
			r = err_errno(err, "creating %s", p);
		}
		else if (made && durable)
			r = fsync_parent(p, err);
		*s = c;
		if (r == -1 || s[strspn(s, "/")] == '\0')
			break;
	}
	free(p);
	return r == -1 ? -1 : made;
}

int
io_tmpfile(const char *dir, char **err)
{
	char *path;
	int fd;

	if ((fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)) != -1)
		return fd;
	if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
		return err_errno(err, "creating a temporary file in %s", dir);
	path = xasprintf("%s/tmp.XXXXXX", dir);
	if ((fd = mkostemp(path, O_CLOEXEC)) == -1)
		err_errno(err, "creating %s", path);
	else
		unlink(path);
	free(path);
	return fd;
}

int
io_link_fd(int fd, const char *path)
{
	char proc[32];

	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	return linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW);
}

int
io_read_file(const char *path, size_t max, char **buf, size_t *len, char **err)
{
	struct stat sb;
	size_t cap, n = 0;
	ssize_t r;
	char *b;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1)
		return err_errno(err, "%s", path);
	if (fstat(fd, &sb) == -1) {
		err_errno(err, "%s", path);
		close(fd);
		return -1;
	}
	if (!S_ISREG(sb.st_mode)) {
		close(fd);
		return err_set(err, "%s: not a regular file", path);
	}
	if ((uint64_t)sb.st_size > max) {
		close(fd);
		return err_set(err, "%s: larger than %zu bytes", path, max);
	}
	cap = (size_t)sb.st_size + 1;
	b = xmalloc(cap);
	for (;;) {
		if (n + 1 == cap) {
			if (cap > max) {
				free(b);
				close(fd);
				return err_set(err, "%s: larger than %zu bytes", path, max);
			}
			cap *= 2;
			b = xreallocarray(b, cap, 1);
		}
		if ((r = read(fd, b + n, cap - 1 - n)) == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			err_errno(err, "reading %s", path);
			free(b);
			close(fd);
			return -1;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	b[n] = '\0';
	*buf = b;
	*len = n;
	return 0;
}

int
io_write_atomic(const char *path, const void *buf, size_t n, mode_t mode, char **err)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash ? xstrndup(path, slash == path ? 1 : (size_t)(slash - path)) :
	    xstrdup(".");
	char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
	int fd, r = -1;

	/* The same directory, so that rename(2) is atomic; O_EXCL so that a
	 * planted file or symlink of that name is not followed. */
	unlink(tmp);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)) == -1) {
		err_errno(err, "creating %s", tmp);
		goto out;
	}
	if (fchmod(fd, mode) == -1 || io_write_all(fd, buf, n) == -1 || fsync(fd) == -1) {
		err_errno(err, "writing %s", tmp);
		close(fd);
		unlink(tmp);
		goto out;
	}
	if (close(fd) == -1 || rename(tmp, path) == -1) {
		err_errno(err, "renaming %s to %s", tmp, path);
		unlink(tmp);
		goto out;
	}
	r = io_fsync_dir(dir, err);
out:
	free(dir);
	free(tmp);
	return r;
}

int
io_lock_pid(const char *path, pid_t *holder, char **err)
{
	char buf[32];
	ssize_t n;
	int fd;

	*holder = 0;
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) == -1)
		return err_errno(err, "%s", path);
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		if (errno != EWOULDBLOCK) {
			err_errno(err, "locking %s", path);
			close(fd);
			return -1;
		}
		if ((n = pread(fd, buf, sizeof buf - 1, 0)) > 0) {
			buf[n] = '\0';
			*holder = (pid_t)strtol(buf, NULL, 10);
		}
		close(fd);
		return -2;
	}
	n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) == -1 || pwrite(fd, buf, (size_t)n, 0) != n) {
		err_errno(err, "writing %s", path);
		close(fd);
		return -1;
	}
	return fd;
}

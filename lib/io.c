#include "lib/io.h"

#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
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

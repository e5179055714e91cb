/* Dovecot's subscriptions file of a Maildir++ root: a folder the maildir
 * backend creates is subscribed, as a client creating it would do, so that
 * clients showing subscribed folders only see it too. */
#include "store/maildir_subs.h"

#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/io.h"
#include "lib/log.h"
#include "lib/xmalloc.h"

/* Dovecot's subscriptions file (src/lib-storage/list/subscription-file.c):
 * version 2 starts with this header, then one mailbox per line with its
 * hierarchy levels separated by tabs; version 1 has no header and names
 * with the list's separator, "." for Maildir++. Writers hold the dotlock
 * "subscriptions.lock" and rename it over the file. */
#define SUBS_FILE "subscriptions"
#define SUBS_LOCK "subscriptions.lock"
#define SUBS_V2 "V\t2\n\n"
#define SUBS_STALE 30           /* seconds: Dovecot's stale lock timeout */
#define SUBS_WAIT_MS 10000
#define SUBS_MAX (1 << 20)

/* Takes Dovecot's dotlock: the fd of the new lock file, or -1. */
static int
subs_lock(const char *lock, char **err)
{
	struct timespec pause = { 0, 100 * 1000 * 1000 };
	struct stat sb;
	int fd, waited;

	for (waited = 0;; waited += 100) {
		fd = open(lock, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd != -1)
			break;
		if (errno != EEXIST) {
			*err = xasprintf("creating %s: %s", lock, strerror(errno));
			return -1;
		}
		/* Left by a killed writer: Dovecot overrides it after 30 s too. */
		if (stat(lock, &sb) == 0 && sb.st_mtime < time(NULL) - SUBS_STALE) {
			unlink(lock);
			continue;
		}
		if (waited >= SUBS_WAIT_MS) {
			*err = xasprintf("%s is held by another process", lock);
			return -1;
		}
		nanosleep(&pause, NULL);
	}
	return fd;
}

/* Reads the whole file into *buf (NUL-terminated): 0, or 1 when it does
 * not exist, -1 on error. */
static int
read_small(const char *path, char **buf, size_t *len, char **err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t cap = 0, n = 0;
	ssize_t r = 0;
	char *b = NULL;

	if (fd == -1) {
		if (errno == ENOENT)
			return 1;
		*err = xasprintf("opening %s: %s", path, strerror(errno));
		return -1;
	}
	for (;;) {
		if (cap - n < 2) {
			if (cap >= SUBS_MAX)
				break;
			cap = cap ? 2 * cap : 4096;
			b = xreallocarray(b, cap, 1);
		}
		if ((r = read(fd, b + n, cap - n - 1)) <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	if (r != 0) {
		*err = r == -1 ? xasprintf("reading %s: %s", path, strerror(errno)) :
		    xasprintf("%s: larger than %d bytes", path, SUBS_MAX);
		free(b);
		return -1;
	}
	b[n] = '\0';
	*buf = b;
	*len = n;
	return 0;
}

static bool
has_line(const char *buf, const char *line)
{
	size_t n = strlen(line);
	const char *p;

	for (p = buf; (p = strstr(p, line)) != NULL; p++)
		if ((p == buf || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
			return true;
	return false;
}

/* Fills the lock file with the new contents: the old ones (or a version 2
 * header for a new file), then name on a line of its own. */
static int
subs_write(int fd, const char *old, size_t len, const char *name)
{
	if (old == NULL) {
		old = SUBS_V2;
		len = strlen(SUBS_V2);
	}
	if (io_write_all(fd, old, len) == -1 ||
	    (len > 0 && old[len - 1] != '\n' && io_write_all(fd, "\n", 1) == -1) ||
	    io_write_all(fd, name, strlen(name)) == -1 || io_write_all(fd, "\n", 1) == -1)
		return -1;
	return fsync(fd);
}

/* Under the lock: adds the folder of directory dir to the file unless it
 * is there. 1 added, 0 present, -1 error. */
static int
subs_update(const char *path, const char *lock, int fd, const char *dir, char **err)
{
	char *old = NULL, *name, *p;
	size_t len = 0;
	bool v2;
	int r;

	if ((r = read_small(path, &old, &len, err)) == -1)
		return -1;
	/* A new file is started as version 2, as Dovecot 2.3 does; an old
	 * one keeps its version. Levels are mUTF-7: never a tab or newline,
	 * so nothing needs Dovecot's tab-escaping. */
	v2 = r == 1 || strncmp(old, SUBS_V2, strlen(SUBS_V2)) == 0;
	name = xstrdup(dir + 1);
	if (v2)
		for (p = name; (p = strchr(p, '.')) != NULL; p++)
			*p = '\t';
	r = 0;
	if (old == NULL || !has_line(old + (v2 ? strlen(SUBS_V2) : 0), name)) {
		if (subs_write(fd, old, len, name) == -1 || rename(lock, path) == -1) {
			*err = xasprintf("writing %s: %s", lock, strerror(errno));
			r = -1;
		} else
			r = 1;
	}
	free(name);
	free(old);
	return r;
}

void
maildir_subs_add(const char *root, const char *dir, const char *account)
{
	char *path = xasprintf("%s/" SUBS_FILE, root);
	char *lock = xasprintf("%s/" SUBS_LOCK, root);
	char *err = NULL;
	int fd, r = -1;

	if ((fd = subs_lock(lock, &err)) != -1) {
		r = subs_update(path, lock, fd, dir, &err);
		close(fd);
		if (r != 1)
			unlink(lock);
	}
	if (r == -1)
		log_warnx("%s: not subscribing folder %s: %s", account, dir, err);
	free(err);
	free(path);
	free(lock);
}

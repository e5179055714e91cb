/* The disk floor of a Maildir import: writes the same messages as files
 * the way a careful Maildir writer must (create in tmp/, write, rename into
 * new/), with nothing else going on -- no network, no parsing, no database.
 * Written in C so that interpreter overhead does not flatter the tools
 * measured against it. Built and run by bench/run.
 *
 *   floor_writer MODE MAILDIR LIST [BATCH]
 *     MODE   none    no fsync at all (the page cache only)
 *            fsync   fsync each file before its rename, fsync new/ once
 *                    per BATCH files
 *            syncfs  per BATCH files: write them all, one syncfs(), rename
 *                    them all, fsync new/ (what pop3bridge does per batch)
 *     LIST   one source path a line; every file is read (and CRLF made LF,
 *            as a Maildir holds it) into memory before the clock starts.
 *   Prints {"files": N, "bytes": B, "seconds": S} (S: the writing only). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct msg {
	char *data;
	size_t len;
};

static void
die(const char *what, const char *arg)
{
	fprintf(stderr, "floor_writer: %s %s: %s\n", what, arg ? arg : "", strerror(errno));
	exit(1);
}

static struct msg
load(const char *path)
{
	struct msg m = { 0 };
	struct stat st;
	size_t i, j;
	ssize_t r;
	int fd;

	if ((fd = open(path, O_RDONLY)) == -1 || fstat(fd, &st) == -1)
		die("open", path);
	if ((m.data = malloc(st.st_size + 1)) == NULL)
		die("malloc", path);
	for (i = 0; i < (size_t)st.st_size; i += r)
		if ((r = read(fd, m.data + i, st.st_size - i)) <= 0)
			die("read", path);
	close(fd);
	for (i = j = 0; i < (size_t)st.st_size; i++)
		if (!(m.data[i] == '\r' && i + 1 < (size_t)st.st_size && m.data[i + 1] == '\n'))
			m.data[j++] = m.data[i];
	m.len = j;
	return m;
}

static void
write_all(int fd, const char *p, size_t n, const char *path)
{
	ssize_t r;

	for (; n > 0; p += r, n -= r)
		if ((r = write(fd, p, n)) <= 0)
			die("write", path);
}

#define NAME_MAX_LEN 128

/* close the written file and move it from tmp/ into new/ */
static void
finish(const char *maildir, const char *name, int fd)
{
	char src[4096], dst[4096];

	close(fd);
	snprintf(src, sizeof src, "%s/tmp/%s", maildir, name);
	snprintf(dst, sizeof dst, "%s/new/%s", maildir, name);
	if (rename(src, dst) == -1)
		die("rename", src);
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
	struct msg *msgs = NULL;
	size_t n = 0, cap = 0, batch, bytes = 0;
	char line[4096], tmp[4096], dir[4096], *names;
	int mode, dirfd, *fds;
	double t0, t1;
	FILE *list;

	if (argc < 4) {
		fprintf(stderr, "usage: floor_writer none|fsync|syncfs MAILDIR LIST [BATCH]\n");
		return 2;
	}
	mode = strcmp(argv[1], "none") == 0 ? 0 : strcmp(argv[1], "fsync") == 0 ? 1 :
	    strcmp(argv[1], "syncfs") == 0 ? 2 : -1;
	if (mode < 0)
		return 2;
	batch = argc > 4 ? strtoul(argv[4], NULL, 10) : 500;
	if (batch == 0)
		batch = 1;
	if ((list = fopen(argv[3], "r")) == NULL)
		die("open", argv[3]);
	while (fgets(line, sizeof line, list)) {
		line[strcspn(line, "\n")] = '\0';
		if (!*line)
			continue;
		if (n == cap && (msgs = realloc(msgs, (cap = cap ? cap * 2 : 1024) * sizeof *msgs)) == NULL)
			die("realloc", NULL);
		msgs[n++] = load(line);
	}
	fclose(list);
	if ((fds = calloc(batch, sizeof *fds)) == NULL ||
	    (names = calloc(batch, NAME_MAX_LEN)) == NULL)
		die("calloc", NULL);
	snprintf(dir, sizeof dir, "%s/new", argv[2]);
	if ((dirfd = open(dir, O_RDONLY | O_DIRECTORY)) == -1)
		die("open", dir);

	t0 = now();
	for (size_t at = 0; at < n; at += batch) {
		size_t k, end = at + batch < n ? at + batch : n;

		for (k = at; k < end; k++) {
			char *name = names + (k - at) * NAME_MAX_LEN;

			snprintf(name, NAME_MAX_LEN, "%ld.M%zuP%d.floor,S=%zu", (long)time(NULL), k,
			    (int)getpid(), msgs[k].len);
			snprintf(tmp, sizeof tmp, "%s/tmp/%s", argv[2], name);
			if ((fds[k - at] = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600)) == -1)
				die("open", tmp);
			write_all(fds[k - at], msgs[k].data, msgs[k].len, tmp);
			bytes += msgs[k].len;
			if (mode == 1 && fsync(fds[k - at]) == -1)
				die("fsync", tmp);
			if (mode != 2)
				finish(argv[2], name, fds[k - at]);
		}
		if (mode == 2) {
			if (syncfs(fds[0]) == -1)
				die("syncfs", argv[2]);
			for (k = at; k < end; k++)
				finish(argv[2], names + (k - at) * NAME_MAX_LEN, fds[k - at]);
		}
		if (mode != 0 && fsync(dirfd) == -1)
			die("fsync", dir);
	}
	t1 = now();
	printf("{\"files\": %zu, \"bytes\": %zu, \"seconds\": %.6f}\n", n, bytes, t1 - t0);
	return 0;
}

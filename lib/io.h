/* File-system steps every module takes the same way: whole writes,
 * durable directories, mkdir -p, anonymous temp files. Functions taking
 * err return -1 with *err allocated ("creating PATH: why") on failure. */
#ifndef POP3BRIDGE_IO_H
#define POP3BRIDGE_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Writes all n bytes of buf to fd, going on after EINTR and short writes.
 * 0, or -1 with errno set (EIO when the file took nothing). */
int io_write_all(int fd, const void *buf, size_t n);

/* fsync(2) of the directory path, so that the names in it (a rename, a
 * new file or directory) survive a crash. 0, or -1 with *err (may be
 * NULL) set to "fsync PATH: why". */
int io_fsync_dir(const char *path, char **err);

/* mkdir -p: creates path and every missing parent with mode. When
 * durable, the parent of each directory made is fsynced, so that the whole
 * chain survives a crash. Returns 1 when path itself was made, 0 when it
 * existed, -1 with *err set. */
int io_mkdir_p(const char *path, mode_t mode, bool durable, char **err);

/* A new anonymous file (mode 0600, read-write, close-on-exec) in the
 * existing directory dir: O_TMPFILE, so that nothing is left behind after
 * a crash and the file can still be given a name with linkat(2) through
 * /proc/self/fd. Where the file system has no O_TMPFILE, a named temp
 * file is made and unlinked at once (it can then only be copied, not
 * linked). Returns the fd, or -1 with *err set. */
int io_tmpfile(const char *dir, char **err);

/* Reads the whole regular file path into *buf (allocated, NUL-terminated
 * beyond *len bytes, which may hold NULs). A file larger than max bytes
 * is refused. 0, or -1 with *err set ("PATH: why"). */
int io_read_file(const char *path, size_t max, char **buf, size_t *len, char **err);

/* Replaces path atomically with buf[0..n) and mode (exactly: the umask
 * does not narrow it): a
 * temp file in path's directory, written and fsynced, renamed over path,
 * the directory fsynced. A reader sees the old file or the new one, never
 * a part. 0, or -1 with *err set (the temp file removed). */
int io_write_atomic(const char *path, const void *buf, size_t n, mode_t mode, char **err);

/* An exclusive flock(2) on path (made 0600 when missing), with this
 * process's pid written in it: returns the fd (close-on-exec; the lock
 * lasts while it, or a copy a child inherited, is open), -2 when another
 * process holds it (*holder its pid as the file says, 0 when unknown), or
 * -1 with *err set. */
int io_lock_pid(const char *path, pid_t *holder, char **err);

#endif

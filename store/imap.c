/* The IMAP APPEND delivery backend (see store/imap.h for the contract):
 * the entry points of struct deliver_backend. The session, login,
 * folders and APPEND live in the imap_*.c files (store/imap_priv.h). */
#include "store/imap.h"

#include <sys/mman.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/err.h"
#include "lib/io.h"
#include "lib/log.h"
#include "lib/net.h"
#include "lib/xmalloc.h"
#include "store/imap_priv.h"
#include "store/outbox.h"

#define IMAP_TIMEOUT_DEFAULT 60

/* The class of the failure being returned: a backend entry point returns
 * -1 only as DELIVER_EIO. */
static int
result(struct imap *im, int r)
{
	return r == 0 ? 0 : (int)im->why;
}

/* A delivery key names a file in the spool and goes into SEARCH. */
static int
check_key(const char *key, char **err)
{
	if (key[0] == '\0' || key[0] == '.' || strchr(key, '/') != NULL ||
	    strchr(key, '"') != NULL || strchr(key, ' ') != NULL ||
	    !conf_safe_name(key, IMAP_NAME_MAX)) {
		*err = xasprintf("invalid delivery key \"%s\"", key);
		return -1;
	}
	return 0;
}

static void
im_close(void *ctx)
{
	struct imap *im = ctx;

	if (im == NULL)
		return;
	if (im->m != NULL) {
		/* LOGOUT is a courtesy, within one timeout; an unusable stream
		 * is just closed (reset): mailimap_free() would send LOGOUT on
		 * any stream left open and wait for the answer. */
		if (!im->broken && im->m->imap_stream != NULL) {
			imap_abortive_close(im, false);
			imap_deadline(im, 0);
			mailimap_logout(im->m);
		}
		if (im->m->imap_stream != NULL) {
			mailstream_close(im->m->imap_stream);
			im->m->imap_stream = NULL;
		}
		mailimap_free(im->m);
	}
	imap_folders_free(im);
	imap_hits_free(im);
	free(im->selected);
	free(im->account);
	free(im->where);
	free(im->spool);
	free(im->buf);
	free(im);
}

static int
im_open(const struct conf *c, const struct conf_account *a, void **ctx, char **err)
{
	struct imap *im = xcalloc(1, sizeof *im);
	char *w;
	int r;

	im->account = xstrdup(a->name ? a->name : "");
	im->srv = &c->store.imap;
	w = net_where(im->srv->host, im->srv->port);
	im->where = xasprintf("imap store %s", w);
	free(w);
	im->spool = outbox_spool_area(c->state_dir, "imap");
	im->timeout = im->srv->timeout ? im->srv->timeout : IMAP_TIMEOUT_DEFAULT;
	im->buf = xmalloc(IMAP_CHUNK);
	im->why = DELIVER_EIO;
	im->state = -1;
	if (im->srv->host == NULL || *im->srv->host == '\0' || im->srv->port == 0 ||
	    im->srv->port > 65535)
		r = err_at(err, im->where, "no host or port configured");
	else if ((r = imap_connect(im, err)) == 0 && (r = imap_login(im, c, a, err)) == 0)
		r = imap_read_namespace(im, err);
	if (r == -1) {
		r = result(im, r);
		im_close(im);
		return r;
	}
	*ctx = im;
	return 0;
}

/* A temp file in memory for a small message, while the batch's memory
 * files stay under IMAP_MEM_BATCH: most mail is a few KB, and a file on
 * disk costs an inode made and freed, journaled, for every message, while
 * the file is only a buffer between RETR and APPEND. After a crash the
 * message is found in the store by its key, or fetched again. -1 when it
 * does not fit (or memfd_create fails): the caller uses the disk. */
#define IMAP_MEM_MSG	(1024 * 1024)
#define IMAP_MEM_BATCH	(16 * 1024 * 1024)
static int
mem_tmp(struct imap *im, uint64_t size)
{
	int fd;

	if (size == 0 || size > IMAP_MEM_MSG || im->mem_bytes + size > IMAP_MEM_BATCH)
		return -1;
	if ((fd = memfd_create("pop3bridge-imap", MFD_CLOEXEC)) != -1)
		im->mem_bytes += size;
	return fd;
}

static int
im_tmp_create(void *ctx, const char *folder, const char *key, uint64_t size, int *fd,
    char **err)
{
	struct imap *im = ctx;
	char *path, *line;

	(void)folder;
	*fd = -1;
	if (check_key(key, err) == -1)
		return -1;
	if ((*fd = mem_tmp(im, size)) == -1 && !im->spool_ready) {
		if (io_mkdir_p(im->spool, 0700, false, err) == -1)
			return -1;
		im->spool_ready = true;
	}
	path = imap_spool_path(im, key);
	/* On disk: nameless where the file system can (most): nothing to
	 * remove after APPEND, nothing left by a crash. */
	if (*fd == -1 && !im->spool_named &&
	    (*fd = open(im->spool, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)) == -1 &&
	    (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL))
		im->spool_named = true;
	if (*fd == -1 && im->spool_named)
		*fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
	if (*fd == -1)
		*err = xasprintf("creating %s: %s", im->spool_named ? path : im->spool,
		    strerror(errno));
	else {
		/* The key travels with the message: find() searches for it. */
		line = xasprintf(IMAP_KEY_HEADER ": %s\r\n", key);
		if (io_write_all(*fd, line, strlen(line)) == -1) {
			*err = xasprintf("writing %s: %s", path, strerror(errno));
			close(*fd);
			if (im->spool_named)
				unlink(path);
			*fd = -1;
		}
		free(line);
	}
	free(path);
	return *fd == -1 ? -1 : 0;
}

static int
im_tmp_discard(void *ctx, const char *folder, const char *key, char **err)
{
	struct imap *im = ctx;
	char *path;
	int r = 0;

	(void)folder;
	if (check_key(key, err) == -1)
		return -1;
	path = imap_spool_path(im, key);
	if (unlink(path) == -1 && errno != ENOENT && errno != ENOTDIR) {
		*err = xasprintf("removing %s: %s", path, strerror(errno));
		r = -1;
	}
	free(path);
	return r;
}

static int
im_tmp_cleanup(void *ctx, const char *folder, const char *key_tag, char **err)
{
	struct imap *im = ctx;

	(void)folder;
	return deliver_tmp_sweep(im->spool, key_tag, im->account, err);
}

static int
im_deliver(void *ctx, struct deliver_msg *msgs, size_t n, char **err)
{
	struct imap *im = ctx;
	size_t i;

	im->why = DELIVER_EIO;
	im->mem_bytes = 0;	/* every temp file of the batch is closed here */
	for (i = 0; i < n; i++)
		if (check_key(msgs[i].key, err) == -1) {
			for (; i < n; i++)	/* we own every fd */
				close(msgs[i].fd);
			for (i = 0; i < n; i++)
				msgs[i].fd = -1;
			return DELIVER_EIO;
		}
	return result(im, imap_append_batch(im, msgs, n, err));
}

static int
im_find(void *ctx, const char *folder, const char *key, char **loc, char **err)
{
	struct imap *im = ctx;
	int r;

	im->why = DELIVER_EIO;
	if (check_key(key, err) == -1)
		return DELIVER_EIO;
	r = imap_find(im, folder, key, loc, err);
	return r == -1 ? result(im, r) : r;
}

static void
im_recovering(void *ctx, const char *const *folders, const char *const *keys, size_t n)
{
	imap_recovering(ctx, folders, keys, n);
}

const struct deliver_backend imap_backend = {
	.name = "imap",
	.crlf = 1,
	.special_use = true,
	.open = im_open,
	.tmp_create = im_tmp_create,
	.tmp_discard = im_tmp_discard,
	.tmp_cleanup = im_tmp_cleanup,
	.deliver = im_deliver,
	.find = im_find,
	.recovering = im_recovering,
	.close = im_close,
};

/* The IMAP APPEND delivery backend (see store/imap.h for the contract):
 * the entry points of struct deliver_backend. The session, login,
 * folders and APPEND live in the imap_*.c files (store/imap_priv.h). */
#include "store/imap.h"

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
		/* LOGOUT is a courtesy; an unusable stream is just closed. */
		if (!im->broken && im->m->imap_stream != NULL)
			mailimap_logout(im->m);
		mailimap_free(im->m);
	}
	imap_folders_free(im);
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
	int r;

	im->account = xstrdup(a->name ? a->name : "");
	im->srv = &c->store.imap;
	im->where = xasprintf("imap store %s:%u", im->srv->host ? im->srv->host : "?",
	    im->srv->port);
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

static int
im_tmp_create(void *ctx, const char *folder, const char *key, int *fd, char **err)
{
	struct imap *im = ctx;
	char *path, *line;

	(void)folder;
	*fd = -1;
	if (check_key(key, err) == -1 ||
	    io_mkdir_p(im->spool, 0700, false, err) == -1)
		return -1;
	path = imap_spool_path(im, key);
	*fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
	if (*fd == -1)
		*err = xasprintf("creating %s: %s", path, strerror(errno));
	else {
		/* The key travels with the message: find() searches for it. */
		line = xasprintf(IMAP_KEY_HEADER ": %s\r\n", key);
		if (io_write_all(*fd, line, strlen(line)) == -1) {
			*err = xasprintf("writing %s: %s", path, strerror(errno));
			close(*fd);
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

/* EXAMINE mbox unless it is selected already (read-only: \Recent and
 * flags stay as they are for the user's clients). */
static int
examine(struct imap *im, const char *mbox, char **err)
{
	int r;

	if (im->selected != NULL && strcmp(im->selected, mbox) == 0)
		return 0;
	free(im->selected);
	im->selected = NULL;
	if ((r = mailimap_examine(im->m, mbox)) != MAILIMAP_NO_ERROR)
		return imap_fail(im, err, "EXAMINE", r);
	im->selected = xstrdup(mbox);
	return 0;
}

/* UID SEARCH HEADER X-Pop3bridge-Key KEY: the first UID found, or 0.
 * Servers match a substring; keys cannot hold one another (same-width
 * seconds, "." after the tag), so a hit is this key. */
static int
search_key(struct imap *im, const char *key, uint32_t *uid, char **err)
{
	struct mailimap_search_key *sk;
	clist *res = NULL;
	int r;

	sk = mailimap_search_key_new_header(xstrdup(IMAP_KEY_HEADER), xstrdup(key));
	if (sk == NULL)
		fatalx("imap: out of memory");
	r = mailimap_uid_search(im->m, NULL, sk, &res);
	mailimap_search_key_free(sk);
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail(im, err, "UID SEARCH", r);
	*uid = 0;
	if (res != NULL && clist_begin(res) != NULL)
		*uid = *(uint32_t *)clist_content(clist_begin(res));
	if (res != NULL)
		mailimap_search_result_free(res);
	return 0;
}

static int
im_find(void *ctx, const char *folder, const char *key, char **loc, char **err)
{
	struct imap *im = ctx;
	struct imap_folder *f;
	uint32_t uid = 0;
	int r;

	im->why = DELIVER_EIO;
	if (check_key(key, err) == -1 || imap_usable(im, err) == -1 ||
	    (f = imap_folder_get(im, folder, false, err)) == NULL)
		return result(im, -1);
	if (!f->ready) {
		if ((r = imap_mbox_exists(im, f->mbox, err)) != 1)
			return result(im, r);	/* no folder: not delivered */
		f->ready = true;
	}
	if (examine(im, f->mbox, err) == -1 || search_key(im, key, &uid, err) == -1)
		return result(im, -1);
	if (uid == 0)
		return 0;
	*loc = imap_location(folder, im->m->imap_selection_info != NULL ?
	    im->m->imap_selection_info->sel_uidvalidity : 0, uid);
	return 1;
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
	.close = im_close,
};

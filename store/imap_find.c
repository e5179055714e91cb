/* Finding a delivery again by its key (store/imap_priv.h): the find() of
 * the IMAP backend, which settles the rows a killed pass left.
 *
 * One key: EXAMINE (read-only: \Recent and flags stay as they are for the
 * user's clients), then UID SEARCH HEADER X-Pop3bridge-Key KEY. Servers
 * match a substring; keys cannot hold one another (same-width seconds,
 * "." after the tag), so a hit is this key.
 *
 * A whole recovery at once (imap_recovering): one UID SEARCH OR ... per
 * IMAP_FIND_CHUNK keys, then one UID FETCH of the key header of the hits
 * to tell which key each one is. Measured on Dovecot 2.3, 500 keys in a
 * mailbox of 5,000: 0.7 s against 15 s for a SEARCH per key.
 *
 * Not found is answered only once the folder is quiet: a killed pass's
 * connection is reset (imap_abortive_close), but the server may still be
 * finishing commands it had read in full, and an APPEND that lands after
 * our search would be a message stored twice. So before the first "not
 * found" of a recovery, the folder's UIDNEXT must stay the same for
 * IMAP_SETTLE_MS (at most the timeout), and the keys are searched again. */
#include "store/imap_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "lib/deadline.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xmalloc.h"
#include "store/imap.h"

#define IMAP_FIND_CHUNK	200
#define IMAP_SETTLE_MS	1000

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

static struct mailimap_search_key *
key_search(const char *key)
{
	struct mailimap_search_key *sk;

	sk = mailimap_search_key_new_header(xstrdup(IMAP_KEY_HEADER), xstrdup(key));
	if (sk == NULL)
		fatalx("imap: out of memory");
	return sk;
}

/* UID SEARCH sk (freed): the UIDs found, allocated in *uids. */
static int
search(struct imap *im, struct mailimap_search_key *sk, uint32_t **uids, size_t *n,
    char **err)
{
	clist *res = NULL;
	clistiter *it;
	int r;

	r = mailimap_uid_search(im->m, NULL, sk, &res);
	mailimap_search_key_free(sk);
	/* libetpan hands the result over also when the search failed. */
	if (r != MAILIMAP_NO_ERROR) {
		if (res != NULL)
			mailimap_search_result_free(res);
		return imap_fail(im, err, "UID SEARCH", r);
	}
	*n = 0;
	*uids = xcalloc(res != NULL ? (size_t)clist_count(res) + 1 : 1, sizeof **uids);
	for (it = res != NULL ? clist_begin(res) : NULL; it != NULL; it = clist_next(it))
		(*uids)[(*n)++] = *(uint32_t *)clist_content(it);
	if (res != NULL)
		mailimap_search_result_free(res);
	return 0;
}

/* UIDNEXT of mbox (STATUS), 0 when the server does not say. */
static int
uidnext(struct imap *im, const char *mbox, uint32_t *next, char **err)
{
	struct mailimap_status_att_list *atts = mailimap_status_att_list_new_empty();
	struct mailimap_mailbox_data_status *st = NULL;
	struct mailimap_status_info *si;
	clistiter *it;
	int r;

	if (atts == NULL || mailimap_status_att_list_add(atts, MAILIMAP_STATUS_ATT_UIDNEXT) != 0)
		fatalx("imap: out of memory");
	r = mailimap_status(im->m, mbox, atts, &st);
	mailimap_status_att_list_free(atts);
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail(im, err, "STATUS", r);
	*next = 0;
	for (it = st->st_info_list ? clist_begin(st->st_info_list) : NULL; it != NULL;
	    it = clist_next(it)) {
		si = clist_content(it);
		if (si->st_att == MAILIMAP_STATUS_ATT_UIDNEXT)
			*next = si->st_value;
	}
	mailimap_mailbox_data_status_free(st);
	return 0;
}

/* Waits until no other session adds to f (see the top of the file); the
 * selected mailbox then shows what arrived meanwhile (NOOP). */
static int
settle(struct imap *im, struct imap_folder *f, char **err)
{
	char buf[DEADLINE_TEXT_MAX];
	enum deadline_end end;
	uint32_t before, after;
	unsigned waited = 0;
	int r;

	if (uidnext(im, f->mbox, &before, err) == -1)
		return -1;
	for (;;) {
		/* A stop or the pass's deadline ends the wait too. */
		if ((end = deadline_check(NULL)) != DEADLINE_NONE) {
			im->broken = true;
			im->why = DELIVER_ETEMP;
			return err_at(err, im->where, "waiting for %s to be quiet: %s", f->mbox,
			    deadline_text(end, deadline_pass_seconds(), buf, sizeof buf));
		}
		usleep(IMAP_SETTLE_MS * 1000);
		waited += IMAP_SETTLE_MS;
		if (uidnext(im, f->mbox, &after, err) == -1)
			return -1;
		if (after == before || waited >= im->timeout * 1000)
			break;
		before = after;
	}
	f->settled = true;
	log_debug("%s: %s: %s quiet after %u ms", im->account, im->where, f->mbox, waited);
	if ((r = mailimap_noop(im->m)) != MAILIMAP_NO_ERROR)
		return imap_fail(im, err, "NOOP", r);
	return 0;
}

/*
 * A recovery at once.
 */

struct imap_hit {
	char *folder;		/* as the caller names it */
	char *key;
	uint32_t uidvalidity, uid;	/* uid 0: looked for, not there */
};

static struct imap_hit *
hit_get(struct imap *im, const char *folder, const char *key)
{
	for (size_t i = 0; i < im->n_hits; i++)
		if (strcmp(im->hits[i].key, key) == 0 && strcmp(im->hits[i].folder, folder) == 0)
			return &im->hits[i];
	return NULL;
}

/* The key in the X-Pop3bridge-Key header block FETCH returned, or NULL. */
static char *
fetched_key(const char *p, size_t n)
{
	static const char name[] = IMAP_KEY_HEADER ":";
	size_t i = sizeof name - 1, j;

	if (p == NULL || n < i || strncasecmp(p, name, i) != 0)
		return NULL;
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	for (j = i; j < n && p[j] != '\r' && p[j] != '\n'; j++)
		;
	return j > i ? xstrndup(p + i, j - i) : NULL;
}

/* UID FETCH uids (BODY.PEEK[HEADER.FIELDS (X-Pop3bridge-Key)]): each hit
 * among the wanted keys of folder gets its UID. */
static int
fetch_keys(struct imap *im, const char *folder, const uint32_t *uids, size_t n, char **err)
{
	struct mailimap_set *set = mailimap_set_new_empty();
	struct mailimap_fetch_type *ft = mailimap_fetch_type_new_fetch_att_list_empty();
	clist *names = clist_new(), *res = NULL;
	struct mailimap_msg_att *ma;
	struct mailimap_msg_att_item *item;
	struct imap_hit *h;
	clistiter *it, *jt;
	uint32_t uid;
	char *key;
	int r;

	if (set == NULL || ft == NULL || names == NULL ||
	    clist_append(names, xstrdup(IMAP_KEY_HEADER)) != 0)
		fatalx("imap: out of memory");
	for (size_t i = 0; i < n; i++)
		if (mailimap_set_add_single(set, uids[i]) != MAILIMAP_NO_ERROR)
			fatalx("imap: out of memory");
	if (mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_uid()) != 0 ||
	    mailimap_fetch_type_new_fetch_att_list_add(ft,
	    mailimap_fetch_att_new_body_peek_section(mailimap_section_new_header_fields(
	    mailimap_header_list_new(names)))) != 0)
		fatalx("imap: out of memory");
	r = mailimap_uid_fetch(im->m, set, ft, &res);
	mailimap_set_free(set);
	mailimap_fetch_type_free(ft);
	if (r != MAILIMAP_NO_ERROR) {
		if (res != NULL)
			mailimap_fetch_list_free(res);
		return imap_fail(im, err, "UID FETCH", r);
	}
	for (it = res != NULL ? clist_begin(res) : NULL; it != NULL; it = clist_next(it)) {
		ma = clist_content(it);
		uid = 0;
		key = NULL;
		for (jt = clist_begin(ma->att_list); jt != NULL; jt = clist_next(jt)) {
			item = clist_content(jt);
			if (item->att_type != MAILIMAP_MSG_ATT_ITEM_STATIC)
				continue;
			if (item->att_data.att_static->att_type == MAILIMAP_MSG_ATT_UID)
				uid = item->att_data.att_static->att_data.att_uid;
			else if (item->att_data.att_static->att_type ==
			    MAILIMAP_MSG_ATT_BODY_SECTION && key == NULL) {
				struct mailimap_msg_att_body_section *bs =
				    item->att_data.att_static->att_data.att_body_section;
				if (bs != NULL)
					key = fetched_key(bs->sec_body_part, bs->sec_length);
			}
		}
		/* Only an exact wanted key counts: a stranger's header
		 * naming something else matches nothing. */
		if (uid != 0 && key != NULL && (h = hit_get(im, folder, key)) != NULL &&
		    h->uid == 0) {
			h->uid = uid;
			h->uidvalidity = im->m->imap_selection_info != NULL ?
			    im->m->imap_selection_info->sel_uidvalidity : 0;
		}
		free(key);
	}
	if (res != NULL)
		mailimap_fetch_list_free(res);
	return 0;
}

/* Looks up every key of folder still without a UID, IMAP_FIND_CHUNK at a
 * time; *missing counts those still not found. */
static int
search_folder(struct imap *im, const char *folder, size_t *missing, char **err)
{
	struct mailimap_search_key *sk;
	uint32_t *uids;
	size_t i = 0, k, n;
	int r = 0;

	*missing = 0;
	while (r == 0 && i < im->n_hits) {
		for (sk = NULL, k = 0; i < im->n_hits && k < IMAP_FIND_CHUNK; i++) {
			if (im->hits[i].uid != 0 || strcmp(im->hits[i].folder, folder) != 0)
				continue;
			sk = sk == NULL ? key_search(im->hits[i].key) :
			    mailimap_search_key_new_or(sk, key_search(im->hits[i].key));
			if (sk == NULL)
				fatalx("imap: out of memory");
			k++;
		}
		if (sk == NULL)
			break;
		if ((r = search(im, sk, &uids, &n, err)) == 0) {
			if (n > 0)
				r = fetch_keys(im, folder, uids, n, err);
			free(uids);
		}
	}
	for (i = 0; i < im->n_hits; i++)
		*missing += im->hits[i].uid == 0 && strcmp(im->hits[i].folder, folder) == 0;
	return r;
}

/* The keys of one folder: searched, and again once the folder is quiet
 * when some are missing. A folder that does not exist holds none. */
static int
recover_folder(struct imap *im, const char *folder, char **err)
{
	struct imap_folder *f;
	size_t missing;
	int r;

	if ((f = imap_folder_get(im, folder, false, err)) == NULL)
		return -1;
	if (!f->ready) {
		if ((r = imap_mbox_exists(im, f->mbox, err)) != 1)
			return r;
		f->ready = true;
	}
	if (examine(im, f->mbox, err) == -1 || search_folder(im, folder, &missing, err) == -1)
		return -1;
	if (missing > 0 && !f->settled &&
	    (settle(im, f, err) == -1 || search_folder(im, folder, &missing, err) == -1))
		return -1;
	f->settled = true;
	return 0;
}

void
imap_recovering(struct imap *im, const char *const *folders, const char *const *keys,
    size_t n)
{
	char *err = NULL;
	size_t i, j;

	im->recovering = true;
	imap_hits_free(im);
	im->hits = xcalloc(n > 0 ? n : 1, sizeof *im->hits);
	for (i = 0; i < n; i++) {
		if (hit_get(im, folders[i], keys[i]) != NULL)
			continue;
		im->hits[im->n_hits].folder = xstrdup(folders[i]);
		im->hits[im->n_hits++].key = xstrdup(keys[i]);
	}
	for (i = 0; i < im->n_hits; i++) {
		for (j = 0; j < i && strcmp(im->hits[j].folder, im->hits[i].folder) != 0; j++)
			;
		if (j < i)
			continue;	/* that folder is done */
		if (imap_usable(im, &err) == -1 || recover_folder(im, im->hits[i].folder,
		    &err) == -1) {
			/* find() looks for each key on its own, and reports. */
			log_debug("%s: %s", im->account, err);
			free(err);
			imap_hits_free(im);
			return;
		}
	}
	im->hits_done = true;
}

void
imap_hits_free(struct imap *im)
{
	for (size_t i = 0; i < im->n_hits; i++) {
		free(im->hits[i].folder);
		free(im->hits[i].key);
	}
	free(im->hits);
	im->hits = NULL;
	im->n_hits = 0;
	im->hits_done = false;
}

/*
 * One key.
 */

int
imap_find(struct imap *im, const char *folder, const char *key, char **loc, char **err)
{
	struct mailimap_search_key *sk;
	struct imap_folder *f;
	struct imap_hit *h;
	uint32_t *uids = NULL, uid = 0;
	size_t n = 0;
	int r;

	if (im->hits_done && (h = hit_get(im, folder, key)) != NULL) {
		if (h->uid == 0)
			return 0;
		*loc = imap_location(folder, h->uidvalidity, h->uid);
		return 1;
	}
	if (imap_usable(im, err) == -1 || (f = imap_folder_get(im, folder, false, err)) == NULL)
		return -1;
	if (!f->ready) {
		if ((r = imap_mbox_exists(im, f->mbox, err)) != 1)
			return r;	/* no folder: not delivered */
		f->ready = true;
	}
	if (examine(im, f->mbox, err) == -1)
		return -1;
	sk = key_search(key);
	if (search(im, sk, &uids, &n, err) == -1)
		return -1;
	if (n == 0 && im->recovering && !f->settled) {
		free(uids);
		uids = NULL;
		if (settle(im, f, err) == -1 || search(im, key_search(key), &uids, &n, err) == -1)
			return -1;
	}
	uid = n > 0 ? uids[0] : 0;
	free(uids);
	if (uid == 0)
		return 0;
	*loc = imap_location(folder, im->m->imap_selection_info != NULL ?
	    im->m->imap_selection_info->sel_uidvalidity : 0, uid);
	return 1;
}

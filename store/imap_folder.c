/* The IMAP store's folders (store/imap_priv.h): the personal namespace
 * (RFC 2342), the configured name turned into the server's, the \Sent
 * folder (RFC 6154), and LIST / CREATE / SUBSCRIBE. */
#include "store/imap_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/err.h"
#include "lib/log.h"
#include "lib/mutf7.h"
#include "lib/xmalloc.h"

/*
 * Names.
 */

/* A name the server gave us (a namespace prefix, a LIST entry) that we
 * would put in our own commands: printable ASCII (mUTF-7) only, bounded. */
static bool
server_name_ok(const char *s)
{
	size_t n = 0;

	for (; s[n] != '\0'; n++)
		if ((unsigned char)s[n] < 0x20 || (unsigned char)s[n] > 0x7e)
			return false;
	return n <= IMAP_MBOX_MAX;
}

/* One level of folder, encoded, appended to *out with delim. */
static int
add_level(const struct imap_ns *ns, const char *folder, const char *s, size_t n, bool first,
    char **out, char **why)
{
	char *lvl = xstrndup(s, n), *enc = NULL, *o;
	int r = -1;

	if (n == 0)
		err_set(why, "folder \"%s\": empty hierarchy level", folder);
	else if (strpbrk(lvl, "*%") != NULL)
		err_set(why, "folder \"%s\": \"*\" and \"%%\" are IMAP wildcards", folder);
	else if (ns->delim != '\0' && ns->delim != '/' && strchr(lvl, ns->delim) != NULL)
		err_set(why, "folder \"%s\": \"%c\" is the server's hierarchy delimiter "
		    "(use \"/\" between levels)", folder, ns->delim);
	else if (!conf_safe_name(lvl, IMAP_MBOX_MAX))
		err_set(why, "folder \"%s\": control character in the name", folder);
	else if (first && strcasecmp(lvl, "INBOX") == 0) {
		enc = xstrdup("INBOX");
		r = 0;
	} else if (mutf7_encode(lvl, &enc) == -1)
		err_set(why, "folder \"%s\": not valid UTF-8", folder);
	else
		r = 0;
	free(lvl);
	if (r == -1)
		return -1;
	o = first ? xstrdup(enc) : xasprintf("%s%c%s", *out, ns->delim, enc);
	free(*out);
	free(enc);
	*out = o;
	return 0;
}

/* Whether name is in the namespace already: it starts with the prefix
 * (whose INBOX, if it begins with one, in any case). */
static bool
has_prefix(const char *name, const char *prefix)
{
	size_t n = strlen(prefix), i = 0;

	if (strncasecmp(prefix, "INBOX", 5) == 0 && (prefix[5] == '\0' ||
	    !((prefix[5] >= 'A' && prefix[5] <= 'Z') || (prefix[5] >= 'a' && prefix[5] <= 'z')))) {
		if (strncasecmp(name, prefix, 5) != 0)
			return false;
		i = 5;
	}
	return strncmp(name + i, prefix + i, n - i) == 0;
}

int
imap_folder_mbox(const struct imap_ns *ns, const char *folder, char **mbox, char **why)
{
	const char *p = folder, *slash;
	char *out = NULL, *full;

	if (strcasecmp(folder, "INBOX") == 0) {
		*mbox = xstrdup("INBOX");
		return 0;
	}
	if (ns->delim == '\0' && strchr(folder, '/') != NULL)
		return err_set(why, "folder \"%s\": the server has no hierarchy", folder);
	for (;;) {
		slash = strchr(p, '/');
		if (add_level(ns, folder, p, slash ? (size_t)(slash - p) : strlen(p),
		    p == folder, &out, why) == -1) {
			free(out);
			return -1;
		}
		if (slash == NULL)
			break;
		p = slash + 1;
	}
	/* Courier keeps every folder under "INBOX.": "Lists/News" is
	 * "INBOX.Lists.News" there; "INBOX/Lists" is that already. */
	if (*ns->prefix != '\0' && !has_prefix(out, ns->prefix)) {
		full = xasprintf("%s%s", ns->prefix, out);
		free(out);
		out = full;
	}
	if (strlen(out) > IMAP_MBOX_MAX) {
		free(out);
		return err_set(why, "folder \"%s\": name too long", folder);
	}
	*mbox = out;
	return 0;
}

/*
 * The namespace.
 */

static void
ns_set(struct imap *im, const char *prefix, char delim)
{
	free(im->ns.prefix);
	im->ns.prefix = xstrdup(prefix);
	im->ns.delim = delim;
}

/* The hierarchy delimiter, from LIST "" "" (RFC 3501 6.3.8). */
static int
read_delim(struct imap *im, char **err)
{
	struct mailimap_mailbox_list *mb;
	clist *res = NULL;
	int r;

	/* libetpan hands over the listing also when LIST failed: ours to free. */
	if ((r = mailimap_list(im->m, "", "", &res)) != MAILIMAP_NO_ERROR) {
		if (res != NULL)
			mailimap_list_result_free(res);
		return imap_fail(im, err, "LIST \"\" \"\"", r);
	}
	ns_set(im, "", '/');
	if (res != NULL && clist_begin(res) != NULL) {
		mb = clist_content(clist_begin(res));
		im->ns.delim = mb->mb_delimiter;
	}
	if (res != NULL)
		mailimap_list_result_free(res);
	return 0;
}

/* The first personal namespace of the last NAMESPACE reply, as libetpan
 * left it in the session; NULL if none. */
static const struct mailimap_namespace_info *
personal_ns(const struct imap *im)
{
	const struct mailimap_response_info *ri = im->m->imap_response_info;
	const struct mailimap_extension_data *ext;
	const struct mailimap_namespace_data *nd;
	clistiter *it;

	if (ri == NULL || ri->rsp_extension_list == NULL)
		return NULL;
	for (it = clist_begin(ri->rsp_extension_list); it != NULL; it = clist_next(it)) {
		ext = clist_content(it);
		if (ext->ext_extension->ext_id != MAILIMAP_EXTENSION_NAMESPACE ||
		    (nd = ext->ext_data) == NULL)
			continue;
		if (nd->ns_personal == NULL || nd->ns_personal->ns_data_list == NULL ||
		    clist_begin(nd->ns_personal->ns_data_list) == NULL)
			return NULL;
		return clist_content(clist_begin(nd->ns_personal->ns_data_list));
	}
	return NULL;
}

int
imap_read_namespace(struct imap *im, char **err)
{
	static const char cmd[] = "NAMESPACE\r\n";
	const struct mailimap_namespace_info *ni;

	if (!im->caps.namespace)
		return read_delim(im, err);
	/* Sent by hand: mailimap_namespace() leaks its reply when the server
	 * answers without the data. */
	if (imap_send_command(im, "NAMESPACE", cmd, sizeof cmd - 1, err) == -1 ||
	    imap_flush(im, "NAMESPACE", err) == -1)
		return -1;
	if (imap_tagged(im, "NAMESPACE", false, err) == -1) {
		if (im->broken)
			return -1;
		free(*err);
		*err = NULL;
		return read_delim(im, err);
	}
	if ((ni = personal_ns(im)) == NULL)
		return read_delim(im, err);	/* no personal namespace */
	if (!server_name_ok(ni->ns_prefix) || strpbrk(ni->ns_prefix, "*%") != NULL)
		return err_at(err, im->where, "the server's personal namespace is not a "
		    "usable mailbox name");
	ns_set(im, ni->ns_prefix, ni->ns_delimiter);
	log_debug("%s: %s: personal namespace \"%s\", delimiter \"%c\"", im->account,
	    im->where, im->ns.prefix, im->ns.delim ? im->ns.delim : ' ');
	return 0;
}

/*
 * LIST.
 */

static bool
has_flag(const struct mailimap_mailbox_list *mb, const char *flag)
{
	const struct mailimap_mbx_list_flags *f = mb->mb_flag;
	const struct mailimap_mbx_list_oflag *of;
	clistiter *it;

	if (f == NULL)
		return false;
	for (it = clist_begin(f->mbf_oflags); it != NULL; it = clist_next(it)) {
		of = clist_content(it);
		if (of->of_type == MAILIMAP_MBX_LIST_OFLAG_FLAG_EXT && of->of_flag_ext != NULL &&
		    strcasecmp(of->of_flag_ext, flag) == 0)
			return true;
	}
	return false;
}

static bool
is_noselect(const struct mailimap_mailbox_list *mb)
{
	const struct mailimap_mbx_list_flags *f = mb->mb_flag;

	if (f != NULL && f->mbf_type == MAILIMAP_MBX_LIST_FLAGS_SFLAG &&
	    f->mbf_sflag == MAILIMAP_MBX_LIST_SFLAG_NOSELECT)
		return true;
	return has_flag(mb, "NonExistent") || has_flag(mb, "Noselect");
}

int
imap_mbox_exists(struct imap *im, const char *mbox, char **err)
{
	struct mailimap_mailbox_list *mb;
	clist *res = NULL;
	clistiter *it;
	int r, found = 0;

	if ((r = mailimap_list(im->m, "", mbox, &res)) != MAILIMAP_NO_ERROR) {
		if (res != NULL)
			mailimap_list_result_free(res);
		return imap_fail(im, err, "LIST", r);
	}
	for (it = res ? clist_begin(res) : NULL; it != NULL && !found; it = clist_next(it)) {
		mb = clist_content(it);
		found = strcmp(mb->mb_name, mbox) == 0 && !is_noselect(mb);
	}
	if (res != NULL)
		mailimap_list_result_free(res);
	return found;
}

/* The mailbox flagged \flag (RFC 6154), in *mbox (allocated), or NULL
 * when the server has none (or no SPECIAL-USE). With LIST-EXTENDED the
 * server lists only special-use mailboxes (LIST (SPECIAL-USE)); without
 * it, every mailbox, flags and all. */
static int
special_use(struct imap *im, const char *flag, char **mbox, char **err)
{
	static const char sel[] = "LIST (SPECIAL-USE) \"\" \"*\"\r\n";
	static const char all[] = "LIST \"\" \"*\"\r\n";
	const char *cmd = im->caps.list_extended ? sel : all;
	const struct mailimap_mailbox_list *mb;
	clistiter *it;

	*mbox = NULL;
	if (!im->caps.special_use)
		return 0;
	if (imap_send_command(im, "LIST (SPECIAL-USE)", cmd, strlen(cmd), err) == -1 ||
	    imap_flush(im, "LIST (SPECIAL-USE)", err) == -1)
		return -1;
	if (imap_tagged(im, "LIST (SPECIAL-USE)", false, err) == -1) {
		if (im->broken)
			return -1;
		log_warnx("%s: %s", im->account, *err);	/* then "Sent" */
		free(*err);
		*err = NULL;
		return 0;
	}
	if (im->m->imap_response_info == NULL)
		return 0;
	for (it = clist_begin(im->m->imap_response_info->rsp_mailbox_list); it != NULL;
	    it = clist_next(it)) {
		mb = clist_content(it);
		if (mb->mb_name != NULL && has_flag(mb, flag) && !is_noselect(mb) &&
		    server_name_ok(mb->mb_name)) {
			*mbox = xstrdup(mb->mb_name);
			break;
		}
	}
	return 0;
}

/*
 * Folders as the backend uses them.
 */

/* CREATE and SUBSCRIBE, as a client making the folder would. Another
 * process may create it meanwhile: a failed CREATE is fine if it exists
 * (Dovecot may also refuse a CREATE that races another session's change
 * of the mailbox list, and yet make the folder). Subscribed either way:
 * SUBSCRIBE of a subscribed folder changes nothing. */
static int
mbox_create(struct imap *im, struct imap_folder *f, char **err)
{
	char *serr = NULL;
	int r;

	if ((r = mailimap_create(im->m, f->mbox)) != MAILIMAP_NO_ERROR) {
		imap_fail(im, err, "CREATE", r);
		if (im->broken || imap_mbox_exists(im, f->mbox, &serr) != 1) {
			free(serr);
			return -1;
		}
		log_debug("%s: %s (it exists)", im->account, *err);
		free(*err);
		*err = NULL;
	} else
		log_info("%s: created folder %s on %s", im->account, f->mbox, im->where);
	/* Only cosmetic (clients showing subscribed folders only): a refusal
	 * is logged and delivery goes on. */
	if ((r = mailimap_subscribe(im->m, f->mbox)) != MAILIMAP_NO_ERROR) {
		imap_fail(im, &serr, "SUBSCRIBE", r);
		if (im->broken) {
			*err = serr;
			return -1;
		}
		log_warnx("%s: not subscribing folder %s: %s", im->account, f->mbox, serr);
		free(serr);
	}
	return 0;
}

/* The server's name for the folder called name; *ready when it is known
 * to exist. */
static int
resolve(struct imap *im, const char *name, char **mbox, bool *ready, char **err)
{
	char *why = NULL;

	*ready = false;
	if (strcmp(name, DELIVER_FOLDER_SENT) == 0) {
		if (imap_usable(im, err) == -1 || special_use(im, "Sent", mbox, err) == -1)
			return -1;
		if (*mbox != NULL) {
			*ready = true;
			return 0;
		}
		name = DELIVER_SENT_DEFAULT;
	}
	if (imap_folder_mbox(&im->ns, name, mbox, &why) == -1) {
		err_at(err, im->where, "%s", why);
		free(why);
		return -1;
	}
	*ready = strcmp(*mbox, "INBOX") == 0;
	return 0;
}

struct imap_folder *
imap_folder_get(struct imap *im, const char *name, bool create, char **err)
{
	struct imap_folder *f = NULL;
	char *mbox = NULL;
	bool ready;
	size_t i;
	int r;

	for (i = 0; i < im->n_folders && f == NULL; i++)
		if (strcmp(im->folders[i].name, name) == 0)
			f = &im->folders[i];
	if (f == NULL) {
		if (resolve(im, name, &mbox, &ready, err) == -1)
			return NULL;
		im->folders = xreallocarray(im->folders, im->n_folders + 1, sizeof *f);
		f = &im->folders[im->n_folders++];
		f->name = xstrdup(name);
		f->mbox = mbox;
		f->ready = ready;
		f->settled = false;
	}
	if (!create || f->ready)
		return f;
	if (imap_usable(im, err) == -1 || (r = imap_mbox_exists(im, f->mbox, err)) == -1)
		return NULL;
	if (r == 0 && mbox_create(im, f, err) == -1)
		return NULL;
	f->ready = true;
	return f;
}

void
imap_folders_free(struct imap *im)
{
	for (size_t i = 0; i < im->n_folders; i++) {
		free(im->folders[i].name);
		free(im->folders[i].mbox);
	}
	free(im->folders);
	im->folders = NULL;
	im->n_folders = 0;
	free(im->ns.prefix);
	im->ns.prefix = NULL;
}

/* APPEND for the IMAP store (store/imap_priv.h), sent by hand over the
 * session's stream: libetpan's mailimap_append() wants the whole message
 * in one buffer and walks it twice (once to count CRLF fixes), so even an
 * mmap of a 50 MB temp file would put every page in our resident set. We
 * stream the file instead (its size is the literal size: the caller wrote
 * CRLF already) and let libetpan parse the server's answer, APPENDUID
 * included.
 *
 * Response codes by name: [TRYCREATE] makes the folder and tries once
 * more; [OVERQUOTA] (RFC 9208) stops the batch as a temporary failure;
 * any other NO ([LIMIT], RFC 5530, among them) refuses that message only.
 * A message over the server's APPENDLIMIT (RFC 7889) is refused here,
 * before a byte of it is sent. */
#include "store/imap_priv.h"

#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "lib/err.h"
#include "lib/log.h"
#include "lib/xmalloc.h"

char *
imap_spool_path(const struct imap *im, const char *key)
{
	return xasprintf("%s/%s", im->spool, key);
}

char *
imap_location(const char *folder, uint32_t uidvalidity, uint32_t uid)
{
	if (uid == 0)
		return xstrdup(folder);
	return xasprintf("%s;UIDVALIDITY=%u;UID=%u", folder, uidvalidity, uid);
}

/* Sends "TAG APPEND mbox [(\Seen)] "date" {size}". */
static int
append_command(struct imap *im, const char *mbox, unsigned flags, time_t date,
    uint64_t size, char **err)
{
	static const char *const mon[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
	    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	char *q = imap_quoted(mbox), *line;
	struct tm tm;
	int r;

	/* INTERNALDATE in UTC: the instant is what matters. */
	gmtime_r(&date, &tm);
	line = xasprintf("APPEND %s%s \"%02d-%s-%04d %02d:%02d:%02d +0000\" {%llu}\r\n",
	    q, (flags & DELIVER_SEEN) ? " (\\Seen)" : "", tm.tm_mday, mon[tm.tm_mon],
	    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned long long)size);
	free(q);
	r = imap_send_command(im, "APPEND", line, strlen(line), err);
	free(line);
	return r == 0 ? imap_flush(im, "APPEND", err) : -1;
}

/* The literal: size bytes of fd from offset 0, then CRLF. Once the server
 * asked for the literal there is no way back: any short read breaks the
 * session, and the server drops the half message. */
static int
send_literal(struct imap *im, int fd, uint64_t size, char **err)
{
	uint64_t off = 0;
	ssize_t n;

	while (off < size) {
		n = pread(fd, im->buf, size - off < IMAP_CHUNK ? size - off : IMAP_CHUNK,
		    (off_t)off);
		if (n <= 0) {
			im->broken = true;
			return err_at(err, im->where, "reading the temp file: %s",
			    n == 0 ? "it shrank" : strerror(errno));
		}
		if (imap_send(im, "APPEND", im->buf, (size_t)n, err) == -1)
			return -1;
		off += (uint64_t)n;
	}
	if (imap_send(im, "APPEND", "\r\n", 2, err) == -1)
		return -1;
	return imap_flush(im, "APPEND", err);
}

/* APPENDUID (RFC 4315) of the last tagged OK, as libetpan parsed it. */
static void
append_uid(struct imap *im, uint32_t *uidvalidity, uint32_t *uid)
{
	struct mailimap_response_info *ri = im->m->imap_response_info;
	struct mailimap_uidplus_resp_code_apnd *apnd;
	struct mailimap_extension_data *ext;
	struct mailimap_set_item *item;
	clistiter *it;

	*uidvalidity = *uid = 0;
	if (ri == NULL || ri->rsp_extension_list == NULL)
		return;
	for (it = clist_begin(ri->rsp_extension_list); it != NULL; it = clist_next(it)) {
		ext = clist_content(it);
		if (ext->ext_extension != &mailimap_extension_uidplus ||
		    ext->ext_type != MAILIMAP_UIDPLUS_RESP_CODE_APND)
			continue;
		apnd = ext->ext_data;
		if (apnd->uid_set == NULL || clist_begin(apnd->uid_set->set_list) == NULL)
			return;
		item = clist_content(clist_begin(apnd->uid_set->set_list));
		*uidvalidity = apnd->uid_uidvalidity;
		*uid = item->set_first;
		return;
	}
}

/* One APPEND of the file fd into mbox: 0 stored, -1 with *err (im->state
 * and im->code say whether and how the server answered). */
static int
append_file(struct imap *im, const char *mbox, struct deliver_msg *m, uint64_t size,
    char **err)
{
	char *line;
	int r;

	im->state = -1;
	im->code[0] = '\0';
	if (imap_usable(im, err) == -1 ||
	    append_command(im, mbox, m->flags, m->date, size, err) == -1)
		return -1;
	if ((r = imap_next(im, "APPEND", &line, err)) == 0)
		return err_at(err, im->where, "APPEND: server accepted a message it never read");
	if (r == -1 || send_literal(im, m->fd, size, err) == -1)
		return -1;
	if (imap_tagged(im, "APPEND", false, err) == -1)
		return -1;
	append_uid(im, &m->uidvalidity, &m->uid);
	return 0;
}

/* What a NO to an APPEND means: 1 the folder must be made first, 0 this
 * message is refused, -1 the store cannot take anything now. */
static int
refusal(struct imap *im)
{
	if (strcmp(im->code, "TRYCREATE") == 0)
		return 1;
	/* RFC 9208 [OVERQUOTA]; older servers say so in the text. */
	if (strcmp(im->code, "OVERQUOTA") == 0)
		return -1;
	return 0;
}

/* Stores one message (the folder made first when the server asks for
 * it), then removes its temp file. Closes the fd. */
static int
deliver_one(struct imap *im, struct deliver_msg *m, char **err)
{
	struct imap_folder *f;
	struct stat sb;
	char *path;
	int r = -1, tries = 0;

	if ((f = imap_folder_get(im, m->folder, true, err)) == NULL)
		goto out;
	if (fstat(m->fd, &sb) == -1) {
		*err = xasprintf("%s: temp file of %s: %s", im->account, m->key, strerror(errno));
		goto out;
	}
	if (im->caps.appendlimit > 0 && (uint64_t)sb.st_size > im->caps.appendlimit) {
		/* Refused before sending: the server said it would not take it. */
		m->refused = xasprintf("%s: message of %llu bytes is over the server's "
		    "APPENDLIMIT of %llu bytes", im->where, (unsigned long long)sb.st_size,
		    (unsigned long long)im->caps.appendlimit);
		r = 0;
		goto done;
	}
	while ((r = append_file(im, f->mbox, m, (uint64_t)sb.st_size, err)) == -1 &&
	    im->state == MAILIMAP_RESP_COND_STATE_NO && refusal(im) == 1 && tries++ == 0) {
		/* Deleted since we looked: make it again, once. */
		free(*err);
		*err = NULL;
		f->ready = false;
		if ((f = imap_folder_get(im, m->folder, true, err)) == NULL)
			goto out;
	}
	if (r == -1 && im->state == MAILIMAP_RESP_COND_STATE_NO && refusal(im) == 0) {
		/* The server refused this message (too big, content it will
		 * not take): one message must not stop the others. */
		m->refused = *err;
		*err = NULL;
		r = 0;
	} else if (r == -1) {
		if (im->state == MAILIMAP_RESP_COND_STATE_NO && refusal(im) == -1) {
			/* Full: every other message would fail too. The pass
			 * stops, temporarily; nothing is lost. */
			im->why = DELIVER_ETEMP;
			path = xasprintf("%s (a message of %llu bytes); the store is full, "
			    "nothing more is stored until there is room", *err,
			    (unsigned long long)sb.st_size);
			free(*err);
			*err = path;
		}
		goto out;
	} else
		m->location = imap_location(m->folder, m->uidvalidity, m->uid);
done:
	path = imap_spool_path(im, m->key);
	if (unlink(path) == -1 && errno != ENOENT)
		log_warn("%s: removing %s", im->account, path);
	free(path);
out:
	close(m->fd);
	m->fd = -1;
	return r;
}

int
imap_append_batch(struct imap *im, struct deliver_msg *msgs, size_t n, char **err)
{
	size_t i;
	int r = 0;

	for (i = 0; i < n; i++) {
		if (r == -1) {
			/* The rest stay in the spool, but we own their fds. */
			close(msgs[i].fd);
			msgs[i].fd = -1;
		} else if (deliver_one(im, &msgs[i], err) == -1)
			r = -1;
	}
	/* Some may be stored: the caller settles each with find(). */
	for (i = 0; r == -1 && i < n; i++) {
		free(msgs[i].location);
		msgs[i].location = NULL;
		free(msgs[i].refused);
		msgs[i].refused = NULL;
	}
	return r;
}

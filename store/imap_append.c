/* APPEND for the IMAP store (store/imap_priv.h), written by hand over the
 * session's stream: libetpan's mailimap_append() wants the whole message
 * in one buffer and walks it twice (once to count CRLF fixes), and knows
 * neither MULTIAPPEND nor non-synchronising literals. We stream each temp
 * file (its size is the literal size: the caller wrote CRLF already) and
 * let libetpan parse the server's answers, APPENDUID included.
 *
 * How a batch goes, per folder:
 *   MULTIAPPEND (RFC 3502) announced: one command per at most
 *     IMAP_MULTI_MAX_MSGS messages and IMAP_MULTI_MAX_BYTES of literals;
 *     the server stores all of them or none, and APPENDUID's UID set
 *     (RFC 4315) gives each its UID in order. A NO to it refuses the
 *     whole command: then its messages go one APPEND each, so that one
 *     bad message does not hold back the others.
 *   else, or for that fallback, with LITERAL+ / LITERAL- (RFC 7888):
 *     APPENDs pipelined, at most IMAP_PIPE_WINDOW in flight, each reply
 *     matched to its tag;
 *   else one APPEND at a time, each waiting for the server's "+".
 * Literals are non-synchronising ({N+}) with LITERAL+, or with LITERAL-
 * up to 4096 bytes; else synchronising ({N}, wait for "+").
 * Every command has a deadline: the timeout plus its literals at
 * DEADLINE_MIN_RATE (imap_deadline), besides the pass's own limits.
 *
 * Response codes by name: [TRYCREATE] makes the folder and tries once
 * more; [OVERQUOTA] (RFC 9208) stops the batch as a temporary failure;
 * any other NO ([LIMIT], RFC 5530, among them) refuses that one message.
 * A message over the server's APPENDLIMIT (RFC 7889) is refused here,
 * before a byte of it is sent. The server's tagged OK is the durability
 * point of what it names. */
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

#define IMAP_MULTI_MAX_MSGS	1000
#define IMAP_MULTI_MAX_BYTES	(64ULL * 1024 * 1024)
#define IMAP_PIPE_WINDOW	32
#define IMAP_LITERAL_MINUS_MAX	4096	/* RFC 7888: LITERAL- takes {N+} up to this */

enum job_state { J_TODO, J_STORED, J_REFUSED };

/* One message of the batch. */
struct job {
	struct deliver_msg *m;
	uint64_t size;
	enum job_state state;
};

/* What the per-message answers of a run said besides "stored". */
struct outcome {
	bool trycreate;		/* some message needs the folder made again */
	char *full;		/* [OVERQUOTA]: the server's words; stops the batch */
};

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

static bool
nonsync(const struct imap *im, uint64_t size)
{
	return im->caps.literal_plus ||
	    (im->caps.literal_minus && size <= IMAP_LITERAL_MINUS_MAX);
}

/* One message's part of an APPEND: " [(\Seen)] "DATE" {SIZE[+]}" CRLF.
 * INTERNALDATE in UTC: the instant is what matters. Allocated. */
static char *
message_opts(const struct job *j, bool plus)
{
	static const char *const mon[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
	    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	struct tm tm;

	gmtime_r(&j->m->date, &tm);
	return xasprintf("%s \"%02d-%s-%04d %02d:%02d:%02d +0000\" {%llu%s}\r\n",
	    (j->m->flags & DELIVER_SEEN) ? " (\\Seen)" : "", tm.tm_mday, mon[tm.tm_mon],
	    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
	    (unsigned long long)j->size, plus ? "+" : "");
}

/* Sends the message's options and, after the server's "+" when the
 * literal is synchronising, its bytes. first: the command starts here
 * ("TAG APPEND mbox"). -1 with *err: a broken session, or the server
 * answered the command instead of "+" (im->state says so). */
static int
send_message(struct imap *im, const char *mbox, const struct job *j, bool first,
    char **err)
{
	bool plus = nonsync(im, j->size);
	char *opts = message_opts(j, plus), *q, *line, *cont;
	uint64_t off = 0;
	ssize_t n;
	int r;

	if (first) {
		q = imap_quoted(mbox);
		line = xasprintf("APPEND %s%s", q, opts);
		r = imap_send_command(im, "APPEND", line, strlen(line), err);
		free(q);
		free(line);
	} else
		r = imap_send(im, "APPEND", opts, strlen(opts), err);
	free(opts);
	if (r == 0 && !plus && (r = imap_flush(im, "APPEND", err)) == 0 &&
	    (r = imap_next(im, "APPEND", &cont, err)) != 1)
		return r == 0 ? err_at(err, im->where,
		    "APPEND: server accepted a message it never read") : -1;
	/* Once the literal has begun there is no way back: a short read
	 * breaks the session, and the server drops the half command. */
	while (r >= 0 && off < j->size) {
		n = pread(j->m->fd, im->buf, j->size - off < IMAP_CHUNK ? j->size - off :
		    IMAP_CHUNK, (off_t)off);
		if (n <= 0) {
			im->broken = true;
			return err_at(err, im->where, "reading the temp file of %s: %s",
			    j->m->key, n == 0 ? "it shrank" : strerror(errno));
		}
		if (imap_send(im, "APPEND", im->buf, (size_t)n, err) == -1)
			return -1;
		off += (uint64_t)n;
	}
	return r < 0 ? -1 : 0;
}

/* The UIDs APPENDUID (RFC 4315) of the last tagged OK gives, in the order
 * of the messages, into uids[0..n); false (none set) when it is missing
 * or names another number of messages. */
static bool
append_uids(struct imap *im, uint32_t *uidvalidity, uint32_t *uids, size_t n)
{
	struct mailimap_response_info *ri = im->m->imap_response_info;
	struct mailimap_uidplus_resp_code_apnd *apnd = NULL;
	struct mailimap_extension_data *ext;
	struct mailimap_set_item *item;
	uint32_t lo, hi;
	size_t k = 0;
	clistiter *it;

	for (it = ri != NULL && ri->rsp_extension_list != NULL ?
	    clist_begin(ri->rsp_extension_list) : NULL; it != NULL && apnd == NULL;
	    it = clist_next(it)) {
		ext = clist_content(it);
		if (ext->ext_extension == &mailimap_extension_uidplus &&
		    ext->ext_type == MAILIMAP_UIDPLUS_RESP_CODE_APND)
			apnd = ext->ext_data;
	}
	if (apnd == NULL || apnd->uid_set == NULL)
		return false;
	for (it = clist_begin(apnd->uid_set->set_list); it != NULL; it = clist_next(it)) {
		item = clist_content(it);
		lo = item->set_first < item->set_last ? item->set_first : item->set_last;
		hi = item->set_first < item->set_last ? item->set_last : item->set_first;
		if (lo == 0 || (uint64_t)hi - lo + 1 > n - k)
			return false;
		for (; k < n && lo <= hi; lo++)
			uids[k++] = lo;
	}
	if (k != n)
		return false;
	*uidvalidity = apnd->uid_uidvalidity;
	return true;
}

static void
stored(struct job *j, uint32_t uidvalidity, uint32_t uid)
{
	j->state = J_STORED;
	j->m->uidvalidity = uid != 0 ? uidvalidity : 0;
	j->m->uid = uid;
	j->m->location = imap_location(j->m->folder, j->m->uidvalidity, uid);
}

/* After one message's APPEND got a tagged NO: what it means (see the top
 * of the file). 0, or -1 when the answer was no NO (a BAD, a broken
 * session): *err stays set. */
static int
classify(struct imap *im, struct job *j, struct outcome *o, char **err)
{
	if (im->state != MAILIMAP_RESP_COND_STATE_NO)
		return -1;
	if (strcmp(im->code, "TRYCREATE") == 0)
		o->trycreate = true;
	else if (strcmp(im->code, "OVERQUOTA") == 0 && o->full == NULL) {
		o->full = *err;
		*err = NULL;
	} else if (strcmp(im->code, "OVERQUOTA") != 0) {
		/* The server refused this message (too big, content it will
		 * not take): one message must not stop the others. */
		j->m->refused = *err;
		j->state = J_REFUSED;
		*err = NULL;
	}
	free(*err);
	*err = NULL;
	return 0;
}

/* The end of one APPEND: stored, with its APPENDUID when the reply has
 * one, or the refusal classified. */
static int
append_end(struct imap *im, struct job *j, bool ok, struct outcome *o, char **err)
{
	uint32_t uidvalidity = 0, uid = 0;

	if (!ok)
		return classify(im, j, o, err);
	if (!append_uids(im, &uidvalidity, &uid, 1))
		uid = 0;
	stored(j, uidvalidity, uid);
	return 0;
}

/* One APPEND, waiting for its reply. */
static int
append_one(struct imap *im, const char *mbox, struct job *j, struct outcome *o, char **err)
{
	imap_deadline(im, j->size);
	im->state = -1;
	return append_end(im, j, send_message(im, mbox, j, true, err) == 0 &&
	    imap_send(im, "APPEND", "\r\n", 2, err) == 0 && imap_flush(im, "APPEND", err) == 0 &&
	    imap_tagged(im, "APPEND", false, err) == 0, o, err);
}

/* A tagged reply to the APPEND sent with tag, the others still in flight
 * (libetpan checks the tag against imap_tag: set for the parse). */
static int
reap(struct imap *im, struct job *j, int tag, struct outcome *o, char **err)
{
	int last = im->m->imap_tag, r;

	im->m->imap_tag = tag;
	r = imap_tagged(im, "APPEND", false, err);
	im->m->imap_tag = last;
	return append_end(im, j, r == 0, o, err);
}

/* One APPEND per message, pipelined: at most IMAP_PIPE_WINDOW in flight;
 * a message that needs a synchronising literal waits for the others and
 * goes alone. */
static int
append_pipelined(struct imap *im, const char *mbox, struct job **js, size_t n,
    struct outcome *o, char **err)
{
	struct { struct job *j; int tag; } fl[IMAP_PIPE_WINDOW];
	size_t head = 0, inflight = 0, i;
	uint64_t bytes = 0;
	int r = 0;

	/* Once the folder is gone or full, what is not sent yet waits. */
	for (i = 0; i < n && r == 0 && !o->trycreate && o->full == NULL; i++) {
		if (!nonsync(im, js[i]->size)) {
			for (; inflight > 0 && r == 0; inflight--, head = (head + 1) % IMAP_PIPE_WINDOW)
				r = reap(im, fl[head].j, fl[head].tag, o, err);
			if (r == 0)
				r = append_one(im, mbox, js[i], o, err);
			bytes = 0;
			continue;
		}
		bytes += js[i]->size;
		imap_deadline(im, bytes);
		if ((r = send_message(im, mbox, js[i], true, err)) == 0 &&
		    (r = imap_send(im, "APPEND", "\r\n", 2, err)) == 0)
			r = imap_flush(im, "APPEND", err);
		if (r == -1)
			break;
		fl[(head + inflight) % IMAP_PIPE_WINDOW].j = js[i];
		fl[(head + inflight) % IMAP_PIPE_WINDOW].tag = im->m->imap_tag;
		if (++inflight == IMAP_PIPE_WINDOW) {
			bytes -= fl[head].j->size;
			r = reap(im, fl[head].j, fl[head].tag, o, err);
			head = (head + 1) % IMAP_PIPE_WINDOW;
			inflight--;
		}
	}
	for (; inflight > 0 && r == 0; inflight--, head = (head + 1) % IMAP_PIPE_WINDOW)
		r = reap(im, fl[head].j, fl[head].tag, o, err);
	/* Replies left unread would be taken for the next command's. */
	if (r == -1 && inflight > 0)
		im->broken = true;
	return r;
}

/* One APPEND per message: pipelined when literals need no "+", else one
 * at a time. */
static int
append_each(struct imap *im, const char *mbox, struct job **js, size_t n,
    struct outcome *o, char **err)
{
	size_t i;
	int r = 0;

	if (im->caps.literal_plus || im->caps.literal_minus)
		return append_pipelined(im, mbox, js, n, o, err);
	for (i = 0; i < n && r == 0; i++)
		r = append_one(im, mbox, js[i], o, err);
	return r;
}

/* One MULTIAPPEND of js[0..n): 1 all stored, 0 the server refused the
 * command (NO: im->code says why, *err its words), -1 with *err. */
static int
append_multi(struct imap *im, const char *mbox, struct job **js, size_t n, char **err)
{
	uint32_t uidvalidity = 0, *uids;
	uint64_t bytes = 0;
	size_t i;
	int r = 0;

	for (i = 0; i < n; i++)
		bytes += js[i]->size;
	imap_deadline(im, bytes);
	im->state = -1;
	for (i = 0; i < n && r == 0; i++)
		r = send_message(im, mbox, js[i], i == 0, err);
	if (r == 0 && (r = imap_send(im, "APPEND", "\r\n", 2, err)) == 0 &&
	    (r = imap_flush(im, "APPEND", err)) == 0)
		r = imap_tagged(im, "MULTIAPPEND", false, err);
	if (r == -1)
		return im->state == MAILIMAP_RESP_COND_STATE_NO ? 0 : -1;
	uids = xcalloc(n, sizeof *uids);
	if (!append_uids(im, &uidvalidity, uids, n))
		memset(uids, 0, n * sizeof *uids);
	for (i = 0; i < n; i++)
		stored(js[i], uidvalidity, uids[i]);
	free(uids);
	return 1;
}

/* The messages of js[0..n) still to store, into mbox. */
static int
append_run(struct imap *im, const char *mbox, struct job **js, size_t n, struct outcome *o,
    char **err)
{
	size_t i, k;
	uint64_t bytes;
	int r;

	if (!im->caps.multiappend || n == 1)
		return append_each(im, mbox, js, n, o, err);
	for (i = 0; i < n; i += k) {
		for (k = 0, bytes = 0; i + k < n && k < IMAP_MULTI_MAX_MSGS &&
		    (k == 0 || bytes + js[i + k]->size <= IMAP_MULTI_MAX_BYTES); k++)
			bytes += js[i + k]->size;
		if ((r = append_multi(im, mbox, js + i, k, err)) == -1)
			return -1;
		if (r == 1)
			continue;
		if (strcmp(im->code, "TRYCREATE") == 0 || strcmp(im->code, "OVERQUOTA") == 0) {
			/* This command and the rest: after CREATE, or never. */
			o->trycreate = strcmp(im->code, "TRYCREATE") == 0;
			if (!o->trycreate)
				o->full = *err;
			else
				free(*err);
			*err = NULL;
			return 0;
		}
		/* Some message of them, we do not know which: each on its
		 * own, so that the others are stored. */
		log_debug("%s: %s; one APPEND each instead", im->account, *err);
		free(*err);
		*err = NULL;
		if (append_each(im, mbox, js + i, k, o, err) == -1)
			return -1;
	}
	return 0;
}

/* The jobs of one folder: refused locally when over APPENDLIMIT, the
 * others stored (again after a CREATE when the server says TRYCREATE). */
static int
append_folder(struct imap *im, struct job *jobs, size_t n, struct outcome *o, char **err)
{
	const char *name = jobs[0].m->folder;
	struct imap_folder *f;
	struct job **todo = xcalloc(n, sizeof *todo);
	size_t i, k;
	int tries, r = 0;

	for (i = 0; i < n; i++)
		if (im->caps.appendlimit > 0 && jobs[i].size > im->caps.appendlimit) {
			/* Refused before sending: the server said it would not
			 * take it. */
			jobs[i].m->refused = xasprintf("%s: message of %llu bytes is over the "
			    "server's APPENDLIMIT of %llu bytes", im->where,
			    (unsigned long long)jobs[i].size,
			    (unsigned long long)im->caps.appendlimit);
			jobs[i].state = J_REFUSED;
		}
	for (tries = 0; r == 0 && o->full == NULL; tries++) {
		for (i = k = 0; i < n; i++)
			if (jobs[i].state == J_TODO)
				todo[k++] = &jobs[i];
		if (k == 0)
			break;
		if (tries == 2) {
			r = err_at(err, im->where, "APPEND into %s: the server asks for the folder "
			    "to be created although it was", name);
			break;
		}
		if ((f = imap_folder_get(im, name, true, err)) == NULL) {
			r = -1;
			break;
		}
		o->trycreate = false;
		r = append_run(im, f->mbox, todo, k, o, err);
		/* Deleted since we looked: make it again, once. */
		if (r == 0 && o->trycreate)
			f->ready = false;
	}
	free(todo);
	return r;
}

/* A temp file's size: the literal's. */
static int
job_size(struct imap *im, struct job *j, char **err)
{
	struct stat sb;

	if (fstat(j->m->fd, &sb) == -1)
		return err_at(err, NULL, "%s: temp file of %s: %s", im->account, j->m->key,
		    strerror(errno));
	j->size = (uint64_t)sb.st_size;
	return 0;
}

int
imap_append_batch(struct imap *im, struct deliver_msg *msgs, size_t n, char **err)
{
	struct job *jobs = xcalloc(n, sizeof *jobs);
	struct outcome o = { 0 };
	size_t i, end;
	char *path;
	int r = 0;

	for (i = 0; i < n; i++)
		jobs[i].m = &msgs[i];
	for (i = 0; i < n && r == 0; i++)
		r = job_size(im, &jobs[i], err);
	if (r == 0)
		r = imap_usable(im, err);
	for (i = 0; i < n && r == 0 && o.full == NULL; i = end) {
		for (end = i + 1; end < n && strcmp(msgs[end].folder, msgs[i].folder) == 0; end++)
			;
		r = append_folder(im, jobs + i, end - i, &o, err);
	}
	imap_deadline_clear(im);
	if (r == 0 && o.full != NULL) {
		/* Full: every other message would fail too. The pass stops,
		 * temporarily; nothing is lost. */
		im->why = DELIVER_ETEMP;
		r = err_at(err, NULL, "%s; the store is full, nothing more is stored until "
		    "there is room", o.full);
	}
	free(o.full);
	for (i = 0; i < n; i++) {
		if (jobs[i].state != J_TODO && im->spool_named) {
			path = imap_spool_path(im, msgs[i].key);
			if (unlink(path) == -1 && errno != ENOENT)
				log_warn("%s: removing %s", im->account, path);
			free(path);
		}
		close(msgs[i].fd);
		msgs[i].fd = -1;
		/* On failure some may be stored: the caller settles each
		 * with find(). */
		if (r == -1) {
			free(msgs[i].location);
			msgs[i].location = NULL;
			free(msgs[i].refused);
			msgs[i].refused = NULL;
		}
	}
	free(jobs);
	return r;
}

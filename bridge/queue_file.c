/* What the queue stores in the user's own mailbox: the Sent copies and
 * the bounces, in batches through the store backend (deliver_files) under
 * delivery keys derived from the queue id and the spool file's random
 * name, so that a crash between storing and recording finds the message
 * there instead of storing it twice. */
#include "bridge/queue_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>

#include "bridge/dsn.h"
#include "lib/hex.h"
#include "lib/log.h"
#include "lib/xmalloc.h"
#include "store/deliver.h"

/* "outbox<ID>x<CREATED>-<TAG>-<what>": no ".", "/" or ":" (Maildir
 * names); the creation time keeps keys apart if a new database reuses an
 * id. TAG, from a hash of the spool file's name (128 random bits, see
 * store/outbox.c), makes the key unguessable but the same on every retry:
 * with the IMAP store a key is looked for by a header search, and anyone
 * who can mail the user could otherwise plant it to suppress a bounce.
 * NULL when the message has no spool file name. */
char *
queue_file_copy_key(const struct outbox_msg *m, const char *what)
{
	const char *name = m->spool_path != NULL ? strrchr(m->spool_path, '/') : NULL;
	unsigned char md[32];
	char tag[33];

	name = name != NULL ? name + 1 : m->spool_path;
	if (name == NULL || *name == '\0' ||
	    gnutls_hash_fast(GNUTLS_DIG_SHA256, name, strlen(name), md) != 0)
		return NULL;
	hex_encode(md, 16, tag);
	return xasprintf("outbox%lldx%lld-%s-%s", (long long)m->id,
	    (long long)m->created_at, tag, what);
}

static void
mta_name(char *out, size_t size)
{
	if (gethostname(out, size) == -1 || out[0] == '\0' ||
	    strpbrk(out, " \t\r\n") != NULL)
		snprintf(out, size, "localhost");
	out[size - 1] = '\0';
}

/* Writes the bounce of m into path (durably: the store copies it). The
 * original is quoted when it can be read (dsn_write says what else). */
static int
write_bounce(struct state *st, const struct outbox_msg *m, const char *path, char **err)
{
	char mta[256], *oerr = NULL;
	FILE *out, *orig = NULL;
	int r, fd;

	mta_name(mta, sizeof mta);
	if ((out = fopen(path, "we")) == NULL) {
		*err = xasprintf("%s: %s", path, strerror(errno));
		return -1;
	}
	if ((fd = outbox_msg_open(st, m, &oerr)) != -1 && (orig = fdopen(fd, "r")) == NULL)
		close(fd);
	free(oerr);
	r = dsn_write(out, m, orig, mta, time(NULL));
	if (orig != NULL)
		fclose(orig);
	if (fclose(out) == EOF)
		r = -1;
	if (r == -1)
		*err = xasprintf("writing %s: %s", path, strerror(errno));
	return r;
}

unsigned
queue_file_backoff(unsigned initial, int64_t failing)
{
	int64_t d = failing > (int64_t)initial ? failing : (int64_t)initial;

	if (d < 1)
		d = 1;
	return d < QUEUE_FILE_BACKOFF_MAX ? (unsigned)d : QUEUE_FILE_BACKOFF_MAX;
}

/* A copy not stored is a failure like a deferred delivery: recorded with
 * its reason and a next try, shown by `queue list` and `status`, and the
 * spool file stays until both are stored. */
static void
record_failure(const struct conf *c, struct state *st, struct outbox_msg *m,
    const char *errors)
{
	int64_t now = (int64_t)time(NULL);
	int64_t next = now + queue_file_backoff(c->relay.retry_initial,
	    now - (m->finished_at ? m->finished_at : now));
	char when[32], *err = NULL;
	time_t t = (time_t)next;
	struct tm tm;

	strftime(when, sizeof when, "%H:%M:%S", localtime_r(&t, &tm));
	log_warnx("%s: queue id %lld: %s; next try at %s", m->account, (long long)m->id,
	    errors, when);
	if (outbox_copy_failed(st, m->id, errors, next, &err) == -1) {
		log_warnx("%s: queue id %lld: %s", m->account, (long long)m->id, err);
		free(err);
	}
}

/* One kind of copy (Sent copies, or bounces) of a batch of messages. */
struct copies {
	bool sent;                      /* Sent copies, else bounces */
	struct outbox_msg **m;          /* the messages that need one */
	struct deliver_file_item *it;   /* one per message */
	char **paths;                   /* bounces: the scratch files written */
	int *fds;                       /* Sent copies kept in their rows: the
	                                   memory file each is read from, -1 */
	char **fd_paths;                /* and its /proc/self/fd path */
	size_t n;
};

static void
copies_init(struct copies *cp, bool sent, struct outbox_msg **v, size_t n)
{
	memset(cp, 0, sizeof *cp);
	cp->sent = sent;
	cp->m = xcalloc(n ? n : 1, sizeof *cp->m);
	cp->it = xcalloc(n ? n : 1, sizeof *cp->it);
	cp->paths = xcalloc(n ? n : 1, sizeof *cp->paths);
	cp->fds = xcalloc(n ? n : 1, sizeof *cp->fds);
	cp->fd_paths = xcalloc(n ? n : 1, sizeof *cp->fd_paths);
	for (size_t i = 0; i < n; i++) {
		cp->fds[i] = -1;
		if (!(sent ? v[i]->sent_copy_done : v[i]->bounce_done))
			cp->m[cp->n++] = v[i];
	}
}

static void
copies_free(struct copies *cp)
{
	for (size_t i = 0; i < cp->n; i++) {
		free((char *)cp->it[i].key);
		free(cp->it[i].err);
		if (cp->paths[i] != NULL)
			unlink(cp->paths[i]);
		free(cp->paths[i]);
		if (cp->fds[i] != -1)
			close(cp->fds[i]);
		free(cp->fd_paths[i]);
	}
	free(cp->m);
	free(cp->it);
	free(cp->paths);
	free(cp->fds);
	free(cp->fd_paths);
}

/* Records, in one synced transaction, that the copies are about to be
 * tried: a later try then looks each up before storing it again. */
static int
mark_tried(struct state *st, struct copies *cp, char **err)
{
	int64_t *ids = xcalloc(cp->n ? cp->n : 1, sizeof *ids);
	size_t k = 0;
	int r;

	for (size_t i = 0; i < cp->n; i++)
		if (!(cp->sent ? cp->m[i]->sent_copy_tried : cp->m[i]->bounce_tried))
			ids[k++] = cp->m[i]->id;
	r = outbox_mark_copies(st, ids, k, cp->sent, false, err);
	free(ids);
	return r;
}

/* Each message's item: its key and file (for a bounce, written later;
 * for a Sent copy kept in its row, a memory file). An item that cannot be
 * made gets its err and is left out of the store. */
static void
make_items(const struct conf *c, struct state *st, struct copies *cp)
{
	for (size_t i = 0; i < cp->n; i++) {
		struct outbox_msg *m = cp->m[i];
		struct deliver_file_item *it = &cp->it[i];

		it->key = queue_file_copy_key(m, cp->sent ? "sent" : "dsn");
		it->look_first = cp->sent ? m->sent_copy_tried : m->bounce_tried;
		it->flags = cp->sent ? DELIVER_SEEN : 0;
		it->date = cp->sent ? (time_t)m->created_at : time(NULL);
		if (cp->sent && !m->in_db)
			it->path = m->spool_path;
		else if (cp->sent) {
			/* The store reads a path: the memory file's own. */
			if ((cp->fds[i] = outbox_msg_open(st, m, &it->err)) != -1)
				cp->fd_paths[i] = xasprintf("/proc/self/fd/%d", cp->fds[i]);
			it->path = cp->fd_paths[i];
		} else {
			cp->paths[i] = outbox_bounce_path(c->state_dir, m->id);
			it->path = cp->paths[i];
		}
	}
}

/* Stores the items that could be made, in one batch: how many are. */
static size_t
store_items(const struct conf *c, struct state *st, const struct conf_account *a,
    struct copies *cp)
{
	struct deliver_file_item *ok = xcalloc(cp->n ? cp->n : 1, sizeof *ok);
	size_t *of = xcalloc(cp->n ? cp->n : 1, sizeof *of), k = 0, i, stored;
	char *err = NULL;

	for (i = 0; i < cp->n; i++) {
		struct deliver_file_item *it = &cp->it[i];

		if (it->err != NULL)
			;
		else if (it->key == NULL)
			it->err = xstrdup("no spool file name to derive the delivery key from");
		else if (!cp->sent && write_bounce(st, cp->m[i], it->path, &it->err) == -1)
			;
		else {
			of[k] = i;
			ok[k++] = *it;
		}
	}
	stored = k > 0 ? deliver_files(c, a, cp->sent ? deliver_sent_folder(a) : "INBOX", ok, k,
	    &err) : 0;
	for (i = 0; i < k; i++) {
		cp->it[of[i]].stored = ok[i].stored;
		cp->it[of[i]].err = ok[i].stored ? NULL : ok[i].err != NULL ? ok[i].err :
		    xstrdup(err != NULL ? err : "not stored");
	}
	free(err);
	free(ok);
	free(of);
	return stored;
}

/* The stored ones recorded done (one transaction); each one not stored
 * gets "what not stored: why" appended to errors[] of its message. */
static void
record_copies(struct state *st, struct copies *cp, struct outbox_msg **v, size_t n,
    char **errors)
{
	int64_t *ids = xcalloc(cp->n ? cp->n : 1, sizeof *ids);
	const char *what = cp->sent ? "Sent copy" : "bounce";
	size_t i, j, k = 0;
	char *err = NULL, *joined;

	for (i = 0; i < cp->n; i++)
		if (cp->it[i].stored)
			ids[k++] = cp->m[i]->id;
	if (outbox_mark_copies(st, ids, k, cp->sent, true, &err) == -1) {
		/* Stored but not recorded: found (not stored again) next time. */
		log_warnx("queue: recording %zu stored %ss: %s", k, what, err);
		free(err);
	} else
		for (i = 0; i < cp->n; i++)
			if (cp->it[i].stored) {
				*(cp->sent ? &cp->m[i]->sent_copy_done :
				    &cp->m[i]->bounce_done) = true;
				if (!cp->sent)
					log_info("%s: queue id %lld: bounce stored in INBOX",
					    cp->m[i]->account, (long long)cp->m[i]->id);
			}
	for (i = 0; i < cp->n; i++) {
		if (cp->it[i].stored)
			continue;
		for (j = 0; j < n && v[j] != cp->m[i]; j++)
			;
		joined = xasprintf("%s%s%s not stored: %s", errors[j] ? errors[j] : "",
		    errors[j] ? "; " : "", what, cp->it[i].err);
		free(errors[j]);
		errors[j] = joined;
	}
	free(ids);
}

/* Gives the copies up: the account is gone, there is nowhere to file them. */
static void
give_up(struct state *st, struct outbox_msg *m)
{
	char *err = NULL;

	log_warnx("queue id %lld: account %s is no longer configured: no Sent copy or"
	    " bounce", (long long)m->id, m->account);
	if (outbox_mark_copy_done(st, m->id, true, &err) == -1 ||
	    outbox_mark_copy_done(st, m->id, false, &err) == -1) {
		log_warnx("queue: %s", err);
		free(err);
	}
}

void
queue_file_copies(const struct conf *c, struct state *st, const struct conf_account *a,
    struct outbox_msg **v, size_t n)
{
	char **errors = xcalloc(n ? n : 1, sizeof *errors), *err = NULL;
	struct copies cp[2];
	size_t i, k;

	if (a == NULL) {
		for (i = 0; i < n; i++)
			give_up(st, v[i]);
		free(errors);
		return;
	}
	copies_init(&cp[0], true, v, n);
	copies_init(&cp[1], false, v, n);
	for (k = 0; k < 2; k++) {
		if (cp[k].n == 0)
			continue;
		make_items(c, st, &cp[k]);
		if (mark_tried(st, &cp[k], &err) == -1) {
			log_warnx("queue: %s", err);
			free(err);
			err = NULL;
			continue;	/* nothing stored: the next pass tries again */
		}
		store_items(c, st, a, &cp[k]);
		record_copies(st, &cp[k], v, n, errors);
	}
	for (i = 0; i < n; i++)
		if (errors[i] != NULL)
			record_failure(c, st, v[i], errors[i]);
	for (k = 0; k < 2; k++)
		copies_free(&cp[k]);
	for (i = 0; i < n; i++)
		free(errors[i]);
	free(errors);
}

/* What the queue stores in the user's own mailbox: the Sent copy and the
 * bounce, through the store backend (deliver_file) under delivery keys
 * derived from the queue id and the spool file's random name, so a crash between storing and recording
 * finds the message there instead of storing it twice. */
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

bool
queue_file_8bit(int fd)
{
	unsigned char buf[65536];
	ssize_t n, i;

	if (lseek(fd, 0, SEEK_SET) == -1)
		return true;	/* cannot tell: claim 8-bit, which is safe */
	while ((n = read(fd, buf, sizeof buf)) > 0)
		for (i = 0; i < n; i++)
			if (buf[i] & 0x80)
				return true;
	return n == -1;
}

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

/* Stores m's \Seen copy in a's sent_folder: 0, or -1 with *err. */
static int
sent_copy(const struct conf *c, const struct conf_account *a, const struct outbox_msg *m,
    char **err)
{
	char *key = queue_file_copy_key(m, "sent");
	int r = -1;

	if (key == NULL)
		*err = xstrdup("no spool file name to derive the delivery key from");
	else
		r = deliver_file(c, a, a->sent_folder, key, m->spool_path, DELIVER_SEEN,
		    (time_t)m->created_at, NULL, err);
	free(key);
	return r;
}

static void
mta_name(char *out, size_t size)
{
	if (gethostname(out, size) == -1 || out[0] == '\0' ||
	    strpbrk(out, " \t\r\n") != NULL)
		snprintf(out, size, "localhost");
	out[size - 1] = '\0';
}

/* Writes the bounce of m into path (durably: the store copies it). */
static int
write_bounce(const struct outbox_msg *m, const char *path, char **err)
{
	char mta[256];
	FILE *out, *orig;
	int r;

	mta_name(mta, sizeof mta);
	if ((out = fopen(path, "we")) == NULL) {
		*err = xasprintf("%s: %s", path, strerror(errno));
		return -1;
	}
	orig = fopen(m->spool_path, "re");
	r = dsn_write(out, m, orig, mta, time(NULL));
	if (orig != NULL)
		fclose(orig);
	if (fclose(out) == EOF)
		r = -1;
	if (r == -1)
		*err = xasprintf("writing %s: %s", path, strerror(errno));
	return r;
}

/* Writes m's bounce and stores it in a's INBOX: 0, or -1 with *err. */
static int
bounce(const struct conf *c, const struct conf_account *a, const struct outbox_msg *m,
    char **err)
{
	char *key = queue_file_copy_key(m, "dsn");
	char *path = outbox_bounce_path(c->state_dir, m->id);
	int r = -1;

	if (key == NULL)
		*err = xstrdup("no spool file name to derive the delivery key from");
	else if (write_bounce(m, path, err) == 0)
		r = deliver_file(c, a, "INBOX", key, path, 0, time(NULL), NULL, err);
	unlink(path);
	free(path);
	free(key);
	return r;
}

/* Files one of m's copies (sent_copy or bounce) unless done, and records
 * it done. A failure's "what: why" is appended to *errors. */
static void
file_one(const struct conf *c, struct state *st, const struct conf_account *a,
    struct outbox_msg *m, bool sent, char **errors)
{
	const char *what = sent ? "Sent copy" : "bounce";
	char *err = NULL, *joined;

	if (sent ? m->sent_copy_done : m->bounce_done)
		return;
	if ((sent ? sent_copy(c, a, m, &err) : bounce(c, a, m, &err)) == 0 &&
	    outbox_mark_copy_done(st, m->id, sent, &err) == 0) {
		*(sent ? &m->sent_copy_done : &m->bounce_done) = true;
		log_info("%s: queue id %lld: %s stored in %s", m->account, (long long)m->id,
		    what, sent ? a->sent_folder : "INBOX");
		return;
	}
	joined = xasprintf("%s%s%s not stored: %s", *errors ? *errors : "", *errors ?
	    "; " : "", what, err);
	free(*errors);
	*errors = joined;
	free(err);
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

void
queue_file_copies(const struct conf *c, struct state *st,
    const struct conf_account *a, struct outbox_msg *m)
{
	char *err = NULL, *errors = NULL;

	if (a == NULL) {
		/* Nowhere to file them: give up rather than retry forever. */
		log_warnx("queue id %lld: account %s is no longer configured: no Sent"
		    " copy or bounce", (long long)m->id, m->account);
		if (outbox_mark_copy_done(st, m->id, true, &err) == -1 ||
		    outbox_mark_copy_done(st, m->id, false, &err) == -1) {
			log_warnx("queue: %s", err);
			free(err);
		}
		return;
	}
	file_one(c, st, a, m, true, &errors);
	file_one(c, st, a, m, false, &errors);
	if (errors != NULL)
		record_failure(c, st, m, errors);
	free(errors);
}

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

static void
sent_copy(const struct conf *c, struct state *st, const struct conf_account *a,
    struct outbox_msg *m)
{
	char *key = queue_file_copy_key(m, "sent"), *err = NULL;

	if (key == NULL)
		err = xstrdup("no spool file name to derive the delivery key from");
	if (key == NULL || deliver_file(c, a, deliver_sent_folder(a), key, m->spool_path,
	    DELIVER_SEEN, (time_t)m->created_at, NULL, &err) == -1 ||
	    outbox_mark_copy_done(st, m->id, true, &err) == -1)
		log_warnx("%s: queue id %lld: Sent copy: %s", m->account,
		    (long long)m->id, err);
	else
		m->sent_copy_done = true;
	free(err);
	free(key);
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

static void
bounce(const struct conf *c, struct state *st, const struct conf_account *a,
    struct outbox_msg *m)
{
	char *key = queue_file_copy_key(m, "dsn"), *err = NULL;
	char *path = outbox_bounce_path(c->state_dir, m->id);

	if (key == NULL)
		err = xstrdup("no spool file name to derive the delivery key from");
	if (key == NULL || write_bounce(m, path, &err) == -1 ||
	    deliver_file(c, a, "INBOX", key, path, 0, time(NULL), NULL, &err) == -1 ||
	    outbox_mark_copy_done(st, m->id, false, &err) == -1)
		log_warnx("%s: queue id %lld: bounce: %s", m->account,
		    (long long)m->id, err);
	else {
		m->bounce_done = true;
		log_info("%s: queue id %lld: bounce stored in INBOX", m->account,
		    (long long)m->id);
	}
	unlink(path);
	free(err);
	free(path);
	free(key);
}

void
queue_file_copies(const struct conf *c, struct state *st,
    const struct conf_account *a, struct outbox_msg *m)
{
	char *err = NULL;

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
	if (!m->sent_copy_done)
		sent_copy(c, st, a, m);
	if (!m->bounce_done)
		bounce(c, st, a, m);
}

#include "bridge/sync.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "bridge/pop3.h"
#include "lib/header.h"
#include "lib/hex.h"
#include "lib/log.h"
#include "lib/proc.h"
#include "lib/xmalloc.h"
#include "store/deliver.h"

volatile sig_atomic_t sync_stop;

/* A stop (SIGTERM/SIGINT) is taken between messages only: a pass runs
 * with those signals held (proc_child_init), so none cuts I/O short. */
static bool
stopping(void)
{
	if (!sync_stop && proc_stop_requested())
		sync_stop = 1;
	return sync_stop;
}

/* Dedup: a copy another account's pass began storing less than this many
 * seconds ago is waited for (next pass) rather than stored a second time;
 * an older pending row is a crashed pass, which must not hold mail back. */
#define DEDUP_WAIT 3600

/* Everything one pass works with. */
struct pass {
	const struct conf *c;
	const struct conf_account *a;
	struct state *st;
	int64_t acct;
	const struct deliver_backend *be;
	void *bctx;
	char *tag;                      /* key tag marking this account's temp files */
	struct pop3 *p;
	bool broken;                    /* p must be aborted, not QUIT */
	struct pop3_entry *ent;
	size_t n_ent;
	const char **uidls;             /* per entry: the UIDL, or a derived id */
	char **derived;                 /* owned derived ids (no-UIDL servers) */
	struct sync_result *res;
	bool progress;                  /* show a progress line on the terminal */
	char *store_id;                 /* the resolved store: the dedup scope */
	char *refused_first;            /* the first message the store refused */
	bool dedup;                     /* store { dedup = "message-id" } */
};

/* What becomes of a fetched message: stored, recorded as a duplicate of
 * another account's copy, or left for the next pass (dedup). */
enum fate { F_STORE, F_DUP, F_DEFER };

/* One fetched message of a batch, between RETR and "delivered". */
struct fetched {
	const struct pop3_entry *e;
	char *key;
	struct header_info h;
	struct state_msg sm;
	enum fate fate;
};

static int
fail(struct pass *ps, int code, char *err)
{
	/* A state database locked by another process past the busy timeout
	 * is temporary, as a busy account is (test_restarts.py). */
	if (code == EX_IOERR && state_busy(ps->st))
		code = EX_TEMPFAIL;
	if (ps->res->error == NULL)
		ps->res->error = err;
	else
		free(err);
	return code;
}

static int
pop3_code(int e)
{
	switch (e) {
	case POP3_ENET:
	case POP3_ESERVER:
		return EX_TEMPFAIL;
	case POP3_ETLS:
	case POP3_EAUTH:
		return EX_UNAVAILABLE;
	case POP3_EPROTO:
		return EX_PROTOCOL;
	case POP3_ECONFIG:
		return EX_CONFIG;
	default:
		return EX_IOERR;
	}
}

static int
pop3_fail(struct pass *ps, int e, char *err)
{
	if (e != POP3_ESERVER)
		ps->broken = true;
	return fail(ps, pop3_code(e), err ? err : xstrdup("POP3 error"));
}

/* One pass per account at a time, across processes: an flock on
 * STATE_DIR/locks/NAME.lock, released when the process exits. */
static int
lock_account(struct pass *ps, int *fd)
{
	char *dir = xasprintf("%s/locks", ps->c->state_dir);
	char *path = xasprintf("%s/%s.lock", dir, ps->a->name);
	int rc = 0;

	if (mkdir(dir, 0700) == -1 && errno != EEXIST)
		rc = fail(ps, EX_IOERR, xasprintf("%s: %s", dir, strerror(errno)));
	else if ((*fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) == -1)
		rc = fail(ps, EX_IOERR, xasprintf("%s: %s", path, strerror(errno)));
	else if (flock(*fd, LOCK_EX | LOCK_NB) == -1) {
		rc = errno == EWOULDBLOCK ?
		    fail(ps, EX_TEMPFAIL, xstrdup("busy: another pop3bridge is syncing this account")) :
		    fail(ps, EX_IOERR, xasprintf("%s: %s", path, strerror(errno)));
		close(*fd);
		*fd = -1;
	}
	free(dir);
	free(path);
	return rc;
}

/* Settles the rows a killed run left pending: the store is asked whether
 * the message with that delivery key is there. Found: it is delivered.
 * Not found: its temp file is removed and the row forgotten, so the
 * message is fetched again. Either way nothing is lost or doubled. */
static int
reconcile(struct pass *ps, struct state_msg *rows, size_t n)
{
	char *err = NULL, *loc;
	size_t found = 0;
	int r;

	if (state_begin(ps->st, &err) == -1)
		return fail(ps, EX_IOERR, err);
	for (size_t i = 0; i < n; i++) {
		struct state_msg *m = &rows[i];

		loc = NULL;
		r = ps->be->find(ps->bctx, m->folder, m->delivery_key, &loc, &err);
		if (r == 1) {
			r = state_mark_delivered(ps->st, ps->acct, m->uidl, loc, &err);
			found++;
		} else if (r == 0) {
			r = ps->be->tmp_discard(ps->bctx, m->folder, m->delivery_key, &err);
			if (r == 0)
				r = state_drop_pending(ps->st, ps->acct, m->uidl, &err);
		}
		free(loc);
		if (r == -1) {
			state_rollback(ps->st);
			return fail(ps, EX_IOERR, err);
		}
	}
	if (state_commit(ps->st, &err) == -1)
		return fail(ps, EX_IOERR, err);
	if (n > 0)
		log_info("%s: recovered %zu interrupted deliveries (%zu already stored, %zu to fetch again)",
		    ps->a->name, n, found, n - found);
	return 0;
}

static int
recover(struct pass *ps)
{
	struct state_msg *rows = NULL;
	size_t n = 0;
	char *err = NULL;
	int rc;

	if (state_pending(ps->st, ps->acct, &rows, &n, &err) == -1)
		return fail(ps, EX_IOERR, err);
	rc = reconcile(ps, rows, n);
	state_msgs_free(rows, n);
	if (rc == 0 && ps->be->tmp_cleanup(ps->bctx, ps->a->folder, ps->tag, &err) == -1)
		rc = fail(ps, EX_IOERR, err);
	return rc;
}

static int
connect_server(struct pass *ps)
{
	char *pw = NULL, *err = NULL;
	int r;

	if (conf_password(&ps->a->pop3, &pw, &err) == -1)
		return fail(ps, EX_CONFIG, err);
	r = pop3_open(&ps->p, &ps->a->pop3, pw, &err);
	if (pw) {
		explicit_bzero(pw, strlen(pw));
		free(pw);
	}
	if (r != POP3_OK) {
		ps->p = NULL;
		return fail(ps, pop3_code(r), err ? err : xstrdup("POP3 error"));
	}
	ps->res->login_delay = pop3_caps(ps->p)->login_delay;
	return 0;
}

/* Servers without UIDL: a stable id from the size and a hash of the header
 * block (TOP n 0). Identical messages get "-2", "-3"... in server order. */
static int
derive_uidls(struct pass *ps)
{
	unsigned char h[32];
	char hex[65], *err = NULL;
	int r;

	ps->derived = xcalloc(ps->n_ent, sizeof *ps->derived);
	for (size_t i = 0; i < ps->n_ent; i++) {
		size_t same = 1;

		if ((r = pop3_top_hash(ps->p, ps->ent[i].num, h, &err)) != POP3_OK)
			return pop3_fail(ps, r, err);
		hex_encode(h, 32, hex);
		ps->derived[i] = xasprintf("nouidl-%llu-%.32s",
		    (unsigned long long)ps->ent[i].size, hex);
		for (size_t j = 0; j < i; j++)
			if (strncmp(ps->derived[j], ps->derived[i], strlen(ps->derived[i])) == 0)
				same++;
		if (same > 1) {
			char *d = xasprintf("%s-%zu", ps->derived[i], same);
			free(ps->derived[i]);
			ps->derived[i] = d;
		}
		ps->uidls[i] = ps->derived[i];
	}
	return 0;
}

static int
list_server(struct pass *ps)
{
	char *err = NULL;
	int r;
	bool no_uidl;

	if ((r = pop3_scan(ps->p, &ps->ent, &ps->n_ent, &err)) != POP3_OK)
		return pop3_fail(ps, r, err);
	ps->res->listed = ps->n_ent;
	ps->uidls = xcalloc(ps->n_ent, sizeof *ps->uidls);
	no_uidl = ps->n_ent > 0 && ps->ent[0].uidl == NULL;
	if (state_set_no_uidl(ps->st, ps->acct, no_uidl, &err) == -1)
		return fail(ps, EX_IOERR, err);
	if (no_uidl)
		return derive_uidls(ps);
	for (size_t i = 0; i < ps->n_ent; i++)
		ps->uidls[i] = ps->ent[i].uidl;
	return 0;
}

/* How many octets RETR may bring for a message LIST says is size long:
 * generous (servers count differently), but bounded, and without
 * wrapping around for an absurd LIST size. */
static uint64_t
retr_limit(uint64_t size)
{
	const uint64_t slack = 1 << 20;

	return size > (UINT64_MAX - slack) / 2 ? UINT64_MAX : size * 2 + slack;
}

/* RETR one message into a temp file of the store. Returns 0, -1 when the
 * server refused this one message (skipped, the session goes on), or an
 * exit code. */
static int
fetch_one(struct pass *ps, const struct pop3_entry *e, const char *uidl,
    struct fetched *f, int *fd)
{
	const char *folder = ps->a->folder;
	struct pop3_retr rr;
	char *err = NULL;
	int r;

	f->key = deliver_key(ps->tag);
	if (ps->be->tmp_create(ps->bctx, folder, f->key, fd, &err) == -1)
		return fail(ps, EX_IOERR, err);
	r = pop3_retr(ps->p, e->num, *fd, ps->be->crlf ? POP3_EOL_CRLF : POP3_EOL_LF,
	    retr_limit(e->size), &rr, &err);
	if (r != POP3_OK) {
		char *derr = NULL;

		close(*fd);
		*fd = -1;
		if (ps->be->tmp_discard(ps->bctx, folder, f->key, &derr) == -1)
			log_warnx("%s: %s", ps->a->name, derr);
		free(derr);
		if (r == POP3_ESERVER) {
			log_warnx("%s: message %lu (UIDL %s) skipped: %s", ps->a->name,
			    e->num, uidl, err);
			free(err);
			return -1;
		}
		return pop3_fail(ps, r, err);
	}
	if (rr.octets != e->size)
		log_debug("%s: message %lu: LIST said %llu octets, RETR gave %llu", ps->a->name,
		    e->num, (unsigned long long)e->size, (unsigned long long)rr.octets);
	header_scan(rr.header, rr.header_len, &f->h);
	free(rr.header);
	f->e = e;
	f->sm.uidl = (char *)uidl;
	f->sm.size = rr.written;
	hex_encode(rr.sha256, 32, f->sm.sha256);
	/* The fingerprint as the UIDL-reset guard will see it: LIST's size
	 * and the header hash TOP n 0 gives. */
	f->sm.pop3_size = e->size;
	hex_encode(rr.header_sha256, 32, f->sm.header_sha256);
	hex_encode(rr.body_sha256, 32, f->sm.body_sha256);
	f->sm.message_id = f->h.message_id;
	f->sm.delivery_key = f->key;
	f->sm.folder = (char *)folder;
	f->sm.state = STATE_PENDING;
	f->sm.fetched_at = time(NULL);
	return 0;
}

/* Dedup, inside the pending-row transaction: is f already in this store
 * for another account (same Message-ID and body)? Then its row points at
 * that copy (F_DUP). A copy another pass is storing right now (pending)
 * is waited for: f stays on the server for the next pass (F_DEFER). The
 * transaction (BEGIN IMMEDIATE) serialises this look-up and the pending
 * row of the other pass, so two accounts never both store one message. */
static int
dedup_one(struct pass *ps, struct fetched *f, char **err)
{
	struct state_msg orig;
	int64_t owner;
	int r;

	f->fate = F_STORE;
	if (!ps->dedup || f->sm.message_id == NULL)
		return 0;
	r = state_dedup_find(ps->st, ps->acct, ps->store_id, f->sm.message_id,
	    f->sm.body_sha256, &orig, &owner, err);
	if (r != 1)
		return r;
	if (orig.state != STATE_PENDING) {
		f->fate = F_DUP;
		r = state_put_duplicate(ps->st, ps->acct, &f->sm, &orig, owner, err);
	} else if (time(NULL) - orig.fetched_at < DEDUP_WAIT)
		f->fate = F_DEFER;
	state_msg_clear(&orig);
	return r == -1 ? -1 : 0;
}

/* Step b for a batch in one transaction: a pending row for each message
 * to store, a delivered row for each duplicate. */
static int
put_rows(struct pass *ps, struct fetched *f, size_t n, char **err)
{
	if (state_begin(ps->st, err) == -1)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (dedup_one(ps, &f[i], err) == -1 || (f[i].fate == F_STORE &&
		    state_put_pending(ps->st, ps->acct, &f[i].sm, err) == -1)) {
			state_rollback(ps->st);
			return -1;
		}
	return state_commit(ps->st, err);
}

/* Removes the temp files of the messages not stored (all of them when
 * all): nothing refers to them. */
static void
discard(struct pass *ps, struct fetched *f, int *fds, size_t n, bool all)
{
	for (size_t i = 0; i < n; i++) {
		char *derr = NULL;

		if (!all && f[i].fate == F_STORE)
			continue;
		if (fds[i] != -1)
			close(fds[i]);
		fds[i] = -1;
		if (ps->be->tmp_discard(ps->bctx, f[i].sm.folder, f[i].key, &derr) == -1)
			log_warnx("%s: %s", ps->a->name, derr);
		free(derr);
	}
}

/* Step d: the stored messages' rows become delivered, with where the
 * store put them. A message the store refused loses its pending row: it
 * stays on the server, new again for the next pass. */
static int
mark_rows(struct pass *ps, struct fetched *f, const size_t *map,
    const struct deliver_msg *dm, size_t k, char **err)
{
	const char *uidl;
	int r;

	if (state_begin(ps->st, err) == -1)
		return -1;
	for (size_t j = 0; j < k; j++) {
		uidl = f[map[j]].sm.uidl;
		r = dm[j].refused != NULL ?
		    state_drop_pending(ps->st, ps->acct, uidl, err) :
		    state_mark_delivered_uid(ps->st, ps->acct, uidl, dm[j].location,
			dm[j].uidvalidity, dm[j].uid, err);
		if (r == -1) {
			state_rollback(ps->st);
			return -1;
		}
	}
	return state_commit(ps->st, err);
}

/* Says which messages the store refused; the first reason becomes the
 * pass's error (set once the pass is over: the others are imported). */
static void
note_refused(struct pass *ps, const struct fetched *f, const struct deliver_msg *dm)
{
	log_warnx("%s: the store refused message %lu (UIDL %s), left on the server: %s",
	    ps->a->name, f->e->num, f->sm.uidl, dm->refused);
	if (ps->res->refused++ == 0)
		ps->refused_first = xasprintf("UIDL %s: %s", f->sm.uidl, dm->refused);
}

/* Steps c-d for the messages to store. fds are handed to the backend,
 * which closes them. */
static int
store_rows(struct pass *ps, struct fetched *f, int *fds, size_t n)
{
	struct deliver_msg *dm = xcalloc(n, sizeof *dm);
	size_t *map = xcalloc(n, sizeof *map), k = 0;
	char *err = NULL;
	int rc = 0;

	for (size_t i = 0; i < n; i++) {
		if (f[i].fate != F_STORE)
			continue;
		dm[k].key = f[i].key;
		dm[k].folder = f[i].sm.folder;
		dm[k].fd = fds[i];
		dm[k].size = f[i].sm.size;
		dm[k].date = header_internal_date(&f[i].h, f[i].sm.fetched_at);
		dm[k].flags = ps->a->import_seen ? DELIVER_SEEN : 0;
		fds[i] = -1;
		map[k++] = i;
	}
	if (k > 0 && ps->be->deliver(ps->bctx, dm, k, &err) == -1) {
		/* Some files may be in the store already: settle each row now
		 * exactly as a restart would. */
		rc = fail(ps, EX_IOERR, err);
		recover(ps);
	} else if (k > 0 && mark_rows(ps, f, map, dm, k, &err) == -1) {
		/* The files are durable and the rows pending: the next run's
		 * reconciliation finds them and marks them delivered. */
		rc = fail(ps, EX_IOERR, err);
	} else
		for (size_t j = 0; j < k; j++) {
			if (dm[j].refused != NULL) {
				note_refused(ps, &f[map[j]], &dm[j]);
				continue;
			}
			ps->res->imported++;
			ps->res->bytes += f[map[j]].sm.size;
		}
	for (size_t j = 0; j < k; j++) {
		free(dm[j].location);
		free(dm[j].refused);
	}
	free(dm);
	free(map);
	return rc;
}

/* Steps b-d of the import protocol for a whole batch: one transaction of
 * pending rows, one durable delivery of every file, one transaction of
 * delivered rows. */
static int
deliver_batch(struct pass *ps, struct fetched *f, int *fds, size_t n)
{
	char *err = NULL;
	int rc;

	if (put_rows(ps, f, n, &err) == -1) {
		rc = fail(ps, EX_IOERR, err);
		discard(ps, f, fds, n, true);
		return rc;
	}
	for (size_t i = 0; i < n; i++) {
		ps->res->duplicates += f[i].fate == F_DUP;
		ps->res->deferred += f[i].fate == F_DEFER;
	}
	discard(ps, f, fds, n, false);
	return store_rows(ps, f, fds, n);
}

/* How many of the next messages form a batch: bounded by batch_messages
 * and batch_bytes (by LIST size), at least one. */
static size_t
batch_len(const struct pass *ps, const size_t *idx, size_t left)
{
	uint64_t bytes = 0;
	size_t k = 0;

	while (k < left && k < ps->c->batch_messages) {
		bytes += ps->ent[idx[k]].size;
		if (k > 0 && bytes > ps->c->batch_bytes)
			break;
		k++;
	}
	return k;
}

static void
fetched_free(struct fetched *f, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(f[i].key);
		header_info_free(&f[i].h);
	}
	free(f);
}

/* One batch: RETRs (pipelined when the server allows), then durable
 * delivery of what was fetched, even when a later RETR failed. */
static int
import_batch(struct pass *ps, const size_t *idx, size_t k)
{
	struct fetched *f = xcalloc(k, sizeof *f);
	unsigned long *nums = xcalloc(k, sizeof *nums);
	int *fds = xcalloc(k, sizeof *fds);
	size_t got = 0;
	char *err = NULL;
	int rc = 0, r;

	for (size_t j = 0; j < k; j++)
		nums[j] = ps->ent[idx[j]].num;
	if ((r = pop3_retr_pipeline(ps->p, nums, k, &err)) != POP3_OK)
		rc = pop3_fail(ps, r, err);
	for (size_t j = 0; rc == 0 && j < k; j++) {
		if (stopping()) {
			/* Answers to pipelined RETRs may be on their way:
			 * the session cannot be reused for QUIT. */
			ps->broken = true;
			break;
		}
		r = fetch_one(ps, &ps->ent[idx[j]], ps->uidls[idx[j]], &f[got], &fds[got]);
		if (r > 0)
			rc = r;
		else if (r == 0)
			got++;
		else {
			free(f[got].key);
			memset(&f[got], 0, sizeof f[got]);
		}
	}
	if (got > 0) {
		r = deliver_batch(ps, f, fds, got);
		rc = rc ? rc : r;
	}
	fetched_free(f, k);
	free(nums);
	free(fds);
	return rc;
}

static void
show_progress(const struct pass *ps, bool done)
{
	if (!ps->progress)
		return;
	fprintf(stderr, "\r%s: %lu/%lu new messages imported%s", ps->a->name,
	    ps->res->imported, ps->res->fresh, done ? "\n" : "");
}

/* The header hashes (TOP n 0) of the unknown messages idx[0..n), as
 * fingerprints. A server refusing TOP leaves the guard blind: importing
 * everything again is what it exists to prevent, so the pass stops. */
static int
fingerprints(struct pass *ps, const size_t *idx, size_t n, struct state_fp *fps,
    char (*hex)[65])
{
	unsigned char h[32];
	char *err = NULL;
	int r;

	for (size_t j = 0; j < n; j++) {
		const struct pop3_entry *e = &ps->ent[idx[j]];

		r = pop3_top_hash(ps->p, e->num, h, &err);
		if (r == POP3_ESERVER) {
			char *why = xasprintf("most UIDLs are unknown (a UIDL reset?)"
			    " and the server refused TOP to compare them (%s):"
			    " nothing imported; set uidl_reset_threshold = 0 to"
			    " import them all", err);

			free(err);
			return fail(ps, EX_UNAVAILABLE, why);
		}
		if (r != POP3_OK)
			return pop3_fail(ps, r, err);
		hex_encode(h, 32, hex[j]);
		fps[j] = (struct state_fp){ ps->uidls[idx[j]], e->size, hex[j] };
	}
	return 0;
}

/* Records the adoption: new UIDLs for known rows, the warning, the count,
 * in one transaction. */
static int
adopt(struct pass *ps, const struct state_fp *fps, size_t n, bool *adopted,
    size_t *n_adopted)
{
	char *err = NULL, *warn;

	if (state_begin(ps->st, &err) == -1 ||
	    state_adopt_uidls(ps->st, ps->acct, ps->uidls, ps->n_ent, fps, n,
	    adopted, n_adopted, &err) == -1)
		goto failed;
	if (*n_adopted > 0) {
		warn = xasprintf("server renumbered %zu messages (UIDL reset);"
		    " adopted their new UIDLs, nothing re-imported", *n_adopted);
		if (state_note_uidl_reset(ps->st, ps->acct, warn, &err) == 0)
			log_warnx("%s: %s", ps->a->name, warn);
		free(warn);
		if (err != NULL)
			goto failed;
	}
	if (state_commit(ps->st, &err) == 0)
		return 0;
failed:
	state_rollback(ps->st);
	return fail(ps, EX_IOERR, err);
}

/* The UIDL-reset guard: when most of the server's UIDLs are unknown and
 * the account imported mail before, unknown messages whose fingerprint
 * (LIST size, header hash) matches an imported row that is no longer on
 * the server are that row under a new UIDL: adopted, not imported again.
 * Removes them from idx[0..*n). */
static int
guard_uidl_reset(struct pass *ps, size_t *idx, size_t *n)
{
	unsigned th = ps->a->uidl_reset_threshold;
	struct state_fp *fps;
	char (*hex)[65], *err = NULL;
	size_t n_adopted = 0, k = 0;
	bool *adopted, known;
	int rc;

	if (th == 0 || ps->derived != NULL || *n == 0 ||
	    (uint64_t)*n * 100 <= (uint64_t)th * ps->n_ent)
		return 0;
	if (state_has_imported(ps->st, ps->acct, &known, &err) == -1)
		return fail(ps, EX_IOERR, err);
	if (!known)
		return 0;
	fps = xcalloc(*n, sizeof *fps);
	hex = xcalloc(*n, sizeof *hex);
	adopted = xcalloc(*n, sizeof *adopted);
	if ((rc = fingerprints(ps, idx, *n, fps, hex)) == 0)
		rc = adopt(ps, fps, *n, adopted, &n_adopted);
	for (size_t j = 0; rc == 0 && j < *n; j++)
		if (!adopted[j])
			idx[k++] = idx[j];
	if (rc == 0) {
		*n = k;
		ps->res->adopted = n_adopted;
	}
	free(fps);
	free(hex);
	free(adopted);
	return rc;
}

static int
import_new(struct pass *ps)
{
	size_t *idx = NULL, n = 0, i = 0, k;
	char *err = NULL;
	int rc = 0;

	if (state_filter_new(ps->st, ps->acct, ps->uidls, ps->n_ent, &idx, &n, &err) == -1)
		return fail(ps, EX_IOERR, err);
	if ((rc = guard_uidl_reset(ps, idx, &n)) != 0) {
		free(idx);
		return rc;
	}
	ps->res->fresh = n;
	while (rc == 0 && i < n && !stopping()) {
		k = batch_len(ps, idx + i, n - i);
		rc = import_batch(ps, idx + i, k);
		i += k;
		show_progress(ps, false);
	}
	if (n > 0)
		show_progress(ps, true);
	if (ps->res->duplicates > 0)
		log_info("%s: %lu messages already in the store for another account:"
		    " recorded, not stored again", ps->a->name, ps->res->duplicates);
	if (ps->res->deferred > 0)
		log_info("%s: %lu messages left for the next pass: another account"
		    " is storing them right now", ps->a->name, ps->res->deferred);
	free(idx);
	return rc;
}

/* Deletion policy: only delivered messages are ever deleted; deletions
 * take effect at QUIT and are recorded only after QUIT succeeded. */
static int
mark_deletions(struct pass *ps, const char ***uidls, size_t *n)
{
	const struct conf_account *a = ps->a;
	size_t *idx = NULL;
	unsigned long *nums;
	int64_t cutoff;
	char *err = NULL;
	int r;

	*uidls = NULL;
	*n = 0;
	if (a->leave_on_server && a->delete_after_days == 0)
		return 0;
	cutoff = a->leave_on_server ?
	    (int64_t)time(NULL) - (int64_t)a->delete_after_days * 86400 : INT64_MAX;
	if (state_due_for_delete(ps->st, ps->acct, ps->uidls, ps->n_ent, cutoff,
	    &idx, n, &err) == -1)
		return fail(ps, EX_IOERR, err);
	nums = xcalloc(*n, sizeof *nums);
	*uidls = xcalloc(*n, sizeof **uidls);
	for (size_t i = 0; i < *n; i++) {
		nums[i] = ps->ent[idx[i]].num;
		(*uidls)[i] = ps->uidls[idx[i]];
	}
	r = *n > 0 ? pop3_dele(ps->p, nums, *n, &err) : POP3_OK;
	free(idx);
	free(nums);
	if (r == POP3_ESERVER) {
		/* Some DELE refused: the others still go at QUIT; those are
		 * tried again next pass (they stay due). */
		log_warnx("%s: %s", a->name, err);
		free(err);
	} else if (r != POP3_OK)
		return pop3_fail(ps, r, err);
	return 0;
}

static int
finish_session(struct pass *ps, const char **uidls, size_t n)
{
	char *err = NULL;
	int r;

	r = pop3_quit(ps->p, &err);
	ps->p = NULL;
	if (r != POP3_OK)
		return n > 0 ? fail(ps, pop3_code(r), err) : (free(err), 0);
	if (n == 0)
		return 0;
	if (state_begin(ps->st, &err) == -1 ||
	    state_mark_deleted(ps->st, ps->acct, uidls, n, &err) == -1 ||
	    state_commit(ps->st, &err) == -1) {
		state_rollback(ps->st);
		return fail(ps, EX_IOERR, err);
	}
	ps->res->deleted = n;
	return 0;
}

static int
run_pass(struct pass *ps)
{
	const char **del = NULL;
	size_t ndel = 0;
	int rc;

	if ((rc = recover(ps)) || (rc = connect_server(ps)) || (rc = list_server(ps)))
		return rc;
	rc = import_new(ps);
	if (rc == 0 && !stopping() && !ps->broken)
		rc = mark_deletions(ps, &del, &ndel);
	if (rc == 0 && !stopping() && !ps->broken)
		rc = finish_session(ps, del, ndel);
	free(del);
	if (rc == 0 && ps->res->refused > 0) {
		rc = fail(ps, EX_DATAERR, xasprintf("the store refused %lu message%s (%s);"
		    " they stay on the server", ps->res->refused,
		    ps->res->refused == 1 ? "" : "s", ps->refused_first));
	}
	return rc;
}

static void
log_pass(struct pass *ps, time_t started, int rc)
{
	struct state_poll pl = {
		.started = started, .finished = time(NULL), .ok = rc == 0,
		.imported = ps->res->imported, .deleted = ps->res->deleted,
		.bytes = ps->res->bytes, .error = ps->res->error,
	};
	char *err = NULL;

	if (sync_stop && rc == 0)
		pl.error = "interrupted";
	if (state_poll_log(ps->st, ps->acct, &pl, &err) == -1) {
		/* A failed pass says why in its one line; the poll log then
		 * fails for the same reason (a full disk), a second line would
		 * only bury it (tests/integration/test_disk_faults.py). */
		if (rc == 0)
			log_warnx("%s: poll log: %s", ps->a->name, err);
		free(err);
	}
}

static void
pass_free(struct pass *ps)
{
	if (ps->p)
		pop3_abort(ps->p);
	if (ps->bctx)
		ps->be->close(ps->bctx);
	if (ps->derived)
		for (size_t i = 0; i < ps->n_ent; i++)
			free(ps->derived[i]);
	free(ps->derived);
	free(ps->uidls);
	pop3_entries_free(ps->ent, ps->n_ent);
	free(ps->tag);
	free(ps->store_id);
	free(ps->refused_first);
}

/* Records the account's store, for other accounts' dedup look-ups. */
static int
note_store(struct pass *ps)
{
	char *err = NULL;

	ps->store_id = conf_store_location(ps->c, ps->a);
	ps->dedup = ps->c->store.dedup != NULL &&
	    strcmp(ps->c->store.dedup, "message-id") == 0;
	if (state_set_store(ps->st, ps->acct, ps->store_id, &err) == -1)
		return fail(ps, EX_IOERR, err);
	return 0;
}

int
sync_account(const struct conf *c, const struct conf_account *a,
    struct state *st, struct sync_result *res)
{
	struct pass ps = { .c = c, .a = a, .st = st, .res = res };
	time_t started = time(NULL);
	char *err = NULL;
	int lockfd = -1, rc;

	memset(res, 0, sizeof *res);
	res->login_delay = -1;
	ps.progress = isatty(STDERR_FILENO) && !getenv("POP3BRIDGE_NO_PROGRESS");
	if ((rc = lock_account(&ps, &lockfd)) != 0)
		return rc;
	if (state_account(st, a->name, &ps.acct, &err) == -1) {
		rc = fail(&ps, EX_IOERR, err);
		goto out;
	}
	ps.tag = xasprintf("X%lld", (long long)ps.acct);
	ps.be = deliver_backend_for(c->store.type);
	if (ps.be == NULL)
		rc = fail(&ps, EX_CONFIG, xstrdup("this store type is not supported"));
	else if (ps.be->open(c, a, &ps.bctx, &err) == -1) {
		ps.bctx = NULL;
		rc = fail(&ps, EX_IOERR, err);
	} else if ((rc = note_store(&ps)) == 0)
		rc = run_pass(&ps);
	log_pass(&ps, started, rc);
out:
	pass_free(&ps);
	close(lockfd);
	return rc;
}

void
sync_result_free(struct sync_result *res)
{
	free(res->error);
	res->error = NULL;
}

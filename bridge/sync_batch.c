/* The batches of an import (doc/DESIGN.md, The import protocol, steps 5
 * and 6): RETRs into the store's temp files, one transaction of pending
 * rows, one durable delivery, the delivered rows.
 *
 * Batches overlap when the backend allows it (deliver_backend.concurrent):
 * once batch N is fetched, its job -- the transaction of its pending rows
 * (with batch N-1's delivered rows), its delivery (fsyncs and names),
 * temp files made ahead for the next -- runs in a thread of its own while
 * batch N+1 is fetched, and batch N+1's RETRs are sent before the job
 * starts: the network, the disk and the two cores are busy at once, and
 * the fetching thread never waits for an fsync unless the disk is the
 * slower. The order the crash tests check is kept: a job starts only when
 * the previous one returned, its pending rows are committed before its
 * delivery, and rows become delivered in the next job's transaction (or
 * at the end), after the delivery returned. While a job runs it alone
 * uses the state connection (the fetching thread defers the rows of
 * skipped messages to the job) and calls the backend's deliver, prepare
 * and tmp_discard; the POP3 session stays with the fetching thread, and
 * so does the pass's result (the job's counts and errors are applied when
 * it is waited for). */
#include "bridge/sync_priv.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "bridge/pop3.h"
#include "lib/deadline.h"
#include "lib/header.h"
#include "lib/hex.h"
#include "lib/log.h"
#include "lib/xmalloc.h"
#include "store/deliver.h"

/* Dedup: a copy another account's pass began storing less than this many
 * seconds ago is waited for (next pass) rather than stored a second time;
 * an older pending row is a crashed pass, which must not hold mail back. */
#define DEDUP_WAIT 3600

/* At most this many messages in a pass's first batch when batches overlap. */
#define FIRST_BATCH 50

/* Descriptors besides the batches' temp files (sockets, state, libraries). */
#define FD_RESERVE 128

/* What becomes of a fetched message: stored, recorded as a duplicate of
 * another account's copy, or left for the next pass (dedup). */
enum fate { F_STORE, F_DUP, F_DEFER };

/* One fetched message of a batch, between RETR and "delivered". */
struct fetched {
	struct pop3_entry e;
	char *key;
	struct header_info h;
	struct state_msg sm;
	enum fate fate;
	int fd;                 /* its temp file until the backend takes it */
};

/* A message skipped while the batch was fetched: its row is the job's. */
struct skip {
	const char *uidl;
	uint64_t size;
	char *reason;
};

/* A batch between its RETRs and its delivered rows. */
struct batch {
	struct pass *ps;
	struct fetched *f;
	size_t k, got;          /* messages asked for, fetched (f[0..got)) */
	struct skip *skips;
	size_t nskip;
	struct deliver_msg *dm; /* those to store: dm[j] is f[map[j]] */
	size_t *map, n_dm;
	/* The job: rows (prev's delivered ones in the same transaction),
	 * stage, deliver(dm), then prepare(ps->a->folder, ahead). */
	struct batch *prev;     /* delivered, its rows still pending; owned */
	size_t ahead;
	bool threaded;
	pthread_t th;
	/* What the job did, for the fetching thread to take when it waits. */
	bool rows_done;         /* the transaction committed */
	bool delivered;         /* deliver() returned 0 */
	size_t dups, deferred;
	int rc;                 /* an exit code, err its message */
	char *err;
};

/* How many octets RETR may bring for a message LIST says is size long:
 * generous (servers count differently), but bounded, and without
 * wrapping around for an absurd LIST size. */
static uint64_t
retr_limit(uint64_t size)
{
	const uint64_t slack = 1 << 20;

	return size > (UINT64_MAX - slack) / 2 ? UINT64_MAX : size * 2 + slack;
}

/* The pass's error for a RETR a limit ended (err, the reader's, is freed):
 * its own deadline, the pass's, or a stop. */
static char *
cut_short(struct pass *ps, int r, const struct pop3_entry *e, const char *uidl, char *err)
{
	enum deadline_end end = deadline_check(NULL);
	char *msg, *why;

	free(err);
	if (r == POP3_ESTOP || end == DEADLINE_STOP)
		sync_stop = 1;
	else if (end != DEADLINE_PASS)
		return xasprintf("RETR of message %lu (UIDL %s) exceeded its deadline of %u s",
		    e->num, uidl, pop3_deadline(ps->p));
	why = sync_halted_why();
	msg = xasprintf("RETR of message %lu (UIDL %s): %s", e->num, uidl, why);
	free(why);
	return msg;
}

/* RETR one message into a temp file of the store (f->fd). Returns 0, -1
 * when the server refused this one message (skipped, the session goes
 * on), or an exit code. */
static int
fetch_one(struct pass *ps, struct batch *b, const struct pop3_entry *e, const char *uidl,
    struct fetched *f)
{
	const char *folder = ps->a->folder;
	struct pop3_retr rr;
	char *err = NULL;
	int r;

	f->fd = -1;
	f->key = deliver_key(ps->tag);
	if (ps->be->tmp_create(ps->bctx, folder, f->key, e->size, &f->fd, &err) == -1)
		return sync_fail(ps, EX_IOERR, err);
	r = pop3_retr(ps->p, e->num, e->size, f->fd, ps->be->crlf ? POP3_EOL_CRLF : POP3_EOL_LF,
	    retr_limit(e->size), &rr, &err);
	if (r != POP3_OK) {
		char *derr = NULL, *why;

		close(f->fd);
		f->fd = -1;
		if (ps->be->tmp_discard(ps->bctx, folder, f->key, &derr) == -1)
			log_warnx("%s: %s", ps->a->name, derr);
		free(derr);
		if (r == POP3_EDEADLINE || r == POP3_ESTOP)
			err = cut_short(ps, r, e, uidl, err);
		if (r != POP3_ESERVER && r != POP3_ETOOBIG)
			return sync_pop3_fail(ps, r, err);
		/* One bad message never blocks the others: skipped, retried
		 * next pass (the reason without "host:port: RETR n: "). */
		why = r == POP3_ESERVER ?
		    xasprintf("RETR refused: %s", strstr(err, "-ERR") ? strstr(err, "-ERR") : err) :
		    xasprintf("RETR brought more than its LIST size (%llu octets) allows:"
		    " %s", (unsigned long long)e->size, strstr(err, "message larger") ?
		    strstr(err, "message larger") : err);
		sync_skip_note(ps, e, uidl, why);
		b->skips = xreallocarray(b->skips, b->nskip + 1, sizeof *b->skips);
		b->skips[b->nskip++] = (struct skip){ uidl, e->size, why };
		free(err);
		return -1;
	}
	if (rr.octets != e->size)
		log_debug("%s: message %lu: LIST said %llu octets, RETR gave %llu", ps->a->name,
		    e->num, (unsigned long long)e->size, (unsigned long long)rr.octets);
	header_scan(rr.header, rr.header_len, &f->h);
	free(rr.header);
	f->e = *e;
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
	r = state_dedup_find(ps->st, ps->acct, ps->store_id, f->sm.folder,
	    f->sm.message_id, f->sm.body_sha256, &orig, &owner, err);
	if (r != 1)
		return r;
	if (orig.state != STATE_PENDING) {
		f->fate = F_DUP;
		r = state_put_duplicate(ps->st, ps->acct, &f->sm, &orig, owner, err);
		if (r == 0)
			r = state_skip_clear(ps->st, ps->acct, f->sm.uidl, err);
	} else if (time(NULL) - orig.fetched_at < DEDUP_WAIT)
		f->fate = F_DEFER;
	state_msg_clear(&orig);
	return r == -1 ? -1 : 0;
}

/* Step b, inside the caller's transaction: a pending row for each message
 * of b to store, a delivered row for each duplicate. */
static int
put_rows(struct pass *ps, struct batch *b, char **err)
{
	for (size_t i = 0; i < b->got; i++)
		if (dedup_one(ps, &b->f[i], err) == -1 || (b->f[i].fate == F_STORE &&
		    state_put_pending(ps->st, ps->acct, &b->f[i].sm, err) == -1))
			return -1;
	return 0;
}

/* Step d, inside the caller's transaction: the stored messages' rows
 * become delivered, with where the store put them. A message the store
 * refused loses its pending row: it stays on the server, new again for
 * the next pass. */
static int
mark_rows(struct pass *ps, const struct batch *b, char **err)
{
	const struct deliver_msg *dm = b->dm;
	const char *uidl;
	int r;

	for (size_t j = 0; j < b->n_dm; j++) {
		uidl = b->f[b->map[j]].sm.uidl;
		r = dm[j].refused != NULL ?
		    state_drop_pending(ps->st, ps->acct, uidl, err) :
		    state_mark_delivered_uid(ps->st, ps->acct, uidl, dm[j].location,
			dm[j].uidvalidity, dm[j].uid, err);
		/* Imported at last: no longer a skipped message. */
		if (r == 0 && dm[j].refused == NULL)
			r = state_skip_clear(ps->st, ps->acct, uidl, err);
		if (r == -1)
			return -1;
	}
	return 0;
}

/* Removes the temp files of b's messages not stored (all of them when
 * all): nothing refers to them. */
static void
discard(struct pass *ps, struct batch *b, bool all)
{
	for (size_t i = 0; i < b->got; i++) {
		struct fetched *f = &b->f[i];
		char *derr = NULL;

		if (!all && f->fate == F_STORE)
			continue;
		if (f->fd != -1)
			close(f->fd);
		f->fd = -1;
		if (ps->be->tmp_discard(ps->bctx, f->sm.folder, f->key, &derr) == -1)
			log_warnx("%s: %s", ps->a->name, derr);
		free(derr);
	}
}

/* Says which messages the store refused; the first reason becomes the
 * pass's error (set once the pass is over: the others are imported). */
static void
note_refused(struct pass *ps, const struct fetched *f, const struct deliver_msg *dm)
{
	log_warnx("%s: the store refused message %lu (UIDL %s), left on the server: %s",
	    ps->a->name, f->e.num, f->sm.uidl, dm->refused);
	if (ps->res->refused++ == 0)
		ps->refused_first = xasprintf("UIDL %s: %s", f->sm.uidl, dm->refused);
}

/* How many of the next messages form a batch: bounded by batch_messages
 * and batch_bytes (by LIST size), at least one. */
static size_t
batch_len(const struct pass *ps, const size_t *idx, size_t left)
{
	uint64_t bytes = 0;
	size_t k = 0;

	while (k < left && k < ps->c->batch_messages) {
		bytes += pop3_listing_size(&ps->ls, idx[k]);
		if (k > 0 && bytes > ps->c->batch_bytes)
			break;
		k++;
	}
	return k;
}

static void batch_free(struct batch *b);

static struct batch *
batch_new(struct pass *ps, size_t k)
{
	struct batch *b = xcalloc(1, sizeof *b);

	b->ps = ps;
	b->k = k;
	b->f = xcalloc(k ? k : 1, sizeof *b->f);
	return b;
}

static void
batch_free(struct batch *b)
{
	if (b == NULL)
		return;
	for (size_t i = 0; i < b->got; i++) {
		if (b->f[i].fd != -1)
			close(b->f[i].fd);
		free(b->f[i].key);
		header_info_free(&b->f[i].h);
	}
	for (size_t j = 0; j < b->n_dm; j++) {
		free(b->dm[j].location);
		free(b->dm[j].refused);
	}
	for (size_t i = 0; i < b->nskip; i++)
		free(b->skips[i].reason);
	batch_free(b->prev);
	free(b->skips);
	free(b->f);
	free(b->dm);
	free(b->map);
	free(b->err);
	free(b);
}

/* Sends the RETRs of the batch idx[0..k) in one write when the server
 * pipelines (else pop3_retr sends each). 0 or an exit code. */
static int
announce(struct pass *ps, const size_t *idx, size_t k)
{
	unsigned long *nums = xcalloc(k ? k : 1, sizeof *nums);
	uint64_t *sizes = xcalloc(k ? k : 1, sizeof *sizes);
	char *err = NULL;
	int r;

	for (size_t j = 0; j < k; j++) {
		nums[j] = pop3_listing_num(&ps->ls, idx[j]);
		sizes[j] = pop3_listing_size(&ps->ls, idx[j]);
	}
	r = pop3_retr_pipeline(ps->p, nums, sizes, k, &err);
	free(nums);
	free(sizes);
	return r == POP3_OK ? 0 : sync_pop3_fail(ps, r, err);
}

/* Step a for batch b, its RETRs announced: each message into a temp
 * file. Stops at the first error or a stop request; what was fetched
 * until then stays in b. 0 or an exit code. */
static int
fetch(struct pass *ps, struct batch *b, const size_t *idx)
{
	int r;

	for (size_t j = 0; j < b->k; j++) {
		if (sync_stopping()) {
			/* Answers to pipelined RETRs may be on their way:
			 * the session cannot be reused for QUIT. */
			ps->broken = true;
			return 0;
		}
		struct pop3_entry e = sync_entry(ps, idx[j]);

		r = fetch_one(ps, b, &e, ps->uidls[idx[j]], &b->f[b->got]);
		ps->prog.msgs_done++;
		ps->prog.bytes_done += e.size;
		sync_show_progress(ps, false);
		if (r == 0)
			b->got++;
		else {
			free(b->f[b->got].key);
			memset(&b->f[b->got], 0, sizeof b->f[b->got]);
			if (r > 0)
				return r;
		}
	}
	return 0;
}

/* After b's pending rows are committed: the duplicates and deferred
 * messages counted and their temp files removed, the others handed over
 * for delivery (the backend closes their fds). */
static void
stage(struct pass *ps, struct batch *b)
{
	discard(ps, b, false);
	b->dm = xcalloc(b->got ? b->got : 1, sizeof *b->dm);
	b->map = xcalloc(b->got ? b->got : 1, sizeof *b->map);
	for (size_t i = 0; i < b->got; i++) {
		struct fetched *f = &b->f[i];
		struct deliver_msg *m = &b->dm[b->n_dm];

		b->dups += f->fate == F_DUP;
		b->deferred += f->fate == F_DEFER;
		if (f->fate != F_STORE)
			continue;
		m->key = f->key;
		m->folder = f->sm.folder;
		m->fd = f->fd;
		m->size = f->sm.size;
		m->date = header_internal_date(&f->h, f->sm.fetched_at);
		m->flags = ps->a->import_seen ? DELIVER_SEEN : 0;
		f->fd = -1;
		b->map[b->n_dm++] = i;
	}
}

/* One transaction: prev's delivered rows (prev may be NULL), the rows of
 * b's skipped messages, b's pending rows (b may be NULL). Flushed when it
 * holds pending rows, whose messages enter the store only after it;
 * otherwise bookkeeping durability is enough: the delivered messages'
 * files are durable and their pending rows flushed, so a machine crash
 * undoing it leaves pending rows that reconciliation finds stored
 * (doc/DESIGN.md, State and schema). */
static int
commit_rows(struct pass *ps, const struct batch *prev, struct batch *b, char **err)
{
	bool pending = b != NULL && b->got > 0;
	int r;

	if (prev != NULL && !(prev->delivered && prev->n_dm > 0))
		prev = NULL;
	if (prev == NULL && !pending && (b == NULL || b->nskip == 0))
		return 0;
	r = pending ? state_begin(ps->st, err) : state_begin_light(ps->st, err);
	if (r == 0 && prev != NULL)
		r = mark_rows(ps, prev, err);
	for (size_t i = 0; r == 0 && b != NULL && i < b->nskip; i++)
		r = state_skip(ps->st, ps->acct, b->skips[i].uidl, b->skips[i].size,
		    b->skips[i].reason, err);
	if (r == 0 && pending)
		r = put_rows(ps, b, err);
	if (r == 0)
		return state_commit(ps->st, err);
	state_rollback(ps->st);
	return -1;
}

/* Step b-c for batch b, the job (in a thread of its own when b->threaded:
 * see the top of this file for what it may touch): its rows, then its
 * delivery, then temp files made ahead for the next batch. */
static void *
job(void *arg)
{
	struct batch *b = arg;
	struct pass *ps = b->ps;
	char *err = NULL;
	int r;

	if (commit_rows(ps, b->prev, b, &b->err) == -1) {
		b->rc = EX_IOERR;
		return NULL;
	}
	b->rows_done = true;
	stage(ps, b);
	if (b->n_dm > 0 && (r = ps->be->deliver(ps->bctx, b->dm, b->n_dm, &b->err)) < 0) {
		b->rc = sync_store_code(r);
		return NULL;
	}
	b->delivered = true;
	if (b->ahead > 0 && ps->be->prepare != NULL &&
	    ps->be->prepare(ps->bctx, ps->a->folder, b->ahead, &err) == -1) {
		log_debug("%s: %s", ps->a->name, err);
		free(err);
	}
	return NULL;
}

/* Starts b's job: in a thread of its own (every signal blocked in it, so
 * that they reach this thread, whose reads they must cut short) when
 * b->threaded, else here and now. */
static void
job_start(struct batch *b)
{
	sigset_t all, old;

	if (b->threaded) {
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		if (pthread_create(&b->th, NULL, job, b) != 0)
			b->threaded = false;
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	if (!b->threaded)
		job(b);
}

/* Counts what prev imported, once its delivered rows are committed. */
static void
tally(struct pass *ps, const struct batch *prev)
{
	for (size_t j = 0; j < prev->n_dm; j++) {
		if (prev->dm[j].refused != NULL) {
			note_refused(ps, &prev->f[prev->map[j]], &prev->dm[j]);
			continue;
		}
		ps->res->imported++;
		ps->res->bytes += prev->f[prev->map[j]].sm.size;
	}
}

/* Waits for b's job and takes what it did into the pass. A failed
 * transaction leaves b's temp files without rows: removed; a failed
 * delivery may have stored some: every pending row is settled now,
 * exactly as a restart would. 0 or an exit code. */
static int
job_wait(struct pass *ps, struct batch *b)
{
	int rc;

	if (b->threaded)
		pthread_join(b->th, NULL);
	b->threaded = false;
	ps->res->duplicates += b->dups;
	ps->res->deferred += b->deferred;
	b->dups = b->deferred = 0;
	if (b->rows_done && b->prev != NULL && b->prev->delivered)
		tally(ps, b->prev);
	batch_free(b->prev);
	b->prev = NULL;
	if (b->rc == 0)
		return 0;
	rc = sync_fail(ps, b->rc, b->err);
	b->err = NULL;
	b->rc = 0;
	if (!b->rows_done)
		discard(ps, b, true);
	else
		sync_recover(ps);
	return rc;
}

/* Whether two batches of k messages may be in flight at once: the store
 * allows it and there are descriptors for both, and for the temp files
 * made ahead (the soft limit is raised as far as the hard one allows). */
static bool
may_overlap(const struct pass *ps, size_t k)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)k * 3 + FD_RESERVE;

	if (!ps->be->concurrent || getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return false;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need &&
	    (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need)) {
		rl.rlim_cur = need;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need;
}

int
sync_batches(struct pass *ps, const size_t *idx, size_t n)
{
	struct batch *last = NULL, *cur;
	size_t i = 0, k = batch_len(ps, idx, n), next = 0;
	bool overlap = may_overlap(ps, ps->c->batch_messages), more;
	char *err = NULL;
	int rc, r;

	/* The pipeline fills faster with a short first batch: the disk
	 * starts on its job while the rest streams in (and the first mail
	 * shows sooner, and a stop soon after finds the fetch under way). */
	if (overlap && k > FIRST_BATCH)
		k = FIRST_BATCH;
	rc = announce(ps, idx, k);

	while (rc == 0 && i < n) {
		cur = batch_new(ps, k);
		r = fetch(ps, cur, idx + i);
		i += k;
		more = r == 0 && !ps->broken && i < n && !sync_stopping();
		/* The next batch's RETRs go now: the server sends while this
		 * batch's job runs. */
		if (more && (next = batch_len(ps, idx + i, n - i)) > 0 &&
		    (r = announce(ps, idx + i, next)) != 0)
			more = false;
		/* One job at a time, in order: the last one's result first. */
		if (last != NULL && (rc = job_wait(ps, last)) != 0) {
			discard(ps, cur, true);
			batch_free(cur);
			break;
		}
		cur->prev = last;
		cur->threaded = overlap && more;
		cur->ahead = cur->threaded ? next : 0;
		job_start(cur);
		last = cur;
		rc = r;
		if (!cur->threaded && (r = job_wait(ps, cur)) != 0)
			rc = rc ? rc : r;
		if (rc != 0 || !more)
			break;
		k = next;
	}
	/* The last batch's delivered rows. */
	if (last != NULL && (r = job_wait(ps, last)) != 0)
		rc = rc ? rc : r;
	else if (last != NULL && last->delivered) {
		if (commit_rows(ps, last, NULL, &err) == -1)
			rc = rc ? rc : sync_fail(ps, EX_IOERR, err);
		else
			tally(ps, last);
	}
	batch_free(last);
	return rc;
}

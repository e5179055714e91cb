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

#include "bridge/header.h"
#include "bridge/log.h"
#include "bridge/pop3.h"
#include "bridge/xmalloc.h"
#include "store/deliver.h"

volatile sig_atomic_t sync_stop;

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
};

/* One fetched message of a batch, between RETR and "delivered". */
struct fetched {
	const struct pop3_entry *e;
	char *key;
	struct header_info h;
	struct state_msg sm;
};

static int
fail(struct pass *ps, int code, char *err)
{
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
		for (int k = 0; k < 32; k++)
			snprintf(hex + 2 * k, 3, "%02x", h[k]);
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
	    e->size * 2 + (1 << 20), &rr, &err);
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
	header_scan_fd(*fd, &f->h);
	f->e = e;
	f->sm.uidl = (char *)uidl;
	f->sm.size = rr.written;
	for (int k = 0; k < 32; k++)
		snprintf(f->sm.sha256 + 2 * k, 3, "%02x", rr.sha256[k]);
	f->sm.message_id = f->h.message_id;
	f->sm.delivery_key = f->key;
	f->sm.folder = (char *)folder;
	f->sm.state = STATE_PENDING;
	f->sm.fetched_at = time(NULL);
	return 0;
}

/* Steps b-d of the import protocol for a whole batch: one transaction of
 * pending rows, one durable delivery of every file, one transaction of
 * delivered rows. fds are handed to the backend, which closes them. */
static int
deliver_batch(struct pass *ps, struct fetched *f, int *fds, size_t n)
{
	struct deliver_msg *dm = xcalloc(n, sizeof *dm);
	char *err = NULL;
	int rc = 0;
	size_t i;

	if (state_begin(ps->st, &err) == -1)
		goto state_failed;
	for (i = 0; i < n; i++)
		if (state_put_pending(ps->st, ps->acct, &f[i].sm, &err) == -1) {
			state_rollback(ps->st);
			goto state_failed;
		}
	if (state_commit(ps->st, &err) == -1)
		goto state_failed;

	for (i = 0; i < n; i++) {
		dm[i].key = f[i].key;
		dm[i].folder = f[i].sm.folder;
		dm[i].fd = fds[i];
		dm[i].size = f[i].sm.size;
		dm[i].date = header_internal_date(&f[i].h, f[i].sm.fetched_at);
		dm[i].flags = ps->a->import_seen ? DELIVER_SEEN : 0;
		fds[i] = -1;
	}
	if (ps->be->deliver(ps->bctx, dm, n, &err) == -1) {
		/* Some files may be in the store already: settle each row now
		 * exactly as a restart would. */
		rc = fail(ps, EX_IOERR, err);
		recover(ps);
		goto out;
	}
	if (state_begin(ps->st, &err) == -1)
		goto delivered_failed;
	for (i = 0; i < n; i++)
		if (state_mark_delivered(ps->st, ps->acct, f[i].sm.uidl, dm[i].location, &err) == -1) {
			state_rollback(ps->st);
			goto delivered_failed;
		}
	if (state_commit(ps->st, &err) == -1)
		goto delivered_failed;
	for (i = 0; i < n; i++) {
		ps->res->imported++;
		ps->res->bytes += f[i].sm.size;
	}
	goto out;

state_failed:
	rc = fail(ps, EX_IOERR, err);
	for (i = 0; i < n; i++) {
		char *derr = NULL;

		if (fds[i] != -1)
			close(fds[i]);
		fds[i] = -1;
		ps->be->tmp_discard(ps->bctx, f[i].sm.folder, f[i].key, &derr);
		free(derr);
	}
	goto out;
delivered_failed:
	/* The files are durable and the rows pending: the next run's
	 * reconciliation finds them and marks them delivered. */
	rc = fail(ps, EX_IOERR, err);
out:
	for (i = 0; i < n; i++)
		free(dm[i].location);
	free(dm);
	return rc;
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
		if (sync_stop) {
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

static int
import_new(struct pass *ps)
{
	size_t *idx = NULL, n = 0, i = 0, k;
	char *err = NULL;
	int rc = 0;

	if (state_filter_new(ps->st, ps->acct, ps->uidls, ps->n_ent, &idx, &n, &err) == -1)
		return fail(ps, EX_IOERR, err);
	ps->res->fresh = n;
	while (rc == 0 && i < n && !sync_stop) {
		k = batch_len(ps, idx + i, n - i);
		rc = import_batch(ps, idx + i, k);
		i += k;
		show_progress(ps, false);
	}
	if (n > 0)
		show_progress(ps, true);
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
	if (rc == 0 && !sync_stop && !ps->broken)
		rc = mark_deletions(ps, &del, &ndel);
	if (rc == 0 && !sync_stop && !ps->broken)
		rc = finish_session(ps, del, ndel);
	free(del);
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
	} else
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

#include "bridge/sync.h"
#include "bridge/sync_priv.h"

#include <errno.h>
#include <limits.h>
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

#include "bridge/backoff.h"
#include "bridge/pop3.h"
#include "lib/deadline.h"
#include "lib/log.h"
#include "lib/proc.h"
#include "lib/xmalloc.h"
#include "store/deliver.h"

volatile sig_atomic_t sync_stop;
void (*sync_progress_hook)(const struct sync_progress *);

/* A stop (SIGTERM/SIGINT) or the pass deadline ends the pass between two
 * steps; inside one, the POP3 reader notices them (lib/deadline.h). The
 * signals are held (proc_child_init), so none cuts I/O short. */
bool
sync_stopping(void)
{
	if (!sync_stop && proc_stop_requested())
		sync_stop = 1;
	return sync_stop || deadline_check(NULL) == DEADLINE_PASS;
}

char *
sync_halted_why(void)
{
	char why[DEADLINE_TEXT_MAX];

	return xasprintf("%s; what was fetched is kept, the rest comes next pass",
	    deadline_text(sync_stop ? DEADLINE_STOP : DEADLINE_PASS, 0, why, sizeof why));
}

/* A login refused with [IN-USE] or [SYS/TEMP] waits this long before the
 * next one, doubled for each failed pass before it, at most BUSY_MAX; one
 * refused with [LOGIN-DELAY] the delay the server announced, else
 * LOGIN_DELAY_UNKNOWN (providers that enforce one use 5 to 15 minutes). */
#define BUSY_FIRST 60
#define BUSY_MAX 3600
#define LOGIN_DELAY_UNKNOWN 900

int
sync_fail(struct pass *ps, int code, char *err)
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

int
sync_pop3_code(int e)
{
	switch (e) {
	case POP3_ENET:
	case POP3_ESERVER:
	case POP3_EDEADLINE:
	case POP3_ESTOP:
		return EX_TEMPFAIL;
	case POP3_ETLS:
	case POP3_EAUTH:
		return EX_UNAVAILABLE;
	case POP3_EPROTO:
		return EX_PROTOCOL;
	case POP3_ECONFIG:
		return EX_CONFIG;
	case POP3_ETOOBIG:
		return EX_DATAERR;
	default:
		return EX_IOERR;
	}
}

int
sync_store_code(int r)
{
	switch (r) {
	case DELIVER_ETEMP:
		return EX_TEMPFAIL;
	case DELIVER_EAUTH:
		return EX_UNAVAILABLE;
	default:
		return EX_IOERR;
	}
}

int
sync_pop3_fail(struct pass *ps, int e, char *err)
{
	if (e != POP3_ESERVER && e != POP3_ETOOBIG)
		ps->broken = true;
	return sync_fail(ps, sync_pop3_code(e), err ? err : xstrdup("POP3 error"));
}

struct pop3_entry
sync_entry(const struct pass *ps, size_t i)
{
	return pop3_listing_entry(&ps->ls, i);
}

int
sync_sizes(struct pass *ps, const size_t *idx, size_t n)
{
	char *err = NULL;
	int r;

	if ((r = pop3_sizes(ps->p, &ps->ls, idx, n, &err)) != POP3_OK)
		return sync_pop3_fail(ps, r, err);
	return 0;
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
		rc = sync_fail(ps, EX_IOERR, xasprintf("%s: %s", dir, strerror(errno)));
	else if ((*fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) == -1)
		rc = sync_fail(ps, EX_IOERR, xasprintf("%s: %s", path, strerror(errno)));
	else if (flock(*fd, LOCK_EX | LOCK_NB) == -1) {
		rc = errno == EWOULDBLOCK ?
		    sync_fail(ps, EX_TEMPFAIL, xstrdup("busy: another pop3bridge is syncing this account")) :
		    sync_fail(ps, EX_IOERR, xasprintf("%s: %s", path, strerror(errno)));
		close(*fd);
		*fd = -1;
	}
	free(dir);
	free(path);
	return rc;
}

/* Tells the backend which keys the find() calls of reconcile() ask for. */
static void
recovering(struct pass *ps, const struct state_msg *rows, size_t n)
{
	const char **folders = xcalloc(n, sizeof *folders);
	const char **keys = xcalloc(n, sizeof *keys);

	for (size_t i = 0; i < n; i++) {
		folders[i] = rows[i].folder;
		keys[i] = rows[i].delivery_key;
	}
	ps->be->recovering(ps->bctx, folders, keys, n);
	free(folders);
	free(keys);
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

	/* Before the transaction: the store may take a while (network, a
	 * wait for a quiet folder), and other passes want to write. */
	if (n > 0 && ps->be->recovering != NULL)
		recovering(ps, rows, n);
	if (state_begin(ps->st, &err) == -1)
		return sync_fail(ps, EX_IOERR, err);
	for (size_t i = 0; i < n; i++) {
		struct state_msg *m = &rows[i];

		loc = NULL;
		r = ps->be->find(ps->bctx, m->folder, m->delivery_key, &loc, &err);
		if (r == 1) {
			r = state_mark_delivered(ps->st, ps->acct, m->uidl, loc, &err);
			/* Imported: no longer a skipped message (the commit that
			 * said so may have been undone by a machine crash). */
			if (r == 0)
				r = state_skip_clear(ps->st, ps->acct, m->uidl, &err);
			found++;
		} else if (r == 0) {
			r = ps->be->tmp_discard(ps->bctx, m->folder, m->delivery_key, &err);
			if (r == 0)
				r = state_drop_pending(ps->st, ps->acct, m->uidl, &err);
		}
		free(loc);
		if (r < 0) {
			state_rollback(ps->st);
			return sync_fail(ps, sync_store_code(r), err);
		}
	}
	if (state_commit(ps->st, &err) == -1)
		return sync_fail(ps, EX_IOERR, err);
	if (n > 0)
		log_info("%s: recovered %zu interrupted deliveries (%zu already stored, %zu to fetch again)",
		    ps->a->name, n, found, n - found);
	return 0;
}

int
sync_recover(struct pass *ps)
{
	struct state_msg *rows = NULL;
	size_t n = 0;
	char *err = NULL;
	int rc;

	if (state_pending(ps->st, ps->acct, &rows, &n, &err) == -1)
		return sync_fail(ps, EX_IOERR, err);
	rc = reconcile(ps, rows, n);
	state_msgs_free(rows, n);
	if (rc == 0 && ps->be->tmp_cleanup(ps->bctx, ps->a->folder, ps->tag, &err) == -1)
		rc = sync_fail(ps, EX_IOERR, err);
	return rc;
}

/* How long a login refused "for now" waits (see BUSY_FIRST). */
static int64_t
busy_backoff(const struct pass *ps)
{
	unsigned long f = ps->sched.failures < 6 ? ps->sched.failures : 6;
	int64_t wait = (int64_t)BUSY_FIRST << f;

	if (ps->login.busy == POP3_BUSY_LOGIN_DELAY)
		return ps->login.login_delay > 0 ? ps->login.login_delay :
		    ps->sched.login_delay > 0 ? ps->sched.login_delay : LOGIN_DELAY_UNKNOWN;
	return wait < BUSY_MAX ? wait : BUSY_MAX;
}

/* After a login: which mechanism (said when auto had to fall back), the
 * server's LOGIN-DELAY and EXPIRE of the CAPA after login (RFC 2449: that
 * one is authoritative) and when the next login may be. */
static int
note_login(struct pass *ps, time_t login_at)
{
	const struct pop3_caps *c = pop3_caps(ps->p);
	long expire = c->expire == -1 ? STATE_EXPIRE_NONE : c->expire == LONG_MAX ? -1 :
	    c->expire;
	char *err = NULL;

	if (ps->login.refused != NULL)
		log_info("%s: logged in with %s after %s", ps->a->name, ps->login.mechanism,
		    ps->login.refused);
	else
		log_debug("%s: logged in with %s", ps->a->name, ps->login.mechanism);
	if (ps->login.utf8_refused != NULL)
		log_warnx("%s: the server announces UTF8 but refused it (%s): messages with"
		    " 8-bit headers may come altered", ps->a->name, ps->login.utf8_refused);
	ps->res->login_delay = c->login_delay;
	if (state_note_login(ps->st, ps->acct, ps->login.mechanism, c->login_delay, expire,
	    c->login_delay > 0 ? (int64_t)login_at + c->login_delay : 0, &err) == -1)
		return sync_fail(ps, EX_IOERR, err);
	return 0;
}

int
sync_open(struct pass *ps, int *rv, char **err)
{
	char *pw = NULL;
	int r;

	*err = NULL;
	if ((r = conf_password_run(&ps->a->pop3, &pw, err)) != 0)
		return sync_fail(ps, r == -2 ? EX_TEMPFAIL : EX_CONFIG, *err);
	*rv = pop3_open(&ps->p, &ps->a->pop3, pw, &ps->login, err);
	if (pw) {
		explicit_bzero(pw, strlen(pw));
		free(pw);
	}
	if (*rv != POP3_OK)
		ps->p = NULL;
	return 0;
}

static int
connect_server(struct pass *ps)
{
	char *err, *serr = NULL;
	int r, code;

	if ((code = sync_open(ps, &r, &err)) != 0)
		return code;
	if (r == POP3_OK)
		return note_login(ps, time(NULL));
	if (ps->login.busy != POP3_BUSY_NONE) {
		int64_t until = (int64_t)time(NULL) + busy_backoff(ps);

		if (state_set_not_before(ps->st, ps->acct, until, &serr) == -1) {
			log_warnx("%s: %s", ps->a->name, serr);
			free(serr);
		}
	}
	return sync_fail(ps, sync_pop3_code(r), err ? err : xstrdup("POP3 error"));
}

/* The server has no UIDL listing. Deriving ids is right for a server that
 * says so (CAPA without UIDL); one that does not say (no CAPA) and refused
 * UIDL for an account whose messages are known by UIDL may only be
 * failing for now: deriving would import everything again. */
static int
check_no_uidl(struct pass *ps)
{
	const char *why = pop3_uidl_refused(ps->p);
	char *err = NULL;
	bool known;

	if (why == NULL || pop3_caps(ps->p)->capa)
		return 0;
	if (state_has_uidls(ps->st, ps->acct, SYNC_DERIVED_PREFIX, &known, &err) == -1)
		return sync_fail(ps, EX_IOERR, err);
	if (!known)
		return 0;
	return sync_fail(ps, EX_TEMPFAIL, xasprintf("UIDL refused (-ERR %s) by a server"
	    " that does not announce its capabilities, for an account whose messages are"
	    " known by UIDL: nothing imported, tried again next pass", why));
}

static int
list_server(struct pass *ps)
{
	char *err = NULL;
	int r, rc;

	if ((r = pop3_scan(ps->p, &ps->ls, &err)) != POP3_OK)
		return sync_pop3_fail(ps, r, err);
	ps->res->listed = ps->ls.n;
	ps->uidls = ps->ls.id;
	ps->no_uidl = ps->ls.n > 0 && pop3_listing_status(&ps->ls, 0) == POP3_UIDL_NONE;
	if (ps->no_uidl && (rc = check_no_uidl(ps)) != 0)
		return rc;
	if (state_set_no_uidl(ps->st, ps->acct, ps->no_uidl, &err) == -1)
		return sync_fail(ps, EX_IOERR, err);
	if ((rc = sync_ids_derive(ps)) != 0)
		return rc;
	/* A skipped message no longer listed is not skipped any more. */
	if (state_skip_prune(ps->st, ps->acct, ps->uidls, ps->ls.n, &err) == -1)
		return sync_fail(ps, EX_IOERR, err);
	return 0;
}

void
sync_skip_note(struct pass *ps, const struct pop3_entry *e, const char *uidl,
    const char *reason)
{
	log_warnx("%s: message %lu (UIDL %s) skipped, left on the server: %s", ps->a->name,
	    e->num, uidl, reason);
	if (ps->res->skipped++ == 0)
		ps->skipped_first = xasprintf("message %lu, UIDL %s: %s", e->num, uidl, reason);
}

void
sync_skip_message(struct pass *ps, const struct pop3_entry *e, const char *uidl,
    const char *reason)
{
	char *err = NULL;

	sync_skip_note(ps, e, uidl, reason);
	if (state_skip(ps->st, ps->acct, uidl, e->size, reason, &err) == -1) {
		log_warnx("%s: %s", ps->a->name, err);
		free(err);
	}
}

void
sync_show_progress(struct pass *ps, bool done)
{
	if (!ps->progress)
		return;
	ps->prog.finished = done;
	sync_progress_hook(&ps->prog);
}

/* The messages over max_message_size (by LIST size) are skipped without
 * RETR; they leave idx[0..*n). */
static void
skip_oversized(struct pass *ps, size_t *idx, size_t *n)
{
	uint64_t max = ps->a->max_message_size;
	size_t k = 0;

	for (size_t j = 0; j < *n; j++) {
		struct pop3_entry e = sync_entry(ps, idx[j]);
		char *why;

		if (max == 0 || e.size <= max) {
			idx[k++] = idx[j];
			continue;
		}
		why = xasprintf("larger than max_message_size (%llu > %llu octets)",
		    (unsigned long long)e.size, (unsigned long long)max);
		sync_skip_message(ps, &e, ps->uidls[idx[j]], why);
		free(why);
	}
	*n = k;
}

/* Messages skipped on an earlier pass are tried after all the others, so
 * that one that breaks the session (a RETR that never ends) cannot keep
 * the rest out. */
static int
skipped_last(struct pass *ps, size_t *idx, size_t n)
{
	struct state_skip *sk = NULL;
	size_t nsk = 0, k = 0, *later;
	char *err = NULL;
	bool *was;

	if (state_skipped(ps->st, ps->acct, &sk, &nsk, &err) == -1)
		return sync_fail(ps, EX_IOERR, err);
	if (nsk == 0)
		return 0;
	was = xcalloc(n ? n : 1, sizeof *was);
	later = xcalloc(n ? n : 1, sizeof *later);
	for (size_t j = 0; j < n; j++)
		for (size_t i = 0; i < nsk && !was[j]; i++)
			was[j] = strcmp(sk[i].uidl, ps->uidls[idx[j]]) == 0;
	for (size_t j = 0; j < n; j++)
		if (!was[j])
			idx[k++] = idx[j];
		else
			later[j - k] = idx[j];
	memcpy(idx + k, later, (n - k) * sizeof *idx);
	free(was);
	free(later);
	state_skips_free(sk, nsk);
	return 0;
}

static int
import_new(struct pass *ps)
{
	size_t *idx = NULL, n = 0;
	char *err = NULL;
	int rc = 0;

	if (state_filter_new(ps->st, ps->acct, ps->uidls, ps->ls.n, &idx, &n, &err) == -1)
		return sync_fail(ps, EX_IOERR, err);
	/* Sizes only for what is new: a poll that finds nothing new reads
	 * no LIST at all. */
	if ((rc = sync_sizes(ps, idx, n)) != 0 || (rc = sync_ids_guard(ps, idx, &n)) != 0 ||
	    (rc = skipped_last(ps, idx, n)) != 0) {
		free(idx);
		return rc;
	}
	skip_oversized(ps, idx, &n);
	ps->res->fresh = n;
	ps->prog.msgs_total = n;
	for (size_t j = 0; j < n; j++)
		ps->prog.bytes_total += pop3_listing_size(&ps->ls, idx[j]);
	if (n > 0 && !sync_stopping())
		rc = sync_batches(ps, idx, n);
	if (n > 0)
		sync_show_progress(ps, true);
	if (ps->res->duplicates > 0)
		log_info("%s: %lu messages already in the store for another account:"
		    " recorded, not stored again", ps->a->name, ps->res->duplicates);
	if (ps->res->deferred > 0)
		log_info("%s: %lu messages left for the next pass: another account"
		    " is storing them right now", ps->a->name, ps->res->deferred);
	free(idx);
	return rc;
}

/* The pass's result once everything else is done: messages the store
 * refused or that were skipped make it 65 (the others are imported). */
static int
data_errors(struct pass *ps)
{
	char *refused = NULL, *skipped = NULL;

	if (ps->res->refused == 0 && ps->res->skipped == 0)
		return 0;
	if (ps->res->refused > 0)
		refused = xasprintf("the store refused %lu message%s (%s); they stay on the"
		    " server", ps->res->refused, ps->res->refused == 1 ? "" : "s",
		    ps->refused_first);
	if (ps->res->skipped > 0)
		skipped = xasprintf("%lu message%s skipped, left on the server (%s%s); the"
		    " others imported", ps->res->skipped, ps->res->skipped == 1 ? "" : "s",
		    ps->skipped_first, ps->res->skipped > 1 ? ", ..." : "");
	sync_fail(ps, EX_DATAERR, refused == NULL ? skipped : skipped == NULL ? refused :
	    xasprintf("%s; %s", refused, skipped));
	if (refused != NULL && skipped != NULL) {
		free(refused);
		free(skipped);
	}
	return EX_DATAERR;
}

static int
run_pass(struct pass *ps)
{
	int rc;

	if ((rc = sync_recover(ps)) || (rc = connect_server(ps)) || (rc = list_server(ps)))
		return rc;
	rc = import_new(ps);
	if (rc == 0 && !sync_stopping() && !ps->broken)
		rc = sync_end_session(ps);
	/* Stopped between two steps: the session was not finished. */
	if (rc == 0 && ps->p != NULL)
		rc = sync_fail(ps, EX_TEMPFAIL, sync_halted_why());
	return rc == 0 ? data_errors(ps) : rc;
}

/* A pass that failed, for the schedule: 65 (a message refused or
 * skipped, the others imported) is not, the account works. */
static bool
pass_failed(int rc)
{
	return rc != 0 && rc != EX_DATAERR;
}

/* The poll log, and when the next pass is planned: the poll interval on,
 * but never before the server allows a login. */
static void
log_pass(struct pass *ps, time_t started, int rc)
{
	struct state_poll pl = {
		.started = started, .finished = time(NULL), .ok = rc == 0,
		.imported = ps->res->imported, .deleted = ps->res->deleted,
		.server_deleted = ps->res->server_deleted, .skipped = ps->res->skipped,
		.bytes = ps->res->bytes, .error = ps->res->error,
	};
	/* Stopped (TERM/INT taken or still pending): no failure, no backoff. */
	bool stopped = sync_stop || proc_stop_requested() || deadline_check(NULL) == DEADLINE_STOP;
	struct state_sched sc;
	int64_t next;
	char *err = NULL;

	if (sync_stop && rc == 0)
		pl.error = "interrupted";
	/* One bookkeeping commit: nothing here decides what is imported or
	 * deleted, so a nothing-new pass flushes nothing to disk. */
	if (state_schedule(ps->st, ps->acct, &sc, &err) == 0 &&
	    state_begin_light(ps->st, &err) == 0) {
		/* A failing account backs off (bridge/backoff.h); a pass that
		 * worked, or was stopped, plans the next poll after its
		 * interval again. */
		next = (int64_t)time(NULL) + (pass_failed(rc) && !stopped ?
		    backoff_delay(ps->a->poll_interval, sc.failures + 1, rc == EX_UNAVAILABLE,
		    backoff_random()) : (int64_t)ps->a->poll_interval);
		if (sc.not_before > next)
			next = sc.not_before;
		ps->res->next_poll = next;
		/* A stop request is no failure: the next pass goes on at once. */
		if (state_poll_log(ps->st, ps->acct, &pl, &err) == -1 ||
		    state_pass_end(ps->st, ps->acct, pass_failed(rc) && !stopped, next, &err) == -1 ||
		    state_commit(ps->st, &err) == -1)
			state_rollback(ps->st);
	}
	if (err != NULL) {
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
		for (size_t i = 0; i < ps->ls.n; i++)
			free(ps->derived[i]);
	free(ps->derived);
	free(ps->top);
	pop3_listing_free(&ps->ls);
	pop3_login_free(&ps->login);
	free(ps->tag);
	free(ps->store_id);
	free(ps->refused_first);
	free(ps->skipped_first);
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
		return sync_fail(ps, EX_IOERR, err);
	return 0;
}

/* No login before the time the server allows (its LOGIN-DELAY after the
 * last login, or a refusal's backoff): the pass does not run (75), and
 * says until when. It is not a failed pass, and no poll is logged. */
static int
too_early(struct pass *ps)
{
	time_t now = time(NULL), nb = (time_t)ps->sched.not_before;
	char when[64];
	struct tm tm;

	if (ps->sched.not_before <= (int64_t)now)
		return 0;
	strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S %z", localtime_r(&nb, &tm));
	ps->res->next_poll = ps->sched.not_before;
	return sync_fail(ps, EX_TEMPFAIL, xasprintf("not polled: the server allows no"
	    " login before %s (in %lld s%s)", when, (long long)(nb - now),
	    ps->sched.login_delay > 0 ? ", its LOGIN-DELAY" : ""));
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
	ps.login.login_delay = -1;
	ps.progress = sync_progress_hook != NULL;
	if ((rc = lock_account(&ps, &lockfd)) != 0)
		return rc;
	if (state_account(st, a->name, &ps.acct, &err) == -1 ||
	    state_schedule(st, ps.acct, &ps.sched, &err) == -1) {
		rc = sync_fail(&ps, EX_IOERR, err);
		goto out;
	}
	if ((rc = too_early(&ps)) != 0)
		goto out;
	ps.tag = xasprintf("X%lld", (long long)ps.acct);
	ps.be = deliver_backend_for(c->store.type);
	if (ps.be == NULL)
		rc = sync_fail(&ps, EX_CONFIG, xstrdup("this store type is not supported"));
	else if ((rc = ps.be->open(c, a, &ps.bctx, &err)) < 0) {
		ps.bctx = NULL;
		rc = sync_fail(&ps, sync_store_code(rc), err);
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

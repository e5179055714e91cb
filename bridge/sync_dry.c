/* `sync --dry-run`: one account's pass as far as it can go without
 * changing anything. It logs in and lists (derived ids take TOP, as a
 * pass would), then says what a pass would import, skip and delete. It
 * writes nothing: no state row (the database is only read, and not made
 * when missing), nothing in the store (the backend is not even opened),
 * and nothing on the server: the session is closed without QUIT, so no
 * DELE and no EXPIRE 0 deletion of what TOP retrieved can take effect
 * (RFC 1939, 6: no UPDATE state without QUIT). */
#include "bridge/sync.h"
#include "bridge/sync_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "lib/log.h"
#include "lib/xmalloc.h"

bool sync_dry_run;

/* What the pass would do. */
struct dry {
	size_t pending;         /* interrupted deliveries it would settle first */
	size_t fresh, skip, del;
	uint64_t bytes;
	bool guard;             /* most UIDLs unknown: the fingerprint guard would look */
};

static int
dry_connect(struct pass *ps)
{
	char *err;
	int r, code;

	if ((code = sync_open(ps, &r, &err)) != 0)
		return code;
	if (r != POP3_OK)
		return sync_fail(ps, sync_pop3_code(r), err ? err : xstrdup("POP3 error"));
	if ((r = pop3_scan(ps->p, &ps->ls, &err)) != POP3_OK)
		return sync_pop3_fail(ps, r, err);
	ps->res->listed = ps->ls.n;
	ps->uidls = ps->ls.id;
	ps->no_uidl = ps->ls.n > 0 && pop3_listing_status(&ps->ls, 0) == POP3_UIDL_NONE;
	return sync_ids_derive(ps);
}

/* New messages, those over max_message_size, and whether the UIDL-reset
 * guard would run (its TOPs and adoptions are left to a real pass). */
static int
dry_new(struct pass *ps, struct dry *d)
{
	size_t *idx = NULL, n = ps->ls.n;
	uint64_t max = ps->a->max_message_size, size;
	unsigned th = ps->a->uidl_reset_threshold;
	char *err = NULL;
	bool known = false;
	int rc;

	if (ps->st != NULL && ps->acct != 0 &&
	    (state_filter_new(ps->st, ps->acct, ps->uidls, ps->ls.n, &idx, &n, &err) == -1 ||
	    state_has_imported(ps->st, ps->acct, &known, &err) == -1))
		return sync_fail(ps, EX_IOERR, err);
	if (idx == NULL) {
		/* Nothing known: every message is new. */
		idx = xreallocarray(NULL, n ? n : 1, sizeof *idx);
		for (size_t j = 0; j < n; j++)
			idx[j] = j;
	}
	if ((rc = sync_sizes(ps, idx, n)) != 0) {
		free(idx);
		return rc;
	}
	for (size_t j = 0; j < n; j++) {
		size = pop3_listing_size(&ps->ls, idx[j]);
		if (max != 0 && size > max)
			d->skip++;
		else {
			d->fresh++;
			d->bytes += size;
		}
	}
	d->guard = known && !ps->no_uidl && th > 0 && n > 0 &&
	    (uint64_t)n * 100 > (uint64_t)th * ps->ls.n;
	free(idx);
	return 0;
}

/* What the deletion policy would DELE now. */
static int
dry_deletions(struct pass *ps, struct dry *d)
{
	const struct conf_account *a = ps->a;
	size_t *idx = NULL, n = 0;
	int64_t cutoff;
	char *err = NULL;

	if ((a->leave_on_server && a->delete_after_days == 0) || ps->st == NULL || ps->acct == 0)
		return 0;
	cutoff = a->leave_on_server ?
	    (int64_t)time(NULL) - (int64_t)a->delete_after_days * 86400 : INT64_MAX;
	if (state_due_for_delete(ps->st, ps->acct, ps->uidls, ps->ls.n, cutoff, &idx, &n,
	    &err) == -1)
		return sync_fail(ps, EX_IOERR, err);
	d->del = n;
	free(idx);
	return 0;
}

static void
dry_print(const struct pass *ps, const struct dry *d)
{
	printf("%s: %lu on the server; would import %zu (%llu bytes), skip %zu (over"
	    " max_message_size), delete %zu", ps->a->name, ps->res->listed, d->fresh,
	    (unsigned long long)d->bytes, d->skip, d->del);
	if (d->pending > 0)
		printf("; %zu interrupted deliveries to settle first", d->pending);
	if (d->guard)
		fputs("; most UIDLs are unknown: the UIDL-reset guard would compare"
		    " fingerprints first (fewer may be imported)", stdout);
	if (ps->no_uidl)
		fputs("; the server has no UIDL (ids from size and header hash)", stdout);
	fputs(" (dry run: nothing changed)\n", stdout);
	fflush(stdout);
}

/* The account's id and pending rows, read only: a database or an account
 * that does not exist yet means nothing is known. */
static int
dry_state(struct pass *ps, struct dry *d)
{
	struct state_msg *rows = NULL;
	char *err = NULL;
	int r;

	if (ps->st == NULL)
		return 0;
	if ((r = state_account_id(ps->st, ps->a->name, &ps->acct, &err)) == -1)
		return sync_fail(ps, EX_IOERR, err);
	if (r == 0) {
		ps->acct = 0;
		return 0;
	}
	if (state_schedule(ps->st, ps->acct, &ps->sched, &err) == -1 ||
	    state_pending(ps->st, ps->acct, &rows, &d->pending, &err) == -1)
		return sync_fail(ps, EX_IOERR, err);
	state_msgs_free(rows, d->pending);
	return 0;
}

int
sync_dry_account(const struct conf *c, const struct conf_account *a, struct state *st,
    struct sync_result *res)
{
	struct pass ps = { .c = c, .a = a, .st = st, .res = res };
	struct dry d = { 0 };
	int rc;

	memset(res, 0, sizeof *res);
	res->login_delay = -1;
	ps.login.login_delay = -1;
	if ((rc = dry_state(&ps, &d)) == 0 && ps.sched.not_before > (int64_t)time(NULL))
		rc = sync_fail(&ps, EX_TEMPFAIL, xstrdup("not polled: the server allows no"
		    " login yet (LOGIN-DELAY, or a refused login's wait)"));
	if (rc == 0 && (rc = dry_connect(&ps)) == 0 && (rc = dry_new(&ps, &d)) == 0 &&
	    (rc = dry_deletions(&ps, &d)) == 0)
		dry_print(&ps, &d);
	res->fresh = d.fresh;
	res->skipped = d.skip;
	/* Never QUIT: closed without UPDATE state, nothing is deleted. */
	if (ps.p != NULL)
		pop3_abort(ps.p);
	ps.p = NULL;
	if (ps.derived)
		for (size_t i = 0; i < ps.ls.n; i++)
			free(ps.derived[i]);
	free(ps.derived);
	free(ps.top);
	pop3_listing_free(&ps.ls);
	pop3_login_free(&ps.login);
	return rc;
}

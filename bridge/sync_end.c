/* The end of a session (doc/DESIGN.md, The import protocol, steps 7-8):
 * the deletion policy, QUIT, and the RFC 2449 EXPIRE rule.
 *
 * A QUIT is the server's UPDATE state: it removes the DELE'd messages,
 * and a server with EXPIRE 0 also every message retrieved (RETR or TOP)
 * in the session. So when something retrieved is not durably stored (the
 * store refused it, dedup deferred it, it was skipped after RETR) and the
 * server's EXPIRE is 0 or not announced (the policy is then unknown, and
 * servers mis-advertise it), the session ends without QUIT: nothing is
 * removed. The deletions the policy wanted then go in a session of their
 * own that retrieves nothing: UIDL, DELE, QUIT. */
#include "bridge/sync_priv.h"

#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "lib/deadline.h"
#include "lib/log.h"
#include "lib/xmalloc.h"

static bool
deletions_wanted(const struct conf_account *a)
{
	return !a->leave_on_server || a->delete_after_days > 0;
}

/* True when a QUIT may delete what was retrieved now: EXPIRE 0, or no
 * (or no valid) EXPIRE: unknown. */
static bool
expire_may_delete(const struct pop3_caps *c)
{
	return c->expire == 0 || c->expire == -1;
}

/* DELEs (pipelined when possible) the messages nums[0..n) named
 * uidls[0..n) whose rows are delivered and old enough; *del gets the
 * uidls of those (allocated array of borrowed strings), to be marked
 * deleted once QUIT succeeded. Returns 0, EX_IOERR (state) or a POP3
 * error, with *err. */
static int
dele_due(struct pass *ps, struct pop3 *p, const char *const *uidls,
    const unsigned long *nums, size_t n, const char ***del, size_t *ndel, char **err)
{
	const struct conf_account *a = ps->a;
	size_t *idx = NULL;
	unsigned long *due;
	int64_t cutoff;
	int r;

	*del = NULL;
	*ndel = 0;
	if (!deletions_wanted(a))
		return 0;
	cutoff = a->leave_on_server ?
	    (int64_t)time(NULL) - (int64_t)a->delete_after_days * 86400 : INT64_MAX;
	if (state_due_for_delete(ps->st, ps->acct, uidls, n, cutoff, &idx, ndel, err) == -1)
		return EX_IOERR;
	due = xcalloc(*ndel ? *ndel : 1, sizeof *due);
	*del = xcalloc(*ndel ? *ndel : 1, sizeof **del);
	for (size_t i = 0; i < *ndel; i++) {
		due[i] = nums[idx[i]];
		(*del)[i] = uidls[idx[i]];
	}
	r = *ndel > 0 ? pop3_dele(p, due, *ndel, err) : POP3_OK;
	free(idx);
	free(due);
	if (r == POP3_ESERVER) {
		/* Some DELE refused: the others still go at QUIT; those are
		 * tried again next pass (they stay due). */
		log_warnx("%s: %s", a->name, *err);
		free(*err);
		*err = NULL;
		r = POP3_OK;
	}
	return r;
}

/* After QUIT's +OK: the rows of what the server removed become deleted,
 * in one transaction. */
static int
mark_gone(struct pass *ps, const char *const *a, size_t na, const char *const *b,
    size_t nb)
{
	char *err = NULL;

	if (na + nb == 0)
		return 0;
	if (state_begin(ps->st, &err) == -1 ||
	    state_mark_deleted(ps->st, ps->acct, a, na, &err) == -1 ||
	    state_mark_deleted(ps->st, ps->acct, b, nb, &err) == -1 ||
	    state_commit(ps->st, &err) == -1) {
		state_rollback(ps->st);
		return sync_fail(ps, EX_IOERR, err);
	}
	return 0;
}

/* How long the deletion session waits once for a maildrop still locked by
 * the import session it follows: a server sees that session's end (and
 * unlocks) a moment after we closed it. */
#define UNLOCK_WAIT_MS	1000

/* pop3_open for the deletion session; an [IN-USE] refusal is tried once
 * more after UNLOCK_WAIT_MS (a stop or the pass deadline ends the wait). */
static int
open_after(struct pass *ps, struct pop3 **p, const char *pw, char **err)
{
	struct pop3_login lg;
	struct deadline d;
	enum deadline_end end;
	short rev;
	int r;

	r = pop3_open(p, &ps->a->pop3, pw, &lg, err);
	if (r == POP3_ENET && lg.busy == POP3_BUSY_IN_USE) {
		deadline_in_ms(&d, UNLOCK_WAIT_MS);
		if (deadline_poll(-1, 0, &d, &rev, &end) == 0 && end == DEADLINE_OWN) {
			free(*err);
			*err = NULL;
			pop3_login_free(&lg);
			r = pop3_open(p, &ps->a->pop3, pw, &lg, err);
		}
	}
	pop3_login_free(&lg);
	return r;
}

/* A session of its own for the deletions, when the import session could
 * not QUIT: it retrieves nothing, so QUIT removes only what it DELE'd.
 * Messages without a real UIDL are left for a later pass (telling them
 * apart takes TOP, a retrieval). Any trouble with the server postpones
 * the deletions to the next pass: it is not the pass's failure. Returns 0,
 * or EX_IOERR when the state failed. */
static int
deletion_session(struct pass *ps, long login_delay)
{
	struct pop3 *p = NULL;
	struct pop3_listing ls;
	const char **uidls = NULL, **del = NULL;
	unsigned long *nums = NULL;
	size_t n = 0, k = 0, ndel = 0;
	char *pw = NULL, *err = NULL;
	int r, rc = 0;

	if (!deletions_wanted(ps->a))
		return 0;
	pop3_listing_init(&ls);
	if (login_delay > 0) {
		log_info("%s: deletions wait for the next pass: the server allows one"
		    " login every %ld s (LOGIN-DELAY)", ps->a->name, login_delay);
		return 0;
	}
	if (conf_password(&ps->a->pop3, &pw, &err) == -1)
		goto postponed;
	r = open_after(ps, &p, pw, &err);
	if (pw != NULL) {
		explicit_bzero(pw, strlen(pw));
		free(pw);
	}
	/* The UIDL listing only: no size is needed to delete. */
	if (r != POP3_OK || (r = pop3_scan(p, &ls, &err)) != POP3_OK)
		goto postponed;
	n = ls.n;
	uidls = xcalloc(n ? n : 1, sizeof *uidls);
	nums = xcalloc(n ? n : 1, sizeof *nums);
	for (size_t i = 0; i < n; i++)
		if (pop3_listing_status(&ls, i) == POP3_UIDL_OK) {
			uidls[k] = ls.id[i];
			nums[k++] = pop3_listing_num(&ls, i);
		}
	if ((r = dele_due(ps, p, uidls, nums, k, &del, &ndel, &err)) == EX_IOERR) {
		rc = sync_fail(ps, r, err);
		err = NULL;
		goto out;
	}
	if (r != POP3_OK)
		goto postponed;
	r = pop3_quit(p, &err);
	p = NULL;
	if (r != POP3_OK)
		goto postponed;
	if ((rc = mark_gone(ps, del, ndel, NULL, 0)) == 0)
		ps->res->deleted += ndel;
	goto out;
postponed:
	log_warnx("%s: deletions postponed to the next pass: %s", ps->a->name,
	    err != NULL ? err : "error");
out:
	free(err);
	pop3_abort(p);
	free(del);
	free(uidls);
	free(nums);
	pop3_listing_free(&ls);
	return rc;
}

/* The entries the session retrieved, each once, in server order: *idx
 * (allocated, as long as what was retrieved, not as the listing); returns
 * their count. */
static size_t
retrieved(const struct pass *ps, size_t **idx)
{
	const unsigned long *nums;
	size_t n = pop3_retrieved(ps->p, &nums), k = 0, at;
	bool *seen = xcalloc(ps->ls.n ? ps->ls.n : 1, sizeof *seen);

	*idx = xcalloc(n ? n : 1, sizeof **idx);
	for (size_t i = 0; i < n; i++)
		if ((at = pop3_listing_find(&ps->ls, nums[i])) < ps->ls.n)
			seen[at] = true;
	for (size_t i = 0; i < ps->ls.n && k < n; i++)
		if (seen[i])
			(*idx)[k++] = i;
	free(seen);
	return k;
}

/* Something retrieved is not stored and a QUIT could make the server
 * delete it: the session ends without QUIT. first is the first such.
 * 0 or an exit code. */
static int
end_without_quit(struct pass *ps, size_t first, size_t n)
{
	const struct pop3_caps *c = pop3_caps(ps->p);
	long login_delay = c->login_delay;

	log_info("%s: session ended without QUIT: %zu retrieved message%s not stored"
	    " (first: message %lu, UIDL %s) and the server %s: a QUIT could let it"
	    " delete %s", ps->a->name, n, n == 1 ? " is" : "s are",
	    pop3_listing_num(&ps->ls, first),
	    ps->uidls[first], c->expire == 0 ?
	    "deletes every retrieved message at QUIT (EXPIRE 0)" :
	    "does not say when it deletes retrieved mail (no EXPIRE)",
	    n == 1 ? "it" : "them");
	ps->res->no_quit = n;
	pop3_abort(ps->p);
	ps->p = NULL;
	return deletion_session(ps, login_delay);
}

static int
cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t)*(const char *const *)a, y = (uintptr_t)*(const char *const *)b;

	return x < y ? -1 : x > y;
}

/* DELE what the policy wants, QUIT, and record what went: ours and, with
 * EXPIRE 0, every other message retrieved (all of them stored). */
static int
end_with_quit(struct pass *ps, const size_t *got, size_t ngot)
{
	const char **del = NULL, **gone = NULL;
	unsigned long *nums = NULL;
	bool expire0 = pop3_caps(ps->p)->expire == 0;
	size_t ndel = 0, ngone = 0;
	char *err = NULL;
	int rc, r;

	if (deletions_wanted(ps->a)) {
		nums = xcalloc(ps->ls.n ? ps->ls.n : 1, sizeof *nums);
		for (size_t i = 0; i < ps->ls.n; i++)
			nums[i] = pop3_listing_num(&ps->ls, i);
	}
	r = dele_due(ps, ps->p, ps->uidls, nums, ps->ls.n, &del, &ndel, &err);
	free(nums);
	if (r != 0) {
		free(del);
		return r == EX_IOERR ? sync_fail(ps, r, err) : sync_pop3_fail(ps, r, err);
	}
	if (expire0) {
		/* del holds pointers into ps->uidls: found by identity. */
		if (ndel > 0)
			qsort(del, ndel, sizeof *del, cmp_ptr);
		gone = xcalloc(ngot ? ngot : 1, sizeof *gone);
		for (size_t j = 0; j < ngot; j++) {
			const char *u = ps->uidls[got[j]];

			if (ndel == 0 || bsearch(&u, del, ndel, sizeof *del, cmp_ptr) == NULL)
				gone[ngone++] = u;
		}
	}
	r = pop3_quit(ps->p, &err);
	ps->p = NULL;
	if (r != POP3_OK)
		rc = ndel + ngone > 0 ? sync_fail(ps, sync_pop3_code(r), err) : (free(err), 0);
	else if ((rc = mark_gone(ps, del, ndel, gone, ngone)) == 0) {
		ps->res->deleted = ndel;
		ps->res->server_deleted = ngone;
	}
	free(del);
	free(gone);
	return rc;
}

int
sync_end_session(struct pass *ps)
{
	size_t *got, ngot = retrieved(ps, &got);
	const char **u = xcalloc(ngot ? ngot : 1, sizeof *u);
	size_t *bad = NULL, nbad = 0;
	char *err = NULL;
	int rc = 0;

	for (size_t j = 0; j < ngot; j++)
		u[j] = ps->uidls[got[j]];
	if (ngot > 0 && state_not_stored(ps->st, ps->acct, u, ngot, &bad, &nbad, &err) == -1)
		rc = sync_fail(ps, EX_IOERR, err);
	else if (nbad > 0 && expire_may_delete(pop3_caps(ps->p)))
		rc = end_without_quit(ps, got[bad[0]], nbad);
	else
		rc = end_with_quit(ps, got, ngot);
	free(bad);
	free(got);
	free(u);
	return rc;
}

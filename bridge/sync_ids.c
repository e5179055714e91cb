/* Which message is which (doc/DESIGN.md, The import protocol): ids from a
 * fingerprint for messages without a usable UIDL, and the fingerprint
 * guard that recognises known messages under a new id. */
#include "bridge/sync_priv.h"

#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "lib/hex.h"
#include "lib/log.h"
#include "lib/xmalloc.h"

/* Says once why a message of a server with UIDL gets a derived id. */
static void
note_derived(const struct pass *ps, const struct pop3_entry *e, const char *id)
{
	if (e->uidl_status == POP3_UIDL_INVALID)
		log_warnx("%s: message %lu has an invalid UIDL (empty, over 70 bytes or with"
		    " a byte outside 0x21-0x7E): identified by its fingerprint as %s",
		    ps->a->name, e->num, id);
	else if (e->uidl_status == POP3_UIDL_DUPLICATE)
		log_warnx("%s: message %lu shares its UIDL with another message: identified"
		    " by its fingerprint as %s", ps->a->name, e->num, id);
}

/* "nouidl-<LIST size>-<first 128 bits of the header hash>", with "-2",
 * "-3"... for identical messages in server order. */
static char *
derived_id(const struct pass *ps, size_t i)
{
	char *id = xasprintf(SYNC_DERIVED_PREFIX "%llu-%.32s",
	    (unsigned long long)pop3_listing_size(&ps->ls, i), ps->top[i]);
	size_t same = 1, len = strlen(id);

	for (size_t j = 0; j < i; j++)
		if (ps->derived[j] != NULL && strncmp(ps->derived[j], id, len) == 0 &&
		    (ps->derived[j][len] == '\0' || ps->derived[j][len] == '-'))
			same++;
	if (same > 1) {
		char *d = xasprintf("%s-%zu", id, same);

		free(id);
		id = d;
	}
	return id;
}

/* The entries without a usable UIDL, in increasing order: *idx
 * (allocated, NULL when there are none); returns their count. */
static size_t
without_uidl(const struct pass *ps, size_t **idx)
{
	size_t k = 0;

	*idx = NULL;
	for (size_t i = 0; i < ps->ls.n; i++)
		if (pop3_listing_status(&ps->ls, i) != POP3_UIDL_OK) {
			if (*idx == NULL)
				*idx = xreallocarray(NULL, ps->ls.n, sizeof **idx);
			(*idx)[k++] = i;
		}
	return k;
}

int
sync_ids_derive(struct pass *ps)
{
	unsigned char h[32];
	char *err = NULL;
	size_t *idx, k = without_uidl(ps, &idx);
	int r, rc = 0;

	/* Only a listing with messages to derive ids for pays for their
	 * arrays (65 bytes a message for the hashes), and their LIST sizes
	 * (part of the id). */
	if (k > 0) {
		ps->derived = xcalloc(ps->ls.n, sizeof *ps->derived);
		ps->top = xcalloc(ps->ls.n, sizeof *ps->top);
		rc = sync_sizes(ps, idx, k);
	}
	for (size_t j = 0; rc == 0 && j < k; j++) {
		size_t i = idx[j];
		struct pop3_entry e = sync_entry(ps, i);

		if ((r = pop3_top_hash(ps->p, e.num, h, &err)) != POP3_OK) {
			rc = sync_pop3_fail(ps, r, err);
			break;
		}
		hex_encode(h, 32, ps->top[i]);
		ps->derived[i] = derived_id(ps, i);
		ps->uidls[i] = ps->derived[i];
		note_derived(ps, &e, ps->derived[i]);
	}
	free(idx);
	return rc;
}

/* The fingerprints of the unknown messages idx[0..n): a derived id's is
 * at hand; a real UIDL's is its header hash (TOP n 0), asked only when
 * want_real. A server refusing TOP leaves the guard blind: importing
 * everything again is what it exists to prevent, so the pass stops.
 * Messages not to compare get a NULL uidl. */
static int
fingerprints(struct pass *ps, const size_t *idx, size_t n, bool want_real,
    struct state_fp *fps, char (*hex)[65])
{
	unsigned char h[32];
	char *err = NULL;
	int r;

	for (size_t j = 0; j < n; j++) {
		struct pop3_entry e = sync_entry(ps, idx[j]);

		fps[j] = (struct state_fp){ NULL, e.size, hex[j] };
		if (ps->derived != NULL && ps->derived[idx[j]] != NULL) {
			memcpy(hex[j], ps->top[idx[j]], 65);
			fps[j].uidl = ps->uidls[idx[j]];
			continue;
		}
		if (!want_real)
			continue;
		r = pop3_top_hash(ps->p, e.num, h, &err);
		if (r == POP3_ESERVER) {
			char *why = xasprintf("most UIDLs are unknown (a UIDL reset?)"
			    " and the server refused TOP to compare them (%s):"
			    " nothing imported; set uidl_reset_threshold = 0 to"
			    " import them all", err);

			free(err);
			return sync_fail(ps, EX_UNAVAILABLE, why);
		}
		if (r != POP3_OK)
			return sync_pop3_fail(ps, r, err);
		hex_encode(h, 32, hex[j]);
		fps[j].uidl = ps->uidls[idx[j]];
	}
	return 0;
}

/* Records the adoption: new ids for known rows, the warning (why says
 * what happened), the count, in one transaction. Only the fingerprints
 * with a uidl take part. */
static int
adopt(struct pass *ps, const char *why, const struct state_fp *fps, size_t n,
    bool *adopted, size_t *n_adopted)
{
	struct state_fp *v = xcalloc(n ? n : 1, sizeof *v);
	bool *got = xcalloc(n ? n : 1, sizeof *got);
	char *err = NULL, *warn;
	size_t k = 0, i;

	for (i = 0; i < n; i++)
		if (fps[i].uidl != NULL)
			v[k++] = fps[i];
	if (state_begin(ps->st, &err) == -1 ||
	    state_adopt_uidls(ps->st, ps->acct, ps->uidls, ps->ls.n, v, k,
	    got, n_adopted, &err) == -1)
		goto failed;
	if (*n_adopted > 0) {
		warn = xasprintf("server renumbered %zu messages (%s);"
		    " adopted their new ids, nothing re-imported", *n_adopted, why);
		if (state_note_uidl_reset(ps->st, ps->acct, warn, &err) == 0)
			log_warnx("%s: %s", ps->a->name, warn);
		free(warn);
		if (err != NULL)
			goto failed;
	}
	if (state_commit(ps->st, &err) == -1)
		goto failed;
	for (i = k = 0; i < n; i++)
		adopted[i] = fps[i].uidl != NULL && got[k++];
	free(v);
	free(got);
	return 0;
failed:
	state_rollback(ps->st);
	free(v);
	free(got);
	return sync_fail(ps, EX_IOERR, err);
}

int
sync_ids_guard(struct pass *ps, size_t *idx, size_t *n)
{
	unsigned th = ps->a->uidl_reset_threshold;
	struct state_fp *fps;
	char (*hex)[65], *err = NULL;
	size_t n_adopted = 0, k = 0, n_derived = 0;
	bool *adopted, known, real;
	int rc;

	if (th == 0 || *n == 0)
		return 0;
	for (size_t j = 0; j < *n; j++)
		n_derived += ps->derived != NULL && ps->derived[idx[j]] != NULL;
	real = (uint64_t)*n * 100 > (uint64_t)th * ps->ls.n && n_derived < *n;
	if (!real && n_derived == 0)
		return 0;
	if (state_has_imported(ps->st, ps->acct, &known, &err) == -1)
		return sync_fail(ps, EX_IOERR, err);
	if (!known)
		return 0;
	fps = xcalloc(*n, sizeof *fps);
	hex = xcalloc(*n, sizeof *hex);
	adopted = xcalloc(*n, sizeof *adopted);
	if ((rc = fingerprints(ps, idx, *n, real, fps, hex)) == 0)
		rc = adopt(ps, real ? "UIDL reset" : ps->no_uidl ? "it gives no UIDLs now" :
		    "invalid or duplicate UIDLs", fps, *n, adopted, &n_adopted);
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

/* For the files of the import pass only (bridge/sync.c, sync_ids.c,
 * sync_end.c): the pass they share and its helpers. doc/DESIGN.md, The
 * import protocol, says what each step does. */
#ifndef POP3BRIDGE_SYNC_PRIV_H
#define POP3BRIDGE_SYNC_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge/pop3.h"
#include "bridge/pop3_listing.h"
#include "bridge/sync.h"
#include "conf/conf.h"
#include "store/deliver.h"
#include "store/state.h"

/* Ids made from a fingerprint (LIST size, TOP n 0 hash) begin with this:
 * no server's UIDL does (bridge/sync_ids.c). */
#define SYNC_DERIVED_PREFIX "nouidl-"

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
	struct pop3_login login;        /* how the session logged in */
	bool broken;                    /* p must be aborted, not QUIT */
	struct pop3_listing ls;         /* the listing, in server order (by num) */
	const char **uidls;             /* per entry: the UIDL, or a derived id (ls.id,
	                                   its empty slots filled by sync_ids_derive) */
	char **derived;                 /* per entry: the owned derived id, or NULL;
	                                   NULL itself when no entry has one */
	char (*top)[65];                /* per entry: TOP n 0 hash (hex) of derived ones
	                                   (allocated with derived) */
	bool no_uidl;                   /* the server has no UIDL at all */
	struct sync_result *res;
	bool progress;                  /* report progress (sync_progress_hook) */
	struct sync_progress prog;
	char *store_id;                 /* the resolved store: the dedup scope */
	char *refused_first;            /* the first message the store refused */
	char *skipped_first;            /* the first message skipped */
	bool dedup;                     /* store { dedup = "message-id" } */
	struct state_sched sched;       /* as the pass began */
};

/* Records err as the pass's error (the first one wins; err is taken) and
 * returns code. */
int sync_fail(struct pass *ps, int code, char *err);

/* The account's password (password_command run, bounded by its timeout),
 * then pop3_open() with it into ps->p and ps->login; the secret is wiped.
 * A password that could not be had: its sync_fail() code (not 0). Else 0,
 * with *rv pop3_open's result: on an error ps->p is NULL and *err its text
 * (allocated, may be NULL), for the caller to fail with. */
int sync_open(struct pass *ps, int *rv, char **err);

/* A POP3 error as a <sysexits.h> code. */
int sync_pop3_code(int e);

/* A store failure (enum deliver_err, store/deliver.h) as an exit code. */
int sync_store_code(int r);

/* sync_fail() for a POP3 error; anything but POP3_ESERVER and
 * POP3_ETOOBIG leaves the session broken (aborted, never QUIT). */
int sync_pop3_fail(struct pass *ps, int e, char *err);

/* A stop (SIGTERM/SIGINT) was asked: taken between messages. */
bool sync_stopping(void);

/* Why the pass ended early (a stop, the pass deadline), allocated. */
char *sync_halted_why(void);

/* Settles the rows a killed run (or a failed delivery) left pending, as
 * reconciliation at the start of a pass does. 0 or an exit code. */
int sync_recover(struct pass *ps);

/* A message left on the server with its reason: recorded (state,
 * status), one log line naming it, and the pass exits 65 in the end.
 * sync_skip_note does all but the state's row (which its caller writes). */
void sync_skip_message(struct pass *ps, const struct pop3_entry *e, const char *uidl,
    const char *reason);
void sync_skip_note(struct pass *ps, const struct pop3_entry *e, const char *uidl,
    const char *reason);

/* A progress report (sync_progress_hook, when ps->progress): ps->prog,
 * finished when done. */
void sync_show_progress(struct pass *ps, bool done);

/* bridge/sync_batch.c: imports the new messages idx[0..n) (n > 0) in
 * batches (steps 5-6 of the import protocol), overlapping a batch's
 * delivery with the next one's RETRs when the store allows. 0 or an exit
 * code. */
int sync_batches(struct pass *ps, const size_t *idx, size_t n);

/* Entry i of the listing (its LIST size must be known: sync_sizes). */
struct pop3_entry sync_entry(const struct pass *ps, size_t i);

/* Makes the LIST sizes of entries idx[0..n) known (pop3_sizes). 0 or an
 * exit code. */
int sync_sizes(struct pass *ps, const size_t *idx, size_t n);

/* bridge/sync_ids.c: messages without a usable UIDL (a server without
 * UIDL, an invalid or duplicate one) get an id from their fingerprint;
 * ps->uidls is filled for every entry. 0 or an exit code. */
int sync_ids_derive(struct pass *ps);

/* bridge/sync_ids.c: the fingerprint guard. Unknown messages idx[0..*n)
 * whose fingerprint matches an imported row no longer listed under its
 * id are that message: the row takes the new id (adopted), the message
 * leaves idx. Derived ids always (their fingerprint is at hand); real
 * UIDLs when more than uidl_reset_threshold percent are unknown (a UIDL
 * reset). 0 or an exit code. */
int sync_ids_guard(struct pass *ps, size_t *idx, size_t *n);

/* bridge/sync_end.c: ends the session after the import: deletions and
 * QUIT, or, when something retrieved is not stored and the server's
 * EXPIRE may delete it, no QUIT (and the deletions in a session of their
 * own). 0 or an exit code. */
int sync_end_session(struct pass *ps);

#endif

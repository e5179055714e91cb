/* One account's sync pass (doc/DESIGN.md, The import protocol):
 *
 *   lock the account -> reconcile pending rows against the store -> clean
 *   temp files a killed run left -> connect -> list -> select new UIDLs ->
 *   per batch: RETR to temp files, pending rows (commit), durable delivery,
 *   delivered rows (commit) -> deletion policy -> QUIT -> poll log.
 *
 * A crash at any point loses nothing and duplicates nothing. */
#ifndef POP3BRIDGE_SYNC_H
#define POP3BRIDGE_SYNC_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf/conf.h"
#include "store/state.h"

struct sync_result {
	unsigned long listed;     /* messages on the server */
	unsigned long fresh;      /* of which new */
	unsigned long imported;
	unsigned long duplicates; /* dedup: recorded at another account's copy */
	unsigned long deferred;   /* dedup: another account is storing it now */
	unsigned long refused;    /* the store refused them: left on the server */
	unsigned long adopted;    /* UIDL reset: known messages under new UIDLs */
	unsigned long deleted;    /* by our DELE */
	unsigned long server_deleted; /* by the server itself at QUIT (EXPIRE 0) */
	unsigned long skipped;    /* left on the server with a reason (state) */
	unsigned long no_quit;    /* retrieved, not stored: the session ended
	                             without QUIT (EXPIRE 0 or unknown) */
	uint64_t bytes;
	long login_delay;         /* the server's LOGIN-DELAY, -1 when none */
	int64_t next_poll;        /* when the next pass is planned, 0 unknown */
	char *error;              /* allocated, NULL on success */
};

/* The import's progress, for whoever shows it: the new messages taken so
 * far (fetched, or skipped when the server refused them) of those to
 * take, and their LIST sizes; finished at the end of the import. When the
 * hook is set (bridge/sync_pool.c does, in a pass child, for `sync` on a
 * terminal), the pass calls it after every message. */
struct sync_progress {
	unsigned long msgs_done, msgs_total;
	uint64_t bytes_done, bytes_total;
	bool finished;
};
extern void (*sync_progress_hook)(const struct sync_progress *);

/* Set once the pass has seen a stop request (TERM/INT, held pending:
 * lib/proc.h): it abandons the message being fetched, delivers what it
 * fetched, and closes without committing deletions. */
extern volatile sig_atomic_t sync_stop;

/* Runs one pass for account a with the open state st. Returns a
 * <sysexits.h> code: EX_OK; EX_DATAERR (the store refused some message,
 * or some message was skipped: every other one was imported, those stay
 * on the server); EX_TEMPFAIL (network, timeout, a deadline (a
 * response's, the pass's: lib/deadline.h) or a stop request, server or
 * account busy, or the server allows no login yet (LOGIN-DELAY): try
 * later; the latter runs nothing and logs no poll); EX_UNAVAILABLE (TLS
 * or login refused);
 * EX_PROTOCOL (malformed server reply); EX_CONFIG (policy, e.g. plaintext
 * refused); EX_IOERR (store or state). res->error says why, without the
 * account name (the caller adds it). The pass is recorded in the poll log. */
int sync_account(const struct conf *c, const struct conf_account *a,
    struct state *st, struct sync_result *res);

void sync_result_free(struct sync_result *res);

/* `sync --dry-run` (bridge/sync_dry.c): when set, the pool runs
 * sync_dry_account instead of sync_account. It logs in, lists and prints
 * on stdout one line of what a pass would import, skip and delete,
 * writing nothing: st (may be NULL: no database yet) is only read, the
 * store is not opened, and the session ends without QUIT. Returns 0 or
 * an exit code as sync_account does (res->error says why). */
extern bool sync_dry_run;
int sync_dry_account(const struct conf *c, const struct conf_account *a,
    struct state *st, struct sync_result *res);

#endif

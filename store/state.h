/* Durable state in SQLite (WAL, synchronous=FULL): accounts, the messages
 * imported from each POP3 account, and the poll log. All SQL lives here.
 *
 * Functions return 0 on success or -1 with *err allocated (SQLite's message
 * plus what was being done). A struct state is used by one thread; several
 * processes may share the database (busy timeout 30 s). */
#ifndef POP3BRIDGE_STATE_H
#define POP3BRIDGE_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

enum state_msg_state { STATE_PENDING = 0, STATE_DELIVERED = 1, STATE_DELETED = 2 };

struct state;

/* A message row. Strings are borrowed when passed in; when returned they
 * are owned by the row: state_msgs_free frees an array of rows with their
 * strings, state_msg_clear the strings of one row (e.g. from state_find). */
struct state_msg {
	char *uidl;
	uint64_t size;            /* bytes stored */
	char sha256[65];          /* hex of the stored bytes */
	char *message_id;         /* NULL when the message has none */
	char *delivery_key;       /* the store's unique name for it */
	char *folder;             /* target folder as configured ("INBOX", "a/b") */
	char *location;           /* where the store put it; NULL while pending */
	enum state_msg_state state;
	int64_t fetched_at, delivered_at;
	/* The fingerprint that recognises the message under a new UIDL:
	 * octets as LIST counts them and the header block's hash (hex, as
	 * pop3_top_hash() computes it; "" when not known). */
	uint64_t pop3_size;
	char header_sha256[65];
	char body_sha256[65];     /* hex of the body as stored, for dedup; "" unknown */
	uint32_t uidvalidity, uid;/* IMAP APPENDUID; 0 when not known */
	int64_t duplicate_of;     /* dedup: the account whose copy this row points to, 0 none */
	char *duplicate_of_name;  /* returned only: that account's name */
};

/* Opens (creating the file and its directory's parent must exist) and
 * migrates the schema to the current PRAGMA user_version. A database from
 * a newer pop3bridge is refused. */
int state_open(const char *path, struct state **out, char **err);
void state_close(struct state *st);

/* True when the last state call failed because another process held the
 * database for longer than the busy timeout (SQLITE_BUSY, SQLITE_LOCKED):
 * a temporary failure, not an I/O error. */
bool state_busy(const struct state *st);

/* The database of a state directory (STATE_DIR/state.db, a name no other
 * module knows): state_open() on it. Without create, a database that does
 * not exist yet is not made (`status` and `where` only look): 0 with *out
 * NULL then. */
int state_open_dir(const char *state_dir, bool create, struct state **out, char **err);

/* state_open_dir(state_dir, false, ...) for a reader that must leave every
 * file of the state as it found it (sync --dry-run): the database is
 * opened read-only, its WAL index (-shm) too (SQLite reads a private copy
 * of it), so not a byte changes. When that cannot be (no WAL files yet, a
 * schema to migrate first) it is state_open_dir(state_dir, false, ...).
 * Only queries may be run on it. */
int state_open_dir_reader(const char *state_dir, struct state **out, char **err);

/* Creates STATE_DIR and its missing parents, mode 0700 (message ids and
 * the queue are private), before the commands that write state run.
 * 0, or -1 with *err. */
int state_make_dir(const char *state_dir, char **err);

/* Whether the state directory has its database yet (a state_open_dir
 * without create would open it). */
bool state_dir_has_db(const char *state_dir);

/* The id of the named account, created on first use. */
int state_account(struct state *st, const char *name, int64_t *id, char **err);

/* The same without creating it (a reader that must never wait for the
 * write lock): 1 found, 0 no such account, -1 error. */
int state_account_id(struct state *st, const char *name, int64_t *id, char **err);

/* Transactions (BEGIN IMMEDIATE). The put/mark functions below must run
 * inside one; a batch is one transaction. A commit is durable (fsync)
 * before state_commit returns. state_begin_light begins a bookkeeping
 * transaction (not inside another): its commit is atomic and survives
 * the process being killed, but is not flushed to disk, so a crash of the
 * machine may undo it (and only the latest such ones); for writes that
 * no exactly-once decision depends on (doc/DESIGN.md, State and schema).
 * Bookkeeping functions below (login, flags, skipped rows, the backoff)
 * commit that way on their own when called outside a transaction. */
int state_begin(struct state *st, char **err);
int state_begin_light(struct state *st, char **err);
int state_commit(struct state *st, char **err);
void state_rollback(struct state *st);

/* New-UIDL detection: the server's list uidls[0..n) (up to 10^6, each
 * distinct) sorted in memory and merged with one index scan of the
 * account's UIDLs; sets *idx (allocated) to the indices i of uidls that
 * have no row for this account, in increasing order. Memory: 5 bytes per
 * listed UIDL while it runs. */
int state_filter_new(struct state *st, int64_t account, const char *const *uidls,
    size_t n, size_t **idx, size_t *n_idx, char **err);

/* The account's pending rows, for reconciliation at start. */
int state_pending(struct state *st, int64_t account, struct state_msg **rows,
    size_t *n, char **err);
void state_msgs_free(struct state_msg *rows, size_t n);
void state_msg_clear(struct state_msg *m);

/* Writes a pending row (replacing any earlier row of that uidl). */
int state_put_pending(struct state *st, int64_t account, const struct state_msg *m, char **err);
/* pending -> delivered, recording location and delivered_at = now. */
int state_mark_delivered(struct state *st, int64_t account, const char *uidl,
    const char *location, char **err);
/* The same, with the IMAP APPENDUID (0, 0 when not known). */
int state_mark_delivered_uid(struct state *st, int64_t account, const char *uidl,
    const char *location, uint32_t uidvalidity, uint32_t uid, char **err);
/* Forgets a pending row whose delivery did not happen (reconciliation). */
int state_drop_pending(struct state *st, int64_t account, const char *uidl, char **err);

/* Deletion policy: sets *idx to the indices of uidls[0..n) that are
 * delivered (or already marked deleted) with delivered_at <= cutoff. */
int state_due_for_delete(struct state *st, int64_t account, const char *const *uidls,
    size_t n, int64_t cutoff, size_t **idx, size_t *n_idx, char **err);
/* delivered -> deleted, after QUIT succeeded. */
int state_mark_deleted(struct state *st, int64_t account, const char *const *uidls,
    size_t n, char **err);

/* Looks up one message of an account by UIDL: 1 found (*m filled, free its
 * strings with state_msg_clear(m)), 0 not found, -1 error. */
int state_find(struct state *st, int64_t account, const char *uidl, struct state_msg *m, char **err);

/* Per-account flags shown by status. */
int state_set_no_uidl(struct state *st, int64_t account, bool no_uidl, char **err);

/* Cross-account de-duplication (store { dedup = "message-id" }).
 *
 * state_set_store records which store an account's pass resolved to (an
 * opaque string: accounts with equal strings share one store, e.g. the
 * same Maildir after "%u" expansion). state_dedup_find looks, among the
 * other accounts of that store, for an original row (not itself a
 * duplicate) in that folder with this Message-ID and body hash (a copy
 * in another folder is not where this account's mail belongs): 1 found (*orig filled,
 * free with state_msg_clear; *owner its account; delivered or deleted
 * rows are preferred, but a pending one is returned when that is all
 * there is: another pass is storing it right now), 0 none, -1 error.
 * state_put_duplicate records m (uidl, sizes, hashes, Message-ID) as
 * delivered at orig's place (key, folder, location, UID), with
 * duplicate_of = owner; inside a transaction. */
int state_set_store(struct state *st, int64_t account, const char *store, char **err);
int state_dedup_find(struct state *st, int64_t account, const char *store,
    const char *folder, const char *message_id, const char *body_sha256,
    struct state_msg *orig, int64_t *owner, char **err);
int state_put_duplicate(struct state *st, int64_t account, const struct state_msg *m,
    const struct state_msg *orig, int64_t owner, char **err);

/* The UIDL-reset guard.
 *
 * state_has_imported: does the account have any delivered or deleted row?
 * state_adopt_uidls (inside a transaction): server[0..n_server) is the
 * server's whole UIDL list; for each fps[i] (an unknown UIDL with its
 * fingerprint), the oldest imported row with the same fingerprint whose
 * UIDL is no longer on the server takes the new UIDL (adopted[i] true).
 * Identical messages each take a row of their own. *n_adopted counts them.
 * state_note_uidl_reset stores the warning status shows (with its time)
 * and counts the reset. */
struct state_fp {
	const char *uidl;
	uint64_t size;              /* LIST octets */
	const char *header_sha256;  /* hex */
};
int state_has_imported(struct state *st, int64_t account, bool *yes, char **err);
int state_adopt_uidls(struct state *st, int64_t account, const char *const *server,
    size_t n_server, const struct state_fp *fps, size_t n, bool *adopted,
    size_t *n_adopted, char **err);
int state_note_uidl_reset(struct state *st, int64_t account, const char *warning,
    char **err);

/* What a session retrieved (RETR/TOP) must be stored before a QUIT lets
 * an EXPIRE 0 server delete it: sets *idx (allocated) to the indices of
 * uidls[0..n) without a delivered (or deleted) row, in increasing order. */
int state_not_stored(struct state *st, int64_t account, const char *const *uidls,
    size_t n, size_t **idx, size_t *n_idx, char **err);

/* Does the account hold a row whose UIDL does not begin with
 * except_prefix (a UIDL the server gave, not one derived from a
 * fingerprint)? */
int state_has_uidls(struct state *st, int64_t account, const char *except_prefix,
    bool *yes, char **err);

/* Skipped messages: left on the server with a reason, retried every
 * pass. state_skip records (or, again, counts and updates) one;
 * state_skip_clear forgets it once imported; state_skip_prune forgets
 * those whose UIDL is not in the server's list uidls[0..n);
 * state_skipped lists them, the most recent first (free with
 * state_skips_free). */
struct state_skip {
	char *uidl;
	uint64_t pop3_size;         /* LIST octets */
	char *reason;
	int64_t first_at, last_at;  /* unix time */
	unsigned long times;        /* passes that skipped it */
};
int state_skip(struct state *st, int64_t account, const char *uidl, uint64_t pop3_size,
    const char *reason, char **err);
int state_skip_clear(struct state *st, int64_t account, const char *uidl, char **err);
int state_skip_prune(struct state *st, int64_t account, const char *const *uidls,
    size_t n, char **err);
int state_skipped(struct state *st, int64_t account, struct state_skip **rows, size_t *n,
    char **err);
void state_skips_free(struct state_skip *rows, size_t n);

/* The server's facts and the schedule of an account.
 *
 * state_note_login, after a login: the mechanism that logged in, the
 * LOGIN-DELAY (seconds, -1 none) and EXPIRE (days, -1 NEVER,
 * STATE_EXPIRE_NONE not announced) of the CAPA after login, and
 * not_before (login time + LOGIN-DELAY; 0 none). state_set_not_before:
 * a refusal's backoff, never shortening a wait already recorded.
 * state_pass_end: the pass is over; failed counts a consecutive failure
 * (since when), else resets the count; next_poll_at is when the next
 * pass is planned (0 none). state_schedule reads them back. */
#define STATE_EXPIRE_NONE (-2L)
struct state_sched {
	int64_t not_before;         /* unix time, 0 none */
	int64_t next_poll_at;       /* unix time, 0 none */
	unsigned long failures;     /* consecutive failed passes */
	int64_t failing_since;      /* 0 none */
	long login_delay;           /* seconds, -1 none */
	long server_expire;         /* days, -1 NEVER, STATE_EXPIRE_NONE none */
};
int state_note_login(struct state *st, int64_t account, const char *mechanism,
    long login_delay, long expire, int64_t not_before, char **err);
int state_set_not_before(struct state *st, int64_t account, int64_t not_before, char **err);
int state_pass_end(struct state *st, int64_t account, bool failed, int64_t next_poll_at,
    char **err);
int state_schedule(struct state *st, int64_t account, struct state_sched *s, char **err);

/* The poll log: one row per pass. */
struct state_poll {
	int64_t started, finished;  /* unix time */
	bool ok;
	unsigned long imported, deleted;
	uint64_t bytes;
	char *error;                /* NULL when ok */
	unsigned long server_deleted; /* deleted by the server itself (EXPIRE 0) */
	unsigned long skipped;      /* messages skipped, left on the server */
};
int state_poll_log(struct state *st, int64_t account, const struct state_poll *p, char **err);

/* What `status` shows for one account. Strings allocated, freed by
 * state_status_free. has_poll is false when the account never ran. */
struct state_status {
	bool has_poll;
	struct state_poll last;       /* the last pass */
	int64_t last_ok;              /* time of the last successful pass, 0 none */
	char *last_error;             /* the most recent error of any pass, NULL none */
	int64_t last_error_at;
	unsigned long imported;       /* messages delivered or deleted (all time) */
	unsigned long pending;
	unsigned long on_server;      /* delivered and not yet deleted */
	bool no_uidl;
	unsigned long imap_locations; /* rows with an IMAP UID known */
	unsigned long duplicates;     /* rows pointing at another account's copy */
	unsigned long uidl_resets;    /* UIDL resets survived */
	char *warning;                /* the last warning (UIDL reset), NULL none */
	int64_t warning_at;
	unsigned long seen_elsewhere; /* UIDLs another tool delivered (import-state);
	                               * not in imported, in on_server until deleted */
	uint64_t imported_bytes;      /* bytes of the imported messages, as stored */
	unsigned long deleted;        /* rows deleted from the server (all time) */
	unsigned long skipped;        /* messages skipped now (state_skipped lists them) */
	char *last_auth;              /* the mechanism of the last login, NULL none */
	struct state_sched sched;
};
int state_status(struct state *st, int64_t account, struct state_status *s, char **err);
void state_status_free(struct state_status *s);

/* Another tool's state (`import-state`): uidls[0..n) were fetched and
 * delivered elsewhere by tool ("fetchmail", ...), before the switch. Each
 * becomes a delivered row without a location: delivery key
 * STATE_SEEN_ELSEWHERE followed by tool, size 0, no hashes, no Message-ID,
 * folder "". So no later pass fetches it again; dedup never matches it
 * (no Message-ID, no body hash) and the UIDL-reset guard never adopts it
 * (no fingerprint) nor counts it as mail imported before; status counts
 * it apart (seen_elsewhere), not as imported; the deletion policy treats
 * it as delivered at the time of the import. A UIDL that already has a
 * row is left as it is. One transaction (or part of the caller's);
 * *added counts the new rows. */
#define STATE_SEEN_ELSEWHERE "import:"
int state_mark_seen_elsewhere(struct state *st, int64_t account, const char *tool,
    const char *const *uidls, size_t n, size_t *added, char **err);

/* True if m is such a row. */
bool state_msg_seen_elsewhere(const struct state_msg *m);

/* For a STATE_DIR that belongs to another user than root, run as root:
 * state.db (made with its schema when missing) and its -wal and -shm are
 * given to uid:gid, so that a process running as that user (the relay)
 * can write it; SQLite, as root, gives the files it makes later the
 * database file's owner. 0, or -1 with *err. */
int state_dir_give(const char *state_dir, uid_t uid, gid_t gid, char **err);

#endif

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
};

/* Opens (creating the file and its directory's parent must exist) and
 * migrates the schema to the current PRAGMA user_version. A database from
 * a newer pop3bridge is refused. */
int state_open(const char *path, struct state **out, char **err);
void state_close(struct state *st);

/* The id of the named account, created on first use. */
int state_account(struct state *st, const char *name, int64_t *id, char **err);

/* Transactions (BEGIN IMMEDIATE). The put/mark functions below must run
 * inside one; a batch is one transaction. */
int state_begin(struct state *st, char **err);
int state_commit(struct state *st, char **err);
void state_rollback(struct state *st);

/* New-UIDL detection in one statement (a temp table joined against
 * messages): sets *idx (allocated) to the indices i of uidls[0..n) that
 * have no row for this account, in increasing order. */
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

/* The poll log: one row per pass. */
struct state_poll {
	int64_t started, finished;  /* unix time */
	bool ok;
	unsigned long imported, deleted;
	uint64_t bytes;
	char *error;                /* NULL when ok */
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
};
int state_status(struct state *st, int64_t account, struct state_status *s, char **err);
void state_status_free(struct state_status *s);

#endif

/* The outbound queue's durable state: one row per submitted message (the
 * outbox table of schema v3 in store/state.c), one per recipient, and the
 * message itself in its row (up to OUTBOX_INLINE_MAX) or as a file in the
 * spool directory (STATE_DIR/spool).
 *
 * Submission (bridge/relay.c, `sendmail`) calls outbox_enqueue() and only
 * then answers 250: the message survives any crash after that. Delivery
 * (bridge/queue.c) takes due messages, records each recipient's result,
 * and reschedules, finishes or bounces the message.
 * Functions return 0, or -1 with *err allocated. */
#ifndef POP3BRIDGE_OUTBOX_H
#define POP3BRIDGE_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "store/state.h"

enum outbox_state {
	OUTBOX_QUEUED = 0,      /* some recipient still to try */
	OUTBOX_SENT = 1,        /* every recipient accepted upstream */
	OUTBOX_BOUNCED = 2,     /* finished, some recipient failed for good */
	OUTBOX_DROPPED = 3,     /* removed by `queue drop` */
};

enum outbox_rcpt_state { RCPT_PENDING = 0, RCPT_DELIVERED = 1, RCPT_FAILED = 2 };

struct outbox_rcpt {
	char *addr;
	enum outbox_rcpt_state state;
	int last_code;          /* the upstream reply code, 0 none yet */
	char *last_response;    /* its text, NULL none */
};

struct outbox_msg {
	int64_t id;
	char *account;          /* account name */
	char *auth_user;        /* who submitted; NULL for local `sendmail` */
	char *mail_from;
	char *spool_path;       /* absolute path of the message file; for a
	                           message kept in its row (in_db), the path
	                           it would have (its name is the secret of
	                           its delivery keys) but no file */
	bool in_db;             /* the message is in its row: outbox_msg_open() */
	uint64_t size;
	int64_t created_at;
	int64_t next_attempt_at;        /* queued: the next delivery attempt;
	                                   finished, not filed: the next try
	                                   at the Sent copy or bounce */
	int64_t finished_at;            /* 0 while queued */
	unsigned attempts;
	enum outbox_state state;
	bool sent_copy_done, bounce_done;
	bool sent_copy_tried, bounce_tried;     /* tried before, maybe stored */
	char *last_error;               /* the last attempt's error, or the
	                                   last filing error once finished */
	struct outbox_rcpt *rcpts;
	size_t n_rcpts;
};

/* Messages up to this size are kept in their outbox row rather than in a
 * spool file: durable in the transaction that queues them, with no file,
 * name or directory to sync first (typical submissions: one sync for a
 * group of them). */
#define OUTBOX_INLINE_MAX (64 * 1024)

/* The spool and its paths belong to this module, no other assembles them.
 *
 * outbox_spool_file: a new anonymous file in STATE_DIR/spool/tmp (made
 * when missing) for a message being submitted (the relay's DATA,
 * `sendmail`): the caller writes the message to it, then hands the fd to
 * outbox_enqueue(), which links it into the spool instead of copying it.
 * Nothing is left behind when the submission fails or the process dies.
 * Returns the fd (read-write, close-on-exec), or -1 with *err set.
 *
 * outbox_spool_area: STATE_DIR/spool/NAME, a directory of its own for
 * another user of the spool (the IMAP store's temp files, "imap"); the
 * queue never reads it. outbox_bounce_path: the scratch file a bounce of
 * queue id is written to before it is stored. Both allocated. */
int outbox_spool_file(const char *state_dir, char **err);
char *outbox_spool_area(const char *state_dir, const char *name);
char *outbox_bounce_path(const char *state_dir, int64_t id);

/* Makes the message in the open file fd (its final content, CRLF line
 * endings, written by the caller) durable — up to OUTBOX_INLINE_MAX bytes
 * read into its row; bigger, in the spool: fsync the file, link it into
 * STATE_DIR/spool under a unique name, fsync the directory — and commits
 * its outbox rows, due now. *id receives the queue id. The
 * caller still owns and closes fd. */
int outbox_enqueue(struct state *st, const char *state_dir, const char *account,
    const char *auth_user, const char *mail_from, char *const *rcpts, size_t n_rcpts,
    int fd, int64_t *id, char **err);

/* Makes the message in fd durable under a new name in the spool (fsync
 * of the file, a link, fsync of the directory) before its rows exist:
 * what a submitting process does for itself, in parallel with others,
 * so that a group commit of many (outbox_enqueue_many) costs one sync.
 * *name (allocated) is for outbox_submission.name. A name whose rows are
 * never committed is an orphan outbox_sweep_orphans() removes. */
int outbox_spool_link(const char *state_dir, int fd, char **name, char **err);

/* One message of outbox_enqueue_many(): the arguments of outbox_enqueue
 * (borrowed), and its result. */
struct outbox_submission {
	const char *account, *auth_user, *mail_from;
	char *const *rcpts;
	size_t n_rcpts;
	int fd;
	const char *name;       /* NULL, or fd's durable name from
	                           outbox_spool_link() (checked to be fd's file) */
	int64_t id;             /* out: the queue id, 0 when not queued */
	char *err;              /* out, allocated: why not, NULL when queued */
};

/* outbox_enqueue() for n messages at once: each file without a name is
 * read into its row (small) or fsync'd and linked, the spool directory
 * fsync'd once (when any was linked),
 * and every row goes in one transaction (one sync): when it fails, none is
 * queued, and every file is unlinked. Returns how many were queued; each
 * submission's id or err says which. */
size_t outbox_enqueue_many(struct state *st, const char *state_dir,
    struct outbox_submission *subs, size_t n);

/* Wakes whoever waits on outbox_watch(): call after committing new queue
 * rows (the relay, `sendmail`). Best effort: the runner also polls. */
void outbox_notify(const char *state_dir);

/* A descriptor for poll() that becomes readable after an outbox_notify()
 * (an inotify watch on the spool directory), or -1 when there is none to
 * be had: then only time tells. outbox_watch_drain() empties it. */
int outbox_watch(const char *state_dir);
void outbox_watch_drain(int fd);

/* Messages in state OUTBOX_QUEUED with next_attempt_at <= now (all queued
 * ones when now is INT64_MAX), oldest first, with their recipients; also
 * the messages sent or bounced whose Sent copy or bounce is not stored
 * yet and whose next filing try (next_attempt_at) is due. */
int outbox_due(struct state *st, const char *state_dir, int64_t now,
    struct outbox_msg **msgs, size_t *n, char **err);

/* Every message not yet finished (for `queue list`). */
int outbox_list(struct state *st, const char *state_dir, struct outbox_msg **msgs,
    size_t *n, char **err);

/* One account's queue at a glance (`status`). */
struct outbox_summary {
	size_t queued;          /* messages with recipients still to try */
	int64_t next_attempt;   /* the earliest next delivery attempt, 0 none */
	size_t unfiled;         /* sent or bounced, the Sent copy or bounce not stored */
	int64_t next_filing;    /* the earliest next try at filing, 0 none */
	char *filing_error;     /* why the oldest unfiled one is not filed, NULL none */
};

/* Fills *out for the account of that name (zeros when it has nothing
 * queued, or no row yet). Free with outbox_summary_free(). */
int outbox_summary(struct state *st, const char *account, struct outbox_summary *out,
    char **err);
void outbox_summary_free(struct outbox_summary *s);

/* A descriptor reading m's message from its start (its spool file, or a
 * memory file with the row's copy): the caller closes it. -1 with *err. */
int outbox_msg_open(struct state *st, const struct outbox_msg *m, char **err);

void outbox_msg_clear(struct outbox_msg *m);
void outbox_msgs_free(struct outbox_msg *msgs, size_t n);

/* Records one delivery attempt's results for m (the rcpts' state, code and
 * response as the caller set them), attempts + 1, and either the next
 * attempt time (next_attempt_at > 0: still queued) or the final state.
 * One transaction; durable: on disk when this returns (and with it every
 * earlier commit of the connection), else as outbox_set_synced() says. */
int outbox_record_attempt(struct state *st, const struct outbox_msg *m,
    enum outbox_state state, int64_t next_attempt_at, const char *error, bool durable,
    char **err);

/* The Sent copy / the bounce of m is stored (so it is never stored twice). */
int outbox_mark_copy_done(struct state *st, int64_t id, bool sent_copy, char **err);

/* For the messages ids[0..n), in one transaction: their Sent copies
 * (sent_copy) or bounces are stored (done), or about to be tried (!done:
 * synced to disk whatever outbox_set_synced() says, so that a later try
 * looks the copy up before storing it again: *_tried). */
int outbox_mark_copies(struct state *st, const int64_t *ids, size_t n, bool sent_copy,
    bool done, char **err);

/* Whether this connection's commits are synced one by one (true: the
 * default, PRAGMA synchronous = FULL) or left to the next synced one
 * (NORMAL: a killed process loses none of them, a power loss the last
 * ones). For the queue runner's records of delivery attempts, whose loss
 * repeats a delivery and never loses one, and for the relay's group
 * commit. Whatever it says, the commits that must be on disk are (the
 * enqueue, "tried" marks, outbox_cleanup() before it removes a spool
 * file, a durable record): made durable after the commit, by an fsync of
 * the WAL that does not hold the write lock. */
int outbox_set_synced(struct state *st, bool synced, char **err);

/* Storing the Sent copy or the bounce of finished message id failed: error
 * (why, never NULL) becomes its last_error, and filing is tried again at
 * next_at. Nothing is marked done: the spool file stays. */
int outbox_copy_failed(struct state *st, int64_t id, const char *error, int64_t next_at,
    char **err);

/* Makes every queued message, and every unfiled Sent copy or bounce, due
 * now (`queue flush`). */
int outbox_flush(struct state *st, char **err);

/* Removes a queued message (`queue drop ID`), or gives up filing the Sent
 * copy or bounce of a finished one (its state stays sent or bounced): 1
 * done, 0 no such message to drop. Its spool file goes with the next
 * outbox_cleanup(). */
int outbox_drop(struct state *st, int64_t id, char **err);

/* Removes spool files no outbox row names and older than min_age seconds:
 * what a crash between linking a message into the spool and committing its
 * row left (the age keeps it from racing an enqueue under way), and files
 * in STATE_DIR/spool/tmp as old (a crash while a named temp file was being
 * made anonymous, or files of older versions). *removed receives how
 * many. */
int outbox_sweep_orphans(struct state *st, const char *state_dir, time_t min_age,
    size_t *removed, char **err);

/* Removes the spool files of finished messages whose copy/bounce is done. */
int outbox_cleanup(struct state *st, const char *state_dir, char **err);

/* One account's outbound mail, all time (rows are kept when finished):
 * accepted (every message submitted, by the relay or `sendmail`), still
 * queued, sent (every recipient accepted upstream), bounced. Dropped
 * ones count only in accepted. For status and the metrics file. */
struct outbox_counts {
	unsigned long accepted, queued, sent, bounced;
};
int outbox_counts(struct state *st, int64_t account, struct outbox_counts *out, char **err);

/* For a STATE_DIR that belongs to another user than root, run as root:
 * STATE_DIR/spool and spool/tmp (made when missing) are given to uid:gid,
 * so that a process running as that user (the relay) can submit. 0, or
 * -1 with *err. */
int outbox_spool_give(const char *state_dir, uid_t uid, gid_t gid, char **err);

#endif

#include "store/state.h"
#include "store/state_priv.h"

#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/err.h"
#include "lib/io.h"
#include "lib/log.h"
#include "lib/strsort.h"
#include "lib/xmalloc.h"

/*
 * The schema, as forward migrations: migrations[i] takes PRAGMA
 * user_version i to i + 1, in its own transaction. Append, never edit.
 */
static const char *const migrations[] = {
	/* 1: accounts, messages, poll log */
	"CREATE TABLE accounts ("
	"  id INTEGER PRIMARY KEY,"
	"  name TEXT NOT NULL UNIQUE,"
	"  created_at INTEGER NOT NULL,"
	"  no_uidl INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE messages ("
	"  account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,"
	"  uidl TEXT NOT NULL,"
	"  size INTEGER NOT NULL,"
	"  sha256 TEXT NOT NULL,"
	"  message_id TEXT,"
	"  delivery_key TEXT NOT NULL,"
	"  folder TEXT NOT NULL,"
	"  location TEXT,"
	"  state INTEGER NOT NULL CHECK (state IN (0, 1, 2)),"
	"  fetched_at INTEGER NOT NULL,"
	"  delivered_at INTEGER,"
	"  deleted_at INTEGER,"
	"  PRIMARY KEY (account_id, uidl)) WITHOUT ROWID;"
	"CREATE INDEX messages_state ON messages(account_id, state);"
	/* For cross-account de-duplication (dedup = message-id). */
	"CREATE INDEX messages_message_id ON messages(message_id)"
	"  WHERE message_id IS NOT NULL;"
	"CREATE TABLE poll_log ("
	"  id INTEGER PRIMARY KEY,"
	"  account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,"
	"  started_at INTEGER NOT NULL,"
	"  finished_at INTEGER NOT NULL,"
	"  ok INTEGER NOT NULL,"
	"  imported INTEGER NOT NULL,"
	"  deleted INTEGER NOT NULL,"
	"  bytes INTEGER NOT NULL,"
	"  error TEXT);"
	"CREATE INDEX poll_log_account ON poll_log(account_id, id);",

	/* 2: the IMAP store and consolidation: where APPEND put a message
	 * (APPENDUID), a fingerprint (POP3 size + header hash) that
	 * recognises known content under new UIDLs, cross-account
	 * duplicates (Message-ID + body hash, among accounts of one store),
	 * and the per-account warning status shows (UIDL resets). */
	"ALTER TABLE messages ADD COLUMN pop3_size INTEGER;"
	"ALTER TABLE messages ADD COLUMN header_sha256 TEXT;"
	"ALTER TABLE messages ADD COLUMN body_sha256 TEXT;"
	"ALTER TABLE messages ADD COLUMN uidvalidity INTEGER;"
	"ALTER TABLE messages ADD COLUMN uid INTEGER;"
	"ALTER TABLE messages ADD COLUMN duplicate_of_account INTEGER;"
	"CREATE INDEX messages_fingerprint ON messages(account_id, pop3_size, header_sha256)"
	"  WHERE header_sha256 IS NOT NULL;"
	"ALTER TABLE accounts ADD COLUMN store TEXT;"
	"ALTER TABLE accounts ADD COLUMN uidl_resets INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE accounts ADD COLUMN warning TEXT;"
	"ALTER TABLE accounts ADD COLUMN warning_at INTEGER;",

	/* 3: the outbound queue (store/outbox.c): one row per submitted
	 * message, its spool file, and one row per recipient with its own
	 * result, so a partial upstream refusal bounces only those. */
	"CREATE TABLE outbox ("
	"  id INTEGER PRIMARY KEY,"
	"  account_id INTEGER NOT NULL REFERENCES accounts(id),"
	"  auth_user TEXT,"
	"  mail_from TEXT NOT NULL,"
	"  spool_file TEXT NOT NULL,"
	"  size INTEGER NOT NULL,"
	"  created_at INTEGER NOT NULL,"
	"  next_attempt_at INTEGER NOT NULL,"
	"  attempts INTEGER NOT NULL DEFAULT 0,"
	"  state INTEGER NOT NULL CHECK (state IN (0, 1, 2, 3)),"
	"  sent_copy_done INTEGER NOT NULL DEFAULT 0,"
	"  bounce_done INTEGER NOT NULL DEFAULT 0,"
	"  last_error TEXT,"
	"  finished_at INTEGER);"
	"CREATE INDEX outbox_due ON outbox(state, next_attempt_at);"
	"CREATE TABLE outbox_rcpt ("
	"  outbox_id INTEGER NOT NULL REFERENCES outbox(id) ON DELETE CASCADE,"
	"  pos INTEGER NOT NULL,"	/* submission order, kept in reports */
	"  rcpt TEXT NOT NULL,"
	"  state INTEGER NOT NULL CHECK (state IN (0, 1, 2)),"
	"  last_code INTEGER,"
	"  last_response TEXT,"
	"  PRIMARY KEY (outbox_id, rcpt)) WITHOUT ROWID;",

	/* 4: what the servers said and what the import and the scheduler
	 * need from it. accounts: the server's LOGIN-DELAY (seconds, NULL
	 * none) and EXPIRE (days as announced, NULL none, -1 NEVER), the
	 * time before which no login may happen (not_before: the last login
	 * + LOGIN-DELAY, or a refusal's backoff), consecutive failed passes
	 * and since when, when the next pass is planned, the mechanism that
	 * logged in. skipped: messages left on the server with a reason
	 * (over max_message_size, RETR refused or over its bound), retried
	 * every pass; a row goes when the message is imported or gone.
	 * poll_log: what the server deleted by itself (EXPIRE 0) and how
	 * many messages a pass skipped. */
	"ALTER TABLE accounts ADD COLUMN login_delay INTEGER;"
	"ALTER TABLE accounts ADD COLUMN server_expire INTEGER;"
	"ALTER TABLE accounts ADD COLUMN not_before INTEGER;"
	"ALTER TABLE accounts ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE accounts ADD COLUMN failing_since INTEGER;"
	"ALTER TABLE accounts ADD COLUMN next_poll_at INTEGER;"
	"ALTER TABLE accounts ADD COLUMN last_auth TEXT;"
	"CREATE TABLE skipped ("
	"  account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,"
	"  uidl TEXT NOT NULL,"
	"  pop3_size INTEGER,"
	"  reason TEXT NOT NULL,"
	"  first_at INTEGER NOT NULL,"
	"  last_at INTEGER NOT NULL,"
	"  times INTEGER NOT NULL DEFAULT 1,"
	"  PRIMARY KEY (account_id, uidl)) WITHOUT ROWID;"
	"ALTER TABLE poll_log ADD COLUMN server_deleted INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE poll_log ADD COLUMN skipped INTEGER NOT NULL DEFAULT 0;",

	/* 5: a small outbound message kept in its row (store/outbox.c,
	 * OUTBOX_INLINE_MAX), NULL for one in its spool file: queued with one
	 * sync, that of the transaction. */
	"ALTER TABLE outbox ADD COLUMN body BLOB;",

	/* 6: that body in a table of its own. SQLite writes a row whole at
	 * every UPDATE, overflow pages too: each attempt recorded, each copy
	 * marked wrote the message again, and every scan of the queue read
	 * through the bodies (the disk took 3.7 GB of writes while
	 * bench/run --only relay --relay 4000 relayed 80 MB, by vmstat; 2.0
	 * GB with this table). Written once here, deleted once. */
	"CREATE TABLE outbox_body ("
	"  id INTEGER PRIMARY KEY REFERENCES outbox(id) ON DELETE CASCADE,"
	"  body BLOB NOT NULL);"
	"INSERT INTO outbox_body(id, body) SELECT id, body FROM outbox WHERE body IS NOT NULL;"
	"ALTER TABLE outbox DROP COLUMN body;",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/* Poll log rows kept per account; the newest ok row and the newest row
 * with an error are kept beyond that, since status shows them. */
#define POLL_LOG_KEEP 1000

/* Per connection, in memory, made on first use: the server's UIDL list
 * for the UIDL-reset adoption (S_ADOPT), which asks "not on the server"
 * inside one UPDATE per fingerprint. */
static const char temp_schema[] =
    "CREATE TEMP TABLE IF NOT EXISTS uidl_in ("
    "  i INTEGER PRIMARY KEY,"
    "  uidl TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS temp.uidl_in_uidl ON uidl_in(uidl)";

#define MSG_COLUMNS "uidl, size, sha256, message_id, delivery_key, folder," \
	" location, state, fetched_at, delivered_at, pop3_size, header_sha256," \
	" body_sha256, uidvalidity, uid, duplicate_of_account," \
	" (SELECT a.name FROM accounts a WHERE a.id = duplicate_of_account)"
#define MSG_NCOLUMNS 17

/* Every statement, prepared on first use and kept for the connection. */
enum stmt_id {
	S_BEGIN, S_COMMIT, S_ROLLBACK, S_SYNC_NORMAL, S_SYNC_FULL,
	S_SP_BEGIN, S_SP_RELEASE, S_SP_ROLLBACK,
	S_ACCOUNT_ADD, S_ACCOUNT_GET, S_NO_UIDL,
	S_TMP_CLEAR, S_TMP_ADD, S_ROW_UIDLS, S_STORED_UIDLS, S_DUE,
	S_PENDING, S_FIND, S_PUT_PENDING, S_MARK_DELIVERED, S_DROP_PENDING,
	S_MARK_DELETED, S_SET_STORE, S_DEDUP_FIND, S_PUT_DUPLICATE,
	S_HAS_IMPORTED, S_ADOPT, S_UIDL_RESET,
	S_POLL_ADD, S_POLL_PRUNE,
	S_ST_LAST, S_ST_LAST_OK, S_ST_LAST_ERROR, S_ST_COUNTS, S_ST_ACCOUNT,
	S_HAS_UIDLS, S_SKIP_PUT, S_SKIP_CLEAR, S_SKIP_LIST,
	S_LOGIN, S_NOT_BEFORE, S_PASS_OK, S_PASS_FAILED, S_SCHEDULE,
	S_COUNT
};

static const char *const sql[S_COUNT] = {
	[S_BEGIN] = "BEGIN IMMEDIATE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
	[S_SYNC_NORMAL] = "PRAGMA synchronous = NORMAL",
	[S_SYNC_FULL] = "PRAGMA synchronous = FULL",
	/* A savepoint nests inside a caller's transaction and is a
	 * transaction of its own outside one. */
	[S_SP_BEGIN] = "SAVEPOINT state_sp",
	[S_SP_RELEASE] = "RELEASE state_sp",
	[S_SP_ROLLBACK] = "ROLLBACK TO state_sp",
	[S_ACCOUNT_ADD] = "INSERT OR IGNORE INTO accounts(name, created_at) VALUES (?1, ?2)",
	[S_ACCOUNT_GET] = "SELECT id FROM accounts WHERE name = ?1",
	[S_NO_UIDL] = "UPDATE accounts SET no_uidl = ?2 WHERE id = ?1 AND no_uidl IS NOT ?2",
	[S_TMP_CLEAR] = "DELETE FROM temp.uidl_in",
	[S_TMP_ADD] = "INSERT INTO temp.uidl_in(i, uidl) VALUES (?1, ?2)",
	/* The UIDLs of the account's rows, for merging with the server's
	 * list (uidl_query): the index on (account_id, state) holds the
	 * primary key too, so the scan reads neither the rows nor more
	 * than the UIDLs; it returns them by state, each state's in UIDL
	 * order. */
	[S_ROW_UIDLS] = "SELECT uidl FROM messages INDEXED BY messages_state"
	    " WHERE account_id = ?1 ORDER BY state, uidl",
	/* ... of the delivered (or deleted) rows. */
	[S_STORED_UIDLS] = "SELECT uidl FROM messages INDEXED BY messages_state"
	    " WHERE account_id = ?1 AND state IN (1, 2) ORDER BY state, uidl",
	/* ... of those old enough to be deleted from the server. */
	[S_DUE] = "SELECT uidl FROM messages"
	    " WHERE account_id = ?1 AND state IN (1, 2) AND delivered_at <= ?2",
	[S_PENDING] = "SELECT " MSG_COLUMNS " FROM messages"
	    " WHERE account_id = ?1 AND state = 0 ORDER BY fetched_at, uidl",
	[S_FIND] = "SELECT " MSG_COLUMNS " FROM messages"
	    " WHERE account_id = ?1 AND uidl = ?2",
	[S_PUT_PENDING] =
	    "INSERT OR REPLACE INTO messages(account_id, uidl, size, sha256,"
	    " message_id, delivery_key, folder, location, state, fetched_at,"
	    " delivered_at, deleted_at, pop3_size, header_sha256, body_sha256)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, 0, ?8, NULL, NULL,"
	    " ?9, ?10, ?11)",
	[S_MARK_DELIVERED] =
	    "UPDATE messages SET state = 1, location = ?3, delivered_at = ?4,"
	    " uidvalidity = ?5, uid = ?6"
	    " WHERE account_id = ?1 AND uidl = ?2 AND state = 0",
	[S_DROP_PENDING] =
	    "DELETE FROM messages WHERE account_id = ?1 AND uidl = ?2 AND state = 0",
	[S_MARK_DELETED] =
	    "UPDATE messages SET state = 2, deleted_at = ?3"
	    " WHERE account_id = ?1 AND uidl = ?2 AND state = 1",
	[S_SET_STORE] = "UPDATE accounts SET store = ?2 WHERE id = ?1 AND store IS NOT ?2",
	/* An original (not itself a duplicate) of another account of the
	 * same store; delivered rows first, then the oldest. */
	[S_DEDUP_FIND] = "SELECT " MSG_COLUMNS ", account_id FROM messages"
	    " WHERE message_id = ?2 AND body_sha256 = ?3 AND folder = ?5"
	    " AND duplicate_of_account IS NULL AND account_id IN"
	    "  (SELECT id FROM accounts WHERE store = ?4 AND id <> ?1)"
	    " ORDER BY state = 0, fetched_at LIMIT 1",
	[S_PUT_DUPLICATE] =
	    "INSERT OR REPLACE INTO messages(account_id, uidl, size, sha256,"
	    " message_id, delivery_key, folder, location, state, fetched_at,"
	    " delivered_at, deleted_at, pop3_size, header_sha256, body_sha256,"
	    " uidvalidity, uid, duplicate_of_account)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?10, NULL,"
	    " ?11, ?12, ?13, ?14, ?15, ?16)",
	/* Rows another tool delivered (import-state) have no fingerprint
	 * the guard could compare: they do not count. */
	[S_HAS_IMPORTED] = "SELECT 1 FROM messages"
	    " WHERE account_id = ?1 AND state IN (1, 2)"
	    " AND substr(delivery_key, 1, 7) <> '" STATE_SEEN_ELSEWHERE "' LIMIT 1",
	/* The oldest imported row with this fingerprint whose UIDL is no
	 * longer on the server takes the new UIDL; once renamed it is on
	 * the server, so identical messages each take their own row. The
	 * index is named: without ANALYZE statistics the planner would scan
	 * the account's rows once per message. */
	[S_ADOPT] =
	    "UPDATE messages SET uidl = ?2 WHERE account_id = ?1 AND uidl ="
	    " (SELECT m.uidl FROM messages m INDEXED BY messages_fingerprint"
	    "  WHERE m.account_id = ?1"
	    "  AND m.pop3_size = ?3 AND m.header_sha256 = ?4 AND m.state IN (1, 2)"
	    "  AND m.uidl NOT IN (SELECT u.uidl FROM temp.uidl_in u)"
	    "  ORDER BY m.fetched_at, m.uidl LIMIT 1)",
	[S_UIDL_RESET] = "UPDATE accounts SET uidl_resets = uidl_resets + 1,"
	    " warning = ?2, warning_at = ?3 WHERE id = ?1",
	[S_POLL_ADD] =
	    "INSERT INTO poll_log(account_id, started_at, finished_at, ok,"
	    " imported, deleted, bytes, error, server_deleted, skipped)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
	[S_POLL_PRUNE] =
	    "DELETE FROM poll_log WHERE account_id = ?1 AND id <"
	    " (SELECT id FROM poll_log WHERE account_id = ?1"
	    "  ORDER BY id DESC LIMIT 1 OFFSET ?2)"
	    " AND id <> coalesce((SELECT max(id) FROM poll_log"
	    "  WHERE account_id = ?1 AND ok = 1), 0)"
	    " AND id <> coalesce((SELECT max(id) FROM poll_log"
	    "  WHERE account_id = ?1 AND error IS NOT NULL), 0)",
	[S_ST_LAST] =
	    "SELECT started_at, finished_at, ok, imported, deleted, bytes, error,"
	    " server_deleted, skipped"
	    " FROM poll_log WHERE account_id = ?1 ORDER BY id DESC LIMIT 1",
	[S_ST_LAST_OK] =
	    "SELECT finished_at FROM poll_log WHERE account_id = ?1 AND ok = 1"
	    " ORDER BY id DESC LIMIT 1",
	[S_ST_LAST_ERROR] =
	    "SELECT error, finished_at FROM poll_log"
	    " WHERE account_id = ?1 AND error IS NOT NULL ORDER BY id DESC LIMIT 1",
	[S_ST_COUNTS] =
	    "SELECT state, count(*), count(uid), count(duplicate_of_account),"
	    " sum(substr(delivery_key, 1, 7) = '" STATE_SEEN_ELSEWHERE "'), sum(size)"
	    " FROM messages WHERE account_id = ?1 GROUP BY state",
	[S_ST_ACCOUNT] = "SELECT no_uidl, uidl_resets, warning, warning_at,"
	    " last_auth, (SELECT count(*) FROM skipped k WHERE k.account_id = ?1)"
	    " FROM accounts WHERE id = ?1",
	[S_HAS_UIDLS] = "SELECT 1 FROM messages WHERE account_id = ?1"
	    " AND substr(uidl, 1, length(?2)) <> ?2 LIMIT 1",
	[S_SKIP_PUT] =
	    "INSERT INTO skipped(account_id, uidl, pop3_size, reason, first_at, last_at)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?5)"
	    " ON CONFLICT (account_id, uidl) DO UPDATE SET pop3_size = ?3,"
	    " reason = ?4, last_at = ?5, times = times + 1",
	[S_SKIP_CLEAR] = "DELETE FROM skipped WHERE account_id = ?1 AND uidl = ?2",
	[S_SKIP_LIST] = "SELECT uidl, pop3_size, reason, first_at, last_at, times"
	    " FROM skipped WHERE account_id = ?1 ORDER BY last_at DESC, uidl",
	/* Unchanged values write nothing (no commit to flush). */
	[S_LOGIN] = "UPDATE accounts SET last_auth = ?2, login_delay = ?3,"
	    " server_expire = ?4, not_before = ?5 WHERE id = ?1 AND (last_auth IS NOT ?2"
	    " OR login_delay IS NOT ?3 OR server_expire IS NOT ?4 OR not_before IS NOT ?5)",
	/* A refusal's backoff never shortens a wait already recorded. */
	[S_NOT_BEFORE] = "UPDATE accounts SET not_before ="
	    " max(coalesce(not_before, 0), ?2) WHERE id = ?1",
	[S_PASS_OK] = "UPDATE accounts SET failures = 0, failing_since = NULL,"
	    " next_poll_at = ?2 WHERE id = ?1",
	[S_PASS_FAILED] = "UPDATE accounts SET failures = failures + 1,"
	    " failing_since = coalesce(failing_since, ?3), next_poll_at = ?2 WHERE id = ?1",
	[S_SCHEDULE] = "SELECT not_before, next_poll_at, failures, failing_since,"
	    " login_delay, server_expire FROM accounts WHERE id = ?1",
};

/* A statement of another store/ module, kept by the address of its SQL. */
struct kept_stmt {
	const char *sql;
	sqlite3_stmt *s;
};

struct state {
	sqlite3 *db;
	char *path;
	sqlite3_stmt *stmt[S_COUNT];
	struct kept_stmt *kept;	/* state_stmt()'s, n_kept of them */
	size_t n_kept;
	bool light;             /* the open transaction is bookkeeping */
	bool busy;		/* the last call failed on another process's lock */
};

/* Why path cannot be opened for writing, asked again: SQLite opens a
 * database read-only when opening it for writing fails (an I/O error, a
 * permission) and keeps no errno of that attempt. */
static const char *
open_rw_why(const char *path)
{
	int fd = open(path, O_RDWR | O_CLOEXEC), e = fd == -1 ? errno : 0;

	if (fd != -1)
		close(fd);
	return e ? strerror(e) : "refused (the error was not kept)";
}

/* "what: SQLite's last message". */
static int
fail(struct state *st, const char *what, char **err)
{
	int code = sqlite3_errcode(st->db) & 0xff, sys = sqlite3_system_errno(st->db);

	st->busy = code == SQLITE_BUSY || code == SQLITE_LOCKED;
	/* A write on a handle SQLite fell back to read-only: say why. */
	if (code == SQLITE_READONLY)
		return err_set(err, "%s: %s (opening for writing: %s)", what,
		    sqlite3_errmsg(st->db), open_rw_why(st->path));
	/* "unable to open database file", "disk I/O error": the errno says
	 * which (a full disk, a failing one). */
	if (sys != 0 && (code == SQLITE_CANTOPEN || code == SQLITE_IOERR || code == SQLITE_FULL))
		return err_set(err, "%s: %s (%s)", what, sqlite3_errmsg(st->db), strerror(sys));
	return err_set(err, "%s: %s", what, sqlite3_errmsg(st->db));
}

bool
state_busy(const struct state *st)
{
	return st != NULL && st->busy;
}

/* *slot, the kept statement of q: prepared on first use; NULL with *err
 * set. */
static sqlite3_stmt *
keep(struct state *st, const char *q, sqlite3_stmt **slot, const char *what, char **err)
{
	st->busy = false;
	if (*slot == NULL && sqlite3_prepare_v3(st->db, q, -1, SQLITE_PREPARE_PERSISTENT,
	    slot, NULL) != SQLITE_OK) {
		fail(st, what, err);
		sqlite3_finalize(*slot);
		*slot = NULL;
	}
	return *slot;
}

/* The cached statement id. */
static sqlite3_stmt *
stmt(struct state *st, enum stmt_id id, const char *what, char **err)
{
	return keep(st, sql[id], &st->stmt[id], what, err);
}

/* Readies s for its next use. */
static void
done(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

/* Steps s once (a statement without rows, or the first row ignored),
 * then resets it. bound is the OR of the bind results: SQLITE_OK is 0. */
static int
run(struct state *st, sqlite3_stmt *s, int bound, const char *what, char **err)
{
	int rc;

	if (bound != SQLITE_OK) {
		fail(st, what, err);
		done(s);
		return -1;
	}
	rc = sqlite3_step(s);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		fail(st, what, err);
		done(s);
		return -1;
	}
	done(s);
	return 0;
}

/* Runs the cached statement id, which takes no parameters. */
static int
run_id(struct state *st, enum stmt_id id, const char *what, char **err)
{
	sqlite3_stmt *s = stmt(st, id, what, err);

	return s == NULL ? -1 : run(st, s, SQLITE_OK, what, err);
}

/* Bookkeeping (doc/DESIGN.md, State and schema: what must be durable):
 * writes no exactly-once decision rests on are committed with
 * synchronous = NORMAL, which in WAL mode keeps every commit atomic and
 * ordered and survives the process being killed, and only a crash of the
 * machine may undo the last of them; FULL (an fsync per commit) is kept
 * for everything else. The level can only change outside a transaction:
 * light_on does nothing inside one (a bookkeeping write inside a caller's
 * transaction gets the caller's durability). */
static bool
light_on(struct state *st)
{
	if (!sqlite3_get_autocommit(st->db))
		return false;
	return run_id(st, S_SYNC_NORMAL, "lowering the durability of bookkeeping", NULL) == 0;
}

static void
light_off(struct state *st, bool on)
{
	if (on && run_id(st, S_SYNC_FULL, "restoring full durability", NULL) == -1)
		fatalx("state: cannot restore synchronous = FULL: %s", sqlite3_errmsg(st->db));
}

/* run() for a bookkeeping statement (light_on). */
static int
run_light(struct state *st, sqlite3_stmt *s, int bound, const char *what, char **err)
{
	bool on = light_on(st);
	int r = run(st, s, bound, what, err);

	light_off(st, on);
	return r;
}

/* Runs the cached statement id with ?1 = account and ?2 = text, the
 * parameters of every per-account update keyed by one string. */
static int
run_account_text(struct state *st, enum stmt_id id, int64_t account, const char *text,
    const char *what, char **err)
{
	sqlite3_stmt *s;
	int b;

	if ((s = stmt(st, id, what, err)) == NULL)
		return -1;
	b = sqlite3_bind_int64(s, 1, account);
	b |= sqlite3_bind_text(s, 2, text, -1, SQLITE_STATIC);
	return run(st, s, b, what, err);
}

static int
exec(struct state *st, const char *q, const char *what, char **err)
{
	st->busy = false;
	if (sqlite3_exec(st->db, q, NULL, NULL, NULL) != SQLITE_OK)
		return fail(st, what, err);
	return 0;
}

static int
need_transaction(struct state *st, const char *what, char **err)
{
	if (!sqlite3_get_autocommit(st->db))
		return 0;
	*err = xasprintf("%s: not inside a transaction", what);
	return -1;
}

/* Savepoints nest inside a caller's transaction, or are one of their own
 * (*outer) outside one. */
static int
sp_begin(struct state *st, bool *outer, const char *what, char **err)
{
	*outer = sqlite3_get_autocommit(st->db) != 0;
	return run_id(st, S_SP_BEGIN, what, err);
}

/* Ends the savepoint: kept if r is 0, undone if -1. Returns r, or -1 when
 * it cannot be released (committed, when outer). */
static int
sp_end(struct state *st, bool outer, int r, const char *what, char **err)
{
	if (r == -1)
		run_id(st, S_SP_ROLLBACK, what, NULL);
	if (run_id(st, S_SP_RELEASE, what, r == 0 ? err : NULL) == -1) {
		/* Never leave a transaction of ours open behind the caller. */
		if (outer && !sqlite3_get_autocommit(st->db))
			run_id(st, S_ROLLBACK, what, NULL);
		r = -1;
	}
	return r;
}

/*
 * Opening and the schema.
 */

/* Creates the database's directory (mode 0700: message ids are private);
 * its parent must exist. */
static int
make_db_dir(const char *path, char **err)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int r = 0;

	if (slash == NULL || slash == path)
		return 0;
	dir = xstrndup(path, (size_t)(slash - path));
	if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
		*err = xasprintf("creating %s: %s", dir, strerror(errno));
		r = -1;
	}
	free(dir);
	return r;
}

static int
user_version(struct state *st, int *v, char **err)
{
	sqlite3_stmt *s;
	int rc;

	if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK)
		return fail(st, "reading the schema version", err);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*v = sqlite3_column_int(s, 0);
	else
		fail(st, "reading the schema version", err);
	sqlite3_finalize(s);
	return rc == SQLITE_ROW ? 0 : -1;
}

static int
too_new(int v, char **err)
{
	*err = xasprintf("schema version %d is newer than the %d this pop3bridge"
	    " knows: refusing to use it (upgrade pop3bridge)", v, SCHEMA_VERSION);
	return -1;
}

/* Applies migration v (to version v + 1) in its own transaction. The
 * version is read again under the write lock: another process may have
 * migrated since. Sets *now to the version reached. */
static int
migrate_one(struct state *st, int v, int *now, char **err)
{
	char *what = xasprintf("migrating the state schema to version %d", v + 1);
	char q[64];
	int r = -1, cur;

	if (exec(st, "BEGIN IMMEDIATE", what, err) == -1)
		goto out;
	if (user_version(st, &cur, err) == -1)
		goto rollback;
	if (cur != v) {
		*now = cur;
		r = exec(st, "COMMIT", what, err);
		goto out;
	}
	snprintf(q, sizeof q, "PRAGMA user_version = %d", v + 1);
	if (exec(st, migrations[v], what, err) == -1 || exec(st, q, what, err) == -1 ||
	    exec(st, "COMMIT", what, err) == -1)
		goto rollback;
	*now = v + 1;
	r = 0;
	goto out;
rollback:
	sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
out:
	free(what);
	return r;
}

static int
migrate(struct state *st, char **err)
{
	int v;

	if (user_version(st, &v, err) == -1)
		return -1;
	while (v < SCHEMA_VERSION) {
		if (migrate_one(st, v, &v, err) == -1)
			return -1;
	}
	if (v > SCHEMA_VERSION)
		return too_new(v, err);
	return 0;
}

/* WAL lets status read while a pass writes; a file system without shared
 * memory keeps the rollback journal, durable all the same. Passes of
 * several accounts open a new database at once, and the switch to WAL
 * answers SQLITE_BUSY without calling the busy handler when they race:
 * retry for as long as the busy timeout would have waited. */
/* SQLite could not create the -wal or -shm file: it retried the open
 * read-only, and what it keeps is that retry's ENOENT, not why creating
 * failed (a full disk said "No such file or directory"; found by
 * tests/integration/test_disk_faults.py). Asked again with a file of
 * our own in the same directory, unnamed (O_TMPFILE: nothing to remove,
 * nothing another process could open). */
static void
wal_cause(struct state *st, char **err)
{
	const char *slash = strrchr(st->path, '/');
	char *dir = slash == NULL ? xstrdup(".") : slash == st->path ? xstrdup("/") :
	    xstrndup(st->path, (size_t)(slash - st->path));
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600), e = fd == -1 ? errno : 0;

	if (fd != -1)
		close(fd);
	if (e != 0 && e != EOPNOTSUPP && e != EISDIR)
		err_set(err, "setting WAL mode: creating the write-ahead log in %s: %s", dir,
		    strerror(e));
	else
		err_set(err, "setting WAL mode: creating the write-ahead log failed (%s; SQLite "
		    "kept no error of the attempt)", sqlite3_errmsg(st->db));
	free(dir);
}

static int
set_wal(struct state *st, char **err)
{
	struct timespec pause = { 0, 10 * 1000 * 1000 };
	sqlite3_stmt *s;
	const char *mode = NULL;
	int rc, tries = 0;

	/* A database in WAL mode already opens its -wal and -shm here. */
	if (sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &s, NULL) != SQLITE_OK) {
		if ((sqlite3_errcode(st->db) & 0xff) != SQLITE_CANTOPEN)
			return fail(st, "setting WAL mode", err);
		wal_cause(st, err);
		return -1;
	}
	while ((rc = sqlite3_step(s)) == SQLITE_BUSY && tries++ < 3000) {
		sqlite3_reset(s);
		nanosleep(&pause, NULL);
	}
	if (rc == SQLITE_ROW)
		mode = (const char *)sqlite3_column_text(s, 0);
	else if ((sqlite3_errcode(st->db) & 0xff) == SQLITE_CANTOPEN)
		wal_cause(st, err);
	else
		fail(st, "setting WAL mode", err);
	if (mode != NULL && strcmp(mode, "wal") != 0)
		log_warnx("%s: journal mode is %s, not wal", st->path, mode);
	sqlite3_finalize(s);
	return rc == SQLITE_ROW ? 0 : -1;
}

/* SQLite's own busy timeout sleeps 1, 2, 5, 10 ... 100 ms between tries:
 * behind a writer that holds the lock for about one fsync (the relay's
 * group commit, the queue runner's records, a pass's batch), a waiter
 * would sleep far longer than the lock is held, and the relay and the
 * runner take turns at every message. Tries every 250 us for the first
 * 50 ms, then every 10 ms: 30 s in all, as before. */
#define BUSY_FAST_TRIES	200
#define BUSY_SLOW_TRIES	2995

static int
busy_wait(void *arg, int n)
{
	struct timespec fast = { 0, 250 * 1000 }, slow = { 0, 10 * 1000 * 1000 };

	(void)arg;
	if (n >= BUSY_FAST_TRIES + BUSY_SLOW_TRIES)
		return 0;
	nanosleep(n < BUSY_FAST_TRIES ? &fast : &slow, NULL);
	return 1;
}

static int
configure(struct state *st, char **err)
{
	if (sqlite3_busy_handler(st->db, busy_wait, NULL) != SQLITE_OK)
		return fail(st, "setting the busy handler", err);
	/* Every pass is a process of its own: a checkpoint at each close
	 * (two fsyncs) and a WAL deleted and made again (two more, one of its
	 * directory) cost more than a nothing-new pass does otherwise. The
	 * WAL is checkpointed when it passes 1000 pages, by whichever commit
	 * takes it there; its commits are as durable as in the database. */
	if (sqlite3_db_config(st->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL) != SQLITE_OK)
		return fail(st, "keeping the WAL at close", err);
	if (set_wal(st, err) == -1)
		return -1;
	return exec(st, "PRAGMA synchronous = FULL;"
	    "PRAGMA foreign_keys = ON;"
	    "PRAGMA temp_store = MEMORY", "configuring the state database", err);
}

int
state_open(const char *path, struct state **out, char **err)
{
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
	struct state *st;
	char *what;

	if (make_db_dir(path, err) == -1)
		return -1;
	st = xcalloc(1, sizeof *st);
	st->path = xstrdup(path);
	if (sqlite3_open_v2(path, &st->db, flags, NULL) != SQLITE_OK) {
		*err = xasprintf("opening: %s", st->db ? sqlite3_errmsg(st->db) : "out of memory");
		goto fail;
	}
	/* SQLite opens read-only when opening for writing fails (an I/O
	 * error, a permission): every write would then fail much later as
	 * "attempt to write a readonly database" (found by
	 * tests/integration/test_disk_faults.py). */
	if (sqlite3_db_readonly(st->db, "main") == 1) {
		*err = xasprintf("opening for writing: %s", open_rw_why(path));
		goto fail;
	}
	if (configure(st, err) == -1 || migrate(st, err) == -1)
		goto fail;
	*out = st;
	return 0;
fail:
	/* Every message above says what failed; this says where. */
	what = *err;
	*err = xasprintf("state database %s: %s", path, what);
	free(what);
	state_close(st);
	return -1;
}

int
state_open_dir(const char *state_dir, bool create, struct state **out, char **err)
{
	char *path = xasprintf("%s/state.db", state_dir);
	struct stat sb;
	int r = 0;

	*out = NULL;
	if (create || stat(path, &sb) == 0)
		r = state_open(path, out, err);
	free(path);
	return r;
}

/* "file:PATH?readonly_shm=1" with PATH's URI delimiters escaped. */
static char *
reader_uri(const char *path)
{
	size_t n = strlen(path);
	char *uri = xmalloc(3 * n + sizeof "file:?readonly_shm=1"), *q = uri;

	q += sprintf(q, "file:");
	for (const char *p = path; *p != '\0'; p++)
		if (*p == '?' || *p == '#' || *p == '%')
			q += sprintf(q, "%%%02X", (unsigned char)*p);
		else
			*q++ = *p;
	strcpy(q, "?readonly_shm=1");
	return uri;
}

int
state_open_dir_reader(const char *state_dir, struct state **out, char **err)
{
	int flags = SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX;
	char *path = xasprintf("%s/state.db", state_dir), *side, *uri;
	struct stat sb;
	struct state *st;
	bool wal = true;
	int v = -1;

	*out = NULL;
	for (size_t i = 0; i < 2 && wal; i++) {
		side = xasprintf("%s%s", path, i == 0 ? "-wal" : "-shm");
		wal = stat(side, &sb) == 0;
		free(side);
	}
	if (stat(path, &sb) == -1 || !wal) {
		free(path);
		return state_open_dir(state_dir, false, out, err);
	}
	st = xcalloc(1, sizeof *st);
	st->path = path;
	uri = reader_uri(path);
	if (sqlite3_open_v2(uri, &st->db, flags, NULL) == SQLITE_OK &&
	    sqlite3_busy_handler(st->db, busy_wait, NULL) == SQLITE_OK &&
	    sqlite3_exec(st->db, "PRAGMA temp_store = MEMORY", NULL, NULL, NULL) == SQLITE_OK &&
	    user_version(st, &v, NULL) == 0 && v == SCHEMA_VERSION) {
		free(uri);
		*out = st;
		return 0;
	}
	/* Not readable this way: the ordinary open says why, or migrates. */
	free(uri);
	state_close(st);
	return state_open_dir(state_dir, false, out, err);
}

int
state_make_dir(const char *state_dir, char **err)
{
	return io_mkdir_p(state_dir, 0700, false, err) == -1 ? -1 : 0;
}

bool
state_dir_has_db(const char *state_dir)
{
	char *path = xasprintf("%s/state.db", state_dir);
	struct stat sb;
	bool r = stat(path, &sb) == 0;

	free(path);
	return r;
}

void
state_close(struct state *st)
{
	size_t i;

	if (st == NULL)
		return;
	for (i = 0; i < S_COUNT; i++)
		sqlite3_finalize(st->stmt[i]);
	for (i = 0; i < st->n_kept; i++)
		sqlite3_finalize(st->kept[i].s);
	free(st->kept);
	if (st->db != NULL) {
		/* Cheap, and keeps the query planner's statistics current. */
		sqlite3_exec(st->db, "PRAGMA optimize", NULL, NULL, NULL);
		sqlite3_close(st->db);
	}
	free(st->path);
	free(st);
}

/*
 * Accounts and transactions.
 */

int
state_account(struct state *st, const char *name, int64_t *id, char **err)
{
	const char *what = "looking up the account";
	sqlite3_stmt *s;
	int b, rc;

	if ((s = stmt(st, S_ACCOUNT_ADD, what, err)) == NULL)
		return -1;
	b = sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	b |= sqlite3_bind_int64(s, 2, (int64_t)time(NULL));
	/* Bookkeeping: rows that need the account are flushed later, and
	 * with them (the WAL is flushed in order) this row. */
	if (run_light(st, s, b, "creating the account", err) == -1)
		return -1;
	if ((s = stmt(st, S_ACCOUNT_GET, what, err)) == NULL)
		return -1;
	if (sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC) != SQLITE_OK) {
		fail(st, what, err);
		done(s);
		return -1;
	}
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*id = sqlite3_column_int64(s, 0);
	else if (rc == SQLITE_DONE)
		err_set(err, "looking up the account: it vanished as it was created");
	else
		fail(st, what, err);
	done(s);
	return rc == SQLITE_ROW ? 0 : -1;
}

int
state_account_id(struct state *st, const char *name, int64_t *id, char **err)
{
	const char *what = "looking up the account";
	sqlite3_stmt *s;
	int rc;

	if ((s = stmt(st, S_ACCOUNT_GET, what, err)) == NULL)
		return -1;
	rc = sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC) == SQLITE_OK ? sqlite3_step(s) :
	    SQLITE_ERROR;
	if (rc == SQLITE_ROW)
		*id = sqlite3_column_int64(s, 0);
	else if (rc != SQLITE_DONE)
		fail(st, what, err);
	done(s);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

int
state_set_no_uidl(struct state *st, int64_t account, bool no_uidl, char **err)
{
	const char *what = "recording the account's UIDL support";
	sqlite3_stmt *s;
	int b;

	if ((s = stmt(st, S_NO_UIDL, what, err)) == NULL)
		return -1;
	b = sqlite3_bind_int64(s, 1, account);
	b |= sqlite3_bind_int(s, 2, no_uidl);
	return run_light(st, s, b, what, err);
}

int
state_begin(struct state *st, char **err)
{
	return run_id(st, S_BEGIN, "beginning a transaction", err);
}

int
state_begin_light(struct state *st, char **err)
{
	if (!sqlite3_get_autocommit(st->db))
		return err_set(err, "beginning a bookkeeping transaction: inside another");
	st->light = light_on(st);
	if (run_id(st, S_BEGIN, "beginning a transaction", err) == -1) {
		light_off(st, st->light);
		st->light = false;
		return -1;
	}
	return 0;
}

/* After a transaction: back to full durability if it was bookkeeping. */
static void
end_light(struct state *st)
{
	if (st->light && sqlite3_get_autocommit(st->db)) {
		light_off(st, true);
		st->light = false;
	}
}

int
state_commit(struct state *st, char **err)
{
	int r = run_id(st, S_COMMIT, "committing", err);

	end_light(st);
	return r;
}

void
state_rollback(struct state *st)
{
	if (!sqlite3_get_autocommit(st->db))
		run_id(st, S_ROLLBACK, "rolling back", NULL);
	end_light(st);
}

/*
 * The UIDL list queries. The server's list (up to 10^6 UIDLs) is sorted
 * by index in memory (lib/strsort.h) and merged with the account's rows,
 * which an index scan returns in UIDL order: no temporary table to fill
 * and index for every query (that cost more than everything else in a
 * poll that finds nothing new), and memory of 4 bytes per listed message.
 */

/* The page cache (KiB, as PRAGMA cache_size takes them negated): SQLite's
 * default, and while a UIDL query scans an index. */
#define CACHE_KIB "2000"
#define SCAN_CACHE_KIB "256"

/* What a row found on the server does to its entry. */
enum uidl_pick {
	PICK_UNLISTED,          /* entries without a row of the selected states */
	PICK_LISTED,            /* entries with such a row */
};

/* One bit an entry: 125 KB for a listing of 10^6. */
#define MARK_SET(m, i)	((m)[(i) / 8] |= (unsigned char)(1u << ((i) % 8)))
#define MARK_GET(m, i)	(((m)[(i) / 8] >> ((i) % 8)) & 1u)

/* Marks (bit i of mark) every entry of uidls whose UIDL is a row that
 * statement s (?1 bound by the caller) returns in column 0. */
static int
mark_rows(struct state *st, sqlite3_stmt *s, const char *const *uidls, size_t n,
    unsigned char *mark, const char *what, char **err)
{
	struct strsort so;
	struct strsort_cursor cur;
	const char *u;
	size_t p;
	int rc;

	strsort_init(&so, uidls, sizeof *uidls, 0, n);
	strsort_cursor_init(&cur, &so);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if ((u = (const char *)sqlite3_column_text(s, 0)) == NULL)
			continue;
		for (p = strsort_cursor_find(&cur, u); p < n &&
		    strcmp(uidls[strsort_at(&so, p)], u) == 0; p++)
			MARK_SET(mark, strsort_at(&so, p));
	}
	strsort_free(&so);
	if (rc != SQLITE_DONE)
		return fail(st, what, err);
	return 0;
}

/* Runs the cached row query q (?1 the account, ?2 cutoff if it has one)
 * against uidls[0..n) and collects, in increasing order, the indices
 * pick selects. */
static int
uidl_query(struct state *st, enum stmt_id q, int64_t account, int64_t cutoff,
    enum uidl_pick pick, const char *const *uidls, size_t n, size_t **idx, size_t *n_idx,
    const char *what, char **err)
{
	unsigned char *mark;
	size_t *v, k = 0;
	sqlite3_stmt *s;
	int b, r = -1;

	*idx = NULL;
	*n_idx = 0;
	if ((s = stmt(st, q, what, err)) == NULL)
		return -1;
	mark = xcalloc(n / 8 + 1, 1);
	b = sqlite3_bind_int64(s, 1, account);
	if (sqlite3_bind_parameter_count(s) >= 2)
		b |= sqlite3_bind_int64(s, 2, cutoff);
	if (b != SQLITE_OK)
		fail(st, what, err);
	else {
		/* One pass over an index: a page is read once, so a cache
		 * beyond the path to the leaves saves nothing, and a scan of
		 * 100,000 rows would fill SQLite's default 2 MB with pages no
		 * one reads again (a nothing-new poll's peak memory). */
		sqlite3_exec(st->db, "PRAGMA cache_size = -" SCAN_CACHE_KIB, NULL, NULL, NULL);
		r = mark_rows(st, s, uidls, n, mark, what, err);
		sqlite3_exec(st->db, "PRAGMA cache_size = -" CACHE_KIB, NULL, NULL, NULL);
	}
	done(s);
	if (r == 0) {
		/* Exactly as many as picked: a poll that finds nothing new
		 * holds no array the size of the listing. */
		for (size_t i = 0; i < n; i++)
			k += MARK_GET(mark, i) == (pick == PICK_LISTED);
		v = xreallocarray(NULL, k ? k : 1, sizeof *v);
		k = 0;
		for (size_t i = 0; i < n; i++)
			if (MARK_GET(mark, i) == (pick == PICK_LISTED))
				v[k++] = i;
		*idx = v;
		*n_idx = k;
	}
	free(mark);
	return r;
}

int
state_filter_new(struct state *st, int64_t account, const char *const *uidls,
    size_t n, size_t **idx, size_t *n_idx, char **err)
{
	return uidl_query(st, S_ROW_UIDLS, account, 0, PICK_UNLISTED, uidls, n, idx, n_idx,
	    "finding new messages", err);
}

int
state_due_for_delete(struct state *st, int64_t account, const char *const *uidls,
    size_t n, int64_t cutoff, size_t **idx, size_t *n_idx, char **err)
{
	return uidl_query(st, S_DUE, account, cutoff, PICK_LISTED, uidls, n, idx, n_idx,
	    "finding messages due for deletion", err);
}

/*
 * Message rows.
 */

char *
state_col_str(sqlite3_stmt *s, int i)
{
	const unsigned char *t = sqlite3_column_text(s, i);

	return t == NULL ? NULL : xstrdup((const char *)t);
}

/* Copies a hex digest column into a char[65]; "" when NULL. */
static void
col_hex(sqlite3_stmt *s, int i, char *hex)
{
	const unsigned char *t = sqlite3_column_text(s, i);

	snprintf(hex, 65, "%s", t ? (const char *)t : "");
}

/* Binds a hex digest, NULL when empty (not known). */
static int
bind_hex(sqlite3_stmt *s, int i, const char *hex)
{
	if (hex[0] == '\0')
		return sqlite3_bind_null(s, i);
	return sqlite3_bind_text(s, i, hex, -1, SQLITE_STATIC);
}

/* Binds an IMAP UID or UIDVALIDITY, NULL when 0 (not known). */
static int
bind_uid(sqlite3_stmt *s, int i, uint32_t v)
{
	return v == 0 ? sqlite3_bind_null(s, i) : sqlite3_bind_int64(s, i, v);
}

/* Fills m from a row of MSG_COLUMNS. */
static void
read_msg(sqlite3_stmt *s, struct state_msg *m)
{
	const unsigned char *sha = sqlite3_column_text(s, 2);

	memset(m, 0, sizeof *m);
	m->uidl = state_col_str(s, 0);
	m->size = (uint64_t)sqlite3_column_int64(s, 1);
	snprintf(m->sha256, sizeof m->sha256, "%s", sha ? (const char *)sha : "");
	m->message_id = state_col_str(s, 3);
	m->delivery_key = state_col_str(s, 4);
	m->folder = state_col_str(s, 5);
	m->location = state_col_str(s, 6);
	m->state = (enum state_msg_state)sqlite3_column_int(s, 7);
	m->fetched_at = sqlite3_column_int64(s, 8);
	m->delivered_at = sqlite3_column_int64(s, 9);
	m->pop3_size = (uint64_t)sqlite3_column_int64(s, 10);
	col_hex(s, 11, m->header_sha256);
	col_hex(s, 12, m->body_sha256);
	m->uidvalidity = (uint32_t)sqlite3_column_int64(s, 13);
	m->uid = (uint32_t)sqlite3_column_int64(s, 14);
	m->duplicate_of = sqlite3_column_int64(s, 15);
	m->duplicate_of_name = state_col_str(s, 16);
}

int
state_pending(struct state *st, int64_t account, struct state_msg **rows,
    size_t *n, char **err)
{
	const char *what = "listing pending messages";
	struct state_msg *v = NULL;
	size_t k = 0, cap = 0;
	sqlite3_stmt *s;
	int rc;

	if ((s = stmt(st, S_PENDING, what, err)) == NULL)
		return -1;
	if (sqlite3_bind_int64(s, 1, account) != SQLITE_OK) {
		fail(st, what, err);
		done(s);
		return -1;
	}
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (k == cap) {
			cap = cap ? 2 * cap : 16;
			v = xreallocarray(v, cap, sizeof *v);
		}
		read_msg(s, &v[k++]);
	}
	if (rc != SQLITE_DONE) {
		fail(st, what, err);
		done(s);
		state_msgs_free(v, k);
		return -1;
	}
	done(s);
	*rows = v;
	*n = k;
	return 0;
}

/* Binds ?1-?5 (account, uidl, size, sha256, message_id): the columns
 * S_PUT_PENDING and S_PUT_DUPLICATE both begin with. */
static int
bind_msg_head(sqlite3_stmt *s, int64_t account, const struct state_msg *m)
{
	int b;

	b = sqlite3_bind_int64(s, 1, account);
	b |= sqlite3_bind_text(s, 2, m->uidl, -1, SQLITE_STATIC);
	b |= sqlite3_bind_int64(s, 3, (int64_t)m->size);
	b |= sqlite3_bind_text(s, 4, m->sha256, -1, SQLITE_STATIC);
	b |= sqlite3_bind_text(s, 5, m->message_id, -1, SQLITE_STATIC);
	return b;
}

void
state_msg_clear(struct state_msg *m)
{
	free(m->uidl);
	free(m->message_id);
	free(m->delivery_key);
	free(m->folder);
	free(m->location);
	free(m->duplicate_of_name);
	memset(m, 0, sizeof *m);
}

void
state_msgs_free(struct state_msg *rows, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		state_msg_clear(&rows[i]);
	free(rows);
}

int
state_find(struct state *st, int64_t account, const char *uidl, struct state_msg *m,
    char **err)
{
	const char *what = "looking up a message";
	sqlite3_stmt *s;
	int b, rc;

	if ((s = stmt(st, S_FIND, what, err)) == NULL)
		return -1;
	b = sqlite3_bind_int64(s, 1, account);
	b |= sqlite3_bind_text(s, 2, uidl, -1, SQLITE_STATIC);
	rc = b == SQLITE_OK ? sqlite3_step(s) : SQLITE_ERROR;
	if (rc == SQLITE_ROW)
		read_msg(s, m);
	else if (rc != SQLITE_DONE)
		fail(st, what, err);
	done(s);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

int
state_put_pending(struct state *st, int64_t account, const struct state_msg *m,
    char **err)
{
	const char *what = "recording a pending message";
	sqlite3_stmt *s;
	int b;

	if (need_transaction(st, what, err) == -1 ||
	    (s = stmt(st, S_PUT_PENDING, what, err)) == NULL)
		return -1;
	b = bind_msg_head(s, account, m);
	b |= sqlite3_bind_text(s, 6, m->delivery_key, -1, SQLITE_STATIC);
	b |= sqlite3_bind_text(s, 7, m->folder, -1, SQLITE_STATIC);
	b |= sqlite3_bind_int64(s, 8, m->fetched_at ? m->fetched_at : (int64_t)time(NULL));
	b |= sqlite3_bind_int64(s, 9, (int64_t)m->pop3_size);
	b |= bind_hex(s, 10, m->header_sha256);
	b |= bind_hex(s, 11, m->body_sha256);
	return run(st, s, b, what, err);
}

int
state_mark_delivered(struct state *st, int64_t account, const char *uidl,
    const char *location, char **err)
{
	return state_mark_delivered_uid(st, account, uidl, location, 0, 0, err);
}

int
state_mark_delivered_uid(struct state *st, int64_t account, const char *uidl,
    const char *location, uint32_t uidvalidity, uint32_t uid, char **err)
{
	const char *what = "marking a message delivered";
	sqlite3_stmt *s;
	int b;

	if (need_transaction(st, what, err) == -1 ||
	    (s = stmt(st, S_MARK_DELIVERED, what, err)) == NULL)
		return -1;
	b = sqlite3_bind_int64(s, 1, account);
	b |= sqlite3_bind_text(s, 2, uidl, -1, SQLITE_STATIC);
	b |= sqlite3_bind_text(s, 3, location, -1, SQLITE_STATIC);
	b |= sqlite3_bind_int64(s, 4, (int64_t)time(NULL));
	b |= bind_uid(s, 5, uidvalidity);
	b |= bind_uid(s, 6, uid);
	if (run(st, s, b, what, err) == -1)
		return -1;
	/* A missing pending row means the protocol was not followed: say so
	 * rather than record a delivery nothing will remember. */
	if (sqlite3_changes(st->db) != 1) {
		*err = xasprintf("%s: UIDL %s has no pending row", what, uidl);
		return -1;
	}
	return 0;
}

int
state_drop_pending(struct state *st, int64_t account, const char *uidl, char **err)
{
	return run_account_text(st, S_DROP_PENDING, account, uidl,
	    "forgetting a pending message", err);
}

int
state_mark_deleted(struct state *st, int64_t account, const char *const *uidls,
    size_t n, char **err)
{
	const char *what = "marking messages deleted";
	int64_t now = (int64_t)time(NULL);
	sqlite3_stmt *s;
	size_t i;
	int b;

	if (need_transaction(st, what, err) == -1 ||
	    (s = stmt(st, S_MARK_DELETED, what, err)) == NULL)
		return -1;
	for (i = 0; i < n; i++) {
		b = sqlite3_bind_int64(s, 1, account);
		b |= sqlite3_bind_text(s, 2, uidls[i], -1, SQLITE_STATIC);
		b |= sqlite3_bind_int64(s, 3, now);
		if (run(st, s, b, what, err) == -1)
			return -1;
	}
	return 0;
}

/*
 * Consolidation (cross-account de-duplication) and the UIDL-reset guard.
 */

int
state_set_store(struct state *st, int64_t account, const char *store, char **err)
{
	bool on;
	int r;

	/* Bookkeeping, as the account's row is (state_account). */
	on = light_on(st);
	r = run_account_text(st, S_SET_STORE, account, store, "recording the account's store",
	    err);
	light_off(st, on);
	return r;
}

int
state_dedup_find(struct state *st, int64_t account, const char *store,
    const char *folder, const char *message_id, const char *body_sha256,
    struct state_msg *orig, int64_t *owner, char **err)
{
	const char *what = "looking for a copy in another account";
	sqlite3_stmt *s;
	int b, rc;

	if ((s = stmt(st, S_DEDUP_FIND, what, err)) == NULL)
		return -1;
	b = sqlite3_bind_int64(s, 1, account);
	b |= sqlite3_bind_text(s, 2, message_id, -1, SQLITE_STATIC);
	b |= sqlite3_bind_text(s, 3, body_sha256, -1, SQLITE_STATIC);
	b |= sqlite3_bind_text(s, 4, store, -1, SQLITE_STATIC);
	b |= sqlite3_bind_text(s, 5, folder, -1, SQLITE_STATIC);
	rc = b == SQLITE_OK ? sqlite3_step(s) : SQLITE_ERROR;
	if (rc == SQLITE_ROW) {
		read_msg(s, orig);
		*owner = sqlite3_column_int64(s, MSG_NCOLUMNS);
	} else if (rc != SQLITE_DONE)
		fail(st, what, err);
	done(s);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

int
state_put_duplicate(struct state *st, int64_t account, const struct state_msg *m,
    const struct state_msg *orig, int64_t owner, char **err)
{
	const char *what = "recording a duplicate message";
	int64_t now = (int64_t)time(NULL);
	sqlite3_stmt *s;
	int b;

	if (need_transaction(st, what, err) == -1 ||
	    (s = stmt(st, S_PUT_DUPLICATE, what, err)) == NULL)
		return -1;
	b = bind_msg_head(s, account, m);
	b |= sqlite3_bind_text(s, 6, orig->delivery_key, -1, SQLITE_STATIC);
	b |= sqlite3_bind_text(s, 7, orig->folder, -1, SQLITE_STATIC);
	b |= sqlite3_bind_text(s, 8, orig->location, -1, SQLITE_STATIC);
	b |= sqlite3_bind_int64(s, 9, m->fetched_at ? m->fetched_at : now);
	b |= sqlite3_bind_int64(s, 10, now);
	b |= sqlite3_bind_int64(s, 11, (int64_t)m->pop3_size);
	b |= bind_hex(s, 12, m->header_sha256);
	b |= bind_hex(s, 13, m->body_sha256);
	b |= bind_uid(s, 14, orig->uidvalidity);
	b |= bind_uid(s, 15, orig->uid);
	b |= sqlite3_bind_int64(s, 16, owner);
	return run(st, s, b, what, err);
}

int
state_has_imported(struct state *st, int64_t account, bool *yes, char **err)
{
	const char *what = "looking for imported messages";
	sqlite3_stmt *s;
	int rc;

	if ((s = stmt(st, S_HAS_IMPORTED, what, err)) == NULL)
		return -1;
	rc = sqlite3_bind_int64(s, 1, account) == SQLITE_OK ? sqlite3_step(s) : SQLITE_ERROR;
	*yes = rc == SQLITE_ROW;
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		fail(st, what, err);
	done(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

/* Fills temp.uidl_in with the server's list (made on first use). */
static int
load_uidls(struct state *st, const char *const *uidls, size_t n, char **err)
{
	const char *what = "loading the server's UIDL list";
	sqlite3_stmt *s;
	size_t i;
	int b;

	if (st->stmt[S_TMP_CLEAR] == NULL &&
	    exec(st, temp_schema, "creating the temporary UIDL table", err) == -1)
		return -1;
	if (run_id(st, S_TMP_CLEAR, what, err) == -1)
		return -1;
	if ((s = stmt(st, S_TMP_ADD, what, err)) == NULL)
		return -1;
	for (i = 0; i < n; i++) {
		b = sqlite3_bind_int64(s, 1, (int64_t)i);
		b |= sqlite3_bind_text(s, 2, uidls[i], -1, SQLITE_STATIC);
		if (run(st, s, b, what, err) == -1)
			return -1;
	}
	return 0;
}

/* One S_ADOPT per fingerprint; the server's list is in temp.uidl_in. */
static int
adopt_each(struct state *st, int64_t account, const struct state_fp *fps, size_t n,
    bool *adopted, size_t *n_adopted, char **err)
{
	const char *what = "adopting new UIDLs";
	sqlite3_stmt *s;
	int b;

	if ((s = stmt(st, S_ADOPT, what, err)) == NULL)
		return -1;
	for (size_t i = 0; i < n; i++) {
		b = sqlite3_bind_int64(s, 1, account);
		b |= sqlite3_bind_text(s, 2, fps[i].uidl, -1, SQLITE_STATIC);
		b |= sqlite3_bind_int64(s, 3, (int64_t)fps[i].size);
		b |= sqlite3_bind_text(s, 4, fps[i].header_sha256, -1, SQLITE_STATIC);
		if (run(st, s, b, what, err) == -1)
			return -1;
		adopted[i] = sqlite3_changes(st->db) == 1;
		*n_adopted += adopted[i];
	}
	return 0;
}

int
state_adopt_uidls(struct state *st, int64_t account, const char *const *server,
    size_t n_server, const struct state_fp *fps, size_t n, bool *adopted,
    size_t *n_adopted, char **err)
{
	const char *what = "adopting new UIDLs";

	*n_adopted = 0;
	if (need_transaction(st, what, err) == -1 ||
	    load_uidls(st, server, n_server, err) == -1)
		return -1;
	return adopt_each(st, account, fps, n, adopted, n_adopted, err);
}

int
state_note_uidl_reset(struct state *st, int64_t account, const char *warning,
    char **err)
{
	const char *what = "recording the UIDL reset";
	sqlite3_stmt *s;
	int b;

	if ((s = stmt(st, S_UIDL_RESET, what, err)) == NULL)
		return -1;
	b = sqlite3_bind_int64(s, 1, account);
	b |= sqlite3_bind_text(s, 2, warning, -1, SQLITE_STATIC);
	b |= sqlite3_bind_int64(s, 3, (int64_t)time(NULL));
	return run(st, s, b, what, err);
}

/*
 * What a session retrieved, skipped messages, the server's facts and the
 * schedule (schema 4).
 */

int
state_not_stored(struct state *st, int64_t account, const char *const *uidls, size_t n,
    size_t **idx, size_t *n_idx, char **err)
{
	return uidl_query(st, S_STORED_UIDLS, account, 0, PICK_UNLISTED, uidls, n, idx, n_idx,
	    "finding retrieved messages not stored", err);
}

int
state_has_uidls(struct state *st, int64_t account, const char *except_prefix, bool *yes,
    char **err)
{
	const char *what = "looking for stored UIDLs";
	sqlite3_stmt *s;
	int b, rc;

	if ((s = stmt(st, S_HAS_UIDLS, what, err)) == NULL)
		return -1;
	b = sqlite3_bind_int64(s, 1, account);
	b |= sqlite3_bind_text(s, 2, except_prefix, -1, SQLITE_STATIC);
	rc = b == SQLITE_OK ? sqlite3_step(s) : SQLITE_ERROR;
	*yes = rc == SQLITE_ROW;
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		fail(st, what, err);
	done(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

int
state_skip(struct state *st, int64_t account, const char *uidl, uint64_t pop3_size,
    const char *reason, char **err)
{
	const char *what = "recording a skipped message";
	sqlite3_stmt *s;
	int b;

	if ((s = stmt(st, S_SKIP_PUT, what, err)) == NULL)
		return -1;
	b = sqlite3_bind_int64(s, 1, account);
	b |= sqlite3_bind_text(s, 2, uidl, -1, SQLITE_STATIC);
	b |= sqlite3_bind_int64(s, 3, (int64_t)pop3_size);
	b |= sqlite3_bind_text(s, 4, reason, -1, SQLITE_STATIC);
	b |= sqlite3_bind_int64(s, 5, (int64_t)time(NULL));
	return run_light(st, s, b, what, err);
}

int
state_skip_clear(struct state *st, int64_t account, const char *uidl, char **err)
{
	return run_account_text(st, S_SKIP_CLEAR, account, uidl,
	    "forgetting a skipped message", err);
}

int
state_skip_prune(struct state *st, int64_t account, const char *const *uidls, size_t n,
    char **err)
{
	const char *what = "forgetting skipped messages no longer on the server";
	struct state_skip *sk = NULL;
	struct strsort so;
	size_t nsk = 0, p;
	bool outer;
	int r = 0;

	if (state_skipped(st, account, &sk, &nsk, err) == -1)
		return -1;
	if (nsk == 0)
		return 0;
	if (sp_begin(st, &outer, what, err) == -1) {
		state_skips_free(sk, nsk);
		return -1;
	}
	strsort_init(&so, uidls, sizeof *uidls, 0, n);
	for (size_t i = 0; r == 0 && i < nsk; i++) {
		p = strsort_lower(&so, sk[i].uidl);
		if (p == n || strcmp(uidls[strsort_at(&so, p)], sk[i].uidl) != 0)
			r = state_skip_clear(st, account, sk[i].uidl, err);
	}
	strsort_free(&so);
	state_skips_free(sk, nsk);
	return sp_end(st, outer, r, what, err);
}

void
state_skips_free(struct state_skip *rows, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(rows[i].uidl);
		free(rows[i].reason);
	}
	free(rows);
}

int
state_skipped(struct state *st, int64_t account, struct state_skip **rows, size_t *n,
    char **err)
{
	const char *what = "listing skipped messages";
	struct state_skip *v = NULL;
	size_t k = 0, cap = 0;
	sqlite3_stmt *s;
	int rc;

	*rows = NULL;
	*n = 0;
	if ((s = stmt(st, S_SKIP_LIST, what, err)) == NULL)
		return -1;
	rc = sqlite3_bind_int64(s, 1, account) == SQLITE_OK ? SQLITE_ROW : SQLITE_ERROR;
	while (rc == SQLITE_ROW && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (k == cap) {
			cap = cap ? 2 * cap : 8;
			v = xreallocarray(v, cap, sizeof *v);
		}
		v[k].uidl = state_col_str(s, 0);
		v[k].pop3_size = (uint64_t)sqlite3_column_int64(s, 1);
		v[k].reason = state_col_str(s, 2);
		v[k].first_at = sqlite3_column_int64(s, 3);
		v[k].last_at = sqlite3_column_int64(s, 4);
		v[k].times = (unsigned long)sqlite3_column_int64(s, 5);
		k++;
	}
	if (rc != SQLITE_DONE) {
		fail(st, what, err);
		done(s);
		state_skips_free(v, k);
		return -1;
	}
	done(s);
	*rows = v;
	*n = k;
	return 0;
}

static int first_row(struct state *st, enum stmt_id id, int64_t account,
    sqlite3_stmt **out, char **err);

/* Binds NULL when v is the "none" value. */
static int
bind_opt(sqlite3_stmt *s, int i, int64_t v, int64_t none)
{
	return v == none ? sqlite3_bind_null(s, i) : sqlite3_bind_int64(s, i, v);
}

int
state_note_login(struct state *st, int64_t account, const char *mechanism,
    long login_delay, long expire, int64_t not_before, char **err)
{
	const char *what = "recording the login";
	sqlite3_stmt *s;
	int b;

	if ((s = stmt(st, S_LOGIN, what, err)) == NULL)
		return -1;
	b = sqlite3_bind_int64(s, 1, account);
	b |= sqlite3_bind_text(s, 2, mechanism, -1, SQLITE_STATIC);
	b |= bind_opt(s, 3, login_delay, -1);
	b |= bind_opt(s, 4, expire, STATE_EXPIRE_NONE);
	b |= bind_opt(s, 5, not_before, 0);
	return run_light(st, s, b, what, err);
}

int
state_set_not_before(struct state *st, int64_t account, int64_t not_before, char **err)
{
	const char *what = "recording when the server allows a login";
	sqlite3_stmt *s;
	int b;

	if ((s = stmt(st, S_NOT_BEFORE, what, err)) == NULL)
		return -1;
	b = sqlite3_bind_int64(s, 1, account);
	b |= sqlite3_bind_int64(s, 2, not_before);
	return run_light(st, s, b, what, err);
}

int
state_pass_end(struct state *st, int64_t account, bool failed, int64_t next_poll_at,
    char **err)
{
	const char *what = "recording the next poll";
	sqlite3_stmt *s;
	int b;

	if ((s = stmt(st, failed ? S_PASS_FAILED : S_PASS_OK, what, err)) == NULL)
		return -1;
	b = sqlite3_bind_int64(s, 1, account);
	b |= sqlite3_bind_int64(s, 2, next_poll_at);
	if (failed)
		b |= sqlite3_bind_int64(s, 3, (int64_t)time(NULL));
	return run(st, s, b, what, err);
}

int
state_schedule(struct state *st, int64_t account, struct state_sched *sc, char **err)
{
	sqlite3_stmt *s;
	int r;

	memset(sc, 0, sizeof *sc);
	sc->login_delay = -1;
	sc->server_expire = STATE_EXPIRE_NONE;
	if ((r = first_row(st, S_SCHEDULE, account, &s, err)) == -1)
		return -1;
	if (r == 1) {
		sc->not_before = sqlite3_column_int64(s, 0);
		sc->next_poll_at = sqlite3_column_int64(s, 1);
		sc->failures = (unsigned long)sqlite3_column_int64(s, 2);
		sc->failing_since = sqlite3_column_int64(s, 3);
		if (sqlite3_column_type(s, 4) != SQLITE_NULL)
			sc->login_delay = (long)sqlite3_column_int64(s, 4);
		if (sqlite3_column_type(s, 5) != SQLITE_NULL)
			sc->server_expire = (long)sqlite3_column_int64(s, 5);
	}
	done(s);
	return 0;
}

/*
 * The poll log and status.
 */

int
state_poll_log(struct state *st, int64_t account, const struct state_poll *p, char **err)
{
	const char *what = "writing the poll log";
	sqlite3_stmt *s;
	bool outer;
	int b, r = -1;

	if (sp_begin(st, &outer, what, err) == -1)
		return -1;
	if ((s = stmt(st, S_POLL_ADD, what, err)) == NULL)
		goto out;
	b = sqlite3_bind_int64(s, 1, account);
	b |= sqlite3_bind_int64(s, 2, p->started);
	b |= sqlite3_bind_int64(s, 3, p->finished);
	b |= sqlite3_bind_int(s, 4, p->ok);
	b |= sqlite3_bind_int64(s, 5, (int64_t)p->imported);
	b |= sqlite3_bind_int64(s, 6, (int64_t)p->deleted);
	b |= sqlite3_bind_int64(s, 7, (int64_t)p->bytes);
	b |= sqlite3_bind_text(s, 8, p->error, -1, SQLITE_STATIC);
	b |= sqlite3_bind_int64(s, 9, (int64_t)p->server_deleted);
	b |= sqlite3_bind_int64(s, 10, (int64_t)p->skipped);
	if (run(st, s, b, what, err) == -1 ||
	    (s = stmt(st, S_POLL_PRUNE, what, err)) == NULL)
		goto out;
	b = sqlite3_bind_int64(s, 1, account);
	b |= sqlite3_bind_int(s, 2, POLL_LOG_KEEP - 1);
	r = run(st, s, b, "pruning the poll log", err);
out:
	return sp_end(st, outer, r, what, err);
}

/* Binds ?1 = account to the cached statement id and steps it to its
 * first row: 1 a row, 0 none, -1 error. */
static int
first_row(struct state *st, enum stmt_id id, int64_t account, sqlite3_stmt **out,
    char **err)
{
	const char *what = "reading the account's status";
	sqlite3_stmt *s;
	int rc;

	if ((s = stmt(st, id, what, err)) == NULL)
		return -1;
	*out = s;
	rc = sqlite3_bind_int64(s, 1, account) == SQLITE_OK ? sqlite3_step(s) : SQLITE_ERROR;
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	fail(st, what, err);
	done(s);
	return -1;
}

static int
status_polls(struct state *st, int64_t account, struct state_status *t, char **err)
{
	sqlite3_stmt *s;
	int r;

	if ((r = first_row(st, S_ST_LAST, account, &s, err)) == -1)
		return -1;
	if (r == 1) {
		t->has_poll = true;
		t->last.started = sqlite3_column_int64(s, 0);
		t->last.finished = sqlite3_column_int64(s, 1);
		t->last.ok = sqlite3_column_int(s, 2) != 0;
		t->last.imported = (unsigned long)sqlite3_column_int64(s, 3);
		t->last.deleted = (unsigned long)sqlite3_column_int64(s, 4);
		t->last.bytes = (uint64_t)sqlite3_column_int64(s, 5);
		t->last.error = state_col_str(s, 6);
		t->last.server_deleted = (unsigned long)sqlite3_column_int64(s, 7);
		t->last.skipped = (unsigned long)sqlite3_column_int64(s, 8);
	}
	done(s);
	if ((r = first_row(st, S_ST_LAST_OK, account, &s, err)) == -1)
		return -1;
	if (r == 1)
		t->last_ok = sqlite3_column_int64(s, 0);
	done(s);
	if ((r = first_row(st, S_ST_LAST_ERROR, account, &s, err)) == -1)
		return -1;
	if (r == 1) {
		t->last_error = state_col_str(s, 0);
		t->last_error_at = sqlite3_column_int64(s, 1);
	}
	done(s);
	return 0;
}

static int
status_counts(struct state *st, int64_t account, struct state_status *t, char **err)
{
	sqlite3_stmt *s;
	unsigned long c, elsewhere;
	int r, rc;

	if ((r = first_row(st, S_ST_ACCOUNT, account, &s, err)) == -1)
		return -1;
	if (r == 1) {
		t->no_uidl = sqlite3_column_int(s, 0) != 0;
		t->uidl_resets = (unsigned long)sqlite3_column_int64(s, 1);
		t->warning = state_col_str(s, 2);
		t->warning_at = sqlite3_column_int64(s, 3);
		t->last_auth = state_col_str(s, 4);
		t->skipped = (unsigned long)sqlite3_column_int64(s, 5);
	}
	done(s);
	if ((r = first_row(st, S_ST_COUNTS, account, &s, err)) == -1)
		return -1;
	for (rc = r == 1 ? SQLITE_ROW : SQLITE_DONE; rc == SQLITE_ROW; rc = sqlite3_step(s)) {
		c = (unsigned long)sqlite3_column_int64(s, 1);
		t->imap_locations += (unsigned long)sqlite3_column_int64(s, 2);
		t->duplicates += (unsigned long)sqlite3_column_int64(s, 3);
		elsewhere = (unsigned long)sqlite3_column_int64(s, 4);
		t->seen_elsewhere += elsewhere;
		switch (sqlite3_column_int(s, 0)) {
		case STATE_PENDING:
			t->pending = c;
			break;
		case STATE_DELIVERED:
			t->on_server = c;
			t->imported += c - elsewhere;
			t->imported_bytes += (uint64_t)sqlite3_column_int64(s, 5);
			break;
		case STATE_DELETED:
			t->imported += c - elsewhere;
			t->imported_bytes += (uint64_t)sqlite3_column_int64(s, 5);
			t->deleted = c;
			break;
		}
	}
	if (rc != SQLITE_DONE)
		fail(st, "counting the account's messages", err);
	done(s);
	return rc == SQLITE_DONE ? 0 : -1;
}

int
state_status(struct state *st, int64_t account, struct state_status *s, char **err)
{
	const char *what = "reading the account's status";
	bool outer;
	int r = -1;

	memset(s, 0, sizeof *s);
	/* One read transaction, so that the figures agree with each other. */
	if (sp_begin(st, &outer, what, err) == -1)
		return -1;
	if (status_polls(st, account, s, err) == 0 && status_counts(st, account, s, err) == 0 &&
	    state_schedule(st, account, &s->sched, err) == 0)
		r = 0;
	if ((r = sp_end(st, outer, r, what, err)) == -1)
		state_status_free(s);
	return r;
}

void
state_status_free(struct state_status *s)
{
	free(s->last.error);
	free(s->last_error);
	free(s->warning);
	free(s->last_auth);
	s->last.error = NULL;
	s->last_error = NULL;
	s->warning = NULL;
	s->last_auth = NULL;
}

sqlite3 *
state_sqlite(struct state *st)
{
	return st->db;
}

int
state_error(struct state *st, const char *what, char **err)
{
	return fail(st, what, err);
}

sqlite3_stmt *
state_stmt(struct state *st, const char *q, const char *what, char **err)
{
	size_t i;

	for (i = 0; i < st->n_kept; i++)
		if (st->kept[i].sql == q)
			break;
	if (i == st->n_kept) {
		st->kept = xreallocarray(st->kept, st->n_kept + 1, sizeof *st->kept);
		st->kept[st->n_kept++] = (struct kept_stmt){ .sql = q, .s = NULL };
	}
	return keep(st, q, &st->kept[i].s, what, err);
}

void
state_stmt_done(sqlite3_stmt *s)
{
	if (s != NULL)
		done(s);
}

/*
 * Another tool's state (import-state).
 */

int
state_mark_seen_elsewhere(struct state *st, int64_t account, const char *tool,
    const char *const *uidls, size_t n, size_t *added, char **err)
{
	const char *what = "recording another tool's UIDLs";
	char *key = xasprintf(STATE_SEEN_ELSEWHERE "%s", tool);
	int64_t now = (int64_t)time(NULL);
	sqlite3_stmt *s = NULL;
	bool outer;
	int b, r = -1;

	*added = 0;
	if (sp_begin(st, &outer, what, err) == -1) {
		free(key);
		return -1;
	}
	/* Used once per import: not one of the connection's cached statements. */
	if (sqlite3_prepare_v2(st->db, "INSERT OR IGNORE INTO messages(account_id, uidl,"
	    " size, sha256, message_id, delivery_key, folder, location, state,"
	    " fetched_at, delivered_at) VALUES (?1, ?2, 0, '', NULL, ?3, '', NULL, 1,"
	    " ?4, ?4)", -1, &s, NULL) != SQLITE_OK) {
		fail(st, what, err);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		b = sqlite3_bind_int64(s, 1, account);
		b |= sqlite3_bind_text(s, 2, uidls[i], -1, SQLITE_STATIC);
		b |= sqlite3_bind_text(s, 3, key, -1, SQLITE_STATIC);
		b |= sqlite3_bind_int64(s, 4, now);
		if (run(st, s, b, what, err) == -1)
			goto out;
		*added += (size_t)sqlite3_changes(st->db);
	}
	r = 0;
out:
	sqlite3_finalize(s);
	free(key);
	return sp_end(st, outer, r, what, err);
}

bool
state_msg_seen_elsewhere(const struct state_msg *m)
{
	return m->delivery_key != NULL && strncmp(m->delivery_key, STATE_SEEN_ELSEWHERE,
	    strlen(STATE_SEEN_ELSEWHERE)) == 0;
}

int
state_dir_give(const char *state_dir, uid_t uid, gid_t gid, char **err)
{
	static const char *const suffix[] = { "", "-wal", "-shm" };
	struct state *st;
	int r = 0;

	/* Made now if missing, with its schema, so that it is root's to give. */
	if (state_open_dir(state_dir, true, &st, err) == -1)
		return -1;
	state_close(st);
	for (size_t i = 0; i < sizeof suffix / sizeof *suffix && r == 0; i++) {
		char *p = xasprintf("%s/state.db%s", state_dir, suffix[i]);

		if (chown(p, uid, gid) == -1 && errno != ENOENT)
			r = err_errno(err, "giving %s to uid %ld", p, (long)uid);
		free(p);
	}
	return r;
}

/* Unit tests of store/state.c against real SQLite files in a temp dir,
 * and of the paths the state and the outbox own (store/outbox.c). */
#include "store/state.h"

#include <sys/stat.h>

#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/io.h"
#include "lib/xmalloc.h"
#include "store/outbox.h"
#include "tests/unit/check.h"

static char tmpdir[] = "/tmp/test_state.XXXXXX";

static char *
db_path(const char *name)
{
	return xasprintf("%s/%s/state.db", tmpdir, name);
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Runs SQL on the file through a second connection, as another process
 * (or a tampering user) would. */
static void
raw_sql(const char *path, const char *q)
{
	sqlite3 *db;

	if (sqlite3_open(path, &db) != SQLITE_OK ||
	    sqlite3_exec(db, q, NULL, NULL, NULL) != SQLITE_OK)
		printf("  raw_sql: %s\n", sqlite3_errmsg(db));
	sqlite3_close(db);
}

static long long
raw_int(const char *path, const char *q)
{
	sqlite3_stmt *s;
	sqlite3 *db;
	long long v = -1;

	sqlite3_open(path, &db);
	if (sqlite3_prepare_v2(db, q, -1, &s, NULL) == SQLITE_OK) {
		if (sqlite3_step(s) == SQLITE_ROW)
			v = sqlite3_column_int64(s, 0);
		sqlite3_finalize(s);
	}
	sqlite3_close(db);
	return v;
}

static struct state *
open_ok(const char *path)
{
	struct state *st = NULL;
	char *err = NULL;

	if (state_open(path, &st, &err) == -1) {
		printf("  state_open: %s\n", err);
		free(err);
	}
	return st;
}

/* A new state directory sd, made and opened; NULL (a failed check) when
 * it cannot be. */
static struct state *
open_dir_ok(const char *sd)
{
	struct state *st = NULL;
	char *err = NULL;

	CHECK_INT(state_make_dir(sd, &err), 0);
	CHECK_INT(state_open_dir(sd, true, &st, &err), 0);
	free(err);
	return st;
}

static struct state_msg
msg(const char *uidl, const char *key)
{
	struct state_msg m = { 0 };

	m.uidl = (char *)uidl;
	m.size = 1234;
	memset(m.sha256, 'a', 64);
	m.message_id = (char *)"<id@example.com>";
	m.delivery_key = (char *)key;
	m.folder = (char *)"INBOX";
	m.fetched_at = 1000;
	return m;
}

/* Writes pending rows for uidls[0..n) and, if deliver, marks them
 * delivered, each in one transaction. */
static int
import(struct state *st, int64_t acct, const char *const *uidls, size_t n, int deliver)
{
	char *err = NULL;
	struct state_msg m;
	size_t i;

	if (state_begin(st, &err) == -1)
		goto fail;
	for (i = 0; i < n; i++) {
		m = msg(uidls[i], uidls[i]);
		if (state_put_pending(st, acct, &m, &err) == -1)
			goto fail;
	}
	if (state_commit(st, &err) == -1 || !deliver)
		goto out;
	if (state_begin(st, &err) == -1)
		goto fail;
	for (i = 0; i < n; i++)
		if (state_mark_delivered(st, acct, uidls[i], "new/x", &err) == -1)
			goto fail;
	if (state_commit(st, &err) == -1)
		goto fail;
out:
	return err == NULL ? 0 : -1;
fail:
	printf("  import: %s\n", err);
	free(err);
	state_rollback(st);
	return -1;
}

static void
test_open_migrate_reopen(void)
{
	char *path = db_path("open");
	struct state *st = open_ok(path);

	CHECK(st != NULL);
	state_close(st);
	CHECK_INT(raw_int(path, "PRAGMA user_version"), 6);
	CHECK_INT(raw_int(path, "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
	    " AND name IN ('accounts', 'messages', 'poll_log', 'outbox', 'outbox_rcpt',"
	    " 'outbox_body')"), 6);
	CHECK_INT(raw_int(path, "SELECT count(*) FROM pragma_table_info('messages')"
	    " WHERE name IN ('header_sha256', 'uidvalidity', 'uid')"), 3);
	CHECK_INT(raw_int(path, "SELECT count(*) FROM pragma_table_info('outbox')"
	    " WHERE name = 'body'"), 0);
	CHECK_INT(raw_int(path, "SELECT count(*) FROM sqlite_master WHERE type = 'index'"
	    " AND name IN ('messages_state', 'messages_message_id', 'poll_log_account')"), 3);
	CHECK_INT(raw_int(path, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'"), 1);
	st = open_ok(path);
	CHECK(st != NULL);
	state_close(st);
	CHECK_INT(raw_int(path, "PRAGMA user_version"), 6);
	free(path);
}

static void
test_refuse_newer(void)
{
	char *path = db_path("newer"), *err = NULL, *want;
	struct state *st = open_ok(path);

	state_close(st);
	raw_sql(path, "PRAGMA user_version = 99");
	st = NULL;
	CHECK_INT(state_open(path, &st, &err), -1);
	CHECK(st == NULL);
	want = xasprintf("state database %s: schema version 99 is newer", path);
	CHECK(err != NULL && strncmp(err, want, strlen(want)) == 0);
	free(want);
	free(err);
	err = NULL;
	/* Not a database at all: a clear error, not a crash. */
	free(path);
	path = xasprintf("%s/garbage.db", tmpdir);
	FILE *f = fopen(path, "w");
	fputs("this is not an SQLite database, not even close to one....\n", f);
	fclose(f);
	CHECK_INT(state_open(path, &st, &err), -1);
	CHECK(err != NULL);
	free(err);
	free(path);
}

static void
test_accounts(void)
{
	char *path = db_path("acct"), *err = NULL;
	struct state *st = open_ok(path);
	int64_t a = 0, b = 0, a2 = 0;

	CHECK_INT(state_account(st, "work", &a, &err), 0);
	CHECK_INT(state_account(st, "home", &b, &err), 0);
	CHECK_INT(state_account(st, "work", &a2, &err), 0);
	CHECK(a > 0 && b > 0 && a != b);
	CHECK_INT(a, a2);
	state_close(st);
	st = open_ok(path);
	CHECK_INT(state_account(st, "home", &a2, &err), 0);
	CHECK_INT(a2, b);
	/* Looked up without creating it. */
	CHECK_INT(state_account_id(st, "work", &a2, &err), 1);
	CHECK_INT(a2, a);
	CHECK_INT(state_account_id(st, "nobody", &a2, &err), 0);
	CHECK_INT(raw_int(path, "SELECT count(*) FROM accounts"), 2);
	state_close(st);
	free(path);
}

static void
test_transitions(void)
{
	char *path = db_path("trans"), *err = NULL;
	struct state *st = open_ok(path);
	struct state_msg m = msg("u1", "KEY1"), got;
	const char *del[] = { "u1", "unknown" };
	int64_t a;

	state_account(st, "a", &a, &err);
	/* Outside a transaction the writes are refused. */
	CHECK_INT(state_put_pending(st, a, &m, &err), -1);
	CHECK(err != NULL && strstr(err, "not inside a transaction") != NULL);
	free(err);
	err = NULL;

	CHECK_INT(state_begin(st, &err), 0);
	CHECK_INT(state_put_pending(st, a, &m, &err), 0);
	CHECK_INT(state_commit(st, &err), 0);
	CHECK_INT(state_find(st, a, "u1", &got, &err), 1);
	CHECK_INT(got.state, STATE_PENDING);
	CHECK_STR(got.delivery_key, "KEY1");
	CHECK_STR(got.message_id, "<id@example.com>");
	CHECK_STR(got.sha256, m.sha256);
	CHECK_INT(got.size, 1234);
	CHECK(got.location == NULL);
	state_msg_clear(&got);

	CHECK_INT(state_begin(st, &err), 0);
	CHECK_INT(state_mark_delivered(st, a, "u1", ".Work/new/KEY1", &err), 0);
	CHECK_INT(state_commit(st, &err), 0);
	CHECK_INT(state_find(st, a, "u1", &got, &err), 1);
	CHECK_INT(got.state, STATE_DELIVERED);
	CHECK_STR(got.location, ".Work/new/KEY1");
	CHECK(got.delivered_at >= time(NULL) - 5);
	state_msg_clear(&got);

	/* Delivered twice is a broken protocol, and an error. */
	CHECK_INT(state_begin(st, &err), 0);
	CHECK_INT(state_mark_delivered(st, a, "u1", "x", &err), -1);
	CHECK(err != NULL && strstr(err, "no pending row") != NULL);
	free(err);
	err = NULL;
	CHECK_INT(state_mark_deleted(st, a, del, 2, &err), 0);
	CHECK_INT(state_commit(st, &err), 0);
	CHECK_INT(state_find(st, a, "u1", &got, &err), 1);
	CHECK_INT(got.state, STATE_DELETED);
	state_msg_clear(&got);
	CHECK_INT(state_find(st, a, "unknown", &got, &err), 0);
	CHECK_INT(raw_int(path, "SELECT count(*) FROM messages WHERE deleted_at IS NOT NULL"), 1);
	state_close(st);
	free(path);
}

static char **
make_uidls(size_t n)
{
	char **v = xcalloc(n, sizeof *v);
	size_t i;

	for (i = 0; i < n; i++)
		v[i] = xasprintf("UID%08zx-%zu", i * 2654435761u % 100000, i);
	return v;
}

static void
free_uidls(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void
test_filter_new_10k(void)
{
	enum { N = 10000 };
	char *path = db_path("filter"), *err = NULL, **u = make_uidls(N);
	const char *const *cu = (const char *const *)u;
	struct state *st = open_ok(path);
	size_t *idx = NULL, n_idx = 0, i, k;
	const char *known[3000];
	int64_t a, b;
	double t0;
	int ok = 1;

	state_account(st, "a", &a, &err);
	state_account(st, "b", &b, &err);
	/* Every third UIDL is known: pending, delivered or deleted. */
	for (i = 0, k = 0; i < N && k < 3000; i += 3)
		known[k++] = u[i];
	CHECK_INT(import(st, a, known, 1000, 0), 0);
	CHECK_INT(import(st, a, known + 1000, 2000, 1), 0);
	CHECK_INT(state_begin(st, &err), 0);
	CHECK_INT(state_mark_deleted(st, a, known + 2000, 1000, &err), 0);
	CHECK_INT(state_commit(st, &err), 0);

	t0 = now_ms();
	CHECK_INT(state_filter_new(st, a, cu, N, &idx, &n_idx, &err), 0);
	printf("  filter_new: %d UIDLs (3000 known) in %.1f ms\n", N, now_ms() - t0);
	CHECK_INT(n_idx, N - 3000);
	for (i = 0, k = 0; i < N; i++) {
		int is_known = i % 3 == 0 && i / 3 < 3000;

		if (!is_known && (k >= n_idx || idx[k++] != i))
			ok = 0;
	}
	CHECK(ok);
	free(idx);

	/* Another account knows none of them; a second call reuses the
	 * temp table. */
	CHECK_INT(state_filter_new(st, b, cu, N, &idx, &n_idx, &err), 0);
	CHECK_INT(n_idx, N);
	free(idx);
	CHECK_INT(state_filter_new(st, a, cu, 0, &idx, &n_idx, &err), 0);
	CHECK_INT(n_idx, 0);
	free(idx);
	/* Inside a caller's transaction too. */
	CHECK_INT(state_begin(st, &err), 0);
	CHECK_INT(state_filter_new(st, a, cu, 10, &idx, &n_idx, &err), 0);
	CHECK_INT(state_commit(st, &err), 0);
	CHECK_INT(n_idx, 6);
	free(idx);
	state_close(st);
	free_uidls(u, N);
	free(path);
}

/* The whole import path at scale: 10,000 messages in batches of 100,
 * each batch one pending and one delivered transaction. */
static void
test_import_10k(void)
{
	enum { N = 10000, BATCH = 100 };
	char *path = db_path("import"), *err = NULL, **u = make_uidls(N);
	const char *const *cu = (const char *const *)u;
	struct state *st = open_ok(path);
	struct state_status s;
	size_t i;
	int64_t a;
	double t0;

	state_account(st, "a", &a, &err);
	t0 = now_ms();
	for (i = 0; i < N; i += BATCH)
		if (import(st, a, cu + i, BATCH, 1) == -1)
			break;
	printf("  import: %d messages in batches of %d (2 fsync'd commits each) in %.0f ms\n",
	    N, BATCH, now_ms() - t0);
	CHECK_INT(state_status(st, a, &s, &err), 0);
	CHECK_INT(s.imported, N);
	CHECK_INT(s.on_server, N);
	CHECK_INT(s.pending, 0);
	state_status_free(&s);
	state_close(st);
	free_uidls(u, N);
	free(path);
}

static void
test_due_for_delete(void)
{
	char *path = db_path("due"), *err = NULL;
	const char *u[] = { "p", "d-old", "d-new", "x-old", "unknown" };
	const char *gone[] = { "x-old" };
	struct state *st = open_ok(path);
	size_t *idx = NULL, n_idx = 0;
	int64_t a, b;

	state_account(st, "a", &a, &err);
	state_account(st, "b", &b, &err);
	CHECK_INT(import(st, a, u, 1, 0), 0);
	CHECK_INT(import(st, a, u + 1, 3, 1), 0);
	CHECK_INT(import(st, b, u + 1, 1, 1), 0);
	CHECK_INT(state_begin(st, &err), 0);
	CHECK_INT(state_mark_deleted(st, a, gone, 1, &err), 0);
	CHECK_INT(state_commit(st, &err), 0);
	raw_sql(path, "UPDATE messages SET delivered_at = 100 WHERE uidl LIKE '%-old';"
	    "UPDATE messages SET delivered_at = 200 WHERE uidl = 'd-new'");

	CHECK_INT(state_due_for_delete(st, a, u, 5, 99, &idx, &n_idx, &err), 0);
	CHECK_INT(n_idx, 0);
	free(idx);
	CHECK_INT(state_due_for_delete(st, a, u, 5, 150, &idx, &n_idx, &err), 0);
	CHECK_INT(n_idx, 2);
	if (n_idx == 2) {
		CHECK_INT(idx[0], 1);
		CHECK_INT(idx[1], 3);
	}
	free(idx);
	CHECK_INT(state_due_for_delete(st, a, u, 5, 200, &idx, &n_idx, &err), 0);
	CHECK_INT(n_idx, 3);
	free(idx);
	/* Account b delivered only d-old, long ago. */
	CHECK_INT(state_due_for_delete(st, b, u, 5, time(NULL), &idx, &n_idx, &err), 0);
	CHECK_INT(n_idx, 1);
	if (n_idx == 1)
		CHECK_INT(idx[0], 1);
	free(idx);
	state_close(st);
	free(path);
}

static void
test_pending_and_drop(void)
{
	char *path = db_path("pending"), *err = NULL;
	const char *u[] = { "p1", "p2", "d1" };
	struct state *st = open_ok(path);
	struct state_msg *rows = NULL;
	size_t n = 0;
	int64_t a, b;

	state_account(st, "a", &a, &err);
	state_account(st, "b", &b, &err);
	CHECK_INT(import(st, a, u, 2, 0), 0);
	CHECK_INT(import(st, a, u + 2, 1, 1), 0);
	CHECK_INT(import(st, b, u, 1, 0), 0);
	CHECK_INT(state_pending(st, a, &rows, &n, &err), 0);
	CHECK_INT(n, 2);
	if (n == 2) {
		CHECK_STR(rows[0].uidl, "p1");
		CHECK_STR(rows[1].uidl, "p2");
		CHECK_STR(rows[1].delivery_key, "p2");
		CHECK_STR(rows[1].folder, "INBOX");
		CHECK_INT(rows[1].state, STATE_PENDING);
	}
	state_msgs_free(rows, n);

	CHECK_INT(state_drop_pending(st, a, "p1", &err), 0);
	/* A delivered row is never dropped. */
	CHECK_INT(state_drop_pending(st, a, "d1", &err), 0);
	CHECK_INT(state_pending(st, a, &rows, &n, &err), 0);
	CHECK_INT(n, 1);
	state_msgs_free(rows, n);
	CHECK_INT(raw_int(path, "SELECT count(*) FROM messages WHERE uidl = 'd1'"), 1);
	CHECK_INT(state_pending(st, b, &rows, &n, &err), 0);
	CHECK_INT(n, 1);
	state_msgs_free(rows, n);
	state_close(st);
	free(path);
}

static void
test_status(void)
{
	char *path = db_path("status"), *err = NULL;
	const char *u[] = { "a", "b", "c", "d" };
	struct state *st = open_ok(path);
	struct state_poll ok1 = { 100, 110, true, 3, 0, 3000, NULL, 0, 0 };
	struct state_poll bad = { 200, 210, false, 0, 0, 0, (char *)"connection refused", 0, 0 };
	struct state_poll ok2 = { 300, 310, true, 1, 1, 100, NULL, 20, 2 };
	struct state_status s;
	int64_t a, b;

	state_account(st, "a", &a, &err);
	state_account(st, "b", &b, &err);
	CHECK_INT(state_status(st, a, &s, &err), 0);
	CHECK(!s.has_poll);
	CHECK(s.last_error == NULL);
	CHECK_INT(s.last_ok, 0);
	state_status_free(&s);

	CHECK_INT(import(st, a, u, 1, 0), 0);
	CHECK_INT(import(st, a, u + 1, 3, 1), 0);
	CHECK_INT(state_begin(st, &err), 0);
	CHECK_INT(state_mark_deleted(st, a, u + 3, 1, &err), 0);
	CHECK_INT(state_commit(st, &err), 0);
	CHECK_INT(state_set_no_uidl(st, a, true, &err), 0);
	CHECK_INT(state_poll_log(st, a, &ok1, &err), 0);
	CHECK_INT(state_poll_log(st, a, &bad, &err), 0);
	CHECK_INT(state_poll_log(st, a, &ok2, &err), 0);

	CHECK_INT(state_status(st, a, &s, &err), 0);
	CHECK(s.has_poll);
	CHECK_INT(s.last.started, 300);
	CHECK_INT(s.last.finished, 310);
	CHECK(s.last.ok);
	CHECK_INT(s.last.imported, 1);
	CHECK_INT(s.last.deleted, 1);
	CHECK_INT(s.last.bytes, 100);
	CHECK(s.last.error == NULL);
	CHECK_INT(s.last.server_deleted, 20);
	CHECK_INT(s.last.skipped, 2);
	CHECK_INT(s.last_ok, 310);
	CHECK_STR(s.last_error, "connection refused");
	CHECK_INT(s.last_error_at, 210);
	CHECK_INT(s.imported, 3);
	CHECK_INT(s.pending, 1);
	CHECK_INT(s.on_server, 2);
	CHECK(s.no_uidl);
	state_status_free(&s);

	CHECK_INT(state_status(st, b, &s, &err), 0);
	CHECK(!s.has_poll && !s.no_uidl && s.imported == 0);
	state_status_free(&s);
	state_close(st);
	free(path);
}

/* The poll log keeps a bounded history, but never loses the newest error
 * nor the newest success. */
static void
test_poll_log_pruned(void)
{
	char *path = db_path("prune"), *err = NULL;
	struct state *st = open_ok(path);
	struct state_poll p = { 0, 0, false, 0, 0, 0, (char *)"old failure", 0, 0 };
	struct state_status s;
	int64_t a, b;
	int i;

	state_account(st, "a", &a, &err);
	state_account(st, "b", &b, &err);
	CHECK_INT(state_poll_log(st, a, &p, &err), 0);
	CHECK_INT(state_poll_log(st, b, &p, &err), 0);
	p.error = NULL;
	p.ok = true;
	for (i = 1; i <= 1500; i++) {
		p.started = p.finished = i;
		if (state_poll_log(st, a, &p, &err) == -1)
			break;
	}
	CHECK_INT(raw_int(path, "SELECT count(*) FROM poll_log WHERE account_id = 1"), 1001);
	CHECK_INT(raw_int(path, "SELECT count(*) FROM poll_log WHERE account_id = 2"), 1);
	CHECK_INT(state_status(st, a, &s, &err), 0);
	CHECK_STR(s.last_error, "old failure");
	CHECK_INT(s.last_ok, 1500);
	state_status_free(&s);
	state_close(st);
	free(path);
}

static void
test_rollback(void)
{
	char *path = db_path("rollback"), *err = NULL;
	struct state *st = open_ok(path);
	struct state_msg m = msg("r1", "K"), got;
	struct state_status s;
	int64_t a;

	state_account(st, "a", &a, &err);
	CHECK_INT(state_begin(st, &err), 0);
	CHECK_INT(state_put_pending(st, a, &m, &err), 0);
	state_rollback(st);
	state_rollback(st);	/* harmless outside a transaction */
	CHECK_INT(state_find(st, a, "r1", &got, &err), 0);
	CHECK_INT(state_status(st, a, &s, &err), 0);
	CHECK_INT(s.pending, 0);
	state_status_free(&s);
	state_close(st);
	CHECK_INT(raw_int(path, "SELECT count(*) FROM messages"), 0);
	/* Nor does a transaction the process never committed. */
	st = open_ok(path);
	CHECK_INT(state_begin(st, &err), 0);
	CHECK_INT(state_put_pending(st, a, &m, &err), 0);
	state_close(st);
	CHECK_INT(raw_int(path, "SELECT count(*) FROM messages"), 0);
	free(path);
}

/* WAL: a second connection (status, another process) reads while a
 * pass holds the write transaction, and sees only committed rows. */
static void
test_concurrent_reader(void)
{
	char *path = db_path("wal"), *err = NULL;
	struct state *w = open_ok(path), *r = open_ok(path);
	struct state_msg m = msg("c1", "K");
	const char *u[] = { "c1" };
	struct state_status s;
	size_t *idx = NULL, n_idx = 0;
	int64_t a, a2;

	state_account(w, "a", &a, &err);
	state_account(r, "a", &a2, &err);
	CHECK_INT(a, a2);
	CHECK_INT(state_begin(w, &err), 0);
	CHECK_INT(state_put_pending(w, a, &m, &err), 0);
	CHECK_INT(state_status(r, a, &s, &err), 0);
	CHECK_INT(s.pending, 0);
	state_status_free(&s);
	CHECK_INT(state_filter_new(r, a, u, 1, &idx, &n_idx, &err), 0);
	CHECK_INT(n_idx, 1);
	free(idx);
	CHECK_INT(state_commit(w, &err), 0);
	CHECK_INT(state_filter_new(r, a, u, 1, &idx, &n_idx, &err), 0);
	CHECK_INT(n_idx, 0);
	free(idx);
	state_close(r);
	state_close(w);
	free(path);
}

/* A delivered row with a fingerprint and a body hash, in its own
 * transactions. */
static void
put_delivered(struct state *st, int64_t acct, const char *uidl, uint64_t size,
    char h, char b, uint32_t uid)
{
	struct state_msg m = msg(uidl, uidl);
	char *err = NULL;

	m.pop3_size = size;
	memset(m.header_sha256, h, 64);
	memset(m.body_sha256, b, 64);
	CHECK_INT(state_begin(st, &err), 0);
	CHECK_INT(state_put_pending(st, acct, &m, &err), 0);
	CHECK_INT(state_commit(st, &err), 0);
	CHECK_INT(state_begin(st, &err), 0);
	CHECK_INT(state_mark_delivered_uid(st, acct, uidl, "new/K", uid ? 7 : 0, uid, &err), 0);
	CHECK_INT(state_commit(st, &err), 0);
}

static void
test_dedup(void)
{
	char *path = db_path("dedup"), *err = NULL, body[65];
	struct state *st = open_ok(path);
	struct state_msg m = msg("b1", "KEYB"), got;
	struct state_status ss;
	int64_t a, b, c, d, owner = 0;

	state_account(st, "a", &a, &err);
	state_account(st, "b", &b, &err);
	state_account(st, "c", &c, &err);
	state_account(st, "d", &d, &err);
	CHECK_INT(state_set_store(st, a, "maildir:/x", &err), 0);
	CHECK_INT(state_set_store(st, b, "maildir:/x", &err), 0);
	CHECK_INT(state_set_store(st, c, "maildir:/y", &err), 0);
	CHECK_INT(state_set_store(st, d, "maildir:/x", &err), 0);
	put_delivered(st, a, "a1", 100, 'h', 'b', 42);
	memset(body, 'b', 64);
	body[64] = '\0';
	/* Found for b (same store), not for a itself, c (another store), or
	 * another body. */
	CHECK_INT(state_dedup_find(st, b, "maildir:/x", "INBOX", "<id@example.com>", body, &got,
	    &owner, &err), 1);
	CHECK_INT(owner, a);
	CHECK_INT(got.uid, 42);
	CHECK_STR(got.location, "new/K");
	CHECK_INT(state_dedup_find(st, a, "maildir:/x", "INBOX", "<id@example.com>", body, &m,
	    &owner, &err), 0);
	CHECK_INT(state_dedup_find(st, c, "maildir:/y", "INBOX", "<id@example.com>", body, &m,
	    &owner, &err), 0);
	CHECK_INT(state_dedup_find(st, b, "maildir:/x", "INBOX", "<id@example.com>", "ff", &m,
	    &owner, &err), 0);
	/* b records its UIDL at a's copy. */
	m = msg("b1", "KEYB");
	memset(m.body_sha256, 'b', 64);
	CHECK_INT(state_begin(st, &err), 0);
	CHECK_INT(state_put_duplicate(st, b, &m, &got, owner, &err), 0);
	CHECK_INT(state_commit(st, &err), 0);
	state_msg_clear(&got);
	CHECK_INT(state_find(st, b, "b1", &got, &err), 1);
	CHECK_INT(got.state, STATE_DELIVERED);
	CHECK_INT(got.duplicate_of, a);
	CHECK_STR(got.duplicate_of_name, "a");
	CHECK_STR(got.delivery_key, "a1");
	CHECK_INT(got.uidvalidity, 7);
	state_msg_clear(&got);
	CHECK_INT(state_status(st, b, &ss, &err), 0);
	CHECK_INT(ss.duplicates, 1);
	CHECK_INT(ss.imap_locations, 1);
	CHECK_INT(ss.imported, 1);
	state_status_free(&ss);
	/* A third account finds the original, never a duplicate. */
	CHECK_INT(state_dedup_find(st, d, "maildir:/x", "INBOX", "<id@example.com>", body, &got,
	    &owner, &err), 1);
	CHECK_INT(owner, a);
	state_msg_clear(&got);
	/* The folder is part of the scope: a copy in INBOX is not where d's
	 * mail for "Work" goes. */
	CHECK_INT(state_dedup_find(st, d, "maildir:/x", "Work", "<id@example.com>", body, &got,
	    &owner, &err), 0);
	CHECK(err == NULL);
	state_close(st);
	free(path);
}

static void
test_adopt(void)
{
	char *path = db_path("adopt"), *err = NULL, h[65], k[65];
	struct state *st = open_ok(path);
	const char *server[] = { "n1", "n2", "n3", "n4" };
	const char *server2[] = { "n1", "n2", "n4", "x" };
	struct state_fp fps[4];
	struct state_status ss;
	struct state_msg got;
	bool adopted[4], yes;
	size_t n;
	int64_t a, e;

	state_account(st, "a", &a, &err);
	state_account(st, "empty", &e, &err);
	CHECK_INT(state_has_imported(st, e, &yes, &err), 0);
	CHECK(!yes);
	put_delivered(st, a, "old1", 100, 'h', 'b', 0);
	put_delivered(st, a, "old2", 100, 'h', 'b', 0);
	put_delivered(st, a, "old3", 100, 'k', 'c', 0);
	CHECK_INT(state_has_imported(st, a, &yes, &err), 0);
	CHECK(yes);
	memset(h, 'h', 64);
	memset(k, 'k', 64);
	h[64] = k[64] = '\0';
	/* Two identical known messages and a third copy: two adopted. */
	fps[0] = (struct state_fp){ "n1", 100, h };
	fps[1] = (struct state_fp){ "n2", 100, h };
	fps[2] = (struct state_fp){ "n3", 100, h };
	fps[3] = (struct state_fp){ "n4", 100, k };
	CHECK_INT(state_begin(st, &err), 0);
	CHECK_INT(state_adopt_uidls(st, a, server, 4, fps, 4, adopted, &n, &err), 0);
	CHECK_INT(state_note_uidl_reset(st, a, "renumbered", &err), 0);
	CHECK_INT(state_commit(st, &err), 0);
	CHECK_INT(n, 3);
	CHECK(adopted[0] && adopted[1] && !adopted[2] && adopted[3]);
	CHECK_INT(state_find(st, a, "n4", &got, &err), 1);
	CHECK_STR(got.delivery_key, "old3");
	state_msg_clear(&got);
	CHECK_INT(state_find(st, a, "old1", &got, &err), 0);
	/* Rows whose UIDL is on the server are never taken. */
	fps[0] = (struct state_fp){ "x", 100, h };
	CHECK_INT(state_begin(st, &err), 0);
	CHECK_INT(state_adopt_uidls(st, a, server2, 4, fps, 1, adopted, &n, &err), 0);
	CHECK_INT(state_commit(st, &err), 0);
	CHECK_INT(n, 0);
	CHECK_INT(state_status(st, a, &ss, &err), 0);
	CHECK_INT(ss.uidl_resets, 1);
	CHECK_STR(ss.warning, "renumbered");
	CHECK(ss.warning_at >= time(NULL) - 5);
	state_status_free(&ss);
	CHECK(err == NULL);
	state_close(st);
	free(path);
}

/* Adoption at scale: 10,000 renumbered messages in one transaction. */
static void
test_adopt_10k(void)
{
	enum { N = 10000 };
	char *path = db_path("adopt10k"), *err = NULL;
	struct state *st = open_ok(path);
	static char uidl[N][16], nuidl[N][16], hex[N][65];
	const char *server[N];
	struct state_fp *fps = xcalloc(N, sizeof *fps);
	bool *adopted = xcalloc(N, sizeof *adopted);
	struct state_msg m;
	double t0;
	size_t n = 0;
	int64_t a;

	state_account(st, "a", &a, &err);
	CHECK_INT(state_begin(st, &err), 0);
	for (int i = 0; i < N; i++) {
		snprintf(uidl[i], sizeof uidl[i], "old%d", i);
		snprintf(nuidl[i], sizeof nuidl[i], "new%d", i);
		snprintf(hex[i], sizeof hex[i], "%064d", i);
		m = msg(uidl[i], uidl[i]);
		m.pop3_size = 1000 + (uint64_t)(i % 7);
		memcpy(m.header_sha256, hex[i], 65);
		state_put_pending(st, a, &m, &err);
		state_mark_delivered(st, a, uidl[i], "new/x", &err);
		server[i] = nuidl[i];
		fps[i] = (struct state_fp){ nuidl[i], m.pop3_size, hex[i] };
	}
	CHECK_INT(state_commit(st, &err), 0);
	t0 = now_ms();
	CHECK_INT(state_begin(st, &err), 0);
	CHECK_INT(state_adopt_uidls(st, a, server, N, fps, N, adopted, &n, &err), 0);
	CHECK_INT(state_commit(st, &err), 0);
	printf("  adopt: %d renumbered messages in %.1f ms\n", N, now_ms() - t0);
	CHECK_INT(n, N);
	CHECK(err == NULL);
	free(fps);
	free(adopted);
	state_close(st);
	free(path);
}

/* STATE_DIR and STATE_DIR/state.db have one owner: state_make_dir and
 * state_open_dir; readers do not create the database. */
static void
test_state_dir(void)
{
	char *dir = xasprintf("%s/sd/a/b", tmpdir), *db = xasprintf("%s/state.db", dir);
	struct state *st = (struct state *)&st;
	struct stat sb;
	char *err = NULL;

	CHECK_INT(state_open_dir(dir, false, &st, &err), 0);
	CHECK(st == NULL && err == NULL);
	CHECK_INT(state_make_dir(dir, &err), 0);
	CHECK(stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode) && (sb.st_mode & 0777) == 0700);
	CHECK_INT(state_make_dir(dir, &err), 0);
	CHECK_INT(state_open_dir(dir, false, &st, &err), 0);
	CHECK(st == NULL && stat(db, &sb) == -1);
	CHECK_INT(state_open_dir(dir, true, &st, &err), 0);
	CHECK(st != NULL && stat(db, &sb) == 0);
	state_close(st);
	CHECK_INT(state_open_dir(dir, false, &st, &err), 0);
	CHECK(st != NULL);
	state_close(st);
	free(db);
	/* Below a file: an error, and nothing is made. */
	db = xasprintf("%s/state.db/x", dir);
	CHECK_INT(state_make_dir(db, &err), -1);
	CHECK(err != NULL && strstr(err, "state.db") != NULL);
	free(err);
	free(db);
	free(dir);
}

/* Makes path a regular file two days old. */
static void
old_file(const char *path)
{
	struct timespec old[2] = { { time(NULL) - 2 * 86400, 0 }, { time(NULL) - 2 * 86400, 0 } };
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	CHECK(fd != -1 && futimens(fd, old) == 0);
	close(fd);
}

/* The spool belongs to the outbox: an anonymous file per submission,
 * linked in by outbox_enqueue when the message is too big for its row
 * (store/outbox.h, OUTBOX_INLINE_MAX); leftovers swept. */
static void
test_spool(void)
{
	char *sd = xasprintf("%s/sp", tmpdir), *spool = xasprintf("%s/spool", sd);
	char *tmp = xasprintf("%s/spool/tmp", sd), *p, *err = NULL;
	char *rcpts[] = { "bob@example.net" }, pad[1024];
	struct outbox_msg *v = NULL;
	struct state *st = NULL;
	size_t n = 0, removed = 99;
	int64_t id = 0;
	int fd;

	if ((st = open_dir_ok(sd)) == NULL) {
		free(sd);
		free(spool);
		free(tmp);
		return;
	}
	fd = outbox_spool_file(sd, &err);
	CHECK(fd != -1);
	CHECK_INT(check_count_entries(tmp), 0);	/* anonymous: nothing to leave behind */
	CHECK_INT(io_write_all(fd, "Subject: x\r\n\r\nbody\r\n", 20), 0);
	memset(pad, 'x', sizeof pad - 2);
	memcpy(pad + sizeof pad - 2, "\r\n", 2);
	for (size_t k = 0; k <= OUTBOX_INLINE_MAX / sizeof pad; k++)
		CHECK_INT(io_write_all(fd, pad, sizeof pad), 0);
	CHECK_INT(outbox_enqueue(st, sd, "acct", NULL, "a@example.org", rcpts, 1, fd, &id,
	    &err), 0);
	close(fd);
	CHECK(id > 0);
	CHECK_INT(outbox_list(st, sd, &v, &n, &err), 0);
	CHECK(n == 1 && !v[0].in_db && v[0].size > OUTBOX_INLINE_MAX);
	CHECK(n == 1 && v[0].spool_path != NULL &&
	    strncmp(v[0].spool_path, spool, strlen(spool)) == 0);
	CHECK(n == 1 && access(v[0].spool_path, R_OK) == 0);
	/* The queued file is referenced: kept however old. */
	if (n == 1)
		old_file(v[0].spool_path);
	/* Leftovers: an old unreferenced message, an old temp file, a new one. */
	p = xasprintf("%s/1700000000.%032d.1.1.msg", spool, 0);
	old_file(p);
	free(p);
	p = xasprintf("%s/tmp.left", tmp);
	old_file(p);
	free(p);
	p = xasprintf("%s/tmp.fresh", tmp);
	fd = open(p, O_WRONLY | O_CREAT, 0600);
	close(fd);
	free(p);
	CHECK_INT(outbox_sweep_orphans(st, sd, 86400, &removed, &err), 0);
	CHECK_INT(removed, 2);
	CHECK_INT(check_count_entries(tmp), 1);
	CHECK(n == 1 && access(v[0].spool_path, R_OK) == 0);
	outbox_msgs_free(v, n);
	/* The other names the outbox gives out. */
	p = outbox_spool_area(sd, "imap");
	CHECK(strcmp(p + strlen(sd), "/spool/imap") == 0);
	free(p);
	p = outbox_bounce_path(sd, 42);
	CHECK(strcmp(p + strlen(sd), "/spool/42.dsn") == 0);
	free(p);
	state_close(st);
	free(sd);
	free(spool);
	free(tmp);
}

/* import-state's rows: seen and delivered by another tool, no location,
 * no hashes. They keep UIDLs from being fetched, never match dedup, are
 * never adopted by the UIDL-reset guard nor make it run, count apart in
 * status, and are due for deletion like delivered rows. */
static void
test_seen_elsewhere(void)
{
	char *path = db_path("elsewhere"), *err = NULL, body[65];
	const char *seen[] = { "s1", "s2", "a1" };
	const char *server[] = { "a1", "s1", "s2", "n1" };
	const char *fresh_server[] = { "z1" };
	struct state *st = open_ok(path);
	struct state_fp fp;
	struct state_status ss;
	struct state_msg got;
	size_t added = 9, *idx = NULL, n = 0;
	int64_t a, b, owner;
	bool yes, adopted;

	state_account(st, "a", &a, &err);
	state_account(st, "b", &b, &err);
	CHECK_INT(state_set_store(st, a, "maildir:/x", &err), 0);
	CHECK_INT(state_set_store(st, b, "maildir:/x", &err), 0);
	CHECK_INT(state_mark_seen_elsewhere(st, b, "mpop", seen, 2, &added, &err), 0);
	CHECK_INT(added, 2);
	CHECK_INT(state_has_imported(st, b, &yes, &err), 0);
	CHECK(!yes);
	/* An own delivered row is left as it is. */
	put_delivered(st, a, "a1", 100, 'h', 'b', 0);
	CHECK_INT(state_mark_seen_elsewhere(st, a, "fetchmail", seen, 3, &added, &err), 0);
	CHECK_INT(added, 2);
	CHECK_INT(state_find(st, a, "a1", &got, &err), 1);
	CHECK_STR(got.delivery_key, "a1");
	CHECK(!state_msg_seen_elsewhere(&got));
	state_msg_clear(&got);
	CHECK_INT(state_find(st, a, "s1", &got, &err), 1);
	CHECK(state_msg_seen_elsewhere(&got));
	CHECK_STR(got.delivery_key, "import:fetchmail");
	CHECK_INT(got.state, STATE_DELIVERED);
	CHECK(got.location == NULL && got.message_id == NULL);
	state_msg_clear(&got);
	/* Only n1 is new. */
	CHECK_INT(state_filter_new(st, a, server, 4, &idx, &n, &err), 0);
	CHECK_INT(n, 1);
	CHECK_INT(n > 0 ? idx[0] : 99, 3);
	free(idx);
	/* Due for deletion with the account's own. */
	CHECK_INT(state_due_for_delete(st, a, server, 4, INT64_MAX, &idx, &n, &err), 0);
	CHECK_INT(n, 3);
	free(idx);
	/* Dedup never finds them: no Message-ID, no body hash. */
	memset(body, 'b', 64);
	body[64] = '\0';
	CHECK_INT(state_dedup_find(st, a, "maildir:/x", "", "<id@example.com>", body, &got,
	    &owner, &err), 0);
	/* The guard never adopts them: no fingerprint (empty or not). */
	fp = (struct state_fp){ "z1", 0, "" };
	CHECK_INT(state_begin(st, &err), 0);
	CHECK_INT(state_adopt_uidls(st, b, fresh_server, 1, &fp, 1, &adopted, &n, &err), 0);
	CHECK_INT(state_commit(st, &err), 0);
	CHECK_INT(n, 0);
	CHECK(!adopted);
	CHECK_INT(state_status(st, a, &ss, &err), 0);
	CHECK_INT(ss.imported, 1);
	CHECK_INT(ss.seen_elsewhere, 2);
	CHECK_INT(ss.on_server, 3);
	state_status_free(&ss);
	/* Deleted from the server: still apart from imported. */
	CHECK_INT(state_begin(st, &err), 0);
	CHECK_INT(state_mark_deleted(st, a, server, 3, &err), 0);
	CHECK_INT(state_commit(st, &err), 0);
	CHECK_INT(state_status(st, a, &ss, &err), 0);
	CHECK_INT(ss.imported, 1);
	CHECK_INT(ss.seen_elsewhere, 2);
	CHECK_INT(ss.on_server, 0);
	state_status_free(&ss);
	CHECK(err == NULL);
	state_close(st);
	free(path);
}

/* A version 3 database (made by undoing migration 4 on a fresh one, rows
 * kept) is migrated to 4 with its rows. */
static void
test_migrate_from_3(void)
{
	char *path = db_path("from3"), *err = NULL;
	const char *u[] = { "u1", "u2" };
	struct state *st = open_ok(path);
	struct state_sched sc;
	int64_t a;

	state_account(st, "a", &a, &err);
	import(st, a, u, 2, 1);
	state_close(st);
	raw_sql(path, "DROP TABLE skipped;"
	    "ALTER TABLE accounts DROP COLUMN login_delay;"
	    "ALTER TABLE accounts DROP COLUMN server_expire;"
	    "ALTER TABLE accounts DROP COLUMN not_before;"
	    "ALTER TABLE accounts DROP COLUMN failures;"
	    "ALTER TABLE accounts DROP COLUMN failing_since;"
	    "ALTER TABLE accounts DROP COLUMN next_poll_at;"
	    "ALTER TABLE accounts DROP COLUMN last_auth;"
	    "ALTER TABLE poll_log DROP COLUMN server_deleted;"
	    "ALTER TABLE poll_log DROP COLUMN skipped;"
	    "DROP TABLE outbox_body;"
	    "PRAGMA user_version = 3");
	CHECK_INT(raw_int(path, "SELECT count(*) FROM pragma_table_info('accounts')"
	    " WHERE name = 'not_before'"), 0);
	st = open_ok(path);
	CHECK(st != NULL);
	CHECK_INT(raw_int(path, "PRAGMA user_version"), 6);
	CHECK_INT(raw_int(path, "SELECT count(*) FROM messages WHERE state = 1"), 2);
	CHECK_INT(state_schedule(st, a, &sc, &err), 0);
	CHECK(sc.not_before == 0 && sc.next_poll_at == 0 && sc.failures == 0);
	CHECK_INT(sc.login_delay, -1);
	CHECK_INT(sc.server_expire, STATE_EXPIRE_NONE);
	CHECK(err == NULL);
	state_close(st);
	free(path);
}

/* A version 5 database kept a small queued message in outbox.body: at 6
 * it is in outbox_body, the column gone, and the message reads back. */
static void
test_migrate_from_5(void)
{
	char *sd = xasprintf("%s/from5", tmpdir), *path = xasprintf("%s/state.db", sd);
	char *rcpts[] = { "bob@example.net" }, *err = NULL, buf[64];
	struct outbox_msg *v = NULL;
	struct state *st = NULL;
	size_t n = 0;
	ssize_t r;
	int64_t id = 0;
	int fd;

	if ((st = open_dir_ok(sd)) == NULL) {
		free(sd);
		free(path);
		return;
	}
	fd = outbox_spool_file(sd, &err);
	CHECK_INT(io_write_all(fd, "Subject: x\r\n\r\nbody\r\n", 20), 0);
	CHECK_INT(outbox_enqueue(st, sd, "acct", NULL, "a@example.org", rcpts, 1, fd, &id,
	    &err), 0);
	close(fd);
	state_close(st);
	raw_sql(path, "ALTER TABLE outbox ADD COLUMN body BLOB;"
	    "UPDATE outbox SET body = (SELECT body FROM outbox_body b WHERE b.id = outbox.id);"
	    "DROP TABLE outbox_body;"
	    "PRAGMA user_version = 5");
	CHECK_INT(raw_int(path, "SELECT count(*) FROM outbox WHERE body IS NOT NULL"), 1);
	CHECK_INT(state_open_dir(sd, true, &st, &err), 0);
	CHECK_INT(raw_int(path, "PRAGMA user_version"), 6);
	CHECK_INT(raw_int(path, "SELECT count(*) FROM pragma_table_info('outbox')"
	    " WHERE name = 'body'"), 0);
	CHECK_INT(raw_int(path, "SELECT count(*) FROM outbox_body"), 1);
	CHECK_INT(outbox_list(st, sd, &v, &n, &err), 0);
	CHECK(n == 1 && v[0].id == id && v[0].in_db && v[0].size == 20);
	if (n == 1 && (fd = outbox_msg_open(st, &v[0], &err)) != -1) {
		r = read(fd, buf, sizeof buf);
		CHECK(r == 20 && memcmp(buf, "Subject: x\r\n\r\nbody\r\n", 20) == 0);
		close(fd);
	} else
		CHECK(0);
	outbox_msgs_free(v, n);
	CHECK(err == NULL);
	state_close(st);
	free(sd);
	free(path);
}

/* Skipped messages: recorded, counted again, listed newest first,
 * cleared once imported, pruned when the server no longer lists them;
 * status counts them. */
static void
test_skipped(void)
{
	char *path = db_path("skipped"), *err = NULL;
	const char *server[] = { "s1", "s3" };
	struct state *st = open_ok(path);
	struct state_skip *k = NULL;
	struct state_status ss;
	size_t n = 0;
	int64_t a, b;

	state_account(st, "a", &a, &err);
	state_account(st, "b", &b, &err);
	CHECK_INT(state_skip(st, a, "s1", 5000, "RETR refused: -ERR no", &err), 0);
	CHECK_INT(state_skip(st, a, "s2", 7000, "larger than max_message_size", &err), 0);
	CHECK_INT(state_skip(st, b, "s1", 10, "other account", &err), 0);
	CHECK_INT(state_skip(st, a, "s1", 5001, "RETR refused: -ERR again", &err), 0);
	CHECK_INT(state_skipped(st, a, &k, &n, &err), 0);
	CHECK_INT(n, 2);
	for (size_t i = 0; i < n; i++)
		if (strcmp(k[i].uidl, "s1") == 0) {
			CHECK_INT(k[i].times, 2);
			CHECK_INT(k[i].pop3_size, 5001);
			CHECK_STR(k[i].reason, "RETR refused: -ERR again");
			CHECK(k[i].first_at <= k[i].last_at && k[i].first_at > 0);
		}
	state_skips_free(k, n);
	CHECK_INT(state_status(st, a, &ss, &err), 0);
	CHECK_INT(ss.skipped, 2);
	state_status_free(&ss);
	/* s2 is gone from the server; s1 is imported at last. */
	CHECK_INT(state_skip_prune(st, a, server, 2, &err), 0);
	CHECK_INT(state_skipped(st, a, &k, &n, &err), 0);
	CHECK(n == 1 && strcmp(k[0].uidl, "s1") == 0);
	state_skips_free(k, n);
	CHECK_INT(state_skip_clear(st, a, "s1", &err), 0);
	CHECK_INT(state_skipped(st, a, &k, &n, &err), 0);
	CHECK_INT(n, 0);
	state_skips_free(k, n);
	/* The other account's row is untouched. */
	CHECK_INT(state_skipped(st, b, &k, &n, &err), 0);
	CHECK_INT(n, 1);
	state_skips_free(k, n);
	CHECK(err == NULL);
	state_close(st);
	free(path);
}

/* The server's facts and the schedule: a login records LOGIN-DELAY,
 * EXPIRE and not_before; a refusal's backoff never shortens a wait; the
 * failure count goes up and back to 0. */
static void
test_schedule(void)
{
	char *path = db_path("schedule"), *err = NULL;
	struct state *st = open_ok(path);
	struct state_status ss;
	struct state_sched sc;
	int64_t a;

	state_account(st, "a", &a, &err);
	CHECK_INT(state_note_login(st, a, "USER", 600, 0, 5600, &err), 0);
	CHECK_INT(state_schedule(st, a, &sc, &err), 0);
	CHECK_INT(sc.login_delay, 600);
	CHECK_INT(sc.server_expire, 0);
	CHECK_INT(sc.not_before, 5600);
	CHECK_INT(state_set_not_before(st, a, 5000, &err), 0);
	CHECK_INT(state_schedule(st, a, &sc, &err), 0);
	CHECK_INT(sc.not_before, 5600);
	CHECK_INT(state_set_not_before(st, a, 9000, &err), 0);
	CHECK_INT(state_schedule(st, a, &sc, &err), 0);
	CHECK_INT(sc.not_before, 9000);
	CHECK_INT(state_pass_end(st, a, true, 9300, &err), 0);
	CHECK_INT(state_pass_end(st, a, true, 9600, &err), 0);
	CHECK_INT(state_schedule(st, a, &sc, &err), 0);
	CHECK_INT(sc.failures, 2);
	CHECK(sc.failing_since > 0);
	CHECK_INT(sc.next_poll_at, 9600);
	CHECK_INT(state_pass_end(st, a, false, 9900, &err), 0);
	/* EXPIRE NEVER, no LOGIN-DELAY: NULLs read back as "none". */
	CHECK_INT(state_note_login(st, a, "APOP", -1, -1, 0, &err), 0);
	CHECK_INT(state_status(st, a, &ss, &err), 0);
	CHECK_INT(ss.sched.failures, 0);
	CHECK_INT(ss.sched.failing_since, 0);
	CHECK_INT(ss.sched.next_poll_at, 9900);
	CHECK_INT(ss.sched.not_before, 0);
	CHECK_INT(ss.sched.login_delay, -1);
	CHECK_INT(ss.sched.server_expire, -1);
	CHECK_STR(ss.last_auth, "APOP");
	state_status_free(&ss);
	CHECK_INT(state_note_login(st, a, "USER", -1, STATE_EXPIRE_NONE, 0, &err), 0);
	CHECK_INT(state_schedule(st, a, &sc, &err), 0);
	CHECK_INT(sc.server_expire, STATE_EXPIRE_NONE);
	CHECK(err == NULL);
	state_close(st);
	free(path);
}

/* What a session retrieved and the store does not hold: pending rows,
 * no row at all; delivered and deleted rows are stored. Stored UIDLs
 * other than derived ones. */
static void
test_not_stored(void)
{
	char *path = db_path("notstored"), *err = NULL;
	const char *done[] = { "d1", "d2" }, *pend[] = { "p1" };
	const char *got[] = { "d1", "p1", "x", "d2" };
	struct state *st = open_ok(path);
	size_t *idx = NULL, n = 0;
	int64_t a, b;
	bool yes = true;

	state_account(st, "a", &a, &err);
	state_account(st, "b", &b, &err);
	import(st, a, done, 2, 1);
	import(st, a, pend, 1, 0);
	CHECK_INT(state_begin(st, &err), 0);
	CHECK_INT(state_mark_deleted(st, a, done + 1, 1, &err), 0);
	CHECK_INT(state_commit(st, &err), 0);
	CHECK_INT(state_not_stored(st, a, got, 4, &idx, &n, &err), 0);
	CHECK(n == 2 && idx[0] == 1 && idx[1] == 2);
	free(idx);
	CHECK_INT(state_has_uidls(st, a, "nouidl-", &yes, &err), 0);
	CHECK(yes);
	import(st, b, (const char *[]){ "nouidl-5-abc" }, 1, 1);
	CHECK_INT(state_has_uidls(st, b, "nouidl-", &yes, &err), 0);
	CHECK(!yes);
	CHECK(err == NULL);
	state_close(st);
	free(path);
}

int
main(void)
{
	if (!check_tmpdir(tmpdir))
		return 1;
	TEST(test_open_migrate_reopen);
	TEST(test_refuse_newer);
	TEST(test_accounts);
	TEST(test_transitions);
	TEST(test_filter_new_10k);
	TEST(test_import_10k);
	TEST(test_due_for_delete);
	TEST(test_pending_and_drop);
	TEST(test_status);
	TEST(test_poll_log_pruned);
	TEST(test_rollback);
	TEST(test_concurrent_reader);
	TEST(test_dedup);
	TEST(test_adopt);
	TEST(test_adopt_10k);
	TEST(test_state_dir);
	TEST(test_spool);
	TEST(test_seen_elsewhere);
	TEST(test_migrate_from_3);
	TEST(test_migrate_from_5);
	TEST(test_skipped);
	TEST(test_schedule);
	TEST(test_not_stored);
	check_rm_tree(tmpdir);
	CHECK_DONE();
}

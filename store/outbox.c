/* The outbound queue's rows (schema v3, store/state.c) and spool files.
 *
 * Statements are prepared per call, not cached: state_close() closes the
 * connection with sqlite3_close(), which refuses while statements of ours
 * are still unfinalised, and the queue runs a few statements per message,
 * far from any hot path. */
#include "store/outbox.h"
#include "store/state_priv.h"

#include <sys/stat.h>

#include <dirent.h>
#include <sys/random.h>

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/err.h"
#include "lib/hex.h"
#include "lib/io.h"
#include "lib/xmalloc.h"

#define MSG_COLUMNS "o.id, a.name, o.auth_user, o.mail_from, o.spool_file," \
	" o.size, o.created_at, o.next_attempt_at, o.attempts, o.state," \
	" o.sent_copy_done, o.bounce_done, o.last_error"
#define MSG_FROM " FROM outbox o JOIN accounts a ON a.id = o.account_id"
/* Finished, but the Sent copy or the bounce is still to be stored. */
#define UNFILED "(o.state IN (1, 2) AND (o.sent_copy_done = 0 OR o.bounce_done = 0))"

static sqlite3_stmt *
prep(struct state *st, const char *q, const char *what, char **err)
{
	sqlite3_stmt *s = NULL;

	if (sqlite3_prepare_v2(state_sqlite(st), q, -1, &s, NULL) != SQLITE_OK) {
		state_error(st, what, err);
		sqlite3_finalize(s);
		return NULL;
	}
	return s;
}

/* Steps s to its end (a statement without rows) and finalises it. bound
 * is the OR of the bind results. */
static int
run(struct state *st, sqlite3_stmt *s, int bound, const char *what, char **err)
{
	int rc = bound == SQLITE_OK ? sqlite3_step(s) : SQLITE_ERROR;
	int r = 0;

	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		r = state_error(st, what, err);
	sqlite3_finalize(s);
	return r;
}

/*
 * Paths: STATE_DIR/spool/NAME.msg for queued messages, spool/tmp/ for
 * submissions under way, spool/ID.dsn for a bounce being written, and the
 * areas of other users of the spool (spool/imap/).
 */

/* STATE_DIR/spool/name; "STATE_DIR/spool/" for "" (the spool itself, and
 * the path of a message whose file is gone: it names no file). */
static char *
spool_path(const char *state_dir, const char *name)
{
	return xasprintf("%s/spool/%s", state_dir, name);
}

int
outbox_spool_file(const char *state_dir, char **err)
{
	char *dir = spool_path(state_dir, "tmp");
	int fd = -1;

	if (io_mkdir_p(dir, 0700, false, err) != -1)
		fd = io_tmpfile(dir, err);
	free(dir);
	return fd;
}

char *
outbox_spool_area(const char *state_dir, const char *name)
{
	return spool_path(state_dir, name);
}

char *
outbox_bounce_path(const char *state_dir, int64_t id)
{
	return xasprintf("%s/spool/%lld.dsn", state_dir, (long long)id);
}

/*
 * Enqueueing.
 */

/* Copies fd (from its start) into path, for when it cannot be linked. */
static int
copy_into(int fd, const char *path)
{
	char buf[65536];
	ssize_t n;
	int out, r = -1;

	if ((out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) == -1)
		return -1;
	if (lseek(fd, 0, SEEK_SET) == -1)
		goto out;
	while ((n = read(fd, buf, sizeof buf)) > 0)
		if (io_write_all(out, buf, (size_t)n) == -1)
			goto out;
	if (n == 0 && fsync(out) == 0)
		r = 0;
out:
	close(out);
	if (r == -1)
		unlink(path);
	return r;
}

/* Gives the durable file fd a unique name in the spool directory and
 * makes the name durable: a hard link when fd's file can be linked (an
 * O_TMPFILE or a file on the same file system), else a copy. */
static int
spool_link(const char *state_dir, int fd, char **name, char **err)
{
	static atomic_ulong seq;
	char *dir = spool_path(state_dir, ""), *path, proc[64], hex[33];
	unsigned char rnd[16];
	struct timespec ts;
	int r = -1;

	/* 128 random bits: the name is the secret behind the delivery keys
	 * of the message's Sent copy and bounce (bridge/queue_file.c). */
	if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
		*err = xasprintf("no random bytes for the spool name: %s", strerror(errno));
		free(dir);
		*name = NULL;
		return -1;
	}
	hex_encode(rnd, sizeof rnd, hex);
	clock_gettime(CLOCK_REALTIME, &ts);
	*name = xasprintf("%lld.%s.%ld.%lu.msg", (long long)ts.tv_sec, hex,
	    (long)getpid(), atomic_fetch_add(&seq, 1));
	path = spool_path(state_dir, *name);
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	if (mkdir(dir, 0700) == -1 && errno != EEXIST)
		*err = xasprintf("creating %s: %s", dir, strerror(errno));
	else if (fsync(fd) == -1)
		*err = xasprintf("fsync of the message: %s", strerror(errno));
	else if (linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == -1 &&
	    copy_into(fd, path) == -1)
		*err = xasprintf("spooling into %s: %s", dir, strerror(errno));
	else if (io_fsync_dir(dir, err) == 0)
		r = 0;
	if (r == -1) {
		unlink(path);
		free(*name);
		*name = NULL;
	}
	free(path);
	free(dir);
	return r;
}

static int
insert_msg(struct state *st, int64_t account, const char *auth_user,
    const char *mail_from, const char *name, uint64_t size, int64_t *id, char **err)
{
	const char *what = "queueing the message";
	int64_t now = (int64_t)time(NULL);
	sqlite3_stmt *s;
	int b;

	if ((s = prep(st, "INSERT INTO outbox(account_id, auth_user, mail_from,"
	    " spool_file, size, created_at, next_attempt_at, state)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 0)", what, err)) == NULL)
		return -1;
	b = sqlite3_bind_int64(s, 1, account);
	b |= sqlite3_bind_text(s, 2, auth_user, -1, SQLITE_STATIC);
	b |= sqlite3_bind_text(s, 3, mail_from, -1, SQLITE_STATIC);
	b |= sqlite3_bind_text(s, 4, name, -1, SQLITE_STATIC);
	b |= sqlite3_bind_int64(s, 5, (int64_t)size);
	b |= sqlite3_bind_int64(s, 6, now);
	if (run(st, s, b, what, err) == -1)
		return -1;
	*id = sqlite3_last_insert_rowid(state_sqlite(st));
	return 0;
}

/* A recipient given twice is queued once. */
static int
insert_rcpts(struct state *st, int64_t id, char *const *rcpts, size_t n, char **err)
{
	const char *what = "queueing the recipients";
	sqlite3_stmt *s;
	size_t i;
	int b;

	for (i = 0; i < n; i++) {
		if ((s = prep(st, "INSERT OR IGNORE INTO outbox_rcpt(outbox_id, pos,"
		    " rcpt, state) VALUES (?1, ?2, ?3, 0)", what, err)) == NULL)
			return -1;
		b = sqlite3_bind_int64(s, 1, id);
		b |= sqlite3_bind_int64(s, 2, (int64_t)i);
		b |= sqlite3_bind_text(s, 3, rcpts[i], -1, SQLITE_STATIC);
		if (run(st, s, b, what, err) == -1)
			return -1;
	}
	return 0;
}

int
outbox_enqueue(struct state *st, const char *state_dir, const char *account,
    const char *auth_user, const char *mail_from, char *const *rcpts, size_t n_rcpts,
    int fd, int64_t *id, char **err)
{
	struct stat sb;
	char *name = NULL, *path;
	int64_t acc;

	if (n_rcpts == 0) {
		*err = xstrdup("no recipients");
		return -1;
	}
	if (fstat(fd, &sb) == -1) {
		*err = xasprintf("fstat of the message: %s", strerror(errno));
		return -1;
	}
	if (spool_link(state_dir, fd, &name, err) == -1)
		return -1;
	if (state_begin(st, err) == 0) {
		if (state_account(st, account, &acc, err) == 0 &&
		    insert_msg(st, acc, auth_user, mail_from, name, (uint64_t)sb.st_size,
		    id, err) == 0 && insert_rcpts(st, *id, rcpts, n_rcpts, err) == 0 &&
		    state_commit(st, err) == 0) {
			free(name);
			return 0;
		}
		state_rollback(st);
	}
	/* Not committed: nothing refers to the spool file. */
	path = spool_path(state_dir, name);
	unlink(path);
	free(path);
	free(name);
	return -1;
}

/*
 * Reading.
 */

static void
read_msg(sqlite3_stmt *s, const char *state_dir, struct outbox_msg *m)
{
	const unsigned char *f = sqlite3_column_text(s, 4);

	memset(m, 0, sizeof *m);
	m->id = sqlite3_column_int64(s, 0);
	m->account = state_col_str(s, 1);
	m->auth_user = state_col_str(s, 2);
	m->mail_from = state_col_str(s, 3);
	m->spool_path = spool_path(state_dir, f ? (const char *)f : "");
	m->size = (uint64_t)sqlite3_column_int64(s, 5);
	m->created_at = sqlite3_column_int64(s, 6);
	m->next_attempt_at = sqlite3_column_int64(s, 7);
	m->attempts = (unsigned)sqlite3_column_int(s, 8);
	m->state = (enum outbox_state)sqlite3_column_int(s, 9);
	m->sent_copy_done = sqlite3_column_int(s, 10) != 0;
	m->bounce_done = sqlite3_column_int(s, 11) != 0;
	m->last_error = state_col_str(s, 12);
}

static int
read_rcpts(struct state *st, struct outbox_msg *m, char **err)
{
	const char *what = "reading the recipients";
	sqlite3_stmt *s;
	size_t cap = 0;
	int rc;

	if ((s = prep(st, "SELECT rcpt, state, last_code, last_response"
	    " FROM outbox_rcpt WHERE outbox_id = ?1 ORDER BY pos", what, err)) == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, m->id);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct outbox_rcpt *r;

		if (m->n_rcpts == cap) {
			cap = cap ? 2 * cap : 4;
			m->rcpts = xreallocarray(m->rcpts, cap, sizeof *m->rcpts);
		}
		r = &m->rcpts[m->n_rcpts++];
		r->addr = state_col_str(s, 0);
		r->state = (enum outbox_rcpt_state)sqlite3_column_int(s, 1);
		r->last_code = sqlite3_column_int(s, 2);
		r->last_response = state_col_str(s, 3);
	}
	if (rc != SQLITE_DONE)
		state_error(st, what, err);
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* Runs the message query q (?1 bound to arg when q has it) and reads
 * every row with its recipients, in one read transaction. */
static int
select_msgs(struct state *st, const char *state_dir, const char *q, int64_t arg,
    struct outbox_msg **msgs, size_t *n, char **err)
{
	const char *what = "reading the queue";
	struct outbox_msg *v = NULL;
	size_t k = 0, cap = 0, i;
	sqlite3_stmt *s;
	int rc;

	if ((s = prep(st, q, what, err)) == NULL)
		return -1;
	if (sqlite3_bind_parameter_count(s) >= 1)
		sqlite3_bind_int64(s, 1, arg);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (k == cap) {
			cap = cap ? 2 * cap : 8;
			v = xreallocarray(v, cap, sizeof *v);
		}
		read_msg(s, state_dir, &v[k++]);
	}
	if (rc != SQLITE_DONE)
		state_error(st, what, err);
	sqlite3_finalize(s);
	for (i = 0; rc == SQLITE_DONE && i < k; i++)
		if (read_rcpts(st, &v[i], err) == -1)
			rc = SQLITE_ERROR;
	if (rc != SQLITE_DONE) {
		outbox_msgs_free(v, k);
		return -1;
	}
	*msgs = v;
	*n = k;
	return 0;
}

int
outbox_due(struct state *st, const char *state_dir, int64_t now,
    struct outbox_msg **msgs, size_t *n, char **err)
{
	return select_msgs(st, state_dir, "SELECT " MSG_COLUMNS MSG_FROM
	    " WHERE (o.state = 0 AND o.next_attempt_at <= ?1) OR " UNFILED
	    " ORDER BY o.id", now, msgs, n, err);
}

int
outbox_list(struct state *st, const char *state_dir, struct outbox_msg **msgs,
    size_t *n, char **err)
{
	return select_msgs(st, state_dir, "SELECT " MSG_COLUMNS MSG_FROM
	    " WHERE o.state = 0 OR " UNFILED " ORDER BY o.id", 0, msgs, n, err);
}

void
outbox_msg_clear(struct outbox_msg *m)
{
	size_t i;

	free(m->account);
	free(m->auth_user);
	free(m->mail_from);
	free(m->spool_path);
	free(m->last_error);
	for (i = 0; i < m->n_rcpts; i++) {
		free(m->rcpts[i].addr);
		free(m->rcpts[i].last_response);
	}
	free(m->rcpts);
	memset(m, 0, sizeof *m);
}

void
outbox_msgs_free(struct outbox_msg *msgs, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		outbox_msg_clear(&msgs[i]);
	free(msgs);
}

/*
 * Recording results.
 */

static int
update_rcpts(struct state *st, const struct outbox_msg *m, char **err)
{
	const char *what = "recording the recipients' results";
	const struct outbox_rcpt *r;
	sqlite3_stmt *s;
	size_t i;
	int b;

	for (i = 0; i < m->n_rcpts; i++) {
		r = &m->rcpts[i];
		if ((s = prep(st, "UPDATE outbox_rcpt SET state = ?3, last_code = ?4,"
		    " last_response = ?5 WHERE outbox_id = ?1 AND rcpt = ?2", what,
		    err)) == NULL)
			return -1;
		b = sqlite3_bind_int64(s, 1, m->id);
		b |= sqlite3_bind_text(s, 2, r->addr, -1, SQLITE_STATIC);
		b |= sqlite3_bind_int(s, 3, (int)r->state);
		b |= r->last_code ? sqlite3_bind_int(s, 4, r->last_code) :
		    sqlite3_bind_null(s, 4);
		b |= sqlite3_bind_text(s, 5, r->last_response, -1, SQLITE_STATIC);
		if (run(st, s, b, what, err) == -1)
			return -1;
	}
	return 0;
}

/* A finished message needs a Sent copy only when some recipient got it,
 * and a bounce only when some recipient failed: the flag of what is not
 * needed is set now, so that outbox_due() never returns it for that. */
static int
update_msg(struct state *st, const struct outbox_msg *m, enum outbox_state state,
    int64_t next, const char *error, char **err)
{
	const char *what = "recording the delivery attempt";
	sqlite3_stmt *s;
	int b;

	if ((s = prep(st, "UPDATE outbox SET attempts = attempts + 1, state = ?2,"
	    " next_attempt_at = CASE WHEN ?2 = 0 THEN ?3 ELSE next_attempt_at END,"
	    " last_error = ?4,"
	    " finished_at = CASE WHEN ?2 = 0 THEN NULL ELSE ?5 END,"
	    " sent_copy_done = CASE WHEN ?2 <> 0 AND NOT EXISTS (SELECT 1 FROM"
	    "  outbox_rcpt r WHERE r.outbox_id = ?1 AND r.state = 1) THEN 1"
	    "  ELSE sent_copy_done END,"
	    " bounce_done = CASE WHEN ?2 <> 0 AND NOT EXISTS (SELECT 1 FROM"
	    "  outbox_rcpt r WHERE r.outbox_id = ?1 AND r.state = 2) THEN 1"
	    "  ELSE bounce_done END"
	    " WHERE id = ?1", what, err)) == NULL)
		return -1;
	b = sqlite3_bind_int64(s, 1, m->id);
	b |= sqlite3_bind_int(s, 2, (int)state);
	b |= sqlite3_bind_int64(s, 3, next);
	b |= sqlite3_bind_text(s, 4, error, -1, SQLITE_STATIC);
	b |= sqlite3_bind_int64(s, 5, (int64_t)time(NULL));
	return run(st, s, b, what, err);
}

int
outbox_record_attempt(struct state *st, const struct outbox_msg *m,
    enum outbox_state state, int64_t next_attempt_at, const char *error, char **err)
{
	if (state_begin(st, err) == -1)
		return -1;
	if (update_rcpts(st, m, err) == 0 &&
	    update_msg(st, m, state, next_attempt_at, error, err) == 0 &&
	    state_commit(st, err) == 0)
		return 0;
	state_rollback(st);
	return -1;
}

int
outbox_mark_copy_done(struct state *st, int64_t id, bool sent_copy, char **err)
{
	const char *what = "recording the Sent copy or bounce";
	sqlite3_stmt *s;

	s = prep(st, sent_copy ? "UPDATE outbox SET sent_copy_done = 1 WHERE id = ?1" :
	    "UPDATE outbox SET bounce_done = 1 WHERE id = ?1", what, err);
	if (s == NULL)
		return -1;
	return run(st, s, sqlite3_bind_int64(s, 1, id), what, err);
}

int
outbox_flush(struct state *st, char **err)
{
	const char *what = "flushing the queue";
	sqlite3_stmt *s;

	if ((s = prep(st, "UPDATE outbox SET next_attempt_at = 0 WHERE state = 0",
	    what, err)) == NULL)
		return -1;
	return run(st, s, SQLITE_OK, what, err);
}

/*
 * Removing.
 */

/* The spool file name of message id when it is still queued: 1 found,
 * 0 not, -1 error. */
static int
spool_name(struct state *st, int64_t id, char **name, char **err)
{
	const char *what = "looking up the message";
	sqlite3_stmt *s;
	int rc;

	if ((s = prep(st, "SELECT spool_file FROM outbox WHERE id = ?1 AND state = 0",
	    what, err)) == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*name = state_col_str(s, 0);
	else if (rc != SQLITE_DONE)
		state_error(st, what, err);
	sqlite3_finalize(s);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

int
outbox_drop(struct state *st, int64_t id, char **err)
{
	const char *what = "dropping the message";
	sqlite3_stmt *s;
	char *name = NULL;
	int r;

	if (state_begin(st, err) == -1)
		return -1;
	if ((r = spool_name(st, id, &name, err)) != 1)
		goto out;
	r = -1;
	/* outbox_cleanup() removes the spool file. */
	if ((s = prep(st, "UPDATE outbox SET state = 3,"
	    " finished_at = ?2, sent_copy_done = 1, bounce_done = 1 WHERE id = ?1",
	    what, err)) == NULL)
		goto out;
	if (run(st, s, sqlite3_bind_int64(s, 1, id) |
	    sqlite3_bind_int64(s, 2, (int64_t)time(NULL)), what, err) == 0 &&
	    state_commit(st, err) == 0)
		r = 1;
out:
	if (r != 1)
		state_rollback(st);
	free(name);
	return r;
}

static int
spool_unlink(const char *state_dir, const char *name)
{
	char *path;
	int r = 0;

	if (*name == '\0' || strchr(name, '/') != NULL)
		return 0;
	path = spool_path(state_dir, name);
	if (unlink(path) == -1 && errno != ENOENT)
		r = -1;
	free(path);
	return r;
}

int
outbox_cleanup(struct state *st, const char *state_dir, char **err)
{
	const char *what = "cleaning the spool";
	sqlite3_stmt *s, *u;
	int rc;

	if ((s = prep(st, "SELECT id, spool_file FROM outbox WHERE spool_file <> ''"
	    " AND state <> 0 AND sent_copy_done = 1 AND bounce_done = 1", what,
	    err)) == NULL)
		return -1;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(s, 1);

		if (name == NULL || spool_unlink(state_dir, name) == -1)
			continue;
		if ((u = prep(st, "UPDATE outbox SET spool_file = '' WHERE id = ?1",
		    what, NULL)) != NULL)
			run(st, u, sqlite3_bind_int64(u, 1, sqlite3_column_int64(s, 0)),
			    what, NULL);
	}
	if (rc != SQLITE_DONE)
		state_error(st, what, err);
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* True when some outbox row names the spool file name. */
static int
spool_referenced(struct state *st, sqlite3_stmt *q, const char *name, char **err)
{
	int rc;

	sqlite3_reset(q);
	if (sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC) != SQLITE_OK)
		return state_error(st, "sweeping the spool", err);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW)
		return 1;
	return rc == SQLITE_DONE ? 0 : state_error(st, "sweeping the spool", err);
}

/* True when the entry is a regular file at least min_age seconds old. */
static bool
old_file(DIR *d, const char *name, time_t min_age)
{
	struct stat sb;

	return name[0] != '.' && fstatat(dirfd(d), name, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISREG(sb.st_mode) && time(NULL) - sb.st_mtime >= min_age;
}

/* Files in STATE_DIR/spool/tmp older than min_age: no submission keeps a
 * named temp file there for that long. */
static void
sweep_tmp(const char *state_dir, time_t min_age, size_t *removed)
{
	char *dir = spool_path(state_dir, "tmp");
	struct dirent *de;
	DIR *d;

	if ((d = opendir(dir)) != NULL) {
		while ((de = readdir(d)) != NULL)
			if (old_file(d, de->d_name, min_age) &&
			    unlinkat(dirfd(d), de->d_name, 0) == 0)
				(*removed)++;
		closedir(d);
	}
	free(dir);
}

int
outbox_sweep_orphans(struct state *st, const char *state_dir, time_t min_age,
    size_t *removed, char **err)
{
	char *dir = spool_path(state_dir, "");
	struct dirent *de;
	sqlite3_stmt *q;
	DIR *d;
	int r = 0;

	*removed = 0;
	sweep_tmp(state_dir, min_age, removed);
	if ((d = opendir(dir)) == NULL) {
		r = errno == ENOENT ? 0 : -1;
		if (r == -1)
			*err = xasprintf("%s: %s", dir, strerror(errno));
		free(dir);
		return r;
	}
	if ((q = prep(st, "SELECT 1 FROM outbox WHERE spool_file = ?1",
	    "sweeping the spool", err)) == NULL)
		r = -1;
	while (r == 0 && (de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);

		if (len < 5 || strcmp(de->d_name + len - 4, ".msg") != 0 ||
		    !old_file(d, de->d_name, min_age))
			continue;
		if ((r = spool_referenced(st, q, de->d_name, err)) == 0 &&
		    unlinkat(dirfd(d), de->d_name, 0) == 0)
			(*removed)++;
		r = r == -1 ? -1 : 0;
	}
	sqlite3_finalize(q);
	closedir(d);
	free(dir);
	return r;
}

int
outbox_counts(struct state *st, int64_t account, struct outbox_counts *out, char **err)
{
	const char *what = "counting the account's outbound mail";
	sqlite3_stmt *s;
	int rc;

	memset(out, 0, sizeof *out);
	if ((s = prep(st, "SELECT count(*), total(state = 0), total(state = 1),"
	    " total(state = 2) FROM outbox WHERE account_id = ?1", what, err)) == NULL)
		return -1;
	if (sqlite3_bind_int64(s, 1, account) != SQLITE_OK ||
	    (rc = sqlite3_step(s)) != SQLITE_ROW) {
		state_error(st, what, err);
		sqlite3_finalize(s);
		return -1;
	}
	out->accepted = (unsigned long)sqlite3_column_int64(s, 0);
	out->queued = (unsigned long)sqlite3_column_double(s, 1);
	out->sent = (unsigned long)sqlite3_column_double(s, 2);
	out->bounced = (unsigned long)sqlite3_column_double(s, 3);
	sqlite3_finalize(s);
	return 0;
}

int
outbox_spool_give(const char *state_dir, uid_t uid, gid_t gid, char **err)
{
	char *tmp = spool_path(state_dir, "tmp"), *dir = spool_path(state_dir, "");
	int r = io_mkdir_p(tmp, 0700, true, err);

	if (r != -1 && (chown(dir, uid, gid) == -1 || chown(tmp, uid, gid) == -1))
		r = err_errno(err, "giving %s to uid %ld", dir, (long)uid);
	free(tmp);
	free(dir);
	return r == -1 ? -1 : 0;
}

/* The outbound queue's rows (schema v3 and v5, store/state.c) and spool
 * files.
 *
 * Statements are prepared per call, not cached: state_close() closes the
 * connection with sqlite3_close(), which refuses while statements of ours
 * are still unfinalised, and the queue runs a few statements per message,
 * far from any hot path. */
#include "store/outbox.h"
#include "store/state_priv.h"

#include <sys/inotify.h>
#include <sys/mman.h>
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
	" o.sent_copy_done, o.bounce_done, o.last_error, o.finished_at," \
	" o.id IN (SELECT id FROM outbox_body)"
#define MSG_FROM " FROM outbox o JOIN accounts a ON a.id = o.account_id"
/* Finished, but the Sent copy or the bounce is still to be stored. Such a
 * message's next_attempt_at is when filing is tried next (the delivery
 * attempts are over; the column is reused rather than a new one added). */
#define UNFILED "(o.state IN (1, 2) AND (o.sent_copy_done <> 1 OR o.bounce_done <> 1))"
/* sent_copy_done and bounce_done: 0 not tried yet, 1 stored (or not
 * needed), 2 tried (maybe stored: look it up before storing again). */
#define COPY_DONE 1
#define COPY_TRIED 2

/* The connection's kept statement for q (state_stmt(): q is a literal at
 * every call), handed back with state_stmt_done(). */
static sqlite3_stmt *
prep(struct state *st, const char *q, const char *what, char **err)
{
	return state_stmt(st, q, what, err);
}

/* Steps s to its end (a statement without rows) and hands it back. bound
 * is the OR of the bind results. */
static int
run(struct state *st, sqlite3_stmt *s, int bound, const char *what, char **err)
{
	int rc = bound == SQLITE_OK ? sqlite3_step(s) : SQLITE_ERROR;
	int r = 0;

	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		r = state_error(st, what, err);
	state_stmt_done(s);
	return r;
}

/*
 * Durable commits that do not hold the write lock while the disk syncs.
 * SQLite's synchronous = FULL fsyncs the WAL inside the commit, so every
 * other writer (the relay's group commit, the runner's workers, a pass)
 * waits for the disk too. A durable commit here runs at NORMAL, which
 * releases the lock at once, and fsyncs the WAL after: the same
 * durability (NORMAL never corrupts a WAL database; its checkpoints sync
 * the WAL first), the lock held only for the writes.
 */

/* A PRAGMA query, prepared for this one use (not state_stmt()): SQLite
 * puts some settings into the statement as they are when it is prepared. */
static sqlite3_stmt *
pragma(struct state *st, const char *q)
{
	sqlite3_stmt *s = NULL;

	if (sqlite3_prepare_v2(state_sqlite(st), q, -1, &s, NULL) != SQLITE_OK) {
		sqlite3_finalize(s);
		return NULL;
	}
	return s;
}

/* The connection's synchronous setting (1 NORMAL, 2 FULL), -1 unknown. */
static int
sync_mode(struct state *st)
{
	sqlite3_stmt *s = pragma(st, "PRAGMA synchronous");
	int mode = -1;

	if (s != NULL && sqlite3_step(s) == SQLITE_ROW)
		mode = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	return mode;
}

static void
set_sync_mode(struct state *st, int mode)
{
	sqlite3_exec(state_sqlite(st), mode == 2 ? "PRAGMA synchronous = FULL" :
	    "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
}

static bool
wal_mode(struct state *st)
{
	sqlite3_stmt *s = pragma(st, "PRAGMA journal_mode");
	bool wal = false;

	if (s != NULL && sqlite3_step(s) == SQLITE_ROW)
		wal = strcmp((const char *)sqlite3_column_text(s, 0), "wal") == 0;
	sqlite3_finalize(s);
	return wal;
}

/* fdatasync of the connection's WAL file: every commit so far durable. */
static int
sync_wal(struct state *st, char **err)
{
	const char *db = sqlite3_db_filename(state_sqlite(st), "main");
	char *path = xasprintf("%s-wal", db != NULL ? db : "");
	int fd, r = -1;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		*err = xasprintf("%s: %s", path, strerror(errno));
	else if (fdatasync(fd) == -1)
		*err = xasprintf("fdatasync %s: %s", path, strerror(errno));
	else
		r = 0;
	if (fd != -1)
		close(fd);
	free(path);
	return r;
}

/* What durable_begin() found, for durable_commit(). */
struct durable {
	int mode;
	bool wal;
	bool committed;         /* out: committed, maybe not synced */
};

static int
durable_begin(struct state *st, struct durable *d, char **err)
{
	d->mode = sync_mode(st);
	d->wal = wal_mode(st);
	d->committed = false;
	/* Outside WAL, NORMAL could corrupt on a power loss: FULL there. */
	if (d->mode != (d->wal ? 1 : 2))
		set_sync_mode(st, d->wal ? 1 : 2);
	if (state_begin(st, err) == -1) {
		set_sync_mode(st, d->mode);
		return -1;
	}
	return 0;
}

/* Commits the transaction durably_begin() began (or rolls it back when
 * ok is false): 0 once it is on disk. -1 with d->committed set: committed
 * (seen by every reader) but the sync after failed. */
static int
durable_commit(struct state *st, struct durable *d, bool ok, char **err)
{
	int r = -1;

	if (ok && state_commit(st, err) == 0) {
		d->committed = true;
		r = d->wal ? sync_wal(st, err) : 0;
	}
	else
		state_rollback(st);
	if (d->mode != (d->wal ? 1 : 2))
		set_sync_mode(st, d->mode);
	return r;
}

int
outbox_set_synced(struct state *st, bool synced, char **err)
{
	if (sqlite3_exec(state_sqlite(st), synced ? "PRAGMA synchronous = FULL" :
	    "PRAGMA synchronous = NORMAL", NULL, NULL, NULL) != SQLITE_OK)
		return state_error(st, "setting synchronous", err);
	return 0;
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

/* A new unique spool name in *name (allocated): 0, or -1 with *err. */
static int
new_spool_name(char **name, char **err)
{
	static atomic_ulong seq;
	unsigned char rnd[16];
	struct timespec ts;
	char hex[33];

	/* 128 random bits: the name is the secret behind the delivery keys
	 * of the message's Sent copy and bounce (bridge/queue_file.c), also
	 * for a message kept in its row, which has no file of that name. */
	if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
		*err = xasprintf("no random bytes for the spool name: %s", strerror(errno));
		*name = NULL;
		return -1;
	}
	hex_encode(rnd, sizeof rnd, hex);
	clock_gettime(CLOCK_REALTIME, &ts);
	*name = xasprintf("%lld.%s.%ld.%lu.msg", (long long)ts.tv_sec, hex,
	    (long)getpid(), atomic_fetch_add(&seq, 1));
	return 0;
}

/* Gives the file fd a unique name in the spool directory (a hard link
 * when fd's file can be linked: an O_TMPFILE or a file on the same file
 * system; else a copy), and makes its data durable unless synced. The
 * caller makes the name durable (one fsync of the directory for many). */
static int
spool_link(const char *state_dir, int fd, bool synced, char **name, char **err)
{
	char *dir, *path, proc[64];
	int r = -1;

	if (new_spool_name(name, err) == -1)
		return -1;
	dir = spool_path(state_dir, "");
	path = spool_path(state_dir, *name);
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	/* The name first, then the data's fsync: no row names the file before
	 * both are durable (a crash in between leaves an orphan the sweep
	 * removes), and on a journaling file system that fsync commits the
	 * new name with the data, leaving the directory's fsync little to do. */
	if (mkdir(dir, 0700) == -1 && errno != EEXIST)
		*err = xasprintf("creating %s: %s", dir, strerror(errno));
	else if (linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == -1 &&
	    copy_into(fd, path) == -1)
		*err = xasprintf("spooling into %s: %s", dir, strerror(errno));
	else if (!synced && fsync(fd) == -1)
		*err = xasprintf("fsync of the message: %s", strerror(errno));
	else
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

/* One submission on its way into the queue: its spool name, its size
 * (fstat'd once), and its content when the row keeps it (body, NULL for a
 * spool file). */
struct spooled {
	char *name;
	uint64_t size;
	char *body;
};

/* Reads the whole message in fd (len bytes, from its start) into a new
 * buffer: 0, or -1 with *err. */
static int
read_body(int fd, size_t len, char **body, char **err)
{
	size_t got = 0;
	ssize_t r;

	*body = xmalloc(len ? len : 1);
	while (got < len && (r = pread(fd, *body + got, len - got, (off_t)got)) != 0) {
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			*err = xasprintf("reading the message: %s", strerror(errno));
			break;
		}
		got += (size_t)r;
	}
	if (got == len)
		return 0;
	if (*err == NULL)
		*err = xstrdup("the message file is shorter than its size");
	free(*body);
	*body = NULL;
	return -1;
}

static int
insert_msg(struct state *st, int64_t account, const char *auth_user,
    const char *mail_from, const struct spooled *sp, int64_t *id, char **err)
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
	b |= sqlite3_bind_text(s, 4, sp->name, -1, SQLITE_STATIC);
	b |= sqlite3_bind_int64(s, 5, (int64_t)sp->size);
	b |= sqlite3_bind_int64(s, 6, now);
	if (run(st, s, b, what, err) == -1)
		return -1;
	*id = sqlite3_last_insert_rowid(state_sqlite(st));
	if (sp->body == NULL)
		return 0;
	if ((s = prep(st, "INSERT INTO outbox_body(id, body) VALUES (?1, ?2)", what,
	    err)) == NULL)
		return -1;
	/* A zero-length body is a blob all the same (not NULL): the pointer
	 * is never NULL. */
	b = sqlite3_bind_int64(s, 1, *id);
	b |= sqlite3_bind_blob64(s, 2, sp->body, sp->size, SQLITE_STATIC);
	return run(st, s, b, what, err);
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

/* Removes the spool file name (one not committed) and frees it. */
static void
spool_forget(const char *state_dir, char **name)
{
	char *path;

	if (*name == NULL)
		return;
	path = spool_path(state_dir, *name);
	unlink(path);
	free(path);
	free(*name);
	*name = NULL;
}

/* Forgets sp: its body, and its name with the file when it has one. */
static void
spooled_forget(const char *state_dir, struct spooled *sp)
{
	if (sp->body != NULL) {
		free(sp->name);
		sp->name = NULL;
	} else
		spool_forget(state_dir, &sp->name);
	free(sp->body);
	sp->body = NULL;
}

/* Deletes the rows of the submissions given ids (a commit whose sync
 * failed: they were refused), best effort: the failing disk may lose this
 * too, leaving a message queued that was refused (a duplicate when it is
 * sent again), never one lost. */
static void
take_back(struct state *st, const struct outbox_submission *subs, size_t n)
{
	const char *what = "taking back the queued rows";
	sqlite3_stmt *s;
	char *err = NULL;
	size_t i;

	if (state_begin(st, &err) == -1) {
		free(err);
		return;
	}
	for (i = 0; i < n; i++) {
		if (subs[i].id <= 0)
			continue;
		/* outbox_rcpt and outbox_body go with it: ON DELETE CASCADE */
		if ((s = prep(st, "DELETE FROM outbox WHERE id = ?1", what, &err)) == NULL ||
		    run(st, s, sqlite3_bind_int64(s, 1, subs[i].id), what, &err) == -1)
			break;
	}
	if (i < n || state_commit(st, &err) == -1)
		state_rollback(st);
	else
		(void)sync_wal(st, &err);
	free(err);
}

/* The rows of every spooled submission (sp[i].name set), in the caller's
 * transaction. */
static int
insert_all(struct state *st, struct outbox_submission *subs, struct spooled *sp, size_t n,
    char **err)
{
	int64_t acc;

	for (size_t i = 0; i < n; i++) {
		struct outbox_submission *u = &subs[i];

		if (sp[i].name == NULL)
			continue;
		if (state_account(st, u->account, &acc, err) == -1 ||
		    insert_msg(st, acc, u->auth_user, u->mail_from, &sp[i], &u->id, err) == -1 ||
		    insert_rcpts(st, u->id, u->rcpts, u->n_rcpts, err) == -1)
			return -1;
	}
	return 0;
}

/* A name from outbox_spool_link(), for fd: a plain spool name ("....msg",
 * no "/"), of a regular file that is fd's. */
static int
check_name(const char *state_dir, const char *name, int fd, char **err)
{
	size_t len = strlen(name);
	struct stat a, b;
	char *path;
	int r = -1;

	if (len < 5 || strchr(name, '/') != NULL || name[0] == '.' ||
	    strcmp(name + len - 4, ".msg") != 0) {
		*err = xstrdup("not a spool file name");
		return -1;
	}
	path = spool_path(state_dir, name);
	if (lstat(path, &a) == -1 || fstat(fd, &b) == -1)
		*err = xasprintf("%s: %s", path, strerror(errno));
	else if (!S_ISREG(a.st_mode) || a.st_dev != b.st_dev || a.st_ino != b.st_ino)
		*err = xasprintf("%s is not the submitted file", path);
	else
		r = 0;
	free(path);
	return r;
}

/* The message in fd, of sp->size bytes and without a spool name yet,
 * kept in its row: read into sp->body, with a new name. false with *err
 * when it cannot be. */
static bool
take_body(int fd, struct spooled *sp, char **err)
{
	return read_body(fd, (size_t)sp->size, &sp->body, err) == 0 &&
	    new_spool_name(&sp->name, err) == 0;
}

/* Gives each submission its spool name: its own, checked; a new one with
 * the message read into its row (a small one); or a new link (fsync'd
 * first). *fresh when any new link needs the directory synced. How many
 * have one. */
static size_t
link_all(const char *state_dir, struct outbox_submission *subs, struct spooled *sp,
    size_t n, bool *fresh)
{
	size_t linked = 0;

	*fresh = false;
	for (size_t i = 0; i < n; i++) {
		struct outbox_submission *u = &subs[i];
		struct stat sb;

		u->id = 0;
		u->err = NULL;
		if (fstat(u->fd, &sb) == -1) {
			u->err = xasprintf("fstat of the message: %s", strerror(errno));
			continue;
		}
		sp[i].size = (uint64_t)sb.st_size;
		if (u->name != NULL && check_name(state_dir, u->name, u->fd, &u->err) == -1)
			continue;	/* not ours to remove either */
		if (u->name != NULL)
			sp[i].name = xstrdup(u->name);
		if (u->n_rcpts == 0)
			u->err = xstrdup("no recipients");
		else if (u->name != NULL || (sp[i].size <= OUTBOX_INLINE_MAX &&
		    take_body(u->fd, &sp[i], &u->err))) {
			linked++;
			continue;
		} else if (u->err == NULL && spool_link(state_dir, u->fd, false, &sp[i].name,
		    &u->err) == 0) {
			*fresh = true;
			linked++;
			continue;
		}
		spooled_forget(state_dir, &sp[i]);
	}
	return linked;
}

int
outbox_spool_link(const char *state_dir, int fd, char **name, char **err)
{
	char *dir = spool_path(state_dir, "");
	int r = -1;

	if (spool_link(state_dir, fd, false, name, err) == 0) {
		if (io_fsync_dir(dir, err) == 0)
			r = 0;
		else
			spool_forget(state_dir, name);
	}
	free(dir);
	return r;
}

size_t
outbox_enqueue_many(struct state *st, const char *state_dir,
    struct outbox_submission *subs, size_t n)
{
	struct spooled *sp = xcalloc(n ? n : 1, sizeof *sp);
	char *err = NULL, *dir = spool_path(state_dir, "");
	struct durable d = { .committed = false };
	bool fresh;
	size_t linked = link_all(state_dir, subs, sp, n, &fresh), i;
	bool ok = false;

	/* A small message goes into its row: its data is then durable with
	 * the row, in the one WAL sync of the transaction, which is what a
	 * group of them costs (group commit, issue 9: one sync for what
	 * arrives together). A big one is a spool file: data and name
	 * durable before any row, so that a row never names a file a crash
	 * could lose: one directory fsync for the names made here (none when
	 * the submitters made theirs durable themselves, in parallel), then
	 * the transaction. (One syncfs for data and names, measured, was
	 * slower: it also waits for every other process's dirty data on the
	 * file system.) */
	if (linked > 0 && (!fresh || io_fsync_dir(dir, &err) == 0) &&
	    durable_begin(st, &d, &err) == 0)
		ok = durable_commit(st, &d, insert_all(st, subs, sp, n, &err) == 0,
		    &err) == 0;
	/* Refused (the caller answers so), hence not to be delivered. */
	if (!ok && d.committed)
		take_back(st, subs, n);
	for (i = 0; i < n; i++) {
		if (sp[i].name != NULL && ok) {
			free(sp[i].name);
			free(sp[i].body);
			continue;
		}
		/* Not committed: nothing refers to the spool file. */
		spooled_forget(state_dir, &sp[i]);
		if (subs[i].err == NULL)
			subs[i].err = xstrdup(err != NULL ? err : "not queued");
		subs[i].id = 0;
	}
	free(err);
	free(sp);
	free(dir);
	return ok ? linked : 0;
}

int
outbox_enqueue(struct state *st, const char *state_dir, const char *account,
    const char *auth_user, const char *mail_from, char *const *rcpts, size_t n_rcpts,
    int fd, int64_t *id, char **err)
{
	struct outbox_submission u = { .account = account, .auth_user = auth_user,
	    .mail_from = mail_from, .rcpts = rcpts, .n_rcpts = n_rcpts, .fd = fd };

	if (outbox_enqueue_many(st, state_dir, &u, 1) == 1) {
		*id = u.id;
		return 0;
	}
	*err = u.err;
	return -1;
}

/*
 * Waking the queue runner: STATE_DIR/spool/.wake is touched after every
 * commit of new rows; its name starts with "." so no sweep takes it.
 */

void
outbox_notify(const char *state_dir)
{
	char *path = spool_path(state_dir, ".wake");
	int fd;

	if (utimensat(AT_FDCWD, path, NULL, 0) == -1 && errno == ENOENT &&
	    (fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) != -1)
		close(fd);
	free(path);
}

int
outbox_watch(const char *state_dir)
{
	char *dir = spool_path(state_dir, "");
	int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);

	if (fd != -1 && (mkdir(dir, 0700) == -1 && errno != EEXIST)) {
		close(fd);
		fd = -1;
	}
	/* IN_ATTRIB: the touch; IN_CREATE: the first one makes the file. */
	if (fd != -1 && inotify_add_watch(fd, dir, IN_ATTRIB | IN_CREATE) == -1) {
		close(fd);
		fd = -1;
	}
	free(dir);
	return fd;
}

void
outbox_watch_drain(int fd)
{
	char buf[4096];

	while (fd != -1 && read(fd, buf, sizeof buf) > 0)
		;
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
	m->sent_copy_done = sqlite3_column_int(s, 10) == COPY_DONE;
	m->sent_copy_tried = sqlite3_column_int(s, 10) == COPY_TRIED;
	m->bounce_done = sqlite3_column_int(s, 11) == COPY_DONE;
	m->bounce_tried = sqlite3_column_int(s, 11) == COPY_TRIED;
	m->last_error = state_col_str(s, 12);
	m->finished_at = sqlite3_column_int64(s, 13);
	m->in_db = sqlite3_column_int(s, 14) != 0;
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
	state_stmt_done(s);
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
	state_stmt_done(s);
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

/* A memory file holding the body of message id, at offset 0. */
static int
body_open(struct state *st, int64_t id, char **err)
{
	const char *what = "reading the message";
	const void *p;
	sqlite3_stmt *s;
	size_t len;
	int fd = -1, rc;

	if ((s = prep(st, "SELECT body FROM outbox_body WHERE id = ?1",
	    what, err)) == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, id);
	if ((rc = sqlite3_step(s)) != SQLITE_ROW) {
		if (rc == SQLITE_DONE)
			*err = xasprintf("queue id %lld: the message is gone", (long long)id);
		else
			state_error(st, what, err);
	} else if ((fd = memfd_create("outbox", MFD_CLOEXEC)) == -1)
		*err = xasprintf("memfd_create: %s", strerror(errno));
	else {
		len = (size_t)sqlite3_column_bytes(s, 0);
		p = sqlite3_column_blob(s, 0);
		if ((len > 0 && io_write_all(fd, p, len) == -1) ||
		    lseek(fd, 0, SEEK_SET) == -1) {
			*err = xasprintf("copying the message into memory: %s", strerror(errno));
			close(fd);
			fd = -1;
		}
	}
	state_stmt_done(s);
	return fd;
}

int
outbox_msg_open(struct state *st, const struct outbox_msg *m, char **err)
{
	int fd;

	if (m->in_db)
		return body_open(st, m->id, err);
	if ((fd = open(m->spool_path, O_RDONLY | O_CLOEXEC)) == -1)
		*err = xasprintf("%s: %s", m->spool_path, strerror(errno));
	return fd;
}

int
outbox_due(struct state *st, const char *state_dir, int64_t now,
    struct outbox_msg **msgs, size_t *n, char **err)
{
	return select_msgs(st, state_dir, "SELECT " MSG_COLUMNS MSG_FROM
	    " WHERE (o.state = 0 OR " UNFILED ") AND o.next_attempt_at <= ?1"
	    " ORDER BY o.id", now, msgs, n, err);
}

int
outbox_list(struct state *st, const char *state_dir, struct outbox_msg **msgs,
    size_t *n, char **err)
{
	return select_msgs(st, state_dir, "SELECT " MSG_COLUMNS MSG_FROM
	    " WHERE o.state = 0 OR " UNFILED " ORDER BY o.id", 0, msgs, n, err);
}

int
outbox_summary(struct state *st, const char *account, struct outbox_summary *out,
    char **err)
{
	const char *what = "summing up the queue";
	sqlite3_stmt *s;
	int rc;

	memset(out, 0, sizeof *out);
	if ((s = prep(st, "SELECT count(*) FILTER (WHERE o.state = 0),"
	    " min(o.next_attempt_at) FILTER (WHERE o.state = 0),"
	    " count(*) FILTER (WHERE " UNFILED "),"
	    " min(o.next_attempt_at) FILTER (WHERE " UNFILED "),"
	    " (SELECT o.last_error" MSG_FROM " WHERE a.name = ?1 AND " UNFILED
	    "  ORDER BY o.id LIMIT 1)" MSG_FROM " WHERE a.name = ?1", what, err)) == NULL)
		return -1;
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	if ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		out->queued = (size_t)sqlite3_column_int64(s, 0);
		out->next_attempt = sqlite3_column_int64(s, 1);
		out->unfiled = (size_t)sqlite3_column_int64(s, 2);
		out->next_filing = sqlite3_column_int64(s, 3);
		out->filing_error = state_col_str(s, 4);
	} else
		state_error(st, what, err);
	state_stmt_done(s);
	return rc == SQLITE_ROW ? 0 : -1;
}

void
outbox_summary_free(struct outbox_summary *s)
{
	free(s->filing_error);
	memset(s, 0, sizeof *s);
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
	    /* Finished: the Sent copy and bounce are due at once. */
	    " next_attempt_at = CASE WHEN ?2 = 0 THEN ?3 ELSE ?5 END,"
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
    enum outbox_state state, int64_t next_attempt_at, const char *error, bool durable,
    char **err)
{
	struct durable d;
	bool ok;

	if (durable ? durable_begin(st, &d, err) == -1 : state_begin(st, err) == -1)
		return -1;
	ok = update_rcpts(st, m, err) == 0 &&
	    update_msg(st, m, state, next_attempt_at, error, err) == 0;
	if (durable)
		return durable_commit(st, &d, ok, err);
	if (ok && state_commit(st, err) == 0)
		return 0;
	state_rollback(st);
	return -1;
}

int
outbox_mark_copies(struct state *st, const int64_t *ids, size_t n, bool sent_copy,
    bool done, char **err)
{
	const char *what = "recording the Sent copies or bounces";
	struct durable d;
	sqlite3_stmt *s;
	size_t i;
	int b;

	if (n == 0)
		return 0;
	/* "Tried" must be on disk before anything is stored: a copy stored
	 * and a lost mark would be stored again without a look first. */
	if (done ? state_begin(st, err) == -1 : durable_begin(st, &d, err) == -1)
		return -1;
	for (i = 0; i < n; i++) {
		if ((s = prep(st, sent_copy ?
		    "UPDATE outbox SET sent_copy_done = CASE WHEN ?2 THEN 1"
		    " WHEN sent_copy_done = 0 THEN 2 ELSE sent_copy_done END WHERE id = ?1" :
		    "UPDATE outbox SET bounce_done = CASE WHEN ?2 THEN 1"
		    " WHEN bounce_done = 0 THEN 2 ELSE bounce_done END WHERE id = ?1",
		    what, err)) == NULL)
			break;
		b = sqlite3_bind_int64(s, 1, ids[i]);
		b |= sqlite3_bind_int(s, 2, done);
		if (run(st, s, b, what, err) == -1)
			break;
	}
	if (!done)
		return durable_commit(st, &d, i == n, err);
	if (i == n && state_commit(st, err) == 0)
		return 0;
	state_rollback(st);
	return -1;
}

int
outbox_mark_copy_done(struct state *st, int64_t id, bool sent_copy, char **err)
{
	return outbox_mark_copies(st, &id, 1, sent_copy, true, err);
}

int
outbox_copy_failed(struct state *st, int64_t id, const char *error, int64_t next_at,
    char **err)
{
	const char *what = "recording the Sent copy or bounce failure";
	sqlite3_stmt *s;
	int b;

	if ((s = prep(st, "UPDATE outbox SET last_error = ?2, next_attempt_at = ?3"
	    " WHERE id = ?1 AND state IN (1, 2)", what, err)) == NULL)
		return -1;
	b = sqlite3_bind_int64(s, 1, id);
	b |= sqlite3_bind_text(s, 2, error, -1, SQLITE_STATIC);
	b |= sqlite3_bind_int64(s, 3, next_at);
	return run(st, s, b, what, err);
}

int
outbox_flush(struct state *st, char **err)
{
	const char *what = "flushing the queue";
	sqlite3_stmt *s;

	if ((s = prep(st, "UPDATE outbox AS o SET next_attempt_at = 0 WHERE o.state = 0"
	    " OR " UNFILED, what, err)) == NULL)
		return -1;
	return run(st, s, SQLITE_OK, what, err);
}

/*
 * Removing.
 */

/* The spool file name of message id when it is still queued, or finished
 * with its Sent copy or bounce not filed: 1 found, 0 not, -1 error. */
static int
spool_name(struct state *st, int64_t id, char **name, char **err)
{
	const char *what = "looking up the message";
	sqlite3_stmt *s;
	int rc;

	if ((s = prep(st, "SELECT spool_file FROM outbox AS o WHERE o.id = ?1 AND"
	    " (o.state = 0 OR " UNFILED ")", what, err)) == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*name = state_col_str(s, 0);
	else if (rc != SQLITE_DONE)
		state_error(st, what, err);
	state_stmt_done(s);
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
	/* outbox_cleanup() removes the spool file. A finished message keeps
	 * its state (it was sent, or bounced): only the filing is given up. */
	if ((s = prep(st, "UPDATE outbox SET state = CASE WHEN state = 0 THEN 3"
	    " ELSE state END, finished_at = COALESCE(finished_at, ?2),"
	    " sent_copy_done = 1, bounce_done = 1 WHERE id = ?1", what, err)) == NULL)
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

/* The spool file names of finished messages whose copies are done. */
static int
cleanable(struct state *st, char ***names, int64_t **ids, size_t *n, char **err)
{
	const char *what = "cleaning the spool";
	sqlite3_stmt *s;
	size_t cap = 0;
	int rc;

	*n = 0;
	*names = NULL;
	*ids = NULL;
	if ((s = prep(st, "SELECT id, spool_file FROM outbox WHERE spool_file <> ''"
	    " AND state <> 0 AND sent_copy_done = 1 AND bounce_done = 1", what,
	    err)) == NULL)
		return -1;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (*n == cap) {
			cap = cap ? 2 * cap : 16;
			*names = xreallocarray(*names, cap, sizeof **names);
			*ids = xreallocarray(*ids, cap, sizeof **ids);
		}
		(*ids)[*n] = sqlite3_column_int64(s, 0);
		(*names)[(*n)++] = state_col_str(s, 1);
	}
	if (rc != SQLITE_DONE)
		state_error(st, what, err);
	state_stmt_done(s);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* Forgets the files' names in one transaction, synced whatever
 * outbox_set_synced() says: it also makes every earlier commit durable
 * (they come before it in the WAL), so no row that a power loss could
 * take back still needs a file removed after it. */
static int
forget_names(struct state *st, const int64_t *ids, size_t n, char **err)
{
	const char *what = "cleaning the spool";
	struct durable d;
	sqlite3_stmt *u;
	size_t i;

	if (durable_begin(st, &d, err) == -1)
		return -1;
	for (i = 0; i < n; i++)
		if ((u = prep(st, "UPDATE outbox SET spool_file = '' WHERE id = ?1",
		    what, err)) == NULL ||
		    run(st, u, sqlite3_bind_int64(u, 1, ids[i]), what, err) == -1 ||
		    (u = prep(st, "DELETE FROM outbox_body WHERE id = ?1", what, err)) == NULL ||
		    run(st, u, sqlite3_bind_int64(u, 1, ids[i]), what, err) == -1)
			break;
	return durable_commit(st, &d, i == n, err);
}

int
outbox_cleanup(struct state *st, const char *state_dir, char **err)
{
	char **names;
	int64_t *ids;
	size_t n, i;
	int r;

	if (cleanable(st, &names, &ids, &n, err) == -1)
		return -1;
	/* Rows first, files after: a crash between them, or a file that
	 * cannot be removed now, leaves a file no row names, which
	 * outbox_sweep_orphans() removes later. */
	if ((r = n > 0 ? forget_names(st, ids, n, err) : 0) == 0)
		for (i = 0; i < n; i++)
			if (names[i] != NULL)
				spool_unlink(state_dir, names[i]);
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(ids);
	return r;
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
	state_stmt_done(q);
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
		state_stmt_done(s);
		return -1;
	}
	out->accepted = (unsigned long)sqlite3_column_int64(s, 0);
	out->queued = (unsigned long)sqlite3_column_double(s, 1);
	out->sent = (unsigned long)sqlite3_column_double(s, 2);
	out->bounced = (unsigned long)sqlite3_column_double(s, 3);
	state_stmt_done(s);
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

/* Unit tests of store/outbox.c beyond the spool (tests/unit/test_state.c):
 * a finished message whose Sent copy failed is due again only at its next
 * try, is summed up for `status`, is flushed and dropped like a queued
 * one, and keeps its message (in its row or its spool file) until filed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/io.h"
#include "lib/xmalloc.h"
#include "store/outbox.h"
#include "store/state.h"
#include "store/state_priv.h"
#include "tests/unit/check.h"

static char tmpdir[] = "/tmp/test_outbox.XXXXXX";

/* Queues one message of about size bytes for one recipient; its id, or 0. */
static int64_t
enqueue(struct state *st, const char *sd, size_t size)
{
	char *rcpts[] = { "bob@example.net" }, *err = NULL;
	char line[] = "0123456789012345678901234567890123456789012345678901234567890123456789\r\n";
	int64_t id = 0;
	int fd = outbox_spool_file(sd, &err);

	CHECK(fd != -1);
	CHECK_INT(io_write_all(fd, "Subject: x\r\n\r\nbody\r\n", 20), 0);
	for (size_t k = 20; k < size; k += sizeof line - 1)
		CHECK_INT(io_write_all(fd, line, sizeof line - 1), 0);
	CHECK_INT(outbox_enqueue(st, sd, "acct", NULL, "a@example.org", rcpts, 1, fd, &id,
	    &err), 0);
	close(fd);
	free(err);
	return id;
}

/* How many messages outbox_due() gives at now. */
static size_t
due(struct state *st, const char *sd, int64_t now)
{
	struct outbox_msg *v = NULL;
	char *err = NULL;
	size_t n = 0;

	CHECK_INT(outbox_due(st, sd, now, &v, &n, &err), 0);
	outbox_msgs_free(v, n);
	return n;
}

/* Marks queue id sent (its one recipient delivered). */
static void
mark_sent(struct state *st, const char *sd, int64_t id)
{
	struct outbox_msg *v = NULL;
	char *err = NULL;
	size_t n = 0;

	CHECK_INT(outbox_due(st, sd, INT64_MAX, &v, &n, &err), 0);
	for (size_t i = 0; i < n; i++) {
		if (v[i].id != id)
			continue;
		CHECK(v[i].n_rcpts == 1);
		v[i].rcpts[0].state = RCPT_DELIVERED;
		v[i].rcpts[0].last_code = 250;
		CHECK_INT(outbox_record_attempt(st, &v[i], OUTBOX_SENT, 0, NULL, true, &err), 0);
	}
	outbox_msgs_free(v, n);
}

/* Whether message id's content is still kept: its spool file, or its row's
 * copy. */
static bool
held(struct state *st, const char *spool, int64_t id)
{
	sqlite3_stmt *s = NULL;
	bool in_row = false;

	if (access(spool, R_OK) == 0)
		return true;
	CHECK_INT(sqlite3_prepare_v2(state_sqlite(st), "SELECT count(*) FROM outbox_body"
	    " WHERE id = ?1", -1, &s, NULL), SQLITE_OK);
	sqlite3_bind_int64(s, 1, id);
	if (sqlite3_step(s) == SQLITE_ROW)
		in_row = sqlite3_column_int(s, 0) != 0;
	sqlite3_finalize(s);
	return in_row;
}

/* The message m reads back as size bytes, whichever way it is kept. */
static void
check_readable(struct state *st, const struct outbox_msg *m, size_t size)
{
	char *err = NULL, buf[4096];
	size_t total = 0;
	ssize_t r;
	int fd = outbox_msg_open(st, m, &err);

	CHECK(fd != -1);
	while (fd != -1 && (r = read(fd, buf, sizeof buf)) > 0)
		total += (size_t)r;
	CHECK(total == size && total == m->size);
	if (fd != -1)
		close(fd);
	free(err);
}

/* A message of size bytes (about): kept in its row up to OUTBOX_INLINE_MAX,
 * else in a spool file. */
static void
unfiled(const char *name, size_t size)
{
	char *sd = xasprintf("%s/%s", tmpdir, name), *err = NULL, *spool;
	bool small = size <= OUTBOX_INLINE_MAX;
	size_t real;
	int64_t now = (int64_t)time(NULL), id;
	struct outbox_summary q;
	struct outbox_msg *v = NULL;
	struct state *st = NULL;
	size_t n = 0;

	CHECK_INT(state_make_dir(sd, &err), 0);
	CHECK_INT(state_open_dir(sd, true, &st, &err), 0);
	if (st == NULL) {
		free(sd);
		return;
	}
	id = enqueue(st, sd, size);
	CHECK_INT(outbox_summary(st, "acct", &q, &err), 0);
	CHECK(q.queued == 1 && q.next_attempt > 0 && q.unfiled == 0);
	outbox_summary_free(&q);
	mark_sent(st, sd, id);
	/* Finished: its Sent copy is due at once, and listed. */
	CHECK_INT(due(st, sd, (int64_t)time(NULL)), 1);
	CHECK_INT(outbox_list(st, sd, &v, &n, &err), 0);
	CHECK(n == 1 && v[0].state == OUTBOX_SENT && !v[0].sent_copy_done &&
	    v[0].bounce_done && v[0].finished_at >= now);
	spool = n == 1 ? xstrdup(v[0].spool_path) : xstrdup("");
	real = n == 1 ? v[0].size : 0;
	CHECK(n == 1 && v[0].in_db == small && real >= size && real < size + 80);
	/* in its row: no file of its name, ever; else its spool file */
	CHECK((access(spool, F_OK) == 0) == !small);
	if (n == 1)
		check_readable(st, &v[0], real);
	outbox_msgs_free(v, n);
	/* A failed copy waits for its next try, with its reason. */
	CHECK_INT(outbox_copy_failed(st, id, "Sent copy not stored: full", now + 100, &err), 0);
	CHECK_INT(due(st, sd, now), 0);
	CHECK_INT(due(st, sd, now + 100), 1);
	CHECK_INT(outbox_summary(st, "acct", &q, &err), 0);
	CHECK(q.queued == 0 && q.unfiled == 1 && q.next_filing == now + 100);
	CHECK_STR(q.filing_error, "Sent copy not stored: full");
	outbox_summary_free(&q);
	CHECK_INT(outbox_summary(st, "nobody", &q, &err), 0);
	CHECK(q.queued == 0 && q.unfiled == 0 && q.filing_error == NULL);
	outbox_summary_free(&q);
	/* The message stays until it is filed. */
	CHECK_INT(outbox_cleanup(st, sd, &err), 0);
	CHECK(held(st, spool, id));
	/* flush makes it due now. */
	CHECK_INT(outbox_flush(st, &err), 0);
	CHECK_INT(due(st, sd, now), 1);
	/* drop gives the filing up; the message stays sent. */
	CHECK_INT(outbox_drop(st, id, &err), 1);
	CHECK_INT(due(st, sd, INT64_MAX), 0);
	CHECK_INT(outbox_drop(st, id, &err), 0);
	CHECK_INT(outbox_cleanup(st, sd, &err), 0);
	CHECK(!held(st, spool, id));
	CHECK_INT(outbox_summary(st, "acct", &q, &err), 0);
	CHECK(q.queued == 0 && q.unfiled == 0);
	outbox_summary_free(&q);
	state_close(st);
	free(spool);
	free(sd);
}

static void
test_unfiled(void)
{
	unfiled("small", 20);
	unfiled("limit", OUTBOX_INLINE_MAX - 72);
	unfiled("big", OUTBOX_INLINE_MAX + 1);
}

/* Submissions whose files the submitter linked itself (the relay's
 * sessions) are queued together; a name that is not the submitted file's
 * is refused and left alone. */
static void
test_many_named(void)
{
	char *sd = xasprintf("%s/b", tmpdir), *err = NULL, *names[3] = { NULL };
	char *rcpts[] = { "bob@example.net" }, *other;
	struct outbox_submission u[3];
	struct state *st = NULL;
	int fd[3], i;

	CHECK_INT(state_make_dir(sd, &err), 0);
	CHECK_INT(state_open_dir(sd, true, &st, &err), 0);
	if (st == NULL) {
		free(sd);
		return;
	}
	for (i = 0; i < 3; i++) {
		fd[i] = outbox_spool_file(sd, &err);
		CHECK(fd[i] != -1);
		CHECK_INT(io_write_all(fd[i], "Subject: x\r\n\r\nbody\r\n", 20), 0);
		CHECK_INT(outbox_spool_link(sd, fd[i], &names[i], &err), 0);
		u[i] = (struct outbox_submission){ .account = "acct", .mail_from = "a@example.org",
		    .rcpts = rcpts, .n_rcpts = 1, .fd = fd[i], .name = names[i] };
	}
	/* The third claims the first one's file. */
	u[2].name = names[0];
	CHECK_INT(outbox_enqueue_many(st, sd, u, 3), 2);
	CHECK(u[0].id > 0 && u[1].id > u[0].id && u[0].err == NULL && u[1].err == NULL);
	CHECK(u[2].id == 0 && u[2].err != NULL);
	other = xasprintf("%s/spool/%s", sd, names[2]);
	CHECK(access(other, F_OK) == 0);	/* its own file: not removed by the refusal */
	free(other);
	other = xasprintf("%s/spool/%s", sd, names[0]);
	CHECK(access(other, F_OK) == 0);	/* the claimed one: still queued */
	free(other);
	CHECK_INT(due(st, sd, INT64_MAX), 2);
	/* "Tried" then "done" marks of the Sent copy. */
	mark_sent(st, sd, u[0].id);
	{
		struct outbox_msg *v = NULL;
		size_t n = 0;

		CHECK_INT(outbox_mark_copies(st, &u[0].id, 1, true, false, &err), 0);
		CHECK_INT(outbox_list(st, sd, &v, &n, &err), 0);
		CHECK(n == 2 && v[0].id == u[0].id && v[0].sent_copy_tried && !v[0].sent_copy_done);
		outbox_msgs_free(v, n);
		CHECK_INT(outbox_mark_copies(st, &u[0].id, 1, true, true, &err), 0);
		CHECK_INT(outbox_list(st, sd, &v, &n, &err), 0);
		CHECK(n == 1 && v[0].id == u[1].id);
		outbox_msgs_free(v, n);
	}
	free(u[2].err);
	for (i = 0; i < 3; i++) {
		close(fd[i]);
		free(names[i]);
	}
	state_close(st);
	free(sd);
}

int
main(void)
{
	if (!check_tmpdir(tmpdir))
		return 1;
	TEST(test_unfiled);
	TEST(test_many_named);
	check_rm_tree(tmpdir);
	CHECK_DONE();
}

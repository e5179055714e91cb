/* `pop3bridge queue list|flush|drop ID`: the outbound queue's control. */
#include "bridge/queue_cmd.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "bridge/queue.h"
#include "lib/log.h"
#include "store/outbox.h"
#include "store/state.h"

static const char *
rcpt_state(enum outbox_rcpt_state s)
{
	return s == RCPT_DELIVERED ? "delivered" : s == RCPT_FAILED ? "failed" : "pending";
}

/* Finished but not filed: which copy the message still waits for. */
static bool
unfiled(const struct outbox_msg *m)
{
	return (m->state == OUTBOX_SENT || m->state == OUTBOX_BOUNCED) &&
	    (!m->sent_copy_done || !m->bounce_done);
}

static const char *
msg_state(const struct outbox_msg *m)
{
	bool copy = !m->sent_copy_done, dsn = !m->bounce_done;

	switch (m->state) {
	case OUTBOX_QUEUED:
		return "queued";
	case OUTBOX_SENT:
		return copy ? "sent, Sent copy pending" : "sent";
	case OUTBOX_BOUNCED:
		return copy && dsn ? "bounced, bounce and Sent copy pending" :
		    dsn ? "bounced, bounce pending" : copy ? "bounced, Sent copy pending" :
		    "bounced";
	case OUTBOX_DROPPED:
		return "dropped";
	}
	return "?";
}

static void
print_msg(FILE *f, const struct outbox_msg *m)
{
	char next[32] = "-";
	time_t t = (time_t)m->next_attempt_at;
	struct tm tm;

	/* The next delivery attempt, or the next try at filing. */
	if ((m->state == OUTBOX_QUEUED || unfiled(m)) && localtime_r(&t, &tm) != NULL)
		strftime(next, sizeof next, "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(f, "%lld  %s  <%s>  %s  attempts %u  next %s\n", (long long)m->id,
	    m->account, m->mail_from, msg_state(m), m->attempts, next);
	for (size_t i = 0; i < m->n_rcpts; i++) {
		const struct outbox_rcpt *r = &m->rcpts[i];

		fprintf(f, "    <%s>  %s", r->addr, rcpt_state(r->state));
		if (r->last_code != 0)
			fprintf(f, "  %d %s", r->last_code, r->last_response ?
			    r->last_response : "");
		fputc('\n', f);
	}
	if (m->last_error != NULL)
		fprintf(f, "    last error: %s\n", m->last_error);
}

static int
queue_list(const struct conf *c, struct state *st)
{
	struct outbox_msg *v;
	size_t n;
	char *err = NULL;

	if (outbox_list(st, c->state_dir, &v, &n, &err) == -1) {
		log_warnx("queue: %s", err);
		free(err);
		return EX_TEMPFAIL;
	}
	for (size_t i = 0; i < n; i++)
		print_msg(stdout, &v[i]);
	if (n == 0)
		printf("the queue is empty\n");
	outbox_msgs_free(v, n);
	return EX_OK;
}

/* Makes every queued message due, then delivers them in this process
 * unless a pass is already running (the daemon's runner then delivers
 * them within seconds). */
static int
queue_flush(const struct conf *c, struct state *st)
{
	char *err = NULL;
	int r;

	if (outbox_flush(st, &err) == -1 ||
	    (r = queue_pass(c, st, INT64_MAX, &err)) == -1) {
		log_warnx("queue: %s", err);
		free(err);
		return EX_TEMPFAIL;
	}
	if (r == 1) {
		/* The daemon's runner: woken, it takes them at its next pass. */
		outbox_notify(c->state_dir);
		log_info("queue: a delivery pass is running; it takes the flushed messages");
	}
	return EX_OK;
}

static int
queue_drop(const struct conf *c, struct state *st, const char *arg)
{
	char *end, *err = NULL;
	long long id = strtoll(arg, &end, 10);
	int r;

	if (*arg == '\0' || *end != '\0' || id <= 0) {
		log_warnx("queue drop: \"%s\" is not a queue id", arg);
		return EX_USAGE;
	}
	if ((r = outbox_drop(st, id, &err)) == -1 ||
	    (r == 1 && outbox_cleanup(st, c->state_dir, &err) == -1)) {
		log_warnx("queue drop: %s", err);
		free(err);
		return EX_TEMPFAIL;
	}
	if (r == 0) {
		log_warnx("queue drop: no queued message %lld", id);
		return EX_NOINPUT;
	}
	return EX_OK;
}

int
queue_cmd_run(const struct conf *c, int argc, char **argv)
{
	const char *sub = argc > 0 ? argv[0] : "list";
	struct state *st;
	char *err = NULL;
	int rc;

	if (!((strcmp(sub, "list") == 0 && argc <= 1) ||
	    (strcmp(sub, "flush") == 0 && argc == 1) ||
	    (strcmp(sub, "drop") == 0 && argc == 2))) {
		log_warnx("usage: queue [list | flush | drop ID]");
		return EX_USAGE;
	}
	if (state_open_dir(c->state_dir, true, &st, &err) == -1) {
		log_warnx("queue: %s", err);
		free(err);
		return EX_TEMPFAIL;
	}
	if (strcmp(sub, "flush") == 0)
		rc = queue_flush(c, st);
	else if (strcmp(sub, "drop") == 0)
		rc = queue_drop(c, st, argv[1]);
	else
		rc = queue_list(c, st);
	state_close(st);
	return rc;
}

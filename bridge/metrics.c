#include "bridge/metrics.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bridge/status.h"
#include "lib/io.h"
#include "lib/xmalloc.h"
#include "store/outbox.h"
#include "store/state.h"

/* One metric: name (pop3bridge_ prefix), type, help, and its value for an
 * account. Counters end in _total (Prometheus naming). */
struct metric {
	const char *name;
	const char *type;
	const char *help;
	double (*value)(const struct state_status *, const struct outbox_counts *);
};

#define VAL(fn, expr) \
	static double fn(const struct state_status *s, const struct outbox_counts *q) \
	{ (void)s; (void)q; return (double)(expr); }

VAL(v_imported, s->imported)
VAL(v_bytes, s->imported_bytes)
VAL(v_deleted, s->deleted)
VAL(v_pending, s->pending)
VAL(v_on_server, s->on_server)
VAL(v_elsewhere, s->seen_elsewhere)
VAL(v_dups, s->duplicates)
VAL(v_resets, s->uidl_resets)
VAL(v_last_poll, s->has_poll ? s->last.finished : 0)
VAL(v_last_ok, s->last_ok)
VAL(v_poll_ok, s->has_poll && s->last.ok)
VAL(v_queued, q->queued)
VAL(v_accepted, q->accepted)
VAL(v_sent, q->sent)
VAL(v_bounced, q->bounced)
VAL(v_skipped, s->skipped)
VAL(v_failures, s->sched.failures)
VAL(v_next_poll, s->sched.next_poll_at > s->sched.not_before ? s->sched.next_poll_at :
    s->sched.not_before)

static const struct metric metrics[] = {
	{ "pop3bridge_imported_messages_total", "counter",
	    "Messages imported into the store (all time).", v_imported },
	{ "pop3bridge_imported_bytes_total", "counter",
	    "Bytes of the imported messages, as stored.", v_bytes },
	{ "pop3bridge_deleted_messages_total", "counter",
	    "Messages deleted from the POP3 server after delivery.", v_deleted },
	{ "pop3bridge_pending_messages", "gauge",
	    "Messages being delivered, or left by an interrupted pass.", v_pending },
	{ "pop3bridge_on_server_messages", "gauge",
	    "Delivered messages still on the POP3 server.", v_on_server },
	{ "pop3bridge_seen_elsewhere_messages", "gauge",
	    "UIDLs adopted from another tool's state (import-state).", v_elsewhere },
	{ "pop3bridge_duplicates_total", "counter",
	    "Messages recorded at another account's copy (dedup).", v_dups },
	{ "pop3bridge_uidl_resets_total", "counter",
	    "UIDL resets of the server survived.", v_resets },
	{ "pop3bridge_last_poll_timestamp_seconds", "gauge",
	    "When the last pass ended (unix time; 0: never).", v_last_poll },
	{ "pop3bridge_last_success_timestamp_seconds", "gauge",
	    "When the last successful pass ended (unix time; 0: never).", v_last_ok },
	{ "pop3bridge_last_poll_ok", "gauge",
	    "1 if the last pass succeeded, else 0.", v_poll_ok },
	{ "pop3bridge_queue_messages", "gauge",
	    "Outbound messages queued (not yet sent or bounced).", v_queued },
	{ "pop3bridge_relay_accepted_total", "counter",
	    "Outbound messages accepted (relay or sendmail).", v_accepted },
	{ "pop3bridge_relay_delivered_total", "counter",
	    "Outbound messages every recipient of which was accepted upstream.", v_sent },
	{ "pop3bridge_relay_bounced_total", "counter",
	    "Outbound messages bounced (some recipient failed for good).", v_bounced },
	{ "pop3bridge_skipped_messages", "gauge",
	    "Messages skipped (left on the server, tried again every pass).", v_skipped },
	{ "pop3bridge_consecutive_failures", "gauge",
	    "Passes failed in a row (0: the last one worked).", v_failures },
	{ "pop3bridge_next_poll_timestamp_seconds", "gauge",
	    "When the next pass is planned (unix time; 0: not yet).", v_next_poll },
};
#define N_METRICS (sizeof metrics / sizeof *metrics)

/* A label value: backslash, double quote and newline escaped. */
static void
label(FILE *out, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(out, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", out);
		else
			fputc(*s, out);
	}
}

struct figures {
	struct state_status s;
	struct outbox_counts q;
};

static void
print_metrics(FILE *out, const struct conf *c, const struct figures *f)
{
	for (size_t m = 0; m < N_METRICS; m++) {
		fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", metrics[m].name, metrics[m].help,
		    metrics[m].name, metrics[m].type);
		for (size_t i = 0; i < c->n_accounts; i++) {
			fprintf(out, "%s{account=\"", metrics[m].name);
			label(out, c->accounts[i].name);
			fprintf(out, "\"} %.0f\n", metrics[m].value(&f[i].s, &f[i].q));
		}
	}
	fprintf(out, "# HELP pop3bridge_metrics_written_timestamp_seconds When this file was"
	    " written (unix time).\n# TYPE pop3bridge_metrics_written_timestamp_seconds gauge\n"
	    "pop3bridge_metrics_written_timestamp_seconds %lld\n", (long long)time(NULL));
}

int
metrics_print(FILE *out, const struct conf *c, char **err)
{
	struct figures *f = xcalloc(c->n_accounts ? c->n_accounts : 1, sizeof *f);
	struct state *st = NULL;
	size_t i;
	int r = -1;

	/* One read of everything first, so a state error leaves no half file. */
	if (state_open_dir(c->state_dir, false, &st, err) == -1)
		goto out;
	for (i = 0; i < c->n_accounts; i++)
		if (status_account(st, c->accounts[i].name, &f[i].s, &f[i].q, err) == -1) {
			char *e = xasprintf("%s: %s", c->accounts[i].name, *err);

			free(*err);
			*err = e;
			goto out;
		}
	print_metrics(out, c, f);
	r = 0;
out:
	for (i = 0; i < c->n_accounts; i++)
		state_status_free(&f[i].s);
	free(f);
	if (st)
		state_close(st);
	return r;
}

int
metrics_write(const struct conf *c, char **err)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *mem;
	int r;

	if (c->metrics_file == NULL)
		return 0;
	if ((mem = open_memstream(&buf, &len)) == NULL) {
		*err = xasprintf("metrics: out of memory");
		return -1;
	}
	r = metrics_print(mem, c, err);
	if (fclose(mem) != 0 && r == 0) {
		*err = xasprintf("metrics: out of memory");
		r = -1;
	}
	/* The collector runs as another user: the file is for everyone to read. */
	if (r == 0)
		r = io_write_atomic(c->metrics_file, buf, len, 0644, err);
	free(buf);
	return r;
}

#include "bridge/status.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "lib/log.h"
#include "lib/xmalloc.h"
#include "store/outbox.h"
#include "store/state.h"

static const char *
tls_name(enum conf_tls t)
{
	return t == CONF_TLS_IMPLICIT ? "implicit TLS" :
	    t == CONF_TLS_STARTTLS ? "STLS" : "no TLS";
}

static const char *
store_name(const struct conf *c)
{
	return c->store.type == CONF_STORE_IMAP ? "imap" : "maildir";
}

static void
print_time(FILE *out, int64_t t)
{
	char buf[64];
	time_t tt = (time_t)t;
	struct tm tm;

	strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %z", localtime_r(&tt, &tm));
	fputs(buf, out);
}

static void
json_string(FILE *out, const char *s)
{
	if (s == NULL) {
		fputs("null", out);
		return;
	}
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(out, "\\u%04x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

static void
json_time(FILE *out, int64_t t)
{
	char buf[32];
	time_t tt = (time_t)t;
	struct tm tm;

	if (t == 0) {
		fputs("null", out);
		return;
	}
	strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&tt, &tm));
	fprintf(out, "\"%s\"", buf);
}

static void
print_json(FILE *out, const struct conf *c, const struct conf_account *a,
    const struct state_status *s, const struct outbox_counts *q, bool first)
{
	char *where = conf_store_location(c, a);

	fprintf(out, "%s\n    {\"name\": ", first ? "" : ",");
	json_string(out, a->name);
	fprintf(out, ", \"store\": \"%s\", \"store_location\": ", store_name(c));
	json_string(out, where);
	fputs(", \"folder\": ", out);
	json_string(out, a->folder);
	fputs(", \"last_poll\": ", out);
	json_time(out, s->has_poll ? s->last.finished : 0);
	fprintf(out, ", \"last_result\": %s", !s->has_poll ? "null" :
	    s->last.ok ? "\"ok\"" : "\"error\"");
	fputs(", \"last_ok\": ", out);
	json_time(out, s->last_ok);
	fprintf(out, ", \"last_imported\": %lu, \"imported\": %lu, \"pending\": %lu, "
	    "\"on_server\": %lu, \"no_uidl\": %s, \"last_error\": ",
	    s->has_poll ? s->last.imported : 0, s->imported, s->pending, s->on_server,
	    s->no_uidl ? "true" : "false");
	json_string(out, s->last_error);
	fputs(", \"last_error_at\": ", out);
	json_time(out, s->last_error_at);
	fprintf(out, ", \"imap_locations\": %lu, \"duplicates\": %lu, \"uidl_resets\": %lu"
	    ", \"warning\": ", s->imap_locations, s->duplicates, s->uidl_resets);
	json_string(out, s->warning);
	fputs(", \"warning_at\": ", out);
	json_time(out, s->warning_at);
	fprintf(out, ", \"seen_elsewhere\": %lu, \"imported_bytes\": %" PRIu64
	    ", \"deleted\": %lu, \"queued\": %lu, \"relay_accepted\": %lu"
	    ", \"relay_delivered\": %lu, \"relay_bounced\": %lu", s->seen_elsewhere,
	    s->imported_bytes, s->deleted, q->queued, q->accepted, q->sent, q->bounced);
	fputc('}', out);
	free(where);
}

static void
print_text(FILE *out, const struct conf *c, const struct conf_account *a,
    const struct state_status *s, const struct outbox_counts *q)
{
	char *where = conf_store_location(c, a);

	fprintf(out, "%s: %s:%u -> %s, folder %s\n", a->name, a->pop3.host,
	    a->pop3.port, where, a->folder);
	free(where);
	if (!s->has_poll)
		fputs("  last poll: never\n", out);
	else {
		fputs("  last poll: ", out);
		print_time(out, s->last.finished);
		if (s->last.ok)
			fprintf(out, ", ok, %lu imported, %lu deleted\n", s->last.imported,
			    s->last.deleted);
		else
			fprintf(out, ", failed: %s\n", s->last.error ? s->last.error : "?");
	}
	fprintf(out, "  messages: %lu imported, %lu pending, %lu still on the server\n",
	    s->imported, s->pending, s->on_server);
	if (s->duplicates > 0)
		fprintf(out, "  of which %lu already stored for another account (dedup)\n",
		    s->duplicates);
	if (s->seen_elsewhere > 0)
		fprintf(out, "  and %lu fetched by another tool before the switch (import-state)\n",
		    s->seen_elsewhere);
	if (q->accepted > 0)
		fprintf(out, "  sent: %lu accepted, %lu delivered, %lu bounced, %lu queued\n",
		    q->accepted, q->sent, q->bounced, q->queued);
	if (s->no_uidl)
		fputs("  note: the server has no UIDL; messages are identified by size and header hash\n",
		    out);
	if (s->warning) {
		fputs("  warning: ", out);
		print_time(out, s->warning_at);
		fprintf(out, ": %s\n", s->warning);
	}
	if (s->last_error) {
		fputs("  last error: ", out);
		print_time(out, s->last_error_at);
		fprintf(out, ": %s\n", s->last_error);
	}
}

int
status_account(struct state *st, const char *name, struct state_status *s,
    struct outbox_counts *q, char **err)
{
	int64_t id;

	memset(s, 0, sizeof *s);
	memset(q, 0, sizeof *q);
	if (st == NULL)
		return 0;
	if (state_account(st, name, &id, err) == -1 || outbox_counts(st, id, q, err) == -1)
		return -1;
	return state_status(st, id, s, err);
}

int
status_print(FILE *out, const struct conf *c, bool json)
{
	struct state *st = NULL;
	char *err = NULL;
	int rc = EX_OK;

	/* No database yet: nothing ever ran; do not create one just to look. */
	if (state_open_dir(c->state_dir, false, &st, &err) == -1) {
		log_warnx("%s", err);
		free(err);
		return EX_IOERR;
	}
	if (json)
		fputs("{\"accounts\": [", out);
	for (size_t i = 0; i < c->n_accounts; i++) {
		struct state_status s;
		struct outbox_counts q;

		if (status_account(st, c->accounts[i].name, &s, &q, &err) == -1) {
			log_warnx("%s: %s", c->accounts[i].name, err);
			free(err);
			rc = EX_IOERR;
			break;
		}
		if (json)
			print_json(out, c, &c->accounts[i], &s, &q, i == 0);
		else
			print_text(out, c, &c->accounts[i], &s, &q);
		state_status_free(&s);
	}
	if (json)
		fputs("\n]}\n", out);
	if (st)
		state_close(st);
	return rc;
}

static const char *
state_name(const struct state_msg *m)
{
	enum state_msg_state s = m->state;

	if (state_msg_seen_elsewhere(m))
		return s == STATE_DELIVERED ?
		    "fetched by another tool before the switch (import-state), not in this store" :
		    "fetched by another tool (import-state), since deleted from the server";
	return s == STATE_PENDING ? "pending (being delivered, or a pass was interrupted)" :
	    s == STATE_DELIVERED ? "delivered" : "delivered, since deleted from the server";
}

static void
print_where(FILE *out, const struct conf *c, const struct conf_account *a,
    const struct state_msg *m)
{
	char *where = conf_store_location(c, a);

	fprintf(out, "%s %s\n  state:      %s\n  store:      %s\n", a->name, m->uidl,
	    state_name(m), where);
	fprintf(out, "  folder:     %s\n  location:   %s\n", m->folder,
	    m->location ? m->location : "(not yet known)");
	if (m->uid != 0)
		fprintf(out, "  imap:       UIDVALIDITY %" PRIu32 " UID %" PRIu32 "\n",
		    m->uidvalidity, m->uid);
	if (m->duplicate_of != 0)
		fprintf(out, "  duplicate:  stored once, as account %s's copy (dedup)\n",
		    m->duplicate_of_name ? m->duplicate_of_name : "?");
	fprintf(out, "  message-id: %s\n  size:       %" PRIu64 " bytes\n  fetched:    ",
	    m->message_id ? m->message_id : "(none)", m->size);
	print_time(out, m->fetched_at);
	if (m->state != STATE_PENDING) {
		fputs("\n  delivered:  ", out);
		print_time(out, m->delivered_at);
	}
	fputc('\n', out);
	free(where);
}

int
status_where(FILE *out, const struct conf *c, const char *account, const char *uidl)
{
	const struct conf_account *a = conf_account(c, account);
	struct state *st;
	struct state_msg m;
	char *err = NULL;
	int64_t id;
	int r;

	if (a == NULL) {
		log_warnx("no account \"%s\" in %s", account, c->path);
		return EX_USAGE;
	}
	/* No database yet: no message was ever imported. */
	if ((r = state_open_dir(c->state_dir, false, &st, &err)) == 0 && st != NULL &&
	    (r = state_account(st, a->name, &id, &err)) == 0)
		r = state_find(st, id, uidl, &m, &err);
	if (st)
		state_close(st);
	if (r == -1) {
		if (err != NULL)
			log_warnx("%s: %s", a->name, err);
		free(err);
		return EX_IOERR;
	}
	if (r == 0) {
		log_warnx("%s: no message with UIDL %s was imported", a->name, uidl);
		return 1;
	}
	print_where(out, c, a, &m);
	state_msg_clear(&m);
	return EX_OK;
}

void
status_print_config(FILE *out, const struct conf *c)
{
	fprintf(out, "%s: ok, %zu account%s", c->path, c->n_accounts,
	    c->n_accounts == 1 ? "" : "s");
	if (c->shard_n > 1)
		fprintf(out, " in shard %u/%u", c->shard_k, c->shard_n);
	fprintf(out, ", state in %s, up to %u in parallel\n", c->state_dir, c->max_parallel);
	for (size_t i = 0; i < c->n_accounts; i++) {
		const struct conf_account *a = &c->accounts[i];
		char *where = conf_store_location(c, a);

		fprintf(out, "  %s: %s@%s:%u (%s) -> %s, folder %s, ", a->name,
		    a->pop3.user ? a->pop3.user : "", a->pop3.host, a->pop3.port,
		    tls_name(a->pop3.tls), where, a->folder);
		if (!a->leave_on_server)
			fputs("delete after import", out);
		else if (a->delete_after_days)
			fprintf(out, "delete after %u days", a->delete_after_days);
		else
			fputs("leave on server", out);
		fprintf(out, ", every %us\n", a->poll_interval ? a->poll_interval : c->poll_interval);
		free(where);
	}
}

#include "bridge/status.h"

#include <inttypes.h>
#include <stdio.h>
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

/* Skipped messages shown per account, the most recent first. */
#define SKIPPED_SHOWN 5
#define SKIPPED_JSON 100

/* What status knows of one account. */
struct acct_status {
	struct state_status s;
	struct outbox_counts counts;    /* its outbound mail, all time */
	struct state_skip *skips;
	size_t n_skips;
	struct outbox_summary q;        /* its outbound queue */
};

/* The account's outbound queue: what waits for delivery, and what was
 * sent or bounced but not filed yet (a Sent copy or bounce the store
 * refused is retried, never reported as done). */
static void
json_outbox(FILE *out, const struct outbox_summary *q)
{
	fprintf(out, ", \"outbox\": {\"queued\": %zu, \"next_attempt\": ", q->queued);
	json_time(out, q->next_attempt);
	fprintf(out, ", \"unfiled\": %zu, \"next_filing\": ", q->unfiled);
	json_time(out, q->next_filing);
	fputs(", \"filing_error\": ", out);
	json_string(out, q->filing_error);
	fputc('}', out);
}

static void
text_outbox(FILE *out, const struct outbox_summary *q)
{
	if (q->queued > 0) {
		fprintf(out, "  outbox: %zu queued, next attempt ", q->queued);
		print_time(out, q->next_attempt);
		fputc('\n', out);
	}
	if (q->unfiled > 0) {
		fprintf(out, "  outbox: %zu sent or bounced, Sent copy or bounce pending, next"
		    " try ", q->unfiled);
		print_time(out, q->next_filing);
		fprintf(out, ": %s\n", q->filing_error ? q->filing_error : "not tried yet");
	}
}

/* The server's EXPIRE (RFC 2449) against the account's deletion policy:
 * a warning (allocated) when the server deletes retrieved mail sooner
 * than the account means to keep it, NULL otherwise. */
static char *
expire_warning(const struct conf_account *a, long expire)
{
	if (expire < 0 || !a->leave_on_server)
		return NULL;	/* not announced, NEVER, or we delete first */
	if (a->delete_after_days > 0 && (unsigned long)expire >= a->delete_after_days)
		return NULL;
	if (expire == 0)
		return xasprintf("the server deletes every message it sends at the end of"
		    " the session (EXPIRE 0) although %s", a->delete_after_days > 0 ?
		    "delete_after_days is set" : "leave_on_server = true");
	if (a->delete_after_days > 0)
		return xasprintf("the server deletes retrieved mail after %ld days (EXPIRE"
		    " %ld) although delete_after_days = %u", expire, expire,
		    a->delete_after_days);
	return xasprintf("the server deletes retrieved mail after %ld days (EXPIRE %ld)"
	    " although leave_on_server = true", expire, expire);
}

static void
json_int_or_null(FILE *out, const char *name, bool known, long long v)
{
	if (known)
		fprintf(out, ", \"%s\": %lld", name, v);
	else
		fprintf(out, ", \"%s\": null", name);
}

/* The fields of schema 4: the server's facts, the schedule, skipped
 * messages (contract: "skipped" is their count, "next_poll" the planned
 * pass). */
static void
print_json_server(FILE *out, const struct conf_account *a, const struct acct_status *as)
{
	const struct state_status *s = &as->s;
	const struct state_sched *sc = &s->sched;
	char *warn = expire_warning(a, sc->server_expire);

	fputs(", \"next_poll\": ", out);
	json_time(out, sc->next_poll_at > sc->not_before ? sc->next_poll_at : sc->not_before);
	fputs(", \"not_before\": ", out);
	json_time(out, sc->not_before);
	json_int_or_null(out, "login_delay", sc->login_delay >= 0, sc->login_delay);
	if (sc->server_expire == -1)
		fputs(", \"server_expire\": \"never\"", out);
	else
		json_int_or_null(out, "server_expire", sc->server_expire >= 0,
		    sc->server_expire);
	fputs(", \"expire_warning\": ", out);
	json_string(out, warn);
	fputs(", \"last_auth\": ", out);
	json_string(out, s->last_auth);
	fprintf(out, ", \"failures\": %lu, \"failing_since\": ", sc->failures);
	json_time(out, sc->failing_since);
	fprintf(out, ", \"last_deleted\": %lu, \"last_server_deleted\": %lu"
	    ", \"last_skipped\": %lu, \"skipped\": %lu, \"skipped_messages\": [",
	    s->has_poll ? s->last.deleted : 0, s->has_poll ? s->last.server_deleted : 0,
	    s->has_poll ? s->last.skipped : 0, s->skipped);
	for (size_t i = 0; i < as->n_skips && i < SKIPPED_JSON; i++) {
		const struct state_skip *k = &as->skips[i];

		fputs(i == 0 ? "{\"uidl\": " : ", {\"uidl\": ", out);
		json_string(out, k->uidl);
		fprintf(out, ", \"size\": %" PRIu64 ", \"reason\": ", k->pop3_size);
		json_string(out, k->reason);
		fputs(", \"first_at\": ", out);
		json_time(out, k->first_at);
		fputs(", \"last_at\": ", out);
		json_time(out, k->last_at);
		fprintf(out, ", \"times\": %lu}", k->times);
	}
	fputc(']', out);
	free(warn);
}

static void
print_json(FILE *out, const struct conf *c, const struct conf_account *a,
    const struct acct_status *as, bool first)
{
	const struct state_status *s = &as->s;
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
	print_json_server(out, a, as);
	fprintf(out, ", \"backoff\": ");
	if (s->sched.failures > 0 && s->has_poll && s->sched.next_poll_at > s->last.finished)
		fprintf(out, "%lld", (long long)(s->sched.next_poll_at - s->last.finished));
	else
		fputs("null", out);
	fprintf(out, ", \"seen_elsewhere\": %lu, \"imported_bytes\": %" PRIu64
	    ", \"deleted\": %lu, \"queued\": %lu, \"relay_accepted\": %lu"
	    ", \"relay_delivered\": %lu, \"relay_bounced\": %lu", s->seen_elsewhere,
	    s->imported_bytes, s->deleted, as->counts.queued, as->counts.accepted,
	    as->counts.sent, as->counts.bounced);
	json_outbox(out, &as->q);
	fputc('}', out);
	free(where);
}

/* The server's facts, the schedule and skipped messages, as text. */
static void
print_text_server(FILE *out, const struct conf_account *a, const struct acct_status *as)
{
	const struct state_status *s = &as->s;
	const struct state_sched *sc = &s->sched;
	char *warn = expire_warning(a, sc->server_expire);
	int64_t next = sc->next_poll_at > sc->not_before ? sc->next_poll_at : sc->not_before;

	if (s->last_auth != NULL || sc->login_delay >= 0 || sc->server_expire != STATE_EXPIRE_NONE) {
		const char *sep = " ";

		fputs("  server:", out);
		if (s->last_auth != NULL) {
			fprintf(out, "%slogs in with %s", sep, s->last_auth);
			sep = ", ";
		}
		if (sc->login_delay >= 0) {
			fprintf(out, "%sLOGIN-DELAY %ld s", sep, sc->login_delay);
			sep = ", ";
		}
		if (sc->server_expire == -1)
			fprintf(out, "%sEXPIRE NEVER", sep);
		else if (sc->server_expire >= 0)
			fprintf(out, "%sEXPIRE %ld", sep, sc->server_expire);
		fputc('\n', out);
	}
	if (next != 0) {
		fputs("  next poll: ", out);
		print_time(out, next);
		if (sc->not_before != 0 && sc->not_before >= next && sc->not_before > time(NULL))
			fputs(sc->login_delay > 0 ? " (the server's LOGIN-DELAY)" :
			    " (the server refused a login for now)", out);
		fputc('\n', out);
	}
	if (sc->failures > 1) {
		fprintf(out, "  failing: %lu passes in a row since ", sc->failures);
		print_time(out, sc->failing_since);
		fputc('\n', out);
	}
	if (warn != NULL)
		fprintf(out, "  warning: %s\n", warn);
	free(warn);
	if (s->skipped > 0)
		fprintf(out, "  skipped: %lu message%s left on the server, tried again every pass\n",
		    s->skipped, s->skipped == 1 ? "" : "s");
	for (size_t i = 0; i < as->n_skips && i < SKIPPED_SHOWN; i++) {
		const struct state_skip *k = &as->skips[i];

		fprintf(out, "    UIDL %s (%" PRIu64 " octets): %s; %lu time%s since ", k->uidl,
		    k->pop3_size, k->reason, k->times, k->times == 1 ? "" : "s");
		print_time(out, k->first_at);
		fputc('\n', out);
	}
}

static void
print_text(FILE *out, const struct conf *c, const struct conf_account *a,
    const struct acct_status *as)
{
	const struct state_status *s = &as->s;
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
			fprintf(out, ", ok, %lu imported, %lu deleted", s->last.imported,
			    s->last.deleted);
		else
			fprintf(out, ", failed: %s", s->last.error ? s->last.error : "?");
		if (s->last.server_deleted > 0)
			fprintf(out, "; %lu deleted by the server (EXPIRE 0)",
			    s->last.server_deleted);
		fputc('\n', out);
	}
	fprintf(out, "  messages: %lu imported, %lu pending, %lu still on the server\n",
	    s->imported, s->pending, s->on_server);
	if (s->duplicates > 0)
		fprintf(out, "  of which %lu already stored for another account (dedup)\n",
		    s->duplicates);
	if (s->seen_elsewhere > 0)
		fprintf(out, "  and %lu fetched by another tool before the switch (import-state)\n",
		    s->seen_elsewhere);
	if (as->counts.accepted > 0)
		fprintf(out, "  sent: %lu accepted, %lu delivered, %lu bounced, %lu queued\n",
		    as->counts.accepted, as->counts.sent, as->counts.bounced, as->counts.queued);
	if (s->sched.failures > 0 && s->has_poll && s->sched.next_poll_at > s->last.finished)
		fprintf(out, "  backoff: %lld s after failure %lu (retried later than every %u s)\n",
		    (long long)(s->sched.next_poll_at - s->last.finished), s->sched.failures,
		    a->poll_interval);
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
	print_text_server(out, a, as);
	text_outbox(out, &as->q);
}

int
status_account(struct state *st, const char *name, struct state_status *s,
    struct outbox_counts *q, char **err)
{
	int64_t id;

	memset(s, 0, sizeof *s);
	memset(q, 0, sizeof *q);
	s->sched.login_delay = -1;
	s->sched.server_expire = STATE_EXPIRE_NONE;
	if (st == NULL)
		return 0;
	if (state_account(st, name, &id, err) == -1 || outbox_counts(st, id, q, err) == -1)
		return -1;
	return state_status(st, id, s, err);
}

static int
account_status(struct state *st, const char *name, struct acct_status *as, char **err)
{
	int64_t id;

	memset(as, 0, sizeof *as);
	if (status_account(st, name, &as->s, &as->counts, err) == -1)
		return -1;
	if (st == NULL)
		return 0;
	if (state_account(st, name, &id, err) == -1)
		return -1;
	if (state_skipped(st, id, &as->skips, &as->n_skips, err) == -1) {
		state_status_free(&as->s);
		return -1;
	}
	if (outbox_summary(st, name, &as->q, err) == -1) {
		state_status_free(&as->s);
		state_skips_free(as->skips, as->n_skips);
		return -1;
	}
	return 0;
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
		struct acct_status s;

		if (account_status(st, c->accounts[i].name, &s, &err) == -1) {
			log_warnx("%s: %s", c->accounts[i].name, err);
			free(err);
			rc = EX_IOERR;
			break;
		}
		if (json)
			print_json(out, c, &c->accounts[i], &s, i == 0);
		else
			print_text(out, c, &c->accounts[i], &s);
		state_status_free(&s.s);
		state_skips_free(s.skips, s.n_skips);
		outbox_summary_free(&s.q);
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

/* A message not imported may be a skipped one: says why. 0 when it is. */
static int
where_skipped(struct state *st, int64_t id, const char *name, const char *uidl)
{
	struct state_skip *k = NULL;
	size_t n = 0;
	char *err = NULL;
	int r = 1;

	if (state_skipped(st, id, &k, &n, &err) == -1) {
		free(err);
		return -1;
	}
	for (size_t i = 0; i < n && r != 0; i++)
		if (strcmp(k[i].uidl, uidl) == 0) {
			log_warnx("%s: message UIDL %s was not imported: skipped %lu time%s, left on"
			    " the server: %s", name, uidl, k[i].times, k[i].times == 1 ? "" : "s",
			    k[i].reason);
			r = 0;
		}
	state_skips_free(k, n);
	return r;
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
	if (r == 0 && st != NULL && where_skipped(st, id, a->name, uidl) == 0)
		r = 2;
	if (st)
		state_close(st);
	if (r == -1) {
		if (err != NULL)
			log_warnx("%s: %s", a->name, err);
		free(err);
		return EX_IOERR;
	}
	if (r == 2)
		return 1;
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

#include "bridge/status.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>

#include "bridge/log.h"
#include "bridge/xmalloc.h"
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
    const struct state_status *s, bool first)
{
	char *path = conf_store_path(c, a);

	fprintf(out, "%s\n    {\"name\": ", first ? "" : ",");
	json_string(out, a->name);
	fprintf(out, ", \"store\": \"%s\", \"store_path\": ", store_name(c));
	json_string(out, path);
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
	fputc('}', out);
	free(path);
}

static void
print_text(FILE *out, const struct conf *c, const struct conf_account *a,
    const struct state_status *s)
{
	char *path = conf_store_path(c, a);

	fprintf(out, "%s: %s:%u -> %s %s, folder %s\n", a->name, a->pop3.host,
	    a->pop3.port, store_name(c), path, a->folder);
	free(path);
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
	if (s->no_uidl)
		fputs("  note: the server has no UIDL; messages are identified by size and header hash\n",
		    out);
	if (s->last_error) {
		fputs("  last error: ", out);
		print_time(out, s->last_error_at);
		fprintf(out, ": %s\n", s->last_error);
	}
}

static int
account_status(struct state *st, const char *name, struct state_status *s, char **err)
{
	int64_t id;

	memset(s, 0, sizeof *s);
	if (st == NULL)
		return 0;
	if (state_account(st, name, &id, err) == -1)
		return -1;
	return state_status(st, id, s, err);
}

int
status_print(FILE *out, const struct conf *c, bool json)
{
	char *path = xasprintf("%s/state.db", c->state_dir), *err = NULL;
	struct state *st = NULL;
	struct stat sb;
	int rc = EX_OK;

	/* No database yet: nothing ever ran; do not create one just to look. */
	if (stat(path, &sb) == 0 && state_open(path, &st, &err) == -1) {
		log_warnx("%s", err);
		free(err);
		free(path);
		return EX_IOERR;
	}
	free(path);
	if (json)
		fputs("{\"accounts\": [", out);
	for (size_t i = 0; i < c->n_accounts; i++) {
		struct state_status s;

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
		state_status_free(&s);
	}
	if (json)
		fputs("\n]}\n", out);
	if (st)
		state_close(st);
	return rc;
}

void
status_print_config(FILE *out, const struct conf *c)
{
	fprintf(out, "%s: ok, %zu account%s, state in %s, up to %u in parallel\n", c->path,
	    c->n_accounts, c->n_accounts == 1 ? "" : "s", c->state_dir, c->max_parallel);
	for (size_t i = 0; i < c->n_accounts; i++) {
		const struct conf_account *a = &c->accounts[i];
		char *path = conf_store_path(c, a);

		fprintf(out, "  %s: %s@%s:%u (%s) -> %s %s, folder %s, ", a->name,
		    a->pop3.user ? a->pop3.user : "", a->pop3.host, a->pop3.port,
		    tls_name(a->pop3.tls), store_name(c), path, a->folder);
		if (!a->leave_on_server)
			fputs("delete after import", out);
		else if (a->delete_after_days)
			fprintf(out, "delete after %u days", a->delete_after_days);
		else
			fputs("leave on server", out);
		fprintf(out, ", every %us\n", a->poll_interval ? a->poll_interval : c->poll_interval);
		free(path);
	}
}

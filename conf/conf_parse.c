/* The libconfuse side of conf/: the option tables, the callbacks that
 * learn where each value sits in the file, and the conversion into the
 * plain structs of conf.h. No libconfuse type leaves this file.
 *
 * Lines. libconfuse 3.3 keeps no line per option, only the current line
 * of the lexer (cfg_t.line). A validation callback runs on every option
 * right after its value is read, while that line is the value's; we record
 * it there. A block's own line is caught by a hidden option, SECTION_LINE,
 * whose default is parsed (and validated) the moment the block opens. */
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <confuse.h>

#include "conf/conf_priv.h"
#include "lib/log.h"
#include "lib/xmalloc.h"

#define SECTION_LINE	"@line"
#define DEFAULT_LISTEN	"127.0.0.1:1587"

#define MAX_TIMEOUT	86400		/* a day per protocol step */
#define MAX_INTERVAL	(30 * 86400)	/* poll at least monthly */
#define MAX_DAYS	36500
#define MAX_LIFETIME	(365 * 86400)
#define MAX_BATCH	1000000
#define MIN_MESSAGE	1024		/* max_message_size bounds: 1 KiB .. 1 TiB */
#define MAX_MESSAGE	(1L << 40)
#define MAX_PASS	(7 * 86400)	/* a pass may take at most a week */

/* Declared first in every block, see the top of the file. */
#define SECTION_LINE_OPT { .name = SECTION_LINE, .type = CFGT_STR, \
	.def = { .parsed = (char *)"0" } }

/* The keys of every server block (pop3, smtp, store). A macro rather than
 * a shared table: libconfuse wants each block's options in one array, and
 * hook_options() writes into each entry. Keys are looked up by name, so
 * their order in a table does not matter. */
#define SERVER_OPTS \
	CFG_STR("host", NULL, CFGF_NONE), \
	CFG_INT("port", 0, CFGF_NONE), \
	CFG_STR("tls", "implicit", CFGF_NONE), \
	CFG_STR("user", NULL, CFGF_NONE), \
	CFG_STR("password", NULL, CFGF_NONE), \
	CFG_STR("password_command", NULL, CFGF_NONE), \
	CFG_STR("ca_file", NULL, CFGF_NONE), \
	CFG_INT("timeout", 60, CFGF_NONE), \
	CFG_BOOL("allow_plaintext", cfg_false, CFGF_NONE)

static cfg_opt_t pop3_opts[] = {
	SECTION_LINE_OPT,
	SERVER_OPTS,
	CFG_STR("auth", "auto", CFGF_NONE),
	CFG_END()
};

static cfg_opt_t smtp_opts[] = {
	SECTION_LINE_OPT,
	SERVER_OPTS,
	CFG_STR("auth", "auto", CFGF_NONE),
	CFG_END()
};

static cfg_opt_t store_opts[] = {
	SECTION_LINE_OPT,
	CFG_STR("type", "maildir", CFGF_NONE),
	CFG_STR("path", "~/Maildir", CFGF_NONE),
	SERVER_OPTS,
	CFG_STR("auth", "auto", CFGF_NONE),
	CFG_STR("master_user", NULL, CFGF_NONE),
	CFG_STR("dedup", NULL, CFGF_NONE),
	CFG_END()
};

static cfg_opt_t account_opts[] = {
	SECTION_LINE_OPT,
	CFG_STR("local_user", NULL, CFGF_NONE),
	CFG_STR("folder", "INBOX", CFGF_NONE),
	CFG_INT("poll_interval", 0, CFGF_NONE),
	CFG_INT("max_message_size", 0, CFGF_NONE),
	CFG_INT("pass_timeout", 0, CFGF_NONE),
	CFG_BOOL("import_seen", cfg_false, CFGF_NONE),
	CFG_BOOL("leave_on_server", cfg_true, CFGF_NONE),
	CFG_INT("delete_after_days", 0, CFGF_NONE),
	CFG_INT("uidl_reset_threshold", 50, CFGF_NONE),
	CFG_SEC("pop3", pop3_opts, CFGF_MULTI),
	CFG_SEC("smtp", smtp_opts, CFGF_MULTI),
	CFG_STR_LIST("addresses", NULL, CFGF_NONE),
	CFG_STR("sent_folder", "Sent", CFGF_NONE),
	CFG_END()
};

static cfg_opt_t relay_opts[] = {
	SECTION_LINE_OPT,
	/* No libconfuse default: its values would take the first line
	 * records; conv_relay() applies DEFAULT_LISTEN. */
	CFG_STR_LIST("listen", NULL, CFGF_NONE),
	CFG_STR("tls_cert", NULL, CFGF_NONE),
	CFG_STR("tls_key", NULL, CFGF_NONE),
	CFG_STR("passwd_file", "/etc/pop3bridge/users", CFGF_NONE),
	CFG_INT("queue_lifetime", 432000, CFGF_NONE),
	CFG_STR_LIST("listen_tls", NULL, CFGF_NONE),
	CFG_INT("max_message_size", 36700160, CFGF_NONE),
	CFG_INT("max_recipients", 100, CFGF_NONE),
	CFG_INT("max_connections", 20, CFGF_NONE),
	CFG_INT("timeout", 300, CFGF_NONE),
	CFG_INT("retry_initial", 60, CFGF_NONE),
	CFG_INT("upstream_connections", 4, CFGF_NONE),
	CFG_END()
};

/* Every block may be given more than once as far as libconfuse goes
 * (CFGF_MULTI): that is what gives each instance its SECTION_LINE callback.
 * one_section() then refuses repeats. */
static cfg_opt_t root_opts[] = {
	CFG_STR("state_dir", "~/.local/state/pop3bridge", CFGF_NONE),
	CFG_INT("poll_interval", 300, CFGF_NONE),
	CFG_INT("max_parallel", 4, CFGF_NONE),
	CFG_INT("max_per_host", 2, CFGF_NONE),
	CFG_INT("batch_messages", 500, CFGF_NONE),
	CFG_INT("batch_bytes", 67108864, CFGF_NONE),
	CFG_STR("metrics_file", "", CFGF_NONE),
	CFG_STR("include_dir", "", CFGF_NONE),
	/* Import: a message whose LIST size is larger is skipped (left on
	 * the server, reported). 100 MiB is above what mail providers accept
	 * (Gmail, Outlook.com, Yahoo: 25-50 MB; Microsoft 365 at most 150 MB,
	 * 35 MB by default) and keeps one RETR within 300 MiB of disk. */
	CFG_INT("max_message_size", 104857600, CFGF_NONE),
	CFG_INT("pass_timeout", 3600, CFGF_NONE),
	CFG_SEC("store", store_opts, CFGF_MULTI),
	CFG_SEC("account", account_opts, CFGF_MULTI | CFGF_TITLE),
	CFG_SEC("relay", relay_opts, CFGF_MULTI),
	CFG_END()
};

static const char *const tls_names[] = { "implicit", "starttls", "none", NULL };
/* pop3 {} auth: the names, and the enum conf_auth value of each. */
static const char *const auth_names[] = {
	"auto", "user", "apop", "plain", "xoauth2", "oauthbearer", NULL
};
static const enum conf_auth auth_values[] = {
	CONF_AUTH_AUTO, CONF_AUTH_USER, CONF_AUTH_APOP, CONF_AUTH_PLAIN, CONF_AUTH_XOAUTH2,
	CONF_AUTH_OAUTHBEARER
};
/* smtp {} auth: the names, and the enum conf_auth value of each. */
static const char *const smtp_auth_names[] = {
	"auto", "plain", "login", "xoauth2", "oauthbearer", NULL
};
static const enum conf_auth smtp_auth_values[] = {
	CONF_AUTH_AUTO, CONF_AUTH_PLAIN, CONF_AUTH_LOGIN, CONF_AUTH_XOAUTH2,
	CONF_AUTH_OAUTHBEARER
};
/* store {} auth (type = "imap"), likewise. */
static const char *const imap_auth_names[] = {
	"auto", "login", "plain", "xoauth2", "oauthbearer", NULL
};
static const enum conf_auth imap_auth_values[] = {
	CONF_AUTH_AUTO, CONF_AUTH_LOGIN, CONF_AUTH_PLAIN, CONF_AUTH_XOAUTH2,
	CONF_AUTH_OAUTHBEARER
};
static const char *const store_names[] = { "maildir", "imap", NULL };

enum server_kind { KIND_POP3, KIND_SMTP, KIND_IMAP };
/* [kind][tls != implicit] */
static const unsigned default_port[3][2] = {
	{ 995, 110 }, { 465, 587 }, { 993, 143 }
};

/* Where one value was read: section, option, index in a list. */
struct rec {
	cfg_t		*sec;
	const char	*name;		/* libconfuse's copy, lives with sec */
	unsigned	 idx;
	int		 line;
	size_t		 hash;		/* rec_hash(), kept: a freed section's
					   name must not be read again */
};

struct title {
	char		*name;
	int		 line;
};

/* The parse in progress. libconfuse's callbacks get no user pointer, and
 * its lexer is global state anyway: one parse runs at a time. */
static struct parse {
	struct conf_load	*ld;
	struct rec		*recs;		/* sec NULL: forgotten */
	size_t			 n_recs;
	size_t			*slots;		/* recs by key: index + 1, 0 empty */
	size_t			 n_slots;	/* a power of 2, at least 2 n_recs */
	struct title		*titles;	/* account names seen */
	size_t			 n_titles;
	bool			 synthetic;	/* making a default block */
} *P;

/* The records are found by a hash of their key: a linear search made
 * loading 1,000 accounts (10,000 values) take half a second. */
static size_t
rec_hash(const cfg_t *sec, const char *name, unsigned idx)
{
	size_t h = (size_t)(uintptr_t)sec * 0x9e3779b97f4a7c15u ^ idx;

	for (const unsigned char *c = (const unsigned char *)name; *c != '\0'; c++)
		h = (h ^ *c) * 0x100000001b3u;
	return h;
}

static void
rec_index(size_t i)
{
	size_t m = P->n_slots - 1, k = P->recs[i].hash & m;

	while (P->slots[k] != 0)
		k = (k + 1) & m;
	P->slots[k] = i + 1;
}

/* The index again, for n records (and room for as many again). */
static void
rec_reindex(size_t n)
{
	size_t want = 16;

	while (want < 2 * n)
		want *= 2;
	if (want > P->n_slots) {
		free(P->slots);
		P->slots = xcalloc(want, sizeof *P->slots);
		P->n_slots = want;
	} else
		memset(P->slots, 0, P->n_slots * sizeof *P->slots);
	for (size_t i = 0; i < P->n_recs; i++)
		if (P->recs[i].sec != NULL)
			rec_index(i);
}

static struct rec *
rec_find(cfg_t *sec, const char *name, unsigned idx)
{
	size_t m, k, h = rec_hash(sec, name, idx);

	if (P->n_slots == 0)
		return NULL;
	m = P->n_slots - 1;
	for (k = h & m; P->slots[k] != 0; k = (k + 1) & m) {
		struct rec *r = &P->recs[P->slots[k] - 1];

		if (r->hash == h && r->sec == sec && r->idx == idx && strcmp(r->name, name) == 0)
			return r;
	}
	return NULL;
}

static void
rec_set(cfg_t *sec, const char *name, unsigned idx, int line, bool replace)
{
	struct rec *r = rec_find(sec, name, idx);

	if (r != NULL) {
		if (replace)
			r->line = line;
		return;
	}
	P->recs = xreallocarray(P->recs, P->n_recs + 1, sizeof *P->recs);
	P->recs[P->n_recs++] = (struct rec){ sec, name, idx, line, rec_hash(sec, name, idx) };
	if (2 * P->n_recs > P->n_slots)
		rec_reindex(P->n_recs);
	else
		rec_index(P->n_recs - 1);
}

/* The real line of a value; 0 when it was not in the file. */
static int
opt_line(cfg_t *sec, const char *name, unsigned idx)
{
	struct rec *r = rec_find(sec, name, idx);

	return r != NULL ? r->line : 0;
}

static int
sec_line(cfg_t *sec)
{
	return opt_line(sec, SECTION_LINE, 0);
}

static void
check_duplicate(const char *name, int line)
{
	size_t i;

	for (i = 0; i < P->n_titles; i++) {
		if (strcmp(P->titles[i].name, name) != 0)
			continue;
		if (conf_name_ok(name))
			conf_err(P->ld, line, "account \"%s\" is defined twice "
			    "(first at line %d)", name, P->titles[i].line);
		else
			conf_err(P->ld, line, "an account name is defined "
			    "twice (first at line %d)", P->titles[i].line);
		return;
	}
	P->titles = xreallocarray(P->titles, P->n_titles + 1,
	    sizeof *P->titles);
	P->titles[P->n_titles++] = (struct title){ xstrdup(name), line };
}

/* A block opened. libconfuse replaces a repeated account (same title)
 * with a new block that may reuse the freed address: forget what was
 * recorded for that address before recording this block. */
static void
section_opened(cfg_t *sec, int line)
{
	size_t i, forgotten = 0;

	for (i = 0; i < P->n_recs; i++)
		if (P->recs[i].sec == sec) {
			P->recs[i].sec = NULL;
			forgotten++;
		}
	if (forgotten > 0)
		rec_reindex(P->n_recs);
	rec_set(sec, SECTION_LINE, 0, line, true);
	if (!P->synthetic && strcmp(cfg_name(sec), "account") == 0 &&
	    cfg_title(sec) != NULL)
		check_duplicate(cfg_title(sec), line);
}

static int
record_cb(cfg_t *sec, cfg_opt_t *opt)
{
	int line = P->synthetic ? 0 : conf_lines_real(P->ld, sec->line);

	if (strcmp(opt->name, SECTION_LINE) == 0)
		section_opened(sec, line);
	else if (opt->flags & CFGF_LIST) {
		/* Called after each value and again after the closing
		 * "}": keep the line of the value. */
		if (opt->nvalues > 0)
			rec_set(sec, opt->name, opt->nvalues - 1, line, false);
	} else
		rec_set(sec, opt->name, 0, line, true);
	return 0;
}

static void
error_cb(cfg_t *cfg, const char *fmt, va_list ap)
{
	conf_verr(P->ld, cfg != NULL ? conf_lines_real(P->ld, cfg->line) : 0,
	    fmt, ap);
}

static void
hook_options(cfg_opt_t *opts)
{
	for (; opts->name != NULL; opts++) {
		if (opts->type == CFGT_SEC)
			hook_options(opts->subopts);
		else
			opts->validcb = record_cb;
	}
}

/* "pop3.port", "store.path", but plain "folder" in an account. */
static const char *
qualifier(cfg_t *sec)
{
	const char *n = cfg_name(sec);

	return strcmp(n, "root") == 0 || strcmp(n, "account") == 0 ? "" : n;
}

static void
opt_err(cfg_t *sec, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
opt_err(cfg_t *sec, const char *name, const char *fmt, ...)
{
	const char *q = qualifier(sec);
	int line = opt_line(sec, name, 0);
	char *msg;
	va_list ap;

	va_start(ap, fmt);
	msg = xvasprintf(fmt, ap);
	va_end(ap);
	conf_err(P->ld, line > 0 ? line : sec_line(sec), "%s%s%s %s", q,
	    *q != '\0' ? "." : "", name, msg);
	free(msg);
}

static bool
is_set(cfg_t *sec, const char *name)
{
	cfg_opt_t *o = cfg_getopt(sec, name);

	return o != NULL && (o->flags & CFGF_MODIFIED);
}

static void
note(cfg_t *sec, const char *name, const void *field)
{
	conf_note(P->ld, field, opt_line(sec, name, 0));
}

/* An optional string: NULL when unset or empty (`ca_file = ""`). */
static char *
get_opt(cfg_t *sec, const char *name, const void *field)
{
	const char *s = cfg_getstr(sec, name);

	note(sec, name, field);
	return s != NULL && *s != '\0' ? xstrdup(s) : NULL;
}

/* A string with a default, kept as given (even empty) for the checks. */
static char *
get_str(cfg_t *sec, const char *name, const void *field)
{
	const char *s = cfg_getstr(sec, name);

	note(sec, name, field);
	return xstrdup(s != NULL ? s : "");
}

static char *
get_path(cfg_t *sec, const char *name, bool optional, const void *field)
{
	char *s, *x;

	s = optional ? get_opt(sec, name, field) : get_str(sec, name, field);
	if (s == NULL)
		return NULL;
	if ((x = conf_expand_tilde(s)) == NULL) {
		opt_err(sec, name, "cannot expand \"~\": HOME is not set and "
		    "the user has no home directory");
		return s;
	}
	free(s);
	return x;
}

static long
get_num(cfg_t *sec, const char *name, long min, long max, const void *field)
{
	long v = cfg_getint(sec, name);

	note(sec, name, field);
	if (v >= min && v <= max)
		return v;
	if (max == LONG_MAX)
		opt_err(sec, name, "must be at least %ld", min);
	else
		opt_err(sec, name, "must be between %ld and %ld", min, max);
	return min;
}

static bool
get_bool(cfg_t *sec, const char *name, const void *field)
{
	note(sec, name, field);
	return cfg_getbool(sec, name) == cfg_true;
}

/* "\"a\", \"b\" or \"c\"" */
static char *
alternatives(const char *const *names)
{
	char *s = xasprintf("\"%s\"", names[0]), *t;
	size_t i;

	for (i = 1; names[i] != NULL; i++) {
		t = xasprintf("%s%s\"%s\"", s, names[i + 1] ? ", " : " or ",
		    names[i]);
		free(s);
		s = t;
	}
	return s;
}

static int
get_enum(cfg_t *sec, const char *name, const char *const *names,
    const void *field)
{
	const char *s = cfg_getstr(sec, name);
	char *alt;
	int i;

	note(sec, name, field);
	for (i = 0; s != NULL && names[i] != NULL; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	alt = alternatives(names);
	opt_err(sec, name, "must be %s", alt);
	free(alt);
	return 0;
}

/* A list of strings; each entry's line is noted under its own address. */
static char **
get_list(cfg_t *sec, const char *name, size_t *n)
{
	char **v;
	size_t i;

	if ((*n = cfg_size(sec, name)) == 0)
		return NULL;
	v = xcalloc(*n, sizeof *v);
	for (i = 0; i < *n; i++) {
		v[i] = xstrdup(cfg_getnstr(sec, name, i));
		conf_note(P->ld, &v[i], opt_line(sec, name, i));
	}
	return v;
}

/* The single block called name in parent: repeats are refused, and a
 * missing block is made with its defaults so those live in the tables
 * alone. */
static cfg_t *
one_section(cfg_t *parent, const char *name)
{
	unsigned i, n = cfg_size(parent, name);
	cfg_value_t *v;

	for (i = 1; i < n; i++)
		conf_err(P->ld, sec_line(cfg_getnsec(parent, name, i)),
		    "%s block given more than once (first at line %d)", name,
		    sec_line(cfg_getnsec(parent, name, 0)));
	if (n > 0)
		return cfg_getnsec(parent, name, 0);
	P->synthetic = true;
	v = cfg_setopt(parent, cfg_getopt(parent, name), NULL);
	P->synthetic = false;
	if (v == NULL)
		fatalx("libconfuse: cannot make a default %s block", name);
	return v->section;
}

static void
conv_server(cfg_t *sec, struct conf_server *s, enum server_kind kind)
{
	conf_note_block(P->ld, s, sec_line(sec));
	s->host = get_opt(sec, "host", &s->host);
	s->tls = get_enum(sec, "tls", tls_names, &s->tls);
	if (is_set(sec, "port"))
		s->port = get_num(sec, "port", 1, 65535, &s->port);
	else
		s->port = default_port[kind][s->tls != CONF_TLS_IMPLICIT];
	s->user = get_opt(sec, "user", &s->user);
	s->password = get_opt(sec, "password", &s->password);
	s->password_command = get_opt(sec, "password_command",
	    &s->password_command);
	if (kind == KIND_POP3)
		s->auth = auth_values[get_enum(sec, "auth", auth_names, &s->auth)];
	else if (kind == KIND_SMTP)
		s->auth = smtp_auth_values[get_enum(sec, "auth", smtp_auth_names,
		    &s->auth)];
	else
		s->auth = imap_auth_values[get_enum(sec, "auth", imap_auth_names,
		    &s->auth)];
	s->ca_file = get_path(sec, "ca_file", true, &s->ca_file);
	s->timeout = get_num(sec, "timeout", 1, MAX_TIMEOUT, &s->timeout);
	s->allow_plaintext = get_bool(sec, "allow_plaintext",
	    &s->allow_plaintext);
}

static void
conv_store(cfg_t *sec, struct conf_store *st)
{
	conf_note_block(P->ld, st, sec_line(sec));
	st->type = get_enum(sec, "type", store_names, &st->type);
	st->path = get_path(sec, "path", false, &st->path);
	conv_server(sec, &st->imap, KIND_IMAP);
	st->master_user = get_opt(sec, "master_user", &st->master_user);
	st->dedup = get_opt(sec, "dedup", &st->dedup);
}

static char *
invoking_user(cfg_t *sec)
{
	struct passwd *pw = getpwuid(getuid());

	if (pw != NULL && pw->pw_name[0] != '\0')
		return xstrdup(pw->pw_name);
	conf_err(P->ld, sec_line(sec), "local_user is not set and user id %lu "
	    "has no name", (unsigned long)getuid());
	return NULL;
}

static void
conv_account(cfg_t *sec, struct conf_account *a, const struct conf *c)
{
	a->name = xstrdup(cfg_title(sec));
	a->line = sec_line(sec);
	if ((a->local_user = get_opt(sec, "local_user", &a->local_user)) ==
	    NULL)
		a->local_user = invoking_user(sec);
	a->folder = get_str(sec, "folder", &a->folder);
	a->poll_interval = c->poll_interval;
	if (is_set(sec, "poll_interval"))
		a->poll_interval = get_num(sec, "poll_interval", 1,
		    MAX_INTERVAL, &a->poll_interval);
	a->max_message_size = c->max_message_size;
	if (is_set(sec, "max_message_size"))
		a->max_message_size = get_num(sec, "max_message_size", MIN_MESSAGE,
		    MAX_MESSAGE, &a->max_message_size);
	a->pass_timeout = c->pass_timeout;
	if (is_set(sec, "pass_timeout"))
		a->pass_timeout = get_num(sec, "pass_timeout", 1, MAX_PASS,
		    &a->pass_timeout);
	a->import_seen = get_bool(sec, "import_seen", &a->import_seen);
	a->leave_on_server = get_bool(sec, "leave_on_server",
	    &a->leave_on_server);
	a->delete_after_days = get_num(sec, "delete_after_days", 0, MAX_DAYS,
	    &a->delete_after_days);
	a->uidl_reset_threshold = get_num(sec, "uidl_reset_threshold", 0, 100,
	    &a->uidl_reset_threshold);
	conv_server(one_section(sec, "pop3"), &a->pop3, KIND_POP3);
	if ((a->has_smtp = cfg_size(sec, "smtp") > 0))
		conv_server(one_section(sec, "smtp"), &a->smtp, KIND_SMTP);
	a->addresses = get_list(sec, "addresses", &a->n_addresses);
	/* Not set is not "Sent": the store's \Sent folder is looked for
	 * first (store/deliver.h, DELIVER_FOLDER_SENT). */
	a->sent_folder_set = is_set(sec, "sent_folder");
	a->sent_folder = get_str(sec, "sent_folder", &a->sent_folder);
}

static void
conv_relay(cfg_t *sec, struct conf_relay *r)
{
	conf_note_block(P->ld, r, sec_line(sec));
	if (is_set(sec, "listen"))
		r->listen = get_list(sec, "listen", &r->n_listen);
	else {
		r->listen = xcalloc(1, sizeof *r->listen);
		r->listen[0] = xstrdup(DEFAULT_LISTEN);
		r->n_listen = 1;
	}
	r->tls_cert = get_path(sec, "tls_cert", true, &r->tls_cert);
	r->tls_key = get_path(sec, "tls_key", true, &r->tls_key);
	r->passwd_file = get_path(sec, "passwd_file", false, &r->passwd_file);
	r->queue_lifetime = get_num(sec, "queue_lifetime", 1, MAX_LIFETIME,
	    &r->queue_lifetime);
	if (is_set(sec, "listen_tls"))
		r->listen_tls = get_list(sec, "listen_tls", &r->n_listen_tls);
	r->max_message_size = get_num(sec, "max_message_size", 1024,
	    1L << 30, &r->max_message_size);
	r->max_recipients = get_num(sec, "max_recipients", 1, 10000,
	    &r->max_recipients);
	r->max_connections = get_num(sec, "max_connections", 1, 10000,
	    &r->max_connections);
	r->timeout = get_num(sec, "timeout", 1, 3600, &r->timeout);
	r->retry_initial = get_num(sec, "retry_initial", 1, 3600,
	    &r->retry_initial);
	r->upstream_connections = get_num(sec, "upstream_connections", 1, 32,
	    &r->upstream_connections);
}

static void conv_accounts(cfg_t *, struct conf *, const struct conf *);

static void
conv_root(cfg_t *cfg, struct conf *c)
{
	c->state_dir = get_path(cfg, "state_dir", false, &c->state_dir);
	c->poll_interval = get_num(cfg, "poll_interval", 1, MAX_INTERVAL,
	    &c->poll_interval);
	c->max_parallel = get_num(cfg, "max_parallel", 1, 256,
	    &c->max_parallel);
	c->max_per_host = get_num(cfg, "max_per_host", 1, 256,
	    &c->max_per_host);
	c->batch_messages = get_num(cfg, "batch_messages", 1, MAX_BATCH,
	    &c->batch_messages);
	c->batch_bytes = get_num(cfg, "batch_bytes", 1024 * 1024, LONG_MAX,
	    &c->batch_bytes);
	c->metrics_file = get_path(cfg, "metrics_file", true, &c->metrics_file);
	c->include_dir = get_path(cfg, "include_dir", true, &c->include_dir);
	c->max_message_size = get_num(cfg, "max_message_size", MIN_MESSAGE, MAX_MESSAGE,
	    &c->max_message_size);
	c->pass_timeout = get_num(cfg, "pass_timeout", 1, MAX_PASS,
	    &c->pass_timeout);
	conv_store(one_section(cfg, "store"), &c->store);
	conv_accounts(cfg, c, c);
	conv_relay(one_section(cfg, "relay"), &c->relay);
}

/* The account blocks of cfg into out->accounts, with main's defaults. */
static void
conv_accounts(cfg_t *cfg, struct conf *out, const struct conf *main)
{
	/* Sized once: the line notes hold addresses into this array. */
	out->n_accounts = cfg_size(cfg, "account");
	if (out->n_accounts > 0)
		out->accounts = xcalloc(out->n_accounts, sizeof *out->accounts);
	for (size_t i = 0; i < out->n_accounts; i++)
		conv_account(cfg_getnsec(cfg, "account", i), &out->accounts[i], main);
}

/* An include_dir file holds account blocks and nothing else: a top-level
 * key or block there would silently lose to (or fight with) the main
 * file's. */
static void
only_accounts(cfg_t *cfg)
{
	for (cfg_opt_t *o = cfg->opts; o->name != NULL; o++) {
		int line;

		if (strcmp(o->name, "account") == 0)
			continue;
		if (o->type == CFGT_SEC && cfg_size(cfg, o->name) > 0)
			line = sec_line(cfg_getnsec(cfg, o->name, 0));
		else if (o->type != CFGT_SEC && (o->flags & CFGF_MODIFIED))
			line = opt_line(cfg, o->name, 0);
		else
			continue;
		conf_err(P->ld, line, "%s: only account blocks belong in an include_dir"
		    " file (set it in the main file)", o->name);
	}
}

/* Every string libconfuse holds is wiped before cfg_free() releases it:
 * the passwords must not linger in freed memory that a forked child (the
 * relay, bridge/relay.c) inherits. */
static void
wipe_cfg(cfg_t *sec)
{
	for (cfg_opt_t *o = sec->opts; o->name != NULL; o++) {
		unsigned n = cfg_opt_size(o);

		for (unsigned i = 0; i < n; i++) {
			if (o->type == CFGT_SEC)
				wipe_cfg(cfg_opt_getnsec(o, i));
			else if (o->type == CFGT_STR) {
				char *v = cfg_opt_getnstr(o, i);

				if (v != NULL)
					explicit_bzero(v, strlen(v));
			}
		}
	}
}

int
conf_parse(struct conf_load *ld, FILE *fp, struct conf *c, const struct conf *main)
{
	struct parse p = { .ld = ld };
	cfg_t *cfg;
	size_t i, msgs_before;
	int rc = 0;

	P = &p;
	msgs_before = ld->n_msgs;
	if ((cfg = cfg_init(root_opts, CFGF_NONE)) == NULL)
		fatalx("libconfuse: cannot initialise");
	cfg_set_error_function(cfg, error_cb);
	hook_options(cfg->opts);
	/* libconfuse tests errno for ERANGE after strtol() without
	 * clearing it first. */
	errno = 0;
	if (cfg_parse_fp(cfg, fp) != CFG_SUCCESS) {
		rc = -1;
		/* libconfuse 3.3 stops on some input without a word (a value
		 * followed by a string, x""), and the file would pass as an
		 * empty one (found by tests/fuzz/fuzz_conf.c). The root's line
		 * is where it stopped, or where the block it stopped in
		 * begins. */
		if (ld->n_msgs == msgs_before)
			conf_err(ld, conf_lines_real(ld, cfg->line),
			    "syntax error here or in the block that starts here");
	} else if (ld->open_at_eof > 0)
		/* The file ends inside a string or a comment (reported by
		 * conf_lines_scan) and libconfuse's lexer is still in there:
		 * making a default block now would have it parse the default
		 * values inside that string or comment and abort() (found by
		 * tests/fuzz/fuzz_conf.c). The file is refused anyway. */
		rc = -1;
	else if (main == NULL)
		conv_root(cfg, c);
	else {
		only_accounts(cfg);
		conv_accounts(cfg, c, main);
	}
	wipe_cfg(cfg);
	cfg_free(cfg);
	for (i = 0; i < p.n_titles; i++)
		free(p.titles[i].name);
	free(p.titles);
	free(p.recs);
	free(p.slots);
	P = NULL;
	return rc;
}

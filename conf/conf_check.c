/* The semantic checks, on the plain structs once converted: everything
 * that one value alone cannot tell (conflicting keys, required keys, names
 * that must be safe in file names and protocol lines). Each check reports
 * and goes on, so one run shows every problem. Lines come from the notes
 * conf_parse.c took, with the enclosing block's line as the fallback. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "conf/conf_priv.h"
#include "lib/addr.h"

static int
line_or(const struct conf_load *ld, const void *field, int fallback)
{
	int line = conf_line(ld, field);

	return line > 0 ? line : fallback;
}

static int
block_or(const struct conf_load *ld, const void *block, int fallback)
{
	int line = conf_block_line(ld, block);

	return line > 0 ? line : fallback;
}

/* A value that goes into a protocol line: no CR or LF, bounded. (A NUL
 * cannot get this far: conf_lines.c refuses it in the file.) */
static void
check_value(struct conf_load *ld, const char *block, const char *key,
    const char *s, size_t max, int line)
{
	if (s == NULL || conf_safe_value(s, max))
		return;
	if (strcspn(s, "\r\n") != strlen(s))
		conf_err(ld, line, "%s.%s holds a CR or LF", block, key);
	else
		conf_err(ld, line, "%s.%s is too long (at most %zu bytes)",
		    block, key, max);
}

static void
check_secret(struct conf_load *ld, const struct conf_server *s,
    const char *block, int bline)
{
	int pw = line_or(ld, &s->password, bline);
	int cmd = line_or(ld, &s->password_command, bline);

	if (s->password != NULL && s->password_command != NULL)
		conf_err(ld, pw > cmd ? pw : cmd, "%s: password and "
		    "password_command are both set; keep one", block);
	if (conf_plaintext_refused(s, s->password != NULL || s->password_command != NULL))
		conf_err(ld, line_or(ld, &s->tls, bline), "%s: %s", block,
		    CONF_PLAINTEXT_REFUSED);
}

/* pop3 {}, smtp {} or the imap keys of store {}; fallback is the line to
 * blame when the block itself is missing. */
static void
check_server(struct conf_load *ld, const struct conf_server *s,
    const char *block, int fallback)
{
	int bline = block_or(ld, s, fallback);

	if (s->host == NULL)
		conf_err(ld, bline, "%s.host is required", block);
	check_value(ld, block, "host", s->host, CONF_MAX_HOST,
	    line_or(ld, &s->host, bline));
	check_value(ld, block, "user", s->user, CONF_MAX_USER,
	    line_or(ld, &s->user, bline));
	check_value(ld, block, "password", s->password, CONF_MAX_PASSWORD,
	    line_or(ld, &s->password, bline));
	check_secret(ld, s, block, bline);
}

/* Why a folder name is refused, or NULL. "/" separates levels; in a
 * Maildir++ store "." is the on-disk separator, so it may not appear
 * inside a level. */
static const char *
folder_problem(const char *f, bool maildir)
{
	const char *level, *p;
	size_t len;

	if (*f == '\0')
		return "is empty";
	for (p = f; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return "holds a control character";
	if (f[0] == '/' || f[strlen(f) - 1] == '/')
		return "starts or ends with \"/\"";
	/* store/deliver.h: "\\Sent" and the like name special-use folders. */
	if (f[0] == '\\')
		return "starts with \"\\\"";
	if (strstr(f, "//") != NULL)
		return "holds an empty level (\"//\")";
	for (level = f; ; level += len + 1) {
		len = strcspn(level, "/");
		if ((len == 1 || len == 2) && strspn(level, ".") == len)
			return "has a \".\" or \"..\" level";
		if (maildir && memchr(level, '.', len) != NULL)
			return "holds a \".\", the Maildir++ separator (use "
			    "\"/\" between levels)";
		if (!maildir && (memchr(level, '*', len) != NULL ||
		    memchr(level, '%', len) != NULL))
			return "holds \"*\" or \"%\", the IMAP LIST wildcards";
		if (level[len] == '\0')
			return NULL;
	}
}

static void
check_folder(struct conf_load *ld, const struct conf *c, const char *key,
    const char *f, int line)
{
	bool maildir = c->store.type == CONF_STORE_MAILDIR;
	const char *why = folder_problem(f, maildir);

	if (why != NULL)
		conf_err(ld, line, "%s %s", key, why);
}

static void
check_names(struct conf_load *ld, const struct conf_account *a)
{
	if (!conf_name_ok(a->name))
		conf_err(ld, a->line, "account name must be made of letters, "
		    "digits and \"._@+-\", and not start with \".\" or \"-\"");
	if (a->local_user != NULL && !conf_name_ok(a->local_user))
		conf_err(ld, line_or(ld, &a->local_user, a->line), "local_user "
		    "must be made of letters, digits and \"._@+-\", and not "
		    "start with \".\" or \"-\"");
}

static void
check_account(struct conf_load *ld, const struct conf *c,
    const struct conf_account *a)
{
	size_t i;

	check_names(ld, a);
	check_folder(ld, c, "folder", a->folder,
	    line_or(ld, &a->folder, a->line));
	check_folder(ld, c, "sent_folder", a->sent_folder,
	    line_or(ld, &a->sent_folder, a->line));
	if (!a->leave_on_server && a->delete_after_days > 0)
		conf_err(ld, line_or(ld, &a->delete_after_days, a->line),
		    "delete_after_days = %u contradicts leave_on_server = "
		    "false, which deletes right after delivery",
		    a->delete_after_days);
	check_server(ld, &a->pop3, "pop3", a->line);
	if (a->has_smtp)
		check_server(ld, &a->smtp, "smtp", a->line);
	/* Without a user the upstream is not authenticated at all: a token
	 * configured for it would be silently unused. */
	if (a->has_smtp && (a->smtp.auth == CONF_AUTH_XOAUTH2 ||
	    a->smtp.auth == CONF_AUTH_OAUTHBEARER) &&
	    (a->smtp.user == NULL || *a->smtp.user == '\0'))
		conf_err(ld, line_or(ld, &a->smtp.auth, a->line), "smtp.auth = "
		    "\"%s\" needs smtp.user (the account the token is for)",
		    a->smtp.auth == CONF_AUTH_XOAUTH2 ? "xoauth2" : "oauthbearer");
	for (i = 0; i < a->n_addresses; i++)
		if (!addr_ok(a->addresses[i]))
			conf_err(ld, line_or(ld, &a->addresses[i], a->line),
			    "addresses: entry %zu is not an e-mail address",
			    i + 1);
}

static void
check_store(struct conf_load *ld, const struct conf *c)
{
	const struct conf_store *st = &c->store;
	int bline = conf_block_line(ld, st);

	if (*c->state_dir == '\0')
		conf_err(ld, conf_line(ld, &c->state_dir), "state_dir is "
		    "empty");
	if (*st->path == '\0')
		conf_err(ld, line_or(ld, &st->path, bline), "store.path is "
		    "empty");
	if (st->dedup != NULL && strcmp(st->dedup, "message-id") != 0)
		conf_err(ld, line_or(ld, &st->dedup, bline), "store.dedup must "
		    "be \"message-id\" or unset");
	if (st->type != CONF_STORE_IMAP)
		return;
	check_server(ld, &st->imap, "store", bline);
	check_value(ld, "store", "master_user", st->master_user, CONF_MAX_USER,
	    line_or(ld, &st->master_user, bline));
	/* The store is always logged in to (PREAUTH is refused): as user,
	 * or as "user*master_user" with the master's password. */
	if (st->imap.user == NULL || *st->imap.user == '\0')
		conf_err(ld, line_or(ld, &st->imap.user, bline), "store.user is "
		    "required with type = \"imap\" (\"%%u\" for the account's "
		    "local_user)");
	if (st->imap.password == NULL && st->imap.password_command == NULL)
		conf_err(ld, bline, "store: password or password_command is "
		    "required with type = \"imap\"");
	if (st->master_user != NULL && (st->imap.auth == CONF_AUTH_XOAUTH2 ||
	    st->imap.auth == CONF_AUTH_OAUTHBEARER))
		conf_err(ld, line_or(ld, &st->master_user, bline), "store."
		    "master_user cannot be used with auth = \"%s\": a token logs "
		    "in as the user it was issued to",
		    st->imap.auth == CONF_AUTH_XOAUTH2 ? "xoauth2" : "oauthbearer");
	if (st->master_user != NULL && strchr(st->master_user, '*') != NULL)
		conf_err(ld, line_or(ld, &st->master_user, bline), "store."
		    "master_user must not hold \"*\", the master login separator");
}

/* "HOST:PORT" or "[V6]:PORT" */
static bool
listen_ok(const char *s)
{
	const char *colon = strrchr(s, ':'), *p;
	char *end;
	long port;

	if (colon == NULL || colon == s || colon[1] == '\0')
		return false;
	for (p = s; p < colon; p++)
		if ((unsigned char)*p <= 0x20 || *p == 0x7f)
			return false;
	if (s[0] == '[' && colon[-1] != ']')
		return false;
	port = strtol(colon + 1, &end, 10);
	return *end == '\0' && colon[1] >= '0' && colon[1] <= '9' &&
	    port >= 1 && port <= 65535;
}

static void
check_relay(struct conf_load *ld, const struct conf_relay *r)
{
	int bline = conf_block_line(ld, r);
	size_t i;

	if (r->n_listen == 0)
		conf_err(ld, bline, "relay.listen is empty");
	for (i = 0; i < r->n_listen; i++)
		if (!listen_ok(r->listen[i]))
			conf_err(ld, line_or(ld, &r->listen[i], bline),
			    "relay.listen: entry %zu is not HOST:PORT", i + 1);
	for (i = 0; i < r->n_listen_tls; i++)
		if (!listen_ok(r->listen_tls[i]))
			conf_err(ld, line_or(ld, &r->listen_tls[i], bline),
			    "relay.listen_tls: entry %zu is not HOST:PORT", i + 1);
	if (r->n_listen_tls > 0 && r->tls_cert == NULL)
		conf_err(ld, line_or(ld, &r->listen_tls[0], bline),
		    "relay.listen_tls needs tls_cert and tls_key");
	if ((r->tls_cert == NULL) != (r->tls_key == NULL))
		conf_err(ld, r->tls_cert != NULL ?
		    line_or(ld, &r->tls_cert, bline) :
		    line_or(ld, &r->tls_key, bline),
		    "relay: tls_cert and tls_key must be set together");
	if (*r->passwd_file == '\0')
		conf_err(ld, line_or(ld, &r->passwd_file, bline), "relay."
		    "passwd_file is empty");
}

void
conf_check(struct conf_load *ld, const struct conf *c)
{
	size_t i;

	check_store(ld, c);
	/* With include_dir, conf.c counts the accounts once every file is in. */
	if (c->n_accounts == 0 && c->include_dir == NULL)
		conf_err(ld, 0, "no account defined");
	/* Account names are unique already: conf_parse.c refuses a repeat
	 * while libconfuse still shows it (it keeps only the last one). */
	for (i = 0; i < c->n_accounts; i++)
		check_account(ld, c, &c->accounts[i]);
	check_relay(ld, &c->relay);
}

void
conf_check_accounts(struct conf_load *ld, const struct conf *main, const struct conf *c)
{
	for (size_t i = 0; i < c->n_accounts; i++)
		check_account(ld, main, &c->accounts[i]);
}

static bool
holds_password(const struct conf *c)
{
	size_t i;

	if (c->store.imap.password != NULL)
		return true;
	for (i = 0; i < c->n_accounts; i++)
		if (c->accounts[i].pop3.password != NULL ||
		    c->accounts[i].smtp.password != NULL)
			return true;
	return false;
}

static bool
runs_commands(const struct conf *c)
{
	if (c->store.imap.password_command != NULL)
		return true;
	for (size_t i = 0; i < c->n_accounts; i++)
		if (c->accounts[i].pop3.password_command != NULL ||
		    c->accounts[i].smtp.password_command != NULL)
			return true;
	return false;
}

/* Like ssh with its keys: a password in a file others can read is
 * refused, not merely warned about. A file others can write could point
 * the store, the trust anchors or the relay's users anywhere, and a
 * password_command runs what it says: those need a file only its owner
 * (us, or root) controls. */
void
conf_check_mode(struct conf_load *ld, const struct conf *c, const struct stat *sb)
{
	if ((sb->st_mode & 077) != 0 && holds_password(c))
		conf_err(ld, 0, "holds a password but is readable by others "
		    "(chmod 600)");
	else if ((sb->st_mode & 022) != 0)
		conf_err(ld, 0, "is writable by others (chmod go-w)");
	if (runs_commands(c) && sb->st_uid != geteuid() && sb->st_uid != 0)
		conf_err(ld, 0, "has a password_command but belongs to uid %ld, "
		    "neither us nor root", (long)sb->st_uid);
}

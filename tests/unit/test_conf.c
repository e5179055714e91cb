/* Unit tests of conf/: run from the top of the tree, which holds the
 * fixtures in tests/unit/conf/. Error output is compared line for line,
 * line numbers included: the fixtures carry comments on purpose, since
 * libconfuse 3.3 miscounts lines after them (see conf/conf_lines.c). */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "conf/conf.h"
#include "lib/deadline.h"
#include "lib/xmalloc.h"
#include "tests/unit/check.h"

#define FIX	"tests/unit/conf/"
#define HOME	"/home/tester"

static char tmpdir[] = "/tmp/test_conf.XXXXXX";

/* Loads path; returns everything conf_load printed (allocated). */
static char *
load(const char *path, int *rc, struct conf **out)
{
	struct conf *c = NULL;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	*rc = conf_load(path, &c, f);
	fclose(f);
	if (out != NULL)
		*out = c;
	else
		conf_free(c);
	return buf;
}

/* Each expected line is given without the file name: ":3: msg" or
 * ": msg". */
static void
expect_errors(const char *path, const char *const *lines)
{
	char *want = xstrdup(""), *t, *got;
	int rc;

	for (; *lines != NULL; lines++) {
		t = xasprintf("%s%s%s\n", want, path, *lines);
		free(want);
		want = t;
	}
	got = load(path, &rc, NULL);
	CHECK_INT(rc, EX_CONFIG);
	CHECK_STR(got, want);
	free(got);
	free(want);
}

static char *
write_file(const char *name, const char *text, mode_t mode)
{
	char *path = xasprintf("%s/%s", tmpdir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	CHECK(fd != -1);
	CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	CHECK(fchmod(fd, mode) == 0);	/* whatever the umask */
	close(fd);
	return path;
}

static const char *
login(void)
{
	struct passwd *pw = getpwuid(getuid());

	return pw != NULL ? pw->pw_name : "?";
}

static void
test_good_top_and_store(void)
{
	struct conf *c;
	char *out = load(FIX "good.conf", &(int){ 0 }, &c), *p;

	CHECK_STR(out, "");
	free(out);
	CHECK(c != NULL);
	if (c == NULL)
		return;
	CHECK_STR(c->path, FIX "good.conf");
	CHECK_STR(c->state_dir, HOME "/state");
	CHECK_INT(c->poll_interval, 120);
	CHECK_INT(c->max_parallel, 8);
	CHECK_INT(c->batch_messages, 50);
	CHECK_INT(c->batch_bytes, 2097152);
	CHECK_INT(c->pass_timeout, 7200);
	CHECK_INT(c->store.type, CONF_STORE_MAILDIR);
	CHECK_STR(c->store.path, HOME "/srv/%u/Maildir-%u");
	CHECK_STR(c->store.dedup, "message-id");
	CHECK(c->store.master_user == NULL);
	CHECK(c->store.imap.host == NULL);
	CHECK_INT(c->n_accounts, 2);
	p = conf_store_path(c, &c->accounts[0]);
	CHECK_STR(p, HOME "/srv/alice/Maildir-alice");
	free(p);
	p = conf_store_path(c, &c->accounts[1]);
	CHECK(strstr(p, login()) != NULL);
	free(p);
	conf_free(c);
}

static void
check_work_pop3(const struct conf_server *s)
{
	CHECK_STR(s->host, "pop.example.com");
	CHECK_INT(s->port, 1995);
	CHECK_INT(s->tls, CONF_TLS_STARTTLS);
	CHECK_STR(s->user, "alice@example.com");
	CHECK(s->password == NULL);
	CHECK_STR(s->password_command, "printf 'pop-secret\\n'");
	CHECK_INT(s->auth, CONF_AUTH_PLAIN);
	CHECK_STR(s->ca_file, HOME "/ca.pem");
	CHECK_INT(s->timeout, 30);
	CHECK(s->allow_plaintext);
}

static void
check_work_smtp(const struct conf_server *s)
{
	CHECK_STR(s->host, "smtp.example.com");
	CHECK_INT(s->port, 587);		/* the starttls default */
	CHECK_INT(s->tls, CONF_TLS_STARTTLS);
	CHECK_STR(s->user, "alice");
	CHECK(s->password == NULL);
	CHECK_STR(s->password_command, "echo smtp-secret");
	CHECK_STR(s->ca_file, "/etc/ssl/smtp-ca.pem");
	CHECK_INT(s->timeout, 20);
	CHECK(!s->allow_plaintext);
}

static void
test_good_accounts(void)
{
	struct conf *c;
	char *out = load(FIX "good.conf", &(int){ 0 }, &c);
	const struct conf_account *a;

	free(out);
	if (c == NULL || (a = conf_account(c, "work")) == NULL) {
		CHECK(!"good.conf has account work");
		conf_free(c);
		return;
	}
	CHECK_STR(a->name, "work");
	CHECK_INT(a->line, 20);
	CHECK_STR(a->local_user, "alice");
	CHECK_STR(a->folder, "Work/Inbox");
	CHECK_INT(a->poll_interval, 600);
	CHECK_INT(a->pass_timeout, 1800);
	CHECK(a->import_seen);
	CHECK(a->leave_on_server);
	CHECK_INT(a->delete_after_days, 14);
	check_work_pop3(&a->pop3);
	CHECK(a->has_smtp);
	check_work_smtp(&a->smtp);
	CHECK_INT(a->n_addresses, 2);
	if (a->n_addresses == 2) {
		CHECK_STR(a->addresses[0], "alice@example.com");
		CHECK_STR(a->addresses[1], "a.smith@example.com");
	}
	CHECK_STR(a->sent_folder, "Work/Sent");
	CHECK(a->sent_folder_set);
	CHECK(conf_account(c, "nope") == NULL);
	conf_free(c);
}

/* The second account of good.conf takes its values from the top level
 * and the defaults. */
static void
test_good_inherited(void)
{
	struct conf *c;
	char *out = load(FIX "good.conf", &(int){ 0 }, &c);
	const struct conf_account *a;

	free(out);
	if (c == NULL || (a = conf_account(c, "home.bob@x+y-z")) == NULL) {
		CHECK(!"good.conf has account home.bob@x+y-z");
		conf_free(c);
		return;
	}
	CHECK_INT(a->line, 50);
	CHECK_STR(a->local_user, login());
	CHECK_INT(a->poll_interval, 120);
	CHECK_INT(a->pass_timeout, 7200);
	CHECK_INT(a->pop3.tls, CONF_TLS_NONE);
	CHECK_INT(a->pop3.port, 110);
	CHECK(!a->has_smtp);
	CHECK_INT(a->n_addresses, 0);
	conf_free(c);
}

static void
test_good_relay(void)
{
	struct conf *c;
	char *out = load(FIX "good.conf", &(int){ 0 }, &c);

	free(out);
	if (c == NULL) {
		CHECK(c != NULL);
		return;
	}
	CHECK_INT(c->relay.n_listen, 2);
	if (c->relay.n_listen == 2) {
		CHECK_STR(c->relay.listen[0], "127.0.0.1:2587");
		CHECK_STR(c->relay.listen[1], "[::1]:2587");
	}
	CHECK_STR(c->relay.tls_cert, HOME "/cert.pem");
	CHECK_STR(c->relay.tls_key, "/etc/ssl/key.pem");
	CHECK_STR(c->relay.passwd_file, HOME "/users");
	CHECK_INT(c->relay.queue_lifetime, 3600);
	conf_free(c);
}

static void
check_default_server(const struct conf_server *s, unsigned port)
{
	CHECK_INT(s->port, port);
	CHECK_INT(s->tls, CONF_TLS_IMPLICIT);
	CHECK(s->user == NULL);
	CHECK(s->password == NULL);
	CHECK(s->password_command == NULL);
	CHECK_INT(s->auth, CONF_AUTH_AUTO);
	CHECK(s->ca_file == NULL);
	CHECK_INT(s->timeout, 60);
	CHECK(!s->allow_plaintext);
}

static void
test_defaults(void)
{
	struct conf *c;
	char *out = load(FIX "defaults.conf", &(int){ 0 }, &c);
	const struct conf_account *a;

	CHECK_STR(out, "");
	free(out);
	if (c == NULL || c->n_accounts != 1) {
		CHECK(!"defaults.conf loads with one account");
		conf_free(c);
		return;
	}
	CHECK_STR(c->state_dir, HOME "/.local/state/pop3bridge");
	CHECK_INT(c->poll_interval, 300);
	CHECK_INT(c->max_parallel, 4);
	CHECK_INT(c->batch_messages, 500);
	CHECK_INT(c->batch_bytes, 64 * 1024 * 1024);
	CHECK_INT(c->pass_timeout, 3600);
	CHECK_INT(c->store.type, CONF_STORE_MAILDIR);
	CHECK_STR(c->store.path, HOME "/Maildir");
	CHECK(c->store.dedup == NULL && c->store.master_user == NULL);
	check_default_server(&c->store.imap, 993);
	a = &c->accounts[0];
	CHECK_STR(a->name, "min");
	CHECK_INT(a->line, 1);
	CHECK_STR(a->local_user, login());
	CHECK_STR(a->folder, "INBOX");
	CHECK_INT(a->poll_interval, 300);
	CHECK_INT(a->pass_timeout, 3600);
	CHECK(!a->import_seen);
	CHECK(a->leave_on_server);
	CHECK_INT(a->delete_after_days, 0);
	CHECK_STR(a->pop3.host, "pop.example.com");
	check_default_server(&a->pop3, 995);
	CHECK(!a->has_smtp);
	CHECK(a->addresses == NULL && a->n_addresses == 0);
	CHECK_STR(a->sent_folder, "Sent");
	CHECK(!a->sent_folder_set);
	CHECK_INT(c->relay.n_listen, 1);
	CHECK_STR(c->relay.listen[0], "127.0.0.1:1587");
	CHECK(c->relay.tls_cert == NULL && c->relay.tls_key == NULL);
	CHECK_STR(c->relay.passwd_file, "/etc/pop3bridge/users");
	CHECK_INT(c->relay.queue_lifetime, 432000);
	CHECK_INT(c->relay.upstream_connections, 4);
	conf_free(c);
}

/* Without HOME, "~" is the home directory from the password file. */
static void
test_tilde_without_home(void)
{
	struct passwd *pw = getpwuid(getuid());
	struct conf *c;
	char *out, *want;

	unsetenv("HOME");
	out = load(FIX "defaults.conf", &(int){ 0 }, &c);
	setenv("HOME", HOME, 1);
	CHECK_STR(out, "");
	free(out);
	if (c == NULL || pw == NULL) {
		CHECK(c != NULL && pw != NULL);
		conf_free(c);
		return;
	}
	want = xasprintf("%s/.local/state/pop3bridge", pw->pw_dir);
	CHECK_STR(c->state_dir, want);
	free(want);
	conf_free(c);
}

static void
test_example(void)
{
	struct conf *c;
	int rc;
	char *out = load("conf/pop3bridge.conf.example", &rc, &c);

	CHECK_INT(rc, 0);
	CHECK_STR(out, "");
	free(out);
	if (c == NULL)
		return;
	CHECK_INT(c->n_accounts, 2);
	CHECK(c->accounts[0].has_smtp);
	CHECK_STR(c->accounts[0].pop3.password_command, "pass show mail/work");
	conf_free(c);
}

static void
test_bad_many(void)
{
	static const char *const want[] = {
		":2: poll_interval must be between 1 and 2592000",
		":3: max_parallel must be between 1 and 256",
		":4: batch_messages must be between 1 and 1000000",
		":5: batch_bytes must be at least 1048576",
		":8: store.path is empty",
		":9: store.dedup must be \"message-id\" or unset",
		":13: account name must be made of letters, digits and "
		    "\"._@+-\", and not start with \".\" or \"-\"",
		":14: local_user must be made of letters, digits and "
		    "\"._@+-\", and not start with \".\" or \"-\"",
		":15: folder holds a \".\", the Maildir++ separator (use \"/\" "
		    "between levels)",
		":16: sent_folder holds an empty level (\"//\")",
		":18: delete_after_days = 7 contradicts leave_on_server = "
		    "false, which deletes right after delivery",
		":19: pop3.host is required",
		":20: pop3.port must be between 1 and 65535",
		":21: pop3.tls must be \"implicit\", \"starttls\" or \"none\"",
		":22: pop3.auth must be \"auto\", \"user\", \"apop\", "
		    "\"plain\", \"xoauth2\" or \"oauthbearer\"",
		":23: pop3.timeout must be between 1 and 86400",
		":25: addresses: entry 1 is not an e-mail address",
		":30: pop3.host holds a CR or LF",
		":31: pop3.user holds a CR or LF",
		":32: pop3: password over plaintext refused (tls = \"none\"); "
		    "set allow_plaintext = true",
		":35: smtp.host is required",
		":36: smtp.port must be between 1 and 65535",
		":41: relay.listen: entry 1 is not HOST:PORT",
		":41: relay.listen: entry 2 is not HOST:PORT",
		":42: relay: tls_cert and tls_key must be set together",
		":43: relay.passwd_file is empty",
		":44: relay.queue_lifetime must be between 1 and 31536000",
		NULL
	};

	expect_errors(FIX "bad_many.conf", want);
}

static void
test_bad_dup(void)
{
	static const char *const want[] = {
		":5: account \"a\" is defined twice (first at line 1)",
		":7: pop3 block given more than once (first at line 6)",
		":10: store block given more than once (first at line 9)",
		NULL
	};

	expect_errors(FIX "bad_dup.conf", want);
}

static void
test_bad_folders(void)
{
	static const char *const want[] = {
		":2: folder is empty",
		":3: folder starts or ends with \"/\"",
		":4: folder starts or ends with \"/\"",
		":5: folder holds an empty level (\"//\")",
		":6: folder has a \".\" or \"..\" level",
		":7: folder has a \".\" or \"..\" level",
		":8: folder holds a \".\", the Maildir++ separator (use \"/\" "
		    "between levels)",
		":9: folder holds a control character",
		":10: sent_folder has a \".\" or \"..\" level",
		NULL
	};

	expect_errors(FIX "bad_folders.conf", want);
}

/* Every key of an IMAP store is accepted, and a "." in a folder name is
 * fine there (Maildir++ only uses it as its separator). */
static void
test_imap_keys(void)
{
	struct conf *c = NULL;
	int rc;

	free(load(FIX "imap.conf", &rc, &c));
	CHECK_INT(rc, 0);
	if (c == NULL)
		return;
	CHECK_INT(c->store.type, CONF_STORE_IMAP);
	CHECK_STR(c->store.imap.host, "imap.example.com");
	CHECK_INT(c->store.imap.port, 10993);
	CHECK_INT(c->store.imap.tls, CONF_TLS_IMPLICIT);
	CHECK_STR(c->store.imap.user, "pop3bridge");
	CHECK_STR(c->store.master_user, "pop3bridge-master");
	CHECK_STR(c->store.dedup, "message-id");
	CHECK_INT(c->store.imap.timeout, 30);
	CHECK_INT(c->store.imap.auth, CONF_AUTH_PLAIN);
	CHECK_STR(c->accounts[0].folder, "Lists.2024");
	conf_free(c);
}

static void
test_bad_imap(void)
{
	static const char *const want[] = {
		":1: store.host is required",
		":3: store.port must be between 1 and 65535",
		":4: store: password over plaintext refused (tls = \"none\"); "
		    "set allow_plaintext = true",
		":7: store.master_user holds a CR or LF",
		NULL
	};

	expect_errors(FIX "bad_imap.conf", want);
}

static void
test_bad_store_auth(void)
{
	static const char *const want[] = {
		":9: store.master_user cannot be used with auth = \"oauthbearer\": a "
		    "token logs in as the user it was issued to",
		":11: folder starts with \"\\\"",
		":12: sent_folder starts with \"\\\"",
		NULL
	};
	static const char *const name[] = {
		":7: store.auth must be \"auto\", \"login\", \"plain\", \"xoauth2\" or "
		    "\"oauthbearer\"",
		NULL
	};

	expect_errors(FIX "bad_store_auth.conf", want);
	expect_errors(FIX "bad_store_auth_name.conf", name);
}

static void
test_bad_syntax(void)
{
	static const char *const want[] = {
		":8: no such option 'bogus'", NULL
	};
	static const char *const unclosed[] = {
		":2: \"{\" is never closed (missing \"}\")", NULL
	};
	static const char *const string[] = {
		":3: a string is never closed (missing quote)",
		":4: premature end of file",
		NULL
	};
	static const char *const nul[] = {
		":4: a string holds a NUL character", NULL
	};
	static const char *const empty[] = {
		": no account defined", NULL
	};
	static const char *const nopop3[] = {
		":2: pop3.host is required", NULL
	};
	static const char *const deadlines[] = {
		":2: pass_timeout must be between 1 and 604800",
		":5: pass_timeout must be between 1 and 604800",
		NULL
	};
	/* libconfuse alone would take it silently as the rest of the file,
	 * then abort() making the default store block (found by
	 * tests/fuzz/fuzz_conf.c). */
	static const char *const comment[] = {
		":5: a comment is never closed (missing \"*/\")", NULL
	};
	/* The same abort() after a string opened on the last value of a
	 * block that has no pop3 {} (made with its defaults). */
	static const char *const string_eof[] = {
		":3: a string is never closed (missing quote)", NULL
	};
	/* libconfuse stops there without a message: the file would have
	 * passed as an empty one (found by tests/fuzz/fuzz_conf.c). It
	 * does not say where either; the block is named. */
	static const char *const silent[] = {
		":2: syntax error here or in the block that starts here", NULL
	};
	struct conf *c = NULL;
	int rc;

	expect_errors(FIX "bad_syntax.conf", want);
	expect_errors(FIX "bad_unclosed.conf", unclosed);
	expect_errors(FIX "bad_string.conf", string);
	expect_errors(FIX "bad_nul.conf", nul);
	expect_errors(FIX "empty.conf", empty);
	expect_errors(FIX "bad_deadlines.conf", deadlines);
	expect_errors(FIX "bad_nopop3.conf", nopop3);
	expect_errors(FIX "bad_comment.conf", comment);
	expect_errors(FIX "bad_string_eof.conf", string_eof);
	expect_errors(FIX "bad_silent.conf", silent);
	/* and the next file of the same process (a reload) reads as usual */
	free(load(FIX "defaults.conf", &rc, &c));
	CHECK_INT(rc, 0);
	conf_free(c);
}

static void
test_unreadable(void)
{
	struct conf *c = (struct conf *)1;
	int rc;
	char *out = load(FIX "missing.conf", &rc, &c);

	CHECK_INT(rc, EX_NOINPUT);
	CHECK_STR(out, FIX "missing.conf: cannot read: No such file or "
	    "directory\n");
	CHECK(c == NULL);
	free(out);
	out = load(FIX, &rc, NULL);
	CHECK_INT(rc, EX_NOINPUT);
	CHECK_STR(out, FIX ": cannot read: Is a directory\n");
	free(out);
}

static const char literal[] =
	"account \"a\" {\n"
	"\tpop3 { host = \"h\" password = \"literal\" }\n"
	"}\n";

static void
test_permissions(void)
{
	char *path = write_file("perm.conf", literal, 0644), *out, *want;
	struct conf *c;
	char *pw, *err;
	int rc;

	want = xasprintf("%s: holds a password but is readable by others "
	    "(chmod 600)\n", path);
	out = load(path, &rc, NULL);
	CHECK_INT(rc, EX_CONFIG);
	CHECK_STR(out, want);
	free(out);
	CHECK(chmod(path, 0640) == 0);
	out = load(path, &rc, NULL);
	CHECK_STR(out, want);
	free(out);
	CHECK(chmod(path, 0600) == 0);
	out = load(path, &rc, &c);
	CHECK_INT(rc, 0);
	CHECK_STR(out, "");
	if (c != NULL) {
		CHECK_INT(conf_password(&c->accounts[0].pop3, &pw, &err), 0);
		CHECK_STR(pw, "literal");
		free(pw);
	}
	conf_free(c);
	free(out);
	free(want);
	unlink(path);
	free(path);
}

static const char commanded[] =
	"account \"a\" {\n"
	"\tpop3 { host = \"h\" password_command = \"echo pw\" }\n"
	"}\n";

/* Without a password, a file others may read is fine; one they may write
 * is not; and a password_command only runs from a file of ours or root's. */
static void
test_writable_and_foreign_files(void)
{
	char *path = write_file("cmd.conf", commanded, 0644), *out, *want;
	int rc;

	out = load(path, &rc, NULL);
	CHECK_INT(rc, 0);
	free(out);
	CHECK(chmod(path, 0664) == 0);
	want = xasprintf("%s: is writable by others (chmod go-w)\n", path);
	out = load(path, &rc, NULL);
	CHECK_INT(rc, EX_CONFIG);
	CHECK_STR(out, want);
	free(out);
	free(want);
	CHECK(chmod(path, 0600) == 0);
	if (geteuid() == 0 && chown(path, 8, 8) == 0) {
		want = xasprintf("%s: has a password_command but belongs to uid 8, "
		    "neither us nor root\n", path);
		out = load(path, &rc, NULL);
		CHECK_INT(rc, EX_CONFIG);
		CHECK_STR(out, want);
		free(out);
		free(want);
	}
	unlink(path);
	free(path);
}

static const char secrets[] =
	"account \"a\" {\n"
	"\tpop3 {\n"
	"\t\thost = \"h\"\n"
	"\t\tpassword = \"x\"\n"
	"\t\tpassword_command = \"echo y\"\n"
	"\t}\n"
	"\tsmtp {\n"
	"\t\thost = \"s\"\n"
	"\t\ttls = \"none\"\n"
	"\t\tpassword = \"a\\rb\"\n"
	"\t}\n"
	"}\n";

static void
test_password_keys(void)
{
	char *path = write_file("secrets.conf", secrets, 0600), *out, *want;
	int rc;

	want = xasprintf(
	    "%1$s:5: pop3: password and password_command are both set; "
	    "keep one\n"
	    "%1$s:9: smtp: password over plaintext refused (tls = \"none\"); "
	    "set allow_plaintext = true\n"
	    "%1$s:10: smtp.password holds a CR or LF\n", path);
	out = load(path, &rc, NULL);
	CHECK_INT(rc, EX_CONFIG);
	CHECK_STR(out, want);
	free(out);
	free(want);
	unlink(path);
	free(path);
}

/* smtp {} takes the bearer-token mechanisms, and they need a user. */
static void
test_smtp_token_auth(void)
{
	static const char text[] =
	    "account \"a\" {\n"
	    "  pop3 { host = \"p\" }\n"
	    "  smtp { host = \"s\"  user = \"a@example.com\"  auth = \"oauthbearer\" }\n"
	    "}\n"
	    "account \"b\" {\n"
	    "  pop3 { host = \"p\" }\n"
	    "  smtp { host = \"s\"  auth = \"xoauth2\" }\n"
	    "}\n";
	char *path = write_file("token.conf", text, 0600), *out, *want;
	struct conf *c = NULL;
	int rc;

	want = xasprintf("%s:7: smtp.auth = \"xoauth2\" needs smtp.user (the account"
	    " the token is for)\n", path);
	out = load(path, &rc, NULL);
	CHECK_INT(rc, EX_CONFIG);
	CHECK_STR(out, want);
	free(out);
	free(want);
	unlink(path);
	free(path);
	path = write_file("token.conf", "account \"a\" {\n  pop3 { host = \"p\" }\n"
	    "  smtp { host = \"s\"  user = \"u\"  auth = \"oauthbearer\" }\n}\n", 0600);
	free(load(path, &rc, &c));
	CHECK_INT(rc, 0);
	if (c != NULL)
		CHECK_INT(c->accounts[0].smtp.auth, CONF_AUTH_OAUTHBEARER);
	conf_free(c);
	unlink(path);
	free(path);
}

/* Runs cmd as a password_command; returns the password or the error. */
static char *
run_pw(const char *cmd, int *rc)
{
	struct conf_server s = { .password_command = (char *)cmd };
	char *pw, *err;

	*rc = conf_password(&s, &pw, &err);
	if (*rc == 0) {
		CHECK(err == NULL);
		return pw;
	}
	CHECK(pw == NULL);
	return err;
}

static void
expect_pw(const char *cmd, int want_rc, const char *want)
{
	int rc;
	char *got = run_pw(cmd, &rc);

	CHECK_INT(rc, want_rc);
	CHECK_STR(got, want);
	free(got);
}

static void
test_password_command(void)
{
	struct conf_server none = { 0 }, lit = { .password = "lit" };
	char *pw = (char *)1, *err = (char *)1;

	CHECK_INT(conf_password(&none, &pw, &err), 0);
	CHECK(pw == NULL && err == NULL);
	CHECK_INT(conf_password(&lit, &pw, &err), 0);
	CHECK_STR(pw, "lit");
	free(pw);
	expect_pw("printf 'secret\\nsecond line\\n'", 0, "secret");
	expect_pw("printf 'crlf\\r\\n'", 0, "crlf");
	expect_pw("printf 'no-newline'", 0, "no-newline");
	expect_pw("cat; echo stdin-was-empty", 0, "stdin-was-empty");
	expect_pw("yes", 0, "y");	/* cut short at 4 KiB, SIGPIPE */
	/* The output never shows up in a message. */
	expect_pw("echo leaked; exit 3", -1,
	    "password_command failed (exit status 3)");
	expect_pw("kill -TERM $$", -1,
	    "password_command failed (killed by signal 15)");
	expect_pw("printf 'le\\raked\\n'", -1,
	    "password_command printed a CR inside the line");
	expect_pw("printf 'le\\000aked\\n'", -1,
	    "password_command printed a NUL byte");
	expect_pw("yes x | tr -d '\\n'", -1,
	    "password_command printed no line end in its first 4 KiB");
	expect_pw(":", -1, "password_command printed nothing");
	expect_pw("echo", -1, "password_command printed an empty first line");
}

/* The process group pgid has no live (non-zombie) member. */
static bool
group_gone(pid_t pgid)
{
	char path[300], buf[512], *p;
	struct dirent *de;
	bool gone = true;
	DIR *d;
	FILE *f;

	if ((d = opendir("/proc")) == NULL)
		return false;
	while (gone && (de = readdir(d)) != NULL) {
		char state;
		long pg;

		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		if (fgets(buf, sizeof buf, f) != NULL && (p = strrchr(buf, ')')) != NULL &&
		    sscanf(p + 1, " %c %*d %ld", &state, &pg) == 2 && pg == pgid &&
		    state != 'Z' && state != 'X')
			gone = false;
		fclose(f);
	}
	closedir(d);
	return gone;
}

/* A command that hangs is killed after the block's timeout, with all it
 * started (its process group), and nothing is left: the shell waits for a
 * background sleep; another closes its output and lingers. */
static void
test_password_command_timeout(void)
{
	char pidfile[] = "/tmp/p3b-pwpid.XXXXXX", *cmd, *pw, *err;
	struct conf_server s = { .timeout = 1 };
	struct timespec t0;
	long pgid = 0;
	FILE *f;
	int fd, i;

	if ((fd = mkstemp(pidfile)) == -1) {
		CHECK(!"mkstemp");
		return;
	}
	close(fd);
	cmd = xasprintf("echo $$ >%s; sleep 1000 & wait", pidfile);
	s.password_command = cmd;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK_INT(conf_password_run(&s, &pw, &err), -2);
	CHECK(check_elapsed(&t0) < 2.5);
	CHECK(pw == NULL);
	CHECK_STR(err, "password_command timed out after 1 s");
	free(err);
	if ((f = fopen(pidfile, "r")) != NULL) {
		CHECK(fscanf(f, "%ld", &pgid) == 1);
		fclose(f);
	}
	CHECK(pgid > 1);
	for (i = 0; i < 100 && pgid > 1 && !group_gone((pid_t)pgid); i++)
		usleep(20000);
	CHECK(pgid > 1 && group_gone((pid_t)pgid));
	CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD);
	unlink(pidfile);
	free(cmd);

	s.password_command = "echo early; exec >&-; sleep 1000";
	CHECK_INT(conf_password_run(&s, &pw, &err), -2);
	CHECK_STR(err, "password_command timed out after 1 s");
	free(err);
	CHECK_INT(conf_password(&s, &pw, &err), -1);	/* the old contract */
	free(err);

	/* A stop request of the pass ends the wait at once. */
	s.timeout = 30;
	s.password_command = "sleep 1000";
	check_stop_raise();
	deadline_pass_arm(0, true);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK_INT(conf_password_run(&s, &pw, &err), -2);
	CHECK(check_elapsed(&t0) < 1.5);
	CHECK_STR(err, "password_command stopped: interrupted by a stop request");
	free(err);
	check_stop_clear();
	deadline_pass_arm(0, false);
	CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD);
}

static void
test_password_from_file(void)
{
	struct conf *c;
	char *out = load(FIX "good.conf", &(int){ 0 }, &c), *pw, *err;

	free(out);
	if (c == NULL) {
		CHECK(c != NULL);
		return;
	}
	CHECK_INT(conf_password(&c->accounts[0].pop3, &pw, &err), 0);
	CHECK_STR(pw, "pop-secret");
	free(pw);
	CHECK_INT(conf_password(&c->accounts[0].smtp, &pw, &err), 0);
	CHECK_STR(pw, "smtp-secret");
	free(pw);
	conf_free(c);
}

static void
test_safe_value(void)
{
	CHECK(conf_safe_value("abc", 3));
	CHECK(!conf_safe_value("abcd", 3));
	CHECK(conf_safe_value("", 0));
	CHECK(!conf_safe_value("a\rb", 10));
	CHECK(!conf_safe_value("a\nb", 10));
	CHECK(!conf_safe_value("ab\r\n", 10));
	CHECK(!conf_safe_value(NULL, 10));
	CHECK(conf_safe_value("tab\tand space", 20));
	/* Names: no control character at all. */
	CHECK(conf_safe_name("alice", 5));
	CHECK(!conf_safe_name("alice", 4));
	CHECK(!conf_safe_name("tab\there", 20));
	CHECK(!conf_safe_name("del\x7f", 20));
	CHECK(!conf_safe_name("a\r", 20));
	CHECK(conf_safe_name("", 0));
}

static void
test_default_path(void)
{
	char *xdg = xasprintf("%s/xdg", tmpdir), *dir, *file, *p;

	dir = xasprintf("%s/pop3bridge", xdg);
	file = xasprintf("%s/pop3bridge.conf", dir);
	setenv("XDG_CONFIG_HOME", xdg, 1);
	p = conf_default_path();
	CHECK_STR(p, "/etc/pop3bridge.conf");	/* no such file yet */
	free(p);
	CHECK(mkdir(xdg, 0700) == 0 && mkdir(dir, 0700) == 0);
	free(write_file("xdg/pop3bridge/pop3bridge.conf", "", 0600));
	p = conf_default_path();
	CHECK_STR(p, file);
	free(p);
	unlink(file);
	rmdir(dir);
	rmdir(xdg);
	free(file);
	free(dir);
	free(xdg);
}

/* Without XDG_CONFIG_HOME (or with a relative one, which the XDG spec
 * says to ignore): ~/.config/pop3bridge/pop3bridge.conf if it exists. */
static void
test_default_path_home(void)
{
	char *dot = xasprintf("%s/.config", tmpdir), *dir, *file, *p;

	dir = xasprintf("%s/pop3bridge", dot);
	file = xasprintf("%s/pop3bridge.conf", dir);
	setenv("HOME", tmpdir, 1);
	setenv("XDG_CONFIG_HOME", "relative", 1);
	p = conf_default_path();
	CHECK_STR(p, "/etc/pop3bridge.conf");
	free(p);
	CHECK(mkdir(dot, 0700) == 0 && mkdir(dir, 0700) == 0);
	free(write_file(".config/pop3bridge/pop3bridge.conf", "", 0600));
	p = conf_default_path();
	CHECK_STR(p, file);
	free(p);
	unsetenv("XDG_CONFIG_HOME");
	p = conf_default_path();
	CHECK_STR(p, file);
	free(p);
	setenv("HOME", HOME, 1);
	unlink(file);
	rmdir(dir);
	rmdir(dot);
	free(file);
	free(dir);
	free(dot);
}

/* One policy for check-config and every client: a secret over tls =
 * "none" needs allow_plaintext. */
static void
test_plaintext_policy(void)
{
	struct conf_server s = { .tls = CONF_TLS_NONE };

	CHECK(conf_plaintext_refused(&s, true));
	CHECK(!conf_plaintext_refused(&s, false));
	s.allow_plaintext = true;
	CHECK(!conf_plaintext_refused(&s, true));
	s.allow_plaintext = false;
	s.tls = CONF_TLS_STARTTLS;
	CHECK(!conf_plaintext_refused(&s, true));
	s.tls = CONF_TLS_IMPLICIT;
	CHECK(!conf_plaintext_refused(&s, true));
	CHECK(strstr(CONF_PLAINTEXT_REFUSED, "allow_plaintext = true") != NULL);
}

/* --shard: the hash is the contract (FNV-1a 64: published test vectors),
 * and K/N is read strictly. */
static void
test_shard(void)
{
	unsigned k = 9, n = 9, per[3] = { 0 };
	char name[32];

	CHECK(conf_shard_hash("") == 0xcbf29ce484222325ULL);
	CHECK(conf_shard_hash("a") == 0xaf63dc4c8601ec8cULL);
	CHECK(conf_shard_hash("foobar") == 0x85944171f73967e8ULL);
	CHECK_INT(conf_shard_of("anything", 1), 1);
	CHECK_INT(conf_shard_of("a", 3), (unsigned)(0xaf63dc4c8601ec8cULL % 3) + 1);
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof name, "user%d", i);
		per[conf_shard_of(name, 3) - 1]++;
	}
	CHECK(per[0] > 60 && per[1] > 60 && per[2] > 60);
	CHECK_INT(conf_shard_parse("2/3", &k, &n), 0);
	CHECK_INT(k, 2);
	CHECK_INT(n, 3);
	CHECK_INT(conf_shard_parse("1/1", &k, &n), 0);
	CHECK_INT(conf_shard_parse("0/3", &k, &n), -1);
	CHECK_INT(conf_shard_parse("4/3", &k, &n), -1);
	CHECK_INT(conf_shard_parse("1/0", &k, &n), -1);
	CHECK_INT(conf_shard_parse("1/3x", &k, &n), -1);
	CHECK_INT(conf_shard_parse("+1/3", &k, &n), -1);
	CHECK_INT(conf_shard_parse("1/-3", &k, &n), -1);
	CHECK_INT(conf_shard_parse("3", &k, &n), -1);
}

int
main(void)
{
	if (!check_tmpdir(tmpdir))
		return 1;
	/* "~" must expand to something known. */
	setenv("HOME", HOME, 1);
	unsetenv("XDG_CONFIG_HOME");
	TEST(test_good_top_and_store);
	TEST(test_good_accounts);
	TEST(test_good_inherited);
	TEST(test_good_relay);
	TEST(test_defaults);
	TEST(test_tilde_without_home);
	TEST(test_example);
	TEST(test_bad_many);
	TEST(test_bad_dup);
	TEST(test_bad_folders);
	TEST(test_imap_keys);
	TEST(test_bad_imap);
	TEST(test_bad_store_auth);
	TEST(test_bad_syntax);
	TEST(test_unreadable);
	TEST(test_permissions);
	TEST(test_writable_and_foreign_files);
	TEST(test_password_keys);
	TEST(test_smtp_token_auth);
	TEST(test_password_command);
	TEST(test_password_command_timeout);
	TEST(test_password_from_file);
	TEST(test_safe_value);
	TEST(test_plaintext_policy);
	TEST(test_default_path);
	TEST(test_default_path_home);
	TEST(test_shard);
	check_rm_tree(tmpdir);
	CHECK_DONE();
}

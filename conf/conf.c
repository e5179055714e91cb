/* conf_load() and the small public helpers of conf.h.
 *
 * Loading runs in steps: read the file (conf_load), map libconfuse's line
 * numbers (conf_lines.c), parse and convert into plain structs
 * (conf_parse.c), check them (conf_check.c). Every step adds its errors to
 * one list, printed sorted by line at the end, so that the user sees every
 * problem of the file at once. */
#include <dirent.h>
#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "conf/conf.h"
#include "conf/conf_priv.h"
#include "lib/xmalloc.h"

/* A config file larger than this is surely not one. */
#define CONF_MAX_FILE	(4 * 1024 * 1024)

void
conf_verr(struct conf_load *ld, int line, const char *fmt, va_list ap)
{
	struct conf_msg *m;
	char *p;

	ld->msgs = xreallocarray(ld->msgs, ld->n_msgs + 1, sizeof *ld->msgs);
	m = &ld->msgs[ld->n_msgs];
	m->line = line > 0 ? line : 0;
	m->seq = ld->n_msgs++;
	m->text = xvasprintf(fmt, ap);
	/* One line per error, whatever token libconfuse quotes. */
	for (p = m->text; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
}

void
conf_err(struct conf_load *ld, int line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	conf_verr(ld, line, fmt, ap);
	va_end(ap);
}

/* The slot of key in ix: where it is, or the empty one where it goes. */
static size_t
where_slot(const struct conf_where_ix *ix, const struct conf_where *w, const void *key)
{
	size_t m = ix->n - 1, k = ((size_t)(uintptr_t)key >> 3) * 0x9e3779b97f4a7c15u & m;

	while (ix->slots[k] != 0 && w[ix->slots[k] - 1].key != key)
		k = (k + 1) & m;
	return k;
}

/* Lines are looked up by key (a linear search made loading 1,000 accounts
 * slow): the index points at the latest entry of each key. */
static void
where_add(struct conf_where **w, size_t *n, struct conf_where_ix *ix, const void *key,
    int line)
{
	if (line <= 0)
		return;
	*w = xreallocarray(*w, *n + 1, sizeof **w);
	(*w)[*n].key = key;
	(*w)[*n].line = line;
	(*n)++;
	if (2 * *n > ix->n) {
		free(ix->slots);
		ix->n = ix->n ? 2 * ix->n : 16;
		ix->slots = xcalloc(ix->n, sizeof *ix->slots);
		for (size_t i = 0; i < *n; i++)
			ix->slots[where_slot(ix, *w, (*w)[i].key)] = i + 1;
	} else
		ix->slots[where_slot(ix, *w, key)] = *n;
}

static int
where_find(const struct conf_where *w, const struct conf_where_ix *ix, const void *key)
{
	size_t k;

	if (ix->n == 0)
		return 0;
	k = where_slot(ix, w, key);
	return ix->slots[k] != 0 ? w[ix->slots[k] - 1].line : 0;
}

void
conf_note(struct conf_load *ld, const void *field, int line)
{
	where_add(&ld->fields, &ld->n_fields, &ld->fields_ix, field, line);
}

void
conf_note_block(struct conf_load *ld, const void *block, int line)
{
	where_add(&ld->blocks, &ld->n_blocks, &ld->blocks_ix, block, line);
}

int
conf_line(const struct conf_load *ld, const void *field)
{
	return where_find(ld->fields, &ld->fields_ix, field);
}

int
conf_block_line(const struct conf_load *ld, const void *block)
{
	return where_find(ld->blocks, &ld->blocks_ix, block);
}

static int
msg_cmp(const void *a, const void *b)
{
	const struct conf_msg *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Prints the errors in file order; messages without a line come first. */
static void
print_msgs(struct conf_load *ld, FILE *errf)
{
	size_t i;

	qsort(ld->msgs, ld->n_msgs, sizeof *ld->msgs, msg_cmp);
	for (i = 0; i < ld->n_msgs; i++) {
		if (ld->msgs[i].line > 0)
			fprintf(errf, "%s:%d: %s\n", ld->file, ld->msgs[i].line,
			    ld->msgs[i].text);
		else
			fprintf(errf, "%s: %s\n", ld->file, ld->msgs[i].text);
	}
	fflush(errf);
}

static void
load_free(struct conf_load *ld)
{
	size_t i;

	for (i = 0; i < ld->n_msgs; i++)
		free(ld->msgs[i].text);
	free(ld->msgs);
	free(ld->real_line);
	free(ld->fields);
	free(ld->fields_ix.slots);
	free(ld->blocks);
	free(ld->blocks_ix.slots);
}

/* Reads all of fp (of size bytes by fstat) into *buf (NUL-terminated);
 * -1 with errno on failure. Unbuffered and allocated once at its size:
 * the text holds passwords, and a stdio buffer or a reallocation would
 * leave a copy in freed memory (which the relay process inherits); the
 * caller wipes *buf. */
static int
read_all(FILE *fp, off_t size, char **buf, size_t *len)
{
	size_t cap, n;

	if (size > CONF_MAX_FILE) {
		errno = EFBIG;
		return -1;
	}
	setvbuf(fp, NULL, _IONBF, 0);
	cap = (size_t)size + 2;
	*buf = xmalloc(cap);
	*len = 0;
	/* A file that grew since fstat is read up to its old size + 1: then
	 * it is refused as changing under us. */
	while (*len < cap - 1 && (n = fread(*buf + *len, 1, cap - 1 - *len, fp)) > 0)
		*len += n;
	(*buf)[*len] = '\0';
	if (*len > (size_t)size) {
		errno = EAGAIN;
		return -1;
	}
	return ferror(fp) ? -1 : 0;
}

/* Parses, converts and checks an in-memory copy of the file. */
static void
load_text(struct conf_load *ld, const char *buf, size_t len, const struct stat *sb,
    struct conf *c)
{
	FILE *mem;

	conf_lines_scan(ld, buf, len);
	/* libconfuse reads the very bytes the line scan saw. */
	if ((mem = fmemopen((void *)buf, len, "r")) == NULL) {
		conf_err(ld, 0, "cannot parse: %s", strerror(errno));
		return;
	}
	setvbuf(mem, NULL, _IONBF, 0);
	if (conf_parse(ld, mem, c, NULL) == 0) {
		/* libconfuse takes the end of file as the missing "}". */
		if (ld->unclosed > 0)
			conf_err(ld, ld->unclosed, "\"{\" is never closed "
			    "(missing \"}\")");
		conf_check(ld, c);
		conf_check_mode(ld, c, sb);
	}
	fclose(mem);
}

/* include_dir as given: "~" is expanded already; a relative one is
 * relative to the main file's directory. Allocated. */
static char *
include_dir_path(const struct conf *c)
{
	const char *slash = strrchr(c->path, '/');

	if (c->include_dir[0] == '/' || slash == NULL)
		return xstrdup(c->include_dir);
	return xasprintf("%.*s/%s", (int)(slash - c->path), c->path, c->include_dir);
}

static int
conf_file(const struct dirent *d)
{
	size_t n = strlen(d->d_name);

	return d->d_name[0] != '.' && n > 5 && strcmp(d->d_name + n - 5, ".conf") == 0;
}

/* An account of an include file whose name the configuration has
 * already: refused at its own line, naming where the first one is. */
static void
check_repeats(struct conf_load *ld, const struct conf *c, const struct conf *inc,
    const char *const *files)
{
	for (size_t i = 0; i < inc->n_accounts; i++)
		for (size_t j = 0; j < c->n_accounts; j++)
			if (strcmp(inc->accounts[i].name, c->accounts[j].name) == 0)
				conf_err(ld, inc->accounts[i].line, "account \"%s\" is defined"
				    " twice (first at %s:%d)", inc->accounts[i].name,
				    files[j] ? files[j] : c->path, c->accounts[j].line);
}

/* Moves the accounts of inc to the end of c's. */
static void
append_accounts(struct conf *c, struct conf *inc)
{
	if (inc->n_accounts == 0)
		return;
	c->accounts = xreallocarray(c->accounts, c->n_accounts + inc->n_accounts,
	    sizeof *c->accounts);
	memcpy(c->accounts + c->n_accounts, inc->accounts,
	    inc->n_accounts * sizeof *inc->accounts);
	c->n_accounts += inc->n_accounts;
	free(inc->accounts);
	inc->accounts = NULL;
	inc->n_accounts = 0;
}

/* One include_dir file: its accounts are parsed and checked with its own
 * lines and mode (a password in a file others can read is refused as in
 * the main file), then appended to c. Returns the errors found. */
static size_t
load_include(struct conf *c, const char *path, const char ***files, FILE *errf)
{
	struct conf_load ld = { .file = path };
	struct conf inc = { 0 };
	struct stat sb;
	FILE *fp, *mem;
	char *buf = NULL;
	size_t len, n;

	if ((fp = fopen(path, "r")) == NULL || fstat(fileno(fp), &sb) == -1 ||
	    read_all(fp, sb.st_size, &buf, &len) == -1) {
		fprintf(errf, "%s: cannot read: %s\n", path, strerror(errno));
		if (fp != NULL)
			fclose(fp);
		free(buf);
		return 1;
	}
	fclose(fp);
	conf_lines_scan(&ld, buf, len);
	if ((mem = fmemopen(buf, len, "r")) != NULL)
		setvbuf(mem, NULL, _IONBF, 0);
	if (mem == NULL)
		conf_err(&ld, 0, "cannot parse: %s", strerror(errno));
	else if (conf_parse(&ld, mem, &inc, c) == 0) {
		if (ld.unclosed > 0)
			conf_err(&ld, ld.unclosed, "\"{\" is never closed (missing \"}\")");
		conf_check_accounts(&ld, c, &inc);
		conf_check_mode(&ld, &inc, &sb);
		check_repeats(&ld, c, &inc, *files);
	}
	if (mem != NULL)
		fclose(mem);
	explicit_bzero(buf, len);
	free(buf);
	if ((n = ld.n_msgs) > 0)
		print_msgs(&ld, errf);
	/* Which file each account came from, for later repeats. */
	*files = xreallocarray(*files, c->n_accounts + inc.n_accounts, sizeof **files);
	for (size_t i = 0; i < inc.n_accounts; i++)
		(*files)[c->n_accounts + i] = path;
	append_accounts(c, &inc);
	conf_free_accounts(&inc);
	load_free(&ld);
	return n;
}

/* The accounts of include_dir/ *.conf, in name order. Returns the number
 * of errors printed. */
static size_t
load_includes(struct conf *c, FILE *errf)
{
	char *dir = include_dir_path(c);
	struct dirent **ents = NULL;
	const char **files = xcalloc(c->n_accounts ? c->n_accounts : 1, sizeof *files);
	char **paths;
	size_t errs = 0;
	int n;

	if ((n = scandir(dir, &ents, conf_file, alphasort)) == -1) {
		fprintf(errf, "%s: include_dir %s: %s\n", c->path, dir, strerror(errno));
		free(dir);
		free(files);
		return 1;
	}
	/* The paths live until the end: messages about repeats name them. */
	paths = xcalloc((size_t)n + 1, sizeof *paths);
	for (int i = 0; i < n; i++) {
		paths[i] = xasprintf("%s/%s", dir, ents[i]->d_name);
		free(ents[i]);
		errs += load_include(c, paths[i], &files, errf);
	}
	free(ents);
	for (int i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
	free(files);
	if (errs == 0 && c->n_accounts == 0) {
		fprintf(errf, "%s: no account defined (nor in %s/*.conf)\n", c->path, dir);
		errs = 1;
	}
	free(dir);
	return errs;
}

int
conf_load(const char *path, struct conf **out, FILE *errf)
{
	struct conf_load ld = { .file = path };
	struct conf *c;
	struct stat st;
	FILE *fp;
	char *buf = NULL;
	size_t len;
	int rc = 0, saved;
	bool failed = false;

	*out = NULL;
	if ((fp = fopen(path, "r")) == NULL || fstat(fileno(fp), &st) == -1 ||
	    read_all(fp, st.st_size, &buf, &len) == -1) {
		saved = errno;
		fprintf(errf, "%s: cannot read: %s\n", path, strerror(saved));
		if (fp != NULL)
			fclose(fp);
		free(buf);
		return EX_NOINPUT;
	}
	fclose(fp);
	c = xcalloc(1, sizeof *c);
	c->path = xstrdup(path);
	load_text(&ld, buf, len, &st, c);
	/* The text held the passwords: wiped, not only freed. */
	explicit_bzero(buf, len);
	free(buf);
	if (ld.n_msgs > 0)
		print_msgs(&ld, errf);
	else if (c->include_dir != NULL && load_includes(c, errf) > 0)
		failed = true;
	if (ld.n_msgs > 0 || failed) {
		conf_free(c);
		rc = EX_CONFIG;
	} else
		*out = c;
	load_free(&ld);
	return rc;
}

static void
free_secret(char *s)
{
	if (s != NULL) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static void
free_server(struct conf_server *s)
{
	free(s->host);
	free(s->user);
	free_secret(s->password);
	free(s->password_command);
	free(s->ca_file);
}

static void
free_list(char **v, size_t n)
{
	while (n-- > 0)
		free(v[n]);
	free(v);
}

void
conf_free_account(struct conf_account *a)
{
	free(a->name);
	free(a->local_user);
	free(a->folder);
	free_server(&a->pop3);
	free_server(&a->smtp);
	free_list(a->addresses, a->n_addresses);
	free(a->sent_folder);
}

static void
forget_server(struct conf_server *s)
{
	free_secret(s->password);
	s->password = NULL;
	free(s->password_command);
	s->password_command = NULL;
}

void
conf_forget_secrets(struct conf *c)
{
	forget_server(&c->store.imap);
	for (size_t i = 0; i < c->n_accounts; i++) {
		forget_server(&c->accounts[i].pop3);
		forget_server(&c->accounts[i].smtp);
	}
}

void
conf_free_accounts(struct conf *c)
{
	for (size_t i = 0; i < c->n_accounts; i++)
		conf_free_account(&c->accounts[i]);
	free(c->accounts);
	c->accounts = NULL;
	c->n_accounts = 0;
}

void
conf_free(struct conf *c)
{
	if (c == NULL)
		return;
	free(c->path);
	free(c->metrics_file);
	free(c->include_dir);
	free(c->state_dir);
	free(c->store.path);
	free_server(&c->store.imap);
	free(c->store.master_user);
	free(c->store.dedup);
	conf_free_accounts(c);
	free_list(c->relay.listen, c->relay.n_listen);
	free_list(c->relay.listen_tls, c->relay.n_listen_tls);
	free(c->relay.tls_cert);
	free(c->relay.tls_key);
	free(c->relay.passwd_file);
	free(c);
}

const struct conf_account *
conf_account(const struct conf *c, const char *name)
{
	size_t i;

	for (i = 0; i < c->n_accounts; i++)
		if (strcmp(c->accounts[i].name, name) == 0)
			return &c->accounts[i];
	return NULL;
}

const struct conf_account *
conf_account_by_address(const struct conf *c, const char *addr, const char *local_user)
{
	for (size_t i = 0; i < c->n_accounts; i++) {
		const struct conf_account *a = &c->accounts[i];

		if (local_user != NULL &&
		    (a->local_user == NULL || strcmp(a->local_user, local_user) != 0))
			continue;
		for (size_t j = 0; j < a->n_addresses; j++)
			if (strcasecmp(a->addresses[j], addr) == 0)
				return a;
	}
	return NULL;
}

char *
conf_expand_user(const char *s, const char *user)
{
	const char *p;
	size_t n = 0, ulen = strlen(user);
	char *out, *o;

	for (p = s; (p = strstr(p, "%u")) != NULL; p += 2)
		n++;
	o = out = xmalloc(strlen(s) + n * ulen + 1);
	for (p = s; *p != '\0'; ) {
		if (p[0] == '%' && p[1] == 'u') {
			memcpy(o, user, ulen);
			o += ulen;
			p += 2;
		} else
			*o++ = *p++;
	}
	*o = '\0';
	return out;
}

char *
conf_store_path(const struct conf *c, const struct conf_account *a)
{
	return conf_expand_user(c->store.path, a->local_user ? a->local_user : "");
}

char *
conf_store_user(const struct conf *c, const struct conf_account *a)
{
	return conf_expand_user(c->store.imap.user ? c->store.imap.user : "%u",
	    a->local_user ? a->local_user : "");
}

char *
conf_store_location(const struct conf *c, const struct conf_account *a)
{
	const struct conf_server *s = &c->store.imap;
	char *where, *loc;

	if (c->store.type == CONF_STORE_IMAP) {
		where = conf_store_user(c, a);
		loc = xasprintf("imap:%s@%s:%u", where, s->host ? s->host : "", s->port);
	} else {
		where = conf_store_path(c, a);
		loc = xasprintf("maildir:%s", where);
	}
	free(where);
	return loc;
}

/* $HOME, else the home directory of the real user; NULL if neither. */
const char *
conf_home(void)
{
	const char *home = getenv("HOME");
	struct passwd *pw;

	if (home != NULL && *home != '\0')
		return home;
	if ((pw = getpwuid(getuid())) != NULL && pw->pw_dir[0] != '\0')
		return pw->pw_dir;
	return NULL;
}

/* "~" and "~/..." only: "~user" is left alone. NULL if there is no home. */
char *
conf_expand_tilde(const char *s)
{
	const char *home;

	if (s[0] != '~' || (s[1] != '\0' && s[1] != '/'))
		return xstrdup(s);
	if ((home = conf_home()) == NULL)
		return NULL;
	return xasprintf("%s%s", home, s + 1);
}

char *
conf_default_path(void)
{
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home;
	char *p = NULL;

	/* The XDG spec says to ignore a relative XDG_CONFIG_HOME. */
	if (xdg != NULL && xdg[0] == '/')
		p = xasprintf("%s/pop3bridge/pop3bridge.conf", xdg);
	else if ((home = conf_home()) != NULL)
		p = xasprintf("%s/.config/pop3bridge/pop3bridge.conf", home);
	if (p != NULL && access(p, F_OK) == 0)
		return p;
	free(p);
	return xstrdup("/etc/pop3bridge.conf");
}

bool
conf_safe_value(const char *s, size_t max)
{
	size_t len;

	if (s == NULL)
		return false;
	len = strlen(s);
	return len <= max && strcspn(s, "\r\n") == len;
}

bool
conf_safe_name(const char *s, size_t max)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++)
		if (i == max || (unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

bool
conf_plaintext_refused(const struct conf_server *s, bool has_secret)
{
	return s->tls == CONF_TLS_NONE && has_secret && !s->allow_plaintext;
}

/* Account names and local users end up in file names and paths. */
bool
conf_name_ok(const char *s)
{
	static const char ok[] = "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@+-";

	if (s == NULL || s[0] == '\0' || s[0] == '.' || s[0] == '-')
		return false;
	return strspn(s, ok) == strlen(s);
}

/* The IMAP APPEND delivery backend (see store/imap.h for the contract).
 *
 * libetpan does the connection, TLS, greeting, LOGIN, LIST, CREATE and
 * SEARCH. APPEND is sent by hand over the session's stream: libetpan's
 * mailimap_append() wants the whole message in one buffer and walks it
 * twice (once to count CRLF fixes), so even an mmap of a 50 MB temp file
 * would put every page in our resident set. We stream the file instead
 * (its size is the literal size: the caller wrote CRLF already) and let
 * libetpan parse the server's answer, APPENDUID included. */
#include "store/imap.h"

#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <libetpan/libetpan.h>

#include "lib/err.h"
#include "lib/io.h"
#include "lib/linecap.h"
#include "lib/log.h"
#include "lib/mutf7.h"
#include "lib/net.h"
#include "lib/sasl.h"
#include "lib/tls.h"
#include "lib/xmalloc.h"
#include "store/imap_guard.h"
#include "store/outbox.h"

/* User names: bounded before libetpan quotes them (doc/DESIGN.md, libetpan
 * trap 7). */
#define IMAP_NAME_MAX	255
#define IMAP_PASS_MAX	1024
#define IMAP_MBOX_MAX	1000	/* encoded mailbox name */
#define IMAP_CHUNK	65536	/* bytes of a literal per read and write */
#define IMAP_TEXT_MAX	200	/* server text quoted in an error */
#define IMAP_LINE_MAX	(2 * IMAP_GUARD_LITERAL_MAX)	/* a reply line, literals included */
#define IMAP_TIMEOUT_DEFAULT 60

struct folder {
	char *name;		/* as configured: "a/b" */
	char *mbox;		/* as the server names it: mUTF-7, its delimiter */
	bool ready;		/* known to exist (and subscribed if we made it) */
};

struct imap {
	char *account;		/* for log messages */
	char *where;		/* "imap store HOST:PORT", prefix of every error */
	char *spool;		/* STATE_DIR/spool/imap */
	const struct conf_server *srv;
	unsigned timeout;
	mailimap *m;
	bool broken;		/* the stream is in an unknown state */
	bool said_no;		/* the last tagged reply was NO or BAD */
	bool uidplus;
	char delim;		/* server's hierarchy delimiter; 0: flat */
	char *selected;		/* mailbox EXAMINEd last, or NULL */
	struct folder *folders;
	size_t n_folders;
	char *buf;		/* IMAP_CHUNK bytes for streaming literals */
	struct imap_guard guard;	/* what of the replies libetpan may see */
};

/*
 * Errors: one line naming the server and the step; the server's own text
 * when it gave one (never anything we sent: a password cannot appear).
 */

/* The last server text, printable and bounded. Allocated. */
static char *
server_text(const struct imap *im)
{
	const char *t = im->m != NULL ? im->m->imap_response : NULL;
	size_t i, n;
	char *s;

	if (t == NULL || *t == '\0')
		return xstrdup("");
	n = strnlen(t, IMAP_TEXT_MAX);
	s = xstrndup(t, n);
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			s[i] = '?';
	return s;
}

/* Sets *err for a failed libetpan call r during step what; returns -1. */
static int
fail(struct imap *im, char **err, const char *what, int r)
{
	char *text;

	if (r == MAILIMAP_ERROR_STREAM || r == MAILIMAP_ERROR_CONNECTION_REFUSED ||
	    r == MAILIMAP_ERROR_PARSE || r == MAILIMAP_ERROR_FATAL) {
		im->broken = true;
		if ((text = (char *)linecap_refused(im->m != NULL ?
		    im->m->imap_stream : NULL)) != NULL)
			return err_at(err, im->where, "%s: refused: %s", what, text);
		return err_at(err, im->where, "%s: %s", what,
		    r == MAILIMAP_ERROR_PARSE ? "unparsable reply" :
		    r == MAILIMAP_ERROR_CONNECTION_REFUSED ? "connection refused" :
		    r == MAILIMAP_ERROR_FATAL ? "server closed the session" :
		    "connection lost or timed out");
	}
	text = server_text(im);
	if (*text != '\0')
		err_at(err, im->where, "%s refused: %s", what, text);
	else
		err_at(err, im->where, "%s failed (libetpan error %d)", what, r);
	free(text);
	return -1;
}

static int
usable(struct imap *im, char **err)
{
	if (im->broken || im->m == NULL)
		return err_at(err, im->where, "session unusable after an earlier error");
	return 0;
}

/*
 * Names and values.
 */

/* A delivery key names a file in the spool and goes into SEARCH. */
static int
check_key(const char *key, char **err)
{
	if (key[0] == '\0' || key[0] == '.' || strchr(key, '/') != NULL ||
	    strchr(key, '"') != NULL || strchr(key, ' ') != NULL ||
	    !conf_safe_name(key, IMAP_NAME_MAX)) {
		*err = xasprintf("invalid delivery key \"%s\"", key);
		return -1;
	}
	return 0;
}

/* One level of a folder name, encoded, appended to *out. */
static int
add_level(struct imap *im, const char *folder, const char *s, size_t n, bool first,
    char **out, char **err)
{
	char *lvl = xstrndup(s, n), *enc, *o;
	int r = -1;

	if (n == 0)
		err_at(err, im->where, "folder \"%s\": empty hierarchy level", folder);
	else if (strpbrk(lvl, "*%") != NULL)
		err_at(err, im->where, "folder \"%s\": \"*\" and \"%%\" are IMAP wildcards",
		    folder);
	else if (im->delim != '\0' && im->delim != '/' && strchr(lvl, im->delim))
		err_at(err, im->where, "folder \"%s\": \"%c\" is the server's hierarchy delimiter "
		    "(use \"/\" between levels)", folder, im->delim);
	else if (!conf_safe_name(lvl, IMAP_MBOX_MAX))
		err_at(err, im->where, "folder \"%s\": control character in the name", folder);
	else if (first && strcasecmp(lvl, "INBOX") == 0) {
		enc = xstrdup("INBOX");
		r = 0;
	} else if (mutf7_encode(lvl, &enc) == -1)
		err_at(err, im->where, "folder \"%s\": not valid UTF-8", folder);
	else
		r = 0;
	free(lvl);
	if (r == -1)
		return -1;
	o = first ? xstrdup(enc) : xasprintf("%s%c%s", *out, im->delim, enc);
	free(*out);
	free(enc);
	*out = o;
	return 0;
}

/* The server's name of a configured folder. Allocated in *mbox. */
static int
mbox_name(struct imap *im, const char *folder, char **mbox, char **err)
{
	const char *p = folder, *slash;
	char *out = NULL;

	if (strcasecmp(folder, "INBOX") == 0) {
		*mbox = xstrdup("INBOX");
		return 0;
	}
	if (im->delim == '\0' && strchr(folder, '/') != NULL)
		return err_at(err, im->where, "folder \"%s\": the server has no hierarchy",
		    folder);
	for (;;) {
		slash = strchr(p, '/');
		if (add_level(im, folder, p, slash ? (size_t)(slash - p) : strlen(p),
		    p == folder, &out, err) == -1) {
			free(out);
			return -1;
		}
		if (slash == NULL)
			break;
		p = slash + 1;
	}
	if (strlen(out) > IMAP_MBOX_MAX) {
		free(out);
		return err_at(err, im->where, "folder \"%s\": name too long", folder);
	}
	*mbox = out;
	return 0;
}

/*
 * Connection: TCP, TLS (implicit or STARTTLS, never a fallback), verified
 * before LOGIN, capabilities re-read after each change of state.
 */

/* TCP (lib/net.c: every address within the timeout), the TLS layer when
 * implicit, the line bound under libetpan, then its greeting. */
static int
connect_stream(struct imap *im, char **err)
{
	const struct conf_server *s = im->srv;
	mailstream *stream;
	char *why = NULL;
	int fd, r;

	if (net_connect(s->host, s->port, im->timeout, &fd, &why) == -1) {
		im->broken = true;
		err_at(err, im->where, "%s", why);
		free(why);
		return -1;
	}
	stream = tls_stream_open(fd, s->tls == CONF_TLS_IMPLICIT, s->host, im->timeout,
	    IMAP_CHUNK);
	if (stream == NULL) {
		im->broken = true;
		return err_at(err, im->where, "TLS handshake failed");
	}
	linecap_install(stream, IMAP_LINE_MAX, imap_guard_line, &im->guard);
	/* mailimap_free() closes the stream from now on, also on failure. */
	r = mailimap_connect(im->m, stream);
	return r;
}

static int
verify(struct imap *im, char **err)
{
	char *why = NULL;

	if (tls_verify(im->m->imap_stream, im->srv->host, im->srv->ca_file, &why) == 0)
		return 0;
	im->broken = true;
	*err = xasprintf("%s: %s", im->where, why);
	free(why);
	return -1;
}

static bool
cap_has(struct mailimap_capability_data *cd, const char *name)
{
	struct mailimap_capability *cap;
	clistiter *it;

	for (it = clist_begin(cd->cap_list); it != NULL; it = clist_next(it)) {
		cap = clist_content(it);
		if (cap->cap_type == MAILIMAP_CAPABILITY_NAME &&
		    cap->cap_data.cap_name != NULL &&
		    strcasecmp(cap->cap_data.cap_name, name) == 0)
			return true;
	}
	return false;
}

/* CAPABILITY, asked afresh: libetpan caches what it saw last, and what a
 * server announces changes with TLS and with login (Dovecot shows UIDPLUS
 * only after LOGIN). *starttls and *nologin may be NULL.
 * libetpan's mailimap_capability() returns a copy of its cache and
 * dereferences it unchecked: a server answering OK without a CAPABILITY
 * line crashed it when nothing was cached (found by
 * tests/fuzz/fuzz_imap_store.c), and returned an older set (the
 * greeting's, LOGIN's) otherwise. The cache is emptied first: the answer
 * is what the server says now, or nothing. */
static int
read_caps(struct imap *im, bool *starttls, bool *nologin, char **err)
{
	struct mailimap_connection_info *ci = im->m->imap_connection_info;
	struct mailimap_capability_data *cd = NULL;
	clist *none;
	int r;

	if (ci == NULL)
		return fail(im, err, "CAPABILITY", MAILIMAP_ERROR_FATAL);
	if (ci->imap_capability != NULL)
		mailimap_capability_data_free(ci->imap_capability);
	if ((none = clist_new()) == NULL ||
	    (ci->imap_capability = mailimap_capability_data_new(none)) == NULL)
		fatalx("imap: out of memory");
	if ((r = mailimap_capability(im->m, &cd)) != MAILIMAP_NO_ERROR)
		return fail(im, err, "CAPABILITY", r);
	im->uidplus = cap_has(cd, "UIDPLUS");
	if (starttls != NULL)
		*starttls = cap_has(cd, "STARTTLS");
	if (nologin != NULL)
		*nologin = cap_has(cd, "LOGINDISABLED");
	mailimap_capability_data_free(cd);
	return 0;
}

static int
starttls(struct imap *im, char **err)
{
	bool offered;
	int r;

	if (read_caps(im, &offered, NULL, err) == -1)
		return -1;
	if (!offered) {
		im->broken = true;
		return err_at(err, im->where,
		    "server does not offer STARTTLS (tls = \"starttls\")");
	}
	/* libetpan refuses bytes injected after the reply (CVE-2020-15953). */
	r = mailimap_socket_starttls_with_callback(im->m, tls_sni_callback,
	    (void *)im->srv->host);
	if (r != MAILIMAP_NO_ERROR) {
		im->broken = true;
		return fail(im, err, "STARTTLS", r);
	}
	/* The TLS layer replaced the bounded one: bound it again. */
	mailstream_low_set_timeout(mailstream_get_low(im->m->imap_stream), im->timeout);
	linecap_install(im->m->imap_stream, IMAP_LINE_MAX, imap_guard_line, &im->guard);
	return verify(im, err);
}

static int
establish(struct imap *im, char **err)
{
	const struct conf_server *s = im->srv;
	int r;

	if ((im->m = mailimap_new(0, NULL)) == NULL)
		fatalx("imap: out of memory");
	mailimap_set_timeout(im->m, im->timeout);
	if ((r = connect_stream(im, err)) == -1)
		return -1;
	if (r != MAILIMAP_NO_ERROR_AUTHENTICATED && r != MAILIMAP_NO_ERROR_NON_AUTHENTICATED)
		return fail(im, err, "greeting", r);
	/* PREAUTH: the server chose the user (and, before STARTTLS, TLS could
	 * never be negotiated): we would deliver into a mailbox we did not
	 * log in to. */
	if (r == MAILIMAP_NO_ERROR_AUTHENTICATED) {
		im->broken = true;
		return err_at(err, im->where, "server greeted with PREAUTH: refused, the store "
		    "must log in as the configured user%s",
		    s->tls == CONF_TLS_STARTTLS ? " over TLS" : "");
	}
	if (s->tls == CONF_TLS_IMPLICIT)
		return verify(im, err);
	if (s->tls == CONF_TLS_STARTTLS)
		return starttls(im, err);
	return 0;
}

/* LOGIN; refuses to log in when the reply would not be trustworthy. The
 * server's refusal text is shown unless it repeats the password. */
static int
login(struct imap *im, const char *user, const char *pass, char **err)
{
	mailstream *s = im->m->imap_stream;
	bool nologin;
	char *text;
	int r;

	if (read_caps(im, NULL, &nologin, err) == -1)
		return -1;
	if (nologin)
		return err_at(err, im->where, "server refuses LOGIN (LOGINDISABLED): use tls");
	r = mailimap_login(im->m, user, pass);
	/* libetpan keeps sent bytes in its write buffer: wipe the password. */
	explicit_bzero(s->write_buffer, s->buffer_max_size);
	if (r == MAILIMAP_NO_ERROR)
		return read_caps(im, NULL, NULL, err);
	if (r != MAILIMAP_ERROR_LOGIN)
		return fail(im, err, "LOGIN", r);
	text = server_text(im);
	if (sasl_repeats_secret(text, user, pass))
		err_at(err, im->where, "login as %s refused (reply withheld: it repeats the "
		    "password)", user);
	else
		err_at(err, im->where, "login as %s refused: %s", user, text);
	free(text);
	return -1;
}

/* The hierarchy delimiter, from LIST "" "" (RFC 3501 6.3.8). */
static int
read_delim(struct imap *im, char **err)
{
	struct mailimap_mailbox_list *mb;
	clist *res = NULL;
	int r;

	/* libetpan hands over the listing also when LIST failed: ours to free. */
	if ((r = mailimap_list(im->m, "", "", &res)) != MAILIMAP_NO_ERROR) {
		if (res != NULL)
			mailimap_list_result_free(res);
		return fail(im, err, "LIST \"\" \"\"", r);
	}
	im->delim = '/';
	if (res != NULL && clist_begin(res) != NULL) {
		mb = clist_content(clist_begin(res));
		im->delim = mb->mb_delimiter;
	}
	if (res != NULL)
		mailimap_list_result_free(res);
	return 0;
}

/* The login name, the password, both checked for what could inject. */
static int
credentials(struct imap *im, const struct conf *c, const struct conf_account *a,
    char **user, char **login_name, char **pass, char **err)
{
	const char *master = c->store.master_user;

	*user = conf_store_user(c, a);
	if (**user == '\0' || !conf_safe_name(*user, IMAP_NAME_MAX))
		return err_at(err, im->where, "store user name is empty, holds a control "
		    "character or is longer than %d bytes", IMAP_NAME_MAX);
	if (master != NULL && (*master == '\0' || !conf_safe_name(master, IMAP_NAME_MAX)))
		return err_at(err, im->where, "store master_user is empty, holds a control "
		    "character or is too long");
	/* Dovecot's master login: "user*master" (auth_master_user_separator),
	 * authenticated by the master's password. */
	*login_name = master != NULL ? xasprintf("%s*%s", *user, master) : xstrdup(*user);
	if (conf_password(im->srv, pass, err) == -1)
		return -1;
	if (*pass == NULL)
		*pass = xstrdup("");
	if (!conf_safe_name(*pass, IMAP_PASS_MAX))
		return err_at(err, im->where, "store password holds a control character or is "
		    "longer than %d bytes", IMAP_PASS_MAX);
	if (conf_plaintext_refused(im->srv, **pass != '\0'))
		return err_at(err, im->where, "%s", CONF_PLAINTEXT_REFUSED);
	return 0;
}

static int
session_open(struct imap *im, const struct conf *c, const struct conf_account *a,
    char **err)
{
	char *user = NULL, *login_name = NULL, *pass = NULL;
	int r = -1;

	if (credentials(im, c, a, &user, &login_name, &pass, err) == 0 &&
	    establish(im, err) == 0 && login(im, login_name, pass, err) == 0 &&
	    read_delim(im, err) == 0)
		r = 0;
	if (pass != NULL) {
		explicit_bzero(pass, strlen(pass));
		free(pass);
	}
	free(user);
	free(login_name);
	return r;
}

/*
 * Folders.
 */

static bool
is_noselect(const struct mailimap_mailbox_list *mb)
{
	const struct mailimap_mbx_list_flags *f = mb->mb_flag;
	struct mailimap_mbx_list_oflag *of;
	clistiter *it;

	if (f == NULL)
		return false;
	if (f->mbf_type == MAILIMAP_MBX_LIST_FLAGS_SFLAG &&
	    f->mbf_sflag == MAILIMAP_MBX_LIST_SFLAG_NOSELECT)
		return true;
	for (it = clist_begin(f->mbf_oflags); it != NULL; it = clist_next(it)) {
		of = clist_content(it);
		if (of->of_flag_ext != NULL && strcasecmp(of->of_flag_ext, "NonExistent") == 0)
			return true;
	}
	return false;
}

/* LIST "" mbox: 1 exists and is selectable, 0 not, -1 error. The name has
 * no wildcard (mbox_name refuses them). */
static int
mbox_exists(struct imap *im, const char *mbox, char **err)
{
	struct mailimap_mailbox_list *mb;
	clist *res = NULL;
	clistiter *it;
	int r, found = 0;

	if ((r = mailimap_list(im->m, "", mbox, &res)) != MAILIMAP_NO_ERROR) {
		if (res != NULL)
			mailimap_list_result_free(res);
		return fail(im, err, "LIST", r);
	}
	for (it = res ? clist_begin(res) : NULL; it != NULL && !found; it = clist_next(it)) {
		mb = clist_content(it);
		found = strcmp(mb->mb_name, mbox) == 0 && !is_noselect(mb);
	}
	if (res != NULL)
		mailimap_list_result_free(res);
	return found;
}

/* CREATE and SUBSCRIBE, as a client making the folder would. Another
 * process may create it meanwhile: a failed CREATE is fine if it exists. */
static int
mbox_create(struct imap *im, struct folder *f, char **err)
{
	char *serr = NULL;
	int r;

	if ((r = mailimap_create(im->m, f->mbox)) != MAILIMAP_NO_ERROR) {
		fail(im, err, "CREATE", r);
		if (im->broken || mbox_exists(im, f->mbox, &serr) != 1) {
			free(serr);
			return -1;
		}
		free(*err);
		*err = NULL;
		return 0;
	}
	log_info("%s: created folder %s on %s", im->account, f->name, im->where);
	/* Only cosmetic (clients showing subscribed folders only): a refusal
	 * is logged and delivery goes on. */
	if ((r = mailimap_subscribe(im->m, f->mbox)) != MAILIMAP_NO_ERROR) {
		fail(im, &serr, "SUBSCRIBE", r);
		if (im->broken) {
			*err = serr;
			return -1;
		}
		log_warnx("%s: not subscribing folder %s: %s", im->account, f->name, serr);
		free(serr);
	}
	return 0;
}

/* The folder of that name; with create, made to exist on the server. */
static struct folder *
folder_get(struct imap *im, const char *name, bool create, char **err)
{
	struct folder *f = NULL;
	size_t i;
	char *mbox = NULL;
	int r;

	for (i = 0; i < im->n_folders && f == NULL; i++)
		if (strcmp(im->folders[i].name, name) == 0)
			f = &im->folders[i];
	if (f == NULL) {
		if (mbox_name(im, name, &mbox, err) == -1)
			return NULL;
		im->folders = xreallocarray(im->folders, im->n_folders + 1, sizeof *f);
		f = &im->folders[im->n_folders++];
		f->name = xstrdup(name);
		f->mbox = mbox;
		f->ready = strcmp(mbox, "INBOX") == 0;
	}
	if (!create || f->ready)
		return f;
	if (usable(im, err) == -1 || (r = mbox_exists(im, f->mbox, err)) == -1)
		return NULL;
	if (r == 0 && mbox_create(im, f, err) == -1)
		return NULL;
	f->ready = true;
	return f;
}

/*
 * APPEND, streamed from the temp file.
 */

/* "mbox" with '"' and '\' escaped (the name is mUTF-7: printable ASCII). */
static char *
quoted(const char *s)
{
	char *out = xmalloc(2 * strlen(s) + 3), *o = out;

	*o++ = '"';
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			*o++ = '\\';
		*o++ = *s;
	}
	*o++ = '"';
	*o = '\0';
	return out;
}

static int
send_bytes(struct imap *im, const void *b, size_t n, char **err)
{
	if (mailstream_write(im->m->imap_stream, b, n) != (ssize_t)n)
		return fail(im, err, "APPEND", MAILIMAP_ERROR_STREAM);
	return 0;
}

/* Sends "TAG APPEND mbox [(\Seen)] "date" {size}". */
static int
append_command(struct imap *im, const char *mbox, unsigned flags, time_t date,
    uint64_t size, char **err)
{
	static const char *const mon[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
	    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	char *q = quoted(mbox), *line;
	struct tm tm;
	int r;

	/* INTERNALDATE in UTC: the instant is what matters. */
	gmtime_r(&date, &tm);
	line = xasprintf("APPEND %s%s \"%02d-%s-%04d %02d:%02d:%02d +0000\" {%llu}\r\n",
	    q, (flags & DELIVER_SEEN) ? " (\\Seen)" : "", tm.tm_mday, mon[tm.tm_mon],
	    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned long long)size);
	free(q);
	if ((r = mailimap_send_current_tag(im->m)) != MAILIMAP_NO_ERROR)
		r = fail(im, err, "APPEND", r);
	else
		r = send_bytes(im, line, strlen(line), err);
	free(line);
	if (r == 0 && mailstream_flush(im->m->imap_stream) == -1)
		r = fail(im, err, "APPEND", MAILIMAP_ERROR_STREAM);
	return r;
}

/* The tagged reply to the command in flight (its first line may already be
 * in libetpan's buffer): 0 OK, -1 with *err; *trycreate when the server
 * says the mailbox must be created first. */
static int
tagged_reply(struct imap *im, const char *what, bool *trycreate, char **err)
{
	struct mailimap_response *resp = NULL;
	int r, state;

	if ((r = mailimap_parse_response(im->m, &resp)) != MAILIMAP_NO_ERROR)
		return fail(im, err, what, r);
	if (resp->rsp_resp_done->rsp_type != MAILIMAP_RESP_DONE_TYPE_TAGGED) {
		mailimap_response_free(resp);
		return fail(im, err, what, MAILIMAP_ERROR_FATAL);
	}
	state = resp->rsp_resp_done->rsp_data.rsp_tagged->rsp_cond_state->rsp_type;
	mailimap_response_free(resp);
	if (trycreate != NULL)
		*trycreate = im->m->imap_response_info != NULL &&
		    im->m->imap_response_info->rsp_trycreate;
	/* A NO or BAD answers this command only: the session goes on. */
	im->said_no = state != MAILIMAP_RESP_COND_STATE_OK;
	if (state != MAILIMAP_RESP_COND_STATE_OK)
		return fail(im, err, what, MAILIMAP_ERROR_APPEND);
	return 0;
}

/* Waits for the "+" that asks for the literal: 1 go on, 0 the server
 * answered the command instead (tagged reply parsed, *err set), -1 error. */
static int
continuation(struct imap *im, bool *trycreate, char **err)
{
	char *line;

	for (;;) {
		if ((line = mailimap_read_line(im->m)) == NULL)
			return fail(im, err, "APPEND", MAILIMAP_ERROR_STREAM);
		if (line[0] == '+')
			return 1;
		/* Untagged data (EXISTS of the selected mailbox...) may come
		 * first; none of it matters here. */
		if (strncmp(line, "* ", 2) != 0 || strncmp(line, "* BYE", 5) == 0)
			break;
	}
	if (tagged_reply(im, "APPEND", trycreate, err) == 0)
		return err_at(err, im->where, "APPEND: server accepted a message it never read");
	return 0;
}

/* The literal: size bytes of fd from offset 0, then CRLF. Once the server
 * asked for the literal there is no way back: any short read breaks the
 * session, and the server drops the half message. */
static int
send_literal(struct imap *im, int fd, uint64_t size, char **err)
{
	uint64_t off = 0;
	ssize_t n;

	while (off < size) {
		n = pread(fd, im->buf, size - off < IMAP_CHUNK ? size - off : IMAP_CHUNK,
		    (off_t)off);
		if (n <= 0) {
			im->broken = true;
			return err_at(err, im->where, "reading the temp file: %s",
			    n == 0 ? "it shrank" : strerror(errno));
		}
		if (send_bytes(im, im->buf, (size_t)n, err) == -1)
			return -1;
		off += (uint64_t)n;
	}
	if (send_bytes(im, "\r\n", 2, err) == -1)
		return -1;
	if (mailstream_flush(im->m->imap_stream) == -1)
		return fail(im, err, "APPEND", MAILIMAP_ERROR_STREAM);
	return 0;
}

/* APPENDUID (RFC 4315) of the last tagged OK, as libetpan parsed it. */
static void
append_uid(struct imap *im, uint32_t *uidvalidity, uint32_t *uid)
{
	struct mailimap_response_info *ri = im->m->imap_response_info;
	struct mailimap_uidplus_resp_code_apnd *apnd;
	struct mailimap_extension_data *ext;
	struct mailimap_set_item *item;
	clistiter *it;

	*uidvalidity = *uid = 0;
	if (ri == NULL || ri->rsp_extension_list == NULL)
		return;
	for (it = clist_begin(ri->rsp_extension_list); it != NULL; it = clist_next(it)) {
		ext = clist_content(it);
		if (ext->ext_extension != &mailimap_extension_uidplus ||
		    ext->ext_type != MAILIMAP_UIDPLUS_RESP_CODE_APND)
			continue;
		apnd = ext->ext_data;
		if (apnd->uid_set == NULL || clist_begin(apnd->uid_set->set_list) == NULL)
			return;
		item = clist_content(clist_begin(apnd->uid_set->set_list));
		*uidvalidity = apnd->uid_uidvalidity;
		*uid = item->set_first;
		return;
	}
}

/* One APPEND of the file fd into mbox. */
static int
append_file(struct imap *im, const char *mbox, struct deliver_msg *m, uint64_t size,
    bool *trycreate, char **err)
{
	int r;

	*trycreate = false;
	im->said_no = false;
	if (usable(im, err) == -1 ||
	    append_command(im, mbox, m->flags, m->date, size, err) == -1)
		return -1;
	if ((r = continuation(im, trycreate, err)) != 1)
		return -1;
	if (send_literal(im, m->fd, size, err) == -1)
		return -1;
	/* As mailimap_append(): the reply's first line replaces the "+".
	 * A server may say TRYCREATE only once it has the literal (found by
	 * tests/integration/test_hostile_imap.py): create and retry then too. */
	if (mailimap_read_line(im->m) == NULL)
		return fail(im, err, "APPEND", MAILIMAP_ERROR_STREAM);
	if (tagged_reply(im, "APPEND", trycreate, err) == -1)
		return -1;
	append_uid(im, &m->uidvalidity, &m->uid);
	return 0;
}

static char *
spool_path(const struct imap *im, const char *key)
{
	return xasprintf("%s/%s", im->spool, key);
}

static char *
location(const char *folder, uint32_t uidvalidity, uint32_t uid)
{
	if (uid == 0)
		return xstrdup(folder);
	return xasprintf("%s;UIDVALIDITY=%u;UID=%u", folder, uidvalidity, uid);
}

/* APPENDs one temp file (again after creating the folder when the server
 * asks for it), then removes it. Closes the fd. */
static int
deliver_one(struct imap *im, struct deliver_msg *m, char **err)
{
	struct folder *f;
	struct stat sb;
	bool trycreate;
	char *path;
	int r = -1;

	if (check_key(m->key, err) == -1 || (f = folder_get(im, m->folder, true, err)) == NULL)
		goto out;
	if (fstat(m->fd, &sb) == -1) {
		*err = xasprintf("%s: temp file of %s: %s", im->account, m->key, strerror(errno));
		goto out;
	}
	r = append_file(im, f->mbox, m, (uint64_t)sb.st_size, &trycreate, err);
	if (r == -1 && trycreate && !im->broken) {
		/* Deleted since we looked: make it again, once. */
		free(*err);
		*err = NULL;
		f->ready = false;
		if ((f = folder_get(im, m->folder, true, err)) != NULL)
			r = append_file(im, f->mbox, m, (uint64_t)sb.st_size, &trycreate, err);
	}
	if (r == -1 && im->said_no && !trycreate && !im->broken) {
		/* The server refused this message (too big, quota, content
		 * it will not take): one message must not stop the others. */
		m->refused = *err;
		*err = NULL;
		r = 0;
	} else if (r == -1)
		goto out;
	else
		m->location = location(m->folder, m->uidvalidity, m->uid);
	path = spool_path(im, m->key);
	if (unlink(path) == -1 && errno != ENOENT)
		log_warn("%s: removing %s", im->account, path);
	free(path);
out:
	close(m->fd);
	m->fd = -1;
	return r;
}

/*
 * The backend.
 */

static void
im_close(void *ctx)
{
	struct imap *im = ctx;
	size_t i;

	if (im == NULL)
		return;
	if (im->m != NULL) {
		/* LOGOUT is a courtesy; an unusable stream is just closed. */
		if (!im->broken && im->m->imap_stream != NULL)
			mailimap_logout(im->m);
		mailimap_free(im->m);
	}
	for (i = 0; i < im->n_folders; i++) {
		free(im->folders[i].name);
		free(im->folders[i].mbox);
	}
	free(im->folders);
	free(im->selected);
	free(im->account);
	free(im->where);
	free(im->spool);
	free(im->buf);
	free(im);
}

static int
im_open(const struct conf *c, const struct conf_account *a, void **ctx, char **err)
{
	struct imap *im = xcalloc(1, sizeof *im);

	im->account = xstrdup(a->name ? a->name : "");
	im->srv = &c->store.imap;
	im->where = xasprintf("imap store %s:%u", im->srv->host ? im->srv->host : "?",
	    im->srv->port);
	im->spool = outbox_spool_area(c->state_dir, "imap");
	im->timeout = im->srv->timeout ? im->srv->timeout : IMAP_TIMEOUT_DEFAULT;
	im->buf = xmalloc(IMAP_CHUNK);
	if (im->srv->host == NULL || *im->srv->host == '\0' || im->srv->port == 0 ||
	    im->srv->port > 65535) {
		err_at(err, im->where, "no host or port configured");
		im_close(im);
		return -1;
	}
	if (session_open(im, c, a, err) == -1) {
		im_close(im);
		return -1;
	}
	*ctx = im;
	return 0;
}

static int
im_tmp_create(void *ctx, const char *folder, const char *key, int *fd, char **err)
{
	struct imap *im = ctx;
	char *path, *line;

	(void)folder;
	*fd = -1;
	if (check_key(key, err) == -1 ||
	    io_mkdir_p(im->spool, 0700, false, err) == -1)
		return -1;
	path = spool_path(im, key);
	*fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
	if (*fd == -1)
		*err = xasprintf("creating %s: %s", path, strerror(errno));
	else {
		/* The key travels with the message: find() searches for it. */
		line = xasprintf(IMAP_KEY_HEADER ": %s\r\n", key);
		if (io_write_all(*fd, line, strlen(line)) == -1) {
			*err = xasprintf("writing %s: %s", path, strerror(errno));
			close(*fd);
			unlink(path);
			*fd = -1;
		}
		free(line);
	}
	free(path);
	return *fd == -1 ? -1 : 0;
}

static int
im_tmp_discard(void *ctx, const char *folder, const char *key, char **err)
{
	struct imap *im = ctx;
	char *path;
	int r = 0;

	(void)folder;
	if (check_key(key, err) == -1)
		return -1;
	path = spool_path(im, key);
	if (unlink(path) == -1 && errno != ENOENT && errno != ENOTDIR) {
		*err = xasprintf("removing %s: %s", path, strerror(errno));
		r = -1;
	}
	free(path);
	return r;
}

static int
im_tmp_cleanup(void *ctx, const char *folder, const char *key_tag, char **err)
{
	struct imap *im = ctx;

	(void)folder;
	return deliver_tmp_sweep(im->spool, key_tag, im->account, err);
}

static int
im_deliver(void *ctx, struct deliver_msg *msgs, size_t n, char **err)
{
	struct imap *im = ctx;
	size_t i;
	int r = 0;

	for (i = 0; i < n; i++) {
		if (r == -1) {
			/* The rest stay in the spool, but we own their fds. */
			close(msgs[i].fd);
			msgs[i].fd = -1;
		} else if (deliver_one(im, &msgs[i], err) == -1)
			r = -1;
	}
	/* Some may be stored: the caller settles each with find(). */
	for (i = 0; r == -1 && i < n; i++) {
		free(msgs[i].location);
		msgs[i].location = NULL;
	}
	return r;
}

/* EXAMINE mbox unless it is selected already (read-only: \Recent and
 * flags stay as they are for the user's clients). */
static int
examine(struct imap *im, const char *mbox, char **err)
{
	int r;

	if (im->selected != NULL && strcmp(im->selected, mbox) == 0)
		return 0;
	free(im->selected);
	im->selected = NULL;
	if ((r = mailimap_examine(im->m, mbox)) != MAILIMAP_NO_ERROR)
		return fail(im, err, "EXAMINE", r);
	im->selected = xstrdup(mbox);
	return 0;
}

/* UID SEARCH HEADER X-Pop3bridge-Key KEY: the first UID found, or 0.
 * Servers match a substring; keys cannot hold one another (same-width
 * seconds, "." after the tag), so a hit is this key. libetpan hands the
 * result list over also when the search failed: ours to free. */
static int
search_key(struct imap *im, const char *key, uint32_t *uid, char **err)
{
	struct mailimap_search_key *sk;
	clist *res = NULL;
	int r;

	sk = mailimap_search_key_new_header(xstrdup(IMAP_KEY_HEADER), xstrdup(key));
	if (sk == NULL)
		fatalx("imap: out of memory");
	r = mailimap_uid_search(im->m, NULL, sk, &res);
	mailimap_search_key_free(sk);
	if (r != MAILIMAP_NO_ERROR) {
		if (res != NULL)
			mailimap_search_result_free(res);
		return fail(im, err, "UID SEARCH", r);
	}
	*uid = 0;
	if (res != NULL && clist_begin(res) != NULL)
		*uid = *(uint32_t *)clist_content(clist_begin(res));
	if (res != NULL)
		mailimap_search_result_free(res);
	return 0;
}

static int
im_find(void *ctx, const char *folder, const char *key, char **loc, char **err)
{
	struct imap *im = ctx;
	struct folder *f;
	uint32_t uid = 0;
	int r;

	if (check_key(key, err) == -1 || usable(im, err) == -1 ||
	    (f = folder_get(im, folder, false, err)) == NULL)
		return -1;
	if (!f->ready) {
		if ((r = mbox_exists(im, f->mbox, err)) != 1)
			return r;	/* no folder: not delivered */
		f->ready = true;
	}
	if (examine(im, f->mbox, err) == -1 || search_key(im, key, &uid, err) == -1)
		return -1;
	if (uid == 0)
		return 0;
	*loc = location(folder, im->m->imap_selection_info != NULL ?
	    im->m->imap_selection_info->sel_uidvalidity : 0, uid);
	return 1;
}

const struct deliver_backend imap_backend = {
	.name = "imap",
	.crlf = 1,
	.open = im_open,
	.tmp_create = im_tmp_create,
	.tmp_discard = im_tmp_discard,
	.tmp_cleanup = im_tmp_cleanup,
	.deliver = im_deliver,
	.find = im_find,
	.close = im_close,
};

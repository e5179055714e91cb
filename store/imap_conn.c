/* The IMAP store's session (store/imap_priv.h): libetpan connects, does
 * TLS and parses replies; the commands libetpan cannot send the way we
 * need (AUTHENTICATE, APPEND streamed from a file, LIST with selection
 * options) are written here by hand and their tagged replies read with
 * libetpan's parser. */
#include "store/imap_priv.h"

#include <sys/socket.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/deadline.h"
#include "lib/dlstream.h"
#include "lib/err.h"
#include "lib/linecap.h"
#include "lib/log.h"
#include "lib/net.h"
#include "lib/tls.h"
#include "lib/xmalloc.h"

/*
 * Errors: one line naming the server and the step; the server's own text
 * when it gave one (never anything we sent: a password cannot appear).
 */

char *
imap_server_text(const struct imap *im)
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

int
imap_fail(struct imap *im, char **err, const char *what, int r)
{
	char buf[DEADLINE_TEXT_MAX], *text;
	enum deadline_end end;

	/* A read or write cut by a deadline or a stop, whatever libetpan
	 * made of it (a stream error, an unparsable or unexpected reply):
	 * the session is in an unknown state, and it is worth another try. */
	if (im->m != NULL && im->m->imap_stream != NULL &&
	    (end = dlstream_end(im->m->imap_stream)) != DEADLINE_NONE) {
		im->broken = true;
		im->why = DELIVER_ETEMP;
		return err_at(err, im->where, "%s: %s", what, deadline_text(end,
		    end == DEADLINE_PASS ? deadline_pass_seconds() :
		    im->due_secs ? im->due_secs : im->timeout, buf, sizeof buf));
	}
	if (r == MAILIMAP_ERROR_STREAM || r == MAILIMAP_ERROR_CONNECTION_REFUSED ||
	    r == MAILIMAP_ERROR_PARSE || r == MAILIMAP_ERROR_FATAL) {
		im->broken = true;
		/* A lost connection is worth another try later; a reply we
		 * cannot parse will be the same next time. */
		im->why = r == MAILIMAP_ERROR_PARSE ? DELIVER_EIO : DELIVER_ETEMP;
		/* A reply the line bound or the grammar refused (store/imap_guard.h):
		 * it would be the same next time. */
		if ((text = (char *)linecap_refused(im->m != NULL ?
		    im->m->imap_stream : NULL)) != NULL) {
			im->why = DELIVER_EIO;
			return err_at(err, im->where, "%s: refused: %s", what, text);
		}
		return err_at(err, im->where, "%s: %s", what,
		    r == MAILIMAP_ERROR_PARSE ? "unparsable reply" :
		    r == MAILIMAP_ERROR_CONNECTION_REFUSED ? "connection refused" :
		    r == MAILIMAP_ERROR_FATAL ? "server closed the session" :
		    "connection lost or timed out");
	}
	text = imap_server_text(im);
	if (*text != '\0')
		err_at(err, im->where, "%s refused: %s", what, text);
	else
		err_at(err, im->where, "%s failed (libetpan error %d)", what, r);
	free(text);
	return -1;
}

int
imap_usable(struct imap *im, char **err)
{
	if (im->broken || im->m == NULL)
		return err_at(err, im->where, "session unusable after an earlier error");
	return 0;
}

/*
 * Capabilities.
 */

/* The number after "NAME=" in a capability atom, or 0. */
static uint64_t
cap_number(const char *cap, const char *name)
{
	size_t n = strlen(name);
	unsigned long long v;
	char *end;

	if (strncasecmp(cap, name, n) != 0 || cap[n] != '=' || cap[n + 1] < '0' ||
	    cap[n + 1] > '9')
		return 0;
	v = strtoull(cap + n + 1, &end, 10);
	return *end == '\0' ? (uint64_t)v : 0;
}

static void
cap_note(struct imap_caps *c, const struct mailimap_capability *cap)
{
	const char *s;

	if (cap->cap_type == MAILIMAP_CAPABILITY_AUTH_TYPE) {
		s = cap->cap_data.cap_auth_type;
		if (s == NULL)
			return;
		c->auth_plain |= strcasecmp(s, "PLAIN") == 0;
		c->auth_xoauth2 |= strcasecmp(s, "XOAUTH2") == 0;
		c->auth_oauthbearer |= strcasecmp(s, "OAUTHBEARER") == 0;
		return;
	}
	if ((s = cap->cap_data.cap_name) == NULL)
		return;
	c->starttls |= strcasecmp(s, "STARTTLS") == 0;
	c->logindisabled |= strcasecmp(s, "LOGINDISABLED") == 0;
	c->sasl_ir |= strcasecmp(s, "SASL-IR") == 0;
	c->uidplus |= strcasecmp(s, "UIDPLUS") == 0;
	c->namespace |= strcasecmp(s, "NAMESPACE") == 0;
	c->special_use |= strcasecmp(s, "SPECIAL-USE") == 0;
	c->list_extended |= strcasecmp(s, "LIST-EXTENDED") == 0;
	c->multiappend |= strcasecmp(s, "MULTIAPPEND") == 0;
	c->literal_plus |= strcasecmp(s, "LITERAL+") == 0;
	c->literal_minus |= strcasecmp(s, "LITERAL-") == 0;
	if (cap_number(s, "APPENDLIMIT") > 0)
		c->appendlimit = cap_number(s, "APPENDLIMIT");
}

/* libetpan's mailimap_capability() returns a copy of its cache and
 * dereferences it unchecked: a server answering OK without a CAPABILITY
 * line crashed it when nothing was cached (found by
 * tests/fuzz/fuzz_imap_store.c), and returned an older set (the
 * greeting's, LOGIN's) otherwise. The cache is emptied first: the answer
 * is what the server says now, or nothing. */
int
imap_read_caps(struct imap *im, char **err)
{
	struct mailimap_connection_info *ci = im->m->imap_connection_info;
	struct mailimap_capability_data *cd = NULL;
	clistiter *it;
	clist *none;
	int r;

	if (ci == NULL)
		return imap_fail(im, err, "CAPABILITY", MAILIMAP_ERROR_FATAL);
	if (ci->imap_capability != NULL)
		mailimap_capability_data_free(ci->imap_capability);
	if ((none = clist_new()) == NULL ||
	    (ci->imap_capability = mailimap_capability_data_new(none)) == NULL)
		fatalx("imap: out of memory");
	if ((r = mailimap_capability(im->m, &cd)) != MAILIMAP_NO_ERROR)
		return imap_fail(im, err, "CAPABILITY", r);
	memset(&im->caps, 0, sizeof im->caps);
	for (it = clist_begin(cd->cap_list); it != NULL; it = clist_next(it))
		cap_note(&im->caps, clist_content(it));
	mailimap_capability_data_free(cd);
	return 0;
}

/*
 * Connection: TCP, TLS (implicit or STARTTLS, never a fallback), verified
 * before any credential.
 */

static int
verify(struct imap *im, char **err)
{
	char *why = NULL;

	if (tls_verify(im->m->imap_stream, im->srv->host, im->srv->ca_file, &why) == 0)
		return 0;
	im->broken = true;
	im->why = DELIVER_EAUTH;
	*err = xasprintf("%s: %s", im->where, why);
	free(why);
	return -1;
}

static int
starttls(struct imap *im, char **err)
{
	int r;

	if (imap_read_caps(im, err) == -1)
		return -1;
	if (!im->caps.starttls) {
		im->broken = true;
		im->why = DELIVER_EAUTH;
		return err_at(err, im->where,
		    "server does not offer STARTTLS (tls = \"starttls\")");
	}
	/* libetpan refuses bytes injected after the reply (CVE-2020-15953). */
	r = mailimap_socket_starttls_with_callback(im->m, tls_sni_callback,
	    (void *)im->srv->host);
	if (r != MAILIMAP_NO_ERROR) {
		imap_fail(im, err, "STARTTLS", r);
		im->broken = true;
		return -1;
	}
	/* The TLS layer is a new low-level stream: bound its lines and guard
	 * it too (linecap under dlstream, as at the connection). */
	linecap_install(im->m->imap_stream, IMAP_LINE_MAX, imap_guard_line, &im->guard);
	dlstream_guard(im->m->imap_stream);
	mailstream_low_set_timeout(mailstream_get_low(im->m->imap_stream), im->timeout);
	return verify(im, err);
}

int
imap_connect(struct imap *im, char **err)
{
	const struct conf_server *s = im->srv;
	char *why = NULL;
	mailstream *st;
	int fd, r;

	if ((im->m = mailimap_new(0, NULL)) == NULL)
		fatalx("imap: out of memory");
	mailimap_set_timeout(im->m, im->timeout);
	/* Resolution and connect bounded by the timeout, the pass deadline
	 * and a stop (lib/net.c); libetpan's own connect resolves unbounded
	 * (doc/DESIGN.md, libetpan trap 9). */
	if (net_connect(s->host, s->port, im->timeout, &fd, &why) == -1) {
		im->broken = true;
		im->why = DELIVER_ETEMP;
		err_at(err, im->where, "%s", why);
		free(why);
		return -1;
	}
	/* SNI set and the handshake bounded by the timeout (lib/tls.c); a
	 * 64 KiB write buffer, so that literals go out in large writes. */
	if ((st = tls_stream_open(fd, s->tls == CONF_TLS_IMPLICIT, s->host, im->timeout,
	    IMAP_CHUNK)) == NULL) {
		im->broken = true;
		im->why = DELIVER_ETEMP;
		return err_at(err, im->where, "TLS handshake failed");
	}
	/* Every reply line bounded and checked before libetpan parses it
	 * (lib/linecap.h, store/imap_guard.h), and, on top of that, every
	 * read and write honours the pass's deadline, a stop request and the
	 * deadline of the command in flight (lib/dlstream.h): dlstream's
	 * slices reach the socket through linecap, which keeps its line
	 * across them; linecap_refused looks through dlstream. */
	im->guard = (struct imap_guard){ 0 };
	linecap_install(st, IMAP_LINE_MAX, imap_guard_line, &im->guard);
	dlstream_guard(st);
	mailstream_low_set_timeout(mailstream_get_low(st), im->timeout);
	r = mailimap_connect(im->m, st);
	imap_abortive_close(im, true);
	if (r != MAILIMAP_NO_ERROR_AUTHENTICATED && r != MAILIMAP_NO_ERROR_NON_AUTHENTICATED) {
		/* A failed greeting, a BYE greeting: the server may be back
		 * later. A greeting that is no IMAP at all will be the same
		 * next time (imap_fail: DELIVER_EIO). */
		imap_fail(im, err, "connect", r);
		im->broken = true;
		if (im->guard.bye || (r != MAILIMAP_ERROR_PARSE &&
		    linecap_refused(im->m->imap_stream) == NULL))
			im->why = DELIVER_ETEMP;
		return -1;
	}
	/* PREAUTH: the server chose the user (and, before STARTTLS, TLS could
	 * never be negotiated): we would deliver into a mailbox we did not
	 * log in to. */
	if (r == MAILIMAP_NO_ERROR_AUTHENTICATED) {
		im->broken = true;
		im->why = DELIVER_EAUTH;
		return err_at(err, im->where, "server greeted with PREAUTH: refused, the store "
		    "must log in as the configured user%s",
		    s->tls == CONF_TLS_STARTTLS ? " over TLS" : "");
	}
	if (s->tls == CONF_TLS_IMPLICIT && verify(im, err) == -1)
		return -1;
	if (s->tls == CONF_TLS_STARTTLS)
		return starttls(im, err);	/* reads the capabilities after TLS */
	return imap_read_caps(im, err);
}

/*
 * Closing.
 */

void
imap_abortive_close(struct imap *im, bool on)
{
	struct linger l = { .l_onoff = on, .l_linger = 0 };
	int fd;

	if (im->m == NULL || im->m->imap_stream == NULL ||
	    (fd = mailstream_low_get_fd(mailstream_get_low(im->m->imap_stream))) < 0)
		return;
	if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l) == -1)
		log_debug("%s: %s: SO_LINGER: %s", im->account, im->where, strerror(errno));
}

/*
 * Deadlines of the commands in flight.
 */

void
imap_deadline(struct imap *im, uint64_t bytes)
{
	struct deadline d;

	im->due_secs = deadline_allowance(im->timeout, bytes);
	deadline_in_ms(&d, (uint64_t)im->due_secs * 1000);
	dlstream_set_deadline(im->m->imap_stream, &d);
}

void
imap_deadline_clear(struct imap *im)
{
	im->due_secs = 0;
	if (im->m != NULL && im->m->imap_stream != NULL)
		dlstream_set_deadline(im->m->imap_stream, NULL);
}

/*
 * Commands we write ourselves.
 */

int
imap_send(struct imap *im, const char *what, const void *b, size_t n, char **err)
{
	if (n > 0 && mailstream_write(im->m->imap_stream, b, n) != (ssize_t)n)
		return imap_fail(im, err, what, MAILIMAP_ERROR_STREAM);
	return 0;
}

int
imap_flush(struct imap *im, const char *what, char **err)
{
	if (mailstream_flush(im->m->imap_stream) == -1)
		return imap_fail(im, err, what, MAILIMAP_ERROR_STREAM);
	return 0;
}

int
imap_send_command(struct imap *im, const char *what, const char *line, size_t n,
    char **err)
{
	int r;

	if ((r = mailimap_send_current_tag(im->m)) != MAILIMAP_NO_ERROR)
		return imap_fail(im, err, what, r);
	return imap_send(im, what, line, n, err);
}

/* The response code of a tagged reply: its name, upper case, bounded. */
static void
note_code(struct imap *im, const struct mailimap_resp_text *t)
{
	const struct mailimap_resp_text_code *c = t != NULL ? t->rsp_code : NULL;
	const char *name = NULL;
	size_t i;

	im->code[0] = '\0';
	if (c == NULL)
		return;
	if (c->rc_type == MAILIMAP_RESP_TEXT_CODE_TRY_CREATE)
		name = "TRYCREATE";
	else if (c->rc_type == MAILIMAP_RESP_TEXT_CODE_ALERT)
		name = "ALERT";
	else if (c->rc_type == MAILIMAP_RESP_TEXT_CODE_OTHER)
		/* libetpan moved the atom into the session's response info
		 * (the tagged reply is stored last, so it is this one's). */
		name = c->rc_data.rc_atom.atom_name != NULL ? c->rc_data.rc_atom.atom_name :
		    im->m->imap_response_info != NULL ? im->m->imap_response_info->rsp_atom :
		    NULL;
	if (name == NULL)
		return;
	for (i = 0; name[i] != '\0' && i + 1 < sizeof im->code; i++)
		im->code[i] = (name[i] >= 'a' && name[i] <= 'z') ? (char)(name[i] - 32) :
		    ((unsigned char)name[i] > 0x20 && name[i] != 0x7f) ? name[i] : '?';
	im->code[i] = '\0';
}

int
imap_tagged(struct imap *im, const char *what, bool first_read, char **err)
{
	struct mailimap_response *resp = NULL;
	struct mailimap_response_tagged *tagged;
	char *text;
	int r;

	im->state = -1;
	im->code[0] = '\0';
	if (!first_read && mailimap_read_line(im->m) == NULL)
		return imap_fail(im, err, what, MAILIMAP_ERROR_STREAM);
	r = mailimap_parse_response(im->m, &resp);
	if (r == MAILIMAP_ERROR_PROTOCOL) {
		/* BAD (libetpan frees that reply): we sent something wrong. */
		im->state = MAILIMAP_RESP_COND_STATE_BAD;
		return imap_fail(im, err, what, r);
	}
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail(im, err, what, r);
	if (resp->rsp_resp_done->rsp_type != MAILIMAP_RESP_DONE_TYPE_TAGGED) {
		mailimap_response_free(resp);
		return imap_fail(im, err, what, MAILIMAP_ERROR_FATAL);
	}
	tagged = resp->rsp_resp_done->rsp_data.rsp_tagged;
	im->state = tagged->rsp_cond_state->rsp_type;
	note_code(im, tagged->rsp_cond_state->rsp_text);
	mailimap_response_free(resp);
	if (im->state == MAILIMAP_RESP_COND_STATE_OK)
		return 0;
	text = imap_server_text(im);
	err_at(err, im->where, "%s refused%s%s%s: %s", what, *im->code ? " [" : "",
	    im->code, *im->code ? "]" : "", *text ? text : "(no text)");
	free(text);
	return -1;
}

int
imap_next(struct imap *im, const char *what, char **line, char **err)
{
	char *l;

	for (;;) {
		if ((l = mailimap_read_line(im->m)) == NULL)
			return imap_fail(im, err, what, MAILIMAP_ERROR_STREAM);
		if (l[0] == '+') {
			*line = l;
			return 1;
		}
		/* Untagged data (EXISTS of the selected mailbox, CAPABILITY
		 * after a login...) may come first; none of it matters here. */
		if (strncmp(l, "* ", 2) != 0 || strncasecmp(l, "* BYE", 5) == 0)
			break;
	}
	return imap_tagged(im, what, true, err) == 0 ? 0 : -1;
}

char *
imap_quoted(const char *s)
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

/* The upstream SMTP session. libetpan provides the streams, the greeting,
 * the capability parser and SASL; the transaction commands are ours (see
 * upstream.h for why). */
#include "bridge/upstream.h"

#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libetpan/libetpan.h>

#include "lib/addr.h"
#include "lib/base64.h"
#include "lib/err.h"
#include "lib/linecap.h"
#include "lib/log.h"
#include "lib/net.h"
#include "lib/sasl.h"
#include "lib/tls.h"
#include "lib/xmalloc.h"

/* libetpan exports it without declaring it: parses m->response (the text
 * of an EHLO reply, one line per "\n") into m->esmtp and m->auth. */
int mailesmtp_parse_ehlo(mailsmtp *m);

#define UPSTREAM_CHUNK	8192
#define UPSTREAM_LINE_MAX	2048	/* a reply line (RFC 5321: 512) */
#define UPSTREAM_LINES_MAX	200	/* lines of one reply */
#define UPSTREAM_CMD_MAX	512	/* a command line with its CRLF (RFC 5321 4.5.3.1.4) */
#define UPSTREAM_PIPE_MAX	64	/* commands written at once when pipelining */
#define UPSTREAM_SECRET_MAX	16384	/* XOAUTH2 tokens are long */
#define UPSTREAM_TIMEOUT_DEFAULT 60

struct upstream {
	mailsmtp *m;		/* owns the stream; only its connect, SASL and
				 * EHLO parser are used */
	char *where;		/* "host:port", prefix of every message */
	char helo[64];		/* our address literal */
	bool broken;		/* after UPSTREAM_ENET or UPSTREAM_EPROTO */
	bool open_tx;		/* a MAIL was accepted and its transaction not
				 * completed: RSET before the next one */
};

/* Sets *err to "host:port: message" and returns code. After UPSTREAM_ENET or
 * UPSTREAM_EPROTO the stream is in an unknown state: the session is broken. */
static int __attribute__((format(printf, 4, 5)))
failf(struct upstream *sm, int code, char **err, const char *fmt, ...)
{
	va_list ap;

	sm->broken = sm->broken || code == UPSTREAM_ENET || code == UPSTREAM_EPROTO;
	va_start(ap, fmt);
	err_vat(err, sm->where, fmt, ap);
	va_end(ap);
	return code;
}

/* failf() with a message made elsewhere, which it takes (and frees). */
static int
fail(struct upstream *sm, int code, char **err, char *msg)
{
	code = failf(sm, code, err, "%s", msg != NULL ? msg : "error");
	free(msg);
	return code;
}

/*
 * Replies and commands.
 */

/* Appends one reply line's text to r (lines joined by " ", control
 * characters dropped, truncated to fit). */
static void
reply_add(struct upstream_reply *r, const char *text)
{
	size_t o = strlen(r->text);

	if (o > 0 && o + 1 < sizeof r->text)
		r->text[o++] = ' ';
	for (; *text != '\0' && o + 1 < sizeof r->text; text++)
		if ((unsigned char)*text >= 0x20 && *text != 0x7f)
			r->text[o++] = *text;
	r->text[o] = '\0';
}

/* Reads one (multi-line) reply into r, and into libetpan's response
 * buffer too so that mailesmtp_parse_ehlo() can read an EHLO reply. */
static int
reply(struct upstream *sm, struct upstream_reply *r, char **err)
{
	mailsmtp *m = sm->m;
	char *line;
	int n, code;

	memset(r, 0, sizeof *r);
	mmap_string_assign(m->response_buffer, "");
	for (n = 0; n < UPSTREAM_LINES_MAX; n++) {
		line = mailstream_read_line_remove_eol(m->stream, m->line_buffer);
		if (line == NULL && linecap_refused(m->stream) != NULL)
			return failf(sm, UPSTREAM_EPROTO, err, "%s", linecap_refused(m->stream));
		if (line == NULL)
			return failf(sm, UPSTREAM_ENET, err, "connection lost or timed out");
		if (strlen(line) > UPSTREAM_LINE_MAX || strlen(line) < 3 ||
		    strspn(line, "0123456789") != 3 ||
		    (line[3] != '\0' && line[3] != ' ' && line[3] != '-'))
			return failf(sm, UPSTREAM_EPROTO, err, "malformed reply");
		code = atoi(line);
		if (r->code != 0 && code != r->code)
			return failf(sm, UPSTREAM_EPROTO, err, "reply codes differ across lines");
		r->code = code;
		reply_add(r, line[3] ? line + 4 : "");
		mmap_string_append(m->response_buffer, line[3] ? line + 4 : "");
		mmap_string_append_c(m->response_buffer, '\n');
		if (line[3] != '-') {
			m->response = m->response_buffer->str;
			m->response_code = code;
			return UPSTREAM_OK;
		}
	}
	return failf(sm, UPSTREAM_EPROTO, err, "reply longer than %d lines", UPSTREAM_LINES_MAX);
}

/* Sends one command line (never a secret) and reads its reply. */
static int __attribute__((format(printf, 4, 5)))
command(struct upstream *sm, struct upstream_reply *r, char **err, const char *fmt, ...)
{
	char line[ADDR_MAX + 128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof line - 2)
		return failf(sm, UPSTREAM_ECONFIG, err, "command too long");
	memcpy(line + n, "\r\n", 3);
	if (mailstream_write(sm->m->stream, line, (size_t)n + 2) == -1 ||
	    mailstream_flush(sm->m->stream) == -1)
		return failf(sm, UPSTREAM_ENET, err, "write failed");
	return reply(sm, r, err);
}

/*
 * Connecting.
 */

/* Our EHLO argument: the address literal of our end of the connection
 * (RFC 5321 4.1.3), which says nothing the server does not know already,
 * unlike gethostname() (doc/DESIGN.md, libetpan trap 11). */
static void
set_helo(struct upstream *sm, int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	char a[INET6_ADDRSTRLEN];

	snprintf(sm->helo, sizeof sm->helo, "[127.0.0.1]");
	if (getsockname(fd, (struct sockaddr *)&ss, &len) == -1)
		return;
	if (ss.ss_family == AF_INET && inet_ntop(AF_INET,
	    &((struct sockaddr_in *)&ss)->sin_addr, a, sizeof a) != NULL)
		snprintf(sm->helo, sizeof sm->helo, "[%s]", a);
	else if (ss.ss_family == AF_INET6 && inet_ntop(AF_INET6,
	    &((struct sockaddr_in6 *)&ss)->sin6_addr, a, sizeof a) != NULL)
		snprintf(sm->helo, sizeof sm->helo, "[IPv6:%s]", a);
}

static int
verify(struct upstream *sm, const struct conf_server *s, char **err)
{
	char *why = NULL;

	if (tls_verify(sm->m->stream, s->host, s->ca_file, &why) != 0)
		return fail(sm, UPSTREAM_ETLS, err, why);
	return UPSTREAM_OK;
}

/* Connects, wraps the socket (TLS at once for implicit TLS, verified),
 * and reads the greeting. */
static int
connect_stream(struct upstream *sm, const struct conf_server *s, unsigned timeout,
    char **err)
{
	struct upstream_reply r;
	char *why = NULL;
	int fd, rv;

	if (net_connect(s->host, s->port, timeout, &fd, &why) == -1)
		return fail(sm, UPSTREAM_ENET, err, why);
	/* Every write is a whole command group or body chunk, flushed on
	 * purpose: Nagle's algorithm would hold the last small segment (the
	 * end of DATA) until the server's delayed ACK, 40 ms per message. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
	set_helo(sm, fd);
	sm->m->stream = tls_stream_open(fd, s->tls == CONF_TLS_IMPLICIT, s->host,
	    timeout, UPSTREAM_CHUNK);
	if (sm->m->stream == NULL)
		return failf(sm, UPSTREAM_ENET, err, "TLS handshake failed");
	/* libetpan reads a reply line whole before reply() can look at it:
	 * bounded while it is read (doc/DESIGN.md, libetpan trap 9). */
	linecap_install(sm->m->stream, UPSTREAM_LINE_MAX + 2, NULL, NULL);
	if (s->tls == CONF_TLS_IMPLICIT && (rv = verify(sm, s, err)) != UPSTREAM_OK)
		return rv;
	if ((rv = reply(sm, &r, err)) != UPSTREAM_OK)
		return rv;
	if (r.code != 220)
		return failf(sm, UPSTREAM_ENET, err, "server refused the connection: %d %s",
		    r.code, r.text);
	return UPSTREAM_OK;
}

static int
ehlo(struct upstream *sm, char **err)
{
	struct upstream_reply r;
	int rv;

	if ((rv = command(sm, &r, err, "EHLO %s", sm->helo)) != UPSTREAM_OK)
		return rv;
	if (r.code != 250)
		return failf(sm, UPSTREAM_EPROTO, err, "EHLO refused: %d %s", r.code, r.text);
	mailesmtp_parse_ehlo(sm->m);
	return UPSTREAM_OK;
}

/* STARTTLS (RFC 3207), never falling back to plaintext (doc/DESIGN.md,
 * libetpan trap 8). */
static int
starttls(struct upstream *sm, const struct conf_server *s, unsigned timeout, char **err)
{
	mailstream *stream = sm->m->stream;
	struct upstream_reply r;
	int rv;

	if (!(sm->m->esmtp & MAILSMTP_ESMTP_STARTTLS))
		return failf(sm, UPSTREAM_ETLS, err, "server does not offer STARTTLS");
	if ((rv = command(sm, &r, err, "STARTTLS")) != UPSTREAM_OK)
		return rv;
	if (r.code != 220)
		return failf(sm, UPSTREAM_ETLS, err, "STARTTLS refused: %d %s", r.code, r.text);
	/* Bytes after the 220 came in plaintext: injected (CVE-2020-15953). */
	if (stream->read_buffer_len > 0)
		return failf(sm, UPSTREAM_ETLS, err, "unexpected data after the STARTTLS reply");
	if (tls_stream_starttls(stream, s->host, timeout) == -1)
		return failf(sm, UPSTREAM_ENET, err, "TLS handshake failed");
	/* The TLS layer replaced the bounded one. */
	linecap_install(stream, UPSTREAM_LINE_MAX + 2, NULL, NULL);
	if ((rv = verify(sm, s, err)) != UPSTREAM_OK)
		return rv;
	/* What was announced in plaintext may have been forged. */
	return ehlo(sm, err);
}

/*
 * Authentication.
 */

static int
check_config(struct upstream *sm, const struct conf_server *s, const char *secret,
    char **err)
{
	bool has_user = s->user != NULL && *s->user != '\0';

	if (s->host == NULL || !conf_safe_value(s->host, 255))
		return failf(sm, UPSTREAM_ECONFIG, err, "bad host name");
	if (has_user && !conf_safe_value(s->user, 255))
		return failf(sm, UPSTREAM_ECONFIG, err, "user name holds CR, LF or is too long");
	if (secret != NULL && !conf_safe_value(secret, UPSTREAM_SECRET_MAX))
		return failf(sm, UPSTREAM_ECONFIG, err, "password holds CR, LF or is too long");
	/* With a user, AUTH sends a secret (an empty one too). */
	if (conf_plaintext_refused(s, has_user))
		return failf(sm, UPSTREAM_ECONFIG, err, "%s", CONF_PLAINTEXT_REFUSED);
	return UPSTREAM_OK;
}

static const char *
choose_mech(const struct upstream *sm, const struct conf_server *s)
{
	switch (s->auth) {
	case CONF_AUTH_PLAIN:
		return "PLAIN";
	case CONF_AUTH_LOGIN:
		return "LOGIN";
	case CONF_AUTH_XOAUTH2:
		return "XOAUTH2";
	case CONF_AUTH_OAUTHBEARER:
		return "OAUTHBEARER";
	default:
		break;
	}
	if (sm->m->auth & MAILSMTP_AUTH_PLAIN)
		return "PLAIN";
	if (sm->m->auth & MAILSMTP_AUTH_LOGIN)
		return "LOGIN";
	return NULL;
}

/* libetpan's reply text, on one line. */
static char *
last_text(const struct upstream *sm)
{
	struct upstream_reply r = { 0 };

	reply_add(&r, sm->m->response != NULL ? sm->m->response : "");
	for (char *p = r.text; *p != '\0'; p++)
		if (*p == '\n')
			*p = ' ';
	return xasprintf("%d %s", sm->m->response_code, r.text);
}

/* PLAIN and LOGIN through libetpan's Cyrus SASL. */
static int
auth_password(struct upstream *sm, const struct conf_server *s, const char *mech,
    const char *secret, char **err)
{
	mailstream *stream = sm->m->stream;
	char *text;
	int r;

	r = mailesmtp_auth_sasl(sm->m, mech, s->host, NULL, NULL, s->user, s->user, secret,
	    NULL);
	/* libetpan keeps the bytes it sent in the stream's write buffer. */
	if (stream != NULL && stream->write_buffer != NULL)
		explicit_bzero(stream->write_buffer, stream->buffer_max_size);
	if (r == MAILSMTP_NO_ERROR)
		return UPSTREAM_OK;
	if (r == MAILSMTP_ERROR_STREAM)
		return failf(sm, UPSTREAM_ENET, err, "connection lost during AUTH");
	if (sm->m->response != NULL && sasl_repeats_secret(sm->m->response, s->user, secret))
		return failf(sm, UPSTREAM_EAUTH, err, "AUTH %s refused (reply withheld: it"
		    " repeats the credential)", mech);
	text = last_text(sm);
	r = failf(sm, UPSTREAM_EAUTH, err, "AUTH %s refused: %s", mech, text);
	free(text);
	return r;
}

/* Sends one line holding a credential (CRLF added), then wipes the copy
 * libetpan keeps in the stream's write buffer (doc/DESIGN.md, libetpan
 * trap 6). */
static int
send_secret(struct upstream *sm, const char *line, char **err)
{
	mailstream *s = sm->m->stream;
	int r = 0;

	if (mailstream_write(s, line, strlen(line)) == -1 ||
	    mailstream_write(s, "\r\n", 2) == -1 || mailstream_flush(s) == -1)
		r = -1;
	if (s->write_buffer != NULL)
		explicit_bzero(s->write_buffer, s->buffer_max_size);
	return r == 0 ? UPSTREAM_OK : failf(sm, UPSTREAM_ENET, err, "write failed during AUTH");
}

/* A refusal of the bearer-token AUTH: its reply, unless it repeats the
 * credential (the token in clear or base64, or the start of the response
 * we sent: an echo of our AUTH line, maybe cut short), and what the
 * error challenge said. */
static int
token_refused(struct upstream *sm, const struct conf_server *s, const char *mech,
    const struct upstream_reply *r, const char *secret, const char *b64,
    const char *status, char **err)
{
	char head[17];
	bool echo;

	snprintf(head, sizeof head, "%s", b64);
	echo = strlen(head) == 16 && strstr(r->text, head) != NULL;
	if (echo || sasl_repeats_secret(r->text, s->user, secret))
		return failf(sm, UPSTREAM_EAUTH, err, "AUTH %s refused (reply"
		    " withheld: it repeats the credential)", mech);
	/* The status as the POP3 client words it (bridge/pop3.c). */
	return failf(sm, UPSTREAM_EAUTH, err, "AUTH %s refused: %d %s%s%s%s",
	    mech, r->code, r->text, *status ? " (token refused: status \"" : "", status,
	    *status ? "\")" : "");
}

/* The client response of XOAUTH2 or OAUTHBEARER, base64-encoded. */
static char *
token_response64(const struct conf_server *s, bool bearer, const char *secret)
{
	if (bearer)
		return sasl_oauthbearer64(s->user, s->host, s->port, secret);
	return sasl_response64(SASL_XOAUTH2, s->user, secret);
}

/* Sends the response b64: on the AUTH line when that fits in SMTP's 512
 * octets (RFC 4954 section 4), else in the two-step form (AUTH MECH, the
 * server's empty 334, the response), which Microsoft 365's long tokens
 * need. *r receives a refusal of the bare AUTH (r->code != 0). */
static int
token_send(struct upstream *sm, const char *mech, const char *b64,
    struct upstream_reply *r, char **err)
{
	char *line;
	int rv;

	memset(r, 0, sizeof *r);
	if (strlen("AUTH ") + strlen(mech) + 1 + strlen(b64) + 2 <= UPSTREAM_CMD_MAX) {
		line = xasprintf("AUTH %s %s", mech, b64);
		rv = send_secret(sm, line, err);
		explicit_bzero(line, strlen(line));
		free(line);
		return rv;
	}
	if ((rv = command(sm, r, err, "AUTH %s", mech)) != UPSTREAM_OK)
		return rv;
	if (r->code != 334)
		return UPSTREAM_OK;
	memset(r, 0, sizeof *r);
	return send_secret(sm, b64, err);
}

/* XOAUTH2 and OAUTHBEARER, spoken here over the session like every other
 * command: libetpan has no OAUTHBEARER, its XOAUTH2 sends one form only,
 * and its error path hides the reply. A refused token gets an error
 * challenge (334 base64(JSON)) first: the client must answer it before
 * the final 535 comes, with a dummy ^A ("AQ==", RFC 7628 3.2.3) for
 * OAUTHBEARER and an empty line for XOAUTH2 (as Gmail documents it). */
static int
auth_token(struct upstream *sm, const struct conf_server *s, const char *mech,
    const char *secret, char **err)
{
	bool bearer = strcmp(mech, "OAUTHBEARER") == 0;
	char *b64 = token_response64(s, bearer, secret), *status = NULL;
	struct upstream_reply r;
	int rv;

	rv = token_send(sm, mech, b64, &r, err);
	if (rv == UPSTREAM_OK && r.code == 0)
		rv = reply(sm, &r, err);
	if (rv == UPSTREAM_OK && r.code == 334) {
		status = sasl_oauth_status(r.text);
		rv = command(sm, &r, err, "%s",
		    sasl_error_answer(bearer ? SASL_OAUTHBEARER : SASL_XOAUTH2));
	}
	if (rv == UPSTREAM_OK && r.code != 235)
		rv = token_refused(sm, s, mech, &r, secret, b64, status ? status : "", err);
	explicit_bzero(b64, strlen(b64));
	free(b64);
	free(status);
	return rv;
}

static int
authenticate(struct upstream *sm, const struct conf_server *s, const char *secret,
    char **err)
{
	const char *mech;

	if (s->user == NULL || *s->user == '\0')
		return UPSTREAM_OK;
	if ((mech = choose_mech(sm, s)) == NULL)
		return failf(sm, UPSTREAM_EAUTH, err, "server offers no AUTH PLAIN or LOGIN");
	if (secret == NULL)
		secret = "";
	if (s->auth == CONF_AUTH_XOAUTH2 || s->auth == CONF_AUTH_OAUTHBEARER)
		return auth_token(sm, s, mech, secret, err);
	return auth_password(sm, s, mech, secret, err);
}

int
upstream_open(struct upstream **out, const struct conf_server *s, const char *secret,
    char **err)
{
	struct upstream *sm = xcalloc(1, sizeof *sm);
	unsigned timeout = s->timeout ? s->timeout : UPSTREAM_TIMEOUT_DEFAULT;
	int rv;

	*out = NULL;
	sm->where = net_where(s->host, s->port);
	if ((sm->m = mailsmtp_new(0, NULL)) == NULL)
		fatalx("upstream: out of memory");
	mailsmtp_set_timeout(sm->m, timeout);
	if ((rv = check_config(sm, s, secret, err)) != UPSTREAM_OK ||
	    (rv = connect_stream(sm, s, timeout, err)) != UPSTREAM_OK ||
	    (rv = ehlo(sm, err)) != UPSTREAM_OK ||
	    (s->tls == CONF_TLS_STARTTLS && (rv = starttls(sm, s, timeout, err)) != UPSTREAM_OK) ||
	    (rv = authenticate(sm, s, secret, err)) != UPSTREAM_OK) {
		sm->broken = true;
		upstream_close(sm);
		return rv;
	}
	*out = sm;
	return UPSTREAM_OK;
}

bool
upstream_has_8bitmime(const struct upstream *sm)
{
	return (sm->m->esmtp & MAILSMTP_ESMTP_8BITMIME) != 0;
}

bool
upstream_usable(const struct upstream *sm)
{
	return !sm->broken;
}

/*
 * The transaction.
 */

/* Writes buf[0..n) dot-stuffed; *bol says whether a line starts at buf. */
static int
write_stuffed(mailstream *s, const char *buf, size_t n, bool *bol)
{
	size_t i, start = 0;

	for (i = 0; i < n; i++) {
		if (*bol && buf[i] == '.') {
			/* Send what came before, then the extra dot. */
			if (mailstream_write(s, buf + start, i - start) == -1 ||
			    mailstream_write(s, ".", 1) == -1)
				return -1;
			start = i;
		}
		*bol = buf[i] == '\n';
	}
	return mailstream_write(s, buf + start, n - start) == -1 ? -1 : 0;
}

/* Streams fd as the message body; the end marker needs the body to end
 * with CRLF, added only when it does not (doc/DESIGN.md, libetpan trap 11). */
static int
send_body(struct upstream *sm, int fd, char **err)
{
	mailstream *s = sm->m->stream;
	char buf[65536], last[2] = { '\r', '\n' };
	bool bol = true;
	ssize_t n;

	if (lseek(fd, 0, SEEK_SET) == -1)
		return failf(sm, UPSTREAM_ELOCAL, err, "message file: %s", strerror(errno));
	while ((n = read(fd, buf, sizeof buf)) > 0) {
		if (write_stuffed(s, buf, (size_t)n, &bol) == -1)
			return failf(sm, UPSTREAM_ENET, err, "write failed during DATA");
		if (n >= 2)
			memcpy(last, buf + n - 2, 2);
		else {
			last[0] = last[1];
			last[1] = buf[0];
		}
	}
	if (n == -1) {
		/* The server is waiting for the body: the session is lost. */
		sm->broken = true;
		return failf(sm, UPSTREAM_ELOCAL, err, "message file: %s", strerror(errno));
	}
	if ((memcmp(last, "\r\n", 2) != 0 && mailstream_write(s, "\r\n", 2) == -1) ||
	    mailstream_write(s, ".\r\n", 3) == -1 || mailstream_flush(s) == -1)
		return failf(sm, UPSTREAM_ENET, err, "write failed during DATA");
	return UPSTREAM_OK;
}

/* One read of the file at fd: whether it has only CRLF line endings (no
 * bare CR, no bare LF: 1, else 0; -1 on a read error) and whether it has
 * a byte >= 0x80 (*eightbit). */
static int
scan_file(int fd, bool *eightbit)
{
	unsigned char buf[65536];
	bool cr = false;
	int clean = 1;
	ssize_t n, i;

	*eightbit = false;
	if (lseek(fd, 0, SEEK_SET) == -1)
		return -1;
	while ((n = read(fd, buf, sizeof buf)) > 0)
		for (i = 0; i < n; i++) {
			if (cr != (buf[i] == '\n'))
				clean = 0;	/* CR without LF, or LF without CR */
			cr = buf[i] == '\r';
			*eightbit = *eightbit || (buf[i] & 0x80);
		}
	return n == -1 ? -1 : clean && !cr;
}

/* The command lines of t's envelope, in order: RSET (when the last
 * transaction was left open), MAIL, one RCPT per recipient, DATA. */
static char **
envelope(struct upstream *sm, const struct upstream_tx *t, size_t *n)
{
	char **v = xcalloc(t->n_rcpts + 3, sizeof *v), size_param[32] = "";
	size_t k = 0;

	if ((sm->m->esmtp & MAILSMTP_ESMTP_SIZE) && t->size > 0)
		snprintf(size_param, sizeof size_param, " SIZE=%llu",
		    (unsigned long long)t->size);
	if (sm->open_tx)
		v[k++] = xstrdup("RSET");
	v[k++] = xasprintf("MAIL FROM:<%s>%s%s", t->from, size_param,
	    t->eightbit && upstream_has_8bitmime(sm) ? " BODY=8BITMIME" : "");
	for (size_t i = 0; i < t->n_rcpts; i++)
		v[k++] = xasprintf("RCPT TO:<%s>", t->rcpts[i]);
	v[k++] = xstrdup("DATA");
	*n = k;
	return v;
}

/* Where the reply to command i of the envelope goes. */
static struct upstream_reply *
slot(struct upstream_tx *t, bool rset, size_t i, struct upstream_reply *scratch)
{
	if (rset && i-- == 0)
		return scratch;
	if (i == 0)
		return &t->mail;
	return i <= t->n_rcpts ? &t->rcpt[i - 1] : &t->data;
}

/* Sends the envelope's commands and reads their replies: in groups of
 * UPSTREAM_PIPE_MAX written at once when the server offers PIPELINING
 * (RFC 2920; bounded, so that neither side's buffers fill up while the
 * other waits), else one by one, stopping where the rest is pointless (a
 * refused MAIL, no accepted recipient). */
static int
send_envelope(struct upstream *sm, struct upstream_tx *t, char **err)
{
	bool pipe = (sm->m->esmtp & MAILSMTP_ESMTP_PIPELINING) != 0, rset = sm->open_tx;
	size_t n, i, j, end, n_ok = 0;
	char **cmd = envelope(sm, t, &n);
	struct upstream_reply scratch, *r;
	int rv = UPSTREAM_OK;

	for (i = 0; i < n && rv == UPSTREAM_OK; i = end) {
		end = pipe ? (n - i > UPSTREAM_PIPE_MAX ? i + UPSTREAM_PIPE_MAX : n) : i + 1;
		for (j = i; j < end && rv == UPSTREAM_OK; j++)
			if (mailstream_write(sm->m->stream, cmd[j], strlen(cmd[j])) == -1 ||
			    mailstream_write(sm->m->stream, "\r\n", 2) == -1)
				rv = failf(sm, UPSTREAM_ENET, err, "write failed");
		if (rv == UPSTREAM_OK && mailstream_flush(sm->m->stream) == -1)
			rv = failf(sm, UPSTREAM_ENET, err, "write failed");
		for (j = i; j < end && rv == UPSTREAM_OK; j++) {
			r = slot(t, rset, j, &scratch);
			if ((rv = reply(sm, r, err)) != UPSTREAM_OK)
				break;
			if (r == &scratch && r->code != 250)
				rv = failf(sm, UPSTREAM_EPROTO, err, "RSET refused: %d %s",
				    r->code, r->text);
			if (r == &scratch)
				sm->open_tx = false;
			else if (r == &t->mail)
				sm->open_tx = r->code / 100 == 2;
			else if (r != &t->data && r->code / 100 == 2)
				n_ok++;
		}
		/* One by one: no RCPT after a refused MAIL, no DATA without a
		 * recipient (then the next message starts with RSET). */
		if (!pipe && rv == UPSTREAM_OK && ((i == (rset ? 1u : 0u) && !sm->open_tx) ||
		    (end == n - 1 && n_ok == 0)))
			break;
	}
	for (i = 0; i < n; i++)
		free(cmd[i]);
	free(cmd);
	return rv;
}

/* DATA answered: the body when it is wanted, else what RFC 2920 asks of a
 * client whose DATA a server accepted although nothing is to be sent (a
 * refused MAIL or no recipient): a lone ".", whose reply delivers
 * nothing. */
static int
send_data(struct upstream *sm, struct upstream_tx *t, size_t n_ok, char **err)
{
	struct upstream_reply r;
	int rv;

	if (t->data.code != 354) {
		/* Anything but a refusal would let a hostile server have the
		 * recipients marked delivered without the message. */
		if (t->data.code / 100 == 4 || t->data.code / 100 == 5)
			return UPSTREAM_OK;
		return failf(sm, UPSTREAM_EPROTO, err, "unexpected reply to DATA: %d %s",
		    t->data.code, t->data.text);
	}
	if (t->mail.code / 100 != 2 || n_ok == 0) {
		if (mailstream_write(sm->m->stream, ".\r\n", 3) == -1 ||
		    mailstream_flush(sm->m->stream) == -1)
			return failf(sm, UPSTREAM_ENET, err, "write failed");
		memset(&t->data, 0, sizeof t->data);
		rv = reply(sm, &r, err);
		sm->open_tx = false;
		return rv;
	}
	if ((rv = send_body(sm, t->fd, err)) != UPSTREAM_OK ||
	    (rv = reply(sm, &t->data, err)) != UPSTREAM_OK)
		return rv;
	sm->open_tx = false;
	t->delivered = t->data.code / 100 == 2;
	return UPSTREAM_OK;
}

int
upstream_send(struct upstream *sm, struct upstream_tx *t, char **err)
{
	size_t n_ok = 0;
	int rv;

	memset(&t->mail, 0, sizeof t->mail);
	memset(&t->data, 0, sizeof t->data);
	t->delivered = false;
	t->rcpt = xcalloc(t->n_rcpts ? t->n_rcpts : 1, sizeof *t->rcpt);
	if (*t->from != '\0' && !addr_ok(t->from))
		return failf(sm, UPSTREAM_ECONFIG, err, "unusable sender address");
	for (size_t i = 0; i < t->n_rcpts; i++)
		if (!addr_ok(t->rcpts[i]))
			return failf(sm, UPSTREAM_ECONFIG, err, "unusable recipient address");
	/* Checked before anything is sent: a bare CR or LF could smuggle a
	 * second message past the upstream (the spool should never hold one). */
	if ((rv = scan_file(t->fd, &t->eightbit)) != 1)
		return failf(sm, UPSTREAM_ELOCAL, err, "message file: %s", rv == 0 ?
		    "bare CR or LF (not sent)" : strerror(errno));
	if ((rv = send_envelope(sm, t, err)) != UPSTREAM_OK)
		return rv;
	for (size_t i = 0; i < t->n_rcpts; i++)
		n_ok += t->rcpt[i].code / 100 == 2;
	if (t->data.code == 0)
		return UPSTREAM_OK;	/* stopped before DATA (one by one) */
	return send_data(sm, t, n_ok, err);
}

void
upstream_tx_clear(struct upstream_tx *t)
{
	free(t->rcpt);
	t->rcpt = NULL;
}

void
upstream_close(struct upstream *sm)
{
	struct upstream_reply r;

	if (sm == NULL)
		return;
	if (sm->m->stream != NULL) {
		if (!sm->broken)
			command(sm, &r, NULL, "QUIT");
		mailstream_close(sm->m->stream);
		sm->m->stream = NULL;
	}
	/* With no stream, mailsmtp_free() sends nothing. */
	mailsmtp_free(sm->m);
	free(sm->where);
	free(sm);
}

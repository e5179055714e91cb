/* The POP3 session: libetpan provides the socket and TLS streams, we speak
 * the protocol over them through the bounded reader in pop3_reader.c
 * (doc/DESIGN.md, libetpan traps 2-7 and 9 explain why libetpan's commands
 * are not used: crashes on LIST, whole-message buffering, broken APOP,
 * secrets in its loggers, no line caps, QUIT reported as success on -ERR). */
#include "bridge/pop3.h"

#include <sys/socket.h>
#include <netinet/in.h>

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <libetpan/libetpan.h>

#include "bridge/pop3_listing.h"
#include "bridge/pop3_parse.h"
#include "bridge/pop3_reader.h"
#include "bridge/pop3_sink.h"
#include "lib/dlstream.h"
#include "lib/err.h"
#include "lib/hex.h"
#include "lib/log.h"
#include "lib/net.h"
#include "lib/sasl.h"
#include "lib/tls.h"
#include "lib/xmalloc.h"

#define POP3_CMD_MAX	512	/* our own command lines, never a secret */
/* User name, password: bounded before they reach a command line
 * (doc/DESIGN.md, libetpan trap 7). */
#define POP3_NAME_MAX	255
#define POP3_TOKEN_MAX	16384	/* XOAUTH2 bearer tokens are often > 1 KiB */
#define POP3_CAPA_MAX	1000	/* lines in a CAPA response */
#define POP3_RFC5034	255	/* longest AUTH line carrying an initial response */
/* Commands per pipelined write: a few KiB always fit in the socket buffers,
 * so our write cannot block while the server blocks writing replies. */
#define POP3_PIPE_MAX	256
#define POP3_TIMEOUT_DEFAULT 60

struct pop3 {
	mailpop3 *m;		/* owns the stream (m->pop3_stream) and the
				 * APOP timestamp; its commands are never used */
	struct pop3_reader rd;
	struct pop3_caps caps;
	char *where;		/* "host:port", prefix of every message */
	unsigned timeout;
	bool broken;		/* after POP3_ENET or POP3_EPROTO */
	unsigned long *queue;	/* the RETR batch announced by pop3_retr_pipeline */
	uint64_t *queue_size;	/* their LIST sizes (the deadline of each reply) */
	size_t nqueue;
	size_t nsent;		/* queue[0..nsent) are sent */
	size_t qnext;		/* queue[0..qnext) are read */
	size_t ndeleted;	/* DELEs accepted: LIST may now have gaps */
	char *refusal;		/* the last login refusal, for the message */
	enum pop3_busy busy;	/* its "not now" response code */
	char *uidl_refused;	/* the -ERR text of the last UIDL, NULL if none */
	unsigned long *retrieved;	/* RETR/TOP answered +OK (pop3_retrieved) */
	size_t nretrieved, retrieved_cap;
};

enum auth_kind { AUTH_USER, AUTH_APOP, AUTH_PLAIN, AUTH_XOAUTH2, AUTH_OAUTHBEARER };

/* Sets *err to "host:port: message" and returns code. After POP3_ENET or
 * POP3_EPROTO the stream is in an unknown state: the session is broken. */
static int __attribute__((format(printf, 4, 5)))
failf(struct pop3 *p, int code, char **err, const char *fmt, ...)
{
	va_list ap;

	p->broken = p->broken || code == POP3_ENET || code == POP3_EPROTO ||
	    code == POP3_EDEADLINE || code == POP3_ESTOP;
	va_start(ap, fmt);
	err_vat(err, p->where, fmt, ap);
	va_end(ap);
	return code;
}

/* failf() with a message made elsewhere, which it takes (and frees). */
static int
fail(struct pop3 *p, int code, char **err, char *msg)
{
	code = failf(p, code, err, "%s", msg != NULL ? msg : "error");
	free(msg);
	return code;
}

/* A -ERR (or other refusal) with the server's text, cleaned for a log. */
static int
server_err(struct pop3 *p, int code, char **err, const char *what, const char *text)
{
	char *clean = pop3_parse_clean(text);
	int rv;

	rv = failf(p, code, err, "%s: -ERR %s", what, clean);
	free(clean);
	return rv;
}

/* The reader's byte source. mailstream_read() blocks for more when asked
 * for more than it buffers, and loops when asked for more than its buffer
 * size: ask for exactly what one low-level read can deliver. The low-level
 * timeout is the time left before the reader's next deadline (whole
 * seconds, >= 1); the stream is guarded (lib/dlstream.h), so a stop ends
 * the wait within a second. */
static ssize_t
stream_src(void *ctx, void *buf, size_t cap, int ms)
{
	mailstream *s = ctx;
	size_t max;

	if (s->read_buffer_len > 0)
		max = s->read_buffer_len;
	else {
		max = s->buffer_max_size;
		mailstream_low_set_timeout(mailstream_get_low(s),
		    ms < 0 ? 0 : (time_t)(ms + 999) / 1000);
	}
	return mailstream_read(s, buf, cap < max ? cap : max);
}

static int
send_raw(struct pop3 *p, const void *buf, size_t len, char **err)
{
	mailstream *s = p->m->pop3_stream;

	mailstream_low_set_timeout(mailstream_get_low(s), p->timeout);
	if (mailstream_write(s, buf, len) != (ssize_t)len || mailstream_flush(s) != 0)
		return failf(p, POP3_ENET, err, "connection lost while sending");
	return POP3_OK;
}

/* Sends one command line; never with a secret (see send_secret). */
static int __attribute__((format(printf, 3, 4)))
send_cmd(struct pop3 *p, char **err, const char *fmt, ...)
{
	char line[POP3_CMD_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof line - 2)
		fatalx("pop3: command line too long");
	memcpy(line + n, "\r\n", 2);
	return send_raw(p, line, (size_t)n + 2, err);
}

/* Sends prefix, secret and CRLF, then wipes every copy we control: ours
 * and the stream's write buffer (libetpan keeps flushed bytes there). */
static int
send_secret(struct pop3 *p, const char *prefix, const char *secret, char **err)
{
	size_t pl = strlen(prefix), sl = strlen(secret), len = pl + sl + 2;
	mailstream *s = p->m->pop3_stream;
	char *line = xmalloc(len);
	int rv;

	memcpy(line, prefix, pl);
	memcpy(line + pl, secret, sl);
	memcpy(line + pl + sl, "\r\n", 2);
	rv = send_raw(p, line, len, err);
	explicit_bzero(line, len);
	free(line);
	explicit_bzero(s->write_buffer, s->buffer_max_size);
	return rv;
}

/* Reads a status line; a "+" continuation is only valid inside AUTH. */
static int
reply(struct pop3 *p, bool *ok, char *text, size_t cap, char **err)
{
	enum pop3_status st;
	char *msg = NULL;
	int rv;

	*ok = false;
	if ((rv = pop3_reader_status(&p->rd, &st, text, cap, &msg)) != POP3_OK)
		return fail(p, rv, err, msg);
	if (st == POP3_ST_CONT)
		return failf(p, POP3_EPROTO, err, "unexpected \"+\" continuation reply");
	*ok = st == POP3_ST_OK;
	return POP3_OK;
}

/* Notes that the server sent message num (RETR or TOP +OK). */
static void
note_retrieved(struct pop3 *p, unsigned long num)
{
	if (p->nretrieved == p->retrieved_cap) {
		p->retrieved_cap = p->retrieved_cap ? 2 * p->retrieved_cap : 64;
		p->retrieved = xreallocarray(p->retrieved, p->retrieved_cap,
		    sizeof *p->retrieved);
	}
	p->retrieved[p->nretrieved++] = num;
}

/* A body sink that drops everything (abandoned pipelined RETRs). */
static int
discard(void *ctx, const unsigned char *b, size_t n, bool eol, char **err)
{
	(void)ctx, (void)b, (void)n, (void)eol, (void)err;
	return POP3_OK;
}

static void
queue_clear(struct pop3 *p)
{
	free(p->queue);
	free(p->queue_size);
	p->queue = NULL;
	p->queue_size = NULL;
	p->nqueue = p->nsent = p->qnext = 0;
}

/* Makes the session ready for a new command: refuses a broken one, and
 * reads away the replies to pipelined RETRs the caller did not read. */
static int
ready(struct pop3 *p, char **err)
{
	char text[POP3_LINE_MAX + 1], *msg = NULL;
	bool ok;
	int rv;

	if (p->broken)
		return failf(p, POP3_ENET, err, "session unusable after an earlier error");
	for (; p->qnext < p->nsent; p->qnext++) {
		pop3_reader_expect(&p->rd, p->queue_size[p->qnext]);
		if ((rv = reply(p, &ok, text, sizeof text, err)) != POP3_OK)
			return rv;
		if (ok)
			note_retrieved(p, p->queue[p->qnext]);
		if (ok && (rv = pop3_reader_body(&p->rd, discard, NULL, &msg)) != POP3_OK)
			return fail(p, rv, err, msg);
	}
	queue_clear(p);
	return POP3_OK;
}

/* Resolves host and connects within the timeout (lib/net.c). */
static int
tcp_connect(struct pop3 *p, const struct conf_server *s, int *fdp, char **err)
{
	char *why = NULL;

	if (net_connect(s->host, s->port, p->timeout, fdp, &why) == -1)
		return fail(p, POP3_ENET, err, why);
	return POP3_OK;
}

/* Wraps the connected socket in a libetpan stream, plain or TLS (with SNI;
 * the handshake is bounded by the timeout), with a POP3_CHUNK buffer. */
static int
open_stream(struct pop3 *p, const struct conf_server *s, int fd, char **err)
{
	mailstream *stream;

	stream = tls_stream_open(fd, s->tls == CONF_TLS_IMPLICIT, s->host, p->timeout,
	    POP3_CHUNK);
	if (stream == NULL)
		return failf(p, POP3_ENET, err, "TLS handshake failed");
	p->m->pop3_stream = stream;
	dlstream_guard(stream);
	pop3_reader_init(&p->rd, stream_src, stream, p->timeout);
	return POP3_OK;
}

/* Before any credential, after every handshake. */
static int
verify(struct pop3 *p, const struct conf_server *s, char **err)
{
	char *why = NULL;

	if (tls_verify(p->m->pop3_stream, s->host, s->ca_file, &why) != 0)
		return fail(p, POP3_ETLS, err, why);
	return POP3_OK;
}

/* The RFC 1939 APOP timestamp "<...>" of a greeting, allocated, or NULL. */
static char *
apop_timestamp(const char *text)
{
	const char *b, *e, *q;

	if ((b = strchr(text, '<')) == NULL || (e = strchr(b, '>')) == NULL || e == b + 1)
		return NULL;
	for (q = b + 1; q < e; q++)
		if (*q < 0x21 || *q > 0x7e || *q == '<')
			return NULL;
	return xstrndup(b, (size_t)(e - b + 1));
}

static int
greeting(struct pop3 *p, char **err)
{
	char text[POP3_LINE_MAX + 1];
	bool ok;
	int rv;

	if ((rv = reply(p, &ok, text, sizeof text, err)) != POP3_OK)
		return rv;
	if (!ok)
		return server_err(p, POP3_ENET, err, "server refused the connection", text);
	/* malloc'd: libetpan frees it if it ever gets the chance. */
	p->m->pop3_timestamp = apop_timestamp(text);
	return POP3_OK;
}

/* CAPA (RFC 2449). A server without it (-ERR) keeps capa = false; on -ERR
 * after login the capabilities read before login are kept. */
static int
read_capa(struct pop3 *p, char **err)
{
	char line[POP3_LINE_MAX + 1], *msg = NULL;
	struct pop3_caps c;
	bool ok, end;
	int rv, n;

	if ((rv = send_cmd(p, err, "CAPA")) != POP3_OK)
		return rv;
	pop3_reader_expect(&p->rd, 0);
	if ((rv = reply(p, &ok, line, sizeof line, err)) != POP3_OK)
		return rv;
	if (!ok)
		return POP3_OK;
	pop3_parse_caps_init(&c);
	c.capa = true;
	for (n = 0;; n++) {
		if ((rv = pop3_reader_mline(&p->rd, line, sizeof line, &end, &msg)) != POP3_OK)
			return fail(p, rv, err, msg);
		if (end)
			break;
		if (n == POP3_CAPA_MAX)
			return failf(p, POP3_EPROTO, err, "CAPA reply longer than %d lines",
			    POP3_CAPA_MAX);
		pop3_parse_caps_line(&c, line);
	}
	p->caps = c;
	return POP3_OK;
}

/* STLS (RFC 2595), never falling back to plaintext. */
static int
starttls(struct pop3 *p, const struct conf_server *s, char **err)
{
	mailstream *stream = p->m->pop3_stream;
	char text[POP3_LINE_MAX + 1];
	bool ok;
	int rv;

	if (!p->caps.stls)
		return failf(p, POP3_ETLS, err, "server does not offer STLS");
	if ((rv = send_cmd(p, err, "STLS")) != POP3_OK ||
	    (rv = reply(p, &ok, text, sizeof text, err)) != POP3_OK)
		return rv;
	if (!ok)
		return server_err(p, POP3_ETLS, err, "STLS refused", text);
	/* Bytes already received after the +OK were sent in plaintext, so
	 * anyone on the path could have injected them (CVE-2020-15953). */
	if (pop3_reader_pending(&p->rd) > 0 || stream->read_buffer_len > 0)
		return failf(p, POP3_ETLS, err, "unexpected data after the STLS reply");
	if (tls_stream_starttls(stream, s->host, p->timeout) == -1)
		return failf(p, POP3_ENET, err, "TLS handshake failed");
	dlstream_guard(stream);		/* the TLS layer is a new low-level stream */
	return POP3_OK;
}

/* Connection, TLS and capabilities, up to the point of logging in. */
static int
establish(struct pop3 *p, const struct conf_server *s, char **err)
{
	int fd = -1, rv;

	if ((rv = tcp_connect(p, s, &fd, err)) != POP3_OK ||
	    (rv = open_stream(p, s, fd, err)) != POP3_OK)
		return rv;
	if (s->tls == CONF_TLS_IMPLICIT && (rv = verify(p, s, err)) != POP3_OK)
		return rv;
	if ((rv = greeting(p, err)) != POP3_OK || (rv = read_capa(p, err)) != POP3_OK)
		return rv;
	if (s->tls != CONF_TLS_STARTTLS)
		return POP3_OK;
	if ((rv = starttls(p, s, err)) != POP3_OK ||
	    (rv = verify(p, s, err)) != POP3_OK)
		return rv;
	/* Capabilities seen in plaintext may have been forged: read again. */
	pop3_parse_caps_init(&p->caps);
	return read_capa(p, err);
}

static int
check_config(struct pop3 *p, const struct conf_server *s, const char *pass, char **err)
{
	bool token = s->auth == CONF_AUTH_XOAUTH2 || s->auth == CONF_AUTH_OAUTHBEARER;
	size_t max = token ? POP3_TOKEN_MAX : POP3_NAME_MAX;

	if (s->host == NULL || *s->host == '\0')
		return failf(p, POP3_ECONFIG, err, "no host");
	if (s->port > 65535)
		return failf(p, POP3_ECONFIG, err, "port out of range");
	if (s->user == NULL || *s->user == '\0')
		return failf(p, POP3_ECONFIG, err, "no user name");
	/* Values that could inject commands: CR, LF, control characters
	 * where the protocol uses them as separators, over-long values. */
	if (!conf_safe_name(s->user, POP3_NAME_MAX))
		return failf(p, POP3_ECONFIG, err, "user name holds a control character "
		    "or is longer than %d bytes", POP3_NAME_MAX);
	if (pass != NULL && !(token ? conf_safe_name(pass, max) : conf_safe_value(pass, max)))
		return failf(p, POP3_ECONFIG, err, "%s holds CR or LF or is longer than "
		    "%zu bytes", token ? "token" : "password", max);
	if (conf_plaintext_refused(s, pass != NULL && *pass != '\0'))
		return failf(p, POP3_ECONFIG, err, "%s", CONF_PLAINTEXT_REFUSED);
	return POP3_OK;
}

/* What a login sends: the user, the secret, and what was derived from it
 * (the APOP digest, a SASL response), which a refusal must not repeat. */
struct cred {
	const char *user, *secret;
	const char *sent;	/* NULL when nothing was derived */
};

/* A refused login: p->refusal gets the server's text (cleaned, or a note
 * that it was withheld: some servers echo the rejected command, and a
 * reply holding the secret, lib/sasl.c knows its forms, or what was sent
 * for it is never repeated), p->busy its "not now" response code, if any
 * (RFC 2449/3206). note, when not NULL, is added (an OAuth status).
 * Returns POP3_EAUTH; authenticate() decides what it means. */
static int
auth_refused(struct pop3 *p, const char *text, const struct cred *c, const char *note)
{
	char *clean;

	free(p->refusal);
	p->busy = pop3_parse_busy(text);
	if (sasl_repeats_secret(text, c->user, c->secret) ||
	    (c->sent != NULL && *c->sent != '\0' && strstr(text, c->sent) != NULL))
		clean = xstrdup("(reply withheld: it repeats the credential)");
	else {
		char *t = pop3_parse_clean(text);

		clean = xasprintf("-ERR %s", t);
		free(t);
	}
	if (note != NULL) {
		p->refusal = xasprintf("%s (%s)", clean, note);
		free(clean);
	} else
		p->refusal = clean;
	return POP3_EAUTH;
}

static int
auth_user(struct pop3 *p, const char *user, const char *pass, char **err)
{
	const struct cred c = { user, pass, NULL };
	char text[POP3_LINE_MAX + 1];
	bool ok;
	int rv;

	if ((rv = send_cmd(p, err, "USER %s", user)) != POP3_OK ||
	    (rv = reply(p, &ok, text, sizeof text, err)) != POP3_OK)
		return rv;
	if (!ok)
		return auth_refused(p, text, &c, NULL);
	if ((rv = send_secret(p, "PASS ", pass, err)) != POP3_OK ||
	    (rv = reply(p, &ok, text, sizeof text, err)) != POP3_OK)
		return rv;
	return ok ? POP3_OK : auth_refused(p, text, &c, NULL);
}

/* APOP (RFC 1939) with GnuTLS's MD5: libetpan's is broken on 64-bit. */
static int
auth_apop(struct pop3 *p, const char *user, const char *pass, char **err)
{
	const char *ts = p->m->pop3_timestamp;
	size_t tl = strlen(ts), pl = strlen(pass);
	unsigned char md5[16];
	char hex[33], text[POP3_LINE_MAX + 1], *buf = xmalloc(tl + pl + 1);
	const struct cred c = { user, pass, hex };
	bool ok;
	int rv;

	memcpy(buf, ts, tl);
	memcpy(buf + tl, pass, pl);
	rv = gnutls_hash_fast(GNUTLS_DIG_MD5, buf, tl + pl, md5);
	explicit_bzero(buf, tl + pl);
	free(buf);
	if (rv < 0)
		return failf(p, POP3_ECONFIG, err, "APOP needs MD5, which GnuTLS refuses");
	hex_encode(md5, sizeof md5, hex);
	if ((rv = send_cmd(p, err, "APOP %s %s", user, hex)) != POP3_OK ||
	    (rv = reply(p, &ok, text, sizeof text, err)) != POP3_OK)
		return rv;
	return ok ? POP3_OK : auth_refused(p, text, &c, NULL);
}

/* Sends AUTH mech with the base64 response c->sent: inline when the line
 * fits in 255 octets, else after the server's "+" (RFC 5034 section 4). */
static int
sasl_start(struct pop3 *p, const char *mech, const struct cred *c, char **err)
{
	char prefix[32], text[POP3_LINE_MAX + 1], *msg = NULL;
	enum pop3_status st;
	int rv;

	snprintf(prefix, sizeof prefix, "AUTH %s ", mech);
	if (strlen(prefix) + strlen(c->sent) + 2 <= POP3_RFC5034)
		return send_secret(p, prefix, c->sent, err);
	if ((rv = send_cmd(p, err, "AUTH %s", mech)) != POP3_OK)
		return rv;
	if ((rv = pop3_reader_status(&p->rd, &st, text, sizeof text, &msg)) != POP3_OK)
		return fail(p, rv, err, msg);
	if (st == POP3_ST_ERR)
		return auth_refused(p, text, c, NULL);
	if (st == POP3_ST_OK)
		return failf(p, POP3_EPROTO, err, "AUTH %s: +OK before any credential", mech);
	return send_secret(p, "", c->sent, err);
}

/* Reads the outcome of AUTH. A "+" challenge now is an error report (the
 * OAuth mechanisms send their JSON error that way, RFC 7628 section
 * 3.2.2): it is answered (sasl_error_answer) to get the final -ERR, and
 * its "status" goes into the refusal. */
static int
sasl_finish(struct pop3 *p, enum sasl_mech mech, const struct cred *c, char **err)
{
	char text[POP3_LINE_MAX + 1], *msg = NULL, *status = NULL, note[96];
	enum pop3_status st;
	int rv, round;

	for (round = 0; round < 2; round++) {
		if ((rv = pop3_reader_status(&p->rd, &st, text, sizeof text, &msg)) != POP3_OK) {
			rv = fail(p, rv, err, msg);
			break;
		}
		if (st == POP3_ST_OK)
			break;
		if (st == POP3_ST_ERR) {
			if (status != NULL)
				snprintf(note, sizeof note, "token refused: status \"%s\"", status);
			rv = auth_refused(p, text, c, status != NULL ? note : NULL);
			break;
		}
		if (round == 1) {
			rv = failf(p, POP3_EPROTO, err, "AUTH %s: a second challenge",
			    sasl_name(mech));
			break;
		}
		status = sasl_oauth_status(text);
		if ((rv = send_cmd(p, err, "%s", sasl_error_answer(mech))) != POP3_OK)
			break;
	}
	free(status);
	return rv;
}

/* SASL with a one-step mechanism (lib/sasl.c builds the response); the
 * base64 response is wiped afterwards. */
static int
auth_sasl(struct pop3 *p, const struct conf_server *s, enum sasl_mech mech,
    const char *secret, char **err)
{
	char *b64 = mech == SASL_OAUTHBEARER ?
	    sasl_oauthbearer64(s->user, s->host, s->port, secret) :
	    sasl_response64(mech, s->user, secret);
	const struct cred c = { s->user, secret, b64 };
	int rv;

	if ((rv = sasl_start(p, sasl_name(mech), &c, err)) == POP3_OK)
		rv = sasl_finish(p, mech, &c, err);
	explicit_bzero(b64, strlen(b64));
	free(b64);
	return rv;
}

/* The mechanisms to try, in order; returns how many (0: none usable). */
static size_t
auth_plan(const struct pop3 *p, const struct conf_server *s, enum auth_kind *plan)
{
	bool apop = p->m->pop3_timestamp != NULL;
	size_t n = 0;

	switch (s->auth) {
	case CONF_AUTH_USER:
		plan[n++] = AUTH_USER;
		return n;
	case CONF_AUTH_APOP:
		if (apop)
			plan[n++] = AUTH_APOP;
		return n;
	case CONF_AUTH_PLAIN:
		plan[n++] = AUTH_PLAIN;
		return n;
	case CONF_AUTH_XOAUTH2:
		plan[n++] = AUTH_XOAUTH2;
		return n;
	case CONF_AUTH_OAUTHBEARER:
		plan[n++] = AUTH_OAUTHBEARER;
		return n;
	case CONF_AUTH_AUTO:
	case CONF_AUTH_LOGIN:	/* smtp {} and store {} only: never parsed for pop3 */
		break;
	}
	/* Without TLS, APOP at least keeps the password itself off the wire. */
	if (s->tls == CONF_TLS_NONE && apop)
		plan[n++] = AUTH_APOP;
	if (p->caps.sasl_plain)
		plan[n++] = AUTH_PLAIN;
	/* CAPA without USER means USER/PASS is refused (RFC 2449 6.1). */
	if (p->caps.user || !p->caps.capa)
		plan[n++] = AUTH_USER;
	if (s->tls != CONF_TLS_NONE && apop)
		plan[n++] = AUTH_APOP;
	return n;
}

static const char *const auth_names[] = {
	[AUTH_USER] = "USER", [AUTH_APOP] = "APOP", [AUTH_PLAIN] = "PLAIN",
	[AUTH_XOAUTH2] = "XOAUTH2", [AUTH_OAUTHBEARER] = "OAUTHBEARER",
};

static int
auth_one(struct pop3 *p, const struct conf_server *s, enum auth_kind k, const char *pass,
    char **err)
{
	switch (k) {
	case AUTH_USER:
		return auth_user(p, s->user, pass, err);
	case AUTH_APOP:
		return auth_apop(p, s->user, pass, err);
	case AUTH_PLAIN:
		return auth_sasl(p, s, SASL_PLAIN, pass, err);
	case AUTH_XOAUTH2:
		return auth_sasl(p, s, SASL_XOAUTH2, pass, err);
	case AUTH_OAUTHBEARER:
		return auth_sasl(p, s, SASL_OAUTHBEARER, pass, err);
	}
	fatalx("pop3: unknown login kind %d", (int)k);
}

/* Appends "MECH: refusal" to the list of refusals *list. */
static void
note_refusal(char **list, const char *mech, const char *refusal)
{
	char *l = *list == NULL ? xasprintf("%s: %s", mech, refusal) :
	    xasprintf("%s; %s: %s", *list, mech, refusal);

	free(*list);
	*list = l;
}

/* Tries the plan's mechanisms in turn (see pop3_open). */
static int
authenticate(struct pop3 *p, const struct conf_server *s, const char *pass,
    struct pop3_login *login, char **err)
{
	enum auth_kind plan[4];
	size_t n = auth_plan(p, s, plan), i;
	char *refused = NULL;
	int rv = POP3_EAUTH;

	for (i = 0; i < n && rv == POP3_EAUTH; i++) {
		if ((rv = auth_one(p, s, plan[i], pass, err)) == POP3_OK) {
			login->mechanism = auth_names[plan[i]];
			login->refused = refused;
			return POP3_OK;
		}
		if (rv != POP3_EAUTH)
			break;
		if (p->busy != POP3_BUSY_NONE) {
			login->busy = p->busy;
			rv = failf(p, POP3_ENET, err, "login refused for now: %s", p->refusal);
			break;
		}
		if (n == 1)
			rv = failf(p, POP3_EAUTH, err, "login refused: %s", p->refusal);
		else
			note_refusal(&refused, auth_names[plan[i]], p->refusal);
	}
	if (rv == POP3_EAUTH && n > 1)
		rv = failf(p, POP3_EAUTH, err, "login refused by every mechanism offered: %s",
		    refused);
	free(refused);
	if (n > 0)
		return rv;
	if (s->auth == CONF_AUTH_APOP)
		return failf(p, POP3_ECONFIG, err, "auth = apop but the greeting has "
		    "no APOP timestamp");
	return failf(p, POP3_ECONFIG, err, "no usable login: the server offers "
	    "neither SASL PLAIN, USER nor APOP");
}

/* RFC 6856: a server announcing UTF8 may hide or mangle messages with raw
 * 8-bit headers from a client that does not say UTF8 (Courier replaces
 * them with a notice); sent before anything is retrieved. A refusal is
 * noted and the session goes on. */
static int
utf8_on(struct pop3 *p, struct pop3_login *login, char **err)
{
	char text[POP3_LINE_MAX + 1], *clean;
	bool ok;
	int rv;

	if (!p->caps.utf8)
		return POP3_OK;
	if ((rv = send_cmd(p, err, "UTF8")) != POP3_OK ||
	    (rv = reply(p, &ok, text, sizeof text, err)) != POP3_OK)
		return rv;
	if (ok)
		login->utf8 = true;
	else {
		clean = pop3_parse_clean(text);
		login->utf8_refused = xasprintf("-ERR %s", clean);
		free(clean);
	}
	return POP3_OK;
}

/* RFC 6856 LANG: the server's texts end up in our one-line errors and
 * logs, which are English; asked for after UTF8 (a server may tie the
 * language to it) and before anything is retrieved. A refusal (no English
 * on offer) changes nothing. */
static int
lang_on(struct pop3 *p, struct pop3_login *login, char **err)
{
	char text[POP3_LINE_MAX + 1];
	bool ok;
	int rv;

	if (!p->caps.lang)
		return POP3_OK;
	if ((rv = send_cmd(p, err, "LANG en")) != POP3_OK ||
	    (rv = reply(p, &ok, text, sizeof text, err)) != POP3_OK)
		return rv;
	login->lang = ok;
	return POP3_OK;
}

void
pop3_login_free(struct pop3_login *l)
{
	if (l == NULL)
		return;
	free(l->refused);
	free(l->utf8_refused);
	memset(l, 0, sizeof *l);
	l->login_delay = -1;
}

static struct pop3 *
session_new(const struct conf_server *s)
{
	struct pop3 *p = xcalloc(1, sizeof *p);

	p->where = net_where(s->host, s->port);
	/* 0 would mean libetpan's 300 s per read and no step deadline. */
	p->timeout = s->timeout != 0 ? s->timeout : POP3_TIMEOUT_DEFAULT;
	pop3_parse_caps_init(&p->caps);
	if ((p->m = mailpop3_new(0, NULL)) == NULL)
		fatalx("pop3: out of memory");
	mailpop3_set_timeout(p->m, p->timeout);
	return p;
}

int
pop3_open(struct pop3 **out, const struct conf_server *s, const char *password,
    struct pop3_login *login, char **err)
{
	struct conf_server c = *s;
	struct pop3_login scratch;
	struct pop3 *p;
	int rv;

	*out = NULL;
	if (login == NULL)
		login = &scratch;
	memset(login, 0, sizeof *login);
	login->login_delay = -1;
	c.port = s->port != 0 ? s->port : s->tls == CONF_TLS_IMPLICIT ? 995 : 110;
	p = session_new(&c);
	if ((rv = check_config(p, &c, password, err)) == POP3_OK &&
	    (rv = establish(p, &c, err)) == POP3_OK) {
		login->login_delay = p->caps.login_delay;
		if ((rv = authenticate(p, &c, password != NULL ? password : "", login,
		    err)) == POP3_OK && (rv = read_capa(p, err)) == POP3_OK &&
		    (rv = utf8_on(p, login, err)) == POP3_OK)
			rv = lang_on(p, login, err);
	}
	if (login == &scratch)
		pop3_login_free(&scratch);
	if (rv != POP3_OK) {
		pop3_abort(p);
		return rv;
	}
	*out = p;
	return POP3_OK;
}

const struct pop3_caps *
pop3_caps(const struct pop3 *p)
{
	return &p->caps;
}

/* -ERR to UIDL: from a server whose CAPA announces UIDL it is a failure
 * of the moment (pop3_scan). Otherwise the server has no UIDL. */
static int
uidl_refused(struct pop3 *p, const char *text, char **err)
{
	if (p->caps.uidl)
		return server_err(p, POP3_ESERVER, err, "UIDL refused although the server "
		    "announces it (nothing imported, tried again next pass)", text);
	free(p->uidl_refused);
	p->uidl_refused = pop3_parse_clean(text);
	return POP3_OK;
}

/* Reads a UIDL or LIST reply whose command was sent: into ls (UIDL, or
 * LIST for a server without UIDL), or, for a LIST with m, as sizes of the
 * UIDL entries m merges it with. *have says it was answered +OK. */
static int
read_listing(struct pop3 *p, bool uidl, struct pop3_listing *ls, struct pop3_merge *m,
    bool *have, char **err)
{
	unsigned long num;
	uint64_t size;
	char line[POP3_LINE_MAX + 1], *msg = NULL;
	bool ok, end;
	int rv;

	*have = false;
	pop3_reader_expect(&p->rd, 0);
	if ((rv = reply(p, &ok, line, sizeof line, err)) != POP3_OK)
		return rv;
	if (!ok)
		return uidl ? uidl_refused(p, line, err) :
		    server_err(p, POP3_ESERVER, err, "LIST", line);
	*have = true;
	for (;;) {
		if ((rv = pop3_reader_mline(&p->rd, line, sizeof line, &end, &msg)) != POP3_OK)
			return fail(p, rv, err, msg);
		if (end)
			return POP3_OK;
		if ((m != NULL ? m->nlist : ls->n) == POP3_LIST_MAX)
			return failf(p, POP3_EPROTO, err, "%s reply longer than %d lines",
			    uidl ? "UIDL" : "LIST", POP3_LIST_MAX);
		if (uidl) {
			if ((rv = pop3_listing_add_uidl(ls, line, &msg)) != POP3_OK)
				return fail(p, rv, err, msg);
			continue;
		}
		if ((rv = pop3_parse_list(line, &num, &size, &msg)) != POP3_OK)
			return fail(p, rv, err, msg);
		if (m != NULL)
			pop3_merge_line(m, num, size);
		else
			pop3_listing_add_list(ls, num, size);
	}
}

/* STAT's answer, "+OK nn mm" (RFC 1939): room for nn entries (at most
 * POP3_LIST_MAX). It only sizes arrays: a -ERR or another form reserves
 * nothing, and the listing itself says what there is. */
static int
stat_reserve(struct pop3 *p, struct pop3_listing *ls, char **err)
{
	char text[POP3_LINE_MAX + 1];
	unsigned long count;
	uint64_t octets;
	bool ok;
	int rv;

	if ((rv = reply(p, &ok, text, sizeof text, err)) != POP3_OK)
		return rv;
	if (ok && pop3_parse_list(text, &count, &octets, NULL) == POP3_OK)
		pop3_listing_reserve(ls, count < POP3_LIST_MAX ? count : POP3_LIST_MAX);
	return POP3_OK;
}

int
pop3_scan(struct pop3 *p, struct pop3_listing *ls, char **err)
{
	bool have = false;
	char *msg = NULL;
	int rv;

	pop3_listing_free(ls);
	if ((rv = ready(p, err)) != POP3_OK)
		return rv;
	free(p->uidl_refused);
	p->uidl_refused = NULL;
	if (p->caps.pipelining)
		rv = send_raw(p, "STAT\r\nUIDL\r\n", 12, err);
	else
		rv = send_cmd(p, err, "STAT");
	if (rv == POP3_OK)
		rv = stat_reserve(p, ls, err);
	if (rv == POP3_OK && !p->caps.pipelining)
		rv = send_cmd(p, err, "UIDL");
	if (rv == POP3_OK)
		rv = read_listing(p, true, ls, NULL, &have, err);
	if (rv == POP3_OK && have)
		rv = pop3_listing_check(ls, "UIDL", p->ndeleted > 0, true, &msg);
	else if (rv == POP3_OK) {
		/* No UIDL: the whole LIST, the size being part of each id. */
		if ((rv = send_cmd(p, err, "LIST")) == POP3_OK)
			rv = read_listing(p, false, ls, NULL, &have, err);
		if (rv == POP3_OK)
			rv = pop3_listing_check(ls, "LIST", p->ndeleted > 0, false, &msg);
	}
	if (rv == POP3_OK)
		pop3_listing_trim(ls);
	else {
		if (msg != NULL)
			rv = fail(p, rv, err, msg);
		pop3_listing_free(ls);
	}
	return rv;
}

/* The whole LIST, merged into ls with RFC 1939's checks. */
static int
sizes_whole(struct pop3 *p, struct pop3_listing *ls, char **err)
{
	struct pop3_merge m;
	char *msg = NULL;
	bool have;
	int rv;

	if ((rv = send_cmd(p, err, "LIST")) != POP3_OK)
		return rv;
	pop3_merge_init(&m, ls, p->ndeleted > 0);
	rv = read_listing(p, false, ls, &m, &have, err);
	if (rv == POP3_OK && (rv = pop3_merge_end(&m, &msg)) != POP3_OK)
		rv = fail(p, rv, err, msg);
	free(m.list_err);
	return rv;
}

/* The answer to "LIST num" for entry i: "+OK num size". */
static int
size_reply(struct pop3 *p, struct pop3_listing *ls, size_t i, char **err)
{
	char text[POP3_LINE_MAX + 1], *msg = NULL, *clean;
	unsigned long want = pop3_listing_num(ls, i), num;
	uint64_t size;
	bool ok;
	int rv;

	if ((rv = reply(p, &ok, text, sizeof text, err)) != POP3_OK)
		return rv;
	if (!ok) {
		/* The maildrop is locked: a message UIDL named is there. */
		clean = pop3_parse_clean(text);
		rv = failf(p, POP3_EPROTO, err, "LIST %lu: -ERR %s, although UIDL lists it",
		    want, clean);
		free(clean);
		return rv;
	}
	if ((rv = pop3_parse_list(text, &num, &size, &msg)) != POP3_OK)
		return fail(p, rv, err, msg);
	if (num != want)
		return failf(p, POP3_EPROTO, err, "UIDL and LIST disagree: message %lu "
		    "in one, %lu in the other", want, num);
	pop3_listing_set_size(ls, i, size);
	return POP3_OK;
}

static int
cmp_size_t(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return x < y ? -1 : x > y;
}

/* "LIST num" for entries at[0..k) (increasing), POP3_PIPE_MAX to a write
 * when the server pipelines, else one at a time. */
static int
sizes_each(struct pop3 *p, struct pop3_listing *ls, const size_t *at, size_t k, char **err)
{
	size_t step = p->caps.pipelining ? POP3_PIPE_MAX : 1, i, w, len;
	char *buf = xmalloc(step * 32);
	int rv = POP3_OK;

	for (i = 0; rv == POP3_OK && i < k; i += w) {
		w = k - i < step ? k - i : step;
		len = 0;
		for (size_t j = 0; j < w; j++)
			len += (size_t)snprintf(buf + len, 32, "LIST %lu\r\n",
			    pop3_listing_num(ls, at[i + j]));
		rv = send_raw(p, buf, len, err);
		for (size_t j = 0; rv == POP3_OK && j < w; j++)
			rv = size_reply(p, ls, at[i + j], err);
	}
	free(buf);
	return rv;
}

/* One "LIST num" costs about what k/SIZES_WHOLE_PER lines of a whole LIST
 * cost the server and the wire (a command and its status line against a
 * listing line); without PIPELINING each one is a round trip, and past
 * SIZES_EACH_MAX of them one LIST is cheaper anywhere but on loopback. */
#define SIZES_WHOLE_PER	8
#define SIZES_EACH_MAX	32

int
pop3_sizes(struct pop3 *p, struct pop3_listing *ls, const size_t *idx, size_t k, char **err)
{
	size_t *at, n = 0, w = 0;
	int rv;

	if (ls->size != NULL || k == 0)
		return POP3_OK;
	if ((rv = ready(p, err)) != POP3_OK)
		return rv;
	if ((uint64_t)k * SIZES_WHOLE_PER >= ls->n || (!p->caps.pipelining && k > SIZES_EACH_MAX))
		return sizes_whole(p, ls, err);
	at = xreallocarray(NULL, k, sizeof *at);
	for (size_t j = 0; j < k; j++)
		if (!pop3_listing_sized(ls, idx[j]))
			at[n++] = idx[j];
	qsort(at, n, sizeof *at, cmp_size_t);
	for (size_t j = 0; j < n; j++)
		if (w == 0 || at[j] != at[w - 1])
			at[w++] = at[j];
	rv = sizes_each(p, ls, at, w, err);
	free(at);
	return rv;
}

const char *
pop3_uidl_refused(const struct pop3 *p)
{
	return p->uidl_refused;
}

size_t
pop3_retrieved(const struct pop3 *p, const unsigned long **nums)
{
	*nums = p->retrieved;
	return p->nretrieved;
}

int
pop3_top_hash(struct pop3 *p, unsigned long num, unsigned char sha256[32], char **err)
{
	struct pop3_sink o;
	struct pop3_retr res;
	char text[POP3_LINE_MAX + 1], what[32], *msg = NULL;
	bool ok;
	int rv;

	if ((rv = ready(p, err)) != POP3_OK ||
	    (rv = send_cmd(p, err, "TOP %lu 0", num)) != POP3_OK)
		return rv;
	pop3_reader_expect(&p->rd, 0);	/* the header only: LIST's size is the whole */
	if ((rv = reply(p, &ok, text, sizeof text, err)) != POP3_OK)
		return rv;
	if (!ok) {
		snprintf(what, sizeof what, "TOP %lu", num);
		return server_err(p, POP3_ESERVER, err, what, text);
	}
	note_retrieved(p, num);
	pop3_sink_init(&o, -1, POP3_EOL_CRLF, 0);
	if ((rv = pop3_reader_body(&p->rd, pop3_sink_put, &o, &msg)) == POP3_OK)
		rv = pop3_sink_finish(&o, &res, &msg);
	pop3_sink_free(&o);
	if (rv != POP3_OK)
		return fail(p, rv, err, msg);
	memcpy(sha256, res.header_sha256, sizeof res.header_sha256);
	free(res.header);
	return POP3_OK;
}

/* Sends the next POP3_PIPE_MAX queued RETRs in one write. */
static int
queue_send(struct pop3 *p, char **err)
{
	size_t i, len = 0, end = p->nqueue - p->nsent > POP3_PIPE_MAX ?
	    p->nsent + POP3_PIPE_MAX : p->nqueue;
	char *buf = xmalloc((end - p->nsent) * 32);
	int rv;

	for (i = p->nsent; i < end; i++)
		len += (size_t)snprintf(buf + len, 32, "RETR %lu\r\n", p->queue[i]);
	rv = send_raw(p, buf, len, err);
	free(buf);
	if (rv == POP3_OK)
		p->nsent = end;
	return rv;
}

int
pop3_retr_pipeline(struct pop3 *p, const unsigned long *nums, const uint64_t *sizes, size_t n,
    char **err)
{
	int rv;

	if ((rv = ready(p, err)) != POP3_OK)
		return rv;
	if (!p->caps.pipelining || n == 0)
		return POP3_OK;		/* pop3_retr() sends each RETR itself */
	p->queue = xreallocarray(NULL, n, sizeof *p->queue);
	memcpy(p->queue, nums, n * sizeof *nums);
	p->queue_size = xreallocarray(NULL, n, sizeof *p->queue_size);
	memcpy(p->queue_size, sizes, n * sizeof *sizes);
	p->nqueue = n;
	return queue_send(p, err);
}

/* Sends RETR num, or takes it from the announced batch. */
static int
retr_send(struct pop3 *p, unsigned long num, char **err)
{
	int rv;

	if (p->qnext == p->nqueue)
		return send_cmd(p, err, "RETR %lu", num);
	if (p->queue[p->qnext] != num)
		fatalx("pop3_retr: message %lu read out of the batch order (%lu is next)",
		    num, p->queue[p->qnext]);
	if (p->qnext == p->nsent && (rv = queue_send(p, err)) != POP3_OK)
		return rv;
	if (++p->qnext == p->nqueue)
		queue_clear(p);
	return POP3_OK;
}

int
pop3_retr(struct pop3 *p, unsigned long num, uint64_t listed, int fd, enum pop3_eol eol,
    uint64_t max_octets, struct pop3_retr *res, char **err)
{
	struct pop3_sink o;
	char text[POP3_LINE_MAX + 1], what[32], *msg = NULL;
	bool ok;
	int rv;

	if (p->broken)
		return ready(p, err);
	if ((rv = retr_send(p, num, err)) != POP3_OK)
		return rv;
	pop3_reader_expect(&p->rd, listed);
	if ((rv = reply(p, &ok, text, sizeof text, err)) != POP3_OK)
		return rv;
	if (!ok) {
		snprintf(what, sizeof what, "RETR %lu", num);
		return server_err(p, POP3_ESERVER, err, what, text);
	}
	note_retrieved(p, num);
	pop3_sink_init(&o, fd, eol, max_octets != 0 ? POP3_DRAIN_MAX(max_octets) : 0);
	pop3_sink_bound(&o, max_octets);
	if ((rv = pop3_reader_body(&p->rd, pop3_sink_put, &o, &msg)) == POP3_OK)
		rv = pop3_sink_finish(&o, res, &msg);
	pop3_sink_free(&o);
	return rv == POP3_OK ? POP3_OK : fail(p, rv, err, msg);
}

unsigned
pop3_deadline(const struct pop3 *p)
{
	return pop3_reader_deadline(&p->rd);
}

struct dele_result {
	size_t failed;
	char *first;		/* the first refusal, for the message */
};

/* Sends k DELEs in one write and reads their replies. */
static int
dele_window(struct pop3 *p, const unsigned long *nums, size_t k, struct dele_result *d,
    char **err)
{
	char text[POP3_LINE_MAX + 1], *buf = xmalloc(k * 32), *clean;
	size_t i, len = 0;
	bool ok;
	int rv;

	for (i = 0; i < k; i++)
		len += (size_t)snprintf(buf + len, 32, "DELE %lu\r\n", nums[i]);
	rv = send_raw(p, buf, len, err);
	free(buf);
	for (i = 0; rv == POP3_OK && i < k; i++) {
		if ((rv = reply(p, &ok, text, sizeof text, err)) != POP3_OK)
			break;
		if (ok) {
			p->ndeleted++;
			continue;
		}
		if (d->failed++ == 0) {
			clean = pop3_parse_clean(text);
			d->first = xasprintf("DELE %lu: -ERR %s", nums[i], clean);
			free(clean);
		}
	}
	return rv;
}

int
pop3_dele(struct pop3 *p, const unsigned long *nums, size_t n, char **err)
{
	struct dele_result d = { 0, NULL };
	size_t i, k, step;
	int rv;

	if ((rv = ready(p, err)) != POP3_OK)
		return rv;
	step = p->caps.pipelining ? POP3_PIPE_MAX : 1;
	for (i = 0; i < n; i += k) {
		k = n - i < step ? n - i : step;
		if ((rv = dele_window(p, nums + i, k, &d, err)) != POP3_OK)
			break;
	}
	if (rv == POP3_OK && d.failed > 0)
		rv = failf(p, POP3_ESERVER, err, "%zu of %zu DELE refused, first %s",
		    d.failed, n, d.first);
	free(d.first);
	return rv;
}

int
pop3_quit(struct pop3 *p, char **err)
{
	char text[POP3_LINE_MAX + 1];
	bool ok;
	int rv;

	if ((rv = ready(p, err)) == POP3_OK &&
	    (rv = send_cmd(p, err, "QUIT")) == POP3_OK &&
	    (rv = reply(p, &ok, text, sizeof text, err)) == POP3_OK && !ok)
		rv = server_err(p, POP3_ESERVER, err,
		    "QUIT failed, deletions not committed", text);
	pop3_abort(p);
	return rv;
}

void
pop3_abort(struct pop3 *p)
{
	if (p == NULL)
		return;
	/* mailpop3_free() would send QUIT, which commits every DELE
	 * (doc/DESIGN.md, libetpan trap 3): close the stream ourselves first. */
	if (p->m->pop3_stream != NULL) {
		mailstream_close(p->m->pop3_stream);
		p->m->pop3_stream = NULL;
	}
	free(p->m->pop3_timestamp);
	p->m->pop3_timestamp = NULL;
	mailpop3_free(p->m);
	pop3_reader_free(&p->rd);
	queue_clear(p);
	free(p->where);
	free(p->refusal);
	free(p->uidl_refused);
	free(p->retrieved);
	free(p);
}

/* The IMAP store's login (store/imap_priv.h).
 *
 * LOGIN goes through libetpan (mailimap_login quotes or sends a literal as
 * the value needs). AUTHENTICATE (RFC 3501 6.2.2) is spoken here, not by
 * libetpan: its mailimap_authenticate() runs Cyrus SASL, whose plugins
 * and buffers hold the secret where we cannot wipe it, and its
 * mailimap_oauth2_authenticate() puts the response on the command line
 * whether or not the server announced SASL-IR, answers every challenge
 * with an empty line (OAUTHBEARER wants ^A, RFC 7628 3.2.3) and reports
 * any failure as one code. Here: SASL-IR (RFC 4959) when announced, else
 * the two-step form; an error challenge is answered as each mechanism
 * wants and its "status" kept for the message; every buffer that held the
 * secret, libetpan's write buffer included, is wiped after sending
 * (doc/DESIGN.md, libetpan trap 6); every value was checked for what could
 * inject (trap 7). */
#include "store/imap_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/base64.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/sasl.h"
#include "lib/xmalloc.h"

enum mech { MECH_LOGIN, MECH_PLAIN, MECH_XOAUTH2, MECH_OAUTHBEARER };

static const char *const mech_names[] = { "LOGIN", "PLAIN", "XOAUTH2", "OAUTHBEARER" };

struct login {
	char *user;		/* whose mailbox: the account's store user */
	char *master;		/* Dovecot master login, or NULL */
	char *secret;		/* password or access token */
	enum mech mech;
};

static void
login_free(struct login *l)
{
	if (l->secret != NULL) {
		explicit_bzero(l->secret, strlen(l->secret));
		free(l->secret);
	}
	free(l->user);
	free(l->master);
}

static int
refuse(struct imap *im, char **err, const char *fmt, const char *arg)
{
	im->why = DELIVER_EAUTH;
	return err_at(err, im->where, fmt, arg);
}

/* The names and the secret, each checked for what could inject. */
static int
credentials(struct imap *im, const struct conf *c, const struct conf_account *a,
    struct login *l, char **err)
{
	const char *master = c->store.master_user;

	l->user = conf_store_user(c, a);
	if (*l->user == '\0' || !conf_safe_name(l->user, IMAP_NAME_MAX))
		return err_at(err, im->where, "store user name is empty, holds a control "
		    "character or is longer than %d bytes", IMAP_NAME_MAX);
	if (master != NULL && (*master == '\0' || !conf_safe_name(master, IMAP_NAME_MAX)))
		return err_at(err, im->where, "store master_user is empty, holds a control "
		    "character or is too long");
	l->master = master != NULL ? xstrdup(master) : NULL;
	if (conf_password(im->srv, &l->secret, err) == -1)
		return -1;
	if (l->secret == NULL)
		l->secret = xstrdup("");
	if (!conf_safe_name(l->secret, IMAP_PASS_MAX))
		return err_at(err, im->where, "store password holds a control character or is "
		    "longer than %d bytes", IMAP_PASS_MAX);
	if (conf_plaintext_refused(im->srv, *l->secret != '\0'))
		return err_at(err, im->where, "%s", CONF_PLAINTEXT_REFUSED);
	return 0;
}

/* The mechanism for srv->auth and what the server offers. LOGINDISABLED
 * (RFC 3501 6.2.3) forbids LOGIN; over plaintext we do not send PLAIN to
 * such a server either: it said it does not want a password in clear. */
static int
choose(struct imap *im, enum mech *m, char **err)
{
	const struct imap_caps *cp = &im->caps;
	bool tls = im->srv->tls != CONF_TLS_NONE;
	bool plain_ok = tls || !cp->logindisabled;

	switch (im->srv->auth) {
	case CONF_AUTH_XOAUTH2:
	case CONF_AUTH_OAUTHBEARER:
		*m = im->srv->auth == CONF_AUTH_XOAUTH2 ? MECH_XOAUTH2 : MECH_OAUTHBEARER;
		if (!(*m == MECH_XOAUTH2 ? cp->auth_xoauth2 : cp->auth_oauthbearer))
			return refuse(im, err, "server does not offer AUTH=%s", mech_names[*m]);
		return 0;
	case CONF_AUTH_PLAIN:
		*m = MECH_PLAIN;
		if (!cp->auth_plain)
			return refuse(im, err, "server does not offer AUTH=%s (auth = \"plain\")",
			    "PLAIN");
		break;
	case CONF_AUTH_LOGIN:
		*m = MECH_LOGIN;
		break;
	default:
		*m = cp->auth_plain && plain_ok ? MECH_PLAIN : MECH_LOGIN;
		break;
	}
	if (*m == MECH_LOGIN && cp->logindisabled)
		return refuse(im, err, "server refuses LOGIN (LOGINDISABLED)%s", tls ?
		    " and offers no AUTH=PLAIN" : ": use tls");
	if (*m == MECH_PLAIN && !plain_ok)
		return refuse(im, err, "server refuses passwords over plaintext "
		    "(LOGINDISABLED)%s", ": use tls");
	return 0;
}

/* A refusal's text may quote what we sent: then it is withheld. */
static void
withhold_echo(struct imap *im, const struct login *l, const char *authc, const char *b64,
    char **err)
{
	const char *echo = *err != NULL ? strstr(*err, "refused") : NULL;

	if (echo == NULL || *l->secret == '\0')
		return;
	if (!sasl_repeats_secret(echo, authc, l->secret) &&
	    (b64 == NULL || strstr(echo, b64) == NULL))
		return;
	free(*err);
	*err = NULL;
	err_at(err, im->where, "%s login as %s refused (reply withheld: it repeats the "
	    "%s)", mech_names[l->mech], l->user,
	    l->mech >= MECH_XOAUTH2 ? "token" : "password");
}

/* The class of a refused login: RFC 5530 [UNAVAILABLE] is the server's
 * trouble, worth trying again; anything else is the credentials'. */
static void
refused_class(struct imap *im, const char *code)
{
	if (im->broken)
		return;		/* imap_fail made it temporary */
	im->why = strcasecmp(code, "UNAVAILABLE") == 0 ? DELIVER_ETEMP : DELIVER_EAUTH;
}

static int
login_plain_text(struct imap *im, const struct login *l, char **err)
{
	mailstream *s = im->m->imap_stream;
	char *name, *text;
	const char *code;
	int r;

	/* Dovecot's master login: "user*master" (auth_master_user_separator),
	 * authenticated by the master's password. */
	name = l->master != NULL ? xasprintf("%s*%s", l->user, l->master) : xstrdup(l->user);
	r = mailimap_login(im->m, name, l->secret);
	/* libetpan keeps sent bytes in its write buffer: wipe the password. */
	explicit_bzero(s->write_buffer, s->buffer_max_size);
	if (r == MAILIMAP_NO_ERROR) {
		free(name);
		return 0;
	}
	if (r != MAILIMAP_ERROR_LOGIN) {
		free(name);
		return imap_fail(im, err, "LOGIN", r);
	}
	code = im->m->imap_response_info != NULL && im->m->imap_response_info->rsp_atom ?
	    im->m->imap_response_info->rsp_atom : "";
	refused_class(im, code);
	text = imap_server_text(im);
	err_at(err, im->where, "login as %s refused%s%s%s: %s", l->user, *code ? " [" : "",
	    code, *code ? "]" : "", text);
	free(text);
	withhold_echo(im, l, name, NULL, err);
	free(name);
	return -1;
}

/* The lib/sasl.h mechanism of m (not MECH_LOGIN). */
static enum sasl_mech
sasl_mech_of(enum mech m)
{
	return m == MECH_OAUTHBEARER ? SASL_OAUTHBEARER : m == MECH_XOAUTH2 ? SASL_XOAUTH2 :
	    SASL_PLAIN;
}

/* The raw SASL response of l->mech. Allocated; *len its length. */
static char *
sasl_raw(struct imap *im, const struct login *l, size_t *len)
{
	char *raw;

	switch (l->mech) {
	case MECH_OAUTHBEARER:
		raw = sasl_oauthbearer(l->user, im->srv->host, im->srv->port, l->secret);
		*len = strlen(raw);
		return raw;
	case MECH_XOAUTH2:
		return sasl_response(SASL_XOAUTH2, NULL, l->user, l->secret, len);
	default:
		/* A master logs in as itself for the user (RFC 4616 authzid),
		 * which needs no separator configured on the server. */
		return sasl_response(sasl_mech_of(l->mech), l->master != NULL ? l->user : NULL,
		    l->master != NULL ? l->master : l->user, l->secret, len);
	}
}

/* Sends the command, and the response in a second step unless SASL-IR
 * carried it. Every copy of the secret is wiped before returning. 0 sent
 * (the reply is next), -1 with *err (a tagged reply came instead: its
 * refusal, or a broken session). */
static int
send_response(struct imap *im, const struct login *l, const char *what, const char *b64,
    char **err)
{
	mailstream *s = im->m->imap_stream;
	char *line, *cont;
	int r;

	line = im->caps.sasl_ir ?
	    xasprintf("AUTHENTICATE %s %s\r\n", mech_names[l->mech], b64) :
	    xasprintf("AUTHENTICATE %s\r\n", mech_names[l->mech]);
	r = imap_send_command(im, what, line, strlen(line), err);
	if (r == 0)
		r = imap_flush(im, what, err);
	explicit_bzero(line, strlen(line));
	free(line);
	if (r == 0 && !im->caps.sasl_ir) {
		if ((r = imap_next(im, what, &cont, err)) == 0)
			r = err_at(err, im->where, "%s: accepted without credentials", what);
		else if (r == 1 && (r = imap_send(im, what, b64, strlen(b64), err)) == 0 &&
		    (r = imap_send(im, what, "\r\n", 2, err)) == 0)
			r = imap_flush(im, what, err);
	}
	explicit_bzero(s->write_buffer, s->buffer_max_size);
	return r;
}

static int
login_sasl(struct imap *im, struct login *l, char **err)
{
	size_t len;
	char *raw = sasl_raw(im, l, &len), *b64 = base64_encode(raw, len);
	char *what = xasprintf("%s login as %s", mech_names[l->mech], l->user);
	char *status = NULL, *line, *e, *reply;
	const char *p;
	int r, rounds = 0;

	explicit_bzero(raw, len);
	free(raw);
	mailstream_set_privacy(im->m->imap_stream, 0);
	r = send_response(im, l, what, b64, err);
	mailstream_set_privacy(im->m->imap_stream, 1);
	/* An error challenge, answered; a second one is cancelled. */
	while (r == 0 && (r = imap_next(im, what, &line, err)) == 1) {
		if (status == NULL) {
			for (p = line + 1; *p == ' '; p++)
				;
			reply = xstrndup(p, strcspn(p, "\r\n"));
			status = sasl_oauth_status(reply);
			free(reply);
		}
		reply = xasprintf("%s\r\n", rounds++ == 0 ?
		    sasl_error_answer(sasl_mech_of(l->mech)) : "*");
		if ((r = imap_send(im, what, reply, strlen(reply), err)) == 0)
			r = imap_flush(im, what, err);
		free(reply);
	}
	if (r == -1) {
		refused_class(im, im->code);
		withhold_echo(im, l, l->master != NULL ? l->master : l->user, b64, err);
		if (status != NULL && *err != NULL) {
			e = xasprintf("%s (status %s)", *err, status);
			free(*err);
			*err = e;
		}
	} else
		im->m->imap_state = MAILIMAP_STATE_AUTHENTICATED;
	explicit_bzero(b64, strlen(b64));
	free(b64);
	free(status);
	free(what);
	return r;
}

int
imap_login(struct imap *im, const struct conf *c, const struct conf_account *a,
    char **err)
{
	struct login l = { 0 };
	int r = -1;

	if (credentials(im, c, a, &l, err) == 0 && choose(im, &l.mech, err) == 0) {
		r = l.mech == MECH_LOGIN ? login_plain_text(im, &l, err) : login_sasl(im, &l, err);
		if (r == 0)
			log_debug("%s: %s: logged in as %s with %s", im->account, im->where, l.user,
			    mech_names[l.mech]);
	}
	login_free(&l);
	if (r == 0)
		r = imap_read_caps(im, err);
	return r;
}

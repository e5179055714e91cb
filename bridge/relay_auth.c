/* The relay's AUTH command (RFC 4954): PLAIN (RFC 4616) and LOGIN, checked
 * against the passwd-file. Neither the exchange nor the password is ever
 * logged; buffers that held them are wiped. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/log.h"
#include "bridge/relay_priv.h"
#include "lib/base64.h"
#include "lib/sasl.h"
#include "lib/xmalloc.h"

#define CRED_MAX	256     /* bytes of a user name or a password */

/* Reads the client's answer to a 334 challenge and decodes it into a new
 * buffer (*out, *len). 0, or -1 after replying (cancelled, malformed). */
static int
read_response(struct sess *s, const char *challenge, char **out, size_t *len)
{
	char line[RELAY_LINE_MAX];
	ssize_t n;

	rio_reply(&s->io, "334 %s", challenge);
	if ((n = rio_getline(&s->io, line, sizeof line)) == RIO_DEAD) {
		s->quit = true;
		return -1;
	}
	if (n == RIO_TOOLONG || strcmp(line, "*") == 0) {
		explicit_bzero(line, sizeof line);
		sess_error(s, n == RIO_TOOLONG ? "500 5.5.6 Authentication exchange line too long" :
		    "501 5.0.0 Authentication cancelled");
		return -1;
	}
	*out = base64_decode(line, len);
	explicit_bzero(line, sizeof line);
	if (*out == NULL) {
		sess_error(s, "501 5.5.2 Cannot decode response");
		return -1;
	}
	return 0;
}

/* The decoded PLAIN or LOGIN value of the initial response, or of a 334
 * round trip when there is none. */
static int
get_value(struct sess *s, const char *initial, const char *challenge, char **out,
    size_t *len)
{
	if (initial == NULL || *initial == '\0')
		return read_response(s, challenge, out, len);
	/* "=" is an empty initial response (RFC 4954), "" in base64. */
	if ((*out = base64_decode(strcmp(initial, "=") == 0 ? "" : initial, len)) == NULL) {
		sess_error(s, "501 5.5.2 Cannot decode response");
		return -1;
	}
	return 0;
}

static bool
cred_ok(const char *v, size_t len)
{
	if (len == 0 || len > CRED_MAX || strlen(v) != len)
		return false;
	for (; *v; v++)
		if ((unsigned char)*v < 0x20 || *v == 0x7f)
			return false;
	return true;
}

static void
verify(struct sess *s, const char *user, size_t ulen, const char *pass, size_t plen)
{
	char *err = NULL;
	int rc = 0;

	if (cred_ok(user, ulen) && plen <= CRED_MAX && strlen(pass) == plen)
		rc = passwd_check(s->pw, user, pass, s->peer, &err);
	if (rc == 1) {
		s->user = xstrdup(user);
		log_info("relay: %s: user %s authenticated", s->peer, user);
		rio_reply(&s->io, "235 2.7.0 Authentication successful");
		return;
	}
	if (rc == -1) {
		log_warnx("relay: %s", err);
		free(err);
		rio_reply(&s->io, "454 4.7.0 Temporary authentication failure");
		return;
	}
	log_info("relay: %s: authentication failed", s->peer);
	rio_reply(&s->io, "535 5.7.8 Authentication credentials invalid");
	if (++s->auth_fails >= RELAY_MAX_AUTH_FAILS) {
		rio_reply(&s->io, "421 4.7.0 Too many failed authentications");
		s->quit = true;
	}
}

static void
auth_plain(struct sess *s, const char *initial)
{
	struct sasl_plain pl;
	size_t len;
	char *v;

	if (get_value(s, initial, "", &v, &len) == -1)
		return;
	/* An authorization identity, if any, must be the user itself. */
	if (sasl_plain_parse(v, len, &pl) == -1 || (pl.authzid_len > 0 &&
	    (pl.authzid_len != pl.authcid_len ||
	    memcmp(pl.authzid, pl.authcid, pl.authcid_len) != 0)))
		rio_reply(&s->io, "535 5.7.8 Authentication credentials invalid");
	else
		verify(s, pl.authcid, pl.authcid_len, pl.passwd, pl.passwd_len);
	explicit_bzero(v, len);
	free(v);
}

static void
auth_login(struct sess *s, const char *initial)
{
	char *user, *pass;
	size_t ulen, plen;

	if (get_value(s, initial, "VXNlcm5hbWU6", &user, &ulen) == -1)
		return;
	if (read_response(s, "UGFzc3dvcmQ6", &pass, &plen) == 0) {
		verify(s, user, ulen, pass, plen);
		explicit_bzero(pass, plen);
		free(pass);
	}
	free(user);
}

void
relay_cmd_auth(struct sess *s, char *arg)
{
	char *mech = strsep(&arg, " ");

	if (s->helo[0] == '\0' || s->user != NULL || s->from != NULL) {
		sess_error(s, s->user ? "503 5.5.1 Already authenticated" :
		    "503 5.5.1 Send EHLO first, and AUTH before MAIL");
		return;
	}
	if (s->io.tls == NULL && !s->loopback) {
		sess_error(s, "538 5.7.11 Encryption required for requested authentication mechanism");
		return;
	}
	if (strcasecmp(mech, "PLAIN") == 0)
		auth_plain(s, arg);
	else if (strcasecmp(mech, "LOGIN") == 0)
		auth_login(s, arg);
	else
		sess_error(s, "504 5.5.4 Unrecognized authentication type");
}

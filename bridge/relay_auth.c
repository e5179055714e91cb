/* The relay's AUTH command (RFC 4954) and where it is offered: PLAIN (RFC
 * 4616) and LOGIN, checked against the passwd-file. Neither the exchange
 * nor the password is ever logged; buffers that held them are wiped. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bridge/relay_priv.h"
#include "lib/base64.h"
#include "lib/log.h"
#include "lib/sasl.h"
#include "lib/xmalloc.h"

#define CRED_MAX	256     /* bytes of a user name or a password */

bool
relay_auth_allowed(bool tls, const struct sockaddr *peer)
{
	static const unsigned char v4mapped[12] = { [10] = 0xff, [11] = 0xff };

	if (tls)
		return true;
	if (peer->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)peer;

		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (peer->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)peer)->sin6_addr;

		return IN6_IS_ADDR_LOOPBACK(a) ||
		    (memcmp(a->s6_addr, v4mapped, 12) == 0 && a->s6_addr[12] == 127);
	}
	return false;
}

/* Reads the client's answer to a 334 challenge and decodes it into a new
 * buffer (*out, *len). 0, or -1 after replying (cancelled, malformed). */
static int
read_response(struct relay_session *s, const char *challenge, char **out, size_t *len)
{
	char line[RELAY_LINE_MAX];
	ssize_t n;

	relay_io_reply(&s->io, "334 %s", challenge);
	if ((n = relay_io_getline(&s->io, line, sizeof line)) == RELAY_IO_DEAD) {
		s->quit = true;
		return -1;
	}
	if (n == RELAY_IO_TOOLONG || strcmp(line, "*") == 0) {
		explicit_bzero(line, sizeof line);
		relay_session_error(s, n == RELAY_IO_TOOLONG ?
		    "500 5.5.6 Authentication exchange line too long" :
		    "501 5.0.0 Authentication cancelled");
		return -1;
	}
	*out = base64_decode(line, len);
	explicit_bzero(line, sizeof line);
	if (*out == NULL) {
		relay_session_error(s, "501 5.5.2 Cannot decode response");
		return -1;
	}
	return 0;
}

/* The decoded PLAIN or LOGIN value of the initial response, or of a 334
 * round trip when there is none. */
static int
get_value(struct relay_session *s, const char *initial, const char *challenge, char **out,
    size_t *len)
{
	if (initial == NULL || *initial == '\0')
		return read_response(s, challenge, out, len);
	/* "=" is an empty initial response (RFC 4954), "" in base64. */
	if ((*out = base64_decode(strcmp(initial, "=") == 0 ? "" : initial, len)) == NULL) {
		relay_session_error(s, "501 5.5.2 Cannot decode response");
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
verify(struct relay_session *s, const char *user, size_t ulen, const char *pass, size_t plen)
{
	char *err = NULL;
	int rc = 0;

	if (cred_ok(user, ulen) && plen <= CRED_MAX && strlen(pass) == plen)
		rc = passwd_check(s->pw, user, pass, s->peer, &err);
	if (rc == 1) {
		s->user = xstrdup(user);
		log_info("relay: %s: user %s authenticated", s->peer, user);
		relay_io_reply(&s->io, "235 2.7.0 Authentication successful");
		return;
	}
	if (rc == -1) {
		log_warnx("relay: %s", err);
		free(err);
		relay_io_reply(&s->io, "454 4.7.0 Temporary authentication failure");
		return;
	}
	/* The relay process logs a burst of failures once (relay_penalty.c). */
	log_debug("relay: %s: authentication failed", s->peer);
	relay_io_reply(&s->io, "535 5.7.8 Authentication credentials invalid");
	if (++s->auth_fails >= RELAY_MAX_AUTH_FAILS) {
		relay_io_reply(&s->io, "421 4.7.0 Too many failed authentications");
		s->quit = true;
	}
}

static void
auth_plain(struct relay_session *s, const char *initial)
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
		relay_io_reply(&s->io, "535 5.7.8 Authentication credentials invalid");
	else
		verify(s, pl.authcid, pl.authcid_len, pl.passwd, pl.passwd_len);
	explicit_bzero(v, len);
	free(v);
}

static void
auth_login(struct relay_session *s, const char *initial)
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
relay_auth_cmd(struct relay_session *s, char *arg)
{
	char *mech = strsep(&arg, " ");

	if (s->helo[0] == '\0' || s->user != NULL || s->from != NULL) {
		relay_session_error(s, s->user ? "503 5.5.1 Already authenticated" :
		    "503 5.5.1 Send EHLO first, and AUTH before MAIL");
		return;
	}
	if (s->io.tls == NULL && !s->loopback) {
		relay_session_error(s,
		    "538 5.7.11 Encryption required for requested authentication mechanism");
		return;
	}
	/* Too many failures from this address lately: the password is not
	 * even looked at (relay_penalty.h). */
	if (s->x->auth_blocked) {
		relay_session_error(s, "454 4.7.0 Too many failed authentications from your "
		    "address, try again later");
		return;
	}
	if (strcasecmp(mech, "PLAIN") == 0)
		auth_plain(s, arg);
	else if (strcasecmp(mech, "LOGIN") == 0)
		auth_login(s, arg);
	else
		relay_session_error(s, "504 5.5.4 Unrecognized authentication type");
}

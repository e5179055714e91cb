#include "bridge/relay_smtp.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"
#include "bridge/relay_priv.h"
#include "lib/addr.h"
#include "lib/xmalloc.h"

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

const struct conf_account *
relay_sender_account(const struct conf *c, const char *user, const char *addr)
{
	if (user == NULL || *addr == '\0')
		return NULL;
	for (size_t i = 0; i < c->n_accounts; i++) {
		const struct conf_account *a = &c->accounts[i];

		if (a->local_user == NULL || strcmp(a->local_user, user) != 0)
			continue;
		for (size_t j = 0; j < a->n_addresses; j++)
			if (strcasecmp(a->addresses[j], addr) == 0)
				return a;
	}
	return NULL;
}

char *
relay_parse_path(const char *arg, const char *kw, const char **params)
{
	size_t kl = strlen(kw), len;
	const char *p, *end;

	if (strncasecmp(arg, kw, kl) != 0)
		return NULL;
	for (p = arg + kl; *p == ' '; p++)
		;
	if (*p != '<' || (end = strchr(p, '>')) == NULL)
		return NULL;
	len = end - p - 1;
	if (len > 0 && !addr_valid(p + 1, len))
		return NULL;
	if (end[1] != '\0' && end[1] != ' ')
		return NULL;
	for (end++; *end == ' '; end++)
		;
	*params = end;
	return xstrndup(p + 1, len);
}

void
sess_error(struct sess *s, const char *reply)
{
	rio_reply(&s->io, "%s", reply);
	if (++s->errors >= RELAY_MAX_ERRORS) {
		rio_reply(&s->io, "421 4.7.0 Too many errors, closing connection");
		s->quit = true;
	}
}

void
sess_reset_tx(struct sess *s)
{
	for (size_t i = 0; i < s->n_rcpts; i++)
		free(s->rcpts[i]);
	free(s->rcpts);
	free(s->from);
	s->rcpts = NULL;
	s->n_rcpts = 0;
	s->from = NULL;
	s->acct = NULL;
}

/* A HELO/EHLO argument: a domain or an address literal, printable. */
static bool
helo_ok(const char *h)
{
	size_t n = strlen(h);

	if (n == 0 || n >= 256)
		return false;
	for (; *h; h++)
		if ((unsigned char)*h <= 0x20 || (unsigned char)*h >= 0x7f)
			return false;
	return true;
}

static void
cmd_helo(struct sess *s, char *arg, bool esmtp)
{
	struct rio *io = &s->io;

	if (!helo_ok(arg)) {
		sess_error(s, "501 5.5.4 Syntax: EHLO hostname");
		return;
	}
	sess_reset_tx(s);
	strcpy(s->helo, arg);
	s->esmtp = esmtp;
	if (!esmtp) {
		rio_reply(io, "250 %s", s->x->hostname);
		return;
	}
	rio_reply(io, "250-%s", s->x->hostname);
	rio_reply(io, "250-PIPELINING");
	rio_reply(io, "250-SIZE %" PRIu64, s->x->c->relay.max_message_size);
	rio_reply(io, "250-8BITMIME");
	rio_reply(io, "250-ENHANCEDSTATUSCODES");
	if (s->x->cred != NULL && io->tls == NULL)
		rio_reply(io, "250-STARTTLS");
	if (io->tls != NULL || s->loopback)
		rio_reply(io, "250-AUTH PLAIN LOGIN");
	rio_reply(io, "250 HELP");
}

static void
cmd_ehlo(struct sess *s, char *arg)
{
	cmd_helo(s, arg, true);
}

static void
cmd_helo_only(struct sess *s, char *arg)
{
	cmd_helo(s, arg, false);
}

static void
cmd_starttls(struct sess *s, char *arg)
{
	char *err = NULL;

	if (*arg != '\0') {
		sess_error(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if (s->x->cred == NULL || s->io.tls != NULL) {
		sess_error(s, "502 5.5.1 STARTTLS not available");
		return;
	}
	/* Anything pipelined behind STARTTLS was sent in the clear and is
	 * thrown away by rio_starttls (CVE-2011-0411 and its kin). */
	if (rio_pending(&s->io))
		log_warnx("relay: %s: input pipelined after STARTTLS discarded", s->peer);
	rio_reply(&s->io, "220 2.0.0 Ready to start TLS");
	if (rio_starttls(&s->io, s->x->cred, &err) == -1) {
		log_info("relay: %s: %s", s->peer, err);
		free(err);
		s->quit = true;
		return;
	}
	/* RFC 3207 4.2: forget everything learnt before TLS. */
	sess_reset_tx(s);
	s->helo[0] = '\0';
	free(s->user);
	s->user = NULL;
}

/* MAIL FROM parameters: SIZE, BODY, AUTH (RFC 1870, 6152, 4954). Replies
 * and returns -1 on the first one refused. */
static int
mail_params(struct sess *s, const char *params)
{
	char *copy = xstrdup(params), *p = copy, *tok;
	const char *reply = NULL;

	while (reply == NULL && (tok = strsep(&p, " ")) != NULL) {
		char *end;

		if (*tok == '\0')
			continue;
		if (strncasecmp(tok, "SIZE=", 5) == 0) {
			errno = 0;
			unsigned long long n = strtoull(tok + 5, &end, 10);
			if (!isdigit((unsigned char)tok[5]) || *end != '\0' || errno)
				reply = "501 5.5.4 Bad SIZE parameter";
			else if (n > s->x->c->relay.max_message_size)
				reply = "552 5.3.4 Message size exceeds fixed maximum message size";
		} else if (strcasecmp(tok, "BODY=7BIT") == 0 ||
		    strcasecmp(tok, "BODY=8BITMIME") == 0 ||
		    strncasecmp(tok, "AUTH=", 5) == 0)
			continue;
		else
			reply = "555 5.5.4 Unsupported MAIL FROM parameter";
	}
	free(copy);
	if (reply == NULL)
		return 0;
	sess_error(s, reply);
	return -1;
}

static void
cmd_mail(struct sess *s, char *arg)
{
	const struct conf_account *a;
	const char *params;
	char *from;

	if (s->helo[0] == '\0') {
		sess_error(s, "503 5.5.1 Send EHLO first");
		return;
	}
	if (s->user == NULL) {
		sess_error(s, "530 5.7.0 Authentication required");
		return;
	}
	if (s->from != NULL) {
		sess_error(s, "503 5.5.1 Nested MAIL command");
		return;
	}
	if ((from = relay_parse_path(arg, "FROM:", &params)) == NULL) {
		sess_error(s, "501 5.1.7 Bad sender address syntax");
		return;
	}
	if (mail_params(s, params) == -1) {
		free(from);
		return;
	}
	if ((a = relay_sender_account(s->x->c, s->user, from)) == NULL) {
		log_warnx("relay: %s: user %s may not send as <%s>", s->peer, s->user, from);
		rio_reply(&s->io, "550 5.7.1 Sender address not allowed for this user");
	} else if (!a->has_smtp) {
		log_warnx("relay: account %s has no smtp {} block", a->name);
		rio_reply(&s->io, "550 5.3.5 No outgoing server configured for this sender");
	} else {
		s->acct = a;
		s->from = from;
		rio_reply(&s->io, "250 2.1.0 Ok");
		return;
	}
	free(from);
}

static void
cmd_rcpt(struct sess *s, char *arg)
{
	const char *params;
	char *to;

	if (s->from == NULL) {
		sess_error(s, "503 5.5.1 Need MAIL before RCPT");
		return;
	}
	if ((to = relay_parse_path(arg, "TO:", &params)) == NULL || *to == '\0') {
		free(to);
		sess_error(s, "501 5.1.3 Bad recipient address syntax");
		return;
	}
	if (*params != '\0') {
		free(to);
		sess_error(s, "555 5.5.4 Unsupported RCPT TO parameter");
		return;
	}
	for (size_t i = 0; i < s->n_rcpts; i++)
		if (strcmp(s->rcpts[i], to) == 0) {     /* once is enough */
			free(to);
			rio_reply(&s->io, "250 2.1.5 Ok");
			return;
		}
	if (s->n_rcpts >= s->x->c->relay.max_recipients) {
		free(to);
		rio_reply(&s->io, "452 4.5.3 Too many recipients");
		return;
	}
	s->rcpts = xreallocarray(s->rcpts, s->n_rcpts + 1, sizeof *s->rcpts);
	s->rcpts[s->n_rcpts++] = to;
	rio_reply(&s->io, "250 2.1.5 Ok");
}

static void
cmd_rset(struct sess *s, char *arg)
{
	(void)arg;
	sess_reset_tx(s);
	rio_reply(&s->io, "250 2.0.0 Ok");
}

static void
cmd_noop(struct sess *s, char *arg)
{
	(void)arg;
	rio_reply(&s->io, "250 2.0.0 Ok");
}

static void
cmd_quit(struct sess *s, char *arg)
{
	(void)arg;
	rio_reply(&s->io, "221 2.0.0 Bye");
	s->quit = true;
}

static const struct {
	const char *verb;
	void (*fn)(struct sess *, char *);
} cmds[] = {
	{ "EHLO", cmd_ehlo }, { "HELO", cmd_helo_only }, { "STARTTLS", cmd_starttls },
	{ "AUTH", relay_cmd_auth }, { "MAIL", cmd_mail }, { "RCPT", cmd_rcpt },
	{ "DATA", relay_cmd_data }, { "RSET", cmd_rset }, { "NOOP", cmd_noop },
	{ "QUIT", cmd_quit },
};

static void
one_command(struct sess *s)
{
	char line[RELAY_LINE_MAX], *arg;
	ssize_t n = rio_getline(&s->io, line, sizeof line);

	if (n == RIO_DEAD) {
		s->quit = true;
		return;
	}
	if (n == RIO_TOOLONG) {
		sess_error(s, "500 5.5.2 Line too long");
		return;
	}
	if (memchr(line, '\0', n) != NULL || memchr(line, '\r', n) != NULL) {
		sess_error(s, "500 5.5.2 Bad character in command");
		return;
	}
	while (n > 0 && line[n - 1] == ' ')
		line[--n] = '\0';
	arg = line + strcspn(line, " ");
	if (*arg == ' ')
		*arg++ = '\0';
	for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
		if (strcasecmp(line, cmds[i].verb) == 0) {
			cmds[i].fn(s, arg);
			return;
		}
	sess_error(s, "502 5.5.2 Command not recognized");
}

static void
peer_name(struct sess *s, const struct sockaddr *peer)
{
	const void *a = peer->sa_family == AF_INET6 ?
	    (const void *)&((const struct sockaddr_in6 *)peer)->sin6_addr :
	    (const void *)&((const struct sockaddr_in *)peer)->sin_addr;

	if (inet_ntop(peer->sa_family, a, s->peer, sizeof s->peer) == NULL)
		strcpy(s->peer, "unknown");
}

void
relay_session(const struct relay_ctx *x, int fd, bool implicit_tls,
    const struct sockaddr *peer)
{
	struct sess *s = xcalloc(1, sizeof *s);
	unsigned t = x->c->relay.timeout;
	time_t start = time(NULL);
	bool extended = false;
	char *err = NULL;

	s->x = x;
	rio_init(&s->io, fd);
	rio_timeout(&s->io, t);
	rio_deadline(RELAY_PREAUTH_TIMEOUTS * t);
	peer_name(s, peer);
	s->loopback = relay_auth_allowed(false, peer);
	s->pw = passwd_open(x->c->relay.passwd_file);
	log_debug("relay: connection from %s", s->peer);
	if (implicit_tls && rio_starttls(&s->io, x->cred, &err) == -1) {
		log_info("relay: %s: %s", s->peer, err);
		free(err);
		s->quit = true;
	} else
		rio_reply(&s->io, "220 %s ESMTP pop3bridge", x->hostname);
	while (!s->quit && !s->io.dead) {
		one_command(s);
		if (s->user != NULL && !extended) {
			/* Authenticated: the rest of the whole session's time. */
			time_t used = time(NULL) - start;

			extended = true;
			if (!rio_expired())
				rio_deadline(used < (time_t)(RELAY_SESSION_TIMEOUTS * t) ?
				    RELAY_SESSION_TIMEOUTS * t - (unsigned)used : 1);
		}
	}
	if (rio_expired()) {
		log_info("relay: %s: session time limit reached", s->peer);
		rio_expire(&s->io, "421 4.4.2 Session time limit reached, closing connection");
	}
	alarm(0);
	rio_close(&s->io);
	sess_reset_tx(s);
	passwd_free(s->pw);
	free(s->user);
	free(s);
}

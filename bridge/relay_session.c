#include "bridge/relay_session.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "bridge/relay_priv.h"
#include "lib/addr.h"
#include "lib/log.h"
#include "lib/xmalloc.h"

const struct conf_account *
relay_session_sender_account(const struct conf *c, const char *user, const char *addr)
{
	if (user == NULL || *addr == '\0')
		return NULL;
	return conf_account_by_address(c, addr, user);
}

char *
relay_session_parse_path(const char *arg, const char *kw, const char **params)
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
relay_session_error(struct relay_session *s, const char *reply)
{
	relay_io_reply(&s->io, "%s", reply);
	if (++s->errors >= RELAY_MAX_ERRORS) {
		relay_io_reply(&s->io, "421 4.7.0 Too many errors, closing connection");
		s->quit = true;
	}
}

void
relay_session_reset_tx(struct relay_session *s)
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
cmd_helo(struct relay_session *s, char *arg, bool esmtp)
{
	struct relay_io *io = &s->io;

	if (!helo_ok(arg)) {
		relay_session_error(s, "501 5.5.4 Syntax: EHLO hostname");
		return;
	}
	relay_session_reset_tx(s);
	strcpy(s->helo, arg);
	s->esmtp = esmtp;
	if (!esmtp) {
		relay_io_reply(io, "250 %s", s->x->hostname);
		return;
	}
	relay_io_reply(io, "250-%s", s->x->hostname);
	relay_io_reply(io, "250-PIPELINING");
	relay_io_reply(io, "250-SIZE %" PRIu64, s->x->c->relay.max_message_size);
	relay_io_reply(io, "250-8BITMIME");
	relay_io_reply(io, "250-ENHANCEDSTATUSCODES");
	if (s->x->cred != NULL && io->tls == NULL)
		relay_io_reply(io, "250-STARTTLS");
	if (io->tls != NULL || s->loopback)
		relay_io_reply(io, "250-AUTH PLAIN LOGIN");
	relay_io_reply(io, "250 HELP");
}

static void
cmd_ehlo(struct relay_session *s, char *arg)
{
	cmd_helo(s, arg, true);
}

static void
cmd_helo_only(struct relay_session *s, char *arg)
{
	cmd_helo(s, arg, false);
}

static void
cmd_starttls(struct relay_session *s, char *arg)
{
	char *err = NULL;

	if (*arg != '\0') {
		relay_session_error(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if (s->x->cred == NULL || s->io.tls != NULL) {
		relay_session_error(s, "502 5.5.1 STARTTLS not available");
		return;
	}
	/* Anything pipelined behind STARTTLS was sent in the clear and is
	 * thrown away by relay_io_starttls (CVE-2011-0411 and its kin). */
	if (relay_io_pending(&s->io))
		log_warnx("relay: %s: input pipelined after STARTTLS discarded", s->peer);
	relay_io_reply(&s->io, "220 2.0.0 Ready to start TLS");
	if (relay_io_starttls(&s->io, s->x->cred, &err) == -1) {
		log_info("relay: %s: %s", s->peer, err);
		free(err);
		s->quit = true;
		return;
	}
	/* RFC 3207 4.2: forget everything learnt before TLS. */
	relay_session_reset_tx(s);
	s->helo[0] = '\0';
	free(s->user);
	s->user = NULL;
}

/* MAIL FROM parameters: SIZE, BODY, AUTH (RFC 1870, 6152, 4954). Replies
 * and returns -1 on the first one refused. */
static int
mail_params(struct relay_session *s, const char *params)
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
	relay_session_error(s, reply);
	return -1;
}

static void
cmd_mail(struct relay_session *s, char *arg)
{
	const struct conf_account *a;
	const char *params;
	char *from;

	if (s->helo[0] == '\0') {
		relay_session_error(s, "503 5.5.1 Send EHLO first");
		return;
	}
	if (s->user == NULL) {
		relay_session_error(s, "530 5.7.0 Authentication required");
		return;
	}
	if (s->from != NULL) {
		relay_session_error(s, "503 5.5.1 Nested MAIL command");
		return;
	}
	if ((from = relay_session_parse_path(arg, "FROM:", &params)) == NULL) {
		relay_session_error(s, "501 5.1.7 Bad sender address syntax");
		return;
	}
	if (mail_params(s, params) == -1) {
		free(from);
		return;
	}
	if ((a = relay_session_sender_account(s->x->c, s->user, from)) == NULL) {
		log_warnx("relay: %s: user %s may not send as <%s>", s->peer, s->user, from);
		relay_io_reply(&s->io, "550 5.7.1 Sender address not allowed for this user");
	} else if (!a->has_smtp) {
		log_warnx("relay: account %s has no smtp {} block", a->name);
		relay_io_reply(&s->io, "550 5.3.5 No outgoing server configured for this sender");
	} else {
		s->acct = a;
		s->from = from;
		relay_io_reply(&s->io, "250 2.1.0 Ok");
		return;
	}
	free(from);
}

static void
cmd_rcpt(struct relay_session *s, char *arg)
{
	const char *params;
	char *to;

	if (s->from == NULL) {
		relay_session_error(s, "503 5.5.1 Need MAIL before RCPT");
		return;
	}
	if ((to = relay_session_parse_path(arg, "TO:", &params)) == NULL || *to == '\0') {
		free(to);
		relay_session_error(s, "501 5.1.3 Bad recipient address syntax");
		return;
	}
	if (*params != '\0') {
		free(to);
		relay_session_error(s, "555 5.5.4 Unsupported RCPT TO parameter");
		return;
	}
	for (size_t i = 0; i < s->n_rcpts; i++)
		if (strcmp(s->rcpts[i], to) == 0) {     /* once is enough */
			free(to);
			relay_io_reply(&s->io, "250 2.1.5 Ok");
			return;
		}
	if (s->n_rcpts >= s->x->c->relay.max_recipients) {
		free(to);
		relay_io_reply(&s->io, "452 4.5.3 Too many recipients");
		return;
	}
	s->rcpts = xreallocarray(s->rcpts, s->n_rcpts + 1, sizeof *s->rcpts);
	s->rcpts[s->n_rcpts++] = to;
	relay_io_reply(&s->io, "250 2.1.5 Ok");
}

static void
cmd_rset(struct relay_session *s, char *arg)
{
	(void)arg;
	relay_session_reset_tx(s);
	relay_io_reply(&s->io, "250 2.0.0 Ok");
}

static void
cmd_noop(struct relay_session *s, char *arg)
{
	(void)arg;
	relay_io_reply(&s->io, "250 2.0.0 Ok");
}

static void
cmd_quit(struct relay_session *s, char *arg)
{
	(void)arg;
	relay_io_reply(&s->io, "221 2.0.0 Bye");
	s->quit = true;
}

static const struct {
	const char *verb;
	void (*fn)(struct relay_session *, char *);
} cmds[] = {
	{ "EHLO", cmd_ehlo }, { "HELO", cmd_helo_only }, { "STARTTLS", cmd_starttls },
	{ "AUTH", relay_auth_cmd }, { "MAIL", cmd_mail }, { "RCPT", cmd_rcpt },
	{ "DATA", relay_msg_data }, { "RSET", cmd_rset }, { "NOOP", cmd_noop },
	{ "QUIT", cmd_quit },
};

static void
one_command(struct relay_session *s)
{
	char line[RELAY_LINE_MAX], *arg;
	ssize_t n = relay_io_getline(&s->io, line, sizeof line);

	if (n == RELAY_IO_DEAD) {
		s->quit = true;
		return;
	}
	if (n == RELAY_IO_TOOLONG) {
		relay_session_error(s, "500 5.5.2 Line too long");
		return;
	}
	if (memchr(line, '\0', n) != NULL || memchr(line, '\r', n) != NULL) {
		relay_session_error(s, "500 5.5.2 Bad character in command");
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
	relay_session_error(s, "502 5.5.2 Command not recognized");
}

static void
peer_name(struct relay_session *s, const struct sockaddr *peer)
{
	const void *a = peer->sa_family == AF_INET6 ?
	    (const void *)&((const struct sockaddr_in6 *)peer)->sin6_addr :
	    (const void *)&((const struct sockaddr_in *)peer)->sin_addr;

	if (inet_ntop(peer->sa_family, a, s->peer, sizeof s->peer) == NULL)
		strcpy(s->peer, "unknown");
}

unsigned
relay_session_run(const struct relay_session_ctx *x, int fd, bool implicit_tls,
    const struct sockaddr *peer)
{
	unsigned fails;
	struct relay_session *s = xcalloc(1, sizeof *s);
	unsigned t = x->c->relay.timeout;
	time_t start = time(NULL);
	bool extended = false;
	char *err = NULL;

	s->x = x;
	relay_io_init(&s->io, fd);
	relay_io_timeout(&s->io, t);
	relay_io_deadline(RELAY_PREAUTH_TIMEOUTS * t);
	peer_name(s, peer);
	s->loopback = relay_auth_allowed(false, peer);
	s->pw = passwd_open(x->c->relay.passwd_file);
	log_debug("relay: connection from %s", s->peer);
	if (implicit_tls && relay_io_starttls(&s->io, x->cred, &err) == -1) {
		log_info("relay: %s: %s", s->peer, err);
		free(err);
		s->quit = true;
	} else
		relay_io_reply(&s->io, "220 %s ESMTP pop3bridge", x->hostname);
	while (!s->quit && !s->io.dead) {
		one_command(s);
		if (s->user != NULL && !extended) {
			/* Authenticated: the rest of the whole session's time. */
			time_t used = time(NULL) - start;

			extended = true;
			if (!relay_io_expired())
				relay_io_deadline(used < (time_t)(RELAY_SESSION_TIMEOUTS * t) ?
				    RELAY_SESSION_TIMEOUTS * t - (unsigned)used : 1);
		}
	}
	if (relay_io_expired()) {
		log_info("relay: %s: session time limit reached", s->peer);
		relay_io_expire(&s->io,
		    "421 4.4.2 Session time limit reached, closing connection");
	}
	alarm(0);
	relay_io_close(&s->io);
	relay_session_reset_tx(s);
	passwd_free(s->pw);
	free(s->user);
	fails = s->auth_fails;
	free(s);
	return fails;
}

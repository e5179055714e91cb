#include "bridge/relay.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "bridge/relay_child.h"
#include "bridge/relay_session.h"
#include "lib/log.h"
#include "lib/proc.h"
#include "lib/xmalloc.h"
#include "store/outbox.h"
#include "store/state.h"

struct listener {
	int fd;
	bool tls;               /* implicit TLS (listen_tls) */
};

static volatile sig_atomic_t relay_stopping;

bool
relay_wanted(const struct conf *c)
{
	for (size_t i = 0; i < c->n_accounts; i++)
		if (c->accounts[i].n_addresses > 0)
			return true;
	return false;
}

/* Binds one resolved address; a port still held by a relay that is just
 * exiting (restart, reload) is retried for two seconds. */
static int
bind_addr(const struct addrinfo *ai)
{
	int fd, on = 1;

	if ((fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
	    ai->ai_protocol)) == -1)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
	if (ai->ai_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
	for (int tries = 0; ; tries++) {
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0)
			return fd;
		if (errno != EADDRINUSE || tries == 20)
			break;
		usleep(100 * 1000);
	}
	int saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

/* "HOST:PORT" or "[V6]:PORT" (checked by conf_check): every address the
 * host resolves to. */
static int
open_listener(const char *spec, bool tls, struct listener **ls, size_t *n)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
	    .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res, *ai;
	char *host = xstrdup(spec), *port = strrchr(host, ':'), *h = host;
	int rc, fd;

	*port++ = '\0';
	if (*h == '[') {
		h++;
		h[strlen(h) - 1] = '\0';
	}
	if ((rc = getaddrinfo(h, port, &hints, &res)) != 0) {
		log_warnx("relay: listen %s: %s", spec, gai_strerror(rc));
		free(host);
		return -1;
	}
	for (ai = res, rc = 0; ai != NULL && rc == 0; ai = ai->ai_next) {
		if ((fd = bind_addr(ai)) == -1) {
			log_warn("relay: listen %s", spec);
			rc = -1;
			break;
		}
		*ls = xreallocarray(*ls, *n + 1, sizeof **ls);
		(*ls)[(*n)++] = (struct listener){ fd, tls };
	}
	freeaddrinfo(res);
	free(host);
	return rc;
}

static void
close_listeners(struct listener *ls, size_t n)
{
	for (size_t i = 0; i < n; i++)
		close(ls[i].fd);
	free(ls);
}

static int
load_cred(const struct conf *c, gnutls_certificate_credentials_t *cred)
{
	int rc;

	*cred = NULL;
	if (c->relay.tls_cert == NULL)
		return 0;
	if ((rc = gnutls_certificate_allocate_credentials(cred)) == 0 &&
	    (rc = gnutls_certificate_set_x509_key_file(*cred, c->relay.tls_cert,
	    c->relay.tls_key, GNUTLS_X509_FMT_PEM)) == 0)
		return 0;
	log_warnx("relay: tls_cert %s / tls_key %s: %s", c->relay.tls_cert,
	    c->relay.tls_key, gnutls_strerror(rc));
	if (*cred != NULL)
		gnutls_certificate_free_credentials(*cred);
	*cred = NULL;
	return -1;
}

static void
on_stop(int sig)
{
	(void)sig;
	relay_stopping = 1;
}

static void
on_child(int sig)
{
	(void)sig;              /* only wakes poll() */
}

/* The relay process's signals: TERM/INT stop accepting; it dies with the
 * daemon (a SIGKILLed daemon leaves no relay holding the port), through
 * SIGTERM, so it stops as on any TERM; an orphan stops the same way. */
static void
relay_signals(pid_t parent)
{
	struct sigaction sa = { .sa_handler = on_child };

	if (!proc_child_init(parent, on_stop, SIGTERM))
		relay_stopping = 1;
	/* After proc_child_init() reset SIGCHLD; no session child exists yet,
	 * so none of their SIGCHLDs can be missed. */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGCHLD, &sa, NULL);
}

/* A session child: default signals (SIGTERM ends it at once: a message
 * not yet answered 250 is the client's to send again). */
static void
session_child(const struct relay_session_ctx *x, struct listener *ls, size_t n, size_t i,
    int fd, const struct sockaddr *peer)
{
	bool tls = ls[i].tls;

	for (size_t k = 0; k < n; k++)
		close(ls[k].fd);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	relay_session_run(x, fd, tls, peer);
	_exit(0);
}

static void
accept_one(const struct relay_session_ctx *x, struct listener *ls, size_t n, size_t i,
    unsigned *live)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	static const char busy[] = "421 4.7.0 Too many connections, try again later\r\n";
	pid_t pid;
	int fd;

	if ((fd = accept4(ls[i].fd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC)) == -1)
		return;
	if (*live >= x->c->relay.max_connections) {
		log_warnx("relay: connection limit (%u) reached", x->c->relay.max_connections);
		if (write(fd, busy, sizeof busy - 1) == -1)
			log_debug("relay: refused connection went away");
	} else if ((pid = fork()) == -1)
		log_warn("relay: fork");
	else if (pid == 0)
		session_child(x, ls, n, i, fd, (struct sockaddr *)&ss);
	else
		(*live)++;
	close(fd);
}

static void
reap_sessions(unsigned *live)
{
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (*live > 0)
			(*live)--;
		if (WIFSIGNALED(status) && WTERMSIG(status) != SIGTERM)
			log_warnx("relay: session %ld killed by signal %d", (long)pid,
			    WTERMSIG(status));
	}
}

/* The relay process: accepts until SIGTERM, then exits at once (sessions
 * under way carry on in their own processes). */
static void __attribute__((noreturn))
relay_main(const struct relay_session_ctx *x, struct listener *ls, size_t n)
{
	struct pollfd *pfd = xcalloc(n, sizeof *pfd);
	unsigned live = 0;

	for (size_t i = 0; i < n; i++)
		pfd[i] = (struct pollfd){ .fd = ls[i].fd, .events = POLLIN };
	while (!relay_stopping) {
		reap_sessions(&live);
		/* 1 s: a signal that came between the check and poll waits no longer. */
		if (poll(pfd, n, 1000) <= 0)
			continue;
		for (size_t i = 0; i < n && !relay_stopping; i++)
			if (pfd[i].revents & POLLIN)
				accept_one(x, ls, n, i, &live);
	}
	close_listeners(ls, n);
	free(pfd);
	_exit(0);
}

/* The relay process parses what anyone who can connect sends: once its
 * ports are bound and the certificate loaded, it forgets every POP3,
 * SMTP and store secret (it needs the accounts' addresses, the
 * passwd-file path and STATE_DIR, nothing else) and, when it runs as
 * root, takes the ids of STATE_DIR's owner, the user that must write the
 * queue. STATE_DIR owned by root leaves it root, with a warning. Every
 * capability is dropped either way. false: it must not serve. */
static bool
relay_privsep(const struct conf *c)
{
	struct stat sb;
	char *err = NULL;

	/* The child's own copy of the daemon's configuration. */
	conf_forget_secrets((struct conf *)c);
	if (stat(c->state_dir, &sb) == -1) {
		log_warn("relay: %s", c->state_dir);
		return false;
	}
	if (geteuid() == 0 && sb.st_uid == 0)
		log_warnx("relay: %s belongs to root, so the relay runs as root: chown it"
		    " to the user pop3bridge runs as", c->state_dir);
	/* What the relay writes (the queue) must be that owner's too. */
	if (geteuid() == 0 && sb.st_uid != 0 &&
	    (state_dir_give(c->state_dir, sb.st_uid, sb.st_gid, &err) == -1 ||
	    outbox_spool_give(c->state_dir, sb.st_uid, sb.st_gid, &err) == -1)) {
		log_warnx("relay: %s", err);
		free(err);
		return false;
	}
	if (proc_drop(geteuid() == 0 ? sb.st_uid : geteuid(),
	    geteuid() == 0 ? sb.st_gid : getegid(), &err) == -1) {
		log_warnx("relay: %s", err);
		free(err);
		return false;
	}
	return true;
}

int
relay_serve(const struct conf *c, pid_t parent, const int *fds, const bool *tls, size_t n)
{
	struct relay_session_ctx x = { .c = c };
	struct listener *ls = xcalloc(n ? n : 1, sizeof *ls);

	relay_signals(parent);
	for (size_t i = 0; i < n; i++)
		ls[i] = (struct listener){ fds[i], tls[i] };
	/* The key may be readable by root only: loaded before the drop. */
	if (load_cred(c, &x.cred) == -1 || !relay_privsep(c)) {
		close_listeners(ls, n);
		return EX_OSERR;
	}
	if (gethostname(x.hostname, sizeof x.hostname - 1) == -1 || !*x.hostname)
		strcpy(x.hostname, "localhost");
	relay_main(&x, ls, n);
}

int
relay_start(struct relay_proc *rp, const struct conf *c)
{
	struct relay_session_ctx x = { .c = c };
	struct listener *ls = NULL;
	size_t n = 0, i;
	pid_t parent = getpid(), pid;
	int rc = 0;

	rp->pid = 0;
	rp->started = time(NULL);
	if (!relay_wanted(c))
		return 0;
	for (i = 0; i < c->relay.n_listen && rc == 0; i++)
		rc = open_listener(c->relay.listen[i], false, &ls, &n);
	for (i = 0; i < c->relay.n_listen_tls && rc == 0; i++)
		rc = open_listener(c->relay.listen_tls[i], true, &ls, &n);
	if (rc == 0)
		rc = load_cred(c, &x.cred);
	if (rc == 0 && access(c->relay.passwd_file, R_OK) == -1)
		log_warn("relay: passwd_file %s (nobody can log in)", c->relay.passwd_file);
	if (gethostname(x.hostname, sizeof x.hostname - 1) == -1 || !*x.hostname)
		strcpy(x.hostname, "localhost");
	fflush(NULL);
	if (rc == 0 && (pid = fork()) == -1) {
		log_warn("relay: fork");
		rc = -1;
	} else if (rc == 0 && pid == 0) {
		int *fds = xcalloc(n, sizeof *fds);
		bool *tls = xcalloc(n, sizeof *tls);

		for (i = 0; i < n; i++) {
			fds[i] = ls[i].fd;
			tls[i] = ls[i].tls;
		}
		relay_child_exec(c, parent, fds, tls, n);
		_exit(EX_OSERR);
	} else if (rc == 0) {
		rp->pid = pid;
		log_info("relay: listening on %zu addresses", n);
	}
	close_listeners(ls, n);
	if (x.cred != NULL)
		gnutls_certificate_free_credentials(x.cred);
	return rc;
}

void
relay_check(struct relay_proc *rp, const struct conf *c)
{
	int status;
	pid_t r;

	if (rp->pid > 0) {
		r = waitpid(rp->pid, &status, WNOHANG);
		if (r == 0 || (r == -1 && errno != ECHILD))
			return;
		log_warnx("relay: the relay process exited; restarting it");
		rp->pid = 0;
	}
	if (relay_wanted(c) && time(NULL) - rp->started >= 10)
		relay_start(rp, c);
}

void
relay_stop(struct relay_proc *rp)
{
	if (rp->pid <= 0)
		return;
	kill(rp->pid, SIGTERM);
	while (waitpid(rp->pid, NULL, 0) == -1 && errno == EINTR)
		;
	rp->pid = 0;
}

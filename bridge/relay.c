#include "bridge/relay.h"

#include <arpa/inet.h>
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
#include "bridge/relay_commit.h"
#include "bridge/relay_penalty.h"
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

/* A live session child and the relay process's end of its group-commit
 * channel (bridge/relay_commit.h; -1 when it has none). */
struct session {
	pid_t pid;
	int fd;
	char addr[INET6_ADDRSTRLEN];	/* the client's, for its failed AUTHs */
};

/* The relay process's sessions: at most relay.max_connections. */
struct sessions {
	struct session *v;
	size_t n, cap;
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
    struct sessions *ss, int fd, int commit_fd, const struct sockaddr *peer, bool blocked)
{
	struct relay_session_ctx mine = *x;
	bool tls = ls[i].tls;
	unsigned fails;

	for (size_t k = 0; k < n; k++)
		close(ls[k].fd);
	for (size_t k = 0; k < ss->n; k++)
		if (ss->v[k].fd != -1)
			close(ss->v[k].fd);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	mine.commit_fd = commit_fd;
	mine.auth_blocked = blocked;
	/* The exit status tells the relay process how many AUTHs failed. */
	fails = relay_session_run(&mine, fd, tls, peer);
	_exit(fails < 100 ? (int)fails : 100);
}

static void
add_session(struct sessions *ss, pid_t pid, int fd, const char *addr)
{
	if (ss->n == ss->cap) {
		ss->cap = ss->cap ? 2 * ss->cap : 16;
		ss->v = xreallocarray(ss->v, ss->cap, sizeof *ss->v);
	}
	ss->v[ss->n] = (struct session){ pid, fd, "" };
	snprintf(ss->v[ss->n].addr, sizeof ss->v[ss->n].addr, "%s", addr);
	ss->n++;
}

/* The numeric address of a peer, "" if not IP. */
static void
peer_addr(const struct sockaddr_storage *sa, char *out, size_t cap)
{
	const void *a = sa->ss_family == AF_INET6 ?
	    (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr :
	    (const void *)&((const struct sockaddr_in *)sa)->sin_addr;

	if ((sa->ss_family != AF_INET && sa->ss_family != AF_INET6) ||
	    inet_ntop(sa->ss_family, a, out, cap) == NULL)
		out[0] = '\0';
}

static void
accept_one(const struct relay_session_ctx *x, struct listener *ls, size_t n, size_t i,
    struct sessions *ss, struct relay_penalty *pen)
{
	struct sockaddr_storage sa;
	socklen_t len = sizeof sa;
	char addr[INET6_ADDRSTRLEN];
	static const char busy[] = "421 4.7.0 Too many connections, try again later\r\n";
	int fd, sv[2] = { -1, -1 };
	pid_t pid;

	if ((fd = accept4(ls[i].fd, (struct sockaddr *)&sa, &len, SOCK_CLOEXEC)) == -1)
		return;
	if (ss->n >= x->c->relay.max_connections) {
		log_warnx("relay: connection limit (%u) reached", x->c->relay.max_connections);
		if (write(fd, busy, sizeof busy - 1) == -1)
			log_debug("relay: refused connection went away");
		close(fd);
		return;
	}
	peer_addr(&sa, addr, sizeof addr);
	/* Without a channel the session queues its messages itself. */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1)
		log_warn("relay: socketpair");
	if ((pid = fork()) == -1)
		log_warn("relay: fork");
	else if (pid == 0) {
		if (sv[0] != -1)
			close(sv[0]);
		session_child(x, ls, n, i, ss, fd, sv[1], (struct sockaddr *)&sa,
		    addr[0] != '\0' && relay_penalty_blocked(pen, addr, time(NULL)));
	} else {
		add_session(ss, pid, sv[0], addr);
		sv[0] = -1;
	}
	if (sv[0] != -1)
		close(sv[0]);
	if (sv[1] != -1)
		close(sv[1]);
	close(fd);
}

static void
drop_session(struct sessions *ss, size_t k)
{
	if (ss->v[k].fd != -1)
		close(ss->v[k].fd);
	ss->v[k] = ss->v[--ss->n];
}

static void
reap_sessions(struct sessions *ss, struct relay_penalty *pen)
{
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (size_t k = 0; k < ss->n; k++)
			if (ss->v[k].pid == pid) {
				if (WIFEXITED(status) && ss->v[k].addr[0] != '\0')
					relay_penalty_add(pen, ss->v[k].addr,
					    (unsigned)WEXITSTATUS(status), time(NULL));
				drop_session(ss, k);
				break;
			}
		if (WIFSIGNALED(status) && WTERMSIG(status) != SIGTERM)
			log_warnx("relay: session %ld killed by signal %d", (long)pid,
			    WTERMSIG(status));
	}
}

/* The requests of the sessions whose channel poll() found readable (pfd
 * follows the listeners' entries, in ss's order), served as one group. */
static void
serve_sessions(struct relay_commit *rc, struct sessions *ss, const struct pollfd *pfd)
{
	struct relay_commit_peer *ready = xcalloc(ss->n ? ss->n : 1, sizeof *ready);
	size_t n = 0, k, j;

	for (k = 0; k < ss->n; k++)
		if (ss->v[k].fd != -1 && pfd[k].revents != 0)
			ready[n++] = (struct relay_commit_peer){ .fd = ss->v[k].fd };
	if (n > 0)
		relay_commit_serve(rc, ready, n);
	/* A channel the session closed is not polled again (its process is
	 * reaped as usual). */
	for (j = 0; j < n; j++)
		for (k = 0; ready[j].hangup && k < ss->n; k++)
			if (ss->v[k].fd == ready[j].fd) {
				close(ss->v[k].fd);
				ss->v[k].fd = -1;
			}
	free(ready);
}

/* Waits for connections and for the sessions' requests (1 s at most: a
 * signal that came between the check and poll waits no longer). */
static void
relay_turn(const struct relay_session_ctx *x, struct listener *ls, size_t n,
    struct sessions *ss, struct relay_commit *rc, struct relay_penalty *pen, int timeout)
{
	struct pollfd *pfd = xcalloc(n + ss->n, sizeof *pfd);
	size_t i, k, m = 0;

	for (i = 0; i < n; i++)
		pfd[m++] = (struct pollfd){ .fd = ls[i].fd, .events = POLLIN };
	for (k = 0; k < ss->n; k++)
		pfd[m++] = (struct pollfd){ .fd = ss->v[k].fd, .events = POLLIN };
	if (poll(pfd, m, timeout) > 0) {
		/* Requests first: each is a client waiting for its 250. */
		serve_sessions(rc, ss, pfd + n);
		for (i = 0; i < n && !relay_stopping && timeout != 0; i++)
			if (pfd[i].revents & POLLIN)
				accept_one(x, ls, n, i, ss, pen);
	}
	free(pfd);
}

/* The relay process: accepts and serves the sessions' requests until
 * SIGTERM, answers what is waiting once more, then exits (sessions under
 * way carry on in their own processes and queue their messages
 * themselves). */
static void __attribute__((noreturn))
relay_main(const struct relay_session_ctx *x, struct listener *ls, size_t n)
{
	struct relay_commit *rc = relay_commit_new(x->c);
	struct relay_penalty *pen = relay_penalty_new();
	struct sessions ss = { 0 };

	while (!relay_stopping) {
		reap_sessions(&ss, pen);
		relay_turn(x, ls, n, &ss, rc, pen, 1000);
	}
	relay_turn(x, ls, n, &ss, rc, pen, 0);
	close_listeners(ls, n);
	while (ss.n > 0)
		drop_session(&ss, ss.n - 1);
	free(ss.v);
	relay_commit_free(rc);
	relay_penalty_free(pen);
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
	struct relay_session_ctx x = { .c = c, .commit_fd = -1 };
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

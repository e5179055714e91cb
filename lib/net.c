/* Connections: see net.h. A name is resolved in a child process because
 * getaddrinfo() has no timeout (a dead DNS server, a hanging NSS module)
 * and cannot be cancelled: a child can be killed, leaving no thread and
 * no request behind, so the long-lived queue runner is as safe as a pass.
 * getaddrinfo_a() was the alternative: it leaves its thread running past
 * the deadline, and threads would complicate the signal model of the
 * passes (held TERM/INT, the SIGALRM slices of lib/dlstream.c). */
#include "lib/net.h"

#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "lib/deadline.h"
#include "lib/xmalloc.h"

/* Addresses tried per name: enough for dual-stack round-robin names. */
#define NET_ADDRS_MAX	16

/* One address as the resolver child sends it over its pipe. */
struct net_addr {
	int family, socktype, protocol;
	socklen_t len;
	struct sockaddr_storage addr;
};

/* What the resolver child sends first: getaddrinfo()'s result, its errno
 * (for EAI_SYSTEM) and how many addresses follow. */
struct net_head {
	int gai, saved_errno, n;
};

/* The resolution: every address, or why there is none. */
struct net_res {
	struct net_addr a[NET_ADDRS_MAX];
	int n;
};

static void
hints_for(struct addrinfo *hints, int flags)
{
	memset(hints, 0, sizeof *hints);
	hints->ai_family = AF_UNSPEC;
	hints->ai_socktype = SOCK_STREAM;
	hints->ai_flags = flags;
}

/* Copies getaddrinfo()'s list into res. */
static void
res_take(struct net_res *res, const struct addrinfo *ai)
{
	res->n = 0;
	for (; ai != NULL && res->n < NET_ADDRS_MAX; ai = ai->ai_next) {
		struct net_addr *a = &res->a[res->n];

		if (ai->ai_addrlen > sizeof a->addr)
			continue;
		memset(a, 0, sizeof *a);
		a->family = ai->ai_family;
		a->socktype = ai->ai_socktype;
		a->protocol = ai->ai_protocol;
		a->len = ai->ai_addrlen;
		memcpy(&a->addr, ai->ai_addr, ai->ai_addrlen);
		res->n++;
	}
}

/* The resolver child: getaddrinfo(), the answer down the pipe, exit. Its
 * parent kills it when the deadline passes; it dies with the parent too. */
static void __attribute__((noreturn))
resolver(const char *host, const char *port, int wfd)
{
	struct addrinfo hints, *ai = NULL;
	struct net_res res = { .n = 0 };
	struct net_head head;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	hints_for(&hints, 0);
	head.gai = getaddrinfo(host, port, &hints, &ai);
	head.saved_errno = errno;
	if (head.gai == 0) {
		res_take(&res, ai);
		freeaddrinfo(ai);
	}
	head.n = res.n;
	if (write(wfd, &head, sizeof head) == (ssize_t)sizeof head && res.n > 0)
		(void)!write(wfd, res.a, (size_t)res.n * sizeof res.a[0]);
	_exit(0);
}

/* Reads the child's whole answer (until end of file) into buf before d. */
static int
read_answer(int fd, const struct deadline *d, unsigned char *buf, size_t cap, size_t *len,
    enum deadline_end *end)
{
	short rev;
	ssize_t n;
	int r;

	*len = 0;
	for (;;) {
		if ((r = deadline_poll(fd, POLLIN, d, &rev, end)) <= 0)
			return -1;
		n = read(fd, buf + *len, cap - *len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? 0 : -1;
		*len += (size_t)n;
		if (*len == cap)
			return 0;
	}
}

/* Resolves host in a child process within timeout seconds. */
static int
resolve_child(const char *host, const char *port, unsigned timeout, struct net_res *res,
    char **err)
{
	unsigned char buf[sizeof(struct net_head) + sizeof res->a];
	char why[DEADLINE_TEXT_MAX];
	enum deadline_end end = DEADLINE_NONE;
	struct net_head head;
	struct deadline d;
	size_t len = 0;
	int fds[2], r;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) == -1) {
		*err = xasprintf("cannot resolve %s: pipe: %s", host, strerror(errno));
		return -1;
	}
	if ((pid = fork()) == -1) {
		*err = xasprintf("cannot resolve %s: fork: %s", host, strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0) {
		close(fds[0]);
		resolver(host, port, fds[1]);
	}
	close(fds[1]);
	deadline_in_ms(&d, (uint64_t)timeout * 1000);
	r = read_answer(fds[0], &d, buf, sizeof buf, &len, &end);
	close(fds[0]);
	kill(pid, SIGKILL);	/* done, or past its deadline */
	while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
		;
	if (r == -1 && end != DEADLINE_NONE) {
		*err = xasprintf("cannot resolve %s: %s", host,
		    deadline_text(end, timeout, why, sizeof why));
		return -1;
	}
	if (r == -1 || len < sizeof head) {
		*err = xasprintf("cannot resolve %s: the resolver process failed", host);
		return -1;
	}
	memcpy(&head, buf, sizeof head);
	if (head.gai != 0) {
		*err = xasprintf("cannot resolve %s: %s", host, head.gai == EAI_SYSTEM ?
		    strerror(head.saved_errno) : gai_strerror(head.gai));
		return -1;
	}
	if (head.n < 1 || head.n > NET_ADDRS_MAX ||
	    len != sizeof head + (size_t)head.n * sizeof res->a[0]) {
		*err = xasprintf("cannot resolve %s: no usable address", host);
		return -1;
	}
	memcpy(res->a, buf + sizeof head, (size_t)head.n * sizeof res->a[0]);
	res->n = head.n;
	return 0;
}

bool
net_localhost_name(const char *host)
{
	size_t n = host != NULL ? strlen(host) : 0;

	if (n > 0 && host[n - 1] == '.')
		n--;		/* the root: "localhost." is the same name */
	if (n < 9 || strncasecmp(host + n - 9, "localhost", 9) != 0)
		return false;
	/* "localhost" itself, or a name under it ("pop.localhost"); not
	 * "mylocalhost", which is an ordinary name. */
	return n == 9 || (n > 10 && host[n - 10] == '.');
}

/* The loopback addresses, as getaddrinfo() gives them for no name at all
 * (node NULL, no AI_PASSIVE): ::1 and 127.0.0.1 in its own order (RFC
 * 6724's policy, /etc/gai.conf), found without NSS, DNS or any file that
 * could hang -- so in this process, with no child. A stop or the pass
 * deadline already past still ends the resolution as it would the
 * child's. */
static int
resolve_loopback(const char *host, const char *port, unsigned timeout, struct net_res *res,
    char **err)
{
	char why[DEADLINE_TEXT_MAX];
	struct addrinfo hints, *ai = NULL;
	enum deadline_end end;
	struct deadline d;
	int r;

	deadline_in_ms(&d, (uint64_t)timeout * 1000);
	if ((end = deadline_check(&d)) != DEADLINE_NONE) {
		*err = xasprintf("cannot resolve %s: %s", host,
		    deadline_text(end, timeout, why, sizeof why));
		return -1;
	}
	hints_for(&hints, 0);
	if ((r = getaddrinfo(NULL, port, &hints, &ai)) != 0) {
		*err = xasprintf("cannot resolve %s: %s", host, r == EAI_SYSTEM ?
		    strerror(errno) : gai_strerror(r));
		return -1;
	}
	res_take(res, ai);
	freeaddrinfo(ai);
	if (res->n == 0) {
		*err = xasprintf("cannot resolve %s: no usable address", host);
		return -1;
	}
	return 0;
}

/* An IP literal needs no resolver, nor do the names of RFC 6761 section
 * 6.3 ("localhost" and the names under it: loopback, always); anything
 * else goes to the child. */
static int
resolve(const char *host, const char *port, unsigned timeout, struct net_res *res,
    char **err)
{
	struct addrinfo hints, *ai = NULL;

	hints_for(&hints, AI_NUMERICHOST);
	if (getaddrinfo(host, port, &hints, &ai) == 0) {
		res_take(res, ai);
		freeaddrinfo(ai);
		return 0;
	}
	if (net_localhost_name(host))
		return resolve_loopback(host, port, timeout, res, err);
	return resolve_child(host, port, timeout, res, err);
}

/* Connects a non-blocking socket to one address before the deadline;
 * returns it, or -1 with the reason in *saved (or *end for a limit). */
static int
connect_one(const struct net_addr *a, const struct deadline *d, int *saved,
    enum deadline_end *end)
{
	socklen_t len = sizeof *saved;
	short rev;
	int fd, r;

	fd = socket(a->family, a->socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->protocol);
	if (fd == -1) {
		*saved = errno;
		return -1;
	}
	if (connect(fd, (const struct sockaddr *)&a->addr, a->len) == 0)
		return fd;
	if (errno != EINPROGRESS)
		goto fail;
	if ((r = deadline_poll(fd, POLLOUT, d, &rev, end)) == 0)
		errno = ETIMEDOUT;
	if (r <= 0)
		goto fail;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, saved, &len) == -1 || *saved != 0) {
		errno = *saved != 0 ? *saved : errno;
		goto fail;
	}
	return fd;
fail:
	*saved = errno;
	close(fd);
	return -1;
}

int
net_connect(const char *host, unsigned port, unsigned timeout, int *fdp, char **err)
{
	char portstr[12], why[DEADLINE_TEXT_MAX];
	enum deadline_end end = DEADLINE_NONE;
	struct net_res res;
	struct deadline d;
	int fd = -1, saved = ETIMEDOUT;

	snprintf(portstr, sizeof portstr, "%u", port);
	if (resolve(host, portstr, timeout, &res, err) == -1)
		return -1;
	deadline_in_ms(&d, (uint64_t)timeout * 1000);
	for (int i = 0; i < res.n && fd == -1 && end == DEADLINE_NONE; i++)
		fd = connect_one(&res.a[i], &d, &saved, &end);
	if (fd == -1) {
		*err = xasprintf("connect: %s", end != DEADLINE_NONE ?
		    deadline_text(end, timeout, why, sizeof why) : strerror(saved));
		return -1;
	}
	*fdp = fd;
	return 0;
}

char *
net_where(const char *host, unsigned port)
{
	if (host == NULL)
		host = "(no host)";
	return strchr(host, ':') != NULL ? xasprintf("[%s]:%u", host, port) :
	    xasprintf("%s:%u", host, port);
}

#include "lib/net.h"

#include <sys/socket.h>
#include <netinet/in.h>

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/xmalloc.h"

/* Connects a non-blocking socket to one address before the deadline;
 * returns it, or -1 with the reason in *saved. */
static int
connect_one(const struct addrinfo *ai, const struct timespec *deadline, int *saved)
{
	struct pollfd pfd;
	struct timespec now;
	socklen_t len = sizeof *saved;
	long ms;
	int fd, r;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    ai->ai_protocol);
	if (fd == -1) {
		*saved = errno;
		return -1;
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return fd;
	if (errno != EINPROGRESS)
		goto fail;
	do {
		clock_gettime(CLOCK_MONOTONIC, &now);
		ms = (deadline->tv_sec - now.tv_sec) * 1000L +
		    (deadline->tv_nsec - now.tv_nsec) / 1000000L;
		pfd.fd = fd;
		pfd.events = POLLOUT;
		r = ms > 0 ? poll(&pfd, 1, (int)ms) : 0;
	} while (r == -1 && errno == EINTR);
	if (r == 0)
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
	struct addrinfo hints, *res, *ai;
	struct timespec deadline;
	char portstr[12];
	int e, fd = -1, saved = ETIMEDOUT;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(portstr, sizeof portstr, "%u", port);
	if ((e = getaddrinfo(host, portstr, &hints, &res)) != 0) {
		*err = xasprintf("cannot resolve %s: %s", host, gai_strerror(e));
		return -1;
	}
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += timeout;
	for (ai = res; ai != NULL && fd == -1; ai = ai->ai_next)
		fd = connect_one(ai, &deadline, &saved);
	freeaddrinfo(res);
	if (fd == -1) {
		*err = xasprintf("connect: %s", strerror(saved));
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

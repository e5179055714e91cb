#include "bridge/notify.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "lib/xmalloc.h"

void
notify_send(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	socklen_t len;
	int fd;

	if (path == NULL || (path[0] != '/' && path[0] != '@') ||
	    strlen(path) >= sizeof sun.sun_path)
		return;
	strcpy(sun.sun_path, path);
	if (path[0] == '@')
		sun.sun_path[0] = '\0';
	len = offsetof(struct sockaddr_un, sun_path) + strlen(path);
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return;
	sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&sun, len);
	close(fd);
}

void
notify_status(const char *fmt, ...)
{
	static char *last;
	char *text, *msg;
	va_list ap;

	va_start(ap, fmt);
	text = xvasprintf(fmt, ap);
	va_end(ap);
	if (last != NULL && strcmp(last, text) == 0) {
		free(text);
		return;
	}
	msg = xasprintf("STATUS=%s", text);
	notify_send(msg);
	free(msg);
	free(last);
	last = text;
}

time_t
notify_watchdog_interval(void)
{
	const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	long long us;

	if (usec == NULL || (pid != NULL && strtol(pid, NULL, 10) != (long)getpid()))
		return 0;
	if ((us = strtoll(usec, NULL, 10)) <= 0)
		return 0;
	return us / 2000000 > 0 ? (time_t)(us / 2000000) : 1;
}

void
notify_watchdog(time_t interval)
{
	static struct timespec last;
	struct timespec now;
	long long ms;

	if (interval <= 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (long long)(now.tv_sec - last.tv_sec) * 1000 + (now.tv_nsec - last.tv_nsec) / 1000000;
	/* The loop wakes about every interval: a wake-up a little early must
	 * not skip a ping (two intervals would then pass without one). */
	if (last.tv_sec != 0 && ms < (long long)interval * 750)
		return;
	last = now;
	notify_send("WATCHDOG=1");
}

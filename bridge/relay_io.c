#include "bridge/relay_io.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "lib/xmalloc.h"

/* Set by SIGALRM when the session's deadline has passed. */
static volatile sig_atomic_t expired;

static void
on_alarm(int sig)
{
	(void)sig;
	expired = 1;
}

void
relay_io_deadline(unsigned secs)
{
	/* No SA_RESTART: a read or write under way returns EINTR. */
	struct sigaction sa = { .sa_handler = on_alarm };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	alarm(secs > 0 ? secs : 1);
}

bool
relay_io_expired(void)
{
	return expired != 0;
}

void
relay_io_init(struct relay_io *r, int fd)
{
	memset(r, 0, sizeof *r);
	r->fd = fd;
}

void
relay_io_timeout(struct relay_io *r, unsigned secs)
{
	struct timeval tv = { .tv_sec = secs };

	setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(r->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (r->tls != NULL)
		gnutls_handshake_set_timeout(r->tls, secs * 1000);
}

static ssize_t
raw_write(struct relay_io *r, const char *p, size_t n)
{
	ssize_t k;

	if (expired) {
		r->write_cut = true;
		return -1;
	}
	if (r->tls == NULL) {
		do
			k = write(r->fd, p, n);
		while (k == -1 && errno == EINTR && !expired);
	} else {
		do
			k = gnutls_record_send(r->tls, p, n);
		while (k == GNUTLS_E_INTERRUPTED && !expired);
		k = k < 0 ? -1 : k;
	}
	if (k == -1 && expired)
		r->write_cut = true;
	return k;
}

int
relay_io_flush(struct relay_io *r)
{
	size_t done = 0;

	while (!r->dead && done < r->out_len) {
		ssize_t k = raw_write(r, r->out + done, r->out_len - done);

		if (k <= 0)
			r->dead = true;
		else
			done += k;
	}
	r->out_len = 0;
	return r->dead ? -1 : 0;
}

void
relay_io_reply(struct relay_io *r, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof line - 3)
		n = sizeof line - 3;
	memcpy(line + n, "\r\n", 2);
	n += 2;
	if (r->out_len + n > sizeof r->out)
		relay_io_flush(r);
	memcpy(r->out + r->out_len, line, n);
	r->out_len += n;
}

static ssize_t
raw_read(struct relay_io *r, char *p, size_t n)
{
	ssize_t k;

	if (expired)
		return -1;
	if (r->tls == NULL) {
		do
			k = read(r->fd, p, n);
		while (k == -1 && errno == EINTR && !expired);
		return k;
	}
	do
		k = gnutls_record_recv(r->tls, p, n);
	while (k == GNUTLS_E_INTERRUPTED && !expired);
	return k < 0 ? -1 : k;
}

size_t
relay_io_fill(struct relay_io *r)
{
	ssize_t k;

	if (r->in_off < r->in_len)
		return r->in_len - r->in_off;
	if (r->dead || relay_io_flush(r) == -1)
		return 0;
	r->in_off = r->in_len = 0;
	if ((k = raw_read(r, r->in, sizeof r->in)) <= 0) {
		r->dead = true;
		return 0;
	}
	r->in_len = k;
	return k;
}

ssize_t
relay_io_getline(struct relay_io *r, char *buf, size_t max)
{
	size_t len = 0;
	bool toolong = false;

	for (;;) {
		size_t avail = relay_io_fill(r), take;
		char *start = r->in + r->in_off, *lf;

		if (avail == 0)
			return RELAY_IO_DEAD;
		lf = memchr(start, '\n', avail);
		take = lf ? (size_t)(lf - start) + 1 : avail;
		if (!toolong && len + take <= max) {
			memcpy(buf + len, start, take);
			len += take;
		} else
			toolong = true;
		r->in_off += take;
		if (lf == NULL)
			continue;
		if (toolong)
			return RELAY_IO_TOOLONG;
		len--;                  /* the LF; then an optional CR */
		if (len > 0 && buf[len - 1] == '\r')
			len--;
		buf[len] = '\0';
		return len;
	}
}

bool
relay_io_pending(const struct relay_io *r)
{
	return r->in_off < r->in_len ||
	    (r->tls != NULL && gnutls_record_check_pending(r->tls) > 0);
}

int
relay_io_starttls(struct relay_io *r, gnutls_certificate_credentials_t cred, char **err)
{
	int rc;

	r->in_off = r->in_len = 0;
	if (relay_io_flush(r) == -1) {
		*err = xstrdup("connection lost before the TLS handshake");
		return -1;
	}
	if ((rc = gnutls_init(&r->tls, GNUTLS_SERVER)) != 0 ||
	    (rc = gnutls_set_default_priority(r->tls)) != 0 ||
	    (rc = gnutls_credentials_set(r->tls, GNUTLS_CRD_CERTIFICATE, cred)) != 0)
		goto fail;
	gnutls_certificate_server_set_request(r->tls, GNUTLS_CERT_IGNORE);
	gnutls_transport_set_int(r->tls, r->fd);
	gnutls_handshake_set_timeout(r->tls, 60 * 1000);
	do
		rc = gnutls_handshake(r->tls);
	while (rc < 0 && !gnutls_error_is_fatal(rc) && !expired);
	if (rc == 0)
		return 0;
fail:
	*err = xasprintf("TLS handshake: %s", gnutls_strerror(rc));
	r->dead = true;
	return -1;
}

void
relay_io_expire(struct relay_io *r, const char *reply)
{
	/* Mid-write, the stream (TLS records, a reply) is cut: say nothing. */
	if (r->fd == -1 || r->write_cut)
		return;
	expired = 0;
	r->dead = false;
	r->in_off = r->in_len = 0;
	r->out_len = 0;
	relay_io_timeout(r, 5);
	relay_io_deadline(10);
	relay_io_reply(r, "%s", reply);
	relay_io_flush(r);
	r->dead = true;
}

void
relay_io_close(struct relay_io *r)
{
	if (r->tls != NULL) {
		if (!r->dead) {
			relay_io_flush(r);
			gnutls_bye(r->tls, GNUTLS_SHUT_WR);
		}
		gnutls_deinit(r->tls);
		r->tls = NULL;
	} else if (!r->dead)
		relay_io_flush(r);
	if (r->fd != -1)
		close(r->fd);
	r->fd = -1;
}

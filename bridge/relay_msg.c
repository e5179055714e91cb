/* The relay's DATA command: the message streams into an anonymous spool
 * file (outbox_spool_file; CRLF, a Received: header on top; nothing in
 * memory grows with it), then the relay process's group commit (or
 * outbox_enqueue()) makes it durable and only then the client gets its
 * 250. A bare CR/LF or an oversized message is read to its end and
 * refused as a whole, so the client stays in sync. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bridge/relay_commit.h"
#include "bridge/relay_data.h"
#include "bridge/relay_priv.h"
#include "lib/io.h"
#include "lib/log.h"
#include "lib/xmalloc.h"
#include "store/outbox.h"

enum outcome { MSG_OK, MSG_BARE_EOL, MSG_TOO_BIG, MSG_IO_ERROR, MSG_LOST };

/* RFC 5321 4.4, with the RFC 3848 protocol name (ESMTPSA: TLS and AUTH). */
static int
write_received(struct relay_session *s, int fd)
{
	char date[64], *h;
	time_t now = time(NULL);
	struct tm tm;
	int rc;

	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", localtime_r(&now, &tm));
	h = xasprintf("Received: from %s ([%s])\r\n\tby %s (pop3bridge) with %s%s;\r\n\t%s\r\n",
	    s->helo, s->peer, s->x->hostname, s->esmtp ? "ESMTP" : "SMTP",
	    s->io.tls != NULL ? "SA" : "A", date);
	rc = io_write_all(fd, h, strlen(h));
	free(h);
	return rc;
}

/* Reads the data up to CRLF.CRLF into fd. */
static enum outcome
receive(struct relay_session *s, int fd, uint64_t *size)
{
	struct relay_data d;
	char out[RELAY_IO_INBUF + 1];
	bool io_error = false;

	relay_data_init(&d);
	*size = 0;
	while (!d.done) {
		size_t avail = relay_io_fill(&s->io), n;

		if (avail == 0)
			return MSG_LOST;
		s->io.in_off += relay_data_decode(&d, s->io.in + s->io.in_off, avail, out, &n);
		*size += n;
		if (*size <= s->x->c->relay.max_message_size && !io_error &&
		    io_write_all(fd, out, n) == -1) {
			log_warn("relay: spool");
			io_error = true;
		}
	}
	if (d.bare_eol)
		return MSG_BARE_EOL;
	if (*size > s->x->c->relay.max_message_size)
		return MSG_TOO_BIG;
	return io_error ? MSG_IO_ERROR : MSG_OK;
}

/* Queues the message: through the relay process's group commit, or,
 * when that cannot take it, here (relay_commit_submit decides). */
static int
enqueue(struct relay_session *s, int fd, int64_t *id)
{
	char *err = NULL;

	if (relay_commit_submit(s->x->c, s->x->commit_fd, fd, s->acct->name, s->user,
	    s->from, s->rcpts, s->n_rcpts, id, &err) == 0)
		return 0;
	log_warnx("relay: %s: cannot queue: %s", s->acct->name, err);
	free(err);
	return -1;
}

static void
finish(struct relay_session *s, enum outcome o, int fd, uint64_t size)
{
	int64_t id;

	switch (o) {
	case MSG_BARE_EOL:
		log_warnx("relay: %s: message refused: bare CR or LF in DATA", s->peer);
		relay_io_reply(&s->io,
		    "550 5.6.0 Bare CR or LF in message: lines must end in CRLF");
		break;
	case MSG_TOO_BIG:
		relay_io_reply(&s->io,
		    "552 5.3.4 Message size exceeds fixed maximum message size");
		break;
	case MSG_IO_ERROR:
		relay_io_reply(&s->io, "452 4.3.1 Insufficient system storage");
		break;
	case MSG_OK:
		if (enqueue(s, fd, &id) == -1) {
			relay_io_reply(&s->io,
			    "451 4.3.0 Cannot queue the message, try again later");
			break;
		}
		log_info("relay: %s: queued %" PRId64 " from <%s> by %s for %zu recipients, "
		    "%" PRIu64 " bytes", s->acct->name, id, s->from, s->user, s->n_rcpts, size);
		relay_io_reply(&s->io, "250 2.0.0 Ok: queued as %" PRId64, id);
		break;
	case MSG_LOST:
		s->quit = true;
		break;
	}
}

void
relay_msg_data(struct relay_session *s, char *arg)
{
	char *err = NULL;
	enum outcome o;
	uint64_t size;
	int fd;

	if (*arg != '\0') {
		relay_session_error(s, "501 5.5.4 Syntax: DATA");
		return;
	}
	if (s->from == NULL || s->n_rcpts == 0) {
		relay_session_error(s, s->from ? "554 5.5.1 No valid recipients" :
		    "503 5.5.1 Need MAIL and RCPT before DATA");
		return;
	}
	if ((fd = outbox_spool_file(s->x->c->state_dir, &err)) == -1 ||
	    write_received(s, fd) == -1) {
		if (fd == -1)
			log_warnx("relay: %s", err);
		else
			log_warn("relay: spool");
		free(err);
		relay_io_reply(&s->io, "451 4.3.0 Cannot spool the message, try again later");
		goto out;
	}
	relay_io_reply(&s->io, "354 End data with <CR><LF>.<CR><LF>");
	relay_io_timeout(&s->io, 2 * s->x->c->relay.timeout);
	o = receive(s, fd, &size);
	relay_io_timeout(&s->io, s->x->c->relay.timeout);
	finish(s, o, fd, size);
out:
	if (fd != -1)
		close(fd);	/* outbox_enqueue linked it under its own name */
	relay_session_reset_tx(s);
}

/* `pop3bridge sendmail` and `pop3bridge queue list|flush|drop ID`. */
#include "bridge/queue_cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <libetpan/libetpan.h>

#include "lib/addr.h"
#include "lib/io.h"
#include "lib/log.h"
#include "bridge/queue.h"
#include "lib/xmalloc.h"
#include "store/outbox.h"

#define SENDMAIL_HEADER_MAX	(1024 * 1024)
#define SENDMAIL_MESSAGE_MAX	((uint64_t)100 * 1024 * 1024)

struct sm_opts {
	bool t, ignore_dots;
	char *from;             /* -f, borrowed */
	char **rcpts;           /* owned strings */
	size_t n_rcpts;
};

struct strbuf {
	char *s;
	size_t len, cap;
};

static void
sb_add(struct strbuf *b, const char *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->s = xreallocarray(b->s, b->cap, 1);
	}
	memcpy(b->s + b->len, p, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static int
open_state(const struct conf *c, struct state **st)
{
	char *err = NULL;
	int r = state_open_dir(c->state_dir, true, st, &err);

	if (r == -1) {
		log_warnx("%s", err);
		free(err);
	}
	return r;
}

/*
 * sendmail: options and addresses.
 */

static void
add_rcpt(struct sm_opts *o, const char *addr)
{
	o->rcpts = xreallocarray(o->rcpts, o->n_rcpts + 1, sizeof *o->rcpts);
	o->rcpts[o->n_rcpts++] = xstrdup(addr);
}

static int
parse_opts(int argc, char **argv, struct sm_opts *o)
{
	int i;

	for (i = 0; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--") == 0) {
			i++;
			break;
		} else if (strcmp(a, "-t") == 0)
			o->t = true;
		else if (strcmp(a, "-i") == 0 || strcmp(a, "-oi") == 0)
			o->ignore_dots = true;
		else if (strcmp(a, "-f") == 0 && i + 1 < argc)
			o->from = argv[++i];
		else if (strncmp(a, "-f", 2) == 0 && a[2] != '\0')
			o->from = (char *)a + 2;
		else {
			log_warnx("sendmail: unsupported option %s", a);
			return -1;
		}
	}
	for (; i < argc; i++)
		add_rcpt(o, argv[i]);
	return 0;
}

static void
add_mailbox_list(struct sm_opts *o, struct mailimf_mailbox_list *l)
{
	clistiter *it;

	for (it = clist_begin(l->mb_list); it != NULL; it = clist_next(it)) {
		struct mailimf_mailbox *mb = clist_content(it);

		if (mb->mb_addr_spec != NULL)
			add_rcpt(o, mb->mb_addr_spec);
	}
}

/* The addresses of one header field's value (To, Cc, Bcc). */
static void
add_address_list(struct sm_opts *o, const char *value)
{
	struct mailimf_address_list *l = NULL;
	size_t idx = 0;
	clistiter *it;

	if (mailimf_address_list_parse(value, strlen(value), &idx, &l) !=
	    MAILIMF_NO_ERROR)
		return;
	for (it = clist_begin(l->ad_list); it != NULL; it = clist_next(it)) {
		struct mailimf_address *ad = clist_content(it);

		if (ad->ad_type == MAILIMF_ADDRESS_MAILBOX)
			add_rcpt(o, ad->ad_data.ad_mailbox->mb_addr_spec);
		else if (ad->ad_data.ad_group->grp_mb_list != NULL)
			add_mailbox_list(o, ad->ad_data.ad_group->grp_mb_list);
	}
	mailimf_address_list_free(l);
}

static char *
first_mailbox(const char *value)
{
	struct mailimf_mailbox_list *l = NULL;
	size_t idx = 0;
	char *r = NULL;

	if (mailimf_mailbox_list_parse(value, strlen(value), &idx, &l) !=
	    MAILIMF_NO_ERROR)
		return NULL;
	if (clist_begin(l->mb_list) != NULL)
		r = xstrdup(((struct mailimf_mailbox *)
		    clist_content(clist_begin(l->mb_list)))->mb_addr_spec);
	mailimf_mailbox_list_free(l);
	return r;
}

/*
 * sendmail: reading the message.
 */

/* Reads the header block from stdin (up to and including the empty line,
 * or all of a message without a body) as CRLF lines: 0, -1 when it is too
 * long, -2 when a line holds a bare CR. */
static int
read_header(FILE *in, struct strbuf *h, bool *eof)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	*eof = true;
	while ((n = getline(&line, &cap, in)) > 0) {
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			n--;
		if (memchr(line, '\r', (size_t)n) != NULL) {
			/* A bare CR could end a line for some server upstream. */
			free(line);
			return -2;
		}
		sb_add(h, line, (size_t)n);
		sb_add(h, "\r\n", 2);
		if (n == 0) {
			*eof = false;	/* the body follows */
			break;
		}
		if (h->len > SENDMAIL_HEADER_MAX) {
			free(line);
			return -1;
		}
	}
	free(line);
	return 0;
}

/* The value of each header field called name (unfolded), in turn: calls
 * fn for each. Header lines are CRLF. */
static void
each_field(const char *h, const char *name, void (*fn)(void *, const char *), void *arg)
{
	size_t nl = strlen(name);
	const char *p = h, *e;
	struct strbuf v;

	for (; *p != '\0' && !(p[0] == '\r' && p[1] == '\n'); p = strstr(p, "\r\n") + 2) {
		if (strncasecmp(p, name, nl) != 0 || p[nl] != ':')
			continue;
		memset(&v, 0, sizeof v);
		for (e = p + nl + 1;; ) {
			const char *eol = strstr(e, "\r\n");

			sb_add(&v, e, (size_t)(eol - e));
			e = eol + 2;
			if (*e != ' ' && *e != '\t')
				break;
		}
		fn(arg, v.s ? v.s : "");
		free(v.s);
	}
}

static void
rcpt_field(void *o, const char *value)
{
	add_address_list(o, value);
}

static void
from_field(void *out, const char *value)
{
	char **from = out;

	if (*from == NULL)
		*from = first_mailbox(value);
}

/* Drops every Bcc field (with its continuation lines). */
static void
remove_bcc(struct strbuf *h)
{
	char *p = h->s, *next;
	bool drop = false;

	while (*p != '\0') {
		next = strstr(p, "\r\n") + 2;
		if (*p != ' ' && *p != '\t')
			drop = strncasecmp(p, "Bcc:", 4) == 0;
		if (drop) {
			memmove(p, next, strlen(next) + 1);
			h->len -= (size_t)(next - p);
		} else
			p = next;
	}
}

/* Writes line[0..n) to fd with every CR in it made a CRLF, as sendmail
 * and Postfix do: a bare CR left inside a line could end a line (or the
 * data, "a\r.\r\n") for some server upstream. */
static int
write_line(int fd, const char *line, size_t n, uint64_t *size)
{
	const char *cr;
	size_t k;

	while (n > 0) {
		cr = memchr(line, '\r', n);
		k = cr != NULL ? (size_t)(cr - line) : n;
		if (io_write_all(fd, line, k) == -1 ||
		    (cr != NULL && io_write_all(fd, "\r\n", 2) == -1))
			return -1;
		*size += k + (cr != NULL ? 2 : 0);
		if (*size > SENDMAIL_MESSAGE_MAX)
			return -1;
		k += cr != NULL;
		line += k;
		n -= k;
	}
	return 0;
}

/* Copies the rest of stdin into fd as CRLF lines; a "." line ends it
 * unless ignore_dots. */
static int
copy_body(FILE *in, int fd, bool ignore_dots, uint64_t *size)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int r = 0;

	while ((n = getline(&line, &cap, in)) > 0) {
		bool nl = line[n - 1] == '\n';

		if (nl)
			n -= n >= 2 && line[n - 2] == '\r' ? 2 : 1;
		if (!ignore_dots && n == 1 && line[0] == '.')
			break;
		if (write_line(fd, line, (size_t)n, size) == -1 ||
		    (nl && write_line(fd, "\r", 1, size) == -1)) {
			r = -1;
			break;
		}
	}
	free(line);
	return ferror(in) ? -1 : r;
}

/* A file for the message in the spool, unnamed until outbox_enqueue()
 * links it. */
static int
spool_file(const struct conf *c)
{
	char *err = NULL;
	int fd = outbox_spool_file(c->state_dir, &err);

	if (fd == -1) {
		log_warnx("sendmail: %s", err);
		free(err);
	}
	return fd;
}

/*
 * sendmail: choosing the account and enqueueing.
 */

static const struct conf_account *
account_for(const struct conf *c, const char *from)
{
	for (size_t i = 0; i < c->n_accounts; i++)
		for (size_t j = 0; j < c->accounts[i].n_addresses; j++)
			if (strcasecmp(c->accounts[i].addresses[j], from) == 0)
				return &c->accounts[i];
	return NULL;
}

static int
check_envelope(const struct conf *c, const char *from, const struct sm_opts *o,
    const struct conf_account **a)
{
	if (from == NULL) {
		log_warnx("sendmail: no sender: use -f or a From: header");
		return EX_USAGE;
	}
	if (o->n_rcpts == 0) {
		log_warnx("sendmail: no recipients");
		return EX_USAGE;
	}
	for (size_t i = 0; i < o->n_rcpts; i++)
		if (!addr_ok(o->rcpts[i])) {
			log_warnx("sendmail: bad recipient address");
			return EX_DATAERR;
		}
	if (!addr_ok(from) || (*a = account_for(c, from)) == NULL) {
		log_warnx("sendmail: %s is not an address of any account", from);
		return EX_NOPERM;
	}
	return EX_OK;
}

static int
enqueue(const struct conf *c, const struct conf_account *a, const char *from,
    const struct sm_opts *o, int fd)
{
	struct state *st;
	char *err = NULL;
	int64_t id;
	int rc = EX_OK;

	if (open_state(c, &st) == -1)
		return EX_TEMPFAIL;
	if (outbox_enqueue(st, c->state_dir, a->name, NULL, from, o->rcpts,
	    o->n_rcpts, fd, &id, &err) == -1) {
		log_warnx("sendmail: %s", err);
		free(err);
		rc = EX_TEMPFAIL;
	} else
		log_debug("%s: queued as %lld", a->name, (long long)id);
	state_close(st);
	return rc;
}

/* Header read, addresses found, Bcc removed: write it out, then the body. */
static int
write_message(const struct conf *c, FILE *in, struct strbuf *h, bool eof,
    const struct sm_opts *o, int *fd)
{
	uint64_t size = h->len;

	if ((*fd = spool_file(c)) == -1)
		return EX_CANTCREAT;
	if (io_write_all(*fd, h->s, h->len) == -1 ||
	    (!eof && copy_body(in, *fd, o->ignore_dots, &size) == -1)) {
		log_warnx("sendmail: writing the message failed (or it is over %llu bytes)",
		    (unsigned long long)SENDMAIL_MESSAGE_MAX);
		return EX_IOERR;
	}
	return EX_OK;
}

int
queue_cmd_sendmail(const struct conf *c, int argc, char **argv)
{
	struct sm_opts o = { 0 };
	const struct conf_account *a = NULL;
	struct strbuf h = { 0 };
	char *from = NULL;
	int rc, fd = -1;
	bool eof;

	if (parse_opts(argc, argv, &o) == -1) {
		rc = EX_USAGE;
		goto out;
	}
	if ((rc = read_header(stdin, &h, &eof)) != 0 || h.s == NULL) {
		log_warnx("sendmail: %s", rc == -2 ? "bare CR in the header" :
		    "no message, or its header is too long");
		rc = EX_DATAERR;
		goto out;
	}
	if (o.t) {
		each_field(h.s, "To", rcpt_field, &o);
		each_field(h.s, "Cc", rcpt_field, &o);
		each_field(h.s, "Bcc", rcpt_field, &o);
		remove_bcc(&h);
	}
	if (o.from != NULL)
		from = xstrdup(o.from);
	else
		each_field(h.s, "From", from_field, &from);
	if ((rc = check_envelope(c, from, &o, &a)) == EX_OK &&
	    (rc = write_message(c, stdin, &h, eof, &o, &fd)) == EX_OK)
		rc = enqueue(c, a, from, &o, fd);
out:
	if (fd != -1)
		close(fd);
	for (size_t i = 0; i < o.n_rcpts; i++)
		free(o.rcpts[i]);
	free(o.rcpts);
	free(from);
	free(h.s);
	return rc;
}

/*
 * queue list | flush | drop ID
 */

static const char *
rcpt_state(enum outbox_rcpt_state s)
{
	return s == RCPT_DELIVERED ? "delivered" : s == RCPT_FAILED ? "failed" : "pending";
}

static const char *
msg_state(const struct outbox_msg *m)
{
	switch (m->state) {
	case OUTBOX_QUEUED:
		return "queued";
	case OUTBOX_SENT:
		return "sent, filing the Sent copy";
	case OUTBOX_BOUNCED:
		return "bounced, filing";
	case OUTBOX_DROPPED:
		return "dropped";
	}
	return "?";
}

static void
print_msg(FILE *f, const struct outbox_msg *m)
{
	char next[32] = "-";
	time_t t = (time_t)m->next_attempt_at;
	struct tm tm;

	if (m->state == OUTBOX_QUEUED && localtime_r(&t, &tm) != NULL)
		strftime(next, sizeof next, "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(f, "%lld  %s  <%s>  %s  attempts %u  next %s\n", (long long)m->id,
	    m->account, m->mail_from, msg_state(m), m->attempts, next);
	for (size_t i = 0; i < m->n_rcpts; i++) {
		const struct outbox_rcpt *r = &m->rcpts[i];

		fprintf(f, "    <%s>  %s", r->addr, rcpt_state(r->state));
		if (r->last_code != 0)
			fprintf(f, "  %d %s", r->last_code, r->last_response ?
			    r->last_response : "");
		fputc('\n', f);
	}
	if (m->last_error != NULL)
		fprintf(f, "    last error: %s\n", m->last_error);
}

static int
queue_list(const struct conf *c, struct state *st)
{
	struct outbox_msg *v;
	size_t n;
	char *err = NULL;

	if (outbox_list(st, c->state_dir, &v, &n, &err) == -1) {
		log_warnx("queue: %s", err);
		free(err);
		return EX_TEMPFAIL;
	}
	for (size_t i = 0; i < n; i++)
		print_msg(stdout, &v[i]);
	if (n == 0)
		printf("the queue is empty\n");
	outbox_msgs_free(v, n);
	return EX_OK;
}

/* Makes every queued message due, then delivers them in this process
 * unless a pass is already running (the daemon's runner then delivers
 * them within seconds). */
static int
queue_flush(const struct conf *c, struct state *st)
{
	char *err = NULL;
	int r;

	if (outbox_flush(st, &err) == -1 ||
	    (r = queue_pass(c, st, INT64_MAX, &err)) == -1) {
		log_warnx("queue: %s", err);
		free(err);
		return EX_TEMPFAIL;
	}
	if (r == 1)
		log_info("queue: a delivery pass is running; it takes the flushed messages");
	return EX_OK;
}

static int
queue_drop(const struct conf *c, struct state *st, const char *arg)
{
	char *end, *err = NULL;
	long long id = strtoll(arg, &end, 10);
	int r;

	if (*arg == '\0' || *end != '\0' || id <= 0) {
		log_warnx("queue drop: \"%s\" is not a queue id", arg);
		return EX_USAGE;
	}
	if ((r = outbox_drop(st, id, &err)) == -1 ||
	    (r == 1 && outbox_cleanup(st, c->state_dir, &err) == -1)) {
		log_warnx("queue drop: %s", err);
		free(err);
		return EX_TEMPFAIL;
	}
	if (r == 0) {
		log_warnx("queue drop: no queued message %lld", id);
		return EX_NOINPUT;
	}
	return EX_OK;
}

int
queue_cmd_queue(const struct conf *c, int argc, char **argv)
{
	const char *sub = argc > 0 ? argv[0] : "list";
	struct state *st;
	int rc;

	if (!((strcmp(sub, "list") == 0 && argc <= 1) ||
	    (strcmp(sub, "flush") == 0 && argc == 1) ||
	    (strcmp(sub, "drop") == 0 && argc == 2))) {
		log_warnx("usage: queue [list | flush | drop ID]");
		return EX_USAGE;
	}
	if (open_state(c, &st) == -1)
		return EX_TEMPFAIL;
	if (strcmp(sub, "flush") == 0)
		rc = queue_flush(c, st);
	else if (strcmp(sub, "drop") == 0)
		rc = queue_drop(c, st, argv[1]);
	else
		rc = queue_list(c, st);
	state_close(st);
	return rc;
}

/* `pop3bridge sendmail`: a message on stdin, its envelope from the
 * arguments and (-t) from its header, into the outbound queue. */
#include "bridge/sendmail.h"

#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sysexits.h>
#include <unistd.h>

#include <libetpan/libetpan.h>

#include "lib/addr.h"
#include "lib/header.h"
#include "lib/io.h"
#include "lib/log.h"
#include "lib/xmalloc.h"
#include "store/outbox.h"
#include "store/state.h"

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

/*
 * Options and addresses.
 */

static void
add_rcpt(struct sm_opts *o, const char *addr)
{
	o->rcpts = xreallocarray(o->rcpts, o->n_rcpts + 1, sizeof *o->rcpts);
	o->rcpts[o->n_rcpts++] = xstrdup(addr);
}

/* The flags mail programs pass to sendmail(8) that change nothing here:
 * -bm (deliver: the only mode), -oe* (how errors are reported), -od*
 * (delivery mode: the queue runner always delivers), -om, -v, -U.
 * Flags with an argument that is ignored: -F NAME (full name; the From:
 * header is the message's own), -N DSN, -R RET, -V ENVID, -B BODY. */
static bool
harmless_flag(const char *a)
{
	return strcmp(a, "-bm") == 0 || strncmp(a, "-oe", 3) == 0 ||
	    strncmp(a, "-od", 3) == 0 || strcmp(a, "-om") == 0 || strcmp(a, "-v") == 0 ||
	    strcmp(a, "-U") == 0;
}

static bool
ignored_with_arg(char c)
{
	return c != '\0' && strchr("FNRVB", c) != NULL;
}

static void
sendmail_usage(const char *bad)
{
	log_warnx("sendmail: unsupported option %s", bad);
	fputs("usage: sendmail [-t] [-i|-oi] [-f FROM] [-F NAME] [-C CONFIG] [-bm] [-od*]"
	    " [-oe*] [--] [RCPT...]\n", stderr);
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
		else if ((strcmp(a, "-f") == 0 || strcmp(a, "-r") == 0) && i + 1 < argc)
			o->from = argv[++i];
		else if ((a[1] == 'f' || a[1] == 'r') && a[2] != '\0')
			o->from = (char *)a + 2;
		else if (harmless_flag(a))
			continue;
		else if (ignored_with_arg(a[1]) && a[2] == '\0' && i + 1 < argc)
			i++;
		else if (ignored_with_arg(a[1]) && a[2] != '\0')
			continue;
		else {
			sendmail_usage(a);
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
 * Reading the message.
 */

enum header_read { HDR_OK, HDR_TOO_LONG, HDR_BARE_CR, HDR_NUL };

/* Reads the header block from stdin (up to and including the empty line,
 * or all of a message without a body) as CRLF lines. The block is kept as
 * one C string that the field scans (To, Cc, Bcc, From) walk: a NUL in it
 * is refused, not carried (RFC 5322 has none in a header; it would also
 * cut every field scan short). */
static enum header_read
read_header(FILE *in, struct strbuf *h, bool *eof)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	*eof = true;
	while ((n = getline(&line, &cap, in)) > 0) {
		if (memchr(line, '\0', (size_t)n) != NULL) {
			free(line);
			return HDR_NUL;
		}
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			n--;
		if (memchr(line, '\r', (size_t)n) != NULL) {
			/* A bare CR could end a line for some server upstream. */
			free(line);
			return HDR_BARE_CR;
		}
		sb_add(h, line, (size_t)n);
		sb_add(h, "\r\n", 2);
		if (n == 0) {
			*eof = false;	/* the body follows */
			break;
		}
		if (h->len > SENDMAIL_HEADER_MAX) {
			free(line);
			return HDR_TOO_LONG;
		}
	}
	free(line);
	return HDR_OK;
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

/* Drops every Bcc field (with its continuation lines). Every line of h
 * ends in CRLF (read_header). */
static void
remove_bcc(struct strbuf *h)
{
	char *p = h->s, *next;
	bool drop = false;

	while (*p != '\0') {
		if ((next = strstr(p, "\r\n")) == NULL)
			break;
		next += 2;
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
 * Choosing the account and enqueueing.
 */

/* The invoking user's login name, or NULL for root. */
static const char *
invoker(void)
{
	struct passwd *pw;

	if (getuid() == 0)
		return NULL;
	pw = getpwuid(getuid());
	return pw != NULL ? pw->pw_name : "";
}

/* Who may send as whom, as the relay decides it at MAIL: the sender must
 * be an address of an account whose local_user is the invoking user
 * (root, who holds every credential of the file anyway, may use any
 * account's: system mail and cron jobs run as root), and that account
 * must have an smtp {} block, or nothing could ever send the message
 * (it would wait out queue_lifetime and bounce). */
static int
check_sender(const struct conf *c, const char *from, const struct conf_account **a)
{
	const char *user = invoker();
	const struct conf_account *any;

	if (!addr_ok(from) || (any = conf_account_by_address(c, from, NULL)) == NULL) {
		log_warnx("sendmail: %s is not an address of any account", from);
		return EX_NOPERM;
	}
	if (user != NULL && (*a = conf_account_by_address(c, from, user)) == NULL) {
		log_warnx("sendmail: %s belongs to account %s, whose local_user is %s, not"
		    " %s", from, any->name, any->local_user ? any->local_user : "unset",
		    *user ? user : "you");
		return EX_NOPERM;
	}
	if (user == NULL)
		*a = any;
	if (!(*a)->has_smtp) {
		log_warnx("sendmail: account %s has no smtp {} block: no server to send"
		    " %s's mail through", (*a)->name, from);
		return EX_CONFIG;
	}
	return EX_OK;
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
	return check_sender(c, from, a);
}

static int
enqueue(const struct conf *c, const struct conf_account *a, const char *from,
    const struct sm_opts *o, int fd)
{
	struct state *st;
	char *err = NULL;
	int64_t id;
	int rc = EX_OK;

	if (state_open_dir(c->state_dir, true, &st, &err) == -1 ||
	    outbox_enqueue(st, c->state_dir, a->name, NULL, from, o->rcpts,
	    o->n_rcpts, fd, &id, &err) == -1) {
		log_warnx("sendmail: %s", err);
		free(err);
		rc = EX_TEMPFAIL;
	} else {
		outbox_notify(c->state_dir);
		log_debug("%s: queued as %lld", a->name, (long long)id);
	}
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
sendmail_run(const struct conf *c, int argc, char **argv)
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
	if ((rc = read_header(stdin, &h, &eof)) != HDR_OK || h.s == NULL) {
		log_warnx("sendmail: %s", rc == HDR_BARE_CR ? "bare CR in the header" :
		    rc == HDR_NUL ? "NUL byte in the header (not sent)" :
		    "no message, or its header is too long");
		rc = EX_DATAERR;
		goto out;
	}
	if (o.t) {
		header_each(h.s, h.len, "To", rcpt_field, &o);
		header_each(h.s, h.len, "Cc", rcpt_field, &o);
		header_each(h.s, h.len, "Bcc", rcpt_field, &o);
		remove_bcc(&h);
	}
	if (o.from != NULL)
		from = xstrdup(o.from);
	else
		header_each(h.s, h.len, "From", from_field, &from);
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

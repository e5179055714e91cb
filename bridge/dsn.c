#include "bridge/dsn.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define DSN_HEADER_MAX	65536

void
dsn_status(int code, const char *text, char *out, size_t size)
{
	int cls = code / 100, a, b, c, n = 0;

	if (text != NULL && sscanf(text, "%1d.%3d.%3d%n", &a, &b, &c, &n) == 3 &&
	    a == cls && (a == 4 || a == 5) && (text[n] == '\0' || text[n] == ' ')) {
		snprintf(out, size, "%d.%d.%d", a, b, c);
		return;
	}
	if (cls == 5)
		snprintf(out, size, "5.0.0");
	else
		snprintf(out, size, "4.4.7");
}

/* One header-safe line: controls become spaces, at most 900 bytes. */
static void
put_clean(FILE *out, const char *s)
{
	size_t n = 0;

	for (; s != NULL && *s != '\0' && n < 900; s++, n++)
		fputc((unsigned char)*s < 0x20 || *s == 0x7f ? ' ' : *s, out);
}

static void
human_part(FILE *out, const struct outbox_msg *m, const char *b)
{
	size_t i;

	fprintf(out, "--%s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", b);
	fprintf(out, "Your message could not be delivered to these recipients:\r\n\r\n");
	for (i = 0; i < m->n_rcpts; i++) {
		if (m->rcpts[i].state != RCPT_FAILED)
			continue;
		fprintf(out, "  <");
		put_clean(out, m->rcpts[i].addr);
		fprintf(out, ">: ");
		if (m->rcpts[i].last_code != 0)
			fprintf(out, "%d ", m->rcpts[i].last_code);
		put_clean(out, m->rcpts[i].last_response ? m->rcpts[i].last_response :
		    m->last_error ? m->last_error : "not delivered in time");
		fprintf(out, "\r\n");
	}
	fprintf(out, "\r\n");
}

static void
status_part(FILE *out, const struct outbox_msg *m, const char *mta, const char *b)
{
	const struct outbox_rcpt *r;
	char status[16];
	size_t i;

	fprintf(out, "--%s\r\nContent-Type: message/delivery-status\r\n\r\n", b);
	fprintf(out, "Reporting-MTA: dns; %s\r\n", mta);
	for (i = 0; i < m->n_rcpts; i++) {
		r = &m->rcpts[i];
		if (r->state != RCPT_FAILED)
			continue;
		dsn_status(r->last_code, r->last_response, status, sizeof status);
		fprintf(out, "\r\nFinal-Recipient: rfc822; ");
		put_clean(out, r->addr);
		fprintf(out, "\r\nAction: failed\r\nStatus: %s\r\n", status);
		if (r->last_code != 0) {
			fprintf(out, "Diagnostic-Code: smtp; %d ", r->last_code);
			put_clean(out, r->last_response);
			fprintf(out, "\r\n");
		}
	}
	fprintf(out, "\r\n");
}

/* The original header block, up to its empty line, as CRLF lines. */
static void
headers_part(FILE *out, FILE *orig, const char *b)
{
	char line[1024];
	size_t total = 0, n;

	fprintf(out, "--%s\r\nContent-Type: text/rfc822-headers\r\n\r\n", b);
	while (orig != NULL && total < DSN_HEADER_MAX &&
	    fgets(line, sizeof line, orig) != NULL) {
		n = strcspn(line, "\r\n");
		if (n == 0 && (line[0] == '\r' || line[0] == '\n'))
			break;
		total += n;
		fwrite(line, 1, n, out);
		if (line[n] != '\0')
			fputs("\r\n", out);
	}
	fprintf(out, "\r\n--%s--\r\n", b);
}

int
dsn_write(FILE *out, const struct outbox_msg *m, FILE *orig, const char *mta,
    time_t now)
{
	char date[64], b[80];
	struct tm tm;

	localtime_r(&now, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
	snprintf(b, sizeof b, "=_dsn_%lld_%lld", (long long)m->id, (long long)now);
	fprintf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", mta);
	fprintf(out, "To: <");
	put_clean(out, m->mail_from);
	fprintf(out, ">\r\nSubject: Undelivered Mail Returned to Sender\r\n"
	    "Date: %s\r\nMessage-ID: <dsn.%lld.%lld@%s>\r\n"
	    "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
	    "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	    "\tboundary=\"%s\"\r\n\r\n"
	    "This is a delivery status notification (RFC 3464).\r\n\r\n",
	    date, (long long)m->id, (long long)m->created_at, mta, b);
	human_part(out, m, b);
	status_part(out, m, mta, b);
	headers_part(out, orig, b);
	return fflush(out) == EOF || ferror(out) ? -1 : 0;
}

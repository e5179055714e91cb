#include "bridge/import_parse.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/err.h"
#include "lib/xmalloc.h"

/* RFC 1939, 7: a unique-id is 1 to 70 characters in 0x21..0x7E. */
#define UIDL_MAX 70

/* One line of the buffer: [s, s + len), without its '\n'. */
struct line {
	const char *s;
	size_t len;
	unsigned long no;
};

/* The parse under way: the buffer, where it is, and what it found. */
struct parse {
	const char *buf, *end, *at;
	unsigned long no;
	const struct import_who *who;
	struct import_uidls *out;
	size_t cap;
	char **err;
};

static bool
next_line(struct parse *p, struct line *l)
{
	const char *nl;

	if (p->at >= p->end)
		return false;
	nl = memchr(p->at, '\n', (size_t)(p->end - p->at));
	l->s = p->at;
	l->len = (size_t)((nl ? nl : p->end) - p->at);
	l->no = ++p->no;
	p->at = nl ? nl + 1 : p->end;
	return true;
}

static int
bad(struct parse *p, unsigned long no, const char *why)
{
	return err_set(p->err, "%lu: %s", no, why);
}

int
import_parse_uidl_ok(const char *s, size_t len)
{
	if (len == 0 || len > UIDL_MAX)
		return 0;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return 0;
	return 1;
}

/* Adds the UIDL s[0..len) of line no, checked. */
static int
add_uidl(struct parse *p, const char *s, size_t len, unsigned long no)
{
	struct import_uidls *u = p->out;

	if (len > UIDL_MAX)
		return bad(p, no, "UIDL longer than 70 characters (RFC 1939)");
	if (!import_parse_uidl_ok(s, len))
		return bad(p, no, len == 0 ? "empty UIDL" :
		    "UIDL with a character outside 0x21..0x7E (RFC 1939)");
	if (u->n == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 64;
		u->uidls = xreallocarray(u->uidls, p->cap, sizeof *u->uidls);
	}
	u->uidls[u->n++] = xstrndup(s, len);
	return 0;
}

/* An entry of another account (name[0..len)): counted, the first kept. */
static void
add_other(struct parse *p, const char *name, size_t len, unsigned long no)
{
	if (p->out->other++ == 0) {
		p->out->other_line = no;
		p->out->other_name = xstrndup(name, len);
	}
}

static bool
blank(char c)
{
	return c == ' ' || c == '\t';
}

/* s[0..n) equals the NUL-terminated t, in any case when nocase. */
static bool
same(const char *s, size_t n, const char *t, bool nocase)
{
	return strlen(t) == n && (nocase ? strncasecmp(s, t, n) : strncmp(s, t, n)) == 0;
}

/*
 * fetchmail: "USER@HOST UIDL". The user may hold '@' and blanks (Lotus
 * Notes), so, as fetchmail reads it: the first blank after the first '@'
 * ends USER@HOST, whose last '@' splits user and host. fetchmail compares
 * both in any case.
 */
static int
fetchmail_line(struct parse *p, const struct line *l)
{
	const char *s = l->s, *e = l->s + l->len, *at, *sp, *uh_end, *id, *id_end, *last;

	while (s < e && blank(*s))
		s++;
	if (s == e)
		return 0;
	if (memchr(s, '\0', (size_t)(e - s)) != NULL)
		return bad(p, l->no, "NUL byte (not a fetchmail .fetchids file?)");
	if ((at = memchr(s, '@', (size_t)(e - s))) == NULL)
		return bad(p, l->no, "no USER@HOST before the UIDL (not a fetchmail .fetchids file?)");
	if ((sp = memchr(at, ' ', (size_t)(e - at))) == NULL)
		return bad(p, l->no, "no UIDL after USER@HOST");
	for (uh_end = sp; uh_end > s && blank(uh_end[-1]); uh_end--)
		;
	for (id = sp; id < e && *id == ' '; id++)
		;
	for (id_end = id; id_end < e && !blank(*id_end); id_end++)
		;
	for (const char *t = id_end; t < e; t++)
		if (!blank(*t))
			return bad(p, l->no, "text after the UIDL");
	for (last = uh_end - 1; *last != '@'; last--)
		;
	if (last == s || last + 1 == uh_end)
		return bad(p, l->no, "empty user or host in USER@HOST");
	if (!same(s, (size_t)(last - s), p->who->user, true) ||
	    !same(last + 1, (size_t)(uh_end - last - 1), p->who->host, true)) {
		add_other(p, s, (size_t)(uh_end - s), l->no);
		/* Another account's UIDL must still be one. */
		return import_parse_uidl_ok(id, (size_t)(id_end - id)) ? 0 :
		    bad(p, l->no, "not a valid UIDL (RFC 1939)");
	}
	return add_uidl(p, id, (size_t)(id_end - id), l->no);
}

/*
 * getmail: "UIDL NUL TIMESTAMP", surrounding white space stripped (as
 * getmail's own reader does). An entry "UIDVALIDITY/UID" (with an older
 * "/MAILBOX/" in it) is an IMAP retriever's: getmail turns every '/' of a
 * POP3 UIDL into '-', so a '/' means the file is not a POP3 one.
 */
static bool
py_space(char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r');
}

static int
getmail_line(struct parse *p, const struct line *l)
{
	const char *s = l->s, *e = l->s + l->len, *nul;

	while (s < e && py_space(*s))
		s++;
	while (e > s && py_space(e[-1]))
		e--;
	if (s == e)
		return 0;
	if ((nul = memchr(s, '\0', (size_t)(e - s))) == NULL)
		return bad(p, l->no, "no NUL between UIDL and time (not a getmail oldmail file?)");
	if (nul + 1 == e)
		return bad(p, l->no, "no time after the NUL");
	for (const char *t = nul + 1; t < e; t++)
		if (*t < '0' || *t > '9')
			return bad(p, l->no, "the time after the NUL is not a number");
	if (memchr(s, '/', (size_t)(nul - s)) != NULL)
		return bad(p, l->no, "an IMAP entry (UIDVALIDITY/UID): not a POP3 state file");
	return add_uidl(p, s, (size_t)(nul - s), l->no);
}

/*
 * mpop: '#' comments before anything else; then lists " COUNT HOST USER"
 * of COUNT UIDL lines each (COUNT >= 1, USER without blanks). mpop matches
 * host and user exactly; a host name is compared in any case here.
 */
struct mpop_list {
	unsigned long left;       /* UIDL lines still to come */
	unsigned long header;     /* its " COUNT HOST USER" line */
	bool ours;
};

static int
mpop_header(struct parse *p, const struct line *l, struct mpop_list *ls)
{
	const char *s = l->s + 1, *e = l->s + l->len, *host, *sp;
	unsigned long n = 0;

	if (s == e || *s < '0' || *s > '9')
		return bad(p, l->no, "invalid number of UIDLs");
	while (s < e && *s >= '0' && *s <= '9') {
		if (n > (1UL << 40))
			return bad(p, l->no, "invalid number of UIDLs");
		n = n * 10 + (unsigned long)(*s++ - '0');
	}
	if (n == 0 || s == e || *s != ' ')
		return bad(p, l->no, "invalid number of UIDLs");
	host = ++s;
	if ((sp = memchr(host, ' ', (size_t)(e - host))) == NULL || sp == host)
		return bad(p, l->no, "invalid or missing host name");
	s = sp + 1;
	if (s == e || memchr(s, ' ', (size_t)(e - s)) != NULL)
		return bad(p, l->no, "invalid or missing user name");
	ls->left = n;
	ls->header = l->no;
	ls->ours = same(host, (size_t)(sp - host), p->who->host, true) &&
	    same(s, (size_t)(e - s), p->who->user, false);
	if (!ls->ours)
		add_other(p, host, (size_t)(e - host), l->no);
	return 0;
}

static int
mpop_parse(struct parse *p)
{
	struct mpop_list ls = { 0, 0, false };
	bool comments = true;
	struct line l;

	while (next_line(p, &l)) {
		if (memchr(l.s, '\0', l.len) != NULL)
			return bad(p, l.no, "NUL byte (not an mpop UIDLs file?)");
		if (comments && l.len > 0 && l.s[0] == '#')
			continue;
		comments = false;
		if (ls.left == 0) {
			if (l.len == 0 || l.s[0] != ' ')
				return bad(p, l.no, "UIDL without a list (not an mpop UIDLs file?)");
			if (mpop_header(p, &l, &ls) == -1)
				return -1;
			continue;
		}
		if (l.len > 0 && l.s[0] == ' ')
			return bad(p, l.no, "too few UIDLs for the list above");
		if (ls.ours && add_uidl(p, l.s, l.len, l.no) == -1)
			return -1;
		if (!ls.ours && !import_parse_uidl_ok(l.s, l.len))
			return bad(p, l.no, "not a valid UIDL (RFC 1939)");
		ls.left--;
	}
	if (ls.left > 0)
		return err_set(p->err, "%lu: too few UIDLs for the list of line %lu",
		    p->no, ls.header);
	return 0;
}

static int
by_line(struct parse *p, int (*one)(struct parse *, const struct line *))
{
	struct line l;

	while (next_line(p, &l))
		if (one(p, &l) == -1)
			return -1;
	return 0;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted, each UIDL once. */
static void
unique(struct import_uidls *u)
{
	size_t k = 0;

	if (u->n == 0)
		return;
	qsort(u->uidls, u->n, sizeof *u->uidls, cmp_str);
	for (size_t i = 1; i < u->n; i++) {
		if (strcmp(u->uidls[i], u->uidls[k]) == 0)
			free(u->uidls[i]);
		else
			u->uidls[++k] = u->uidls[i];
	}
	u->n = k + 1;
}

int
import_parse(enum import_tool tool, const char *buf, size_t len,
    const struct import_who *who, struct import_uidls *out, char **err)
{
	struct parse p = { .buf = buf, .end = buf + len, .at = buf, .who = who,
	    .out = out, .err = err };
	int r;

	memset(out, 0, sizeof *out);
	switch (tool) {
	case IMPORT_FETCHMAIL:
		r = by_line(&p, fetchmail_line);
		break;
	case IMPORT_GETMAIL:
		r = by_line(&p, getmail_line);
		break;
	case IMPORT_MPOP:
		r = mpop_parse(&p);
		break;
	default:
		r = err_set(err, "0: unknown tool");
	}
	if (r == -1)
		import_uidls_free(out);
	else
		unique(out);
	return r;
}

int
import_parse_tool(const char *name, enum import_tool *out)
{
	static const struct { const char *name; enum import_tool t; } tools[] = {
		{ "fetchmail", IMPORT_FETCHMAIL }, { "getmail", IMPORT_GETMAIL },
		{ "mpop", IMPORT_MPOP },
	};

	for (size_t i = 0; i < sizeof tools / sizeof *tools; i++)
		if (strcmp(name, tools[i].name) == 0) {
			*out = tools[i].t;
			return 0;
		}
	return -1;
}

/* getmail 6: re.sub(r'[/\:;<>|]+', '-', 'oldmail-%(server)s-%(port)i-%(username)s'). */
char *
import_parse_getmail_name(const struct import_who *who)
{
	char *raw = xasprintf("oldmail-%s-%u-%s", who->host, who->port, who->user);
	char *out = xmalloc(strlen(raw) + 1), *o = out;

	for (const char *s = raw; *s; ) {
		if (strchr("/:;<>|", *s) == NULL) {
			*o++ = *s++;
			continue;
		}
		while (*s && strchr("/:;<>|", *s) != NULL)
			s++;
		*o++ = '-';
	}
	*o = '\0';
	free(raw);
	return out;
}

void
import_uidls_free(struct import_uidls *u)
{
	for (size_t i = 0; i < u->n; i++)
		free(u->uidls[i]);
	free(u->uidls);
	free(u->other_name);
	memset(u, 0, sizeof *u);
}

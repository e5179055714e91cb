/* The POP3 reply parsers: see pop3_parse.h. */
#include "bridge/pop3_parse.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/err.h"
#include "lib/xmalloc.h"

#define CLEAN_MAX	200	/* bytes of server text kept in a message */

int
pop3_parse_status(const char *line, enum pop3_status *st, const char **text)
{
	size_t n;

	if (strncmp(line, "+OK", 3) == 0) {
		*st = POP3_ST_OK;
		n = 3;
	} else if (strncmp(line, "-ERR", 4) == 0) {
		*st = POP3_ST_ERR;
		n = 4;
	} else if (line[0] == '+') {
		*st = POP3_ST_CONT;
		n = 1;
	} else
		return -1;
	/* "+OKAY" is not "+OK": the indicator must end the line or a word. */
	if (line[n] != '\0' && line[n] != ' ')
		return -1;
	*text = line[n] == '\0' ? line + n : line + n + 1;
	return 0;
}

bool
pop3_parse_temporary(const char *text)
{
	static const char *const codes[] = { "[IN-USE]", "[LOGIN-DELAY]", "[SYS/TEMP]",
	    "[SYS/TEMP/" };
	size_t i;

	for (i = 0; i < sizeof codes / sizeof codes[0]; i++)
		if (strncasecmp(text, codes[i], strlen(codes[i])) == 0)
			return true;
	return false;
}

char *
pop3_parse_clean(const char *text)
{
	char *out = xmalloc(CLEAN_MAX + 1);
	size_t i, n = 0;
	unsigned char c;

	for (i = 0; text[i] != '\0' && n < CLEAN_MAX; i++) {
		c = (unsigned char)text[i];
		if (c >= 0x20 && c != 0x7f)
			out[n++] = (char)c;
	}
	out[n] = '\0';
	return out;
}

void
pop3_parse_caps_init(struct pop3_caps *c)
{
	memset(c, 0, sizeof *c);
	c->login_delay = -1;
	c->expire = -1;
}

/* A CAPA argument: seconds or days, or NEVER (for EXPIRE); -1 if invalid. */
static long
caps_number(const char *tok, bool never_ok)
{
	char *end;
	long v;

	if (tok == NULL)
		return -1;
	if (never_ok && strcasecmp(tok, "NEVER") == 0)
		return LONG_MAX;
	if (*tok < '0' || *tok > '9')
		return -1;
	errno = 0;
	v = strtol(tok, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	return v;
}

static void
caps_sasl(struct pop3_caps *c, char *save)
{
	char *tok;

	while ((tok = strtok_r(NULL, " ", &save)) != NULL) {
		if (strcasecmp(tok, "PLAIN") == 0)
			c->sasl_plain = true;
		else if (strcasecmp(tok, "XOAUTH2") == 0)
			c->sasl_xoauth2 = true;
	}
}

void
pop3_parse_caps_line(struct pop3_caps *c, const char *line)
{
	char buf[POP3_LINE_MAX + 1], *name, *save = NULL;

	if (strlen(line) > POP3_LINE_MAX)
		return;
	strcpy(buf, line);
	if ((name = strtok_r(buf, " ", &save)) == NULL)
		return;
	if (strcasecmp(name, "UIDL") == 0)
		c->uidl = true;
	else if (strcasecmp(name, "TOP") == 0)
		c->top = true;
	else if (strcasecmp(name, "USER") == 0)
		c->user = true;
	else if (strcasecmp(name, "PIPELINING") == 0)
		c->pipelining = true;
	else if (strcasecmp(name, "STLS") == 0)
		c->stls = true;
	else if (strcasecmp(name, "SASL") == 0)
		caps_sasl(c, save);
	else if (strcasecmp(name, "LOGIN-DELAY") == 0)
		c->login_delay = caps_number(strtok_r(NULL, " ", &save), false);
	else if (strcasecmp(name, "EXPIRE") == 0)
		c->expire = caps_number(strtok_r(NULL, " ", &save), true);
}

/* Parses 1*DIGIT that fits in uint64_t; returns the end, NULL if none. */
static const char *
parse_u64(const char *s, uint64_t *v)
{
	const char *p;

	*v = 0;
	for (p = s; *p >= '0' && *p <= '9'; p++) {
		if (*v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return NULL;
		*v = *v * 10 + (uint64_t)(*p - '0');
	}
	return p == s ? NULL : p;
}

/* Parses the "num " that starts a listing line; returns the rest. */
static const char *
parse_num(const char *line, unsigned long *num)
{
	const char *p;
	uint64_t v;

	if ((p = parse_u64(line, &v)) == NULL || v > ULONG_MAX || *p != ' ')
		return NULL;
	*num = (unsigned long)v;
	return p + 1;
}

static int
bad_line(char **err, const char *what, const char *line)
{
	char *clean = pop3_parse_clean(line);
	int rv;

	rv = err_code(err, POP3_EPROTO, "malformed %s line \"%.60s\"", what, clean);
	free(clean);
	return rv;
}

int
pop3_parse_list(const char *line, unsigned long *num, uint64_t *size, char **err)
{
	const char *p;

	/* RFC 1939 allows more after the size; nothing else. */
	if ((p = parse_num(line, num)) == NULL || (p = parse_u64(p, size)) == NULL ||
	    (*p != '\0' && *p != ' '))
		return bad_line(err, "LIST", line);
	return POP3_OK;
}

int
pop3_parse_uidl(const char *line, unsigned long *num, char **uidl, char **err)
{
	const char *p, *q;

	if ((p = parse_num(line, num)) == NULL || *p == '\0')
		return bad_line(err, "UIDL", line);
	for (q = p; *q != '\0'; q++)
		if (*q < 0x21 || *q > 0x7e)
			return err_code(err, POP3_EPROTO,
			    "UIDL of message %lu holds a byte outside 0x21-0x7E", *num);
	if (q - p > POP3_UIDL_MAX)
		return err_code(err, POP3_EPROTO, "UIDL of message %lu longer than %d bytes",
		    *num, POP3_UIDL_MAX);
	*uidl = xstrdup(p);
	return POP3_OK;
}

/* Message numbers: >= 1, strictly increasing, 1..N unless allow_gaps. */
static int
check_numbers(const struct pop3_entry *e, size_t n, const char *what, bool allow_gaps,
    char **err)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (e[i].num == 0)
			return err_code(err, POP3_EPROTO, "%s names message 0", what);
		if (i > 0 && e[i].num <= e[i - 1].num)
			return err_code(err, POP3_EPROTO, "%s repeats or reorders message %lu",
			    what, e[i].num);
		if (!allow_gaps && e[i].num != i + 1)
			return err_code(err, POP3_EPROTO, "%s lacks message %zu", what, i + 1);
	}
	return POP3_OK;
}

static int
check_same(const struct pop3_entry *list, size_t nlist, const struct pop3_entry *uidls,
    size_t nuidl, char **err)
{
	size_t i;

	for (i = 0; i < nlist && i < nuidl; i++)
		if (list[i].num != uidls[i].num)
			return err_code(err, POP3_EPROTO, "UIDL and LIST disagree: message %lu "
			    "in one, %lu in the other", uidls[i].num, list[i].num);
	if (nlist != nuidl)
		return err_code(err, POP3_EPROTO, "UIDL lists %zu messages, LIST %zu",
		    nuidl, nlist);
	return POP3_OK;
}

static int
cmp_uidl(const void *a, const void *b)
{
	const struct pop3_entry *const *x = a, *const *y = b;

	return strcmp((*x)->uidl, (*y)->uidl);
}

/* No UIDL may name two messages: that would make one of them unfetchable
 * or, worse, marked delivered by the other's delivery. */
static int
check_unique(struct pop3_entry *uidls, size_t n, char **err)
{
	struct pop3_entry **v;
	size_t i;
	int rv = POP3_OK;

	if (n < 2)
		return POP3_OK;
	v = xreallocarray(NULL, n, sizeof *v);
	for (i = 0; i < n; i++)
		v[i] = &uidls[i];
	qsort(v, n, sizeof *v, cmp_uidl);
	for (i = 1; i < n; i++) {
		unsigned long a = v[i - 1]->num, b = v[i]->num;

		if (strcmp(v[i - 1]->uidl, v[i]->uidl) != 0)
			continue;
		rv = err_code(err, POP3_EPROTO, "duplicate UIDL \"%s\" (messages %lu and %lu)",
		    v[i]->uidl, a < b ? a : b, a < b ? b : a);
		break;
	}
	free(v);
	return rv;
}

int
pop3_parse_listing(struct pop3_entry *list, size_t nlist, struct pop3_entry *uidls,
    size_t nuidl, bool have_uidl, bool allow_gaps, char **err)
{
	size_t i;
	int rv;

	if ((rv = check_numbers(list, nlist, "LIST", allow_gaps, err)) != POP3_OK)
		return rv;
	if (!have_uidl)
		return POP3_OK;
	if ((rv = check_numbers(uidls, nuidl, "UIDL", allow_gaps, err)) != POP3_OK ||
	    (rv = check_same(list, nlist, uidls, nuidl, err)) != POP3_OK ||
	    (rv = check_unique(uidls, nuidl, err)) != POP3_OK)
		return rv;
	for (i = 0; i < nlist; i++) {
		list[i].uidl = uidls[i].uidl;
		uidls[i].uidl = NULL;
	}
	return POP3_OK;
}

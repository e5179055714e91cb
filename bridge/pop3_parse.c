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

enum pop3_busy
pop3_parse_busy(const char *text)
{
	static const struct {
		const char *code;
		enum pop3_busy busy;
	} codes[] = {
		{ "[IN-USE]", POP3_BUSY_IN_USE }, { "[LOGIN-DELAY]", POP3_BUSY_LOGIN_DELAY },
		{ "[SYS/TEMP]", POP3_BUSY_SYS_TEMP }, { "[SYS/TEMP/", POP3_BUSY_SYS_TEMP },
	};
	size_t i;

	for (i = 0; i < sizeof codes / sizeof codes[0]; i++)
		if (strncasecmp(text, codes[i].code, strlen(codes[i].code)) == 0)
			return codes[i].busy;
	return POP3_BUSY_NONE;
}

bool
pop3_parse_temporary(const char *text)
{
	return pop3_parse_busy(text) != POP3_BUSY_NONE;
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
		else if (strcasecmp(tok, "OAUTHBEARER") == 0)
			c->sasl_oauthbearer = true;
	}
}

/* True when s is 1*DIGIT. */
static bool
all_digits(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/* GNU Mailutils pop3d (3.15) announces LOGIN-DELAY 600 and EXPIRE 0 as the
 * lines "600" and "EXPIRE0". Both are read the way that errs on the safe
 * side: "EXPIREn" (and "LOGIN-DELAYn") as the capability with argument n,
 * a bare number as a LOGIN-DELAY unless a proper LOGIN-DELAY line says
 * otherwise (polling less often than asked never locks an account; a
 * server that meant something else by it loses nothing). True when name
 * was such a line. */
static bool
caps_glued(struct pop3_caps *c, const char *name)
{
	static const char expire[] = "EXPIRE", delay[] = "LOGIN-DELAY";

	if (all_digits(name)) {
		if (c->login_delay == -1)
			c->login_delay = caps_number(name, false);
		return true;
	}
	if (strncasecmp(name, expire, sizeof expire - 1) == 0 &&
	    all_digits(name + sizeof expire - 1)) {
		c->expire = caps_number(name + sizeof expire - 1, false);
		return true;
	}
	if (strncasecmp(name, delay, sizeof delay - 1) == 0 &&
	    all_digits(name + sizeof delay - 1)) {
		c->login_delay = caps_number(name + sizeof delay - 1, false);
		return true;
	}
	return false;
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
	if (caps_glued(c, name))
		return;
	if (strcasecmp(name, "UIDL") == 0)
		c->uidl = true;
	else if (strcasecmp(name, "UTF8") == 0)
		c->utf8 = true;
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

int
pop3_parse_uidl_entry(const char *line, struct pop3_entry *e, char **err)
{
	if (parse_num(line, &e->num) == NULL)
		return bad_line(err, "UIDL", line);
	if (pop3_parse_uidl(line, &e->num, &e->uidl, NULL) == POP3_OK)
		e->uidl_status = POP3_UIDL_OK;
	else {
		e->uidl = NULL;
		e->uidl_status = POP3_UIDL_INVALID;
	}
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
	int c = strcmp((*x)->uidl, (*y)->uidl);

	/* Equal UIDLs in server order, for a stable result. */
	return c != 0 ? c : (*x)->num < (*y)->num ? -1 : (*x)->num > (*y)->num;
}

/* A UIDL naming two messages identifies neither: one of them could be
 * taken for the other (marked delivered by the other's delivery, or never
 * fetched). Every message sharing one loses it (POP3_UIDL_DUPLICATE) and
 * is identified by its fingerprint like a message without UIDL. */
static void
mark_duplicates(struct pop3_entry *uidls, size_t n)
{
	struct pop3_entry **v;
	size_t i, k = 0, j;

	v = xreallocarray(NULL, n ? n : 1, sizeof *v);
	for (i = 0; i < n; i++)
		if (uidls[i].uidl_status == POP3_UIDL_OK)
			v[k++] = &uidls[i];
	qsort(v, k, sizeof *v, cmp_uidl);
	for (i = 0; i < k; i = j) {
		for (j = i + 1; j < k && strcmp(v[i]->uidl, v[j]->uidl) == 0; j++)
			;
		if (j - i < 2)
			continue;
		for (size_t d = i; d < j; d++)
			v[d]->uidl_status = POP3_UIDL_DUPLICATE;
	}
	for (i = 0; i < n; i++)
		if (uidls[i].uidl_status == POP3_UIDL_DUPLICATE) {
			free(uidls[i].uidl);
			uidls[i].uidl = NULL;
		}
	free(v);
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
	    (rv = check_same(list, nlist, uidls, nuidl, err)) != POP3_OK)
		return rv;
	mark_duplicates(uidls, nuidl);
	for (i = 0; i < nlist; i++) {
		list[i].uidl = uidls[i].uidl;
		list[i].uidl_status = uidls[i].uidl_status;
		uidls[i].uidl = NULL;
	}
	return POP3_OK;
}

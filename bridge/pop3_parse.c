/* The POP3 reply parsers: see pop3_parse.h. */
#include "bridge/pop3_parse.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
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
	else if (strcasecmp(name, "LANG") == 0)
		c->lang = true;
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
pop3_parse_uidl_ref(const char *line, unsigned long *num, const char **uid, size_t *len,
    char **err)
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
	*uid = p;
	*len = (size_t)(q - p);
	return POP3_OK;
}

int
pop3_parse_uidl(const char *line, unsigned long *num, char **uidl, char **err)
{
	const char *uid;
	size_t len;
	int rv;

	if ((rv = pop3_parse_uidl_ref(line, num, &uid, &len, err)) != POP3_OK)
		return rv;
	*uidl = xstrndup(uid, len);
	return POP3_OK;
}

const char *
pop3_parse_num(const char *line, unsigned long *num)
{
	return parse_num(line, num);
}

int
pop3_parse_bad_line(char **err, const char *what, const char *line)
{
	return bad_line(err, what, line);
}

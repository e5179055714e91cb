/* The grammar of the IMAP replies the store accepts: see imap_guard.h.
 * A recursive-descent check over one reply line: every function takes the
 * cursor and returns false when the text there is not what it parses. */
#include "store/imap_guard.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

struct cur {
	const char *p, *end;
	bool more;		/* the line stops at "{N}" CRLF ... */
	size_t literal;		/* ... and goes on after N bytes */
	bool greeting;		/* the first line: few response codes */
};

static bool
at_end(const struct cur *c)
{
	return c->p == c->end;
}

static bool
peek(const struct cur *c, char ch)
{
	return c->p < c->end && *c->p == ch;
}

static bool
eat(struct cur *c, char ch)
{
	if (!peek(c, ch))
		return false;
	c->p++;
	return true;
}

static bool
sp(struct cur *c)
{
	return eat(c, ' ');
}

/* A keyword, any case, not followed by more atom characters. */
static bool atom_char(unsigned char ch);

static bool
word(struct cur *c, const char *w)
{
	size_t n = strlen(w);

	if ((size_t)(c->end - c->p) < n || strncasecmp(c->p, w, n) != 0 ||
	    (c->p + n < c->end && atom_char((unsigned char)c->p[n])))
		return false;
	c->p += n;
	return true;
}

/* RFC 3501 ATOM-CHAR: any CHAR except "(" ")" "{" SP CTL "%" "*" DQUOTE
 * "\" "]". */
static bool
atom_char(unsigned char ch)
{
	return ch > 0x20 && ch < 0x7f && strchr("(){%*\"\\]", ch) == NULL;
}

static bool
atom(struct cur *c, bool astring)
{
	const char *s = c->p;

	while (c->p < c->end && (atom_char((unsigned char)*c->p) || (astring && *c->p == ']')))
		c->p++;
	return c->p > s;
}

/* " atom" one or more times: a capability list (RFC 3501 capability-data,
 * in a CAPABILITY response or code). */
static bool
capabilities(struct cur *c)
{
	if (!sp(c) || !atom(c, false))
		return false;
	while (sp(c))
		if (!atom(c, false))
			return false;
	return true;
}

/* A number of at most max into *out (may be NULL). nz: not 0. */
static bool
number_of(struct cur *c, uint64_t max, bool nz, uint64_t *out)
{
	uint64_t v = 0;
	const char *s = c->p;

	while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
		if (c->p - s >= 20)
			return false;
		v = v * 10 + (uint64_t)(*c->p - '0');
		if (v > max)
			return false;
		c->p++;
	}
	if (out != NULL)
		*out = v;
	return c->p > s && (!nz || v > 0);
}

static bool
number(struct cur *c, uint64_t max, bool nz)
{
	return number_of(c, max, nz, NULL);
}

#define U32	4294967295ULL

/* TEXT-CHAR: anything but CR, LF and NUL (8-bit text is sent in the wild). */
static bool
text_char(unsigned char ch)
{
	return ch != '\r' && ch != '\n' && ch != '\0';
}

static void
text(struct cur *c, bool bracket_ends)
{
	while (c->p < c->end && text_char((unsigned char)*c->p) &&
	    !(bracket_ends && *c->p == ']'))
		c->p++;
}

static bool
quoted(struct cur *c)
{
	if (!eat(c, '"'))
		return false;
	while (c->p < c->end && *c->p != '"') {
		if (*c->p == '\\') {
			c->p++;
			if (!peek(c, '"') && !peek(c, '\\'))
				return false;
		} else if (!text_char((unsigned char)*c->p))
			return false;
		c->p++;
	}
	return eat(c, '"');
}

/* "\" atom, or atom; "\*" too in PERMANENTFLAGS. */
static bool
flag(struct cur *c, bool perm)
{
	if (eat(c, '\\')) {
		if (perm && eat(c, '*'))
			return true;
		return atom(c, false);
	}
	return atom(c, false);
}

static bool
flag_list(struct cur *c, bool perm)
{
	if (!eat(c, '('))
		return false;
	if (eat(c, ')'))
		return true;
	do
		if (!flag(c, perm))
			return false;
	while (sp(c));
	return eat(c, ')');
}

/* uid-set: n, n:m, comma-separated. */
static bool
uid_set(struct cur *c)
{
	do {
		if (!number(c, U32, true))
			return false;
		if (eat(c, ':') && !number(c, U32, true))
			return false;
	} while (eat(c, ','));
	return true;
}

/* The code inside "[...]" of a status response. */
static bool
resp_code(struct cur *c)
{
	/* In the greeting only CAPABILITY, or a code without arguments:
	 * libetpan 1.9.4's greeting parser crashes on "[PERMANENTFLAGS ()]"
	 * (found by tests/fuzz/fuzz_imap_store.c). */
	if (c->greeting && !word(c, "CAPABILITY"))
		return atom(c, false) && peek(c, ']');
	if (c->greeting || word(c, "CAPABILITY"))
		return capabilities(c);
	if (word(c, "PERMANENTFLAGS"))
		return sp(c) && flag_list(c, true);
	if (word(c, "UIDNEXT") || word(c, "UIDVALIDITY") || word(c, "UNSEEN"))
		return sp(c) && number(c, U32, true);
	if (word(c, "HIGHESTMODSEQ"))
		return sp(c) && number(c, UINT64_MAX / 2, true);
	if (word(c, "APPENDUID"))
		return sp(c) && number(c, U32, true) && sp(c) && uid_set(c);
	if (word(c, "COPYUID"))
		return sp(c) && number(c, U32, true) && sp(c) && uid_set(c) && sp(c) &&
		    uid_set(c);
	if (word(c, "BADCHARSET")) {
		if (!sp(c))
			return true;
		if (!eat(c, '('))
			return false;
		do
			if (!atom(c, true) && !quoted(c))
				return false;
		while (sp(c));
		return eat(c, ')');
	}
	/* ALERT, PARSE, READ-ONLY, TRYCREATE, OVERQUOTA, LIMIT, ... and
	 * atom [SP 1*<TEXT-CHAR except "]">]. */
	if (!atom(c, false))
		return false;
	if (sp(c))
		text(c, true);
	return true;
}

/* ["[" resp-text-code "]" [SP]] text, all optional. */
static bool
resp_text(struct cur *c)
{
	if (eat(c, '[')) {
		if (!resp_code(c) || !eat(c, ']'))
			return false;
		if (!sp(c))
			return true;
	}
	text(c, false);
	return true;
}

/* [SP resp-text] after OK/NO/BAD/BYE/PREAUTH. */
static bool
cond_rest(struct cur *c)
{
	if (!sp(c))
		return true;
	return resp_text(c);
}

/* A literal ("{N}" CRLF and N bytes, N at most IMAP_GUARD_LITERAL_MAX):
 * the check stops and announces it, or, when its bytes are there, skips
 * them. name: a mailbox name, which holds no NUL, CR or LF. */
static bool
literal(struct cur *c, bool name)
{
	uint64_t n = 0;
	const char *s;

	if (!eat(c, '{'))
		return false;
	if (!number_of(c, IMAP_GUARD_LITERAL_MAX, false, &n) || !eat(c, '}'))
		return false;
	eat(c, '\r');
	if (!eat(c, '\n'))
		return false;
	if (c->p == c->end) {
		/* The line so far ends here: the literal is still to come. */
		c->more = true;
		c->literal = (size_t)n;
		return true;
	}
	if ((uint64_t)(c->end - c->p) < n)
		return false;
	for (s = c->p; name && s < c->p + n; s++)
		if (*s == '\0' || *s == '\r' || *s == '\n')
			return false;
	c->p += n;
	return true;
}

/* A mailbox name (LIST, STATUS): atom (with "]"), quoted, or a literal. */
static bool
mailbox(struct cur *c)
{
	if (peek(c, '"'))
		return quoted(c);
	if (peek(c, '{'))
		return literal(c, true);
	return atom(c, true);
}

/* string: quoted or literal (RFC 3501); nstring: NIL too. */
static bool
nstring(struct cur *c, bool nil)
{
	if (nil && word(c, "NIL"))
		return true;
	if (peek(c, '"'))
		return quoted(c);
	return literal(c, false);
}

static bool
list_rest(struct cur *c)
{
	if (!sp(c) || !flag_list(c, false) || !sp(c))
		return false;
	if (!word(c, "NIL")) {
		if (!eat(c, '"'))
			return false;
		if (eat(c, '\\')) {
			if (!eat(c, '\\') && !eat(c, '"'))
				return false;
		} else if (at_end(c) || !text_char((unsigned char)*c->p) || *c->p == '"')
			return false;
		else
			c->p++;
		if (!eat(c, '"'))
			return false;
	}
	return sp(c) && mailbox(c);
}

/* "* n FETCH (FLAGS (...) UID n ...)": flag updates of the mailbox we
 * EXAMINEd, if another client changed one. */
static bool
fetch_rest(struct cur *c)
{
	if (!sp(c) || !eat(c, '('))
		return false;
	do {
		if (word(c, "FLAGS")) {
			if (!sp(c) || !flag_list(c, false))
				return false;
		} else if (word(c, "UID")) {
			if (!sp(c) || !number(c, U32, true))
				return false;
		} else if (word(c, "MODSEQ")) {
			if (!sp(c) || !eat(c, '(') || !number(c, UINT64_MAX / 2, false) ||
			    !eat(c, ')'))
				return false;
		} else if (c->end - c->p >= 5 && strncasecmp(c->p, "BODY[", 5) == 0) {
			/* find()'s UID FETCH of the key header (store/imap_find.c):
			 * BODY[HEADER.FIELDS (NAME ...)] SP nstring. */
			c->p += 5;
			while (c->p < c->end && (atom_char((unsigned char)*c->p) ||
			    *c->p == ' ' || *c->p == '(' || *c->p == ')' || *c->p == '"'))
				c->p++;
			if (!eat(c, ']'))
				return false;
			if (eat(c, '<') && (!number(c, U32, false) || !eat(c, '>')))
				return false;
			if (!sp(c) || !nstring(c, true))
				return false;
			if (c->more)
				return true;	/* the literal comes; checked again after */
		} else
			return false;
	} while (sp(c));
	return eat(c, ')');
}

/* RFC 2342: NIL, or "(" 1*("(" string SP (quoted delimiter / NIL)
 * *(SP string SP "(" string *(SP string) ")") ")") ")". */
static bool
namespace_one(struct cur *c)
{
	if (word(c, "NIL"))
		return true;
	if (!eat(c, '('))
		return false;
	do {
		if (!eat(c, '(') || !quoted(c) || !sp(c) || (!word(c, "NIL") && !quoted(c)))
			return false;
		while (sp(c)) {
			if (!quoted(c) || !sp(c) || !eat(c, '('))
				return false;
			do
				if (!quoted(c))
					return false;
			while (sp(c));
			if (!eat(c, ')'))
				return false;
		}
		if (!eat(c, ')'))
			return false;
	} while (peek(c, '('));
	return eat(c, ')');
}

/* "* STATUS" mailbox SP "(" [status-att SP number *(SP ...)] ")": find()
 * asks UIDNEXT while it waits for a quiet folder. */
static bool
status_rest(struct cur *c)
{
	if (!sp(c) || !mailbox(c) || c->more || !sp(c) || !eat(c, '('))
		return false;
	if (eat(c, ')'))
		return true;
	do
		if (!atom(c, false) || !sp(c) || !number(c, UINT64_MAX / 2, false))
			return false;
	while (sp(c));
	return eat(c, ')');
}

static bool
untagged(struct cur *c)
{
	if (word(c, "OK") || word(c, "NO") || word(c, "BAD") || word(c, "BYE") ||
	    word(c, "PREAUTH"))
		return cond_rest(c);
	if (word(c, "CAPABILITY"))
		return capabilities(c);
	if (word(c, "LIST") || word(c, "LSUB"))
		return list_rest(c);
	if (word(c, "FLAGS"))
		return sp(c) && flag_list(c, false);
	if (word(c, "NAMESPACE"))
		return sp(c) && namespace_one(c) && sp(c) && namespace_one(c) && sp(c) &&
		    namespace_one(c);
	if (word(c, "STATUS"))
		return status_rest(c);
	if (word(c, "SEARCH")) {
		while (sp(c))
			if (!number(c, U32, true))
				return false;
		return true;
	}
	if (!number(c, U32, false) || !sp(c))
		return false;
	if (word(c, "EXISTS") || word(c, "RECENT") || word(c, "EXPUNGE"))
		return true;
	if (word(c, "FETCH"))
		return fetch_rest(c);
	return false;
}

const char *
imap_guard_line(void *ctx, const char *line, size_t len, struct linecap_more *m)
{
	struct imap_guard *g = ctx;
	struct cur c = { line, line + len, false, 0, !g->greeted };
	bool ok;

	if (!g->greeted) {
		/* Before anything, the greeting: OK or PREAUTH (libetpan 1.9.4
		 * never frees a BYE one; the server has refused us then). */
		if (len >= 5 && strncasecmp(line, "* BYE", 5) == 0) {
			g->bye = true;
			return "the server refused the connection (BYE greeting)";
		}
		if ((len < 4 || strncasecmp(line, "* OK", 4) != 0) &&
		    (len < 9 || strncasecmp(line, "* PREAUTH", 9) != 0))
			return "a greeting that is neither OK nor PREAUTH";
		g->greeted = true;
	}

	if (eat(&c, '+')) {
		if (sp(&c))
			text(&c, false);
		ok = true;
	} else if (eat(&c, '*')) {
		ok = sp(&c) && untagged(&c);
	} else {
		/* tag: ASTRING-CHARs but "+" */
		const char *s = c.p;

		while (c.p < c.end && (atom_char((unsigned char)*c.p) || *c.p == ']') &&
		    *c.p != '+')
			c.p++;
		ok = c.p > s && sp(&c) && (word(&c, "OK") || word(&c, "NO") ||
		    word(&c, "BAD")) && cond_rest(&c);
	}
	if (ok && c.more) {
		m->more = true;
		m->literal = c.literal;
		return NULL;
	}
	if (ok) {
		eat(&c, '\r');
		ok = eat(&c, '\n') && at_end(&c);
	}
	return ok ? NULL : "a reply line outside what the store understands";
}

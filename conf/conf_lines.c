/* Line numbers that libconfuse 3.3 gets wrong, repaired.
 *
 * Its lexer, as measured on 3.3, counts three lines for the newline that
 * ends a "#" or "//" comment (two at end of file) and one extra line for
 * each block comment, so every comment shifts all later line numbers. We
 * cannot fix the library, so this file walks the text the way that lexer
 * does (its token rules, lexer.l, with "//" always opening a comment as in
 * 3.3), counting both the real line and libconfuse's count, and keeps a
 * table from the latter back to the former. tests/unit/test_conf.c checks
 * exact line numbers after comments, so a libconfuse that counts
 * differently fails there.
 *
 * The same walk finds what libconfuse lets pass silently: NUL bytes (raw,
 * or the escapes \0 and \x00, which cut a string short without a word)
 * a block left open at end of file (which it takes as closed), and a block
 * comment left open (which it takes as the rest of the file); and it
 * names the line where an unterminated string starts, where libconfuse
 * only says "premature end of file".
 *
 * A wrong guess here can only misplace a line number or add an error,
 * never change what the file means: libconfuse still parses the text. */
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf_priv.h"
#include "lib/xmalloc.h"

/* What libconfuse 3.3 adds to its count for a line comment ending in a
 * newline, for one ending at end of file, and for a block comment's end. */
#define LINE_COMMENT_NL		3
#define LINE_COMMENT_EOF	2
#define BLOCK_COMMENT_END	1

/* Bytes that end an unquoted token in libconfuse's lexer. */
static const char stop_chars[] = " #\"'\t\n\r={}()+,*";

struct scan {
	struct conf_load	*ld;
	const char		*p, *end;
	int			 real;		/* the real line */
	int			 lib;		/* libconfuse's count */
	size_t			 cap;
	int			 nul_line;	/* line of the last NUL error */
	int			*open;		/* lines of the unclosed "{" */
	size_t			 n_open, cap_open;
};

static void
advance(struct scan *s, int real, int lib)
{
	struct conf_load *ld = s->ld;

	s->real += real;
	while (lib-- > 0) {
		s->lib++;
		if ((size_t)s->lib >= s->cap) {
			s->cap = s->cap * 2 + 64;
			ld->real_line = xreallocarray(ld->real_line, s->cap,
			    sizeof *ld->real_line);
		}
		ld->real_line[s->lib] = s->real;
		ld->n_real = (size_t)s->lib + 1;
	}
}

static bool
is_stop(char c)
{
	/* strchr() would also find the terminating NUL: a NUL byte is an
	 * ordinary token character for the lexer. */
	return c != '\0' && strchr(stop_chars, c) != NULL;
}

static void
nul(struct scan *s, const char *what)
{
	if (s->nul_line == s->real)
		return;
	s->nul_line = s->real;
	conf_err(s->ld, s->real, "%s", what);
}

/* "#..." or "//..." up to the end of the line. */
static void
line_comment(struct scan *s)
{
	const char *nl = memchr(s->p, '\n', (size_t)(s->end - s->p));

	if (nl == NULL) {
		s->p = s->end;
		advance(s, 0, LINE_COMMENT_EOF);
		return;
	}
	s->p = nl + 1;
	advance(s, 1, LINE_COMMENT_NL);
}

static void
block_comment(struct scan *s)
{
	int start = s->real;

	for (s->p += 2; s->p < s->end; s->p++) {
		if (*s->p == '\n')
			advance(s, 1, 1);
		else if (*s->p == '*' && s->p + 1 < s->end && s->p[1] == '/') {
			s->p += 2;
			advance(s, 0, BLOCK_COMMENT_END);
			return;
		}
	}
	/* libconfuse takes the rest of the file as comment, silently. */
	conf_err(s->ld, start, "a comment is never closed (missing \"*/\")");
	s->ld->open_at_eof = start;
}

/* "${NAME}": the lexer's rule spans newlines without counting them. */
static bool
env_subst(struct scan *s)
{
	const char *q;

	if (s->p + 1 >= s->end || s->p[0] != '$' || s->p[1] != '{')
		return false;
	q = memchr(s->p, '}', (size_t)(s->end - s->p));
	if (q == NULL)
		return false;
	for (; s->p <= q; s->p++)
		if (*s->p == '\n')
			advance(s, 1, 0);
	return true;
}

static size_t
span(const char *p, const char *end, const char *set, size_t max)
{
	size_t n = 0;

	while (p + n < end && n < max && p[n] != '\0' && strchr(set, p[n]))
		n++;
	return n;
}

/* A backslash escape inside "...": s->p is at the backslash. The longest
 * match wins, as in the lexer: "\08" is a bad escape, not "\0" + "8". */
static void
dq_escape(struct scan *s)
{
	const char *e = s->p + 1;
	size_t digits, octal, hex;

	if (e >= s->end) {
		s->p = e;
		return;
	}
	digits = span(e, s->end, "0123456789", (size_t)-1);
	octal = span(e, s->end, "01234567", 3);
	if (*e == '\n') {
		advance(s, 1, 1);
		s->p = e + 1;
	} else if (octal > 0 && digits <= octal) {
		if (span(e, s->end, "0", octal) == octal)
			nul(s, "a string holds a NUL character");
		s->p = e + octal;
	} else if (digits > 0) {
		s->p = e + digits;
	} else if (*e == 'x' && (hex = span(e + 1, s->end,
	    "0123456789abcdefABCDEF", 2)) > 0) {
		if (span(e + 1, s->end, "0", hex) == hex)
			nul(s, "a string holds a NUL character");
		s->p = e + 1 + hex;
	} else
		s->p = e + 1;
}

static void
unterminated(struct scan *s, int line)
{
	conf_err(s->ld, line, "a string is never closed (missing quote)");
	s->ld->open_at_eof = line;
}

static void
dq_string(struct scan *s)
{
	int start = s->real;

	for (s->p++; s->p < s->end; ) {
		if (*s->p == '"') {
			s->p++;
			return;
		}
		if (*s->p == '\\')
			dq_escape(s);
		else if (env_subst(s))
			continue;
		else {
			if (*s->p == '\n')
				advance(s, 1, 1);
			else if (*s->p == '\0')
				nul(s, "the file holds a NUL byte");
			s->p++;
		}
	}
	unterminated(s, start);
}

static void
sq_string(struct scan *s)
{
	int start = s->real;

	for (s->p++; s->p < s->end; s->p++) {
		if (*s->p == '\'') {
			s->p++;
			return;
		}
		if (*s->p == '\\' && s->p + 1 < s->end)
			s->p++;
		if (*s->p == '\n')
			advance(s, 1, 1);
		else if (*s->p == '\0')
			nul(s, "the file holds a NUL byte");
	}
	unterminated(s, start);
}

static void
unquoted(struct scan *s)
{
	for (; s->p < s->end && !is_stop(*s->p); s->p++)
		if (*s->p == '\0')
			nul(s, "the file holds a NUL byte");
}

static void
brace(struct scan *s, char c)
{
	if (c == '}') {
		if (s->n_open > 0)
			s->n_open--;
		return;
	}
	if (s->n_open == s->cap_open) {
		s->cap_open = s->cap_open * 2 + 8;
		s->open = xreallocarray(s->open, s->cap_open, sizeof *s->open);
	}
	s->open[s->n_open++] = s->real;
}

static void
token(struct scan *s)
{
	char c = *s->p, next = s->p + 1 < s->end ? s->p[1] : '\0';

	if (c == '\n') {
		s->p++;
		advance(s, 1, 1);
	} else if (c == '#' || (c == '/' && next == '/'))
		line_comment(s);
	else if (c == '/' && next == '*')
		block_comment(s);
	else if (c == '"')
		dq_string(s);
	else if (c == '\'')
		sq_string(s);
	else if (env_subst(s))
		return;
	else if (is_stop(c)) {
		if (c == '{' || c == '}')
			brace(s, c);
		s->p++;
	} else
		unquoted(s);
}

void
conf_lines_scan(struct conf_load *ld, const char *buf, size_t len)
{
	struct scan s = { .ld = ld, .p = buf, .end = buf + len };

	/* Line 0 means "no line"; both counts start at 1. */
	s.real = 1;
	advance(&s, 0, 1);
	ld->real_line[0] = 0;
	while (s.p < s.end)
		token(&s);
	/* The last line is the one before the end of file, if the file
	 * ends with a newline, as editors count. */
	ld->n_lines = s.real - (len > 0 && buf[len - 1] == '\n');
	if (ld->n_lines < 1)
		ld->n_lines = 1;
	ld->unclosed = s.n_open > 0 ? s.open[s.n_open - 1] : 0;
	free(s.open);
}

int
conf_lines_real(const struct conf_load *ld, int lib)
{
	int real;

	if (lib <= 0 || ld->n_real == 0)
		return 0;
	if ((size_t)lib >= ld->n_real)
		lib = (int)ld->n_real - 1;
	real = ld->real_line[lib];
	return real < ld->n_lines ? real : ld->n_lines;
}

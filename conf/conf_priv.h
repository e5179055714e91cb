/* Private to conf/: the state of one conf_load() call, shared by the
 * parser (conf_parse.c), the line repair (conf_lines.c) and the checks
 * (conf_check.c). Nothing outside conf/ includes this file. */
#ifndef POP3BRIDGE_CONF_PRIV_H
#define POP3BRIDGE_CONF_PRIV_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "conf/conf.h"

/* Limits on values sent in protocol lines. */
#define CONF_MAX_HOST		255
#define CONF_MAX_USER		255
#define CONF_MAX_PASSWORD	1024

/* One error message; line 0 means "no line". */
struct conf_msg {
	int		 line;
	size_t		 seq;		/* order found: keeps the sort stable */
	char		*text;		/* owned */
};

/* Where a value of the plain structs came from: the address of a struct
 * field (or of a whole block) and its line in the file. */
struct conf_where {
	const void	*key;
	int		 line;
};

/* conf_where entries by key: the index of the latest + 1, 0 empty; n a
 * power of 2, at least twice the entries (conf.c). */
struct conf_where_ix {
	size_t		*slots;
	size_t		 n;
};

struct conf_load {
	const char		*file;		/* as given by the caller */
	struct conf_msg		*msgs;		/* owned */
	size_t			 n_msgs;
	int			*real_line;	/* libconfuse's line -> real */
	size_t			 n_real;
	int			 n_lines;	/* lines in the file */
	int			 unclosed;	/* line of a "{" never closed */
	int			 open_at_eof;	/* line of a string or block comment
						   still open at end of file */
	struct conf_where	*fields;	/* lines of fields */
	size_t			 n_fields;
	struct conf_where_ix	 fields_ix;
	struct conf_where	*blocks;	/* lines of blocks ({ lines) */
	size_t			 n_blocks;
	struct conf_where_ix	 blocks_ix;
};

/* conf.c; conf_free_accounts frees c's accounts (and empties the array),
 * conf_free_account the strings of one. */
void	conf_free_accounts(struct conf *);
void	conf_free_account(struct conf_account *);
/* conf.c */
void	conf_err(struct conf_load *, int, const char *, ...)
	    __attribute__((format(printf, 3, 4)));
void	conf_verr(struct conf_load *, int, const char *, va_list)
	    __attribute__((format(printf, 3, 0)));
void	conf_note(struct conf_load *, const void *, int);
void	conf_note_block(struct conf_load *, const void *, int);
int	conf_line(const struct conf_load *, const void *);
int	conf_block_line(const struct conf_load *, const void *);
char	*conf_expand_tilde(const char *);
const char *conf_home(void);
bool	conf_name_ok(const char *);

/* conf_lines.c: libconfuse 3.3 miscounts lines after comments; this scans
 * the text as its lexer does and maps its line numbers back to real ones.
 * It also reports NUL bytes, unterminated strings and comments, and sets
 * ld->unclosed and ld->open_at_eof, which libconfuse would all let
 * pass. */
void	conf_lines_scan(struct conf_load *, const char *, size_t);
int	conf_lines_real(const struct conf_load *, int);

/* conf_parse.c: parses fp into c; -1 when libconfuse stopped on a syntax
 * error (already reported through ld), else 0 (other errors may have been
 * reported: the caller counts ld->n_msgs). With main (an include_dir
 * file), only c->accounts is filled, with main's defaults, and any other
 * top-level key or block is an error. */
int	conf_parse(struct conf_load *, FILE *, struct conf *, const struct conf *main);

/* conf_check.c: the semantic checks on the converted structs.
 * conf_check_accounts checks the accounts of c (an include_dir file's)
 * against the main configuration main. */
void	conf_check(struct conf_load *, const struct conf *);
void	conf_check_accounts(struct conf_load *, const struct conf *main, const struct conf *c);
void	conf_check_mode(struct conf_load *, const struct conf *, const struct stat *);

#endif

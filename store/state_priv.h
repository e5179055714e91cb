/* For the other SQL modules of store/ only (store/outbox.c): the one SQLite
 * connection of a struct state, so that every table lives in one database
 * with one schema (the migrations in state.c). Not for bridge/. */
#ifndef POP3BRIDGE_STATE_PRIV_H
#define POP3BRIDGE_STATE_PRIV_H

#include <sqlite3.h>

#include "store/state.h"

sqlite3 *state_sqlite(struct state *st);

/* Sets *err (when err is not NULL) to "what: SQLite's last message" and
 * returns -1. */
int state_error(struct state *st, const char *what, char **err);

/* The connection's prepared statement for sql, prepared at its first use
 * and kept until state_close(): parsing the SQL again at every call cost
 * more than running it. sql must be a string literal (kept by its
 * address, so a built string would be prepared anew and kept at every
 * call). The statement is handed back with state_stmt_done() (reset,
 * bindings cleared), never finalised; no two uses of one overlap. NULL
 * with *err set (when err is not NULL). */
sqlite3_stmt *state_stmt(struct state *st, const char *sql, const char *what,
    char **err);
void state_stmt_done(sqlite3_stmt *s);

/* Column i of the current row of s as an allocated string (the caller
 * frees it), or NULL when the column is NULL. */
char *state_col_str(sqlite3_stmt *s, int i);

#endif

/* `import-state --from fetchmail|getmail|mpop FILE ACCOUNT`: the UIDLs
 * another fetcher recorded as seen for ACCOUNT's POP3 login become
 * "delivered elsewhere" rows (state_mark_seen_elsewhere), so the next
 * sync fetches only what that tool never did (doc/DESIGN.md, Importing
 * another tool's state). */
#ifndef POP3BRIDGE_IMPORT_STATE_H
#define POP3BRIDGE_IMPORT_STATE_H

#include "conf/conf.h"

/* argv[0..argc) are the command's arguments. Prints one summary line on
 * stdout. Returns EX_OK; EX_USAGE (bad arguments, unknown account);
 * EX_NOINPUT (FILE unreadable); EX_DATAERR (FILE does not parse, or holds
 * no entry of ACCOUNT's user and server: "FILE:LINE: why" on stderr);
 * EX_IOERR (the state). */
int import_state_run(const struct conf *c, int argc, char **argv);

#endif

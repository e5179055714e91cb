/* The Maildir++ delivery backend, laid out as Dovecot expects it: INBOX is
 * the root, folder "a/b" is root/.a.b with each level in modified UTF-7,
 * every folder with tmp/ new/ cur/ (and "maildirfolder" below the root).
 * Messages go tmp/KEY -> new/KEY, or cur/KEY:2,S when DELIVER_SEEN.
 * Locations are relative to the root: "new/KEY", ".Work/new/KEY".
 * On a failed deliver() no location is set and every fd is closed. */
#ifndef POP3BRIDGE_MAILDIR_H
#define POP3BRIDGE_MAILDIR_H

#include "store/deliver.h"

extern const struct deliver_backend maildir_backend;

/* The directory of a folder relative to the root: "" for INBOX (any case),
 * ".a.b" for "a/b". Refuses empty levels, "." in a level (the Maildir++
 * separator), control characters and invalid UTF-8. Returns 0 with *dir
 * allocated, or -1 with *err allocated. */
int maildir_folder_dir(const char *folder, char **dir, char **err);

#endif

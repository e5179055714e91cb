/* The Maildir++ delivery backend, laid out as Dovecot expects it: INBOX is
 * the root, folder "a/b" is root/.a.b with each level in modified UTF-7,
 * every folder with tmp/ new/ cur/ (and "maildirfolder" below the root).
 * Messages go tmp/KEY -> new/KEY, or cur/KEY:2,S when DELIVER_SEEN.
 * Locations are relative to the root: "new/KEY", ".Work/new/KEY".
 * On a failed deliver() no location is set and every fd is closed. */
#ifndef POP3BRIDGE_MAILDIR_H
#define POP3BRIDGE_MAILDIR_H

#include <stdbool.h>

#include "store/deliver.h"

extern const struct deliver_backend maildir_backend;

/* The directory of a folder relative to the root: "" for INBOX (any case),
 * ".a.b" for "a/b". Refuses empty levels, "." in a level (the Maildir++
 * separator), control characters and invalid UTF-8. Returns 0 with *dir
 * allocated, or -1 with *err allocated. */
int maildir_folder_dir(const char *folder, char **dir, char **err);

/* True if the file name is a delivery key made with exactly this key_tag:
 * "<digits>.M<digits>P<digits>Q<digits>" key_tag "." (so tag X1 does not
 * match a key of X12). */
bool maildir_key_has_tag(const char *name, const char *key_tag);

#endif

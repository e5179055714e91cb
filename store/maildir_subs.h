/* Dovecot's subscriptions file ("subscriptions" at a Maildir++ root),
 * written as Dovecot does: under its dotlock "subscriptions.lock", renamed
 * over the file, version 2 for a new file, an old file's version kept. */
#ifndef POP3BRIDGE_MAILDIR_SUBS_H
#define POP3BRIDGE_MAILDIR_SUBS_H

/* Subscribes the folder of directory dir (".a.b", relative to root)
 * unless it is subscribed. Only cosmetic: a failure is logged (naming
 * account) and delivery goes on. */
void maildir_subs_add(const char *root, const char *dir, const char *account);

#endif

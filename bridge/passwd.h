/* Users of the relay: a Dovecot passwd-file ("user:{SCHEME}hash:..." one
 * per line, '#' comments), so the same credentials serve Dovecot IMAP and
 * the SMTP relay. Supported schemes: {SHA512-CRYPT}, {SHA256-CRYPT},
 * {MD5-CRYPT}, {BLF-CRYPT} (bcrypt, libxcrypt), {CRYPT} (any crypt(3)
 * hash; also the default without a {SCHEME}), {PLAIN}/{CLEAR}/{CLEARTEXT}.
 * The file is read again whenever it changes (mtime, size or inode), so
 * `doveadm pw` edits take effect without a reload. Passwords are never
 * logged and are compared in constant time. */
#ifndef POP3BRIDGE_PASSWD_H
#define POP3BRIDGE_PASSWD_H

struct passwd_db;

/* A handle on the file at path (copied); nothing is read yet. Free with
 * passwd_free. */
struct passwd_db *passwd_open(const char *path);
void passwd_free(struct passwd_db *db);

/* Checks user's password for a login from peer (a numeric IPv4 or IPv6
 * address; NULL unknown): 1 accepted, 0 refused (no such user, wrong or
 * empty password, an unsupported scheme, or the user's Dovecot extra
 * fields say so: "nologin", "nopassword", or "allow_nets=NET[,NET...]"
 * (ADDR or ADDR/BITS, IPv4 or IPv6) without peer in one of them; an
 * allow_nets we cannot evaluate refuses), -1 when the file cannot be read
 * (*err allocated; the previous contents, if any, are not used then). */
int passwd_check(struct passwd_db *db, const char *user, const char *pass,
    const char *peer, char **err);

/* Verifies pass against one password field ("{SCHEME}hash" or a bare
 * crypt hash): 1 match, 0 no match, -1 unsupported or malformed. */
int passwd_verify(const char *field, const char *pass);

#endif

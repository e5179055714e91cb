/* The configuration: parsed with libconfuse, validated, then converted into
 * these plain structs so that no libconfuse type leaks past conf/.
 * Strings are owned by the struct conf and freed by conf_free(). */
#ifndef POP3BRIDGE_CONF_H
#define POP3BRIDGE_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum conf_tls { CONF_TLS_IMPLICIT, CONF_TLS_STARTTLS, CONF_TLS_NONE };
enum conf_auth { CONF_AUTH_AUTO, CONF_AUTH_USER, CONF_AUTH_APOP, CONF_AUTH_PLAIN, CONF_AUTH_XOAUTH2,
    CONF_AUTH_LOGIN /* smtp, imap store */, CONF_AUTH_OAUTHBEARER /* RFC 7628 */ };
enum conf_store_type { CONF_STORE_MAILDIR, CONF_STORE_IMAP };

/* A remote server: an account's pop3 {} and smtp {} blocks, the imap store. */
struct conf_server {
	char *host;
	unsigned port;              /* default from tls: pop3 995/110, smtp 465/587, imap 993/143 */
	enum conf_tls tls;          /* default implicit */
	char *user;                 /* may be NULL */
	char *password;             /* NULL unless set in the file */
	char *password_command;     /* NULL unless set; run by conf_password() */
	enum conf_auth auth;        /* pop3: auto, user, apop, plain, xoauth2,
	                               oauthbearer; smtp: auto, plain, login, xoauth2,
	                               oauthbearer; imap store: auto, login, plain,
	                               xoauth2, oauthbearer */
	char *ca_file;              /* NULL: system trust store only */
	unsigned timeout;           /* seconds per protocol step; default 60 */
	bool allow_plaintext;       /* required for tls=none with a password */
};

struct conf_store {
	enum conf_store_type type;  /* default maildir */
	char *path;                 /* maildir root, "~" expanded, may hold "%u" */
	struct conf_server imap;    /* type = imap */
	char *master_user;          /* imap: Dovecot master login, NULL if unset */
	char *dedup;                /* NULL or "message-id" */
};

struct conf_account {
	char *name;
	char *local_user;           /* default: the invoking user's login name */
	char *folder;               /* default "INBOX"; "/" separates hierarchy levels */
	struct conf_server pop3;
	bool leave_on_server;       /* default true */
	unsigned delete_after_days; /* default 0 = never */
	unsigned uidl_reset_threshold; /* percent of unknown UIDLs that means a reset; 0 off, default 50 */
	unsigned poll_interval;     /* default: the top-level poll_interval */
	uint64_t max_message_size;  /* octets (LIST); larger ones are skipped;
	                               default: the top-level max_message_size */
	unsigned pass_timeout;      /* seconds a whole pass may take; default: the top level's */
	bool import_seen;           /* default false */
	bool has_smtp;
	struct conf_server smtp;
	char **addresses;
	size_t n_addresses;
	char *sent_folder;          /* default "Sent" */
	bool sent_folder_set;       /* sent_folder is in the file; when not, the
	                               store's \Sent folder is used if it has
	                               one (store/deliver.h) */
	int line;                   /* line of the account block, for messages */
};

struct conf_relay {
	char **listen;              /* default { "127.0.0.1:1587" } */
	size_t n_listen;
	char *tls_cert, *tls_key;   /* NULL if unset */
	char *passwd_file;
	unsigned queue_lifetime;    /* seconds, default 432000 */
	char **listen_tls;          /* implicit-TLS listeners (submissions); default none */
	size_t n_listen_tls;
	uint64_t max_message_size;  /* bytes, default 35 MiB */
	unsigned max_recipients;    /* per message, default 100 */
	unsigned max_connections;   /* sessions at once, default 20 */
	unsigned timeout;           /* seconds per client command, default 300 (DATA: twice) */
	unsigned retry_initial;     /* seconds before the first retry, doubling to 1 h; default 60 */
	unsigned upstream_connections; /* queue runner: connections to one account's
	                               smtp server at once, 1..32; default 4 */
};

struct conf {
	char *path;                 /* the file that was read */
	char *state_dir;            /* "~" expanded; default ~/.local/state/pop3bridge */
	unsigned poll_interval;     /* default 300 */
	unsigned max_parallel;      /* default 4 */
	unsigned max_per_host;      /* passes at once on one POP3 host, default 2 */
	unsigned batch_messages;    /* default 500 */
	uint64_t batch_bytes;       /* default 64 MiB */
	char *metrics_file;         /* Prometheus textfile, NULL when unset */
	char *include_dir;          /* more account blocks: the *.conf files of DIR; NULL unset */
	uint64_t max_message_size;  /* import: octets, default 100 MiB */
	unsigned pass_timeout;      /* seconds a whole account pass may take, default 3600 */
	struct conf_store store;
	struct conf_account *accounts;
	size_t n_accounts;
	struct conf_relay relay;
	unsigned shard_k, shard_n;  /* conf_shard(): this instance's K of N; 0 0 all */
};

/* The default path: $XDG_CONFIG_HOME/pop3bridge/pop3bridge.conf if
 * XDG_CONFIG_HOME is set (else ~/.config/...) and that file exists, else
 * /etc/pop3bridge.conf. Returns an allocated string. */
char *conf_default_path(void);

/* Parses and validates path. On success returns 0 and *out (free with
 * conf_free). On failure prints every error found, one per line, as
 * "FILE:LINE: message" (or "FILE: message" when there is no line) to errf
 * and returns EX_CONFIG (78); EX_NOINPUT (66) when the file cannot be read. */
int conf_load(const char *path, struct conf **out, FILE *errf);
void conf_free(struct conf *c);

/* Wipes and forgets every password and password_command of c (store and
 * accounts), for a process that must not hold them (the relay). */
void conf_forget_secrets(struct conf *c);

/* Scale-out (--shard K/N): account NAME belongs to shard K of N when
 * conf_shard_hash(NAME) mod N == K - 1; the hash is FNV-1a 64 of the
 * name's bytes, stable by contract. conf_shard_of gives that K (1 when
 * n is 0). conf_shard_parse reads "K/N" (1 <= K <= N <= 100000): 0, or
 * -1 when s is not one. conf_shard keeps only the accounts of shard k of
 * n in c (n <= 1: all) and records k and n in c (for a reload). */
uint64_t conf_shard_hash(const char *name);
unsigned conf_shard_of(const char *name, unsigned n);
int conf_shard_parse(const char *s, unsigned *k, unsigned *n);
void conf_shard(struct conf *c, unsigned k, unsigned n);

/* Finds an account by name; NULL if none. */
const struct conf_account *conf_account(const struct conf *c, const char *name);

/* The first account with addr among its addresses (compared in any case),
 * of local_user when that is not NULL; NULL if none. Who may send as whom
 * (the relay, `sendmail`). */
const struct conf_account *conf_account_by_address(const struct conf *c,
    const char *addr, const char *local_user);

/* s with every "%u" replaced by user. Allocated. */
char *conf_expand_user(const char *s, const char *user);

/* The maildir root of an account: store.path with "%u" replaced by the
 * account's local_user. Allocated. */
char *conf_store_path(const struct conf *c, const struct conf_account *a);

/* The IMAP store login of an account: store.user (default "%u") with "%u"
 * replaced by its local_user. Allocated. */
char *conf_store_user(const struct conf *c, const struct conf_account *a);

/* Where an account's mail goes, as shown to users and as the scope of
 * cross-account dedup (accounts with equal locations share a store):
 * "maildir:/root/of/Maildir" or "imap:user@host:port". Allocated. */
char *conf_store_location(const struct conf *c, const struct conf_account *a);

/* The secret of a server block: the password, or the first line of
 * password_command's output (run with /bin/sh -c in a process group of its
 * own, stdin from /dev/null, bounded at 4 KiB, CR/LF/NUL refused). The
 * command must print and exit within s->timeout seconds (60 when 0);
 * otherwise, or at the pass deadline or a stop request (lib/deadline.h),
 * its whole process group is killed and reaped. *out is allocated (NULL
 * when the block has neither); 0 on success, -1 with *err allocated naming
 * the command's failure but never its output. */
int conf_password(const struct conf_server *s, char **out, char **err);

/* conf_password() telling the failures apart: -1 the command failed or
 * printed nothing usable (fix the configuration), -2 it was killed by a
 * limit ("password_command timed out after N s", or interrupted): try
 * again later. */
int conf_password_run(const struct conf_server *s, char **out, char **err);

/* True if s (not NULL) is a value fit for a protocol line: no CR or LF
 * (NUL cannot be in a C string), at most max bytes. */
bool conf_safe_value(const char *s, size_t max);

/* Stricter, for names and values libetpan quotes or we send as arguments
 * (user names, folder levels, delivery keys): no control character at
 * all, at most max bytes (doc/DESIGN.md, libetpan trap 7). */
bool conf_safe_name(const char *s, size_t max);

/* The plaintext-credential policy, the same for check-config and for
 * every client (POP3, SMTP, the IMAP store): a server block with a secret
 * to send (has_secret) over tls = "none" is refused unless it says
 * allow_plaintext = true. True when refused; CONF_PLAINTEXT_REFUSED says
 * why. */
bool conf_plaintext_refused(const struct conf_server *s, bool has_secret);
#define CONF_PLAINTEXT_REFUSED \
	"password over plaintext refused (tls = \"none\"); set allow_plaintext = true"

#endif

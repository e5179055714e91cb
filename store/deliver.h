/* The delivery interface: the sync loop writes every message through one
 * of these backends and never knows which store it is.
 *
 * Protocol, per batch (doc/DESIGN.md, The import protocol):
 *   tmp_create()  for each message: a temp file for its delivery key;
 *                 the caller writes the message to it (about size bytes:
 *                 a hint, 0 when unknown) and keeps the fd;
 *   deliver()     makes the whole batch durable in the store (after it
 *                 returns 0 every message is there and survives a crash,
 *                 except those it marked refused: the store said no to
 *                 that one message, e.g. over its size limit);
 *   find()        after a crash: is the message with this key in the store?
 *   tmp_discard() removes the temp file of a key that was not delivered;
 *   tmp_cleanup() removes every temp file a killed run left for an account.
 * Functions return 0 on success or -1 with *err allocated; open(),
 * deliver() and find() may also return another enum deliver_err saying
 * what kind of failure it was (the pass's exit code follows from it). */
#ifndef POP3BRIDGE_DELIVER_H
#define POP3BRIDGE_DELIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "conf/conf.h"

#define DELIVER_SEEN 0x1

/* Failures of open(), deliver() and find(). */
enum deliver_err {
	DELIVER_EIO = -1,	/* the store's files, or anything else */
	DELIVER_ETEMP = -2,	/* try again later: connection lost or timed out,
				   the store is full ([OVERQUOTA]) */
	DELIVER_EAUTH = -3,	/* TLS or login refused (a wrong password, a
				   refused token, PREAUTH, no usable mechanism) */
};

/* A folder name no configuration can hold (conf/ refuses a folder that
 * begins with a backslash): the store's folder for sent mail, the one
 * flagged \Sent (RFC 6154) where the store knows special-use flags, else
 * "Sent" (DELIVER_SENT_DEFAULT). What an account without sent_folder
 * files its Sent copies into. */
#define DELIVER_FOLDER_SENT "\\Sent"
#define DELIVER_SENT_DEFAULT "Sent"

struct deliver_msg {
	const char *key;        /* from deliver_key(); also the temp file name */
	const char *folder;     /* "INBOX", or "a/b" with "/" as hierarchy separator */
	int fd;                 /* the temp file, written; the backend closes it */
	uint64_t size;
	time_t date;            /* the message's internal date */
	unsigned flags;         /* DELIVER_* */
	char *location;         /* out, allocated: where it was stored */
	uint32_t uidvalidity;   /* out: IMAP APPENDUID, 0 when unknown */
	uint32_t uid;           /* out: IMAP APPENDUID, 0 when unknown */
	char *refused;          /* out, allocated: the store refused this one
	                           message (why); it is not stored, the rest
	                           of the batch is */
};

struct deliver_backend {
	const char *name;
	/* Line endings the store wants in message files: 0 LF, 1 CRLF. */
	int crlf;
	/* Whether folder DELIVER_FOLDER_SENT may be passed (else deliver_file
	 * maps it to DELIVER_SENT_DEFAULT). */
	bool special_use;
	/* A session for one account's pass; user is the account's local_user. */
	int (*open)(const struct conf *c, const struct conf_account *a, void **ctx, char **err);
	int (*tmp_create)(void *ctx, const char *folder, const char *key, uint64_t size, int *fd,
	    char **err);
	int (*tmp_discard)(void *ctx, const char *folder, const char *key, char **err);
	int (*tmp_cleanup)(void *ctx, const char *folder, const char *key_tag, char **err);
	int (*deliver)(void *ctx, struct deliver_msg *msgs, size_t n, char **err);
	/* 1 found (*location allocated), 0 not found, < 0 error. */
	int (*find)(void *ctx, const char *folder, const char *key, char **location, char **err);
	/* Optional (NULL: nothing to do). Says that the find() calls that
	 * follow settle rows a killed pass left, for keys[i] in folders[i]
	 * (i < n): a store may look them all up at once, and one that takes
	 * messages on its own time (an IMAP server still working through the
	 * commands of a dead connection) must be done with them before find()
	 * may answer "not found", or the message would be fetched and stored
	 * a second time. */
	void (*recovering)(void *ctx, const char *const *folders, const char *const *keys,
	    size_t n);
	void (*close)(void *ctx);
};

/* Stores messages outside the POP3 import (Sent copies, bounces) into
 * folder of account a's store: the content of each item's file at path
 * (any line endings; converted to what the store wants), with its flags
 * and date, under its delivery key (deliver_key(), or a fixed key, so that
 * a retry after a crash can find() it instead of storing it twice: an
 * item with look_first is looked up first and not stored again when it
 * is there). A temp file an earlier attempt left under an item's key is
 * replaced. One backend session and one deliver() batch for all: each
 * item holds an open file until then, so n should stay modest (tens).
 * Each item ends stored, or not with its err allocated (also when the
 * store refused that message: deliver_msg.refused). folder may be
 * DELIVER_FOLDER_SENT. Returns how many are stored; 0 with *err allocated
 * when the store could not be opened. */
struct deliver_file_item {
	const char *key;
	const char *path;
	unsigned flags;         /* DELIVER_* */
	time_t date;            /* the internal date */
	bool look_first;        /* an earlier attempt may have stored it */
	bool stored;            /* out */
	char *err;              /* out, allocated when not stored */
};
size_t deliver_files(const struct conf *c, const struct conf_account *a, const char *folder,
    struct deliver_file_item *v, size_t n, char **err);

/* One item, always looked up first: 0 when stored (or found), else -1
 * with *err allocated. */
int deliver_file(const struct conf *c, const struct conf_account *a, const char *folder,
    const char *key, const char *path, unsigned flags, time_t date, char **err);

/* The folder account a's Sent copies go to: its sent_folder when the
 * configuration sets one, else DELIVER_FOLDER_SENT. */
const char *deliver_sent_folder(const struct conf_account *a);

/* The backend for a store type; NULL when it is not built in. */
const struct deliver_backend *deliver_backend_for(enum conf_store_type t);

/* A new delivery key, unique across processes and hosts, usable as a
 * Maildir base name: "SECS.MUSECSPPIDQSEQ" + key_tag + "." + host (host with
 * "/" and ":" escaped as Maildir requires). key_tag (e.g. "X12" for account
 * 12) lets tmp_cleanup() recognise one account's leftovers. Allocated. */
char *deliver_key(const char *key_tag);

/* True if the file name is a delivery key made with exactly this key_tag:
 * "<digits>.M<digits>P<digits>Q<digits>" key_tag "." (so tag X1 does not
 * match a key of X12). */
bool deliver_key_has_tag(const char *name, const char *key_tag);

/* For the backends' tmp_cleanup(): removes every file in dir whose name is
 * a delivery key of key_tag, what a killed pass of that account left. A
 * missing dir is fine; account names the pass in debug logs. 0, or -1
 * with *err allocated. */
int deliver_tmp_sweep(const char *dir, const char *key_tag, const char *account,
    char **err);

#endif

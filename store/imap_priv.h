/* Shared by the IMAP backend's files, and by nothing else:
 *   imap.c          the backend (open, tmp_*, deliver, find, close);
 *   imap_conn.c     the session: connect, TLS, CAPABILITY, errors and
 *                   tagged replies of the commands we send ourselves;
 *   imap_auth.c     credentials and login (LOGIN, AUTHENTICATE PLAIN,
 *                   XOAUTH2, OAUTHBEARER);
 *   imap_folder.c   NAMESPACE, folder names, special-use, LIST, CREATE;
 *   imap_append.c   APPEND, streamed from the temp files.
 * Every function returns 0 or -1 with *err allocated, the failure's class
 * in im->why (see imap_result). */
#ifndef POP3BRIDGE_IMAP_PRIV_H
#define POP3BRIDGE_IMAP_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libetpan/libetpan.h>

#include "conf/conf.h"
#include "store/deliver.h"
#include "store/imap_guard.h"

#define IMAP_NAME_MAX	255	/* user names, delivery keys */
#define IMAP_PASS_MAX	8192	/* passwords; OAuth access tokens are long */
#define IMAP_MBOX_MAX	1000	/* an encoded mailbox name */
#define IMAP_CHUNK	65536	/* bytes of a literal per read and write */
#define IMAP_TEXT_MAX	200	/* server text quoted in an error */
#define IMAP_CODE_MAX	32	/* a response code's name */
#define IMAP_LINE_MAX	(2 * IMAP_GUARD_LITERAL_MAX)	/* a reply line, literals included */

/* What the server announced in its last CAPABILITY. */
struct imap_caps {
	bool starttls, logindisabled, sasl_ir;
	bool auth_plain, auth_xoauth2, auth_oauthbearer;
	bool uidplus, namespace, special_use, list_extended;
	bool multiappend, literal_plus, literal_minus;
	uint64_t appendlimit;	/* APPENDLIMIT=N (RFC 7889); 0: none announced */
};

/* The personal namespace (RFC 2342) folders are made in: "INBOX." with
 * "." on Courier, "" on Dovecot. Without NAMESPACE: "" and the delimiter
 * of LIST "" "". */
struct imap_ns {
	char *prefix;		/* as the server names it, never NULL */
	char delim;		/* hierarchy delimiter; 0: flat */
};

struct imap_folder {
	char *name;		/* as the caller gave it: "a/b", DELIVER_FOLDER_SENT */
	char *mbox;		/* as the server names it: mUTF-7, its delimiter */
	bool ready;		/* known to exist (and subscribed if we made it) */
	bool settled;		/* no other session was adding to it (im_find) */
};

struct imap {
	char *account;		/* for log messages */
	char *where;		/* "imap store HOST:PORT", prefix of every error */
	char *spool;		/* STATE_DIR/spool/imap */
	bool spool_ready;	/* made */
	bool spool_named;	/* no O_TMPFILE there: temp files named by key */
	uint64_t mem_bytes;	/* in memory temp files of the batch (imap.c) */
	const struct conf_server *srv;
	unsigned timeout;
	mailimap *m;
	bool broken;		/* the stream is in an unknown state */
	bool recovering;	/* find() settles rows a killed pass left */
	enum deliver_err why;	/* class of the last failure */
	struct imap_caps caps;
	struct imap_ns ns;
	/* The last tagged reply of a command we parsed ourselves. */
	int state;		/* MAILIMAP_RESP_COND_STATE_*, -1 none */
	char code[IMAP_CODE_MAX]; /* its response code ("TRYCREATE"), or "" */
	unsigned due_secs;	/* the deadline of the commands in flight; 0: none */
	char *selected;		/* mailbox EXAMINEd last, or NULL */
	/* A recovery's keys, looked up at once (imap_find.c). */
	struct imap_hit *hits;
	size_t n_hits;
	bool hits_done;		/* every key of hits was looked for */
	struct imap_folder *folders;
	size_t n_folders;
	char *buf;		/* IMAP_CHUNK bytes for streaming literals */
	struct imap_guard guard;	/* what of the replies libetpan may see */
};

/*
 * imap_conn.c
 */

/* Sets *err for a failed libetpan call r during step what (the server's
 * text when it gave one, never what we sent); a broken stream marks the
 * session broken and the failure temporary. Returns -1. */
int imap_fail(struct imap *im, char **err, const char *what, int r);

/* The last server text, printable and bounded. Allocated. */
char *imap_server_text(const struct imap *im);

/* -1 with *err when an earlier error left the session unusable. */
int imap_usable(struct imap *im, char **err);

/* Connects, reads the greeting (PREAUTH refused), TLS verified before
 * anything else is said (implicit, or STARTTLS: never a fallback), then
 * CAPABILITY. */
int imap_connect(struct imap *im, char **err);

/* on: if this process dies (SIGKILL, a crash) its connection is reset,
 * not closed: what it had written and the server had not read yet is
 * dropped instead of being stored after we are gone, where the next pass
 * could no longer find it in time (doc/DESIGN.md, The import protocol).
 * off: a normal close, for LOGOUT. */
void imap_abortive_close(struct imap *im, bool on);

/* CAPABILITY, asked afresh into im->caps: what a server announces
 * changes with TLS and with login (Dovecot shows UIDPLUS only after). */
int imap_read_caps(struct imap *im, char **err);

/* From now on every read and write must be done within the timeout plus
 * bytes at DEADLINE_MIN_RATE (an APPEND's literals; lib/deadline.h),
 * besides the pass's deadline and a stop request (lib/dlstream.h guards
 * the stream from the connection on): once a limit passes the session is
 * broken and the failure temporary. imap_deadline_clear() ends it. */
void imap_deadline(struct imap *im, uint64_t bytes);
void imap_deadline_clear(struct imap *im);

/* Sends "TAG " (a new tag) and then the n bytes of line as they are. */
int imap_send_command(struct imap *im, const char *what, const char *line, size_t n,
    char **err);

/* Writes n bytes to the stream (buffered), and flushes it. */
int imap_send(struct imap *im, const char *what, const void *b, size_t n, char **err);
int imap_flush(struct imap *im, const char *what, char **err);

/* Reads lines until a continuation ("+ ...": 1 returned, the line in
 * *line, libetpan's buffer) or the tagged reply to the command in flight
 * (0 when it is OK). Untagged data on the way is skipped (nothing of it
 * matters to the commands we send by hand); BYE is a closed session.
 * -1 with *err: a tagged NO or BAD (im->state says which; the session goes
 * on) or a broken session (im->broken). */
int imap_next(struct imap *im, const char *what, char **line, char **err);

/* The tagged reply to the command in flight, whose first line may already
 * be in libetpan's buffer (first_read): 0 OK, -1 with *err otherwise;
 * im->state (-1: no reply was read) and im->code tell which. */
int imap_tagged(struct imap *im, const char *what, bool first_read, char **err);

/* "s" quoted for IMAP with '"' and '\' escaped (s is printable ASCII:
 * an mUTF-7 mailbox name). Allocated. */
char *imap_quoted(const char *s);

/*
 * imap_auth.c
 */

/* Logs in as the account's store user per srv->auth, then reads the
 * capabilities again. A refused login is DELIVER_EAUTH. */
int imap_login(struct imap *im, const struct conf *c, const struct conf_account *a,
    char **err);

/*
 * imap_folder.c
 */

/* The personal namespace into im->ns (NAMESPACE when announced, else LIST
 * "" "" for the delimiter). After login. */
int imap_read_namespace(struct imap *im, char **err);

/* The server's name of folder "a/b" under namespace ns: levels joined by
 * ns->delim, each in modified UTF-7, ns->prefix in front unless the name
 * already starts with it; INBOX (any case, also as the first level) is
 * INBOX. 0 with *mbox allocated, or -1 with *why allocated (why the name
 * cannot be made). No session needed: unit-tested. */
int imap_folder_mbox(const struct imap_ns *ns, const char *folder, char **mbox, char **why);

/* The folder of that name (DELIVER_FOLDER_SENT: the mailbox flagged \Sent,
 * RFC 6154, else "Sent"); with create, made to exist on the server and
 * subscribed. NULL on error. */
struct imap_folder *imap_folder_get(struct imap *im, const char *name, bool create,
    char **err);

/* LIST "" mbox: 1 exists and is selectable, 0 not, -1 error. */
int imap_mbox_exists(struct imap *im, const char *mbox, char **err);

void imap_folders_free(struct imap *im);

/*
 * imap_find.c
 */

/* find() of the backend (store/deliver.h): 1 found (*loc allocated), 0
 * not found, -1 with *err. */
int imap_find(struct imap *im, const char *folder, const char *key, char **loc, char **err);

/* recovering() of the backend: the keys (in their folders) the find()
 * calls that follow ask for, looked up here at once; on any error find()
 * looks for each key on its own. */
void imap_recovering(struct imap *im, const char *const *folders, const char *const *keys,
    size_t n);
void imap_hits_free(struct imap *im);

/*
 * imap_append.c
 */

/* APPENDs the batch (deliver() of the backend, see store/deliver.h): each
 * message into its folder; refusals of one message ([LIMIT], over
 * APPENDLIMIT, any NO without TRYCREATE or OVERQUOTA) in msgs[i].refused;
 * [OVERQUOTA] stops the batch (DELIVER_ETEMP). Removes the temp file of
 * every message stored or refused, closes every fd. */
int imap_append_batch(struct imap *im, struct deliver_msg *msgs, size_t n, char **err);

/* "FOLDER;UIDVALIDITY=V;UID=U", or "FOLDER" when uid is 0. Allocated. */
char *imap_location(const char *folder, uint32_t uidvalidity, uint32_t uid);

/* STATE_DIR/spool/imap/KEY. Allocated. */
char *imap_spool_path(const struct imap *im, const char *key);

#endif

/* The IMAP delivery backend: messages are APPENDed to an IMAP server (a
 * local Dovecot, or any server) over one libetpan session per open(),
 * TLS verified by lib/tls.c before any credential is sent.
 *
 * Temp files are nameless (O_TMPFILE) in STATE_DIR/spool/imap, or named
 * STATE_DIR/spool/imap/KEY where the file system has no O_TMPFILE (the
 * folder argument of tmp_* does not matter). Each starts with the header
 * line
 *   X-Pop3bridge-Key: KEY CRLF
 * which therefore stays part of every stored message: find() looks for it
 * (UID SEARCH HEADER) to settle a delivery a crash interrupted.
 * Folder "a/b": under the server's personal namespace (NAMESPACE, RFC
 * 2342), "/" mapped to its hierarchy delimiter, each level in modified
 * UTF-7; INBOX (any case) is INBOX; DELIVER_FOLDER_SENT is the mailbox
 * flagged \Sent (RFC 6154), else "Sent". A missing folder is created and
 * subscribed. A batch is one MULTIAPPEND where the server offers it,
 * else pipelined APPENDs (LITERAL+), else one APPEND at a time.
 * Locations: "FOLDER;UIDVALIDITY=V;UID=U" when the server returns APPENDUID
 * (RFC 4315), else "FOLDER" (FOLDER as configured).
 * On a failed deliver() no location is set and every fd is closed. */
#ifndef POP3BRIDGE_IMAP_H
#define POP3BRIDGE_IMAP_H

#include "store/deliver.h"

#define IMAP_KEY_HEADER "X-Pop3bridge-Key"

extern const struct deliver_backend imap_backend;

#endif

/* RFC 5322 header blocks. What the sync pass needs from a fetched
 * message's header block: its Message-ID (for the state and cross-account
 * dedup) and its date (the store's internal date: the top Received:
 * header's date, else Date:); what `sendmail -t` needs: the fields that
 * name recipients and the sender. */
#ifndef POP3BRIDGE_HEADER_H
#define POP3BRIDGE_HEADER_H

#include <stddef.h>
#include <time.h>

struct header_info {
	char *message_id;   /* "<...>" as found, NULL when absent or unusable */
	time_t received;    /* date of the first Received: header, 0 if none */
	time_t date;        /* Date: header, 0 if none or unparsable */
};

/* Scans the header block at the start of buf (up to the first empty line
 * or len bytes). Never fails: what cannot be parsed is left empty.
 * Free with header_info_free. */
void header_scan(const char *buf, size_t len, struct header_info *h);

void header_info_free(struct header_info *h);

/* Calls fn(arg, value) for each field called name (any case) in the header
 * block at the start of buf[0..len), in order; value is the field's body
 * unfolded (the CR and LF of folded lines removed), NUL-terminated, valid
 * during the call. */
void header_each(const char *buf, size_t len, const char *name,
    void (*fn)(void *arg, const char *value), void *arg);

/* The internal date to store: received, else date, else fallback. */
time_t header_internal_date(const struct header_info *h, time_t fallback);

/* Parses an RFC 5322 date-time ("Tue, 1 Nov 2026 10:00:00 +0100"),
 * tolerating what mailers really write; returns 0 when unparsable. */
time_t header_parse_date(const char *s, size_t len);

#endif

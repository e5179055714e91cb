/* The mailbox listing of a POP3 session (UIDL, LIST), kept small: a
 * mailbox of 10^6 messages must fit in a few tens of MB. The UIDL strings
 * live in one arena (chunks that never move, freed at once), and every
 * per-message field is an array of its own that exists only when needed:
 * message numbers only when they are not 1..n, LIST sizes only for the
 * messages whose size was asked (a nothing-new poll asks none) or, after
 * a whole LIST, for all; statuses only once one is not POP3_UIDL_OK. About
 * 25 bytes a message for Dovecot's 16-byte UIDLs: 8 for the id pointer,
 * 17 for the string.
 *
 * Nothing here trusts the server: the checks are RFC 1939's (numbers
 * >= 1, strictly increasing, 1..n unless messages were deleted in the
 * session; UIDL and LIST naming the same messages). Functions returning
 * int return POP3_OK or POP3_EPROTO; on error *err (when err is not
 * NULL) receives an allocated one-line message without the "host:port: "
 * prefix. Out of memory is fatal (lib/xmalloc.h). */
#ifndef POP3BRIDGE_POP3_LISTING_H
#define POP3BRIDGE_POP3_LISTING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge/pop3.h"

struct pop3_arena_chunk;

struct pop3_listing {
	size_t n;
	/* Per entry: its UIDL (status POP3_UIDL_OK; in the arena), else
	 * NULL. The caller may put ids of its own in the NULL slots (it
	 * owns and frees them; pop3_listing_free never does). */
	const char **id;
	unsigned char *status;  /* per entry: enum pop3_uidl_status; NULL while
	                           every one is POP3_UIDL_OK (pop3_listing_status) */
	unsigned long *num;     /* message numbers; NULL while they are 1..n */
	uint64_t *size;         /* per entry, once a whole LIST was read; else NULL */
	size_t *sized_at;       /* else: the entries LIST n sized, increasing */
	uint64_t *sized;        /* their sizes */
	size_t nsized;
	size_t cap;             /* of id, status and num */
	struct pop3_arena_chunk *chunks;
	char *at;               /* free space of the newest chunk */
	size_t left;
};

void pop3_listing_init(struct pop3_listing *ls);
/* Frees what the listing holds (not the caller's ids) and re-inits it. */
void pop3_listing_free(struct pop3_listing *ls);
/* Room for n entries at once (the count STAT gives): a listing of 10^6
 * then grows and copies no array. */
void pop3_listing_reserve(struct pop3_listing *ls, size_t n);
/* Gives the arrays back the room growth or a reservation left unused. */
void pop3_listing_trim(struct pop3_listing *ls);

/* Appends the entry of a UIDL listing line "num uid". A line without a
 * valid message number is POP3_EPROTO (the listing cannot be used); a uid
 * pop3_parse_uidl() would refuse is not: the entry gets
 * POP3_UIDL_INVALID, no id, and is identified by its fingerprint. */
int pop3_listing_add_uidl(struct pop3_listing *ls, const char *line, char **err);

/* Appends the entry of a LIST line (a server without UIDL): status
 * POP3_UIDL_NONE, its size kept (the size array exists from the first
 * such entry on; do not mix with pop3_listing_add_uidl). */
void pop3_listing_add_list(struct pop3_listing *ls, unsigned long num, uint64_t size);

/* Checks the message numbers (what names the listing in the message:
 * "UIDL" or "LIST"); with marks, a UIDL naming more than one message is
 * taken from all of them (POP3_UIDL_DUPLICATE, id NULL): one of them
 * could be taken for the other. */
int pop3_listing_check(struct pop3_listing *ls, const char *what, bool allow_gaps,
    bool marks, char **err);

/* Entry i's status. */
enum pop3_uidl_status pop3_listing_status(const struct pop3_listing *ls, size_t i);
/* Entry i's message number. */
unsigned long pop3_listing_num(const struct pop3_listing *ls, size_t i);
/* The entry with message number num, or ls->n. */
size_t pop3_listing_find(const struct pop3_listing *ls, unsigned long num);
/* True when entry i's LIST size is known. */
bool pop3_listing_sized(const struct pop3_listing *ls, size_t i);
/* Entry i's LIST size; asking for one never learnt is a bug (fatal). */
uint64_t pop3_listing_size(const struct pop3_listing *ls, size_t i);
/* Records the size of entry i learnt from LIST n; entries must come in
 * increasing order, each once (pop3_sizes does so). */
void pop3_listing_set_size(struct pop3_listing *ls, size_t i, uint64_t size);
/* Entry i as one struct (its size must be known). */
struct pop3_entry pop3_listing_entry(const struct pop3_listing *ls, size_t i);

/* A whole LIST read after the UIDL listing, each line as it is read
 * (nothing stored but the sizes), with RFC 1939's checks, the first fault
 * reported:
 *   struct pop3_merge m; pop3_merge_init(&m, ls, allow_gaps);
 *   for each LIST line: pop3_merge_line(&m, num, size);
 *   rv = pop3_merge_end(&m, err);
 * LIST's own numbers first (as pop3_listing_check says them), then the
 * UIDL's, then "UIDL and LIST disagree: message a in one, b in the
 * other" at the first position where they differ, then "UIDL lists n
 * messages, LIST m". On success every entry has its size, and duplicate
 * UIDLs are marked; on POP3_EPROTO the sizes may be partly set. */
struct pop3_merge {
	struct pop3_listing *ls;
	size_t nlist;
	bool allow_gaps;
	unsigned long prev;     /* the last LIST number */
	char *list_err;         /* the first fault of LIST's own numbers */
	bool differ;            /* a LIST number differs from UIDL's there */
	size_t differ_at;
	unsigned long differ_num;
};
void pop3_merge_init(struct pop3_merge *m, struct pop3_listing *ls, bool allow_gaps);
void pop3_merge_line(struct pop3_merge *m, unsigned long num, uint64_t size);
int pop3_merge_end(struct pop3_merge *m, char **err);

#endif

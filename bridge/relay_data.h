/* The SMTP DATA decoder (RFC 5321 4.1.1.4, 4.5.2): removes dot-stuffing
 * and finds the end of the message, which is CRLF "." CRLF and nothing
 * else. A bare LF or bare CR anywhere is noted (the message is then
 * refused as a whole), and never ends the data nor a line: ".\n" or
 * "\n.\r\n" cannot smuggle a second message past us or past upstream. */
#ifndef POP3BRIDGE_RELAY_DATA_H
#define POP3BRIDGE_RELAY_DATA_H

#include <stdbool.h>
#include <stddef.h>

struct relay_data {
	int st;                 /* where in a line the decoder is */
	bool bare_eol;          /* a bare LF or CR was seen */
	bool done;              /* the final CRLF.CRLF was consumed */
};

/* Starts at the beginning of a line (right after the DATA command). */
void relay_data_init(struct relay_data *d);

/* Decodes in[0..n): the message bytes (CRLF line endings, dots unstuffed)
 * go to out, which must hold n + 1 bytes; *out_n is set to their count.
 * Returns the input bytes consumed: n, or fewer when the end of the data
 * was reached (d->done; the rest belongs to the next command). */
size_t relay_data_decode(struct relay_data *d, const char *in, size_t n, char *out, size_t *out_n);

#endif

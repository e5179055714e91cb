/* Header blocks of fetched and submitted mail (lib/header.c): the scan
 * for Message-ID, the first Received: date and Date:, the field walk
 * `sendmail -t` uses, and the date parser (libetpan's grammar, our
 * arithmetic) on the raw input.
 * Properties: no memory error, no undefined behaviour (time and zone
 * arithmetic on absurd years and zones included); a Message-ID found is
 * "<...>" of at most 998 printable bytes; every value header_each hands
 * out is NUL-terminated without CR or LF; dates are never negative. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/header.h"
#include "lib/log.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_init(LOG_QUIET, 0);
	fuzz_quiet();
	return 0;
}

static void
each_value(void *arg, const char *value)
{
	size_t *count = arg;

	FUZZ_CHECK(strchr(value, '\r') == NULL && strchr(value, '\n') == NULL,
	    "CR or LF in an unfolded value");
	(*count)++;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct header_info h;
	const char *buf = (const char *)data;
	static const char *const names[] = { "To", "Cc", "Bcc", "From", "Message-ID",
	    "Received", "Date" };
	size_t count = 0;
	time_t t;

	/* Exactly size bytes, no terminator: the scanner must not read past. */
	char *copy = malloc(size ? size : 1);
	memcpy(copy, buf, size);

	header_scan(copy, size, &h);
	if (h.message_id != NULL) {
		size_t n = strlen(h.message_id);

		FUZZ_CHECK(n >= 2 && n <= 998 && h.message_id[0] == '<' &&
		    h.message_id[n - 1] == '>', "Message-ID %s", h.message_id);
		for (size_t i = 0; i < n; i++)
			FUZZ_CHECK((unsigned char)h.message_id[i] > ' ' &&
			    h.message_id[i] != 0x7f, "control byte in a Message-ID");
	}
	FUZZ_CHECK(h.received >= 0 && h.date >= 0, "negative date");
	t = header_internal_date(&h, 12345);
	FUZZ_CHECK(t == (h.received ? h.received : h.date ? h.date : 12345),
	    "internal date order");
	header_info_free(&h);

	for (size_t i = 0; i < sizeof names / sizeof *names; i++)
		header_each(copy, size, names[i], each_value, &count);

	t = header_parse_date(copy, size);
	FUZZ_CHECK(t >= 0, "negative date");
	free(copy);
	return 0;
}

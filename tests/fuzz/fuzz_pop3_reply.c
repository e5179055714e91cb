/* POP3 replies as a hostile server sends them: a status line, a CAPA
 * listing, a LIST and a UIDL listing, through the bounded reader
 * (bridge/pop3_reader.c) into the parsers (bridge/pop3_parse.c) and the
 * listing (bridge/pop3_listing.c), as pop3.c drives them. The first input
 * byte picks how many bytes each read returns (splitting lines and CRLFs
 * anywhere).
 * Properties: no memory error, no undefined behaviour, lines handed out
 * are NUL-free and within POP3_LINE_MAX, a merged listing is strictly
 * increasing, every entry has a UIDL status and LIST's size, and the
 * usable UIDLs are unique, of 1..70 printable characters. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/pop3_listing.h"
#include "bridge/pop3_parse.h"
#include "bridge/pop3_reader.h"
#include "lib/log.h"
#include "tests/fuzz/fuzz.h"

#define MAX_ENTRIES 4096

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
check_line(const char *line)
{
	size_t n = strlen(line);

	FUZZ_CHECK(n <= POP3_LINE_MAX, "line of %zu bytes", n);
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK(line[i] != '\n', "LF inside a line");
}

/* A UIDL handed out as usable: 1 to 70 bytes of 0x21..0x7E. */
static void
check_uidl(const char *u)
{
	size_t ul = strlen(u);

	FUZZ_CHECK(ul >= 1 && ul <= POP3_UIDL_MAX, "UIDL of %zu chars", ul);
	for (size_t i = 0; i < ul; i++)
		FUZZ_CHECK(u[i] >= 0x21 && u[i] <= 0x7e, "UIDL byte 0x%02x", (unsigned char)u[i]);
}

/* Reads a listing: LIST lines into nums/sizes (*n of them, at most
 * MAX_ENTRIES kept), UIDL lines into ls. -1 on a reader error or a UIDL
 * line without a message number. */
static int
listing(struct pop3_reader *r, char *line, unsigned long *nums, uint64_t *sizes, size_t *n,
    struct pop3_listing *ls)
{
	bool end = false;
	char *err = NULL;

	*n = 0;
	for (;;) {
		if (pop3_reader_mline(r, line, POP3_LINE_MAX + 1, &end, &err) != POP3_OK) {
			FUZZ_CHECK(err != NULL && strchr(err, '\n') == NULL, "one-line error");
			free(err);
			return -1;
		}
		if (end)
			return 0;
		check_line(line);
		if (ls != NULL) {
			size_t i = ls->n;

			if (i == MAX_ENTRIES)
				continue;
			if (pop3_listing_add_uidl(ls, line, &err) != POP3_OK) {
				FUZZ_CHECK(ls->n == i, "a refused line added");
				free(err);
				err = NULL;
				continue;
			}
			FUZZ_CHECK((ls->id[i] != NULL) == (pop3_listing_status(ls, i) == POP3_UIDL_OK),
			    "UIDL string iff OK");
			if (ls->id[i] != NULL)
				check_uidl(ls->id[i]);
			continue;
		}
		if (*n == MAX_ENTRIES)
			continue;
		if (pop3_parse_list(line, &nums[*n], &sizes[*n], &err) != POP3_OK) {
			free(err);
			err = NULL;
			continue;
		}
		(*n)++;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned long nums[MAX_ENTRIES];
	static uint64_t sizes[MAX_ENTRIES];
	struct pop3_listing ls;
	struct pop3_merge mg;
	struct fuzz_mem m = { 0 };
	struct pop3_reader r;
	struct pop3_caps caps;
	enum pop3_status st;
	char line[POP3_LINE_MAX + 1], *err = NULL, *clean;
	size_t nlist = 0, nuidl;
	bool end, gaps;
	int rv;

	if (size < 1)
		return 0;
	m.step = data[0] & 0x0f;
	gaps = data[0] & 0x10;
	m.p = data + 1;
	m.len = size - 1;
	pop3_reader_init(&r, fuzz_mem_src, &m, 5);

	/* The greeting or a command's status line. */
	if (pop3_reader_status(&r, &st, line, sizeof line, &err) != POP3_OK) {
		FUZZ_CHECK(err != NULL, "error without a message");
		free(err);
		goto out;
	}
	check_line(line);
	(void)pop3_parse_temporary(line);
	clean = pop3_parse_clean(line);
	FUZZ_CHECK(strlen(clean) <= 200, "clean text of %zu bytes", strlen(clean));
	for (const char *c = clean; *c; c++)
		FUZZ_CHECK((unsigned char)*c >= 0x20 && *c != 0x7f, "control byte kept");
	free(clean);

	/* CAPA. */
	pop3_parse_caps_init(&caps);
	for (;;) {
		if (pop3_reader_mline(&r, line, sizeof line, &end, &err) != POP3_OK) {
			free(err);
			goto out;
		}
		if (end)
			break;
		check_line(line);
		pop3_parse_caps_line(&caps, line);
	}
	FUZZ_CHECK(caps.login_delay >= -1 && caps.expire >= -1, "negative caps");

	/* LIST, then UIDL, then what pop3_scan and pop3_sizes do: UIDL's
	 * checks, then LIST merged into it. */
	pop3_listing_init(&ls);
	if (listing(&r, line, nums, sizes, &nlist, NULL) == -1 ||
	    listing(&r, line, NULL, NULL, &nuidl, &ls) == -1)
		goto done;
	rv = pop3_listing_check(&ls, "UIDL", gaps, true, &err);
	if (rv == POP3_OK) {
		pop3_merge_init(&mg, &ls, gaps);
		for (size_t i = 0; i < nlist; i++)
			pop3_merge_line(&mg, nums[i], sizes[i]);
		rv = pop3_merge_end(&mg, &err);
		free(mg.list_err);
	}
	if (rv == POP3_OK) {
		FUZZ_CHECK(ls.n == nlist, "merged %zu UIDLs with %zu LIST lines", ls.n, nlist);
		for (size_t i = 0; i < ls.n; i++) {
			unsigned long num = pop3_listing_num(&ls, i);

			FUZZ_CHECK(num >= 1, "message number 0");
			FUZZ_CHECK(i == 0 || num > pop3_listing_num(&ls, i - 1), "not increasing");
			FUZZ_CHECK(gaps || num == i + 1, "gap without DELE");
			FUZZ_CHECK(num == nums[i], "LIST and UIDL numbers differ");
			FUZZ_CHECK(pop3_listing_find(&ls, num) == i, "look-up by number");
			FUZZ_CHECK(pop3_listing_size(&ls, i) == sizes[i], "size not LIST's");
			FUZZ_CHECK(pop3_listing_status(&ls, i) != POP3_UIDL_NONE, "entry without a UIDL status");
			FUZZ_CHECK((ls.id[i] != NULL) == (pop3_listing_status(&ls, i) == POP3_UIDL_OK),
			    "UIDL string iff OK");
			if (ls.id[i] == NULL)
				continue;
			check_uidl(ls.id[i]);
			for (size_t j = 0; j < i; j++)
				FUZZ_CHECK(ls.id[j] == NULL || strcmp(ls.id[i], ls.id[j]) != 0,
				    "a usable UIDL twice");
		}
	} else {
		FUZZ_CHECK(rv == POP3_EPROTO && err != NULL, "listing error %d", rv);
		free(err);
	}
done:
	pop3_listing_free(&ls);
out:
	pop3_reader_free(&r);
	return 0;
}

/* POP3 replies as a hostile server sends them: a status line, a CAPA
 * listing, a LIST and a UIDL listing, through the bounded reader
 * (bridge/pop3_reader.c) into the parsers (bridge/pop3_parse.c), as
 * pop3.c drives them. The first input byte picks how many bytes each read
 * returns (splitting lines and CRLFs anywhere).
 * Properties: no memory error, no undefined behaviour, lines handed out
 * are NUL-free and within POP3_LINE_MAX, a merged listing is strictly
 * increasing, every entry has a UIDL status, and the usable UIDLs are
 * unique, of 1..70 printable characters. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

/* Reads a listing; each line goes to parse. -1 on a reader error. */
static int
listing(struct pop3_reader *r, char *line, struct pop3_entry *e, size_t *n, bool uidl)
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
		if (*n == MAX_ENTRIES)
			continue;
		memset(&e[*n], 0, sizeof e[*n]);
		if (uidl) {
			if (pop3_parse_uidl_entry(line, &e[*n], &err) != POP3_OK) {
				free(err);
				err = NULL;
				continue;
			}
			FUZZ_CHECK((e[*n].uidl != NULL) == (e[*n].uidl_status == POP3_UIDL_OK),
			    "UIDL string iff OK");
			if (e[*n].uidl != NULL)
				check_uidl(e[*n].uidl);
		} else if (pop3_parse_list(line, &e[*n].num, &e[*n].size, &err) != POP3_OK) {
			free(err);
			err = NULL;
			continue;
		}
		(*n)++;
	}
}

static void
free_entries(struct pop3_entry *e, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(e[i].uidl);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct pop3_entry list[MAX_ENTRIES], uidls[MAX_ENTRIES];
	struct fuzz_mem m = { 0 };
	struct pop3_reader r;
	struct pop3_caps caps;
	enum pop3_status st;
	char line[POP3_LINE_MAX + 1], *err = NULL, *clean;
	size_t nlist = 0, nuidl = 0;
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

	/* LIST, then UIDL, then the merge pop3_scan does. */
	if (listing(&r, line, list, &nlist, false) == -1 ||
	    listing(&r, line, uidls, &nuidl, true) == -1)
		goto done;
	rv = pop3_parse_listing(list, nlist, uidls, nuidl, true, gaps, &err);
	if (rv == POP3_OK) {
		for (size_t i = 0; i < nlist; i++) {
			FUZZ_CHECK(list[i].num >= 1, "message number 0");
			FUZZ_CHECK(i == 0 || list[i].num > list[i - 1].num, "not increasing");
			FUZZ_CHECK(gaps || list[i].num == i + 1, "gap without DELE");
			FUZZ_CHECK(list[i].uidl_status != POP3_UIDL_NONE, "entry without a UIDL "
			    "status");
			FUZZ_CHECK((list[i].uidl != NULL) == (list[i].uidl_status == POP3_UIDL_OK),
			    "UIDL string iff OK");
			if (list[i].uidl == NULL)
				continue;
			check_uidl(list[i].uidl);
			for (size_t j = 0; j < i; j++)
				FUZZ_CHECK(list[j].uidl == NULL ||
				    strcmp(list[i].uidl, list[j].uidl) != 0, "a usable UIDL twice");
		}
		for (size_t i = 0; i < nuidl; i++)
			FUZZ_CHECK(uidls[i].uidl == NULL, "UIDL not moved");
	} else {
		FUZZ_CHECK(rv == POP3_EPROTO && err != NULL, "listing error %d", rv);
		free(err);
	}
done:
	free_entries(list, nlist);
	free_entries(uidls, nuidl);
out:
	pop3_reader_free(&r);
	return 0;
}

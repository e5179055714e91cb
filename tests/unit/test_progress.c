/* Unit tests of bridge/progress.c: the text of one account's line (bar,
 * counts, sizes, rate, ETA) and the drawing on a stream. */
#include "bridge/progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/check.h"

static void
test_line(void)
{
	struct sync_progress sp = { 50, 200, 5000000, 20000000, false };
	char *l;

	/* 5 MB in 2 s: 2.5 MB/s, 15 MB to go: 6 s. */
	l = progress_line("work", &sp, 2.0);
	CHECK_STR(l, "work [#####...............] 50/200 messages, 5.0 MB of 20.0 MB,"
	    " 2.5 MB/s, ETA 0:06");
	free(l);
	sp = (struct sync_progress){ 200, 200, 20000000, 20000000, true };
	l = progress_line("work", &sp, 3725.0);
	CHECK_STR(l, "work [####################] 200/200 messages, 20.0 MB of 20.0 MB,"
	    " 5.4 kB/s, in 1:02:05");
	free(l);
	/* Nothing yet: no rate, no ETA. */
	sp = (struct sync_progress){ 0, 3, 0, 900, false };
	l = progress_line("a", &sp, 0.0);
	CHECK_STR(l, "a [....................] 0/3 messages, 0 B of 900 B, 0 B/s, ETA ?");
	free(l);
}

static void
test_drawing(void)
{
	struct sync_progress sp = { 1, 2, 10, 20, false };
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	struct progress *pr = progress_start(f);

	progress_update(pr, "one", &sp);
	progress_update(pr, "two", &sp);
	progress_print(pr, "log line\n", 9);
	sp.msgs_done = 2;
	sp.bytes_done = 20;
	sp.finished = true;
	progress_update(pr, "one", &sp);
	progress_end(pr);
	fclose(f);
	/* Redrawn in place (cursor up, clear), the log line above the block,
	 * the finished line left on screen, the block erased at the end. */
	CHECK(strstr(buf, "\033[2A\033[J") != NULL);
	CHECK(strstr(buf, "log line\n") != NULL);
	CHECK(strstr(buf, "one [####################] 2/2 messages") != NULL);
	{
		const char *tail = "\r\033[1A\033[J";

		CHECK(strlen(buf) > strlen(tail) &&
		    strcmp(buf + strlen(buf) - strlen(tail), tail) == 0);
	}
	free(buf);
}

int
main(void)
{
	TEST(test_line);
	TEST(test_drawing);
	CHECK_DONE();
}

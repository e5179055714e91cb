/* The header scanner: Message-ID, the top Received: date and Date:; and
 * header_each, the field walk `sendmail -t` reads recipients with. */
#include <stdlib.h>
#include <string.h>

#include "lib/header.h"
#include "tests/unit/check.h"

static void
scan(const char *msg, struct header_info *h)
{
	header_scan(msg, strlen(msg), h);
}

static void
test_received_wins_over_date(void)
{
	struct header_info h;

	scan("Received: from a by b; Tue, 01 Nov 2022 10:00:00 +0100\r\n"
	    "Received: from c by d; Tue, 01 Nov 2022 08:00:00 +0000\r\n"
	    "Date: Mon, 31 Oct 2022 23:00:00 -0500\r\n"
	    "Message-ID: <abc@example.com>\r\n\r\nbody\r\n", &h);
	CHECK_INT(h.received, 1667293200);	/* 09:00:00 UTC, the first one */
	CHECK_INT(h.date, 1667275200);		/* 2022-11-01 04:00:00 UTC */
	CHECK_STR(h.message_id, "<abc@example.com>");
	CHECK_INT(header_internal_date(&h, 5), 1667293200);
	header_info_free(&h);
}

static void
test_folded_received(void)
{
	struct header_info h;

	scan("Received: from a\n\tby b with ESMTP id 1;\n\tWed, 2 Nov 2022 12:30:00 +0000\n"
	    "Subject: x\n\n", &h);
	CHECK_INT(h.received, 1667392200);
	CHECK(h.message_id == NULL);
	header_info_free(&h);
}

static void
test_date_only_and_fallback(void)
{
	struct header_info h;

	scan("Date: 2 Nov 2022 12:30:00 GMT\nMessage-Id:  <x.y@z>  \n\n", &h);
	CHECK_INT(h.received, 0);
	CHECK_INT(h.date, 1667392200);
	CHECK_STR(h.message_id, "<x.y@z>");
	header_info_free(&h);
	scan("Date: yesterday at noon\n\n", &h);
	CHECK_INT(h.date, 0);
	CHECK_INT(header_internal_date(&h, 42), 42);
	header_info_free(&h);
}

/* Numbers libetpan's grammar accepts but no clock has (found by
 * tests/fuzz/fuzz_header.c: a zone of 1468588xx overflowed the offset
 * arithmetic): unparsable, not wrapped around. */
static void
test_absurd_dates(void)
{
	static const char *const bad[] = {
		"Tue, 1 Nov 2022 10:00:00 +146858800",
		"Tue, 1 Nov 2022 10:00:00 -9960",
		"Tue, 1 Nov 2022 10:00:00 +0075",
		"Tue, 1 Nov 2147483648 10:00:00 +0000",
		"Tue, 1 Nov 4294967295 10:00:00 +0000",
		"Tue, 1 Nov 2022 99:00:00 +0000",
		"Tue, 1 Nov 2022 10:99:00 +0000",
	};

	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		CHECK_INT(header_parse_date(bad[i], strlen(bad[i])), 0);
	CHECK_INT(header_parse_date("Tue, 1 Nov 2022 10:00:00 -9959", 30), 1667656740);
	CHECK_INT(header_parse_date("Fri, 31 Dec 9999 23:59:60 +0000", 31), 253402300800);
}

static void
test_body_is_not_header(void)
{
	struct header_info h;

	scan("Subject: a\r\n\r\nMessage-ID: <not@header>\r\nDate: 2 Nov 2022 12:30:00 GMT\r\n", &h);
	CHECK(h.message_id == NULL);
	CHECK_INT(h.date, 0);
	header_info_free(&h);
}

static void
test_bad_message_ids(void)
{
	struct header_info h;

	scan("Message-ID: no brackets\n\n", &h);
	CHECK(h.message_id == NULL);
	header_info_free(&h);
	scan("Message-ID: <has space@x>\n\n", &h);
	CHECK(h.message_id == NULL);
	header_info_free(&h);
	scan("Message-ID: <unterminated@x\n\n", &h);
	CHECK(h.message_id == NULL);
	header_info_free(&h);
}

static void
test_truncated_and_empty(void)
{
	struct header_info h;

	header_scan("", 0, &h);
	CHECK(h.message_id == NULL);
	header_info_free(&h);
	scan("Message-ID: <a@b>", &h);	/* no newline at all */
	CHECK_STR(h.message_id, "<a@b>");
	header_info_free(&h);
}

/* Collects every value header_each passes, joined by "|". */
static void
collect(void *arg, const char *value)
{
	char *all = arg;

	if (*all != '\0')
		strcat(all, "|");
	strcat(all, value);
}

static void
test_each(void)
{
	static const char h[] = "From: a@x\r\n"
	    "To: b@x,\r\n\tc@x\r\n"
	    "cc: d@x\r\n"
	    "X-To: not@this\r\n"
	    "CC:e@x\r\n"
	    "\r\n"
	    "To: body@not.header\r\n";
	char all[256] = "";

	header_each(h, strlen(h), "To", collect, all);
	CHECK_STR(all, " b@x,\tc@x");
	all[0] = '\0';
	header_each(h, strlen(h), "Cc", collect, all);
	CHECK_STR(all, " d@x|e@x");
	all[0] = '\0';
	header_each(h, strlen(h), "Bcc", collect, all);
	CHECK_STR(all, "");
	/* LF line endings too, and a block cut short. */
	all[0] = '\0';
	header_each("To: f@x\n  g@x\nFrom: h", 21, "to", collect, all);
	CHECK_STR(all, " f@x  g@x");
	all[0] = '\0';
	header_each("To: f@x", 5, "To", collect, all);
	CHECK_STR(all, " f");
}

int
main(void)
{
	TEST(test_received_wins_over_date);
	TEST(test_folded_received);
	TEST(test_date_only_and_fallback);
	TEST(test_absurd_dates);
	TEST(test_body_is_not_header);
	TEST(test_bad_message_ids);
	TEST(test_truncated_and_empty);
	TEST(test_each);
	CHECK_DONE();
}

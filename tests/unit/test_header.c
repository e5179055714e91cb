/* The header scanner: Message-ID, the top Received: date and Date:. */
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

int
main(void)
{
	TEST(test_received_wins_over_date);
	TEST(test_folded_received);
	TEST(test_date_only_and_fallback);
	TEST(test_body_is_not_header);
	TEST(test_bad_message_ids);
	TEST(test_truncated_and_empty);
	CHECK_DONE();
}

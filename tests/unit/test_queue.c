/* The queue's pure parts: backoff and the RFC 3464 bounce. */
#include <stdlib.h>
#include <string.h>

#include "bridge/dsn.h"
#include "bridge/queue.h"
#include "bridge/queue_priv.h"
#include "tests/unit/check.h"

static void
test_backoff(void)
{
	CHECK_INT(queue_backoff(60, 1), 60);
	CHECK_INT(queue_backoff(60, 2), 120);
	CHECK_INT(queue_backoff(60, 6), 1920);
	CHECK_INT(queue_backoff(60, 7), 3600);
	CHECK_INT(queue_backoff(60, 1000), 3600);
	CHECK_INT(queue_backoff(1, 3), 4);
}

/* Filing retries wait as long as filing has been failing: doubling
 * without a counter, from retry_initial up to an hour. */
static void
test_file_backoff(void)
{
	CHECK_INT(queue_file_backoff(60, 0), 60);
	CHECK_INT(queue_file_backoff(60, 59), 60);
	CHECK_INT(queue_file_backoff(60, 120), 120);
	CHECK_INT(queue_file_backoff(60, 1000), 1000);
	CHECK_INT(queue_file_backoff(60, 100000), 3600);
	CHECK_INT(queue_file_backoff(0, -5), 1);
}

static void
test_status(void)
{
	char s[16];

	dsn_status(550, "5.1.1 no such user", s, sizeof s);
	CHECK_STR(s, "5.1.1");
	dsn_status(550, "no such user", s, sizeof s);
	CHECK_STR(s, "5.0.0");
	dsn_status(550, "4.1.1 class mismatch", s, sizeof s);
	CHECK_STR(s, "5.0.0");
	dsn_status(0, NULL, s, sizeof s);
	CHECK_STR(s, "4.4.7");
	dsn_status(451, "4.3.0 later", s, sizeof s);
	CHECK_STR(s, "4.3.0");
}

static void
test_dsn(void)
{
	struct outbox_rcpt r[2] = {
		{ .addr = "good@x.test", .state = RCPT_DELIVERED, .last_code = 250 },
		{ .addr = "bad@x.test", .state = RCPT_FAILED, .last_code = 550,
		    .last_response = "5.1.1 no\nsuch user" },
	};
	struct outbox_msg m = { .id = 7, .mail_from = "a@x.test", .rcpts = r, .n_rcpts = 2 };
	const char orig_text[] = "Subject: hi\r\nFrom: a@x.test\r\n\r\nbody secret\r\n";
	FILE *orig = fmemopen((void *)orig_text, sizeof orig_text - 1, "r");
	char *buf = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&buf, &len);

	CHECK(dsn_write(out, &m, orig, "mta.test", 1700000000) == 0);
	fclose(out);
	fclose(orig);
	CHECK(strstr(buf, "report-type=delivery-status") != NULL);
	CHECK(strstr(buf, "Reporting-MTA: dns; mta.test\r\n") != NULL);
	CHECK(strstr(buf, "Final-Recipient: rfc822; bad@x.test\r\n") != NULL);
	CHECK(strstr(buf, "good@x.test") == NULL);
	CHECK(strstr(buf, "Status: 5.1.1\r\n") != NULL);
	CHECK(strstr(buf, "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n") != NULL);
	CHECK(strstr(buf, "Content-Type: text/rfc822-headers\r\n\r\nSubject: hi\r\n") != NULL);
	CHECK(strstr(buf, "body secret") == NULL);
	free(buf);
}

/* The Sent copy's and the bounce's delivery keys: not derivable from the
 * queue id and creation time alone (anyone could plant them in a header
 * and have the bounce taken as already stored), but stable for a message,
 * and usable as Maildir names. */
static void
test_copy_key(void)
{
	struct outbox_msg a = { .id = 7, .created_at = 1700000000,
	    .spool_path = "/s/spool/1700000000.0123456789abcdef0123456789abcdef.9.0.msg" };
	struct outbox_msg b = a;
	struct outbox_msg none = { .id = 7, .created_at = 1700000000, .spool_path = "/s/spool/" };
	char *ka = queue_file_copy_key(&a, "dsn"), *ka2 = queue_file_copy_key(&a, "dsn");
	char *ks = queue_file_copy_key(&a, "sent"), *kb;

	b.spool_path = "/s/spool/1700000000.fedcba9876543210fedcba9876543210.9.0.msg";
	kb = queue_file_copy_key(&b, "dsn");
	CHECK(ka != NULL && ka2 != NULL && ks != NULL && kb != NULL);
	CHECK_STR(ka, ka2);
	CHECK(strcmp(ka, kb) != 0);
	CHECK(strcmp(ka, ks) != 0);
	CHECK(strcmp(ka, "outbox7x1700000000-dsn") != 0);
	CHECK(strncmp(ka, "outbox7x1700000000-", 19) == 0 && strlen(ka) >= 19 + 32);
	CHECK(strpbrk(ka, "./:") == NULL && strpbrk(ks, "./:") == NULL);
	/* nothing to derive it from: no key (the copy waits) */
	CHECK(queue_file_copy_key(&none, "dsn") == NULL);
	free(ka);
	free(ka2);
	free(ks);
	free(kb);
}

int
main(void)
{
	TEST(test_backoff);
	TEST(test_file_backoff);
	TEST(test_status);
	TEST(test_dsn);
	TEST(test_copy_key);
	CHECK_DONE();
}

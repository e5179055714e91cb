/* The relay's pure parts: the DATA decoder (dot-unstuffing, the only end
 * being CRLF.CRLF, bare CR/LF), path parsing, the AUTH policy and the
 * sender authorisation. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/relay_data.h"
#include "bridge/relay_priv.h"
#include "bridge/relay_session.h"
#include "tests/unit/check.h"

/* Decodes in (fed in pieces of step bytes); returns the output, sets *used
 * to the input consumed. */
static char *
decode(const char *in, size_t step, struct relay_data *d, size_t *used)
{
	size_t n = strlen(in), o = 0, k;
	char *out = calloc(1, n + 2), chunk[64];

	relay_data_init(d);
	for (*used = 0; *used < n && !d->done; ) {
		size_t len = n - *used < step ? n - *used : step, got;

		k = relay_data_decode(d, in + *used, len, chunk, &got);
		memcpy(out + o, chunk, got);
		o += got;
		*used += k;
	}
	out[o] = '\0';
	return out;
}

static void
test_data(void)
{
	static const size_t steps[] = { 1, 2, 3, 7, 60 };
	struct relay_data d;
	size_t used;

	for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
		char *o = decode("a\r\n..b\r\n.c\r\n\r\n.\r\nQUIT\r\n", steps[i], &d, &used);
		CHECK_STR(o, "a\r\n.b\r\nc\r\n\r\n");
		CHECK(d.done && !d.bare_eol);
		CHECK_INT(used, strlen("a\r\n..b\r\n.c\r\n\r\n.\r\n"));
		free(o);
		o = decode(".\r\n", steps[i], &d, &used);  /* empty message */
		CHECK_STR(o, "");
		CHECK(d.done);
		free(o);
		/* smuggling: none of these ends the data */
		o = decode("x\n.\nMAIL FROM:<a@b>\r\nx\r\n.\nY\r\n\r\n.\r\n", steps[i], &d, &used);
		CHECK(d.done && d.bare_eol);
		free(o);
		o = decode("x\r\n.\rMAIL\r\n.\r\n", steps[i], &d, &used);
		CHECK(d.done && d.bare_eol);
		free(o);
		o = decode("x\rx\r\n.\r\n", steps[i], &d, &used);
		CHECK(d.done && d.bare_eol);
		free(o);
		o = decode("x\r\n.\n", steps[i], &d, &used);
		CHECK(!d.done);
		free(o);
	}
}

static void
test_path(void)
{
	const char *params;
	char *a;

	CHECK_STR(a = relay_session_parse_path("FROM:<alice@example.com>", "FROM:", &params),
	    "alice@example.com");
	CHECK_STR(params, "");
	free(a);
	CHECK_STR(a = relay_session_parse_path("from: <a@b> SIZE=10  BODY=8BITMIME", "FROM:",
	    &params), "a@b");
	CHECK_STR(params, "SIZE=10  BODY=8BITMIME");
	free(a);
	CHECK_STR(a = relay_session_parse_path("FROM:<>", "FROM:", &params), "");
	free(a);
	CHECK(relay_session_parse_path("FROM:alice@example.com", "FROM:", &params) == NULL);
	CHECK(relay_session_parse_path("TO:<a@b>", "FROM:", &params) == NULL);
	CHECK(relay_session_parse_path("TO:<a b@c>", "TO:", &params) == NULL);
	CHECK(relay_session_parse_path("TO:<@x,@y:a@b>", "TO:", &params) == NULL);
	CHECK(relay_session_parse_path("TO:<ab>", "TO:", &params) == NULL);
	CHECK(relay_session_parse_path("TO:<a@b@c>", "TO:", &params) == NULL);
	CHECK(relay_session_parse_path("TO:<a@b>x", "TO:", &params) == NULL);
	CHECK(relay_session_parse_path("TO:<\"a\"@b>", "TO:", &params) == NULL);
	CHECK(relay_session_parse_path("TO:<a@b", "TO:", &params) == NULL);
}

static void
test_auth_policy(void)
{
	struct sockaddr_in in = { .sin_family = AF_INET };
	struct sockaddr_in6 in6 = { .sin6_family = AF_INET6 };

	inet_pton(AF_INET, "127.0.0.1", &in.sin_addr);
	CHECK(relay_auth_allowed(false, (struct sockaddr *)&in));
	inet_pton(AF_INET, "127.8.9.1", &in.sin_addr);
	CHECK(relay_auth_allowed(false, (struct sockaddr *)&in));
	inet_pton(AF_INET, "10.0.0.1", &in.sin_addr);
	CHECK(!relay_auth_allowed(false, (struct sockaddr *)&in));
	CHECK(relay_auth_allowed(true, (struct sockaddr *)&in));
	inet_pton(AF_INET6, "::1", &in6.sin6_addr);
	CHECK(relay_auth_allowed(false, (struct sockaddr *)&in6));
	inet_pton(AF_INET6, "::ffff:127.0.0.1", &in6.sin6_addr);
	CHECK(relay_auth_allowed(false, (struct sockaddr *)&in6));
	inet_pton(AF_INET6, "::ffff:192.168.1.1", &in6.sin6_addr);
	CHECK(!relay_auth_allowed(false, (struct sockaddr *)&in6));
	inet_pton(AF_INET6, "2001:db8::1", &in6.sin6_addr);
	CHECK(!relay_auth_allowed(false, (struct sockaddr *)&in6));
}

static void
test_sender(void)
{
	char *a1[] = { "alice@example.com", "a.smith@example.org" }, *a2[] = { "bob@example.com" };
	struct conf_account acc[2] = {
		{ .name = "work", .local_user = "alice", .addresses = a1, .n_addresses = 2 },
		{ .name = "bob", .local_user = "bob", .addresses = a2, .n_addresses = 1 },
	};
	struct conf c = { .accounts = acc, .n_accounts = 2 };

	CHECK(relay_session_sender_account(&c, "alice", "alice@example.com") == &acc[0]);
	CHECK(relay_session_sender_account(&c, "alice", "A.Smith@Example.ORG") == &acc[0]);
	CHECK(relay_session_sender_account(&c, "alice", "bob@example.com") == NULL);
	CHECK(relay_session_sender_account(&c, "bob", "bob@example.com") == &acc[1]);
	CHECK(relay_session_sender_account(&c, "bob", "") == NULL);
	CHECK(relay_session_sender_account(&c, NULL, "bob@example.com") == NULL);
	CHECK(relay_session_sender_account(&c, "carol", "alice@example.com") == NULL);
	/* The lookup under it, which `sendmail` uses without a user. */
	CHECK(conf_account_by_address(&c, "BOB@example.com", NULL) == &acc[1]);
	CHECK(conf_account_by_address(&c, "a.smith@example.org", NULL) == &acc[0]);
	CHECK(conf_account_by_address(&c, "a.smith@example.org", "bob") == NULL);
	CHECK(conf_account_by_address(&c, "nobody@example.com", NULL) == NULL);
}

int
main(void)
{
	TEST(test_data);
	TEST(test_path);
	TEST(test_auth_policy);
	TEST(test_sender);
	CHECK_DONE();
}

/* Unit tests of what reaches libetpan's IMAP parser: the reply grammar of
 * the store (store/imap_guard.c), and the line-bounding stream filter
 * (lib/linecap.c) over a socketpair, as the store reads through it. */
#include <sys/socket.h>

#include <string.h>
#include <unistd.h>

#include <libetpan/libetpan.h>

#include "lib/linecap.h"
#include "store/imap_guard.h"
#include "tests/unit/check.h"

/* The guard's verdict on a whole line after the greeting: NULL accepted. */
static const char *
verdict(const char *line)
{
	struct imap_guard g = { .greeted = true };
	struct linecap_more m = { false, 0 };

	return imap_guard_line(&g, line, strlen(line), &m);
}

/* What Dovecot 2.3 and other servers send to the store's commands. */
static void
test_accepts_real_replies(void)
{
	static const char *const ok[] = {
		"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE "
		    "LITERAL+ AUTH=PLAIN] Dovecot ready.\r\n",
		"* CAPABILITY IMAP4rev1 SASL-IR UIDPLUS MULTIAPPEND QUOTA\r\n",
		"1 OK Pre-login capabilities listed, post-login capabilities have more.\r\n",
		"2 OK [CAPABILITY IMAP4rev1 UIDPLUS MOVE] Logged in\r\n",
		"* LIST (\\Noselect) \".\" \"\"\r\n",
		"* LIST (\\HasNoChildren) \"/\" INBOX\r\n",
		"* LIST () \".\" \"Lists.2024\"\r\n",
		"* LIST (\\HasChildren \\Noselect) NIL Archive\r\n",
		"* LIST () \"\\\\\" \"a\\\\b\"\r\n",
		"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n",
		"* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n",
		"* OK [PERMANENTFLAGS (\\Answered \\Seen $Forwarded \\*)] Flags permitted.\r\n",
		"* 3 EXISTS\r\n", "* 0 RECENT\r\n", "* 2 EXPUNGE\r\n",
		"* OK [UIDVALIDITY 1700000000] UIDs valid\r\n",
		"* OK [UIDNEXT 4] Predicted next UID\r\n",
		"* OK [HIGHESTMODSEQ 12] Highest\r\n",
		"5 OK [READ-ONLY] Examine completed (0.001 + 0.000 secs).\r\n",
		"* SEARCH\r\n", "* SEARCH 5 9\r\n",
		"+ OK\r\n", "+\r\n",
		"10 OK [APPENDUID 1700000001 5] Append completed.\r\n",
		"10 OK [APPENDUID 1700000001 5:7,9] Append completed.\r\n",
		"10 NO [TRYCREATE] Mailbox doesn't exist: Work\r\n",
		"10 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n",
		"10 NO [LIMIT] Message too large\r\n",
		"10 BAD Error in IMAP command APPEND: Invalid arguments.\r\n",
		"* 1 FETCH (FLAGS (\\Seen) UID 5)\r\n",
		"* BYE Logging out\r\n", "13 OK Logout completed.\r\n",
		"* PREAUTH [CAPABILITY IMAP4rev1] Logged in as alice\r\n",
		"* OK [ALERT] Disk quota at 95% \xc3\xa9t\xc3\xa9\r\n",
		"1 OK\n",
		/* NAMESPACE (Dovecot, Courier), STATUS, the key header's FETCH */
		"* NAMESPACE ((\"\" \".\")) NIL NIL\r\n",
		"* NAMESPACE ((\"INBOX.\" \".\")) NIL ((\"#shared.\" \".\")(\"shared.\" \".\"))\r\n",
		"* NAMESPACE ((\"\" \"/\" \"X-PARAM\" (\"a\" \"b\"))) NIL NIL\r\n",
		"* STATUS INBOX (UIDNEXT 12)\r\n",
		"* STATUS \"Work/Sub\" (MESSAGES 3 UIDNEXT 4)\r\n",
		"* 2 FETCH (UID 7 BODY[HEADER.FIELDS (X-POP3BRIDGE-KEY)] {4}\r\n\r\n\r\n)\r\n",
		"* 2 FETCH (UID 7 BODY[HEADER.FIELDS (X-POP3BRIDGE-KEY)] NIL)\r\n",
		"* 2 FETCH (UID 7 MODSEQ (5) FLAGS (\\Seen))\r\n",
	};

	for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
		const char *v = verdict(ok[i]);

		if (v != NULL)
			printf("  refused: %s", ok[i]);
		CHECK(v == NULL);
	}
}

/* Each of these crashed or leaked in libetpan 1.9.4's parser (inputs
 * found by tests/fuzz/fuzz_imap_store.c), or is too big to let through. */
static void
test_refuses_what_libetpan_gets_wrong(void)
{
	static const char *const bad[] = {
		"* OK [PERMANENTFLAGS (\r\n",
		"* OK [PERMANENTFLAGS (\x10\x01r] x\r\n",
		"* OK [PERMANENTFLAGS (@)g Read-only\r\n",
		"* CAPABILITY\r\n",
		"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n",
		"* LIST (\\Noselect) \".\" {99999999}\r\n",
		"* OK [UIDVALIDITY 99999999999] x\r\n",
		"* OK [UIDNEXT 0] x\r\n",
		"* OK hello\0world\r\n",
		/* STATUS and FETCH of a body section are the store's since
		 * imap_find.c asks them; malformed, they are still refused */
		"* STATUS INBOX (MESSAGES)\r\n",
		"* STATUS INBOX MESSAGES 1\r\n",
		"* 1 FETCH (BODY[] {99999999}\r\n",
		"* 1 FETCH (BODY[HEADER.FIELDS (X-POP3BRIDGE-KEY)]\r\n",
		"* NAMESPACE ((\"\" \".\")) NIL\r\n",
		"* NAMESPACE ((\"\")) NIL NIL\r\n",
		"* SEARCH 7 (MODSEQ 9)\r\n",
		"*OK x\r\n",
		"\r\n",
		"+OK\r\n",
	};

	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		const char *v = verdict(bad[i]);

		if (v == NULL)
			printf("  accepted: %s", bad[i]);
		CHECK(v != NULL);
	}
}

/* A mailbox name as a literal: the line stops at "{N}", goes on after N
 * bytes; only there. */
static void
test_literal_mailbox(void)
{
	struct imap_guard g = { .greeted = true };
	struct linecap_more m = { false, 0 };
	const char *head = "* LIST () \"/\" {7}\r\n";
	const char *whole = "* LIST () \"/\" {7}\r\nA \"b\" c\r\n";
	const char *zero = "* LIST () \"/\" {0}\r\n";

	CHECK(imap_guard_line(&g, head, strlen(head), &m) == NULL);
	CHECK(m.more && m.literal == 7);
	memset(&m, 0, sizeof m);
	CHECK(imap_guard_line(&g, whole, strlen(whole), &m) == NULL);
	CHECK(!m.more);
	memset(&m, 0, sizeof m);
	CHECK(imap_guard_line(&g, zero, strlen(zero), &m) == NULL);
	CHECK(m.more && m.literal == 0);
	CHECK(verdict("* OK [ALERT] {5}\r\n") == NULL);	/* text, not a literal */
}

/* The first line is the greeting: OK or PREAUTH, nothing else. */
static void
test_greeting(void)
{
	static const char *const bad[] = { "* BYE [CAPABILITY IMAP4rev1] go away\r\n",
	    "1 OK hello\r\n", "* CAPABILITY IMAP4rev1\r\n", "+ OK\r\n",
	    "* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n", "* OK [UIDNEXT 4] x\r\n" };
	static const char *const ok[] = { "* OK ready\r\n", "* PREAUTH hi\r\n",
	    "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] Dovecot ready.\r\n", "* OK [ALERT] hi\r\n" };

	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		struct imap_guard g = { false };
		struct linecap_more m = { false, 0 };

		CHECK(imap_guard_line(&g, bad[i], strlen(bad[i]), &m) != NULL);
	}
	for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
		struct imap_guard g = { false };
		struct linecap_more m = { false, 0 };

		CHECK(imap_guard_line(&g, ok[i], strlen(ok[i]), &m) == NULL && g.greeted);
	}
}

static void
server_says(int fd, const char *s)
{
	CHECK(write(fd, s, strlen(s)) == (ssize_t)strlen(s));
}

/* Through libetpan: a refused line breaks the read before libetpan
 * parses it; an accepted session goes on; a line over the cap fails. */
static void
test_linecap_under_libetpan(void)
{
	MMAPString *buf = mmap_string_new("");
	struct imap_guard g = { false };
	int sv[2];
	mailstream *s;
	char *line;

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	s = mailstream_socket_open(sv[0]);
	linecap_install(s, 64, imap_guard_line, &g);
	server_says(sv[1], "* OK ready\r\n* LIST () \"/\" {3}\r\nabc\r\n* CAPABILITY\r\n");
	/* the lines before the refused one, then nothing */
	line = mailstream_read_line(s, buf);
	CHECK(line != NULL && strcmp(line, "* OK ready\r\n") == 0);
	line = mailstream_read_line(s, buf);
	CHECK(line != NULL && strcmp(line, "* LIST () \"/\" {3}\r\n") == 0);
	line = mailstream_read_line(s, buf);
	CHECK(line != NULL && strcmp(line, "abc\r\n") == 0);
	CHECK(linecap_refused(s) == NULL);
	CHECK(mailstream_read_line(s, buf) == NULL);
	CHECK_STR(linecap_refused(s), "a reply line outside what the store understands");
	mailstream_close(s);
	close(sv[1]);

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	s = mailstream_socket_open(sv[0]);
	linecap_install(s, 64, NULL, NULL);
	server_says(sv[1], "220 ok\r\n");
	for (int i = 0; i < 10; i++)
		server_says(sv[1], "xxxxxxxxxx");
	CHECK(mailstream_read_line(s, buf) != NULL);
	CHECK(mailstream_read_line(s, buf) == NULL);
	CHECK_STR(linecap_refused(s), "a reply line longer than 64 bytes");
	mailstream_close(s);
	close(sv[1]);

	/* the end of the stream inside a line: no line for libetpan */
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	s = mailstream_socket_open(sv[0]);
	linecap_install(s, 64, imap_guard_line, &g);
	server_says(sv[1], "* OK ready\r\n* OK [PERMANENTFLAGS (\x01");
	close(sv[1]);
	CHECK(mailstream_read_line(s, buf) != NULL);
	CHECK(mailstream_read_line(s, buf) == NULL);
	CHECK_STR(linecap_refused(s), "the connection ended inside a reply line");
	mailstream_close(s);
	mmap_string_free(buf);
}

int
main(void)
{
	TEST(test_accepts_real_replies);
	TEST(test_refuses_what_libetpan_gets_wrong);
	TEST(test_literal_mailbox);
	TEST(test_greeting);
	TEST(test_linecap_under_libetpan);
	CHECK_DONE();
}

/* Unit tests of the IMAP store's pure parts: folder names under a
 * namespace (store/imap_folder.c), the OAUTHBEARER response (lib/sasl.c).
 * The session itself is tested against real servers (tests/integration/
 * test_imap_store*.py, test_imap_auth.py). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/sasl.h"
#include "lib/xmalloc.h"
#include "store/imap_priv.h"
#include "tests/unit/check.h"

/* The name folder gets under prefix and delim, or "!" + why it cannot. */
static char *
name(const char *prefix, char delim, const char *folder)
{
	struct imap_ns ns = { .prefix = (char *)prefix, .delim = delim };
	char *mbox = NULL, *why = NULL, *out;

	if (imap_folder_mbox(&ns, folder, &mbox, &why) == 0) {
		CHECK(why == NULL);
		return mbox;
	}
	CHECK(mbox == NULL && why != NULL);
	out = why != NULL ? xasprintf("!%s", why) : xstrdup("!");
	free(why);
	return out;
}

#define NAME(prefix, delim, folder, want) do { \
	char *got_ = name(prefix, delim, folder); \
	CHECK_STR(got_, want); \
	free(got_); \
} while (0)

static void
test_dovecot_names(void)
{
	/* Dovecot's default namespace: prefix "", "." (Maildir++) or "/". */
	NAME("", '.', "INBOX", "INBOX");
	NAME("", '.', "inbox", "INBOX");
	NAME("", '.', "Lists/News", "Lists.News");
	NAME("", '/', "Lists/News", "Lists/News");
	NAME("", '.', "INBOX/Sub", "INBOX.Sub");
	NAME("", '.', "inbox/Sub", "INBOX.Sub");
	NAME("", '.', "Sub/inbox", "Sub.inbox");
	NAME("", '.', "Entw\xc3\xbcrfe & Co", "Entw&APw-rfe &- Co");
}

static void
test_courier_names(void)
{
	/* Courier: every folder under "INBOX." with ".". */
	NAME("INBOX.", '.', "INBOX", "INBOX");
	NAME("INBOX.", '.', "Lists/News", "INBOX.Lists.News");
	NAME("INBOX.", '.', "Sent", "INBOX.Sent");
	/* Written with the prefix already: not twice, whatever INBOX's case. */
	NAME("INBOX.", '.', "INBOX/Lists", "INBOX.Lists");
	NAME("INBOX.", '.', "Inbox/Lists", "INBOX.Lists");
	NAME("INBOX.", '.', "INBOXES", "INBOX.INBOXES");
	/* A prefix that is no INBOX is compared exactly. */
	NAME("Mail/", '/', "Lists/News", "Mail/Lists/News");
	NAME("Mail/", '/', "Mail/News", "Mail/News");
	NAME("Mail/", '/', "mail/News", "Mail/mail/News");
}

static void
test_bad_names(void)
{
	NAME("", '.', "a.b", "!folder \"a.b\": \".\" is the server's hierarchy delimiter "
	    "(use \"/\" between levels)");
	NAME("INBOX.", '.', "a/.b", "!folder \"a/.b\": \".\" is the server's hierarchy "
	    "delimiter (use \"/\" between levels)");
	NAME("", '.', "a*", "!folder \"a*\": \"*\" and \"%\" are IMAP wildcards");
	NAME("", '.', "a//b", "!folder \"a//b\": empty hierarchy level");
	NAME("", '\0', "a/b", "!folder \"a/b\": the server has no hierarchy");
	NAME("", '\0', "Flat", "Flat");
	NAME("", '.', "\xff", "!folder \"\xff\": not valid UTF-8");
	NAME("", '.', "tab\there", "!folder \"tab\there\": control character in the name");
}

static void
test_oauthbearer(void)
{
	char *r = sasl_oauthbearer("alice@example.com", "imap.example.com", 993, "tok");

	CHECK_STR(r, "n,a=alice@example.com,\001host=imap.example.com\001port=993\001"
	    "auth=Bearer tok\001\001");
	free(r);
	/* RFC 5801 saslname: "," and "=" escaped. */
	r = sasl_oauthbearer("a,b=c", "h", 1, "t");
	CHECK_STR(r, "n,a=a=2Cb=3Dc,\001host=h\001port=1\001auth=Bearer t\001\001");
	free(r);
}

int
main(void)
{
	TEST(test_dovecot_names);
	TEST(test_courier_names);
	TEST(test_bad_names);
	TEST(test_oauthbearer);
	CHECK_DONE();
}

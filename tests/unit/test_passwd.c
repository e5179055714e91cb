/* bridge/passwd.c: every scheme (hashes made with `doveadm pw`), the file
 * format, and reloading when the file changes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "bridge/passwd.h"
#include "tests/unit/check.h"

#define SHA512 "{SHA512-CRYPT}$6$puU5p40m5BZ5L6i2$L67o9nyf3pWDIMFKvz8zqNX09hAmwP." \
	"uSno4Sv28zV84MJXysla0ErqTjakbyV0AkK2vJId1Our3yGdIzzgUZ1"
#define SHA256 "{SHA256-CRYPT}$5$i.9Vh05TAoyVmdUT$JCq/hE3pgfHi2lbCQJoYY.5j7uqfTEXzZf/2NhBxPUC"
#define BLF "{BLF-CRYPT}$2y$05$iWnfHg..TmkOptqhwy5hiO8Xmzutiz0h13JAnNZtZe5IH7.PooDlK"
#define MD5 "{MD5-CRYPT}$1$QiTeWm7s$gg9egEh.Eurjs10pTXU0g."
#define CRYPT "{CRYPT}$2y$05$bf6NwYtf17W0.cYG.kkNku3KbpjUdjq3gPR7VUT2dMcXJYU7wu5te"

static void
test_schemes(void)
{
	const char *fields[] = { SHA512, SHA256, BLF, MD5, CRYPT, "{PLAIN}pw",
	    "{plain}pw", "{CLEARTEXT}pw", SHA512 + 14 };

	for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
		CHECK_INT(passwd_verify(fields[i], "pw"), 1);
		CHECK_INT(passwd_verify(fields[i], "pW"), 0);
		CHECK_INT(passwd_verify(fields[i], ""), 0);
		CHECK_INT(passwd_verify(fields[i], "pw "), 0);
	}
}

static void
test_refused_fields(void)
{
	CHECK_INT(passwd_verify("{SHA512-CRYPT}$5$abc$def", "pw"), -1);	/* wrong prefix */
	CHECK_INT(passwd_verify("{SSHA}xyz", "pw"), -1);
	CHECK_INT(passwd_verify("{PLAIN", "pw"), -1);
	CHECK_INT(passwd_verify("", ""), -1);
	CHECK_INT(passwd_verify("{SHA512-CRYPT}", ""), -1);
	CHECK_INT(passwd_verify("{CRYPT}*", "pw"), -1);
	CHECK_INT(passwd_verify("{PLAIN}", ""), 1);		/* as Dovecot does */
}

static void
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	fputs(text, f);
	fclose(f);
}

static void
test_file(void)
{
	char dir[] = "/tmp/p3b-passwd-XXXXXX", path[64], *err = NULL;
	struct passwd_db *db;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof path, "%s/users", dir);
	db = passwd_open(path);
	CHECK_INT(passwd_check(db, "alice", "pw", &err), -1);
	CHECK(err != NULL && strstr(err, "users") != NULL);
	free(err);
	err = NULL;
	write_file(path, "# users\n\nalice:" SHA512 "::::::\nbob:{PLAIN}secret\r\n"
	    "broken line\ncarol:{SSHA}abc:1000:1000::/home/carol::\n");
	CHECK_INT(passwd_check(db, "alice", "pw", &err), 1);
	CHECK_INT(passwd_check(db, "alice", "secret", &err), 0);
	CHECK_INT(passwd_check(db, "bob", "secret", &err), 1);
	CHECK_INT(passwd_check(db, "Bob", "secret", &err), 0);
	CHECK_INT(passwd_check(db, "carol", "abc", &err), 0);
	CHECK_INT(passwd_check(db, "nobody", "pw", &err), 0);
	CHECK_INT(passwd_check(db, "", "", &err), 0);
	/* Changed on disk: read again (size differs, whatever the mtime). */
	write_file(path, "bob:{PLAIN}newpass\n");
	CHECK_INT(passwd_check(db, "bob", "secret", &err), 0);
	CHECK_INT(passwd_check(db, "bob", "newpass", &err), 1);
	CHECK_INT(passwd_check(db, "alice", "pw", &err), 0);
	unlink(path);
	CHECK_INT(passwd_check(db, "bob", "newpass", &err), -1);
	free(err);
	passwd_free(db);
	rmdir(dir);
}

int
main(void)
{
	TEST(test_schemes);
	TEST(test_refused_fields);
	TEST(test_file);
	CHECK_DONE();
}

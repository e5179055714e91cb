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
	CHECK_INT(passwd_check(db, "alice", "pw", "127.0.0.1", &err), -1);
	CHECK(err != NULL && strstr(err, "users") != NULL);
	free(err);
	err = NULL;
	write_file(path, "# users\n\nalice:" SHA512 "::::::\nbob:{PLAIN}secret\r\n"
	    "broken line\ncarol:{SSHA}abc:1000:1000::/home/carol::\n");
	CHECK_INT(passwd_check(db, "alice", "pw", "127.0.0.1", &err), 1);
	CHECK_INT(passwd_check(db, "alice", "secret", "127.0.0.1", &err), 0);
	CHECK_INT(passwd_check(db, "bob", "secret", "127.0.0.1", &err), 1);
	CHECK_INT(passwd_check(db, "Bob", "secret", "127.0.0.1", &err), 0);
	CHECK_INT(passwd_check(db, "carol", "abc", "127.0.0.1", &err), 0);
	CHECK_INT(passwd_check(db, "nobody", "pw", "127.0.0.1", &err), 0);
	CHECK_INT(passwd_check(db, "", "", "127.0.0.1", &err), 0);
	/* Changed on disk: read again (size differs, whatever the mtime). */
	write_file(path, "bob:{PLAIN}newpass\n");
	CHECK_INT(passwd_check(db, "bob", "secret", "127.0.0.1", &err), 0);
	CHECK_INT(passwd_check(db, "bob", "newpass", "127.0.0.1", &err), 1);
	CHECK_INT(passwd_check(db, "alice", "pw", "127.0.0.1", &err), 0);
	unlink(path);
	CHECK_INT(passwd_check(db, "bob", "newpass", "127.0.0.1", &err), -1);
	free(err);
	passwd_free(db);
	rmdir(dir);
}

/* Dovecot extra fields (field 8): nologin and nopassword refuse, allow_nets
 * needs the peer inside a listed network (an unreadable one refuses), and
 * an empty password never logs in, whatever the hash. */
static void
test_extra_fields(void)
{
	char dir[] = "/tmp/p3b-passwd-XXXXXX", path[64], *err = NULL;
	struct passwd_db *db;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof path, "%s/users", dir);
	db = passwd_open(path);
	write_file(path,
	    "plain:{PLAIN}pw::::::\n"
	    "nolog:{PLAIN}pw::::::nologin reason=gone\n"
	    "nolog2:{PLAIN}pw::::::userdb_quota=1G nologin=y\n"
	    "nopw:{PLAIN}pw::::::nopassword\n"
	    "nets:{PLAIN}pw::::::allow_nets=192.0.2.0/24,2001:db8::/32 nodelay\n"
	    "net1:{PLAIN}pw:1000:1000::/home/x::allow_nets=10.1.2.3\n"
	    "badnet:{PLAIN}pw::::::allow_nets=local\n"
	    "badbits:{PLAIN}pw::::::allow_nets=10.0.0.0/33\n"
	    "emptynet:{PLAIN}pw::::::allow_nets=\n"
	    "empty:{PLAIN}::::::\n");
	CHECK_INT(passwd_check(db, "plain", "pw", "192.0.2.1", &err), 1);
	CHECK_INT(passwd_check(db, "nolog", "pw", "192.0.2.1", &err), 0);
	CHECK_INT(passwd_check(db, "nolog2", "pw", "192.0.2.1", &err), 0);
	CHECK_INT(passwd_check(db, "nopw", "pw", "192.0.2.1", &err), 0);
	CHECK_INT(passwd_check(db, "nopw", "", "192.0.2.1", &err), 0);
	CHECK_INT(passwd_check(db, "nets", "pw", "192.0.2.200", &err), 1);
	CHECK_INT(passwd_check(db, "nets", "pw", "::ffff:192.0.2.7", &err), 1);
	CHECK_INT(passwd_check(db, "nets", "pw", "2001:db8:1::5", &err), 1);
	CHECK_INT(passwd_check(db, "nets", "pw", "192.0.3.1", &err), 0);
	CHECK_INT(passwd_check(db, "nets", "pw", "2001:db9::1", &err), 0);
	CHECK_INT(passwd_check(db, "nets", "pw", "127.0.0.1", &err), 0);
	CHECK_INT(passwd_check(db, "nets", "pw", "unknown", &err), 0);
	CHECK_INT(passwd_check(db, "nets", "pw", NULL, &err), 0);
	CHECK_INT(passwd_check(db, "nets", "bad", "192.0.2.1", &err), 0);
	CHECK_INT(passwd_check(db, "net1", "pw", "10.1.2.3", &err), 1);
	CHECK_INT(passwd_check(db, "net1", "pw", "10.1.2.4", &err), 0);
	CHECK_INT(passwd_check(db, "badnet", "pw", "127.0.0.1", &err), 0);
	CHECK_INT(passwd_check(db, "badbits", "pw", "10.0.0.1", &err), 0);
	CHECK_INT(passwd_check(db, "emptynet", "pw", "10.0.0.1", &err), 0);
	CHECK_INT(passwd_check(db, "empty", "", "127.0.0.1", &err), 0);
	CHECK(err == NULL);
	unlink(path);
	passwd_free(db);
	rmdir(dir);
}

int
main(void)
{
	TEST(test_schemes);
	TEST(test_refused_fields);
	TEST(test_file);
	TEST(test_extra_fields);
	CHECK_DONE();
}

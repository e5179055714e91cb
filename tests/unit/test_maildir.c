/* Unit tests of store/maildir.c, store/deliver.c and lib/mutf7.c: real
 * files in a temp dir, laid out as Dovecot reads them. */
#include "store/maildir.h"

#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/mutf7.h"
#include "lib/xmalloc.h"
#include "store/deliver.h"
#include "tests/unit/check.h"

static char tmpdir[] = "/tmp/test_maildir.XXXXXX";

/* A stand-in for conf/conf.c's, for building this test without it. Weak,
 * so that the real one wins where conf.o is linked in too (make check);
 * both give store.path here, which holds no "%u". */
__attribute__((weak)) char *
conf_store_path(const struct conf *c, const struct conf_account *a)
{
	(void)a;
	return xstrdup(c->store.path);
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* A backend session on the maildir tmpdir/name. */
static void *
md_open_as(const char *name, const char *local_user, char **root)
{
	struct conf c = { 0 };
	struct conf_account a = { 0 };
	char *err = NULL;
	void *ctx = NULL;

	*root = xasprintf("%s/%s", tmpdir, name);
	c.store.type = CONF_STORE_MAILDIR;
	c.store.path = *root;
	a.name = (char *)"work";
	a.local_user = (char *)local_user;
	if (maildir_backend.open(&c, &a, &ctx, &err) == -1) {
		printf("  open: %s\n", err);
		free(err);
	}
	return ctx;
}

static void *
md_open(const char *name, char **root)
{
	return md_open_as(name, "alice", root);
}

static char *
slurp(const char *path)
{
	char *buf = NULL;
	size_t n = 0;
	FILE *f = fopen(path, "r");

	if (f == NULL)
		return NULL;
	buf = xmalloc(1 << 16);
	n = fread(buf, 1, (1 << 16) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static int
exists(const char *fmt, const char *a, const char *b)
{
	char *p = xasprintf(fmt, a, b);
	struct stat sb;
	int r = lstat(p, &sb) == 0;

	free(p);
	return r;
}

static int
dir_mode(const char *root, const char *sub)
{
	char *p = xasprintf("%s/%s", root, sub);
	struct stat sb;
	int r = stat(p, &sb) == 0 && S_ISDIR(sb.st_mode) ? (int)(sb.st_mode & 07777) : -1;

	free(p);
	return r;
}

/* Writes body into a new temp file of folder; the fd stays open. */
static int
stage(void *ctx, const char *folder, const char *key, const char *body)
{
	char *err = NULL;
	int fd = -1;

	if (maildir_backend.tmp_create(ctx, folder, key, strlen(body), &fd, &err) == -1) {
		printf("  tmp_create: %s\n", err);
		free(err);
		return -1;
	}
	if (write(fd, body, strlen(body)) != (ssize_t)strlen(body))
		printf("  write failed\n");
	return fd;
}

static void
test_mutf7(void)
{
	static const char *const v[][2] = {
		{ "Entwürfe", "Entw&APw-rfe" },
		{ "&", "&-" },
		{ "Tom & Jerry", "Tom &- Jerry" },
		{ "plain ASCII ~!", "plain ASCII ~!" },
		{ "", "" },
		/* RFC 3501 5.1.3's example */
		{ "~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-" },
		/* outside the BMP: a UTF-16 surrogate pair */
		{ "😀", "&2D3eAA-" },
		{ "a\tb", "a&AAk-b" },
		{ "Ñ&Ñ", "&ANE-&-&ANE-" },
	};
	char *out = NULL;
	size_t i;

	for (i = 0; i < sizeof v / sizeof v[0]; i++) {
		CHECK_INT(mutf7_encode(v[i][0], &out), 0);
		CHECK_STR(out, v[i][1]);
		free(out);
		out = NULL;
	}
	CHECK_INT(mutf7_encode("bad \xff", &out), -1);
	CHECK(out == NULL);
}

static void
test_utf8_valid(void)
{
	static const char *const bad[] = {
		"\xc3", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
		"\xff", "\x80", "a\xe2\x82", "\xf8\x88\x80\x80\x80",
	};
	size_t i;

	CHECK(mutf7_utf8_valid("Entwürfe 台北 😀", strlen("Entwürfe 台北 😀")));
	CHECK(mutf7_utf8_valid("", 0));
	CHECK(mutf7_utf8_valid("\xf4\x8f\xbf\xbf", 4));     /* U+10FFFF */
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		CHECK(!mutf7_utf8_valid(bad[i], strlen(bad[i])));
}

static void
test_folder_dir(void)
{
	static const char *const ok[][2] = {
		{ "INBOX", "" }, { "inbox", "" }, { "InBox", "" },
		{ "Entwürfe", ".Entw&APw-rfe" },
		{ "&", ".&-" },
		{ "a/b", ".a.b" },
		{ "Work/Entwürfe", ".Work.Entw&APw-rfe" },
		{ "inbox/x", ".INBOX.x" },
		{ "Sent Items", ".Sent Items" },
	};
	static const char *const bad[] = {
		"", "a//b", "/a", "a/", "a.b", "..", "x\ty", "\xff", "a/../b",
	};
	char *dir, *err;
	size_t i;

	for (i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		dir = NULL;
		CHECK_INT(maildir_folder_dir(ok[i][0], &dir, &err), 0);
		CHECK_STR(dir, ok[i][1]);
		free(dir);
	}
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err = NULL;
		CHECK_INT(maildir_folder_dir(bad[i], &dir, &err), -1);
		CHECK(err != NULL);
		free(err);
	}
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
test_key_format(void)
{
	enum { N = 10000 };
	char **keys = xcalloc(N, sizeof *keys), host[256], *k = deliver_key("X12");
	long long secs = 0;
	long usec = -1, pid = 0;
	unsigned long seq = 0;
	int used = 0, dups = 0;
	size_t i;

	CHECK_INT(sscanf(k, "%lld.M%ldP%ldQ%luX12.%n", &secs, &usec, &pid, &seq, &used), 4);
	CHECK(secs >= time(NULL) - 5 && secs <= time(NULL));
	CHECK(usec >= 0 && usec < 1000000);
	CHECK_INT(pid, getpid());
	CHECK(seq > 0);
	gethostname(host, sizeof host);
	host[sizeof host - 1] = '\0';
	if (strchr(host, '/') == NULL && strchr(host, ':') == NULL)
		CHECK_STR(k + used, host);
	CHECK(deliver_key_has_tag(k, "X12"));
	CHECK(!deliver_key_has_tag(k, "X1"));
	free(k);

	for (i = 0; i < N; i++)
		keys[i] = deliver_key("X7");
	qsort(keys, N, sizeof *keys, cmp_str);
	for (i = 1; i < N; i++)
		dups += strcmp(keys[i - 1], keys[i]) == 0;
	CHECK_INT(dups, 0);
	for (i = 0; i < N; i++)
		free(keys[i]);
	free(keys);
}

/* The host part in a UTS namespace of our own, where we may name the
 * host as we like (root only; skipped elsewhere). */
static void
test_key_host_escape(void)
{
	int status = 0;
	pid_t pid = fork();

	if (pid == 0) {
		char *k;
		int r;

		if (unshare(CLONE_NEWUTS) == -1 || sethostname("mx/1:2", 6) == -1)
			_exit(77);
		k = deliver_key("X3");
		r = strstr(k, "X3.mx\\0571\\0722") != NULL &&
		    strchr(k, '/') == NULL && strchr(k, ':') == NULL ? 0 : 1;
		free(k);
		_exit(r);
	}
	CHECK(pid > 0);
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status));
	if (WEXITSTATUS(status) == 77)
		printf("  skipped: no UTS namespace here (not root?)\n");
	else
		CHECK_INT(WEXITSTATUS(status), 0);
}

static void
test_tag_matching(void)
{
	CHECK(deliver_key_has_tag("1700000000.M123P45Q6X1.host", "X1"));
	CHECK(deliver_key_has_tag("1700000000.M123P45Q6X1.", "X1"));
	CHECK(!deliver_key_has_tag("1700000000.M123P45Q6X12.host", "X1"));
	CHECK(deliver_key_has_tag("1700000000.M123P45Q6X12.host", "X12"));
	CHECK(!deliver_key_has_tag("1700000000.M123P45Q6X1", "X1"));
	CHECK(!deliver_key_has_tag("1700000000.M123P45QX1.host", "X1"));
	CHECK(!deliver_key_has_tag("1700000000.M123P45Q6Y1.host", "X1"));
	CHECK(!deliver_key_has_tag("x1700000000.M123P45Q6X1.host", "X1"));
	CHECK(!deliver_key_has_tag("1700000000.M123Q6X1.host", "X1"));
	CHECK(!deliver_key_has_tag("1700000000.M123P45Q6X1.host", "x1"));
	CHECK(!deliver_key_has_tag("1700000000.M123P45Q6X1.host", ""));
	CHECK(deliver_key_has_tag("1700000000.M123P45Q6.host", ""));
	/* Dovecot's own names in tmp/ are never ours. */
	CHECK(!deliver_key_has_tag("1700000000.M123P45.host", ""));
	/* A tag that starts with a digit still splits from the sequence. */
	CHECK(deliver_key_has_tag("1700000000.M123P45Q67.host", "7"));
	CHECK(deliver_key_has_tag("1700000000.M123P45Q67.host", "67") == false);
}

/* The layout Dovecot expects: the root a maildir, each folder a maildir
 * with "maildirfolder", all 0700, the new folders subscribed. */
static void
check_layout(const char *root, const char *const *dirs, size_t n)
{
	static const char *const subs[] = { "", "/tmp", "/new", "/cur" };
	char *p, *body;
	size_t i, k;

	for (k = 0; k < 4; k++)
		CHECK_INT(dir_mode(root, subs[k] + (k > 0)), 0700);
	CHECK(!exists("%s/%s", root, "maildirfolder"));
	for (i = 0; i < n; i++) {
		for (k = 0; k < 4; k++) {
			p = xasprintf("%s%s", dirs[i], subs[k]);
			CHECK_INT(dir_mode(root, p), 0700);
			free(p);
		}
		CHECK(exists("%s/%s/maildirfolder", root, dirs[i]));
	}
	/* Maildir++ needs no parent folder: Dovecot shows it \Noselect. */
	CHECK(!exists("%s/%s", root, ".Work"));
	p = xasprintf("%s/subscriptions", root);
	body = slurp(p);
	CHECK_STR(body, "V\t2\n\nEntw&APw-rfe\nWork\tSub\n");
	CHECK(!exists("%s/%s", root, "subscriptions.lock"));
	free(body);
	free(p);
}

static void
test_deliver_batch(void)
{
	static const char *const folders[] = { "INBOX", "Entwürfe", "Work/Sub", "INBOX" };
	static const char *const dirs[] = { "", ".Entw&APw-rfe", ".Work.Sub", "" };
	struct deliver_msg m[4];
	char *root, *err = NULL, *p, *body;
	int fds[4];
	void *ctx = md_open("home/alice/Maildir", &root);
	struct stat sb;
	size_t i;

	memset(m, 0, sizeof m);
	for (i = 0; i < 4; i++) {
		m[i].key = deliver_key("X1");
		m[i].folder = folders[i];
		body = xasprintf("Subject: %zu\n\nbody %zu\n", i, i);
		m[i].fd = fds[i] = stage(ctx, folders[i], m[i].key, body);
		m[i].size = strlen(body);
		m[i].date = 1000000000 + (time_t)i;
		free(body);
	}
	CHECK_INT(maildir_backend.deliver(ctx, m, 4, &err), 0);
	for (i = 0; i < 4; i++) {
		CHECK(fcntl(fds[i], F_GETFD) == -1 && errno == EBADF);
		p = xasprintf("%s%snew/%s", dirs[i], dirs[i][0] ? "/" : "", m[i].key);
		CHECK_STR(m[i].location, p);
		free(p);
		p = xasprintf("%s/%s", root, m[i].location);
		body = slurp(p);
		CHECK(body != NULL && strncmp(body, "Subject: ", 9) == 0);
		CHECK(body != NULL && strlen(body) == m[i].size);
		CHECK(stat(p, &sb) == 0 && sb.st_mtime == m[i].date);
		CHECK(stat(p, &sb) == 0 && (sb.st_mode & 0777) == 0600);
		free(body);
		free(p);
		CHECK(!exists("%s/tmp/%s", root, m[i].key));
	}
	check_layout(root, dirs + 1, 2);
	for (i = 0; i < 4; i++) {
		free(m[i].location);
		free((char *)m[i].key);
	}
	maildir_backend.close(ctx);
	free(root);
}

static void
test_subscriptions_kept(void)
{
	char *root, *err = NULL, *p, *body;
	void *ctx;
	int fd;
	struct deliver_msg m = { 0 };
	FILE *f;

	root = xasprintf("%s/subs", tmpdir);
	mkdir(root, 0700);
	p = xasprintf("%s/subscriptions", root);
	f = fopen(p, "w");
	fputs("V\t2\n\nOther\nx\ty", f);       /* no final newline */
	fclose(f);
	/* A lock a killed writer left long ago does not block us. */
	body = xasprintf("%s/subscriptions.lock", root);
	close(open(body, O_CREAT | O_WRONLY, 0600));
	struct timespec old[2] = { { 1000, 0 }, { 1000, 0 } };
	utimensat(AT_FDCWD, body, old, 0);
	free(body);
	free(root);

	ctx = md_open("subs", &root);
	m.key = deliver_key("X1");
	m.folder = "a/b";
	fd = stage(ctx, "a/b", m.key, "x\n");
	m.fd = fd;
	CHECK_INT(maildir_backend.deliver(ctx, &m, 1, &err), 0);
	body = slurp(p);
	CHECK_STR(body, "V\t2\n\nOther\nx\ty\na\tb\n");
	free(body);
	free(m.location);
	free((char *)m.key);
	maildir_backend.close(ctx);
	free(root);

	/* An existing folder is never subscribed again (the user may have
	 * unsubscribed it). */
	ctx = md_open("subs", &root);
	unlink(p);
	m.key = deliver_key("X1");
	m.fd = stage(ctx, "a/b", m.key, "y\n");
	CHECK_INT(maildir_backend.deliver(ctx, &m, 1, &err), 0);
	CHECK(!exists("%s/%s", root, "subscriptions"));
	free(m.location);
	free((char *)m.key);
	maildir_backend.close(ctx);
	free(root);
	free(p);
}

static void
test_find_moved(void)
{
	struct deliver_msg m = { 0 };
	char *root, *err = NULL, *loc = NULL, *from, *to;
	void *ctx = md_open("find", &root);

	m.key = deliver_key("X1");
	m.folder = "Work";
	m.fd = stage(ctx, "Work", m.key, "hello\n");
	CHECK_INT(maildir_backend.deliver(ctx, &m, 1, &err), 0);
	CHECK_INT(maildir_backend.find(ctx, "Work", m.key, &loc, &err), 1);
	CHECK_STR(loc, m.location);
	free(loc);
	loc = NULL;

	/* A client saw it: new/KEY -> cur/KEY:2,S */
	from = xasprintf("%s/.Work/new/%s", root, m.key);
	to = xasprintf("%s/.Work/cur/%s:2,S", root, m.key);
	CHECK_INT(rename(from, to), 0);
	CHECK_INT(maildir_backend.find(ctx, "Work", m.key, &loc, &err), 1);
	free(from);
	from = xasprintf(".Work/cur/%s:2,S", m.key);
	CHECK_STR(loc, from);
	free(loc);
	loc = NULL;

	CHECK_INT(maildir_backend.find(ctx, "Work", "1.M1P1Q1X1.nohost", &loc, &err), 0);
	CHECK_INT(maildir_backend.find(ctx, "Never/Made", m.key, &loc, &err), 0);
	CHECK(!exists("%s/%s", root, ".Never.Made"));
	CHECK_INT(maildir_backend.find(ctx, "Work", "../../etc/passwd", &loc, &err), -1);
	free(err);
	err = NULL;
	/* A prefix of the key is not the key. */
	to[strlen(to) - 6] = '\0';
	CHECK_INT(maildir_backend.find(ctx, "Work", strrchr(to, '/') + 1, &loc, &err), 0);
	free(from);
	free(to);
	free(m.location);
	free((char *)m.key);
	maildir_backend.close(ctx);
	free(root);
}

static void
test_seen(void)
{
	struct deliver_msg m = { 0 };
	char *root, *err = NULL, *loc = NULL, *want;
	void *ctx = md_open("seen", &root);

	m.key = deliver_key("X1");
	m.folder = "INBOX";
	m.flags = DELIVER_SEEN;
	m.fd = stage(ctx, "INBOX", m.key, "seen\n");
	CHECK_INT(maildir_backend.deliver(ctx, &m, 1, &err), 0);
	want = xasprintf("cur/%s:2,S", m.key);
	CHECK_STR(m.location, want);
	CHECK_INT(maildir_backend.find(ctx, "INBOX", m.key, &loc, &err), 1);
	CHECK_STR(loc, want);
	free(loc);
	free(want);
	free(m.location);
	free((char *)m.key);
	maildir_backend.close(ctx);
	free(root);
}

static void
test_discard(void)
{
	char *root, *err = NULL, *key = deliver_key("X1");
	void *ctx = md_open("discard", &root);
	int fd = stage(ctx, "Drafts", key, "draft\n");

	close(fd);
	CHECK(exists("%s/.Drafts/tmp/%s", root, key));
	CHECK_INT(maildir_backend.tmp_discard(ctx, "Drafts", key, &err), 0);
	CHECK(!exists("%s/.Drafts/tmp/%s", root, key));
	CHECK_INT(maildir_backend.tmp_discard(ctx, "Drafts", key, &err), 0);
	CHECK_INT(maildir_backend.tmp_discard(ctx, "Nowhere", key, &err), 0);
	free(key);
	maildir_backend.close(ctx);
	free(root);
}

static void
test_cleanup(void)
{
	char *root, *err = NULL, *k1 = deliver_key("X1"), *k12 = deliver_key("X12");
	void *ctx = md_open("cleanup", &root);
	static const char *const keep[] = {
		"1700000000.M1P2Q3X12.host", "1700000000.M1P2.host", "foreign", "1700000000.M1P2Q3X1",
	};
	size_t i;

	close(stage(ctx, "INBOX", k1, "a"));
	close(stage(ctx, "INBOX", k12, "b"));
	close(stage(ctx, "INBOX", "1700000000.M1P2Q3X1.otherhost", "c"));
	for (i = 0; i < 4; i++)
		close(stage(ctx, "INBOX", keep[i], "d"));
	CHECK_INT(maildir_backend.tmp_cleanup(ctx, "INBOX", "X1", &err), 0);
	CHECK(!exists("%s/tmp/%s", root, k1));
	CHECK(!exists("%s/tmp/%s", root, "1700000000.M1P2Q3X1.otherhost"));
	CHECK(exists("%s/tmp/%s", root, k12));
	for (i = 0; i < 4; i++)
		CHECK(exists("%s/tmp/%s", root, keep[i]));
	/* A folder that was never made: nothing to do. */
	CHECK_INT(maildir_backend.tmp_cleanup(ctx, "Nowhere", "X1", &err), 0);
	free(k1);
	free(k12);
	maildir_backend.close(ctx);
	free(root);
}

/* A failed batch: every fd closed, no location, the error said. */
static void
test_deliver_failure(void)
{
	struct deliver_msg m[3];
	char *root, *err = NULL, *p;
	void *ctx = md_open("fail", &root);
	int fds[3];
	size_t i;

	memset(m, 0, sizeof m);
	for (i = 0; i < 3; i++) {
		m[i].key = deliver_key("X1");
		m[i].folder = "INBOX";
		m[i].fd = fds[i] = stage(ctx, "INBOX", m[i].key, "x\n");
	}
	p = xasprintf("%s/tmp/%s", root, m[1].key);
	unlink(p);
	free(p);
	CHECK_INT(maildir_backend.deliver(ctx, m, 3, &err), -1);
	CHECK(err != NULL && strstr(err, m[1].key) != NULL);
	free(err);
	for (i = 0; i < 3; i++) {
		CHECK(m[i].location == NULL);
		CHECK(fcntl(fds[i], F_GETFD) == -1 && errno == EBADF);
	}
	CHECK(exists("%s/new/%s", root, m[0].key));
	CHECK(exists("%s/tmp/%s", root, m[2].key));
	for (i = 0; i < 3; i++)
		free((char *)m[i].key);
	maildir_backend.close(ctx);
	free(root);
}

static uid_t want_uid;
static gid_t want_gid;
static int wrong_owner;

static int
owner_entry(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
	(void)flag, (void)f;
	if (sb->st_uid != want_uid || sb->st_gid != want_gid) {
		printf("  %s: owned by %d:%d\n", p, (int)sb->st_uid, (int)sb->st_gid);
		wrong_owner++;
	}
	return 0;
}

/* As root, everything made belongs to the maildir's owner, so that
 * Dovecot running as that user can read and move it. */
static void
test_owner_as_root(void)
{
	struct deliver_msg m = { 0 };
	char *base, *root, *err = NULL;
	void *ctx;

	if (geteuid() != 0) {
		printf("  skipped: not root\n");
		return;
	}
	want_uid = 8;   /* Debian's "mail" */
	want_gid = 8;
	base = xasprintf("%s/owned", tmpdir);
	chmod(tmpdir, 0711);	/* the owner must reach its Maildir, as in life */
	mkdir(base, 0755);
	CHECK_INT(chown(base, want_uid, want_gid), 0);
	ctx = md_open("owned/x/Maildir", &root);
	m.key = deliver_key("X1");
	m.folder = "Archiv/Entwürfe";
	m.fd = stage(ctx, m.folder, m.key, "owned\n");
	CHECK_INT(maildir_backend.deliver(ctx, &m, 1, &err), 0);
	free(m.location);
	free((char *)m.key);
	m.key = deliver_key("X1");
	m.folder = "INBOX";
	m.fd = stage(ctx, m.folder, m.key, "owned\n");
	CHECK_INT(maildir_backend.deliver(ctx, &m, 1, &err), 0);
	free(m.location);
	free((char *)m.key);
	close(stage(ctx, "INBOX", "1.M1P1Q1X1.h", "tmp"));
	wrong_owner = 0;
	nftw(base, owner_entry, 16, FTW_PHYS);
	CHECK_INT(wrong_owner, 0);
	maildir_backend.close(ctx);
	free(root);
	free(base);
}

/* As root, a new Maildir under a directory root owns (/var/vmail/%u)
 * belongs to its local_user, from the first directory made; the
 * root-owned parent stays root's. A group-writable parent is not trusted
 * with that: the tree keeps the parent's owner. */
static void
test_new_tree_for_local_user(void)
{
	struct deliver_msg m = { 0 };
	char *base, *user_dir, *root, *err = NULL;
	struct stat sb;
	void *ctx;

	if (geteuid() != 0) {
		printf("  skipped: not root\n");
		return;
	}
	want_uid = 8;   /* Debian's "mail" user */
	want_gid = 8;
	chmod(tmpdir, 0711);
	base = xasprintf("%s/vmail", tmpdir);
	CHECK_INT(mkdir(base, 0755), 0);
	CHECK_INT(chown(base, 0, 0), 0);
	ctx = md_open_as("vmail/mail/Maildir", "mail", &root);
	CHECK(ctx != NULL);
	m.key = deliver_key("X1");
	m.folder = "Work";
	m.fd = stage(ctx, m.folder, m.key, "for mail\n");
	CHECK_INT(maildir_backend.deliver(ctx, &m, 1, &err), 0);
	free(m.location);
	free((char *)m.key);
	maildir_backend.close(ctx);
	user_dir = xasprintf("%s/mail", base);
	wrong_owner = 0;
	nftw(user_dir, owner_entry, 16, FTW_PHYS);
	CHECK_INT(wrong_owner, 0);
	CHECK_INT(stat(base, &sb), 0);
	CHECK_INT((int)sb.st_uid, 0);
	free(root);
	free(user_dir);

	/* Group-writable: someone else could have planted the directory. */
	CHECK_INT(chmod(base, 0775), 0);
	ctx = md_open_as("vmail/other/Maildir", "mail", &root);
	m.key = deliver_key("X1");
	m.folder = "INBOX";
	m.fd = stage(ctx, m.folder, m.key, "kept as root\n");
	CHECK_INT(maildir_backend.deliver(ctx, &m, 1, &err), 0);
	free(m.location);
	free((char *)m.key);
	maildir_backend.close(ctx);
	CHECK_INT(stat(root, &sb), 0);
	CHECK_INT((int)sb.st_uid, 0);
	free(root);
	free(base);
}

/* The owner of a Maildir plants a symlink where a folder will be created,
 * pointing into a directory only root may write: delivering as root must
 * not follow it (every access is made with the owner's ids). */
static void
test_symlink_planted_by_owner(void)
{
	char *base, *root, *err = NULL, *target, *link, *probe;
	struct deliver_msg m = { 0 };
	void *ctx;
	int fd = -1;

	if (geteuid() != 0) {
		printf("  skipped: not root\n");
		return;
	}
	chmod(tmpdir, 0711);
	base = xasprintf("%s/victim", tmpdir);
	target = xasprintf("%s/rootonly", tmpdir);
	mkdir(base, 0755);
	mkdir(target, 0700);
	CHECK_INT(chown(base, 8, 8), 0);
	ctx = md_open("victim/Maildir", &root);
	mkdir(root, 0700);
	CHECK_INT(chown(root, 8, 8), 0);
	link = xasprintf("%s/.Evil", root);
	CHECK_INT(symlink(target, link), 0);
	CHECK_INT(lchown(link, 8, 8), 0);
	m.key = deliver_key("X1");
	m.folder = "Evil";
	CHECK_INT(maildir_backend.tmp_create(ctx, m.folder, m.key, 0, &fd, &err), -1);
	CHECK(err != NULL && strstr(err, "Permission denied") != NULL);
	free(err);
	probe = xasprintf("%s/tmp", target);
	CHECK(access(probe, F_OK) == -1);	/* nothing was made in there */
	if (fd != -1)
		close(fd);
	maildir_backend.close(ctx);
	free((char *)m.key);
	free(probe);
	free(link);
	free(target);
	free(root);
	free(base);
}

/* What a batch costs: 100 messages of 4 KiB, written and delivered. */
static void
test_batch_timing(void)
{
	enum { N = 100 };
	struct deliver_msg m[N];
	char *root, *err = NULL, body[4096];
	void *ctx = md_open("timing", &root);
	double t0, t1;
	size_t i;

	memset(body, 'x', sizeof body - 1);
	body[sizeof body - 1] = '\0';
	memset(m, 0, sizeof m);
	close(stage(ctx, "INBOX", "warmup", "x"));     /* creates the maildir */
	t0 = now_ms();
	for (i = 0; i < N; i++) {
		m[i].key = deliver_key("X1");
		m[i].folder = "INBOX";
		m[i].fd = stage(ctx, "INBOX", m[i].key, body);
	}
	t1 = now_ms();
	CHECK_INT(maildir_backend.deliver(ctx, m, N, &err), 0);
	printf("  batch: %d x 4 KiB written in %.1f ms, delivered (one syncfs,"
	    " renames, one dir fsync) in %.1f ms\n", N, t1 - t0, now_ms() - t1);
	for (i = 0; i < N; i++) {
		free(m[i].location);
		free((char *)m[i].key);
	}
	maildir_backend.close(ctx);
	free(root);
}

static void
test_backend_for(void)
{
	CHECK(deliver_backend_for(CONF_STORE_MAILDIR) == &maildir_backend);
	CHECK_STR(maildir_backend.name, "maildir");
	CHECK_INT(maildir_backend.crlf, 0);
}

int
main(void)
{
	if (!check_tmpdir(tmpdir))
		return 1;
	TEST(test_mutf7);
	TEST(test_utf8_valid);
	TEST(test_folder_dir);
	TEST(test_key_format);
	TEST(test_key_host_escape);
	TEST(test_tag_matching);
	TEST(test_backend_for);
	TEST(test_deliver_batch);
	TEST(test_subscriptions_kept);
	TEST(test_find_moved);
	TEST(test_seen);
	TEST(test_discard);
	TEST(test_cleanup);
	TEST(test_deliver_failure);
	TEST(test_owner_as_root);
	TEST(test_new_tree_for_local_user);
	TEST(test_symlink_planted_by_owner);
	TEST(test_batch_timing);
	check_rm_tree(tmpdir);
	CHECK_DONE();
}

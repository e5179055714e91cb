/* The common floor (lib/): base64, hex, error messages, file-system
 * helpers, SASL responses, the address rule and the index sort. */
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/addr.h"
#include "lib/base64.h"
#include "lib/err.h"
#include "lib/hex.h"
#include "lib/io.h"
#include "lib/sasl.h"
#include "lib/strsort.h"
#include "lib/xmalloc.h"
#include "tests/unit/check.h"

static void
test_base64(void)
{
	/* RFC 4648 section 10 */
	static const char *const in[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	static const char *const out[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==",
	    "Zm9vYmE=", "Zm9vYmFy" };
	static const char *const bad[] = { "Zg=", "Zg", "Z===", "Zg=a", "=Zg=",
	    "Zm8=Zm8=", "Zm9v\n", "Zm 9", "Zm9-", "Zm9_" };
	char *s;
	size_t len;

	for (size_t i = 0; i < 7; i++) {
		s = base64_encode(in[i], strlen(in[i]));
		CHECK_STR(s, out[i]);
		free(s);
		s = base64_decode(out[i], &len);
		CHECK_STR(s, in[i]);
		CHECK_INT(len, strlen(in[i]));
		free(s);
	}
	s = base64_encode("\0u\0p", 4);
	CHECK_STR(s, "AHUAcA==");
	free(s);
	s = base64_decode("AHUAcA==", &len);
	CHECK(s != NULL && len == 4 && memcmp(s, "\0u\0p", 5) == 0);
	free(s);
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		len = 99;
		s = base64_decode(bad[i], &len);
		CHECK(s == NULL);
		CHECK_INT(len, 99);
		free(s);
	}
}

static void
test_hex(void)
{
	static const unsigned char b[] = { 0x00, 0x01, 0x7f, 0x80, 0xab, 0xff };
	char out[2 * sizeof b + 1];

	memset(out, 'x', sizeof out);
	hex_encode(b, sizeof b, out);
	CHECK_STR(out, "00017f80abff");
	hex_encode(b, 0, out);
	CHECK_STR(out, "");
}

static void
test_err(void)
{
	char *err = NULL, *big = xmalloc(5000);

	CHECK_INT(err_set(NULL, "nobody reads %s", "this"), -1);
	CHECK_INT(err_set(&err, "%s %d", "a", 1), -1);
	CHECK_STR(err, "a 1");
	free(err);
	/* No cut at 512 or 1024 bytes, as the per-file helpers had. */
	memset(big, 'y', 4999);
	big[4999] = '\0';
	err_at(&err, "host:110", "reply %s", big);
	CHECK(err != NULL && strlen(err) == strlen("host:110: reply ") + 4999);
	CHECK(err != NULL && strncmp(err, "host:110: reply yyy", 19) == 0);
	free(err);
	errno = ENOENT;
	CHECK_INT(err_errno(&err, "opening %s", "/x"), -1);
	CHECK_STR(err, "opening /x: No such file or directory");
	free(err);
	CHECK_INT(err_code(&err, -7, "code %s", "seven"), -7);
	CHECK_STR(err, "code seven");
	free(err);
	CHECK_INT(err_at(&err, NULL, "bare"), -1);
	CHECK_STR(err, "bare");
	free(err);
	free(big);
}

static void
test_io(void)
{
	char dir[] = "/tmp/test_lib.XXXXXX", *p, *q, *file, *err = NULL, buf[16] = "";
	char proc[64];
	struct stat sb;
	int fd;

	if (!check_tmpdir(dir)) {
		CHECK(false);
		return;
	}
	p = xasprintf("%s/a/b//c/", dir);
	q = xasprintf("%s/a/b/c", dir);
	CHECK_INT(io_mkdir_p(p, 0700, true, &err), 1);
	CHECK(stat(q, &sb) == 0 && S_ISDIR(sb.st_mode) && (sb.st_mode & 0777) == 0700);
	CHECK_INT(io_mkdir_p(q, 0700, false, &err), 0);
	CHECK(err == NULL);
	CHECK_INT(io_fsync_dir(q, &err), 0);

	/* An anonymous file: nothing appears in the directory, and it can be
	 * given a name afterwards (how the spool links a message). */
	fd = io_tmpfile(q, &err);
	CHECK(fd != -1);
	CHECK_INT(io_write_all(fd, "spool", 5), 0);
	CHECK_INT(check_count_entries(q), 0);
	free(p);
	p = xasprintf("%s/named", q);
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	CHECK_INT(linkat(AT_FDCWD, proc, AT_FDCWD, p, AT_SYMLINK_FOLLOW), 0);
	CHECK_INT(check_count_entries(q), 1);
	close(fd);
	fd = open(p, O_RDONLY);
	CHECK(fd != -1 && read(fd, buf, sizeof buf) == 5 && strcmp(buf, "spool") == 0);
	CHECK(fstat(fd, &sb) == 0 && (sb.st_mode & 0777) == 0600);
	close(fd);

	/* Below a file: each error names the path. */
	file = xasprintf("%s/file", dir);
	fd = open(file, O_WRONLY | O_CREAT, 0600);
	CHECK(fd != -1);
	close(fd);
	free(q);
	q = xasprintf("%s/sub", file);
	CHECK_INT(io_mkdir_p(q, 0700, false, &err), -1);
	CHECK(err != NULL && strncmp(err, "creating ", 9) == 0 && strstr(err, "/file") != NULL);
	free(err);
	err = NULL;
	CHECK_INT(io_fsync_dir(file, &err), -1);
	CHECK(err != NULL && strncmp(err, "fsync ", 6) == 0 && strstr(err, "/file") != NULL);
	free(err);
	err = NULL;
	CHECK_INT(io_fsync_dir(file, NULL), -1);
	CHECK_INT(io_tmpfile(q, &err), -1);
	CHECK(err != NULL && strstr(err, "/file/sub") != NULL);
	free(err);
	free(file);
	free(p);
	free(q);
	check_rm_tree(dir);
}

static void
test_write_all(void)
{
	char big[200000], back[200000];
	int fds[2];
	pid_t pid;
	size_t got = 0;
	ssize_t n;
	int status;

	/* More than a pipe holds: the writer is cut short and goes on. */
	for (size_t i = 0; i < sizeof big; i++)
		big[i] = (char)(i * 7);
	CHECK(pipe(fds) == 0);
	if ((pid = fork()) == 0) {
		close(fds[0]);
		_exit(io_write_all(fds[1], big, sizeof big) == 0 ? 0 : 1);
	}
	close(fds[1]);
	while (got < sizeof back && (n = read(fds[0], back + got, sizeof back - got)) > 0)
		got += (size_t)n;
	close(fds[0]);
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK_INT(got, sizeof big);
	CHECK(memcmp(big, back, sizeof big) == 0);
	/* A closed reader: -1 with errno (EPIPE once SIGPIPE is ignored). */
	signal(SIGPIPE, SIG_IGN);
	CHECK(pipe(fds) == 0);
	close(fds[0]);
	CHECK_INT(io_write_all(fds[1], "x", 1), -1);
	CHECK_INT(errno, EPIPE);
	close(fds[1]);
	CHECK_INT(io_write_all(-1, "x", 1), -1);
	CHECK_INT(errno, EBADF);
}

static void
test_sasl(void)
{
	struct sasl_plain pl;
	size_t len;
	char *raw, *b64, *text;

	raw = sasl_response(SASL_PLAIN, NULL, "user", "pw", &len);
	CHECK(len == 8 && memcmp(raw, "\0user\0pw", 9) == 0);
	free(raw);
	raw = sasl_response(SASL_PLAIN, "user", "user", "pw", &len);
	CHECK(len == 12 && memcmp(raw, "user\0user\0pw", 13) == 0);
	free(raw);
	raw = sasl_response(SASL_XOAUTH2, NULL, "u@x", "tok", &len);
	CHECK_STR(raw, "user=u@x\001auth=Bearer tok\001\001");
	CHECK_INT(len, strlen(raw));
	free(raw);
	b64 = sasl_response64(SASL_PLAIN, "user", "pw");
	CHECK_STR(b64, "AHVzZXIAcHc=");
	free(b64);
	CHECK_STR(sasl_name(SASL_PLAIN), "PLAIN");
	CHECK_STR(sasl_name(SASL_XOAUTH2), "XOAUTH2");
	/* RFC 5801 saslname: "," and "=" escaped in the authorization id. */
	b64 = sasl_oauthbearer64("a,b=c", "h", 1, "t");
	raw = base64_decode(b64, &len);
	CHECK_STR(raw, "n,a=a=2Cb=3Dc,\001host=h\001port=1\001auth=Bearer t\001\001");
	free(raw);
	free(b64);

	/* Refusals that echo the credential, in each form. */
	CHECK(sasl_repeats_secret("535 bad password hunter2 for you", "u", "hunter2"));
	CHECK(sasl_repeats_secret("-ERR AUTH PLAIN AHUAaHVudGVyMg== refused", "u",
	    "hunter2"));
	text = xasprintf("NO %s", b64 = base64_encode("u\0u\0hunter2", 11));
	CHECK(sasl_repeats_secret(text, "u", "hunter2"));
	free(b64);
	free(text);
	b64 = sasl_response64(SASL_XOAUTH2, "u", "tok-123");
	text = xasprintf("-ERR %s", b64);
	CHECK(sasl_repeats_secret(text, "u", "tok-123"));
	free(b64);
	free(text);
	CHECK(!sasl_repeats_secret("535 5.7.8 Authentication credentials invalid", "u",
	    "hunter2"));
	CHECK(!sasl_repeats_secret("anything", "u", ""));

	/* The server side. */
	CHECK_INT(sasl_plain_parse("\0user\0pw", 8, &pl), 0);
	CHECK(pl.authzid_len == 0 && pl.authcid_len == 4 && pl.passwd_len == 2);
	CHECK(memcmp(pl.authcid, "user", 4) == 0 && strcmp(pl.passwd, "pw") == 0);
	CHECK_INT(sasl_plain_parse("admin\0user\0", 11, &pl), 0);
	CHECK(pl.authzid_len == 5 && pl.authcid_len == 4 && pl.passwd_len == 0);
	CHECK_INT(sasl_plain_parse("user\0pw", 7, &pl), -1);
	CHECK_INT(sasl_plain_parse("userpw", 6, &pl), -1);
	CHECK_INT(sasl_plain_parse("", 0, &pl), -1);
}

/* OAUTHBEARER (RFC 7628) responses, the answers to error challenges, and
 * the status taken from one. */
static void
test_sasl_oauth(void)
{
	size_t len;
	char *raw, *b64, *st, *text;

	raw = sasl_response(SASL_OAUTHBEARER, NULL, "u@x", "tok", &len);
	CHECK_STR(raw, "n,a=u@x,\001auth=Bearer tok\001\001");
	CHECK_INT(len, strlen(raw));
	free(raw);
	CHECK_STR(sasl_name(SASL_OAUTHBEARER), "OAUTHBEARER");
	b64 = sasl_oauthbearer64("u@x", "mail.example", 995, "tok");
	raw = base64_decode(b64, &len);
	CHECK_STR(raw, "n,a=u@x,\001host=mail.example\001port=995\001auth=Bearer tok\001\001");
	free(raw);
	free(b64);
	b64 = sasl_oauthbearer64("u", "h", 0, "t");
	raw = base64_decode(b64, &len);
	CHECK_STR(raw, "n,a=u,\001host=h\001auth=Bearer t\001\001");
	free(raw);
	free(b64);
	/* An echo of the response is caught like the others. */
	b64 = sasl_response64(SASL_OAUTHBEARER, "u", "tok-9");
	text = xasprintf("-ERR %s", b64);
	CHECK(sasl_repeats_secret(text, "u", "tok-9"));
	free(text);
	free(b64);
	CHECK_STR(sasl_error_answer(SASL_OAUTHBEARER), "AQ==");
	CHECK_STR(sasl_error_answer(SASL_XOAUTH2), "");
	CHECK_STR(sasl_error_answer(SASL_PLAIN), "*");
	/* Dovecot's and Gmail's error challenges. */
	b64 = base64_encode("{\"status\":\"401\",\"schemes\":\"bearer\",\"scope\":\"mail\"}", 50);
	st = sasl_oauth_status(b64);
	CHECK_STR(st, "401");
	free(st);
	free(b64);
	b64 = base64_encode("{ \"status\" : \"invalid_token\" }", 30);
	st = sasl_oauth_status(b64);
	CHECK_STR(st, "invalid_token");
	free(st);
	free(b64);
	b64 = base64_encode("{\"status\": 400}", 15);
	st = sasl_oauth_status(b64);
	CHECK_STR(st, "400");
	free(st);
	free(b64);
	/* No status, not base64, nothing printable: NULL. */
	b64 = base64_encode("{\"schemes\":\"bearer\"}", 20);
	CHECK(sasl_oauth_status(b64) == NULL);
	free(b64);
	CHECK(sasl_oauth_status("not base64!") == NULL);
	CHECK(sasl_oauth_status("") == NULL);
	b64 = base64_encode("{\"status\":\"\001\002\"}", 15);
	CHECK(sasl_oauth_status(b64) == NULL);
	free(b64);
}

static void
test_addr(void)
{
	static const char *const good[] = { "a@b", "alice@example.com",
	    "Alice.Smith+tag@example.org", "x_y-z@sub.example.co.uk", "!#$%&'*/=?^`{|}~@h" };
	static const char *const bad[] = { "", "bob", "@example.com", "alice@",
	    "a@b@c", "al ice@x", "a\r@x", "a@x\n", "a\t@x", "<a@x>", "\"a\"@x",
	    "a@[127.0.0.1]", "a(b)@x", "a,b@x", "a;b@x", "a:b@x", "a\\b@x",
	    "\xc3\xa4@x", "a\x7f@x", "@a@x" };
	char long_addr[300];

	for (size_t i = 0; i < sizeof good / sizeof *good; i++)
		CHECK(addr_ok(good[i]));
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		if (addr_ok(bad[i])) {
			printf("  accepted: \"%s\"\n", bad[i]);
			CHECK(false);
		}
	/* 254 bytes is the limit. */
	memset(long_addr, 'a', sizeof long_addr);
	memcpy(long_addr + 250, "@x.y", 4);
	long_addr[254] = '\0';
	CHECK(addr_ok(long_addr));
	memset(long_addr, 'a', sizeof long_addr);
	memcpy(long_addr + 251, "@x.y", 4);
	long_addr[255] = '\0';
	CHECK(!addr_ok(long_addr));
	/* A slice: the relay checks what lies between < and >. */
	CHECK(addr_valid("<a@b>", 5) == false);
	CHECK(addr_valid("<a@b>" + 1, 3));
	CHECK(!addr_valid("a@b", 0));
}

/* Index sort: strcmp order, NULL first, stable for equal strings, a
 * struct field as the key, look-ups in and out of order. */
static void
test_strsort(void)
{
	struct item {
		int pad;
		const char *name;
	} items[300];
	const char *flat[] = { "b", NULL, "a", "c", "b", "", "ab" };
	struct strsort s;
	struct strsort_cursor c;
	char buf[300][8];
	size_t i, p;

	strsort_init(&s, flat, sizeof *flat, 0, 7);
	CHECK(strsort_at(&s, 0) == 1 && strsort_at(&s, 1) == 5 && strsort_at(&s, 2) == 2 &&
	    strsort_at(&s, 3) == 6);
	CHECK(strsort_at(&s, 4) == 0 && strsort_at(&s, 5) == 4 && strsort_at(&s, 6) == 3);
	CHECK_INT(strsort_lower(&s, "b"), 4);
	CHECK_INT(strsort_lower(&s, "zz"), 7);
	strsort_cursor_init(&c, &s);
	CHECK_INT(strsort_cursor_find(&c, "ab"), 3);
	CHECK_INT(strsort_cursor_find(&c, "b"), 4);
	CHECK_INT(strsort_cursor_find(&c, "bb"), 7);
	CHECK_INT(strsort_cursor_find(&c, "a"), 2);	/* behind the cursor */
	CHECK_INT(strsort_cursor_find(&c, "c"), 6);
	CHECK_INT(strsort_cursor_find(&c, "0"), 7);
	strsort_free(&s);

	/* More than one merge pass, keys in a struct, reverse input. */
	for (i = 0; i < 300; i++) {
		snprintf(buf[i], sizeof buf[i], "%03zu", 299 - i / 2 * 2);
		items[i].pad = 0;
		items[i].name = buf[i];
	}
	strsort_init(&s, items, sizeof *items, offsetof(struct item, name), 300);
	for (i = 1; i < 300; i++) {
		CHECK(strcmp(items[strsort_at(&s, i - 1)].name, items[strsort_at(&s, i)].name) <= 0);
		if (strcmp(items[strsort_at(&s, i - 1)].name, items[strsort_at(&s, i)].name) == 0)
			CHECK(strsort_at(&s, i - 1) < strsort_at(&s, i));
	}
	strsort_cursor_init(&c, &s);
	for (i = 0; i < 300; i += 7) {
		p = strsort_cursor_find(&c, buf[299 - i]);
		CHECK(p < 300 && strcmp(items[strsort_at(&s, p)].name, buf[299 - i]) == 0);
		CHECK(p == 0 || strcmp(items[strsort_at(&s, p - 1)].name, buf[299 - i]) < 0);
	}
	CHECK_INT(strsort_cursor_find(&c, "002"), 300);
	strsort_free(&s);

	/* Already sorted (no order array: the order is the index), and
	 * sorted but for the last one. */
	for (i = 0; i < 300; i++)
		snprintf(buf[i], sizeof buf[i], "%03zu", i);
	strsort_init(&s, items, sizeof *items, offsetof(struct item, name), 300);
	CHECK(s.order == NULL);
	for (i = 0; i < 300; i++)
		CHECK_INT(strsort_at(&s, i), i);
	CHECK_INT(strsort_lower(&s, "150"), 150);
	strsort_free(&s);
	snprintf(buf[299], sizeof buf[299], "%03zu", (size_t)17);
	strsort_init(&s, items, sizeof *items, offsetof(struct item, name), 300);
	for (i = 0; i < 300; i++)
		CHECK_INT(strsort_at(&s, i), i < 18 ? i : i == 18 ? 299 : i - 1);
	strsort_free(&s);

	strsort_init(&s, flat, sizeof *flat, 0, 0);
	CHECK_INT(strsort_lower(&s, "a"), 0);
	strsort_free(&s);
}

int
main(void)
{
	TEST(test_base64);
	TEST(test_hex);
	TEST(test_err);
	TEST(test_io);
	TEST(test_write_all);
	TEST(test_sasl);
	TEST(test_sasl_oauth);
	TEST(test_addr);
	TEST(test_strsort);
	CHECK_DONE();
}

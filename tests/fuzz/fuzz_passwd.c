/* The relay's passwd-file (bridge/passwd.c): a Dovecot passwd-file as an
 * administrator might have mangled it, read the way the relay reads it,
 * then logins checked against it: the first line's user with passwords
 * taken from the input, from several peers (allow_nets), plus a user who
 * is not there.
 * Properties: no memory error, no undefined behaviour; an empty password
 * is never accepted; a user absent from the file is never accepted; the
 * same question twice gets the same answer (the reload logic keeps the
 * file it read).
 * crypt(3) cost parameters are the administrator's choice, not an attack
 * surface: inputs with a rounds= setting or a bcrypt hash (whose cost is
 * in the hash) are skipped so that a run measures the parsing, not the
 * hashing. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/passwd.h"
#include "lib/log.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[512];

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_init(LOG_QUIET, 0);
	fuzz_quiet();
	snprintf(path, sizeof path, "%s/passwd", fuzz_dir());
	return 0;
}

/* A crypt setting whose cost the input chooses: rounds= (SHA-crypt) or a
 * bcrypt hash ("$2$", "$2b$", ...). */
static bool
costly(const uint8_t *d, size_t n)
{
	if (memmem(d, n, "rounds=", 7) != NULL)
		return true;
	for (size_t i = 0; i + 4 < n; i++)
		if (d[i] == '$' && d[i + 1] == '2' && (d[i + 2] == '$' || d[i + 3] == '$'))
			return true;
	return false;
}

static int
check(struct passwd_db *db, const char *user, const char *pass, const char *peer)
{
	char *err = NULL;
	int r = passwd_check(db, user, pass, peer, &err);

	FUZZ_CHECK(r >= -1 && r <= 1, "result %d", r);
	FUZZ_CHECK((r == -1) == (err != NULL), "error message iff -1");
	free(err);
	return r;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const peers[] = { "127.0.0.1", "2001:db8::7", NULL };
	char user[300], pass[300];
	const uint8_t *colon, *nl;
	struct passwd_db *db;
	size_t ulen, plen;

	if (costly(data, size))
		return 0;
	fuzz_write_file(path, data, size, 0600);
	/* The first line's user, and the text after its second ':' (or
	 * after the '}' of its scheme) as a password guess. */
	nl = memchr(data, '\n', size);
	size_t first = nl ? (size_t)(nl - data) : size;
	colon = memchr(data, ':', first);
	ulen = colon ? (size_t)(colon - data) : first;
	if (ulen >= sizeof user)
		ulen = sizeof user - 1;
	memcpy(user, data, ulen);
	user[ulen] = '\0';
	plen = 0;
	if (colon != NULL) {
		const uint8_t *p = colon + 1, *end = data + first, *q;

		if ((q = memchr(p, '}', (size_t)(end - p))) != NULL)
			p = q + 1;
		if ((q = memchr(p, ':', (size_t)(end - p))) != NULL)
			end = q;
		plen = (size_t)(end - p) < sizeof pass - 1 ? (size_t)(end - p) : sizeof pass - 1;
		memcpy(pass, p, plen);
	}
	pass[plen] = '\0';

	db = passwd_open(path);
	/* Every check of a crypt hash costs its rounds: the other peers are
	 * asked only once the password is right (their allow_nets matter
	 * then), a user who is not there (the dummy hash) half the time. */
	for (size_t i = 0; i < sizeof peers / sizeof *peers; i++) {
		int a = check(db, user, pass, peers[i]);

		FUZZ_CHECK(a == check(db, user, pass, peers[i]), "same question, new answer");
		FUZZ_CHECK(a != 1 || *pass != '\0', "empty password accepted");
		FUZZ_CHECK(check(db, user, "", peers[i]) != 1, "empty password accepted");
		if (a != 1)
			break;
	}
	if (size % 2 == 0)
		FUZZ_CHECK(check(db, "no-such-user-\x01", "x", "127.0.0.1") != 1,
		    "a user absent from the file accepted");
	(void)passwd_verify((const char *)pass, "x");
	passwd_free(db);
	return 0;
}

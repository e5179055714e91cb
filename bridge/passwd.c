#include "bridge/passwd.h"

#include <crypt.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <gnutls/crypto.h>

#include "lib/xmalloc.h"

struct passwd_ent {
	char *user;
	char *field;            /* "{SCHEME}hash", as in the file */
	char *extra;            /* field 8, Dovecot's extra fields; NULL none */
};

struct passwd_db {
	char *path;
	bool loaded;
	struct stat st;         /* of the file as loaded: reload when it differs */
	struct passwd_ent *ents;
	size_t n;
};

/* Compared against when the user does not exist, so that a wrong user name
 * costs as much time as a wrong password (the password is "x"). */
#define DUMMY_HASH "{SHA512-CRYPT}$6$p3bdummysalt$NLp8jjnXhkaRfaJ3KFQRdUj1CpC7DYd" \
	"epfo/hj7yn3xhYO6BzBQW89YyWdXMzgRFngx/PIvXryxoc.VGtvYHB."

struct passwd_db *
passwd_open(const char *path)
{
	struct passwd_db *db = xcalloc(1, sizeof *db);

	db->path = xstrdup(path);
	return db;
}

static void
clear_ents(struct passwd_db *db)
{
	for (size_t i = 0; i < db->n; i++) {
		free(db->ents[i].user);
		if (db->ents[i].field != NULL)
			explicit_bzero(db->ents[i].field, strlen(db->ents[i].field));
		free(db->ents[i].field);
		free(db->ents[i].extra);
	}
	free(db->ents);
	db->ents = NULL;
	db->n = 0;
	db->loaded = false;
}

void
passwd_free(struct passwd_db *db)
{
	if (db == NULL)
		return;
	clear_ents(db);
	free(db->path);
	free(db);
}

/* Constant time over the digests: neither the content nor the length of
 * the secret leaks through how long a comparison takes. */
static bool
ct_equal(const char *a, const char *b)
{
	unsigned char da[32], db[32], diff = 0;

	if (gnutls_hash_fast(GNUTLS_DIG_SHA256, a, strlen(a), da) != 0 ||
	    gnutls_hash_fast(GNUTLS_DIG_SHA256, b, strlen(b), db) != 0)
		return false;
	for (size_t i = 0; i < sizeof da; i++)
		diff |= da[i] ^ db[i];
	return diff == 0;
}

static int
verify_crypt(const char *hash, const char *pass)
{
	struct crypt_data *cd = xcalloc(1, sizeof *cd);
	const char *out;
	int rc;

	out = crypt_rn(pass, hash, cd, sizeof *cd);
	if (out == NULL || out[0] == '*')
		rc = -1;        /* a setting crypt(3) does not support */
	else
		rc = ct_equal(out, hash) ? 1 : 0;
	explicit_bzero(cd, sizeof *cd);
	free(cd);
	return rc;
}

/* Schemes whose hash is a crypt(3) string, with the prefix it must have. */
static const struct {
	const char *scheme, *prefix;
} crypt_schemes[] = {
	{ "SHA512-CRYPT", "$6$" },
	{ "SHA256-CRYPT", "$5$" },
	{ "MD5-CRYPT", "$1$" },
	{ "BLF-CRYPT", "$2" },
	{ "CRYPT", "" },
};

int
passwd_verify(const char *field, const char *pass)
{
	const char *end, *hash = field;
	size_t len;

	if (field[0] != '{')
		return *field ? verify_crypt(field, pass) : -1;
	if ((end = strchr(field, '}')) == NULL)
		return -1;
	len = end - field - 1;
	hash = end + 1;
#define IS(name) (len == strlen(name) && strncasecmp(field + 1, name, len) == 0)
	if (IS("PLAIN") || IS("CLEAR") || IS("CLEARTEXT"))
		return ct_equal(hash, pass) ? 1 : 0;
	for (size_t i = 0; i < sizeof crypt_schemes / sizeof *crypt_schemes; i++) {
		if (!IS(crypt_schemes[i].scheme))
			continue;
		if (strncmp(hash, crypt_schemes[i].prefix,
		    strlen(crypt_schemes[i].prefix)) != 0 || *hash == '\0')
			return -1;
		return verify_crypt(hash, pass);
	}
#undef IS
	return -1;
}

/* One line of the file into db: the user, the password field and the
 * extra fields (everything after the seventh ':', so that IPv6 networks in
 * allow_nets keep their colons). */
static void
add_line(struct passwd_db *db, char *line)
{
	char *colon, *pw, *end, *extra = NULL;

	line[strcspn(line, "\r\n")] = '\0';
	if (*line == '\0' || *line == '#' || (colon = strchr(line, ':')) == NULL)
		return;
	*colon = '\0';
	pw = colon + 1;
	if ((end = strchr(pw, ':')) != NULL) {
		*end = '\0';
		extra = end + 1;
		for (int i = 3; i <= 7 && extra != NULL; i++)
			if ((extra = strchr(extra, ':')) != NULL)
				extra++;
	}
	db->ents = xreallocarray(db->ents, db->n + 1, sizeof *db->ents);
	db->ents[db->n].user = xstrdup(line);
	db->ents[db->n].field = xstrdup(pw);
	db->ents[db->n].extra = extra != NULL && *extra != '\0' ? xstrdup(extra) : NULL;
	db->n++;
}

static int
load(struct passwd_db *db, const struct stat *st, char **err)
{
	FILE *f;
	char *line = NULL;
	size_t cap = 0;

	clear_ents(db);
	if ((f = fopen(db->path, "re")) == NULL) {
		*err = xasprintf("passwd_file %s: %s", db->path, strerror(errno));
		return -1;
	}
	while (getline(&line, &cap, f) != -1)
		add_line(db, line);
	if (line != NULL)
		explicit_bzero(line, cap);
	free(line);
	if (ferror(f)) {
		*err = xasprintf("passwd_file %s: read error", db->path);
		fclose(f);
		clear_ents(db);
		return -1;
	}
	fclose(f);
	db->st = *st;
	db->loaded = true;
	return 0;
}

static bool
changed(const struct stat *a, const struct stat *b)
{
	return a->st_ino != b->st_ino || a->st_dev != b->st_dev ||
	    a->st_size != b->st_size || a->st_mtim.tv_sec != b->st_mtim.tv_sec ||
	    a->st_mtim.tv_nsec != b->st_mtim.tv_nsec;
}

/* addr ("a.b.c.d" or an IPv6 address) into 16 bytes, IPv4 as the
 * IPv4-mapped IPv6 address; false when it is neither. */
static bool
parse_addr(const char *addr, unsigned char out[16])
{
	static const unsigned char v4mapped[12] = { [10] = 0xff, [11] = 0xff };
	struct in_addr a4;

	if (inet_pton(AF_INET, addr, &a4) == 1) {
		memcpy(out, v4mapped, 12);
		memcpy(out + 12, &a4, 4);
		return true;
	}
	return inet_pton(AF_INET6, addr, out) == 1;
}

/* 1 when peer is inside net ("ADDR" or "ADDR/BITS"), 0 when not, -1 when
 * net cannot be understood. */
static int
in_net(const unsigned char peer[16], const char *net)
{
	char buf[INET6_ADDRSTRLEN + 8], *slash, *end;
	unsigned char a[16];
	long bits;
	bool v4;

	if (strlen(net) >= sizeof buf)
		return -1;
	strcpy(buf, net);
	if ((slash = strchr(buf, '/')) != NULL)
		*slash++ = '\0';
	if (!parse_addr(buf, a))
		return -1;
	v4 = strchr(buf, ':') == NULL;
	bits = v4 ? 32 : 128;
	if (slash != NULL) {
		errno = 0;
		bits = strtol(slash, &end, 10);
		if (*slash == '\0' || *end != '\0' || errno != 0 || bits < 0 ||
		    bits > (v4 ? 32 : 128))
			return -1;
	}
	if (v4)
		bits += 96;
	for (long i = 0; i < bits; i++) {
		unsigned char m = 0x80 >> (i % 8);

		if ((a[i / 8] & m) != (peer[i / 8] & m))
			return 0;
	}
	return 1;
}

/* Dovecot's allow_nets: the peer must be in one of the comma-separated
 * networks. Anything we cannot evaluate refuses (fail closed). */
static bool
nets_allow(const char *nets, const char *peer)
{
	unsigned char p[16];
	char *list, *cur, *net;
	bool ok = false;

	if (peer == NULL || !parse_addr(peer, p))
		return false;
	list = cur = xstrdup(nets);
	while (!ok && (net = strsep(&cur, ",")) != NULL) {
		int r;

		net += strspn(net, " ");
		if ((r = in_net(p, net)) == -1)
			break;
		ok = r == 1;
	}
	free(list);
	return ok;
}

/* The extra fields (space-separated "key=value" or flags) that bear on a
 * login: nologin and nopassword refuse (the relay always needs a
 * password), allow_nets refuses a peer outside its networks. */
static bool
extra_allows(const char *extra, const char *peer)
{
	char *list, *cur, *f, *eq;
	bool ok = true;

	if (extra == NULL)
		return true;
	list = cur = xstrdup(extra);
	while (ok && (f = strsep(&cur, " \t")) != NULL) {
		size_t klen = (eq = strchr(f, '=')) != NULL ? (size_t)(eq - f) : strlen(f);

#define KEY(name) (klen == strlen(name) && strncasecmp(f, name, klen) == 0)
		if (KEY("nologin") || KEY("nopassword"))
			ok = false;
		else if (KEY("allow_nets"))
			ok = eq != NULL && nets_allow(eq + 1, peer);
#undef KEY
	}
	free(list);
	return ok;
}

int
passwd_check(struct passwd_db *db, const char *user, const char *pass,
    const char *peer, char **err)
{
	struct stat st;
	int r;

	if (stat(db->path, &st) == -1) {
		clear_ents(db);
		*err = xasprintf("passwd_file %s: %s", db->path, strerror(errno));
		return -1;
	}
	if ((!db->loaded || changed(&st, &db->st)) && load(db, &st, err) == -1)
		return -1;
	for (size_t i = 0; i < db->n; i++)
		if (strcmp(db->ents[i].user, user) == 0) {
			/* The hash is checked in every case: the same time. */
			r = passwd_verify(db->ents[i].field, pass);
			return r == 1 && *pass != '\0' &&
			    extra_allows(db->ents[i].extra, peer) ? 1 : 0;
		}
	(void)passwd_verify(DUMMY_HASH, pass);
	return 0;
}

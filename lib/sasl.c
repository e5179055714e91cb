#include "lib/sasl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/base64.h"
#include "lib/xmalloc.h"

const char *
sasl_name(enum sasl_mech mech)
{
	return mech == SASL_XOAUTH2 ? "XOAUTH2" :
	    mech == SASL_OAUTHBEARER ? "OAUTHBEARER" : "PLAIN";
}

/* Returns the base64 encoding of s[0..len), which it wipes and frees. */
static char *
encode_wiped(char *s, size_t len)
{
	char *b64 = base64_encode(s, len);

	explicit_bzero(s, len);
	free(s);
	return b64;
}

/* user as a gs2 authorization identity (RFC 5801 saslname): "," is "=2C"
 * and "=" is "=3D", either would end the header's field early. */
static char *
saslname(const char *user)
{
	char *out = xmalloc(3 * strlen(user) + 1);
	size_t o = 0;

	for (; *user != '\0'; user++)
		if (*user == ',' || *user == '=') {
			memcpy(out + o, *user == ',' ? "=2C" : "=3D", 3);
			o += 3;
		} else
			out[o++] = *user;
	out[o] = '\0';
	return out;
}

char *
sasl_response(enum sasl_mech mech, const char *authzid, const char *user,
    const char *secret, size_t *len)
{
	size_t zl = authzid != NULL ? strlen(authzid) : 0, ul = strlen(user);
	size_t sl = strlen(secret);
	char *raw;

	if (mech == SASL_XOAUTH2) {
		raw = xasprintf("user=%s\001auth=Bearer %s\001\001", user, secret);
		*len = strlen(raw);
		return raw;
	}
	if (mech == SASL_OAUTHBEARER) {
		char *gs2 = saslname(user);

		raw = xasprintf("n,a=%s,\001auth=Bearer %s\001\001", gs2, secret);
		free(gs2);
		*len = strlen(raw);
		return raw;
	}
	*len = zl + ul + sl + 2;
	raw = xmalloc(*len + 1);
	memcpy(raw, authzid != NULL ? authzid : "", zl);
	raw[zl] = '\0';
	memcpy(raw + zl + 1, user, ul);
	raw[zl + 1 + ul] = '\0';
	memcpy(raw + zl + ul + 2, secret, sl);
	raw[*len] = '\0';
	return raw;
}

char *
sasl_oauthbearer(const char *user, const char *host, unsigned port, const char *token)
{
	char portkv[32] = "", *gs2 = saslname(user), *raw;

	if (port != 0)
		snprintf(portkv, sizeof portkv, "port=%u\001", port);
	raw = xasprintf("n,a=%s,\001host=%s\001%sauth=Bearer %s\001\001", gs2, host,
	    portkv, token);
	free(gs2);
	return raw;
}

char *
sasl_response64(enum sasl_mech mech, const char *user, const char *secret)
{
	size_t len;
	char *raw = sasl_response(mech, NULL, user, secret, &len);

	return encode_wiped(raw, len);
}

char *
sasl_oauthbearer64(const char *user, const char *host, unsigned port, const char *token)
{
	char *raw = sasl_oauthbearer(user, host, port, token);

	return encode_wiped(raw, strlen(raw));
}

const char *
sasl_error_answer(enum sasl_mech mech)
{
	return mech == SASL_OAUTHBEARER ? "AQ==" : mech == SASL_XOAUTH2 ? "" : "*";
}

/* The value of the JSON member "status" in j: a string (escapes are not
 * undone: a status is a plain word) or a number; NULL when absent. */
static char *
json_status(const char *j)
{
	const char *p = j, *v, *e;

	while ((p = strstr(p, "\"status\"")) != NULL) {
		v = p + 8;
		p = v;
		while (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n')
			v++;
		if (*v++ != ':')
			continue;
		while (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n')
			v++;
		if (*v == '"') {
			for (e = ++v; *e != '\0' && *e != '"'; e++)
				;
			return *e == '"' ? xstrndup(v, (size_t)(e - v)) : NULL;
		}
		for (e = v; *e >= '0' && *e <= '9'; e++)
			;
		return e > v ? xstrndup(v, (size_t)(e - v)) : NULL;
	}
	return NULL;
}

char *
sasl_oauth_status(const char *challenge64)
{
	size_t len, i, k = 0;
	char *json = base64_decode(challenge64, &len), *st;

	if (json == NULL)
		return NULL;
	st = json_status(json);
	free(json);
	if (st == NULL)
		return NULL;
	for (i = 0; st[i] != '\0' && k < 64; i++)
		if (st[i] > 0x20 && st[i] < 0x7f && st[i] != '\\')
			st[k++] = st[i];
	st[k] = '\0';
	if (k == 0) {
		free(st);
		return NULL;
	}
	return st;
}

/* True when text holds the n bytes at p, as they are or in base64. */
static bool
holds(const char *text, const char *p, size_t n)
{
	char *b64;
	bool found;

	if (n == 0)
		return false;
	if (memmem(text, strlen(text), p, n) != NULL)
		return true;
	b64 = base64_encode(p, n);
	found = strstr(text, b64) != NULL;
	explicit_bzero(b64, strlen(b64));
	free(b64);
	return found;
}

/* Whether text holds one response of mech (authzid NULL or user). */
static bool
holds_response(const char *text, enum sasl_mech mech, const char *authzid,
    const char *user, const char *secret)
{
	size_t len;
	char *raw = sasl_response(mech, authzid, user, secret, &len);
	bool found = holds(text, raw, len);

	explicit_bzero(raw, len);
	free(raw);
	return found;
}

bool
sasl_repeats_secret(const char *text, const char *user, const char *secret)
{
	if (*secret == '\0')
		return false;
	return holds(text, secret, strlen(secret)) ||
	    holds_response(text, SASL_PLAIN, NULL, user, secret) ||
	    holds_response(text, SASL_PLAIN, user, user, secret) ||
	    holds_response(text, SASL_XOAUTH2, NULL, user, secret) ||
	    holds_response(text, SASL_OAUTHBEARER, NULL, user, secret);
}

int
sasl_plain_parse(const char *v, size_t len, struct sasl_plain *out)
{
	const char *authc = memchr(v, '\0', len), *pass;

	if (authc == NULL ||
	    (pass = memchr(authc + 1, '\0', (size_t)(v + len - authc - 1))) == NULL)
		return -1;
	out->authzid = v;
	out->authzid_len = (size_t)(authc - v);
	out->authcid = authc + 1;
	out->authcid_len = (size_t)(pass - authc - 1);
	out->passwd = pass + 1;
	out->passwd_len = (size_t)(v + len - pass - 1);
	return 0;
}

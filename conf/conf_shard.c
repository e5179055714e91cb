/* --shard K/N: which accounts an instance handles. The hash is FNV-1a 64
 * of the account name's bytes (stable across versions, machines and
 * byte orders: it is part of the contract, doc/DESIGN.md, Scale-out);
 * account NAME is in shard K of N when hash(NAME) mod N == K - 1. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "conf/conf_priv.h"

uint64_t
conf_shard_hash(const char *name)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		h ^= *p;
		h *= 0x100000001b3ULL;
	}
	return h;
}

unsigned
conf_shard_of(const char *name, unsigned n)
{
	return n == 0 ? 1 : (unsigned)(conf_shard_hash(name) % n) + 1;
}

int
conf_shard_parse(const char *s, unsigned *k, unsigned *n)
{
	char *end;
	unsigned long a, b;

	if (*s < '1' || *s > '9')
		return -1;
	a = strtoul(s, &end, 10);
	if (*end != '/' || end[1] < '1' || end[1] > '9')
		return -1;
	b = strtoul(end + 1, &end, 10);
	if (*end != '\0' || a > b || b > 100000)
		return -1;
	*k = (unsigned)a;
	*n = (unsigned)b;
	return 0;
}

void
conf_shard(struct conf *c, unsigned k, unsigned n)
{
	size_t j = 0;

	c->shard_k = k;
	c->shard_n = n;
	if (n <= 1)
		return;
	for (size_t i = 0; i < c->n_accounts; i++) {
		if (conf_shard_of(c->accounts[i].name, n) == k)
			c->accounts[j++] = c->accounts[i];
		else
			conf_free_account(&c->accounts[i]);
	}
	c->n_accounts = j;
}

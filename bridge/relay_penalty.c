/* The per-address AUTH failure table: see relay_penalty.h. */
#include "bridge/relay_penalty.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/xmalloc.h"

struct entry {
	char addr[INET6_ADDRSTRLEN];
	unsigned fails;			/* in the current window */
	time_t first;			/* of the window's first failure */
	time_t last;
	time_t blocked_until;		/* 0: not blocked */
};

struct relay_penalty {
	struct entry *v;
	size_t n, cap;
};

struct relay_penalty *
relay_penalty_new(void)
{
	return xcalloc(1, sizeof(struct relay_penalty));
}

void
relay_penalty_free(struct relay_penalty *p)
{
	if (p == NULL)
		return;
	free(p->v);
	free(p);
}

static struct entry *
find(struct relay_penalty *p, const char *addr)
{
	for (size_t i = 0; i < p->n; i++)
		if (strcmp(p->v[i].addr, addr) == 0)
			return &p->v[i];
	return NULL;
}

/* A new entry; the least recently seen one makes room when full. */
static struct entry *
add(struct relay_penalty *p, const char *addr)
{
	struct entry *e;

	if (p->n == RELAY_PENALTY_MAX) {
		size_t old = 0;

		for (size_t i = 1; i < p->n; i++)
			if (p->v[i].last < p->v[old].last)
				old = i;
		p->v[old] = p->v[--p->n];
	}
	if (p->n == p->cap) {
		p->cap = p->cap ? 2 * p->cap : 16;
		p->v = xreallocarray(p->v, p->cap, sizeof *p->v);
	}
	e = &p->v[p->n++];
	memset(e, 0, sizeof *e);
	snprintf(e->addr, sizeof e->addr, "%s", addr);
	return e;
}

/* Ends an expired block or window. */
static void
age(struct entry *e, time_t now)
{
	if (e->blocked_until != 0 && now >= e->blocked_until) {
		e->blocked_until = 0;
		e->fails = 0;
	}
	if (e->blocked_until == 0 && e->fails > 0 && now - e->first > RELAY_PENALTY_WINDOW)
		e->fails = 0;
}

void
relay_penalty_add(struct relay_penalty *p, const char *addr, unsigned fails, time_t now)
{
	struct entry *e;

	if (fails == 0)
		return;
	if ((e = find(p, addr)) == NULL)
		e = add(p, addr);
	age(e, now);
	e->last = now;
	if (e->blocked_until != 0)
		return;
	if (e->fails == 0) {
		e->first = now;
		log_info("relay: %s: authentication failed", addr);
	}
	e->fails += fails;
	if (e->fails >= RELAY_PENALTY_FAILS) {
		e->blocked_until = now + RELAY_PENALTY_BLOCK;
		log_warnx("relay: %s: %u failed authentications in %lld s: AUTH refused from this "
		    "address for %d s", addr, e->fails, (long long)(now - e->first),
		    RELAY_PENALTY_BLOCK);
	}
}

bool
relay_penalty_blocked(struct relay_penalty *p, const char *addr, time_t now)
{
	struct entry *e = find(p, addr);

	if (e == NULL)
		return false;
	age(e, now);
	return e->blocked_until != 0;
}

/* Account passes run in child processes, at most max_parallel at once:
 * a pass that crashes or hangs cannot take the others (or the daemon)
 * with it, each child has its own SQLite connection and libetpan state,
 * and SIGTERM reaches every pass. Used by `sync` and by `run`. */
#ifndef POP3BRIDGE_SYNC_POOL_H
#define POP3BRIDGE_SYNC_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "conf/conf.h"

struct sync_pool_job {
	pid_t pid;
	char *account;          /* owned */
};

struct sync_pool {
	unsigned max;
	struct sync_pool_job *jobs;  /* max slots; pid 0 = free */
	bool daemon;            /* quieter reports: only passes that did something */
};

void sync_pool_init(struct sync_pool *p, unsigned max, bool daemon);
void sync_pool_free(struct sync_pool *p);

/* Starts a pass of account a in a child process. The child opens the state
 * database in c->state_dir, runs sync_account(), logs one line naming the
 * account and exits with its code. Returns 0, or -1 when no slot is free or
 * fork failed (logged). */
int sync_pool_start(struct sync_pool *p, const struct conf *c, const struct conf_account *a);

/* Reaps a finished child: returns 1 with *account (owned by the caller now)
 * and *code (its exit code; EX_SOFTWARE when killed by a signal), 0 when
 * none finished (!block, or a signal interrupted the wait), -1 when no
 * child is running. Without block, only the pool's own children are
 * waited for (the daemon has others); with block, any child (`sync`). */
int sync_pool_reap(struct sync_pool *p, bool block, char **account, int *code);

size_t sync_pool_running(const struct sync_pool *p);
bool sync_pool_has(const struct sync_pool *p, const char *account);
void sync_pool_signal(struct sync_pool *p, int sig);

/* `sync`: one pass over the named accounts (all when n is 0), in parallel.
 * Returns EX_OK, or the exit code of the first pass that failed. */
int sync_pool_run(const struct conf *c, char *const *names, size_t n);

#endif

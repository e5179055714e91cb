/* Account passes run in child processes, at most max_parallel at once and
 * at most max_per_host on one POP3 host: a pass that crashes or hangs
 * cannot take the others (or the daemon) with it, each child has its own
 * SQLite connection and libetpan state, and SIGTERM reaches every pass.
 * Used by `sync` and by `run`.
 *
 * Each child reports to the pool over one pipe: its result when it ends
 * (the pool adds them up: sync_pool_stats) and, for `sync` on a terminal,
 * its progress (drawn by bridge/progress.c, the children's stderr then
 * printed above it). */
#ifndef POP3BRIDGE_SYNC_POOL_H
#define POP3BRIDGE_SYNC_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "conf/conf.h"

/* The schedule a finished pass of the daemon left in the state (its last
 * commit, read back by the pass itself before it exited): the daemon
 * plans the account's next pass by it without opening the state. */
struct sync_pool_sched {
	bool known;             /* false: not told (a pass of `sync`, or it died first) */
	int64_t not_before;     /* unix time, 0 none (state_sched) */
	int64_t next_poll_at;   /* unix time, 0 none */
};

struct sync_pool_job {
	pid_t pid;
	char *account;          /* owned */
	char *host;             /* owned, the account's POP3 host */
	bool reported;          /* its result came (else it died without one) */
	struct sync_pool_sched sched;   /* from its result */
};

/* What the passes that ended since the last sync_pool_take_stats did. */
struct sync_pool_stats {
	unsigned long passes, failed;
	unsigned long imported, deleted;
	uint64_t bytes;
};

struct progress;

struct sync_pool {
	unsigned max;           /* slots */
	unsigned limit;         /* passes at once (max_parallel; <= max) */
	struct sync_pool_job *jobs;  /* max slots; pid 0 = free */
	bool daemon;            /* quieter reports: only passes that did something */
	int report[2];          /* the children's reports: read, write end */
	struct sync_pool_stats stats;
	struct progress *progress;   /* `sync` on a terminal: drawn; else NULL */
	int err_fd, err_w;      /* with progress: the children's stderr, both ends */
	bool keep;              /* keep the state open while passes come and go */
	pid_t keeper;           /* the process that keeps it open, 0 none */
};

/* With keep, the first pass started once the state database exists also
 * starts a keeper: a child that holds a connection to it, idle (no
 * transaction), until sync_pool_free. Each pass opens the database anew,
 * and SQLite rebuilds the WAL's index from the whole WAL (up to its 1000
 * pages: reading and checksumming megabytes) whenever a connection opens
 * with no other one open; the keeper's connection keeps the index valid
 * between passes. For pools of more than one account: one pass has
 * nothing to share it with. */
void sync_pool_init(struct sync_pool *p, unsigned max, bool daemon, bool keep);
/* Frees p, stopping its keeper (SIGKILL, then waited for). */
void sync_pool_free(struct sync_pool *p);

/* A new max_parallel (SIGHUP): more slots at once, or fewer new passes
 * until the running ones are below it. */
void sync_pool_resize(struct sync_pool *p, unsigned max);

/* Starts a pass of account a in a child process. The child opens the state
 * database in c->state_dir, runs sync_account(), logs one line naming the
 * account, reports its result and exits with its code. Returns 0, or -1
 * when no slot is free or fork failed (logged). */
int sync_pool_start(struct sync_pool *p, const struct conf *c, const struct conf_account *a);

/* Reaps a finished child: returns 1 with *account (owned by the caller now),
 * *code (its exit code; EX_SOFTWARE when killed by a signal) and, when
 * sched is not NULL, the schedule its pass reported (sched->known false
 * when it reported none), 0 when none finished (!block, or a signal
 * interrupted the wait), -1 when no child is running. Without block, only
 * the pool's own children are waited for (the daemon has others); with
 * block, any child (`sync`). */
int sync_pool_reap(struct sync_pool *p, bool block, char **account, int *code,
    struct sync_pool_sched *sched);

size_t sync_pool_running(const struct sync_pool *p);
bool sync_pool_has(const struct sync_pool *p, const char *account);
/* Passes running on host (compared in any case). */
size_t sync_pool_on_host(const struct sync_pool *p, const char *host);
void sync_pool_signal(struct sync_pool *p, int sig);

/* The figures of the passes reaped since the last call, then zeroed. */
struct sync_pool_stats sync_pool_take_stats(struct sync_pool *p);

/* `sync`: one pass over the named accounts (all when n is 0), in parallel
 * within max_parallel and max_per_host. Returns EX_OK, or the exit code of
 * the first pass that failed. */
int sync_pool_run(const struct conf *c, char *const *names, size_t n);

#endif

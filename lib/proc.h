/* The first step of every child process the daemon forks (account passes,
 * the queue runner, the relay), so that they all handle signals and the
 * death of their parent alike. */
#ifndef POP3BRIDGE_PROC_H
#define POP3BRIDGE_PROC_H

#include <stdbool.h>
#include <sys/types.h>

/* Sets up a freshly forked child of parent: SIGTERM and SIGINT run on_stop
 * (which only sets a flag: the child finishes its current step, then
 * stops) or, when on_stop is NULL, are held (blocked) so that they never
 * interrupt a read or write, and the child asks proc_stop_requested()
 * between steps; SIGHUP is ignored (reloading is the parent's business),
 * SIGCHLD is back to its default, and deathsig is sent to the child when
 * the parent dies. Returns false when the parent is already gone (it died
 * before deathsig was armed): the caller then stops in its own way. */
bool proc_child_init(pid_t parent, void (*on_stop)(int), int deathsig);

/* With on_stop NULL: whether a SIGTERM or SIGINT is waiting. */
bool proc_stop_requested(void);

/* With on_stop NULL: sleeps up to seconds; true (and the signal taken) when
 * a SIGTERM or SIGINT ends the sleep. */
bool proc_pause(unsigned seconds);

/* proc_pause(), also ended early (returning false) when fd (>= 0) becomes
 * readable: a wait for work or a stop, whichever comes first. */
bool proc_pause_fd(unsigned seconds, int fd);

/* Working on a user's files as root: the effective uid, gid and groups of
 * that user around each access (so that a symlink the user planted cannot
 * lead root anywhere), and root's own again in between. */
struct proc_ids {
	bool active;            /* false: nothing to switch (not root, or root's tree) */
	uid_t uid;
	gid_t gid;
	gid_t root_gid;
	gid_t *groups;          /* root's supplementary groups (owned) */
	int n_groups;
};

/* Plans switching to uid/gid when running as root and uid is not 0;
 * otherwise ids->active stays false. 0, or -1 with *err allocated. */
int proc_ids_plan(struct proc_ids *ids, uid_t uid, gid_t gid, char **err);
/* Takes the planned ids: 0, or -1 with *err allocated (root's ids kept). */
int proc_ids_enter(struct proc_ids *ids, char **err);
/* Back to root's ids (fatal if impossible). A change of ids clears the
 * parent-death signal (the kernel does so on every credential change):
 * it is armed again here, and a child whose parent died meanwhile dies. */
void proc_ids_leave(struct proc_ids *ids);
void proc_ids_free(struct proc_ids *ids);

/* For good (a child that parses untrusted input, the relay): takes uid and
 * gid as real, effective and saved ids with no supplementary group but
 * gid, checks that root cannot be regained, and arms the parent-death
 * signal again (a credential change clears it). Then, for any uid, drops
 * every capability (permitted, effective, inheritable, ambient): a daemon
 * given CAP_NET_BIND_SERVICE to bind port 587 passes none on. 0, or -1
 * with *err (the process must then not go on). */
int proc_drop(uid_t uid, gid_t gid, char **err);

#endif

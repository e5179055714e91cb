/* The first step of every child process the daemon forks (account passes,
 * the queue runner, the relay), so that they all handle signals and the
 * death of their parent alike. */
#ifndef POP3BRIDGE_PROC_H
#define POP3BRIDGE_PROC_H

#include <stdbool.h>
#include <sys/types.h>

/* Sets up a freshly forked child of parent: SIGTERM and SIGINT run on_stop
 * (which only sets a flag: the child finishes its current step, then
 * stops), SIGHUP is ignored (reloading is the parent's business), SIGCHLD
 * is back to its default, the signal mask held across fork() is cleared,
 * and deathsig is sent to the child when the parent dies. Returns false
 * when the parent is already gone (it died before deathsig was armed):
 * the caller then stops in its own way. */
bool proc_child_init(pid_t parent, void (*on_stop)(int), int deathsig);

#endif

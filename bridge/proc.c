#include "bridge/proc.h"

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

bool
proc_child_init(pid_t parent, void (*on_stop)(int), int deathsig)
{
	struct sigaction sa = { .sa_handler = on_stop };
	sigset_t none;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGHUP, SIG_IGN);
	signal(SIGCHLD, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	prctl(PR_SET_PDEATHSIG, deathsig);
	/* A parent that died before prctl() sent nothing: ask. */
	return getppid() == parent;
}

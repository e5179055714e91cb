#include "lib/proc.h"

#include <poll.h>
#include <signal.h>
#include <errno.h>
#include <grp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>

#include <linux/capability.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/xmalloc.h"

/* What proc_child_init armed, to arm it again after a change of ids. */
static pid_t death_parent;
static int death_signal;

bool
proc_child_init(pid_t parent, void (*on_stop)(int), int deathsig)
{
	struct sigaction sa = { .sa_handler = on_stop ? on_stop : SIG_DFL };
	sigset_t mask;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGHUP, SIG_IGN);
	signal(SIGCHLD, SIG_DFL);
	/* Without a handler, TERM and INT are held until asked for: a
	 * handler would cut a read short (EINTR), and libetpan takes that for
	 * a dead connection — in the middle of an upstream's reply to DATA,
	 * the message would be sent twice. */
	sigemptyset(&mask);
	if (on_stop == NULL) {
		sigaddset(&mask, SIGTERM);
		sigaddset(&mask, SIGINT);
	}
	sigprocmask(SIG_SETMASK, &mask, NULL);
	death_parent = parent;
	death_signal = deathsig;
	prctl(PR_SET_PDEATHSIG, deathsig);
	/* A parent that died before prctl() sent nothing: ask. */
	return getppid() == parent;
}

bool
proc_stop_requested(void)
{
	sigset_t pending;

	if (sigpending(&pending) == -1)
		return false;
	return sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1;
}

bool
proc_pause(unsigned seconds)
{
	struct timespec ts = { seconds, 0 };
	sigset_t stop;

	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	return sigtimedwait(&stop, NULL, &ts) > 0;
}

bool
proc_pause_fd(unsigned seconds, int fd)
{
	struct pollfd p[2];
	sigset_t stop;
	int sfd, n;
	bool stopped = false;

	if (fd < 0)
		return proc_pause(seconds);
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	/* The stop signals are held (blocked): a signalfd takes them. */
	if ((sfd = signalfd(-1, &stop, SFD_CLOEXEC | SFD_NONBLOCK)) == -1)
		return proc_pause(seconds);
	p[0] = (struct pollfd){ .fd = sfd, .events = POLLIN };
	p[1] = (struct pollfd){ .fd = fd, .events = POLLIN };
	n = poll(p, 2, (int)seconds * 1000);
	if (n > 0 && (p[0].revents & POLLIN)) {
		struct signalfd_siginfo si;

		stopped = read(sfd, &si, sizeof si) == (ssize_t)sizeof si;
	}
	close(sfd);
	return stopped;
}

int
proc_ids_plan(struct proc_ids *ids, uid_t uid, gid_t gid, char **err)
{
	memset(ids, 0, sizeof *ids);
	if (geteuid() != 0 || uid == 0)
		return 0;
	ids->uid = uid;
	ids->gid = gid;
	ids->root_gid = getegid();
	ids->n_groups = getgroups(0, NULL);
	ids->groups = xcalloc(ids->n_groups > 0 ? ids->n_groups : 1, sizeof *ids->groups);
	if (ids->n_groups < 0 || getgroups(ids->n_groups, ids->groups) == -1) {
		*err = xasprintf("getgroups: %s", strerror(errno));
		return -1;
	}
	ids->active = true;
	return 0;
}

int
proc_ids_enter(struct proc_ids *ids, char **err)
{
	if (!ids->active)
		return 0;
	if (setgroups(1, &ids->gid) == -1 || setegid(ids->gid) == -1 ||
	    seteuid(ids->uid) == -1) {
		*err = xasprintf("taking the ids of uid %ld: %s", (long)ids->uid,
		    strerror(errno));
		proc_ids_leave(ids);
		return -1;
	}
	return 0;
}

void
proc_ids_leave(struct proc_ids *ids)
{
	if (!ids->active)
		return;
	if (seteuid(0) == -1 || setegid(ids->root_gid) == -1 ||
	    setgroups(ids->n_groups, ids->groups) == -1)
		fatal("returning to root's ids");
	if (death_signal != 0) {
		prctl(PR_SET_PDEATHSIG, death_signal);
		if (getppid() != death_parent)
			raise(death_signal);
	}
}

void
proc_ids_free(struct proc_ids *ids)
{
	free(ids->groups);
	memset(ids, 0, sizeof *ids);
}

/* capset(2) without libcap: every set empty. */
static int
drop_caps(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	memset(d, 0, sizeof d);
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	return (int)syscall(SYS_capset, &h, d);
}

int
proc_drop(uid_t uid, gid_t gid, char **err)
{
	if (geteuid() == 0 && uid != 0) {
		if (setgroups(1, &gid) == -1 || setresgid(gid, gid, gid) == -1 ||
		    setresuid(uid, uid, uid) == -1) {
			*err = xasprintf("dropping to uid %ld: %s", (long)uid, strerror(errno));
			return -1;
		}
		if (setuid(0) == 0 || seteuid(0) == 0) {
			*err = xasprintf("dropping to uid %ld: root could be regained", (long)uid);
			return -1;
		}
	}
	if (drop_caps() == -1) {
		*err = xasprintf("dropping capabilities: %s", strerror(errno));
		return -1;
	}
	if (death_signal != 0) {
		prctl(PR_SET_PDEATHSIG, death_signal);
		if (getppid() != death_parent)
			raise(death_signal);
	}
	return 0;
}

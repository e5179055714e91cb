#include "bridge/sync_pool.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "bridge/sync.h"
#include "lib/deadline.h"
#include "lib/log.h"
#include "lib/proc.h"
#include "lib/xmalloc.h"
#include "store/state.h"

void
sync_pool_init(struct sync_pool *p, unsigned max, bool daemon)
{
	p->max = max ? max : 1;
	p->jobs = xcalloc(p->max, sizeof *p->jobs);
	p->daemon = daemon;
}

void
sync_pool_free(struct sync_pool *p)
{
	for (unsigned i = 0; i < p->max; i++)
		free(p->jobs[i].account);
	free(p->jobs);
	p->jobs = NULL;
}

/* One line per pass (two when some message was refused or skipped: what
 * was done, then what was not). */
static void
report(const struct sync_pool *p, const struct conf_account *a, const struct sync_result *r,
    int rc)
{
	char server[64] = "";

	if (rc != EX_OK)
		log_warnx("%s: %s", a->name, r->error ? r->error : "failed");
	if (rc != EX_OK && rc != EX_DATAERR)
		return;
	if (p->daemon && rc == EX_OK && r->imported == 0 && r->deleted == 0 &&
	    r->server_deleted == 0) {
		log_debug("%s: %lu on server, nothing new", a->name, r->listed);
		return;
	}
	if (r->server_deleted > 0)
		snprintf(server, sizeof server, ", %lu deleted by the server (EXPIRE 0)",
		    r->server_deleted);
	log_info("%s: %lu on server, %lu new, %lu imported (%llu bytes), %lu deleted%s%s%s",
	    a->name, r->listed, r->fresh, r->imported, (unsigned long long)r->bytes,
	    r->deleted, server, r->no_quit > 0 ? ", no QUIT (see above)" : "",
	    sync_stop ? ", interrupted" : "");
}

static int
child_pass(const struct sync_pool *p, const struct conf *c, const struct conf_account *a)
{
	struct sync_result res;
	struct state *st;
	char *err = NULL;
	int rc;

	/* From here on the pass has pass_timeout seconds, and a stop ends any
	 * wait of it within about a second (lib/deadline.h). */
	deadline_pass_arm(a->pass_timeout, true);
	if (state_open_dir(c->state_dir, true, &st, &err) == -1) {
		log_warnx("%s: %s", a->name, err);
		free(err);
		return EX_IOERR;
	}
	rc = sync_account(c, a, st, &res);
	report(p, a, &res, rc);
	sync_result_free(&res);
	state_close(st);
	return rc;
}

int
sync_pool_start(struct sync_pool *p, const struct conf *c, const struct conf_account *a)
{
	struct sync_pool_job *slot = NULL;
	pid_t parent = getpid(), pid;

	for (unsigned i = 0; i < p->max && slot == NULL; i++)
		if (p->jobs[i].pid == 0)
			slot = &p->jobs[i];
	if (slot == NULL)
		return -1;
	fflush(NULL);
	if ((pid = fork()) == -1) {
		log_warn("%s: fork", a->name);
		return -1;
	}
	if (pid == 0) {
		/* TERM/INT end the pass within about a second (the message
		 * being fetched is abandoned, what was fetched is delivered);
		 * the child dies with its parent (as a whole process would),
		 * so that killing `pop3bridge sync` never leaves a pass
		 * running. */
		if (!proc_child_init(parent, NULL, SIGKILL))
			_exit(EX_TEMPFAIL);
		_exit(child_pass(p, c, a));
	}
	slot->pid = pid;
	slot->account = xstrdup(a->name);
	return 0;
}

/* Frees slot i of the job whose exit status is status. */
static void
finish_job(struct sync_pool *p, unsigned i, int status, char **account, int *code)
{
	*account = p->jobs[i].account;
	p->jobs[i].account = NULL;
	p->jobs[i].pid = 0;
	if (WIFEXITED(status))
		*code = WEXITSTATUS(status);
	else {
		log_warnx("%s: pass killed by signal %d", *account, WTERMSIG(status));
		*code = EX_SOFTWARE;
	}
}

int
sync_pool_reap(struct sync_pool *p, bool block, char **account, int *code)
{
	int status;
	pid_t pid;

	if (sync_pool_running(p) == 0)
		return -1;
	if (!block) {
		/* The daemon has other children (relay, queue runner): ask for
		 * ours only, never reap theirs. */
		for (unsigned i = 0; i < p->max; i++)
			if (p->jobs[i].pid != 0 &&
			    waitpid(p->jobs[i].pid, &status, WNOHANG) == p->jobs[i].pid) {
				finish_job(p, i, status, account, code);
				return 1;
			}
		return 0;
	}
	/* `sync` forks nothing else. EINTR returns 0 so that the caller sees
	 * the signal that woke it. */
	if ((pid = waitpid(-1, &status, 0)) <= 0)
		return 0;
	for (unsigned i = 0; i < p->max; i++)
		if (p->jobs[i].pid == pid) {
			finish_job(p, i, status, account, code);
			return 1;
		}
	return 0;
}

size_t
sync_pool_running(const struct sync_pool *p)
{
	size_t n = 0;

	for (unsigned i = 0; i < p->max; i++)
		n += p->jobs[i].pid != 0;
	return n;
}

bool
sync_pool_has(const struct sync_pool *p, const char *account)
{
	for (unsigned i = 0; i < p->max; i++)
		if (p->jobs[i].pid != 0 && strcmp(p->jobs[i].account, account) == 0)
			return true;
	return false;
}

void
sync_pool_signal(struct sync_pool *p, int sig)
{
	for (unsigned i = 0; i < p->max; i++)
		if (p->jobs[i].pid != 0)
			kill(p->jobs[i].pid, sig);
}

/* Ctrl-C / SIGTERM while `sync` waits: the children get it too (same
 * process group, or forwarded) and stop within about a second. */
static volatile sig_atomic_t sync_got_signal;

static void
on_sync_signal(int sig)
{
	sync_got_signal = sig;
}

int
sync_pool_run(const struct conf *c, char *const *names, size_t n)
{
	struct sigaction sa = { .sa_handler = on_sync_signal };
	struct sync_pool p;
	size_t total = n ? n : c->n_accounts, next = 0;
	int worst = EX_OK, code;
	char *done;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sync_pool_init(&p, c->max_parallel, false);
	for (;;) {
		while (!sync_got_signal && next < total && sync_pool_running(&p) < p.max) {
			const struct conf_account *a = n ? conf_account(c, names[next]) :
			    &c->accounts[next];

			if (sync_pool_start(&p, c, a) == -1) {
				worst = worst ? worst : EX_OSERR;
				break;
			}
			next++;
		}
		if (sync_got_signal)
			sync_pool_signal(&p, SIGTERM);
		int r = sync_pool_reap(&p, true, &done, &code);

		if (r == -1)
			break;
		if (r == 0)
			continue;
		if (code != EX_OK && worst == EX_OK)
			worst = code;
		free(done);
	}
	sync_pool_free(&p);
	if (sync_got_signal && worst == EX_OK)
		worst = EX_TEMPFAIL;
	return worst;
}

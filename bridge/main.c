/* pop3bridge: command-line parsing and dispatch; nothing else. The
 * commands are one table (as tmux's cmd_entry): dispatch and the usage
 * text both read it. */
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include <libetpan/libetpan.h>

#include "bridge/daemon.h"
#include "bridge/import_state.h"
#include "bridge/metrics.h"
#include "bridge/queue_cmd.h"
#include "bridge/relay_child.h"
#include "bridge/sendmail.h"
#include "bridge/status.h"
#include "bridge/sync.h"
#include "bridge/sync_pool.h"
#include "conf/conf.h"
#include "lib/log.h"
#include "lib/xmalloc.h"
#include "store/state.h"

#define VERSION "0.1.0"

/* What a command's handler gets: the configuration (loaded for every
 * command; a handler that keeps it sets c to NULL) and its own arguments. */
struct cmd_args {
	const char *conf_path;
	struct conf *c;
	int argc;
	char **argv;
};

struct cmd_entry {
	const char *name;
	const char *args;       /* usage: the arguments after the name */
	const char *about;      /* usage: what it does */
	int (*exec)(struct cmd_args *);
	unsigned flags;
};

/* STATE_DIR is made (mode 0700) before the handler runs: it writes state. */
#define CMD_STATE_DIR	0x1
/* --shard K/N narrows the accounts it handles. */
#define CMD_SHARD	0x2

static int cmd_run(struct cmd_args *);
static int cmd_sync(struct cmd_args *);
static int cmd_check_config(struct cmd_args *);
static int cmd_status(struct cmd_args *);
static int cmd_where(struct cmd_args *);
static int cmd_sendmail(struct cmd_args *);
static int cmd_queue(struct cmd_args *);
static int cmd_import_state(struct cmd_args *);

static const struct cmd_entry cmds[] = {
	{ "run", "", "poll every account on its interval (foreground daemon)",
	    cmd_run, CMD_STATE_DIR | CMD_SHARD },
	{ "sync", "[--dry-run] [ACCOUNT...]", "one pass over the accounts, then exit",
	    cmd_sync, CMD_STATE_DIR | CMD_SHARD },
	{ "check-config", "", "validate the configuration and print a summary",
	    cmd_check_config, CMD_SHARD },
	{ "status", "[--json]", "per account: last poll, result, messages, errors",
	    cmd_status, CMD_SHARD },
	{ "where", "ACCOUNT UIDL", "where one imported message went", cmd_where, 0 },
	{ "sendmail", "[-t] [-i] [-f FROM] [RCPT...]", "queue a message read on stdin",
	    cmd_sendmail, CMD_STATE_DIR },
	{ "queue", "[list|flush|drop ID]", "show, deliver now, or remove queued mail",
	    cmd_queue, CMD_STATE_DIR },
	{ "import-state", "--from TOOL FILE ACCOUNT",
	    "adopt the UIDLs fetchmail, getmail or mpop fetched", cmd_import_state,
	    CMD_STATE_DIR },
};

static void
usage(FILE *f)
{
	char line[64];

	fputs("usage: pop3bridge [-c FILE] [-v|-q] [-s] [--shard K/N] COMMAND\n"
	    "  -c FILE  configuration (default $XDG_CONFIG_HOME/pop3bridge/pop3bridge.conf,\n"
	    "           else /etc/pop3bridge.conf)\n"
	    "  -v, -q   more, less output; -s  log to syslog instead of stderr\n"
	    "  --shard K/N  only the accounts whose name hashes to K of N (run, sync,\n"
	    "           status, check-config)\n", f);
	for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
		snprintf(line, sizeof line, "%s%s%s", cmds[i].name, *cmds[i].args ? " " : "",
		    cmds[i].args);
		fprintf(f, "  %-18s  %s\n", line, cmds[i].about);
	}
}

static const struct cmd_entry *
cmd_find(const char *name)
{
	for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
		if (strcmp(cmds[i].name, name) == 0)
			return &cmds[i];
	return NULL;
}

static int
cmd_run(struct cmd_args *a)
{
	struct conf *c = a->c;

	a->c = NULL;	/* owned and freed by the daemon */
	return daemon_run(a->conf_path, c);
}

static int
cmd_sync(struct cmd_args *a)
{
	const struct conf *c = a->c;
	char *err = NULL;
	int rc;

	if (a->argc > 0 && strcmp(a->argv[0], "--dry-run") == 0) {
		sync_dry_run = true;
		a->argc--;
		a->argv++;
	}
	for (int i = 0; i < a->argc; i++) {
		if (conf_account(c, a->argv[i]) != NULL)
			continue;
		if (c->shard_n > 1)
			log_warnx("no account \"%s\" in shard %u/%u of %s (that name is"
			    " shard %u's)", a->argv[i], c->shard_k, c->shard_n, c->path,
			    conf_shard_of(a->argv[i], c->shard_n));
		else
			log_warnx("no account \"%s\" in %s", a->argv[i], c->path);
		return EX_USAGE;
	}
	rc = sync_pool_run(c, a->argv, (size_t)a->argc);
	/* A dry run writes nothing, not even the metrics. */
	if (!sync_dry_run && metrics_write(c, &err) == -1) {
		log_warnx("metrics_file: %s", err);
		free(err);
	}
	return rc;
}

static int
cmd_check_config(struct cmd_args *a)
{
	status_print_config(stdout, a->c);
	return EX_OK;
}

static int
cmd_status(struct cmd_args *a)
{
	bool json = false;

	for (int i = 0; i < a->argc; i++) {
		if (strcmp(a->argv[i], "--json") != 0) {
			usage(stderr);
			return EX_USAGE;
		}
		json = true;
	}
	return status_print(stdout, a->c, json);
}

static int
cmd_where(struct cmd_args *a)
{
	if (a->argc != 2) {
		usage(stderr);
		return EX_USAGE;
	}
	return status_where(stdout, a->c, a->argv[0], a->argv[1]);
}

static int
cmd_sendmail(struct cmd_args *a)
{
	return sendmail_run(a->c, a->argc, a->argv);
}

static int
cmd_queue(struct cmd_args *a)
{
	return queue_cmd_run(a->c, a->argc, a->argv);
}

static int
cmd_import_state(struct cmd_args *a)
{
	return import_state_run(a->c, a->argc, a->argv);
}

/* Process-wide setup before anything connects (doc/DESIGN.md, libetpan
 * traps): no SIGPIPE (libetpan writes without MSG_NOSIGNAL), libetpan's
 * connect delay, private files. */
static void
setup_process(void)
{
	signal(SIGPIPE, SIG_IGN);
	mailstream_network_delay.tv_sec = 60;
	mailstream_network_delay.tv_usec = 0;
	umask(077);
}

static int
make_state_dir(const char *dir)
{
	char *err = NULL;

	if (state_make_dir(dir, &err) == 0)
		return 0;
	log_warnx("state_dir: %s", err);
	free(err);
	return -1;
}

/* Loads the configuration (narrowed to shard k of n when n is not 0)
 * and runs the command. */
static int
dispatch(const struct cmd_entry *e, const char *conf_path, unsigned k, unsigned n,
    int argc, char **argv)
{
	struct cmd_args a = { .conf_path = conf_path, .argc = argc, .argv = argv };
	int rc;

	if ((rc = conf_load(conf_path, &a.c, stderr)) != 0)
		return rc;
	if (n > 0)
		conf_shard(a.c, k, n);
	if ((e->flags & CMD_STATE_DIR) && make_state_dir(a.c->state_dir) == -1)
		rc = EX_CANTCREAT;
	else
		rc = e->exec(&a);
	conf_free(a.c);
	return rc;
}

/* Invoked as "sendmail" (make install SENDMAIL_LINK=1 makes the link):
 * every argument is sendmail's (bridge/sendmail.c reads them), except
 * -C FILE (-CFILE), which names the configuration as sendmail's own -C
 * names its configuration file. */
static int
sendmail_mode(int argc, char **argv)
{
	char *conf_path = NULL;
	int n = 0, rc;
	char **args = xcalloc((size_t)argc + 1, sizeof *args);
	bool options = true;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (options && strcmp(a, "--") == 0)
			options = false;
		else if (options && a[0] != '-')
			options = false;
		if (options && strncmp(a, "-C", 2) == 0) {
			if (a[2] == '\0' && i + 1 == argc) {
				log_warnx("sendmail: -C needs a file");
				free(args);
				return EX_USAGE;
			}
			free(conf_path);
			conf_path = xstrdup(a[2] != '\0' ? a + 2 : argv[++i]);
			continue;
		}
		args[n++] = argv[i];
		/* The argument of -f, -F... is not an option. */
		if (options && a[0] == '-' && a[1] != '\0' && a[2] == '\0' &&
		    strchr("frFNRVB", a[1]) != NULL && i + 1 < argc)
			args[n++] = argv[++i];
	}
	log_init(LOG_NORMAL, 0);
	setup_process();
	if (conf_path == NULL)
		conf_path = conf_default_path();
	rc = dispatch(cmd_find("sendmail"), conf_path, 0, 0, n, args);
	free(conf_path);
	free(args);
	return rc;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "shard", required_argument, NULL, 'S' },
		{ NULL, 0, NULL, 0 },
	};
	enum log_verbosity v = LOG_NORMAL;
	const struct cmd_entry *e;
	char *conf_path = NULL;
	const char *cmd;
	unsigned shard_k = 0, shard_n = 0;
	int ch, rc, use_syslog = 0;
	const char *self = argc > 0 ? strrchr(argv[0], '/') : NULL;

	self = self ? self + 1 : argc > 0 ? argv[0] : "";
	if (strcmp(self, "sendmail") == 0)
		return sendmail_mode(argc, argv);
	/* The relay process, started by the daemon as a fresh image. */
	if (argc == 3 && strcmp(argv[1], RELAY_CHILD_ARG) == 0) {
		setup_process();
		return relay_child_main(argv[2]);
	}
	while ((ch = getopt_long(argc, argv, "+c:vqshV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'S':
			if (conf_shard_parse(optarg, &shard_k, &shard_n) == -1) {
				log_warnx("--shard %s: not K/N with 1 <= K <= N", optarg);
				free(conf_path);
				return EX_USAGE;
			}
			break;
		case 'c':
			free(conf_path);
			conf_path = xstrdup(optarg);
			break;
		case 'v':
			v = LOG_VERBOSE;
			break;
		case 'q':
			v = LOG_QUIET;
			break;
		case 's':
			use_syslog = 1;
			break;
		case 'h':
			usage(stdout);
			return EX_OK;
		case 'V':
			printf("pop3bridge %s\n", VERSION);
			return EX_OK;
		default:
			usage(stderr);
			return EX_USAGE;
		}
	}
	argc -= optind;
	argv += optind;
	cmd = argc > 0 ? argv[0] : "";
	if ((e = cmd_find(cmd)) == NULL) {
		if (*cmd)
			log_warnx("unknown command \"%s\"", cmd);
		usage(stderr);
		free(conf_path);
		return EX_USAGE;
	}
	if (shard_n > 0 && !(e->flags & CMD_SHARD)) {
		log_warnx("--shard applies to run, sync, status and check-config, not %s", cmd);
		free(conf_path);
		return EX_USAGE;
	}
	log_init(v, use_syslog);
	setup_process();
	if (conf_path == NULL)
		conf_path = conf_default_path();
	rc = dispatch(e, conf_path, shard_k, shard_n, argc - 1, argv + 1);
	free(conf_path);
	return rc;
}

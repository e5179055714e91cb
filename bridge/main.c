/* pop3bridge: command-line parsing and dispatch; nothing else. */
#include <errno.h>
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
#include "lib/log.h"
#include "bridge/sync_pool.h"
#include "bridge/queue_cmd.h"
#include "bridge/sendmail.h"
#include "bridge/status.h"
#include "lib/xmalloc.h"
#include "conf/conf.h"
#include "store/state.h"

#define VERSION "0.1.0"

static void
usage(FILE *f)
{
	fputs("usage: pop3bridge [-c FILE] [-v|-q] [-s] COMMAND\n"
	    "  -c FILE  configuration (default $XDG_CONFIG_HOME/pop3bridge/pop3bridge.conf,\n"
	    "           else /etc/pop3bridge.conf)\n"
	    "  -v, -q   more, less output; -s  log to syslog instead of stderr\n"
	    "  run                 poll every account on its interval (foreground daemon)\n"
	    "  sync [ACCOUNT...]   one pass over the accounts, then exit\n"
	    "  check-config        validate the configuration and print a summary\n"
	    "  status [--json]     per account: last poll, result, messages, errors\n"
	    "  where ACCOUNT UIDL  where one imported message went\n"
	    "  sendmail [-t] [-i] [-f FROM] [RCPT...]  queue a message read on stdin\n"
	    "  queue [list|flush|drop ID]  show, deliver now, or remove queued mail\n", f);
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

static int
cmd_sync(const struct conf *c, int argc, char **argv)
{
	for (int i = 0; i < argc; i++)
		if (conf_account(c, argv[i]) == NULL) {
			log_warnx("no account \"%s\" in %s", argv[i], c->path);
			return EX_USAGE;
		}
	if (make_state_dir(c->state_dir) == -1)
		return EX_CANTCREAT;
	return sync_pool_run(c, argv, argc);
}

static int
cmd_status(const struct conf *c, int argc, char **argv)
{
	bool json = false;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--json") != 0) {
			usage(stderr);
			return EX_USAGE;
		}
		json = true;
	}
	return status_print(stdout, c, json);
}

/* Process-wide setup before anything connects (LIBETPAN.md). */
static void
setup_process(void)
{
	signal(SIGPIPE, SIG_IGN);
	mailstream_network_delay.tv_sec = 60;
	mailstream_network_delay.tv_usec = 0;
	umask(077);
}

int
main(int argc, char **argv)
{
	enum log_verbosity v = LOG_NORMAL;
	char *conf_path = NULL;
	struct conf *c = NULL;
	const char *cmd;
	int ch, rc, use_syslog = 0;

	while ((ch = getopt(argc, argv, "+c:vqshV")) != -1) {
		switch (ch) {
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
	if (strcmp(cmd, "run") && strcmp(cmd, "sync") && strcmp(cmd, "check-config") &&
	    strcmp(cmd, "status") && strcmp(cmd, "where") && strcmp(cmd, "sendmail") &&
	    strcmp(cmd, "queue")) {
		if (*cmd)
			log_warnx("unknown command \"%s\"", cmd);
		usage(stderr);
		free(conf_path);
		return EX_USAGE;
	}
	log_init(v, use_syslog);
	setup_process();
	if (conf_path == NULL)
		conf_path = conf_default_path();
	if ((rc = conf_load(conf_path, &c, stderr)) != 0) {
		free(conf_path);
		return rc;
	}
	if (strcmp(cmd, "check-config") == 0) {
		status_print_config(stdout, c);
		rc = EX_OK;
	} else if (strcmp(cmd, "sync") == 0)
		rc = cmd_sync(c, argc - 1, argv + 1);
	else if (strcmp(cmd, "status") == 0)
		rc = cmd_status(c, argc - 1, argv + 1);
	else if (strcmp(cmd, "sendmail") == 0 || strcmp(cmd, "queue") == 0) {
		if (make_state_dir(c->state_dir) == -1)
			rc = EX_CANTCREAT;
		else if (strcmp(cmd, "sendmail") == 0)
			rc = sendmail_run(c, argc - 1, argv + 1);
		else
			rc = queue_cmd_run(c, argc - 1, argv + 1);
	}
	else if (strcmp(cmd, "where") == 0)
		rc = argc == 3 ? status_where(stdout, c, argv[1], argv[2]) :
		    (usage(stderr), EX_USAGE);
	else {
		if (make_state_dir(c->state_dir) == -1)
			rc = EX_CANTCREAT;
		else {
			rc = daemon_run(conf_path, c);
			c = NULL;	/* owned and freed by the daemon */
		}
	}
	conf_free(c);
	free(conf_path);
	return rc;
}

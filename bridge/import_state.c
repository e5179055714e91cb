#include "bridge/import_state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "bridge/import_parse.h"
#include "lib/io.h"
#include "lib/log.h"
#include "lib/xmalloc.h"
#include "store/state.h"

/* A state file of a million UIDLs is some 80 MB; past this it is not one. */
#define IMPORT_MAX_FILE (256u << 20)

static const char usage_line[] =
    "usage: pop3bridge import-state --from fetchmail|getmail|mpop FILE ACCOUNT";

struct import_args {
	enum import_tool tool;
	const char *tool_name;
	const char *file;
	const struct conf_account *a;
};

static int
parse_args(const struct conf *c, int argc, char **argv, struct import_args *ia)
{
	const char *from = NULL;
	int i = 0;

	if (argc > 0 && strncmp(argv[0], "--from=", 7) == 0)
		from = argv[i++] + 7;
	else if (argc > 1 && strcmp(argv[0], "--from") == 0) {
		from = argv[1];
		i = 2;
	}
	if (from == NULL || argc - i != 2 || import_parse_tool(from, &ia->tool) == -1) {
		if (from != NULL && import_parse_tool(from, &ia->tool) == -1)
			log_warnx("import-state: unknown tool \"%s\"", from);
		fprintf(stderr, "%s\n", usage_line);
		return EX_USAGE;
	}
	ia->tool_name = from;
	ia->file = argv[i];
	if ((ia->a = conf_account(c, argv[i + 1])) == NULL) {
		log_warnx("no account \"%s\" in %s", argv[i + 1], c->path);
		return EX_USAGE;
	}
	return EX_OK;
}

/* getmail says whose state a file is only in its name. */
static int
check_getmail_name(const struct import_args *ia, const struct import_who *who)
{
	char *want = import_parse_getmail_name(who);
	const char *base = strrchr(ia->file, '/');
	int rc = EX_OK;

	base = base ? base + 1 : ia->file;
	if (strcmp(base, want) != 0) {
		log_warnx("%s: getmail names the state of %s@%s:%u \"%s\": this file is another"
		    " server's or user's (account %s)", ia->file, who->user, who->host,
		    who->port, want, ia->a->name);
		rc = EX_DATAERR;
	}
	free(want);
	return rc;
}

/* What the file held, checked: 0 with the UIDLs, or an exit code. */
static int
read_uidls(const struct import_args *ia, const struct import_who *who,
    struct import_uidls *u)
{
	char *buf = NULL, *err = NULL;
	size_t len = 0;
	int r;

	if (ia->tool == IMPORT_GETMAIL && check_getmail_name(ia, who) != EX_OK)
		return EX_DATAERR;
	if (io_read_file(ia->file, IMPORT_MAX_FILE, &buf, &len, &err) == -1) {
		log_warnx("%s", err);
		free(err);
		return EX_NOINPUT;
	}
	r = import_parse(ia->tool, buf, len, who, u, &err);
	free(buf);
	if (r == -1) {
		log_warnx("%s:%s", ia->file, err);
		free(err);
		return EX_DATAERR;
	}
	if (u->n == 0 && u->other > 0) {
		log_warnx("%s:%lu: names %s, not %s@%s (account %s), and no line names that"
		    " account", ia->file, u->other_line, u->other_name, who->user, who->host,
		    ia->a->name);
		import_uidls_free(u);
		return EX_DATAERR;
	}
	return EX_OK;
}

static int
record(const struct conf *c, const struct import_args *ia, const struct import_uidls *u,
    size_t *added)
{
	struct state *st = NULL;
	char *err = NULL;
	int64_t id;
	int r;

	r = state_open_dir(c->state_dir, true, &st, &err);
	if (r == 0)
		r = state_account(st, ia->a->name, &id, &err);
	if (r == 0)
		r = state_mark_seen_elsewhere(st, id, ia->tool_name,
		    (const char *const *)u->uidls, u->n, added, &err);
	if (st)
		state_close(st);
	if (r == -1) {
		log_warnx("%s: %s", ia->a->name, err);
		free(err);
		return EX_IOERR;
	}
	return EX_OK;
}

int
import_state_run(const struct conf *c, int argc, char **argv)
{
	struct import_args ia;
	struct import_uidls u;
	struct import_who who;
	size_t added = 0;
	int rc;

	if ((rc = parse_args(c, argc, argv, &ia)) != EX_OK)
		return rc;
	who = (struct import_who){ ia.a->pop3.host, ia.a->pop3.port,
	    ia.a->pop3.user ? ia.a->pop3.user : "" };
	if ((rc = read_uidls(&ia, &who, &u)) != EX_OK)
		return rc;
	if ((rc = record(c, &ia, &u, &added)) == EX_OK) {
		printf("%s: %zu UIDL%s seen by %s recorded as delivered elsewhere"
		    " (%zu new, %zu already known)", ia.a->name, u.n, u.n == 1 ? "" : "s",
		    ia.tool_name, added, u.n - added);
		if (u.other > 0)
			printf("; %zu entr%s of other accounts skipped (first: line %lu, %s)",
			    u.other, u.other == 1 ? "y" : "ies", u.other_line, u.other_name);
		putchar('\n');
	}
	import_uidls_free(&u);
	return rc;
}

#include "store/deliver.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bridge/log.h"
#include "bridge/xmalloc.h"
#include "store/maildir.h"

const struct deliver_backend *
deliver_backend_for(enum conf_store_type t)
{
	switch (t) {
	case CONF_STORE_MAILDIR:
		return &maildir_backend;
	case CONF_STORE_IMAP:
		/* store/imap.c is not written yet: add it here. */
		return NULL;
	}
	return NULL;
}

/* This host's name as the Maildir spec wants it in file names: "/" and
 * ":" would split the name, so they become "\057" and "\072". */
static void
maildir_host(char *out, size_t size)
{
	char host[256];
	size_t i, o = 0;

	if (gethostname(host, sizeof host) == -1 || host[0] == '\0')
		snprintf(host, sizeof host, "localhost");
	host[sizeof host - 1] = '\0';
	for (i = 0; host[i] != '\0' && o + 5 < size; i++) {
		if (host[i] == '/' || host[i] == ':') {
			snprintf(out + o, size - o, "\\%03o", (unsigned char)host[i]);
			o += 4;
		} else
			out[o++] = host[i];
	}
	out[o] = '\0';
}

char *
deliver_key(const char *key_tag)
{
	/* Process-wide, and threads of the daemon's pool share it: two keys
	 * in the same microsecond of one process still differ. */
	static atomic_ulong seq;
	unsigned long q = atomic_fetch_add(&seq, 1) + 1;
	char host[4 * 256 + 1];
	struct timespec ts;

	/* The tag sits between "." separators of a file name that tmp_cleanup
	 * parses back: it must not hold one, nor "/" or ":". */
	if (strpbrk(key_tag, "./:") != NULL)
		fatalx("deliver_key: bad key tag \"%s\"", key_tag);
	clock_gettime(CLOCK_REALTIME, &ts);
	maildir_host(host, sizeof host);
	return xasprintf("%lld.M%ldP%ldQ%lu%s.%s", (long long)ts.tv_sec,
	    ts.tv_nsec / 1000, (long)getpid(), q, key_tag, host);
}

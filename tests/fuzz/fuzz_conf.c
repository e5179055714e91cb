/* Configuration loading (conf/: the line scan, libconfuse's parse, the
 * conversion into plain structs, the checks): conf_load() on the input as
 * a file, and the helpers that read the loaded structs.
 * Properties: no memory error, no undefined behaviour, no leak; a refused
 * file gets at least one "FILE:LINE: message" line, each one line; an
 * accepted file's accounts have names and look-ups work on them. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "conf/conf.h"
#include "lib/log.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[512];

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_init(LOG_QUIET, 0);
	fuzz_quiet();
	snprintf(path, sizeof path, "%s/p3b.conf", fuzz_dir());
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf *c = NULL;
	char *msgs = NULL;
	size_t msgs_len = 0;
	FILE *errf;
	int rc;

	fuzz_write_file(path, data, size, 0600);
	if ((errf = open_memstream(&msgs, &msgs_len)) == NULL)
		abort();
	rc = conf_load(path, &c, errf);
	fclose(errf);
	FUZZ_CHECK(rc == 0 || rc == EX_CONFIG, "conf_load returned %d", rc);
	FUZZ_CHECK((rc == 0) == (c != NULL), "a config iff 0");
	if (rc != 0)
		FUZZ_CHECK(msgs_len > 0 && strncmp(msgs, path, strlen(path)) == 0,
		    "a refused file without a message: %s", msgs);
	if (c != NULL) {
		FUZZ_CHECK(c->state_dir != NULL, "no state_dir");
		for (size_t i = 0; i < c->n_accounts; i++) {
			const struct conf_account *a = &c->accounts[i];
			char *s;

			FUZZ_CHECK(a->name != NULL && conf_account(c, a->name) != NULL,
			    "account look-up");
			for (size_t j = 0; j < a->n_addresses; j++)
				(void)conf_account_by_address(c, a->addresses[j], a->local_user);
			s = conf_store_location(c, a);
			free(s);
			s = conf_store_path(c, a);
			free(s);
		}
		conf_free(c);
	}
	free(msgs);
	return 0;
}

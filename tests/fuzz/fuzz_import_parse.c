/* libFuzzer target for bridge/import_parse.c: any bytes, as each tool's
 * state file, for an account whose user and host also occur in them.
 * `make fuzz` builds it with clang (-fsanitize=fuzzer,address,undefined)
 * and runs it for FUZZ_SECONDS (60). The parse must never crash, and what
 * it returns must hold: valid UIDLs, sorted, each once. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/import_parse.h"

static const struct import_who who = { "localhost", 995, "alice" };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	for (int t = IMPORT_FETCHMAIL; t <= IMPORT_MPOP; t++) {
		struct import_uidls u;
		char *err = NULL;

		if (import_parse((enum import_tool)t, (const char *)data, size, &who, &u,
		    &err) == -1) {
			if (err == NULL || u.n != 0)
				abort();
			free(err);
			continue;
		}
		for (size_t i = 0; i < u.n; i++) {
			if (!import_parse_uidl_ok(u.uidls[i], strlen(u.uidls[i])))
				abort();
			if (i > 0 && strcmp(u.uidls[i - 1], u.uidls[i]) >= 0)
				abort();
		}
		import_uidls_free(&u);
	}
	return 0;
}

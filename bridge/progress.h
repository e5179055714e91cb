/* `sync`'s progress on a terminal: one line per account being imported —
 * messages and bytes done of the total, a bar, the rate and the ETA —
 * redrawn in place below the log lines (which the passes' stderr brings,
 * printed above the block). Used by bridge/sync_pool.c only when stderr
 * is a terminal and not -q; nothing is drawn otherwise. */
#ifndef POP3BRIDGE_PROGRESS_H
#define POP3BRIDGE_PROGRESS_H

#include <stdio.h>

#include "bridge/sync.h"

struct progress;

/* Draws on out (a terminal). Free with progress_end, which leaves the
 * terminal below the last line. */
struct progress *progress_start(FILE *out);
void progress_end(struct progress *pr);

/* The figures of account name (a pass under way, started now if it is
 * new to pr); a finished one is drawn one last time, then dropped. */
void progress_update(struct progress *pr, const char *name, const struct sync_progress *sp);

/* An account's pass ended (with or without a last update). */
void progress_drop(struct progress *pr, const char *name);

/* Prints text (log lines, each ending in '\n') above the block. */
void progress_print(struct progress *pr, const char *text, size_t len);

/* The text of one account's line (for the tests of its format): name,
 * figures, seconds since it started. Allocated. */
char *progress_line(const char *name, const struct sync_progress *sp, double secs);

#endif

/* The Prometheus textfile (metrics_file): per-account counters and
 * gauges for node_exporter's textfile collector, written atomically (a
 * temp file in the same directory, fsynced, renamed over the old one) so
 * the collector never reads half a file. The names and what each counts
 * are in doc/pop3bridge.1 (METRICS) and README.md. Every value comes from
 * status_account(), the figures `status --json` prints. */
#ifndef POP3BRIDGE_METRICS_H
#define POP3BRIDGE_METRICS_H

#include <stdio.h>

#include "conf/conf.h"

/* Writes the metrics of every account of c to c->metrics_file (nothing
 * when it is unset), mode 0644: no secret is in it. 0, or -1 with *err. */
int metrics_write(const struct conf *c, char **err);

/* The same text, to out (for tests and `metrics_write`). 0, or -1 with
 * *err when the state cannot be read. */
int metrics_print(FILE *out, const struct conf *c, char **err);

#endif

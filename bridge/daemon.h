/* `run`: poll every account on its interval (bounded by max_parallel),
 * until SIGTERM/SIGINT (passes under way stop within about a second,
 * lib/deadline.h, then the daemon exits 0). SIGHUP reloads the configuration; a bad new
 * configuration is reported and the old one kept. */
#ifndef POP3BRIDGE_DAEMON_H
#define POP3BRIDGE_DAEMON_H

#include "conf/conf.h"

/* Takes ownership of c (it may be replaced on reload). Returns an exit
 * code. Tells systemd it is ready when NOTIFY_SOCKET is set. */
int daemon_run(const char *conf_path, struct conf *c);

#endif

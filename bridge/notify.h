/* sd_notify(3) without libsystemd, for `run` under systemd (Type=notify):
 * READY=1, STOPPING=1, STATUS=... and the watchdog's WATCHDOG=1 pings, one
 * datagram each to $NOTIFY_SOCKET. Nothing happens when it is not set. */
#ifndef POP3BRIDGE_NOTIFY_H
#define POP3BRIDGE_NOTIFY_H

#include <time.h>

void notify_send(const char *msg);

/* STATUS=text, sent only when it differs from the last one sent. */
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The seconds between two WATCHDOG=1 pings: half of $WATCHDOG_USEC
 * (WatchdogSec=) when it is set for this process ($WATCHDOG_PID unset or
 * ours), at least 1; 0 without a watchdog. */
time_t notify_watchdog_interval(void);

/* Pings the watchdog when interval seconds passed since the last ping. */
void notify_watchdog(time_t interval);

#endif

/* systemd notification (sd_notify(3) without libsystemd): datagrams to
 * $NOTIFY_SOCKET (a path, or an abstract socket written with a leading '@'),
 * and watchdog pings when $WATCHDOG_USEC is set for our pid. */
#ifndef P3_NOTIFY_H
#define P3_NOTIFY_H

#include <uv.h>

/* Sends state (e.g. "READY=1", "STATUS=...", "STOPPING=1").  A no-op
 * without $NOTIFY_SOCKET.  Returns 0 or a negative errno. */
int notify_send(const char *state);

/* Starts timer (initialised and later closed by the caller) so that it
 * sends WATCHDOG=1 at half the interval systemd asked for ($WATCHDOG_USEC,
 * honoured only when $WATCHDOG_PID is unset or ours); the timer does not
 * keep the loop alive.  Returns 0 (also when no watchdog is wanted), or
 * -EINVAL for malformed variables (then nothing starts). */
int notify_watchdog_start(uv_loop_t *loop, uv_timer_t *timer);

#endif

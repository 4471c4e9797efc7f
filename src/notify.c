#include "config.h"

#include "notify.h"

#include "log.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

/* The watchdog timer's last failure is logged once, not every tick. */
static bool watchdog_warned;

int notify_send(const char *state) {
  const char *e = getenv("NOTIFY_SOCKET");
  struct sockaddr_un sa;
  socklen_t salen;
  size_t n;
  ssize_t r;
  int fd, err;

  if (e == NULL || e[0] == '\0')
    return 0;
  n = strlen(e);
  /* systemd also knows "vsock:" addresses; a service on this host never
   * gets one. */
  if (e[0] != '/' && e[0] != '@')
    return -EAFNOSUPPORT;

  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  if (e[0] == '@') {
    /* An abstract name is all n bytes, the leading NUL included, and no
     * terminator: the address length says where it ends. */
    if (n > sizeof(sa.sun_path))
      return -ENAMETOOLONG;
    memcpy(sa.sun_path, e, n);
    sa.sun_path[0] = '\0';
    salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
  } else {
    if (n >= sizeof(sa.sun_path))
      return -ENAMETOOLONG;
    memcpy(sa.sun_path, e, n + 1);
    salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  }

  fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  do
    r = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (const struct sockaddr *)&sa, salen);
  while (r < 0 && errno == EINTR);
  err = r < 0 ? -errno : 0;
  close(fd);
  return err;
}

static void watchdog_cb(uv_timer_t *timer) {
  int err = notify_send("WATCHDOG=1");

  (void)timer;
  if (err < 0 && !watchdog_warned) {
    watchdog_warned = true;
    log_warning("cannot send the watchdog ping to systemd: %s", strerror(-err));
  }
}

/* Parses a decimal number that must fill s entirely. */
static int parse_ull(const char *s, unsigned long long *v_r) {
  char *end;

  if (s[0] < '0' || s[0] > '9')
    return -EINVAL;
  errno = 0;
  *v_r = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0')
    return -EINVAL;
  return 0;
}

/* timer must have been initialised on loop by the caller (uv_timer_init),
 * who also closes it: like uv_timer_start, this only starts it, so the
 * caller's handle is the same whether or not a watchdog is wanted.  The
 * timer is unreferenced: it never keeps the loop alive by itself.  A
 * malformed $WATCHDOG_USEC or $WATCHDOG_PID returns -EINVAL and starts
 * nothing. */
int notify_watchdog_start(uv_loop_t *loop, uv_timer_t *timer) {
  const char *usec_s = getenv("WATCHDOG_USEC");
  const char *pid_s = getenv("WATCHDOG_PID");
  unsigned long long usec, pid, ms;

  (void)loop; /* the timer's own loop; kept for the interface */
  uv_unref((uv_handle_t *)timer);
  watchdog_warned = false;

  if (usec_s == NULL || usec_s[0] == '\0')
    return 0;
  if (parse_ull(usec_s, &usec) < 0 || usec == 0)
    return -EINVAL;
  if (pid_s != NULL && pid_s[0] != '\0') {
    if (parse_ull(pid_s, &pid) < 0)
      return -EINVAL;
    if (pid != (unsigned long long)getpid())
      return 0; /* meant for another process (we were exec'd by the service) */
  }
  /* Half the interval, as sd_watchdog_enabled(3) advises, and at least 1 ms
   * (0 would make a timer that fires on every loop iteration). */
  ms = usec / 2000;
  if (ms == 0)
    ms = 1;
  return uv_timer_start(timer, watchdog_cb, ms, ms);
}

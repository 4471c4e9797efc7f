#include "config.h"

#include "notify.h"

#include "check.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

static char root[256];
static char sock_path[300];

/* Waits up to ms for one datagram on fd; returns its length or -1. */
static ssize_t recv_wait(int fd, char *buf, size_t len, int ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  ssize_t n;

  if (poll(&p, 1, ms) != 1)
    return -1;
  n = recv(fd, buf, len - 1, 0);
  if (n >= 0)
    buf[n] = '\0';
  return n;
}

static bool set_sun_path(struct sockaddr_un *sa, const char *path) {
  size_t n = strlen(path);

  CHECK(n < sizeof(sa->sun_path));
  if (n >= sizeof(sa->sun_path))
    return false;
  memcpy(sa->sun_path, path, n + 1);
  return true;
}

static int bind_dgram(const struct sockaddr_un *sa, socklen_t len) {
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

  if (fd < 0 || bind(fd, (const struct sockaddr *)sa, len) != 0) {
    perror("bind_dgram");
    if (fd >= 0)
      close(fd);
    return -1;
  }
  return fd;
}

static void test_path_socket(void) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  char buf[256];
  int fd;

  snprintf(sock_path, sizeof(sock_path), "%s/notify", root);
  if (!set_sun_path(&sa, sock_path))
    return;
  fd = bind_dgram(&sa, sizeof(sa));
  CHECK(fd >= 0);
  if (fd < 0)
    return;
  setenv("NOTIFY_SOCKET", sock_path, 1);
  CHECK_INT(notify_send("READY=1"), 0);
  CHECK_INT(recv_wait(fd, buf, sizeof(buf), 2000), 7);
  CHECK_STR(buf, "READY=1");
  CHECK_INT(notify_send("STATUS=fetching work"), 0);
  CHECK(recv_wait(fd, buf, sizeof(buf), 2000) > 0);
  CHECK_STR(buf, "STATUS=fetching work");
  close(fd);
  /* Nobody listens any more: the error comes back as -errno. */
  CHECK_INT(notify_send("READY=1"), -ECONNREFUSED);
  unlink(sock_path);
  CHECK_INT(notify_send("READY=1"), -ENOENT);
}

static void test_abstract_socket(void) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  char name[64], buf[256];
  size_t n;
  int fd;

  n = (size_t)snprintf(name, sizeof(name), "@pop3sync-test-notify-%ld", (long)getpid());
  memcpy(sa.sun_path, name, n);
  sa.sun_path[0] = '\0';
  fd = bind_dgram(&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
  CHECK(fd >= 0);
  if (fd < 0)
    return;
  setenv("NOTIFY_SOCKET", name, 1);
  CHECK_INT(notify_send("READY=1"), 0);
  CHECK_INT(recv_wait(fd, buf, sizeof(buf), 2000), 7);
  CHECK_STR(buf, "READY=1");
  close(fd);
}

static void test_no_socket(void) {
  char longname[200];

  unsetenv("NOTIFY_SOCKET");
  CHECK_INT(notify_send("READY=1"), 0);
  setenv("NOTIFY_SOCKET", "", 1);
  CHECK_INT(notify_send("READY=1"), 0);
  setenv("NOTIFY_SOCKET", "relative/path", 1);
  CHECK_INT(notify_send("READY=1"), -EAFNOSUPPORT);
  memset(longname, 'x', sizeof(longname) - 1);
  longname[0] = '/';
  longname[sizeof(longname) - 1] = '\0';
  setenv("NOTIFY_SOCKET", longname, 1);
  CHECK_INT(notify_send("READY=1"), -ENAMETOOLONG);
  unsetenv("NOTIFY_SOCKET");
}

struct wd_state {
  int fd;
  int pings;
  int other;
  uv_poll_t poll;
  uv_timer_t guard;
  bool timed_out;
};

static void wd_poll_cb(uv_poll_t *p, int status, int events) {
  struct wd_state *s = p->data;
  char buf[64];
  ssize_t n;

  (void)events;
  if (status < 0)
    return;
  while ((n = recv(s->fd, buf, sizeof(buf) - 1, MSG_DONTWAIT)) > 0) {
    buf[n] = '\0';
    if (strcmp(buf, "WATCHDOG=1") == 0)
      s->pings++;
    else
      s->other++;
  }
  if (s->pings >= 3)
    uv_poll_stop(p);
}

static void wd_guard_cb(uv_timer_t *t) {
  struct wd_state *s = t->data;

  s->timed_out = true;
  uv_poll_stop(&s->poll);
}

static void test_watchdog(void) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  struct wd_state s = {0};
  uv_loop_t loop;
  uv_timer_t wd;
  uint64_t t0, elapsed;
  char pidbuf[32];

  snprintf(sock_path, sizeof(sock_path), "%s/watchdog", root);
  if (!set_sun_path(&sa, sock_path))
    return;
  s.fd = bind_dgram(&sa, sizeof(sa));
  CHECK(s.fd >= 0);
  if (s.fd < 0)
    return;
  setenv("NOTIFY_SOCKET", sock_path, 1);
  CHECK_INT(uv_loop_init(&loop), 0);

  /* Not wanted: the caller's timer stays idle. */
  unsetenv("WATCHDOG_USEC");
  unsetenv("WATCHDOG_PID");
  uv_timer_init(&loop, &wd);
  CHECK_INT(notify_watchdog_start(&loop, &wd), 0);
  CHECK(!uv_is_active((uv_handle_t *)&wd));
  uv_close((uv_handle_t *)&wd, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);

  /* For another process. */
  setenv("WATCHDOG_USEC", "100000", 1);
  setenv("WATCHDOG_PID", "1", 1);
  uv_timer_init(&loop, &wd);
  CHECK_INT(notify_watchdog_start(&loop, &wd), 0);
  CHECK(!uv_is_active((uv_handle_t *)&wd));
  uv_close((uv_handle_t *)&wd, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);

  setenv("WATCHDOG_USEC", "12x", 1);
  unsetenv("WATCHDOG_PID");
  uv_timer_init(&loop, &wd);
  CHECK_INT(notify_watchdog_start(&loop, &wd), -EINVAL);
  CHECK(!uv_is_active((uv_handle_t *)&wd));
  uv_close((uv_handle_t *)&wd, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);

  /* Ours: pings every 50 ms.  The timer is unreferenced, so the poll
   * handle is what keeps the loop running. */
  setenv("WATCHDOG_USEC", "100000", 1);
  snprintf(pidbuf, sizeof(pidbuf), "%ld", (long)getpid());
  setenv("WATCHDOG_PID", pidbuf, 1);
  uv_update_time(&loop); /* timers count from the loop's idea of now */
  t0 = uv_hrtime();
  uv_timer_init(&loop, &wd);
  CHECK_INT(notify_watchdog_start(&loop, &wd), 0);
  CHECK(uv_is_active((uv_handle_t *)&wd));
  CHECK(!uv_has_ref((uv_handle_t *)&wd));
  CHECK_INT(uv_timer_get_repeat(&wd), 50);

  uv_poll_init(&loop, &s.poll, s.fd);
  s.poll.data = &s;
  uv_poll_start(&s.poll, UV_READABLE, wd_poll_cb);
  uv_timer_init(&loop, &s.guard);
  s.guard.data = &s;
  uv_timer_start(&s.guard, wd_guard_cb, 5000, 0);
  uv_unref((uv_handle_t *)&s.guard);
  uv_run(&loop, UV_RUN_DEFAULT);
  elapsed = (uv_hrtime() - t0) / 1000000;
  CHECK(!s.timed_out);
  CHECK_INT(s.pings, 3);
  CHECK_INT(s.other, 0);
  /* Three pings at 50 ms intervals: about 150 ms, far below the guard. */
  CHECK(elapsed >= 145 && elapsed < 2000);

  uv_close((uv_handle_t *)&wd, NULL);
  uv_close((uv_handle_t *)&s.poll, NULL);
  uv_close((uv_handle_t *)&s.guard, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&loop), 0);
  close(s.fd);
  unlink(sock_path);
  unsetenv("WATCHDOG_USEC");
  unsetenv("WATCHDOG_PID");
  unsetenv("NOTIFY_SOCKET");
}

int main(void) {
  const char *tmp = getenv("TMPDIR");

  snprintf(root, sizeof(root), "%s/p3notify.XXXXXX", tmp != NULL && *tmp ? tmp : "/tmp");
  if (mkdtemp(root) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  test_path_socket();
  test_abstract_socket();
  test_no_socket();
  test_watchdog();
  rmdir(root);
  return check_result("test_notify");
}

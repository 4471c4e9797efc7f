#include "config.h"

#include "control.h"

#include "errors.h"

#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#define GUARD_MS 20000
#define CLIENT_WAIT_MS 10000
#define PINGS 20000 /* 100 KB of requests: more than the server buffers */

static uv_loop_t loop;
static uv_timer_t guard;
static uv_async_t wakeup;
static bool timed_out;
static char root[128];
static char sock_dir[160];
static char sock_path[200];

/* ---- the server side: a handler that answers at once or after 50 ms ---- */

static struct {
  char log[512]; /* "R:line;" per request, "A:line;" per reply, while short */
  int requests;
  struct control_req *slow_req;
  uv_timer_t slow_timer;
  bool slow_started;
  int slow_replies;
  int slow_alive; /* control_req_alive() just before the last slow reply */
  bool closed;    /* control_close's callback ran */
} srv;

static void srv_log(const char *kind, const char *line) {
  size_t len = strlen(srv.log);

  if (strlen(line) < 32 && len + strlen(line) + 4 < sizeof(srv.log))
    snprintf(srv.log + len, sizeof(srv.log) - len, "%s:%s;", kind, line);
}

static void slow_cb(uv_timer_t *t) {
  struct control_req *req = srv.slow_req;

  (void)t;
  srv.slow_req = NULL;
  srv.slow_alive = control_req_alive(req);
  srv_log("A", "slow");
  srv.slow_replies++;
  control_reply(req, "{\"slow\":true}");
}

static void on_request(void *data, struct control_req *req, const char *line) {
  char reply[128];

  CHECK(data == &srv);
  CHECK(control_req_alive(req));
  srv.requests++;
  srv_log("R", line);
  if (strcmp(line, "ping") == 0) {
    srv_log("A", line);
    control_reply(req, "{\"pong\":true}");
  } else if (strcmp(line, "slow") == 0) {
    CHECK(srv.slow_req == NULL); /* one at a time per client, one client here */
    srv.slow_req = req;
    srv.slow_started = true;
    uv_timer_start(&srv.slow_timer, slow_cb, 50, 0);
  } else {
    if (strlen(line) < 64)
      snprintf(reply, sizeof(reply), "{\"echo\":\"%s\"}", line);
    else
      snprintf(reply, sizeof(reply), "{\"len\":%zu}", strlen(line));
    srv_log("A", line);
    control_reply(req, reply);
  }
}

static const struct control_ops ops = {.request = on_request};

static void on_closed(void *data) {
  CHECK(data == &srv);
  srv.closed = true;
}

/* ---- the loop ---- */

static void guard_cb(uv_timer_t *t) {
  (void)t;
  timed_out = true;
}

static void wakeup_cb(uv_async_t *a) {
  (void)a;
}

/* Runs the loop until *flag (set by a callback or a thread) or the guard. */
static void run_until(volatile bool *flag) {
  timed_out = false;
  uv_timer_start(&guard, guard_cb, GUARD_MS, 0);
  while (!*flag && !timed_out)
    uv_run(&loop, UV_RUN_ONCE);
  uv_timer_stop(&guard);
  CHECK(!timed_out);
}

/* ---- a blocking client in a thread ---- */

struct job {
  const char *send;
  size_t send_len;
  int expect_lines; /* stop after this many lines; 0: read until the end */
  bool close_early; /* hang up right after sending */
  bool as_nobody;   /* fork a child that connects as uid/gid 65534 */
  char *recv;       /* what came back, NUL-terminated */
  size_t recv_len, recv_cap;
  int lines;
  bool eof;       /* the server closed (EOF or ECONNRESET) */
  int child_exit; /* as_nobody: the child's exit status */
  volatile bool done;
};

static int connect_path(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  int fd;

  if (strlen(path) >= sizeof(sa.sun_path))
    return -1;
  memcpy(sa.sun_path, path, strlen(path) + 1);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Sends and receives at once (poll), so that a server applying back
 * pressure cannot deadlock against us. */
static void job_talk(struct job *j, int fd) {
  size_t sent = 0;
  char buf[8192];
  ssize_t n;

  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  for (;;) {
    bool want_send = sent < j->send_len;
    bool want_recv =
        !j->close_early && !j->eof && (j->expect_lines == 0 || j->lines < j->expect_lines);
    struct pollfd p = {.fd = fd, .events = (short)((want_send ? POLLOUT : 0) | POLLIN)};

    if (!want_send && !want_recv)
      break;
    if (poll(&p, 1, CLIENT_WAIT_MS) != 1)
      break;
    if (want_send && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
      n = send(fd, j->send + sent, j->send_len - sent, MSG_NOSIGNAL);
      if (n > 0)
        sent += (size_t)n;
      else if (n < 0 && errno != EAGAIN)
        j->send_len = sent; /* give up sending, still read */
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      n = recv(fd, buf, sizeof(buf), 0);
      if (n == 0 || (n < 0 && errno != EAGAIN)) {
        j->eof = true;
        if (!want_send || sent < j->send_len)
          j->send_len = sent;
        continue;
      }
      if (n < 0)
        continue;
      if (j->recv_len + (size_t)n + 1 > j->recv_cap) {
        j->recv_cap = (j->recv_len + (size_t)n + 1) * 2;
        j->recv = realloc(j->recv, j->recv_cap);
      }
      memcpy(j->recv + j->recv_len, buf, (size_t)n);
      j->recv_len += (size_t)n;
      j->recv[j->recv_len] = '\0';
      for (ssize_t i = 0; i < n; i++)
        j->lines += buf[i] == '\n';
    }
  }
}

/* The child runs only async-signal-safe calls: the parent has threads. */
static void nobody_child(void) {
  static const char want[] = "{\"error\":\"permission denied\",\"exit\":77}\n";
  char buf[128];
  size_t got = 0;
  ssize_t n;
  int fd;

  alarm(10); /* should the server wrongly keep us waiting */
  if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
    _exit(2);
  fd = connect_path(sock_path);
  if (fd < 0)
    _exit(3);
  /* May fail with EPIPE: the server need not wait for us to speak. */
  if (write(fd, "ping\n", 5) < 0 && errno != EPIPE && errno != ECONNRESET)
    _exit(4);
  while (got < sizeof(buf) && (n = read(fd, buf + got, sizeof(buf) - got)) > 0)
    got += (size_t)n;
  /* The reply, then EOF (or ECONNRESET: our "ping" was never read). */
  if (got != sizeof(want) - 1 || memcmp(buf, want, got) != 0)
    _exit(5);
  _exit(0);
}

static void job_thread(void *arg) {
  struct job *j = arg;
  int fd, status;
  pid_t pid;

  if (j->as_nobody) {
    pid = fork();
    if (pid == 0)
      nobody_child();
    if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status))
      j->child_exit = WEXITSTATUS(status);
    else
      j->child_exit = -1;
  } else {
    fd = connect_path(sock_path);
    if (fd >= 0) {
      job_talk(j, fd);
      close(fd);
    }
  }
  j->done = true;
  uv_async_send(&wakeup);
}

/* Runs job on a thread while the loop serves it. */
static void run_job(struct job *j) {
  uv_thread_t t;

  j->done = false;
  j->recv_cap = 256;
  j->recv = calloc(1, j->recv_cap);
  CHECK_INT(uv_thread_create(&t, job_thread, j), 0);
  run_until(&j->done);
  uv_thread_join(&t);
}

/* ---- tests ---- */

static mode_t mode_of(const char *path) {
  struct stat st;

  if (lstat(path, &st) != 0)
    return (mode_t)-1;
  return st.st_mode;
}

static struct control *listen_ok(void) {
  struct control *c = NULL;
  char err[256];
  int r;

  r = control_listen(&loop, sock_path, &ops, &srv, &c, err, sizeof(err));
  CHECK_INT(r, 0);
  if (r != 0)
    fprintf(stderr, "control_listen: %s\n", err);
  return c;
}

static void close_and_wait(struct control *c) {
  srv.closed = false;
  control_close(c, on_closed, &srv);
  run_until(&srv.closed);
  CHECK(access(sock_path, F_OK) != 0 && errno == ENOENT);
}

static void test_listen_modes(struct control *c) {
  (void)c;
  /* The directory did not exist: created 0700; the socket is 0600. */
  CHECK(S_ISDIR(mode_of(sock_dir)));
  CHECK_INT(mode_of(sock_dir) & 07777, 0700);
  CHECK(S_ISSOCK(mode_of(sock_path)));
  CHECK_INT(mode_of(sock_path) & 07777, 0600);
}

static void test_order(void) {
  static const char req[] = "slow\nping\r\na\0b\nsecond\n\n";
  struct job j = {.send = req, .send_len = sizeof(req) - 1, .expect_lines = 5};

  srv.log[0] = '\0';
  run_job(&j);
  CHECK_STR(j.recv, "{\"slow\":true}\n{\"pong\":true}\n"
                    "{\"error\":\"request contains a NUL byte\",\"exit\":64}\n"
                    "{\"echo\":\"second\"}\n{\"echo\":\"\"}\n");
  /* ping reached the handler only after slow had been answered. */
  CHECK_STR(srv.log, "R:slow;A:slow;R:ping;A:ping;R:second;A:second;R:;A:;");
  CHECK_INT(srv.slow_alive, 1);
  free(j.recv);
}

static void test_many(void) {
  size_t len = (size_t)PINGS * 5;
  char *req = malloc(len);
  struct job j = {.send = req, .send_len = len, .expect_lines = PINGS};
  size_t pong = strlen("{\"pong\":true}\n");
  bool all = true;

  for (size_t i = 0; i < len; i += 5)
    memcpy(req + i, "ping\n", 5);
  srv.requests = 0;
  run_job(&j);
  CHECK_INT(srv.requests, PINGS);
  CHECK_INT(j.lines, PINGS);
  CHECK_INT(j.recv_len, (size_t)PINGS * pong);
  for (size_t i = 0; i + pong <= j.recv_len; i += pong)
    all = all && memcmp(j.recv + i, "{\"pong\":true}\n", pong) == 0;
  CHECK(all);
  free(j.recv);
  free(req);
}

static void test_line_limits(void) {
  size_t len = 4096 + 2 + 4096 + 1 + 5000 + 1;
  char *req = malloc(len), *p = req;
  struct job j;

  /* 4096 bytes with "\r\n", 4096 with "\n": both fine.  5000: too long,
   * and the connection ends. */
  memset(p, 'b', 4096);
  memcpy(p + 4096, "\r\n", 2);
  p += 4098;
  memset(p, 'c', 4096);
  p[4096] = '\n';
  p += 4097;
  memset(p, 'd', 5000);
  p[5000] = '\n';
  j = (struct job){.send = req, .send_len = len};
  run_job(&j);
  CHECK_STR(j.recv,
            "{\"len\":4096}\n{\"len\":4096}\n{\"error\":\"request too long\",\"exit\":64}\n");
  CHECK(j.eof);
  free(j.recv);

  /* Too long without any newline at all. */
  memset(req, 'e', len);
  j = (struct job){.send = req, .send_len = len};
  run_job(&j);
  CHECK_STR(j.recv, "{\"error\":\"request too long\",\"exit\":64}\n");
  CHECK(j.eof);
  free(j.recv);
  free(req);
}

/* The client hangs up while its request is in progress: the reply is
 * dropped, and the request and client are freed (ASan checks). */
static void test_gone_before_reply(void) {
  struct job j = {.send = "slow\n", .send_len = 5, .close_early = true};
  int replies = srv.slow_replies;

  run_job(&j);
  free(j.recv);
  timed_out = false;
  uv_timer_start(&guard, guard_cb, GUARD_MS, 0);
  while (srv.slow_replies == replies && !timed_out)
    uv_run(&loop, UV_RUN_ONCE);
  uv_timer_stop(&guard);
  CHECK_INT(srv.slow_replies, replies + 1);
  CHECK_INT(srv.slow_alive, 0);
}

static void test_second_listener(void) {
  struct control *c2 = NULL;
  char err[256] = "";

  CHECK_INT(control_listen(&loop, sock_path, &ops, &srv, &c2, err, sizeof(err)), P3_ELOCKED);
  CHECK(c2 == NULL);
  CHECK(strstr(err, "already listening on") != NULL);
  CHECK(strstr(err, sock_path) != NULL);
  /* The live socket is untouched. */
  CHECK(S_ISSOCK(mode_of(sock_path)));
}

/* 64 clients are served; the 65th is told so and closed. */
static void test_client_cap(void) {
  static const char want[] = "{\"error\":\"too many control connections\",\"exit\":75}\n";
  int fds[65];
  char buf[256];
  ssize_t n = -1;
  uint64_t t0;

  for (int i = 0; i < 65; i++) {
    fds[i] = connect_path(sock_path);
    CHECK(fds[i] >= 0);
    /* Let the server accept before the backlog (16) fills. */
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  t0 = uv_now(&loop);
  while (uv_now(&loop) - t0 < 5000) {
    uv_run(&loop, UV_RUN_NOWAIT);
    n = recv(fds[64], buf, sizeof(buf) - 1, MSG_DONTWAIT);
    if (n >= 0 || errno != EAGAIN)
      break;
    usleep(1000);
    uv_update_time(&loop);
  }
  CHECK_INT(n, (ssize_t)sizeof(want) - 1);
  if (n >= 0) {
    buf[n] = '\0';
    CHECK_STR(buf, want);
  }
  /* The others are served. */
  CHECK_INT(send(fds[0], "ping\n", 5, MSG_NOSIGNAL), 5);
  t0 = uv_now(&loop);
  n = -1;
  while (uv_now(&loop) - t0 < 5000) {
    uv_run(&loop, UV_RUN_NOWAIT);
    n = recv(fds[0], buf, sizeof(buf) - 1, MSG_DONTWAIT);
    if (n >= 0 || errno != EAGAIN)
      break;
    usleep(1000);
    uv_update_time(&loop);
  }
  CHECK_INT(n, 14);
  for (int i = 0; i < 65; i++)
    if (fds[i] >= 0)
      close(fds[i]);
  /* Let the server see them go. */
  for (int i = 0; i < 20; i++)
    uv_run(&loop, UV_RUN_NOWAIT);
}

static void test_peer_cred(void) {
  struct job j = {.as_nobody = true};

  if (geteuid() != 0) {
    printf("test_control: not root, skipping the peer-credential refusal test\n");
    return;
  }
  /* Let uid 65534 reach and connect to the socket, so that only the
   * SO_PEERCRED check stands in its way. */
  CHECK_INT(chmod(root, 0711), 0);
  CHECK_INT(chmod(sock_dir, 0711), 0);
  CHECK_INT(chmod(sock_path, 0666), 0);
  run_job(&j);
  CHECK_INT(j.child_exit, 0);
  free(j.recv);
  chmod(sock_path, 0600);
  chmod(sock_dir, 0700);
  chmod(root, 0700);
}

/* control_close with a request in progress: the callback comes once the
 * handles are closed, the request stays valid and is freed by its reply. */
static void test_close_pending(struct control *c) {
  int fd = connect_path(sock_path);
  int replies = srv.slow_replies;
  char buf[64];

  CHECK(fd >= 0);
  CHECK_INT(send(fd, "slow\n", 5, MSG_NOSIGNAL), 5);
  srv.slow_started = false;
  run_until(&srv.slow_started);
  close_and_wait(c);
  CHECK(srv.slow_req != NULL && !control_req_alive(srv.slow_req));
  timed_out = false;
  uv_timer_start(&guard, guard_cb, GUARD_MS, 0);
  while (srv.slow_replies == replies && !timed_out)
    uv_run(&loop, UV_RUN_ONCE);
  uv_timer_stop(&guard);
  CHECK_INT(srv.slow_replies, replies + 1);
  CHECK_INT(srv.slow_alive, 0);
  CHECK_INT(recv(fd, buf, sizeof(buf), 0), 0); /* closed without a reply */
  close(fd);
}

static void test_stale_and_refusals(void) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  struct control *c = NULL;
  char err[256], longpath[200];
  int fd, r;

  /* A socket bound and closed without unlinking: stale, replaced. */
  memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
  fd = socket(AF_UNIX, SOCK_STREAM, 0);
  CHECK_INT(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  close(fd);
  CHECK(S_ISSOCK(mode_of(sock_path)));
  c = listen_ok();
  if (c != NULL) {
    struct job j = {.send = "ping\n", .send_len = 5, .expect_lines = 1};

    run_job(&j);
    CHECK_STR(j.recv, "{\"pong\":true}\n");
    free(j.recv);
    close_and_wait(c);
  }

  /* A regular file is not ours to delete. */
  fd = open(sock_path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  CHECK(fd >= 0);
  close(fd);
  c = (struct control *)&r; /* must be reset to NULL */
  r = control_listen(&loop, sock_path, &ops, &srv, &c, err, sizeof(err));
  CHECK_INT(r, -EEXIST);
  CHECK(c == NULL);
  CHECK(strstr(err, "not a socket") != NULL);
  CHECK(S_ISREG(mode_of(sock_path)));
  unlink(sock_path);

  /* A directory others may write to. */
  CHECK_INT(chmod(sock_dir, 0770), 0);
  r = control_listen(&loop, sock_path, &ops, &srv, &c, err, sizeof(err));
  CHECK_INT(r, -EPERM);
  CHECK(strstr(err, sock_dir) != NULL);
  CHECK(access(sock_path, F_OK) != 0);
  chmod(sock_dir, 0700);

  /* The parent is a file. */
  snprintf(longpath, sizeof(longpath), "%s/file", root);
  fd = open(longpath, O_WRONLY | O_CREAT, 0600);
  close(fd);
  snprintf(longpath, sizeof(longpath), "%s/file/sock", root);
  r = control_listen(&loop, longpath, &ops, &srv, &c, err, sizeof(err));
  CHECK_INT(r, -ENOTDIR);
  snprintf(longpath, sizeof(longpath), "%s/file", root);
  unlink(longpath);

  /* Longer than sun_path. */
  memset(longpath, 'x', sizeof(longpath) - 1);
  longpath[0] = '/';
  longpath[sizeof(longpath) - 1] = '\0';
  r = control_listen(&loop, longpath, &ops, &srv, &c, err, sizeof(err));
  CHECK_INT(r, -ENAMETOOLONG);
  CHECK(strstr(err, "too long") != NULL);
}

int main(void) {
  const char *tmp = getenv("TMPDIR");
  struct control *c;

  /* A client hanging up as we write must not kill us (the daemon ignores
   * SIGPIPE the same way). */
  signal(SIGPIPE, SIG_IGN);
  snprintf(root, sizeof(root), "%s/p3ctl.XXXXXX", tmp != NULL && *tmp ? tmp : "/tmp");
  if (mkdtemp(root) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(sock_dir, sizeof(sock_dir), "%s/run", root);
  snprintf(sock_path, sizeof(sock_path), "%s/ctl.sock", sock_dir);

  uv_loop_init(&loop);
  uv_timer_init(&loop, &guard);
  uv_unref((uv_handle_t *)&guard);
  uv_async_init(&loop, &wakeup, wakeup_cb);
  uv_timer_init(&loop, &srv.slow_timer);

  c = listen_ok();
  if (c == NULL)
    return check_result("test_control");
  test_listen_modes(c);
  test_order();
  test_many();
  test_line_limits();
  test_gone_before_reply();
  test_second_listener();
  test_client_cap();
  test_peer_cred();
  /* Still serving after all that. */
  {
    struct job j = {.send = "ping\n", .send_len = 5, .expect_lines = 1};

    run_job(&j);
    CHECK_STR(j.recv, "{\"pong\":true}\n");
    free(j.recv);
  }
  test_close_pending(c);
  test_stale_and_refusals();

  uv_close((uv_handle_t *)&guard, NULL);
  uv_close((uv_handle_t *)&wakeup, NULL);
  uv_close((uv_handle_t *)&srv.slow_timer, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&loop), 0);
  rmdir(sock_dir);
  rmdir(root);
  return check_result("test_control");
}

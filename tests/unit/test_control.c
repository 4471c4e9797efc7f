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
  int slow_alive;              /* control_req_alive() just before the last slow reply */
  bool closed;                 /* control_close's callback ran */
  struct control_req *held[8]; /* "hold" and "fetch ..." wait for release_held() */
  int nheld;
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
  } else if ((strcmp(line, "hold") == 0 || strncmp(line, "fetch ", 6) == 0) &&
             strstr(line, "--no-wait") == NULL) {
    CHECK(srv.nheld < 8);
    if (srv.nheld < 8)
      srv.held[srv.nheld++] = req;
    else
      control_reply(req, "{\"error\":\"test: too many held\"}");
  } else if (strncmp(line, "watch", 5) == 0) {
    control_watch(req, line[5] == ' ' ? line + 6 : NULL, "{\"watching\":true}");
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

/* Replies to every held request, oldest first. */
static void release_held(void) {
  for (int i = 0; i < srv.nheld; i++)
    control_reply(srv.held[i], "{\"held\":true}");
  srv.nheld = 0;
}

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

/* ---- the connection table: eviction, waiting cap, timeouts ---- */

/* Runs the loop (the server) while reading fd without blocking, until a
 * whole line has arrived, the peer closed, or ms passed.  Returns 1 with
 * the line (without '\n') in buf, 0 when closed first, -1 on timeout. */
static int step_read_line(int fd, char *buf, size_t len, unsigned ms) {
  size_t got = 0;
  uint64_t t0;
  ssize_t n;

  uv_update_time(&loop);
  t0 = uv_now(&loop);
  while (uv_now(&loop) - t0 < ms) {
    uv_run(&loop, UV_RUN_NOWAIT);
    n = recv(fd, buf + got, 1, MSG_DONTWAIT); /* byte by byte: stop at the line */
    if (n == 0 || (n < 0 && errno != EAGAIN))
      return 0;
    if (n == 1) {
      if (buf[got] == '\n') {
        buf[got] = '\0';
        return 1;
      }
      if (got + 2 < len)
        got++;
      continue;
    }
    usleep(1000);
    uv_update_time(&loop);
  }
  return -1;
}

/* Like step_read_line, but waits for the peer to close (reading and
 * dropping what comes first).  Returns the ms it took, or -1 on timeout. */
static long step_until_closed(int fd, unsigned ms) {
  char buf[4096];
  uint64_t t0;
  ssize_t n;

  uv_update_time(&loop);
  t0 = uv_now(&loop);
  while (uv_now(&loop) - t0 < ms) {
    uv_run(&loop, UV_RUN_NOWAIT);
    n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN))
      return (long)(uv_now(&loop) - t0);
    if (n > 0)
      continue;
    usleep(1000);
    uv_update_time(&loop);
  }
  return -1;
}

/* Runs the loop for about ms. */
static void step_for(unsigned ms) {
  uint64_t t0;

  uv_update_time(&loop);
  t0 = uv_now(&loop);
  while (uv_now(&loop) - t0 < ms) {
    uv_run(&loop, UV_RUN_NOWAIT);
    usleep(1000);
    uv_update_time(&loop);
  }
}

/* Sends line and expects want as the one-line reply. */
static void ask(int fd, const char *line, const char *want) {
  char buf[512];
  size_t n = strlen(line);

  CHECK_INT(send(fd, line, n, MSG_NOSIGNAL), (ssize_t)n);
  CHECK_INT(step_read_line(fd, buf, sizeof(buf), 5000), 1);
  CHECK_STR(buf, want);
}

static void close_all(int *fds, int n) {
  for (int i = 0; i < n; i++)
    if (fds[i] >= 0)
      close(fds[i]);
  /* Let the server see them go. */
  step_for(50);
}

static void test_request_waits(void) {
  CHECK_INT(control_request_waits("fetch work"), 1);
  CHECK_INT(control_request_waits("fetch --all"), 1);
  CHECK_INT(control_request_waits("fetch"), 1); /* a usage error, but counted */
  CHECK_INT(control_request_waits("  fetch\twork "), 1);
  CHECK_INT(control_request_waits("fetch --no-wait work"), 0);
  CHECK_INT(control_request_waits("watch"), 1);
  CHECK_INT(control_request_waits("watch work"), 1);
  CHECK_INT(control_request_waits("watcher"), 0);
  CHECK_INT(control_request_waits("fetch work --no-wait"), 0);
  CHECK_INT(control_request_waits("fetch\t--no-wait\t--all"), 0);
  CHECK_INT(control_request_waits("fetch --no-waiting work"), 1);
  CHECK_INT(control_request_waits("fetchall work"), 0);
  CHECK_INT(control_request_waits("status"), 0);
  CHECK_INT(control_request_waits("status fetch"), 0);
  CHECK_INT(control_request_waits("reload"), 0);
  CHECK_INT(control_request_waits(""), 0);
  CHECK_INT(control_request_waits("   "), 0);
  /* The daemon reads 16 words: a --no-wait beyond them does not count. */
  CHECK_INT(control_request_waits("fetch a b c d e f g h i j k l m n --no-wait"), 0);
  CHECK_INT(control_request_waits("fetch a b c d e f g h i j k l m n o --no-wait"), 1);
}

static void test_deadline(void) {
  struct control_limits lim;
  struct control_clock k;

  control_limits_default(&lim);
  CHECK_INT(lim.clients_max, 64);
  CHECK_INT(lim.waiting_max, 32);
  CHECK_INT(lim.idle_ms, 10000);
  CHECK_INT(lim.write_ms, 30000);

  /* Idle: from idle_since. */
  k = (struct control_clock){.idle_since = 1000, .write_since = 5, .queued_since = 7};
  CHECK_INT(control_deadline(&k, &lim), 11000);
  /* Waiting for a reply: no timer at all, however long. */
  k.busy = true;
  CHECK_INT(control_deadline(&k, &lim), 0);
  /* A reply being written: the write timeout, busy or not. */
  k.writing = true;
  k.write_since = 2000;
  CHECK_INT(control_deadline(&k, &lim), 32000);
  k.busy = false;
  CHECK_INT(control_deadline(&k, &lim), 32000);
  /* Queued: answered within the idle timeout of arriving. */
  k = (struct control_clock){.queued = true, .queued_since = 500, .idle_since = 9999};
  CHECK_INT(control_deadline(&k, &lim), 10500);
  /* Refused (the refusal is being written): the write timeout. */
  k.writing = true;
  k.write_since = 600;
  CHECK_INT(control_deadline(&k, &lim), 30600);
}

/* The table is full of idle clients: a newcomer evicts the one idle the
 * longest instead of being refused. */
static void test_client_cap(void) {
  int fds[66];
  char buf[256];

  for (int i = 0; i < 66; i++) {
    fds[i] = connect_path(sock_path);
    CHECK(fds[i] >= 0);
    /* Let the server accept before the backlog (16) fills. */
    step_for(2);
  }
  /* fds[0] and fds[1], idle the longest, made room for the last two. */
  CHECK(step_until_closed(fds[0], 5000) >= 0);
  CHECK(step_until_closed(fds[1], 5000) >= 0);
  ask(fds[65], "ping\n", "{\"pong\":true}");
  ask(fds[64], "ping\n", "{\"pong\":true}");
  ask(fds[2], "ping\n", "{\"pong\":true}");
  /* fds[2] has just been answered: fds[3] is now the one idle longest. */
  fds[0] = connect_path(sock_path);
  CHECK(step_until_closed(fds[3], 5000) >= 0);
  CHECK_INT(step_read_line(fds[2], buf, sizeof(buf), 100), -1); /* still open */
  ask(fds[0], "ping\n", "{\"pong\":true}");
  fds[1] = fds[3] = -1;
  close_all(fds, 66);
}

/* With a short idle timeout: a silent client, or one that never finishes
 * its line, is closed; one that keeps asking, or waits for a reply, is not,
 * and a waiting one is timed again from its reply. */
static void test_idle_timeout(struct control *c) {
  struct control_limits lim, dflt;
  int silent, partial, chatty, waiter;
  char buf[256];
  long t;

  control_limits_default(&dflt);
  lim = dflt;
  lim.idle_ms = 300;
  control_set_limits(c, &lim);

  silent = connect_path(sock_path);
  partial = connect_path(sock_path);
  chatty = connect_path(sock_path);
  waiter = connect_path(sock_path);
  CHECK(silent >= 0 && partial >= 0 && chatty >= 0 && waiter >= 0);
  step_for(20);
  CHECK_INT(send(partial, "pin", 3, MSG_NOSIGNAL), 3);
  CHECK_INT(send(waiter, "fetch work\n", 11, MSG_NOSIGNAL), 11);
  ask(chatty, "ping\n", "{\"pong\":true}");
  /* Not before the timeout ... */
  CHECK_INT(step_read_line(silent, buf, sizeof(buf), 150), -1);
  /* chatty asks every 100 ms for 800 ms: never idle for 300. */
  for (int i = 0; i < 8; i++) {
    ask(chatty, "ping\n", "{\"pong\":true}");
    step_for(100);
  }
  /* ... but soon after it, the silent and the partial one are gone. */
  t = step_until_closed(silent, 10);
  CHECK(t >= 0);
  CHECK(step_until_closed(partial, 10) >= 0);
  /* The waiter has waited 900 ms and more, still connected. */
  CHECK_INT(srv.nheld, 1);
  CHECK_INT(step_read_line(waiter, buf, sizeof(buf), 10), -1);
  release_held();
  CHECK_INT(step_read_line(waiter, buf, sizeof(buf), 3000), 1);
  CHECK_STR(buf, "{\"held\":true}");
  /* Timed again from its reply. */
  CHECK_INT(step_read_line(waiter, buf, sizeof(buf), 150), -1);
  CHECK(step_until_closed(waiter, 3000) >= 0);
  CHECK(step_until_closed(chatty, 3000) >= 0);
  close(silent);
  close(partial);
  close(chatty);
  close(waiter);
  control_set_limits(c, &dflt);
  step_for(20);
}

/* At most waiting_max clients wait for a run; the next gets an error reply
 * (and may go on with other requests); a full table of busy clients makes a
 * newcomer wait for a slot, and answers it within the idle timeout. */
static void test_waiting_cap(struct control *c) {
  static const char full[] = "{\"error\":\"too many control clients waiting for a run (2); try "
                             "again later, or use fetch --no-wait\",\"exit\":75}";
  struct control_limits lim, dflt;
  int fds[6];
  char buf[256];
  long t;

  control_limits_default(&dflt);
  lim = dflt;
  lim.clients_max = 4;
  lim.waiting_max = 2;
  lim.idle_ms = 400;
  control_set_limits(c, &lim);

  for (int i = 0; i < 6; i++)
    fds[i] = -1;
  for (int i = 0; i < 4; i++) {
    fds[i] = connect_path(sock_path);
    CHECK(fds[i] >= 0);
  }
  step_for(20);
  CHECK_INT(send(fds[0], "fetch a\n", 8, MSG_NOSIGNAL), 8);
  CHECK_INT(send(fds[1], "fetch --all\n", 12, MSG_NOSIGNAL), 12);
  step_for(20);
  CHECK_INT(srv.nheld, 2);
  /* The third waiter is refused without reaching the handler ... */
  ask(fds[2], "fetch b\n", full);
  CHECK_INT(srv.nheld, 2);
  /* ... and is still served. */
  ask(fds[2], "fetch --no-wait b\n", "{\"echo\":\"fetch --no-wait b\"}");
  /* fds[2] and fds[3] hold requests that do not wait for a run. */
  CHECK_INT(send(fds[2], "hold\n", 5, MSG_NOSIGNAL), 5);
  CHECK_INT(send(fds[3], "hold\n", 5, MSG_NOSIGNAL), 5);
  step_for(20);
  CHECK_INT(srv.nheld, 4);
  /* Nobody idle: a newcomer waits, unanswered, past the idle timeout of
   * the others (all busy) ... */
  fds[4] = connect_path(sock_path);
  CHECK_INT(send(fds[4], "ping\n", 5, MSG_NOSIGNAL), 5);
  CHECK_INT(step_read_line(fds[4], buf, sizeof(buf), 200), -1);
  /* ... until a slot frees: the held replies go out, fds[0] (now idle the
   * longest) is evicted for it, and its ping is answered. */
  release_held();
  for (int i = 0; i < 4; i++) {
    CHECK_INT(step_read_line(fds[i], buf, sizeof(buf), 3000), 1);
    CHECK_STR(buf, "{\"held\":true}");
  }
  CHECK_INT(step_read_line(fds[4], buf, sizeof(buf), 3000), 1);
  CHECK_STR(buf, "{\"pong\":true}");
  CHECK(step_until_closed(fds[0], 3000) >= 0);

  /* Busy again, all four: a newcomer is told within the idle timeout. */
  CHECK_INT(send(fds[1], "fetch a\n", 8, MSG_NOSIGNAL), 8);
  CHECK_INT(send(fds[2], "hold\n", 5, MSG_NOSIGNAL), 5);
  CHECK_INT(send(fds[3], "hold\n", 5, MSG_NOSIGNAL), 5);
  CHECK_INT(send(fds[4], "hold\n", 5, MSG_NOSIGNAL), 5);
  step_for(20);
  CHECK_INT(srv.nheld, 4);
  fds[5] = connect_path(sock_path);
  uv_update_time(&loop);
  t = (long)uv_now(&loop);
  CHECK_INT(step_read_line(fds[5], buf, sizeof(buf), 3000), 1);
  CHECK_STR(buf, "{\"error\":\"too many control connections\",\"exit\":75}");
  t = (long)uv_now(&loop) - t;
  CHECK(t >= 300 && t < 2000);
  CHECK(step_until_closed(fds[5], 3000) >= 0);
  release_held();
  step_for(20);
  close_all(fds, 6);
  control_set_limits(c, &dflt);
}

/* A client that sends requests but never reads the replies is dropped once
 * a reply has waited write_ms. */
static void test_write_timeout(struct control *c) {
  struct control_limits lim, dflt;
  size_t len = 400000, sent = 0;
  char *req = malloc(len);
  int fd = connect_path(sock_path);
  uint64_t t0;
  ssize_t n;
  long t;

  control_limits_default(&dflt);
  lim = dflt;
  lim.write_ms = 300;
  control_set_limits(c, &lim);
  CHECK(fd >= 0 && req != NULL);
  for (size_t i = 0; i < len; i += 5)
    memcpy(req + i, "ping\n", 5);
  /* 80,000 pings ask for 1.1 MB of replies: more than socket buffers and
   * the server's write queue hold; we send what we can without reading. */
  uv_update_time(&loop);
  t0 = uv_now(&loop);
  while (sent < len && uv_now(&loop) - t0 < 5000) {
    uv_run(&loop, UV_RUN_NOWAIT);
    n = send(fd, req + sent, len - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0)
      sent += (size_t)n;
    else if (n < 0 && errno != EAGAIN)
      break; /* the server has already hung up */
    else
      usleep(1000);
    uv_update_time(&loop);
  }
  /* The server stopped writing to us: after write_ms it hangs up. */
  step_for(1000);
  t = step_until_closed(fd, 5000);
  CHECK(t >= 0);
  CHECK(srv.requests > 0);
  close(fd);
  free(req);
  control_set_limits(c, &dflt);
  step_for(20);
}

/* Lines readable on fd now (after running the loop for ms), without
 * blocking; -1 if the peer closed. */
static long drain_lines(int fd, unsigned ms) {
  char buf[8192];
  long lines = 0;
  ssize_t n;

  step_for(ms);
  for (;;) {
    n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0)
      return -1;
    if (n < 0) {
      if (errno != EAGAIN)
        return -1;
      uv_run(&loop, UV_RUN_NOWAIT); /* room in the socket: the server writes more */
      usleep(2000);
      n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n < 0 && errno == EAGAIN)
        return lines;
      if (n <= 0)
        return -1;
    }
    for (ssize_t i = 0; i < n; i++)
      lines += buf[i] == '\n';
  }
}

/* `watch': events go to the watchers of their account (or of all); a
 * watcher is never idle; a slow one misses droppable events, and one that
 * reads nothing is dropped once its queue is full of the others. */
static void test_watch(struct control *c) {
  struct control_limits lim, dflt;
  int fa = connect_path(sock_path), fall = connect_path(sock_path);
  char buf[512], big[4097];

  control_limits_default(&dflt);
  lim = dflt;
  lim.idle_ms = 200;
  control_set_limits(c, &lim);
  ask(fa, "watch a\n", "{\"watching\":true}");
  ask(fall, "watch\n", "{\"watching\":true}");
  control_broadcast(c, "a", "{\"e\":1}", false);
  control_broadcast(c, "b", "{\"e\":2}", false);
  control_broadcast(c, NULL, "{\"e\":3}", true);
  CHECK_INT(step_read_line(fa, buf, sizeof(buf), 2000), 1);
  CHECK_STR(buf, "{\"e\":1}");
  CHECK_INT(step_read_line(fa, buf, sizeof(buf), 2000), 1);
  CHECK_STR(buf, "{\"e\":3}");
  CHECK_INT(step_read_line(fall, buf, sizeof(buf), 2000), 1);
  CHECK_STR(buf, "{\"e\":1}");
  CHECK_INT(step_read_line(fall, buf, sizeof(buf), 2000), 1);
  CHECK_STR(buf, "{\"e\":2}");
  CHECK_INT(step_read_line(fall, buf, sizeof(buf), 2000), 1);
  CHECK_STR(buf, "{\"e\":3}");
  /* Not idle: past the idle timeout it still gets events. */
  step_for(500);
  control_broadcast(c, "a", "{\"e\":4}", false);
  CHECK_INT(step_read_line(fa, buf, sizeof(buf), 2000), 1);
  CHECK_STR(buf, "{\"e\":4}");
  close(fa);
  step_for(20);

  /* fall stops reading: 4000 progress events of 4 KiB (16 MB) are mostly
   * dropped, and the connection stays. */
  memset(big, 'x', sizeof(big) - 1);
  big[0] = '"';
  big[sizeof(big) - 2] = '"';
  big[sizeof(big) - 1] = '\0';
  for (int i = 0; i < 4000; i++) {
    control_broadcast(c, "a", big, true);
    if (i % 100 == 0)
      uv_run(&loop, UV_RUN_NOWAIT);
  }
  long got = drain_lines(fall, 50);
  CHECK(got > 0 && got < 1000);
  /* Now events that may not be dropped, unread: the watcher is dropped
   * rather than its queue growing without bound. */
  for (int i = 0; i < 4000; i++) {
    control_broadcast(c, "a", big, false);
    if (i % 100 == 0)
      uv_run(&loop, UV_RUN_NOWAIT);
  }
  CHECK(step_until_closed(fall, 5000) >= 0);
  close(fall);
  control_set_limits(c, &dflt);
  step_for(20);
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
  test_request_waits();
  test_deadline();
  test_client_cap();
  test_idle_timeout(c);
  test_waiting_cap(c);
  test_write_timeout(c);
  test_watch(c);
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

/* pwcmd: password commands as children on a libuv loop.  Each case runs
 * one command on a fresh loop and checks the result, the time it took, that
 * the loop closes cleanly (every handle closed), and what was killed. */
#include "config.h"

#include "errors.h"
#include "pwcmd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "check.h"

static char tmpdir[256];

struct result {
  int calls;
  int err;
  char *password;
  char message[1024];
  int pid;         /* pwcmd_pid right after the start */
  struct pwcmd *p; /* NULL once done */
  double seconds;
};

static void on_done(void *data, int err, char *password, const char *message) {
  struct result *res = data;
  res->calls++;
  res->p = NULL;
  res->err = err;
  res->password = password;
  snprintf(res->message, sizeof res->message, "%s", message);
}

static void on_cancel_timer(uv_timer_t *t) {
  struct result *res = t->data;
  if (res->p != NULL)
    pwcmd_cancel(res->p);
  uv_close((uv_handle_t *)t, NULL);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs cmd to the end on a loop of its own; cancels it after cancel_ms when
 * that is non-zero. */
static void run(const char *cmd, unsigned timeout_s, int fg, unsigned cancel_ms,
                struct result *res) {
  uv_loop_t loop;
  uv_timer_t cancel;
  double t0 = now_s();

  memset(res, 0, sizeof *res);
  CHECK_INT(uv_loop_init(&loop), 0);
  CHECK_INT(pwcmd_start(&loop, cmd, timeout_s, fg, on_done, res, &res->p), 0);
  if (res->p != NULL)
    res->pid = pwcmd_pid(res->p);
  if (cancel_ms) {
    uv_timer_init(&loop, &cancel);
    cancel.data = res;
    uv_timer_start(&cancel, on_cancel_timer, cancel_ms, 0);
  }
  CHECK_INT(res->calls, 0); /* never from inside pwcmd_start */
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(res->calls, 1);
  /* Every handle was closed before the callback. */
  CHECK_INT(uv_loop_close(&loop), 0);
  res->seconds = now_s() - t0;
}

static void expect_ok(const char *cmd, const char *password) {
  struct result res;

  run(cmd, 10, 0, 0, &res);
  CHECK_INT(res.err, 0);
  if (res.err != 0)
    fprintf(stderr, "command `%s': %s\n", cmd, res.message);
  CHECK_STR(res.password, password);
  CHECK_STR(res.message, "");
  free(res.password);
}

static void expect_fail(const char *cmd, int err, const char *reason) {
  struct result res;

  run(cmd, 10, 0, 0, &res);
  CHECK_INT(res.err, err);
  CHECK(res.password == NULL);
  if (strstr(res.message, reason) == NULL) {
    fprintf(stderr, "command `%s': got \"%s\", expected \"%s\"\n", cmd, res.message, reason);
    check_failures++;
  }
  free(res.password);
}

static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  struct dirent *de;
  int n = 0;

  if (d == NULL)
    return -1;
  while ((de = readdir(d)) != NULL)
    n += de->d_name[0] != '.';
  closedir(d);
  return n;
}

/* Gone, or a zombie nobody reaps (PID 1 in a container may not): either way
 * no longer running. */
static int proc_dead(int pid) {
  char path[64], buf[512], *p;
  FILE *f;
  size_t n;

  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  f = fopen(path, "r");
  if (f == NULL)
    return 1;
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  p = strrchr(buf, ')');
  return p != NULL && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

static int wait_dead(int pid, double secs) {
  double end = now_s() + secs;
  while (!proc_dead(pid)) {
    if (now_s() > end)
      return 0;
    usleep(20000);
  }
  return 1;
}

static int read_pid_file(const char *path) {
  char buf[32] = "";
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  return n > 0 ? atoi(buf) : 0;
}

static void test_output(void) {
  expect_ok("echo secret", "secret");
  expect_ok("printf 'first\\nsecond\\nthird\\n'", "first");
  expect_ok("printf 'crlf\\r\\n'", "crlf");
  expect_ok("printf 'no newline'", "no newline");
  expect_ok("printf ' spaced out \\n'", " spaced out ");
  /* Output in pieces. */
  expect_ok("printf 'sec'; sleep 0.2; printf 'ret\\n'", "secret");
  /* stderr is left alone (ours is silenced here to keep the log clean). */
  {
    int saved = dup(2), devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    dup2(devnull, 2);
    expect_ok("echo to-stderr >&2; echo pw", "pw");
    dup2(saved, 2);
    close(saved);
    close(devnull);
  }
  /* Detached: stdin is /dev/null, not ours. */
  expect_ok("read x; echo \"got:$x\"", "got:");
  expect_ok("readlink /proc/$$/fd/0", "/dev/null");
  /* A long line comes back whole; exactly the limit is fine. */
  {
    struct result res;
    char *big = malloc(PWCMD_MAX_OUTPUT + 1);
    memset(big, 'a', PWCMD_MAX_OUTPUT);
    big[4000] = '\0';
    run("head -c 4000 /dev/zero | tr '\\0' a", 10, 0, 0, &res);
    CHECK_INT(res.err, 0);
    CHECK(res.password != NULL && strcmp(res.password, big) == 0);
    free(res.password);
    big[4000] = 'a';
    big[PWCMD_MAX_OUTPUT] = '\0';
    run("head -c 65536 /dev/zero | tr '\\0' a", 10, 0, 0, &res);
    CHECK_INT(res.err, 0);
    CHECK(res.password != NULL && strcmp(res.password, big) == 0);
    free(res.password);
    free(big);
  }

  expect_fail("exit 1", P3_EPWCMD, "password command `exit 1' exited with status 1");
  expect_fail("echo pw; exit 3", P3_EPWCMD, "exited with status 3");
  expect_fail("echo", P3_EPWCMD, "password command `echo' printed an empty line");
  expect_fail("printf '\\r\\nsecond\\n'", P3_EPWCMD, "printed an empty line");
  expect_fail("true", P3_EPWCMD, "printed nothing");
  expect_fail("kill -9 $$", P3_EPWCMD, "was killed by signal 9");
  expect_fail("/nonexistent/pass-helper 2>/dev/null", P3_EPWCMD, "exited with status 127");
  expect_fail("printf 'a\\0b\\n'", P3_EPWCMD, "NUL byte");
  expect_fail("printf 'a\\rb\\n'", P3_EPWCMD, "carriage return");
  expect_fail("head -c 65537 /dev/zero | tr '\\0' a", P3_EPWCMD, "printed more than 65536 bytes");
  /* `yes' never ends: it is stopped, not drained. */
  {
    struct result res;
    run("yes", 30, 0, 0, &res);
    CHECK_INT(res.err, P3_EPWCMD);
    CHECK(strstr(res.message, "printed more than 65536 bytes") != NULL);
    CHECK(res.seconds < 5);
  }
}

static void test_args(void) {
  uv_loop_t loop;
  struct pwcmd *p = (struct pwcmd *)&loop;
  struct result res;

  memset(&res, 0, sizeof res);
  CHECK_INT(uv_loop_init(&loop), 0);
  CHECK_INT(pwcmd_start(&loop, "", 1, 0, on_done, &res, &p), -EINVAL);
  CHECK(p == NULL);
  p = (struct pwcmd *)&loop;
  CHECK_INT(pwcmd_start(&loop, NULL, 1, 0, on_done, &res, &p), -EINVAL);
  CHECK(p == NULL);
  CHECK_INT(pwcmd_start(&loop, "echo x", 1, 0, NULL, &res, &p), -EINVAL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(res.calls, 0);
  CHECK_INT(uv_loop_close(&loop), 0);
}

/* Detached: a session and process group of its own, whose id pwcmd_pid
 * gives.  Foreground: our process group, our stdin. */
static void test_groups(void) {
  struct result res;
  char want[64];
  const char *cmd =
      "read -r pid comm state ppid pgrp sid rest </proc/$$/stat; echo \"$$ $pgrp $sid\"";

  run(cmd, 10, 0, 0, &res);
  CHECK_INT(res.err, 0);
  CHECK(res.pid > 0);
  snprintf(want, sizeof want, "%d %d %d", res.pid, res.pid, res.pid);
  CHECK_STR(res.password, want);
  free(res.password);

  run(cmd, 10, 1, 0, &res);
  CHECK_INT(res.err, 0);
  snprintf(want, sizeof want, "%d %d %d", res.pid, (int)getpgrp(), (int)getsid(0));
  CHECK_STR(res.password, want);
  free(res.password);

  /* Foreground: stdin is ours (here a file, so that it can be checked). */
  {
    char path[300];
    int saved = dup(0), fd;
    snprintf(path, sizeof path, "%s/stdin", tmpdir);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK_INT(write(fd, "typed\n", 6), 6);
    close(fd);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    dup2(fd, 0);
    close(fd);
    run("read -r x; echo \"got:$x\"", 10, 1, 0, &res);
    dup2(saved, 0);
    close(saved);
    CHECK_INT(res.err, 0);
    CHECK_STR(res.password, "got:typed");
    free(res.password);
  }
}

static void test_timeout(void) {
  struct result res;
  char cmd[600], pidfile[300];
  int pid;

  /* The bound, the sentence, SIGTERM. */
  run("sleep 30", 1, 0, 0, &res);
  CHECK_INT(res.err, P3_ETIMEOUT);
  CHECK(res.password == NULL);
  CHECK_STR(res.message, "password command `sleep 30' did not finish within 1 s; killed");
  CHECK(res.seconds >= 0.9 && res.seconds < 2.5);
  CHECK(proc_dead(res.pid));

  /* The whole group dies, not only the shell. */
  snprintf(pidfile, sizeof pidfile, "%s/group.pid", tmpdir);
  snprintf(cmd, sizeof cmd, "sleep 31 & echo $! >'%s'; wait", pidfile);
  run(cmd, 1, 0, 0, &res);
  CHECK_INT(res.err, P3_ETIMEOUT);
  pid = read_pid_file(pidfile);
  CHECK(pid > 0);
  if (pid > 0) {
    CHECK(wait_dead(pid, 2));
    kill(pid, SIGKILL);
  }

  /* SIGTERM ignored: SIGKILL about 2 s later. */
  run("trap '' TERM; sleep 30; echo late", 1, 0, 0, &res);
  CHECK_INT(res.err, P3_ETIMEOUT);
  CHECK(res.seconds >= 2.5 && res.seconds < 5);

  /* Foreground: only the child is killed (the group is ours: we are alive
   * to check).  dash does not exec the last command of -c by itself. */
  run("exec sleep 30", 1, 1, 0, &res);
  CHECK_INT(res.err, P3_ETIMEOUT);
  CHECK(res.seconds < 2.5);
  CHECK(proc_dead(res.pid));

  /* 0 means the default, not "now". */
  run("echo quick", 0, 0, 0, &res);
  CHECK_INT(res.err, 0);
  free(res.password);
}

/* The child exits but something it started keeps its stdout open. */
static void test_leftover(void) {
  struct result res;
  char cmd[600], pidfile[300];
  int pid;

  snprintf(pidfile, sizeof pidfile, "%s/left.pid", tmpdir);
  /* A complete line: no waiting at all. */
  snprintf(cmd, sizeof cmd, "(sleep 32 & echo $! >'%s'); echo pw", pidfile);
  run(cmd, 30, 0, 0, &res);
  CHECK_INT(res.err, 0);
  CHECK_STR(res.password, "pw");
  CHECK(res.seconds < 0.45);
  free(res.password);
  pid = read_pid_file(pidfile);
  CHECK(pid > 0);
  if (pid > 0)
    kill(pid, SIGKILL);

  /* No newline yet: a short grace, then what was read. */
  snprintf(cmd, sizeof cmd, "(sleep 33 & echo $! >'%s'); printf pw", pidfile);
  run(cmd, 30, 0, 0, &res);
  CHECK_INT(res.err, 0);
  CHECK_STR(res.password, "pw");
  CHECK(res.seconds >= 0.4 && res.seconds < 2);
  free(res.password);
  pid = read_pid_file(pidfile);
  CHECK(pid > 0);
  if (pid > 0)
    kill(pid, SIGKILL);

  /* Foreground mode too. */
  snprintf(cmd, sizeof cmd, "(sleep 34 & echo $! >'%s'); printf pw", pidfile);
  run(cmd, 30, 1, 0, &res);
  CHECK_INT(res.err, 0);
  CHECK(res.seconds < 2);
  free(res.password);
  pid = read_pid_file(pidfile);
  if (pid > 0)
    kill(pid, SIGKILL);

  /* Timeout with a leftover that ignores SIGTERM and escaped the group:
   * still bounded (SIGKILL + 1 s). */
  snprintf(cmd, sizeof cmd, "setsid sh -c 'trap \"\" TERM; sleep 35' & echo $! >'%s'; sleep 30",
           pidfile);
  run(cmd, 1, 0, 0, &res);
  CHECK_INT(res.err, P3_ETIMEOUT);
  CHECK(res.seconds < 5);
  pid = read_pid_file(pidfile);
  if (pid > 0) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
  }
}

static void test_cancel(void) {
  struct result res;
  char cmd[600], pidfile[300];
  int pid;

  run("sleep 30", 30, 0, 200, &res);
  CHECK_INT(res.err, P3_ECANCELED);
  CHECK(res.password == NULL);
  CHECK_STR(res.message, "password command `sleep 30' was stopped before it finished");
  CHECK(res.seconds < 1.5);
  CHECK(proc_dead(res.pid));

  /* The group. */
  snprintf(pidfile, sizeof pidfile, "%s/cancel.pid", tmpdir);
  snprintf(cmd, sizeof cmd, "sleep 36 & echo $! >'%s'; wait", pidfile);
  run(cmd, 30, 0, 300, &res);
  CHECK_INT(res.err, P3_ECANCELED);
  pid = read_pid_file(pidfile);
  CHECK(pid > 0);
  if (pid > 0) {
    CHECK(wait_dead(pid, 2));
    kill(pid, SIGKILL);
  }

  /* Foreground. */
  run("exec sleep 30", 30, 1, 200, &res);
  CHECK_INT(res.err, P3_ECANCELED);
  CHECK(res.seconds < 1.5);

  /* After the exit, while only output is awaited. */
  snprintf(cmd, sizeof cmd, "(sleep 37 & echo $! >'%s'); printf pw", pidfile);
  run(cmd, 30, 0, 250, &res);
  CHECK_INT(res.err, P3_ECANCELED);
  CHECK(res.seconds < 0.45);
  pid = read_pid_file(pidfile);
  if (pid > 0)
    kill(pid, SIGKILL);
}

/* A signal mask of the command (the shell, exec'd into grep), from /proc/self/status. */
static unsigned long long proc_status_mask(const char *field) {
  struct result res;
  char cmd[128];
  unsigned long long v = ~0ULL;

  /* exec: the process that reads is the one whose mask is read.  Read from
   * another process, /proc/$$/status could catch the shell in the moment
   * around fork() when it blocks every signal itself (dash's forkshell). */
  snprintf(cmd, sizeof(cmd), "exec grep '^%s:' /proc/self/status", field);
  run(cmd, 10, 0, 0, &res);
  CHECK_INT(res.err, 0);
  if (res.password != NULL && strlen(res.password) > strlen(field) + 1)
    v = strtoull(res.password + strlen(field) + 1, NULL, 16);
  free(res.password);
  return v;
}

/* The command's shell holds exactly stdin, stdout, stderr and what this
 * process had open without FD_CLOEXEC. */
static void check_child_fds(void) {
  char want[1024] = "", got[1024] = "";
  char *p, *end;
  struct result res;
  DIR *d;
  struct dirent *de;
  int seen[1024] = {0};
  int i, dfd;

  seen[0] = seen[1] = seen[2] = 1;
  d = opendir("/proc/self/fd");
  CHECK(d != NULL);
  if (d == NULL)
    return;
  dfd = dirfd(d);
  while ((de = readdir(d)) != NULL) {
    int fd = atoi(de->d_name);
    if (de->d_name[0] == '.' || fd == dfd || fd < 0 || fd >= 1024)
      continue;
    if (!(fcntl(fd, F_GETFD) & FD_CLOEXEC))
      seen[fd] = 1;
  }
  closedir(d);
  for (i = 0; i < 1024; i++)
    if (seen[i])
      snprintf(want + strlen(want), sizeof(want) - strlen(want), "%d ", i);

  /* The glob's own directory descriptor is closed again by the time the
   * loop tests each name. */
  run("cd /proc/$$/fd && for f in *; do [ -e \"$f\" ] && printf '%s ' \"$f\"; done; echo", 10, 0, 0,
      &res);
  CHECK_INT(res.err, 0);
  if (res.password == NULL)
    return;
  memset(seen, 0, sizeof(seen));
  for (p = res.password;; p = end) {
    long fd = strtol(p, &end, 10);
    if (end == p)
      break;
    if (fd >= 0 && fd < 1024)
      seen[fd] = 1;
  }
  for (i = 0; i < 1024; i++)
    if (seen[i])
      snprintf(got + strlen(got), sizeof(got) - strlen(got), "%d ", i);
  CHECK_STR(got, want);
  free(res.password);
}

static void test_clean_slate(void) {
  char cmd[256];
  int fd;

  /* No descriptor of ours reaches the command. */
  fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  CHECK(fd > 2);
  snprintf(cmd, sizeof(cmd), "test -e /proc/$$/fd/%d && echo leaked || echo clean", fd);
  expect_ok(cmd, "clean");
  close(fd);
  check_child_fds();

  /* Whatever the caller ignores or blocks, the command starts clean. */
  signal(SIGPIPE, SIG_IGN);
  {
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, &old);
    CHECK_INT(proc_status_mask("SigIgn") & (1ULL << (SIGPIPE - 1)), 0);
    CHECK_INT(proc_status_mask("SigBlk") & (1ULL << (SIGTERM - 1)), 0);
    sigprocmask(SIG_SETMASK, &old, NULL);
  }
  signal(SIGPIPE, SIG_DFL);
}

int main(void) {
  const char *base = getenv("TMPDIR");
  int fds;

  snprintf(tmpdir, sizeof(tmpdir), "%s/test_pwcmd.XXXXXX", base && *base ? base : "/tmp");
  if (mkdtemp(tmpdir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  /* libuv keeps a process-wide pipe once signals are watched: count after
   * the first run. */
  expect_ok("echo warm-up", "warm-up");
  fds = count_fds();
  test_args();
  test_output();
  test_groups();
  test_timeout();
  test_leftover();
  test_cancel();
  test_clean_slate();
  CHECK_INT(count_fds(), fds);

  {
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
      fprintf(stderr, "could not remove %s\n", tmpdir);
  }
  return check_result("test_pwcmd");
}

#include "config.h"

#include "hook.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "check.h"
#include "errors.h"
#include "worker_proto.h"

/* The value of key in envp, or NULL. */
static const char *env_value(char **envp, const char *key) {
  size_t kl = strlen(key);
  for (size_t i = 0; envp[i]; i++)
    if (strncmp(envp[i], key, kl) == 0 && envp[i][kl] == '=')
      return envp[i] + kl + 1;
  return NULL;
}

/* A hook request needs no server, Maildir or state_dir; every hook field,
 * the server's hostile text included, survives the trip. */
static void test_request_round_trip(void) {
  struct worker_request q, back;
  memset(&q, 0, sizeof q);
  q.account = "work";
  q.user = "alice";
  q.uid = 1000;
  q.gid = 1001;
  q.keep_days = -1;
  q.hook_command = "notmuch new";
  q.hook_event = "failure";
  q.hook_error = "server said: -ERR $(rm -rf ~); x\nline two\\";
  q.hook_messages = 3;
  q.hook_bytes = 5000000000ull; /* more than 32 bits */
  q.hook_exit = 75;
  q.hook_timeout_s = 9;
  char *buf, err[200] = "";
  size_t len;
  CHECK_INT(worker_request_format(&q, &buf, &len), 0);
  CHECK_INT(worker_request_parse(buf, len, &back, err, sizeof err), 0);
  CHECK_STR(back.account, "work");
  CHECK_STR(back.user, "alice");
  CHECK_INT(back.uid, 1000);
  CHECK_STR(back.hook_command, "notmuch new");
  CHECK_STR(back.hook_event, "failure");
  CHECK_STR(back.hook_error, "server said: -ERR $(rm -rf ~); x\nline two\\");
  CHECK_INT(back.hook_messages, 3);
  CHECK(back.hook_bytes == 5000000000ull);
  CHECK_INT(back.hook_exit, 75);
  CHECK_INT(back.hook_timeout_s, 9);
  CHECK(back.server == NULL && back.maildir == NULL && back.state_dir == NULL);
  worker_request_free(&back);
  free(buf);

  /* Without hook_event it is refused; a fetch request still needs its fields. */
  q.hook_event = NULL;
  CHECK_INT(worker_request_format(&q, &buf, &len), 0);
  CHECK_INT(worker_request_parse(buf, len, &back, err, sizeof err), -EINVAL);
  CHECK_STR(err, "worker hook request lacks account or hook_event");
  worker_request_free(&back);
  free(buf);
  q.hook_command = NULL;
  CHECK_INT(worker_request_format(&q, &buf, &len), 0);
  CHECK_INT(worker_request_parse(buf, len, &back, err, sizeof err), -EINVAL);
  worker_request_free(&back);
  free(buf);
}

static void test_env(void) {
  struct worker_request q;
  memset(&q, 0, sizeof q);
  q.account = "work";
  q.hook_event = "failure";
  q.hook_error = "bad\x01thing\x7f\n";
  q.hook_messages = 2;
  q.hook_bytes = 4096;
  q.hook_exit = 69;
  char *env[] = {"HOME=/home/alice",
                 "USER=alice",
                 "LOGNAME=alice",
                 "PATH=/home/alice/bin:/usr/bin",
                 "LANG=C.UTF-8",
                 "LC_TIME=en_GB.UTF-8",
                 "SECRET_TOKEN=xyz",
                 "NOTIFY_SOCKET=/run/systemd/notify",
                 "XDG_RUNTIME_DIR=/run/user/1000",
                 "DISPLAY=:0",
                 NULL};
  char **envp;
  /* A user's own daemon: its PATH and the desktop session go through. */
  CHECK_INT(hook_env(&q, env, 0, NULL, &envp), 0);
  CHECK_STR(env_value(envp, "POP3SYNC_EVENT"), "failure");
  CHECK_STR(env_value(envp, "POP3SYNC_ACCOUNT"), "work");
  CHECK_STR(env_value(envp, "POP3SYNC_MESSAGES"), "2");
  CHECK_STR(env_value(envp, "POP3SYNC_BYTES"), "4096");
  CHECK_STR(env_value(envp, "POP3SYNC_ERROR"), "bad?thing??");
  CHECK_STR(env_value(envp, "POP3SYNC_EXIT"), "69");
  CHECK_STR(env_value(envp, "HOME"), "/home/alice");
  CHECK_STR(env_value(envp, "USER"), "alice");
  CHECK_STR(env_value(envp, "LOGNAME"), "alice");
  CHECK_STR(env_value(envp, "LANG"), "C.UTF-8");
  CHECK_STR(env_value(envp, "LC_TIME"), "en_GB.UTF-8");
  CHECK_STR(env_value(envp, "PATH"), "/home/alice/bin:/usr/bin");
  CHECK_STR(env_value(envp, "XDG_RUNTIME_DIR"), "/run/user/1000");
  CHECK_STR(env_value(envp, "DISPLAY"), ":0");
  CHECK(env_value(envp, "SECRET_TOKEN") == NULL);
  CHECK(env_value(envp, "NOTIFY_SOCKET") == NULL);
  hook_env_free(envp);

  /* Root's worker: a fixed PATH, root's session never, the user's own one. */
  q.hook_error = NULL;
  CHECK_INT(hook_env(&q, env, 1, "/run/user/1000", &envp), 0);
  CHECK_STR(env_value(envp, "POP3SYNC_ERROR"), "");
  CHECK_STR(env_value(envp, "PATH"), "/usr/local/bin:/usr/bin:/bin");
  CHECK_STR(env_value(envp, "XDG_RUNTIME_DIR"), "/run/user/1000");
  CHECK_STR(env_value(envp, "DBUS_SESSION_BUS_ADDRESS"), "unix:path=/run/user/1000/bus");
  CHECK(env_value(envp, "DISPLAY") == NULL);
  CHECK(env_value(envp, "SECRET_TOKEN") == NULL);
  hook_env_free(envp);
  CHECK_INT(hook_env(&q, env, 1, NULL, &envp), 0);
  CHECK(env_value(envp, "XDG_RUNTIME_DIR") == NULL);
  hook_env_free(envp);
  /* No PATH at all: the fixed one. */
  char *bare[] = {NULL};
  CHECK_INT(hook_env(&q, bare, 0, NULL, &envp), 0);
  CHECK_STR(env_value(envp, "PATH"), "/usr/local/bin:/usr/bin:/bin");
  hook_env_free(envp);
}

struct outcome {
  int called, err;
  char message[512];
  uint64_t ms;
  uv_loop_t *loop;
};

static void on_done(void *data, int err, const char *message) {
  struct outcome *o = data;
  o->called++;
  o->err = err;
  snprintf(o->message, sizeof o->message, "%s", message);
  o->ms = uv_now(o->loop);
}

/* Runs command to its end; returns how long it took (ms). */
static uint64_t run(const char *command, char **envp, unsigned timeout_s, struct outcome *o) {
  uv_loop_t loop;
  struct hook_exec *x;
  uv_loop_init(&loop);
  memset(o, 0, sizeof *o);
  o->loop = &loop;
  uint64_t start = uv_now(&loop);
  CHECK_INT(hook_exec_start(&loop, command, envp, timeout_s, on_done, o, &x), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&loop), 0);
  CHECK_INT(o->called, 1);
  return o->ms - start;
}

static void test_exec(void) {
  struct outcome o;
  char *envp[] = {"PATH=/usr/bin:/bin", "POP3SYNC_ERROR=$(touch x); y", NULL};
  run("test \"$POP3SYNC_ERROR\" = '$(touch x); y' && test -z \"$HOME\"", envp, 5, &o);
  CHECK_INT(o.err, 0);
  CHECK_STR(o.message, "hook `test \"$POP3SYNC_ERROR\" = '$(touch x); y' && test -z \"$HOME\"' "
                       "finished");
  run("echo 'first\x01line'; echo second >&2; exit 3", envp, 5, &o);
  CHECK_INT(o.err, P3_EWORKER);
  CHECK_STR(o.message, "hook `echo 'first\x01line'; echo second >&2; exit 3' exited with status 3: "
                       "first?line");
  run("echo oops >&2; kill -9 $$", envp, 5, &o);
  CHECK_INT(o.err, P3_EWORKER);
  CHECK(strstr(o.message, "was killed by signal 9") != NULL);
  CHECK(strstr(o.message, ": oops") != NULL);
  /* Stdin is /dev/null: cat ends at once. */
  run("cat", envp, 5, &o);
  CHECK_INT(o.err, 0);
  /* A hang is killed after the timeout; a child holding the output pipe
   * does not hold the result. */
  uint64_t ms = run("echo started; sleep 4 & sleep 4", envp, 1, &o);
  CHECK_INT(o.err, P3_ETIMEOUT);
  CHECK_STR(o.message, "hook `echo started; sleep 4 & sleep 4' did not finish within 1 s; "
                       "killed: started");
  CHECK(ms >= 1000 && ms < 3000);
  /* A command that ignores SIGTERM gets SIGKILL 2 s later. */
  ms = run("trap '' TERM; while :; do sleep 0.1; done", envp, 1, &o);
  CHECK_INT(o.err, P3_ETIMEOUT);
  CHECK(ms >= 3000 && ms < 6000);
  /* Bad arguments: no callback. */
  uv_loop_t loop;
  struct hook_exec *x;
  uv_loop_init(&loop);
  CHECK_INT(hook_exec_start(&loop, "", envp, 1, on_done, &o, &x), -EINVAL);
  CHECK_INT(uv_loop_close(&loop), 0);
}

int main(void) {
  test_request_round_trip();
  test_env();
  test_exec();
  return check_result("test_hook");
}

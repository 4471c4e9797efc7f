#include "config.h"

#include "hook.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "errors.h"
#include "human.h"
#include "json.h"
#include "log.h"
#include "pwcmd.h"
#include "worker_run.h"

#define HOOK_DEFAULT_TIMEOUT_S 60
#define HOOK_KILL_GRACE_MS 2000
#define HOOK_PATH "/usr/local/bin:/usr/bin:/bin"
/* How much of a command a message quotes. */
#define HOOK_QUOTE 80

/* ==== the daemon's side */

/* One account's hooks: the one running and at most one waiting. */
struct hentry {
  struct hooks *h;
  struct hentry *next;
  char *account;
  char event[16]; /* of the running one */
  struct worker_run *w;
  uint64_t started_ms;
  struct worker_request *pending; /* owned, or NULL */
};

struct hooks {
  uv_loop_t *loop;
  const char *exe;
  hooks_event_cb event_cb;
  void *event_data;
  struct hentry *list;
  size_t running;
  int shutting_down;
  void (*idle_cb)(void *data);
  void *idle_data;
};

int hooks_new(uv_loop_t *loop, struct hooks **h_r) {
  struct hooks *h = calloc(1, sizeof *h);
  *h_r = NULL;
  if (h == NULL)
    return -ENOMEM;
  h->loop = loop;
  *h_r = h;
  return 0;
}

void hooks_set_worker_exe(struct hooks *h, const char *exe) {
  h->exe = exe;
}

void hooks_set_event_cb(struct hooks *h, hooks_event_cb cb, void *data) {
  h->event_cb = cb;
  h->event_data = data;
}

size_t hooks_running(const struct hooks *h) {
  return h->running;
}

const char *hook_key(const char *event) {
  return strcmp(event, "new_mail") == 0 ? "on_new_mail" : "on_failure";
}

static void free_request(struct worker_request *q) {
  if (q == NULL)
    return;
  worker_request_free(q);
  free(q);
}

/* A hook request owning copies of job's strings, or NULL (out of memory). */
static struct worker_request *job_request(const struct hook_job *j) {
  struct worker_request *q = calloc(1, sizeof *q);
  if (q == NULL)
    return NULL;
  q->account = strdup(j->account);
  q->user = j->user ? strdup(j->user) : NULL;
  q->uid = j->uid;
  q->gid = j->gid;
  q->hook_command = strdup(j->command);
  q->hook_event = strdup(j->event);
  q->hook_error = j->error ? strdup(j->error) : NULL;
  q->hook_messages = j->messages;
  q->hook_bytes = j->bytes;
  q->hook_exit = j->exit < 0 ? 255 : j->exit > 255 ? 255 : (unsigned)j->exit;
  q->hook_timeout_s = j->timeout_s ? j->timeout_s : HOOK_DEFAULT_TIMEOUT_S;
  q->verbose = log_verbose();
  q->keep_days = -1;
  if (q->account == NULL || (j->user && q->user == NULL) || q->hook_command == NULL ||
      q->hook_event == NULL || (j->error && q->hook_error == NULL)) {
    free_request(q);
    return NULL;
  }
  return q;
}

/* Logs one hook's end and sends the `hook' event.  err 0: it succeeded. */
static void hook_reported(struct hooks *h, const char *account, const char *event, int err,
                          const char *message, uint64_t ms) {
  char took[32];
  human_duration(ms, took, sizeof took);
  if (err)
    log_info("%s: %s (%s): %s (after %s)", account, hook_key(event), event, message, took);
  else
    log_debug("%s: %s (%s): %s in %s", account, hook_key(event), event, message, took);
  if (h->event_cb == NULL)
    return;
  struct jbuf b;
  jbuf_init(&b);
  jbuf_obj_begin(&b);
  jbuf_key(&b, "event");
  jbuf_str(&b, "hook");
  jbuf_key(&b, "time");
  jbuf_time(&b, time(NULL));
  jbuf_key(&b, "account");
  jbuf_str(&b, account);
  jbuf_key(&b, "hook");
  jbuf_str(&b, event);
  jbuf_key(&b, "result");
  jbuf_str(&b, err ? "error" : "ok");
  jbuf_key(&b, "error");
  jbuf_str(&b, err ? message : NULL);
  jbuf_key(&b, "milliseconds");
  jbuf_uint(&b, ms);
  jbuf_obj_end(&b);
  if (!b.err)
    h->event_cb(h->event_data, account, b.data, 0);
  jbuf_free(&b);
}

static void on_hook_done(void *data, const struct worker_outcome *o);

/* Starts the entry's waiting hook, if any, until one starts; an entry with
 * nothing left to run is unlinked and freed. */
static void advance(struct hentry *e) {
  struct hooks *h = e->h;
  static const struct worker_run_ops ops = {.done = on_hook_done};
  while (e->pending != NULL && !h->shutting_down) {
    struct worker_request *q = e->pending;
    char errbuf[256];
    e->pending = NULL;
    snprintf(e->event, sizeof e->event, "%s", q->hook_event);
    e->started_ms = uv_now(h->loop);
    int err = worker_run_start(h->loop, h->exe, q, &ops, e, &e->w, errbuf, sizeof errbuf);
    free_request(q);
    if (err == 0) {
      h->running++;
      log_debug("%s: running %s (%s)", e->account, hook_key(e->event), e->event);
      return;
    }
    hook_reported(h, e->account, e->event, err, errbuf, 0);
  }
  free_request(e->pending);
  struct hentry **pp = &h->list;
  while (*pp != e)
    pp = &(*pp)->next;
  *pp = e->next;
  free(e->account);
  free(e);
}

static void on_hook_done(void *data, const struct worker_outcome *o) {
  struct hentry *e = data;
  struct hooks *h = e->h;
  const struct worker_report *rep = o->report;
  char buf[320];
  const char *message;
  int err;
  if (rep->done) {
    err = rep->r.err;
    message = rep->r.message;
  } else {
    err = P3_EWORKER;
    if (o->silenced)
      snprintf(buf, sizeof buf, "hook worker killed: not a word from it for 60 s (stopped?)");
    else if (o->signal_name)
      snprintf(buf, sizeof buf, "hook worker killed by signal %d (%s)", o->term_signal,
               o->signal_name);
    else
      snprintf(buf, sizeof buf, "hook worker exited with status %d without a result",
               o->exit_status);
    message = buf;
  }
  hook_reported(h, e->account, e->event, err, message, uv_now(h->loop) - e->started_ms);
  worker_run_free(e->w);
  e->w = NULL;
  assert(h->running > 0);
  h->running--;
  advance(e);
  if (h->shutting_down && h->idle_cb)
    h->idle_cb(h->idle_data);
}

int hooks_fire(struct hooks *h, const struct hook_job *job) {
  struct hentry *e;
  if (h->shutting_down)
    return P3_ECANCELED;
  for (e = h->list; e != NULL; e = e->next)
    if (strcmp(e->account, job->account) == 0)
      break;
  if (e != NULL && e->pending != NULL) {
    log_info("%s: %s (%s) not run: two hooks of the account are running or waiting already",
             job->account, hook_key(job->event), job->event);
    return 0;
  }
  struct worker_request *q = job_request(job);
  if (q == NULL)
    return -ENOMEM;
  if (e != NULL) {
    e->pending = q; /* runs once the running one is done */
    return 0;
  }
  e = calloc(1, sizeof *e);
  if (e == NULL || (e->account = strdup(job->account)) == NULL) {
    free(e);
    free_request(q);
    return -ENOMEM;
  }
  e->h = h;
  e->pending = q;
  e->next = h->list;
  h->list = e;
  advance(e);
  return 0;
}

void hooks_shutdown(struct hooks *h, unsigned grace_ms, void (*idle_cb)(void *data), void *data) {
  h->shutting_down = 1;
  h->idle_cb = idle_cb;
  h->idle_data = data;
  for (struct hentry *e = h->list; e != NULL; e = e->next) {
    free_request(e->pending);
    e->pending = NULL;
    if (e->w)
      worker_run_stop(e->w, grace_ms);
  }
}

void hooks_free(struct hooks *h) {
  if (h == NULL)
    return;
  assert(h->running == 0);
  while (h->list) {
    struct hentry *e = h->list;
    h->list = e->next;
    free_request(e->pending);
    free(e->account);
    free(e);
  }
  free(h);
}

/* ==== the worker's side */

/* "KEY=VALUE" appended to envp[*n]; VALUE with control characters replaced
 * when clean is set.  Returns 0 or -ENOMEM. */
static int env_add(char **envp, size_t *n, const char *key, const char *value, int clean) {
  size_t kl = strlen(key), vl = strlen(value);
  char *s = malloc(kl + 1 + vl + 1);
  if (s == NULL)
    return -ENOMEM;
  memcpy(s, key, kl);
  s[kl] = '=';
  for (size_t i = 0; i < vl; i++) {
    unsigned char c = (unsigned char)value[i];
    s[kl + 1 + i] = clean && (c < 0x20 || c == 0x7f) ? '?' : (char)c;
  }
  s[kl + 1 + vl] = '\0';
  envp[(*n)++] = s;
  return 0;
}

/* The value of key in env ("KEY=VALUE" strings), or NULL. */
static const char *env_get(char *const *env, const char *key) {
  size_t kl = strlen(key);
  for (size_t i = 0; env && env[i]; i++)
    if (strncmp(env[i], key, kl) == 0 && env[i][kl] == '=')
      return env[i] + kl + 1;
  return NULL;
}

int hook_env(const struct worker_request *req, char *const *env, int as_root,
             const char *runtime_dir, char ***env_r) {
  static const char *const kept[] = {"HOME", "USER", "LOGNAME", "LANG", "TZ"};
  static const char *const session[] = {"XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS", "DISPLAY",
                                        "WAYLAND_DISPLAY"};
  size_t count = 0, n = 0;
  char num[32];
  int err = 0;
  *env_r = NULL;
  while (env && env[count])
    count++;
  /* Ours, the kept ones, PATH, the session's, LC_*: at most this many. */
  char **envp = calloc(count + 20, sizeof *envp);
  if (envp == NULL)
    return -ENOMEM;
  err |= env_add(envp, &n, "POP3SYNC_EVENT", req->hook_event ? req->hook_event : "", 1);
  err |= env_add(envp, &n, "POP3SYNC_ACCOUNT", req->account ? req->account : "", 1);
  snprintf(num, sizeof num, "%" PRIu64, req->hook_messages);
  err |= env_add(envp, &n, "POP3SYNC_MESSAGES", num, 1);
  snprintf(num, sizeof num, "%" PRIu64, req->hook_bytes);
  err |= env_add(envp, &n, "POP3SYNC_BYTES", num, 1);
  err |= env_add(envp, &n, "POP3SYNC_ERROR", req->hook_error ? req->hook_error : "", 1);
  snprintf(num, sizeof num, "%u", req->hook_exit);
  err |= env_add(envp, &n, "POP3SYNC_EXIT", num, 1);
  for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++) {
    const char *v = env_get(env, kept[i]);
    if (v != NULL)
      err |= env_add(envp, &n, kept[i], v, 0);
  }
  for (size_t i = 0; env && env[i] && n < count + 19; i++)
    if (strncmp(env[i], "LC_", 3) == 0 && strchr(env[i], '=') != NULL) {
      char *s = strdup(env[i]);
      if (s == NULL)
        err = -ENOMEM;
      else
        envp[n++] = s;
    }
  const char *path = as_root ? NULL : env_get(env, "PATH");
  err |= env_add(envp, &n, "PATH", path && path[0] ? path : HOOK_PATH, 0);
  if (as_root && runtime_dir != NULL) {
    char bus[4200];
    snprintf(bus, sizeof bus, "unix:path=%s/bus", runtime_dir);
    err |= env_add(envp, &n, "XDG_RUNTIME_DIR", runtime_dir, 0);
    err |= env_add(envp, &n, "DBUS_SESSION_BUS_ADDRESS", bus, 0);
  } else if (!as_root) {
    for (size_t i = 0; i < sizeof session / sizeof session[0]; i++) {
      const char *v = env_get(env, session[i]);
      if (v != NULL)
        err |= env_add(envp, &n, session[i], v, 0);
    }
  }
  if (err) {
    hook_env_free(envp);
    return -ENOMEM;
  }
  *env_r = envp;
  return 0;
}

void hook_env_free(char **envp) {
  if (envp == NULL)
    return;
  for (size_t i = 0; envp[i]; i++)
    free(envp[i]);
  free(envp);
}

struct hook_exec {
  uv_process_t proc;
  uv_pipe_t out;
  uv_timer_t timer;
  hook_exec_cb cb;
  void *data;
  char *command;
  unsigned timeout_s;
  int pid;       /* 0 once reaped */
  int spawn_err; /* libuv's, when it did not start */
  int exited, out_open, closing, handles;
  int err;   /* P3_ETIMEOUT or P3_ECANCELED once decided */
  int stage; /* 0, 1: SIGTERM sent, 2: SIGKILL sent */
  int64_t exit_status;
  int term_signal;
  char first[200]; /* the start of its output */
  size_t first_len;
  char readbuf[4096];
};

static void exec_timer(uv_timer_t *t);

static void exec_closed(uv_handle_t *hd) {
  struct hook_exec *x = hd->data;
  char message[512], why[sizeof x->first + 4];
  int err = 0;
  if (--x->handles > 0)
    return;
  pwcmd_output_suffix(x->first, x->first_len, why, sizeof why);
  if (x->spawn_err) {
    err = P3_EWORKER;
    snprintf(message, sizeof message, "hook `%.*s' could not be started: %s", HOOK_QUOTE,
             x->command, uv_strerror(x->spawn_err));
  } else if (x->err == P3_ETIMEOUT) {
    err = P3_ETIMEOUT;
    snprintf(message, sizeof message, "hook `%.*s' did not finish within %u s; killed%s",
             HOOK_QUOTE, x->command, x->timeout_s, why);
  } else if (x->err == P3_ECANCELED) {
    err = P3_ECANCELED;
    snprintf(message, sizeof message, "hook `%.*s' was stopped before it finished", HOOK_QUOTE,
             x->command);
  } else if (x->err == P3_EWORKER) {
    err = P3_EWORKER;
    snprintf(message, sizeof message, "hook `%.*s' was killed: its output could not be read",
             HOOK_QUOTE, x->command);
  } else if (x->term_signal) {
    err = P3_EWORKER;
    snprintf(message, sizeof message, "hook `%.*s' was killed by signal %d (%s)%s", HOOK_QUOTE,
             x->command, x->term_signal, strsignal(x->term_signal), why);
  } else if (x->exit_status != 0) {
    err = P3_EWORKER;
    snprintf(message, sizeof message, "hook `%.*s' exited with status %lld%s", HOOK_QUOTE,
             x->command, (long long)x->exit_status, why);
  } else {
    snprintf(message, sizeof message, "hook `%.*s' finished", HOOK_QUOTE, x->command);
  }
  hook_exec_cb cb = x->cb;
  void *data = x->data;
  free(x->command);
  free(x);
  cb(data, err, message);
}

static void keep_output(struct hook_exec *x, const char *p, size_t n) {
  size_t room = sizeof x->first - x->first_len;
  if (n > room)
    n = room;
  memcpy(x->first + x->first_len, p, n);
  x->first_len += n;
}

static void close_out(struct hook_exec *x) {
  if (!x->out_open)
    return;
  x->out_open = 0;
  /* What it wrote just before it exited may not have been read yet. */
  int fd;
  if (uv_fileno((uv_handle_t *)&x->out, &fd) == 0)
    for (int i = 0; i < 4 && x->first_len < sizeof x->first; i++) {
      ssize_t r = read(fd, x->readbuf, sizeof x->readbuf);
      if (r <= 0)
        break;
      keep_output(x, x->readbuf, (size_t)r);
    }
  uv_read_stop((uv_stream_t *)&x->out);
  uv_close((uv_handle_t *)&x->out, exec_closed);
}

static void maybe_finish(struct hook_exec *x) {
  if (x->closing || !x->exited)
    return;
  x->closing = 1;
  close_out(x);
  uv_close((uv_handle_t *)&x->timer, exec_closed);
  uv_close((uv_handle_t *)&x->proc, exec_closed);
}

static void start_kill(struct hook_exec *x, int err) {
  if (x->err == 0)
    x->err = err;
  if (x->stage != 0 || x->exited)
    return;
  x->stage = 1;
  if (x->pid > 0)
    (void)uv_kill(x->pid, SIGTERM);
  uv_timer_start(&x->timer, exec_timer, HOOK_KILL_GRACE_MS, 0);
}

static void exec_timer(uv_timer_t *t) {
  struct hook_exec *x = t->data;
  if (x->stage == 0) {
    start_kill(x, P3_ETIMEOUT);
  } else if (x->stage == 1 && !x->exited) {
    x->stage = 2;
    if (x->pid > 0)
      (void)uv_kill(x->pid, SIGKILL);
  }
}

static void exec_exit(uv_process_t *p, int64_t exit_status, int term_signal) {
  struct hook_exec *x = p->data;
  x->exited = 1;
  x->pid = 0;
  x->exit_status = exit_status;
  x->term_signal = term_signal;
  /* What it left behind may hold the pipe: its output is not waited for
   * (the worker's group is killed when the worker ends). */
  maybe_finish(x);
}

static void exec_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf) {
  struct hook_exec *x = hd->data;
  (void)suggested;
  *buf = uv_buf_init(x->readbuf, sizeof x->readbuf);
}

static void exec_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  struct hook_exec *x = s->data;
  if (n < 0) {
    /* EOF or an error: the exit decides. */
    uv_read_stop(s);
    return;
  }
  keep_output(x, buf->base, (size_t)n);
}

int hook_exec_start(uv_loop_t *loop, const char *command, char **envp, unsigned timeout_s,
                    hook_exec_cb cb, void *data, struct hook_exec **x_r) {
  uv_file fds[2];
  *x_r = NULL;
  if (command == NULL || command[0] == '\0' || cb == NULL)
    return -EINVAL;
  struct hook_exec *x = calloc(1, sizeof *x);
  if (x == NULL || (x->command = strdup(command)) == NULL) {
    free(x);
    return -ENOMEM;
  }
  int r = uv_pipe(fds, 0, 0); /* both ends close-on-exec */
  if (r < 0) {
    free(x->command);
    free(x);
    return r;
  }
  x->cb = cb;
  x->data = data;
  x->timeout_s = timeout_s ? timeout_s : HOOK_DEFAULT_TIMEOUT_S;
  uv_pipe_init(loop, &x->out, 0);
  uv_timer_init(loop, &x->timer);
  x->out.data = x->timer.data = x->proc.data = x;
  x->handles = 3;
  if ((r = uv_pipe_open(&x->out, fds[0])) < 0) {
    close(fds[0]);
    close(fds[1]);
    x->spawn_err = r;
    x->exited = 1;
    x->closing = 1;
    uv_close((uv_handle_t *)&x->out, exec_closed);
    uv_close((uv_handle_t *)&x->timer, exec_closed);
    /* the process handle was never initialised: count it closed */
    x->handles--;
    *x_r = x;
    return 0;
  }
  x->out_open = 1;

  uv_stdio_container_t stdio[3];
  memset(stdio, 0, sizeof stdio);
  stdio[0].flags = UV_IGNORE; /* /dev/null */
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = fds[1];
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = fds[1];
  char *args[] = {(char *)"/bin/sh", (char *)"-c", x->command, NULL};
  uv_process_options_t opts;
  memset(&opts, 0, sizeof opts);
  opts.file = args[0];
  opts.args = args;
  opts.env = envp;
  opts.exit_cb = exec_exit;
  opts.stdio = stdio;
  opts.stdio_count = 3;
  r = uv_spawn(loop, &x->proc, &opts);
  close(fds[1]);
  if (r < 0) {
    x->spawn_err = r;
    x->exited = 1;
    x->closing = 1;
    x->out_open = 0;
    uv_close((uv_handle_t *)&x->out, exec_closed);
    uv_close((uv_handle_t *)&x->timer, exec_closed);
    uv_close((uv_handle_t *)&x->proc, exec_closed);
    *x_r = x;
    return 0;
  }
  x->pid = x->proc.pid;
  if (uv_read_start((uv_stream_t *)&x->out, exec_alloc, exec_read) < 0)
    start_kill(x, P3_EWORKER); /* killed: never reported as finished */
  else
    uv_timer_start(&x->timer, exec_timer, (uint64_t)x->timeout_s * 1000, 0);
  *x_r = x;
  return 0;
}

void hook_exec_cancel(struct hook_exec *x) {
  if (x->closing || x->err != 0)
    return;
  start_kill(x, P3_ECANCELED);
}

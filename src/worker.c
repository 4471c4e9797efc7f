#include "config.h"

#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <uv.h>

#include "buf.h"
#include "engine.h"
#include "errors.h"
#include "hook.h"
#include "journal_path.h"
#include "log.h"
#include "privsep.h"
#include "pwcmd.h"
#include "target.h"
#include "worker_proto.h"

/* Replies in flight are saved for this long after the daemon says stop; the
 * daemon kills the worker a little later (SHUTDOWN_GRACE_MS). */
#define WORKER_STOP_GRACE_MS 6000
/* Progress and trace lines beyond this much unsent are dropped. */
#define CHANNEL_QUEUE_MAX (1u << 20)

struct worker {
  uv_loop_t loop;
  struct worker_request req;
  uv_pipe_t chan;
  int chan_open;
  uv_signal_t sigterm, sigint;
  uv_timer_t progress;
  struct p3_target target;
  struct pwcmd *pwcmd;
  struct hook_exec *hook; /* a hook request's command (hook.h) */
  struct engine *engine;
  struct engine_options eo;
  uv_timer_t retry;         /* the second login after a refused OAuth token */
  int oauth_retried;        /* the token command ran again, the login was retried */
  char state_dir[PATH_MAX]; /* the user's state directory */
  char state_path[PATH_MAX];
  int stopping;
  int reported;
  int exit_status;
};

struct chan_write {
  uv_write_t req;
  char *buf;
};

static void on_chan_written(uv_write_t *req, int status) {
  struct chan_write *cw = req->data;
  free(cw->buf);
  free(cw);
}

/* Queues buf (malloc'd; ownership passes). */
static void chan_send(struct worker *w, char *buf, size_t len, int droppable) {
  if (!w->chan_open || (droppable && w->chan.write_queue_size > CHANNEL_QUEUE_MAX)) {
    free(buf);
    return;
  }
  struct chan_write *cw = malloc(sizeof *cw);
  if (cw == NULL) {
    free(buf);
    return;
  }
  cw->buf = buf;
  cw->req.data = cw;
  uv_buf_t b = uv_buf_init(buf, (unsigned)len);
  if (uv_write(&cw->req, (uv_stream_t *)&w->chan, &b, 1, on_chan_written) != 0) {
    free(buf);
    free(cw);
  }
}

static void send_line(struct worker *w, const char *key, const char *value, int droppable) {
  char *buf = NULL;
  size_t len = 0, cap = 0;
  if (worker_line_append(&buf, &len, &cap, key, value) == 0)
    chan_send(w, buf, len, droppable);
  else
    free(buf);
}

static void on_closed(uv_handle_t *h) {
}

static void close_all(struct worker *w) {
  uv_close((uv_handle_t *)&w->sigterm, on_closed);
  uv_close((uv_handle_t *)&w->sigint, on_closed);
  uv_close((uv_handle_t *)&w->progress, on_closed);
  uv_close((uv_handle_t *)&w->retry, on_closed);
  /* The channel closes after the queued result is written: uv_close
   * cancels pending writes, so shut the write side down first. */
}

static void on_chan_closed(uv_handle_t *h) {
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  struct worker *w = req->data;
  free(req);
  if (w->chan_open) {
    w->chan_open = 0;
    uv_close((uv_handle_t *)&w->chan, on_chan_closed);
  }
}

/* Sends the result and "done", then lets the loop end. */
static void report(struct worker *w, const struct engine_result *r) {
  if (w->reported)
    return;
  w->reported = 1;
  w->exit_status = engine_result_exit_code(r);
  char *buf;
  size_t len;
  if (worker_report_format(r, &buf, &len) == 0)
    chan_send(w, buf, len, 0);
  close_all(w);
  if (w->chan_open) {
    uv_shutdown_t *sd = malloc(sizeof *sd);
    if (sd) {
      sd->data = w;
      if (uv_shutdown(sd, (uv_stream_t *)&w->chan, on_shutdown) == 0)
        return;
      free(sd);
    }
    w->chan_open = 0;
    uv_close((uv_handle_t *)&w->chan, on_chan_closed);
  }
}

static void fail(struct worker *w, int err, const char *message) {
  struct engine_result r;
  memset(&r, 0, sizeof r);
  r.err = err;
  r.login_delay = -1;
  r.uids_unique = 1;
  snprintf(r.message, sizeof r.message, "%s", message);
  report(w, &r);
}

static void stop(struct worker *w) {
  if (w->stopping++)
    return;
  if (w->hook)
    hook_exec_cancel(w->hook);
  else if (w->pwcmd)
    pwcmd_cancel(w->pwcmd);
  else if (uv_is_active((uv_handle_t *)&w->retry))
    return; /* on_retry sees stopping */
  else if (w->engine)
    engine_stop(w->engine, WORKER_STOP_GRACE_MS);
  else if (!w->reported)
    fail(w, P3_ECANCELED, "stopped: the daemon is shutting down");
}

static void on_signal(uv_signal_t *h, int signum) {
  stop(h->data);
}

static void on_chan_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char scratch[256];
  *buf = uv_buf_init(scratch, sizeof scratch);
}

/* The daemon says nothing after the request; EOF means it is gone. */
static void on_chan_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  struct worker *w = s->data;
  if (n < 0) {
    uv_read_stop(s);
    stop(w);
  }
}

static void on_trace(void *data, const char *line) {
  send_line(data, "trace", line, 1);
}

static void on_progress(uv_timer_t *t) {
  struct worker *w = t->data;
  if (w->engine == NULL) {
    /* The daemon kills a worker it has not heard from in a while. */
    send_line(w, "alive", "", 1);
    return;
  }
  size_t done, total;
  uint64_t bytes;
  engine_progress(w->engine, &done, &total, &bytes);
  uint64_t bytes_total = engine_progress_bytes_total(w->engine);
  char line[128];
  snprintf(line, sizeof line, "%zu %zu %llu %llu", done, total, (unsigned long long)bytes,
           (unsigned long long)bytes_total);
  send_line(w, "progress", line, 1);
}

static void run_password_command(struct worker *w);

/* After the engine is done (not from inside its callback): a fresh token
 * and a fresh session. */
static void on_retry(uv_timer_t *t) {
  struct worker *w = t->data;
  engine_free(w->engine);
  w->engine = NULL;
  if (w->target.password) {
    explicit_bzero(w->target.password, strlen(w->target.password));
    free(w->target.password);
    w->target.password = NULL;
  }
  if (w->stopping)
    fail(w, P3_ECANCELED, "stopped: the daemon is shutting down");
  else
    run_password_command(w);
}

static void on_engine_done(struct engine *e, const struct engine_result *r, void *data) {
  struct worker *w = data;
  /* A refused OAuth token is often only expired: token helpers refresh it
   * when run again.  Once, in a fresh session. */
  if (r->err == P3_EOAUTH && w->req.password_command && !w->oauth_retried && !w->stopping) {
    w->oauth_retried = 1;
    log_info("%s: the server refused the token (%s); running the token command again",
             w->req.account, r->message);
    uv_timer_start(&w->retry, on_retry, 0, 0);
    return;
  }
  if (r->err == P3_EOAUTH && w->oauth_retried) {
    struct engine_result copy = *r;
    engine_result_token_refreshed(&copy);
    report(w, &copy);
    return;
  }
  report(w, r);
}

static void start_engine(struct worker *w) {
  if (w->stopping) {
    fail(w, P3_ECANCELED, "stopped: the daemon is shutting down");
    return;
  }
  struct engine_options *eo = &w->eo;
  eo->target = &w->target;
  eo->maildir = w->req.maildir;
  eo->ca_file = w->req.ca_file;
  memcpy(eo->pins, w->req.pins, sizeof eo->pins);
  eo->pin_count = w->req.pin_count;
  eo->timeout_s = w->req.timeout_s;
  eo->pipelining = w->req.pipelining;
  eo->window = w->req.window;
  eo->keep = w->req.keep;
  eo->keep_days = w->req.keep_days;
  eo->max_size = w->req.max_size;
  eo->no_utf8 = w->req.no_utf8;
  eo->auth = w->req.auth;
  eo->state_path = w->state_path;
  eo->who = "pop3syncd";
  if (w->req.verbose) {
    eo->trace = on_trace;
    eo->trace_data = w;
  }
  char errbuf[512];
  int err = engine_start(&w->loop, eo, on_engine_done, w, &w->engine, errbuf, sizeof errbuf);
  if (err) {
    fail(w, err, errbuf);
    return;
  }
}

static void on_password(void *data, int err, char *password, const char *message);

static void run_password_command(struct worker *w) {
  char errbuf[512];
  unsigned timeout = w->req.timeout_s ? w->req.timeout_s : 120;
  /* In the worker's own process group, which the daemon kills when the
   * worker ends: the daemon never signals a pid the worker names. */
  int err = pwcmd_start(&w->loop, w->req.password_command, timeout, PWCMD_CALLER_GROUP, on_password,
                        w, &w->pwcmd);
  if (err) {
    p3_set_error(errbuf, sizeof errbuf, "password command `%.200s': %s", w->req.password_command,
                 p3_strerror(err));
    fail(w, P3_EPWCMD, errbuf);
  }
}

static void on_password(void *data, int err, char *password, const char *message) {
  struct worker *w = data;
  w->pwcmd = NULL;
  if (err) {
    fail(w, err, message);
    return;
  }
  w->target.password = password;
  start_engine(w);
}

/* One mailbox, one journal (journal_path.h): the journal is named by the
 * mailbox the spec resolved to, in the user's state directory, where that
 * user's `pop3 dl' finds it too.  Journals under an older name are moved
 * there first: the daemon's ACCOUNT.state, and the user's `pop3 dl' journal
 * in the personal directory when `pop3 dl' now uses this one.  Returns 0, or
 * -1 after fail(). */
static int set_state_path(struct worker *w) {
  char msg[sizeof(((struct engine_result *)0)->message)], old[2][PATH_MAX], dir[PATH_MAX];
  const char *olds[2];
  size_t n = 0;
  int shared;
  if (journal_path(w->state_dir, &w->target.spec, w->state_path, sizeof w->state_path) != 0) {
    fail(w, P3_ESTATE, "state path too long");
    return -1;
  }
  if (snprintf(old[0], sizeof old[0], "%s/%s.state", w->state_dir, w->req.account) <
      (int)sizeof old[0])
    olds[n++] = old[0];
  if (journal_user_dir(NULL, dir, sizeof dir, &shared) == 0 && shared &&
      journal_same_dir(dir, w->state_dir) && journal_personal_dir(dir, sizeof dir) == 0 &&
      !journal_same_dir(dir, w->state_dir) &&
      journal_path(dir, &w->target.spec, old[1], sizeof old[1]) == 0)
    olds[n++] = old[1];
  for (size_t i = 0; i < n; i++) {
    int r = journal_migrate(olds[i], w->state_path, msg, sizeof msg);
    if (r == JOURNAL_MOVED) {
      log_info("%s: %s", w->req.account, msg);
    } else if (r == JOURNAL_KEPT) {
      log_warning("%s: warning: %s", w->req.account, msg);
    } else if (r < 0) {
      fail(w, r == P3_ELOCKED ? r : P3_ESTATE, msg);
      return -1;
    }
  }
  return 0;
}

static void resolve(struct worker *w) {
  char errbuf[512];
  int err = target_resolve(w->req.server, w->req.netrc, &w->target, errbuf, sizeof errbuf);
  if (err) {
    fail(w, err, errbuf);
    return;
  }
  if (set_state_path(w) != 0)
    return;
  if (w->req.password) {
    w->target.password = strdup(w->req.password);
    if (w->target.password == NULL) {
      fail(w, -ENOMEM, "out of memory");
      return;
    }
    start_engine(w);
    return;
  }
  if (w->req.password_command) {
    run_password_command(w);
    return;
  }
  err = target_password(&w->target, w->req.netrc, errbuf, sizeof errbuf);
  if (err) {
    fail(w, err, errbuf);
    return;
  }
  start_engine(w);
}

static void on_hook_done(void *data, int err, const char *message) {
  struct worker *w = data;
  w->hook = NULL;
  fail(w, err, message); /* err 0: a result without an error */
}

/* A hook request (hook.h): the user's command, as the user, with the run's
 * figures in a clean environment. */
static void run_hook(struct worker *w, int as_root) {
  extern char **environ;
  char runtime[64], **envp = NULL;
  struct stat st;
  const char *rt = NULL;
  /* A root daemon's hook reaches the user's desktop session, if any. */
  snprintf(runtime, sizeof runtime, "/run/user/%lu", (unsigned long)getuid());
  if (as_root && lstat(runtime, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == getuid())
    rt = runtime;
  int err = hook_env(&w->req, environ, as_root, rt, &envp);
  if (err == 0)
    err = hook_exec_start(&w->loop, w->req.hook_command, envp, w->req.hook_timeout_s, on_hook_done,
                          w, &w->hook);
  hook_env_free(envp);
  if (err) {
    char errbuf[256];
    p3_set_error(errbuf, sizeof errbuf, "hook `%.80s': %s", w->req.hook_command, p3_strerror(err));
    fail(w, P3_EWORKER, errbuf);
  }
}

/* Blocking: the daemon writes the whole request right after the spawn. */
static int read_request(int fd, struct worker_request *req, char *errbuf, size_t errlen) {
  struct buf b;
  /* + 1: the NUL that struct buf keeps.  The request holds the password. */
  buf_init_secret(&b, WORKER_REQUEST_MAX + 1);
  int err = -EINVAL;
  for (;;) {
    if ((b.len >= 5 && memcmp(b.data, "end \n", 5) == 0) ||
        (b.len >= 6 && memcmp(b.data + b.len - 6, "\nend \n", 6) == 0)) {
      err = worker_request_parse(b.data, b.len, req, errbuf, errlen);
      break;
    }
    int gerr = buf_reserve(&b, 1);
    if (gerr == -E2BIG) {
      p3_set_error(errbuf, errlen, "worker request too long");
      break;
    }
    if (gerr != 0) {
      err = -ENOMEM;
      break;
    }
    ssize_t n = read(fd, b.data + b.len, b.cap - 1 - b.len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      p3_set_error(errbuf, errlen, "worker request cut short");
      break;
    }
    b.len += (size_t)n;
  }
  buf_free(&b);
  return err;
}

/* Only stdio and the channel come from the daemon: any other descriptor it
 * had open without close-on-exec (a file it was reading) must not reach the
 * user's password command. */
static void close_inherited_fds(int chan_fd) {
  unsigned first = (unsigned)chan_fd + 1;
#ifdef SYS_close_range
  if (syscall(SYS_close_range, first, ~0U, 0) == 0)
    return;
#endif
  long max = sysconf(_SC_OPEN_MAX);
  if (max < 0 || max > 65536)
    max = 65536;
  for (long i = first; i < max; i++)
    (void)close((int)i);
}

/* Becomes who the run is for: as root, the account's user (after making
 * STATE_DIR/USER for a fetch; a hook needs no state), and sets w->state_dir
 * for a fetch.  A failure is reported (w->reported). */
static void take_identity(struct worker *w, int root) {
  char errbuf[512];
  int hook = w->req.hook_command != NULL, err = 0, n;

  if (root && w->req.user == NULL) {
    fail(w, P3_EPRIV, "a root daemon runs accounts only as their user; set user");
    return;
  }
  if (root && !hook)
    err = privsep_user_state_dir(w->req.state_dir, w->req.user, (uid_t)w->req.uid,
                                 (gid_t)w->req.gid, w->req.account, errbuf, sizeof errbuf);
  if (root && err == 0)
    err = privsep_drop(w->req.user, (uid_t)w->req.uid, errbuf, sizeof errbuf);
  if (err) {
    fail(w, err, errbuf);
    return;
  }
  if (hook)
    return;
  n = snprintf(w->state_dir, sizeof w->state_dir, "%s%s%s", w->req.state_dir, root ? "/" : "",
               root ? w->req.user : "");
  if (n < 0 || (size_t)n >= sizeof w->state_dir)
    fail(w, P3_ESTATE, "state path too long");
}

int worker_main(int fd) {
  static struct worker w; /* one per process */
  char errbuf[512];
  pid_t parent = getppid();
  signal(SIGPIPE, SIG_IGN);
  umask(077);
  close_inherited_fds(fd);
  int err = read_request(fd, &w.req, errbuf, sizeof errbuf);
  if (err) {
    fprintf(stderr, "pop3syncd worker: %s\n", errbuf);
    worker_request_free(&w.req);
    return 70;
  }

  /* Nothing the run starts (a password command) may inherit the channel
   * and speak for the worker. */
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    fprintf(stderr, "pop3syncd worker: fd %d: %s\n", fd, strerror(errno));
    worker_request_free(&w.req);
    return 70;
  }
  uv_loop_init(&w.loop);
  uv_pipe_init(&w.loop, &w.chan, 0);
  if (uv_pipe_open(&w.chan, fd) == 0) {
    w.chan_open = 1;
    w.chan.data = &w;
  }
  uv_signal_init(&w.loop, &w.sigterm);
  uv_signal_init(&w.loop, &w.sigint);
  uv_timer_init(&w.loop, &w.progress);
  uv_timer_init(&w.loop, &w.retry);
  w.sigterm.data = w.sigint.data = w.progress.data = w.retry.data = &w;
  uv_signal_start(&w.sigterm, on_signal, SIGTERM);
  uv_signal_start(&w.sigint, on_signal, SIGINT);
  uv_timer_start(&w.progress, on_progress, 1000, 1000);
  if (w.chan_open)
    uv_read_start((uv_stream_t *)&w.chan, on_chan_alloc, on_chan_read);

  int root = geteuid() == 0;
  take_identity(&w, root);
  /* Set after the drop: a change of credentials clears it. */
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent)
    stop(&w);
  if (!w.reported && w.req.hook_command)
    run_hook(&w, root);
  else if (!w.reported)
    resolve(&w);

  uv_run(&w.loop, UV_RUN_DEFAULT);
  engine_free(w.engine);
  target_deinit(&w.target);
  worker_request_free(&w.req);
  uv_loop_close(&w.loop);
  return w.exit_status;
}

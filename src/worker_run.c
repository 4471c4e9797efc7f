#include "config.h"

#include "worker_run.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "worker.h"

struct worker_run {
  uv_loop_t *loop;
  uv_process_t proc;
  uv_pipe_t chan;
  uv_timer_t kill_timer;
  uv_timer_t watchdog; /* restarted by every line from the worker */
  struct worker_run_ops ops;
  void *data;
  struct worker_report report;
  char line[WORKER_LINE_MAX + 1];
  size_t line_len;
  int line_overflow;
  int handles; /* open handles still to close */
  int exited, chan_done, reported;
  int exit_status, term_signal;
  int silenced; /* the watchdog killed it */
  int pid;
  char readbuf[16384];
};

static void maybe_done(struct worker_run *w);

static void on_failed_closed(uv_handle_t *h) {
  struct worker_run *w = h->data;
  if (--w->handles == 0)
    free(w);
}

static void on_handle_closed(uv_handle_t *h) {
  struct worker_run *w = h->data;
  w->handles--;
  maybe_done(w);
}

static void close_chan(struct worker_run *w) {
  if (w->chan_done)
    return;
  w->chan_done = 1;
  uv_close((uv_handle_t *)&w->chan, on_handle_closed);
}

static void maybe_done(struct worker_run *w) {
  if (w->reported || !w->exited || !w->chan_done)
    return;
  if (!uv_is_closing((uv_handle_t *)&w->kill_timer)) {
    uv_timer_stop(&w->kill_timer);
    uv_timer_stop(&w->watchdog);
    uv_close((uv_handle_t *)&w->kill_timer, on_handle_closed);
    uv_close((uv_handle_t *)&w->watchdog, on_handle_closed);
    return;
  }
  if (w->handles)
    return;
  w->reported = 1;
  struct worker_outcome o = {
      .report = &w->report,
      .exit_status = w->term_signal ? -1 : w->exit_status,
      .term_signal = w->term_signal,
      .signal_name = NULL,
      .silenced = w->silenced,
  };
  static char name[32];
  if (w->term_signal) {
    const char *abbrev = sigabbrev_np(w->term_signal);
    if (abbrev)
      snprintf(name, sizeof name, "SIG%s", abbrev);
    else
      snprintf(name, sizeof name, "signal %d", w->term_signal);
    o.signal_name = name;
  }
  w->ops.done(w->data, &o);
}

static void on_kill_timer(uv_timer_t *t) {
  struct worker_run *w = t->data;
  if (!w->exited && w->pid > 0)
    kill(-w->pid, SIGKILL);
  if (w->exited)
    close_chan(w);
}

/* A worker that says nothing for this long (it sends a line a second) is
 * stopped (SIGSTOP) or wedged; it must not hold its account and a
 * max_parallel slot for ever. */
#define WORKER_SILENCE_MS 60000

static void on_watchdog(uv_timer_t *t) {
  struct worker_run *w = t->data;
  if (w->exited || w->pid <= 0)
    return;
  w->silenced = 1;
  kill(-w->pid, SIGKILL);
  kill(-w->pid, SIGCONT);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int term_signal) {
  struct worker_run *w = p->data;
  w->exited = 1;
  w->exit_status = (int)status;
  w->term_signal = term_signal;
  /* Anything it started in its group (a password command's helpers) goes too. */
  if (w->pid > 0)
    kill(-w->pid, SIGKILL);
  uv_close((uv_handle_t *)p, on_handle_closed);
  /* A dead worker's channel may still hold a last report; read it to EOF,
   * but do not wait for a grandchild that keeps the socket open. */
  if (!w->chan_done && !uv_is_closing((uv_handle_t *)&w->kill_timer))
    uv_timer_start(&w->kill_timer, on_kill_timer, 2000, 0);
  maybe_done(w);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct worker_run *w = h->data;
  *buf = uv_buf_init(w->readbuf, sizeof w->readbuf);
}

static void handle_line(struct worker_run *w) {
  const char *trace = NULL;
  int r = worker_report_line(&w->report, w->line, &trace);
  if (r < 0) {
    /* A worker that breaks the protocol is not to be trusted with the run. */
    if (w->pid > 0)
      kill(-w->pid, SIGKILL);
    close_chan(w);
    return;
  }
  if (r == 1 && w->ops.trace)
    w->ops.trace(w->data, trace);
  else if (r == 0 && w->ops.progress && strncmp(w->line, "progress", 8) == 0)
    w->ops.progress(w->data);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  struct worker_run *w = s->data;
  if (n < 0) {
    close_chan(w);
    /* A worker that closed its channel has nothing more to say: it has a
     * moment to exit, then its group is killed. */
    if (!w->exited && !uv_is_active((uv_handle_t *)&w->kill_timer) &&
        !uv_is_closing((uv_handle_t *)&w->kill_timer))
      uv_timer_start(&w->kill_timer, on_kill_timer, 5000, 0);
    return;
  }
  for (ssize_t i = 0; i < n && !w->chan_done; i++) {
    char c = buf->base[i];
    if (c == '\n') {
      if (!w->exited)
        uv_timer_again(&w->watchdog);
      if (!w->line_overflow) {
        w->line[w->line_len] = '\0';
        handle_line(w);
      }
      w->line_len = 0;
      w->line_overflow = 0;
    } else if (w->line_len < WORKER_LINE_MAX) {
      w->line[w->line_len++] = c;
    } else {
      w->line_overflow = 1; /* a trace line too long: dropped */
    }
  }
}

struct req_write {
  uv_write_t req;
  char *buf;
  size_t len;
};

static void on_request_written(uv_write_t *req, int status) {
  struct req_write *rw = req->data;
  explicit_bzero(rw->buf, rw->len);
  free(rw->buf);
  free(rw);
}

int worker_run_start(uv_loop_t *loop, const char *exe, const struct worker_request *req,
                     const struct worker_run_ops *ops, void *data, struct worker_run **w_r,
                     char *errbuf, size_t errlen) {
  *w_r = NULL;
  struct worker_run *w = calloc(1, sizeof *w);
  struct req_write *rw = calloc(1, sizeof *rw);
  if (w == NULL || rw == NULL || worker_request_format(req, &rw->buf, &rw->len) != 0) {
    free(w);
    free(rw);
    p3_set_error(errbuf, errlen, "out of memory");
    return -ENOMEM;
  }
  w->loop = loop;
  w->ops = *ops;
  w->data = data;
  worker_report_init(&w->report);
  uv_pipe_init(loop, &w->chan, 0);
  uv_timer_init(loop, &w->kill_timer);
  uv_timer_init(loop, &w->watchdog);
  w->chan.data = w->kill_timer.data = w->watchdog.data = w->proc.data = w;

  char *args[] = {"pop3syncd", "--worker", NULL};
  uv_stdio_container_t stdio[4];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = 1;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  stdio[WORKER_CHANNEL_FD].flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE;
  stdio[WORKER_CHANNEL_FD].data.stream = (uv_stream_t *)&w->chan;
  uv_process_options_t po;
  memset(&po, 0, sizeof po);
  po.file = exe ? exe : "/proc/self/exe";
  po.args = args;
  po.exit_cb = on_exit_cb;
  po.stdio = stdio;
  po.stdio_count = 4;
  /* Its own process group (setsid), so that stopping it reaches everything
   * it started; no UV_PROCESS_SETUID: the worker drops privileges itself,
   * keeping the user's supplementary groups. */
  po.flags = UV_PROCESS_DETACHED;
  w->handles = 4;
  int err = uv_spawn(loop, &w->proc, &po);
  if (err) {
    p3_set_error(errbuf, errlen, "cannot start a worker process: %s", uv_strerror(err));
    explicit_bzero(rw->buf, rw->len);
    free(rw->buf);
    free(rw);
    /* The handles close on a later loop turn; the memory goes with the last. */
    w->reported = 1;
    uv_close((uv_handle_t *)&w->chan, on_failed_closed);
    uv_close((uv_handle_t *)&w->kill_timer, on_failed_closed);
    uv_close((uv_handle_t *)&w->watchdog, on_failed_closed);
    uv_close((uv_handle_t *)&w->proc, on_failed_closed);
    return err;
  }
  w->pid = w->proc.pid;
  uv_timer_start(&w->watchdog, on_watchdog, WORKER_SILENCE_MS, WORKER_SILENCE_MS);
  rw->req.data = rw;
  uv_buf_t b = uv_buf_init(rw->buf, (unsigned)rw->len);
  if (uv_write(&rw->req, (uv_stream_t *)&w->chan, &b, 1, on_request_written) != 0) {
    explicit_bzero(rw->buf, rw->len);
    free(rw->buf);
    free(rw);
    kill(-w->pid, SIGKILL);
  }
  uv_read_start((uv_stream_t *)&w->chan, on_alloc, on_read);
  *w_r = w;
  return 0;
}

void worker_run_stop(struct worker_run *w, unsigned grace_ms) {
  if (w->exited || w->pid <= 0)
    return;
  kill(w->pid, SIGTERM);
  if (!uv_is_active((uv_handle_t *)&w->kill_timer) && !uv_is_closing((uv_handle_t *)&w->kill_timer))
    uv_timer_start(&w->kill_timer, on_kill_timer, grace_ms, 0);
}

const struct worker_report *worker_run_report(const struct worker_run *w) {
  return &w->report;
}

int worker_run_pid(const struct worker_run *w) {
  return w->pid;
}

void worker_run_free(struct worker_run *w) {
  if (w == NULL)
    return;
  worker_report_free(&w->report);
  free(w);
}

#include "config.h"

#include "pwcmd.h"

#include "errors.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PWCMD_DEFAULT_TIMEOUT_S 120
/* SIGTERM, then SIGKILL this much later. */
#define PWCMD_KILL_GRACE_MS 2000
/* After SIGKILL, output still held open (by something outside the group)
 * is waited for this long at most. */
#define PWCMD_AFTER_KILL_MS 1000
/* The child exited but something it left behind holds its stdout. */
#define PWCMD_OUTPUT_GRACE_MS 500

/* Where the kill stands; the one timer's meaning follows from it. */
enum pwcmd_kill {
  KILL_NONE, /* timer: the overall bound (or, once exited, the output grace) */
  KILL_TERM, /* SIGTERM sent; timer: SIGKILL */
  KILL_KILL, /* SIGKILL sent; timer: stop waiting for output */
};

struct pwcmd {
  uv_process_t proc;
  uv_pipe_t out;
  uv_timer_t timer;
  pwcmd_done_cb cb;
  void *data;
  char *command;
  unsigned timeout_s;
  int detached;
  int pid;       /* 0 before the spawn and once reaped */
  int pgid;      /* the group to kill when detached; kept after the reap */
  int spawn_err; /* libuv error of uv_spawn, 0 when it started */
  int exited;    /* reaped (or never started) */
  int64_t exit_status;
  int term_signal;
  int out_open;     /* the pipe is being read */
  int closing;      /* handles are being closed: the result is decided */
  int open_handles; /* handles not yet through their close_cb */
  int err;          /* P3_ETIMEOUT / P3_ECANCELED once decided, else 0 */
  int too_much;     /* more than PWCMD_MAX_OUTPUT bytes */
  enum pwcmd_kill kill;
  char *buf; /* PWCMD_MAX_OUTPUT + 1 bytes; holds a secret */
  size_t len;
  /* PWCMD_CALLER_GROUP: stderr is read here, not inherited, and its first
   * line, cleaned, explains a failure (it must not write straight into a
   * root daemon's log). */
  uv_pipe_t errp;
  int capture_err, err_open;
  char errtext[256];
  size_t errlen;
};

static void maybe_finish(struct pwcmd *p);
static void on_timer(uv_timer_t *t);

/* Sends sig to the group (detached) or to the child (foreground), if there
 * is anyone left to receive it.  The group id stays valid after the leader
 * is reaped as long as a member holds it; we only signal it then while our
 * pipe is still open, i.e. while someone does. */
static void send_signal(struct pwcmd *p, int sig) {
  if (p->detached && p->pgid > 0)
    (void)uv_kill(-p->pgid, sig);
  else if (!p->detached && p->pid > 0)
    (void)uv_kill(p->pid, sig);
}

void pwcmd_output_suffix(const char *text, size_t len, char *out, size_t size) {
  size_t n = 0, i = 0;
  out[0] = '\0';
  while (i < len && (text[i] == '\n' || text[i] == '\r'))
    i++;
  if (i == len || size < 4)
    return;
  out[n++] = ':';
  out[n++] = ' ';
  for (; i < len && text[i] != '\n' && n + 1 < size; i++) {
    unsigned char c = (unsigned char)text[i];
    out[n++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
  }
  out[n] = '\0';
}

static void on_close(uv_handle_t *h) {
  struct pwcmd *p = h->data;
  char message[1024] = "";
  char why[160];
  char *password = NULL;
  pwcmd_done_cb cb;
  void *data;
  int err;

  assert(p->open_handles > 0);
  if (--p->open_handles > 0)
    return;
  err = 0;
  pwcmd_output_suffix(p->errtext, p->errlen, why, sizeof why);
  /* In order of what explains the failure best. */
  if (p->spawn_err != 0) {
    err = P3_EPWCMD;
    p3_set_error(message, sizeof message, "password command `%s' could not be started: %s",
                 p->command, uv_strerror(p->spawn_err));
  } else if (p->err == P3_ETIMEOUT) {
    err = P3_ETIMEOUT;
    p3_set_error(message, sizeof message,
                 "password command `%s' did not finish within %u s; killed%s", p->command,
                 p->timeout_s, why);
  } else if (p->err == P3_ECANCELED) {
    err = P3_ECANCELED;
    p3_set_error(message, sizeof message, "password command `%s' was stopped before it finished",
                 p->command);
  } else if (p->too_much) {
    err = P3_EPWCMD;
    p3_set_error(message, sizeof message, "password command `%s' printed more than %d bytes",
                 p->command, PWCMD_MAX_OUTPUT);
  } else if (p->term_signal != 0) {
    err = P3_EPWCMD;
    p3_set_error(message, sizeof message, "password command `%s' was killed by signal %d (%s)%s",
                 p->command, p->term_signal, strsignal(p->term_signal), why);
  } else if (p->exit_status != 0) {
    err = P3_EPWCMD;
    p3_set_error(message, sizeof message, "password command `%s' exited with status %lld%s",
                 p->command, (long long)p->exit_status, why);
  } else if (p->len == 0) {
    err = P3_EPWCMD;
    p3_set_error(message, sizeof message, "password command `%s' printed nothing%s", p->command,
                 why);
  } else {
    char *nl = memchr(p->buf, '\n', p->len);
    size_t linelen = nl != NULL ? (size_t)(nl - p->buf) : p->len;
    if (linelen > 0 && p->buf[linelen - 1] == '\r')
      linelen--;
    if (linelen == 0) {
      err = P3_EPWCMD;
      p3_set_error(message, sizeof message, "password command `%s' printed an empty line",
                   p->command);
    } else if (memchr(p->buf, '\0', linelen) != NULL || memchr(p->buf, '\r', linelen) != NULL) {
      /* Either would end or split the PASS command. */
      err = P3_EPWCMD;
      p3_set_error(message, sizeof message,
                   "password command `%s' printed a NUL byte or a carriage return", p->command);
    } else if ((password = malloc(linelen + 1)) == NULL) {
      err = -ENOMEM;
      p3_set_error(message, sizeof message, "out of memory reading password command `%s'",
                   p->command);
    } else {
      memcpy(password, p->buf, linelen);
      password[linelen] = '\0';
    }
  }

  cb = p->cb;
  data = p->data;
  explicit_bzero(p->buf, p->len);
  free(p->buf);
  free(p->command);
  free(p);
  cb(data, err, password, message);
}

static void close_output(struct pwcmd *p) {
  if (!p->out_open)
    return;
  p->out_open = 0;
  uv_read_stop((uv_stream_t *)&p->out);
  uv_close((uv_handle_t *)&p->out, on_close);
}

static void close_stderr(struct pwcmd *p) {
  if (!p->err_open)
    return;
  p->err_open = 0;
  /* What it wrote just before it exited may not have been read yet. */
  int fd;
  if (uv_fileno((uv_handle_t *)&p->errp, &fd) == 0) {
    char sink[256];
    for (int i = 0; i < 16; i++) {
      size_t room = sizeof p->errtext - p->errlen;
      ssize_t n = room ? read(fd, p->errtext + p->errlen, room) : read(fd, sink, sizeof sink);
      if (n <= 0)
        break;
      if (room)
        p->errlen += (size_t)n;
    }
  }
  uv_read_stop((uv_stream_t *)&p->errp);
  uv_close((uv_handle_t *)&p->errp, on_close);
}

/* Once the child is reaped and the output closed, nothing is left to wait
 * for: close the rest; the last close_cb reports. */
static void maybe_finish(struct pwcmd *p) {
  if (p->closing || !p->exited || p->out_open)
    return;
  p->closing = 1;
  close_stderr(p);
  uv_close((uv_handle_t *)&p->timer, on_close);
  uv_close((uv_handle_t *)&p->proc, on_close);
}

static void start_kill(struct pwcmd *p, int err) {
  if (p->err == 0)
    p->err = err;
  if (p->kill != KILL_NONE)
    return;
  p->kill = KILL_TERM;
  send_signal(p, SIGTERM);
  uv_timer_start(&p->timer, on_timer, PWCMD_KILL_GRACE_MS, 0);
}

static void on_timer(uv_timer_t *t) {
  struct pwcmd *p = t->data;

  switch (p->kill) {
  case KILL_NONE:
    if (p->exited) {
      /* The output grace after the exit ran out. */
      close_output(p);
      maybe_finish(p);
    } else {
      start_kill(p, P3_ETIMEOUT);
    }
    break;
  case KILL_TERM:
    p->kill = KILL_KILL;
    send_signal(p, SIGKILL);
    uv_timer_start(&p->timer, on_timer, PWCMD_AFTER_KILL_MS, 0);
    break;
  case KILL_KILL:
    /* Whatever still holds the pipe escaped the group: stop waiting for it.
     * The child itself got SIGKILL; its exit comes. */
    close_output(p);
    maybe_finish(p);
    break;
  }
}

static void on_child_exit(uv_process_t *proc, int64_t exit_status, int term_signal) {
  struct pwcmd *p = proc->data;

  p->exited = 1;
  p->pid = 0;
  p->exit_status = exit_status;
  p->term_signal = term_signal;
  if (p->out_open && p->kill == KILL_NONE) {
    if (p->err == 0 && memchr(p->buf, '\n', p->len) != NULL) {
      close_output(p); /* the line we use is complete */
    } else {
      /* Something the command left behind holds its stdout: not for long. */
      uv_timer_start(&p->timer, on_timer, PWCMD_OUTPUT_GRACE_MS, 0);
    }
  }
  /* While killing, the kill timer goes on: the rest of the group gets its
   * SIGKILL too, and the output is given up after it. */
  maybe_finish(p);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct pwcmd *p = h->data;

  (void)suggested;
  /* One byte of room past the limit tells "too much" from "exactly full". */
  *buf = uv_buf_init(p->buf + p->len, (unsigned)(PWCMD_MAX_OUTPUT + 1 - p->len));
}

static void on_err_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct pwcmd *p = h->data;
  static char sink[256]; /* past the first 256 bytes stderr is drained unread */
  (void)suggested;
  if (p->errlen < sizeof p->errtext)
    *buf = uv_buf_init(p->errtext + p->errlen, (unsigned)(sizeof p->errtext - p->errlen));
  else
    *buf = uv_buf_init(sink, sizeof sink);
}

static void on_err_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct pwcmd *p = s->data;
  if (nread < 0) {
    uv_read_stop(s); /* closed in maybe_finish */
    return;
  }
  if (nread > 0 && buf->base == p->errtext + p->errlen)
    p->errlen += (size_t)nread;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct pwcmd *p = s->data;

  (void)buf;
  if (nread == 0)
    return; /* EAGAIN */
  if (nread < 0) {
    /* UV_EOF, or an error that only the exit status can explain. */
    close_output(p);
    maybe_finish(p);
    return;
  }
  p->len += (size_t)nread;
  if (p->len > PWCMD_MAX_OUTPUT) {
    /* Stop it rather than drain it: `yes' never ends. */
    p->too_much = 1;
    close_output(p);
    if (!p->exited && p->kill == KILL_NONE) {
      p->kill = KILL_KILL;
      send_signal(p, SIGKILL);
      uv_timer_start(&p->timer, on_timer, PWCMD_AFTER_KILL_MS, 0);
    }
    maybe_finish(p);
  }
}

int pwcmd_start(uv_loop_t *loop, const char *command, unsigned timeout_s, enum pwcmd_mode mode,
                pwcmd_done_cb cb, void *data, struct pwcmd **p_r) {
  uv_process_options_t opts;
  uv_stdio_container_t stdio[3];
  char *args[4];
  struct pwcmd *p;
  int r;

  *p_r = NULL;
  if (command == NULL || command[0] == '\0' || cb == NULL)
    return -EINVAL;
  p = calloc(1, sizeof *p);
  if (p == NULL)
    return -ENOMEM;
  p->command = strdup(command);
  p->buf = malloc(PWCMD_MAX_OUTPUT + 1);
  if (p->command == NULL || p->buf == NULL) {
    free(p->command);
    free(p->buf);
    free(p);
    return -ENOMEM;
  }
  p->cb = cb;
  p->data = data;
  p->timeout_s = timeout_s ? timeout_s : PWCMD_DEFAULT_TIMEOUT_S;
  p->detached = mode == PWCMD_OWN_GROUP;
  p->capture_err = mode == PWCMD_CALLER_GROUP;

  r = uv_pipe_init(loop, &p->out, 0);
  if (r < 0) {
    free(p->command);
    free(p->buf);
    free(p);
    return r;
  }
  r = uv_timer_init(loop, &p->timer);
  assert(r == 0); /* cannot fail on Unix */
  if (p->capture_err) {
    r = uv_pipe_init(loop, &p->errp, 0);
    assert(r == 0);
  }
  p->out.data = p->timer.data = p->proc.data = p->errp.data = p;

  memset(&opts, 0, sizeof opts);
  memset(stdio, 0, sizeof stdio);
  /* UV_IGNORE makes libuv open /dev/null for the descriptor. */
  stdio[0].flags = mode == PWCMD_TTY ? UV_INHERIT_FD : UV_IGNORE;
  stdio[0].data.fd = 0;
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&p->out;
  if (p->capture_err) {
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&p->errp;
  } else {
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = 2;
  }
  args[0] = (char *)"/bin/sh";
  args[1] = (char *)"-c";
  args[2] = p->command;
  args[3] = NULL;
  opts.file = args[0];
  opts.args = args;
  opts.exit_cb = on_child_exit;
  opts.stdio = stdio;
  opts.stdio_count = 3;
  /* Detached: setsid(), so the child leads a new process group (and has no
   * controlling terminal to prompt on); the whole group can be killed. */
  opts.flags = p->detached ? UV_PROCESS_DETACHED : 0;

  p->open_handles = p->capture_err ? 4 : 3; /* out, timer, proc, errp */
  r = uv_spawn(loop, &p->proc, &opts);
  if (r < 0) {
    /* Reported through cb, like any other failure of the command.  The
     * handles were initialised and are closed as usual. */
    p->spawn_err = r;
    p->exited = 1;
    p->closing = 1;
    uv_close((uv_handle_t *)&p->out, on_close);
    uv_close((uv_handle_t *)&p->timer, on_close);
    uv_close((uv_handle_t *)&p->proc, on_close);
    if (p->capture_err)
      uv_close((uv_handle_t *)&p->errp, on_close);
    *p_r = p;
    return 0;
  }
  p->pid = p->pgid = p->proc.pid;
  p->out_open = 1;
  if (p->capture_err && uv_read_start((uv_stream_t *)&p->errp, on_err_alloc, on_err_read) == 0)
    p->err_open = 1;
  else if (p->capture_err)
    uv_close((uv_handle_t *)&p->errp, on_close);
  r = uv_read_start((uv_stream_t *)&p->out, on_alloc, on_read);
  if (r < 0) {
    /* Cannot read its answer: it is pointless to let it run. */
    p->spawn_err = r;
    close_output(p);
    start_kill(p, 0);
  } else {
    uv_timer_start(&p->timer, on_timer, (uint64_t)p->timeout_s * 1000, 0);
  }
  *p_r = p;
  return 0;
}

void pwcmd_cancel(struct pwcmd *p) {
  if (p->closing || p->err != 0 || p->spawn_err != 0)
    return;
  p->err = P3_ECANCELED;
  close_output(p);
  if (p->exited) {
    /* Already reaped: only output was still awaited.  Whatever of the group
     * still held it gets the same treatment as a live child's group. */
    if (p->detached)
      send_signal(p, SIGTERM);
    maybe_finish(p);
    return;
  }
  start_kill(p, P3_ECANCELED);
}

int pwcmd_pid(const struct pwcmd *p) {
  return p->pid;
}

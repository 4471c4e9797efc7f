#include "config.h"

#include "control.h"

#include "errors.h"
#include "fsutil.h"
#include "log.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

/* Longest request line, without its line end. */
#define LINE_MAX_LEN 4096
/* A line plus an optional '\r' and its '\n': when this many bytes hold no
 * '\n', the line is too long whatever follows. */
#define LINE_SCAN (LINE_MAX_LEN + 2)
/* Input buffered per client while a request is in progress; reading stops
 * when it is full and resumes once lines have been consumed. */
#define CLIENT_BUF_MAX (64 * 1024)
/* Replies queued to a client that does not read them: above this, no more
 * requests are dispatched until the queue drains. */
#define WRITE_QUEUE_MAX (256 * 1024)
/* Clients served at once, and how many of them may wait for a run: the
 * rest of the table stays free for quick requests (pop3ctl status). */
#define CLIENTS_MAX 64
#define WAITING_MAX 32
/* A client with nothing outstanding must send a complete request within
 * IDLE_MS; a reply must be written completely within WRITE_MS. */
#define IDLE_MS 10000
#define WRITE_MS 30000
/* Connections held beyond the served ones: newcomers waiting for a slot and
 * peers being refused.  Beyond that a new connection is closed without a
 * word, so that a flood cannot pin memory. */
#define CONNS_EXTRA 16
#define LISTEN_BACKLOG 16
/* Split like the daemon's on_request: it looks at this many words only. */
#define REQUEST_WORDS_MAX 16

/* A watcher (control_watch) whose unwritten events exceed this misses
 * progress events until it catches up; other events are queued up to
 * WATCH_QUEUE_MAX, beyond which the watcher is dropped.  The write timeout
 * drops one that reads nothing at all. */
#define WATCH_DROP_PROGRESS (16 * 1024)
#define WATCH_QUEUE_MAX (256 * 1024)

#define REPLY_DENIED "{\"error\":\"permission denied\",\"exit\":77}"
#define REPLY_BUSY "{\"error\":\"too many control connections\",\"exit\":75}"
#define REPLY_TOO_LONG "{\"error\":\"request too long\",\"exit\":64}"
#define REPLY_NUL "{\"error\":\"request contains a NUL byte\",\"exit\":64}"
#define REPLY_WAITING_FULL                                                                         \
  "{\"error\":\"too many control clients waiting for a run (%u); try again later, "                \
  "or use fetch --no-wait\",\"exit\":75}"

struct client;

struct control {
  uv_loop_t *loop;
  uv_pipe_t server;
  const struct control_ops *ops;
  void *data;
  uv_timer_t timer;   /* the earliest deadline of any client */
  uint64_t timer_due; /* loop time the timer is set for; 0: stopped */
  struct control_limits lim;
  struct client *clients; /* every client whose handle is not yet closed */
  /* The counts below leave out clients whose handle is closing. */
  unsigned nlive;    /* all of them, refused and queued ones included */
  unsigned nserved;  /* served: may send requests */
  unsigned nwaiting; /* served and waiting for a run */
  unsigned nqueued;  /* waiting for a slot */
  uint64_t seq;      /* orders arrivals and idle periods */
  bool closing;
  bool server_closed;
  bool timer_closed;
  void (*close_cb)(void *data);
  void *close_data;
  char path[];
};

/* A connection.  It is referenced by its handle (until close_cb) and by its
 * pending request (until control_reply), and freed when both are gone, so a
 * request outlives a client that hung up and a control that was closed. */
struct client {
  struct control *c; /* NULL once the handle is closed */
  struct client *prev, *next;
  uv_pipe_t pipe;
  int refs;
  bool served;                         /* passed the credential check and holds a slot */
  bool queued;                         /* passed the credential check, waits for a slot */
  bool closing;                        /* uv_close called, or close requested after a write */
  bool reading;                        /* uv_read_start in effect */
  bool busy;                           /* a request awaits control_reply */
  bool waiting;                        /* that request waits for a run (control_request_waits) */
  bool idle;                           /* served, nothing outstanding: may be evicted */
  bool dispatching;                    /* inside client_process: a reply must not recurse */
  bool watching;                       /* receives events (control_watch); stays busy */
  char *watch_account;                 /* only this account's events; NULL: all */
  uint64_t since;                      /* queued: when accepted; idle: since when */
  uint64_t seq;                        /* queued: arrival order; idle: order of becoming idle */
  struct write_req *wq_head, *wq_tail; /* replies not yet written, oldest first */
  size_t len;                          /* bytes in buf */
  char buf[CLIENT_BUF_MAX];
};

struct control_req {
  struct client *cl;
  char line[];
};

struct write_req {
  uv_write_t req;
  struct client *cl;
  struct write_req *prev, *next; /* in cl's queue */
  uint64_t queued_at;            /* loop time */
  bool close_after;              /* the last word to this client: close once written */
  char data[];
};

static void client_process(struct client *cl);
static void control_update(struct control *c);
static void timer_cb(uv_timer_t *t);

/* Like p3_error, for a failed system call: "WHAT NAME: strerror(errno)",
 * returning -errno (read before anything else can change it). */
static int fail_errno(char *errbuf, size_t errlen, const char *what, const char *name) {
  int err = errno;

  return p3_error(errbuf, errlen, -err, "%s %s: %s", what, name, strerror(err));
}

/* The socket's directory must be ours (or root's) and writable by nobody
 * else: whoever can write there could swap the socket for their own. */
static int check_dir(const char *path, char *errbuf, size_t errlen) {
  char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
  const char *slash = strrchr(path, '/');
  struct stat st;
  int err;

  if (slash == NULL) {
    snprintf(dir, sizeof(dir), ".");
  } else if (slash == path) {
    snprintf(dir, sizeof(dir), "/");
  } else {
    memcpy(dir, path, (size_t)(slash - path)); /* path is shorter than dir */
    dir[slash - path] = '\0';
  }

  if (stat(dir, &st) != 0) {
    if (errno != ENOENT)
      return fail_errno(errbuf, errlen, "cannot stat", dir);
    /* Missing ancestors too, each 0700; existing ones are left alone. */
    err = fs_mkdir_p(dir, 0700, errbuf, errlen);
    if (err < 0)
      return err;
    if (stat(dir, &st) != 0)
      return fail_errno(errbuf, errlen, "cannot stat", dir);
  }
  if (!S_ISDIR(st.st_mode))
    return p3_error(errbuf, errlen, -ENOTDIR, "%s is not a directory", dir);
  if (st.st_uid != geteuid() && st.st_uid != 0)
    return p3_error(errbuf, errlen, -EPERM,
                    "%s is owned by uid %lu, neither by us (uid %lu) nor root", dir,
                    (unsigned long)st.st_uid, (unsigned long)geteuid());
  if (st.st_mode & (S_IWGRP | S_IWOTH))
    return p3_error(errbuf, errlen, -EPERM, "%s is writable by group or others (mode %04o)", dir,
                    (unsigned)(st.st_mode & 07777));
  return 0;
}

/* Looks at what is at path: nothing, or a stale socket (removed), is fine; a
 * socket someone listens on means another daemon; anything else is not ours
 * to delete. */
static int probe_path(const char *path, const struct sockaddr_un *sa, char *errbuf, size_t errlen) {
  struct stat st;
  int fd, r, err;

  if (lstat(path, &st) != 0) {
    if (errno == ENOENT)
      return 0;
    return fail_errno(errbuf, errlen, "cannot stat", path);
  }
  if (!S_ISSOCK(st.st_mode))
    return p3_error(errbuf, errlen, -EEXIST, "%s exists and is not a socket; not replacing it",
                    path);

  /* Non-blocking, so that a live daemon with a full backlog answers EAGAIN
   * instead of stalling our start. */
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return fail_errno(errbuf, errlen, "cannot create a socket for", path);
  do
    r = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
  while (r != 0 && errno == EINTR);
  err = r == 0 ? 0 : errno;
  close(fd);

  if (err == 0 || err == EAGAIN || err == EINPROGRESS)
    return p3_error(errbuf, errlen, P3_ELOCKED, "another pop3syncd is already listening on %s",
                    path);
  if (err != ECONNREFUSED)
    return p3_error(errbuf, errlen, -err, "cannot probe %s: %s", path, strerror(err));
  /* Nobody listens: a daemon died without cleaning up. */
  if (unlink(path) != 0 && errno != ENOENT)
    return fail_errno(errbuf, errlen, "cannot remove stale socket", path);
  return 0;
}

/* Creates, binds and listens on the socket.  Done with plain system calls
 * and handed to libuv only when it is ready, so that every failure here is
 * synchronous: a uv_pipe_t that failed to bind would still need a loop
 * iteration to close.  (This also keeps libuv from unlinking the path
 * behind our back on close; control_close does that.) */
static int bind_socket(const char *path, const struct sockaddr_un *sa, char *errbuf,
                       size_t errlen) {
  mode_t old_mask;
  int fd, r, err;

  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return fail_errno(errbuf, errlen, "cannot create a socket for", path);

  /* umask 077 makes the socket 0600 from its first moment; the chmod below
   * only makes sure of it. */
  old_mask = umask(077);
  r = bind(fd, (const struct sockaddr *)sa, sizeof(*sa));
  err = errno;
  umask(old_mask);
  if (r != 0) {
    close(fd);
    if (err == EADDRINUSE) /* someone bound it since we probed */
      return p3_error(errbuf, errlen, P3_ELOCKED, "another pop3syncd is already listening on %s",
                      path);
    return p3_error(errbuf, errlen, -err, "cannot bind %s: %s", path, strerror(err));
  }
  if (chmod(path, 0600) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
    err = errno;
    close(fd);
    unlink(path);
    return p3_error(errbuf, errlen, -err, "cannot set up %s: %s", path, strerror(err));
  }
  return fd;
}

static void client_unref(struct client *cl) {
  if (--cl->refs == 0) {
    free(cl->watch_account);
    free(cl);
  }
}

static void control_maybe_done(struct control *c) {
  void (*cb)(void *data);
  void *data;

  if (!c->closing || !c->server_closed || !c->timer_closed || c->clients != NULL)
    return;
  cb = c->close_cb;
  data = c->close_data;
  free(c);
  if (cb != NULL)
    cb(data);
}

static void client_close_cb(uv_handle_t *h) {
  struct client *cl = h->data;
  struct control *c = cl->c;

  if (cl->prev != NULL)
    cl->prev->next = cl->next;
  else
    c->clients = cl->next;
  if (cl->next != NULL)
    cl->next->prev = cl->prev;
  cl->c = NULL;
  control_maybe_done(c);
  client_unref(cl);
}

/* Closes the handle and gives up the client's slot at once (the handle
 * itself goes in a later loop phase).  The caller runs control_update. */
static void client_close(struct client *cl) {
  struct control *c = cl->c;

  if (uv_is_closing((uv_handle_t *)&cl->pipe))
    return;
  cl->closing = true;
  cl->reading = false;
  c->nlive--;
  if (cl->served)
    c->nserved--;
  if (cl->queued)
    c->nqueued--;
  if (cl->waiting)
    c->nwaiting--;
  cl->served = cl->queued = cl->waiting = cl->idle = false;
  uv_close((uv_handle_t *)&cl->pipe, client_close_cb);
}

static void write_cb(uv_write_t *req, int status) {
  struct write_req *w = (struct write_req *)req;
  struct client *cl = w->cl;
  bool close_after = w->close_after;

  if (w->prev != NULL)
    w->prev->next = w->next;
  else
    cl->wq_head = w->next;
  if (w->next != NULL)
    w->next->prev = w->prev;
  else
    cl->wq_tail = w->prev;
  free(w);
  /* The handle is open until its close_cb, which libuv runs only after the
   * callbacks of every queued write (cancelled ones get UV_ECANCELED). */
  if (status < 0 || close_after)
    client_close(cl);
  else if (!cl->busy) /* a client that stopped reading may have held up requests */
    client_process(cl);
  control_update(cl->c);
}

/* Queues line + "\n".  close_after: close the client once it is written.
 * On failure the client is closed (it could not be told anything).  A peer
 * that hung up makes libuv's write(2) raise SIGPIPE: the program must
 * ignore that signal (pop3syncd does), as libuv's documentation says. */
static void client_write(struct client *cl, const char *line, bool close_after) {
  size_t n = strlen(line);
  struct write_req *w;
  uv_buf_t buf;

  if (close_after) {
    /* Nothing said after this one counts: stop taking input now. */
    cl->closing = true;
    if (cl->reading) {
      uv_read_stop((uv_stream_t *)&cl->pipe);
      cl->reading = false;
    }
  }
  w = malloc(sizeof(*w) + n + 1);
  if (w == NULL) {
    client_close(cl);
    return;
  }
  w->cl = cl;
  w->close_after = close_after;
  w->queued_at = uv_now(cl->c->loop);
  memcpy(w->data, line, n);
  w->data[n] = '\n';
  buf = uv_buf_init(w->data, (unsigned)(n + 1));
  if (uv_write(&w->req, (uv_stream_t *)&cl->pipe, &buf, 1, write_cb) != 0) {
    free(w);
    client_close(cl);
    return;
  }
  w->next = NULL;
  w->prev = cl->wq_tail;
  if (cl->wq_tail != NULL)
    cl->wq_tail->next = w;
  else
    cl->wq_head = w;
  cl->wq_tail = w;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct client *cl = h->data;

  (void)suggested;
  /* Zero room makes libuv report UV_ENOBUFS; read_cb stops reading then. */
  *buf = uv_buf_init(cl->buf + cl->len, (unsigned)(CLIENT_BUF_MAX - cl->len));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct client *cl = s->data;

  (void)buf;
  if (nread > 0) {
    cl->len += (size_t)nread;
    client_process(cl);
  } else if (nread == UV_ENOBUFS) {
    /* Buffer full: client_process resumes reading once lines are consumed. */
    uv_read_stop(s);
    cl->reading = false;
  } else if (nread < 0) {
    /* EOF or an error: the client is gone; what it sent after its last
     * complete request is dropped, and a pending request's reply too. */
    client_close(cl);
  }
  /* nread == 0: nothing read (EAGAIN); libuv asks again. */
  if (cl->c != NULL)
    control_update(cl->c);
}

/* Reads only while there is room, no request holds the line up beyond the
 * buffer, and the client is still to be listened to. */
static void client_update_reading(struct client *cl) {
  bool want = !cl->closing && cl->served && cl->len < CLIENT_BUF_MAX;

  if (want && !cl->reading) {
    if (uv_read_start((uv_stream_t *)&cl->pipe, alloc_cb, read_cb) != 0) {
      client_close(cl);
      return;
    }
    cl->reading = true;
  } else if (!want && cl->reading) {
    uv_read_stop((uv_stream_t *)&cl->pipe);
    cl->reading = false;
  }
}

/* Dispatches buffered lines one at a time: the next only once the previous
 * request has been replied.  A reply given from inside the handler returns
 * here instead of recursing, so a burst of lines costs no stack. */
static void client_process(struct client *cl) {
  struct control_req *req;
  struct control *c;
  char *nl;
  size_t n, used;

  if (cl->dispatching)
    return;
  cl->dispatching = true;
  while (!cl->busy && !cl->closing && cl->c != NULL && !cl->c->closing) {
    if (uv_stream_get_write_queue_size((uv_stream_t *)&cl->pipe) > WRITE_QUEUE_MAX)
      break; /* write_cb comes back here */
    nl = memchr(cl->buf, '\n', cl->len < LINE_SCAN ? cl->len : LINE_SCAN);
    if (nl == NULL) {
      if (cl->len >= LINE_SCAN)
        client_write(cl, REPLY_TOO_LONG, true);
      break;
    }
    used = (size_t)(nl - cl->buf) + 1;
    n = used - 1;
    if (n > 0 && cl->buf[n - 1] == '\r')
      n--;
    if (n > LINE_MAX_LEN) {
      client_write(cl, REPLY_TOO_LONG, true);
      break;
    }
    if (memchr(cl->buf, '\0', n) != NULL) {
      /* The handler takes a C string: it would see a different request. */
      client_write(cl, REPLY_NUL, false);
      memmove(cl->buf, cl->buf + used, cl->len - used);
      cl->len -= used;
      continue;
    }
    req = malloc(sizeof(*req) + n + 1);
    if (req == NULL) {
      client_close(cl);
      break;
    }
    req->cl = cl;
    memcpy(req->line, cl->buf, n);
    req->line[n] = '\0';
    memmove(cl->buf, cl->buf + used, cl->len - used);
    cl->len -= used;

    c = cl->c;
    if (control_request_waits(req->line)) {
      if (c->nwaiting >= c->lim.waiting_max) {
        /* Refused before the handler sees it, so that no run starts for a
         * reply that could not be waited for. */
        char msg[sizeof(REPLY_WAITING_FULL) + 16];

        snprintf(msg, sizeof(msg), REPLY_WAITING_FULL, c->lim.waiting_max);
        free(req);
        client_write(cl, msg, false);
        continue;
      }
      cl->waiting = true;
      c->nwaiting++;
    }
    cl->busy = true;
    cl->refs++;
    c->ops->request(c->data, req, req->line);
  }
  cl->dispatching = false;
  if (cl->c != NULL)
    client_update_reading(cl);
}

static bool peer_allowed(struct client *cl) {
  struct ucred cred;
  socklen_t len = sizeof(cred);
  uv_os_fd_t fd;

  if (uv_fileno((uv_handle_t *)&cl->pipe, &fd) != 0)
    return false;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof(cred)) {
    log_warning("control: cannot read peer credentials: %s", strerror(errno));
    return false;
  }
  if (cred.uid == geteuid() || cred.uid == 0)
    return true;
  log_warning("control: refused a connection from uid %lu (pid %ld)", (unsigned long)cred.uid,
              (long)cred.pid);
  return false;
}

/* ---- limits and timeouts */

void control_limits_default(struct control_limits *lim_r) {
  lim_r->clients_max = CLIENTS_MAX;
  lim_r->waiting_max = WAITING_MAX;
  lim_r->idle_ms = IDLE_MS;
  lim_r->write_ms = WRITE_MS;
}

void control_set_limits(struct control *c, const struct control_limits *lim) {
  assert(lim->waiting_max > 0 && lim->waiting_max < lim->clients_max);
  assert(lim->idle_ms > 0 && lim->write_ms > 0);
  c->lim = *lim;
  control_update(c);
}

int control_request_waits(const char *line) {
  static const char seps[] = " \t";
  const char *p = line;
  size_t n;
  int words = 0, fetch = 0;

  for (;;) {
    p += strspn(p, seps);
    if (*p == '\0' || words == REQUEST_WORDS_MAX)
      break;
    n = strcspn(p, seps);
    if (words == 0 && n == 5 && memcmp(p, "watch", 5) == 0)
      return 1; /* an event stream: busy until the client hangs up */
    if (words == 0)
      fetch = n == 5 && memcmp(p, "fetch", 5) == 0;
    else if (n == 9 && memcmp(p, "--no-wait", 9) == 0)
      return 0;
    words++;
    p += n;
  }
  return fetch;
}

uint64_t control_deadline(const struct control_clock *k, const struct control_limits *lim) {
  /* An unread reply is dropped whatever else goes on: a client cannot hold
   * its slot by pipelining requests it never reads the answers to. */
  if (k->writing)
    return k->write_since + lim->write_ms;
  if (k->queued)
    return k->queued_since + lim->idle_ms;
  if (k->busy)
    return 0;
  return k->idle_since + lim->idle_ms;
}

static void client_clock(const struct client *cl, struct control_clock *k) {
  memset(k, 0, sizeof(*k));
  k->busy = cl->busy;
  k->writing = cl->wq_head != NULL;
  k->queued = cl->queued;
  k->idle_since = cl->since;
  k->queued_since = cl->since;
  if (cl->wq_head != NULL)
    k->write_since = cl->wq_head->queued_at;
}

static bool client_live(const struct client *cl) {
  return !uv_is_closing((const uv_handle_t *)&cl->pipe);
}

/* Gives a queued client a slot: from now on it is read, and it has the
 * idle timeout to send its request. */
static void client_serve(struct client *cl) {
  struct control *c = cl->c;

  cl->queued = false;
  c->nqueued--;
  cl->served = true;
  c->nserved++;
  cl->idle = true;
  cl->since = uv_now(c->loop);
  cl->seq = ++c->seq;
  client_update_reading(cl);
}

/* Serves queued clients, oldest first, while there is a slot or a client
 * to evict for one: the served client idle the longest.  One that waits for
 * a reply, or has one still being written, is never evicted (the write
 * timeout bounds the latter).  A newcomer that finds neither stays queued;
 * control_update's timer answers it within the idle timeout. */
static void control_admit(struct control *c) {
  struct client *cl, *next, *victim;
  uint64_t now = uv_now(c->loop);

  while (c->nqueued > 0) {
    next = victim = NULL;
    for (cl = c->clients; cl != NULL; cl = cl->next) {
      if (!client_live(cl))
        continue;
      if (cl->queued && (next == NULL || cl->seq < next->seq))
        next = cl;
      if (cl->idle && (victim == NULL || cl->seq < victim->seq))
        victim = cl;
    }
    assert(next != NULL);
    if (c->nserved >= c->lim.clients_max) {
      if (victim == NULL)
        break;
      log_info("control: %u clients connected; closing the one idle for %llu ms to serve a new one",
               c->nserved, (unsigned long long)(now - victim->since));
      client_close(victim);
    }
    client_serve(next);
  }
}

/* Brings the bookkeeping up to date after anything happened to any client:
 * notes which clients became idle (and since when), serves queued ones,
 * and sets the timer for the earliest deadline.  Runs at the end of every
 * callback that changes a client; a scan of at most clients_max +
 * CONNS_EXTRA clients is cheaper than keeping them sorted. */
static void control_update(struct control *c) {
  struct control_clock k;
  struct client *cl;
  uint64_t now, due = 0, d;
  bool idle;

  if (c->closing)
    return;
  now = uv_now(c->loop);
  for (cl = c->clients; cl != NULL; cl = cl->next) {
    if (!client_live(cl))
      continue;
    idle = cl->served && !cl->closing && !cl->busy && cl->wq_head == NULL;
    if (idle && !cl->idle) {
      cl->since = now;
      cl->seq = ++c->seq;
    }
    cl->idle = idle;
  }
  control_admit(c);
  for (cl = c->clients; cl != NULL; cl = cl->next) {
    if (!client_live(cl))
      continue;
    client_clock(cl, &k);
    d = control_deadline(&k, &c->lim);
    if (d != 0 && (due == 0 || d < due))
      due = d;
  }
  if (due == c->timer_due)
    return;
  c->timer_due = due;
  if (due == 0)
    uv_timer_stop(&c->timer);
  else
    uv_timer_start(&c->timer, timer_cb, due > now ? due - now : 0, 0);
}

/* Drops the clients whose deadline has passed: an idle one or one that
 * does not read its reply is closed without a word (it asked for nothing,
 * or will not read it); a queued one is told the table is full. */
static void timer_cb(uv_timer_t *t) {
  struct control *c = t->data;
  struct control_clock k;
  struct client *cl;
  uint64_t now = uv_now(c->loop), d;

  c->timer_due = 0;
  for (cl = c->clients; cl != NULL; cl = cl->next) {
    if (!client_live(cl))
      continue;
    client_clock(cl, &k);
    d = control_deadline(&k, &c->lim);
    if (d == 0 || d > now)
      continue;
    if (k.writing) {
      log_info("control: a client left a reply unread for %llu ms; disconnecting it",
               (unsigned long long)(now - k.write_since));
      client_close(cl);
    } else if (k.queued) {
      log_warning("control: no free slot for a new client within %llu ms "
                  "(%u clients, %u waiting for a run); refusing it",
                  (unsigned long long)c->lim.idle_ms, c->nserved, c->nwaiting);
      cl->queued = false;
      c->nqueued--;
      client_write(cl, REPLY_BUSY, true);
    } else {
      log_debug("control: closing a client idle for %llu ms",
                (unsigned long long)(now - k.idle_since));
      client_close(cl);
    }
  }
  control_update(c);
}

static void connection_cb(uv_stream_t *server, int status) {
  struct control *c = server->data;
  struct client *cl;

  if (status < 0) {
    log_warning("control: accept: %s", uv_strerror(status));
    return;
  }
  if (c->closing)
    return;
  /* The connection must be accepted even to refuse it: libuv stops
   * watching the listening socket while one waits. */
  cl = calloc(1, sizeof(*cl));
  if (cl == NULL) {
    /* Without a handle the connection cannot even be refused, and libuv
     * pauses the listener until something is accepted. */
    log_err("control: out of memory for a client; no longer accepting connections");
    return;
  }
  cl->c = c;
  cl->refs = 1;
  cl->since = uv_now(c->loop);
  cl->seq = ++c->seq;
  uv_pipe_init(c->loop, &cl->pipe, 0);
  cl->pipe.data = cl;
  cl->next = c->clients;
  if (c->clients != NULL)
    c->clients->prev = cl;
  c->clients = cl;
  c->nlive++;

  if (uv_accept(server, (uv_stream_t *)&cl->pipe) != 0 ||
      c->nlive > c->lim.clients_max + CONNS_EXTRA) {
    client_close(cl);
  } else if (!peer_allowed(cl)) {
    client_write(cl, REPLY_DENIED, true);
  } else {
    /* Every newcomer queues; control_admit serves it at once when a slot
     * is free or an idle client can make room. */
    cl->queued = true;
    c->nqueued++;
  }
  control_update(c);
  if (cl->queued)
    log_warning("control: %u clients connected, none idle (%u waiting for a run); "
                "a new one waits for a slot",
                c->nserved, c->nwaiting);
}

int control_listen(uv_loop_t *loop, const char *path, const struct control_ops *ops, void *data,
                   struct control **c_r, char *errbuf, size_t errlen) {
  struct sockaddr_un sa;
  struct control *c;
  size_t n = strlen(path);
  int fd, err;

  *c_r = NULL;
  if (errbuf != NULL && errlen > 0)
    errbuf[0] = '\0';
  if (n == 0)
    return p3_error(errbuf, errlen, -EINVAL, "empty control socket path");
  /* libuv 1.44 would silently truncate it; a truncated name is somebody
   * else's socket. */
  if (n >= sizeof(sa.sun_path))
    return p3_error(errbuf, errlen, -ENAMETOOLONG,
                    "control socket path is too long (%zu bytes, at most %zu): %s", n,
                    sizeof(sa.sun_path) - 1, path);
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path, n + 1);

  err = check_dir(path, errbuf, errlen);
  if (err < 0)
    return err;
  /* Between the probe and bind another daemon might start too; bind then
   * fails with EADDRINUSE, unless both probed before either bound (the
   * daemon's own lock keeps two from running at once). */
  err = probe_path(path, &sa, errbuf, errlen);
  if (err < 0)
    return err;
  fd = bind_socket(path, &sa, errbuf, errlen);
  if (fd < 0)
    return fd;

  c = calloc(1, sizeof(*c) + n + 1);
  if (c == NULL) {
    close(fd);
    unlink(path);
    return p3_error(errbuf, errlen, -ENOMEM, "out of memory");
  }
  c->loop = loop;
  c->ops = ops;
  c->data = data;
  control_limits_default(&c->lim);
  memcpy(c->path, path, n + 1);
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  uv_pipe_init(loop, &c->server, 0);
  c->server.data = c;
  /* uv_pipe_open cannot fail on a fresh socket, and listen(2) has already
   * succeeded: uv_listen only repeats it.  Should either fail all the
   * same, the handle must be closed through the loop. */
  err = uv_pipe_open(&c->server, fd);
  if (err != 0)
    close(fd); /* not adopted by the handle */
  else
    err = uv_listen((uv_stream_t *)&c->server, LISTEN_BACKLOG, connection_cb);
  if (err != 0) {
    p3_error(errbuf, errlen, err, "cannot listen on %s: %s", path, uv_strerror(err));
    control_close(c, NULL, NULL); /* frees c once the loop has closed the handle */
    return err;
  }
  *c_r = c;
  return 0;
}

void control_reply(struct control_req *req, const char *json) {
  struct client *cl = req->cl;
  bool alive = control_req_alive(req);

  free(req);
  cl->busy = false;
  if (cl->waiting) { /* still counted: the client is still connected */
    cl->waiting = false;
    cl->c->nwaiting--;
  }
  if (alive) {
    client_write(cl, json, false);
    /* Inside client_process (a reply from the handler) the loop there
     * goes on; otherwise the next buffered request starts now. */
    client_process(cl);
  }
  if (cl->c != NULL)
    control_update(cl->c);
  client_unref(cl);
}

int control_watch(struct control_req *req, const char *account, const char *first) {
  struct client *cl = req->cl;
  char *acc = NULL;

  if (!control_req_alive(req) || (account != NULL && (acc = strdup(account)) == NULL)) {
    control_reply(req, "{\"error\":\"out of memory\",\"exit\":75}");
    return -ENOMEM;
  }
  free(req);
  /* The client stays busy (never idle, counted as waiting) until it hangs
   * up; its slot goes when it does.  The request's reference goes now:
   * the handle's keeps the client. */
  cl->refs--;
  cl->watching = true;
  cl->watch_account = acc;
  client_write(cl, first, false);
  if (cl->c != NULL)
    control_update(cl->c);
  return 0;
}

void control_broadcast(struct control *c, const char *account, const char *json, bool droppable) {
  struct client *cl, *next;
  size_t queued;

  if (c->closing)
    return;
  for (cl = c->clients; cl != NULL; cl = next) {
    next = cl->next;
    if (!cl->watching || cl->closing || !client_live(cl))
      continue;
    if (cl->watch_account != NULL && account != NULL && strcmp(cl->watch_account, account) != 0)
      continue;
    queued = uv_stream_get_write_queue_size((uv_stream_t *)&cl->pipe);
    if (droppable && queued > WATCH_DROP_PROGRESS)
      continue;
    if (queued > WATCH_QUEUE_MAX) {
      log_info("control: a watcher left %zu bytes of events unread; disconnecting it", queued);
      client_close(cl);
      continue;
    }
    client_write(cl, json, false);
  }
  control_update(c);
}

int control_req_alive(const struct control_req *req) {
  const struct client *cl = req->cl;

  return cl->c != NULL && !cl->closing && !cl->c->closing;
}

static void server_close_cb(uv_handle_t *h) {
  struct control *c = h->data;

  c->server_closed = true;
  control_maybe_done(c);
}

static void timer_close_cb(uv_handle_t *h) {
  struct control *c = h->data;

  c->timer_closed = true;
  control_maybe_done(c);
}

void control_close(struct control *c, void (*cb)(void *data), void *data) {
  struct client *cl;

  if (c->closing)
    return;
  c->closing = true;
  c->close_cb = cb;
  c->close_data = data;
  /* Unlinked first, so a new daemon may bind the path at once. */
  if (unlink(c->path) != 0 && errno != ENOENT)
    log_warning("control: cannot remove %s: %s", c->path, strerror(errno));
  uv_close((uv_handle_t *)&c->server, server_close_cb);
  uv_close((uv_handle_t *)&c->timer, timer_close_cb);
  for (cl = c->clients; cl != NULL; cl = cl->next)
    client_close(cl);
}

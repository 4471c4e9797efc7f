#include "config.h"

#include "maildir.h"

#include "crash.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* Small writes are gathered into chunks of at most this size; a write this
 * large or larger gets a chunk of its own, copied once and written at once. */
#define CHUNK_MAX (64 * 1024)
/* The first chunk of a delivery; later ones double up to CHUNK_MAX, so a
 * small message does not pin 64 KiB while a large one soon uses big chunks. */
#define CHUNK_FIRST 4096
/* Chunks handed to one uv_fs_write (one pwritev). */
#define WRITE_IOV_MAX 64
/* Bytes of one chunk handed to one uv_fs_write. */
#define WRITE_BUF_MAX (1U << 30)
/* Room left in paths for "/tmp/" + a base name + ",S=" + a size. */
#define NAME_ROOM 256

struct chunk {
  struct chunk *next;
  size_t len;  /* bytes stored */
  size_t cap;  /* bytes allocated in data[] */
  bool frozen; /* part of the write in flight: libuv holds a pointer into it */
  char data[];
};

enum delivery_state {
  D_OPENING,   /* uv_fs_open in flight */
  D_IDLE,      /* nothing in flight */
  D_WRITING,   /* uv_fs_write in flight */
  D_FINISHING, /* the final uv_queue_work (commit or discard) in flight */
};

struct maildir_delivery {
  struct maildir *md;
  maildir_done_cb done_cb;
  void *data;
  enum delivery_state state;
  bool committed;
  bool aborted;
  bool commit_work; /* the final work renames (else it discards) */
  maildir_prerename_fn prerename; /* runs on the worker between fsync and rename */
  void *prerename_arg;
  int err;          /* first error, sticky; later writes are dropped */
  int work_err;     /* result of the final work */
  uv_file fd;       /* -1 until the open succeeds; owned */
  uint64_t written; /* bytes in the file */
  struct chunk *head, *tail;
  size_t head_off; /* bytes of head already in the file */
  size_t next_cap;
  uv_fs_t req;
  uv_work_t work;
  char *tmp_path; /* into paths[] */
  char *new_path; /* into paths[], filled at commit */
  char new_name[NAME_ROOM];
  char paths[];
};

struct maildir_barrier {
  struct maildir *md;
  maildir_barrier_cb cb;
  void *data;
  int err;
  uv_work_t work;
  char path[];
};

/* Process-wide so that two maildirs (or two accounts into one) never mint
 * the same name within one microsecond. */
static unsigned long unique_counter;

static void delivery_step(struct maildir_delivery *d);

/* ---- init */

static void set_err(char *errbuf, size_t errlen, const char *what, const char *path, int err) {
  if (errbuf != NULL && errlen > 0)
    snprintf(errbuf, errlen, "%s %s: %s", what, path, strerror(-err));
}

/* mkdir(path, 0700) unless it exists; either way it must end up a
 * directory we can create files in. */
static int ensure_dir(const struct maildir *md, const char *path, char *errbuf, size_t errlen) {
  struct stat st;

  if (mkdir(path, 0700) == 0) {
    /* lchown: the directory sits in the user's tree, and a symlink swapped
     * in after the mkdir must not make root chown its target. */
    if (md->chown_to_owner && lchown(path, md->owner_uid, md->owner_gid) != 0) {
      int err = -errno;
      set_err(errbuf, errlen, "cannot chown", path, err);
      return err;
    }
  } else if (errno != EEXIST) {
    int err = -errno;
    set_err(errbuf, errlen, "cannot create", path, err);
    return err;
  }
  if (stat(path, &st) != 0) {
    int err = -errno;
    set_err(errbuf, errlen, "cannot stat", path, err);
    return err;
  }
  if (!S_ISDIR(st.st_mode)) {
    set_err(errbuf, errlen, "cannot use", path, UV_ENOTDIR);
    return UV_ENOTDIR;
  }
  return 0;
}

/* mkdir -p: every missing component is created with mode 0700. */
static int ensure_path(const struct maildir *md, char *path, char *errbuf, size_t errlen) {
  char *p;
  int err;

  for (p = path + 1; *p != '\0'; p++) {
    if (*p != '/' || p[-1] == '/')
      continue;
    *p = '\0';
    err = ensure_dir(md, path, errbuf, errlen);
    *p = '/';
    if (err < 0)
      return err;
  }
  return ensure_dir(md, path, errbuf, errlen);
}

/* The Maildir spec's escapes, so that a host name never adds a directory
 * level or the ':' that starts the info part.  Never splits an escape. */
static void sanitize_hostname(char *dst, size_t dstlen, const char *src) {
  size_t n = 0;

  for (; *src != '\0'; src++) {
    const char *rep = NULL;
    char one[2] = {*src, '\0'};
    size_t rlen;

    if (*src == '/')
      rep = "\\057";
    else if (*src == ':')
      rep = "\\072";
    else
      rep = one;
    rlen = strlen(rep);
    if (n + rlen >= dstlen)
      break;
    memcpy(dst + n, rep, rlen);
    n += rlen;
  }
  dst[n] = '\0';
}

int maildir_init(struct maildir *md, uv_loop_t *loop, const char *path, char *errbuf,
                 size_t errlen) {
  return maildir_init_as(md, loop, path, (uid_t)-1, (gid_t)-1, errbuf, errlen);
}

int maildir_init_as(struct maildir *md, uv_loop_t *loop, const char *path, uid_t uid, gid_t gid,
                    char *errbuf, size_t errlen) {
  static const char *const subdirs[] = {"tmp", "new", "cur"};
  char host[256];
  char *sub;
  size_t len, i;
  int err;

  if (errbuf != NULL && errlen > 0)
    errbuf[0] = '\0';
  memset(md, 0, sizeof(*md));
  md->chown_to_owner = uid != (uid_t)-1;
  md->owner_uid = uid;
  md->owner_gid = gid;
  len = strlen(path);
  /* Trailing slashes would only double up in the paths we build. */
  while (len > 1 && path[len - 1] == '/')
    len--;
  if (len == 0 || len + NAME_ROOM + 32 >= PATH_MAX) {
    err = len == 0 ? UV_EINVAL : UV_ENAMETOOLONG;
    set_err(errbuf, errlen, "cannot use", len == 0 ? "\"\"" : path, err);
    return err;
  }
  md->path = malloc(len + 1);
  sub = malloc(len + 5);
  if (md->path == NULL || sub == NULL) {
    free(md->path);
    free(sub);
    md->path = NULL;
    set_err(errbuf, errlen, "cannot use", path, UV_ENOMEM);
    return UV_ENOMEM;
  }
  memcpy(md->path, path, len);
  md->path[len] = '\0';

  memcpy(sub, md->path, len + 1);
  err = ensure_path(md, sub, errbuf, errlen);
  for (i = 0; err == 0 && i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
    snprintf(sub, len + 5, "%s/%s", md->path, subdirs[i]);
    err = ensure_dir(md, sub, errbuf, errlen);
    /* Root passes access(), but a read-only mount does not. */
    if (err == 0 && access(sub, W_OK | X_OK) != 0) {
      err = -errno;
      set_err(errbuf, errlen, "cannot write to", sub, err);
    }
  }
  free(sub);
  if (err < 0) {
    free(md->path);
    md->path = NULL;
    return err;
  }

  if (gethostname(host, sizeof(host)) != 0)
    strcpy(host, "localhost");
  host[sizeof(host) - 1] = '\0';
  sanitize_hostname(md->hostname, sizeof(md->hostname), host);
  md->loop = loop;
  md->counter = unique_counter;
  return 0;
}

void maildir_deinit(struct maildir *md) {
  free(md->path);
  md->path = NULL;
}

int maildir_unique_name(struct maildir *md, char *buf, size_t buflen) {
  uv_timeval64_t tv;
  int n, err;

  err = uv_gettimeofday(&tv);
  if (err < 0)
    return err;
  md->counter = ++unique_counter;
  n = snprintf(buf, buflen, "%lld.M%ldP%ldQ%lu.%s", (long long)tv.tv_sec, (long)tv.tv_usec,
               (long)uv_os_getpid(), md->counter, md->hostname);
  if (n < 0 || (size_t)n >= buflen)
    return UV_ENOBUFS;
  return 0;
}

/* ---- chunks */

static void drop_queue(struct maildir_delivery *d) {
  struct chunk *c, *next;

  for (c = d->head; c != NULL; c = next) {
    next = c->next;
    d->md->queued_bytes -= c == d->head ? c->len - d->head_off : c->len;
    free(c);
  }
  d->head = d->tail = NULL;
  d->head_off = 0;
}

/* The first error wins; queued data can go once libuv no longer points into
 * it, i.e. whenever nothing is in flight. */
static void delivery_fail(struct maildir_delivery *d, int err) {
  if (d->err == 0)
    d->err = err;
  if (d->state != D_WRITING)
    drop_queue(d);
}

/* ---- thread pool work (these run off the loop thread) */

/* rename() would silently replace a message that already has this name;
 * refuse instead.  Falls back to link+unlink, then to rename, on file
 * systems that support neither RENAME_NOREPLACE nor hard links. */
static int rename_noreplace(const char *from, const char *to) {
#ifdef RENAME_NOREPLACE
  if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
    return 0;
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
    return -errno;
#endif
  if (link(from, to) == 0) {
    /* The message is in new/ now; a stale tmp/ entry is harmless. */
    unlink(from);
    return 0;
  }
  if (errno != EPERM && errno != ENOTSUP && errno != ENOSYS)
    return -errno;
  if (rename(from, to) != 0)
    return -errno;
  return 0;
}

static void finish_work(uv_work_t *w) {
  struct maildir_delivery *d = w->data;
  int err = 0;

  if (d->commit_work) {
    /* fsync before rename: the name in new/ must never point at data that
     * is not on disk. */
    if (d->md->chown_to_owner && fchown(d->fd, d->md->owner_uid, d->md->owner_gid) != 0)
      err = -errno;
    P3_CRASH_POINT("after-write");
    if (err == 0 && fsync(d->fd) != 0)
      err = -errno;
    if (close(d->fd) != 0 && err == 0)
      err = -errno;
    d->fd = -1;
    P3_CRASH_POINT("after-fsync");
    if (err == 0 && d->prerename)
      err = d->prerename(d->prerename_arg, d->new_name);
    if (err == 0)
      err = rename_noreplace(d->tmp_path, d->new_path);
    if (err == 0)
      P3_CRASH_POINT("after-rename");
    if (err < 0)
      unlink(d->tmp_path);
  } else if (d->fd >= 0) {
    close(d->fd);
    d->fd = -1;
    unlink(d->tmp_path);
  }
  d->work_err = err;
}

static void finish_done(uv_work_t *w, int status) {
  struct maildir_delivery *d = w->data;
  struct maildir *md = d->md;
  int err;

  (void)status; /* never canceled: we do not call uv_cancel */
  if (d->commit_work && d->work_err == 0)
    err = 0;
  else if (d->err != 0)
    err = d->err;
  else if (d->work_err != 0)
    err = d->work_err;
  else
    err = UV_ECANCELED;
  md->active--;
  d->done_cb(d, err, err == 0 ? d->new_name : NULL, d->written, d->data);
  free(d);
}

/* ---- the delivery state machine (loop thread) */

static void start_finish(struct maildir_delivery *d) {
  int err;

  d->commit_work = d->committed && !d->aborted && d->err == 0 && d->fd >= 0;
  if (d->commit_work) {
    size_t dirlen = strlen(d->md->path);
    int n = snprintf(d->new_name, sizeof(d->new_name), "%s,S=%llu", d->tmp_path + dirlen + 5,
                     (unsigned long long)d->written);

    if (n < 0 || (size_t)n >= sizeof(d->new_name)) {
      d->err = UV_ENAMETOOLONG;
      d->commit_work = false;
    } else {
      snprintf(d->new_path, dirlen + 5 + sizeof(d->new_name), "%s/new/%s", d->md->path,
               d->new_name);
    }
  }
  d->state = D_FINISHING;
  d->work.data = d;
  err = uv_queue_work(d->md->loop, &d->work, finish_work, finish_done);
  if (err < 0) {
    /* Cannot happen with a live loop; still keep done_cb's promise. */
    if (d->fd >= 0) {
      close(d->fd);
      unlink(d->tmp_path);
      d->fd = -1;
    }
    if (d->err == 0)
      d->err = err;
    d->commit_work = false;
    finish_done(&d->work, err);
  }
}

static void write_cb(uv_fs_t *req) {
  struct maildir_delivery *d = req->data;
  ssize_t res = req->result;
  struct chunk *c;
  size_t left;

  uv_fs_req_cleanup(req);
  d->state = D_IDLE;
  for (c = d->head; c != NULL; c = c->next)
    c->frozen = false;
  if (res < 0) {
    delivery_fail(d, (int)res);
  } else if (res == 0) {
    /* A regular file never takes zero bytes of a non-empty write; do not
     * spin on it. */
    delivery_fail(d, UV_EIO);
  } else {
    d->written += (uint64_t)res;
    d->md->queued_bytes -= (size_t)res;
    /* Free what is in the file; a short write leaves the rest queued. */
    for (left = (size_t)res; left > 0;) {
      c = d->head;
      if (c->len - d->head_off > left) {
        d->head_off += left;
        break;
      }
      left -= c->len - d->head_off;
      d->head = c->next;
      d->head_off = 0;
      free(c);
    }
    if (d->head == NULL)
      d->tail = NULL;
  }
  delivery_step(d);
}

static void start_write(struct maildir_delivery *d) {
  uv_buf_t bufs[WRITE_IOV_MAX];
  struct chunk *c;
  unsigned n = 0;
  int err;

  for (c = d->head; c != NULL && n < WRITE_IOV_MAX; c = c->next) {
    size_t off = c == d->head ? d->head_off : 0;
    size_t len = c->len - off;

    c->frozen = true;
    /* uv_buf_t holds an unsigned int; a bigger chunk goes in pieces, as if
     * the kernel had written short, and nothing after it may ride along. */
    if (len > WRITE_BUF_MAX) {
      bufs[n++] = uv_buf_init(c->data + off, WRITE_BUF_MAX);
      break;
    }
    bufs[n++] = uv_buf_init(c->data + off, (unsigned)len);
  }
  d->state = D_WRITING;
  d->req.data = d;
  /* uv_fs_write copies bufs[]; the chunks stay put until write_cb. */
  err = uv_fs_write(d->md->loop, &d->req, d->fd, bufs, n, (int64_t)d->written, write_cb);
  if (err < 0) {
    uv_fs_req_cleanup(&d->req);
    for (c = d->head; c != NULL; c = c->next)
      c->frozen = false;
    d->state = D_IDLE;
    delivery_fail(d, err);
  }
}

/* Called whenever something changed; starts the next operation if nothing
 * is in flight.  Never calls done_cb directly: that only happens from the
 * final work's callback, so no public call re-enters the caller. */
static void delivery_step(struct maildir_delivery *d) {
  if (d->state != D_IDLE)
    return;
  if (d->err != 0 || d->aborted)
    drop_queue(d);
  if (d->head != NULL && d->fd >= 0) {
    start_write(d);
    if (d->state == D_WRITING)
      return;
  }
  if (d->committed || d->aborted)
    start_finish(d);
}

static void open_cb(uv_fs_t *req) {
  struct maildir_delivery *d = req->data;
  ssize_t res = req->result;

  uv_fs_req_cleanup(req);
  d->state = D_IDLE;
  if (res < 0)
    delivery_fail(d, (int)res); /* EEXIST included: that file is not ours */
  else
    d->fd = (uv_file)res;
  delivery_step(d);
}

int maildir_open(struct maildir *md, maildir_done_cb done_cb, void *data,
                 struct maildir_delivery **d_r) {
  struct maildir_delivery *d;
  char base[NAME_ROOM];
  size_t dirlen = strlen(md->path);
  size_t tmplen, newlen;
  int err;

  *d_r = NULL;
  err = maildir_unique_name(md, base, sizeof(base));
  if (err < 0)
    return err;
  tmplen = dirlen + 5 + strlen(base) + 1;
  newlen = dirlen + 5 + NAME_ROOM;
  d = calloc(1, sizeof(*d) + tmplen + newlen);
  if (d == NULL)
    return UV_ENOMEM;
  d->md = md;
  d->done_cb = done_cb;
  d->data = data;
  d->fd = -1;
  d->next_cap = CHUNK_FIRST;
  d->tmp_path = d->paths;
  d->new_path = d->paths + tmplen;
  snprintf(d->tmp_path, tmplen, "%s/tmp/%s", md->path, base);

  d->state = D_OPENING;
  d->req.data = d;
  err = uv_fs_open(md->loop, &d->req, d->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600,
                   open_cb);
  if (err < 0) {
    uv_fs_req_cleanup(&d->req);
    free(d);
    return err;
  }
  md->active++;
  *d_r = d;
  return 0;
}

int maildir_write(struct maildir_delivery *d, const char *buf, size_t len) {
  struct chunk *t = d->tail, *c = NULL;
  size_t room = 0, rest;

  if (d->committed || d->aborted)
    return UV_EINVAL;
  if (d->err != 0 || len == 0)
    return 0;
  if (t != NULL && !t->frozen)
    room = t->cap - t->len;
  if (room > len)
    room = len;
  rest = len - room;
  /* Allocate before copying anything, so a failure leaves nothing half
   * queued. */
  if (rest > 0) {
    size_t cap = rest;

    if (cap < CHUNK_MAX) {
      cap = d->next_cap > rest ? d->next_cap : rest;
      if (cap > CHUNK_MAX)
        cap = CHUNK_MAX;
      if (d->next_cap < CHUNK_MAX)
        d->next_cap *= 2;
    }
    c = malloc(sizeof(*c) + cap);
    if (c == NULL) {
      /* A message with a hole must never be committed. */
      delivery_fail(d, UV_ENOMEM);
      return UV_ENOMEM;
    }
    c->next = NULL;
    c->len = rest;
    c->cap = cap;
    c->frozen = false;
    memcpy(c->data, buf + room, rest);
  }
  if (room > 0) {
    memcpy(t->data + t->len, buf, room);
    t->len += room;
  }
  if (c != NULL) {
    if (d->tail != NULL)
      d->tail->next = c;
    else
      d->head = c;
    d->tail = c;
  }
  d->md->queued_bytes += len;
  delivery_step(d);
  return 0;
}

void maildir_commit_with(struct maildir_delivery *d, maildir_prerename_fn fn, void *arg) {
  d->prerename = fn;
  d->prerename_arg = arg;
  maildir_commit(d);
}

void maildir_commit(struct maildir_delivery *d) {
  if (d->committed || d->aborted)
    return;
  d->committed = true;
  delivery_step(d);
}

void maildir_abort(struct maildir_delivery *d) {
  if (d->committed || d->aborted)
    return;
  d->aborted = true;
  delivery_step(d);
}

int maildir_delivery_error(const struct maildir_delivery *d) {
  return d->err;
}

/* ---- barrier */

static void barrier_work(uv_work_t *w) {
  struct maildir_barrier *b = w->data;
  int fd, err = 0;

  fd = open(b->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    b->err = -errno;
    return;
  }
  if (fsync(fd) != 0)
    err = -errno;
  close(fd);
  b->err = err;
}

static void barrier_done(uv_work_t *w, int status) {
  struct maildir_barrier *b = w->data;

  (void)status;
  b->md->active--;
  b->cb(b->err, b->data);
  free(b);
}

int maildir_barrier(struct maildir *md, maildir_barrier_cb cb, void *data) {
  size_t len = strlen(md->path) + sizeof("/new");
  struct maildir_barrier *b = malloc(sizeof(*b) + len);
  int err;

  if (b == NULL)
    return UV_ENOMEM;
  b->md = md;
  b->cb = cb;
  b->data = data;
  b->err = 0;
  snprintf(b->path, len, "%s/new", md->path);
  b->work.data = b;
  err = uv_queue_work(md->loop, &b->work, barrier_work, barrier_done);
  if (err < 0) {
    free(b);
    return err;
  }
  md->active++;
  return 0;
}

#include "config.h"

#include "maildir.h"

#include "crash.h"
#include "errors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
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
/* Room for a base name + ",S=" + a size. */
#define NAME_ROOM 256

struct chunk {
  struct chunk *next;
  size_t len;  /* bytes stored */
  size_t cap;  /* bytes allocated in data[] */
  bool frozen; /* part of the write in flight: libuv holds a pointer into it */
  char data[];
};

enum delivery_state {
  D_OPENING,   /* the openat work in flight */
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
  bool commit_work;               /* the final work renames (else it discards) */
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
  uv_work_t work;           /* the open, then the final work */
  char tmp_name[NAME_ROOM]; /* in tmp/ */
  char new_name[NAME_ROOM]; /* in new/, filled at commit */
};

struct maildir_barrier {
  struct maildir *md;
  maildir_barrier_cb cb;
  void *data;
  int err;
  uv_work_t work;
};

/* Process-wide so that two maildirs (or two accounts into one) never mint
 * the same name within one microsecond. */
static unsigned long unique_counter;

static void delivery_step(struct maildir_delivery *d);

/* ---- init */

static const char *const subdir_names[] = {"tmp", "new", "cur"};

static void set_err(char *errbuf, size_t errlen, const char *what, const char *path, int err) {
  p3_set_error(errbuf, errlen, "%s %s: %s", what, path, strerror(-err));
}

/* mkdir(path, 0700) unless it exists; either way it must end up a
 * directory.  Used only for the Maildir and its parents, resolved as the
 * user who runs us, so following a symlink here is that user's choice. */
static int ensure_dir(const char *path, char *errbuf, size_t errlen) {
  struct stat st;

  if (mkdir(path, 0700) != 0 && errno != EEXIST) {
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
static int ensure_path(char *path, char *errbuf, size_t errlen) {
  char *p;
  int err;

  for (p = path + 1; *p != '\0'; p++) {
    if (*p != '/' || p[-1] == '/')
      continue;
    *p = '\0';
    err = ensure_dir(path, errbuf, errlen);
    *p = '/';
    if (err < 0)
      return err;
  }
  return ensure_dir(path, errbuf, errlen);
}

/* Creates (0700, if missing) and opens one of tmp/ new/ cur/ below dirfd
 * without following a symlink; returns the fd or a negative errno. */
static int open_subdir(int dirfd, const char *mdpath, const char *name, char *errbuf,
                       size_t errlen) {
  struct stat st;
  int fd, err;

  if (mkdirat(dirfd, name, 0700) != 0 && errno != EEXIST) {
    err = -errno;
    p3_set_error(errbuf, errlen, "cannot create %s/%s: %s", mdpath, name, strerror(-err));
    return err;
  }
  fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    err = -errno;
    /* O_NOFOLLOW says ELOOP (or ENOTDIR with O_DIRECTORY) for a symlink:
     * name it plainly, whatever the kernel chose. */
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
      p3_set_error(errbuf, errlen, "%s/%s is a symbolic link; refusing to follow it", mdpath, name);
      return UV_ELOOP;
    }
    p3_set_error(errbuf, errlen, "cannot use %s/%s: %s", mdpath, name, strerror(-err));
    return err;
  }
  /* Root passes this, but a read-only mount does not. */
  if (faccessat(fd, ".", W_OK | X_OK, 0) != 0) {
    err = -errno;
    p3_set_error(errbuf, errlen, "cannot write to %s/%s: %s", mdpath, name, strerror(-err));
    close(fd);
    return err;
  }
  return fd;
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
  char host[256];
  size_t len, i;
  int dirfd, err = 0;

  if (errbuf != NULL && errlen > 0)
    errbuf[0] = '\0';
  memset(md, 0, sizeof(*md));
  for (i = 0; i < 3; i++)
    md->fds[i] = -1;
  len = strlen(path);
  /* Trailing slashes would only double up in the paths we name. */
  while (len > 1 && path[len - 1] == '/')
    len--;
  if (len == 0 || len + NAME_ROOM + 32 >= PATH_MAX) {
    err = len == 0 ? UV_EINVAL : UV_ENAMETOOLONG;
    set_err(errbuf, errlen, "cannot use", len == 0 ? "\"\"" : path, err);
    return err;
  }
  if ((md->path = malloc(len + 1)) == NULL) {
    set_err(errbuf, errlen, "cannot use", path, UV_ENOMEM);
    return UV_ENOMEM;
  }
  memcpy(md->path, path, len);
  md->path[len] = '\0';

  /* ensure_path writes into its argument: a copy. */
  {
    char *tmp = strdup(md->path);
    if (tmp == NULL) {
      err = UV_ENOMEM;
      set_err(errbuf, errlen, "cannot use", md->path, err);
    } else {
      err = ensure_path(tmp, errbuf, errlen);
      free(tmp);
    }
  }
  /* The one lookup of the configured path; all else is relative. */
  if (err == 0 && (dirfd = open(md->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
    err = -errno;
    set_err(errbuf, errlen, "cannot open", md->path, err);
  }
  if (err == 0) {
    for (i = 0; err == 0 && i < 3; i++) {
      int fd = open_subdir(dirfd, md->path, subdir_names[i], errbuf, errlen);
      if (fd < 0)
        err = fd;
      else
        md->fds[i] = fd;
    }
    close(dirfd);
  }
  if (err < 0) {
    maildir_deinit(md);
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
  size_t i;

  for (i = 0; i < 3; i++) {
    if (md->fds[i] >= 0)
      close(md->fds[i]);
    md->fds[i] = -1;
  }
  free(md->path);
  md->path = NULL;
  while (md->spare != NULL) {
    struct chunk *c = md->spare;

    md->spare = c->next;
    free(c);
  }
  md->spare_count = 0;
}

int maildir_dirfd(const struct maildir *md, enum maildir_sub sub) {
  return md->fds[sub];
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

/* ---- tmp/ hygiene */

/* One or more decimal digits at *p, at most maxlen; advances *p. */
static bool take_digits(const char **p, size_t maxlen, long *v_r) {
  const char *s = *p;
  long v = 0;
  size_t n = 0;

  while (*s >= '0' && *s <= '9') {
    if (++n > maxlen)
      return false;
    v = v * 10 + (*s++ - '0');
  }
  if (n == 0)
    return false;
  *p = s;
  *v_r = v;
  return true;
}

int maildir_parse_name(const char *name, long *pid_r, const char **host_r) {
  const char *p = name, *h;
  long v, pid;

  /* Exactly what maildir_unique_name prints: "%lld.M%ldP%ldQ%lu.%s",
   * the host sanitized (no '/' or ':'); tmp/ names carry no ",S=". */
  if (!take_digits(&p, 20, &v) || strncmp(p, ".M", 2) != 0)
    return 0;
  p += 2;
  if (!take_digits(&p, 6, &v) || *p++ != 'P')
    return 0;
  if (!take_digits(&p, 10, &pid) || pid <= 0 || *p++ != 'Q')
    return 0;
  if (!take_digits(&p, 20, &v) || *p++ != '.')
    return 0;
  h = p;
  if (*h == '\0' || strchr(h, ':') != NULL || strchr(h, '/') != NULL || strstr(h, ",S=") != NULL)
    return 0;
  *pid_r = pid;
  *host_r = h;
  return 1;
}

int maildir_clean_tmp(struct maildir *md, time_t now, time_t max_age,
                      void (*removed)(void *arg, const char *name), void *arg) {
  int tmpfd = md->fds[MAILDIR_TMP];
  struct dirent *de;
  struct stat st;
  int fd, n = 0;
  DIR *dir;

  /* A dup shares the file offset with tmpfd: rewind before reading. */
  if ((fd = fcntl(tmpfd, F_DUPFD_CLOEXEC, 0)) < 0)
    return -errno;
  if ((dir = fdopendir(fd)) == NULL) {
    int err = -errno;
    close(fd);
    return err;
  }
  rewinddir(dir);
  while ((de = readdir(dir)) != NULL) {
    const char *host;
    long pid;
    bool old, dead = false;

    if (!maildir_parse_name(de->d_name, &pid, &host))
      continue;
    if (fstatat(tmpfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
      continue;
    old = now - st.st_mtime > max_age;
    if (!old && strcmp(host, md->hostname) == 0 && pid != (long)getpid())
      dead = kill((pid_t)pid, 0) != 0 && errno == ESRCH;
    if ((old || dead) && unlinkat(tmpfd, de->d_name, 0) == 0) {
      n++;
      if (removed != NULL)
        removed(arg, de->d_name);
    }
  }
  closedir(dir);
  return n;
}

/* ---- root and a user's Maildir */

/* "alice", or "uid 1234" when there is no such user. */
int maildir_find_files(int dirfd, int (*want)(void *arg, const char *base, size_t len),
                       void (*found)(void *arg, const char *base, size_t len), void *arg) {
  struct dirent *de;
  struct stat sb;
  DIR *dir;
  int fd, err = 0;

  if (dirfd < 0)
    return 0;
  /* A dup shares the offset with dirfd: rewind before reading. */
  if ((fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0)) < 0)
    return -errno;
  if ((dir = fdopendir(fd)) == NULL) {
    err = -errno;
    close(fd);
    return err;
  }
  rewinddir(dir);
  for (;;) {
    const char *colon;
    size_t len;
    errno = 0;
    if ((de = readdir(dir)) == NULL) {
      err = -errno;
      break;
    }
    colon = strchr(de->d_name, ':');
    len = colon != NULL ? (size_t)(colon - de->d_name) : strlen(de->d_name);
    /* Stat only the names asked for: the Maildir may be large. */
    if (want(arg, de->d_name, len) && fstatat(dirfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISREG(sb.st_mode))
      found(arg, de->d_name, len);
  }
  closedir(dir);
  return err;
}

static void user_name(uid_t uid, char *buf, size_t len) {
  struct passwd pw, *res = NULL;
  char pwbuf[1024];

  if (getpwuid_r(uid, &pw, pwbuf, sizeof(pwbuf), &res) == 0 && res != NULL)
    snprintf(buf, len, "%s", pw.pw_name);
  else
    snprintf(buf, len, "uid %lu", (unsigned long)uid);
}

int maildir_check_owner(const char *path, char *errbuf, size_t errlen) {
  char buf[PATH_MAX], who[128];
  struct stat st;
  bool first = true;
  size_t len;

  if (geteuid() != 0)
    return 0;
  len = strlen(path);
  if (len == 0 || len >= sizeof(buf))
    return 0; /* maildir_init reports it */
  memcpy(buf, path, len + 1);
  /* path itself (if it exists) and every existing directory above it: a
   * user who owns any of them can swap what lies below.  A symlink counts
   * by its own owner and by its target's. */
  for (;; first = false) {
    char *slash;

    while (len > 1 && buf[len - 1] == '/')
      buf[--len] = '\0';
    if (lstat(buf, &st) == 0) {
      struct stat target;
      uid_t owner = st.st_uid;

      if (owner == 0 && S_ISLNK(st.st_mode) && stat(buf, &target) == 0)
        owner = target.st_uid;
      if (owner != 0) {
        user_name(owner, who, sizeof(who));
        if (first)
          p3_set_error(errbuf, errlen, "%s belongs to %s; run pop3 as %s", path, who, who);
        else
          p3_set_error(errbuf, errlen, "%s is in %s, which belongs to %s; run pop3 as %s", path,
                       buf, who, who);
        return P3_EROOTUSER;
      }
    }
    slash = strrchr(buf, '/');
    if (slash == NULL) {
      /* A relative path: what is left lies in the working directory. */
      if (getcwd(buf, sizeof(buf)) == NULL)
        return 0;
      len = strlen(buf);
      continue;
    }
    if (slash == buf)
      return 0; /* "/" itself: root's */
    *slash = '\0';
    len = (size_t)(slash - buf);
  }
}

/* ---- chunks */

/* What a chunk costs in md->mem_bytes. */
static size_t chunk_cost(const struct chunk *c) {
  return sizeof(*c) + c->cap;
}

/* A chunk of cap bytes: a spare one when cap is CHUNK_MAX (a bulk transfer
 * frees and allocates one per 64 KiB; reusing them spares malloc the
 * trimming and page faults), else a new one.  Counted in mem_bytes. */
static struct chunk *chunk_alloc(struct maildir *md, size_t cap) {
  struct chunk *c;

  if (cap == CHUNK_MAX && md->spare != NULL) {
    c = md->spare;
    md->spare = c->next;
    md->spare_count--;
  } else {
    c = malloc(sizeof(*c) + cap);
    if (c == NULL)
      return NULL;
  }
  c->next = NULL;
  c->len = 0;
  c->cap = cap;
  c->frozen = false;
  md->mem_bytes += chunk_cost(c);
  return c;
}

static void chunk_free(struct maildir *md, struct chunk *c) {
  md->mem_bytes -= chunk_cost(c);
  if (c->cap == CHUNK_MAX &&
      (md->spare_count + 1) * (sizeof(*c) + CHUNK_MAX) <= MAILDIR_SPARE_MAX) {
    c->next = md->spare;
    md->spare = c;
    md->spare_count++;
    return;
  }
  free(c);
}

static void drop_queue(struct maildir_delivery *d) {
  struct chunk *c, *next;

  for (c = d->head; c != NULL; c = next) {
    next = c->next;
    d->md->queued_bytes -= c == d->head ? c->len - d->head_off : c->len;
    chunk_free(d->md, c);
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

/* renameat() would silently replace a message that already has this name;
 * refuse instead.  Falls back to link+unlink, then to rename, on file
 * systems that support neither RENAME_NOREPLACE nor hard links.  Both
 * names are plain base names relative to the tmp/ and new/ fds. */
static int rename_noreplace(int fromfd, const char *from, int tofd, const char *to) {
#ifdef RENAME_NOREPLACE
  if (renameat2(fromfd, from, tofd, to, RENAME_NOREPLACE) == 0)
    return 0;
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
    return -errno;
#endif
  /* flags 0: linkat never follows a symlink at from. */
  if (linkat(fromfd, from, tofd, to, 0) == 0) {
    /* The message is in new/ now; a stale tmp/ entry is harmless. */
    unlinkat(fromfd, from, 0);
    return 0;
  }
  if (errno != EPERM && errno != ENOTSUP && errno != ENOSYS)
    return -errno;
  if (renameat(fromfd, from, tofd, to) != 0)
    return -errno;
  return 0;
}

static void finish_work(uv_work_t *w) {
  struct maildir_delivery *d = w->data;
  int tmpfd = d->md->fds[MAILDIR_TMP];
  int err = 0;

  if (d->commit_work) {
    /* fsync before rename: the name in new/ must never point at data that
     * is not on disk. */
    P3_CRASH_POINT("after-write");
    if (fsync(d->fd) != 0)
      err = -errno;
    if (close(d->fd) != 0 && err == 0)
      err = -errno;
    d->fd = -1;
    P3_CRASH_POINT("after-fsync");
    if (err == 0 && d->prerename)
      err = d->prerename(d->prerename_arg, d->new_name);
    if (err == 0)
      err = rename_noreplace(tmpfd, d->tmp_name, d->md->fds[MAILDIR_NEW], d->new_name);
    if (err == 0)
      P3_CRASH_POINT("after-rename");
    if (err < 0)
      unlinkat(tmpfd, d->tmp_name, 0);
  } else if (d->fd >= 0) {
    close(d->fd);
    d->fd = -1;
    unlinkat(tmpfd, d->tmp_name, 0);
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
  md->mem_bytes -= sizeof(*d);
  d->done_cb(d, err, err == 0 ? d->new_name : NULL, d->written, d->data);
  free(d);
}

/* ---- the delivery state machine (loop thread) */

static void start_finish(struct maildir_delivery *d) {
  int err;

  d->commit_work = d->committed && !d->aborted && d->err == 0 && d->fd >= 0;
  if (d->commit_work) {
    int n = snprintf(d->new_name, sizeof(d->new_name), "%s,S=%llu", d->tmp_name,
                     (unsigned long long)d->written);

    if (n < 0 || (size_t)n >= sizeof(d->new_name)) {
      d->err = UV_ENAMETOOLONG;
      d->commit_work = false;
    }
  }
  d->state = D_FINISHING;
  d->work.data = d;
  err = uv_queue_work(d->md->loop, &d->work, finish_work, finish_done);
  if (err < 0) {
    /* Cannot happen with a live loop; still keep done_cb's promise. */
    if (d->fd >= 0) {
      close(d->fd);
      unlinkat(d->md->fds[MAILDIR_TMP], d->tmp_name, 0);
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
      chunk_free(d->md, c);
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

/* The tmp file is created relative to the tmp/ fd, never through a path
 * and never through a symlink; libuv's uv_fs_open takes only paths, so
 * this is plain work on the same thread pool. */
static void open_work(uv_work_t *w) {
  struct maildir_delivery *d = w->data;
  int fd = openat(d->md->fds[MAILDIR_TMP], d->tmp_name,
                  O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);

  d->work_err = fd < 0 ? -errno : 0;
  d->fd = fd;
}

static void open_done(uv_work_t *w, int status) {
  struct maildir_delivery *d = w->data;

  (void)status; /* never canceled: we do not call uv_cancel */
  d->state = D_IDLE;
  if (d->work_err < 0)
    delivery_fail(d, d->work_err); /* EEXIST included: that file is not ours */
  d->work_err = 0;
  delivery_step(d);
}

int maildir_open(struct maildir *md, maildir_done_cb done_cb, void *data,
                 struct maildir_delivery **d_r) {
  struct maildir_delivery *d;
  int err;

  *d_r = NULL;
  d = calloc(1, sizeof(*d));
  if (d == NULL)
    return UV_ENOMEM;
  err = maildir_unique_name(md, d->tmp_name, sizeof(d->tmp_name));
  if (err < 0) {
    free(d);
    return err;
  }
  d->md = md;
  d->done_cb = done_cb;
  d->data = data;
  d->fd = -1;
  d->next_cap = CHUNK_FIRST;

  d->state = D_OPENING;
  d->work.data = d;
  err = uv_queue_work(md->loop, &d->work, open_work, open_done);
  if (err < 0) {
    free(d);
    return err;
  }
  md->active++;
  md->mem_bytes += sizeof(*d);
  *d_r = d;
  return 0;
}

void maildir_size_hint(struct maildir_delivery *d, uint64_t octets) {
  /* Only before the first chunk; a tiny hint still gets a useful chunk. */
  if (d->head != NULL || d->written > 0 || octets == 0)
    return;
  d->next_cap = octets >= CHUNK_MAX ? CHUNK_MAX : octets < 256 ? 256 : (size_t)octets;
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
    c = chunk_alloc(d->md, cap);
    if (c == NULL) {
      /* A message with a hole must never be committed. */
      delivery_fail(d, UV_ENOMEM);
      return UV_ENOMEM;
    }
    c->len = rest;
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

  b->err = fsync(b->md->fds[MAILDIR_NEW]) != 0 ? -errno : 0;
}

static void barrier_done(uv_work_t *w, int status) {
  struct maildir_barrier *b = w->data;

  (void)status;
  b->md->active--;
  b->cb(b->err, b->data);
  free(b);
}

int maildir_barrier(struct maildir *md, maildir_barrier_cb cb, void *data) {
  struct maildir_barrier *b = malloc(sizeof(*b));
  int err;

  if (b == NULL)
    return UV_ENOMEM;
  b->md = md;
  b->cb = cb;
  b->data = data;
  b->err = 0;
  b->work.data = b;
  err = uv_queue_work(md->loop, &b->work, barrier_work, barrier_done);
  if (err < 0) {
    free(b);
    return err;
  }
  md->active++;
  return 0;
}

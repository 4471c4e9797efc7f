/* The UID journal's file store: opens the journal safely (directory fd,
 * O_NOFOLLOW, ownership checks), holds its lock, reads it, repairs a torn
 * tail, and rewrites it for compaction (temp file, fsync, rename, fsync of
 * the directory).  What the lines mean is the pure model's (uidmodel.c);
 * the Maildir is looked at through maildir_find_files. */
#include "config.h"

#include "uidstate.h"

#include "errors.h"
#include "hashtab.h"
#include "maildir.h"
#include "uidmodel.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define HEADER UIDMODEL_HEADER
#define WHO_CAP 100
#define FILE_CAP ((off_t)256 << 20)
/* The compaction writer flushes in blocks of this size. */
#define WRITE_BLOCK (64 * 1024)

struct uidstate {
  struct uidmodel *model; /* owned: what the journal says */
  char *path;             /* NULL for a memory state; for messages */
  char *lock_path;
  const char *base;      /* path's last component, into path */
  const char *lock_base; /* into lock_path */
  int dir_fd;            /* the directory holding both: every open is relative */
  int fd;
  int lock_fd;
  bool locked; /* lock_fd holds the flock */
};

/* ---- the model, as uidstate.h's callers know it */

struct uidstate *uidstate_new_memory(void) {
  struct uidstate *st = calloc(1, sizeof(*st));

  if (st == NULL)
    return NULL;
  if ((st->model = uidmodel_new()) == NULL) {
    free(st);
    return NULL;
  }
  st->fd = -1;
  st->lock_fd = -1;
  st->dir_fd = -1;
  return st;
}

int uidstate_parse(struct uidstate *st, const char *buf, size_t len) {
  return uidmodel_parse(st->model, buf, len);
}

int uidstate_fd(const struct uidstate *st) {
  return st->fd;
}

const char *uidstate_path(const struct uidstate *st) {
  return st->path != NULL ? st->path : "";
}

int uidstate_dir_fd(const struct uidstate *st) {
  return st->path != NULL ? st->dir_fd : -1;
}

const char *uidstate_base(const struct uidstate *st) {
  return st->path != NULL && st->base != NULL ? st->base : "";
}

size_t uidstate_corrupt_lines(const struct uidstate *st) {
  return uidmodel_corrupt_lines(st->model);
}

const struct uidstate_rec *uidstate_find(const struct uidstate *st, const char *server,
                                         const char *uid) {
  return uidmodel_find(st->model, server, uid);
}

int uidstate_lockstep(const struct uidstate *st, const char *server) {
  return uidmodel_lockstep(st->model, server);
}

void uidstate_foreach(const struct uidstate *st,
                      int (*cb)(void *data, const struct uidstate_rec *r), void *data) {
  uidmodel_foreach(st->model, cb, data);
}

int uidstate_append_delivered(struct uidstate *st, const char *server, const char *uid,
                              uint64_t size, const char *name, time_t when, const uint8_t *digest,
                              char **line_r, size_t *len_r) {
  return uidmodel_append_delivered(st->model, server, uid, size, name, when, digest, line_r, len_r);
}

int uidstate_append_attempt(struct uidstate *st, const char *server, const char *uid, uint64_t size,
                            const char *error, time_t when, char **line_r, size_t *len_r) {
  return uidmodel_append_attempt(st->model, server, uid, size, error, when, line_r, len_r);
}

int uidstate_append_lockstep(struct uidstate *st, const char *server, int on, time_t when,
                             char **line_r, size_t *len_r) {
  return uidmodel_append_lockstep(st->model, server, on, when, line_r, len_r);
}

int uidstate_append_barrier(struct uidstate *st, time_t when, char **line_r, size_t *len_r) {
  return uidmodel_append_barrier(st->model, when, line_r, len_r);
}

int uidstate_append_forget(struct uidstate *st, const char *server, const char *uid, time_t when,
                           char **line_r, size_t *len_r) {
  return uidmodel_append_forget(st->model, server, uid, when, line_r, len_r);
}

int uidstate_append_retire(struct uidstate *st, const char *server, const char *uid, time_t when,
                           char **line_r, size_t *len_r) {
  return uidmodel_append_retire(st->model, server, uid, when, line_r, len_r);
}

int uidstate_format_delivered(const char *server, const char *uid, uint64_t size, const char *name,
                              time_t when, const uint8_t *digest, char *buf, size_t buflen) {
  return uidmodel_format_delivered(server, uid, size, name, when, digest, buf, buflen);
}

int uidstate_set_size(struct uidstate *st, const char *server, const char *uid, uint64_t size) {
  return uidmodel_set_size(st->model, server, uid, size);
}

/* ---- file helpers */

static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

static int fsync_retry(int fd) {
  while (fsync(fd) != 0)
    if (errno != EINTR)
      return -errno;
  return 0;
}

/* The directory part of path ("." or "/" when there is none) in out
 * (PATH_MAX bytes). */
static void parent_of(const char *path, char *out) {
  const char *slash = strrchr(path, '/');
  size_t len;

  if (slash == NULL) {
    strcpy(out, ".");
    return;
  }
  /* Several slashes in a row separate just once. */
  while (slash > path && slash[-1] == '/')
    slash--;
  len = slash == path ? 1 : (size_t)(slash - path);
  memcpy(out, path, len);
  out[len] = '\0';
}

/* mkdir -p of path's parent, each new component 0700. */
static int make_parents(const char *path, char *errbuf, size_t errlen) {
  char dir[PATH_MAX];
  struct stat sb;
  char *p;

  parent_of(path, dir);
  for (p = dir + 1;; p++) {
    bool last = *p == '\0';
    if (!last && (*p != '/' || p[-1] == '/'))
      continue;
    *p = '\0';
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
      int err = -errno;
      p3_set_error(errbuf, errlen, "cannot create directory %s: %s", dir, strerror(-err));
      return err;
    }
    if (last)
      break;
    *p = '/';
  }
  if (stat(dir, &sb) != 0) {
    int err = -errno;
    p3_set_error(errbuf, errlen, "cannot create directory %s: %s", dir, strerror(-err));
    return err;
  }
  if (!S_ISDIR(sb.st_mode)) {
    p3_set_error(errbuf, errlen, "cannot create directory %s: %s", dir, strerror(ENOTDIR));
    return -ENOTDIR;
  }
  return 0;
}

/* Opens the directory that holds the state and its lock (following
 * symlinks in its path: they are the user's own), and refuses it unless
 * it belongs to the effective uid and is not writable by group or others
 * (nobody else may swap a file in it).  Returns P3_EUNSAFE with errbuf
 * naming it, or a negative errno. */
static int open_dir(struct uidstate *st, char *errbuf, size_t errlen) {
  char dir[PATH_MAX];
  struct stat sb;
  int err;

  parent_of(st->path, dir);
  if ((st->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
    err = -errno;
    p3_set_error(errbuf, errlen, "cannot open directory %s: %s", dir, strerror(-err));
    return err;
  }
  if (fstat(st->dir_fd, &sb) != 0) {
    err = -errno;
    p3_set_error(errbuf, errlen, "cannot stat directory %s: %s", dir, strerror(-err));
    return err;
  }
  if (sb.st_uid != geteuid()) {
    p3_set_error(errbuf, errlen,
                 "refusing %s: its directory %s belongs to uid %lu, not to uid %lu (who runs "
                 "pop3sync)",
                 st->path, dir, (unsigned long)sb.st_uid, (unsigned long)geteuid());
    return P3_EUNSAFE;
  }
  if ((sb.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    p3_set_error(errbuf, errlen,
                 "refusing %s: its directory %s is writable by group or others (mode %04o)",
                 st->path, dir, (unsigned)(sb.st_mode & 07777));
    return P3_EUNSAFE;
  }
  return 0;
}

/* A state or lock file must be a regular file with one link that belongs
 * to the effective uid (like OpenSMTPD's secure_file): a hard link to
 * somebody else's file is not ours to rewrite. */
static int check_file(int fd, const char *path, char *errbuf, size_t errlen) {
  struct stat sb;
  int err;

  if (fstat(fd, &sb) != 0) {
    err = -errno;
    p3_set_error(errbuf, errlen, "cannot stat %s: %s", path, strerror(-err));
    return err;
  }
  if (!S_ISREG(sb.st_mode)) {
    p3_set_error(errbuf, errlen, "refusing %s: not a regular file", path);
    return P3_EUNSAFE;
  }
  if (sb.st_nlink != 1) {
    p3_set_error(errbuf, errlen, "refusing %s: it has %lu hard links", path,
                 (unsigned long)sb.st_nlink);
    return P3_EUNSAFE;
  }
  if (sb.st_uid != geteuid()) {
    p3_set_error(errbuf, errlen,
                 "refusing %s: it belongs to uid %lu, not to uid %lu (who runs "
                 "pop3sync)",
                 path, (unsigned long)sb.st_uid, (unsigned long)geteuid());
    return P3_EUNSAFE;
  }
  return 0;
}

/* openat(dir_fd, base, flags | O_NOFOLLOW, 0600), then check_file.
 * Returns the fd or a negative error with errbuf naming path. */
static int open_file(const struct uidstate *st, const char *base, const char *path, int flags,
                     char *errbuf, size_t errlen) {
  struct stat sb;
  int fd, err;

  fd = openat(st->dir_fd, base, flags | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    err = -errno;
    if (fstatat(st->dir_fd, base, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode)) {
      p3_set_error(errbuf, errlen, "%s is a symbolic link; refusing to follow it", path);
      return P3_EUNSAFE;
    }
    if (err == -EISDIR)
      p3_set_error(errbuf, errlen, "%s is a directory", path);
    else
      p3_set_error(errbuf, errlen, "cannot open %s: %s", path, strerror(-err));
    return err;
  }
  if ((err = check_file(fd, path, errbuf, errlen)) < 0) {
    close(fd);
    return err;
  }
  return fd;
}

/* "pid 1234 (pop3syncd)" from the lock file, for the message. */
static void read_holder(int fd, char *out, size_t outlen) {
  ssize_t n;
  size_t i;

  do
    n = pread(fd, out, outlen - 1, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    n = 0;
  while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
    n--;
  out[n] = '\0';
  for (i = 0; i < (size_t)n; i++)
    if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
      out[i] = '?';
}

static int take_lock(struct uidstate *st, const char *who, char *errbuf, size_t errlen) {
  char msg[32 + WHO_CAP + 1], holder[160];
  size_t i, n;
  int err;

  st->lock_fd = open_file(st, st->lock_base, st->lock_path, O_RDWR | O_CREAT, errbuf, errlen);
  if (st->lock_fd < 0)
    return st->lock_fd;
  while (flock(st->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR)
      continue;
    err = -errno;
    if (err == -EWOULDBLOCK) {
      read_holder(st->lock_fd, holder, sizeof(holder));
      if (holder[0] != '\0')
        p3_set_error(errbuf, errlen, "%s is locked by %s", st->path, holder);
      else
        p3_set_error(errbuf, errlen, "%s is locked by another process", st->path);
      return P3_ELOCKED;
    }
    p3_set_error(errbuf, errlen, "cannot lock %s: %s", st->lock_path, strerror(-err));
    return err;
  }
  st->locked = true;
  n = (size_t)snprintf(msg, sizeof(msg), "pid %ld (", (long)getpid());
  for (i = 0; who[i] != '\0' && i < WHO_CAP; i++)
    msg[n++] = ((unsigned char)who[i] < 0x20 || who[i] == 0x7f) ? '?' : who[i];
  msg[n++] = ')';
  msg[n++] = '\n';
  if (ftruncate(st->lock_fd, 0) != 0) {
    err = -errno;
  } else {
    ssize_t w = pwrite(st->lock_fd, msg, n, 0);
    err = w < 0 ? -errno : (size_t)w != n ? -EIO : 0;
  }
  if (err < 0) {
    p3_set_error(errbuf, errlen, "cannot write %s: %s", st->lock_path, strerror(-err));
    return err;
  }
  return 0;
}

/* Reads the whole journal into a malloc'd buffer (*len_r bytes). */
static int read_journal(struct uidstate *st, char **buf_r, size_t *len_r, char *errbuf,
                        size_t errlen) {
  struct stat sb;
  char *buf;
  size_t len = 0, cap;
  int err;

  if (fstat(st->fd, &sb) != 0) {
    err = -errno;
    p3_set_error(errbuf, errlen, "cannot stat %s: %s", st->path, strerror(-err));
    return err;
  }
  if (!S_ISREG(sb.st_mode)) {
    p3_set_error(errbuf, errlen, "%s is not a regular file", st->path);
    return -EINVAL;
  }
  if (sb.st_size > FILE_CAP) {
    p3_set_error(errbuf, errlen, "%s is too large (%lld bytes; at most %lld)", st->path,
                 (long long)sb.st_size, (long long)FILE_CAP);
    return -EFBIG;
  }
  /* One byte more than the size says, so that growth shows (it should
   * not: we hold the lock) and stays bounded. */
  cap = (size_t)sb.st_size + 1;
  if ((buf = malloc(cap)) == NULL) {
    p3_set_error(errbuf, errlen, "cannot read %s: %s", st->path, strerror(ENOMEM));
    return -ENOMEM;
  }
  for (;;) {
    ssize_t n = pread(st->fd, buf + len, cap - len, (off_t)len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      err = -errno;
      free(buf);
      p3_set_error(errbuf, errlen, "cannot read %s: %s", st->path, strerror(-err));
      return err;
    }
    if (n == 0)
      break;
    len += (size_t)n;
    if (len == cap) {
      char *more;
      if ((off_t)cap > FILE_CAP) {
        free(buf);
        p3_set_error(errbuf, errlen, "%s is too large (more than %lld bytes)", st->path,
                     (long long)FILE_CAP);
        return -EFBIG;
      }
      cap = cap * 2 > (size_t)FILE_CAP + 1 ? (size_t)FILE_CAP + 1 : cap * 2;
      if ((more = realloc(buf, cap)) == NULL) {
        free(buf);
        p3_set_error(errbuf, errlen, "cannot read %s: %s", st->path, strerror(ENOMEM));
        return -ENOMEM;
      }
      buf = more;
    }
  }
  *buf_r = buf;
  *len_r = len;
  return 0;
}

/* ---- open / close */

void uidstate_close(struct uidstate *st) {
  if (st == NULL)
    return;
  if (st->fd >= 0)
    close(st->fd);
  if (st->lock_fd >= 0 && st->locked) {
    /* Still holding the lock, so nobody else's pid is erased; a later
     * "locked by" message then never names a process that has gone. */
    if (ftruncate(st->lock_fd, 0) != 0) {
      /* Harmless: the next holder rewrites it. */
    }
  }
  if (st->lock_fd >= 0)
    close(st->lock_fd);
  if (st->dir_fd >= 0)
    close(st->dir_fd);
  uidmodel_free(st->model);
  free(st->path);
  free(st->lock_path);
  free(st);
}

/* Drops a torn tail (bytes after the last newline) so that the next line
 * appended does not glue onto it and get lost as one corrupt line; the
 * fragment is one the parser has already ignored.  An empty journal gets
 * its header. */
static int repair_journal(struct uidstate *st, const char *buf, size_t len, char *errbuf,
                          size_t errlen) {
  size_t keep = len;
  int err;

  while (keep > 0 && buf[keep - 1] != '\n')
    keep--;
  if (keep < len) {
    err = ftruncate(st->fd, (off_t)keep) != 0 ? -errno : fsync_retry(st->fd);
    if (err < 0) {
      p3_set_error(errbuf, errlen, "cannot truncate the torn last line of %s: %s", st->path,
                   strerror(-err));
      return err;
    }
  }
  if (keep == 0) {
    static const char header[] = HEADER "\n";
    if ((err = write_all(st->fd, header, sizeof(header) - 1)) < 0 ||
        (err = fsync_retry(st->fd)) < 0 || (err = fsync_retry(st->dir_fd)) < 0) {
      p3_set_error(errbuf, errlen, "cannot write %s: %s", st->path, strerror(-err));
      return err;
    }
  }
  return 0;
}

int uidstate_open(const char *path, const char *who, struct uidstate **st_r, char *errbuf,
                  size_t errlen) {
  struct uidstate *st;
  struct stat sb;
  char *buf = NULL;
  size_t plen, len = 0;
  int err;

  *st_r = NULL;
  if (errbuf != NULL && errlen > 0)
    errbuf[0] = '\0';
  if (path == NULL || path[0] == '\0') {
    p3_set_error(errbuf, errlen, "cannot open the UID state: empty path");
    return -EINVAL;
  }
  plen = strlen(path);
  if (plen + sizeof(".lock") >= PATH_MAX) {
    p3_set_error(errbuf, errlen, "cannot open %.64s...: %s", path, strerror(ENAMETOOLONG));
    return -ENAMETOOLONG;
  }
  if (who == NULL)
    who = "?";
  if ((err = make_parents(path, errbuf, errlen)) < 0)
    return err;
  if ((st = uidstate_new_memory()) == NULL || (st->path = strdup(path)) == NULL ||
      (st->lock_path = malloc(plen + sizeof(".lock"))) == NULL) {
    uidstate_close(st);
    p3_set_error(errbuf, errlen, "cannot open %s: %s", path, strerror(ENOMEM));
    return -ENOMEM;
  }
  memcpy(st->lock_path, path, plen);
  memcpy(st->lock_path + plen, ".lock", sizeof(".lock"));
  st->base = strrchr(st->path, '/') != NULL ? strrchr(st->path, '/') + 1 : st->path;
  st->lock_base = st->lock_path + (st->base - st->path);
  if (st->base[0] == '\0') {
    p3_set_error(errbuf, errlen, "%s is a directory", path);
    err = -EISDIR;
    goto fail;
  }
  /* From here on everything is relative to the directory: no name is
   * looked up twice, and no symlink is followed. */
  if ((err = open_dir(st, errbuf, errlen)) < 0)
    goto fail;
  /* Before creating PATH.lock beside it. */
  if (fstatat(st->dir_fd, st->base, &sb, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISDIR(sb.st_mode)) {
      p3_set_error(errbuf, errlen, "%s is a directory", path);
      err = -EISDIR;
      goto fail;
    }
    if (S_ISLNK(sb.st_mode)) {
      p3_set_error(errbuf, errlen, "%s is a symbolic link; refusing to follow it", path);
      err = P3_EUNSAFE;
      goto fail;
    }
  }
  if ((err = take_lock(st, who, errbuf, errlen)) < 0)
    goto fail;
  st->fd = open_file(st, st->base, path, O_RDWR | O_CREAT | O_APPEND, errbuf, errlen);
  if (st->fd < 0) {
    err = st->fd;
    st->fd = -1;
    goto fail;
  }
  if ((err = read_journal(st, &buf, &len, errbuf, errlen)) < 0)
    goto fail;
  if ((err = uidstate_parse(st, buf, len)) < 0) {
    p3_set_error(errbuf, errlen, "cannot read %s: %s", path, strerror(-err));
    goto fail;
  }
  if ((err = repair_journal(st, buf, len, errbuf, errlen)) < 0)
    goto fail;
  free(buf);
  *st_r = st;
  return 0;

fail:
  free(buf);
  uidstate_close(st);
  return err;
}

/* ---- compaction */

struct writer {
  int fd;
  int err;
  size_t len;
  char buf[WRITE_BLOCK];
};

static void writer_flush(struct writer *w) {
  if (w->err == 0 && w->len > 0)
    w->err = write_all(w->fd, w->buf, w->len);
  w->len = 0;
}

/* uidmodel_snapshot's emit: gathers the lines into blocks. */
static int writer_add(void *arg, const char *line, size_t n) {
  struct writer *w = arg;

  if (w->len + n > sizeof(w->buf))
    writer_flush(w);
  memcpy(w->buf + w->len, line, n);
  w->len += n;
  return w->err;
}

/* Rewrites the file from the model's snapshot (marks applied); applies the
 * marks to memory only when the new file is in place. */
static int rewrite(struct uidstate *st) {
  struct writer *w;
  char *tmp;
  size_t blen = strlen(st->base);
  int fd, err;

  if ((w = malloc(sizeof(*w))) == NULL || (tmp = malloc(blen + sizeof(".tmp"))) == NULL) {
    free(w);
    return -ENOMEM;
  }
  memcpy(tmp, st->base, blen);
  memcpy(tmp + blen, ".tmp", sizeof(".tmp"));
  /* O_APPEND: this fd becomes the journal's once renamed, so there is no
   * reopen that could fail after the old file is gone.  A PATH.tmp left
   * by a crash is ours to remove (we hold the lock; unlinkat removes a
   * symlink itself, never its target); O_EXCL|O_NOFOLLOW then makes sure
   * the file written is the one just created. */
  unlinkat(st->dir_fd, tmp, 0);
  fd = openat(st->dir_fd, tmp, O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    err = -errno;
    free(tmp);
    free(w);
    return err;
  }
  w->fd = fd;
  w->err = 0;
  w->len = 0;
  if (fchmod(fd, 0600) != 0) {
    err = -errno;
  } else {
    err = uidmodel_snapshot(st->model, time(NULL), writer_add, w);
    writer_flush(w);
    if (err == 0)
      err = w->err;
  }
  free(w);
  if (err == 0)
    err = fsync_retry(fd);
  if (err == 0 && renameat(st->dir_fd, tmp, st->dir_fd, st->base) != 0)
    err = -errno;
  if (err < 0) {
    close(fd);
    unlinkat(st->dir_fd, tmp, 0);
    free(tmp);
    return err;
  }
  free(tmp);
  /* Renamed: from here on the new file is the journal whatever happens,
   * so the fd moves over even if the directory fsync fails. */
  err = fsync_retry(st->dir_fd);
  close(st->fd);
  st->fd = fd;
  uidmodel_commit_marks(st->model);
  return err;
}

int uidstate_compact(struct uidstate *st, int (*keep)(void *data, const struct uidstate_rec *r),
                     void *data) {
  int err;

  if (st->path == NULL)
    return -EINVAL;
  if (keep != NULL)
    uidmodel_mark_drop(st->model, keep, data);
  err = rewrite(st);
  uidmodel_clear_marks(st->model);
  return err;
}

/* ---- check_files */

/* The pending D names (borrowed from the model), each with a flag set when
 * its file is found: memory follows the records, not the Maildir. */
struct name_set {
  struct hashtab names; /* name -> its flag in found[] */
  bool *found;
  size_t n;
};

static int name_count(void *arg, const char *name) {
  (void)arg;
  (void)name;
  return 0;
}

static int name_add(void *arg, const char *name) {
  struct name_set *set = arg;
  size_t len = strlen(name);

  if (hashtab_get(&set->names, name, len) != NULL)
    return 0;
  return hashtab_put(&set->names, name, len, &set->found[set->n++]);
}

static int name_want(void *arg, const char *base, size_t len) {
  const bool *f = hashtab_get(&((struct name_set *)arg)->names, base, len);

  return f != NULL && !*f;
}

static void name_found(void *arg, const char *base, size_t len) {
  bool *f = hashtab_get(&((struct name_set *)arg)->names, base, len);

  if (f != NULL)
    *f = true;
}

static int name_present(void *arg, const char *name) {
  const bool *f = hashtab_get(&((struct name_set *)arg)->names, name, strlen(name));

  return f != NULL && *f;
}

int uidstate_check_files(struct uidstate *st, int newfd, int curfd) {
  struct name_set set;
  long n = uidmodel_foreach_pending(st->model, name_count, NULL);
  int err = 0, dropped = 0;

  if (n <= 0)
    return 0;
  hashtab_init(&set.names);
  set.n = 0;
  if ((set.found = calloc((size_t)n, sizeof(*set.found))) == NULL)
    return -ENOMEM;
  if ((n = uidmodel_foreach_pending(st->model, name_add, &set)) < 0) {
    err = (int)n;
    goto out;
  }
  if ((err = maildir_find_files(newfd, name_want, name_found, &set)) < 0 ||
      (err = maildir_find_files(curfd, name_want, name_found, &set)) < 0)
    goto out;
  dropped = uidmodel_mark_missing(st->model, name_present, &set);
  if (dropped == 0)
    goto out;
  if (st->path == NULL) {
    uidmodel_commit_marks(st->model);
  } else {
    /* The journal still holds the dropped D lines: once a later B follows
     * them they would count as delivered again.  Rewrite it now. */
    err = rewrite(st);
    uidmodel_clear_marks(st->model);
  }

out:
  hashtab_deinit(&set.names);
  free(set.found);
  return err < 0 ? err : dropped;
}

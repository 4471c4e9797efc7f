#include "config.h"

#include "journal_path.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "errors.h"

int journal_path(const char *dir, const struct p3_spec *spec, char *buf, size_t len) {
  char id[P3_USER_MAX + P3_HOST_MAX + 16];
  if (spec_identity(spec, id, sizeof id) < 0)
    return -ENAMETOOLONG;
  int n = snprintf(buf, len, "%s/%s.state", dir, id);
  return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int journal_personal_dir(char *buf, size_t len) {
  const char *xdg = getenv("XDG_STATE_HOME");
  const char *home = getenv("HOME");
  int n;
  if (xdg && xdg[0] == '/')
    n = snprintf(buf, len, "%s/pop3sync", xdg);
  else if (home && home[0] == '/')
    n = snprintf(buf, len, "%s/.local/state/pop3sync", home);
  else
    return -ENOENT;
  return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int journal_user_dir(const char *shared_root, char *buf, size_t len, int *shared_r) {
  struct passwd *pw = getpwuid(geteuid());
  *shared_r = 0;
  if (shared_root == NULL)
    shared_root = LOCALSTATEDIR "/lib/pop3sync";
  if (pw != NULL && pw->pw_name != NULL && pw->pw_name[0] != '\0' &&
      strchr(pw->pw_name, '/') == NULL) {
    int n = snprintf(buf, len, "%s/%s", shared_root, pw->pw_name);
    struct stat sb;
    if (n > 0 && (size_t)n < len && lstat(buf, &sb) == 0 && S_ISDIR(sb.st_mode) &&
        sb.st_uid == geteuid()) {
      *shared_r = 1;
      return 0;
    }
  }
  return journal_personal_dir(buf, len);
}

int journal_same_dir(const char *a, const char *b) {
  struct stat sa, sb;
  return stat(a, &sa) == 0 && stat(b, &sb) == 0 && S_ISDIR(sa.st_mode) && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

/* ---- migration */

/* Splits path into its directory (dir, PATH_MAX) and last component. */
static int split(const char *path, char *dir, const char **base_r) {
  const char *slash = strrchr(path, '/');
  if (slash == NULL) {
    strcpy(dir, ".");
    *base_r = path;
  } else {
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= PATH_MAX)
      return -ENAMETOOLONG;
    memcpy(dir, path, n);
    dir[n] = '\0';
    *base_r = slash + 1;
  }
  return **base_r == '\0' ? -EINVAL : 0;
}

/* "pid 1234 (pop3syncd)" from a lock file, control characters masked. */
static void read_holder(int fd, char *out, size_t outlen) {
  ssize_t n;
  do
    n = pread(fd, out, outlen - 1, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    n = 0;
  while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
    n--;
  out[n] = '\0';
  for (ssize_t i = 0; i < n; i++)
    if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
      out[i] = '?';
}

/* Renames without ever replacing: -EEXIST when the target exists.  Falls
 * back to link + unlink where the file system has no RENAME_NOREPLACE. */
static int move_noreplace(int odfd, const char *obase, int ndfd, const char *nbase) {
  if (renameat2(odfd, obase, ndfd, nbase, RENAME_NOREPLACE) == 0)
    return 0;
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
    return -errno;
  if (linkat(odfd, obase, ndfd, nbase, 0) != 0)
    return -errno;
  if (unlinkat(odfd, obase, 0) != 0) {
    int err = -errno;
    unlinkat(ndfd, nbase, 0); /* two names would make the journal unusable */
    return err;
  }
  return 0;
}

static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t w = write(fd, buf, len);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      return -errno;
    buf += w;
    len -= (size_t)w;
  }
  return 0;
}

/* Across file systems: copy into NBASE.migrate beside the target, fsync, move
 * into place without replacing, then remove the original.  Returns 0,
 * -EEXIST (the target appeared meanwhile: nothing changed) or an error. */
static int copy_over(int odfd, const char *obase, int ndfd, const char *nbase) {
  char tmp[NAME_MAX + 1], buf[65536];
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.migrate", nbase) >= sizeof tmp)
    return -ENAMETOOLONG;
  int in = openat(odfd, obase, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (in < 0)
    return -errno;
  int out = openat(ndfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (out < 0 && errno == EEXIST) {
    /* Left by a migration that died: ours (the directory is the user's). */
    unlinkat(ndfd, tmp, 0);
    out = openat(ndfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  }
  if (out < 0) {
    int err = -errno;
    close(in);
    return err;
  }
  int err = 0;
  for (;;) {
    ssize_t n = read(in, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      err = -errno;
    if (n <= 0 || (err = write_all(out, buf, (size_t)n)) < 0)
      break;
  }
  close(in);
  if (err == 0 && fsync(out) != 0)
    err = -errno;
  if (close(out) != 0 && err == 0)
    err = -errno;
  if (err == 0)
    err = move_noreplace(ndfd, tmp, ndfd, nbase);
  if (err < 0) {
    unlinkat(ndfd, tmp, 0);
    return err;
  }
  if (fsync(ndfd) != 0 || unlinkat(odfd, obase, 0) != 0)
    return -errno;
  return 0;
}

int journal_migrate(const char *old_path, const char *new_path, char *msg, size_t msglen) {
  char odir[PATH_MAX], ndir[PATH_MAX], lock[NAME_MAX + 1], holder[160];
  const char *obase, *nbase;
  struct stat ost, nst;
  int odfd = -1, ndfd = -1, lfd = -1, ret;

  if (msg && msglen)
    msg[0] = '\0';
  if ((ret = split(old_path, odir, &obase)) < 0 || (ret = split(new_path, ndir, &nbase)) < 0) {
    p3_set_error(msg, msglen, "cannot move %s to %s: %s", old_path, new_path, strerror(-ret));
    return ret;
  }
  if ((size_t)snprintf(lock, sizeof lock, "%s.lock", obase) >= sizeof lock)
    lock[0] = '\0'; /* no such lock file can exist */
  odfd = open(odir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (odfd < 0) {
    if (errno == ENOENT || errno == ENOTDIR)
      return JOURNAL_NONE;
    ret = -errno;
    p3_set_error(msg, msglen, "cannot open directory %s: %s", odir, strerror(-ret));
    return ret;
  }
  if (fstatat(odfd, obase, &ost, AT_SYMLINK_NOFOLLOW) != 0) {
    ret = errno == ENOENT ? JOURNAL_NONE : -errno;
    if (ret < 0)
      p3_set_error(msg, msglen, "cannot look at %s: %s", old_path, strerror(-ret));
    goto out;
  }
  ndfd = open(ndir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (ndfd < 0) {
    ret = -errno;
    p3_set_error(msg, msglen, "cannot open directory %s: %s", ndir, strerror(-ret));
    goto out;
  }
  if (fstatat(ndfd, nbase, &nst, AT_SYMLINK_NOFOLLOW) == 0 && nst.st_dev == ost.st_dev &&
      nst.st_ino == ost.st_ino) {
    ret = JOURNAL_NONE; /* the same file under both names */
    goto out;
  }
  if (!S_ISREG(ost.st_mode) || ost.st_nlink != 1 || ost.st_uid != geteuid()) {
    p3_set_error(msg, msglen,
                 "%s was left as is (%s): %s is the journal of this mailbox now; in keep mode "
                 "the messages recorded only in the old one may be fetched again",
                 old_path,
                 S_ISLNK(ost.st_mode)    ? "a symbolic link"
                 : !S_ISREG(ost.st_mode) ? "not a regular file"
                 : ost.st_nlink != 1     ? "it has more than one link"
                                         : "not owned by the user who runs pop3sync",
                 new_path);
    ret = JOURNAL_KEPT;
    goto out;
  }

  /* The old journal's lock: a run that still uses it (a pop3syncd from
   * before the upgrade) must finish first. */
  lfd = lock[0] ? openat(odfd, lock, O_RDWR | O_NOFOLLOW | O_CLOEXEC) : -1;
  if (lfd >= 0) {
    struct stat lst;
    if (fstat(lfd, &lst) != 0 || !S_ISREG(lst.st_mode) || lst.st_uid != geteuid()) {
      close(lfd);
      lfd = -1; /* not a lock of ours: left alone */
    } else {
      while (flock(lfd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EINTR)
          continue;
        ret = -errno;
        if (ret == -EWOULDBLOCK) {
          read_holder(lfd, holder, sizeof holder);
          p3_set_error(msg, msglen, "%s is locked by %s", old_path,
                       holder[0] ? holder : "another process");
          ret = P3_ELOCKED;
        } else {
          p3_set_error(msg, msglen, "cannot lock %s/%s: %s", odir, lock, strerror(-ret));
        }
        goto out;
      }
    }
  }
  /* Under the lock: it may have been moved meanwhile. */
  if (fstatat(odfd, obase, &ost, AT_SYMLINK_NOFOLLOW) != 0) {
    ret = JOURNAL_NONE;
    goto out;
  }
  if (fstatat(ndfd, nbase, &nst, AT_SYMLINK_NOFOLLOW) == 0)
    ret = -EEXIST;
  else
    ret = move_noreplace(odfd, obase, ndfd, nbase);
  if (ret == -EXDEV)
    ret = copy_over(odfd, obase, ndfd, nbase);
  if (ret == -EEXIST) {
    p3_set_error(msg, msglen,
                 "%s was left as is: %s exists too and is the journal of this mailbox now; in "
                 "keep mode the messages recorded only in the old one may be fetched again "
                 "(remove it once that is settled)",
                 old_path, new_path);
    ret = JOURNAL_KEPT;
    goto out;
  }
  if (ret < 0) {
    p3_set_error(msg, msglen, "cannot move %s to %s: %s", old_path, new_path, strerror(-ret));
    goto out;
  }
  if (fsync(ndfd) != 0 || fsync(odfd) != 0) {
    ret = -errno;
    p3_set_error(msg, msglen, "moved %s to %s, but cannot sync its directory: %s", old_path,
                 new_path, strerror(-ret));
    goto out;
  }
  if (lfd >= 0)
    unlinkat(odfd, lock, 0); /* still held: nobody waits on a name that is gone */
  /* The server memory beside the old name (srvmem.h) holds a TLS secret and
   * names the old journal: dropped, the next session is cold. */
  char mem[PATH_MAX];
  if ((size_t)snprintf(mem, sizeof mem, "%s.server", obase) < sizeof mem)
    (void)unlinkat(odfd, mem, 0);
  p3_set_error(msg, msglen, "moved the journal %s to %s", old_path, new_path);
  ret = JOURNAL_MOVED;
out:
  if (lfd >= 0)
    close(lfd);
  if (ndfd >= 0)
    close(ndfd);
  if (odfd >= 0)
    close(odfd);
  return ret;
}

#include "config.h"

#include "privsep.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "errors.h"
#include "log.h"

/* 1 when the directory open at fd has no entry but . and .. */
static int dir_is_empty(int fd) {
  int dup_fd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
  if (d == NULL) {
    if (dup_fd >= 0)
      close(dup_fd);
    return 0;
  }
  int empty = 1;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
      empty = 0;
      break;
    }
  closedir(d);
  return empty;
}

/* Before per-user directories, a root daemon kept STATE_DIR/ACCOUNT.state
 * (given to the Maildir's owner) beside root's ACCOUNT.state.lock.  Move it
 * into the user's directory under the same name, where the worker, as the
 * user, renames it to the mailbox's journal (journal_path.h).  Only a plain
 * file with one link, owned by root or the user, is moved; never over an
 * existing file. */
static void move_legacy_journal(int dfd, int ufd, const char *state_dir, const char *user,
                                const char *account, uid_t uid, gid_t gid) {
  char name[300];
  if (account == NULL || !account[0] || strchr(account, '/') ||
      (size_t)snprintf(name, sizeof name, "%s.state", account) >= sizeof name)
    return;
  int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    return; /* none (or not a file we would touch) */
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1 ||
      (st.st_uid != 0 && st.st_uid != uid)) {
    log_warning("%s: %s/%s is not a journal this daemon wrote; left as it is", account, state_dir,
                name);
    close(fd);
    return;
  }
  /* Without CAP_CHOWN/CAP_FOWNER (a sandboxed daemon) only what is needed. */
  if (((st.st_uid != uid || st.st_gid != gid) && fchown(fd, uid, gid) != 0) ||
      ((st.st_mode & 07777) != 0600 && fchmod(fd, 0600) != 0) || fsync(fd) != 0) {
    log_warning("%s: cannot hand %s/%s over: %s", account, state_dir, name, strerror(errno));
    close(fd);
    return;
  }
  close(fd);
  /* Not over a file of the same name: linkat fails with EEXIST. */
  if (linkat(dfd, name, ufd, name, 0) != 0) {
    log_warning("%s: cannot move %s/%s into its user's directory: %s", account, state_dir, name,
                strerror(errno));
    return;
  }
  (void)fsync(ufd);
  if (unlinkat(dfd, name, 0) == 0) {
    char lock[310];
    snprintf(lock, sizeof lock, "%s.lock", name);
    (void)unlinkat(dfd, lock, 0);
    (void)fsync(dfd);
  }
  log_info("%s: moved its journal %s/%s into %s/%s/", account, state_dir, name, state_dir, user);
}

int privsep_user_state_dir(const char *state_dir, const char *user, uid_t uid, gid_t gid,
                           const char *account, char *errbuf, size_t errlen) {
  if (strchr(user, '/') || strcmp(user, ".") == 0 || strcmp(user, "..") == 0 || !user[0]) {
    p3_set_error(errbuf, errlen, "user name `%s' cannot name a state directory", user);
    return P3_ESTATE;
  }
  /* state_dir is root's own (the daemon made it); the user's part is not. */
  int dfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    p3_set_error(errbuf, errlen, "%s: %s", state_dir, strerror(errno));
    return P3_ESTATE;
  }
  /* Root hands directories in it over to users: it must be root's alone. */
  struct stat sst;
  if (fstat(dfd, &sst) != 0 || sst.st_uid != 0 || (sst.st_mode & 022)) {
    p3_set_error(errbuf, errlen,
                 "state_dir %s must be root's own directory, not writable by "
                 "group or others",
                 state_dir);
    close(dfd);
    return P3_EUNSAFE;
  }
  /* Two of the user's accounts may start at once: one creates and hands
   * over, the other must not see the directory in between. */
  if (flock(dfd, LOCK_EX) != 0) {
    p3_set_error(errbuf, errlen, "cannot lock %s: %s", state_dir, strerror(errno));
    close(dfd);
    return P3_ESTATE;
  }
  if (mkdirat(dfd, user, 0700) != 0 && errno != EEXIST) {
    p3_set_error(errbuf, errlen, "cannot create %s/%s: %s", state_dir, user, strerror(errno));
    close(dfd);
    return P3_ESTATE;
  }
  int fd = openat(dfd, user, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  int saved = errno;
  if (fd < 0) {
    close(dfd);
    p3_set_error(errbuf, errlen, "%s/%s: %s", state_dir, user,
                 saved == ELOOP || saved == ENOTDIR ? "not a directory (a symbolic link?)"
                                                    : strerror(saved));
    return saved == ELOOP || saved == ENOTDIR ? P3_EUNSAFE : P3_ESTATE;
  }
  struct stat st;
  int err = 0;
  if (fstat(fd, &st) != 0) {
    p3_set_error(errbuf, errlen, "%s/%s: %s", state_dir, user, strerror(errno));
    err = P3_ESTATE;
  } else if (st.st_uid == 0 && (st.st_nlink != 2 || !dir_is_empty(fd))) {
    /* Only an empty one is ours to give: a state_dir shared with something
     * else (/var/lib, and a user named like a package) must not hand over
     * that package's files. */
    p3_set_error(errbuf, errlen,
                 "%s/%s is root's and not empty; not giving it to %s (is "
                 "state_dir a directory of its own?)",
                 state_dir, user, user);
    err = P3_EUNSAFE;
  } else if (st.st_uid == 0) {
    /* Ours (only root writes in state_dir): just made, or left by a worker
     * that died before handing it over.  Reached through an fd: hand it over. */
    if (fchown(fd, uid, gid) != 0 || fchmod(fd, 0700) != 0) {
      int e = errno;
      p3_set_error(errbuf, errlen, "cannot give %s/%s to %s: %s%s", state_dir, user, user,
                   strerror(e),
                   e == EPERM ? " (the daemon runs without CAP_CHOWN: `pop3syncd "
                                "--prepare-state', which `systemctl reload pop3syncd' runs, "
                                "creates it)"
                              : "");
      err = P3_ESTATE;
    }
  } else if (st.st_uid != uid) {
    p3_set_error(errbuf, errlen, "%s/%s is owned by uid %lu, not by %s (uid %lu)", state_dir, user,
                 (unsigned long)st.st_uid, user, (unsigned long)uid);
    err = P3_EUNSAFE;
  } else if (st.st_mode & 022) {
    p3_set_error(errbuf, errlen, "%s/%s is writable by group or others (mode %04o)", state_dir,
                 user, (unsigned)(st.st_mode & 07777));
    err = P3_EUNSAFE;
  }
  if (err == 0)
    move_legacy_journal(dfd, fd, state_dir, user, account, uid, gid);
  close(fd);
  close(dfd); /* and the lock with it */
  return err;
}

int privsep_drop(const char *user, uid_t uid, char *errbuf, size_t errlen) {
  struct passwd pw, *res = NULL;
  char buf[8192];
  if (getpwnam_r(user, &pw, buf, sizeof buf, &res) != 0 || res == NULL) {
    p3_set_error(errbuf, errlen, "no local user named %s", user);
    return P3_EPRIV;
  }
  if (pw.pw_uid != uid || pw.pw_uid == 0) {
    p3_set_error(errbuf, errlen, "user %s has uid %lu, expected %lu", user,
                 (unsigned long)pw.pw_uid, (unsigned long)uid);
    return P3_EPRIV;
  }
  if (initgroups(pw.pw_name, pw.pw_gid) != 0 || setgid(pw.pw_gid) != 0 || setuid(pw.pw_uid) != 0) {
    p3_set_error(errbuf, errlen, "cannot become %s: %s", user, strerror(errno));
    return P3_EPRIV;
  }
  uid_t ru, eu, su;
  gid_t rg, eg, sg;
  if (getresuid(&ru, &eu, &su) != 0 || getresgid(&rg, &eg, &sg) != 0 || ru == 0 || eu == 0 ||
      su == 0 || rg == 0 || eg == 0 || sg == 0) {
    p3_set_error(errbuf, errlen, "still privileged after becoming %s", user);
    return P3_EPRIV;
  }
  int n = getgroups(0, NULL);
  gid_t *groups = n > 0 ? calloc((size_t)n, sizeof *groups) : NULL;
  if (n < 0 || (n > 0 && (groups == NULL || (n = getgroups(n, groups)) < 0))) {
    p3_set_error(errbuf, errlen, "getgroups: %s", strerror(errno));
    free(groups);
    return P3_EPRIV;
  }
  for (int i = 0; i < n; i++) {
    if (groups[i] == 0) {
      p3_set_error(errbuf, errlen, "%s is a member of group 0; refusing to run with it", user);
      free(groups);
      return P3_EPRIV;
    }
  }
  free(groups);
  if (setenv("HOME", pw.pw_dir, 1) != 0 || setenv("USER", pw.pw_name, 1) != 0 ||
      setenv("LOGNAME", pw.pw_name, 1) != 0) {
    p3_set_error(errbuf, errlen, "out of memory");
    return P3_EPRIV;
  }
  /* Root's own settings must not steer the user's run. */
  unsetenv("NETRC");
  unsetenv("XDG_CONFIG_HOME");
  unsetenv("XDG_STATE_HOME");
  unsetenv("XDG_RUNTIME_DIR");
  unsetenv("STATE_DIRECTORY");
  unsetenv("RUNTIME_DIRECTORY");
  unsetenv("CONFIGURATION_DIRECTORY");
  unsetenv("NOTIFY_SOCKET");
  if (chdir(pw.pw_dir) != 0 && chdir("/") != 0) {
    /* the run uses absolute paths only */
  }
  return 0;
}

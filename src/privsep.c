#include "config.h"

#include "privsep.h"

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

int privsep_user_state_dir(const char *state_dir, const char *user, uid_t uid, gid_t gid,
                           char *errbuf, size_t errlen) {
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
  } else if (st.st_uid == 0) {
    /* Ours (only root writes in state_dir): just made, or left by a worker
     * that died before handing it over.  Reached through an fd: hand it over. */
    if (fchown(fd, uid, gid) != 0 || fchmod(fd, 0700) != 0) {
      p3_set_error(errbuf, errlen, "cannot give %s/%s to %s: %s", state_dir, user, user,
                   strerror(errno));
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

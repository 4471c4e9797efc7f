/* journal_path: the journal's name, the directory `pop3 dl' uses, and the
 * migration of journals under an older name. */
#include "config.h"

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

#include "check.h"
#include "errors.h"
#include "journal_path.h"
#include "spec.h"

static char root[512]; /* short: every path below is built from it */

static void put(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  if (f) {
    fputs(text, f);
    fclose(f);
  }
}

static int has(const char *path, const char *text) {
  char buf[256] = "";
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return strcmp(buf, text) == 0;
}

static int exists(const char *path) {
  struct stat sb;
  return lstat(path, &sb) == 0;
}

/* buf = root/name (buf has PATH_MAX bytes). */
static void p(char *buf, const char *name) {
  snprintf(buf, PATH_MAX, "%s/%s", root, name);
}

static void test_path(void) {
  struct p3_spec s;
  char buf[PATH_MAX];
  CHECK_INT(spec_parse("tcp:me@host.example:1110", &s, NULL, 0), 0);
  CHECK_INT(journal_path("/d", &s, buf, sizeof buf), 0);
  CHECK_STR(buf, "/d/me@host.example:1110.state");
  CHECK_INT(spec_parse("you@[::1]:995", &s, NULL, 0), 0);
  CHECK_INT(journal_path("/d", &s, buf, sizeof buf), 0);
  CHECK_STR(buf, "/d/you@[::1]:995.state");
  CHECK_INT(journal_path("/d", &s, buf, 10), -ENAMETOOLONG);
}

static void test_dirs(void) {
  char buf[2 * PATH_MAX], want[2 * PATH_MAX];
  int shared = -1;
  setenv("XDG_STATE_HOME", "/x/state", 1);
  CHECK_INT(journal_personal_dir(buf, sizeof buf), 0);
  CHECK_STR(buf, "/x/state/pop3sync");
  setenv("XDG_STATE_HOME", "relative", 1);
  setenv("HOME", "/home/me", 1);
  CHECK_INT(journal_personal_dir(buf, sizeof buf), 0);
  CHECK_STR(buf, "/home/me/.local/state/pop3sync");
  unsetenv("XDG_STATE_HOME");
  unsetenv("HOME");
  CHECK_INT(journal_personal_dir(buf, sizeof buf), -ENOENT);
  setenv("HOME", "/home/me", 1);

  /* The shared directory only when it is ours and a real directory. */
  struct passwd *pw = getpwuid(geteuid());
  CHECK(pw != NULL);
  if (pw == NULL)
    return;
  char shared_root[PATH_MAX];
  p(shared_root, "lib");
  mkdir(shared_root, 0755);
  CHECK_INT(journal_user_dir(shared_root, buf, sizeof buf, &shared), 0);
  CHECK_INT(shared, 0);
  CHECK_STR(buf, "/home/me/.local/state/pop3sync");
  snprintf(want, sizeof want, "%s/%s", shared_root, pw->pw_name);
  CHECK_INT(symlink(root, want), 0);
  CHECK_INT(journal_user_dir(shared_root, buf, sizeof buf, &shared), 0);
  CHECK_INT(shared, 0);
  unlink(want);
  CHECK_INT(mkdir(want, 0700), 0);
  CHECK_INT(journal_user_dir(shared_root, buf, sizeof buf, &shared), 0);
  CHECK_INT(shared, 1);
  CHECK_STR(buf, want);
  CHECK(journal_same_dir(want, buf));
  CHECK(!journal_same_dir(want, shared_root));
  CHECK(!journal_same_dir(want, "/nonexistent/x"));
}

static void test_migrate(void) {
  char old[PATH_MAX], new[PATH_MAX], lock[PATH_MAX], msg[1024];
  p(old, "acct.state");
  p(new, "me@h:995.state");
  p(lock, "acct.state.lock");

  /* Nothing to move. */
  CHECK_INT(journal_migrate(old, new, msg, sizeof msg), JOURNAL_NONE);
  CHECK(!exists(new));

  /* Moved, content intact, the old lock file gone. */
  put(old, "journal A\n");
  put(lock, "");
  CHECK_INT(journal_migrate(old, new, msg, sizeof msg), JOURNAL_MOVED);
  CHECK(has(new, "journal A\n"));
  CHECK(!exists(old));
  CHECK(!exists(lock));
  CHECK(strstr(msg, old) != NULL && strstr(msg, new) != NULL);
  CHECK_INT(journal_migrate(old, new, msg, sizeof msg), JOURNAL_NONE);

  /* Both exist: both kept, the warning names the old one. */
  put(old, "journal B\n");
  CHECK_INT(journal_migrate(old, new, msg, sizeof msg), JOURNAL_KEPT);
  CHECK(has(new, "journal A\n"));
  CHECK(has(old, "journal B\n"));
  CHECK(strstr(msg, old) != NULL);
  unlink(new);

  /* The old journal in use: its holder is named, nothing moves. */
  put(lock, "pid 4242 (pop3syncd)\n");
  int lfd = open(lock, O_RDWR);
  CHECK(lfd >= 0 && flock(lfd, LOCK_EX | LOCK_NB) == 0);
  CHECK_INT(journal_migrate(old, new, msg, sizeof msg), P3_ELOCKED);
  CHECK(strstr(msg, "locked by pid 4242 (pop3syncd)") != NULL);
  CHECK(has(old, "journal B\n"));
  CHECK(!exists(new));
  close(lfd);
  CHECK_INT(journal_migrate(old, new, msg, sizeof msg), JOURNAL_MOVED);
  CHECK(has(new, "journal B\n"));
  unlink(new);

  /* Not a plain file of ours: never moved (a symlink, a second link). */
  char target[PATH_MAX], other[PATH_MAX];
  p(target, "elsewhere");
  put(target, "not a journal\n");
  CHECK_INT(symlink(target, old), 0);
  CHECK_INT(journal_migrate(old, new, msg, sizeof msg), JOURNAL_KEPT);
  CHECK(strstr(msg, "symbolic link") != NULL);
  CHECK(!exists(new));
  unlink(old);
  CHECK_INT(link(target, old), 0);
  CHECK_INT(journal_migrate(old, new, msg, sizeof msg), JOURNAL_KEPT);
  CHECK(!exists(new));
  unlink(old);

  /* The same file under both names: nothing to do. */
  CHECK_INT(journal_migrate(target, target, msg, sizeof msg), JOURNAL_NONE);

  /* Across file systems (when /dev/shm is another one): copied, then removed. */
  struct stat a, b;
  snprintf(other, sizeof other, "/dev/shm/test_journal_path.%ld", (long)getpid());
  if (stat("/dev/shm", &a) == 0 && stat(root, &b) == 0 && a.st_dev != b.st_dev &&
      mkdir(other, 0700) == 0) {
    char far[2 * PATH_MAX];
    snprintf(far, sizeof far, "%s/me@h:995.state", other);
    put(far, "journal C\n");
    CHECK_INT(journal_migrate(far, new, msg, sizeof msg), JOURNAL_MOVED);
    CHECK(has(new, "journal C\n"));
    CHECK(!exists(far));
    put(far, "journal D\n");
    CHECK_INT(journal_migrate(far, new, msg, sizeof msg), JOURNAL_KEPT);
    CHECK(has(new, "journal C\n"));
    CHECK(has(far, "journal D\n"));
    char tmp[PATH_MAX];
    p(tmp, "me@h:995.state.migrate");
    CHECK(!exists(tmp));
    unlink(far);
    rmdir(other);
  } else {
    fprintf(stderr, "# no second file system at /dev/shm: copy not tested\n");
  }
}

int main(void) {
  char cmd[600];
  snprintf(root, sizeof root, "%s/test_journal_path.XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (mkdtemp(root) == NULL) {
    perror("mkdtemp");
    return 99;
  }
  test_path();
  test_dirs();
  test_migrate();
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0)
    fprintf(stderr, "# could not remove %s\n", root);
  return check_result("test_journal_path");
}

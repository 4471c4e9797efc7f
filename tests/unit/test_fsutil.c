#include "config.h"

#include "fsutil.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "errors.h"

static char root[256];

static const char *at(const char *rel) {
  static char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", root, rel);
  return path;
}

static mode_t mode_of(const char *rel) {
  struct stat st;
  if (lstat(at(rel), &st) != 0)
    return (mode_t)-1;
  return st.st_mode;
}

static void test_mkdir_p(void) {
  char err[256];

  CHECK_INT(fs_mkdir_p(at("a/b/c"), 0700, err, sizeof err), 0);
  CHECK(S_ISDIR(mode_of("a")) && S_ISDIR(mode_of("a/b")) && S_ISDIR(mode_of("a/b/c")));
  CHECK_INT(mode_of("a/b/c") & 07777, 0700);
  /* Again: nothing to do. */
  CHECK_INT(fs_mkdir_p(at("a/b/c"), 0700, NULL, 0), 0);
  /* Repeated and trailing slashes. */
  CHECK_INT(fs_mkdir_p(at("a//b///d/"), 0700, NULL, 0), 0);
  CHECK(S_ISDIR(mode_of("a/b/d")));
  /* An existing directory keeps its mode. */
  CHECK_INT(chmod(at("a"), 0755), 0);
  CHECK_INT(fs_mkdir_p(at("a/e"), 0700, NULL, 0), 0);
  CHECK_INT(mode_of("a") & 07777, 0755);
  CHECK_INT(mode_of("a/e") & 07777, 0700);
  /* Another mode for new directories (the umask still applies). */
  mode_t old = umask(022);
  CHECK_INT(fs_mkdir_p(at("m/n"), 0711, NULL, 0), 0);
  umask(old);
  CHECK_INT(mode_of("m") & 07777, 0711);
  CHECK_INT(mode_of("m/n") & 07777, 0711);
}

static void test_mkdir_p_errors(void) {
  char err[PATH_MAX + 100], want[PATH_MAX + 100];
  FILE *f = fopen(at("file"), "w");

  CHECK(f != NULL);
  if (f)
    fclose(f);
  /* The final component is a file. */
  CHECK_INT(fs_mkdir_p(at("file"), 0700, err, sizeof err), -ENOTDIR);
  snprintf(want, sizeof want, "cannot create directory %s: %s", at("file"), strerror(ENOTDIR));
  CHECK_STR(err, want);
  /* An ancestor is a file: the message names it. */
  CHECK_INT(fs_mkdir_p(at("file/x/y"), 0700, err, sizeof err), -ENOTDIR);
  CHECK_STR(err, want);
  /* A symlink to a directory is followed (callers that mind use lstat). */
  CHECK_INT(symlink("a", at("link")), 0);
  CHECK_INT(fs_mkdir_p(at("link/b"), 0700, NULL, 0), 0);
  CHECK_INT(fs_mkdir_p(at("link/z"), 0700, NULL, 0), 0);
  CHECK(S_ISDIR(mode_of("a/z")));
  /* A dangling symlink. */
  CHECK_INT(symlink("nowhere", at("dangling")), 0);
  CHECK_INT(fs_mkdir_p(at("dangling"), 0700, err, sizeof err), -ENOENT);
  /* Too long, and empty. */
  char *longp = malloc(PATH_MAX + 10);
  memset(longp, 'x', PATH_MAX + 9);
  longp[0] = '/';
  longp[PATH_MAX + 9] = '\0';
  CHECK_INT(fs_mkdir_p(longp, 0700, err, sizeof err), -ENAMETOOLONG);
  CHECK(strncmp(err, "directory name too long: /xxx", 29) == 0);
  free(longp);
  CHECK_INT(fs_mkdir_p("", 0700, err, sizeof err), -ENOENT);
  /* A directory we may not write in. */
  if (geteuid() != 0) {
    CHECK_INT(mkdir(at("ro"), 0500), 0);
    CHECK_INT(fs_mkdir_p(at("ro/x"), 0700, err, sizeof err), -EACCES);
    snprintf(want, sizeof want, "cannot create directory %s: %s", at("ro/x"), strerror(EACCES));
    CHECK_STR(err, want);
    CHECK_INT(chmod(at("ro"), 0700), 0);
  }
}

static void test_p3_error(void) {
  char err[16];

  CHECK_INT(p3_error(err, sizeof err, -EPERM, "no %s", "way"), -EPERM);
  CHECK_STR(err, "no way");
  CHECK_INT(p3_error(NULL, 0, P3_ESTATE, "ignored %d", 1), P3_ESTATE);
  CHECK_INT(p3_error(err, sizeof err, 0, "%s", "truncated to fifteen"), 0);
  CHECK_STR(err, "truncated to fi");
  p3_set_error(err, 0, "untouched");
  CHECK_STR(err, "truncated to fi");
}

int main(void) {
  const char *tmp = getenv("TMPDIR");
  snprintf(root, sizeof root, "%s/test_fsutil.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (mkdtemp(root) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  test_mkdir_p();
  test_mkdir_p_errors();
  test_p3_error();
  char cmd[sizeof root + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", root);
  return check_result("test_fsutil");
}

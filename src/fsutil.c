#include "config.h"

#include "fsutil.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include "errors.h"

/* mkdir(dir, mode) unless dir is a directory already. */
static int make_one(const char *dir, mode_t mode) {
  struct stat st;
  int err;

  if (mkdir(dir, mode) == 0)
    return 0;
  err = -errno;
  /* Not only EEXIST: some file systems answer EACCES or EROFS for a
   * directory that exists; what counts is that one is there. */
  if (stat(dir, &st) != 0)
    return err == -EEXIST ? -errno : err;
  return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int fs_mkdir_p(const char *path, mode_t mode, char *errbuf, size_t errlen) {
  char dir[PATH_MAX];
  size_t n = strlen(path);

  if (n == 0)
    return p3_error(errbuf, errlen, -ENOENT, "cannot create directory \"\": %s", strerror(ENOENT));
  if (n >= sizeof dir)
    return p3_error(errbuf, errlen, -ENAMETOOLONG, "directory name too long: %s", path);
  memcpy(dir, path, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if ((dir[i] != '/' && dir[i] != '\0') || dir[i - 1] == '/')
      continue;
    dir[i] = '\0';
    int err = make_one(dir, mode);
    if (err < 0)
      return p3_error(errbuf, errlen, err, "cannot create directory %s: %s", dir, strerror(-err));
    if (i < n)
      dir[i] = '/';
  }
  return 0;
}

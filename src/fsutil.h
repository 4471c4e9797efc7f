/* Small file-system helpers shared by the programs and the library. */
#ifndef P3_FSUTIL_H
#define P3_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

/* mkdir -p: creates path and each missing ancestor with mode (the umask
 * applies), leaving whatever exists alone, modes included.  Repeated and
 * trailing slashes are fine.  A component that exists but is not a
 * directory (symlinks are followed: callers that must not follow one check
 * the result with lstat or open it O_NOFOLLOW) fails with -ENOTDIR.
 * Returns 0 or a negated errno; errbuf (may be NULL) then says "cannot
 * create directory DIR: REASON", naming the component that failed, or
 * "directory name too long: PATH" (-ENAMETOOLONG, PATH_MAX). */
int fs_mkdir_p(const char *path, mode_t mode, char *errbuf, size_t errlen);

#endif

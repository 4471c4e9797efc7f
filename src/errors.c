#include "config.h"

#include "errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

const char *p3_strerror(int err) {
  switch (err) {
#define P3_ERR_MSG(name, value, status, msg)                                                       \
  case name:                                                                                       \
    return msg;
    P3_ERRORS(P3_ERR_MSG)
#undef P3_ERR_MSG
  default:
    break;
  }
  if (err == 0)
    return "success";
  /* libuv's codes are negated errno values on Unix; uv_strerror also knows
   * its own UV_EAI_* resolver codes. */
  return uv_strerror(err);
}

int p3_exit_status(int err) {
  if (err >= 0)
    return 0;
  switch (err) {
#define P3_ERR_STATUS(name, value, status, msg)                                                    \
  case name:                                                                                       \
    return status;
    P3_ERRORS(P3_ERR_STATUS)
#undef P3_ERR_STATUS
  default:
    break;
  }
  switch (err) {
  case UV_ENOSPC:
  case UV_EACCES:
  case UV_EPERM:
  case UV_EROFS:
  case UV_ENOTDIR:
  case UV_EISDIR:
  case UV_EIO:
  case UV_EEXIST:
  case UV_ENOENT:
  case UV_ELOOP: /* a symlinked tmp/, new/ or cur/, refused */
    return 73;
  case UV_ETIMEDOUT:
    return 75;
  default:
    return 69;
  }
}

void p3_vset_error(char *errbuf, size_t errlen, const char *fmt, va_list ap) {
  if (errbuf == NULL || errlen == 0)
    return;
  vsnprintf(errbuf, errlen, fmt, ap);
}

void p3_set_error(char *errbuf, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  p3_vset_error(errbuf, errlen, fmt, ap);
  va_end(ap);
}

int p3_error(char *errbuf, size_t errlen, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  p3_vset_error(errbuf, errlen, fmt, ap);
  va_end(ap);
  return err;
}

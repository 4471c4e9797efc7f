#include "config.h"

#include "cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <sysexits.h>

int cli_usage_error(const char *prog, const char *help, const char *fmt, ...) {
  va_list ap;

  fprintf(stderr, "%s: ", prog);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nTry `%s' for more information.\n", help);
  return EX_USAGE;
}

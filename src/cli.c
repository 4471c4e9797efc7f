#include "config.h"

#include "cli.h"

#include "tls.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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

int cli_parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *v) {
  char *end;
  unsigned long x;

  if (*s < '0' || *s > '9')
    return -1;
  errno = 0;
  x = strtoul(s, &end, 10);
  if (errno || *end || x < min || x > max)
    return -1;
  *v = x;
  return 0;
}

int cli_option_pin(const char *prog, const char *help, const char *text, uint8_t pins[][32],
                   int *pin_count) {
  if (*pin_count == P3_TLS_MAX_PINS)
    return cli_usage_error(prog, help, "too many --tls-fingerprint options (at most %d)",
                           P3_TLS_MAX_PINS);
  if (tls_parse_fingerprint(text, pins[*pin_count]) != 0)
    return cli_usage_error(prog, help,
                           "--tls-fingerprint `%s' is not sha256: followed by 64 hex digits", text);
  (*pin_count)++;
  return 0;
}

int cli_option_timeout(const char *prog, const char *help, const char *text, unsigned *seconds) {
  unsigned long v;

  if (cli_parse_uint(text, 1, 86400, &v) != 0)
    return cli_usage_error(prog, help, "--timeout `%s' is not a number of seconds from 1 to 86400",
                           text);
  *seconds = (unsigned)v;
  return 0;
}

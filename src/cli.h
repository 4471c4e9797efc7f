/* What the three programs' command lines share. */
#ifndef P3_CLI_H
#define P3_CLI_H

#include <stdint.h>

/* Prints "PROG: MESSAGE" and "Try `HELP' for more information." to stderr
 * and returns 64 (EX_USAGE), the exit status of a usage error. */
int cli_usage_error(const char *prog, const char *help, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parses a decimal number from min to max (digits only).  Returns 0, or -1
 * (nothing is stored). */
int cli_parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *v);

/* The options pop3 dl and pop3 info share.  Each returns 0, or prints the
 * usage error (as cli_usage_error) and returns 64. */
/* --tls-fingerprint TEXT: appended to pins (at most P3_TLS_MAX_PINS). */
int cli_option_pin(const char *prog, const char *help, const char *text, uint8_t pins[][32],
                   int *pin_count);
/* --timeout SECONDS: 1 to 86400. */
int cli_option_timeout(const char *prog, const char *help, const char *text, unsigned *seconds);

#endif

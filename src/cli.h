/* What the three programs' command lines share. */
#ifndef P3_CLI_H
#define P3_CLI_H

/* Prints "PROG: MESSAGE" and "Try `HELP' for more information." to stderr
 * and returns 64 (EX_USAGE), the exit status of a usage error. */
int cli_usage_error(const char *prog, const char *help, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif

#include "config.h"

#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static const char *log_progname = "pop3sync";
static int log_verbosity;
static int log_journal;

/* $JOURNAL_STREAM is "DEV:INODE" of the journal's stream socket; it only
 * applies when stderr is still that socket (not redirected by a script). */
static int stderr_is_journal(void) {
  const char *js = getenv("JOURNAL_STREAM");
  unsigned long long dev, ino;
  struct stat st;
  if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
    return 0;
  if (fstat(2, &st) != 0)
    return 0;
  return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_init(const char *progname, int verbose) {
  log_progname = progname;
  log_verbosity = verbose;
  log_journal = stderr_is_journal();
}

void log_set_verbose(int verbose) {
  log_verbosity = verbose;
}

int log_verbose(void) {
  return log_verbosity;
}

int log_to_journal(void) {
  return log_journal;
}

void log_msg(enum log_level level, const char *fmt, ...) {
  if (level == LOG_LVL_DEBUG && !log_verbosity)
    return;
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (log_journal)
    fprintf(stderr, "<%d>%s\n", (int)level, line);
  else
    fprintf(stderr, "%s: %s\n", log_progname, line);
}

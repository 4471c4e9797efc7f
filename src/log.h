/* Logging with one voice (after OpenSMTPD's log.c).  Lines go to stderr,
 * prefixed with the program name, or with an sd-daemon priority ("<3>")
 * when stderr is the systemd journal ($JOURNAL_STREAM matches it).
 * Never pass a password to these functions. */
#ifndef P3_LOG_H
#define P3_LOG_H

enum log_level {
  LOG_LVL_ERR = 3,
  LOG_LVL_WARNING = 4,
  LOG_LVL_NOTICE = 5,
  LOG_LVL_INFO = 6,
  LOG_LVL_DEBUG = 7
};

/* Sets the program name and detects the journal.  verbose enables debug. */
void log_init(const char *progname, int verbose);
void log_set_verbose(int verbose);
int log_verbose(void);
/* 1 when lines carry sd-daemon priority prefixes. */
int log_to_journal(void);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

#endif

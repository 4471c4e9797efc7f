/* netrc(5) files: parsing (pure, over a buffer), loading with the
 * permission check, and the lookups pop3sync uses. */
#ifndef P3_NETRC_H
#define P3_NETRC_H

#include <stddef.h>

struct netrc_entry {
  char *machine;  /* NULL for the `default` entry */
  char *login;    /* NULL when absent */
  char *password; /* NULL when absent */
  char *account;  /* NULL when absent */
  int line;       /* line of the `machine`/`default` token, 1-based */
};

struct netrc {
  struct netrc_entry *entries; /* owned */
  size_t count;
};

/* Parses buf (len bytes, need not be NUL-terminated) into *n (which the
 * caller then owns; free with netrc_free).  Tokens are separated by white
 * space; double-quoted tokens may hold spaces and backslash escapes; `#`
 * starts a comment at the beginning of a token; `macdef` bodies (up to an
 * empty line) are skipped.  Returns 0 or P3_ENETRC with *errline_r set to the
 * offending line and errbuf holding the reason. */
int netrc_parse(const char *buf, size_t len, struct netrc *n, int *errline_r, char *errbuf,
                size_t errlen);

/* Reads and parses path.  Refuses (P3_ENETRCPERM) a file that is not owned
 * by the effective uid, a symbolic link that is not (a link of ours to a file
 * of ours is fine), and a file readable or writable by group or others, like
 * ftp(1) does.  Anything but a regular file is P3_ENETRC.  A missing file (or
 * a dangling link of ours) is -ENOENT.  errbuf receives one sentence naming
 * the file (and the line for syntax errors), e.g.
 * "/root/.netrc:3: missing value after `login'" or
 * "/home/me/.netrc is owned by uid 0, not by you (uid 1000)". */
int netrc_load(const char *path, struct netrc *n, char *errbuf, size_t errlen);

void netrc_free(struct netrc *n);

/* The netrc path in force: $NETRC if set and non-empty, else $HOME/.netrc
 * (home from getpwuid when HOME is unset).  Writes into buf; returns 0 or
 * -ENOSPC / -ENOENT. */
int netrc_default_path(char *buf, size_t buflen);

/* First entry whose account equals account, or NULL. */
const struct netrc_entry *netrc_find_account(const struct netrc *n, const char *account);

/* First entry whose machine equals machine (case-insensitive host compare)
 * and, when login is non-NULL, whose login equals it (an entry without a
 * login matches any login).  NULL when none. */
const struct netrc_entry *netrc_find_machine(const struct netrc *n, const char *machine,
                                             const char *login);

/* The `default` entry, or NULL. */
const struct netrc_entry *netrc_find_default(const struct netrc *n);

#endif

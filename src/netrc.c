#include "config.h"

#include "netrc.h"

#include "buf.h"
#include "errors.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* A netrc is a few hundred bytes; anything past this is not one. */
#define NETRC_MAX_SIZE (1024 * 1024)

struct tokenizer {
  const char *p;
  const char *end;
  int line;
};

/* Passwords pass through these buffers: wipe before freeing. */
static void free_secret(char *s) {
  if (s != NULL) {
    explicit_bzero(s, strlen(s));
    free(s);
  }
}

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Reads the next token into *tok_r (malloc'd) and its line into *line_r.
 * Returns 1 for a token, 0 at the end, or P3_ENETRC (errbuf set). */
static int next_token(struct tokenizer *tz, char **tok_r, int *line_r, char *errbuf,
                      size_t errlen) {
  const char *start;
  char *tok, *o;
  size_t n;

  for (;;) {
    while (tz->p < tz->end && is_space(*tz->p)) {
      if (*tz->p == '\n')
        tz->line++;
      tz->p++;
    }
    if (tz->p == tz->end)
      return 0;
    if (*tz->p != '#')
      break;
    /* A comment runs to the end of the line; the newline is counted above. */
    while (tz->p < tz->end && *tz->p != '\n')
      tz->p++;
  }

  *line_r = tz->line;
  if (*tz->p == '"') {
    /* The token can only shrink when escapes are removed. */
    start = ++tz->p;
    tok = malloc((size_t)(tz->end - start) + 1);
    if (tok == NULL)
      return -ENOMEM;
    o = tok;
    for (;;) {
      if (tz->p == tz->end) {
        *o = '\0';
        free_secret(tok);
        p3_set_error(errbuf, errlen, "unterminated quoted string");
        return P3_ENETRC;
      }
      if (*tz->p == '"') {
        tz->p++;
        break;
      }
      if (*tz->p == '\\' && tz->p + 1 < tz->end)
        tz->p++; /* the next character stands for itself */
      if (*tz->p == '\n')
        tz->line++;
      if (*tz->p == '\0') {
        *o = '\0';
        free_secret(tok);
        p3_set_error(errbuf, errlen, "NUL byte in the file");
        return P3_ENETRC;
      }
      *o++ = *tz->p++;
    }
    *o = '\0';
    *tok_r = tok;
    return 1;
  }

  start = tz->p;
  while (tz->p < tz->end && !is_space(*tz->p)) {
    if (*tz->p == '\0') {
      p3_set_error(errbuf, errlen, "NUL byte in the file");
      return P3_ENETRC;
    }
    tz->p++;
  }
  n = (size_t)(tz->p - start);
  tok = malloc(n + 1);
  if (tok == NULL)
    return -ENOMEM;
  memcpy(tok, start, n);
  tok[n] = '\0';
  *tok_r = tok;
  return 1;
}

/* Skips a macro body: the rest of the `macdef' line, then every line up to
 * and including the first empty one (or the end of the file). */
static void skip_macdef(struct tokenizer *tz) {
  while (tz->p < tz->end && *tz->p != '\n')
    tz->p++;
  if (tz->p == tz->end)
    return;
  tz->p++;
  tz->line++;
  while (tz->p < tz->end) {
    const char *q = tz->p;
    if (*q == '\r' && q + 1 < tz->end)
      q++;
    if (*q == '\n') {
      tz->p = q + 1;
      tz->line++;
      return;
    }
    while (tz->p < tz->end && *tz->p != '\n')
      tz->p++;
    if (tz->p < tz->end) {
      tz->p++;
      tz->line++;
    }
  }
}

static void entry_free(struct netrc_entry *e) {
  free(e->machine);
  free(e->login);
  free_secret(e->password);
  free(e->account);
}

void netrc_free(struct netrc *n) {
  size_t i;

  if (n == NULL)
    return;
  for (i = 0; i < n->count; i++)
    entry_free(&n->entries[i]);
  free(n->entries);
  n->entries = NULL;
  n->count = 0;
}

static int add_entry(struct netrc *n, size_t *cap, char *machine, int line) {
  struct netrc_entry *e;

  if (buf_grow(&n->entries, cap, n->count + 1, sizeof(*e), 8, SIZE_MAX / sizeof(*e)) != 0)
    return -ENOMEM;
  e = &n->entries[n->count++];
  memset(e, 0, sizeof(*e));
  e->machine = machine;
  e->line = line;
  return 0;
}

int netrc_parse(const char *buf, size_t len, struct netrc *n, int *errline_r, char *errbuf,
                size_t errlen) {
  struct tokenizer tz = {buf, buf + len, 1};
  struct netrc out = {NULL, 0};
  size_t cap = 0;
  char *kw = NULL, *val = NULL;
  int line = 1, vline, r;

  if (errbuf != NULL && errlen > 0)
    errbuf[0] = '\0';
  for (;;) {
    char **slot;

    r = next_token(&tz, &kw, &line, errbuf, errlen);
    if (r <= 0)
      break; /* on an error, line is where the bad token starts */

    if (strcmp(kw, "default") == 0) {
      r = add_entry(&out, &cap, NULL, line);
      if (r < 0)
        break;
      free(kw);
      kw = NULL;
      continue;
    }

    if (strcmp(kw, "machine") != 0 && strcmp(kw, "login") != 0 && strcmp(kw, "password") != 0 &&
        strcmp(kw, "account") != 0 && strcmp(kw, "macdef") != 0) {
      /* Not quoted back: a stray token is most often the second half of a
       * password that contains a space. */
      p3_set_error(errbuf, errlen,
                   "unknown keyword or stray value (a value with spaces must be "
                   "written in double quotes)");
      r = P3_ENETRC;
      break;
    }

    r = next_token(&tz, &val, &vline, errbuf, errlen);
    if (r < 0)
      break;
    if (r == 0) {
      p3_set_error(errbuf, errlen, "missing value after `%s'", kw);
      r = P3_ENETRC;
      break;
    }

    if (strcmp(kw, "machine") == 0) {
      r = add_entry(&out, &cap, val, line);
      if (r < 0)
        break;
      val = NULL;
    } else if (strcmp(kw, "macdef") == 0) {
      skip_macdef(&tz);
      free(val);
      val = NULL;
    } else {
      struct netrc_entry *e;
      if (out.count == 0) {
        p3_set_error(errbuf, errlen, "`%s' before any `machine' or `default'", kw);
        r = P3_ENETRC;
        break;
      }
      e = &out.entries[out.count - 1];
      slot = strcmp(kw, "login") == 0      ? &e->login
             : strcmp(kw, "password") == 0 ? &e->password
                                           : &e->account;
      /* Two values for one field: refuse to guess which one is meant. */
      if (*slot != NULL) {
        p3_set_error(errbuf, errlen, "`%s' given twice for the entry of line %d", kw, e->line);
        r = P3_ENETRC;
        break;
      }
      *slot = val;
      val = NULL;
    }
    free(kw);
    kw = NULL;
  }

  free(kw);
  free_secret(val);
  if (r < 0) {
    netrc_free(&out);
    if (errline_r != NULL)
      *errline_r = line;
    if (r == -ENOMEM)
      p3_set_error(errbuf, errlen, "out of memory");
    return r;
  }
  *n = out;
  return 0;
}

/* Opens path for reading if it is ours: a regular file owned by the
 * effective uid, reached either directly (opened O_NOFOLLOW, so it cannot be
 * swapped for a symlink after the lstat) or through a symlink that is itself
 * ours.  Returns the descriptor with *st filled from fstat, or a negative
 * error with errbuf set: -errno (-ENOENT for a missing file or a dangling
 * link of ours), P3_ENETRCPERM, P3_ENETRC (not a regular file). */
static int open_own_file(const char *path, struct stat *st, char *errbuf, size_t errlen) {
  unsigned long me = (unsigned long)geteuid();
  struct stat lst;
  int fd, r, via_link;

  if (lstat(path, &lst) < 0) {
    r = -errno;
    p3_set_error(errbuf, errlen, "%s: %s", path, strerror(-r));
    return r;
  }
  via_link = S_ISLNK(lst.st_mode);
  /* Someone else's link could be pointed anywhere, at any time. */
  if (via_link && lst.st_uid != me) {
    p3_set_error(errbuf, errlen, "%s is a symbolic link owned by uid %lu, not by you (uid %lu)",
                 path, (unsigned long)lst.st_uid, me);
    return P3_ENETRCPERM;
  }
  /* Said before the open, which may fail (EACCES) on another user's file:
   * the reason is the owner.  The fstat below stays the check that counts. */
  if (via_link ? stat(path, &lst) == 0 : 1) {
    if (lst.st_uid != me) {
      p3_set_error(errbuf, errlen,
                   via_link ? "%s links to a file owned by uid %lu, not by you (uid %lu)"
                            : "%s is owned by uid %lu, not by you (uid %lu)",
                   path, (unsigned long)lst.st_uid, me);
      return P3_ENETRCPERM;
    }
  }
  /* O_NONBLOCK: a FIFO planted here must not hang us; read() of a regular
   * file ignores it. */
  fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (via_link ? 0 : O_NOFOLLOW));
  if (fd < 0) {
    r = -errno;
    if (r == -ELOOP && !via_link)
      p3_set_error(errbuf, errlen, "%s: became a symbolic link while being opened", path);
    else
      p3_set_error(errbuf, errlen, "%s: %s", path, strerror(-r));
    return r;
  }
  if (fstat(fd, st) < 0) {
    r = -errno;
    p3_set_error(errbuf, errlen, "%s: %s", path, strerror(-r));
    close(fd);
    return r;
  }
  if (!S_ISREG(st->st_mode)) {
    p3_set_error(errbuf, errlen, "%s: not a regular file", path);
    close(fd);
    return P3_ENETRC;
  }
  /* Checked on the open file, so a rename in between cannot swap it: a file
   * another user can rewrite (or wrote for us) could send our login anywhere. */
  if (st->st_uid != me) {
    if (via_link)
      p3_set_error(errbuf, errlen, "%s links to a file owned by uid %lu, not by you (uid %lu)",
                   path, (unsigned long)st->st_uid, me);
    else
      p3_set_error(errbuf, errlen, "%s is owned by uid %lu, not by you (uid %lu)", path,
                   (unsigned long)st->st_uid, me);
    close(fd);
    return P3_ENETRCPERM;
  }
  return fd;
}

int netrc_load(const char *path, struct netrc *n, char *errbuf, size_t errlen) {
  struct stat st;
  char *buf;
  size_t len = 0;
  char reason[256];
  int fd, r, errline = 0;

  fd = open_own_file(path, &st, errbuf, errlen);
  if (fd < 0)
    return fd;
  if (st.st_mode & (S_IRGRP | S_IROTH | S_IWGRP | S_IWOTH)) {
    p3_set_error(errbuf, errlen, "%s: %s by group or others (mode 0%03o); chmod 600 it", path,
                 st.st_mode & (S_IRGRP | S_IROTH) ? "readable" : "writable",
                 (unsigned)(st.st_mode & 07777));
    close(fd);
    return P3_ENETRCPERM;
  }
  if (st.st_size > NETRC_MAX_SIZE) {
    p3_set_error(errbuf, errlen, "%s: larger than %d bytes", path, NETRC_MAX_SIZE);
    close(fd);
    return -EFBIG;
  }

  buf = malloc(NETRC_MAX_SIZE + 1);
  if (buf == NULL) {
    close(fd);
    p3_set_error(errbuf, errlen, "%s: out of memory", path);
    return -ENOMEM;
  }
  /* Read to the bound, not to st_size: the file may grow meanwhile. */
  for (;;) {
    ssize_t got = read(fd, buf + len, NETRC_MAX_SIZE + 1 - len);
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0) {
      r = -errno;
      p3_set_error(errbuf, errlen, "%s: %s", path, strerror(-r));
      goto out;
    }
    if (got == 0)
      break;
    len += (size_t)got;
    if (len > NETRC_MAX_SIZE) {
      p3_set_error(errbuf, errlen, "%s: larger than %d bytes", path, NETRC_MAX_SIZE);
      r = -EFBIG;
      goto out;
    }
  }

  r = netrc_parse(buf, len, n, &errline, reason, sizeof(reason));
  if (r < 0)
    p3_set_error(errbuf, errlen, "%s:%d: %s", path, errline, reason);

out:
  explicit_bzero(buf, len);
  free(buf);
  close(fd);
  return r;
}

int netrc_default_path(char *buf, size_t buflen) {
  const char *env = getenv("NETRC");
  const char *home;
  int n;

  if (env != NULL && env[0] != '\0') {
    n = snprintf(buf, buflen, "%s", env);
  } else {
    home = getenv("HOME");
    if (home == NULL || home[0] == '\0') {
      struct passwd *pw = getpwuid(geteuid());
      if (pw == NULL || pw->pw_dir == NULL || pw->pw_dir[0] == '\0')
        return -ENOENT;
      home = pw->pw_dir;
    }
    n = snprintf(buf, buflen, "%s%s.netrc", home, home[strlen(home) - 1] == '/' ? "" : "/");
  }
  if (n < 0 || (size_t)n >= buflen) {
    if (buflen > 0)
      buf[0] = '\0';
    return -ENOSPC;
  }
  return 0;
}

const struct netrc_entry *netrc_find_account(const struct netrc *n, const char *account) {
  size_t i;

  for (i = 0; i < n->count; i++)
    if (n->entries[i].account != NULL && strcmp(n->entries[i].account, account) == 0)
      return &n->entries[i];
  return NULL;
}

/* Machines may be plain hosts or "user@host:port" identities: the user part
 * is compared exactly, the rest without regard to case (DNS names). */
static int machine_equal(const char *a, const char *b) {
  const char *at_a = strrchr(a, '@');
  const char *at_b = strrchr(b, '@');
  size_t ua = at_a != NULL ? (size_t)(at_a - a) : 0;
  size_t ub = at_b != NULL ? (size_t)(at_b - b) : 0;

  if ((at_a == NULL) != (at_b == NULL))
    return 0;
  if (at_a != NULL) {
    if (ua != ub || memcmp(a, b, ua) != 0)
      return 0;
    a = at_a + 1;
    b = at_b + 1;
  }
  return strcasecmp(a, b) == 0;
}

const struct netrc_entry *netrc_find_machine(const struct netrc *n, const char *machine,
                                             const char *login) {
  size_t i;

  for (i = 0; i < n->count; i++) {
    const struct netrc_entry *e = &n->entries[i];
    if (e->machine == NULL || !machine_equal(e->machine, machine))
      continue;
    if (login != NULL && e->login != NULL && strcmp(e->login, login) != 0)
      continue;
    return e;
  }
  return NULL;
}

const struct netrc_entry *netrc_find_default(const struct netrc *n) {
  size_t i;

  for (i = 0; i < n->count; i++)
    if (n->entries[i].machine == NULL)
      return &n->entries[i];
  return NULL;
}

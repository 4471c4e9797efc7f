#include "config.h"

#include "cfg.h"

#include "errors.h"
#include "hashtab.h"
#include "human.h"

#include <errno.h>
#include <fcntl.h>
#include <libconfig.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* How much of a user-written value a message quotes: enough to recognise
 * it, never a wall of text. */
#define QUOTE_MAX 64
#define NAME_MAX_LEN 64
#define TIMEOUT_MAX 86400 /* as `pop3 dl --timeout' */
#define DEFAULT_INTERVAL 300
#define DEFAULT_MAX_PARALLEL 4
#define DEFAULT_TIMEOUT 120
#define DEFAULT_HOOK_TIMEOUT 60
#define HOOK_COMMAND_MAX 4096u
#define SUN_PATH_SIZE sizeof(((struct sockaddr_un *)0)->sun_path)

struct loader {
  const char *path;        /* as the caller wrote it: messages name the file that way */
  struct cfg_errors *errs; /* may be NULL */
  int failed;              /* an error was found, even one errs could not hold */
  int oom;
  struct stat st; /* of the main file, for the password mode check */
  int check_maildirs;
  int as_root; /* root's rules: every account names its `user' */
  char *dir;   /* directory of the file: @include and its names are relative to it */
  /* Where each error stands, parallel to errs->lines: errors are listed in
   * the file's order (the main file first, then each @include in the order
   * met), whatever order the checks found them in. */
  uint64_t *order;
  const char **files; /* @include names met so far (libconfig's strings) */
  size_t file_count;
};

/* ---- error list */

/* Records line (NULL: out of memory) at position pos (errors_pos). */
static void add_line_at(struct loader *ld, char *line, uint64_t pos) {
  char **lines;
  uint64_t *order;

  ld->failed = 1;
  if (line == NULL) {
    ld->oom = 1;
    return;
  }
  if (ld->errs == NULL) {
    free(line);
    return;
  }
  order = realloc(ld->order, (ld->errs->count + 1) * sizeof(*order));
  if (order != NULL)
    ld->order = order;
  lines = order == NULL ? NULL : realloc(ld->errs->lines, (ld->errs->count + 1) * sizeof(*lines));
  if (lines == NULL) {
    ld->oom = 1;
    free(line);
    return;
  }
  ld->order[ld->errs->count] = pos;
  lines[ld->errs->count++] = line;
  ld->errs->lines = lines;
}

/* An error of the whole file (or the only one: a syntax error) comes first. */
static void add_line(struct loader *ld, char *line) {
  add_line_at(ld, line, 0);
}

/* The sort key of an error at lineno of file (libconfig's name for an
 * @include, NULL for the main file). */
static uint64_t errors_pos(struct loader *ld, const char *file, unsigned lineno) {
  size_t rank = 0, i;

  if (file != NULL) {
    for (i = 0; i < ld->file_count; i++)
      if (strcmp(ld->files[i], file) == 0)
        break;
    if (i == ld->file_count) {
      const char **files = realloc(ld->files, (i + 1) * sizeof(*files));
      if (files != NULL) {
        ld->files = files;
        ld->files[ld->file_count++] = file;
      }
    }
    rank = i + 1;
  }
  return ((uint64_t)rank << 32) | lineno;
}

struct error_ref {
  uint64_t pos;
  size_t index; /* the order found: keeps equal positions stable */
  char *line;
};

static int compare_error_ref(const void *a, const void *b) {
  const struct error_ref *x = a, *y = b;

  if (x->pos != y->pos)
    return x->pos < y->pos ? -1 : 1;
  return x->index < y->index ? -1 : x->index > y->index;
}

/* Puts the error list into the file's order. */
static void sort_errors(struct loader *ld) {
  struct error_ref *refs;
  size_t i, n;

  if (ld->errs == NULL || ld->order == NULL || ld->errs->count < 2)
    return;
  n = ld->errs->count;
  refs = malloc(n * sizeof(*refs));
  if (refs == NULL)
    return; /* found order, then: still every error */
  for (i = 0; i < n; i++)
    refs[i] = (struct error_ref){ld->order[i], i, ld->errs->lines[i]};
  qsort(refs, n, sizeof(*refs), compare_error_ref);
  for (i = 0; i < n; i++)
    ld->errs->lines[i] = refs[i].line;
  free(refs);
}

__attribute__((format(printf, 1, 2))) static char *asprintf_or_null(const char *fmt, ...) {
  va_list ap;
  char *r = NULL;
  int n;

  va_start(ap, fmt);
  n = vasprintf(&r, fmt, ap);
  va_end(ap);
  return n < 0 ? NULL : r;
}

/* The file a setting (or libconfig's error) comes from: ld->path for the
 * main file.  libconfig 1.5 records an @include's name as written, which
 * it opened relative to the include directory: so do we. */
static const char *source_file(const struct loader *ld, const char *f, char *buf, size_t len) {
  int n;

  if (f == NULL)
    return ld->path;
  if (f[0] == '/' || ld->dir == NULL)
    return f;
  n = snprintf(buf, len, "%s/%s", strcmp(ld->dir, "/") == 0 ? "" : ld->dir, f);
  return n < 0 || (size_t)n >= len ? f : buf;
}

/* Records "FILE:LINE: message" for setting s (FILE differs from ld->path
 * inside an @include), or "FILE: message" when s is NULL. */
__attribute__((format(printf, 3, 4))) static void
add_error(struct loader *ld, const config_setting_t *s, const char *fmt, ...) {
  va_list ap;
  char *msg = NULL, buf[PATH_MAX];
  const char *file = ld->path;
  unsigned lineno = 0;
  uint64_t pos = 0;

  if (s != NULL) {
    file = source_file(ld, config_setting_source_file(s), buf, sizeof(buf));
    lineno = config_setting_source_line(s);
    pos = errors_pos(ld, config_setting_source_file(s), lineno);
  }
  va_start(ap, fmt);
  if (vasprintf(&msg, fmt, ap) < 0)
    msg = NULL;
  va_end(ap);
  if (msg == NULL) {
    add_line(ld, NULL);
    return;
  }
  if (lineno > 0)
    add_line_at(ld, asprintf_or_null("%s:%u: %s", file, lineno, msg), pos);
  else
    add_line_at(ld, asprintf_or_null("%s: %s", file, msg), pos);
  free(msg);
}

void cfg_errors_free(struct cfg_errors *errs) {
  size_t i;

  if (errs == NULL)
    return;
  for (i = 0; i < errs->count; i++)
    free(errs->lines[i]);
  free(errs->lines);
  errs->lines = NULL;
  errs->count = 0;
}

/* ---- unknown keys */

/* The keys of each level, for "did you mean" (keep in step with
 * load_account and load_root). */
static const char *const account_keys[] = {
    "name",     "server",      "maildir",    "user",         "interval", "password_command",
    "password", "netrc",       "ca_file",    "window",       "timeout",  "tls_fingerprint",
    "auth",     "pipelining",  "keep",       "keep_days",    "utf8",     "enabled",
    "max_size", "on_new_mail", "on_failure", "hook_timeout", NULL};
static const char *const global_keys[] = {
    "control_socket", "state_dir",    "interval", "max_parallel", "timeout",
    "pipelining",     "auth",         "accounts", "max_size",     "on_new_mail",
    "on_failure",     "hook_timeout", NULL};

/* Optimal string alignment distance between a and b, case-insensitive,
 * capped: anything above 3 is 3. */
static unsigned key_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b), i, j;
  unsigned d[33][33];

  if (la > 32 || lb > 32)
    return 3;
  for (i = 0; i <= la; i++)
    d[i][0] = (unsigned)i;
  for (j = 0; j <= lb; j++)
    d[0][j] = (unsigned)j;
  for (i = 1; i <= la; i++)
    for (j = 1; j <= lb; j++) {
      unsigned cost = (a[i - 1] | 0x20) == (b[j - 1] | 0x20) ? 0 : 1, v = d[i - 1][j - 1] + cost;
      if (d[i - 1][j] + 1 < v)
        v = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < v)
        v = d[i][j - 1] + 1;
      if (i > 1 && j > 1 && (a[i - 1] | 0x20) == (b[j - 2] | 0x20) &&
          (a[i - 2] | 0x20) == (b[j - 1] | 0x20) && d[i - 2][j - 2] + 1 < v)
        v = d[i - 2][j - 2] + 1;
      d[i][j] = v;
    }
  return d[la][lb] > 3 ? 3 : d[la][lb];
}

/* The known key closest to key, or NULL when none is close: one edit for a
 * short key, two for a longer one. */
static const char *closest_key(const char *const *keys, const char *key) {
  const char *best = NULL;
  unsigned best_d = strlen(key) >= 6 ? 3 : 2;

  for (; *keys != NULL; keys++) {
    unsigned dist = key_distance(key, *keys);
    if (dist < best_d) {
      best_d = dist;
      best = *keys;
    }
  }
  return best;
}

static int key_listed(const char *const *keys, const char *key) {
  for (; *keys != NULL; keys++)
    if (strcmp(*keys, key) == 0)
      return 1;
  return 0;
}

/* "unknown key `X'", with a hint: the key of the other level, or a close
 * spelling of a key of this one. */
static void unknown_key(struct loader *ld, const config_setting_t *s, int in_account) {
  const char *key = config_setting_name(s);
  const char *const *here = in_account ? account_keys : global_keys;
  const char *const *there = in_account ? global_keys : account_keys;
  const char *hint;

  if (key_listed(there, key))
    add_error(ld, s, "`%s' is not a setting of %s", key,
              in_account ? "an account (it belongs at the top of the file)"
                         : "the file (it belongs inside an account group)");
  else if ((hint = closest_key(here, key)) != NULL)
    add_error(ld, s, "unknown key `%.*s' (did you mean `%s'?)", QUOTE_MAX, key, hint);
  else
    add_error(ld, s, "unknown key `%.*s'", QUOTE_MAX, key);
}

/* ---- defaults */

__attribute__((format(printf, 3, 4))) static int fmt_path(char *buf, size_t len, const char *fmt,
                                                          ...) {
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(buf, len, fmt, ap);
  va_end(ap);
  if (n < 0)
    return -EINVAL;
  if ((size_t)n >= len) {
    if (len > 0)
      buf[0] = '\0';
    return -ENAMETOOLONG;
  }
  return 0;
}

/* An environment variable naming a directory, or NULL: relative values are
 * ignored as the XDG spec asks.  systemd joins several RuntimeDirectory=
 * (StateDirectory=) entries with `:'; the first is ours, and *len_r says
 * how much of the value that is. */
static const char *env_dir(const char *name, size_t *len_r) {
  const char *v = getenv(name);

  if (v == NULL || v[0] != '/')
    return NULL;
  *len_r = strcspn(v, ":");
  return v;
}

/* $HOME, else the password database's home of the effective user. */
static int home_dir(char *buf, size_t len) {
  const char *h = getenv("HOME");
  struct passwd pw, *res = NULL;
  char pwbuf[4096];

  if (h != NULL && h[0] == '/')
    return fmt_path(buf, len, "%s", h);
  if (getpwuid_r(geteuid(), &pw, pwbuf, sizeof(pwbuf), &res) != 0 || res == NULL ||
      pw.pw_dir == NULL || pw.pw_dir[0] != '/')
    return -ENOENT;
  return fmt_path(buf, len, "%s", pw.pw_dir);
}

int cfg_default_path(char *buf, size_t len) {
  const char *x;
  char home[PATH_MAX];
  int err;

  if (geteuid() == 0)
    return fmt_path(buf, len, "%s/pop3sync/pop3sync.conf", SYSCONFDIR);
  x = getenv("XDG_CONFIG_HOME");
  if (x != NULL && x[0] == '/')
    return fmt_path(buf, len, "%s/pop3sync/pop3sync.conf", x);
  err = home_dir(home, sizeof(home));
  if (err < 0)
    return err;
  return fmt_path(buf, len, "%s/.config/pop3sync/pop3sync.conf", home);
}

int cfg_default_socket(char *buf, size_t len) {
  const char *x;
  size_t n = 0;

  x = env_dir("RUNTIME_DIRECTORY", &n);
  if (x != NULL)
    return fmt_path(buf, len, "%.*s/control.sock", (int)n, x);
  if (geteuid() == 0)
    return fmt_path(buf, len, "%s", "/run/pop3sync/control.sock");
  x = getenv("XDG_RUNTIME_DIR");
  if (x != NULL && x[0] == '/')
    return fmt_path(buf, len, "%s/pop3sync/control.sock", x);
  return fmt_path(buf, len, "/tmp/pop3sync-%lu/control.sock", (unsigned long)geteuid());
}

int cfg_default_state_dir(char *buf, size_t len) {
  const char *x;
  size_t n = 0;
  char home[PATH_MAX];
  int err;

  x = env_dir("STATE_DIRECTORY", &n);
  if (x != NULL)
    return fmt_path(buf, len, "%.*s", (int)n, x);
  if (geteuid() == 0)
    return fmt_path(buf, len, "%s/lib/pop3sync", LOCALSTATEDIR);
  x = getenv("XDG_STATE_HOME");
  if (x != NULL && x[0] == '/')
    return fmt_path(buf, len, "%s/pop3sync", x);
  err = home_dir(home, sizeof(home));
  if (err < 0)
    return err;
  return fmt_path(buf, len, "%s/.local/state/pop3sync", home);
}

/* ---- typed readers: each reports its own error and returns -1 */

static int get_string(struct loader *ld, const config_setting_t *s, const char **out) {
  if (config_setting_type(s) != CONFIG_TYPE_STRING) {
    add_error(ld, s, "`%s' must be a string", config_setting_name(s));
    return -1;
  }
  *out = config_setting_get_string(s);
  return 0;
}

/* A non-empty string, copied. */
static int get_dup(struct loader *ld, const config_setting_t *s, char **out) {
  const char *v;

  if (get_string(ld, s, &v) < 0)
    return -1;
  if (v[0] == '\0') {
    add_error(ld, s, "`%s' is empty", config_setting_name(s));
    return -1;
  }
  *out = strdup(v);
  if (*out == NULL) {
    add_line(ld, NULL);
    return -1;
  }
  return 0;
}

/* An absolute path, or one starting with ~/ (expanded with $HOME), copied. */
static int get_path(struct loader *ld, const config_setting_t *s, char **out) {
  const char *v;
  char home[PATH_MAX];

  if (get_string(ld, s, &v) < 0)
    return -1;
  if (strncmp(v, "~/", 2) == 0) {
    if (home_dir(home, sizeof(home)) < 0) {
      add_error(ld, s, "`%s' starts with ~/ but $HOME is not set", config_setting_name(s));
      return -1;
    }
    if (asprintf(out, "%s%s", home, v + 1) < 0) {
      *out = NULL;
      add_line(ld, NULL);
      return -1;
    }
    return 0;
  }
  if (v[0] != '/') {
    add_error(ld, s, "`%s' must be an absolute path (or start with ~/), not `%.*s'",
              config_setting_name(s), QUOTE_MAX, v);
    return -1;
  }
  *out = strdup(v);
  if (*out == NULL) {
    add_line(ld, NULL);
    return -1;
  }
  return 0;
}

/* libconfig's int or int64 (a value written with an L suffix), within
 * [min, max]; floats and strings are type errors, not converted. */
static int get_int(struct loader *ld, const config_setting_t *s, long long min, long long max,
                   long long *out) {
  long long v;

  switch (config_setting_type(s)) {
  case CONFIG_TYPE_INT:
    v = config_setting_get_int(s);
    break;
  case CONFIG_TYPE_INT64:
    v = config_setting_get_int64(s);
    break;
  default:
    add_error(ld, s, "`%s' must be an integer", config_setting_name(s));
    return -1;
  }
  if (v < min || v > max) {
    add_error(ld, s, "`%s' must be between %lld and %lld, not %lld", config_setting_name(s), min,
              max, v);
    return -1;
  }
  *out = v;
  return 0;
}

static int get_uint(struct loader *ld, const config_setting_t *s, unsigned min, unsigned max,
                    unsigned *out) {
  long long v;

  if (get_int(ld, s, min, max, &v) < 0)
    return -1;
  *out = (unsigned)v;
  return 0;
}

static int get_bool(struct loader *ld, const config_setting_t *s, int *out) {
  if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
    add_error(ld, s, "`%s' must be true or false", config_setting_name(s));
    return -1;
  }
  *out = config_setting_get_bool(s) != 0;
  return 0;
}

static int get_pipelining(struct loader *ld, const config_setting_t *s,
                          enum session_pipelining *out) {
  const char *v;

  if (get_string(ld, s, &v) < 0)
    return -1;
  if (strcmp(v, "on") == 0)
    *out = SESSION_PIPELINING_ON;
  else if (strcmp(v, "auto") == 0)
    *out = SESSION_PIPELINING_AUTO;
  else if (strcmp(v, "off") == 0)
    *out = SESSION_PIPELINING_OFF;
  else {
    add_error(ld, s, "`pipelining' must be \"on\", \"auto\" or \"off\", not `%.*s'", QUOTE_MAX, v);
    return -1;
  }
  return 0;
}

static int get_auth(struct loader *ld, const config_setting_t *s, enum session_auth *out) {
  const char *v;

  if (get_string(ld, s, &v) < 0)
    return -1;
  if (session_auth_parse(v, out) != 0) {
    add_error(ld, s,
              "`auth' must be \"auto\", \"user\", \"apop\", \"plain\", \"login\", "
              "\"xoauth2\" or \"oauthbearer\", not `%.*s'",
              QUOTE_MAX, v);
    return -1;
  }
  return 0;
}

/* A Unix socket address holds sun_path bytes including the NUL; a longer
 * path would only fail at bind time, long after the reload said "ok". */
static int check_socket_len(struct loader *ld, const config_setting_t *s, const char *p) {
  size_t n = strlen(p);

  if (n < SUN_PATH_SIZE)
    return 0;
  if (s != NULL)
    add_error(ld, s, "control_socket path is %zu bytes; a Unix socket path can have at most %zu", n,
              SUN_PATH_SIZE - 1);
  else
    add_error(ld, NULL,
              "the default control_socket path %s is %zu bytes; a Unix socket path can have "
              "at most %zu: set control_socket",
              p, n, SUN_PATH_SIZE - 1);
  return -1;
}

/* A hook command (on_new_mail, on_failure): a string, copied; "" is kept
 * (it disables a global hook for one account). */
static int get_hook(struct loader *ld, const config_setting_t *s, char **out) {
  const char *v;

  if (get_string(ld, s, &v) < 0)
    return -1;
  if (strlen(v) > HOOK_COMMAND_MAX) { /* it travels as one line of the worker channel */
    add_error(ld, s, "`%s' is longer than %u bytes: put the commands in a script and name it",
              config_setting_name(s), HOOK_COMMAND_MAX);
    return -1;
  }
  free(*out);
  *out = strdup(v);
  if (*out == NULL) {
    add_line(ld, NULL);
    return -1;
  }
  return 0;
}

/* max_size: a size as `pop3 dl --max-size' takes it ("10M", human.h), or
 * an integer number of bytes; 0 (or "0") is no limit, so that an account
 * can lift a global max_size. */
static int get_size(struct loader *ld, const config_setting_t *s, uint64_t *out) {
  const char *v;
  long long n;
  uint64_t u;
  int err;

  if (config_setting_type(s) == CONFIG_TYPE_INT || config_setting_type(s) == CONFIG_TYPE_INT64) {
    if (get_int(ld, s, 0, LLONG_MAX, &n) < 0)
      return -1;
    *out = (uint64_t)n;
    return 0;
  }
  if (config_setting_type(s) != CONFIG_TYPE_STRING) {
    add_error(ld, s, "`max_size' must be a size such as \"10M\" or a number of bytes");
    return -1;
  }
  v = config_setting_get_string(s);
  if (strcmp(v, "0") == 0) {
    *out = 0;
    return 0;
  }
  if ((err = human_parse_size(v, &u)) < 0) {
    add_error(ld, s,
              "max_size `%.*s' is not a size: a number of bytes, or with K, M or G (KiB, MiB, "
              "GiB), e.g. \"10M\"%s",
              QUOTE_MAX, v, err == -ERANGE ? " (too large)" : "");
    return -1;
  }
  *out = u;
  return 0;
}

/* ---- accounts */

static int valid_name(struct loader *ld, const config_setting_t *s, const char *name) {
  size_t n = strlen(name);

  if (n == 0 ||
      strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") != n) {
    add_error(ld, s, "bad account name `%.*s': use only letters, digits, `.', `_' and `-'",
              QUOTE_MAX, name);
    return -1;
  }
  if (n > NAME_MAX_LEN) {
    add_error(ld, s, "bad account name `%.*s...': longer than %d characters", QUOTE_MAX, name,
              NAME_MAX_LEN);
    return -1;
  }
  /* The name may become a file name under state_dir. */
  if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
    add_error(ld, s, "bad account name `%s': it names a directory", name);
    return -1;
  }
  return 0;
}

/* Parses one fingerprint into the next free pin.  Returns 0 or -1 (reported). */
static int add_pin(struct loader *ld, const config_setting_t *s, struct cfg_account *a) {
  const char *v;

  if (config_setting_type(s) != CONFIG_TYPE_STRING) {
    add_error(ld, s, "`tls_fingerprint' must be a string or a list of strings");
    return -1;
  }
  v = config_setting_get_string(s);
  if (tls_parse_fingerprint(v, a->pins[a->pin_count]) < 0) {
    add_error(ld, s, "bad tls_fingerprint `%.*s': expected sha256: and 64 hex digits",
              2 * QUOTE_MAX, v);
    return -1;
  }
  a->pin_count++;
  return 0;
}

/* `tls_fingerprint': a string or a list (or array) of at most
 * P3_TLS_MAX_PINS strings.  Returns 0 or -1 when any part was bad. */
static int get_pins(struct loader *ld, const config_setting_t *s, struct cfg_account *a) {
  int i, n, bad = 0;

  switch (config_setting_type(s)) {
  case CONFIG_TYPE_STRING:
    return add_pin(ld, s, a);
  case CONFIG_TYPE_ARRAY:
  case CONFIG_TYPE_LIST:
    n = config_setting_length(s);
    if (n > P3_TLS_MAX_PINS) {
      add_error(ld, s, "`tls_fingerprint' lists %d fingerprints; at most %d are allowed", n,
                P3_TLS_MAX_PINS);
      return -1;
    }
    for (i = 0; i < n; i++)
      bad |= add_pin(ld, config_setting_get_elem(s, i), a) < 0;
    return bad ? -1 : 0;
  default:
    add_error(ld, s, "`tls_fingerprint' must be a string or a list of strings");
    return -1;
  }
}

/* What can be said of a Maildir without writing: a path that exists must be
 * a directory (one that does not is created by the run, as the account's
 * user).  Loading the file never creates or changes anything on disk, so
 * that --check-config and a reload are safe to run at any time.  Other
 * errors (EACCES on a home root cannot read) are left to the run, which
 * reports them with the account's own rights.  Returns 0 or -errno. */
static int check_maildir(const char *maildir) {
  struct stat st;

  if (stat(maildir, &st) != 0)
    return errno == ENOTDIR ? -ENOTDIR : 0;
  return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* A plaintext password is only as safe as the file that holds it. */
static void check_password_file(struct loader *ld, const config_setting_t *s) {
  char buf[PATH_MAX];
  const char *file = source_file(ld, config_setting_source_file(s), buf, sizeof(buf));
  struct stat st;
  mode_t mode;

  if (config_setting_source_file(s) == NULL)
    st = ld->st;
  else if (stat(file, &st) != 0) {
    add_error(ld, s, "cannot check the mode of %s: %s", file, strerror(errno));
    return;
  }
  mode = st.st_mode & 07777;
  if ((mode & 077) == 0)
    return;
  add_error(ld, s, "a plaintext password in a file %s by group or others (mode %04o); chmod 600 %s",
            (mode & 044) ? "readable" : "writable", (unsigned)mode, file);
}

/* The password's copy inside libconfig's tree would otherwise outlive the
 * load in freed memory. */
static void wipe_setting_string(const config_setting_t *s) {
  const char *v = config_setting_get_string(s);

  if (v != NULL)
    explicit_bzero((char *)v, strlen(v));
}

/* Root runs each account as its user (privilege separation), so it must
 * know which; anybody else can only run accounts as themselves. */
static void check_user(struct loader *ld, const config_setting_t *g, const config_setting_t *user_s,
                       struct cfg_account *a) {
  const char *name = a->name ? a->name : "?";
  struct passwd pw, *res = NULL;
  char buf[4096];

  if (ld->as_root && user_s == NULL) {
    add_error(ld, g, "account `%s': set user = \"NAME\" (the local user whose Maildir this is)",
              name);
    return;
  }
  if (user_s == NULL) {
    a->uid = geteuid();
    a->gid = getegid();
    return;
  }
  if (a->user == NULL)
    return; /* not a string: reported already */
  if (getpwnam_r(a->user, &pw, buf, sizeof(buf), &res) != 0 || res == NULL) {
    add_error(ld, user_s, "account `%s': no local user named \"%.*s\"", name, QUOTE_MAX, a->user);
    return;
  }
  if (!ld->as_root && pw.pw_uid != geteuid()) {
    add_error(ld, user_s, "account `%s': user = \"%.*s\" needs a daemon running as root", name,
              QUOTE_MAX, a->user);
    return;
  }
  if (pw.pw_uid == 0) {
    add_error(ld, user_s,
              "account `%s': user = \"%.*s\" is root; name the unprivileged local user whose "
              "Maildir this is",
              name, QUOTE_MAX, a->user);
    return;
  }
  a->uid = pw.pw_uid;
  a->gid = pw.pw_gid;
}

/* "account `work' has no `server'", or without the name when it has none. */
static void missing_key(struct loader *ld, const config_setting_t *g, const struct cfg_account *a,
                        const char *key) {
  if (a->name != NULL)
    add_error(ld, g, "account `%s' has no `%s'", a->name, key);
  else
    add_error(ld, g, "account has no `%s'", key);
}

/* Fills *a from group g, reporting every problem.  *name_s_r gets the
 * `name' setting when the name is valid (for the duplicate check). */
static void load_account(struct loader *ld, const struct cfg *cfg, const config_setting_t *g,
                         struct cfg_account *a, const config_setting_t **name_s_r) {
  const config_setting_t *name_s = NULL, *server_s = NULL, *maildir_s = NULL, *password_s = NULL,
                         *password_cmd_s = NULL, *user_s = NULL, *keep_days_s = NULL;
  int interval_set = 0, timeout_set = 0, pipelining_set = 0, auth_set = 0, pins_bad = 0;
  int on_new_mail_set = 0, on_failure_set = 0, hook_timeout_set = 0;
  int max_size_set = 0;
  int n = config_setting_length(g), i;
  char reason[256];
  long long v;

  a->line = (int)config_setting_source_line(g);
  a->enabled = 1;
  a->keep_days = -1;
  a->utf8 = 1;
  for (i = 0; i < n; i++) {
    const config_setting_t *s = config_setting_get_elem(g, i);
    const char *key = config_setting_name(s);

    if (strcmp(key, "name") == 0) {
      const char *name;
      /* A bad name still counts as given: no "has no `name'" on top. */
      name_s = s;
      if (get_string(ld, s, &name) == 0 && valid_name(ld, s, name) == 0 &&
          (a->name = strdup(name)) == NULL)
        add_line(ld, NULL);
    } else if (strcmp(key, "server") == 0) {
      server_s = s;
      get_dup(ld, s, &a->server);
    } else if (strcmp(key, "maildir") == 0) {
      maildir_s = s;
      get_path(ld, s, &a->maildir);
    } else if (strcmp(key, "user") == 0) {
      user_s = s;
      get_dup(ld, s, &a->user);
    } else if (strcmp(key, "interval") == 0) {
      interval_set = 1;
      get_uint(ld, s, 1, UINT_MAX, &a->interval);
    } else if (strcmp(key, "password_command") == 0) {
      password_cmd_s = s;
      get_dup(ld, s, &a->password_command);
    } else if (strcmp(key, "password") == 0) {
      password_s = s;
      if (get_dup(ld, s, &a->password) == 0)
        check_password_file(ld, s);
      if (config_setting_type(s) == CONFIG_TYPE_STRING)
        wipe_setting_string(s);
    } else if (strcmp(key, "netrc") == 0) {
      get_path(ld, s, &a->netrc);
    } else if (strcmp(key, "ca_file") == 0) {
      get_path(ld, s, &a->ca_file);
    } else if (strcmp(key, "tls_fingerprint") == 0) {
      pins_bad = get_pins(ld, s, a) < 0;
    } else if (strcmp(key, "window") == 0) {
      get_uint(ld, s, 1, SESSION_MAX_WINDOW, &a->window);
    } else if (strcmp(key, "timeout") == 0) {
      timeout_set = 1;
      get_uint(ld, s, 1, TIMEOUT_MAX, &a->timeout);
    } else if (strcmp(key, "pipelining") == 0) {
      pipelining_set = 1;
      get_pipelining(ld, s, &a->pipelining);
    } else if (strcmp(key, "auth") == 0) {
      auth_set = 1;
      get_auth(ld, s, &a->auth);
    } else if (strcmp(key, "keep") == 0) {
      get_bool(ld, s, &a->keep);
    } else if (strcmp(key, "keep_days") == 0) {
      if (get_int(ld, s, 0, INT_MAX, &v) == 0) {
        a->keep_days = (int)v;
        keep_days_s = s; /* a bad value was reported already */
      }
    } else if (strcmp(key, "utf8") == 0) {
      get_bool(ld, s, &a->utf8);
    } else if (strcmp(key, "enabled") == 0) {
      get_bool(ld, s, &a->enabled);
    } else if (strcmp(key, "on_new_mail") == 0) {
      on_new_mail_set = 1;
      get_hook(ld, s, &a->on_new_mail);
    } else if (strcmp(key, "on_failure") == 0) {
      on_failure_set = 1;
      get_hook(ld, s, &a->on_failure);
    } else if (strcmp(key, "hook_timeout") == 0) {
      hook_timeout_set = 1;
      get_uint(ld, s, 1, TIMEOUT_MAX, &a->hook_timeout);
    } else if (strcmp(key, "max_size") == 0) {
      max_size_set = 1;
      get_size(ld, s, &a->max_size);
    } else {
      unknown_key(ld, s, 1);
    }
  }
  *name_s_r = a->name != NULL ? name_s : NULL;

  if (name_s == NULL)
    add_error(ld, g, "account has no `name'");
  if (server_s == NULL)
    missing_key(ld, g, a, "server");
  if (maildir_s == NULL)
    missing_key(ld, g, a, "maildir");
  if (password_s != NULL && password_cmd_s != NULL)
    add_error(ld, password_s, "set `password' or `password_command', not both");

  if (a->server != NULL) {
    reason[0] = '\0';
    if (spec_parse(a->server, &a->spec, reason, sizeof(reason)) < 0) {
      add_error(ld, server_s, "malformed connection spec `%.*s': %s", QUOTE_MAX, a->server, reason);
    } else {
      a->spec_valid = 1;
      /* mbedTLS 2.28 cannot check a certificate against an IP address;
       * better said now than at the first poll.  (A bad tls_fingerprint
       * was reported already.) */
      if (a->spec.mode != P3_TLS_NONE && a->spec.tls_name[0] == '\0' && a->pin_count == 0 &&
          !pins_bad)
        add_error(ld, server_s,
                  "TLS to the IP address %s cannot verify the certificate's name: write "
                  "`server' as tcp_host!name, or set tls_fingerprint",
                  a->spec.tcp_host);
    }
  }

  check_user(ld, g, user_s, a);

  if (keep_days_s != NULL && !a->keep)
    add_error(ld, keep_days_s, "keep_days needs keep = true");

  /* A disabled account is not polled, and its disk may well be absent. */
  if (a->maildir != NULL && ld->check_maildirs && a->enabled) {
    int err = check_maildir(a->maildir);
    if (err < 0)
      add_error(ld, maildir_s, "maildir %s: %s", a->maildir, strerror(-err));
  }

  if (!interval_set)
    a->interval = cfg->interval;
  if (!timeout_set)
    a->timeout = cfg->timeout;
  if (!pipelining_set)
    a->pipelining = cfg->pipelining;
  if (!auth_set)
    a->auth = cfg->auth;
  if (!hook_timeout_set)
    a->hook_timeout = cfg->hook_timeout;
  if (!max_size_set)
    a->max_size = cfg->max_size;
  if (!on_new_mail_set && cfg->on_new_mail != NULL &&
      (a->on_new_mail = strdup(cfg->on_new_mail)) == NULL)
    add_line(ld, NULL);
  if (!on_failure_set && cfg->on_failure != NULL &&
      (a->on_failure = strdup(cfg->on_failure)) == NULL)
    add_line(ld, NULL);
}

/* The mailbox an account fetches, "user@tcp_host:port" (spec_identity), with
 * the user the spec leaves out filled in as the run will (the local user's
 * name).  Returns 0, or -1 when it is not known at load time. */
static int account_mailbox(const struct cfg_account *a, char *buf, size_t len) {
  struct p3_spec spec;
  if (!a->spec_valid || (a->user != NULL && a->uid == 0))
    return -1; /* a bad spec or user: reported already */
  spec = a->spec;
  if (spec.user[0] == '\0') {
    const char *name = a->user;
    struct passwd *pw = name == NULL ? getpwuid(geteuid()) : NULL;
    if (name == NULL && pw != NULL)
      name = pw->pw_name;
    if (name == NULL || strlen(name) >= sizeof(spec.user))
      return -1;
    strcpy(spec.user, name);
  }
  return spec_identity(&spec, buf, len) < 0 ? -1 : 0;
}

/* One mailbox, one journal and one lock (journal_path.h): two enabled
 * accounts of one local user that fetch the same mailbox would take turns at
 * the lock and keep each other's runs failing.  A netrc account name is taken as the spec
 * it reads as (it is resolved only at run time); the same name with the same
 * netrc file is the same mailbox either way.  Both checks of load_accounts
 * look up hash tables: 60,000 accounts load in well under a second. */
struct account_index {
  struct hashtab names;     /* name -> index + 1 */
  struct hashtab mailboxes; /* mailbox key -> index + 1 */
  char **keys;              /* the mailbox keys (owned) */
  size_t key_count;
};

/* "UID NETRC\nID": what makes two accounts the same mailbox, malloc'd. */
static char *mailbox_key(const struct cfg_account *a) {
  char id[P3_USER_MAX + P3_HOST_MAX + 16];

  if (!a->enabled || account_mailbox(a, id, sizeof(id)) < 0)
    return NULL;
  return asprintf_or_null("%lu %s\n%s", a->uid, a->netrc != NULL ? a->netrc : "", id);
}

static void check_same_mailbox(struct loader *ld, struct account_index *ix, const struct cfg *cfg,
                               const config_setting_t *g, size_t index) {
  const struct cfg_account *a = &cfg->accounts[index], *b;
  char *key = mailbox_key(a), **keys;
  uintptr_t other;

  if (key == NULL)
    return;
  other = (uintptr_t)hashtab_get(&ix->mailboxes, key, strlen(key));
  if (other != 0) {
    b = &cfg->accounts[other - 1];
    add_error(ld, g,
              "accounts `%s' and `%s' (line %d) fetch the same mailbox %s as one local user: "
              "keep one of them (a mailbox has one journal)",
              a->name, b->name, b->line, strchr(key, '\n') + 1);
    free(key);
    return;
  }
  keys = realloc(ix->keys, (ix->key_count + 1) * sizeof(*keys));
  if (keys == NULL || hashtab_put(&ix->mailboxes, key, strlen(key), (void *)(index + 1)) < 0) {
    if (keys != NULL)
      ix->keys = keys;
    free(key);
    add_line(ld, NULL);
    return;
  }
  ix->keys = keys;
  ix->keys[ix->key_count++] = key;
}

static void load_accounts(struct loader *ld, struct cfg *cfg, const config_setting_t *list) {
  const config_setting_t **name_s;
  struct account_index ix = {0};
  int n, i;
  size_t k;

  if (config_setting_type(list) != CONFIG_TYPE_LIST) {
    add_error(ld, list, "`accounts' must be a list of groups: accounts = ( { ... }, { ... } );");
    return;
  }
  n = config_setting_length(list);
  if (n == 0)
    return;
  cfg->accounts = calloc((size_t)n, sizeof(*cfg->accounts));
  name_s = calloc((size_t)n, sizeof(*name_s));
  if (cfg->accounts == NULL || name_s == NULL) {
    free(name_s);
    add_line(ld, NULL);
    return;
  }
  hashtab_init(&ix.names);
  hashtab_init(&ix.mailboxes);
  for (i = 0; i < n; i++) {
    const config_setting_t *g = config_setting_get_elem(list, i);
    struct cfg_account *a;
    size_t index;
    uintptr_t first;

    if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
      add_error(ld, g, "each element of `accounts' must be a group { ... }");
      continue;
    }
    index = cfg->account_count++;
    a = &cfg->accounts[index];
    load_account(ld, cfg, g, a, &name_s[index]);
    if (a->name == NULL || name_s[index] == NULL)
      continue;
    first = (uintptr_t)hashtab_get(&ix.names, a->name, strlen(a->name));
    if (first != 0) { /* a duplicate name says enough */
      add_error(ld, name_s[index], "duplicate account name `%s' (first defined at line %u)",
                a->name, (unsigned)config_setting_source_line(name_s[first - 1]));
      continue;
    }
    if (hashtab_put(&ix.names, a->name, strlen(a->name), (void *)(index + 1)) < 0)
      add_line(ld, NULL);
    check_same_mailbox(ld, &ix, cfg, g, index);
  }
  hashtab_deinit(&ix.names);
  hashtab_deinit(&ix.mailboxes);
  for (k = 0; k < ix.key_count; k++)
    free(ix.keys[k]);
  free(ix.keys);
  free(name_s);
}

/* ---- the file */

static void load_root(struct loader *ld, struct cfg *cfg, const config_setting_t *root) {
  const config_setting_t *accounts = NULL, *socket_s = NULL, *state_s = NULL;
  char buf[PATH_MAX];
  int n = config_setting_length(root), i, err;

  cfg->interval = DEFAULT_INTERVAL;
  cfg->max_parallel = DEFAULT_MAX_PARALLEL;
  cfg->timeout = DEFAULT_TIMEOUT;
  cfg->pipelining = SESSION_PIPELINING_ON;
  cfg->hook_timeout = DEFAULT_HOOK_TIMEOUT;

  /* Global settings first, wherever they stand: accounts inherit them. */
  for (i = 0; i < n; i++) {
    const config_setting_t *s = config_setting_get_elem(root, i);
    const char *key = config_setting_name(s);

    if (strcmp(key, "control_socket") == 0) {
      socket_s = s;
      if (get_path(ld, s, &cfg->control_socket) == 0)
        check_socket_len(ld, s, cfg->control_socket);
    } else if (strcmp(key, "state_dir") == 0) {
      state_s = s;
      get_path(ld, s, &cfg->state_dir);
    } else if (strcmp(key, "interval") == 0) {
      get_uint(ld, s, 1, UINT_MAX, &cfg->interval);
    } else if (strcmp(key, "max_parallel") == 0) {
      get_uint(ld, s, 1, UINT_MAX, &cfg->max_parallel);
    } else if (strcmp(key, "timeout") == 0) {
      get_uint(ld, s, 1, TIMEOUT_MAX, &cfg->timeout);
    } else if (strcmp(key, "pipelining") == 0) {
      get_pipelining(ld, s, &cfg->pipelining);
    } else if (strcmp(key, "auth") == 0) {
      get_auth(ld, s, &cfg->auth);
    } else if (strcmp(key, "on_new_mail") == 0) {
      get_hook(ld, s, &cfg->on_new_mail);
    } else if (strcmp(key, "on_failure") == 0) {
      get_hook(ld, s, &cfg->on_failure);
    } else if (strcmp(key, "hook_timeout") == 0) {
      get_uint(ld, s, 1, TIMEOUT_MAX, &cfg->hook_timeout);
    } else if (strcmp(key, "max_size") == 0) {
      get_size(ld, s, &cfg->max_size);
    } else if (strcmp(key, "accounts") == 0) {
      accounts = s;
    } else {
      unknown_key(ld, s, 0);
    }
  }

  if (socket_s == NULL) {
    err = cfg_default_socket(buf, sizeof(buf));
    if (err == -ENAMETOOLONG)
      add_error(ld, NULL, "the default control_socket path is too long: set control_socket");
    else if (err < 0)
      add_error(ld, NULL, "no default control_socket: %s; set control_socket", strerror(-err));
    else if (check_socket_len(ld, NULL, buf) == 0 && (cfg->control_socket = strdup(buf)) == NULL)
      add_line(ld, NULL);
  }
  if (state_s == NULL) {
    err = cfg_default_state_dir(buf, sizeof(buf));
    if (err == -ENOENT)
      add_error(ld, NULL, "no default state_dir: $HOME is not set; set state_dir");
    else if (err < 0)
      add_error(ld, NULL, "no default state_dir: %s; set state_dir", strerror(-err));
    else if ((cfg->state_dir = strdup(buf)) == NULL)
      add_line(ld, NULL);
  }

  if (accounts != NULL)
    load_accounts(ld, cfg, accounts);
}

/* The absolute path of a file that could be opened: realpath, or the
 * working directory joined with path when realpath fails. */
static char *absolute_path(const char *path) {
  char *r = realpath(path, NULL);
  char cwd[PATH_MAX];

  if (r != NULL)
    return r;
  if (path[0] == '/')
    return strdup(path);
  if (getcwd(cwd, sizeof(cwd)) == NULL)
    return NULL;
  if (asprintf(&r, "%s/%s", cwd, path) < 0)
    return NULL;
  return r;
}

int cfg_load(const char *path, int check_maildirs, struct cfg **cfg_r, struct cfg_errors *errs) {
  return cfg_load_mode(path, check_maildirs, geteuid() == 0, cfg_r, errs);
}

/* ---- syntax errors: libconfig 1.5 says "syntax error" and the line; say
 * what is most likely wrong there */

#define SYNTAX_READ_MAX (1u << 20) /* a configuration file is small */

/* Reads up to SYNTAX_READ_MAX bytes of file into a malloc'd, NUL-terminated
 * buffer, or NULL. */
static char *read_text(const char *file) {
  int fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  char *text;
  size_t len = 0;
  ssize_t n;

  if (fd < 0)
    return NULL;
  text = malloc(SYNTAX_READ_MAX + 1);
  while (text != NULL && len < SYNTAX_READ_MAX &&
         ((n = read(fd, text + len, SYNTAX_READ_MAX - len)) > 0 || (n < 0 && errno == EINTR)))
    len += n > 0 ? (size_t)n : 0;
  close(fd);
  if (text != NULL)
    text[len] = '\0';
  return text;
}

/* The start of line lineno (from 1) of text, or NULL. */
static const char *line_start(const char *text, int lineno) {
  const char *p = text;

  while (--lineno > 0 && p != NULL)
    if ((p = strchr(p, '\n')) != NULL)
      p++;
  return p;
}

/* The last character before end that is neither blank nor inside a
 * `#' or `//' comment (a good guess, not a parser: enough for the
 * punctuation a line ends with), or 0. */
static char previous_significant(const char *text, const char *end) {
  const char *line = end, *p;
  char last = 0;

  while (line > text) {
    const char *ls = line - 1;
    while (ls > text && ls[-1] != '\n')
      ls--;
    last = 0;
    for (p = ls; p < line && *p != '\n'; p++) {
      if (*p == '#' || (p[0] == '/' && p[1] == '/'))
        break;
      if (*p == '"') { /* skip a string, escapes included */
        for (p++; p < line && *p != '"' && *p != '\n'; p++)
          if (*p == '\\' && p + 1 < line)
            p++;
        last = '"';
        continue;
      }
      if (*p != ' ' && *p != '\t' && *p != '\r')
        last = *p;
    }
    if (last != 0)
      return last;
    line = ls;
  }
  return 0;
}

/* The sentence for libconfig's error text at file:lineno, into buf. */
static const char *syntax_sentence(const struct loader *ld, const char *file, int lineno,
                                   const char *error, char *buf, size_t len) {
  char *text = NULL, snippet[48], name[PATH_MAX];
  const char *line, *p;
  size_t n = 0;

  snprintf(buf, len, "%s", error);
  if (file == NULL || (text = read_text(file)) == NULL ||
      (line = line_start(text, lineno)) == NULL) {
    free(text);
    return buf;
  }
  p = line + strspn(line, " \t\r");
  if (strcmp(error, "cannot open include file") == 0 && strncmp(p, "@include", 8) == 0 &&
      (p = strchr(p, '"')) != NULL) {
    for (p++; *p != '\0' && *p != '"' && *p != '\n' && n + 1 < sizeof(name); p++)
      name[n++] = *p;
    name[n] = '\0';
    if (name[0] == '/')
      snprintf(buf, len,
               "cannot open include file `%s': an @include path is taken relative to the "
               "directory of the file that includes it (%s), even when it starts with `/' "
               "(libconfig 1.5): write it relative to that directory",
               name, ld->dir != NULL ? ld->dir : ".");
    else
      snprintf(buf, len, "cannot open include file `%s/%s'",
               ld->dir != NULL && strcmp(ld->dir, "/") != 0 ? ld->dir : "", name);
  } else if (strcmp(error, "syntax error") == 0) {
    char prev = previous_significant(text, line);
    if (prev == ',' && (*p == ')' || *p == ']'))
      snprintf(buf, len,
               "syntax error: a comma after the last element of a list; remove it "
               "(libconfig allows no trailing comma before `%c')",
               *p);
    else if (prev == '}' && *p == '{')
      snprintf(buf, len, "syntax error: a `,' is missing between this group and the one before");
    else {
      for (n = 0; p[n] != '\0' && p[n] != '\n' && p[n] != '\r' && n + 1 < sizeof(snippet); n++)
        snippet[n] = (unsigned char)p[n] < 0x20 || p[n] == 0x7f ? '?' : p[n];
      while (n > 0 && (snippet[n - 1] == ' ' || snippet[n - 1] == '\t'))
        n--;
      snippet[n] = '\0';
      if (n > 0)
        snprintf(buf, len, "syntax error in `%s'%s", snippet,
                 p[n] != '\0' && p[n] != '\n' && p[n] != '\r' ? "..." : "");
    }
  }
  free(text);
  return buf;
}

static int load_file(struct loader *ld, const char *path, struct cfg **cfg_r) {
  struct cfg *cfg = NULL;
  config_t lc;
  FILE *f;
  char *slash, buf[PATH_MAX];
  int fd, err;

  /* Our own open first: libconfig's "file I/O error" does not say why. */
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &ld->st) != 0) {
    err = errno;
    if (fd >= 0)
      close(fd);
    add_error(ld, NULL, "cannot read: %s", strerror(err));
    return ld->oom ? -ENOMEM : P3_ECONFIG;
  }
  if (S_ISDIR(ld->st.st_mode)) {
    close(fd);
    add_error(ld, NULL, "cannot read: %s", strerror(EISDIR));
    return ld->oom ? -ENOMEM : P3_ECONFIG;
  }
  f = fdopen(fd, "r");
  if (f == NULL) {
    err = errno;
    close(fd);
    add_error(ld, NULL, "cannot read: %s", strerror(err));
    return ld->oom ? -ENOMEM : P3_ECONFIG;
  }

  cfg = calloc(1, sizeof(*cfg));
  if (cfg != NULL)
    cfg->path = absolute_path(path);
  if (cfg == NULL || cfg->path == NULL) {
    fclose(f);
    cfg_free(cfg);
    add_line(ld, NULL);
    return -ENOMEM;
  }

  config_init(&lc);
  /* @include "x" means next to this file, whatever the working directory. */
  ld->dir = strdup(cfg->path);
  if (ld->dir != NULL && (slash = strrchr(ld->dir, '/')) != NULL) {
    slash[slash == ld->dir ? 1 : 0] = '\0';
    config_set_include_dir(&lc, ld->dir);
  }

  if (!config_read(&lc, f)) {
    /* libconfig stops at the first syntax error: that one is all we have. */
    const char *file = source_file(ld, config_error_file(&lc), buf, sizeof(buf));
    char why[PATH_MAX + 256];
    if (config_error_line(&lc) > 0)
      add_line(ld, asprintf_or_null("%s:%d: %s", file, config_error_line(&lc),
                                    syntax_sentence(ld, file, config_error_line(&lc),
                                                    config_error_text(&lc), why, sizeof(why))));
    else
      add_line(ld, asprintf_or_null("%s: %s", file, config_error_text(&lc)));
    fclose(f);
    config_destroy(&lc);
    free(ld->dir);
    cfg_free(cfg);
    return ld->oom ? -ENOMEM : P3_ECONFIG;
  }
  fclose(f);

  load_root(ld, cfg, config_root_setting(&lc));
  config_destroy(&lc);
  free(ld->dir);

  if (ld->failed) {
    cfg_free(cfg);
    return ld->oom ? -ENOMEM : P3_ECONFIG;
  }
  *cfg_r = cfg;
  return 0;
}

int cfg_load_mode(const char *path, int check_maildirs, int as_root, struct cfg **cfg_r,
                  struct cfg_errors *errs) {
  struct loader ld;
  int r;

  *cfg_r = NULL;
  if (errs != NULL) {
    errs->lines = NULL;
    errs->count = 0;
  }
  memset(&ld, 0, sizeof(ld));
  ld.path = path;
  ld.errs = errs;
  ld.check_maildirs = check_maildirs;
  ld.as_root = as_root;
  r = load_file(&ld, path, cfg_r);
  sort_errors(&ld);
  free(ld.order);
  free(ld.files);
  return r;
}

static void wipe_free(char *s) {
  if (s != NULL) {
    explicit_bzero(s, strlen(s));
    free(s);
  }
}

void cfg_free(struct cfg *cfg) {
  size_t i;

  if (cfg == NULL)
    return;
  for (i = 0; i < cfg->account_count; i++) {
    struct cfg_account *a = &cfg->accounts[i];
    free(a->name);
    free(a->server);
    free(a->maildir);
    free(a->user);
    wipe_free(a->password_command);
    wipe_free(a->password);
    free(a->netrc);
    free(a->ca_file);
    free(a->on_new_mail);
    free(a->on_failure);
  }
  free(cfg->accounts);
  free(cfg->on_new_mail);
  free(cfg->on_failure);
  free(cfg->path);
  free(cfg->control_socket);
  free(cfg->state_dir);
  free(cfg);
}

const struct cfg_account *cfg_find_account(const struct cfg *cfg, const char *name) {
  size_t i;

  if (cfg == NULL || name == NULL)
    return NULL;
  for (i = 0; i < cfg->account_count; i++)
    if (cfg->accounts[i].name != NULL && strcmp(cfg->accounts[i].name, name) == 0)
      return &cfg->accounts[i];
  return NULL;
}

#include "config.h"

#include "cfg.h"

#include "errors.h"

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
};

/* ---- error list */

static void add_line(struct loader *ld, char *line) {
  char **lines;

  ld->failed = 1;
  if (line == NULL) {
    ld->oom = 1;
    return;
  }
  if (ld->errs == NULL) {
    free(line);
    return;
  }
  lines = realloc(ld->errs->lines, (ld->errs->count + 1) * sizeof(*lines));
  if (lines == NULL) {
    ld->oom = 1;
    free(line);
    return;
  }
  lines[ld->errs->count++] = line;
  ld->errs->lines = lines;
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

  if (s != NULL) {
    file = source_file(ld, config_setting_source_file(s), buf, sizeof(buf));
    lineno = config_setting_source_line(s);
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
    add_line(ld, asprintf_or_null("%s:%u: %s", file, lineno, msg));
  else
    add_line(ld, asprintf_or_null("%s: %s", file, msg));
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
    } else {
      add_error(ld, s, "unknown key `%.*s'", QUOTE_MAX, key);
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
 * netrc file is the same mailbox either way. */
static void check_same_mailbox(struct loader *ld, const struct cfg *cfg, const config_setting_t *g,
                               const struct cfg_account *a) {
  char id[P3_USER_MAX + P3_HOST_MAX + 16], other[sizeof(id)];
  size_t j;

  if (!a->enabled || account_mailbox(a, id, sizeof(id)) < 0)
    return;
  for (j = 0; j + 1 < cfg->account_count; j++) {
    const struct cfg_account *b = &cfg->accounts[j];
    if (b->name == NULL || !b->enabled || b->uid != a->uid ||
        account_mailbox(b, other, sizeof(other)) < 0 || strcmp(id, other) != 0)
      continue;
    if ((a->netrc == NULL) != (b->netrc == NULL) ||
        (a->netrc != NULL && strcmp(a->netrc, b->netrc) != 0))
      continue;
    add_error(ld, g,
              "accounts `%s' and `%s' (line %d) fetch the same mailbox %s as one local user: "
              "keep one of them (a mailbox has one journal)",
              a->name, b->name, b->line, id);
    return;
  }
}

static void load_accounts(struct loader *ld, struct cfg *cfg, const config_setting_t *list) {
  const config_setting_t **name_s;
  int n, i;
  size_t j;

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
  for (i = 0; i < n; i++) {
    const config_setting_t *g = config_setting_get_elem(list, i);
    struct cfg_account *a;

    if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
      add_error(ld, g, "each element of `accounts' must be a group { ... }");
      continue;
    }
    a = &cfg->accounts[cfg->account_count];
    cfg->account_count++;
    load_account(ld, cfg, g, a, &name_s[cfg->account_count - 1]);
    if (a->name == NULL || name_s[cfg->account_count - 1] == NULL)
      continue;
    for (j = 0; j + 1 < cfg->account_count; j++) {
      if (cfg->accounts[j].name != NULL && name_s[j] != NULL &&
          strcmp(cfg->accounts[j].name, a->name) == 0) {
        add_error(ld, name_s[cfg->account_count - 1],
                  "duplicate account name `%s' (first defined at line %u)", a->name,
                  (unsigned)config_setting_source_line(name_s[j]));
        break;
      }
    }
    if (j + 1 >= cfg->account_count) /* a duplicate name says enough */
      check_same_mailbox(ld, cfg, g, a);
  }
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
    } else if (strcmp(key, "accounts") == 0) {
      accounts = s;
    } else {
      add_error(ld, s, "unknown key `%.*s'", QUOTE_MAX, key);
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

int cfg_load_mode(const char *path, int check_maildirs, int as_root, struct cfg **cfg_r,
                  struct cfg_errors *errs) {
  struct loader ld;
  struct cfg *cfg = NULL;
  config_t lc;
  FILE *f;
  char *slash, buf[PATH_MAX];
  int fd, err;

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

  /* Our own open first: libconfig's "file I/O error" does not say why. */
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &ld.st) != 0) {
    err = errno;
    if (fd >= 0)
      close(fd);
    add_error(&ld, NULL, "cannot read: %s", strerror(err));
    return ld.oom ? -ENOMEM : P3_ECONFIG;
  }
  if (S_ISDIR(ld.st.st_mode)) {
    close(fd);
    add_error(&ld, NULL, "cannot read: %s", strerror(EISDIR));
    return ld.oom ? -ENOMEM : P3_ECONFIG;
  }
  f = fdopen(fd, "r");
  if (f == NULL) {
    err = errno;
    close(fd);
    add_error(&ld, NULL, "cannot read: %s", strerror(err));
    return ld.oom ? -ENOMEM : P3_ECONFIG;
  }

  cfg = calloc(1, sizeof(*cfg));
  if (cfg != NULL)
    cfg->path = absolute_path(path);
  if (cfg == NULL || cfg->path == NULL) {
    fclose(f);
    cfg_free(cfg);
    add_line(&ld, NULL);
    return -ENOMEM;
  }

  config_init(&lc);
  /* @include "x" means next to this file, whatever the working directory. */
  ld.dir = strdup(cfg->path);
  if (ld.dir != NULL && (slash = strrchr(ld.dir, '/')) != NULL) {
    slash[slash == ld.dir ? 1 : 0] = '\0';
    config_set_include_dir(&lc, ld.dir);
  }

  if (!config_read(&lc, f)) {
    /* libconfig stops at the first syntax error: that one is all we have. */
    const char *file = source_file(&ld, config_error_file(&lc), buf, sizeof(buf));
    if (config_error_line(&lc) > 0)
      add_line(&ld,
               asprintf_or_null("%s:%d: %s", file, config_error_line(&lc), config_error_text(&lc)));
    else
      add_line(&ld, asprintf_or_null("%s: %s", file, config_error_text(&lc)));
    fclose(f);
    config_destroy(&lc);
    free(ld.dir);
    cfg_free(cfg);
    return ld.oom ? -ENOMEM : P3_ECONFIG;
  }
  fclose(f);

  load_root(&ld, cfg, config_root_setting(&lc));
  config_destroy(&lc);
  free(ld.dir);

  if (ld.failed) {
    cfg_free(cfg);
    return ld.oom ? -ENOMEM : P3_ECONFIG;
  }
  *cfg_r = cfg;
  return 0;
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
  }
  free(cfg->accounts);
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

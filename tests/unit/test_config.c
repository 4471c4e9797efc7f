#include "config.h"

#include "cfg.h"
#include "errors.h"

#include <errno.h>
#include <pwd.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

/* The bulk of these tests checks the rules for a daemon running as its user,
 * whoever runs them; test_root_mode checks root's. */
static int root_rules;
#define cfg_load(p, c, r, e) cfg_load_mode((p), (c), root_rules, (r), (e))

#define FP1                                                                                        \
  "sha256:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:" \
  "dd:ee:ff"
#define FP2 "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"

static char tmpdir[64];
static char path[PATH_MAX + 64]; /* the file the last load() wrote */
static struct cfg *cfg;
static struct cfg_errors errs;

/* Writes name in tmpdir with exactly mode (fchmod ignores the umask). */
static void write_file(const char *name, const char *text, mode_t mode) {
  int fd;
  size_t len = strlen(text);

  snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
  unlink(path);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  CHECK(fd >= 0);
  if (fd < 0)
    return;
  CHECK_INT(write(fd, text, len), len);
  CHECK_INT(fchmod(fd, mode), 0);
  close(fd);
}

/* Writes and loads a file, leaving the result in cfg / errs. */
static int load_mode(const char *text, mode_t mode, int check_maildirs) {
  cfg_free(cfg);
  cfg = NULL;
  cfg_errors_free(&errs);
  write_file("test.conf", text, mode);
  return cfg_load(path, check_maildirs, &cfg, &errs);
}

static int load(const char *text) {
  return load_mode(text, 0600, 0);
}

/* errs.lines[i] must be "PATH:LINE: msg" ("PATH: msg" for line 0). */
#define CHECK_ERR(i, line, msg) check_err(__LINE__, (i), (line), (msg))
static void check_err(int at, size_t i, int line, const char *msg) {
  char want[PATH_MAX + 512];

  if (line > 0)
    snprintf(want, sizeof(want), "%s:%d: %s", path, line, msg);
  else
    snprintf(want, sizeof(want), "%s: %s", path, msg);
  if (i >= errs.count) {
    fprintf(stderr, "test_config.c:%d: no error #%zu, expected \"%s\"\n", at, i, want);
    check_failures++;
    return;
  }
  if (strcmp(errs.lines[i], want) != 0) {
    fprintf(stderr, "test_config.c:%d: error #%zu is \"%s\", expected \"%s\"\n", at, i,
            errs.lines[i], want);
    check_failures++;
  }
}

/* Exactly one error. */
static void expect_one(int at, const char *text, int line, const char *msg) {
  int r = load(text);

  if (r != P3_ECONFIG || errs.count != 1) {
    fprintf(stderr, "test_config.c:%d: load returned %d with %zu errors, expected one\n", at, r,
            errs.count);
    check_failures++;
    for (size_t i = 0; i < errs.count; i++)
      fprintf(stderr, "  %s\n", errs.lines[i]);
  }
  check_err(at, 0, line, msg);
  CHECK(cfg == NULL);
}
#define EXPECT_ONE(text, line, msg) expect_one(__LINE__, (text), (line), (msg))

/* An account wrapped around some lines: the account's own lines start at 3. */
#define ACCOUNT(lines)                                                                             \
  "interval = 300;\n"                                                                              \
  "accounts = (\n"                                                                                 \
  "  { name = \"a\";\n"                                                                            \
  "    server = \"me@mail.example.com\";\n"                                                        \
  "    maildir = \"/srv/mail/a\";\n" lines "  }\n"                                                 \
  ");\n"

static void test_minimal(void) {
  char real[PATH_MAX], want[PATH_MAX + 32], cwd[PATH_MAX];
  const struct cfg_account *a;

  unsetenv("RUNTIME_DIRECTORY");
  unsetenv("STATE_DIRECTORY");
  CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
  write_file("min.conf",
             "accounts = ( { name = \"work\"; server = \"me@mail.example.com\";\n"
             "               maildir = \"/srv/mail/work\"; } );\n",
             0644);
  /* A relative name is stored absolute. */
  CHECK_INT(chdir(tmpdir), 0);
  CHECK_INT(cfg_load("min.conf", 0, &cfg, &errs), 0);
  CHECK_INT(chdir(cwd), 0);
  CHECK_INT(errs.count, 0);
  if (cfg == NULL)
    return;
  CHECK(realpath(tmpdir, real) != NULL);
  snprintf(want, sizeof(want), "%s/min.conf", real);
  CHECK_STR(cfg->path, want);
  CHECK_INT(cfg->interval, 300);
  CHECK_INT(cfg->max_parallel, 4);
  CHECK_INT(cfg->timeout, 120);
  CHECK_INT(cfg->pipelining, SESSION_PIPELINING_ON);
  if (geteuid() == 0) {
    CHECK_STR(cfg->control_socket, "/run/pop3sync/control.sock");
    CHECK_STR(cfg->state_dir, LOCALSTATEDIR "/lib/pop3sync");
  }
  CHECK_INT(cfg->account_count, 1);
  a = cfg_find_account(cfg, "work");
  CHECK(a == &cfg->accounts[0]);
  CHECK(cfg_find_account(cfg, "play") == NULL);
  if (a == NULL)
    return;
  CHECK_STR(a->name, "work");
  CHECK_INT(a->line, 1);
  CHECK_STR(a->server, "me@mail.example.com");
  CHECK_INT(a->spec_valid, 1);
  CHECK_INT(a->spec.mode, P3_TLS_IMPLICIT);
  CHECK_STR(a->spec.user, "me");
  CHECK_STR(a->spec.tcp_host, "mail.example.com");
  CHECK_STR(a->spec.tls_name, "mail.example.com");
  CHECK_INT(a->spec.port, 995);
  CHECK_STR(a->maildir, "/srv/mail/work");
  CHECK_INT(a->interval, 300);
  CHECK(a->password_command == NULL);
  CHECK(a->password == NULL);
  CHECK(a->netrc == NULL);
  CHECK(a->ca_file == NULL);
  CHECK_INT(a->pin_count, 0);
  CHECK_INT(a->window, 0);
  CHECK_INT(a->timeout, 120);
  CHECK_INT(a->pipelining, SESSION_PIPELINING_ON);
  CHECK_INT(a->enabled, 1);
  CHECK_INT(a->keep, 0);
  CHECK_INT(a->keep_days, -1);
  cfg_free(cfg);
  cfg = NULL;

  /* An empty file is valid: no accounts, every default. */
  CHECK_INT(load(""), 0);
  CHECK(cfg != NULL && cfg->account_count == 0 && cfg->accounts == NULL);
  CHECK_INT(load("# nothing\naccounts = ();\n"), 0);
  CHECK(cfg != NULL && cfg->account_count == 0);
}

static void test_full(void) {
  char want[PATH_MAX + 32];
  const struct cfg_account *a, *b;
  static const uint8_t fp1[32] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa,
                                  0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55,
                                  0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};

  setenv("HOME", tmpdir, 1);
  CHECK_INT(load("control_socket = \"/run/p3/c.sock\";\n"
                 "state_dir = \"~/state\";\n"
                 "interval = 600;\n"
                 "max_parallel = 2;\n"
                 "timeout = 30;\n"
                 "pipelining = \"auto\";\n"
                 "accounts = (\n"
                 "  { name = \"work\";\n" /* 8 */
                 "    server = \"starttls:me@mail.example.com:1110\";\n"
                 "    maildir = \"~/Maildir\";\n"
                 "    interval = 120L;\n"
                 "    password_command = \"pass show mail/work\";\n"
                 "    netrc = \"/home/me/.netrc\";\n"
                 "    ca_file = \"/etc/ssl/my-ca.pem\";\n"
                 "    tls_fingerprint = \"" FP1 "\";\n"
                 "    window = 100000;\n"
                 "    timeout = 60; pipelining = \"off\";\n"
                 "    keep = true; keep_days = 30;\n"
                 "    enabled = false; },\n"
                 "  {\n" /* 20 */
                 "    name = \"Play.2_x-y\";\n"
                 "    server = \"tcp:u@[::1]:1110\";\n"
                 "    maildir = \"/srv/mail/play/\";\n"
                 "    password = \"secret\";\n"
                 "    tls_fingerprint = [\"" FP1 "\", \"" FP2 "\"];\n"
                 "    keep = true; keep_days = 0;\n"
                 "  },\n"
                 "  { name = \"ip\"; server = \"me@127.0.0.1:995\"; maildir = \"/m\";\n" /* 28 */
                 "    tls_fingerprint = (\"" FP2 "\"); }\n"
                 ");\n"),
            0);
  CHECK_INT(errs.count, 0);
  if (cfg == NULL)
    return;
  CHECK_STR(cfg->control_socket, "/run/p3/c.sock");
  snprintf(want, sizeof(want), "%s/state", tmpdir);
  CHECK_STR(cfg->state_dir, want);
  CHECK_INT(cfg->interval, 600);
  CHECK_INT(cfg->max_parallel, 2);
  CHECK_INT(cfg->timeout, 30);
  CHECK_INT(cfg->pipelining, SESSION_PIPELINING_AUTO);
  CHECK_INT(cfg->account_count, 3);
  if (cfg->account_count != 3)
    return;

  a = &cfg->accounts[0];
  CHECK_STR(a->name, "work");
  CHECK_INT(a->line, 8);
  CHECK_STR(a->server, "starttls:me@mail.example.com:1110");
  CHECK_INT(a->spec_valid, 1);
  CHECK_INT(a->spec.mode, P3_TLS_STARTTLS);
  CHECK_INT(a->spec.port, 1110);
  snprintf(want, sizeof(want), "%s/Maildir", tmpdir);
  CHECK_STR(a->maildir, want);
  CHECK_INT(a->interval, 120);
  CHECK_STR(a->password_command, "pass show mail/work");
  CHECK(a->password == NULL);
  CHECK_STR(a->netrc, "/home/me/.netrc");
  CHECK_STR(a->ca_file, "/etc/ssl/my-ca.pem");
  CHECK_INT(a->pin_count, 1);
  CHECK_MEM(a->pins[0], 32, fp1, 32);
  CHECK_INT(a->window, 100000);
  CHECK_INT(a->timeout, 60);
  CHECK_INT(a->pipelining, SESSION_PIPELINING_OFF);
  CHECK_INT(a->keep, 1);
  CHECK_INT(a->keep_days, 30);
  CHECK_INT(a->enabled, 0);

  b = cfg_find_account(cfg, "Play.2_x-y");
  CHECK(b == &cfg->accounts[1]);
  if (b == NULL)
    return;
  CHECK_INT(b->line, 20);
  CHECK_INT(b->spec.mode, P3_TLS_NONE);
  CHECK_STR(b->spec.tcp_host, "::1");
  CHECK_STR(b->maildir, "/srv/mail/play/");
  CHECK_STR(b->password, "secret");
  CHECK(b->password_command == NULL);
  CHECK_INT(b->pin_count, 2);
  CHECK_MEM(b->pins[0], 32, fp1, 32);
  CHECK_INT(b->pins[1][0], 0xff);
  CHECK_INT(b->pins[1][31], 0x00);
  /* Unset per-account values come from the top level. */
  CHECK_INT(b->interval, 600);
  CHECK_INT(b->timeout, 30);
  CHECK_INT(b->pipelining, SESSION_PIPELINING_AUTO);
  CHECK_INT(b->keep, 1);
  CHECK_INT(b->keep_days, 0);
  CHECK_INT(b->enabled, 1);

  /* TLS to an IP literal is fine with a pin. */
  CHECK_INT(cfg->accounts[2].line, 28);
  CHECK_INT(cfg->accounts[2].pin_count, 1);
  CHECK_STR(cfg->accounts[2].spec.tls_name, "");
}

/* The rules of cfg_default_* that depend on who runs them. */
static void check_user_defaults(void) {
  char buf[PATH_MAX], want[PATH_MAX + 64];

  unsetenv("RUNTIME_DIRECTORY");
  unsetenv("STATE_DIRECTORY");
  setenv("HOME", "/home/u", 1);
  setenv("XDG_RUNTIME_DIR", "/run/user/7", 1);
  setenv("XDG_STATE_HOME", "/xdg/state", 1);
  setenv("XDG_CONFIG_HOME", "/xdg/config", 1);
  CHECK_INT(cfg_default_socket(buf, sizeof(buf)), 0);
  CHECK_STR(buf, "/run/user/7/pop3sync/control.sock");
  CHECK_INT(cfg_default_state_dir(buf, sizeof(buf)), 0);
  CHECK_STR(buf, "/xdg/state/pop3sync");
  CHECK_INT(cfg_default_path(buf, sizeof(buf)), 0);
  CHECK_STR(buf, "/xdg/config/pop3sync/pop3sync.conf");
  /* Unset, or relative (which the XDG spec says to ignore). */
  unsetenv("XDG_RUNTIME_DIR");
  setenv("XDG_STATE_HOME", "rel", 1);
  unsetenv("XDG_CONFIG_HOME");
  CHECK_INT(cfg_default_socket(buf, sizeof(buf)), 0);
  snprintf(want, sizeof(want), "/tmp/pop3sync-%lu/control.sock", (unsigned long)geteuid());
  CHECK_STR(buf, want);
  CHECK_INT(cfg_default_state_dir(buf, sizeof(buf)), 0);
  CHECK_STR(buf, "/home/u/.local/state/pop3sync");
  CHECK_INT(cfg_default_path(buf, sizeof(buf)), 0);
  CHECK_STR(buf, "/home/u/.config/pop3sync/pop3sync.conf");
  /* systemd's variables win. */
  setenv("RUNTIME_DIRECTORY", "/run/pop3sync-x:/run/other", 1);
  setenv("STATE_DIRECTORY", "/var/lib/pop3sync-x", 1);
  CHECK_INT(cfg_default_socket(buf, sizeof(buf)), 0);
  CHECK_STR(buf, "/run/pop3sync-x/control.sock");
  CHECK_INT(cfg_default_state_dir(buf, sizeof(buf)), 0);
  CHECK_STR(buf, "/var/lib/pop3sync-x");
  CHECK_INT(cfg_default_socket(buf, 10), -ENAMETOOLONG);
  CHECK_STR(buf, "");
  unsetenv("RUNTIME_DIRECTORY");
  unsetenv("STATE_DIRECTORY");
}

static void test_defaults(void) {
  char buf[PATH_MAX];
  char *saved_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
  pid_t pid;
  int status;

  if (geteuid() != 0) {
    check_user_defaults();
  } else {
    unsetenv("RUNTIME_DIRECTORY");
    unsetenv("STATE_DIRECTORY");
    setenv("XDG_RUNTIME_DIR", "/run/user/0", 1);
    CHECK_INT(cfg_default_socket(buf, sizeof(buf)), 0);
    CHECK_STR(buf, "/run/pop3sync/control.sock");
    CHECK_INT(cfg_default_state_dir(buf, sizeof(buf)), 0);
    CHECK_STR(buf, LOCALSTATEDIR "/lib/pop3sync");
    CHECK_INT(cfg_default_path(buf, sizeof(buf)), 0);
    CHECK_STR(buf, SYSCONFDIR "/pop3sync/pop3sync.conf");
    setenv("RUNTIME_DIRECTORY", "/run/x", 1);
    setenv("STATE_DIRECTORY", "/var/lib/x", 1);
    CHECK_INT(cfg_default_socket(buf, sizeof(buf)), 0);
    CHECK_STR(buf, "/run/x/control.sock");
    CHECK_INT(cfg_default_state_dir(buf, sizeof(buf)), 0);
    CHECK_STR(buf, "/var/lib/x");
    unsetenv("RUNTIME_DIRECTORY");
    unsetenv("STATE_DIRECTORY");
    unsetenv("XDG_RUNTIME_DIR");
    /* The user rules, as nobody. */
    fflush(NULL);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
      if (setgid(65534) != 0 || setuid(65534) != 0)
        _exit(2);
      check_user_defaults();
      cfg_free(cfg);
      cfg_errors_free(&errs);
      free(saved_home);
      _exit(check_failures ? 1 : 0);
    }
    CHECK_INT(waitpid(pid, &status, 0), pid);
    CHECK_INT(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 0);
  }

  /* The loaded file gets them too. */
  setenv("RUNTIME_DIRECTORY", "/run/y", 1);
  setenv("STATE_DIRECTORY", "/var/lib/y", 1);
  CHECK_INT(load(""), 0);
  if (cfg != NULL) {
    CHECK_STR(cfg->control_socket, "/run/y/control.sock");
    CHECK_STR(cfg->state_dir, "/var/lib/y");
  }
  /* A default socket path too long for sun_path is an error of the file. */
  memset(buf, 'd', 120);
  buf[0] = '/';
  buf[120] = '\0';
  setenv("RUNTIME_DIRECTORY", buf, 1);
  EXPECT_ONE("", 0,
             "the default control_socket path /ddddddddddddddddddddddddddddddddddddddddddddddddd"
             "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd/control.sock "
             "is 133 bytes; a Unix socket path can have at most 107: set control_socket");
  /* ...unless the file sets one. */
  CHECK_INT(load("control_socket = \"/run/s\";\n"), 0);
  unsetenv("RUNTIME_DIRECTORY");
  unsetenv("STATE_DIRECTORY");
  if (saved_home != NULL)
    setenv("HOME", saved_home, 1);
  free(saved_home);
}

static void test_top_level_errors(void) {
  EXPECT_ONE("interval = 300;\nfoo = 1;\n", 2, "unknown key `foo'");
  EXPECT_ONE("\ninterval = \"300\";\n", 2, "`interval' must be an integer");
  EXPECT_ONE("interval = 1.5;\n", 1, "`interval' must be an integer");
  EXPECT_ONE("interval = 0;\n", 1, "`interval' must be between 1 and 4294967295, not 0");
  EXPECT_ONE("interval = 5000000000L;\n", 1,
             "`interval' must be between 1 and 4294967295, not 5000000000");
  EXPECT_ONE("max_parallel = 0;\n", 1, "`max_parallel' must be between 1 and 4294967295, not 0");
  EXPECT_ONE("max_parallel = true;\n", 1, "`max_parallel' must be an integer");
  EXPECT_ONE("timeout = 86401;\n", 1, "`timeout' must be between 1 and 86400, not 86401");
  EXPECT_ONE("pipelining = \"fast\";\n", 1,
             "`pipelining' must be \"on\", \"auto\" or \"off\", not `fast'");
  EXPECT_ONE("pipelining = 1;\n", 1, "`pipelining' must be a string");
  EXPECT_ONE("state_dir = \"var/lib\";\n", 1,
             "`state_dir' must be an absolute path (or start with ~/), not `var/lib'");
  EXPECT_ONE("control_socket = \"c.sock\";\n", 1,
             "`control_socket' must be an absolute path (or start with ~/), not `c.sock'");
  EXPECT_ONE("control_socket = [\"/a\"];\n", 1, "`control_socket' must be a string");
  EXPECT_ONE("accounts = { name = \"a\"; };\n", 1,
             "`accounts' must be a list of groups: accounts = ( { ... }, { ... } );");
  EXPECT_ONE("accounts = [];\n", 1,
             "`accounts' must be a list of groups: accounts = ( { ... }, { ... } );");
  /* libconfig 1.5 dates a scalar in a list by the token after it: keep them on one line. */
  EXPECT_ONE("accounts = (\n  \"a\" );\n", 2, "each element of `accounts' must be a group { ... }");
  /* int64 values are integers too. */
  CHECK_INT(load("interval = 7L;\n"), 0);
  CHECK(cfg != NULL && cfg->interval == 7);
}

static void test_socket_length(void) {
  char text[512], p[200];

  /* 107 bytes fit sun_path with its NUL; 108 do not. */
  memset(p, 's', sizeof(p));
  p[0] = '/';
  p[107] = '\0';
  snprintf(text, sizeof(text), "control_socket = \"%s\";\n", p);
  CHECK_INT(load(text), 0);
  CHECK(cfg != NULL && strlen(cfg->control_socket) == 107);
  p[107] = 's';
  p[108] = '\0';
  snprintf(text, sizeof(text), "\ncontrol_socket = \"%s\";\n", p);
  EXPECT_ONE(text, 2, "control_socket path is 108 bytes; a Unix socket path can have at most 107");
}

static void test_account_errors(void) {
  EXPECT_ONE(ACCOUNT("    foo = 1;\n"), 6, "unknown key `foo'");
  EXPECT_ONE(ACCOUNT("    interval = \"1\";\n"), 6, "`interval' must be an integer");
  EXPECT_ONE(ACCOUNT("    interval = 0;\n"), 6,
             "`interval' must be between 1 and 4294967295, not 0");
  EXPECT_ONE(ACCOUNT("    window = 0;\n"), 6, "`window' must be between 1 and 100000, not 0");
  EXPECT_ONE(ACCOUNT("    window = 100001;\n"), 6,
             "`window' must be between 1 and 100000, not 100001");
  EXPECT_ONE(ACCOUNT("    timeout = 0;\n"), 6, "`timeout' must be between 1 and 86400, not 0");
  EXPECT_ONE(ACCOUNT("    pipelining = \"yes\";\n"), 6,
             "`pipelining' must be \"on\", \"auto\" or \"off\", not `yes'");
  EXPECT_ONE(ACCOUNT("    keep = 1;\n"), 6, "`keep' must be true or false");
  EXPECT_ONE(ACCOUNT("    enabled = \"yes\";\n"), 6, "`enabled' must be true or false");
  EXPECT_ONE(ACCOUNT("    keep_days = -1;\n"), 6,
             "`keep_days' must be between 0 and 2147483647, not -1");
  EXPECT_ONE(ACCOUNT("    keep_days = 1.0;\n"), 6, "`keep_days' must be an integer");
  EXPECT_ONE(ACCOUNT("    password_command = \"\";\n"), 6, "`password_command' is empty");
  EXPECT_ONE(ACCOUNT("    netrc = \".netrc\";\n"), 6,
             "`netrc' must be an absolute path (or start with ~/), not `.netrc'");
  EXPECT_ONE(ACCOUNT("    ca_file = 3;\n"), 6, "`ca_file' must be a string");
  EXPECT_ONE(ACCOUNT("    password = \"x\";\n    password_command = \"y\";\n"), 6,
             "set `password' or `password_command', not both");

  /* Fingerprints. */
  EXPECT_ONE(ACCOUNT("    tls_fingerprint = \"sha256:abcd\";\n"), 6,
             "bad tls_fingerprint `sha256:abcd': expected sha256: and 64 hex digits");
  EXPECT_ONE(ACCOUNT("    tls_fingerprint = (\"" FP1 "\",\n      5);\n"), 7,
             "`tls_fingerprint' must be a string or a list of strings");
  EXPECT_ONE(ACCOUNT("    tls_fingerprint = 5;\n"), 6,
             "`tls_fingerprint' must be a string or a list of strings");
  EXPECT_ONE(ACCOUNT("    tls_fingerprint = [\"" FP1 "\", \"" FP1 "\", \"" FP1 "\", \"" FP1
                     "\", \"" FP1 "\",\n \"" FP1 "\", \"" FP1 "\", \"" FP1 "\", \"" FP1 "\"];\n"),
             6, "`tls_fingerprint' lists 9 fingerprints; at most 8 are allowed");
  CHECK_INT(load(ACCOUNT("    tls_fingerprint = [\"" FP1 "\", \"" FP1 "\", \"" FP1 "\", \"" FP1
                         "\", \"" FP1 "\",\n \"" FP1 "\", \"" FP1 "\", \"" FP2 "\"];\n")),
            0);
  CHECK(cfg != NULL && cfg->accounts[0].pin_count == 8 && cfg->accounts[0].pins[7][0] == 0xff);

  /* Names. */
  EXPECT_ONE("accounts = ( { name = \"w rk\";\n server = \"h\"; maildir = \"/m\"; } );\n", 1,
             "bad account name `w rk': use only letters, digits, `.', `_' and `-'");
  EXPECT_ONE("accounts = ( { name = \"\";\n server = \"h\"; maildir = \"/m\"; } );\n", 1,
             "bad account name `': use only letters, digits, `.', `_' and `-'");
  EXPECT_ONE("accounts = ( { name = \"..\";\n server = \"h\"; maildir = \"/m\"; } );\n", 1,
             "bad account name `..': it names a directory");
  EXPECT_ONE("accounts = ( {\n name = 1;\n server = \"h\"; maildir = \"/m\"; } );\n", 2,
             "`name' must be a string");
  EXPECT_ONE(
      "accounts = ( { name = \"a123456789b123456789c123456789d123456789e123456789f123456789"
      "g1234\";\n server = \"h\"; maildir = \"/m\"; } );\n",
      1,
      "bad account name `a123456789b123456789c123456789d123456789e123456789f123456789g123...'"
      ": longer than 64 characters");
  CHECK_INT(load("accounts = ( { name = \"a123456789b123456789c123456789d123456789e123456789f1234"
                 "56789g123\";\n server = \"h\"; maildir = \"/m\"; } );\n"),
            0);

  /* Missing keys are reported at the account's line. */
  EXPECT_ONE("accounts = (\n  { server = \"h\"; maildir = \"/m\"; }\n);\n", 2,
             "account has no `name'");
  EXPECT_ONE("accounts = (\n  { name = \"a\";\n maildir = \"/m\"; }\n);\n", 2,
             "account `a' has no `server'");
  EXPECT_ONE("accounts = (\n  {\n name = \"a\";\n server = \"h\"; }\n);\n", 2,
             "account `a' has no `maildir'");

  /* Maildir paths. */
  EXPECT_ONE("accounts = ( { name = \"a\"; server = \"h\";\n maildir = \"Maildir\"; } );\n", 2,
             "`maildir' must be an absolute path (or start with ~/), not `Maildir'");
  EXPECT_ONE("accounts = ( { name = \"a\"; server = \"h\";\n maildir = \"~me/Maildir\"; } );\n", 2,
             "`maildir' must be an absolute path (or start with ~/), not `~me/Maildir'");

  /* Specs: spec_parse's reason is quoted. */
  EXPECT_ONE("accounts = ( { name = \"a\"; maildir = \"/m\";\n server = \"me@h:99999\"; } );\n", 2,
             "malformed connection spec `me@h:99999': port `99999' is out of range (1-65535)");
  EXPECT_ONE("accounts = ( { name = \"a\"; maildir = \"/m\";\n server = \"ssl:\"; } );\n", 2,
             "malformed connection spec `ssl:': the spec names no host");
  EXPECT_ONE("accounts = ( { name = \"a\"; maildir = \"/m\";\n server = \"\"; } );\n", 2,
             "`server' is empty");
  EXPECT_ONE("accounts = ( { name = \"a\"; maildir = \"/m\";\n server = \"me@127.0.0.1\"; } );\n",
             2,
             "TLS to the IP address 127.0.0.1 cannot verify the certificate's name: write `server' "
             "as tcp_host!name, or set tls_fingerprint");
  EXPECT_ONE("accounts = ( { name = \"a\"; maildir = \"/m\";\n"
             "server = \"starttls:me@[::1]:1110\"; } );\n",
             2,
             "TLS to the IP address ::1 cannot verify the certificate's name: write `server' "
             "as tcp_host!name, or set tls_fingerprint");
  CHECK_INT(
      load("accounts = ( { name = \"a\"; maildir = \"/m\"; server = \"tcp:me@127.0.0.1\"; },\n"
           "  { name = \"b\"; maildir = \"/m\"; server = \"me@127.0.0.1!mail.example.com\"; }"
           " );\n"),
      0);
  CHECK(cfg != NULL && strcmp(cfg->accounts[1].spec.tls_name, "mail.example.com") == 0);

  /* Duplicates point at the first one. */
  EXPECT_ONE("accounts = (\n"
             "  { name = \"work\"; server = \"h\"; maildir = \"/m\"; },\n"
             "  { name = \"play\"; server = \"h2\"; maildir = \"/m\"; },\n"
             "  {\n"
             "    name = \"work\"; server = \"h\"; maildir = \"/m\"; }\n"
             ");\n",
             5, "duplicate account name `work' (first defined at line 2)");

  /* One mailbox, one journal: two accounts of one local user on the same
   * user@tcp_host:port, however written, point at each other. */
  EXPECT_ONE("accounts = (\n"
             "  { name = \"a\"; server = \"me@h\"; maildir = \"/m\"; },\n"
             "  { name = \"b\"; server = \"tcp:you@h:110\"; maildir = \"/m\"; },\n"
             "  { name = \"c\";\n"
             "    server = \"starttls:me@h!mail.example:995\"; maildir = \"/n\"; }\n"
             ");\n",
             4,
             "accounts `c' and `a' (line 2) fetch the same mailbox me@h:995 as one local user: "
             "keep one of them (a mailbox has one journal)");
  /* Other users, ports, hosts, netrc files, a disabled account: no error. */
  CHECK_INT(load("accounts = (\n"
                 "  { name = \"a\"; server = \"me@h\"; maildir = \"/m\"; },\n"
                 "  { name = \"b\"; server = \"you@h\"; maildir = \"/m\"; },\n"
                 "  { name = \"c\"; server = \"me@h:996\"; maildir = \"/m\"; },\n"
                 "  { name = \"d\"; server = \"me@h2\"; maildir = \"/m\"; },\n"
                 "  { name = \"e\"; server = \"me@h\"; netrc = \"/n\"; maildir = \"/m\"; },\n"
                 "  { name = \"f\"; server = \"me@h\"; enabled = false; maildir = \"/m\"; }\n"
                 ");\n"),
            0);
  /* As root: the same mailbox for two local users is two journals. */
  root_rules = 1;
  CHECK_INT(load("accounts = (\n"
                 "  { name = \"a\"; server = \"me@h\"; user = \"nobody\"; maildir = \"/m\"; },\n"
                 "  { name = \"b\"; server = \"me@h\"; user = \"daemon\"; maildir = \"/m\"; }\n"
                 ");\n"),
            0);
  EXPECT_ONE("accounts = (\n"
             "  { name = \"a\"; server = \"h\"; user = \"nobody\"; maildir = \"/m\"; },\n"
             "  { name = \"b\"; server = \"nobody@h\"; user = \"nobody\"; maildir = \"/m\"; }\n"
             ");\n",
             3,
             "accounts `b' and `a' (line 2) fetch the same mailbox nobody@h:995 as one local "
             "user: keep one of them (a mailbox has one journal)");
  root_rules = 0;
}

static void test_many_errors(void) {
  int r = load("interval = 0;\n"                                       /* 1 */
               "bogus = true;\n"                                       /* 2 */
               "control_socket = \"rel\";\n"                           /* 3 */
               "accounts = (\n"                                        /* 4 */
               "  { name = \"a\";\n"                                   /* 5 */
               "    server = \"me@h:0\";\n"                            /* 6 */
               "    maildir = \"/m\";\n"                               /* 7 */
               "    window = 0;\n"                                     /* 8 */
               "    colour = \"red\"; },\n"                            /* 9 */
               "  { maildir = \"x\"; },\n"                             /* 10 */
               "  5,\n"                                                /* 11 */
               "  { name = \"a\"; server = \"h\"; maildir = \"/m\";\n" /* 12 */
               "    tls_fingerprint = \"zz\"; }\n"                     /* 13 */
               ");\n"
               "max_parallel = \"4\";\n"); /* 15 */

  CHECK_INT(r, P3_ECONFIG);
  CHECK(cfg == NULL);
  CHECK_INT(errs.count, 13);
  /* Listed in the file's order, whatever order the checks found them in. */
  CHECK_ERR(0, 1, "`interval' must be between 1 and 4294967295, not 0");
  CHECK_ERR(1, 2, "unknown key `bogus'");
  CHECK_ERR(2, 3, "`control_socket' must be an absolute path (or start with ~/), not `rel'");
  CHECK_ERR(3, 6, "malformed connection spec `me@h:0': port `0' is out of range (1-65535)");
  CHECK_ERR(4, 8, "`window' must be between 1 and 100000, not 0");
  CHECK_ERR(5, 9, "unknown key `colour'");
  CHECK_ERR(6, 10, "`maildir' must be an absolute path (or start with ~/), not `x'");
  CHECK_ERR(7, 10, "account has no `name'");
  CHECK_ERR(8, 10, "account has no `server'");
  CHECK_ERR(9, 11, "each element of `accounts' must be a group { ... }");
  CHECK_ERR(10, 12, "duplicate account name `a' (first defined at line 5)");
  CHECK_ERR(11, 13, "bad tls_fingerprint `zz': expected sha256: and 64 hex digits");
  CHECK_ERR(12, 15, "`max_parallel' must be an integer");
}

static void test_key_hints(void) {
  int r = load("intervall = 5;\n"                                                     /* 1 */
               "accounts = (\n"                                                       /* 2 */
               "  { name = \"a\"; sever = \"h\"; server = \"h\"; maildir = \"/m\";\n" /* 3 */
               "    state_dir = \"/s\"; Keep = true; zzzzzz = 1; }\n"                 /* 4 */
               ");\n"
               "maildir = \"/m\";\n"); /* 6 */

  CHECK_INT(r, P3_ECONFIG);
  CHECK_INT(errs.count, 6);
  CHECK_ERR(0, 1, "unknown key `intervall' (did you mean `interval'?)");
  CHECK_ERR(1, 3, "unknown key `sever' (did you mean `server'?)");
  CHECK_ERR(2, 4, "`state_dir' is not a setting of an account (it belongs at the top of the file)");
  CHECK_ERR(3, 4, "unknown key `Keep' (did you mean `keep'?)");
  CHECK_ERR(4, 4, "unknown key `zzzzzz'");
  CHECK_ERR(5, 6, "`maildir' is not a setting of the file (it belongs inside an account group)");
}

static void test_syntax_and_read_errors(void) {
  char dir[PATH_MAX + 16];
  int r;

  /* Only the first syntax error: libconfig stops there. */
  r = load("interval = 300;\n\nmax_parallel = ;\nfoo = ;\n");
  CHECK_INT(r, P3_ECONFIG);
  CHECK_INT(errs.count, 1);
  CHECK_ERR(0, 3, "syntax error in `max_parallel = ;'");
  /* The two slips libconfig calls a bare "syntax error". */
  r = load("accounts = (\n  { name = \"a\"; },\n  # the last one\n);\n");
  CHECK_INT(errs.count, 1);
  CHECK_ERR(0, 4,
            "syntax error: a comma after the last element of a list; remove it (libconfig allows "
            "no trailing comma before `)')");
  r = load("accounts = (\n  { name = \"a\"; }\n  { name = \"b\"; }\n);\n");
  CHECK_INT(errs.count, 1);
  CHECK_ERR(0, 3, "syntax error: a `,' is missing between this group and the one before");
  r = load("interval = 300;\ninterval = 200;\n");
  CHECK_INT(errs.count, 1);
  CHECK_ERR(0, 2, "duplicate setting name");
  /* Semantic errors are not looked for after a syntax error. */
  r = load("bogus = 1;\naccounts = (\n");
  CHECK_INT(r, P3_ECONFIG);
  CHECK_INT(errs.count, 1);
  CHECK(errs.count == 1 && strstr(errs.lines[0], ": syntax error") != NULL);

  snprintf(path, sizeof(path), "%s/missing.conf", tmpdir);
  cfg_errors_free(&errs);
  CHECK_INT(cfg_load(path, 0, &cfg, &errs), P3_ECONFIG);
  CHECK(cfg == NULL);
  CHECK_INT(errs.count, 1);
  CHECK_ERR(0, 0, "cannot read: No such file or directory");

  snprintf(dir, sizeof(dir), "%s/adir", tmpdir);
  CHECK_INT(mkdir(dir, 0700), 0);
  snprintf(path, sizeof(path), "%s", dir);
  cfg_errors_free(&errs);
  CHECK_INT(cfg_load(path, 0, &cfg, &errs), P3_ECONFIG);
  CHECK_INT(errs.count, 1);
  CHECK_ERR(0, 0, "cannot read: Is a directory");

  /* A file without read permission (root reads anything, so not as root). */
  if (geteuid() != 0) {
    write_file("noread.conf", "", 0200);
    cfg_errors_free(&errs);
    CHECK_INT(cfg_load(path, 0, &cfg, &errs), P3_ECONFIG);
    CHECK_ERR(0, 0, "cannot read: Permission denied");
  }

  /* errs may be NULL. */
  CHECK_INT(cfg_load(path, 0, &cfg, NULL), P3_ECONFIG);
}

static void test_password_mode(void) {
  static const char text[] = ACCOUNT("    password = \"hunter2\";\n");
  char want[PATH_MAX + 256];

  CHECK_INT(load_mode(text, 0600, 0), 0);
  CHECK(cfg != NULL && strcmp(cfg->accounts[0].password, "hunter2") == 0);
  CHECK_INT(load_mode(text, 0400, 0), 0);

  CHECK_INT(load_mode(text, 0644, 0), P3_ECONFIG);
  CHECK_INT(errs.count, 1);
  snprintf(want, sizeof(want),
           "a plaintext password in a file readable by group or others (mode 0644); chmod 600 %s",
           path);
  CHECK_ERR(0, 6, want);
  CHECK_INT(load_mode(text, 0640, 0), P3_ECONFIG);
  snprintf(want, sizeof(want),
           "a plaintext password in a file readable by group or others (mode 0640); chmod 600 %s",
           path);
  CHECK_ERR(0, 6, want);
  CHECK_INT(load_mode(text, 0620, 0), P3_ECONFIG);
  snprintf(want, sizeof(want),
           "a plaintext password in a file writable by group or others (mode 0620); chmod 600 %s",
           path);
  CHECK_ERR(0, 6, want);

  /* The rule is about passwords: a world-readable file without one is fine. */
  CHECK_INT(load_mode(ACCOUNT("    password_command = \"pass x\";\n"), 0644, 0), 0);
}

static void test_include(void) {
  char inc[128], want[1024];
  int fd;

  /* @include is relative to the including file, and errors in it name it. */
  snprintf(inc, sizeof(inc), "%s/acct.inc", tmpdir);
  fd = open(inc, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  CHECK(fd >= 0);
  if (fd < 0)
    return;
  dprintf(fd,
          "{ name = \"a\"; server = \"h\"; maildir = \"/m\";\n  password = \"pw\";\n  x = 1; }\n");
  CHECK_INT(fchmod(fd, 0644), 0);
  close(fd);
  CHECK_INT(load_mode("accounts = (\n@include \"acct.inc\"\n);\n", 0600, 0), P3_ECONFIG);
  CHECK_INT(errs.count, 2);
  snprintf(want, sizeof(want),
           "%s:2: a plaintext password in a file readable by group or others (mode 0644); "
           "chmod 600 %s",
           inc, inc);
  CHECK(errs.count > 0 && strcmp(errs.lines[0], want) == 0);
  snprintf(want, sizeof(want), "%s:3: unknown key `x'", inc);
  CHECK(errs.count > 1 && strcmp(errs.lines[1], want) == 0);

  /* libconfig 1.5 puts the include directory before an absolute name too:
   * the error names the file and says so. */
  char text[512];
  snprintf(text, sizeof(text), "accounts = (\n@include \"%s\"\n);\n", inc);
  CHECK_INT(load_mode(text, 0600, 0), P3_ECONFIG);
  CHECK_INT(errs.count, 1);
  CHECK(errs.count > 0 && strstr(errs.lines[0], ":2: cannot open include file `") != NULL &&
        strstr(errs.lines[0], inc) != NULL && strstr(errs.lines[0], "write it relative") != NULL);
  CHECK_INT(load_mode("accounts = (\n@include \"missing.inc\"\n);\n", 0600, 0), P3_ECONFIG);
  snprintf(want, sizeof(want), ":2: cannot open include file `%s/missing.inc'", tmpdir);
  CHECK(errs.count == 1 && strstr(errs.lines[0], want) != NULL);
}

/* Loading never writes: a missing Maildir (and its parents) stays missing,
 * as root or not, and is created by its first run.  Only a path that exists
 * and is not a directory is an error of the file. */
static void test_maildirs(void) {
  char text[1024], md[256], sub[512], file[128];
  struct stat st;

  snprintf(md, sizeof(md), "%s/deep/er/Maildir", tmpdir);
  snprintf(text, sizeof(text),
           "accounts = ( { name = \"a\"; server = \"h\";\n maildir = \"%s\"; } );\n", md);
  CHECK_INT(load_mode(text, 0600, 0), 0);
  CHECK_INT(load_mode(text, 0600, 1), 0);
  snprintf(sub, sizeof(sub), "%s/deep", tmpdir);
  CHECK(stat(sub, &st) != 0 && errno == ENOENT);

  /* An existing directory is fine, and is left as it was. */
  CHECK_INT(mkdir(sub, 0755), 0);
  snprintf(md, sizeof(md), "%s/deep", tmpdir);
  snprintf(text, sizeof(text),
           "accounts = ( { name = \"a\"; server = \"h\";\n maildir = \"%s\"; } );\n", md);
  CHECK_INT(load_mode(text, 0600, 1), 0);
  snprintf(sub, sizeof(sub), "%s/deep/new", tmpdir);
  CHECK(stat(sub, &st) != 0 && errno == ENOENT);

  /* Root's rules: the same. */
  snprintf(md, sizeof(md), "%s/rootmode/Maildir", tmpdir);
  snprintf(text, sizeof(text),
           "accounts = ( { name = \"a\"; server = \"h\"; user = \"nobody\";\n"
           " maildir = \"%s\"; } );\n",
           md);
  root_rules = 1;
  CHECK_INT(load_mode(text, 0600, 1), 0);
  root_rules = 0;
  snprintf(sub, sizeof(sub), "%s/rootmode", tmpdir);
  CHECK(stat(sub, &st) != 0);

  /* A regular file in the way of the path: ENOTDIR, for enabled accounts. */
  snprintf(file, sizeof(file), "%s/plainfile", tmpdir);
  write_file("plainfile", "x", 0600);
  snprintf(md, sizeof(md), "%s/Maildir", file);
  snprintf(text, sizeof(text),
           "accounts = (\n { name = \"a\"; server = \"h\";\n maildir = \"%s\"; },\n"
           " { name = \"b\"; server = \"h2\"; enabled = false;\n maildir = \"%s\"; } );\n",
           md, md);
  CHECK_INT(load_mode(text, 0600, 1), P3_ECONFIG);
  CHECK_INT(errs.count, 1); /* the disabled account's maildir is not looked at */
  snprintf(sub, sizeof(sub), "maildir %s: Not a directory", md);
  snprintf(path, sizeof(path), "%s/test.conf", tmpdir);
  CHECK_ERR(0, 3, sub);
  /* The maildir itself a file. */
  snprintf(text, sizeof(text),
           "accounts = ( { name = \"a\"; server = \"h\";\n maildir = \"%s\"; } );\n", file);
  CHECK_INT(load_mode(text, 0600, 1), P3_ECONFIG);
  snprintf(sub, sizeof(sub), "maildir %s: Not a directory", file);
  CHECK_ERR(0, 2, sub);
  /* pop3ctl (check_maildirs = 0) does not look. */
  CHECK_INT(load_mode(text, 0600, 0), 0);
}

/* keep_days means nothing without keep: an error of the file, at its line
 * (as `pop3 dl --keep-days' needs --keep), wherever `keep' is written. */
static void test_keep_days(void) {
  EXPECT_ONE(ACCOUNT("    keep_days = 3;\n"), 6, "keep_days needs keep = true");
  EXPECT_ONE(ACCOUNT("    keep = false;\n    keep_days = 3;\n"), 7, "keep_days needs keep = true");
  CHECK_INT(load(ACCOUNT("    keep_days = 3;\n    keep = true;\n")), 0);
  CHECK_INT(errs.count, 0);
}

/* max_size: a size string (human.h) or bytes; global default, 0 lifts it. */
static void test_max_size(void) {
  CHECK_INT(load(ACCOUNT("")), 0);
  if (cfg != NULL)
    CHECK(cfg->max_size == 0 && cfg->accounts[0].max_size == 0);
  CHECK_INT(load(ACCOUNT("    max_size = \"10M\";\n")), 0);
  if (cfg != NULL)
    CHECK(cfg->accounts[0].max_size == 10ull << 20);
  CHECK_INT(load(ACCOUNT("    max_size = 5000000000L;\n")), 0);
  if (cfg != NULL)
    CHECK(cfg->accounts[0].max_size == 5000000000ull);
  CHECK_INT(load("max_size = \"64KiB\";\n"
                 "accounts = (\n"
                 "  { name = \"a\"; server = \"me@mail.example.com\"; maildir = \"/srv/a\"; },\n"
                 "  { name = \"b\"; server = \"me@mail.example.org\"; maildir = \"/srv/b\";\n"
                 "    max_size = 0; },\n"
                 "  { name = \"c\"; server = \"me@mail.example.net\"; maildir = \"/srv/c\";\n"
                 "    max_size = \"1g\"; }\n"
                 ");\n"),
            0);
  if (cfg != NULL && cfg->account_count == 3) {
    CHECK(cfg->max_size == 64ull << 10);
    CHECK(cfg->accounts[0].max_size == 64ull << 10);
    CHECK(cfg->accounts[1].max_size == 0);
    CHECK(cfg->accounts[2].max_size == 1ull << 30);
  }
  EXPECT_ONE(ACCOUNT("    max_size = \"10X\";\n"), 6,
             "max_size `10X' is not a size: a number of bytes, or with K, M or G (KiB, MiB, "
             "GiB), e.g. \"10M\"");
  EXPECT_ONE(ACCOUNT("    max_size = \"99999999999G\";\n"), 6,
             "max_size `99999999999G' is not a size: a number of bytes, or with K, M or G (KiB, "
             "MiB, GiB), e.g. \"10M\" (too large)");
  EXPECT_ONE(ACCOUNT("    max_size = -1;\n"), 6,
             "`max_size' must be between 0 and 9223372036854775807, not -1");
  EXPECT_ONE(ACCOUNT("    max_size = 1.5;\n"), 6,
             "`max_size' must be a size such as \"10M\" or a number of bytes");
  EXPECT_ONE("max_size = \"\";\n", 1,
             "max_size `' is not a size: a number of bytes, or with K, M or G (KiB, MiB, GiB), "
             "e.g. \"10M\"");
}

/* etc/pop3sync.conf.example must load as shipped, and with every
 * commented-out `#key = value;' line switched on. */
static void test_example(void) {
  const char *srcdir = getenv("top_srcdir");
  char ex[PATH_MAX], line[1024];
  char *text = NULL;
  size_t len = 0;
  FILE *in, *out;

  snprintf(ex, sizeof(ex), "%s/etc/pop3sync.conf.example", srcdir != NULL ? srcdir : ".");
  in = fopen(ex, "r");
  if (in == NULL) {
    fprintf(stderr, "test_config: %s not found, example not checked\n", ex);
    return;
  }
  cfg_free(cfg);
  cfg = NULL;
  cfg_errors_free(&errs);
  CHECK_INT(cfg_load(ex, 0, &cfg, &errs), 0);
  for (size_t i = 0; i < errs.count; i++)
    fprintf(stderr, "  %s\n", errs.lines[i]);
  CHECK(cfg != NULL && cfg->account_count == 2);

  out = open_memstream(&text, &len);
  CHECK(out != NULL);
  if (out == NULL) {
    fclose(in);
    return;
  }
  while (fgets(line, sizeof(line), in) != NULL) {
    const char *p = line + strspn(line, " ");
    /* `user' names a person (alice) who need not exist here; test_root_mode
     * covers the key. */
    if (p[0] == '#' && p[1] >= 'a' && p[1] <= 'z' && strncmp(p, "#user ", 6) != 0)
      fprintf(out, "%.*s%s", (int)(p - line), line, p + 1);
    else
      fputs(line, out);
  }
  fclose(in);
  fclose(out);
  CHECK_INT(load(text), 0);
  for (size_t i = 0; i < errs.count; i++)
    fprintf(stderr, "  %s\n", errs.lines[i]);
  if (cfg != NULL && cfg->account_count == 2) {
    CHECK_INT(cfg->accounts[0].pin_count, 1);
    CHECK_INT(cfg->accounts[0].keep_days, 30);
    CHECK(cfg->accounts[0].max_size == 25ull << 20);
    CHECK(cfg->accounts[1].max_size == 10ull << 20); /* the global one */
    CHECK_STR(cfg->accounts[1].password, "secret");
  }
  free(text);
}

static void rm_rf(const char *dir) {
  char cmd[PATH_MAX + 32];

  if (strncmp(dir, "/tmp/", 5) != 0 || strchr(dir, '\'') != NULL)
    return;
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", dir);
}

/* Root runs each account as its `user': required, must exist, never root;
 * a daemon running as a user may name only itself. */
static void test_root_mode(void) {
  char line[PATH_MAX + 256];
  struct passwd *me = getpwuid(geteuid());
  root_rules = 1;
  EXPECT_ONE(ACCOUNT(""), 3,
             "account `a': set user = \"NAME\" (the local user whose Maildir this is)");
  EXPECT_ONE(ACCOUNT("    user = \"no-such-user-p3\";\n"), 6,
             "account `a': no local user named \"no-such-user-p3\"");
  EXPECT_ONE(ACCOUNT("    user = \"root\";\n"), 6,
             "account `a': user = \"root\" is root; name the unprivileged local user whose "
             "Maildir this is");
  CHECK_INT(load(ACCOUNT("    user = \"nobody\";\n")), 0);
  if (cfg != NULL && cfg->account_count == 1) {
    CHECK_STR(cfg->accounts[0].user, "nobody");
    CHECK_INT(cfg->accounts[0].uid, 65534);
  }
  root_rules = 0;
  if (geteuid() != 65534) {
    EXPECT_ONE(ACCOUNT("    user = \"nobody\";\n"), 6,
               "account `a': user = \"nobody\" needs a daemon running as root");
  }
  if (me != NULL) {
    snprintf(line, sizeof line, "    user = \"%s\";\n", me->pw_name);
    char text[PATH_MAX + 512];
    snprintf(text, sizeof text, ACCOUNT("%s"), line);
    /* Naming oneself is fine (except root, which is never an account's user). */
    if (geteuid() != 0)
      CHECK_INT(load(text), 0);
  }
}

int main(void) {
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_config.XXXXXX");
  if (mkdtemp(tmpdir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  test_minimal();
  test_full();
  test_defaults();
  test_top_level_errors();
  test_socket_length();
  test_account_errors();
  test_many_errors();
  test_key_hints();
  test_syntax_and_read_errors();
  test_password_mode();
  test_include();
  test_maildirs();
  test_keep_days();
  test_max_size();
  test_example();
  test_root_mode();
  cfg_free(cfg);
  cfg_errors_free(&errs);
  rm_rf(tmpdir);
  return check_result("test_config");
}

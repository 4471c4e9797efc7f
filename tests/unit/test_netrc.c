#include "config.h"

#include "errors.h"
#include "netrc.h"
#include "spec.h"
#include "target.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static char tmpdir[256];

/* Writes a file in the temporary directory with exactly mode (umask does
 * not apply to fchmod) and returns its path in a static buffer. */
static const char *write_file(const char *name, const char *text, mode_t mode) {
  static char path[512];
  int fd;
  size_t len = strlen(text);

  snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
  unlink(path);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  CHECK(fd >= 0);
  if (fd < 0)
    return path;
  CHECK_INT(write(fd, text, len), len);
  CHECK_INT(fchmod(fd, mode), 0);
  close(fd);
  return path;
}

static int parse(const char *text, struct netrc *n, int *line, char *err, size_t errlen) {
  return netrc_parse(text, strlen(text), n, line, err, errlen);
}

static void test_parse_basic(void) {
  struct netrc n;
  char err[256];
  int line = -1;

  /* Several entries on one line. */
  CHECK_INT(parse("machine a login la password pa machine b login lb password pb", &n, &line, err,
                  sizeof(err)),
            0);
  CHECK_INT(n.count, 2);
  if (n.count == 2) {
    CHECK_STR(n.entries[0].machine, "a");
    CHECK_STR(n.entries[0].login, "la");
    CHECK_STR(n.entries[0].password, "pa");
    CHECK(n.entries[0].account == NULL);
    CHECK_STR(n.entries[1].machine, "b");
    CHECK_STR(n.entries[1].login, "lb");
    CHECK_STR(n.entries[1].password, "pb");
    CHECK_INT(n.entries[0].line, 1);
    CHECK_INT(n.entries[1].line, 1);
  }
  netrc_free(&n);
  CHECK(n.entries == NULL);
  CHECK_INT(n.count, 0);

  /* Entries across lines, comments, tabs, CRLF, quoted tokens. */
  CHECK_INT(parse("# my netrc\r\n"
                  "machine\tpop.example.com\r\n"
                  "  login me   # the login\r\n"
                  "  password \"two words \\\"quoted\\\" \\\\ x\"\r\n"
                  "\r\n"
                  "machine \"other\" account \"me@example.com\" password pass#word\n"
                  "login\n"
                  "\"\"\n"
                  "machine \"multi\nline\" password \"#not a comment\"\n"
                  "machine last",
                  &n, &line, err, sizeof(err)),
            0);
  CHECK_INT(n.count, 4);
  if (n.count == 4) {
    CHECK_STR(n.entries[0].machine, "pop.example.com");
    CHECK_STR(n.entries[0].login, "me");
    CHECK_STR(n.entries[0].password, "two words \"quoted\" \\ x");
    CHECK_INT(n.entries[0].line, 2);
    CHECK_STR(n.entries[1].machine, "other");
    CHECK_STR(n.entries[1].account, "me@example.com");
    CHECK_STR(n.entries[1].password, "pass#word");
    CHECK_STR(n.entries[1].login, "");
    CHECK_INT(n.entries[1].line, 6);
    CHECK_STR(n.entries[2].machine, "multi\nline");
    CHECK_STR(n.entries[2].password, "#not a comment");
    CHECK_INT(n.entries[2].line, 9);
    CHECK_STR(n.entries[3].machine, "last");
    CHECK(n.entries[3].login == NULL && n.entries[3].password == NULL);
    CHECK_INT(n.entries[3].line, 11); /* the quoted machine spans two lines */
  }
  netrc_free(&n);

  /* Empty and comment-only files. */
  CHECK_INT(parse("", &n, &line, err, sizeof(err)), 0);
  CHECK_INT(n.count, 0);
  netrc_free(&n);
  CHECK_INT(parse("  # nothing\n\n#machine x password y\n", &n, &line, err, sizeof(err)), 0);
  CHECK_INT(n.count, 0);
  netrc_free(&n);

  /* len bounds the parse: the buffer need not end in NUL. */
  {
    const char text[] = "machine a password secretXXXX";
    CHECK_INT(netrc_parse(text, sizeof(text) - 1 - 4, &n, &line, err, sizeof(err)), 0);
    CHECK_INT(n.count, 1);
    if (n.count == 1)
      CHECK_STR(n.entries[0].password, "secret");
    netrc_free(&n);
  }
}

static void test_parse_macdef_default(void) {
  struct netrc n;
  char err[256];
  int line = -1;

  CHECK_INT(parse("machine a login x\n"
                  "macdef init\n"
                  "cd /pub\n"
                  "machine evil password stolen\n"
                  "\n"
                  "machine b password pb\n"
                  "macdef other\r\n"
                  "  get file\r\n"
                  "\r\n"
                  "default login anonymous password guest@\n"
                  "macdef last\n"
                  "machine ignored password at-eof",
                  &n, &line, err, sizeof(err)),
            0);
  CHECK_INT(n.count, 3);
  if (n.count == 3) {
    CHECK_STR(n.entries[0].machine, "a");
    CHECK_STR(n.entries[1].machine, "b");
    CHECK_INT(n.entries[1].line, 6);
    CHECK(n.entries[2].machine == NULL);
    CHECK_STR(n.entries[2].login, "anonymous");
    CHECK_STR(n.entries[2].password, "guest@");
    CHECK_INT(n.entries[2].line, 10);
  }
  CHECK(netrc_find_machine(&n, "evil", NULL) == NULL);
  CHECK(netrc_find_machine(&n, "ignored", NULL) == NULL);
  CHECK(netrc_find_default(&n) == &n.entries[2]);
  netrc_free(&n);

  /* A default entry is not a machine. */
  CHECK_INT(parse("default password d machine m password p", &n, &line, err, sizeof(err)), 0);
  CHECK_INT(n.count, 2);
  CHECK(netrc_find_default(&n) == &n.entries[0]);
  CHECK(netrc_find_machine(&n, "m", NULL) == &n.entries[1]);
  netrc_free(&n);

  CHECK_INT(parse("machine m password p", &n, &line, err, sizeof(err)), 0);
  CHECK(netrc_find_default(&n) == NULL);
  netrc_free(&n);
}

struct bad {
  const char *text;
  int line;
  const char *reason;
};

static const struct bad bads[] = {
    {"machine a login", 1, "missing value after `login'"},
    {"machine a\nlogin b\npassword", 3, "missing value after `password'"},
    {"machine a\nlogin b\npassword   \n\n  # only a comment\n", 3,
     "missing value after `password'"},
    {"machine", 1, "missing value after `machine'"},
    {"machine a account", 1, "missing value after `account'"},
    {"machine a macdef", 1, "missing value after `macdef'"},
    {"machine a\n  port 110\n", 2, "unknown keyword"},
    {"machine a password two words\n", 1, "unknown keyword or stray value"},
    {"\n\nlogin x\n", 3, "`login' before any `machine' or `default'"},
    {"password x", 1, "`password' before any"},
    {"machine a password \"open\n\n", 1, "unterminated quoted string"},
    {"machine a login x login y", 1, "`login' given twice"},
    {"machine a\r\npassword x\r\npassword y", 3, "`password' given twice for the entry of line 1"},
};

static void test_parse_errors(void) {
  size_t i;
  struct netrc n;
  char err[256];
  int line, r;

  for (i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
    memset(&n, 0x55, sizeof(n));
    line = -1;
    err[0] = '\0';
    r = parse(bads[i].text, &n, &line, err, sizeof(err));
    CHECK_INT(r, P3_ENETRC);
    if (line != bads[i].line || strstr(err, bads[i].reason) == NULL) {
      fprintf(stderr, "netrc #%zu: got line %d \"%s\", expected line %d \"%s\"\n", i, line, err,
              bads[i].line, bads[i].reason);
      check_failures++;
    }
    if (r == 0)
      netrc_free(&n);
  }

  /* The stray token is not quoted back: it may be half a password. */
  r = parse("machine a password hunter2 secret", &n, &line, err, sizeof(err));
  CHECK_INT(r, P3_ENETRC);
  CHECK(strstr(err, "secret") == NULL);

  /* A NUL byte inside the given length. */
  r = netrc_parse("machine a\0b", 11, &n, &line, err, sizeof(err));
  CHECK_INT(r, P3_ENETRC);
  CHECK(strstr(err, "NUL") != NULL);
}

static void test_find(void) {
  struct netrc n;
  char err[256];
  int line;
  const struct netrc_entry *e;

  CHECK_INT(parse("machine me@Pop.Example.com:995 password p1\n"
                  "machine pop.example.com login other password p2\n"
                  "machine pop.example.com password p3 account acct1\n"
                  "machine pop.example.com login me password p4\n"
                  "machine x account acct1 password p5\n"
                  "default login anon password p6 account dflt\n",
                  &n, &line, err, sizeof(err)),
            0);
  CHECK_INT(n.count, 6);

  e = netrc_find_account(&n, "acct1");
  CHECK(e == &n.entries[2]);
  CHECK(netrc_find_account(&n, "ACCT1") == NULL);
  CHECK(netrc_find_account(&n, "acct") == NULL);
  CHECK(netrc_find_account(&n, "dflt") == &n.entries[5]);

  /* Host compared without case, the user part exactly. */
  CHECK(netrc_find_machine(&n, "me@pop.example.com:995", NULL) == &n.entries[0]);
  CHECK(netrc_find_machine(&n, "me@POP.EXAMPLE.COM:995", NULL) == &n.entries[0]);
  CHECK(netrc_find_machine(&n, "Me@pop.example.com:995", NULL) == NULL);
  CHECK(netrc_find_machine(&n, "me@pop.example.com:110", NULL) == NULL);
  CHECK(netrc_find_machine(&n, "pop.example.com:995", NULL) == NULL);

  /* Login filter: an entry without a login matches any login. */
  CHECK(netrc_find_machine(&n, "pop.example.com", NULL) == &n.entries[1]);
  CHECK(netrc_find_machine(&n, "POP.example.COM", "other") == &n.entries[1]);
  CHECK(netrc_find_machine(&n, "pop.example.com", "me") == &n.entries[2]);
  CHECK(netrc_find_machine(&n, "pop.example.com", "nobody") == &n.entries[2]);
  CHECK(netrc_find_machine(&n, "nowhere", NULL) == NULL);
  CHECK(netrc_find_default(&n) == &n.entries[5]);
  netrc_free(&n);

  CHECK_INT(parse("machine pop.example.com login me password p4\n", &n, &line, err, sizeof(err)),
            0);
  CHECK(netrc_find_machine(&n, "pop.example.com", "me") == &n.entries[0]);
  CHECK(netrc_find_machine(&n, "pop.example.com", "you") == NULL);
  netrc_free(&n);
}

static void test_load(void) {
  struct netrc n;
  char err[512], want[600];
  const char *path;

  path = write_file("ok", "machine a password p\n", 0600);
  CHECK_INT(netrc_load(path, &n, err, sizeof(err)), 0);
  CHECK_INT(n.count, 1);
  netrc_free(&n);

  /* Owner-only bits other than rw do not matter. */
  path = write_file("ok2", "machine a password p\n", 0400);
  CHECK_INT(netrc_load(path, &n, err, sizeof(err)), 0);
  netrc_free(&n);
  path = write_file("ok3", "machine a password p\n", 0711);
  CHECK_INT(netrc_load(path, &n, err, sizeof(err)), 0);
  netrc_free(&n);

  path = write_file("r644", "machine a password p\n", 0644);
  CHECK_INT(netrc_load(path, &n, err, sizeof(err)), P3_ENETRCPERM);
  snprintf(want, sizeof(want), "%s: readable by group or others (mode 0644); chmod 600 it", path);
  CHECK_STR(err, want);

  path = write_file("r640", "machine a password p\n", 0640);
  CHECK_INT(netrc_load(path, &n, err, sizeof(err)), P3_ENETRCPERM);
  CHECK(strstr(err, "(mode 0640)") != NULL);
  path = write_file("r604", "machine a password p\n", 0604);
  CHECK_INT(netrc_load(path, &n, err, sizeof(err)), P3_ENETRCPERM);
  path = write_file("w620", "machine a password p\n", 0620);
  CHECK_INT(netrc_load(path, &n, err, sizeof(err)), P3_ENETRCPERM);
  snprintf(want, sizeof(want), "%s: writable by group or others (mode 0620); chmod 600 it", path);
  CHECK_STR(err, want);
  path = write_file("w602", "machine a password p\n", 0602);
  CHECK_INT(netrc_load(path, &n, err, sizeof(err)), P3_ENETRCPERM);

  /* Syntax errors name the file and the line. */
  path = write_file("syntax", "machine a\n  password p\nmachine b\n  login", 0600);
  CHECK_INT(netrc_load(path, &n, err, sizeof(err)), P3_ENETRC);
  snprintf(want, sizeof(want), "%s:4: missing value after `login'", path);
  CHECK_STR(err, want);

  snprintf(want, sizeof(want), "%s/does-not-exist", tmpdir);
  CHECK_INT(netrc_load(want, &n, err, sizeof(err)), -ENOENT);
  CHECK(strstr(err, "does-not-exist") != NULL);

  /* A directory is not a netrc. */
  CHECK(netrc_load(tmpdir, &n, err, sizeof(err)) < 0);
}

static void test_default_path(void) {
  char buf[512];
  const char *home = getenv("HOME");
  char *saved_home = home ? strdup(home) : NULL;
  struct passwd *pw = getpwuid(geteuid());

  setenv("NETRC", "/some/where/netrc", 1);
  CHECK_INT(netrc_default_path(buf, sizeof(buf)), 0);
  CHECK_STR(buf, "/some/where/netrc");
  CHECK_INT(netrc_default_path(buf, 5), -ENOSPC);

  setenv("NETRC", "", 1);
  setenv("HOME", "/home/x", 1);
  CHECK_INT(netrc_default_path(buf, sizeof(buf)), 0);
  CHECK_STR(buf, "/home/x/.netrc");
  CHECK_INT(netrc_default_path(buf, 14), -ENOSPC);
  CHECK_INT(netrc_default_path(buf, 15), 0);

  unsetenv("NETRC");
  setenv("HOME", "/", 1);
  CHECK_INT(netrc_default_path(buf, sizeof(buf)), 0);
  CHECK_STR(buf, "/.netrc");

  unsetenv("HOME");
  if (pw != NULL) {
    char want[512];
    snprintf(want, sizeof(want), "%s/.netrc", strcmp(pw->pw_dir, "/") ? pw->pw_dir : "");
    CHECK_INT(netrc_default_path(buf, sizeof(buf)), 0);
    CHECK_STR(buf, want);
  }
  if (saved_home != NULL)
    setenv("HOME", saved_home, 1);
  free(saved_home);
}

static const char *effective_user(void) {
  struct passwd *pw = getpwuid(geteuid());
  return pw != NULL ? pw->pw_name : "?";
}

static void test_resolve(void) {
  struct p3_target t;
  char err[512], want[1024], missing[300];
  const char *path;

  path = write_file("accounts",
                    "machine me@localhost:1110 account me@pop.example.com password s3cret\n"
                    "machine localhost account work@mail.example.org login boss\n"
                    "machine 127.0.0.1:2110 account ip@127.0.0.1\n"
                    "machine tcp:tunnel account bare password pw\n"
                    "default account nowhere password x\n"
                    "machine \"bad host\" account broken\n"
                    "machine h account \"we ird@h\"\n",
                    0600);

  /* Account names win. */
  CHECK_INT(target_resolve("me@pop.example.com", path, &t, err, sizeof(err)), 0);
  CHECK_INT(t.spec.mode, P3_TLS_IMPLICIT);
  CHECK_STR(t.spec.user, "me");
  CHECK_STR(t.spec.tcp_host, "localhost");
  CHECK_STR(t.spec.tls_name, "pop.example.com");
  CHECK_INT(t.spec.port, 1110);
  CHECK_STR(t.password, "s3cret");
  /* Already resolved: target_password keeps it. */
  CHECK_INT(target_password(&t, path, err, sizeof(err)), 0);
  CHECK_STR(t.password, "s3cret");
  target_deinit(&t);
  CHECK(t.password == NULL);

  /* The prefix from the text applies. */
  CHECK_INT(target_resolve("tcp:me@pop.example.com", path, &t, err, sizeof(err)), 0);
  CHECK_INT(t.spec.mode, P3_TLS_NONE);
  CHECK_INT(t.spec.mode_given, 1);
  CHECK_INT(t.spec.port, 1110);
  target_deinit(&t);

  /* Login wins over the account's user; the mode decides the port. */
  CHECK_INT(target_resolve("starttls:work@mail.example.org", path, &t, err, sizeof(err)), 0);
  CHECK_STR(t.spec.user, "boss");
  CHECK_STR(t.spec.tcp_host, "localhost");
  CHECK_STR(t.spec.tls_name, "mail.example.org");
  CHECK_INT(t.spec.mode, P3_TLS_STARTTLS);
  CHECK_INT(t.spec.port, 110);
  CHECK(t.password == NULL);
  target_deinit(&t);
  CHECK_INT(target_resolve("work@mail.example.org", path, &t, err, sizeof(err)), 0);
  CHECK_INT(t.spec.port, 995);
  target_deinit(&t);

  /* An IP literal in the account means no TLS name. */
  CHECK_INT(target_resolve("ip@127.0.0.1", path, &t, err, sizeof(err)), 0);
  CHECK_STR(t.spec.user, "ip");
  CHECK_STR(t.spec.tcp_host, "127.0.0.1");
  CHECK_STR(t.spec.tls_name, "");
  CHECK_INT(t.spec.port, 2110);
  target_deinit(&t);

  /* No `@' in the account: the machine gives the name, its prefix the
   * mode, and the user is the effective one. */
  CHECK_INT(target_resolve("bare", path, &t, err, sizeof(err)), 0);
  CHECK_STR(t.spec.tcp_host, "tunnel");
  CHECK_STR(t.spec.tls_name, "tunnel");
  CHECK_INT(t.spec.mode, P3_TLS_NONE);
  CHECK_INT(t.spec.port, 110);
  CHECK_STR(t.spec.user, effective_user());
  CHECK_STR(t.password, "pw");
  target_deinit(&t);

  /* Not an account: parsed as a spec, user defaults to the effective one. */
  CHECK_INT(target_resolve("pop.example.com", path, &t, err, sizeof(err)), 0);
  CHECK_STR(t.spec.tcp_host, "pop.example.com");
  CHECK_STR(t.spec.user, effective_user());
  CHECK(t.password == NULL);
  target_deinit(&t);
  CHECK_INT(target_resolve("you@pop.example.com", path, &t, err, sizeof(err)), 0);
  CHECK_STR(t.spec.user, "you");
  CHECK_STR(t.spec.tcp_host, "pop.example.com");
  target_deinit(&t);

  CHECK_INT(target_resolve("host:99999", path, &t, err, sizeof(err)), P3_ESPEC);
  CHECK(strstr(err, "port `99999' is out of range") != NULL);
  CHECK(t.password == NULL);

  CHECK_INT(target_resolve("nowhere", path, &t, err, sizeof(err)), P3_ENETRC);
  CHECK(strstr(err, ":5: account `nowhere' is on the `default' entry") != NULL);
  CHECK_INT(target_resolve("broken", path, &t, err, sizeof(err)), P3_ENETRC);
  snprintf(want, sizeof(want), "%s:6: machine of account `broken'", path);
  CHECK(strncmp(err, want, strlen(want)) == 0);
  CHECK_INT(target_resolve("we ird@h", path, &t, err, sizeof(err)), P3_ENETRC);
  CHECK(t.password == NULL);

  /* A missing netrc is fine; a bad one is not, even for a plain spec. */
  snprintf(missing, sizeof(missing), "%s/missing-netrc", tmpdir);
  CHECK_INT(target_resolve("me@pop.example.com", missing, &t, err, sizeof(err)), 0);
  CHECK_STR(t.spec.tcp_host, "pop.example.com");
  CHECK_STR(t.spec.user, "me");
  target_deinit(&t);
  path = write_file("open", "machine a password p\n", 0644);
  CHECK_INT(target_resolve("pop.example.com", path, &t, err, sizeof(err)), P3_ENETRCPERM);
  CHECK(strstr(err, "chmod 600") != NULL);
  path = write_file("garbled", "machine a password\n", 0600);
  CHECK_INT(target_resolve("pop.example.com", path, &t, err, sizeof(err)), P3_ENETRC);

  /* NULL path means $NETRC. */
  path = write_file("via-env", "machine localhost account env@example.net password e\n", 0600);
  setenv("NETRC", path, 1);
  CHECK_INT(target_resolve("ssl:env@example.net", NULL, &t, err, sizeof(err)), 0);
  CHECK_STR(t.spec.tls_name, "example.net");
  CHECK_STR(t.spec.user, "env");
  CHECK_STR(t.password, "e");
  target_deinit(&t);
  unsetenv("NETRC");
}

static void test_password_lookup(void) {
  struct p3_target t;
  char err[512], want[1024], missing[300];
  const char *path;

  path = write_file("pw",
                    "machine me@pop.example.com:995 password by-identity\n"
                    "machine pop.example.com login you password by-login\n"
                    "machine pop.example.com login nopw\n"
                    "machine me@[::1]:1110 password v6\n"
                    "machine other.example.com password no-login\n"
                    "default login dflt password by-default\n",
                    0600);

  CHECK_INT(target_resolve("me@pop.example.com", path, &t, err, sizeof(err)), 0);
  CHECK_INT(target_password(&t, path, err, sizeof(err)), 0);
  CHECK_STR(t.password, "by-identity");
  target_deinit(&t);

  /* The port is part of the identity, written even when it is the default. */
  CHECK_INT(target_resolve("tcp:me@pop.example.com", path, &t, err, sizeof(err)), 0);
  CHECK_INT(target_password(&t, path, err, sizeof(err)), P3_ENOPASS);
  snprintf(want, sizeof(want),
           "no password for me@pop.example.com:110 in %s (and no --password-command); add the "
           "line `machine me@pop.example.com:110 password ...' to %s (mode 0600)",
           path, path);
  CHECK_STR(err, want);
  CHECK(t.password == NULL);
  target_deinit(&t);

  CHECK_INT(target_resolve("you@pop.example.com:995", path, &t, err, sizeof(err)), 0);
  CHECK_INT(target_password(&t, path, err, sizeof(err)), 0);
  CHECK_STR(t.password, "by-login");
  target_deinit(&t);

  /* An entry without a password does not end the search. */
  CHECK_INT(target_resolve("dflt@pop.example.com", path, &t, err, sizeof(err)), 0);
  CHECK_INT(target_password(&t, path, err, sizeof(err)), 0);
  CHECK_STR(t.password, "by-default");
  target_deinit(&t);
  CHECK_INT(target_resolve("nopw@pop.example.com", path, &t, err, sizeof(err)), 0);
  CHECK_INT(target_password(&t, path, err, sizeof(err)), P3_ENOPASS);
  target_deinit(&t);

  CHECK_INT(target_resolve("any@other.example.com", path, &t, err, sizeof(err)), 0);
  CHECK_INT(target_password(&t, path, err, sizeof(err)), 0);
  CHECK_STR(t.password, "no-login");
  target_deinit(&t);

  CHECK_INT(target_resolve("tcp:me@[::1]:1110", path, &t, err, sizeof(err)), 0);
  CHECK_INT(target_password(&t, path, err, sizeof(err)), 0);
  CHECK_STR(t.password, "v6");
  target_deinit(&t);

  /* A default without a login applies to anyone. */
  path = write_file("pw2", "machine x password y\ndefault password open-sesame\n", 0600);
  CHECK_INT(target_resolve("someone@somewhere", path, &t, err, sizeof(err)), 0);
  CHECK_INT(target_password(&t, path, err, sizeof(err)), 0);
  CHECK_STR(t.password, "open-sesame");
  target_deinit(&t);

  /* A password with a line break would inject a command. */
  path = write_file("pw3", "machine h password \"a\nQUIT\"\n", 0600);
  CHECK_INT(target_resolve("u@h", path, &t, err, sizeof(err)), 0);
  CHECK_INT(target_password(&t, path, err, sizeof(err)), P3_ENETRC);
  CHECK(strstr(err, "QUIT") == NULL);
  CHECK(t.password == NULL);
  target_deinit(&t);

  snprintf(missing, sizeof(missing), "%s/missing-netrc", tmpdir);
  CHECK_INT(target_resolve("me@host", missing, &t, err, sizeof(err)), 0);
  CHECK_INT(target_password(&t, missing, err, sizeof(err)), P3_ENOPASS);
  snprintf(want, sizeof(want),
           "no password for me@host:995 in %s (and no --password-command); add the line "
           "`machine me@host:995 password ...' to %s (mode 0600)",
           missing, missing);
  CHECK_STR(err, want);

  path = write_file("pw4", "machine host password p\n", 0660);
  CHECK_INT(target_password(&t, path, err, sizeof(err)), P3_ENETRCPERM);
  CHECK(t.password == NULL);
  target_deinit(&t);
}

/* A netrc must be the reader's own: the file, and a symlink to it too. */
static void test_ownership(void) {
  struct netrc n;
  struct p3_target t;
  char err[512], want[900], link[400], fifo[400], home[400], dflt[500];
  const char *path;
  unsigned long me = (unsigned long)geteuid();

  /* A link of ours to a file of ours is fine (dotfiles in a repository). */
  path = write_file("own-target", "machine a password p\n", 0600);
  snprintf(link, sizeof(link), "%s/own-link", tmpdir);
  unlink(link);
  CHECK_INT(symlink(path, link), 0);
  CHECK_INT(netrc_load(link, &n, err, sizeof(err)), 0);
  CHECK_INT(n.count, 1);
  netrc_free(&n);
  /* ... and the permission check applies to what it points at. */
  CHECK_INT(chmod(path, 0644), 0);
  CHECK_INT(netrc_load(link, &n, err, sizeof(err)), P3_ENETRCPERM);
  CHECK(strstr(err, "(mode 0644)") != NULL);

  /* A dangling link of ours is a missing file, which is no netrc at all. */
  snprintf(link, sizeof(link), "%s/dangling-link", tmpdir);
  unlink(link);
  CHECK_INT(symlink("/nonexistent/netrc", link), 0);
  CHECK_INT(netrc_load(link, &n, err, sizeof(err)), -ENOENT);
  CHECK_INT(target_resolve("me@pop.example.com", link, &t, err, sizeof(err)), 0);
  target_deinit(&t);

  /* A FIFO, directly or through a link, is refused without blocking. */
  snprintf(fifo, sizeof(fifo), "%s/fifo", tmpdir);
  unlink(fifo);
  CHECK_INT(mkfifo(fifo, 0600), 0);
  CHECK_INT(netrc_load(fifo, &n, err, sizeof(err)), P3_ENETRC);
  CHECK(strstr(err, "not a regular file") != NULL);
  snprintf(link, sizeof(link), "%s/fifo-link", tmpdir);
  unlink(link);
  CHECK_INT(symlink(fifo, link), 0);
  CHECK_INT(netrc_load(link, &n, err, sizeof(err)), P3_ENETRC);

  /* No ~/.netrc at all is no netrc. */
  snprintf(home, sizeof(home), "%s/home", tmpdir);
  mkdir(home, 0700);
  {
    const char *h = getenv("HOME");
    char *saved_home = h ? strdup(h) : NULL;
    setenv("HOME", home, 1);
    unsetenv("NETRC");
    CHECK_INT(target_resolve("me@pop.example.com", NULL, &t, err, sizeof(err)), 0);
    target_deinit(&t);

    if (me == 0) {
      /* Root can make a file someone else owns: the default ~/.netrc too is
       * refused, naming the file and both uids. */
      snprintf(dflt, sizeof(dflt), "%s/.netrc", home);
      path = write_file("home/.netrc", "machine pop.example.com password p\n", 0600);
      CHECK_INT(chown(path, 65534, 65534), 0);
      CHECK_INT(target_resolve("me@pop.example.com", NULL, &t, err, sizeof(err)), P3_ENETRCPERM);
      snprintf(want, sizeof(want), "%s is owned by uid 65534, not by you (uid 0)", dflt);
      CHECK_STR(err, want);
      CHECK_INT(target_password(&t, NULL, err, sizeof(err)), P3_ENETRCPERM);
      target_deinit(&t);
      unlink(dflt);
    }
    if (saved_home != NULL)
      setenv("HOME", saved_home, 1);
    else
      unsetenv("HOME");
    free(saved_home);
  }

  if (me == 0) {
    /* Another user's file, directly ... */
    path = write_file("nobodys", "machine a password p\n", 0600);
    CHECK_INT(chown(path, 65534, 65534), 0);
    CHECK_INT(netrc_load(path, &n, err, sizeof(err)), P3_ENETRCPERM);
    snprintf(want, sizeof(want), "%s is owned by uid 65534, not by you (uid 0)", path);
    CHECK_STR(err, want);
    /* ... through a link of ours ... */
    snprintf(link, sizeof(link), "%s/link-to-nobodys", tmpdir);
    unlink(link);
    CHECK_INT(symlink(path, link), 0);
    CHECK_INT(netrc_load(link, &n, err, sizeof(err)), P3_ENETRCPERM);
    snprintf(want, sizeof(want), "%s links to a file owned by uid 65534, not by you (uid 0)", link);
    CHECK_STR(err, want);
    /* ... and another user's link to a file of ours. */
    path = write_file("mine", "machine a password p\n", 0600);
    snprintf(link, sizeof(link), "%s/nobodys-link", tmpdir);
    unlink(link);
    CHECK_INT(symlink(path, link), 0);
    CHECK_INT(lchown(link, 65534, 65534), 0);
    CHECK_INT(netrc_load(link, &n, err, sizeof(err)), P3_ENETRCPERM);
    snprintf(want, sizeof(want), "%s is a symbolic link owned by uid 65534, not by you (uid 0)",
             link);
    CHECK_STR(err, want);
    CHECK_INT(target_resolve("me@pop.example.com", link, &t, err, sizeof(err)), P3_ENETRCPERM);
    target_deinit(&t);
  } else {
    /* Unprivileged, a file root owns stands in for another user's. */
    struct stat st;
    if (stat("/etc/passwd", &st) == 0 && st.st_uid != me) {
      CHECK_INT(netrc_load("/etc/passwd", &n, err, sizeof(err)), P3_ENETRCPERM);
      snprintf(want, sizeof(want), "/etc/passwd is owned by uid %lu, not by you (uid %lu)",
               (unsigned long)st.st_uid, me);
      CHECK_STR(err, want);
      snprintf(link, sizeof(link), "%s/link-to-passwd", tmpdir);
      unlink(link);
      CHECK_INT(symlink("/etc/passwd", link), 0);
      CHECK_INT(netrc_load(link, &n, err, sizeof(err)), P3_ENETRCPERM);
      CHECK(strstr(err, "links to a file owned by uid") != NULL);
    }
    fprintf(stderr, "test_netrc: not root: files of another owner checked only with /etc/passwd\n");
  }
}
int main(void) {
  const char *base = getenv("TMPDIR");

  snprintf(tmpdir, sizeof(tmpdir), "%s/test_netrc.XXXXXX", base && *base ? base : "/tmp");
  if (mkdtemp(tmpdir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  test_parse_basic();
  test_parse_macdef_default();
  test_parse_errors();
  test_find();
  test_load();
  test_default_path();
  test_resolve();
  test_password_lookup();
  test_ownership();

  {
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
      fprintf(stderr, "could not remove %s\n", tmpdir);
  }
  return check_result("test_netrc");
}

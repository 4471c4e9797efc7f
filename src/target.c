#include "config.h"

#include "target.h"

#include "errors.h"
#include "netrc.h"

#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* The user name goes into `USER name\r\n': a space or a control character
 * would break (or inject into) the command. */
static int user_is_valid(const char *user) {
  const unsigned char *p;

  for (p = (const unsigned char *)user; *p != '\0'; p++)
    if (*p <= ' ' || *p == 0x7f)
      return 0;
  return user[0] != '\0' && strlen(user) < P3_USER_MAX;
}

/* Same reason for `PASS secret\r\n': a line break would end the command
 * early and send the rest as another one. */
static int password_is_valid(const char *pw) {
  return strpbrk(pw, "\r\n") == NULL;
}

static int default_user(char *buf, size_t buflen, char *errbuf, size_t errlen) {
  uid_t uid = geteuid();
  struct passwd *pw = getpwuid(uid);

  if (pw == NULL || pw->pw_name == NULL || pw->pw_name[0] == '\0') {
    p3_set_error(errbuf, errlen, "cannot find a user name for uid %lu; write user@ in the spec",
                 (unsigned long)uid);
    return P3_ESPEC;
  }
  if (strlen(pw->pw_name) >= buflen) {
    p3_set_error(errbuf, errlen, "the user name of uid %lu is too long", (unsigned long)uid);
    return P3_ESPEC;
  }
  strcpy(buf, pw->pw_name);
  return 0;
}

/* Loads the netrc in force into *n.  Returns 1 when loaded, 0 when there is
 * no file (or no home directory to look in), or an error with errbuf set;
 * errors other than the netrc's own become P3_ENETRC, as the caller's
 * contract promises.  path_r receives the path for later messages. */
static int load_netrc(const char *netrc_path, struct netrc *n, char *path_r, size_t pathlen,
                      char *errbuf, size_t errlen) {
  int r;

  if (netrc_path != NULL) {
    if ((size_t)snprintf(path_r, pathlen, "%s", netrc_path) >= pathlen) {
      p3_set_error(errbuf, errlen, "netrc path is too long");
      return P3_ENETRC;
    }
  } else {
    r = netrc_default_path(path_r, pathlen);
    if (r == -ENOENT) {
      snprintf(path_r, pathlen, "~/.netrc");
      return 0;
    }
    if (r < 0) {
      p3_set_error(errbuf, errlen, "netrc path is too long");
      return P3_ENETRC;
    }
  }
  r = netrc_load(path_r, n, errbuf, errlen);
  if (r == -ENOENT)
    return 0;
  /* A default ~/.netrc we may not even look for (HOME pointing into another
   * user's 0700 home, say) is as good as none; a file named explicitly is
   * still an error. */
  if (r == -EACCES && netrc_path == NULL) {
    if (errbuf != NULL && errlen > 0)
      errbuf[0] = '\0';
    return 0;
  }
  if (r == P3_ENETRCPERM || r == P3_ENETRC)
    return r;
  if (r < 0)
    return P3_ENETRC; /* errbuf already names the file and the cause */
  return 1;
}

/* Fills t from the netrc entry whose account is acct. */
static int resolve_account(const struct netrc_entry *e, const char *acct, enum p3_tls_mode mode,
                           int mode_given, const char *path, struct p3_target *t, char *errbuf,
                           size_t errlen) {
  struct p3_spec s, host;
  char reason[256];
  const char *at = strrchr(acct, '@');
  int r;

  if (e->machine == NULL) {
    p3_set_error(errbuf, errlen,
                 "%s:%d: account `%s' is on the `default' entry, which names no server", path,
                 e->line, acct);
    return P3_ENETRC;
  }
  r = spec_parse(e->machine, &s, reason, sizeof(reason));
  if (r < 0) {
    p3_set_error(errbuf, errlen, "%s:%d: machine of account `%s': %s", path, e->line, acct, reason);
    return P3_ENETRC;
  }
  /* The prefix written on the command line beats one in the machine. */
  if (mode_given) {
    s.mode = mode;
    s.mode_given = 1;
  }
  if (!s.port_given)
    s.port = spec_default_port(s.mode);

  /* The account names the server as the user knows it (me@pop.example.com)
   * while the machine may say where to reach it (localhost:1110, a tunnel):
   * the certificate must be for the former. */
  if (at != NULL && at[1] != '\0') {
    r = spec_parse(at + 1, &host, reason, sizeof(reason));
    if (r < 0) {
      p3_set_error(errbuf, errlen, "%s:%d: host part of account `%s': %s", path, e->line, acct,
                   reason);
      return P3_ENETRC;
    }
    memcpy(s.tls_name, host.tls_name, sizeof(s.tls_name));
  }

  if (e->login != NULL && e->login[0] != '\0') {
    if (strlen(e->login) >= sizeof(s.user) || !user_is_valid(e->login)) {
      p3_set_error(errbuf, errlen,
                   "%s:%d: the login of account `%s' is too long or contains a space "
                   "or control character",
                   path, e->line, acct);
      return P3_ENETRC;
    }
    strcpy(s.user, e->login);
  } else if (s.user[0] == '\0' && at != NULL && at != acct) {
    if ((size_t)(at - acct) >= sizeof(s.user)) {
      p3_set_error(errbuf, errlen, "%s:%d: the user part of account `%s' is too long", path,
                   e->line, acct);
      return P3_ENETRC;
    }
    memcpy(s.user, acct, (size_t)(at - acct));
    s.user[at - acct] = '\0';
  }
  if (s.user[0] != '\0' && !user_is_valid(s.user)) {
    p3_set_error(errbuf, errlen,
                 "%s:%d: the user of account `%s' contains a space or control character", path,
                 e->line, acct);
    return P3_ENETRC;
  }

  if (e->password != NULL) {
    if (!password_is_valid(e->password)) {
      p3_set_error(errbuf, errlen, "%s:%d: the password of account `%s' contains a line break",
                   path, e->line, acct);
      return P3_ENETRC;
    }
    t->password = strdup(e->password);
    if (t->password == NULL) {
      p3_set_error(errbuf, errlen, "out of memory");
      return -ENOMEM;
    }
  }
  t->spec = s;
  return 0;
}

int target_resolve(const char *text, const char *netrc_path, struct p3_target *t, char *errbuf,
                   size_t errlen) {
  struct netrc n = {NULL, 0};
  const struct netrc_entry *e = NULL;
  char path[PATH_MAX];
  enum p3_tls_mode mode;
  int mode_given, have, r;
  const char *rest;

  memset(t, 0, sizeof(*t));
  if (errbuf != NULL && errlen > 0)
    errbuf[0] = '\0';

  rest = spec_strip_mode(text, &mode, &mode_given);
  have = load_netrc(netrc_path, &n, path, sizeof(path), errbuf, errlen);
  if (have < 0)
    return have;
  if (have && rest[0] != '\0')
    e = netrc_find_account(&n, rest);
  if (e != NULL) {
    r = resolve_account(e, rest, mode, mode_given, path, t, errbuf, errlen);
  } else {
    r = spec_parse(text, &t->spec, errbuf, errlen);
  }
  netrc_free(&n);
  if (r == 0 && t->spec.user[0] == '\0')
    r = default_user(t->spec.user, sizeof(t->spec.user), errbuf, errlen);
  if (r < 0)
    target_deinit(t);
  return r;
}

/* The netrc rules, in order; an entry without a password does not stop the
 * search (it may only name a login). */
static const struct netrc_entry *find_password(const struct netrc *n, const struct p3_spec *s,
                                               const char *identity) {
  const struct netrc_entry *e;

  e = netrc_find_machine(n, identity, NULL);
  if (e != NULL && e->password != NULL)
    return e;
  e = netrc_find_machine(n, s->tcp_host, s->user);
  if (e != NULL && e->password != NULL)
    return e;
  /* A default entry for another login holds someone else's password. */
  e = netrc_find_default(n);
  if (e != NULL && e->password != NULL && (e->login == NULL || strcmp(e->login, s->user) == 0))
    return e;
  return NULL;
}

int target_password(struct p3_target *t, const char *netrc_path, char *errbuf, size_t errlen) {
  struct netrc n = {NULL, 0};
  const struct netrc_entry *e;
  char path[PATH_MAX];
  char id[P3_USER_MAX + P3_HOST_MAX + 16];
  int have, r;

  if (errbuf != NULL && errlen > 0)
    errbuf[0] = '\0';
  if (t->password != NULL)
    return 0;

  r = spec_identity(&t->spec, id, sizeof(id));
  if (r < 0) {
    p3_set_error(errbuf, errlen, "connection identity is too long");
    return P3_ENOPASS;
  }
  have = load_netrc(netrc_path, &n, path, sizeof(path), errbuf, errlen);
  if (have < 0)
    return have;
  e = have ? find_password(&n, &t->spec, id) : NULL;
  if (e == NULL) {
    /* Say where we looked and the line that would have answered. */
    p3_set_error(errbuf, errlen,
                 "no password for %s in %s (and no --password-command); add the line "
                 "`machine %s password ...' to %s (mode 0600)",
                 id, path, id, path);
    netrc_free(&n);
    return P3_ENOPASS;
  }
  if (!password_is_valid(e->password)) {
    p3_set_error(errbuf, errlen, "%s:%d: the password for %s contains a line break", path, e->line,
                 id);
    netrc_free(&n);
    return P3_ENETRC;
  }
  t->password = strdup(e->password);
  netrc_free(&n);
  if (t->password == NULL) {
    p3_set_error(errbuf, errlen, "out of memory");
    return -ENOMEM;
  }
  return 0;
}

void target_deinit(struct p3_target *t) {
  if (t->password != NULL) {
    explicit_bzero(t->password, strlen(t->password));
    free(t->password);
    t->password = NULL;
  }
}

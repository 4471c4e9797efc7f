/* NOTE: named cfg.h, not config.h: a src/config.h would shadow autoconf's
 * config.h for every file in src/.  Implemented by src/config.c. */
/* The daemon's configuration file (libconfig syntax), parsed once into an
 * immutable struct.  Only config.c includes <libconfig.h>.  A reload builds
 * a new struct and swaps it in only if it is valid. */
#ifndef P3_CFG_H
#define P3_CFG_H

#include <stddef.h>
#include <stdint.h>

#include "session.h"
#include "spec.h"
#include "tls.h"

struct cfg_account {
  char *name;          /* unique, [A-Za-z0-9._-]+ */
  int line;            /* line of the account's group in the file */
  char *server;        /* the connection spec text, as written */
  struct p3_spec spec; /* parsed (a netrc account name is resolved at run time:
                          spec_valid is 0 then) */
  int spec_valid;
  char *maildir;          /* absolute path */
  char *user;             /* the local user the run acts as; NULL: the daemon's own */
  unsigned long uid, gid; /* of `user' (resolved at load time) */
  unsigned interval;      /* seconds, >= 1 (the global default when not set) */
  char *password_command; /* NULL when not set */
  char *password;         /* plaintext `password`, NULL when not set */
  char *netrc;            /* NULL: $NETRC / ~/.netrc */
  char *ca_file;          /* NULL: system bundle */
  uint8_t pins[P3_TLS_MAX_PINS][32];
  int pin_count;    /* tls_fingerprint: a string or a list of strings */
  unsigned window;  /* 0: default */
  unsigned timeout; /* seconds; 0: default (120) */
  enum session_pipelining pipelining;
  enum session_auth auth; /* login method (session.h); the global `auth` by default */
  int enabled;            /* default true */
  int keep;               /* keep = true: never DELE, fetch only new UIDs */
  int keep_days;          /* -1: not set */
  int utf8;               /* utf8 = false: never send UTF8 (RFC 6856) */
  uint64_t max_size;      /* leave larger messages on the server; 0: no limit (the
                             global one when not set) */
  char *on_new_mail;      /* hook commands (the global ones when not set); */
  char *on_failure;       /* NULL or "": none */
  unsigned hook_timeout;  /* seconds (the global one when not set) */
};

struct cfg {
  char *path;            /* absolute path of the file */
  char *control_socket;  /* absolute; defaults filled in */
  char *state_dir;       /* absolute; defaults filled in */
  unsigned interval;     /* default 300 */
  unsigned max_parallel; /* default 4 */
  unsigned timeout;      /* default 120 */
  enum session_pipelining pipelining;
  enum session_auth auth; /* default SESSION_AUTH_AUTO */
  uint64_t max_size;      /* default 0: no limit */
  char *on_new_mail;      /* NULL when not set */
  char *on_failure;       /* NULL when not set */
  unsigned hook_timeout;  /* default 60 */
  struct cfg_account *accounts;
  size_t account_count;
};

/* Error list: each entry one line "FILE:LINE: what is wrong". */
struct cfg_errors {
  char **lines;
  size_t count;
};

/* Loads and validates path.  On success returns 0 and *cfg_r (caller frees
 * with cfg_free).  On failure returns P3_ECONFIG and fills errs with every
 * semantic error found (for a syntax error, the first one only, since
 * libconfig stops there); a file that cannot be read is one error
 * "FILE: cannot read: REASON".  check_maildirs: also report an enabled
 * account whose Maildir path exists but is not a directory.  Loading never
 * writes to the file system: a missing Maildir is created by its first run.
 * `user' is required when the process runs as root, and must be absent or
 * its own user otherwise. */
int cfg_load(const char *path, int check_maildirs, struct cfg **cfg_r, struct cfg_errors *errs);
/* As cfg_load, with the root rules (`user' required) when as_root is set
 * rather than when the process runs as root. */
int cfg_load_mode(const char *path, int check_maildirs, int as_root, struct cfg **cfg_r,
                  struct cfg_errors *errs);
void cfg_free(struct cfg *cfg);
void cfg_errors_free(struct cfg_errors *errs);

/* Default file: $sysconfdir/pop3sync/pop3sync.conf for root, else
 * $XDG_CONFIG_HOME/pop3sync/pop3sync.conf (~/.config/...). */
int cfg_default_path(char *buf, size_t len);
/* Default control socket: $RUNTIME_DIRECTORY/control.sock; root:
 * /run/pop3sync/control.sock; users: $XDG_RUNTIME_DIR/pop3sync/control.sock,
 * else /tmp/pop3sync-UID/control.sock. */
int cfg_default_socket(char *buf, size_t len);
/* Default state dir: $STATE_DIRECTORY; root: $localstatedir/lib/pop3sync;
 * users: $XDG_STATE_HOME/pop3sync (~/.local/state/pop3sync). */
int cfg_default_state_dir(char *buf, size_t len);

/* The account named name, or NULL. */
const struct cfg_account *cfg_find_account(const struct cfg *cfg, const char *name);

#endif

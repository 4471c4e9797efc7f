/* Turning what the user wrote (a SPEC or a netrc account name, options) into
 * a complete connection target with a password.  Runs before any event
 * loop: blocking is fine here (it reads netrc, runs password commands). */
#ifndef P3_TARGET_H
#define P3_TARGET_H

#include <stddef.h>

#include "spec.h"

struct p3_target {
  struct p3_spec spec;  /* user always filled (effective user by default) */
  char *password;       /* owned, NUL-terminated; NULL until resolved */
};

/* Resolves text (with optional mode prefix) into *t.  If the text after the
 * prefix equals the `account` of an entry in the netrc file, that entry wins:
 * its machine is parsed as the TCP connection spec, its login (else the
 * machine's user part, else the account's user part) is the user, the
 * account's host part becomes tls_name, and its password is used.
 * Otherwise text is parsed as a spec.  The user defaults to the effective
 * user's name.  netrc_path NULL means netrc_default_path().  A missing netrc
 * file is not an error here.  Does not look up the password.
 * Returns 0, P3_ESPEC, P3_ENETRC, P3_ENETRCPERM; errbuf gets one sentence. */
int target_resolve(const char *text, const char *netrc_path, struct p3_target *t,
                   char *errbuf, size_t errlen);

/* Fills t->password unless already set: runs password_command if non-NULL
 * (via /bin/sh -c; the first output line, without its newline; a non-zero
 * exit, a signal or an empty line is P3_EPWCMD), else looks in netrc for
 * `machine USER@TCP_HOST:PORT`, then `machine TCP_HOST login USER`, then
 * `default` (P3_ENOPASS when none has a password; P3_ENETRCPERM /
 * P3_ENETRC for a bad file).  errbuf gets one sentence naming the file or
 * the command. */
int target_password(struct p3_target *t, const char *netrc_path, const char *password_command,
                    char *errbuf, size_t errlen);

/* Runs cmd with /bin/sh -c and stores its first output line (malloc'd) in
 * *out_r.  Reads at most 64 KiB.  Returns 0 or P3_EPWCMD (errbuf says why). */
int password_from_command(const char *cmd, char **out_r, char *errbuf, size_t errlen);

/* Wipes and frees the password. */
void target_deinit(struct p3_target *t);

#endif

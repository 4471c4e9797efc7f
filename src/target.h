/* Turning what the user wrote (a SPEC or a netrc account name, options) into
 * a complete connection target with a password.  Reads small local files
 * (the netrc) and blocks while it does: call it before the loop runs or on
 * the thread pool.  Password commands are not run here: they are child
 * processes on the loop (pwcmd.h). */
#ifndef P3_TARGET_H
#define P3_TARGET_H

#include <stddef.h>

#include "spec.h"

struct p3_target {
  struct p3_spec spec; /* user always filled (effective user by default) */
  char *password;      /* owned, NUL-terminated; NULL until resolved */
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
int target_resolve(const char *text, const char *netrc_path, struct p3_target *t, char *errbuf,
                   size_t errlen);

/* Fills t->password unless already set, from the netrc: looks for
 * `machine USER@TCP_HOST:PORT`, then `machine TCP_HOST login USER`, then
 * `default` (P3_ENOPASS when none has a password; P3_ENETRCPERM for a file
 * that is not the reader's own or is open to others, P3_ENETRC for a bad
 * one).  errbuf gets one sentence naming the file.  A --password-command /
 * password_command is the caller's business (pwcmd_start); call this only
 * when there is none. */
int target_password(struct p3_target *t, const char *netrc_path, char *errbuf, size_t errlen);

/* Wipes and frees the password. */
void target_deinit(struct p3_target *t);

#endif

/* Privilege separation for a root daemon: the two things a worker does as
 * root before it becomes the account's user, and nothing else.
 *
 * 1. privsep_user_state_dir: STATE_DIR/USER, a directory that root creates
 *    once (0700, owned by USER) inside its own state_dir, without following
 *    a symlink; root never opens anything inside it.
 * 2. privsep_drop: initgroups, setgid, setuid, in that order, then a check
 *    that no uid, gid or supplementary group 0 remains. */
#ifndef P3_PRIVSEP_H
#define P3_PRIVSEP_H

#include <stddef.h>
#include <sys/types.h>

/* Makes sure state_dir/user exists, is a real directory owned by uid, and
 * is not writable by group or others.  state_dir must be root's and not
 * writable by group or others; a root-owned state_dir/user is handed over
 * only while it is empty.  An older daemon's state_dir/ACCOUNT.state is
 * moved into state_dir/user (account may be NULL).  Returns 0, or
 * P3_ESTATE / P3_EUNSAFE with errbuf naming the directory and what is
 * wrong. */
int privsep_user_state_dir(const char *state_dir, const char *user, uid_t uid, gid_t gid,
                           const char *account, char *errbuf, size_t errlen);

/* Becomes user (looked up again by name; its uid must equal uid) with its
 * primary and supplementary groups, and sets HOME, USER and LOGNAME from its
 * passwd entry.  Returns 0, or P3_EPRIV with errbuf saying why. */
int privsep_drop(const char *user, uid_t uid, char *errbuf, size_t errlen);

#endif

/* Where a mailbox's UID journal lives, and moving older journals there.
 *
 * One mailbox, one journal, one lock, whoever fetches it.  A journal is
 * named by the mailbox, DIR/USER@TCP_HOST:PORT.state (spec_identity), in
 * the local user's state directory DIR:
 *   - a root daemon's worker: STATE_DIR/USER (privsep.h);
 *   - a daemon run by a user: its state_dir (default $XDG_STATE_HOME/pop3sync);
 *   - `pop3 dl': LOCALSTATEDIR/lib/pop3sync/USER when that is a directory
 *     owned by the user (a root daemon made it), else $XDG_STATE_HOME/pop3sync
 *     (~/.local/state/pop3sync).
 * So the daemon's account and that user's `pop3 dl' of the same mailbox use
 * the same journal and the same lock (uidstate.h: PATH.lock).
 *
 * Journals under an older name (the daemon's ACCOUNT.state; a `pop3 dl'
 * journal in the personal directory once the shared one exists) are moved
 * to the new name on first use, atomically and only when the new one does
 * not exist; when both exist, both are kept and the caller says so.
 *
 * Every function here is blocking (small file-system calls): call it from
 * a worker process or before the loop runs. */
#ifndef P3_JOURNAL_PATH_H
#define P3_JOURNAL_PATH_H

#include <stddef.h>

#include "spec.h"

/* Writes DIR/IDENTITY.state into buf (spec->user must be filled).  Pure.
 * Returns 0, or -ENAMETOOLONG. */
int journal_path(const char *dir, const struct p3_spec *spec, char *buf, size_t len);

/* The personal state directory of the effective user: $XDG_STATE_HOME/pop3sync
 * (when absolute), else $HOME/.local/state/pop3sync.  Returns 0, -ENOENT
 * (neither is set) or -ENAMETOOLONG.  Does not touch the file system. */
int journal_personal_dir(char *buf, size_t len);

/* The directory `pop3 dl' keeps journals in for the effective user:
 * SHARED_ROOT/USER when it is a directory (not a symbolic link) owned by the
 * effective uid, else journal_personal_dir().  shared_root NULL means
 * LOCALSTATEDIR/lib/pop3sync.  *shared_r is 1 for the former.  Returns 0,
 * -ENOENT or -ENAMETOOLONG. */
int journal_user_dir(const char *shared_root, char *buf, size_t len, int *shared_r);

/* 1 when a and b name the same existing directory (device and inode). */
int journal_same_dir(const char *a, const char *b);

enum journal_migration {
  JOURNAL_NONE = 0,  /* no old journal (or it is the new one) */
  JOURNAL_MOVED = 1, /* old_path is now new_path; msg says so */
  JOURNAL_KEPT = 2   /* old_path left as is (new_path exists, or it is not a
                        plain file of ours); msg is the warning sentence */
};

/* Moves the journal old_path to new_path when old_path exists and new_path
 * does not.  Holds old_path's lock (OLD.lock, as uidstate.h takes it) while
 * it does so and removes that lock file afterwards; the rename never
 * replaces a file (RENAME_NOREPLACE, or link + unlink); across file systems
 * the journal is copied into new_path's directory, fsynced, linked into
 * place, and only then removed.  Directories are fsynced.
 * Returns enum journal_migration with a sentence in msg, or an error: P3_ELOCKED
 * ("OLD is locked by pid 1234 (pop3syncd)": a run is using it) or a negative
 * errno, msg naming the file. */
int journal_migrate(const char *old_path, const char *new_path, char *msg, size_t msglen);

#endif

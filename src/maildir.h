/* Maildir delivery as an asynchronous sink on a libuv loop, and the few
 * blocking look-ups a delivery run needs in a Maildir (owner check, tmp/
 * cleanup, finding delivered files for the journal).
 *
 * maildir_open -> maildir_write ... -> maildir_commit (or maildir_abort).
 * All file work (open, write, fsync, close, rename, unlink) runs on libuv's
 * thread pool; the loop thread only queues.  Commit order for a message:
 * every write done -> fsync(file) -> close -> rename(tmp/X, new/X,S=size);
 * only then does the done callback report success.  maildir_barrier
 * fsyncs new/ so that the renames themselves are durable.
 *
 * The Maildir's path is resolved once, by maildir_init, and only as the
 * user who runs us (a symlink there is the user's own choice); tmp/, new/
 * and cur/ are opened O_NOFOLLOW below it and every later file operation
 * is relative to those directory fds (openat, renameat2, unlinkat,
 * fstatat), so no symlink planted in the Maildir is ever followed and a
 * directory swapped in after init is never written to.  Nothing here
 * chowns: a root process never delivers into a user's Maildir
 * (maildir_check_owner). */
#ifndef P3_MAILDIR_H
#define P3_MAILDIR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>
#include <uv.h>

/* The subdirectories, for maildir_dirfd. */
enum maildir_sub { MAILDIR_TMP, MAILDIR_NEW, MAILDIR_CUR };

struct maildir {
  uv_loop_t *loop;
  char *path;            /* owned; for messages only, never opened again */
  char hostname[128];    /* sanitized for file names (/ -> \057, : -> \072) */
  unsigned long counter; /* per-process delivery counter (shared by all maildirs) */
  size_t queued_bytes;   /* body bytes accepted by maildir_write and not yet written */
  unsigned active;       /* deliveries and barriers not yet finished */
  int fds[3];            /* owned: tmp/, new/, cur/ (O_DIRECTORY), by enum maildir_sub */
  /* Memory the queue holds: the allocated capacity of every queued chunk
   * plus each unfinished delivery's own struct.  This, not queued_bytes,
   * is what a caller's high-water mark must bound (a 4 KiB message may sit
   * in a chunk of twice its size; 1,000 small deliveries waiting for their
   * fsync hold their structs).  Spare chunks kept for reuse are not
   * counted: at most MAILDIR_SPARE_MAX bytes of them. */
  size_t mem_bytes;
  void *spare;          /* owned: a list of freed 64 KiB chunks kept for reuse */
  unsigned spare_count; /* chunks on it */
};

/* The most memory the spare-chunk list keeps (see mem_bytes). */
#define MAILDIR_SPARE_MAX (512u * 1024)

struct maildir_delivery; /* opaque; owned by the maildir module until done_cb */

/* done_cb gets err == 0 and the final base name (in new/) on success, or a
 * negative error; the delivery is freed right after it returns. */
typedef void (*maildir_done_cb)(struct maildir_delivery *d, int err, const char *new_name,
                                uint64_t bytes, void *data);
typedef void (*maildir_barrier_cb)(int err, void *data);

/* Creates path (mkdir -p, missing components 0700, as the current user)
 * and its tmp/, new/, cur/ (0700) if missing, opens path once (following
 * a symlink there) and tmp/, new/, cur/ below it with O_NOFOLLOW, checks
 * that they are writable, and fills *md.  Blocking (run it before the
 * session, or on the thread pool).  Returns 0 or a negative errno with
 * errbuf naming the directory: UV_ELOOP for a tmp/, new/ or cur/ that is a
 * symbolic link ("MAILDIR/new is a symbolic link; refusing to follow
 * it"), UV_ENOTDIR for one that is not a directory.  On failure nothing
 * is left open and *md need not be deinitialised. */
int maildir_init(struct maildir *md, uv_loop_t *loop, const char *path, char *errbuf,
                 size_t errlen);
/* Closes the directory fds and frees the path. */
void maildir_deinit(struct maildir *md);

/* The fd of tmp/, new/ or cur/ (owned by md: do not close it), for
 * callers that look at files relative to it (fstatat AT_SYMLINK_NOFOLLOW,
 * fdopendir of a dup, fstatvfs). */
int maildir_dirfd(const struct maildir *md, enum maildir_sub sub);

/* Root refuses to act in a Maildir that a user controls: when the
 * effective uid is 0 and path (or, while it does not exist, its nearest
 * existing parent) or any existing directory above it belongs to another
 * user, returns P3_EROOTUSER with errbuf "PATH belongs to alice; run pop3
 * as alice".  Returns 0 otherwise (always, for a non-root caller).
 * Blocking: stat()s each component. */
int maildir_check_owner(const char *path, char *errbuf, size_t errlen);

/* Removes debris from tmp/: a regular file (fstatat AT_SYMLINK_NOFOLLOW)
 * whose name is exactly one of ours ("SECONDS.M<usec>P<pid>Q<counter>.<host>",
 * see maildir_unique_name) and that is older than max_age seconds at now,
 * or was left by a pid that no longer exists on this host (our host
 * name).  Anything else in tmp/ is left alone.  removed(arg, name), when
 * not NULL, is told each name removed.  Blocking (thread pool).  Returns
 * the number removed, or a negative errno when tmp/ cannot be read. */
int maildir_clean_tmp(struct maildir *md, time_t now, time_t max_age,
                      void (*removed)(void *arg, const char *name), void *arg);

/* Looks for files by base name in one Maildir directory (new/ or cur/):
 * the journal's check of deliveries that a power loss may have undone.
 * For each entry of dirfd, its name up to the first ':' (the info part) is
 * offered to want(arg, base, len); when that returns non-zero and the
 * entry is a regular file (fstatat AT_SYMLINK_NOFOLLOW relative to dirfd:
 * a symlink never counts, no path is followed), found(arg, base, len) is
 * called.  base is not NUL-terminated at len and lives only during the
 * call.  dirfd is borrowed (e.g. maildir_dirfd): it is read through a dup,
 * rewound first, and left open; -1 stands for a missing directory, where
 * nothing is found.  Blocking (thread pool).  Returns 0, or a negative
 * errno when the directory cannot be read. */
int maildir_find_files(int dirfd, int (*want)(void *arg, const char *base, size_t len),
                       void (*found)(void *arg, const char *base, size_t len), void *arg);

/* 1 when name is exactly one of our unique names, with its pid in *pid_r
 * and its host part in *host_r (pointing into name); 0 otherwise. */
int maildir_parse_name(const char *name, long *pid_r, const char **host_r);

/* Makes a unique base name "SECONDS.M<usec>P<pid>Q<counter>.<host>" into buf. */
int maildir_unique_name(struct maildir *md, char *buf, size_t buflen);

/* Starts a delivery: a new file in tmp/ (openat O_CREAT|O_EXCL|O_NOFOLLOW,
 * 0600).  Data may be
 * written at once; it is queued until the open completes.  Returns 0 or
 * -ENOMEM. */
int maildir_open(struct maildir *md, maildir_done_cb done_cb, void *data,
                 struct maildir_delivery **d_r);

/* The message's expected size in octets (its LIST size: an upper bound of
 * what will be written, as the CRLFs and dot-stuffing go), given before the
 * first maildir_write: the first chunk is sized to hold it (up to 64 KiB),
 * so a small message takes one allocation of the right size and a large one
 * starts with big chunks.  A wrong hint costs only memory or one more
 * chunk.  0: no hint. */
void maildir_size_hint(struct maildir_delivery *d, uint64_t octets);

/* Queues len bytes (copied into owned chunks).  Errors are reported later via
 * done_cb; after an error further writes are dropped.  Returns 0 or -ENOMEM. */
int maildir_write(struct maildir_delivery *d, const char *buf, size_t len);

/* No more data: finish writes, fsync, close, rename into new/, then done_cb. */
void maildir_commit(struct maildir_delivery *d);

/* Called on a thread-pool worker after the file is fsynced and closed and
 * right before the rename, with the final name in new/; a negative return
 * cancels the rename (the tmp file is removed and done_cb gets the error).
 * It must be thread-safe: it may not touch loop-thread state. */
typedef int (*maildir_prerename_fn)(void *arg, const char *new_name);

/* As maildir_commit, running fn(arg, new_name) right before the rename. */
void maildir_commit_with(struct maildir_delivery *d, maildir_prerename_fn fn, void *arg);

/* Discards the delivery: close and unlink the tmp file, then done_cb with
 * UV_ECANCELED (or with the earlier write error, if one already happened).
 * After maildir_commit or maildir_abort, a further commit/abort is ignored
 * and a write returns UV_EINVAL until done_cb; after done_cb d is freed.
 * done_cb never runs from inside a maildir_* call, only from the loop. */
void maildir_abort(struct maildir_delivery *d);

/* The delivery's first error so far (0 if none): lets the caller stop
 * feeding a message early, e.g. on ENOSPC.  done_cb still reports it. */
int maildir_delivery_error(const struct maildir_delivery *d);

/* fsyncs new/ (the fd opened by maildir_init; after every commit reported
 * so far).  cb runs on the loop. */
int maildir_barrier(struct maildir *md, maildir_barrier_cb cb, void *data);

#endif

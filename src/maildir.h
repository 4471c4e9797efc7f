/* Maildir delivery as an asynchronous sink on a libuv loop.
 *
 * maildir_open -> maildir_write ... -> maildir_commit (or maildir_abort).
 * All file work (open, write, fsync, close, rename, unlink) runs on libuv's
 * thread pool; the loop thread only queues.  Commit order for a message:
 * every write done -> fsync(file) -> close -> rename(tmp/X, new/X,S=size);
 * only then does the done callback report success.  maildir_barrier
 * fsyncs new/ so that the renames themselves are durable. */
#ifndef P3_MAILDIR_H
#define P3_MAILDIR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

struct maildir {
  uv_loop_t *loop;
  char *path;            /* owned */
  char hostname[128];    /* sanitized for file names (/ -> \057, : -> \072) */
  unsigned long counter; /* per-process delivery counter (shared by all maildirs) */
  size_t queued_bytes;   /* body bytes accepted by maildir_write and not yet written */
  unsigned active;       /* deliveries and barriers not yet finished */
  int chown_to_owner;    /* root delivering for a user: chown what we create */
  uid_t owner_uid;
  gid_t owner_gid;
};

struct maildir_delivery; /* opaque; owned by the maildir module until done_cb */

/* done_cb gets err == 0 and the final base name (in new/) on success, or a
 * negative error; the delivery is freed right after it returns. */
typedef void (*maildir_done_cb)(struct maildir_delivery *d, int err, const char *new_name,
                                uint64_t bytes, void *data);
typedef void (*maildir_barrier_cb)(int err, void *data);

/* Creates path and its tmp/, new/, cur/ (mode 0700) if missing, then fills
 * *md.  Blocking (run it before the session, or on the thread pool).
 * Returns 0 or a negative errno (errbuf names the directory). */
int maildir_init(struct maildir *md, uv_loop_t *loop, const char *path, char *errbuf,
                 size_t errlen);
/* As maildir_init, but every directory and file it creates is chowned to
 * uid:gid (root delivering into a user's Maildir never leaves root-owned
 * files there).  uid == (uid_t)-1 means no chown. */
int maildir_init_as(struct maildir *md, uv_loop_t *loop, const char *path, uid_t uid, gid_t gid,
                    char *errbuf, size_t errlen);
void maildir_deinit(struct maildir *md);

/* Makes a unique base name "SECONDS.M<usec>P<pid>Q<counter>.<host>" into buf. */
int maildir_unique_name(struct maildir *md, char *buf, size_t buflen);

/* Starts a delivery: a new file in tmp/ (O_CREAT|O_EXCL, 0600).  Data may be
 * written at once; it is queued until the open completes.  Returns 0 or
 * -ENOMEM. */
int maildir_open(struct maildir *md, maildir_done_cb done_cb, void *data,
                 struct maildir_delivery **d_r);

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

/* fsyncs new/ (after every commit reported so far).  cb runs on the loop. */
int maildir_barrier(struct maildir *md, maildir_barrier_cb cb, void *data);

#endif

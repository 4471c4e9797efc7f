/* Per-account UID state: a crash-safe journal of the messages already
 * delivered, so that no message is delivered twice whatever breaks.
 *
 * File format (text, one record per line, each line ending in a CRC so a
 * torn or corrupt line is detected and ignored — when in doubt, deliver):
 *
 *   pop3sync-state 1                                   header (first line)
 *   D <server> <uid> <size> <basename> <unixtime> *<crc32hex>   delivered
 *   A <server> <uid> <size> <attempts> <unixtime> <error...> *<crc>  failed attempts
 *   L <server> <unixtime> *<crc>      next session for this server is lock-step
 *   B <unixtime> *<crc>               barrier: everything above is durable
 *
 * <server> is "user@host:port" (spec_identity), <uid> the UIDL (printable
 * ASCII, no spaces), <basename> the delivered file's name in new/ (without
 * any ":2,..." info part).  Later lines override earlier ones for the same
 * (server, uid).  D records written after the last B count only if their
 * file is still in new/ or cur/ (a power loss may have undone the rename);
 * older D records always count (the user may have read and deleted the
 * file).  The whole file is rewritten (temp file + fsync + rename + fsync of
 * the directory) by uidstate_compact.
 *
 * Blocking functions (open, check, compact) must run on the thread pool in
 * the daemon; uidstate_append_* only format a line and update memory: the
 * caller writes the line with uv_fs_write to uidstate_fd (O_APPEND). */
#ifndef P3_UIDSTATE_H
#define P3_UIDSTATE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct uidstate;

struct uidstate_rec {
  const char *server;
  const char *uid;
  uint64_t size;
  const char *name;      /* delivered file name, "" for attempt-only records */
  time_t delivered;      /* 0 when not delivered */
  unsigned attempts;     /* failed attempts so far */
  const char *last_error;/* "" when none */
};

/* Opens (creating mode 0600, parent directories 0700) and locks path with
 * flock(LOCK_EX|LOCK_NB), writes "pid PID (WHO)" into path.lock so that a
 * second run can say who holds it, and reads the journal.  who is e.g.
 * "pop3 dl" or "pop3syncd".
 * Returns 0 and *st_r; P3_ELOCKED when another process holds the lock
 * (errbuf: "PATH is locked by pid 1234 (pop3syncd)"); a negative errno
 * with errbuf naming the file; never fails because of corrupt content:
 * corrupt or torn lines are skipped and counted (uidstate_corrupt_lines). */
int uidstate_open(const char *path, const char *who, struct uidstate **st_r, char *errbuf,
                  size_t errlen);

/* Drops D records written after the last barrier whose file is found in
 * neither MAILDIR/new nor MAILDIR/cur (matching the name up to a ':').
 * Blocking. Returns how many were dropped, or a negative errno. */
int uidstate_check_files(struct uidstate *st, const char *maildir);

/* Releases the lock and frees everything (does not write). */
void uidstate_close(struct uidstate *st);

/* The journal's fd (O_APPEND), for uv_fs_write / fsync. */
int uidstate_fd(const struct uidstate *st);
const char *uidstate_path(const struct uidstate *st);

/* Lines skipped as corrupt or torn when the file was read. */
size_t uidstate_corrupt_lines(const struct uidstate *st);

/* The record for (server, uid), or NULL. */
const struct uidstate_rec *uidstate_find(const struct uidstate *st, const char *server,
                                         const char *uid);

/* 1 when the last L record for server asks for lock-step. */
int uidstate_lockstep(const struct uidstate *st, const char *server);

/* Formatters: update memory and return a malloc'd line (with newline) in
 * *line_r for the caller to append; *len_r its length.  Return 0 or -ENOMEM
 * (or -EINVAL for a uid/server/name with spaces or control characters). */
int uidstate_append_delivered(struct uidstate *st, const char *server, const char *uid,
                              uint64_t size, const char *name, time_t when, char **line_r,
                              size_t *len_r);
int uidstate_append_attempt(struct uidstate *st, const char *server, const char *uid,
                            uint64_t size, const char *error, time_t when, char **line_r,
                            size_t *len_r);
int uidstate_append_lockstep(struct uidstate *st, const char *server, int on, time_t when,
                             char **line_r, size_t *len_r);
int uidstate_append_barrier(struct uidstate *st, time_t when, char **line_r, size_t *len_r);

/* Iterates over every record (any order); stops when cb returns non-zero. */
void uidstate_foreach(const struct uidstate *st, int (*cb)(void *data, const struct uidstate_rec *r),
                      void *data);

/* Rewrites the journal keeping only records for which keep(data, rec)
 * returns 1 (all when keep is NULL), plus the lock-step flags, ending with a
 * B line: temp file, fsync, rename over path, fsync of the directory; the
 * fd is reopened on the new file.  Blocking.  Returns 0 or a negative errno
 * (the old journal stays intact on failure). */
int uidstate_compact(struct uidstate *st, int (*keep)(void *data, const struct uidstate_rec *r),
                     void *data);

/* Parses journal text (for the fuzzer and tests): fills st (created empty
 * with uidstate_new_memory) as uidstate_open would. */
struct uidstate *uidstate_new_memory(void);
int uidstate_parse(struct uidstate *st, const char *buf, size_t len);

#endif

/* Per-account UID state: a crash-safe journal of the messages already
 * delivered, so that no message is delivered twice whatever breaks.  This
 * is its file store (open, lock, read, compact, check against the
 * Maildir); the pure model (codec, index, replay rules, what compaction
 * keeps) is uidmodel.h's, and this API wraps it for the engine.
 *
 * File format (text, one record per line, fields separated by single
 * spaces, each line ending in " *" and the CRC-32 (IEEE, as zlib's crc32)
 * of everything before the " *" in 8 lowercase hex digits, so a torn or
 * corrupt line is detected and ignored — when in doubt, deliver):
 *
 *   pop3sync-state 1                                         header (first line, no CRC)
 *   D <server> <uid> <size> <basename> <unixtime>[ <digest>] *<crc>  delivered
 *   A <server> <uid> <size> <attempts> <unixtime>[ <error...>] *<crc>  failed attempts
 *   L <server> on|off <unixtime> *<crc>   next session for this server is (not) lock-step
 *   F <server> <uid> <unixtime> *<crc>    forget the last D (its session desynchronised)
 *   R <server> <uid> <unixtime> *<crc>    retire: drop the record entirely
 *   B <unixtime> *<crc>                   barrier: every D above is durable
 *
 * <server> is "user@host:port" (spec_identity; 1-600 bytes, no spaces or
 * control characters), <uid> the UIDL (1-512 characters 0x21-0x7E: RFC 1939
 * says 70, servers exceed it), <digest> the message's header digest
 * (hdrdigest.h) in 64 lowercase hex digits (lines written before it existed
 * have none, and are still read),
 * <basename> the delivered file's name in new/ (without any ":2,..." info
 * part; no '/' or ':'), <size> and <attempts> decimal, <unixtime> decimal
 * seconds.  <attempts> is the new total (at least 1), not an increment.
 * <error> is the rest of the line up to the " *" (it may hold spaces;
 * control characters become '?', at most 300 bytes).  A line is at most
 * 4096 bytes.
 *
 * Later lines override earlier ones for the same (server, uid): a D sets
 * the delivered state and resets attempts; an A sets attempts, error and
 * size but keeps the delivered state (a UID that came back with other
 * content).  An R removes the record of (server, uid), D, attempts and all:
 * its deletion on the server was committed (DELE +OK, then QUIT +OK), so a
 * later message with the same UID is new (see plan.h).  D records written
 * after the last B count only if their file
 * is still in new/ or cur/ (a power loss may have undone the rename);
 * older D records always count (the user may have read and deleted the
 * file).  A malformed line, a line whose CRC does not match and a last
 * line without its newline are skipped and counted; a first line that is
 * not the header is counted too (and still read as a record).  The whole
 * file is rewritten (temp file + fsync + rename + fsync of the directory)
 * by uidstate_compact.
 *
 * Blocking functions (open, check, compact) must run on the thread pool in
 * the daemon; uidstate_append_* only format a line and update memory: the
 * caller writes the line with uv_fs_write to uidstate_fd (O_APPEND), and
 * if that write fails must stop using the state (memory already counts
 * the line).  A B line may be appended only after the Maildir barrier
 * (fsync of the files and of new/) has succeeded. */
#ifndef P3_UIDSTATE_H
#define P3_UIDSTATE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "uidmodel.h"

/* SHA-256, as hdrdigest.h's HDRDIGEST_LEN. */
#define UIDSTATE_DIGEST_LEN UIDMODEL_DIGEST_LEN
/* The longest UID a record may hold. */
#define UIDSTATE_UID_MAX UIDMODEL_UID_MAX

struct uidstate;

/* struct uidstate_rec (one record as callers see it) is in uidmodel.h. */

/* Opens (creating mode 0600, parent directories 0700) and locks path with
 * flock(LOCK_EX|LOCK_NB), writes "pid PID (WHO)" into path.lock so that a
 * second run can say who holds it, and reads the journal.  who is e.g.
 * "pop3 dl" or "pop3syncd".
 * path's directory is opened once and must belong to the effective uid
 * and not be writable by group or others; the state and lock files are
 * opened relative to it with O_NOFOLLOW and must be regular files with
 * one link that belong to the effective uid.  Anything else is refused
 * with P3_EUNSAFE and errbuf naming it ("PATH is a symbolic link;
 * refusing to follow it", "refusing PATH: it has 2 hard links", ...).
 * Returns 0 and *st_r; P3_ELOCKED when another process holds the lock
 * (errbuf: "PATH is locked by pid 1234 (pop3syncd)"); P3_EUNSAFE; a
 * negative errno with errbuf naming the file; never fails because of
 * corrupt content: corrupt or torn lines are skipped and counted
 * (uidstate_corrupt_lines). */
int uidstate_open(const char *path, const char *who, struct uidstate **st_r, char *errbuf,
                  size_t errlen);

/* Drops D records written after the last barrier whose file is found in
 * neither new/ nor cur/ (the directory fds newfd and curfd, borrowed, e.g.
 * from maildir_dirfd; matching the name up to a ':'; only a regular file
 * counts, by fstatat AT_SYMLINK_NOFOLLOW); a dropped D that had overridden
 * an older durable D for the same UID gives way to that one.  An fd of -1
 * is a missing directory and counts as empty.  When anything
 * was dropped the journal is rewritten as by uidstate_compact (else a later
 * B line would make the dropped lines count again).  Blocking.  Returns
 * how many were dropped, or a negative errno (memory then unchanged unless
 * only the final directory fsync failed). */
int uidstate_check_files(struct uidstate *st, int newfd, int curfd);

/* Releases the lock and frees everything (does not write). */
void uidstate_close(struct uidstate *st);

/* The journal's fd (O_APPEND), for uv_fs_write / fsync. */
int uidstate_fd(const struct uidstate *st);
const char *uidstate_path(const struct uidstate *st);
/* The journal's directory (checked: ours, not group/other-writable) and its
 * file name within it, for files kept beside the journal under its lock
 * (srvmem.h).  -1 and "" for a memory state. */
int uidstate_dir_fd(const struct uidstate *st);
const char *uidstate_base(const struct uidstate *st);

/* Lines skipped as corrupt or torn when the file was read. */
size_t uidstate_corrupt_lines(const struct uidstate *st);

/* The record for (server, uid), or NULL. */
const struct uidstate_rec *uidstate_find(const struct uidstate *st, const char *server,
                                         const char *uid);

/* 1 when the last L record for server asks for lock-step. */
int uidstate_lockstep(const struct uidstate *st, const char *server);

/* Formatters: update memory and return a malloc'd line (with newline) in
 * *line_r for the caller to append; *len_r its length.  Return 0 or -ENOMEM
 * (or -EINVAL for a uid/server/name with spaces or control characters).
 * digest: UIDSTATE_DIGEST_LEN bytes (borrowed), or NULL for none. */
int uidstate_append_delivered(struct uidstate *st, const char *server, const char *uid,
                              uint64_t size, const char *name, time_t when, const uint8_t *digest,
                              char **line_r, size_t *len_r);
int uidstate_append_attempt(struct uidstate *st, const char *server, const char *uid, uint64_t size,
                            const char *error, time_t when, char **line_r, size_t *len_r);
int uidstate_append_lockstep(struct uidstate *st, const char *server, int on, time_t when,
                             char **line_r, size_t *len_r);
int uidstate_append_barrier(struct uidstate *st, time_t when, char **line_r, size_t *len_r);
/* "F <server> <uid> <unixtime>": forget the last D of (server, uid) — its
 * session desynchronised, so the file may hold another message.  A pending D
 * that overrode a durable one falls back to it. */
int uidstate_append_forget(struct uidstate *st, const char *server, const char *uid, time_t when,
                           char **line_r, size_t *len_r);
/* "R <server> <uid> <unixtime>": retire the record of (server, uid): its
 * deletion was committed on the server, or its UID turned out not to name
 * one message.  Removes it from memory at once (a no-op when there is
 * none). */
int uidstate_append_retire(struct uidstate *st, const char *server, const char *uid, time_t when,
                           char **line_r, size_t *len_r);

/* The delivered message of (server, uid) is listed with another size but is
 * the same message (its header digest agrees, see plan.h): records the new
 * size in memory only; the next uidstate_compact writes it (a run that ends
 * before that checks again next time).  Returns 0, or -ENOENT when there is
 * no delivered record. */
int uidstate_set_size(struct uidstate *st, const char *server, const char *uid, uint64_t size);

/* Formats the D line for a delivery without touching any state: a pure,
 * thread-safe function (for a worker thread that appends it right before the
 * rename into new/).  Returns the length written into buf (with its
 * newline), or -EINVAL / -ENOSPC. */
int uidstate_format_delivered(const char *server, const char *uid, uint64_t size, const char *name,
                              time_t when, const uint8_t *digest, char *buf, size_t buflen);

/* Iterates over every record (any order); stops when cb returns non-zero. */
void uidstate_foreach(const struct uidstate *st,
                      int (*cb)(void *data, const struct uidstate_rec *r), void *data);

/* Rewrites the journal keeping only records for which keep(data, rec)
 * returns non-zero (all when keep is NULL), plus the lock-step flags, into
 * PATH.tmp (created afresh, O_EXCL|O_NOFOLLOW, relative to the directory
 * fd): header, the durable D lines, L lines, a B line, then the D
 * lines still pending (so they stay pending) and the A lines; fsync,
 * renameat over path, fsync of the directory; the fd is then the new file's
 * (opened O_APPEND before the rename).  Records not kept are removed from
 * memory too.  keep must not change st.  Blocking.  Returns 0 or a
 * negative errno (the old journal, the fd and memory stay intact on
 * failure before the rename; if only the directory fsync fails, the new
 * file is in use and the error is returned). */
int uidstate_compact(struct uidstate *st, int (*keep)(void *data, const struct uidstate_rec *r),
                     void *data);

/* Parses journal text (for the fuzzer and tests): fills st (created empty
 * with uidstate_new_memory) as uidstate_open would; returns 0 or -ENOMEM.
 * A memory state has no file: uidstate_fd is -1, uidstate_path "", and
 * uidstate_compact returns -EINVAL; free it with uidstate_close. */
struct uidstate *uidstate_new_memory(void);
int uidstate_parse(struct uidstate *st, const char *buf, size_t len);

#endif

/* The UID journal as a pure model: the record codec (one line, with its
 * CRC), the in-memory index of records, the replay rules that apply a
 * record to it, and compaction (which records survive, and the lines that
 * say so).  No I/O at all: uidstate.c reads and writes the file, holds
 * the lock and checks the Maildir; this module only turns bytes into
 * state and state into bytes, so it can be unit-tested and fuzzed.
 *
 * The file format and the replay rules are described in uidstate.h. */
#ifndef P3_UIDMODEL_H
#define P3_UIDMODEL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* SHA-256, as hdrdigest.h's HDRDIGEST_LEN. */
#define UIDMODEL_DIGEST_LEN 32
/* The longest UID a record may hold. */
#define UIDMODEL_UID_MAX 512
/* The first line of a journal (no CRC). */
#define UIDMODEL_HEADER "pop3sync-state 1"
/* No line, with its newline, is longer; a buffer this size holds any
 * formatted line and its NUL. */
#define UIDMODEL_LINE_CAP 4096

/* One record as callers see it (named for uidstate.h's API, whose type it
 * is).  Its pointers stay valid until the record next changes. */
struct uidstate_rec {
  const char *server;
  const char *uid;
  uint64_t size;           /* the last D's or A's LIST size */
  const char *name;        /* delivered file name, "" for attempt-only records */
  time_t delivered;        /* 0 when not delivered */
  uint64_t delivered_size; /* the LIST size the delivery was recorded with (0: none) */
  const uint8_t *digest;   /* the delivery's header digest (UIDMODEL_DIGEST_LEN
                              bytes), NULL when not delivered or recorded without */
  unsigned attempts;       /* failed attempts so far */
  const char *last_error;  /* "" when none */
};

/* ---- codec: one line */

/* One journal line, decoded.  Strings are not NUL-terminated: they point
 * into the parsed line (or the caller's strings, for formatting). */
struct uidmodel_line {
  char type; /* 'D', 'A', 'L', 'F', 'R' or 'B' */
  const char *server;
  size_t server_len; /* all but B */
  const char *uid;
  size_t uid_len; /* D, A, F, R */
  uint64_t size;  /* D, A */
  const char *name;
  size_t name_len; /* D */
  int has_digest;  /* D */
  uint8_t digest[UIDMODEL_DIGEST_LEN];
  unsigned attempts; /* A: the new total, at least 1 */
  const char *error;
  size_t error_len; /* A: as in the line (applying sanitizes it) */
  int on;           /* L */
  time_t when;      /* all */
};

/* Decodes one line (len bytes, without its newline) into *l, checking its
 * CRC and every field.  Returns 0, or 1 when the line is corrupt (*l is
 * then unspecified). */
int uidmodel_parse_line(const char *line, size_t len, struct uidmodel_line *l);

/* Encodes *l with " *CRC\n" into out (UIDMODEL_LINE_CAP bytes, NUL-
 * terminated).  Returns the length, or -EINVAL for a field the parser
 * would refuse (a space or control character in server, uid or name, an
 * error text that is not as uidmodel_sanitize_error leaves it, ...), so
 * that whatever is written reads back. */
int uidmodel_format_line(const struct uidmodel_line *l, char *out);

/* Error text as stored and written: control characters (and NUL) become
 * '?', at most 300 bytes, cut before a UTF-8 sequence rather than in it.
 * Idempotent.  out has room for 301 bytes; returns the length. */
size_t uidmodel_sanitize_error(const char *s, size_t len, char *out);

/* ---- the index and its replay rules */

struct uidmodel;

/* An empty model, or NULL when out of memory. */
struct uidmodel *uidmodel_new(void);
void uidmodel_free(struct uidmodel *m);

/* Applies one decoded record: D sets the delivered state (keeping a durable
 * D it overrides while the new one is pending), A sets attempts, error and
 * size, R removes the record, F withdraws the last D, L sets the
 * server's lock-step flag, B makes every D so far durable.  Either applies
 * entirely or returns -ENOMEM having changed nothing visible; 0 otherwise.
 * l must be valid, as uidmodel_parse_line leaves it or as
 * uidmodel_format_line accepts it. */
int uidmodel_apply(struct uidmodel *m, const struct uidmodel_line *l);

/* Replays journal text: a header line, then records; a corrupt line, a last
 * line without its newline and a first line that is not the header are
 * counted (the latter still read as a record).  May be called again with
 * more text.  Returns 0 or -ENOMEM. */
int uidmodel_parse(struct uidmodel *m, const char *buf, size_t len);

/* Lines counted as corrupt or torn by uidmodel_parse. */
size_t uidmodel_corrupt_lines(const struct uidmodel *m);

/* The record for (server, uid), or NULL. */
const struct uidstate_rec *uidmodel_find(const struct uidmodel *m, const char *server,
                                         const char *uid);
/* 1 when the last L record for server asks for lock-step. */
int uidmodel_lockstep(const struct uidmodel *m, const char *server);
/* Every record, in no particular order, until cb returns non-zero.  cb
 * must not change m. */
void uidmodel_foreach(const struct uidmodel *m, int (*cb)(void *data, const struct uidstate_rec *r),
                      void *data);

/* Appends: validate, format the line (malloc'd, with its newline, into
 * *line_r and *len_r), and apply it.  Return 0, -EINVAL (a server, uid or
 * name the format refuses) or -ENOMEM; on error *line_r is NULL and m is
 * unchanged.  The A line carries the new total of attempts and the error
 * sanitized; digest is UIDMODEL_DIGEST_LEN bytes (borrowed) or NULL. */
int uidmodel_append_delivered(struct uidmodel *m, const char *server, const char *uid,
                              uint64_t size, const char *name, time_t when, const uint8_t *digest,
                              char **line_r, size_t *len_r);
int uidmodel_append_attempt(struct uidmodel *m, const char *server, const char *uid, uint64_t size,
                            const char *error, time_t when, char **line_r, size_t *len_r);
int uidmodel_append_lockstep(struct uidmodel *m, const char *server, int on, time_t when,
                             char **line_r, size_t *len_r);
int uidmodel_append_barrier(struct uidmodel *m, time_t when, char **line_r, size_t *len_r);
int uidmodel_append_forget(struct uidmodel *m, const char *server, const char *uid, time_t when,
                           char **line_r, size_t *len_r);
int uidmodel_append_retire(struct uidmodel *m, const char *server, const char *uid, time_t when,
                           char **line_r, size_t *len_r);

/* The D line alone, touching no state (thread-safe): its length (with the
 * newline) written into buf, or -EINVAL / -ENOSPC. */
int uidmodel_format_delivered(const char *server, const char *uid, uint64_t size, const char *name,
                              time_t when, const uint8_t *digest, char *buf, size_t buflen);

/* Records a new LIST size for a delivered record, in memory only (the
 * next snapshot writes it).  0, or -ENOENT when not delivered. */
int uidmodel_set_size(struct uidmodel *m, const char *server, const char *uid, uint64_t size);

/* ---- compaction
 *
 * A rewrite is: mark (uidmodel_mark_drop, uidmodel_mark_missing), write
 * uidmodel_snapshot's lines to a new file, then uidmodel_commit_marks once
 * that file is in place, or uidmodel_clear_marks to give up. */

/* Calls cb(arg, name) for the file name of each pending D (written after
 * the last B), in no order, stopping when cb returns non-zero.  Returns the
 * number of calls, or cb's negative result. */
long uidmodel_foreach_pending(const struct uidmodel *m, int (*cb)(void *arg, const char *name),
                              void *arg);

/* Marks each record that keep(data, rec) rejects (returns 0) to be dropped;
 * keep must not change m. */
void uidmodel_mark_drop(struct uidmodel *m, int (*keep)(void *data, const struct uidstate_rec *r),
                        void *data);

/* Marks each pending D whose file present(arg, name) says is gone (returns
 * 0): it is withdrawn, and a durable D it overrode counts again.  Returns
 * how many were marked (at most INT_MAX). */
int uidmodel_mark_missing(struct uidmodel *m, int (*present)(void *arg, const char *name),
                          void *arg);

/* The journal as memory will be once the marks are applied, line by line
 * (each with its newline) to emit, so that reading it back gives the same
 * records, the pending ones included: header, each durable D, L lines for
 * lock-step servers, "B now", each pending D, each A.  A record survives
 * when it is not marked to be dropped and still has attempts or a
 * delivery.  Returns 0, or the first negative result of emit or of a
 * format (the rest is then not emitted). */
int uidmodel_snapshot(const struct uidmodel *m, time_t now,
                      int (*emit)(void *arg, const char *line, size_t len), void *arg);

/* Applies the marks to memory (after the snapshot is durable) and clears
 * them; uidmodel_clear_marks just clears them. */
void uidmodel_commit_marks(struct uidmodel *m);
void uidmodel_clear_marks(struct uidmodel *m);

#endif

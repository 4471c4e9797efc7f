/* What a run does with each listed message, and what the journal keeps
 * afterwards: the exactly-once policy as a pure function of (listing,
 * journal records, options, now).  No I/O, no session, no clock: the engine
 * (engine.c) looks the records up, hands them in, applies the decisions to
 * the session and writes the journal lines they call for.
 *
 * The rules (pop3(1), EXACTLY ONCE):
 *  - A message is deleted without being retrieved only when the journal
 *    proves that this very message was delivered and its deletion was never
 *    committed: its UID is listed once, a record says it was delivered with
 *    this LIST size, and that record was not retired.  A record whose
 *    deletion was committed (DELE +OK, then QUIT +OK; a keep_days expiry is
 *    such a deletion) is retired at once, so a later message with the same
 *    UID (popa3d and solid-pop3d derive UIDs from a hash of header lines)
 *    is new.
 *  - A UID listed more than once is not an identity: those messages are
 *    fetched (a duplicate beats a loss), never deleted unseen, never
 *    recorded, and any record for that UID is retired.
 *  - A known UID whose LIST size changed (GNU Mailutils adds headers to
 *    kept messages; with or without keep now) is the same message only when the header
 *    digest of its record (hdrdigest.h) matches a TOP n 0 of the listed
 *    message: then the new size is recorded and the message is not fetched
 *    again.  A record without a digest, a failed TOP or another digest:
 *    a new message, fetched.
 *  - A message that failed ENGINE_MAX_ATTEMPTS times is left on the server
 *    (stuck), so that it does not block the rest.
 *  - With a size limit (max_size), a message whose LIST size exceeds it is
 *    left on the server (over size): neither fetched nor deleted, and
 *    nothing is recorded for it, so a run with a higher limit fetches it.
 *    One the journal proves delivered is still deleted (or kept) as above.
 *  - After a desynchronised session, deliveries whose reply identity was
 *    not proven are withdrawn (F records); verified, durable ones stay. */
#ifndef P3_PLAN_H
#define P3_PLAN_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "hdrdigest.h"

enum plan_action {
  PLAN_FETCH = 0, /* RETR it (and DELE it once saved, unless keep) */
  PLAN_DELETE,    /* DELE without RETR: the journal proves it was delivered */
  PLAN_SKIP,      /* leave it on the server untouched */
  PLAN_PROBE      /* TOP n 0 first, then plan_probed() decides */
};

enum plan_reason {
  PLAN_R_NEW = 0,       /* no record: fetch */
  PLAN_R_NO_UID,        /* no usable UID: fetch, never recorded */
  PLAN_R_DUP_UID,       /* the UID is listed more than once: fetch, never recorded */
  PLAN_R_DELIVERED,     /* delivered, deletion never committed: delete only */
  PLAN_R_KEPT,          /* keep mode, delivered: skip */
  PLAN_R_EXPIRED,       /* keep mode, delivered more than keep_days ago: delete only */
  PLAN_R_STUCK,         /* failed max_attempts times: skip */
  PLAN_R_SIZE_CHANGED,  /* unused: a size change is probed or NO_DIGEST/NO_PROBE */
  PLAN_R_NO_DIGEST,     /* size changed, the record has no digest: fetch */
  PLAN_R_NO_PROBE,      /* size changed, no TOP possible: fetch */
  PLAN_R_CHECK_CONTENT, /* size changed: probe (TOP n 0) */
  PLAN_R_SAME_CONTENT,  /* probed, the digest agrees: as delivered, new size recorded */
  PLAN_R_OTHER_CONTENT, /* probed, another digest or TOP failed: fetch */
  PLAN_R_OVER_SIZE,     /* would be fetched, but its LIST size exceeds max_size: skip */
};

/* What the journal says about a UID (uidstate_rec, reduced). */
struct plan_rec {
  time_t delivered;  /* 0: never delivered (attempt records only) */
  uint64_t size;     /* the LIST size it was delivered with */
  unsigned attempts; /* failed attempts since */
  int has_digest;
  uint8_t digest[HDRDIGEST_LEN];
};

struct plan_item {
  /* In: filled by the caller. */
  uint64_t size;              /* LIST size */
  const char *uid;            /* NULL: no usable UID */
  const struct plan_rec *rec; /* the journal's record for uid, NULL: none */
  int dup_uid;                /* the caller already knows uid is listed twice (may be 0) */
  /* Out: set by plan_listing / plan_probed. */
  enum plan_action action;
  enum plan_reason reason;
  int resize; /* record the new size (same content, keep mode) */
};

struct plan_options {
  int keep;      /* never DELE what was fetched */
  int keep_days; /* with keep: DELE what was delivered more than N days ago; -1 never */
  time_t now;
  unsigned max_attempts; /* 0: no limit */
  int can_probe;         /* TOP n 0 is possible (the session supports probes) */
  uint64_t max_size;     /* fetch nothing listed larger; 0: no limit */
};

struct plan_summary {
  size_t fetch, delete_only, skip, probe, stuck;
  size_t over_size;    /* skipped for max_size (counted in skip too) */
  uint64_t over_bytes; /* their LIST sizes summed */
  size_t already;      /* known as delivered: deleted only, or kept */
  int uids_unique;     /* 0 when some UID is listed more than once */
};

/* Decides every item of a listing (n items, in listing order): sets action
 * and reason, and marks items whose UID occurs more than once (dup_uid).
 * Returns 0, or -ENOMEM (nothing decided: the caller fetches everything
 * and records nothing).  *sum_r (may be NULL) gets the counts. */
int plan_listing(const struct plan_options *o, struct plan_item *items, size_t n,
                 struct plan_summary *sum_r);

/* Counts the decisions made so far (after probes, the final ones). */
void plan_summarize(const struct plan_item *items, size_t n, struct plan_summary *sum_r);

/* The probe (TOP n 0) of an item planned PLAN_PROBE came back: digest is
 * the header digest of the reply, or NULL when TOP failed.  Sets action
 * (PLAN_SKIP or PLAN_DELETE as if the size had not changed, with resize
 * set, or PLAN_FETCH; PLAN_SKIP with PLAN_R_OVER_SIZE instead of a fetch
 * beyond max_size) and reason. */
void plan_probed(const struct plan_options *o, struct plan_item *it, const uint8_t *digest);

/* After the session, per message. */
struct plan_outcome {
  int saved;    /* durable in new/, its record written */
  int verified; /* the reply's identity was proven (lock-step or UIDL n) */
  int deleted;  /* DELE +OK */
  int failed;   /* RETR -ERR, a save error, a desync at it */
};

enum plan_after {
  PLAN_KEEP_RECORD = 0, /* leave the record as it is */
  PLAN_RETIRE,          /* remove the record (R line, and compaction) */
  PLAN_FORGET,          /* withdraw this session's delivery record (F line) */
  PLAN_ATTEMPT          /* count a failed attempt (A line) */
};

/* What to write for an item once the session is over.  quit_ok: QUIT was
 * answered +OK (every DELE +OK is committed); desync: the session ended
 * with a reply that did not match its command.  Items without a UID or
 * with a duplicated one get PLAN_RETIRE when a record exists (dup) and
 * PLAN_KEEP_RECORD otherwise: nothing is recorded for them. */
enum plan_after plan_after(const struct plan_item *it, const struct plan_outcome *out, int quit_ok,
                           int desync);

/* After a successful QUIT the journal keeps, for this server, only records
 * whose UID the listing showed once and that plan_after did not retire:
 * whatever else the server no longer lists is gone for good.  This is the
 * compaction predicate for one UID: listed is how many times the listing
 * showed it, retired whether plan_after said PLAN_RETIRE for it. */
int plan_keep_after_quit(size_t listed, int retired);

/* Short text for a reason (for -v traces). */
const char *plan_reason_text(enum plan_reason r);

#endif

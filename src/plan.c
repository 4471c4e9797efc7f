/* The exactly-once policy (see plan.h): pure decisions, no I/O. */
#include "config.h"

#include "plan.h"

#include "hashtab.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Marks every item whose UID occurs more than once in the listing. */
static int mark_duplicates(struct plan_item *items, size_t n) {
  struct hashtab seen; /* uid -> its first item */
  int err = 0;

  hashtab_init(&seen);
  for (size_t i = 0; i < n && err == 0; i++) {
    struct plan_item *it = &items[i], *first;
    size_t len;
    if (it->uid == NULL)
      continue;
    len = strlen(it->uid);
    if ((first = hashtab_get(&seen, it->uid, len)) != NULL)
      first->dup_uid = it->dup_uid = 1;
    else
      err = hashtab_put(&seen, it->uid, len, it);
  }
  hashtab_deinit(&seen);
  return err;
}

/* A delivered record matched this message: delete only, or keep. */
static void as_delivered(const struct plan_options *o, struct plan_item *it) {
  const struct plan_rec *rec = it->rec;
  int expired = o->keep_days >= 0 && o->now - rec->delivered > (time_t)o->keep_days * 86400;
  if (!o->keep) {
    it->action = PLAN_DELETE;
    it->reason = PLAN_R_DELIVERED;
  } else if (expired) {
    it->action = PLAN_DELETE;
    it->reason = PLAN_R_EXPIRED;
  } else {
    it->action = PLAN_SKIP;
    it->reason = PLAN_R_KEPT;
  }
}

/* A message that would be fetched (or is stuck: the limit is the reason
 * that matters now) but is larger than max_size stays on the server. */
static void limit_size(const struct plan_options *o, struct plan_item *it) {
  if (o->max_size == 0 || it->size <= o->max_size)
    return;
  if (it->action == PLAN_FETCH || (it->action == PLAN_SKIP && it->reason == PLAN_R_STUCK)) {
    it->action = PLAN_SKIP;
    it->reason = PLAN_R_OVER_SIZE;
  }
}

static void plan_one(const struct plan_options *o, struct plan_item *it) {
  const struct plan_rec *rec = it->rec;
  it->action = PLAN_FETCH;
  it->reason = PLAN_R_NEW;
  it->resize = 0;
  if (it->uid == NULL) {
    it->reason = PLAN_R_NO_UID;
    return;
  }
  if (it->dup_uid) {
    /* Not an identity: no record can prove anything about these. */
    it->reason = PLAN_R_DUP_UID;
    return;
  }
  if (rec == NULL)
    return;
  if (rec->delivered != 0 && rec->size == it->size) {
    as_delivered(o, it);
    return;
  }
  if (o->max_attempts && rec->attempts >= o->max_attempts) {
    it->action = PLAN_SKIP;
    it->reason = PLAN_R_STUCK;
    return;
  }
  if (rec->delivered == 0)
    return; /* failed before: try again */
  /* Delivered with another size (kept, GNU Mailutils added headers at
   * QUIT).  The same rule with or without keep now: a run without keep
   * after kept runs must not fetch the grown messages again. */
  if (!rec->has_digest)
    it->reason = PLAN_R_NO_DIGEST;
  else if (!o->can_probe)
    it->reason = PLAN_R_NO_PROBE;
  else {
    it->action = PLAN_PROBE;
    it->reason = PLAN_R_CHECK_CONTENT;
  }
}

void plan_summarize(const struct plan_item *items, size_t n, struct plan_summary *s) {
  memset(s, 0, sizeof *s);
  s->uids_unique = 1;
  for (size_t i = 0; i < n; i++) {
    const struct plan_item *it = &items[i];
    if (it->dup_uid)
      s->uids_unique = 0;
    switch (it->action) {
    case PLAN_FETCH:
      s->fetch++;
      break;
    case PLAN_DELETE:
      s->delete_only++;
      s->already++;
      break;
    case PLAN_SKIP:
      s->skip++;
      if (it->reason == PLAN_R_STUCK)
        s->stuck++;
      else if (it->reason == PLAN_R_OVER_SIZE) {
        s->over_size++;
        s->over_bytes += it->size;
      } else
        s->already++;
      break;
    case PLAN_PROBE:
      s->probe++;
      break;
    }
  }
}

int plan_listing(const struct plan_options *o, struct plan_item *items, size_t n,
                 struct plan_summary *sum_r) {
  int err = mark_duplicates(items, n);
  if (err)
    return err;
  for (size_t i = 0; i < n; i++) {
    plan_one(o, &items[i]);
    limit_size(o, &items[i]);
  }
  if (sum_r)
    plan_summarize(items, n, sum_r);
  return 0;
}

void plan_probed(const struct plan_options *o, struct plan_item *it, const uint8_t *digest) {
  assert(it->action == PLAN_PROBE && it->rec != NULL);
  const struct plan_rec *rec = it->rec;
  if (digest != NULL && rec->has_digest && memcmp(digest, rec->digest, HDRDIGEST_LEN) == 0) {
    as_delivered(o, it);
    it->reason = PLAN_R_SAME_CONTENT;
    it->resize = 1;
    return;
  }
  it->action = PLAN_FETCH;
  it->reason = PLAN_R_OTHER_CONTENT;
  limit_size(o, it);
}

enum plan_after plan_after(const struct plan_item *it, const struct plan_outcome *out, int quit_ok,
                           int desync) {
  if (it->uid == NULL)
    return PLAN_KEEP_RECORD;
  if (it->dup_uid)
    return it->rec != NULL ? PLAN_RETIRE : PLAN_KEEP_RECORD;
  /* Deleted and committed: whatever comes later under this UID is new. */
  if (out->deleted && quit_ok)
    return PLAN_RETIRE;
  /* After a desync a reply may have been matched with the wrong RETR: a
   * delivery whose identity was not proven must not make a later run
   * delete the UID unretrieved.  The file stays (when in doubt, deliver). */
  if (desync && out->saved && !out->verified)
    return PLAN_FORGET;
  if (out->failed && !out->saved && it->action == PLAN_FETCH)
    return PLAN_ATTEMPT;
  return PLAN_KEEP_RECORD;
}

int plan_keep_after_quit(size_t listed, int retired) {
  return listed == 1 && !retired;
}

const char *plan_reason_text(enum plan_reason r) {
  switch (r) {
  case PLAN_R_NEW:
    return "new";
  case PLAN_R_NO_UID:
    return "no usable UID: fetched, not recorded";
  case PLAN_R_DUP_UID:
    return "its UID is listed more than once: fetched, not recorded";
  case PLAN_R_DELIVERED:
    return "already delivered: deleted only";
  case PLAN_R_KEPT:
    return "already delivered: kept";
  case PLAN_R_EXPIRED:
    return "delivered longer ago than keep_days: deleted";
  case PLAN_R_STUCK:
    return "failed too often: left on the server";
  case PLAN_R_SIZE_CHANGED:
    return "delivered before with another size: fetched as a new message";
  case PLAN_R_NO_DIGEST:
    return "size changed and its record has no header digest: fetched as a new message";
  case PLAN_R_NO_PROBE:
    return "size changed and its header cannot be checked: fetched as a new message";
  case PLAN_R_CHECK_CONTENT:
    return "size changed: checking its header (TOP n 0)";
  case PLAN_R_SAME_CONTENT:
    return "size changed, same header digest: the same message";
  case PLAN_R_OTHER_CONTENT:
    return "size changed, its header differs: fetched as a new message";
  case PLAN_R_OVER_SIZE:
    return "larger than max_size: left on the server";
  }
  return "?";
}

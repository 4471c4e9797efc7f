/* The exactly-once policy (plan.h) and the header digest (hdrdigest.h),
 * case by case against what real servers do (issue 9): popa3d and
 * solid-pop3d hash UIDs (a UID comes back for another message, several
 * messages share one), GNU Mailutils grows kept messages, Courier serves
 * another size than LIST says, keep_days expiry.  The scenarios run the
 * plan against a memory journal (uidstate.h) the way the engine does:
 * look the records up, plan, apply plan_after, append the lines. */
#include "config.h"

#include "check.h"
#include "hdrdigest.h"
#include "plan.h"
#include "uidstate.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SRV "joe@pop.example.org:110"
#define DAY 86400
#define NOW ((time_t)1700000000)

/* ---- the header digest */

static void hex_of(const uint8_t *d, char *out) {
  for (int i = 0; i < HDRDIGEST_LEN; i++)
    snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void digest_str(const char *text, uint8_t out[HDRDIGEST_LEN]) {
  CHECK_INT(hdrdigest_of(text, strlen(text), out), 0);
}

static int same_digest(const char *a, const char *b) {
  uint8_t x[HDRDIGEST_LEN], y[HDRDIGEST_LEN];
  digest_str(a, x);
  digest_str(b, y);
  return memcmp(x, y, HDRDIGEST_LEN) == 0;
}

static const char plain_msg[] = "Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\n"
                                "Message-ID: <1@example.org>\n"
                                "Subject: hello\n"
                                "  folded\n"
                                "\n"
                                "body line\n"
                                "Status: not a header here\n";

/* As GNU Mailutils serves it after a --keep session: Status, X-UID and
 * X-IMAPbase added at QUIT, X-UIDL per session, names in any case. */
static const char grown_msg[] = "X-IMAPbase: 1700000000 2\n"
                                "Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\n"
                                "X-UIDL: 1700001234.42\n"
                                "Message-ID: <1@example.org>\n"
                                "status: RO\n"
                                "Subject: hello\n"
                                "  folded\n"
                                "X-UID: 1\n"
                                "X-Keywords:\n"
                                "\tjunk continuation\n"
                                "X-Status : A\n"
                                "Content-Length: 30\n"
                                "\n"
                                "body line\n"
                                "Status: not a header here\n";

static void test_digest_rules(void) {
  uint8_t d[HDRDIGEST_LEN];
  char hex[2 * HDRDIGEST_LEN + 1];

  /* Exactly SHA-256 over the kept header lines. */
  digest_str("Subject: a\n\nbody\n", d);
  hex_of(d, hex);
  CHECK_STR(hex, "2c2d095dc6186642613603a390c90c10f6c52317aed10f8ce343cde9cdfd8e66");
  digest_str("", d);
  hex_of(d, hex);
  CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  digest_str("\nSubject: in the body\n", d); /* empty header */
  hex_of(d, hex);
  CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

  /* The body does not count; TOP n 0 (header and empty line) gives the
   * same as RETR. */
  CHECK(same_digest(plain_msg, "Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\n"
                               "Message-ID: <1@example.org>\n"
                               "Subject: hello\n"
                               "  folded\n"
                               "\n"));
  /* Mailutils' additions are ignored, wherever they are. */
  CHECK(same_digest(plain_msg, grown_msg));
  /* CRLF and LF agree. */
  CHECK(same_digest("A: 1\r\nB: 2\r\n\r\nx\r\n", "A: 1\nB: 2\n\nx\n"));
  /* No empty line: the whole text is header. */
  CHECK(same_digest("A: 1\nB: 2\n", "A: 1\nB: 2\n\n"));
  CHECK(same_digest("A: 1\nStatus: RO", "A: 1\n"));

  /* Anything else changes it. */
  CHECK(!same_digest(plain_msg, "Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\n"
                                "Message-ID: <2@example.org>\n"
                                "Subject: hello\n"
                                "  folded\n"
                                "\n"));
  CHECK(!same_digest("Subject: hello\n  folded\n\n", "Subject: hello\n\n"));
  CHECK(!same_digest("X-UIDLS: 1\n\n", "\n")); /* only the exact names */
  CHECK(!same_digest("Statusline: 1\n\n", "\n"));
  CHECK(!same_digest("X-Foo: 1\n\n", "\n"));
  CHECK(!same_digest("A: 1\rB: 2\n\n", "A: 1\nB: 2\n\n")); /* a bare CR is content */
  /* A long name, a line without a colon. */
  CHECK(!same_digest("Xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx: 1\n\n", "\n"));
  CHECK(!same_digest("no colon here\n\n", "\n"));
  CHECK(same_digest("no colon here\nStatus: O\n\n", "no colon here\n\n"));
}

/* Fed in pieces, at every split point and one byte at a time. */
static void test_digest_chunks(void) {
  const char *texts[] = {plain_msg, grown_msg, "A: 1\r\nStatus: x\r\n\r\nbody\r\n", "A: 1\r",
                         "\r\n\r\n"};
  for (size_t t = 0; t < sizeof texts / sizeof *texts; t++) {
    const char *text = texts[t];
    size_t len = strlen(text);
    uint8_t whole[HDRDIGEST_LEN], part[HDRDIGEST_LEN];
    digest_str(text, whole);
    for (size_t cut = 0; cut <= len; cut++) {
      struct hdrdigest *h = hdrdigest_new();
      CHECK(h != NULL);
      if (h == NULL)
        return;
      hdrdigest_feed(h, text, cut);
      hdrdigest_feed(h, text + cut, len - cut);
      hdrdigest_final(h, part);
      hdrdigest_free(h);
      CHECK(memcmp(whole, part, HDRDIGEST_LEN) == 0);
    }
    struct hdrdigest *h = hdrdigest_new();
    for (size_t i = 0; i < len; i++)
      hdrdigest_feed(h, text + i, 1);
    hdrdigest_final(h, part);
    hdrdigest_free(h);
    CHECK(memcmp(whole, part, HDRDIGEST_LEN) == 0);
  }
  struct hdrdigest *h = hdrdigest_new();
  hdrdigest_feed(h, "A: 1\n", 5);
  CHECK(!hdrdigest_header_done(h));
  hdrdigest_feed(h, "\r\n", 2);
  CHECK(hdrdigest_header_done(h));
  hdrdigest_free(h);
}

/* ---- single decisions */

static const struct plan_options opt_dele = {
    .keep = 0, .keep_days = -1, .now = NOW, .max_attempts = 3, .can_probe = 1};
static const struct plan_options opt_keep = {
    .keep = 1, .keep_days = -1, .now = NOW, .max_attempts = 3, .can_probe = 1};

static struct plan_rec delivered(uint64_t size, time_t when) {
  struct plan_rec r = {.delivered = when, .size = size};
  return r;
}

/* Plans one message; returns the item. */
static struct plan_item plan1(const struct plan_options *o, const char *uid, uint64_t size,
                              const struct plan_rec *rec) {
  struct plan_item it = {.size = size, .uid = uid, .rec = rec};
  CHECK_INT(plan_listing(o, &it, 1, NULL), 0);
  return it;
}

static void test_single(void) {
  struct plan_item it;
  struct plan_rec r = delivered(100, NOW - 10), old = delivered(100, NOW - 8 * DAY);
  struct plan_rec failed = {.delivered = 0, .size = 0, .attempts = 2};

  it = plan1(&opt_dele, "A", 100, NULL);
  CHECK(it.action == PLAN_FETCH && it.reason == PLAN_R_NEW);
  it = plan1(&opt_dele, NULL, 100, NULL);
  CHECK(it.action == PLAN_FETCH && it.reason == PLAN_R_NO_UID);
  it = plan1(&opt_dele, "A", 100, &r);
  CHECK(it.action == PLAN_DELETE && it.reason == PLAN_R_DELIVERED);
  it = plan1(&opt_keep, "A", 100, &r);
  CHECK(it.action == PLAN_SKIP && it.reason == PLAN_R_KEPT);
  /* keep_days: expired records are deleted (and retired once committed). */
  struct plan_options kd = opt_keep;
  kd.keep_days = 7;
  it = plan1(&kd, "A", 100, &old);
  CHECK(it.action == PLAN_DELETE && it.reason == PLAN_R_EXPIRED);
  it = plan1(&kd, "A", 100, &r);
  CHECK(it.action == PLAN_SKIP && it.reason == PLAN_R_KEPT);
  kd.keep_days = 0;
  it = plan1(&kd, "A", 100, &r);
  CHECK(it.action == PLAN_DELETE && it.reason == PLAN_R_EXPIRED);
  it = plan1(&opt_keep, "A", 100, &old); /* keep_days -1: never */
  CHECK(it.action == PLAN_SKIP);

  /* Failed attempts: tried again until max_attempts, then stuck. */
  it = plan1(&opt_dele, "A", 100, &failed);
  CHECK(it.action == PLAN_FETCH && it.reason == PLAN_R_NEW);
  failed.attempts = 3;
  it = plan1(&opt_dele, "A", 100, &failed);
  CHECK(it.action == PLAN_SKIP && it.reason == PLAN_R_STUCK);
  struct plan_options nolimit = opt_dele;
  nolimit.max_attempts = 0;
  it = plan1(&nolimit, "A", 100, &failed);
  CHECK(it.action == PLAN_FETCH);
  /* Delivered, then the UID came back with another size and failed. */
  struct plan_rec both = delivered(100, NOW - 10);
  both.attempts = 3;
  it = plan1(&opt_dele, "A", 200, &both);
  CHECK(it.action == PLAN_SKIP && it.reason == PLAN_R_STUCK);
  it = plan1(&opt_dele, "A", 100, &both); /* the delivered one itself */
  CHECK(it.action == PLAN_DELETE);

  /* A size change without keep, no digest to check: another message. */
  it = plan1(&opt_dele, "A", 101, &r);
  CHECK(it.action == PLAN_FETCH && it.reason == PLAN_R_NO_DIGEST);
}

/* GNU Mailutils: kept messages grow at QUIT; the header digest decides. */
static void test_keep_growth(void) {
  struct plan_rec r = delivered(100, NOW - 10);
  struct plan_item it;
  uint8_t same[HDRDIGEST_LEN], other[HDRDIGEST_LEN];

  digest_str(plain_msg, r.digest);
  r.has_digest = 1;
  digest_str(grown_msg, same);
  digest_str("Subject: something else\n\n", other);

  it = plan1(&opt_keep, "A", 160, &r);
  CHECK(it.action == PLAN_PROBE && it.reason == PLAN_R_CHECK_CONTENT);
  plan_probed(&opt_keep, &it, same);
  CHECK(it.action == PLAN_SKIP && it.reason == PLAN_R_SAME_CONTENT && it.resize);

  it = plan1(&opt_keep, "A", 160, &r);
  plan_probed(&opt_keep, &it, other);
  CHECK(it.action == PLAN_FETCH && it.reason == PLAN_R_OTHER_CONTENT && !it.resize);

  it = plan1(&opt_keep, "A", 160, &r);
  plan_probed(&opt_keep, &it, NULL); /* TOP failed */
  CHECK(it.action == PLAN_FETCH && it.reason == PLAN_R_OTHER_CONTENT);

  /* Expired while growing: same content, deleted. */
  struct plan_options kd = opt_keep;
  kd.keep_days = 0;
  it = plan1(&kd, "A", 160, &r);
  CHECK(it.action == PLAN_PROBE);
  plan_probed(&kd, &it, same);
  CHECK(it.action == PLAN_DELETE && it.resize);

  /* No TOP possible, no digest in an old record: fetched. */
  struct plan_options np = opt_keep;
  np.can_probe = 0;
  it = plan1(&np, "A", 160, &r);
  CHECK(it.action == PLAN_FETCH && it.reason == PLAN_R_NO_PROBE);
  r.has_digest = 0;
  it = plan1(&opt_keep, "A", 160, &r);
  CHECK(it.action == PLAN_FETCH && it.reason == PLAN_R_NO_DIGEST);

  /* Without keep after kept runs: probed the same way; the same content
   * is deleted only, other content fetched. */
  r.has_digest = 1;
  it = plan1(&opt_dele, "A", 160, &r);
  CHECK(it.action == PLAN_PROBE && it.reason == PLAN_R_CHECK_CONTENT);
  plan_probed(&opt_dele, &it, same);
  CHECK(it.action == PLAN_DELETE && it.reason == PLAN_R_SAME_CONTENT);
  it = plan1(&opt_dele, "A", 160, &r);
  plan_probed(&opt_dele, &it, other);
  CHECK(it.action == PLAN_FETCH && it.reason == PLAN_R_OTHER_CONTENT);
}

/* Duplicate UIDs in one listing: fetched, never deleted unseen, whatever
 * the journal says, and their record is retired. */
static void test_duplicates(void) {
  struct plan_rec r = delivered(100, NOW - 10);
  struct plan_item items[5] = {
      {.size = 100, .uid = "X", .rec = &r}, {.size = 100, .uid = "Y"},
      {.size = 100, .uid = "X", .rec = &r}, {.size = 100, .uid = NULL},
      {.size = 100, .uid = "Z", .rec = &r},
  };
  struct plan_summary sum;
  CHECK_INT(plan_listing(&opt_dele, items, 5, &sum), 0);
  CHECK(items[0].dup_uid && items[2].dup_uid && !items[1].dup_uid && !items[4].dup_uid);
  CHECK(items[0].action == PLAN_FETCH && items[0].reason == PLAN_R_DUP_UID);
  CHECK(items[2].action == PLAN_FETCH && items[2].reason == PLAN_R_DUP_UID);
  CHECK(items[4].action == PLAN_DELETE);
  CHECK_INT(sum.uids_unique, 0);
  CHECK_INT(sum.fetch, 4);
  CHECK_INT(sum.delete_only, 1);
  CHECK_INT(sum.already, 1);
  /* Keep mode too: not skipped. */
  for (int i = 0; i < 5; i++)
    items[i].dup_uid = 0;
  CHECK_INT(plan_listing(&opt_keep, items, 5, &sum), 0);
  CHECK(items[0].action == PLAN_FETCH && items[2].action == PLAN_FETCH);
  CHECK(items[4].action == PLAN_SKIP);
  /* The session may know first (SESSION_MSG_DUPUID). */
  struct plan_item one = {.size = 100, .uid = "X", .rec = &r, .dup_uid = 1};
  CHECK_INT(plan_listing(&opt_dele, &one, 1, &sum), 0);
  CHECK(one.action == PLAN_FETCH && !sum.uids_unique);

  /* After the session: no record, ever; an old one retired. */
  struct plan_outcome saved_deleted = {.saved = 1, .deleted = 1, .verified = 1};
  CHECK_INT(plan_after(&items[0], &saved_deleted, 1, 0), PLAN_RETIRE);
  CHECK_INT(plan_after(&items[0], &saved_deleted, 0, 0), PLAN_RETIRE);
  struct plan_item norec = {.size = 1, .uid = "Q", .dup_uid = 1, .action = PLAN_FETCH};
  struct plan_outcome failed = {.failed = 1};
  CHECK_INT(plan_after(&norec, &failed, 1, 0), PLAN_KEEP_RECORD);
  CHECK(!plan_keep_after_quit(2, 0));

  CHECK_INT(plan_listing(&opt_dele, items, 0, &sum), 0);
  CHECK_INT(sum.uids_unique, 1);
}

static void test_after(void) {
  struct plan_item fetched = {.size = 1, .uid = "A", .action = PLAN_FETCH};
  struct plan_item deleteonly = {.size = 1, .uid = "A", .action = PLAN_DELETE};
  struct plan_item nouid = {.size = 1, .uid = NULL, .action = PLAN_FETCH};
  struct plan_outcome o;

  /* Deleted and committed: retired. */
  o = (struct plan_outcome){.saved = 1, .deleted = 1};
  CHECK_INT(plan_after(&fetched, &o, 1, 0), PLAN_RETIRE);
  CHECK_INT(plan_after(&deleteonly, &(struct plan_outcome){.deleted = 1}, 1, 0), PLAN_RETIRE);
  /* QUIT not acknowledged: the deletion was never committed, keep. */
  CHECK_INT(plan_after(&fetched, &o, 0, 0), PLAN_KEEP_RECORD);
  CHECK_INT(plan_after(&deleteonly, &(struct plan_outcome){.deleted = 1}, 0, 0), PLAN_KEEP_RECORD);
  /* Kept (keep mode): the record stays. */
  CHECK_INT(plan_after(&fetched, &(struct plan_outcome){.saved = 1}, 1, 0), PLAN_KEEP_RECORD);
  /* Failed: one attempt more. */
  CHECK_INT(plan_after(&fetched, &(struct plan_outcome){.failed = 1}, 1, 0), PLAN_ATTEMPT);
  CHECK_INT(plan_after(&fetched, &(struct plan_outcome){.failed = 1, .saved = 1}, 1, 0),
            PLAN_KEEP_RECORD);
  CHECK_INT(plan_after(&nouid, &(struct plan_outcome){.failed = 1}, 1, 0), PLAN_KEEP_RECORD);
  /* Desync: withdraw the unverified deliveries only. */
  CHECK_INT(plan_after(&fetched, &(struct plan_outcome){.saved = 1}, 0, 1), PLAN_FORGET);
  CHECK_INT(plan_after(&fetched, &(struct plan_outcome){.saved = 1, .verified = 1}, 0, 1),
            PLAN_KEEP_RECORD);
  CHECK_INT(plan_after(&deleteonly, &(struct plan_outcome){0}, 0, 1), PLAN_KEEP_RECORD);

  CHECK(plan_keep_after_quit(1, 0));
  CHECK(!plan_keep_after_quit(1, 1));
  CHECK(!plan_keep_after_quit(0, 0));
  for (int r = PLAN_R_NEW; r <= PLAN_R_OTHER_CONTENT; r++)
    CHECK(strcmp(plan_reason_text((enum plan_reason)r), "?") != 0);
}

/* ---- scenarios: the plan against a journal, run after run */

struct server_msg {
  const char *uid;
  uint64_t size;
  const char *text; /* header (for the digest); NULL: "Subject: <uid>\n\n" */
};

struct run_result {
  enum plan_action action[16];
  size_t fetched, deleted_unseen, kept;
  int uids_unique;
};

static void msg_digest(const struct server_msg *m, uint8_t out[HDRDIGEST_LEN]) {
  char buf[256];
  if (m->text == NULL) {
    snprintf(buf, sizeof buf, "Subject: %s\n\n", m->uid);
    digest_str(buf, out);
  } else {
    digest_str(m->text, out);
  }
}

/* One run as the engine does it: plan from the journal, probes answered
 * from the messages' text, every fetch and DELE succeeds, QUIT +OK when
 * quit_ok, then the journal lines plan_after calls for.  Deleted messages
 * leave the mailbox (mbox[], *n) when quit_ok. */
static struct run_result run(struct uidstate *st, const struct plan_options *o,
                             struct server_msg *mbox, size_t *n, int quit_ok) {
  struct run_result res = {.uids_unique = 1};
  struct plan_item items[16];
  struct plan_rec recs[16];
  struct plan_summary sum;
  char *line;
  size_t len;

  memset(items, 0, sizeof items);
  for (size_t i = 0; i < *n; i++) {
    const struct uidstate_rec *r = uidstate_find(st, SRV, mbox[i].uid);
    items[i].size = mbox[i].size;
    items[i].uid = mbox[i].uid;
    if (r != NULL) {
      memset(&recs[i], 0, sizeof recs[i]);
      recs[i].delivered = r->delivered;
      recs[i].size = r->delivered_size;
      recs[i].attempts = r->attempts;
      recs[i].has_digest = r->digest != NULL;
      if (r->digest)
        memcpy(recs[i].digest, r->digest, HDRDIGEST_LEN);
      items[i].rec = &recs[i];
    }
  }
  CHECK_INT(plan_listing(o, items, *n, &sum), 0);
  res.uids_unique = sum.uids_unique;
  for (size_t i = 0; i < *n; i++)
    if (items[i].action == PLAN_PROBE) {
      uint8_t d[HDRDIGEST_LEN];
      msg_digest(&mbox[i], d);
      plan_probed(o, &items[i], d);
    }
  int deleted[16] = {0};
  for (size_t i = 0; i < *n; i++) {
    struct plan_item *it = &items[i];
    struct plan_outcome out = {0};
    res.action[i] = it->action;
    if (it->action == PLAN_FETCH) {
      res.fetched++;
      out.saved = out.verified = 1;
      if (it->uid && !it->dup_uid) {
        uint8_t d[HDRDIGEST_LEN];
        msg_digest(&mbox[i], d);
        CHECK_INT(
            uidstate_append_delivered(st, SRV, it->uid, it->size, "file", o->now, d, &line, &len),
            0);
        free(line);
      }
      out.deleted = !o->keep;
    } else if (it->action == PLAN_DELETE) {
      res.deleted_unseen++;
      out.deleted = 1;
    } else {
      res.kept++;
    }
    deleted[i] = out.deleted && quit_ok;
    switch (plan_after(it, &out, quit_ok, 0)) {
    case PLAN_RETIRE:
      if (uidstate_find(st, SRV, it->uid) != NULL) {
        CHECK_INT(uidstate_append_retire(st, SRV, it->uid, o->now, &line, &len), 0);
        free(line);
      }
      break;
    case PLAN_KEEP_RECORD:
      if (it->resize)
        CHECK_INT(uidstate_set_size(st, SRV, it->uid, it->size), 0);
      break;
    default:
      CHECK(0);
    }
  }
  if (quit_ok) {
    size_t k = 0;
    for (size_t i = 0; i < *n; i++)
      if (!deleted[i])
        mbox[k++] = mbox[i];
    *n = k;
  }
  return res;
}

/* popa3d / solid-pop3d: a message is fetched and deleted; later an
 * identical copy (same hash UID, same size) arrives: it is new. */
static void test_uid_reuse_after_delete(void) {
  struct uidstate *st = uidstate_new_memory();
  struct server_msg mbox[4] = {{"H1", 500, NULL}, {"H2", 600, NULL}};
  size_t n = 2;
  struct run_result r = run(st, &opt_dele, mbox, &n, 1);
  CHECK_INT(r.fetched, 2);
  CHECK_INT(n, 0);
  CHECK(uidstate_find(st, SRV, "H1") == NULL); /* retired at once */
  mbox[0] = (struct server_msg){"H1", 500, NULL};
  n = 1;
  r = run(st, &opt_dele, mbox, &n, 1);
  CHECK_INT(r.fetched, 1);
  CHECK_INT(r.deleted_unseen, 0);
  uidstate_close(st);
}

/* A run that broke before QUIT: nothing was deleted, so the next run
 * deletes what was saved without fetching it again. */
static void test_quit_lost(void) {
  struct uidstate *st = uidstate_new_memory();
  struct server_msg mbox[4] = {{"U1", 500, NULL}, {"U2", 600, NULL}};
  size_t n = 2;
  struct run_result r = run(st, &opt_dele, mbox, &n, 0);
  CHECK_INT(r.fetched, 2);
  CHECK_INT(n, 2);
  r = run(st, &opt_dele, mbox, &n, 1);
  CHECK_INT(r.fetched, 0);
  CHECK_INT(r.deleted_unseen, 2);
  CHECK_INT(n, 0);
  CHECK(uidstate_find(st, SRV, "U1") == NULL);
  uidstate_close(st);
}

/* popa3d: A fetched with --keep; B with the same headers and size (so the
 * same UID) arrives; a run without --keep must fetch B, not DELE it. */
static void test_keep_then_same_uid(void) {
  struct uidstate *st = uidstate_new_memory();
  struct server_msg mbox[4] = {{"H", 500, NULL}};
  size_t n = 1;
  struct run_result r = run(st, &opt_keep, mbox, &n, 1);
  CHECK_INT(r.fetched, 1);
  mbox[1] = (struct server_msg){"H", 500, NULL};
  n = 2;
  r = run(st, &opt_dele, mbox, &n, 1);
  CHECK_INT(r.deleted_unseen, 0);
  CHECK_INT(r.fetched, 2); /* A again (a duplicate beats a loss), and B */
  CHECK_INT(r.uids_unique, 0);
  CHECK_INT(n, 0);
  CHECK(uidstate_find(st, SRV, "H") == NULL);
  uidstate_close(st);
}

/* GNU Mailutils in keep mode: sizes grow, nothing is fetched twice; a
 * new message is. */
static void test_mailutils_keep(void) {
  struct uidstate *st = uidstate_new_memory();
  struct server_msg mbox[4] = {{"M1", 300, plain_msg}, {"M2", 400, NULL}};
  size_t n = 2;
  struct run_result r = run(st, &opt_keep, mbox, &n, 1);
  CHECK_INT(r.fetched, 2);
  mbox[0] = (struct server_msg){"M1", 390, grown_msg};
  mbox[1].size = 430;
  mbox[1].text = "X-UID: 2\nStatus: O\nSubject: M2\n\n";
  r = run(st, &opt_keep, mbox, &n, 1);
  CHECK_INT(r.fetched, 0);
  CHECK_INT(r.kept, 2);
  CHECK_INT(uidstate_find(st, SRV, "M1")->delivered_size, 390);
  /* Next time no probe is needed. */
  r = run(st, &opt_keep, mbox, &n, 1);
  CHECK_INT(r.fetched, 0);
  CHECK(r.action[0] == PLAN_SKIP && r.action[1] == PLAN_SKIP);
  /* A new one, and one whose UID came back with another header. */
  mbox[2] = (struct server_msg){"M3", 100, NULL};
  mbox[1] = (struct server_msg){"M2", 999, "Subject: another\n\n"};
  n = 3;
  r = run(st, &opt_keep, mbox, &n, 1);
  CHECK_INT(r.fetched, 2);
  CHECK(r.action[0] == PLAN_SKIP);
  /* keep_days: expired ones are deleted and retired. */
  struct plan_options kd = opt_keep;
  kd.keep_days = 1;
  kd.now = NOW + 2 * DAY;
  r = run(st, &kd, mbox, &n, 1);
  CHECK_INT(r.deleted_unseen, 3);
  CHECK_INT(n, 0);
  CHECK(uidstate_find(st, SRV, "M1") == NULL);
  uidstate_close(st);
}

/* A journal written before digests: a size change means a new message. */
static void test_old_records(void) {
  struct uidstate *st = uidstate_new_memory();
  char *line;
  size_t len;
  CHECK_INT(uidstate_append_delivered(st, SRV, "M1", 300, "f", NOW - 10, NULL, &line, &len), 0);
  free(line);
  struct server_msg mbox[2] = {{"M1", 300, NULL}};
  size_t n = 1;
  struct run_result r = run(st, &opt_keep, mbox, &n, 1);
  CHECK_INT(r.kept, 1);
  mbox[0].size = 310;
  r = run(st, &opt_keep, mbox, &n, 1);
  CHECK_INT(r.fetched, 1);
  uidstate_close(st);
}

/* Courier: RETR serves another size than LIST (a UTF-8 wrapper).  The
 * record keeps the LIST size, so the next listing matches it; a desync
 * later in that session withdraws only what was not verified. */
static void test_courier(void) {
  struct uidstate *st = uidstate_new_memory();
  char *line;
  size_t len;
  CHECK_INT(uidstate_append_delivered(st, SRV, "C1", 276, "f", NOW - 10, NULL, &line, &len), 0);
  free(line);
  struct plan_rec rec = {0};
  const struct uidstate_rec *r = uidstate_find(st, SRV, "C1");
  rec.delivered = r->delivered;
  rec.size = r->delivered_size;
  struct plan_item it = plan1(&opt_dele, "C1", 276, &rec);
  CHECK(it.action == PLAN_DELETE);
  struct plan_item f = {.size = 276, .uid = "C2", .action = PLAN_FETCH};
  CHECK_INT(plan_after(&f, &(struct plan_outcome){.saved = 1, .verified = 1}, 0, 1),
            PLAN_KEEP_RECORD);
  CHECK_INT(plan_after(&f, &(struct plan_outcome){.saved = 1}, 0, 1), PLAN_FORGET);
  uidstate_close(st);
}

/* A UID that came back with another size and failed: its attempt record
 * must not make the delivery record match the new size. */
static void test_attempt_after_delivery(void) {
  struct uidstate *st = uidstate_new_memory();
  char *line;
  size_t len;
  CHECK_INT(uidstate_append_delivered(st, SRV, "X", 100, "f", NOW - 10, NULL, &line, &len), 0);
  free(line);
  CHECK_INT(uidstate_append_attempt(st, SRV, "X", 200, "-ERR", NOW - 5, &line, &len), 0);
  free(line);
  struct server_msg mbox[2] = {{"X", 200, NULL}};
  size_t n = 1;
  struct run_result r = run(st, &opt_dele, mbox, &n, 1);
  CHECK_INT(r.deleted_unseen, 0);
  CHECK_INT(r.fetched, 1);
  uidstate_close(st);
}

/* max_size: what is larger than the limit stays on the server, unfetched,
 * undeleted and unrecorded, unless the journal proves it delivered. */
static void test_max_size(void) {
  struct plan_options lim = opt_dele, klim = opt_keep;
  lim.max_size = klim.max_size = 1000;
  struct plan_item it;
  struct plan_rec r = delivered(5000, NOW - 10);
  struct plan_rec failed = {.delivered = 0, .size = 0, .attempts = 3};

  it = plan1(&lim, "A", 1000, NULL); /* at the limit: fetched */
  CHECK(it.action == PLAN_FETCH && it.reason == PLAN_R_NEW);
  it = plan1(&lim, "A", 1001, NULL);
  CHECK(it.action == PLAN_SKIP && it.reason == PLAN_R_OVER_SIZE);
  it = plan1(&klim, "A", 1001, NULL);
  CHECK(it.action == PLAN_SKIP && it.reason == PLAN_R_OVER_SIZE);
  it = plan1(&lim, NULL, 1001, NULL);
  CHECK(it.action == PLAN_SKIP && it.reason == PLAN_R_OVER_SIZE);
  /* Delivered by an earlier run (a higher limit then): deleted, or kept. */
  it = plan1(&lim, "A", 5000, &r);
  CHECK(it.action == PLAN_DELETE && it.reason == PLAN_R_DELIVERED);
  it = plan1(&klim, "A", 5000, &r);
  CHECK(it.action == PLAN_SKIP && it.reason == PLAN_R_KEPT);
  /* Stuck and now over the limit: the limit is why it stays. */
  it = plan1(&lim, "A", 5000, &failed);
  CHECK(it.action == PLAN_SKIP && it.reason == PLAN_R_OVER_SIZE);
  it = plan1(&lim, "A", 500, &failed);
  CHECK(it.action == PLAN_SKIP && it.reason == PLAN_R_STUCK);
  /* Grown on the server: probed; the same content as delivered, another
   * one over the limit left alone. */
  uint8_t same[HDRDIGEST_LEN], other[HDRDIGEST_LEN];
  struct plan_rec g = delivered(900, NOW - 10);
  digest_str(plain_msg, g.digest);
  g.has_digest = 1;
  digest_str(grown_msg, same);
  digest_str("Subject: something else\n\n", other);
  it = plan1(&klim, "A", 1100, &g);
  CHECK(it.action == PLAN_PROBE);
  plan_probed(&klim, &it, same);
  CHECK(it.action == PLAN_SKIP && it.reason == PLAN_R_SAME_CONTENT && it.resize);
  it = plan1(&lim, "A", 1100, &g);
  plan_probed(&lim, &it, other);
  CHECK(it.action == PLAN_SKIP && it.reason == PLAN_R_OVER_SIZE && !it.resize);
  it = plan1(&lim, "A", 1100, &g);
  plan_probed(&lim, &it, NULL);
  CHECK(it.action == PLAN_SKIP && it.reason == PLAN_R_OVER_SIZE);
  g.has_digest = 0;
  it = plan1(&lim, "A", 1100, &g);
  CHECK(it.action == PLAN_SKIP && it.reason == PLAN_R_OVER_SIZE);

  /* Duplicated UIDs over the limit: skipped too; counted in the summary. */
  struct plan_item items[4] = {{.size = 2000, .uid = "X"},
                               {.size = 10, .uid = "X"},
                               {.size = 3000, .uid = "Y"},
                               {.size = 5000, .uid = "Z", .rec = &r}};
  struct plan_summary sum;
  CHECK_INT(plan_listing(&lim, items, 4, &sum), 0);
  CHECK(items[0].action == PLAN_SKIP && items[0].reason == PLAN_R_OVER_SIZE);
  CHECK(items[1].action == PLAN_FETCH && items[1].reason == PLAN_R_DUP_UID);
  CHECK(items[2].action == PLAN_SKIP && items[2].reason == PLAN_R_OVER_SIZE);
  CHECK(items[3].action == PLAN_DELETE);
  CHECK_INT(sum.over_size, 2);
  CHECK_INT(sum.over_bytes, 5000);
  CHECK_INT(sum.skip, 2);
  CHECK_INT(sum.stuck, 0);
  CHECK_INT(sum.already, 1);
  CHECK_INT(sum.fetch, 1);
  /* Nothing is written for a message left over size. */
  struct plan_outcome none = {0};
  CHECK_INT(plan_after(&items[2], &none, 1, 0), PLAN_KEEP_RECORD);
  CHECK_INT(plan_after(&items[2], &none, 0, 1), PLAN_KEEP_RECORD);
  CHECK(plan_keep_after_quit(1, 0));

  /* Runs: the large message stays until the limit is raised, then comes
   * exactly once; with and without keep. */
  for (int keep = 0; keep <= 1; keep++) {
    struct uidstate *st = uidstate_new_memory();
    struct plan_options o = keep ? klim : lim;
    struct server_msg mbox[4] = {{"S1", 500, NULL}, {"BIG", 5000, NULL}, {"S2", 700, NULL}};
    size_t n = 3;
    struct run_result rr = run(st, &o, mbox, &n, 1);
    CHECK_INT(rr.fetched, 2);
    CHECK_INT(rr.action[1], PLAN_SKIP);
    CHECK_INT(n, keep ? 3 : 1);
    CHECK(uidstate_find(st, SRV, "BIG") == NULL); /* not recorded */
    rr = run(st, &o, mbox, &n, 1);                /* the same limit again: nothing new */
    CHECK_INT(rr.fetched, 0);
    CHECK_INT(rr.deleted_unseen, 0);
    o.max_size = 0; /* raised: fetched now, exactly once */
    rr = run(st, &o, mbox, &n, 1);
    CHECK_INT(rr.fetched, 1);
    CHECK_INT(n, keep ? 3 : 0);
    rr = run(st, &o, mbox, &n, 1);
    CHECK_INT(rr.fetched, 0);
    o.max_size = 1000; /* lowered again: a delivered message is not "over size" */
    rr = run(st, &o, mbox, &n, 1);
    CHECK_INT(rr.fetched, 0);
    CHECK_INT(rr.kept, keep ? 3 : 0);
    uidstate_close(st);
  }
}

int main(void) {
  test_digest_rules();
  test_digest_chunks();
  test_single();
  test_keep_growth();
  test_duplicates();
  test_after();
  test_uid_reuse_after_delete();
  test_quit_lost();
  test_keep_then_same_uid();
  test_mailutils_keep();
  test_old_records();
  test_courier();
  test_attempt_after_delivery();
  test_max_size();
  return check_result("test_plan");
}

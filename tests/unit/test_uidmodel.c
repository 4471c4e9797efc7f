/* Unit tests for the pure UID journal model: the line codec, the replay
 * rules and the compaction snapshot, all without a file. */
#include "config.h"

#include "check.h"
#include "uidmodel.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SRV "alice@pop.example:995"

/* Collects a snapshot. */
struct text {
  char buf[65536];
  size_t len;
};

static int collect(void *arg, const char *line, size_t len) {
  struct text *t = arg;

  if (t->len + len >= sizeof(t->buf))
    return -ENOSPC;
  memcpy(t->buf + t->len, line, len);
  t->len += len;
  t->buf[t->len] = '\0';
  return 0;
}

static void test_codec(void) {
  static const char *const lines[] = {
      "D " SRV " U1 10 1700000000.M1P2.host,S=10 1700000000",
      "A " SRV " U2 99 3 17 -ERR no such message",
      "A " SRV " U3 5 1 -4",
      "L " SRV " on 5",
      "L " SRV " off 6",
      "F " SRV " U1 7",
      "R " SRV " U1 8",
      "B 9",
  };
  char out[UIDMODEL_LINE_CAP];

  /* Without a CRC, or with a wrong one, a valid body is corrupt. */
  for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
    struct uidmodel_line l;
    char line[600];
    int n;
    CHECK_INT(uidmodel_parse_line(lines[i], strlen(lines[i]), &l), 1);
    n = snprintf(line, sizeof(line), "%s *00000000", lines[i]);
    CHECK_INT(uidmodel_parse_line(line, (size_t)n, &l), 1);
  }
  /* Round trip through format -> parse -> format. */
  {
    struct uidmodel_line l, back;
    uint8_t digest[UIDMODEL_DIGEST_LEN];
    int n, n2;
    char again[UIDMODEL_LINE_CAP];

    for (size_t i = 0; i < sizeof(digest); i++)
      digest[i] = (uint8_t)(i * 7);
    memset(&l, 0, sizeof(l));
    l.type = 'D';
    l.server = SRV;
    l.server_len = strlen(SRV);
    l.uid = "U1";
    l.uid_len = 2;
    l.size = 1234;
    l.name = "1.M1P2.host";
    l.name_len = strlen(l.name);
    l.when = 1700000000;
    l.has_digest = 1;
    memcpy(l.digest, digest, sizeof(digest));
    n = uidmodel_format_line(&l, out);
    CHECK(n > 0 && out[n - 1] == '\n');
    CHECK_INT(uidmodel_parse_line(out, (size_t)n - 1, &back), 0);
    CHECK_INT(back.type, 'D');
    CHECK_INT(back.size, 1234);
    CHECK_INT(back.when, 1700000000);
    CHECK(back.has_digest && memcmp(back.digest, digest, sizeof(digest)) == 0);
    n2 = uidmodel_format_line(&back, again);
    CHECK_MEM(again, (size_t)n2, out, (size_t)n);
    /* One flipped bit anywhere: corrupt. */
    out[5] ^= 1;
    CHECK_INT(uidmodel_parse_line(out, (size_t)n - 1, &back), 1);
    /* Fields the parser would refuse are refused when formatting. */
    l.name = "a:b";
    l.name_len = 3;
    CHECK_INT(uidmodel_format_line(&l, out), -EINVAL);
    l.name = "ok";
    l.name_len = 2;
    l.uid = "U 1";
    l.uid_len = 3;
    CHECK_INT(uidmodel_format_line(&l, out), -EINVAL);
    l.uid = "U1";
    l.uid_len = 2;
    l.type = 'A';
    l.attempts = 1;
    l.error = "tab\there";
    l.error_len = 8;
    CHECK_INT(uidmodel_format_line(&l, out), -EINVAL);
    l.error = "spaces are fine";
    l.error_len = strlen(l.error);
    n = uidmodel_format_line(&l, out);
    CHECK(n > 0);
    CHECK_INT(uidmodel_parse_line(out, (size_t)n - 1, &back), 0);
    CHECK_MEM(back.error, back.error_len, "spaces are fine", strlen("spaces are fine"));
    CHECK_INT(back.attempts, 1);
    l.type = 'X';
    CHECK_INT(uidmodel_format_line(&l, out), -EINVAL);
  }
}

static void test_replay(void) {
  struct uidmodel *m = uidmodel_new();
  const struct uidstate_rec *r;
  struct uidmodel_line l;
  char *line;
  size_t len;

  CHECK(m != NULL);
  /* A durable D, overridden by a pending one, then F: the durable one is
   * back. */
  CHECK_INT(uidmodel_append_delivered(m, SRV, "U1", 10, "old", 1, NULL, &line, &len), 0);
  free(line);
  CHECK_INT(uidmodel_append_barrier(m, 2, &line, &len), 0);
  free(line);
  CHECK_INT(uidmodel_append_delivered(m, SRV, "U1", 20, "new", 3, NULL, &line, &len), 0);
  /* The line the append handed out applies to another model the same way. */
  {
    struct uidmodel *m2 = uidmodel_new();
    CHECK_INT(uidmodel_parse_line(line, len - 1, &l), 0);
    CHECK_INT(uidmodel_apply(m2, &l), 0);
    r = uidmodel_find(m2, SRV, "U1");
    CHECK(r != NULL && strcmp(r->name, "new") == 0 && r->size == 20);
    uidmodel_free(m2);
  }
  free(line);
  r = uidmodel_find(m, SRV, "U1");
  CHECK(r != NULL && strcmp(r->name, "new") == 0);
  CHECK_INT(uidmodel_append_forget(m, SRV, "U1", 4, &line, &len), 0);
  free(line);
  r = uidmodel_find(m, SRV, "U1");
  CHECK(r != NULL && strcmp(r->name, "old") == 0 && r->size == 10);
  /* F on a durable D with no attempts: the record goes. */
  CHECK_INT(uidmodel_append_forget(m, SRV, "U1", 5, &line, &len), 0);
  free(line);
  CHECK(uidmodel_find(m, SRV, "U1") == NULL);
  /* A counts up; R removes everything. */
  CHECK_INT(uidmodel_append_attempt(m, SRV, "U2", 7, "x", 6, &line, &len), 0);
  free(line);
  CHECK_INT(uidmodel_append_attempt(m, SRV, "U2", 7, "y", 7, &line, &len), 0);
  CHECK(strstr(line, " 2 7 y *") != NULL);
  free(line);
  CHECK_INT(uidmodel_find(m, SRV, "U2")->attempts, 2);
  CHECK_INT(uidmodel_append_retire(m, SRV, "U2", 8, &line, &len), 0);
  free(line);
  CHECK(uidmodel_find(m, SRV, "U2") == NULL);
  /* Invalid input changes nothing. */
  CHECK_INT(uidmodel_append_delivered(m, SRV, "bad uid", 1, "n", 1, NULL, &line, &len), -EINVAL);
  CHECK(line == NULL && len == 0);
  CHECK_INT(uidmodel_append_lockstep(m, NULL, 1, 1, &line, &len), -EINVAL);
  CHECK(uidmodel_find(m, SRV, "bad uid") == NULL);
  CHECK_INT(uidmodel_append_lockstep(m, SRV, 1, 9, &line, &len), 0);
  free(line);
  CHECK_INT(uidmodel_lockstep(m, SRV), 1);
  CHECK_INT(uidmodel_lockstep(m, "other@h:1"), 0);
  uidmodel_free(m);
}

static int present_none(void *arg, const char *name) {
  (void)arg;
  (void)name;
  return 0;
}

static int keep_not_u3(void *data, const struct uidstate_rec *r) {
  (void)data;
  return strcmp(r->uid, "U3") != 0;
}

static int count_names(void *arg, const char *name) {
  (void)name;
  ++*(int *)arg;
  return 0;
}

/* The snapshot reads back to the same records; marks take effect on
 * commit only. */
static void test_snapshot(void) {
  static const char journal[] = UIDMODEL_HEADER "\n";
  struct uidmodel *m = uidmodel_new(), *back = uidmodel_new();
  static struct text t;
  char *line;
  size_t len;
  int names = 0;

  CHECK_INT(uidmodel_parse(m, journal, sizeof(journal) - 1), 0);
  CHECK_INT(uidmodel_corrupt_lines(m), 0);
  CHECK_INT(uidmodel_append_delivered(m, SRV, "U1", 1, "durable", 1, NULL, &line, &len), 0);
  free(line);
  CHECK_INT(uidmodel_append_delivered(m, SRV, "U3", 3, "dropme", 1, NULL, &line, &len), 0);
  free(line);
  CHECK_INT(uidmodel_append_barrier(m, 2, &line, &len), 0);
  free(line);
  CHECK_INT(uidmodel_append_delivered(m, SRV, "U1", 11, "pending", 3, NULL, &line, &len), 0);
  free(line);
  CHECK_INT(uidmodel_append_delivered(m, SRV, "U2", 2, "pending2", 3, NULL, &line, &len), 0);
  free(line);
  CHECK_INT(uidmodel_append_attempt(m, SRV, "U4", 4, "err", 3, &line, &len), 0);
  free(line);
  CHECK_INT(uidmodel_foreach_pending(m, count_names, &names), 2);
  CHECK_INT(names, 2);

  t.len = 0;
  CHECK_INT(uidmodel_snapshot(m, 100, collect, &t), 0);
  CHECK(strncmp(t.buf, UIDMODEL_HEADER "\n", sizeof(UIDMODEL_HEADER)) == 0);
  CHECK(strstr(t.buf, "\nB 100 *") != NULL);
  CHECK_INT(uidmodel_parse(back, t.buf, t.len), 0);
  CHECK_INT(uidmodel_corrupt_lines(back), 0);
  CHECK_STR(uidmodel_find(back, SRV, "U1")->name, "pending");
  CHECK_INT(uidmodel_foreach_pending(back, count_names, &names), 2);
  uidmodel_free(back);

  /* Drop U3, doom both pending D: U1 falls back to its durable D, U2 goes. */
  uidmodel_mark_drop(m, keep_not_u3, NULL);
  CHECK_INT(uidmodel_mark_missing(m, present_none, NULL), 2);
  t.len = 0;
  CHECK_INT(uidmodel_snapshot(m, 101, collect, &t), 0);
  CHECK(strstr(t.buf, "dropme") == NULL && strstr(t.buf, "pending") == NULL);
  CHECK(strstr(t.buf, " U1 1 durable 1 *") != NULL);
  /* Nothing changed in memory before the commit. */
  CHECK_STR(uidmodel_find(m, SRV, "U1")->name, "pending");
  CHECK(uidmodel_find(m, SRV, "U3") != NULL);
  uidmodel_commit_marks(m);
  CHECK_STR(uidmodel_find(m, SRV, "U1")->name, "durable");
  CHECK(uidmodel_find(m, SRV, "U2") == NULL);
  CHECK(uidmodel_find(m, SRV, "U3") == NULL);
  CHECK_INT(uidmodel_find(m, SRV, "U4")->attempts, 1);
  /* The snapshot of the committed model is the one written before. */
  {
    static struct text t2;
    t2.len = 0;
    CHECK_INT(uidmodel_snapshot(m, 101, collect, &t2), 0);
    CHECK_MEM(t2.buf, t2.len, t.buf, t.len);
  }
  /* Clearing instead of committing keeps everything. */
  uidmodel_mark_drop(m, keep_not_u3, NULL);
  CHECK_INT(uidmodel_mark_missing(m, present_none, NULL), 0);
  uidmodel_clear_marks(m);
  CHECK(uidmodel_find(m, SRV, "U1") != NULL);
  uidmodel_free(m);
}

int main(void) {
  test_codec();
  test_replay();
  test_snapshot();
  return check_result("test_uidmodel");
}

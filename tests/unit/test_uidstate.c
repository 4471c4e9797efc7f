#include "config.h"

#include "check.h"
#include "errors.h"
#include "uidstate.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define SRV "joe@pop.example.org:995"
#define SRV2 "ann@mail.example.net:110"

static char dir[PATH_MAX];
static char errbuf[512];

/* ---- helpers */

/* Bit by bit, independent of the table in uidstate.c. */
static uint32_t ref_crc32(const char *s, size_t len) {
  uint32_t c = 0xffffffffU;
  size_t i;
  int k;

  for (i = 0; i < len; i++) {
    c ^= (unsigned char)s[i];
    for (k = 0; k < 8; k++)
      c = (c & 1) ? (c >> 1) ^ 0xedb88320U : c >> 1;
  }
  return ~c;
}

/* A record line with its CRC, from a body (static buffer, one at a time). */
static const char *line_of(const char *body) {
  static char buf[8192];

  snprintf(buf, sizeof(buf), "%s *%08x\n", body, (unsigned)ref_crc32(body, strlen(body)));
  return buf;
}

__attribute__((format(printf, 1, 2))) static const char *path_of(const char *fmt, ...) {
  static char bufs[16][PATH_MAX];
  static int next;
  char *p = bufs[next++ % 16];
  char rel[PATH_MAX / 2];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(rel, sizeof(rel), fmt, ap);
  va_end(ap);
  if ((size_t)snprintf(p, PATH_MAX, "%s/%s", dir, rel) >= PATH_MAX)
    abort();
  return p;
}

static void write_file(const char *path, const char *data, size_t len) {
  FILE *f = fopen(path, "wb");

  CHECK(f != NULL);
  if (f == NULL)
    return;
  CHECK_INT(fwrite(data, 1, len, f), len);
  fclose(f);
}

static void write_str(const char *path, const char *data) {
  write_file(path, data, strlen(data));
}

/* The whole file, malloc'd and NUL-terminated (NULL if unreadable). */
static char *read_all(const char *path, size_t *len_r) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  size_t len = 0, cap = 0, n;

  if (f == NULL)
    return NULL;
  do {
    if (cap - len < 4096) {
      cap = cap * 2 + 4096;
      buf = realloc(buf, cap + 1);
    }
    n = fread(buf + len, 1, cap - len, f);
    len += n;
  } while (n > 0);
  fclose(f);
  buf[len] = '\0';
  if (len_r != NULL)
    *len_r = len;
  return buf;
}

/* Writes a line handed out by an append function to the journal, as the
 * engine does, and frees it. */
static void put(struct uidstate *st, int err, char *line, size_t len) {
  CHECK_INT(err, 0);
  if (err != 0 || line == NULL)
    return;
  CHECK(len > 0 && line[len - 1] == '\n');
  CHECK_INT(write(uidstate_fd(st), line, len), len);
  free(line);
}

static void put_d(struct uidstate *st, const char *srv, const char *uid, uint64_t size,
                  const char *name, time_t when) {
  char *line;
  size_t len;
  int err = uidstate_append_delivered(st, srv, uid, size, name, when, NULL, &line, &len);

  put(st, err, line, len);
}

static void put_a(struct uidstate *st, const char *srv, const char *uid, uint64_t size,
                  const char *error, time_t when) {
  char *line;
  size_t len;
  int err = uidstate_append_attempt(st, srv, uid, size, error, when, &line, &len);

  put(st, err, line, len);
}

static void put_l(struct uidstate *st, const char *srv, int on, time_t when) {
  char *line;
  size_t len;
  int err = uidstate_append_lockstep(st, srv, on, when, &line, &len);

  put(st, err, line, len);
}

static void put_b(struct uidstate *st, time_t when) {
  char *line;
  size_t len;
  int err = uidstate_append_barrier(st, when, &line, &len);

  put(st, err, line, len);
}

static struct uidstate *open_ok(const char *path) {
  struct uidstate *st = NULL;
  int err = uidstate_open(path, "test", &st, errbuf, sizeof(errbuf));

  if (err != 0)
    fprintf(stderr, "uidstate_open(%s): %d %s\n", path, err, errbuf);
  CHECK_INT(err, 0);
  return st;
}

static int count_cb(void *data, const struct uidstate_rec *r) {
  (void)r;
  ++*(size_t *)data;
  return 0;
}

static size_t count_recs(const struct uidstate *st) {
  size_t n = 0;

  uidstate_foreach(st, count_cb, &n);
  return n;
}

/* A sorted text dump of every record, to compare two states. */
struct dump {
  char **lines;
  size_t n, cap;
};

static int dump_cb(void *data, const struct uidstate_rec *r) {
  struct dump *d = data;
  char buf[2048];

  snprintf(buf, sizeof(buf), "%s|%s|%llu|%s|%lld|%u|%s", r->server, r->uid,
           (unsigned long long)r->size, r->name, (long long)r->delivered, r->attempts,
           r->last_error);
  if (d->n == d->cap) {
    d->cap = d->cap * 2 + 16;
    d->lines = realloc(d->lines, d->cap * sizeof(*d->lines));
  }
  d->lines[d->n++] = strdup(buf);
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Malloc'd "line\nline\n..." of the sorted records. */
static char *dump_state(const struct uidstate *st) {
  struct dump d = {NULL, 0, 0};
  size_t i, len = 1;
  char *out;

  uidstate_foreach(st, dump_cb, &d);
  if (d.n > 0)
    qsort(d.lines, d.n, sizeof(*d.lines), cmp_str);
  for (i = 0; i < d.n; i++)
    len += strlen(d.lines[i]) + 1;
  out = malloc(len);
  out[0] = '\0';
  for (i = 0; i < d.n; i++) {
    strcat(out, d.lines[i]);
    strcat(out, "\n");
    free(d.lines[i]);
  }
  free(d.lines);
  return out;
}

static void make_maildir(const char *md) {
  char p[PATH_MAX];

  CHECK_INT(mkdir(md, 0700), 0);
  snprintf(p, sizeof(p), "%s/new", md);
  CHECK_INT(mkdir(p, 0700), 0);
  snprintf(p, sizeof(p), "%s/cur", md);
  CHECK_INT(mkdir(p, 0700), 0);
  snprintf(p, sizeof(p), "%s/tmp", md);
  CHECK_INT(mkdir(p, 0700), 0);
}

/* uidstate_check_files on MD/new and MD/cur, opened as the engine does
 * (maildir_init's fds); a missing one is -1. */
static int check_files(struct uidstate *st, const char *md) {
  char p[PATH_MAX];
  int newfd, curfd, ret;

  snprintf(p, sizeof(p), "%s/new", md);
  newfd = open(p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  snprintf(p, sizeof(p), "%s/cur", md);
  curfd = open(p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  ret = uidstate_check_files(st, newfd, curfd);
  if (newfd >= 0)
    close(newfd);
  if (curfd >= 0)
    close(curfd);
  return ret;
}

static const char *path_with_md(const char *md, const char *rel) {
  static char buf[PATH_MAX];

  if ((size_t)snprintf(buf, sizeof(buf), "%s/%s", md, rel) >= sizeof(buf))
    abort();
  return buf;
}

static void touch(const char *md, const char *sub, const char *name) {
  char p[PATH_MAX];

  snprintf(p, sizeof(p), "%s/%s/%s", md, sub, name);
  write_str(p, "Subject: x\n\nbody\n");
}

/* ---- tests */

static void test_formats(void) {
  struct uidstate *st = uidstate_new_memory();
  char *line, body[1024], longerr[400], longuid[600], *expect;
  size_t len, i;

  CHECK(st != NULL);
  CHECK_INT(uidstate_fd(st), -1);
  CHECK_STR(uidstate_path(st), "");
  CHECK_INT(uidstate_compact(st, NULL, NULL), -EINVAL);

  /* crc32("B 0") as zlib computes it. */
  CHECK_INT(uidstate_append_barrier(st, 0, &line, &len), 0);
  CHECK_STR(line, "B 0 *3f0294b2\n");
  CHECK_INT(len, strlen("B 0 *3f0294b2\n"));
  free(line);
  CHECK_INT(ref_crc32("123456789", 9), 0xcbf43926U);

  CHECK_INT(uidstate_append_delivered(st, SRV, "UID-1", 1234, "1700000000.M1P2.host,S=1234",
                                      1700000000, NULL, &line, &len),
            0);
  CHECK_STR(line, line_of("D " SRV " UID-1 1234 1700000000.M1P2.host,S=1234 1700000000"));
  free(line);

  CHECK_INT(uidstate_append_attempt(st, SRV, "UID-2", 99, "-ERR no\tsuch\r\nmessage", 1700000001,
                                    &line, &len),
            0);
  CHECK_STR(line, line_of("A " SRV " UID-2 99 1 1700000001 -ERR no?such??message"));
  free(line);
  CHECK_INT(uidstate_append_attempt(st, SRV, "UID-2", 99, "", 1700000002, &line, &len), 0);
  CHECK_STR(line, line_of("A " SRV " UID-2 99 2 1700000002"));
  free(line);
  CHECK_INT(uidstate_append_attempt(st, SRV, "UID-3", 5, NULL, 7, &line, &len), 0);
  CHECK_STR(line, line_of("A " SRV " UID-3 5 1 7"));
  free(line);

  /* Capped at 300 bytes, never inside a UTF-8 sequence. */
  memset(longerr, 'x', sizeof(longerr));
  longerr[sizeof(longerr) - 1] = '\0';
  CHECK_INT(uidstate_append_attempt(st, SRV, "UID-4", 1, longerr, 1, &line, &len), 0);
  snprintf(body, sizeof(body), "A " SRV " UID-4 1 1 1 %.300s", longerr);
  CHECK_STR(line, line_of(body));
  free(line);
  memcpy(longerr + 299, "\xc3\xa9", 2); /* é straddles the cap */
  CHECK_INT(uidstate_append_attempt(st, SRV, "UID-5", 1, longerr, 1, &line, &len), 0);
  snprintf(body, sizeof(body), "A " SRV " UID-5 1 1 1 %.299s", longerr);
  CHECK_STR(line, line_of(body));
  free(line);
  CHECK_STR(uidstate_find(st, SRV, "UID-5")->last_error + 298, "x");

  CHECK_INT(uidstate_append_lockstep(st, SRV, 1, 42, &line, &len), 0);
  CHECK_STR(line, line_of("L " SRV " on 42"));
  free(line);
  CHECK_INT(uidstate_append_lockstep(st, SRV, 0, 43, &line, &len), 0);
  CHECK_STR(line, line_of("L " SRV " off 43"));
  free(line);

  /* Bad fields: -EINVAL and no line. */
  line = (char *)"sentinel";
  CHECK_INT(uidstate_append_delivered(st, "joe @h:1", "U", 1, "n", 1, NULL, &line, &len), -EINVAL);
  CHECK(line == NULL);
  CHECK_INT(uidstate_append_delivered(st, "joe\x01@h:1", "U", 1, "n", 1, NULL, &line, &len),
            -EINVAL);
  CHECK_INT(uidstate_append_delivered(st, "", "U", 1, "n", 1, NULL, &line, &len), -EINVAL);
  CHECK_INT(uidstate_append_delivered(st, SRV, "U 2", 1, "n", 1, NULL, &line, &len), -EINVAL);
  CHECK_INT(uidstate_append_delivered(st, SRV, "", 1, "n", 1, NULL, &line, &len), -EINVAL);
  CHECK_INT(uidstate_append_delivered(st, SRV, "U\xc3\xa9", 1, "n", 1, NULL, &line, &len), -EINVAL);
  CHECK_INT(uidstate_append_delivered(st, SRV, "U", 1, "a/b", 1, NULL, &line, &len), -EINVAL);
  CHECK_INT(uidstate_append_delivered(st, SRV, "U", 1, "n:2,S", 1, NULL, &line, &len), -EINVAL);
  CHECK_INT(uidstate_append_delivered(st, SRV, "U", 1, "", 1, NULL, &line, &len), -EINVAL);
  CHECK_INT(uidstate_append_delivered(st, SRV, "U", 1, "a b", 1, NULL, &line, &len), -EINVAL);
  CHECK_INT(uidstate_append_attempt(st, SRV, "U\n", 1, "e", 1, &line, &len), -EINVAL);
  CHECK_INT(uidstate_append_lockstep(st, "a b", 1, 1, &line, &len), -EINVAL);
  /* UIDs of up to 512 octets (RFC 1939 says 70; servers exceed it). */
  memset(longuid, 'u', 513);
  longuid[513] = '\0';
  CHECK_INT(uidstate_append_delivered(st, SRV, longuid, 1, "n", 1, NULL, &line, &len), -EINVAL);
  CHECK_INT(uidstate_append_retire(st, SRV, longuid, 1, &line, &len), -EINVAL);
  longuid[512] = '\0';
  CHECK_INT(uidstate_append_delivered(st, SRV, longuid, 1, "n", 1, NULL, &line, &len), 0);
  free(line);
  CHECK(uidstate_find(st, SRV, longuid) != NULL);
  memset(longerr, 'u', 71);
  longerr[71] = '\0';
  CHECK_INT(uidstate_append_delivered(st, SRV, longerr, 1, "n", 1, NULL, &line, &len), 0);
  free(line);
  longerr[70] = '\0';
  CHECK(uidstate_find(st, SRV, "U") == NULL);

  /* A server of 600 bytes is fine, 601 is not; the longest line fits. */
  expect = malloc(700);
  for (i = 0; i < 601; i++)
    expect[i] = 's';
  expect[601] = '\0';
  CHECK_INT(uidstate_append_delivered(st, expect, "U", 1, "n", 1, NULL, &line, &len), -EINVAL);
  expect[600] = '\0';
  CHECK_INT(
      uidstate_append_attempt(st, expect, longuid, UINT64_MAX, longerr, INT64_MIN, &line, &len), 0);
  CHECK(len <= 4096);
  free(line);
  {
    uint8_t dg[UIDSTATE_DIGEST_LEN];
    memset(dg, 0xab, sizeof dg);
    memset(longerr, 'n', 255);
    longerr[255] = '\0';
    CHECK_INT(uidstate_append_delivered(st, expect, longuid, UINT64_MAX, longerr, INT64_MIN, dg,
                                        &line, &len),
              0);
    CHECK(len <= 4096);
    free(line);
  }
  free(expect);
  uidstate_close(st);
}

static void test_roundtrip(void) {
  const char *path = path_of("rt/sub/acct.state");
  struct uidstate *st = open_ok(path);
  const struct uidstate_rec *r;
  char *text;
  struct stat sb;

  if (st == NULL)
    return;
  CHECK_STR(uidstate_path(st), path);
  CHECK(uidstate_fd(st) >= 0);
  CHECK(fcntl(uidstate_fd(st), F_GETFL) & O_APPEND);
  CHECK(fcntl(uidstate_fd(st), F_GETFD) & FD_CLOEXEC);
  text = read_all(path, NULL);
  CHECK_STR(text, "pop3sync-state 1\n");
  free(text);
  CHECK_INT(stat(path, &sb), 0);
  CHECK_INT(sb.st_mode & 0777, 0600);
  CHECK_INT(stat(path_of("rt/sub"), &sb), 0);
  CHECK_INT(sb.st_mode & 0777, 0700);
  CHECK_INT(stat(path_of("rt/sub/acct.state.lock"), &sb), 0);
  CHECK_INT(sb.st_mode & 0777, 0600);

  put_d(st, SRV, "UID-1", 1234, "1700000000.A.host,S=1234", 1700000000);
  put_d(st, SRV2, "UID-1", 55, "1700000000.B.host,S=55", 1700000001);
  put_a(st, SRV, "UID-2", 777, "-ERR message locked", 1700000002);
  put_l(st, SRV2, 1, 1700000003);
  put_b(st, 1700000004);
  r = uidstate_find(st, SRV, "UID-1");
  CHECK(r != NULL && r->delivered == 1700000000);
  uidstate_close(st);

  st = open_ok(path);
  if (st == NULL)
    return;
  CHECK_INT(uidstate_corrupt_lines(st), 0);
  CHECK_INT(count_recs(st), 3);
  r = uidstate_find(st, SRV, "UID-1");
  CHECK(r != NULL);
  if (r != NULL) {
    CHECK_STR(r->server, SRV);
    CHECK_STR(r->uid, "UID-1");
    CHECK_INT(r->size, 1234);
    CHECK_STR(r->name, "1700000000.A.host,S=1234");
    CHECK_INT(r->delivered, 1700000000);
    CHECK_INT(r->attempts, 0);
    CHECK_STR(r->last_error, "");
  }
  r = uidstate_find(st, SRV2, "UID-1");
  CHECK(r != NULL && r->size == 55 && strcmp(r->name, "1700000000.B.host,S=55") == 0);
  r = uidstate_find(st, SRV, "UID-2");
  CHECK(r != NULL);
  if (r != NULL) {
    CHECK_INT(r->size, 777);
    CHECK_STR(r->name, "");
    CHECK_INT(r->delivered, 0);
    CHECK_INT(r->attempts, 1);
    CHECK_STR(r->last_error, "-ERR message locked");
  }
  CHECK(uidstate_find(st, SRV, "UID-3") == NULL);
  CHECK(uidstate_find(st, "nobody@x:1", "UID-1") == NULL);
  CHECK_INT(uidstate_lockstep(st, SRV2), 1);
  CHECK_INT(uidstate_lockstep(st, SRV), 0);
  CHECK_INT(uidstate_lockstep(st, "nobody@x:1"), 0);
  /* All of it before the B: nothing is pending. */
  CHECK_INT(check_files(st, path_of("no-such-maildir")), 0);
  uidstate_close(st);
}

static void test_crc_corruption(void) {
  const char *path = path_of("crc.state");
  char *text, *p;
  struct uidstate *st;

  text = malloc(4096);
  strcpy(text, "pop3sync-state 1\n");
  strcat(text, line_of("D " SRV " U1 10 n1 100"));
  strcat(text, line_of("D " SRV " U2 20 n2 200"));
  strcat(text, line_of("D " SRV " U3 30 n3 300"));
  strcat(text, line_of("B 400"));
  p = strstr(text, "U2 20");
  p[3] = '1'; /* 20 -> 10: the CRC no longer matches */
  write_str(path, text);
  st = open_ok(path);
  if (st != NULL) {
    CHECK_INT(uidstate_corrupt_lines(st), 1);
    CHECK(uidstate_find(st, SRV, "U1") != NULL);
    CHECK(uidstate_find(st, SRV, "U2") == NULL);
    CHECK(uidstate_find(st, SRV, "U3") != NULL);
    CHECK_INT(count_recs(st), 2);
    uidstate_close(st);
  }
  /* The CRC itself damaged, or in capitals, or missing. */
  strcpy(text, "pop3sync-state 1\n");
  strcat(text, line_of("D " SRV " U1 10 n1 100"));
  p = strchr(text + 17, '*');
  p[1] = p[1] == 'f' ? '0' : 'f';
  strcat(text, "D " SRV " U2 20 n2 200\n");
  strcat(text, line_of("D " SRV " U3 30 n3 300"));
  for (p = strrchr(text, '*'); *p != '\n'; p++)
    if (*p >= 'a' && *p <= 'f')
      *p = (char)(*p - 'a' + 'A');
  strcat(text, line_of("D " SRV " U4 40 n4 400"));
  strcat(text, line_of("D " SRV "  U5 50 n5 500"));                /* two spaces */
  strcat(text, line_of("D " SRV " U6 60 n6 600 x"));               /* a field too many */
  strcat(text, line_of("D " SRV " U7 -1 n7 600"));                 /* a negative size */
  strcat(text, line_of("A " SRV " U8 1 0 600 e"));                 /* 0 attempts */
  strcat(text, line_of("L " SRV " maybe 600"));                    /* neither on nor off */
  strcat(text, line_of("X " SRV " U9 1 n 1"));                     /* unknown type */
  strcat(text, line_of("D " SRV " U10 18446744073709551616 n 1")); /* 2^64 */
  strcat(text, "\n");                                              /* empty line */
  write_str(path, text);
  st = open_ok(path);
  if (st != NULL) {
    CHECK_INT(uidstate_corrupt_lines(st), 11);
    CHECK_INT(count_recs(st), 1);
    CHECK(uidstate_find(st, SRV, "U4") != NULL);
    uidstate_close(st);
  }
  free(text);
}

static void test_torn(void) {
  const char *path = path_of("torn.state");
  char text[4096], *after;
  const char *l2;
  struct uidstate *st;
  size_t len;

  snprintf(text, sizeof(text), "pop3sync-state 1\n%s", line_of("D " SRV " U1 10 n1 100"));
  len = strlen(text);
  l2 = line_of("D " SRV " U2 20 n2 200");
  strncat(text, l2, 20); /* a write cut short */
  write_str(path, text);
  st = open_ok(path);
  if (st == NULL)
    return;
  CHECK_INT(uidstate_corrupt_lines(st), 1);
  CHECK(uidstate_find(st, SRV, "U1") != NULL);
  CHECK(uidstate_find(st, SRV, "U2") == NULL);
  /* The fragment is gone, so the next line does not glue onto it. */
  after = read_all(path, NULL);
  CHECK_INT(strlen(after), len);
  free(after);
  put_d(st, SRV, "U3", 30, "n3", 300);
  uidstate_close(st);
  st = open_ok(path);
  if (st == NULL)
    return;
  CHECK_INT(uidstate_corrupt_lines(st), 0);
  CHECK(uidstate_find(st, SRV, "U3") != NULL);
  uidstate_close(st);

  /* A whole line but for its newline is torn as well. */
  snprintf(text, sizeof(text), "pop3sync-state 1\n%s", line_of("D " SRV " U1 10 n1 100"));
  strcat(text, line_of("D " SRV " U2 20 n2 200"));
  text[strlen(text) - 1] = '\0';
  write_str(path, text);
  st = open_ok(path);
  if (st == NULL)
    return;
  CHECK_INT(uidstate_corrupt_lines(st), 1);
  CHECK(uidstate_find(st, SRV, "U2") == NULL);
  uidstate_close(st);

  /* Only a torn header: the file starts over. */
  write_str(path, "pop3sy");
  st = open_ok(path);
  if (st == NULL)
    return;
  CHECK_INT(uidstate_corrupt_lines(st), 1);
  uidstate_close(st);
  after = read_all(path, NULL);
  CHECK_STR(after, "pop3sync-state 1\n");
  free(after);
}

static void test_garbage(void) {
  const char *path = path_of("garbage.state");
  size_t n = 256 * 1024, i;
  uint32_t x = 12345;
  struct uidstate *st;
  char *buf = malloc(n);

  for (i = 0; i < n; i++) {
    x = x * 1103515245U + 12345U;
    buf[i] = (char)(x >> 16);
  }
  write_file(path, buf, n);
  st = open_ok(path);
  if (st != NULL) {
    CHECK_INT(count_recs(st), 0);
    CHECK(uidstate_corrupt_lines(st) > 0);
    uidstate_close(st);
  }
  /* Printable garbage with newlines, and lines far over the cap. */
  for (i = 0; i < n; i++)
    buf[i] = (i % 5000 == 4999) ? '\n' : " DABL*0123456789abcdef"[i % 22];
  st = uidstate_new_memory();
  CHECK_INT(uidstate_parse(st, buf, n), 0);
  CHECK_INT(count_recs(st), 0);
  CHECK_INT(uidstate_corrupt_lines(st), n / 5000 + 1);
  uidstate_close(st);
  free(buf);
}

static void test_header(void) {
  const char *path = path_of("header.state");
  char text[4096], *after;
  struct uidstate *st;

  snprintf(text, sizeof(text), "pop3sync-state 2\n%s", line_of("D " SRV " U1 10 n1 100"));
  write_str(path, text);
  st = open_ok(path);
  if (st != NULL) {
    CHECK_INT(uidstate_corrupt_lines(st), 1);
    CHECK(uidstate_find(st, SRV, "U1") != NULL);
    uidstate_close(st);
  }
  /* The header line lost: its first record still counts. */
  snprintf(text, sizeof(text), "%s", line_of("D " SRV " U1 10 n1 100"));
  strcat(text, line_of("D " SRV " U2 20 n2 200"));
  write_str(path, text);
  st = open_ok(path);
  if (st != NULL) {
    CHECK_INT(uidstate_corrupt_lines(st), 1);
    CHECK_INT(count_recs(st), 2);
    uidstate_close(st);
  }
  /* The header later in the file is just a bad line. */
  snprintf(text, sizeof(text), "pop3sync-state 1\npop3sync-state 1\n");
  write_str(path, text);
  st = open_ok(path);
  if (st != NULL) {
    CHECK_INT(uidstate_corrupt_lines(st), 1);
    uidstate_close(st);
  }
  /* An existing empty file gets its header. */
  write_str(path, "");
  st = open_ok(path);
  if (st != NULL) {
    CHECK_INT(uidstate_corrupt_lines(st), 0);
    uidstate_close(st);
  }
  after = read_all(path, NULL);
  CHECK_STR(after, "pop3sync-state 1\n");
  free(after);
}

static void test_barrier(void) {
  const char *path = path_of("barrier.state");
  const char *md = path_of("Maildir");
  const struct uidstate_rec *r;
  struct uidstate *st;
  char *text;

  make_maildir(md);
  st = open_ok(path);
  if (st == NULL)
    return;
  put_d(st, SRV, "U1", 10, "gone-durable", 100); /* read and deleted by the user */
  put_d(st, SRV, "U5", 50, "old-five", 100);     /* durable, overridden below */
  put_b(st, 150);
  put_d(st, SRV, "U2", 20, "gone-pending", 200); /* rename undone by a power loss */
  put_d(st, SRV, "U3", 30, "in-new", 200);
  put_d(st, SRV, "U4", 40, "in-cur", 200);
  put_d(st, SRV, "U5", 55, "new-five", 200); /* came back with other content */
  put_a(st, SRV, "U6", 60, "-ERR x", 200);   /* attempts only */
  put_d(st, SRV2, "U2", 20, "gone-too", 200);
  put_a(st, SRV2, "U2", 21, "size changed", 201); /* pending D with attempts */
  uidstate_close(st);
  touch(md, "new", "in-new");
  touch(md, "cur", "in-cur:2,S");
  touch(md, "cur", "gone-pendingX:2,S"); /* a longer name is not a match */
  touch(md, "new", "unrelated");

  st = open_ok(path);
  if (st == NULL)
    return;
  CHECK_INT(count_recs(st), 7);
  CHECK_INT(check_files(st, md), 3);
  CHECK(uidstate_find(st, SRV, "U1") != NULL);
  CHECK(uidstate_find(st, SRV, "U2") == NULL);
  CHECK(uidstate_find(st, SRV, "U3") != NULL);
  CHECK(uidstate_find(st, SRV, "U4") != NULL);
  r = uidstate_find(st, SRV, "U5");
  CHECK(r != NULL && strcmp(r->name, "old-five") == 0 && r->size == 50 && r->delivered == 100);
  CHECK(uidstate_find(st, SRV, "U6") != NULL);
  r = uidstate_find(st, SRV2, "U2");
  CHECK(r != NULL && r->delivered == 0 && r->attempts == 1 && r->size == 21 &&
        strcmp(r->name, "") == 0 && strcmp(r->last_error, "size changed") == 0);
  text = dump_state(st);
  /* The drop is on disk too: a later B must not bring them back. */
  put_b(st, 300);
  uidstate_close(st);
  CHECK(access(path_of("barrier.state.tmp"), F_OK) != 0);
  st = open_ok(path);
  if (st != NULL) {
    char *again = dump_state(st);
    CHECK_STR(again, text);
    CHECK_INT(uidstate_corrupt_lines(st), 0);
    free(again);
    uidstate_close(st);
  }
  free(text);

  /* Without any B every D is pending; present files keep theirs. */
  st = uidstate_new_memory();
  text = malloc(4096);
  snprintf(text, 4096, "pop3sync-state 1\n%s", line_of("D " SRV " U1 10 in-new 100"));
  strcat(text, line_of("D " SRV " U2 20 nowhere 100"));
  CHECK_INT(uidstate_parse(st, text, strlen(text)), 0);
  CHECK_INT(check_files(st, md), 1);
  CHECK(uidstate_find(st, SRV, "U1") != NULL);
  CHECK(uidstate_find(st, SRV, "U2") == NULL);
  /* A file found is no proof of a durable rename: U1 stays pending. */
  CHECK_INT(check_files(st, md), 0);
  CHECK_INT(check_files(st, path_of("no-such-maildir")), 1);
  CHECK_INT(count_recs(st), 0);
  uidstate_close(st);

  /* A missing Maildir: every pending D goes (when in doubt, deliver). */
  st = uidstate_new_memory();
  CHECK_INT(uidstate_parse(st, text, strlen(text)), 0);
  CHECK_INT(check_files(st, path_of("no-such-maildir")), 2);
  CHECK_INT(count_recs(st), 0);
  uidstate_close(st);
  free(text);

  /* An appended D is pending until an appended B. */
  st = uidstate_new_memory();
  {
    char *line;
    size_t len;
    CHECK_INT(uidstate_append_delivered(st, SRV, "U1", 1, "nowhere", 1, NULL, &line, &len), 0);
    free(line);
    CHECK_INT(uidstate_append_barrier(st, 2, &line, &len), 0);
    free(line);
    CHECK_INT(uidstate_append_delivered(st, SRV, "U2", 1, "nowhere2", 3, NULL, &line, &len), 0);
    free(line);
  }
  CHECK_INT(check_files(st, md), 1);
  CHECK(uidstate_find(st, SRV, "U1") != NULL);
  CHECK(uidstate_find(st, SRV, "U2") == NULL);
  uidstate_close(st);
}

static void test_override_and_attempts(void) {
  const char *path = path_of("attempts.state");
  const struct uidstate_rec *r;
  struct uidstate *st;
  char text[4096], *file, *p;
  int n;

  st = open_ok(path);
  if (st == NULL)
    return;
  put_d(st, SRV, "U1", 10, "first", 100);
  put_d(st, SRV, "U1", 11, "second", 101);
  put_a(st, SRV, "U2", 20, "one", 102);
  put_a(st, SRV, "U2", 20, "two", 103);
  put_a(st, SRV, "U2", 20, "three", 104);
  put_d(st, SRV, "U3", 30, "three", 105);
  put_a(st, SRV, "U3", 31, "size mismatch", 106); /* keeps the delivery */
  put_a(st, SRV, "U4", 40, "x", 107);
  put_d(st, SRV, "U4", 40, "four", 108); /* resets attempts */
  put_b(st, 109);
  uidstate_close(st);

  /* The A lines carry the running total. */
  file = read_all(path, NULL);
  for (n = 1, p = file; n <= 3; n++) {
    char want[128];
    snprintf(want, sizeof(want), "A " SRV " U2 20 %d %d ", n, 101 + n);
    p = strstr(p, want);
    CHECK(p != NULL);
    if (p == NULL)
      break;
  }
  free(file);

  st = open_ok(path);
  if (st == NULL)
    return;
  r = uidstate_find(st, SRV, "U1");
  CHECK(r != NULL && strcmp(r->name, "second") == 0 && r->size == 11 && r->delivered == 101);
  r = uidstate_find(st, SRV, "U2");
  CHECK(r != NULL && r->attempts == 3 && strcmp(r->last_error, "three") == 0 && r->delivered == 0);
  r = uidstate_find(st, SRV, "U3");
  CHECK(r != NULL && r->attempts == 1 && r->delivered == 105 && strcmp(r->name, "three") == 0 &&
        r->size == 31 && strcmp(r->last_error, "size mismatch") == 0);
  r = uidstate_find(st, SRV, "U4");
  CHECK(r != NULL && r->attempts == 0 && strcmp(r->last_error, "") == 0 && r->delivered == 108);
  put_a(st, SRV, "U2", 20, "four", 110);
  CHECK_INT(uidstate_find(st, SRV, "U2")->attempts, 4);
  uidstate_close(st);

  /* Reading sets the count an A line carries; it never adds up. */
  snprintf(text, sizeof(text), "pop3sync-state 1\n%s",
           line_of("A " SRV " U9 5 5 1 error with  two spaces "));
  strcat(text, line_of("A " SRV " U9 6 2 2 later"));
  strcat(text, line_of("A " SRV " U8 6 4294967295 2"));
  strcat(text, line_of("A " SRV " U7 6 4294967296 2"));
  strcat(text, line_of("D " SRV " U6 6 six 0"));
  st = uidstate_new_memory();
  CHECK_INT(uidstate_parse(st, text, strlen(text)), 0);
  r = uidstate_find(st, SRV, "U9");
  CHECK(r != NULL && r->attempts == 2 && r->size == 6 && strcmp(r->last_error, "later") == 0);
  CHECK(uidstate_find(st, SRV, "U8") != NULL && uidstate_find(st, SRV, "U8")->attempts == UINT_MAX);
  CHECK(uidstate_find(st, SRV, "U7") == NULL);
  /* A D stamped 0 still reads as delivered. */
  CHECK(uidstate_find(st, SRV, "U6") != NULL && uidstate_find(st, SRV, "U6")->delivered != 0);
  CHECK_INT(uidstate_corrupt_lines(st), 1);
  uidstate_close(st);

  snprintf(text, sizeof(text), "pop3sync-state 1\n%s",
           line_of("A " SRV " U9 5 5 1 error with  two spaces "));
  st = uidstate_new_memory();
  CHECK_INT(uidstate_parse(st, text, strlen(text)), 0);
  CHECK_STR(uidstate_find(st, SRV, "U9")->last_error, "error with  two spaces ");
  uidstate_close(st);
}

static void test_lockstep(void) {
  const char *path = path_of("lockstep.state");
  struct uidstate *st = open_ok(path);

  if (st == NULL)
    return;
  CHECK_INT(uidstate_lockstep(st, SRV), 0);
  put_l(st, SRV, 1, 1);
  put_l(st, SRV2, 1, 1);
  CHECK_INT(uidstate_lockstep(st, SRV), 1);
  put_l(st, SRV2, 0, 2);
  CHECK_INT(uidstate_lockstep(st, SRV2), 0);
  uidstate_close(st);
  st = open_ok(path);
  if (st == NULL)
    return;
  CHECK_INT(uidstate_lockstep(st, SRV), 1);
  CHECK_INT(uidstate_lockstep(st, SRV2), 0);
  CHECK_INT(count_recs(st), 0);
  put_l(st, SRV, 0, 3);
  uidstate_close(st);
  st = open_ok(path);
  if (st == NULL)
    return;
  CHECK_INT(uidstate_lockstep(st, SRV), 0);
  uidstate_close(st);
}

static int keep_not_u2(void *data, const struct uidstate_rec *r) {
  ++*(int *)data;
  return strcmp(r->uid, "U2") != 0;
}

static void test_compact(void) {
  const char *path = path_of("compact.state");
  const char *md = path_of("Maildir2");
  struct uidstate *st;
  char *before, *after, *file, *file2;
  int calls = 0, i;

  make_maildir(md);
  st = open_ok(path);
  if (st == NULL)
    return;
  for (i = 0; i < 50; i++) {
    char uid[16], name[32];
    snprintf(uid, sizeof(uid), "X%d", i);
    snprintf(name, sizeof(name), "x%d", i);
    put_d(st, SRV2, uid, (uint64_t)i, name, 50 + i);
    put_d(st, SRV2, uid, (uint64_t)i + 1, name, 100 + i); /* superseded */
  }
  put_d(st, SRV, "U1", 10, "one", 100);
  put_d(st, SRV, "U2", 20, "two", 100);
  put_d(st, SRV, "U5", 50, "five-old", 100);
  put_a(st, SRV, "U3", 30, "-ERR busy", 100);
  put_a(st, SRV, "U3", 30, "-ERR still busy", 101);
  put_l(st, SRV, 1, 100);
  put_l(st, SRV2, 1, 100);
  put_l(st, SRV2, 0, 101);
  put_b(st, 102);
  put_d(st, SRV, "U4", 40, "pending-four", 103); /* after the last B */
  put_d(st, SRV, "U5", 55, "five-new", 103);     /* pending over durable */
  put_a(st, SRV, "U5", 56, "changed again", 104);
  put_a(st, SRV, "U1", 11, "size mismatch", 104);

  CHECK_INT(uidstate_compact(st, keep_not_u2, &calls), 0);
  CHECK_INT(calls, 55);
  CHECK(access(path_of("compact.state.tmp"), F_OK) != 0);
  CHECK(uidstate_find(st, SRV, "U2") == NULL);
  CHECK_INT(count_recs(st), 54);
  before = dump_state(st);
  file = read_all(path, NULL);
  CHECK(strncmp(file, "pop3sync-state 1\n", 17) == 0);
  CHECK(strstr(file, " two ") == NULL);
  CHECK(strstr(file, "L " SRV " on 100 *") != NULL);
  CHECK(strstr(file, "L " SRV2) == NULL);
  /* The fd is the new file's, still O_APPEND. */
  CHECK(fcntl(uidstate_fd(st), F_GETFL) & O_APPEND);
  put_d(st, SRV, "U6", 60, "six", 105);
  uidstate_close(st);

  st = open_ok(path);
  if (st == NULL) {
    free(before);
    free(file);
    return;
  }
  CHECK_INT(uidstate_corrupt_lines(st), 0);
  CHECK(uidstate_find(st, SRV, "U6") != NULL);
  CHECK_INT(count_recs(st), 55);
  CHECK_INT(uidstate_lockstep(st, SRV), 1);
  CHECK_INT(uidstate_lockstep(st, SRV2), 0);
  /* U4, U5's new D and U6 are still pending after the rewrite; U5 falls
   * back on its durable D, keeping the size its A line set. */
  touch(md, "new", "six");
  CHECK_INT(check_files(st, md), 2);
  CHECK(uidstate_find(st, SRV, "U4") == NULL);
  CHECK(uidstate_find(st, SRV, "U5") != NULL &&
        strcmp(uidstate_find(st, SRV, "U5")->name, "five-old") == 0 &&
        uidstate_find(st, SRV, "U5")->size == 56 && uidstate_find(st, SRV, "U5")->attempts == 1);
  uidstate_close(st);

  /* Same records after a plain compaction and a reopen. */
  st = open_ok(path);
  if (st == NULL) {
    free(before);
    free(file);
    return;
  }
  free(before);
  before = dump_state(st);
  CHECK_INT(uidstate_compact(st, NULL, NULL), 0);
  after = dump_state(st);
  CHECK_STR(after, before);
  free(after);
  uidstate_close(st);
  st = open_ok(path);
  if (st != NULL) {
    after = dump_state(st);
    CHECK_STR(after, before);
    free(after);

    /* A failed rewrite leaves file, fd and memory as they were. */
    free(file);
    file = read_all(path, NULL);
    CHECK_INT(mkdir(path_of("compact.state.tmp"), 0700), 0);
    calls = 0;
    CHECK(uidstate_compact(st, keep_not_u2, &calls) < 0);
    CHECK(uidstate_compact(st, NULL, NULL) < 0);
    file2 = read_all(path, NULL);
    CHECK_STR(file2, file);
    free(file2);
    after = dump_state(st);
    CHECK_STR(after, before);
    free(after);
    put_d(st, SRV, "U7", 70, "seven", 106);
    uidstate_close(st);
    CHECK_INT(rmdir(path_of("compact.state.tmp")), 0);
    st = open_ok(path);
    if (st != NULL) {
      CHECK(uidstate_find(st, SRV, "U7") != NULL);
      CHECK_INT(count_recs(st), 55);
      uidstate_close(st);
    }
  }
  free(before);
  free(file);
}

/* The child, forked before the parent opened the state: for each byte the
 * parent sends it tries to open the state and answers 'L' (locked, with
 * the expected message), 'O' (opened and closed again) or 'E'. */
static void lock_child(const char *path, int in, int out) {
  char go, want[512], eb[512];

  while (read(in, &go, 1) == 1) {
    struct uidstate *c = NULL;
    int err = uidstate_open(path, "child", &c, eb, sizeof(eb));
    char ans = 'E';
    snprintf(want, sizeof(want), "%s is locked by pid %ld (test)", path, (long)getppid());
    if (err == P3_ELOCKED && c == NULL && strcmp(eb, want) == 0)
      ans = 'L';
    else if (err == 0 && c != NULL)
      ans = 'O';
    else
      fprintf(stderr, "child: %d %s\n", err, eb);
    uidstate_close(c);
    if (write(out, &ans, 1) != 1)
      break;
  }
}

static char ask_child(int to, int from) {
  char c = 'g';

  if (write(to, &c, 1) != 1 || read(from, &c, 1) != 1)
    return '?';
  return c;
}

static void test_lock(void) {
  const char *path = path_of("lock/acct.state");
  struct uidstate *st, *st2 = NULL;
  char want[512], *content;
  int to_child[2], from_child[2];
  pid_t pid;
  int status;

  CHECK_INT(pipe(to_child), 0);
  CHECK_INT(pipe(from_child), 0);
  pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    close(to_child[1]);
    close(from_child[0]);
    lock_child(path, to_child[0], from_child[1]);
    _exit(0);
  }
  close(to_child[0]);
  close(from_child[1]);

  st = open_ok(path);
  if (st != NULL) {
    content = read_all(path_of("lock/acct.state.lock"), NULL);
    snprintf(want, sizeof(want), "pid %ld (test)\n", (long)getpid());
    CHECK_STR(content, want);
    free(content);

    /* Another process is refused and told who holds it. */
    CHECK_INT(ask_child(to_child[1], from_child[0]), 'L');
    /* The refused run did not erase the holder's line. */
    content = read_all(path_of("lock/acct.state.lock"), NULL);
    CHECK_STR(content, want);
    free(content);

    /* In this process too: flock is per open file description. */
    snprintf(want, sizeof(want), "%s is locked by pid %ld (test)", path, (long)getpid());
    CHECK_INT(uidstate_open(path, "again", &st2, errbuf, sizeof(errbuf)), P3_ELOCKED);
    CHECK(st2 == NULL);
    CHECK_STR(errbuf, want);

    uidstate_close(st);
    CHECK_INT(ask_child(to_child[1], from_child[0]), 'O');
    st = open_ok(path);
    uidstate_close(st);
  }
  close(to_child[1]);
  close(from_child[0]);
  CHECK_INT(waitpid(pid, &status, 0), pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_open_errors(void) {
  struct uidstate *st = (struct uidstate *)&st;
  char want[PATH_MAX + 64];
  const char *path;
  int fd;

  /* A directory. */
  path = path_of("isdir.state");
  CHECK_INT(mkdir(path, 0700), 0);
  CHECK_INT(uidstate_open(path, "test", &st, errbuf, sizeof(errbuf)), -EISDIR);
  CHECK(st == NULL);
  snprintf(want, sizeof(want), "%s is a directory", path);
  CHECK_STR(errbuf, want);
  CHECK(access(path_of("isdir.state.lock"), F_OK) != 0);

  /* A parent that cannot be created: a component is a plain file. */
  write_str(path_of("plainfile"), "x");
  path = path_of("plainfile/sub/acct.state");
  CHECK(uidstate_open(path, "test", &st, errbuf, sizeof(errbuf)) < 0);
  snprintf(want, sizeof(want), "cannot create directory %s: %s", path_of("plainfile/sub"),
           strerror(ENOTDIR));
  CHECK_STR(errbuf, want);
  path = path_of("plainfile/acct.state");
  CHECK_INT(uidstate_open(path, "test", &st, errbuf, sizeof(errbuf)), -ENOTDIR);
  CHECK(strstr(errbuf, path_of("plainfile")) != NULL);

  /* Errors name the file.  A symlink is never followed. */
  path = path_of("loop.state");
  CHECK_INT(symlink(path, path), 0);
  CHECK_INT(uidstate_open(path, "test", &st, errbuf, sizeof(errbuf)), P3_EUNSAFE);
  snprintf(want, sizeof(want), "%s is a symbolic link; refusing to follow it", path);
  CHECK_STR(errbuf, want);

  /* Too large to read: refused, not read. */
  path = path_of("huge.state");
  fd = open(path, O_WRONLY | O_CREAT, 0600);
  CHECK(fd >= 0);
  CHECK_INT(ftruncate(fd, ((off_t)256 << 20) + 1), 0);
  close(fd);
  CHECK_INT(uidstate_open(path, "test", &st, errbuf, sizeof(errbuf)), -EFBIG);
  CHECK(strstr(errbuf, path) != NULL && strstr(errbuf, "too large") != NULL);

  CHECK_INT(uidstate_open("", "test", &st, errbuf, sizeof(errbuf)), -EINVAL);
  /* errbuf may be left out. */
  CHECK_INT(uidstate_open(path, "test", &st, NULL, 0), -EFBIG);
}

/* The bytes and mtime of a file, to show it was not touched. */
struct snap {
  char *data;
  size_t len;
  struct timespec mtime;
  nlink_t nlink;
};

static void snap_take(const char *path, struct snap *sn) {
  struct stat sb;

  sn->data = read_all(path, &sn->len);
  CHECK(sn->data != NULL);
  CHECK_INT(stat(path, &sb), 0);
  sn->mtime = sb.st_mtim;
  sn->nlink = sb.st_nlink;
}

static void snap_same(const char *path, struct snap *sn) {
  struct stat sb;
  size_t len;
  char *now = read_all(path, &len);

  CHECK(now != NULL);
  if (now != NULL && sn->data != NULL)
    CHECK_MEM(now, len, sn->data, sn->len);
  CHECK_INT(stat(path, &sb), 0);
  CHECK_INT(sb.st_mtim.tv_sec, sn->mtime.tv_sec);
  CHECK_INT(sb.st_mtim.tv_nsec, sn->mtime.tv_nsec);
  free(now);
  free(sn->data);
  sn->data = NULL;
}

/* expect_unsafe(PATH, WORDS): uidstate_open refuses with P3_EUNSAFE and a
 * message that names PATH and holds WORDS. */
static void expect_unsafe(const char *path, const char *named, const char *words, int line) {
  struct uidstate *st = (struct uidstate *)&st;
  int err = uidstate_open(path, "test", &st, errbuf, sizeof(errbuf));

  if (err != P3_EUNSAFE || st != NULL || strstr(errbuf, named) == NULL ||
      strstr(errbuf, words) == NULL) {
    fprintf(stderr,
            "line %d: uidstate_open(%s) = %d \"%s\"; expected P3_EUNSAFE naming %s "
            "with \"%s\"\n",
            line, path, err, errbuf, named, words);
    check_failures++;
  }
  if (err == 0)
    uidstate_close(st);
}

static void test_unsafe_files(void) {
  char victim[PATH_MAX], sub[PATH_MAX], want[PATH_MAX + 64];
  struct uidstate *st;
  struct snap sn;
  const char *path;
  mode_t old_umask;
  struct stat sb;

  CHECK_INT(p3_exit_status(P3_EUNSAFE), 78);
  snprintf(victim, sizeof(victim), "%s", path_of("victim"));
  write_str(victim, "precious: not a journal\n");

  /* The state a symlink to another file: refused before anything is
   * created, the target untouched. */
  path = path_of("link.state");
  CHECK_INT(symlink(victim, path), 0);
  snap_take(victim, &sn);
  expect_unsafe(path, path, "is a symbolic link; refusing to follow it", __LINE__);
  snap_same(victim, &sn);
  CHECK(access(path_of("link.state.lock"), F_OK) != 0);

  /* The lock file a symlink. */
  path = path_of("locklink.state");
  CHECK_INT(symlink(victim, path_of("locklink.state.lock")), 0);
  snap_take(victim, &sn);
  expect_unsafe(path, path_of("locklink.state.lock"), "is a symbolic link", __LINE__);
  snap_same(victim, &sn);

  /* The state with a second hard link (to somebody's file, say). */
  path = path_of("linked.state");
  CHECK_INT(link(victim, path), 0);
  snap_take(victim, &sn);
  expect_unsafe(path, path, "2 hard links", __LINE__);
  snap_same(victim, &sn);
  CHECK(sn.nlink == 2);

  /* Not a regular file: a FIFO. */
  path = path_of("fifo.state");
  CHECK_INT(mkfifo(path, 0600), 0);
  expect_unsafe(path, path, "not a regular file", __LINE__);

  /* A directory that group or others may write to. */
  CHECK_INT(mkdir(path_of("gw"), 0700), 0);
  CHECK_INT(chmod(path_of("gw"), 0770), 0);
  path = path_of("gw/acct.state");
  snprintf(want, sizeof(want), "its directory %s is writable by group or others", path_of("gw"));
  expect_unsafe(path, path, want, __LINE__);
  CHECK(access(path_of("gw/acct.state"), F_OK) != 0);
  CHECK(access(path_of("gw/acct.state.lock"), F_OK) != 0);
  CHECK_INT(chmod(path_of("gw"), 01777), 0); /* sticky does not help */
  expect_unsafe(path, path, "writable by group or others", __LINE__);
  CHECK_INT(chmod(path_of("gw"), 0755), 0);
  st = open_ok(path);
  uidstate_close(st);

  /* Directories it creates are 0700 whatever the umask. */
  old_umask = umask(0);
  st = open_ok(path_of("made/a/b/acct.state"));
  uidstate_close(st);
  umask(old_umask);
  CHECK_INT(stat(path_of("made/a"), &sb), 0);
  CHECK_INT(sb.st_mode & 07777, 0700);
  CHECK_INT(stat(path_of("made/a/b"), &sb), 0);
  CHECK_INT(sb.st_mode & 07777, 0700);

  /* Owned by somebody else: a file, a directory (root only). */
  if (geteuid() == 0) {
    path = path_of("theirs.state");
    write_str(path, "pop3sync-state 1\n");
    CHECK_INT(chown(path, 65534, 65534), 0);
    expect_unsafe(path, path, "belongs to uid 65534", __LINE__);
    CHECK_INT(mkdir(path_of("theirdir"), 0700), 0);
    CHECK_INT(chown(path_of("theirdir"), 65534, 65534), 0);
    path = path_of("theirdir/acct.state");
    snprintf(want, sizeof(want), "its directory %s belongs to uid 65534", path_of("theirdir"));
    expect_unsafe(path, path, want, __LINE__);
    CHECK(access(path_of("theirdir/acct.state.lock"), F_OK) != 0);
  } else {
    fprintf(stderr, "test_uidstate: foreign owner checks skipped (not root)\n");
  }

  /* A PATH.tmp left as a symlink to a decoy: compaction replaces the
   * link, never writes through it. */
  path = path_of("compact.state");
  st = open_ok(path);
  if (st != NULL) {
    put_d(st, SRV, "U1", 10, "n1", 100);
    snprintf(sub, sizeof(sub), "%s.tmp", path);
    CHECK_INT(symlink(victim, sub), 0);
    snap_take(victim, &sn);
    CHECK_INT(uidstate_compact(st, NULL, NULL), 0);
    snap_same(victim, &sn);
    CHECK(access(sub, F_OK) != 0);
    CHECK_INT(lstat(path, &sb), 0);
    CHECK(S_ISREG(sb.st_mode) && sb.st_nlink == 1);
    uidstate_close(st);
    st = open_ok(path);
    CHECK(st != NULL && uidstate_find(st, SRV, "U1") != NULL);
    uidstate_close(st);
  }
}

/* check_files counts only regular files in new/ and cur/: a symlink with
 * a delivered name proves nothing. */
static void test_check_files_symlink(void) {
  struct uidstate *st = uidstate_new_memory();
  char md[PATH_MAX], p[PATH_MAX];
  char *text = malloc(4096);

  snprintf(md, sizeof(md), "%s", path_of("md-symlink"));
  make_maildir(md);
  snprintf(text, 4096, "pop3sync-state 1\n%s", line_of("D " SRV " U1 10 real 100"));
  strcat(text, line_of("D " SRV " U2 20 linked 100"));
  CHECK_INT(uidstate_parse(st, text, strlen(text)), 0);
  touch(md, "new", "real");
  snprintf(p, sizeof(p), "%s", path_with_md(md, "new/real"));
  CHECK_INT(symlink(p, path_with_md(md, "cur/linked:2,S")), 0);
  CHECK_INT(check_files(st, md), 1);
  CHECK(uidstate_find(st, SRV, "U1") != NULL);
  CHECK(uidstate_find(st, SRV, "U2") == NULL);
  uidstate_close(st);
  free(text);
}

/* Many records: the table grows and every one is still found. */
static void test_many(void) {
  struct uidstate *st = uidstate_new_memory();
  char uid[32], name[32];
  int i, missing = 0;

  for (i = 0; i < 20000; i++) {
    char *line;
    size_t len;
    snprintf(uid, sizeof(uid), "uid%d", i);
    snprintf(name, sizeof(name), "n%d", i);
    CHECK_INT(uidstate_append_delivered(st, i % 2 ? SRV : SRV2, uid, (uint64_t)i, name, i + 1, NULL,
                                        &line, &len),
              0);
    free(line);
  }
  CHECK_INT(count_recs(st), 20000);
  for (i = 0; i < 20000; i++) {
    const struct uidstate_rec *r;
    snprintf(uid, sizeof(uid), "uid%d", i);
    r = uidstate_find(st, i % 2 ? SRV : SRV2, uid);
    missing += r == NULL || r->size != (uint64_t)i;
  }
  CHECK_INT(missing, 0);
  uidstate_close(st);
}

/* Random journals: a compacted copy must read back to the same records,
 * and must drop exactly the same ones when checked against a Maildir
 * (pending D lines stay pending, overridden durable ones come back). */
static uint32_t rnd_state = 2463534242U;

static uint32_t rnd(uint32_t n) {
  rnd_state ^= rnd_state << 13;
  rnd_state ^= rnd_state >> 17;
  rnd_state ^= rnd_state << 5;
  return rnd_state % n;
}

static void copy_file(const char *from, const char *to) {
  size_t len;
  char *data = read_all(from, &len);

  CHECK(data != NULL);
  if (data != NULL)
    write_file(to, data, len);
  free(data);
}

static void test_random_compact(void) {
  static const char *const servers[] = {SRV, SRV2};
  int iter, i;

  for (iter = 0; iter < 40; iter++) {
    const char *raw = path_of("rand%d/raw.state", iter);
    const char *comp = path_of("rand%d/comp.state", iter);
    const char *md = path_of("rand%d/Maildir", iter);
    struct uidstate *a, *b;
    char *da, *db;
    int ra, rb;

    a = open_ok(raw);
    if (a == NULL)
      return;
    for (i = 0; i < 120; i++) {
      const char *srv = servers[rnd(2)];
      char uid[16], name[16];
      snprintf(uid, sizeof(uid), "u%u", rnd(12));
      snprintf(name, sizeof(name), "n%u", rnd(20));
      switch (rnd(10)) {
      case 0:
        put_b(a, i);
        break;
      case 1:
        put_l(a, srv, (int)rnd(2), i);
        break;
      case 2:
      case 3:
      case 4:
        put_a(a, srv, uid, rnd(100), rnd(3) ? "-ERR busy" : "", i);
        break;
      default:
        put_d(a, srv, uid, rnd(100), name, i);
        break;
      }
    }
    uidstate_close(a);
    copy_file(raw, comp);

    a = open_ok(raw);
    b = open_ok(comp);
    if (a == NULL || b == NULL) {
      uidstate_close(a);
      uidstate_close(b);
      return;
    }
    CHECK_INT(uidstate_compact(b, NULL, NULL), 0);
    uidstate_close(b);
    b = open_ok(comp);
    if (b == NULL) {
      uidstate_close(a);
      return;
    }
    da = dump_state(a);
    db = dump_state(b);
    CHECK_STR(db, da);
    free(db);
    for (i = 0; i < 2; i++)
      CHECK_INT(uidstate_lockstep(b, servers[i]), uidstate_lockstep(a, servers[i]));

    make_maildir(md);
    for (i = 0; i < 20; i++) {
      char name[32];
      snprintf(name, sizeof(name), rnd(2) ? "n%d" : "n%d:2,S", i);
      if (rnd(2))
        touch(md, name[strlen(name) - 1] == 'S' ? "cur" : "new", name);
    }
    ra = check_files(a, md);
    rb = check_files(b, md);
    CHECK(ra >= 0);
    CHECK_INT(rb, ra);
    free(da);
    da = dump_state(a);
    db = dump_state(b);
    CHECK_STR(db, da);
    free(da);
    free(db);
    uidstate_close(a);
    uidstate_close(b);
  }
}

/* F forgets the last D: a UID saved in a session that desynchronised is
 * fetched again, and a pending D falls back to the durable one it hid. */
static void test_forget(void) {
  struct uidstate *st = uidstate_new_memory();
  char *line, *text;
  size_t len;
  char buf[4096];
  size_t off = 0;

  CHECK_INT(uidstate_append_delivered(st, "u@h:1", "a", 10, "fa", 100, NULL, &line, &len), 0);
  memcpy(buf + off, line, len), off += len, free(line);
  CHECK_INT(uidstate_append_barrier(st, 101, &line, &len), 0);
  memcpy(buf + off, line, len), off += len, free(line);
  CHECK_INT(uidstate_append_delivered(st, "u@h:1", "a", 20, "fa2", 102, NULL, &line, &len), 0);
  memcpy(buf + off, line, len), off += len, free(line);
  CHECK_INT(uidstate_append_delivered(st, "u@h:1", "b", 30, "fb", 102, NULL, &line, &len), 0);
  memcpy(buf + off, line, len), off += len, free(line);
  CHECK_INT(uidstate_append_forget(st, "u@h:1", "a", 103, &line, &len), 0);
  CHECK(strncmp(line, "F u@h:1 a 103 *", 15) == 0);
  memcpy(buf + off, line, len), off += len, free(line);
  CHECK_INT(uidstate_append_forget(st, "u@h:1", "b", 103, &line, &len), 0);
  memcpy(buf + off, line, len), off += len, free(line);
  CHECK_INT(uidstate_append_forget(st, "u@h:1", "nosuch", 103, &line, &len), 0);
  free(line);
  CHECK_INT(uidstate_append_forget(st, "u h", "a", 103, &line, &len), -EINVAL);
  const struct uidstate_rec *r = uidstate_find(st, "u@h:1", "a");
  CHECK(r != NULL && r->delivered == 100 && r->size == 10);
  r = uidstate_find(st, "u@h:1", "b");
  CHECK(r == NULL || r->delivered == 0);
  uidstate_close(st);

  /* The same, read back from text. */
  text = malloc(off + 32);
  memcpy(text, "pop3sync-state 1\n", 17);
  memcpy(text + 17, buf, off);
  st = uidstate_new_memory();
  uidstate_parse(st, text, off + 17);
  CHECK_INT(uidstate_corrupt_lines(st), 0);
  r = uidstate_find(st, "u@h:1", "a");
  CHECK(r != NULL && r->delivered == 100 && r->size == 10);
  r = uidstate_find(st, "u@h:1", "b");
  CHECK(r == NULL || r->delivered == 0);
  uidstate_close(st);
  free(text);
}

/* The D line's header digest: written, read back, kept by compaction;
 * old lines without it still read; a malformed one is a corrupt line. */
static void test_digest(void) {
  const char *path = path_of("digest/acct.state");
  struct uidstate *st;
  const struct uidstate_rec *r;
  uint8_t dg[UIDSTATE_DIGEST_LEN];
  char *line, hex[2 * UIDSTATE_DIGEST_LEN + 1], body[512], text[4096];
  size_t len, i;

  for (i = 0; i < sizeof dg; i++) {
    dg[i] = (uint8_t)(i * 7 + 1);
    snprintf(hex + 2 * i, 3, "%02x", dg[i]);
  }
  st = uidstate_new_memory();
  CHECK_INT(uidstate_append_delivered(st, SRV, "U1", 100, "n1", 5, dg, &line, &len), 0);
  snprintf(body, sizeof body, "D " SRV " U1 100 n1 5 %s", hex);
  CHECK_STR(line, line_of(body));
  free(line);
  r = uidstate_find(st, SRV, "U1");
  CHECK(r != NULL && r->digest != NULL && memcmp(r->digest, dg, sizeof dg) == 0);
  CHECK(r != NULL && r->delivered_size == 100);
  CHECK_INT(uidstate_format_delivered(SRV, "U1", 100, "n1", 5, dg, text, sizeof text),
            strlen(line_of(body)));
  CHECK_STR(text, line_of(body));
  uidstate_close(st);

  /* Parsing: with, without, and malformed digests. */
  st = uidstate_new_memory();
  snprintf(text, sizeof text, "pop3sync-state 1\n");
  snprintf(body, sizeof body, "D " SRV " U1 100 n1 5 %s", hex);
  strcat(text, line_of(body));
  strcat(text, line_of("D " SRV " U2 200 n2 6"));
  hex[63] = '\0';
  snprintf(body, sizeof body, "D " SRV " U3 300 n3 7 %s", hex); /* 63 digits */
  strcat(text, line_of(body));
  hex[0] = 'A';
  hex[63] = '0';
  snprintf(body, sizeof body, "D " SRV " U4 300 n4 7 %s", hex); /* uppercase */
  strcat(text, line_of(body));
  snprintf(body, sizeof body, "D " SRV " U5 300 n5 7 %s x", hex);
  strcat(text, line_of(body));
  CHECK_INT(uidstate_parse(st, text, strlen(text)), 0);
  CHECK_INT(uidstate_corrupt_lines(st), 3);
  r = uidstate_find(st, SRV, "U1");
  CHECK(r != NULL && r->digest != NULL && memcmp(r->digest, dg, sizeof dg) == 0);
  r = uidstate_find(st, SRV, "U2");
  CHECK(r != NULL && r->delivered == 6 && r->digest == NULL && r->delivered_size == 200);
  CHECK(uidstate_find(st, SRV, "U3") == NULL);
  CHECK(uidstate_find(st, SRV, "U4") == NULL);
  CHECK(uidstate_find(st, SRV, "U5") == NULL);
  uidstate_close(st);

  /* Compaction keeps it, durable and pending alike, and a size update. */
  CHECK_INT(uidstate_open(path, "test", &st, errbuf, sizeof errbuf), 0);
  CHECK_INT(uidstate_append_delivered(st, SRV, "U1", 100, "n1", 5, dg, &line, &len), 0);
  put(st, 0, line, len);
  put_b(st, 6);
  CHECK_INT(uidstate_append_delivered(st, SRV, "U2", 200, "n2", 7, dg, &line, &len), 0);
  put(st, 0, line, len);
  put_d(st, SRV, "U3", 300, "n3", 8);
  CHECK_INT(uidstate_set_size(st, SRV, "U1", 130), 0);
  CHECK_INT(uidstate_set_size(st, SRV, "nope", 130), -ENOENT);
  CHECK_INT(uidstate_compact(st, NULL, NULL), 0);
  uidstate_close(st);
  CHECK_INT(uidstate_open(path, "test", &st, errbuf, sizeof errbuf), 0);
  CHECK_INT(uidstate_corrupt_lines(st), 0);
  r = uidstate_find(st, SRV, "U1");
  CHECK(r != NULL && r->delivered_size == 130 && r->size == 130 && r->digest != NULL &&
        memcmp(r->digest, dg, sizeof dg) == 0);
  r = uidstate_find(st, SRV, "U2");
  CHECK(r != NULL && r->digest != NULL && memcmp(r->digest, dg, sizeof dg) == 0);
  r = uidstate_find(st, SRV, "U3");
  CHECK(r != NULL && r->digest == NULL);
  uidstate_close(st);
}

/* R: a record whose deletion was committed goes entirely, so that a later
 * message with the same UID is new; in memory, in the file and through
 * compaction. */
static void test_retire(void) {
  const char *path = path_of("retire/acct.state");
  struct uidstate *st;
  const struct uidstate_rec *r;
  char *line;
  size_t len;

  st = uidstate_new_memory();
  CHECK_INT(uidstate_append_retire(st, SRV, "U1", 3, &line, &len), 0); /* none: a no-op */
  CHECK_STR(line, line_of("R " SRV " U1 3"));
  free(line);
  CHECK_INT(uidstate_append_retire(st, "a b", "U1", 3, &line, &len), -EINVAL);
  CHECK(line == NULL);
  uidstate_close(st);

  CHECK_INT(uidstate_open(path, "test", &st, errbuf, sizeof errbuf), 0);
  put_d(st, SRV, "U1", 100, "n1", 1);
  put_d(st, SRV2, "U1", 100, "m1", 1);
  put_a(st, SRV, "U2", 50, "-ERR x", 1);
  put_b(st, 2);
  put_d(st, SRV, "U1", 120, "n1b", 3); /* pending over durable */
  CHECK_INT(uidstate_append_retire(st, SRV, "U1", 4, &line, &len), 0);
  put(st, 0, line, len);
  CHECK_INT(uidstate_append_retire(st, SRV, "U2", 4, &line, &len), 0);
  put(st, 0, line, len);
  CHECK(uidstate_find(st, SRV, "U1") == NULL);
  CHECK(uidstate_find(st, SRV, "U2") == NULL);
  CHECK(uidstate_find(st, SRV2, "U1") != NULL); /* another server's is another record */
  /* The same UID comes back: a new message. */
  put_d(st, SRV, "U2", 70, "n2", 5);
  put_b(st, 6);
  uidstate_close(st);

  CHECK_INT(uidstate_open(path, "test", &st, errbuf, sizeof errbuf), 0);
  CHECK_INT(uidstate_corrupt_lines(st), 0);
  CHECK(uidstate_find(st, SRV, "U1") == NULL); /* neither the pending D nor the durable one */
  r = uidstate_find(st, SRV, "U2");
  CHECK(r != NULL && r->delivered == 5 && r->attempts == 0 && r->size == 70);
  CHECK(uidstate_find(st, SRV2, "U1") != NULL);
  CHECK_INT(uidstate_compact(st, NULL, NULL), 0);
  uidstate_close(st);
  CHECK_INT(uidstate_open(path, "test", &st, errbuf, sizeof errbuf), 0);
  CHECK(uidstate_find(st, SRV, "U1") == NULL);
  CHECK(uidstate_find(st, SRV, "U2") != NULL);
  uidstate_close(st);
}

/* A failed attempt after a delivery (the UID came back with other
 * content) moves size, not delivered_size: the delivery's size is what a
 * listing must match before anything is deleted unseen. */
static void test_delivered_size(void) {
  struct uidstate *st = uidstate_new_memory();
  const struct uidstate_rec *r;
  char *line;
  size_t len;

  CHECK_INT(uidstate_append_delivered(st, SRV, "X", 100, "n", 1, NULL, &line, &len), 0);
  free(line);
  CHECK_INT(uidstate_append_attempt(st, SRV, "X", 200, "-ERR", 2, &line, &len), 0);
  free(line);
  r = uidstate_find(st, SRV, "X");
  CHECK(r != NULL && r->delivered != 0 && r->size == 200 && r->delivered_size == 100 &&
        r->attempts == 1);
  CHECK_INT(uidstate_set_size(st, SRV, "X", 150), 0);
  r = uidstate_find(st, SRV, "X");
  CHECK(r != NULL && r->size == 200 && r->delivered_size == 150);
  uidstate_close(st);
}

int main(void) {
  char cmd[PATH_MAX + 16];

  snprintf(dir, sizeof(dir), "%s/test_uidstate.XXXXXX",
           getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  test_formats();
  test_roundtrip();
  test_crc_corruption();
  test_torn();
  test_garbage();
  test_header();
  test_barrier();
  test_override_and_attempts();
  test_lockstep();
  test_compact();
  test_lock();
  test_open_errors();
  test_unsafe_files();
  test_check_files_symlink();
  test_many();
  test_random_compact();
  test_forget();
  test_digest();
  test_retire();
  test_delivered_size();
  if (check_failures == 0) {
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
      fprintf(stderr, "could not remove %s\n", dir);
  } else {
    fprintf(stderr, "left %s for inspection\n", dir);
  }
  return check_result("test_uidstate");
}

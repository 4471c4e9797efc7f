/* libFuzzer target for the UID journal's pure model (uidmodel.h).
 *
 * Feeds the input to uidmodel_parse (when the first byte is odd, the rest
 * with a correct CRC added to every complete line but the first, so that
 * the fuzzer gets past the CRC check and into the fields), then checks
 * that every record it accepted formats back (through the append
 * functions) to lines that read back to the same record — what the parser
 * lets in, the writer can write — and that the compaction snapshot reads
 * back to the same records.  Finally drops every pending record as if its
 * file were gone, and frees everything.  No file is touched.
 *
 * Build with clang -fsanitize=fuzzer,address; with -DP3_FUZZ_MAIN it is a
 * plain program that runs each file named on its command line once. */
#include "config.h"

#include "uidmodel.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct regen {
  struct uidmodel *scratch;
  char *text;
  size_t len, cap;
};

static void add_text(struct regen *g, const char *s, size_t len) {
  if (g->len + len + 1 > g->cap) {
    g->cap = (g->len + len + 1) * 2;
    g->text = realloc(g->text, g->cap);
    if (g->text == NULL)
      abort();
  }
  memcpy(g->text + g->len, s, len);
  g->len += len;
}

static int regen_cb(void *data, const struct uidstate_rec *r) {
  struct regen *g = data;
  char *line;
  size_t len;

  if (r->delivered != 0) {
    if (uidmodel_append_delivered(g->scratch, r->server, r->uid, r->delivered_size, r->name,
                                  r->delivered, r->digest, &line, &len) != 0 ||
        len > 4096)
      abort();
    add_text(g, line, len);
    free(line);
  }
  if (r->attempts > 0) {
    if (uidmodel_append_attempt(g->scratch, r->server, r->uid, r->size, r->last_error, 1, &line,
                                &len) != 0 ||
        len > 4096)
      abort();
    add_text(g, line, len);
    free(line);
  }
  /* Every record is delivered or has failed at least once. */
  if (r->delivered == 0 && r->attempts == 0)
    abort();
  return 0;
}

static int compare_cb(void *data, const struct uidstate_rec *r) {
  const struct uidmodel *again = data;
  const struct uidstate_rec *r2 = uidmodel_find(again, r->server, r->uid);

  if (r2 == NULL || r2->delivered != r->delivered || strcmp(r2->name, r->name) != 0 ||
      r2->size != r->size || r2->delivered_size != r->delivered_size ||
      (r2->digest == NULL) != (r->digest == NULL) ||
      (r->digest != NULL && memcmp(r2->digest, r->digest, UIDMODEL_DIGEST_LEN) != 0) ||
      strcmp(r2->last_error, r->last_error) != 0 || r2->attempts != (r->attempts > 0 ? 1U : 0U))
    abort();
  return 0;
}

/* The snapshot keeps records exactly, attempts included. */
static int exact_cb(void *data, const struct uidstate_rec *r) {
  const struct uidstate_rec *r2 = uidmodel_find(data, r->server, r->uid);

  if (r2 == NULL || r2->delivered != r->delivered || strcmp(r2->name, r->name) != 0 ||
      r2->size != r->size || r2->delivered_size != r->delivered_size ||
      (r2->digest == NULL) != (r->digest == NULL) ||
      (r->digest != NULL && memcmp(r2->digest, r->digest, UIDMODEL_DIGEST_LEN) != 0) ||
      strcmp(r2->last_error, r->last_error) != 0 || r2->attempts != r->attempts)
    abort();
  return 0;
}

static int count_cb(void *data, const struct uidstate_rec *r) {
  (void)r;
  ++*(size_t *)data;
  return 0;
}

static uint32_t crc32_bitwise(const char *s, size_t len) {
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

/* The input with " *CRC" added before every newline but the first. */
static void add_crcs(struct regen *out, const char *in, size_t len) {
  const char *end = in + len, *nl;
  int first = 1;

  while (in < end && (nl = memchr(in, '\n', (size_t)(end - in))) != NULL) {
    add_text(out, in, (size_t)(nl - in));
    if (!first) {
      char tail[16];
      snprintf(tail, sizeof(tail), " *%08x", (unsigned)crc32_bitwise(in, (size_t)(nl - in)));
      add_text(out, tail, 10);
    }
    add_text(out, "\n", 1);
    first = 0;
    in = nl + 1;
  }
  if (in < end)
    add_text(out, in, (size_t)(end - in)); /* a torn last line stays torn */
}

static int emit_cb(void *data, const char *line, size_t len) {
  add_text(data, line, len);
  return 0;
}

static int gone_cb(void *arg, const char *name) {
  (void)arg;
  (void)name;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct uidmodel *st = uidmodel_new(), *again, *snap;
  struct regen g = {NULL, NULL, 0, 0}, fixed = {NULL, NULL, 0, 0}, text = {NULL, NULL, 0, 0};
  size_t n = 0, n2 = 0;
  int err;

  if (st == NULL)
    return 0;
  if (size > 0 && (data[0] & 1)) {
    add_crcs(&fixed, (const char *)data + 1, size - 1);
    err = uidmodel_parse(st, fixed.text != NULL ? fixed.text : "", fixed.len);
    free(fixed.text);
  } else {
    err = uidmodel_parse(st, (const char *)data, size);
  }
  if (err != 0) {
    uidmodel_free(st);
    return 0;
  }
  g.scratch = uidmodel_new();
  again = uidmodel_new();
  snap = uidmodel_new();
  if (g.scratch == NULL || again == NULL || snap == NULL)
    abort();
  add_text(&g, UIDMODEL_HEADER "\n", sizeof(UIDMODEL_HEADER));
  uidmodel_foreach(st, regen_cb, &g);
  if (uidmodel_parse(again, g.text, g.len) != 0 || uidmodel_corrupt_lines(again) != 0)
    abort();
  uidmodel_foreach(st, compare_cb, again);
  uidmodel_foreach(st, count_cb, &n);
  uidmodel_foreach(again, count_cb, &n2);
  if (n != n2)
    abort();
  /* What compaction would write reads back to the same records. */
  if (uidmodel_snapshot(st, 1, emit_cb, &text) != 0 ||
      uidmodel_parse(snap, text.text, text.len) != 0 || uidmodel_corrupt_lines(snap) != 0)
    abort();
  uidmodel_foreach(st, exact_cb, snap);
  n2 = 0;
  uidmodel_foreach(snap, count_cb, &n2);
  if (n != n2)
    abort();
  (void)uidmodel_lockstep(st, "user@host:110");
  /* No Maildir: every pending D goes. */
  (void)uidmodel_mark_missing(st, gone_cb, NULL);
  uidmodel_commit_marks(st);
  uidmodel_free(snap);
  uidmodel_free(again);
  uidmodel_free(g.scratch);
  uidmodel_free(st);
  free(text.text);
  free(g.text);
  return 0;
}

#ifdef P3_FUZZ_MAIN
int main(int argc, char **argv) {
  int i;

  for (i = 1; i < argc; i++) {
    FILE *f = fopen(argv[i], "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0, got;

    if (f == NULL) {
      perror(argv[i]);
      return 1;
    }
    do {
      if (cap - len < 65536) {
        cap = cap * 2 + 65536;
        if ((buf = realloc(buf, cap)) == NULL)
          abort();
      }
      got = fread(buf + len, 1, cap - len, f);
      len += got;
    } while (got > 0);
    fclose(f);
    LLVMFuzzerTestOneInput((const uint8_t *)buf, len);
    free(buf);
    printf("%s: ok\n", argv[i]);
  }
  return 0;
}
#endif

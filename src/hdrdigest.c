#include "config.h"

#include "hdrdigest.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mbedtls/sha256.h"
#include "mbedtls/version.h"

#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#define SHA256_STARTS mbedtls_sha256_starts
#define SHA256_UPDATE mbedtls_sha256_update
#define SHA256_FINISH mbedtls_sha256_finish
#else
#define SHA256_STARTS mbedtls_sha256_starts_ret
#define SHA256_UPDATE mbedtls_sha256_update_ret
#define SHA256_FINISH mbedtls_sha256_finish_ret
#endif

/* Longer than every excluded name ("Content-Length" is 14): a name still
 * unfinished at this length is kept without looking further. */
#define NAME_MAX_LEN 32
#define OUT_BLOCK 512

enum hd_state {
  HD_LINE_START, /* at the start of a header line */
  HD_NAME,       /* buffering a field name, not yet known to be kept */
  HD_LINE,       /* the rest of a line (of a kept or a dropped field) */
  HD_DONE        /* the empty line was seen */
};

struct hdrdigest {
  mbedtls_sha256_context sha;
  enum hd_state state;
  int keep;       /* the current field (and its continuation lines) is hashed */
  int pending_cr; /* a CR whose successor is not known yet */
  int finished;
  size_t name_len;
  char name[NAME_MAX_LEN];
  size_t out_len;
  unsigned char out[OUT_BLOCK];
};

static const char *const dropped_fields[] = {
    "Status", "X-Status", "X-UID", "X-IMAPbase", "X-IMAP", "X-UIDL", "X-Keywords", "Content-Length",
};

static void out_flush(struct hdrdigest *h) {
  if (h->out_len) {
    SHA256_UPDATE(&h->sha, h->out, h->out_len);
    h->out_len = 0;
  }
}

static void out_bytes(struct hdrdigest *h, const char *s, size_t len) {
  while (len > 0) {
    size_t room = OUT_BLOCK - h->out_len, n = len < room ? len : room;
    memcpy(h->out + h->out_len, s, n);
    h->out_len += n;
    s += n;
    len -= n;
    if (h->out_len == OUT_BLOCK)
      out_flush(h);
  }
}

static int name_dropped(const char *name, size_t len) {
  /* Obsolete syntax allows white space before the colon. */
  while (len > 0 && (name[len - 1] == ' ' || name[len - 1] == '\t'))
    len--;
  for (size_t i = 0; i < sizeof dropped_fields / sizeof *dropped_fields; i++)
    if (strlen(dropped_fields[i]) == len && strncasecmp(dropped_fields[i], name, len) == 0)
      return 1;
  return 0;
}

/* One byte of the normalized stream (CRLF already turned into LF). */
static void put(struct hdrdigest *h, char c) {
  switch (h->state) {
  case HD_LINE_START:
    if (c == '\n') {
      h->state = HD_DONE;
      return;
    }
    if (c == ' ' || c == '\t') {
      /* A continuation line belongs to the field above it. */
      h->state = HD_LINE;
      if (h->keep)
        out_bytes(h, &c, 1);
      return;
    }
    h->state = HD_NAME;
    h->name_len = 0;
    /* fall through */
  case HD_NAME:
    if (c == ':') {
      h->keep = !name_dropped(h->name, h->name_len);
      if (h->keep) {
        out_bytes(h, h->name, h->name_len);
        out_bytes(h, &c, 1);
      }
      h->state = HD_LINE;
      return;
    }
    if (c == '\n' || h->name_len == NAME_MAX_LEN) {
      /* Not a field name we drop (or not a field at all): kept. */
      h->keep = 1;
      out_bytes(h, h->name, h->name_len);
      out_bytes(h, &c, 1);
      h->state = c == '\n' ? HD_LINE_START : HD_LINE;
      return;
    }
    h->name[h->name_len++] = c;
    return;
  case HD_LINE:
    if (h->keep)
      out_bytes(h, &c, 1);
    if (c == '\n')
      h->state = HD_LINE_START;
    return;
  case HD_DONE:
    return;
  }
}

struct hdrdigest *hdrdigest_new(void) {
  struct hdrdigest *h = calloc(1, sizeof *h);
  if (h == NULL)
    return NULL;
  mbedtls_sha256_init(&h->sha);
  if (SHA256_STARTS(&h->sha, 0) != 0) {
    mbedtls_sha256_free(&h->sha);
    free(h);
    return NULL;
  }
  h->state = HD_LINE_START;
  h->keep = 1;
  return h;
}

void hdrdigest_free(struct hdrdigest *h) {
  if (h == NULL)
    return;
  mbedtls_sha256_free(&h->sha);
  free(h);
}

void hdrdigest_feed(struct hdrdigest *h, const char *buf, size_t len) {
  assert(!h->finished);
  for (size_t i = 0; i < len && h->state != HD_DONE; i++) {
    char c = buf[i];
    if (h->pending_cr) {
      h->pending_cr = 0;
      if (c == '\n') {
        put(h, '\n');
        continue;
      }
      put(h, '\r');
      if (h->state == HD_DONE)
        break;
    }
    if (c == '\r') {
      h->pending_cr = 1;
      continue;
    }
    /* The common case: a run of bytes inside a line, no CR or LF. */
    if (h->state == HD_LINE) {
      size_t j = i;
      while (j < len && buf[j] != '\n' && buf[j] != '\r')
        j++;
      if (j > i) {
        if (h->keep)
          out_bytes(h, buf + i, j - i);
        i = j - 1;
        continue;
      }
    }
    put(h, c);
  }
}

int hdrdigest_header_done(const struct hdrdigest *h) {
  return h->state == HD_DONE;
}

void hdrdigest_final(struct hdrdigest *h, uint8_t out[HDRDIGEST_LEN]) {
  assert(!h->finished);
  if (h->pending_cr) {
    h->pending_cr = 0;
    put(h, '\r');
  }
  if (h->state == HD_NAME)
    out_bytes(h, h->name, h->name_len); /* an unfinished last line is kept */
  out_flush(h);
  SHA256_FINISH(&h->sha, out);
  h->finished = 1;
}

int hdrdigest_of(const char *buf, size_t len, uint8_t out[HDRDIGEST_LEN]) {
  struct hdrdigest *h = hdrdigest_new();
  if (h == NULL)
    return -1;
  hdrdigest_feed(h, buf, len);
  hdrdigest_final(h, out);
  hdrdigest_free(h);
  return 0;
}

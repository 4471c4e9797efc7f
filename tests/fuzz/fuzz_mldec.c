/* libFuzzer target: the multi-line decoder (mldec_feed).
 *
 * Input: two bytes that choose how the rest is split, then the wire bytes.
 * The body is decoded twice, in one call and in chunks (first chunk up to
 * the position the two bytes give, then small chunks of pseudo-random sizes,
 * empty ones included), and both results are compared with a plain line
 * based reference decoder written straight from RFC 1939.  Any difference,
 * an output larger than inlen + 1 (a canary past the bound), or a consumed
 * count that breaks the contract in proto.h aborts. */
#include "config.h"

#include "proto.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CANARY_LEN 16
#define CANARY_BYTE 0xa5

struct result {
  char *out; /* decoded bytes, capacity inlen + 1 */
  size_t outlen;
  int done;        /* end marker consumed */
  size_t consumed; /* input bytes used */
  uint64_t raw_bytes;
  uint64_t lines;
};

/* The reference: cut at LF; a line that is "." (after dropping one CR
 * before the LF) ends the body; otherwise drop one leading dot and one CR
 * before the LF, and write the line with an LF.  An unterminated last line
 * is decoded as far as it can be decided: a lone "." or ".\r" is held back
 * (not written, not counted), a final CR is counted but not written. */
static void ref_decode(const char *in, size_t n, struct result *r) {
  size_t pos = 0;

  while (pos < n) {
    const char *lf = memchr(in + pos, '\n', n - pos);
    size_t end = lf != NULL ? (size_t)(lf - in) : n;
    size_t llen = end - pos;
    const char *l = in + pos;
    size_t body = llen, start;

    if (lf == NULL) {
      if ((llen == 1 && l[0] == '.') || (llen == 2 && l[0] == '.' && l[1] == '\r'))
        break; /* held: terminator or stuffing, not decided yet */
      start = l[0] == '.' ? 1 : 0;
      if (body > start && l[body - 1] == '\r')
        body--;
      memcpy(r->out + r->outlen, l + start, body - start);
      r->outlen += body - start;
      r->raw_bytes += llen;
      break;
    }
    if (body > 0 && l[body - 1] == '\r')
      body--;
    if (body == 1 && l[0] == '.') {
      r->done = 1;
      r->consumed = end + 1;
      return;
    }
    start = (body > 0 && l[0] == '.') ? 1 : 0;
    memcpy(r->out + r->outlen, l + start, body - start);
    r->outlen += body - start;
    r->out[r->outlen++] = '\n';
    r->raw_bytes += llen + 1;
    r->lines++;
    pos = end + 1;
  }
  r->consumed = n;
}

/* One mldec_feed call on in[0..len) with the bound and contract checks;
 * appends the output to r. */
static int feed_checked(struct p3_mldec *d, const char *in, size_t len, struct result *r,
                        size_t total_in) {
  /* Exactly len bytes of input so an over-read is an ASan report. */
  char *chunk = malloc(len > 0 ? len : 1);
  unsigned char *out = malloc(len + 1 + CANARY_LEN);
  size_t outlen = (size_t)-1, consumed = (size_t)-1, i;
  int was_done = r->done, ret;

  if (chunk == NULL || out == NULL)
    abort();
  if (len > 0)
    memcpy(chunk, in, len);
  memset(out, CANARY_BYTE, len + 1 + CANARY_LEN);

  ret = mldec_feed(d, chunk, len, (char *)out, &outlen, &consumed);

  if (ret != 0 && ret != 1)
    abort();
  if (outlen > len + 1 || consumed > len)
    abort();
  for (i = len + 1; i < len + 1 + CANARY_LEN; i++)
    if (out[i] != CANARY_BYTE)
      abort();
  if (ret == 0 && consumed != len)
    abort(); /* all of the input unless the end marker was reached */
  if (was_done && (ret != 1 || outlen != 0 || consumed != 0))
    abort(); /* nothing more belongs to the body */
  if (r->outlen + outlen > total_in)
    abort(); /* the decoded body can never outgrow the wire bytes */

  memcpy(r->out + r->outlen, out, outlen);
  r->outlen += outlen;
  r->consumed += consumed;
  r->done = ret;
  free(out);
  free(chunk);
  return ret;
}

static void compare(const struct result *got, const struct result *want, const struct p3_mldec *d) {
  if (got->done != want->done || got->consumed != want->consumed || got->outlen != want->outlen ||
      (want->outlen > 0 && memcmp(got->out, want->out, want->outlen) != 0))
    abort();
  if (d->raw_bytes != want->raw_bytes || d->lines != want->lines)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct result want, whole, split;
  struct p3_mldec d;
  const char *in;
  size_t n, pos, first;
  uint32_t seed;

  if (size < 2)
    return 0;
  in = (const char *)data + 2;
  n = size - 2;
  seed = (uint32_t)data[0] | (uint32_t)data[1] << 8;

  memset(&want, 0, sizeof(want));
  memset(&whole, 0, sizeof(whole));
  memset(&split, 0, sizeof(split));
  want.out = malloc(n + 1);
  whole.out = malloc(n + 1);
  split.out = malloc(n + 1);
  if (want.out == NULL || whole.out == NULL || split.out == NULL)
    abort();

  ref_decode(in, n, &want);

  /* All at once, then once more to check that a finished decoder stays
   * finished. */
  mldec_init(&d);
  feed_checked(&d, in, n, &whole, n);
  compare(&whole, &want, &d);
  if (whole.done)
    feed_checked(&d, in + whole.consumed, n - whole.consumed, &whole, n);

  /* In chunks: stop feeding at the end marker, as the session does, and
   * hand it the rest afterwards to see that it is refused. */
  mldec_init(&d);
  first = seed % (n + 1);
  pos = 0;
  for (int chunk = 0;; chunk++) {
    size_t len;

    if (chunk == 0) {
      len = first;
    } else {
      if (pos == n)
        break;
      seed = seed * 1103515245u + 12345u;
      len = (seed >> 16) % 9; /* 0..8: empty chunks and single bytes too */
      if ((seed >> 28) == 0)
        len = n - pos;
      if (len > n - pos)
        len = n - pos;
    }
    if (feed_checked(&d, in + pos, len, &split, n))
      break;
    pos += len;
  }
  compare(&split, &want, &d);
  if (split.done)
    feed_checked(&d, in + split.consumed, n - split.consumed, &split, n);

  free(want.out);
  free(whole.out);
  free(split.out);
  return 0;
}

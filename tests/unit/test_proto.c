#include "config.h"

#include "errors.h"
#include "proto.h"

#include "check.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- status lines ------------------------------------------------------ */

static void status_ok(const char *line, int ok, enum p3_resp_code code, const char *text) {
  struct p3_status st;
  int r = proto_parse_status(line, strlen(line), &st);
  CHECK_INT(r, 0);
  if (r != 0) {
    fprintf(stderr, "  line: \"%s\"\n", line);
    return;
  }
  CHECK_INT(st.ok, ok);
  CHECK_INT(st.code, code);
  CHECK_MEM(st.text, st.text_len, text, strlen(text));
  CHECK(st.text >= line && st.text + st.text_len <= line + strlen(line));
}

static void status_bad(const char *line, size_t len) {
  struct p3_status st;
  int r = proto_parse_status(line, len, &st);
  CHECK_INT(r, P3_EPROTO);
  if (r != P3_EPROTO)
    fprintf(stderr, "  line: \"%.*s\"\n", (int)len, line);
}

static void test_status(void) {
  status_ok("+OK", 1, P3_RC_NONE, "");
  status_ok("+OK ", 1, P3_RC_NONE, "");
  status_ok("+OK hello there", 1, P3_RC_NONE, "hello there");
  status_ok("+OK  two spaces", 1, P3_RC_NONE, " two spaces");
  status_ok("+OK 1234 octets", 1, P3_RC_NONE, "1234 octets");
  status_ok("-ERR", 0, P3_RC_NONE, "");
  status_ok("-ERR no such message", 0, P3_RC_NONE, "no such message");
  status_ok("-ERR [IN-USE] locked", 0, P3_RC_IN_USE, "[IN-USE] locked");
  status_ok("-ERR [LOGIN-DELAY] wait", 0, P3_RC_LOGIN_DELAY, "[LOGIN-DELAY] wait");
  status_ok("-ERR [SYS/TEMP] try later", 0, P3_RC_SYS_TEMP, "[SYS/TEMP] try later");
  status_ok("-ERR [SYS/PERM] gone", 0, P3_RC_SYS_PERM, "[SYS/PERM] gone");
  status_ok("-ERR [AUTH] bad password", 0, P3_RC_AUTH, "[AUTH] bad password");
  status_ok("-ERR [AUTH]", 0, P3_RC_AUTH, "[AUTH]");
  /* Codes are case-insensitive and hierarchical. */
  status_ok("-ERR [in-use] x", 0, P3_RC_IN_USE, "[in-use] x");
  status_ok("-ERR [Sys/Temp] x", 0, P3_RC_SYS_TEMP, "[Sys/Temp] x");
  status_ok("-ERR [SYS/TEMP/QUOTA] x", 0, P3_RC_SYS_TEMP, "[SYS/TEMP/QUOTA] x");
  status_ok("-ERR [AUTH/EXPIRED] x", 0, P3_RC_AUTH, "[AUTH/EXPIRED] x");
  /* Anything else bracketed is some other code. */
  status_ok("-ERR [SYS] x", 0, P3_RC_OTHER, "[SYS] x");
  status_ok("-ERR [SYS/] x", 0, P3_RC_OTHER, "[SYS/] x");
  status_ok("-ERR [AUTHX] x", 0, P3_RC_OTHER, "[AUTHX] x");
  status_ok("-ERR [IN-USE-NOT] x", 0, P3_RC_OTHER, "[IN-USE-NOT] x");
  status_ok("-ERR [UTF8] x", 0, P3_RC_OTHER, "[UTF8] x");
  status_ok("-ERR [] x", 0, P3_RC_OTHER, "[] x");
  /* No code unless the text starts with a closed bracket. */
  status_ok("-ERR [IN-USE x", 0, P3_RC_NONE, "[IN-USE x");
  status_ok("-ERR  [IN-USE] x", 0, P3_RC_NONE, " [IN-USE] x");
  status_ok("-ERR mailbox [IN-USE]", 0, P3_RC_NONE, "mailbox [IN-USE]");
  /* 8-bit text passes. */
  status_ok("-ERR \xc3\xa9t\xc3\xa9", 0, P3_RC_NONE, "\xc3\xa9t\xc3\xa9");

  status_bad("", 0);
  status_bad("+", 1);
  status_bad("+O", 2);
  status_bad("-ER", 3);
  status_bad("+ok", 3);
  status_bad("+Ok fine", 8);
  status_bad("-err no", 7);
  status_bad("+OKAY", 5);
  status_bad("-ERROR x", 8);
  status_bad("+OK\tx", 5);
  status_bad("OK", 2);
  status_bad(" +OK", 4);
  status_bad("* OK IMAP", 9);
  status_bad("+OK\0", 4);
  status_bad("+OK a\0b", 7);
  status_bad("-ERR [AUTH]\0", 12);
  status_bad("\0+OK", 4);
  /* The length bounds the line, not a NUL: "+OKAY" cut to 3 is "+OK". */
  {
    struct p3_status st;
    CHECK_INT(proto_parse_status("+OKAY", 3, &st), 0);
    CHECK_INT(st.ok, 1);
    CHECK_INT(st.text_len, 0);
    CHECK_INT(proto_parse_status("-ERR [IN-USE] x", 12, &st), 0);
    CHECK_INT(st.code, P3_RC_NONE); /* "[IN-USE" cut before its bracket */
  }

  CHECK_STR(proto_resp_code_name(P3_RC_IN_USE), "IN-USE");
  CHECK_STR(proto_resp_code_name(P3_RC_LOGIN_DELAY), "LOGIN-DELAY");
  CHECK_STR(proto_resp_code_name(P3_RC_SYS_TEMP), "SYS/TEMP");
  CHECK_STR(proto_resp_code_name(P3_RC_SYS_PERM), "SYS/PERM");
  CHECK_STR(proto_resp_code_name(P3_RC_AUTH), "AUTH");
  CHECK(proto_resp_code_name(P3_RC_NONE) == NULL);
  CHECK(proto_resp_code_name(P3_RC_OTHER) == NULL);
}

/* ---- multi-line decoder ------------------------------------------------ */

struct decoded {
  int done;        /* end marker found */
  size_t consumed; /* wire bytes up to and including the terminator's LF */
  char *out;       /* decoded body (malloc'd) */
  size_t outlen;
  uint64_t raw_bytes;
  uint64_t lines;
};

/* The obvious decoder, one whole line at a time, as a lock-step client
 * following RFC 1939 would do it: cut at LF, drop a CR before it, stop at
 * ".", drop a leading dot otherwise, write the line plus LF.  Lines not yet
 * ended are not decoded. */
static void ref_decode(const char *in, size_t len, struct decoded *r) {
  size_t pos = 0;
  r->done = 0;
  r->consumed = 0;
  r->out = malloc(len + 1);
  r->outlen = 0;
  r->raw_bytes = 0;
  r->lines = 0;
  while (pos < len) {
    const char *lf = memchr(in + pos, '\n', len - pos);
    if (lf == NULL)
      break;
    size_t wire = (size_t)(lf - (in + pos)) + 1;
    const char *line = in + pos;
    size_t llen = wire - 1;
    if (llen > 0 && line[llen - 1] == '\r')
      llen--;
    pos += wire;
    if (llen == 1 && line[0] == '.') {
      r->done = 1;
      r->consumed = pos;
      return;
    }
    if (llen > 0 && line[0] == '.') {
      line++;
      llen--;
    }
    memcpy(r->out + r->outlen, line, llen);
    r->outlen += llen;
    r->out[r->outlen++] = '\n';
    r->raw_bytes += wire;
    r->lines++;
  }
}

#define CANARY_LEN 16
#define CANARY_BYTE 0xa5

/* Feeds in[] to a fresh decoder in the chunks cut at cuts[0..ncuts) (sorted
 * offsets), checking each call's contract on the way: out stays within
 * inlen + 1 (a canary after it), consumed is the whole chunk until the end,
 * and nothing is fed after the end. */
static void stream_decode(const char *in, size_t len, const size_t *cuts, size_t ncuts,
                          struct decoded *r) {
  struct p3_mldec d;
  size_t start = 0;
  mldec_init(&d);
  r->done = 0;
  r->consumed = 0;
  r->out = malloc(len + 2);
  r->outlen = 0;
  for (size_t c = 0; c <= ncuts && !r->done; c++) {
    size_t end = c < ncuts ? cuts[c] : len;
    size_t n = end - start;
    /* A chunk of its own, so ASan sees a read past it. */
    char *chunk = malloc(n ? n : 1);
    char *out = malloc(n + 1 + CANARY_LEN);
    size_t outlen = (size_t)-1, consumed = (size_t)-1;
    int ret;
    memcpy(chunk, in + start, n);
    memset(out, CANARY_BYTE, n + 1 + CANARY_LEN);
    ret = mldec_feed(&d, chunk, n, out, &outlen, &consumed);
    CHECK(ret == 0 || ret == 1);
    CHECK(outlen <= n + 1);
    CHECK(consumed <= n);
    for (size_t k = n + 1; k < n + 1 + CANARY_LEN; k++)
      CHECK(out[k] == (char)CANARY_BYTE);
    if (outlen <= n + 1 && r->outlen + outlen <= len + 1) {
      memcpy(r->out + r->outlen, out, outlen);
      r->outlen += outlen;
    } else {
      CHECK(!"output overflow");
    }
    if (ret == 1) {
      r->done = 1;
      r->consumed = start + consumed;
    } else {
      CHECK_INT(consumed, n);
    }
    free(chunk);
    free(out);
    start = end;
  }
  r->raw_bytes = d.raw_bytes;
  r->lines = d.lines;
  if (r->done) {
    /* Once done, the decoder takes nothing more. */
    size_t outlen = 9, consumed = 9;
    char out[4];
    CHECK_INT(mldec_feed(&d, "x\r\n", 3, out, &outlen, &consumed), 1);
    CHECK_INT(outlen, 0);
    CHECK_INT(consumed, 0);
  }
}

static int decoded_equal(const struct decoded *a, const struct decoded *b) {
  return a->done == b->done && a->consumed == b->consumed && a->outlen == b->outlen &&
         memcmp(a->out, b->out, a->outlen) == 0 && a->raw_bytes == b->raw_bytes &&
         a->lines == b->lines;
}

static void dump(const char *what, const char *s, size_t len) {
  fprintf(stderr, "  %s (%zu): \"", what, len);
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch >= 0x20 && ch < 0x7f && ch != '\\' && ch != '"')
      fputc(ch, stderr);
    else
      fprintf(stderr, "\\x%02x", ch);
  }
  fprintf(stderr, "\"\n");
}

/* Compares a streamed decode at the given cuts with the expected result;
 * reports at most a few mismatches per input so a bug does not flood. */
static int compare_at(const char *in, size_t len, const size_t *cuts, size_t ncuts,
                      const struct decoded *want) {
  struct decoded got;
  int ok;
  stream_decode(in, len, cuts, ncuts, &got);
  ok = decoded_equal(&got, want);
  if (!ok) {
    check_failures++;
    fprintf(stderr, "decoder mismatch, cuts:");
    for (size_t i = 0; i < ncuts; i++)
      fprintf(stderr, " %zu", cuts[i]);
    fprintf(stderr, "\n");
    dump("input", in, len);
    dump("got", got.out, got.outlen);
    dump("want", want->out, want->outlen);
    fprintf(stderr, "  done %d/%d consumed %zu/%zu raw %llu/%llu lines %llu/%llu\n", got.done,
            want->done, got.consumed, want->consumed, (unsigned long long)got.raw_bytes,
            (unsigned long long)want->raw_bytes, (unsigned long long)got.lines,
            (unsigned long long)want->lines);
  }
  free(got.out);
  return ok;
}

/* Every way to cut the input in two and in three, plus one byte at a time. */
static void compare_all_splits(const char *in, size_t len, const struct decoded *want) {
  size_t cuts[4096];
  int bad = 0;

  if (!compare_at(in, len, NULL, 0, want))
    return;
  for (size_t a = 0; a <= len && !bad; a++) {
    cuts[0] = a;
    bad = !compare_at(in, len, cuts, 1, want);
  }
  for (size_t a = 0; a <= len && !bad; a++)
    for (size_t b = a; b <= len && !bad; b++) {
      cuts[0] = a;
      cuts[1] = b;
      bad = !compare_at(in, len, cuts, 2, want);
    }
  if (!bad && len < sizeof(cuts) / sizeof(cuts[0])) {
    for (size_t i = 0; i < len; i++)
      cuts[i] = i + 1;
    compare_at(in, len, cuts, len, want);
  }
}

struct body_case {
  const char *wire; /* everything the server sends after the +OK line */
  size_t wire_len;
  const char *body; /* expected decoded body */
  size_t body_len;
  size_t consumed; /* up to and including the terminator's LF */
  uint64_t raw_bytes;
  uint64_t lines;
};

#define S(s) s, sizeof(s) - 1

static const struct body_case body_cases[] = {
    /* Empty body, both terminator spellings. */
    {S(".\r\n"), S(""), 3, 0, 0},
    {S(".\n"), S(""), 2, 0, 0},
    /* One empty line. */
    {S("\r\n.\r\n"), S("\n"), 5, 2, 1},
    {S("\n.\n"), S("\n"), 3, 1, 1},
    {S("abc\r\n.\r\n"), S("abc\n"), 8, 5, 1},
    {S("a\r\nb\r\nc\r\n.\r\n"), S("a\nb\nc\n"), 12, 9, 3},
    /* Stuffed lines: ".." is ".", "..." is "..", ".x" is "x". */
    {S("..\r\n.\r\n"), S(".\n"), 7, 4, 1},
    {S("...\r\n.\r\n"), S("..\n"), 8, 5, 1},
    {S("..x\r\n.\r\n"), S(".x\n"), 8, 5, 1},
    {S(".x\r\n.\r\n"), S("x\n"), 7, 4, 1},
    {S("a\r\n..\r\n...\r\nb\r\n.\r\n"), S("a\n.\n..\nb\n"), 18, 15, 4},
    /* A dot inside a line is data. */
    {S("a.\r\n a\r\n.a.\r\n.\r\n"), S("a.\n a\na.\n"), 16, 13, 3},
    /* Bare CR kept anywhere but right before LF. */
    {S("a\rb\r\n.\r\n"), S("a\rb\n"), 8, 5, 1},
    {S("\rb\r\n.\r\n"), S("\rb\n"), 7, 4, 1},
    {S("a\r\r\n.\r\n"), S("a\r\n"), 7, 4, 1},
    {S("\r\r\n.\r\n"), S("\r\n"), 6, 3, 1},
    {S("a\r\r\r\n.\r\n"), S("a\r\r\n"), 8, 5, 1},
    /* ".\r" not followed by LF is a stuffed line starting with a CR. */
    {S(".\rx\r\n.\r\n"), S("\rx\n"), 8, 5, 1},
    {S(".\r\r\n.\r\n"), S("\r\n"), 7, 4, 1},
    {S("..\r\r\n.\r\n"), S(".\r\n"), 8, 5, 1},
    /* Bare LF ends lines too, mixed freely with CRLF. */
    {S("a\nb\r\n\n.\n"), S("a\nb\n\n"), 8, 6, 3},
    {S("..\n.\r\n"), S(".\n"), 6, 3, 1},
    /* A "." line with more after it is not the end. */
    {S(". \r\n.\r\n"), S(" \n"), 7, 4, 1},
    {S(".\t\r\n.\r\n"), S("\t\n"), 7, 4, 1},
    /* NUL and 8-bit bytes pass. */
    {S("\0\r\n\x80\xff\xfe.\r\n\xc3\xa9\n.\r\n"), S("\0\n\x80\xff\xfe.\n\xc3\xa9\n"), 15, 12, 3},
    {S(".\0\r\n.\r\n"), S("\0\n"), 7, 4, 1},
    /* Whatever follows the end marker is the next reply's. */
    {S("abc\r\n.\r\n+OK next\r\n"), S("abc\n"), 8, 5, 1},
    {S(".\r\n.\r\n"), S(""), 3, 0, 0},
    {S("a\r\n.\n.\r\n"), S("a\n"), 5, 3, 1},
    {S("x\r\n.\r\n-ERR [IN-USE] y\r\n.\r\n"), S("x\n"), 6, 3, 1},
    /* A longer line, to exercise the memchr path across cuts. */
    {S("From: a@example.org\r\nSubject: ..test\r\n\r\n.. body\r\n.\r\n"),
     S("From: a@example.org\nSubject: ..test\n\n. body\n"), 52, 49, 4},
};

static void test_mldec_cases(void) {
  for (size_t i = 0; i < sizeof(body_cases) / sizeof(body_cases[0]); i++) {
    const struct body_case *bc = &body_cases[i];
    struct decoded want, ref;
    want.done = 1;
    want.consumed = bc->consumed;
    want.out = (char *)bc->body;
    want.outlen = bc->body_len;
    want.raw_bytes = bc->raw_bytes;
    want.lines = bc->lines;
    /* The table itself agrees with the reference decoder... */
    ref_decode(bc->wire, bc->wire_len, &ref);
    if (!decoded_equal(&ref, &want)) {
      check_failures++;
      fprintf(stderr, "body case %zu: reference decoder disagrees with the table\n", i);
      dump("ref", ref.out, ref.outlen);
    }
    free(ref.out);
    /* ...and the streaming decoder agrees at every split. */
    compare_all_splits(bc->wire, bc->wire_len, &want);
  }
}

/* Two replies back to back: the second decoder starts where the first
 * stopped. */
static void test_mldec_back_to_back(void) {
  static const char wire[] = "a\r\n..b\r\n.\r\n.\r\nc\r\n.\n+OK\r\n";
  size_t len = sizeof(wire) - 1, pos = 0, outlen, consumed;
  char out[sizeof(wire) + 1];
  struct p3_mldec d;

  mldec_init(&d);
  CHECK_INT(mldec_feed(&d, wire, len, out, &outlen, &consumed), 1);
  CHECK_MEM(out, outlen, "a\n.b\n", 5);
  CHECK_INT(consumed, 11);
  CHECK_INT(d.raw_bytes, 8);
  CHECK_INT(d.lines, 2);
  pos += consumed;

  mldec_init(&d);
  CHECK_INT(mldec_feed(&d, wire + pos, len - pos, out, &outlen, &consumed), 1);
  CHECK_INT(outlen, 0);
  CHECK_INT(consumed, 3);
  CHECK_INT(d.lines, 0);
  pos += consumed;

  mldec_init(&d);
  CHECK_INT(mldec_feed(&d, wire + pos, len - pos, out, &outlen, &consumed), 1);
  CHECK_MEM(out, outlen, "c\n", 2);
  CHECK_INT(consumed, 5);
  pos += consumed;
  CHECK_MEM(wire + pos, len - pos, "+OK\r\n", 5);
}

/* The held-back cases, call by call. */
static void test_mldec_held(void) {
  struct p3_mldec d;
  char out[16];
  size_t outlen, consumed;

  /* A CR at a chunk's end waits; the next chunk shows it was bare. */
  mldec_init(&d);
  CHECK_INT(mldec_feed(&d, "abc\r", 4, out, &outlen, &consumed), 0);
  CHECK_MEM(out, outlen, "abc", 3);
  CHECK_INT(consumed, 4);
  CHECK_INT(mldec_feed(&d, "x\n", 2, out, &outlen, &consumed), 0);
  CHECK_MEM(out, outlen, "\rx\n", 3); /* inlen + 1 */
  CHECK_INT(consumed, 2);
  /* ...or that it came before an LF. */
  CHECK_INT(mldec_feed(&d, "y\r", 2, out, &outlen, &consumed), 0);
  CHECK_MEM(out, outlen, "y", 1);
  CHECK_INT(mldec_feed(&d, "\n", 1, out, &outlen, &consumed), 0);
  CHECK_MEM(out, outlen, "\n", 1);
  /* A CR then a CR: the first was bare, the second waits. */
  CHECK_INT(mldec_feed(&d, "z\r", 2, out, &outlen, &consumed), 0);
  CHECK_MEM(out, outlen, "z", 1);
  CHECK_INT(mldec_feed(&d, "\r", 1, out, &outlen, &consumed), 0);
  CHECK_MEM(out, outlen, "\r", 1);
  CHECK_INT(mldec_feed(&d, "\n", 1, out, &outlen, &consumed), 0);
  CHECK_MEM(out, outlen, "\n", 1);
  /* Line-start dot, then ".\r", then the LF that ends it all. */
  CHECK_INT(mldec_feed(&d, ".", 1, out, &outlen, &consumed), 0);
  CHECK_INT(outlen, 0);
  CHECK_INT(consumed, 1);
  CHECK_INT(mldec_feed(&d, "\r", 1, out, &outlen, &consumed), 0);
  CHECK_INT(outlen, 0);
  CHECK_INT(mldec_feed(&d, "", 0, out, &outlen, &consumed), 0);
  CHECK_INT(outlen, 0);
  CHECK_INT(consumed, 0);
  CHECK_INT(mldec_feed(&d, "\nNEXT", 5, out, &outlen, &consumed), 1);
  CHECK_INT(outlen, 0);
  CHECK_INT(consumed, 1);
  CHECK_INT(d.lines, 3);
  CHECK_INT(d.raw_bytes, 6 + 3 + 4); /* "abc\rx\n" "y\r\n" "z\r\r\n" */

  /* ".\r" released as a bare CR when no LF follows: one byte in, two out. */
  mldec_init(&d);
  CHECK_INT(mldec_feed(&d, ".\r", 2, out, &outlen, &consumed), 0);
  CHECK_INT(outlen, 0);
  CHECK_INT(mldec_feed(&d, "x", 1, out, &outlen, &consumed), 0);
  CHECK_MEM(out, outlen, "\rx", 2);
  CHECK_INT(d.raw_bytes, 3);
}

/* An ordinary message, and the state is lines/bytes that add up. */
static void test_mldec_counts(void) {
  static const char wire[] = "Subject: hi\r\n\r\n..dot\r\nend\r\n.\r\n";
  struct p3_mldec d;
  char out[sizeof(wire) + 1];
  size_t outlen, consumed;
  mldec_init(&d);
  CHECK_INT(d.raw_bytes, 0);
  CHECK_INT(d.lines, 0);
  CHECK_INT(mldec_feed(&d, wire, sizeof(wire) - 1, out, &outlen, &consumed), 1);
  CHECK_MEM(out, outlen, "Subject: hi\n\n.dot\nend\n", 22);
  CHECK_INT(consumed, sizeof(wire) - 1);
  CHECK_INT(d.raw_bytes, sizeof(wire) - 1 - 3);
  CHECK_INT(d.lines, 4);
}

/* xorshift: a fixed seed gives the same "random" bodies on every run. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint32_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 32);
}

/* Random bodies from an alphabet heavy in the bytes that matter, then a
 * terminator and the start of the next reply; the streaming decoder must
 * match the reference at random cuts, and never overrun out. */
static void test_mldec_random(void) {
  static const char alphabet[] = {'.', '.', '\r', '\r', '\n',       '\n',
                                  'a', 'b', ' ',  '\0', (char)0x80, (char)0xff};
  char in[512];
  size_t cuts[64];
  int failed = 0;

  for (int iter = 0; iter < 20000 && failed < 3; iter++) {
    size_t body = rng() % 200, len = 0, ncuts, nlines;
    struct decoded want;

    /* Sometimes long runs of plain text, to use the memchr path. */
    for (size_t i = 0; i < body; i++) {
      if (rng() % 8 == 0) {
        size_t run = rng() % 40;
        for (size_t k = 0; k < run && len < 300; k++)
          in[len++] = (char)('A' + rng() % 26);
      }
      if (len < 300)
        in[len++] = alphabet[rng() % sizeof(alphabet)];
    }
    memcpy(in + len, "\r\n.\r\n+OK\r\n", 10);
    len += 10;

    ref_decode(in, len, &want);
    CHECK(want.done);
    /* Cross-check the counters: lines are the LFs of the body. */
    nlines = 0;
    for (size_t i = 0; i < want.outlen; i++)
      nlines += want.out[i] == '\n';
    CHECK_INT(nlines, want.lines);

    ncuts = rng() % 8;
    if (rng() % 16 == 0)
      ncuts = 60;
    for (size_t c = 0; c < ncuts; c++)
      cuts[c] = rng() % (len + 1);
    /* Sort (insertion sort: few cuts). */
    for (size_t c = 1; c < ncuts; c++)
      for (size_t k = c; k > 0 && cuts[k - 1] > cuts[k]; k--) {
        size_t t = cuts[k];
        cuts[k] = cuts[k - 1];
        cuts[k - 1] = t;
      }
    if (!compare_at(in, len, cuts, ncuts, &want))
      failed++;
    free(want.out);
  }
}

/* Every short input from a tiny alphabet, whole and split in two: covers
 * every combination of dots, CRs and LFs around line starts. */
static void test_mldec_exhaustive(void) {
  static const char alphabet[] = {'.', '\r', '\n', 'a'};
  char in[16];
  size_t cuts[1];
  int failed = 0;

  for (size_t n = 0; n <= 7 && failed < 3; n++) {
    size_t total = 1;
    for (size_t k = 0; k < n; k++)
      total *= sizeof(alphabet);
    for (size_t v = 0; v < total && failed < 3; v++) {
      size_t x = v, len;
      struct decoded want;
      for (size_t k = 0; k < n; k++) {
        in[k] = alphabet[x % sizeof(alphabet)];
        x /= sizeof(alphabet);
      }
      /* End with a terminator so every input is complete. */
      memcpy(in + n, "\n.\r\nZ", 5);
      len = n + 5;
      ref_decode(in, len, &want);
      if (!compare_at(in, len, NULL, 0, &want))
        failed++;
      for (size_t a = 0; a <= len && !failed; a++) {
        cuts[0] = a;
        if (!compare_at(in, len, cuts, 1, &want))
          failed++;
      }
      free(want.out);
    }
  }
}

/* Incomplete input: everything is consumed, nothing is final. */
static void test_mldec_incomplete(void) {
  static const char *const partial[] = {"",       "abc",  "abc\r\n", "abc\r\n.", "abc\r\n.\r",
                                        "\r\n..", "\r\n", ". \r\n",  ".\r\r\n"};
  for (size_t i = 0; i < sizeof(partial) / sizeof(partial[0]); i++) {
    struct p3_mldec d;
    size_t len = strlen(partial[i]), outlen, consumed;
    char out[16];
    mldec_init(&d);
    CHECK_INT(mldec_feed(&d, partial[i], len, out, &outlen, &consumed), 0);
    CHECK_INT(consumed, len);
  }
}

/* ---- CAPA -------------------------------------------------------------- */

static void caps(struct p3_caps *c, const char *line) {
  proto_caps_line(c, line, strlen(line));
}

static void test_caps(void) {
  struct p3_caps c;

  proto_caps_init(&c);
  CHECK_INT(c.stls, 0);
  CHECK_INT(c.pipelining, 0);
  CHECK_INT(c.uidl, 0);
  CHECK_INT(c.user, 0);
  CHECK_INT(c.top, 0);
  CHECK_INT(c.resp_codes, 0);
  CHECK_INT(c.auth_resp_code, 0);
  CHECK_INT(c.sasl_plain, 0);
  CHECK_INT(c.expire_zero, 0);
  CHECK_INT(c.has_expire, 0);
  CHECK_INT(c.login_delay, -1);
  CHECK_INT(c.expire_days, -1);

  caps(&c, "STLS");
  CHECK_INT(c.stls, 1);
  caps(&c, "pipelining");
  CHECK_INT(c.pipelining, 1);
  caps(&c, "Uidl");
  CHECK_INT(c.uidl, 1);
  caps(&c, "USER");
  CHECK_INT(c.user, 1);
  caps(&c, "TOP");
  CHECK_INT(c.top, 1);
  caps(&c, "RESP-CODES");
  CHECK_INT(c.resp_codes, 1);
  caps(&c, "AUTH-RESP-CODE");
  CHECK_INT(c.auth_resp_code, 1);
  CHECK_INT(c.sasl_plain, 0);
  CHECK_INT(c.has_expire, 0);

  /* RFC 6856; Mailutils' EXPIRE NEVER without its space. */
  proto_caps_init(&c);
  CHECK_INT(c.utf8, 0);
  caps(&c, "UTF8 USER");
  CHECK_INT(c.utf8, 1);
  proto_caps_init(&c);
  caps(&c, "utf8");
  CHECK_INT(c.utf8, 1);
  caps(&c, "EXPIRENEVER");
  CHECK_INT(c.has_expire, 1);
  CHECK_INT(c.expire_zero, 0);
  CHECK_INT(c.expire_days, -1);
  proto_caps_init(&c);
  caps(&c, "UTF8X");
  caps(&c, "UTF");
  CHECK_INT(c.utf8, 0);

  /* Names are whole tokens. */
  proto_caps_init(&c);
  caps(&c, "STLSX");
  caps(&c, "TOPS");
  caps(&c, "USERS");
  caps(&c, "UID");
  caps(&c, "X-PIPELINING");
  caps(&c, "");
  caps(&c, "   ");
  caps(&c, "IMPLEMENTATION Some Server 1.0");
  CHECK_INT(c.stls, 0);
  CHECK_INT(c.top, 0);
  CHECK_INT(c.user, 0);
  CHECK_INT(c.uidl, 0);
  CHECK_INT(c.pipelining, 0);
  /* The length bounds the line. */
  proto_caps_line(&c, "STLS", 3);
  CHECK_INT(c.stls, 0);
  proto_caps_line(&c, "TOP-NOT", 3);
  CHECK_INT(c.top, 1);
  /* Surrounding blanks are tolerated. */
  caps(&c, " STLS ");
  CHECK_INT(c.stls, 1);

  proto_caps_init(&c);
  caps(&c, "SASL CRAM-MD5 DIGEST-MD5");
  CHECK_INT(c.sasl_plain, 0);
  caps(&c, "SASL PLAINX XPLAIN");
  caps(&c, "SASL LOGIN NTLM PLAI");
  CHECK_INT(c.sasl_plain, 0);
  caps(&c, "SASL");
  CHECK_INT(c.sasl_plain, 0);
  caps(&c, "SASL CRAM-MD5 plain LOGIN");
  CHECK_INT(c.sasl_plain, 1);
  proto_caps_init(&c);
  caps(&c, "sasl  PLAIN");
  CHECK_INT(c.sasl_plain, 1);
  proto_caps_init(&c);
  caps(&c, "PLAIN");
  CHECK_INT(c.sasl_plain, 0);
  CHECK_INT(c.sasl, 0);
  CHECK_STR(c.sasl_list, "");

  /* Every mechanism we know, as bits; all of them, as listed, for messages. */
  proto_caps_init(&c);
  caps(&c, "SASL PLAIN LOGIN XOAUTH2 OAUTHBEARER");
  CHECK_INT(c.sasl, P3_SASL_PLAIN | P3_SASL_LOGIN | P3_SASL_XOAUTH2 | P3_SASL_OAUTHBEARER);
  CHECK_STR(c.sasl_list, "PLAIN LOGIN XOAUTH2 OAUTHBEARER");
  proto_caps_init(&c);
  caps(&c, "SASL cram-md5 xoauth2");
  caps(&c, "SASL LOGINX OAUTHBEARER2"); /* a second line adds to the first */
  CHECK_INT(c.sasl, P3_SASL_XOAUTH2);
  CHECK_INT(c.sasl_plain, 0);
  CHECK_STR(c.sasl_list, "CRAM-MD5 XOAUTH2 LOGINX OAUTHBEARER2");
  /* USER is its own capability, not a SASL one. */
  CHECK_INT(c.user, 0);
  caps(&c, "USER");
  CHECK_INT(c.user, 1);
  /* A long list is cut at a whole name; odd bytes are shown as '?'. */
  proto_caps_init(&c);
  {
    char line[1024] = "SASL";
    for (int i = 0; i < 40; i++)
      strcat(line, " MECHANISM-N");
    strcat(line, " PLAIN");
    caps(&c, line);
  }
  CHECK_INT(c.sasl_plain, 1); /* still seen, though not listed */
  CHECK(strlen(c.sasl_list) < P3_SASL_LIST_MAX);
  CHECK(strlen(c.sasl_list) > 100);
  CHECK(strcmp(c.sasl_list + strlen(c.sasl_list) - 15, "MECHANISM-N ...") == 0);
  proto_caps_init(&c);
  proto_caps_line(&c, "SASL X\x01\xffY", 9);
  CHECK_STR(c.sasl_list, "X??Y");
  /* proto_caps_init clears the list. */
  proto_caps_init(&c);
  CHECK_STR(c.sasl_list, "");

  proto_caps_init(&c);
  caps(&c, "EXPIRE 0");
  CHECK_INT(c.has_expire, 1);
  CHECK_INT(c.expire_zero, 1);
  CHECK_INT(c.expire_days, 0);
  proto_caps_init(&c);
  caps(&c, "EXPIRE 0 USER");
  CHECK_INT(c.has_expire, 1);
  CHECK_INT(c.expire_zero, 1);
  CHECK_INT(c.expire_days, 0);
  proto_caps_init(&c);
  caps(&c, "expire 30");
  CHECK_INT(c.has_expire, 1);
  CHECK_INT(c.expire_zero, 0);
  CHECK_INT(c.expire_days, 30);
  caps(&c, "EXPIRE 60 USER");
  CHECK_INT(c.expire_days, 60);
  caps(&c, "EXPIRE 0"); /* a later line (after login) wins */
  CHECK_INT(c.expire_zero, 1);
  caps(&c, "EXPIRE NEVER");
  CHECK_INT(c.has_expire, 1);
  CHECK_INT(c.expire_zero, 0);
  CHECK_INT(c.expire_days, -1);
  proto_caps_init(&c);
  caps(&c, "EXPIRE never");
  CHECK_INT(c.has_expire, 1);
  CHECK_INT(c.expire_days, -1);
  /* Malformed: ignored. */
  proto_caps_init(&c);
  caps(&c, "EXPIRE");
  caps(&c, "EXPIRE x");
  caps(&c, "EXPIRE -1");
  caps(&c, "EXPIRE 0x");
  caps(&c, "EXPIRE 99999999999999999999999");
  CHECK_INT(c.has_expire, 0);
  CHECK_INT(c.expire_zero, 0);
  CHECK_INT(c.expire_days, -1);
  /* "EXPIRE 00" is still zero. */
  caps(&c, "EXPIRE 00");
  CHECK_INT(c.expire_zero, 1);

  proto_caps_init(&c);
  caps(&c, "LOGIN-DELAY 900");
  CHECK_INT(c.login_delay, 900);
  caps(&c, "login-delay 0 USER");
  CHECK_INT(c.login_delay, 0);
  caps(&c, "LOGIN-DELAY");
  caps(&c, "LOGIN-DELAY soon");
  caps(&c, "LOGIN-DELAY 5s");
  CHECK_INT(c.login_delay, 0);
}

/* ---- LIST, UIDL, RETR -------------------------------------------------- */

static void list_ok(const char *line, unsigned long num, uint64_t size) {
  unsigned long n = 0;
  uint64_t s = 0;
  int r = proto_parse_list_line(line, strlen(line), &n, &s);
  CHECK_INT(r, 0);
  if (r != 0)
    fprintf(stderr, "  line: \"%s\"\n", line);
  CHECK_INT(n, num);
  CHECK(s == size);
}

static void list_bad(const char *line) {
  unsigned long n = 0;
  uint64_t s = 0;
  int r = proto_parse_list_line(line, strlen(line), &n, &s);
  CHECK_INT(r, P3_EPROTO);
  if (r != P3_EPROTO)
    fprintf(stderr, "  line: \"%s\"\n", line);
}

static void uidl_ok(const char *line, unsigned long num, const char *uid) {
  unsigned long n = 0;
  const char *u = NULL;
  size_t ulen = 0;
  int r = proto_parse_uidl_line(line, strlen(line), &n, &u, &ulen);
  CHECK_INT(r, 0);
  if (r != 0) {
    fprintf(stderr, "  line: \"%s\"\n", line);
    return;
  }
  CHECK_INT(n, num);
  CHECK_MEM(u, ulen, uid, strlen(uid));
  CHECK(u >= line && u + ulen <= line + strlen(line));
}

static void uidl_bad(const char *line, size_t len) {
  unsigned long n = 0;
  const char *u = NULL;
  size_t ulen = 0;
  int r = proto_parse_uidl_line(line, len, &n, &u, &ulen);
  CHECK_INT(r, P3_EPROTO);
  if (r != P3_EPROTO)
    fprintf(stderr, "  line: \"%.*s\"\n", (int)len, line);
}

static void test_list(void) {
  list_ok("1 120", 1, 120);
  list_ok("42 0", 42, 0);
  list_ok("7 18446744073709551615", 7, UINT64_MAX);
  list_ok("3 200 extra info", 3, 200);
  list_ok("3 200 ", 3, 200);
  list_ok("3  200", 3, 200);
  list_ok("007 10", 7, 10);
  list_bad("");
  list_bad("1");
  list_bad("1 ");
  list_bad("0 100");
  list_bad("-1 100");
  list_bad(" 1 100");
  list_bad("1 -100");
  list_bad("x 100");
  list_bad("1 x");
  list_bad("1 12x");
  list_bad("1x 12");
  list_bad("1 18446744073709551616");
  list_bad("99999999999999999999999 1");
  {
    unsigned long n;
    uint64_t s;
    /* The length bounds the line. */
    CHECK_INT(proto_parse_list_line("12 345", 4, &n, &s), 0);
    CHECK_INT(n, 12);
    CHECK(s == 3);
    CHECK_INT(proto_parse_list_line("12 345", 3, &n, &s), P3_EPROTO);
    CHECK_INT(proto_parse_list_line("1 2\0", 4, &n, &s), P3_EPROTO);
  }
}

static void test_uidl(void) {
  char line[P3_UID_MAX + 8];
  uidl_ok("1 whqtswO00WBw418f9t5JxYwZ", 1, "whqtswO00WBw418f9t5JxYwZ");
  uidl_ok("2 QhdPYR:00WBw1Ph7x7", 2, "QhdPYR:00WBw1Ph7x7");
  uidl_ok("10 !", 10, "!");
  uidl_ok("10 ~", 10, "~");
  uidl_ok("3 <abc@def>", 3, "<abc@def>");
  uidl_ok("4  padded  ", 4, "padded");
  uidl_ok("5 x\t", 5, "x");
  /* RFC 1939's 70 characters are exceeded by real servers: up to
   * P3_UID_MAX (512) is accepted, one more is not. */
  memset(line, 0, sizeof(line));
  memcpy(line, "9 ", 2);
  memset(line + 2, 'u', 70);
  uidl_ok(line, 9, line + 2);
  memset(line + 2, 'u', 300);
  uidl_ok(line, 9, line + 2);
  memset(line + 2, 'u', P3_UID_MAX);
  uidl_ok(line, 9, line + 2);
  line[2 + P3_UID_MAX] = 'u';
  uidl_bad(line, 2 + P3_UID_MAX + 1);
  {
    /* A bad UID still names its message; a bad number names none. */
    unsigned long n = 99;
    const char *u;
    size_t ulen;
    CHECK_INT(proto_parse_uidl_line(line, 2 + P3_UID_MAX + 1, &n, &u, &ulen), P3_EPROTO);
    CHECK_INT(n, 9);
    n = 99;
    CHECK_INT(proto_parse_uidl_line("7 a\x80\x62", 5, &n, &u, &ulen), P3_EPROTO);
    CHECK_INT(n, 7);
    n = 99;
    CHECK_INT(proto_parse_uidl_line("x abc", 5, &n, &u, &ulen), P3_EPROTO);
    CHECK_INT(n, 0);
  }

  uidl_bad("", 0);
  uidl_bad("1", 1);
  uidl_bad("1 ", 2);
  uidl_bad("1  ", 3);
  uidl_bad("0 abc", 5);
  uidl_bad("x abc", 5);
  uidl_bad("1abc", 4);
  uidl_bad(" 1 abc", 6);
  uidl_bad("1 ab cd", 7);
  uidl_bad("1 ab\tcd", 7);
  uidl_bad("1 ab\x7f", 5);
  uidl_bad("1 ab\x80", 5);
  uidl_bad("1 \xc3\xa9", 4);
  uidl_bad("1 ab\0", 5);
  uidl_bad("1 ab\r", 5);
  uidl_bad("99999999999999999999999 a", 25);
}

static void test_retr_octets(void) {
  uint64_t n = 77;
  CHECK_INT(proto_retr_octets(S("123 octets"), &n), 1);
  CHECK(n == 123);
  CHECK_INT(proto_retr_octets(S("0 octets"), &n), 1);
  CHECK(n == 0);
  CHECK_INT(proto_retr_octets(S("4567"), &n), 1);
  CHECK(n == 4567);
  CHECK_INT(proto_retr_octets(S("18446744073709551615 octets"), &n), 1);
  CHECK(n == UINT64_MAX);
  n = 77;
  CHECK_INT(proto_retr_octets(S("message follows"), &n), 0);
  CHECK_INT(proto_retr_octets(S(""), &n), 0);
  CHECK_INT(proto_retr_octets(S("12abc"), &n), 0);
  CHECK_INT(proto_retr_octets(S("-12 octets"), &n), 0);
  CHECK_INT(proto_retr_octets(S("18446744073709551616 octets"), &n), 0);
  CHECK(n == 77);
  /* The length bounds the text. */
  CHECK_INT(proto_retr_octets("123 octets", 2, &n), 1);
  CHECK(n == 12);
}

static void test_retr_says_octets(void) {
  CHECK_INT(proto_retr_says_octets(S("979 octets follow.")), 1);
  CHECK_INT(proto_retr_says_octets(S("123 octets")), 1);
  CHECK_INT(proto_retr_says_octets(S("123 OCTETS")), 1);
  CHECK_INT(proto_retr_says_octets(S("123  octets.")), 1);
  /* A UIDL reply "N UID" read where a RETR reply belongs. */
  CHECK_INT(proto_retr_says_octets(S("3 uid-3")), 0);
  CHECK_INT(proto_retr_says_octets(S("3 octetsx")), 0);
  CHECK_INT(proto_retr_says_octets(S("123")), 0);
  CHECK_INT(proto_retr_says_octets(S("123octets")), 0);
  CHECK_INT(proto_retr_says_octets(S("message follows")), 0);
  CHECK_INT(proto_retr_says_octets(S("")), 0);
  CHECK_INT(proto_retr_says_octets("12 octets", 8), 0);
}

int main(void) {
  test_status();
  test_mldec_cases();
  test_mldec_back_to_back();
  test_mldec_held();
  test_mldec_counts();
  test_mldec_incomplete();
  test_mldec_exhaustive();
  test_mldec_random();
  test_caps();
  test_list();
  test_uidl();
  test_retr_octets();
  test_retr_says_octets();
  return check_result("test_proto");
}

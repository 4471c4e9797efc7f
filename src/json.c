#include "config.h"

#include "json.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

/* A control reply is a few kilobytes; past this something is wrong, and the
 * buffer is treated like a failed allocation (pop3ctl reads at most 16 MiB
 * per reply line, so a bigger document could not be read anyway). */
#define JBUF_MAX (16u * 1024 * 1024)
/* Nesting limit of the parser (the header promises 64). */
#define JSON_MAX_DEPTH 64
/* A number longer than this is not something the daemon writes. */
#define JSON_MAX_NUMBER 128

/* ---- writer */

/* When jbuf_init cannot allocate, data points here so that it is always a
 * valid string; cap == 0 marks it as not ours to free. */
static char jbuf_empty[1];

void jbuf_init(struct jbuf *b) {
  b->len = 0;
  b->err = 0;
  b->need_comma = 0;
  b->cap = 256;
  b->data = malloc(b->cap);
  if (b->data == NULL) {
    b->data = jbuf_empty;
    b->cap = 0;
    b->err = -ENOMEM;
    return;
  }
  b->data[0] = '\0';
}

void jbuf_free(struct jbuf *b) {
  if (b->cap != 0)
    free(b->data);
  b->data = jbuf_empty;
  b->len = b->cap = 0;
  b->need_comma = 0;
}

/* Makes room for n more bytes plus the NUL; 0, or -1 once b->err is set. */
static int reserve(struct jbuf *b, size_t n) {
  if (b->err)
    return -1;
  /* Past JBUF_MAX counts as a failed allocation (-E2BIG becomes -ENOMEM). */
  if (n > JBUF_MAX || buf_grow(&b->data, &b->cap, b->len + n + 1, 1, BUF_FIRST, JBUF_MAX) != 0) {
    b->err = -ENOMEM;
    return -1;
  }
  return 0;
}

static void append(struct jbuf *b, const char *s, size_t n) {
  if (reserve(b, n) != 0)
    return;
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}

/* One flag is enough for the commas: a value (or a whole container) just
 * written at this level means the next key or value needs one; a begin or a
 * key means it does not.  No stack needed. */
static void before_value(struct jbuf *b) {
  if (b->need_comma)
    append(b, ",", 1);
}

void jbuf_obj_begin(struct jbuf *b) {
  before_value(b);
  append(b, "{", 1);
  b->need_comma = 0;
}

void jbuf_obj_end(struct jbuf *b) {
  append(b, "}", 1);
  b->need_comma = 1;
}

void jbuf_arr_begin(struct jbuf *b) {
  before_value(b);
  append(b, "[", 1);
  b->need_comma = 0;
}

void jbuf_arr_end(struct jbuf *b) {
  append(b, "]", 1);
  b->need_comma = 1;
}

/* Length of the valid UTF-8 sequence at p (1 to 4), or 0 when the bytes
 * there are not one (overlong forms, surrogates and code points above
 * U+10FFFF included), per RFC 3629's table. */
static size_t utf8_seq_len(const unsigned char *p, size_t avail) {
  unsigned char c = p[0];
  if (c < 0x80)
    return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF)
    n = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0)
      lo = 0xA0;
    else if (c == 0xED)
      hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0)
      lo = 0x90;
    else if (c == 0xF4)
      hi = 0x8F;
  } else
    return 0;
  if (avail < n || p[1] < lo || p[1] > hi)
    return 0;
  for (size_t i = 2; i < n; i++)
    if (p[i] < 0x80 || p[i] > 0xBF)
      return 0;
  return n;
}

static void write_string(struct jbuf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s, *end = p + n, *run = p;
  append(b, "\"", 1);
  while (p < end) {
    unsigned char c = *p;
    size_t seq = 1;
    const char *esc = NULL;
    char ubuf[7];
    if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f &&
        (c < 0x80 || (seq = utf8_seq_len(p, (size_t)(end - p))) != 0)) {
      p += seq;
      continue;
    }
    switch (c) {
    case '"':
      esc = "\\\"";
      break;
    case '\\':
      esc = "\\\\";
      break;
    case '\n':
      esc = "\\n";
      break;
    case '\t':
      esc = "\\t";
      break;
    case '\r':
      esc = "\\r";
      break;
    case '\b':
      esc = "\\b";
      break;
    case '\f':
      esc = "\\f";
      break;
    default:
      /* Other controls, DEL (harmless to JSON, not to a terminal that shows
       * the raw text), and a byte that starts no valid UTF-8 sequence: the
       * latter becomes U+00XX, so the output stays valid JSON whatever a
       * server sent. */
      ubuf[0] = '\\';
      ubuf[1] = 'u';
      ubuf[2] = '0';
      ubuf[3] = '0';
      ubuf[4] = hex[c >> 4];
      ubuf[5] = hex[c & 15];
      ubuf[6] = '\0';
      esc = ubuf;
      break;
    }
    append(b, (const char *)run, (size_t)(p - run));
    append(b, esc, strlen(esc));
    run = ++p;
  }
  append(b, (const char *)run, (size_t)(p - run));
  append(b, "\"", 1);
}

void jbuf_key(struct jbuf *b, const char *key) {
  before_value(b);
  write_string(b, key, strlen(key));
  append(b, ":", 1);
  b->need_comma = 0;
}

void jbuf_strn(struct jbuf *b, const char *s, size_t n) {
  before_value(b);
  write_string(b, s, n);
  b->need_comma = 1;
}

void jbuf_str(struct jbuf *b, const char *s) {
  if (s == NULL)
    jbuf_null(b);
  else
    jbuf_strn(b, s, strlen(s));
}

static void raw_value(struct jbuf *b, const char *text) {
  before_value(b);
  append(b, text, strlen(text));
  b->need_comma = 1;
}

void jbuf_int(struct jbuf *b, int64_t v) {
  char buf[32];
  snprintf(buf, sizeof buf, "%" PRId64, v);
  raw_value(b, buf);
}

void jbuf_uint(struct jbuf *b, uint64_t v) {
  char buf[32];
  snprintf(buf, sizeof buf, "%" PRIu64, v);
  raw_value(b, buf);
}

void jbuf_bool(struct jbuf *b, int v) {
  raw_value(b, v ? "true" : "false");
}

void jbuf_null(struct jbuf *b) {
  raw_value(b, "null");
}

void jbuf_time(struct jbuf *b, time_t t) {
  struct tm tm;
  char buf[64];
  if (t == 0 || gmtime_r(&t, &tm) == NULL) {
    jbuf_null(b);
    return;
  }
  snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  jbuf_str(b, buf);
}

/* ---- parser (RFC 8259, strict: no comments, no trailing commas, no
 * leading zeros, UTF-8 only) */

struct parser {
  const unsigned char *p, *end;
  int depth;
};

static int parse_value(struct parser *ps, struct json *v);

static void skip_ws(struct parser *ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
    ps->p++;
}

static int hex4(const unsigned char *p, unsigned *v_r) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= c - '0';
    else if (c >= 'a' && c <= 'f')
      v |= c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      v |= c - 'A' + 10;
    else
      return -1;
  }
  *v_r = v;
  return 0;
}

static char *put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) {
    *o++ = (char)cp;
  } else if (cp < 0x800) {
    *o++ = (char)(0xC0 | (cp >> 6));
    *o++ = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *o++ = (char)(0xE0 | (cp >> 12));
    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *o++ = (char)(0x80 | (cp & 0x3F));
  } else {
    *o++ = (char)(0xF0 | (cp >> 18));
    *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *o++ = (char)(0x80 | (cp & 0x3F));
  }
  return o;
}

/* Parses the string at ps->p (which is at the opening quote) into a new
 * NUL-terminated buffer.  \u0000 decodes to a NUL byte, which cuts the C
 * string short: the API has no lengths, and the daemon never sends one. */
static int parse_string(struct parser *ps, char **s_r) {
  const unsigned char *p = ps->p + 1, *end = ps->end, *q = p;
  /* Find the closing quote first: decoding never makes text longer (an
   * escape of 6 bytes yields at most 3, a pair of 12 at most 4), so the raw
   * span bounds the allocation. */
  while (q < end && *q != '"') {
    if (*q == '\\' && end - q < 2)
      return -EINVAL;
    q += *q == '\\' ? 2 : 1;
  }
  if (q == end)
    return -EINVAL;
  char *s = malloc((size_t)(q - p) + 1), *o = s;
  if (s == NULL)
    return -ENOMEM;
  while (p < q) {
    unsigned char c = *p;
    if (c < 0x20)
      goto bad;
    if (c >= 0x80) {
      size_t n = utf8_seq_len(p, (size_t)(q - p));
      if (n == 0)
        goto bad;
      memcpy(o, p, n);
      o += n;
      p += n;
      continue;
    }
    if (c != '\\') {
      *o++ = (char)c;
      p++;
      continue;
    }
    /* q - p >= 2 here: the scan above stepped over the escaped byte. */
    c = p[1];
    p += 2;
    switch (c) {
    case '"':
      *o++ = '"';
      break;
    case '\\':
      *o++ = '\\';
      break;
    case '/':
      *o++ = '/';
      break;
    case 'b':
      *o++ = '\b';
      break;
    case 'f':
      *o++ = '\f';
      break;
    case 'n':
      *o++ = '\n';
      break;
    case 'r':
      *o++ = '\r';
      break;
    case 't':
      *o++ = '\t';
      break;
    case 'u': {
      unsigned cp, lo;
      if (q - p < 4 || hex4(p, &cp) != 0)
        goto bad;
      p += 4;
      if (cp >= 0xDC00 && cp <= 0xDFFF)
        goto bad; /* a lone low surrogate */
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        /* A high surrogate must be followed by a low one; a lone one has no
         * UTF-8 form. */
        if (q - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) != 0 || lo < 0xDC00 ||
            lo > 0xDFFF)
          goto bad;
        p += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      }
      o = put_utf8(o, cp);
      break;
    }
    default:
      goto bad;
    }
  }
  *o = '\0';
  ps->p = q + 1;
  *s_r = s;
  return 0;
bad:
  free(s);
  return -EINVAL;
}

static int is_digit(unsigned char c) {
  return c >= '0' && c <= '9';
}

static int parse_number(struct parser *ps, double *d_r) {
  const unsigned char *p = ps->p, *end = ps->end, *start = p;
  if (p < end && *p == '-')
    p++;
  if (p < end && *p == '0')
    p++; /* a leading zero stands alone: "01" is not a number */
  else if (p < end && is_digit(*p))
    while (p < end && is_digit(*p))
      p++;
  else
    return -EINVAL;
  if (p < end && *p == '.') {
    p++;
    if (p == end || !is_digit(*p))
      return -EINVAL;
    while (p < end && is_digit(*p))
      p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < end && (*p == '+' || *p == '-'))
      p++;
    if (p == end || !is_digit(*p))
      return -EINVAL;
    while (p < end && is_digit(*p))
      p++;
  }
  /* The text need not be NUL-terminated: strtod gets a bounded copy, whose
   * syntax was checked above (so strtod cannot read "inf" or hex). */
  char buf[JSON_MAX_NUMBER + 1];
  size_t n = (size_t)(p - start);
  if (n > JSON_MAX_NUMBER)
    return -EINVAL;
  memcpy(buf, start, n);
  buf[n] = '\0';
  *d_r = strtod(buf, NULL);
  ps->p = p;
  return 0;
}

static int literal(struct parser *ps, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
    return -EINVAL;
  ps->p += n;
  return 0;
}

/* Adds a zeroed slot to a container and returns it; the count includes it
 * at once, so that json_clear frees whatever a failed parse left there. */
static struct json *add_item(struct json *v, size_t *cap, char *key) {
  if (v->count == *cap) {
    /* items and keys grow in step: both have room for *cap entries. */
    size_t icap = *cap, kcap = *cap;
    if (buf_grow(&v->items, &icap, v->count + 1, sizeof *v->items, 4, SIZE_MAX / sizeof *v->items))
      return NULL;
    if (v->type == JSON_OBJECT &&
        buf_grow(&v->keys, &kcap, icap, sizeof *v->keys, 4, SIZE_MAX / sizeof *v->keys))
      return NULL;
    *cap = icap;
  }
  struct json *it = &v->items[v->count];
  memset(it, 0, sizeof *it);
  if (v->type == JSON_OBJECT)
    v->keys[v->count] = key;
  v->count++;
  return it;
}

static int parse_container(struct parser *ps, struct json *v, int is_obj) {
  unsigned char close = is_obj ? '}' : ']';
  size_t cap = 0;
  int err;
  if (++ps->depth > JSON_MAX_DEPTH)
    return -EINVAL;
  v->type = is_obj ? JSON_OBJECT : JSON_ARRAY;
  ps->p++;
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == close) {
    ps->p++;
    ps->depth--;
    return 0;
  }
  for (;;) {
    char *key = NULL;
    skip_ws(ps);
    if (is_obj) {
      if (ps->p == ps->end || *ps->p != '"')
        return -EINVAL;
      if ((err = parse_string(ps, &key)) != 0)
        return err;
      skip_ws(ps);
      if (ps->p == ps->end || *ps->p != ':') {
        free(key);
        return -EINVAL;
      }
      ps->p++;
    }
    struct json *it = add_item(v, &cap, key);
    if (it == NULL) {
      free(key);
      return -ENOMEM;
    }
    if ((err = parse_value(ps, it)) != 0)
      return err;
    skip_ws(ps);
    if (ps->p == ps->end)
      return -EINVAL;
    if (*ps->p == ',') {
      ps->p++;
      continue;
    }
    if (*ps->p != close)
      return -EINVAL;
    ps->p++;
    ps->depth--;
    return 0;
  }
}

static int parse_value(struct parser *ps, struct json *v) {
  skip_ws(ps);
  if (ps->p == ps->end)
    return -EINVAL;
  switch (*ps->p) {
  case '{':
    return parse_container(ps, v, 1);
  case '[':
    return parse_container(ps, v, 0);
  case '"':
    v->type = JSON_STRING;
    return parse_string(ps, &v->string);
  case 't':
    v->type = JSON_BOOL;
    v->boolean = 1;
    return literal(ps, "true");
  case 'f':
    v->type = JSON_BOOL;
    return literal(ps, "false");
  case 'n':
    v->type = JSON_NULL;
    return literal(ps, "null");
  default:
    v->type = JSON_NUMBER;
    return parse_number(ps, &v->number);
  }
}

/* Frees what v holds, not v itself. */
static void json_clear(struct json *v) {
  for (size_t i = 0; i < v->count; i++) {
    json_clear(&v->items[i]);
    if (v->type == JSON_OBJECT)
      free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
  free(v->string);
}

int json_parse(const char *text, size_t len, struct json **v_r) {
  struct parser ps = {(const unsigned char *)text, (const unsigned char *)text + len, 0};
  struct json *v = calloc(1, sizeof *v);
  if (v == NULL)
    return -ENOMEM;
  int err = parse_value(&ps, v);
  if (err == 0) {
    skip_ws(&ps);
    if (ps.p != ps.end)
      err = -EINVAL; /* trailing garbage */
  }
  if (err) {
    json_free(v);
    return err;
  }
  *v_r = v;
  return 0;
}

void json_free(struct json *v) {
  if (v == NULL)
    return;
  json_clear(v);
  free(v);
}

const struct json *json_get(const struct json *v, const char *key) {
  if (v == NULL || v->type != JSON_OBJECT)
    return NULL;
  /* The first of duplicate keys wins (RFC 8259 leaves it open). */
  for (size_t i = 0; i < v->count; i++)
    if (strcmp(v->keys[i], key) == 0)
      return &v->items[i];
  return NULL;
}

const char *json_get_str(const struct json *v, const char *key) {
  const struct json *m = json_get(v, key);
  return m != NULL && m->type == JSON_STRING ? m->string : NULL;
}

double json_get_num(const struct json *v, const char *key, double dflt) {
  const struct json *m = json_get(v, key);
  return m != NULL && m->type == JSON_NUMBER ? m->number : dflt;
}

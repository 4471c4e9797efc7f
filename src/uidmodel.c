/* The UID journal's pure model (see uidmodel.h): record codec, index,
 * replay rules and compaction, with no I/O. */
#include "config.h"

#include "uidmodel.h"

#include "hashtab.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEADER UIDMODEL_HEADER
/* Caps.  A line (with its newline) never exceeds LINE_CAP: the field caps
 * below add up to well under it, so a formatted line always fits. */
#define LINE_CAP UIDMODEL_LINE_CAP
#define SERVER_CAP 600
#define UID_CAP UIDMODEL_UID_MAX
#define NAME_CAP 255
#define ERROR_CAP 300
/* " *" and eight hex digits after the body of every record line. */
#define CRC_TAIL 10

/* One "D" state: what a D line said. */
struct dstate {
  char *name;
  uint64_t size;
  time_t when;
  uint64_t epoch; /* barriers seen before it: pending while == m->epoch */
  bool has_digest;
  uint8_t digest[UIDMODEL_DIGEST_LEN];
};

/* Servers are interned: many records share one, and the lock-step flag
 * lives here.  Each holds its records, by UID. */
struct server {
  struct hashtab recs; /* uid -> struct rec (owned) */
  bool lockstep;
  time_t lock_when;
  size_t len;
  char name[];
};

struct rec {
  struct server *srv;
  struct uidstate_rec pub; /* the caller's view, kept in sync by rec_sync */
  bool has_d;
  bool drop;   /* compaction in progress: keep() said no */
  bool doomed; /* a pending D whose file is gone */
  struct dstate d;
  /* The durable D that the pending d overrode (a UID that came back with
   * other content), restored if d turns out not to have been delivered.
   * Meaningful only while d is pending; freed lazily otherwise. */
  struct dstate *prev;
  char *error; /* NULL when none */
  time_t a_when;
  struct rec *dead; /* uidmodel_commit_marks: the next record to remove */
  size_t uid_len;
  char uid[];
};

struct uidmodel {
  size_t corrupt;
  uint64_t epoch;      /* B records seen or appended */
  uint64_t lines;      /* lines parsed: only the first must be the header */
  struct hashtab srvs; /* name -> struct server (owned) */
};

/* ---- small helpers */

/* CRC-32 (IEEE 802.3, reflected, as zlib's crc32()). */
static const uint32_t crc_table[256] = {
    0x00000000U, 0x77073096U, 0xee0e612cU, 0x990951baU, 0x076dc419U, 0x706af48fU, 0xe963a535U,
    0x9e6495a3U, 0x0edb8832U, 0x79dcb8a4U, 0xe0d5e91eU, 0x97d2d988U, 0x09b64c2bU, 0x7eb17cbdU,
    0xe7b82d07U, 0x90bf1d91U, 0x1db71064U, 0x6ab020f2U, 0xf3b97148U, 0x84be41deU, 0x1adad47dU,
    0x6ddde4ebU, 0xf4d4b551U, 0x83d385c7U, 0x136c9856U, 0x646ba8c0U, 0xfd62f97aU, 0x8a65c9ecU,
    0x14015c4fU, 0x63066cd9U, 0xfa0f3d63U, 0x8d080df5U, 0x3b6e20c8U, 0x4c69105eU, 0xd56041e4U,
    0xa2677172U, 0x3c03e4d1U, 0x4b04d447U, 0xd20d85fdU, 0xa50ab56bU, 0x35b5a8faU, 0x42b2986cU,
    0xdbbbc9d6U, 0xacbcf940U, 0x32d86ce3U, 0x45df5c75U, 0xdcd60dcfU, 0xabd13d59U, 0x26d930acU,
    0x51de003aU, 0xc8d75180U, 0xbfd06116U, 0x21b4f4b5U, 0x56b3c423U, 0xcfba9599U, 0xb8bda50fU,
    0x2802b89eU, 0x5f058808U, 0xc60cd9b2U, 0xb10be924U, 0x2f6f7c87U, 0x58684c11U, 0xc1611dabU,
    0xb6662d3dU, 0x76dc4190U, 0x01db7106U, 0x98d220bcU, 0xefd5102aU, 0x71b18589U, 0x06b6b51fU,
    0x9fbfe4a5U, 0xe8b8d433U, 0x7807c9a2U, 0x0f00f934U, 0x9609a88eU, 0xe10e9818U, 0x7f6a0dbbU,
    0x086d3d2dU, 0x91646c97U, 0xe6635c01U, 0x6b6b51f4U, 0x1c6c6162U, 0x856530d8U, 0xf262004eU,
    0x6c0695edU, 0x1b01a57bU, 0x8208f4c1U, 0xf50fc457U, 0x65b0d9c6U, 0x12b7e950U, 0x8bbeb8eaU,
    0xfcb9887cU, 0x62dd1ddfU, 0x15da2d49U, 0x8cd37cf3U, 0xfbd44c65U, 0x4db26158U, 0x3ab551ceU,
    0xa3bc0074U, 0xd4bb30e2U, 0x4adfa541U, 0x3dd895d7U, 0xa4d1c46dU, 0xd3d6f4fbU, 0x4369e96aU,
    0x346ed9fcU, 0xad678846U, 0xda60b8d0U, 0x44042d73U, 0x33031de5U, 0xaa0a4c5fU, 0xdd0d7cc9U,
    0x5005713cU, 0x270241aaU, 0xbe0b1010U, 0xc90c2086U, 0x5768b525U, 0x206f85b3U, 0xb966d409U,
    0xce61e49fU, 0x5edef90eU, 0x29d9c998U, 0xb0d09822U, 0xc7d7a8b4U, 0x59b33d17U, 0x2eb40d81U,
    0xb7bd5c3bU, 0xc0ba6cadU, 0xedb88320U, 0x9abfb3b6U, 0x03b6e20cU, 0x74b1d29aU, 0xead54739U,
    0x9dd277afU, 0x04db2615U, 0x73dc1683U, 0xe3630b12U, 0x94643b84U, 0x0d6d6a3eU, 0x7a6a5aa8U,
    0xe40ecf0bU, 0x9309ff9dU, 0x0a00ae27U, 0x7d079eb1U, 0xf00f9344U, 0x8708a3d2U, 0x1e01f268U,
    0x6906c2feU, 0xf762575dU, 0x806567cbU, 0x196c3671U, 0x6e6b06e7U, 0xfed41b76U, 0x89d32be0U,
    0x10da7a5aU, 0x67dd4accU, 0xf9b9df6fU, 0x8ebeeff9U, 0x17b7be43U, 0x60b08ed5U, 0xd6d6a3e8U,
    0xa1d1937eU, 0x38d8c2c4U, 0x4fdff252U, 0xd1bb67f1U, 0xa6bc5767U, 0x3fb506ddU, 0x48b2364bU,
    0xd80d2bdaU, 0xaf0a1b4cU, 0x36034af6U, 0x41047a60U, 0xdf60efc3U, 0xa867df55U, 0x316e8eefU,
    0x4669be79U, 0xcb61b38cU, 0xbc66831aU, 0x256fd2a0U, 0x5268e236U, 0xcc0c7795U, 0xbb0b4703U,
    0x220216b9U, 0x5505262fU, 0xc5ba3bbeU, 0xb2bd0b28U, 0x2bb45a92U, 0x5cb36a04U, 0xc2d7ffa7U,
    0xb5d0cf31U, 0x2cd99e8bU, 0x5bdeae1dU, 0x9b64c2b0U, 0xec63f226U, 0x756aa39cU, 0x026d930aU,
    0x9c0906a9U, 0xeb0e363fU, 0x72076785U, 0x05005713U, 0x95bf4a82U, 0xe2b87a14U, 0x7bb12baeU,
    0x0cb61b38U, 0x92d28e9bU, 0xe5d5be0dU, 0x7cdcefb7U, 0x0bdbdf21U, 0x86d3d2d4U, 0xf1d4e242U,
    0x68ddb3f8U, 0x1fda836eU, 0x81be16cdU, 0xf6b9265bU, 0x6fb077e1U, 0x18b74777U, 0x88085ae6U,
    0xff0f6a70U, 0x66063bcaU, 0x11010b5cU, 0x8f659effU, 0xf862ae69U, 0x616bffd3U, 0x166ccf45U,
    0xa00ae278U, 0xd70dd2eeU, 0x4e048354U, 0x3903b3c2U, 0xa7672661U, 0xd06016f7U, 0x4969474dU,
    0x3e6e77dbU, 0xaed16a4aU, 0xd9d65adcU, 0x40df0b66U, 0x37d83bf0U, 0xa9bcae53U, 0xdebb9ec5U,
    0x47b2cf7fU, 0x30b5ffe9U, 0xbdbdf21cU, 0xcabac28aU, 0x53b39330U, 0x24b4a3a6U, 0xbad03605U,
    0xcdd70693U, 0x54de5729U, 0x23d967bfU, 0xb3667a2eU, 0xc4614ab8U, 0x5d681b02U, 0x2a6f2b94U,
    0xb40bbe37U, 0xc30c8ea1U, 0x5a05df1bU, 0x2d02ef8dU,
};

static uint32_t crc32_of(const char *buf, size_t len) {
  uint32_t c = 0xffffffffU;
  size_t i;

  for (i = 0; i < len; i++)
    c = crc_table[(c ^ (unsigned char)buf[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffU;
}

static char *dup_mem(const char *s, size_t len) {
  char *p = malloc(len + 1);

  if (p != NULL) {
    memcpy(p, s, len);
    p[len] = '\0';
  }
  return p;
}

/* Bytes that may appear in a server or a file name: anything but space,
 * control characters and DEL (UTF-8 user names pass). */
static bool word_ok(const char *s, size_t len, size_t cap) {
  size_t i;

  if (len == 0 || len > cap)
    return false;
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= 0x20 || c == 0x7f)
      return false;
  }
  return true;
}

static bool server_ok(const char *s, size_t len) {
  return word_ok(s, len, SERVER_CAP);
}

/* RFC 1939: a UID is 1 to 70 characters 0x21 to 0x7E; servers exceed the
 * length, so up to UID_CAP are accepted. */
static bool uid_ok(const char *s, size_t len) {
  size_t i;

  if (len == 0 || len > UID_CAP)
    return false;
  for (i = 0; i < len; i++)
    if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
      return false;
  return true;
}

/* A base name in new/: no '/', and no ':' since the Maildir check matches
 * the directory entry up to its first ':' (the info part). */
static bool name_ok(const char *s, size_t len) {
  if (!word_ok(s, len, NAME_CAP) || memchr(s, '/', len) != NULL || memchr(s, ':', len) != NULL)
    return false;
  return !(len == 1 && s[0] == '.') && !(len == 2 && s[0] == '.' && s[1] == '.');
}

/* What uidmodel_sanitize_error leaves: short, no control characters. */
static bool error_ok(const char *s, size_t len) {
  size_t i;

  if (len > ERROR_CAP)
    return false;
  for (i = 0; i < len; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
      return false;
  return true;
}

size_t uidmodel_sanitize_error(const char *s, size_t len, char *out) {
  size_t n = len, i;

  if (n > ERROR_CAP) {
    n = ERROR_CAP;
    /* s[n] is the first byte cut off: if it continues a UTF-8 sequence,
     * look back (at most 3 bytes) for the sequence's lead byte and cut
     * before it; if there is none this is not UTF-8: cut at the cap. */
    if (((unsigned char)s[n] & 0xc0) == 0x80) {
      size_t j = n;
      while (j > 0 && n - j < 3 && ((unsigned char)s[j - 1] & 0xc0) == 0x80)
        j--;
      if (j > 0 && ((unsigned char)s[j - 1] & 0xc0) == 0xc0)
        n = j - 1;
    }
  }
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    out[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
  }
  out[n] = '\0';
  return n;
}

/* Decimal digits only, at most UINT64_MAX. */
static bool parse_u64(const char *s, size_t len, uint64_t *v_r) {
  uint64_t v = 0;
  size_t i;

  if (len == 0 || len > 20)
    return false;
  for (i = 0; i < len; i++) {
    unsigned d;
    if (s[i] < '0' || s[i] > '9')
      return false;
    d = (unsigned)(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10)
      return false;
    v = v * 10 + d;
  }
  *v_r = v;
  return true;
}

/* An optional '-', then digits; must fit time_t. */
static bool parse_time(const char *s, size_t len, time_t *t_r) {
  bool neg = len > 0 && s[0] == '-';
  uint64_t v;
  long long ll;

  if (!parse_u64(s + neg, len - neg, &v) || v > (uint64_t)LLONG_MAX)
    return false;
  ll = neg ? -(long long)v : (long long)v;
  if ((long long)(time_t)ll != ll)
    return false;
  *t_r = (time_t)ll;
  return true;
}

/* Takes " FIELD" at *p (a single space, then a non-empty run of non-space
 * bytes); *p is left at the next space or at end. */
static bool take(const char **p, const char *end, const char **f_r, size_t *len_r) {
  const char *s;

  if (*p >= end || **p != ' ')
    return false;
  s = ++*p;
  while (*p < end && **p != ' ')
    (*p)++;
  *f_r = s;
  *len_r = (size_t)(*p - s);
  return *len_r > 0;
}

static bool hex_lower(const char *s, size_t len, uint32_t *v_r) {
  uint32_t v = 0;
  size_t i;

  for (i = 0; i < len; i++) {
    char c = s[i];
    unsigned d;
    if (c >= '0' && c <= '9')
      d = (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
      d = (unsigned)(c - 'a' + 10);
    else
      return false;
    v = v << 4 | d;
  }
  *v_r = v;
  return true;
}

/* 2 * UIDMODEL_DIGEST_LEN lowercase hex digits into out. */
static bool parse_digest(const char *s, size_t len, uint8_t *out) {
  size_t i;

  if (len != 2 * UIDMODEL_DIGEST_LEN)
    return false;
  for (i = 0; i < UIDMODEL_DIGEST_LEN; i++) {
    uint32_t v;
    if (!hex_lower(s + 2 * i, 2, &v))
      return false;
    out[i] = (uint8_t)v;
  }
  return true;
}

/* ---- codec */

/* " SERVER UID" as every record but B and L starts. */
static bool take_key(const char **p, const char *end, struct uidmodel_line *l) {
  return take(p, end, &l->server, &l->server_len) && server_ok(l->server, l->server_len) &&
         take(p, end, &l->uid, &l->uid_len) && uid_ok(l->uid, l->uid_len);
}

int uidmodel_parse_line(const char *line, size_t len, struct uidmodel_line *l) {
  const char *p, *end, *f;
  size_t flen;
  uint64_t attempts;
  uint32_t crc;

  memset(l, 0, sizeof(*l));
  if (len + 1 > LINE_CAP || len < 1 + CRC_TAIL)
    return 1;
  end = line + len - CRC_TAIL;
  if (end[0] != ' ' || end[1] != '*' || !hex_lower(end + 2, 8, &crc) ||
      crc32_of(line, (size_t)(end - line)) != crc)
    return 1;
  p = line + 1;
  l->type = line[0];
  switch (line[0]) {
  case 'D':
    if (!take_key(&p, end, l) || !take(&p, end, &f, &flen) || !parse_u64(f, flen, &l->size) ||
        !take(&p, end, &l->name, &l->name_len) || !name_ok(l->name, l->name_len) ||
        !take(&p, end, &f, &flen) || !parse_time(f, flen, &l->when))
      return 1;
    /* The header digest is optional: lines written before it existed have
     * none. */
    l->has_digest = p != end;
    if (l->has_digest &&
        (!take(&p, end, &f, &flen) || !parse_digest(f, flen, l->digest) || p != end))
      return 1;
    return 0;
  case 'A':
    if (!take_key(&p, end, l) || !take(&p, end, &f, &flen) || !parse_u64(f, flen, &l->size) ||
        !take(&p, end, &f, &flen) || !parse_u64(f, flen, &attempts) || attempts == 0 ||
        attempts > UINT_MAX || !take(&p, end, &f, &flen) || !parse_time(f, flen, &l->when))
      return 1;
    l->attempts = (unsigned)attempts;
    /* The rest, after one space, is the error text (it may hold spaces). */
    if (p < end)
      p++;
    l->error = p;
    l->error_len = (size_t)(end - p);
    return 0;
  case 'F':
  case 'R':
    if (!take_key(&p, end, l) || !take(&p, end, &f, &flen) || !parse_time(f, flen, &l->when) ||
        p != end)
      return 1;
    return 0;
  case 'L':
    if (!take(&p, end, &l->server, &l->server_len) || !server_ok(l->server, l->server_len) ||
        !take(&p, end, &f, &flen))
      return 1;
    if (flen == 2 && memcmp(f, "on", 2) == 0)
      l->on = 1;
    else if (!(flen == 3 && memcmp(f, "off", 3) == 0))
      return 1;
    if (!take(&p, end, &f, &flen) || !parse_time(f, flen, &l->when) || p != end)
      return 1;
    return 0;
  case 'B':
    if (!take(&p, end, &f, &flen) || !parse_time(f, flen, &l->when) || p != end)
      return 1;
    return 0;
  default:
    return 1;
  }
}

/* Adds " *CRC\n" after the body (body bytes in out, or a negative error). */
static int finish_line(char *out, int body) {
  uint32_t crc;

  if (body < 0 || (size_t)body + CRC_TAIL + 1 >= LINE_CAP)
    return -EINVAL;
  crc = crc32_of(out, (size_t)body);
  snprintf(out + body, LINE_CAP - (size_t)body, " *%08x\n", (unsigned)crc);
  return body + CRC_TAIL + 1;
}

int uidmodel_format_line(const struct uidmodel_line *l, char *out) {
  char hex[2 * UIDMODEL_DIGEST_LEN + 2] = "";
  const char *s = l->server, *u = l->uid;
  int sl = (int)l->server_len, ul = (int)l->uid_len;

  if (l->type != 'B' && !server_ok(s, l->server_len))
    return -EINVAL;
  if ((l->type == 'D' || l->type == 'A' || l->type == 'F' || l->type == 'R') &&
      !uid_ok(u, l->uid_len))
    return -EINVAL;
  switch (l->type) {
  case 'D':
    if (!name_ok(l->name, l->name_len))
      return -EINVAL;
    if (l->has_digest) {
      static const char digits[] = "0123456789abcdef";
      hex[0] = ' ';
      for (size_t i = 0; i < UIDMODEL_DIGEST_LEN; i++) {
        hex[1 + 2 * i] = digits[l->digest[i] >> 4];
        hex[2 + 2 * i] = digits[l->digest[i] & 15];
      }
      hex[1 + 2 * UIDMODEL_DIGEST_LEN] = '\0';
    }
    return finish_line(out, snprintf(out, LINE_CAP, "D %.*s %.*s %llu %.*s %lld%s", sl, s, ul, u,
                                     (unsigned long long)l->size, (int)l->name_len, l->name,
                                     (long long)l->when, hex));
  case 'A':
    if (l->attempts == 0 || !error_ok(l->error, l->error_len))
      return -EINVAL;
    return finish_line(out, snprintf(out, LINE_CAP, "A %.*s %.*s %llu %u %lld%s%.*s", sl, s, ul, u,
                                     (unsigned long long)l->size, l->attempts, (long long)l->when,
                                     l->error_len > 0 ? " " : "", (int)l->error_len,
                                     l->error_len > 0 ? l->error : ""));
  case 'L':
    return finish_line(out, snprintf(out, LINE_CAP, "L %.*s %s %lld", sl, s, l->on ? "on" : "off",
                                     (long long)l->when));
  case 'F':
  case 'R':
    return finish_line(out, snprintf(out, LINE_CAP, "%c %.*s %.*s %lld", l->type, sl, s, ul, u,
                                     (long long)l->when));
  case 'B':
    return finish_line(out, snprintf(out, LINE_CAP, "B %lld", (long long)l->when));
  default:
    return -EINVAL;
  }
}

/* The line of a D state. */
static void d_line(struct uidmodel_line *l, const char *server, size_t slen, const char *uid,
                   size_t ulen, uint64_t size, const char *name, time_t when,
                   const uint8_t *digest) {
  memset(l, 0, sizeof(*l));
  l->type = 'D';
  l->server = server;
  l->server_len = slen;
  l->uid = uid;
  l->uid_len = ulen;
  l->size = size;
  l->name = name;
  l->name_len = name != NULL ? strlen(name) : 0;
  l->when = when;
  l->has_digest = digest != NULL;
  if (digest != NULL)
    memcpy(l->digest, digest, UIDMODEL_DIGEST_LEN);
}

/* ---- the index: servers by name, each with its records by UID */

static struct server *server_find(const struct uidmodel *m, const char *name, size_t len) {
  return hashtab_get(&m->srvs, name, len);
}

/* The interned server, created when missing; NULL only when out of memory. */
static struct server *server_get(struct uidmodel *m, const char *name, size_t len) {
  struct server *s = server_find(m, name, len);

  if (s != NULL)
    return s;
  if ((s = calloc(1, sizeof(*s) + len + 1)) == NULL)
    return NULL;
  hashtab_init(&s->recs);
  s->len = len;
  memcpy(s->name, name, len);
  s->name[len] = '\0';
  if (hashtab_put(&m->srvs, s->name, len, s) < 0) {
    free(s);
    return NULL;
  }
  return s;
}

static struct rec *rec_find(const struct server *srv, const char *uid, size_t len) {
  return hashtab_get(&srv->recs, uid, len);
}

/* Records of every server, in no order: start with {0, 0, NULL}.  The
 * tables must not change during the walk. */
struct walk {
  size_t spos, rpos;
  struct server *srv;
};

static struct rec *walk_next(const struct uidmodel *m, struct walk *w) {
  for (;;) {
    struct rec *r;
    if (w->srv != NULL && (r = hashtab_next(&w->srv->recs, &w->rpos, NULL)) != NULL)
      return r;
    if ((w->srv = hashtab_next(&m->srvs, &w->spos, NULL)) == NULL)
      return NULL;
    w->rpos = 0;
  }
}

/* Points the public view at the current state. */
static void rec_sync(struct rec *r) {
  r->pub.server = r->srv->name;
  r->pub.uid = r->uid;
  r->pub.name = r->has_d ? r->d.name : "";
  /* 0 means "not delivered" to callers, so a D stamped 0 (or before 1970)
   * still reads as delivered. */
  r->pub.delivered = r->has_d ? (r->d.when > 0 ? r->d.when : 1) : 0;
  r->pub.delivered_size = r->has_d ? r->d.size : 0;
  r->pub.digest = r->has_d && r->d.has_digest ? r->d.digest : NULL;
  r->pub.last_error = r->error != NULL ? r->error : "";
}

/* A new, empty record (no D, no attempts) in srv's table; the caller
 * fills it at once.  NULL when out of memory. */
static struct rec *rec_new(struct server *srv, const char *uid, size_t len) {
  struct rec *r;

  if ((r = calloc(1, sizeof(*r) + len + 1)) == NULL)
    return NULL;
  r->srv = srv;
  r->uid_len = len;
  memcpy(r->uid, uid, len);
  r->uid[len] = '\0';
  rec_sync(r);
  if (hashtab_put(&srv->recs, r->uid, len, r) < 0) {
    free(r);
    return NULL;
  }
  return r;
}

static void prev_free(struct rec *r) {
  if (r->prev != NULL) {
    free(r->prev->name);
    free(r->prev);
    r->prev = NULL;
  }
}

static void rec_free(struct rec *r) {
  free(r->d.name);
  prev_free(r);
  free(r->error);
  free(r);
}

static void rec_remove(struct rec *r) {
  hashtab_remove(&r->srv->recs, r->uid, r->uid_len);
  rec_free(r);
}

static bool rec_pending(const struct uidmodel *m, const struct rec *r) {
  return r->has_d && r->d.epoch == m->epoch;
}

struct uidmodel *uidmodel_new(void) {
  struct uidmodel *m = calloc(1, sizeof(*m));

  if (m != NULL)
    hashtab_init(&m->srvs);
  return m;
}

void uidmodel_free(struct uidmodel *m) {
  struct server *s;
  size_t spos = 0;

  if (m == NULL)
    return;
  while ((s = hashtab_next(&m->srvs, &spos, NULL)) != NULL) {
    struct rec *r;
    size_t rpos = 0;
    while ((r = hashtab_next(&s->recs, &rpos, NULL)) != NULL)
      rec_free(r);
    hashtab_deinit(&s->recs);
    free(s);
  }
  hashtab_deinit(&m->srvs);
  free(m);
}

/* ---- replay rules; each either applies entirely or returns -ENOMEM
 * having changed nothing visible (an interned server may stay behind). */

static int apply_d(struct uidmodel *m, const struct uidmodel_line *l) {
  struct server *srv;
  struct rec *r;
  struct dstate *save = NULL;
  char *n;

  if ((srv = server_get(m, l->server, l->server_len)) == NULL ||
      (n = dup_mem(l->name, l->name_len)) == NULL)
    return -ENOMEM;
  r = rec_find(srv, l->uid, l->uid_len);
  if (r != NULL && r->has_d && r->d.epoch < m->epoch) {
    /* A durable D is being overridden by a pending one: keep it, since it
     * is what counts if the new delivery turns out not to have happened. */
    if ((save = malloc(sizeof(*save))) == NULL) {
      free(n);
      return -ENOMEM;
    }
  }
  if (r == NULL && (r = rec_new(srv, l->uid, l->uid_len)) == NULL) {
    free(n);
    return -ENOMEM;
  }
  if (save != NULL) {
    prev_free(r);
    *save = r->d;
    r->prev = save;
  } else if (!r->has_d) {
    prev_free(r);
  } else {
    /* Pending over pending: prev (if any) is still the durable one. */
    free(r->d.name);
  }
  r->d.name = n;
  r->d.size = l->size;
  r->d.when = l->when;
  r->d.epoch = m->epoch;
  r->d.has_digest = l->has_digest;
  if (l->has_digest)
    memcpy(r->d.digest, l->digest, UIDMODEL_DIGEST_LEN);
  else
    memset(r->d.digest, 0, UIDMODEL_DIGEST_LEN);
  r->has_d = true;
  r->pub.size = l->size;
  r->pub.attempts = 0;
  free(r->error);
  r->error = NULL;
  rec_sync(r);
  return 0;
}

/* The error is sanitized here. */
static int apply_a(struct uidmodel *m, const struct uidmodel_line *l) {
  char clean[ERROR_CAP + 1];
  struct server *srv;
  struct rec *r;
  char *e = NULL;
  size_t clen = uidmodel_sanitize_error(l->error != NULL ? l->error : "", l->error_len, clean);

  if ((srv = server_get(m, l->server, l->server_len)) == NULL)
    return -ENOMEM;
  if (clen > 0 && (e = dup_mem(clean, clen)) == NULL)
    return -ENOMEM;
  r = rec_find(srv, l->uid, l->uid_len);
  if (r == NULL && (r = rec_new(srv, l->uid, l->uid_len)) == NULL) {
    free(e);
    return -ENOMEM;
  }
  r->pub.size = l->size;
  r->pub.attempts = l->attempts;
  r->a_when = l->when;
  free(r->error);
  r->error = e;
  rec_sync(r);
  return 0;
}

/* R: the record's deletion was committed on the server (or the UID turned
 * out not to identify one message): the record goes entirely, attempts and
 * all, so that a later message with the same UID is new. */
static int apply_r(struct uidmodel *m, const char *server, size_t slen, const char *uid,
                   size_t ulen) {
  struct server *srv = server_find(m, server, slen);
  struct rec *r = srv != NULL ? hashtab_remove(&srv->recs, uid, ulen) : NULL;

  if (r != NULL)
    rec_free(r);
  return 0;
}

/* F: the last D for this UID cannot be trusted (its session desynchronised,
 * so the file may hold another message).  A pending D that overrode a
 * durable one falls back to it; otherwise the UID counts as not delivered.
 * The delivered file stays in the Maildir: when in doubt, deliver again. */
static int apply_f(struct uidmodel *m, const char *server, size_t slen, const char *uid,
                   size_t ulen) {
  struct server *srv = server_find(m, server, slen);
  struct rec *r = srv ? rec_find(srv, uid, ulen) : NULL;

  if (r == NULL || !r->has_d)
    return 0;
  free(r->d.name);
  if (rec_pending(m, r) && r->prev != NULL) {
    r->d = *r->prev;
    free(r->prev);
    r->prev = NULL;
    r->pub.size = r->d.size;
  } else {
    memset(&r->d, 0, sizeof(r->d));
    r->has_d = false;
    prev_free(r);
    /* Nothing left to say about this UID. */
    if (r->pub.attempts == 0)
      return apply_r(m, server, slen, uid, ulen);
  }
  rec_sync(r);
  return 0;
}

static int apply_l(struct uidmodel *m, const char *server, size_t slen, bool on, time_t when) {
  struct server *srv = server_get(m, server, slen);

  if (srv == NULL)
    return -ENOMEM;
  srv->lockstep = on;
  srv->lock_when = when;
  return 0;
}

int uidmodel_apply(struct uidmodel *m, const struct uidmodel_line *l) {
  switch (l->type) {
  case 'D':
    return apply_d(m, l);
  case 'A':
    return apply_a(m, l);
  case 'F':
    return apply_f(m, l->server, l->server_len, l->uid, l->uid_len);
  case 'R':
    return apply_r(m, l->server, l->server_len, l->uid, l->uid_len);
  case 'L':
    return apply_l(m, l->server, l->server_len, l->on != 0, l->when);
  case 'B':
    m->epoch++;
    return 0;
  default:
    return -EINVAL;
  }
}

/* One line without its newline.  Returns 0 when applied, 1 when corrupt,
 * -ENOMEM. */
static int parse_line(struct uidmodel *m, const char *line, size_t len) {
  struct uidmodel_line l;

  if (uidmodel_parse_line(line, len, &l) != 0)
    return 1;
  return uidmodel_apply(m, &l);
}

int uidmodel_parse(struct uidmodel *m, const char *buf, size_t len) {
  const char *p = buf, *end = buf + len;

  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t llen;
    int r;

    if (nl == NULL) {
      /* A torn write: the line never got its newline. */
      m->corrupt++;
      break;
    }
    llen = (size_t)(nl - p);
    if (m->lines++ == 0) {
      if (llen == sizeof(HEADER) - 1 && memcmp(p, HEADER, llen) == 0) {
        p = nl + 1;
        continue;
      }
      /* No header: counted, but the line is still read as a record, since
       * a valid D line dropped here would mean delivering twice. */
      m->corrupt++;
      r = parse_line(m, p, llen);
      if (r < 0)
        return r;
    } else {
      r = parse_line(m, p, llen);
      if (r < 0)
        return r;
      m->corrupt += (size_t)r;
    }
    p = nl + 1;
  }
  return 0;
}

/* ---- queries */

size_t uidmodel_corrupt_lines(const struct uidmodel *m) {
  return m->corrupt;
}

const struct uidstate_rec *uidmodel_find(const struct uidmodel *m, const char *server,
                                         const char *uid) {
  const struct server *srv;
  const struct rec *r;

  if (server == NULL || uid == NULL || (srv = server_find(m, server, strlen(server))) == NULL)
    return NULL;
  r = rec_find(srv, uid, strlen(uid));
  return r != NULL ? &r->pub : NULL;
}

int uidmodel_lockstep(const struct uidmodel *m, const char *server) {
  const struct server *srv = server != NULL ? server_find(m, server, strlen(server)) : NULL;

  return srv != NULL && srv->lockstep;
}

void uidmodel_foreach(const struct uidmodel *m, int (*cb)(void *data, const struct uidstate_rec *r),
                      void *data) {
  struct walk w = {0, 0, NULL};
  const struct rec *r;

  while ((r = walk_next(m, &w)) != NULL)
    if (cb(data, &r->pub) != 0)
      return;
}

/* ---- appends */

static void clear_out(char **line_r, size_t *len_r) {
  *line_r = NULL;
  *len_r = 0;
}

/* Formats l, hands out a copy, applies l; all or nothing. */
static int append(struct uidmodel *m, const struct uidmodel_line *l, char **line_r, size_t *len_r) {
  char line[LINE_CAP];
  int n, err;

  clear_out(line_r, len_r);
  if ((n = uidmodel_format_line(l, line)) < 0)
    return n;
  if ((*line_r = dup_mem(line, (size_t)n)) == NULL)
    return -ENOMEM;
  *len_r = (size_t)n;
  if ((err = uidmodel_apply(m, l)) < 0) {
    free(*line_r);
    clear_out(line_r, len_r);
  }
  return err;
}

/* The key fields of l from NUL-terminated strings; false when absent. */
static bool key_line(struct uidmodel_line *l, char type, const char *server, const char *uid,
                     time_t when) {
  memset(l, 0, sizeof(*l));
  l->type = type;
  l->when = when;
  if (server == NULL || (type != 'L' && uid == NULL))
    return false;
  l->server = server;
  l->server_len = strlen(server);
  if (uid != NULL) {
    l->uid = uid;
    l->uid_len = strlen(uid);
  }
  return true;
}

int uidmodel_append_delivered(struct uidmodel *m, const char *server, const char *uid,
                              uint64_t size, const char *name, time_t when, const uint8_t *digest,
                              char **line_r, size_t *len_r) {
  struct uidmodel_line l;

  clear_out(line_r, len_r);
  if (server == NULL || uid == NULL || name == NULL)
    return -EINVAL;
  d_line(&l, server, strlen(server), uid, strlen(uid), size, name, when, digest);
  return append(m, &l, line_r, len_r);
}

int uidmodel_append_attempt(struct uidmodel *m, const char *server, const char *uid, uint64_t size,
                            const char *error, time_t when, char **line_r, size_t *len_r) {
  char clean[ERROR_CAP + 1];
  const struct uidstate_rec *old;
  struct uidmodel_line l;

  clear_out(line_r, len_r);
  if (!key_line(&l, 'A', server, uid, when) || !server_ok(l.server, l.server_len) ||
      !uid_ok(l.uid, l.uid_len))
    return -EINVAL;
  if (error == NULL)
    error = "";
  l.error = clean;
  l.error_len = uidmodel_sanitize_error(error, strlen(error), clean);
  l.size = size;
  /* The line carries the new total, so that reading never has to add up
   * (and a lost or corrupt A line costs one count, not all). */
  old = uidmodel_find(m, server, uid);
  l.attempts = old == NULL ? 1 : old->attempts < UINT_MAX ? old->attempts + 1 : UINT_MAX;
  return append(m, &l, line_r, len_r);
}

int uidmodel_append_lockstep(struct uidmodel *m, const char *server, int on, time_t when,
                             char **line_r, size_t *len_r) {
  struct uidmodel_line l;

  if (!key_line(&l, 'L', server, NULL, when)) {
    clear_out(line_r, len_r);
    return -EINVAL;
  }
  l.on = on != 0;
  return append(m, &l, line_r, len_r);
}

int uidmodel_append_barrier(struct uidmodel *m, time_t when, char **line_r, size_t *len_r) {
  struct uidmodel_line l;

  memset(&l, 0, sizeof(l));
  l.type = 'B';
  l.when = when;
  return append(m, &l, line_r, len_r);
}

int uidmodel_append_forget(struct uidmodel *m, const char *server, const char *uid, time_t when,
                           char **line_r, size_t *len_r) {
  struct uidmodel_line l;

  if (!key_line(&l, 'F', server, uid, when)) {
    clear_out(line_r, len_r);
    return -EINVAL;
  }
  return append(m, &l, line_r, len_r);
}

int uidmodel_append_retire(struct uidmodel *m, const char *server, const char *uid, time_t when,
                           char **line_r, size_t *len_r) {
  struct uidmodel_line l;

  if (!key_line(&l, 'R', server, uid, when)) {
    clear_out(line_r, len_r);
    return -EINVAL;
  }
  return append(m, &l, line_r, len_r);
}

int uidmodel_format_delivered(const char *server, const char *uid, uint64_t size, const char *name,
                              time_t when, const uint8_t *digest, char *buf, size_t buflen) {
  char line[LINE_CAP];
  struct uidmodel_line l;
  int n;

  if (server == NULL || uid == NULL || name == NULL)
    return -EINVAL;
  d_line(&l, server, strlen(server), uid, strlen(uid), size, name, when, digest);
  if ((n = uidmodel_format_line(&l, line)) < 0)
    return n;
  if ((size_t)n >= buflen)
    return -ENOSPC;
  memcpy(buf, line, (size_t)n + 1);
  return n;
}

int uidmodel_set_size(struct uidmodel *m, const char *server, const char *uid, uint64_t size) {
  struct server *srv =
      server != NULL && uid != NULL ? server_find(m, server, strlen(server)) : NULL;
  struct rec *r = srv != NULL ? rec_find(srv, uid, strlen(uid)) : NULL;

  if (r == NULL || !r->has_d)
    return -ENOENT;
  r->d.size = size;
  /* An A after the D set the size the failed attempts were about. */
  if (r->pub.attempts == 0)
    r->pub.size = size;
  rec_sync(r);
  return 0;
}

/* ---- compaction */

long uidmodel_foreach_pending(const struct uidmodel *m, int (*cb)(void *arg, const char *name),
                              void *arg) {
  struct walk w = {0, 0, NULL};
  const struct rec *r;
  long n = 0;
  int err;

  while ((r = walk_next(m, &w)) != NULL)
    if (rec_pending(m, r)) {
      if ((err = cb(arg, r->d.name)) != 0)
        return err < 0 ? err : n;
      n++;
    }
  return n;
}

void uidmodel_mark_drop(struct uidmodel *m, int (*keep)(void *data, const struct uidstate_rec *r),
                        void *data) {
  struct walk w = {0, 0, NULL};
  struct rec *r;

  /* Any non-zero keeps: a callback that returns an error code must not
   * make us forget a delivery. */
  while ((r = walk_next(m, &w)) != NULL)
    r->drop = keep(data, &r->pub) == 0;
}

int uidmodel_mark_missing(struct uidmodel *m, int (*present)(void *arg, const char *name),
                          void *arg) {
  struct walk w = {0, 0, NULL};
  struct rec *r;
  int n = 0;

  while ((r = walk_next(m, &w)) != NULL)
    if (rec_pending(m, r) && !present(arg, r->d.name)) {
      r->doomed = true;
      if (n < INT_MAX)
        n++;
    }
  return n;
}

/* The compaction predicate: whether r survives the rewrite at all. */
static bool rec_written(const struct rec *r) {
  return !r->drop && (r->pub.attempts > 0 || (r->has_d && (!r->doomed || r->prev != NULL)));
}

static int emit_line(const struct uidmodel_line *l,
                     int (*emit)(void *arg, const char *line, size_t len), void *arg) {
  char line[LINE_CAP];
  int n = uidmodel_format_line(l, line);

  return n < 0 ? n : emit(arg, line, (size_t)n);
}

static int emit_d(const struct rec *r, const struct dstate *d,
                  int (*emit)(void *arg, const char *line, size_t len), void *arg) {
  struct uidmodel_line l;

  d_line(&l, r->srv->name, r->srv->len, r->uid, r->uid_len, d->size, d->name, d->when,
         d->has_digest ? d->digest : NULL);
  return emit_line(&l, emit, arg);
}

int uidmodel_snapshot(const struct uidmodel *m, time_t now,
                      int (*emit)(void *arg, const char *line, size_t len), void *arg) {
  struct uidmodel_line l;
  struct walk w = {0, 0, NULL};
  const struct server *s;
  const struct rec *r;
  size_t spos = 0;
  int pass, err;

  if ((err = emit(arg, HEADER "\n", sizeof(HEADER))) != 0)
    return err;
  while ((r = walk_next(m, &w)) != NULL) {
    const struct dstate *d = NULL;
    if (!rec_written(r) || !r->has_d)
      continue;
    if (!rec_pending(m, r))
      d = &r->d;
    else if (r->prev != NULL)
      d = r->prev;
    if (d != NULL && (err = emit_d(r, d, emit, arg)) != 0)
      return err;
  }
  while ((s = hashtab_next(&m->srvs, &spos, NULL)) != NULL)
    if (s->lockstep) {
      memset(&l, 0, sizeof(l));
      l.type = 'L';
      l.server = s->name;
      l.server_len = s->len;
      l.on = 1;
      l.when = s->lock_when;
      if ((err = emit_line(&l, emit, arg)) != 0)
        return err;
    }
  memset(&l, 0, sizeof(l));
  l.type = 'B';
  l.when = now;
  if ((err = emit_line(&l, emit, arg)) != 0)
    return err;
  /* The pending D lines, then the A lines (after every D, since a D resets
   * attempts). */
  for (pass = 0; pass < 2; pass++) {
    struct walk w2 = {0, 0, NULL};
    while ((r = walk_next(m, &w2)) != NULL) {
      if (!rec_written(r))
        continue;
      if (pass == 0 && rec_pending(m, r) && !r->doomed && (err = emit_d(r, &r->d, emit, arg)) != 0)
        return err;
      if (pass == 1 && r->pub.attempts > 0) {
        memset(&l, 0, sizeof(l));
        l.type = 'A';
        l.server = r->srv->name;
        l.server_len = r->srv->len;
        l.uid = r->uid;
        l.uid_len = r->uid_len;
        l.size = r->pub.size;
        l.attempts = r->pub.attempts;
        l.when = r->a_when;
        l.error = r->error != NULL ? r->error : "";
        l.error_len = strlen(l.error);
        if ((err = emit_line(&l, emit, arg)) != 0)
          return err;
      }
    }
  }
  return 0;
}

void uidmodel_commit_marks(struct uidmodel *m) {
  struct walk w = {0, 0, NULL};
  struct rec *r, *dead = NULL;

  /* Removal moves entries in the tables: collect first. */
  while ((r = walk_next(m, &w)) != NULL) {
    if (!rec_written(r)) {
      r->dead = dead;
      dead = r;
      continue;
    }
    if (r->doomed) {
      free(r->d.name);
      if (r->prev != NULL) {
        r->d = *r->prev;
        free(r->prev);
        r->prev = NULL;
        /* attempts > 0 means an A came after the D and set the size. */
        if (r->pub.attempts == 0)
          r->pub.size = r->d.size;
      } else {
        r->has_d = false;
        r->d.name = NULL;
      }
      rec_sync(r);
    } else if (!rec_pending(m, r)) {
      prev_free(r); /* no longer needed */
    }
    r->drop = r->doomed = false;
  }
  while ((r = dead) != NULL) {
    dead = r->dead;
    rec_remove(r);
  }
}

void uidmodel_clear_marks(struct uidmodel *m) {
  struct walk w = {0, 0, NULL};
  struct rec *r;

  while ((r = walk_next(m, &w)) != NULL)
    r->drop = r->doomed = false;
}

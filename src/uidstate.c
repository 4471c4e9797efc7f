#include "config.h"

#include "uidstate.h"

#include "errors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define HEADER "pop3sync-state 1"
/* Caps.  A line (with its newline) never exceeds LINE_CAP: the field caps
 * below add up to well under it, so a formatted line always fits. */
#define LINE_CAP 4096
#define SERVER_CAP 600
#define UID_CAP UIDSTATE_UID_MAX
#define NAME_CAP 255
#define ERROR_CAP 300
#define WHO_CAP 100
#define FILE_CAP ((off_t)256 << 20)
/* " *" and eight hex digits after the body of every record line. */
#define CRC_TAIL 10
/* The compaction writer flushes in blocks of this size. */
#define WRITE_BLOCK (64 * 1024)
#define BUCKETS_MIN 64

/* One "D" state: what a D line said. */
struct dstate {
  char *name;
  uint64_t size;
  time_t when;
  uint64_t epoch; /* barriers seen before it: pending while == st->epoch */
  bool has_digest;
  uint8_t digest[UIDSTATE_DIGEST_LEN];
};

/* Servers are interned: many records share one, and the lock-step flag
 * lives here. */
struct server {
  struct server *next;
  uint64_t hash;
  bool lockstep;
  time_t lock_when;
  size_t len;
  char name[];
};

struct rec {
  struct rec *next;
  uint64_t hash;
  struct server *srv;
  struct uidstate_rec pub; /* the caller's view, kept in sync by rec_sync */
  bool has_d;
  bool drop;   /* compaction in progress: keep() said no */
  bool doomed; /* check_files in progress: pending D whose file is gone */
  struct dstate d;
  /* The durable D that the pending d overrode (a UID that came back with
   * other content), restored if d turns out not to have been delivered.
   * Meaningful only while d is pending; freed lazily otherwise. */
  struct dstate *prev;
  char *error; /* NULL when none */
  time_t a_when;
  size_t uid_len;
  char uid[];
};

struct uidstate {
  char *path; /* NULL for a memory state; for messages */
  char *lock_path;
  const char *base;      /* path's last component, into path */
  const char *lock_base; /* into lock_path */
  int dir_fd;            /* the directory holding both: every open is relative */
  int fd;
  int lock_fd;
  bool locked; /* lock_fd holds the flock */
  size_t corrupt;
  uint64_t epoch; /* B records seen or appended */
  uint64_t lines; /* lines parsed: only the first must be the header */
  struct rec **recs;
  size_t recs_nb, recs_n;
  struct server **srvs;
  size_t srvs_nb, srvs_n;
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

static uint64_t fnv1a(const char *s, size_t len, uint64_t h) {
  size_t i;

  for (i = 0; i < len; i++) {
    h ^= (unsigned char)s[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

#define FNV_SEED 0xcbf29ce484222325ULL

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

/* A base name in new/: no '/', and no ':' since check_files matches the
 * directory entry up to its first ':' (the info part). */
static bool name_ok(const char *s, size_t len) {
  if (!word_ok(s, len, NAME_CAP) || memchr(s, '/', len) != NULL || memchr(s, ':', len) != NULL)
    return false;
  return !(len == 1 && s[0] == '.') && !(len == 2 && s[0] == '.' && s[1] == '.');
}

/* Error text as stored and written: control characters (and NUL) become
 * '?', at most ERROR_CAP bytes, cut before a UTF-8 sequence rather than in
 * it.  Idempotent, so that a parsed text formats back to itself.  out has
 * room for ERROR_CAP + 1 bytes; returns the length. */
static size_t sanitize_error(const char *s, size_t len, char *out) {
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

/* ---- line formatting: each returns the line's length (with " *CRC\n") in
 * out (LINE_CAP bytes), or -EINVAL if it would not fit. */

static int finish_line(char *out, int body) {
  uint32_t crc;

  if (body < 0 || (size_t)body + CRC_TAIL + 1 >= LINE_CAP)
    return -EINVAL;
  crc = crc32_of(out, (size_t)body);
  snprintf(out + body, LINE_CAP - (size_t)body, " *%08x\n", (unsigned)crc);
  return body + CRC_TAIL + 1;
}

/* digest: UIDSTATE_DIGEST_LEN bytes, or NULL for a line without one. */
static int fmt_d(char *out, const char *server, const char *uid, uint64_t size, const char *name,
                 time_t when, const uint8_t *digest) {
  char hex[2 * UIDSTATE_DIGEST_LEN + 2] = "";
  if (digest != NULL) {
    static const char digits[] = "0123456789abcdef";
    hex[0] = ' ';
    for (size_t i = 0; i < UIDSTATE_DIGEST_LEN; i++) {
      hex[1 + 2 * i] = digits[digest[i] >> 4];
      hex[2 + 2 * i] = digits[digest[i] & 15];
    }
    hex[1 + 2 * UIDSTATE_DIGEST_LEN] = '\0';
  }
  return finish_line(out, snprintf(out, LINE_CAP, "D %s %s %llu %s %lld%s", server, uid,
                                   (unsigned long long)size, name, (long long)when, hex));
}

static const uint8_t *dstate_digest(const struct dstate *d) {
  return d->has_digest ? d->digest : NULL;
}

/* error is already sanitized. */
static int fmt_a(char *out, const char *server, const char *uid, uint64_t size, unsigned attempts,
                 time_t when, const char *error) {
  return finish_line(out, snprintf(out, LINE_CAP, "A %s %s %llu %u %lld%s%s", server, uid,
                                   (unsigned long long)size, attempts, (long long)when,
                                   error[0] != '\0' ? " " : "", error));
}

static int fmt_l(char *out, const char *server, bool on, time_t when) {
  return finish_line(
      out, snprintf(out, LINE_CAP, "L %s %s %lld", server, on ? "on" : "off", (long long)when));
}

static int fmt_f(char *out, const char *server, const char *uid, time_t when) {
  return finish_line(out, snprintf(out, LINE_CAP, "F %s %s %lld", server, uid, (long long)when));
}

static int fmt_r(char *out, const char *server, const char *uid, time_t when) {
  return finish_line(out, snprintf(out, LINE_CAP, "R %s %s %lld", server, uid, (long long)when));
}

static int fmt_b(char *out, time_t when) {
  return finish_line(out, snprintf(out, LINE_CAP, "B %lld", (long long)when));
}

/* ---- tables (chained; they double when as full as they have buckets, and
 * simply stay longer-chained if that allocation fails) */

static size_t bucket_of(uint64_t hash, size_t nb) {
  return (size_t)(hash ^ (hash >> 29)) & (nb - 1);
}

static void srvs_grow(struct uidstate *st) {
  size_t nb = st->srvs_nb ? st->srvs_nb * 2 : BUCKETS_MIN, i;
  struct server **b;

  if (nb > SIZE_MAX / sizeof(*b) || (b = calloc(nb, sizeof(*b))) == NULL)
    return;
  for (i = 0; i < st->srvs_nb; i++) {
    struct server *s, *next;
    for (s = st->srvs[i]; s != NULL; s = next) {
      size_t k = bucket_of(s->hash, nb);
      next = s->next;
      s->next = b[k];
      b[k] = s;
    }
  }
  free(st->srvs);
  st->srvs = b;
  st->srvs_nb = nb;
}

static void recs_grow(struct uidstate *st) {
  size_t nb = st->recs_nb ? st->recs_nb * 2 : BUCKETS_MIN, i;
  struct rec **b;

  if (nb > SIZE_MAX / sizeof(*b) || (b = calloc(nb, sizeof(*b))) == NULL)
    return;
  for (i = 0; i < st->recs_nb; i++) {
    struct rec *r, *next;
    for (r = st->recs[i]; r != NULL; r = next) {
      size_t k = bucket_of(r->hash, nb);
      next = r->next;
      r->next = b[k];
      b[k] = r;
    }
  }
  free(st->recs);
  st->recs = b;
  st->recs_nb = nb;
}

static struct server *server_find(const struct uidstate *st, const char *name, size_t len) {
  uint64_t h = fnv1a(name, len, FNV_SEED);
  struct server *s;

  if (st->srvs_nb == 0)
    return NULL;
  for (s = st->srvs[bucket_of(h, st->srvs_nb)]; s != NULL; s = s->next)
    if (s->hash == h && s->len == len && memcmp(s->name, name, len) == 0)
      return s;
  return NULL;
}

/* The interned server, created when missing; NULL only when out of memory. */
static struct server *server_get(struct uidstate *st, const char *name, size_t len) {
  struct server *s = server_find(st, name, len);
  size_t k;

  if (s != NULL)
    return s;
  if (st->srvs_n >= st->srvs_nb)
    srvs_grow(st);
  if (st->srvs_nb == 0 || (s = calloc(1, sizeof(*s) + len + 1)) == NULL)
    return NULL;
  s->hash = fnv1a(name, len, FNV_SEED);
  s->len = len;
  memcpy(s->name, name, len);
  s->name[len] = '\0';
  k = bucket_of(s->hash, st->srvs_nb);
  s->next = st->srvs[k];
  st->srvs[k] = s;
  st->srvs_n++;
  return s;
}

static uint64_t rec_hash(const struct server *srv, const char *uid, size_t len) {
  return fnv1a(uid, len, srv->hash ^ 0x9e3779b97f4a7c15ULL);
}

static struct rec *rec_find(const struct uidstate *st, const struct server *srv, const char *uid,
                            size_t len) {
  uint64_t h;
  struct rec *r;

  if (st->recs_nb == 0)
    return NULL;
  h = rec_hash(srv, uid, len);
  for (r = st->recs[bucket_of(h, st->recs_nb)]; r != NULL; r = r->next)
    if (r->hash == h && r->srv == srv && r->uid_len == len && memcmp(r->uid, uid, len) == 0)
      return r;
  return NULL;
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

/* A new, empty record (no D, no attempts) linked into the table; the
 * caller fills it at once.  NULL when out of memory. */
static struct rec *rec_new(struct uidstate *st, struct server *srv, const char *uid, size_t len) {
  struct rec *r;
  size_t k;

  if (st->recs_n >= st->recs_nb)
    recs_grow(st);
  if (st->recs_nb == 0 || (r = calloc(1, sizeof(*r) + len + 1)) == NULL)
    return NULL;
  r->srv = srv;
  r->hash = rec_hash(srv, uid, len);
  r->uid_len = len;
  memcpy(r->uid, uid, len);
  r->uid[len] = '\0';
  rec_sync(r);
  k = bucket_of(r->hash, st->recs_nb);
  r->next = st->recs[k];
  st->recs[k] = r;
  st->recs_n++;
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

/* Unlinks and frees the record *pp points at; *pp then holds the next. */
static void rec_remove(struct uidstate *st, struct rec **pp) {
  struct rec *r = *pp;

  *pp = r->next;
  st->recs_n--;
  rec_free(r);
}

static bool rec_pending(const struct uidstate *st, const struct rec *r) {
  return r->has_d && r->d.epoch == st->epoch;
}

/* ---- applying records (from the file or from an append); each either
 * applies entirely or returns -ENOMEM having changed nothing visible (an
 * interned server may stay behind). */

static int apply_d(struct uidstate *st, const char *server, size_t slen, const char *uid,
                   size_t ulen, uint64_t size, const char *name, size_t nlen, time_t when,
                   const uint8_t *digest) {
  struct server *srv;
  struct rec *r;
  struct dstate *save = NULL;
  char *n;

  if ((srv = server_get(st, server, slen)) == NULL || (n = dup_mem(name, nlen)) == NULL)
    return -ENOMEM;
  r = rec_find(st, srv, uid, ulen);
  if (r != NULL && r->has_d && r->d.epoch < st->epoch) {
    /* A durable D is being overridden by a pending one: keep it, since it
     * is what counts if the new delivery turns out not to have happened. */
    if ((save = malloc(sizeof(*save))) == NULL) {
      free(n);
      return -ENOMEM;
    }
  }
  if (r == NULL && (r = rec_new(st, srv, uid, ulen)) == NULL) {
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
  r->d.size = size;
  r->d.when = when;
  r->d.epoch = st->epoch;
  r->d.has_digest = digest != NULL;
  if (digest != NULL)
    memcpy(r->d.digest, digest, UIDSTATE_DIGEST_LEN);
  else
    memset(r->d.digest, 0, UIDSTATE_DIGEST_LEN);
  r->has_d = true;
  r->pub.size = size;
  r->pub.attempts = 0;
  free(r->error);
  r->error = NULL;
  rec_sync(r);
  return 0;
}

/* error is sanitized here. */
static int apply_a(struct uidstate *st, const char *server, size_t slen, const char *uid,
                   size_t ulen, uint64_t size, unsigned attempts, const char *error, size_t elen,
                   time_t when) {
  char clean[ERROR_CAP + 1];
  struct server *srv;
  struct rec *r;
  char *e = NULL;
  size_t clen = sanitize_error(error, elen, clean);

  if ((srv = server_get(st, server, slen)) == NULL)
    return -ENOMEM;
  if (clen > 0 && (e = dup_mem(clean, clen)) == NULL)
    return -ENOMEM;
  r = rec_find(st, srv, uid, ulen);
  if (r == NULL && (r = rec_new(st, srv, uid, ulen)) == NULL) {
    free(e);
    return -ENOMEM;
  }
  r->pub.size = size;
  r->pub.attempts = attempts;
  r->a_when = when;
  free(r->error);
  r->error = e;
  rec_sync(r);
  return 0;
}

/* R: the record's deletion was committed on the server (or the UID turned
 * out not to identify one message): the record goes entirely, attempts and
 * all, so that a later message with the same UID is new. */
static int apply_r(struct uidstate *st, const char *server, size_t slen, const char *uid,
                   size_t ulen) {
  struct server *srv = server_find(st, server, slen);
  struct rec **pp;
  uint64_t h;

  if (srv == NULL || st->recs_nb == 0)
    return 0;
  h = rec_hash(srv, uid, ulen);
  for (pp = &st->recs[bucket_of(h, st->recs_nb)]; *pp != NULL; pp = &(*pp)->next) {
    struct rec *r = *pp;
    if (r->hash == h && r->srv == srv && r->uid_len == ulen && memcmp(r->uid, uid, ulen) == 0) {
      rec_remove(st, pp);
      break;
    }
  }
  return 0;
}

/* F: the last D for this UID cannot be trusted (its session desynchronised,
 * so the file may hold another message).  A pending D that overrode a
 * durable one falls back to it; otherwise the UID counts as not delivered.
 * The delivered file stays in the Maildir: when in doubt, deliver again. */
static int apply_f(struct uidstate *st, const char *server, size_t slen, const char *uid,
                   size_t ulen) {
  struct server *srv = server_find(st, server, slen);
  struct rec *r = srv ? rec_find(st, srv, uid, ulen) : NULL;

  if (r == NULL || !r->has_d)
    return 0;
  free(r->d.name);
  if (rec_pending(st, r) && r->prev != NULL) {
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
      return apply_r(st, server, slen, uid, ulen);
  }
  rec_sync(r);
  return 0;
}

static int apply_l(struct uidstate *st, const char *server, size_t slen, bool on, time_t when) {
  struct server *srv = server_get(st, server, slen);

  if (srv == NULL)
    return -ENOMEM;
  srv->lockstep = on;
  srv->lock_when = when;
  return 0;
}

static void apply_b(struct uidstate *st) {
  st->epoch++;
}

/* ---- parsing */

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

/* 2 * UIDSTATE_DIGEST_LEN lowercase hex digits into out. */
static bool parse_digest(const char *s, size_t len, uint8_t *out) {
  size_t i;

  if (len != 2 * UIDSTATE_DIGEST_LEN)
    return false;
  for (i = 0; i < UIDSTATE_DIGEST_LEN; i++) {
    uint32_t v;
    if (!hex_lower(s + 2 * i, 2, &v))
      return false;
    out[i] = (uint8_t)v;
  }
  return true;
}

/* One line without its newline.  Returns 0 when applied, 1 when corrupt,
 * -ENOMEM. */
static int parse_line(struct uidstate *st, const char *line, size_t len) {
  const char *p, *end, *server, *uid, *f, *name;
  size_t slen, ulen, flen, nlen;
  uint64_t size, attempts;
  uint8_t digest[UIDSTATE_DIGEST_LEN];
  bool has_digest;
  uint32_t crc;
  time_t when;

  if (len + 1 > LINE_CAP || len < 1 + CRC_TAIL)
    return 1;
  end = line + len - CRC_TAIL;
  if (end[0] != ' ' || end[1] != '*' || !hex_lower(end + 2, 8, &crc) ||
      crc32_of(line, (size_t)(end - line)) != crc)
    return 1;
  p = line + 1;
  switch (line[0]) {
  case 'D':
    if (!take(&p, end, &server, &slen) || !server_ok(server, slen) || !take(&p, end, &uid, &ulen) ||
        !uid_ok(uid, ulen) || !take(&p, end, &f, &flen) || !parse_u64(f, flen, &size) ||
        !take(&p, end, &name, &nlen) || !name_ok(name, nlen) || !take(&p, end, &f, &flen) ||
        !parse_time(f, flen, &when))
      return 1;
    /* The header digest is optional: lines written before it existed have
     * none. */
    has_digest = p != end;
    if (has_digest && (!take(&p, end, &f, &flen) || !parse_digest(f, flen, digest) || p != end))
      return 1;
    return apply_d(st, server, slen, uid, ulen, size, name, nlen, when, has_digest ? digest : NULL);
  case 'A':
    if (!take(&p, end, &server, &slen) || !server_ok(server, slen) || !take(&p, end, &uid, &ulen) ||
        !uid_ok(uid, ulen) || !take(&p, end, &f, &flen) || !parse_u64(f, flen, &size) ||
        !take(&p, end, &f, &flen) || !parse_u64(f, flen, &attempts) || attempts == 0 ||
        attempts > UINT_MAX || !take(&p, end, &f, &flen) || !parse_time(f, flen, &when))
      return 1;
    /* The rest, after one space, is the error text (it may hold spaces). */
    if (p < end)
      p++;
    return apply_a(st, server, slen, uid, ulen, size, (unsigned)attempts, p, (size_t)(end - p),
                   when);
  case 'F':
    if (!take(&p, end, &server, &slen) || !server_ok(server, slen) || !take(&p, end, &uid, &ulen) ||
        !uid_ok(uid, ulen) || !take(&p, end, &f, &flen) || !parse_time(f, flen, &when) || p != end)
      return 1;
    return apply_f(st, server, slen, uid, ulen);
  case 'R':
    if (!take(&p, end, &server, &slen) || !server_ok(server, slen) || !take(&p, end, &uid, &ulen) ||
        !uid_ok(uid, ulen) || !take(&p, end, &f, &flen) || !parse_time(f, flen, &when) || p != end)
      return 1;
    return apply_r(st, server, slen, uid, ulen);
  case 'L':
    if (!take(&p, end, &server, &slen) || !server_ok(server, slen) || !take(&p, end, &f, &flen))
      return 1;
    name = f;
    nlen = flen;
    if (!take(&p, end, &f, &flen) || !parse_time(f, flen, &when) || p != end)
      return 1;
    if (nlen == 2 && memcmp(name, "on", 2) == 0)
      return apply_l(st, server, slen, true, when);
    if (nlen == 3 && memcmp(name, "off", 3) == 0)
      return apply_l(st, server, slen, false, when);
    return 1;
  case 'B':
    if (!take(&p, end, &f, &flen) || !parse_time(f, flen, &when) || p != end)
      return 1;
    apply_b(st);
    return 0;
  default:
    return 1;
  }
}

int uidstate_parse(struct uidstate *st, const char *buf, size_t len) {
  const char *p = buf, *end = buf + len;

  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t llen;
    int r;

    if (nl == NULL) {
      /* A torn write: the line never got its newline. */
      st->corrupt++;
      break;
    }
    llen = (size_t)(nl - p);
    if (st->lines++ == 0) {
      if (llen == sizeof(HEADER) - 1 && memcmp(p, HEADER, llen) == 0) {
        p = nl + 1;
        continue;
      }
      /* No header: counted, but the line is still read as a record, since
       * a valid D line dropped here would mean delivering twice. */
      st->corrupt++;
      r = parse_line(st, p, llen);
      if (r < 0)
        return r;
    } else {
      r = parse_line(st, p, llen);
      if (r < 0)
        return r;
      st->corrupt += (size_t)r;
    }
    p = nl + 1;
  }
  return 0;
}

struct uidstate *uidstate_new_memory(void) {
  struct uidstate *st = calloc(1, sizeof(*st));

  if (st != NULL) {
    st->fd = -1;
    st->lock_fd = -1;
    st->dir_fd = -1;
  }
  return st;
}

/* ---- accessors */

int uidstate_fd(const struct uidstate *st) {
  return st->fd;
}

const char *uidstate_path(const struct uidstate *st) {
  return st->path != NULL ? st->path : "";
}

size_t uidstate_corrupt_lines(const struct uidstate *st) {
  return st->corrupt;
}

const struct uidstate_rec *uidstate_find(const struct uidstate *st, const char *server,
                                         const char *uid) {
  const struct server *srv;
  const struct rec *r;

  if (server == NULL || uid == NULL || (srv = server_find(st, server, strlen(server))) == NULL)
    return NULL;
  r = rec_find(st, srv, uid, strlen(uid));
  return r != NULL ? &r->pub : NULL;
}

int uidstate_lockstep(const struct uidstate *st, const char *server) {
  const struct server *srv = server != NULL ? server_find(st, server, strlen(server)) : NULL;

  return srv != NULL && srv->lockstep;
}

void uidstate_foreach(const struct uidstate *st,
                      int (*cb)(void *data, const struct uidstate_rec *r), void *data) {
  size_t i;

  for (i = 0; i < st->recs_nb; i++) {
    const struct rec *r;
    for (r = st->recs[i]; r != NULL; r = r->next)
      if (cb(data, &r->pub) != 0)
        return;
  }
}

/* ---- appends */

static int hand_out(const char *line, int n, char **line_r, size_t *len_r) {
  char *copy;

  if (n < 0)
    return n;
  if ((copy = dup_mem(line, (size_t)n)) == NULL)
    return -ENOMEM;
  *line_r = copy;
  *len_r = (size_t)n;
  return 0;
}

static void clear_out(char **line_r, size_t *len_r) {
  *line_r = NULL;
  *len_r = 0;
}

int uidstate_append_delivered(struct uidstate *st, const char *server, const char *uid,
                              uint64_t size, const char *name, time_t when, const uint8_t *digest,
                              char **line_r, size_t *len_r) {
  char line[LINE_CAP];
  int err;

  clear_out(line_r, len_r);
  if (server == NULL || uid == NULL || name == NULL || !server_ok(server, strlen(server)) ||
      !uid_ok(uid, strlen(uid)) || !name_ok(name, strlen(name)))
    return -EINVAL;
  if ((err = hand_out(line, fmt_d(line, server, uid, size, name, when, digest), line_r, len_r)) < 0)
    return err;
  err =
      apply_d(st, server, strlen(server), uid, strlen(uid), size, name, strlen(name), when, digest);
  if (err < 0) {
    free(*line_r);
    clear_out(line_r, len_r);
  }
  return err;
}

int uidstate_append_attempt(struct uidstate *st, const char *server, const char *uid, uint64_t size,
                            const char *error, time_t when, char **line_r, size_t *len_r) {
  char line[LINE_CAP], clean[ERROR_CAP + 1];
  const struct uidstate_rec *old;
  unsigned attempts;
  int err;

  clear_out(line_r, len_r);
  if (server == NULL || uid == NULL || !server_ok(server, strlen(server)) ||
      !uid_ok(uid, strlen(uid)))
    return -EINVAL;
  if (error == NULL)
    error = "";
  sanitize_error(error, strlen(error), clean);
  /* The line carries the new total, so that reading never has to add up
   * (and a lost or corrupt A line costs one count, not all). */
  old = uidstate_find(st, server, uid);
  attempts = old == NULL ? 1 : old->attempts < UINT_MAX ? old->attempts + 1 : UINT_MAX;
  if ((err = hand_out(line, fmt_a(line, server, uid, size, attempts, when, clean), line_r, len_r)) <
      0)
    return err;
  err = apply_a(st, server, strlen(server), uid, strlen(uid), size, attempts, clean, strlen(clean),
                when);
  if (err < 0) {
    free(*line_r);
    clear_out(line_r, len_r);
  }
  return err;
}

int uidstate_append_lockstep(struct uidstate *st, const char *server, int on, time_t when,
                             char **line_r, size_t *len_r) {
  char line[LINE_CAP];
  int err;

  clear_out(line_r, len_r);
  if (server == NULL || !server_ok(server, strlen(server)))
    return -EINVAL;
  if ((err = hand_out(line, fmt_l(line, server, on != 0, when), line_r, len_r)) < 0)
    return err;
  err = apply_l(st, server, strlen(server), on != 0, when);
  if (err < 0) {
    free(*line_r);
    clear_out(line_r, len_r);
  }
  return err;
}

int uidstate_format_delivered(const char *server, const char *uid, uint64_t size, const char *name,
                              time_t when, const uint8_t *digest, char *buf, size_t buflen) {
  char line[LINE_CAP];
  int n;

  if (server == NULL || uid == NULL || name == NULL || !server_ok(server, strlen(server)) ||
      !uid_ok(uid, strlen(uid)) || !name_ok(name, strlen(name)))
    return -EINVAL;
  n = fmt_d(line, server, uid, size, name, when, digest);
  if (n < 0)
    return n;
  if ((size_t)n >= buflen)
    return -ENOSPC;
  memcpy(buf, line, (size_t)n + 1);
  return n;
}

int uidstate_append_forget(struct uidstate *st, const char *server, const char *uid, time_t when,
                           char **line_r, size_t *len_r) {
  char line[LINE_CAP];
  int err;

  clear_out(line_r, len_r);
  if (server == NULL || uid == NULL || !server_ok(server, strlen(server)) ||
      !uid_ok(uid, strlen(uid)))
    return -EINVAL;
  if ((err = hand_out(line, fmt_f(line, server, uid, when), line_r, len_r)) < 0)
    return err;
  return apply_f(st, server, strlen(server), uid, strlen(uid));
}

int uidstate_append_retire(struct uidstate *st, const char *server, const char *uid, time_t when,
                           char **line_r, size_t *len_r) {
  char line[LINE_CAP];
  int err;

  clear_out(line_r, len_r);
  if (server == NULL || uid == NULL || !server_ok(server, strlen(server)) ||
      !uid_ok(uid, strlen(uid)))
    return -EINVAL;
  if ((err = hand_out(line, fmt_r(line, server, uid, when), line_r, len_r)) < 0)
    return err;
  return apply_r(st, server, strlen(server), uid, strlen(uid));
}

int uidstate_set_size(struct uidstate *st, const char *server, const char *uid, uint64_t size) {
  struct server *srv =
      server != NULL && uid != NULL ? server_find(st, server, strlen(server)) : NULL;
  struct rec *r = srv != NULL ? rec_find(st, srv, uid, strlen(uid)) : NULL;

  if (r == NULL || !r->has_d)
    return -ENOENT;
  r->d.size = size;
  /* An A after the D set the size the failed attempts were about. */
  if (r->pub.attempts == 0)
    r->pub.size = size;
  rec_sync(r);
  return 0;
}

int uidstate_append_barrier(struct uidstate *st, time_t when, char **line_r, size_t *len_r) {
  char line[LINE_CAP];
  int err;

  clear_out(line_r, len_r);
  if ((err = hand_out(line, fmt_b(line, when), line_r, len_r)) < 0)
    return err;
  apply_b(st);
  return 0;
}

/* ---- file helpers */

static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

static int fsync_retry(int fd) {
  while (fsync(fd) != 0)
    if (errno != EINTR)
      return -errno;
  return 0;
}

/* The directory part of path ("." or "/" when there is none) in out
 * (PATH_MAX bytes). */
static void parent_of(const char *path, char *out) {
  const char *slash = strrchr(path, '/');
  size_t len;

  if (slash == NULL) {
    strcpy(out, ".");
    return;
  }
  /* Several slashes in a row separate just once. */
  while (slash > path && slash[-1] == '/')
    slash--;
  len = slash == path ? 1 : (size_t)(slash - path);
  memcpy(out, path, len);
  out[len] = '\0';
}

/* mkdir -p of path's parent, each new component 0700. */
static int make_parents(const char *path, char *errbuf, size_t errlen) {
  char dir[PATH_MAX];
  struct stat sb;
  char *p;

  parent_of(path, dir);
  for (p = dir + 1;; p++) {
    bool last = *p == '\0';
    if (!last && (*p != '/' || p[-1] == '/'))
      continue;
    *p = '\0';
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
      int err = -errno;
      p3_set_error(errbuf, errlen, "cannot create directory %s: %s", dir, strerror(-err));
      return err;
    }
    if (last)
      break;
    *p = '/';
  }
  if (stat(dir, &sb) != 0) {
    int err = -errno;
    p3_set_error(errbuf, errlen, "cannot create directory %s: %s", dir, strerror(-err));
    return err;
  }
  if (!S_ISDIR(sb.st_mode)) {
    p3_set_error(errbuf, errlen, "cannot create directory %s: %s", dir, strerror(ENOTDIR));
    return -ENOTDIR;
  }
  return 0;
}

/* Opens the directory that holds the state and its lock (following
 * symlinks in its path: they are the user's own), and refuses it unless
 * it belongs to the effective uid and is not writable by group or others
 * (nobody else may swap a file in it).  Returns P3_EUNSAFE with errbuf
 * naming it, or a negative errno. */
static int open_dir(struct uidstate *st, char *errbuf, size_t errlen) {
  char dir[PATH_MAX];
  struct stat sb;
  int err;

  parent_of(st->path, dir);
  if ((st->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
    err = -errno;
    p3_set_error(errbuf, errlen, "cannot open directory %s: %s", dir, strerror(-err));
    return err;
  }
  if (fstat(st->dir_fd, &sb) != 0) {
    err = -errno;
    p3_set_error(errbuf, errlen, "cannot stat directory %s: %s", dir, strerror(-err));
    return err;
  }
  if (sb.st_uid != geteuid()) {
    p3_set_error(errbuf, errlen,
                 "refusing %s: its directory %s belongs to uid %lu, not to uid %lu (who runs "
                 "pop3sync)",
                 st->path, dir, (unsigned long)sb.st_uid, (unsigned long)geteuid());
    return P3_EUNSAFE;
  }
  if ((sb.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    p3_set_error(errbuf, errlen,
                 "refusing %s: its directory %s is writable by group or others (mode %04o)",
                 st->path, dir, (unsigned)(sb.st_mode & 07777));
    return P3_EUNSAFE;
  }
  return 0;
}

/* A state or lock file must be a regular file with one link that belongs
 * to the effective uid (like OpenSMTPD's secure_file): a hard link to
 * somebody else's file is not ours to rewrite. */
static int check_file(int fd, const char *path, char *errbuf, size_t errlen) {
  struct stat sb;
  int err;

  if (fstat(fd, &sb) != 0) {
    err = -errno;
    p3_set_error(errbuf, errlen, "cannot stat %s: %s", path, strerror(-err));
    return err;
  }
  if (!S_ISREG(sb.st_mode)) {
    p3_set_error(errbuf, errlen, "refusing %s: not a regular file", path);
    return P3_EUNSAFE;
  }
  if (sb.st_nlink != 1) {
    p3_set_error(errbuf, errlen, "refusing %s: it has %lu hard links", path,
                 (unsigned long)sb.st_nlink);
    return P3_EUNSAFE;
  }
  if (sb.st_uid != geteuid()) {
    p3_set_error(errbuf, errlen,
                 "refusing %s: it belongs to uid %lu, not to uid %lu (who runs "
                 "pop3sync)",
                 path, (unsigned long)sb.st_uid, (unsigned long)geteuid());
    return P3_EUNSAFE;
  }
  return 0;
}

/* openat(dir_fd, base, flags | O_NOFOLLOW, 0600), then check_file.
 * Returns the fd or a negative error with errbuf naming path. */
static int open_file(const struct uidstate *st, const char *base, const char *path, int flags,
                     char *errbuf, size_t errlen) {
  struct stat sb;
  int fd, err;

  fd = openat(st->dir_fd, base, flags | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    err = -errno;
    if (fstatat(st->dir_fd, base, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode)) {
      p3_set_error(errbuf, errlen, "%s is a symbolic link; refusing to follow it", path);
      return P3_EUNSAFE;
    }
    if (err == -EISDIR)
      p3_set_error(errbuf, errlen, "%s is a directory", path);
    else
      p3_set_error(errbuf, errlen, "cannot open %s: %s", path, strerror(-err));
    return err;
  }
  if ((err = check_file(fd, path, errbuf, errlen)) < 0) {
    close(fd);
    return err;
  }
  return fd;
}

/* "pid 1234 (pop3syncd)" from the lock file, for the message. */
static void read_holder(int fd, char *out, size_t outlen) {
  ssize_t n;
  size_t i;

  do
    n = pread(fd, out, outlen - 1, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    n = 0;
  while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
    n--;
  out[n] = '\0';
  for (i = 0; i < (size_t)n; i++)
    if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
      out[i] = '?';
}

static int take_lock(struct uidstate *st, const char *who, char *errbuf, size_t errlen) {
  char msg[32 + WHO_CAP + 1], holder[160];
  size_t i, n;
  int err;

  st->lock_fd = open_file(st, st->lock_base, st->lock_path, O_RDWR | O_CREAT, errbuf, errlen);
  if (st->lock_fd < 0)
    return st->lock_fd;
  while (flock(st->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR)
      continue;
    err = -errno;
    if (err == -EWOULDBLOCK) {
      read_holder(st->lock_fd, holder, sizeof(holder));
      if (holder[0] != '\0')
        p3_set_error(errbuf, errlen, "%s is locked by %s", st->path, holder);
      else
        p3_set_error(errbuf, errlen, "%s is locked by another process", st->path);
      return P3_ELOCKED;
    }
    p3_set_error(errbuf, errlen, "cannot lock %s: %s", st->lock_path, strerror(-err));
    return err;
  }
  st->locked = true;
  n = (size_t)snprintf(msg, sizeof(msg), "pid %ld (", (long)getpid());
  for (i = 0; who[i] != '\0' && i < WHO_CAP; i++)
    msg[n++] = ((unsigned char)who[i] < 0x20 || who[i] == 0x7f) ? '?' : who[i];
  msg[n++] = ')';
  msg[n++] = '\n';
  if (ftruncate(st->lock_fd, 0) != 0) {
    err = -errno;
  } else {
    ssize_t w = pwrite(st->lock_fd, msg, n, 0);
    err = w < 0 ? -errno : (size_t)w != n ? -EIO : 0;
  }
  if (err < 0) {
    p3_set_error(errbuf, errlen, "cannot write %s: %s", st->lock_path, strerror(-err));
    return err;
  }
  return 0;
}

/* Reads the whole journal into a malloc'd buffer (*len_r bytes). */
static int read_journal(struct uidstate *st, char **buf_r, size_t *len_r, char *errbuf,
                        size_t errlen) {
  struct stat sb;
  char *buf;
  size_t len = 0, cap;
  int err;

  if (fstat(st->fd, &sb) != 0) {
    err = -errno;
    p3_set_error(errbuf, errlen, "cannot stat %s: %s", st->path, strerror(-err));
    return err;
  }
  if (!S_ISREG(sb.st_mode)) {
    p3_set_error(errbuf, errlen, "%s is not a regular file", st->path);
    return -EINVAL;
  }
  if (sb.st_size > FILE_CAP) {
    p3_set_error(errbuf, errlen, "%s is too large (%lld bytes; at most %lld)", st->path,
                 (long long)sb.st_size, (long long)FILE_CAP);
    return -EFBIG;
  }
  /* One byte more than the size says, so that growth shows (it should
   * not: we hold the lock) and stays bounded. */
  cap = (size_t)sb.st_size + 1;
  if ((buf = malloc(cap)) == NULL) {
    p3_set_error(errbuf, errlen, "cannot read %s: %s", st->path, strerror(ENOMEM));
    return -ENOMEM;
  }
  for (;;) {
    ssize_t n = pread(st->fd, buf + len, cap - len, (off_t)len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      err = -errno;
      free(buf);
      p3_set_error(errbuf, errlen, "cannot read %s: %s", st->path, strerror(-err));
      return err;
    }
    if (n == 0)
      break;
    len += (size_t)n;
    if (len == cap) {
      char *more;
      if ((off_t)cap > FILE_CAP) {
        free(buf);
        p3_set_error(errbuf, errlen, "%s is too large (more than %lld bytes)", st->path,
                     (long long)FILE_CAP);
        return -EFBIG;
      }
      cap = cap * 2 > (size_t)FILE_CAP + 1 ? (size_t)FILE_CAP + 1 : cap * 2;
      if ((more = realloc(buf, cap)) == NULL) {
        free(buf);
        p3_set_error(errbuf, errlen, "cannot read %s: %s", st->path, strerror(ENOMEM));
        return -ENOMEM;
      }
      buf = more;
    }
  }
  *buf_r = buf;
  *len_r = len;
  return 0;
}

/* ---- open / close */

static void free_tables(struct uidstate *st) {
  size_t i;

  for (i = 0; i < st->recs_nb; i++) {
    struct rec *r, *next;
    for (r = st->recs[i]; r != NULL; r = next) {
      next = r->next;
      rec_free(r);
    }
  }
  for (i = 0; i < st->srvs_nb; i++) {
    struct server *s, *next;
    for (s = st->srvs[i]; s != NULL; s = next) {
      next = s->next;
      free(s);
    }
  }
  free(st->recs);
  free(st->srvs);
}

void uidstate_close(struct uidstate *st) {
  if (st == NULL)
    return;
  if (st->fd >= 0)
    close(st->fd);
  if (st->lock_fd >= 0 && st->locked) {
    /* Still holding the lock, so nobody else's pid is erased; a later
     * "locked by" message then never names a process that has gone. */
    if (ftruncate(st->lock_fd, 0) != 0) {
      /* Harmless: the next holder rewrites it. */
    }
  }
  if (st->lock_fd >= 0)
    close(st->lock_fd);
  if (st->dir_fd >= 0)
    close(st->dir_fd);
  free_tables(st);
  free(st->path);
  free(st->lock_path);
  free(st);
}

/* Drops a torn tail (bytes after the last newline) so that the next line
 * appended does not glue onto it and get lost as one corrupt line; the
 * fragment is one the parser has already ignored.  An empty journal gets
 * its header. */
static int repair_journal(struct uidstate *st, const char *buf, size_t len, char *errbuf,
                          size_t errlen) {
  size_t keep = len;
  int err;

  while (keep > 0 && buf[keep - 1] != '\n')
    keep--;
  if (keep < len) {
    err = ftruncate(st->fd, (off_t)keep) != 0 ? -errno : fsync_retry(st->fd);
    if (err < 0) {
      p3_set_error(errbuf, errlen, "cannot truncate the torn last line of %s: %s", st->path,
                   strerror(-err));
      return err;
    }
  }
  if (keep == 0) {
    static const char header[] = HEADER "\n";
    if ((err = write_all(st->fd, header, sizeof(header) - 1)) < 0 ||
        (err = fsync_retry(st->fd)) < 0 || (err = fsync_retry(st->dir_fd)) < 0) {
      p3_set_error(errbuf, errlen, "cannot write %s: %s", st->path, strerror(-err));
      return err;
    }
  }
  return 0;
}

int uidstate_open(const char *path, const char *who, struct uidstate **st_r, char *errbuf,
                  size_t errlen) {
  struct uidstate *st;
  struct stat sb;
  char *buf = NULL;
  size_t plen, len = 0;
  int err;

  *st_r = NULL;
  if (errbuf != NULL && errlen > 0)
    errbuf[0] = '\0';
  if (path == NULL || path[0] == '\0') {
    p3_set_error(errbuf, errlen, "cannot open the UID state: empty path");
    return -EINVAL;
  }
  plen = strlen(path);
  if (plen + sizeof(".lock") >= PATH_MAX) {
    p3_set_error(errbuf, errlen, "cannot open %.64s...: %s", path, strerror(ENAMETOOLONG));
    return -ENAMETOOLONG;
  }
  if (who == NULL)
    who = "?";
  if ((err = make_parents(path, errbuf, errlen)) < 0)
    return err;
  if ((st = uidstate_new_memory()) == NULL || (st->path = dup_mem(path, plen)) == NULL ||
      (st->lock_path = malloc(plen + sizeof(".lock"))) == NULL) {
    uidstate_close(st);
    p3_set_error(errbuf, errlen, "cannot open %s: %s", path, strerror(ENOMEM));
    return -ENOMEM;
  }
  memcpy(st->lock_path, path, plen);
  memcpy(st->lock_path + plen, ".lock", sizeof(".lock"));
  st->base = strrchr(st->path, '/') != NULL ? strrchr(st->path, '/') + 1 : st->path;
  st->lock_base = st->lock_path + (st->base - st->path);
  if (st->base[0] == '\0') {
    p3_set_error(errbuf, errlen, "%s is a directory", path);
    err = -EISDIR;
    goto fail;
  }
  /* From here on everything is relative to the directory: no name is
   * looked up twice, and no symlink is followed. */
  if ((err = open_dir(st, errbuf, errlen)) < 0)
    goto fail;
  /* Before creating PATH.lock beside it. */
  if (fstatat(st->dir_fd, st->base, &sb, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISDIR(sb.st_mode)) {
      p3_set_error(errbuf, errlen, "%s is a directory", path);
      err = -EISDIR;
      goto fail;
    }
    if (S_ISLNK(sb.st_mode)) {
      p3_set_error(errbuf, errlen, "%s is a symbolic link; refusing to follow it", path);
      err = P3_EUNSAFE;
      goto fail;
    }
  }
  if ((err = take_lock(st, who, errbuf, errlen)) < 0)
    goto fail;
  st->fd = open_file(st, st->base, path, O_RDWR | O_CREAT | O_APPEND, errbuf, errlen);
  if (st->fd < 0) {
    err = st->fd;
    st->fd = -1;
    goto fail;
  }
  if ((err = read_journal(st, &buf, &len, errbuf, errlen)) < 0)
    goto fail;
  if ((err = uidstate_parse(st, buf, len)) < 0) {
    p3_set_error(errbuf, errlen, "cannot read %s: %s", path, strerror(-err));
    goto fail;
  }
  if ((err = repair_journal(st, buf, len, errbuf, errlen)) < 0)
    goto fail;
  free(buf);
  *st_r = st;
  return 0;

fail:
  free(buf);
  uidstate_close(st);
  return err;
}

/* ---- compaction */

struct writer {
  int fd;
  int err;
  size_t len;
  char buf[WRITE_BLOCK];
};

static void writer_flush(struct writer *w) {
  if (w->err == 0 && w->len > 0)
    w->err = write_all(w->fd, w->buf, w->len);
  w->len = 0;
}

/* n is a formatter's result: a length or a negative error. */
static void writer_add(struct writer *w, const char *line, int n) {
  if (n < 0) {
    if (w->err == 0)
      w->err = n;
    return;
  }
  if (w->len + (size_t)n > sizeof(w->buf))
    writer_flush(w);
  memcpy(w->buf + w->len, line, (size_t)n);
  w->len += (size_t)n;
}

/* Whether r survives this rewrite at all. */
static bool rec_written(const struct rec *r) {
  return !r->drop && (r->pub.attempts > 0 || (r->has_d && (!r->doomed || r->prev != NULL)));
}

/* Writes the journal as memory will be once the drop and doomed marks are
 * applied, so that reading it back gives the same records, the same
 * pending ones included:
 *   header; each durable D; L lines for lock-step servers; B;
 *   each pending D; each A (after every D, since a D resets attempts). */
static void write_state(const struct uidstate *st, struct writer *w, time_t now) {
  char line[LINE_CAP];
  const struct rec *r;
  size_t i;
  int pass;

  writer_add(w, HEADER "\n", (int)sizeof(HEADER));
  for (i = 0; i < st->recs_nb; i++)
    for (r = st->recs[i]; r != NULL; r = r->next) {
      const struct dstate *d = NULL;
      if (!rec_written(r) || !r->has_d)
        continue;
      if (!rec_pending(st, r))
        d = &r->d;
      else if (r->prev != NULL)
        d = r->prev;
      if (d != NULL)
        writer_add(w, line,
                   fmt_d(line, r->srv->name, r->uid, d->size, d->name, d->when, dstate_digest(d)));
    }
  for (i = 0; i < st->srvs_nb; i++) {
    const struct server *s;
    for (s = st->srvs[i]; s != NULL; s = s->next)
      if (s->lockstep)
        writer_add(w, line, fmt_l(line, s->name, true, s->lock_when));
  }
  writer_add(w, line, fmt_b(line, now));
  for (pass = 0; pass < 2; pass++)
    for (i = 0; i < st->recs_nb; i++)
      for (r = st->recs[i]; r != NULL; r = r->next) {
        if (!rec_written(r))
          continue;
        if (pass == 0 && rec_pending(st, r) && !r->doomed)
          writer_add(w, line,
                     fmt_d(line, r->srv->name, r->uid, r->d.size, r->d.name, r->d.when,
                           dstate_digest(&r->d)));
        if (pass == 1 && r->pub.attempts > 0)
          writer_add(w, line,
                     fmt_a(line, r->srv->name, r->uid, r->pub.size, r->pub.attempts, r->a_when,
                           r->error != NULL ? r->error : ""));
      }
  writer_flush(w);
}

/* Applies the drop and doomed marks to memory (after the file says so). */
static void apply_marks(struct uidstate *st) {
  size_t i;

  for (i = 0; i < st->recs_nb; i++) {
    struct rec **pp = &st->recs[i];
    while (*pp != NULL) {
      struct rec *r = *pp;
      if (!rec_written(r)) {
        rec_remove(st, pp);
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
        r->doomed = false;
        rec_sync(r);
      } else if (!rec_pending(st, r)) {
        prev_free(r); /* no longer needed */
      }
      pp = &r->next;
    }
  }
}

static void clear_marks(struct uidstate *st) {
  size_t i;
  struct rec *r;

  for (i = 0; i < st->recs_nb; i++)
    for (r = st->recs[i]; r != NULL; r = r->next)
      r->drop = r->doomed = false;
}

/* Rewrites the file from memory with the marks applied; applies them to
 * memory only when the new file is in place. */
static int rewrite(struct uidstate *st) {
  struct writer *w;
  char *tmp;
  size_t blen = strlen(st->base);
  int fd, err;

  if ((w = malloc(sizeof(*w))) == NULL || (tmp = malloc(blen + sizeof(".tmp"))) == NULL) {
    free(w);
    return -ENOMEM;
  }
  memcpy(tmp, st->base, blen);
  memcpy(tmp + blen, ".tmp", sizeof(".tmp"));
  /* O_APPEND: this fd becomes the journal's once renamed, so there is no
   * reopen that could fail after the old file is gone.  A PATH.tmp left
   * by a crash is ours to remove (we hold the lock; unlinkat removes a
   * symlink itself, never its target); O_EXCL|O_NOFOLLOW then makes sure
   * the file written is the one just created. */
  unlinkat(st->dir_fd, tmp, 0);
  fd = openat(st->dir_fd, tmp, O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    err = -errno;
    free(tmp);
    free(w);
    return err;
  }
  w->fd = fd;
  w->err = 0;
  w->len = 0;
  if (fchmod(fd, 0600) != 0)
    w->err = -errno;
  else
    write_state(st, w, time(NULL));
  err = w->err;
  free(w);
  if (err == 0)
    err = fsync_retry(fd);
  if (err == 0 && renameat(st->dir_fd, tmp, st->dir_fd, st->base) != 0)
    err = -errno;
  if (err < 0) {
    close(fd);
    unlinkat(st->dir_fd, tmp, 0);
    free(tmp);
    return err;
  }
  free(tmp);
  /* Renamed: from here on the new file is the journal whatever happens,
   * so the fd moves over even if the directory fsync fails. */
  err = fsync_retry(st->dir_fd);
  close(st->fd);
  st->fd = fd;
  apply_marks(st);
  return err;
}

int uidstate_compact(struct uidstate *st, int (*keep)(void *data, const struct uidstate_rec *r),
                     void *data) {
  size_t i;
  struct rec *r;
  int err;

  if (st->path == NULL)
    return -EINVAL;
  /* Any non-zero keeps: a callback that returns an error code must not
   * make us forget a delivery. */
  if (keep != NULL)
    for (i = 0; i < st->recs_nb; i++)
      for (r = st->recs[i]; r != NULL; r = r->next)
        r->drop = keep(data, &r->pub) == 0;
  err = rewrite(st);
  clear_marks(st);
  return err;
}

/* ---- check_files */

struct name_ent {
  struct name_ent *next;
  uint64_t hash;
  const char *name; /* the record's */
  size_t len;
  bool found;
};

static struct name_ent *name_find(struct name_ent **b, size_t nb, const char *s, size_t len) {
  uint64_t h = fnv1a(s, len, FNV_SEED);
  struct name_ent *e;

  for (e = b[bucket_of(h, nb)]; e != NULL; e = e->next)
    if (e->hash == h && e->len == len && memcmp(e->name, s, len) == 0)
      return e;
  return NULL;
}

/* Marks the names found in one directory (fd -1: a missing directory,
 * none).  Only a regular file counts (fstatat AT_SYMLINK_NOFOLLOW). */
static int scan_dir(int dirfd, struct name_ent **b, size_t nb) {
  struct dirent *de;
  struct stat sb;
  DIR *dir;
  int fd, err = 0;

  if (dirfd < 0)
    return 0;
  /* A dup shares the offset with dirfd: rewind before reading. */
  if ((fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0)) < 0)
    return -errno;
  if ((dir = fdopendir(fd)) == NULL) {
    err = -errno;
    close(fd);
    return err;
  }
  rewinddir(dir);
  for (;;) {
    const char *colon;
    struct name_ent *e;
    size_t len;
    errno = 0;
    if ((de = readdir(dir)) == NULL) {
      err = -errno;
      break;
    }
    colon = strchr(de->d_name, ':');
    len = colon != NULL ? (size_t)(colon - de->d_name) : strlen(de->d_name);
    if ((e = name_find(b, nb, de->d_name, len)) != NULL && !e->found &&
        fstatat(dirfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(sb.st_mode))
      e->found = true;
  }
  closedir(dir);
  return err;
}

int uidstate_check_files(struct uidstate *st, int newfd, int curfd) {
  struct name_ent **b = NULL, *ents = NULL;
  size_t i, n = 0, nb, k = 0;
  struct rec *r;
  int err = 0, dropped = 0;

  for (i = 0; i < st->recs_nb; i++)
    for (r = st->recs[i]; r != NULL; r = r->next)
      n += rec_pending(st, r);
  if (n == 0)
    return 0;
  /* A set of the pending names (usually a handful), looked up once per
   * directory entry: memory follows the records, not the Maildir. */
  for (nb = BUCKETS_MIN; nb < n; nb *= 2)
    ;
  if ((b = calloc(nb, sizeof(*b))) == NULL || (ents = calloc(n, sizeof(*ents))) == NULL) {
    free(b);
    return -ENOMEM;
  }
  for (i = 0; i < st->recs_nb; i++)
    for (r = st->recs[i]; r != NULL; r = r->next) {
      size_t len;
      struct name_ent *e;
      if (!rec_pending(st, r))
        continue;
      len = strlen(r->d.name);
      if (name_find(b, nb, r->d.name, len) != NULL)
        continue;
      e = &ents[k++];
      e->hash = fnv1a(r->d.name, len, FNV_SEED);
      e->name = r->d.name;
      e->len = len;
      e->next = b[bucket_of(e->hash, nb)];
      b[bucket_of(e->hash, nb)] = e;
    }
  if ((err = scan_dir(newfd, b, nb)) < 0 || (err = scan_dir(curfd, b, nb)) < 0)
    goto out;
  for (i = 0; i < st->recs_nb; i++)
    for (r = st->recs[i]; r != NULL; r = r->next)
      if (rec_pending(st, r) && !name_find(b, nb, r->d.name, strlen(r->d.name))->found) {
        r->doomed = true;
        if (dropped < INT_MAX)
          dropped++;
      }
  if (dropped == 0)
    goto out;
  if (st->path == NULL) {
    apply_marks(st);
  } else {
    /* The journal still holds the dropped D lines: once a later B follows
     * them they would count as delivered again.  Rewrite it now. */
    err = rewrite(st);
    clear_marks(st);
  }

out:
  free(ents);
  free(b);
  return err < 0 ? err : dropped;
}

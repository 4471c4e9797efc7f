#include "config.h"

#include "srvmem.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "errors.h"

#define SRVMEM_MAGIC "pop3sync-server 1"
#define SRVMEM_SUFFIX ".server"

void srvmem_init(struct srvmem *m) {
  memset(m, 0, sizeof *m);
  m->pipelining = SRVMEM_UNKNOWN;
  m->greeting_apop = SRVMEM_UNKNOWN;
  m->early_flight = SRVMEM_UNKNOWN;
  m->flight_listing = SRVMEM_UNKNOWN;
}

void srvmem_drop_tls(struct srvmem *m) {
  explicit_bzero(m->tls_session, sizeof m->tls_session);
  explicit_bzero(m->tls_key, sizeof m->tls_key);
  m->tls_len = 0;
  m->tls_expires = 0;
  m->has_tls = 0;
}

void srvmem_wipe(struct srvmem *m) {
  explicit_bzero(m, sizeof *m);
  srvmem_init(m);
}

static int tok_char(unsigned char c) {
  return c >= 0x21 && c <= 0x7e;
}

/* Normalises a token list into dst (cap bytes): see srvmem_set_capa. */
static void norm_tokens(char *dst, size_t cap, const char *src, size_t len) {
  size_t n = 0, i = 0;

  dst[0] = '\0';
  while (i < len) {
    while (i < len && !tok_char((unsigned char)src[i]))
      i++;
    size_t start = i;
    while (i < len && tok_char((unsigned char)src[i]))
      i++;
    size_t tl = i - start, need = tl + (n > 0);
    if (tl == 0)
      break;
    if (n + need + 1 > cap)
      break; /* cut at a whole token */
    if (n > 0)
      dst[n++] = ' ';
    memcpy(dst + n, src + start, tl);
    n += tl;
    dst[n] = '\0';
  }
}

void srvmem_set_capa(struct srvmem *m, int which, const char *tokens) {
  char *dst = which ? m->capa_post : m->capa_pre;

  norm_tokens(dst, SRVMEM_CAPA_MAX, tokens ? tokens : "", tokens ? strlen(tokens) : 0);
}

/* ---- parsing */

static int hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1; /* lower case only: the writer's form */
}

static int parse_hex(const char *s, size_t len, unsigned char *out, size_t cap, size_t *n_r) {
  if (len == 0 || len % 2 != 0 || len / 2 > cap)
    return -EINVAL;
  for (size_t i = 0; i < len; i += 2) {
    int hi = hexval((unsigned char)s[i]), lo = hexval((unsigned char)s[i + 1]);
    if (hi < 0 || lo < 0)
      return -EINVAL;
    out[i / 2] = (unsigned char)(hi << 4 | lo);
  }
  *n_r = len / 2;
  return 0;
}

/* A decimal time, 1 to 19 digits, no sign. */
static int parse_time(const char *s, size_t len, time_t *t_r) {
  uint64_t v = 0;

  if (len == 0 || len > 19)
    return -EINVAL;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -EINVAL;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  if (v > (uint64_t)INT64_MAX || (sizeof(time_t) < 8 && v > (uint64_t)INT32_MAX))
    return -EINVAL;
  *t_r = (time_t)v;
  return 0;
}

/* A token list as srvmem_set_capa writes it: printable, single blanks. */
static int valid_tokens(const char *s, size_t len) {
  if (len >= SRVMEM_CAPA_MAX)
    return 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] == ' ') {
      if (i == 0 || i + 1 == len || s[i - 1] == ' ')
        return 0;
    } else if (!tok_char((unsigned char)s[i])) {
      return 0;
    }
  }
  return 1;
}

static int parse_tri(const char *v, size_t len, const char *yes, enum srvmem_tri *out) {
  if (len == strlen(yes) && memcmp(v, yes, len) == 0)
    *out = SRVMEM_YES;
  else if ((len == 2 && memcmp(v, "no", 2) == 0) || (len == 5 && memcmp(v, "plain", 5) == 0))
    *out = SRVMEM_NO;
  else if (len == 7 && memcmp(v, "unknown", 7) == 0)
    *out = SRVMEM_UNKNOWN;
  else
    return -EINVAL;
  return 0;
}

#define KEY_IS(k) (klen == sizeof(k) - 1 && memcmp(line, k, klen) == 0)

static int parse_line(struct srvmem *m, const char *line, size_t len, unsigned *seen) {
  const char *sp = memchr(line, ' ', len);
  size_t klen = sp ? (size_t)(sp - line) : len;
  const char *v = sp ? sp + 1 : line + len;
  size_t vlen = sp ? len - klen - 1 : 0;
  unsigned bit;

  if (KEY_IS("server"))
    bit = 1;
  else if (KEY_IS("saved"))
    bit = 2;
  else if (KEY_IS("capa-pre"))
    bit = 4;
  else if (KEY_IS("capa-post"))
    bit = 8;
  else if (KEY_IS("pipelining"))
    bit = 16;
  else if (KEY_IS("greeting"))
    bit = 32;
  else if (KEY_IS("early-flight"))
    bit = 512;
  else if (KEY_IS("flight-listing"))
    bit = 1024;
  else if (KEY_IS("tls-key"))
    bit = 64;
  else if (KEY_IS("tls-expires"))
    bit = 128;
  else if (KEY_IS("tls-session"))
    bit = 256;
  else
    return klen > 0 ? 0 : -EINVAL; /* a newer writer's key */
  if (*seen & bit)
    return -EINVAL; /* twice */
  *seen |= bit;
  switch (bit) {
  case 1:
    if (vlen == 0 || vlen >= sizeof m->server)
      return -EINVAL;
    for (size_t i = 0; i < vlen; i++)
      if (!tok_char((unsigned char)v[i]))
        return -EINVAL;
    memcpy(m->server, v, vlen);
    m->server[vlen] = '\0';
    return 0;
  case 2:
    return parse_time(v, vlen, &m->saved);
  case 4:
  case 8:
    if (!valid_tokens(v, vlen))
      return -EINVAL;
    memcpy(bit == 4 ? m->capa_pre : m->capa_post, v, vlen);
    (bit == 4 ? m->capa_pre : m->capa_post)[vlen] = '\0';
    return 0;
  case 16:
    return parse_tri(v, vlen, "yes", &m->pipelining);
  case 32:
    return parse_tri(v, vlen, "apop", &m->greeting_apop);
  case 512:
    return parse_tri(v, vlen, "yes", &m->early_flight);
  case 1024:
    return parse_tri(v, vlen, "yes", &m->flight_listing);
  case 64: {
    size_t n;
    if (vlen != 64 || parse_hex(v, vlen, m->tls_key, sizeof m->tls_key, &n) != 0)
      return -EINVAL;
    return 0;
  }
  case 128:
    return parse_time(v, vlen, &m->tls_expires);
  default:
    return parse_hex(v, vlen, m->tls_session, sizeof m->tls_session, &m->tls_len);
  }
}

int srvmem_parse(const char *buf, size_t len, struct srvmem *m) {
  size_t pos = 0;
  unsigned seen = 0;
  int first = 1, ended = 0;

  srvmem_init(m);
  while (pos < len) {
    const char *nl = memchr(buf + pos, '\n', len - pos);
    if (nl == NULL || ended)
      goto bad; /* a torn last line, or anything after "end" */
    const char *line = buf + pos;
    size_t llen = (size_t)(nl - line);
    pos += llen + 1;
    if (memchr(line, '\0', llen) != NULL || memchr(line, '\r', llen) != NULL)
      goto bad;
    if (first) {
      if (llen != sizeof(SRVMEM_MAGIC) - 1 || memcmp(line, SRVMEM_MAGIC, llen) != 0)
        goto bad;
      first = 0;
      continue;
    }
    if (llen == 3 && memcmp(line, "end", 3) == 0) {
      ended = 1;
      continue;
    }
    if (parse_line(m, line, llen, &seen) != 0)
      goto bad;
  }
  /* The server is required; the TLS fields go together. */
  if (!ended || !(seen & 1))
    goto bad;
  if ((seen & (64 | 128 | 256)) != 0 && (seen & (64 | 128 | 256)) != (64 | 128 | 256))
    goto bad;
  m->has_tls = (seen & 256) != 0;
  return 0;

bad:
  srvmem_wipe(m);
  return -EINVAL;
}

/* ---- formatting */

struct out {
  char *p;
  size_t len, cap;
  int err;
};

static void put(struct out *o, const char *s, size_t n) {
  if (o->err)
    return;
  if (o->len + n + 1 > o->cap) {
    size_t cap = o->cap ? o->cap : 1024;
    while (cap < o->len + n + 1)
      cap *= 2;
    char *p = malloc(cap);
    if (p == NULL) {
      o->err = -ENOMEM;
      return;
    }
    if (o->len)
      memcpy(p, o->p, o->len);
    if (o->p != NULL) {
      explicit_bzero(o->p, o->cap); /* it may hold the TLS session */
      free(o->p);
    }
    o->p = p;
    o->cap = cap;
  }
  memcpy(o->p + o->len, s, n);
  o->len += n;
  o->p[o->len] = '\0';
}

static void puts_(struct out *o, const char *s) {
  put(o, s, strlen(s));
}

static void put_hex(struct out *o, const unsigned char *b, size_t n) {
  static const char hex[] = "0123456789abcdef";
  char pair[2];

  for (size_t i = 0; i < n; i++) {
    pair[0] = hex[b[i] >> 4];
    pair[1] = hex[b[i] & 15];
    put(o, pair, 2);
  }
  explicit_bzero(pair, sizeof pair);
}

static const char *tri_text(enum srvmem_tri t, const char *yes, const char *no) {
  return t == SRVMEM_YES ? yes : t == SRVMEM_NO ? no : "unknown";
}

int srvmem_format(const struct srvmem *m, char **buf_r, size_t *len_r) {
  struct out o = {0};
  char num[64];
  size_t slen = strnlen(m->server, sizeof m->server);

  *buf_r = NULL;
  *len_r = 0;
  if (slen == 0 || slen >= sizeof m->server)
    return -EINVAL;
  for (size_t i = 0; i < slen; i++)
    if (!tok_char((unsigned char)m->server[i]))
      return -EINVAL;
  if (!valid_tokens(m->capa_pre, strnlen(m->capa_pre, SRVMEM_CAPA_MAX)) ||
      !valid_tokens(m->capa_post, strnlen(m->capa_post, SRVMEM_CAPA_MAX)))
    return -EINVAL;
  if (m->has_tls && (m->tls_len == 0 || m->tls_len > sizeof m->tls_session))
    return -EINVAL;
  puts_(&o, SRVMEM_MAGIC "\nserver ");
  puts_(&o, m->server);
  snprintf(num, sizeof num, "\nsaved %" PRId64 "\n", (int64_t)(m->saved < 0 ? 0 : m->saved));
  puts_(&o, num);
  if (m->capa_pre[0]) {
    puts_(&o, "capa-pre ");
    puts_(&o, m->capa_pre);
    puts_(&o, "\n");
  }
  if (m->capa_post[0]) {
    puts_(&o, "capa-post ");
    puts_(&o, m->capa_post);
    puts_(&o, "\n");
  }
  puts_(&o, "pipelining ");
  puts_(&o, tri_text(m->pipelining, "yes", "no"));
  puts_(&o, "\ngreeting ");
  puts_(&o, tri_text(m->greeting_apop, "apop", "plain"));
  puts_(&o, "\nearly-flight ");
  puts_(&o, tri_text(m->early_flight, "yes", "no"));
  puts_(&o, "\nflight-listing ");
  puts_(&o, tri_text(m->flight_listing, "yes", "no"));
  puts_(&o, "\n");
  if (m->has_tls) {
    puts_(&o, "tls-key ");
    put_hex(&o, m->tls_key, sizeof m->tls_key);
    snprintf(num, sizeof num, "\ntls-expires %" PRId64 "\n",
             (int64_t)(m->tls_expires < 0 ? 0 : m->tls_expires));
    puts_(&o, num);
    puts_(&o, "tls-session ");
    put_hex(&o, m->tls_session, m->tls_len);
    puts_(&o, "\n");
  }
  puts_(&o, "end\n");
  if (o.err) {
    if (o.p) {
      explicit_bzero(o.p, o.cap);
      free(o.p);
    }
    return o.err;
  }
  *buf_r = o.p;
  *len_r = o.len;
  return 0;
}

/* ---- the store */

static int make_name(const char *base, const char *suffix, char *out, size_t cap) {
  int n = snprintf(out, cap, "%s" SRVMEM_SUFFIX "%s", base, suffix);
  return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* The journal's rules for a file that holds state, plus: nobody else may
 * read it (it holds TLS secrets). */
static int check_fd(int fd, const char *name, char *errbuf, size_t errlen) {
  struct stat sb;

  if (fstat(fd, &sb) != 0)
    return p3_error(errbuf, errlen, -errno, "cannot stat %s: %s", name, strerror(errno));
  if (!S_ISREG(sb.st_mode))
    return p3_error(errbuf, errlen, P3_EUNSAFE, "refusing %s: not a regular file", name);
  if (sb.st_nlink != 1)
    return p3_error(errbuf, errlen, P3_EUNSAFE, "refusing %s: it has %lu hard links", name,
                    (unsigned long)sb.st_nlink);
  if (sb.st_uid != geteuid())
    return p3_error(errbuf, errlen, P3_EUNSAFE,
                    "refusing %s: it belongs to uid %lu, not to uid %lu", name,
                    (unsigned long)sb.st_uid, (unsigned long)geteuid());
  if ((sb.st_mode & 077) != 0)
    return p3_error(errbuf, errlen, P3_EUNSAFE,
                    "refusing %s: group or others may access it (mode %04o)", name,
                    (unsigned)(sb.st_mode & 07777));
  if (sb.st_size > SRVMEM_FILE_MAX)
    return p3_error(errbuf, errlen, -EFBIG, "ignoring %s: too large", name);
  return 0;
}

int srvmem_load(int dir_fd, const char *base, struct srvmem *m, char *errbuf, size_t errlen) {
  char name[PATH_MAX];
  struct stat sb;
  int fd, err;

  srvmem_init(m);
  if ((err = make_name(base, "", name, sizeof name)) < 0)
    return p3_error(errbuf, errlen, err, "%s: name too long", base);
  fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    err = -errno;
    if (err == -ENOENT)
      return 0;
    if (fstatat(dir_fd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode))
      return p3_error(errbuf, errlen, P3_EUNSAFE, "%s is a symbolic link; refusing to follow it",
                      name);
    return p3_error(errbuf, errlen, err, "cannot open %s: %s", name, strerror(-err));
  }
  if ((err = check_fd(fd, name, errbuf, errlen)) < 0) {
    close(fd);
    return err;
  }
  char *buf = malloc(SRVMEM_FILE_MAX + 1);
  size_t len = 0;
  if (buf == NULL) {
    close(fd);
    return p3_error(errbuf, errlen, -ENOMEM, "out of memory");
  }
  for (;;) {
    ssize_t r = read(fd, buf + len, SRVMEM_FILE_MAX + 1 - len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      err = p3_error(errbuf, errlen, -errno, "cannot read %s: %s", name, strerror(errno));
      break;
    }
    if (r == 0)
      break;
    len += (size_t)r;
    if (len > SRVMEM_FILE_MAX)
      break;
  }
  close(fd);
  if (err == 0 && len <= SRVMEM_FILE_MAX)
    (void)srvmem_parse(buf, len, m); /* malformed: cold, nothing else */
  explicit_bzero(buf, len);
  free(buf);
  return err;
}

int srvmem_save(int dir_fd, const char *base, const struct srvmem *m, char *errbuf, size_t errlen) {
  char name[PATH_MAX], tmp[PATH_MAX];
  char *text;
  size_t len, off = 0;
  int fd, err;

  if ((err = make_name(base, "", name, sizeof name)) < 0 ||
      (err = make_name(base, ".tmp", tmp, sizeof tmp)) < 0)
    return p3_error(errbuf, errlen, err, "%s: name too long", base);
  if ((err = srvmem_format(m, &text, &len)) < 0)
    return p3_error(errbuf, errlen, err, "cannot format %s: %s", name, strerror(-err));
  /* A temporary file left by a crash is ours (we hold the journal's lock);
   * unlinkat removes a symlink itself, never its target. */
  unlinkat(dir_fd, tmp, 0);
  fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    err = p3_error(errbuf, errlen, -errno, "cannot create %s: %s", tmp, strerror(errno));
    goto out;
  }
  if (fchmod(fd, 0600) != 0)
    err = p3_error(errbuf, errlen, -errno, "cannot chmod %s: %s", tmp, strerror(errno));
  while (err == 0 && off < len) {
    ssize_t w = write(fd, text + off, len - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      err = p3_error(errbuf, errlen, w < 0 ? -errno : -EIO, "cannot write %s: %s", tmp,
                     strerror(w < 0 ? errno : EIO));
    else
      off += (size_t)w;
  }
  if (err == 0 && fsync(fd) != 0)
    err = p3_error(errbuf, errlen, -errno, "cannot write %s: %s", tmp, strerror(errno));
  if (close(fd) != 0 && err == 0)
    err = p3_error(errbuf, errlen, -errno, "cannot write %s: %s", tmp, strerror(errno));
  if (err == 0 && renameat(dir_fd, tmp, dir_fd, name) != 0)
    err = p3_error(errbuf, errlen, -errno, "cannot rename %s: %s", tmp, strerror(errno));
  if (err != 0)
    unlinkat(dir_fd, tmp, 0);
out:
  explicit_bzero(text, len);
  free(text);
  return err;
}

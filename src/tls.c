/* TLS client as a byte transform over memory buffers (mbedTLS 2.28; builds
 * with 3.x).  This is the only file that includes mbedTLS headers.
 *
 * The bio callbacks read from `in` (returning WANT_READ when it is empty, as
 * knot-resolver's GnuTLS pull callback says "again") and append to `out`.
 * Verification runs with authmode OPTIONAL so the handshake always finishes
 * and we can judge the result ourselves and say clearly what was wrong. */
#include "config.h"

#include "tls.h"

#include "errors.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mbedtls/version.h"

#include "mbedtls/ctr_drbg.h"
#include "mbedtls/entropy.h"
#include "mbedtls/error.h"
#include "mbedtls/oid.h"
#include "mbedtls/sha256.h"
#include "mbedtls/ssl.h"
#include "mbedtls/ssl_ciphersuites.h"
#include "mbedtls/x509_crt.h"

#if MBEDTLS_VERSION_NUMBER >= 0x03000000 && defined(MBEDTLS_PSA_CRYPTO_C)
#include "psa/crypto.h"
#endif
#if MBEDTLS_VERSION_NUMBER < 0x03000000
/* 2.x: the handshake's `resume' flag, the only way to tell an abbreviated
 * handshake from a full one (3.x: see tls_handshake). */
#include "mbedtls/ssl_internal.h"
#endif
#include <sys/stat.h>
#include <sys/types.h>

#define TLS_DEFAULT_CA_FILE "/etc/ssl/certs/ca-certificates.crt"

/* Hard bounds.  The transport stops reading at ~64 KiB unconsumed, so the
 * input cap is only reached by a misbehaving caller; the output is drained
 * after every write, so 16 MiB means something is badly wrong. */
#define TLS_MAX_INPUT (1024 * 1024)
#define TLS_MAX_OUTPUT (16 * 1024 * 1024)

enum tls_state { TLS_HANDSHAKING, TLS_OPEN, TLS_FAILED };

/* What every connection to servers checked against one CA file shares: the
 * parsed CA chain, a seeded DRBG, the suite list and the mbedTLS
 * configuration that points at them.  Immutable once built (the DRBG aside,
 * which tls_rng serialises), reference-counted, and found again through
 * tls_configs while any connection holds it. */
struct p3_tls_config {
  struct p3_tls_config *next; /* in tls_configs */
  unsigned refs;              /* under tls_configs_lock */
  char ca_file[256];          /* "" when no CA file is used (pins alone) */
  struct stat ca_st;          /* the CA file as it was parsed: a changed file is a new config */
  int have_ca;
  mbedtls_ssl_config conf;
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  pthread_mutex_t rng_lock;
  mbedtls_x509_crt ca;
  int *suites; /* zero-terminated; mbedtls_ssl_conf_ciphersuites keeps the pointer */
};

static pthread_mutex_t tls_configs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct p3_tls_config *tls_configs; /* every config with refs > 0 */

struct p3_tls {
  mbedtls_ssl_context ssl;
  struct p3_tls_config *cfg; /* one reference, dropped by tls_free */
  enum tls_state state;
  int offered; /* a saved session was set for resumption */
  int resumed; /* the handshake was abbreviated */
  int pin_count;
  uint8_t pins[P3_TLS_MAX_PINS][32];
  int report_only;  /* p3_tls_options.report_only: the verdict goes to tls_peer */
  int verdict;      /* tls_judge's result, kept for tls_peer */
  int pinned;       /* a pin matched */
  char reason[768]; /* tls_judge's sentence when verdict < 0 */
  char name[256];
  /* Ciphertext fed by the transport: bytes [in_off, in_len) are unconsumed. */
  unsigned char *in;
  size_t in_off, in_len, in_cap;
  /* Ciphertext lent by tls_feed_lend (read after `in`, never copied unless
   * tls_feed_end finds some left). */
  const unsigned char *lent;
  size_t lent_len;
  /* Ciphertext produced for the transport. */
  char *out;
  size_t out_len, out_cap;
};

/* Our own preference: AEAD with forward secrecy, ChaCha20 first (fast
 * without AES instructions), then AES-128-GCM, then AES-256-GCM. */
static const int tls_preferred_suites[] = {
#ifdef MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
#endif
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
};

/* mbedTLS's own words for code, e.g. "SSL - Processing of the ... (-0x7780)". */
static void tls_err_mbed(char *errbuf, size_t errlen, const char *what, int code) {
  char text[160];

  mbedtls_strerror(code, text, sizeof(text));
  p3_set_error(errbuf, errlen, "%s: %s (-0x%04x)", what, text, (unsigned)-code);
}

static int tls_sha256(const unsigned char *data, size_t len, uint8_t out[32]) {
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
  return mbedtls_sha256(data, len, out, 0);
#else
  return mbedtls_sha256_ret(data, len, out, 0);
#endif
}

/* ---- bio callbacks */

static int tls_bio_recv(void *ctx, unsigned char *buf, size_t len) {
  struct p3_tls *t = ctx;
  size_t avail = t->in_len - t->in_off;

  if (len > INT_MAX)
    len = INT_MAX;
  if (avail == 0) {
    /* Straight from the transport's read buffer: the one copy mbedTLS
     * needs (into its record buffer, where it decrypts in place). */
    if (t->lent_len == 0)
      return MBEDTLS_ERR_SSL_WANT_READ;
    if (len > t->lent_len)
      len = t->lent_len;
    memcpy(buf, t->lent, len);
    t->lent += len;
    t->lent_len -= len;
    return (int)len;
  }
  if (len > avail)
    len = avail;
  memcpy(buf, t->in + t->in_off, len);
  t->in_off += len;
  if (t->in_off == t->in_len)
    t->in_off = t->in_len = 0;
  return (int)len;
}

static int tls_bio_send(void *ctx, const unsigned char *buf, size_t len) {
  struct p3_tls *t = ctx;

  if (len > INT_MAX)
    len = INT_MAX;
  if (len > TLS_MAX_OUTPUT - t->out_len)
    return MBEDTLS_ERR_SSL_ALLOC_FAILED;
  if (t->out_len + len > t->out_cap) {
    size_t cap = t->out_cap ? t->out_cap : 4096;
    char *p;

    while (cap < t->out_len + len)
      cap *= 2;
    p = realloc(t->out, cap);
    if (p == NULL)
      return MBEDTLS_ERR_SSL_ALLOC_FAILED;
    t->out = p;
    t->out_cap = cap;
  }
  memcpy(t->out + t->out_len, buf, len);
  t->out_len += len;
  return (int)len;
}

/* ---- fingerprints */

static int tls_hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int tls_parse_fingerprint(const char *text, uint8_t out[32]) {
  uint8_t buf[32];
  const char *p = text;
  size_t i;

  if (text == NULL)
    return -EINVAL;
  if (strncasecmp(p, "sha256:", 7) == 0)
    p += 7;
  for (i = 0; i < sizeof(buf); i++) {
    int hi, lo;

    /* One optional colon between byte pairs, never before the first. */
    if (i > 0 && *p == ':')
      p++;
    hi = tls_hexval((unsigned char)p[0]);
    if (hi < 0)
      return -EINVAL;
    lo = tls_hexval((unsigned char)p[1]);
    if (lo < 0)
      return -EINVAL;
    buf[i] = (uint8_t)(hi << 4 | lo);
    p += 2;
  }
  if (*p != '\0')
    return -EINVAL;
  memcpy(out, buf, sizeof(buf));
  return 0;
}

/* "sha256:AB:CD:..." as `openssl x509 -noout -fingerprint -sha256` prints. */
static void tls_format_fingerprint(const uint8_t fp[32], char *buf, size_t len) {
  static const char hex[] = "0123456789ABCDEF";
  char text[7 + 32 * 3];
  size_t i, n = 0;

  memcpy(text, "sha256:", 7);
  n = 7;
  for (i = 0; i < 32; i++) {
    if (i > 0)
      text[n++] = ':';
    text[n++] = hex[fp[i] >> 4];
    text[n++] = hex[fp[i] & 15];
  }
  text[n] = '\0';
  snprintf(buf, len, "%s", text);
}

/* ---- setup */

static int tls_build_suites(struct p3_tls_config *t) {
  const int *defaults = mbedtls_ssl_list_ciphersuites();
  size_t ndef = 0, npref = sizeof(tls_preferred_suites) / sizeof(tls_preferred_suites[0]);
  size_t i, j, n = 0;

  while (defaults[ndef] != 0)
    ndef++;
  t->suites = calloc(npref + ndef + 1, sizeof(int));
  if (t->suites == NULL)
    return -ENOMEM;
  for (i = 0; i < npref; i++) {
    /* Skip suites this build of the library does not have. */
    if (mbedtls_ssl_ciphersuite_from_id(tls_preferred_suites[i]) != NULL)
      t->suites[n++] = tls_preferred_suites[i];
  }
  for (i = 0; i < ndef; i++) {
    int dup = 0;

    for (j = 0; j < n && !dup; j++)
      dup = t->suites[j] == defaults[i];
    if (!dup)
      t->suites[n++] = defaults[i];
  }
  t->suites[n] = 0;
  return 0;
}

static int tls_load_ca(struct p3_tls_config *t, const char *file, char *errbuf, size_t errlen) {
  int ret;

  errno = 0;
  ret = mbedtls_x509_crt_parse_file(&t->ca, file);
  if (ret == MBEDTLS_ERR_X509_FILE_IO_ERROR || ret == MBEDTLS_ERR_PK_FILE_IO_ERROR) {
    if (errno != 0)
      p3_set_error(errbuf, errlen, "cannot read CA file %s: %s", file, strerror(errno));
    else
      p3_set_error(errbuf, errlen, "cannot read CA file %s", file);
    return P3_ETLSCONF;
  }
  if (ret < 0) {
    char what[300];

    snprintf(what, sizeof(what), "cannot parse CA file %s", file);
    tls_err_mbed(errbuf, errlen, what, ret);
    return P3_ETLSCONF;
  }
  /* ret > 0 counts certificates that did not parse; a system bundle may
   * hold a few the library cannot read, which is fine as long as some did. */
  if (t->ca.version == 0) {
    p3_set_error(errbuf, errlen, "no usable certificate in CA file %s", file);
    return P3_ETLSCONF;
  }
  t->have_ca = 1;
  return 0;
}

/* The CA file a config for opts uses, or NULL (pins alone). */
static const char *tls_config_file(const struct p3_tls_options *opts) {
  /* The CA file is needed unless pins alone decide; an explicit ca_file is
   * loaded (and must be valid) even with pins. */
  if (opts->ca_file != NULL || opts->pin_count == 0)
    return opts->ca_file ? opts->ca_file : TLS_DEFAULT_CA_FILE;
  return NULL;
}

/* The DRBG is shared by every connection using the config: one at a time. */
static int tls_rng(void *arg, unsigned char *out, size_t len) {
  struct p3_tls_config *cfg = arg;
  int ret;

  pthread_mutex_lock(&cfg->rng_lock);
  ret = mbedtls_ctr_drbg_random(&cfg->drbg, out, len);
  pthread_mutex_unlock(&cfg->rng_lock);
  return ret;
}

static void tls_config_free(struct p3_tls_config *cfg) {
  mbedtls_ssl_config_free(&cfg->conf);
  mbedtls_ctr_drbg_free(&cfg->drbg);
  mbedtls_entropy_free(&cfg->entropy);
  mbedtls_x509_crt_free(&cfg->ca);
  pthread_mutex_destroy(&cfg->rng_lock);
  free(cfg->suites);
  free(cfg);
}

/* Parses the CA file, seeds a DRBG, fills the mbedTLS configuration: the
 * 10-30 ms that must not run on the loop thread. */
static int tls_config_build(const char *file, const struct stat *st, struct p3_tls_config **cfg_r,
                            char *errbuf, size_t errlen) {
  static const char pers[] = "pop3sync tls";
  struct p3_tls_config *cfg;
  int ret;

  *cfg_r = NULL;
#if MBEDTLS_VERSION_NUMBER >= 0x03000000 && defined(MBEDTLS_PSA_CRYPTO_C)
  /* 3.x uses PSA for TLS 1.3 and more; initialising twice is harmless. */
  if (psa_crypto_init() != PSA_SUCCESS) {
    p3_set_error(errbuf, errlen, "cannot initialise PSA crypto");
    return P3_ETLSCONF;
  }
#endif
  cfg = calloc(1, sizeof(*cfg));
  if (cfg == NULL)
    return -ENOMEM;
  mbedtls_ssl_config_init(&cfg->conf);
  mbedtls_entropy_init(&cfg->entropy);
  mbedtls_ctr_drbg_init(&cfg->drbg);
  mbedtls_x509_crt_init(&cfg->ca);
  pthread_mutex_init(&cfg->rng_lock, NULL);
  cfg->refs = 1;
  if (file != NULL) {
    snprintf(cfg->ca_file, sizeof(cfg->ca_file), "%s", file);
    if (st != NULL)
      cfg->ca_st = *st;
    ret = tls_load_ca(cfg, file, errbuf, errlen);
    if (ret < 0)
      goto fail;
  }

  ret = mbedtls_ctr_drbg_seed(&cfg->drbg, mbedtls_entropy_func, &cfg->entropy,
                              (const unsigned char *)pers, sizeof(pers) - 1);
  if (ret != 0) {
    tls_err_mbed(errbuf, errlen, "cannot seed the random generator", ret);
    ret = P3_ETLSCONF;
    goto fail;
  }

  ret = mbedtls_ssl_config_defaults(&cfg->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                    MBEDTLS_SSL_PRESET_DEFAULT);
  if (ret != 0) {
    tls_err_mbed(errbuf, errlen, "cannot set TLS defaults", ret);
    ret = P3_ETLSCONF;
    goto fail;
  }
#if MBEDTLS_VERSION_NUMBER >= 0x03020000
  mbedtls_ssl_conf_min_tls_version(&cfg->conf, MBEDTLS_SSL_VERSION_TLS1_2);
#else
  mbedtls_ssl_conf_min_version(&cfg->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                               MBEDTLS_SSL_MINOR_VERSION_3);
#endif
  /* OPTIONAL: the handshake completes and tls_verify() decides, so that
   * the error can say what was wrong (and so that pins can override). */
  mbedtls_ssl_conf_authmode(&cfg->conf, MBEDTLS_SSL_VERIFY_OPTIONAL);
  if (cfg->have_ca)
    mbedtls_ssl_conf_ca_chain(&cfg->conf, &cfg->ca, NULL);
  mbedtls_ssl_conf_rng(&cfg->conf, tls_rng, cfg);
  ret = tls_build_suites(cfg);
  if (ret < 0)
    goto fail;
  mbedtls_ssl_conf_ciphersuites(&cfg->conf, cfg->suites);
#if defined(MBEDTLS_SSL_SESSION_TICKETS)
  mbedtls_ssl_conf_session_tickets(&cfg->conf, MBEDTLS_SSL_SESSION_TICKETS_ENABLED);
#endif
  *cfg_r = cfg;
  return 0;

fail:
  tls_config_free(cfg);
  return ret;
}

static int tls_same_file(const struct stat *a, const struct stat *b) {
  return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
         a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* A live config for file (NULL: none) as it is now, with one more
 * reference; NULL when there is none.  Under tls_configs_lock. */
static struct p3_tls_config *tls_config_find(const char *file, const struct stat *st) {
  struct p3_tls_config *c;

  for (c = tls_configs; c != NULL; c = c->next) {
    if (file == NULL ? c->ca_file[0] != '\0' : strcmp(c->ca_file, file) != 0)
      continue;
    if (file != NULL && (st == NULL || !tls_same_file(&c->ca_st, st)))
      continue;
    c->refs++;
    return c;
  }
  return NULL;
}

int tls_config_get(const struct p3_tls_options *opts, struct p3_tls_config **cfg_r, char *errbuf,
                   size_t errlen) {
  const char *file = tls_config_file(opts);
  struct p3_tls_config *cfg, *other;
  struct stat st;
  int have_st = 0, ret;

  *cfg_r = NULL;
  if (file != NULL && strlen(file) >= sizeof(cfg->ca_file)) {
    p3_set_error(errbuf, errlen, "CA file name is too long: %.100s...", file);
    return P3_ETLSCONF;
  }
  /* A file that cannot be stat'ed is never shared: the build says why. */
  have_st = file != NULL && stat(file, &st) == 0;
  pthread_mutex_lock(&tls_configs_lock);
  cfg = file == NULL || have_st ? tls_config_find(file, have_st ? &st : NULL) : NULL;
  pthread_mutex_unlock(&tls_configs_lock);
  if (cfg != NULL) {
    *cfg_r = cfg;
    return 0;
  }
  ret = tls_config_build(file, have_st ? &st : NULL, &cfg, errbuf, errlen);
  if (ret < 0)
    return ret;
  if (file != NULL && !have_st) {
    *cfg_r = cfg; /* parsed, yet not stat'able: private to this caller */
    return 0;
  }
  pthread_mutex_lock(&tls_configs_lock);
  /* Built twice at once: keep the first, so that later callers share it. */
  other = tls_config_find(file, have_st ? &st : NULL);
  if (other == NULL) {
    cfg->next = tls_configs;
    tls_configs = cfg;
  }
  pthread_mutex_unlock(&tls_configs_lock);
  if (other != NULL) {
    tls_config_free(cfg);
    cfg = other;
  }
  *cfg_r = cfg;
  return 0;
}

void tls_config_put(struct p3_tls_config *cfg) {
  struct p3_tls_config **pp;
  int last;

  if (cfg == NULL)
    return;
  pthread_mutex_lock(&tls_configs_lock);
  last = --cfg->refs == 0;
  if (last) {
    for (pp = &tls_configs; *pp != NULL; pp = &(*pp)->next) {
      if (*pp == cfg) {
        *pp = cfg->next;
        break;
      }
    }
  }
  pthread_mutex_unlock(&tls_configs_lock);
  if (last)
    tls_config_free(cfg);
}

/* The options tls_new checks before any work. */
static int tls_check_options(const struct p3_tls_options *opts, char *errbuf, size_t errlen) {
  const char *name = opts->server_name;

  if (name != NULL && name[0] == '\0')
    name = NULL;
  if (opts->pin_count < 0 || opts->pin_count > P3_TLS_MAX_PINS) {
    p3_set_error(errbuf, errlen, "bad pin count %d", opts->pin_count);
    return P3_ETLSCONF;
  }
  if (name == NULL && opts->pin_count == 0 && !opts->report_only) {
    p3_set_error(errbuf, errlen, "no name to verify");
    return P3_ETLSCONF;
  }
  if (name != NULL && strlen(name) >= sizeof(((struct p3_tls *)NULL)->name)) {
    p3_set_error(errbuf, errlen, "server name is too long");
    return P3_ETLSCONF;
  }
  return 0;
}

int tls_new_from(struct p3_tls_config *cfg, const struct p3_tls_options *opts, struct p3_tls **t_r,
                 char *errbuf, size_t errlen) {
  const char *name = opts->server_name;
  struct p3_tls *t;
  int ret;

  *t_r = NULL;
  ret = tls_check_options(opts, errbuf, errlen);
  if (ret < 0)
    return ret;
  if (name != NULL && name[0] == '\0')
    name = NULL;
  t = calloc(1, sizeof(*t));
  if (t == NULL)
    return -ENOMEM;
  mbedtls_ssl_init(&t->ssl);
  pthread_mutex_lock(&tls_configs_lock);
  cfg->refs++;
  pthread_mutex_unlock(&tls_configs_lock);
  t->cfg = cfg;
  t->state = TLS_HANDSHAKING;
  t->pin_count = opts->pin_count;
  t->report_only = opts->report_only;
  if (opts->pin_count > 0)
    memcpy(t->pins, opts->pins, sizeof(t->pins[0]) * (size_t)opts->pin_count);
  if (name != NULL)
    snprintf(t->name, sizeof(t->name), "%s", name);

  ret = mbedtls_ssl_setup(&t->ssl, &cfg->conf);
  if (ret != 0) {
    tls_err_mbed(errbuf, errlen, "cannot set up TLS", ret);
    ret = ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? -ENOMEM : P3_ETLSCONF;
    goto fail;
  }
  /* With no name, say so explicitly: 3.6 refuses to verify a certificate
   * when the hostname was never set. */
  ret = mbedtls_ssl_set_hostname(&t->ssl, name);
  if (ret != 0) {
    tls_err_mbed(errbuf, errlen, "cannot set the server name", ret);
    ret = P3_ETLSCONF;
    goto fail;
  }
  mbedtls_ssl_set_bio(&t->ssl, t, tls_bio_send, tls_bio_recv, NULL);
  if (opts->resume != NULL && opts->resume_len > 0) {
    /* A session that does not load (another library build, a damaged
     * file) is simply not offered: the handshake is a full one. */
    mbedtls_ssl_session sess;

    mbedtls_ssl_session_init(&sess);
    if (mbedtls_ssl_session_load(&sess, opts->resume, opts->resume_len) == 0 &&
        mbedtls_ssl_set_session(&t->ssl, &sess) == 0)
      t->offered = 1;
    mbedtls_ssl_session_free(&sess); /* zeroises the master secret */
  }
  *t_r = t;
  return 0;

fail:
  tls_free(t);
  return ret;
}

int tls_new(const struct p3_tls_options *opts, struct p3_tls **t_r, char *errbuf, size_t errlen) {
  struct p3_tls_config *cfg;
  int ret;

  *t_r = NULL;
  ret = tls_check_options(opts, errbuf, errlen);
  if (ret < 0)
    return ret;
  ret = tls_config_get(opts, &cfg, errbuf, errlen);
  if (ret < 0)
    return ret;
  ret = tls_new_from(cfg, opts, t_r, errbuf, errlen);
  tls_config_put(cfg);
  return ret;
}

void tls_free(struct p3_tls *t) {
  if (t == NULL)
    return;
  mbedtls_ssl_free(&t->ssl);
  tls_config_put(t->cfg);
  free(t->in);
  free(t->out);
  free(t);
}

/* ---- buffers */

int tls_feed(struct p3_tls *t, const char *data, size_t len) {
  size_t pending = t->in_len - t->in_off;

  if (t->lent != NULL && t->lent_len > 0)
    return -EINVAL; /* tls_feed_end first: the order of bytes would break */
  if (len == 0)
    return 0;
  if (len > TLS_MAX_INPUT - pending)
    return -ENOBUFS;
  /* Compact first, so the buffer never grows past pending + len. */
  if (t->in_off > 0) {
    memmove(t->in, t->in + t->in_off, pending);
    t->in_off = 0;
    t->in_len = pending;
  }
  if (t->in_len + len > t->in_cap) {
    size_t cap = t->in_cap ? t->in_cap : 16384;
    unsigned char *p;

    while (cap < t->in_len + len)
      cap *= 2;
    p = realloc(t->in, cap);
    if (p == NULL)
      return -ENOMEM;
    t->in = p;
    t->in_cap = cap;
  }
  memcpy(t->in + t->in_len, data, len);
  t->in_len += len;
  return 0;
}

void tls_feed_lend(struct p3_tls *t, const char *data, size_t len) {
  t->lent = (const unsigned char *)data;
  t->lent_len = len;
}

int tls_feed_end(struct p3_tls *t) {
  const char *rest = (const char *)t->lent;
  size_t len = t->lent_len;

  t->lent = NULL;
  t->lent_len = 0;
  return len > 0 ? tls_feed(t, rest, len) : 0;
}

size_t tls_pending_input(const struct p3_tls *t) {
  return t->in_len - t->in_off + t->lent_len;
}

size_t tls_take_output(struct p3_tls *t, char **buf_r) {
  size_t len = t->out_len;

  *buf_r = NULL;
  if (len == 0)
    return 0;
  *buf_r = t->out;
  t->out = NULL;
  t->out_len = t->out_cap = 0;
  return len;
}

/* ---- verification */

/* Copies an untrusted certificate string, replacing anything unprintable. */
static size_t tls_put_name(char *dst, size_t cap, size_t n, const unsigned char *s, size_t len) {
  size_t i;

  for (i = 0; i < len && n + 1 < cap; i++)
    dst[n++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
  dst[n] = '\0';
  return n;
}

/* The names a certificate is for: its DNS subjectAltNames, else its CN. */
static void tls_cert_names(const mbedtls_x509_crt *crt, char *buf, size_t cap) {
  const mbedtls_x509_sequence *san;
  const mbedtls_x509_name *dn;
  size_t n = 0;
  int count = 0;

  buf[0] = '\0';
  if (crt == NULL)
    return;
  for (san = &crt->subject_alt_names; san != NULL && san->buf.p != NULL; san = san->next) {
    if ((san->buf.tag & MBEDTLS_ASN1_TAG_VALUE_MASK) != MBEDTLS_X509_SAN_DNS_NAME)
      continue;
    if (count == 3) {
      n = tls_put_name(buf, cap, n, (const unsigned char *)", ...", 5);
      return;
    }
    if (count++ > 0)
      n = tls_put_name(buf, cap, n, (const unsigned char *)", ", 2);
    n = tls_put_name(buf, cap, n, san->buf.p, san->buf.len);
  }
  if (count > 0)
    return;
  for (dn = &crt->subject; dn != NULL; dn = dn->next) {
    if (dn->oid.p != NULL && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &dn->oid) == 0) {
      tls_put_name(buf, cap, n, dn->val.p, dn->val.len);
      return;
    }
  }
}

/* Appends "; " and a sentence to msg. */
static void tls_add(char *msg, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void tls_add(char *msg, size_t cap, const char *fmt, ...) {
  size_t n = strlen(msg);
  va_list ap;

  if (n > 0 && n + 2 < cap) {
    memcpy(msg + n, "; ", 3);
    n += 2;
  }
  if (n + 1 >= cap)
    return;
  va_start(ap, fmt);
  vsnprintf(msg + n, cap - n, fmt, ap);
  va_end(ap);
}

/* One readable line for mbedTLS verification flags. */
static void tls_describe_flags(const struct p3_tls *t, const mbedtls_x509_crt *crt, uint32_t flags,
                               char *msg, size_t cap) {
  uint32_t known = 0;

  msg[0] = '\0';
  if (flags & MBEDTLS_X509_BADCERT_MISSING) {
    tls_add(msg, cap, "server sent no certificate");
    known |= MBEDTLS_X509_BADCERT_MISSING | MBEDTLS_X509_BADCERT_SKIP_VERIFY;
  }
  if (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH) {
    char names[200];

    tls_cert_names(crt, names, sizeof(names));
    if (names[0] != '\0')
      tls_add(msg, cap, "certificate is for %s, not %s", names, t->name);
    else
      tls_add(msg, cap, "certificate name does not match %s", t->name);
    known |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
  }
  if (flags & MBEDTLS_X509_BADCERT_EXPIRED) {
    if (crt != NULL)
      tls_add(msg, cap, "certificate has expired (valid until %04d-%02d-%02d)", crt->valid_to.year,
              crt->valid_to.mon, crt->valid_to.day);
    else
      tls_add(msg, cap, "certificate has expired");
    known |= MBEDTLS_X509_BADCERT_EXPIRED;
  }
  if (flags & MBEDTLS_X509_BADCERT_FUTURE) {
    tls_add(msg, cap, "certificate is not valid yet");
    known |= MBEDTLS_X509_BADCERT_FUTURE;
  }
  if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED) {
    if (t->cfg->have_ca)
      tls_add(msg, cap, "certificate is not trusted (no CA in %s signed it)", t->cfg->ca_file);
    else
      tls_add(msg, cap, "certificate is not trusted");
    known |= MBEDTLS_X509_BADCERT_NOT_TRUSTED;
  }
  if (flags & MBEDTLS_X509_BADCERT_REVOKED) {
    tls_add(msg, cap, "certificate has been revoked");
    known |= MBEDTLS_X509_BADCERT_REVOKED;
  }
  if (flags & (MBEDTLS_X509_BADCERT_KEY_USAGE | MBEDTLS_X509_BADCERT_EXT_KEY_USAGE |
               MBEDTLS_X509_BADCERT_NS_CERT_TYPE)) {
    tls_add(msg, cap, "certificate is not meant for a TLS server");
    known |= MBEDTLS_X509_BADCERT_KEY_USAGE | MBEDTLS_X509_BADCERT_EXT_KEY_USAGE |
             MBEDTLS_X509_BADCERT_NS_CERT_TYPE;
  }
  if (flags & MBEDTLS_X509_BADCERT_BAD_MD) {
    tls_add(msg, cap, "certificate is signed with an unacceptable hash");
    known |= MBEDTLS_X509_BADCERT_BAD_MD;
  }
  if (flags & MBEDTLS_X509_BADCERT_BAD_PK) {
    tls_add(msg, cap, "certificate is signed with an unacceptable algorithm");
    known |= MBEDTLS_X509_BADCERT_BAD_PK;
  }
  if (flags & MBEDTLS_X509_BADCERT_BAD_KEY) {
    tls_add(msg, cap, "certificate key is too weak");
    known |= MBEDTLS_X509_BADCERT_BAD_KEY;
  }
  if (flags & ~known) {
    /* Whatever is left, in the library's words: first line, no "! " prefix. */
    char info[256], *nl;

    if (mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags & ~known) > 0) {
      nl = strchr(info, '\n');
      if (nl != NULL)
        *nl = '\0';
      tls_add(msg, cap, "%s", info);
    } else {
      tls_add(msg, cap, "certificate verification failed (flags 0x%x)", (unsigned)(flags & ~known));
    }
  }
}

/* "sha256:" and 64 hex digits without colons: what --tls-fingerprint and
 * tls_fingerprint take, ready to paste. */
static void tls_format_pin(const uint8_t fp[32], char *buf, size_t len) {
  static const char hex[] = "0123456789abcdef";
  char text[7 + 64 + 1];
  size_t i;

  memcpy(text, "sha256:", 7);
  for (i = 0; i < 32; i++) {
    text[7 + 2 * i] = hex[fp[i] >> 4];
    text[7 + 2 * i + 1] = hex[fp[i] & 15];
  }
  text[7 + 64] = '\0';
  snprintf(buf, len, "%s", text);
}

static void tls_format_time(const mbedtls_x509_time *tm, char *buf, size_t len) {
  snprintf(buf, len, "%04d-%02d-%02d %02d:%02d:%02d UTC", tm->year, tm->mon, tm->day, tm->hour,
           tm->min, tm->sec);
}

/* Who the certificate says it is: subject, issuer, validity, fingerprints
 * (the certificate fields of *p).  Returns 0, or -1 when there is no
 * certificate or it cannot be hashed (the fields are then empty). */
static int tls_cert_summary(const mbedtls_x509_crt *crt, struct p3_tls_peer *p) {
  uint8_t fp[32];

  p->have_cert = 0;
  p->subject[0] = p->issuer[0] = p->valid_from[0] = p->valid_to[0] = '\0';
  p->fingerprint[0] = p->pin[0] = '\0';
  if (crt == NULL || crt->raw.p == NULL || tls_sha256(crt->raw.p, crt->raw.len, fp) != 0)
    return -1;
  /* mbedtls_x509_dn_gets writes '?' for anything unprintable. */
  if (mbedtls_x509_dn_gets(p->subject, sizeof(p->subject), &crt->subject) < 0)
    snprintf(p->subject, sizeof(p->subject), "(too long to show)");
  if (mbedtls_x509_dn_gets(p->issuer, sizeof(p->issuer), &crt->issuer) < 0)
    snprintf(p->issuer, sizeof(p->issuer), "(too long to show)");
  tls_format_time(&crt->valid_from, p->valid_from, sizeof(p->valid_from));
  tls_format_time(&crt->valid_to, p->valid_to, sizeof(p->valid_to));
  tls_format_fingerprint(fp, p->fingerprint, sizeof(p->fingerprint));
  tls_format_pin(fp, p->pin, sizeof(p->pin));
  p->have_cert = 1;
  return 0;
}

/* Appends to msg who the certificate says it is (subject, issuer, SHA-256
 * fingerprint) and, when no CA vouches for it, the two ways to trust it, so
 * that the error itself says what to do next. */
static void tls_describe_cert(const mbedtls_x509_crt *crt, uint32_t flags, char *msg, size_t cap) {
  struct p3_tls_peer p;

  if (tls_cert_summary(crt, &p) != 0)
    return;
  tls_add(msg, cap, "certificate subject `%s', issuer `%s', fingerprint %s", p.subject, p.issuer,
          p.pin);
  if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED)
    tls_add(msg, cap,
            "to trust it, give --ca-file FILE (ca_file) holding the CA that signed it, or pin "
            "this certificate with --tls-fingerprint %s (tls_fingerprint)",
            p.pin);
}

/* The verdict on the peer's certificate: 0, or P3_ECERT / P3_EPIN with
 * errbuf saying why. */
static int tls_judge(struct p3_tls *t, char *errbuf, size_t errlen) {
  const mbedtls_x509_crt *crt = mbedtls_ssl_get_peer_cert(&t->ssl);
  uint32_t flags;

  if (t->pin_count > 0) {
    uint8_t fp[32];
    char text[7 + 32 * 3];
    int i;

    if (crt == NULL || crt->raw.p == NULL) {
      p3_set_error(errbuf, errlen, "server sent no certificate");
      return P3_EPIN;
    }
    if (tls_sha256(crt->raw.p, crt->raw.len, fp) != 0) {
      p3_set_error(errbuf, errlen, "cannot hash the server certificate");
      return P3_EPIN;
    }
    for (i = 0; i < t->pin_count; i++) {
      if (memcmp(fp, t->pins[i], sizeof(fp)) == 0) {
        t->pinned = 1;
        return 0; /* a pin replaces the CA and name checks */
      }
    }
    tls_format_fingerprint(fp, text, sizeof(text));
    p3_set_error(errbuf, errlen, "server certificate is %s", text);
    return P3_EPIN;
  }

  flags = mbedtls_ssl_get_verify_result(&t->ssl);
  if (flags == 0)
    return 0;
  if (errbuf != NULL && errlen > 0) {
    tls_describe_flags(t, crt, flags, errbuf, errlen);
    /* tls_peer reports the certificate itself. */
    if (!t->report_only)
      tls_describe_cert(crt, flags, errbuf, errlen);
  }
  return P3_ECERT;
}

/* Judges the certificate; with report_only the verdict is kept for
 * tls_peer and the handshake goes on. */
static int tls_verify(struct p3_tls *t, char *errbuf, size_t errlen) {
  if (!t->report_only)
    return tls_judge(t, errbuf, errlen);
  t->reason[0] = '\0';
  t->verdict = tls_judge(t, t->reason, sizeof(t->reason));
  return 0;
}

/* ---- the transform */

int tls_handshake(struct p3_tls *t, char *errbuf, size_t errlen) {
  int ret;

  if (t->state == TLS_OPEN)
    return 1;
  if (t->state == TLS_FAILED) {
    p3_set_error(errbuf, errlen, "TLS session already failed");
    return P3_ETLS;
  }
#if MBEDTLS_VERSION_NUMBER < 0x03000000
  /* mbedtls_ssl_handshake's own loop, reading the resume flag after each
   * step: set by mbedtls_ssl_set_session, cleared when the ServerHello
   * does not resume; the handshake structure is gone once it is over. */
  ret = 0;
  while (t->ssl.state != MBEDTLS_SSL_HANDSHAKE_OVER) {
    ret = mbedtls_ssl_handshake_step(&t->ssl);
    if (t->ssl.handshake != NULL)
      t->resumed = t->offered && t->ssl.handshake->resume != 0;
    if (ret != 0)
      break;
  }
#else
  /* 3.x hides the flag: never claim a resumption we cannot see. */
  ret = mbedtls_ssl_handshake(&t->ssl);
#endif
  if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
    return 0;
  if (ret != 0) {
    t->state = TLS_FAILED;
    tls_err_mbed(errbuf, errlen, "handshake", ret);
    /* What is not a TLS record at all is most likely a plaintext POP3
     * greeting: ssl: to port 110. */
    if (ret == MBEDTLS_ERR_SSL_INVALID_RECORD && errbuf != NULL)
      tls_add(errbuf, errlen,
              "the server does not seem to speak TLS on this port: if it is a plaintext POP3 "
              "port (110), use starttls: or tcp: instead of ssl:");
    return P3_ETLS;
  }
  ret = tls_verify(t, errbuf, errlen);
  if (ret < 0) {
    t->state = TLS_FAILED;
    /* Tell the server why we hang up; the transport may send it or not. */
    mbedtls_ssl_send_alert_message(&t->ssl, MBEDTLS_SSL_ALERT_LEVEL_FATAL,
                                   MBEDTLS_SSL_ALERT_MSG_BAD_CERT);
    return ret;
  }
  t->state = TLS_OPEN;
  return 1;
}

int tls_read(struct p3_tls *t, char *buf, size_t len, char *errbuf, size_t errlen) {
  int ret, empty = 0;

  if (t->state != TLS_OPEN) {
    p3_set_error(errbuf, errlen, "TLS session is not open");
    return P3_ETLS;
  }
  if (len == 0)
    return 0;
  if (len > INT_MAX)
    len = INT_MAX;
  for (;;) {
    ret = mbedtls_ssl_read(&t->ssl, (unsigned char *)buf, len);
    if (ret > 0)
      return ret;
    if (ret == 0) {
      /* An empty record (some stacks send them): try the rest of the input.
       * mbedTLS itself refuses a long run of them; the count is our bound. */
      if (tls_pending_input(t) > 0 && ++empty < 16)
        continue;
      return 0;
    }
    if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
      return 0;
#ifdef MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET
    if (ret == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
      continue; /* TLS 1.3 (3.x): not data, carry on */
#endif
    if (ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
      return P3_EEOF;
    t->state = TLS_FAILED;
    tls_err_mbed(errbuf, errlen, "read", ret);
    return P3_ETLS;
  }
}

int tls_write(struct p3_tls *t, const char *data, size_t len, char *errbuf, size_t errlen) {
  const unsigned char *p = (const unsigned char *)data;

  if (t->state != TLS_OPEN) {
    p3_set_error(errbuf, errlen, "TLS session is not open");
    return P3_ETLS;
  }
  while (len > 0) {
    int ret = mbedtls_ssl_write(&t->ssl, p, len);

    if (ret <= 0) {
      /* The output is memory and never says "again", so this is final. */
      t->state = TLS_FAILED;
      tls_err_mbed(errbuf, errlen, "write", ret);
      return P3_ETLS;
    }
    p += ret;
    len -= (size_t)ret;
  }
  return 0;
}

void tls_close_notify(struct p3_tls *t) {
  if (t->state == TLS_OPEN)
    mbedtls_ssl_close_notify(&t->ssl);
}

const char *tls_ca_path(const struct p3_tls_options *opts) {
  if (opts->ca_file != NULL)
    return opts->ca_file;
  return opts->pin_count == 0 ? TLS_DEFAULT_CA_FILE : NULL;
}

static int tls_cmp_pin(const void *a, const void *b) {
  return memcmp(a, b, 32);
}

void tls_session_key(const struct p3_tls_options *opts, const char *tcp_host, unsigned port,
                     int64_t ca_mtime_ns, uint8_t out[32]) {
  uint8_t pins[P3_TLS_MAX_PINS][32];
  int npins = opts->pin_count > 0 && opts->pin_count <= P3_TLS_MAX_PINS ? opts->pin_count : 0;
  const char *ca = tls_ca_path(opts);
  char head[64];
  size_t n = 0, cap = 0;
  unsigned char *buf;
  int len;

  memcpy(pins, opts->pins, sizeof(pins[0]) * (size_t)npins);
  qsort(pins, (size_t)npins, sizeof(pins[0]), tls_cmp_pin);
  len = snprintf(head, sizeof(head), "pop3sync-tls-key 1\n%u\n%lld\n%d\n", port,
                 (long long)ca_mtime_ns, npins);
  /* Length-prefixed strings: no two settings hash the same bytes. */
  cap = (size_t)len + 3 * 12 + strlen(tcp_host ? tcp_host : "") +
        strlen(opts->server_name ? opts->server_name : "") + strlen(ca ? ca : "") +
        sizeof(pins[0]) * (size_t)npins;
  buf = malloc(cap);
  if (buf == NULL) {
    /* A key nothing can match: the session is simply not resumed. */
    memset(out, 0xff, 32);
    return;
  }
  memcpy(buf, head, (size_t)len);
  n = (size_t)len;
  {
    const char *parts[3] = {tcp_host ? tcp_host : "", opts->server_name ? opts->server_name : "",
                            ca ? ca : ""};
    for (int i = 0; i < 3; i++) {
      size_t pl = strlen(parts[i]);
      n += (size_t)snprintf((char *)buf + n, 12, "%zu:", pl % 100000000);
      memcpy(buf + n, parts[i], pl);
      n += pl;
    }
  }
  memcpy(buf + n, pins, sizeof(pins[0]) * (size_t)npins);
  n += sizeof(pins[0]) * (size_t)npins;
  if (tls_sha256(buf, n, out) != 0)
    memset(out, 0xff, 32);
  free(buf);
}

int tls_save_session(struct p3_tls *t, unsigned char *buf, size_t cap, size_t *len_r,
                     uint32_t *lifetime_s_r) {
  mbedtls_ssl_session sess;
  size_t olen = 0;
  int ret;

  *len_r = 0;
  *lifetime_s_r = 0;
  if (t->state != TLS_OPEN)
    return P3_ETLS;
  mbedtls_ssl_session_init(&sess);
  ret = mbedtls_ssl_get_session(&t->ssl, &sess);
  if (ret != 0) {
    mbedtls_ssl_session_free(&sess);
    return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? -ENOMEM : P3_ETLS;
  }
#if MBEDTLS_VERSION_NUMBER < 0x03000000
  {
    int has_ticket = 0;
#if defined(MBEDTLS_SSL_SESSION_TICKETS) && defined(MBEDTLS_SSL_CLI_C)
    has_ticket = sess.ticket != NULL && sess.ticket_len > 0;
    if (has_ticket)
      *lifetime_s_r = sess.ticket_lifetime;
#endif
    if (!has_ticket && sess.id_len == 0) {
      mbedtls_ssl_session_free(&sess);
      return -ENOENT;
    }
  }
#endif
  ret = mbedtls_ssl_session_save(&sess, buf, cap, &olen);
  mbedtls_ssl_session_free(&sess);
  if (ret == MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL)
    return -ENOBUFS;
  if (ret != 0)
    return P3_ETLS;
  *len_r = olen;
  return 0;
}

int tls_session_offered(const struct p3_tls *t) {
  return t->offered;
}

int tls_resumed(const struct p3_tls *t) {
  return t->state == TLS_OPEN && t->resumed;
}

int tls_peer(const struct p3_tls *t, struct p3_tls_peer *peer_r) {
  memset(peer_r, 0, sizeof(*peer_r));
  if (t->state != TLS_OPEN)
    return P3_ETLS;
  peer_r->verdict = t->verdict;
  peer_r->pinned = t->pinned;
  snprintf(peer_r->reason, sizeof(peer_r->reason), "%s", t->verdict < 0 ? t->reason : "");
  tls_cert_summary(mbedtls_ssl_get_peer_cert(&t->ssl), peer_r);
  return 0;
}

const char *tls_version(const struct p3_tls *t) {
  const char *v = mbedtls_ssl_get_version(&t->ssl);

  return v != NULL ? v : "unknown";
}

const char *tls_ciphersuite(const struct p3_tls *t) {
  const char *s = mbedtls_ssl_get_ciphersuite(&t->ssl);

  return s != NULL ? s : "none";
}

#include "config.h"

#include "sasl.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/base64.h>
#include <mbedtls/md5.h>
#include <mbedtls/version.h>

#include "errors.h"

/* mbedTLS 3 dropped the _ret suffixes of 2.x (where the suffixless MD5
 * functions are deprecated and return void). */
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#define md5_starts mbedtls_md5_starts
#define md5_update mbedtls_md5_update
#define md5_finish mbedtls_md5_finish
#else
#define md5_starts mbedtls_md5_starts_ret
#define md5_update mbedtls_md5_update_ret
#define md5_finish mbedtls_md5_finish_ret
#endif

void sasl_wipe(void *p, size_t n) {
  if (p != NULL && n > 0)
    explicit_bzero(p, n);
}

void sasl_free_secret(char *p) {
  if (p == NULL)
    return;
  sasl_wipe(p, strlen(p));
  free(p);
}

/* ---- base64 */

int sasl_b64_encode(const void *in, size_t inlen, char **out_r, size_t *outlen_r) {
  *out_r = NULL;
  *outlen_r = 0;
  if (inlen > (SIZE_MAX - 8) / 4 * 3)
    return -ENOMEM;
  size_t cap = (inlen + 2) / 3 * 4 + 1, olen = 0;
  char *out = malloc(cap);
  if (out == NULL)
    return -ENOMEM;
  if (mbedtls_base64_encode((unsigned char *)out, cap, &olen, in, inlen) != 0) {
    /* Cannot happen with cap computed as above. */
    sasl_wipe(out, cap);
    free(out);
    return -ENOMEM;
  }
  out[olen] = '\0';
  *out_r = out;
  *outlen_r = olen;
  return 0;
}

static int b64_char(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

/* Strict RFC 4648 form: whole quads, '=' only as padding at the end.
 * mbedTLS is more lenient (it skips line breaks and blanks before them);
 * a challenge is one line, so anything else is malformed. */
static int b64_valid(const char *in, size_t len) {
  if (len % 4 != 0)
    return 0;
  size_t pad = 0;
  if (len >= 1 && in[len - 1] == '=')
    pad++;
  if (pad && len >= 2 && in[len - 2] == '=')
    pad++;
  for (size_t i = 0; i < len - pad; i++)
    if (!b64_char((unsigned char)in[i]))
      return 0;
  return 1;
}

int sasl_b64_decode(const char *in, size_t inlen, char **out_r, size_t *outlen_r) {
  *out_r = NULL;
  *outlen_r = 0;
  if (!b64_valid(in, inlen))
    return P3_EPROTO;
  size_t cap = inlen / 4 * 3 + 1, olen = 0;
  char *out = malloc(cap);
  if (out == NULL)
    return -ENOMEM;
  if (inlen > 0 && mbedtls_base64_decode((unsigned char *)out, cap, &olen,
                                         (const unsigned char *)in, inlen) != 0) {
    sasl_wipe(out, cap);
    free(out);
    return P3_EPROTO;
  }
  out[olen] = '\0';
  *out_r = out;
  *outlen_r = olen;
  return 0;
}

/* ---- client responses */

/* Encodes raw[0..len) and wipes raw (which the caller then frees). */
static int encode_wipe(char *raw, size_t len, char **b64_r, size_t *len_r) {
  int err = sasl_b64_encode(raw, len, b64_r, len_r);
  sasl_wipe(raw, len);
  return err;
}

/* 1 when s holds a control byte (0x00-0x1f, 0x7f): it would end or smuggle
 * a field into the OAuth responses. */
static int has_ctl(const char *s) {
  for (; s && *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f)
      return 1;
  return 0;
}

int sasl_plain(const char *authcid, const char *password, char **b64_r, size_t *len_r) {
  size_t ul = strlen(authcid), pl = strlen(password);
  *b64_r = NULL;
  *len_r = 0;
  if (ul > SIZE_MAX / 2 || pl > SIZE_MAX / 2 - 2)
    return -ENOMEM;
  size_t n = 2 + ul + pl;
  char *raw = malloc(n);
  if (raw == NULL)
    return -ENOMEM;
  raw[0] = '\0';
  memcpy(raw + 1, authcid, ul);
  raw[1 + ul] = '\0';
  memcpy(raw + 2 + ul, password, pl);
  int err = encode_wipe(raw, n, b64_r, len_r);
  free(raw);
  return err;
}

int sasl_login_step(const char *text, char **b64_r, size_t *len_r) {
  return sasl_b64_encode(text, strlen(text), b64_r, len_r);
}

/* A growable raw buffer for the OAuth responses: appends never fail once
 * the size is reserved up front. */
struct raw {
  char *p;
  size_t len;
};

static void raw_put(struct raw *r, const char *s, size_t n) {
  memcpy(r->p + r->len, s, n);
  r->len += n;
}

static void raw_puts(struct raw *r, const char *s) {
  raw_put(r, s, strlen(s));
}

int sasl_xoauth2(const char *user, const char *token, char **b64_r, size_t *len_r) {
  *b64_r = NULL;
  *len_r = 0;
  if (has_ctl(user) || has_ctl(token))
    return P3_EUSAGE;
  size_t ul = strlen(user), tl = strlen(token);
  if (ul > SIZE_MAX / 4 || tl > SIZE_MAX / 4)
    return -ENOMEM;
  struct raw r = {malloc(ul + tl + 32), 0};
  if (r.p == NULL)
    return -ENOMEM;
  raw_puts(&r, "user=");
  raw_put(&r, user, ul);
  raw_puts(&r, "\001auth=Bearer ");
  raw_put(&r, token, tl);
  raw_puts(&r, "\001\001");
  int err = encode_wipe(r.p, r.len, b64_r, len_r);
  free(r.p);
  return err;
}

int sasl_oauthbearer(const char *user, const char *host, unsigned port, const char *token,
                     char **b64_r, size_t *len_r) {
  *b64_r = NULL;
  *len_r = 0;
  if (host == NULL)
    host = "";
  if (has_ctl(user) || has_ctl(token) || has_ctl(host))
    return P3_EUSAGE;
  size_t ul = strlen(user), tl = strlen(token), hl = strlen(host);
  if (ul > SIZE_MAX / 8 || tl > SIZE_MAX / 8 || hl > SIZE_MAX / 8)
    return -ENOMEM;
  /* saslname may triple each byte of the user name. */
  struct raw r = {malloc(3 * ul + tl + hl + 64), 0};
  if (r.p == NULL)
    return -ENOMEM;
  raw_puts(&r, "n,a=");
  for (size_t i = 0; i < ul; i++) {
    if (user[i] == ',')
      raw_puts(&r, "=2C");
    else if (user[i] == '=')
      raw_puts(&r, "=3D");
    else
      raw_put(&r, user + i, 1);
  }
  raw_puts(&r, ",");
  if (hl) {
    raw_puts(&r, "\001host=");
    raw_put(&r, host, hl);
  }
  if (port) {
    char num[16];
    int n = snprintf(num, sizeof num, "\001port=%u", port);
    raw_put(&r, num, (size_t)n);
  }
  raw_puts(&r, "\001auth=Bearer ");
  raw_put(&r, token, tl);
  raw_puts(&r, "\001\001");
  int err = encode_wipe(r.p, r.len, b64_r, len_r);
  free(r.p);
  return err;
}

/* ---- APOP */

static int ts_char(unsigned char c) {
  return c > 0x20 && c < 0x7f && c != '<' && c != '>';
}

int sasl_apop_timestamp(const char *text, size_t len, const char **ts_r, size_t *tslen_r) {
  for (size_t i = 0; i < len; i++) {
    if (text[i] != '<')
      continue;
    size_t j = i + 1;
    int at = 0;
    while (j < len && ts_char((unsigned char)text[j])) {
      at |= text[j] == '@';
      j++;
    }
    /* j - i + 1: the length with both brackets. */
    if (j < len && text[j] == '>' && at && j > i + 1 && j - i + 1 <= SASL_APOP_TS_MAX) {
      *ts_r = text + i;
      *tslen_r = j - i + 1;
      return 1;
    }
  }
  *ts_r = NULL;
  *tslen_r = 0;
  return 0;
}

int sasl_apop_digest(const char *ts, size_t tslen, const char *secret, char hex_r[33]) {
  hex_r[0] = '\0';
#if defined(MBEDTLS_MD5_C)
  static const char hexdig[] = "0123456789abcdef";
  unsigned char md[16];
  mbedtls_md5_context ctx;
  int err = 0;
  mbedtls_md5_init(&ctx);
  if (md5_starts(&ctx) != 0 || md5_update(&ctx, (const unsigned char *)ts, tslen) != 0 ||
      md5_update(&ctx, (const unsigned char *)secret, strlen(secret)) != 0 ||
      md5_finish(&ctx, md) != 0)
    err = P3_EUSAGE;
  mbedtls_md5_free(&ctx); /* zeroizes the context */
  if (err == 0) {
    for (int i = 0; i < 16; i++) {
      hex_r[2 * i] = hexdig[md[i] >> 4];
      hex_r[2 * i + 1] = hexdig[md[i] & 15];
    }
    hex_r[32] = '\0';
  }
  sasl_wipe(md, sizeof md);
  return err;
#else
  (void)ts;
  (void)tslen;
  (void)secret;
  return P3_EUSAGE;
#endif
}

/* ---- server challenges */

static int is_blank(char c) {
  return c == ' ' || c == '\t';
}

int sasl_parse_challenge(const char *line, size_t len, char **data_r, size_t *datalen_r) {
  *data_r = NULL;
  *datalen_r = 0;
  if (len == 0 || line[0] != '+')
    return 0;
  if (len > 1 && line[1] != ' ')
    return 0; /* "+OK" and anything else that is not "+ " */
  size_t b = len > 1 ? 2 : 1, e = len;
  while (b < e && is_blank(line[b]))
    b++;
  while (e > b && is_blank(line[e - 1]))
    e--;
  int err = sasl_b64_decode(line + b, e - b, data_r, datalen_r);
  if (err)
    return err;
  return 1;
}

void sasl_oauth_error(const char *json, size_t len, char *buf, size_t buflen) {
  static const char key[] = "\"status\"";
  size_t o = 0;
  buf[0] = '\0';
  for (size_t i = 0; i + sizeof key - 1 <= len; i++) {
    if (memcmp(json + i, key, sizeof key - 1) != 0)
      continue;
    size_t j = i + sizeof key - 1;
    while (j < len && (json[j] == ' ' || json[j] == '\t' || json[j] == '\r' || json[j] == '\n'))
      j++;
    if (j >= len || json[j] != ':')
      continue;
    j++;
    while (j < len && (json[j] == ' ' || json[j] == '\t' || json[j] == '\r' || json[j] == '\n'))
      j++;
    int quoted = j < len && json[j] == '"';
    j += (size_t)quoted;
    size_t v = j;
    while (j < len && j - v < 64 &&
           (quoted
                ? json[j] != '"' && (unsigned char)json[j] >= 0x20 && (unsigned char)json[j] < 0x7f
                : (json[j] >= '0' && json[j] <= '9') || (json[j] >= 'a' && json[j] <= 'z') ||
                      (json[j] >= 'A' && json[j] <= 'Z') || json[j] == '_' || json[j] == '-'))
      j++;
    if (j == v || (quoted && (j >= len || json[j] != '"')))
      break;
    snprintf(buf, buflen, "status %.*s", (int)(j - v), json + v);
    return;
  }
  for (size_t i = 0; i < len && o + 1 < buflen; i++) {
    unsigned char c = (unsigned char)json[i];
    buf[o++] = c < 0x20 ? ' ' : c >= 0x7f ? '?' : (char)c;
  }
  buf[o] = '\0';
}

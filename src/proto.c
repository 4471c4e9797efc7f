#include "config.h"

#include "proto.h"

#include "errors.h"

#include <string.h>

/* ASCII-only helpers: the locale must not change how we read the wire. */
static int ascii_lower(int c) {
  return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

static int ascii_caseeq(const char *a, size_t alen, const char *b) {
  size_t blen = strlen(b);
  if (alen != blen)
    return 0;
  for (size_t i = 0; i < alen; i++)
    if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i]))
      return 0;
  return 1;
}

static int is_digit(int c) {
  return c >= '0' && c <= '9';
}

static int is_blank(int c) {
  return c == ' ' || c == '\t';
}

/* Reads a run of decimal digits at s[*pos..len) into *v, refusing an empty
 * run and anything above max.  Advances *pos past the digits. */
static int parse_digits(const char *s, size_t len, size_t *pos, uint64_t max, uint64_t *v) {
  size_t i = *pos;
  uint64_t n = 0;
  if (i >= len || !is_digit((unsigned char)s[i]))
    return P3_EPROTO;
  for (; i < len && is_digit((unsigned char)s[i]); i++) {
    unsigned d = (unsigned)(s[i] - '0');
    if (n > (max - d) / 10)
      return P3_EPROTO;
    n = n * 10 + d;
  }
  *pos = i;
  *v = n;
  return 0;
}

static size_t skip_blanks(const char *s, size_t len, size_t i) {
  while (i < len && is_blank((unsigned char)s[i]))
    i++;
  return i;
}

/* ---- status lines ------------------------------------------------------ */

static const struct {
  enum p3_resp_code code;
  const char *name;
} resp_codes[] = {
    {P3_RC_IN_USE, "IN-USE"},     {P3_RC_LOGIN_DELAY, "LOGIN-DELAY"},
    {P3_RC_SYS_TEMP, "SYS/TEMP"}, {P3_RC_SYS_PERM, "SYS/PERM"},
    {P3_RC_AUTH, "AUTH"},
};

/* RFC 2449 codes are hierarchical ("SYS/TEMP" under "SYS"), so a server's
 * more specific "[SYS/TEMP/QUOTA]" still means SYS/TEMP to us. */
static enum p3_resp_code resp_code_lookup(const char *s, size_t len) {
  for (size_t i = 0; i < sizeof(resp_codes) / sizeof(resp_codes[0]); i++) {
    size_t nlen = strlen(resp_codes[i].name);
    if (len < nlen || (len > nlen && s[nlen] != '/'))
      continue;
    if (ascii_caseeq(s, nlen, resp_codes[i].name))
      return resp_codes[i].code;
  }
  return P3_RC_OTHER;
}

int proto_parse_status(const char *line, size_t len, struct p3_status *st_r) {
  size_t wlen;
  int ok;

  /* A NUL would truncate the text for any C-string consumer downstream
   * (logs, error messages), and no honest server sends one. */
  if (len > 0 && memchr(line, '\0', len) != NULL)
    return P3_EPROTO;
  if (len >= 3 && memcmp(line, "+OK", 3) == 0) {
    ok = 1;
    wlen = 3;
  } else if (len >= 4 && memcmp(line, "-ERR", 4) == 0) {
    ok = 0;
    wlen = 4;
  } else {
    return P3_EPROTO;
  }
  if (len > wlen && line[wlen] != ' ')
    return P3_EPROTO; /* "+OKAY", "-ERROR" */

  st_r->ok = ok;
  st_r->code = P3_RC_NONE;
  st_r->text = line + wlen + (len > wlen);
  st_r->text_len = len - wlen - (len > wlen);

  /* The code is left in the text so the user sees what the server said. */
  if (st_r->text_len > 0 && st_r->text[0] == '[') {
    const char *close = memchr(st_r->text, ']', st_r->text_len);
    if (close != NULL)
      st_r->code = resp_code_lookup(st_r->text + 1, (size_t)(close - st_r->text - 1));
  }
  return 0;
}

const char *proto_resp_code_name(enum p3_resp_code code) {
  for (size_t i = 0; i < sizeof(resp_codes) / sizeof(resp_codes[0]); i++)
    if (resp_codes[i].code == code)
      return resp_codes[i].name;
  return NULL;
}

/* ---- multi-line decoder ------------------------------------------------ */

/* What the decoder has seen of the current line that it has not yet
 * resolved.  Bytes held in a state are neither written nor counted in
 * raw_bytes until the next byte decides what they were. */
enum {
  MLDEC_BOL = 0, /* at the start of a line */
  MLDEC_DOT,     /* "." at line start: terminator or stuffing */
  MLDEC_DOT_CR,  /* ".\r" at line start: terminator unless no LF follows */
  MLDEC_MID,     /* inside a line, nothing held */
  MLDEC_CR,      /* inside a line, a CR held (already counted) */
  MLDEC_DONE     /* end marker consumed */
};

void mldec_init(struct p3_mldec *d) {
  d->state = MLDEC_BOL;
  d->raw_bytes = 0;
  d->lines = 0;
}

int mldec_feed(struct p3_mldec *d, const char *in, size_t inlen, char *out, size_t *outlen_r,
               size_t *consumed_r) {
  size_t i = 0, o = 0;
  int state = d->state;
  int done = 0;

  if (state == MLDEC_DONE) {
    /* Nothing more belongs to this body; the caller owns what follows. */
    *outlen_r = 0;
    *consumed_r = 0;
    return 1;
  }
  /* Out never outgrows in by more than the one CR (or ".\r", whose dot is
   * dropped) held back from the previous call, so inlen + 1 suffices. */
  while (i < inlen && !done) {
    switch (state) {
    case MLDEC_BOL:
      if (in[i] == '.') {
        i++;
        state = MLDEC_DOT;
      } else {
        state = MLDEC_MID;
      }
      break;

    case MLDEC_DOT:
      if (in[i] == '\n') {
        i++;
        done = 1;
      } else if (in[i] == '\r') {
        i++;
        state = MLDEC_DOT_CR;
      } else {
        d->raw_bytes++; /* the stuffing dot, dropped */
        state = MLDEC_MID;
      }
      break;

    case MLDEC_DOT_CR:
      if (in[i] == '\n') {
        i++;
        done = 1;
      } else {
        /* ".\rX": a stuffed line starting with a bare CR. */
        d->raw_bytes += 2;
        out[o++] = '\r';
        state = MLDEC_MID;
      }
      break;

    case MLDEC_CR:
      if (in[i] == '\n') {
        i++;
        out[o++] = '\n';
        d->raw_bytes++;
        d->lines++;
        state = MLDEC_BOL;
      } else {
        out[o++] = '\r'; /* a bare CR is data */
        state = MLDEC_MID;
      }
      break;

    case MLDEC_MID: {
      /* The hot path: copy through to the next LF in one go.  CRs inside
       * the run are data; only one right before the LF is dropped. */
      const char *lf = memchr(in + i, '\n', inlen - i);
      size_t end = lf ? (size_t)(lf - in) : inlen;
      size_t n = end - i;
      if (lf != NULL) {
        size_t keep = (n > 0 && in[end - 1] == '\r') ? n - 1 : n;
        memcpy(out + o, in + i, keep);
        o += keep;
        out[o++] = '\n';
        d->raw_bytes += n + 1;
        d->lines++;
        i = end + 1;
        state = MLDEC_BOL;
      } else if (n > 0 && in[end - 1] == '\r') {
        /* Hold the CR: the next chunk may start with its LF. */
        memcpy(out + o, in + i, n - 1);
        o += n - 1;
        d->raw_bytes += n;
        i = end;
        state = MLDEC_CR;
      } else {
        memcpy(out + o, in + i, n);
        o += n;
        d->raw_bytes += n;
        i = end;
      }
      break;
    }

    default: /* unreachable: MLDEC_DONE returned above */
      done = 1;
      break;
    }
  }

  if (done)
    state = MLDEC_DONE;
  d->state = state;
  *outlen_r = o;
  *consumed_r = i;
  return state == MLDEC_DONE;
}

/* ---- CAPA -------------------------------------------------------------- */

void proto_caps_init(struct p3_caps *c) {
  memset(c, 0, sizeof(*c));
  c->login_delay = -1;
  c->expire_days = -1;
}

/* Next blank-separated token of line at or after *pos; returns its length
 * (0 at end of line) and sets *tok_r. */
static size_t next_token(const char *line, size_t len, size_t *pos, const char **tok_r) {
  size_t i = skip_blanks(line, len, *pos), start = i;
  while (i < len && !is_blank((unsigned char)line[i]))
    i++;
  *tok_r = line + start;
  *pos = i;
  return i - start;
}

/* A whole token that is a decimal number no larger than LONG_MAX. */
static int token_long(const char *tok, size_t len, long *v_r) {
  size_t pos = 0;
  uint64_t v;
  if (parse_digits(tok, len, &pos, (uint64_t)(~0UL >> 1), &v) < 0 || pos != len)
    return P3_EPROTO;
  *v_r = (long)v;
  return 0;
}

/* One mechanism name of a SASL capability line. */
static void caps_sasl_mech(struct p3_caps *c, const char *name, size_t len) {
  if (ascii_caseeq(name, len, "PLAIN")) {
    c->sasl |= P3_SASL_PLAIN;
    c->sasl_plain = 1;
  } else if (ascii_caseeq(name, len, "LOGIN")) {
    c->sasl |= P3_SASL_LOGIN;
  } else if (ascii_caseeq(name, len, "XOAUTH2")) {
    c->sasl |= P3_SASL_XOAUTH2;
  } else if (ascii_caseeq(name, len, "OAUTHBEARER")) {
    c->sasl |= P3_SASL_OAUTHBEARER;
  }
  /* The list as offered, for "it offers: ..." sentences; " ..." ends it
   * once a name did not fit (room for it is kept). */
  size_t have = strlen(c->sasl_list);
  size_t need = (have ? 1 : 0) + len;
  if (have >= 4 && memcmp(c->sasl_list + have - 4, " ...", 4) == 0)
    return;
  if (have + need + 4 >= sizeof c->sasl_list) {
    memcpy(c->sasl_list + have, " ...", 5);
    return;
  }
  if (have)
    c->sasl_list[have++] = ' ';
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)name[i];
    if (ch >= 'a' && ch <= 'z')
      ch = (unsigned char)(ch - 'a' + 'A');
    c->sasl_list[have++] = ch > 0x20 && ch < 0x7f ? (char)ch : '?';
  }
  c->sasl_list[have] = '\0';
}

void proto_caps_line(struct p3_caps *c, const char *line, size_t len) {
  size_t pos = 0, tlen;
  const char *tok, *arg;
  size_t alen;
  long v;

  tlen = next_token(line, len, &pos, &tok);
  if (tlen == 0)
    return;
  if (ascii_caseeq(tok, tlen, "STLS")) {
    c->stls = 1;
  } else if (ascii_caseeq(tok, tlen, "PIPELINING")) {
    c->pipelining = 1;
  } else if (ascii_caseeq(tok, tlen, "UIDL")) {
    c->uidl = 1;
  } else if (ascii_caseeq(tok, tlen, "USER")) {
    c->user = 1;
  } else if (ascii_caseeq(tok, tlen, "TOP")) {
    c->top = 1;
  } else if (ascii_caseeq(tok, tlen, "RESP-CODES")) {
    c->resp_codes = 1;
  } else if (ascii_caseeq(tok, tlen, "AUTH-RESP-CODE")) {
    c->auth_resp_code = 1;
  } else if (ascii_caseeq(tok, tlen, "SASL")) {
    while ((alen = next_token(line, len, &pos, &arg)) > 0)
      caps_sasl_mech(c, arg, alen);
  } else if (ascii_caseeq(tok, tlen, "EXPIRE")) {
    /* "EXPIRE n [USER]": in AUTHORIZATION state USER marks n as the
     * minimum over users, so "EXPIRE 0 USER" may well mean us; the CAPA
     * after login says for sure.  A malformed argument is ignored. */
    alen = next_token(line, len, &pos, &arg);
    if (ascii_caseeq(arg, alen, "NEVER")) {
      c->has_expire = 1;
      c->expire_zero = 0;
      c->expire_days = -1;
    } else if (token_long(arg, alen, &v) == 0) {
      c->has_expire = 1;
      c->expire_zero = v == 0;
      c->expire_days = v;
    }
  } else if (ascii_caseeq(tok, tlen, "EXPIRENEVER")) {
    /* GNU Mailutils writes "EXPIRE NEVER" without its space. */
    c->has_expire = 1;
    c->expire_zero = 0;
    c->expire_days = -1;
  } else if (ascii_caseeq(tok, tlen, "UTF8")) {
    c->utf8 = 1;
  } else if (ascii_caseeq(tok, tlen, "LOGIN-DELAY")) {
    alen = next_token(line, len, &pos, &arg);
    if (token_long(arg, alen, &v) == 0)
      c->login_delay = v;
  }
}

/* ---- LIST, UIDL, RETR -------------------------------------------------- */

/* "N" at line start followed by at least one blank: the message number. */
static int parse_msgnum(const char *line, size_t len, size_t *pos, unsigned long *num_r) {
  uint64_t n;
  if (parse_digits(line, len, pos, (uint64_t)~0UL, &n) < 0 || n == 0)
    return P3_EPROTO;
  if (*pos >= len || !is_blank((unsigned char)line[*pos]))
    return P3_EPROTO;
  *pos = skip_blanks(line, len, *pos);
  *num_r = (unsigned long)n;
  return 0;
}

int proto_parse_list_line(const char *line, size_t len, unsigned long *num_r, uint64_t *size_r) {
  size_t pos = 0;
  unsigned long num;
  uint64_t size;

  if (parse_msgnum(line, len, &pos, &num) < 0)
    return P3_EPROTO;
  if (parse_digits(line, len, &pos, UINT64_MAX, &size) < 0)
    return P3_EPROTO;
  /* RFC 1939 lets a scan listing carry more after the size: ignore it, but
   * only past a separator so "12x" is not taken for 12. */
  if (pos < len && !is_blank((unsigned char)line[pos]))
    return P3_EPROTO;
  *num_r = num;
  *size_r = size;
  return 0;
}

int proto_parse_uidl_line(const char *line, size_t len, unsigned long *num_r, const char **uid_r,
                          size_t *uidlen_r) {
  size_t pos = 0, end = len;
  unsigned long num;

  *num_r = 0;
  if (parse_msgnum(line, len, &pos, &num) < 0)
    return P3_EPROTO;
  *num_r = num; /* from here on only the UID can be wrong */
  /* Trailing blanks are not part of a UID (space is not a uchar); dropping
   * them is safe and some servers pad. */
  while (end > pos && is_blank((unsigned char)line[end - 1]))
    end--;
  if (end == pos || end - pos > P3_UID_MAX)
    return P3_EPROTO;
  for (size_t i = pos; i < end; i++) {
    unsigned char ch = (unsigned char)line[i];
    if (ch < 0x21 || ch > 0x7e)
      return P3_EPROTO;
  }
  *uid_r = line + pos;
  *uidlen_r = end - pos;
  return 0;
}

int proto_retr_octets(const char *text, size_t len, uint64_t *size_r) {
  size_t pos = skip_blanks(text, len, 0);
  uint64_t n;

  if (parse_digits(text, len, &pos, UINT64_MAX, &n) < 0)
    return 0;
  if (pos < len && !is_blank((unsigned char)text[pos]))
    return 0; /* "12abc" is not a count */
  *size_r = n;
  return 1;
}

int proto_retr_says_octets(const char *text, size_t len) {
  size_t pos = skip_blanks(text, len, 0), start;
  uint64_t n;

  if (parse_digits(text, len, &pos, UINT64_MAX, &n) < 0)
    return 0;
  start = skip_blanks(text, len, pos);
  if (start == pos)
    return 0;
  pos = start;
  while (pos < len && !is_blank((unsigned char)text[pos]))
    pos++;
  /* "octets", and tolerate trailing punctuation such as "octets." */
  size_t wlen = pos - start;
  while (wlen > 6 && (text[start + wlen - 1] == '.' || text[start + wlen - 1] == ','))
    wlen--;
  return ascii_caseeq(text + start, wlen, "octets");
}

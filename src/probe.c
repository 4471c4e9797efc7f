#include "config.h"

#include "probe.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "errors.h"
#include "sasl.h"

/* Largest piece of a listing decoded at once (the decoder may write one
 * byte more than it is given). */
#define PROBE_DECODE_CHUNK 1024

void probe_init(struct probe *p, int starttls) {
  memset(p, 0, sizeof *p);
  p->starttls = starttls != 0;
  p->phase = PROBE_GREETING;
  proto_caps_init(&p->before.caps);
  proto_caps_init(&p->after.caps);
}

char *probe_clean(const char *in, size_t len, char *out, size_t cap) {
  size_t n = 0, keep = len;
  if (cap == 0)
    return out;
  if (len + 1 > cap)
    keep = cap > 4 ? cap - 4 : 0; /* room for "..." */
  for (size_t i = 0; i < keep && n + 1 < cap; i++) {
    unsigned char ch = (unsigned char)in[i];
    out[n++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
  }
  if (keep < len && n + 4 <= cap) {
    memcpy(out + n, "...", 3);
    n += 3;
  }
  out[n] = '\0';
  return out;
}

/* Appends sep and s to dst (cap bytes); once something does not fit, dst
 * ends with "..." and *cut is set (later calls do nothing).  Keeps room
 * for the "..." at all times. */
static void join(char *dst, size_t cap, int *cut, const char *sep, const char *s) {
  size_t n = strlen(dst), ls = n > 0 ? strlen(sep) : 0, l = strlen(s);
  if (*cut)
    return;
  if (n + ls + l + 4 > cap) {
    if (n + 4 <= cap)
      memcpy(dst + n, "...", 4);
    *cut = 1;
    return;
  }
  memcpy(dst + n, sep, ls);
  memcpy(dst + n + ls, s, l + 1);
}

static int fail(struct probe *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct probe *p, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  p3_vset_error(p->error, sizeof p->error, fmt, ap);
  va_end(ap);
  p->phase = PROBE_FAILED;
  return P3_EPROTO;
}

static int send_cmd(struct probe *p, enum probe_phase phase, const char *cmd) {
  p->phase = phase;
  p->cmd = cmd;
  return PROBE_SEND;
}

/* The CAPA being asked now: before TLS for starttls, else the one in force. */
static struct probe_capa *current_capa(struct probe *p) {
  return p->starttls && !p->tls ? &p->before : &p->after;
}

/* After a CAPA (listed or refused): STLS when it is time, else QUIT.  As
 * the session does, STLS is tried when CAPA is not supported at all. */
static int after_capa(struct probe *p) {
  if (p->starttls && !p->tls) {
    if (p->before.state == 1 && !p->before.caps.stls) {
      snprintf(p->stls_refused, sizeof p->stls_refused, "STLS is not in the server's capabilities");
      return send_cmd(p, PROBE_QUIT, "QUIT\r\n");
    }
    return send_cmd(p, PROBE_STLS, "STLS\r\n");
  }
  return send_cmd(p, PROBE_QUIT, "QUIT\r\n");
}

/* One line of the CAPA listing (decoded, without its LF). */
static int listing_line(struct probe *p, const char *line, size_t len) {
  struct probe_capa *c = current_capa(p);
  char clean[PROBE_CAPS_MAX];
  p->lines++;
  if (++c->lines > PROBE_CAPA_LINES_MAX)
    return fail(p, "the CAPA listing has more than %d lines", PROBE_CAPA_LINES_MAX);
  proto_caps_line(&c->caps, line, len);
  if (len > 0)
    join(c->text, sizeof c->text, &c->cut, ", ", probe_clean(line, len, clean, sizeof clean));
  return PROBE_NEED_MORE;
}

/* One status line (without CRLF).  Returns an event, PROBE_NEED_MORE to
 * read on, or P3_EPROTO. */
static int status_line(struct probe *p, const char *line, size_t len) {
  struct p3_status st;
  char clean[PROBE_TEXT_MAX - 32]; /* room for a sentence around it */
  int bad = proto_parse_status(line, len, &st) != 0;
  p->lines++;
  switch (p->phase) {
  case PROBE_GREETING:
    probe_clean(line, len, p->greeting, sizeof p->greeting);
    if (bad)
      return fail(p, "not a POP3 greeting: %s", p->greeting);
    if (!st.ok) {
      p->phase = PROBE_FINISHED; /* the server refuses us; it closes now */
      return PROBE_DONE;
    }
    p->greeting_ok = 1;
    const char *ts;
    size_t tslen;
    p->apop = sasl_apop_timestamp(st.text, st.text_len, &ts, &tslen) == 1;
    return send_cmd(p, PROBE_CAPA, "CAPA\r\n");
  case PROBE_CAPA: {
    struct probe_capa *c = current_capa(p);
    if (bad)
      return fail(p, "garbled reply to CAPA: %s", probe_clean(line, len, clean, sizeof clean));
    if (st.ok) {
      c->state = 1;
      mldec_init(&p->dec);
      p->phase = PROBE_CAPA_LIST;
      return PROBE_NEED_MORE;
    }
    c->state = -1;
    probe_clean(line, len, c->err, sizeof c->err);
    return after_capa(p);
  }
  case PROBE_STLS:
    if (bad)
      return fail(p, "garbled reply to STLS: %s", probe_clean(line, len, clean, sizeof clean));
    if (st.ok) {
      p->tls = 1;
      p->phase = PROBE_TLS_WAIT;
      return PROBE_START_TLS;
    }
    snprintf(p->stls_refused, sizeof p->stls_refused, "the server refused STLS: %s",
             probe_clean(line, len, clean, sizeof clean));
    return send_cmd(p, PROBE_QUIT, "QUIT\r\n");
  case PROBE_QUIT:
    p->phase = PROBE_FINISHED; /* +OK or not, the conversation is over */
    return PROBE_DONE;
  default:
    return fail(p, "unexpected data from the server");
  }
}

/* Decodes the CAPA listing from buf; sets *used_r. */
static int feed_listing(struct probe *p, const char *buf, size_t len, size_t *used_r) {
  char out[PROBE_DECODE_CHUNK + 1];
  size_t i = 0;
  while (i < len) {
    size_t n = len - i, olen, consumed;
    if (n > PROBE_DECODE_CHUNK)
      n = PROBE_DECODE_CHUNK;
    int end = mldec_feed(&p->dec, buf + i, n, out, &olen, &consumed);
    i += consumed;
    for (size_t k = 0; k < olen; k++) {
      if (out[k] == '\n') {
        int r = listing_line(p, p->line, p->linelen);
        p->linelen = 0;
        if (r < 0) {
          *used_r = i;
          return r;
        }
      } else if (p->linelen + 1 >= sizeof p->line) {
        *used_r = i;
        return fail(p, "a CAPA line is longer than %d bytes", P3_LINE_MAX);
      } else {
        p->line[p->linelen++] = out[k];
      }
    }
    if (end) {
      *used_r = i;
      assert(p->linelen == 0); /* the decoder ends each line before the end */
      return after_capa(p);
    }
  }
  *used_r = i;
  return PROBE_NEED_MORE;
}

int probe_feed(struct probe *p, const char *buf, size_t len, size_t *used_r) {
  size_t i = 0;
  *used_r = 0;
  if (p->phase == PROBE_FINISHED) {
    *used_r = len;
    return PROBE_DONE;
  }
  if (p->phase == PROBE_FAILED)
    return P3_EPROTO;
  if (p->phase == PROBE_TLS_WAIT && len > 0)
    return fail(p, "the server sent data during the TLS handshake");
  while (i < len) {
    if (p->phase == PROBE_CAPA_LIST) {
      size_t used;
      int r = feed_listing(p, buf + i, len - i, &used);
      i += used;
      if (r != PROBE_NEED_MORE) {
        *used_r = i;
        return r;
      }
      continue;
    }
    const char *nl = memchr(buf + i, '\n', len - i);
    size_t take = nl ? (size_t)(nl - (buf + i)) : len - i;
    if (p->linelen + take + 1 > sizeof p->line) {
      *used_r = i;
      return fail(p, "a line from the server is longer than %d bytes", P3_LINE_MAX);
    }
    memcpy(p->line + p->linelen, buf + i, take);
    p->linelen += take;
    if (nl == NULL) {
      i = len;
      break;
    }
    i += take + 1;
    size_t l = p->linelen;
    if (l > 0 && p->line[l - 1] == '\r')
      l--;
    p->linelen = 0;
    int r = status_line(p, p->line, l);
    if (r != PROBE_NEED_MORE) {
      *used_r = i;
      return r;
    }
  }
  *used_r = i;
  return PROBE_NEED_MORE;
}

const char *probe_command(const struct probe *p) {
  return p->cmd ? p->cmd : "";
}

int probe_tls_ready(struct probe *p) {
  return send_cmd(p, PROBE_CAPA, "CAPA\r\n");
}

int probe_waiting(const struct probe *p) {
  switch (p->phase) {
  case PROBE_GREETING:
  case PROBE_CAPA:
  case PROBE_CAPA_LIST:
  case PROBE_STLS:
  case PROBE_QUIT:
    return 1;
  default:
    return 0;
  }
}

int probe_quitting(const struct probe *p) {
  return p->phase == PROBE_QUIT || p->phase == PROBE_FINISHED;
}

void probe_login_methods(const struct probe *p, char *buf, size_t len) {
  const struct probe_capa *c = p->after.state != 0 ? &p->after : &p->before;
  int cut = 0;
  if (len == 0)
    return;
  buf[0] = '\0';
  if (c->state == 1) {
    if (c->caps.user)
      join(buf, len, &cut, ", ", "USER/PASS");
    if (c->caps.sasl_list[0] != '\0') {
      char sasl[P3_SASL_LIST_MAX + 8];
      snprintf(sasl, sizeof sasl, "SASL %s", c->caps.sasl_list);
      join(buf, len, &cut, ", ", sasl);
    }
  }
  if (p->apop)
    join(buf, len, &cut, ", ", "APOP");
  if (c->state != 1)
    join(buf, len, &cut, "; ", buf[0] ? "others unknown (no CAPA)" : "unknown (no CAPA)");
  else if (buf[0] == '\0')
    join(buf, len, &cut, ", ", "none advertised");
}

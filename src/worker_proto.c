#include "config.h"

#include "worker_proto.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "errors.h"

/* ---- lines */

int worker_line_append(char **buf, size_t *len, size_t *cap, const char *key, const char *value) {
  size_t need = strlen(key) + 2 + (value ? 2 * strlen(value) : 0) + 1;
  if (buf_grow(buf, cap, *len + need, 1, 1024, SIZE_MAX) != 0)
    return -ENOMEM;
  char *p = *buf + *len;
  size_t kl = strlen(key);
  memcpy(p, key, kl);
  p += kl;
  *p++ = ' ';
  for (const char *v = value ? value : ""; *v; v++) {
    if (*v == '\\' || *v == '\n' || *v == '\r') {
      *p++ = '\\';
      *p++ = *v == '\n' ? 'n' : *v == '\r' ? 'r' : '\\';
    } else {
      *p++ = *v;
    }
  }
  *p++ = '\n';
  *len = (size_t)(p - *buf);
  return 0;
}

int worker_line_split(char *line, char **key_r, char **value_r) {
  char *sp = strchr(line, ' ');
  if (line[0] == '\0' || sp == line)
    return -EINVAL;
  *key_r = line;
  if (sp == NULL) {
    *value_r = line + strlen(line);
    return 0;
  }
  *sp = '\0';
  char *in = sp + 1, *out = sp + 1;
  *value_r = out;
  while (*in) {
    if (*in != '\\') {
      *out++ = *in++;
      continue;
    }
    in++;
    if (*in == 'n')
      *out++ = '\n';
    else if (*in == 'r')
      *out++ = '\r';
    else if (*in == '\\')
      *out++ = '\\';
    else
      return -EINVAL;
    in++;
  }
  *out = '\0';
  return 0;
}

static int append_uint(char **buf, size_t *len, size_t *cap, const char *key,
                       unsigned long long v) {
  char num[32];
  snprintf(num, sizeof num, "%llu", v);
  return worker_line_append(buf, len, cap, key, num);
}

static int append_int(char **buf, size_t *len, size_t *cap, const char *key, long long v) {
  char num[32];
  snprintf(num, sizeof num, "%lld", v);
  return worker_line_append(buf, len, cap, key, num);
}

static int parse_ull(const char *s, unsigned long long max, unsigned long long *v_r) {
  char *end;
  if (*s < '0' || *s > '9')
    return -EINVAL;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || v > max)
    return -EINVAL;
  *v_r = v;
  return 0;
}

static int parse_ll(const char *s, long long min, long long max, long long *v_r) {
  char *end;
  if (*s == '\0')
    return -EINVAL;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || *end || v < min || v > max)
    return -EINVAL;
  *v_r = v;
  return 0;
}

/* ---- the request */

static const char hexdig[] = "0123456789abcdef";

int worker_request_format(const struct worker_request *q, char **buf_r, size_t *len_r) {
  char *buf = NULL;
  size_t len = 0, cap = 0;
  int err = 0;
#define S(key, v)                                                                                  \
  if (err == 0 && (v) != NULL)                                                                     \
  err = worker_line_append(&buf, &len, &cap, key, v)
#define U(key, v)                                                                                  \
  if (err == 0)                                                                                    \
  err = append_uint(&buf, &len, &cap, key, v)
  S("account", q->account);
  S("user", q->user);
  U("uid", q->uid);
  U("gid", q->gid);
  S("server", q->server);
  S("maildir", q->maildir);
  S("netrc", q->netrc);
  S("password_command", q->password_command);
  S("password", q->password);
  S("ca_file", q->ca_file);
  S("state_dir", q->state_dir);
  for (int i = 0; i < q->pin_count && i < P3_TLS_MAX_PINS; i++) {
    char hex[65];
    for (int j = 0; j < 32; j++) {
      hex[2 * j] = hexdig[q->pins[i][j] >> 4];
      hex[2 * j + 1] = hexdig[q->pins[i][j] & 15];
    }
    hex[64] = '\0';
    S("pin", hex);
  }
  U("timeout", q->timeout_s);
  U("pipelining", (unsigned)q->pipelining);
  U("window", q->window);
  U("keep", (unsigned)(q->keep != 0));
  if (err == 0)
    err = append_int(&buf, &len, &cap, "keep_days", q->keep_days);
  if (q->max_size != 0 && err == 0) {
    char v[24];
    snprintf(v, sizeof v, "%" PRIu64, q->max_size);
    err = worker_line_append(&buf, &len, &cap, "max_size", v);
  }
  U("no_utf8", (unsigned)(q->no_utf8 != 0));
  U("auth", (unsigned)q->auth);
  U("verbose", (unsigned)(q->verbose != 0));
  if (q->hook_command != NULL) {
    S("hook_command", q->hook_command);
    S("hook_event", q->hook_event);
    S("hook_error", q->hook_error);
    U("hook_messages", q->hook_messages);
    U("hook_bytes", q->hook_bytes);
    U("hook_exit", q->hook_exit);
    U("hook_timeout", q->hook_timeout_s);
  }
  S("end", "");
#undef S
#undef U
  if (err) {
    if (buf)
      explicit_bzero(buf, len);
    free(buf);
    return err;
  }
  *buf_r = buf;
  *len_r = len;
  return 0;
}

static int unhex(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

static int set_str(char **dst, const char *v) {
  free(*dst);
  *dst = strdup(v);
  return *dst ? 0 : -ENOMEM;
}

static int request_field(struct worker_request *q, const char *key, const char *v) {
  unsigned long long u;
  long long s;
  if (strcmp(key, "account") == 0)
    return set_str(&q->account, v);
  if (strcmp(key, "user") == 0)
    return set_str(&q->user, v);
  if (strcmp(key, "server") == 0)
    return set_str(&q->server, v);
  if (strcmp(key, "maildir") == 0)
    return set_str(&q->maildir, v);
  if (strcmp(key, "netrc") == 0)
    return set_str(&q->netrc, v);
  if (strcmp(key, "password_command") == 0)
    return set_str(&q->password_command, v);
  if (strcmp(key, "password") == 0) {
    if (q->password)
      explicit_bzero(q->password, strlen(q->password));
    return set_str(&q->password, v);
  }
  if (strcmp(key, "ca_file") == 0)
    return set_str(&q->ca_file, v);
  if (strcmp(key, "state_dir") == 0)
    return set_str(&q->state_dir, v);
  if (strcmp(key, "pin") == 0) {
    if (q->pin_count >= P3_TLS_MAX_PINS || strlen(v) != 64)
      return -EINVAL;
    for (int j = 0; j < 32; j++) {
      int hi = unhex(v[2 * j]), lo = unhex(v[2 * j + 1]);
      if (hi < 0 || lo < 0)
        return -EINVAL;
      q->pins[q->pin_count][j] = (uint8_t)(hi << 4 | lo);
    }
    q->pin_count++;
    return 0;
  }
  if (strcmp(key, "hook_command") == 0)
    return set_str(&q->hook_command, v);
  if (strcmp(key, "hook_event") == 0)
    return set_str(&q->hook_event, v);
  if (strcmp(key, "hook_error") == 0)
    return set_str(&q->hook_error, v);
  if (strcmp(key, "hook_messages") == 0 || strcmp(key, "hook_bytes") == 0) {
    if (parse_ull(v, UINT64_MAX, &u))
      return -EINVAL;
    *(key[5] == 'm' ? &q->hook_messages : &q->hook_bytes) = u;
    return 0;
  }
  if (strcmp(key, "max_size") == 0) {
    if (parse_ull(v, UINT64_MAX, &u))
      return -EINVAL;
    q->max_size = u;
    return 0;
  }
  if (strcmp(key, "keep_days") == 0) {
    if (parse_ll(v, -1, INT_MAX, &s))
      return -EINVAL;
    q->keep_days = (int)s;
    return 0;
  }
  if (parse_ull(v, UINT32_MAX, &u))
    return -EINVAL;
  if (strcmp(key, "uid") == 0)
    q->uid = (unsigned long)u;
  else if (strcmp(key, "gid") == 0)
    q->gid = (unsigned long)u;
  else if (strcmp(key, "timeout") == 0)
    q->timeout_s = (unsigned)u;
  else if (strcmp(key, "pipelining") == 0 && u <= SESSION_PIPELINING_OFF)
    q->pipelining = (enum session_pipelining)u;
  else if (strcmp(key, "window") == 0)
    q->window = (unsigned)u;
  else if (strcmp(key, "keep") == 0)
    q->keep = u != 0;
  else if (strcmp(key, "no_utf8") == 0)
    q->no_utf8 = u != 0;
  else if (strcmp(key, "auth") == 0 && u <= SESSION_AUTH_OAUTHBEARER)
    q->auth = (enum session_auth)u;
  else if (strcmp(key, "verbose") == 0)
    q->verbose = u != 0;
  else if (strcmp(key, "hook_exit") == 0 && u <= 255)
    q->hook_exit = (unsigned)u;
  else if (strcmp(key, "hook_timeout") == 0)
    q->hook_timeout_s = (unsigned)u;
  else
    return -EINVAL;
  return 0;
}

int worker_request_parse(const char *buf, size_t len, struct worker_request *q, char *errbuf,
                         size_t errlen) {
  memset(q, 0, sizeof *q);
  q->keep_days = -1;
  char line[WORKER_LINE_MAX + 1];
  size_t pos = 0;
  unsigned lineno = 0;
  while (pos < len) {
    const char *nl = memchr(buf + pos, '\n', len - pos);
    lineno++;
    if (nl == NULL || (size_t)(nl - (buf + pos)) > WORKER_LINE_MAX) {
      p3_set_error(errbuf, errlen, "worker request line %u is unterminated or too long", lineno);
      return -EINVAL;
    }
    size_t n = (size_t)(nl - (buf + pos));
    memcpy(line, buf + pos, n);
    line[n] = '\0';
    pos += n + 1;
    char *key, *value;
    int err = worker_line_split(line, &key, &value);
    if (err == 0 && strcmp(key, "end") == 0) {
      explicit_bzero(line, sizeof line);
      if (q->hook_command != NULL) {
        if (q->account == NULL || q->hook_event == NULL) {
          p3_set_error(errbuf, errlen, "worker hook request lacks account or hook_event");
          return -EINVAL;
        }
        return 0;
      }
      if (q->account == NULL || q->server == NULL || q->maildir == NULL || q->state_dir == NULL) {
        p3_set_error(errbuf, errlen, "worker request lacks account, server, maildir or state_dir");
        return -EINVAL;
      }
      return 0;
    }
    if (err == 0)
      err = request_field(q, key, value);
    explicit_bzero(line, sizeof line);
    if (err) {
      p3_set_error(errbuf, errlen, "worker request line %u is malformed", lineno);
      return err == -ENOMEM ? err : -EINVAL;
    }
  }
  p3_set_error(errbuf, errlen, "worker request ends without `end'");
  return -EINVAL;
}

void worker_request_free(struct worker_request *q) {
  if (q->password) {
    explicit_bzero(q->password, strlen(q->password));
    free(q->password);
  }
  free(q->account);
  free(q->user);
  free(q->server);
  free(q->maildir);
  free(q->netrc);
  free(q->password_command);
  free(q->ca_file);
  free(q->state_dir);
  free(q->hook_command);
  free(q->hook_event);
  free(q->hook_error);
  memset(q, 0, sizeof *q);
}

/* ---- the report */

void worker_report_init(struct worker_report *rep) {
  memset(rep, 0, sizeof *rep);
  rep->r.login_delay = -1;
  rep->r.uids_unique = 1;
}

void worker_report_free(struct worker_report *rep) {
  free(rep->stuck);
  rep->stuck = NULL;
  rep->stuck_count = 0;
  rep->r.stuck = NULL;
  rep->r.stuck_count = 0;
  free(rep->over_size);
  rep->over_size = NULL;
  rep->over_size_n = 0;
  rep->r.over_size = NULL;
  rep->r.over_size_n = 0;
}

/* Text from a worker reaches root's log and the status JSON: it runs as
 * the user and relays what a server or a password command said, so
 * control characters are replaced. */
static void copy_printable(char *dst, size_t size, const char *src) {
  size_t i = 0;
  for (; src[i] && i + 1 < size; i++) {
    unsigned char c = (unsigned char)src[i];
    dst[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
  }
  if (size)
    dst[i] = '\0';
}

static int result_field(struct engine_result *r, const char *f, const char *v) {
  unsigned long long u;
  long long s;
  if (strcmp(f, "message") == 0) {
    copy_printable(r->message, sizeof r->message, v);
    return 0;
  }
  if (strcmp(f, "err") == 0 || strcmp(f, "login_delay") == 0) {
    if (parse_ll(v, INT_MIN, INT_MAX, &s))
      return -EINVAL;
    if (f[0] == 'e')
      r->err = (int)s;
    else
      r->login_delay = (long)s;
    return 0;
  }
  if (parse_ull(v, UINT64_MAX, &u))
    return -EINVAL;
  if (strcmp(f, "listed") == 0)
    r->listed = (size_t)u;
  else if (strcmp(f, "delivered") == 0)
    r->delivered = (size_t)u;
  else if (strcmp(f, "bytes") == 0)
    r->bytes = u;
  else if (strcmp(f, "deleted") == 0)
    r->deleted = (size_t)u;
  else if (strcmp(f, "already") == 0)
    r->already = (size_t)u;
  else if (strcmp(f, "failed") == 0)
    r->failed = (size_t)u;
  else if (strcmp(f, "left_for_space") == 0)
    r->left_for_space = (size_t)u;
  else if (strcmp(f, "left_for_space_bytes") == 0)
    r->left_for_space_bytes = u;
  else if (strcmp(f, "uidl") == 0)
    r->uidl = u != 0;
  else if (strcmp(f, "lockstep") == 0)
    r->lockstep = u != 0;
  else if (strcmp(f, "uids_unique") == 0)
    r->uids_unique = u != 0;
  else if (strcmp(f, "corrupt_lines") == 0)
    r->corrupt_lines = (size_t)u;
  else if (strcmp(f, "round_trips") == 0)
    r->round_trips = u > UINT_MAX ? UINT_MAX : (unsigned)u;
  else if (strcmp(f, "resumed_tls") == 0)
    r->resumed_tls = u != 0;
  else if (strcmp(f, "max_size") == 0)
    r->max_size = u;
  else if (strcmp(f, "over_size_count") == 0)
    r->over_size_count = (size_t)u;
  else if (strcmp(f, "over_size_bytes") == 0)
    r->over_size_bytes = u;
  else if (strcmp(f, "milliseconds") == 0)
    r->seconds = (double)u / 1000.0;
  /* Unknown fields are ignored: a newer worker may say more. */
  return 0;
}

int worker_report_line(struct worker_report *rep, char *line, const char **trace_r) {
  char *key, *v;
  if (rep->done || worker_line_split(line, &key, &v) != 0)
    return -EINVAL;
  if (strcmp(key, "trace") == 0) {
    *trace_r = v;
    return 1;
  }
  if (strcmp(key, "progress") == 0) {
    unsigned long long d, t, b, bt = 0;
    /* The fourth figure (the listing's sizes summed) came later. */
    if (sscanf(v, "%llu %llu %llu %llu", &d, &t, &b, &bt) < 3)
      return -EINVAL;
    rep->progress_done = (size_t)d;
    rep->progress_total = (size_t)t;
    rep->progress_bytes = b;
    rep->progress_bytes_total = bt;
    rep->progress_seen = 1;
    return 0;
  }
  if (strcmp(key, "result") == 0) {
    char *sp = strchr(v, ' ');
    if (sp == NULL)
      return -EINVAL;
    *sp = '\0';
    return result_field(&rep->r, v, sp + 1);
  }
  if (strcmp(key, "stuck") == 0) {
    unsigned long long num, size;
    unsigned att;
    int off = 0;
    if (rep->stuck_count >= WORKER_STUCK_MAX ||
        sscanf(v, "%llu %llu %u %n", &num, &size, &att, &off) != 3 || off == 0 || v[off] == '\0')
      return -EINVAL;
    struct engine_stuck *s = realloc(rep->stuck, (rep->stuck_count + 1) * sizeof *s);
    if (s == NULL)
      return -ENOMEM;
    rep->stuck = s;
    struct engine_stuck *x = &s[rep->stuck_count++];
    memset(x, 0, sizeof *x);
    x->number = (unsigned long)num;
    x->size = size;
    x->attempts = att;
    copy_printable(x->uid, sizeof x->uid, v + off);
    return 0;
  }
  if (strcmp(key, "stuck_error") == 0) {
    if (rep->stuck_count == 0)
      return -EINVAL;
    copy_printable(rep->stuck[rep->stuck_count - 1].last_error,
                   sizeof rep->stuck[rep->stuck_count - 1].last_error, v);
    return 0;
  }
  if (strcmp(key, "over_size") == 0) {
    unsigned long long num, size;
    int off = 0;
    if (rep->over_size_n >= WORKER_OVER_SIZE_MAX ||
        sscanf(v, "%llu %llu %n", &num, &size, &off) != 2 || off == 0 || v[off] == '\0')
      return -EINVAL;
    struct engine_over_size *o = realloc(rep->over_size, (rep->over_size_n + 1) * sizeof *o);
    if (o == NULL)
      return -ENOMEM;
    rep->over_size = o;
    struct engine_over_size *x = &o[rep->over_size_n++];
    memset(x, 0, sizeof *x);
    x->number = (unsigned long)num;
    x->size = size;
    copy_printable(x->uid, sizeof x->uid, v + off);
    return 0;
  }
  if (strcmp(key, "done") == 0) {
    rep->done = 1;
    rep->r.stuck = rep->stuck;
    rep->r.stuck_count = rep->stuck_count;
    rep->r.over_size = rep->over_size;
    rep->r.over_size_n = rep->over_size_n;
    return 0;
  }
  return 0; /* unknown events are ignored */
}

int worker_report_format(const struct engine_result *r, char **buf_r, size_t *len_r) {
  char *buf = NULL, num[48];
  size_t len = 0, cap = 0;
  int err = 0;
#define F(name, fmt, val)                                                                          \
  if (err == 0) {                                                                                  \
    snprintf(num, sizeof num, "%s " fmt, name, val);                                               \
    err = worker_line_append(&buf, &len, &cap, "result", num);                                     \
  }
  F("err", "%d", r->err);
  F("listed", "%zu", r->listed);
  F("delivered", "%zu", r->delivered);
  F("bytes", "%" PRIu64, r->bytes);
  F("deleted", "%zu", r->deleted);
  F("already", "%zu", r->already);
  F("failed", "%zu", r->failed);
  F("left_for_space", "%zu", r->left_for_space);
  F("left_for_space_bytes", "%" PRIu64, r->left_for_space_bytes);
  F("login_delay", "%ld", r->login_delay);
  F("uidl", "%d", r->uidl != 0);
  F("lockstep", "%d", r->lockstep != 0);
  F("uids_unique", "%d", r->uids_unique != 0);
  F("corrupt_lines", "%zu", r->corrupt_lines);
  F("round_trips", "%u", r->round_trips);
  F("resumed_tls", "%d", r->resumed_tls != 0);
  F("milliseconds", "%llu", (unsigned long long)(r->seconds * 1000.0));
  if (r->over_size_count) {
    F("max_size", "%" PRIu64, r->max_size);
    F("over_size_count", "%zu", r->over_size_count);
    F("over_size_bytes", "%" PRIu64, r->over_size_bytes);
  }
#undef F
  if (err == 0 && r->message[0]) {
    char m[sizeof r->message + 16];
    snprintf(m, sizeof m, "message %s", r->message);
    err = worker_line_append(&buf, &len, &cap, "result", m);
  }
  for (size_t i = 0; err == 0 && i < r->stuck_count; i++) {
    const struct engine_stuck *s = &r->stuck[i];
    char line[sizeof s->uid + 80];
    /* UIDs are printable ASCII without spaces (RFC 1939); an empty one
     * (no UIDL) is written as "-". */
    snprintf(line, sizeof line, "%lu %llu %u %s", s->number, (unsigned long long)s->size,
             s->attempts, s->uid[0] ? s->uid : "-");
    err = worker_line_append(&buf, &len, &cap, "stuck", line);
    if (err == 0)
      err = worker_line_append(&buf, &len, &cap, "stuck_error", s->last_error);
  }
  for (size_t i = 0; err == 0 && i < r->over_size_n && i < WORKER_OVER_SIZE_MAX; i++) {
    const struct engine_over_size *o = &r->over_size[i];
    char line[sizeof o->uid + 48];
    snprintf(line, sizeof line, "%lu %llu %s", o->number, (unsigned long long)o->size,
             o->uid[0] ? o->uid : "-");
    err = worker_line_append(&buf, &len, &cap, "over_size", line);
  }
  if (err == 0)
    err = worker_line_append(&buf, &len, &cap, "done", "");
  if (err) {
    free(buf);
    return err;
  }
  *buf_r = buf;
  *len_r = len;
  return 0;
}

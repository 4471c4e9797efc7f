/* libFuzzer target: the POP3 session state machine (session.c) against
 * hostile server bytes.
 *
 * Input: a 6-byte header that scripts the client side, then the server's
 * bytes.  The header picks the options (pipelining mode, window, STLS,
 * implicit TLS, keep, no_utf8), which messages the owner probes, skips or
 * marks delete-only in `listed', which saves fail, whether the run is
 * stopped half-way, and how the server bytes are split into chunks (one
 * line each, or pseudo-random sizes).  The
 * owner acts like the engine: saves, the barrier and the TLS handshake
 * complete after session_feed() returns, never from inside a callback.
 *
 * Checked (abort on violation), whatever the server sends:
 *  - done runs exactly once, and no callback runs after it except the
 *    owner-driven ones; msg_begin/msg_data/msg_end/msg_abort nest properly,
 *    probe_data only between a TOP's +OK and its probe_end, probed once;
 *  - every line the client sends is one command ending in CRLF, with no
 *    stray CR, LF or NUL; the password appears only in PASS;
 *  - no RETR for a skipped or delete-only message, no DELE for a message
 *    that is neither saved nor delete-only (and none in keep mode for
 *    retrieved ones), no DELE or QUIT after a desync or a failed save, no
 *    QUIT before the barrier when something was saved or while a retrieved
 *    message is unsaved or was discarded, no TOP or UTF8 that
 *    the options forbid;
 *  - UIDs are 1..P3_UID_MAX printable characters, DUPUID marks exactly the
 *    UIDs listed more than once, VERIFIED only on retrieved messages;
 *  - the byte count in the stats equals what msg_data received. */
#include "config.h"

#include "errors.h"
#include "session.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HEADER 6
#define MAX_PENDING 4096
#define PASSWORD "s3cret-pw"

#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c)) {                                                                                    \
      fprintf(stderr, "fuzz_session: %s:%d: %s\n", __FILE__, __LINE__, #c);                        \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

struct owner {
  struct session *s;
  struct session_options opts;
  uint8_t probe_mask, skip_mask, delete_mask, fail_mask;
  int done;
  int done_err;
  int open;           /* message whose body is open, or -1 */
  int probe_open;     /* a probe reply is being received (its index), or -1 */
  int probed;         /* probed calls */
  int listed;         /* listed calls */
  int barrier_wanted; /* barrier called, not yet answered */
  int barrier_done;
  int tls_wanted;
  int desynced; /* the session reported a desync or protocol error */
  int save_failed;
  int aborted; /* a body was discarded (cut off, failed a check) */
  uint64_t bytes;
  size_t *pending; /* msg_end'ed indexes whose save is still to report */
  size_t npending;
  uint8_t *ended; /* per message: msg_end seen */
  uint8_t *probe_ended;
  size_t nmsgs;
  char line[8192]; /* client output not yet ending in LF */
  size_t line_len;
};

static int bit(uint8_t mask, size_t i) {
  return (mask >> (i % 8)) & 1;
}

static void ensure_msgs(struct owner *o) {
  size_t n = session_msg_count(o->s);
  if (n <= o->nmsgs)
    return;
  o->ended = realloc(o->ended, n);
  o->probe_ended = realloc(o->probe_ended, n);
  CHECK(o->ended != NULL && o->probe_ended != NULL);
  memset(o->ended + o->nmsgs, 0, n - o->nmsgs);
  memset(o->probe_ended + o->nmsgs, 0, n - o->nmsgs);
  o->nmsgs = n;
}

static int on_begin(void *d, size_t idx) {
  struct owner *o = d;
  CHECK(!o->done);
  CHECK(o->open == -1 && o->probe_open == -1);
  ensure_msgs(o);
  CHECK(idx < o->nmsgs);
  const struct session_msg *m = session_msg(o->s, idx);
  CHECK(!(m->flags & (SESSION_MSG_SKIP | SESSION_MSG_DELETE)));
  o->open = (int)idx;
  return 0;
}

static int on_data(void *d, size_t idx, const char *buf, size_t len) {
  struct owner *o = d;
  CHECK(!o->done);
  CHECK(o->open == (int)idx && len > 0);
  /* A failing write, now and then (a full disk). */
  if (bit(o->fail_mask, idx) && (o->fail_mask & 0x80) && len > 3)
    return -28;
  o->bytes += len; /* the stats count what was accepted */
  return 0;
}

static void on_end(void *d, size_t idx) {
  struct owner *o = d;
  CHECK(!o->done);
  CHECK(o->open == (int)idx);
  o->open = -1;
  o->ended[idx] = 1;
  CHECK(o->npending < MAX_PENDING);
  o->pending[o->npending++] = idx;
}

static void on_abort(void *d, size_t idx) {
  struct owner *o = d;
  CHECK(o->open == (int)idx);
  o->open = -1;
  o->aborted = 1;
}

static void on_start_tls(void *d) {
  struct owner *o = d;
  CHECK(!o->done && !o->tls_wanted);
  o->tls_wanted = 1;
}

static void on_barrier(void *d) {
  struct owner *o = d;
  CHECK(!o->done && !o->barrier_wanted && !o->barrier_done);
  CHECK(o->open == -1);
  o->barrier_wanted = 1;
}

static void on_listed(void *d) {
  struct owner *o = d;
  CHECK(!o->done && o->listed == 0);
  o->listed = 1;
  ensure_msgs(o);
  size_t n = session_msg_count(o->s);
  int unique = 1;
  for (size_t i = 0; i < n; i++) {
    const struct session_msg *m = session_msg(o->s, i);
    const char *uid = session_msg_uid(o->s, i);
    CHECK(m != NULL);
    if (i > 0)
      CHECK(m->num > session_msg(o->s, i - 1)->num);
    if (uid) {
      size_t len = strlen(uid);
      CHECK(len >= 1 && len <= P3_UID_MAX && len == m->uid_len);
      for (size_t k = 0; k < len; k++)
        CHECK((unsigned char)uid[k] >= 0x21 && (unsigned char)uid[k] <= 0x7e);
      CHECK(session_has_uidl(o->s));
    }
    /* DUPUID marks exactly the UIDs listed more than once (checked on a
     * bounded prefix: the listing can be long). */
    if (n <= 300) {
      int dup = 0;
      for (size_t j = 0; uid && j < n; j++)
        if (j != i && session_msg_uid(o->s, j) && strcmp(uid, session_msg_uid(o->s, j)) == 0)
          dup = 1;
      CHECK(dup == ((m->flags & SESSION_MSG_DUPUID) != 0));
      if (dup)
        unique = 0;
    }
    if (bit(o->probe_mask, i))
      session_probe_msg(o->s, i);
    if (bit(o->skip_mask, i))
      session_skip_msg(o->s, i);
    else if (bit(o->delete_mask, i))
      session_delete_only(o->s, i);
  }
  if (n <= 300)
    CHECK(unique == session_uids_unique(o->s));
}

static void on_failed(void *d, size_t idx, const char *why) {
  struct owner *o = d;
  ensure_msgs(o);
  CHECK(idx < o->nmsgs && why != NULL);
}

static void on_probe_data(void *d, size_t idx, const char *buf, size_t len) {
  struct owner *o = d;
  CHECK(!o->done && o->probed == 0 && len > 0);
  CHECK(o->probe_open == -1 || o->probe_open == (int)idx);
  CHECK(session_msg(o->s, idx)->flags & SESSION_MSG_PROBE);
  o->probe_open = (int)idx;
}

static void on_probe_end(void *d, size_t idx, int ok) {
  struct owner *o = d;
  CHECK(!o->done && o->probed == 0);
  ensure_msgs(o);
  CHECK(idx < o->nmsgs && !o->probe_ended[idx]);
  CHECK(session_msg(o->s, idx)->flags & SESSION_MSG_PROBE);
  CHECK(o->probe_open == -1 || o->probe_open == (int)idx);
  CHECK(ok == 0 || ok == 1);
  o->probe_ended[idx] = 1;
  o->probe_open = -1;
}

static void on_probed(void *d) {
  struct owner *o = d;
  CHECK(!o->done && o->probed == 0 && o->probe_open == -1);
  o->probed = 1;
  for (size_t i = 0; i < o->nmsgs; i++)
    if (session_msg(o->s, i)->flags & SESSION_MSG_PROBE)
      CHECK(o->probe_ended[i]);
  /* Decisions may still change here. */
  if (o->nmsgs)
    session_skip_msg(o->s, o->nmsgs - 1);
}

static void check_command(struct owner *o, const char *line, size_t len);

/* Commands are checked as they are queued (the trace sees each one then),
 * against the state at that moment. */
static void on_trace(void *d, char dir, const char *line, size_t len) {
  CHECK(dir == 'C' || dir == 'S' || dir == '-');
  if (dir == 'C') {
    CHECK(memmem(line, len, PASSWORD, strlen(PASSWORD)) == NULL);
    check_command(d, line, len);
  }
}

static void on_done(void *d, int err) {
  struct owner *o = d;
  CHECK(!o->done);
  CHECK(o->open == -1);
  o->done = 1;
  o->done_err = err;
  if (err == P3_EDESYNC || err == P3_EPROTO)
    o->desynced = 1;
}

static const struct session_ops ops = {
    .msg_begin = on_begin,
    .msg_data = on_data,
    .msg_end = on_end,
    .msg_abort = on_abort,
    .start_tls = on_start_tls,
    .barrier = on_barrier,
    .listed = on_listed,
    .msg_failed = on_failed,
    .probe_data = on_probe_data,
    .probe_end = on_probe_end,
    .probed = on_probed,
    .trace = on_trace,
    .done = on_done,
};

/* Looks up a message by its number. */
static const struct session_msg *by_num(struct owner *o, unsigned long num, size_t *idx_r) {
  size_t n = session_msg_count(o->s);
  for (size_t i = 0; i < n; i++)
    if (session_msg(o->s, i)->num == num) {
      *idx_r = i;
      return session_msg(o->s, i);
    }
  return NULL;
}

/* One command as the trace shows it when it is queued (without CRLF). */
static void check_command(struct owner *o, const char *line, size_t len) {
  char cmd[8192];
  CHECK(len < sizeof cmd);
  memcpy(cmd, line, len);
  cmd[len] = '\0';
  unsigned long num;
  size_t idx;
  const struct session_msg *m;
  ensure_msgs(o);
  if (sscanf(cmd, "RETR %lu", &num) == 1) {
    m = by_num(o, num, &idx);
    CHECK(m != NULL);
    CHECK(!(m->flags & (SESSION_MSG_SKIP | SESSION_MSG_DELETE)));
  } else if (sscanf(cmd, "DELE %lu", &num) == 1) {
    m = by_num(o, num, &idx);
    CHECK(m != NULL && !o->desynced && !o->save_failed);
    CHECK((m->flags & SESSION_MSG_DELETE) || (!o->opts.keep && (m->flags & SESSION_MSG_SAVED)));
    CHECK(!(m->flags & SESSION_MSG_FAILED));
  } else if (sscanf(cmd, "TOP %lu", &num) == 1) {
    m = by_num(o, num, &idx);
    CHECK(m != NULL && (m->flags & SESSION_MSG_PROBE));
    CHECK(strcmp(cmd + strlen(cmd) - 2, " 0") == 0);
  } else if (strcmp(cmd, "QUIT") == 0) {
    /* Servers may delete what was retrieved at QUIT (EXPIRE 0): every
     * retrieved message must be saved by then, nothing discarded. */
    CHECK(!o->desynced && !o->save_failed && !o->aborted);
    const struct session_stats *st = session_stats(o->s);
    if (st->saved > 0)
      CHECK(o->barrier_done);
    for (size_t i = 0; i < o->nmsgs; i++)
      if (o->ended[i])
        CHECK(session_msg(o->s, i)->flags & SESSION_MSG_SAVED);
  } else if (strcmp(cmd, "UTF8") == 0) {
    CHECK(!o->opts.no_utf8 && session_caps(o->s)->utf8);
  }
}

/* One line as sent: a command ending in CRLF, no other CR, LF or NUL, and
 * the password only as PASS's argument. */
static void check_wire_line(const char *line, size_t len) {
  CHECK(len >= 2 && line[len - 2] == '\r' && line[len - 1] == '\n');
  for (size_t i = 0; i + 2 < len; i++)
    CHECK(line[i] != '\r' && line[i] != '\n' && line[i] != '\0');
  if (memmem(line, len, PASSWORD, strlen(PASSWORD)) != NULL)
    CHECK(len == 5 + strlen(PASSWORD) + 2 && memcmp(line, "PASS ", 5) == 0);
}

static void take_output(struct owner *o) {
  char *out;
  size_t n = session_take_output(o->s, &out);
  for (size_t i = 0; i < n; i++) {
    CHECK(o->line_len < sizeof o->line);
    o->line[o->line_len++] = out[i];
    if (out[i] == '\n') {
      check_wire_line(o->line, o->line_len);
      o->line_len = 0;
    }
  }
  free(out);
  CHECK(o->line_len == 0); /* commands are queued whole */
}

/* What the engine does on the loop after a callback returned: report
 * saves, the barrier, the handshake. */
static void settle(struct owner *o) {
  for (int round = 0; round < 8; round++) {
    int acted = 0;
    while (o->npending > 0) {
      size_t idx = o->pending[--o->npending];
      int err = bit(o->fail_mask, idx) && !(o->fail_mask & 0x80) ? -5 : 0;
      if (err)
        o->save_failed = 1;
      session_saved(o->s, idx, err);
      take_output(o);
      acted = 1;
    }
    if (o->barrier_wanted && !o->done) {
      o->barrier_wanted = 0;
      o->barrier_done = 1;
      session_barrier_done(o->s, 0);
      take_output(o);
      acted = 1;
    }
    if (o->tls_wanted && !o->done) {
      o->tls_wanted = 0;
      session_tls_ready(o->s);
      take_output(o);
      acted = 1;
    }
    if (!acted)
      break;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < HEADER)
    return 0;
  struct owner *o = calloc(1, sizeof *o);
  CHECK(o != NULL);
  o->pending = malloc(MAX_PENDING * sizeof *o->pending);
  CHECK(o->pending != NULL);
  o->open = -1;
  o->probe_open = -1;
  static const enum session_pipelining modes[4] = {SESSION_PIPELINING_ON, SESSION_PIPELINING_AUTO,
                                                   SESSION_PIPELINING_OFF, SESSION_PIPELINING_ON};
  o->opts = (struct session_options){
      .user = "user",
      .password = PASSWORD,
      .pipelining = modes[data[0] & 3],
      .starttls = (data[0] >> 2) & 1,
      .tls_active = (data[0] >> 3) & 1,
      .keep = (data[0] >> 4) & 1,
      .no_utf8 = (data[0] >> 5) & 1,
      .window = 1u + (data[1] & 7),
  };
  int stop_at_half = (data[0] >> 6) & 1;
  int timeout_at_end = (data[0] >> 7) & 1;
  o->probe_mask = data[2];
  o->skip_mask = data[3];
  o->delete_mask = data[4] & 0x7f;
  o->fail_mask = (data[4] & 0x80) ? data[1] : 0;
  uint32_t seed = data[5];
  const char *in = (const char *)data + HEADER;
  size_t n = size - HEADER;

  o->s = session_new(&o->opts, &ops, o);
  CHECK(o->s != NULL);
  take_output(o);

  size_t pos = 0;
  int stopped = 0;
  while (pos < n && !o->done) {
    size_t len;
    if (seed & 0x80) {
      /* A line per chunk: the owner answers between the server's replies,
       * as a real server waits for the commands (the seeds use this). */
      const char *lf = memchr(in + pos, '\n', n - pos);
      len = lf ? (size_t)(lf - (in + pos)) + 1 : n - pos;
    } else {
      seed = seed * 1103515245u + 12345u;
      len = (seed >> 16) % 64 + 1;
      if ((seed >> 28) < 4)
        len = n - pos;
      if (len > n - pos)
        len = n - pos;
    }
    /* Exactly len bytes, so an over-read is an ASan report. */
    char *chunk = malloc(len);
    CHECK(chunk != NULL);
    memcpy(chunk, in + pos, len);
    int r = session_feed(o->s, chunk, len);
    free(chunk);
    CHECK(r == 0 || o->done);
    pos += len;
    take_output(o);
    settle(o);
    if (stop_at_half && !stopped && pos >= n / 2) {
      stopped = 1;
      session_stop(o->s);
      take_output(o);
      settle(o);
    }
  }
  if (!o->done) {
    if (timeout_at_end)
      session_timeout(o->s);
    else
      session_connection_lost(o->s, 0);
  }
  CHECK(o->done);
  CHECK(session_finished(o->s));
  /* Saves still in flight report after the end, as in the engine. */
  settle(o);
  CHECK(o->open == -1);
  CHECK(session_stats(o->s)->bytes == o->bytes);
  for (size_t i = 0; i < session_msg_count(o->s); i++) {
    const struct session_msg *m = session_msg(o->s, i);
    ensure_msgs(o);
    if (m->flags & SESSION_MSG_VERIFIED)
      CHECK(o->ended[i]);
    if (m->flags & SESSION_MSG_SAVED)
      CHECK(o->ended[i]);
  }
  CHECK(session_error_text(o->s) != NULL);
  session_free(o->s);
  free(o->pending);
  free(o->ended);
  free(o->probe_ended);
  free(o);
  return 0;
}

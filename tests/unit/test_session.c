/* The session state machine, driven by scripted server replies: no sockets,
 * no files.  Checks what the client sends, in how many writes, and that no
 * DELE or QUIT ever goes out when a reply cannot be trusted. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "errors.h"
#include "session.h"

#define MAXMSG 256

struct rec {
  struct session *s;
  char sent[1 << 16]; /* everything the client sent */
  size_t sent_len;
  int writes; /* non-empty outputs taken */
  char body[MAXMSG][512];
  size_t body_len[MAXMSG];
  int begun[MAXMSG], ended[MAXMSG], aborted[MAXMSG];
  int tls_started, barriers, done, done_err;
  int fail_data_at;    /* msg_data fails for this index (or -1) */
  int failed[MAXMSG];  /* msg_failed calls */
  char trace[1 << 15]; /* '-' notes, one per line */
  size_t trace_len;
  char ctrace[1 << 16]; /* 'C' lines as the -v trace shows them, one per line */
  size_t ctrace_len;
  /* Header probes: what each got, and the order of events ("E2:1 P "). */
  void (*on_listed)(struct rec *r);
  void (*on_probed)(struct rec *r);
  char probe[MAXMSG][256];
  size_t probe_len[MAXMSG];
  char events[256];
};

static int r_begin(void *d, size_t idx) {
  struct rec *r = d;
  r->begun[idx]++;
  r->body_len[idx] = 0;
  return 0;
}
static int r_data(void *d, size_t idx, const char *buf, size_t len) {
  struct rec *r = d;
  if ((int)idx == r->fail_data_at)
    return -28;
  if (r->body_len[idx] + len <= sizeof r->body[idx]) {
    memcpy(r->body[idx] + r->body_len[idx], buf, len);
  }
  r->body_len[idx] += len;
  return 0;
}
static void r_end(void *d, size_t idx) {
  ((struct rec *)d)->ended[idx]++;
}
static void r_abort(void *d, size_t idx) {
  ((struct rec *)d)->aborted[idx]++;
}
static void r_tls(void *d) {
  ((struct rec *)d)->tls_started++;
}
static void r_barrier(void *d) {
  ((struct rec *)d)->barriers++;
}
static void r_done(void *d, int err) {
  struct rec *r = d;
  r->done++;
  r->done_err = err;
}
static void r_failed(void *d, size_t idx, const char *why) {
  ((struct rec *)d)->failed[idx]++;
}
static void r_trace(void *d, char dir, const char *line, size_t len) {
  struct rec *r = d;
  if (dir == '-' && r->trace_len + len + 2 < sizeof r->trace) {
    memcpy(r->trace + r->trace_len, line, len);
    r->trace_len += len;
    r->trace[r->trace_len++] = '\n';
    r->trace[r->trace_len] = '\0';
  }
  if (dir == 'C' && r->ctrace_len + len + 2 < sizeof r->ctrace) {
    memcpy(r->ctrace + r->ctrace_len, line, len);
    r->ctrace_len += len;
    r->ctrace[r->ctrace_len++] = '\n';
    r->ctrace[r->ctrace_len] = '\0';
  }
}
static void event(struct rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void event(struct rec *r, const char *fmt, ...) {
  size_t n = strlen(r->events);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->events + n, sizeof r->events - n, fmt, ap);
  va_end(ap);
}
static void r_listed(void *d) {
  struct rec *r = d;
  if (r->on_listed)
    r->on_listed(r);
}
static void r_probe_data(void *d, size_t idx, const char *buf, size_t len) {
  struct rec *r = d;
  if (r->probe_len[idx] + len <= sizeof r->probe[idx])
    memcpy(r->probe[idx] + r->probe_len[idx], buf, len);
  r->probe_len[idx] += len;
}
static void r_probe_end(void *d, size_t idx, int ok) {
  event(d, "E%zu:%d ", idx, ok);
}
static void r_probed(void *d) {
  struct rec *r = d;
  event(r, "P ");
  if (r->on_probed)
    r->on_probed(r);
}

static const struct session_ops ops = {
    .msg_begin = r_begin,
    .msg_data = r_data,
    .msg_end = r_end,
    .msg_abort = r_abort,
    .start_tls = r_tls,
    .barrier = r_barrier,
    .listed = r_listed,
    .msg_failed = r_failed,
    .probe_data = r_probe_data,
    .probe_end = r_probe_end,
    .probed = r_probed,
    .trace = r_trace,
    .done = r_done,
};

/* Takes the session's output; returns it (NUL-terminated, static). */
static const char *take(struct rec *r) {
  static char last[1 << 16];
  char *out;
  size_t n = session_take_output(r->s, &out);
  last[0] = '\0';
  if (n) {
    r->writes++;
    if (r->sent_len + n < sizeof r->sent) {
      memcpy(r->sent + r->sent_len, out, n);
      r->sent_len += n;
      r->sent[r->sent_len] = '\0';
    }
    if (n < sizeof last) {
      memcpy(last, out, n);
      last[n] = '\0';
    }
    free(out);
  }
  return last;
}

static void feed(struct rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void feed(struct rec *r, const char *fmt, ...) {
  static char buf[1 << 17];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  session_feed(r->s, buf, (size_t)n);
}

static struct rec *start(enum session_pipelining p, unsigned window, int starttls) {
  struct rec *r = calloc(1, sizeof *r);
  struct session_options o = {.user = "test",
                              .password = "secret",
                              .starttls = starttls,
                              .pipelining = p,
                              .window = window};
  r->fail_data_at = -1;
  r->s = session_new(&o, &ops, r);
  return r;
}

static void finish_rec(struct rec *r) {
  session_free(r->s);
  free(r);
}

static const char *capa_full = "+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\nSTLS\r\n.\r\n";

/* Logs in and lists n messages of body "Message I\r\n" (size 11 + digits). */
static void login_and_list(struct rec *r, int n, const char *capa) {
  feed(r, "+OK ready\r\n");
  CHECK_STR(take(r), "CAPA\r\n");
  feed(r, "%s", capa);
}

static void msg_body(int i, char *buf, size_t len) {
  snprintf(buf, len, "Message %d\r\n", i);
}

static void list_msgs(struct rec *r, int n) {
  static char buf[1 << 16];
  size_t off = 0;
  off += (size_t)snprintf(buf + off, sizeof buf - off, "+OK\r\n");
  for (int i = 1; i <= n; i++)
    off += (size_t)snprintf(buf + off, sizeof buf - off, "%d uid-%d\r\n", i, i);
  off += (size_t)snprintf(buf + off, sizeof buf - off, ".\r\n+OK %d messages\r\n", n);
  for (int i = 1; i <= n; i++) {
    char b[64];
    msg_body(i, b, sizeof b);
    off += (size_t)snprintf(buf + off, sizeof buf - off, "%d %zu\r\n", i, strlen(b));
  }
  off += (size_t)snprintf(buf + off, sizeof buf - off, ".\r\n");
  session_feed(r->s, buf, off);
}

/* Pipelined sessions with UIDL ask "UIDL n" before each "RETR n". */
static void uidl_reply(struct rec *r, int i) {
  if (session_pipelined(r->s) && session_has_uidl(r->s))
    feed(r, "+OK %d uid-%d\r\n", i, i);
}

static void retr_reply(struct rec *r, int i) {
  char b[64];
  msg_body(i, b, sizeof b);
  uidl_reply(r, i);
  feed(r, "+OK %zu octets\r\n%s.\r\n", strlen(b), b);
}

static void test_pipelined_happy(void) {
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 3, capa_full);
  CHECK_STR(take(r), "USER test\r\nPASS secret\r\n");
  feed(r, "+OK\r\n+OK logged in\r\n");
  CHECK_STR(take(r), "UIDL\r\nLIST\r\n");
  list_msgs(r, 3);
  CHECK_STR(take(r), "UIDL 1\r\nRETR 1\r\nUIDL 2\r\nRETR 2\r\nUIDL 3\r\nRETR 3\r\n");
  CHECK_STR(session_msg_uid(r->s, 1), "uid-2");
  /* All three replies, fed one byte at a time. */
  char all[512];
  size_t off = 0;
  for (int i = 1; i <= 3; i++) {
    char b[64];
    msg_body(i, b, sizeof b);
    off += (size_t)snprintf(all + off, sizeof all - off,
                            "+OK %d uid-%d\r\n+OK %zu octets\r\n%s.\r\n", i, i, strlen(b), b);
  }
  for (size_t i = 0; i < off; i++)
    session_feed(r->s, all + i, 1);
  CHECK_INT(r->ended[0] + r->ended[1] + r->ended[2], 3);
  CHECK_MEM(r->body[1], r->body_len[1], "Message 2\n", 10);
  CHECK_STR(take(r), ""); /* no DELE before the saves are reported */
  session_saved(r->s, 0, 0);
  session_saved(r->s, 2, 0);
  CHECK_STR(take(r), ""); /* DELEs go out together */
  session_saved(r->s, 1, 0);
  CHECK_STR(take(r), "DELE 1\r\nDELE 3\r\nDELE 2\r\n");
  CHECK_INT(r->barriers, 1);
  feed(r, "+OK\r\n+OK\r\n+OK\r\n");
  CHECK_STR(take(r), ""); /* QUIT waits for the barrier */
  session_barrier_done(r->s, 0);
  CHECK_STR(take(r), "QUIT\r\n");
  CHECK_INT(r->done, 0);
  feed(r, "+OK bye\r\n");
  CHECK_INT(r->done, 1);
  CHECK_INT(r->done_err, 0);
  CHECK_INT(session_stats(r->s)->deleted, 3);
  /* Round trips as causal depth: greeting, CAPA, USER+PASS, UIDL+LIST, the
   * RETRs, then DELE and QUIT (QUIT waits for the barrier, not for the DELE
   * replies), however the replies were chunked. */
  CHECK_INT(session_round_trips(r->s), 6);
  finish_rec(r);
}

/* With every RETR verified by UIDL n, QUIT need not wait for the DELE
 * replies (one round trip less); it still waits for the barrier. */
static void test_quit_after_verified_deles(void) {
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 2, capa_full);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_msgs(r, 2);
  take(r);
  retr_reply(r, 1);
  retr_reply(r, 2);
  session_saved(r->s, 0, 0);
  session_saved(r->s, 1, 0);
  CHECK_STR(take(r), "DELE 1\r\nDELE 2\r\n");
  CHECK_STR(take(r), "");
  session_barrier_done(r->s, 0);
  CHECK_STR(take(r), "QUIT\r\n");
  feed(r, "+OK\r\n+OK\r\n+OK bye\r\n");
  CHECK_INT(r->done_err, 0);
  CHECK_INT(session_stats(r->s)->deleted, 2);
  finish_rec(r);

  /* Without UIDL nothing verified the RETRs: QUIT waits for every reply. */
  r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 1, capa_full);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  feed(r, "-ERR no UIDL\r\n+OK\r\n1 11\r\n.\r\n");
  CHECK_STR(take(r), "RETR 1\r\n");
  feed(r, "+OK 11 octets\r\nMessage 1\r\n.\r\n");
  session_saved(r->s, 0, 0);
  CHECK_STR(take(r), "DELE 1\r\n");
  session_barrier_done(r->s, 0);
  CHECK_STR(take(r), "");
  feed(r, "+OK\r\n");
  CHECK_STR(take(r), "QUIT\r\n");
  CHECK_INT(session_round_trips(r->s), 7); /* QUIT after the DELE reply: one more */
  finish_rec(r);
}

static void test_burst_count(void) {
  /* 100 messages, plaintext, PIPELINING: at most 8 writes, no clock. */
  struct rec *r = start(SESSION_PIPELINING_AUTO, 0, 0);
  login_and_list(r, 100, capa_full);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_msgs(r, 100);
  take(r);
  for (int i = 1; i <= 100; i++) {
    retr_reply(r, i);
    take(r);
  }
  for (int i = 0; i < 100; i++) {
    session_saved(r->s, (size_t)i, 0);
    take(r);
  }
  for (int i = 0; i < 100; i++)
    feed(r, "+OK\r\n");
  session_barrier_done(r->s, 0);
  take(r);
  feed(r, "+OK\r\n");
  CHECK_INT(r->done_err, 0);
  CHECK(r->writes <= 8);
  CHECK_INT(r->writes, 6);
  CHECK_INT(session_round_trips(r->s), 6);
  finish_rec(r);
}

static void test_lockstep(void) {
  struct rec *r = start(SESSION_PIPELINING_OFF, 0, 0);
  login_and_list(r, 2, capa_full);
  CHECK_STR(take(r), "USER test\r\n");
  feed(r, "+OK\r\n");
  CHECK_STR(take(r), "PASS secret\r\n");
  feed(r, "+OK\r\n");
  CHECK_STR(take(r), "UIDL\r\n");
  feed(r, "+OK\r\n1 a\r\n2 b\r\n.\r\n");
  CHECK_STR(take(r), "LIST\r\n");
  feed(r, "+OK\r\n1 11\r\n2 11\r\n.\r\n");
  CHECK_STR(take(r), "RETR 1\r\n");
  retr_reply(r, 1);
  CHECK_STR(take(r), "RETR 2\r\n");
  session_saved(r->s, 0, 0);
  CHECK_STR(take(r), "");
  retr_reply(r, 2);
  CHECK_STR(take(r), "DELE 1\r\n");
  session_saved(r->s, 1, 0);
  feed(r, "+OK\r\n");
  CHECK_STR(take(r), "DELE 2\r\n");
  feed(r, "+OK\r\n");
  CHECK_INT(r->barriers, 1);
  session_barrier_done(r->s, 0);
  CHECK_STR(take(r), "QUIT\r\n");
  feed(r, "+OK\r\n");
  CHECK_INT(r->done_err, 0);
  /* Lock-step: greeting, CAPA, USER, PASS, UIDL, LIST, RETR 1, RETR 2, DELE 1
   * (with RETR 2's reply), DELE 2, QUIT. */
  CHECK_INT(session_round_trips(r->s), 11);
  finish_rec(r);
}

static void test_auto_without_pipelining(void) {
  struct rec *r = start(SESSION_PIPELINING_AUTO, 0, 0);
  login_and_list(r, 1, "+OK\r\nUSER\r\n.\r\n");
  CHECK_STR(take(r), "USER test\r\n");
  CHECK_INT(session_pipelined(r->s), 0);
  finish_rec(r);
}

static void test_no_capa(void) {
  /* No CAPA (popa3d, solid-pop3d): USER/PASS, but PASS waits for USER's
   * +OK, since nothing said the server takes USER. */
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 1, "-ERR unknown command\r\n");
  CHECK_STR(take(r), "USER test\r\n");
  CHECK_INT(session_has_capa(r->s), 0);
  feed(r, "+OK\r\n");
  CHECK_STR(take(r), "PASS secret\r\n");
  feed(r, "+OK\r\n");
  CHECK_STR(take(r), "UIDL\r\nLIST\r\n"); /* the rest is pipelined as before */
  finish_rec(r);

  /* USER refused: the password never goes out. */
  r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 1, "-ERR unknown command\r\n");
  take(r);
  feed(r, "-ERR [AUTH] plaintext logins are not allowed\r\n");
  CHECK_INT(r->done_err, P3_EAUTH);
  CHECK(strstr(r->sent, "PASS") == NULL);
  finish_rec(r);
}

/* Pipelined without UIDL nothing but LIST vouches for a RETR reply: a count
 * or a body of another size is a desync. */
static void list_no_uidl(struct rec *r, int n) {
  char buf[4096];
  size_t off = (size_t)snprintf(buf, sizeof buf, "-ERR no UIDL\r\n+OK\r\n");
  for (int i = 1; i <= n; i++)
    off += (size_t)snprintf(buf + off, sizeof buf - off, "%d %d\r\n", i, i < 10 ? 11 : 12);
  off += (size_t)snprintf(buf + off, sizeof buf - off, ".\r\n");
  session_feed(r->s, buf, off);
}

static void test_octets_desync(void) {
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 2, capa_full);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_no_uidl(r, 2);
  CHECK_STR(take(r), "RETR 1\r\nRETR 2\r\n");
  retr_reply(r, 1);
  session_saved(r->s, 0, 0);
  feed(r, "+OK 999 octets\r\nxx\r\n.\r\n");
  CHECK_INT(r->done, 1);
  CHECK_INT(r->done_err, P3_EDESYNC);
  take(r);
  CHECK(strstr(r->sent, "DELE") == NULL);
  CHECK(strstr(r->sent, "QUIT") == NULL);
  finish_rec(r);
}

static void test_size_desync_mid_body(void) {
  /* Without an octet count or an established identity, a body far larger
   * than LIST is a desync, and the partial delivery is aborted. */
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 1, capa_full);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_no_uidl(r, 1);
  CHECK_STR(take(r), "RETR 1\r\n");
  feed(r, "+OK message follows\r\nline one\r\nline two\r\nline three\r\n.\r\n");
  CHECK_INT(r->done_err, P3_EDESYNC);
  CHECK_INT(r->aborted[0], 1);
  CHECK_INT(r->ended[0], 0);
  take(r);
  CHECK(strstr(r->sent, "DELE") == NULL);
  finish_rec(r);
}

static void test_unsolicited_reply(void) {
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 1, capa_full);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_msgs(r, 1);
  take(r);
  retr_reply(r, 1);
  feed(r, "+OK extra\r\n");
  CHECK_INT(r->done_err, P3_EDESYNC);
  session_saved(r->s, 0, 0);
  take(r);
  CHECK(strstr(r->sent, "DELE") == NULL);
  CHECK(strstr(r->sent, "QUIT") == NULL);
  finish_rec(r);
}

static void test_retr_err(void) {
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 3, capa_full);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_msgs(r, 3);
  take(r);
  retr_reply(r, 1);
  uidl_reply(r, 2);
  feed(r, "-ERR [SYS/TEMP] cannot read message\r\n");
  retr_reply(r, 3);
  session_saved(r->s, 0, 0);
  session_saved(r->s, 2, 0);
  CHECK_STR(take(r), "DELE 1\r\nDELE 3\r\n");
  feed(r, "+OK\r\n+OK\r\n");
  session_barrier_done(r->s, 0);
  CHECK_STR(take(r), "QUIT\r\n");
  feed(r, "+OK\r\n");
  CHECK_INT(r->done_err, P3_EPARTIAL);
  CHECK_INT(session_stats(r->s)->failed, 1);
  finish_rec(r);
}

static void test_save_failure_no_quit(void) {
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 2, capa_full);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_msgs(r, 2);
  take(r);
  retr_reply(r, 1);
  retr_reply(r, 2);
  session_saved(r->s, 0, 0);
  session_saved(r->s, 1, -28);
  CHECK_INT(r->done_err, P3_ESAVE);
  take(r);
  CHECK(strstr(r->sent, "QUIT") == NULL);
  finish_rec(r);

  r = start(SESSION_PIPELINING_ON, 0, 0);
  r->fail_data_at = 0;
  login_and_list(r, 1, capa_full);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_msgs(r, 1);
  take(r);
  retr_reply(r, 1);
  CHECK_INT(r->done_err, P3_ESAVE);
  CHECK_INT(r->aborted[0], 1);
  take(r);
  CHECK(strstr(r->sent, "QUIT") == NULL);
  finish_rec(r);
}

static void test_auth_fail(void) {
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 1, capa_full);
  take(r);
  feed(r, "+OK\r\n-ERR [AUTH] Authentication failed.\r\n");
  CHECK_INT(r->done_err, P3_EAUTH);
  CHECK_STR(session_error_text(r->s), "[AUTH] Authentication failed.");
  finish_rec(r);

  r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 1, capa_full);
  take(r);
  feed(r, "+OK\r\n-ERR [IN-USE] mailbox locked\r\n");
  CHECK_INT(r->done_err, P3_EINUSE);
  finish_rec(r);
}

static void test_starttls(void) {
  /* No STLS offered: fail before any password is sent. */
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 1);
  login_and_list(r, 1, "+OK\r\nUSER\r\n.\r\n");
  CHECK_INT(r->done_err, P3_ENOSTLS);
  take(r);
  CHECK(strstr(r->sent, "PASS") == NULL);
  CHECK(strstr(r->sent, "USER") == NULL);
  finish_rec(r);

  /* STLS offered: plaintext after +OK is discarded, CAPA re-issued. */
  r = start(SESSION_PIPELINING_ON, 0, 1);
  login_and_list(r, 1, capa_full);
  CHECK_STR(take(r), "STLS\r\n");
  feed(r, "+OK begin TLS\r\n+OK injected\r\n");
  CHECK_INT(r->tls_started, 1);
  CHECK_INT(r->done, 0);
  session_tls_ready(r->s);
  CHECK_STR(take(r), "CAPA\r\n");
  feed(r, "+OK\r\nUSER\r\nPIPELINING\r\n.\r\n");
  CHECK_STR(take(r), "USER test\r\nPASS secret\r\n");
  finish_rec(r);

  /* STLS refused. */
  r = start(SESSION_PIPELINING_ON, 0, 1);
  login_and_list(r, 1, "-ERR\r\n");
  CHECK_STR(take(r), "STLS\r\n");
  feed(r, "-ERR not here\r\n");
  CHECK_INT(r->done_err, P3_ENOSTLS);
  take(r);
  CHECK(strstr(r->sent, "PASS") == NULL);
  finish_rec(r);
}

static void test_window(void) {
  struct rec *r = start(SESSION_PIPELINING_ON, 4, 0);
  login_and_list(r, 10, capa_full);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_msgs(r, 10);
  CHECK_STR(take(r), "UIDL 1\r\nRETR 1\r\nUIDL 2\r\nRETR 2\r\nUIDL 3\r\nRETR 3\r\nUIDL 4\r\n"
                     "RETR 4\r\n");
  retr_reply(r, 1);
  CHECK_STR(take(r), "");
  session_saved(r->s, 0, 0);
  retr_reply(r, 2);
  /* Half the window drained: refill, with the ready DELE riding along. */
  CHECK_STR(take(r), "UIDL 5\r\nRETR 5\r\nUIDL 6\r\nRETR 6\r\nDELE 1\r\n");
  finish_rec(r);
}

/* A RETR reply that went missing shifts every later reply by one: the UIDL
 * check before each RETR catches it at once, before anything is saved under
 * the wrong UID, even when every message has the same size. */
static void test_missing_reply_caught(void) {
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 3, capa_full);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_msgs(r, 3);
  take(r);
  retr_reply(r, 1);
  /* UIDL 2's reply comes, RETR 2's is lost, and UIDL 3's reply arrives
   * where RETR 2's belongs. */
  feed(r, "+OK 2 uid-2\r\n");
  feed(r, "+OK 3 uid-3\r\n");
  CHECK_INT(r->done_err, P3_EDESYNC);
  CHECK_INT(r->ended[1], 0);
  take(r);
  CHECK(strstr(r->sent, "DELE") == NULL);
  finish_rec(r);

  /* A duplicated reply: RETR 1's reply twice, read where UIDL 2's belongs. */
  r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 3, capa_full);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_msgs(r, 3);
  take(r);
  retr_reply(r, 1);
  feed(r, "+OK 11 octets\r\nMessage 1\r\n.\r\n");
  CHECK_INT(r->done_err, P3_EDESYNC);
  CHECK_INT(r->begun[1], 0);
  finish_rec(r);
}

static void test_empty_mailbox(void) {
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 0, capa_full);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_msgs(r, 0);
  CHECK_STR(take(r), "QUIT\r\n");
  CHECK_INT(r->barriers, 0);
  feed(r, "+OK\r\n");
  CHECK_INT(r->done, 1);
  CHECK_INT(r->done_err, 0);
  finish_rec(r);
}

static void test_eof_mid_body(void) {
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 1, capa_full);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_msgs(r, 1);
  take(r);
  uidl_reply(r, 1);
  feed(r, "+OK 11 octets\r\nMess");
  session_connection_lost(r->s, 0);
  CHECK_INT(r->done_err, P3_EEOF);
  CHECK_INT(r->aborted[0], 1);
  finish_rec(r);
}

static void test_injection(void) {
  struct session_options o = {.user = "test\r\nDELE 1", .password = "x"};
  struct rec *r = calloc(1, sizeof *r);
  r->fail_data_at = -1;
  r->s = session_new(&o, &ops, r);
  login_and_list(r, 0, capa_full);
  CHECK_INT(r->done, 1);
  take(r);
  CHECK(strstr(r->sent, "DELE") == NULL);
  finish_rec(r);
}

/* ---- issue 9: the servers people actually run */

static const char *capa_top = "+OK\r\nUSER\r\nUIDL\r\nTOP\r\nPIPELINING\r\n.\r\n";

/* Logs in (pipelined or not) and feeds a UIDL and a LIST listing. */
static void login_with(struct rec *r, const char *capa, const char *uidl, const char *list) {
  feed(r, "+OK ready\r\n");
  take(r);
  feed(r, "%s", capa);
  take(r);
  if (session_pipelined(r->s)) {
    feed(r, "+OK\r\n+OK\r\n");
    take(r);
    feed(r, "%s%s", uidl, list);
  } else {
    feed(r, "+OK\r\n");
    take(r);
    feed(r, "+OK\r\n");
    take(r);
    feed(r, "%s", uidl);
    take(r);
    feed(r, "%s", list);
  }
}

/* A body of exactly `octets` wire octets (CRLF lines of up to 80). */
static size_t make_body(char *buf, size_t octets) {
  size_t off = 0;
  while (off < octets) {
    size_t left = octets - off, len = left > 80 ? 80 : left;
    if (left > 80 && left - 80 < 2)
      len = 78; /* leave room for a last CRLF */
    memset(buf + off, 'x', len - 2);
    memcpy(buf + off + len - 2, "\r\n", 2);
    off += len;
  }
  buf[off] = '\0';
  return off;
}

static size_t count_lines(const char *b) {
  size_t n = 0;
  for (; *b; b++)
    n += *b == '\n';
  return n;
}

static void test_utf8(void) {
  const char *capa_utf8 = "+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\nUTF8 USER\r\n.\r\n";
  /* Advertised, pipelined: UTF8 goes out with UIDL and LIST. */
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 0, capa_utf8);
  CHECK_STR(take(r), "USER test\r\nPASS secret\r\n");
  feed(r, "+OK\r\n+OK\r\n");
  CHECK_STR(take(r), "UTF8\r\nUIDL\r\nLIST\r\n");
  feed(r, "+OK UTF8 enabled\r\n");
  list_msgs(r, 0);
  CHECK_STR(take(r), "QUIT\r\n");
  feed(r, "+OK\r\n");
  CHECK_INT(r->done_err, 0);
  finish_rec(r);

  /* Lock-step: UTF8 alone, then the listing; a refusal changes nothing. */
  r = start(SESSION_PIPELINING_OFF, 0, 0);
  login_and_list(r, 0, capa_utf8);
  CHECK_STR(take(r), "USER test\r\n");
  feed(r, "+OK\r\n");
  CHECK_STR(take(r), "PASS secret\r\n");
  feed(r, "+OK\r\n");
  CHECK_STR(take(r), "UTF8\r\n");
  feed(r, "-ERR no\r\n");
  CHECK_STR(take(r), "UIDL\r\n");
  CHECK_INT(r->done, 0);
  finish_rec(r);

  /* Not advertised: not sent. */
  r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 0, capa_full);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  CHECK_STR(take(r), "UIDL\r\nLIST\r\n");
  finish_rec(r);

  /* Advertised but turned off (utf8 = false). */
  struct session_options o = {.user = "test", .password = "secret", .no_utf8 = 1};
  r = calloc(1, sizeof *r);
  r->fail_data_at = -1;
  r->s = session_new(&o, &ops, r);
  login_and_list(r, 0, capa_utf8);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  CHECK_STR(take(r), "UIDL\r\nLIST\r\n");
  take(r);
  CHECK(strstr(r->sent, "UTF8") == NULL);
  finish_rec(r);
}

/* Courier without UTF8: LIST says 276, RETR announces and sends 979.  With
 * the reply's identity established by UIDL n it is delivered as served. */
static void test_resized_after_uidl_n(void) {
  static char body[2048];
  size_t blen = make_body(body, 979);
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  login_with(r, capa_full, "+OK\r\n1 a\r\n2 b\r\n.\r\n", "+OK\r\n1 276\r\n2 11\r\n.\r\n");
  CHECK_STR(take(r), "UIDL 1\r\nRETR 1\r\nUIDL 2\r\nRETR 2\r\n");
  feed(r, "+OK 1 a\r\n+OK 979 octets follow.\r\n%s.\r\n", body);
  CHECK_INT(r->done, 0);
  CHECK_INT(r->ended[0], 1);
  CHECK_INT(r->aborted[0], 0);
  CHECK_INT(r->body_len[0], blen - count_lines(body));
  CHECK(session_msg(r->s, 0)->flags & SESSION_MSG_VERIFIED);
  CHECK(session_msg(r->s, 0)->flags & SESSION_MSG_RESIZED);
  CHECK(strstr(r->trace, "message 1: RETR sent 979 octets but LIST said 276") != NULL);
  feed(r, "+OK 2 b\r\n+OK 11 octets\r\nMessage 2\r\n.\r\n");
  CHECK(session_msg(r->s, 1)->flags & SESSION_MSG_VERIFIED);
  CHECK(!(session_msg(r->s, 1)->flags & SESSION_MSG_RESIZED));
  session_saved(r->s, 0, 0);
  session_saved(r->s, 1, 0);
  CHECK_STR(take(r), "DELE 1\r\nDELE 2\r\n");
  session_barrier_done(r->s, 0);
  /* No QUIT before the DELE replies after a resized message: a body cut
   * short would have its rest still to come. */
  CHECK_STR(take(r), "");
  feed(r, "+OK\r\n+OK\r\n");
  CHECK_STR(take(r), "QUIT\r\n");
  feed(r, "+OK\r\n");
  CHECK_INT(r->done_err, 0);
  CHECK_INT(session_stats(r->s)->deleted, 2);
  finish_rec(r);

  /* Lock-step: the only reply outstanding, no UIDL n needed; no count. */
  r = start(SESSION_PIPELINING_OFF, 0, 0);
  login_with(r, capa_full, "+OK\r\n1 a\r\n.\r\n", "+OK\r\n1 276\r\n.\r\n");
  CHECK_STR(take(r), "RETR 1\r\n");
  feed(r, "+OK\r\n%s.\r\n", body);
  CHECK_INT(r->ended[0], 1);
  CHECK_INT(session_msg(r->s, 0)->flags & (SESSION_MSG_VERIFIED | SESSION_MSG_RESIZED),
            SESSION_MSG_VERIFIED | SESSION_MSG_RESIZED);
  CHECK_INT(r->done, 0);
  finish_rec(r);

  /* Pipelined, identity established, but the count not in "N octets" form
   * (a UIDL reply in the wrong place would look like that): desync. */
  r = start(SESSION_PIPELINING_ON, 0, 0);
  login_with(r, capa_full, "+OK\r\n1 a\r\n.\r\n", "+OK\r\n1 276\r\n.\r\n");
  take(r);
  feed(r, "+OK 1 a\r\n+OK 979 bytes\r\n%s.\r\n", body);
  CHECK_INT(r->done_err, P3_EDESYNC);
  CHECK_INT(r->begun[0], 0);
  finish_rec(r);

  /* Every matched message is VERIFIED, resized or not. */
  r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 1, capa_full);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_msgs(r, 1);
  take(r);
  retr_reply(r, 1);
  CHECK_INT(session_msg(r->s, 0)->flags & (SESSION_MSG_VERIFIED | SESSION_MSG_RESIZED),
            SESSION_MSG_VERIFIED);
  finish_rec(r);
}

/* The body does not match the count its +OK line announced: that message
 * fails (nothing saved, no desync), the others go on; it was retrieved, so
 * no QUIT (EXPIRE 0 servers would delete it) and no DELE. */
static void test_announced_count_mismatch(void) {
  static char body[1024];
  make_body(body, 500);
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  login_with(r, capa_full, "+OK\r\n1 a\r\n2 b\r\n.\r\n", "+OK\r\n1 276\r\n2 11\r\n.\r\n");
  take(r);
  feed(r, "+OK 1 a\r\n+OK 979 octets follow.\r\n%s.\r\n", body);
  CHECK_INT(r->done, 0);
  CHECK_INT(r->aborted[0], 1);
  CHECK_INT(r->ended[0], 0);
  CHECK_INT(r->failed[0], 1);
  CHECK(session_msg(r->s, 0)->flags & SESSION_MSG_FAILED);
  CHECK(!(session_msg(r->s, 0)->flags & SESSION_MSG_VERIFIED));
  feed(r, "+OK 2 b\r\n+OK 11 octets\r\nMessage 2\r\n.\r\n");
  CHECK_INT(r->ended[1], 1);
  session_saved(r->s, 1, 0);
  CHECK_INT(r->barriers, 1);
  session_barrier_done(r->s, 0);
  take(r);
  CHECK(strstr(r->sent, "DELE") == NULL);
  CHECK(strstr(r->sent, "QUIT") == NULL);
  CHECK_INT(r->done, 1);
  CHECK_INT(r->done_err, P3_EPARTIAL);
  CHECK_STR(session_error_text(r->s), "message 1: RETR announced 979 octets but sent 500");
  CHECK_INT(session_stats(r->s)->failed, 1);
  CHECK_INT(session_stats(r->s)->saved, 1);
  finish_rec(r);

  /* The same in lock-step, with a count equal to LIST's. */
  r = start(SESSION_PIPELINING_OFF, 0, 0);
  login_with(r, capa_full, "+OK\r\n1 a\r\n.\r\n", "+OK\r\n1 276\r\n.\r\n");
  take(r);
  feed(r, "+OK 276 octets\r\n%s.\r\n", body);
  CHECK_INT(r->failed[0], 1);
  CHECK_INT(r->aborted[0], 1);
  CHECK_INT(r->done_err, P3_EPARTIAL);
  take(r);
  CHECK(strstr(r->sent, "QUIT") == NULL);
  finish_rec(r);
}

/* A resized message followed by a broken stream loses VERIFIED (its body
 * may have been cut short at a stray "." line); the others keep it. */
static void test_resized_then_desync(void) {
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  login_with(r, capa_full, "+OK\r\n1 a\r\n2 b\r\n.\r\n", "+OK\r\n1 11\r\n2 400\r\n.\r\n");
  take(r);
  feed(r, "+OK 1 a\r\n+OK 11 octets\r\nMessage 1\r\n.\r\n");
  feed(r, "+OK 2 b\r\n+OK\r\nSubject: short\r\n\r\nbody\r\n.\r\n");
  CHECK_INT(session_msg(r->s, 1)->flags & (SESSION_MSG_VERIFIED | SESSION_MSG_RESIZED),
            SESSION_MSG_VERIFIED | SESSION_MSG_RESIZED);
  feed(r, "the rest of message 2\r\n");
  CHECK_INT(r->done_err, P3_EDESYNC);
  CHECK(session_msg(r->s, 0)->flags & SESSION_MSG_VERIFIED);
  CHECK_INT(session_msg(r->s, 1)->flags & (SESSION_MSG_VERIFIED | SESSION_MSG_RESIZED),
            SESSION_MSG_RESIZED);
  finish_rec(r);
}

static void test_long_uids(void) {
  static char uid300[301], uid600[601], uid5000[5001], buf[8192];
  memset(uid300, 'u', 300);
  memset(uid600, 'v', 600);
  memset(uid5000, 'w', 5000);

  /* 300 octets: a UID, checked by UIDL n like any other. */
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  snprintf(buf, sizeof buf, "+OK\r\n1 %s\r\n2 b\r\n.\r\n", uid300);
  login_with(r, capa_full, buf, "+OK\r\n1 11\r\n2 11\r\n.\r\n");
  CHECK_INT(session_has_uidl(r->s), 1);
  CHECK_STR(session_msg_uid(r->s, 0), uid300);
  CHECK_STR(take(r), "UIDL 1\r\nRETR 1\r\nUIDL 2\r\nRETR 2\r\n");
  feed(r, "+OK 1 %s\r\n+OK 11 octets\r\nMessage 1\r\n.\r\n", uid300);
  CHECK_INT(r->done, 0);
  CHECK(session_msg(r->s, 0)->flags & SESSION_MSG_VERIFIED);
  finish_rec(r);

  /* 600 octets, 5000 (longer than a line buffer), and a control
   * character: only those messages go without a UID (and without UIDL n). */
  const char *bad[] = {uid600, uid5000, "a\001b"};
  for (int k = 0; k < 3; k++) {
    r = start(SESSION_PIPELINING_ON, 0, 0);
    snprintf(buf, sizeof buf, "+OK\r\n1 x\r\n2 %s\r\n3 z\r\n.\r\n", bad[k]);
    login_with(r, capa_full, buf, "+OK\r\n1 11\r\n2 11\r\n3 11\r\n.\r\n");
    CHECK_INT(r->done, 0);
    CHECK_INT(session_has_uidl(r->s), 1);
    CHECK_STR(session_msg_uid(r->s, 0), "x");
    CHECK(session_msg_uid(r->s, 1) == NULL);
    CHECK_STR(session_msg_uid(r->s, 2), "z");
    CHECK_STR(take(r), "UIDL 1\r\nRETR 1\r\nRETR 2\r\nUIDL 3\r\nRETR 3\r\n");
    for (int i = 1; i <= 3; i++) {
      if (i != 2)
        feed(r, "+OK %d %s\r\n", i, i == 1 ? "x" : "z");
      feed(r, "+OK 11 octets\r\nMessage %d\r\n.\r\n", i);
    }
    CHECK_INT(r->ended[0] + r->ended[1] + r->ended[2], 3);
    /* Without UIDL n and outside lock-step, message 2's reply is unproven. */
    CHECK(!(session_msg(r->s, 1)->flags & SESSION_MSG_VERIFIED));
    CHECK(session_msg(r->s, 2)->flags & SESSION_MSG_VERIFIED);
    CHECK(strstr(r->trace, "1 of 3 messages have no usable UID") != NULL);
    finish_rec(r);
  }

  /* Every line malformed: as good as no UIDL. */
  r = start(SESSION_PIPELINING_ON, 0, 0);
  login_with(r, capa_full, "+OK\r\nnonsense\r\n1 a b\r\n.\r\n", "+OK\r\n1 11\r\n.\r\n");
  CHECK_INT(r->done, 0);
  CHECK_INT(session_has_uidl(r->s), 0);
  CHECK_STR(take(r), "RETR 1\r\n");
  finish_rec(r);

  /* One number listed twice: neither UID is trusted. */
  r = start(SESSION_PIPELINING_ON, 0, 0);
  login_with(r, capa_full, "+OK\r\n1 a\r\n1 b\r\n2 c\r\n.\r\n", "+OK\r\n1 11\r\n2 11\r\n.\r\n");
  CHECK(session_msg_uid(r->s, 0) == NULL);
  CHECK_STR(session_msg_uid(r->s, 1), "c");
  finish_rec(r);
}

static void test_duplicate_uids(void) {
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  login_with(r, capa_full, "+OK\r\n1 h\r\n2 x\r\n3 h\r\n4 y\r\n.\r\n",
             "+OK\r\n1 11\r\n2 11\r\n3 11\r\n4 11\r\n.\r\n");
  CHECK_INT(session_uids_unique(r->s), 0);
  CHECK(session_msg(r->s, 0)->flags & SESSION_MSG_DUPUID);
  CHECK(!(session_msg(r->s, 1)->flags & SESSION_MSG_DUPUID));
  CHECK(session_msg(r->s, 2)->flags & SESSION_MSG_DUPUID);
  CHECK(!(session_msg(r->s, 3)->flags & SESSION_MSG_DUPUID));
  CHECK_STR(session_msg_uid(r->s, 2), "h");
  finish_rec(r);

  r = start(SESSION_PIPELINING_ON, 0, 0);
  login_with(r, capa_full, "+OK\r\n1 h\r\n2 x\r\n.\r\n", "+OK\r\n1 11\r\n2 11\r\n.\r\n");
  CHECK_INT(session_uids_unique(r->s), 1);
  CHECK(!(session_msg(r->s, 0)->flags & SESSION_MSG_DUPUID));
  finish_rec(r);
}

static void probe_second(struct rec *r) {
  session_probe_msg(r->s, 1);
}
static void skip_second(struct rec *r) {
  session_skip_msg(r->s, 1);
}

static void test_probe(void) {
  /* Pipelined: UIDL n + TOP n 0 for the probed message only, then (after
   * `probed') the RETR batch without the message the owner skipped. */
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  r->on_listed = probe_second;
  r->on_probed = skip_second;
  login_and_list(r, 3, capa_top);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_msgs(r, 3);
  CHECK_STR(take(r), "UIDL 2\r\nTOP 2 0\r\n");
  CHECK(session_msg(r->s, 1)->flags & SESSION_MSG_PROBE);
  feed(r, "+OK 2 uid-2\r\n+OK\r\nSubject: x\r\n..dot\r\n\r\n");
  CHECK_STR(r->events, "");
  CHECK_STR(take(r), "");
  feed(r, ".\r\n");
  CHECK_MEM(r->probe[1], r->probe_len[1], "Subject: x\n.dot\n\n", 17);
  CHECK_STR(r->events, "E1:1 P ");
  CHECK_STR(take(r), "UIDL 1\r\nRETR 1\r\nUIDL 3\r\nRETR 3\r\n");
  retr_reply(r, 1);
  retr_reply(r, 3);
  session_saved(r->s, 0, 0);
  session_saved(r->s, 2, 0);
  CHECK_STR(take(r), "DELE 1\r\nDELE 3\r\n");
  session_barrier_done(r->s, 0);
  CHECK_STR(take(r), "QUIT\r\n");
  feed(r, "+OK\r\n+OK\r\n+OK\r\n");
  CHECK_INT(r->done_err, 0);
  CHECK_INT(session_stats(r->s)->skipped, 1);
  CHECK_INT(r->begun[1], 0);
  finish_rec(r);

  /* TOP refused: ok 0, then the transfer as usual. */
  r = start(SESSION_PIPELINING_ON, 0, 0);
  r->on_listed = probe_second;
  login_and_list(r, 2, capa_top);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_msgs(r, 2);
  CHECK_STR(take(r), "UIDL 2\r\nTOP 2 0\r\n");
  feed(r, "+OK 2 uid-2\r\n-ERR no\r\n");
  CHECK_STR(r->events, "E1:0 P ");
  CHECK_STR(take(r), "UIDL 1\r\nRETR 1\r\nUIDL 2\r\nRETR 2\r\n");
  finish_rec(r);

  /* CAPA without TOP: no TOP sent, each probe ends with ok 0 at once. */
  r = start(SESSION_PIPELINING_ON, 0, 0);
  r->on_listed = probe_second;
  login_and_list(r, 2, capa_full);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_msgs(r, 2);
  CHECK_STR(r->events, "E1:0 P ");
  CHECK_STR(take(r), "UIDL 1\r\nRETR 1\r\nUIDL 2\r\nRETR 2\r\n");
  finish_rec(r);

  /* Lock-step: TOP alone (its identity is established by the mode). */
  r = start(SESSION_PIPELINING_OFF, 0, 0);
  r->on_listed = probe_second;
  login_with(r, capa_top, "+OK\r\n1 a\r\n2 b\r\n.\r\n", "+OK\r\n1 11\r\n2 11\r\n.\r\n");
  CHECK_STR(take(r), "TOP 2 0\r\n");
  feed(r, "+OK\r\nSubject: y\r\n\r\n.\r\n");
  CHECK_STR(r->events, "E1:1 P ");
  CHECK_STR(take(r), "RETR 1\r\n");
  finish_rec(r);

  /* A UIDL n reply naming another message: desync, no probe result. */
  r = start(SESSION_PIPELINING_ON, 0, 0);
  r->on_listed = probe_second;
  login_and_list(r, 2, capa_top);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_msgs(r, 2);
  take(r);
  feed(r, "+OK 1 uid-1\r\n");
  CHECK_INT(r->done_err, P3_EDESYNC);
  CHECK_STR(r->events, "");
  finish_rec(r);

  /* Probing after the listing is ignored. */
  r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 2, capa_top);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_msgs(r, 2);
  CHECK_STR(take(r), "UIDL 1\r\nRETR 1\r\nUIDL 2\r\nRETR 2\r\n");
  session_probe_msg(r->s, 1);
  CHECK(!(session_msg(r->s, 1)->flags & SESSION_MSG_PROBE));
  finish_rec(r);
}

/* Courier over STLS: the connection drops where QUIT's reply belongs. */
static void test_quit_unanswered(void) {
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 1, capa_full);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_msgs(r, 1);
  take(r);
  retr_reply(r, 1);
  session_saved(r->s, 0, 0);
  CHECK_STR(take(r), "DELE 1\r\n");
  feed(r, "+OK\r\n");
  session_barrier_done(r->s, 0);
  CHECK_STR(take(r), "QUIT\r\n");
  session_connection_lost(r->s, 0);
  CHECK_INT(r->done_err, P3_EEOF);
  CHECK_STR(session_error_text(r->s),
            "it did not answer QUIT, so its deletions may not have been applied");
  finish_rec(r);

  /* Nothing deleted (an empty mailbox): no word about deletions. */
  r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 0, capa_full);
  take(r);
  feed(r, "+OK\r\n+OK\r\n");
  take(r);
  list_msgs(r, 0);
  CHECK_STR(take(r), "QUIT\r\n");
  session_connection_lost(r->s, 0);
  CHECK_STR(session_error_text(r->s), "it did not answer QUIT");
  finish_rec(r);
}

/* ---- login methods (issue 10) */

static struct rec *start_auth(enum session_auth auth, int tls, const char *user,
                              const char *password) {
  struct rec *r = calloc(1, sizeof *r);
  struct session_options o = {.user = user,
                              .password = password,
                              .auth = auth,
                              .host = "pop.example.com",
                              .port = 995,
                              .tls_active = tls,
                              .pipelining = SESSION_PIPELINING_ON};
  r->fail_data_at = -1;
  r->s = session_new(&o, &ops, r);
  return r;
}

/* Greeting text, then CAPA reply; returns what the client sent after it. */
static const char *greet_capa(struct rec *r, const char *greeting, const char *capa) {
  feed(r, "%s\r\n", greeting);
  CHECK_STR(take(r), "CAPA\r\n");
  feed(r, "%s", capa);
  return take(r);
}

/* The -v trace holds no secret: not the raw one, not the whole base64
 * payload, not any 16-character piece of it. */
static void check_masked(struct rec *r, const char *secret, const char *payload) {
  CHECK(strstr(r->ctrace, secret) == NULL);
  if (payload == NULL)
    return;
  size_t n = strlen(payload);
  CHECK(strstr(r->ctrace, payload) == NULL);
  for (size_t i = 0; i + 16 <= n; i++) {
    char piece[17];
    memcpy(piece, payload + i, 16);
    piece[16] = '\0';
    if (strstr(r->ctrace, piece) != NULL) {
      fprintf(stderr, "trace shows \"%s\" of the payload\n", piece);
      CHECK(0);
      break;
    }
  }
}

static void test_auth_auto_choice(void) {
  /* Plaintext, USER and SASL PLAIN offered: USER/PASS (pipelined). */
  struct rec *r = start_auth(SESSION_AUTH_AUTO, 0, "test", "secret");
  CHECK_STR(greet_capa(r, "+OK ready", "+OK\r\nUSER\r\nSASL PLAIN LOGIN\r\nPIPELINING\r\n.\r\n"),
            "USER test\r\nPASS secret\r\n");
  CHECK_INT(session_auth_used(r->s), SESSION_AUTH_USER);
  CHECK(strstr(r->trace, "login method user (auto)") != NULL);
  CHECK_STR(r->ctrace, "CAPA\nUSER test\nPASS ********\n");
  finish_rec(r);

  /* TLS, both offered: SASL PLAIN with an initial response. */
  r = start_auth(SESSION_AUTH_AUTO, 1, "test", "secret");
  CHECK_STR(greet_capa(r, "+OK ready", "+OK\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n"),
            "AUTH PLAIN AHRlc3QAc2VjcmV0\r\n");
  CHECK_INT(session_auth_used(r->s), SESSION_AUTH_PLAIN);
  CHECK_STR(r->ctrace, "CAPA\nAUTH PLAIN ********\n");
  check_masked(r, "secret", "AHRlc3QAc2VjcmV0");
  feed(r, "+OK logged in\r\n");
  CHECK_STR(take(r), "UIDL\r\nLIST\r\n");
  list_msgs(r, 0);
  CHECK_STR(take(r), "QUIT\r\n");
  feed(r, "+OK bye\r\n");
  CHECK_INT(r->done, 1);
  CHECK_INT(r->done_err, 0);
  finish_rec(r);

  /* TLS without SASL PLAIN: USER/PASS. */
  r = start_auth(SESSION_AUTH_AUTO, 1, "test", "secret");
  CHECK_STR(greet_capa(r, "+OK ready", "+OK\r\nUSER\r\nSASL CRAM-MD5\r\n.\r\n"),
            "USER test\r\nPASS secret\r\n");
  finish_rec(r);

  /* Plaintext, no USER (Cyrus with allowplaintext: no), SASL PLAIN only:
   * PLAIN, and never PASS. */
  r = start_auth(SESSION_AUTH_AUTO, 0, "test", "secret");
  CHECK_STR(greet_capa(r, "+OK ready <1.2@host>", "+OK\r\nUIDL\r\nSASL PLAIN\r\n.\r\n"),
            "AUTH PLAIN AHRlc3QAc2VjcmV0\r\n");
  feed(r, "+OK\r\n");
  CHECK_STR(take(r), "UIDL\r\nLIST\r\n");
  CHECK(strstr(r->sent, "PASS") == NULL);
  CHECK(strstr(r->sent, "USER") == NULL);
  finish_rec(r);

  /* A timestamp and USER: USER/PASS (solid-pop3d, Mailutils log in through
   * PAM, where APOP fails). */
  r = start_auth(SESSION_AUTH_AUTO, 0, "test", "secret");
  CHECK_STR(greet_capa(r, "+OK ready <1.2@host>", "+OK\r\nUSER\r\nPIPELINING\r\n.\r\n"),
            "USER test\r\nPASS secret\r\n");
  finish_rec(r);
  /* ... and without CAPA at all. */
  r = start_auth(SESSION_AUTH_AUTO, 0, "test", "secret");
  CHECK_STR(greet_capa(r, "+OK ready <1.2@host>", "-ERR what?\r\n"), "USER test\r\n");
  finish_rec(r);

  /* Neither USER nor SASL, a timestamp: APOP (RFC 1939's example). */
  r = start_auth(SESSION_AUTH_AUTO, 0, "mrose", "tanstaaf");
  CHECK_STR(greet_capa(r, "+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>",
                       "+OK\r\nUIDL\r\nTOP\r\n.\r\n"),
            "APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n");
  CHECK_INT(session_auth_used(r->s), SESSION_AUTH_APOP);
  CHECK_STR(r->ctrace, "CAPA\nAPOP mrose ********\n");
  check_masked(r, "c4c9334bac560ecc979e58001b3e22fb", NULL);
  check_masked(r, "tanstaaf", NULL);
  feed(r, "+OK maildrop has 0 messages\r\n");
  CHECK_STR(take(r), "UIDL\r\nLIST\r\n");
  finish_rec(r);

  /* APOP refused. */
  r = start_auth(SESSION_AUTH_AUTO, 0, "mrose", "tanstaaf");
  greet_capa(r, "+OK <1@h>", "+OK\r\nUIDL\r\n.\r\n");
  feed(r, "-ERR [AUTH] permission denied\r\n");
  CHECK_INT(r->done_err, P3_EAUTH);
  CHECK_STR(session_error_text(r->s), "[AUTH] permission denied");
  finish_rec(r);

  /* Only OAuth offered, or nothing at all: auto fails before any secret. */
  r = start_auth(SESSION_AUTH_AUTO, 1, "test", "secret");
  CHECK_STR(greet_capa(r, "+OK ready", "+OK\r\nUIDL\r\nSASL XOAUTH2 OAUTHBEARER\r\n.\r\n"), "");
  CHECK_INT(r->done_err, P3_EAUTHMECH);
  CHECK_STR(session_error_text(r->s),
            "server offers no login method that auth auto may use (it offers: SASL XOAUTH2 "
            "OAUTHBEARER); an OAuth method must be chosen explicitly");
  CHECK_STR(r->sent, "CAPA\r\n");
  finish_rec(r);
  r = start_auth(SESSION_AUTH_AUTO, 0, "test", "secret");
  CHECK_STR(greet_capa(r, "+OK ready", "+OK\r\nUIDL\r\nSTLS\r\n.\r\n"), "");
  CHECK_INT(r->done_err, P3_EAUTHMECH);
  CHECK_STR(session_error_text(r->s), "server offers no login method that auth auto may use (it "
                                      "offers: nothing); it may allow logins over TLS only");
  CHECK_STR(r->sent, "CAPA\r\n");
  CHECK_INT(p3_exit_status(r->done_err), 69);
  finish_rec(r);

  /* After STLS the choice uses the capabilities inside TLS. */
  struct session_options o = {.user = "test", .password = "secret", .starttls = 1};
  r = calloc(1, sizeof *r);
  r->fail_data_at = -1;
  r->s = session_new(&o, &ops, r);
  CHECK_STR(greet_capa(r, "+OK ready", "+OK\r\nSTLS\r\n.\r\n"), "STLS\r\n");
  feed(r, "+OK go\r\n");
  session_tls_ready(r->s);
  CHECK_STR(take(r), "CAPA\r\n");
  feed(r, "+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n");
  CHECK_STR(take(r), "AUTH PLAIN AHRlc3QAc2VjcmV0\r\n");
  finish_rec(r);
}

static void test_auth_forced_not_offered(void) {
  static const struct {
    enum session_auth auth;
    int tls;
    const char *greeting, *capa, *why;
  } v[] = {
      {SESSION_AUTH_XOAUTH2, 1, "+OK ready", "+OK\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n",
       "server does not offer SASL XOAUTH2 (it offers: PLAIN LOGIN)"},
      {SESSION_AUTH_OAUTHBEARER, 1, "+OK ready", "+OK\r\nUSER\r\n.\r\n",
       "server does not offer SASL OAUTHBEARER (it offers no SASL mechanism)"},
      {SESSION_AUTH_PLAIN, 0, "+OK ready", "-ERR\r\n",
       "server does not offer SASL PLAIN (it does not answer CAPA)"},
      {SESSION_AUTH_LOGIN, 0, "+OK ready", "+OK\r\nSASL plain\r\n.\r\n",
       "server does not offer SASL LOGIN (it offers: PLAIN)"},
      {SESSION_AUTH_USER, 0, "+OK ready <1@h>", "+OK\r\nSASL PLAIN\r\n.\r\n",
       "server does not offer USER (it offers: APOP, SASL PLAIN)"},
      {SESSION_AUTH_APOP, 0, "+OK ready", "+OK\r\nUSER\r\n.\r\n",
       "server does not offer APOP (its greeting has no timestamp)"},
  };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    struct rec *r = start_auth(v[i].auth, v[i].tls, "test", "secret");
    CHECK_STR(greet_capa(r, v[i].greeting, v[i].capa), "");
    CHECK_INT(r->done, 1);
    CHECK_INT(r->done_err, P3_EAUTHMECH);
    CHECK_STR(session_error_text(r->s), v[i].why);
    CHECK_STR(r->sent, "CAPA\r\n"); /* no secret, no USER, no AUTH */
    CHECK_INT(session_oauth_refused(r->s), 0);
    finish_rec(r);
  }

  /* Forced methods that are offered. */
  struct rec *r = start_auth(SESSION_AUTH_USER, 1, "test", "secret");
  CHECK_STR(greet_capa(r, "+OK ready", "-ERR\r\n"), "USER test\r\n");
  finish_rec(r);
  r = start_auth(SESSION_AUTH_APOP, 0, "mrose", "tanstaaf");
  CHECK_STR(greet_capa(r, "+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>",
                       "+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n"),
            "APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n");
  finish_rec(r);
  r = start_auth(SESSION_AUTH_PLAIN, 0, "test", "secret");
  CHECK_STR(greet_capa(r, "+OK ready", "+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n"),
            "AUTH PLAIN AHRlc3QAc2VjcmV0\r\n");
  finish_rec(r);
}

/* RFC 5034: the initial response only when the whole command fits in 255
 * octets.  "AUTH PLAIN " + base64 + CRLF: 13 + 4 * ceil((6 + n) / 3). */
static void test_auth_plain_255(void) {
  char pw[200];
  memset(pw, 'p', sizeof pw);
  pw[174] = '\0'; /* "\0test\0" + 174 = 180 octets: 240 base64, 253 in all */
  struct rec *r = start_auth(SESSION_AUTH_PLAIN, 1, "test", pw);
  const char *out = greet_capa(r, "+OK", "+OK\r\nSASL PLAIN\r\n.\r\n");
  CHECK_INT(strlen(out), 253);
  CHECK(strncmp(out, "AUTH PLAIN AHRlc3QA", 19) == 0);
  check_masked(r, pw, out + 11);
  finish_rec(r);

  pw[174] = 'p';
  pw[175] = '\0'; /* 181 octets: 244 base64, 257 in all: two steps */
  r = start_auth(SESSION_AUTH_PLAIN, 1, "test", pw);
  CHECK_STR(greet_capa(r, "+OK", "+OK\r\nSASL PLAIN\r\n.\r\n"), "AUTH PLAIN\r\n");
  feed(r, "+ \r\n");
  out = take(r);
  CHECK_INT(strlen(out), 246);
  CHECK(strncmp(out, "AHRlc3QA", 8) == 0);
  char payload[300];
  snprintf(payload, sizeof payload, "%.*s", (int)strlen(out) - 2, out);
  CHECK_STR(r->ctrace, "CAPA\nAUTH PLAIN\n********\n");
  check_masked(r, pw, payload);
  feed(r, "+OK\r\n");
  CHECK_STR(take(r), "UIDL\r\nLIST\r\n");
  finish_rec(r);

  /* A bare "+" is an empty challenge too. */
  r = start_auth(SESSION_AUTH_PLAIN, 1, "test", pw);
  greet_capa(r, "+OK", "+OK\r\nSASL PLAIN\r\n.\r\n");
  feed(r, "+\r\n");
  CHECK_INT(strlen(take(r)), 246);
  finish_rec(r);

  /* A challenge after the initial response: PLAIN has nothing more to say. */
  r = start_auth(SESSION_AUTH_PLAIN, 1, "test", "secret");
  greet_capa(r, "+OK", "+OK\r\nSASL PLAIN\r\n.\r\n");
  feed(r, "+ \r\n");
  CHECK_STR(take(r), "*\r\n");
  CHECK_INT(r->done, 0);
  feed(r, "-ERR [AUTH] cancelled\r\n");
  CHECK_INT(r->done_err, P3_EPROTO);
  CHECK_STR(session_error_text(r->s),
            "the server asked for more than SASL PLAIN has to say; the login was cancelled");
  finish_rec(r);
}

static void test_auth_login(void) {
  struct rec *r = start_auth(SESSION_AUTH_LOGIN, 1, "test", "secret");
  CHECK_STR(greet_capa(r, "+OK", "+OK\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n"), "AUTH LOGIN\r\n");
  feed(r, "+ VXNlcm5hbWU6\r\n");
  CHECK_STR(take(r), "dGVzdA==\r\n");
  /* One byte at a time. */
  const char *pwprompt = "+ UGFzc3dvcmQ6\r\n";
  for (size_t i = 0; pwprompt[i]; i++)
    session_feed(r->s, pwprompt + i, 1);
  CHECK_STR(take(r), "c2VjcmV0\r\n");
  CHECK_STR(r->ctrace, "CAPA\nAUTH LOGIN\n********\n********\n");
  check_masked(r, "secret", "c2VjcmV0");
  feed(r, "+OK\r\n");
  CHECK_STR(take(r), "UIDL\r\nLIST\r\n");
  finish_rec(r);

  /* A third prompt is cancelled; so is a challenge that is not base64. */
  r = start_auth(SESSION_AUTH_LOGIN, 1, "test", "secret");
  greet_capa(r, "+OK", "+OK\r\nSASL LOGIN\r\n.\r\n");
  feed(r, "+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n+ \r\n");
  CHECK_STR(take(r), "dGVzdA==\r\nc2VjcmV0\r\n*\r\n");
  feed(r, "-ERR\r\n");
  CHECK_INT(r->done_err, P3_EPROTO);
  finish_rec(r);

  r = start_auth(SESSION_AUTH_LOGIN, 1, "test", "secret");
  greet_capa(r, "+OK", "+OK\r\nSASL LOGIN\r\n.\r\n");
  feed(r, "+ Username:\r\n");
  CHECK_STR(take(r), "*\r\n");
  CHECK_STR(r->ctrace, "CAPA\nAUTH LOGIN\n*\n");
  feed(r, "-ERR cancelled\r\n");
  CHECK_INT(r->done_err, P3_EPROTO);
  CHECK_STR(session_error_text(r->s),
            "the server's SASL challenge is not valid base64; the login was cancelled");
  CHECK(strstr(r->sent, "c2VjcmV0") == NULL);
  finish_rec(r);

  /* A server that goes on after "*". */
  r = start_auth(SESSION_AUTH_LOGIN, 1, "test", "secret");
  greet_capa(r, "+OK", "+OK\r\nSASL LOGIN\r\n.\r\n");
  feed(r, "+ !\r\n+ \r\n");
  CHECK_INT(r->done_err, P3_EPROTO);
  finish_rec(r);

  /* Refused. */
  r = start_auth(SESSION_AUTH_LOGIN, 1, "test", "secret");
  greet_capa(r, "+OK", "+OK\r\nSASL LOGIN\r\n.\r\n");
  feed(r, "+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n-ERR [AUTH] no\r\n");
  CHECK_INT(r->done_err, P3_EAUTH);
  CHECK_INT(session_oauth_refused(r->s), 0);
  finish_rec(r);
}

/* A token of n characters (static). */
static const char *token(size_t n) {
  static char t[20000];
  for (size_t i = 0; i < n && i < sizeof t - 1; i++)
    t[i] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"[(i * 7) % 66];
  t[n] = '\0';
  return t;
}

static const char *const google_fail =
    "+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIG1hYyIsInNjb3BlIjoiaHR0cHM6Ly9tYWlsLmdvb2dsZS5j"
    "b20vIn0=\r\n";

static void test_auth_oauth(void) {
  /* XOAUTH2 with a 16 KiB token, always in two steps. */
  const char *tok = token(16384);
  struct rec *r = start_auth(SESSION_AUTH_XOAUTH2, 1, "me@example.com", tok);
  CHECK_STR(greet_capa(r, "+OK", "+OK\r\nUSER\r\nSASL PLAIN XOAUTH2 OAUTHBEARER\r\n.\r\n"),
            "AUTH XOAUTH2\r\n");
  feed(r, "+ \r\n");
  const char *out = take(r);
  size_t n = strlen(out);
  CHECK_INT(n, (5 + 14 + 13 + 16384 + 2 + 2) / 3 * 4 + 2);
  CHECK(strncmp(out, "dXNlcj1tZUBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciBh", 44) == 0);
  static char payload[30000];
  snprintf(payload, sizeof payload, "%.*s", (int)n - 2, out);
  CHECK_STR(r->ctrace, "CAPA\nAUTH XOAUTH2\n********\n");
  check_masked(r, tok, payload);
  feed(r, "+OK welcome\r\n");
  CHECK_STR(take(r), "UIDL\r\nLIST\r\n");
  CHECK_INT(session_auth_used(r->s), SESSION_AUTH_XOAUTH2);
  finish_rec(r);

  /* XOAUTH2 refused with Google's JSON challenge: an empty line, then the
   * -ERR; P3_EOAUTH so that the caller refreshes the token once. */
  r = start_auth(SESSION_AUTH_XOAUTH2, 1, "me@example.com", "expired");
  greet_capa(r, "+OK", "+OK\r\nSASL XOAUTH2\r\n.\r\n");
  feed(r, "+ \r\n");
  take(r);
  feed(r, "%s", google_fail);
  CHECK_STR(take(r), "\r\n");
  CHECK_INT(r->done, 0);
  feed(r, "-ERR [AUTH] Invalid credentials\r\n");
  CHECK_INT(r->done_err, P3_EOAUTH);
  CHECK_INT(session_oauth_refused(r->s), 1);
  CHECK_STR(session_error_text(r->s), "[AUTH] Invalid credentials (status 401)");
  CHECK_INT(p3_exit_status(P3_EOAUTH), 77);
  check_masked(r, "expired", NULL);
  finish_rec(r);

  /* OAUTHBEARER: host and port from the options; the error answer is AQ==. */
  r = start_auth(SESSION_AUTH_OAUTHBEARER, 1, "user@example.com",
                 "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==");
  greet_capa(r, "+OK", "+OK\r\nSASL OAUTHBEARER\r\n.\r\n");
  CHECK_STR(take(r), "");
  feed(r, "+ \r\n");
  CHECK_STR(take(r), "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9cG9wLmV4YW1wbGUuY29tAXBvcnQ9OTk1AWF1dG"
                     "g9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB\r\n");
  feed(r, "+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=\r\n");
  CHECK_STR(take(r), "AQ==\r\n");
  CHECK_STR(r->ctrace, "CAPA\nAUTH OAUTHBEARER\n********\nAQ==\n");
  feed(r, "-ERR authentication failed\r\n");
  CHECK_INT(r->done_err, P3_EOAUTH);
  CHECK_STR(session_error_text(r->s), "authentication failed (status invalid_token)");
  finish_rec(r);

  /* -ERR at once after the token, without a challenge. */
  r = start_auth(SESSION_AUTH_OAUTHBEARER, 1, "u", "t");
  greet_capa(r, "+OK", "+OK\r\nSASL OAUTHBEARER\r\n.\r\n");
  feed(r, "+ \r\n-ERR [AUTH] bad token\r\n");
  CHECK_INT(r->done_err, P3_EOAUTH);
  CHECK_INT(session_oauth_refused(r->s), 1);
  CHECK_STR(session_error_text(r->s), "[AUTH] bad token");
  finish_rec(r);

  /* A temporary failure is not the token's fault. */
  r = start_auth(SESSION_AUTH_XOAUTH2, 1, "u", "t");
  greet_capa(r, "+OK", "+OK\r\nSASL XOAUTH2\r\n.\r\n");
  feed(r, "+ \r\n-ERR [SYS/TEMP] try later\r\n");
  CHECK_INT(r->done_err, P3_ESYSTEMP);
  CHECK_INT(session_oauth_refused(r->s), 0);
  finish_rec(r);

  /* AUTH XOAUTH2 itself refused, before the token went out. */
  r = start_auth(SESSION_AUTH_XOAUTH2, 1, "u", "t");
  greet_capa(r, "+OK", "+OK\r\nSASL XOAUTH2\r\n.\r\n");
  feed(r, "-ERR no such mechanism\r\n");
  CHECK_INT(r->done_err, P3_EAUTH);
  CHECK_INT(session_oauth_refused(r->s), 0);
  finish_rec(r);

  /* A second failure challenge is cancelled. */
  r = start_auth(SESSION_AUTH_XOAUTH2, 1, "u", "t");
  greet_capa(r, "+OK", "+OK\r\nSASL XOAUTH2\r\n.\r\n");
  feed(r, "+ \r\n%s%s", google_fail, google_fail);
  take(r);
  CHECK(strstr(r->sent, "\r\n\r\n*\r\n") != NULL);
  feed(r, "-ERR\r\n");
  CHECK_INT(r->done_err, P3_EPROTO);
  finish_rec(r);

  /* A token with a line break never goes out. */
  r = start_auth(SESSION_AUTH_XOAUTH2, 1, "u", "to\r\nQUIT");
  greet_capa(r, "+OK", "+OK\r\nSASL XOAUTH2\r\n.\r\n");
  feed(r, "+ \r\n");
  CHECK_INT(r->done_err, P3_EUSAGE);
  CHECK(strstr(r->sent, "QUIT") == NULL);
  finish_rec(r);

  /* The names. */
  enum session_auth a;
  CHECK_INT(session_auth_parse("XOAuth2", &a), 0);
  CHECK_INT(a, SESSION_AUTH_XOAUTH2);
  CHECK_INT(session_auth_parse("oauthbearer", &a), 0);
  CHECK_INT(a, SESSION_AUTH_OAUTHBEARER);
  CHECK_INT(session_auth_parse("cram-md5", &a), P3_EUSAGE);
  CHECK_STR(session_auth_name(SESSION_AUTH_APOP), "apop");
  CHECK(session_auth_name((enum session_auth)99) == NULL);
  CHECK_INT(session_auth_is_oauth(SESSION_AUTH_PLAIN), 0);
  CHECK_INT(session_auth_is_oauth(SESSION_AUTH_OAUTHBEARER), 1);
}

/* USER/PASS stays as it was where USER is offered: pipelined, PASS masked. */
static void test_auth_user_masked(void) {
  struct rec *r = start(SESSION_PIPELINING_ON, 0, 0);
  login_and_list(r, 1, capa_full);
  CHECK_STR(take(r), "USER test\r\nPASS secret\r\n");
  CHECK(strstr(r->ctrace, "secret") == NULL);
  CHECK(strstr(r->ctrace, "PASS ********") != NULL);
  CHECK_INT(session_auth_used(r->s), SESSION_AUTH_USER);
  finish_rec(r);
}

/* ---- the one flight after the greeting (issue 11) */

static int mem_flight_listing = 1;
static int mem_greeting = 0;

static struct rec *start_mem(enum session_auth auth, int tls, int starttls,
                             enum session_pipelining p, const char *mem_capa, int mem_pipe) {
  struct rec *r = calloc(1, sizeof *r);
  struct session_options o = {.user = "test",
                              .password = "secret",
                              .auth = auth,
                              .tls_active = tls,
                              .starttls = starttls,
                              .pipelining = p,
                              .mem_capa = mem_capa,
                              .mem_pipelining = mem_pipe,
                              .mem_flight_listing = mem_flight_listing,
                              .mem_greeting = mem_greeting};
  r->fail_data_at = -1;
  r->s = session_new(&o, &ops, r);
  return r;
}

#define MEM_USER "USER TOP UIDL PIPELINING RESP-CODES SASL PLAIN"

/* Lists 2 messages, retrieves them, saves, DELE+QUIT: a clean end. */
static void flight_transfer(struct rec *r) {
  list_msgs(r, 2);
  if (session_pipelined(r->s)) {
    CHECK_STR(take(r), "UIDL 1\r\nRETR 1\r\nUIDL 2\r\nRETR 2\r\n");
    retr_reply(r, 1);
    retr_reply(r, 2);
    session_saved(r->s, 0, 0);
    session_saved(r->s, 1, 0);
    CHECK_STR(take(r), "DELE 1\r\nDELE 2\r\n");
    session_barrier_done(r->s, 0);
    CHECK_STR(take(r), "QUIT\r\n");
    feed(r, "+OK\r\n+OK\r\n+OK bye\r\n");
  } else {
    /* Lock-step: answer whatever single command is out, save what ended. */
    int saved[2] = {0, 0}, rounds = 0, barrier = 0;
    while (!r->done && rounds++ < 20) {
      const char *out = take(r);
      CHECK(strchr(out, '\n') == NULL || strchr(out, '\n')[1] == '\0'); /* one command */
      int n;
      if (sscanf(out, "RETR %d", &n) == 1)
        retr_reply(r, n);
      else if (strncmp(out, "DELE ", 5) == 0)
        feed(r, "+OK\r\n");
      else if (strcmp(out, "QUIT\r\n") == 0)
        feed(r, "+OK bye\r\n");
      for (int i = 0; i < 2; i++)
        if (r->ended[i] && !saved[i]++)
          session_saved(r->s, (size_t)i, 0);
      if (r->barriers == 1 && !barrier++)
        session_barrier_done(r->s, 0);
    }
  }
  CHECK_INT(r->done, 1);
  CHECK_INT(r->done_err, 0);
  CHECK_INT(session_stats(r->s)->saved, 2);
  CHECK_INT(session_stats(r->s)->deleted, 2);
}

static void test_flight_user(void) {
  /* The memory holds: one write after the greeting, four round trips. */
  struct rec *r = start_mem(SESSION_AUTH_AUTO, 0, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  feed(r, "+OK ready\r\n");
  CHECK_STR(take(r), "CAPA\r\nUSER test\r\nPASS secret\r\nUIDL\r\nLIST\r\n");
  CHECK_INT(r->writes, 1);
  CHECK(strstr(r->ctrace, "secret") == NULL);
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_SENT);
  feed(r, "+OK\r\nUSER\r\nTOP\r\nUIDL\r\nPIPELINING\r\nSASL PLAIN\r\n.\r\n");
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_HELD);
  CHECK_STR(take(r), "");
  feed(r, "+OK\r\n+OK logged in\r\n");
  CHECK_STR(take(r), "");
  flight_transfer(r);
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_HELD);
  /* greeting, the flight, the RETRs, DELE+QUIT */
  CHECK_INT(session_round_trips(r->s), 4);
  finish_rec(r);

  /* No flight: nothing remembered, pipelining not known to work, lock-step,
   * PIPELINING not remembered (auto), or a login of several lines. */
  struct {
    enum session_auth auth;
    enum session_pipelining p;
    const char *capa;
    int pipe;
  } cold[] = {
      {SESSION_AUTH_AUTO, SESSION_PIPELINING_AUTO, "", 1},
      {SESSION_AUTH_AUTO, SESSION_PIPELINING_AUTO, NULL, 1},
      {SESSION_AUTH_AUTO, SESSION_PIPELINING_AUTO, MEM_USER, 0},
      {SESSION_AUTH_AUTO, SESSION_PIPELINING_OFF, MEM_USER, 1},
      {SESSION_AUTH_AUTO, SESSION_PIPELINING_AUTO, "USER UIDL", 1},
      {SESSION_AUTH_LOGIN, SESSION_PIPELINING_AUTO, MEM_USER " LOGIN", 1},
      {SESSION_AUTH_XOAUTH2, SESSION_PIPELINING_AUTO, MEM_USER " XOAUTH2", 1},
      {SESSION_AUTH_APOP, SESSION_PIPELINING_AUTO, MEM_USER, 1}, /* no stamp */
  };
  for (size_t i = 0; i < sizeof cold / sizeof cold[0]; i++) {
    r = start_mem(cold[i].auth, 0, 0, cold[i].p, cold[i].capa, cold[i].pipe);
    feed(r, "+OK ready\r\n");
    CHECK_STR(take(r), "CAPA\r\n");
    CHECK_INT(session_flight(r->s), SESSION_FLIGHT_NONE);
    finish_rec(r);
  }

  /* Forced PLAIN that the memory does not offer: cold, then 69 before any
   * secret, as without a memory. */
  r = start_mem(SESSION_AUTH_PLAIN, 1, 0, SESSION_PIPELINING_AUTO, "USER UIDL PIPELINING", 1);
  feed(r, "+OK ready\r\n");
  CHECK_STR(take(r), "CAPA\r\n");
  finish_rec(r);

  /* APOP from the memory and this greeting's stamp; UTF8 remembered. */
  r = start_mem(SESSION_AUTH_APOP, 0, 0, SESSION_PIPELINING_AUTO, "UIDL PIPELINING UTF8", 1);
  feed(r, "+OK ready <1.2@host>\r\n");
  const char *out = take(r);
  CHECK(strncmp(out, "CAPA\r\nAPOP test ", 16) == 0);
  CHECK(strstr(out, "\r\nUTF8\r\nUIDL\r\nLIST\r\n") != NULL);
  CHECK_INT(r->writes, 1);
  feed(r, "+OK\r\nUIDL\r\nPIPELINING\r\nUTF8\r\n.\r\n+OK\r\n+OK\r\n");
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_HELD);
  flight_transfer(r);
  finish_rec(r);
}

/* What pop3 uses: the flight ends with the login (Courier drops what was
 * sent behind PASS); UIDL and LIST follow the login's reply. */
static void test_flight_login_only(void) {
  mem_flight_listing = 0;
  struct rec *r = start_mem(SESSION_AUTH_AUTO, 0, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  feed(r, "+OK ready\r\n");
  CHECK_STR(take(r), "CAPA\r\nUSER test\r\nPASS secret\r\n");
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_SENT);
  feed(r, "+OK\r\nUSER\r\nTOP\r\nUIDL\r\nPIPELINING\r\nSASL PLAIN\r\n.\r\n");
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_HELD);
  CHECK_STR(take(r), "");
  feed(r, "+OK\r\n+OK logged in\r\n");
  CHECK_STR(take(r), "UIDL\r\nLIST\r\n");
  flight_transfer(r);
  /* greeting, the flight, the listing, the RETRs, DELE+QUIT */
  CHECK_INT(session_round_trips(r->s), 5);
  finish_rec(r);

  /* USER gone since: both refused, then AUTH PLAIN at once, never PASS again. */
  r = start_mem(SESSION_AUTH_AUTO, 0, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  feed(r, "+OK ready\r\n");
  CHECK_STR(take(r), "CAPA\r\nUSER test\r\nPASS secret\r\n");
  feed(r, "+OK\r\nUIDL\r\nPIPELINING\r\nSASL PLAIN\r\n.\r\n");
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_STALE);
  feed(r, "-ERR [AUTH] Plaintext authentication disallowed\r\n");
  CHECK_STR(take(r), "");
  feed(r, "-ERR [AUTH] Plaintext authentication disallowed\r\n");
  CHECK_STR(take(r), "AUTH PLAIN AHRlc3QAc2VjcmV0\r\n");
  feed(r, "+OK logged in\r\n");
  CHECK_STR(take(r), "UIDL\r\nLIST\r\n");
  flight_transfer(r);
  CHECK_INT(session_auth_used(r->s), SESSION_AUTH_PLAIN);
  finish_rec(r);
  mem_flight_listing = 1;
}

/* The server dropped USER since the last session (it now offers SASL PLAIN
 * only).  The flight carried USER and PASS (the remembered CAPA offered
 * USER); the server refuses both, and UIDL and LIST before login.  Then
 * the session logs in as a cold one would: AUTH PLAIN, never PASS again. */
static void test_flight_user_gone(void) {
  struct rec *r = start_mem(SESSION_AUTH_AUTO, 0, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  feed(r, "+OK ready\r\n");
  CHECK_STR(take(r), "CAPA\r\nUSER test\r\nPASS secret\r\nUIDL\r\nLIST\r\n");
  feed(r, "+OK\r\nUIDL\r\nPIPELINING\r\nSASL PLAIN\r\n.\r\n");
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_STALE);
  feed(r, "-ERR [AUTH] Plaintext authentication disallowed\r\n");
  CHECK_STR(take(r), "");
  feed(r, "-ERR [AUTH] Plaintext authentication disallowed\r\n");
  CHECK_STR(take(r), ""); /* UIDL and LIST are still to be answered */
  feed(r, "-ERR Unknown command\r\n");
  CHECK_STR(take(r), "");
  feed(r, "-ERR Unknown command\r\n");
  CHECK_STR(take(r), "AUTH PLAIN AHRlc3QAc2VjcmV0\r\n");
  CHECK_INT(r->done, 0);
  feed(r, "+OK logged in\r\n");
  CHECK_STR(take(r), "UIDL\r\nLIST\r\n");
  flight_transfer(r);
  CHECK_INT(session_auth_used(r->s), SESSION_AUTH_PLAIN);
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_STALE);
  /* Exactly one PASS: the flight's. */
  const char *p = strstr(r->sent, "PASS ");
  CHECK(p != NULL && strstr(p + 1, "PASS ") == NULL);
  CHECK(strstr(r->ctrace, "secret") == NULL);
  finish_rec(r);

  /* Nothing else offered: 69 after the flight's replies, nothing more sent. */
  r = start_mem(SESSION_AUTH_AUTO, 0, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  feed(r, "+OK ready\r\n");
  take(r);
  feed(r, "+OK\r\nUIDL\r\nPIPELINING\r\n.\r\n-ERR no\r\n-ERR no\r\n-ERR no\r\n-ERR no\r\n");
  CHECK_STR(take(r), "");
  CHECK_INT(r->done, 1);
  CHECK_INT(r->done_err, P3_EAUTHMECH);
  CHECK_INT(session_stats(r->s)->listed, 0);
  finish_rec(r);

  /* The server still took USER and PASS: the session goes on. */
  r = start_mem(SESSION_AUTH_AUTO, 0, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  feed(r, "+OK ready\r\n");
  take(r);
  feed(r, "+OK\r\nUIDL\r\nPIPELINING\r\nSASL PLAIN\r\n.\r\n+OK\r\n+OK\r\n");
  CHECK_STR(take(r), "");
  flight_transfer(r);
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_STALE);
  finish_rec(r);

  /* A server that answers UIDL +OK after refusing the login is not where
   * the session thinks it is: no DELE, no QUIT. */
  r = start_mem(SESSION_AUTH_AUTO, 0, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  feed(r, "+OK ready\r\n");
  take(r);
  feed(r, "+OK\r\nUIDL\r\nPIPELINING\r\nSASL PLAIN\r\n.\r\n-ERR\r\n-ERR\r\n+OK\r\n1 a\r\n.\r\n");
  CHECK_INT(r->done, 1);
  CHECK_INT(r->done_err, P3_EPROTO);
  CHECK_STR(take(r), "");
  finish_rec(r);

  /* The memory held and the password is wrong: the usual refusal. */
  r = start_mem(SESSION_AUTH_AUTO, 0, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  feed(r, "+OK ready\r\n");
  take(r);
  feed(r, "+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\n.\r\n+OK\r\n-ERR [AUTH] wrong\r\n");
  CHECK_INT(r->done, 1);
  CHECK_INT(r->done_err, P3_EAUTH);
  CHECK_STR(take(r), "");
  finish_rec(r);

  /* [IN-USE] keeps its meaning even when the memory was wrong. */
  r = start_mem(SESSION_AUTH_AUTO, 0, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  feed(r, "+OK ready\r\n");
  take(r);
  feed(r, "+OK\r\nUIDL\r\nPIPELINING\r\nSASL PLAIN\r\n.\r\n+OK\r\n-ERR [IN-USE] locked\r\n");
  CHECK_INT(r->done_err, P3_EINUSE);
  CHECK_STR(take(r), "");
  finish_rec(r);
}

/* PIPELINING gone: the commands are out already; the replies are read in
 * order as usual and the transfer goes lock-step. */
static void test_flight_pipelining_gone(void) {
  struct rec *r = start_mem(SESSION_AUTH_AUTO, 0, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  feed(r, "+OK ready\r\n");
  take(r);
  feed(r, "+OK\r\nUSER\r\nUIDL\r\n.\r\n+OK\r\n+OK\r\n");
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_STALE);
  CHECK_STR(take(r), "");
  flight_transfer(r);
  CHECK_INT(session_pipelined(r->s), 0);
  finish_rec(r);

  /* CAPA refused altogether: USER still counts as offered, lock-step. */
  r = start_mem(SESSION_AUTH_AUTO, 0, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  feed(r, "+OK ready\r\n");
  take(r);
  feed(r, "-ERR no CAPA\r\n+OK\r\n+OK\r\n");
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_STALE);
  CHECK_INT(session_has_capa(r->s), 0);
  CHECK_INT(session_caps(r->s)->pipelining, 0);
  flight_transfer(r);
  finish_rec(r);

  /* UTF8 newly offered: sent after the flight's LIST, before any RETR. */
  r = start_mem(SESSION_AUTH_AUTO, 0, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  feed(r, "+OK ready\r\n");
  take(r);
  feed(r, "+OK\r\nUSER\r\nUIDL\r\nUTF8 USER\r\n.\r\n");
  CHECK_STR(take(r), "UTF8\r\n");
  feed(r, "+OK\r\n+OK\r\n");
  list_msgs(r, 1);
  CHECK_STR(take(r), ""); /* lock-step: UTF8's reply first */
  feed(r, "+OK UTF8 enabled\r\n");
  CHECK_STR(take(r), "RETR 1\r\n");
  finish_rec(r);
}

/* SASL PLAIN gone (implicit TLS): the flight's AUTH PLAIN is refused, the
 * session goes on with USER/PASS, which the fresh CAPA offers. */
static void test_flight_plain_gone(void) {
  struct rec *r = start_mem(SESSION_AUTH_AUTO, 1, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  feed(r, "+OK ready\r\n");
  CHECK_STR(take(r), "CAPA\r\nAUTH PLAIN AHRlc3QAc2VjcmV0\r\nUIDL\r\nLIST\r\n");
  CHECK(strstr(r->ctrace, "AHRlc3QAc2VjcmV0") == NULL);
  feed(r, "+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\n.\r\n-ERR unknown mechanism\r\n-ERR\r\n");
  CHECK_STR(take(r), "");
  feed(r, "-ERR\r\n");
  CHECK_STR(take(r), "USER test\r\nPASS secret\r\n");
  feed(r, "+OK\r\n+OK\r\n");
  CHECK_STR(take(r), "UIDL\r\nLIST\r\n");
  flight_transfer(r);
  CHECK_INT(session_auth_used(r->s), SESSION_AUTH_USER);
  /* greeting, flight, the replies behind it, USER+PASS, UIDL+LIST, RETRs, DELE+QUIT */
  CHECK_INT(session_round_trips(r->s), 6);
  finish_rec(r);

  /* A challenge after the flight's initial response: the next lines were
   * pipelined commands, not SASL; end without QUIT. */
  r = start_mem(SESSION_AUTH_AUTO, 1, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  feed(r, "+OK ready\r\n");
  take(r);
  feed(r, "+OK\r\nUIDL\r\nPIPELINING\r\nSASL PLAIN\r\n.\r\n+ \r\n");
  CHECK_INT(r->done, 1);
  CHECK_INT(r->done_err, P3_EPROTO);
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_STALE);
  CHECK_STR(take(r), "");
  finish_rec(r);
}

/* STLS: warm, STLS goes right after the greeting (the plaintext CAPA would
 * be thrown away); inside TLS the fresh CAPA rides with the login and the
 * listing. */
static void test_flight_stls(void) {
  struct rec *r = start_mem(SESSION_AUTH_AUTO, 0, 1, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  feed(r, "+OK ready\r\n");
  CHECK_STR(take(r), "STLS\r\n");
  feed(r, "+OK begin\r\n");
  CHECK_INT(r->tls_started, 1);
  session_tls_ready(r->s);
  CHECK_STR(take(r), "CAPA\r\nAUTH PLAIN AHRlc3QAc2VjcmV0\r\nUIDL\r\nLIST\r\n");
  feed(r, "+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\nSASL PLAIN\r\n.\r\n+OK\r\n");
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_HELD);
  flight_transfer(r);
  /* greeting, STLS, the flight, RETRs, DELE+QUIT */
  CHECK_INT(session_round_trips(r->s), 5);
  finish_rec(r);

  /* A server that refuses STLS ends the run; nothing went in cleartext. */
  r = start_mem(SESSION_AUTH_AUTO, 0, 1, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  feed(r, "+OK ready\r\n");
  CHECK_STR(take(r), "STLS\r\n");
  feed(r, "-ERR not here\r\n");
  CHECK_INT(r->done, 1);
  CHECK_INT(r->done_err, P3_ENOSTLS);
  CHECK_INT(r->tls_started, 0);
  CHECK_STR(take(r), "");
  finish_rec(r);
}

/* The early flight: on a resumed implicit-TLS connection the flight goes
 * out before the greeting (session_send_early), and its replies come with
 * the greeting: one round trip less. */
static void test_flight_early(void) {
  struct rec *r = start_mem(SESSION_AUTH_AUTO, 1, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  CHECK_INT(session_send_early(r->s), 1);
  CHECK_STR(take(r), "CAPA\r\nAUTH PLAIN AHRlc3QAc2VjcmV0\r\nUIDL\r\nLIST\r\n");
  CHECK_INT(session_send_early(r->s), 0); /* once */
  CHECK_INT(session_early(r->s), SESSION_EARLY_SENT);
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_SENT);
  CHECK_INT(session_flight_listing(r->s), 1);
  CHECK(strstr(r->trace, "one flight before the greeting") != NULL);
  feed(r, "+OK ready\r\n");
  CHECK_STR(take(r), ""); /* nothing twice */
  CHECK_INT(r->done, 0);
  feed(r, "+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\nSASL PLAIN\r\n.\r\n");
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_HELD);
  CHECK_INT(session_flight_listing_wait(r->s), 0);
  feed(r, "+OK logged in\r\n");
  CHECK_INT(session_early(r->s), SESSION_EARLY_HELD);
  CHECK_INT(session_flight_listing_wait(r->s), 1); /* the owner's bound runs */
  flight_transfer(r);
  CHECK_INT(session_flight_listing_wait(r->s), 0);
  CHECK_INT(session_early(r->s), SESSION_EARLY_HELD);
  /* greeting and flight together, the RETRs, DELE+QUIT */
  CHECK_INT(session_round_trips(r->s), 3);
  CHECK_INT(r->writes, 4);
  finish_rec(r);

  /* Never early: plaintext, STLS, nothing remembered, forced APOP (its
   * digest needs the stamp), SASL LOGIN, pipelining not known to work. */
  struct {
    enum session_auth auth;
    int tls, starttls;
    const char *capa;
    int pipe;
  } no[] = {
      {SESSION_AUTH_AUTO, 0, 0, MEM_USER, 1},
      {SESSION_AUTH_AUTO, 0, 1, MEM_USER, 1},
      {SESSION_AUTH_AUTO, 1, 0, "", 1},
      {SESSION_AUTH_APOP, 1, 0, MEM_USER, 1},
      {SESSION_AUTH_LOGIN, 1, 0, MEM_USER " LOGIN", 1},
      {SESSION_AUTH_AUTO, 1, 0, MEM_USER, 0},
      {SESSION_AUTH_AUTO, 1, 0, "UIDL PIPELINING", 1}, /* only APOP could be left */
  };
  for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
    r = start_mem(no[i].auth, no[i].tls, no[i].starttls, SESSION_PIPELINING_AUTO, no[i].capa,
                  no[i].pipe);
    CHECK_INT(session_send_early(r->s), 0);
    CHECK_STR(take(r), "");
    CHECK_INT(session_early(r->s), SESSION_EARLY_NONE);
    finish_rec(r);
  }
  /* Too late once the greeting is in: the ordinary flight. */
  r = start_mem(SESSION_AUTH_AUTO, 1, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  feed(r, "+OK ready\r\n");
  CHECK_STR(take(r), "CAPA\r\nAUTH PLAIN AHRlc3QAc2VjcmV0\r\nUIDL\r\nLIST\r\n");
  CHECK_INT(session_send_early(r->s), 0);
  CHECK_INT(session_early(r->s), SESSION_EARLY_NONE);
  finish_rec(r);

  /* An -ERR greeting ends it as usual, and does not judge the early flight. */
  r = start_mem(SESSION_AUTH_AUTO, 1, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  CHECK_INT(session_send_early(r->s), 1);
  take(r);
  feed(r, "-ERR [SYS/TEMP] busy\r\n");
  CHECK_INT(r->done_err, P3_ESYSTEMP);
  CHECK_INT(session_early(r->s), SESSION_EARLY_SENT);
  finish_rec(r);

  /* The server broke it: dropped before the greeting, after it, or refused
   * CAPA.  A refused login (no fallback: the method still holds) was read
   * and answered: the early flight stays unjudged. */
  for (int k = 0; k < 4; k++) {
    r = start_mem(SESSION_AUTH_AUTO, 1, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
    CHECK_INT(session_send_early(r->s), 1);
    take(r);
    if (k >= 1)
      feed(r, "+OK ready\r\n");
    if (k == 2)
      feed(r, "-ERR what?\r\n");
    if (k == 3)
      feed(r, "+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\nSASL PLAIN\r\n.\r\n-ERR [AUTH] no\r\n");
    if (k < 2)
      session_connection_lost(r->s, P3_EEOF);
    CHECK_INT(session_early(r->s), k == 3 ? SESSION_EARLY_SENT : SESSION_EARLY_BROKEN);
    if (k == 2) {
      /* CAPA refused: the flight is stale, the session goes on safely. */
      CHECK_INT(session_flight(r->s), SESSION_FLIGHT_STALE);
      CHECK_INT(r->done, 0);
      feed(r, "+OK logged in\r\n");
      CHECK_INT(session_early(r->s), SESSION_EARLY_BROKEN);
    }
    if (k == 3)
      CHECK_INT(r->done_err, P3_EAUTH);
    CHECK(strstr(r->sent, "QUIT") == NULL);
    finish_rec(r);
  }

  /* The greeting now carries an APOP stamp the memory did not expect: the
   * login that went out needs none; the flight is stale (the memory is
   * refreshed, the next session cold). */
  mem_greeting = 1;
  r = start_mem(SESSION_AUTH_AUTO, 1, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  CHECK_INT(session_send_early(r->s), 1);
  take(r);
  feed(r, "+OK ready <1.2@host>\r\n+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\nSASL PLAIN\r\n.\r\n");
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_STALE);
  CHECK(strstr(r->trace, "APOP timestamp came or went") != NULL);
  feed(r, "+OK logged in\r\n");
  flight_transfer(r);
  CHECK_INT(session_greeting_apop(r->s), 1);
  finish_rec(r);
  /* The expected shape: held. */
  mem_greeting = 2;
  r = start_mem(SESSION_AUTH_AUTO, 1, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  CHECK_INT(session_send_early(r->s), 1);
  take(r);
  feed(r, "+OK ready <1.2@host>\r\n+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\nSASL PLAIN\r\n.\r\n");
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_HELD);
  finish_rec(r);
  mem_greeting = 0;
}

/* The listing in the flight: the owner bounds the wait behind the accepted
 * login; a remembered Courier never gets it; IMPLEMENTATION is a name. */
static void test_flight_listing_guard(void) {
  struct rec *r = start_mem(SESSION_AUTH_AUTO, 0, 0, SESSION_PIPELINING_AUTO, MEM_USER, 1);
  feed(r, "+OK ready\r\n");
  CHECK_STR(take(r), "CAPA\r\nUSER test\r\nPASS secret\r\nUIDL\r\nLIST\r\n");
  CHECK_INT(session_flight_listing(r->s), 1);
  feed(r, "+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\nIMPLEMENTATION Hidden POP3\r\n.\r\n+OK\r\n");
  CHECK_INT(session_flight_listing_wait(r->s), 0); /* USER's +OK is not the login's */
  feed(r, "+OK logged in\r\n");
  CHECK_INT(session_flight_listing_wait(r->s), 1);
  CHECK_STR(session_implementation(r->s), "Hidden");
  /* The server dropped UIDL and LIST: the owner gives up, no QUIT. */
  session_fail(r->s, P3_ETIMEOUT, "no reply to the UIDL and LIST sent behind the login");
  CHECK_INT(r->done_err, P3_ETIMEOUT);
  CHECK_INT(session_flight_listing_wait(r->s), 0);
  CHECK_STR(take(r), "");
  CHECK(strstr(r->sent, "QUIT") == NULL);
  CHECK_INT(session_stats(r->s)->retrieved, 0);
  finish_rec(r);

  /* Remembered IMPLEMENTATION Courier: the flight ends with the login. */
  r = start_mem(SESSION_AUTH_AUTO, 0, 0, SESSION_PIPELINING_AUTO,
                "USER UIDL PIPELINING UTF8 IMPLEMENTATION Courier SASL PLAIN", 1);
  feed(r, "+OK ready\r\n");
  CHECK_STR(take(r), "CAPA\r\nUSER test\r\nPASS secret\r\n");
  CHECK_INT(session_flight_listing(r->s), 0);
  feed(r, "+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\nUTF8\r\nIMPLEMENTATION Courier Mail Server\r\n"
          ".\r\n+OK\r\n+OK logged in\r\n");
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_HELD);
  CHECK_INT(session_flight_listing_wait(r->s), 0);
  CHECK_STR(take(r), "UTF8\r\nUIDL\r\nLIST\r\n");
  CHECK_STR(session_implementation(r->s), "Courier");
  finish_rec(r);

  /* The word after IMPLEMENTATION is a name, not a capability: this memory
   * offers no USER, so no flight. */
  r = start_mem(SESSION_AUTH_AUTO, 0, 0, SESSION_PIPELINING_AUTO,
                "UIDL PIPELINING IMPLEMENTATION USER", 1);
  feed(r, "+OK ready\r\n");
  CHECK_STR(take(r), "CAPA\r\n");
  CHECK_INT(session_flight(r->s), SESSION_FLIGHT_NONE);
  finish_rec(r);
}

int main(void) {
  test_pipelined_happy();
  test_burst_count();
  test_quit_after_verified_deles();
  test_lockstep();
  test_auto_without_pipelining();
  test_no_capa();
  test_octets_desync();
  test_size_desync_mid_body();
  test_unsolicited_reply();
  test_retr_err();
  test_save_failure_no_quit();
  test_auth_fail();
  test_starttls();
  test_window();
  test_empty_mailbox();
  test_missing_reply_caught();
  test_eof_mid_body();
  test_injection();
  test_utf8();
  test_resized_after_uidl_n();
  test_announced_count_mismatch();
  test_resized_then_desync();
  test_long_uids();
  test_duplicate_uids();
  test_probe();
  test_quit_unanswered();
  test_auth_auto_choice();
  test_auth_forced_not_offered();
  test_auth_plain_255();
  test_auth_login();
  test_auth_oauth();
  test_auth_user_masked();
  test_flight_user();
  test_flight_login_only();
  test_flight_user_gone();
  test_flight_pipelining_gone();
  test_flight_plain_gone();
  test_flight_stls();
  test_flight_early();
  test_flight_listing_guard();
  return check_result("test_session");
}

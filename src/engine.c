#include "config.h"

#include "engine.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "errors.h"
#include "maildir.h"

/* Body bytes queued for the thread pool before the socket stops being read,
 * and the level at which reading resumes: this bounds memory per session no
 * matter how large a message or how slow the disk. */
#define HIGH_WATER (4u << 20)
#define LOW_WATER (1u << 20)

struct engine {
  uv_loop_t *loop;
  struct engine_options opts;
  engine_done_cb done_cb;
  void *data;

  struct conn conn;
  struct session *session;
  struct maildir md;
  int md_ready;

  /* The delivery of the message whose body is streaming (one at a time:
   * replies arrive in order). */
  struct maildir_delivery *current;
  size_t current_idx;

  uv_check_t drain_check; /* resumes reading once the write queue drained */
  uv_timer_t grace_timer;
  int handles_open;

  int conn_started;
  int conn_closed;
  int session_done;
  int reported;
  int err;
  char conn_detail[256];
  char save_detail[256];

  struct engine_result result;
  uint64_t started_ms;
};

static void finish_if_idle(struct engine *e);

static void trace(struct engine *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void trace(struct engine *e, const char *fmt, ...) {
  if (e->opts.trace == NULL)
    return;
  char line[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  e->opts.trace(e->opts.trace_data, line);
}

/* Sends what the session queued and sets the reply timeout.  Called after
 * every call into the session. */
static void flush(struct engine *e) {
  if (e->session == NULL || e->conn_closed)
    return;
  char *out;
  size_t n = session_take_output(e->session, &out);
  if (n) {
    int err = conn_write(&e->conn, out, n);
    if (err && !session_finished(e->session))
      session_connection_lost(e->session, err);
  }
  if (!e->conn.closing)
    conn_watch(&e->conn, session_awaiting_reply(e->session));
}

/* ---- delivery */

/* Per-delivery context: which message a finished delivery was. */
struct delivery_ctx {
  struct engine *e;
  size_t idx;
};

static void on_delivered(struct maildir_delivery *d, int err, const char *new_name,
                         uint64_t bytes, void *data) {
  struct delivery_ctx *ctx = data;
  struct engine *e = ctx->e;
  size_t idx = ctx->idx;
  free(ctx);
  if (err == 0) {
    e->result.delivered++;
    e->result.bytes += bytes;
    trace(e, "saved message %zu as new/%s (%llu bytes)", idx + 1, new_name,
          (unsigned long long)bytes);
  } else if (err != UV_ECANCELED && e->save_detail[0] == '\0') {
    snprintf(e->save_detail, sizeof e->save_detail, "%s: %s", e->opts.maildir, uv_strerror(err));
  }
  if (err != UV_ECANCELED) {
    session_saved(e->session, idx, err);
    flush(e);
  }
  finish_if_idle(e);
}

static int on_msg_begin(void *data, size_t idx) {
  struct engine *e = data;
  struct maildir_delivery *d;
  struct delivery_ctx *ctx = malloc(sizeof *ctx);
  int err = ctx ? maildir_open(&e->md, on_delivered, ctx, &d) : -ENOMEM;
  if (err) {
    free(ctx);
    snprintf(e->save_detail, sizeof e->save_detail, "%s: %s", e->opts.maildir, uv_strerror(err));
    return err;
  }
  ctx->e = e;
  ctx->idx = idx;
  e->current = d;
  e->current_idx = idx;
  return 0;
}

static void on_drain_check(uv_check_t *h) {
  struct engine *e = h->data;
  if (e->md.queued_bytes <= LOW_WATER || e->session_done) {
    uv_check_stop(h);
    conn_resume(&e->conn);
  }
}

static int on_msg_data(void *data, size_t idx, const char *buf, size_t len) {
  struct engine *e = data;
  int err = maildir_write(e->current, buf, len);
  if (err)
    return err;
  if (e->md.queued_bytes > HIGH_WATER && !e->conn.paused) {
    conn_pause(&e->conn);
    uv_check_start(&e->drain_check, on_drain_check);
  }
  return 0;
}

static void on_msg_end(void *data, size_t idx) {
  struct engine *e = data;
  struct maildir_delivery *d = e->current;
  e->current = NULL;
  maildir_commit(d);
}

static void on_msg_abort(void *data, size_t idx) {
  struct engine *e = data;
  struct maildir_delivery *d = e->current;
  e->current = NULL;
  if (d)
    maildir_abort(d);
}

static void on_barrier(int err, void *data) {
  struct engine *e = data;
  if (err && e->save_detail[0] == '\0')
    snprintf(e->save_detail, sizeof e->save_detail, "fsync %s/new: %s", e->opts.maildir,
             uv_strerror(err));
  if (!e->session_done) {
    trace(e, "barrier: %s/new is durable", e->opts.maildir);
    session_barrier_done(e->session, err);
    flush(e);
  }
  finish_if_idle(e);
}

static void on_session_barrier(void *data) {
  struct engine *e = data;
  int err = maildir_barrier(&e->md, on_barrier, e);
  if (err)
    session_barrier_done(e->session, err);
}

static void on_start_tls(void *data) {
  struct engine *e = data;
  int err = conn_start_tls(&e->conn);
  if (err && !session_finished(e->session))
    session_connection_lost(e->session, err);
}

static void on_session_trace(void *data, char dir, const char *line, size_t len) {
  struct engine *e = data;
  if (dir == '-')
    trace(e, "%.*s", (int)len, line);
  else
    trace(e, "%s %.*s", dir == 'C' ? ">" : "<", (int)len, line);
}

static void on_session_done(void *data, int err) {
  struct engine *e = data;
  e->session_done = 1;
  if (e->err == 0)
    e->err = err;
  uv_timer_stop(&e->grace_timer);
  uv_check_stop(&e->drain_check);
  conn_close(&e->conn);
}

/* ---- transport */

static void on_connected(void *data) {
  struct engine *e = data;
  trace(e, "connected to %s port %u", e->opts.target->spec.tcp_host, e->opts.target->spec.port);
  flush(e);
}

static void on_conn_data(void *data, const char *buf, size_t len) {
  struct engine *e = data;
  session_feed(e->session, buf, len);
  flush(e);
}

static void on_tls_ready(void *data) {
  struct engine *e = data;
  session_tls_ready(e->session);
  flush(e);
}

static void on_conn_error(void *data, int err, const char *detail) {
  struct engine *e = data;
  if (!session_finished(e->session)) {
    snprintf(e->conn_detail, sizeof e->conn_detail, "%s", detail);
    if (err == P3_ETIMEOUT)
      session_timeout(e->session);
    else
      session_connection_lost(e->session, err);
  }
  conn_close(&e->conn);
}

static void on_conn_note(void *data, const char *line) {
  trace(data, "%s", line);
}

static void on_handle_closed(uv_handle_t *h) {
  struct engine *e = h->data;
  e->handles_open--;
  finish_if_idle(e);
}

static void on_conn_closed(void *data) {
  struct engine *e = data;
  e->conn_closed = 1;
  if (e->handles_open == 2) {
    uv_close((uv_handle_t *)&e->drain_check, on_handle_closed);
    uv_close((uv_handle_t *)&e->grace_timer, on_handle_closed);
  }
  finish_if_idle(e);
}

/* One sentence: what failed, then the server's words or the local detail. */
static void compose_message(struct engine *e) {
  struct engine_result *r = &e->result;
  const char *server = e->session ? session_error_text(e->session) : "";
  size_t n, cap = sizeof r->message;
  r->message[0] = '\0';
  if (e->err == 0)
    return;
  n = (size_t)snprintf(r->message, cap, "%s", p3_strerror(e->err));
  if (e->err == P3_ESAVE && e->save_detail[0]) {
    snprintf(r->message + n, cap - n, ": %s", e->save_detail);
    return;
  }
  if (server[0] && n < cap)
    n += (size_t)snprintf(r->message + n, cap - n, ": %s", server);
  if (e->conn_detail[0] && n < cap)
    snprintf(r->message + n, cap - n, server[0] ? " (%s)" : ": %s", e->conn_detail);
}

static void finish_if_idle(struct engine *e) {
  if (e->reported || !e->session_done || !e->conn_closed || e->handles_open)
    return;
  if (e->md_ready && e->md.active)
    return; /* deliveries already complete keep going to new/ */
  e->reported = 1;
  struct engine_result *r = &e->result;
  const struct session_stats *st = session_stats(e->session);
  r->err = e->err;
  r->listed = st->listed;
  r->failed = st->failed;
  r->deleted = st->quit_ok ? st->deleted : 0;
  r->seconds = (double)(uv_hrtime() / 1000000 - e->started_ms) / 1000.0;
  r->login_delay = session_caps(e->session)->login_delay;
  compose_message(e);
  e->done_cb(e, r, e->data);
}

static void on_grace_timeout(uv_timer_t *t) {
  struct engine *e = t->data;
  if (!session_finished(e->session)) {
    snprintf(e->conn_detail, sizeof e->conn_detail, "%s", "stopped before the run finished");
    session_connection_lost(e->session, P3_ECANCELED);
  }
}

int engine_start(uv_loop_t *loop, const struct engine_options *opts, engine_done_cb done_cb,
                 void *data, struct engine **e_r, char *errbuf, size_t errlen) {
  *e_r = NULL;
  const struct p3_spec *spec = &opts->target->spec;
  if (spec->mode != P3_TLS_NONE && spec->tls_name[0] == '\0' && opts->pin_count == 0) {
    snprintf(errbuf, errlen, "%s: mbedTLS cannot verify a certificate for an IP address; "
             "write tcp_host!name or pin the certificate with --tls-fingerprint",
             spec->tcp_host);
    return P3_ETLSIP;
  }
  struct engine *e = calloc(1, sizeof *e);
  if (e == NULL) {
    snprintf(errbuf, errlen, "out of memory");
    return -ENOMEM;
  }
  e->loop = loop;
  e->opts = *opts;
  e->done_cb = done_cb;
  e->data = data;
  e->started_ms = uv_hrtime() / 1000000;

  int err = maildir_init_as(&e->md, loop, opts->maildir,
                            opts->chown_maildir ? opts->owner_uid : (uid_t)-1,
                            opts->chown_maildir ? opts->owner_gid : (gid_t)-1, errbuf, errlen);
  if (err) {
    free(e);
    return err;
  }
  e->md_ready = 1;

  struct session_options so = {
      .user = spec->user,
      .password = opts->target->password,
      .starttls = spec->mode == P3_TLS_STARTTLS,
      .tls_active = spec->mode == P3_TLS_IMPLICIT,
      .pipelining = opts->pipelining,
      .window = opts->window,
  };
  struct session_ops ops = {
      .msg_begin = on_msg_begin,
      .msg_data = on_msg_data,
      .msg_end = on_msg_end,
      .msg_abort = on_msg_abort,
      .start_tls = on_start_tls,
      .barrier = on_session_barrier,
      .trace = opts->trace ? on_session_trace : NULL,
      .done = on_session_done,
  };
  e->session = session_new(&so, &ops, e);
  if (e->session == NULL) {
    maildir_deinit(&e->md);
    free(e);
    snprintf(errbuf, errlen, "out of memory");
    return -ENOMEM;
  }

  uv_check_init(loop, &e->drain_check);
  e->drain_check.data = e;
  uv_timer_init(loop, &e->grace_timer);
  e->grace_timer.data = e;
  e->handles_open = 2;

  struct conn_options co = {
      .host = spec->tcp_host,
      .port = spec->port,
      .implicit_tls = spec->mode == P3_TLS_IMPLICIT,
      .timeout_ms = (opts->timeout_s ? opts->timeout_s : 120) * 1000u,
  };
  co.tls.ca_file = opts->ca_file;
  co.tls.server_name = spec->tls_name[0] ? spec->tls_name : NULL;
  memcpy(co.tls.pins, opts->pins, sizeof co.tls.pins);
  co.tls.pin_count = opts->pin_count;
  struct conn_ops cops = {
      .connected = on_connected,
      .data = on_conn_data,
      .tls_ready = on_tls_ready,
      .error = on_conn_error,
      .closed = on_conn_closed,
      .note = opts->trace ? on_conn_note : NULL,
  };
  err = conn_start(&e->conn, loop, &co, &cops, e);
  if (err) {
    /* Report through the normal path so that every handle is closed. */
    snprintf(e->conn_detail, sizeof e->conn_detail, "%.200s: %s", spec->tcp_host, uv_strerror(err));
    session_connection_lost(e->session, P3_EDNS);
  }
  *e_r = e;
  return 0;
}

void engine_stop(struct engine *e, unsigned grace_ms) {
  if (e->session_done)
    return;
  session_stop(e->session);
  flush(e);
  if (!e->session_done)
    uv_timer_start(&e->grace_timer, on_grace_timeout, grace_ms, 0);
}

void engine_progress(const struct engine *e, size_t *done_r, size_t *total_r, uint64_t *bytes_r) {
  const struct session_stats *st = session_stats(e->session);
  *done_r = e->result.delivered;
  *total_r = st->listed;
  *bytes_r = st->bytes;
}

void engine_free(struct engine *e) {
  if (e == NULL)
    return;
  session_free(e->session);
  if (e->md_ready)
    maildir_deinit(&e->md);
  free(e);
}

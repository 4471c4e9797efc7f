#include "config.h"

#include "conn.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"

struct write_req {
  uv_write_t req;
  char *buf;
};

static void fail(struct conn *c, int err, const char *detail);
static void try_next_addr(struct conn *c);
static void start_reading(struct conn *c);

static void note(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(struct conn *c, const char *fmt, ...) {
  if (c->ops.note == NULL)
    return;
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  c->ops.note(c->data, line);
}

static void maybe_closed(struct conn *c) {
  if (c->closing && c->pending == 0 && c->ops.closed)
    c->ops.closed(c->data);
}

static void on_handle_closed(uv_handle_t *h) {
  struct conn *c = h->data;
  /* TCP handles are allocated per connect attempt; the timer is embedded. */
  if (h != (uv_handle_t *)&c->timer)
    free(h);
  c->pending--;
  maybe_closed(c);
}

/* Closes the current TCP handle (the owner's pointer is dropped at once). */
static void drop_tcp(struct conn *c) {
  if (c->tcp == NULL)
    return;
  uv_read_stop((uv_stream_t *)c->tcp);
  uv_close((uv_handle_t *)c->tcp, on_handle_closed);
  c->tcp = NULL;
}

static void arm_timer(struct conn *c);

/* The connect attempt or handshake starting now must end within timeout. */
static void set_deadline(struct conn *c) {
  c->deadline = uv_now(c->loop) + c->opts.timeout_ms;
}

static void on_timeout(uv_timer_t *t) {
  struct conn *c = t->data;
  uint64_t now = uv_now(c->loop);
  char detail[128];
  if (!c->connected || c->handshaking) {
    if (now < c->deadline) {
      arm_timer(c);
      return;
    }
    if (!c->connected)
      snprintf(detail, sizeof detail, "no answer for %u s connecting", c->opts.timeout_ms / 1000);
    else
      snprintf(detail, sizeof detail, "the TLS handshake did not complete within %u s",
               c->opts.timeout_ms / 1000);
    fail(c, P3_ETIMEOUT, detail);
    return;
  }
  enum progress_verdict v = progress_check(&c->progress, now);
  if (v == PROGRESS_OK) {
    arm_timer(c); /* a body window closed in time: judge the next one */
    return;
  }
  fail(c, P3_ETIMEOUT, progress_describe(&c->progress, v, detail, sizeof detail));
}

/* Sets the timer to the nearest bound: the connect attempt's or the
 * handshake's deadline, else the reply bound's (none while idle or paused). */
static void arm_timer(struct conn *c) {
  if (c->closing || c->failed)
    return;
  uint64_t now = uv_now(c->loop);
  uint64_t due = !c->connected || c->handshaking ? c->deadline : progress_deadline(&c->progress);
  if (due == UINT64_MAX)
    uv_timer_stop(&c->timer);
  else
    uv_timer_start(&c->timer, on_timeout, due > now ? due - now : 0, 0);
}

static void fail(struct conn *c, int err, const char *detail) {
  if (c->failed || c->closing)
    return;
  c->failed = 1;
  uv_timer_stop(&c->timer);
  if (c->tcp)
    uv_read_stop((uv_stream_t *)c->tcp);
  c->ops.error(c->data, err, detail ? detail : "");
}

static void on_write(uv_write_t *req, int status) {
  struct write_req *w = (struct write_req *)req;
  struct conn *c = req->data;
  free(w->buf);
  free(w);
  c->pending--;
  if (status < 0 && status != UV_ECANCELED)
    fail(c, status, "sending to the server failed");
  maybe_closed(c);
}

/* Sends raw bytes on the socket; takes ownership of buf. */
static int send_raw(struct conn *c, char *buf, size_t len) {
  if (c->tcp == NULL || c->closing || c->failed) {
    free(buf);
    return UV_ENOTCONN;
  }
  struct write_req *w = malloc(sizeof *w);
  if (w == NULL) {
    free(buf);
    return -ENOMEM;
  }
  w->buf = buf;
  w->req.data = c;
  uv_buf_t b = uv_buf_init(buf, (unsigned)len);
  int err = uv_write(&w->req, (uv_stream_t *)c->tcp, &b, 1, on_write);
  if (err) {
    free(buf);
    free(w);
    return err;
  }
  c->pending++;
  return 0;
}

static int flush_tls_n(struct conn *c, size_t *sent_r) {
  char *out;
  size_t n = tls_take_output(c->tls, &out);
  if (sent_r)
    *sent_r = n;
  return n ? send_raw(c, out, n) : 0;
}

static int flush_tls(struct conn *c) {
  return flush_tls_n(c, NULL);
}

/* Drives the handshake and then decrypts whatever is buffered, unless
 * paused.  Returns 0 or after fail(). */
static void pump_tls(struct conn *c) {
  if (c->handshaking) {
    int r = tls_handshake(c->tls, c->errbuf, sizeof c->errbuf);
    size_t sent = 0;
    int err = flush_tls_n(c, &sent);
    if (r < 0) {
      fail(c, r, c->errbuf);
      return;
    }
    if (err) {
      fail(c, err, "sending to the server failed");
      return;
    }
    if (r == 0) {
      /* A flight went out and the handshake needs the server's answer: one
       * wait (a partial record that produced nothing is the same wait). */
      if (sent > 0)
        c->waits_tls++;
      return;
    }
    int kind = c->handshaking;
    c->handshaking = 0;
    c->tls_ended_on_send = sent > 0;
    c->tls_resumed = tls_resumed(c->tls);
    note(c, "TLS established: %s, %s%s", tls_version(c->tls), tls_ciphersuite(c->tls),
         c->tls_resumed ? " (session resumed)" : "");
    arm_timer(c);
    if (kind == 1)
      c->ops.connected(c->data);
    else
      c->ops.tls_ready(c->data);
    if (c->failed || c->closing)
      return;
  }
  while (!c->paused && !c->failed && !c->closing) {
    int n = tls_read(c->tls, c->plainbuf, sizeof c->plainbuf, c->errbuf, sizeof c->errbuf);
    if (n == 0)
      break;
    if (n < 0) {
      fail(c, n, n == P3_EEOF ? "" : c->errbuf);
      return;
    }
    c->ops.data(c->data, c->plainbuf, (size_t)n);
  }
  /* Renegotiation or alerts may have produced output. */
  if (!c->failed && !c->closing) {
    int err = flush_tls(c);
    if (err)
      fail(c, err, "sending to the server failed");
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct conn *c = h->data;
  /* One read at a time: the connection's own buffer suffices. */
  *buf = uv_buf_init(c->readbuf, sizeof c->readbuf);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  struct conn *c = stream->data;
  if (c->closing || c->failed)
    return;
  if (nread == 0)
    return; /* EAGAIN: nothing to do */
  if (nread == UV_EOF) {
    fail(c, P3_EEOF, "");
    return;
  }
  if (nread < 0) {
    fail(c, (int)nread, "receiving from the server failed");
    return;
  }
  /* Bytes do not restart any bound: the owner's conn_expect() moves the
   * reply bounds on, and a handshake must end within its deadline. */
  if (c->tls) {
    /* Decrypted straight from readbuf; only what is left unconsumed (while
     * paused) is copied, before the next read reuses the buffer.  The
     * callbacks in pump_tls may close us (c->tls is NULL then). */
    tls_feed_lend(c->tls, buf->base, (size_t)nread);
    pump_tls(c);
    if (c->tls != NULL) {
      int err = tls_feed_end(c->tls);
      if (err) {
        fail(c, err, "out of memory");
        return;
      }
    }
    /* Do not buffer without bound while the owner is paused. */
    if (c->paused && c->tcp)
      uv_read_stop((uv_stream_t *)c->tcp);
  } else {
    c->ops.data(c->data, buf->base, (size_t)nread);
  }
}

static void start_reading(struct conn *c) {
  if (c->tcp == NULL || c->paused || c->failed || c->closing || c->tls_waiting)
    return;
  int err = uv_read_start((uv_stream_t *)c->tcp, on_alloc, on_read);
  if (err)
    fail(c, err, "cannot read from the socket");
}

/* Thread pool: the blocking part of TLS setup. */
static void cfg_work(uv_work_t *w) {
  struct conn *c = w->data;
  c->cfg_err = tls_config_get(&c->opts.tls, &c->tls_cfg, c->cfg_errbuf, sizeof c->cfg_errbuf);
}

static int continue_tls(struct conn *c, int waited);

static void cfg_done(uv_work_t *w, int status) {
  struct conn *c = w->data;
  c->pending--;
  c->cfg_busy = 0;
  if (status == UV_ECANCELED && c->cfg_err == 0 && c->tls_cfg == NULL)
    c->cfg_err = status;
  if (c->closing) {
    tls_config_put(c->tls_cfg);
    c->tls_cfg = NULL;
    maybe_closed(c);
    return;
  }
  if (c->tls_waiting && !c->failed) {
    c->tls_waiting = 0;
    continue_tls(c, 1);
  }
}

/* Starts building the TLS configuration (on the thread pool: it reads the
 * CA bundle) when a handshake may come (implicit TLS or STLS); a failure is
 * reported only if a handshake starts. */
static void prepare_tls(struct conn *c) {
  if (!c->opts.implicit_tls && !c->opts.starttls)
    return;
  c->cfg_work.data = c;
  if (uv_queue_work(c->loop, &c->cfg_work, cfg_work, cfg_done) == 0) {
    c->cfg_busy = 1;
    c->pending++;
  } else {
    c->cfg_err = P3_ETLSCONF;
    snprintf(c->cfg_errbuf, sizeof c->cfg_errbuf, "%s",
             "the TLS configuration could not be prepared");
  }
}

/* The handshake itself, once the configuration is there (waited: reading
 * was stopped for it and starts again). */
static int continue_tls(struct conn *c, int waited) {
  int err;
  if (c->tls_cfg != NULL) {
    err = tls_new_from(c->tls_cfg, &c->opts.tls, &c->tls, c->errbuf, sizeof c->errbuf);
  } else if (c->cfg_err != 0) {
    err = c->cfg_err;
    snprintf(c->errbuf, sizeof c->errbuf, "%s", c->cfg_errbuf);
  } else {
    /* Never prepared: a handshake the options did not announce.  The CA
     * bundle is never read on the loop thread. */
    err = P3_ETLSCONF;
    snprintf(c->errbuf, sizeof c->errbuf, "%s", "TLS was not expected on this connection");
  }
  if (err) {
    fail(c, err, c->errbuf);
    return err;
  }
  if (waited) {
    start_reading(c);
    if (c->failed || c->closing)
      return 0; /* reported (the owner may have closed us) */
  }
  pump_tls(c);
  return 0;
}

static int begin_tls(struct conn *c, int kind) {
  c->handshaking = kind;
  set_deadline(c);
  arm_timer(c);
  if (c->cfg_busy) {
    /* The server speaks only after our ClientHello: nothing to read. */
    c->tls_waiting = 1;
    if (c->tcp)
      uv_read_stop((uv_stream_t *)c->tcp);
    return 0;
  }
  return continue_tls(c, 0);
}

static void on_connect(uv_connect_t *req, int status) {
  struct conn *c = req->data;
  c->pending--;
  if (c->closing) {
    maybe_closed(c);
    return;
  }
  if (c->failed)
    return;
  if (status < 0) {
    c->last_connect_err = status;
    note(c, "connect failed: %s", uv_strerror(status));
    /* Abandon this socket and try the next address. */
    drop_tcp(c);
    try_next_addr(c);
    return;
  }
  c->connected = 1;
  uv_tcp_nodelay(c->tcp, 1); /* commands are batched by the session already */
  arm_timer(c);
  start_reading(c);
  if (c->opts.implicit_tls)
    begin_tls(c, 1);
  else
    c->ops.connected(c->data);
}

static void try_next_addr(struct conn *c) {
  while (c->next_addr) {
    struct addrinfo *ai = c->next_addr;
    c->next_addr = ai->ai_next;
    char name[INET6_ADDRSTRLEN] = "";
    if (ai->ai_family == AF_INET)
      uv_ip4_name((struct sockaddr_in *)ai->ai_addr, name, sizeof name);
    else if (ai->ai_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)ai->ai_addr, name, sizeof name);
    else
      continue;
    c->tcp = malloc(sizeof *c->tcp);
    if (c->tcp == NULL) {
      fail(c, -ENOMEM, "out of memory");
      return;
    }
    uv_tcp_init(c->loop, c->tcp);
    c->tcp->data = c;
    c->pending++;
    note(c, "connecting to %s port %u", name, c->opts.port);
    c->connect_req.data = c;
    int err = uv_tcp_connect(&c->connect_req, c->tcp, ai->ai_addr, on_connect);
    if (err == 0) {
      c->pending++;
      c->waits_connect++;
      set_deadline(c);
      arm_timer(c);
      return;
    }
    c->last_connect_err = err;
    drop_tcp(c);
  }
  char detail[160];
  snprintf(detail, sizeof detail, "%s port %u: %s", c->host, c->opts.port,
           uv_strerror(c->last_connect_err ? c->last_connect_err : UV_ECONNREFUSED));
  fail(c, P3_ECONNECT, detail);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  struct conn *c = req->data;
  c->pending--;
  c->gai_pending = 0;
  if (c->closing) {
    if (res)
      uv_freeaddrinfo(res);
    maybe_closed(c);
    return;
  }
  c->addrs = res;
  if (status < 0) {
    char detail[160];
    snprintf(detail, sizeof detail, "%s: %s", c->host, uv_strerror(status));
    fail(c, P3_EDNS, detail);
    return;
  }
  c->next_addr = res;
  try_next_addr(c);
}

int conn_start(struct conn *c, uv_loop_t *loop, const struct conn_options *opts,
               const struct conn_ops *ops, void *data) {
  memset(c, 0, offsetof(struct conn, readbuf));
  c->loop = loop;
  c->opts = *opts;
  c->ops = *ops;
  c->data = data;
  c->host = strdup(opts->host);
  if (c->host == NULL)
    return -ENOMEM;
  c->opts.host = c->host;
  if (c->opts.timeout_ms == 0)
    c->opts.timeout_ms = 120000;
  progress_init(&c->progress, c->opts.timeout_ms);
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  c->pending++; /* the timer handle */
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  char port[16];
  snprintf(port, sizeof port, "%u", opts->port);
  c->gai.data = c;
  int err = uv_getaddrinfo(loop, &c->gai, on_resolved, c->host, port, &hints);
  if (err)
    return err;
  c->pending++;
  c->gai_pending = 1;
  set_deadline(c);
  arm_timer(c);
  prepare_tls(c);
  return 0;
}

int conn_write(struct conn *c, char *buf, size_t len) {
  if (c->failed || c->closing) {
    free(buf);
    return UV_ENOTCONN;
  }
  if (c->tls == NULL)
    return send_raw(c, buf, len);
  int err = tls_write(c->tls, buf, len, c->errbuf, sizeof c->errbuf);
  free(buf);
  if (err)
    return err;
  return flush_tls(c);
}

int conn_start_tls(struct conn *c) {
  if (c->tls || c->failed || c->closing)
    return UV_EINVAL;
  return begin_tls(c, 2);
}

void conn_pause(struct conn *c) {
  if (c->paused)
    return;
  c->paused = 1;
  if (c->tcp && !c->closing)
    uv_read_stop((uv_stream_t *)c->tcp);
  /* The server is not the slow party now: the reply clocks stop. */
  progress_pause(&c->progress, uv_now(c->loop));
  arm_timer(c);
}

void conn_resume(struct conn *c) {
  if (!c->paused)
    return;
  c->paused = 0;
  progress_resume(&c->progress, uv_now(c->loop));
  if (c->failed || c->closing)
    return;
  arm_timer(c);
  if (c->tls)
    pump_tls(c);
  start_reading(c);
}

void conn_expect(struct conn *c, enum progress_wait wait, uint64_t lines, uint64_t body_octets) {
  if (c->failed || c->closing)
    return;
  struct progress *p = &c->progress;
  uint64_t now = uv_now(c->loop);
  assert(lines >= c->seen_lines && body_octets >= c->seen_body);
  if (!c->connected || c->handshaking)
    wait = PROGRESS_IDLE; /* the connect or handshake deadline applies instead */
  if (lines != c->seen_lines)
    progress_line_done(p, now);
  switch (wait) {
  case PROGRESS_IDLE:
    progress_idle(p, now);
    break;
  case PROGRESS_LINE:
    progress_line_wait(p, now);
    break;
  case PROGRESS_BODY:
    progress_body_wait(p, now);
    break;
  }
  /* After the wait state: octets of a body that began in this chunk count
   * for its first window (and those of a body that ended, for nothing). */
  progress_body_bytes(p, now, body_octets - c->seen_body);
  c->seen_lines = lines;
  c->seen_body = body_octets;
  arm_timer(c);
}

int conn_save_tls_session(struct conn *c, unsigned char *buf, size_t cap, size_t *len_r,
                          uint32_t *lifetime_s_r) {
  *len_r = 0;
  *lifetime_s_r = 0;
  if (c->tls == NULL || c->handshaking || c->failed || c->closing)
    return UV_EINVAL;
  return tls_save_session(c->tls, buf, cap, len_r, lifetime_s_r);
}

void conn_close(struct conn *c) {
  if (c->closing)
    return;
  c->closing = 1;
  if (c->gai_pending)
    uv_cancel((uv_req_t *)&c->gai); /* its callback still runs, with an error */
  if (c->cfg_busy)
    uv_cancel((uv_req_t *)&c->cfg_work); /* likewise (cfg_done drops the config) */
  drop_tcp(c);
  if (c->timer.loop)
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
  if (c->addrs) {
    uv_freeaddrinfo(c->addrs);
    c->addrs = c->next_addr = NULL;
  }
  if (c->tls) {
    tls_free(c->tls);
    c->tls = NULL;
  }
  if (!c->cfg_busy) {
    tls_config_put(c->tls_cfg);
    c->tls_cfg = NULL;
  }
  free(c->host);
  c->host = NULL;
  maybe_closed(c);
}

const struct p3_tls *conn_tls(const struct conn *c) {
  return c->tls != NULL && !c->handshaking && !c->closing ? c->tls : NULL;
}

int conn_peer_name(const struct conn *c, char *buf, size_t len, unsigned *port_r) {
  struct sockaddr_storage ss;
  int n = sizeof ss;
  if (c->tcp == NULL || !c->connected || c->closing)
    return UV_ENOTCONN;
  int err = uv_tcp_getpeername(c->tcp, (struct sockaddr *)&ss, &n);
  if (err)
    return err;
  if (ss.ss_family == AF_INET6) {
    *port_r = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return uv_ip6_name((struct sockaddr_in6 *)&ss, buf, len);
  }
  *port_r = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  return uv_ip4_name((struct sockaddr_in *)&ss, buf, len);
}

#include "config.h"

/* delayproxy -- a latency-and-bandwidth TCP proxy for the benchmarks and the tests.
 *
 *   bench_delayproxy [--listen HOST:PORT] [--rtt MS] [--mbit N] [--port-file FILE]
 *                    [--stats FILE] [--max-queue BYTES] [-v] TARGET_HOST:PORT
 *
 * Listens (default 127.0.0.1:0, the chosen port printed on stdout and written to --port-file)
 * and forwards each accepted connection to TARGET. Every byte is delayed by RTT/2 in each
 * direction, measured from the moment it was read: a chunk read at t is written at t + RTT/2
 * while later chunks keep being read meanwhile, so the data in flight is not capped by the
 * delay (this is a pipe of length RTT/2, not a sleep per chunk). A half-close (EOF) travels
 * the same way.
 *
 * A TCP connect is charged one RTT: the client's connect(2) completes at once on loopback, so
 * the proxy opens the upstream connection only 1.5 RTT after the accept. A server that speaks
 * first (POP3) then greets the client 2 RTT after its connect, as over a real path (SYN,
 * SYN-ACK, then the ACK carrying the connection to the server, then the greeting back).
 *
 * --mbit N models a link of N Mbit/s in each direction: chunks are serialized one after the
 * other at that rate before the propagation delay. Without it throughput is not limited,
 * except that at most --max-queue bytes (default 64 MiB) wait in each direction: beyond that
 * the proxy stops reading that side until the queue drains (the bound on memory). It also
 * stops reading while more than 1 MiB is due but not yet taken by a slow receiver.
 *
 * What it does not model: TCP slow start, loss, reordering, the receive window. On a real
 * path a fresh connection's first flight is about 10 segments (14 KiB) and the window doubles
 * per RTT, so bulk transfers pay a few more RTTs than here.
 *
 * On SIGTERM or SIGINT it writes one line of totals ("connections N c2s BYTES s2c BYTES") to
 * --stats (or stderr) and exits 0. Exit 1 on a startup error, 64 on a usage error.
 */

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#define READ_CHUNK (64 * 1024)
/* Freed read buffers kept for reuse: malloc'ing and freeing 64 KiB per read made glibc hand
 * pages back and fault them in again, which capped the proxy at ~200 MB/s. */
#define POOL_MAX 256
/* Bytes that are due but still in libuv's write queue (the receiver is slower than we read):
 * above this the proxy stops reading that side, as a TCP window would. */
#define WQ_MAX (1024 * 1024)

struct chunk {
  struct chunk *next;
  uint64_t due_ns; /* uv_hrtime() at which it may be written */
  size_t len;      /* 0 with eof set: the half-close */
  int eof;
  uv_write_t wreq;
  struct dir *dir;
  char data[];
};

struct conn;

/* One direction of a connection: bytes read from src wait in a FIFO until their time. */
struct dir {
  struct conn *c;
  uv_tcp_t *src;
  uv_tcp_t *dst;
  uv_timer_t timer;
  struct chunk *head;
  struct chunk *tail;
  size_t queued;         /* bytes read and not yet written (FIFO + uv write queue) */
  uint64_t link_free_ns; /* --mbit: when the modelled link is idle again */
  uint64_t bytes;        /* total bytes written to dst */
  int reading;
  int eof_read; /* EOF seen on src */
  int eof_done; /* shutdown of dst completed */
  uv_shutdown_t sreq;
};

struct conn {
  struct conn *prev;
  struct conn *next;
  uv_tcp_t client;
  uv_tcp_t server;
  uv_timer_t connect_timer;
  uv_connect_t creq;
  struct dir up;   /* client -> server */
  struct dir down; /* server -> client */
  unsigned id;
  int server_open; /* upstream connected */
  int closing;
  int handles; /* open handles left; freed at 0 */
  uint64_t t_accept;
};

static struct {
  uv_loop_t *loop;
  uv_tcp_t listener;
  uv_signal_t sigterm;
  uv_signal_t sigint;
  struct sockaddr_storage target;
  uint64_t half_rtt_ns;
  uint64_t connect_ns;
  double mbit;
  size_t max_queue;
  const char *stats_path;
  int verbose;
  unsigned nconns;
  uint64_t c2s;
  uint64_t s2c;
  struct conn *conns;
  struct chunk *pool;
  unsigned npool;
} g;

static void dir_pump(struct dir *d);
static void conn_close(struct conn *c);

static struct chunk *chunk_new(void) {
  struct chunk *k = g.pool;
  if (k) {
    g.pool = k->next;
    g.npool--;
    return k;
  }
  return malloc(sizeof(*k) + READ_CHUNK);
}

/* Every chunk (read buffer or EOF marker) is READ_CHUNK bytes big, so any can be pooled. */
static void chunk_free(struct chunk *k) {
  if (!k)
    return;
  if (g.npool >= POOL_MAX) {
    free(k);
    return;
  }
  k->next = g.pool;
  g.pool = k;
  g.npool++;
}

static void on_handle_closed(uv_handle_t *h) {
  struct conn *c = h->data;
  if (--c->handles > 0)
    return;
  for (struct dir *d = &c->up; d; d = d == &c->up ? &c->down : NULL) {
    while (d->head) {
      struct chunk *k = d->head;
      d->head = k->next;
      chunk_free(k);
    }
  }
  if (g.verbose)
    fprintf(stderr, "delayproxy: conn %u closed after %.3f s: c2s %llu s2c %llu\n", c->id,
            (double)(uv_hrtime() - c->t_accept) / 1e9, (unsigned long long)c->up.bytes,
            (unsigned long long)c->down.bytes);
  g.c2s += c->up.bytes;
  g.s2c += c->down.bytes;
  if (c->prev)
    c->prev->next = c->next;
  else
    g.conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  free(c);
}

/* Close every handle of the connection (idempotent); the struct goes with the last close_cb.
 * Pending writes are cancelled by libuv first (write_cb with UV_ECANCELED frees them). */
static void conn_close(struct conn *c) {
  if (c->closing)
    return;
  c->closing = 1;
  c->up.timer.data = c->down.timer.data = c; /* on_handle_closed finds the conn in data */
  uv_close((uv_handle_t *)&c->client, on_handle_closed);
  uv_close((uv_handle_t *)&c->server, on_handle_closed);
  uv_close((uv_handle_t *)&c->connect_timer, on_handle_closed);
  uv_close((uv_handle_t *)&c->up.timer, on_handle_closed);
  uv_close((uv_handle_t *)&c->down.timer, on_handle_closed);
}

static void conn_maybe_done(struct conn *c) {
  if (c->up.eof_done && c->down.eof_done)
    conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  struct chunk *k = chunk_new();
  buf->base = k ? k->data : NULL;
  buf->len = k ? READ_CHUNK : 0;
}

static struct chunk *chunk_of(char *data) {
  return (struct chunk *)(data - offsetof(struct chunk, data));
}

/* Give a chunk read at now its due time: serialization on the modelled link, then RTT/2. */
static void dir_push(struct dir *d, struct chunk *k) {
  uint64_t now = uv_hrtime();
  uint64_t sent = now;
  if (g.mbit > 0) {
    uint64_t start = d->link_free_ns > now ? d->link_free_ns : now;
    /* bits / (mbit * 1e6) seconds = bits * 1000 / mbit nanoseconds */
    d->link_free_ns = start + (uint64_t)((double)k->len * 8.0 * 1000.0 / g.mbit);
    sent = d->link_free_ns;
  }
  k->due_ns = sent + g.half_rtt_ns;
  k->next = NULL;
  k->dir = d;
  if (d->tail)
    d->tail->next = k;
  else
    d->head = k;
  d->tail = k;
  d->queued += k->len;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct conn *c = s->data;
  struct dir *d = (uv_tcp_t *)s == &c->client ? &c->up : &c->down;
  struct chunk *k = buf->base ? chunk_of(buf->base) : NULL;

  if (nread > 0) {
    if (c->closing) {
      chunk_free(k);
      return;
    }
    k->len = (size_t)nread;
    k->eof = 0;
    dir_push(d, k);
    dir_pump(d);
    if (d->reading && (d->queued >= g.max_queue ||
                       uv_stream_get_write_queue_size((uv_stream_t *)d->dst) >= WQ_MAX)) {
      uv_read_stop(s);
      d->reading = 0;
    }
    return;
  }
  chunk_free(k);
  if (nread == 0 || c->closing)
    return;
  if (nread == UV_EOF) {
    uv_read_stop(s);
    d->reading = 0;
    d->eof_read = 1;
    struct chunk *e = chunk_new();
    if (!e) {
      conn_close(c);
      return;
    }
    e->len = 0;
    e->eof = 1;
    dir_push(d, e);
    dir_pump(d);
    return;
  }
  /* A reset or another error: no delayed replay of a RST, the connection just goes. */
  if (g.verbose)
    fprintf(stderr, "delayproxy: conn %u: read from %s: %s\n", c->id,
            d == &c->up ? "client" : "server", uv_strerror((int)nread));
  conn_close(c);
}

static void on_write(uv_write_t *req, int status) {
  struct chunk *k = req->data;
  struct dir *d = k->dir;
  struct conn *c = d->c;
  d->queued -= k->len;
  chunk_free(k);
  if (status < 0) {
    if (status != UV_ECANCELED && g.verbose)
      fprintf(stderr, "delayproxy: conn %u: write: %s\n", c->id, uv_strerror(status));
    conn_close(c);
    return;
  }
  if (!c->closing && !d->reading && !d->eof_read && d->queued < g.max_queue / 2 &&
      uv_stream_get_write_queue_size((uv_stream_t *)d->dst) < WQ_MAX / 2 &&
      (d == &c->down || c->server_open)) {
    d->reading = 1;
    uv_read_start((uv_stream_t *)d->src, on_alloc, on_read);
  }
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  struct dir *d = req->data;
  if (status == UV_ECANCELED)
    return;
  d->eof_done = 1;
  conn_maybe_done(d->c);
}

static void on_dir_timer(uv_timer_t *t) {
  dir_pump(t->data);
}

/* Write every chunk whose time has come, then sleep until the next one. */
static void dir_pump(struct dir *d) {
  struct conn *c = d->c;
  if (c->closing || (d == &c->up && !c->server_open))
    return;
  uint64_t now = uv_hrtime();
  while (d->head && d->head->due_ns <= now) {
    struct chunk *k = d->head;
    d->head = k->next;
    if (!d->head)
      d->tail = NULL;
    if (k->eof) {
      chunk_free(k);
      d->sreq.data = d;
      if (uv_shutdown(&d->sreq, (uv_stream_t *)d->dst, on_shutdown) < 0) {
        conn_close(c);
        return;
      }
      continue;
    }
    uv_buf_t b = uv_buf_init(k->data, (unsigned)k->len);
    k->wreq.data = k;
    d->bytes += k->len;
    int r = uv_write(&k->wreq, (uv_stream_t *)d->dst, &b, 1, on_write);
    if (r < 0) {
      d->queued -= k->len;
      chunk_free(k);
      conn_close(c);
      return;
    }
  }
  if (d->head) {
    /* Timers run on the loop's millisecond clock: round up so nothing leaves early. */
    uv_update_time(g.loop);
    uint64_t wait_ns = d->head->due_ns - now;
    uint64_t ms = (wait_ns + 999999) / 1000000;
    uv_timer_start(&d->timer, on_dir_timer, ms, 0);
  }
}

static void on_server_connect(uv_connect_t *req, int status) {
  struct conn *c = req->data;
  if (c->closing)
    return;
  if (status < 0) {
    fprintf(stderr, "delayproxy: conn %u: connect to target: %s\n", c->id, uv_strerror(status));
    conn_close(c);
    return;
  }
  c->server_open = 1;
  uv_tcp_nodelay(&c->server, 1);
  c->down.reading = 1;
  uv_read_start((uv_stream_t *)&c->server, on_alloc, on_read);
  dir_pump(&c->up);
}

static void on_connect_timer(uv_timer_t *t) {
  struct conn *c = t->data;
  c->creq.data = c;
  int r =
      uv_tcp_connect(&c->creq, &c->server, (const struct sockaddr *)&g.target, on_server_connect);
  if (r < 0) {
    fprintf(stderr, "delayproxy: conn %u: connect to target: %s\n", c->id, uv_strerror(r));
    conn_close(c);
  }
}

static void dir_init(struct conn *c, struct dir *d, uv_tcp_t *src, uv_tcp_t *dst) {
  d->c = c;
  d->src = src;
  d->dst = dst;
  uv_timer_init(g.loop, &d->timer);
  d->timer.data = d;
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0) {
    fprintf(stderr, "delayproxy: accept: %s\n", uv_strerror(status));
    return;
  }
  struct conn *c = calloc(1, sizeof(*c));
  if (!c)
    return;
  c->id = ++g.nconns;
  c->t_accept = uv_hrtime();
  uv_tcp_init(g.loop, &c->client);
  uv_tcp_init(g.loop, &c->server);
  uv_timer_init(g.loop, &c->connect_timer);
  c->client.data = c->server.data = c->connect_timer.data = c;
  dir_init(c, &c->up, &c->client, &c->server);
  dir_init(c, &c->down, &c->server, &c->client);
  c->up.timer.data = &c->up;
  c->down.timer.data = &c->down;
  c->handles = 5;
  c->next = g.conns;
  if (g.conns)
    g.conns->prev = c;
  g.conns = c;
  if (uv_accept(server, (uv_stream_t *)&c->client) < 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->client, 1);
  c->up.reading = 1;
  uv_read_start((uv_stream_t *)&c->client, on_alloc, on_read);
  uv_timer_start(&c->connect_timer, on_connect_timer, (g.connect_ns + 999999) / 1000000, 0);
}

static void write_stats(void) {
  uint64_t c2s = g.c2s, s2c = g.s2c;
  for (struct conn *c = g.conns; c; c = c->next) {
    c2s += c->up.bytes;
    s2c += c->down.bytes;
  }
  FILE *f = stderr;
  if (g.stats_path) {
    f = fopen(g.stats_path, "w");
    if (!f) {
      fprintf(stderr, "delayproxy: %s: %s\n", g.stats_path, strerror(errno));
      f = stderr;
    }
  }
  fprintf(f, "connections %u c2s %llu s2c %llu\n", g.nconns, (unsigned long long)c2s,
          (unsigned long long)s2c);
  if (f != stderr)
    fclose(f);
}

static void on_close_noop(uv_handle_t *h) {
  (void)h;
}

static void on_signal(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  write_stats();
  uv_signal_stop(&g.sigterm);
  uv_signal_stop(&g.sigint);
  uv_close((uv_handle_t *)&g.sigterm, on_close_noop);
  uv_close((uv_handle_t *)&g.sigint, on_close_noop);
  uv_close((uv_handle_t *)&g.listener, on_close_noop);
  for (struct conn *c = g.conns; c; c = c->next)
    conn_close(c);
}

/* HOST:PORT or [HOST]:PORT, numeric addresses only (the benchmarks stay on loopback). */
static int parse_addr(const char *s, struct sockaddr_storage *out) {
  char host[64];
  const char *colon = strrchr(s, ':');
  if (!colon || (size_t)(colon - s) >= sizeof(host))
    return -EINVAL;
  const char *h = s;
  size_t hl = (size_t)(colon - s);
  if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
    h++;
    hl -= 2;
  }
  memcpy(host, h, hl);
  host[hl] = '\0';
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || end == colon + 1 || port < 0 || port > 65535)
    return -EINVAL;
  memset(out, 0, sizeof(*out));
  if (strchr(host, ':'))
    return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)out);
  return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out);
}

static void usage(FILE *f) {
  fprintf(f, "usage: bench_delayproxy [--listen HOST:PORT] [--rtt MS] [--mbit N] "
             "[--port-file FILE]\n"
             "                        [--stats FILE] [--max-queue BYTES] [-v] "
             "TARGET_HOST:PORT\n");
}

int main(int argc, char **argv) {
  static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                       {"rtt", required_argument, NULL, 'r'},
                                       {"mbit", required_argument, NULL, 'b'},
                                       {"port-file", required_argument, NULL, 'p'},
                                       {"stats", required_argument, NULL, 's'},
                                       {"max-queue", required_argument, NULL, 'q'},
                                       {"verbose", no_argument, NULL, 'v'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *listen_s = "127.0.0.1:0", *port_file = NULL;
  double rtt_ms = 0;
  char *end;
  int o;

  g.max_queue = 64u << 20;
  while ((o = getopt_long(argc, argv, "l:r:b:p:s:q:vh", opts, NULL)) != -1) {
    switch (o) {
    case 'l':
      listen_s = optarg;
      break;
    case 'r':
      rtt_ms = strtod(optarg, &end);
      if (*end || end == optarg || !(rtt_ms >= 0 && rtt_ms <= 600000)) {
        fprintf(stderr, "delayproxy: bad --rtt %s\n", optarg);
        return 64;
      }
      break;
    case 'b':
      g.mbit = strtod(optarg, &end);
      if (*end || end == optarg || !(g.mbit >= 0 && g.mbit <= 1e6)) {
        fprintf(stderr, "delayproxy: bad --mbit %s\n", optarg);
        return 64;
      }
      break;
    case 'p':
      port_file = optarg;
      break;
    case 's':
      g.stats_path = optarg;
      break;
    case 'q': {
      unsigned long long q = strtoull(optarg, &end, 10);
      if (*end || end == optarg || q < READ_CHUNK || q > (1ull << 34)) {
        fprintf(stderr, "delayproxy: bad --max-queue %s\n", optarg);
        return 64;
      }
      g.max_queue = (size_t)q;
      break;
    }
    case 'v':
      g.verbose = 1;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 64;
    }
  }
  if (optind != argc - 1) {
    usage(stderr);
    return 64;
  }
  if (parse_addr(argv[optind], &g.target) < 0) {
    fprintf(stderr, "delayproxy: bad target %s (want HOST:PORT, numeric)\n", argv[optind]);
    return 64;
  }
  struct sockaddr_storage la;
  if (parse_addr(listen_s, &la) < 0) {
    fprintf(stderr, "delayproxy: bad --listen %s\n", listen_s);
    return 64;
  }
  g.half_rtt_ns = (uint64_t)(rtt_ms * 1e6 / 2 + 0.5);
  g.connect_ns = rtt_ms > 0 ? 3 * g.half_rtt_ns : 0;

  signal(SIGPIPE, SIG_IGN);
  g.loop = uv_default_loop();
  uv_tcp_init(g.loop, &g.listener);
  int r = uv_tcp_bind(&g.listener, (const struct sockaddr *)&la, 0);
  if (r == 0)
    r = uv_listen((uv_stream_t *)&g.listener, 128, on_connection);
  if (r < 0) {
    fprintf(stderr, "delayproxy: listen on %s: %s\n", listen_s, uv_strerror(r));
    return 1;
  }
  struct sockaddr_storage bound;
  int blen = sizeof(bound);
  uv_tcp_getsockname(&g.listener, (struct sockaddr *)&bound, &blen);
  int port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                               : ((struct sockaddr_in *)&bound)->sin_port);
  if (port_file) {
    /* Written whole under a temporary name, then renamed: a reader never sees half a port. */
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", port_file) >= (int)sizeof(tmp)) {
      fprintf(stderr, "delayproxy: --port-file path too long\n");
      return 64;
    }
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 || rename(tmp, port_file) < 0) {
      fprintf(stderr, "delayproxy: %s: %s\n", port_file, strerror(errno));
      return 1;
    }
  }
  printf("%d\n", port);
  fflush(stdout);
  if (g.verbose)
    fprintf(stderr, "delayproxy: 127.0.0.1:%d -> %s, rtt %.1f ms, %s\n", port, argv[optind], rtt_ms,
            g.mbit > 0 ? "bandwidth limited" : "no bandwidth limit");

  uv_signal_init(g.loop, &g.sigterm);
  uv_signal_init(g.loop, &g.sigint);
  uv_signal_start(&g.sigterm, on_signal, SIGTERM);
  uv_signal_start(&g.sigint, on_signal, SIGINT);
  uv_run(g.loop, UV_RUN_DEFAULT);
  while (g.pool) {
    struct chunk *k = g.pool;
    g.pool = k->next;
    free(k);
  }
  return uv_loop_close(g.loop) == 0 ? 0 : 1;
}

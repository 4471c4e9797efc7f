/* The transport: a libuv TCP connection, optionally wrapped in TLS (tls.h),
 * moving bytes between the socket and its owner (the engine).  It resolves
 * the host and tries every address in turn, bounds connect, handshake and
 * reply waits with one timer, and supports STLS upgrades and read
 * back-pressure.  Bounds, with T = timeout_ms: each connect attempt and the
 * TLS handshake as a whole within T (bytes dripping in do not extend them);
 * replies as progress.h says (a whole status line within T, bodies at least
 * PROGRESS_FLOOR octets/s), fed by the owner through conn_expect().
 * Ownership: struct conn is embedded in its owner, which must not free it
 * before the `closed` callback. */
#ifndef P3_CONN_H
#define P3_CONN_H

#include <stddef.h>
#include <uv.h>

#include "progress.h"
#include "tls.h"

struct conn_ops {
  /* TCP connected (and, for implicit TLS, the handshake verified). */
  void (*connected)(void *data);
  /* Plaintext arrived (after decryption). */
  void (*data)(void *data, const char *buf, size_t len);
  /* The STLS handshake completed and verified. */
  void (*tls_ready)(void *data);
  /* The connection failed: err is P3_EDNS, P3_ECONNECT, P3_ETLS, P3_ECERT,
   * P3_EPIN, P3_ETIMEOUT, P3_EEOF or a libuv code; detail is a short phrase
   * (may be ""), valid during the call.  Called at most once; the owner then
   * calls conn_close(). */
  void (*error)(void *data, int err, const char *detail);
  /* Every handle is closed; the owner may free the memory now. */
  void (*closed)(void *data);
  /* Optional: a one-line note for -v (addresses tried, TLS parameters). */
  void (*note)(void *data, const char *line);
};

struct conn_options {
  const char *host; /* where to connect */
  unsigned port;
  int implicit_tls;          /* handshake right after connect */
  int starttls;              /* the session may ask for a handshake (STLS) */
  struct p3_tls_options tls; /* used for implicit TLS and STLS */
  unsigned timeout_ms;       /* connect, handshake, status lines, body windows */
};

struct conn {
  uv_loop_t *loop;
  struct conn_options opts;
  char *host; /* owned copy of opts.host */
  struct conn_ops ops;
  void *data;

  uv_getaddrinfo_t gai;
  struct addrinfo *addrs, *next_addr;
  uv_tcp_t *tcp; /* heap: one per connect attempt */
  uv_connect_t connect_req;
  uv_timer_t timer;
  struct p3_tls *tls;
  int handshaking; /* 1: implicit, 2: STLS */
  int connected;
  int paused;
  uint64_t deadline;              /* loop time the connect attempt or handshake ends */
  struct progress progress;       /* the reply bounds, once connected */
  uint64_t seen_lines, seen_body; /* the owner's counters at the last conn_expect */
  int failed;
  int closing;
  int pending; /* handles/requests whose callbacks are still owed */
  int gai_pending;
  int last_connect_err;
  /* Round trips (issue 11): each connect attempt, and each handshake flight
   * after which the client had to wait for the server. */
  unsigned waits_connect, waits_tls;
  int tls_ended_on_send; /* the handshake's last flight was the client's */
  int tls_resumed;       /* the handshake resumed an offered session */
  char errbuf[768];      /* a certificate error names the certificate and what to do */
  /* The shared TLS configuration (CA chain, DRBG: tls_config_get), built
   * on the thread pool while the name resolves and the TCP connection is
   * made, so that the loop never parses a CA bundle. */
  uv_work_t cfg_work;
  struct p3_tls_config *tls_cfg; /* one reference, once built */
  int cfg_busy;                  /* cfg_work in flight */
  int cfg_err;                   /* its error (cfg_errbuf says what) */
  int tls_waiting;               /* a handshake waits for cfg_work (reading stopped) */
  char cfg_errbuf[512];          /* written by the worker, read after it is done */
  char readbuf[65536];
  char plainbuf[16384];
};

/* Starts resolving and connecting.  Strings in opts are copied (the TLS
 * options' pointers must stay valid until closed).  Returns 0 or a negative
 * error (then no callback runs and conn_close is still needed). */
int conn_start(struct conn *c, uv_loop_t *loop, const struct conn_options *opts,
               const struct conn_ops *ops, void *data);

/* Sends buf (len bytes, malloc'd; ownership passes to conn, freed after the
 * write).  Returns 0 or a negative error (buf freed either way). */
int conn_write(struct conn *c, char *buf, size_t len);

/* Starts the STLS handshake; plaintext received after this is discarded by
 * the session, and from here on reads go through TLS. */
int conn_start_tls(struct conn *c);

/* Back-pressure: stop and restart reading from the socket.  The reply
 * bounds stand still meanwhile (the server is not the slow party). */
void conn_pause(struct conn *c);
void conn_resume(struct conn *c);

/* What the owner waits for now, told after every call into the session
 * (after each received chunk and each write): wait is PROGRESS_IDLE (no
 * reply outstanding), PROGRESS_LINE or PROGRESS_BODY; lines and body_octets
 * are the session's monotonic counters (session_wire_counts()).  Received
 * bytes never restart a bound by themselves; a completed line starts the
 * next line's clock.  When a bound expires the `error` callback gets
 * P3_ETIMEOUT with a phrase saying which (from the timer, never from inside
 * this call). */
void conn_expect(struct conn *c, enum progress_wait wait, uint64_t lines, uint64_t body_octets);

/* After the `connected` (implicit TLS) or `tls_ready` callback: saves the
 * TLS session for resumption (tls_save_session).  Returns 0 or a negative
 * error (no TLS, nothing resumable). */
int conn_save_tls_session(struct conn *c, unsigned char *buf, size_t cap, size_t *len_r,
                          uint32_t *lifetime_s_r);

/* Closes everything; `closed` follows.  Idempotent. */
void conn_close(struct conn *c);

/* The TLS layer once a handshake has completed (after `connected` for
 * implicit TLS, after `tls_ready` for STLS), for tls_version(),
 * tls_ciphersuite() and tls_peer(); NULL before, without TLS, or once
 * closing.  Owned by the connection. */
const struct p3_tls *conn_tls(const struct conn *c);

/* The address connected to ("127.0.0.1", "::1") into buf and its port into
 * *port_r.  Returns 0, or a negative error when not connected. */
int conn_peer_name(const struct conn *c, char *buf, size_t len, unsigned *port_r);

#endif

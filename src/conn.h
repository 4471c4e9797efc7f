/* The transport: a libuv TCP connection, optionally wrapped in TLS (tls.h),
 * moving bytes between the socket and its owner (the engine).  It resolves
 * the host and tries every address in turn, bounds connect, handshake and
 * reply waits with a timer, and supports STLS upgrades and read back-pressure.
 * Ownership: struct conn is embedded in its owner, which must not free it
 * before the `closed` callback. */
#ifndef P3_CONN_H
#define P3_CONN_H

#include <stddef.h>
#include <uv.h>

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
  const char *host;         /* where to connect */
  unsigned port;
  int implicit_tls;         /* handshake right after connect */
  struct p3_tls_options tls; /* used for implicit TLS and STLS */
  unsigned timeout_ms;      /* connect, handshake, and silent waits for a reply */
};

struct conn {
  uv_loop_t *loop;
  struct conn_options opts;
  char *host;               /* owned copy of opts.host */
  struct conn_ops ops;
  void *data;

  uv_getaddrinfo_t gai;
  struct addrinfo *addrs, *next_addr;
  uv_tcp_t *tcp;            /* heap: one per connect attempt */
  uv_connect_t connect_req;
  uv_timer_t timer;
  struct p3_tls *tls;
  int handshaking;          /* 1: implicit, 2: STLS */
  int connected;
  int paused;
  int timer_wanted;
  int failed;
  int closing;
  int pending;              /* handles/requests whose callbacks are still owed */
  int gai_pending;
  int last_connect_err;
  char errbuf[256];
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

/* Back-pressure: stop and restart reading from the socket. */
void conn_pause(struct conn *c);
void conn_resume(struct conn *c);

/* Whether the reply timeout applies now (a reply is outstanding).  Each
 * received byte restarts it. */
void conn_watch(struct conn *c, int on);

/* Closes everything; `closed` follows.  Idempotent. */
void conn_close(struct conn *c);

#endif

/* TLS as a byte transform over memory buffers (mbedTLS).  The only file that
 * includes mbedTLS headers is tls.c.  The transport feeds ciphertext in and
 * drains ciphertext out; nothing here touches a socket or the event loop. */
#ifndef P3_TLS_H
#define P3_TLS_H

#include <stddef.h>
#include <stdint.h>

#define P3_TLS_MAX_PINS 8

struct p3_tls_options {
  const char *ca_file;               /* NULL: /etc/ssl/certs/ca-certificates.crt */
  const char *server_name;           /* SNI and certificate name; NULL or "" means no SNI and
                                        no name check (only allowed with pins) */
  uint8_t pins[P3_TLS_MAX_PINS][32]; /* SHA-256 of the leaf certificate's DER */
  int pin_count;                     /* > 0: a matching pin replaces CA and name checks */
  /* A session saved by tls_save_session, offered for resumption (RFC 5077
   * ticket or session ID); NULL: none.  Read by tls_new only.  The caller
   * offers it only when tls_session_key matches the one it was saved under:
   * mbedTLS does not verify the certificate again on an abbreviated
   * handshake. */
  const unsigned char *resume;
  size_t resume_len;
  /* pop3 info only (never for a session that logs in): judge the
   * certificate but let the handshake complete whatever the verdict, which
   * tls_peer() then reports.  Also allows no server_name without pins (the
   * name is then not checked). */
  int report_only;
};

/* The server certificate and what verification made of it (tls_peer).
 * Strings come from the certificate: anything unprintable is '?'. */
struct p3_tls_peer {
  int verdict;       /* 0: trusted (CA and name, or a pin); else P3_ECERT or P3_EPIN */
  int pinned;        /* trusted through a --tls-fingerprint pin */
  char reason[768];  /* why not trusted, as tls_handshake would fail; "" when trusted */
  int have_cert;     /* 0: the server sent none (the fields below are empty) */
  char subject[256]; /* e.g. "CN=localhost" */
  char issuer[256];
  char valid_from[32]; /* "YYYY-MM-DD HH:MM:SS UTC" */
  char valid_to[32];
  char fingerprint[7 + 32 * 3]; /* "sha256:AB:CD:..." as `openssl x509 -fingerprint -sha256` */
  char pin[7 + 64 + 1];         /* "sha256:abcd..." as --tls-fingerprint takes it */
};

struct p3_tls;        /* opaque: one connection */
struct p3_tls_config; /* opaque: what connections share (see tls_config_get) */

/* Parses "sha256:HEX" (64 hex digits, any case, colons allowed anywhere
 * between digit pairs, the "sha256:" prefix optional) into out.  Returns 0
 * or -EINVAL. */
int tls_parse_fingerprint(const char *text, uint8_t out[32]);

/* The shared part of a client context for opts' CA file (ca_file, or the
 * system bundle unless pins are given without one): the parsed CA chain, a
 * seeded DRBG (serialised by a lock), the suite list and the TLS settings.
 * BLOCKING (parses the CA bundle and gathers entropy: 10-30 ms): call it
 * off the loop thread (uv_queue_work).  Thread-safe.  A config for the same
 * file, unchanged (device, inode, size, mtime), that is still referenced is
 * returned again instead of built anew.  Returns 0 and a reference in
 * *cfg_r (release it with tls_config_put), P3_ETLSCONF with errbuf set (a
 * CA file that cannot be read or parsed is named) or -ENOMEM. */
int tls_config_get(const struct p3_tls_options *opts, struct p3_tls_config **cfg_r, char *errbuf,
                   size_t errlen);

/* Drops a reference (NULL: nothing); the last one frees the config. */
void tls_config_put(struct p3_tls_config *cfg);

/* Creates a client context on cfg (which it holds a reference to until
 * tls_free): cheap, no file access, for the loop thread.  opts supplies the
 * server name, pins and session to resume; its ca_file is cfg's business.
 * Returns 0 and *t_r, P3_ETLSCONF (bad name or pins) or -ENOMEM. */
int tls_new_from(struct p3_tls_config *cfg, const struct p3_tls_options *opts, struct p3_tls **t_r,
                 char *errbuf, size_t errlen);

/* tls_config_get and tls_new_from in one (blocking as the former).
 * Returns 0 and *t_r, or P3_ETLSCONF with errbuf set (a CA file that
 * cannot be read is named). */
int tls_new(const struct p3_tls_options *opts, struct p3_tls **t_r, char *errbuf, size_t errlen);

void tls_free(struct p3_tls *t);

/* Appends received ciphertext (copied; the buffer grows as needed but the
 * transport stops reading while tls has more than ~64 KiB unconsumed).
 * -EINVAL while a loan (tls_feed_lend) is open. */
int tls_feed(struct p3_tls *t, const char *data, size_t len);

/* Lends received ciphertext without copying it: tls_handshake and tls_read
 * read from data (after anything fed earlier) until tls_feed_end, which
 * must come before data changes or goes away.  tls_feed_end copies what is
 * left unconsumed (as tls_feed would: only while the transport is paused
 * or a record is incomplete) and returns 0, -ENOBUFS or -ENOMEM. */
void tls_feed_lend(struct p3_tls *t, const char *data, size_t len);
int tls_feed_end(struct p3_tls *t);

/* Bytes of ciphertext fed (or lent) but not yet consumed. */
size_t tls_pending_input(const struct p3_tls *t);

/* Advances the handshake.  Returns 1 when done (and verified), 0 when it
 * needs more input (drain the output first), or P3_ETLS / P3_ECERT /
 * P3_EPIN with errbuf describing what failed (e.g. "certificate is for
 * other.example, not mail.example.com", "certificate has expired"). */
int tls_handshake(struct p3_tls *t, char *errbuf, size_t errlen);

/* Decrypts up to len bytes of application data into buf.  Returns the
 * count (> 0), 0 when more input is needed, P3_EEOF on a close_notify, or
 * P3_ETLS (errbuf set). */
int tls_read(struct p3_tls *t, char *buf, size_t len, char *errbuf, size_t errlen);

/* Encrypts all of data into the output buffer.  Returns 0 or P3_ETLS. */
int tls_write(struct p3_tls *t, const char *data, size_t len, char *errbuf, size_t errlen);

/* Hands the ciphertext waiting to be sent to the caller: *buf_r is malloc'd
 * and owned by the caller afterwards (free it in the write callback).
 * Returns the length, 0 when there is nothing to send. */
size_t tls_take_output(struct p3_tls *t, char **buf_r);

/* Queues a close_notify alert into the output. */
void tls_close_notify(struct p3_tls *t);

/* What a saved session is valid for: SHA-256 over the TCP host, the port,
 * the server name, the pins (as a set: order does not matter), and the CA
 * file's path and modification time (ca_file NULL: the system bundle; no CA
 * file used when pins are given without one).  ca_mtime_ns: the CA file's
 * st_mtim in nanoseconds, or 0 when it cannot be read. */
void tls_session_key(const struct p3_tls_options *opts, const char *tcp_host, unsigned port,
                     int64_t ca_mtime_ns, uint8_t out[32]);

/* The CA file tls_new would load for opts, or NULL (pins alone). */
const char *tls_ca_path(const struct p3_tls_options *opts);

/* After a verified handshake: serialises the session into buf (cap bytes;
 * it holds the master secret: wipe it after use, never print it).  Sets
 * *len_r and *lifetime_s_r (the ticket's lifetime hint, 0 when none).
 * Returns 0, -ENOENT (nothing resumable: no ticket and no session ID),
 * -ENOBUFS or P3_ETLS. */
int tls_save_session(struct p3_tls *t, unsigned char *buf, size_t cap, size_t *len_r,
                     uint32_t *lifetime_s_r);

/* 1 when a session was offered (opts.resume was usable). */
int tls_session_offered(const struct p3_tls *t);

/* 1 when the handshake resumed the offered session (abbreviated
 * handshake), 0 after a full one. */
int tls_resumed(const struct p3_tls *t);

/* After a completed handshake: fills *peer_r with the verdict and the
 * certificate (subject, issuer, validity, fingerprints).  Returns 0, or
 * P3_ETLS when the handshake has not completed. */
int tls_peer(const struct p3_tls *t, struct p3_tls_peer *peer_r);

/* Negotiated protocol and cipher suite, for -v (static strings). */
const char *tls_version(const struct p3_tls *t);
const char *tls_ciphersuite(const struct p3_tls *t);

#endif

/* The POP3 client session: a state machine that takes bytes in and hands
 * bytes and events out.  No I/O, no libuv, no TLS here: the transport feeds
 * received plaintext with session_feed() and sends what session_take_output()
 * returns after every call into the session; delivery is reached through the
 * callbacks in struct session_ops.
 *
 * Flow: greeting -> CAPA -> [STLS -> (transport handshake) -> CAPA] ->
 * login (USER+PASS, APOP or AUTH: see enum session_auth) -> [UTF8] -> UIDL+LIST -> [TOP n 0 probes]
 * -> RETR pipeline (bounded window) with DELE for each message once its delivery reports it saved
 * -> barrier (fsync new/) -> QUIT.  Warm (session_options.mem_capa): CAPA, the login, [UTF8,]
 * UIDL and LIST go out in one write after the greeting (after the handshake with STLS; on a
 * resumed implicit-TLS connection before it: session_send_early), and
 * the fresh CAPA is checked when its reply comes (session_flight).  Replies match commands
 * strictly in order through a FIFO of commands in flight.  A reply that cannot belong to the
 * command it is matched with (desync) stops all further DELEs and the session closes without
 * QUIT, so the server keeps every message.
 *
 * UTF8 (RFC 6856) is sent right after login when CAPA advertises it (unless
 * no_utf8): Courier otherwise serves messages with UTF-8 headers rewritten
 * into a "cannot display" wrapper of another size.
 *
 * Reply identity and sizes.  A RETR reply's identity is established when
 * the session is lock-step (it is the only reply outstanding) or when the
 * "UIDL n" sent right before "RETR n" named that message.  Such a reply may
 * differ in size from LIST (servers rewrite messages, or grow them): it is
 * delivered as served, checked against the octet count its +OK line
 * announced when there is one (a mismatch fails that message only), and the
 * difference is noted in the trace.  Without an established identity a size
 * that differs from LIST is a desync, as is an announced count that differs
 * from LIST. */
#ifndef P3_SESSION_H
#define P3_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

enum session_pipelining {
  SESSION_PIPELINING_ON = 0, /* pipeline even without the PIPELINING capability */
  SESSION_PIPELINING_AUTO,   /* only when advertised */
  SESSION_PIPELINING_OFF     /* lock-step: one command in flight */
};

/* How to log in (RFC 1939 USER/PASS and APOP, RFC 5034 AUTH).  AUTO picks
 * from what the server offers, after CAPA (inside TLS when STLS is used):
 *   - on a TLS connection: SASL PLAIN, else USER/PASS, else SASL LOGIN,
 *     else APOP;
 *   - in plaintext: USER/PASS, else SASL PLAIN, else SASL LOGIN, else APOP.
 * USER/PASS counts as offered when CAPA lists USER or when CAPA was not
 * answered (-ERR: popa3d, solid-pop3d); APOP when the greeting carries a
 * timestamp.  AUTO never picks an OAuth method: a token is not a password.
 * A forced method the server does not offer ends the session with
 * P3_EAUTHMECH before any secret is sent; so does AUTO when nothing it may
 * use is offered. */
enum session_auth {
  SESSION_AUTH_AUTO = 0,
  SESSION_AUTH_USER,       /* USER + PASS */
  SESSION_AUTH_APOP,       /* APOP user md5(timestamp password) */
  SESSION_AUTH_PLAIN,      /* AUTH PLAIN, with an initial response when it fits */
  SESSION_AUTH_LOGIN,      /* AUTH LOGIN: user name and password in two steps */
  SESSION_AUTH_XOAUTH2,    /* AUTH XOAUTH2, password is the access token */
  SESSION_AUTH_OAUTHBEARER /* AUTH OAUTHBEARER (RFC 7628), password is the token */
};

/* The method's name as the configuration and the command line spell it
 * ("auto", "user", "apop", "plain", "login", "xoauth2", "oauthbearer"), or
 * NULL for a value out of range. */
const char *session_auth_name(enum session_auth auth);

/* Parses such a name (ASCII case-insensitive) into *auth_r.  Returns 0 or
 * P3_EUSAGE. */
int session_auth_parse(const char *name, enum session_auth *auth_r);

/* 1 for XOAUTH2 and OAUTHBEARER (the secret is an access token), else 0. */
int session_auth_is_oauth(enum session_auth auth);

#define SESSION_DEFAULT_WINDOW 1000
#define SESSION_MAX_WINDOW 100000

struct session_msg {
  unsigned long num; /* message number on the server */
  uint64_t size;     /* LIST size */
  uint32_t uid_off;  /* offset of the UID in the session's UID arena */
  uint16_t uid_len;  /* 0: no UID (none listed, or malformed / over P3_UID_MAX) */
  uint16_t flags;    /* SESSION_MSG_* */
};

enum {
  SESSION_MSG_SKIP = 1,    /* owner decided not to retrieve it (session_skip_msg) */
  SESSION_MSG_SAVED = 2,   /* delivery reported it durable in new/ */
  SESSION_MSG_FAILED = 4,  /* RETR -ERR, a size check, or the save failed */
  SESSION_MSG_DELETED = 8, /* DELE +OK received */
  SESSION_MSG_DELETE = 16, /* owner asks for DELE without RETR (already delivered) */
  /* The RETR reply handed to msg_begin..msg_end was proven to belong to this
   * message (lock-step, or a matching "UIDL n" right before it) and passed
   * the size checks.  With SAVED: this very message is durable in new/, even
   * if the session later desynchronised.  Cleared again when a RESIZED
   * message is followed by a desync or protocol error in the same session
   * (a body cut short by a server's stray "." line looks resized too). */
  SESSION_MSG_VERIFIED = 32,
  /* Its UID appears more than once in the listing (session_uids_unique). */
  SESSION_MSG_DUPUID = 64,
  /* Its RETR reply differed in size from LIST and was delivered as served. */
  SESSION_MSG_RESIZED = 128,
  /* The owner asked for a header probe (session_probe_msg). */
  SESSION_MSG_PROBE = 256
};

struct session_ops {
  /* Body of message idx starts: the owner opens a delivery.  Non-zero: fail. */
  int (*msg_begin)(void *data, size_t idx);
  /* Decoded body bytes (dot-unstuffed, LF line ends).  Non-zero: fail. */
  int (*msg_data)(void *data, size_t idx, const char *buf, size_t len);
  /* The body is complete and passed the desync checks: commit it, then call
   * session_saved(). */
  void (*msg_end)(void *data, size_t idx);
  /* The body was cut off or failed a check: discard the partial delivery. */
  void (*msg_abort)(void *data, size_t idx);
  /* STLS accepted: start the TLS handshake, then call session_tls_ready().
   * Whatever plaintext followed the +OK has been discarded already. */
  void (*start_tls)(void *data);
  /* Every message saved: make the renames durable (fsync new/), then call
   * session_barrier_done(). */
  void (*barrier)(void *data);
  /* The listing is complete (before any RETR): the owner may mark messages
   * with session_skip_msg()/session_delete_only().  May be NULL. */
  void (*listed)(void *data);
  /* Message idx could not be retrieved or saved (RETR -ERR, a save error,
   * a desync at it): why is the server's text or a local sentence.  May be
   * NULL. */
  void (*msg_failed)(void *data, size_t idx, const char *why);
  /* Header probes (session_probe_msg), all three may be NULL.  probe_data
   * gets the decoded header of the "TOP n 0" reply for message idx
   * (dot-unstuffed, LF line ends, like msg_data), in pieces; probe_end ends
   * each probe: ok 1 when the whole reply arrived and its identity was
   * established (lock-step, or a matching "UIDL n" before it), 0 on -ERR,
   * when the server lacks TOP, or when the reply cannot be tied to idx.
   * When every probe is over, probed runs once, before any RETR or DELE:
   * the owner may still call session_skip_msg()/session_delete_only() from
   * probe_end or probed.  After session_fail() from one of them the rest
   * are not called. */
  void (*probe_data)(void *data, size_t idx, const char *buf, size_t len);
  void (*probe_end)(void *data, size_t idx, int ok);
  void (*probed)(void *data);
  /* Protocol trace for -v: dir is 'C' or 'S'; secrets are masked as
   * "********": PASS's argument, APOP's digest, AUTH's initial response and
   * every client line of an AUTH exchange (a "*" cancel and the fixed OAuth
   * error acknowledgements excepted); '-' for the session's own notes
   * (state changes, the login method chosen, sizes that differ). */
  void (*trace)(void *data, char dir, const char *line, size_t len);
  /* The session is over (called once).  err 0: QUIT acknowledged and every
   * message done; otherwise why it ended.  The owner closes the transport;
   * it must not free the session from inside a callback. */
  void (*done)(void *data, int err);
};

struct session_options {
  const char *user;
  /* The password; with SESSION_AUTH_XOAUTH2/OAUTHBEARER the access token
   * (up to 16 KiB and more are fine).  Copied, and wiped when freed. */
  const char *password;
  enum session_auth auth; /* 0: SESSION_AUTH_AUTO */
  /* OAUTHBEARER's host= and port= (RFC 7628): the server name and port the
   * user connects to.  host may be NULL (left out), port 0 (left out). */
  const char *host;
  unsigned port;
  int starttls;   /* require STLS before login */
  int tls_active; /* implicit TLS: already encrypted */
  enum session_pipelining pipelining;
  unsigned window; /* RETRs in flight; 0 = default */
  int keep;        /* never DELE a retrieved message (keep mode) */
  int no_utf8;     /* do not send UTF8 even when advertised */
  /* What the last session learnt of this server (srvmem.h), for the one
   * flight (issue 11): mem_capa is the CAPA seen before login as the memory
   * keeps it (capa-pre tokens; NULL or "" when unknown, copied), and
   * mem_pipelining is 1 when pipelining worked last time.  When both say
   * so, pipelining is not OFF (and, AUTO, the remembered CAPA lists
   * PIPELINING), and the login that would be chosen from the remembered
   * CAPA is USER/PASS, APOP or SASL PLAIN in one line, the session sends
   * "CAPA", the login, [UTF8,] "UIDL" and "LIST" in one write right after
   * the greeting (after the TLS handshake with starttls).  The fresh CAPA
   * is then checked against the memory (session_flight). */
  const char *mem_capa;
  int mem_pipelining;
  /* 1: the flight may also carry [UTF8,] UIDL and LIST behind the login
   * (one round trip less).  Courier's login process drops what follows
   * PASS (it hands the connection to another program), and nothing in the
   * protocol announces that, so the owner passes 1 only while the memory
   * has not seen such a loss (srvmem flight-listing not "no"), and bounds
   * the wait for the first reply behind the accepted login
   * (session_flight_listing_wait); the session itself never sends the
   * listing in the flight when the remembered CAPA says "IMPLEMENTATION
   * Courier". */
  int mem_flight_listing;
  /* The greeting's shape the memory expects: 0 unknown, 1 no APOP
   * timestamp, 2 one.  Only an early flight (session_send_early) compares:
   * another shape makes the flight stale (SESSION_FLIGHT_STALE). */
  int mem_greeting;
};

struct session;

/* Creates a session that will expect a greeting first.  Strings in opts are
 * copied.  Returns NULL on allocation failure. */
struct session *session_new(const struct session_options *opts, const struct session_ops *ops,
                            void *data);
void session_free(struct session *s);

/* Feeds received plaintext.  Processes all of it (callbacks run from
 * inside); after STLS +OK the rest of the chunk is discarded.  Returns 0
 * while the session goes on, else the error it ended with (1 for success;
 * done was called). */
int session_feed(struct session *s, const char *buf, size_t len);

/* The connection reached EOF or failed with err.  Ends the session (done
 * runs) unless it already ended; EOF after QUIT's +OK is fine. */
void session_connection_lost(struct session *s, int err);

/* The owner's transport timed out waiting for a reply (or for the TLS
 * handshake after STLS).  Ends the session without QUIT; the error text says
 * which reply was missing or too slow. */
void session_timeout(struct session *s);

/* Takes the bytes waiting to be sent: *buf_r is malloc'd and owned by the
 * caller (free it after the write completes).  Returns the length; 0 when
 * nothing waits. */
size_t session_take_output(struct session *s, char **buf_r);

/* 1 when a reply is outstanding (the transport's timeout applies), else 0. */
int session_awaiting_reply(const struct session *s);

/* 1 while the body of a multi-line reply (RETR, UIDL, LIST, CAPA) is being
 * received, i.e. its status line is complete and its "." line is not. */
int session_in_body(const struct session *s);

/* Counters for the transport's progress bounds (progress.h), monotonic over
 * the session: *lines_r counts the status lines and the "." lines ending
 * multi-line replies received so far; *body_octets_r the wire octets of
 * multi-line bodies received so far. */
void session_wire_counts(const struct session *s, uint64_t *lines_r, uint64_t *body_octets_r);

/* 1 once done has been called. */
int session_finished(const struct session *s);

/* Round trips of the POP3 conversation, counted deterministically (not
 * timed): the greeting is 1; a command sent because of a reply (or of the
 * save, barrier or handshake that followed it) is one deeper than that
 * reply; commands written together share a depth.  The result is the
 * deepest command sent.  The transport's waits (TCP connect, TLS
 * handshake flights) are not included: conn.h counts those. */
unsigned session_round_trips(const struct session *s);

/* The one flight after the greeting (session_options.mem_capa). */
enum session_flight {
  SESSION_FLIGHT_NONE = 0, /* cold: the session asked CAPA and waited */
  SESSION_FLIGHT_SENT,     /* sent; the fresh CAPA has not been checked (yet) */
  SESSION_FLIGHT_HELD,     /* the fresh CAPA agreed with the memory */
  /* The fresh CAPA contradicted the memory (PIPELINING, UTF8 or the login
   * method gone or changed), or the server broke the flight (a challenge
   * after AUTH PLAIN's initial response).  The session went on safely:
   * a refused login is followed, once the replies to the commands sent
   * with it are in (-ERR each), by a login chosen from the fresh CAPA as
   * a cold session would choose it (P3_EAUTHMECH before any further secret
   * when none is offered); without PIPELINING the transfer is lock-step.
   * The owner refreshes the memory from session_caps() and makes the next
   * session cold. */
  SESSION_FLIGHT_STALE
};
enum session_flight session_flight(const struct session *s);

/* 1 when the greeting carried an APOP timestamp. */
int session_greeting_apop(const struct session *s);

/* The early flight (issue 11).  On a resumed implicit-TLS connection the
 * greeting only comes after the server has the client's Finished; the
 * owner calls this right after that handshake, before any plaintext was
 * fed, when the memory says the server took an early flight before (or
 * does not know).  When the one flight would be used (see mem_capa) with
 * a login that needs nothing from the greeting (USER/PASS, or AUTH PLAIN
 * in one line: never APOP, whose digest needs the greeting's stamp), the
 * flight is queued now (take the output and send it at once) and 1 is
 * returned; else nothing is queued and 0.  The greeting is still read and
 * checked first: an -ERR greeting ends the session as usual; a greeting
 * whose APOP stamp came or went since the memory (mem_greeting) makes the
 * flight stale. */
int session_send_early(struct session *s);

enum session_early {
  SESSION_EARLY_NONE = 0, /* not sent before the greeting */
  SESSION_EARLY_SENT,     /* sent; not judged (yet, or the greeting was -ERR) */
  SESSION_EARLY_HELD,     /* the login that went out early was accepted */
  /* The server broke it: the session ended before the login's +OK (the
   * connection dropped, a reply timed out, garbage), or CAPA or the login
   * was refused.  The owner remembers not to send early again. */
  SESSION_EARLY_BROKEN
};
enum session_early session_early(const struct session *s);

/* 1 when UIDL and LIST went out behind the login in the flight
 * (mem_flight_listing). */
int session_flight_listing(const struct session *s);

/* 1 while that login has been accepted and no reply line has come since:
 * the owner bounds this wait (a server that dropped what followed PASS
 * never answers) and, when it expires, ends the session with
 * session_fail() (nothing was retrieved or deleted yet) and remembers not
 * to send the listing in the flight again. */
int session_flight_listing_wait(const struct session *s);

/* 1 once the login sent with the flight's listing was accepted (whatever
 * came after). */
int session_flight_listing_logged_in(const struct session *s);

/* The first word of the fresh CAPA's IMPLEMENTATION line ("Courier"), or
 * "" (for the memory's capa-pre, before its SASL part). */
const char *session_implementation(const struct session *s);

/* The TLS handshake after STLS completed. */
void session_tls_ready(struct session *s);

/* The delivery of message idx finished: err 0 means durable in new/ (and a
 * DELE may be sent), negative means it was not saved (no QUIT will be sent,
 * since some servers delete whatever was retrieved at QUIT). */
void session_saved(struct session *s, size_t idx, int err);

/* The barrier finished (err 0: new/ is durable).  An error ends the session
 * without QUIT. */
void session_barrier_done(struct session *s, int err);

/* Stop soon (daemon shutdown): no new RETRs; replies in flight are still
 * saved; if every RETR sent was answered and saved, DELE those and QUIT,
 * else close without QUIT.  The session ends with P3_ECANCELED unless all
 * messages had been retrieved. */
void session_stop(struct session *s);

/* Listing access, valid from the `listed` callback on. */
size_t session_msg_count(const struct session *s);
const struct session_msg *session_msg(const struct session *s, size_t idx);
/* The UID of a message (NUL-terminated), or NULL when the server has no UIDL. */
const char *session_msg_uid(const struct session *s, size_t idx);
/* Marks idx not to be retrieved (e.g. no disk space); it stays on the server. */
void session_skip_msg(struct session *s, size_t idx);
/* Marks idx as already delivered: DELE it without retrieving it. */
void session_delete_only(struct session *s, size_t idx);
/* Asks for a header probe of idx ("TOP n 0"); only from the `listed`
 * callback, later calls are ignored.  When any message is probed, the
 * probes go out (pipelined like the rest) before the first RETR, and the
 * transfer starts only after ops->probed; when none is, nothing changes.
 * A server whose CAPA lacks TOP gets no TOP: each probe ends with ok 0. */
void session_probe_msg(struct session *s, size_t idx);
/* 0 when some UID appears more than once in the listing (each such message
 * carries SESSION_MSG_DUPUID: a UID that is not an identity, so such a
 * message must never be deleted unseen), else 1 (also without UIDL). */
int session_uids_unique(const struct session *s);

/* Capabilities seen (after TLS, the ones seen inside TLS). */
const struct p3_caps *session_caps(const struct session *s);
/* 1 when CAPA was answered with +OK. */
int session_has_capa(const struct session *s);
/* The login method in use: SESSION_AUTH_AUTO until one was chosen (after
 * CAPA), then the method chosen or forced. */
enum session_auth session_auth_used(const struct session *s);

/* 1 when the session ended because the server refused an OAuth login
 * (XOAUTH2/OAUTHBEARER) after the token was sent: then the error is
 * P3_EOAUTH, and the caller may get a fresh token (run the token command
 * once more) and retry once in a new session.  A [SYS/TEMP], [IN-USE] or
 * [LOGIN-DELAY] refusal keeps its own code and does not count. */
int session_oauth_refused(const struct session *s);

/* 1 when the listing had UIDs. */
int session_has_uidl(const struct session *s);
/* 1 when commands were (or will be) pipelined. */
int session_pipelined(const struct session *s);

/* The message index the session failed at (a desync or save failure at
 * that message), or SIZE_MAX. */
size_t session_error_msg(const struct session *s);

/* Ends the session now without QUIT (e.g. the owner refuses to go on after
 * the listing); text explains why. */
void session_fail(struct session *s, int err, const char *text);

/* The server's text for the error the session ended with, or the session's
 * own sentence for it (NUL-terminated; "" when there is nothing to add).
 * When the connection is lost while QUIT is in flight it says that the
 * server's deletions may not have been applied. */
const char *session_error_text(const struct session *s);
/* The response code of that reply. */
enum p3_resp_code session_error_code(const struct session *s);

struct session_stats {
  size_t listed;    /* messages on the server */
  size_t retrieved; /* RETR +OK bodies received completely */
  size_t saved;     /* durable in new/ */
  size_t deleted;   /* DELE +OK (applied only if QUIT succeeded) */
  size_t failed;    /* RETR -ERR or save failure */
  size_t skipped;   /* left on the server on purpose */
  uint64_t bytes;   /* decoded body bytes delivered to msg_data */
  int quit_ok;      /* QUIT answered +OK */
};
const struct session_stats *session_stats(const struct session *s);

#endif

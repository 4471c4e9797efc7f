/* One fetch run for one account: resolves nothing itself (the caller hands
 * in a complete target with its password), then wires the transport
 * (conn.h), the POP3 session (session.h), Maildir delivery (maildir.h) and
 * the UID state (uidstate.h) together on the caller's libuv loop.
 * `pop3 dl` and the daemon both use it unchanged.
 *
 * Per message: fsync(file) -> rename into new/ -> append its UID record ->
 * DELE; the same record is also appended (on the worker) right before the
 * rename, so that a kill between rename and record cannot cause a duplicate
 * (a record whose file never reached new/ is dropped at the next open).
 * Before QUIT: fsync(new/) -> append a barrier -> fsync(journal) -> QUIT.
 * What to fetch, delete only, skip or probe, and which records to retire
 * afterwards, is decided by plan.h from the listing and the journal. */
#ifndef P3_ENGINE_H
#define P3_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "session.h"
#include "target.h"
#include "tls.h"

/* Attempts after which a message that keeps failing is left alone. */
#define ENGINE_MAX_ATTEMPTS 3

/* Over-size messages listed one by one in a result (all are counted). */
#define ENGINE_OVER_SIZE_MAX 1000

struct engine_options {
  const struct p3_target *target; /* borrowed until done */
  const char *maildir;
  const char *ca_file; /* NULL: the system bundle */
  uint8_t pins[P3_TLS_MAX_PINS][32];
  int pin_count;
  unsigned timeout_s; /* 0: 120 */
  enum session_pipelining pipelining;
  unsigned window; /* 0: SESSION_DEFAULT_WINDOW */
  /* UID state journal (locked for the run); NULL runs without one.  The
   * per-server memory (srvmem.h: CAPA, pipelining, greeting, a TLS session
   * to resume) lives beside it as STATE_PATH.server. */
  const char *state_path;
  const char *who;        /* named in the lock file: "pop3 dl", "pop3syncd" */
  int keep;               /* never DELE; fetch only UIDs not yet delivered */
  int keep_days;          /* with keep: DELE what was delivered more than N days
                             ago; -1: never */
  int no_utf8;            /* never send UTF8 (RFC 6856), even when advertised */
  uint64_t max_size;      /* leave messages whose LIST size exceeds this on the
                             server, unfetched and unrecorded (plan.h); 0: no limit */
  enum session_auth auth; /* 0: SESSION_AUTH_AUTO (session.h) */
  /* Protocol trace and notes (-v); NULL to disable.  Never sees a password. */
  void (*trace)(void *data, const char *line);
  void *trace_data;
  /* The listing is known: messages on the server and their LIST sizes
   * summed.  Called at most once per run, on the loop, with engine_start's
   * data; NULL: not wanted. */
  void (*listed)(void *data, size_t messages, uint64_t bytes);
};

struct engine_stuck {
  unsigned long number;
  char uid[72]; /* cut at 71 octets (a UID may have up to 512) */
  uint64_t size;
  unsigned attempts;
  char last_error[256];
};

/* A message left on the server because it is larger than max_size. */
struct engine_over_size {
  unsigned long number;
  char uid[72]; /* cut at 71 octets, as engine_stuck's */
  uint64_t size;
};

struct engine_result {
  int err;               /* 0, or the first error that ended the run */
  char message[768];     /* one sentence for err ("" when err == 0) */
  size_t listed;         /* messages on the server */
  size_t delivered;      /* messages now in new/ */
  uint64_t bytes;        /* bytes written to the Maildir */
  size_t deleted;        /* DELEs acknowledged and committed by QUIT */
  size_t already;        /* delivered by an earlier run: only deleted (or kept) */
  size_t failed;         /* messages that could not be retrieved or saved */
  size_t left_for_space; /* left on the server for lack of disk space */
  uint64_t left_for_space_bytes;
  double seconds;                   /* wall time of the run */
  long login_delay;                 /* the server's LOGIN-DELAY in seconds, -1 when none */
  int uidl;                         /* the server supports UIDL (state in use) */
  int lockstep;                     /* this run was lock-step because of an earlier desync */
  int uids_unique;                  /* 0: the listing showed some UID more than once (those
                                       messages are always fetched, see plan.h); 1 otherwise */
  size_t corrupt_lines;             /* state journal lines ignored as corrupt */
  unsigned round_trips;             /* times the client waited for the server with
                                       nothing else to do (TCP connect, TLS flights,
                                       POP3 replies), counted, not timed */
  int resumed_tls;                  /* the TLS handshake resumed a remembered session */
  const struct engine_stuck *stuck; /* messages left alone after repeated failures */
  size_t stuck_count;
  uint64_t max_size;                        /* the run's limit (engine_options), 0: none */
  size_t over_size_count;                   /* messages left on the server for max_size */
  uint64_t over_size_bytes;                 /* their LIST sizes summed */
  const struct engine_over_size *over_size; /* the first ENGINE_OVER_SIZE_MAX of them */
  size_t over_size_n;
};

/* The run's outcome as one error code, decided here for pop3 dl, the
 * worker and the daemon alike: r->err when the run failed; otherwise
 * P3_ESAVE (exit 73) when messages were left on the server for lack of disk
 * space, else P3_EPARTIAL (exit 75) when some are stuck after repeated
 * failures; otherwise 0. */
int engine_result_error(const struct engine_result *r);

/* The run's exit status: p3_exit_status(engine_result_error(r)). */
int engine_result_exit_code(const struct engine_result *r);

/* One sentence for engine_result_error(r), written into buf (which is
 * returned; "" when the run did all it had to): r->message (p3_strerror
 * when that is empty) for a failed run, else what was left on the server
 * and why. */
const char *engine_result_message(const struct engine_result *r, char *buf, size_t len);

/* "2 messages over 10 MiB left on the server" ("1 message ..."), written
 * into buf and returned; "" when the run left nothing for its size.
 * Leaving messages for their size alone does not make a run fail. */
const char *engine_result_over_size_text(const struct engine_result *r, char *buf, size_t len);

/* After a second refused OAuth token (the token command was run again):
 * rewrites r->message as "login refused: WHAT THE SERVER SAID (token
 * refreshed once)". */
void engine_result_token_refreshed(struct engine_result *r);

struct engine;

/* done_cb may free the engine (engine_free) from inside the callback. */
typedef void (*engine_done_cb)(struct engine *e, const struct engine_result *r, void *data);

/* Starts a run.  done_cb runs once, on the loop, after every file and socket
 * is closed; free the engine after it (engine_free).  Returns 0, or a
 * negative error with *e_r NULL and errbuf set (bad options).  Errors found
 * later (the Maildir cannot be created, the state is locked) come through
 * done_cb. */
int engine_start(uv_loop_t *loop, const struct engine_options *opts, engine_done_cb done_cb,
                 void *data, struct engine **e_r, char *errbuf, size_t errlen);

/* Graceful stop: no new RETR; replies in flight are saved for at most
 * grace_ms, then the connection is closed (without QUIT unless every RETR
 * sent was answered and saved). */
void engine_stop(struct engine *e, unsigned grace_ms);

/* Live figures for a progress display. */
void engine_progress(const struct engine *e, size_t *done_r, size_t *total_r, uint64_t *bytes_r);

/* The LIST sizes of the listing summed (0 before the listing): what
 * engine_progress's bytes would reach if every message were fetched. */
uint64_t engine_progress_bytes_total(const struct engine *e);

void engine_free(struct engine *e);

#endif

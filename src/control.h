/* The control socket server (after OpenSMTPD's control.c): a Unix stream
 * socket, mode 0600 in a 0700 directory, that accepts line-based requests
 * and sends one JSON line back per request.  Every peer is checked with
 * SO_PEERCRED: only the daemon's own uid or root may talk to it; others get
 * {"error":"permission denied","exit":77} and are disconnected.
 * The wire protocol is documented in doc/control-protocol.md. */
#ifndef P3_CONTROL_H
#define P3_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct control;
struct control_req; /* one request; valid until control_reply() */

struct control_ops {
  /* A request line (without its newline, at most 4096 bytes).  The handler
   * must call control_reply(req, ...) exactly once, now or later (a run may
   * take minutes); if the client has gone away meanwhile the reply is
   * dropped and req freed all the same. */
  void (*request)(void *data, struct control_req *req, const char *line);
};

/* Creates the socket's directory (0700, mkdir -p) if missing, and checks it
 * is owned by us (or root) and not writable by others; refuses to start when
 * another process is listening on path (returns P3_ELOCKED, errbuf: "another
 * pop3syncd is already listening on PATH"); replaces a stale socket file; binds under
 * umask 077 and chmods the socket 0600.  Serves clients within the limits
 * below (control_limits_default; see doc/control-protocol.md, "Limits and
 * timeouts").  Returns 0 and *c_r, or a negative error with errbuf set. */
int control_listen(uv_loop_t *loop, const char *path, const struct control_ops *ops, void *data,
                   struct control **c_r, char *errbuf, size_t errlen);

/* Sends json (one line, without newline; a newline is added) as the reply
 * and frees req. */
void control_reply(struct control_req *req, const char *json);

/* Turns req into an event stream (the `watch' request): writes first (one
 * JSON line, the reply) and from then on every control_broadcast for
 * account (NULL: every account) to the client, until it hangs up or the
 * control closes.  The client is busy for good: never idle, counted
 * against waiting_max (control_request_waits says so for `watch').  req is
 * freed.  Returns 0, or -ENOMEM after replying an error instead. */
int control_watch(struct control_req *req, const char *account, const char *first);

/* Writes json (one line, without newline) to every watcher of account
 * (NULL: an event for all watchers).  droppable: skipped for a watcher with
 * more than 16 KiB unwritten (progress); any event finding more than
 * 256 KiB unwritten drops that watcher. */
void control_broadcast(struct control *c, const char *account, const char *json, bool droppable);

/* 1 while the client of req is still connected. */
int control_req_alive(const struct control_req *req);

/* ---- limits and timeouts */

struct control_limits {
  unsigned clients_max; /* connections served at once */
  unsigned waiting_max; /* of those, waiting for a run (control_request_waits);
                           fewer than clients_max, so that quick requests
                           always find room */
  uint64_t idle_ms;     /* a client with nothing outstanding must send a
                           complete request within this long; a newcomer
                           waiting for a free slot is answered within it */
  uint64_t write_ms;    /* a reply not completely written after this long
                           drops the client */
};

/* The daemon's limits: 64 clients, 32 waiting, 10 s idle, 30 s write. */
void control_limits_default(struct control_limits *lim_r);

/* For tests: replaces c's limits (assert: 0 < waiting_max < clients_max,
 * both timeouts > 0).  Clients already served keep their slots even above
 * a lower clients_max; the new timeouts apply from the next timer check. */
void control_set_limits(struct control *c, const struct control_limits *lim);

/* 1 when the reply to line waits for something that may take minutes (a
 * run): `fetch` without `--no-wait`, and `watch`.  Such a request counts against
 * waiting_max and is refused beyond it without reaching the handler.  Read
 * the way the daemon splits requests (spaces and tabs, first 16 words).
 * `watch' (an event stream) waits too.  Pure. */
int control_request_waits(const char *line);

/* What the timers look at in one connection (pure; exposed for tests). */
struct control_clock {
  bool busy;             /* a request awaits control_reply */
  bool writing;          /* a reply is queued and not completely written */
  bool queued;           /* accepted, waiting for a free slot */
  uint64_t idle_since;   /* ms: served, or last reply written (!busy, !writing) */
  uint64_t write_since;  /* ms: when the oldest unwritten reply was queued */
  uint64_t queued_since; /* ms: accepted (queued) */
};

/* The loop time (ms) at which the connection is to be dropped (or, when
 * queued, told the table is full), or 0 when no timer runs for it: a client
 * waiting for its reply is never idle.  Pure. */
uint64_t control_deadline(const struct control_clock *k, const struct control_limits *lim);

/* Stops listening, removes the socket file, closes every client (pending
 * requests stay valid until replied).  cb runs once every handle is closed. */
void control_close(struct control *c, void (*cb)(void *data), void *data);

#endif

/* Progress bounds for a reply: how long the client lets a server take.  A
 * pure module (no clock, no I/O): the transport feeds it monotonic
 * timestamps in milliseconds and asks whether the wait has expired.
 *
 * The rules, with T the timeout:
 *   - a status line (the greeting, any +OK/-ERR line, the first line of a
 *     multi-line reply) must arrive whole within T of when the client began
 *     waiting for it: the later of "a request was sent while nothing was
 *     outstanding" and "the previous line (status line or the '.' ending a
 *     multi-line body) completed".  A request sent while a reply is already
 *     owed does not restart the clock: the server owed a line already.
 *   - a multi-line body (RETR, and the UIDL/LIST/CAPA listings alike) must
 *     bring at least PROGRESS_FLOOR octets per second, counted in tumbling
 *     windows of T each needing PROGRESS_FLOOR * T octets, and must never be
 *     silent for T.  A window in which the body ends is never judged.
 *   - time during which the client itself does not read (paused by
 *     back-pressure) counts for nothing: every clock stops.
 * So a server that drips (one byte every half second) ends a status line
 * wait after T, and a body at most 2 x T after its status line (one window
 * filled quickly, then a starved one): 3 x T from the request at worst. */
#ifndef P3_PROGRESS_H
#define P3_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

/* The minimum body rate, in octets per second. */
#define PROGRESS_FLOOR 1024u

/* What the client is waiting for. */
enum progress_wait {
  PROGRESS_IDLE, /* nothing outstanding: no bound */
  PROGRESS_LINE, /* a status line */
  PROGRESS_BODY  /* the body of a multi-line reply */
};

/* Why a wait expired. */
enum progress_verdict {
  PROGRESS_OK = 0,
  PROGRESS_LINE_SLOW,  /* a status line was not complete within T */
  PROGRESS_BODY_SLOW,  /* a body window brought less than the floor */
  PROGRESS_BODY_SILENT /* no body octet for T */
};

struct progress {
  uint64_t timeout; /* T, in ms (> 0) */
  enum progress_wait wait;
  enum progress_verdict verdict; /* sticky once not OK */
  /* Clocks in "active" time: real time minus the time spent paused. */
  uint64_t since;        /* LINE: the wait began; BODY: the current window began */
  uint64_t last_rx;      /* BODY: the last octet arrived */
  uint64_t window_bytes; /* BODY: octets in the current window */
  uint64_t paused_total; /* ms spent paused so far */
  uint64_t paused_at;    /* real time the pause began */
  int paused;
};

/* Starts idle with timeout_ms (0 is taken as 1). */
void progress_init(struct progress *p, uint64_t timeout_ms);

/* The client waits for nothing. */
void progress_idle(struct progress *p, uint64_t now);

/* The client waits for a status line: the clock starts now unless a line
 * was already awaited. */
void progress_line_wait(struct progress *p, uint64_t now);

/* A status line or the end of a multi-line body arrived: the wait for the
 * next line (if any) starts now.  Follow with progress_idle() or
 * progress_body_wait() when that is what comes next. */
void progress_line_done(struct progress *p, uint64_t now);

/* A multi-line body follows: the first window starts now unless a body was
 * already being received. */
void progress_body_wait(struct progress *p, uint64_t now);

/* n body octets arrived (ignored unless waiting for a body). */
void progress_body_bytes(struct progress *p, uint64_t now, uint64_t n);

/* The client stopped / restarted reading: the clocks stop meanwhile.
 * Both are idempotent. */
void progress_pause(struct progress *p, uint64_t now);
void progress_resume(struct progress *p, uint64_t now);

/* Judges the wait at now (advancing body windows): PROGRESS_OK or why it
 * expired.  Once expired it stays expired. */
enum progress_verdict progress_check(struct progress *p, uint64_t now);

/* The real time at which progress_check() must run next, or UINT64_MAX
 * when no bound applies (idle or paused). */
uint64_t progress_deadline(const struct progress *p);

/* The transfer rate a progress display shows: bytes per second over the
 * interval since the previous reading, the first interval starting when
 * the transfer did (the listing came), not when the display's timer did.
 * Pure: the caller hands in a monotonic clock in ms and a byte counter. */
struct progress_rate {
  uint64_t since_ms, since_bytes; /* the interval's start */
  int started;
};

/* Shortest interval a rate is measured over; a reading sooner than this
 * after the last one lengthens the current interval instead. */
#define PROGRESS_RATE_MIN_MS 100

/* The transfer starts: now and the byte counter at this moment. */
void progress_rate_start(struct progress_rate *r, uint64_t now, uint64_t bytes);

/* A reading: sets *rate_r to the bytes per second since the interval began
 * and starts the next interval, returning 1; returns 0 (no rate to show,
 * *rate_r untouched) before progress_rate_start or when less than
 * PROGRESS_RATE_MIN_MS has passed.  A counter that went backwards counts
 * as no bytes. */
int progress_rate_tick(struct progress_rate *r, uint64_t now, uint64_t bytes, double *rate_r);

/* A short phrase for a verdict, e.g. "the status line was not complete
 * within 2 s"; writes into buf (size bytes) and returns it. */
const char *progress_describe(const struct progress *p, enum progress_verdict v, char *buf,
                              size_t size);

#endif

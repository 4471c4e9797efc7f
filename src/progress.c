#include "config.h"

#include "progress.h"

#include <assert.h>
#include <stdio.h>

/* Real time to active time: the clock stands still while paused. */
static uint64_t active(const struct progress *p, uint64_t now) {
  uint64_t t = p->paused ? p->paused_at : now;
  assert(t >= p->paused_total);
  return t - p->paused_total;
}

/* Octets a body window of T must bring. */
static uint64_t window_need(const struct progress *p) {
  uint64_t need = p->timeout * PROGRESS_FLOOR / 1000;
  return need ? need : 1;
}

/* Closes every body window that ended by active time t: each must have
 * brought window_need() octets, else the body is too slow. */
static void roll_windows(struct progress *p, uint64_t t) {
  while (p->verdict == PROGRESS_OK && t >= p->since + p->timeout) {
    if (p->window_bytes < window_need(p)) {
      p->verdict = PROGRESS_BODY_SLOW;
      return;
    }
    p->since += p->timeout;
    p->window_bytes = 0;
  }
}

void progress_init(struct progress *p, uint64_t timeout_ms) {
  *p = (struct progress){.timeout = timeout_ms ? timeout_ms : 1, .wait = PROGRESS_IDLE};
}

void progress_idle(struct progress *p, uint64_t now) {
  (void)now;
  p->wait = PROGRESS_IDLE;
}

void progress_line_wait(struct progress *p, uint64_t now) {
  if (p->wait == PROGRESS_LINE)
    return;
  p->wait = PROGRESS_LINE;
  p->since = active(p, now);
}

void progress_line_done(struct progress *p, uint64_t now) {
  p->wait = PROGRESS_LINE;
  p->since = active(p, now);
}

void progress_body_wait(struct progress *p, uint64_t now) {
  if (p->wait == PROGRESS_BODY)
    return;
  p->wait = PROGRESS_BODY;
  p->since = p->last_rx = active(p, now);
  p->window_bytes = 0;
}

void progress_body_bytes(struct progress *p, uint64_t now, uint64_t n) {
  if (p->wait != PROGRESS_BODY || n == 0)
    return;
  uint64_t t = active(p, now);
  /* Octets that arrive after a window ended belong to the next one. */
  roll_windows(p, t);
  p->window_bytes += n;
  p->last_rx = t;
}

void progress_pause(struct progress *p, uint64_t now) {
  if (p->paused)
    return;
  p->paused = 1;
  p->paused_at = now;
}

void progress_resume(struct progress *p, uint64_t now) {
  if (!p->paused)
    return;
  p->paused = 0;
  if (now > p->paused_at)
    p->paused_total += now - p->paused_at;
}

enum progress_verdict progress_check(struct progress *p, uint64_t now) {
  if (p->verdict != PROGRESS_OK || p->paused)
    return p->verdict;
  uint64_t t = active(p, now);
  switch (p->wait) {
  case PROGRESS_IDLE:
    break;
  case PROGRESS_LINE:
    if (t >= p->since + p->timeout)
      p->verdict = PROGRESS_LINE_SLOW;
    break;
  case PROGRESS_BODY:
    roll_windows(p, t);
    if (p->verdict == PROGRESS_OK && t >= p->last_rx + p->timeout)
      p->verdict = PROGRESS_BODY_SILENT;
    break;
  }
  return p->verdict;
}

uint64_t progress_deadline(const struct progress *p) {
  if (p->verdict != PROGRESS_OK)
    return 0; /* now */
  if (p->paused || p->wait == PROGRESS_IDLE)
    return UINT64_MAX;
  uint64_t d = p->since + p->timeout;
  if (p->wait == PROGRESS_BODY && p->last_rx + p->timeout < d)
    d = p->last_rx + p->timeout;
  return d + p->paused_total;
}

const char *progress_describe(const struct progress *p, enum progress_verdict v, char *buf,
                              size_t size) {
  char t[32];
  if (p->timeout % 1000 == 0)
    snprintf(t, sizeof t, "%llu s", (unsigned long long)(p->timeout / 1000));
  else
    snprintf(t, sizeof t, "%llu ms", (unsigned long long)p->timeout);
  switch (v) {
  case PROGRESS_OK:
    snprintf(buf, size, "still in time");
    break;
  case PROGRESS_LINE_SLOW:
    snprintf(buf, size, "the status line was not complete within %s", t);
    break;
  case PROGRESS_BODY_SLOW:
    snprintf(buf, size, "the reply body arrived at less than %u KiB/s for %s",
             PROGRESS_FLOOR / 1024, t);
    break;
  case PROGRESS_BODY_SILENT:
    snprintf(buf, size, "the reply body stopped for %s", t);
    break;
  }
  return buf;
}

void progress_rate_start(struct progress_rate *r, uint64_t now, uint64_t bytes) {
  r->since_ms = now;
  r->since_bytes = bytes;
  r->started = 1;
}

int progress_rate_tick(struct progress_rate *r, uint64_t now, uint64_t bytes, double *rate_r) {
  if (!r->started || now < r->since_ms || now - r->since_ms < PROGRESS_RATE_MIN_MS)
    return 0;
  uint64_t got = bytes > r->since_bytes ? bytes - r->since_bytes : 0;
  *rate_r = (double)got * 1000.0 / (double)(now - r->since_ms);
  r->since_ms = now;
  r->since_bytes = bytes;
  return 1;
}

/* The reply bounds (progress.c), driven by made-up timestamps: a whole
 * status line within T, bodies at the 1 KiB/s floor in windows of T, no
 * silence of T in a body, paused time not counted, drips ended in time. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "progress.h"

#define T 2000u /* the timeout, ms */
#define NEED (T * PROGRESS_FLOOR / 1000)

/* Feeds one byte every step ms from start on (a line or a body, per wait)
 * until the bounds expire; returns the time they did (or UINT64_MAX after
 * limit ms). */
static uint64_t drip(struct progress *p, enum progress_wait wait, uint64_t start, uint64_t step,
                     uint64_t limit, enum progress_verdict *v_r) {
  for (uint64_t now = start; now < start + limit; now++) {
    *v_r = progress_check(p, now);
    if (*v_r != PROGRESS_OK)
      return now;
    if ((now - start) % step == step - 1 && wait == PROGRESS_BODY)
      progress_body_bytes(p, now, 1);
  }
  return UINT64_MAX;
}

static void test_idle(void) {
  struct progress p;
  progress_init(&p, T);
  CHECK(progress_deadline(&p) == UINT64_MAX);
  CHECK_INT(progress_check(&p, 1000000), PROGRESS_OK);
}

static void test_line(void) {
  struct progress p;
  enum progress_verdict v;
  progress_init(&p, T);
  /* The request goes out at 100: the line must be whole by 2100. */
  progress_line_wait(&p, 100);
  CHECK(progress_deadline(&p) == 100 + T);
  CHECK_INT(progress_check(&p, 2099), PROGRESS_OK);
  /* More requests while a line is owed do not restart the clock. */
  progress_line_wait(&p, 1500);
  CHECK(progress_deadline(&p) == 100 + T);
  /* Bytes of the line (a drip) do not either: only a whole line does. */
  CHECK(drip(&p, PROGRESS_LINE, 100, 500, 10000, &v) == 100 + T);
  CHECK_INT(v, PROGRESS_LINE_SLOW);
  /* Sticky. */
  progress_line_done(&p, 2200);
  CHECK_INT(progress_check(&p, 2201), PROGRESS_LINE_SLOW);
  CHECK(progress_deadline(&p) == 0);

  /* Lines completing in time, each starting the next one's clock. */
  progress_init(&p, T);
  progress_line_wait(&p, 0);
  progress_line_done(&p, 1900);
  CHECK_INT(progress_check(&p, 3800), PROGRESS_OK);
  progress_line_done(&p, 3800);
  CHECK_INT(progress_check(&p, 5799), PROGRESS_OK);
  CHECK_INT(progress_check(&p, 5800), PROGRESS_LINE_SLOW);

  /* Idle after a line: no bound; a later request starts a fresh clock. */
  progress_init(&p, T);
  progress_line_wait(&p, 0);
  progress_line_done(&p, 1000);
  progress_idle(&p, 1000);
  CHECK_INT(progress_check(&p, 50000), PROGRESS_OK);
  progress_line_wait(&p, 50000);
  CHECK_INT(progress_check(&p, 51999), PROGRESS_OK);
  CHECK_INT(progress_check(&p, 52000), PROGRESS_LINE_SLOW);
}

static void test_body_rate(void) {
  struct progress p;
  enum progress_verdict v;
  /* A drip of a body: over after one window. */
  progress_init(&p, T);
  progress_line_wait(&p, 0);
  progress_line_done(&p, 10);
  progress_body_wait(&p, 10);
  CHECK(drip(&p, PROGRESS_BODY, 10, 500, 100000, &v) == 10 + T);
  CHECK_INT(v, PROGRESS_BODY_SLOW);

  /* Exactly the floor in each window goes on; one octet short ends it. */
  progress_init(&p, T);
  progress_body_wait(&p, 0);
  for (unsigned w = 0; w < 10; w++) {
    progress_body_bytes(&p, w * T + 1000, NEED);
    CHECK_INT(progress_check(&p, (w + 1) * T - 1), PROGRESS_OK);
  }
  progress_body_bytes(&p, 10 * T + 1000, NEED - 1);
  CHECK_INT(progress_check(&p, 11 * T - 1), PROGRESS_OK);
  CHECK_INT(progress_check(&p, 11 * T), PROGRESS_BODY_SLOW);

  /* 4 KiB/s in 256-octet pieces: fine for a minute. */
  progress_init(&p, T);
  progress_body_wait(&p, 0);
  for (uint64_t now = 0; now < 60000; now += 62) {
    CHECK_INT(progress_check(&p, now), PROGRESS_OK);
    progress_body_bytes(&p, now, 256);
  }

  /* A fast first window, then a drip: over by the end of the second. */
  progress_init(&p, T);
  progress_line_wait(&p, 0);
  progress_line_done(&p, T - 1); /* the status line just in time */
  progress_body_wait(&p, T - 1);
  progress_body_bytes(&p, T, 100000);
  CHECK(drip(&p, PROGRESS_BODY, T + 1, 500, 100000, &v) <= 3 * T);
  CHECK_INT(v, PROGRESS_BODY_SLOW);

  /* Octets arriving after a window ended count for the next one. */
  progress_init(&p, T);
  progress_body_wait(&p, 0);
  progress_body_bytes(&p, T + 5, NEED);
  CHECK_INT(progress_check(&p, T + 6), PROGRESS_BODY_SLOW);

  /* The end of a body closes its window unjudged. */
  progress_init(&p, T);
  progress_body_wait(&p, 0);
  progress_body_bytes(&p, 1500, 10);
  progress_line_done(&p, 1500);
  progress_idle(&p, 1500);
  CHECK_INT(progress_check(&p, 100000), PROGRESS_OK);
}

static void test_body_silence(void) {
  struct progress p;
  progress_init(&p, T);
  progress_body_wait(&p, 0);
  progress_body_bytes(&p, 100, 1000000); /* window 1 filled at once */
  CHECK(progress_deadline(&p) == T);     /* the window's end comes first */
  CHECK_INT(progress_check(&p, T), PROGRESS_OK);
  CHECK(progress_deadline(&p) == 100 + T);
  CHECK_INT(progress_check(&p, 100 + T - 1), PROGRESS_OK);
  CHECK_INT(progress_check(&p, 100 + T), PROGRESS_BODY_SILENT);
}

static void test_pause(void) {
  struct progress p;
  /* Paused for 10 s in the middle of a body window: not counted. */
  progress_init(&p, T);
  progress_body_wait(&p, 0);
  progress_body_bytes(&p, 500, NEED / 2);
  progress_pause(&p, 1000);
  progress_pause(&p, 1200); /* idempotent */
  CHECK(progress_deadline(&p) == UINT64_MAX);
  CHECK_INT(progress_check(&p, 9000), PROGRESS_OK);
  progress_resume(&p, 11000);
  progress_resume(&p, 11500); /* idempotent */
  CHECK(progress_deadline(&p) == T + 10000);
  progress_body_bytes(&p, 11900, NEED / 2);
  CHECK_INT(progress_check(&p, T + 10000 - 1), PROGRESS_OK);
  CHECK_INT(progress_check(&p, T + 10000), PROGRESS_OK); /* window 1 met the floor */
  CHECK(progress_deadline(&p) == 11900 + T);
  CHECK_INT(progress_check(&p, 11900 + T), PROGRESS_BODY_SILENT);

  /* A line that completes during a pause: the next line's clock starts
   * when reading resumes. */
  progress_init(&p, T);
  progress_line_wait(&p, 0);
  progress_pause(&p, 1000);
  progress_line_done(&p, 1500);
  progress_resume(&p, 5000);
  CHECK(progress_deadline(&p) == 5000 + T);
  CHECK_INT(progress_check(&p, 5000 + T - 1), PROGRESS_OK);
  CHECK_INT(progress_check(&p, 5000 + T), PROGRESS_LINE_SLOW);

  /* A line owed before a pause keeps the time it already used. */
  progress_init(&p, T);
  progress_line_wait(&p, 0);
  progress_pause(&p, 1500);
  progress_resume(&p, 4000);
  CHECK_INT(progress_check(&p, 4499), PROGRESS_OK);
  CHECK_INT(progress_check(&p, 4500), PROGRESS_LINE_SLOW);
}

static void test_describe(void) {
  struct progress p;
  char buf[128];
  progress_init(&p, T);
  CHECK_STR(progress_describe(&p, PROGRESS_LINE_SLOW, buf, sizeof buf),
            "the status line was not complete within 2 s");
  CHECK_STR(progress_describe(&p, PROGRESS_BODY_SLOW, buf, sizeof buf),
            "the reply body arrived at less than 1 KiB/s for 2 s");
  CHECK_STR(progress_describe(&p, PROGRESS_BODY_SILENT, buf, sizeof buf),
            "the reply body stopped for 2 s");
  progress_init(&p, 1500);
  CHECK_STR(progress_describe(&p, PROGRESS_LINE_SLOW, buf, sizeof buf),
            "the status line was not complete within 1500 ms");
}

/* The display's rate: the first reading measures from the transfer's
 * start, not from the timer's zero (issue 12: "3011 B/s" for 4.9 MiB in
 * half a second, measured against the loop clock's epoch). */
static void test_rate(void) {
  struct progress_rate r = {0};
  double rate = -1;
  CHECK_INT(progress_rate_tick(&r, 5000000, 100, &rate), 0); /* not started */
  CHECK(rate == -1);
  progress_rate_start(&r, 5000000, 0);
  CHECK_INT(progress_rate_tick(&r, 5000050, 1000, &rate), 0); /* too soon: interval goes on */
  CHECK(rate == -1);
  CHECK_INT(progress_rate_tick(&r, 5000500, 5138022, &rate), 1); /* 4.9 MiB in 0.5 s */
  CHECK_INT((long long)rate, 10276044);
  CHECK_INT(progress_rate_tick(&r, 5001500, 5138022 + 2048, &rate), 1);
  CHECK_INT((long long)rate, 2048);
  CHECK_INT(progress_rate_tick(&r, 5002500, 5138022 + 2048, &rate), 1); /* stalled */
  CHECK(rate == 0);
  CHECK_INT(progress_rate_tick(&r, 5003500, 10, &rate), 1); /* counter reset: no bytes */
  CHECK(rate == 0);
  CHECK_INT(progress_rate_tick(&r, 5003400, 20, &rate), 0); /* clock went back */
  /* Started late, with bytes already counted (a second session). */
  progress_rate_start(&r, 100, 4096);
  CHECK_INT(progress_rate_tick(&r, 1100, 4096 + 1024, &rate), 1);
  CHECK_INT((long long)rate, 1024);
}

int main(void) {
  test_rate();
  test_idle();
  test_line();
  test_body_rate();
  test_body_silence();
  test_pause();
  test_describe();
  return check_result("test_progress");
}

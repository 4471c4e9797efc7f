#include "config.h"

#include "worker_proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine.h"
#include "errors.h"

/* Every field survives the trip, secrets with newlines and backslashes included. */
static void test_request_round_trip(void) {
  struct worker_request q, back;
  memset(&q, 0, sizeof q);
  q.account = "work";
  q.user = "alice";
  q.uid = 1000;
  q.gid = 1001;
  q.server = "ssl:alice@mail.example.com";
  q.maildir = "/home/alice/Mail dir";
  q.password = "pa\\ss\nword\r end ";
  q.password_command = "pass show mail\\x";
  q.state_dir = "/var/lib/pop3sync";
  q.pin_count = 2;
  for (int i = 0; i < 32; i++) {
    q.pins[0][i] = (uint8_t)i;
    q.pins[1][i] = (uint8_t)(255 - i);
  }
  q.timeout_s = 30;
  q.pipelining = SESSION_PIPELINING_AUTO;
  q.window = 77;
  q.keep = 1;
  q.keep_days = -1;
  q.max_size = 17179869184ull; /* 16 GiB: more than 32 bits */
  q.verbose = 1;
  char *buf;
  size_t len;
  CHECK_INT(worker_request_format(&q, &buf, &len), 0);
  /* The secret never shows up as a raw line. */
  CHECK(memmem(buf, len, "\nword", 5) == NULL);
  char err[200] = "";
  CHECK_INT(worker_request_parse(buf, len, &back, err, sizeof err), 0);
  CHECK_STR(back.account, "work");
  CHECK_STR(back.user, "alice");
  CHECK_INT(back.uid, 1000);
  CHECK_INT(back.gid, 1001);
  CHECK_STR(back.maildir, "/home/alice/Mail dir");
  CHECK_STR(back.password, "pa\\ss\nword\r end ");
  CHECK_STR(back.password_command, "pass show mail\\x");
  CHECK(back.netrc == NULL);
  CHECK(back.ca_file == NULL);
  CHECK_INT(back.pin_count, 2);
  CHECK(memcmp(back.pins, q.pins, sizeof q.pins) == 0);
  CHECK_INT(back.timeout_s, 30);
  CHECK_INT(back.pipelining, SESSION_PIPELINING_AUTO);
  CHECK_INT(back.window, 77);
  CHECK_INT(back.keep, 1);
  CHECK_INT(back.keep_days, -1);
  CHECK_INT(back.verbose, 1);
  CHECK(back.max_size == 17179869184ull);
  worker_request_free(&back);
  free(buf);
  /* No limit: no line, and 0 back. */
  q.max_size = 0;
  CHECK_INT(worker_request_format(&q, &buf, &len), 0);
  CHECK(memmem(buf, len, "max_size", 8) == NULL);
  CHECK_INT(worker_request_parse(buf, len, &back, err, sizeof err), 0);
  CHECK(back.max_size == 0);
  worker_request_free(&back);
  free(buf);
}

static void expect_bad(const char *text) {
  struct worker_request q;
  char err[200] = "";
  CHECK_INT(worker_request_parse(text, strlen(text), &q, err, sizeof err), -EINVAL);
  CHECK(err[0] != '\0');
  worker_request_free(&q);
}

static void test_request_rejects(void) {
  expect_bad("");
  expect_bad("account a\nserver s\nmaildir /m\nstate_dir /s\n"); /* no end */
  expect_bad("account a\nend \n");                               /* fields missing */
  expect_bad("account a\nserver s\nmaildir /m\nstate_dir /s\nbogus 1\nend \n");
  expect_bad("account a\nserver s\nmaildir /m\nstate_dir /s\ntimeout x\nend \n");
  expect_bad("account a\\q\nserver s\nmaildir /m\nstate_dir /s\nend \n");
  expect_bad("account a\nserver s\nmaildir /m\nstate_dir /s\npin 00\nend \n");
  expect_bad("account a\nserver s\nmaildir /m\nstate_dir /s\npipelining 9\nend \n");
  expect_bad("account a\nserver s\nmaildir /m\nstate_dir /s\nmax_size 10M\nend \n");
  expect_bad("account a\nserver s\nmaildir /m\nstate_dir /s\nmax_size -1\nend \n");
  expect_bad(
      "account a\nserver s\nmaildir /m\nstate_dir /s\nmax_size 18446744073709551616\nend \n");
}

static void test_report_round_trip(void) {
  struct engine_stuck stuck[2];
  memset(stuck, 0, sizeof stuck);
  stuck[0].number = 3;
  snprintf(stuck[0].uid, sizeof stuck[0].uid, "UID-3");
  stuck[0].size = 4096;
  stuck[0].attempts = 3;
  snprintf(stuck[0].last_error, sizeof stuck[0].last_error, "server said\nno");
  stuck[1].number = 9;
  struct engine_result r;
  memset(&r, 0, sizeof r);
  r.err = P3_EPARTIAL;
  snprintf(r.message, sizeof r.message, "some messages: a\\b");
  r.listed = 12;
  r.delivered = 10;
  r.bytes = 123456789012ull;
  r.login_delay = -1;
  r.uidl = 1;
  r.round_trips = 8;
  r.resumed_tls = 1;
  r.stuck = stuck;
  r.stuck_count = 2;
  struct engine_over_size over[2];
  memset(over, 0, sizeof over);
  over[0].number = 4;
  over[0].size = 20ull << 20;
  snprintf(over[0].uid, sizeof over[0].uid, "BIG-4");
  over[1].number = 7;
  over[1].size = 11ull << 20;
  r.over_size = over;
  r.over_size_n = 2;
  r.over_size_count = 3; /* more than listed */
  r.over_size_bytes = 41ull << 20;
  r.max_size = 10ull << 20;
  char *buf;
  size_t len;
  CHECK_INT(worker_report_format(&r, &buf, &len), 0);
  struct worker_report rep;
  worker_report_init(&rep);
  char *line = buf;
  for (char *nl; (nl = memchr(line, '\n', (size_t)(buf + len - line))) != NULL; line = nl + 1) {
    *nl = '\0';
    const char *trace = NULL;
    CHECK_INT(worker_report_line(&rep, line, &trace), 0);
  }
  CHECK_INT(rep.done, 1);
  CHECK_INT(rep.r.err, P3_EPARTIAL);
  CHECK_STR(rep.r.message, "some messages: a\\b");
  CHECK_INT(rep.r.listed, 12);
  CHECK_INT(rep.r.delivered, 10);
  CHECK(rep.r.bytes == 123456789012ull);
  CHECK_INT(rep.r.login_delay, -1);
  CHECK_INT(rep.r.uidl, 1);
  CHECK_INT(rep.r.round_trips, 8);
  CHECK_INT(rep.r.resumed_tls, 1);
  CHECK_INT(rep.r.stuck_count, 2);
  CHECK_INT(rep.stuck[0].number, 3);
  CHECK_STR(rep.stuck[0].uid, "UID-3");
  /* Control characters from the worker never reach the log or status. */
  CHECK_STR(rep.stuck[0].last_error, "server said?no");
  CHECK_STR(rep.stuck[1].uid, "-");
  CHECK_INT(rep.r.over_size_n, 2);
  CHECK(rep.r.over_size == rep.over_size);
  CHECK_INT(rep.over_size[0].number, 4);
  CHECK(rep.over_size[0].size == 20ull << 20);
  CHECK_STR(rep.over_size[0].uid, "BIG-4");
  CHECK_INT(rep.over_size[1].number, 7);
  CHECK_STR(rep.over_size[1].uid, "-");
  CHECK_INT(rep.r.over_size_count, 3);
  CHECK(rep.r.over_size_bytes == 41ull << 20);
  CHECK(rep.r.max_size == 10ull << 20);
  char text[128];
  CHECK_STR(engine_result_over_size_text(&rep.r, text, sizeof text),
            "3 messages over 10 MiB left on the server");
  /* Nothing after done. */
  char extra[] = "progress 1 2 3";
  const char *trace = NULL;
  CHECK_INT(worker_report_line(&rep, extra, &trace), -EINVAL);
  worker_report_free(&rep);
  free(buf);
}

static void test_report_events(void) {
  struct worker_report rep;
  worker_report_init(&rep);
  const char *trace = NULL;
  char l1[] = "trace < +OK hello\\nthere";
  CHECK_INT(worker_report_line(&rep, l1, &trace), 1);
  CHECK_STR(trace, "< +OK hello\nthere");
  char l2[] = "progress 5 10 4096";
  CHECK_INT(worker_report_line(&rep, l2, &trace), 0);
  CHECK_INT(rep.progress_done, 5);
  CHECK_INT(rep.progress_total, 10);
  CHECK_INT(rep.progress_bytes, 4096);
  CHECK_INT(rep.progress_bytes_total, 0);
  CHECK_INT(rep.progress_seen, 1);
  char l2b[] = "progress 6 10 5000 81920";
  CHECK_INT(worker_report_line(&rep, l2b, &trace), 0);
  CHECK_INT(rep.progress_done, 6);
  CHECK_INT(rep.progress_bytes, 5000);
  CHECK_INT(rep.progress_bytes_total, 81920);
  /* The daemon signals nothing a worker names: an old "child PID" event
   * is an unknown key, ignored. */
  char l3[] = "child 1";
  CHECK_INT(worker_report_line(&rep, l3, &trace), 0);
  char bad1[] = "progress x";
  CHECK_INT(worker_report_line(&rep, bad1, &trace), -EINVAL);
  char bad2[] = "stuck_error no stuck before";
  CHECK_INT(worker_report_line(&rep, bad2, &trace), -EINVAL);
  char bad4[] = "result err notanumber";
  CHECK_INT(worker_report_line(&rep, bad4, &trace), -EINVAL);
  char bad5[] = "over_size 1 2";
  CHECK_INT(worker_report_line(&rep, bad5, &trace), -EINVAL);
  char bad6[] = "over_size x 2 U";
  CHECK_INT(worker_report_line(&rep, bad6, &trace), -EINVAL);
  char os[] = "over_size 5 99 U\x01V";
  CHECK_INT(worker_report_line(&rep, os, &trace), 0);
  CHECK_INT(rep.over_size_n, 1);
  CHECK_STR(rep.over_size[0].uid, "U?V"); /* sanitised */
  /* Bounded like stuck. */
  for (int i = 1; i < WORKER_OVER_SIZE_MAX; i++) {
    char more[] = "over_size 6 100 W";
    CHECK_INT(worker_report_line(&rep, more, &trace), 0);
  }
  CHECK_INT(rep.over_size_n, WORKER_OVER_SIZE_MAX);
  char one_more[] = "over_size 6 100 W";
  CHECK_INT(worker_report_line(&rep, one_more, &trace), -EINVAL);
  char unknown[] = "someday something";
  CHECK_INT(worker_report_line(&rep, unknown, &trace), 0);
  CHECK_INT(rep.done, 0);
  worker_report_free(&rep);
}

/* The run's outcome is decided once, by the engine, on either side of the
 * channel: pop3 dl and the worker (exit status), the daemon (status). */
static void test_result_decision(void) {
  struct engine_stuck stuck[1];
  struct engine_result r;
  char msg[1024];

  memset(stuck, 0, sizeof stuck);
  memset(&r, 0, sizeof r);
  r.login_delay = -1;
  CHECK_INT(engine_result_error(&r), 0);
  CHECK_INT(engine_result_exit_code(&r), 0);
  CHECK_STR(engine_result_message(&r, msg, sizeof msg), "");
  CHECK_STR(engine_result_over_size_text(&r, msg, sizeof msg), "");

  /* Left on the server for its size: still a success. */
  r.max_size = 1500;
  r.over_size_count = 1;
  r.over_size_bytes = 2000;
  CHECK_INT(engine_result_error(&r), 0);
  CHECK_INT(engine_result_exit_code(&r), 0);
  CHECK_STR(engine_result_message(&r, msg, sizeof msg), "");
  CHECK_STR(engine_result_over_size_text(&r, msg, sizeof msg),
            "1 message over 1.5 KiB left on the server");
  r.max_size = 0;
  r.over_size_count = 0;
  r.over_size_bytes = 0;

  r.stuck = stuck;
  r.stuck_count = 1;
  CHECK_INT(engine_result_error(&r), P3_EPARTIAL);
  CHECK_INT(engine_result_exit_code(&r), 75);
  CHECK_STR(engine_result_message(&r, msg, sizeof msg),
            "1 messages stuck after repeated failures, left on the server");

  /* Lack of space wins over stuck messages. */
  r.left_for_space = 2;
  r.left_for_space_bytes = 5000;
  CHECK_INT(engine_result_error(&r), P3_ESAVE);
  CHECK_INT(engine_result_exit_code(&r), 73);
  CHECK_STR(engine_result_message(&r, msg, sizeof msg),
            "2 messages (5000 bytes) left on the server: not enough disk space");

  /* Through the worker channel: the daemon decides the same. */
  char *buf;
  size_t len;
  CHECK_INT(worker_report_format(&r, &buf, &len), 0);
  struct worker_report rep;
  worker_report_init(&rep);
  char *line = buf;
  for (char *nl; (nl = memchr(line, '\n', (size_t)(buf + len - line))) != NULL; line = nl + 1) {
    *nl = '\0';
    const char *trace = NULL;
    CHECK_INT(worker_report_line(&rep, line, &trace), 0);
  }
  CHECK_INT(rep.done, 1);
  CHECK_INT(engine_result_error(&rep.r), P3_ESAVE);
  CHECK_INT(engine_result_exit_code(&rep.r), 73);
  worker_report_free(&rep);
  free(buf);

  /* A failed run: its own error and sentence, whatever was left. */
  r.err = P3_EAUTH;
  snprintf(r.message, sizeof r.message, "server refused the login: -ERR no");
  CHECK_INT(engine_result_error(&r), P3_EAUTH);
  CHECK_INT(engine_result_exit_code(&r), 77);
  CHECK_STR(engine_result_message(&r, msg, sizeof msg), "server refused the login: -ERR no");
  r.message[0] = '\0';
  CHECK_STR(engine_result_message(&r, msg, sizeof msg), p3_strerror(P3_EAUTH));
  r.err = P3_ETIMEOUT;
  CHECK_INT(engine_result_exit_code(&r), 75);
  r.err = -ENOSPC;
  CHECK_INT(engine_result_exit_code(&r), 73);
}

int main(void) {
  test_request_round_trip();
  test_request_rejects();
  test_report_round_trip();
  test_report_events();
  test_result_decision();
  return check_result("test_worker_proto");
}

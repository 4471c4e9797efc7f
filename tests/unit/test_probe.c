/* probe.h: the `pop3 info' conversation, fed whole, one byte at a time and
 * at every split point; what it sends (never USER, PASS, APOP or AUTH) and
 * what it reports. */
#include "config.h"

#include "errors.h"
#include "probe.h"

#include "check.h"

#include <stdlib.h>
#include <string.h>

/* A scripted server: the reply to each command, in order. */
struct script {
  const char *greeting;
  const char *reply[4]; /* to the 1st, 2nd, ... command sent */
};

/* Runs p against s, feeding each server chunk in pieces of `step` bytes
 * (0: whole).  Writes the commands sent, space-separated, into sent.
 * Returns the last event or error; *tls_r counts STLS handshakes. */
static int run(struct probe *p, const struct script *s, size_t step, char *sent, size_t cap,
               int *tls_r) {
  const char *chunk = s->greeting;
  int ncmd = 0, r = PROBE_NEED_MORE;
  sent[0] = '\0';
  *tls_r = 0;
  for (int guard = 0; guard < 20 && chunk != NULL; guard++) {
    size_t len = strlen(chunk), off = 0;
    const char *next = NULL;
    while (off < len) {
      size_t n = step && len - off > step ? step : len - off, used;
      r = probe_feed(p, chunk + off, n, &used);
      if (r < 0 || r == PROBE_DONE)
        return r;
      off += used;
      if (r == PROBE_START_TLS) {
        CHECK_INT(off, len); /* nothing follows STLS's +OK in these scripts */
        (*tls_r)++;
        r = probe_tls_ready(p);
      }
      if (r == PROBE_SEND) {
        const char *cmd = probe_command(p);
        CHECK(strlen(cmd) > 2 && strcmp(cmd + strlen(cmd) - 2, "\r\n") == 0);
        strncat(sent, cmd, strlen(cmd) - 2);
        strncat(sent, " ", cap - strlen(sent) - 1);
        CHECK(probe_waiting(p));
        next = ncmd < 4 ? s->reply[ncmd++] : NULL;
      }
    }
    chunk = next;
  }
  return r;
}

/* Every split of the same script gives the same report. */
static void expect_all_splits(const struct script *s, int starttls, const char *want_sent,
                              const char *want_before, const char *want_after,
                              const char *want_methods) {
  size_t steps[] = {0, 1, 2, 3, 7, 64};
  for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
    struct probe p;
    char sent[256], methods[256];
    int tls;
    probe_init(&p, starttls);
    int r = run(&p, s, steps[i], sent, sizeof sent, &tls);
    CHECK_INT(r, PROBE_DONE);
    CHECK_STR(sent, want_sent);
    CHECK_STR(p.before.text, want_before);
    CHECK_STR(p.after.text, want_after);
    probe_login_methods(&p, methods, sizeof methods);
    CHECK_STR(methods, want_methods);
    CHECK(!probe_waiting(&p));
    CHECK(probe_quitting(&p));
    CHECK(strstr(sent, "USER") == NULL && strstr(sent, "PASS") == NULL &&
          strstr(sent, "AUTH") == NULL && strstr(sent, "APOP") == NULL);
    if (r != PROBE_DONE || strcmp(sent, want_sent) != 0)
      fprintf(stderr, "  step %zu: sent \"%s\"\n", steps[i], sent);
  }
}

static void test_plain(void) {
  struct script s = {"+OK Dovecot ready.\r\n",
                     {"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n"
                      "USER\r\nSASL PLAIN LOGIN\r\n.\r\n",
                      "+OK Logging out\r\n"}};
  expect_all_splits(&s, 0, "CAPA QUIT ", "",
                    "CAPA, TOP, UIDL, RESP-CODES, PIPELINING, AUTH-RESP-CODE, USER, SASL PLAIN "
                    "LOGIN",
                    "USER/PASS, SASL PLAIN LOGIN");
  struct probe p;
  char sent[128];
  int tls;
  probe_init(&p, 0);
  run(&p, &s, 0, sent, sizeof sent, &tls);
  CHECK_STR(p.greeting, "+OK Dovecot ready.");
  CHECK(p.greeting_ok);
  CHECK(!p.apop);
  CHECK_INT(p.after.state, 1);
  CHECK_INT(p.before.state, 0);
  CHECK(p.after.caps.pipelining && p.after.caps.uidl && p.after.caps.user);
  CHECK_INT(tls, 0);
  /* greeting + CAPA status + 8 listing lines + QUIT status */
  CHECK_INT(p.lines, 11);
}

static void test_starttls(void) {
  struct script s = {"+OK ready\r\n",
                     {"+OK\r\nSTLS\r\nTOP\r\n.\r\n", "+OK Begin TLS negotiation now.\r\n",
                      "+OK\r\nTOP\r\nUSER\r\nSASL PLAIN\r\n.\r\n", "+OK bye\r\n"}};
  expect_all_splits(&s, 1, "CAPA STLS CAPA QUIT ", "STLS, TOP", "TOP, USER, SASL PLAIN",
                    "USER/PASS, SASL PLAIN");
  struct probe p;
  char sent[128];
  int tls;
  probe_init(&p, 1);
  run(&p, &s, 0, sent, sizeof sent, &tls);
  CHECK_INT(tls, 1);
  CHECK_STR(p.stls_refused, "");
  CHECK(p.tls);
}

static void test_starttls_missing(void) {
  /* STLS not in CAPA: no STLS sent, straight to QUIT, and the reason kept. */
  struct script s = {"+OK ready\r\n", {"+OK\r\nTOP\r\nUSER\r\n.\r\n", "+OK bye\r\n"}};
  expect_all_splits(&s, 1, "CAPA QUIT ", "TOP, USER", "", "USER/PASS");
  struct probe p;
  char sent[128];
  int tls;
  probe_init(&p, 1);
  run(&p, &s, 0, sent, sizeof sent, &tls);
  CHECK_STR(p.stls_refused, "STLS is not in the server's capabilities");
  CHECK_INT(tls, 0);
  /* STLS refused with -ERR. */
  struct script s2 = {"+OK ready\r\n",
                      {"+OK\r\nSTLS\r\n.\r\n", "-ERR not \x1b[31mnow\r\n", "+OK bye\r\n"}};
  probe_init(&p, 1);
  CHECK_INT(run(&p, &s2, 0, sent, sizeof sent, &tls), PROBE_DONE);
  CHECK_STR(sent, "CAPA STLS QUIT ");
  CHECK_STR(p.stls_refused, "the server refused STLS: -ERR not ?[31mnow");
}

static void test_no_capa(void) {
  struct script s = {"+OK POP3 ready <1896.697170952@dbc.mtview.ca.us>\r\n",
                     {"-ERR unknown command\r\n", "+OK\r\n"}};
  expect_all_splits(&s, 0, "CAPA QUIT ", "", "", "APOP; others unknown (no CAPA)");
  struct probe p;
  char sent[128], methods[128];
  int tls;
  probe_init(&p, 0);
  run(&p, &s, 0, sent, sizeof sent, &tls);
  CHECK_INT(p.after.state, -1);
  CHECK_STR(p.after.err, "-ERR unknown command");
  CHECK(p.apop);
  /* Without a timestamp either. */
  struct script s2 = {"+OK hi\r\n", {"-ERR\r\n", "+OK\r\n"}};
  probe_init(&p, 0);
  run(&p, &s2, 0, sent, sizeof sent, &tls);
  probe_login_methods(&p, methods, sizeof methods);
  CHECK_STR(methods, "unknown (no CAPA)");
  /* STLS is still tried when CAPA is not supported (as the session does). */
  struct script s3 = {"+OK hi\r\n", {"-ERR\r\n", "-ERR no\r\n", "+OK\r\n"}};
  probe_init(&p, 1);
  CHECK_INT(run(&p, &s3, 0, sent, sizeof sent, &tls), PROBE_DONE);
  CHECK_STR(sent, "CAPA STLS QUIT ");
  /* An empty listing: none advertised. */
  struct script s4 = {"+OK hi\r\n", {"+OK\r\n.\r\n", "+OK\r\n"}};
  probe_init(&p, 0);
  run(&p, &s4, 0, sent, sizeof sent, &tls);
  probe_login_methods(&p, methods, sizeof methods);
  CHECK_STR(methods, "none advertised");
  CHECK_STR(p.after.text, "");
  CHECK_INT(p.after.state, 1);
}

static void test_hostile(void) {
  struct probe p;
  char sent[128];
  int tls;
  /* Control characters and 8-bit bytes in the greeting and the listing. */
  struct script s = {"+OK \x1b]0;owned\x07 hi\xc3\xa9\r\n",
                     {"+OK\r\nX-\x1b[2JCLEAR\r\n..DOT\r\n.\r\n", "+OK\r\n"}};
  probe_init(&p, 0);
  CHECK_INT(run(&p, &s, 0, sent, sizeof sent, &tls), PROBE_DONE);
  CHECK_STR(p.greeting, "+OK ?]0;owned? hi??");
  CHECK_STR(p.after.text, "X-?[2JCLEAR, .DOT");
  /* A -ERR greeting ends the conversation before any command. */
  struct script s2 = {"-ERR go away\r\n", {NULL}};
  probe_init(&p, 0);
  CHECK_INT(run(&p, &s2, 0, sent, sizeof sent, &tls), PROBE_DONE);
  CHECK_STR(sent, "");
  CHECK(!p.greeting_ok);
  CHECK_STR(p.greeting, "-ERR go away");
  /* Not POP3 at all. */
  struct script s3 = {"220 smtp.example ESMTP\r\n", {NULL}};
  probe_init(&p, 0);
  CHECK_INT(run(&p, &s3, 0, sent, sizeof sent, &tls), P3_EPROTO);
  CHECK_STR(p.error, "not a POP3 greeting: 220 smtp.example ESMTP");
  /* An endless line. */
  char *big = malloc(P3_LINE_MAX + 10);
  memset(big, 'x', P3_LINE_MAX + 9);
  memcpy(big, "+OK ", 4);
  big[P3_LINE_MAX + 9] = '\0';
  struct script s4 = {big, {NULL}};
  probe_init(&p, 0);
  CHECK_INT(run(&p, &s4, 100, sent, sizeof sent, &tls), P3_EPROTO);
  free(big);
  /* An endless listing: refused after PROBE_CAPA_LINES_MAX lines. */
  size_t n = 5 + (PROBE_CAPA_LINES_MAX + 1) * 6 + 4;
  char *list = malloc(n);
  strcpy(list, "+OK\r\n");
  for (int i = 0; i <= PROBE_CAPA_LINES_MAX; i++)
    strcat(list, "XYZW\r\n");
  strcat(list, ".\r\n");
  struct script s5 = {"+OK hi\r\n", {list, "+OK\r\n"}};
  probe_init(&p, 0);
  CHECK_INT(run(&p, &s5, 0, sent, sizeof sent, &tls), P3_EPROTO);
  CHECK_STR(p.error, "the CAPA listing has more than 500 lines");
  free(list);
  /* A long listing is cut with "..." but accepted. */
  size_t m = 5 + 300 * 20 + 4;
  char *longlist = malloc(m);
  strcpy(longlist, "+OK\r\n");
  for (int i = 0; i < 300; i++)
    strcat(longlist, "X-SOMETHING-LONGER\r\n");
  strcat(longlist, ".\r\n");
  struct script s6 = {"+OK hi\r\n", {longlist, "+OK\r\n"}};
  probe_init(&p, 0);
  CHECK_INT(run(&p, &s6, 0, sent, sizeof sent, &tls), PROBE_DONE);
  size_t tl = strlen(p.after.text);
  CHECK(tl < PROBE_CAPS_MAX && tl > 3 && strcmp(p.after.text + tl - 3, "...") == 0);
  free(longlist);
}

static void test_clean(void) {
  char out[8];
  CHECK_STR(probe_clean("abc", 3, out, sizeof out), "abc");
  CHECK_STR(probe_clean("a\tb\x7f\x80", 5, out, sizeof out), "a?b??");
  CHECK_STR(probe_clean("1234567", 7, out, sizeof out), "1234567");
  CHECK_STR(probe_clean("12345678", 8, out, sizeof out), "1234...");
  CHECK_STR(probe_clean("", 0, out, sizeof out), "");
}

int main(void) {
  test_plain();
  test_starttls();
  test_starttls_missing();
  test_no_capa();
  test_hostile();
  test_clean();
  return check_result("test_probe");
}

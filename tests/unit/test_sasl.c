/* SASL and APOP encodings against the published examples (RFC 4616,
 * RFC 7628 section 4.1, Google's XOAUTH2 page, RFC 1939 section 7), and the
 * "+ " challenge parser on good, empty and malformed input. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "errors.h"
#include "sasl.h"

/* Decodes b64 and compares it with want[0..wlen). */
static void check_decodes_to(const char *b64, const char *want, size_t wlen) {
  char *raw;
  size_t n;
  CHECK_INT(sasl_b64_decode(b64, strlen(b64), &raw, &n), 0);
  if (raw) {
    CHECK_MEM(raw, n, want, wlen);
    free(raw);
  }
}

static void test_base64(void) {
  static const struct {
    const char *raw, *b64;
  } v[] = {{"", ""},
           {"f", "Zg=="},
           {"fo", "Zm8="},
           {"foo", "Zm9v"},
           {"foob", "Zm9vYg=="},
           {"fooba", "Zm9vYmE="},
           {"foobar", "Zm9vYmFy"}}; /* RFC 4648 section 10 */
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    char *out;
    size_t n;
    CHECK_INT(sasl_b64_encode(v[i].raw, strlen(v[i].raw), &out, &n), 0);
    CHECK_STR(out, v[i].b64);
    CHECK_INT(n, strlen(v[i].b64));
    free(out);
    check_decodes_to(v[i].b64, v[i].raw, strlen(v[i].raw));
  }
  /* Binary bytes survive both ways. */
  unsigned char bin[256];
  for (int i = 0; i < 256; i++)
    bin[i] = (unsigned char)i;
  char *out;
  size_t n;
  CHECK_INT(sasl_b64_encode(bin, sizeof bin, &out, &n), 0);
  check_decodes_to(out, (const char *)bin, sizeof bin);
  free(out);

  /* Malformed: wrong length, bad characters, padding in the middle, blanks,
   * line breaks (mbedTLS alone would skip some of these). */
  static const char *const bad[] = {
      "Zg",   "Zg=",  "Z===", "Zm9v!A==",  "Zg==Zg==",        "Zm 9", "Zm9v\r\n", "Zm9v\nYQ==",
      "=Zm9", "Zm=v", "====", "Zm9vYmFy=", "\x80\x81\x82\x83"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *raw = (char *)1;
    CHECK_INT(sasl_b64_decode(bad[i], strlen(bad[i]), &raw, &n), P3_EPROTO);
    CHECK(raw == NULL);
  }
}

static void test_plain(void) {
  char *b64;
  size_t n;
  CHECK_INT(sasl_plain("test", "secret", &b64, &n), 0);
  CHECK_STR(b64, "AHRlc3QAc2VjcmV0");
  CHECK_INT(n, 16);
  sasl_free_secret(b64);
  /* RFC 4616 section 4: authzid empty, authcid "tim", passwd "tanstaaftanstaaf". */
  CHECK_INT(sasl_plain("tim", "tanstaaftanstaaf", &b64, &n), 0);
  check_decodes_to(b64, "\0tim\0tanstaaftanstaaf", 21);
  sasl_free_secret(b64);
  /* UTF-8 user names and passwords are octets as they are. */
  CHECK_INT(sasl_plain("j\xc3\xbcrgen", "p\xc3\xa4ss", &b64, &n), 0);
  check_decodes_to(b64, "\0j\xc3\xbcrgen\0p\xc3\xa4ss", 14);
  sasl_free_secret(b64);
}

static void test_login(void) {
  char *b64;
  size_t n;
  CHECK_INT(sasl_login_step("test", &b64, &n), 0);
  CHECK_STR(b64, "dGVzdA==");
  sasl_free_secret(b64);
  CHECK_INT(sasl_login_step("secret", &b64, &n), 0);
  CHECK_STR(b64, "c2VjcmV0");
  sasl_free_secret(b64);
}

static void test_xoauth2(void) {
  char *b64;
  size_t n;
  /* Google's example (developers.google.com/gmail/imap/xoauth2-protocol). */
  CHECK_INT(sasl_xoauth2("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg",
                         &b64, &n),
            0);
  CHECK_STR(b64, "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNS"
                 "bGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ==");
  sasl_free_secret(b64);
  /* A control byte would end a field early: refused. */
  b64 = (char *)1;
  CHECK_INT(sasl_xoauth2("a\001b", "t", &b64, &n), P3_EUSAGE);
  CHECK(b64 == NULL);
  CHECK_INT(sasl_xoauth2("u", "to\001ken", &b64, &n), P3_EUSAGE);
  CHECK_INT(sasl_xoauth2("u", "to\r\nken", &b64, &n), P3_EUSAGE);
  /* A 16 KiB token is fine. */
  char *tok = malloc(16385);
  memset(tok, 'T', 16384);
  tok[16384] = '\0';
  CHECK_INT(sasl_xoauth2("me@example.com", tok, &b64, &n), 0);
  CHECK_INT(n, (5 + 14 + 13 + 16384 + 2 + 2) / 3 * 4);
  char *raw;
  size_t rn;
  CHECK_INT(sasl_b64_decode(b64, n, &raw, &rn), 0);
  CHECK_INT(rn, 5 + 14 + 13 + 16384 + 2);
  CHECK(memcmp(raw, "user=me@example.com\001auth=Bearer TTTT", 36) == 0);
  CHECK(memcmp(raw + rn - 3, "T\001\001", 3) == 0);
  sasl_free_secret(raw);
  sasl_free_secret(b64);
  free(tok);
}

static void test_oauthbearer(void) {
  char *b64;
  size_t n;
  /* RFC 7628 section 4.1. */
  CHECK_INT(sasl_oauthbearer("user@example.com", "server.example.com", 143,
                             "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==", &b64, &n),
            0);
  CHECK_STR(b64, "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dG"
                 "g9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB");
  sasl_free_secret(b64);
  /* saslname escapes ',' and '='; host and port may be left out. */
  CHECK_INT(sasl_oauthbearer("a,b=c", NULL, 0, "T", &b64, &n), 0);
  static const char want[] = "n,a=a=2Cb=3Dc,\001auth=Bearer T\001\001";
  check_decodes_to(b64, want, sizeof want - 1);
  sasl_free_secret(b64);
  CHECK_INT(sasl_oauthbearer("u", "", 995, "T", &b64, &n), 0);
  static const char want2[] = "n,a=u,\001port=995\001auth=Bearer T\001\001";
  check_decodes_to(b64, want2, sizeof want2 - 1);
  sasl_free_secret(b64);
  CHECK_INT(sasl_oauthbearer("u", "h\001x", 1, "T", &b64, &n), P3_EUSAGE);
  CHECK_INT(sasl_oauthbearer("u", "h", 1, "T\n", &b64, &n), P3_EUSAGE);
  /* The error acknowledgement is the %x01 byte. */
  check_decodes_to(SASL_OAUTHBEARER_ERROR_ACK, "\001", 1);
}

static void test_apop(void) {
  char hex[33];
  const char *ts;
  size_t len;
  /* RFC 1939 section 7. */
  static const char greet[] = "POP3 server ready <1896.697170952@dbc.mtview.ca.us>";
  CHECK_INT(sasl_apop_timestamp(greet, strlen(greet), &ts, &len), 1);
  CHECK_MEM(ts, len, "<1896.697170952@dbc.mtview.ca.us>", 33);
  CHECK_INT(sasl_apop_digest(ts, len, "tanstaaf", hex), 0);
  CHECK_STR(hex, "c4c9334bac560ecc979e58001b3e22fb");

  /* The first well-formed one wins; brackets without '@', blanks or an
   * unclosed one are not timestamps. */
  static const char g2[] = "ready <no-at> <a b@c> <x@y";
  CHECK_INT(sasl_apop_timestamp(g2, strlen(g2), &ts, &len), 0);
  CHECK(ts == NULL);
  static const char g3[] = "Dovecot <not one> ready. <1.2.3@host.example>";
  CHECK_INT(sasl_apop_timestamp(g3, strlen(g3), &ts, &len), 1);
  CHECK_MEM(ts, len, "<1.2.3@host.example>", 20);
  static const char g4[] = "<<1@h>>";
  CHECK_INT(sasl_apop_timestamp(g4, strlen(g4), &ts, &len), 1);
  CHECK_MEM(ts, len, "<1@h>", 5);
  CHECK_INT(sasl_apop_timestamp("", 0, &ts, &len), 0);
  CHECK_INT(sasl_apop_timestamp("<@>", 3, &ts, &len), 1);
  /* The timestamp must not outgrow SASL_APOP_TS_MAX. */
  char big[SASL_APOP_TS_MAX + 8];
  memset(big, 'a', sizeof big);
  big[0] = '<';
  big[5] = '@';
  big[SASL_APOP_TS_MAX - 1] = '>';
  CHECK_INT(sasl_apop_timestamp(big, SASL_APOP_TS_MAX, &ts, &len), 1);
  CHECK_INT(len, SASL_APOP_TS_MAX);
  big[SASL_APOP_TS_MAX - 1] = 'a';
  big[SASL_APOP_TS_MAX] = '>';
  CHECK_INT(sasl_apop_timestamp(big, SASL_APOP_TS_MAX + 1, &ts, &len), 0);
  /* Control bytes and 8-bit bytes are not part of one. */
  CHECK_INT(sasl_apop_timestamp("<a\001@b>", 7, &ts, &len), 0);
  CHECK_INT(sasl_apop_timestamp("<a\xc3\xa9@b>", 8, &ts, &len), 0);
}

static void test_challenge(void) {
  char *data;
  size_t n;
  /* Empty challenges: "+ " and a bare "+" (some servers). */
  CHECK_INT(sasl_parse_challenge("+ ", 2, &data, &n), 1);
  CHECK_INT(n, 0);
  CHECK_STR(data, "");
  free(data);
  CHECK_INT(sasl_parse_challenge("+", 1, &data, &n), 1);
  CHECK_INT(n, 0);
  free(data);
  CHECK_INT(sasl_parse_challenge("+   ", 4, &data, &n), 1);
  CHECK_INT(n, 0);
  free(data);
  /* AUTH LOGIN's prompts. */
  CHECK_INT(sasl_parse_challenge("+ VXNlcm5hbWU6", 14, &data, &n), 1);
  CHECK_STR(data, "Username:");
  free(data);
  CHECK_INT(sasl_parse_challenge("+ UGFzc3dvcmQ6 \t", 16, &data, &n), 1);
  CHECK_STR(data, "Password:");
  free(data);
  /* Status lines are not challenges: left to proto_parse_status. */
  static const char *const status[] = {"+OK", "+OK logged in", "-ERR no", "",
                                       "+x",  "+OK+ abc",      "* BAD",   "+\tabc"};
  for (size_t i = 0; i < sizeof status / sizeof status[0]; i++) {
    data = (char *)1;
    CHECK_INT(sasl_parse_challenge(status[i], strlen(status[i]), &data, &n), 0);
    CHECK(data == NULL);
  }
  /* Malformed base64 in a continuation. */
  static const char *const bad[] = {"+ abc", "+ ****", "+ Zm9v YmFy", "+ =", "+ Zm9v\001", "+ OK"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    data = (char *)1;
    CHECK_INT(sasl_parse_challenge(bad[i], strlen(bad[i]), &data, &n), P3_EPROTO);
    CHECK(data == NULL);
  }
  /* A NUL byte inside the line is not base64 either. */
  CHECK_INT(sasl_parse_challenge("+ Zm9\0", 6, &data, &n), P3_EPROTO);
  /* A decoded challenge may hold any bytes, NUL included. */
  CHECK_INT(sasl_parse_challenge("+ AAEC", 6, &data, &n), 1);
  CHECK_MEM(data, n, "\0\001\002", 3);
  free(data);
}

static void test_oauth_error(void) {
  char buf[160];
  char *json;
  size_t n;
  /* RFC 7628 section 4.3's failure challenge. */
  static const char rfc[] =
      "+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJleGFtcGxlX3Njb3BlIiwib"
      "3BlbmlkLWNvbmZpZ3VyYXRpb24iOiJodHRwczovL2V4YW1wbGUuY29tLy53ZWxsLWtub3d"
      "uL29wZW5pZC1jb25maWd1cmF0aW9uIn0=";
  CHECK_INT(sasl_parse_challenge(rfc, strlen(rfc), &json, &n), 1);
  sasl_oauth_error(json, n, buf, sizeof buf);
  CHECK_STR(buf, "status invalid_token");
  free(json);
  /* Google's. */
  static const char google[] = "+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIG1hYyIsInNjb3BlIjoia"
                               "HR0cHM6Ly9tYWlsLmdvb2dsZS5jb20vIn0=";
  CHECK_INT(sasl_parse_challenge(google, strlen(google), &json, &n), 1);
  sasl_oauth_error(json, n, buf, sizeof buf);
  CHECK_STR(buf, "status 401");
  free(json);
  /* A number, blanks around the colon. */
  static const char num[] = "{ \"status\" : 400 }";
  sasl_oauth_error(num, strlen(num), buf, sizeof buf);
  CHECK_STR(buf, "status 400");
  /* No status: the JSON itself, control bytes replaced, cut to fit. */
  static const char other[] = "{\"error\":\"x\"}\n\001";
  sasl_oauth_error(other, strlen(other), buf, sizeof buf);
  CHECK_STR(buf, "{\"error\":\"x\"}  ");
  char small[8];
  sasl_oauth_error(other, strlen(other), small, sizeof small);
  CHECK_STR(small, "{\"error");
  /* Not JSON at all, or a status that never ends. */
  sasl_oauth_error("\"status\":\"abc", 13, buf, sizeof buf);
  CHECK_STR(buf, "\"status\":\"abc");
  sasl_oauth_error("", 0, buf, sizeof buf);
  CHECK_STR(buf, "");
  sasl_oauth_error("\xff\xfe", 2, buf, sizeof buf);
  CHECK_STR(buf, "??");
}

int main(void) {
  test_base64();
  test_plain();
  test_login();
  test_xoauth2();
  test_oauthbearer();
  test_apop();
  test_challenge();
  test_oauth_error();
  return check_result("test_sasl");
}

#include "config.h"

#include "json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* Writes s with jbuf_str into a fresh buffer and compares the text. */
static void check_escaped(const char *s, size_t n, const char *want) {
  struct jbuf b;
  jbuf_init(&b);
  jbuf_strn(&b, s, n);
  CHECK_INT(b.err, 0);
  CHECK_STR(b.data, want);
  jbuf_free(&b);
}

static void test_writer_structure(void) {
  struct jbuf b;
  jbuf_init(&b);
  CHECK_STR(b.data, "");
  jbuf_obj_begin(&b);
  jbuf_key(&b, "daemon");
  jbuf_obj_begin(&b);
  jbuf_key(&b, "pid");
  jbuf_int(&b, 1234);
  jbuf_key(&b, "version");
  jbuf_str(&b, "0.1.0");
  jbuf_obj_end(&b);
  jbuf_key(&b, "accounts");
  jbuf_arr_begin(&b);
  jbuf_obj_begin(&b);
  jbuf_key(&b, "name");
  jbuf_str(&b, "work");
  jbuf_key(&b, "last_run");
  jbuf_null(&b);
  jbuf_key(&b, "ok");
  jbuf_bool(&b, 1);
  jbuf_key(&b, "no");
  jbuf_bool(&b, 0);
  jbuf_key(&b, "error");
  jbuf_str(&b, NULL);
  jbuf_obj_end(&b);
  jbuf_obj_begin(&b);
  jbuf_obj_end(&b);
  jbuf_arr_begin(&b);
  jbuf_arr_end(&b);
  jbuf_arr_begin(&b);
  jbuf_int(&b, -1);
  jbuf_uint(&b, UINT64_MAX);
  jbuf_int(&b, INT64_MIN);
  jbuf_arr_end(&b);
  jbuf_arr_end(&b);
  jbuf_key(&b, "exit");
  jbuf_int(&b, 0);
  jbuf_obj_end(&b);
  CHECK_INT(b.err, 0);
  CHECK_STR(b.data, "{\"daemon\":{\"pid\":1234,\"version\":\"0.1.0\"},"
                    "\"accounts\":[{\"name\":\"work\",\"last_run\":null,\"ok\":true,\"no\":false,"
                    "\"error\":null},{},[],[-1,18446744073709551615,-9223372036854775808]],"
                    "\"exit\":0}");
  CHECK_INT(b.len, strlen(b.data));
  jbuf_free(&b);
  jbuf_free(&b); /* idempotent */

  /* Top-level array of scalars; keys are escaped like values. */
  jbuf_init(&b);
  jbuf_arr_begin(&b);
  jbuf_str(&b, "a");
  jbuf_str(&b, "b");
  jbuf_obj_begin(&b);
  jbuf_key(&b, "k\"\n");
  jbuf_str(&b, "");
  jbuf_obj_end(&b);
  jbuf_arr_end(&b);
  CHECK_STR(b.data, "[\"a\",\"b\",{\"k\\\"\\n\":\"\"}]");
  jbuf_free(&b);
}

static void test_writer_grows(void) {
  struct jbuf b;
  jbuf_init(&b);
  jbuf_arr_begin(&b);
  for (int i = 0; i < 10000; i++)
    jbuf_str(&b, "0123456789");
  jbuf_arr_end(&b);
  CHECK_INT(b.err, 0);
  CHECK_INT(b.len, 2 + 10000 * 12 + 9999);
  CHECK_INT(strlen(b.data), b.len);
  struct json *v = NULL;
  CHECK_INT(json_parse(b.data, b.len, &v), 0);
  if (v != NULL) {
    CHECK_INT(v->type, JSON_ARRAY);
    CHECK_INT(v->count, 10000);
    CHECK_STR(v->items[9999].string, "0123456789");
  }
  json_free(v);
  jbuf_free(&b);
}

static void test_writer_escaping(void) {
  check_escaped("plain", 5, "\"plain\"");
  check_escaped("q\"b\\s/", 6, "\"q\\\"b\\\\s/\"");
  check_escaped("\n\t\r\b\f", 5, "\"\\n\\t\\r\\b\\f\"");
  check_escaped("\x01\x1f\x7f", 3, "\"\\u0001\\u001f\\u007f\"");
  check_escaped("a\0b", 3, "\"a\\u0000b\"");
  check_escaped("\033[31mred", 8, "\"\\u001b[31mred\"");
  /* Valid UTF-8 passes through: 2, 3 and 4 byte forms. */
  check_escaped("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14,
                "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
  check_escaped("\xef\xbf\xbf\xf4\x8f\xbf\xbf", 7, "\"\xef\xbf\xbf\xf4\x8f\xbf\xbf\"");
  /* Invalid bytes become \u00XX each: Latin-1, stray continuation, overlong
   * forms, a UTF-8 encoded surrogate, above U+10FFFF, truncated sequences. */
  check_escaped("caf\xe9", 4, "\"caf\\u00e9\"");
  check_escaped("\x80", 1, "\"\\u0080\"");
  check_escaped("\xc0\xaf", 2, "\"\\u00c0\\u00af\"");
  check_escaped("\xe0\x80\xaf", 3, "\"\\u00e0\\u0080\\u00af\"");
  check_escaped("\xed\xa0\x80", 3, "\"\\u00ed\\u00a0\\u0080\"");
  check_escaped("\xf4\x90\x80\x80", 4, "\"\\u00f4\\u0090\\u0080\\u0080\"");
  check_escaped("\xf5", 1, "\"\\u00f5\"");
  check_escaped("\xe2\x82", 2, "\"\\u00e2\\u0082\"");
  check_escaped("\xe2\x82x", 3, "\"\\u00e2\\u0082x\"");
  check_escaped("\xf0\x9f\x98", 3, "\"\\u00f0\\u009f\\u0098\"");

  /* Whatever the bytes, the output parses back, and valid text round-trips. */
  unsigned char all[256];
  for (int i = 0; i < 256; i++)
    all[i] = (unsigned char)i;
  struct jbuf b;
  jbuf_init(&b);
  jbuf_strn(&b, (const char *)all, sizeof all);
  struct json *v = NULL;
  CHECK_INT(json_parse(b.data, b.len, &v), 0);
  if (v != NULL) {
    CHECK_INT(v->type, JSON_STRING);
    CHECK_INT(strlen(v->string), 0); /* \u0000 first: the C string ends there */
  }
  json_free(v);
  jbuf_free(&b);

  const char *text = "tab\there \"quoted\" back\\slash caf\xc3\xa9 \xf0\x9f\x98\x80 \x01";
  jbuf_init(&b);
  jbuf_str(&b, text);
  v = NULL;
  CHECK_INT(json_parse(b.data, b.len, &v), 0);
  if (v != NULL)
    CHECK_STR(v->string, text);
  json_free(v);
  jbuf_free(&b);
}

static void test_writer_time(void) {
  struct jbuf b;
  jbuf_init(&b);
  jbuf_arr_begin(&b);
  jbuf_time(&b, 0);
  jbuf_time(&b, 1795873061); /* 2026-11-28T13:37:41Z */
  jbuf_time(&b, 951782400);  /* 2000-02-29T00:00:00Z */
  jbuf_time(&b, 1);
  jbuf_arr_end(&b);
  CHECK_STR(b.data,
            "[null,\"2026-11-28T13:37:41Z\",\"2000-02-29T00:00:00Z\",\"1970-01-01T00:00:01Z\"]");
  jbuf_free(&b);
}

static struct json *parse_ok(const char *text) {
  struct json *v = NULL;
  int err = json_parse(text, strlen(text), &v);
  if (err != 0) {
    fprintf(stderr, "json_parse(%s) = %d\n", text, err);
    check_failures++;
    return NULL;
  }
  return v;
}

static int parse_err(const char *text) {
  struct json *v = NULL;
  int err = json_parse(text, strlen(text), &v);
  if (err == 0) {
    fprintf(stderr, "json_parse(%s) accepted\n", text);
    json_free(v);
  }
  return err;
}

static void test_parse_values(void) {
  struct json *v;
  const char *doc =
      " {\"daemon\": {\"pid\": 1234, \"version\": \"0.1.0\"},\n"
      "  \"accounts\": [{\"name\": \"work\", \"state\": \"idle\", \"last_run\": null,\n"
      "                \"bytes\": 12345, \"auth_failed\": false, \"ok\": true,\n"
      "                \"f\": -1.5e3, \"z\": -0, \"e\": 2E+2, \"g\": 0.25e-1}],\n"
      "  \"empty\": {}, \"none\": [], \"exit\": 0}\r\n\t ";
  v = parse_ok(doc);
  if (v != NULL) {
    CHECK_INT(v->type, JSON_OBJECT);
    CHECK_INT(v->count, 5);
    const struct json *d = json_get(v, "daemon");
    CHECK(d != NULL && d->type == JSON_OBJECT);
    CHECK(json_get_num(d, "pid", -1) == 1234);
    CHECK_STR(json_get_str(d, "version"), "0.1.0");
    CHECK(json_get_str(d, "pid") == NULL);     /* not a string */
    CHECK(json_get_num(d, "version", 7) == 7); /* not a number */
    CHECK(json_get_num(d, "missing", 8) == 8);
    CHECK(json_get(d, "missing") == NULL);
    CHECK(json_get(v, "dae") == NULL);
    const struct json *a = json_get(v, "accounts");
    CHECK(a != NULL && a->type == JSON_ARRAY && a->count == 1);
    if (a != NULL && a->count == 1) {
      const struct json *acc = &a->items[0];
      CHECK(json_get(a, "name") == NULL); /* not an object */
      CHECK_STR(json_get_str(acc, "name"), "work");
      CHECK(json_get(acc, "last_run") != NULL && json_get(acc, "last_run")->type == JSON_NULL);
      CHECK(json_get_str(acc, "last_run") == NULL);
      CHECK(json_get_num(acc, "bytes", 0) == 12345);
      CHECK(json_get(acc, "auth_failed")->type == JSON_BOOL);
      CHECK(json_get(acc, "auth_failed")->boolean == 0);
      CHECK(json_get(acc, "ok")->boolean == 1);
      CHECK(json_get_num(acc, "f", 0) == -1500);
      CHECK(json_get_num(acc, "z", 1) == 0);
      CHECK(json_get_num(acc, "e", 0) == 200);
      CHECK(json_get_num(acc, "g", 0) == 0.025);
    }
    CHECK(json_get(v, "empty")->type == JSON_OBJECT && json_get(v, "empty")->count == 0);
    CHECK(json_get(v, "none")->type == JSON_ARRAY && json_get(v, "none")->count == 0);
    CHECK(json_get_num(v, "exit", -1) == 0);
  }
  json_free(v);
  json_free(NULL);
  CHECK(json_get(NULL, "x") == NULL);

  /* Scalars at the top. */
  v = parse_ok("42");
  CHECK(v != NULL && v->type == JSON_NUMBER && v->number == 42);
  json_free(v);
  v = parse_ok(" null ");
  CHECK(v != NULL && v->type == JSON_NULL);
  json_free(v);
  v = parse_ok("\"\"");
  CHECK(v != NULL && v->type == JSON_STRING && v->string[0] == '\0');
  json_free(v);

  /* Duplicate keys: the first wins. */
  v = parse_ok("{\"a\":1,\"a\":2}");
  CHECK(json_get_num(v, "a", 0) == 1);
  json_free(v);

  /* The text need not be NUL-terminated: only len bytes are read. */
  struct json *w = NULL;
  CHECK_INT(json_parse("[12]345", 4, &w), 0);
  CHECK(w != NULL && w->count == 1 && w->items[0].number == 12);
  json_free(w);
  w = NULL;
  CHECK_INT(json_parse("123456", 3, &w), 0);
  CHECK(w != NULL && w->number == 123);
  json_free(w);
  w = NULL;
  CHECK_INT(json_parse("\"ab\"", 3, &w), -EINVAL);
  CHECK_INT(json_parse("tru", 3, &w), -EINVAL);
  CHECK_INT(json_parse("", 0, &w), -EINVAL);
}

static void test_parse_strings(void) {
  struct json *v;
  v = parse_ok("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"");
  if (v != NULL)
    CHECK_STR(v->string, "a\"b\\c/d\b\f\n\r\t");
  json_free(v);
  /* \u escapes to UTF-8: 1, 2, 3 bytes, upper and lower case hex. */
  v = parse_ok("\"\\u0041\\u00e9\\u00E9\\u20ac\\uFFFF\"");
  if (v != NULL)
    CHECK_STR(v->string, "A\xc3\xa9\xc3\xa9\xe2\x82\xac\xef\xbf\xbf");
  json_free(v);
  /* Surrogate pairs to 4 bytes: U+1F600, U+10000, U+10FFFF. */
  v = parse_ok("\"\\ud83d\\ude00 \\uD800\\uDC00 \\uDBFF\\uDFFF\"");
  if (v != NULL)
    CHECK_STR(v->string, "\xf0\x9f\x98\x80 \xf0\x90\x80\x80 \xf4\x8f\xbf\xbf");
  json_free(v);
  /* Raw UTF-8 is kept. */
  v = parse_ok("\"caf\xc3\xa9 \xf0\x9f\x98\x80\"");
  if (v != NULL)
    CHECK_STR(v->string, "caf\xc3\xa9 \xf0\x9f\x98\x80");
  json_free(v);
  /* Escaped keys are decoded before lookup. */
  v = parse_ok("{\"n\\u0061me\":\"x\"}");
  CHECK_STR(json_get_str(v, "name"), "x");
  json_free(v);

  CHECK_INT(parse_err("\"abc"), -EINVAL);     /* unterminated */
  CHECK_INT(parse_err("\"abc\\"), -EINVAL);   /* ends in a backslash */
  CHECK_INT(parse_err("\"abc\\\""), -EINVAL); /* the quote is escaped */
  CHECK_INT(parse_err("\"\\x\""), -EINVAL);   /* unknown escape */
  CHECK_INT(parse_err("\"\\'\""), -EINVAL);
  CHECK_INT(parse_err("\"\\u12\""), -EINVAL);   /* short \u */
  CHECK_INT(parse_err("\"\\u12G4\""), -EINVAL); /* not hex */
  CHECK_INT(parse_err("\"\\ud83d\""), -EINVAL); /* lone high surrogate */
  CHECK_INT(parse_err("\"\\ud83dx\""), -EINVAL);
  CHECK_INT(parse_err("\"\\ud83d\\u0041\""), -EINVAL); /* high + non-low */
  CHECK_INT(parse_err("\"\\ud83d\\ud83d\""), -EINVAL);
  CHECK_INT(parse_err("\"\\ude00\""), -EINVAL); /* lone low surrogate */
  CHECK_INT(parse_err("\"a\nb\""), -EINVAL);    /* raw control */
  CHECK_INT(parse_err("\"a\tb\""), -EINVAL);
  CHECK_INT(parse_err("\"caf\xe9\""), -EINVAL);      /* not UTF-8 */
  CHECK_INT(parse_err("\"\xc0\xaf\""), -EINVAL);     /* overlong */
  CHECK_INT(parse_err("\"\xed\xa0\x80\""), -EINVAL); /* encoded surrogate */
  CHECK_INT(parse_err("\"\xe2\x82\""), -EINVAL);     /* truncated before the quote */
  CHECK_INT(parse_err("'single'"), -EINVAL);
}

static void test_parse_numbers(void) {
  struct json *v;
  v = parse_ok("[0, -0.5, 1e2, 1E-2, 123456789012, 18446744073709551615, 1e999]");
  if (v != NULL && v->count == 7) {
    CHECK(v->items[0].number == 0);
    CHECK(v->items[1].number == -0.5);
    CHECK(v->items[2].number == 100);
    CHECK(v->items[3].number == 0.01);
    CHECK(v->items[4].number == 123456789012.0);
    CHECK(v->items[5].number == 18446744073709551615.0);
    CHECK(v->items[6].number > 1e308); /* overflow: HUGE_VAL */
  } else
    CHECK(0);
  json_free(v);
  /* RFC 8259: no leading zeros, no '+', no bare '.', digits after '.' and 'e'. */
  CHECK_INT(parse_err("01"), -EINVAL);
  CHECK_INT(parse_err("-01"), -EINVAL);
  CHECK_INT(parse_err("00"), -EINVAL);
  CHECK_INT(parse_err("+1"), -EINVAL);
  CHECK_INT(parse_err(".5"), -EINVAL);
  CHECK_INT(parse_err("1."), -EINVAL);
  CHECK_INT(parse_err("1.e3"), -EINVAL);
  CHECK_INT(parse_err("1e"), -EINVAL);
  CHECK_INT(parse_err("1e+"), -EINVAL);
  CHECK_INT(parse_err("-"), -EINVAL);
  CHECK_INT(parse_err("0x10"), -EINVAL);
  CHECK_INT(parse_err("Infinity"), -EINVAL);
  CHECK_INT(parse_err("NaN"), -EINVAL);
  CHECK_INT(parse_err("inf"), -EINVAL);
  CHECK_INT(parse_err("[1,]"), -EINVAL);
  /* Over the bounded copy. */
  char big[200];
  memset(big, '1', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  CHECK_INT(parse_err(big), -EINVAL);
  big[128] = '\0';
  v = parse_ok(big);
  json_free(v);
}

static void test_parse_errors(void) {
  CHECK_INT(parse_err(""), -EINVAL);
  CHECK_INT(parse_err("   "), -EINVAL);
  CHECK_INT(parse_err("{} x"), -EINVAL); /* trailing garbage */
  CHECK_INT(parse_err("{}{}"), -EINVAL);
  CHECK_INT(parse_err("1 2"), -EINVAL);
  CHECK_INT(parse_err("{\"a\":1"), -EINVAL); /* unterminated */
  CHECK_INT(parse_err("{\"a\":"), -EINVAL);
  CHECK_INT(parse_err("{\"a\""), -EINVAL);
  CHECK_INT(parse_err("{\"a"), -EINVAL);
  CHECK_INT(parse_err("["), -EINVAL);
  CHECK_INT(parse_err("[1,"), -EINVAL);
  CHECK_INT(parse_err("[1 2]"), -EINVAL);
  CHECK_INT(parse_err("{\"a\" 1}"), -EINVAL);
  CHECK_INT(parse_err("{a:1}"), -EINVAL);
  CHECK_INT(parse_err("{\"a\":1,}"), -EINVAL);
  CHECK_INT(parse_err("{,}"), -EINVAL);
  CHECK_INT(parse_err("[}"), -EINVAL);
  CHECK_INT(parse_err("{]"), -EINVAL);
  CHECK_INT(parse_err("tru"), -EINVAL);
  CHECK_INT(parse_err("truex"), -EINVAL);
  CHECK_INT(parse_err("nul"), -EINVAL);
  CHECK_INT(parse_err("True"), -EINVAL);
  CHECK_INT(parse_err("[1]\v"), -EINVAL); /* \v is not JSON white space */
  CHECK_INT(parse_err("/* c */ 1"), -EINVAL);
  CHECK_INT(parse_err("{\"a\":[1,{\"b\":\"\\q\"}]}"), -EINVAL); /* nested error, freed */
  struct json *v = NULL;
  CHECK_INT(json_parse("[1]\0", 4, &v), -EINVAL); /* a NUL is garbage too */
}

static void test_parse_depth(void) {
  char buf[512];
  struct json *v;
  /* 64 levels are fine, 65 are not; the same for objects. */
  for (int depth = 63; depth <= 66; depth++) {
    size_t n = 0;
    for (int i = 0; i < depth; i++)
      buf[n++] = '[';
    for (int i = 0; i < depth; i++)
      buf[n++] = ']';
    v = NULL;
    int err = json_parse(buf, n, &v);
    CHECK_INT(err, depth <= 64 ? 0 : -EINVAL);
    json_free(v);
  }
  for (int depth = 64; depth <= 65; depth++) {
    size_t n = 0;
    for (int i = 0; i < depth; i++) {
      memcpy(buf + n, "{\"a\":", 5);
      n += 5;
    }
    buf[n++] = '1';
    for (int i = 0; i < depth; i++)
      buf[n++] = '}';
    v = NULL;
    int err = json_parse(buf, n, &v);
    CHECK_INT(err, depth <= 64 ? 0 : -EINVAL);
    json_free(v);
  }
  /* Depth is nesting, not the number of containers: many siblings are fine. */
  size_t n = 0;
  buf[n++] = '[';
  for (int i = 0; i < 90; i++) {
    memcpy(buf + n, "[],", 3);
    n += 3;
  }
  buf[n - 1] = ']';
  v = NULL;
  CHECK_INT(json_parse(buf, n, &v), 0);
  CHECK(v != NULL && v->count == 90);
  json_free(v);
  /* A deep bomb is refused cheaply. */
  static char bomb[100000];
  memset(bomb, '[', sizeof bomb);
  v = NULL;
  CHECK_INT(json_parse(bomb, sizeof bomb, &v), -EINVAL);
}

/* A document written by the writer parses back to the same values. */
static void test_round_trip(void) {
  struct jbuf b;
  jbuf_init(&b);
  jbuf_obj_begin(&b);
  jbuf_key(&b, "results");
  jbuf_arr_begin(&b);
  for (int i = 0; i < 3; i++) {
    jbuf_obj_begin(&b);
    jbuf_key(&b, "name");
    jbuf_str(&b, i == 0 ? "work" : i == 1 ? "home" : "caf\xe9\n");
    jbuf_key(&b, "result");
    jbuf_str(&b, i == 2 ? "error" : "ok");
    jbuf_key(&b, "error");
    jbuf_str(&b, i == 2 ? "-ERR [IN-USE] \"busy\"" : NULL);
    jbuf_key(&b, "messages");
    jbuf_uint(&b, (uint64_t)i * 1000);
    jbuf_key(&b, "bytes");
    jbuf_uint(&b, 9007199254740992ull); /* 2^53: exact in a double */
    jbuf_key(&b, "when");
    jbuf_time(&b, 1795873061);
    jbuf_obj_end(&b);
  }
  jbuf_arr_end(&b);
  jbuf_key(&b, "exit");
  jbuf_int(&b, 75);
  jbuf_obj_end(&b);
  CHECK_INT(b.err, 0);

  struct json *v = parse_ok(b.data);
  const struct json *r = json_get(v, "results");
  CHECK(r != NULL && r->type == JSON_ARRAY && r->count == 3);
  if (r != NULL && r->count == 3) {
    CHECK_STR(json_get_str(&r->items[0], "name"), "work");
    CHECK(json_get(&r->items[0], "error")->type == JSON_NULL);
    CHECK_STR(json_get_str(&r->items[2], "name"), "caf\xc3\xa9\n"); /* Latin-1 byte as U+00E9 */
    CHECK_STR(json_get_str(&r->items[2], "error"), "-ERR [IN-USE] \"busy\"");
    CHECK(json_get_num(&r->items[2], "messages", 0) == 2000);
    CHECK(json_get_num(&r->items[1], "bytes", 0) == 9007199254740992.0);
    CHECK_STR(json_get_str(&r->items[1], "when"), "2026-11-28T13:37:41Z");
  }
  CHECK(json_get_num(v, "exit", 0) == 75);
  json_free(v);
  jbuf_free(&b);
}

int main(void) {
  test_writer_structure();
  test_writer_grows();
  test_writer_escaping();
  test_writer_time();
  test_parse_values();
  test_parse_strings();
  test_parse_numbers();
  test_parse_errors();
  test_parse_depth();
  test_round_trip();
  return check_result("test_json");
}

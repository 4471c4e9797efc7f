#include "config.h"

#include "human.h"

#include <errno.h>
#include <stdint.h>

#include "check.h"

static void test_bytes(void) {
  char b[32];
  CHECK_STR(human_bytes(0, b, sizeof b), "0 B");
  CHECK_STR(human_bytes(1023, b, sizeof b), "1023 B");
  CHECK_STR(human_bytes(1024, b, sizeof b), "1.0 KiB");
  CHECK_STR(human_bytes(12390, b, sizeof b), "12.1 KiB");
  CHECK_STR(human_bytes(1024 * 1024 - 1, b, sizeof b), "1.0 MiB");
  CHECK_STR(human_bytes(12687769, b, sizeof b), "12.1 MiB");
  CHECK_STR(human_bytes(48ull << 20, b, sizeof b), "48.0 MiB");
  CHECK_STR(human_bytes(3ull << 29, b, sizeof b), "1.5 GiB");
  CHECK_STR(human_bytes(5000ull << 30, b, sizeof b), "5000.0 GiB");
  CHECK_STR(human_bytes(UINT64_MAX, b, sizeof b), "17179869184.0 GiB");
  char small[6];
  CHECK_STR(human_bytes(48ull << 20, small, sizeof small), "48.0 ");
  CHECK_STR(human_bytes(1, b, 0), b); /* len 0: untouched, no crash */
}

static void test_duration(void) {
  char b[32];
  CHECK_STR(human_duration(0, b, sizeof b), "0.0 s");
  CHECK_STR(human_duration(400, b, sizeof b), "0.4 s");
  CHECK_STR(human_duration(9940, b, sizeof b), "9.9 s");
  CHECK_STR(human_duration(9960, b, sizeof b), "10 s");
  CHECK_STR(human_duration(12000, b, sizeof b), "12 s");
  CHECK_STR(human_duration(240000, b, sizeof b), "4 min");
  CHECK_STR(human_duration(250000, b, sizeof b), "4 min 10 s");
  CHECK_STR(human_duration(840000, b, sizeof b), "14 min");
  CHECK_STR(human_duration(7200000, b, sizeof b), "2 h");
  CHECK_STR(human_duration(7500000, b, sizeof b), "2 h 5 min");
  CHECK_STR(human_duration(7201000, b, sizeof b), "2 h"); /* seconds beyond two units dropped */
  CHECK_STR(human_duration((3 * 86400 + 4 * 3600) * 1000ull, b, sizeof b), "3 d 4 h");
}

static void test_parse_size(void) {
  uint64_t v = 7;
  CHECK_INT(human_parse_size("1", &v), 0);
  CHECK_INT(v, 1);
  CHECK_INT(human_parse_size("1500", &v), 0);
  CHECK_INT(v, 1500);
  CHECK_INT(human_parse_size("10M", &v), 0);
  CHECK_INT(v, 10ull << 20);
  CHECK_INT(human_parse_size("10m", &v), 0);
  CHECK_INT(v, 10ull << 20);
  CHECK_INT(human_parse_size("10MiB", &v), 0);
  CHECK_INT(v, 10ull << 20);
  CHECK_INT(human_parse_size("64K", &v), 0);
  CHECK_INT(v, 64ull << 10);
  CHECK_INT(human_parse_size("64k", &v), 0);
  CHECK_INT(v, 64ull << 10);
  CHECK_INT(human_parse_size("64KiB", &v), 0);
  CHECK_INT(v, 64ull << 10);
  CHECK_INT(human_parse_size("2G", &v), 0);
  CHECK_INT(v, 2ull << 30);
  CHECK_INT(human_parse_size("2g", &v), 0);
  CHECK_INT(v, 2ull << 30);
  CHECK_INT(human_parse_size("2GiB", &v), 0);
  CHECK_INT(v, 2ull << 30);
  CHECK_INT(human_parse_size("007", &v), 0);
  CHECK_INT(v, 7);
  CHECK_INT(human_parse_size("18446744073709551615", &v), 0);
  CHECK(v == UINT64_MAX);
  CHECK_INT(human_parse_size("17179869183G", &v), 0);
  CHECK(v == 17179869183ull << 30);
  v = 7;
  const char *bad[] = {"",    "0",    "0M",  "-1",   "+1",   "1.5M", " 1",   "1 M",
                       "1M ", "M",    "1T",  "1kB",  "1KB",  "1Mi",  "1mib", "1b",
                       "1B",  "0x10", "1e3", "10MM", "1Gib", "abc"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (human_parse_size(bad[i], &v) != -EINVAL)
      fprintf(stderr, "human_parse_size(\"%s\") accepted\n", bad[i]);
    CHECK_INT(human_parse_size(bad[i], &v), -EINVAL);
  }
  CHECK_INT(v, 7); /* untouched by a failure */
  CHECK_INT(human_parse_size(NULL, &v), -EINVAL);
  CHECK_INT(human_parse_size("18446744073709551616", &v), -ERANGE);
  CHECK_INT(human_parse_size("99999999999999999999999K", &v), -ERANGE);
  CHECK_INT(human_parse_size("17179869184G", &v), -ERANGE);
  CHECK_INT(human_parse_size("18014398509481984K", &v), -ERANGE);
  CHECK_INT(human_parse_size("99999999999999999999999x", &v), -EINVAL);
  CHECK_INT(v, 7);
}

static void test_size_limit(void) {
  char b[32];
  CHECK_STR(human_size_limit(10ull << 20, b, sizeof b), "10 MiB");
  CHECK_STR(human_size_limit(1536ull << 20, b, sizeof b), "1536 MiB");
  CHECK_STR(human_size_limit(2ull << 30, b, sizeof b), "2 GiB");
  CHECK_STR(human_size_limit(64ull << 10, b, sizeof b), "64 KiB");
  CHECK_STR(human_size_limit(1024, b, sizeof b), "1 KiB");
  CHECK_STR(human_size_limit(1000, b, sizeof b), "1000 B");
  CHECK_STR(human_size_limit(1, b, sizeof b), "1 B");
  CHECK_STR(human_size_limit(1500, b, sizeof b), "1.5 KiB");
  CHECK_STR(human_size_limit(0, b, sizeof b), "0 B");
}

int main(void) {
  test_bytes();
  test_duration();
  test_parse_size();
  test_size_limit();
  return check_result("test_human");
}

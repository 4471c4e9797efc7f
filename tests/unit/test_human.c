#include "config.h"

#include "human.h"

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

int main(void) {
  test_bytes();
  test_duration();
  return check_result("test_human");
}

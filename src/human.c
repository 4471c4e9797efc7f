#include "config.h"

#include "human.h"

#include <inttypes.h>
#include <stdio.h>

char *human_bytes(uint64_t b, char *buf, size_t len) {
  static const char *const unit[] = {"KiB", "MiB", "GiB"};
  if (len == 0)
    return buf;
  if (b < 1024) {
    snprintf(buf, len, "%" PRIu64 " B", b);
    return buf;
  }
  double v = (double)b / 1024;
  int u = 0;
  /* 1023.96 KiB would print as "1024.0 KiB": move up before rounding does. */
  while (u < 2 && v >= 1023.95) {
    v /= 1024;
    u++;
  }
  snprintf(buf, len, "%.1f %s", v, unit[u]);
  return buf;
}

char *human_duration(uint64_t ms, char *buf, size_t len) {
  static const struct {
    uint64_t s;
    const char *name;
  } unit[] = {{86400, "d"}, {3600, "h"}, {60, "min"}, {1, "s"}};
  if (len == 0)
    return buf;
  if (ms < 9950) {
    snprintf(buf, len, "%.1f s", (double)ms / 1000);
    return buf;
  }
  uint64_t s = (ms + 500) / 1000;
  for (size_t i = 0; i < sizeof unit / sizeof unit[0]; i++) {
    if (s < unit[i].s)
      continue;
    uint64_t major = s / unit[i].s, rest = s % unit[i].s;
    if (i + 1 < sizeof unit / sizeof unit[0] && rest / unit[i + 1].s > 0)
      snprintf(buf, len, "%" PRIu64 " %s %" PRIu64 " %s", major, unit[i].name, rest / unit[i + 1].s,
               unit[i + 1].name);
    else
      snprintf(buf, len, "%" PRIu64 " %s", major, unit[i].name);
    return buf;
  }
  snprintf(buf, len, "0 s"); /* not reached: s >= 10 */
  return buf;
}

#include "config.h"

#include "human.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

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

int human_parse_size(const char *s, uint64_t *bytes_r) {
  static const struct {
    const char *name;
    unsigned shift;
  } suffix[] = {{"", 0},   {"K", 10},   {"k", 10}, {"KiB", 10}, {"M", 20},
                {"m", 20}, {"MiB", 20}, {"G", 30}, {"g", 30},   {"GiB", 30}};
  uint64_t v = 0;
  const char *p = s;
  if (s == NULL || *p < '0' || *p > '9')
    return -EINVAL;
  for (; *p >= '0' && *p <= '9'; p++) {
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10) {
      /* Too many digits: still a number, but not one we can hold. */
      while (*p >= '0' && *p <= '9')
        p++;
      for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++)
        if (strcmp(p, suffix[i].name) == 0)
          return -ERANGE;
      return -EINVAL;
    }
    v = v * 10 + d;
  }
  for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
    if (strcmp(p, suffix[i].name) != 0)
      continue;
    if (v == 0)
      return -EINVAL;
    if (v > UINT64_MAX >> suffix[i].shift)
      return -ERANGE;
    *bytes_r = v << suffix[i].shift;
    return 0;
  }
  return -EINVAL;
}

char *human_size_limit(uint64_t b, char *buf, size_t len) {
  static const struct {
    unsigned shift;
    const char *name;
  } unit[] = {{30, "GiB"}, {20, "MiB"}, {10, "KiB"}};
  if (len == 0)
    return buf;
  for (size_t i = 0; i < sizeof unit / sizeof unit[0]; i++) {
    if (b != 0 && b % ((uint64_t)1 << unit[i].shift) == 0) {
      snprintf(buf, len, "%" PRIu64 " %s", b >> unit[i].shift, unit[i].name);
      return buf;
    }
  }
  return human_bytes(b, buf, len);
}

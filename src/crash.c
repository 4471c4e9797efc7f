#include "config.h"

#include "crash.h"

#ifdef P3_CRASH_POINTS
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Several thread-pool workers may pass points at once. */
static atomic_long crash_hits;

void crash_point(const char *name) {
  const char *spec = getenv("POP3SYNC_CRASH_AT");
  size_t n = strlen(name);
  if (spec == NULL || strncmp(spec, name, n) != 0 || spec[n] != ':')
    return;
  long want = strtol(spec + n + 1, NULL, 10);
  if (atomic_fetch_add(&crash_hits, 1) + 1 == want)
    raise(SIGKILL);
}
#endif

/* libFuzzer target for `pop3 info's conversation (probe.h): hostile server
 * bytes, fed at split points the input itself chooses.
 *
 * The first byte picks STLS or not and a chunk size; the rest is the
 * server's side.  Whatever comes, probe_feed must use what it is given,
 * only ever ask to send CAPA, STLS or QUIT, and keep every text it shows
 * printable ASCII (nothing a terminal would act on).
 *
 * Build with clang -fsanitize=fuzzer,address; with -DP3_FUZZ_MAIN it is a
 * plain program that runs each file named on its command line once. */
#include "config.h"

#include "probe.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct probe p;

static void check_text(const char *t) {
  for (; *t != '\0'; t++)
    if ((unsigned char)*t < 0x20 || (unsigned char)*t > 0x7e)
      abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char methods[1024];
  size_t chunk, off = 1, events = 0;

  if (size < 1)
    return 0;
  probe_init(&p, data[0] & 1);
  chunk = 1 + (data[0] >> 1);
  while (off < size && events < 10000) {
    size_t len = size - off < chunk ? size - off : chunk, used = 0;
    int ev = probe_feed(&p, (const char *)data + off, len, &used);
    if (used > len)
      abort();
    off += used;
    events++;
    if (ev < 0 || ev == PROBE_DONE)
      break;
    if (ev == PROBE_SEND) {
      const char *c = probe_command(&p);
      if (strcmp(c, "CAPA\r\n") != 0 && strcmp(c, "STLS\r\n") != 0 && strcmp(c, "QUIT\r\n") != 0)
        abort();
    } else if (ev == PROBE_START_TLS) {
      if (probe_tls_ready(&p) == PROBE_SEND && strcmp(probe_command(&p), "CAPA\r\n") != 0)
        abort();
    } else if (ev == PROBE_NEED_MORE && used != len) {
      abort(); /* NEED_MORE means every byte was used */
    }
  }
  check_text(p.greeting);
  check_text(p.before.text);
  check_text(p.after.text);
  check_text(p.stls_refused);
  probe_login_methods(&p, methods, sizeof methods);
  check_text(methods);
  return 0;
}

#ifdef P3_FUZZ_MAIN
int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    FILE *f = fopen(argv[i], "rb");
    if (f == NULL)
      continue;
    static uint8_t buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
  }
  return 0;
}
#endif

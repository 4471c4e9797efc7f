/* libFuzzer target for the per-server memory's codec (srvmem.h).
 *
 * Parses the input; whatever is accepted must format, and the formatted
 * text must parse back to the same memory and format to the same bytes
 * (what the parser lets in, the writer can write).  No file is touched.
 *
 * Build with clang -fsanitize=fuzzer,address; with -DP3_FUZZ_MAIN it is a
 * plain program that runs each file named on its command line once. */
#include "config.h"

#include "srvmem.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct srvmem a, b;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *t1, *t2;
  size_t l1, l2;

  if (srvmem_parse((const char *)data, size, &a) != 0)
    return 0;
  if (srvmem_format(&a, &t1, &l1) != 0)
    abort();
  if (srvmem_parse(t1, l1, &b) != 0)
    abort();
  if (strcmp(a.server, b.server) != 0 || a.saved != b.saved ||
      strcmp(a.capa_pre, b.capa_pre) != 0 || strcmp(a.capa_post, b.capa_post) != 0 ||
      a.pipelining != b.pipelining || a.greeting_apop != b.greeting_apop ||
      a.early_flight != b.early_flight || a.flight_listing != b.flight_listing ||
      a.has_tls != b.has_tls || a.tls_len != b.tls_len ||
      memcmp(a.tls_session, b.tls_session, a.tls_len) != 0 ||
      (a.has_tls && (memcmp(a.tls_key, b.tls_key, 32) != 0 || a.tls_expires != b.tls_expires)))
    abort();
  if (srvmem_format(&b, &t2, &l2) != 0 || l1 != l2 || memcmp(t1, t2, l1) != 0)
    abort();
  free(t1);
  free(t2);
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

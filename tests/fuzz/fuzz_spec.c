/* libFuzzer target: connection specs.  spec_parse on the input (as a C
 * string); a spec that parses must format (spec_format, spec_identity),
 * and its canonical form must parse back to the same target: mode, user,
 * tcp_host, port, and the TLS name (DNS names compare without regard to
 * case).  The one exception is documented in tests/unit/test_spec.c: a
 * name connected to by its IP address (`host![ip]', tls_name "" while
 * tcp_host is a name) cannot be written back without the address. */
#include "config.h"

#include "spec.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Big enough for any spec spec_parse accepts: prefix, user, two hosts in
 * brackets, port. */
#define FMT_MAX (16 + P3_USER_MAX + 2 * (P3_HOST_MAX + 2) + 8)

static void check_strings(const struct p3_spec *s) {
  if (memchr(s->user, '\0', sizeof(s->user)) == NULL ||
      memchr(s->tcp_host, '\0', sizeof(s->tcp_host)) == NULL ||
      memchr(s->tls_name, '\0', sizeof(s->tls_name)) == NULL)
    abort();
  if (s->tcp_host[0] == '\0' || s->port < 1 || s->port > 65535)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct p3_spec s, s2;
  char *text, err[256], err2[256], fmt[FMT_MAX], id[FMT_MAX];
  int n;

  text = malloc(size + 1);
  if (text == NULL)
    return 0;
  if (size > 0)
    memcpy(text, data, size);
  text[size] = '\0';

  if (spec_parse(text, &s, err, sizeof(err)) != 0) {
    if (err[0] == '\0' || memchr(err, '\0', sizeof(err)) == NULL)
      abort(); /* a failure always says why */
    free(text);
    return 0;
  }
  check_strings(&s);

  n = spec_identity(&s, id, sizeof(id));
  if (n <= 0 || (size_t)n != strlen(id))
    abort();
  n = spec_format(&s, fmt, sizeof(fmt));
  if (n <= 0 || (size_t)n != strlen(fmt))
    abort();

  /* A buffer one byte short must be refused, not overrun. */
  {
    char *tight = malloc((size_t)n);
    if (tight == NULL)
      abort();
    if (spec_format(&s, tight, (size_t)n) >= 0)
      abort();
    free(tight);
  }

  if (s.tls_name[0] == '\0' && !spec_host_is_ip(s.tcp_host)) {
    free(text);
    return 0; /* host![ip]: see the comment at the top */
  }
  if (spec_parse(fmt, &s2, err2, sizeof(err2)) != 0) {
    fprintf(stderr, "spec `%s' formats as `%s', which does not parse: %s\n", text, fmt, err2);
    abort();
  }
  if (s2.mode != s.mode || strcmp(s2.user, s.user) != 0 || strcmp(s2.tcp_host, s.tcp_host) != 0 ||
      strcasecmp(s2.tls_name, s.tls_name) != 0 || s2.port != s.port) {
    fprintf(stderr,
            "spec `%s' formats as `%s', which parses to another target:\n"
            "  mode %d/%d user `%s'/`%s' tcp_host `%s'/`%s' tls_name `%s'/`%s' port %u/%u\n",
            text, fmt, (int)s.mode, (int)s2.mode, s.user, s2.user, s.tcp_host, s2.tcp_host,
            s.tls_name, s2.tls_name, s.port, s2.port);
    abort();
  }
  n = spec_identity(&s2, fmt, sizeof(fmt));
  if (n <= 0 || strcmp(fmt, id) != 0)
    abort(); /* the same target has the same identity (netrc, state files) */

  free(text);
  return 0;
}

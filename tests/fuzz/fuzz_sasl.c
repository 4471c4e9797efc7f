/* libFuzzer target: the SASL "+ " challenge parser over the whole input
 * taken as one server line, the OAuth error description of whatever it
 * decodes, and the APOP timestamp finder over the same line.  Beyond
 * ASan/UBSan it checks that a decoded challenge survives a base64 round
 * trip, that descriptions are printable and NUL-terminated, and that a
 * timestamp lies inside the line and is well-formed. */
#include "config.h"

#include "errors.h"
#include "sasl.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_printable(const char *s, size_t cap) {
  size_t n = strnlen(s, cap);
  if (n == cap)
    abort(); /* not terminated */
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
      abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* A copy of exactly size bytes: any read past the line is an ASan report. */
  char *line = malloc(size > 0 ? size : 1);
  char *dec = NULL, *enc = NULL, *back = NULL;
  size_t declen, enclen, backlen;
  if (line == NULL)
    return 0;
  if (size > 0)
    memcpy(line, data, size);

  int r = sasl_parse_challenge(line, size, &dec, &declen);
  if (r != 1 && r != 0 && r != P3_EPROTO && r != -ENOMEM)
    abort();
  if ((r == 1) != (dec != NULL))
    abort();
  if (r == 1) {
    if (dec[declen] != '\0' || size == 0 || line[0] != '+')
      abort();
    /* Three octets per quad at most. */
    if (declen > size / 4 * 3)
      abort();
    if (sasl_b64_encode(dec, declen, &enc, &enclen) == 0) {
      if (sasl_b64_decode(enc, enclen, &back, &backlen) != 0 || backlen != declen ||
          memcmp(back, dec, declen) != 0)
        abort();
    }
    char small[7], big[160];
    sasl_oauth_error(dec, declen, small, sizeof small);
    check_printable(small, sizeof small);
    sasl_oauth_error(dec, declen, big, sizeof big);
    check_printable(big, sizeof big);
  } else if (r == 0 && size >= 2 && line[0] == '+' && line[1] == ' ') {
    abort(); /* "+ " always starts a continuation */
  }

  const char *ts;
  size_t tslen;
  if (sasl_apop_timestamp(line, size, &ts, &tslen)) {
    if (ts < line || tslen < 3 || tslen > SASL_APOP_TS_MAX || (size_t)(ts - line) > size - tslen ||
        ts[0] != '<' || ts[tslen - 1] != '>' || memchr(ts, '@', tslen) == NULL)
      abort();
    char hex[33];
    if (sasl_apop_digest(ts, tslen, "secret", hex) != 0 || strlen(hex) != 32)
      abort();
  }

  free(dec);
  free(enc);
  free(back);
  free(line);
  return 0;
}

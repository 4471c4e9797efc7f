/* libFuzzer target: the POP3 single-line parsers (status, CAPA, LIST, UIDL,
 * RETR octets) over the whole input taken as one line.  Beyond ASan/UBSan,
 * it checks that every pointer a parser hands back stays inside the line. */
#include "config.h"

#include "proto.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int inside(const char *p, size_t plen, const char *line, size_t len) {
  return p >= line && plen <= len && (size_t)(p - line) <= len - plen;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* A copy of exactly size bytes: any read past the line is an ASan report. */
  char *line = malloc(size > 0 ? size : 1);
  struct p3_status st;
  struct p3_caps caps;
  unsigned long num;
  uint64_t octets;
  const char *uid;
  size_t uidlen;

  if (line == NULL)
    return 0;
  if (size > 0)
    memcpy(line, data, size);

  if (proto_parse_status(line, size, &st) == 0) {
    if (!inside(st.text, st.text_len, line, size))
      abort();
    if (st.ok != 0 && st.ok != 1)
      abort();
    if (st.code != P3_RC_NONE && st.code != P3_RC_OTHER && proto_resp_code_name(st.code) == NULL)
      abort();
    if (proto_retr_octets(st.text, st.text_len, &octets) != 0 && st.text_len == 0)
      abort();
  }

  proto_caps_init(&caps);
  proto_caps_line(&caps, line, size);
  if (caps.expire_zero && caps.expire_days != 0)
    abort();

  if (proto_parse_list_line(line, size, &num, &octets) == 0 && num == 0)
    abort();

  if (proto_parse_uidl_line(line, size, &num, &uid, &uidlen) == 0) {
    if (num == 0 || uidlen == 0 || uidlen > P3_UID_MAX || !inside(uid, uidlen, line, size))
      abort();
    for (size_t i = 0; i < uidlen; i++)
      if ((unsigned char)uid[i] < 0x21 || (unsigned char)uid[i] > 0x7e)
        abort();
  }

  (void)proto_retr_octets(line, size, &octets);
  free(line);
  return 0;
}

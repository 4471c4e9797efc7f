/* Numbers for people: sizes in binary units and spans of time, as the
 * daemon's log, pop3ctl's table and its watch lines print them.  Pure. */
#ifndef P3_HUMAN_H
#define P3_HUMAN_H

#include <stddef.h>
#include <stdint.h>

/* "512 B", "12.1 KiB", "48.0 MiB", "1.5 GiB": bytes below 1 KiB as they are,
 * else one decimal in the largest unit that keeps the number at 1 or more
 * (GiB at most).  buf holds at least 16 bytes to be sure of the whole text;
 * it is always NUL-terminated when len > 0.  Returns buf. */
char *human_bytes(uint64_t bytes, char *buf, size_t len);

/* A duration: "0.4 s", "12 s", "4 min", "4 min 10 s", "2 h", "2 h 5 min",
 * "3 d 4 h": tenths below 10 s, then at most the two largest units.
 * Returns buf. */
char *human_duration(uint64_t ms, char *buf, size_t len);

/* A size limit as people write it (--max-size, max_size): a positive
 * decimal integer, optionally followed by K, M or G (also k, m, g, KiB, MiB,
 * GiB): powers of 1024; a plain number is bytes.  No sign, no spaces, no
 * fractions.  Returns 0 with *bytes_r set, -EINVAL for anything else (0
 * included), -ERANGE when the value does not fit in 64 bits. */
int human_parse_size(const char *s, uint64_t *bytes_r);

/* A size limit back as text: "10 MiB" when it is a whole number of KiB, MiB
 * or GiB (the largest such unit), "512 B" below 1 KiB, else as
 * human_bytes() writes it.  Returns buf. */
char *human_size_limit(uint64_t bytes, char *buf, size_t len);

#endif

/* A message's content identity for keep mode: SHA-256 over its header
 * block with the fields that servers rewrite on their own removed.
 *
 * Some servers change a kept message between sessions (GNU Mailutils adds
 * Status, X-UID and X-IMAPbase at QUIT and serves a per-session X-UIDL), so
 * its LIST size grows while its UID stays.  The digest stays the same: it
 * covers every header line except the fields Status, X-Status, X-UID,
 * X-IMAPbase, X-IMAP, X-UIDL, X-Keywords and Content-Length (names compared
 * case-insensitively, continuation lines belong to their field), each line
 * ending in LF whether the input used CRLF or LF, up to and excluding the
 * empty line that ends the header (or the end of the input when there is
 * none).  The same digest results from a whole message (RETR) and from its
 * header alone (TOP n 0).
 *
 * Pure: bytes in, 32 bytes out; no I/O.  Feed in chunks of any size. */
#ifndef P3_HDRDIGEST_H
#define P3_HDRDIGEST_H

#include <stddef.h>
#include <stdint.h>

#define HDRDIGEST_LEN 32

struct hdrdigest;

/* A new digest, or NULL when out of memory.  Free with hdrdigest_free. */
struct hdrdigest *hdrdigest_new(void);
void hdrdigest_free(struct hdrdigest *h);

/* Feeds message bytes (a RETR body or a TOP n 0 reply, dot-unstuffed).
 * Bytes after the end of the header are ignored, cheaply. */
void hdrdigest_feed(struct hdrdigest *h, const char *buf, size_t len);

/* 1 once the empty line ending the header has been seen. */
int hdrdigest_header_done(const struct hdrdigest *h);

/* Writes the digest (HDRDIGEST_LEN bytes) into out: the header as fed so
 * far, which is the whole header once the input has ended.  May be called
 * once; h is only good for hdrdigest_free afterwards. */
void hdrdigest_final(struct hdrdigest *h, uint8_t out[HDRDIGEST_LEN]);

/* One-shot convenience for tests and callers holding the whole text. */
int hdrdigest_of(const char *buf, size_t len, uint8_t out[HDRDIGEST_LEN]);

#endif

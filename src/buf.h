/* Growable buffers with a hard bound: the project's one realloc-doubling
 * loop.  buf_grow() grows any array (bytes, pointers, structs); struct buf
 * is a byte buffer built on it for code that reads or writes text of
 * unknown length. */
#ifndef P3_BUF_H
#define P3_BUF_H

#include <stddef.h>

/* Grows the array *items_r (a T **, passed as void *) of elem-byte items,
 * now *cap_r items big, so that it holds at least need items.  The new
 * capacity doubles from first (or from *cap_r) and is clamped to max items.
 * *items_r is passed to realloc only while *cap_r > 0, so before the first
 * growth it may be NULL or point to a static placeholder.  On failure
 * *items_r and *cap_r are unchanged.  Returns 0, -E2BIG when need > max, or
 * -ENOMEM. */
int buf_grow(void *items_r, size_t *cap_r, size_t need, size_t elem, size_t first, size_t max);

/* A byte buffer: data is always a NUL-terminated string (the static "" until
 * the first growth), len excludes the NUL, and the allocation never exceeds
 * max bytes (NUL included). */
struct buf {
  char *data; /* owned once cap > 0 */
  size_t len;
  size_t cap;
  size_t max;
  int secret; /* buf_init_secret: old copies are wiped, never left in freed memory */
};

/* The first allocation of a struct buf, in bytes. */
#define BUF_FIRST 256

/* An empty buffer that may grow to max bytes; allocates nothing. */
void buf_init(struct buf *b, size_t max);

/* Like buf_init, for a buffer that will hold a password: each growth and
 * buf_free overwrite the memory they give back. */
void buf_init_secret(struct buf *b, size_t max);

/* Makes room for n more bytes and the NUL.  Returns 0, -E2BIG (the bound)
 * or -ENOMEM; the buffer is unchanged on failure. */
int buf_reserve(struct buf *b, size_t n);

/* Appends n bytes of p and keeps data NUL-terminated; errors as
 * buf_reserve. */
int buf_append(struct buf *b, const void *p, size_t n);

/* Frees the memory (wiping it first for a secret buffer) and leaves b empty,
 * as buf_init or buf_init_secret left it, same max. */
void buf_free(struct buf *b);

#endif

#include "config.h"

#include "buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The capacity that holds need items: doubling from first (or from cap),
 * clamped to max.  need <= max. */
static size_t next_cap(size_t cap, size_t need, size_t first, size_t max) {
  if (cap == 0)
    cap = first ? first : 1;
  while (cap < need)
    cap = cap > max / 2 ? max : cap * 2;
  return cap > max ? max : cap;
}

int buf_grow(void *items_r, size_t *cap_r, size_t need, size_t elem, size_t first, size_t max) {
  void *items;
  size_t cap;

  if (need <= *cap_r)
    return 0;
  if (need > max || elem == 0 || max > SIZE_MAX / elem)
    return -E2BIG;
  cap = next_cap(*cap_r, need, first, max);
  /* items_r points to a T *; every object pointer has void *'s
   * representation on the systems we build for, and memcpy keeps the
   * compiler's aliasing rules out of it. */
  memcpy(&items, items_r, sizeof items);
  items = realloc(*cap_r ? items : NULL, cap * elem);
  if (items == NULL)
    return -ENOMEM;
  memcpy(items_r, &items, sizeof items);
  *cap_r = cap;
  return 0;
}

static char buf_empty[1];

void buf_init(struct buf *b, size_t max) {
  b->data = buf_empty;
  b->len = 0;
  b->cap = 0;
  b->max = max;
  b->secret = 0;
}

void buf_init_secret(struct buf *b, size_t max) {
  buf_init(b, max);
  b->secret = 1;
}

/* realloc, except that the old copy of a secret is wiped, never left in
 * freed memory. */
static int grow_secret(struct buf *b, size_t need) {
  size_t cap = next_cap(b->cap, need, BUF_FIRST, b->max);
  char *d = malloc(cap);
  if (d == NULL)
    return -ENOMEM;
  memcpy(d, b->data, b->len + 1);
  if (b->cap) {
    explicit_bzero(b->data, b->cap);
    free(b->data);
  }
  b->data = d;
  b->cap = cap;
  return 0;
}

int buf_reserve(struct buf *b, size_t n) {
  int err;

  if (n > b->max || b->len + 1 > b->max - n)
    return -E2BIG;
  if (b->len + n + 1 <= b->cap)
    return 0;
  if (b->secret)
    err = grow_secret(b, b->len + n + 1);
  else
    err = buf_grow(&b->data, &b->cap, b->len + n + 1, 1, BUF_FIRST, b->max);
  if (err == 0)
    b->data[b->len] = '\0';
  return err;
}

int buf_append(struct buf *b, const void *p, size_t n) {
  int err = buf_reserve(b, n);
  if (err)
    return err;
  if (n)
    memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

void buf_free(struct buf *b) {
  int secret = b->secret;

  if (b->cap) {
    if (secret)
      explicit_bzero(b->data, b->cap);
    free(b->data);
  }
  buf_init(b, b->max);
  b->secret = secret;
}

#include "config.h"

#include "buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static void test_grow_array(void) {
  int *a = NULL;
  size_t cap = 0;

  CHECK_INT(buf_grow(&a, &cap, 0, sizeof *a, 4, 100), 0);
  CHECK(a == NULL);
  CHECK_INT(cap, 0);
  CHECK_INT(buf_grow(&a, &cap, 1, sizeof *a, 4, 100), 0);
  CHECK(a != NULL);
  CHECK_INT(cap, 4);
  for (int i = 0; i < 4; i++)
    a[i] = i;
  CHECK_INT(buf_grow(&a, &cap, 4, sizeof *a, 4, 100), 0); /* fits: no change */
  CHECK_INT(cap, 4);
  CHECK_INT(buf_grow(&a, &cap, 5, sizeof *a, 4, 100), 0);
  CHECK_INT(cap, 8);
  CHECK_INT(buf_grow(&a, &cap, 33, sizeof *a, 4, 100), 0);
  CHECK_INT(cap, 64);
  for (int i = 0; i < 4; i++)
    CHECK_INT(a[i], i);
  /* Clamped to the bound, and never past it. */
  CHECK_INT(buf_grow(&a, &cap, 65, sizeof *a, 4, 100), 0);
  CHECK_INT(cap, 100);
  CHECK_INT(buf_grow(&a, &cap, 101, sizeof *a, 4, 100), -E2BIG);
  CHECK_INT(cap, 100);
  CHECK_INT(a[3], 3);
  free(a);

  /* An element size that would overflow the byte count. */
  char *c = NULL;
  cap = 0;
  CHECK_INT(buf_grow(&c, &cap, 2, SIZE_MAX / 2, 1, 4), -E2BIG);
  CHECK(c == NULL);
}

static void test_grow_from_placeholder(void) {
  static char placeholder[1];
  char *p = placeholder;
  size_t cap = 0;

  /* cap == 0: *items_r is not passed to realloc. */
  CHECK_INT(buf_grow(&p, &cap, 10, 1, 256, 1024), 0);
  CHECK(p != placeholder);
  CHECK_INT(cap, 256);
  free(p);
}

static void test_buf_append(void) {
  struct buf b;

  buf_init(&b, 1024);
  CHECK_STR(b.data, "");
  CHECK_INT(b.len, 0);
  CHECK_INT(b.cap, 0);
  buf_free(&b); /* nothing allocated: a no-op */
  CHECK_STR(b.data, "");
  CHECK_INT(buf_append(&b, "hello", 5), 0);
  CHECK_STR(b.data, "hello");
  CHECK_INT(b.cap, BUF_FIRST);
  CHECK_INT(buf_append(&b, "", 0), 0);
  CHECK_STR(b.data, "hello");
  CHECK_INT(buf_append(&b, ", world", 7), 0);
  CHECK_STR(b.data, "hello, world");
  CHECK_INT(b.len, 12);
  buf_free(&b);
  CHECK_STR(b.data, "");
  CHECK_INT(b.len, 0);
  CHECK_INT(b.max, 1024);
}

static void test_buf_bound(void) {
  struct buf b;
  char chunk[100];

  memset(chunk, 'x', sizeof chunk);
  buf_init(&b, 1000);
  /* 999 bytes and the NUL fit exactly; the 1000th byte does not. */
  for (int i = 0; i < 9; i++)
    CHECK_INT(buf_append(&b, chunk, sizeof chunk), 0);
  CHECK_INT(buf_append(&b, chunk, 99), 0);
  CHECK_INT(b.len, 999);
  CHECK_INT(b.cap, 1000);
  CHECK_INT(buf_reserve(&b, 0), 0);
  CHECK_INT(buf_append(&b, "y", 1), -E2BIG);
  CHECK_INT(b.len, 999);
  CHECK_INT(strlen(b.data), 999);
  CHECK_INT(buf_reserve(&b, SIZE_MAX), -E2BIG);
  buf_free(&b);
  CHECK_STR(b.data, "");

  buf_init(&b, 0);
  CHECK_INT(buf_reserve(&b, 0), -E2BIG); /* not even room for the NUL */
  buf_free(&b);
}

/* The read-loop pattern of pop3ctl and the worker: reserve one byte, fill
 * what is free, repeat. */
static void test_buf_read_loop(void) {
  struct buf b;
  size_t total = 0;

  buf_init(&b, 4096);
  for (;;) {
    int err = buf_reserve(&b, 1);
    if (err) {
      CHECK_INT(err, -E2BIG);
      break;
    }
    size_t room = b.cap - 1 - b.len;
    CHECK(room >= 1);
    memset(b.data + b.len, 'a', room);
    b.len += room;
    b.data[b.len] = '\0';
    total += room;
  }
  CHECK_INT(total, 4095);
  CHECK_INT(b.cap, 4096);
  buf_free(&b);
}

/* A secret buffer grows and frees like any other (its wiping is not
 * observable without reading freed memory). */
static void test_buf_secret(void) {
  struct buf b;
  char chunk[300];

  memset(chunk, 's', sizeof chunk);
  buf_init_secret(&b, 4096);
  CHECK_INT(b.secret, 1);
  CHECK_INT(buf_append(&b, "pass ", 5), 0);
  CHECK_INT(b.cap, BUF_FIRST);
  CHECK_INT(buf_append(&b, chunk, sizeof chunk), 0);
  CHECK_INT(b.cap, 2 * BUF_FIRST);
  CHECK_INT(b.len, 305);
  CHECK(memcmp(b.data, "pass sss", 8) == 0);
  CHECK_INT(strlen(b.data), 305);
  CHECK_INT(buf_reserve(&b, 4096), -E2BIG);
  buf_free(&b);
  CHECK_STR(b.data, "");
  CHECK_INT(b.secret, 1);
  CHECK_INT(b.max, 4096);
  CHECK_INT(buf_append(&b, "x", 1), 0);
  CHECK_STR(b.data, "x");
  buf_free(&b);
}

int main(void) {
  test_grow_array();
  test_grow_from_placeholder();
  test_buf_append();
  test_buf_bound();
  test_buf_read_loop();
  test_buf_secret();
  return check_result("test_buf");
}

/* Unit tests for the generic hash table: get/put/remove against a plain
 * array, backward-shift deletion across wrapped clusters, iteration. */
#include "config.h"

#include "check.h"
#include "hashtab.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 2000

static char keys[N][16];
static int vals[N];
static int present[N];

static void test_basic(void) {
  struct hashtab t;
  int a = 1, b = 2;

  hashtab_init(&t);
  CHECK(hashtab_get(&t, "x", 1) == NULL);
  CHECK(hashtab_remove(&t, "x", 1) == NULL);
  CHECK_INT(hashtab_put(&t, "x", 1, &a), 0);
  CHECK(hashtab_get(&t, "x", 1) == &a);
  CHECK(hashtab_get(&t, "xy", 1) == &a); /* the length decides */
  CHECK(hashtab_get(&t, "xy", 2) == NULL);
  CHECK_INT(hashtab_put(&t, "x", 1, &b), 0); /* replaces */
  CHECK_INT(t.n, 1);
  CHECK(hashtab_get(&t, "x", 1) == &b);
  /* Keys are bytes: an embedded NUL is part of them. */
  CHECK_INT(hashtab_put(&t, "a\0b", 3, &a), 0);
  CHECK(hashtab_get(&t, "a\0c", 3) == NULL);
  CHECK(hashtab_get(&t, "a\0b", 3) == &a);
  CHECK(hashtab_remove(&t, "x", 1) == &b);
  CHECK(hashtab_get(&t, "x", 1) == NULL);
  CHECK_INT(t.n, 1);
  hashtab_deinit(&t);
  CHECK_INT(t.n, 0);
  CHECK(t.slots == NULL);
}

/* Random operations, checked against present[] after each. */
static void test_random(void) {
  struct hashtab t;
  unsigned seed = 12345;
  size_t count = 0;

  hashtab_init(&t);
  for (int i = 0; i < N; i++) {
    snprintf(keys[i], sizeof(keys[i]), "k%d", i);
    vals[i] = i;
    present[i] = 0;
  }
  for (int step = 0; step < 50000; step++) {
    int i, op;
    seed = seed * 1103515245 + 12345;
    i = (int)((seed >> 8) % N);
    op = (int)((seed >> 4) % 3);
    if (op < 2) {
      CHECK_INT(hashtab_put(&t, keys[i], strlen(keys[i]), &vals[i]), 0);
      count += !present[i];
      present[i] = 1;
    } else {
      void *v = hashtab_remove(&t, keys[i], strlen(keys[i]));
      CHECK(v == (present[i] ? &vals[i] : NULL));
      count -= present[i];
      present[i] = 0;
    }
    CHECK_INT(t.n, count);
    if (step % 997 == 0)
      for (int k = 0; k < N; k++)
        CHECK(hashtab_get(&t, keys[k], strlen(keys[k])) == (present[k] ? &vals[k] : NULL));
  }
  /* Bounded: at most 4 slots per entry at the peak, doubled. */
  CHECK(t.cap <= 8 * (size_t)N);
  {
    size_t pos = 0, seen = 0;
    const char *key;
    int *v;
    while ((v = hashtab_next(&t, &pos, &key)) != NULL) {
      CHECK(present[*v]);
      CHECK(key == keys[*v]);
      seen++;
    }
    CHECK_INT(seen, count);
  }
  hashtab_deinit(&t);
}

/* A full small table: every removal order leaves the rest reachable. */
static void test_remove_all_orders(void) {
  for (int start = 0; start < 12; start++) {
    struct hashtab t;
    hashtab_init(&t);
    for (int i = 0; i < 12; i++)
      CHECK_INT(hashtab_put(&t, keys[i], strlen(keys[i]), &vals[i]), 0);
    for (int k = 0; k < 12; k++) {
      int i = (start + k * 5) % 12;
      CHECK(hashtab_remove(&t, keys[i], strlen(keys[i])) == &vals[i]);
      for (int j = 0; j < 12; j++) {
        int gone = 0;
        for (int m = 0; m <= k; m++)
          gone |= j == (start + m * 5) % 12;
        CHECK(hashtab_get(&t, keys[j], strlen(keys[j])) == (gone ? NULL : &vals[j]));
      }
    }
    CHECK_INT(t.n, 0);
    hashtab_deinit(&t);
  }
}

int main(void) {
  test_basic();
  test_random();
  test_remove_all_orders();
  return check_result("test_hashtab");
}

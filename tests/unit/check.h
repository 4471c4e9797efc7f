/* A tiny assertion helper for the unit tests: each test program runs its
 * checks, prints failures with file:line, and exits 1 if any failed. */
#ifndef P3_TEST_CHECK_H
#define P3_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures;

#define CHECK(cond)                                                       \
  do {                                                                    \
    if (!(cond)) {                                                        \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      check_failures++;                                                   \
    }                                                                     \
  } while (0)

#define CHECK_INT(a, b)                                                   \
  do {                                                                    \
    long long check_a_ = (long long)(a), check_b_ = (long long)(b);       \
    if (check_a_ != check_b_) {                                           \
      fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, #a, \
              check_a_, #b, check_b_);                                    \
      check_failures++;                                                   \
    }                                                                     \
  } while (0)

#define CHECK_STR(a, b)                                                   \
  do {                                                                    \
    const char *check_a_ = (a), *check_b_ = (b);                          \
    if (check_a_ == NULL || check_b_ == NULL || strcmp(check_a_, check_b_) != 0) { \
      fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a, \
              check_a_ ? check_a_ : "(null)", check_b_ ? check_b_ : "(null)"); \
      check_failures++;                                                   \
    }                                                                     \
  } while (0)

#define CHECK_MEM(a, alen, b, blen)                                       \
  do {                                                                    \
    size_t check_al_ = (alen), check_bl_ = (blen);                        \
    if (check_al_ != check_bl_ || memcmp((a), (b), check_al_) != 0) {     \
      fprintf(stderr, "%s:%d: %s (%zu bytes) differs from %s (%zu bytes)\n", __FILE__, \
              __LINE__, #a, check_al_, #b, check_bl_);                    \
      check_failures++;                                                   \
    }                                                                     \
  } while (0)

static inline int check_result(const char *name) {
  if (check_failures)
    fprintf(stderr, "%s: %d check(s) failed\n", name, check_failures);
  return check_failures ? 1 : 0;
}

#endif

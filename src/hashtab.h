/* A small hash table from byte-string keys to pointers: the one hash table
 * of the project (uidmodel's servers and UIDs, plan's duplicate UIDs, the
 * Maildir name check).
 *
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones), FNV-1a.  Owner-free: the table stores the caller's key
 * pointer and value and frees neither; a key must stay valid and unchanged
 * while it is in the table.  Growth is bounded: the table doubles when
 * three quarters full, so memory stays within a constant factor of the
 * entries, and when that allocation fails it keeps working fuller until
 * only one free slot is left (then hashtab_put fails).  No I/O; not
 * thread-safe. */
#ifndef P3_HASHTAB_H
#define P3_HASHTAB_H

#include <stddef.h>
#include <stdint.h>

struct hashtab_slot {
  const char *key; /* NULL: free */
  size_t len;
  uint64_t hash;
  void *val;
};

struct hashtab {
  struct hashtab_slot *slots; /* owned; NULL while empty */
  size_t cap;                 /* a power of two, or 0 */
  size_t n;                   /* entries */
};

/* FNV-1a of key (len bytes), as the table uses it. */
uint64_t hashtab_hash(const char *key, size_t len);

/* An empty table; allocates nothing. */
void hashtab_init(struct hashtab *t);
/* Frees the slots (never the keys or values); t is then empty again. */
void hashtab_deinit(struct hashtab *t);

/* The value stored under key (len bytes), or NULL when absent. */
void *hashtab_get(const struct hashtab *t, const char *key, size_t len);

/* Stores val (not NULL) under key, borrowing key (len bytes): it must
 * outlive the entry.  Replaces the value when key is already there.
 * Returns 0 or -ENOMEM (the table is unchanged). */
int hashtab_put(struct hashtab *t, const char *key, size_t len, void *val);

/* Removes key; returns its value, or NULL when absent. */
void *hashtab_remove(struct hashtab *t, const char *key, size_t len);

/* Iteration, in no particular order: start with *pos = 0; each call
 * returns the next entry's value (and its key in *key_r, may be NULL), or
 * NULL at the end.  The table must not change during an iteration (a
 * removal may move entries): collect first, then remove. */
void *hashtab_next(const struct hashtab *t, size_t *pos, const char **key_r);

#endif

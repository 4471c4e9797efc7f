/* The project's one hash table (see hashtab.h): string keys to pointers,
 * open addressing, no ownership of keys or values. */
#include "config.h"

#include "hashtab.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CAP_MIN 16

uint64_t hashtab_hash(const char *key, size_t len) {
  uint64_t h = 0xcbf29ce484222325ULL;

  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)key[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

void hashtab_init(struct hashtab *t) {
  t->slots = NULL;
  t->cap = 0;
  t->n = 0;
}

void hashtab_deinit(struct hashtab *t) {
  free(t->slots);
  hashtab_init(t);
}

/* FNV-1a's low bits are weak: fold the high ones in. */
static size_t home_of(uint64_t hash, size_t cap) {
  return (size_t)(hash ^ (hash >> 29)) & (cap - 1);
}

/* The slot holding key, or the free slot where it would go.  cap > n. */
static size_t probe(const struct hashtab *t, const char *key, size_t len, uint64_t h) {
  size_t i = home_of(h, t->cap);

  while (t->slots[i].key != NULL) {
    const struct hashtab_slot *s = &t->slots[i];
    if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0)
      break;
    i = (i + 1) & (t->cap - 1);
  }
  return i;
}

static int grow(struct hashtab *t) {
  size_t oldcap = t->cap, cap = oldcap ? oldcap * 2 : CAP_MIN;
  struct hashtab_slot *old = t->slots, *slots;

  if (cap < oldcap || cap > SIZE_MAX / sizeof(*slots) ||
      (slots = calloc(cap, sizeof(*slots))) == NULL)
    return -ENOMEM;
  t->slots = slots;
  t->cap = cap;
  for (size_t i = 0; i < oldcap; i++)
    if (old[i].key != NULL)
      t->slots[probe(t, old[i].key, old[i].len, old[i].hash)] = old[i];
  free(old);
  return 0;
}

void *hashtab_get(const struct hashtab *t, const char *key, size_t len) {
  if (t->n == 0)
    return NULL;
  return t->slots[probe(t, key, len, hashtab_hash(key, len))].val;
}

int hashtab_put(struct hashtab *t, const char *key, size_t len, void *val) {
  uint64_t h = hashtab_hash(key, len);
  struct hashtab_slot *s;

  assert(key != NULL && val != NULL);
  /* Grow at 3/4; if that fails, carry on while a free slot remains
   * besides the new one, so that probing always ends. */
  if (t->cap == 0 || (t->n + 1) * 4 > t->cap * 3) {
    if (grow(t) < 0 && (t->cap == 0 || t->n + 2 > t->cap))
      return -ENOMEM;
  }
  s = &t->slots[probe(t, key, len, h)];
  if (s->key == NULL) {
    s->key = key;
    s->len = len;
    s->hash = h;
    t->n++;
  }
  s->val = val;
  return 0;
}

void *hashtab_remove(struct hashtab *t, const char *key, size_t len) {
  size_t mask = t->cap - 1, i, j;
  void *val;

  if (t->n == 0)
    return NULL;
  i = probe(t, key, len, hashtab_hash(key, len));
  if (t->slots[i].key == NULL)
    return NULL;
  val = t->slots[i].val;
  /* Backward shift: move each later entry of the cluster that may live at
   * i (its home is not cyclically in (i, j]) into the hole. */
  for (j = (i + 1) & mask; t->slots[j].key != NULL; j = (j + 1) & mask) {
    size_t home = home_of(t->slots[j].hash, t->cap);
    if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
      continue;
    t->slots[i] = t->slots[j];
    i = j;
  }
  memset(&t->slots[i], 0, sizeof(t->slots[i]));
  t->n--;
  return val;
}

void *hashtab_next(const struct hashtab *t, size_t *pos, const char **key_r) {
  while (*pos < t->cap) {
    const struct hashtab_slot *s = &t->slots[(*pos)++];
    if (s->key != NULL) {
      if (key_r != NULL)
        *key_r = s->key;
      return s->val;
    }
  }
  return NULL;
}

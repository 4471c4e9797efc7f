/* libFuzzer target: netrc_parse on the raw bytes, then every lookup with
 * strings taken from the parsed entries, then netrc_free.  The lookups must
 * find what is there: each entry's machine (with its own login, and with
 * none) and account lead to that entry or an earlier one that matches. */
#include "config.h"

#include "netrc.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t index_of(const struct netrc *n, const struct netrc_entry *e) {
  if (e < n->entries || e >= n->entries + n->count)
    abort(); /* a lookup must return one of the entries or NULL */
  return (size_t)(e - n->entries);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct netrc n;
  char err[256];
  int errline = 0, r, have_default = 0, prev_line = 1;
  char *buf;
  size_t i;

  /* Exactly size bytes, no NUL after them: the parser takes a length. */
  buf = malloc(size > 0 ? size : 1);
  if (buf == NULL)
    return 0;
  if (size > 0)
    memcpy(buf, data, size);

  memset(&n, 0, sizeof(n));
  r = netrc_parse(buf, size, &n, &errline, err, sizeof(err));
  if (r != 0) {
    if (r > 0 || errline < 1 || err[0] == '\0' || memchr(err, '\0', sizeof(err)) == NULL)
      abort();
    free(buf);
    return 0;
  }

  for (i = 0; i < n.count; i++) {
    const struct netrc_entry *e = &n.entries[i];
    const struct netrc_entry *f;

    if (e->line < prev_line)
      abort(); /* entries come in file order */
    prev_line = e->line;
    if (e->machine == NULL) {
      have_default = 1;
      continue;
    }
    f = netrc_find_machine(&n, e->machine, e->login);
    if (f == NULL || index_of(&n, f) > i)
      abort();
    f = netrc_find_machine(&n, e->machine, NULL);
    if (f == NULL || index_of(&n, f) > i)
      abort();
    if (e->login != NULL) {
      f = netrc_find_machine(&n, e->machine, "");
      if (f != NULL)
        (void)index_of(&n, f);
    }
    if (e->account != NULL) {
      f = netrc_find_account(&n, e->account);
      if (f == NULL || index_of(&n, f) > i || strcmp(f->account, e->account) != 0)
        abort();
    }
    /* The other fields as lookup keys: any answer is fine, a crash is not. */
    if (e->login != NULL)
      (void)netrc_find_account(&n, e->login);
    if (e->password != NULL)
      (void)netrc_find_machine(&n, e->password, e->account);
  }
  if ((netrc_find_default(&n) != NULL) != have_default)
    abort();
  (void)netrc_find_machine(&n, "", NULL);
  (void)netrc_find_account(&n, "");

  netrc_free(&n);
  free(buf);
  return 0;
}

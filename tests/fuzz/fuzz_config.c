/* libFuzzer target: the daemon's configuration loader.  The input is
 * written to a fresh 0600 file in /tmp (0600 because the loader rightly
 * refuses plaintext passwords in a file others can read) and loaded with
 * check_maildirs 0, so that nothing is created.  A success must honour the
 * contract in cfg.h (absolute paths, interval >= 1, unique account names);
 * a failure must say why. */
#include "config.h"

#include "cfg.h"
#include "errors.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__lsan_default_suppressions(void);

/* libconfig 1.5 leaks the strings its scanner made when a string is
 * malformed or the parser stops at a syntax error (both reproduced with
 * libconfig alone: config_read + config_destroy); not ours to fix, and it
 * would stop every run.  Only the scanner's allocation sites are
 * suppressed: a config_t we forget to destroy still shows through its
 * settings. */
__attribute__((used)) const char *__lsan_default_suppressions(void) {
  return "leak:strbuf_append\nleak:libconfig_yylex\n";
}

/* libconfig's `@include "FILE"' would let the fuzzer read whatever it
 * names on this machine (and block forever on a FIFO or a tty): such
 * inputs are skipped.  The directive is case-sensitive; this check is not,
 * which costs nothing. */
static int has_include(const uint8_t *data, size_t size) {
  static const char word[] = "@include";
  size_t wlen = sizeof(word) - 1, i;

  for (i = 0; i + wlen <= size; i++)
    if (data[i] == '@' && strncasecmp((const char *)data + i, word, wlen) == 0)
      return 1;
  return 0;
}

static int write_all(int fd, const uint8_t *p, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static void check_cfg(const struct cfg *cfg) {
  size_t i;

  if (cfg->path == NULL || cfg->path[0] != '/' || cfg->control_socket == NULL ||
      cfg->control_socket[0] != '/' || cfg->state_dir == NULL || cfg->state_dir[0] != '/')
    abort();
  if (cfg->interval < 1 || cfg->max_parallel < 1 || cfg->timeout < 1)
    abort();
  if (cfg->account_count > 0 && cfg->accounts == NULL)
    abort();
  for (i = 0; i < cfg->account_count; i++) {
    const struct cfg_account *a = &cfg->accounts[i];

    if (a->name == NULL || a->name[0] == '\0' ||
        strspn(a->name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") !=
            strlen(a->name))
      abort();
    if (a->server == NULL || a->maildir == NULL || a->maildir[0] != '/' || a->interval < 1)
      abort();
    if (a->pin_count < 0 || a->pin_count > P3_TLS_MAX_PINS)
      abort();
    if (cfg_find_account(cfg, a->name) != a)
      abort(); /* names are unique */
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char path[] = "/tmp/fuzz_config.XXXXXX";
  struct cfg *cfg = NULL;
  struct cfg_errors errs;
  int fd, r;
  size_t i;

  if (has_include(data, size))
    return 0;
  fd = mkstemp(path); /* mode 0600 */
  if (fd < 0)
    abort(); /* /tmp unusable: say so rather than fuzz nothing */
  if (write_all(fd, data, size) != 0 || fchmod(fd, 0600) != 0) {
    close(fd);
    unlink(path);
    abort();
  }
  close(fd);

  memset(&errs, 0, sizeof(errs));
  r = cfg_load(path, 0, &cfg, &errs);
  unlink(path);

  if (r == 0) {
    if (cfg == NULL || errs.count != 0)
      abort();
    check_cfg(cfg);
  } else {
    if (cfg != NULL || (r != P3_ECONFIG && r != -ENOMEM))
      abort();
    if (r == P3_ECONFIG && errs.count == 0)
      abort(); /* a refusal always says why */
    for (i = 0; i < errs.count; i++)
      if (errs.lines[i] == NULL)
        abort();
  }
  cfg_free(cfg);
  cfg_errors_free(&errs);
  return 0;
}

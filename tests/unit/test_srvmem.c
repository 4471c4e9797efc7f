/* Unit tests of the per-server memory (srvmem.h): the codec round trip,
 * rejection of malformed files, and the store's file checks. */
#include "config.h"

#include "srvmem.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "errors.h"

static void fill(struct srvmem *m) {
  srvmem_init(m);
  snprintf(m->server, sizeof m->server, "%s", "alice@pop.example.com:995");
  m->saved = 1764731643;
  srvmem_set_capa(m, 0, "USER TOP\tUIDL  PIPELINING\r\nSASL PLAIN LOGIN");
  m->pipelining = SRVMEM_YES;
  m->greeting_apop = SRVMEM_NO;
  m->has_tls = 1;
  for (int i = 0; i < 32; i++)
    m->tls_key[i] = (uint8_t)i;
  m->tls_expires = 1764738843;
  m->tls_len = 300;
  for (size_t i = 0; i < m->tls_len; i++)
    m->tls_session[i] = (unsigned char)(i * 7);
}

static void test_round_trip(void) {
  struct srvmem a, b;
  char *text;
  size_t len;

  fill(&a);
  CHECK_STR(a.capa_pre, "USER TOP UIDL PIPELINING SASL PLAIN LOGIN");
  CHECK_INT(srvmem_format(&a, &text, &len), 0);
  CHECK(strncmp(text, "pop3sync-server 1\nserver alice@pop.example.com:995\n", 51) == 0);
  CHECK(strstr(text, "\nend\n") != NULL);
  CHECK_INT(srvmem_parse(text, len, &b), 0);
  CHECK_STR(b.server, a.server);
  CHECK_INT(b.saved, a.saved);
  CHECK_STR(b.capa_pre, a.capa_pre);
  CHECK_STR(b.capa_post, "");
  CHECK_INT(b.pipelining, SRVMEM_YES);
  CHECK_INT(b.greeting_apop, SRVMEM_NO);
  CHECK_INT(b.has_tls, 1);
  CHECK(memcmp(b.tls_key, a.tls_key, 32) == 0);
  CHECK_INT(b.tls_expires, a.tls_expires);
  CHECK_INT(b.tls_len, a.tls_len);
  CHECK(memcmp(b.tls_session, a.tls_session, a.tls_len) == 0);

  /* Every truncation is refused (no "end"), never half-read. */
  for (size_t cut = 0; cut < len; cut++) {
    struct srvmem c;
    int r = srvmem_parse(text, cut, &c);
    CHECK_INT(r, -EINVAL);
    CHECK_INT(c.has_tls, 0);
    CHECK_STR(c.server, "");
  }
  free(text);

  /* Without TLS, unknowns stay unknown. */
  srvmem_drop_tls(&a);
  a.pipelining = SRVMEM_UNKNOWN;
  a.greeting_apop = SRVMEM_YES;
  CHECK_INT(srvmem_format(&a, &text, &len), 0);
  CHECK(strstr(text, "tls-") == NULL);
  CHECK(strstr(text, "pipelining unknown\n") != NULL);
  CHECK(strstr(text, "greeting apop\n") != NULL);
  CHECK_INT(srvmem_parse(text, len, &b), 0);
  CHECK_INT(b.has_tls, 0);
  CHECK_INT(b.pipelining, SRVMEM_UNKNOWN);
  CHECK_INT(b.greeting_apop, SRVMEM_YES);
  free(text);
}

/* The flight facts (issue 11): unknown by default, each value round-trips,
 * an old file without them reads as unknown, and nonsense is refused. */
static void test_flight_keys(void) {
  static const enum srvmem_tri v[3] = {SRVMEM_UNKNOWN, SRVMEM_NO, SRVMEM_YES};
  static const char *const word[3] = {"unknown", "no", "yes"};
  struct srvmem a, b;
  char *text, want[64];
  size_t len;

  srvmem_init(&a);
  CHECK_INT(a.early_flight, SRVMEM_UNKNOWN);
  CHECK_INT(a.flight_listing, SRVMEM_UNKNOWN);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) {
      fill(&a);
      a.early_flight = v[i];
      a.flight_listing = v[j];
      CHECK_INT(srvmem_format(&a, &text, &len), 0);
      snprintf(want, sizeof want, "\nearly-flight %s\nflight-listing %s\n", word[i], word[j]);
      CHECK(strstr(text, want) != NULL);
      CHECK_INT(srvmem_parse(text, len, &b), 0);
      CHECK_INT(b.early_flight, v[i]);
      CHECK_INT(b.flight_listing, v[j]);
      CHECK_INT(b.pipelining, SRVMEM_YES);
      free(text);
    }
  const char *old = "pop3sync-server 1\nserver a@b:1\npipelining yes\nend\n";
  CHECK_INT(srvmem_parse(old, strlen(old), &b), 0);
  CHECK_INT(b.early_flight, SRVMEM_UNKNOWN);
  CHECK_INT(b.flight_listing, SRVMEM_UNKNOWN);
  const char *ok = "pop3sync-server 1\nserver a@b:1\nearly-flight no\nflight-listing yes\nend\n";
  CHECK_INT(srvmem_parse(ok, strlen(ok), &b), 0);
  CHECK_INT(b.early_flight, SRVMEM_NO);
  CHECK_INT(b.flight_listing, SRVMEM_YES);
  const char *bad[] = {
      "pop3sync-server 1\nserver a@b:1\nearly-flight maybe\nend\n",
      "pop3sync-server 1\nserver a@b:1\nflight-listing YES\nend\n",
      "pop3sync-server 1\nserver a@b:1\nflight-listing\nend\n",
      "pop3sync-server 1\nserver a@b:1\nearly-flight no\nearly-flight yes\nend\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    CHECK_INT(srvmem_parse(bad[i], strlen(bad[i]), &b), -EINVAL);
    CHECK_INT(b.early_flight, SRVMEM_UNKNOWN);
  }
}

static int parses(const char *text) {
  struct srvmem m;
  return srvmem_parse(text, strlen(text), &m);
}

static void test_malformed(void) {
  CHECK_INT(parses("pop3sync-server 1\nserver a@b:1\nend\n"), 0);
  CHECK_INT(parses("pop3sync-server 1\nserver a@b:1\nfuture-key whatever\nend\n"), 0);
  CHECK_INT(parses(""), -EINVAL);
  CHECK_INT(parses("pop3sync-server 2\nserver a@b:1\nend\n"), -EINVAL);
  CHECK_INT(parses("pop3sync-server 1\nend\n"), -EINVAL);                  /* no server */
  CHECK_INT(parses("pop3sync-server 1\nserver a@b:1\nend\nx\n"), -EINVAL); /* after end */
  CHECK_INT(parses("pop3sync-server 1\nserver a@b:1\nserver a@b:1\nend\n"), -EINVAL);
  CHECK_INT(parses("pop3sync-server 1\nserver a b\nend\n"), -EINVAL);
  CHECK_INT(parses("pop3sync-server 1\nserver a@b:1\r\nend\n"), -EINVAL);
  CHECK_INT(parses("pop3sync-server 1\nserver a@b:1\ncapa-pre A  B\nend\n"), -EINVAL);
  CHECK_INT(parses("pop3sync-server 1\nserver a@b:1\npipelining maybe\nend\n"), -EINVAL);
  CHECK_INT(parses("pop3sync-server 1\nserver a@b:1\nsaved -1\nend\n"), -EINVAL);
  CHECK_INT(parses("pop3sync-server 1\nserver a@b:1\nsaved 99999999999999999999\nend\n"), -EINVAL);
  /* The TLS fields go together, in lower-case hex. */
  CHECK_INT(parses("pop3sync-server 1\nserver a@b:1\ntls-session 00ff\nend\n"), -EINVAL);
  CHECK_INT(parses("pop3sync-server 1\nserver a@b:1\n"
                   "tls-key 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"
                   "tls-expires 5\ntls-session 00FF\nend\n"),
            -EINVAL);
  CHECK_INT(parses("pop3sync-server 1\nserver a@b:1\n"
                   "tls-key 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"
                   "tls-expires 5\ntls-session 00ff\nend\n"),
            0);
  CHECK_INT(parses("pop3sync-server 1\nserver a@b:1\n"
                   "tls-key 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"
                   "tls-expires 5\ntls-session 0\nend\n"),
            -EINVAL);
  {
    /* A CAPA longer than the field is cut at a whole token. */
    struct srvmem m;
    char big[2000];
    size_t n = 0;
    srvmem_init(&m);
    while (n + 12 < sizeof big)
      n += (size_t)snprintf(big + n, sizeof big - n, "TOKEN%04zu ", n);
    srvmem_set_capa(&m, 1, big);
    CHECK(strlen(m.capa_post) < SRVMEM_CAPA_MAX);
    CHECK(m.capa_post[strlen(m.capa_post) - 1] != ' ');
    CHECK(strncmp(m.capa_post, "TOKEN0000 TOKEN0010", 19) == 0);
  }
}

static void test_store(void) {
  char dir[] = "/tmp/test_srvmem.XXXXXX";
  struct srvmem a, b;
  char err[300];
  struct stat sb;
  int dfd;

  CHECK(mkdtemp(dir) != NULL);
  dfd = open(dir, O_RDONLY | O_DIRECTORY);
  CHECK(dfd >= 0);
  /* Absent: empty, no error. */
  CHECK_INT(srvmem_load(dfd, "state", &b, err, sizeof err), 0);
  CHECK_STR(b.server, "");
  fill(&a);
  CHECK_INT(srvmem_save(dfd, "state", &a, err, sizeof err), 0);
  CHECK_INT(fstatat(dfd, "state.server", &sb, AT_SYMLINK_NOFOLLOW), 0);
  CHECK_INT(sb.st_mode & 07777, 0600);
  CHECK(fstatat(dfd, "state.server.tmp", &sb, AT_SYMLINK_NOFOLLOW) != 0);
  CHECK_INT(srvmem_load(dfd, "state", &b, err, sizeof err), 0);
  CHECK_STR(b.server, a.server);
  CHECK_INT(b.tls_len, a.tls_len);
  /* Readable by others: refused. */
  CHECK_INT(fchmodat(dfd, "state.server", 0644, 0), 0);
  CHECK_INT(srvmem_load(dfd, "state", &b, err, sizeof err), P3_EUNSAFE);
  CHECK(strstr(err, "group or others") != NULL);
  CHECK_INT(b.has_tls, 0);
  /* Saving replaces it with a private file again. */
  CHECK_INT(srvmem_save(dfd, "state", &a, err, sizeof err), 0);
  CHECK_INT(srvmem_load(dfd, "state", &b, err, sizeof err), 0);
  /* A hard link: refused. */
  CHECK_INT(linkat(dfd, "state.server", dfd, "other", 0), 0);
  CHECK_INT(srvmem_load(dfd, "state", &b, err, sizeof err), P3_EUNSAFE);
  CHECK_INT(unlinkat(dfd, "other", 0), 0);
  /* A symlink: refused, its target untouched. */
  CHECK_INT(renameat(dfd, "state.server", dfd, "target"), 0);
  CHECK_INT(symlinkat("target", dfd, "state.server"), 0);
  CHECK_INT(srvmem_load(dfd, "state", &b, err, sizeof err), P3_EUNSAFE);
  CHECK(strstr(err, "symbolic link") != NULL);
  /* Saving replaces the link itself, never writes through it. */
  a.pipelining = SRVMEM_NO;
  CHECK_INT(srvmem_save(dfd, "state", &a, err, sizeof err), 0);
  CHECK_INT(fstatat(dfd, "state.server", &sb, AT_SYMLINK_NOFOLLOW), 0);
  CHECK(S_ISREG(sb.st_mode));
  CHECK_INT(srvmem_load(dfd, "state", &b, err, sizeof err), 0);
  CHECK_INT(b.pipelining, SRVMEM_NO);
  CHECK_INT(srvmem_load(dfd, "target", &b, err, sizeof err), 0); /* "target.server": absent */
  /* A malformed file: cold, no error. */
  {
    int fd = openat(dfd, "bad.server", O_WRONLY | O_CREAT, 0600);
    CHECK(write(fd, "garbage\n", 8) == 8);
    close(fd);
    CHECK_INT(srvmem_load(dfd, "bad", &b, err, sizeof err), 0);
    CHECK_STR(b.server, "");
  }
  unlinkat(dfd, "state.server", 0);
  unlinkat(dfd, "target", 0);
  unlinkat(dfd, "bad.server", 0);
  close(dfd);
  rmdir(dir);
}

int main(void) {
  test_round_trip();
  test_flight_keys();
  test_malformed();
  test_store();
  return check_failures ? 1 : 0;
}

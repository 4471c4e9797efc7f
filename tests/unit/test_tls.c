/* Tests for src/tls.c: fingerprint parsing, setup errors, and real handshakes
 * against an `openssl s_server -rev` child on a free loopback port, with
 * certificates from tests/lib/mkcert.sh.  Plain blocking sockets move the
 * bytes here (only here: tls.c itself never touches a socket).  Without
 * openssl the handshake part is skipped (exit 77) unless CI=true. */
#include "config.h"

#include "errors.h"
#include "tls.h"

#include "check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char fp_hex[] = "000102030405060708090a0b0c0d0e0f"
                             "f0e1d2c3b4a5968778695a4b3c2d1e0f";

static void expected_fp(uint8_t out[32]) {
  static const uint8_t v[32] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
                                0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5,
                                0x96, 0x87, 0x78, 0x69, 0x5a, 0x4b, 0x3c, 0x2d, 0x1e, 0x0f};
  memcpy(out, v, 32);
}

/* fp_hex with a colon between every byte pair, upper case. */
static void colon_form(char *buf, size_t len) {
  size_t i, n = 0;

  for (i = 0; i < 64 && n + 4 < len; i += 2) {
    if (i > 0)
      buf[n++] = ':';
    buf[n++] = fp_hex[i] >= 'a' ? (char)(fp_hex[i] - 32) : fp_hex[i];
    buf[n++] = fp_hex[i + 1] >= 'a' ? (char)(fp_hex[i + 1] - 32) : fp_hex[i + 1];
  }
  buf[n] = '\0';
}

static void test_parse_fingerprint(void) {
  uint8_t want[32], got[32];
  char buf[256], colons[128];
  size_t i;

  expected_fp(want);
  colon_form(colons, sizeof(colons));

  /* Good forms. */
  snprintf(buf, sizeof(buf), "sha256:%s", fp_hex);
  CHECK_INT(tls_parse_fingerprint(buf, got), 0);
  CHECK_MEM(got, 32, want, 32);
  memset(got, 0, sizeof(got));
  CHECK_INT(tls_parse_fingerprint(fp_hex, got), 0);
  CHECK_MEM(got, 32, want, 32);
  memset(got, 0, sizeof(got));
  CHECK_INT(tls_parse_fingerprint(colons, got), 0);
  CHECK_MEM(got, 32, want, 32);
  snprintf(buf, sizeof(buf), "SHA256:%s", colons);
  memset(got, 0, sizeof(got));
  CHECK_INT(tls_parse_fingerprint(buf, got), 0);
  CHECK_MEM(got, 32, want, 32);
  snprintf(buf, sizeof(buf), "Sha256:%s", colons);
  CHECK_INT(tls_parse_fingerprint(buf, got), 0);
  /* Colons on some byte boundaries only, mixed case. */
  snprintf(buf, sizeof(buf), "00:0102030405060708090A0B0C0D0E0F:F0e1d2c3b4a5968778695a4b3c2d1e:0f");
  memset(got, 0, sizeof(got));
  CHECK_INT(tls_parse_fingerprint(buf, got), 0);
  CHECK_MEM(got, 32, want, 32);

  /* Bad forms; out must stay untouched. */
  {
    static const char *const bad[] = {
        "",
        "sha256:",
        "sha256",
        ":",
        "sha1:000102030405060708090a0b0c0d0e0ff0e1d2c3b4a5968778695a4b3c2d1e0f",
        "sha256:sha256:000102030405060708090a0b0c0d0e0ff0e1d2c3b4a5968778695a4b3c2d1e0f",
        "sha256 000102030405060708090a0b0c0d0e0ff0e1d2c3b4a5968778695a4b3c2d1e0f",
        /* 63, 62 and 66 digits */
        "000102030405060708090a0b0c0d0e0ff0e1d2c3b4a5968778695a4b3c2d1e0",
        "000102030405060708090a0b0c0d0e0ff0e1d2c3b4a5968778695a4b3c2d1e",
        "000102030405060708090a0b0c0d0e0ff0e1d2c3b4a5968778695a4b3c2d1e0f00",
        /* colons out of place */
        ":000102030405060708090a0b0c0d0e0ff0e1d2c3b4a5968778695a4b3c2d1e0f",
        "000102030405060708090a0b0c0d0e0ff0e1d2c3b4a5968778695a4b3c2d1e0f:",
        "00::0102030405060708090a0b0c0d0e0ff0e1d2c3b4a5968778695a4b3c2d1e0f",
        "0:00102030405060708090a0b0c0d0e0ff0e1d2c3b4a5968778695a4b3c2d1e0f",
        "sha256::000102030405060708090a0b0c0d0e0ff0e1d2c3b4a5968778695a4b3c2d1e0f",
        /* not hex, spaces */
        "g00102030405060708090a0b0c0d0e0ff0e1d2c3b4a5968778695a4b3c2d1e0f",
        "000102030405060708090a0b0c0d0e0ff0e1d2c3b4a5968778695a4b3c2d1e0x",
        " 000102030405060708090a0b0c0d0e0ff0e1d2c3b4a5968778695a4b3c2d1e0f",
        "000102030405060708090a0b0c0d0e0ff0e1d2c3b4a5968778695a4b3c2d1e0f ",
        "000102030405060708090a0b0c0d0e0ff0e1d2c3b4a5968778695a4b3c2d1e0f\n",
        "00-0102030405060708090a0b0c0d0e0ff0e1d2c3b4a5968778695a4b3c2d1e0f",
    };

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
      memset(got, 0xee, sizeof(got));
      if (tls_parse_fingerprint(bad[i], got) != -EINVAL)
        fprintf(stderr, "accepted bad fingerprint \"%s\"\n", bad[i]);
      CHECK_INT(tls_parse_fingerprint(bad[i], got), -EINVAL);
      CHECK(got[0] == 0xee && got[31] == 0xee);
    }
  }
  /* A colon inside the last pair of an otherwise colon-separated form. */
  snprintf(buf, sizeof(buf), "%s", colons);
  buf[strlen(buf) - 1] = ':';
  CHECK_INT(tls_parse_fingerprint(buf, got), -EINVAL);
}

/* Setup errors that need no server. */
static void test_setup(const char *dir) {
  struct p3_tls_options o;
  struct p3_tls *t = (struct p3_tls *)1;
  char err[256], path[512], *out;
  size_t n;
  FILE *f;

  memset(&o, 0, sizeof(o));
  o.server_name = NULL;
  CHECK_INT(tls_new(&o, &t, err, sizeof(err)), P3_ETLSCONF);
  CHECK(t == NULL);
  CHECK_STR(err, "no name to verify");
  o.server_name = "";
  CHECK_INT(tls_new(&o, &t, err, sizeof(err)), P3_ETLSCONF);

  o.server_name = "localhost";
  snprintf(path, sizeof(path), "%s/does-not-exist.pem", dir);
  o.ca_file = path;
  CHECK_INT(tls_new(&o, &t, err, sizeof(err)), P3_ETLSCONF);
  CHECK(strstr(err, path) != NULL);
  /* Pins do not excuse an explicit CA file that is broken. */
  o.pin_count = 1;
  CHECK_INT(tls_new(&o, &t, err, sizeof(err)), P3_ETLSCONF);
  CHECK(strstr(err, path) != NULL);
  o.pin_count = 0;

  snprintf(path, sizeof(path), "%s/garbage.pem", dir);
  f = fopen(path, "w");
  CHECK(f != NULL);
  if (f != NULL) {
    fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n", f);
    fclose(f);
  }
  CHECK_INT(tls_new(&o, &t, err, sizeof(err)), P3_ETLSCONF);
  CHECK(strstr(err, path) != NULL);
  fprintf(stderr, "garbage CA file: %s\n", err);

  /* Pins and no CA file: the system bundle is not needed.  Nothing is
   * queued before the first tls_handshake(); after it, a ClientHello. */
  o.ca_file = NULL;
  o.server_name = NULL;
  o.pin_count = 1;
  CHECK_INT(tls_new(&o, &t, err, sizeof(err)), 0);
  if (t == NULL)
    return;
  CHECK_INT(tls_take_output(t, &out), 0);
  CHECK(out == NULL);
  CHECK_INT(tls_pending_input(t), 0);
  CHECK_INT(tls_handshake(t, err, sizeof(err)), 0);
  n = tls_take_output(t, &out);
  CHECK(n > 5);
  if (out != NULL) {
    CHECK_INT((unsigned char)out[0], 0x16); /* handshake record */
    CHECK_INT((unsigned char)out[1], 0x03);
    free(out);
  }
  CHECK_INT(tls_take_output(t, &out), 0);
  /* Input accounting and its bound. */
  CHECK_INT(tls_feed(t, "", 0), 0);
  CHECK_INT(tls_feed(t, "ab", 2), 0);
  CHECK_INT(tls_pending_input(t), 2);
  /* A loan counts as input; nothing may be fed in between; what is left
   * at its end is kept (copied). */
  {
    char lent[2] = {'x', 'y'};

    tls_feed_lend(t, lent, 2);
    CHECK_INT(tls_pending_input(t), 4);
    CHECK_INT(tls_feed(t, "z", 1), -EINVAL);
    CHECK_INT(tls_feed_end(t), 0);
    lent[0] = lent[1] = 0;
    CHECK_INT(tls_pending_input(t), 4);
    CHECK_INT(tls_feed_end(t), 0); /* no loan: nothing */
    CHECK_INT(tls_pending_input(t), 4);
  }
  {
    static char big[256 * 1024];
    int i, ret = 0;

    for (i = 0; i < 8 && ret == 0; i++)
      ret = tls_feed(t, big, sizeof(big));
    CHECK_INT(ret, -ENOBUFS);
    CHECK(tls_pending_input(t) <= 1024 * 1024);
  }
  /* Reading or writing before the handshake is done is an error. */
  CHECK_INT(tls_write(t, "x", 1, err, sizeof(err)), P3_ETLS);
  CHECK_INT(tls_read(t, err, sizeof(err), err, sizeof(err)), P3_ETLS);
  tls_free(t);
  tls_free(NULL);
}

/* ---- talking to openssl s_server */

struct server {
  pid_t pid;
  int port;
};

static char tmpdir[256];

/* Starts `openssl s_server -rev` for one connection on a free port; the
 * port is read back from its "ACCEPT 127.0.0.1:PORT" line. */
static int server_start(struct server *s, const char *cert, const char *key) {
  char outpath[512], errpath[512], line[256];
  int i;

  snprintf(outpath, sizeof(outpath), "%s/s_server.out", tmpdir);
  snprintf(errpath, sizeof(errpath), "%s/s_server.err", tmpdir);
  unlink(outpath);
  s->port = 0;
  fflush(NULL); /* or the child's freopen() would write our buffered output again */
  s->pid = fork();
  if (s->pid < 0)
    return -errno;
  if (s->pid == 0) {
    if (freopen("/dev/null", "r", stdin) == NULL || freopen(outpath, "w", stdout) == NULL ||
        freopen(errpath, "w", stderr) == NULL)
      _exit(127);
    execlp("openssl", "openssl", "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-rev",
           "-cert", cert, "-key", key, (char *)NULL);
    _exit(127);
  }
  for (i = 0; i < 500 && s->port == 0; i++) {
    FILE *f = fopen(outpath, "r");
    struct timespec ts = {0, 20 * 1000 * 1000};

    if (f != NULL) {
      while (fgets(line, sizeof(line), f) != NULL) {
        char *colon = strrchr(line, ':');

        if (strncmp(line, "ACCEPT ", 7) == 0 && colon != NULL)
          s->port = atoi(colon + 1);
      }
      fclose(f);
    }
    if (s->port == 0)
      nanosleep(&ts, NULL);
  }
  if (s->port <= 0) {
    fprintf(stderr, "openssl s_server did not start (see %s)\n", errpath);
    kill(s->pid, SIGTERM);
    waitpid(s->pid, NULL, 0);
    return -1;
  }
  return 0;
}

static void server_stop(struct server *s) {
  int i, status;

  /* With -naccept 1 it exits after the connection; give it a moment. */
  for (i = 0; i < 100; i++) {
    struct timespec ts = {0, 20 * 1000 * 1000};

    if (waitpid(s->pid, &status, WNOHANG) == s->pid)
      return;
    nanosleep(&ts, NULL);
  }
  kill(s->pid, SIGTERM);
  waitpid(s->pid, &status, 0);
}

static int connect_port(int port) {
  struct sockaddr_in sin;
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  if (fd < 0)
    return -1;
  memset(&sin, 0, sizeof(sin));
  sin.sin_family = AF_INET;
  sin.sin_port = htons((uint16_t)port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Sends whatever tls has queued. */
static int flush(struct p3_tls *t, int fd) {
  char *out;
  size_t n = tls_take_output(t, &out), off = 0;

  while (off < n) {
    ssize_t w = send(fd, out + off, n - off, MSG_NOSIGNAL);

    if (w <= 0) {
      free(out);
      return -1;
    }
    off += (size_t)w;
  }
  free(out);
  return 0;
}

/* Blocks for ciphertext and feeds it, in one piece or a byte at a time
 * (each byte followed by step(), to exercise partial records). */
static int receive(struct p3_tls *t, int fd, int dribble, int (*step)(struct p3_tls *, void *),
                   void *arg) {
  char buf[4096];
  ssize_t n = recv(fd, buf, sizeof(buf), 0);
  ssize_t i;

  if (n <= 0)
    return -1;
  if (!dribble)
    return tls_feed(t, buf, (size_t)n);
  if (dribble == 2) {
    /* Lent, as conn.c does: consumed in place, the rest kept at the end. */
    int ret, end;

    tls_feed_lend(t, buf, (size_t)n);
    ret = step(t, arg);
    end = tls_feed_end(t);
    memset(buf, 0, sizeof(buf)); /* a kept rest must not point here */
    return end < 0 ? end : ret;
  }
  for (i = 0; i < n; i++) {
    int ret = tls_feed(t, buf + i, 1);

    if (ret < 0)
      return ret;
    ret = step(t, arg);
    if (ret != 0)
      return ret;
  }
  return 0;
}

struct hs {
  char err[256];
  int ret;
};

/* Runs the handshake step; nonzero when it has finished either way. */
static int hs_step(struct p3_tls *t, void *arg) {
  struct hs *h = arg;

  h->ret = tls_handshake(t, h->err, sizeof(h->err));
  return h->ret != 0;
}

/* Handshakes over fd; returns tls_handshake's final result. */
static int handshake(struct p3_tls *t, int fd, int dribble, char *err, size_t errlen) {
  struct hs h;

  h.err[0] = '\0';
  h.ret = 0;
  while (!hs_step(t, &h)) {
    if (flush(t, fd) < 0)
      break;
    if (receive(t, fd, dribble, hs_step, &h) < 0) {
      snprintf(h.err, sizeof(h.err), "connection closed during handshake");
      h.ret = -1;
      break;
    }
    if (h.ret != 0)
      break;
  }
  flush(t, fd); /* an alert, if any */
  snprintf(err, errlen, "%s", h.err);
  return h.ret;
}

struct rd {
  char *buf;
  size_t len, want;
  int ret;
  char err[256];
};

/* Reads plaintext until want bytes, EOF or error. */
static int rd_step(struct p3_tls *t, void *arg) {
  struct rd *r = arg;

  while (r->len < r->want) {
    int n = tls_read(t, r->buf + r->len, r->want - r->len, r->err, sizeof(r->err));

    if (n < 0) {
      r->ret = n;
      return 1;
    }
    if (n == 0)
      return 0;
    r->len += (size_t)n;
  }
  return 1;
}

static int read_bytes(struct p3_tls *t, int fd, int dribble, char *buf, size_t want,
                      size_t *len_r) {
  struct rd r = {buf, 0, want, 0, ""};

  while (!rd_step(t, &r)) {
    if (receive(t, fd, dribble, rd_step, &r) < 0) {
      r.ret = -1;
      break;
    }
    if (r.ret != 0 || r.len == want)
      break;
  }
  *len_r = r.len;
  if (r.ret < 0 && r.err[0] != '\0')
    fprintf(stderr, "read: %s\n", r.err);
  return r.ret;
}

#define BIG_LINES 10
#define BIG_LINE 3000 /* with its newline */

static char big_char(size_t line, size_t col) {
  return (char)('a' + (line * 7 + col) % 26);
}

struct client_case {
  const char *label;
  const char *cert;    /* server's, relative to tmpdir */
  const char *ca_file; /* relative to tmpdir, or NULL */
  const char *name;
  const uint8_t *pin;
  int dribble;
  int expect;             /* 1 (handshake + echo + close_notify) or an error code */
  const char *expect_err; /* substring of errbuf for failures */
};

static void run_case(const struct client_case *c) {
  char cert[512], key[512], ca[512], err[256], line[256];
  struct p3_tls_options o;
  struct p3_tls *t = NULL;
  struct server s;
  size_t len;
  int fd, ret;

  snprintf(cert, sizeof(cert), "%s/%s.pem", tmpdir, c->cert);
  snprintf(key, sizeof(key), "%s/%s.key", tmpdir, c->cert);
  memset(&o, 0, sizeof(o));
  if (c->ca_file != NULL) {
    if (c->ca_file[0] == '/')
      snprintf(ca, sizeof(ca), "%s", c->ca_file);
    else
      snprintf(ca, sizeof(ca), "%s/%s", tmpdir, c->ca_file);
    o.ca_file = ca;
  }
  o.server_name = c->name;
  if (c->pin != NULL) {
    memcpy(o.pins[0], c->pin, 32);
    o.pin_count = 1;
  }

  ret = tls_new(&o, &t, err, sizeof(err));
  CHECK_INT(ret, 0);
  if (ret < 0) {
    fprintf(stderr, "%s: tls_new: %s\n", c->label, err);
    return;
  }
  if (server_start(&s, cert, key) < 0) {
    CHECK(!"server started");
    tls_free(t);
    return;
  }
  fd = connect_port(s.port);
  CHECK(fd >= 0);
  if (fd < 0)
    goto out;

  ret = handshake(t, fd, c->dribble, err, sizeof(err));
  fprintf(stderr, "%s: handshake %d%s%s\n", c->label, ret, err[0] ? ": " : "", err);
  if (c->expect != 1) {
    CHECK_INT(ret, c->expect);
    if (c->expect_err != NULL && strstr(err, c->expect_err) == NULL) {
      fprintf(stderr, "%s: \"%s\" lacks \"%s\"\n", c->label, err, c->expect_err);
      CHECK(!"error text as expected");
    }
    goto out;
  }
  CHECK_INT(ret, 1);
  if (ret != 1)
    goto out;
  CHECK_INT(tls_pending_input(t), 0);
  CHECK_INT(tls_handshake(t, err, sizeof(err)), 1); /* stays done */
  printf("%s: negotiated %s %s\n", c->label, tls_version(t), tls_ciphersuite(t));

  /* s_server -rev answers each line reversed. */
  CHECK_INT(tls_write(t, "hello pop3sync\r\n", 16, err, sizeof(err)), 0);
  CHECK_INT(flush(t, fd), 0);
  ret = read_bytes(t, fd, c->dribble, line, 15, &len);
  CHECK_INT(ret, 0);
  line[len] = '\0';
  CHECK_STR(line, "cnys3pop olleh\n");
  /* One write of 30000 bytes spans several records: ten lines of 3000. */
  {
    static char big[BIG_LINES * BIG_LINE], back[BIG_LINES * BIG_LINE];
    size_t i, bad = 0;

    for (i = 0; i < sizeof(big); i++)
      big[i] = i % BIG_LINE == BIG_LINE - 1 ? '\n' : big_char(i / BIG_LINE, i % BIG_LINE);
    CHECK_INT(tls_write(t, big, sizeof(big), err, sizeof(err)), 0);
    CHECK_INT(flush(t, fd), 0);
    ret = read_bytes(t, fd, c->dribble, back, sizeof(back), &len);
    CHECK_INT(ret, 0);
    CHECK_INT(len, sizeof(back));
    for (i = 0; i < len; i++) {
      size_t k = i / BIG_LINE, j = i % BIG_LINE;

      bad += back[i] != (j == BIG_LINE - 1 ? '\n' : big_char(k, BIG_LINE - 2 - j));
    }
    CHECK_INT(bad, 0);
  }
  /* "CLOSE" makes s_server shut down with a close_notify. */
  CHECK_INT(tls_write(t, "CLOSE\n", 6, err, sizeof(err)), 0);
  CHECK_INT(flush(t, fd), 0);
  ret = read_bytes(t, fd, c->dribble, line, sizeof(line), &len);
  CHECK_INT(ret, P3_EEOF);
  CHECK_INT(len, 0);
  tls_close_notify(t);
  flush(t, fd);

out:
  if (fd >= 0)
    close(fd);
  server_stop(&s);
  tls_free(t);
}

/* report_only (pop3 info): the handshake completes whatever the verdict,
 * and tls_peer says what it was and who the certificate is. */
static void report_case(const char *label, const char *certname, const char *ca_file,
                        const char *name, const uint8_t *pin, int want_verdict,
                        const char *want_reason, const char *want_fp) {
  char cert[512], key[512], ca[512], err[256];
  struct p3_tls_options o;
  struct p3_tls_peer peer;
  struct p3_tls *t = NULL;
  struct server s;
  int fd, ret;

  snprintf(cert, sizeof(cert), "%s/%s.pem", tmpdir, certname);
  snprintf(key, sizeof(key), "%s/%s.key", tmpdir, certname);
  memset(&o, 0, sizeof(o));
  o.report_only = 1;
  if (ca_file != NULL) {
    snprintf(ca, sizeof(ca), "%s/%s", tmpdir, ca_file);
    o.ca_file = ca;
  }
  o.server_name = name;
  if (pin != NULL) {
    memcpy(o.pins[0], pin, 32);
    o.pin_count = 1;
  }
  ret = tls_new(&o, &t, err, sizeof(err));
  CHECK_INT(ret, 0);
  if (ret < 0) {
    fprintf(stderr, "%s: tls_new: %s\n", label, err);
    return;
  }
  CHECK_INT(tls_peer(t, &peer), P3_ETLS); /* not before the handshake */
  if (server_start(&s, cert, key) < 0) {
    CHECK(!"server started");
    tls_free(t);
    return;
  }
  fd = connect_port(s.port);
  CHECK(fd >= 0);
  if (fd >= 0) {
    ret = handshake(t, fd, 0, err, sizeof(err));
    CHECK_INT(ret, 1);
    CHECK_INT(tls_peer(t, &peer), 0);
    CHECK_INT(peer.verdict, want_verdict);
    CHECK_INT(peer.pinned, pin != NULL && want_verdict == 0);
    if (want_reason[0] == '\0')
      CHECK_STR(peer.reason, "");
    else if (strstr(peer.reason, want_reason) == NULL) {
      fprintf(stderr, "%s: reason \"%s\" lacks \"%s\"\n", label, peer.reason, want_reason);
      CHECK(!"reason as expected");
    }
    CHECK(strstr(peer.reason, "--tls-fingerprint") == NULL); /* tls_peer shows the certificate */
    CHECK_INT(peer.have_cert, 1);
    CHECK_STR(peer.fingerprint, want_fp);
    CHECK_STR(peer.subject, strcmp(certname, "wrong") == 0 ? "CN=wrong.example" : "CN=localhost");
    CHECK_STR(peer.issuer, "CN=pop3sync test CA");
    CHECK(strlen(peer.valid_from) == 23 && strcmp(peer.valid_from + 19, " UTC") == 0);
    CHECK(strcmp(peer.valid_from, peer.valid_to) < 0);
    CHECK(strncmp(peer.pin, "sha256:", 7) == 0 && strlen(peer.pin) == 7 + 64);
    close(fd);
  }
  server_stop(&s);
  tls_free(t);
}

/* The leaf fingerprint as openssl prints it, e.g. "sha256:AB:CD:...". */
static int openssl_fingerprint(const char *pem, char *text, size_t len) {
  char cmd[1024], line[256], *eq;
  FILE *p;

  snprintf(cmd, sizeof(cmd), "openssl x509 -in '%s' -noout -fingerprint -sha256", pem);
  p = popen(cmd, "r");
  if (p == NULL)
    return -1;
  if (fgets(line, sizeof(line), p) == NULL)
    line[0] = '\0';
  pclose(p);
  eq = strchr(line, '=');
  if (eq == NULL)
    return -1;
  eq[strcspn(eq, "\r\n")] = '\0';
  snprintf(text, len, "sha256:%s", eq + 1);
  return 0;
}

static int have_openssl(void) {
  return system("openssl version >/dev/null 2>&1") == 0;
}

/* Shared configurations: one per CA file as it is, while referenced. */
static void test_config_cache(void) {
  struct p3_tls_options o;
  struct p3_tls_config *a = NULL, *b = NULL, *c = NULL;
  struct p3_tls *t1 = NULL, *t2 = NULL;
  char ca[512], other[512], err[256];
  struct stat st;

  memset(&o, 0, sizeof(o));
  snprintf(ca, sizeof(ca), "%s/ca.pem", tmpdir);
  snprintf(other, sizeof(other), "%s/wrong.pem", tmpdir);
  o.ca_file = ca;
  o.server_name = "localhost";
  CHECK_INT(tls_config_get(&o, &a, err, sizeof(err)), 0);
  CHECK_INT(tls_config_get(&o, &b, err, sizeof(err)), 0);
  CHECK(a != NULL && a == b);
  /* Connections hold their own references. */
  CHECK_INT(tls_new_from(a, &o, &t1, err, sizeof(err)), 0);
  CHECK_INT(tls_new_from(a, &o, &t2, err, sizeof(err)), 0);
  tls_config_put(b);
  /* Another file, another config. */
  o.ca_file = other;
  CHECK_INT(tls_config_get(&o, &c, err, sizeof(err)), 0);
  CHECK(c != NULL && c != a);
  tls_config_put(c);
  /* The same file changed (a new mtime): built anew. */
  o.ca_file = ca;
  CHECK_INT(stat(ca, &st), 0);
  {
    struct timespec ts[2] = {{st.st_atime, 0}, {st.st_mtime - 100, 0}};

    CHECK_INT(utimensat(AT_FDCWD, ca, ts, 0), 0);
  }
  CHECK_INT(tls_config_get(&o, &c, err, sizeof(err)), 0);
  CHECK(c != NULL && c != a);
  tls_config_put(c);
  tls_config_put(a); /* t1 and t2 keep it alive */
  CHECK_INT(tls_handshake(t1, err, sizeof(err)), 0);
  tls_free(t1);
  tls_free(t2);
  /* Pins alone: one config without a CA file. */
  o.ca_file = NULL;
  o.server_name = NULL;
  o.pin_count = 1;
  CHECK_INT(tls_config_get(&o, &a, err, sizeof(err)), 0);
  CHECK_INT(tls_config_get(&o, &b, err, sizeof(err)), 0);
  CHECK(a != NULL && a == b);
  tls_config_put(a);
  tls_config_put(b);
  tls_config_put(NULL);
  /* A file that cannot be read is named; nothing is kept. */
  snprintf(other, sizeof(other), "%s/missing.pem", tmpdir);
  o.ca_file = other;
  CHECK_INT(tls_config_get(&o, &a, err, sizeof(err)), P3_ETLSCONF);
  CHECK(a == NULL);
  CHECK(strstr(err, "missing.pem") != NULL);
}

static void test_handshakes(void) {
  const char *top = getenv("top_srcdir");
  char cmd[1024], path[512], fptext[128];
  uint8_t pin[32], badpin[32];

  if (top == NULL || top[0] == '\0')
    top = ".";
  snprintf(cmd, sizeof(cmd), "sh '%s/tests/lib/mkcert.sh' '%s'", top, tmpdir);
  CHECK_INT(system(cmd), 0);
  /* Idempotent: a second run keeps the files. */
  {
    struct stat a, b;

    snprintf(path, sizeof(path), "%s/server.pem", tmpdir);
    CHECK_INT(stat(path, &a), 0);
    CHECK_INT(system(cmd), 0);
    CHECK_INT(stat(path, &b), 0);
    CHECK(a.st_ino == b.st_ino && a.st_mtime == b.st_mtime);
  }

  snprintf(path, sizeof(path), "%s/server.pem", tmpdir);
  CHECK_INT(openssl_fingerprint(path, fptext, sizeof(fptext)), 0);
  CHECK_INT(tls_parse_fingerprint(fptext, pin), 0);
  memcpy(badpin, pin, 32);
  badpin[7] ^= 0x40;

  {
    const struct client_case cases[] = {
        {"good", "server", "ca.pem", "localhost", NULL, 0, 1, NULL},
        {"good, byte by byte", "server", "ca.pem", "localhost", NULL, 1, 1, NULL},
        {"good, lent input", "server", "ca.pem", "localhost", NULL, 2, 1, NULL},
        {"wrong name", "wrong", "ca.pem", "localhost", NULL, 0, P3_ECERT,
         "certificate is for wrong.example, not localhost"},
        {"untrusted CA", "server", "wrong.pem", "localhost", NULL, 0, P3_ECERT, "not trusted"},
        {"pin, untrusted CA, no name", "server", "wrong.pem", NULL, pin, 0, 1, NULL},
        {"pin, no CA file, no name", "server", NULL, NULL, pin, 0, 1, NULL},
        {"pin, wrong name", "wrong", NULL, "localhost", pin, 0, P3_EPIN, NULL},
        {"wrong pin", "server", "ca.pem", "localhost", badpin, 0, P3_EPIN, fptext},
        {"system CA bundle", "server", NULL, "localhost", NULL, 0, P3_ECERT, "not trusted"},
    };
    size_t i, n = sizeof(cases) / sizeof(cases[0]);

    if (access("/etc/ssl/certs/ca-certificates.crt", R_OK) != 0)
      n--; /* the last case needs the system bundle */
    for (i = 0; i < n; i++)
      run_case(&cases[i]);
  }
  report_case("report: trusted", "server", "ca.pem", "localhost", NULL, 0, "", fptext);
  {
    char wrongfp[128] = "";

    snprintf(path, sizeof(path), "%s/wrong.pem", tmpdir);
    CHECK_INT(openssl_fingerprint(path, wrongfp, sizeof(wrongfp)), 0);
    report_case("report: wrong name", "wrong", "ca.pem", "localhost", NULL, P3_ECERT,
                "certificate is for wrong.example, not localhost", wrongfp);
  }
  report_case("report: untrusted CA", "server", "wrong.pem", "localhost", NULL, P3_ECERT,
              "not trusted", fptext);
  report_case("report: pinned", "server", NULL, NULL, pin, 0, "", fptext);
  report_case("report: wrong pin", "server", NULL, NULL, badpin, P3_EPIN, fptext, fptext);
  report_case("report: no name, no pin", "server", "ca.pem", NULL, NULL, 0, "", fptext);
  test_config_cache();
}

int main(void) {
  const char *ci = getenv("CI");
  char cmd[600];
  int skip = 0;

  alarm(30);
  snprintf(tmpdir, sizeof(tmpdir), "%s/test_tls.XXXXXX",
           getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
  if (mkdtemp(tmpdir) == NULL) {
    perror("mkdtemp");
    return 1;
  }

  test_parse_fingerprint();
  test_setup(tmpdir);
  if (have_openssl())
    test_handshakes();
  else if (ci != NULL && strcmp(ci, "true") == 0)
    CHECK(!"openssl is required when CI=true");
  else
    skip = 1;

  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", tmpdir);
  if (skip && check_failures == 0) {
    fprintf(stderr, "test_tls: openssl not found, handshake tests skipped\n");
    return 77;
  }
  return check_result("test_tls");
}

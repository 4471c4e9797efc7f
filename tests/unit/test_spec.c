#include "config.h"

#include "errors.h"
#include "spec.h"

#include <errno.h>
#include <string.h>

#include "check.h"

struct good {
  const char *text;
  enum p3_tls_mode mode;
  int mode_given;
  const char *user;
  const char *tcp_host;
  const char *tls_name;
  unsigned port;
  int port_given;
  const char *identity;
};

static const struct good goods[] = {
    {"pop.example.com", P3_TLS_IMPLICIT, 0, "", "pop.example.com", "pop.example.com", 995, 0,
     "pop.example.com:995"},
    {"ssl:pop.example.com", P3_TLS_IMPLICIT, 1, "", "pop.example.com", "pop.example.com", 995, 0,
     "pop.example.com:995"},
    {"tcp:pop.example.com", P3_TLS_NONE, 1, "", "pop.example.com", "pop.example.com", 110, 0,
     "pop.example.com:110"},
    {"starttls:pop.example.com", P3_TLS_STARTTLS, 1, "", "pop.example.com", "pop.example.com", 110,
     0, "pop.example.com:110"},
    {"me@pop.example.com", P3_TLS_IMPLICIT, 0, "me", "pop.example.com", "pop.example.com", 995, 0,
     "me@pop.example.com:995"},
    {"tcp:me@localhost:1110", P3_TLS_NONE, 1, "me", "localhost", "localhost", 1110, 1,
     "me@localhost:1110"},
    {"me@gmail.com@pop.gmail.com", P3_TLS_IMPLICIT, 0, "me@gmail.com", "pop.gmail.com",
     "pop.gmail.com", 995, 0, "me@gmail.com@pop.gmail.com:995"},
    {"a@b@c@host:7", P3_TLS_IMPLICIT, 0, "a@b@c", "host", "host", 7, 1, "a@b@c@host:7"},
    {"127.0.0.1!pop.example.com", P3_TLS_IMPLICIT, 0, "", "127.0.0.1", "pop.example.com", 995, 0,
     "127.0.0.1:995"},
    {"me@tunnel!pop.example.com:2995", P3_TLS_IMPLICIT, 0, "me", "tunnel", "pop.example.com", 2995,
     1, "me@tunnel:2995"},
    {"127.0.0.1", P3_TLS_IMPLICIT, 0, "", "127.0.0.1", "", 995, 0, "127.0.0.1:995"},
    {"127.0.0.1:1110", P3_TLS_IMPLICIT, 0, "", "127.0.0.1", "", 1110, 1, "127.0.0.1:1110"},
    {"[::1]:1110", P3_TLS_IMPLICIT, 0, "", "::1", "", 1110, 1, "[::1]:1110"},
    {"[::1]", P3_TLS_IMPLICIT, 0, "", "::1", "", 995, 0, "[::1]:995"},
    {"[::1]!localhost:995", P3_TLS_IMPLICIT, 0, "", "::1", "localhost", 995, 1, "[::1]:995"},
    {"tcp:me@[::1]:1110", P3_TLS_NONE, 1, "me", "::1", "", 1110, 1, "me@[::1]:1110"},
    {"starttls:me@[2001:db8::5]!mail.example.org", P3_TLS_STARTTLS, 1, "me", "2001:db8::5",
     "mail.example.org", 110, 0, "me@[2001:db8::5]:110"},
    {"localhost![::1]:995", P3_TLS_IMPLICIT, 0, "", "localhost", "", 995, 1, "localhost:995"},
    {"[fe80::1%eth0]:995", P3_TLS_IMPLICIT, 0, "", "fe80::1%eth0", "", 995, 1,
     "[fe80::1%eth0]:995"},
    {"host:1", P3_TLS_IMPLICIT, 0, "", "host", "host", 1, 1, "host:1"},
    {"host:65535", P3_TLS_IMPLICIT, 0, "", "host", "host", 65535, 1, "host:65535"},
    {"host:00110", P3_TLS_IMPLICIT, 0, "", "host", "host", 110, 1, "host:110"},
    {"u:x!y@host_1.example-2.com.", P3_TLS_IMPLICIT, 0, "u:x!y", "host_1.example-2.com.",
     "host_1.example-2.com.", 995, 0, "u:x!y@host_1.example-2.com.:995"},
    /* inet_aton forms are IP literals too (getaddrinfo takes them). */
    {"127.1", P3_TLS_IMPLICIT, 0, "", "127.1", "", 995, 0, "127.1:995"},
    /* The mode prefix is only recognised in lower case; "TCP" is then a host
     * name followed by a port that is not a number, see the bad list. */
    {"tcp:ssl", P3_TLS_NONE, 1, "", "ssl", "ssl", 110, 0, "ssl:110"},
};

struct bad {
  const char *text;
  const char *reason; /* a substring of errbuf */
};

static const struct bad bads[] = {
    {"", "names no host"},
    {"tcp:", "names no host"},
    {"@host", "empty user name before `@'"},
    {"me@", "empty host name after `@'"},
    {"me@:995", "empty host name"},
    {":995", "empty host name"},
    {"host:", "empty port after `:'"},
    {"host:99999", "port `99999' is out of range"},
    {"host:65536", "port `65536' is out of range"},
    {"host:0", "port `0' is out of range"},
    {"host:123456789012345678901234567890", "is out of range"},
    {"host:-1", "port `-1' is not a number"},
    {"host:+1", "port `+1' is not a number"},
    {"host:99x", "port `99x' is not a number"},
    {"host:995:1", "more than one `:'"},
    {"::1", "write IPv6 addresses in brackets"},
    {"me@::1:995", "write IPv6 addresses in brackets"},
    {"localhost!::1", "write IPv6 addresses in brackets"},
    {"[::1", "lacks a closing `]'"},
    {"[]:995", "empty host name inside `[]'"},
    {"[pop.example.com]", "is not an IPv6 address"},
    {"[1.2.3.4]", "is not an IPv6 address"},
    {"[fe80::1%]", "is not an IPv6 address"},
    {"[::1]x", "unexpected `x' after the host name"},
    {"[::1]]", "unexpected `]'"},
    {"host!", "empty server host name"},
    {"host!:995", "empty server host name"},
    {"!host", "empty host name"},
    {"a!b!c", "more than one `!'"},
    {"me@host name", "space or control character at offset 7"},
    {" host", "space or control character at offset 0"},
    {"host\t", "space or control character"},
    {"me\r\n@host", "space or control character"},
    {"host\x7f", "space or control character"},
    {"ho/st", "contains the character `/'"},
    {"ho$t:995", "contains the character `$'"},
    {"h\xc3\xa9llo", "character that is not allowed"},
    {"TCP:host", "port `host' is not a number"},
};

static void test_good(void) {
  size_t i;

  for (i = 0; i < sizeof(goods) / sizeof(goods[0]); i++) {
    const struct good *g = &goods[i];
    struct p3_spec s, s2;
    char err[256] = "untouched", id[600], fmt[600];
    int r;

    memset(&s, 0x55, sizeof(s));
    r = spec_parse(g->text, &s, err, sizeof(err));
    if (r != 0) {
      fprintf(stderr, "spec `%s': %s\n", g->text, err);
      CHECK_INT(r, 0);
      continue;
    }
    CHECK_STR(err, "");
    CHECK_INT(s.mode, g->mode);
    CHECK_INT(s.mode_given, g->mode_given);
    CHECK_STR(s.user, g->user);
    CHECK_STR(s.tcp_host, g->tcp_host);
    CHECK_STR(s.tls_name, g->tls_name);
    CHECK_INT(s.port, g->port);
    CHECK_INT(s.port_given, g->port_given);
    CHECK_INT(spec_identity(&s, id, sizeof(id)), strlen(g->identity));
    CHECK_STR(id, g->identity);

    /* The canonical form parses back to the same target, except for a
     * name connected to by its IP address (`host![ip]'), which the grammar
     * cannot say without the address. */
    CHECK(spec_format(&s, fmt, sizeof(fmt)) > 0);
    if (s.tls_name[0] == '\0' && !spec_host_is_ip(s.tcp_host))
      continue;
    r = spec_parse(fmt, &s2, err, sizeof(err));
    CHECK_INT(r, 0);
    if (r == 0) {
      CHECK_INT(s2.mode, s.mode);
      CHECK_STR(s2.user, s.user);
      CHECK_STR(s2.tcp_host, s.tcp_host);
      CHECK_STR(s2.tls_name, s.tls_name);
      CHECK_INT(s2.port, s.port);
    }
  }
}

static void test_bad(void) {
  size_t i;

  for (i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
    struct p3_spec s;
    char err[256] = "";
    int r = spec_parse(bads[i].text, &s, err, sizeof(err));

    CHECK_INT(r, P3_ESPEC);
    if (strstr(err, bads[i].reason) == NULL) {
      fprintf(stderr, "spec `%s': got \"%s\", expected \"%s\"\n", bads[i].text, err,
              bads[i].reason);
      CHECK(strstr(err, bads[i].reason) != NULL);
    }
    /* A NULL errbuf is allowed. */
    CHECK_INT(spec_parse(bads[i].text, &s, NULL, 0), P3_ESPEC);
  }
}

static void test_lengths(void) {
  char text[700], err[256];
  struct p3_spec s;

  /* 255 is the longest user and host that fit. */
  memset(text, 'u', 255);
  text[255] = '@';
  memset(text + 256, 'h', 255);
  text[511] = '\0';
  CHECK_INT(spec_parse(text, &s, err, sizeof(err)), 0);
  CHECK_INT(strlen(s.user), 255);
  CHECK_INT(strlen(s.tcp_host), 255);

  memset(text, 'u', 256);
  text[256] = '@';
  strcpy(text + 257, "host");
  CHECK_INT(spec_parse(text, &s, err, sizeof(err)), P3_ESPEC);
  CHECK(strstr(err, "user name is longer than 255 bytes") != NULL);

  memset(text, 'h', 256);
  text[256] = '\0';
  CHECK_INT(spec_parse(text, &s, err, sizeof(err)), P3_ESPEC);
  CHECK(strstr(err, "longer than 255 bytes") != NULL);

  memset(text, 'h', 256);
  text[0] = 'a';
  text[1] = '!';
  text[256] = '\0';
  CHECK_INT(spec_parse(text, &s, err, sizeof(err)), 0);
  memset(text, 'h', 258);
  text[0] = 'a';
  text[1] = '!';
  text[258] = '\0';
  CHECK_INT(spec_parse(text, &s, err, sizeof(err)), P3_ESPEC);
  CHECK(strstr(err, "server host name is longer") != NULL);

  /* A small errbuf is truncated, not overrun. */
  memset(err, 'X', sizeof(err));
  CHECK_INT(spec_parse("host:99999", &s, err, 8), P3_ESPEC);
  CHECK_INT(strlen(err), 7);
  CHECK(err[8] == 'X');
}

static void test_strip_mode(void) {
  enum p3_tls_mode m;
  int given;

  CHECK_STR(spec_strip_mode("tcp:x", &m, &given), "x");
  CHECK_INT(m, P3_TLS_NONE);
  CHECK_INT(given, 1);
  CHECK_STR(spec_strip_mode("starttls:me@x", &m, &given), "me@x");
  CHECK_INT(m, P3_TLS_STARTTLS);
  CHECK_INT(given, 1);
  CHECK_STR(spec_strip_mode("ssl:", &m, &given), "");
  CHECK_INT(m, P3_TLS_IMPLICIT);
  CHECK_INT(given, 1);
  m = P3_TLS_NONE;
  CHECK_STR(spec_strip_mode("tcpx:y", &m, &given), "tcpx:y");
  CHECK_INT(m, P3_TLS_IMPLICIT);
  CHECK_INT(given, 0);
  CHECK_STR(spec_strip_mode("starttls", &m, &given), "starttls");
  CHECK_INT(given, 0);

  CHECK_INT(spec_default_port(P3_TLS_IMPLICIT), 995);
  CHECK_INT(spec_default_port(P3_TLS_NONE), 110);
  CHECK_INT(spec_default_port(P3_TLS_STARTTLS), 110);
}

static void test_is_ip(void) {
  CHECK(spec_host_is_ip("127.0.0.1"));
  CHECK(spec_host_is_ip("10.1.2.3"));
  CHECK(spec_host_is_ip("::1"));
  CHECK(spec_host_is_ip("2001:db8::1"));
  CHECK(spec_host_is_ip("::ffff:1.2.3.4"));
  CHECK(spec_host_is_ip("fe80::1%lo"));
  CHECK(!spec_host_is_ip(""));
  CHECK(!spec_host_is_ip("localhost"));
  CHECK(!spec_host_is_ip("pop.example.com"));
  CHECK(!spec_host_is_ip("1.2.3.4.example"));
  CHECK(!spec_host_is_ip("[::1]"));
  CHECK(!spec_host_is_ip("1.2.3.4 x"));
  CHECK(!spec_host_is_ip("256.1.1.1"));
  CHECK(!spec_host_is_ip("fe80::1%"));
  CHECK(!spec_host_is_ip("cafe"));
}

static void test_identity_format(void) {
  struct p3_spec s;
  char buf[64];
  char err[128];

  CHECK_INT(spec_parse("tcp:me@[::1]:1110", &s, err, sizeof(err)), 0);
  CHECK_INT(spec_identity(&s, buf, sizeof(buf)), 13);
  CHECK_STR(buf, "me@[::1]:1110");
  CHECK_INT(spec_format(&s, buf, sizeof(buf)), 17);
  CHECK_STR(buf, "tcp:me@[::1]:1110");

  /* Exactly fitting, and one byte short. */
  CHECK_INT(spec_identity(&s, buf, 14), 13);
  CHECK_STR(buf, "me@[::1]:1110");
  memset(buf, 'X', sizeof(buf));
  CHECK_INT(spec_identity(&s, buf, 13), -ENOSPC);
  CHECK(buf[13] == 'X');
  memset(buf, 'X', sizeof(buf));
  CHECK_INT(spec_format(&s, buf, 5), -ENOSPC);
  CHECK(buf[5] == 'X');

  CHECK_INT(spec_parse("me@[::1]!localhost", &s, err, sizeof(err)), 0);
  CHECK_INT(spec_format(&s, buf, sizeof(buf)), (int)strlen("ssl:me@[::1]!localhost:995"));
  CHECK_STR(buf, "ssl:me@[::1]!localhost:995");

  CHECK_INT(spec_parse("ssl:pop.example.com", &s, err, sizeof(err)), 0);
  CHECK(spec_format(&s, buf, sizeof(buf)) > 0);
  CHECK_STR(buf, "ssl:pop.example.com:995");

  /* A host or user that looks like a prefix must not change the mode when
   * the formatted text is read back (found by fuzz_spec). */
  CHECK_INT(spec_parse("tcp", &s, err, sizeof(err)), 0);
  CHECK(spec_format(&s, buf, sizeof(buf)) > 0);
  CHECK_STR(buf, "ssl:tcp:995");
  CHECK_INT(spec_parse(buf, &s, err, sizeof(err)), 0);
  CHECK_INT(s.mode, P3_TLS_IMPLICIT);
  CHECK_STR(s.tcp_host, "tcp");
  CHECK_INT(spec_parse("ssl:tcp:x@host", &s, err, sizeof(err)), 0);
  CHECK(spec_format(&s, buf, sizeof(buf)) > 0);
  CHECK_INT(spec_parse(buf, &s, err, sizeof(err)), 0);
  CHECK_INT(s.mode, P3_TLS_IMPLICIT);
  CHECK_STR(s.user, "tcp:x");

  CHECK_INT(spec_parse("starttls:u@Pop.Example.com!pop.example.com:1", &s, err, sizeof(err)), 0);
  CHECK(spec_format(&s, buf, sizeof(buf)) > 0);
  CHECK_STR(buf, "starttls:u@Pop.Example.com:1");
}

int main(void) {
  test_good();
  test_bad();
  test_lengths();
  test_strip_mode();
  test_is_ip();
  test_identity_format();
  return check_result("test_spec");
}

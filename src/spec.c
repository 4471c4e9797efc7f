#include "config.h"

#include "spec.h"

#include "errors.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* How much of a user-written piece an error message quotes: enough to
 * recognise it, never a wall of text. */
#define QUOTE_MAX 64

static const struct {
  const char *prefix;
  enum p3_tls_mode mode;
} mode_prefixes[] = {
    {"tcp:", P3_TLS_NONE},
    {"ssl:", P3_TLS_IMPLICIT},
    {"starttls:", P3_TLS_STARTTLS},
};

__attribute__((format(printf, 3, 4))) static int spec_error(char *errbuf, size_t errlen,
                                                            const char *fmt, ...) {
  va_list ap;

  if (errbuf != NULL && errlen > 0) {
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
  }
  return P3_ESPEC;
}

const char *spec_strip_mode(const char *text, enum p3_tls_mode *mode_r, int *given_r) {
  size_t i;

  for (i = 0; i < sizeof(mode_prefixes) / sizeof(mode_prefixes[0]); i++) {
    size_t n = strlen(mode_prefixes[i].prefix);
    if (strncmp(text, mode_prefixes[i].prefix, n) == 0) {
      *mode_r = mode_prefixes[i].mode;
      *given_r = 1;
      return text + n;
    }
  }
  *mode_r = P3_TLS_IMPLICIT;
  *given_r = 0;
  return text;
}

unsigned spec_default_port(enum p3_tls_mode mode) {
  return mode == P3_TLS_IMPLICIT ? 995 : 110;
}

static int is_zone_char(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

/* An IPv6 literal, optionally with a `%zone' suffix (link-local addresses
 * need one; getaddrinfo understands it, inet_pton does not). */
static int is_ipv6(const char *host) {
  char addr[INET6_ADDRSTRLEN + 1];
  struct in6_addr a6;
  const char *pct = strchr(host, '%');
  size_t n = pct != NULL ? (size_t)(pct - host) : strlen(host);
  const char *z;

  if (n == 0 || n >= sizeof(addr))
    return 0;
  memcpy(addr, host, n);
  addr[n] = '\0';
  if (inet_pton(AF_INET6, addr, &a6) != 1)
    return 0;
  if (pct == NULL)
    return 1;
  if (pct[1] == '\0')
    return 0;
  for (z = pct + 1; *z != '\0'; z++)
    if (!is_zone_char((unsigned char)*z))
      return 0;
  return 1;
}

/* getaddrinfo takes every form inet_aton does ("127.1", "0x7f000001"), so
 * those are IP literals too: treating them as names would ask mbedTLS to
 * verify a certificate for "127.1".  inet_aton also stops at white space,
 * hence the character check first. */
static int is_ipv4(const char *host) {
  struct in_addr a4;

  if (host[0] == '\0' || strspn(host, "0123456789abcdefABCDEFxX.") != strlen(host))
    return 0;
  return inet_aton(host, &a4) != 0;
}

int spec_host_is_ip(const char *host) {
  return is_ipv4(host) || is_ipv6(host);
}

static int is_host_char(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_';
}

/* Reads one host at *pp, bracketed (IPv6) or not, into out; leaves *pp on
 * the character after it.  what names the host in messages. */
static int parse_host(const char **pp, char *out, size_t outlen, const char *what, char *errbuf,
                      size_t errlen) {
  const char *p = *pp;
  const char *end, *q;
  size_t n, i;
  int colons;

  if (*p == '[') {
    end = strchr(p, ']');
    if (end == NULL)
      return spec_error(errbuf, errlen, "`%.*s' lacks a closing `]'", QUOTE_MAX, p);
    n = (size_t)(end - p - 1);
    if (n == 0)
      return spec_error(errbuf, errlen, "empty %s inside `[]'", what);
    if (n >= outlen)
      return spec_error(errbuf, errlen, "%s is longer than %zu bytes", what, outlen - 1);
    memcpy(out, p + 1, n);
    out[n] = '\0';
    if (!is_ipv6(out))
      return spec_error(errbuf, errlen, "`[%.*s]' is not an IPv6 address", QUOTE_MAX, out);
    *pp = end + 1;
    return 0;
  }

  n = strcspn(p, "!:");
  /* Two colons before the next `!' can only be an IPv6 address (or a typo);
   * without brackets its last group would be taken for a port. */
  end = p + strcspn(p, "!");
  colons = 0;
  for (q = p; q < end; q++)
    colons += *q == ':';
  if (colons > 1)
    return spec_error(errbuf, errlen,
                      "`%.*s' has more than one `:'; write IPv6 addresses in brackets, "
                      "e.g. `[::1]:995'",
                      QUOTE_MAX, p);
  if (n == 0)
    return spec_error(errbuf, errlen, "empty %s", what);
  if (n >= outlen)
    return spec_error(errbuf, errlen, "%s is longer than %zu bytes", what, outlen - 1);
  for (i = 0; i < n; i++) {
    int c = (unsigned char)p[i];
    if (!is_host_char(c)) {
      if (c > ' ' && c < 0x7f)
        return spec_error(errbuf, errlen, "%s `%.*s' contains the character `%c'", what,
                          (int)(n < QUOTE_MAX ? n : QUOTE_MAX), p, c);
      return spec_error(errbuf, errlen, "%s contains a character that is not allowed", what);
    }
  }
  memcpy(out, p, n);
  out[n] = '\0';
  *pp = p + n;
  return 0;
}

static int parse_port(const char *p, unsigned *port_r, char *errbuf, size_t errlen) {
  unsigned long v = 0;
  size_t i;

  if (*p == '\0')
    return spec_error(errbuf, errlen, "empty port after `:'");
  for (i = 0; p[i] != '\0'; i++) {
    if (p[i] < '0' || p[i] > '9')
      return spec_error(errbuf, errlen, "port `%.*s' is not a number", QUOTE_MAX, p);
    /* Saturate instead of overflowing on a long run of digits. */
    if (v <= 65535)
      v = v * 10 + (unsigned long)(p[i] - '0');
  }
  if (v < 1 || v > 65535)
    return spec_error(errbuf, errlen, "port `%.*s' is out of range (1-65535)", QUOTE_MAX, p);
  *port_r = (unsigned)v;
  return 0;
}

int spec_parse(const char *text, struct p3_spec *spec_r, char *errbuf, size_t errlen) {
  struct p3_spec s;
  char server[P3_HOST_MAX];
  const char *rest, *at, *p;
  size_t i, ulen;
  int r;

  memset(&s, 0, sizeof(s));
  if (errbuf != NULL && errlen > 0)
    errbuf[0] = '\0';

  /* Checked up front so that no later message can quote a control
   * character to the terminal. */
  for (i = 0; text[i] != '\0'; i++) {
    unsigned char c = (unsigned char)text[i];
    if (c <= ' ' || c == 0x7f)
      return spec_error(errbuf, errlen,
                        "the spec contains a space or control character at offset %zu", i);
  }

  rest = spec_strip_mode(text, &s.mode, &s.mode_given);
  if (*rest == '\0')
    return spec_error(errbuf, errlen, "the spec names no host");

  /* The user is everything before the last `@': user names are often mail
   * addresses (me@gmail.com@pop.gmail.com), host names never hold an `@'. */
  at = strrchr(rest, '@');
  p = rest;
  if (at != NULL) {
    ulen = (size_t)(at - rest);
    if (ulen == 0)
      return spec_error(errbuf, errlen, "empty user name before `@'");
    if (ulen >= sizeof(s.user))
      return spec_error(errbuf, errlen, "user name is longer than %zu bytes", sizeof(s.user) - 1);
    memcpy(s.user, rest, ulen);
    s.user[ulen] = '\0';
    p = at + 1;
  }

  if (*p == '\0')
    return spec_error(errbuf, errlen, "empty host name after `@'");

  r = parse_host(&p, server, sizeof(server), "host name", errbuf, errlen);
  if (r < 0)
    return r;
  if (*p == '!') {
    /* tcp_host!server_hostname: connect to the first, verify the second. */
    memcpy(s.tcp_host, server, sizeof(s.tcp_host));
    p++;
    r = parse_host(&p, server, sizeof(server), "server host name", errbuf, errlen);
    if (r < 0)
      return r;
    if (*p == '!')
      return spec_error(errbuf, errlen, "more than one `!' in the spec");
  } else {
    memcpy(s.tcp_host, server, sizeof(s.tcp_host));
  }

  if (*p == ':') {
    r = parse_port(p + 1, &s.port, errbuf, errlen);
    if (r < 0)
      return r;
    s.port_given = 1;
  } else if (*p != '\0') {
    return spec_error(errbuf, errlen, "unexpected `%.*s' after the host name", QUOTE_MAX, p);
  } else {
    s.port = spec_default_port(s.mode);
  }

  /* mbedTLS 2.28 cannot check a certificate against an IP address, and RFC
   * 6066 forbids IP literals in SNI: leave the name empty so the TLS layer
   * insists on a pinned fingerprint instead. */
  if (!spec_host_is_ip(server))
    memcpy(s.tls_name, server, sizeof(s.tls_name));

  *spec_r = s;
  return 0;
}

static int host_needs_brackets(const char *host) {
  return strchr(host, ':') != NULL;
}

static int finish(int n, char *buf, size_t buflen) {
  if (n < 0 || (size_t)n >= buflen) {
    if (buflen > 0)
      buf[0] = '\0';
    return -ENOSPC;
  }
  return n;
}

const char *spec_mode_name(enum p3_tls_mode mode) {
  return mode == P3_TLS_NONE ? "tcp" : mode == P3_TLS_STARTTLS ? "starttls" : "ssl";
}

int spec_host_port(const char *host, unsigned port, char *buf, size_t buflen) {
  int b = host_needs_brackets(host);
  return finish(snprintf(buf, buflen, "%s%s%s:%u", b ? "[" : "", host, b ? "]" : "", port), buf,
                buflen);
}

int spec_identity(const struct p3_spec *spec, char *buf, size_t buflen) {
  int b = host_needs_brackets(spec->tcp_host);
  int n = snprintf(buf, buflen, "%s%s%s%s%s:%u", spec->user, spec->user[0] != '\0' ? "@" : "",
                   b ? "[" : "", spec->tcp_host, b ? "]" : "", spec->port);
  return finish(n, buf, buflen);
}

/* Canonical form: the mode prefix unless it is the default (ssl:), the user
 * when known, `tcp_host!' only when the certificate name differs from the
 * connection host, and always the port, so a message shows exactly where
 * pop3sync connects.  Parsing the result gives the same target. */
int spec_format(const struct p3_spec *spec, char *buf, size_t buflen) {
  /* The prefix is always written: a user or host that itself looks like a
   * prefix ("tcp", "ssl:x@host") must not change the mode when read back. */
  const char *prefix = spec_mode_name(spec->mode);
  int bt = host_needs_brackets(spec->tcp_host);
  int n;

  if (spec->tls_name[0] != '\0' && strcasecmp(spec->tls_name, spec->tcp_host) != 0)
    n = snprintf(buf, buflen, "%s:%s%s%s%s%s!%s:%u", prefix, spec->user,
                 spec->user[0] != '\0' ? "@" : "", bt ? "[" : "", spec->tcp_host, bt ? "]" : "",
                 spec->tls_name, spec->port);
  else
    n = snprintf(buf, buflen, "%s:%s%s%s%s%s:%u", prefix, spec->user,
                 spec->user[0] != '\0' ? "@" : "", bt ? "[" : "", spec->tcp_host, bt ? "]" : "",
                 spec->port);
  return finish(n, buf, buflen);
}

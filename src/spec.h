/* Connection specs: `[tcp:|ssl:|starttls:][user@][tcp_host!]server_hostname[:port]`,
 * compatible with the original cs.pop3 tool.  Pure functions, no I/O. */
#ifndef P3_SPEC_H
#define P3_SPEC_H

#include <stddef.h>

enum p3_tls_mode {
  P3_TLS_IMPLICIT = 0, /* ssl: (default), port 995 */
  P3_TLS_NONE,         /* tcp:, port 110 */
  P3_TLS_STARTTLS      /* starttls:, port 110, upgraded with STLS */
};

#define P3_HOST_MAX 256
#define P3_USER_MAX 256

struct p3_spec {
  enum p3_tls_mode mode;
  int mode_given;             /* a prefix was written */
  char user[P3_USER_MAX];     /* empty when not given */
  char tcp_host[P3_HOST_MAX]; /* where to connect; IPv6 without brackets */
  char tls_name[P3_HOST_MAX]; /* SNI and certificate name; "" when it is an IP literal */
  unsigned port;              /* always set: the mode's default when not written */
  int port_given;
};

/* Parses text into *spec_r.  Does not consult netrc and does not fill a
 * default user.  tls_name is server_hostname, or "" when server_hostname
 * is an IP literal (mbedTLS 2.28 cannot verify those; no SNI is sent).
 * Returns 0, or P3_ESPEC with a reason in errbuf (may be NULL). */
int spec_parse(const char *text, struct p3_spec *spec_r, char *errbuf, size_t errlen);

/* Strips a leading `tcp:`, `ssl:` or `starttls:` from text: returns a pointer
 * past it and sets *mode_r (P3_TLS_IMPLICIT and *given_r = 0 when absent). */
const char *spec_strip_mode(const char *text, enum p3_tls_mode *mode_r, int *given_r);

/* Default port of a mode: 995 for implicit TLS, 110 otherwise. */
unsigned spec_default_port(enum p3_tls_mode mode);

/* 1 when host is an IPv4 or IPv6 literal (without brackets). */
int spec_host_is_ip(const char *host);

/* "tcp", "starttls" or "ssl": the mode as its spec prefix names it. */
const char *spec_mode_name(enum p3_tls_mode mode);

/* Writes "host:port" (an IPv6 host in brackets) into buf.  Same return
 * convention as spec_identity. */
int spec_host_port(const char *host, unsigned port, char *buf, size_t buflen);

/* Writes "user@tcp_host:port" (IPv6 hosts in brackets) into buf: the key used
 * for netrc `machine` lookups and for state files.  Returns the length, or
 * -ENOSPC (buf untouched beyond buflen) when it does not fit. */
int spec_identity(const struct p3_spec *spec, char *buf, size_t buflen);

/* Writes the spec back in canonical text form, always with its mode prefix
 * (so that reading it back gives the same spec).  Same
 * return convention as spec_identity. */
int spec_format(const struct p3_spec *spec, char *buf, size_t buflen);

#endif

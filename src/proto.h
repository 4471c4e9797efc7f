/* POP3 wire format: pure functions over bytes, no I/O.
 * Status lines (RFC 1939, response codes from RFC 2449/3206), the
 * multi-line decoder (dot-unstuffing, CRLF -> LF, end marker), and the
 * parsers for CAPA, LIST and UIDL lines. */
#ifndef P3_PROTO_H
#define P3_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* Longest status or listing line accepted, CRLF included.  RFC 2449 allows
 * 512 octets; real servers are sometimes chattier. */
#define P3_LINE_MAX 4096

enum p3_resp_code {
  P3_RC_NONE = 0,
  P3_RC_IN_USE,      /* [IN-USE] */
  P3_RC_LOGIN_DELAY, /* [LOGIN-DELAY] */
  P3_RC_SYS_TEMP,    /* [SYS/TEMP] */
  P3_RC_SYS_PERM,    /* [SYS/PERM] */
  P3_RC_AUTH,        /* [AUTH] */
  P3_RC_OTHER        /* any other bracketed code */
};

struct p3_status {
  int ok;                 /* 1 for +OK, 0 for -ERR */
  enum p3_resp_code code; /* only meaningful for -ERR (and harmless for +OK) */
  const char *text;       /* points into the line: text after the status word */
  size_t text_len;
};

/* Parses one status line (without its CRLF or LF).  "+OK" and "-ERR" must be
 * followed by end of line or a space; the status word is case-sensitive as
 * in RFC 1939.  Returns 0 or P3_EPROTO. */
int proto_parse_status(const char *line, size_t len, struct p3_status *st_r);

/* Name of a response code as the server wrote it ("IN-USE", ...), or NULL. */
const char *proto_resp_code_name(enum p3_resp_code code);

/* Multi-line decoder state.  Feed it the bytes after the +OK line; it writes
 * the decoded body (dot-unstuffed, CRLF -> LF, a bare CR kept, a bare LF
 * taken as a line end) and stops at the terminating "." line.  Correct at
 * any split of the input across calls. */
struct p3_mldec {
  int state;
  uint64_t raw_bytes; /* wire bytes of the body so far (stuffing dots and CRs
                         counted, the terminating ".CRLF" not) */
  uint64_t lines;     /* line ends seen in the body */
};

void mldec_init(struct p3_mldec *d);

/* Decodes in[0..inlen) into out, which must hold at least inlen + 1 bytes
 * (a CR held back at the end of the previous chunk may be released).
 * *outlen_r is set to the bytes written, *consumed_r to the input bytes used:
 * all of inlen unless the end marker was reached, in which case it counts
 * up to and including the terminating line's LF.
 * Returns 1 when the end marker was consumed, 0 when more input is needed. */
int mldec_feed(struct p3_mldec *d, const char *in, size_t inlen, char *out, size_t *outlen_r,
               size_t *consumed_r);

/* SASL mechanisms named by CAPA's "SASL" line (RFC 5034), as bits. */
enum { P3_SASL_PLAIN = 1, P3_SASL_LOGIN = 2, P3_SASL_XOAUTH2 = 4, P3_SASL_OAUTHBEARER = 8 };

/* Room for the mechanisms as the server listed them (for messages). */
#define P3_SASL_LIST_MAX 128

/* Capabilities we care about, from a CAPA listing. */
struct p3_caps {
  unsigned stls : 1;
  unsigned pipelining : 1;
  unsigned uidl : 1;
  unsigned user : 1;
  unsigned top : 1;
  unsigned resp_codes : 1;
  unsigned auth_resp_code : 1;
  unsigned sasl_plain : 1;  /* same as sasl & P3_SASL_PLAIN */
  unsigned expire_zero : 1; /* EXPIRE 0: retrieved messages are deleted at QUIT */
  unsigned has_expire : 1;
  unsigned utf8 : 1; /* RFC 6856 UTF8 (with or without its USER argument) */
  unsigned sasl;     /* P3_SASL_* bits of the mechanisms offered */
  /* Every mechanism of the SASL line(s), upper-cased and blank-separated,
   * printable ASCII only, cut at a whole name when it would not fit. */
  char sasl_list[P3_SASL_LIST_MAX];
  long login_delay; /* seconds, -1 when not advertised */
  long expire_days; /* -1 when not advertised or NEVER */
};

void proto_caps_init(struct p3_caps *c);

/* Applies one CAPA listing line (decoded, without LF) to *c.  Unknown
 * capabilities are ignored. */
void proto_caps_line(struct p3_caps *c, const char *line, size_t len);

/* Parses a LIST listing line "N SIZE".  Returns 0 or P3_EPROTO. */
int proto_parse_list_line(const char *line, size_t len, unsigned long *num_r, uint64_t *size_r);

/* Longest UID accepted.  RFC 1939 says 1-70 characters, but servers exceed
 * it (hash-based UIDs, long folder names); the UID journal takes this many
 * too. */
#define P3_UID_MAX 512

/* Parses a UIDL listing line "N UID" (UID: 1-P3_UID_MAX printable characters
 * 0x21-0x7e).  On success *uid_r points into line and *uidlen_r is its
 * length.  Returns 0 or P3_EPROTO; on P3_EPROTO *num_r is the message number
 * when that part was well-formed (only the UID is bad: too long, empty or
 * not printable) and 0 when even the number could not be read. */
int proto_parse_uidl_line(const char *line, size_t len, unsigned long *num_r, const char **uid_r,
                          size_t *uidlen_r);

/* Extracts the octet count of a RETR "+OK N octets" text (the status text).
 * Returns 1 and sets *size_r when the text starts with a number, 0 otherwise. */
int proto_retr_octets(const char *text, size_t len, uint64_t *size_r);

/* 1 when the status text reads "N octets..." (the word case-insensitive),
 * the form RFC 1939 uses for a RETR reply; a UIDL reply "N UID" read in the
 * wrong place has a number but not the word. */
int proto_retr_says_octets(const char *text, size_t len);

#endif

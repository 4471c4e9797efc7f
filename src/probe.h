/* The conversation of `pop3 info` (info.c): greeting, CAPA, and for
 * starttls: STLS, the handshake, CAPA again; then QUIT.  It never sends
 * USER, PASS, APOP or AUTH, so no password is ever needed.  Pure: bytes in,
 * commands and events out, no I/O (like session.h, much smaller).
 *
 * The caller feeds what the server sent with probe_feed() and acts on each
 * event it returns: PROBE_SEND (write probe_command()), PROBE_START_TLS
 * (begin the STLS handshake; call probe_tls_ready() once it completes),
 * PROBE_DONE (close).  What was seen is kept in struct probe for the
 * report; every string kept there is already cleaned with probe_clean(). */
#ifndef P3_PROBE_H
#define P3_PROBE_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

enum probe_event {
  PROBE_NEED_MORE = 0, /* every byte used: wait for more */
  PROBE_SEND,          /* send probe_command() now, then feed the rest */
  PROBE_START_TLS,     /* STLS accepted: start the handshake (bytes after the +OK
                          line are a plaintext injection: the caller must refuse them) */
  PROBE_DONE           /* the conversation is over: close the connection */
};

enum probe_phase {
  PROBE_GREETING,
  PROBE_CAPA,      /* CAPA sent, its status line awaited */
  PROBE_CAPA_LIST, /* reading CAPA's listing */
  PROBE_STLS,
  PROBE_TLS_WAIT, /* the caller runs the handshake */
  PROBE_QUIT,
  PROBE_FINISHED,
  PROBE_FAILED
};

/* Longest server text kept (a greeting, an -ERR); longer is cut with "...". */
#define PROBE_TEXT_MAX 512
/* Room for one CAPA listing, joined with ", "; more is cut with "...". */
#define PROBE_CAPS_MAX 2048
/* A listing of more lines than this is refused (P3_EPROTO): a hostile
 * server could otherwise talk for ever, each line within the timeout. */
#define PROBE_CAPA_LINES_MAX 500

struct probe_capa {
  int state;                 /* 0: not asked, 1: listed, -1: -ERR (CAPA not supported) */
  char text[PROBE_CAPS_MAX]; /* the lines, cleaned, joined with ", " */
  char err[PROBE_TEXT_MAX];  /* the -ERR line, cleaned */
  struct p3_caps caps;       /* proto_caps_line over the listing */
  unsigned lines;
  int cut; /* text ends with "..." */
};

struct probe {
  int starttls; /* upgrade with STLS after the first CAPA */
  enum probe_phase phase;
  int tls; /* the STLS handshake was started */
  const char *cmd;
  uint64_t lines; /* lines received so far (status and listing), for conn_expect */
  char line[P3_LINE_MAX];
  size_t linelen;
  struct p3_mldec dec;
  char greeting[PROBE_TEXT_MAX]; /* the whole greeting line, cleaned */
  int greeting_ok;               /* +OK */
  int apop;                      /* the greeting carries an APOP timestamp */
  /* CAPA in plaintext (starttls only) and the one in force: after TLS for
   * starttls, the only one otherwise. */
  struct probe_capa before, after;
  /* starttls: why the upgrade did not happen ("" when it did or was not
   * tried): STLS missing from CAPA, or STLS's -ERR line. */
  char stls_refused[PROBE_TEXT_MAX];
  char error[256]; /* after a negative return of probe_feed */
};

/* Starts the conversation: waiting for the greeting. */
void probe_init(struct probe *p, int starttls);

/* Consumes what the server sent, buf[0..len), up to the next event: sets
 * *used_r to the bytes used and returns the event (feed the rest after
 * acting on it), or P3_EPROTO with p->error set (a garbled or overlong
 * line, a listing without end).  Bytes after PROBE_DONE are ignored. */
int probe_feed(struct probe *p, const char *buf, size_t len, size_t *used_r);

/* The command to send after PROBE_SEND, CRLF included (static string). */
const char *probe_command(const struct probe *p);

/* The STLS handshake completed: returns PROBE_SEND (CAPA again). */
int probe_tls_ready(struct probe *p);

/* What the caller waits for now: 1 when a reply is outstanding (a line
 * must come within the timeout), 0 when idle (handshake or finished). */
int probe_waiting(const struct probe *p);

/* 1 when QUIT was sent (a close by the server is then the normal end). */
int probe_quitting(const struct probe *p);

/* Copies len bytes of untrusted text into out (cap bytes, NUL-terminated):
 * printable ASCII is kept, every other byte (control characters, escape
 * sequences, bytes over 0x7e) becomes '?', and what does not fit is cut with
 * "...".  Returns out. */
char *probe_clean(const char *in, size_t len, char *out, size_t cap);

/* The login methods the server offers, as one line into buf: from the CAPA
 * in force "USER/PASS", "SASL " and the mechanisms, and "APOP" when the
 * greeting has a timestamp, joined with ", "; "none advertised" when CAPA
 * listed none; without CAPA, what is known and "others unknown (no CAPA)". */
void probe_login_methods(const struct probe *p, char *buf, size_t len);

#endif

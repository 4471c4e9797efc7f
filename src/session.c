#include "config.h"

#include "session.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "errors.h"
#include "sasl.h"

/* C_UIDL1 is "UIDL n", sent right before each pipelined "RETR n": its reply
 * names the message, so a reply that went missing or came twice is caught
 * at once instead of shifting bodies onto the wrong UIDs. */
enum cmd_kind {
  C_GREETING,
  C_CAPA,
  C_STLS,
  C_USER,
  C_PASS,
  C_UIDL,
  C_LIST,
  C_RETR,
  C_DELE,
  C_QUIT,
  C_UIDL1,
  C_UTF8,
  C_TOP,
  C_APOP,
  C_AUTH /* one entry for the whole exchange: "+ " challenges do not pop it */
};

static const char *const cmd_names[] = {"greeting", "CAPA", "STLS", "USER", "PASS",
                                        "UIDL",     "LIST", "RETR", "DELE", "QUIT",
                                        "UIDL",     "UTF8", "TOP",  "APOP", "AUTH"};

enum session_state {
  ST_GREETING, /* waiting for the server's greeting */
  ST_CAPA,     /* CAPA in flight (before or after TLS) */
  ST_STLS,     /* STLS in flight */
  ST_TLS_WAIT, /* transport is doing the handshake */
  ST_AUTH,     /* USER/PASS, APOP or an AUTH exchange in flight */
  ST_LISTING,  /* UIDL/LIST in flight */
  ST_PROBE,    /* TOP n 0 probes in flight (only when the owner asked) */
  ST_TRANSFER, /* RETR/DELE pipeline */
  ST_BARRIER,  /* fsync of new/ running */
  ST_QUIT,     /* QUIT in flight */
  ST_DONE      /* done() called */
};

static const char *const state_names[] = {"greeting", "capa",    "stls",  "tls-wait",
                                          "auth",     "listing", "probe", "transfer",
                                          "barrier",  "quit",    "done"};

struct cmd {
  uint8_t kind;
  unsigned depth; /* round trips up to and including this one (see cause) */
  size_t idx;     /* message index for RETR/DELE */
};

/* A ring of commands in flight; sized for the window plus the DELEs that may
 * ride along with it, so it never grows during a session. */
struct fifo {
  struct cmd *v;
  size_t cap, head, len;
};

struct buf {
  char *data;
  size_t len, cap;
};

struct session {
  struct session_options opts;
  struct session_ops ops;
  void *data;
  enum session_state state;
  int pipelined;
  int tls_active;

  struct fifo fifo;
  struct buf out;

  /* Reply parsing. */
  char line[P3_LINE_MAX];
  size_t line_len;
  int in_body; /* a multi-line reply body is being decoded */
  struct p3_mldec dec;
  char *scratch; /* decoder output, SCRATCH_SIZE + 1 bytes */
  char list_line[P3_LINE_MAX];
  size_t list_line_len;
  int list_line_long;   /* the listing line outgrew list_line: the rest is dropped */
  uint64_t retr_octets; /* octet count announced by the RETR +OK, or UINT64_MAX */
  /* The message whose "UIDL n" reply just named it, or SIZE_MAX: the next
   * RETR/TOP reply, if for that message, has an established identity. */
  size_t checked_idx;
  int reply_identity;   /* the RETR/TOP reply being received has one */
  int body_open;        /* msg_begin succeeded; msg_end or msg_abort is owed */
  uint64_t lines_done;  /* status lines and multi-line terminators received */
  uint64_t body_octets; /* wire octets of multi-line bodies received */

  /* Capabilities and login. */
  struct p3_caps caps;
  int capa_ok;
  int user_failed;
  int auth_err;
  enum session_auth method;           /* chosen after CAPA; AUTO before */
  unsigned auth_sent;                 /* client responses sent in the AUTH exchange */
  int auth_cancelled;                 /* "*" sent: the -ERR that follows ends it */
  int oauth_challenged;               /* an OAuth failure challenge was answered */
  int oauth_refused;                  /* ended with P3_EOAUTH */
  char oauth_err[160];                /* the failure challenge, described */
  char apop_ts[SASL_APOP_TS_MAX + 1]; /* the greeting's timestamp, or "" */

  /* The one flight (session_options.mem_capa). */
  struct p3_caps mem_caps;    /* the remembered CAPA, parsed */
  int mem_capa_ok;            /* mem_caps holds something */
  enum session_flight flight; /* NONE, SENT, HELD or STALE */
  int flight_listing;         /* the flight's UIDL and LIST are the listing */
  int flight_utf8;            /* UTF8 went out with the flight */
  int flight_nopipe;          /* the fresh CAPA lacks PIPELINING: lock-step after the listing */
  size_t stale;               /* flight replies to drop before the fallback login */
  int flight_listing_sent;    /* UIDL and LIST went out behind the login in the flight */
  int listing_wait;           /* that login was accepted; no reply line since */
  int listing_logged_in;      /* that login was accepted (stays set) */
  enum session_early early;   /* the flight went out before the greeting */
  int greeting_changed;       /* early: the greeting's APOP stamp is not the remembered shape */
  int greeting_refused;       /* the greeting was -ERR */
  int mem_courier;            /* the remembered CAPA says IMPLEMENTATION Courier */
  char impl[64];              /* the first word of the fresh CAPA's IMPLEMENTATION, or "" */

  /* Listing. */
  struct session_msg *msgs;
  size_t msg_count, msg_cap;
  char *uids;
  size_t uids_len, uids_cap;
  int uidl_ok;
  int uidl_failed;
  int list_done;
  size_t uidl_bad; /* UIDL lines whose UID was malformed or too long */
  int uids_unique;

  /* Header probes (session_probe_msg). */
  size_t probes;         /* messages marked SESSION_MSG_PROBE */
  size_t probe_next;     /* next message index to consider for TOP */
  size_t probe_inflight; /* TOPs sent and not fully answered */

  /* Transfer. */
  size_t next_retr;     /* next message index to consider for RETR */
  size_t retr_inflight; /* RETRs sent and not fully answered */
  size_t saves_pending; /* bodies handed to msg_end, not yet reported */
  size_t *dele_ready;   /* indexes saved (or known delivered), DELE not yet sent */
  size_t dele_ready_len;
  size_t dele_next_known; /* scan position for SESSION_MSG_DELETE messages */
  int no_quit;            /* a retrieved message was not saved, or desync */
  size_t unchecked;       /* pipelined RETRs sent without a "UIDL n" before them */
  size_t resized;         /* messages delivered with a size other than LIST's */
  int no_dele;            /* desync: never DELE again */
  int stopping;
  int barrier_done;
  int partial_err; /* error to report after a successful QUIT */

  struct session_stats stats;
  char errtext[512];
  enum p3_resp_code errcode;
  int finished;
  int final_err;
  size_t error_idx; /* message the session failed at, or SIZE_MAX */
  size_t deles_sent;

  /* Round trips, counted deterministically as causal depth: a command sent
   * because of a reply (or of a save, the barrier, the TLS handshake that
   * followed a reply) is one round trip deeper than that reply; the
   * greeting is the first.  Commands that ride along in the same write
   * share a depth, so pipelining shows.  The session's count is the
   * deepest command sent (session_round_trips). */
  unsigned cause;         /* depth of what the commands queued now answer to */
  unsigned max_depth;     /* deepest command queued */
  unsigned reply_depth;   /* depth of the last reply processed */
  unsigned barrier_cause; /* the cause when the barrier started */
  unsigned *msg_depth;    /* per message: depth of its RETR reply */
};

#define SCRATCH_SIZE 65536

/* ---- small helpers */

static int buf_append(struct buf *b, const char *p, size_t n) {
  if (n == 0)
    return 0;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
      cap *= 2;
    /* Not realloc: the old block may hold a secret (PASS, AUTH) that must
     * not stay behind in freed memory. */
    char *d = malloc(cap);
    if (d == NULL)
      return -ENOMEM;
    if (b->len)
      memcpy(d, b->data, b->len);
    sasl_wipe(b->data, b->cap);
    free(b->data);
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

static struct cmd *fifo_head(struct session *s) {
  return s->fifo.len ? &s->fifo.v[s->fifo.head] : NULL;
}

static void fifo_pop(struct session *s) {
  s->fifo.head = (s->fifo.head + 1) % s->fifo.cap;
  s->fifo.len--;
}

static int fifo_push(struct session *s, enum cmd_kind kind, size_t idx) {
  if (s->fifo.len == s->fifo.cap)
    return -ENOBUFS; /* a logic error: the ring is sized for the worst case */
  struct cmd *c = &s->fifo.v[(s->fifo.head + s->fifo.len) % s->fifo.cap];
  c->kind = (uint8_t)kind;
  c->idx = idx;
  c->depth = s->cause + 1;
  if (c->depth > s->max_depth)
    s->max_depth = c->depth;
  s->fifo.len++;
  return 0;
}

static void set_state(struct session *s, enum session_state st) {
  if (s->ops.trace && s->state != st) {
    char msg[64];
    int n = snprintf(msg, sizeof msg, "state %s -> %s", state_names[s->state], state_names[st]);
    s->ops.trace(s->data, '-', msg, (size_t)n);
  }
  s->state = st;
}

static void note(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A note of the session's own for the trace (direction '-'). */
static void note(struct session *s, const char *fmt, ...) {
  if (s->ops.trace == NULL)
    return;
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  s->ops.trace(s->data, '-', msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
}

static void finish(struct session *s, int err) {
  if (s->finished)
    return;
  s->finished = 1;
  /* Sent before the greeting and the session ended before the login's +OK:
   * the server broke it (dropped it, timed out, refused CAPA).  An -ERR
   * greeting leaves it unjudged (SENT), and so does a refused login: the
   * server read it and answered it, as it would have after the greeting (it
   * cannot tell when a line was sent), so a wrong password does not cost
   * every later run a round trip. */
  if (s->early == SESSION_EARLY_SENT && !s->greeting_refused && err != P3_EAUTH &&
      err != P3_EINUSE && err != P3_ELOGINDELAY)
    s->early = SESSION_EARLY_BROKEN;
  if (err == P3_EDESYNC || err == P3_EPROTO) {
    /* A body that ended early at a stray "." line looks like a resized
     * message, and its rest is what then fails to parse: once the stream is
     * known to be broken, a size that differed is no proof any more. */
    for (size_t i = 0; i < s->msg_count; i++)
      if (s->msgs[i].flags & SESSION_MSG_RESIZED)
        s->msgs[i].flags &= (uint16_t)~SESSION_MSG_VERIFIED;
  }
  if (s->body_open) {
    /* A body cut short never reaches new/. */
    s->body_open = 0;
    s->ops.msg_abort(s->data, fifo_head(s)->idx);
  }
  s->in_body = 0;
  s->final_err = err;
  set_state(s, ST_DONE);
  if (s->error_idx != SIZE_MAX && s->ops.msg_failed)
    s->ops.msg_failed(s->data, s->error_idx, s->errtext);
  s->ops.done(s->data, err);
}

static void set_server_error(struct session *s, const struct p3_status *st) {
  size_t n = st->text_len < sizeof s->errtext - 1 ? st->text_len : sizeof s->errtext - 1;
  memcpy(s->errtext, st->text, n);
  s->errtext[n] = '\0';
  /* Keep the message printable: servers may send anything. */
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s->errtext[i] < 0x20 || s->errtext[i] == 0x7f)
      s->errtext[i] = '?';
  s->errcode = st->code;
}

static void set_local_error(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_local_error(struct session *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->errtext, sizeof s->errtext, fmt, ap);
  va_end(ap);
  s->errcode = P3_RC_NONE;
}

/* Fails the session because of a reply that cannot belong to its command:
 * from here on nothing is deleted and no QUIT is sent. */
static void desync(struct session *s, const char *why) {
  s->no_dele = 1;
  s->no_quit = 1;
  set_local_error(s, "%s", why);
  finish(s, P3_EDESYNC);
}

/* A message that was (being) retrieved could not be saved.  Servers that
 * advertise EXPIRE 0 (and Gmail) delete whatever was retrieved at QUIT, so
 * the session ends at once without QUIT; the server keeps every message. */
static void save_failed(struct session *s) {
  s->no_dele = 1;
  s->no_quit = 1;
  if (s->errtext[0] == '\0')
    set_local_error(s, "%s", "a message could not be saved");
  finish(s, P3_ESAVE);
}

/* send_cmd's work, with line (P3_LINE_MAX octets) as its scratch space. */
static int queue_cmd(struct session *s, enum cmd_kind kind, size_t idx, const char *arg,
                     char *line) {
  int n;
  if (arg)
    n = snprintf(line, P3_LINE_MAX, "%s %s\r\n", cmd_names[kind], arg);
  else if (kind == C_RETR || kind == C_DELE || kind == C_UIDL1)
    n = snprintf(line, P3_LINE_MAX, "%s %lu\r\n", cmd_names[kind], s->msgs[idx].num);
  else if (kind == C_TOP)
    n = snprintf(line, P3_LINE_MAX, "TOP %lu 0\r\n", s->msgs[idx].num);
  else
    n = snprintf(line, P3_LINE_MAX, "%s\r\n", cmd_names[kind]);
  if (n < 0 || n >= P3_LINE_MAX)
    return P3_EUSAGE;
  /* A CR, LF or NUL in a user name or password would smuggle in commands. */
  if (arg && arg[strcspn(arg, "\r\n")] != '\0')
    return P3_EUSAGE;
  int err = fifo_push(s, kind, idx);
  if (err)
    return err;
  if (kind == C_DELE)
    s->deles_sent++;
  if (buf_append(&s->out, line, (size_t)n) != 0)
    return -ENOMEM;
  if (s->ops.trace) {
    if (kind == C_PASS) {
      s->ops.trace(s->data, 'C', "PASS ********", 13);
    } else if (kind == C_APOP) {
      /* "APOP user digest": the digest is a password equivalent for this
       * timestamp, and MD5 is weak. */
      char masked[P3_LINE_MAX];
      int m = snprintf(masked, sizeof masked, "APOP %s ********", s->opts.user);
      if (m > 0)
        s->ops.trace(s->data, 'C', masked,
                     (size_t)m < sizeof masked ? (size_t)m : sizeof masked - 1);
    } else {
      s->ops.trace(s->data, 'C', line, (size_t)n - 2);
    }
  }
  return 0;
}

static int send_cmd(struct session *s, enum cmd_kind kind, size_t idx, const char *arg) {
  char line[P3_LINE_MAX];
  int err = queue_cmd(s, kind, idx, arg, line);
  if (arg)
    sasl_wipe(line, sizeof line); /* PASS, APOP: no copy of a secret left on the stack */
  return err;
}

/* Queues a line that carries a secret and may be longer than P3_LINE_MAX
 * (an OAuth token is often 2 KiB or more): prefix (may be "") then payload
 * then CRLF, with no FIFO entry of its own (the caller pushes C_AUTH for
 * an AUTH command; the client lines within an exchange have none).  The
 * trace shows prefix and "********", or the payload when shown (a "*"
 * cancel, an OAuth error acknowledgement: no secrets). */
static int send_secret_line(struct session *s, const char *prefix, const char *payload, size_t len,
                            int shown) {
  if (memchr(payload, '\r', len) || memchr(payload, '\n', len))
    return P3_EUSAGE;
  if (buf_append(&s->out, prefix, strlen(prefix)) != 0 || buf_append(&s->out, payload, len) != 0 ||
      buf_append(&s->out, "\r\n", 2) != 0)
    return -ENOMEM;
  if (s->ops.trace) {
    char masked[64];
    int m = snprintf(masked, sizeof masked, "%s%s", prefix, shown ? payload : "********");
    if (m >= 0)
      s->ops.trace(s->data, 'C', masked, (size_t)m < sizeof masked ? (size_t)m : sizeof masked - 1);
  }
  return 0;
}

/* ---- the transfer phase */

static void start_barrier(struct session *s);
static void maybe_quit(struct session *s);
static void pump_probes(struct session *s);

static int want_retr(const struct session *s, size_t idx) {
  return !(s->msgs[idx].flags & (SESSION_MSG_SKIP | SESSION_MSG_DELETE));
}

/* Queues DELE for every message that is ready. */
static int flush_deles(struct session *s) {
  if (s->no_dele) {
    s->dele_ready_len = 0;
    return 0;
  }
  for (size_t i = 0; i < s->dele_ready_len; i++) {
    int err = send_cmd(s, C_DELE, s->dele_ready[i], NULL);
    if (err)
      return err;
  }
  s->dele_ready_len = 0;
  return 0;
}

/* Moves messages the owner marked as already delivered into the DELE queue. */
static void collect_known(struct session *s) {
  for (; s->dele_next_known < s->next_retr; s->dele_next_known++) {
    size_t i = s->dele_next_known;
    if ((s->msgs[i].flags & SESSION_MSG_DELETE) && s->dele_ready_len < s->msg_count)
      s->dele_ready[s->dele_ready_len++] = i;
  }
}

/* Decides what to send next in the transfer phase.  Pipelined: RETRs are
 * refilled in batches (when half the window has drained) and the DELEs that
 * are ready ride along, so a mailbox costs a handful of writes.  Lock-step:
 * one command at a time, a ready DELE first. */
static void pump(struct session *s) {
  int err = 0;
  if (s->state != ST_TRANSFER)
    return;
  size_t window = s->pipelined ? s->opts.window : 1;
  if (!s->pipelined) {
    if (s->fifo.len == 0) {
      if (s->dele_ready_len && !s->no_dele) {
        err = send_cmd(s, C_DELE, s->dele_ready[--s->dele_ready_len], NULL);
      } else if (!s->stopping) {
        while (s->next_retr < s->msg_count && !want_retr(s, s->next_retr)) {
          s->next_retr++;
          collect_known(s);
          if (s->dele_ready_len && !s->no_dele)
            break;
        }
        if (s->dele_ready_len && !s->no_dele) {
          err = send_cmd(s, C_DELE, s->dele_ready[--s->dele_ready_len], NULL);
        } else if (s->next_retr < s->msg_count) {
          err = send_cmd(s, C_RETR, s->next_retr, NULL);
          s->next_retr++;
          collect_known(s);
          s->retr_inflight++;
        }
      }
    }
  } else if (!s->stopping && s->next_retr < s->msg_count && s->retr_inflight <= window / 2) {
    while (s->next_retr < s->msg_count && s->retr_inflight < window) {
      if (want_retr(s, s->next_retr)) {
        if (s->uidl_ok && s->msgs[s->next_retr].uid_len)
          err = send_cmd(s, C_UIDL1, s->next_retr, NULL);
        else
          s->unchecked++;
        if (!err)
          err = send_cmd(s, C_RETR, s->next_retr, NULL);
        if (err)
          break;
        s->retr_inflight++;
      }
      s->next_retr++;
    }
    collect_known(s);
    if (!err)
      err = flush_deles(s);
  }
  if (err) {
    set_local_error(s, "%s", "internal error queueing commands");
    finish(s, err);
    return;
  }
  int all_requested = s->next_retr >= s->msg_count || s->stopping;
  if (all_requested && s->retr_inflight == 0 && s->saves_pending == 0) {
    if (s->stopping)
      collect_known(s);
    else {
      s->next_retr = s->msg_count;
      collect_known(s);
    }
    if (s->pipelined) {
      if (flush_deles(s) != 0) {
        finish(s, -ENOMEM);
        return;
      }
    } else if (s->dele_ready_len && !s->no_dele) {
      return; /* lock-step: the remaining DELEs go one by one */
    }
    start_barrier(s);
  }
}

static void start_barrier(struct session *s) {
  if (s->state != ST_TRANSFER)
    return;
  s->barrier_cause = s->cause;
  set_state(s, ST_BARRIER);
  /* Messages deleted without retrieval were recorded by an earlier run whose
   * barrier may not have completed: make them durable before QUIT too. */
  if (s->stats.saved == 0 && s->deles_sent == 0) {
    s->barrier_done = 1;
    maybe_quit(s);
    return;
  }
  s->ops.barrier(s->data);
}

/* Whether only DELE replies are outstanding. */
static int only_deles_pending(const struct session *s) {
  for (size_t i = 0; i < s->fifo.len; i++)
    if (s->fifo.v[(s->fifo.head + i) % s->fifo.cap].kind != C_DELE)
      return 0;
  return 1;
}

/* QUIT goes out once the renames are durable (POP3 applies the DELEs at
 * QUIT) and every earlier reply has been read and checked.  One exception
 * saves a round trip: when every RETR was preceded by a UIDL n whose reply
 * named its message, the replies still missing are DELE replies only, and
 * each of those DELEs names a message whose UID and size were checked and
 * whose file and record are durable: QUIT may follow them at once.  Not
 * after a message whose size differed from LIST: if its body was cut short
 * by a stray "." line, its rest is still to come and must be seen (as a
 * broken reply) before anything is committed. */
static void maybe_quit(struct session *s) {
  if (s->state != ST_BARRIER || !s->barrier_done)
    return;
  if (s->fifo.len != 0 && !(s->pipelined && s->uidl_ok && s->unchecked == 0 && s->resized == 0 &&
                            only_deles_pending(s)))
    return;
  if (s->no_quit) {
    finish(s, s->partial_err ? s->partial_err : P3_ESAVE);
    return;
  }
  /* QUIT answers the barrier, and (unless the DELEs' replies need not be
   * awaited) the last reply too: whichever is deeper. */
  s->cause = s->barrier_cause;
  if (!(s->pipelined && s->uidl_ok && s->unchecked == 0 && s->resized == 0) &&
      s->reply_depth > s->cause)
    s->cause = s->reply_depth;
  set_state(s, ST_QUIT);
  if (send_cmd(s, C_QUIT, 0, NULL) != 0)
    finish(s, -ENOMEM);
}

static void start_transfer(struct session *s) {
  for (size_t i = 0; i < s->msg_count; i++)
    if (s->msgs[i].flags & SESSION_MSG_SKIP)
      s->stats.skipped++;
  set_state(s, ST_TRANSFER);
  pump(s);
}

/* Sends the TOP n 0 probes, refilled like the RETRs (half a window at a
 * time; lock-step: one), each after "UIDL n" when pipelined with UIDs, and
 * starts the transfer once the last probe reply is in. */
static void pump_probes(struct session *s) {
  int err = 0;
  if (s->state != ST_PROBE || s->finished)
    return;
  size_t window = s->pipelined ? s->opts.window : 1;
  if (s->probe_inflight <= window / 2) {
    while (s->probe_next < s->msg_count && s->probe_inflight < window) {
      size_t i = s->probe_next++;
      if (!(s->msgs[i].flags & SESSION_MSG_PROBE))
        continue;
      if (s->pipelined && s->uidl_ok && s->msgs[i].uid_len)
        err = send_cmd(s, C_UIDL1, i, NULL);
      if (!err)
        err = send_cmd(s, C_TOP, i, NULL);
      if (err)
        break;
      s->probe_inflight++;
    }
  }
  if (err) {
    set_local_error(s, "%s", "internal error queueing commands");
    finish(s, err);
    return;
  }
  if (s->probe_next < s->msg_count || s->probe_inflight > 0)
    return;
  if (s->ops.probed)
    s->ops.probed(s->data);
  if (!s->finished)
    start_transfer(s);
}

static int begin_transfer(struct session *s) {
  s->dele_ready = malloc((s->msg_count ? s->msg_count : 1) * sizeof *s->dele_ready);
  if (s->dele_ready == NULL)
    return -ENOMEM;
  s->msg_depth = calloc(s->msg_count ? s->msg_count : 1, sizeof *s->msg_depth);
  if (s->msg_depth == NULL)
    return -ENOMEM;
  /* Worst case in flight: a window of RETRs plus a DELE for every message
   * (when they all become ready at once) plus QUIT. */
  size_t need = 2 * (size_t)s->opts.window + s->msg_count + 4;
  if (need > s->fifo.cap) {
    struct cmd *v = malloc(need * sizeof *v);
    if (v == NULL)
      return -ENOMEM;
    for (size_t i = 0; i < s->fifo.len; i++)
      v[i] = s->fifo.v[(s->fifo.head + i) % s->fifo.cap];
    free(s->fifo.v);
    s->fifo.v = v;
    s->fifo.cap = need;
    s->fifo.head = 0;
  }
  if (s->ops.listed)
    s->ops.listed(s->data);
  if (s->finished)
    return 0;
  if (s->probes == 0) {
    start_transfer(s);
    return 0;
  }
  set_state(s, ST_PROBE);
  if (s->capa_ok && !s->caps.top) {
    /* CAPA was answered without TOP: asking would only earn -ERRs. */
    note(s, "%zu header probes not sent: the server does not offer TOP", s->probes);
    for (size_t i = 0; i < s->msg_count && !s->finished; i++)
      if ((s->msgs[i].flags & SESSION_MSG_PROBE) && s->ops.probe_end)
        s->ops.probe_end(s->data, i, 0);
    s->probe_next = s->msg_count;
  }
  pump_probes(s);
  return 0;
}

/* ---- login and listing */

static void logged_in(struct session *s);
static int resp_error(const struct p3_status *st, int fallback);

static const char *const auth_names[] = {"auto",  "user",    "apop",       "plain",
                                         "login", "xoauth2", "oauthbearer"};

/* The SASL mechanism name on the wire, and its CAPA bit. */
static const char *mech_wire_name(enum session_auth a) {
  switch (a) {
  case SESSION_AUTH_PLAIN:
    return "PLAIN";
  case SESSION_AUTH_LOGIN:
    return "LOGIN";
  case SESSION_AUTH_XOAUTH2:
    return "XOAUTH2";
  case SESSION_AUTH_OAUTHBEARER:
    return "OAUTHBEARER";
  default:
    return NULL;
  }
}

static unsigned mech_bit(enum session_auth a) {
  switch (a) {
  case SESSION_AUTH_PLAIN:
    return P3_SASL_PLAIN;
  case SESSION_AUTH_LOGIN:
    return P3_SASL_LOGIN;
  case SESSION_AUTH_XOAUTH2:
    return P3_SASL_XOAUTH2;
  case SESSION_AUTH_OAUTHBEARER:
    return P3_SASL_OAUTHBEARER;
  default:
    return 0;
  }
}

/* USER/PASS is offered when CAPA lists USER, or when there is no CAPA to
 * say otherwise (popa3d, solid-pop3d: RFC 1939 servers). */
static int offers_user(const struct session *s) {
  return !s->capa_ok || s->caps.user;
}

static int offers_sasl(const struct session *s, enum session_auth a) {
  return s->capa_ok && (s->caps.sasl & mech_bit(a)) != 0;
}

/* What the server offers, for error sentences: "USER, APOP, SASL PLAIN". */
static void describe_offers(const struct session *s, char *buf, size_t len) {
  const char *part[3] = {offers_user(s) ? "USER" : NULL, s->apop_ts[0] ? "APOP" : NULL,
                         s->caps.sasl_list[0] ? "SASL " : NULL};
  size_t o = 0;
  buf[0] = '\0';
  for (int i = 0; i < 3 && o < len; i++) {
    if (part[i] == NULL)
      continue;
    int n = snprintf(buf + o, len - o, "%s%s%s", o ? ", " : "", part[i],
                     i == 2 ? s->caps.sasl_list : "");
    if (n < 0)
      break;
    o += (size_t)n;
  }
  if (buf[0] == '\0')
    snprintf(buf, len, "%s", "nothing");
}

/* The method to use, or SESSION_AUTH_AUTO when none may be used (the error
 * text is set then). */
static enum session_auth choose_auth(struct session *s) {
  enum session_auth a = s->opts.auth;
  char offers[P3_SASL_LIST_MAX + 32];
  describe_offers(s, offers, sizeof offers);
  switch (a) {
  case SESSION_AUTH_AUTO:
    if (s->tls_active && offers_sasl(s, SESSION_AUTH_PLAIN))
      return SESSION_AUTH_PLAIN;
    if (offers_user(s))
      return SESSION_AUTH_USER;
    if (offers_sasl(s, SESSION_AUTH_PLAIN))
      return SESSION_AUTH_PLAIN;
    if (offers_sasl(s, SESSION_AUTH_LOGIN))
      return SESSION_AUTH_LOGIN;
    if (s->apop_ts[0])
      return SESSION_AUTH_APOP;
    set_local_error(s, "server offers no login method that auth auto may use (it offers: %s)%s",
                    offers,
                    (s->caps.sasl & (P3_SASL_XOAUTH2 | P3_SASL_OAUTHBEARER))
                        ? "; an OAuth method must be chosen explicitly"
                    : !s->tls_active ? "; it may allow logins over TLS only"
                                     : "");
    return SESSION_AUTH_AUTO;
  case SESSION_AUTH_USER:
    if (offers_user(s))
      return a;
    set_local_error(s, "server does not offer USER (it offers: %s)", offers);
    return SESSION_AUTH_AUTO;
  case SESSION_AUTH_APOP:
    if (s->apop_ts[0])
      return a;
    set_local_error(s, "server does not offer APOP (its greeting has no timestamp)");
    return SESSION_AUTH_AUTO;
  case SESSION_AUTH_PLAIN:
  case SESSION_AUTH_LOGIN:
  case SESSION_AUTH_XOAUTH2:
  case SESSION_AUTH_OAUTHBEARER:
    if (offers_sasl(s, a))
      return a;
    if (!s->capa_ok)
      set_local_error(s, "server does not offer SASL %s (it does not answer CAPA)",
                      mech_wire_name(a));
    else if (s->caps.sasl_list[0])
      set_local_error(s, "server does not offer SASL %s (it offers: %s)", mech_wire_name(a),
                      s->caps.sasl_list);
    else
      set_local_error(s, "server does not offer SASL %s (it offers no SASL mechanism)",
                      mech_wire_name(a));
    return SESSION_AUTH_AUTO;
  }
  set_local_error(s, "%s", "unknown login method");
  return SESSION_AUTH_AUTO;
}

static void send_user_pass(struct session *s) {
  /* USER and PASS travel together when pipelining and the server said it
   * takes USER; otherwise PASS goes out after USER's +OK, so that a refused
   * USER never costs the password. */
  int together = s->pipelined && s->capa_ok && s->caps.user;
  int err = send_cmd(s, C_USER, 0, s->opts.user);
  if (!err && together)
    err = send_cmd(s, C_PASS, 0, s->opts.password);
  s->user_failed = 0;
  s->auth_sent = together; /* 1: PASS is in flight behind USER */
  if (err) {
    set_local_error(s, "%s", "user name or password too long or contains a line break");
    finish(s, P3_EUSAGE);
  }
}

static void send_apop(struct session *s) {
  char digest[33], arg[P3_LINE_MAX];
  int err = sasl_apop_digest(s->apop_ts, strlen(s->apop_ts), s->opts.password, digest);
  if (err) {
    set_local_error(s, "%s", "APOP needs MD5, which this build of mbedTLS lacks");
    finish(s, err);
    return;
  }
  int n = snprintf(arg, sizeof arg, "%s %s", s->opts.user, digest);
  if (n < 0 || (size_t)n >= sizeof arg || strchr(s->opts.user, ' ') != NULL)
    err = P3_EUSAGE;
  else
    err = send_cmd(s, C_APOP, 0, arg);
  sasl_wipe(digest, sizeof digest);
  sasl_wipe(arg, sizeof arg);
  if (err) {
    set_local_error(s, "%s", "user name too long or contains a blank or a line break");
    finish(s, P3_EUSAGE);
  }
}

/* The base64 client response for the current step of the exchange
 * (*b64_r for sasl_free_secret). */
static int auth_response(struct session *s, char **b64_r, size_t *len_r) {
  switch (s->method) {
  case SESSION_AUTH_PLAIN:
    return sasl_plain(s->opts.user, s->opts.password, b64_r, len_r);
  case SESSION_AUTH_LOGIN:
    return sasl_login_step(s->auth_sent == 0 ? s->opts.user : s->opts.password, b64_r, len_r);
  case SESSION_AUTH_XOAUTH2:
    return sasl_xoauth2(s->opts.user, s->opts.password, b64_r, len_r);
  case SESSION_AUTH_OAUTHBEARER:
    return sasl_oauthbearer(s->opts.user, s->opts.host, s->opts.port, s->opts.password, b64_r,
                            len_r);
  default:
    return P3_EUSAGE;
  }
}

/* Sends the next client response of the exchange (prefix "AUTH PLAIN " for
 * an initial response, else ""). */
static int send_auth_response(struct session *s, const char *prefix) {
  char *b64;
  size_t len;
  int err = auth_response(s, &b64, &len);
  if (err == 0) {
    err = send_secret_line(s, prefix, b64, len, 0);
    sasl_free_secret(b64);
  }
  if (err == 0)
    s->auth_sent++;
  return err;
}

/* RFC 5034: an AUTH command with its initial response must fit in 255
 * octets, CRLF included; a longer one goes in two steps. */
#define AUTH_LINE_MAX 255

static void send_auth(struct session *s) {
  const char *mech = mech_wire_name(s->method);
  char cmd[64];
  int err = 0, n;
  s->auth_sent = 0;
  s->auth_cancelled = 0;
  s->oauth_challenged = 0;
  if (s->method == SESSION_AUTH_PLAIN) {
    char *b64;
    size_t len;
    err = auth_response(s, &b64, &len);
    if (err == 0) {
      n = snprintf(cmd, sizeof cmd, "AUTH %s ", mech);
      size_t whole = (size_t)n + len + 2;
      sasl_free_secret(b64);
      if (whole <= AUTH_LINE_MAX) {
        err = fifo_push(s, C_AUTH, 0);
        if (err == 0)
          err = send_auth_response(s, cmd);
        goto out;
      }
    }
  }
  /* LOGIN, the OAuth methods (Microsoft's POP3 wants the two-step form,
   * tokens are long anyway) and a PLAIN response too long for one line. */
  if (err == 0)
    err = send_cmd(s, C_AUTH, 0, mech) == 0 ? 0 : -ENOMEM;
out:
  if (err) {
    set_local_error(s, "%s",
                    err == P3_EUSAGE ? "user name or token contains a control character"
                                     : "out of memory preparing the login");
    finish(s, err);
  }
}

static void send_login(struct session *s) {
  set_state(s, ST_AUTH);
  enum session_auth a = choose_auth(s);
  if (a == SESSION_AUTH_AUTO) {
    /* Nothing has been sent that holds a secret. */
    finish(s, P3_EAUTHMECH);
    return;
  }
  s->method = a;
  note(s, "login method %s%s", auth_names[a], s->opts.auth == SESSION_AUTH_AUTO ? " (auto)" : "");
  switch (a) {
  case SESSION_AUTH_USER:
    send_user_pass(s);
    return;
  case SESSION_AUTH_APOP:
    send_apop(s);
    return;
  default:
    send_auth(s);
    return;
  }
}

static void flight_check(struct session *s);

static void after_capa(struct session *s) {
  if (s->flight == SESSION_FLIGHT_SENT) {
    flight_check(s);
    return;
  }
  s->pipelined = s->opts.pipelining == SESSION_PIPELINING_ON ||
                 (s->opts.pipelining == SESSION_PIPELINING_AUTO && s->caps.pipelining);
  if (s->opts.starttls && !s->tls_active) {
    if (s->capa_ok && !s->caps.stls) {
      set_local_error(s, "%s", "STLS is not in the server's capabilities");
      finish(s, P3_ENOSTLS);
      return;
    }
    set_state(s, ST_STLS);
    if (send_cmd(s, C_STLS, 0, NULL) != 0)
      finish(s, -ENOMEM);
    return;
  }
  send_login(s);
}

/* ---- the one flight after the greeting (issue 11) */

/* Parses the remembered CAPA tokens (srvmem's capa-pre: "USER TOP UIDL
 * PIPELINING ... SASL PLAIN LOGIN", the SASL mechanisms last) into *c.
 * Returns 1 when there was something to parse. */
static int mem_caps_parse(struct p3_caps *c, const char *tokens, int *courier_r) {
  proto_caps_init(c);
  if (tokens == NULL || tokens[0] == '\0')
    return 0;
  const char *p = tokens;
  while (*p) {
    while (*p == ' ')
      p++;
    size_t n = strcspn(p, " ");
    if (n == 0)
      break;
    if (n == 4 && strncmp(p, "SASL", 4) == 0) {
      proto_caps_line(c, p, strlen(p)); /* the mechanisms are the rest */
      break;
    }
    if (n == 14 && strncmp(p, "IMPLEMENTATION", 14) == 0) {
      /* Its word is a name, not a capability ("IMPLEMENTATION UIDL" lists
       * no UIDL). */
      p += n;
      while (*p == ' ')
        p++;
      size_t w = strcspn(p, " ");
      if (courier_r != NULL && w == 7 && strncasecmp(p, "Courier", 7) == 0)
        *courier_r = 1;
      p += w;
      continue;
    }
    proto_caps_line(c, p, n);
    p += n;
  }
  return 1;
}

/* The login the one flight would carry, chosen from the remembered CAPA
 * and this greeting as a cold session would choose it from a fresh CAPA,
 * or SESSION_AUTH_AUTO when the flight is not to be used: nothing
 * remembered, pipelining not known to work, or a login of more than one
 * line (SASL LOGIN, the OAuth methods, a PLAIN response over 255 octets:
 * commands pipelined behind them would be read as the exchange's lines). */
static enum session_auth flight_method(struct session *s) {
  if (!s->mem_capa_ok || !s->opts.mem_pipelining || s->opts.pipelining == SESSION_PIPELINING_OFF ||
      (s->opts.pipelining == SESSION_PIPELINING_AUTO && !s->mem_caps.pipelining) ||
      (s->opts.starttls && !s->tls_active))
    return SESSION_AUTH_AUTO;
  char errsave[sizeof s->errtext];
  memcpy(errsave, s->errtext, sizeof errsave);
  struct p3_caps fresh = s->caps;
  int capa_ok = s->capa_ok;
  s->caps = s->mem_caps;
  s->capa_ok = 1;
  enum session_auth a = choose_auth(s);
  s->caps = fresh;
  s->capa_ok = capa_ok;
  memcpy(s->errtext, errsave, sizeof errsave);
  switch (a) {
  case SESSION_AUTH_USER:
  case SESSION_AUTH_APOP:
    return a;
  case SESSION_AUTH_PLAIN: {
    char *b64;
    size_t len;
    if (sasl_plain(s->opts.user, s->opts.password, &b64, &len) != 0)
      return SESSION_AUTH_AUTO;
    sasl_free_secret(b64);
    return sizeof "AUTH PLAIN " - 1 + len + 2 <= AUTH_LINE_MAX ? a : SESSION_AUTH_AUTO;
  }
  default:
    return SESSION_AUTH_AUTO;
  }
}

/* Right after the greeting (after the TLS handshake with STLS): CAPA, and
 * when the memory allows, the login in the same write:
 *   CAPA, USER u, PASS p          (USER/PASS: the remembered CAPA lists USER)
 *   CAPA, APOP u digest           (APOP: this greeting's stamp)
 *   CAPA, AUTH PLAIN response
 * and, only with mem_flight_listing, [UTF8,] UIDL and LIST behind it.
 * Otherwise nothing goes behind the login: Courier's login process hands
 * the connection to another program after PASS and what was already sent
 * behind it is lost (the session then waits for UIDL and LIST for ever;
 * seen with courier-pop 1.0.16).  UTF8, UIDL and LIST then follow the
 * login's reply as in a cold session.
 * The login is sent as send_login sends it with the remembered CAPA in
 * place of the fresh one (PASS rides behind USER because the remembered
 * CAPA lists USER); flight_check then judges the fresh CAPA. */
static void send_flight(struct session *s, enum session_auth a) {
  set_state(s, ST_CAPA);
  if (send_cmd(s, C_CAPA, 0, NULL) != 0) {
    finish(s, -ENOMEM);
    return;
  }
  if (a == SESSION_AUTH_AUTO)
    return;
  note(s, "one flight%s: the remembered capabilities offer %s and PIPELINING",
       s->early ? " before the greeting" : "", auth_names[a]);
  s->flight = SESSION_FLIGHT_SENT;
  s->pipelined = 1;
  s->caps = s->mem_caps;
  s->capa_ok = 1;
  /* Never behind a login that Courier's hand-over would cut off. */
  s->flight_listing = s->opts.mem_flight_listing != 0 && !s->mem_courier;
  send_login(s);
  if (s->flight_listing && !s->finished && s->caps.utf8 && !s->opts.no_utf8) {
    s->flight_utf8 = 1;
    if (send_cmd(s, C_UTF8, 0, NULL) != 0)
      finish(s, -ENOMEM);
  }
  if (s->flight_listing && !s->finished &&
      (send_cmd(s, C_UIDL, 0, NULL) != 0 || send_cmd(s, C_LIST, 0, NULL) != 0))
    finish(s, -ENOMEM);
  s->flight_listing_sent = s->flight_listing && !s->finished;
  /* The fresh CAPA's reply fills these. */
  proto_caps_init(&s->caps);
  s->capa_ok = 0;
  if (!s->finished)
    set_state(s, ST_CAPA);
}

static void start_capa(struct session *s) {
  send_flight(s, flight_method(s));
}

/* The fresh CAPA of a flight is in (or refused): compare it with what the
 * flight assumed.  The commands are on their way; what differs decides
 * what happens to their replies (flight_fallback, listing_complete). */
static void flight_check(struct session *s) {
  char errsave[sizeof s->errtext];
  memcpy(errsave, s->errtext, sizeof errsave);
  enum session_auth fresh = choose_auth(s);
  memcpy(s->errtext, errsave, sizeof errsave);
  int pipe = s->opts.pipelining == SESSION_PIPELINING_ON || s->caps.pipelining;
  int utf8 = s->flight_listing ? s->caps.utf8 && !s->opts.no_utf8 : s->flight_utf8;
  s->flight = SESSION_FLIGHT_HELD;
  if (!s->flight_listing)
    /* What follows the login goes as in a cold session, by the fresh CAPA. */
    s->pipelined = s->opts.pipelining == SESSION_PIPELINING_ON ||
                   (s->opts.pipelining == SESSION_PIPELINING_AUTO && s->caps.pipelining);
  if (fresh != s->method || !pipe || utf8 != s->flight_utf8 || s->greeting_changed) {
    s->flight = SESSION_FLIGHT_STALE;
    s->flight_nopipe = !pipe;
    note(s, "the server's capabilities changed since the last session:%s%s%s%s%s",
         !s->capa_ok ? " CAPA refused;" : "",
         fresh != s->method ? " the login sent is not the one they offer now;" : "",
         !pipe ? " no PIPELINING (lock-step from the transfer on);" : "",
         utf8 != s->flight_utf8 ? " UTF8 changed;" : "",
         s->greeting_changed ? " the greeting's APOP timestamp came or went;" : "");
  }
  set_state(s, ST_AUTH);
  if (utf8 && !s->flight_utf8) {
    /* UTF8 now offered: it goes out after the flight's LIST and before any
     * RETR, so the messages come as a cold session would get them. */
    s->flight_utf8 = 1;
    if (send_cmd(s, C_UTF8, 0, NULL) != 0)
      finish(s, -ENOMEM);
  }
}

/* The flight's login was refused with err.  When the fresh CAPA no longer
 * offers that login (the memory was wrong, not the password), the session
 * reads the replies to the commands sent behind it (each must be -ERR: the
 * server is still in the AUTHORIZATION state) and then logs in as a cold
 * session would (fallback_login).  Returns 1 when it does so, 0 when the
 * refusal ends the session as usual. */
static void fallback_login(struct session *s);

static int flight_fallback(struct session *s, int err) {
  if (s->flight != SESSION_FLIGHT_STALE || err != P3_EAUTH)
    return 0;
  char errsave[sizeof s->errtext];
  memcpy(errsave, s->errtext, sizeof errsave);
  enum session_auth fresh = choose_auth(s);
  memcpy(s->errtext, errsave, sizeof errsave);
  if (fresh == s->method)
    return 0; /* the method still holds: the credentials were refused */
  if (s->early == SESSION_EARLY_SENT)
    s->early = SESSION_EARLY_BROKEN; /* a refusal of what went out early */
  note(s, "the %s login of the flight was refused (%s); reading the %zu replies sent behind it",
       auth_names[s->method], s->errtext, s->fifo.len);
  s->stale = s->fifo.len;
  if (s->stale == 0)
    fallback_login(s); /* nothing went behind the login */
  return 1;
}

/* The flight's replies are read: log in again, chosen from the fresh CAPA. */
static void fallback_login(struct session *s) {
  s->flight_listing = 0;
  s->flight_utf8 = 0;
  s->flight_nopipe = 0;
  s->user_failed = 0;
  s->auth_err = 0;
  s->errtext[0] = '\0';
  s->errcode = P3_RC_NONE;
  s->pipelined = s->opts.pipelining == SESSION_PIPELINING_ON ||
                 (s->opts.pipelining == SESSION_PIPELINING_AUTO && s->caps.pipelining);
  send_login(s);
}

/* A reply to a command that went out behind a refused flight login. */
static void on_stale(struct session *s, struct cmd *c, const char *line, size_t len) {
  struct p3_status st;
  enum cmd_kind kind = (enum cmd_kind)c->kind;
  /* UTF8 is valid before login (RFC 6856); UIDL and LIST are not. */
  if (proto_parse_status(line, len, &st) != 0 || (st.ok && kind != C_UTF8)) {
    s->no_dele = 1;
    s->no_quit = 1;
    set_local_error(s, "unexpected reply to %s after the login was refused", cmd_names[kind]);
    finish(s, P3_EPROTO);
    return;
  }
  fifo_pop(s);
  if (--s->stale == 0)
    fallback_login(s);
}

/* Cancels the AUTH exchange with "*" (RFC 5034): the server answers -ERR,
 * and the session then ends with P3_EPROTO and why. */
static void cancel_auth(struct session *s, const char *why) {
  s->auth_cancelled = 1;
  set_local_error(s, "%s; the login was cancelled", why);
  if (send_secret_line(s, "", "*", 1, 1) != 0)
    finish(s, -ENOMEM);
}

/* A "+ " line in an AUTH exchange: r is sasl_parse_challenge's result. */
static void on_challenge(struct session *s, int r, const char *data, size_t len) {
  int err = 0;
  if (s->auth_cancelled) {
    s->no_quit = 1;
    set_local_error(s, "%s", "the server went on with the login after it was cancelled");
    finish(s, P3_EPROTO);
    return;
  }
  if (r == -ENOMEM) {
    finish(s, -ENOMEM);
    return;
  }
  if (r < 0) {
    cancel_auth(s, "the server's SASL challenge is not valid base64");
    return;
  }
  switch (s->method) {
  case SESSION_AUTH_PLAIN:
    /* PLAIN has one response; its challenge is empty (any is ignored). */
    if (s->auth_sent == 0)
      err = send_auth_response(s, "");
    else
      cancel_auth(s, "the server asked for more than SASL PLAIN has to say");
    break;
  case SESSION_AUTH_LOGIN:
    /* "Username:" then "Password:", whatever the prompts say. */
    if (s->auth_sent < 2)
      err = send_auth_response(s, "");
    else
      cancel_auth(s, "the server asked for more than SASL LOGIN has to say");
    break;
  case SESSION_AUTH_XOAUTH2:
  case SESSION_AUTH_OAUTHBEARER:
    if (s->auth_sent == 0) {
      err = send_auth_response(s, "");
    } else if (!s->oauth_challenged) {
      /* The token was refused: the challenge is JSON that says why.
       * Acknowledge it as the mechanism asks; the -ERR follows. */
      s->oauth_challenged = 1;
      sasl_oauth_error(data, len, s->oauth_err, sizeof s->oauth_err);
      const char *ack =
          s->method == SESSION_AUTH_XOAUTH2 ? SASL_XOAUTH2_ERROR_ACK : SASL_OAUTHBEARER_ERROR_ACK;
      err = send_secret_line(s, "", ack, strlen(ack), 1);
    } else {
      cancel_auth(s, "the server sent a second OAuth error challenge");
    }
    break;
  default:
    cancel_auth(s, "unexpected SASL challenge");
    break;
  }
  if (err) {
    set_local_error(s, "%s",
                    err == P3_EUSAGE ? "user name or token contains a control character"
                                     : "out of memory preparing the login");
    finish(s, err);
  }
}

/* The final reply of an AUTH exchange. */
static void on_auth_status(struct session *s, const struct p3_status *st) {
  if (s->auth_cancelled) {
    /* The sentence set when cancelling says why. */
    finish(s, P3_EPROTO);
    return;
  }
  if (st->ok) {
    logged_in(s);
    return;
  }
  set_server_error(s, st);
  int err = resp_error(st, P3_EAUTH);
  if (flight_fallback(s, err))
    return;
  if (session_auth_is_oauth(s->method) && s->auth_sent > 0 && err == P3_EAUTH) {
    /* The token was sent and refused: the caller may refresh it once. */
    err = P3_EOAUTH;
    s->oauth_refused = 1;
    if (s->oauth_err[0]) {
      size_t n = strlen(s->errtext);
      snprintf(s->errtext + n, sizeof s->errtext - n, "%s(%s)", n ? " " : "", s->oauth_err);
    }
  }
  finish(s, err);
}

static void send_listing(struct session *s) {
  int err;
  set_state(s, ST_LISTING);
  err = send_cmd(s, C_UIDL, 0, NULL);
  if (!err && s->pipelined)
    err = send_cmd(s, C_LIST, 0, NULL);
  if (err)
    finish(s, err);
}

static int listing_line(struct session *s, enum cmd_kind kind, const char *line, size_t len) {
  if (kind == C_CAPA) {
    proto_caps_line(&s->caps, line, len);
    if (len > 15 && strncasecmp(line, "IMPLEMENTATION ", 15) == 0) {
      size_t i = 15, n = 0;
      while (i < len && line[i] == ' ')
        i++;
      while (i < len && n + 1 < sizeof s->impl && line[i] > 0x20 && line[i] < 0x7f)
        s->impl[n++] = line[i++];
      s->impl[n] = '\0';
    }
    return 0;
  }
  unsigned long num;
  if (kind == C_LIST) {
    uint64_t size;
    if (proto_parse_list_line(line, len, &num, &size) != 0)
      return P3_EPROTO;
    if (s->msg_count == s->msg_cap) {
      size_t cap = s->msg_cap ? s->msg_cap * 2 : 64;
      struct session_msg *m = realloc(s->msgs, cap * sizeof *m);
      if (m == NULL)
        return -ENOMEM;
      s->msgs = m;
      s->msg_cap = cap;
    }
    struct session_msg *m = &s->msgs[s->msg_count++];
    memset(m, 0, sizeof *m);
    m->num = num;
    m->size = size;
    return 0;
  }
  /* UIDL: UIDs are kept in one arena; they are matched to LIST entries by
   * number once both listings are in. */
  const char *uid;
  size_t uidlen;
  if (s->list_line_long || proto_parse_uidl_line(line, len, &num, &uid, &uidlen) != 0) {
    /* One bad UID (too long, not printable) must not block the mailbox:
     * only its message goes without a UID (always fetched, never deleted
     * unseen).  It is entered with an empty UID so that a second entry for
     * the same number cannot lend it one. */
    if (s->list_line_long)
      proto_parse_uidl_line(line, len, &num, &uid, &uidlen); /* just the number */
    s->uidl_bad++;
    if (s->uidl_bad <= 5)
      note(s, "UIDL line \"%.*s%s\": %s", (int)(len > 40 ? 40 : len), line, len > 40 ? "..." : "",
           num ? "malformed or too long a UID, the message is treated as having none"
               : "malformed, ignored");
    if (num == 0)
      return 0;
    uid = "";
    uidlen = 0;
  }
  size_t need = sizeof(unsigned long) + uidlen + 1;
  if (s->uids_len + need > s->uids_cap) {
    size_t cap = s->uids_cap ? s->uids_cap : 4096;
    while (cap < s->uids_len + need)
      cap *= 2;
    if (cap > UINT32_MAX)
      return -ENOMEM;
    char *u = realloc(s->uids, cap);
    if (u == NULL)
      return -ENOMEM;
    s->uids = u;
    s->uids_cap = cap;
  }
  memcpy(s->uids + s->uids_len, &num, sizeof num);
  memcpy(s->uids + s->uids_len + sizeof num, uid, uidlen);
  s->uids[s->uids_len + sizeof num + uidlen] = '\0';
  s->uids_len += need;
  return 0;
}

/* Attaches UIDs to messages.  Both listings are sorted by number in
 * practice; a server that lists UIDs for numbers LIST did not show, or out
 * of order, is treated as having no UIDL at all (safer than guessing).  A
 * message UIDL misses, lists twice or with a bad UID goes without a UID. */
static int match_uids(struct session *s) {
  size_t pos = 0, i = 0, seen_at = SIZE_MAX;
  int twice = 0;
  if (!s->uidl_ok)
    return 0;
  while (pos < s->uids_len) {
    unsigned long num;
    memcpy(&num, s->uids + pos, sizeof num);
    const char *uid = s->uids + pos + sizeof num;
    size_t len = strlen(uid);
    while (i < s->msg_count && s->msgs[i].num < num)
      i++;
    if (i == s->msg_count || s->msgs[i].num != num)
      return P3_EPROTO;
    if (seen_at == i) {
      twice = 1; /* the same number again: neither UID can be trusted */
    } else {
      if (twice && seen_at != SIZE_MAX)
        s->msgs[seen_at].uid_len = 0;
      twice = 0;
      seen_at = i;
      s->msgs[i].uid_off = (uint32_t)(pos + sizeof num);
      s->msgs[i].uid_len = (uint16_t)len;
    }
    pos += sizeof num + len + 1;
  }
  if (twice && seen_at != SIZE_MAX)
    s->msgs[seen_at].uid_len = 0;
  return 0;
}

struct uid_ref {
  const char *uid;
  size_t idx;
};

static int cmp_uid_ref(const void *a, const void *b) {
  const struct uid_ref *x = a, *y = b;
  int c = strcmp(x->uid, y->uid);
  return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

/* Flags every message whose UID is listed more than once (hash-based UIDs:
 * popa3d, solid-pop3d): such a UID names no single message. */
static int find_dup_uids(struct session *s) {
  size_t n = 0;
  struct uid_ref *v = malloc((s->msg_count ? s->msg_count : 1) * sizeof *v);
  if (v == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < s->msg_count; i++)
    if (s->msgs[i].uid_len) {
      v[n].uid = s->uids + s->msgs[i].uid_off;
      v[n].idx = i;
      n++;
    }
  qsort(v, n, sizeof *v, cmp_uid_ref);
  for (size_t i = 1; i < n; i++)
    if (strcmp(v[i - 1].uid, v[i].uid) == 0) {
      s->msgs[v[i - 1].idx].flags |= SESSION_MSG_DUPUID;
      s->msgs[v[i].idx].flags |= SESSION_MSG_DUPUID;
      s->uids_unique = 0;
    }
  free(v);
  return 0;
}

static void listing_complete(struct session *s) {
  if (s->flight_nopipe && s->opts.pipelining != SESSION_PIPELINING_ON) {
    /* The fresh CAPA lacks PIPELINING: the transfer goes lock-step, as a
     * cold session's would (the FIFO is empty: LIST was the last command). */
    s->pipelined = 0;
  }
  for (size_t i = 1; i < s->msg_count; i++)
    if (s->msgs[i].num <= s->msgs[i - 1].num) {
      set_local_error(s, "%s", "LIST is not in ascending message order");
      finish(s, P3_EPROTO);
      return;
    }
  if (match_uids(s) != 0) {
    /* UIDL and LIST disagree: carry on without UIDs. */
    note(s, "%s", "UIDL lists messages that LIST does not: UIDs are not used");
    s->uidl_ok = 0;
  }
  if (s->uidl_ok) {
    size_t with = 0;
    for (size_t i = 0; i < s->msg_count; i++)
      with += s->msgs[i].uid_len != 0;
    if (s->uidl_bad > 5)
      note(s, "%zu malformed UIDL lines in all", s->uidl_bad);
    if (with < s->msg_count)
      note(s, "%zu of %zu messages have no usable UID", s->msg_count - with, s->msg_count);
    if (with == 0 && s->msg_count)
      s->uidl_ok = 0; /* nothing usable: as good as no UIDL */
  }
  if (!s->uidl_ok)
    for (size_t i = 0; i < s->msg_count; i++)
      s->msgs[i].uid_len = 0;
  int err = s->uidl_ok ? find_dup_uids(s) : 0;
  if (err) {
    finish(s, err);
    return;
  }
  s->stats.listed = s->msg_count;
  err = begin_transfer(s);
  if (err)
    finish(s, err);
}

/* ---- replies */

static int resp_error(const struct p3_status *st, int fallback) {
  switch (st->code) {
  case P3_RC_IN_USE:
    return P3_EINUSE;
  case P3_RC_LOGIN_DELAY:
    return P3_ELOGINDELAY;
  case P3_RC_SYS_TEMP:
    return P3_ESYSTEMP;
  case P3_RC_AUTH:
    return P3_EAUTH;
  default:
    return fallback;
  }
}

/* The login succeeded: UTF8 when offered, then the listing. */
static void logged_in(struct session *s) {
  if (s->early == SESSION_EARLY_SENT)
    s->early = SESSION_EARLY_HELD;
  if (s->flight_listing) {
    /* The one flight: UTF8 (if any), UIDL and LIST are queued already.
     * Until a reply to them begins, the owner bounds the wait
     * (session_flight_listing_wait). */
    s->listing_wait = 1;
    s->listing_logged_in = 1;
    set_state(s, ST_LISTING);
    return;
  }
  if (s->caps.utf8 && !s->opts.no_utf8) {
    /* RFC 6856.  Courier rewrites messages with UTF-8 headers for clients
     * that did not ask; pipelined, UIDL and LIST follow at once (replies
     * come in order, so UTF8 applies to them). */
    if (send_cmd(s, C_UTF8, 0, NULL) != 0) {
      finish(s, -ENOMEM);
      return;
    }
    if (!s->pipelined)
      return;
  }
  send_listing(s);
}

/* A complete single-line reply, or the status line of a multi-line one
 * (then *multiline_r is set when a body follows). */
static void on_status(struct session *s, struct cmd *c, const struct p3_status *st,
                      int *multiline_r) {
  *multiline_r = 0;
  switch ((enum cmd_kind)c->kind) {
  case C_GREETING: {
    fifo_pop(s);
    if (!st->ok) {
      s->greeting_refused = 1;
      set_server_error(s, st);
      finish(s, resp_error(st, P3_ESERVER));
      return;
    }
    const char *ts;
    size_t tslen;
    if (sasl_apop_timestamp(st->text, st->text_len, &ts, &tslen)) {
      memcpy(s->apop_ts, ts, tslen);
      s->apop_ts[tslen] = '\0';
    }
    if (s->early) {
      /* The flight is out already, and its login needs no stamp; a shape
       * the memory did not expect makes the flight stale (flight_check). */
      if (s->opts.mem_greeting != 0 && (s->apop_ts[0] != '\0') != (s->opts.mem_greeting == 2))
        s->greeting_changed = 1;
      set_state(s, ST_CAPA);
      return;
    }
    if (s->opts.starttls && !s->tls_active && s->mem_capa_ok) {
      /* A warm STLS session: the CAPA before TLS would only be thrown away
       * (RFC 2595 asks for a fresh one after the handshake), so STLS goes
       * first; a server that refuses it ends the run as a cold session
       * would when its CAPA lacks STLS (nothing is sent in cleartext). */
      note(s, "%s", "STLS at once: the memory knows this server");
      set_state(s, ST_STLS);
      if (send_cmd(s, C_STLS, 0, NULL) != 0)
        finish(s, -ENOMEM);
      return;
    }
    start_capa(s);
    return;
  }
  case C_CAPA:
    s->impl[0] = '\0';
    if (st->ok) {
      s->capa_ok = 1;
      proto_caps_init(&s->caps);
      *multiline_r = 1;
      return;
    }
    if (s->early == SESSION_EARLY_SENT)
      s->early = SESSION_EARLY_BROKEN; /* refused what it answered before */
    fifo_pop(s);
    s->capa_ok = 0;
    proto_caps_init(&s->caps);
    after_capa(s);
    return;
  case C_STLS:
    fifo_pop(s);
    if (!st->ok) {
      set_server_error(s, st);
      finish(s, P3_ENOSTLS);
      return;
    }
    set_state(s, ST_TLS_WAIT);
    s->ops.start_tls(s->data);
    return;
  case C_USER:
    fifo_pop(s);
    if (!st->ok) {
      set_server_error(s, st);
      s->auth_err = resp_error(st, P3_EAUTH);
      if (s->auth_sent == 0) {
        finish(s, s->auth_err); /* PASS was not sent */
        return;
      }
      s->user_failed = 1; /* PASS's reply is still to come */
      return;
    }
    if (s->auth_sent == 0 && send_cmd(s, C_PASS, 0, s->opts.password) != 0)
      finish(s, -ENOMEM);
    return;
  case C_PASS:
  case C_APOP:
    fifo_pop(s);
    if (s->user_failed || !st->ok) {
      int err = s->auth_err;
      if (!s->user_failed) {
        set_server_error(s, st);
        err = resp_error(st, P3_EAUTH);
      }
      if (!flight_fallback(s, err))
        finish(s, err);
      return;
    }
    logged_in(s);
    return;
  case C_AUTH:
    fifo_pop(s);
    on_auth_status(s, st);
    return;
  case C_UTF8:
    fifo_pop(s);
    /* A refusal changes nothing: the messages come as they would have. */
    if (!st->ok)
      note(s, "the server refused UTF8: messages with UTF-8 headers may be served rewritten");
    if (s->flight_listing) {
      /* Sent late (after the flight's LIST, before any RETR): a lock-step
       * transfer waits for this reply. */
      if (s->state == ST_TRANSFER)
        pump(s);
      return;
    }
    if (!s->pipelined)
      send_listing(s);
    return;
  case C_UIDL:
    if (st->ok) {
      s->uidl_ok = 1;
      *multiline_r = 1;
      return;
    }
    fifo_pop(s);
    s->uidl_ok = 0;
    s->uidl_failed = 1;
    if (!s->pipelined && send_cmd(s, C_LIST, 0, NULL) != 0)
      finish(s, -ENOMEM);
    return;
  case C_LIST:
    if (st->ok) {
      *multiline_r = 1;
      return;
    }
    fifo_pop(s);
    set_server_error(s, st);
    finish(s, resp_error(st, P3_ESERVER));
    return;
  case C_RETR: {
    struct session_msg *m = &s->msgs[c->idx];
    /* Lock-step: the only reply outstanding.  Pipelined: "UIDL n" right
     * before named this message. */
    s->reply_identity = !s->pipelined || s->checked_idx == c->idx;
    s->checked_idx = SIZE_MAX;
    if (!st->ok) {
      /* The server refuses this one message: keep it, go on with the rest. */
      fifo_pop(s);
      s->retr_inflight--;
      m->flags |= SESSION_MSG_FAILED;
      s->stats.failed++;
      set_server_error(s, st);
      {
        /* Name the message: the server's words rarely do. */
        char text[sizeof s->errtext + 32];
        snprintf(text, sizeof text, "message %lu: %s", m->num, s->errtext);
        snprintf(s->errtext, sizeof s->errtext, "%.*s", (int)sizeof s->errtext - 1, text);
      }
      s->partial_err = P3_EPARTIAL;
      if (s->ops.msg_failed)
        s->ops.msg_failed(s->data, (size_t)(m - s->msgs), s->errtext);
      pump(s);
      return;
    }
    uint64_t octets;
    s->retr_octets = UINT64_MAX;
    if (proto_retr_octets(st->text, st->text_len, &octets)) {
      /* A count other than LIST's is the server's word for what follows
       * when the reply is known to be this message's, and in a pipeline
       * only in the "N octets" form: a UIDL reply "N UID" slipped into
       * this place has a number too. */
      if (octets != m->size &&
          (!s->reply_identity ||
           (s->pipelined && !proto_retr_says_octets(st->text, st->text_len)))) {
        char why[160];
        snprintf(why, sizeof why, "RETR %lu announced %llu octets but LIST said %llu", m->num,
                 (unsigned long long)octets, (unsigned long long)m->size);
        s->error_idx = c->idx;
        desync(s, why);
        return;
      }
      s->retr_octets = octets;
    }
    if (s->ops.msg_begin(s->data, c->idx) != 0) {
      s->error_idx = c->idx;
      save_failed(s);
      return;
    }
    s->body_open = 1;
    *multiline_r = 1;
    return;
  }
  case C_UIDL1: {
    size_t idx = c->idx;
    fifo_pop(s);
    s->checked_idx = SIZE_MAX;
    unsigned long num;
    const char *uid;
    size_t uidlen;
    const char *want = s->uids + s->msgs[idx].uid_off;
    if (!st->ok || proto_parse_uidl_line(st->text, st->text_len, &num, &uid, &uidlen) != 0 ||
        num != s->msgs[idx].num || uidlen != s->msgs[idx].uid_len ||
        memcmp(uid, want, uidlen) != 0) {
      char why[200];
      snprintf(why, sizeof why, "the reply to UIDL %lu does not name message %lu (%.80s)",
               s->msgs[idx].num, s->msgs[idx].num, want);
      desync(s, why);
      return;
    }
    s->checked_idx = idx;
    return;
  }
  case C_TOP: {
    s->reply_identity = !s->pipelined || s->checked_idx == c->idx;
    s->checked_idx = SIZE_MAX;
    if (st->ok) {
      *multiline_r = 1;
      return;
    }
    fifo_pop(s);
    s->probe_inflight--;
    note(s, "no header probe for message %lu: the server refused TOP", s->msgs[c->idx].num);
    if (s->ops.probe_end)
      s->ops.probe_end(s->data, c->idx, 0);
    pump_probes(s);
    return;
  }
  case C_DELE:
    fifo_pop(s);
    if (st->ok) {
      s->msgs[c->idx].flags |= SESSION_MSG_DELETED;
      s->stats.deleted++;
    } else {
      /* The message stays on the server; it is not lost. */
      set_server_error(s, st);
      s->partial_err = P3_EPARTIAL;
    }
    if (s->state == ST_BARRIER)
      maybe_quit(s);
    else
      pump(s);
    return;
  case C_QUIT:
    fifo_pop(s);
    if (!st->ok) {
      /* RFC 1939: some deletions may not have been applied.  Nothing is lost. */
      set_server_error(s, st);
      finish(s, P3_ESERVER);
      return;
    }
    s->stats.quit_ok = 1;
    finish(s, s->partial_err);
    return;
  }
}

/* The wire size of a body (CRLF form, stuffing included) matches a count
 * when it lies within [count - 2, count + lines + 2]: servers count with LF
 * line ends, or without the last CRLF. */
static int size_fits(uint64_t raw, uint64_t lines, uint64_t count) {
  uint64_t lo = count > 2 ? count - 2 : 0;
  /* An announced count comes from the server: no overflow on its word. */
  uint64_t hi = count <= UINT64_MAX - 2 - lines ? count + lines + 2 : UINT64_MAX;
  return raw >= lo && raw <= hi;
}

/* A RETR reply of established identity whose body does not match the count
 * its +OK line announced: that message failed (nothing of it is saved), the
 * rest goes on.  It was retrieved, though, and servers that delete what was
 * retrieved at QUIT (EXPIRE 0) would lose it: no QUIT this session. */
static void retr_short_of_count(struct session *s, size_t idx, uint64_t raw) {
  struct session_msg *m = &s->msgs[idx];
  s->ops.msg_abort(s->data, idx);
  m->flags |= SESSION_MSG_FAILED;
  s->stats.failed++;
  set_local_error(s, "message %lu: RETR announced %llu octets but sent %llu", m->num,
                  (unsigned long long)s->retr_octets, (unsigned long long)raw);
  s->partial_err = P3_EPARTIAL;
  s->no_quit = 1;
  s->no_dele = 1;
  if (s->ops.msg_failed)
    s->ops.msg_failed(s->data, idx, s->errtext);
  if (!s->finished)
    pump(s);
}

/* The end of a multi-line reply. */
static void on_body_end(struct session *s, struct cmd *c) {
  enum cmd_kind kind = (enum cmd_kind)c->kind;
  size_t idx = c->idx;
  s->cause = s->reply_depth = c->depth;
  if (kind == C_RETR && s->msg_depth != NULL && idx < s->msg_count)
    s->msg_depth[idx] = c->depth;
  fifo_pop(s);
  switch (kind) {
  case C_CAPA:
    after_capa(s);
    return;
  case C_UIDL:
    if (!s->pipelined && send_cmd(s, C_LIST, 0, NULL) != 0)
      finish(s, -ENOMEM);
    return;
  case C_LIST:
    listing_complete(s);
    return;
  case C_RETR: {
    struct session_msg *m = &s->msgs[idx];
    uint64_t raw = s->dec.raw_bytes, lines = s->dec.lines;
    s->retr_inflight--;
    s->body_open = 0;
    int list_ok = size_fits(raw, lines, m->size);
    if (!s->reply_identity) {
      /* The desync rule: nothing but LIST vouches for this reply. */
      if (!list_ok) {
        s->ops.msg_abort(s->data, idx);
        char why[200];
        snprintf(why, sizeof why, "RETR %lu returned %llu octets in %llu lines but LIST said %llu",
                 m->num, (unsigned long long)raw, (unsigned long long)lines,
                 (unsigned long long)m->size);
        s->error_idx = idx;
        desync(s, why);
        return;
      }
    } else if (s->retr_octets != UINT64_MAX && !size_fits(raw, lines, s->retr_octets)) {
      retr_short_of_count(s, idx, raw);
      return;
    }
    if (!list_ok) {
      m->flags |= SESSION_MSG_RESIZED;
      s->resized++;
      note(s, "message %lu: RETR sent %llu octets but LIST said %llu: delivered as served", m->num,
           (unsigned long long)raw, (unsigned long long)m->size);
    }
    if (s->reply_identity)
      m->flags |= SESSION_MSG_VERIFIED;
    s->stats.retrieved++;
    s->saves_pending++;
    s->ops.msg_end(s->data, idx);
    pump(s);
    return;
  }
  case C_TOP:
    s->probe_inflight--;
    if (s->ops.probe_end)
      s->ops.probe_end(s->data, idx, s->reply_identity);
    pump_probes(s);
    return;
  default:
    return;
  }
}

/* Processes one status line (without CRLF). */
static void on_line(struct session *s, const char *line, size_t len) {
  struct cmd *c = fifo_head(s);
  if (s->ops.trace)
    s->ops.trace(s->data, 'S', line, len);
  s->listing_wait = 0; /* the server reads what followed the login */
  if (c == NULL) {
    desync(s, "the server sent a reply with no command outstanding");
    return;
  }
  s->cause = s->reply_depth = c->depth;
  if (s->stale) {
    on_stale(s, c, line, len);
    return;
  }
  if (c->kind == C_AUTH) {
    char *data;
    size_t dlen;
    int r = sasl_parse_challenge(line, len, &data, &dlen);
    if (r != 0 && s->flight_listing) {
      /* AUTH PLAIN with its initial response went out with commands behind
       * it: the server would read them as the exchange's next lines. */
      free(data);
      s->flight = SESSION_FLIGHT_STALE;
      s->no_dele = 1;
      s->no_quit = 1;
      set_local_error(s, "%s",
                      "the server asked for more after AUTH PLAIN's initial response, with "
                      "commands pipelined behind it");
      finish(s, P3_EPROTO);
      return;
    }
    if (r != 0) {
      size_t before = s->out.len;
      on_challenge(s, r, data, dlen);
      free(data);
      /* A response to a challenge: the exchange's next reply is a round
       * trip deeper (the AUTH entry stays at the head of the FIFO). */
      c = fifo_head(s);
      if (s->out.len > before && c != NULL && c->kind == C_AUTH) {
        c->depth = s->cause + 1;
        if (c->depth > s->max_depth)
          s->max_depth = c->depth;
      }
      return;
    }
  }
  struct p3_status st;
  if (proto_parse_status(line, len, &st) != 0) {
    char why[160];
    snprintf(why, sizeof why, "expected +OK or -ERR in reply to %s", cmd_names[c->kind]);
    s->no_dele = 1;
    s->no_quit = 1;
    set_local_error(s, "%s", why);
    finish(s, P3_EPROTO);
    return;
  }
  int multiline;
  on_status(s, c, &st, &multiline);
  if (multiline && !s->finished) {
    s->in_body = 1;
    mldec_init(&s->dec);
    s->list_line_len = 0;
    s->list_line_long = 0;
  }
}

/* Decoded bytes of a listing body (CAPA/UIDL/LIST): split into lines.  An
 * over-long UIDL line (a UID far beyond P3_UID_MAX) costs only its message
 * its UID, and an over-long CAPA line (a chatty IMPLEMENTATION) is ignored;
 * a LIST line that long is an error. */
static int listing_bytes(struct session *s, enum cmd_kind kind, const char *p, size_t n) {
  while (n) {
    const char *nl = memchr(p, '\n', n);
    size_t take = nl ? (size_t)(nl - p) : n;
    if (s->list_line_len + take >= sizeof s->list_line) {
      if (kind == C_LIST)
        return P3_EPROTO;
      s->list_line_long = 1;
      take = sizeof s->list_line - 1 - s->list_line_len; /* keep the start */
    }
    memcpy(s->list_line + s->list_line_len, p, take);
    s->list_line_len += take;
    if (!nl)
      break;
    int err = 0;
    if (!(kind == C_CAPA && s->list_line_long))
      err = listing_line(s, kind, s->list_line, s->list_line_len);
    if (err)
      return err;
    s->list_line_len = 0;
    s->list_line_long = 0;
    n -= (size_t)(nl - p) + 1;
    p = nl + 1;
  }
  return 0;
}

/* Feeds body bytes of the reply at the head of the FIFO.  Returns the input
 * consumed. */
static size_t feed_body(struct session *s, const char *buf, size_t len) {
  struct cmd *c = fifo_head(s);
  size_t used = 0;
  while (used < len && s->in_body && !s->finished) {
    size_t chunk = len - used < SCRATCH_SIZE ? len - used : SCRATCH_SIZE;
    size_t outlen, consumed;
    int end = mldec_feed(&s->dec, buf + used, chunk, s->scratch, &outlen, &consumed);
    used += consumed;
    s->body_octets += consumed;
    if (outlen) {
      if (c->kind == C_RETR) {
        if (s->ops.msg_data(s->data, c->idx, s->scratch, outlen) != 0) {
          s->error_idx = c->idx;
          save_failed(s);
          return used;
        }
        s->stats.bytes += outlen;
      } else if (c->kind == C_TOP) {
        if (s->ops.probe_data)
          s->ops.probe_data(s->data, c->idx, s->scratch, outlen);
      } else {
        int err = listing_bytes(s, (enum cmd_kind)c->kind, s->scratch, outlen);
        if (err) {
          set_local_error(s, "malformed %s listing", cmd_names[c->kind]);
          finish(s, err);
          return used;
        }
      }
    }
    if (end) {
      s->in_body = 0;
      s->lines_done++;
      if (c->kind != C_RETR && c->kind != C_TOP && (s->list_line_len || s->list_line_long)) {
        set_local_error(s, "malformed %s listing", cmd_names[c->kind]);
        finish(s, P3_EPROTO);
        return used;
      }
      on_body_end(s, c);
    }
  }
  return used;
}

int session_feed(struct session *s, const char *buf, size_t len) {
  size_t pos = 0;
  while (pos < len && !s->finished) {
    if (s->state == ST_TLS_WAIT) {
      /* RFC 2595: anything after STLS's +OK in plaintext is an injection. */
      return 0;
    }
    if (s->in_body) {
      pos += feed_body(s, buf + pos, len - pos);
      continue;
    }
    const char *nl = memchr(buf + pos, '\n', len - pos);
    size_t take = nl ? (size_t)(nl - (buf + pos)) + 1 : len - pos;
    if (s->line_len + take > sizeof s->line) {
      set_local_error(s, "%s", "a reply line is too long");
      s->no_dele = 1;
      s->no_quit = 1;
      finish(s, P3_EPROTO);
      break;
    }
    memcpy(s->line + s->line_len, buf + pos, take);
    s->line_len += take;
    pos += take;
    if (!nl)
      break;
    size_t n = s->line_len - 1;
    if (n && s->line[n - 1] == '\r')
      n--;
    s->line_len = 0;
    s->lines_done++;
    on_line(s, s->line, n);
  }
  return s->finished ? (s->final_err ? s->final_err : 1) : 0;
}

/* ---- public API */

struct session *session_new(const struct session_options *opts, const struct session_ops *ops,
                            void *data) {
  struct session *s = calloc(1, sizeof *s);
  if (s == NULL)
    return NULL;
  s->opts = *opts;
  s->opts.user = strdup(opts->user ? opts->user : "");
  s->opts.password = strdup(opts->password ? opts->password : "");
  s->opts.host = strdup(opts->host ? opts->host : "");
  if (s->opts.window == 0)
    s->opts.window = SESSION_DEFAULT_WINDOW;
  if (s->opts.window > SESSION_MAX_WINDOW)
    s->opts.window = SESSION_MAX_WINDOW;
  s->ops = *ops;
  s->data = data;
  s->tls_active = opts->tls_active;
  s->scratch = malloc(SCRATCH_SIZE + 1);
  s->fifo.cap = 16;
  s->fifo.v = malloc(s->fifo.cap * sizeof *s->fifo.v);
  proto_caps_init(&s->caps);
  s->mem_capa_ok = mem_caps_parse(&s->mem_caps, opts->mem_capa, &s->mem_courier);
  s->opts.mem_capa = NULL; /* parsed; not kept */
  if (!s->opts.user || !s->opts.password || !s->opts.host || !s->scratch || !s->fifo.v) {
    session_free(s);
    return NULL;
  }
  s->state = ST_GREETING;
  s->error_idx = SIZE_MAX;
  s->checked_idx = SIZE_MAX;
  s->uids_unique = 1;
  fifo_push(s, C_GREETING, 0);
  return s;
}

void session_free(struct session *s) {
  if (s == NULL)
    return;
  /* Do not leave the password (or a pending PASS/AUTH line) in freed memory. */
  sasl_free_secret((char *)s->opts.password);
  sasl_wipe(s->out.data, s->out.cap);
  free((char *)s->opts.user);
  free((char *)s->opts.host);
  free(s->scratch);
  free(s->fifo.v);
  free(s->out.data);
  free(s->msgs);
  free(s->uids);
  free(s->dele_ready);
  free(s->msg_depth);
  free(s);
}

void session_connection_lost(struct session *s, int err) {
  if (s->finished)
    return;
  if (err == 0)
    err = P3_EEOF;
  if (s->state == ST_QUIT) {
    /* Courier over STLS sometimes drops the connection instead of
     * answering QUIT; whether it applied the DELEs is unknown. */
    s->errcode = P3_RC_NONE;
    if (s->deles_sent)
      set_local_error(s, "%s",
                      "it did not answer QUIT, so its deletions may not have been applied");
    else
      set_local_error(s, "%s", "it did not answer QUIT");
  }
  finish(s, err);
}

void session_timeout(struct session *s) {
  if (s->finished)
    return;
  s->no_dele = 1;
  s->no_quit = 1;
  struct cmd *c = fifo_head(s);
  if (s->state == ST_TLS_WAIT)
    set_local_error(s, "%s", ""); /* the transport's detail says it all */
  else if (s->in_body)
    set_local_error(s, "the reply to %s stalled", c ? cmd_names[c->kind] : "the last command");
  else if (s->state == ST_QUIT && s->deles_sent)
    set_local_error(s, "%s",
                    "no reply to QUIT, so the server's deletions may not have been applied");
  else
    set_local_error(s, "no reply to %s", c ? cmd_names[c->kind] : "the last command");
  finish(s, P3_ETIMEOUT);
}

size_t session_take_output(struct session *s, char **buf_r) {
  size_t n = s->out.len;
  if (n == 0) {
    *buf_r = NULL;
    return 0;
  }
  *buf_r = s->out.data;
  s->out.data = NULL;
  s->out.len = s->out.cap = 0;
  return n;
}

int session_awaiting_reply(const struct session *s) {
  return !s->finished && s->fifo.len > 0;
}

int session_in_body(const struct session *s) {
  return !s->finished && s->in_body;
}

void session_wire_counts(const struct session *s, uint64_t *lines_r, uint64_t *body_octets_r) {
  *lines_r = s->lines_done;
  *body_octets_r = s->body_octets;
}

int session_finished(const struct session *s) {
  return s->finished;
}

unsigned session_round_trips(const struct session *s) {
  return s->max_depth;
}

enum session_flight session_flight(const struct session *s) {
  return s->flight;
}

int session_greeting_apop(const struct session *s) {
  return s->apop_ts[0] != '\0';
}

int session_send_early(struct session *s) {
  if (s->finished || s->state != ST_GREETING || s->fifo.len != 1 || s->lines_done != 0 ||
      !s->tls_active || s->opts.starttls || s->flight != SESSION_FLIGHT_NONE)
    return 0;
  /* No greeting yet, so no APOP stamp: choose_auth cannot pick APOP (and a
   * forced APOP gives AUTO).  USER/PASS or one-line AUTH PLAIN only. */
  enum session_auth a = flight_method(s);
  if (a != SESSION_AUTH_USER && a != SESSION_AUTH_PLAIN)
    return 0;
  s->early = SESSION_EARLY_SENT;
  send_flight(s, a);
  if (!s->finished)
    set_state(s, ST_GREETING);
  return !s->finished;
}

enum session_early session_early(const struct session *s) {
  return s->early;
}

int session_flight_listing(const struct session *s) {
  return s->flight_listing_sent;
}

int session_flight_listing_wait(const struct session *s) {
  return !s->finished && s->listing_wait;
}

int session_flight_listing_logged_in(const struct session *s) {
  return s->listing_logged_in;
}

const char *session_implementation(const struct session *s) {
  return s->impl;
}

void session_tls_ready(struct session *s) {
  if (s->state != ST_TLS_WAIT)
    return;
  s->tls_active = 1;
  s->line_len = 0;
  /* RFC 2595: capabilities may differ inside TLS; ask again. */
  proto_caps_init(&s->caps);
  s->capa_ok = 0;
  start_capa(s);
}

void session_saved(struct session *s, size_t idx, int err) {
  struct session_msg *m = &s->msgs[idx];
  s->saves_pending--;
  /* Its DELE answers its RETR reply; lock-step, also the last reply. */
  if (s->msg_depth != NULL && idx < s->msg_count && s->msg_depth[idx] != 0)
    s->cause = s->msg_depth[idx];
  if (!s->pipelined && s->reply_depth > s->cause)
    s->cause = s->reply_depth;
  if (err) {
    m->flags |= SESSION_MSG_FAILED;
    s->stats.failed++;
    if (!s->finished)
      s->error_idx = idx;
    save_failed(s);
    return;
  }
  m->flags |= SESSION_MSG_SAVED;
  s->stats.saved++;
  /* Keep mode leaves the message on the server. */
  if (!s->opts.keep && s->dele_ready_len < s->msg_count)
    s->dele_ready[s->dele_ready_len++] = idx;
  if (!s->finished)
    pump(s);
}

void session_barrier_done(struct session *s, int err) {
  if (s->finished)
    return;
  if (err) {
    set_local_error(s, "%s", "could not make the Maildir's new/ durable");
    s->no_quit = 1;
    finish(s, P3_ESAVE);
    return;
  }
  s->barrier_done = 1;
  maybe_quit(s);
}

void session_stop(struct session *s) {
  if (s->finished || s->stopping)
    return;
  s->stopping = 1;
  if (s->state != ST_TRANSFER) {
    /* Before the transfer (or while quitting) there is nothing to save. */
    if (s->state != ST_BARRIER && s->state != ST_QUIT)
      finish(s, P3_ECANCELED);
    return;
  }
  if (s->next_retr < s->msg_count)
    s->partial_err = P3_ECANCELED;
  pump(s);
}

size_t session_msg_count(const struct session *s) {
  return s->msg_count;
}

const struct session_msg *session_msg(const struct session *s, size_t idx) {
  return idx < s->msg_count ? &s->msgs[idx] : NULL;
}

const char *session_msg_uid(const struct session *s, size_t idx) {
  if (idx >= s->msg_count || s->msgs[idx].uid_len == 0)
    return NULL;
  return s->uids + s->msgs[idx].uid_off;
}

void session_skip_msg(struct session *s, size_t idx) {
  if (idx < s->msg_count)
    s->msgs[idx].flags |= SESSION_MSG_SKIP;
}

void session_delete_only(struct session *s, size_t idx) {
  if (idx < s->msg_count)
    s->msgs[idx].flags |= SESSION_MSG_DELETE;
}

void session_probe_msg(struct session *s, size_t idx) {
  /* Only while `listed` runs: the probes go out right after it. */
  if (s->state != ST_LISTING || s->finished || idx >= s->msg_count ||
      (s->msgs[idx].flags & SESSION_MSG_PROBE))
    return;
  s->msgs[idx].flags |= SESSION_MSG_PROBE;
  s->probes++;
}

int session_uids_unique(const struct session *s) {
  return s->uids_unique;
}

const struct p3_caps *session_caps(const struct session *s) {
  return &s->caps;
}

int session_has_capa(const struct session *s) {
  return s->capa_ok;
}

enum session_auth session_auth_used(const struct session *s) {
  return s->method;
}

int session_oauth_refused(const struct session *s) {
  return s->oauth_refused;
}

static int ascii_caseeq(const char *a, const char *b) {
  for (; *a && *b; a++, b++) {
    char x = *a >= 'A' && *a <= 'Z' ? (char)(*a - 'A' + 'a') : *a;
    if (x != *b)
      return 0;
  }
  return *a == *b;
}

const char *session_auth_name(enum session_auth auth) {
  if ((unsigned)auth >= sizeof auth_names / sizeof auth_names[0])
    return NULL;
  return auth_names[auth];
}

int session_auth_parse(const char *name, enum session_auth *auth_r) {
  for (size_t i = 0; i < sizeof auth_names / sizeof auth_names[0]; i++)
    if (ascii_caseeq(name, auth_names[i])) {
      *auth_r = (enum session_auth)i;
      return 0;
    }
  return P3_EUSAGE;
}

int session_auth_is_oauth(enum session_auth auth) {
  return auth == SESSION_AUTH_XOAUTH2 || auth == SESSION_AUTH_OAUTHBEARER;
}

int session_has_uidl(const struct session *s) {
  return s->uidl_ok;
}

int session_pipelined(const struct session *s) {
  return s->pipelined;
}

size_t session_error_msg(const struct session *s) {
  return s->error_idx;
}

void session_fail(struct session *s, int err, const char *text) {
  if (s->finished)
    return;
  s->no_dele = 1;
  s->no_quit = 1;
  set_local_error(s, "%s", text);
  finish(s, err);
}

const char *session_error_text(const struct session *s) {
  return s->errtext;
}

enum p3_resp_code session_error_code(const struct session *s) {
  return s->errcode;
}

const struct session_stats *session_stats(const struct session *s) {
  return &s->stats;
}

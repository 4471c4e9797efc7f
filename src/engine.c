#include "config.h"

#include "engine.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "conn.h"
#include "crash.h"
#include "errors.h"
#include "hdrdigest.h"
#include "human.h"
#include "maildir.h"
#include "plan.h"
#include "srvmem.h"
#include "uidstate.h"

/* Memory the write queue holds (maildir's mem_bytes: chunk capacity and
 * delivery structs, not just body bytes) before the socket stops being
 * read, and the level at which reading resumes: this bounds memory per
 * session no matter how large a message, how many small ones, or how slow
 * the disk.  3 MiB keeps peak RSS below 8 MiB (issue 11; the process's own
 * baseline is ~4 MiB) and still lets 48 chunks of 64 KiB wait for the disk. */
#define HIGH_WATER (3u << 20)
#define LOW_WATER (1u << 20)

/* Files in tmp/ older than this are debris (the Maildir convention). */
#define TMP_MAX_AGE_S (36 * 3600)

struct delivery_ctx;

struct engine {
  uv_loop_t *loop;
  struct engine_options opts;
  engine_done_cb done_cb;
  void *data;
  char server[700]; /* user@host:port: the identity records are keyed by */

  struct conn conn;
  struct session *session;
  struct maildir md;
  int md_ready;
  struct uidstate *state;
  uv_work_t work; /* prepare and finish steps on the thread pool */
  int work_err;
  char work_msg[512];

  /* The delivery of the message whose body is streaming (one at a time:
   * replies arrive in order). */
  struct maildir_delivery *current;
  struct delivery_ctx *current_ctx;

  uv_check_t drain_check; /* resumes reading once the write queue drained */
  uv_timer_t grace_timer;
  /* Bounds the wait for the replies to the listing the one flight sent
   * behind the login (flight-listing), then runs the cold retry. */
  uv_timer_t stall_timer; /* active: the stall guard is armed (or the retry waits) */
  int retry_cold;         /* the flight's listing stalled: one cold session follows */
  int retried;            /* this is that session */
  unsigned rt_before;     /* round trips of the session before the retry */
  uint64_t connect_ms;    /* loop time conn_start was called */
  uint64_t greeting_ms;   /* loop time the first plaintext arrived, or 0 */
  uint64_t stall_start_ms;
  int handles_open;
  unsigned record_writes; /* journal appends in flight */
  unsigned barrier_busy;

  int conn_started;
  int conn_closed;
  int session_done;
  int finishing;
  int reported;
  int err;
  int lockstep;
  int stop_requested;
  int listed_told; /* opts.listed was called */
  int fs_known;    /* statvfs of the Maildir, taken while preparing */
  uint64_t fs_total, fs_avail;
  char conn_detail[768];
  char save_detail[256];

  /* Per-message failure texts, for the attempt records. */
  char **fail_text;

  /* The plan for this session's listing (plan.h): one item per message,
   * with copies of the journal records it was decided on. */
  struct plan_options plan_opts;
  struct plan_item *plan;
  struct plan_rec *plan_recs;
  size_t plan_n;
  /* The header digest of the probe (TOP n 0) being received; probe_lost:
   * part of that header could not be digested (no memory). */
  struct hdrdigest *probe_hd;
  size_t probe_idx;
  int probe_lost;

  struct engine_stuck *stuck;
  size_t stuck_count, stuck_cap;
  struct engine_over_size *over_size; /* at most ENGINE_OVER_SIZE_MAX */
  size_t over_size_n, over_size_cap;
  struct engine_result result;
  uint64_t started_ms;

  /* The per-server memory (srvmem.h), read with the journal and written
   * back before it is unlocked.  Holds a TLS master secret: wiped on free,
   * never traced. */
  struct srvmem mem;
  int mem_loaded;      /* read (or found absent) under the journal's lock */
  int mem_dirty;       /* something to write back */
  int tls_offer;       /* mem's TLS session matches this run's settings */
  uint8_t tls_key[32]; /* tls_session_key for this run */
  char mem_note[300];  /* why the memory was not used, for -v */
};

static void finish_if_idle(struct engine *e);
static void start_finish(struct engine *e);
static void load_memory(struct engine *e);
static void remember_tls(struct engine *e);
static void forget_tls(struct engine *e, int err);
static void remember_facts(struct engine *e);

static void trace(struct engine *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void stall_guard(struct engine *e);

static void trace(struct engine *e, const char *fmt, ...) {
  if (e->opts.trace == NULL)
    return;
  char line[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  e->opts.trace(e->opts.trace_data, line);
}

/* Sends what the session queued and sets the reply timeout.  Called after
 * every call into the session. */
static void flush(struct engine *e) {
  if (e->session == NULL || e->conn_closed || !e->conn_started)
    return;
  char *out;
  size_t n = session_take_output(e->session, &out);
  if (n) {
    int has_dele = memmem(out, n, "DELE ", 5) != NULL;
    int has_quit = memmem(out, n, "QUIT\r\n", 6) != NULL;
    int err = conn_write(&e->conn, out, n);
    if (err && !session_finished(e->session))
      session_connection_lost(e->session, err);
    if (has_dele)
      P3_CRASH_POINT("after-dele");
    if (has_quit)
      P3_CRASH_POINT("after-quit");
  }
  if (!e->conn.closing) {
    /* The reply bounds (progress.h): what the session waits for, and how far
     * it got. */
    uint64_t lines, body;
    session_wire_counts(e->session, &lines, &body);
    enum progress_wait wait = !session_awaiting_reply(e->session) ? PROGRESS_IDLE
                              : session_in_body(e->session)       ? PROGRESS_BODY
                                                                  : PROGRESS_LINE;
    conn_expect(&e->conn, wait, lines, body);
  }
  stall_guard(e);
}

/* ---- UID records */

struct record_write {
  uv_fs_t req;
  struct engine *e;
  size_t idx;
  char *line;
};

static void on_record_written(uv_fs_t *req) {
  struct record_write *w = req->data;
  struct engine *e = w->e;
  int err = req->result < 0 ? (int)req->result : 0;
  uv_fs_req_cleanup(req);
  free(w->line);
  size_t idx = w->idx;
  free(w);
  e->record_writes--;
  if (err == 0)
    P3_CRASH_POINT("after-record");
  else if (e->save_detail[0] == '\0')
    snprintf(e->save_detail, sizeof e->save_detail, "appending to %s: %s", uidstate_path(e->state),
             uv_strerror(err));
  /* Only now may the DELE go out: the record says the message is delivered. */
  session_saved(e->session, idx, err);
  flush(e);
  finish_if_idle(e);
}

static const char *msg_uid(struct engine *e, size_t idx) {
  return session_msg_uid(e->session, idx);
}

/* The UID a delivery of idx is recorded under, or NULL when it gets no
 * record: no journal, no usable UID, or a UID the listing shows more than
 * once (not an identity, see plan.h). */
static const char *record_uid(struct engine *e, size_t idx) {
  if (e->state == NULL)
    return NULL;
  if (e->plan == NULL || idx >= e->plan_n || e->plan[idx].dup_uid)
    return NULL;
  return e->plan[idx].uid;
}

/* ---- delivery */

struct delivery_ctx {
  struct engine *e;
  size_t idx;
  /* The header digest, computed while the body streams through; final once
   * the body is complete (has_digest). */
  struct hdrdigest *hd;
  int has_digest;
  uint8_t digest[HDRDIGEST_LEN];
  /* For the intent record written on the worker right before the rename:
   * copies, so the worker touches nothing the loop thread changes. */
  const char *server;
  char uid[UIDSTATE_UID_MAX + 1];
  uint64_t size;
  int state_fd;
};

static void delivery_ctx_free(struct delivery_ctx *ctx) {
  if (ctx) {
    hdrdigest_free(ctx->hd);
    free(ctx);
  }
}

/* Worker thread, between fsync and rename: append the message's D record
 * first, so that a kill right after the rename cannot leave a file in new/
 * without its record (a duplicate next time).  A record whose file never
 * reached new/ is dropped when the journal is next opened. */
static int write_intent(void *arg, const char *new_name) {
  struct delivery_ctx *c = arg;
  char line[4200];
  int n = uidstate_format_delivered(c->server, c->uid, c->size, new_name, time(NULL),
                                    c->has_digest ? c->digest : NULL, line, sizeof line);
  if (n < 0)
    return n;
  ssize_t w = write(c->state_fd, line, (size_t)n);
  if (w != n)
    return w < 0 ? -errno : -EIO;
  P3_CRASH_POINT("after-intent");
  return 0;
}

static void on_delivered(struct maildir_delivery *d, int err, const char *new_name, uint64_t bytes,
                         void *data) {
  struct delivery_ctx *ctx = data;
  struct engine *e = ctx->e;
  size_t idx = ctx->idx;
  int has_digest = ctx->has_digest;
  uint8_t digest[HDRDIGEST_LEN];
  memcpy(digest, ctx->digest, sizeof digest);
  delivery_ctx_free(ctx);
  if (err == 0) {
    e->result.delivered++;
    e->result.bytes += bytes;
    trace(e, "saved message %lu as new/%s (%llu bytes)", session_msg(e->session, idx)->num,
          new_name, (unsigned long long)bytes);
  } else if (err != UV_ECANCELED && e->save_detail[0] == '\0') {
    snprintf(e->save_detail, sizeof e->save_detail, "%s: %s", e->opts.maildir, uv_strerror(err));
  }
  if (err == UV_ECANCELED) {
    finish_if_idle(e);
    return;
  }
  const char *uid = record_uid(e, idx);
  if (err == 0 && uid) {
    struct record_write *w = calloc(1, sizeof *w);
    size_t len;
    int ferr = w ? uidstate_append_delivered(e->state, e->server, uid,
                                             session_msg(e->session, idx)->size, new_name,
                                             time(NULL), has_digest ? digest : NULL, &w->line, &len)
                 : -ENOMEM;
    if (ferr == 0) {
      w->e = e;
      w->idx = idx;
      w->req.data = w;
      uv_buf_t b = uv_buf_init(w->line, (unsigned)len);
      ferr = uv_fs_write(e->loop, &w->req, uidstate_fd(e->state), &b, 1, -1, on_record_written);
      if (ferr == 0) {
        e->record_writes++;
        return;
      }
      free(w->line);
    }
    free(w);
    /* Without its record the message would be fetched again: do not DELE. */
    err = ferr;
    if (e->save_detail[0] == '\0')
      snprintf(e->save_detail, sizeof e->save_detail, "recording message %lu: %s",
               session_msg(e->session, idx)->num, uv_strerror(err));
  }
  session_saved(e->session, idx, err);
  flush(e);
  finish_if_idle(e);
}

static int on_msg_begin(void *data, size_t idx) {
  struct engine *e = data;
  struct maildir_delivery *d;
  struct delivery_ctx *ctx = calloc(1, sizeof *ctx);
  int err = ctx ? maildir_open(&e->md, on_delivered, ctx, &d) : -ENOMEM;
  if (err) {
    delivery_ctx_free(ctx);
    snprintf(e->save_detail, sizeof e->save_detail, "%s: %s", e->opts.maildir, uv_strerror(err));
    return err;
  }
  ctx->e = e;
  ctx->idx = idx;
  ctx->state_fd = -1;
  const char *uid = record_uid(e, idx);
  if (uid) {
    /* Without it the record has no digest: a size change in keep mode then
     * means a new message (fetched again), never a loss. */
    ctx->hd = hdrdigest_new();
    ctx->server = e->server;
    snprintf(ctx->uid, sizeof ctx->uid, "%s", uid);
    ctx->size = session_msg(e->session, idx)->size;
    ctx->state_fd = uidstate_fd(e->state);
  }
  /* The LIST size sizes the first chunk (one allocation for a small one). */
  maildir_size_hint(d, session_msg(e->session, idx)->size);
  e->current = d;
  e->current_ctx = ctx;
  return 0;
}

static void on_drain_check(uv_check_t *h) {
  struct engine *e = h->data;
  if (e->md.mem_bytes <= LOW_WATER || e->session_done) {
    uv_check_stop(h);
    conn_resume(&e->conn);
  }
}

static int on_msg_data(void *data, size_t idx, const char *buf, size_t len) {
  struct engine *e = data;
  if (e->current_ctx->hd && !hdrdigest_header_done(e->current_ctx->hd))
    hdrdigest_feed(e->current_ctx->hd, buf, len);
  int err = maildir_write(e->current, buf, len);
  if (err)
    return err;
  /* A write that already failed (a full disk) stops the stream at once. */
  err = maildir_delivery_error(e->current);
  if (err) {
    snprintf(e->save_detail, sizeof e->save_detail, "%s: %s", e->opts.maildir, uv_strerror(err));
    return err;
  }
  if (e->md.mem_bytes > HIGH_WATER && !e->conn.paused) {
    conn_pause(&e->conn);
    uv_check_start(&e->drain_check, on_drain_check);
  }
  return 0;
}

static void on_msg_end(void *data, size_t idx) {
  struct engine *e = data;
  struct maildir_delivery *d = e->current;
  struct delivery_ctx *ctx = e->current_ctx;
  e->current = NULL;
  e->current_ctx = NULL;
  if (ctx->hd) {
    hdrdigest_final(ctx->hd, ctx->digest);
    hdrdigest_free(ctx->hd);
    ctx->hd = NULL;
    ctx->has_digest = 1;
  }
  if (ctx->state_fd >= 0)
    maildir_commit_with(d, write_intent, ctx);
  else
    maildir_commit(d);
}

static void on_msg_abort(void *data, size_t idx) {
  struct engine *e = data;
  struct maildir_delivery *d = e->current;
  e->current = NULL;
  e->current_ctx = NULL;
  if (d)
    maildir_abort(d);
}

static void on_msg_failed(void *data, size_t idx, const char *why) {
  struct engine *e = data;
  if (e->fail_text == NULL)
    e->fail_text = calloc(session_msg_count(e->session), sizeof *e->fail_text);
  if (e->fail_text && idx < session_msg_count(e->session)) {
    free(e->fail_text[idx]);
    e->fail_text[idx] = strdup(why && why[0] ? why : "could not be retrieved");
  }
}

/* ---- the barrier: fsync(new/), append B, fsync(journal) */

static void on_journal_synced(uv_fs_t *req) {
  struct engine *e = req->data;
  int err = req->result < 0 ? (int)req->result : 0;
  uv_fs_req_cleanup(req);
  free(req);
  e->barrier_busy--;
  if (err && e->save_detail[0] == '\0')
    snprintf(e->save_detail, sizeof e->save_detail, "fsync %s: %s", uidstate_path(e->state),
             uv_strerror(err));
  if (err == 0)
    P3_CRASH_POINT("after-journal-fsync");
  if (!e->session_done) {
    session_barrier_done(e->session, err);
    flush(e);
  }
  finish_if_idle(e);
}

struct barrier_write {
  uv_fs_t req;
  struct engine *e;
  char *line;
};

static void on_barrier_written(uv_fs_t *req) {
  struct barrier_write *w = req->data;
  struct engine *e = w->e;
  int err = req->result < 0 ? (int)req->result : 0;
  uv_fs_req_cleanup(req);
  free(w->line);
  free(w);
  uv_fs_t *sync = err ? NULL : malloc(sizeof *sync);
  if (sync) {
    sync->data = e;
    if (uv_fs_fsync(e->loop, sync, uidstate_fd(e->state), on_journal_synced) == 0)
      return;
    free(sync);
  }
  e->barrier_busy--;
  if (!e->session_done)
    session_barrier_done(e->session, err ? err : -ENOMEM);
  finish_if_idle(e);
}

static void on_newdir_synced(int err, void *data) {
  struct engine *e = data;
  if (err && e->save_detail[0] == '\0')
    snprintf(e->save_detail, sizeof e->save_detail, "fsync %s/new: %s", e->opts.maildir,
             uv_strerror(err));
  if (err == 0)
    P3_CRASH_POINT("after-barrier-new");
  if (err == 0 && e->state && !e->session_done) {
    struct barrier_write *w = calloc(1, sizeof *w);
    size_t len;
    if (w && uidstate_append_barrier(e->state, time(NULL), &w->line, &len) == 0) {
      w->e = e;
      w->req.data = w;
      uv_buf_t b = uv_buf_init(w->line, (unsigned)len);
      if (uv_fs_write(e->loop, &w->req, uidstate_fd(e->state), &b, 1, -1, on_barrier_written) == 0)
        return; /* barrier_busy stays raised until the journal is synced */
      free(w->line);
    }
    free(w);
    err = -ENOMEM;
  }
  e->barrier_busy--;
  if (!e->session_done) {
    trace(e, "barrier: %s/new is durable", e->opts.maildir);
    session_barrier_done(e->session, err);
    flush(e);
  }
  finish_if_idle(e);
}

static void on_session_barrier(void *data) {
  struct engine *e = data;
  e->barrier_busy++;
  int err = maildir_barrier(&e->md, on_newdir_synced, e);
  if (err) {
    e->barrier_busy--;
    session_barrier_done(e->session, err);
  }
}

/* ---- the listing: what to fetch, what to delete only, what to leave */

static void add_stuck(struct engine *e, size_t idx, const struct uidstate_rec *rec) {
  if (buf_grow(&e->stuck, &e->stuck_cap, e->stuck_count + 1, sizeof *e->stuck, 4,
               SIZE_MAX / sizeof *e->stuck) != 0)
    return;
  struct engine_stuck *x = &e->stuck[e->stuck_count++];
  memset(x, 0, sizeof *x);
  const struct session_msg *m = session_msg(e->session, idx);
  x->number = m->num;
  snprintf(x->uid, sizeof x->uid, "%s", msg_uid(e, idx) ? msg_uid(e, idx) : "");
  x->size = m->size;
  x->attempts = rec ? rec->attempts : 0;
  snprintf(x->last_error, sizeof x->last_error, "%s",
           rec && rec->last_error ? rec->last_error : "");
}

/* A message left on the server for max_size: counted, and listed while
 * the list has room. */
static void add_over_size(struct engine *e, size_t idx) {
  const struct session_msg *m = session_msg(e->session, idx);
  e->result.over_size_count++;
  e->result.over_size_bytes += m->size;
  if (e->over_size_n >= ENGINE_OVER_SIZE_MAX ||
      buf_grow(&e->over_size, &e->over_size_cap, e->over_size_n + 1, sizeof *e->over_size, 8,
               ENGINE_OVER_SIZE_MAX) != 0)
    return;
  struct engine_over_size *x = &e->over_size[e->over_size_n++];
  memset(x, 0, sizeof *x);
  x->number = m->num;
  snprintf(x->uid, sizeof x->uid, "%s", msg_uid(e, idx) ? msg_uid(e, idx) : "");
  x->size = m->size;
}

/* Traces a decision that is not routine (routine: new, delivered, kept). */
static void trace_decision(struct engine *e, size_t idx) {
  const struct plan_item *it = &e->plan[idx];
  switch (it->reason) {
  case PLAN_R_NEW:
  case PLAN_R_DELIVERED:
  case PLAN_R_KEPT:
  case PLAN_R_STUCK: /* traced with its attempts by apply_decision */
    return;
  case PLAN_R_NO_UID:
    if (!session_has_uidl(e->session))
      return; /* said once for the whole listing */
    break;
  default:
    break;
  }
  trace(e, "message %lu (UID %s): %s", session_msg(e->session, idx)->num, it->uid ? it->uid : "-",
        plan_reason_text(it->reason));
}

/* Hands one decided item to the session. */
static void apply_decision(struct engine *e, size_t idx) {
  struct session *s = e->session;
  const struct plan_item *it = &e->plan[idx];
  trace_decision(e, idx);
  switch (it->action) {
  case PLAN_FETCH:
  case PLAN_PROBE:
    break;
  case PLAN_DELETE:
    session_delete_only(s, idx);
    break;
  case PLAN_SKIP:
    session_skip_msg(s, idx);
    if (it->reason == PLAN_R_STUCK) {
      const struct uidstate_rec *rec = uidstate_find(e->state, e->server, it->uid);
      add_stuck(e, idx, rec);
      trace(e, "message %lu (UID %s) failed %u times: left on the server", session_msg(s, idx)->num,
            it->uid, rec ? rec->attempts : 0);
    } else if (it->reason == PLAN_R_OVER_SIZE) {
      add_over_size(e, idx);
    }
    break;
  }
}

/* Fetch what fits on the disk, oldest first; leave the rest.  The figures
 * were read on the thread pool when the run started.  Runs once every
 * other decision is made. */
static void budget_disk(struct engine *e) {
  struct session *s = e->session;
  size_t n = session_msg_count(s);
  if (!e->fs_known)
    return;
  uint64_t total = e->fs_total;
  uint64_t avail = e->fs_avail;
  uint64_t margin = total / 100 > (1u << 20) ? total / 100 : (1u << 20);
  uint64_t budget = avail > margin ? avail - margin : 0, need = 0;
  for (size_t i = 0; i < n; i++) {
    const struct session_msg *m = session_msg(s, i);
    if (m->flags & (SESSION_MSG_SKIP | SESSION_MSG_DELETE))
      continue;
    /* The delivered file is at most the LIST size (LF instead of CRLF). */
    if (need + m->size > budget) {
      session_skip_msg(s, i);
      e->result.left_for_space++;
      e->result.left_for_space_bytes += m->size;
      continue;
    }
    need += m->size;
  }
  if (e->result.left_for_space)
    trace(e, "%zu messages (%llu bytes) left on the server: not enough disk space",
          e->result.left_for_space, (unsigned long long)e->result.left_for_space_bytes);
}

/* Every decision is final (probes included): count and budget. */
static void plan_complete(struct engine *e) {
  struct plan_summary sum;
  plan_summarize(e->plan, e->plan_n, &sum);
  e->result.already = sum.already;
  budget_disk(e);
}

/* The journal's record for a UID, reduced to what the plan needs. */
static void fill_plan_rec(struct plan_rec *pr, const struct uidstate_rec *rec) {
  memset(pr, 0, sizeof *pr);
  pr->delivered = rec->delivered;
  pr->size = rec->delivered_size;
  pr->attempts = rec->attempts;
  pr->has_digest = rec->digest != NULL;
  if (rec->digest)
    memcpy(pr->digest, rec->digest, HDRDIGEST_LEN);
}

/* The listing is complete: decide fetch / delete only / skip / probe for
 * every message (plan.h), from the journal. */
static void on_listed(void *data) {
  struct engine *e = data;
  struct session *s = e->session;
  size_t n = session_msg_count(s);
  const struct p3_caps *caps = session_caps(s);
  e->result.uidl = session_has_uidl(s);
  if (e->opts.keep && (!session_has_uidl(s) || caps->expire_zero)) {
    session_fail(s, P3_EKEEP,
                 !session_has_uidl(s)
                     ? "the server has no UIDL, so kept messages cannot be told apart"
                     : "the server advertises EXPIRE 0: it deletes what was retrieved");
    return;
  }
  if (!session_has_uidl(s))
    trace(e, "the server has no UIDL: every message is fetched (no UID state)");
  if (e->opts.listed && !e->listed_told++)
    e->opts.listed(e->data, n, engine_progress_bytes_total(e));
  e->plan = calloc(n ? n : 1, sizeof *e->plan);
  e->plan_recs = calloc(n ? n : 1, sizeof *e->plan_recs);
  if (e->plan == NULL || e->plan_recs == NULL) {
    session_fail(s, -ENOMEM, "out of memory");
    return;
  }
  e->plan_n = n;
  e->plan_opts = (struct plan_options){
      .keep = e->opts.keep,
      .keep_days = e->opts.keep_days,
      .now = time(NULL),
      .max_attempts = ENGINE_MAX_ATTEMPTS,
      .can_probe = 1,
      .max_size = e->opts.max_size,
  };
  for (size_t i = 0; i < n; i++) {
    struct plan_item *it = &e->plan[i];
    const struct session_msg *m = session_msg(s, i);
    it->size = m->size;
    it->uid = msg_uid(e, i);
    it->dup_uid = (m->flags & SESSION_MSG_DUPUID) != 0;
    const struct uidstate_rec *rec =
        it->uid && e->state ? uidstate_find(e->state, e->server, it->uid) : NULL;
    if (rec) {
      fill_plan_rec(&e->plan_recs[i], rec);
      it->rec = &e->plan_recs[i];
    }
  }
  struct plan_summary sum;
  if (plan_listing(&e->plan_opts, e->plan, n, &sum) != 0) {
    session_fail(s, -ENOMEM, "out of memory");
    return;
  }
  if (!sum.uids_unique || !session_uids_unique(s)) {
    e->result.uids_unique = 0;
    trace(e, "the server lists some UIDs more than once: those messages are always fetched");
  }
  for (size_t i = 0; i < n; i++) {
    apply_decision(e, i);
    if (e->plan[i].action == PLAN_PROBE)
      session_probe_msg(s, i);
  }
  if (sum.probe == 0)
    plan_complete(e);
  /* else on_probed completes the plan once every TOP n 0 is in. */
}

/* ---- probes (keep mode: a known UID listed with another size): the
 * header digest of each TOP n 0 reply decides (plan_probed). */

/* The digest for probe idx, started on its first bytes. */
static void probe_begin(struct engine *e, size_t idx) {
  if (e->probe_idx == idx && (e->probe_hd || e->probe_lost))
    return;
  hdrdigest_free(e->probe_hd);
  e->probe_hd = hdrdigest_new();
  e->probe_idx = idx;
  e->probe_lost = e->probe_hd == NULL;
}

static void on_probe_data(void *data, size_t idx, const char *buf, size_t len) {
  struct engine *e = data;
  probe_begin(e, idx);
  if (e->probe_hd)
    hdrdigest_feed(e->probe_hd, buf, len);
}

static void on_probe_end(void *data, size_t idx, int ok) {
  struct engine *e = data;
  uint8_t digest[HDRDIGEST_LEN];
  const uint8_t *dg = NULL;
  if (ok) {
    probe_begin(e, idx); /* an empty header had no bytes */
    if (e->probe_hd && !e->probe_lost) {
      hdrdigest_final(e->probe_hd, digest);
      dg = digest;
    }
  }
  hdrdigest_free(e->probe_hd);
  e->probe_hd = NULL;
  e->probe_lost = 0;
  e->probe_idx = SIZE_MAX;
  if (e->plan == NULL || idx >= e->plan_n || e->plan[idx].action != PLAN_PROBE)
    return;
  plan_probed(&e->plan_opts, &e->plan[idx], dg);
  apply_decision(e, idx);
}

/* Every probe is in: decide the ones that never answered, then budget. */
static void on_probed(void *data) {
  struct engine *e = data;
  for (size_t i = 0; i < e->plan_n; i++)
    if (e->plan[i].action == PLAN_PROBE) {
      plan_probed(&e->plan_opts, &e->plan[i], NULL);
      apply_decision(e, i);
    }
  plan_complete(e);
}

/* ---- session and transport wiring */

/* The flight's listing behind an accepted login (session_flight_listing_wait)
 * must start within max(3 s, 4 x the time from connecting to the greeting):
 * Courier's login process drops what follows PASS, and would leave the
 * session waiting for the reply timeout. */
#define STALL_MIN_MS 3000
#define RETRY_DELAY_MS 500

static void on_stall_timeout(uv_timer_t *t) {
  struct engine *e = t->data;
  if (e->session == NULL || !session_flight_listing_wait(e->session))
    return;
  uint64_t waited = uv_now(e->loop) - e->stall_start_ms;
  trace(e,
        "no reply to the UIDL and LIST sent behind the login within %llu ms: the server drops "
        "what follows the login; they go after the login's reply from now on",
        (unsigned long long)waited);
  if (e->mem_loaded) {
    e->mem.flight_listing = SRVMEM_NO;
    e->mem_dirty = 1;
  }
  /* Nothing was retrieved or deleted: a cold session in the same run. */
  e->retry_cold = !e->retried && !e->stop_requested;
  session_fail(e->session, P3_ETIMEOUT,
               "no reply to the UIDL and LIST sent behind the login (the server drops commands "
               "pipelined behind the login)");
  flush(e);
}

static void stall_guard(struct engine *e) {
  if (e->session_done)
    return; /* the timer is the retry's now (finish_if_idle) */
  int wait = e->session != NULL && session_flight_listing_wait(e->session) && !e->conn.closing;
  int armed = uv_is_active((uv_handle_t *)&e->stall_timer);
  if (wait && !armed) {
    uint64_t now = uv_now(e->loop);
    uint64_t rtt = e->greeting_ms > e->connect_ms ? e->greeting_ms - e->connect_ms : 0;
    uint64_t ms = 4 * rtt > STALL_MIN_MS ? 4 * rtt : STALL_MIN_MS;
    e->stall_start_ms = now;
    uv_timer_start(&e->stall_timer, on_stall_timeout, ms, 0);
  } else if (!wait && armed) {
    uv_timer_stop(&e->stall_timer);
  }
}

static void on_start_tls(void *data) {
  struct engine *e = data;
  int err = conn_start_tls(&e->conn);
  if (err && !session_finished(e->session))
    session_connection_lost(e->session, err);
}

static void on_session_trace(void *data, char dir, const char *line, size_t len) {
  struct engine *e = data;
  if (dir == '-')
    trace(e, "%.*s", (int)len, line);
  else
    trace(e, "%s %.*s", dir == 'C' ? ">" : "<", (int)len, line);
}

static void on_session_done(void *data, int err) {
  struct engine *e = data;
  e->session_done = 1;
  if (e->err == 0)
    e->err = err;
  remember_facts(e);
  uv_timer_stop(&e->grace_timer);
  uv_check_stop(&e->drain_check);
  uv_timer_stop(&e->stall_timer);
  if (e->conn_started)
    conn_close(&e->conn);
  else
    e->conn_closed = 1;
}

static void on_connected(void *data) {
  struct engine *e = data;
  if (e->opts.target->spec.mode == P3_TLS_IMPLICIT)
    remember_tls(e);
  trace(e, "connected to %s port %u", e->opts.target->spec.tcp_host, e->opts.target->spec.port);
  /* Resumed: the greeting waits for the client's Finished, which just went
   * out; the one flight follows it at once (issue 11, early-flight). */
  if (e->conn.tls_resumed && e->opts.target->spec.mode == P3_TLS_IMPLICIT && e->mem_loaded &&
      !e->retried && e->mem.early_flight != SRVMEM_NO)
    session_send_early(e->session);
  flush(e);
}

static void on_conn_data(void *data, const char *buf, size_t len) {
  struct engine *e = data;
  if (e->greeting_ms == 0)
    e->greeting_ms = uv_now(e->loop);
  session_feed(e->session, buf, len);
  flush(e);
}

static void on_tls_ready(void *data) {
  struct engine *e = data;
  remember_tls(e);
  session_tls_ready(e->session);
  flush(e);
}

static void on_conn_error(void *data, int err, const char *detail) {
  struct engine *e = data;
  if (e->conn.tls != NULL && (e->conn.handshaking || err == P3_ECERT || err == P3_EPIN))
    forget_tls(e, err);
  if (!session_finished(e->session)) {
    snprintf(e->conn_detail, sizeof e->conn_detail, "%s", detail);
    if (err == P3_ETIMEOUT)
      session_timeout(e->session);
    else
      session_connection_lost(e->session, err);
  }
  conn_close(&e->conn);
}

static void on_conn_note(void *data, const char *line) {
  trace(data, "%s", line);
}

static void on_conn_closed(void *data) {
  struct engine *e = data;
  e->conn_closed = 1;
  finish_if_idle(e);
}

/* ---- finishing */

/* One sentence: what failed, then the server's words or the local detail. */
static void compose_message(struct engine *e) {
  struct engine_result *r = &e->result;
  const char *server = e->session ? session_error_text(e->session) : "";
  size_t n, cap = sizeof r->message;
  r->message[0] = '\0';
  if (e->err == 0)
    return;
  if (e->work_msg[0] && e->session == NULL) {
    snprintf(r->message, cap, "%s", e->work_msg);
    return;
  }
  /* "timed out: no reply to UIDL (the status line was not complete within
   * 2 s)": the session says what was awaited, the transport how long. */
  n = (size_t)snprintf(r->message, cap, "%s",
                       e->err == P3_ETIMEOUT && server[0] ? "timed out" : p3_strerror(e->err));
  if (e->err == P3_ESAVE && e->save_detail[0]) {
    snprintf(r->message + n, cap - n, ": %s", e->save_detail);
    return;
  }
  if (server[0] && n < cap)
    n += (size_t)snprintf(r->message + n, cap - n, ": %s", server);
  if (e->conn_detail[0] && n < cap)
    n += (size_t)snprintf(r->message + n, cap - n, server[0] ? " (%s)" : ": %s", e->conn_detail);
  /* Connected in cleartext and not one line came back: the classic sign of
   * tcp: (or starttls:) to a port that expects TLS first, like 995. */
  const struct p3_spec *spec = &e->opts.target->spec;
  uint64_t lines = 0, body = 0;
  if (e->session)
    session_wire_counts(e->session, &lines, &body);
  if (spec->mode != P3_TLS_IMPLICIT && e->conn.connected && e->session && lines == 0 &&
      (e->err == P3_ETIMEOUT || e->err == P3_EEOF || e->err == -ECONNRESET) && n < cap) {
    if (spec->port == 995)
      snprintf(r->message + n, cap - n,
               "; no POP3 greeting from port 995, which is POP3 over TLS: use ssl: instead of "
               "%s",
               spec->mode == P3_TLS_NONE ? "tcp:" : "starttls:");
    else
      snprintf(r->message + n, cap - n,
               "; no POP3 greeting: if port %u expects TLS first, use ssl: instead of %s",
               (unsigned)spec->port, spec->mode == P3_TLS_NONE ? "tcp:" : "starttls:");
  }
}

/* The round trips of the run: the TCP connect attempts, the TLS flights
 * the client had to wait after, and the POP3 conversation's depth
 * (session_round_trips).  With implicit TLS the greeting comes with the
 * server's last handshake flight after a full handshake (one wait, counted
 * by the transport); after an abbreviated one the client's Finished goes
 * last and the greeting is a wait of its own. */
static unsigned round_trips(const struct engine *e) {
  if (!e->conn_started)
    return e->rt_before;
  unsigned n = e->rt_before + e->conn.waits_connect + e->conn.waits_tls;
  unsigned pop = e->session ? session_round_trips(e->session) : 0;
  if (pop > 0 && e->opts.target->spec.mode == P3_TLS_IMPLICIT && e->conn.waits_tls > 0 &&
      !e->conn.tls_ended_on_send)
    pop--;
  return n + pop;
}

static void report(struct engine *e) {
  e->reported = 1;
  struct engine_result *r = &e->result;
  r->err = e->err;
  if (e->session) {
    const struct session_stats *st = session_stats(e->session);
    r->listed = st->listed;
    r->failed = st->failed;
    r->deleted = st->quit_ok ? st->deleted : 0;
    r->login_delay = session_caps(e->session)->login_delay;
  } else {
    r->login_delay = -1;
  }
  r->lockstep = e->lockstep;
  r->round_trips = round_trips(e);
  r->stuck = e->stuck;
  r->stuck_count = e->stuck_count;
  r->max_size = e->opts.max_size;
  r->over_size = e->over_size;
  r->over_size_n = e->over_size_n;
  r->seconds = (double)(uv_hrtime() / 1000000 - e->started_ms) / 1000.0;
  compose_message(e);
  e->done_cb(e, r, e->data);
}

static void begin_session(struct engine *e);

/* The cold session after a stalled flight listing (on_stall_timeout), from
 * its own loop turn: the first session and its connection are over. */
static void on_retry(uv_timer_t *t) {
  struct engine *e = t->data;
  e->retry_cold = 0;
  if (e->stop_requested) { /* asked to stop while the retry waited */
    finish_if_idle(e);
    return;
  }
  e->retried = 1;
  e->rt_before = round_trips(e);
  session_free(e->session);
  e->session = NULL;
  e->err = 0;
  e->session_done = 0;
  e->conn_closed = 0;
  e->conn_started = 0;
  e->conn_detail[0] = '\0';
  e->greeting_ms = 0;
  trace(e, "%s", "retrying once, cold");
  begin_session(e);
}

static void finish_if_idle(struct engine *e) {
  if (e->reported || e->finishing || !e->session_done || !e->conn_closed)
    return;
  if (e->retry_cold) {
    if (!e->stop_requested && e->plan == NULL && e->record_writes == 0) {
      /* A moment for the server to see the old connection close and give
       * up the mailbox's lock, so that the new login is not -ERR [IN-USE]. */
      uv_timer_start(&e->stall_timer, on_retry, RETRY_DELAY_MS, 0);
      return;
    }
    e->retry_cold = 0;
  }
  if (e->md_ready && e->md.active)
    return; /* deliveries already complete keep going to new/ */
  if (e->record_writes || e->barrier_busy)
    return;
  e->finishing = 1;
  start_finish(e);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Compaction context: the UIDs whose records stay (plan_keep_after_quit),
 * sorted. */
struct keep_ctx {
  const char *server;
  const char **uids;
  size_t count;
};

static int keep_record(void *data, const struct uidstate_rec *r) {
  struct keep_ctx *k = data;
  if (strcmp(r->server, k->server) != 0)
    return 1;
  /* Once QUIT succeeded, UIDs the server no longer lists are gone for good,
   * and retired ones were deleted or are no identity. */
  return bsearch(&r->uid, k->uids, k->count, sizeof *k->uids, cmp_str) != NULL;
}

/* Appends the line a uidstate_append_* call just formatted (thread pool,
 * blocking) and frees it; 1 when written.  Call it after the formatter, not
 * with it as an argument: *line is only set once the formatter has run. */
static int write_line(struct engine *e, int err, char *line, size_t len) {
  int ok = 0;
  if (err == 0) {
    ok = write(uidstate_fd(e->state), line, len) == (ssize_t)len;
    free(line);
  }
  return ok;
}

/* What each message leaves in the journal (plan_after): attempt, forget
 * and retire lines, appended and synced before the compaction. */
static int write_outcomes(struct engine *e, enum plan_after *after, time_t now) {
  struct session *s = e->session;
  int quit_ok = session_stats(s)->quit_ok;
  int desync = e->err == P3_EDESYNC || e->err == P3_EPROTO;
  int wrote = 0, err;
  char *line;
  size_t len;
  for (size_t i = 0; i < e->plan_n; i++) {
    const struct session_msg *m = session_msg(s, i);
    const struct plan_item *it = &e->plan[i];
    struct plan_outcome out = {
        .saved = (m->flags & SESSION_MSG_SAVED) != 0,
        .verified = (m->flags & SESSION_MSG_VERIFIED) != 0,
        .deleted = (m->flags & SESSION_MSG_DELETED) != 0,
        .failed = (m->flags & SESSION_MSG_FAILED) || (e->fail_text && e->fail_text[i]),
    };
    after[i] = plan_after(it, &out, quit_ok, desync);
    switch (after[i]) {
    case PLAN_KEEP_RECORD:
      break;
    case PLAN_ATTEMPT: {
      const char *why = e->fail_text && e->fail_text[i] ? e->fail_text[i] : "failed";
      err = uidstate_append_attempt(e->state, e->server, it->uid, m->size, why, now, &line, &len);
      wrote |= write_line(e, err, line, len);
      const struct uidstate_rec *rec = uidstate_find(e->state, e->server, it->uid);
      if (rec && rec->attempts >= ENGINE_MAX_ATTEMPTS && !(m->flags & SESSION_MSG_SKIP))
        add_stuck(e, i, rec);
      break;
    }
    case PLAN_FORGET:
      err = uidstate_append_forget(e->state, e->server, it->uid, now, &line, &len);
      wrote |= write_line(e, err, line, len);
      break;
    case PLAN_RETIRE:
      /* Once per UID (a duplicated one has several items). */
      if (uidstate_find(e->state, e->server, it->uid) == NULL)
        break;
      err = uidstate_append_retire(e->state, e->server, it->uid, now, &line, &len);
      wrote |= write_line(e, err, line, len);
      break;
    }
  }
  return wrote;
}

/* Thread pool: the journal lines each message calls for, the lock-step
 * flag, compaction, unlock. */
static void finish_work(uv_work_t *w) {
  struct engine *e = w->data;
  struct session *s = e->session;
  if (e->state == NULL || s == NULL)
    return;
  if (e->mem_dirty) {
    char err[300];
    if (srvmem_save(uidstate_dir_fd(e->state), uidstate_base(e->state), &e->mem, err, sizeof err) !=
        0)
      snprintf(e->mem_note, sizeof e->mem_note, "%s", err); /* a note: the next run is cold */
    else
      e->mem_note[0] = '\0';
  }
  time_t now = time(NULL);
  size_t n = e->plan_n; /* 0 when the session ended before its listing */
  int wrote = 0;
  enum plan_after *after = calloc(n ? n : 1, sizeof *after);
  if (after == NULL)
    return; /* the journal stays as it was: when in doubt, deliver */
  if (e->plan)
    wrote = write_outcomes(e, after, now);
  /* A desync on a server that did not promise PIPELINING: go lock-step. */
  if (e->err == P3_EDESYNC && session_pipelined(s) && !session_caps(s)->pipelining) {
    char *line;
    size_t len;
    int err = uidstate_append_lockstep(e->state, e->server, 1, now, &line, &len);
    wrote |= write_line(e, err, line, len);
  }
  if (wrote)
    fsync(uidstate_fd(e->state));
  if (e->plan && session_stats(s)->quit_ok && session_has_uidl(s)) {
    struct keep_ctx k = {.server = e->server, .count = 0};
    k.uids = malloc((n ? n : 1) * sizeof *k.uids);
    if (k.uids == NULL) {
      free(after);
      return;
    }
    for (size_t i = 0; i < n; i++) {
      const struct plan_item *it = &e->plan[i];
      if (it->uid == NULL || !plan_keep_after_quit(it->dup_uid ? 2 : 1, after[i] == PLAN_RETIRE))
        continue;
      k.uids[k.count++] = it->uid;
      /* Keep mode: the same message, grown on the server (plan_probed). */
      if (it->resize)
        uidstate_set_size(e->state, e->server, it->uid, it->size);
    }
    qsort(k.uids, k.count, sizeof *k.uids, cmp_str);
    int err = uidstate_compact(e->state, keep_record, &k);
    free(k.uids);
    if (err)
      snprintf(e->work_msg, sizeof e->work_msg, "compacting %s: %s", uidstate_path(e->state),
               strerror(-err));
  }
  free(after);
}

/* The last step: report once the engine's own handles are closed. */
static void on_final_handle_closed(uv_handle_t *h) {
  struct engine *e = h->data;
  if (--e->handles_open == 0)
    report(e);
}

static void finish_done(uv_work_t *w, int status) {
  struct engine *e = w->data;
  if (e->mem_dirty && e->mem_note[0])
    trace(e, "%s", e->mem_note);
  if (e->state) {
    e->result.corrupt_lines = uidstate_corrupt_lines(e->state);
    uidstate_close(e->state);
    e->state = NULL;
  }
  if (e->handles_open == 3) {
    uv_close((uv_handle_t *)&e->drain_check, on_final_handle_closed);
    uv_close((uv_handle_t *)&e->grace_timer, on_final_handle_closed);
    uv_close((uv_handle_t *)&e->stall_timer, on_final_handle_closed);
    return; /* report() runs once all three are closed */
  }
  if (e->handles_open == 0)
    report(e);
}

static void start_finish(struct engine *e) {
  e->work.data = e;
  if (uv_queue_work(e->loop, &e->work, finish_work, finish_done) != 0)
    finish_done(&e->work, 0);
}

static void on_grace_timeout(uv_timer_t *t) {
  struct engine *e = t->data;
  if (!session_finished(e->session)) {
    snprintf(e->conn_detail, sizeof e->conn_detail, "%s", "stopped before the run finished");
    session_connection_lost(e->session, P3_ECANCELED);
  }
}

/* ---- preparing: Maildir, state, tmp hygiene (thread pool) */

static void on_tmp_removed(void *arg, const char *name) {
  trace(arg, "removed tmp/%s left by an interrupted delivery", name);
}

/* Removes files in tmp/ left by an interrupted delivery of ours (our name
 * scheme, our host name, the pid of a process that no longer exists) and
 * files of ours older than 36 hours; anything else is left alone.  All of
 * it relative to the tmp/ fd (maildir_clean_tmp). */
static void clean_tmp(struct engine *e) {
  maildir_clean_tmp(&e->md, time(NULL), TMP_MAX_AGE_S, on_tmp_removed, e);
}

static void prepare_work(uv_work_t *w) {
  struct engine *e = w->data;
  int err = maildir_init(&e->md, e->loop, e->opts.maildir, e->work_msg, sizeof e->work_msg);
  if (err) {
    e->work_err = err;
    return;
  }
  e->md_ready = 1;
  if (e->opts.state_path) {
    err = uidstate_open(e->opts.state_path, e->opts.who ? e->opts.who : "pop3sync", &e->state,
                        e->work_msg, sizeof e->work_msg);
    if (err) {
      /* A refused (unsafe) file keeps its own code: a configuration
       * problem (78), not a passing one. */
      e->work_err = err == P3_ELOCKED || err == P3_EUNSAFE ? err : P3_ESTATE;
      return;
    }
    uidstate_check_files(e->state, maildir_dirfd(&e->md, MAILDIR_NEW),
                         maildir_dirfd(&e->md, MAILDIR_CUR));
    e->lockstep = uidstate_lockstep(e->state, e->server);
    load_memory(e);
  }
  clean_tmp(e);
  struct statvfs sv;
  if (fstatvfs(maildir_dirfd(&e->md, MAILDIR_NEW), &sv) == 0) {
    e->fs_known = 1;
    e->fs_total = (uint64_t)sv.f_blocks * sv.f_frsize;
    e->fs_avail = (uint64_t)sv.f_bavail * sv.f_frsize;
  }
}

/* The TLS options of this run (pointers into e->opts). */
static void tls_options(const struct engine *e, struct p3_tls_options *o) {
  const struct p3_spec *spec = &e->opts.target->spec;
  memset(o, 0, sizeof *o);
  o->ca_file = e->opts.ca_file;
  o->server_name = spec->tls_name[0] ? spec->tls_name : NULL;
  memcpy(o->pins, e->opts.pins, sizeof o->pins);
  o->pin_count = e->opts.pin_count;
}

/* Thread pool, under the journal's lock: reads STATE.server, and decides
 * whether its TLS session may be offered (same key, not expired). */
static void load_memory(struct engine *e) {
  char err[256] = "";
  int r = srvmem_load(uidstate_dir_fd(e->state), uidstate_base(e->state), &e->mem, err, sizeof err);
  if (r < 0) {
    /* Refused or unreadable: cold, and never overwritten (an unsafe file is
     * the user's to look at). */
    snprintf(e->mem_note, sizeof e->mem_note, "server memory not used: %.250s", err);
    srvmem_init(&e->mem);
    return;
  }
  e->mem_loaded = 1;
  if (e->mem.server[0] && strcmp(e->mem.server, e->server) != 0)
    srvmem_wipe(&e->mem); /* another server's facts */
  if (e->opts.target->spec.mode == P3_TLS_NONE)
    return;
  struct p3_tls_options o;
  tls_options(e, &o);
  int64_t mtime_ns = 0;
  const char *ca = tls_ca_path(&o);
  struct stat sb;
  if (ca != NULL && stat(ca, &sb) == 0)
    mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
  tls_session_key(&o, e->opts.target->spec.tcp_host, e->opts.target->spec.port, mtime_ns,
                  e->tls_key);
  if (!e->mem.has_tls)
    return;
  time_t now = time(NULL);
  if (memcmp(e->mem.tls_key, e->tls_key, sizeof e->tls_key) != 0) {
    snprintf(e->mem_note, sizeof e->mem_note,
             "remembered TLS session not offered: it was made under other TLS settings");
  } else if (e->mem.tls_expires <= now) {
    snprintf(e->mem_note, sizeof e->mem_note, "remembered TLS session has expired");
    srvmem_drop_tls(&e->mem);
    e->mem_dirty = 1;
  } else {
    e->tls_offer = 1;
  }
}

/* Longest a remembered TLS session is offered when the server gave no
 * lifetime hint, and at most in any case. */
#define TLS_MEMORY_DEFAULT_S 7200
#define TLS_MEMORY_MAX_S 86400

/* A verified handshake just completed: remember its session (the ticket
 * or session ID) under this run's key. */
static void remember_tls(struct engine *e) {
  if (!e->mem_loaded)
    return;
  e->result.resumed_tls = e->conn.tls_resumed;
  unsigned char *buf = malloc(SRVMEM_TLS_MAX);
  size_t len = 0;
  uint32_t life = 0;
  int err = buf ? conn_save_tls_session(&e->conn, buf, SRVMEM_TLS_MAX, &len, &life) : -ENOMEM;
  if (err == 0 && len > 0) {
    time_t now = time(NULL);
    time_t expires = now + (life > 0 ? (life < TLS_MEMORY_MAX_S ? (time_t)life : TLS_MEMORY_MAX_S)
                                     : TLS_MEMORY_DEFAULT_S);
    /* A resumed session may carry its first ticket still: never extend. */
    if (e->conn.tls_resumed && e->mem.has_tls && e->mem.tls_expires < expires)
      expires = e->mem.tls_expires;
    memcpy(e->mem.tls_session, buf, len);
    e->mem.tls_len = len;
    memcpy(e->mem.tls_key, e->tls_key, sizeof e->tls_key);
    e->mem.tls_expires = expires;
    e->mem.has_tls = 1;
    e->mem_dirty = 1;
  } else if (e->mem.has_tls && e->tls_offer) {
    srvmem_drop_tls(&e->mem);
    e->mem_dirty = 1;
  }
  if (buf != NULL) {
    explicit_bzero(buf, len);
    free(buf);
  }
}

/* The TLS handshake failed: a session made under these settings is not to
 * be offered again (the certificate may have changed under it). */
static void forget_tls(struct engine *e, int err) {
  if (!e->mem_loaded || !e->mem.has_tls)
    return;
  /* A session made under other settings is not this handshake's to judge. */
  if (memcmp(e->mem.tls_key, e->tls_key, sizeof e->tls_key) != 0)
    return;
  if (err != P3_ECERT && err != P3_EPIN && !(err == P3_ETLS && e->tls_offer))
    return;
  srvmem_drop_tls(&e->mem);
  e->tls_offer = 0;
  e->mem_dirty = 1;
}

/* The capabilities as tokens for the memory (IMPLEMENTATION's first word,
 * then SASL last: srvmem.h). */
static void caps_tokens(const struct p3_caps *c, const char *impl, char *buf, size_t len) {
  snprintf(buf, len, "%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s", c->user ? "USER " : "", c->top ? "TOP " : "",
           c->uidl ? "UIDL " : "", c->pipelining ? "PIPELINING " : "", c->stls ? "STLS " : "",
           c->resp_codes ? "RESP-CODES " : "", c->auth_resp_code ? "AUTH-RESP-CODE " : "",
           c->utf8 ? "UTF8 " : "", c->has_expire ? "EXPIRE " : "",
           c->login_delay >= 0 ? "LOGIN-DELAY " : "", impl[0] ? "IMPLEMENTATION " : "", impl,
           impl[0] ? " " : "", c->sasl_list[0] ? "SASL " : "", c->sasl_list);
}

/* The session is over: what it showed of the server goes into the memory
 * (the TLS session was taken when the handshake completed). */
static void remember_facts(struct engine *e) {
  struct session *s = e->session;
  if (!e->mem_loaded || s == NULL)
    return;
  snprintf(e->mem.server, sizeof e->mem.server, "%s", e->server);
  e->mem.saved = time(NULL);
  e->mem_dirty = 1;
  enum session_flight flight = session_flight(s);
  if (session_msg_count(s) > 0 || session_stats(s)->quit_ok || e->plan != NULL ||
      flight == SESSION_FLIGHT_STALE) {
    /* Got past the login, or the one flight's fresh CAPA (inside TLS when
     * there is TLS) contradicted the memory: the CAPA and the greeting are
     * known. */
    char caps[SRVMEM_CAPA_MAX];
    if (session_has_capa(s)) {
      caps_tokens(session_caps(s), session_implementation(s), caps, sizeof caps);
      srvmem_set_capa(&e->mem, 0, caps);
    } else {
      e->mem.capa_pre[0] = '\0';
    }
    e->mem.greeting_apop = session_greeting_apop(s) ? SRVMEM_YES : SRVMEM_NO;
  }
  if (session_pipelined(s)) {
    if (e->err == P3_EDESYNC)
      e->mem.pipelining = SRVMEM_NO;
    else if (e->plan != NULL && e->err == 0 && flight != SESSION_FLIGHT_STALE)
      e->mem.pipelining = SRVMEM_YES;
  }
  /* The memory was wrong: the next session is cold (and relearns). */
  if (flight == SESSION_FLIGHT_STALE && e->mem.pipelining == SRVMEM_YES)
    e->mem.pipelining = SRVMEM_UNKNOWN;
  /* The early flight and the flight's listing: yes once they went through
   * cleanly; no once the server broke them (on_stall_timeout for the
   * listing), never tried again. */
  int clean = e->plan != NULL && e->err == 0 && flight != SESSION_FLIGHT_STALE;
  enum session_early early = session_early(s);
  if (early == SESSION_EARLY_BROKEN)
    e->mem.early_flight = SRVMEM_NO;
  else if (early == SESSION_EARLY_HELD && clean)
    e->mem.early_flight = SRVMEM_YES;
  if (session_flight_listing(s) && clean && e->mem.flight_listing != SRVMEM_NO)
    e->mem.flight_listing = SRVMEM_YES;
  /* Logged in, but the listing sent behind the login never came out whole
   * (part of it dropped, so its replies no longer matched, or the server
   * hung up or went quiet):
   * as after a stall, never again, and one cold session now (nothing was
   * retrieved or deleted without a plan). */
  if (session_flight_listing(s) && session_flight_listing_logged_in(s) && e->plan == NULL &&
      (e->err == P3_ETIMEOUT || e->err == P3_EDESYNC || e->err == P3_EPROTO || e->err == P3_EEOF) &&
      !e->retry_cold) {
    e->mem.flight_listing = SRVMEM_NO;
    e->retry_cold = !e->retried && !e->stop_requested;
  }
}

static void begin_session(struct engine *e);

static void prepare_done(uv_work_t *w, int status) {
  struct engine *e = w->data;
  if (e->stop_requested && e->work_err == 0) {
    e->work_err = P3_ECANCELED;
    snprintf(e->work_msg, sizeof e->work_msg, "stopped before connecting");
  }
  if (e->work_err) {
    e->err = e->work_err;
    e->session_done = 1;
    e->conn_closed = 1;
    finish_if_idle(e);
    return;
  }
  begin_session(e);
}

static void begin_session(struct engine *e) {
  const struct p3_spec *spec = &e->opts.target->spec;
  struct session_options so = {
      .user = spec->user,
      .password = e->opts.target->password,
      .starttls = spec->mode == P3_TLS_STARTTLS,
      .tls_active = spec->mode == P3_TLS_IMPLICIT,
      .pipelining = e->lockstep ? SESSION_PIPELINING_OFF : e->opts.pipelining,
      .window = e->opts.window,
      .keep = e->opts.keep,
      .no_utf8 = e->opts.no_utf8,
      .auth = e->opts.auth,
      /* OAUTHBEARER's host= and port=: what the user connects to. */
      .host = spec->tls_name[0] ? spec->tls_name : spec->tcp_host,
      .port = spec->port,
      /* The one flight after the greeting (issue 11). */
      .mem_capa = e->mem_loaded ? e->mem.capa_pre : NULL,
      .mem_pipelining = e->mem_loaded && e->mem.pipelining == SRVMEM_YES,
      .mem_flight_listing = e->mem_loaded && e->mem.flight_listing != SRVMEM_NO,
  };
  if (e->mem_loaded && e->mem.greeting_apop != SRVMEM_UNKNOWN)
    so.mem_greeting = e->mem.greeting_apop == SRVMEM_YES ? 2 : 1;
  if (e->retried) {
    /* After a stalled flight listing: cold, as without a memory. */
    so.mem_capa = NULL;
    so.mem_pipelining = 0;
    so.mem_flight_listing = 0;
  }
  if (e->lockstep)
    trace(e, "lock-step: an earlier session with this server desynchronised");
  struct session_ops ops = {
      .msg_begin = on_msg_begin,
      .msg_data = on_msg_data,
      .msg_end = on_msg_end,
      .msg_abort = on_msg_abort,
      .msg_failed = on_msg_failed,
      .start_tls = on_start_tls,
      .barrier = on_session_barrier,
      .listed = on_listed,
      .probe_data = on_probe_data,
      .probe_end = on_probe_end,
      .probed = on_probed,
      .trace = e->opts.trace ? on_session_trace : NULL,
      .done = on_session_done,
  };
  e->session = session_new(&so, &ops, e);
  if (e->session == NULL) {
    e->err = -ENOMEM;
    snprintf(e->work_msg, sizeof e->work_msg, "out of memory");
    e->session_done = 1;
    e->conn_closed = 1;
    finish_if_idle(e);
    return;
  }
  struct conn_options co = {
      .host = spec->tcp_host,
      .port = spec->port,
      .implicit_tls = spec->mode == P3_TLS_IMPLICIT,
      .starttls = spec->mode == P3_TLS_STARTTLS,
      .timeout_ms = (e->opts.timeout_s ? e->opts.timeout_s : 120) * 1000u,
  };
  tls_options(e, &co.tls);
  if (e->mem_note[0])
    trace(e, "%s", e->mem_note);
  if (e->tls_offer) {
    co.tls.resume = e->mem.tls_session;
    co.tls.resume_len = e->mem.tls_len;
    trace(e, "offering the remembered TLS session");
  }
  struct conn_ops cops = {
      .connected = on_connected,
      .data = on_conn_data,
      .tls_ready = on_tls_ready,
      .error = on_conn_error,
      .closed = on_conn_closed,
      .note = e->opts.trace ? on_conn_note : NULL,
  };
  e->conn_started = 1;
  e->connect_ms = uv_now(e->loop);
  int err = conn_start(&e->conn, e->loop, &co, &cops, e);
  if (err) {
    snprintf(e->conn_detail, sizeof e->conn_detail, "%.200s: %s", spec->tcp_host, uv_strerror(err));
    session_connection_lost(e->session, P3_EDNS);
  }
}

int engine_start(uv_loop_t *loop, const struct engine_options *opts, engine_done_cb done_cb,
                 void *data, struct engine **e_r, char *errbuf, size_t errlen) {
  *e_r = NULL;
  const struct p3_spec *spec = &opts->target->spec;
  if (spec->mode != P3_TLS_NONE && spec->tls_name[0] == '\0' && opts->pin_count == 0) {
    return p3_error(errbuf, errlen, P3_ETLSIP,
                    "%s: mbedTLS cannot verify a certificate for an IP address; "
                    "write tcp_host!name or pin the certificate with --tls-fingerprint",
                    spec->tcp_host);
  }
  struct engine *e = calloc(1, sizeof *e);
  if (e == NULL)
    return p3_error(errbuf, errlen, -ENOMEM, "out of memory");
  e->loop = loop;
  e->opts = *opts;
  e->done_cb = done_cb;
  e->data = data;
  e->started_ms = uv_hrtime() / 1000000;
  e->result.login_delay = -1;
  e->result.uids_unique = 1;
  srvmem_init(&e->mem);
  spec_identity(spec, e->server, sizeof e->server);

  uv_check_init(loop, &e->drain_check);
  e->drain_check.data = e;
  uv_timer_init(loop, &e->grace_timer);
  e->grace_timer.data = e;
  uv_timer_init(loop, &e->stall_timer);
  e->stall_timer.data = e;
  e->handles_open = 3;

  e->work.data = e;
  int err = uv_queue_work(loop, &e->work, prepare_work, prepare_done);
  if (err) {
    p3_set_error(errbuf, errlen, "cannot queue work: %s", uv_strerror(err));
    uv_close((uv_handle_t *)&e->drain_check, NULL);
    uv_close((uv_handle_t *)&e->grace_timer, NULL);
    uv_close((uv_handle_t *)&e->stall_timer, NULL);
    /* The handles close on the next loop turn; the memory must outlive them. */
    return err;
  }
  *e_r = e;
  return 0;
}

void engine_stop(struct engine *e, unsigned grace_ms) {
  if (e->session == NULL) {
    e->stop_requested = 1; /* still preparing: the session will not start */
    return;
  }
  e->stop_requested = 1; /* and no cold retry (on_stall_timeout) */
  if (e->session_done)
    return;
  session_stop(e->session);
  flush(e);
  if (!e->session_done)
    uv_timer_start(&e->grace_timer, on_grace_timeout, grace_ms, 0);
}

int engine_result_error(const struct engine_result *r) {
  if (r->err)
    return r->err;
  /* Messages left behind make a run partial even when the session was
   * fine: for lack of space that is a Maildir problem, for stuck messages a
   * temporary failure. */
  if (r->left_for_space)
    return P3_ESAVE;
  if (r->stuck_count)
    return P3_EPARTIAL;
  return 0;
}

int engine_result_exit_code(const struct engine_result *r) {
  return p3_exit_status(engine_result_error(r));
}

const char *engine_result_message(const struct engine_result *r, char *buf, size_t len) {
  int err = engine_result_error(r);
  if (err == 0) {
    if (len > 0)
      buf[0] = '\0';
  } else if (r->err)
    p3_set_error(buf, len, "%s", r->message[0] ? r->message : p3_strerror(err));
  else if (r->left_for_space)
    p3_set_error(buf, len, "%zu messages (%llu bytes) left on the server: not enough disk space",
                 r->left_for_space, (unsigned long long)r->left_for_space_bytes);
  else
    p3_set_error(buf, len, "%zu messages stuck after repeated failures, left on the server",
                 r->stuck_count);
  return buf;
}

const char *engine_result_over_size_text(const struct engine_result *r, char *buf, size_t len) {
  char limit[32];
  if (len == 0)
    return buf;
  buf[0] = '\0';
  if (r->over_size_count)
    snprintf(buf, len, "%zu message%s over %s left on the server", r->over_size_count,
             r->over_size_count == 1 ? "" : "s",
             human_size_limit(r->max_size, limit, sizeof limit));
  return buf;
}

void engine_progress(const struct engine *e, size_t *done_r, size_t *total_r, uint64_t *bytes_r) {
  *done_r = e->result.delivered;
  *total_r = e->session ? session_stats(e->session)->listed : 0;
  *bytes_r = e->session ? session_stats(e->session)->bytes : 0;
}

uint64_t engine_progress_bytes_total(const struct engine *e) {
  uint64_t sum = 0;
  size_t n = e->session ? session_msg_count(e->session) : 0;
  for (size_t i = 0; i < n; i++)
    sum += session_msg(e->session, i)->size;
  return sum;
}

void engine_free(struct engine *e) {
  if (e == NULL)
    return;
  if (e->fail_text) {
    size_t n = e->session ? session_msg_count(e->session) : 0;
    for (size_t i = 0; i < n; i++)
      free(e->fail_text[i]);
    free(e->fail_text);
  }
  session_free(e->session);
  free(e->plan);
  free(e->plan_recs);
  hdrdigest_free(e->probe_hd);
  srvmem_wipe(&e->mem);
  if (e->md_ready)
    maildir_deinit(&e->md);
  free(e->stuck);
  free(e->over_size);
  free(e);
}

void engine_result_token_refreshed(struct engine_result *r) {
  char said[sizeof r->message];
  const char *lead = p3_strerror(P3_EOAUTH);
  size_t n = strlen(lead);
  const char *m = r->message;
  if (strncmp(m, lead, n) == 0 && m[n] == ':' && m[n + 1] == ' ')
    m += n + 2;
  snprintf(said, sizeof said, "%s", m[0] ? m : lead);
  snprintf(r->message, sizeof r->message, "login refused: %.700s (token refreshed once)", said);
}

#include "config.h"

#include "scheduler.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "engine.h"
#include "errors.h"
#include "hook.h"
#include "human.h"
#include "log.h"
#include "worker_run.h"

#define BACKOFF_CAP_S 3600
#define AUTH_BACKOFF_MIN_S 900
#define AUTH_BACKOFF_CAP_S (6 * 3600)
#define FIRST_DELAY_CAP_S 30

struct waiter {
  sched_fetch_cb cb;
  void *data;
  struct waiter *next;
};

struct acct;

/* One run in progress: a worker process (worker_run.h) with its own copy of
 * the settings, so a reload can free the old config while the run goes on. */
struct run {
  struct acct *a;
  struct worker_run *worker;
  time_t started;
  uint64_t started_ms; /* loop time */
  int listed_sent;     /* the `listed' event went out */
};

struct acct {
  struct sched *s;
  char *name;
  const struct cfg_account *cfg; /* NULL once removed by a reload */
  uv_timer_t timer;
  int queued;
  struct acct *queue_next;
  struct run *run;
  int rerun;
  struct waiter *wait_cur;  /* get the result of the next run to finish */
  struct waiter *wait_next; /* get the result of the run after that */
  time_t next_run;          /* wall clock, 0 when none is scheduled */

  int has_last;
  time_t last_started, last_finished;
  int last_ok, last_exit;
  char last_error[768];
  char last_signal[32]; /* "SIGSEGV" when the worker died of a signal */
  size_t last_messages;
  uint64_t last_bytes;
  unsigned last_round_trips; /* counted waits for the server (engine.h) */
  int last_resumed_tls;

  uint64_t total_messages, total_bytes;
  int uidl; /* -1 before the first session that listed */
  int lockstep;
  int uids_unique; /* 0: the last listing showed some UID more than once */
  struct engine_stuck *stuck;
  size_t stuck_count;
  /* The last run's messages left on the server for max_size: the first
   * ENGINE_OVER_SIZE_MAX, and all of them counted. */
  struct engine_over_size *over_size;
  size_t over_size_n, over_size_count;
  uint64_t over_size_bytes;
  unsigned failures;
  unsigned backoff_skip; /* failures that a fetch forgave: the backoff starts over */
  int hook_failing;      /* on_failure ran for a failure, not yet for the recovery */
  int auth_failed;
  int waits_for_fetch; /* an OAuth token refused even after a refresh: no timer until
                          a reload or a fetch (the provider must not be hammered) */
  time_t backoff_until;
};

struct sched {
  uv_loop_t *loop;
  struct cfg *cfg;
  struct acct **accts; /* in config order */
  size_t count;
  struct acct **retired; /* removed by a reload while running */
  size_t retired_count, retired_cap;
  size_t running;
  struct acct *queue_head, *queue_tail;
  int shutting_down;
  unsigned grace_ms;
  void (*shutdown_cb)(void *data);
  void *shutdown_data;
  int closing_handles;
  const char *worker_exe; /* NULL: /proc/self/exe */
  sched_event_cb event_cb;
  void *event_data;
  struct hooks *hooks; /* on_new_mail, on_failure (hook.h) */
};

static void start_run(struct acct *a);
static void maybe_shutdown_done(struct sched *s);

/* ---- helpers */

/* Starts an event object: {"event":TYPE,"time":NOW[,"account":NAME]... */
static void event_begin(struct jbuf *b, const char *type, const char *account) {
  jbuf_init(b);
  jbuf_obj_begin(b);
  jbuf_key(b, "event");
  jbuf_str(b, type);
  jbuf_key(b, "time");
  jbuf_time(b, time(NULL));
  if (account) {
    jbuf_key(b, "account");
    jbuf_str(b, account);
  }
}

/* Ends the object, hands it to the event callback, frees it. */
static void event_send(struct sched *s, struct jbuf *b, const char *account, int droppable) {
  jbuf_obj_end(b);
  if (s->event_cb && !b->err)
    s->event_cb(s->event_data, account, b->data, droppable);
  jbuf_free(b);
}

static uint64_t random_below(uint64_t n) {
  uint64_t r = 0;
  if (n == 0)
    return 0;
  if (uv_random(NULL, NULL, &r, sizeof r, 0, NULL) != 0)
    r = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16) ^ uv_hrtime();
  return r % n;
}

static struct acct *find_acct(const struct sched *s, const char *name) {
  for (size_t i = 0; i < s->count; i++)
    if (strcmp(s->accts[i]->name, name) == 0)
      return s->accts[i];
  return NULL;
}

static void unretire(struct sched *s, struct acct *a) {
  for (size_t i = 0; i < s->retired_count; i++)
    if (s->retired[i] == a) {
      s->retired[i] = s->retired[--s->retired_count];
      return;
    }
}

/* An account removed while it ran and then added back must find its run
 * (and its lock on the state) again rather than start a second one. */
static struct acct *find_retired(const struct sched *s, const char *name) {
  for (size_t i = 0; i < s->retired_count; i++)
    if (strcmp(s->retired[i]->name, name) == 0)
      return s->retired[i];
  return NULL;
}

static void arm(struct acct *a, uint64_t delay_ms);
static void pump_queue(struct sched *s);

static void on_timer(uv_timer_t *t) {
  struct acct *a = t->data;
  a->next_run = 0;
  struct sched *s = a->s;
  if (s->shutting_down || a->cfg == NULL || !a->cfg->enabled)
    return;
  if (a->run) {
    a->rerun = 1;
    return;
  }
  if (a->queued)
    return;
  a->queued = 1;
  a->queue_next = NULL;
  if (s->queue_tail)
    s->queue_tail->queue_next = a;
  else
    s->queue_head = a;
  s->queue_tail = a;
  pump_queue(s);
}

/* Starts what fits under max_parallel, in queue order. */
static void pump_queue(struct sched *s) {
  while (!s->shutting_down && s->queue_head && s->running < s->cfg->max_parallel) {
    struct acct *q = s->queue_head;
    s->queue_head = q->queue_next;
    if (s->queue_head == NULL)
      s->queue_tail = NULL;
    q->queued = 0;
    start_run(q);
  }
}

static void enqueue_now(struct acct *a) {
  uv_timer_stop(&a->timer);
  a->next_run = time(NULL);
  on_timer(&a->timer);
}

static void arm(struct acct *a, uint64_t delay_ms) {
  a->next_run = time(NULL) + (time_t)((delay_ms + 999) / 1000);
  uv_timer_start(&a->timer, on_timer, delay_ms, 0);
}

static void unqueue(struct sched *s, struct acct *a) {
  struct acct **pp = &s->queue_head, *prev = NULL;
  while (*pp) {
    if (*pp == a) {
      *pp = a->queue_next;
      if (s->queue_tail == a)
        s->queue_tail = prev;
      a->queued = 0;
      return;
    }
    prev = *pp;
    pp = &(*pp)->queue_next;
  }
}

static void notify_waiters(struct waiter **list, const struct sched_result *r) {
  struct waiter *w = *list;
  *list = NULL;
  while (w) {
    struct waiter *next = w->next;
    if (w->cb)
      w->cb(w->data, r);
    free(w);
    w = next;
  }
}

static void on_acct_closed(uv_handle_t *h) {
  struct acct *a = h->data;
  struct sched *s = a->s;
  free(a->name);
  free(a->stuck);
  free(a->over_size);
  free(a);
  s->closing_handles--;
  maybe_shutdown_done(s);
}

static void free_acct_later(struct acct *a) {
  a->s->closing_handles++;
  uv_close((uv_handle_t *)&a->timer, on_acct_closed);
}

/* ---- runs */

static void free_run(struct run *r) {
  worker_run_free(r->worker);
  free(r);
}

/* Seconds until the next poll after a run ended with err. */
static uint64_t next_delay_s(struct acct *a, int err, long login_delay, unsigned interval) {
  uint64_t delay = interval;
  if (err == 0) {
    if (login_delay > 0 && (uint64_t)login_delay > delay)
      delay = (uint64_t)login_delay;
    return delay;
  }
  unsigned failures = a->failures > a->backoff_skip ? a->failures - a->backoff_skip : 1;
  unsigned shift = failures > 10 ? 10 : failures;
  if (err == P3_EAUTH) {
    /* A wrong password does not fix itself: do not hammer the server. */
    uint64_t base = interval > AUTH_BACKOFF_MIN_S ? interval : AUTH_BACKOFF_MIN_S;
    delay = base << (shift - 1);
    if (delay > AUTH_BACKOFF_CAP_S)
      delay = interval > AUTH_BACKOFF_CAP_S ? interval : AUTH_BACKOFF_CAP_S;
  } else {
    delay = (uint64_t)interval << shift;
    uint64_t cap = interval > BACKOFF_CAP_S ? interval : BACKOFF_CAP_S;
    if (delay > cap)
      delay = cap;
  }
  if (err == P3_ELOGINDELAY) {
    uint64_t ld = login_delay > 0 ? (uint64_t)login_delay : 300;
    if (ld > delay)
      delay = ld;
  }
  return delay;
}

static void event_finished(struct acct *a, int err, size_t messages, uint64_t bytes, uint64_t ms) {
  struct jbuf b;
  event_begin(&b, "finished", a->name);
  jbuf_key(&b, "result");
  jbuf_str(&b, err ? "error" : "ok");
  jbuf_key(&b, "error");
  jbuf_str(&b, err ? a->last_error : NULL);
  jbuf_key(&b, "messages");
  jbuf_uint(&b, messages);
  jbuf_key(&b, "bytes");
  jbuf_uint(&b, bytes);
  jbuf_key(&b, "exit");
  jbuf_int(&b, a->last_exit);
  jbuf_key(&b, "milliseconds");
  jbuf_uint(&b, ms);
  event_send(a->s, &b, a->name, 0);
}

/* until: 0 when the account waits for a fetch or a reload. */
static void event_backoff(struct acct *a, time_t until) {
  struct jbuf b;
  event_begin(&b, "backoff", a->name);
  jbuf_key(&b, "until");
  if (until)
    jbuf_time(&b, until);
  else
    jbuf_null(&b);
  jbuf_key(&b, "consecutive_failures");
  jbuf_uint(&b, a->failures);
  jbuf_key(&b, "auth_failed");
  jbuf_bool(&b, a->auth_failed);
  event_send(a->s, &b, a->name, 0);
}

/* Runs the account's hook command for event, if it has one, without
 * waiting for it. */
static void fire_hook(struct acct *a, const char *command, const char *event, size_t messages,
                      uint64_t bytes, int exit, const char *error) {
  const struct cfg_account *c = a->cfg;
  if (command == NULL || command[0] == '\0')
    return;
  struct hook_job j = {
      .account = a->name,
      .user = c->user,
      .uid = c->uid,
      .gid = c->gid,
      .command = command,
      .event = event,
      .error = error,
      .messages = messages,
      .bytes = bytes,
      .exit = exit,
      .timeout_s = c->hook_timeout,
  };
  int err = hooks_fire(a->s->hooks, &j);
  if (err && err != P3_ECANCELED)
    log_warning("%s: cannot run %s: %s", a->name, hook_key(event), p3_strerror(err));
}

/* After a run: on_new_mail when it delivered something; on_failure when
 * the account starts failing and when it recovers, not on every retry. */
static void run_hooks(struct acct *a, int err, size_t messages, uint64_t bytes) {
  if (a->cfg == NULL || a->s->shutting_down)
    return;
  if (err && !a->hook_failing) {
    a->hook_failing = 1;
    fire_hook(a, a->cfg->on_failure, "failure", messages, bytes, a->last_exit, a->last_error);
  } else if (!err && a->hook_failing) {
    a->hook_failing = 0;
    fire_hook(a, a->cfg->on_failure, "recovered", messages, bytes, 0, NULL);
  }
  if (messages > 0)
    fire_hook(a, a->cfg->on_new_mail, "new_mail", messages, bytes, a->last_exit, NULL);
}

static void finish_run(struct acct *a, int err, const char *message, size_t messages,
                       uint64_t bytes, long login_delay, const struct engine_result *res,
                       const char *signal_name) {
  struct sched *s = a->s;
  struct run *r = a->run;
  time_t now = time(NULL);
  uint64_t ms = uv_now(s->loop) - r->started_ms;
  char took[32], size[32];
  human_duration(ms, took, sizeof took);
  human_bytes(bytes, size, sizeof size);
  if (res && (res->err == 0 || res->listed > 0)) {
    a->uidl = res->uidl;
    a->lockstep = res->lockstep;
    a->uids_unique = res->uids_unique;
  }
  if (res) {
    /* Copy: the engine's array goes with the engine. */
    free(a->stuck);
    a->stuck = NULL;
    a->stuck_count = 0;
    if (res->stuck_count && (a->stuck = malloc(res->stuck_count * sizeof *a->stuck)) != NULL) {
      memcpy(a->stuck, res->stuck, res->stuck_count * sizeof *a->stuck);
      a->stuck_count = res->stuck_count;
    }
  }
  /* Left for max_size: said once when it changes (every poll finds them). */
  if (res && res->over_size_count) {
    char text[128];
    engine_result_over_size_text(res, text, sizeof text);
    if (res->over_size_count != a->over_size_count)
      log_info("%s: %s", a->name, text);
    else
      log_debug("%s: %s", a->name, text);
  }
  free(a->over_size);
  a->over_size = NULL;
  a->over_size_n = 0;
  a->over_size_count = res ? res->over_size_count : 0;
  a->over_size_bytes = res ? res->over_size_bytes : 0;
  if (res && res->over_size_n &&
      (a->over_size = malloc(res->over_size_n * sizeof *a->over_size)) != NULL) {
    memcpy(a->over_size, res->over_size, res->over_size_n * sizeof *a->over_size);
    a->over_size_n = res->over_size_n;
  }
  a->has_last = 1;
  a->last_started = r->started;
  a->last_finished = now;
  a->last_ok = err == 0;
  a->last_exit = p3_exit_status(err);
  snprintf(a->last_error, sizeof a->last_error, "%s", err ? message : "");
  snprintf(a->last_signal, sizeof a->last_signal, "%s", signal_name ? signal_name : "");
  a->last_messages = messages;
  a->last_bytes = bytes;
  a->last_round_trips = res ? res->round_trips : 0;
  a->last_resumed_tls = res ? res->resumed_tls : 0;
  a->total_messages += messages;
  a->total_bytes += bytes;
  if (err == 0) {
    a->failures = 0;
    a->backoff_skip = 0;
    a->auth_failed = 0;
    a->waits_for_fetch = 0;
    a->backoff_until = 0;
    /* An empty poll is routine: every few minutes for every account. */
    if (messages == 0)
      log_debug("%s: no new mail (%s)", a->name, took);
    else
      log_info("%s: %zu message%s (%s) in %s", a->name, messages, messages == 1 ? "" : "s", size,
               took);
  } else {
    a->failures++;
    a->auth_failed = err == P3_EAUTH || err == P3_EOAUTH;
    a->waits_for_fetch = err == P3_EOAUTH && a->cfg && session_auth_is_oauth(a->cfg->auth);
  }
  event_finished(a, err, messages, bytes, ms);
  run_hooks(a, err, messages, bytes);
  a->run = NULL;
  s->running--;
  free_run(r);

  struct sched_result sr = {
      .name = a->name,
      .ok = err == 0,
      .exit = a->last_exit,
      .error = err ? a->last_error : NULL,
      .messages = messages,
      .bytes = bytes,
  };
  notify_waiters(&a->wait_cur, &sr);

  if (a->cfg == NULL) {
    /* Removed by a reload while it ran. */
    if (err)
      log_warning("%s: %s (after %s)", a->name, message, took);
    notify_waiters(&a->wait_next, &sr);
    unretire(s, a);
    free_acct_later(a);
  } else if (s->shutting_down) {
    if (err)
      log_warning("%s: %s (after %s)", a->name, message, took);
  } else {
    unsigned interval = a->cfg->interval ? a->cfg->interval : 300;
    uint64_t delay = next_delay_s(a, err, login_delay, interval);
    char next[48];
    int again = 0;
    if (err)
      a->backoff_until = a->waits_for_fetch ? 0 : now + (time_t)delay;
    if (a->rerun && a->cfg->enabled) {
      a->rerun = 0;
      a->wait_cur = a->wait_next;
      a->wait_next = NULL;
      snprintf(next, sizeof next, "next try now");
      again = 1;
      enqueue_now(a);
    } else if (a->waits_for_fetch) {
      snprintf(next, sizeof next, "waiting for fetch/reload");
    } else if (a->cfg->enabled) {
      char in[32];
      snprintf(next, sizeof next, "next try in %s", human_duration(delay * 1000, in, sizeof in));
      arm(a, delay * 1000);
    } else {
      snprintf(next, sizeof next, "disabled");
    }
    /* One line says what failed and when the account tries again. */
    if (err && a->waits_for_fetch)
      log_warning("%s: %s (after %s); waiting for `pop3ctl fetch %s' or a reload: the token was "
                  "refused",
                  a->name, message, took, a->name);
    else if (err)
      log_warning("%s: %s (after %s); %s", a->name, message, took, next);
    if (err && !again && a->cfg->enabled)
      event_backoff(a, a->backoff_until);
  }
  pump_queue(s);
  maybe_shutdown_done(s);
}

static void on_worker_done(void *data, const struct worker_outcome *o) {
  struct run *r = data;
  const struct engine_result *res = &o->report->r;
  char buf[1024];
  if (!o->report->done) {
    /* No report: the worker crashed or was killed.  Whatever it saved is in
     * the Maildir with its record; the next run goes on from there. */
    if (o->silenced)
      snprintf(buf, sizeof buf, "worker killed: not a word from it for 60 s (stopped?)");
    else if (o->signal_name)
      snprintf(buf, sizeof buf, "worker killed by signal %d (%s)", o->term_signal, o->signal_name);
    else
      snprintf(buf, sizeof buf, "worker exited with status %d without a result", o->exit_status);
    finish_run(r->a, P3_EWORKER, buf, 0, 0, -1, NULL, o->signal_name);
    return;
  }
  /* The engine decides what the run amounts to (partial, stuck, no space). */
  int err = engine_result_error(res);
  const char *message = engine_result_message(res, buf, sizeof buf);
  finish_run(r->a, err, message, res->delivered, res->bytes, res->login_delay, res, NULL);
}

static void on_worker_trace(void *data, const char *line) {
  struct run *r = data;
  log_debug("%s: %s", r->a->name, line);
}

/* About once a second while the engine runs: `listed' once the listing is
 * known, then `progress' (dropped for a watcher that reads slowly). */
static void on_worker_progress(void *data) {
  struct run *r = data;
  struct acct *a = r->a;
  const struct worker_report *rep = worker_run_report(r->worker);
  struct jbuf b;
  if (!r->listed_sent && rep->progress_total > 0) {
    r->listed_sent = 1;
    event_begin(&b, "listed", a->name);
    jbuf_key(&b, "messages");
    jbuf_uint(&b, rep->progress_total);
    jbuf_key(&b, "bytes");
    jbuf_uint(&b, rep->progress_bytes_total);
    event_send(a->s, &b, a->name, 0);
  }
  event_begin(&b, "progress", a->name);
  jbuf_key(&b, "messages_done");
  jbuf_uint(&b, rep->progress_done);
  jbuf_key(&b, "messages_total");
  jbuf_uint(&b, rep->progress_total);
  jbuf_key(&b, "bytes_done");
  jbuf_uint(&b, rep->progress_bytes);
  jbuf_key(&b, "bytes_total");
  jbuf_uint(&b, rep->progress_bytes_total);
  event_send(a->s, &b, a->name, 1);
}

static void start_run(struct acct *a) {
  struct sched *s = a->s;
  const struct cfg_account *c = a->cfg;
  struct run *r = calloc(1, sizeof *r);
  if (r == NULL) {
    log_err("%s: out of memory starting a run", a->name);
    if (!s->shutting_down)
      arm(a, 60000);
    return;
  }
  r->a = a;
  r->started = time(NULL);
  r->started_ms = uv_now(s->loop);
  /* The request borrows the config's strings: it is encoded at once. */
  struct worker_request q;
  memset(&q, 0, sizeof q);
  q.account = c->name;
  q.user = c->user;
  q.uid = c->uid;
  q.gid = c->gid;
  q.server = c->server;
  q.maildir = c->maildir;
  q.netrc = c->netrc;
  q.password_command = c->password_command;
  q.password = c->password;
  q.ca_file = c->ca_file;
  q.state_dir = s->cfg->state_dir;
  memcpy(q.pins, c->pins, sizeof q.pins);
  q.pin_count = c->pin_count;
  q.timeout_s = c->timeout ? c->timeout : s->cfg->timeout;
  q.pipelining = c->pipelining;
  q.window = c->window;
  q.keep = c->keep;
  q.keep_days = c->keep_days;
  q.max_size = c->max_size;
  q.no_utf8 = !c->utf8;
  q.auth = c->auth;
  q.verbose = log_verbose();
  a->run = r;
  a->next_run = 0;
  s->running++;
  log_debug("%s: starting a run", a->name);
  static const struct worker_run_ops ops = {
      .trace = on_worker_trace,
      .progress = on_worker_progress,
      .done = on_worker_done,
  };
  char errbuf[512];
  int err =
      worker_run_start(s->loop, s->worker_exe, &q, &ops, r, &r->worker, errbuf, sizeof errbuf);
  if (err) {
    finish_run(a, err, errbuf, 0, 0, -1, NULL, NULL);
    return;
  }
  struct jbuf b;
  event_begin(&b, "started", a->name);
  event_send(s, &b, a->name, 0);
}

void sched_set_event_cb(struct sched *s, sched_event_cb cb, void *data) {
  s->event_cb = cb;
  s->event_data = data;
  hooks_set_event_cb(s->hooks, cb, data);
}

void sched_set_worker_exe(struct sched *s, const char *exe) {
  s->worker_exe = exe;
  hooks_set_worker_exe(s->hooks, exe);
}

/* ---- accounts */

static struct acct *acct_new(struct sched *s, const struct cfg_account *c) {
  struct acct *a = calloc(1, sizeof *a);
  if (a == NULL)
    return NULL;
  a->name = strdup(c->name);
  if (a->name == NULL) {
    free(a);
    return NULL;
  }
  a->s = s;
  a->cfg = c;
  a->uidl = -1;
  a->uids_unique = 1;
  uv_timer_init(s->loop, &a->timer);
  a->timer.data = a;
  return a;
}

/* The first poll comes after a uniform random delay in
 * [0, min(interval/10, 30 s)], so that many accounts do not connect at once. */
static void arm_first(struct acct *a) {
  if (!a->cfg->enabled)
    return;
  uint64_t cap_ms = (uint64_t)a->cfg->interval * 100;
  if (cap_ms > FIRST_DELAY_CAP_S * 1000)
    cap_ms = FIRST_DELAY_CAP_S * 1000;
  arm(a, random_below(cap_ms + 1));
}

int sched_new(uv_loop_t *loop, struct cfg *cfg, struct sched **s_r) {
  struct sched *s = calloc(1, sizeof *s);
  if (s == NULL)
    return -ENOMEM;
  s->loop = loop;
  s->cfg = cfg;
  s->accts = calloc(cfg->account_count ? cfg->account_count : 1, sizeof *s->accts);
  if (s->accts == NULL || hooks_new(loop, &s->hooks) != 0) {
    free(s->accts);
    free(s);
    return -ENOMEM;
  }
  for (size_t i = 0; i < cfg->account_count; i++) {
    struct acct *a = acct_new(s, &cfg->accounts[i]);
    if (a == NULL)
      return -ENOMEM; /* at start-up: the daemon exits */
    s->accts[s->count++] = a;
    arm_first(a);
  }
  *s_r = s;
  return 0;
}

static int str_differs(const char *x, const char *y) {
  if (x == NULL || y == NULL)
    return x != y;
  return strcmp(x, y) != 0;
}

/* What a reload changed for one account: 0 nothing, 1 some setting, 2 the
 * server, the login or the trust in the server (what a failure may have
 * been about: the backoff it earned is stale). */
static int cfg_account_changed(const struct cfg_account *o, const struct cfg_account *n) {
  if (str_differs(o->server, n->server) || str_differs(o->user, n->user) ||
      str_differs(o->password, n->password) ||
      str_differs(o->password_command, n->password_command) || str_differs(o->netrc, n->netrc) ||
      o->auth != n->auth || str_differs(o->ca_file, n->ca_file) || o->pin_count != n->pin_count ||
      memcmp(o->pins, n->pins, sizeof o->pins) != 0)
    return 2;
  if (str_differs(o->maildir, n->maildir) || o->interval != n->interval || o->window != n->window ||
      o->timeout != n->timeout || o->pipelining != n->pipelining || o->enabled != n->enabled ||
      o->keep != n->keep || o->keep_days != n->keep_days || o->utf8 != n->utf8 ||
      o->max_size != n->max_size || str_differs(o->on_new_mail, n->on_new_mail) ||
      str_differs(o->on_failure, n->on_failure) || o->hook_timeout != n->hook_timeout)
    return 1;
  return 0;
}

static void names_json(struct jbuf *b, const char *key, const char *const *names, size_t n) {
  jbuf_key(b, key);
  jbuf_arr_begin(b);
  for (size_t i = 0; i < n; i++)
    jbuf_str(b, names[i]);
  jbuf_arr_end(b);
}

/* "a, b, c" into buf, cut with "..." when it does not fit. */
static const char *names_text(const char *const *names, size_t n, char *buf, size_t len) {
  size_t o = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    int w = snprintf(buf + o, len - o, "%s%s", i ? ", " : "", names[i]);
    if (w < 0 || (size_t)w >= len - o) {
      snprintf(buf + (len > 4 ? len - 4 : 0), len > 4 ? 4 : len, "...");
      break;
    }
    o += (size_t)w;
  }
  return buf;
}

/* Logs and reports what a reload changed (sched_reload). */
static void reload_report(struct sched *s, const char *const *names, size_t nadd, size_t nrm,
                          size_t nchg, struct jbuf *summary) {
  const char *const *added = names, *const *removed = names + nadd,
                    *const *changed = names + nadd + nrm;
  char t1[400], t2[400], t3[400];
  if (nadd + nrm + nchg == 0)
    log_info("reload: %zu account%s, none added, removed or changed", s->cfg->account_count,
             s->cfg->account_count == 1 ? "" : "s");
  else
    log_info("reload: %zu account%s; added: %s; removed: %s; changed: %s", s->cfg->account_count,
             s->cfg->account_count == 1 ? "" : "s",
             nadd ? names_text(added, nadd, t1, sizeof t1) : "none",
             nrm ? names_text(removed, nrm, t2, sizeof t2) : "none",
             nchg ? names_text(changed, nchg, t3, sizeof t3) : "none");
  if (summary) {
    names_json(summary, "added", added, nadd);
    names_json(summary, "removed", removed, nrm);
    names_json(summary, "changed", changed, nchg);
  }
  struct jbuf b;
  event_begin(&b, "reload", NULL);
  names_json(&b, "added", added, nadd);
  names_json(&b, "removed", removed, nrm);
  names_json(&b, "changed", changed, nchg);
  event_send(s, &b, NULL, 0);
}

/* The user changed what the account's failures were about: forget them,
 * and try again soon (a running one: right after its run). */
static void forget_backoff(struct acct *a) {
  a->failures = 0;
  a->backoff_skip = 0;
  a->auth_failed = 0;
  a->waits_for_fetch = 0;
  a->backoff_until = 0;
  if (!a->cfg->enabled)
    return;
  if (a->run)
    a->rerun = 1;
  else if (!a->queued)
    arm_first(a);
}

void sched_reload(struct sched *s, struct cfg *cfg, struct jbuf *summary) {
  struct acct **accts = calloc(cfg->account_count ? cfg->account_count : 1, sizeof *accts);
  /* Names: added, then removed, then changed; at most one entry per old
   * and per new account. */
  size_t names_cap = cfg->account_count + s->count;
  const char **names = calloc(names_cap ? names_cap : 1, sizeof *names);
  const char **changed = calloc(cfg->account_count ? cfg->account_count : 1, sizeof *changed);
  size_t nadd = 0, nrm = 0, nchg = 0;
  if (accts == NULL || names == NULL || changed == NULL) {
    log_err("reload: out of memory; keeping the old configuration");
    free(accts);
    free(names);
    free(changed);
    cfg_free(cfg);
    return;
  }
  size_t n = 0;
  for (size_t i = 0; i < cfg->account_count; i++) {
    const struct cfg_account *c = &cfg->accounts[i];
    struct acct *a = find_acct(s, c->name);
    if (a == NULL && (a = find_retired(s, c->name)) != NULL)
      unretire(s, a); /* a->cfg is NULL: treated as newly enabled below */
    if (a) {
      int was_enabled = a->cfg && a->cfg->enabled;
      unsigned old_interval = a->cfg ? a->cfg->interval : 0;
      int how = a->cfg ? cfg_account_changed(a->cfg, c) : 2;
      if (a->cfg == NULL)
        names[nadd++] = c->name;
      else if (how)
        changed[nchg++] = c->name;
      a->cfg = c;
      if (how == 2 && a->failures && c->enabled && was_enabled) {
        /* A fixed password must not sit out a backoff the wrong one earned. */
        log_info("%s: server or login settings changed: forgetting %u failure%s and the backoff",
                 a->name, a->failures, a->failures == 1 ? "" : "s");
        forget_backoff(a);
      } else if (!c->enabled) {
        uv_timer_stop(&a->timer);
        unqueue(s, a);
        a->next_run = 0;
        a->rerun = 0;
      } else if (!was_enabled) {
        arm_first(a);
      } else if (a->waits_for_fetch && !a->run && !a->queued) {
        /* A reload is the user's word that the token may work now. */
        a->waits_for_fetch = 0;
        arm_first(a);
      } else if (!a->run && !a->queued && c->interval != old_interval) {
        /* Keep the phase, but never wait longer than the new interval. */
        time_t now = time(NULL);
        uint64_t left = a->next_run > now ? (uint64_t)(a->next_run - now) : 0;
        if (left > c->interval && a->failures == 0)
          arm(a, (uint64_t)c->interval * 1000);
      }
    } else {
      a = acct_new(s, c);
      if (a == NULL) {
        log_err("reload: out of memory for account %s", c->name);
        continue;
      }
      names[nadd++] = c->name;
      arm_first(a);
    }
    accts[n++] = a;
  }
  /* Accounts that left the config. */
  for (size_t i = 0; i < s->count; i++) {
    struct acct *a = s->accts[i];
    int kept = 0;
    for (size_t j = 0; j < n && !kept; j++)
      kept = accts[j] == a;
    if (kept)
      continue;
    names[nadd + nrm++] = a->name;
    a->cfg = NULL;
    uv_timer_stop(&a->timer);
    unqueue(s, a);
    if (a->run == NULL) {
      free_acct_later(a);
    } else {
      /* Freed when its run finishes, unless a later reload brings it back. */
      if (buf_grow(&s->retired, &s->retired_cap, s->retired_count + 1, sizeof *s->retired, 4,
                   SIZE_MAX / sizeof *s->retired) == 0)
        s->retired[s->retired_count++] = a;
    }
  }
  free(s->accts);
  s->accts = accts;
  s->count = n;
  cfg_free(s->cfg);
  s->cfg = cfg;
  memcpy(names + nadd + nrm, changed, nchg * sizeof *names);
  reload_report(s, names, nadd, nrm, nchg, summary);
  free(names);
  free(changed);
  pump_queue(s);
}

const struct cfg *sched_config(const struct sched *s) {
  return s->cfg;
}

/* ---- status */

static const char *acct_state(const struct acct *a) {
  if (a->run)
    return "fetching";
  if (!a->cfg->enabled)
    return "disabled";
  if (a->failures > 0)
    return "backoff";
  return "idle";
}

static void status_account(const struct acct *a, struct jbuf *b) {
  jbuf_obj_begin(b);
  jbuf_key(b, "name");
  jbuf_str(b, a->name);
  jbuf_key(b, "state");
  jbuf_str(b, acct_state(a));
  if (a->run && a->run->worker) {
    /* Zeros until the worker's first report (the login, the listing). */
    const struct worker_report *rep = worker_run_report(a->run->worker);
    jbuf_key(b, "progress");
    jbuf_obj_begin(b);
    jbuf_key(b, "messages_done");
    jbuf_uint(b, rep->progress_done);
    jbuf_key(b, "messages_total");
    jbuf_uint(b, rep->progress_total);
    jbuf_key(b, "bytes_done");
    jbuf_uint(b, rep->progress_bytes);
    jbuf_key(b, "bytes_total");
    jbuf_uint(b, rep->progress_bytes_total);
    jbuf_obj_end(b);
  }
  jbuf_key(b, "last_run");
  if (a->has_last) {
    jbuf_obj_begin(b);
    jbuf_key(b, "started");
    jbuf_time(b, a->last_started);
    jbuf_key(b, "finished");
    jbuf_time(b, a->last_finished);
    jbuf_key(b, "result");
    jbuf_str(b, a->last_ok ? "ok" : "error");
    jbuf_key(b, "error");
    jbuf_str(b, a->last_ok ? NULL : a->last_error);
    jbuf_key(b, "messages");
    jbuf_uint(b, a->last_messages);
    jbuf_key(b, "bytes");
    jbuf_uint(b, a->last_bytes);
    jbuf_key(b, "exit");
    jbuf_int(b, a->last_exit);
    jbuf_key(b, "signal");
    jbuf_str(b, a->last_signal[0] ? a->last_signal : NULL);
    jbuf_key(b, "round_trips");
    jbuf_uint(b, a->last_round_trips);
    jbuf_key(b, "resumed_tls");
    jbuf_bool(b, a->last_resumed_tls);
    /* Left on the server for max_size (the first ENGINE_OVER_SIZE_MAX). */
    jbuf_key(b, "over_size");
    jbuf_arr_begin(b);
    for (size_t i = 0; i < a->over_size_n; i++) {
      const struct engine_over_size *o = &a->over_size[i];
      jbuf_obj_begin(b);
      jbuf_key(b, "number");
      jbuf_uint(b, o->number);
      jbuf_key(b, "uid");
      jbuf_str(b, o->uid);
      jbuf_key(b, "size");
      jbuf_uint(b, o->size);
      jbuf_obj_end(b);
    }
    jbuf_arr_end(b);
    jbuf_key(b, "over_size_count");
    jbuf_uint(b, a->over_size_count);
    jbuf_key(b, "over_size_bytes");
    jbuf_uint(b, a->over_size_bytes);
    jbuf_obj_end(b);
  } else {
    jbuf_null(b);
  }
  jbuf_key(b, "next_run");
  if (a->cfg->enabled && a->next_run)
    jbuf_time(b, a->next_run);
  else
    jbuf_null(b);
  jbuf_key(b, "total_messages");
  jbuf_uint(b, a->total_messages);
  jbuf_key(b, "total_bytes");
  jbuf_uint(b, a->total_bytes);
  jbuf_key(b, "consecutive_failures");
  jbuf_uint(b, a->failures);
  jbuf_key(b, "server");
  jbuf_str(b, a->cfg->server);
  jbuf_key(b, "maildir");
  jbuf_str(b, a->cfg->maildir);
  jbuf_key(b, "interval");
  jbuf_uint(b, a->cfg->interval);
  jbuf_key(b, "backoff_until");
  if (a->failures && a->backoff_until && !a->run)
    jbuf_time(b, a->backoff_until);
  else
    jbuf_null(b);
  jbuf_key(b, "auth_failed");
  jbuf_bool(b, a->auth_failed);
  /* true|false as documented: false until a session has listed. */
  jbuf_key(b, "uidl");
  jbuf_bool(b, a->uidl > 0);
  jbuf_key(b, "lockstep");
  jbuf_bool(b, a->lockstep);
  /* false: some messages carry a UID the listing shows more than once; they
   * are always fetched (a duplicate beats a loss), see pop3(1). */
  jbuf_key(b, "uids_unique");
  jbuf_bool(b, a->uids_unique);
  jbuf_key(b, "stuck");
  jbuf_arr_begin(b);
  for (size_t i = 0; i < a->stuck_count; i++) {
    const struct engine_stuck *st = &a->stuck[i];
    jbuf_obj_begin(b);
    jbuf_key(b, "number");
    jbuf_uint(b, st->number);
    jbuf_key(b, "uid");
    jbuf_str(b, st->uid);
    jbuf_key(b, "size");
    jbuf_uint(b, st->size);
    jbuf_key(b, "attempts");
    jbuf_uint(b, st->attempts);
    jbuf_key(b, "last_error");
    jbuf_str(b, st->last_error);
    jbuf_obj_end(b);
  }
  jbuf_arr_end(b);
  jbuf_obj_end(b);
}

int sched_status(struct sched *s, const char *account, struct jbuf *b) {
  struct acct *one = NULL;
  if (account) {
    one = find_acct(s, account);
    if (one == NULL)
      return -ENOENT;
  }
  jbuf_key(b, "accounts");
  jbuf_arr_begin(b);
  for (size_t i = 0; i < s->count; i++)
    if (one == NULL || s->accts[i] == one)
      status_account(s->accts[i], b);
  jbuf_arr_end(b);
  return 0;
}

int sched_fetch(struct sched *s, const char *account, sched_fetch_cb cb, void *data) {
  struct acct *a = find_acct(s, account);
  if (a == NULL)
    return -ENOENT;
  if (!a->cfg->enabled)
    return P3_ECONFIG;
  if (s->shutting_down)
    return P3_ECANCELED;
  struct waiter *w = calloc(1, sizeof *w);
  if (w == NULL)
    return -ENOMEM;
  w->cb = cb;
  w->data = data;
  /* The user's word that the problem may be gone (a link that came up, a
   * resume): a failure of this run starts the backoff over, it does not
   * double what the earlier ones earned. */
  a->backoff_skip = a->failures;
  if (a->run) {
    /* Wait for the run in progress, then run once more. */
    a->rerun = 1;
    w->next = a->wait_next;
    a->wait_next = w;
    return 0;
  }
  w->next = a->wait_cur;
  a->wait_cur = w;
  if (!a->queued)
    enqueue_now(a);
  return 0;
}

void sched_summary(const struct sched *s, char *buf, size_t len) {
  size_t failing = 0;
  for (size_t i = 0; i < s->count; i++)
    if (s->accts[i]->failures)
      failing++;
  int n = snprintf(buf, len, "%zu account%s, %zu fetching, %zu failing", s->count,
                   s->count == 1 ? "" : "s", s->running, failing);
  /* Name them, as far as the line allows: `systemctl status' shows it. */
  const char *sep = ": ";
  for (size_t i = 0; i < s->count && n > 0 && (size_t)n < len; i++) {
    if (!s->accts[i]->failures)
      continue;
    int m = snprintf(buf + n, len - (size_t)n, "%s%s", sep, s->accts[i]->name);
    if (m < 0 || (size_t)m >= len - (size_t)n) {
      buf[n] = '\0'; /* no half name */
      break;
    }
    n += m;
    sep = ", ";
  }
}

/* ---- shutdown */

static void maybe_shutdown_done(struct sched *s) {
  if (!s->shutting_down || s->running || s->closing_handles || s->shutdown_cb == NULL ||
      hooks_running(s->hooks))
    return;
  if (s->count) {
    /* Close the account timers; this function runs again as they close. */
    for (size_t i = 0; i < s->count; i++)
      free_acct_later(s->accts[i]);
    s->count = 0;
    return;
  }
  void (*cb)(void *) = s->shutdown_cb;
  s->shutdown_cb = NULL;
  cb(s->shutdown_data);
}

static void on_hooks_idle(void *data) {
  maybe_shutdown_done(data);
}

void sched_shutdown(struct sched *s, unsigned grace_ms, void (*cb)(void *data), void *data) {
  s->shutting_down = 1;
  s->grace_ms = grace_ms;
  s->shutdown_cb = cb;
  s->shutdown_data = data;
  struct sched_result res = {.ok = 0, .exit = 75, .error = "the daemon is shutting down"};
  for (size_t i = 0; i < s->count; i++) {
    struct acct *a = s->accts[i];
    uv_timer_stop(&a->timer);
    a->next_run = 0;
    a->rerun = 0;
    res.name = a->name;
    notify_waiters(&a->wait_next, &res);
    if (a->run == NULL)
      notify_waiters(&a->wait_cur, &res);
    else if (a->run->worker)
      worker_run_stop(a->run->worker, grace_ms);
  }
  s->queue_head = s->queue_tail = NULL;
  for (size_t i = 0; i < s->count; i++)
    s->accts[i]->queued = 0;
  hooks_shutdown(s->hooks, grace_ms, on_hooks_idle, s);
  maybe_shutdown_done(s);
}

void sched_free(struct sched *s) {
  if (s == NULL)
    return;
  free(s->accts);
  free(s->retired);
  hooks_free(s->hooks);
  cfg_free(s->cfg);
  free(s);
}

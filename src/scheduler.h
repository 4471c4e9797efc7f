/* The daemon's scheduler: one runtime record per configured account, poll
 * timers with a random first delay, at most max_parallel runs at once,
 * exponential backoff on failure (hard on authentication failures), LOGIN-DELAY,
 * on-demand fetches with waiters, reload and graceful shutdown.  Runs the
 * same engine as `pop3 dl`. */
#ifndef P3_SCHEDULER_H
#define P3_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cfg.h"
#include "json.h"

struct sched;

struct sched_result {
  const char *name; /* account */
  int ok;
  int exit;          /* pop3 dl's exit status for this run */
  const char *error; /* NULL when ok */
  size_t messages;
  uint64_t bytes;
};

typedef void (*sched_fetch_cb)(void *data, const struct sched_result *r);

/* Creates the scheduler and arms every enabled account's first poll.
 * Takes ownership of cfg.  Returns 0 or -ENOMEM. */
int sched_new(uv_loop_t *loop, struct cfg *cfg, struct sched **s_r);

/* Swaps in a new, valid config (ownership passes).  Accounts keep their
 * runtime state by name; runs in progress finish with the settings they
 * started with; removed accounts disappear once idle.  An account whose
 * server, login or trust settings (server, user, password,
 * password_command, netrc, auth, ca_file, tls_fingerprint) changed forgets
 * its failures and backoff and is armed like a new one (a running one runs
 * again right after).  Logs the accounts added, removed and changed, and
 * writes them into the object open in summary (may be NULL) as the members
 * "added", "removed" and "changed" (arrays of names); sends a `reload'
 * event with the same members. */
void sched_reload(struct sched *s, struct cfg *cfg, struct jbuf *summary);

const struct cfg *sched_config(const struct sched *s);

/* Events for watchers (doc/control-protocol.md, "watch"): json is one
 * object without a newline; account is the account it is about, or NULL
 * (reload, stopping); droppable: a progress event, which a slow reader may
 * miss.  Called on the loop thread, never re-entrantly. */
typedef void (*sched_event_cb)(void *data, const char *account, const char *json, int droppable);
void sched_set_event_cb(struct sched *s, sched_event_cb cb, void *data);

/* The program to run as `PROGRAM --worker' for each run (borrowed; NULL,
 * the default, is the daemon's own executable, /proc/self/exe). */
void sched_set_worker_exe(struct sched *s, const char *exe);

/* Writes the status document (doc/control-protocol.md) for one account, or
 * all when account is NULL.  Returns 0 or -ENOENT for an unknown account. */
int sched_status(struct sched *s, const char *account, struct jbuf *out);

/* Starts a run of account now, ignoring backoff; if it is already running,
 * runs once more after it.  cb (may be NULL) gets that run's result.
 * Returns 0, -ENOENT (unknown), or P3_ECONFIG (disabled). */
int sched_fetch(struct sched *s, const char *account, sched_fetch_cb cb, void *data);

/* One line for systemd's STATUS=. */
void sched_summary(const struct sched *s, char *buf, size_t len);

/* Stops: no new runs; runs in progress stop within grace_ms (replies in
 * flight are saved); waiters get an error.  cb runs once every run and
 * handle is finished; then free with sched_free. */
void sched_shutdown(struct sched *s, unsigned grace_ms, void (*cb)(void *data), void *data);
void sched_free(struct sched *s);

#endif

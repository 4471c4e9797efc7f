/* Hooks: the user's commands run when an account has new mail (on_new_mail)
 * or starts or stops failing (on_failure), see pop3sync.conf(5).
 *
 * A hook runs in a worker process of its own (worker.h), like a fetch: as
 * root, the worker drops to the account's user first; then it runs
 * `/bin/sh -c COMMAND' with a clean environment (hook_env), stdin from
 * /dev/null, stdout and stderr read and dropped (the first line of them
 * explains a failure), killed after hook_timeout seconds.  What the server
 * said reaches a hook only through POP3SYNC_ERROR, never its command line.
 *
 * Two halves: the daemon's queue (hooks_*, on the daemon's loop), and the
 * worker's runner (hook_exec_*, in the worker process). */
#ifndef P3_HOOK_H
#define P3_HOOK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "worker_proto.h"

/* ---- the daemon's side */

struct hooks;

/* One hook to run; strings are borrowed (copied by hooks_fire). */
struct hook_job {
  const char *account;
  const char *user;       /* NULL: the daemon's own user */
  unsigned long uid, gid; /* of user */
  const char *command;    /* not NULL, not "" */
  const char *event;      /* "new_mail", "failure" or "recovered" */
  const char *error;      /* the run's error sentence, or NULL */
  uint64_t messages, bytes;
  int exit;           /* the run's exit status */
  unsigned timeout_s; /* 0: 60 */
};

/* Same shape as sched_event_cb (scheduler.h): one `hook' event per hook run. */
typedef void (*hooks_event_cb)(void *data, const char *account, const char *json, int droppable);

/* Returns 0 or -ENOMEM. */
int hooks_new(uv_loop_t *loop, struct hooks **h_r);
void hooks_set_worker_exe(struct hooks *h, const char *exe); /* borrowed; NULL: /proc/self/exe */
void hooks_set_event_cb(struct hooks *h, hooks_event_cb cb, void *data);

/* Runs job now, without waiting for it, unless a hook of the same account
 * is running: then it waits for that one (at most one waits per account;
 * one more is dropped, with a log line).  Hooks do not count against
 * max_parallel.  Returns 0, -ENOMEM, or P3_ECANCELED after hooks_shutdown. */
int hooks_fire(struct hooks *h, const struct hook_job *job);

/* Hook runs in progress (waiting ones not counted). */
size_t hooks_running(const struct hooks *h);

/* The configuration key an event ("new_mail", "failure", "recovered")
 * comes from: "on_new_mail" or "on_failure". */
const char *hook_key(const char *event);

/* Drops the waiting hooks and stops the running ones (their process groups
 * are killed after grace_ms); idle_cb runs each time a stopped one is gone
 * (check hooks_running). */
void hooks_shutdown(struct hooks *h, unsigned grace_ms, void (*idle_cb)(void *data), void *data);

/* Only once hooks_running is 0. */
void hooks_free(struct hooks *h);

/* ---- the worker's side */

/* The environment of a hook run for req, a NULL-terminated malloc'd array of
 * malloc'd "KEY=VALUE" strings (free with hook_env_free): POP3SYNC_EVENT,
 * POP3SYNC_ACCOUNT, POP3SYNC_MESSAGES, POP3SYNC_BYTES, POP3SYNC_ERROR
 * (control characters replaced by `?'; empty when there is none) and
 * POP3SYNC_EXIT; HOME, USER, LOGNAME, LANG, LC_*, TZ from env (the
 * process's environment after the drop of privileges); PATH from env, else
 * /usr/local/bin:/usr/bin:/bin; and, as_root false only (a user's own
 * daemon), the desktop session's XDG_RUNTIME_DIR, DBUS_SESSION_BUS_ADDRESS,
 * DISPLAY and WAYLAND_DISPLAY.  Nothing else of the daemon's environment.
 * as_root: a root daemon's worker: PATH is always the fixed one, and
 * runtime_dir (NULL: none), the user's /run/user/UID, gives
 * XDG_RUNTIME_DIR and DBUS_SESSION_BUS_ADDRESS=unix:path=RUNTIME_DIR/bus.
 * Returns 0 or -ENOMEM. */
int hook_env(const struct worker_request *req, char *const *env, int as_root,
             const char *runtime_dir, char ***env_r);
void hook_env_free(char **envp);

struct hook_exec;

/* err 0: the command exited with status 0; otherwise P3_EWORKER (a non-zero
 * exit, a signal, could not be started), P3_ETIMEOUT (killed after
 * timeout_s) or P3_ECANCELED (hook_exec_cancel), and message is one
 * sentence naming the command and ending with the first line of its output,
 * control characters replaced.  The struct is freed when cb runs. */
typedef void (*hook_exec_cb)(void *data, int err, const char *message);

/* Starts `/bin/sh -c command' with envp (borrowed; copied by the spawn) in
 * the caller's process group (a worker's: the daemon kills that group when
 * the worker ends, so what the command leaves behind goes with it), stdin
 * /dev/null, stdout and stderr into one pipe that is read and dropped.  On
 * timeout the command gets SIGTERM, then SIGKILL 2 s later; once it has
 * exited its output is not waited for.  Returns 0 (cb runs exactly once,
 * later), or -EINVAL / -ENOMEM / a libuv error with cb never called. */
int hook_exec_start(uv_loop_t *loop, const char *command, char **envp, unsigned timeout_s,
                    hook_exec_cb cb, void *data, struct hook_exec **x_r);

/* Kills the command (SIGTERM, SIGKILL 2 s later); cb gets P3_ECANCELED. */
void hook_exec_cancel(struct hook_exec *x);

#endif

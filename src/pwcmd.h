/* Password commands (`pass show mail`, an OAuth token helper) run as child
 * processes on the caller's libuv loop: uv_spawn of `/bin/sh -c COMMAND`,
 * its standard output read through a pipe, a timer that kills it.  Never on
 * the thread pool: a command that does not finish must not hang a run, and
 * several of them must not starve the pool. */
#ifndef P3_PWCMD_H
#define P3_PWCMD_H

#include <uv.h>

/* A command prints a line, not a file: at most this much output is kept; a
 * command that prints more is killed and fails. */
#define PWCMD_MAX_OUTPUT (64 * 1024)

struct pwcmd;

/* err 0: password is a malloc'd NUL-terminated first output line (caller wipes+frees);
 * else err is P3_EPWCMD (non-zero exit, signal, empty output, spawn failure),
 * P3_ETIMEOUT (killed after timeout_s) or P3_ECANCELED (pwcmd_cancel), and
 * message is one sentence naming the command, e.g.
 * "password command `sleep 1000' did not finish within 3 s; killed".
 * password is NULL when err != 0; message is "" when err == 0 and is valid
 * only during the call.  The first line excludes its "\n" (and a "\r"
 * before it); an empty line, a NUL byte or a carriage return in it, or more
 * than PWCMD_MAX_OUTPUT bytes of output are P3_EPWCMD.  The struct pwcmd is
 * already freed when cb runs: do not touch it from cb or after. */
typedef void (*pwcmd_done_cb)(void *data, int err, char *password, const char *message);

/* How the child is placed (mode):
 * PWCMD_OWN_GROUP: its own process group (UV_PROCESS_DETACHED gives setsid)
 *   with stdin from /dev/null; the whole group is killed on timeout: SIGTERM,
 *   then SIGKILL ~2 s later.
 * PWCMD_TTY: stdin is a terminal and the user may be prompted (pinentry-tty):
 *   the child stays in the caller's process group with stdin inherited, and
 *   only that child is killed on timeout.
 * PWCMD_CALLER_GROUP: stdin from /dev/null, in the caller's process group;
 *   only the child is killed on timeout.  For a caller whose own group is
 *   killed by its parent when it ends (a daemon's worker): what the command
 *   leaves behind goes with it, and nothing needs to name the child's pid to
 *   anyone outside.  Its stderr is not inherited: the first line of it, with
 *   control characters replaced, ends the message of a failure.
 * stdout is read through a pipe (at most 64 KiB kept). cb runs once, on the loop,
 * after the child is reaped and every handle closed.
 *
 * stderr is inherited in both modes (the helper's own complaints reach the
 * user or the journal); the environment is the caller's; signal dispositions
 * and the signal mask are reset in the child (libuv does it).  timeout_s 0
 * means 120.  Once the child has exited, output still held open by something
 * it left behind is waited for at most ~0.5 s (not at all when the first line
 * is complete); what was left behind is not killed then.
 *
 * Returns 0 (cb will run exactly once, never from inside pwcmd_start), or
 * -EINVAL (NULL or empty command, NULL cb) / -ENOMEM / another libuv error
 * from setting up the handles, with *p_r NULL and cb never called.  A
 * command that cannot be started (no /bin/sh, fork failure) is reported
 * through cb as P3_EPWCMD. */
enum pwcmd_mode { PWCMD_OWN_GROUP, PWCMD_TTY, PWCMD_CALLER_GROUP };

int pwcmd_start(uv_loop_t *loop, const char *command, unsigned timeout_s, enum pwcmd_mode mode,
                pwcmd_done_cb cb, void *data, struct pwcmd **p_r);

/* ": FIRST LINE" of a child's output (leading blank lines skipped, control
 * characters replaced by `?', cut to size), or "" when there is none: how a
 * failure sentence quotes what the command said. */
void pwcmd_output_suffix(const char *text, size_t len, char *out, size_t size);

/* kill now (group), cb gets P3_ECANCELED: SIGTERM at once (to the group when
 * detached, to the child otherwise), SIGKILL ~2 s later if it is still there;
 * output is no longer waited for.  A no-op after the first call.  The result
 * is P3_ECANCELED even if the command had already finished (cb has not run
 * yet then). */
void pwcmd_cancel(struct pwcmd *p);

/* the child's pid (= its pgid when detached), 0 if none: before a
 * successful spawn, after a failed one, and once the child has been reaped
 * (its pid may then be reused). */
int pwcmd_pid(const struct pwcmd *p);

#endif

/* The worker channel: what the daemon tells a run's worker process, and
 * what the worker reports back, over one socketpair (fd 3 in the worker).
 * Pure encoding and decoding, no I/O.  See doc/control-protocol.md,
 * "Worker channel".
 *
 * Both directions are lines "KEY VALUE\n" (VALUE may be empty; a backslash
 * escapes "\\", "\n" and "\r" inside it).  The request ends with "end";
 * the worker's report ends with "done".  Events before "done":
 *   trace TEXT              a protocol trace line (only when asked for)
 *   alive                   once a second before the engine runs
 *   progress D T B BT       D of T messages saved, B bytes received of
 *                           BT (the listing's LIST sizes summed); once a
 *                           second while it runs
 *   result FIELD VALUE      one field of the run's result (see below)
 *   stuck NUM SIZE ATT UID  a message left alone; its text follows as
 *   stuck_error TEXT
 *   over_size NUM SIZE UID  a message left on the server for max_size (the
 *                           first ENGINE_OVER_SIZE_MAX; all are counted by
 *                           result over_size_count / over_size_bytes)
 */
#ifndef P3_WORKER_PROTO_H
#define P3_WORKER_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "session.h"
#include "tls.h"

/* A request or a single line longer than this is refused. */
#define WORKER_REQUEST_MAX (256u << 10)
#define WORKER_LINE_MAX 8192
#define WORKER_STUCK_MAX 1000
#define WORKER_OVER_SIZE_MAX ENGINE_OVER_SIZE_MAX

struct worker_request {
  char *account;
  char *user;             /* NULL: run as the daemon's own user */
  unsigned long uid, gid; /* of user, as the daemon resolved it */
  char *server;
  char *maildir;
  char *netrc;
  char *password_command;
  char *password; /* from the root-only config file; wiped on free */
  char *ca_file;
  char *state_dir; /* root: the journal lives in state_dir/USER/ */
  uint8_t pins[P3_TLS_MAX_PINS][32];
  int pin_count;
  unsigned timeout_s;
  enum session_pipelining pipelining;
  unsigned window;
  int keep;
  int keep_days;
  uint64_t max_size; /* engine_options.max_size; 0: no limit */
  int no_utf8;
  enum session_auth auth;
  int verbose;
  /* A hook run instead of a fetch when hook_command is set: the worker
   * becomes user and runs `/bin/sh -c hook_command' with POP3SYNC_EVENT,
   * POP3SYNC_ACCOUNT, POP3SYNC_MESSAGES, POP3SYNC_BYTES, POP3SYNC_ERROR and
   * POP3SYNC_EXIT in its environment, for at most hook_timeout_s (hook.h).
   * Such a request needs only account and hook_event (server, maildir and
   * state_dir may be absent). */
  char *hook_command;
  char *hook_event; /* "new_mail", "failure" or "recovered" */
  char *hook_error; /* the run's error sentence; NULL: none */
  uint64_t hook_messages, hook_bytes;
  unsigned hook_exit; /* the run's exit status (0..255) */
  unsigned hook_timeout_s;
};

/* Encodes req into a malloc'd buffer.  Returns 0 or -ENOMEM. */
int worker_request_format(const struct worker_request *req, char **buf_r, size_t *len_r);

/* Decodes a whole request (up to and including "end\n").  Returns 0, or
 * -EINVAL with errbuf saying which line is wrong.  Free with
 * worker_request_free even after a failure. */
int worker_request_parse(const char *buf, size_t len, struct worker_request *req, char *errbuf,
                         size_t errlen);

void worker_request_free(struct worker_request *req);

/* Appends "KEY VALUE\n" (VALUE escaped) to a growing buffer.  Returns 0 or
 * -ENOMEM. */
int worker_line_append(char **buf, size_t *len, size_t *cap, const char *key, const char *value);

/* Splits one line (without its newline) into key and unescaped value, in
 * place.  Returns 0 or -EINVAL (no key, a bad escape). */
int worker_line_split(char *line, char **key_r, char **value_r);

/* The result of a run as the daemon learns it from the worker. */
struct worker_report {
  struct engine_result r;     /* r.stuck points at stuck below */
  struct engine_stuck *stuck; /* owned */
  size_t stuck_count;
  struct engine_over_size *over_size; /* owned; r.over_size points at it */
  size_t over_size_n;
  int done; /* "done" was received */
  size_t progress_done, progress_total;
  uint64_t progress_bytes;
  uint64_t progress_bytes_total; /* the listing's LIST sizes summed */
  int progress_seen;             /* a progress line has come */
};

void worker_report_init(struct worker_report *rep);
void worker_report_free(struct worker_report *rep);

/* Applies one line from the worker (without its newline; modified in place).
 * Returns 1 for a trace line (*trace_r points at its text), 0 for any other
 * line, or -EINVAL for a line that breaks the protocol. */
int worker_report_line(struct worker_report *rep, char *line, const char **trace_r);

/* Encodes a finished run's result lines and "done" into a malloc'd buffer. */
int worker_report_format(const struct engine_result *r, char **buf_r, size_t *len_r);

#endif

/* The daemon's side of a worker process (worker.h): spawns
 * `pop3syncd --worker' in its own process group with the worker channel on
 * fd 3, sends the request, collects events and the report, and reaps it.
 * A worker that dies without a report (a signal, a crash) is a failed run. */
#ifndef P3_WORKER_RUN_H
#define P3_WORKER_RUN_H

#include <stddef.h>
#include <uv.h>

#include "worker_proto.h"

struct worker_run;

struct worker_outcome {
  const struct worker_report *report; /* report->done tells whether it is complete */
  int exit_status;                    /* the worker's, -1 when killed by a signal */
  int term_signal;                    /* 0 when it exited */
  const char *signal_name;            /* "SIGSEGV", or NULL */
  int silenced;                       /* killed for a minute without a word */
};

struct worker_run_ops {
  void (*trace)(void *data, const char *line); /* optional */
  void (*progress)(void *data);                /* optional: the report's figures changed */
  /* Once, after the process is reaped and the channel closed. */
  void (*done)(void *data, const struct worker_outcome *o);
};

/* exe: the program to run (NULL: /proc/self/exe).  Returns 0 or a negative
 * error with errbuf set (then no callback runs). */
int worker_run_start(uv_loop_t *loop, const char *exe, const struct worker_request *req,
                     const struct worker_run_ops *ops, void *data, struct worker_run **w_r,
                     char *errbuf, size_t errlen);

/* Asks the worker to stop (SIGTERM: it saves what is in flight) and kills
 * its process group (the worker and what it started) after grace_ms. */
void worker_run_stop(struct worker_run *w, unsigned grace_ms);

const struct worker_report *worker_run_report(const struct worker_run *w);
int worker_run_pid(const struct worker_run *w);

/* After done: frees everything. */
void worker_run_free(struct worker_run *w);

#endif

/* The worker process: one account's run, started by the daemon as
 * `pop3syncd --worker' with the worker channel (worker_proto.h) on fd 3.
 * As root it first prepares STATE_DIR/USER and drops to the account's user
 * (privsep.h); then, as that user, it reads the netrc, runs the password
 * command, and runs the same engine as `pop3 dl', reporting progress and
 * the result over the channel.  A crash here costs one run, not the daemon. */
#ifndef P3_WORKER_H
#define P3_WORKER_H

/* The fd the daemon hands the channel on. */
#define WORKER_CHANNEL_FD 3

/* Runs the worker on fd; returns the process's exit status (pop3 dl's). */
int worker_main(int fd);

#endif

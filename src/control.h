/* The control socket server (after OpenSMTPD's control.c): a Unix stream
 * socket, mode 0600 in a 0700 directory, that accepts line-based requests
 * and sends one JSON line back per request.  Every peer is checked with
 * SO_PEERCRED: only the daemon's own uid or root may talk to it; others get
 * {"error":"permission denied","exit":77} and are disconnected.
 * The wire protocol is documented in doc/control-protocol.md. */
#ifndef P3_CONTROL_H
#define P3_CONTROL_H

#include <stddef.h>
#include <uv.h>

struct control;
struct control_req; /* one request; valid until control_reply() */

struct control_ops {
  /* A request line (without its newline, at most 4096 bytes).  The handler
   * must call control_reply(req, ...) exactly once, now or later (a run may
   * take minutes); if the client has gone away meanwhile the reply is
   * dropped and req freed all the same. */
  void (*request)(void *data, struct control_req *req, const char *line);
};

/* Creates the socket's directory (0700, mkdir -p) if missing, and checks it
 * is owned by us (or root) and not writable by others; refuses to start when
 * another process is listening on path (returns P3_ELOCKED, errbuf: "another
 * pop3syncd is already listening on PATH"); replaces a stale socket file; binds under
 * umask 077 and chmods the socket 0600.  Caps concurrent clients (64).
 * Returns 0 and *c_r, or a negative error with errbuf set. */
int control_listen(uv_loop_t *loop, const char *path, const struct control_ops *ops, void *data,
                   struct control **c_r, char *errbuf, size_t errlen);

/* Sends json (one line, without newline; a newline is added) as the reply
 * and frees req. */
void control_reply(struct control_req *req, const char *json);

/* 1 while the client of req is still connected. */
int control_req_alive(const struct control_req *req);

/* Stops listening, removes the socket file, closes every client (pending
 * requests stay valid until replied).  cb runs once every handle is closed. */
void control_close(struct control *c, void (*cb)(void *data), void *data);

#endif

/* pop3ctl: talks to a running pop3syncd over its control socket (the wire
 * protocol is doc/control-protocol.md).  One request per run: send a line,
 * read one JSON line back, print it for a person (or as is, for --json) and
 * exit with the status the daemon chose.  Plain blocking I/O: there is
 * nothing to multiplex. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "buf.h"
#include "cfg.h"
#include "errors.h"
#include "human.h"
#include "json.h"

/* A reply is one line; the status of a few hundred accounts is well under a
 * megabyte.  Past this bound the daemon is not speaking our protocol. */
#define REPLY_MAX (16u * 1024 * 1024)
/* status, reload and fetch --no-wait are answered at once; a daemon that
 * stays silent this long is wedged.  A waiting fetch has no timeout: a run
 * may take as long as the mailbox takes to download. */
#define QUICK_TIMEOUT_S 30
/* Account names are [A-Za-z0-9._-]+ (see cfg.h); a longer one is a typo. */
#define NAME_MAX_LEN 255
/* The ERROR column is cut to this many characters. */
#define ERROR_COLUMN_MAX 60

static const char usage_text[] =
    "usage: pop3ctl [-s SOCKET] [-c FILE] COMMAND [ARGS...]\n"
    "\n"
    "Control a running pop3syncd.\n"
    "\n"
    "Commands:\n"
    "  status [--json] [ACCOUNT]         show the accounts' state and last runs\n"
    "  fetch [--no-wait] ACCOUNT|--all   fetch now (ignoring any backoff) and\n"
    "                                    wait for the result unless --no-wait\n"
    "  reload                            make the daemon re-read its config file\n"
    "  watch [--json] [ACCOUNT]          follow the daemon's events (runs, progress,\n"
    "                                    results, backoffs, reloads) until Ctrl-C\n"
    "  help                              show this help\n"
    "\n"
    "Options:\n"
    "  -s, --socket SOCKET  the daemon's control socket\n"
    "  -c, --config FILE    take the socket from FILE's control_socket setting\n"
    "  -h, --help           show this help\n"
    "      --version        show the version\n"
    "\n"
    "The socket is -s, else $POP3SYNC_SOCKET, else control_socket of the config\n"
    "file (-c FILE, or the default file if it exists), else the default socket.\n"
    "\n"
    "Exit status: 0 ok, 64 usage or unknown account, 69 daemon not running,\n"
    "75 temporary failure or a failed run, 77 permission denied, 78 configuration\n"
    "problem; a failed fetch exits with the status `pop3 dl' would have.\n";

#define usage_error(...) cli_usage_error("pop3ctl", "pop3ctl --help", __VA_ARGS__)

/* ---- finding the socket */

static int print_cfg_errors(const struct cfg_errors *errs, int err, const char *path) {
  for (size_t i = 0; i < errs->count; i++)
    fprintf(stderr, "%s\n", errs->lines[i]);
  if (errs->count == 0)
    fprintf(stderr, "pop3ctl: %s: %s\n", path, p3_strerror(err));
  return EX_CONFIG;
}

/* Loads path and copies its control_socket into buf.  Returns 0, or an exit
 * status after printing why (only when loud; a quiet failure returns -1). */
static int socket_from_config(const char *path, int loud, char *buf, size_t len) {
  struct cfg *cfg = NULL;
  struct cfg_errors errs;
  memset(&errs, 0, sizeof errs);
  int err = cfg_load(path, 0, &cfg, &errs);
  int status = 0;
  if (err != 0) {
    status = loud ? print_cfg_errors(&errs, err, path) : -1;
  } else if (cfg->control_socket == NULL ||
             (size_t)snprintf(buf, len, "%s", cfg->control_socket) >= len) {
    if (loud)
      fprintf(stderr, "pop3ctl: %s: control_socket is missing or too long\n", path);
    status = loud ? EX_CONFIG : -1;
  }
  if (cfg != NULL)
    cfg_free(cfg);
  cfg_errors_free(&errs);
  return status;
}

/* The lookup order of the man page: -s, $POP3SYNC_SOCKET, -c FILE's
 * control_socket, the default config file's control_socket (only if that
 * file exists and loads: the daemon may be running with an older, valid
 * version of a file that is broken now, and `pop3ctl reload' must still
 * reach it), the default socket.  Returns 0 or an exit status. */
static int find_socket(const char *opt_socket, const char *opt_config, char *buf, size_t len) {
  const char *env = getenv("POP3SYNC_SOCKET");
  const char *given = opt_socket != NULL ? opt_socket : env != NULL && *env ? env : NULL;
  if (given != NULL) {
    if ((size_t)snprintf(buf, len, "%s", given) >= len)
      return usage_error("socket path `%s' is too long", given);
    return 0;
  }
  if (opt_config != NULL)
    return socket_from_config(opt_config, 1, buf, len);
  char path[4096];
  struct stat st;
  if (cfg_default_path(path, sizeof path) == 0 && stat(path, &st) == 0 &&
      socket_from_config(path, 0, buf, len) == 0)
    return 0;
  int err = cfg_default_socket(buf, len);
  if (err != 0) {
    fprintf(stderr, "pop3ctl: cannot find the default control socket: %s\n", p3_strerror(err));
    return EX_CONFIG;
  }
  return 0;
}

/* ---- talking to the daemon */

/* Where to find the daemon: resolved only once a command's arguments are
 * known to be fine, so that a usage error never depends on the config. */
struct ctl {
  const char *opt_socket; /* -s */
  const char *opt_config; /* -c */
};

struct reply {
  char *line; /* the line as received, without its newline, NUL-terminated */
  size_t len;
  struct json *json; /* parsed: an object */
};

static void reply_free(struct reply *r) {
  free(r->line);
  json_free(r->json);
}

/* Connects to path.  Returns the socket, or -(exit status) after saying why. */
static int ctl_connect(const char *path) {
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof sa.sun_path) {
    fprintf(stderr, "pop3ctl: socket path is too long (at most %zu bytes): %s\n",
            sizeof sa.sun_path - 1, path);
    return -EX_USAGE;
  }
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    fprintf(stderr, "pop3ctl: socket: %s\n", strerror(errno));
    return -EX_OSERR;
  }
  int r;
  do
    r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  while (r != 0 && errno == EINTR);
  if (r == 0)
    return fd;
  int e = errno;
  close(fd);
  switch (e) {
  case ENOENT:
  case ECONNREFUSED:
    /* No socket file, or a stale one nobody listens on. */
    fprintf(stderr, "pop3ctl: pop3syncd is not running (no daemon listening on %s)\n", path);
    return -EX_UNAVAILABLE;
  case EACCES:
  case EPERM:
    fprintf(stderr, "pop3ctl: permission denied: %s\n", path);
    return -EX_NOPERM;
  default:
    fprintf(stderr, "pop3ctl: cannot connect to %s: %s\n", path, strerror(e));
    return -EX_UNAVAILABLE;
  }
}

static void set_timeout(int fd, int opt, int seconds) {
  struct timeval tv = {seconds, 0};
  (void)setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv);
}

/* Reads up to the first newline.  Returns 0 with r->line set, or an exit
 * status after saying why. */
static int read_line(int fd, struct reply *r) {
  struct buf b;
  buf_init(&b, REPLY_MAX);
  for (;;) {
    /* Room for one more byte at least; the buffer doubles up to REPLY_MAX. */
    int err = buf_reserve(&b, 1);
    if (err == -E2BIG) {
      buf_free(&b);
      fprintf(stderr, "pop3ctl: the daemon's reply is longer than %u bytes\n", REPLY_MAX);
      return EX_TEMPFAIL;
    }
    if (err != 0)
      goto nomem;
    ssize_t n = read(fd, b.data + b.len, b.cap - 1 - b.len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n > 0) {
      char *nl = memchr(b.data + b.len, '\n', (size_t)n);
      b.len += (size_t)n;
      if (nl != NULL) {
        *nl = '\0';
        r->line = b.data; /* allocated: buf_reserve succeeded */
        r->len = (size_t)(nl - b.data);
        return 0;
      }
      continue;
    }
    int e = errno;
    buf_free(&b);
    if (n == 0 || e == ECONNRESET)
      fprintf(stderr, "pop3ctl: the daemon closed the connection\n");
    else if (e == EAGAIN || e == EWOULDBLOCK)
      fprintf(stderr, "pop3ctl: no reply from the daemon within %d seconds\n", QUICK_TIMEOUT_S);
    else
      fprintf(stderr, "pop3ctl: reading from the daemon: %s\n", strerror(e));
    return EX_TEMPFAIL;
  }
nomem:
  buf_free(&b);
  fprintf(stderr, "pop3ctl: out of memory\n");
  return EX_OSERR;
}

/* A status in the reply's "exit" member: an integer from lo to 255, or
 * dflt. */
static int reply_exit(const struct json *v, int lo, int dflt) {
  double d = json_get_num(v, "exit", -1);
  if (d >= lo && d <= 255 && d == (double)(int)d)
    return (int)d;
  return dflt;
}

/* Sends request (one line, no newline) to the daemon and reads its reply.  wait: no timeout on the
 * reply.  Returns 0 with *r filled (an object without "error"), or an exit status after saying why;
 * an error reply prints "pop3ctl: ERROR" and returns its exit. */
static int ctl_request(const struct ctl *ctl, const char *request, int wait, struct reply *r) {
  memset(r, 0, sizeof r[0]);
  char path[4096];
  int status = find_socket(ctl->opt_socket, ctl->opt_config, path, sizeof path);
  if (status != 0)
    return status;
  int fd = ctl_connect(path);
  if (fd < 0)
    return -fd;
  set_timeout(fd, SO_SNDTIMEO, QUICK_TIMEOUT_S);
  if (!wait)
    set_timeout(fd, SO_RCVTIMEO, QUICK_TIMEOUT_S);

  char line[4200];
  size_t len = (size_t)snprintf(line, sizeof line, "%s\n", request);
  size_t off = 0;
  while (off < len) {
    /* MSG_NOSIGNAL: a daemon that hung up is an error here, not SIGPIPE
     * (which stays on for stdout, so `pop3ctl status | head' ends quietly). */
    ssize_t n = send(fd, line + off, len - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      /* A daemon that refuses us writes its error line and hangs up, maybe
       * before our request arrived: read that line all the same. */
      if (errno == EPIPE || errno == ECONNRESET)
        break;
      fprintf(stderr, "pop3ctl: sending to the daemon: %s\n", strerror(errno));
      close(fd);
      return EX_TEMPFAIL;
    }
    off += (size_t)n;
  }
  status = read_line(fd, r);
  close(fd);
  if (status != 0)
    return status;
  if (json_parse(r->line, r->len, &r->json) != 0 || r->json->type != JSON_OBJECT) {
    fprintf(stderr, "pop3ctl: garbled reply from the daemon\n");
    reply_free(r);
    memset(r, 0, sizeof r[0]);
    return EX_TEMPFAIL;
  }
  const struct json *error = json_get(r->json, "error");
  if (error != NULL && error->type != JSON_NULL) {
    const char *msg = error->type == JSON_STRING ? error->string : "error";
    /* An error is never success: a reply without a usable status is a
     * temporary failure. */
    status = reply_exit(r->json, 1, EX_TEMPFAIL);
    fprintf(stderr, "pop3ctl: %s\n", msg);
    reply_free(r);
    memset(r, 0, sizeof r[0]);
    return status;
  }
  return 0;
}

/* ---- printing */

/* Copies s into buf for a terminal: control characters (C0, DEL and the C1
 * range, which some terminals obey) become '?', line breaks and tabs a
 * space; at most max_chars (>= 4) characters, cut with "...".  ascii: each
 * non-ASCII character becomes one '?' too, for columns padded by bytes.  s
 * comes from the JSON parser, so it is valid UTF-8. */
static void sanitize(const char *s, char *buf, size_t len, size_t max_chars, int ascii) {
  const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
  size_t total = 0, chars = 0, o = 0;
  for (const unsigned char *q = p; *q; q++)
    total += (*q & 0xC0) != 0x80;
  size_t limit = total > max_chars ? max_chars - 3 : max_chars;
  while (*p && chars < limit) {
    size_t n = 1;
    if (*p >= 0xC0)
      while (n < 4 && (p[n] & 0xC0) == 0x80)
        n++;
    if (o + n + 4 > len)
      break; /* keep room for "..." and the NUL */
    unsigned char c = *p;
    if (c == '\n' || c == '\r' || c == '\t')
      buf[o++] = ' ';
    else if (c < 0x20 || c == 0x7f || (c >= 0x80 && (ascii || n == 1)) ||
             (c == 0xC2 && p[1] <= 0x9F))
      buf[o++] = '?';
    else {
      memcpy(buf + o, p, n);
      o += n;
    }
    p += n;
    chars++;
  }
  if (*p) {
    memcpy(buf + o, "...", 3);
    o += 3;
  }
  buf[o] = '\0';
}

/* Parses an RFC 3339 time ("2026-11-28T13:37:41Z", fractions and offsets
 * accepted). */
static int parse_time(const char *s, time_t *t_r) {
  int v[6];
  static const char seps[] = "--T::";
  const char *p = s;
  if (s == NULL)
    return -1;
  for (int i = 0; i < 6; i++) {
    int width = i == 0 ? 4 : 2, x = 0;
    for (int k = 0; k < width; k++, p++) {
      if (*p < '0' || *p > '9')
        return -1;
      x = x * 10 + (*p - '0');
    }
    v[i] = x;
    if (i < 5) {
      if (*p != seps[i] && !(i == 2 && (*p == 't' || *p == ' ')))
        return -1;
      p++;
    }
  }
  if (*p == '.')
    for (p++; *p >= '0' && *p <= '9'; p++)
      ;
  long offset = 0;
  if (*p == 'Z' || *p == 'z')
    p++;
  else if ((*p == '+' || *p == '-') && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9' &&
           p[3] == ':' && p[4] >= '0' && p[4] <= '9' && p[5] >= '0' && p[5] <= '9') {
    offset = ((p[1] - '0') * 10 + (p[2] - '0')) * 3600L + ((p[4] - '0') * 10 + (p[5] - '0')) * 60L;
    if (*p == '-')
      offset = -offset;
    p += 6;
  } else
    return -1;
  if (*p || v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > 31 || v[3] > 23 || v[4] > 59 || v[5] > 60)
    return -1;
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  tm.tm_year = v[0] - 1900;
  tm.tm_mon = v[1] - 1;
  tm.tm_mday = v[2];
  tm.tm_hour = v[3];
  tm.tm_min = v[4];
  tm.tm_sec = v[5];
  time_t t = timegm(&tm);
  if (t == (time_t)-1)
    return -1;
  *t_r = t - offset;
  return 0;
}

/* "42s", "3m", "5h", "2d": the largest whole unit. */
static void span(long long d, char *buf, size_t len) {
  if (d < 60)
    snprintf(buf, len, "%llds", d);
  else if (d < 3600)
    snprintf(buf, len, "%lldm", d / 60);
  else if (d < 86400)
    snprintf(buf, len, "%lldh", d / 3600);
  else
    snprintf(buf, len, "%lldd", d / 86400);
}

/* A past time relative to now: "3m ago"; "-" for null, "?" if unreadable. */
static void time_ago(const char *s, time_t now, char *buf, size_t len) {
  time_t t;
  char d[32];
  if (s == NULL) {
    snprintf(buf, len, "-");
    return;
  }
  if (parse_time(s, &t) != 0) {
    snprintf(buf, len, "?");
    return;
  }
  /* A clock a little ahead of ours is not the future. */
  span(t < now ? (long long)(now - t) : 0, d, sizeof d);
  snprintf(buf, len, "%s ago", d);
}

/* A future time relative to now: "in 4m", "now" once it has passed. */
static void time_in(const char *s, time_t now, char *buf, size_t len) {
  time_t t;
  char d[32];
  if (s == NULL) {
    snprintf(buf, len, "-");
    return;
  }
  if (parse_time(s, &t) != 0) {
    snprintf(buf, len, "?");
    return;
  }
  if (t <= now) {
    snprintf(buf, len, "now");
    return;
  }
  span((long long)(t - now), d, sizeof d);
  snprintf(buf, len, "in %s", d);
}

/* A count member as an integer, or "-". */
static void count_cell(const struct json *v, const char *key, char *buf, size_t len) {
  double d = json_get_num(v, key, -1);
  if (d >= 0 && isfinite(d))
    snprintf(buf, len, "%.0f", d);
  else
    snprintf(buf, len, "-");
}

/* "s" after a count cell other than "1": "1 message", "2 messages". */
static const char *plural(const char *count) {
  return strcmp(count, "1") == 0 ? "" : "s";
}

/* Bytes in the units pop3 dl uses for its progress line. */
static void bytes_cell(const struct json *v, const char *key, char *buf, size_t len) {
  double b = json_get_num(v, key, -1);
  if (b < 0 || !isfinite(b))
    snprintf(buf, len, "-");
  else if (b < 10 * 1024)
    snprintf(buf, len, "%.0f B", b);
  else if (b < 10.0 * 1024 * 1024)
    snprintf(buf, len, "%.1f KiB", b / 1024);
  else if (b < 10.0 * 1024 * 1024 * 1024)
    snprintf(buf, len, "%.1f MiB", b / (1024 * 1024));
  else
    snprintf(buf, len, "%.1f GiB", b / (1024.0 * 1024 * 1024));
}

/* "D/T, X of Y": a run's progress as status and watch print it.  Before
 * the listing (T 0) only the bytes received so far, if any. */
static void progress_text(const struct json *p, char *buf, size_t len) {
  double d = json_get_num(p, "messages_done", 0), t = json_get_num(p, "messages_total", 0);
  double bd = json_get_num(p, "bytes_done", 0), bt = json_get_num(p, "bytes_total", 0);
  char x[32], y[32];
  human_bytes(bd >= 0 && isfinite(bd) ? (uint64_t)bd : 0, x, sizeof x);
  human_bytes(bt >= 0 && isfinite(bt) ? (uint64_t)bt : 0, y, sizeof y);
  if (t > 0 && isfinite(t) && isfinite(d))
    snprintf(buf, len, "%.0f/%.0f, %s of %s", d, t, x, y);
  else
    snprintf(buf, len, "%s received", x);
}

/* A fetching account's STATE cell: "fetching 350/2000, 12.1 MiB of 48.0 MiB". */
static void progress_cell(const struct json *acc, char *buf, size_t len) {
  const struct json *p = json_get(acc, "progress");
  const char *state = json_get_str(acc, "state");
  if (p == NULL || p->type != JSON_OBJECT || state == NULL || strcmp(state, "fetching") != 0 ||
      json_get_num(p, "messages_total", 0) <= 0)
    return;
  char text[128];
  progress_text(p, text, sizeof text);
  snprintf(buf, len, "fetching %s", text);
}

enum {
  COL_ACCOUNT,
  COL_STATE,
  COL_LAST,
  COL_RESULT,
  COL_MSGS,
  COL_BYTES,
  COL_NEXT,
  COL_ERROR,
  NCOL
};

static const char *const col_title[NCOL] = {"ACCOUNT",  "STATE", "LAST RUN", "RESULT",
                                            "MESSAGES", "BYTES", "NEXT RUN", "ERROR"};
/* Numbers are right-aligned. */
static const int col_right[NCOL] = {0, 0, 0, 0, 1, 1, 0, 0};

struct row {
  char cell[NCOL][ERROR_COLUMN_MAX * 4 + 8];
  char *error_whole; /* NULL, or the whole error (heap) in place of cell[COL_ERROR] */
};

/* whole_error: the ERROR cell holds the whole error rather than its first
 * ERROR_COLUMN_MAX characters (`pop3ctl status NAME': one row, room to spare). */
static void fill_row(const struct json *acc, time_t now, int whole_error, struct row *row) {
  const struct json *last = json_get(acc, "last_run");
  size_t n = sizeof row->cell[0];
  if (last != NULL && last->type != JSON_OBJECT)
    last = NULL;
  sanitize(json_get_str(acc, "name"), row->cell[COL_ACCOUNT], n, 40, 1);
  sanitize(json_get_str(acc, "state"), row->cell[COL_STATE], n, 20, 1);
  if (last == NULL) {
    for (int c = COL_LAST; c <= COL_BYTES; c++)
      snprintf(row->cell[c], n, "-");
    snprintf(row->cell[COL_ERROR], n, "-");
  } else {
    /* When the last run ended; while one runs, this is the run before. */
    const char *when = json_get_str(last, "finished");
    time_ago(when != NULL ? when : json_get_str(last, "started"), now, row->cell[COL_LAST], n);
    const char *result = json_get_str(last, "result");
    sanitize(result != NULL ? result : "-", row->cell[COL_RESULT], n, 20, 1);
    count_cell(last, "messages", row->cell[COL_MSGS], n);
    bytes_cell(last, "bytes", row->cell[COL_BYTES], n);
    const char *error = json_get_str(last, "error");
    size_t elen = error != NULL ? strlen(error) : 0;
    if (whole_error && elen > ERROR_COLUMN_MAX && (row->error_whole = malloc(elen * 4 + 8)) != NULL)
      sanitize(error, row->error_whole, elen * 4 + 8, elen + 4, 0);
    else
      sanitize(error != NULL ? error : "-", row->cell[COL_ERROR], n, ERROR_COLUMN_MAX, 0);
  }
  progress_cell(acc, row->cell[COL_STATE], n);
  time_in(json_get_str(acc, "next_run"), now, row->cell[COL_NEXT], n);
  const char *state = json_get_str(acc, "state");
  /* The next run is scheduled when this one ends: `-' is for a disabled
   * account only (pop3ctl(1)). */
  if (json_get_str(acc, "next_run") == NULL && state != NULL && strcmp(state, "fetching") == 0)
    snprintf(row->cell[COL_NEXT], n, "running");
  /* A refused OAuth token: no timer, the user's fetch or reload is awaited. */
  const struct json *af = json_get(acc, "auth_failed");
  if (json_get_str(acc, "next_run") == NULL && af != NULL && af->type == JSON_BOOL && af->boolean &&
      state != NULL && strcmp(state, "backoff") == 0)
    snprintf(row->cell[COL_NEXT], n, "on fetch/reload");
}

/* Prints the status document as a table.  Returns an exit status. */
/* Below the table: what the columns cannot say (no UIDL, UIDs listed more
 * than once, lock-step after a desync, messages stuck on the server). */
static void print_status_notes(const struct json *accounts) {
  char name[300], text[ERROR_COLUMN_MAX * 4 + 8];
  for (size_t i = 0; i < accounts->count; i++) {
    const struct json *a = &accounts->items[i];
    const struct json *uidl = json_get(a, "uidl");
    const struct json *lockstep = json_get(a, "lockstep");
    const struct json *unique = json_get(a, "uids_unique");
    const struct json *stuck = json_get(a, "stuck");
    const struct json *last = json_get(a, "last_run");
    sanitize(json_get_str(a, "name") ? json_get_str(a, "name") : "?", name, sizeof name, 64, 0);
    const char *result = last && last->type == JSON_OBJECT ? json_get_str(last, "result") : NULL;
    /* uidl is only known once a session got as far as the listing. */
    if (uidl && uidl->type == JSON_BOOL && !uidl->boolean && result && !strcmp(result, "ok"))
      printf("%s: the server has no UIDL: messages are fetched without a UID state\n", name);
    if (unique && unique->type == JSON_BOOL && !unique->boolean)
      printf("%s: the server lists some UIDs more than once: those messages are always "
             "fetched (a duplicate beats a loss)\n",
             name);
    if (lockstep && lockstep->type == JSON_BOOL && lockstep->boolean)
      printf("%s: lock-step: an earlier session with this server desynchronised\n", name);
    if (stuck && stuck->type == JSON_ARRAY) {
      for (size_t j = 0; j < stuck->count; j++) {
        const struct json *m = &stuck->items[j];
        const char *err = json_get_str(m, "last_error");
        sanitize(err ? err : "", text, sizeof text, ERROR_COLUMN_MAX, 0);
        printf("%s: message %.0f (UID %s) stuck after %.0f attempts: %s\n", name,
               json_get_num(m, "number", 0), json_get_str(m, "uid") ? json_get_str(m, "uid") : "?",
               json_get_num(m, "attempts", 0), text);
      }
    }
    /* Left on the server by max_size: a choice, not an error. */
    double over = last && last->type == JSON_OBJECT ? json_get_num(last, "over_size_count", 0) : 0;
    if (over >= 1) {
      char size[32];
      human_bytes((uint64_t)json_get_num(last, "over_size_bytes", 0), size, sizeof size);
      printf("%s: %.0f message%s (%s) over max_size left on the server\n", name, over,
             over == 1 ? "" : "s", size);
    }
  }
}

/* whole_errors: show each error whole (a status of one ACCOUNT). */
static int print_status_table(const struct json *doc, int whole_errors) {
  const struct json *accounts = json_get(doc, "accounts");
  if (accounts == NULL || accounts->type != JSON_ARRAY) {
    fprintf(stderr, "pop3ctl: garbled reply from the daemon (no accounts)\n");
    return EX_TEMPFAIL;
  }
  size_t count = accounts->count;
  struct row *rows = calloc(count ? count : 1, sizeof *rows);
  if (rows == NULL) {
    fprintf(stderr, "pop3ctl: out of memory\n");
    return EX_OSERR;
  }
  time_t now = time(NULL);
  size_t width[NCOL];
  for (int c = 0; c < NCOL; c++)
    width[c] = strlen(col_title[c]);
  for (size_t i = 0; i < count; i++) {
    fill_row(&accounts->items[i], now, whole_errors, &rows[i]);
    for (int c = 0; c < NCOL; c++)
      if (strlen(rows[i].cell[c]) > width[c])
        width[c] = strlen(rows[i].cell[c]);
  }
  for (size_t i = 0; i <= count; i++) {
    for (int c = 0; c < NCOL; c++) {
      const char *text = i == 0 ? col_title[c] : rows[i - 1].cell[c];
      if (i > 0 && c == COL_ERROR && rows[i - 1].error_whole != NULL)
        text = rows[i - 1].error_whole;
      if (c == NCOL - 1)
        printf("%s\n", text); /* the last column is not padded */
      else
        printf(col_right[c] ? "%*s  " : "%-*s  ", (int)width[c], text);
    }
  }
  for (size_t i = 0; i < count; i++)
    free(rows[i].error_whole);
  free(rows);
  print_status_notes(accounts);
  return 0;
}

/* ---- commands */

static int valid_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > NAME_MAX_LEN)
    return 0;
  return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

static int bad_name(const char *s) {
  return usage_error("`%s' is not an account name (letters, digits, `.', `_' and `-')", s);
}

/* [--json] [--] [ACCOUNT], as status and watch take them.  Returns 0, or
 * the usage error's exit status. */
static int parse_json_account(int argc, char **argv, const char *cmd, int *json,
                              const char **account) {
  int dashdash = 0;
  for (int i = 1; i < argc; i++) {
    if (!dashdash && strcmp(argv[i], "--json") == 0)
      *json = 1;
    else if (!dashdash && strcmp(argv[i], "--") == 0)
      dashdash = 1;
    else if (!dashdash && argv[i][0] == '-')
      return usage_error("%s: unknown option `%s'", cmd, argv[i]);
    else if (*account != NULL)
      return usage_error("%s: only one ACCOUNT, not also `%s'", cmd, argv[i]);
    else
      *account = argv[i];
  }
  if (*account != NULL && !valid_name(*account))
    return bad_name(*account);
  return 0;
}

static int cmd_status(int argc, char **argv, const struct ctl *ctl) {
  int json = 0;
  const char *account = NULL;
  int bad = parse_json_account(argc, argv, "status", &json, &account);
  if (bad)
    return bad;
  char request[NAME_MAX_LEN + 16];
  snprintf(request, sizeof request, "status%s%s", account ? " " : "", account ? account : "");
  struct reply r;
  int status = ctl_request(ctl, request, 0, &r);
  if (status != 0)
    return status;
  if (json) {
    /* Exactly what the daemon sent: scripts get the documented format. */
    fwrite(r.line, 1, r.len, stdout);
    putchar('\n');
  } else
    status = print_status_table(r.json, account != NULL);
  reply_free(&r);
  return status;
}

static int cmd_fetch(int argc, char **argv, const struct ctl *ctl) {
  int nowait = 0, all = 0, dashdash = 0;
  const char *account = NULL;
  for (int i = 1; i < argc; i++) {
    if (!dashdash && strcmp(argv[i], "--no-wait") == 0)
      nowait = 1;
    else if (!dashdash && strcmp(argv[i], "--all") == 0)
      all = 1;
    else if (!dashdash && strcmp(argv[i], "--") == 0)
      dashdash = 1;
    else if (!dashdash && argv[i][0] == '-')
      return usage_error("fetch: unknown option `%s'", argv[i]);
    else if (account != NULL)
      return usage_error("fetch: one ACCOUNT at a time, not also `%s' (or use --all)", argv[i]);
    else
      account = argv[i];
  }
  if (all && account != NULL)
    return usage_error("fetch: give ACCOUNT or --all, not both (`%s')", account);
  if (!all && account == NULL)
    return usage_error("fetch: which account? Give ACCOUNT or --all");
  if (account != NULL && !valid_name(account))
    return bad_name(account);
  char request[NAME_MAX_LEN + 32];
  snprintf(request, sizeof request, "fetch%s %s", nowait ? " --no-wait" : "",
           all ? "--all" : account);
  struct reply r;
  int status = ctl_request(ctl, request, !nowait, &r);
  if (status != 0)
    return status;
  char name[256], text[1024];
  if (nowait) {
    const struct json *started = json_get(r.json, "started");
    if (started == NULL || started->type != JSON_ARRAY) {
      fprintf(stderr, "pop3ctl: garbled reply from the daemon (no started list)\n");
      reply_free(&r);
      return EX_TEMPFAIL;
    }
    fputs("started:", stdout);
    for (size_t i = 0; i < started->count; i++) {
      sanitize(started->items[i].type == JSON_STRING ? started->items[i].string : "?", name,
               sizeof name, 100, 1);
      printf(" %s", name);
    }
    if (started->count == 0)
      fputs(" nothing (no enabled accounts)", stdout);
    putchar('\n');
    status = reply_exit(r.json, 0, 0);
    reply_free(&r);
    return status;
  }
  const struct json *results = json_get(r.json, "results");
  if (results == NULL || results->type != JSON_ARRAY) {
    fprintf(stderr, "pop3ctl: garbled reply from the daemon (no results)\n");
    reply_free(&r);
    return EX_TEMPFAIL;
  }
  int first_failure = 0;
  for (size_t i = 0; i < results->count; i++) {
    const struct json *res = &results->items[i];
    const char *result = json_get_str(res, "result");
    char msgs[32], bytes[32];
    sanitize(json_get_str(res, "name"), name, sizeof name, 100, 1);
    count_cell(res, "messages", msgs, sizeof msgs);
    count_cell(res, "bytes", bytes, sizeof bytes);
    if (result != NULL && strcmp(result, "ok") == 0) {
      printf("%s: ok, %s message%s, %s byte%s\n", name, msgs, plural(msgs), bytes, plural(bytes));
      continue;
    }
    if (first_failure == 0)
      first_failure = reply_exit(res, 1, EX_TEMPFAIL);
    const char *error = json_get_str(res, "error");
    sanitize(error != NULL ? error : "the run failed", text, sizeof text, 500, 0);
    /* Keep stdout and stderr in order on a terminal. */
    fflush(stdout);
    if (json_get_num(res, "messages", 0) > 0)
      fprintf(stderr, "%s: error: %s (%s message%s, %s byte%s saved)\n", name, text, msgs,
              plural(msgs), bytes, plural(bytes));
    else
      fprintf(stderr, "%s: error: %s\n", name, text);
  }
  if (results->count == 0)
    fprintf(stderr, "pop3ctl: no enabled accounts to fetch\n");
  status = reply_exit(r.json, 0, first_failure);
  reply_free(&r);
  return status;
}

/* "TITLE: a, b" for the array of names v[key], when it is not empty. */
static void names_line(FILE *f, const struct json *v, const char *key, const char *title) {
  const struct json *a = json_get(v, key);
  char name[256];
  if (a == NULL || a->type != JSON_ARRAY || a->count == 0)
    return;
  fprintf(f, "%s:", title);
  for (size_t i = 0; i < a->count; i++) {
    sanitize(a->items[i].type == JSON_STRING ? a->items[i].string : "?", name, sizeof name, 100, 1);
    fprintf(f, "%s %s", i ? "," : "", name);
  }
}

static void print_names(const struct json *v, const char *key, const char *title) {
  const struct json *a = json_get(v, key);
  if (a == NULL || a->type != JSON_ARRAY || a->count == 0)
    return;
  names_line(stdout, v, key, title);
  putchar('\n');
}

static int cmd_reload(int argc, char **argv, const struct ctl *ctl) {
  if (argc > 1)
    return usage_error("reload takes no arguments, not `%s'", argv[1]);
  struct reply r;
  int status = ctl_request(ctl, "reload", 0, &r);
  if (status != 0)
    return status;
  const struct json *ok = json_get(r.json, "ok");
  if (ok != NULL && ok->type == JSON_BOOL && ok->boolean) {
    printf("configuration reloaded\n");
    print_names(r.json, "added", "added");
    print_names(r.json, "removed", "removed");
    print_names(r.json, "changed", "changed");
    status = reply_exit(r.json, 0, 0);
  } else if (ok != NULL && ok->type == JSON_BOOL) {
    const struct json *errors = json_get(r.json, "errors");
    char line[2048];
    for (size_t i = 0; errors != NULL && errors->type == JSON_ARRAY && i < errors->count; i++) {
      if (errors->items[i].type != JSON_STRING)
        continue;
      sanitize(errors->items[i].string, line, sizeof line, 500, 0);
      fprintf(stderr, "%s\n", line);
    }
    fprintf(stderr, "pop3ctl: the configuration is invalid; the daemon keeps the old one\n");
    status = reply_exit(r.json, 1, EX_CONFIG);
  } else {
    fprintf(stderr, "pop3ctl: garbled reply from the daemon (no ok)\n");
    status = EX_TEMPFAIL;
  }
  reply_free(&r);
  return status;
}

/* ---- watch */

/* A JSON number as a count: 0 when negative or not finite. */
static uint64_t count_of(double d) {
  return d > 0 && isfinite(d) ? (uint64_t)d : 0;
}

/* One event as a line for a person: "HH:MM:SS ACCOUNT: what happened". */
static void print_event(const struct json *ev) {
  const char *type = json_get_str(ev, "event");
  const char *when = json_get_str(ev, "time");
  char name[256], clock[16] = "--:--:--", text[1024], a[32], b[32];
  time_t t;
  struct tm tm;
  if (when != NULL && parse_time(when, &t) == 0 && localtime_r(&t, &tm) != NULL)
    strftime(clock, sizeof clock, "%H:%M:%S", &tm);
  sanitize(type != NULL ? type : "?", text, sizeof text, 40, 1);
  if (json_get_str(ev, "account") != NULL) {
    sanitize(json_get_str(ev, "account"), name, sizeof name, 100, 1);
    printf("%s %s: ", clock, name);
  } else {
    printf("%s ", clock);
  }
  if (type == NULL) {
    printf("?\n");
  } else if (strcmp(type, "started") == 0) {
    printf("run started\n");
  } else if (strcmp(type, "listed") == 0) {
    human_bytes(count_of(json_get_num(ev, "bytes", 0)), b, sizeof b);
    printf("listed %.0f messages (%s)\n", json_get_num(ev, "messages", 0), b);
  } else if (strcmp(type, "progress") == 0) {
    progress_text(ev, text, sizeof text);
    printf("fetching %s\n", text);
  } else if (strcmp(type, "finished") == 0) {
    const char *result = json_get_str(ev, "result");
    double msgs = json_get_num(ev, "messages", 0);
    human_bytes(count_of(json_get_num(ev, "bytes", 0)), b, sizeof b);
    human_duration(count_of(json_get_num(ev, "milliseconds", 0)), a, sizeof a);
    if (result != NULL && strcmp(result, "ok") == 0) {
      printf("finished ok: %.0f message%s (%s) in %s\n", msgs, msgs == 1 ? "" : "s", b, a);
    } else {
      const char *err = json_get_str(ev, "error");
      sanitize(err != NULL ? err : "the run failed", text, sizeof text, 500, 0);
      printf("failed after %s (exit %.0f): %s\n", a, json_get_num(ev, "exit", 75), text);
    }
  } else if (strcmp(type, "backoff") == 0) {
    const char *until = json_get_str(ev, "until");
    double n = json_get_num(ev, "consecutive_failures", 0);
    if (until != NULL && parse_time(until, &t) == 0 && localtime_r(&t, &tm) != NULL) {
      strftime(a, sizeof a, "%H:%M:%S", &tm);
      printf("backoff until %s (%.0f failure%s in a row)\n", a, n, n == 1 ? "" : "s");
    } else {
      printf("waiting for fetch/reload (%.0f failure%s in a row)\n", n, n == 1 ? "" : "s");
    }
  } else if (strcmp(type, "reload") == 0) {
    printf("configuration reloaded");
    const char *keys[] = {"added", "removed", "changed"};
    for (int i = 0; i < 3; i++) {
      const struct json *arr = json_get(ev, keys[i]);
      if (arr != NULL && arr->type == JSON_ARRAY && arr->count > 0) {
        fputs("; ", stdout);
        names_line(stdout, ev, keys[i], keys[i]);
      }
    }
    putchar('\n');
  } else if (strcmp(type, "stopping") == 0) {
    printf("the daemon is stopping\n");
  } else if (strcmp(type, "hook") == 0) {
    const char *hook = json_get_str(ev, "hook");
    const char *result = json_get_str(ev, "result");
    sanitize(hook != NULL ? hook : "?", name, sizeof name, 40, 1);
    human_duration(count_of(json_get_num(ev, "milliseconds", 0)), a, sizeof a);
    if (result != NULL && strcmp(result, "ok") == 0) {
      printf("hook %s ran in %s\n", name, a);
    } else {
      const char *err = json_get_str(ev, "error");
      sanitize(err != NULL ? err : "the hook failed", text, sizeof text, 500, 0);
      printf("hook %s failed after %s: %s\n", name, a, text);
    }
  } else {
    printf("%s\n", text); /* a newer daemon's event */
  }
}

static int cmd_watch(int argc, char **argv, const struct ctl *ctl) {
  int json = 0;
  const char *account = NULL;
  int bad = parse_json_account(argc, argv, "watch", &json, &account);
  if (bad)
    return bad;
  char path[4096];
  int status = find_socket(ctl->opt_socket, ctl->opt_config, path, sizeof path);
  if (status != 0)
    return status;
  int fd = ctl_connect(path);
  if (fd < 0)
    return -fd;
  set_timeout(fd, SO_SNDTIMEO, QUICK_TIMEOUT_S);
  /* The reply comes at once; events whenever something happens. */
  set_timeout(fd, SO_RCVTIMEO, QUICK_TIMEOUT_S);
  char request[NAME_MAX_LEN + 16];
  int n =
      snprintf(request, sizeof request, "watch%s%s\n", account ? " " : "", account ? account : "");
  if (send(fd, request, (size_t)n, MSG_NOSIGNAL) != n) {
    fprintf(stderr, "pop3ctl: sending to the daemon: %s\n", strerror(errno));
    close(fd);
    return EX_TEMPFAIL;
  }
  FILE *in = fdopen(fd, "r");
  if (in == NULL) {
    close(fd);
    fprintf(stderr, "pop3ctl: out of memory\n");
    return EX_OSERR;
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  int first = 1, stopping = 0;
  status = 0;
  while ((len = getline(&line, &cap, in)) > 0) {
    if (line[len - 1] != '\n' || (size_t)len > REPLY_MAX) {
      fprintf(stderr, "pop3ctl: garbled event from the daemon\n");
      status = EX_TEMPFAIL;
      break;
    }
    line[--len] = '\0';
    struct json *v = NULL;
    if (json_parse(line, (size_t)len, &v) != 0 || v->type != JSON_OBJECT) {
      json_free(v);
      fprintf(stderr, "pop3ctl: garbled event from the daemon\n");
      status = EX_TEMPFAIL;
      break;
    }
    if (first) {
      first = 0;
      const struct json *error = json_get(v, "error");
      if (error != NULL && error->type == JSON_STRING) {
        fprintf(stderr, "pop3ctl: %s\n", error->string);
        status = reply_exit(v, 1, EX_TEMPFAIL);
        json_free(v);
        break;
      }
      /* From now on only events: wait for them as long as it takes. */
      set_timeout(fd, SO_RCVTIMEO, 0);
      json_free(v);
      continue;
    }
    const char *type = json_get_str(v, "event");
    stopping |= type != NULL && strcmp(type, "stopping") == 0;
    if (json)
      printf("%s\n", line);
    else
      print_event(v);
    json_free(v);
    /* Each line as it happens, also into a pipe. */
    if (fflush(stdout) != 0)
      break;
  }
  if (len <= 0 && status == 0) {
    if (first) {
      fprintf(stderr, "pop3ctl: no reply from the daemon\n");
      status = EX_TEMPFAIL;
    } else if (!stopping) {
      fprintf(stderr, "pop3ctl: the daemon closed the connection\n");
      status = EX_TEMPFAIL;
    }
  }
  free(line);
  fclose(in);
  return status;
}

/* The commands, one static table (as OpenSMTPD's control client). */
static const struct command {
  const char *name;
  int (*run)(int argc, char **argv, const struct ctl *ctl);
} commands[] = {
    {"status", cmd_status},
    {"fetch", cmd_fetch},
    {"reload", cmd_reload},
    {"watch", cmd_watch},
};

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"socket", required_argument, NULL, 's'},
      {"config", required_argument, NULL, 'c'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0},
  };
  struct ctl ctl = {NULL, NULL};
  int c;
  opterr = 0;
  /* '+': stop at the command, whose own options are parsed below. */
  while ((c = getopt_long(argc, argv, "+:s:c:h", opts, NULL)) != -1) {
    switch (c) {
    case 's':
      if (*optarg == '\0')
        return usage_error("the socket path is empty");
      ctl.opt_socket = optarg;
      break;
    case 'c':
      ctl.opt_config = optarg;
      break;
    case 'h':
      fputs(usage_text, stdout);
      return 0;
    case 'V':
      printf("pop3ctl (%s) %s\n", PACKAGE_NAME, PACKAGE_VERSION);
      return 0;
    case ':':
      return usage_error("option `%s' needs a value", argv[optind - 1]);
    default:
      return usage_error("unknown option `%s'", argv[optind - 1]);
    }
  }
  if (optind == argc) {
    fputs(usage_text, stderr);
    return EX_USAGE;
  }
  const char *name = argv[optind];
  if (strcmp(name, "help") == 0) {
    fputs(usage_text, stdout);
    return 0;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    if (strcmp(name, commands[i].name) != 0)
      continue;
    int status = commands[i].run(argc - optind, argv + optind, &ctl);
    if (fflush(stdout) != 0 || ferror(stdout)) {
      fprintf(stderr, "pop3ctl: writing the output: %s\n", strerror(errno));
      if (status == 0)
        status = EX_IOERR;
    }
    return status;
  }
  return usage_error("unknown command `%s'", name);
}

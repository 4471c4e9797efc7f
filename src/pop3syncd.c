/* pop3syncd: the daemon.  Loads the config, listens on the control socket,
 * runs the scheduler on one libuv loop, talks to systemd.  This file wires
 * things up and answers control requests; the work lives in scheduler.c. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "cfg.h"
#include "control.h"
#include "errors.h"
#include "fsutil.h"
#include "json.h"
#include "log.h"
#include "notify.h"
#include "privsep.h"
#include "scheduler.h"
#include "worker.h"

#define EX_USAGE 64
#define EX_TEMPFAIL 75
#define EX_CONFIG 78
#define EX_CANTCREAT 73
#define SHUTDOWN_GRACE_MS 8000

struct daemon {
  uv_loop_t *loop;
  char config_path[PATH_MAX];
  struct sched *sched;
  struct control *control;
  uv_signal_t sighup, sigterm, sigint;
  uv_timer_t watchdog;
  uv_timer_t status_timer;
  time_t started;
  int stopping;
};

static const char usage[] =
    "usage: pop3syncd [-v] [-c FILE]\n"
    "       pop3syncd --check-config [-c FILE]\n"
    "       pop3syncd --prepare-state [-c FILE]\n"
    "\n"
    "Fetch mail for every account in the config file, periodically, pipelined.\n"
    "\n"
    "  -c, --config FILE   the config file (default for root: " SYSCONFDIR
    "/pop3sync/pop3sync.conf,\n"
    "                      else $XDG_CONFIG_HOME/pop3sync/pop3sync.conf)\n"
    "      --check-config  validate the config and exit (0 valid, 78 invalid)\n"
    "      --prepare-state as root: create state_dir and each account user's\n"
    "                      state_dir/USER, then exit (systemd runs it with full\n"
    "                      privileges before the sandboxed daemon starts or reloads)\n"
    "  -v, --verbose       log each session's protocol trace and decisions\n"
    "  -h, --help          show this help\n"
    "      --version       show the version\n";

static void print_errors(const struct cfg_errors *errs) {
  for (size_t i = 0; i < errs->count; i++) {
    if (log_to_journal())
      log_err("%s", errs->lines[i]);
    else
      fprintf(stderr, "%s\n", errs->lines[i]);
  }
}

static int load_config(const char *path, struct cfg **cfg_r, struct cfg_errors *errs) {
  /* Checking and reloading change nothing on disk: a missing Maildir is
   * created by its first run (as the account's user under a root daemon). */
  return cfg_load(path, 1, cfg_r, errs);
}

/* ---- control requests */

struct fetch_req {
  struct daemon *d;
  struct control_req *req;
  size_t pending, count;
  struct fetch_result {
    char *name;
    int ok, exit;
    char *error;
    size_t messages;
    uint64_t bytes;
  } * results;
};

static void fetch_reply(struct fetch_req *f) {
  struct jbuf b;
  int exit_status = 0;
  jbuf_init(&b);
  jbuf_obj_begin(&b);
  jbuf_key(&b, "results");
  jbuf_arr_begin(&b);
  for (size_t i = 0; i < f->count; i++) {
    struct fetch_result *r = &f->results[i];
    if (r->name == NULL)
      continue;
    if (!r->ok && exit_status == 0)
      exit_status = r->exit;
    jbuf_obj_begin(&b);
    jbuf_key(&b, "name");
    jbuf_str(&b, r->name);
    jbuf_key(&b, "result");
    jbuf_str(&b, r->ok ? "ok" : "error");
    jbuf_key(&b, "error");
    jbuf_str(&b, r->error);
    jbuf_key(&b, "messages");
    jbuf_uint(&b, r->messages);
    jbuf_key(&b, "bytes");
    jbuf_uint(&b, r->bytes);
    jbuf_key(&b, "exit");
    jbuf_int(&b, r->exit);
    jbuf_obj_end(&b);
  }
  jbuf_arr_end(&b);
  jbuf_key(&b, "exit");
  jbuf_int(&b, exit_status);
  jbuf_obj_end(&b);
  control_reply(f->req, b.err ? "{\"error\":\"out of memory\",\"exit\":75}" : b.data);
  jbuf_free(&b);
  for (size_t i = 0; i < f->count; i++) {
    free(f->results[i].name);
    free(f->results[i].error);
  }
  free(f->results);
  free(f);
}

struct fetch_slot {
  struct fetch_req *f;
  size_t index;
};

static void on_fetch_done(void *data, const struct sched_result *r) {
  struct fetch_slot *slot = data;
  struct fetch_req *f = slot->f;
  struct fetch_result *fr = &f->results[slot->index];
  free(slot);
  fr->name = strdup(r->name);
  fr->ok = r->ok;
  fr->exit = r->exit;
  fr->error = r->error ? strdup(r->error) : NULL;
  fr->messages = r->messages;
  fr->bytes = r->bytes;
  if (--f->pending == 0)
    fetch_reply(f);
}

static void reply_error(struct control_req *req, const char *msg, int exit_status) {
  struct jbuf b;
  jbuf_init(&b);
  jbuf_obj_begin(&b);
  jbuf_key(&b, "error");
  jbuf_str(&b, msg);
  jbuf_key(&b, "exit");
  jbuf_int(&b, exit_status);
  jbuf_obj_end(&b);
  control_reply(req, b.err ? "{\"error\":\"out of memory\",\"exit\":75}" : b.data);
  jbuf_free(&b);
}

static void handle_status(struct daemon *d, struct control_req *req, int argc, char **argv) {
  const char *account = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0)
      continue;
    if (account) {
      reply_error(req, "usage: status [ACCOUNT]", EX_USAGE);
      return;
    }
    account = argv[i];
  }
  struct jbuf b;
  jbuf_init(&b);
  jbuf_obj_begin(&b);
  jbuf_key(&b, "daemon");
  jbuf_obj_begin(&b);
  jbuf_key(&b, "pid");
  jbuf_int(&b, getpid());
  jbuf_key(&b, "version");
  jbuf_str(&b, PACKAGE_VERSION);
  jbuf_key(&b, "started");
  jbuf_time(&b, d->started);
  jbuf_key(&b, "config");
  jbuf_str(&b, sched_config(d->sched)->path);
  jbuf_obj_end(&b);
  if (sched_status(d->sched, account, &b) != 0) {
    char msg[300];
    snprintf(msg, sizeof msg, "no account named %s", account);
    reply_error(req, msg, EX_USAGE);
  } else {
    jbuf_obj_end(&b);
    control_reply(req, b.err ? "{\"error\":\"out of memory\",\"exit\":75}" : b.data);
  }
  jbuf_free(&b);
}

static void handle_fetch(struct daemon *d, struct control_req *req, int argc, char **argv) {
  int all = 0, nowait = 0;
  const char *account = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--all") == 0)
      all = 1;
    else if (strcmp(argv[i], "--no-wait") == 0)
      nowait = 1;
    else if (account == NULL && argv[i][0] != '-')
      account = argv[i];
    else {
      reply_error(req, "usage: fetch [--no-wait] (ACCOUNT | --all)", EX_USAGE);
      return;
    }
  }
  if (all == (account != NULL)) {
    reply_error(req, "usage: fetch [--no-wait] (ACCOUNT | --all)", EX_USAGE);
    return;
  }
  if (d->stopping) {
    reply_error(req, "the daemon is shutting down", EX_TEMPFAIL);
    return;
  }
  const struct cfg *cfg = sched_config(d->sched);
  /* Check everything before starting anything. */
  if (account) {
    const struct cfg_account *ca = cfg_find_account(cfg, account);
    char msg[300];
    if (ca == NULL) {
      snprintf(msg, sizeof msg, "no account named %s", account);
      reply_error(req, msg, EX_USAGE);
      return;
    }
    if (!ca->enabled) {
      snprintf(msg, sizeof msg, "account %s is disabled", account);
      reply_error(req, msg, EX_CONFIG);
      return;
    }
  }
  struct fetch_req *f = calloc(1, sizeof *f);
  if (f) {
    f->count = cfg->account_count;
    f->results = calloc(f->count ? f->count : 1, sizeof *f->results);
  }
  if (f == NULL || f->results == NULL) {
    if (f)
      free(f->results);
    free(f);
    reply_error(req, "out of memory", EX_TEMPFAIL);
    return;
  }
  f->d = d;
  f->req = req;
  f->pending = 1; /* held until every run is started */
  struct jbuf started;
  jbuf_init(&started);
  jbuf_obj_begin(&started);
  jbuf_key(&started, "started");
  jbuf_arr_begin(&started);
  for (size_t i = 0; i < cfg->account_count; i++) {
    const struct cfg_account *ca = &cfg->accounts[i];
    if (account ? strcmp(ca->name, account) != 0 : !ca->enabled)
      continue;
    struct fetch_slot *slot = nowait ? NULL : malloc(sizeof *slot);
    if (!nowait && slot == NULL)
      continue;
    if (slot) {
      slot->f = f;
      slot->index = i;
    }
    if (sched_fetch(d->sched, ca->name, nowait ? NULL : on_fetch_done, slot) == 0) {
      f->pending++;
      jbuf_str(&started, ca->name);
    } else {
      free(slot);
    }
  }
  jbuf_arr_end(&started);
  jbuf_key(&started, "exit");
  jbuf_int(&started, 0);
  jbuf_obj_end(&started);
  if (nowait) {
    control_reply(req, started.err ? "{\"error\":\"out of memory\",\"exit\":75}" : started.data);
    free(f->results);
    free(f);
  } else if (--f->pending == 0) {
    fetch_reply(f);
  }
  jbuf_free(&started);
}

/* A reload reads and checks the file (stat, getpwnam): that runs on the thread
 * pool, and the new config is swapped in on the loop thread afterwards.
 * req is the control request to answer, or NULL for SIGHUP. */
struct reload_job {
  uv_work_t work;
  struct daemon *d;
  struct control_req *req;
  struct cfg *cfg;
  struct cfg_errors errs;
  int err;
};

static void reload_work(uv_work_t *w) {
  struct reload_job *job = w->data;
  job->err = load_config(job->d->config_path, &job->cfg, &job->errs);
}

/* b: the reply begun by reload_done (with what the reload changed). */
static void reload_reply(struct reload_job *job, struct jbuf *reply) {
  struct jbuf own, *bp = reply;
  if (bp == NULL) {
    jbuf_init(&own);
    jbuf_obj_begin(&own);
    bp = &own;
  }
#define b (*bp)
  jbuf_key(&b, "ok");
  jbuf_bool(&b, job->err == 0);
  if (job->err) {
    jbuf_key(&b, "errors");
    jbuf_arr_begin(&b);
    for (size_t i = 0; i < job->errs.count; i++)
      jbuf_str(&b, job->errs.lines[i]);
    jbuf_arr_end(&b);
  }
  jbuf_key(&b, "exit");
  jbuf_int(&b, job->err ? EX_CONFIG : 0);
  jbuf_obj_end(&b);
  control_reply(job->req, b.err ? "{\"error\":\"out of memory\",\"exit\":75}" : b.data);
  jbuf_free(&b);
#undef b
}

static void reload_done(uv_work_t *w, int status) {
  struct reload_job *job = w->data;
  struct daemon *d = job->d;
  struct jbuf reply, *rp = NULL;
  if (job->req) {
    jbuf_init(&reply);
    jbuf_obj_begin(&reply);
    rp = &reply;
  }
  if (job->err) {
    log_err("reload: %s is invalid; keeping the old configuration", d->config_path);
    for (size_t i = 0; i < job->errs.count; i++)
      log_err("%s", job->errs.lines[i]);
  } else if (d->stopping) {
    cfg_free(job->cfg);
  } else {
    if (strcmp(job->cfg->control_socket, sched_config(d->sched)->control_socket) != 0)
      log_warning("reload: control_socket changed; it takes effect at the next restart");
    log_info("reloaded %s", d->config_path);
    sched_reload(d->sched, job->cfg, rp);
  }
  if (job->req)
    reload_reply(job, rp);
  cfg_errors_free(&job->errs);
  free(job);
}

static void start_reload(struct daemon *d, struct control_req *req) {
  struct reload_job *job = calloc(1, sizeof *job);
  if (job != NULL) {
    job->d = d;
    job->req = req;
    job->work.data = job;
    if (uv_queue_work(d->loop, &job->work, reload_work, reload_done) == 0)
      return;
    free(job);
  }
  log_err("reload: cannot queue the work");
  if (req)
    reply_error(req, "cannot reload: out of resources", EX_TEMPFAIL);
}

static void handle_reload(struct daemon *d, struct control_req *req, int argc, char **argv) {
  start_reload(d, req);
}

/* `watch [ACCOUNT]': the reply, then the scheduler's events as they come
 * (doc/control-protocol.md), until the client hangs up or the daemon stops. */
static void handle_watch(struct daemon *d, struct control_req *req, int argc, char **argv) {
  if (argc > 2) {
    reply_error(req, "usage: watch [ACCOUNT]", EX_USAGE);
    return;
  }
  const char *account = argc == 2 ? argv[1] : NULL;
  if (account) {
    const struct cfg *cfg = sched_config(d->sched);
    size_t i = 0;
    while (i < cfg->account_count && strcmp(cfg->accounts[i].name, account) != 0)
      i++;
    if (i == cfg->account_count) {
      char msg[300];
      snprintf(msg, sizeof msg, "no account named %s", account);
      reply_error(req, msg, EX_USAGE);
      return;
    }
  }
  struct jbuf b;
  jbuf_init(&b);
  jbuf_obj_begin(&b);
  jbuf_key(&b, "watching");
  jbuf_str(&b, account);
  jbuf_key(&b, "exit");
  jbuf_int(&b, 0);
  jbuf_obj_end(&b);
  if (b.err)
    reply_error(req, "out of memory", EX_TEMPFAIL);
  else
    control_watch(req, account, b.data);
  jbuf_free(&b);
}

static void on_sched_event(void *data, const char *account, const char *json, int droppable) {
  struct daemon *d = data;
  control_broadcast(d->control, account, json, droppable != 0);
}

static const struct {
  const char *name;
  void (*handler)(struct daemon *d, struct control_req *req, int argc, char **argv);
} requests[] = {
    {"status", handle_status},
    {"fetch", handle_fetch},
    {"reload", handle_reload},
    {"watch", handle_watch},
};

static void on_request(void *data, struct control_req *req, const char *line) {
  struct daemon *d = data;
  char buf[4097];
  char *argv[16];
  int argc = 0;
  snprintf(buf, sizeof buf, "%s", line);
  for (char *save = NULL, *w = strtok_r(buf, " \t", &save); w && argc < 16;
       w = strtok_r(NULL, " \t", &save))
    argv[argc++] = w;
  if (argc == 0) {
    reply_error(req, "empty request", EX_USAGE);
    return;
  }
  for (size_t i = 0; i < sizeof requests / sizeof requests[0]; i++) {
    if (strcmp(argv[0], requests[i].name) == 0) {
      requests[i].handler(d, req, argc, argv);
      return;
    }
  }
  char msg[200];
  snprintf(msg, sizeof msg, "unknown request `%.100s'", argv[0]);
  reply_error(req, msg, EX_USAGE);
}

/* ---- lifecycle */

static void on_closed_handle(uv_handle_t *h) {
}

static void on_control_closed(void *data) {
  struct daemon *d = data;
  uv_close((uv_handle_t *)&d->sighup, on_closed_handle);
  uv_close((uv_handle_t *)&d->sigterm, on_closed_handle);
  uv_close((uv_handle_t *)&d->sigint, on_closed_handle);
  uv_close((uv_handle_t *)&d->watchdog, on_closed_handle);
  uv_close((uv_handle_t *)&d->status_timer, on_closed_handle);
}

static void on_sched_stopped(void *data) {
  struct daemon *d = data;
  control_close(d->control, on_control_closed, d);
}

static void begin_shutdown(struct daemon *d, const char *why) {
  if (d->stopping)
    return;
  d->stopping = 1;
  log_info("%s: stopping", why);
  /* Watchers learn why their stream is about to end. */
  char ev[160];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  snprintf(ev, sizeof ev, "{\"event\":\"stopping\",\"time\":\"%04d-%02d-%02dT%02d:%02d:%02dZ\"}",
           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  control_broadcast(d->control, NULL, ev, false);
  notify_send("STOPPING=1");
  sched_shutdown(d->sched, SHUTDOWN_GRACE_MS, on_sched_stopped, d);
}

static void on_signal(uv_signal_t *h, int signum) {
  struct daemon *d = h->data;
  if (signum == SIGHUP) {
    start_reload(d, NULL);
    return;
  }
  begin_shutdown(d, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void on_status_timer(uv_timer_t *t) {
  struct daemon *d = t->data;
  char summary[200], line[240];
  sched_summary(d->sched, summary, sizeof summary);
  snprintf(line, sizeof line, "STATUS=%s", summary);
  notify_send(line);
}

/* As root, state_dir holds one directory per user (USER/, theirs, made by
 * the worker before it drops privileges); the users' workers must be able
 * to pass through it, not to list or change it. */
static int prepare_state_dir(const char *dir) {
  int err = fs_mkdir_p(dir, 0700, NULL, 0);
  if (err || geteuid() != 0)
    return err;
  struct stat st;
  if (lstat(dir, &st) != 0)
    return -errno;
  if (!S_ISDIR(st.st_mode) || st.st_uid != 0)
    return -EPERM;
  if ((st.st_mode & 07777) != 0711 && chmod(dir, 0711) != 0)
    return -errno;
  return 0;
}

/* --prepare-state: what needs CAP_CHOWN, done once with it, so that the
 * sandboxed daemon can run without it.  A user's directory that cannot be
 * prepared is a warning: that user's runs fail and say why. */
static int prepare_user_state(const struct cfg *cfg) {
  int err = prepare_state_dir(cfg->state_dir);
  if (err) {
    log_err("cannot use state_dir %s: %s", cfg->state_dir, strerror(-err));
    return EX_CANTCREAT;
  }
  if (geteuid() != 0)
    return 0;
  for (size_t i = 0; i < cfg->account_count; i++) {
    const struct cfg_account *a = &cfg->accounts[i];
    char errbuf[512];
    if (a->user == NULL || !a->enabled)
      continue;
    if (privsep_user_state_dir(cfg->state_dir, a->user, (uid_t)a->uid, (gid_t)a->gid, a->name,
                               errbuf, sizeof errbuf) != 0)
      log_warning("%s: %s", a->name, errbuf);
  }
  return 0;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"config", required_argument, NULL, 'c'},
      {"check-config", no_argument, NULL, 'C'},
      {"prepare-state", no_argument, NULL, 'P'},
      {"verbose", no_argument, NULL, 'v'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0},
  };
  const char *config_arg = NULL;
  int check_only = 0, prepare_only = 0, verbose = 0, c;
  signal(SIGPIPE, SIG_IGN);
  log_init("pop3syncd", 0);
  /* The daemon starts itself this way for each run (worker.h). */
  if (argc == 2 && strcmp(argv[1], "--worker") == 0)
    return worker_main(WORKER_CHANNEL_FD);
  while ((c = getopt_long(argc, argv, "c:vh", opts, NULL)) != -1) {
    switch (c) {
    case 'c':
      config_arg = optarg;
      break;
    case 'C':
      check_only = 1;
      break;
    case 'P':
      prepare_only = 1;
      break;
    case 'v':
      verbose++;
      break;
    case 'h':
      fputs(usage, stdout);
      return 0;
    case 'V':
      printf("pop3syncd (%s) %s\n", PACKAGE_NAME, PACKAGE_VERSION);
      return 0;
    default:
      fputs(usage, stderr);
      return EX_USAGE;
    }
  }
  if (optind != argc) {
    fprintf(stderr, "pop3syncd: unexpected argument `%s'\n%s", argv[optind], usage);
    return EX_USAGE;
  }
  log_set_verbose(verbose);

  struct daemon d;
  memset(&d, 0, sizeof d);
  if (config_arg)
    snprintf(d.config_path, sizeof d.config_path, "%s", config_arg);
  else if (cfg_default_path(d.config_path, sizeof d.config_path) != 0) {
    fprintf(stderr, "pop3syncd: cannot work out the default config path; use -c FILE\n");
    return EX_CONFIG;
  }

  struct cfg *cfg;
  struct cfg_errors errs = {0};
  if (load_config(d.config_path, &cfg, &errs) != 0) {
    print_errors(&errs);
    cfg_errors_free(&errs);
    return EX_CONFIG;
  }
  if (check_only) {
    printf("%s: configuration is valid (%zu account%s)\n", cfg->path, cfg->account_count,
           cfg->account_count == 1 ? "" : "s");
    cfg_free(cfg);
    return 0;
  }
  if (prepare_only) {
    int rc = prepare_user_state(cfg);
    cfg_free(cfg);
    return rc;
  }
  /* From here on, keep the absolute path: the daemon may chdir later. */
  snprintf(d.config_path, sizeof d.config_path, "%s", cfg->path);

  int err = prepare_state_dir(cfg->state_dir);
  if (err) {
    log_err("cannot use state_dir %s: %s", cfg->state_dir, strerror(-err));
    cfg_free(cfg);
    return EX_CANTCREAT;
  }

  uv_loop_t loop;
  uv_loop_init(&loop);
  d.loop = &loop;
  d.started = time(NULL);

  char errbuf[512];
  static const struct control_ops cops = {.request = on_request};
  err = control_listen(&loop, cfg->control_socket, &cops, &d, &d.control, errbuf, sizeof errbuf);
  if (err) {
    log_err("%s", errbuf);
    cfg_free(cfg);
    uv_loop_close(&loop);
    return err == P3_ELOCKED ? EX_TEMPFAIL : EX_CANTCREAT;
  }
  err = sched_new(&loop, cfg, &d.sched);
  if (err) {
    log_err("out of memory");
    return EX_TEMPFAIL;
  }
  sched_set_event_cb(d.sched, on_sched_event, &d);

  uv_signal_init(&loop, &d.sighup);
  uv_signal_init(&loop, &d.sigterm);
  uv_signal_init(&loop, &d.sigint);
  d.sighup.data = d.sigterm.data = d.sigint.data = &d;
  uv_signal_start(&d.sighup, on_signal, SIGHUP);
  uv_signal_start(&d.sigterm, on_signal, SIGTERM);
  uv_signal_start(&d.sigint, on_signal, SIGINT);
  uv_timer_init(&loop, &d.watchdog);
  notify_watchdog_start(&loop, &d.watchdog);
  uv_timer_init(&loop, &d.status_timer);
  d.status_timer.data = &d;
  uv_timer_start(&d.status_timer, on_status_timer, 10000, 10000);
  uv_unref((uv_handle_t *)&d.status_timer);

  log_info("started: %s, %zu account%s, control socket %s", d.config_path,
           sched_config(d.sched)->account_count,
           sched_config(d.sched)->account_count == 1 ? "" : "s",
           sched_config(d.sched)->control_socket);
  notify_send("READY=1\nSTATUS=running");

  uv_run(&loop, UV_RUN_DEFAULT);

  sched_free(d.sched);
  uv_loop_close(&loop);
  log_info("stopped");
  return 0;
}

/* pop3: the command line.  `pop3 dl SPEC MAILDIR` fetches a mailbox once
 * with the same engine the daemon runs.  This file parses arguments, wires
 * things up and maps errors to exit statuses — nothing more. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <uv.h>

#include "cli.h"
#include "engine.h"
#include "errors.h"
#include "info.h"
#include "human.h"
#include "journal_path.h"
#include "log.h"
#include "maildir.h"
#include "progress.h"
#include "pwcmd.h"
#include "target.h"
#include "tls.h"

#define EX_USAGE 64

static const char dl_usage[] =
    "usage: pop3 [-v] dl [OPTIONS] [ssl:|tcp:|starttls:]SPEC MAILDIR\n"
    "\n"
    "Download every message of a POP3 mailbox into MAILDIR and delete it from\n"
    "the server once it is safely saved, pipelining all commands.\n"
    "\n"
    "SPEC is [user@][tcp_host!]server_hostname[:port] or a netrc account name.\n"
    "  ssl:       implicit TLS, port 995 (the default)\n"
    "  starttls:  cleartext upgraded with STLS, port 110\n"
    "  tcp:       cleartext, port 110 (for ssh port forwards)\n"
    "\n"
    "Options:\n"
    "  -v, --verbose              trace the protocol on stderr (never the password)\n"
    "      --ca-file FILE         trust the CAs in FILE instead of the system bundle\n"
    "      --tls-fingerprint sha256:HEX\n"
    "                             accept the server certificate with this SHA-256\n"
    "                             fingerprint instead of CA and name checks (repeatable)\n"
    "      --password-command CMD run CMD and use its first output line as password\n"
    "      --netrc FILE           read passwords from FILE (default $NETRC, ~/.netrc)\n"
    "      --timeout SECONDS      bound connect, TLS handshake, password command,\n"
    "                             each status line; bodies need 1 KiB/s (default 120)\n"
    "      --window N             RETR commands in flight (default 1000)\n"
    "      --state FILE           the UID state journal (default DIR/USER@HOST:PORT.state,\n"
    "                             DIR being " LOCALSTATEDIR "/lib/pop3sync/$USER when\n"
    "                             a root pop3syncd made it for you, else\n"
    "                             $XDG_STATE_HOME/pop3sync: the daemon's journal too)\n"
    "      --keep                 leave messages on the server; fetch only new UIDs\n"
    "      --keep-days N          with --keep: delete messages delivered over N days ago\n"
    "      --max-size SIZE        leave messages larger than SIZE (bytes, or with K, M,\n"
    "                             G: KiB, MiB, GiB) on the server; a later run with\n"
    "                             a higher limit fetches them\n"
    "      --no-utf8              never send UTF8, even when the server offers it\n"
    "      --auth METHOD          auto (default), user, apop, plain, login, xoauth2,\n"
    "                             oauthbearer (the password is then the access token)\n"
    "      --pipelining=on|auto|off\n"
    "                             on: always pipeline (default); auto: only when the\n"
    "                             server advertises PIPELINING; off: lock-step\n"
    "  -h, --help                 show this help\n"
    "\n"
    "Exit status: 0 ok, 64 usage, 69 connection/TLS, 73 Maildir, 75 temporary\n"
    "failure or partial run, 77 login refused, 78 password/netrc problem.\n";

static const char main_usage[] = "usage: pop3 [-v] SUBCOMMAND [ARGS...]\n"
                                 "       pop3 --version\n"
                                 "\n"
                                 "Subcommands:\n"
                                 "  dl [OPTIONS] SPEC MAILDIR   download a mailbox into a Maildir\n"
                                 "  info [OPTIONS] SPEC         show what a server offers, without "
                                 "logging in\n"
                                 "  help [SUBCOMMAND]           show help\n"
                                 "\n"
                                 "Options:\n"
                                 "  -v, --verbose               trace the protocol on stderr\n"
                                 "  -h, --help                  show this help\n"
                                 "      --version               show the version and exit\n"
                                 "\n"
                                 "Run `pop3 help dl' or `pop3 help info' for their options.\n";

struct dl_run {
  const char *spec_text;
  struct engine *engine;
  struct engine_result result;
  int have_result;
  uv_signal_t sigint, sigterm;
  uv_timer_t progress;
  int progress_on;
  int show_listing; /* say what the listing holds (a terminal, or -v) */
  int listed;       /* the listing came: progress has a total */
  int stopping;
  struct progress_rate rate;
  double last_rate;
  int have_rate;
};

static void on_trace(void *data, const char *line) {
  fprintf(stderr, "pop3: %s\n", line);
}

static void on_progress(uv_timer_t *t) {
  struct dl_run *run = t->data;
  size_t done, total;
  uint64_t bytes;
  if (!run->listed)
    return; /* nothing to count yet */
  engine_progress(run->engine, &done, &total, &bytes);
  double rate;
  if (progress_rate_tick(&run->rate, uv_now(t->loop), bytes, &rate)) {
    run->last_rate = rate;
    run->have_rate = 1;
  }
  char b1[32], b2[32];
  human_bytes(bytes, b1, sizeof b1);
  if (run->have_rate)
    fprintf(stderr, "\r\033[K%zu/%zu messages, %s, %s/s", done, total, b1,
            human_bytes((uint64_t)run->last_rate, b2, sizeof b2));
  else
    fprintf(stderr, "\r\033[K%zu/%zu messages, %s", done, total, b1);
  fflush(stderr);
  run->progress_on = 1;
}

/* The listing is known: say what it holds, and start measuring the rate
 * from here (engine_options.listed). */
static void on_listed(void *data, size_t messages, uint64_t bytes) {
  struct dl_run *run = data;
  uint64_t done_bytes;
  size_t done, total;
  run->listed = 1;
  engine_progress(run->engine, &done, &total, &done_bytes);
  progress_rate_start(&run->rate, uv_now(run->progress.loop), done_bytes);
  if (!run->show_listing)
    return;
  char b[32];
  fprintf(stderr, "%spop3: %s: %zu message%s (%s) on the server\n",
          run->progress_on ? "\r\033[K" : "", run->spec_text, messages, messages == 1 ? "" : "s",
          human_bytes(bytes, b, sizeof b));
  fflush(stderr);
}

static void on_done(struct engine *e, const struct engine_result *r, void *data) {
  struct dl_run *run = data;
  run->result = *r;
  run->have_result = 1;
  uv_close((uv_handle_t *)&run->sigint, NULL);
  uv_close((uv_handle_t *)&run->sigterm, NULL);
  uv_close((uv_handle_t *)&run->progress, NULL);
}

static void on_signal(uv_signal_t *h, int signum) {
  struct dl_run *run = h->data;
  if (run->stopping++) {
    /* A second ^C: stop at once; nothing is lost, the server keeps the rest. */
    engine_stop(run->engine, 0);
    return;
  }
  fprintf(stderr, "%spop3: %s: stopping after the messages in flight\n",
          run->progress_on ? "\n" : "", run->spec_text);
  engine_stop(run->engine, 8000);
}

/* The --password-command phase: the command runs as a child on the loop,
 * bounded by the run's timeout; SIGINT/SIGTERM cancel it. */
struct pw_run {
  struct pwcmd *pwcmd; /* NULL once done */
  uv_signal_t sigint, sigterm;
  int err;
  char *password; /* owned until handed to the target */
  char message[512];
};

static void on_password(void *data, int err, char *password, const char *message) {
  struct pw_run *pr = data;
  pr->pwcmd = NULL;
  pr->err = err;
  pr->password = password;
  snprintf(pr->message, sizeof pr->message, "%s", message);
  uv_close((uv_handle_t *)&pr->sigint, NULL);
  uv_close((uv_handle_t *)&pr->sigterm, NULL);
}

static void on_password_signal(uv_signal_t *h, int signum) {
  struct pw_run *pr = h->data;
  (void)signum;
  if (pr->pwcmd)
    pwcmd_cancel(pr->pwcmd);
}

/* Runs cmd on loop (a prompt on our terminal is allowed when stdin is one)
 * and stores its first output line in t->password.  Returns 0, or P3_EPWCMD /
 * P3_ETIMEOUT / P3_ECANCELED / a libuv error with errbuf naming the command. */
static int dl_password_command(uv_loop_t *loop, const char *cmd, unsigned timeout_s,
                               struct p3_target *t, char *errbuf, size_t errlen) {
  struct pw_run pr;
  memset(&pr, 0, sizeof pr);
  uv_signal_init(loop, &pr.sigint);
  uv_signal_init(loop, &pr.sigterm);
  pr.sigint.data = pr.sigterm.data = &pr;
  uv_signal_start(&pr.sigint, on_password_signal, SIGINT);
  uv_signal_start(&pr.sigterm, on_password_signal, SIGTERM);
  int err = pwcmd_start(loop, cmd, timeout_s, isatty(0) ? PWCMD_TTY : PWCMD_OWN_GROUP, on_password,
                        &pr, &pr.pwcmd);
  if (err) {
    p3_set_error(pr.message, sizeof pr.message, "password command `%s' could not be started: %s",
                 cmd, uv_strerror(err));
    pr.err = P3_EPWCMD;
    uv_close((uv_handle_t *)&pr.sigint, NULL);
    uv_close((uv_handle_t *)&pr.sigterm, NULL);
  }
  uv_run(loop, UV_RUN_DEFAULT); /* until the command is reaped and the signals closed */
  if (pr.err)
    return p3_error(errbuf, errlen, pr.err, "%s", pr.message);
  t->password = pr.password;
  return 0;
}

/* The terminal prompt (as fetchmail and mpop ask): echo is off only while
 * the answer is typed, and a signal that ends us turns it back on first. */
static int prompt_fd = -1;
static struct termios prompt_saved;
static const int prompt_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

static void prompt_on_signal(int signum) {
  int saved = errno;
  if (prompt_fd >= 0)
    tcsetattr(prompt_fd, TCSAFLUSH, &prompt_saved); /* async-signal-safe */
  signal(signum, SIG_DFL);
  raise(signum); /* dies as it would have without us */
  errno = saved;
}

/* Asks "Password for WHO: " on /dev/tty without echo and reads one line.
 * Returns 0 and *password_r (malloc'd), or P3_ENOPASS: for an empty answer
 * or end of input with errbuf set, and with errbuf untouched (it says why
 * the netrc had none) when there is no terminal to ask on. */
static int dl_prompt_password(const char *who, char **password_r, char *errbuf, size_t errlen) {
  char line[1024];
  size_t n = 0;
  int err = 0;
  struct termios quiet;
  struct sigaction sa, old[sizeof prompt_signals / sizeof prompt_signals[0]];
  int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (fd < 0 || tcgetattr(fd, &prompt_saved) != 0) {
    if (fd >= 0)
      close(fd);
    return P3_ENOPASS;
  }
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = prompt_on_signal;
  sigemptyset(&sa.sa_mask);
  prompt_fd = fd;
  for (size_t i = 0; i < sizeof prompt_signals / sizeof prompt_signals[0]; i++)
    sigaction(prompt_signals[i], &sa, &old[i]);
  quiet = prompt_saved;
  quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK);
  quiet.c_lflag |= ECHONL | ICANON;
  tcsetattr(fd, TCSAFLUSH, &quiet); /* before the prompt: what is typed after it is kept */
  dprintf(fd, "Password for %s: ", who);
  for (;;) {
    char c;
    ssize_t r = read(fd, &c, 1);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0 || c == '\n')
      break;
    if (n + 1 < sizeof line)
      line[n++] = c;
  }
  line[n] = '\0';
  if (n > 0 && line[n - 1] == '\r')
    line[--n] = '\0';
  tcsetattr(fd, TCSAFLUSH, &prompt_saved);
  prompt_fd = -1;
  for (size_t i = 0; i < sizeof prompt_signals / sizeof prompt_signals[0]; i++)
    sigaction(prompt_signals[i], &old[i], NULL);
  close(fd);
  if (n == 0)
    err = p3_error(errbuf, errlen, P3_ENOPASS, "no password given for %s", who);
  else if ((*password_r = strdup(line)) == NULL)
    err = p3_error(errbuf, errlen, -ENOMEM, "out of memory");
  explicit_bzero(line, sizeof line);
  return err;
}

#define usage_error(...) cli_usage_error("pop3", "pop3 help dl", __VA_ARGS__)

/* The journal when --state is not given (journal_path.h): the mailbox's
 * USER@TCP_HOST:PORT.state in LOCALSTATEDIR/lib/pop3sync/$USER when a root
 * pop3syncd made that directory for us (its journals are the daemon's), else
 * in $XDG_STATE_HOME/pop3sync, which a pop3syncd run by the user uses too.
 * When the shared directory is used, a journal of this mailbox left in the
 * personal one by earlier runs is moved there first (never replacing one).
 * Returns 0, or the exit status after saying why on stderr. */
static int dl_state_path(const char *spec_text, const struct p3_spec *spec, char *buf, size_t len) {
  char dir[PATH_MAX], personal[PATH_MAX], old[PATH_MAX], msg[3 * PATH_MAX];
  int shared;
  if (journal_user_dir(NULL, dir, sizeof dir, &shared) != 0 ||
      journal_path(dir, spec, buf, len) != 0) {
    fprintf(stderr, "pop3: %s: cannot work out the state file path; use --state FILE\n", spec_text);
    return 78;
  }
  if (!shared || journal_personal_dir(personal, sizeof personal) != 0 ||
      journal_same_dir(personal, dir) || journal_path(personal, spec, old, sizeof old) != 0)
    return 0;
  int r = journal_migrate(old, buf, msg, sizeof msg);
  if (r == JOURNAL_MOVED)
    fprintf(stderr, "pop3: %s: %s\n", spec_text, msg);
  else if (r == JOURNAL_KEPT)
    fprintf(stderr, "pop3: %s: warning: %s\n", spec_text, msg);
  else if (r < 0) {
    fprintf(stderr, "pop3: %s: %s\n", spec_text, msg);
    return p3_exit_status(r == P3_ELOCKED ? r : P3_ESTATE);
  }
  return 0;
}

/* The last line of every failed run, after the sentences that say why. */
static void dl_failed(const char *spec_text, const struct engine_result *r) {
  size_t done = r ? r->delivered : 0;
  size_t total = r && r->listed > r->already ? r->listed - r->already : 0;
  fprintf(stderr, "pop3: %s: failed after %zu of %zu messages (%" PRIu64 " bytes saved)\n",
          spec_text, done, total < done ? done : total, r ? r->bytes : 0);
}

/* Says how the run went and returns the exit status.  The summary goes to
 * stdout only when the run did all it had to (exit 0); otherwise stderr gets
 * one sentence per reason, then dl_failed's line, and stdout nothing, so a
 * script that reads stdout cannot take a failure for a success. */
static int dl_report(const char *spec_text, const char *state, const char *maildir, int verbose,
                     const struct engine_result *r) {
  /* The engine decides: messages left behind make the run partial (73 for
   * lack of space, 75 for stuck messages). */
  int status = engine_result_exit_code(r);
  char over[128];
  engine_result_over_size_text(r, over, sizeof over);
  if (status == 0) {
    char size[48], took[32];
    if (r->bytes < 1024)
      snprintf(size, sizeof size, "%" PRIu64 " bytes", r->bytes);
    else {
      char h[32];
      snprintf(size, sizeof size, "%s (%" PRIu64 " bytes)", human_bytes(r->bytes, h, sizeof h),
               r->bytes);
    }
    human_duration(r->seconds > 0 ? (uint64_t)(r->seconds * 1000 + 0.5) : 0, took, sizeof took);
    printf("%s: %zu messages, %s in %s\n", spec_text, r->delivered, size, took);
    /* Left for its size by choice: said with the summary, not an error. */
    if (over[0])
      printf("%s: %s\n", spec_text, over);
    fflush(stdout);
  } else if (over[0]) {
    fprintf(stderr, "pop3: %s: %s\n", spec_text, over);
  }
  if (r->err)
    fprintf(stderr, "pop3: %s: %s\n", spec_text, r->message);
  if (verbose && !r->uidl && r->listed)
    fprintf(stderr, "pop3: %s: the server has no UIDL: no UID state was kept\n", spec_text);
  if (verbose) {
    /* Counted waits (engine.h), not timed: the same for every run alike. */
    if (r->resumed_tls)
      fprintf(stderr, "pop3: %s: TLS session resumed\n", spec_text);
    fprintf(stderr, "pop3: %s: %u round trip%s\n", spec_text, r->round_trips,
            r->round_trips == 1 ? "" : "s");
  }
  if (r->corrupt_lines)
    fprintf(stderr,
            "pop3: %s: %s: %zu corrupt lines ignored (their messages may be fetched "
            "again)\n",
            spec_text, state, r->corrupt_lines);
  for (size_t i = 0; i < r->stuck_count; i++) {
    const struct engine_stuck *st = &r->stuck[i];
    fprintf(stderr,
            "pop3: %s: message %lu (UID %s, %" PRIu64 " bytes) stuck after %u attempts, "
            "left on the server: %s\n",
            spec_text, st->number, st->uid, st->size, st->attempts,
            st->last_error[0] ? st->last_error : "unknown error");
  }
  if (r->left_for_space) {
    char h[32];
    fprintf(stderr, "pop3: %s: %zu messages (%s) left on the server: not enough disk space in %s\n",
            spec_text, r->left_for_space, human_bytes(r->left_for_space_bytes, h, sizeof h),
            maildir);
  }
  if (status != 0)
    dl_failed(spec_text, r);
  return status;
}

/* A run that ends before any session: the sentence, the summary, cleanup. */
static int dl_abort(const char *spec_text, const char *errbuf, int err, struct p3_target *target,
                    uv_loop_t *loop) {
  fprintf(stderr, "pop3: %s: %s\n", spec_text, errbuf);
  dl_failed(spec_text, NULL);
  target_deinit(target);
  uv_loop_close(loop);
  return p3_exit_status(err);
}

static int cmd_dl(int argc, char **argv, int verbose) {
  enum {
    OPT_CA = 256,
    OPT_PIN,
    OPT_PWCMD,
    OPT_NETRC,
    OPT_TIMEOUT,
    OPT_WINDOW,
    OPT_PIPE,
    OPT_STATE,
    OPT_KEEP,
    OPT_KEEP_DAYS,
    OPT_NO_UTF8,
    OPT_AUTH,
    OPT_MAX_SIZE
  };
  static const struct option opts[] = {
      {"verbose", no_argument, NULL, 'v'},
      {"help", no_argument, NULL, 'h'},
      {"ca-file", required_argument, NULL, OPT_CA},
      {"tls-fingerprint", required_argument, NULL, OPT_PIN},
      {"password-command", required_argument, NULL, OPT_PWCMD},
      {"netrc", required_argument, NULL, OPT_NETRC},
      {"timeout", required_argument, NULL, OPT_TIMEOUT},
      {"window", required_argument, NULL, OPT_WINDOW},
      {"pipelining", required_argument, NULL, OPT_PIPE},
      {"state", required_argument, NULL, OPT_STATE},
      {"keep", no_argument, NULL, OPT_KEEP},
      {"keep-days", required_argument, NULL, OPT_KEEP_DAYS},
      {"no-utf8", no_argument, NULL, OPT_NO_UTF8},
      {"auth", required_argument, NULL, OPT_AUTH},
      {"max-size", required_argument, NULL, OPT_MAX_SIZE},
      {NULL, 0, NULL, 0},
  };
  struct engine_options eo;
  memset(&eo, 0, sizeof eo);
  eo.pipelining = SESSION_PIPELINING_ON;
  eo.keep_days = -1;
  const char *pwcmd = NULL, *netrc = NULL, *state = NULL;
  unsigned long v;
  int c;
  optind = 0; /* GNU: reinitialise, and permute so options may follow operands */
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":vh", opts, NULL)) != -1) {
    switch (c) {
    case 'v':
      verbose++;
      break;
    case 'h':
      fputs(dl_usage, stdout);
      return 0;
    case OPT_CA:
      eo.ca_file = optarg;
      break;
    case OPT_PIN:
      if (cli_option_pin("pop3", "pop3 help dl", optarg, eo.pins, &eo.pin_count) != 0)
        return EX_USAGE;
      break;
    case OPT_PWCMD:
      pwcmd = optarg;
      break;
    case OPT_NETRC:
      netrc = optarg;
      break;
    case OPT_TIMEOUT:
      if (cli_option_timeout("pop3", "pop3 help dl", optarg, &eo.timeout_s) != 0)
        return EX_USAGE;
      break;
    case OPT_WINDOW:
      if (cli_parse_uint(optarg, 1, SESSION_MAX_WINDOW, &v) != 0)
        return usage_error("--window `%s' is not a number from 1 to 100000", optarg);
      eo.window = (unsigned)v;
      break;
    case OPT_PIPE:
      if (strcmp(optarg, "on") == 0)
        eo.pipelining = SESSION_PIPELINING_ON;
      else if (strcmp(optarg, "auto") == 0)
        eo.pipelining = SESSION_PIPELINING_AUTO;
      else if (strcmp(optarg, "off") == 0)
        eo.pipelining = SESSION_PIPELINING_OFF;
      else
        return usage_error("--pipelining must be on, auto or off, not `%s'", optarg);
      break;
    case OPT_STATE:
      state = optarg;
      break;
    case OPT_KEEP:
      eo.keep = 1;
      break;
    case OPT_NO_UTF8:
      eo.no_utf8 = 1;
      break;
    case OPT_AUTH:
      if (session_auth_parse(optarg, &eo.auth) != 0)
        return usage_error("--auth `%s': use auto, user, apop, plain, login, xoauth2 or "
                           "oauthbearer",
                           optarg);
      break;
    case OPT_KEEP_DAYS:
      if (cli_parse_uint(optarg, 0, 100000, &v) != 0)
        return usage_error("--keep-days `%s' is not a number of days", optarg);
      eo.keep_days = (int)v;
      break;
    case OPT_MAX_SIZE:
      if (human_parse_size(optarg, &eo.max_size) != 0)
        return usage_error("--max-size `%s' is not a size: a positive number of bytes, or "
                           "with K, M or G (KiB, MiB, GiB), e.g. 10M",
                           optarg);
      break;
    case ':':
      return usage_error("option `%s' needs a value", argv[optind - 1]);
    default:
      return usage_error("unknown option `%s'", argv[optind - 1]);
    }
  }
  if (argc - optind == 0)
    return usage_error("%s", "missing SPEC and MAILDIR");
  if (argc - optind == 1)
    return usage_error("%s", "missing MAILDIR");
  if (argc - optind > 2)
    return usage_error("unexpected argument `%s' after MAILDIR", argv[optind + 2]);
  const char *spec_text = argv[optind];
  const char *maildir = argv[optind + 1];
  log_set_verbose(verbose);
  /* Root never works in a user's Maildir (not even to chown): 77. */
  char owner_err[PATH_MAX + 256];
  int owner_rc = maildir_check_owner(maildir, owner_err, sizeof owner_err);
  if (owner_rc) {
    fprintf(stderr, "pop3: %s\n", owner_err);
    dl_failed(spec_text, NULL);
    return p3_exit_status(owner_rc);
  }

  char errbuf[512];
  struct p3_target target;
  memset(&target, 0, sizeof target);
  int err = target_resolve(spec_text, netrc, &target, errbuf, sizeof errbuf);
  /* A password from a netrc account entry wins; else the command, run on the
   * loop below; else the netrc machine entries. */
  if (err == 0 && pwcmd == NULL)
    err = target_password(&target, netrc, errbuf, sizeof errbuf);
  /* Nothing in the netrc and no command: a person at a terminal is asked. */
  if (err == P3_ENOPASS && pwcmd == NULL && isatty(0)) {
    char who[P3_USER_MAX + P3_HOST_MAX + 2];
    const char *host = target.spec.tls_name[0] ? target.spec.tls_name : target.spec.tcp_host;
    snprintf(who, sizeof who, "%s@%s", target.spec.user, host);
    err = dl_prompt_password(who, &target.password, errbuf, sizeof errbuf);
  }
  if (err) {
    fprintf(stderr, "pop3: %s: %s\n", spec_text, errbuf);
    dl_failed(spec_text, NULL);
    target_deinit(&target);
    return p3_exit_status(err);
  }

  if (eo.keep_days >= 0 && !eo.keep) {
    target_deinit(&target);
    return usage_error("%s", "--keep-days needs --keep");
  }
  char state_buf[PATH_MAX];
  if (state == NULL) {
    int rc = dl_state_path(spec_text, &target.spec, state_buf, sizeof state_buf);
    if (rc) {
      dl_failed(spec_text, NULL);
      target_deinit(&target);
      return rc;
    }
    state = state_buf;
  }
  log_debug("%s: state journal %s", spec_text, state);
  eo.state_path = state;
  eo.who = "pop3 dl";

  uv_loop_t loop;
  uv_loop_init(&loop);
  if (pwcmd != NULL && target.password == NULL) {
    err = dl_password_command(&loop, pwcmd, eo.timeout_s ? eo.timeout_s : 120, &target, errbuf,
                              sizeof errbuf);
    if (err) {
      return dl_abort(spec_text, errbuf, err, &target, &loop);
    }
  }
  struct dl_run run;
  /* An OAuth token the server refused is often just expired: the token
   * command is run once more (helpers refresh it when called again) and the
   * login retried once, in a fresh session. */
  for (int attempt = 0;; attempt++) {
    memset(&run, 0, sizeof run);
    run.spec_text = spec_text;
    eo.target = &target;
    eo.maildir = maildir;
    if (verbose) {
      eo.trace = on_trace;
      eo.trace_data = &run;
    }
    eo.listed = on_listed;
    run.show_listing = isatty(2) || verbose;
    err = engine_start(&loop, &eo, on_done, &run, &run.engine, errbuf, sizeof errbuf);
    if (err) {
      return dl_abort(spec_text, errbuf, err, &target, &loop);
    }
    uv_signal_init(&loop, &run.sigint);
    uv_signal_init(&loop, &run.sigterm);
    run.sigint.data = run.sigterm.data = &run;
    uv_signal_start(&run.sigint, on_signal, SIGINT);
    uv_signal_start(&run.sigterm, on_signal, SIGTERM);
    uv_timer_init(&loop, &run.progress);
    run.progress.data = &run;
    /* A live progress line only for a person watching, never in logs. */
    if (isatty(2) && !verbose)
      uv_timer_start(&run.progress, on_progress, 500, 500);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (run.progress_on)
      fputs("\r\033[K", stderr);
    if (run.result.err != P3_EOAUTH || pwcmd == NULL || run.stopping)
      break;
    if (attempt == 1) {
      engine_result_token_refreshed(&run.result);
      break;
    }
    if (verbose)
      fprintf(stderr,
              "pop3: %s: the server refused the token (%s); running the token command "
              "again\n",
              spec_text, run.result.message);
    engine_free(run.engine);
    if (target.password) {
      explicit_bzero(target.password, strlen(target.password));
      free(target.password);
      target.password = NULL;
    }
    err = dl_password_command(&loop, pwcmd, eo.timeout_s ? eo.timeout_s : 120, &target, errbuf,
                              sizeof errbuf);
    if (err) {
      return dl_abort(spec_text, errbuf, err, &target, &loop);
    }
  }

  int status = dl_report(spec_text, state, maildir, verbose, &run.result);
  engine_free(run.engine);
  target_deinit(&target);
  uv_loop_close(&loop);
  return status;
}

int main(int argc, char **argv) {
  int verbose = 0;
  int i = 1;
  signal(SIGPIPE, SIG_IGN);
  log_init("pop3", 0);
  for (; i < argc && argv[i][0] == '-'; i++) {
    if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--verbose") == 0)
      verbose++;
    else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      fputs(main_usage, stdout);
      return 0;
    } else if (strcmp(argv[i], "--version") == 0) {
      printf("pop3 (%s) %s\n", PACKAGE_NAME, PACKAGE_VERSION);
      return 0;
    } else {
      fprintf(stderr, "pop3: unknown option `%s'\n%s", argv[i], main_usage);
      return EX_USAGE;
    }
  }
  if (i == argc) {
    fputs(main_usage, stderr);
    return EX_USAGE;
  }
  const char *sub = argv[i];
  if (strcmp(sub, "dl") == 0)
    return cmd_dl(argc - i, argv + i, verbose);
  if (strcmp(sub, "info") == 0)
    return info_main(argc - i, argv + i, verbose);
  if (strcmp(sub, "help") == 0) {
    if (i + 1 < argc && strcmp(argv[i + 1], "dl") == 0)
      fputs(dl_usage, stdout);
    else if (i + 1 < argc && strcmp(argv[i + 1], "info") == 0)
      fputs(info_usage, stdout);
    else if (i + 1 < argc) {
      fprintf(stderr, "pop3: no such subcommand `%s'\n%s", argv[i + 1], main_usage);
      return EX_USAGE;
    } else {
      fputs(main_usage, stdout);
      fputs("\n", stdout);
      fputs(dl_usage, stdout);
      fputs("\n", stdout);
      fputs(info_usage, stdout);
    }
    return 0;
  }
  fprintf(stderr, "pop3: unknown subcommand `%s'\n%s", sub, main_usage);
  return EX_USAGE;
}

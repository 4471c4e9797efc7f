/* pop3 info: the wiring of probe.h to the loop and the transport, and the
 * report.  The certificate is judged but never refused (report_only): an
 * untrusted one is shown as such, which is the point of the command. */
#include "config.h"

#include "info.h"

#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "conn.h"
#include "errors.h"
#include "log.h"
#include "probe.h"
#include "spec.h"
#include "target.h"
#include "tls.h"

#define EX_USAGE 64
#define INFO_DEFAULT_TIMEOUT_S 30

const char info_usage[] =
    "usage: pop3 [-v] info [OPTIONS] [ssl:|tcp:|starttls:]SPEC\n"
    "\n"
    "Connect to a POP3 server and show what it offers: the greeting, the\n"
    "capabilities (before and after STLS), the login methods, and for TLS the\n"
    "protocol, the cipher suite and the certificate (subject, issuer, validity,\n"
    "SHA-256 fingerprint, trusted or not).  Then QUIT without logging in: no\n"
    "user name or password is sent, so none is needed.\n"
    "\n"
    "SPEC is as for dl: [user@][tcp_host!]server_hostname[:port] or a netrc\n"
    "account name (only its host and port are used).\n"
    "\n"
    "Options:\n"
    "  -v, --verbose              show addresses tried and commands sent on stderr\n"
    "      --ca-file FILE         judge the certificate by the CAs in FILE, not by\n"
    "                             the system bundle\n"
    "      --tls-fingerprint sha256:HEX\n"
    "                             judge it by this SHA-256 fingerprint instead of CA\n"
    "                             and name checks (repeatable)\n"
    "      --netrc FILE           where to look up a netrc account name (default\n"
    "                             $NETRC, ~/.netrc)\n"
    "      --timeout SECONDS      bound connect, TLS handshake and each reply\n"
    "                             (default 30)\n"
    "  -h, --help                 show this help\n"
    "\n"
    "Exit status: 0 the server was reached and what it said is shown (an untrusted\n"
    "certificate included), 64 usage, 69 no connection or TLS handshake (or STLS\n"
    "refused), 75 the server stopped answering or made no sense midway.\n";

struct info_run {
  const char *spec_text;
  struct p3_spec spec;
  int pinned; /* --tls-fingerprint given */
  int verbose;
  struct conn conn;
  struct probe probe;
  int reached; /* TCP connected */
  int secured; /* a TLS handshake completed */
  char addr[64];
  unsigned addr_port;
  char tls_version[32];
  char tls_suite[128];
  struct p3_tls_peer peer;
  int have_peer;
  int err;
  char errmsg[1024];
};

#define usage_error(...) cli_usage_error("pop3", "pop3 help info", __VA_ARGS__)

/* Ends the run: the first error wins; closing is idempotent. */
static void finish(struct info_run *run, int err, const char *detail) {
  if (err && !run->err) {
    run->err = err;
    snprintf(run->errmsg, sizeof run->errmsg, "%s", detail && detail[0] ? detail : "");
  }
  conn_close(&run->conn);
}

static void record_tls(struct info_run *run) {
  const struct p3_tls *t = conn_tls(&run->conn);
  if (t == NULL)
    return;
  run->secured = 1;
  snprintf(run->tls_version, sizeof run->tls_version, "%s", tls_version(t));
  snprintf(run->tls_suite, sizeof run->tls_suite, "%s", tls_ciphersuite(t));
  run->have_peer = tls_peer(t, &run->peer) == 0;
}

static void send_command(struct info_run *run) {
  const char *cmd = probe_command(&run->probe);
  size_t len = strlen(cmd);
  char *buf = malloc(len);
  if (buf == NULL) {
    finish(run, -ENOMEM, "out of memory");
    return;
  }
  memcpy(buf, cmd, len);
  if (run->verbose)
    fprintf(stderr, "pop3: > %.*s\n", (int)(len - 2), cmd);
  int err = conn_write(&run->conn, buf, len);
  if (err)
    finish(run, err, "sending to the server failed");
}

/* Tells the transport what we wait for (a line within the timeout, or
 * nothing while a handshake runs). */
static void expect(struct info_run *run) {
  conn_expect(&run->conn, probe_waiting(&run->probe) ? PROGRESS_LINE : PROGRESS_IDLE,
              run->probe.lines, 0);
}

static void on_connected(void *data) {
  struct info_run *run = data;
  run->reached = 1;
  if (conn_peer_name(&run->conn, run->addr, sizeof run->addr, &run->addr_port) != 0)
    run->addr[0] = '\0';
  record_tls(run); /* implicit TLS: the handshake is done */
  expect(run);
}

static void on_data(void *data, const char *buf, size_t len) {
  struct info_run *run = data;
  size_t off = 0;
  while (off < len && !run->err) {
    size_t used;
    int ev = probe_feed(&run->probe, buf + off, len - off, &used);
    off += used;
    if (ev < 0) {
      finish(run, ev, run->probe.error);
      return;
    }
    switch (ev) {
    case PROBE_SEND:
      send_command(run);
      break;
    case PROBE_START_TLS:
      /* RFC 2595: anything after STLS's +OK in plaintext is an injection. */
      if (off < len) {
        finish(run, P3_EPROTO, "the server sent data after accepting STLS, before the handshake");
        return;
      }
      if (conn_start_tls(&run->conn) != 0 && !run->err)
        finish(run, P3_ETLS, "cannot start the TLS handshake");
      return; /* conn reports a failure through on_error */
    case PROBE_DONE:
      finish(run, 0, NULL);
      return;
    default:
      break;
    }
  }
  if (!run->err)
    expect(run);
}

static void on_tls_ready(void *data) {
  struct info_run *run = data;
  record_tls(run);
  if (probe_tls_ready(&run->probe) == PROBE_SEND)
    send_command(run);
  if (!run->err)
    expect(run);
}

static void on_error(void *data, int err, const char *detail) {
  struct info_run *run = data;
  /* A server that hangs up on QUIT without answering it is done too. */
  if (err == P3_EEOF && probe_quitting(&run->probe))
    err = 0;
  finish(run, err, detail);
}

static void on_closed(void *data) {
  (void)data;
}

static void on_note(void *data, const char *line) {
  (void)data;
  fprintf(stderr, "pop3: %s\n", line);
}

static void print_capa(const char *label, const struct probe_capa *c) {
  if (c->state == 1)
    printf("%s: %s\n", label, c->text[0] ? c->text : "(an empty list)");
  else if (c->state == -1)
    printf("%s: none (CAPA not supported)\n", label);
}

static void print_tls(const struct info_run *run) {
  const struct p3_tls_peer *p = &run->peer;
  char clean[sizeof p->reason + 16];
  if (!run->secured)
    return;
  printf("tls: %s, %s\n", run->tls_version, run->tls_suite);
  if (!run->have_peer)
    return;
  if (p->verdict == 0 && run->spec.tls_name[0] == '\0' && !run->pinned) {
    /* Only the chain was checked: dl refuses this (P3_ETLSIP). */
    printf("certificate: NOT trusted: no host name to check it against (%s is an IP address): "
           "write tcp_host!name or pin it with --tls-fingerprint\n",
           run->spec.tcp_host);
  } else if (p->verdict == 0) {
    printf("certificate: trusted%s\n", p->pinned ? " (pinned fingerprint)" : "");
  } else {
    printf("certificate: NOT trusted: %s\n",
           probe_clean(p->reason, strlen(p->reason), clean, sizeof clean));
  }
  if (!p->have_cert)
    return;
  printf("certificate subject: %s\n",
         probe_clean(p->subject, strlen(p->subject), clean, sizeof clean));
  printf("certificate issuer: %s\n",
         probe_clean(p->issuer, strlen(p->issuer), clean, sizeof clean));
  printf("certificate valid: %s to %s\n", p->valid_from, p->valid_to);
  printf("certificate fingerprint: %s\n", p->fingerprint);
}

/* What was seen, in the order it happened; only what is known. */
static void print_report(const struct info_run *run) {
  const struct probe *pr = &run->probe;
  const struct p3_spec *s = &run->spec;
  const char *name = s->tls_name[0] ? s->tls_name : s->tcp_host;
  char hp[P3_HOST_MAX + 16], methods[512];
  spec_host_port(name, s->port, hp, sizeof hp);
  printf("server: %s (%s)", hp, spec_mode_name(s->mode));
  if (strcmp(name, s->tcp_host) != 0)
    printf(" via %s", s->tcp_host);
  printf("\n");
  if (!run->reached)
    return;
  if (run->addr[0])
    printf("connected to: %s port %u\n", run->addr, run->addr_port);
  if (s->mode == P3_TLS_IMPLICIT)
    print_tls(run);
  if (pr->greeting[0])
    printf("greeting: %s\n", pr->greeting);
  if (s->mode == P3_TLS_STARTTLS) {
    print_capa("capabilities (before TLS)", &pr->before);
    if (pr->stls_refused[0])
      printf("tls: none: %s\n", pr->stls_refused);
    print_tls(run);
  }
  print_capa("capabilities", &pr->after);
  if (pr->greeting_ok && (pr->after.state != 0 || pr->before.state != 0)) {
    probe_login_methods(pr, methods, sizeof methods);
    printf("login methods: %s\n", methods);
  }
}

/* The exit status, and the sentence on stderr that explains a failure. */
static int report_status(const struct info_run *run) {
  int err = run->err, status;
  if (err == 0 && run->spec.mode == P3_TLS_STARTTLS && run->probe.greeting_ok && !run->secured) {
    fprintf(stderr, "pop3: %s: %s\n", run->spec_text,
            run->probe.stls_refused[0] ? run->probe.stls_refused : "no TLS");
    return p3_exit_status(P3_ENOSTLS);
  }
  if (err == 0)
    return 0;
  const char *words = p3_strerror(err);
  if (run->errmsg[0])
    fprintf(stderr, "pop3: %s: %s: %s\n", run->spec_text, words, run->errmsg);
  else
    fprintf(stderr, "pop3: %s: %s\n", run->spec_text, words);
  /* Not connected, or the TLS handshake (implicit or after STLS) did not
   * complete: 69, whatever the cause (a timeout included). */
  int tls_pending = run->spec.mode == P3_TLS_IMPLICIT || run->probe.tls;
  if (!run->reached || (tls_pending && !run->secured))
    return 69;
  status = p3_exit_status(err);
  return status ? status : 75;
}

/* The connection spec: a netrc account name is resolved for its host and
 * port only.  The resolver also copies an account entry's password, which
 * is wiped at once and never used.  A netrc that cannot be read does not
 * stop a spec that parses without it. */
static int info_resolve(const char *text, const char *netrc, struct p3_spec *spec_r) {
  char errbuf[512], errbuf2[512];
  struct p3_target t;
  int err = target_resolve(text, netrc, &t, errbuf, sizeof errbuf);
  if (err == 0)
    *spec_r = t.spec;
  target_deinit(&t);
  if ((err == P3_ENETRC || err == P3_ENETRCPERM) &&
      spec_parse(text, spec_r, errbuf2, sizeof errbuf2) == 0) {
    fprintf(stderr, "pop3: warning: %s (netrc not used)\n", errbuf);
    err = 0;
  }
  if (err) {
    fprintf(stderr, "pop3: %s: %s\n", text, errbuf);
    return p3_exit_status(err);
  }
  return 0;
}

int info_main(int argc, char **argv, int verbose) {
  enum { OPT_CA = 256, OPT_PIN, OPT_NETRC, OPT_TIMEOUT };
  static const struct option opts[] = {
      {"verbose", no_argument, NULL, 'v'},
      {"help", no_argument, NULL, 'h'},
      {"ca-file", required_argument, NULL, OPT_CA},
      {"tls-fingerprint", required_argument, NULL, OPT_PIN},
      {"netrc", required_argument, NULL, OPT_NETRC},
      {"timeout", required_argument, NULL, OPT_TIMEOUT},
      {NULL, 0, NULL, 0},
  };
  struct conn_options co;
  memset(&co, 0, sizeof co);
  co.tls.report_only = 1;
  co.timeout_ms = INFO_DEFAULT_TIMEOUT_S * 1000u;
  const char *netrc = NULL;
  int c;
  optind = 0; /* GNU: reinitialise, and permute so options may follow operands */
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":vh", opts, NULL)) != -1) {
    switch (c) {
    case 'v':
      verbose++;
      break;
    case 'h':
      fputs(info_usage, stdout);
      return 0;
    case OPT_CA:
      co.tls.ca_file = optarg;
      break;
    case OPT_PIN:
      if (cli_option_pin("pop3", "pop3 help info", optarg, co.tls.pins, &co.tls.pin_count) != 0)
        return EX_USAGE;
      break;
    case OPT_NETRC:
      netrc = optarg;
      break;
    case OPT_TIMEOUT: {
      unsigned seconds;
      if (cli_option_timeout("pop3", "pop3 help info", optarg, &seconds) != 0)
        return EX_USAGE;
      co.timeout_ms = seconds * 1000u;
      break;
    }
    case ':':
      return usage_error("option `%s' needs a value", argv[optind - 1]);
    default:
      return usage_error("unknown option `%s'", argv[optind - 1]);
    }
  }
  if (argc - optind == 0)
    return usage_error("%s", "missing SPEC");
  if (argc - optind > 1)
    return usage_error("unexpected argument `%s' after SPEC", argv[optind + 1]);
  log_set_verbose(verbose);

  struct info_run *run = calloc(1, sizeof *run);
  if (run == NULL) {
    fprintf(stderr, "pop3: out of memory\n");
    return 71;
  }
  run->spec_text = argv[optind];
  run->verbose = verbose;
  run->pinned = co.tls.pin_count > 0;
  int status = info_resolve(run->spec_text, netrc, &run->spec);
  if (status) {
    free(run);
    return status;
  }
  co.host = run->spec.tcp_host;
  co.port = run->spec.port;
  co.implicit_tls = run->spec.mode == P3_TLS_IMPLICIT;
  co.starttls = run->spec.mode == P3_TLS_STARTTLS;
  co.tls.server_name = run->spec.tls_name;
  probe_init(&run->probe, run->spec.mode == P3_TLS_STARTTLS);
  struct conn_ops ops = {
      .connected = on_connected,
      .data = on_data,
      .tls_ready = on_tls_ready,
      .error = on_error,
      .closed = on_closed,
      .note = verbose ? on_note : NULL,
  };
  uv_loop_t loop;
  uv_loop_init(&loop);
  int err = conn_start(&run->conn, &loop, &co, &ops, run);
  if (err) {
    char detail[P3_HOST_MAX + 64];
    snprintf(detail, sizeof detail, "%s: %s", run->spec.tcp_host, uv_strerror(err));
    finish(run, P3_EDNS, detail);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  print_report(run);
  fflush(stdout);
  status = report_status(run);
  uv_loop_close(&loop);
  free(run);
  return status;
}

/* `pop3 info SPEC`: connect, show the greeting, the capabilities (before
 * and after STLS), the login methods and the TLS certificate, then QUIT
 * without logging in.  The conversation itself is probe.h (pure); this is
 * the wiring: argument parsing, the libuv loop, conn.h, the report. */
#ifndef P3_INFO_H
#define P3_INFO_H

/* `pop3 help info' and `pop3 info --help'. */
extern const char info_usage[];

/* Runs `pop3 info' with argv[0] == "info"; verbose counts the -v given
 * before the subcommand.  Prints the report on stdout, errors on stderr.
 * Returns the exit status: 0 (the server was reached and what it said is
 * shown, an untrusted certificate included), 64 usage, 69 no connection or
 * no TLS, 75 the conversation broke off; a spec or netrc error's own. */
int info_main(int argc, char **argv, int verbose);

#endif

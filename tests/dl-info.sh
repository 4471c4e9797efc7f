#!/bin/bash
# dl-info.sh -- `pop3 info SPEC` (issue 12): what a server offers, without logging in.
#
# Against fakepop3d (always): usage errors (64) and the help; a server without CAPA ("none (CAPA
# not supported)"), also named by a netrc account (host and port only); a hostile greeting with
# control characters (replaced by '?', nothing raw on stdout) and an APOP timestamp (login
# methods say APOP); a refused connection (69); ssl: to a plaintext port (69); starttls: to a
# server without STLS (69, no STLS sent); a right and a wrong --tls-fingerprint (trusted / NOT
# trusted, exit 0 both); an IP address without a name (NOT trusted, as dl refuses it). Every
# session got CAPA and QUIT only: never USER, PASS, APOP or AUTH.
# Against a real private Dovecot 2.3 (skipped only when it is missing and CI is not "true"): ssl:
# prints the fingerprint `openssl x509 -noout -fingerprint -sha256` gives for the server's
# certificate, subject, issuer and validity; NOT trusted without --ca-file (exit 0), trusted
# with it; a wrong name is NOT trusted with the reason; starttls: shows the capabilities before
# and after TLS; tcp: shows STLS among them. Dovecot's log shows every session ended with no
# authentication attempt and no login.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
t_init dl-info
. "$top_srcdir/tests/lib/fake.sh"

[ -x "$POP3" ] || t_fail "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"
command -v openssl >/dev/null || t_skip "no openssl"
export HOME=$T/home # no netrc of the person running the tests
mkdir -m 700 "$HOME"
unset NETRC

# line KEY: the value of the report line "KEY: VALUE" in $T/out (the first one).
line() {
  grep -m1 -F "$1: " "$T/out" | sed "s/^[^:]*: //" || true
}
has_line() { # has_line TEXT WHAT: $T/out has exactly the line TEXT
  grep -qxF -- "$1" "$T/out" || {
    cat "$T/out" >&2
    t_fail "$2: no line '$1'"
  }
}
# has_cap LIST CAP: CAP is one of the ", "-separated capabilities of LIST.
has_cap() {
  case ", $1, " in *", $2, "*) return 0 ;; esac
  return 1
}
# only_probe_commands NAME WANT: after fake_stop, every session's commands were WANT (the
# commands joined with blanks).
only_probe_commands() {
  [ -s "$FAKE_REC" ] || t_fail "$1: no session recorded"
  t_assert_eq "$(fake_rec "sorted(set(' '.join(x['commands']) for x in recs))")" "[\"$2\"]" \
    "$1: commands received"
}

# --- usage and help --------------------------------------------------------------------------
p3 info
p3_expect 64 "info without SPEC"
grep -qF "missing SPEC" "$T/err" || t_fail "no SPEC: $(cat "$T/err")"
p3 info a b
p3_expect 64 "info with two operands"
p3 info --bogus x
p3_expect 64 "info with an unknown option"
p3 info --tls-fingerprint nothex x
p3_expect 64 "info with a bad fingerprint"
p3 help info
p3_expect 0 "help info"
grep -qF "usage: pop3 [-v] info [OPTIONS]" "$T/out" || t_fail "help info: $(cat "$T/out")"
p3 --help
grep -qE "^  info \[OPTIONS\] SPEC +show what a server offers" "$T/out" ||
  t_fail "pop3 --help does not list info: $(cat "$T/out")"

C=$T/certs
sh "$top_srcdir/tests/lib/mkcert.sh" "$C" || t_fail "mkcert.sh failed"
fp=$(openssl x509 -noout -fingerprint -sha256 -in "$C/server.pem" | sed 's/^[^=]*=//')
[ ${#fp} = 95 ] || t_fail "unexpected fingerprint format: $fp"
last=${fp: -1}
if [ "$last" = 0 ]; then wrongfp=${fp%?}1; else wrongfp=${fp%?}0; fi

# --- no CAPA -----------------------------------------------------------------------------------
fake_start nocapa --generate 1 --no-capa
p3 info "tcp:127.0.0.1:$FAKE_PORT"
p3_expect 0 "no CAPA"
has_line "server: 127.0.0.1:$FAKE_PORT (tcp)" "no CAPA"
has_line "connected to: 127.0.0.1 port $FAKE_PORT" "no CAPA"
has_line "greeting: +OK fakepop3d ready" "no CAPA"
has_line "capabilities: none (CAPA not supported)" "no CAPA"
has_line "login methods: unknown (no CAPA)" "no CAPA"
grep -q "^tls\|^certificate" "$T/out" && t_fail "no CAPA: TLS lines for tcp: $(cat "$T/out")"
[ -s "$T/err" ] && t_fail "no CAPA: stderr: $(cat "$T/err")"
# A netrc account name: resolved for its host and port; its password is never used.
printf 'machine 127.0.0.1:%s login test password secret account work\n' "$FAKE_PORT" \
  >"$HOME/.netrc"
chmod 600 "$HOME/.netrc"
p3 info tcp:work
p3_expect 0 "a netrc account"
has_line "server: 127.0.0.1:$FAKE_PORT (tcp)" "a netrc account"
has_line "capabilities: none (CAPA not supported)" "a netrc account"
rm "$HOME/.netrc"
fake_stop
only_probe_commands nocapa 'CAPA QUIT'

# --- a hostile greeting ------------------------------------------------------------------------
fake_start hostile --generate 1 \
  --greeting-text $'+OK \e]0;owned\a hi \e[31mred\r <1896.697@dbc.example> \x7f\x01end'
p3 info "tcp:127.0.0.1:$FAKE_PORT"
p3_expect 0 "hostile greeting"
if LC_ALL=C grep -q $'[\x01-\x08\x0b-\x1f\x7f]' "$T/out"; then
  t_fail "hostile greeting: control characters on stdout: $(od -c "$T/out" | head -20)"
fi
has_line "greeting: +OK ?]0;owned? hi ?[31mred? <1896.697@dbc.example> ??end" "hostile greeting"
login=$(line "login methods")
case $login in
*APOP*) ;;
*) t_fail "hostile greeting: the timestamp gives no APOP: $login" ;;
esac
fake_stop
only_probe_commands hostile 'CAPA QUIT'

# --- connection refused, and ssl: to a plaintext port -----------------------------------------
port=$(t_free_port) || t_fail "no free port"
p3 info --timeout 5 "tcp:127.0.0.1:$port"
p3_expect 69 "connection refused"
grep -qF "could not connect" "$T/err" || t_fail "refused: stderr: $(cat "$T/err")"
has_line "server: 127.0.0.1:$port (tcp)" "refused"
grep -q "^connected to" "$T/out" && t_fail "refused: says connected: $(cat "$T/out")"

fake_start plainport --generate 1
p3 info --timeout 5 "ssl:127.0.0.1!localhost:$FAKE_PORT"
p3_expect 69 "ssl: to a plaintext port"
grep -qF "TLS handshake failed" "$T/err" || t_fail "ssl: to plaintext: stderr: $(cat "$T/err")"
fake_stop

# --- starttls: without STLS --------------------------------------------------------------------
fake_start nostls --generate 1
p3 info --ca-file "$C/ca.pem" "starttls:127.0.0.1!localhost:$FAKE_PORT"
p3_expect 69 "starttls: without STLS"
has_line "tls: none: STLS is not in the server's capabilities" "starttls: without STLS"
grep -qF "STLS is not in the server's capabilities" "$T/err" ||
  t_fail "starttls: without STLS: stderr: $(cat "$T/err")"
fake_stop
only_probe_commands nostls 'CAPA QUIT'

# --- pins: right and wrong -------------------------------------------------------------------
fake_start pins --generate 1 --ssl "$C/server.pem" "$C/server.key" --apop-greeting
p3 info --tls-fingerprint "sha256:$fp" "ssl:127.0.0.1:$FAKE_PORT"
p3_expect 0 "the right pin"
has_line "certificate: trusted (pinned fingerprint)" "the right pin"
has_line "certificate fingerprint: sha256:$fp" "the right pin"
has_line "login methods: USER/PASS, APOP" "the right pin"
p3 info --tls-fingerprint "sha256:$wrongfp" "ssl:127.0.0.1:$FAKE_PORT"
p3_expect 0 "a wrong pin"
has_line "certificate: NOT trusted: server certificate is sha256:$fp" "a wrong pin"
# An IP address without !name or pin: dl would refuse it, info says why.
p3 info --ca-file "$C/ca.pem" "ssl:127.0.0.1:$FAKE_PORT"
p3_expect 0 "an IP address without a name"
grep -qF "certificate: NOT trusted: no host name to check it against (127.0.0.1 is an IP address)" \
  "$T/out" || t_fail "IP address: $(cat "$T/out")"
fake_stop
only_probe_commands pins 'CAPA QUIT'

# --- Dovecot -----------------------------------------------------------------------------------
. "$top_srcdir/tests/lib/dovecot.sh"
dovecot_start # skips (77) only when Dovecot is missing and CI is not "true"
dfp=$(openssl x509 -noout -fingerprint -sha256 -in "$DOVECOT_SSL_DIR/server.pem" | sed 's/^[^=]*=//')
[ ${#dfp} = 95 ] || t_fail "unexpected fingerprint format: $dfp"
dsubject=$(openssl x509 -noout -subject -nameopt RFC2253 -in "$DOVECOT_SSL_DIR/server.pem" |
  sed 's/^subject=//')
sessions=0

# ssl: without --ca-file: shown, NOT trusted, exit 0.
p3 info "ssl:127.0.0.1!localhost:$DOVECOT_POP3S_PORT"
p3_expect 0 "dovecot ssl: untrusted"
sessions=$((sessions + 1))
has_line "server: localhost:$DOVECOT_POP3S_PORT (ssl) via 127.0.0.1" "dovecot ssl:"
has_line "connected to: 127.0.0.1 port $DOVECOT_POP3S_PORT" "dovecot ssl:"
has_line "certificate fingerprint: sha256:$dfp" "dovecot ssl: the fingerprint openssl gives"
has_line "certificate subject: $dsubject" "dovecot ssl:"
has_line "certificate issuer: CN=pop3sync test CA" "dovecot ssl:"
case $(line "certificate") in
"NOT trusted: certificate is not trusted"*) ;;
*) t_fail "dovecot ssl: without --ca-file: $(cat "$T/out")" ;;
esac
grep -qE "^certificate valid: [0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8} UTC to [0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8} UTC$" \
  "$T/out" || t_fail "dovecot ssl: validity line: $(cat "$T/out")"
grep -qE "^tls: TLSv1\.[23], TLS-" "$T/out" || t_fail "dovecot ssl: tls line: $(cat "$T/out")"
grep -qE '^greeting: \+OK Dovecot( \([A-Za-z]+\))? ready\.$' "$T/out" ||
  t_fail "dovecot ssl: greeting: $(cat "$T/out")"
caps=$(line "capabilities")
for cap in UIDL USER "SASL PLAIN LOGIN"; do
  has_cap "$caps" "$cap" || t_fail "dovecot ssl: no $cap in the capabilities: $caps"
done
has_line "login methods: USER/PASS, SASL PLAIN LOGIN" "dovecot ssl:"
# The order of the report: TLS first (implicit TLS), then what the server said.
t_assert_eq "$(cut -d: -f1 "$T/out" | tr '\n' '|')" \
  "server|connected to|tls|certificate|certificate subject|certificate issuer|certificate valid|certificate fingerprint|greeting|capabilities|login methods|" \
  "dovecot ssl: report lines"

# ssl: with --ca-file: trusted.
p3 info --ca-file "$DOVECOT_CA" "ssl:127.0.0.1!localhost:$DOVECOT_POP3S_PORT"
p3_expect 0 "dovecot ssl: trusted"
sessions=$((sessions + 1))
has_line "certificate: trusted" "dovecot ssl: with --ca-file"
has_line "certificate fingerprint: sha256:$dfp" "dovecot ssl: with --ca-file"

# A name the certificate is not for.
p3 info --ca-file "$DOVECOT_CA" "ssl:127.0.0.1!mail.example.org:$DOVECOT_POP3S_PORT"
p3_expect 0 "dovecot ssl: wrong name"
sessions=$((sessions + 1))
has_line "certificate: NOT trusted: certificate is for localhost, not mail.example.org" \
  "dovecot ssl: wrong name"

# starttls: the capabilities before and after TLS.
p3 info --ca-file "$DOVECOT_CA" "starttls:127.0.0.1!localhost:$DOVECOT_POP3_PORT"
p3_expect 0 "dovecot starttls:"
sessions=$((sessions + 1))
before=$(line "capabilities (before TLS)")
after=$(grep -m1 "^capabilities: " "$T/out" | sed 's/^capabilities: //')
has_cap "$before" STLS || t_fail "dovecot starttls: no STLS before TLS: $before"
has_cap "$after" STLS && t_fail "dovecot starttls: STLS still offered after TLS: $after"
has_cap "$after" UIDL || t_fail "dovecot starttls: no UIDL after TLS: $after"
has_line "certificate: trusted" "dovecot starttls:"
has_line "certificate fingerprint: sha256:$dfp" "dovecot starttls:"
t_assert_eq "$(cut -d: -f1 "$T/out" | tr '\n' '|')" \
  "server|connected to|greeting|capabilities (before TLS)|tls|certificate|certificate subject|certificate issuer|certificate valid|certificate fingerprint|capabilities|login methods|" \
  "dovecot starttls: report lines"

# tcp: no TLS, STLS among the capabilities; -v traces the commands sent, nothing else.
p3 -v info "tcp:127.0.0.1:$DOVECOT_POP3_PORT"
p3_expect 0 "dovecot tcp:"
sessions=$((sessions + 1))
has_cap "$(line capabilities)" STLS || t_fail "dovecot tcp: no STLS: $(cat "$T/out")"
grep -q "^tls\|^certificate" "$T/out" && t_fail "dovecot tcp: TLS lines: $(cat "$T/out")"
t_assert_eq "$(grep '^pop3: > ' "$T/err" | tr '\n' '|')" "pop3: > CAPA|pop3: > QUIT|" \
  "dovecot tcp: commands sent"

# Dovecot's side: every session ended with QUIT and no authentication attempt, none logged in
# (dovecot_start's port probes log "Connection closed (no auth attempts...)" too).
quit='Aborted login by logging out (no auth attempts in '
for ((i = 0; i < 50; i++)); do
  n=$(grep -cF "$quit" "$DOVECOT_LOG" || true)
  [ "$n" -ge "$sessions" ] && break
  sleep 0.1
done
t_assert_eq "$(grep -cF "$quit" "$DOVECOT_LOG" || true)" "$sessions" \
  "dovecot: sessions that quit without auth attempts"
if grep -E "Login: |auth failed|auth attempts\)|user=<[^>]" "$DOVECOT_LOG" | grep -v "no auth attempts"; then
  dovecot_dump_log
  t_fail "dovecot: an authentication was attempted"
fi
exit 0

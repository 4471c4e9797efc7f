#!/bin/bash
# dl-cli.sh -- the `pop3` command line end to end: usage errors (64), help, options after the
# operands, password lookup (netrc machine user@host:port, machine host login user, default,
# $NETRC, ~/.netrc, --netrc, an account entry; unsafe netrc, no password, a failing
# --password-command: 78), -v traces without the password, the summary line.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
t_init dl-cli
. "$top_srcdir/tests/lib/fake.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"

# No netrc of the person running the tests may take part.
export HOME=$T/home
mkdir -m 700 "$HOME"
unset NETRC
PW=(--password-command 'echo secret')

usage_error() { # usage_error WHAT ARGS...: pop3 ARGS exits 64 with a message, before connecting
  local what=$1
  shift
  p3 "$@"
  p3_expect 64 "$what"
  [ -s "$T/err" ] || t_fail "$what: nothing on stderr"
}

# --- usage errors ----------------------------------------------------------------------------
# A server that records any connection: none of these may reach it.
fake_start usage
S=tcp:test@127.0.0.1:$FAKE_PORT
usage_error "no arguments"
usage_error "dl without operands" dl
usage_error "dl with one operand" dl "${PW[@]}" "$S"
usage_error "dl with three operands" dl "${PW[@]}" "$S" "$T/md" extra
usage_error "unknown subcommand" frobnicate
usage_error "unknown option" dl --frobnicate "${PW[@]}" "$S" "$T/md"
usage_error "unknown short option" dl -Z "${PW[@]}" "$S" "$T/md"
usage_error "bad --pipelining" dl --pipelining=maybe "${PW[@]}" "$S" "$T/md"
usage_error "bad --pipelining (empty)" dl --pipelining= "${PW[@]}" "$S" "$T/md"
usage_error "--timeout not a number" dl --timeout soon "${PW[@]}" "$S" "$T/md"
usage_error "--window 0" dl --window 0 "${PW[@]}" "$S" "$T/md"
usage_error "--window not a number" dl --window many "${PW[@]}" "$S" "$T/md"
usage_error "--timeout without value" dl "${PW[@]}" "$S" "$T/md" --timeout
hex=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
usage_error "--tls-fingerprint not hex" dl --tls-fingerprint "sha256:${hex%?}x" "${PW[@]}" \
  "ssl:test@127.0.0.1:$FAKE_PORT" "$T/md"
usage_error "--tls-fingerprint too short" dl --tls-fingerprint "sha256:${hex%??}" "${PW[@]}" \
  "ssl:test@127.0.0.1:$FAKE_PORT" "$T/md"
usage_error "--tls-fingerprint too long" dl --tls-fingerprint "sha256:${hex}00" "${PW[@]}" \
  "ssl:test@127.0.0.1:$FAKE_PORT" "$T/md"
usage_error "--tls-fingerprint md5:" dl --tls-fingerprint "md5:${hex:0:32}" "${PW[@]}" \
  "ssl:test@127.0.0.1:$FAKE_PORT" "$T/md"
usage_error "malformed SPEC (bad port)" dl "${PW[@]}" "tcp:test@127.0.0.1:99999" "$T/md"
usage_error "malformed SPEC (unknown mode)" dl "${PW[@]}" "pop4:test@127.0.0.1:$FAKE_PORT" "$T/md"
# One operand: the one thing missing, in one line, and the hint; never the whole help.
p3 dl "${PW[@]}" "$S"
p3_expect 64 "dl with one operand"
t_assert_eq "$(cat "$T/err")" "pop3: missing MAILDIR
Try \`pop3 help dl' for more information." "dl with one operand: stderr"
p3 dl
t_assert_eq "$(head -1 "$T/err")" "pop3: missing SPEC and MAILDIR" "dl without operands: stderr"
t_assert_eq "$(wc -l <"$T/err")" 2 "dl without operands: lines on stderr"
p3 dl "${PW[@]}" "$S" "$T/md" extra
t_assert_eq "$(head -1 "$T/err")" "pop3: unexpected argument \`extra' after MAILDIR" \
  "dl with three operands: stderr"
fake_stop
t_assert_eq "$(fake_sessions)" 0 "usage errors: connections to the server"
[ ! -e "$T/md" ] || t_fail "usage errors: the Maildir was created"

# --- help --------------------------------------------------------------------------------------
for args in "help" "help dl" "dl --help" "dl -h"; do
  # shellcheck disable=SC2086 # split on purpose
  p3 $args
  p3_expect 0 "pop3 $args"
  grep -q "^usage: pop3" "$T/out" || t_fail "pop3 $args: no usage on stdout"
done
# --version: listed in `pop3 --help' and in pop3(1)'s SYNOPSIS, and works.
p3 --help
grep -q -- "--version" "$T/out" || t_fail "pop3 --help does not list --version"
p3 --version
p3_expect 0 "pop3 --version"
grep -Eq "^pop3 \(.*\) [0-9]" "$T/out" || t_fail "pop3 --version: '$(cat "$T/out")'"
sed -n '/^\.SH SYNOPSIS/,/^\.SH DESCRIPTION/p' "$top_srcdir/doc/pop3.1" | grep -q 'version' ||
  t_fail "pop3(1) SYNOPSIS does not show --version"
p3 help dl
grep -q -- "--pipelining" "$T/out" || t_fail "pop3 help dl: options not listed"
grep -q -- "--tls-fingerprint" "$T/out" || t_fail "pop3 help dl: options not listed"

# --- one server with 20 messages for the options-after-operands and summary checks ------------
mkmsgs "$T/orig" 20
cp -a "$T/orig" "$T/srv"
fake_start main --maildir "$T/srv"
S=tcp:test@127.0.0.1:$FAKE_PORT
p3 dl "$S" "$T/md" --timeout 5 --password-command 'echo secret' --window 5
p3_expect 0 "options after the operands"
t_assert_eq "$(t_maildir_count "$T/md")" 20 "options after the operands: delivered"
sums "$T/orig" >"$T/want.sums"
sums "$T/md/new" >"$T/got.sums"
cmp -s "$T/want.sums" "$T/got.sums" || t_fail "options after the operands: content differs"
bytes=$(cat "$T"/md/new/* | wc -c)
t_assert_eq "$(wc -l <"$T/out")" 1 "summary: lines on stdout"
grep -Eq "^tcp:test@127\.0\.0\.1:$FAKE_PORT: 20 messages, ([0-9.]+ [KMG]iB \()?$bytes bytes\)? in [0-9]+(\.[0-9]+)? s\$" \
  "$T/out" || t_fail "summary line: '$(cat "$T/out")' (expected 20 messages, $bytes bytes)"
fake_wait_sessions 1
t_assert_eq "$(ls -A "$T/srv" | wc -l)" 0 "options after the operands: left on the server"
fake_stop

# --- passwords: netrc ----------------------------------------------------------------------------
# An empty mailbox; a session with the right password exits 0, a wrong one 77.
fake_start pw
S=tcp:test@127.0.0.1:$FAKE_PORT
nsess=0

# login_with WHAT RC ARGS...: pop3 dl ARGS S MAILDIR exits RC; with 0, the server saw a login.
login_with() {
  local what=$1 rc=$2
  shift 2
  p3 dl "$@" "$S" "$T/md-pw"
  p3_expect "$rc" "$what"
  if [ "$rc" = 0 ]; then
    nsess=$((nsess + 1))
    fake_wait_sessions "$nsess"
    t_assert_eq "$(fake_rec '[r["user"], r["authenticated"]]')" '["test", true]' \
      "$what: [user, authenticated]"
  fi
}

netrc() { # netrc FILE LINES...: write a netrc with mode 0600
  local f=$1
  shift
  printf '%s\n' "$@" >"$f"
  chmod 600 "$f"
}

netrc "$T/n1" "machine test@127.0.0.1:$FAKE_PORT password secret"
login_with "netrc machine user@host:port (--netrc)" 0 --netrc "$T/n1"

netrc "$T/n2" "machine 127.0.0.1 login test password secret"
NETRC=$T/n2 login_with "netrc machine host login user (\$NETRC)" 0

netrc "$T/n3" "default login test password secret"
login_with "netrc default" 0 --netrc "$T/n3"

netrc "$T/n4" "default password secret"
login_with "netrc default without login" 0 --netrc "$T/n4"

# The rules apply in order: user@host:port first, then host+login, then default.
netrc "$T/n5" "default password wrong" "machine 127.0.0.1 login test password wrong" \
  "machine test@127.0.0.1:$FAKE_PORT password secret"
login_with "netrc user@host:port beats host+login and default" 0 --netrc "$T/n5"
netrc "$T/n6" "default password wrong" "machine 127.0.0.1 login other password wrong" \
  "machine 127.0.0.1 login test password secret"
login_with "netrc host+login beats default" 0 --netrc "$T/n6"

# A default entry for another login is someone else's password.
netrc "$T/n7" "default login other password secret"
login_with "netrc default for another login" 78 --netrc "$T/n7"

# ~/.netrc when neither --netrc nor $NETRC is given; --netrc beats $NETRC.
netrc "$HOME/.netrc" "machine test@127.0.0.1:$FAKE_PORT password secret"
login_with "\$HOME/.netrc" 0
netrc "$T/bad" "machine test@127.0.0.1:$FAKE_PORT password wrong"
NETRC=$T/bad login_with "--netrc beats \$NETRC" 0 --netrc "$T/n1"
NETRC=$T/bad login_with "\$NETRC beats ~/.netrc (wrong password there)" 77
# --password-command beats the netrc.
NETRC=$T/bad login_with "--password-command beats the netrc" 0 "${PW[@]}"
rm -f "$HOME/.netrc"

# An unsafe netrc is refused, naming the file, even though it holds the right password.
netrc "$T/open" "machine test@127.0.0.1:$FAKE_PORT password secret"
chmod 644 "$T/open"
login_with "netrc with mode 0644" 78 --netrc "$T/open"
grep -qF "$T/open" "$T/err" || t_fail "netrc with mode 0644: stderr does not name the file: $(cat "$T/err")"
chmod 620 "$T/open"
login_with "netrc writable by the group" 78 --netrc "$T/open"

# No password anywhere.
login_with "no password, no netrc" 78
# The message names the file looked in and the line to add there.
grep -qF "in $HOME/.netrc" "$T/err" || t_fail "no password: the netrc is not named: $(cat "$T/err")"
grep -qF "add the line \`machine test@127.0.0.1:$FAKE_PORT password ...' to $HOME/.netrc" \
  "$T/err" || t_fail "no password: no line to add: $(cat "$T/err")"
netrc "$T/other" "machine other.example password secret"
login_with "no matching netrc entry" 78 --netrc "$T/other"
login_with "--netrc of a missing file" 78 --netrc "$T/missing"
grep -qF "machine test@127.0.0.1:$FAKE_PORT password ...' to $T/missing" "$T/err" ||
  t_fail "--netrc of a missing file: no line to add: $(cat "$T/err")"

# --- no password anywhere, on a terminal: asked for, without echo -------------------------------
# pty_run ANSWER ARGS...: run ARGS on a new pty (controlling terminal, stdin/out/err); once
# "Password for " and ": " appear, type ANSWER (the word "^C" types an interrupt character
# instead); then, a shell in ARGS may go on (e.g. with `stty -a'). The pty's output goes to
# $T/pty.out; returns the exit status. Bounded: the child is killed after 30 s.
pty_run() {
  "$PYTHON" "$top_srcdir/tests/lib/ptyrun.py" 'Password for [^\n]*: $' "$@" >"$T/pty.out" 2>"$T/pty.err"
}
# With `stty -a' after pop3 (in a shell that outlives a ^C): the terminal's echo is back on.
before=$(fake_sessions) # the runs before this one were waited for, or never connected
rc=0
pty_run secret /bin/sh -c 'trap : INT; "$0" dl "$1" "$2"; echo "rc=$?"; stty -a' \
  "$POP3" "$S" "$T/md-pw" || rc=$?
pty_fail() {
  echo "--- pty output:" >&2
  cat "$T/pty.out" "$T/pty.err" >&2
  t_fail "$1"
}
grep -q "rc=0" "$T/pty.out" || pty_fail "prompt on a terminal: pop3 did not exit 0"
grep -qF "Password for test@127.0.0.1: " "$T/pty.out" || pty_fail "prompt on a terminal: no prompt"
! grep -q secret "$T/pty.out" || pty_fail "prompt on a terminal: the answer was echoed"
grep -Eq "(^|[[:space:]])-echo([[:space:]]|\$)" "$T/pty.out" && pty_fail "prompt on a terminal: echo left off"
fake_wait_sessions $((before + 1))
t_assert_eq "$(fake_rec '[r["user"], r["authenticated"]]')" '["test", true]' \
  "prompt on a terminal: [user, authenticated]"
nsess=$(fake_sessions)
# A ^C at the prompt ends pop3 by SIGINT with the terminal's echo restored.
rc=0
pty_run "^C" /bin/sh -c 'trap : INT; "$0" dl "$1" "$2"; echo "rc=$?"; stty -a' \
  "$POP3" "$S" "$T/md-pw" || rc=$?
grep -q "rc=130" "$T/pty.out" || pty_fail "^C at the prompt: pop3 did not die of SIGINT"
grep -Eq "(^|[[:space:]])-echo([[:space:]]|\$)" "$T/pty.out" && pty_fail "^C at the prompt: echo left off"
grep -Eq "(^|[[:space:]])echo([[:space:]]|\$)" "$T/pty.out" || pty_fail "^C at the prompt: no stty -a output"
t_assert_eq "$(fake_sessions)" "$nsess" "^C at the prompt: sessions"

# A failing or empty --password-command.
login_with "--password-command 'exit 3'" 78 --password-command 'exit 3'
login_with "--password-command printing nothing" 78 --password-command 'true'
login_with "--password-command printing an empty line" 78 --password-command 'echo'
# Only the first line counts.
login_with "--password-command printing two lines" 0 --password-command 'printf "secret\nmore\n"'
login_with "wrong password from --password-command" 77 --password-command 'echo nope'

# --- a netrc account entry ---------------------------------------------------------------------
# SPEC is the account; the machine says where to connect, login (or the account's user part)
# who logs in.
netrc "$T/acct" "machine test@127.0.0.1:$FAKE_PORT login test account someone@mail.example.com password secret"
S=tcp:someone@mail.example.com
login_with "netrc account with login" 0 --netrc "$T/acct"
grep -q "^tcp:someone@mail\.example\.com: 0 messages" "$T/out" ||
  t_log "account: summary line is '$(cat "$T/out")'"
netrc "$T/acct2" "machine 127.0.0.1:$FAKE_PORT account test@mail.example.com password secret"
S=tcp:test@mail.example.com
login_with "netrc account, user from the account" 0 --netrc "$T/acct2"
S=tcp:test@127.0.0.1:$FAKE_PORT
fake_stop

# An account over TLS: the certificate is checked for the account's host, not the machine's.
if command -v openssl >/dev/null; then
  sh "$top_srcdir/tests/lib/mkcert.sh" "$T/certs" || t_fail "mkcert.sh failed"
  fake_start acctls --ssl "$T/certs/server.pem" "$T/certs/server.key"
  netrc "$T/acct3" "machine test@127.0.0.1:$FAKE_PORT account test@localhost password secret"
  p3 dl --netrc "$T/acct3" --ca-file "$T/certs/ca.pem" ssl:test@localhost "$T/md-acct3"
  p3_expect 0 "netrc account over TLS, certificate for the account's host"
  fake_wait_sessions 1
  t_assert_eq "$(fake_rec '[r["tls"], r["authenticated"]]')" '["implicit", true]' \
    "account over TLS: [tls, authenticated]"
  fake_stop
else
  t_log "account over TLS not checked: no openssl"
fi

# --- -v: a protocol trace, never the password ----------------------------------------------------
PASSWORD='Xy9-very-secret-passphrase'
cp -a "$T/orig" "$T/srv-v"
fake_start verbose --maildir "$T/srv-v" --password "$PASSWORD"
S=tcp:test@127.0.0.1:$FAKE_PORT
# Each run gets a new Maildir and a new state file (the journal would skip UIDs delivered
# before).
for where in global dl; do
  rm -rf "$T/md-v" "$XDG_STATE_HOME"
  cp -a "$T/orig/." "$T/srv-v/"
  if [ $where = global ]; then
    p3 -v dl --password-command "echo $PASSWORD" "$S" "$T/md-v"
  else
    p3 dl -v --password-command "echo $PASSWORD" "$S" "$T/md-v"
  fi
  p3_expect 0 "-v ($where)"
  t_assert_eq "$(t_maildir_count "$T/md-v")" 20 "-v ($where): delivered"
  grep -q "USER test" "$T/err" || t_fail "-v ($where): no USER in the trace"
  grep -q "PASS" "$T/err" || t_fail "-v ($where): no PASS in the trace"
  grep -q "RETR 20" "$T/err" || t_fail "-v ($where): no RETR 20 in the trace"
  grep -q "QUIT" "$T/err" || t_fail "-v ($where): no QUIT in the trace"
  if grep -qF "$PASSWORD" "$T/err" "$T/out"; then
    grep -F "$PASSWORD" "$T/err" "$T/out" | head -3 >&2
    t_fail "-v ($where): the password appears in the output"
  fi
done
# The same with the password from a netrc file.
netrc "$T/nv" "machine test@127.0.0.1:$FAKE_PORT password $PASSWORD"
rm -rf "$T/md-v" "$XDG_STATE_HOME"
cp -a "$T/orig/." "$T/srv-v/"
p3 -v dl --netrc "$T/nv" "$S" "$T/md-v"
p3_expect 0 "-v with a netrc password"
! grep -qF "$PASSWORD" "$T/err" "$T/out" || t_fail "-v with a netrc: the password appears"
grep -q "RETR 20" "$T/err" || t_fail "-v with a netrc: no trace"
# And a wrong password: the error must not echo what was sent.
p3 -v dl --password-command "echo ${PASSWORD}X" "$S" "$T/md-v"
p3_expect 77 "-v with a wrong password"
! grep -qF "$PASSWORD" "$T/err" "$T/out" || t_fail "-v, wrong password: the password appears"
fake_stop

t_log "dl-cli: all checks passed"
exit 0

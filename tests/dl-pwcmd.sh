#!/bin/bash
# dl-pwcmd.sh -- `pop3 dl --password-command` as a child on the loop: a command that never
# finishes is killed after --timeout (exit 75, its process group with it); a command's leftover
# holding stdout does not hang the run; a failing command is 78; SIGTERM/SIGINT cancel it; under
# a pseudo-terminal the command may prompt on /dev/tty. Also the netrc ownership rules end to
# end: a netrc of another user is refused (78, naming the file); a symlink of ours works.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
t_init dl-pwcmd
. "$top_srcdir/tests/lib/fake.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"
command -v pgrep >/dev/null || t_skip "no pgrep"

# No netrc of the person running the tests may take part.
export HOME=$T/home
mkdir -m 700 "$HOME"
unset NETRC

# A sleep whose command line no other process has: `sleep 1000.<pid><n>` (GNU sleep takes
# fractions), so that pgrep -f finds exactly what this test started.
n_marker=0
marker() {
  n_marker=$((n_marker + 1))
  printf '1000.%d%03d' $$ "$n_marker"
}

now_ms() {
  echo $(($(date +%s%N) / 1000000))
}

# survivors PATTERN: pids of processes whose command line contains PATTERN, waiting up to 3 s
# for them to go (a killed process may take a moment to be gone).
survivors() {
  local i pids
  for ((i = 0; i < 30; i++)); do
    pids=$(pgrep -f -- "$1" || true)
    [ -z "$pids" ] && return 0
    sleep 0.1
  done
  echo "$pids"
}

# no_survivor PATTERN WHAT: fail if a process with PATTERN in its command line is still there
# (killing them first, by pid, so that none outlives the test).
no_survivor() {
  local pids
  pids=$(survivors "$1")
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086 # one pid per word
    ps -o pid,pgid,stat,args -p "$(echo $pids | tr ' ' ,)" >&2 || true
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    t_fail "$2: the password command survived"
  fi
}

# kill_leftovers PATTERN: a leftover the test made on purpose, killed by pid.
kill_leftovers() {
  local pids
  pids=$(pgrep -f -- "$1" || true)
  # shellcheck disable=SC2086
  [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
}

fake_start pw
S=tcp:test@127.0.0.1:$FAKE_PORT
nsess=0

expect_login() { # expect_login WHAT: the last run logged in as test
  nsess=$((nsess + 1))
  fake_wait_sessions "$nsess"
  t_assert_eq "$(fake_rec '[r["user"], r["authenticated"]]')" '["test", true]' \
    "$1: [user, authenticated]"
}

# --- a command that never finishes: killed after --timeout, with its group --------------------
m=$(marker)
t0=$(now_ms)
p3 dl --password-command "sleep $m; echo never" --timeout 3 "$S" "$T/md"
elapsed=$(($(now_ms) - t0))
p3_expect 75 "a command that never finishes"
[ "$elapsed" -le 10000 ] || t_fail "a command that never finishes: took ${elapsed} ms (> 10 s)"
[ "$elapsed" -ge 2500 ] || t_fail "a command that never finishes: ended after ${elapsed} ms (< 3 s)"
grep -qF "password command \`sleep $m; echo never' did not finish within 3 s; killed" "$T/err" ||
  t_fail "timeout: stderr does not name the command: $(cat "$T/err")"
no_survivor "sleep $m" "timeout"
t_assert_eq "$(fake_sessions)" 0 "timeout: connections to the server"

# Without --timeout the bound is the default 120 s: not waited for here, only that --timeout is
# what applies (a 1 s bound on a 3 s command).
p3 dl --password-command 'sleep 3; echo secret' --timeout 1 "$S" "$T/md"
p3_expect 75 "--timeout 1 on a 3 s command"
grep -qF "within 1 s" "$T/err" || t_fail "--timeout 1: $(cat "$T/err")"

# A command that ignores SIGTERM gets SIGKILL.
m=$(marker)
t0=$(now_ms)
p3 dl --password-command "trap '' TERM; sleep $m" --timeout 2 "$S" "$T/md"
elapsed=$(($(now_ms) - t0))
p3_expect 75 "a command that ignores SIGTERM"
[ "$elapsed" -le 10000 ] || t_fail "a command that ignores SIGTERM: took ${elapsed} ms"
no_survivor "sleep $m" "SIGTERM ignored"

# --- commands that print the password ------------------------------------------------------------
p3 dl --password-command 'echo secret' "$S" "$T/md"
p3_expect 0 "a command printing the password"
expect_login "a command printing the password"

# The command exits, something it started keeps stdout open: no hang (the bound is far away).
m=$(marker)
t0=$(now_ms)
p3 dl --password-command "sleep $m & printf secret" --timeout 60 "$S" "$T/md"
elapsed=$(($(now_ms) - t0))
kill_leftovers "sleep $m"
p3_expect 0 "a leftover holding stdout"
[ "$elapsed" -le 5000 ] || t_fail "a leftover holding stdout: took ${elapsed} ms"
expect_login "a leftover holding stdout"

# --- failing commands: 78, the command named ---------------------------------------------------
p3 dl --password-command 'exit 1' "$S" "$T/md"
p3_expect 78 "a command that exits 1"
grep -qF "password command \`exit 1' exited with status 1" "$T/err" ||
  t_fail "exit 1: $(cat "$T/err")"
p3 dl --password-command 'kill -9 $$' "$S" "$T/md"
p3_expect 78 "a command killed by a signal"
t_assert_eq "$(fake_sessions)" "$nsess" "failing commands: connections to the server"

# --- SIGTERM / SIGINT while the command runs: it is cancelled, nothing survives ----------------
for sig in TERM INT; do
  m=$(marker)
  "$POP3" dl --password-command "sleep $m" --timeout 60 "$S" "$T/md" \
    </dev/null >"$T/sig.out" 2>"$T/sig.err" &
  pid=$!
  for ((i = 0; i < 100; i++)); do
    pgrep -f -- "sleep $m" >/dev/null && break
    sleep 0.05
  done
  pgrep -f -- "sleep $m" >/dev/null || { t_kill "$pid"; t_fail "SIG$sig: the command did not start"; }
  t0=$(now_ms)
  kill -"$sig" "$pid"
  for ((i = 0; i < 100; i++)); do
    t_alive "$pid" || break
    sleep 0.05
  done
  if t_alive "$pid"; then
    t_kill "$pid"
    kill_leftovers "sleep $m"
    t_fail "SIG$sig: pop3 still running 5 s later"
  fi
  rc=0
  wait "$pid" || rc=$?
  elapsed=$(($(now_ms) - t0))
  t_assert_eq "$rc" 75 "SIG$sig during the command: exit status"
  grep -qF "password command \`sleep $m' was stopped before it finished" "$T/sig.err" ||
    t_fail "SIG$sig: $(cat "$T/sig.err")"
  [ "$elapsed" -le 3500 ] || t_fail "SIG$sig: took ${elapsed} ms"
  no_survivor "sleep $m" "SIG$sig"
done
t_assert_eq "$(fake_sessions)" "$nsess" "cancelled commands: connections to the server"

# --- under a pseudo-terminal the command may prompt on /dev/tty ------------------------------------
# pty_run ANSWER ARGS...: run ARGS on a new pty (its controlling terminal and stdin/out/err),
# type ANSWER once "Password:" appears; the pty's output goes to $T/pty.out; returns the exit
# status. Bounded: the child is killed after 30 s.
pty_run() {
  "$PYTHON" "$top_srcdir/tests/lib/ptyrun.py" 'Password:' "$@" >"$T/pty.out" 2>"$T/pty.err"
}

rc=0
pty_run secret "$POP3" dl \
  --password-command 'printf "Password: " >/dev/tty; read -r p </dev/tty; echo "$p"' \
  "$S" "$T/md-pty" || rc=$?
if [ "$rc" != 0 ]; then
  echo "--- pty output:" >&2
  cat "$T/pty.out" "$T/pty.err" >&2
  t_fail "prompting on the terminal: pop3 exited $rc, expected 0"
fi
grep -q "Password:" "$T/pty.out" || t_fail "prompting on the terminal: no prompt seen"
expect_login "prompting on the terminal"

# A wrong answer typed there is the server's business (77), not the command's.
rc=0
pty_run wrong "$POP3" dl \
  --password-command 'printf "Password: " >/dev/tty; read -r p </dev/tty; echo "$p"' \
  "$S" "$T/md-pty" || rc=$?
t_assert_eq "$rc" 77 "a wrong password typed on the terminal"
nsess=$((nsess + 1))
fake_wait_sessions "$nsess"

# On a terminal only the command itself is killed at the timeout (it shares our process group).
m=$(marker)
rc=0
t0=$(now_ms)
pty_run never "$POP3" dl --password-command "exec sleep $m" --timeout 2 "$S" "$T/md-pty" || rc=$?
elapsed=$(($(now_ms) - t0))
t_assert_eq "$rc" 75 "timeout on a terminal"
[ "$elapsed" -le 10000 ] || t_fail "timeout on a terminal: took ${elapsed} ms"
grep -qF "did not finish within 2 s; killed" "$T/pty.out" ||
  t_fail "timeout on a terminal: $(cat "$T/pty.out")"
no_survivor "sleep $m" "timeout on a terminal"
fake_stop

# --- netrc ownership ------------------------------------------------------------------------------
fake_start netrc
S=tcp:test@127.0.0.1:$FAKE_PORT
printf 'machine test@127.0.0.1:%s password secret\n' "$FAKE_PORT" >"$T/netrc.real"
chmod 600 "$T/netrc.real"
ln -s "$T/netrc.real" "$HOME/.netrc"
p3 dl "$S" "$T/md-netrc"
p3_expect 0 "~/.netrc: a symlink of ours to a file of ours"
rm -f "$HOME/.netrc"

if [ "$(id -u)" = 0 ]; then
  cp "$T/netrc.real" "$T/netrc.nobody"
  chown 65534:65534 "$T/netrc.nobody"
  p3 dl --netrc "$T/netrc.nobody" "$S" "$T/md-netrc"
  p3_expect 78 "a netrc owned by another user"
  grep -qF "$T/netrc.nobody is owned by uid 65534, not by you (uid 0)" "$T/err" ||
    t_fail "a netrc owned by another user: $(cat "$T/err")"
  # The default ~/.netrc too (root with HOME pointing into someone else's files).
  cp -p "$T/netrc.nobody" "$HOME/.netrc"
  p3 dl "$S" "$T/md-netrc"
  p3_expect 78 "~/.netrc owned by another user"
  grep -qF "$HOME/.netrc is owned by uid 65534" "$T/err" ||
    t_fail "~/.netrc owned by another user: $(cat "$T/err")"
  rm -f "$HOME/.netrc"
  # Our link to another user's file.
  ln -s "$T/netrc.nobody" "$T/netrc.link"
  p3 dl --netrc "$T/netrc.link" "$S" "$T/md-netrc"
  p3_expect 78 "a symlink to another user's netrc"
  grep -qF "$T/netrc.link links to a file owned by uid 65534" "$T/err" ||
    t_fail "a symlink to another user's netrc: $(cat "$T/err")"
else
  t_log "not root: netrc files of another owner not checked here (see tests/unit/test_netrc)"
fi
t_assert_eq "$(fake_sessions)" 1 "netrc: sessions (only the good netrc logs in)"
fake_stop

t_log "dl-pwcmd: all checks passed"
exit 0

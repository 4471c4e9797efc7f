#!/bin/bash
# dl-basic.sh -- `pop3 dl` against fakepop3d: empty mailbox; 20 messages delivered byte-exact,
# deleted on the server, Maildir layout; round trips with pipelining on/auto/off and --window;
# servers without CAPA or without UIDL.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
t_init dl-basic
. "$top_srcdir/tests/lib/fake.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"

PW=(--password-command 'echo secret')

# serve NAME SRC ARGS...: a fresh copy of the messages in SRC, served by a new fakepop3d.
serve() {
  local name=$1 src=$2
  shift 2
  rm -rf "$T/$name.srv"
  cp -a "$src" "$T/$name.srv"
  fake_start "$name" --maildir "$T/$name.srv" "$@"
}

# check_all_delivered NAME ORIG MAILDIR N: exactly the N originals were delivered and deleted.
check_all_delivered() {
  local name=$1 orig=$2 md=$3 n=$4
  t_assert_eq "$(t_maildir_count "$md")" "$n" "$name: messages in the Maildir"
  sums "$orig" >"$T/want.sums"
  sums "$md/new" "$md/cur" >"$T/got.sums"
  if ! cmp -s "$T/want.sums" "$T/got.sums"; then
    diff "$T/want.sums" "$T/got.sums" | head -10 >&2
    t_fail "$name: delivered files differ from the originals"
  fi
  fake_wait_sessions 1
  t_assert_eq "$(fake_rec 'r["quit"] and r["committed"]')" true "$name: QUIT committed"
  t_assert_eq "$(fake_rec 'r["deleted"] == list(range(1, r["messages"] + 1))')" true \
    "$name: every message deleted"
  t_assert_eq "$(fake_rec 'r["messages"]')" "$n" "$name: messages seen by the server"
  t_assert_eq "$(ls -A "$T/$name.srv" | wc -l)" 0 "$name: files left on the server"
}

# --- empty mailbox ---------------------------------------------------------------------------
fake_start empty
# The Maildir and its parent do not exist yet: the run creates them (0700).
[ ! -e "$T/deep" ] || t_fail "$T/deep exists before the run"
p3 dl "${PW[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/deep/md-empty"
p3_expect 0 "empty mailbox"
grep -Eq "^tcp:test@127\.0\.0\.1:$FAKE_PORT: 0 messages, 0 bytes in [0-9.]+ s\$" "$T/out" ||
  t_fail "empty mailbox: summary line: $(cat "$T/out")"
t_assert_eq "$(t_maildir_count "$T/deep/md-empty")" 0 "empty mailbox: delivered"
maildir_check "$T/deep/md-empty"
t_assert_eq "$(stat -c %a "$T/deep/md-empty" "$T/deep/md-empty/new")" "700
700" "empty mailbox: modes of the created Maildir"
fake_wait_sessions 1
t_assert_eq "$(fake_rec 'r["authenticated"] and r["quit"]')" true "empty mailbox: login and QUIT"
fake_stop

# --- 20 messages, byte-exact -----------------------------------------------------------------
mkmsgs "$T/orig20" 20
# The originals end with LF and hold no CR: the delivered files must equal them.
"$PYTHON" - "$T"/orig20/* <<'PY' || t_fail "genmail: an original lacks a final LF or holds a CR"
import sys
for p in sys.argv[1:]:
    b = open(p, "rb").read()
    assert b.endswith(b"\n") and b"\r" not in b, p
PY
serve twenty "$T/orig20"
p3 dl "${PW[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/md20"
p3_expect 0 "20 messages"
check_all_delivered twenty "$T/orig20" "$T/md20" 20
maildir_check "$T/md20"
t_assert_eq "$(ls -A "$T/md20/cur" | wc -l)" 0 "20 messages: cur/ untouched"
bytes=$(cat "$T"/md20/new/* | wc -c)
grep -Eq "^tcp:test@127\.0\.0\.1:$FAKE_PORT: 20 messages, ([0-9.]+ [KMG]iB \()?$bytes bytes\)? in [0-9.]+ s\$" "$T/out" ||
  t_fail "20 messages: summary line: $(cat "$T/out") (expected $bytes bytes)"
fake_stop

# A second run into the same Maildir on the now empty server adds nothing.
serve again "$T/twenty.srv"
p3 dl "${PW[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/md20"
p3_expect 0 "second run on an empty server"
t_assert_eq "$(t_maildir_count "$T/md20")" 20 "second run: Maildir unchanged"
fake_stop

# --- round trips: 100 messages, 20 ms one-way latency ----------------------------------------
mkmsgs "$T/orig100" 100 1000

# rt NAME CLIENT-OPTIONS -- SERVER-OPTIONS: one run, all 100 delivered; prints rounds.
rt() {
  local name=$1 copts=() sopts=()
  shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do copts+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  sopts=("$@")
  serve "$name" "$T/orig100" --latency 20 "${sopts[@]}"
  p3 dl "${PW[@]}" "${copts[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/md-$name"
  p3_expect 0 "$name"
  check_all_delivered "$name" "$T/orig100" "$T/md-$name" 100
  maildir_check "$T/md-$name"
  ROUNDS=$(fake_rec 'r["rounds"]')
  t_log "$name: rounds=$ROUNDS commands=$(fake_rec 'len(r["commands"])')"
  fake_stop
}

rt pipelined --
[ "$ROUNDS" -le 8 ] || t_fail "pipelined: $ROUNDS rounds for 100 messages (expected <= 8)"

rt lockstep --pipelining=off --
[ "$ROUNDS" -ge 200 ] || t_fail "--pipelining=off: only $ROUNDS rounds (expected lock-step, >= 200)"

rt auto-nopipe --pipelining=auto -- --no-pipelining
[ "$ROUNDS" -ge 200 ] ||
  t_fail "--pipelining=auto without PIPELINING: $ROUNDS rounds (expected lock-step, >= 200)"

rt auto-pipe --pipelining=auto --
[ "$ROUNDS" -le 8 ] || t_fail "--pipelining=auto with PIPELINING: $ROUNDS rounds (expected <= 8)"

rt window10 --window 10 --
# At most 10 RETR in flight: the client must wait for replies about once per 10 messages.
[ "$ROUNDS" -ge 5 ] || t_fail "--window 10: only $ROUNDS rounds (window not honoured?)"

# --- servers without CAPA, without UIDL ------------------------------------------------------
serve nocapa "$T/orig20" --no-capa
p3 dl "${PW[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/md-nocapa"
p3_expect 0 "server without CAPA"
check_all_delivered nocapa "$T/orig20" "$T/md-nocapa" 20
maildir_check "$T/md-nocapa"
fake_stop

serve nouidl "$T/orig20" --no-uidl
p3 dl "${PW[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/md-nouidl"
p3_expect 0 "server without UIDL"
check_all_delivered nouidl "$T/orig20" "$T/md-nouidl" 20
maildir_check "$T/md-nouidl"
fake_stop

t_log "dl-basic: all checks passed"
exit 0

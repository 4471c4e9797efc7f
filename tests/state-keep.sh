#!/bin/bash
# state-keep.sh -- the UID state in keep mode, and its lock:
#   - --keep: 20 messages fetched, the server keeps all 20; a second --keep run delivers 0 and
#     sends no RETR; 5 new messages: a third run delivers exactly those 5;
#   - --keep against a server with EXPIRE 0, or without UIDL: exit 78, a clear message, no RETR;
#   - --keep --keep-days 0: what was delivered before now is deleted on the next run, nothing
#     fetched again, nothing lost;
#   - a second run on a --state held by a running one: 75, "locked by pid N (pop3 dl)".
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-120}
t_init state-keep
. "$top_srcdir/tests/lib/torture.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"

tt_gen "$T/orig" 20
tt_gen "$T/more" 5 --start 21
mkdir -p "$T/all"
cp "$T/orig"/* "$T/more"/* "$T/all/"

expect_rc() { # expect_rc NAME RC WHAT
  [ "$TT_RC" = "$2" ] || tt_fail "$1" "$1: $3: pop3 exited $TT_RC, expected $2"
}
retrs() { # retrs NAME [SESSION]: the RETR commands of a session
  tt_rec "$1" '[c for c in r["commands"] if c.startswith("RETR")]' "${2:-}"
}

# ---- --keep ----------------------------------------------------------------------------------
name=keep
tt_serve $name "$T/orig"
tt_dl $name --keep
expect_rc $name 0 "first --keep run"
t_assert_eq "$(tt_left $name)" 20 "$name: messages on the server after run 1"
tt_verify check "$T/orig" "$T/$name.md" --state "$T/$name.state" --what "$name run 1" ||
  tt_fail $name "$name: run 1 did not deliver each message once"
tt_wait_sessions $name 1
t_assert_eq "$(tt_rec $name 'r["marked"]' 1)" "[]" "$name: DELE in run 1"

tt_dl $name --keep
expect_rc $name 0 "second --keep run"
grep -q ": 0 messages" "$T/$name.out" || tt_fail $name "$name: run 2 says $(cat "$T/$name.out")"
tt_wait_sessions $name 2
t_assert_eq "$(retrs $name 2)" "[]" "$name: RETR commands in run 2"
t_assert_eq "$(tt_rec $name 'r["marked"]' 2)" "[]" "$name: DELE in run 2"
t_assert_eq "$(t_maildir_count "$T/$name.md")" 20 "$name: delivered after run 2"

cp "$T/more"/* "$T/$name.srv/"
tt_dl $name --keep
expect_rc $name 0 "third --keep run, 5 new messages"
tt_wait_sessions $name 3
t_assert_eq "$(retrs $name 3)" '["RETR 21", "RETR 22", "RETR 23", "RETR 24", "RETR 25"]' \
  "$name: RETR commands in run 3"
t_assert_eq "$(tt_left $name)" 25 "$name: messages on the server after run 3"
tt_verify check "$T/all" "$T/$name.md" --state "$T/$name.state" --what "$name run 3" ||
  tt_fail $name "$name: run 3 did not deliver exactly the 5 new messages"
t_log "$name: ok (20, then 0 without RETR, then the 5 new ones)"

# ---- --keep --keep-days 0 --------------------------------------------------------------------
# A record older than 0 days: delivered at least one second before this run.
sleep 1.2
tt_dl $name --keep --keep-days 0
expect_rc $name 0 "--keep --keep-days 0"
tt_wait_sessions $name 4
t_assert_eq "$(retrs $name 4)" "[]" "$name: RETR commands with --keep-days 0"
t_assert_eq "$(tt_rec $name 'len(r["deleted"])' 4)" 25 "$name: deleted with --keep-days 0"
tt_check $name "$T/all"
tt_unserve $name
t_log "keep-days: ok (all 25 deleted, none fetched again)"

# ---- --keep with EXPIRE 0 / without UIDL -----------------------------------------------------
for mode in expire0 no-uidl; do
  name=keep-$mode
  tt_serve $name "$T/orig" --$mode
  tt_dl $name --keep
  expect_rc $name 78 "--keep against a server with --$mode"
  case $mode in
  expire0) grep -q "EXPIRE 0" "$T/$name.lasterr" ;;
  no-uidl) grep -q "no UIDL" "$T/$name.lasterr" ;;
  esac || tt_fail $name "$name: the error does not say why: $(cat "$T/$name.lasterr")"
  tt_wait_sessions $name 1
  t_assert_eq "$(retrs $name)" "[]" "$name: RETR commands"
  t_assert_eq "$(tt_left $name)" 20 "$name: messages on the server"
  t_assert_eq "$(t_maildir_count "$T/$name.md")" 0 "$name: delivered"
  tt_unserve $name
  t_log "$name: ok ($(grep -v '^====' "$T/$name.err" | head -1))"
done

# ---- the state lock --------------------------------------------------------------------------
name=lock
tt_serve $name "$T/orig" --latency 500
"$POP3" dl "${TT_PW[@]}" --state "$T/$name.state" "tcp:test@127.0.0.1:$TT_PORT" "$T/$name.md" \
  </dev/null >"$T/$name.bg.out" 2>"$T/$name.bg.err" &
bg=$!
for ((i = 0; i < 100; i++)); do
  grep -q "pid $bg" "$T/$name.state.lock" 2>/dev/null && break
  sleep 0.05
done
grep -q "pid $bg" "$T/$name.state.lock" 2>/dev/null ||
  t_fail "$name: the first run did not take the lock"
tt_dl $name
expect_rc $name 75 "a second run on a locked state"
grep -q "locked by pid $bg (pop3 dl)" "$T/$name.lasterr" ||
  tt_fail $name "$name: stderr does not say who holds the lock: $(cat "$T/$name.lasterr")"
wait "$bg"
rc=$?
[ "$rc" = 0 ] || { cat "$T/$name.bg.err" >&2; t_fail "$name: the first run exited $rc"; }
tt_converge $name 2
tt_check $name "$T/orig"
tt_unserve $name
t_log "$name: ok ($(grep -v '^====' "$T/$name.err" | head -1))"
exit 0

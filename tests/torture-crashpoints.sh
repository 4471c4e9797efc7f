#!/bin/bash
# torture-crashpoints.sh -- exactly-once delivery across a crash at every named point of the
# delivery order (src/crash.h: after-write, after-fsync, after-rename, after-record,
# after-dele, after-barrier-new, after-journal-fsync, after-quit), the 1st, 2nd and 7th time
# it is reached: `pop3 dl` with POP3SYNC_CRASH_AT=NAME:N against 15 messages must die by
# SIGKILL (status 137), lose nothing, and clean reruns with the same --state must empty the
# server with every original delivered exactly once. A point never reached with N=1 is dead
# code (a failure); N=2 or 7 beyond the number of times a run reaches it is skipped.
# Needs a build configured with --enable-crash-points.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-200}
t_init torture-crashpoints
. "$top_srcdir/tests/lib/torture.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"
grep -q '^#define P3_CRASH_POINTS 1' "$top_builddir/config.h" 2>/dev/null ||
  t_skip "not configured with --enable-crash-points"

PAR=${PAR:-3}
# The points of src/crash.h, plus any other the sources define (so a new one is covered too).
POINTS=(after-write after-fsync after-rename after-record after-dele after-barrier-new
  after-journal-fsync after-quit)
for p in $(grep -ho 'P3_CRASH_POINT("[a-z-]*")' "$top_srcdir"/src/*.c | sed 's/.*("\(.*\)")/\1/' |
  sort -u); do
  case " ${POINTS[*]} " in
  *" $p "*) ;;
  *) POINTS+=("$p") ;;
  esac
done
t_log "crash points: ${POINTS[*]}"
start=$SECONDS

tt_gen "$T/orig" 15

crash_case() {
  local point=$1 n=$2 name=c-$1-$2
  tt_serve "$name" "$T/orig"
  POP3SYNC_CRASH_AT=$point:$n tt_dl "$name"
  if [ "$TT_RC" = 0 ]; then
    # The run went through: the point was reached fewer than n times.
    [ "$n" = 1 ] && tt_fail "$name" "$name: crash point $point never reached (dead code?)"
    tt_check "$name" "$T/orig"
    tt_pass "$name" "skipped: $point is reached fewer than $n times in a run"
    return
  fi
  [ "$TT_RC" = 137 ] ||
    tt_fail "$name" "$name: the crashing run exited $TT_RC, expected 137 (SIGKILL)"
  tt_lost "$name" "$T/orig"
  local left=$(tt_left "$name")
  cp "$T/$name.state" "$T/$name.state.crashed" 2>/dev/null
  tt_converge "$name" 5
  tt_check "$name" "$T/orig"
  tt_unserve "$name"
  tt_pass "$name" "crashed, $left left on the server, exit statuses $(tr '\n' ' ' <"$T/$name.rcs")"
}

for point in "${POINTS[@]}"; do
  for n in 1 2 7; do
    tt_case "$PAR" "c-$point-$n" crash_case "$point" "$n"
  done
done
tt_cases_done
fails=$TT_FAILS
t_log "$((${#POINTS[@]} * 3)) cases in $((SECONDS - start)) s, $fails failed"
[ "$fails" = 0 ] || t_fail "$fails crash-point cases broke exactly-once delivery"
exit 0

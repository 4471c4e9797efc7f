#!/bin/bash
# torture-all.sh -- the fault torture at full strength, run by `make torture` (not by
# `make check`, not in CI): torture-drops.sh with TORTURE_CUTS connection cuts (default 1000)
# and torture-kill.sh with TORTURE_KILLS SIGKILLs (default 100: 75 of `pop3 dl`, 25 of
# pop3syncd), one after the other (each runs PAR cases at once), then a summary in
# $TORTURE_REPORT (default $top_srcdir/bench/results/TORTURE.md). The logs stay in
# $TORTURE_LOGDIR (default $top_builddir/torture-logs). Exit 0 when both pass.
#   make torture TORTURE_FLAGS='--cuts 2000 --kills 200 --seed 7'
# `make check` runs the same scripts with the smaller defaults of tests/lib/torture.sh
# (100 cuts, 10 SIGKILLs).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -u

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
top_builddir=${top_builddir:-.}
top_builddir=$(cd "$top_builddir" && pwd)
export top_srcdir top_builddir

cuts=${TORTURE_CUTS:-1000}
kills=${TORTURE_KILLS:-100}
seed=${SEED:-20261128}
report=${TORTURE_REPORT:-$top_srcdir/bench/results/TORTURE.md}
logdir=${TORTURE_LOGDIR:-$top_builddir/torture-logs}
while [ $# -gt 0 ]; do
  case $1 in
  --cuts) cuts=$2; shift 2 ;;
  --kills) kills=$2; shift 2 ;;
  --seed) seed=$2; shift 2 ;;
  --report) report=$2; shift 2 ;;
  *) echo "usage: $0 [--cuts N] [--kills N] [--seed S] [--report FILE]" >&2; exit 64 ;;
  esac
done
case "$cuts$kills$seed" in
*[!0-9]*) echo "torture-all.sh: --cuts, --kills and --seed take numbers" >&2; exit 64 ;;
esac
[ -x "$top_builddir/pop3" ] || { echo "torture-all.sh: $top_builddir/pop3 not built" >&2; exit 1; }
mkdir -p "$logdir" "$(dirname "$report")"

# run NAME SCRIPT ENV...: one torture script with its log; sets RC and SECS.
run() {
  local name=$1 script=$2 t0
  shift 2
  echo "torture-all: $name ($*) ..." >&2
  t0=$SECONDS
  env "$@" SEED="$seed" T_TIMEOUT=$((600 + 3 * cuts + 6 * kills)) \
    bash "$top_srcdir/tests/$script" >"$logdir/$name.log" 2>&1
  RC=$?
  SECS=$((SECONDS - t0))
  echo "torture-all: $name: exit $RC in $SECS s (log: $logdir/$name.log)" >&2
}

run drops torture-drops.sh TORTURE_CUTS="$cuts"
drops_rc=$RC drops_secs=$SECS
run kill torture-kill.sh TORTURE_KILLS="$kills"
kill_rc=$RC kill_secs=$SECS

verdict() { if [ "$1" = 0 ]; then echo pass; else echo "FAIL (exit $1)"; fi; }
# count LOG REGEX: matching lines
count() { grep -Ec "$2" "$logdir/$1.log" 2>/dev/null || true; }

commit=$(git -C "$top_srcdir" describe --always --dirty 2>/dev/null || echo unknown)
{
  echo "# Fault torture"
  echo
  echo "\`make torture\` (tests/torture-all.sh) on $(date -u '+%Y-%m-%d %H:%M UTC'), source" \
    "$commit, host $(uname -srm), $(nproc 2>/dev/null || echo '?') CPUs. CI runs the same" \
    "scripts with 100 cuts and 10 SIGKILLs (the defaults in tests/lib/torture.sh)."
  echo
  echo "| trials | what | result | time |"
  echo "|---|---|---|---|"
  echo "| $cuts | connection cut after K bytes (fakepop3d --drop-after-bytes), then clean" \
    "reruns until the server is empty; every message delivered exactly once |" \
    "$(verdict "$drops_rc"): $(count drops ': PASS|^# drop after .*: ok') passed," \
    "$(count drops ': FAILED') failed | $drops_secs s |"
  echo "| $kills | SIGKILL of \`pop3 dl\` or pop3syncd at a random moment (seed $seed)," \
    "then reruns; exactly once |" \
    "$(verdict "$kill_rc"): $(count kill ': PASS') passed, $(count kill ': FAILED') failed |" \
    "$kill_secs s |"
  echo
  echo "Last lines of each log:"
  echo
  echo '```'
  grep -E '^# (reference session|a clean run|[0-9]+ offsets in|[0-9]+ \+ [0-9]+ trials)' \
    "$logdir/drops.log" "$logdir/kill.log" | sed "s|^$logdir/||"
  grep -h '^FAIL' "$logdir/drops.log" "$logdir/kill.log" | head -20
  echo '```'
} >"$report"
echo "torture-all: summary in $report" >&2
[ "$drops_rc" = 0 ] && [ "$kill_rc" = 0 ]

#!/bin/bash
# Runs every libFuzzer target of a build configured with --enable-fuzzer.
#
#   scripts/fuzz.sh BUILDDIR
#
# Each BUILDDIR/tests/fuzz/fuzz_NAME runs for $FUZZ_SECONDS (default 15)
# with -rss_limit_mb=2048, on a temporary copy of tests/fuzz/corpus/NAME
# (the source tree is never written), with tests/fuzz/NAME.dict when there
# is one.  One line per target; the crash input's path is printed and kept.
# Exits 1 if any target crashed (or is missing), 0 otherwise.
#
# Environment: FUZZ_SECONDS; FUZZ_TARGETS="fuzz_spec fuzz_mldec" for a
# subset; FUZZ_SRCDIR, the source tree (default: this script's); FUZZ_KEEP=1
# keeps the temporary directory (grown corpora, logs) even when all pass.
set -u

if [ $# -ne 1 ]; then
  echo "usage: $0 BUILDDIR" >&2
  exit 2
fi
builddir=$(cd "$1" && pwd) || exit 2
srcdir=${FUZZ_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
seconds=${FUZZ_SECONDS:-15}
targets=${FUZZ_TARGETS:-"fuzz_status fuzz_mldec fuzz_spec fuzz_netrc fuzz_config fuzz_uidstate fuzz_session fuzz_sasl fuzz_srvmem fuzz_probe"}
case $seconds in
  '' | *[!0-9]*) echo "$0: FUZZ_SECONDS must be a number of seconds" >&2; exit 2 ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/pop3sync-fuzz.XXXXXX") || exit 2
# UBSan reports must stop the run (the build also has -fno-sanitize-recover).
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# A hang that libFuzzer's own -timeout cannot interrupt still ends.
guard=()
if command -v timeout > /dev/null 2>&1; then
  guard=(timeout --signal=KILL $((seconds + 300)))
fi

failed=0
echo "fuzzing for ${seconds}s per target; work directory $work"
for name in $targets; do
  bin=$builddir/tests/fuzz/$name
  short=${name#fuzz_}
  log=$work/$name.log
  corpus=$work/corpus/$short
  if [ ! -x "$bin" ]; then
    echo "$name: MISSING ($bin not built)"
    failed=1
    continue
  fi
  mkdir -p "$corpus" "$work/artifacts"
  if [ -d "$srcdir/tests/fuzz/corpus/$short" ]; then
    cp -R "$srcdir/tests/fuzz/corpus/$short/." "$corpus/"
  fi
  seeds=$(find "$corpus" -type f | wc -l)
  dict=()
  if [ -f "$srcdir/tests/fuzz/$short.dict" ]; then
    dict=("-dict=$srcdir/tests/fuzz/$short.dict")
  fi

  "${guard[@]}" "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=25 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/$name-" "${dict[@]}" "$corpus" \
    > "$log" 2>&1
  rc=$?

  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed -n 's/.* cov: \([0-9]*\).* corp: \([0-9]*\)\/.*/cov \1, corpus \2/p')
  found=$(find "$corpus" -type f | wc -l)
  if [ $rc -eq 0 ]; then
    echo "$name: ok (${runs:-?} runs, ${cov:-no stats}, $seeds seeds -> $found inputs)"
  else
    failed=1
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    what=$(grep -m 1 -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error:|ALARM|==[0-9]+== ERROR)' "$log")
    echo "$name: CRASH (exit $rc) input: ${artifact:-none written} log: $log"
    [ -n "$what" ] && echo "  $what"
  fi
done

if [ $failed -ne 0 ]; then
  echo "fuzz: FAILED; crash inputs and logs kept in $work"
  echo "  reproduce: BUILDDIR/tests/fuzz/fuzz_NAME CRASH_FILE"
  for log in "$work"/*.log; do
    if ! grep -q '^Done [0-9]* runs' "$log"; then
      echo "---- $(basename "$log") (tail)"
      tail -n 40 "$log"
    fi
  done
  exit 1
fi
if [ -n "${FUZZ_KEEP:-}" ]; then
  echo "fuzz: all passed; kept $work"
else
  rm -rf "$work"
  echo "fuzz: all passed"
fi
exit 0

#!/bin/bash
# bench/run.sh -- `make bench`: pop3 dl against mpop, fetchmail and getmail6 over a simulated
# slow link (bench/delayproxy in front of a private Dovecot 2.3), results in bench/results/.
#
# Usage: bench/run.sh [bench.py options]   (make bench passes none)
#   e.g. bench/run.sh --cells tcp:200:100:4096 --clients pop3,mpop --runs 1  (a quick look)
#
# Environment:
#   top_srcdir top_builddir   as in the tests (default: this file's tree, the current dir)
#   POP3 DELAYPROXY TLSSPEED  the binaries (default: $top_builddir/pop3, bench/delayproxy,
#                             bench/tlsspeed)
#   BENCH_OUT                 where RESULTS.md, results.json, rtt.png go
#                             (default $top_srcdir/bench/results)
#   BENCH_TMPDIR              work directory parent, must not be tmpfs (default /var/tmp)
#   BENCH_NO_INSTALL=1        do not apt-get install the other clients
#   BENCH_TIMEOUT             watchdog for the whole run in seconds (default 3000)
#   POP3_BEFORE               another pop3 binary (e.g. the last commit's): measured as the
#                             client pop3-before beside pop3, for before/after in one run
#
# Installs fetchmail, mpop, getmail6, procmail (fetchmail's delivery agent), gnuplot-nox and
# time with apt-get when they are missing and it runs as root; a client that is still missing is
# left out and named in the results. Network: 127.0.0.1 only.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
export top_srcdir
export TMPDIR=${BENCH_TMPDIR:-/var/tmp}
export T_TIMEOUT=${BENCH_TIMEOUT:-3000}
. "$top_srcdir/tests/lib/common.sh"
t_init bench

DELAYPROXY=${DELAYPROXY:-$top_builddir/bench/delayproxy}
TLSSPEED=${TLSSPEED:-$top_builddir/bench/tlsspeed}
BENCH_OUT=${BENCH_OUT:-$top_srcdir/bench/results}
export POP3 DELAYPROXY TLSSPEED
for b in "$POP3" "$DELAYPROXY" "$TLSSPEED"; do
  [ -x "$b" ] || t_fail "$b not built (make pop3 bench/delayproxy bench/tlsspeed)"
done

fstype=$(stat -f -c %T "$TMPDIR" 2>/dev/null || echo unknown)
if [ "$fstype" = tmpfs ]; then
  t_log "WARNING: $TMPDIR is tmpfs: fsync costs nothing there; set BENCH_TMPDIR to a disk"
fi

# The other clients, from Debian, when we may.
want=()
command -v fetchmail >/dev/null || want+=(fetchmail)
command -v procmail >/dev/null || want+=(procmail)
command -v mpop >/dev/null || want+=(mpop)
command -v getmail >/dev/null || want+=(getmail6)
command -v gnuplot >/dev/null || want+=(gnuplot-nox)
if [ ${#want[@]} -gt 0 ] && [ -z "${BENCH_NO_INSTALL:-}" ] && [ "$(id -u)" = 0 ] &&
  command -v apt-get >/dev/null; then
  t_log "installing ${want[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! timeout 600 apt-get install -y -q "${want[@]}" >"$T/apt.log" 2>&1; then
    timeout 300 apt-get update -q >>"$T/apt.log" 2>&1
    timeout 600 apt-get install -y -q "${want[@]}" >>"$T/apt.log" 2>&1 ||
      t_log "apt-get install failed (see below); going on without: ${want[*]}"
    tail -n 5 "$T/apt.log" >&2
  fi
fi

# One long-lived pop3-login process (Dovecot's "high-performance" mode): it keeps its TLS
# ticket keys and session cache, so that the warm cells' second fetch can resume the session,
# as a production pop3-login pool usually can.
DOVECOT_EXTRA_CONF="${DOVECOT_EXTRA_CONF:-}
service pop3-login {
  service_count = 0
  process_min_avail = 1
  process_limit = 1
}"
export DOVECOT_EXTRA_CONF
. "$top_srcdir/tests/lib/dovecot.sh"
dovecot_start

dovecot_version=$(dovecot --version 2>/dev/null | cut -d' ' -f1)
mbedtls_version=$(dpkg-query -W -f='${Version}' libmbedtls-dev 2>/dev/null || echo 2.28)
load=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p "$BENCH_OUT"
"$PYTHON" "$top_srcdir/bench/bench.py" --work "$T" --out "$BENCH_OUT" --load "$load" \
  --fstype "$fstype" --dovecot-version "${dovecot_version:-2.3}" \
  --mbedtls-version "${mbedtls_version%%-*}" "$@"
rc=$?
[ $rc -eq 0 ] || t_fail "bench.py exited with $rc"
echo "bench: results in $BENCH_OUT/RESULTS.md"
exit 0

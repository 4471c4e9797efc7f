# shellcheck shell=bash
# tests/lib/common.sh -- shared helpers for the shell test scripts (bash only).
#
# Usage, at the top of a test script:
#
#   #!/bin/bash
#   [ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
#   . "${top_srcdir:-$(dirname "$0")/..}/tests/lib/common.sh"   # or a path of your own
#   t_init my-test-name
#
# Exit codes follow automake: 0 pass, 1 fail, 77 skip (never a skip when CI=true).
#
# Provided:
#   t_init NAME                private dir $T, EXIT trap (cleanup), watchdog
#   t_fail MSG                 "FAIL: MSG" on stderr, exit 1
#   t_skip MSG                 "SKIP: MSG", exit 77 (a failure when CI=true)
#   t_log MSG                  "# MSG" on stderr
#   t_free_port                a free TCP port on 127.0.0.1 on stdout
#   t_wait_port PORT [SECS]    wait (bounded, default 10 s) until 127.0.0.1:PORT accepts
#   t_port_open PORT           true when 127.0.0.1:PORT accepts now
#   t_bg CMD...                start CMD in the background, remember its pid ($T_BG_PID)
#   t_kill PID                 TERM, bounded wait, then KILL one pid and what it started
#   t_alive PID                true while PID runs (zombies count as dead)
#   t_on_exit CMD...           run CMD (eval'd) at exit, last registered first
#   t_assert_eq A B MSG        fail unless A = B (as strings)
#   t_assert_file_same F1 F2 MSG   fail unless the two files are byte-identical
#   t_maildir_count DIR        number of files in DIR/new and DIR/cur
# Variables: $top_srcdir $top_builddir $POP3 $PYTHON $T $T_NAME
#
# Every wait is bounded; the watchdog kills the whole test after ${T_TIMEOUT:-300} s.

if [ -z "${BASH_VERSION:-}" ]; then
  echo "common.sh: needs bash" >&2
  exit 1
fi

# top_srcdir: from the environment (automake's AM_TESTS_ENVIRONMENT), else two levels above
# this file. top_builddir: from the environment, else the current directory.
if [ -z "${top_srcdir:-}" ]; then
  top_srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
fi
top_builddir=${top_builddir:-.}
top_builddir=$(cd "$top_builddir" && pwd)
export top_srcdir top_builddir

POP3=${POP3:-$top_builddir/pop3}
# An explicit $PYTHON, else Debian's /usr/bin/python3 (the tests need only the standard
# library, and a pyenv shim on PATH costs half a second per start), else python3 on PATH.
if [ -z "${PYTHON:-}" ]; then
  if [ -x /usr/bin/python3 ]; then
    PYTHON=/usr/bin/python3
  else
    PYTHON=$(command -v python3 || true)
  fi
fi
export POP3 PYTHON

T=
T_NAME=
T_BG_PID=
_t_bg_pids=()
_t_exit_hooks=()
_t_watchdog_pid=
_t_main_pid=$$

t_log() {
  echo "# $*" >&2
}

t_fail() {
  echo "FAIL: ${T_NAME:+$T_NAME: }$*" >&2
  exit 1
}

t_skip() {
  if [ "${CI:-}" = true ]; then
    echo "FAIL: ${T_NAME:+$T_NAME: }would skip, but CI=true: $*" >&2
    exit 1
  fi
  echo "SKIP: ${T_NAME:+$T_NAME: }$*" >&2
  exit 77
}

# _t_descendants PID: all descendants of PID, deepest first, from /proc (no procps needed).
_t_descendants() {
  local -A _t_kids=()
  local f line pid rest
  for f in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null <"$f" || continue
    pid=${line%% *}
    rest=${line##*) }
    rest=${rest#* }
    _t_kids[${rest%% *}]+="$pid "
  done
  _t_descendants_walk "$1"
}

_t_descendants_walk() {
  local c
  for c in ${_t_kids[$1]:-}; do
    _t_descendants_walk "$c"
    echo "$c"
  done
}

# t_alive PID: true when PID runs. A zombie counts as dead: on these machines PID 1 does not
# reap orphans, so a daemon's child that outlived its parent stays <defunct> for good.
t_alive() {
  local line
  kill -0 "$1" 2>/dev/null || return 1
  read -r line 2>/dev/null <"/proc/$1/stat" || return 0
  line=${line##*) }
  [ "${line%% *}" != Z ]
}

# t_kill PID: stop one process and its descendants: TERM, up to 5 s, then KILL.
t_kill() {
  local pid=$1 kids k i
  t_alive "$pid" || return 0
  kids=$(_t_descendants "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    t_alive "$pid" || break
    sleep 0.1
  done
  for k in $kids $pid; do
    if t_alive "$k"; then
      kill -KILL "$k" 2>/dev/null || true
    fi
  done
  # Reap it if it is our child; ignore "not a child".
  wait "$pid" 2>/dev/null || true
  return 0
}

t_on_exit() {
  _t_exit_hooks+=("$*")
}

_t_cleanup() {
  local rc=$? i pid
  trap - EXIT
  set +e
  # Only the main shell cleans up; a subshell exiting must not tear the test down.
  if [ "${BASHPID:-$$}" != "$_t_main_pid" ]; then
    exit "$rc"
  fi
  for ((i = ${#_t_exit_hooks[@]} - 1; i >= 0; i--)); do
    eval "${_t_exit_hooks[$i]}"
  done
  for ((i = ${#_t_bg_pids[@]} - 1; i >= 0; i--)); do
    t_kill "${_t_bg_pids[$i]}"
  done
  # t_kill, not a bare kill: a TERM that lands before the watchdog has set its trap would
  # leave its sleep behind.
  [ -z "$_t_watchdog_pid" ] || t_kill "$_t_watchdog_pid"
  if [ -n "$T" ] && [ -d "$T" ]; then
    if [ -n "${KEEP_TMP:-}" ]; then
      echo "# kept $T" >&2
    else
      rm -rf "$T"
    fi
  fi
  exit "$rc"
}

# t_init NAME: private temp dir in $T, cleanup at exit, watchdog.
t_init() {
  T_NAME=$1
  _t_main_pid=$$
  T=$(mktemp -d "${TMPDIR:-/tmp}/pop3sync-$T_NAME.XXXXXX") || t_fail "mktemp failed"
  trap _t_cleanup EXIT
  # A signal becomes a normal exit so that the EXIT trap runs.
  trap 'echo "FAIL: ${T_NAME}: killed by SIGTERM" >&2; exit 1' TERM
  trap 'echo "FAIL: ${T_NAME}: interrupted" >&2; exit 1' INT HUP
  local limit=${T_TIMEOUT:-300}
  # The watchdog kills the descendants of the test first: bash runs the TERM trap only after
  # the foreground command returns, so a hung client must die for the cleanup to run.
  (
    # The sleep must not outlive the watchdog: it would hold the test's stdout open.
    sleep_pid=
    trap 'kill $sleep_pid 2>/dev/null; exit 0' TERM
    sleep "$limit" >/dev/null 2>&1 &
    sleep_pid=$!
    wait $sleep_pid
    echo "FAIL: ${T_NAME}: timeout after ${limit}s" >&2
    self=$BASHPID
    for k in $(_t_descendants "$_t_main_pid"); do
      [ "$k" = "$self" ] && continue
      kill -TERM "$k" 2>/dev/null
    done
    kill -TERM "$_t_main_pid" 2>/dev/null
    sleep 20
    kill -KILL "$_t_main_pid" 2>/dev/null
  ) &
  _t_watchdog_pid=$!
}

# t_bg CMD...: start CMD in the background; its pid goes to $T_BG_PID and the cleanup list.
t_bg() {
  "$@" &
  T_BG_PID=$!
  _t_bg_pids+=("$T_BG_PID")
}

# t_free_port: print a TCP port on 127.0.0.1 that was free a moment ago. There is a race
# (someone may take it before we bind it): callers that bind must retry.
t_free_port() {
  local port i
  if [ -n "$PYTHON" ]; then
    port=$("$PYTHON" -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()' 2>/dev/null) && [ -n "$port" ] && { echo "$port"; return 0; }
  fi
  # No python: try random ports in 20000..32767 (below Linux's ephemeral range) until one
  # does not answer a connect.
  for i in $(seq 1 50); do
    port=$((20000 + RANDOM % 12768))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

# t_port_open PORT: true when 127.0.0.1:PORT accepts a connection now.
t_port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# t_wait_port PORT [SECONDS]: wait until 127.0.0.1:PORT accepts; returns 1 on timeout.
t_wait_port() {
  local port=$1 secs=${2:-10} i
  for ((i = 0; i < secs * 10; i++)); do
    t_port_open "$port" && return 0
    sleep 0.1
  done
  return 1
}

t_assert_eq() {
  if [ "$1" != "$2" ]; then
    t_fail "${3:-values differ}: '$1' != '$2'"
  fi
}

t_assert_file_same() {
  [ -f "$1" ] || t_fail "${3:-files differ}: $1 missing"
  [ -f "$2" ] || t_fail "${3:-files differ}: $2 missing"
  if ! cmp -s "$1" "$2"; then
    echo "--- $1 vs $2:" >&2
    cmp "$1" "$2" >&2 || true
    t_fail "${3:-files differ}: $1 != $2"
  fi
}

# t_maildir_count DIR: files in DIR/new plus DIR/cur (tmp/ is not delivered mail).
t_maildir_count() {
  local n=0 d f
  for d in "$1/new" "$1/cur"; do
    [ -d "$d" ] || continue
    for f in "$d"/* "$d"/.[!.]*; do
      [ -f "$f" ] && n=$((n + 1))
    done
  done
  echo "$n"
}

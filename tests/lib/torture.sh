# shellcheck shell=bash
# tests/lib/torture.sh -- helpers for the fault-torture tests (torture-*.sh, state-keep.sh).
# Source after common.sh and t_init. Every case has a NAME and lives in files under $T:
#   $T/NAME.srv    the server's mailbox (fakepop3d --maildir; deletions persist there)
#   $T/NAME.md     the Maildir          $T/NAME.state   the UID state (kept across reruns)
#   $T/NAME.rec    fakepop3d's record   $T/NAME.out/.err/.rcs   pop3's output, exit statuses
# The helpers keep no global state except TT_PORT/TT_PID/TT_RC, so a case may run in a
# background subshell (with its own server) next to others.
#
#   tt_gen DIR N [verify.py gen options]   N small --varied messages (see verify.py gen)
#   tt_serve NAME ORIG [fakepop3d options] a fresh copy of ORIG in $T/NAME.srv, served by a new
#                                          fakepop3d; sets TT_PORT, TT_PID (saved in $T/NAME.pid)
#   tt_unserve NAME                        stop that server (TERM, then KILL)
#   tt_restart NAME [fakepop3d options]    stop it and serve $T/NAME.srv as it is now, on the
#                                          same port (the state is keyed by user@host:port)
#   tt_dl NAME [pop3 dl options]           one `pop3 dl` of the case; status in TT_RC (also
#                                          appended to $T/NAME.rcs); stderr appended to NAME.err;
#                                          SPEC is $TT_SCHEME:test@$TT_HOST:PORT (default
#                                          tcp: and 127.0.0.1; e.g. starttls and
#                                          '127.0.0.1!localhost' with --ca-file)
#   tt_converge NAME [MAX] [options]       rerun tt_dl until the server is empty (at most MAX
#                                          runs, default 5); each rerun must exit 0; fails if
#                                          the server is not empty by then
#   tt_check NAME ORIG [verify options]    the invariant (verify.py check), with the server dir
#                                          and the state file; fails the test if it does not hold
#   tt_lost NAME ORIG                      the weak invariant after a broken run (nothing lost)
#   tt_left NAME                           number of messages still on the server
#   tt_rec NAME EXPR [SESSION]             python EXPR of record r (default the last session)
#   tt_sessions NAME                       sessions recorded so far
#   tt_wait_sessions NAME N                wait (bounded) until N sessions are recorded
#   tt_spawn N CMD...                      run CMD in the background once fewer than N jobs started
#                                          by tt_spawn run (the watchdog is a job too)
#   tt_wait_all                            wait for every tt_spawn job
#   tt_case PAR ID FUNC ARGS...            run FUNC ARGS in a background subshell (at most PAR at
#                                          once); it passes by calling tt_pass ID TEXT, else fails
#   tt_cases_done                          wait for all cases, log each; TT_FAILS: how many failed
#                                          (not in $(...): wait works only in the main shell)
#   tt_msg FILE MSGID SUBJECT BODY         a small message with a Received and a Message-ID
#                                          field (what popa3d and solid-pop3d hash into a UID)
#
# Trial counts of the fault torture (make check uses the defaults; `make torture`, i.e.
# tests/torture-all.sh, sets them much higher):
#   TORTURE_CUTS   connection cuts in torture-drops.sh (default 100)
#   TORTURE_KILLS  SIGKILLs in torture-kill.sh (default 10: 3 in 4 of `pop3 dl`, the rest
#                  of the daemon, at least one of each)
# The older per-script knobs (NOFFSETS, KILLS, DAEMON_KILLS) still win when set.

TT_VERIFY=$top_srcdir/tests/lib/verify.py
TT_FAKE=$top_srcdir/tests/fakepop3d.py
TT_PW=(--password-command 'echo secret')
TT_LIMIT=${TT_LIMIT:-60}
TT_PORT=
TT_PID=
TT_RC=
TT_SCHEME=${TT_SCHEME:-tcp}
TT_HOST=${TT_HOST:-127.0.0.1}
TORTURE_CUTS=${TORTURE_CUTS:-100}
TORTURE_KILLS=${TORTURE_KILLS:-10}

tt_verify() {
  "$PYTHON" "$TT_VERIFY" "$@"
}

tt_gen() {
  local dir=$1 n=$2
  shift 2
  tt_verify gen "$dir" "$n" "$@" || t_fail "verify.py gen $dir $n failed"
}

tt_serve() {
  local name=$1 orig=$2 i
  shift 2
  rm -rf "$T/$name.srv" "$T/$name.port"
  if [ -n "$orig" ]; then
    cp -a "$orig" "$T/$name.srv"
  else
    mkdir -p "$T/$name.srv"
  fi
  "$PYTHON" "$TT_FAKE" --maildir "$T/$name.srv" --port-file "$T/$name.port" \
    --record "$T/$name.rec" --lifetime 400 "$@" >/dev/null 2>>"$T/$name.log" </dev/null &
  TT_PID=$!
  echo "$TT_PID" >"$T/$name.pid"
  # The main shell also remembers it for the final cleanup.
  if [ "${BASHPID:-$$}" = "$_t_main_pid" ]; then
    _t_bg_pids+=("$TT_PID")
  fi
  for ((i = 0; i < 300; i++)); do
    [ -s "$T/$name.port" ] && break
    t_alive "$TT_PID" || break
    sleep 0.03
  done
  [ -s "$T/$name.port" ] || { cat "$T/$name.log" >&2; t_fail "$name: fakepop3d did not start"; }
  TT_PORT=$(cat "$T/$name.port")
}

tt_restart() {
  local name=$1 port
  shift
  port=$(cat "$T/$name.port")
  tt_unserve "$name"
  mv "$T/$name.srv" "$T/$name.srv.keep"
  tt_serve "$name" "$T/$name.srv.keep" --port "$port" "$@"
  rm -rf "$T/$name.srv.keep"
}

tt_unserve() {
  local name=$1 pid i
  [ -f "$T/$name.pid" ] || return 0
  pid=$(cat "$T/$name.pid")
  rm -f "$T/$name.pid"
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 100; i++)); do
    t_alive "$pid" || break
    sleep 0.02
  done
  t_alive "$pid" && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}

tt_port() {
  cat "$T/$1.port"
}

# tt_dl NAME [options]: pop3 dl against NAME's server, into NAME's Maildir and state.
tt_dl() {
  local name=$1
  shift
  TT_RC=0
  echo "==== pop3 dl $*" >>"$T/$name.err"
  timeout -k 5 "$TT_LIMIT" "$POP3" dl "${TT_PW[@]}" --state "$T/$name.state" "$@" \
    "$TT_SCHEME:test@$TT_HOST:$(tt_port "$name")" "$T/$name.md" </dev/null >"$T/$name.out" \
    2>"$T/$name.lasterr" || TT_RC=$?
  cat "$T/$name.lasterr" >>"$T/$name.err"
  echo "$TT_RC" >>"$T/$name.rcs"
}

tt_left() {
  find "$T/$1.srv" -maxdepth 1 -type f ! -name '.*' | wc -l
}

# tt_show NAME: the case's files for a failure report.
tt_show() {
  local name=$1
  {
    echo "---- $name: exit statuses: $(tr '\n' ' ' <"$T/$name.rcs" 2>/dev/null)"
    echo "---- $name: pop3 stderr (last 25 lines)"
    tail -n 25 "$T/$name.err" 2>/dev/null
    if [ -f "$T/$name.state" ]; then
      echo "---- $name: state journal (last 8 lines of $(wc -l <"$T/$name.state"))"
      tail -n 8 "$T/$name.state"
    fi
  } >&2
}

tt_fail() {
  tt_show "$1"
  shift
  t_fail "$*"
}

tt_converge() {
  local name=$1 max=${2:-5} i
  shift 2 2>/dev/null || shift $#
  for ((i = 0; i < max; i++)); do
    [ "$(tt_left "$name")" = 0 ] && return 0
    tt_dl "$name" "$@"
    [ "$TT_RC" = 0 ] || tt_fail "$name" "$name: rerun $((i + 1)) exited $TT_RC, expected 0"
  done
  [ "$(tt_left "$name")" = 0 ] ||
    tt_fail "$name" "$name: $(tt_left "$name") messages still on the server after $max reruns"
}

tt_check() {
  local name=$1 orig=$2
  shift 2
  tt_verify check "$orig" "$T/$name.md" --server "$T/$name.srv" --state "$T/$name.state" \
    --what "$name" "$@" || tt_fail "$name" "$name: exactly-once invariant broken"
}

tt_lost() {
  tt_verify lost "$2" "$T/$1.md" "$T/$1.srv" --what "$1" ||
    tt_fail "$1" "$1: a message was lost or mangled"
}

tt_rec() {
  "$PYTHON" - "$T/$1.rec" "$2" "${3:-}" <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
if sys.argv[3]:
    r = [x for x in recs if x["session"] == int(sys.argv[3])][0]
else:
    r = max(recs, key=lambda x: x["session"])
v = eval(sys.argv[2], {"recs": recs, "r": r})
if isinstance(v, bool):
    print("true" if v else "false")
elif isinstance(v, (int, float, str)):
    print(v)
else:
    print(json.dumps(v))
EOF
}

tt_sessions() {
  if [ -f "$T/$1.rec" ]; then
    grep -c . "$T/$1.rec"
  else
    echo 0
  fi
}

tt_wait_sessions() {
  local i
  for ((i = 0; i < 200; i++)); do
    [ "$(tt_sessions "$1")" -ge "$2" ] && return 0
    sleep 0.05
  done
  t_fail "$1: fakepop3d recorded $(tt_sessions "$1") sessions, expected $2"
}

TT_JOBS=()
tt_spawn() {
  local max=$1 p live
  shift
  while :; do
    live=()
    for p in "${TT_JOBS[@]}"; do
      t_alive "$p" && live+=("$p")
    done
    TT_JOBS=("${live[@]}")
    [ "${#TT_JOBS[@]}" -lt "$max" ] && break
    sleep 0.05
  done
  "$@" &
  TT_JOBS+=($!)
}

tt_wait_all() {
  local p
  for p in "${TT_JOBS[@]}"; do
    wait "$p" 2>/dev/null
  done
  TT_JOBS=()
}

# Cases run in subshells; a case passes when it wrote $T/res/ID (tt_pass), so a t_fail inside
# it (which ends only the subshell) makes it fail. Servers a case started are stopped when its
# subshell exits.
TT_CASES=()
tt_case() {
  local par=$1 id=$2
  shift 2
  mkdir -p "$T/res"
  TT_CASES+=("$id")
  tt_spawn "$par" _tt_case_run "$id" "$@"
}

_tt_case_run() {
  local id=$1
  shift
  (
    trap '_tt_case_cleanup' EXIT
    "$@"
  ) >"$T/res/$id.log" 2>&1
}

_tt_case_cleanup() {
  local f
  for f in "$T"/*.pid; do
    [ -f "$f" ] || continue
    # Only the servers this subshell started: their pid files hold children of this shell.
    if [ "$(ps -o ppid= -p "$(cat "$f" 2>/dev/null)" 2>/dev/null | tr -d ' ')" = "$BASHPID" ]; then
      tt_unserve "$(basename "$f" .pid)"
    fi
  done
}

tt_pass() {
  local id=$1
  shift
  echo "${*:-ok}" >"$T/res/$id"
}

tt_cases_done() {
  local id fails=0
  tt_wait_all
  for id in "${TT_CASES[@]}"; do
    if [ -f "$T/res/$id" ]; then
      t_log "$id: PASS $(cat "$T/res/$id")"
    else
      fails=$((fails + 1))
      echo "---- $id: FAILED" >&2
      tail -n 40 "$T/res/$id.log" >&2
    fi
  done
  TT_CASES=()
  TT_FAILS=$fails
}

tt_msg() {
  mkdir -p "$(dirname "$1")"
  printf '%s\n' \
    'Received: from mx.example.org (mx.example.org [192.0.2.1])' \
    '	by pop.example.net with ESMTP id 4QxYz; Mon, 1 Jan 2024 10:00:00 +0000' \
    'From: Sender <sender@example.org>' \
    'To: Test User <test@example.net>' \
    "Subject: $3" \
    'Date: Mon, 1 Jan 2024 10:00:00 +0000' \
    "Message-ID: <$2@example.org>" \
    '' \
    "$4" >"$1"
}

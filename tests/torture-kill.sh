#!/bin/bash
# torture-kill.sh -- exactly-once delivery across SIGKILL at random moments:
# (TORTURE_KILLS trials in all, default 10, `make torture`: 100; 3 in 4 of them `pop3 dl`)
#   - `pop3 dl` (200 small messages, fakepop3d --latency 5): KILLS trials (default 7), each
#     killed after a random delay in [0, the duration of a clean run], then rerun with the same
#     --state until the server is empty; every original delivered exactly once;
#   - pop3syncd (one account, interval 1, state_dir in $T): DAEMON_KILLS trials (default 3),
#     the daemon killed at a random moment of its first fetch, restarted, and left to empty
#     the server; then stopped and the same invariant checked.
# The random delays come from SEED (default fixed, printed); rerun with SEED=N to reproduce.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-$((200 + 4 * ${TORTURE_KILLS:-10}))}
t_init torture-kill
. "$top_srcdir/tests/lib/torture.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"
DAEMON=${DAEMON:-$top_builddir/pop3syncd}
POP3CTL=${POP3CTL:-$top_builddir/pop3ctl}

SEED=${SEED:-20261128}
# TORTURE_KILLS (tests/lib/torture.sh) split 3:1, at least one of each.
KILLS=${KILLS:-$((TORTURE_KILLS * 3 / 4 > 0 ? TORTURE_KILLS * 3 / 4 : 1))}
DAEMON_KILLS=${DAEMON_KILLS:-$((TORTURE_KILLS - KILLS > 0 ? TORTURE_KILLS - KILLS : 1))}
PAR=${PAR:-2}
RANDOM=$SEED
t_log "random seed $SEED (SEED=$SEED reproduces the delays)"
start=$SECONDS

tt_gen "$T/orig" 200

# ms_sleep MS
ms_sleep() {
  sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"
}

# The duration of a clean run.
tt_serve ref "$T/orig" --latency 5
t0=$(date +%s%N)
tt_dl ref
t1=$(date +%s%N)
[ "$TT_RC" = 0 ] || tt_fail ref "clean reference run exited $TT_RC"
tt_check ref "$T/orig"
tt_unserve ref
dur_ms=$(((t1 - t0) / 1000000))
t_log "a clean run of 200 messages takes $dur_ms ms"

kill_case() {
  local name=$1 delay=$2 pid rc
  tt_serve "$name" "$T/orig" --latency 5
  "$POP3" dl "${TT_PW[@]}" --state "$T/$name.state" "tcp:test@127.0.0.1:$TT_PORT" "$T/$name.md" \
    </dev/null >"$T/$name.out" 2>>"$T/$name.err" &
  pid=$!
  ms_sleep "$delay"
  kill -KILL "$pid" 2>/dev/null
  wait "$pid"
  rc=$?
  echo "$rc" >>"$T/$name.rcs"
  [ "$rc" = 137 ] || [ "$rc" = 0 ] || tt_fail "$name" "$name: the killed run exited $rc"
  tt_lost "$name" "$T/orig"
  local left
  left=$(tt_left "$name")
  tt_converge "$name" 5
  tt_check "$name" "$T/orig"
  tt_unserve "$name"
  tt_pass "$name" "killed after $delay ms (exit $rc), $left left on the server," \
    "runs: $(tr '\n' ' ' <"$T/$name.rcs")"
}

for ((i = 1; i <= KILLS; i++)); do
  delay=$((RANDOM * (dur_ms + 50) / 32767))
  tt_case "$PAR" "kill$i" kill_case "kill$i" "$delay"
done
tt_cases_done
fails=$TT_FAILS

# ---- the daemon
daemon_case() {
  local name=$1 delay=$2 dpid i alive= sock=$T/$1.sock
  [ -x "$DAEMON" ] || t_fail "$DAEMON not built"
  tt_serve "$name" "$T/orig" --latency 5
  mkdir -p "$T/$name.etc"
  # As root the daemon runs the account as its user (nobody here), which must reach the
  # Maildir; its journal is then in state_dir/nobody/.
  local user_line= state_sub=
  if [ "$(id -u)" = 0 ]; then
    chmod 0711 "$T"
    mkdir -p "$T/$name.md"
    chown nobody:nogroup "$T/$name.md"
    user_line='user = "nobody";'
    state_sub=nobody/
  fi
  cat >"$T/$name.etc/conf" <<EOF
control_socket = "$sock";
state_dir = "$T/$name.statedir";
timeout = 20;
interval = 1;
accounts = (
  { name = "acct"; $user_line
    server = "tcp:test@127.0.0.1:$TT_PORT";
    maildir = "$T/$name.md";
    password = "secret"; }
);
EOF
  chmod 600 "$T/$name.etc/conf"
  P3_TORTURE_CASE=$name "$DAEMON" -c "$T/$name.etc/conf" </dev/null >>"$T/$name.err" 2>&1 &
  dpid=$!
  ms_sleep "$delay"
  kill -KILL "$dpid" 2>/dev/null
  wait "$dpid" 2>/dev/null
  echo "killed after $delay ms" >>"$T/$name.rcs"
  # A worker outlives its daemon briefly: PR_SET_PDEATHSIG gives it SIGTERM and it stops
  # at a safe point.  Check the server and Maildir only once it is gone.
  # Its workers carry the case's name in their environment.
  for ((i = 0; i < 100; i++)); do
    alive=$(grep -lzsx "P3_TORTURE_CASE=$name" /proc/[0-9]*/environ 2>/dev/null)
    [ -z "$alive" ] && break
    sleep 0.1
  done
  [ -z "$alive" ] || tt_fail "$name" "$name: a worker outlived its killed daemon by 10 s"
  # The journal is named by the mailbox (pop3(1), FILES).
  ln -sf "$name.statedir/${state_sub}test@127.0.0.1:$TT_PORT.state" "$T/$name.state"
  tt_lost "$name" "$T/orig"
  local left
  left=$(tt_left "$name")
  # Restart; it must empty the server on its own.
  "$DAEMON" -c "$T/$name.etc/conf" </dev/null >>"$T/$name.err" 2>&1 &
  dpid=$!
  for ((i = 0; i < 300; i++)); do
    [ "$(tt_left "$name")" = 0 ] && break
    t_alive "$dpid" || tt_fail "$name" "$name: pop3syncd exited after the restart"
    sleep 0.1
  done
  [ "$(tt_left "$name")" = 0 ] ||
    { kill -KILL "$dpid"; tt_fail "$name" "$name: server not empty 30 s after the restart"; }
  # Let the fetch that emptied it finish (compaction) before the check: ask the daemon.
  for ((i = 0; i < 50; i++)); do
    "$POP3CTL" -s "$sock" status --json >"$T/$name.status" 2>/dev/null &&
      "$PYTHON" -c 'import json,sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if all(x["state"] == "idle" for x in d["accounts"]) else 1)' "$T/$name.status" && break
    sleep 0.1
  done
  kill -TERM "$dpid"
  for ((i = 0; i < 100; i++)); do
    t_alive "$dpid" || break
    sleep 0.1
  done
  t_alive "$dpid" &&
    { kill -KILL "$dpid"; tt_fail "$name" "$name: pop3syncd ignored SIGTERM for 10 s"; }
  wait "$dpid"
  echo "daemon exit $?" >>"$T/$name.rcs"
  tt_check "$name" "$T/orig"
  tt_unserve "$name"
  tt_pass "$name" "daemon killed after $delay ms, $left left on the server"
}

if [ -x "$DAEMON" ] && [ -x "$POP3CTL" ]; then
  for ((i = 1; i <= DAEMON_KILLS; i++)); do
    # The daemon starts its first fetch at once, and needs less time than `pop3 dl` (no
    # password command, no process start-up).
    delay=$((RANDOM * (dur_ms * 3 / 4) / 32767))
    tt_case "$PAR" "daemon$i" daemon_case "daemon$i" "$delay"
  done
  tt_cases_done
  fails=$((fails + TT_FAILS))
else
  [ "${CI:-}" = true ] && t_fail "pop3syncd/pop3ctl not built"
  t_log "pop3syncd not built: daemon trials skipped"
fi

t_log "$KILLS + $DAEMON_KILLS trials in $((SECONDS - start)) s (seed $SEED), $fails failed"
[ "$fails" = 0 ] || t_fail "$fails kill trials broke exactly-once delivery (seed $SEED)"
exit 0

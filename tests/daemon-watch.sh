#!/bin/bash
# daemon-watch.sh -- seeing into pop3syncd (issue 12):
#   - `pop3ctl status --json` shows progress{messages_done, messages_total, bytes_done,
#     bytes_total} with plausible numbers while an account fetches from a slow server, and no
#     progress once it is idle; the table says "fetching D/T, X of Y";
#   - `pop3ctl watch --json` streams started / listed / progress / finished events for that
#     run; `watch` of an unknown account is 64; a watcher ends (0) when the daemon stops;
#   - an empty poll leaves no line in the log (debug only); a failed run's line says when
#     the next try is; a run with mail logs a human-readable size and duration;
#   - `pop3syncd -v` logs the protocol trace, each line with the account's name, the password
#     masked;
#   - `pop3ctl reload` lists the accounts added, removed and changed; an account whose
#     password was fixed forgets its backoff and runs right away.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-120}
t_init daemon-watch
. "$top_srcdir/tests/lib/daemon.sh"
daemon_require

# 20 messages of about 20 kB at 80 kB/s: a run of about 5 s.
fake_start slow --generate 20:20000 --body-rate 80000
PORT_SLOW=$FAKE_PORT
fake_start empty
PORT_EMPTY=$FAKE_PORT
fake_start auth --generate 2
PORT_AUTH=$FAKE_PORT

# account NAME PORT PASSWORD [extra]
account() {
  cat <<EOF
  { name = "$1"; server = "tcp:test@127.0.0.1:$2"; maildir = "$T/mail/$1";
    password_command = "echo $3"; interval = ${4:-3600}; }
EOF
}

CONF=$T/etc/pop3sync.conf
mkdir -p "$T/etc"
# write_conf AUTHPASSWORD ACCOUNT...
write_conf() {
  local pw=$1 a sep=
  shift
  {
    daemon_conf_globals
    echo "accounts = ("
    for a in "$@"; do
      printf '%s' "$sep"
      sep=,
      case $a in
      slow) account slow "$PORT_SLOW" secret ;;
      empty) account empty "$PORT_EMPTY" secret ;;
      extra) account extra "$PORT_EMPTY" secret ;;
      auth) account auth "$PORT_AUTH" "$pw" 20 ;;
      esac
    done
    echo ");"
  } | daemon_conf "$CONF"
}
write_conf wrong slow empty auth
daemon_start "$CONF"

# ---- watch of an unknown account: 64, at once.
timeout 10 "$POP3CTL" -s "$DAEMON_SOCK" watch nosuch >/dev/null 2>"$T/err"
t_assert_eq "$?" 64 "watch nosuch: exit status ($(cat "$T/err"))"

# ---- progress while fetching, watched
t_bg "$POP3CTL" -s "$DAEMON_SOCK" watch --json slow >"$T/watch.out" 2>"$T/watch.err"
WATCH_PID=$T_BG_PID
t_bg "$POP3CTL" -s "$DAEMON_SOCK" watch >"$T/watch-text.out" 2>"$T/watch-text.err"
WATCH_TEXT_PID=$T_BG_PID
sleep 0.3
ctl fetch --no-wait slow >/dev/null || d_fail "fetch --no-wait slow"

_mid_run() {
  daemon_status_json "$T/mid.json" slow
  [ "$(jq_py "$T/mid.json" "((acc('slow').get('progress') or {}).get('bytes_done', 0) > 0 and
        acc('slow')['progress']['messages_total'] > 0)")" = true ]
}
wait_until 30 _mid_run || { cat "$T/mid.json" >&2; d_fail "no progress seen while slow fetched"; }
t_assert_eq "$(jq_py "$T/mid.json" "acc('slow')['state']")" fetching "state mid-run"
t_assert_eq "$(jq_py "$T/mid.json" "acc('slow')['progress']['messages_total']")" 20 \
  "progress.messages_total"
plausible=$(jq_py "$T/mid.json" "(lambda p: (p['messages_done'] <= p['messages_total'] and
  0 < p['bytes_done'] <= p['bytes_total'] and 20 * 19000 < p['bytes_total'] < 20 * 25000))(
  acc('slow')['progress'])")
t_assert_eq "$plausible" true "progress numbers plausible: $(jq_py "$T/mid.json" "acc('slow')['progress']")"
ctl status >"$T/table.out" || d_fail "status table mid-run"
grep -Eq '^slow +fetching [0-9]+/20, [0-9.]+ (B|KiB|MiB) of [0-9.]+ KiB ' "$T/table.out" ||
  { cat "$T/table.out" >&2; d_fail "the table shows no progress for slow"; }

_slow_idle() {
  daemon_status_json "$T/after.json" slow
  [ "$(jq_py "$T/after.json" "acc('slow')['state']")" = idle ]
}
wait_until 40 _slow_idle || d_fail "slow did not finish"
t_assert_eq "$(jq_py "$T/after.json" "'progress' in acc('slow')")" false "no progress when idle"
# The account's own first poll (a random delay after the start) may come after the fetch
# and find nothing: count what the daemon delivered in all.
t_assert_eq "$(jq_py "$T/after.json" "acc('slow')['total_messages']")" 20 "slow: messages"

_watched_finish() { grep -q '"event":"finished"' "$T/watch.out"; }
wait_until 10 _watched_finish || { cat "$T/watch.out" >&2; d_fail "watch: no finished event"; }
t_kill "$WATCH_PID"
"$PYTHON" - "$T/watch.out" <<'EOF' || { cat "$T/watch.out" >&2; d_fail "watch --json events"; }
import json, sys
evs = [json.loads(l) for l in open(sys.argv[1])]
assert all(e.get("account") == "slow" for e in evs), "another account's event"
kinds = [e["event"] for e in evs]
for k in ("started", "listed", "progress", "finished"):
    assert k in kinds, "no %s event" % k
# The run that fetched (the account's own first poll may come before or after the
# fetch and find nothing), in order.
starts = [j for j, k in enumerate(kinds) if k == "started"]
runs = [(j, kinds[j:(starts + [len(kinds)])[n + 1]]) for n, j in enumerate(starts)]
full = [(j, r) for j, r in runs if len(r) > 1 and r[1] == "listed" and evs[j + 1]["messages"] == 20]
assert len(full) == 1, runs
i, run = full[0]
assert run[-1] == "finished", run
listed = evs[i + 1]
assert listed["bytes"] > 20 * 19000, listed
fin = evs[i + len(run) - 1]
assert fin["result"] == "ok" and fin["exit"] == 0 and fin["error"] is None, fin
assert fin["milliseconds"] >= 1000, fin
for e in evs:
    if e["event"] == "progress":
        assert e["messages_done"] <= e["messages_total"] == 20, e
        assert e["bytes_done"] <= e["bytes_total"], e
EOF
grep -Eq ' slow: fetching [0-9]+/20, ' "$T/watch-text.out" ||
  { cat "$T/watch-text.out" >&2; d_fail "watch (text): no progress line"; }
grep -Eq ' slow: finished ok: 20 messages \([0-9.]+ KiB\) in [0-9.]+ s$' "$T/watch-text.out" ||
  { cat "$T/watch-text.out" >&2; d_fail "watch (text): no finished line"; }
grep -Eq "slow: 20 messages \([0-9.]+ KiB\) in [0-9.]+ s\$" "$DAEMON_LOG" ||
  d_fail "the result line has no human-readable size and duration"

# ---- an empty poll is a debug line: nothing in the log
out=$(timeout 60 "$POP3CTL" -s "$DAEMON_SOCK" fetch empty 2>"$T/err")
t_assert_eq "$out" "empty: ok, 0 messages, 0 bytes" "fetch empty ($(cat "$T/err"))"
grep -q 'empty:' "$DAEMON_LOG" && d_fail "an empty poll was logged without -v"

# ---- a wrong password: a failure line with the next try; fixed + reload runs at once
_auth_failed() {
  daemon_status_json "$T/auth.json" auth
  [ "$(jq_py "$T/auth.json" "acc('auth')['auth_failed']")" = true ]
}
wait_until 30 _auth_failed || d_fail "auth never failed"
t_assert_eq "$(jq_py "$T/auth.json" "acc('auth')['state']")" backoff "auth: state"
grep -Eq 'auth: .*; next try in 1[45] min' "$DAEMON_LOG" || d_fail "no next try in the failure line"
first_finish=$(jq_py "$T/auth.json" "acc('auth')['last_run']['finished']")
write_conf secret slow empty auth
out=$(ctl reload 2>"$T/err")
t_assert_eq "$?" 0 "reload: exit ($(cat "$T/err"))"
t_assert_eq "$out" "configuration reloaded
changed: auth" "reload output (password fixed)"
grep -q 'reload: .*changed: auth' "$DAEMON_LOG" || d_fail "the reload's log line names no change"
_auth_ok() {
  daemon_status_json "$T/auth2.json" auth
  [ "$(jq_py "$T/auth2.json" "(acc('auth')['last_run'] or {}).get('result')")" = ok ]
}
# interval 20: a new account's first poll comes within 2 s; the backoff was 15 min.
wait_until 15 _auth_ok || { cat "$T/auth2.json" >&2; d_fail "auth did not run after the fix"; }
t_assert_eq "$(jq_py "$T/auth2.json" "acc('auth')['consecutive_failures']")" 0 "auth: failures"
t_assert_eq "$(jq_py "$T/auth2.json" "acc('auth')['auth_failed']")" false "auth: auth_failed"

# ---- reload lists added and removed accounts; JSON reply too
t_bg "$POP3CTL" -s "$DAEMON_SOCK" watch --json >"$T/watch-all.out" 2>"$T/watch-all.err"
WATCH_ALL_PID=$T_BG_PID
sleep 0.3
write_conf secret slow auth extra
out=$(ctl reload 2>"$T/err")
t_assert_eq "$out" "configuration reloaded
added: extra
removed: empty" "reload output (added, removed)"
_reload_event() { grep -q '"event":"reload"' "$T/watch-all.out"; }
wait_until 10 _reload_event || d_fail "watch: no reload event"
t_assert_eq "$("$PYTHON" -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e["event"] == "reload":
        print(e["added"], e["removed"], e["changed"])' "$T/watch-all.out")" \
  "['extra'] ['empty'] []" "watch: the reload event"

# ---- the daemon stops: the watcher says so and ends with 0
daemon_stop || d_fail "daemon_stop"
_watcher_gone() { ! t_alive "$WATCH_ALL_PID"; }
wait_until 10 _watcher_gone || d_fail "the watcher did not end with the daemon"
wait "$WATCH_ALL_PID"
t_assert_eq "$?" 0 "watcher's exit status when the daemon stops ($(cat "$T/watch-all.err"))"
tail -n 1 "$T/watch-all.out" | grep -q '"event":"stopping"' || d_fail "no stopping event"
t_kill "$WATCH_TEXT_PID"

# ---- -v: the worker's protocol trace, each line with the account's name, no password
lines_before=$(wc -l <"$DAEMON_LOG")
daemon_start "$CONF" -v
out=$(timeout 60 "$POP3CTL" -s "$DAEMON_SOCK" fetch auth 2>"$T/err")
t_assert_eq "$?" 0 "fetch auth with -v ($(cat "$T/err"))"
daemon_stop || d_fail "daemon_stop (-v)"
tail -n +"$((lines_before + 1))" "$DAEMON_LOG" >"$T/verbose.log"
grep -q '^pop3syncd: auth: > USER test$' "$T/verbose.log" || d_fail "-v: no USER line for auth"
grep -q '^pop3syncd: auth: > PASS \*' "$T/verbose.log" || d_fail "-v: no masked PASS line"
grep -q '^pop3syncd: auth: < +OK' "$T/verbose.log" || d_fail "-v: no reply lines"
grep -q secret "$T/verbose.log" && d_fail "-v: the password reached the log"
t_log "daemon-watch: all checks passed"
exit 0

#!/bin/bash
# daemon-control.sh -- pop3ctl against a running pop3syncd:
#   - READY=1 on $NOTIFY_SOCKET comes when the control socket already answers; STOPPING=1 on
#     SIGTERM; the socket is 0600 in a 0700 directory and removed at a clean exit;
#   - `fetch ACCOUNT` runs now and returns when the mail is delivered; `fetch --all`;
#     `fetch --no-wait` returns at once; a fetch during a run waits for it and runs once more;
#   - `reload` with a broken file: 78, FILE:LINE, the old config stays; with a changed file the
#     accounts change; SIGHUP likewise;
#   - the peer credential check refuses another uid (as root only);
#   - no daemon: 69 and one line; a second daemon on the same socket: 75; a stale socket left
#     by kill -9 does not keep a new daemon from starting.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-120}
t_init daemon-control
. "$top_srcdir/tests/lib/daemon.sh"
daemon_require

# add_mail NAME FIRST N: N new messages numbered from FIRST into the server directory
# $T/srv-NAME and the originals $T/orig-NAME; the new files' names go to $T/new-NAME.
add_mail() {
  local name=$1 first=$2 n=$3
  rm -rf "$T/gen-$name"
  mail_gen "$T/gen-$name" "$n" --varied --seed "$((${#name} * 7 + first))" --start "$first"
  mkdir -p "$T/orig-$name" "$T/srv-$name"
  cp "$T/gen-$name"/* "$T/orig-$name/"
  # Into the server directory by rename, so that a login never sees half a file.
  local f
  for f in "$T/gen-$name"/*; do
    cp "$f" "$T/srv-$name/.tmp" && mv "$T/srv-$name/.tmp" "$T/srv-$name/${f##*/}"
  done
}

# Bytes a run saves for the files in $T/gen-NAME (LF files are delivered as they are).
gen_bytes() {
  cat "$T/gen-$1"/* | wc -c
}

mkdir -p "$T/srv-one" "$T/srv-two" "$T/srv-slow" "$T/srv-extra"
add_mail one 1 5
add_mail two 1 3
add_mail extra 1 4
fake_start one --maildir "$T/srv-one"
PORT_ONE=$FAKE_PORT
fake_start two --maildir "$T/srv-two"
PORT_TWO=$FAKE_PORT
fake_start slow --maildir "$T/srv-slow" --latency 300
PORT_SLOW=$FAKE_PORT
fake_start extra --maildir "$T/srv-extra"
PORT_EXTRA=$FAKE_PORT

# account NAME PORT [extra settings]
account() {
  cat <<EOF
  { name = "$1";
    server = "tcp:test@127.0.0.1:$2";
    maildir = "$T/mail/$1";
    password_command = "echo secret";$3 }
EOF
}

# write_conf FILE ACCOUNT...: a config with those accounts (one, two, slow, extra, off).
write_conf() {
  local file=$1 a sep=
  shift
  {
    daemon_conf_globals
    echo "interval = ${INTERVAL:-3600};"
    echo "accounts = ("
    for a in "$@"; do
      printf '%s' "$sep"
      sep=,
      case $a in
      one) account one "$PORT_ONE" ;;
      two) account two "$PORT_TWO" ;;
      slow) account slow "$PORT_SLOW" ;;
      extra) account extra "$PORT_EXTRA" ;;
      off) account off "$PORT_ONE" " enabled = false;" ;;
      esac
    done
    echo ");"
  } | daemon_conf "$file"
}

names_of() {
  "$PYTHON" -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$@"
}

status_names() {
  daemon_status_json "$T/names.json"
  jq_py "$T/names.json" "[a['name'] for a in d['accounts']]"
}

CONF=$T/etc/pop3sync.conf
mkdir -p "$T/etc"
write_conf "$CONF" one two slow off

# ---- READY=1 / STOPPING=1 on $NOTIFY_SOCKET
# The listener prints each datagram to $T/notify.out; right after READY=1 it connects to the
# control socket, asks for the status and writes "control: ok PID" (or the failure).
cat >"$T/notify.py" <<'EOF'
import json, os, socket, sys
path, ctl, out = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(120)
def note(text):
    with open(out, "a") as f:
        f.write(text + "\n")
note("listening")
while True:
    try:
        data = s.recv(4096).decode("utf-8", "replace")
    except socket.timeout:
        break
    for line in data.split("\n"):
        if line.startswith("WATCHDOG="):
            continue
        note("dgram: " + line)
    if "READY=1" in data.split("\n"):
        try:
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.settimeout(20)
            c.connect(ctl)
            c.sendall(b"status\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = c.recv(65536)
                if not chunk:
                    break
                buf += chunk
            note("control: ok %s" % json.loads(buf)["daemon"]["pid"])
        except Exception as e:
            note("control: failed: %r" % e)
    if "STOPPING=1" in data.split("\n"):
        break
EOF
t_bg "$PYTHON" "$T/notify.py" "$T/notify.sock" "$DAEMON_SOCK" "$T/notify.out"
wait_until 10 grep -q listening "$T/notify.out" 2>/dev/null || t_fail "notify listener did not start"

NOTIFY_SOCKET=$T/notify.sock daemon_start "$CONF"
MAIN_PID=$DAEMON_PID
wait_until 10 grep -q '^control: ' "$T/notify.out" 2>/dev/null ||
  { cat "$T/notify.out" >&2; d_fail "READY=1 never arrived on NOTIFY_SOCKET"; }
grep -qx 'dgram: READY=1' "$T/notify.out" || { cat "$T/notify.out" >&2; d_fail "no READY=1 line"; }
grep -qx "control: ok $MAIN_PID" "$T/notify.out" ||
  { cat "$T/notify.out" >&2; d_fail "the control socket did not answer right after READY=1"; }
grep -q 'STOPPING=1' "$T/notify.out" && d_fail "STOPPING=1 before any SIGTERM"

# ---- the socket's permissions
t_assert_eq "$(stat -c %a "$DAEMON_SOCK")" 600 "control socket mode"
t_assert_eq "$(stat -c %a "$(dirname "$DAEMON_SOCK")")" 700 "control socket directory mode"
t_assert_eq "$(stat -c %F "$DAEMON_SOCK")" socket "control socket type"

# ---- fetch --all: every enabled account, in config order, disabled ones left out.
# (This also stops the accounts' first scheduled polls: the next ones are an hour away.)
out=$(timeout 60 "$POP3CTL" -s "$DAEMON_SOCK" fetch --all 2>"$T/err")
rc=$?
t_assert_eq "$rc" 0 "fetch --all: exit status ($out $(cat "$T/err"))"
t_assert_eq "$(echo "$out" | cut -d: -f1 | tr '\n' ' ')" "one two slow " "fetch --all: accounts"
echo "$out" | grep -q '^one: ok, [05] messages, ' || t_fail "fetch --all: one: $out"
echo "$out" | grep -q '^slow: ok, 0 messages, 0 bytes$' || t_fail "fetch --all: slow: $out"
same_messages "$T/orig-one" "$T/mail/one" || d_fail "one: after fetch --all"
same_messages "$T/orig-two" "$T/mail/two" || d_fail "two: after fetch --all"
[ -e "$T/mail/off" ] && d_fail "the disabled account's Maildir exists"

# ---- fetch ACCOUNT: new mail is delivered by the time pop3ctl returns.
add_mail one 6 4
out=$(timeout 60 "$POP3CTL" -s "$DAEMON_SOCK" fetch one 2>"$T/err")
rc=$?
t_assert_eq "$rc" 0 "fetch one: exit status ($(cat "$T/err"))"
t_assert_eq "$out" "one: ok, 4 messages, $(gen_bytes one) bytes" "fetch one: output"
t_assert_eq "$(t_maildir_count "$T/mail/one")" 9 "fetch one: delivered when pop3ctl returned"
same_messages "$T/orig-one" "$T/mail/one" || d_fail "one: after fetch one"
t_assert_eq "$(ls "$T/srv-one" | wc -l)" 0 "fetch one: messages left on the server"

# fetch --all again, with new mail on both servers.
add_mail one 10 2
b_one=$(gen_bytes one)
add_mail two 4 3
b_two=$(gen_bytes two)
out=$(timeout 60 "$POP3CTL" -s "$DAEMON_SOCK" fetch --all 2>"$T/err")
rc=$?
t_assert_eq "$rc" 0 "second fetch --all: exit status ($(cat "$T/err"))"
t_assert_eq "$out" "one: ok, 2 messages, $b_one bytes
two: ok, 3 messages, $b_two bytes
slow: ok, 0 messages, 0 bytes" "second fetch --all: output"
same_messages "$T/orig-one" "$T/mail/one" || d_fail "one: after the second fetch --all"
same_messages "$T/orig-two" "$T/mail/two" || d_fail "two: after the second fetch --all"

# ---- fetch --no-wait, then a fetch while that run is in progress.
# The slow server answers each command 300 ms late: the run takes a few seconds.
add_mail slow 1 3
recs_before=$(wc -l <"$T/slow.rec")
out=$(timeout 20 "$POP3CTL" -s "$DAEMON_SOCK" fetch --no-wait slow 2>"$T/err")
rc=$?
t_assert_eq "$rc" 0 "fetch --no-wait slow: exit status ($(cat "$T/err"))"
t_assert_eq "$out" "started: slow" "fetch --no-wait slow: output"
daemon_status_json "$T/nw.json" slow
t_assert_eq "$(jq_py "$T/nw.json" "acc('slow')['state']")" fetching \
  "state right after fetch --no-wait (did it wait for the run?)"
t_assert_eq "$(jq_py "$T/nw.json" "acc('slow')['next_run']")" null "next_run while fetching"
# The table says so: `-' in NEXT RUN is for a disabled account only.
ctl status slow >"$T/nw.table" 2>&1
grep -Eq '^slow +fetching.* running( |$)' "$T/nw.table" ||
  { cat "$T/nw.table" >&2; d_fail "NEXT RUN of a fetching account is not \`running'"; }
out=$(timeout 60 "$POP3CTL" -s "$DAEMON_SOCK" fetch slow 2>"$T/err")
rc=$?
t_assert_eq "$rc" 0 "fetch slow during a run: exit status ($(cat "$T/err"))"
# It reports the run after the one in progress, which found nothing new.
t_assert_eq "$out" "slow: ok, 0 messages, 0 bytes" "fetch slow during a run: output"
same_messages "$T/orig-slow" "$T/mail/slow" || d_fail "slow: delivered messages"
# The server's record is written when a session ends: wait for both, then look at them.
_recs() { [ "$(wc -l <"$T/slow.rec")" -ge $((recs_before + 2)) ]; }
wait_until 10 _recs || d_fail "slow: fewer than two sessions recorded"
tail -n +$((recs_before + 1)) "$T/slow.rec" >"$T/slow.new"
"$PYTHON" - "$T/slow.new" <<'EOF' || { cat "$T/slow.new" >&2; d_fail "slow: the two sessions"; }
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
r.sort(key=lambda x: x["start"])
assert len(r) == 2, "%d sessions, expected 2 (the run in progress, then one more)" % len(r)
a, b = r
assert a["authenticated"] and a["committed"] and len(a["retrieved"]) == 3, ("first", a)
assert b["authenticated"] and b["committed"] and b["messages"] == 0, ("second", b)
# One after the other, never at the same time.
assert b["start"] >= a["start"] + a["duration"] - 0.05, ("overlap", a["start"], a["duration"], b["start"])
EOF

# ---- reload with a broken file: 78, FILE:LINE, the old config stays.
cp "$CONF" "$T/etc/good.conf"
write_conf "$CONF" one extra
sed -i 's/^interval = 3600;/interval = 3600;\nmax_paralel = 2;/' "$CONF"
bad_line=$(grep -n max_paralel "$CONF" | cut -d: -f1)
"$POP3CTL" -s "$DAEMON_SOCK" reload >"$T/out" 2>"$T/err"
rc=$?
t_assert_eq "$rc" 78 "reload of a broken file: exit status"
grep -q "^$CONF:$bad_line: .*max_paralel" "$T/err" ||
  { cat "$T/out" "$T/err" >&2; t_fail "reload of a broken file: no $CONF:$bad_line: line on stderr"; }
[ -s "$T/out" ] && { cat "$T/out" >&2; t_fail "reload of a broken file printed on stdout"; }
t_alive "$MAIN_PID" || d_fail "the daemon died on a broken reload"
t_assert_eq "$(status_names)" "$(names_of one two slow off)" "accounts after a broken reload"
add_mail two 7 2
out=$(timeout 60 "$POP3CTL" -s "$DAEMON_SOCK" fetch two 2>"$T/err")
t_assert_eq "$?" 0 "fetch after a broken reload: exit status ($(cat "$T/err"))"
t_assert_eq "$out" "two: ok, 2 messages, $(gen_bytes two) bytes" "fetch after a broken reload"
same_messages "$T/orig-two" "$T/mail/two" || d_fail "two: after a broken reload"

# ---- reload with a changed file: two, slow and off leave, extra comes.
write_conf "$CONF" one extra
out=$("$POP3CTL" -s "$DAEMON_SOCK" reload 2>"$T/err")
rc=$?
t_assert_eq "$rc" 0 "reload: exit status ($(cat "$T/err"))"
t_assert_eq "$out" "configuration reloaded
added: extra
removed: two, slow, off" "reload: output"
t_assert_eq "$(status_names)" "$(names_of one extra)" "accounts after reload"
ctl status two >/dev/null 2>&1
t_assert_eq "$?" 64 "status of a removed account"
ctl fetch two >/dev/null 2>&1
t_assert_eq "$?" 64 "fetch of a removed account"
# A reload changes nothing on disk (as root or not): the first run makes the Maildir.
[ -e "$T/mail/extra" ] && d_fail "the reload created the new account's Maildir"
out=$(timeout 60 "$POP3CTL" -s "$DAEMON_SOCK" fetch extra 2>"$T/err")
t_assert_eq "$?" 0 "fetch of the added account: exit status ($(cat "$T/err"))"
t_assert_eq "$out" "extra: ok, 4 messages, $(gen_bytes extra) bytes" "fetch of the added account"
same_messages "$T/orig-extra" "$T/mail/extra" || d_fail "extra: delivered messages"
t_assert_eq "$(jq_py "$T/names.json" "acc('one')['total_messages']")" 11 \
  "a kept account keeps its totals across a reload"

# ---- SIGHUP: back to one two (extra leaves), then a broken file is refused.
write_conf "$CONF" one two
kill -HUP "$MAIN_PID"
_names_are() { [ "$(status_names)" = "$1" ]; }
wait_until 10 _names_are "$(names_of one two)" ||
  d_fail "accounts after SIGHUP: $(status_names), expected $(names_of one two)"
sed -i 's/^interval = 3600;/interval = "3600";/' "$CONF"
# pop3ctl -c FILE takes the socket from FILE, and reports a broken FILE itself (78).
"$POP3CTL" -c "$CONF" status >/dev/null 2>"$T/err"
t_assert_eq "$?" 78 "pop3ctl -c with a broken file: exit status ($(cat "$T/err"))"
grep -q "^$CONF:[0-9]*: " "$T/err" || t_fail "pop3ctl -c with a broken file: $(cat "$T/err")"
logs_before=$(grep -c 'keeping the old configuration' "$DAEMON_LOG")
kill -HUP "$MAIN_PID"
_hup_refused() { [ "$(grep -c 'keeping the old configuration' "$DAEMON_LOG")" -gt "$logs_before" ]; }
wait_until 10 _hup_refused || d_fail "no log line for a SIGHUP with a broken file"
grep -q "$CONF:[0-9]*: .*interval" "$DAEMON_LOG" || d_fail "the SIGHUP log has no FILE:LINE"
t_alive "$MAIN_PID" || d_fail "the daemon died on SIGHUP with a broken file"
t_assert_eq "$(status_names)" "$(names_of one two)" "accounts after SIGHUP with a broken file"
add_mail one 12 1
out=$(timeout 60 "$POP3CTL" -s "$DAEMON_SOCK" fetch one 2>"$T/err")
t_assert_eq "$?" 0 "fetch after a broken SIGHUP: exit status ($(cat "$T/err"))"
same_messages "$T/orig-one" "$T/mail/one" || d_fail "one: after a broken SIGHUP"
write_conf "$CONF" one two
"$POP3CTL" -c "$CONF" status --json >"$T/c.json" 2>"$T/err"
t_assert_eq "$?" 0 "pop3ctl -c CONF status: exit status ($(cat "$T/err"))"
t_assert_eq "$(jq_py "$T/c.json" "d['daemon']['pid']")" "$MAIN_PID" "pop3ctl -c CONF: daemon pid"

# ---- a reload that shortens the interval: the next poll comes by the new interval, and
# the scheduled poll delivers new mail without any fetch.
add_mail two 11 2
INTERVAL=2 write_conf "$CONF" one two
out=$("$POP3CTL" -s "$DAEMON_SOCK" reload 2>&1)
t_assert_eq "$?" 0 "reload with a shorter interval: exit status ($out)"
daemon_status_json "$T/iv.json" two
t_assert_eq "$(jq_py "$T/iv.json" "acc('two')['interval']")" 2 "interval after reload"
_two_polled() { same_messages "$T/orig-two" "$T/mail/two" 2>/dev/null; }
wait_until 20 _two_polled || d_fail "two: no scheduled poll within 20 s of a reload to interval 2"
write_conf "$CONF" one two
out=$("$POP3CTL" -s "$DAEMON_SOCK" reload 2>&1)
t_assert_eq "$?" 0 "reload back to interval 3600: exit status ($out)"

# ---- the peer credential check: another uid is refused by the daemon itself.
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  sockdir=$(dirname "$DAEMON_SOCK")
  chmod 0711 "$T" "$sockdir"
  chmod 0666 "$DAEMON_SOCK"
  setpriv --reuid=65534 --regid=65534 --clear-groups "$POP3CTL" -s "$DAEMON_SOCK" status \
    >"$T/out" 2>"$T/err"
  rc=$?
  chmod 0700 "$sockdir"
  chmod 0600 "$DAEMON_SOCK"
  t_assert_eq "$rc" 77 "pop3ctl as nobody: exit status ($(cat "$T/out" "$T/err"))"
  grep -qi 'permission denied' "$T/err" || t_fail "pop3ctl as nobody: stderr: $(cat "$T/err")"
  [ -s "$T/out" ] && t_fail "pop3ctl as nobody printed a status: $(cat "$T/out")"
  ctl status >/dev/null 2>&1 || d_fail "the daemon stopped answering after refusing a peer"
else
  t_log "not root (or no setpriv): peer credential case left out"
fi

# ---- a second daemon on the same socket: 75, and the first one keeps working.
timeout 20 "$DAEMON" -c "$CONF" >"$T/second.out" 2>&1 </dev/null
rc=$?
t_assert_eq "$rc" 75 "a second daemon on the same socket: exit status ($(cat "$T/second.out"))"
grep -q 'already listening' "$T/second.out" || t_fail "second daemon: message: $(cat "$T/second.out")"
[ -S "$DAEMON_SOCK" ] || d_fail "the second daemon removed the first one's socket"
ctl status >/dev/null 2>&1 || d_fail "the first daemon stopped answering after a second started"

# ---- SIGTERM: exit 0, STOPPING=1, the socket is gone; then pop3ctl says "not running".
daemon_stop 30
rc=$?
t_assert_eq "$rc" 0 "exit status after SIGTERM"
wait_until 10 grep -qx 'dgram: STOPPING=1' "$T/notify.out" ||
  { cat "$T/notify.out" >&2; t_fail "no STOPPING=1 after SIGTERM"; }
[ -e "$DAEMON_SOCK" ] && t_fail "the socket is still there after a clean exit"
"$POP3CTL" -s "$DAEMON_SOCK" status >"$T/out" 2>"$T/err"
rc=$?
t_assert_eq "$rc" 69 "pop3ctl without a daemon: exit status"
t_assert_eq "$(wc -l <"$T/err")" 1 "pop3ctl without a daemon: lines on stderr ($(cat "$T/err"))"
[ -s "$T/out" ] && t_fail "pop3ctl without a daemon printed on stdout"
"$POP3CTL" -s "$T/no/such/dir/sock" fetch --all >/dev/null 2>"$T/err"
t_assert_eq "$?" 69 "pop3ctl fetch, socket in a missing directory: exit status"
t_assert_eq "$(wc -l <"$T/err")" 1 "pop3ctl fetch without a daemon: lines on stderr"

# ---- a stale socket (kill -9) does not keep a new daemon from starting.
daemon_start "$CONF"
daemon_kill9
[ -S "$DAEMON_SOCK" ] || t_fail "no socket file left after kill -9 (the case needs one)"
"$POP3CTL" -s "$DAEMON_SOCK" status >/dev/null 2>"$T/err"
t_assert_eq "$?" 69 "pop3ctl on a stale socket: exit status ($(cat "$T/err"))"
daemon_start "$CONF"
t_assert_eq "$(status_names)" "$(names_of one two)" "accounts after a restart on a stale socket"
add_mail two 9 2
out=$(timeout 60 "$POP3CTL" -s "$DAEMON_SOCK" fetch two 2>"$T/err")
t_assert_eq "$?" 0 "fetch after a restart on a stale socket: exit status ($(cat "$T/err"))"
same_messages "$T/orig-two" "$T/mail/two" || d_fail "two: after the restart"
daemon_stop 30
t_assert_eq "$?" 0 "exit status of the restarted daemon after SIGTERM"
[ -e "$DAEMON_SOCK" ] && t_fail "the socket is still there after the second clean exit"
t_log "daemon-control: all checks passed"
exit 0

#!/bin/bash
# daemon-signals.sh -- pop3syncd stopped in the middle of a large fetch loses nothing:
#   - SIGTERM once some but not all messages are in new/: exit 0 within 30 s, every delivered
#     file is exactly one of the originals, and the server deleted only delivered messages;
#     a restarted daemon then fetches the rest (the union covers every message);
#   - SIGKILL in the middle of a fetch, then a restart: every message ends up delivered and
#     new/ holds only whole messages.
# Duplicates are allowed here (no-duplicates is tested elsewhere); a missing one is not.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-120}
t_init daemon-signals
. "$top_srcdir/tests/lib/daemon.sh"
daemon_require

# conf FILE ACCOUNT PORT [extra account settings]: a one-account config. The accounts poll
# once an hour; the tests start the runs with pop3ctl.
conf() {
  {
    daemon_conf_globals
    cat <<EOF
interval = 3600;
accounts = (
  { name = "$2";
    server = "tcp:test@127.0.0.1:$3";
    maildir = "$T/mail/$2";
    password_command = "echo secret";$4 }
);
EOF
  } | daemon_conf "$1"
}

# deletions_delivered NAME: every message the server NAME deleted (by its record's
# deleted_uids, SHA-1 UIDs of the content, and by the files gone from $T/srv-NAME) is in
# the Maildir $T/mail/NAME.
deletions_delivered() {
  "$PYTHON" - "$T/orig-$1" "$T/srv-$1" "$T/mail/$1" "$T/$1.rec" <<'EOF'
import hashlib, json, os, sys
orig, srv, md, rec = sys.argv[1:5]
def files(d):
    return [os.path.join(d, n) for n in sorted(os.listdir(d))
            if not n.startswith(".") and os.path.isfile(os.path.join(d, n))]
def content(p):
    with open(p, "rb") as f:
        return f.read()
delivered = set()
delivered_uids = set()
for sub in ("new", "cur"):
    for p in files(os.path.join(md, sub)):
        b = content(p)
        delivered.add(hashlib.sha256(b).hexdigest())
        delivered_uids.add(hashlib.sha1(b).hexdigest()[:20])
left = set(os.listdir(srv))
bad = []
for p in files(orig):
    if os.path.basename(p) not in left and hashlib.sha256(content(p)).hexdigest() not in delivered:
        bad.append("deleted from the server but not delivered: %s" % os.path.basename(p))
recs = [json.loads(l) for l in open(rec)] if os.path.exists(rec) else []
for r in recs:
    for u in r["deleted_uids"]:
        if u not in delivered_uids:
            bad.append("session %d deleted UID %s, not delivered" % (r["session"], u))
for b in bad:
    print(b, file=sys.stderr)
print("server: %d deleted, %d left" % (len(files(orig)) - len(left), len(left)), file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
}

# ---- SIGTERM during a large fetch
# 200 messages of about 50 kB, served 50 ms late per command; window = 1 makes the first run
# lock-step, so that it is still going when the signal comes.
mail_gen "$T/orig-term" 200 --size 50000 --seed 21
cp -r "$T/orig-term" "$T/srv-term"
fake_start term --maildir "$T/srv-term" --latency 50
PORT_TERM=$FAKE_PORT
CONF=$T/etc/term.conf
mkdir -p "$T/etc"
conf "$CONF" term "$PORT_TERM" " window = 1;"
daemon_start "$CONF"
ctl fetch --no-wait term >/dev/null || d_fail "fetch --no-wait term"
wait_maildir "$T/mail/term" 10 30 || d_fail "term: not 10 messages delivered after 30 s"
n_before=$(t_maildir_count "$T/mail/term")
[ "$n_before" -lt 200 ] || d_fail "term: the run ended before the signal (precondition)"
# A client waiting for the account (it will wait for this run and one more) is answered
# when the daemon stops, and does not hang.
"$POP3CTL" -s "$DAEMON_SOCK" fetch term >"$T/waiter.out" 2>"$T/waiter.err" &
WAITER=$!
t_on_exit "t_kill $WAITER"
_waiting() {
  daemon_status_json "$T/w.json" term
  [ "$(jq_py "$T/w.json" "acc('term')['state']")" = fetching ]
}
_waiting || d_fail "term: not fetching any more before SIGTERM (precondition)"
sleep 1 # let the waiting fetch reach the daemon (its answer is checked below)
daemon_stop 30
rc=$?
[ "$rc" = 124 ] && d_fail "term: the daemon did not exit within 30 s of SIGTERM"
t_assert_eq "$rc" 0 "term: exit status after SIGTERM during a fetch"
n_after=$(t_maildir_count "$T/mail/term")
wait_until 10 eval '! t_alive $WAITER' || t_fail "term: pop3ctl fetch still waits after the daemon exited"
wait "$WAITER"
rc=$?
if [ "$rc" = 69 ]; then
  # It found no daemon: it came too late to test anything (a loaded machine).
  t_log "term: the waiting fetch did not reach the daemon before SIGTERM; not checked"
else
  t_assert_eq "$rc" 75 "term: a waiting pop3ctl fetch when the daemon stops: exit status ($(cat "$T/waiter.out" "$T/waiter.err"))"
  grep -q '^term: error: .*shutting down' "$T/waiter.err" ||
    t_fail "term: the waiting fetch said: $(cat "$T/waiter.out" "$T/waiter.err")"
fi
# The server records a session when it sees the connection end.
wait_until 10 test -s "$T/term.rec" || t_fail "term: the server recorded no session"
t_log "term: $n_before delivered at SIGTERM, $n_after at exit"
[ "$n_after" -lt 200 ] || t_fail "term: everything delivered; SIGTERM did not stop the run"
same_messages "$T/orig-term" "$T/mail/term" --subset ||
  t_fail "term: new/ holds a file that is not exactly one original, or one twice"
deletions_delivered term || t_fail "term: the server deleted undelivered messages"
[ -e "$DAEMON_SOCK" ] && t_fail "term: the socket is left after SIGTERM"

# Restart with the default window and fetch the rest.
conf "$CONF" term "$PORT_TERM"
daemon_start "$CONF"
out=$(timeout 60 "$POP3CTL" -s "$DAEMON_SOCK" fetch term 2>"$T/err")
rc=$?
t_assert_eq "$rc" 0 "term: fetch after the restart: exit status ($out $(cat "$T/err"))"
covers_messages "$T/orig-term" "$T/mail/term" || d_fail "term: messages missing after the restart"
t_assert_eq "$(ls "$T/srv-term" | wc -l)" 0 "term: messages left on the server after the restart"
deletions_delivered term || d_fail "term: deletions after the restart"
daemon_stop 30
t_assert_eq "$?" 0 "term: exit status of the restarted daemon"

# ---- SIGKILL during a fetch
mail_gen "$T/orig-kill" 100 --size 50000 --seed 22
cp -r "$T/orig-kill" "$T/srv-kill"
fake_start kill --maildir "$T/srv-kill" --latency 50
PORT_KILL=$FAKE_PORT
CONF=$T/etc/kill.conf
conf "$CONF" kill "$PORT_KILL" " window = 1;"
daemon_start "$CONF"
ctl fetch --no-wait kill >/dev/null || d_fail "fetch --no-wait kill"
wait_maildir "$T/mail/kill" 10 30 || d_fail "kill: not 10 messages delivered after 30 s"
daemon_kill9
n_killed=$(t_maildir_count "$T/mail/kill")
wait_until 10 test -s "$T/kill.rec" || t_fail "kill: the server recorded no session"
t_log "kill: $n_killed delivered at SIGKILL"
[ "$n_killed" -lt 100 ] || t_fail "kill: the run ended before the signal (precondition)"
same_messages "$T/orig-kill" "$T/mail/kill" --subset ||
  t_fail "kill: new/ holds a file that is not exactly one original, or one twice"
deletions_delivered kill || t_fail "kill: the server deleted undelivered messages"

conf "$CONF" kill "$PORT_KILL"
daemon_start "$CONF"
out=$(timeout 60 "$POP3CTL" -s "$DAEMON_SOCK" fetch kill 2>"$T/err")
rc=$?
t_assert_eq "$rc" 0 "kill: fetch after the restart: exit status ($out $(cat "$T/err"))"
covers_messages "$T/orig-kill" "$T/mail/kill" || d_fail "kill: messages missing after the restart"
t_assert_eq "$(ls "$T/srv-kill" | wc -l)" 0 "kill: messages left on the server after the restart"
deletions_delivered kill || d_fail "kill: deletions after the restart"
daemon_stop 30
t_assert_eq "$?" 0 "kill: exit status of the restarted daemon"
t_log "daemon-signals: all checks passed"
exit 0

#!/bin/bash
# wakeup.sh -- the wake-up examples (doc/examples, pop3syncd(8) WAKING UP):
#   - the three scripts parse (sh -n);
#   - 90-pop3sync (NetworkManager) wakes on `up' and on `connectivity-change' with
#     CONNECTIVITY_STATE=FULL only; pop3sync-resume (systemd-sleep) on `post' only;
#   - pop3sync-wakeup runs `pop3ctl -s SOCKET fetch --all --no-wait' for each socket that
#     exists, as the socket's owner when run by root (setpriv), skips what is not a
#     socket, and says so (exit 1) when pop3ctl fails;
#   - against a running daemon whose account sits in backoff after three failed runs: the
#     wake-up fetches at once, and a failure of that fetch starts the backoff over (the
#     next try 2 s later, not 16 s), so the mail arrives right after.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-60}
t_init wakeup
. "$top_srcdir/tests/lib/daemon.sh"
daemon_require

EX=$top_srcdir/doc/examples
for f in pop3sync-wakeup 90-pop3sync pop3sync-resume; do
  sh -n "$EX/$f" || t_fail "$f: sh -n"
  head -1 "$EX/$f" | grep -qx '#!/bin/sh' || t_fail "$f: not a #!/bin/sh script"
done

# ---- the dispatcher and the sleep hook call the wake-up script when they should
cat >"$T/fakewake" <<EOS
#!/bin/sh
echo woke >>"$T/woke"
EOS
chmod 0755 "$T/fakewake"
woke() { if [ -f "$T/woke" ]; then grep -c '' "$T/woke"; else echo 0; fi; }
export POP3SYNC_WAKEUP=$T/fakewake
sh "$EX/90-pop3sync" eth0 down
t_assert_eq "$(woke)" 0 "90-pop3sync eth0 down"
sh "$EX/90-pop3sync" eth0 up
t_assert_eq "$(woke)" 1 "90-pop3sync eth0 up"
CONNECTIVITY_STATE=LIMITED sh "$EX/90-pop3sync" "" connectivity-change
t_assert_eq "$(woke)" 1 "90-pop3sync connectivity-change LIMITED"
CONNECTIVITY_STATE=FULL sh "$EX/90-pop3sync" "" connectivity-change
t_assert_eq "$(woke)" 2 "90-pop3sync connectivity-change FULL"
sh "$EX/pop3sync-resume" pre suspend
t_assert_eq "$(woke)" 2 "pop3sync-resume pre"
sh "$EX/pop3sync-resume" post suspend
t_assert_eq "$(woke)" 3 "pop3sync-resume post"
unset POP3SYNC_WAKEUP

# ---- which sockets, as whom: a pop3ctl that records its uid and arguments
mkdir -p "$T/mail/ctl"
cat >"$T/mail/ctl/pop3ctl" <<EOS
#!/bin/sh
echo "\$(id -u) \$*" >>"$T/mail/ctl/calls"
[ -e "$T/mail/ctl/fail" ] && exit 69
exit 0
EOS
chmod 0755 "$T/mail/ctl" "$T/mail/ctl/pop3ctl"
: >"$T/mail/ctl/calls" && chmod 0666 "$T/mail/ctl/calls"
mksock() {
  mkdir -p "$(dirname "$1")"
  "$PYTHON" -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$1"
}
mksock "$T/run1/pop3sync/control.sock"
mkdir -p "$T/run2/pop3sync" && : >"$T/run2/pop3sync/control.sock" # not a socket
me=$(id -u)
expect="$me -s $T/run1/pop3sync/control.sock fetch --all --no-wait"
if [ "$me" = 0 ]; then
  # A user's daemon: its socket is the user's; root speaks to it as that user.
  mksock "$T/run3/pop3sync/control.sock"
  chown nobody "$T/run3/pop3sync/control.sock"
  expect="$expect
$(id -u nobody) -s $T/run3/pop3sync/control.sock fetch --all --no-wait"
fi
POP3SYNC_SOCKETS="$T/run*/pop3sync/control.sock $T/nosuch.sock" POP3CTL=$T/mail/ctl/pop3ctl \
  sh "$EX/pop3sync-wakeup" >"$T/w1.out" 2>&1
rc=$?
t_assert_eq "$rc" 0 "pop3sync-wakeup exit status ($(cat "$T/w1.out"))"
t_assert_eq "$(cat "$T/mail/ctl/calls")" "$expect" "pop3ctl calls"
touch "$T/mail/ctl/fail"
POP3SYNC_SOCKETS="$T/run1/pop3sync/control.sock" POP3CTL=$T/mail/ctl/pop3ctl \
  sh "$EX/pop3sync-wakeup" >"$T/w2.out" 2>&1
t_assert_eq "$?" 1 "pop3sync-wakeup when pop3ctl fails"
grep -qF "pop3sync-wakeup: $T/run1/pop3sync/control.sock: pop3ctl fetch --all exited with status 69" \
  "$T/w2.out" || { cat "$T/w2.out" >&2; t_fail "no message for a failed pop3ctl"; }

# ---- a real daemon in backoff: the wake-up fetches now and the backoff starts over
mail_gen "$T/orig" 2 --seed 61
cp -r "$T/orig" "$T/srv"
fake_start f --maildir "$T/srv" --fault-sessions 1,2,3,4 --greeting-text "-ERR [SYS/TEMP] no route"
PORT=$FAKE_PORT
CONF=$T/etc/pop3sync.conf
mkdir -p "$T/etc"
{
  daemon_conf_globals
  cat <<EOC
interval = 1;
accounts = (
  { name = "w"; server = "tcp:test@127.0.0.1:$PORT"; maildir = "$T/mail/w"; password = "secret"; }
);
EOC
} | daemon_conf "$CONF"
daemon_start "$CONF"
sessions() { if [ -f "$T/f.rec" ]; then grep -c '' "$T/f.rec"; else echo 0; fi; }
sessions_are() { [ "$(sessions)" -ge "$1" ]; }
# Failures at about 0, 2 and 6 s; the fourth try would come 8 s after the third.
wait_until 15 sessions_are 3 || d_fail "three failed runs did not happen"
sleep 0.5
t_assert_eq "$(sessions)" 3 "sessions before the wake-up"
POP3SYNC_SOCKETS=$DAEMON_SOCK POP3CTL=$POP3CTL sh "$EX/pop3sync-wakeup" >"$T/w3.out" 2>&1
t_assert_eq "$?" 0 "pop3sync-wakeup against the daemon ($(cat "$T/w3.out"))"
wait_until 2 sessions_are 4 || d_fail "the wake-up did not start a run"
# That run failed too (session 4): the next try is the first backoff step (2 s) again.
restarted() { grep 'w: .*no route' "$DAEMON_LOG" | tail -1 | grep -q 'next try in 2\.0 s$'; }
fourth_logged() { [ "$(grep -c 'w: .*no route' "$DAEMON_LOG")" -ge 4 ]; }
wait_until 3 fourth_logged || d_fail "the wake-up run's failure is not logged"
restarted ||
  d_fail "the failed wake-up run did not start the backoff over"
wait_maildir "$T/mail/w" 2 5 || d_fail "no delivery right after the wake-up"
same_messages "$T/orig" "$T/mail/w" || d_fail "not every message exactly once"
daemon_stop 15 || d_fail "daemon exit status"

echo "PASS: wakeup"
exit 0

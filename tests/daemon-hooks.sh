#!/bin/bash
# daemon-hooks.sh -- on_new_mail and on_failure (pop3sync.conf(5), HOOKS):
#   - on_new_mail runs once per run that delivered something, with POP3SYNC_EVENT,
#     POP3SYNC_ACCOUNT, POP3SYNC_MESSAGES, POP3SYNC_BYTES, POP3SYNC_EXIT in a clean
#     environment (none of the daemon's own variables), as the account's user;
#   - on_failure runs once when the account starts failing (not on each of three
#     failed runs) and once when it recovers; the server's -ERR text, holding $(...),
#     `...` and `;', arrives only in POP3SYNC_ERROR and is never executed;
#   - an account's "" disables the global hook;
#   - a hook that hangs is killed after hook_timeout (its process group goes too), the
#     account fetches meanwhile, the hook that waited runs after it, and the watch
#     stream and the log say what happened;
#   - stopping the daemon stops a running hook (and what it started) within seconds;
#   - bad hook settings are FILE:LINE errors.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-90}
t_init daemon-hooks
. "$top_srcdir/tests/lib/daemon.sh"
daemon_require

# Hooks run as the account's user (nobody, as root): their files are that user's.
H=$T/mail/hooks
mkdir -p "$H"
[ -n "$DAEMON_ACCOUNT_USER" ] && chown "$DAEMON_ACCOUNT_USER" "$H"
want_uid=$(id -u "${DAEMON_ACCOUNT_USER:-$(id -un)}")

cat >"$H/hook" <<EOS
#!/bin/sh
env >"$H/env.\$POP3SYNC_EVENT.\$POP3SYNC_ACCOUNT.\$\$"
printf '%s|%s|%s|%s|%s|%s\n' "\$POP3SYNC_EVENT" "\$POP3SYNC_ACCOUNT" "\$POP3SYNC_MESSAGES" \
  "\$POP3SYNC_BYTES" "\$POP3SYNC_EXIT" "\$(id -u)" >>"$H/log"
printf '%s\n' "\$POP3SYNC_ERROR" >>"$H/errors"
EOS
# The first call hangs (with a child in its group), the later ones log.
cat >"$H/hang" <<EOS
#!/bin/sh
if mkdir "$H/hung" 2>/dev/null; then
  sleep 1000 &
  echo \$! >"$H/sleep.pid"
  wait
fi
echo "hang-again|\$POP3SYNC_MESSAGES" >>"$H/log"
EOS
chmod 0755 "$H/hook" "$H/hang"

# a: delivers, fails three times with hostile -ERR text, recovers.
mail_gen "$T/orig-a" 3 --varied --seed 51
cp -r "$T/orig-a" "$T/srv-a"
ERRTEXT="-ERR [SYS/TEMP] \$(touch $H/pwned1); touch $H/pwned2 \`touch $H/pwned3\` | x"
fake_start fa --maildir "$T/srv-a" --fault-sessions 2,3,4 --greeting-text "$ERRTEXT"
PORT_A=$FAKE_PORT
# b: its hook hangs.
mail_gen "$T/orig-b" 2 --varied --seed 52
mkdir "$T/srv-b" && cp "$T/orig-b/$(ls "$T/orig-b" | head -1)" "$T/srv-b/"
fake_start fb --maildir "$T/srv-b"
PORT_B=$FAKE_PORT
# c: the global hook switched off.
mail_gen "$T/srv-c" 1 --seed 53
fake_start fc --maildir "$T/srv-c"
PORT_C=$FAKE_PORT

CONF=$T/etc/pop3sync.conf
mkdir -p "$T/etc"
{
  daemon_conf_globals
  cat <<EOC
interval = 1;
on_new_mail = "$H/hook";
on_failure = "$H/hook";
accounts = (
  { name = "a"; server = "tcp:test@127.0.0.1:$PORT_A"; maildir = "$T/mail/a"; password = "secret"; },
  { name = "b"; server = "tcp:test@127.0.0.1:$PORT_B"; maildir = "$T/mail/b"; password = "secret";
    on_new_mail = "$H/hang"; hook_timeout = 3; },
  { name = "c"; server = "tcp:test@127.0.0.1:$PORT_C"; maildir = "$T/mail/c"; password = "secret";
    on_new_mail = ""; }
);
EOC
} | daemon_conf "$CONF"
"$DAEMON" --check-config -c "$CONF" >"$T/cc.out" 2>&1 || { cat "$T/cc.out" >&2; t_fail "config refused"; }

# ---- bad settings: FILE:LINE errors, 78
printf 'hook_timeout = 0;\non_failure = 5;\naccounts = ();\n' >"$T/etc/bad.conf"
chmod 0600 "$T/etc/bad.conf"
"$DAEMON" --check-config -c "$T/etc/bad.conf" >"$T/bad.out" 2>&1
t_assert_eq "$?" 78 "--check-config with bad hook settings"
grep -q 'bad.conf:1: `hook_timeout'"'"' must be between 1 and' "$T/bad.out" ||
  { cat "$T/bad.out" >&2; t_fail "no FILE:LINE error for hook_timeout = 0"; }
grep -q 'bad.conf:2: `on_failure'"'"' must be a string' "$T/bad.out" ||
  { cat "$T/bad.out" >&2; t_fail "no FILE:LINE error for on_failure = 5"; }

POP3SYNC_TEST_SECRET=hunter2 daemon_start "$CONF"
t_bg "$POP3CTL" -s "$DAEMON_SOCK" watch --json >"$T/watch.out" 2>"$T/watch.err"
t_bg "$POP3CTL" -s "$DAEMON_SOCK" watch b >"$T/watch-text.out" 2>"$T/watch-text.err"

lines() { grep -c "^$1" "$H/log" 2>/dev/null || true; }
# (functions: wait_until runs its command again, a "$(...)" argument only once)
at_least() { [ "$(lines "$1")" -ge "$2" ]; }
sessions_at_least() { [ "$(grep -c '' "$T/$1.rec" 2>/dev/null || echo 0)" -ge "$2" ]; }

# ---- b: the hung hook does not stop fetching; it is killed after 3 s with its child
wait_until 10 test -s "$H/sleep.pid" || d_fail "b: the hook did not start"
spid=$(cat "$H/sleep.pid")
cp "$T/orig-b/$(ls "$T/orig-b" | tail -1)" "$T/srv-b/.tmp" && mv "$T/srv-b/.tmp" "$T/srv-b/m2"
wait_maildir "$T/mail/b" 2 5 || d_fail "b: no fetch while its hook hangs"
kill -0 "$spid" 2>/dev/null || d_fail "b: the hook ended before its timeout (test too slow?)"
wait_until 10 grep -q 'b: on_new_mail (new_mail): hook `.*/hang'"'"' did not finish within 3 s; killed' \
  "$DAEMON_LOG" || d_fail "b: no log line for the killed hook"
wait_until 5 bash -c "! kill -0 $spid 2>/dev/null" || d_fail "b: the hook's child outlived it"
# The second delivery's hook waited for the first and runs now.
wait_until 10 grep -q '^hang-again|1$' "$H/log" || d_fail "b: the waiting hook did not run"
_hook_events() { grep -q '"event":"hook".*"account":"b".*"result":"error"' "$T/watch.out"; }
wait_until 5 _hook_events || { cat "$T/watch.out" >&2; d_fail "watch: no hook event for b"; }
"$PYTHON" - "$T/watch.out" <<'EOF' || { cat "$T/watch.out" >&2; d_fail "watch --json hook events"; }
import json, sys
evs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
hooks = [e for e in evs if e["event"] == "hook"]
bad = [e for e in hooks if e["account"] == "b" and e["result"] == "error"]
assert len(bad) == 1, hooks
assert "did not finish within 3 s" in bad[0]["error"], bad
assert bad[0]["hook"] == "new_mail" and bad[0]["milliseconds"] >= 3000, bad
ok = [e for e in hooks if e["account"] == "b" and e["result"] == "ok"]
assert len(ok) == 1 and ok[0]["error"] is None, hooks
assert all(e["account"] != "c" for e in hooks), hooks
EOF

grep -Eq ' b: hook new_mail failed after 3\.[0-9] s: hook `.*/hang'"'"' did not finish within 3 s; killed$' \
  "$T/watch-text.out" || { cat "$T/watch-text.out" >&2; d_fail "watch (text): no failed hook line"; }
grep -Eq ' b: hook new_mail ran in [0-9.]+ (ms|s)$' "$T/watch-text.out" ||
  { cat "$T/watch-text.out" >&2; d_fail "watch (text): no hook line"; }

# ---- a: new mail, once, with its figures
wait_until 15 at_least 'new_mail|a|' 1 || d_fail "on_new_mail did not run for a"
IFS='|' read -r ev acc msgs bytes ex uid < <(grep '^new_mail|a|' "$H/log" | head -1)
t_assert_eq "$msgs" 3 "a: POP3SYNC_MESSAGES"
t_assert_eq "$ex" 0 "a: POP3SYNC_EXIT"
t_assert_eq "$uid" "$want_uid" "a: the hook's uid"
[ "$bytes" -gt 1000 ] 2>/dev/null || d_fail "a: POP3SYNC_BYTES is '$bytes'"
envf=$(ls "$H"/env.new_mail.a.* | head -1)
grep -q '^POP3SYNC_ACCOUNT=a$' "$envf" || d_fail "a: POP3SYNC_ACCOUNT"
grep -q '^POP3SYNC_ERROR=$' "$envf" || d_fail "a: POP3SYNC_ERROR not empty for new mail"
grep -q '^PATH=/' "$envf" || d_fail "a: no PATH"
grep -q '^HOME=/' "$envf" || d_fail "a: no HOME"
if grep -q 'POP3SYNC_TEST_SECRET\|NOTIFY_SOCKET\|POP3SYNC_SOCKET' "$envf"; then
  cat "$envf" >&2
  d_fail "the daemon's environment leaks into a hook"
fi
if [ -n "$DAEMON_ACCOUNT_USER" ]; then
  grep -qx "USER=$DAEMON_ACCOUNT_USER" "$envf" || d_fail "a: USER is not the account's user"
fi

# ---- a: three failed runs, one on_failure
wait_until 20 sessions_at_least fa 4 || d_fail "a: no three failed sessions"
sleep 1 # the third failure's hook
t_assert_eq "$(lines 'failure|a|')" 1 "a: on_failure runs after three failed runs"
IFS='|' read -r ev acc msgs bytes ex uid < <(grep '^failure|a|' "$H/log")
t_assert_eq "$ex" 75 "a: POP3SYNC_EXIT of the failure"
grep -qF -- "${ERRTEXT#-ERR }" "$H/errors" ||
  { cat "$H/errors" >&2; d_fail "a: POP3SYNC_ERROR does not carry the server's text"; }
for f in pwned1 pwned2 pwned3; do
  [ -e "$H/$f" ] && d_fail "the server's text was executed ($f exists)"
done

# ---- a: recovery with new mail: recovered once, new_mail once more
mail_gen "$T/orig-a2" 2 --varied --seed 54
for f in "$T/orig-a2"/*; do
  sed -i '1i X-Batch: 2' "$f"
  cp "$f" "$T/srv-a/.tmp" && mv "$T/srv-a/.tmp" "$T/srv-a/2-$(basename "$f")"
done
ctl fetch a >"$T/fetch-a.out" 2>&1 || { cat "$T/fetch-a.out" >&2; d_fail "fetch a after the failures"; }
wait_until 10 at_least 'new_mail|a|' 2 || d_fail "a: no on_new_mail after the recovery"
sleep 2 # two more polls: nothing new, no hook
t_assert_eq "$(lines 'recovered|a|')" 1 "a: on_failure runs once on the recovery"
t_assert_eq "$(lines 'failure|a|')" 1 "a: on_failure failure lines at the end"
t_assert_eq "$(lines 'new_mail|a|')" 2 "a: on_new_mail runs (two deliveries)"
t_assert_eq "$(grep '^recovered|a|' "$H/log" | cut -d'|' -f5)" 0 "a: POP3SYNC_EXIT on recovery"
t_assert_eq "$(grep '^new_mail|a|' "$H/log" | tail -1 | cut -d'|' -f3)" 2 "a: second POP3SYNC_MESSAGES"
grep -qx 'POP3SYNC_ERROR=' "$H"/env.recovered.a.* || d_fail "a: POP3SYNC_ERROR not empty on recovery"
grep -qx 'POP3SYNC_EVENT=recovered' "$H"/env.recovered.a.* || d_fail "a: POP3SYNC_EVENT on recovery"

# ---- c: "" switched the global hook off
wait_maildir "$T/mail/c" 1 5 || d_fail "c did not deliver"
t_assert_eq "$(grep -c '|c|' "$H/log")" 0 "c: hook runs"

# ---- stopping the daemon stops a running hook at once, with its group
sed -i 's/hook_timeout = 3;/hook_timeout = 300;/' "$CONF"
ctl reload >"$T/reload.out" 2>&1 || { cat "$T/reload.out" >&2; d_fail "reload"; }
grep -q 'changed: b' "$T/reload.out" "$DAEMON_LOG" || d_fail "reload: b not changed"
rm -f "$H/sleep.pid" && rmdir "$H/hung"
cp "$T/orig-b/$(ls "$T/orig-b" | tail -1)" "$T/srv-b/.tmp" && mv "$T/srv-b/.tmp" "$T/srv-b/m3"
wait_until 10 test -s "$H/sleep.pid" || d_fail "b: the long hook did not start"
spid=$(cat "$H/sleep.pid")
start=$(date +%s%N)
daemon_stop 15 || d_fail "daemon exit status"
took=$((($(date +%s%N) - start) / 1000000))
[ "$took" -lt 5000 ] || d_fail "stopping with a running hook took $took ms"
wait_until 3 bash -c "! kill -0 $spid 2>/dev/null" || d_fail "a hook's child outlived the daemon"

echo "PASS: daemon-hooks"
exit 0

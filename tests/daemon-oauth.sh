#!/bin/bash
# daemon-oauth.sh -- an OAuth account in the daemon (pop3syncd(8), issue: SASL and OAuth):
#   - an expired token, then a valid one: the run refreshes the token once (the token
#     command runs twice) and delivers everything;
#   - two refused tokens: the run fails with 77 and "login refused: ... (token refreshed
#     once)"; the account then waits for a fetch or a reload (state backoff, next_run null,
#     auth_failed true, NEXT RUN "on fetch/reload") and does not poll on its own, however
#     short its interval;
#   - `pop3ctl fetch` with a good token works again; a reload re-arms a waiting account;
#   - the sd_notify STATUS= line names the failing account;
#   - a forced method the server does not offer is 69 (a backoff, not a wait), and the
#     sentence names what the server offers.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-120}
t_init daemon-oauth
. "$top_srcdir/tests/lib/daemon.sh"
daemon_require

TOKEN=ya29.$(head -c 600 /dev/urandom | base64 -w0 | tr -d '+/=' | head -c 700)
mail_gen "$T/orig" 6 --varied --seed 31
cp -r "$T/orig" "$T/srv"
fake_start xo --maildir "$T/srv" --sasl XOAUTH2 --token "$TOKEN" --oauth-fail challenge
PORT=$FAKE_PORT
mkdir -p "$T/srv2"
fake_start plain --maildir "$T/srv2" --sasl PLAIN
PORT2=$FAKE_PORT

# The token command: the Nth call prints line N of tokens (the last one after that), and
# counts its calls.  As root it runs as the account's user: the files must be theirs.
TOK=$T/mail/tok
mkdir -p "$TOK"
printf '%s\n' "expired-$TOKEN" "$TOKEN" >"$TOK/tokens"
: >"$TOK/calls"
[ "$(id -u)" = 0 ] && chown -R nobody "$TOK"
cat >"$TOK/cmd" <<EOS
#!/bin/sh
echo x >>'$TOK/calls'
n=\$(wc -l <'$TOK/calls')
t=\$(wc -l <'$TOK/tokens')
[ "\$n" -gt "\$t" ] && n=\$t
sed -n "\${n}p" '$TOK/tokens'
EOS
chmod 0755 "$TOK/cmd"
calls() { wc -l <"$TOK/calls"; }

CONF=$T/etc/pop3sync.conf
mkdir -p "$T/etc"
{
  daemon_conf_globals
  cat <<EOC
interval = 1;
accounts = (
  { name = "oauth"; server = "tcp:test@127.0.0.1:$PORT"; maildir = "$T/mail/oauth";
    auth = "xoauth2"; password_command = "$TOK/cmd"; },
  { name = "forced"; server = "tcp:test@127.0.0.1:$PORT2"; maildir = "$T/mail/forced";
    auth = "oauthbearer"; password = "x"; enabled = false; }
);
EOC
} | daemon_conf "$CONF"
"$DAEMON" --check-config -c "$CONF" >"$T/cc.out" 2>&1 || { cat "$T/cc.out" >&2; t_fail "config refused"; }

# A bad method name is a FILE:LINE error.
sed 's/auth = "xoauth2"/auth = "kerberos"/' "$CONF" >"$T/etc/bad.conf"
chmod 0600 "$T/etc/bad.conf"
"$DAEMON" --check-config -c "$T/etc/bad.conf" >"$T/bad.out" 2>&1
rc=$?
t_assert_eq "$rc" 78 "--check-config with auth = \"kerberos\""
grep -q 'bad.conf:[0-9]*: .*`auth'"'"' must be .*not `kerberos'"'" "$T/bad.out" ||
  { cat "$T/bad.out" >&2; t_fail "no FILE:LINE error for a bad auth method"; }

# A NOTIFY_SOCKET listener: the daemon's STATUS= line must name a failing account.
cat >"$T/notify.py" <<'EOP'
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(1)
end = time.time() + 110
with open(sys.argv[2], "a") as out:
    while time.time() < end:
        try:
            out.write(s.recv(4096).decode(errors="replace") + "\n")
            out.flush()
        except socket.timeout:
            pass
EOP
t_bg "$PYTHON" "$T/notify.py" "$T/notify.sock" "$T/notify.out"
wait_until 10 test -S "$T/notify.sock" || t_fail "notify listener did not start"

# ---- expired, then valid: refreshed once, delivered
NOTIFY_SOCKET=$T/notify.sock daemon_start "$CONF"
wait_maildir "$T/mail/oauth" 6 20 || d_fail "the OAuth account did not deliver"
same_messages "$T/orig" "$T/mail/oauth" || d_fail "not every message exactly once"
t_assert_eq "$(calls)" 2 "token command calls (expired, then valid)"

# ---- two refused tokens: 77, then no polling until fetch/reload
printf '%s\n' "bad1-$TOKEN" "bad2-$TOKEN" >"$TOK/tokens"
: >"$TOK/calls"
cp "$T/orig/0001.eml" "$T/srv/"
ctl fetch oauth >"$T/f1.out" 2>&1
rc=$?
t_assert_eq "$rc" 77 "fetch with two refused tokens"
t_assert_eq "$(calls)" 2 "token command calls (refused twice)"
sleep 3.5 # the interval is 1 s: a polling account would have run again by now
# The status line (every 10 s) names the failing account for `systemctl status'.
wait_until 15 grep -q '^STATUS=.* 1 failing: oauth$' "$T/notify.out" ||
  { cat "$T/notify.out" >&2; d_fail "STATUS= does not name the failing account"; }
t_assert_eq "$(calls)" 2 "token command calls 3.5 s later (no polling)"
daemon_status_json "$T/st.json"
t_assert_eq "$(jq_py "$T/st.json" 'acc("oauth")["state"]')" backoff "state"
t_assert_eq "$(jq_py "$T/st.json" 'acc("oauth")["next_run"]')" null "next_run"
t_assert_eq "$(jq_py "$T/st.json" 'acc("oauth")["auth_failed"]')" true "auth_failed"
err=$(jq_py "$T/st.json" 'acc("oauth")["last_run"]["error"]')
case "$err" in
login\ refused:*"invalid token"*"(token refreshed once)") ;;
*) d_fail "last_run.error is \"$err\"" ;;
esac
ctl status >"$T/table.out" 2>&1
grep -E '^oauth .*on fetch/reload' "$T/table.out" >/dev/null ||
  { cat "$T/table.out" >&2; d_fail "the table's NEXT RUN does not say on fetch/reload"; }
grep -q -- "$TOKEN" "$T/st.json" "$T/table.out" "$DAEMON_LOG" && d_fail "a token reached status or log"
# The table cuts an error at 60 characters ("..."); `pop3ctl status oauth' shows it whole.
[ "${#err}" -gt 60 ] || d_fail "the error has ${#err} characters, not more than 60: $err"
grep -q -F -- "$err" "$T/table.out" && { cat "$T/table.out" >&2; d_fail "the table's error is not cut"; }
grep -Eq '^oauth .*\.\.\.$' "$T/table.out" || { cat "$T/table.out" >&2; d_fail "no cut error"; }
ctl status oauth >"$T/table1.out" 2>&1 || { cat "$T/table1.out" >&2; d_fail "pop3ctl status oauth"; }
t_assert_eq "$(sed -n 2p "$T/table1.out" | grep -o -F -- "$err")" "$err" "pop3ctl status oauth: the whole error"

# ---- a reload re-arms it (and it fails again: still bad tokens)
ctl reload >/dev/null 2>&1 || d_fail "reload"
wait_until 10 sh -c "[ \$(wc -l <'$TOK/calls') -ge 4 ]" || d_fail "no run after the reload"
sleep 2.5
t_assert_eq "$(calls)" 4 "token command calls after one reload"

# ---- a fetch with a good token works and polling resumes
printf '%s\n' "$TOKEN" >"$TOK/tokens"
ctl fetch oauth >"$T/f2.out" 2>&1 || { cat "$T/f2.out" >&2; d_fail "fetch with a good token"; }
daemon_status_json "$T/st.json"
t_assert_eq "$(jq_py "$T/st.json" 'acc("oauth")["auth_failed"]')" false "auth_failed after success"
[ "$(jq_py "$T/st.json" 'acc("oauth")["next_run"]')" != null ] || d_fail "next_run still null after success"

# ---- a forced method the server does not offer: 69, no AUTH sent
ctl fetch forced >"$T/f3.out" 2>&1
rc=$?
t_assert_eq "$rc" 78 "fetch of a disabled account"
daemon_stop 15 || d_fail "daemon exit status"
sed -i 's/enabled = false; //' "$CONF"
daemon_start "$CONF"
ctl fetch forced >"$T/f3.out" 2>&1
rc=$?
t_assert_eq "$rc" 69 "fetch with a method the server does not offer"
grep -q "does not offer SASL OAUTHBEARER (it offers: PLAIN)" "$T/f3.out" ||
  { cat "$T/f3.out" >&2; d_fail "no sentence naming the offered methods"; }
daemon_status_json "$T/st.json"
[ "$(jq_py "$T/st.json" 'acc("forced")["next_run"]')" != null ] || d_fail "69 must back off, not wait"
t_assert_eq "$(jq_py "$T/st.json" 'acc("forced")["auth_failed"]')" false "auth_failed after 69"
daemon_stop 15 || d_fail "daemon exit status"

echo "PASS: daemon-oauth"
exit 0

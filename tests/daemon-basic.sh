#!/bin/bash
# daemon-basic.sh -- pop3syncd polls several accounts on its own and pop3ctl reports it:
#   - two accounts against fake servers (15 and 30 messages, --maildir so deletions persist)
#     and one against a private Dovecot over STARTTLS (20 messages) are delivered byte for
#     byte by scheduled polls, and deleted on the servers;
#   - `pop3ctl status --json` matches what happened (states, last_run, totals, next_run,
#     daemon.pid, daemon.config); the table has a line per account; an unknown account is 64;
#   - `pop3syncd --check-config`: 0 for a good file, FILE:LINE and 78 for a bad one
#     (keep_days without keep too), and it changes nothing on disk: the Maildirs (and
#     their missing parent) are created by the first runs, of the daemon and of `pop3 dl`;
#   - an account with a wrong password is in backoff with a login error; `fetch` of it is 77;
#   - a disabled account: state disabled, next_run null, `fetch` is 78.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-120}
t_init daemon-basic
. "$top_srcdir/tests/lib/daemon.sh"
daemon_require

# ---- the mailboxes
mail_gen "$T/orig-a" 15 --varied --seed 11
mail_gen "$T/orig-b" 30 --varied --seed 12
mail_gen "$T/orig-dc" 20 --varied --seed 13
cp -r "$T/orig-a" "$T/srv-a"
cp -r "$T/orig-b" "$T/srv-b"
mkdir "$T/srv-bad"
cp "$T/orig-a/0001.eml" "$T/srv-bad/"

fake_start a --maildir "$T/srv-a"
PORT_A=$FAKE_PORT
fake_start b --maildir "$T/srv-b"
PORT_B=$FAKE_PORT
fake_start bad --maildir "$T/srv-bad"
PORT_BAD=$FAKE_PORT

# The Dovecot part needs a Dovecot; without one (and outside CI) the rest still runs.
use_dovecot=1
if [ ! -x "${DOVECOT_BIN:-/usr/sbin/dovecot}" ] && [ "${CI:-}" != true ]; then
  t_log "dovecot not installed: the Dovecot account is left out"
  use_dovecot=0
fi
if [ "$use_dovecot" = 1 ]; then
  . "$top_srcdir/tests/lib/dovecot.sh"
  dovecot_start
  dovecot_fill "$T/orig-dc"
  t_assert_eq "$(dovecot_count)" 20 "dovecot message count after fill"
fi

# ---- the config
CONF=$T/etc/pop3sync.conf
mkdir -p "$T/etc"
{
  daemon_conf_globals
  cat <<EOF
interval = 2;
max_parallel = 4;
accounts = (
  { name = "alpha";
    server = "tcp:test@127.0.0.1:$PORT_A";
    maildir = "$T/mail/alpha";
    password_command = "echo secret"; },
  { name = "beta";
    server = "tcp:test@127.0.0.1:$PORT_B";
    maildir = "$T/mail/beta";
    interval = 3;
    password = "secret"; },
EOF
  if [ "$use_dovecot" = 1 ]; then
    cat <<EOF
  { name = "dove";
    server = "starttls:test@127.0.0.1!localhost:$DOVECOT_POP3_PORT";
    ca_file = "$DOVECOT_CA";
    maildir = "$T/mail/dove";
    password = "secret"; },
EOF
  fi
  cat <<EOF
  { name = "wrongpw";
    server = "tcp:test@127.0.0.1:$PORT_BAD";
    maildir = "$T/mail/wrongpw";
    password_command = "echo not-the-password"; },
  { name = "off";
    server = "tcp:test@127.0.0.1:$PORT_A";
    maildir = "$T/mail/off";
    password_command = "echo secret";
    enabled = false; }
);
EOF
} | daemon_conf "$CONF"
good_accounts="alpha beta"
[ "$use_dovecot" = 1 ] && good_accounts="$good_accounts dove"

# ---- --check-config
out=$("$DAEMON" --check-config -c "$CONF" 2>&1)
rc=$?
t_assert_eq "$rc" 0 "pop3syncd --check-config of a good file: exit status ($out)"
# ($T/mail itself is there already when the accounts run as another user: tests/lib/daemon.sh.)
[ -n "$(ls -A "$T/mail" 2>/dev/null)" ] && t_fail "--check-config created $(ls -A "$T/mail")"
# Nothing at all is written: the same tree, the same times.
# (Servers and logs move on their own; $T itself changes as the snapshots are written.)
snap() { find "$T" -mindepth 1 -path "$T/srv-*" -prune -o -path "$T/dovecot*" -prune -o \
  -name '*.snap' -prune -o -printf '%p %y %m %s %T@\n' 2>/dev/null | grep -v '\.log ' | sort; }
snap >"$T/before.snap"
"$DAEMON" --check-config -c "$CONF" >/dev/null 2>&1
snap >"$T/after.snap"
cmp -s "$T/before.snap" "$T/after.snap" ||
  { diff "$T/before.snap" "$T/after.snap" >&2; t_fail "--check-config changed the file system"; }

BAD=$T/etc/bad.conf
daemon_conf "$BAD" <<EOF
control_socket = "$DAEMON_SOCK";
state_dir = "$DAEMON_STATE";
intreval = 2;
accounts = (
  { name = "x";
    server = "tcp:test@127.0.0.1:$PORT_A";
    maildir = "$T/mail/x";
    window = 0; }
);
EOF
out=$("$DAEMON" --check-config -c "$BAD" 2>&1)
rc=$?
t_assert_eq "$rc" 78 "pop3syncd --check-config of a bad file: exit status"
echo "$out" | grep -q "^$BAD:3: .*intreval" ||
  t_fail "--check-config of a bad file: no '$BAD:3: ...intreval' line in: $out"
echo "$out" | grep -q "^$BAD:8: .*window" ||
  t_fail "--check-config of a bad file: no '$BAD:8: ...window' line in: $out"
# keep_days without keep, as `pop3 dl --keep-days' without --keep.
printf 'accounts = (\n  { name = "k"; server = "tcp:test@127.0.0.1:%s";\n    maildir = "%s";\n    keep_days = 3; }\n);\n' \
  "$PORT_A" "$T/mail/k" | daemon_conf "$T/etc/kd.conf"
out=$("$DAEMON" --check-config -c "$T/etc/kd.conf" 2>&1)
rc=$?
t_assert_eq "$rc" 78 "pop3syncd --check-config, keep_days without keep: exit status"
t_assert_eq "$out" "$T/etc/kd.conf:4: keep_days needs keep = true" \
  "pop3syncd --check-config, keep_days without keep"
# One account is "1 account".
sed "s|keep_days = 3;|keep = true; keep_days = 3;|" "$T/etc/kd.conf" | daemon_conf "$T/etc/one.conf"
out=$("$DAEMON" --check-config -c "$T/etc/one.conf" 2>&1)
t_assert_eq "$out" "$T/etc/one.conf: configuration is valid (1 account)" "--check-config of one account"
# An existing Maildir path that is not a directory is an error of the file.
: >"$T/etc/notdir"
sed "s|$T/mail/k|$T/etc/notdir|; s|keep_days = 3;|keep = true; keep_days = 3;|" \
  "$T/etc/kd.conf" | daemon_conf "$T/etc/nd.conf"
out=$("$DAEMON" --check-config -c "$T/etc/nd.conf" 2>&1)
rc=$?
t_assert_eq "$rc" 78 "pop3syncd --check-config, Maildir a file: exit status ($out)"
t_assert_eq "$out" "$T/etc/nd.conf:3: maildir $T/etc/notdir: Not a directory" \
  "pop3syncd --check-config, Maildir a file"
# A syntax error names its line too.
printf 'interval = 2;\naccounts = (\n  { name = = "x";\n    server = "y"; }\n);\n' >"$T/etc/syntax.conf"
out=$("$DAEMON" --check-config -c "$T/etc/syntax.conf" 2>&1)
rc=$?
t_assert_eq "$rc" 78 "pop3syncd --check-config with a syntax error: exit status"
echo "$out" | grep -q "^$T/etc/syntax.conf:3: .*syntax error" ||
  t_fail "--check-config with a syntax error: no FILE:LINE: in: $out"

# ---- the daemon polls on its own
daemon_start "$CONF"

for acct in $good_accounts; do
  case $acct in
  alpha) n=15 ;;
  beta) n=30 ;;
  dove) n=20 ;;
  esac
  wait_maildir "$T/mail/$acct" "$n" 60 ||
    d_fail "$acct: $(t_maildir_count "$T/mail/$acct") of $n messages delivered after 60 s"
done

# Every delivered file equals one original, each original once.
same_messages "$T/orig-a" "$T/mail/alpha" || d_fail "alpha: delivered messages differ"
same_messages "$T/orig-b" "$T/mail/beta" || d_fail "beta: delivered messages differ"
[ "$use_dovecot" = 1 ] && { same_messages "$T/orig-dc" "$T/mail/dove" ||
  d_fail "dove: delivered messages differ"; }

# The servers deleted what was delivered (a deletion commits at QUIT, after delivery).
_srv_empty() { [ -z "$(ls -A "$1")" ]; }
wait_until 20 _srv_empty "$T/srv-a" || d_fail "alpha: server still holds $(ls "$T/srv-a" | wc -l)"
wait_until 20 _srv_empty "$T/srv-b" || d_fail "beta: server still holds $(ls "$T/srv-b" | wc -l)"
if [ "$use_dovecot" = 1 ]; then
  _dove_empty() { [ "$(dovecot_count)" = 0 ]; }
  wait_until 20 _dove_empty || d_fail "dove: Dovecot still holds $(dovecot_count) messages"
fi
# The fake server's record agrees: alpha's 15 UIDs were deleted, each once. A session's
# record is written when it ends, a moment after its QUIT removed the files.
_alpha_deleted() {
  "$PYTHON" - "$T/a.rec" <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
deleted = [u for r in recs for u in r["deleted_uids"]]
if len(deleted) < 15:
    sys.exit(1)
assert len(deleted) == 15 and len(set(deleted)) == 15, ("deleted", len(deleted), len(set(deleted)))
assert all(r["user"] == "test" and r["authenticated"] for r in recs), "a session did not log in"
EOF
}
wait_until 10 _alpha_deleted || d_fail "alpha: server record"

# ---- the status document
# totals are updated when a run ends; the files can be in new/ a moment before.
_totals_done() {
  daemon_status_json "$T/st.json"
  local a want
  for a in $good_accounts; do
    want=$(t_maildir_count "$T/mail/$a")
    [ "$(jq_py "$T/st.json" "acc('$a')['total_messages']")" = "$want" ] || return 1
  done
  [ "$(jq_py "$T/st.json" "(acc('wrongpw')['last_run'] or {}).get('result')")" = error ]
}
wait_until 20 _totals_done || { cat "$T/st.json" >&2; d_fail "status totals never matched"; }

daemon_status_json "$T/status.json"
S=$T/status.json
t_assert_eq "$(jq_py "$S" "d['daemon']['pid']")" "$DAEMON_PID" "status: daemon.pid"
t_assert_eq "$(jq_py "$S" "d['daemon']['config']")" "$CONF" "status: daemon.config"
t_assert_eq "$(jq_py "$S" "[a['name'] for a in d['accounts']]")" \
  "$("$PYTHON" -c 'import json,sys; print(json.dumps(sys.argv[1:]))' $good_accounts wrongpw off)" \
  "status: accounts in config order"
for a in $good_accounts; do
  "$PYTHON" - "$S" "$a" "$(t_maildir_count "$T/mail/$a")" "$(maildir_bytes "$T/mail/$a")" \
    "$T/mail/$a" <<'EOF' || { cat "$S" >&2; d_fail "status of $a"; }
import json, re, sys
d = json.load(open(sys.argv[1]))
name, n, size, md = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
a = [x for x in d["accounts"] if x["name"] == name][0]
rfc3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
problems = []
def check(cond, what):
    if not cond:
        problems.append(what)
check(a["state"] in ("idle", "fetching"), "state %r" % a["state"])
lr = a["last_run"]
check(isinstance(lr, dict), "last_run %r" % lr)
if isinstance(lr, dict):
    check(lr["result"] == "ok", "last_run.result %r" % lr.get("result"))
    check(lr["error"] is None, "last_run.error %r" % lr.get("error"))
    check(lr["exit"] == 0, "last_run.exit %r" % lr.get("exit"))
    check(rfc3339.match(str(lr["started"])), "last_run.started %r" % lr.get("started"))
    check(rfc3339.match(str(lr["finished"])), "last_run.finished %r" % lr.get("finished"))
    # Counted waits (connect, greeting, CAPA, login, listing, ...): every run has a few.
    rt = lr.get("round_trips")
    check(type(rt) is int and 4 <= rt <= 20, "last_run.round_trips %r" % rt)
    check(type(lr.get("resumed_tls")) is bool, "last_run.resumed_tls %r" % lr.get("resumed_tls"))
check(a["total_messages"] == n, "total_messages %r != %d delivered" % (a["total_messages"], n))
check(a["total_bytes"] == size, "total_bytes %r != %d delivered" % (a["total_bytes"], size))
check(a["consecutive_failures"] == 0, "consecutive_failures %r" % a["consecutive_failures"])
check(a["maildir"] == md, "maildir %r" % a["maildir"])
check(a["backoff_until"] is None, "backoff_until %r" % a["backoff_until"])
check(a["auth_failed"] is False, "auth_failed %r" % a["auth_failed"])
# next_run is null only while a run is in progress.
if a["state"] != "fetching":
    check(isinstance(a["next_run"], str) and rfc3339.match(a["next_run"]),
          "next_run %r" % a["next_run"])
if problems:
    sys.exit("%s: %s" % (name, "; ".join(problems)))
EOF
done

# The account with the wrong password.
"$PYTHON" - "$S" <<'EOF' || { cat "$S" >&2; d_fail "status of wrongpw"; }
import json, re, sys
d = json.load(open(sys.argv[1]))
a = [x for x in d["accounts"] if x["name"] == "wrongpw"][0]
lr = a["last_run"] or {}
problems = []
if a["state"] != "backoff": problems.append("state %r" % a["state"])
if lr.get("result") != "error": problems.append("result %r" % lr.get("result"))
if not (a["consecutive_failures"] >= 1): problems.append("failures %r" % a["consecutive_failures"])
if "login" not in str(lr.get("error")).lower(): problems.append("error %r" % lr.get("error"))
if lr.get("exit") != 77: problems.append("exit %r" % lr.get("exit"))
if a["auth_failed"] is not True: problems.append("auth_failed %r" % a["auth_failed"])
if not isinstance(a["backoff_until"], str): problems.append("backoff_until %r" % a["backoff_until"])
if a["total_messages"] != 0: problems.append("total_messages %r" % a["total_messages"])
if problems:
    sys.exit("wrongpw: " + "; ".join(problems))
EOF
[ "$(t_maildir_count "$T/mail/wrongpw")" = 0 ] || d_fail "wrongpw: something was delivered"
t_assert_eq "$(ls "$T/srv-bad" | wc -l)" 1 "wrongpw: the server's message is still there"

# The disabled account.
t_assert_eq "$(jq_py "$S" "acc('off')['state']")" disabled "off: state"
t_assert_eq "$(jq_py "$S" "acc('off')['next_run']")" null "off: next_run"
t_assert_eq "$(jq_py "$S" "acc('off')['last_run']")" null "off: last_run"
[ -e "$T/mail/off" ] && d_fail "the Maildir of a disabled account was created"

# status ACCOUNT holds that one account.
daemon_status_json "$T/one.json" beta
t_assert_eq "$(jq_py "$T/one.json" "[a['name'] for a in d['accounts']]")" '["beta"]' \
  "status --json beta"

# ---- the table
ctl status >"$T/table" 2>"$T/table.err"
rc=$?
t_assert_eq "$rc" 0 "pop3ctl status: exit status"
head -n 1 "$T/table" | grep -q '^ACCOUNT  *STATE  *LAST RUN  *RESULT  *MESSAGES  *BYTES  *NEXT RUN  *ERROR$' ||
  { cat "$T/table" >&2; t_fail "pop3ctl status: header line"; }
t_assert_eq "$(wc -l <"$T/table")" $(($(echo $good_accounts | wc -w) + 3)) "pop3ctl status: lines"
for a in $good_accounts; do
  grep -Eq "^$a +(idle|fetching) " "$T/table" || { cat "$T/table" >&2; t_fail "table: no line for $a"; }
done
grep -Eq '^wrongpw +backoff +.* error +0 +0 B +in .*server refused the login' "$T/table" ||
  { cat "$T/table" >&2; t_fail "table: wrongpw line"; }
# `pop3ctl status NAME' shows the error whole (daemon-oauth.sh: one over 60 characters).
daemon_status_json "$T/wp.json" wrongpw
wp_error=$(jq_py "$T/wp.json" "acc('wrongpw')['last_run']['error']")
ctl status wrongpw >"$T/table1" 2>&1 || { cat "$T/table1" >&2; t_fail "pop3ctl status wrongpw"; }
t_assert_eq "$(sed -n 2p "$T/table1" | grep -o -F -- "$wp_error")" "$wp_error" \
  "pop3ctl status wrongpw: the whole error"
grep -Eq '^off +disabled +- +- .* - +-$' "$T/table" ||
  { cat "$T/table" >&2; t_fail "table: off line"; }

# ---- unknown account, fetch of the failing and of the disabled account
out=$(ctl status NOSUCH 2>&1)
rc=$?
t_assert_eq "$rc" 64 "pop3ctl status NOSUCH: exit status ($out)"
echo "$out" | grep -q "NOSUCH" || t_fail "pop3ctl status NOSUCH: message does not name it: $out"
out=$(ctl status --json NOSUCH 2>&1)
t_assert_eq "$?" 64 "pop3ctl status --json NOSUCH: exit status ($out)"

out=$(timeout 60 "$POP3CTL" -s "$DAEMON_SOCK" fetch wrongpw 2>&1)
rc=$?
t_assert_eq "$rc" 77 "pop3ctl fetch wrongpw: exit status ($out)"
echo "$out" | grep -q '^wrongpw: error: .*login' || t_fail "pop3ctl fetch wrongpw: output: $out"
# The fake server saw the wrong password twice now (the scheduled poll and this fetch).
_logins() {
  "$PYTHON" -c '
import json, sys
print(sum(1 for l in open(sys.argv[1]) if json.loads(l)["user"] == "test"))' "$T/bad.rec"
}
_two_logins() { [ "$(_logins)" -ge 2 ]; }
wait_until 10 _two_logins
t_assert_eq "$(_logins)" 2 "wrongpw: login attempts seen by the server (one poll, one fetch)"
"$PYTHON" -c '
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    assert not r["authenticated"] and r["retrieved"] == [] and r["deleted"] == [], r
' "$T/bad.rec" || t_fail "wrongpw: a session with the wrong password got in"
daemon_status_json "$T/st2.json" wrongpw
t_assert_eq "$(jq_py "$T/st2.json" "acc('wrongpw')['consecutive_failures']")" 2 \
  "wrongpw: consecutive_failures after a fetch"
t_assert_eq "$(jq_py "$T/st2.json" "acc('wrongpw')['state']")" backoff "wrongpw: state after fetch"

out=$(timeout 30 "$POP3CTL" -s "$DAEMON_SOCK" fetch off 2>&1)
rc=$?
t_assert_eq "$rc" 78 "pop3ctl fetch of a disabled account: exit status ($out)"
echo "$out" | grep -q 'disabled' || t_fail "pop3ctl fetch off: message: $out"
[ -e "$T/mail/off" ] && d_fail "fetch of a disabled account created its Maildir"

# fetch --all: the failing account's status is the exit status; the others still run.
timeout 60 "$POP3CTL" -s "$DAEMON_SOCK" fetch --all >"$T/all.out" 2>"$T/all.err"
rc=$?
t_assert_eq "$rc" 77 "pop3ctl fetch --all with a failing account: exit status"
for a in $good_accounts; do
  grep -qx "$a: ok, 0 messages, 0 bytes" "$T/all.out" ||
    t_fail "fetch --all: no ok line for $a: $(cat "$T/all.out" "$T/all.err")"
done
grep -q '^wrongpw: error: .*login' "$T/all.err" || t_fail "fetch --all: wrongpw: $(cat "$T/all.err")"
grep -q '^off' "$T/all.out" "$T/all.err" && t_fail "fetch --all ran the disabled account"

# A good fetch now: nothing new, exit 0.
out=$(timeout 60 "$POP3CTL" -s "$DAEMON_SOCK" fetch alpha 2>&1)
rc=$?
t_assert_eq "$rc" 0 "pop3ctl fetch alpha: exit status ($out)"
t_assert_eq "$out" "alpha: ok, 0 messages, 0 bytes" "pop3ctl fetch alpha: output"

# ---- clean stop
daemon_stop 30
rc=$?
t_assert_eq "$rc" 0 "pop3syncd exit status after SIGTERM"
[ -e "$DAEMON_SOCK" ] && t_fail "control socket left behind after a clean exit"
for a in $good_accounts; do
  maildir_tmp_empty "$T/mail/$a" || t_fail "$a: files left in tmp/"
done
t_log "daemon-basic: all checks passed"
exit 0

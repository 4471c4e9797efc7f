#!/bin/bash
# daemon-privsep.sh -- a root pop3syncd never acts as root in a user's files (root only, with
# CI=true or POP3SYNC_ROOT_TESTS=1; see tests/lib/testuser.sh):
#   - `user' is required as root and checked (78 with FILE:LINE);
#   - each run happens in a worker that became the user: /proc shows the user's uids and
#     exactly `id -G USER' as groups; no chown is ever called on a Maildir path (strace); the
#     delivered files are the user's, every message exactly once;
#   - the user's symlink attacks after the daemon started: Maildir/tmp -> a root directory of
#     36-hour-old files, Maildir/new -> a root directory, STATE_DIR/USER/MAILBOX.state -> a root
#     0600 file, the Maildir itself -> a root directory: every decoy is byte-identical with
#     the same owners and modes afterwards, nothing new in it, nothing lost on the server;
#   - a netrc owned by root, or the user's ~/.netrc a symlink to root's file: refused (78);
#   - four accounts whose password command hangs do not delay a good one, and SIGTERM still
#     ends the daemon within 10 s, leaving no password command behind;
#   - a worker killed with SIGSEGV mid-run: the daemon survives, last_run says so (75,
#     signal SIGSEGV), and the next run delivers everything exactly once.
#   - a worker stopped with SIGSTOP is killed after 60 s without a word; the
#     next run delivers everything exactly once.
#   - a failing password command's stderr reaches last_run.error, its control
#     characters replaced.
#   - on_new_mail runs as the user: its `id -u' and `id -G' are the user's.
#   - upgrade: an older daemon's STATE_DIR/ACCOUNT.state is moved to STATE_DIR/USER under
#     the mailbox's name (no message fetched again in keep mode); a root-owned non-empty
#     STATE_DIR/USER is refused (78), not handed over.
#   - without CAP_CHOWN (as under the systemd unit) a missing STATE_DIR/USER fails the run
#     (73) naming --prepare-state, which then hands it over; runs work without CAP_CHOWN.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-240}
t_init daemon-privsep
DAEMON_ACCOUNT_USER=  # this test names its own user
. "$top_srcdir/tests/lib/daemon.sh"
. "$top_srcdir/tests/lib/testuser.sh"
testuser_require
daemon_require
testuser_create
chmod 0711 "$T"

MD=$TU_HOME/Maildir
STATE_U=$DAEMON_STATE/$TU

mail_gen "$T/orig" 12 --varied --seed 81
mail_gen "$T/orig2" 12 --varied --seed 82
# Distinct from the first batch (a message with the same content would keep its UID).
for f in "$T/orig2"/*; do sed -i '1i X-Batch: 2' "$f"; done
mkdir "$T/all" && cp "$T/orig"/* "$T/all/" && for f in "$T/orig2"/*; do cp "$f" "$T/all/2-$(basename "$f")"; done
cp -r "$T/orig" "$T/srv"
fake_start srv --maildir "$T/srv"
PORT=$FAKE_PORT

# Decoys: root's, 0700/0600, with files old enough for any tmp clean-up, one of them named
# exactly like a file of pop3sync's own (an interrupted delivery of a dead pid on this host).
host=$(hostname | sed 's,/,\\057,g; s,:,\\072,g')
make_decoy() {
  local d=$1
  mkdir -m 0700 "$d"
  printf 'root secret\n' >"$d/secret" && chmod 0600 "$d/secret"
  printf 'old\n' >"$d/1500000000.M1P999999Q1.$host" && chmod 0600 "$d/1500000000.M1P999999Q1.$host"
  printf 'conf\n' >"$d/passwd.conf"
  touch -d '3 days ago' "$d"/* "$d"
}
snapshot() {
  (cd "$1" && find . -printf '%p %u:%g %m %s %T@\n' | sort && find . -type f -exec sha256sum {} + | sort)
}
for i in 1 2 3 4; do
  make_decoy "$T/decoy$i"
  snapshot "$T/decoy$i" >"$T/decoy$i.before"
done
check_decoys() {
  local i
  for i in 1 2 3 4; do
    snapshot "$T/decoy$i" >"$T/decoy$i.after"
    diff "$T/decoy$i.before" "$T/decoy$i.after" >&2 ||
      d_fail "$1: root's decoy directory $T/decoy$i changed"
  done
}
server_count() {
  find "$T/srv" -type f | wc -l
}

# ---- `user' is required as root
CONF=$T/etc/pop3sync.conf
mkdir -p "$T/etc"
{
  daemon_conf_globals
  cat <<EOF
accounts = ( { name = "nouser"; server = "tcp:test@127.0.0.1:$PORT"; maildir = "$MD"; password = "secret"; } );
EOF
} | daemon_conf "$CONF"
"$DAEMON" --check-config -c "$CONF" >"$T/cc.out" 2>&1
rc=$?
t_assert_eq "$rc" 78 "--check-config without user as root"
grep -q "pop3sync.conf:[0-9]*: account \`nouser': set user = \"NAME\"" "$T/cc.out" ||
  { cat "$T/cc.out" >&2; t_fail "no FILE:LINE error naming the missing user"; }
[ ! -e "$MD" ] || t_fail "--check-config as root created $MD"

# ---- the real config
{
  daemon_conf_globals
  cat <<EOF
interval = 3600;
max_parallel = 8;
accounts = (
  { name = "acct"; user = "$TU";
    server = "tcp:test@127.0.0.1:$PORT";
    maildir = "$MD";
    password_command = "sleep 1; echo secret";
    on_new_mail = "id -u >$TU_HOME/hook.uid; id -G >$TU_HOME/hook.gids"; },
  { name = "rootnetrc"; user = "$TU";
    server = "tcp:test@127.0.0.1:$PORT";
    maildir = "$TU_HOME/Maildir2";
    netrc = "$T/root.netrc"; },
  { name = "symnetrc"; user = "$TU"; # a mailbox of its own: one account per mailbox
    server = "tcp:other@127.0.0.1:$PORT";
    maildir = "$TU_HOME/Maildir2"; }
);
EOF
} | daemon_conf "$CONF"
printf 'machine 127.0.0.1 login test password secret\n' >"$T/root.netrc"
chmod 0600 "$T/root.netrc"
cp "$T/root.netrc" "$T/root.netrc.orig"
"$DAEMON" --check-config -c "$CONF" >"$T/cc.out" 2>&1 || { cat "$T/cc.out" >&2; t_fail "config refused"; }
[ ! -e "$MD" ] || t_fail "the root daemon's config check created $MD"

command -v strace >/dev/null || t_fail "strace not found"
echo "==== strace daemon" >>"$DAEMON_LOG"
# LeakSanitizer cannot run under ptrace (an ASan build): no leak check in this part.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
  t_bg strace -f -qq -o "$T/strace.log" -e trace=chown,fchown,lchown,fchownat,setresuid,setuid,setgroups \
  "$DAEMON" -c "$CONF" >>"$DAEMON_LOG" 2>&1 </dev/null
STRACE_PID=$T_BG_PID
wait_until 20 ctl status --json >/dev/null 2>&1 || d_fail "the daemon did not answer"
DAEMON_PID=$(pgrep -P "$STRACE_PID" | head -1)
[ -n "$DAEMON_PID" ] || d_fail "no daemon under strace"

# While the password command sleeps, the worker is there to look at.
ctl fetch acct >"$T/fetch1.out" 2>&1 &
fetch_pid=$!
worker=
for ((i = 0; i < 100; i++)); do
  worker=$(pgrep -u "$TU" -f 'pop3syncd --worker' | head -1)
  [ -n "$worker" ] && break
  sleep 0.05
done
[ -n "$worker" ] || d_fail "no worker process running as $TU"
uids=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$worker/status")
gids=$(awk '/^Gid:/ {print $2, $3, $4, $5}' "/proc/$worker/status")
groups=$(awk '/^Groups:/ {$1 = ""; print}' "/proc/$worker/status" | tr ' ' '\n' | grep . | sort -n | tr '\n' ' ')
want_groups=$(id -G "$TU" | tr ' ' '\n' | sort -n | tr '\n' ' ')
t_assert_eq "$uids" "$TU_UID $TU_UID $TU_UID $TU_UID" "worker uids"
t_assert_eq "$gids" "$TU_GID $TU_GID $TU_GID $TU_GID" "worker gids"
t_assert_eq "$groups" "$want_groups" "worker supplementary groups (id -G $TU)"
if tr '\0' '\n' <"/proc/$worker/environ" | grep -q secret; then
  d_fail "the worker's environment holds the password"
fi
wait "$fetch_pid"
rc=$?
[ "$rc" = 0 ] || { cat "$T/fetch1.out" >&2; d_fail "fetch acct exited $rc"; }
same_messages "$T/orig" "$MD" || d_fail "first fetch: not every message exactly once"
t_assert_eq "$(server_count)" 0 "messages left on the server after the first fetch"
bad=$(find "$MD" "$STATE_U" \( ! -user "$TU" -o ! -group "$TU" \) -printf '%p %u:%g\n')
[ -z "$bad" ] || d_fail "not owned by $TU: $bad"
t_assert_eq "$(stat -c '%U %a' "$STATE_U")" "$TU 700" "STATE_DIR/USER owner and mode"
t_assert_eq "$(stat -c '%U %a' "$DAEMON_STATE")" "root 711" "state_dir owner and mode"
# Only chown there was: STATE_DIR/USER handed to the user.  Nothing in the Maildir.
if grep -E 'chown' "$T/strace.log" | grep -v '= -1' | grep -vE "^[0-9]+ +fchown\([0-9]+, $TU_UID, $TU_GID\) += 0$" | grep -q .; then
  grep chown "$T/strace.log" >&2
  d_fail "a chown other than the state directory hand-over"
fi
n_chown=$(grep -cE 'fchown\(' "$T/strace.log")
[ "$n_chown" -le 1 ] || d_fail "$n_chown fchown calls for one user (expected the first run's one)"
grep -qE "setgroups\([0-9]+, \[.*\]\) += 0" "$T/strace.log" || d_fail "no setgroups with the user's groups"
# The new mail's hook ran as the user too, never as root.
wait_until 10 test -s "$TU_HOME/hook.gids" || d_fail "on_new_mail did not run"
t_assert_eq "$(cat "$TU_HOME/hook.uid")" "$TU_UID" "on_new_mail: id -u"
t_assert_eq "$(tr ' ' '\n' <"$TU_HOME/hook.gids" | sort -n | tr '\n' ' ')" "$want_groups" \
  "on_new_mail: id -G"

# ---- attacks, each after the daemon started; the user makes the swap.
# New messages for the attacks: a wrongful delivery or deletion would show.
refill() {
  cp "$T/orig2"/* "$T/srv/"
}
fetch_expect_fail() {
  local what=$1
  ctl fetch acct >"$T/$what.out" 2>&1
  rc=$?
  [ "$rc" != 0 ] || { cat "$T/$what.out" >&2; d_fail "$what: fetch succeeded"; }
  t_log "$what: exit $rc: $(head -c 300 "$T/$what.out")"
  t_assert_eq "$(server_count)" 12 "$what: messages on the server"
}
restore_maildir() {
  as_user rm -rf "$MD"
}

refill
as_user mv "$MD" "$MD.real"
as_user mkdir -p "$MD/new" "$MD/cur"
as_user ln -s "$T/decoy1" "$MD/tmp"
fetch_expect_fail tmp-symlink
grep -qi "symbolic link\|tmp" "$T/tmp-symlink.out" || d_fail "tmp-symlink: the error does not name tmp"
check_decoys tmp-symlink

restore_maildir
as_user mkdir -p "$MD/tmp" "$MD/cur"
as_user ln -s "$T/decoy2" "$MD/new"
fetch_expect_fail new-symlink
check_decoys new-symlink

restore_maildir
as_user ln -s "$T/decoy4" "$MD"
fetch_expect_fail maildir-symlink
check_decoys maildir-symlink
as_user rm -f "$MD"

J=$STATE_U/test@127.0.0.1:$PORT.state # named by the mailbox (pop3(1), FILES)
as_user mv "$J" "$J.real"
as_user ln -s "$T/decoy3/secret" "$J"
fetch_expect_fail state-symlink
grep -qF "$J" "$T/state-symlink.out" || d_fail "state-symlink: the error does not name the state file"
check_decoys state-symlink
as_user rm -f "$J"
as_user mv "$J.real" "$J"

# Back to normal: everything arrives, once.
restore_maildir
as_user mv "$MD.real" "$MD"
ctl fetch acct >"$T/fetch2.out" 2>&1 || { cat "$T/fetch2.out" >&2; d_fail "fetch after the attacks failed"; }
same_messages "$T/all" "$MD" || d_fail "after the attacks: not every message exactly once"
t_assert_eq "$(server_count)" 0 "messages left after the good fetch"

# ---- netrc files that are not the user's
refill
ctl fetch rootnetrc >"$T/rootnetrc.out" 2>&1
rc=$?
t_assert_eq "$rc" 78 "netrc owned by root: exit"
grep -q "root.netrc is owned by uid 0" "$T/rootnetrc.out" ||
  { cat "$T/rootnetrc.out" >&2; d_fail "the netrc error does not name the file and its owner"; }
as_user ln -s "$T/root.netrc" "$TU_HOME/.netrc"
ctl fetch symnetrc >"$T/symnetrc.out" 2>&1
rc=$?
t_assert_eq "$rc" 78 "~/.netrc a symlink to root's file: exit"
grep -q "links to a file owned by uid 0" "$T/symnetrc.out" ||
  { cat "$T/symnetrc.out" >&2; d_fail "the netrc symlink refusal does not say why"; }
cmp -s "$T/root.netrc" "$T/root.netrc.orig" || d_fail "root's netrc changed"
as_user rm -f "$TU_HOME/.netrc"
t_assert_eq "$(stat -c '%U %a' "$T/root.netrc")" "root 600" "root's netrc owner and mode"
t_assert_eq "$(server_count)" 12 "messages on the server after the netrc refusals"
rm -f "$T/srv"/*
cp "$T/orig"/* "$T/srv/"
check_decoys end
kill -TERM "$DAEMON_PID"
wait "$STRACE_PID"
rc=$?
t_assert_eq "$rc" 0 "exit status of the traced daemon after SIGTERM"
DAEMON_PID=

# ---- hung password commands do not hold anyone up; SIGTERM still ends it in 10 s
marker=p3hang$$
# (A mailbox each: two accounts of one user on one mailbox are a configuration error.)
{
  daemon_conf_globals
  echo "max_parallel = 8;"
  echo "interval = 3600;"
  echo "accounts = ("
  for i in 1 2 3 4; do
    cat <<EOF
  { name = "hang$i"; user = "$TU"; server = "tcp:hang$i@127.0.0.1:$PORT"; maildir = "$TU_HOME/hang$i";
    timeout = 60; password_command = "sleep 1000 # $marker"; },
EOF
  done
  cat <<EOF
  { name = "good"; user = "$TU"; server = "tcp:test@127.0.0.1:$PORT"; maildir = "$TU_HOME/good";
    password = "secret"; }
);
EOF
} | daemon_conf "$CONF"
daemon_start "$CONF"
for i in 1 2 3 4; do
  ctl fetch --no-wait "hang$i" >/dev/null 2>&1 || d_fail "fetch --no-wait hang$i"
done
wait_until 10 pgrep -f "$marker" >/dev/null || d_fail "the hanging password commands did not start"
start=$(date +%s%N)
ctl fetch good >"$T/good.out" 2>&1 || { cat "$T/good.out" >&2; d_fail "fetch good failed"; }
ms=$((($(date +%s%N) - start) / 1000000))
[ "$ms" -le 8000 ] || d_fail "fetch good took $ms ms behind four hung password commands"
same_messages "$T/orig" "$TU_HOME/good" || d_fail "good: not every message exactly once"
start=$(date +%s%N)
daemon_stop 12
rc=$?
ms=$((($(date +%s%N) - start) / 1000000))
t_assert_eq "$rc" 0 "daemon exit status after SIGTERM with hung password commands"
[ "$ms" -le 10500 ] || t_fail "SIGTERM took $ms ms"
sleep 0.3
if pgrep -f "$marker" >/dev/null; then
  pgrep -af "$marker" >&2
  t_fail "password commands survived the daemon"
fi

# ---- a worker that crashes mid-run costs one run, not the daemon
rm -rf "$T/srv"
cp -r "$T/orig" "$T/srv"
fake_start slow --maildir "$T/srv" --body-rate 8000
PORT2=$FAKE_PORT
{
  daemon_conf_globals
  cat <<EOF
interval = 3600;
accounts = ( { name = "crash"; user = "$TU"; server = "tcp:test@127.0.0.1:$PORT2";
               maildir = "$TU_HOME/crash"; password = "secret"; } );
EOF
} | daemon_conf "$CONF"
# In a sanitizer build SIGSEGV must kill the worker, as it does in a normal one.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_segv=0" daemon_start "$CONF"
ctl fetch crash >"$T/crash.out" 2>&1 &
fetch_pid=$!
wait_until 30 _maildir_has "$TU_HOME/crash" 1 || d_fail "nothing delivered before the crash"
worker=$(pgrep -u "$TU" -f 'pop3syncd --worker' | head -1)
[ -n "$worker" ] || d_fail "no worker to crash"
kill -SEGV "$worker"
wait "$fetch_pid"
rc=$?
t_assert_eq "$rc" 75 "fetch whose worker crashed"
t_alive "$DAEMON_PID" || d_fail "the daemon died with its worker"
daemon_status_json "$T/st.json"
t_assert_eq "$(jq_py "$T/st.json" 'acc("crash")["last_run"]["signal"]')" SIGSEGV "last_run.signal"
t_assert_eq "$(jq_py "$T/st.json" 'acc("crash")["last_run"]["exit"]')" 75 "last_run.exit"
jq_py "$T/st.json" 'acc("crash")["last_run"]["error"]' | grep -q "worker killed by signal 11 (SIGSEGV)" ||
  d_fail "last_run.error does not say the worker was killed by SIGSEGV"
ctl fetch crash >"$T/crash2.out" 2>&1 || { cat "$T/crash2.out" >&2; d_fail "the run after the crash failed"; }
same_messages "$T/orig" "$TU_HOME/crash" || d_fail "after the crash: not every message exactly once"
t_assert_eq "$(find "$T/srv" -type f | wc -l)" 0 "messages left after the crash and rerun"
daemon_stop 15 || d_fail "daemon exit status"

# ---- a stopped worker cannot hold its account for ever; a password
# command's complaint reaches the status cleaned of control characters
rm -rf "$T/srv"
cp -r "$T/orig" "$T/srv"
{
  daemon_conf_globals
  cat <<EOF
interval = 3600;
accounts = ( { name = "stopme"; user = "$TU"; server = "tcp:test@127.0.0.1:$PORT2";
               maildir = "$TU_HOME/stopme"; password = "secret"; },
             { name = "pwerr"; user = "$TU"; server = "tcp:other@127.0.0.1:$PORT2";
               maildir = "$TU_HOME/pwerr"; password_command = "printf 'oops\\\\033[31m\\\\n' >&2; exit 3"; } );
EOF
} | daemon_conf "$CONF"
daemon_start "$CONF"
ctl fetch pwerr >"$T/pwerr.out" 2>&1
rc=$?
t_assert_eq "$rc" 78 "fetch whose password command failed"
daemon_status_json "$T/st.json"
err=$(jq_py "$T/st.json" 'acc("pwerr")["last_run"]["error"]')
case "$err" in
*"exited with status 3: oops?[31m"*) ;;
*) d_fail "pwerr: last_run.error is \"$err\"" ;;
esac
ctl fetch stopme >"$T/stop.out" 2>&1 &
fetch_pid=$!
wait_until 30 _maildir_has "$TU_HOME/stopme" 1 || d_fail "nothing delivered before the stop"
worker=$(pgrep -u "$TU" -f 'pop3syncd --worker' | head -1)
[ -n "$worker" ] || d_fail "no worker to stop"
kill -STOP "$worker"
# The daemon gives it 60 s of silence; a bounded wait.
for _ in $(seq 1 100); do kill -0 "$fetch_pid" 2>/dev/null || break; sleep 1; done
kill -0 "$fetch_pid" 2>/dev/null && d_fail "a stopped worker held its run for 100 s"
wait "$fetch_pid"
rc=$?
t_assert_eq "$rc" 75 "fetch whose worker was stopped"
daemon_status_json "$T/st.json"
jq_py "$T/st.json" 'acc("stopme")["last_run"]["error"]' | grep -q "not a word from it for 60 s" ||
  d_fail "last_run.error does not say the worker went silent"
kill -0 "$worker" 2>/dev/null && d_fail "the stopped worker is still there"
ctl fetch stopme >"$T/stop2.out" 2>&1 || { cat "$T/stop2.out" >&2; d_fail "the run after the stop failed"; }
same_messages "$T/orig" "$TU_HOME/stopme" || d_fail "after the stop: not every message exactly once"
daemon_stop 15 || d_fail "daemon exit status"

# ---- upgrade: an older root daemon's STATE_DIR/ACCOUNT.state (given to the user) is
# moved into the user's directory and renamed for its mailbox: nothing is fetched twice
cp -r "$T/orig" "$T/srvL"
fake_start legacy --maildir "$T/srvL"
PORT3=$FAKE_PORT
as_user mkdir -p "$TU_HOME/legacy-state"
as_user "$POP3" dl --keep --password-command "echo secret" --state "$TU_HOME/legacy-state/j" \
  "tcp:test@127.0.0.1:$PORT3" "$TU_HOME/legacy" >"$T/legacy.out" 2>&1 ||
  { cat "$T/legacy.out" >&2; t_fail "pop3 dl --keep as the user failed"; }
same_messages "$T/orig" "$TU_HOME/legacy" || t_fail "legacy: first fetch incomplete"
mv "$TU_HOME/legacy-state/j" "$DAEMON_STATE/legacy.state"
: >"$DAEMON_STATE/legacy.state.lock"
{
  daemon_conf_globals
  cat <<EOF
interval = 3600;
accounts = ( { name = "legacy"; user = "$TU"; server = "tcp:test@127.0.0.1:$PORT3";
               maildir = "$TU_HOME/legacy"; password = "secret"; keep = true; } );
EOF
} | daemon_conf "$CONF"
daemon_start "$CONF"
ctl fetch legacy >"$T/legacy2.out" 2>&1 || { cat "$T/legacy2.out" >&2; d_fail "legacy fetch failed"; }
same_messages "$T/orig" "$TU_HOME/legacy" || d_fail "legacy: messages fetched again after the upgrade"
[ ! -e "$DAEMON_STATE/legacy.state" ] || d_fail "the old journal is still in $DAEMON_STATE"
[ ! -e "$DAEMON_STATE/legacy.state.lock" ] || d_fail "the old lock is still in $DAEMON_STATE"
t_assert_eq "$(stat -c '%U %a' "$STATE_U/test@127.0.0.1:$PORT3.state")" "$TU 600" "moved journal"
daemon_stop 15 || d_fail "daemon exit status"
# A root-owned, non-empty STATE_DIR/USER is not handed over.
mv "$STATE_U" "$STATE_U.away"
mkdir -m 0700 "$STATE_U" && echo keep >"$STATE_U/rootfile"
daemon_start "$CONF"
ctl fetch legacy >"$T/legacy3.out" 2>&1
rc=$?
t_assert_eq "$rc" 78 "fetch with a root-owned non-empty user state directory"
t_assert_eq "$(stat -c '%U' "$STATE_U" "$STATE_U/rootfile" | sort -u)" root "owner after the refusal"
grep -q "not empty; not giving it" "$T/legacy3.out" "$DAEMON_LOG" || d_fail "no reason for the refusal"
daemon_stop 15 || d_fail "daemon exit status"
rm -rf "$STATE_U" && mv "$STATE_U.away" "$STATE_U"

# ---- the sandboxed daemon has no CAP_CHOWN (systemd unit): `--prepare-state', run with
# full privileges at start and reload, hands STATE_DIR/USER over; without it a run fails
# and says what to do
command -v setpriv >/dev/null || t_fail "setpriv not found"
printf '#!/bin/sh\nexec setpriv --bounding-set -chown,-fowner,-dac_override "%s" "$@"\n' "$DAEMON" >"$T/nochown"
chmod 0755 "$T/nochown"
mv "$STATE_U" "$STATE_U.saved"
DAEMON_REAL=$DAEMON
DAEMON=$T/nochown
daemon_start "$CONF"
ctl fetch legacy >"$T/nochown.out" 2>&1
rc=$?
t_assert_eq "$rc" 73 "fetch without CAP_CHOWN and without a prepared state directory"
grep -q -- "--prepare-state" "$T/nochown.out" "$DAEMON_LOG" || d_fail "the refusal does not say how to fix it"
"$DAEMON_REAL" --prepare-state -c "$CONF" >>"$DAEMON_LOG" 2>&1 || d_fail "--prepare-state failed"
t_assert_eq "$(stat -c '%U %a' "$STATE_U")" "$TU 700" "STATE_DIR/USER after --prepare-state"
rmdir "$STATE_U" && mv "$STATE_U.saved" "$STATE_U"
ctl fetch legacy >"$T/nochown2.out" 2>&1 || { cat "$T/nochown2.out" >&2; d_fail "fetch without CAP_CHOWN failed"; }
same_messages "$T/orig" "$TU_HOME/legacy" || d_fail "legacy: not exactly once without CAP_CHOWN"
daemon_stop 15 || d_fail "daemon exit status"
DAEMON=$DAEMON_REAL

echo "PASS: daemon-privsep"
exit 0

#!/bin/bash
# dl-journal.sh -- one mailbox, one journal, and honest output (issue 9):
#   - `pop3 dl --keep`, then pop3syncd with keep = true, on the same mailbox into the same
#     Maildir: nothing is delivered twice, the new messages once, and a later `pop3 dl --keep`
#     delivers nothing: both use STATE/USER@HOST:PORT.state. As root the account runs as nobody,
#     the daemon's state_dir is LOCALSTATEDIR/lib/pop3sync and nobody's `pop3 dl` uses
#     LOCALSTATEDIR/lib/pop3sync/nobody once it exists, moving its earlier journal there;
#   - the lock is shared: `pop3 dl` on a mailbox whose daemon run is in progress exits 75,
#     "locked by pid N (pop3syncd)", stdout empty;
#   - the daemon's old ACCOUNT.state (and ACCOUNT.state.lock) is moved to the new name on first
#     use: nothing delivered again in keep mode; when both names exist, both are kept and the
#     log warns about the old one;
#   - two accounts of one local user on one mailbox: --check-config 78, FILE:LINE, both named;
#   - failed runs: stdout empty, stderr says why and then "failed after N of M messages
#     (B bytes saved)" with the real figures (a closed port: 69, 0 of 0; a dropped
#     connection: what the Maildir holds).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-180}
t_init dl-journal
. "$top_srcdir/tests/lib/daemon.sh"
daemon_require
[ -x "$POP3" ] || t_skip "$POP3 not built"

PW=(--password-command 'echo secret')
if [ "$(id -u)" = 0 ]; then
  ROOT=1
  # LOCALSTATEDIR as this build has it compiled in.
  cs=$top_builddir/config.status
  prefix=$(sed -n 's/^S\["prefix"\]="\(.*\)"$/\1/p' "$cs")
  lsd=$(sed -n 's/^S\["localstatedir"\]="\(.*\)"$/\1/p' "$cs")
  lsd=${lsd//'${prefix}'/$prefix}
  case $lsd in /*) ;; *) t_fail "cannot read localstatedir from $cs: '$lsd'" ;; esac
  SHARED_ROOT=$lsd/lib/pop3sync
  [ -e "$SHARED_ROOT/nobody" ] && t_skip "$SHARED_ROOT/nobody exists and is not this test's"
  # Create what is missing, and remove exactly that at the end.
  top_new=
  d=$SHARED_ROOT
  while [ ! -e "$d" ]; do
    top_new=$d
    d=$(dirname "$d")
  done
  mkdir -p "$SHARED_ROOT" && chmod 0711 "$SHARED_ROOT" || t_fail "cannot create $SHARED_ROOT"
  if [ -n "$top_new" ]; then
    t_on_exit "rm -rf '$top_new'"
  else
    t_on_exit "rm -rf '$SHARED_ROOT/nobody'"
  fi
  STATE_DIR=$SHARED_ROOT
  USTATE=$SHARED_ROOT/nobody
  mkdir -p "$T/nbhome"
  chown nobody: "$T/nbhome"
  # `pop3` as nobody, with a home of its own and no XDG_STATE_HOME.
  as_user() {
    setpriv --reuid=65534 --regid=65534 --clear-groups env -u XDG_STATE_HOME HOME="$T/nbhome" "$@"
  }
  PERSONAL=$T/nbhome/.local/state/pop3sync
  LUSER=nobody
else
  ROOT=0
  export XDG_STATE_HOME=$T/xdg
  STATE_DIR=$XDG_STATE_HOME/pop3sync
  USTATE=$STATE_DIR
  as_user() {
    "$@"
  }
  PERSONAL=$STATE_DIR
  LUSER=$(id -un)
fi
mkdir -p "$T/mail"
[ "$ROOT" = 1 ] && chown nobody: "$T/mail"

# dl NAME ARGS...: pop3 dl as the local user; stdout in $T/NAME.out, stderr in $T/NAME.err,
# the exit status in $RC.
dl() {
  local name=$1
  shift
  RC=0
  as_user timeout 60 "$POP3" dl "${PW[@]}" "$@" </dev/null >"$T/$name.out" 2>"$T/$name.err" || RC=$?
}
expect_rc() { # expect_rc NAME RC WHAT
  [ "$RC" = "$2" ] || t_fail "$1: $3: pop3 exited $RC, expected $2; stderr: $(cat "$T/$1.err")"
}
# summary_is NAME SPEC N: stdout is exactly the summary line with N messages.
summary_is() {
  local lines
  lines=$(wc -l <"$T/$1.out")
  [ "$lines" = 1 ] && grep -Eq "^$2: $3 messages, ([0-9.]+ [KMG]iB \()?[0-9]+ bytes\)? in [0-9.]+ s\$" "$T/$1.out" ||
    t_fail "$1: stdout is not the one summary line with $3 messages: '$(cat "$T/$1.out")'"
}
# stdout_empty NAME
stdout_empty() {
  [ ! -s "$T/$1.out" ] || t_fail "$1: a failed run printed on stdout: $(cat "$T/$1.out")"
}
serve() { # serve NAME N SEED [fakepop3d options]: a server with N messages in $T/NAME.srv
  local name=$1 n=$2 seed=$3
  shift 3
  mail_gen "$T/$name.orig" "$n" --varied --seed "$seed"
  cp -r "$T/$name.orig" "$T/$name.srv"
  fake_start "$name" --maildir "$T/$name.srv" "$@"
}
more() { # more NAME N SEED: N new messages on NAME's server (and in its originals)
  mail_gen "$T/$1.more" "$2" --varied --seed "$3" --start 100
  for f in "$T/$1.more"/*; do sed -i "1i X-More: $1" "$f"; done
  cp "$T/$1.more"/* "$T/$1.srv/"
  for f in "$T/$1.more"/*; do cp "$f" "$T/$1.orig/more-$(basename "$f")"; done
}
delivered() { # delivered NAME N WHAT: NAME's Maildir holds each original once, N in all
  t_assert_eq "$(t_maildir_count "$T/mail/$1")" "$2" "$1: messages in the Maildir ($3)"
  same_messages "$T/$1.orig" "$T/mail/$1" || d_fail "$1: not every message exactly once ($3)"
}

# ---- before the daemon: `pop3 dl --keep` and journals under the daemon's old names ----------
serve shared 10 91
P_SHARED=$FAKE_PORT
S_SHARED=tcp:test@127.0.0.1:$P_SHARED
J_SHARED=$USTATE/test@127.0.0.1:$P_SHARED.state
dl shared1 --keep "$S_SHARED" "$T/mail/shared"
expect_rc shared1 0 "first --keep run"
summary_is shared1 "$S_SHARED" 10
[ -s "$T/shared1.err" ] && t_fail "shared1: stderr of a good run: $(cat "$T/shared1.err")"
[ -f "$PERSONAL/test@127.0.0.1:$P_SHARED.state" ] ||
  t_fail "shared1: no journal $PERSONAL/test@127.0.0.1:$P_SHARED.state"
if [ "$ROOT" = 1 ]; then
  # A root pop3syncd makes STATE_DIR/USER for the user: from then on `pop3 dl` uses it, and
  # takes its earlier journal along.
  mkdir -m 0700 "$USTATE" && chown nobody: "$USTATE" || t_fail "cannot create $USTATE"
  dl shared2 --keep "$S_SHARED" "$T/mail/shared"
  expect_rc shared2 0 "run after the shared directory appeared"
  grep -qF "moved the journal $PERSONAL/test@127.0.0.1:$P_SHARED.state to $J_SHARED" \
    "$T/shared2.err" || t_fail "shared2: no 'moved the journal' line: $(cat "$T/shared2.err")"
  [ -e "$PERSONAL/test@127.0.0.1:$P_SHARED.state" ] && t_fail "shared2: the old journal is left"
else
  dl shared2 --keep "$S_SHARED" "$T/mail/shared"
  expect_rc shared2 0 "second --keep run"
fi
summary_is shared2 "$S_SHARED" 0
[ -f "$J_SHARED" ] || t_fail "no journal $J_SHARED"
more shared 2 92

# The daemon's former journal name, ACCOUNT.state with its lock file.
serve mig 6 93
P_MIG=$FAKE_PORT
dl mig1 --keep --state "$USTATE/mig.state" "tcp:test@127.0.0.1:$P_MIG" "$T/mail/mig"
expect_rc mig1 0 "the old daemon journal"
[ -f "$USTATE/mig.state.lock" ] || t_fail "mig1: no $USTATE/mig.state.lock"
more mig 1 94

# Both names exist: the new one (here from `pop3 dl` into another Maildir) wins, the old one
# stays and is named in a warning.
serve both 4 95
P_BOTH=$FAKE_PORT
dl both1 --keep --state "$USTATE/both.state" "tcp:test@127.0.0.1:$P_BOTH" "$T/mail/both"
expect_rc both1 0 "the old journal of 'both'"
dl both2 --keep "tcp:test@127.0.0.1:$P_BOTH" "$T/mail/both2"
expect_rc both2 0 "the new journal of 'both'"

# A mailbox whose first daemon session the server holds after the greeting (the daemon's run
# then holds the journal's lock) until $T/release exists.
serve hold 3 96 --hold-after-bytes 5 --hold-until "$T/release"
P_HOLD=$FAKE_PORT

# ---- the daemon ------------------------------------------------------------------------------
CONF=$T/etc/pop3sync.conf
mkdir -p "$T/etc"
daemon_conf "$CONF" <<EOF
control_socket = "$DAEMON_SOCK";
state_dir = "$STATE_DIR";
timeout = 20;
interval = 3600;
accounts = (
  { name = "shared"; server = "$S_SHARED"; maildir = "$T/mail/shared"; keep = true;
    password = "secret"; },
  { name = "mig"; server = "tcp:test@127.0.0.1:$P_MIG"; maildir = "$T/mail/mig"; keep = true;
    password = "secret"; },
  { name = "both"; server = "tcp:test@127.0.0.1:$P_BOTH"; maildir = "$T/mail/both"; keep = true;
    password = "secret"; },
  { name = "hold"; server = "tcp:test@127.0.0.1:$P_HOLD"; maildir = "$T/mail/hold"; keep = true;
    password = "secret"; }
);
EOF
daemon_start "$CONF"
ctl fetch --no-wait hold >/dev/null 2>&1
wait_until 40 test -e "$T/release.held" ||
  { cat "$T/hold.log" >&2; d_fail "hold: the daemon's session was not held within 40 s"; }
dl locked --keep "tcp:test@127.0.0.1:$P_HOLD" "$T/mail/hold"
expect_rc locked 75 "pop3 dl while the daemon fetches the same mailbox"
stdout_empty locked
grep -Eq "locked by pid [0-9]+ \(pop3syncd\)" "$T/locked.err" ||
  t_fail "locked: stderr does not say that pop3syncd holds the lock: $(cat "$T/locked.err")"
grep -qx "pop3: tcp:test@127.0.0.1:$P_HOLD: failed after 0 of 0 messages (0 bytes saved)" \
  "$T/locked.err" || t_fail "locked: no 'failed after' line: $(cat "$T/locked.err")"
touch "$T/release"

for a in shared mig both hold; do
  ctl fetch "$a" >"$T/fetch-$a.out" 2>&1 || { cat "$T/fetch-$a.out" >&2; d_fail "fetch $a failed"; }
done
delivered shared 12 "pop3 dl --keep twice, then the daemon"
delivered mig 7 "after the migration"
delivered both 4 "both journals present"
delivered hold 3 "after the lock was released"

# The old names are gone (moved), or kept with a warning when the new one existed.
[ -e "$USTATE/mig.state" ] && d_fail "mig: $USTATE/mig.state was not moved"
[ -e "$USTATE/mig.state.lock" ] && d_fail "mig: the old lock file was left"
[ -f "$USTATE/test@127.0.0.1:$P_MIG.state" ] || d_fail "mig: no journal under the new name"
grep -qF "mig: moved the journal $USTATE/mig.state to $USTATE/test@127.0.0.1:$P_MIG.state" \
  "$DAEMON_LOG" || d_fail "mig: the log does not say that the journal was moved"
[ -f "$USTATE/both.state" ] || d_fail "both: the old journal was removed"
grep -qF "both: warning: $USTATE/both.state was left as is" "$DAEMON_LOG" ||
  d_fail "both: no warning about the old journal"
# Every journal is named by its mailbox: no ACCOUNT.state was created.
for a in shared mig hold; do
  [ -e "$USTATE/$a.state" ] && d_fail "$a: a journal named by the account was created"
done

daemon_stop || d_fail "pop3syncd did not stop cleanly"

# After the daemon, `pop3 dl --keep` of the same mailbox finds nothing new.
dl shared3 --keep "$S_SHARED" "$T/mail/shared"
expect_rc shared3 0 "pop3 dl --keep after the daemon"
summary_is shared3 "$S_SHARED" 0
delivered shared 12 "after the last pop3 dl"

# ---- two accounts of one local user on one mailbox -------------------------------------------
BAD=$T/etc/dup.conf
daemon_conf "$BAD" <<EOF
control_socket = "$DAEMON_SOCK";
state_dir = "$STATE_DIR";
accounts = (
  { name = "one"; server = "tcp:test@127.0.0.1:$P_MIG"; maildir = "$T/mail/one"; password = "x"; },
  { name = "two"; server = "tcp:test@127.0.0.1!localhost:$P_MIG"; maildir = "$T/mail/two"; password = "x"; },
  { name = "three"; server = "tcp:other@127.0.0.1:$P_MIG"; maildir = "$T/mail/three"; password = "x"; }
);
EOF
out=$("$DAEMON" --check-config -c "$BAD" 2>&1)
rc=$?
t_assert_eq "$rc" 78 "two accounts on one mailbox: --check-config exit status ($out)"
echo "$out" | grep -q "^$BAD:5: accounts \`two' and \`one' (line 4) fetch the same mailbox test@127.0.0.1:$P_MIG" ||
  t_fail "two accounts on one mailbox: no '$BAD:5: ... two ... one (line 4)' line in: $out"
[ "$(echo "$out" | grep -c "same mailbox")" = 1 ] || t_fail "more than one same-mailbox error: $out"

# ---- failed runs: stdout empty, the figures on stderr ---------------------------------------
port=$(t_free_port)
dl closed "tcp:test@127.0.0.1:$port" "$T/mail/closed"
expect_rc closed 69 "a closed port"
stdout_empty closed
[ "$(grep -c "^pop3: tcp:test@127.0.0.1:$port: " "$T/closed.err")" -ge 2 ] ||
  t_fail "closed: no sentence before the last line: $(cat "$T/closed.err")"
t_assert_eq "$(tail -n 1 "$T/closed.err")" \
  "pop3: tcp:test@127.0.0.1:$port: failed after 0 of 0 messages (0 bytes saved)" "closed: last line"

serve drop 5 97 --drop-after-bytes 7000
dl drop "tcp:test@127.0.0.1:$FAKE_PORT" "$T/mail/drop"
[ "$RC" != 0 ] && [ "$RC" != 64 ] || t_fail "drop: a dropped connection exited $RC"
stdout_empty drop
n=$(t_maildir_count "$T/mail/drop")
b=$(maildir_bytes "$T/mail/drop")
t_assert_eq "$(tail -n 1 "$T/drop.err")" \
  "pop3: tcp:test@127.0.0.1:$FAKE_PORT: failed after $n of 5 messages ($b bytes saved)" "drop: last line"
t_log "drop: exit $RC, $n of 5 messages saved"
exit 0

#!/bin/bash
# tests/interop/run.sh -- `make interop`: `pop3 dl' against five real POP3 servers from
# Debian 12's packages (issue 9): popa3d, solid-pop3d, GNU Mailutils pop3d, Courier and Cyrus.
#
# Needs root (it installs packages, creates a user with a password, and runs servers that
# switch to that user): without root it skips, except under CI=true, where it fails.
# It installs mailutils-pop3d, courier-base, courier-authdaemon, cyrus-common, sasl2-bin,
# socat and liblockfile1 with scripts/deps.sh; courier-pop, popa3d, solid-pop3d and
# cyrus-pop3d conflict with dovecot-pop3d, so they are only downloaded and unpacked into the
# private directory ($T/root). Everything it starts it stops; the user, its spool files and
# everything else it created are removed at exit.
#
# For each server, cases (each PASS or FAIL, timed):
#   exact        varied test mail, put in the server's own way; pop3 dl delivers byte for byte
#                what a lock-step RFC 1939 client (tests/lib/popref.py) retrieves
#   empty        the server holds no message afterwards
#   again        a second run delivers nothing and exits 0
#   keep-all, keep-none, keep-new   --keep three times: +all, +0, then (after two more
#                messages arrive) exactly the two new ones
#   keep-delete  a run without --keep delivers nothing new and empties the server
#   redeliver    a message fetched and deleted arrives again, byte-identical: it is delivered
#                again (popa3d and solid-pop3d give it the same UID)
#   twins        two messages with the same header block in one listing (popa3d and
#                solid-pop3d give them one UID): both delivered, the server empty
#   twins-keep   one twin kept with --keep, the other arrives, a run without --keep: the new
#                twin is delivered (never deleted unseen), the server empty
#   utf8         (Courier) a message with raw UTF-8 headers is delivered as stored (pop3
#                sends UTF8), and a second run delivers nothing
#   no-utf8      (Courier) with --no-utf8 Courier serves a rewritten message whose RETR
#                octet count differs from LIST: delivered, exit 0, no duplicate on a re-run
#
# Output: one line per case on stdout, and an automake-style summary in $INTEROP_LOG
# (default $top_builddir/interop-suite.log) that .ci/run counts.
# Environment: INTEROP_SERVERS (default "popa3d solid mailutils courier cyrus"),
# INTEROP_LOG, KEEP_TMP=1 (keep $T), T_TIMEOUT (default 600 s), POP3, PYTHON.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-600}
IOP_LOG=${INTEROP_LOG:-$top_builddir/interop-suite.log}
IOP_SERVERS=${INTEROP_SERVERS:-popa3d solid mailutils courier cyrus}
MAILTOOL=$top_srcdir/tests/interop/mailtool.py
POPREF=$top_srcdir/tests/lib/popref.py
IOP_T0=$(date +%s)
IOP_LINES=()
IOP_PASS=0
IOP_FAIL=0
IOP_SKIP=0

iop_now() {
  date +%s%N
}

iop_write_log() {
  local total=$((IOP_PASS + IOP_FAIL + IOP_SKIP)) line
  {
    echo "=============================================="
    echo "   pop3sync: interop-suite.log (make interop)"
    echo "=============================================="
    echo
    echo "# TOTAL: $total"
    echo "# PASS:  $IOP_PASS"
    echo "# SKIP:  $IOP_SKIP"
    echo "# XFAIL: 0"
    echo "# FAIL:  $IOP_FAIL"
    echo "# XPASS: 0"
    echo "# ERROR: 0"
    echo
    for line in "${IOP_LINES[@]}"; do
      echo "$line"
    done
    echo
    echo "# $(($(date +%s) - IOP_T0)) s in all"
  } >"$IOP_LOG.tmp" && mv "$IOP_LOG.tmp" "$IOP_LOG"
}

# iop_skip REASON: the whole harness cannot run; a skip, or a failure when CI=true.
iop_skip() {
  if [ "${CI:-}" = true ]; then
    IOP_FAIL=$((IOP_FAIL + 1))
    IOP_LINES+=("FAIL: interop: would skip, but CI=true: $*")
    iop_write_log
    echo "FAIL: interop: would skip, but CI=true: $*" >&2
    exit 1
  fi
  IOP_SKIP=$((IOP_SKIP + 1))
  IOP_LINES+=("SKIP: interop: $*")
  iop_write_log
  echo "SKIP: interop: $*"
  exit 0
}

[ "$(id -u)" = 0 ] ||
  iop_skip "needs root (installs Debian packages, creates a user, runs servers that switch to it)"
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
  iop_skip "needs Debian's apt-get and dpkg-deb"
fi
[ -x "$POP3" ] || iop_skip "$POP3 not built"
[ -n "$PYTHON" ] || iop_skip "no python3"

t_init interop
chmod 0711 "$T"
IOP_DONE=
# The summary is written however the run ends (the first hook registered runs last).
iop_finish() {
  if [ -z "$IOP_DONE" ]; then
    IOP_FAIL=$((IOP_FAIL + 1))
    IOP_LINES+=("FAIL: interop: the harness stopped before the end (see its output)")
  fi
  iop_write_log
}
t_on_exit iop_finish
. "$top_srcdir/tests/lib/fake.sh" # maildir_check
mkdir -p "$T/cases"

# ---- packages -------------------------------------------------------------------------------
t0=$(date +%s)
bash "$top_srcdir/scripts/deps.sh" interop >"$T/deps.log" 2>&1 ||
  { cat "$T/deps.log" >&2; t_fail "scripts/deps.sh interop failed"; }

# The conflicting servers, unpacked, never installed; versions matched to what is installed.
X=$T/root
iop_extract() {
  local cv yv f pkgs
  cv=$(dpkg-query -W -f='${Version}' courier-base) || return 1
  yv=$(dpkg-query -W -f='${Version}' cyrus-common) || return 1
  pkgs=("courier-pop=$cv" popa3d solid-pop3d "cyrus-pop3d=$yv")
  mkdir -p "$T/debs" "$X" || return 1
  # apt downloads as _apt where it can: give it the directory.
  chown _apt "$T/debs" 2>/dev/null
  if ! (cd "$T/debs" && apt-get download -q "${pkgs[@]}") >>"$T/deps.log" 2>&1; then
    apt-get update -qq >>"$T/deps.log" 2>&1
    (cd "$T/debs" && apt-get download -q "${pkgs[@]}") >>"$T/deps.log" 2>&1 || return 1
  fi
  for f in "$T"/debs/*.deb; do
    dpkg-deb -x "$f" "$X" || return 1
  done
}
iop_extract || { tail -20 "$T/deps.log" >&2; t_fail "cannot download and unpack $X"; }
for f in "$X/usr/sbin/popa3d" "$X/usr/sbin/solid-pop3d" "$X/usr/lib/cyrus/bin/pop3d" \
  "$X/usr/lib/courier/courier/courierpop3login" "$X/usr/lib/courier/courier/courierpop3d" \
  /usr/sbin/pop3d /usr/lib/cyrus/bin/master /usr/lib/courier/courier-authlib/authdaemond; do
  [ -x "$f" ] || t_fail "$f missing after the installs"
done
for f in socat saslauthd useradd userdel chpasswd; do
  command -v "$f" >/dev/null || t_fail "$f not found after the installs"
done
t_log "packages ready in $(($(date +%s) - t0)) s"

# ---- the test user: a PAM login with a password, home in $T ---------------------------------
IU=p3i$(printf '%04x%04x' $((RANDOM)) $$ | cut -c1-8)
IU_HOME=$T/home
IU_PASS=P3i-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
PWFILE=$T/password
getent passwd "$IU" >/dev/null && t_fail "user $IU exists already"
useradd -M -U -d "$IU_HOME" -s /usr/sbin/nologin "$IU" || t_fail "useradd $IU failed"
t_on_exit "userdel $IU >/dev/null 2>&1 || echo \"# userdel $IU failed\" >&2"
echo "$IU:$IU_PASS" | chpasswd || t_fail "chpasswd failed"
mkdir -m 0700 "$IU_HOME" || t_fail "cannot create $IU_HOME"
chown "$IU:" "$IU_HOME" || t_fail "cannot chown $IU_HOME"
(umask 077 && printf '%s\n' "$IU_PASS" >"$PWFILE")

. "$top_srcdir/tests/interop/servers.sh"
# Registered after the user: runs before its userdel (hooks run last first).
t_on_exit iop_cleanup

# ---- test mail --------------------------------------------------------------------------------
"$PYTHON" "$top_srcdir/tests/lib/genmail.py" "$T/varied" 24 --varied >/dev/null ||
  t_fail "genmail.py failed"
"$PYTHON" "$top_srcdir/tests/lib/genmail.py" "$T/keep" 5 --start 101 --size 3000 >/dev/null ||
  t_fail "genmail.py failed"
"$PYTHON" "$top_srcdir/tests/lib/genmail.py" "$T/again" 1 --start 201 >/dev/null ||
  t_fail "genmail.py failed"
"$PYTHON" "$MAILTOOL" twins "$T/twins" twins 'first twin body AAAA' 'other twin body BBBB' ||
  t_fail "mailtool twins failed"
"$PYTHON" "$MAILTOOL" twins "$T/twins" twinskeep 'first twin body CCCC' 'other twin body DDDD' ||
  t_fail "mailtool twins failed"
mkdir -p "$T/utf8"
printf 'From: Sender <s@example.org>\nTo: %s@localhost\nSubject: plain before\nMessage-ID: <ascii-1@interop.example>\n\nan ASCII message\n' \
  "$IU" >"$T/utf8/1.eml"
printf 'From: J\xc3\xbcrgen <j@example.org>\nTo: %s@localhost\nSubject: gr\xc3\xbc\xc3\x9fe \xe2\x9c\x93\nMessage-ID: <utf8-1@interop.example>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\n\nK\xc3\xb6rper, raw UTF-8 in the header (RFC 6532)\n' \
  "$IU" >"$T/utf8/2.eml"

# ---- helpers for the cases ----------------------------------------------------------------------
# iop_dl NAME MAILDIR [OPTIONS]: pop3 -v dl $SPEC MAILDIR, journal in $G/state; stdout and
# stderr in $G/NAME.out/.err; the status in DL_RC. Prints a one-line account.
iop_dl() {
  local name=$1 md=$2
  shift 2
  DL_RC=0
  XDG_STATE_HOME=$G/state timeout -k 5 120 "$POP3" -v dl "$SPEC" "$md" \
    --password-command "cat $PWFILE" "$@" </dev/null >"$G/$name.out" 2>"$G/$name.err" ||
    DL_RC=$?
  echo "# pop3 dl $* ($name): exit $DL_RC, $(t_maildir_count "$md") in the Maildir"
  sed 's/^/#   out: /' "$G/$name.out"
  grep -v '^pop3: [<>] ' "$G/$name.err" | tail -n 8 | sed 's/^/#   err: /'
}

# want_rc RC WHAT: the last iop_dl exited RC; else show its stderr and fail.
want_rc() {
  if [ "$DL_RC" != "$1" ]; then
    echo "--- the end of the pop3 -v trace ($G):"
    tail -n 25 "$G/$LAST.err"
    t_fail "$2: pop3 exited $DL_RC, expected $1"
  fi
}

dl() { # dl NAME MAILDIR [OPTIONS]: iop_dl, remembering NAME for want_rc
  LAST=$1
  iop_dl "$@"
}

on_server() {
  "$PYTHON" "$MAILTOOL" stat 127.0.0.1 "$PORT" "$IU" "$IU_PASS" || t_fail "STAT failed"
}

uids() { # uids: the server's UIDs, in listing order, on one line
  "$PYTHON" "$MAILTOOL" uidl 127.0.0.1 "$PORT" "$IU" "$IU_PASS" | tr '\n' ' ' ||
    t_fail "UIDL failed"
}

# hashes_headers: popa3d and solid-pop3d derive the UID from header lines (the cases that
# depend on it check that they really do, or they would test nothing).
hashes_headers() {
  [ "$S" = popa3d ] || [ "$S" = solid ]
}

one_uid() { # one_uid "UID UID...": at least two UIDs, all the same
  local n d
  n=$(echo "$1" | tr ' ' '\n' | grep -c .)
  d=$(echo "$1" | tr ' ' '\n' | grep . | sort -u | wc -l)
  [ "$n" -ge 2 ] && [ "$d" = 1 ]
}

drain() {
  "$PYTHON" "$MAILTOOL" drain 127.0.0.1 "$PORT" "$IU" "$IU_PASS" >/dev/null ||
    t_fail "could not empty the mailbox"
}

want_count() { # want_count MAILDIR N WHAT
  local n
  n=$(t_maildir_count "$1")
  [ "$n" = "$2" ] || t_fail "$3: $n messages in the Maildir, expected $2"
}

want_server() { # want_server N WHAT
  local n
  n=$(on_server) || exit 1
  [ "$n" = "$1" ] || t_fail "$2: $n messages left on the server, expected $1"
}

popref() { # popref OUTDIR
  "$PYTHON" "$POPREF" 127.0.0.1 "$PORT" "$IU" "$IU_PASS" "$1" --timeout 30 >"$1.list" \
    2>"$1.err" || t_fail "popref.py failed: $(cat "$1.err")"
}

newgroup() { # newgroup NAME: a fresh directory $G for a group of cases (shared by them)
  G=$D/$1
  mkdir -p "$G"
}

group() { # group NAME: the directory of an earlier newgroup
  G=$D/$1
}

fill() {
  "srv_${S}_fill" "$@" || t_fail "cannot put mail into $S"
}

# ---- the cases (each runs in a subshell; t_fail ends only that case) ---------------------------
case_exact() {
  local n pick
  newgroup exact
  drain
  pick=SRV_PICK_$S
  # shellcheck disable=SC2086 # the flags are words
  n=$("$PYTHON" "$MAILTOOL" pick "$T/varied" "$G/src" ${!pick}) || t_fail "pick failed"
  fill "$G"/src/*
  want_server "$n" "after putting $n messages in"
  # A first lock-step session settles what a server writes back at QUIT (Mailutils adds
  # X-UIDL, X-UID, Status), then the reference session.
  popref "$G/warm"
  popref "$G/ref"
  [ "$(find "$G/ref" -type f | wc -l)" = "$n" ] ||
    t_fail "popref.py wrote $(find "$G/ref" -type f | wc -l) files for $n messages"
  dl run1 "$G/md"
  want_rc 0 "first run"
  maildir_check "$G/md"
  "$PYTHON" "$MAILTOOL" compare "$G/ref" "$G/md" ||
    t_fail "the Maildir differs from what a lock-step client retrieves"
}

case_empty() {
  group exact
  want_server 0 "after a run without --keep"
}

case_again() {
  local n
  group exact
  n=$(t_maildir_count "$G/md")
  dl run2 "$G/md"
  want_rc 0 "second run"
  want_count "$G/md" "$n" "second run"
}

case_keep_all() {
  newgroup keep
  drain
  fill "$T"/keep/0101.eml "$T"/keep/0102.eml "$T"/keep/0103.eml
  dl keep1 "$G/md" --keep
  want_rc 0 "--keep, first run"
  want_count "$G/md" 3 "--keep, first run"
  want_server 3 "--keep, first run"
}

case_keep_none() {
  group keep
  dl keep2 "$G/md" --keep
  want_rc 0 "--keep, second run"
  want_count "$G/md" 3 "--keep, second run, nothing new on the server"
}

case_keep_new() {
  local before after f id new=0
  group keep
  fill "$T"/keep/0104.eml "$T"/keep/0105.eml
  before=$(find "$G/md/new" "$G/md/cur" -type f | sort)
  dl keep3 "$G/md" --keep
  want_rc 0 "--keep, third run"
  after=$(find "$G/md/new" "$G/md/cur" -type f | sort)
  for f in $(comm -13 <(echo "$before") <(echo "$after")); do
    new=$((new + 1))
    id=$(grep -m1 -i '^Message-ID:' "$f")
    grep -qF "$id" "$T"/keep/0104.eml "$T"/keep/0105.eml ||
      t_fail "--keep, third run: delivered an old message again ($id)"
  done
  [ "$new" = 2 ] || t_fail "--keep, third run: $new new files, expected the 2 new messages"
  echo "$after" | tr '\n' '\0' | xargs -0 grep -l -F -f <(grep -h -i '^Message-ID:' \
    "$T"/keep/0104.eml "$T"/keep/0105.eml) | wc -l | grep -qx 2 ||
    t_fail "--keep, third run: the two new messages are not both in the Maildir"
}

case_keep_delete() {
  local n
  group keep
  n=$(t_maildir_count "$G/md")
  dl keep4 "$G/md"
  want_rc 0 "run without --keep after the kept runs"
  want_count "$G/md" "$n" "run without --keep after the kept runs (nothing new)"
  want_server 0 "run without --keep after the kept runs"
}

case_redeliver() {
  newgroup redeliver
  drain
  local u1 u2
  fill "$T"/again/0201.eml
  u1=$(uids)
  dl first "$G/md"
  want_rc 0 "first delivery"
  want_count "$G/md" 1 "first delivery"
  want_server 0 "first delivery"
  fill "$T"/again/0201.eml
  u2=$(uids)
  echo "# UID the first time: $u1; the second time: $u2"
  if hashes_headers && [ "$u1" != "$u2" ]; then
    t_fail "$S gave the copy another UID ($u1, then $u2): the case tests nothing"
  fi
  dl second "$G/md"
  want_rc 0 "the identical message again"
  want_count "$G/md" 2 "the identical message arrived again"
  want_server 0 "the identical message again"
}

case_twins() {
  local a b
  newgroup twins
  drain
  local u
  fill "$T"/twins/twins-1.eml "$T"/twins/twins-2.eml
  u=$(uids)
  echo "# UIDs: $u"
  if hashes_headers && ! one_uid "$u"; then
    t_fail "$S gave the twins two UIDs ($u): the case tests nothing"
  fi
  dl run "$G/md"
  want_rc 0 "two messages with one header block"
  want_count "$G/md" 2 "two messages with one header block"
  a=$(grep -rl 'first twin body AAAA' "$G/md" | wc -l)
  b=$(grep -rl 'other twin body BBBB' "$G/md" | wc -l)
  [ "$a$b" = 11 ] || t_fail "twins: first delivered $a times, other $b times"
  want_server 0 "two messages with one header block"
}

case_twins_keep() {
  local u
  newgroup twins-keep
  drain
  fill "$T"/twins/twinskeep-1.eml
  dl keep "$G/md" --keep
  want_rc 0 "first twin, --keep"
  want_count "$G/md" 1 "first twin, --keep"
  fill "$T"/twins/twinskeep-2.eml
  u=$(uids)
  echo "# UIDs: $u"
  if hashes_headers && ! one_uid "$u"; then
    t_fail "$S gave the twins two UIDs ($u): the case tests nothing"
  fi
  dl run "$G/md"
  want_rc 0 "second twin arrived, run without --keep"
  grep -rq 'other twin body DDDD' "$G/md" ||
    t_fail "the second twin was not delivered (deleted unseen?)"
  want_server 0 "second twin arrived, run without --keep"
}

case_utf8() {
  newgroup utf8
  drain
  fill "$T"/utf8/1.eml "$T"/utf8/2.eml
  dl run1 "$G/md"
  want_rc 0 "raw UTF-8 header"
  "$PYTHON" "$MAILTOOL" compare "$T/utf8" "$G/md" ||
    t_fail "not delivered as stored (did pop3 send UTF8?)"
  want_server 0 "raw UTF-8 header"
  dl run2 "$G/md"
  want_rc 0 "raw UTF-8 header, second run"
  want_count "$G/md" 2 "raw UTF-8 header, second run"
}

case_no_utf8() {
  newgroup no-utf8
  drain
  fill "$T"/utf8/1.eml "$T"/utf8/2.eml
  dl run1 "$G/md" --keep --no-utf8
  want_rc 0 "--no-utf8: RETR size differs from LIST"
  want_count "$G/md" 2 "--no-utf8"
  grep -rqi 'Cannot display Unicode content' "$G/md" ||
    t_fail "--no-utf8: Courier did not rewrite the message (the case tests nothing)"
  dl run2 "$G/md" --keep --no-utf8
  want_rc 0 "--no-utf8, second run"
  want_count "$G/md" 2 "--no-utf8, second run (--keep)"
  dl run3 "$G/md" --no-utf8
  want_rc 0 "--no-utf8, third run without --keep"
  want_count "$G/md" 2 "--no-utf8, third run without --keep"
  want_server 0 "--no-utf8, third run without --keep"
}

# iop_case NAME FUNCTION: run one case in a subshell, record PASS/FAIL and its time.
iop_case() {
  local name="$S: $1" log=$T/cases/$S-$1.log t0 ms rc=0
  t0=$(iop_now)
  ("$2") >"$log" 2>&1 || rc=$?
  ms=$((($(iop_now) - t0) / 1000000))
  if [ "$rc" = 0 ]; then
    IOP_PASS=$((IOP_PASS + 1))
    IOP_LINES+=("PASS: $name ($ms ms)")
    echo "PASS: $name ($ms ms)"
  else
    IOP_FAIL=$((IOP_FAIL + 1))
    IOP_LINES+=("FAIL: $name ($ms ms)")
    IOP_LINES+=("$(grep -E '^FAIL: ' "$log" | tail -1 | sed 's/^FAIL: /    /')")
    echo "FAIL: $name ($ms ms)"
    sed 's/^/    /' "$log" | tail -n 30
  fi
}

# iop_server S: start S, run its cases, stop it. The start runs in a subshell: when a server
# cannot be started, the others still run.
iop_server() {
  local t0
  S=$1
  D=$T/$S
  mkdir -p "$D"
  t0=$(date +%s)
  if ! (srv_"$S"_start && echo "$SRV_PORT" >"$T/$S.port") >"$T/$S.start" 2>&1; then
    IOP_FAIL=$((IOP_FAIL + 1))
    IOP_LINES+=("FAIL: $S: start ($(tail -n 1 "$T/$S.start"))")
    echo "FAIL: $S: start"
    sed 's/^/    /' "$T/$S.start"
    iop_stop "$S"
    return
  fi
  PORT=$(cat "$T/$S.port")
  SPEC=tcp:$IU@127.0.0.1:$PORT
  t_log "$S listens on 127.0.0.1:$PORT"
  iop_case exact case_exact
  iop_case empty case_empty
  iop_case again case_again
  iop_case keep-all case_keep_all
  iop_case keep-none case_keep_none
  iop_case keep-new case_keep_new
  iop_case keep-delete case_keep_delete
  iop_case redeliver case_redeliver
  iop_case twins case_twins
  iop_case twins-keep case_twins_keep
  if [ "$S" = courier ]; then
    iop_case utf8 case_utf8
    iop_case no-utf8 case_no_utf8
  fi
  iop_stop "$S"
  t_log "$S: $(($(date +%s) - t0)) s"
}

for s in $IOP_SERVERS; do
  case $s in
    popa3d | solid | mailutils | courier | cyrus) iop_server "$s" ;;
    *) t_fail "unknown server $s (INTEROP_SERVERS)" ;;
  esac
done

IOP_DONE=1
echo "interop: $IOP_PASS passed, $IOP_FAIL failed in $(($(date +%s) - IOP_T0)) s; summary in $IOP_LOG"
[ "$IOP_FAIL" = 0 ]

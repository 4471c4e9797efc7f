#!/bin/bash
# dl-faults.sh -- `pop3 dl` when things go wrong, and nothing may be lost: connection drops at
# several offsets (then a clean second run), -ERR on one RETR, desyncs with equal-size messages
# (a dropped and a duplicated reply), a stall and a missing greeting with --timeout, a close
# after PASS, garbage after a reply, a wrong password, an uncreatable Maildir, a full disk.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
t_init dl-faults
. "$top_srcdir/tests/lib/fake.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"

PW=(--password-command 'echo secret')
P3_LIMIT=40

# serve NAME SRC ARGS...: a fresh copy of SRC in $T/NAME.srv, served by a new fakepop3d.
serve() {
  local name=$1 src=$2
  shift 2
  rm -rf "$T/$name.srv"
  cp -a "$src" "$T/$name.srv"
  fake_start "$name" --maildir "$T/$name.srv" "$@"
}

dl() { # dl NAME [OPTIONS...]: pop3 dl into $T/md-NAME
  local name=$1
  shift
  p3 dl "${PW[@]}" "$@" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/md-$name"
}

# cmdno LINE: the 1-based number of command LINE in the reference session $CMDREF (a record
# of a clean run with the same messages: the client sends the same commands in the same order).
CMDREF=$T/ref20.rec
cmdno() {
  "$PYTHON" -c '
import json, sys
r = json.loads(open(sys.argv[1]).readline())
print(r["commands"].index(sys.argv[2]) + 1)' "$CMDREF" "$1" || t_fail "no '$1' in reference"
}

# A fault session must not have committed anything.
no_commit() {
  fake_wait_sessions 1
  t_assert_eq "$(fake_rec '[r["committed"], r["deleted"]]' 1)" "[false, []]" \
    "$1: [committed, deleted] in the faulty session"
}

mkmsgs "$T/orig" 20

# Reference: a clean run gives the command numbering and the byte count of the session.
serve ref20 "$T/orig"
dl ref20
p3_expect 0 "reference run"
fake_wait_sessions 1
fake_stop
total=$("$PYTHON" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["bytes_out"])' \
  "$T/ref20.rec")
t_log "reference session: $total bytes out; RETR 10 is command $(cmdno 'RETR 10')"

# --- connection dropped at several offsets, then a clean second run ---------------------------
# 60: in the CAPA reply; 180: around the PASS reply; 5000 and 25000: in
# RETR replies; total-100: among the DELE replies, before QUIT is processed.
for k in 60 180 5000 25000 $((total - 100)); do
  name=drop$k
  serve "$name" "$T/orig" --drop-after-bytes "$k"
  dl "$name"
  p3_expect 75 "$name: connection dropped after $k bytes"
  grep -q "^pop3: " "$T/err" || t_fail "$name: no error message on stderr"
  no_commit "$name"
  t_assert_eq "$(ls "$T/$name.srv" | wc -l)" 20 "$name: files on the server after the drop"
  check_no_loss "$name" "$T/orig" "$T/$name.srv" "$T/md-$name"
  [ -z "$(ls -A "$T/md-$name/tmp" 2>/dev/null)" ] ||
    t_fail "$name: partial files left in tmp/: $(ls -A "$T/md-$name/tmp" | head -3)"
  # The second session has no fault: it delivers the rest and empties the server.
  dl "$name"
  p3_expect 0 "$name: second run"
  fake_wait_sessions 2
  t_assert_eq "$(fake_rec 'r["committed"]' 2)" true "$name: second run committed"
  t_assert_eq "$(ls -A "$T/$name.srv" | wc -l)" 0 "$name: files left after the second run"
  check_no_loss "$name" "$T/orig" "$T/$name.srv" "$T/md-$name"
  maildir_check "$T/md-$name"
  # Duplicates are allowed here; say how many there were.
  t_log "$name: $(t_maildir_count "$T/md-$name") files for 20 messages after two runs"
  fake_stop
done

# --- -ERR on one RETR ------------------------------------------------------------------------
serve err5 "$T/orig" --err-on-retr 5
dl err5
p3_expect 75 "-ERR on RETR 5"
grep -Eqi 'simulated failure|SYS/TEMP' "$T/err" ||
  t_fail "-ERR on RETR 5: stderr does not give the server's reason: $(cat "$T/err")"
fake_wait_sessions 1
t_assert_eq "$(ls "$T/err5.srv")" "0005.eml" "-ERR on RETR 5: left on the server"
t_assert_eq "$(fake_rec 'r["committed"] and r["deleted"] == [i for i in range(1, 21) if i != 5]')" \
  true "-ERR on RETR 5: all but message 5 deleted"
t_assert_eq "$(t_maildir_count "$T/md-err5")" 19 "-ERR on RETR 5: delivered"
check_no_loss err5 "$T/orig" "$T/err5.srv" "$T/md-err5"
maildir_check "$T/md-err5"
fake_stop

# --- a stall, a missing greeting: --timeout ---------------------------------------------------
serve stall "$T/orig" --stall-after-bytes 5000
P3_LIMIT=30
dl stall --timeout 2
p3_expect 75 "stall after 5000 bytes"
grep -q "timed out" "$T/err" || t_fail "stall: no 'timed out' on stderr: $(cat "$T/err")"
no_commit stall
check_no_loss stall "$T/orig" "$T/stall.srv" "$T/md-stall"
fake_stop

serve nogreet "$T/orig" --no-greeting
dl nogreet --timeout 2
p3_expect 75 "no greeting"
grep -q "timed out" "$T/err" || t_fail "no greeting: no 'timed out' on stderr: $(cat "$T/err")"
no_commit nogreet
t_assert_eq "$(t_maildir_count "$T/md-nogreet")" 0 "no greeting: delivered"
fake_stop
P3_LIMIT=40

# --- a close right after PASS ----------------------------------------------------------------
serve closepass "$T/orig" --close-after-pass
dl closepass
p3_expect 75 "close after PASS"
no_commit closepass
t_assert_eq "$(t_maildir_count "$T/md-closepass")" 0 "close after PASS: delivered"
fake_stop

# --- garbage after a reply -------------------------------------------------------------------
for line in 'RETR 5' 'LIST'; do
  n=$(cmdno "$line")
  name=garbage$n
  serve "$name" "$T/orig" --garbage-after "$n"
  dl "$name"
  p3_expect 75 "garbage after '$line' (command $n)"
  fake_wait_sessions 1
  check_no_loss "$name" "$T/orig" "$T/$name.srv" "$T/md-$name"
  t_assert_eq "$(fake_rec 'r["quit"]')" false "garbage after '$line': QUIT sent"
  fake_stop
done

# --- wrong password --------------------------------------------------------------------------
serve badpass "$T/orig"
p3 dl --password-command 'echo wrong' "tcp:test@127.0.0.1:$FAKE_PORT" "$T/md-badpass"
p3_expect 77 "wrong password"
fake_wait_sessions 1
t_assert_eq "$(fake_rec '[r["authenticated"], r["retrieved"],
  [c for c in r["commands"] if c.upper().startswith("RETR")]]')" "[false, [], []]" \
  "wrong password: [authenticated, retrieved, RETR commands]"
t_assert_eq "$(t_maildir_count "$T/md-badpass")" 0 "wrong password: delivered"
fake_stop

# --- the Maildir cannot be created -----------------------------------------------------------
serve nomd "$T/orig"
echo "a regular file" >"$T/afile"
p3 dl "${PW[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/afile/Maildir"
p3_expect 73 "Maildir under a regular file"
grep -q "afile" "$T/err" || t_fail "uncreatable Maildir: stderr does not name it: $(cat "$T/err")"
fake_stop # records any session still open
if [ -s "$FAKE_REC" ]; then
  t_assert_eq "$(fake_rec 'any("PASS ***" in x["commands"] for x in recs)')" false \
    "uncreatable Maildir: logged in anyway"
fi
t_assert_eq "$(ls "$T/nomd.srv" | wc -l)" 20 "uncreatable Maildir: server files"

# --- a full disk -----------------------------------------------------------------------------
# (a) Too little space from the start (1 MiB tmpfs, 1.2 MB of mail): whatever pop3 decides
#     (fetch what fits, or nothing), nothing may be lost and no partial file may be delivered.
# (b) The disk fills up during the run: 800 tiny messages (about 120 KB by LIST size, so any
#     free-space estimate says they fit) each take a 4 KiB page on a 2 MiB tmpfs, so a write
#     fails with ENOSPC part way: exit 73, no QUIT, nothing deleted, every delivered file intact.
full_disk() { # full_disk NAME SIZE ORIG
  local name=$1 size=$2 orig=$3 mnt=$T/$1 n
  mkdir "$mnt"
  if ! mount -t tmpfs -o "size=$size,mode=0700" tmpfs "$mnt" 2>"$T/mount.err"; then
    t_log "$name: skipped: mount failed: $(cat "$T/mount.err")"
    return 1
  fi
  t_on_exit "umount '$mnt' 2>/dev/null"
  serve "$name" "$orig"
  p3 dl "${PW[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$mnt/Maildir"
  fake_wait_sessions 1
  t_assert_eq "$(fake_rec 'r["deleted"]')" "[]" "$name: server deleted messages"
  t_assert_eq "$(ls "$T/$name.srv" | wc -l)" "$(ls "$orig" | wc -l)" "$name: server files"
  check_no_loss "$name" "$orig" "$T/$name.srv" "$mnt/Maildir"
  n=$(t_maildir_count "$mnt/Maildir")
  [ "$n" -lt "$(ls "$orig" | wc -l)" ] || t_fail "$name: $n messages delivered into $size?"
  t_log "$name: exit $P3_RC, $n delivered intact, tmp/ holds $(ls -A "$mnt/Maildir/tmp" | wc -l)"
  return 0
}

if [ "$(id -u)" != 0 ]; then
  t_log "disk-full cases skipped: not root (they mount a tmpfs)"
else
  mkmsgs "$T/bigorig" 12 100000 # about 1.2 MB in all
  if full_disk full-start 1m "$T/bigorig"; then
    case $P3_RC in
      73 | 75) ;;
      *) p3_expect 73 "full-start: disk too small from the start" ;;
    esac
    grep -Eqi 'disk space|no space' "$T/err" || t_fail "full-start: stderr: $(cat "$T/err")"
    fake_stop
    umount "$T/full-start" || t_fail "cannot unmount $T/full-start"
  fi

  "$PYTHON" - "$T/tinyorig" <<'PY' || t_fail "cannot write tiny messages"
import os, sys
d = sys.argv[1]
os.makedirs(d)
for i in range(1, 801):
    open(os.path.join(d, "%04d.eml" % i), "wb").write(
        b"Subject: tiny %d\n\n.dot line %d\nbody %d\n" % (i, i, i))
PY
  if full_disk full-run 2m "$T/tinyorig"; then
    p3_expect 73 "full-run: disk full during the run"
    t_assert_eq "$(fake_rec 'r["quit"]')" false "full-run: QUIT sent after a failed save"
    grep -Eqi 'space' "$T/err" || t_fail "full-run: stderr does not say why: $(cat "$T/err")"
    fake_stop
    umount "$T/full-run" || t_fail "cannot unmount $T/full-run"
  fi
fi

# --- desync with messages of equal size ------------------------------------------------------
# (Last: the case most likely to fail, so that the others still run.)
# With every LIST size equal, a reply shifted by one still carries a plausible octet count.
"$PYTHON" - "$T/same" <<'PY' || t_fail "cannot write equal-size messages"
import os, sys
d = sys.argv[1]
os.makedirs(d)
for i in range(1, 21):
    head = "From: same%d@example.org\nSubject: equal size %02d\n\n" % (i, i)
    body = "".join(".line %d of message %02d\n" % (k, i) if k % 4 == 0 else
                   "line %d of message %02d\n" % (k, i) for k in range(1, 200))
    data = (head + body).encode()[:1499] + b"\n"
    open(os.path.join(d, "%04d.eml" % i), "wb").write(data)
PY
[ "$(stat -c %s "$T"/same/* | sort -u | wc -l)" = 1 ] || t_fail "equal-size messages differ in size"
serve refsame "$T/same"
dl refsame
p3_expect 0 "equal-size reference run"
fake_wait_sessions 1
fake_stop
CMDREF=$T/refsame.rec
n10=$(cmdno 'RETR 10')

# Each case runs in a subshell (t_fail ends only that) so that both are always reported.
failed=
for fault in drop-reply dup-reply; do
  name=$fault
  serve "$name" "$T/same" "--$fault" "$n10"
  if ! (
    # A lost reply may only show as silence: a short --timeout bounds the wait.
    dl "$name" --timeout 2
    p3_expect 75 "--$fault on RETR 10 (command $n10)"
    fake_wait_sessions 1
    no_commit "$name"
    check_no_loss "$name" "$T/same" "$T/$name.srv" "$T/md-$name"
    t_log "$name: delivered $(t_maildir_count "$T/md-$name") in the faulty session"
    # The user runs it again (the second session has no fault): what the first session saved
    # under shifted message numbers must not make this run delete a message never delivered.
    dl "$name" --timeout 10
    p3_expect 0 "--$fault: second run"
    fake_wait_sessions 2
    check_no_loss "$name (after the second run)" "$T/same" "$T/$name.srv" "$T/md-$name"
    t_assert_eq "$(ls -A "$T/$name.srv" | wc -l)" 0 "--$fault: files left after the second run"
  ); then
    failed="$failed --$fault"
  fi
  fake_stop
done
[ -z "$failed" ] || t_fail "desync cases failed:$failed"

t_log "dl-faults: all checks passed"
exit 0

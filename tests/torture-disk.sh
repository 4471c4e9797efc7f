#!/bin/bash
# torture-disk.sh -- local failures, and nothing may be lost:
#   - the disk fills up during a save (a small tmpfs holds the Maildir; it is filled while
#     fakepop3d holds the transfer after 250 kB, --hold-after-bytes, so after the free-space
#     check and before the end whatever the machine's load): 73 (doc/pop3.1: "a
#     full disk included"), the message that failed is not deleted, no partial file in new/,
#     tmp/ clean, every delivered file intact and recorded; after the tmpfs is enlarged, reruns
#     deliver everything exactly once;
#   - the free-space check: a Maildir file system with little room gets what fits, oldest
#     first; the rest is "left on the server" (stderr), exit 73 or 75; then everything, once;
#   - permissions (pop3 as nobody, since root ignores modes): a Maildir that is not writable:
#     73, nothing deleted; a state directory that is not writable: an error naming the state
#     path, nothing deleted; a state "file" that is a directory: an error naming it;
#   - a state file with garbage in it: the run works, the corrupt lines are reported, nothing
#     is lost (only messages whose records were garbage are fetched again).
# Needs root (mount, setpriv); without it the test is skipped (a failure when CI=true).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-150}
t_init torture-disk
. "$top_srcdir/tests/lib/torture.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"
[ "$(id -u)" = 0 ] || t_skip "needs root (tmpfs mounts, running pop3 as nobody)"

# later MSG: a failure that does not stop the other cases; the test fails at the end.
LATER=0
later() {
  echo "FAIL (reported at the end): $*" >&2
  LATER=$((LATER + 1))
}

expect_rc() { # expect_rc NAME RC WHAT
  [ "$TT_RC" = "$2" ] || tt_fail "$1" "$1: $3: pop3 exited $TT_RC, expected $2"
}

# mount_small NAME SIZE: a tmpfs at $T/NAME.mnt; the case's Maildir is $T/NAME.mnt/Maildir
# (reached through the symlink $T/NAME.md). Returns 1 if mount fails.
mount_small() {
  mkdir -p "$T/$1.mnt"
  mount -t tmpfs -o "size=$2,mode=0700" tmpfs "$T/$1.mnt" 2>"$T/$1.mount.err" || return 1
  t_on_exit "umount -l '$T/$1.mnt' 2>/dev/null"
  mkdir "$T/$1.mnt/Maildir"
  ln -sfn "$1.mnt/Maildir" "$T/$1.md"
}

# recorded NAME: every file in new/ is named by a D record of the state.
recorded() {
  "$PYTHON" - "$T/$1.md/new" "$T/$1.state" <<'EOF'
import os, sys
names = set(l.split(" ")[4] for l in open(sys.argv[2], encoding="latin-1")
            if l.startswith("D "))
bad = [n for n in os.listdir(sys.argv[1]) if n.split(":")[0] not in names]
for n in bad:
    print("delivered but not recorded: %s" % n, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
}

"$PYTHON" "$top_srcdir/tests/lib/genmail.py" "$T/big" 30 --size 100000 || t_fail "genmail"
mounts=1

# ---- the disk fills up during the transfer ---------------------------------------------------
name=full
if mount_small $name 5m; then
  # Deterministic, whatever the load: the server holds the transfer after 250 kB (past
  # the listing and the free-space check, two messages in) until the disk has been filled.
  tt_serve $name "$T/big" --hold-after-bytes 250000 --hold-until "$T/$name.go"
  "$POP3" -v dl "${TT_PW[@]}" --state "$T/$name.state" "tcp:test@127.0.0.1:$TT_PORT" \
    "$T/$name.md" </dev/null >"$T/$name.out" 2>"$T/$name.err" &
  pid=$!
  for ((i = 0; i < 600; i++)); do
    [ -e "$T/$name.go.held" ] && break
    t_alive "$pid" || break
    sleep 0.05
  done
  [ -e "$T/$name.go.held" ] ||
    { tail -5 "$T/$name.err" >&2; t_fail "$name: the server never reached the hold point"; }
  # Leave about 700 KiB: a few more messages fit, then ENOSPC.
  avail=$(df -B1 --output=avail "$T/$name.mnt" | tail -1)
  fallocate -l $((avail - 700 * 1024)) "$T/$name.mnt/filler" ||
    dd if=/dev/zero of="$T/$name.mnt/filler" bs=1k count=$(((avail - 700 * 1024) / 1024)) \
      2>/dev/null
  touch "$T/$name.go"
  wait "$pid"
  TT_RC=$?
  echo "$TT_RC" >>"$T/$name.rcs"
  grep -v '^pop3: [<>]' "$T/$name.err" | grep -i "space\|save\|pop3: tcp" | tail -3 >&2
  [ "$TT_RC" = 73 ] || [ "$TT_RC" = 75 ] || tt_fail $name "$name: disk full: exit $TT_RC"
  [ "$TT_RC" = 73 ] || t_log "$name: NOTE: exit 75 for a full disk (doc/pop3.1 says 73)"
  saved=$(t_maildir_count "$T/$name.md")
  [ "$saved" -gt 0 ] && [ "$saved" -lt 30 ] || tt_fail $name "$name: $saved saved of 30"
  tt_lost $name "$T/big"
  tt_verify deleted "$T/big" "$T/$name.md" "$T/$name.rec" || tt_fail $name "$name: deleted unsaved"
  [ -z "$(ls -A "$T/$name.md/tmp")" ] ||
    tt_fail $name "$name: tmp/ not clean: $(ls "$T/$name.md/tmp")"
  recorded $name || tt_fail $name "$name: a delivered file has no record"
  t_log "$name: disk full after $saved messages: exit $TT_RC, $(tt_left $name) left on the server"
  rm -f "$T/$name.mnt/filler"
  mount -o remount,size=20m "$T/$name.mnt" || t_fail "$name: remount"
  tt_converge $name 3
  tt_check $name "$T/big"
  tt_unserve $name
  t_log "$name: ok ($(tr '\n' ' ' <"$T/$name.rcs"))"
else
  mounts=0
  [ "${CI:-}" = true ] && t_fail "cannot mount a tmpfs: $(cat "$T/$name.mount.err")"
  t_log "SKIP the disk-full cases: cannot mount a tmpfs: $(cat "$T/$name.mount.err")"
fi

# ---- the free-space check before queueing ----------------------------------------------------
name=space
if [ "$mounts" = 1 ] && mount_small $name 3m; then
  tt_serve $name "$T/big"
  tt_dl $name
  # doc/pop3.1: 73 for "a full disk included", 75 for "any partial run": either is right.
  [ "$TT_RC" = 73 ] || [ "$TT_RC" = 75 ] ||
    tt_fail $name "$name: not enough room for every message: exit $TT_RC, expected 73 or 75"
  grep -q "left on the server: not enough disk space" "$T/$name.lasterr" ||
    tt_fail $name "$name: stderr does not say what was left: $(cat "$T/$name.lasterr")"
  k=$(t_maildir_count "$T/$name.md")
  [ "$k" -gt 0 ] && [ "$k" -lt 30 ] || tt_fail $name "$name: $k delivered of 30"
  # Oldest first: messages 1..k delivered and deleted, k+1..30 still on the server.
  mkdir -p "$T/space.first"
  (cd "$T/big" && cp $(ls | head -n "$k") "$T/space.first/")
  tt_verify check "$T/space.first" "$T/$name.md" --state "$T/$name.state" \
    --what "$name (first $k)" ||
    tt_fail $name "$name: not the $k oldest messages"
  t_assert_eq "$(ls "$T/$name.srv" | head -1)" "$(ls "$T/big" | sed -n "$((k + 1))p")" \
    "$name: the first message left on the server"
  t_assert_eq "$(tt_left $name)" $((30 - k)) "$name: left on the server"
  mount -o remount,size=20m "$T/$name.mnt" || t_fail "$name: remount"
  tt_converge $name 3
  tt_check $name "$T/big"
  tt_unserve $name
  t_log "$name: ok (exit $(head -1 "$T/$name.rcs"); $k of 30 fitted;" \
    "$(grep 'left on the server' "$T/$name.err" | head -1))"
fi

# ---- permissions: pop3 as nobody -------------------------------------------------------------
cat >"$T/pop3-nobody" <<EOF
#!/bin/sh
HOME=$T/nb exec setpriv --reuid=65534 --regid=65534 --clear-groups "$POP3" "\$@"
EOF
chmod 755 "$T/pop3-nobody"
chmod 711 "$T"
mkdir -p "$T/nb" "$T/rootonly"
chown 65534:65534 "$T/nb"
chmod 755 "$T/rootonly"
tt_gen "$T/orig" 10

# Server untouched: nothing retrieved is deleted, every message is still there.
untouched() {
  t_assert_eq "$(tt_left "$1")" 10 "$1: messages on the server"
  if [ "$(tt_sessions "$1")" -gt 0 ]; then
    t_assert_eq "$(tt_rec "$1" 'r["deleted"]')" "[]" "$1: deleted"
  fi
}

name=ro-maildir
mkdir -p "$T/$name.md/tmp" "$T/$name.md/new" "$T/$name.md/cur"
chmod 700 "$T/$name.md" "$T/$name.md"/*
tt_serve $name "$T/orig"
ln -s "nb/$name.state" "$T/$name.state"
POP3=$T/pop3-nobody tt_dl $name
expect_rc $name 73 "Maildir not writable"
grep -q "$T/$name.md" "$T/$name.lasterr" ||
  tt_fail $name "$name: the error does not name the Maildir"
untouched $name
tt_unserve $name
t_log "$name: ok ($(grep -v '^====' "$T/$name.err" | head -1))"

name=ro-statedir
tt_serve $name "$T/orig"
TT_RC=0
timeout 60 "$T/pop3-nobody" dl "${TT_PW[@]}" --state "$T/rootonly/sub/$name.state" \
  "tcp:test@127.0.0.1:$TT_PORT" "$T/nb/$name.md" </dev/null >"$T/$name.out" 2>"$T/$name.lasterr" ||
  TT_RC=$?
echo "$TT_RC" >>"$T/$name.rcs"
cat "$T/$name.lasterr" >>"$T/$name.err"
[ "$TT_RC" != 0 ] || tt_fail $name "$name: state dir not writable: exit 0"
grep -q "$T/rootonly/sub" "$T/$name.lasterr" ||
  tt_fail $name "$name: the error does not name the state path: $(cat "$T/$name.lasterr")"
untouched $name
tt_unserve $name
t_log "$name: ok (exit $TT_RC: $(head -1 "$T/$name.lasterr"))"

name=dir-state
mkdir -p "$T/$name.state"
tt_serve $name "$T/orig"
tt_dl $name
[ "$TT_RC" != 0 ] || tt_fail $name "$name: a state that is a directory: exit 0"
grep -q "$T/$name.state" "$T/$name.lasterr" ||
  tt_fail $name "$name: the error does not name the state path: $(cat "$T/$name.lasterr")"
untouched $name
tt_unserve $name
t_log "$name: ok (exit $TT_RC: $(head -1 "$T/$name.lasterr"))"

# ---- garbage in the state file ---------------------------------------------------------------
# Part garbage: 3 of 10 D records damaged, and a garbage line. Those 3 may come twice.
name=garbage3
tt_serve $name "$T/orig"
tt_dl $name --keep
expect_rc $name 0 "--keep run before the damage"
"$PYTHON" - "$T/$name.state" <<'EOF'
import sys
p = sys.argv[1]
lines = open(p, "rb").read().split(b"\n")
n = 0
for i, l in enumerate(lines):
    if l.startswith(b"D ") and n < 3:
        lines[i] = l[:30] + (b"X" if l[30:31] != b"X" else b"Y") + l[31:]
        n += 1
lines.insert(3, b"\x00\xffgarbage line \x01\x02 *deadbeef")
open(p, "wb").write(b"\n".join(lines))
EOF
tt_dl $name
expect_rc $name 0 "a state with 4 corrupt lines"
grep -q "4 corrupt lines ignored" "$T/$name.lasterr" ||
  later "$name: the 4 corrupt lines are not reported on stderr: '$(cat "$T/$name.lasterr")'"
tt_check $name "$T/orig" --allow-dups 3
tt_unserve $name
t_log "$name: ok ($(ls "$T/$name.md/new" | wc -l) files for 10 messages)"

# All garbage: everything is fetched again, nothing lost.
name=garbage-all
tt_serve $name "$T/orig"
tt_dl $name --keep
expect_rc $name 0 "--keep run before the damage"
head -c 3000 /dev/urandom >"$T/$name.state"
tt_dl $name
expect_rc $name 0 "an all-garbage state"
grep -q "corrupt lines ignored" "$T/$name.lasterr" ||
  later "$name: the corrupt lines are not reported on stderr: '$(cat "$T/$name.lasterr")'"
tt_check $name "$T/orig" --allow-dups 10
tt_unserve $name
t_log "$name: ok ($(ls "$T/$name.md/new" | wc -l) files for 10 messages)"
[ "$LATER" = 0 ] || t_fail "$LATER failures above"
exit 0

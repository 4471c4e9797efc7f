#!/bin/bash
# dl-symlinks.sh -- `pop3 dl` never follows a symlink a user could plant in the Maildir or
# beside the state file, never deletes what is not its own, and root never works in a user's
# Maildir:
#   - new/ a symlink to a decoy: exit 73 naming it, decoy byte-identical, server untouched;
#   - tmp/ a symlink to a decoy holding 40-hour-old files: exit 73, every file survives;
#   - a real tmp/: only 40-hour-old files named by our own scheme go, foreign ones stay;
#   - the state file a symlink, or with a second hard link: exit 78, target unchanged;
#   - as root only: a Maildir owned by nobody (65534): exit 77, nothing created or fetched.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
t_init dl-symlinks
. "$top_srcdir/tests/lib/fake.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"

PW=(--password-command 'echo secret')
mkmsgs "$T/orig" 5

# serve NAME: a fresh copy of the 5 messages, served by a new fakepop3d.
serve() {
  rm -rf "$T/$1.srv"
  cp -a "$T/orig" "$T/$1.srv"
  fake_start "$1" --maildir "$T/$1.srv"
}

# untouched NAME: all 5 messages still on the server, none deleted by any session.
untouched() {
  fake_stop
  t_assert_eq "$(ls -A "$T/$1.srv" | wc -l)" 5 "$1: messages left on the server"
  if [ "$(fake_sessions)" -gt 0 ]; then
    t_assert_eq "$(fake_rec '[u for x in recs for u in x["deleted_uids"]]')" "[]" "$1: deleted"
  fi
}

# snapshot DIR: names, types, modes, sizes, mtimes and contents of everything under DIR.
snapshot() {
  (cd "$1" && find . -printf '%p %y %m %s %T@\n' | sort && find . -type f -print0 | sort -z |
    xargs -0 -r sha256sum)
}

# mkdecoy DIR: a directory with a few files worth protecting.
mkdecoy() {
  mkdir -p "$1/sub"
  echo "precious one" >"$1/one"
  echo "precious two" >"$1/sub/two"
}

# Our unique-name scheme, for this host, by a pid that has exited.
HOST=$("$PYTHON" -c 'import socket; print(socket.gethostname().replace("/", "\\057").replace(":", "\\072"))')
(:) &
DEAD=$!
wait "$DEAD"
OLD=$(($(date +%s) - 40 * 3600))

# --- new/ a symlink to a decoy ---------------------------------------------------------------
name=newlink
mkdecoy "$T/$name.decoy"
mkdir -p "$T/$name.md/tmp" "$T/$name.md/cur"
ln -s "$T/$name.decoy" "$T/$name.md/new"
snapshot "$T/$name.decoy" >"$T/$name.before"
serve $name
p3 dl "${PW[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/$name.md"
p3_expect 73 "new/ a symlink"
grep -qF "$T/$name.md/new is a symbolic link; refusing to follow it" "$T/err" ||
  t_fail "$name: no clear error: $(cat "$T/err")"
snapshot "$T/$name.decoy" >"$T/$name.after"
t_assert_file_same "$T/$name.before" "$T/$name.after" "$name: the decoy changed"
[ -L "$T/$name.md/new" ] || t_fail "$name: the symlink was replaced"
untouched $name
t_log "$name: ok ($(head -1 "$T/err"))"

# --- tmp/ a symlink to a decoy with 40-hour-old files ----------------------------------------
name=tmplink
mkdecoy "$T/$name.decoy"
for f in "$OLD.M1P${DEAD}Q1.$HOST" "$OLD.M2P$$Q2.$HOST" "$OLD.M3P${DEAD}Q3.elsewhere" \
  "courier.$OLD.tmp"; do
  echo x >"$T/$name.decoy/$f"
done
touch -d "@$OLD" "$T/$name.decoy"/* "$T/$name.decoy"
snapshot "$T/$name.decoy" >"$T/$name.before"
mkdir -p "$T/$name.md/new" "$T/$name.md/cur"
ln -s "$T/$name.decoy" "$T/$name.md/tmp"
serve $name
p3 dl "${PW[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/$name.md"
p3_expect 73 "tmp/ a symlink"
grep -qF "$T/$name.md/tmp is a symbolic link; refusing to follow it" "$T/err" ||
  t_fail "$name: no clear error: $(cat "$T/err")"
snapshot "$T/$name.decoy" >"$T/$name.after"
t_assert_file_same "$T/$name.before" "$T/$name.after" "$name: the decoy changed"
untouched $name
t_log "$name: ok"

# --- a real tmp/: only our own old debris goes -----------------------------------------------
name=tmpclean
mkdir -p "$T/$name.md/tmp" "$T/$name.md/new" "$T/$name.md/cur"
ours=("$OLD.M1P${DEAD}Q1.$HOST" "$OLD.M2P$$Q2.elsewhere.example" "$(($(date +%s) - 60)).M3P${DEAD}Q3.$HOST")
foreign=("$OLD.M4P${DEAD}.$HOST" "$OLD.M5P${DEAD}Q5.$HOST:2,S" "dovecot-$OLD.tmp"
  "$OLD.M6P${DEAD}Q6.$HOST,S=2")
for f in "${ours[@]}" "${foreign[@]}"; do
  echo x >"$T/$name.md/tmp/$f"
done
touch -d "@$OLD" "$T/$name.md/tmp/${ours[0]}" "$T/$name.md/tmp/${ours[1]}"
for f in "${foreign[@]}"; do touch -d "@$OLD" "$T/$name.md/tmp/$f"; done
# Our name and old, but a symlink to a file outside, and a directory: both stay.
echo "precious" >"$T/$name.outside"
ln -s "$T/$name.outside" "$T/$name.md/tmp/$OLD.M7P${DEAD}Q7.$HOST"
mkdir "$T/$name.md/tmp/$OLD.M8P${DEAD}Q8.$HOST"
serve $name
p3 -v dl "${PW[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/$name.md"
p3_expect 0 "tmp/ with debris"
for f in "${ours[@]}"; do
  [ ! -e "$T/$name.md/tmp/$f" ] || t_fail "$name: our debris tmp/$f survived"
done
for f in "${foreign[@]}" "$OLD.M7P${DEAD}Q7.$HOST" "$OLD.M8P${DEAD}Q8.$HOST"; do
  [ -e "$T/$name.md/tmp/$f" ] || [ -L "$T/$name.md/tmp/$f" ] ||
    t_fail "$name: tmp/$f was removed, but it is not ours to remove"
done
t_assert_eq "$(cat "$T/$name.outside")" precious "$name: the symlink's target"
t_assert_eq "$(t_maildir_count "$T/$name.md")" 5 "$name: delivered"
fake_stop
t_log "$name: ok"

# --- the state file a symlink, or with two links ---------------------------------------------
name=statelink
echo "not a journal: must stay as it is" >"$T/$name.victim"
ln -s "$T/$name.victim" "$T/$name.state"
cp -p "$T/$name.victim" "$T/$name.victim.orig"
serve $name
p3 dl "${PW[@]}" --state "$T/$name.state" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/$name.md"
p3_expect 78 "state file a symlink"
grep -qF "$T/$name.state is a symbolic link; refusing to follow it" "$T/err" ||
  t_fail "$name: no clear error: $(cat "$T/err")"
t_assert_file_same "$T/$name.victim.orig" "$T/$name.victim" "$name: the target changed"
[ ! -e "$T/$name.state.lock" ] || t_fail "$name: a lock file was created"
t_assert_eq "$(t_maildir_count "$T/$name.md")" 0 "$name: delivered"
untouched $name
t_log "$name: ok"

name=statelinks2
echo "not a journal: must stay as it is" >"$T/$name.victim"
ln "$T/$name.victim" "$T/$name.state"
cp -p "$T/$name.victim" "$T/$name.victim.orig"
serve $name
p3 dl "${PW[@]}" --state "$T/$name.state" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/$name.md"
p3_expect 78 "state file with two links"
grep -qF "refusing $T/$name.state: it has 2 hard links" "$T/err" ||
  t_fail "$name: no clear error: $(cat "$T/err")"
t_assert_file_same "$T/$name.victim.orig" "$T/$name.victim" "$name: the target changed"
untouched $name
t_log "$name: ok"

# --- root and a Maildir owned by nobody ------------------------------------------------------
if [ "$(id -u)" = 0 ]; then
  name=rootuser
  who=$(getent passwd 65534 | cut -d: -f1)
  who=${who:-uid 65534}
  mkdir -p "$T/$name.md"
  chown 65534:65534 "$T/$name.md"
  serve $name
  p3 dl "${PW[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/$name.md"
  p3_expect 77 "root into nobody's Maildir"
  grep -qF "$T/$name.md belongs to $who; run pop3 as $who" "$T/err" ||
    t_fail "$name: no clear error: $(cat "$T/err")"
  t_assert_eq "$(ls -A "$T/$name.md" | wc -l)" 0 "$name: created in the Maildir"
  t_assert_eq "$(fake_sessions)" 0 "$name: sessions"
  # Missing, inside nobody's directory: the nearest existing parent decides.
  p3 dl "${PW[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/$name.md/sub/Maildir"
  p3_expect 77 "root into a new Maildir in nobody's directory"
  [ ! -e "$T/$name.md/sub" ] || t_fail "$name: root created a directory in nobody's"
  untouched $name
  t_log "$name: ok ($(head -1 "$T/err"))"
else
  t_log "rootuser: not root, case skipped"
fi

t_log "dl-symlinks: all checks passed"
exit 0

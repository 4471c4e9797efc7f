# tests/lib/fake.sh -- helpers for the dl-*.sh tests: run `pop3 dl` against tests/fakepop3d.py
# and check what arrived. Source it after common.sh and t_init (it uses $T, $PYTHON, $POP3,
# t_bg, t_kill, t_fail). It sets XDG_STATE_HOME=$T/state (pop3's UID journals).
#
#   fake_start NAME ARGS...   start fakepop3d (ARGS are its options) recording to $T/NAME.rec;
#                             sets FAKE_PORT, FAKE_PID, FAKE_REC
#   fake_stop                 stop it (TERM); afterwards every session is in $FAKE_REC
#   fake_sessions             number of sessions recorded so far
#   fake_wait_sessions N      wait (bounded) until N sessions are recorded
#   fake_rec EXPR [SESSION]   evaluate the python EXPR with r = the record of SESSION (default:
#                             the last one); prints true/false, numbers, strings, or JSON
#   p3 ARGS...                run $POP3 ARGS (stdin /dev/null, bounded by $P3_LIMIT s, default
#                             60); stdout in $T/out, stderr in $T/err, status in $P3_RC
#   p3_expect RC WHAT         fail (showing stderr) unless $P3_RC = RC
#   p3_sanitizer_check        fail on an ASan/UBSan report in $T/err (p3 calls it)
#   sums DIR...               sorted sha256 sums of the regular files under DIRs
#   popref_expect SRC OUT     what a lock-step RFC 1939 client delivers for the files of SRC:
#                             serves a copy of SRC with a private fakepop3d, runs popref.py
#   maildir_check DIR         Maildir layout: tmp/new/cur 0700, files 0600, ,S=<size>, tmp/ empty
#   mkmsgs DIR N [SIZE]       genmail.py DIR N --size SIZE (plain messages, LF, no CR)
#   check_no_loss WHAT ORIG SRV MAILDIR   nothing lost, mangled, or deleted undelivered
# shellcheck shell=bash disable=SC2154 # top_srcdir, T, PYTHON, POP3 come from common.sh

P3_LIMIT=${P3_LIMIT:-60}
# pop3 keeps a UID journal under $XDG_STATE_HOME (else ~/.local/state): keep it in $T, so that
# no run sees the state of another test or of the person running the tests.
export XDG_STATE_HOME=$T/state
FAKE_PORT=
FAKE_PID=
FAKE_REC=

fake_start() {
  local name=$1 i
  shift
  FAKE_REC=$T/$name.rec
  rm -f "$T/$name.port" "$FAKE_REC"
  t_bg "$PYTHON" "$top_srcdir/tests/fakepop3d.py" --port-file "$T/$name.port" \
    --record "$FAKE_REC" --lifetime 300 "$@" >"$T/$name.stdout" 2>"$T/$name.log"
  FAKE_PID=$T_BG_PID
  for ((i = 0; i < 200; i++)); do
    [ -s "$T/$name.port" ] && break
    t_alive "$FAKE_PID" || break
    sleep 0.05
  done
  if [ ! -s "$T/$name.port" ]; then
    cat "$T/$name.log" >&2
    t_fail "fakepop3d $name did not start"
  fi
  FAKE_PORT=$(cat "$T/$name.port")
}

fake_stop() {
  local i
  [ -n "$FAKE_PID" ] || return 0
  # TERM and a quick poll (fakepop3d exits within a few tenths of a second); t_kill, with
  # its 0.1 s steps and KILL fallback, for the rest.
  kill -TERM "$FAKE_PID" 2>/dev/null
  for ((i = 0; i < 100; i++)); do
    t_alive "$FAKE_PID" || break
    sleep 0.02
  done
  t_kill "$FAKE_PID"
  FAKE_PID=
}

fake_sessions() {
  if [ -f "$FAKE_REC" ]; then
    grep -c '' "$FAKE_REC"
  else
    echo 0
  fi
}

fake_wait_sessions() {
  local i
  for ((i = 0; i < 300; i++)); do
    [ "$(fake_sessions)" -ge "$1" ] && return 0
    sleep 0.05
  done
  t_fail "fakepop3d recorded $(fake_sessions) sessions, expected $1"
}

fake_rec() {
  "$PYTHON" - "$FAKE_REC" "$1" "${2:-}" <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
if sys.argv[3]:
    r = [x for x in recs if x["session"] == int(sys.argv[3])][0]
else:
    r = recs[-1]
v = eval(sys.argv[2], {"recs": recs, "r": r})
if isinstance(v, bool):
    print("true" if v else "false")
elif isinstance(v, (int, float, str)):
    print(v)
else:
    print(json.dumps(v))
EOF
}

p3() {
  P3_RC=0
  timeout -k 5 "$P3_LIMIT" "$POP3" "$@" </dev/null >"$T/out" 2>"$T/err" || P3_RC=$?
  p3_sanitizer_check "$@"
}

# A sanitizer report fails the test even when the exit status looks right (UBSan goes on).
p3_sanitizer_check() {
  if grep -Eq 'runtime error:|ERROR: (Address|Leak|Memory|Thread)Sanitizer' "$T/err"; then
    grep -E -A20 'runtime error:|ERROR: (Address|Leak|Memory|Thread)Sanitizer' "$T/err" |
      head -40 >&2
    t_fail "sanitizer report from pop3 $*"
  fi
}

p3_expect() {
  if [ "$P3_RC" != "$1" ]; then
    echo "--- pop3 stdout:" >&2
    head -c 3000 "$T/out" >&2
    echo "--- pop3 stderr:" >&2
    tail -c 3000 "$T/err" >&2
    t_fail "$2: pop3 exited $P3_RC, expected $1"
  fi
}

sums() {
  local d
  for d in "$@"; do
    [ -d "$d" ] && find "$d" -type f -print0
  done | xargs -0 -r sha256sum | awk '{print $1}' | sort
}

popref_expect() {
  local src=$1 out=$2 saved_port=$FAKE_PORT saved_pid=$FAKE_PID saved_rec=$FAKE_REC
  rm -rf "$T/popref.srv" "$out"
  cp -a "$src" "$T/popref.srv"
  fake_start popref --maildir "$T/popref.srv"
  "$PYTHON" "$top_srcdir/tests/lib/popref.py" 127.0.0.1 "$FAKE_PORT" test secret "$out" \
    --timeout 30 >"$T/popref.stdout" 2>"$T/popref.stderr" ||
    { cat "$T/popref.stderr" >&2; t_fail "popref.py failed"; }
  fake_stop
  FAKE_PORT=$saved_port FAKE_PID=$saved_pid FAKE_REC=$saved_rec
}

maildir_check() {
  local md=$1 d mode bad
  for d in tmp new cur; do
    [ -d "$md/$d" ] || t_fail "$md/$d missing"
    mode=$(stat -c %a "$md/$d")
    t_assert_eq "$mode" 700 "mode of $md/$d"
  done
  [ -z "$(ls -A "$md/tmp")" ] || t_fail "$md/tmp not empty: $(ls -A "$md/tmp" | head -3)"
  # One find for all files (a stat per file costs seconds on this machine).
  bad=$(find "$md/new" "$md/cur" -mindepth 1 -printf '%y %m %s %f\n' | awk '
    $1 != "f" { print "not a regular file: " $4; next }
    $2 != "600" { print "mode " $2 ": " $4; next }
    { n = split($4, parts, ",S="); if (n < 2 || parts[n] != $3) print "size " $3 ": " $4 }')
  [ -z "$bad" ] || t_fail "$md: $(echo "$bad" | head -3)"
}

mkmsgs() {
  "$PYTHON" "$top_srcdir/tests/lib/genmail.py" "$1" "$2" --size "${3:-2000}" ||
    t_fail "genmail.py failed"
}

# check_no_loss WHAT ORIG SRV MAILDIR: nothing lost and nothing invented, over every session in
# $FAKE_REC: each original is still in SRV (the server's --maildir) or delivered; each delivered
# file is byte-identical to an original; each message a session deleted (deleted_uids, sha1
# UID mode) is byte-identical to a delivered file. Originals must be distinct.
check_no_loss() {
  "$PYTHON" - "$@" "$FAKE_REC" <<'PY' || t_fail "$1: a message was lost or mangled"
import hashlib, json, os, sys
what, orig, srv, md, rec = sys.argv[1:]

def files(*dirs):
    out = []
    for d in dirs:
        if os.path.isdir(d):
            out += [open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d))
                    if os.path.isfile(os.path.join(d, n))]
    return out

originals = files(orig)
on_server = set(files(srv))
delivered = files(os.path.join(md, "new"), os.path.join(md, "cur"))
have = set(delivered)
err = []
for b in delivered:
    if b not in set(originals):
        err.append("a delivered file (%d bytes, %r...) is no original" % (len(b), b[:40]))
by_uid = {hashlib.sha1(b).hexdigest()[:20]: b for b in originals}
recs = [json.loads(l) for l in open(rec)] if os.path.exists(rec) else []
for r in recs:
    for uid in r["deleted_uids"]:
        b = by_uid.get(uid)
        if b is None:
            err.append("session %d deleted unknown UID %s" % (r["session"], uid))
        elif b not in have:
            err.append("session %d deleted UID %s, which was not delivered"
                       % (r["session"], uid))
for i, b in enumerate(originals):
    if b not in on_server and b not in have:
        err.append("original #%d is neither on the server nor delivered" % (i + 1))
for e in err[:10]:
    print("%s: %s" % (what, e), file=sys.stderr)
sys.exit(1 if err else 0)
PY
}

# tests/lib/daemon.sh -- helpers for the pop3syncd / pop3ctl integration tests (bash only).
#
# Source after common.sh and t_init:
#
#   . "$top_srcdir/tests/lib/daemon.sh"
#   fake_start NAME [fakepop3d options...]   # sets FAKE_PORT FAKE_PID; record in $T/NAME.rec
#   mail_gen DIR N [genmail options...]      # genmail.py DIR N, quietly
#   daemon_conf FILE <<EOF ... EOF           # writes FILE (stdin) with mode 0600
#   daemon_start CONF [args...]              # sets DAEMON_PID; waits until the socket answers
#   daemon_stop [SECS]                       # SIGTERM, bounded wait; returns the exit status
#   daemon_kill9                             # SIGKILL, bounded wait until it is gone
#   ctl ARGS...                              # pop3ctl -s $DAEMON_SOCK ARGS...
#   daemon_require                           # skip (77) without the binaries or python3
#   daemon_conf_globals                      # control_socket, state_dir, timeout lines
#   d_fail MSG                               # t_fail, after the end of the daemon's log
#   daemon_status_json [FILE [ACCOUNT]]      # pop3ctl status --json into FILE ($T/status.json)
#   jq_py FILE EXPR                          # print the python expression EXPR of d = json(FILE)
#   wait_until SECS CMD...                   # run CMD every 0.1 s until it succeeds (1 if not)
#   wait_maildir DIR N SECS                  # until DIR holds N delivered messages
#   same_messages ORIGDIR MAILDIR [--subset] # the two multisets of sha256 are equal (or: every
#                                            # delivered file is a distinct original)
#   covers_messages ORIGDIR MAILDIR          # every original delivered, nothing else (dups ok)
#   maildir_bytes DIR                        # sum of the sizes of DIR's new/ and cur/ files
#   maildir_tmp_empty DIR                    # nothing left in DIR/tmp
#
# Variables: $DAEMON (the binary), $POP3CTL, $FAKEPOP3D, $DAEMON_SOCK (control socket, default
# $T/run/control.sock), $DAEMON_STATE ($T/state), $DAEMON_LOG ($T/daemon.log).
#
# As root, pop3syncd runs every account as its `user' (pop3syncd(8), RUNNING AS ROOT), so
# daemon_conf adds user = "$DAEMON_ACCOUNT_USER" (default nobody: no user is created) to each
# account line that names none, and $T becomes reachable for that user: 0711, with $T/mail
# (where the tests put their Maildirs) its own.  Set DAEMON_ACCOUNT_USER= before sourcing
# this file to write `user' yourself.

DAEMON=${DAEMON:-$top_builddir/pop3syncd}
POP3CTL=${POP3CTL:-$top_builddir/pop3ctl}
FAKEPOP3D=$top_srcdir/tests/fakepop3d.py
GENMAIL=$top_srcdir/tests/lib/genmail.py
DAEMON_SOCK=${DAEMON_SOCK:-$T/run/control.sock}
DAEMON_STATE=$T/state
DAEMON_LOG=$T/daemon.log
DAEMON_PID=
FAKE_PORT=
FAKE_PID=
if [ "$(id -u)" = 0 ]; then
  DAEMON_ACCOUNT_USER=${DAEMON_ACCOUNT_USER-nobody}
else
  DAEMON_ACCOUNT_USER=
fi
if [ -n "$DAEMON_ACCOUNT_USER" ]; then
  chmod 0711 "$T"
  mkdir -p "$T/mail"
  chown "$DAEMON_ACCOUNT_USER:$(id -g "$DAEMON_ACCOUNT_USER")" "$T/mail"
fi

daemon_require() {
  local b
  for b in "$DAEMON" "$POP3CTL"; do
    [ -x "$b" ] || t_skip "$b not built (make pop3syncd pop3ctl)"
  done
  [ -n "$PYTHON" ] || t_skip "python3 not found"
}

# Print the end of the daemon's log on stderr (for failure reports).
daemon_dump_log() {
  if [ -s "$DAEMON_LOG" ]; then
    echo "---- $DAEMON_LOG (last 40 lines)" >&2
    tail -n 40 "$DAEMON_LOG" >&2
  fi
}

# d_fail MSG: like t_fail, with the daemon's log.
d_fail() {
  daemon_dump_log
  t_fail "$@"
}

# fake_start NAME [fakepop3d options...]: start a fake server (its record goes to
# $T/NAME.rec, its stderr to $T/NAME.log); sets FAKE_PORT and FAKE_PID.
fake_start() {
  local name=$1 i
  shift
  rm -f "$T/$name.port"
  t_bg "$PYTHON" "$FAKEPOP3D" --port-file "$T/$name.port" --record "$T/$name.rec" \
    --lifetime 300 "$@" >/dev/null 2>"$T/$name.log" </dev/null
  FAKE_PID=$T_BG_PID
  for i in $(seq 1 200); do
    [ -s "$T/$name.port" ] && break
    t_alive "$FAKE_PID" || { cat "$T/$name.log" >&2; t_fail "fakepop3d $name died"; }
    sleep 0.05
  done
  [ -s "$T/$name.port" ] || t_fail "fakepop3d $name did not start"
  FAKE_PORT=$(cat "$T/$name.port")
}

# mail_gen DIR N [options]: N genmail messages in DIR.
mail_gen() {
  local dir=$1 n=$2
  shift 2
  "$PYTHON" "$GENMAIL" "$dir" "$n" "$@" >/dev/null || t_fail "genmail.py $dir $n failed"
}

# daemon_conf FILE: the config from stdin, mode 0600 (it may hold a password).
daemon_conf() {
  local add=
  [ -n "$DAEMON_ACCOUNT_USER" ] && add=" user = \"$DAEMON_ACCOUNT_USER\";"
  (umask 077 && sed -e "/user *=/b" -e "s/\(name *= *\"[^\"]*\" *;\)/\1$add/" >"$1.tmp") &&
    chmod 0600 "$1.tmp" && mv -f "$1.tmp" "$1" || t_fail "cannot write $1"
}

# The global settings every test config starts with.
daemon_conf_globals() {
  cat <<EOF
control_socket = "$DAEMON_SOCK";
state_dir = "$DAEMON_STATE";
timeout = 20;
EOF
}

ctl() {
  "$POP3CTL" -s "$DAEMON_SOCK" "$@"
}

# daemon_start CONF [args...]: start pop3syncd -c CONF in the background (stderr appended to
# $DAEMON_LOG) and wait (bounded) until `pop3ctl status` is answered.
daemon_start() {
  local conf=$1 i
  shift
  echo "==== daemon_start $conf $*" >>"$DAEMON_LOG"
  t_bg "$DAEMON" -c "$conf" "$@" >>"$DAEMON_LOG" 2>&1 </dev/null
  DAEMON_PID=$T_BG_PID
  for i in $(seq 1 200); do
    t_alive "$DAEMON_PID" || d_fail "pop3syncd exited while starting"
    if [ -S "$DAEMON_SOCK" ] && ctl status --json >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.05
  done
  d_fail "pop3syncd did not answer on $DAEMON_SOCK within 10 s"
}

# daemon_stop [SECS]: SIGTERM, wait up to SECS (default 30) for the exit; prints nothing and
# returns the exit status (or 124 if it is still running: then it is killed).
daemon_stop() {
  local secs=${1:-30} i rc
  [ -n "$DAEMON_PID" ] || return 0
  kill -TERM "$DAEMON_PID" 2>/dev/null
  for ((i = 0; i < secs * 10; i++)); do
    t_alive "$DAEMON_PID" || break
    sleep 0.1
  done
  if t_alive "$DAEMON_PID"; then
    t_kill "$DAEMON_PID"
    DAEMON_PID=
    return 124
  fi
  wait "$DAEMON_PID" 2>/dev/null
  rc=$?
  DAEMON_PID=
  return $rc
}

# daemon_status_json [FILE] [ACCOUNT]: the status document into FILE (default
# $T/status.json); fails the test if pop3ctl fails or the output is not JSON.
daemon_status_json() {
  local f=${1:-$T/status.json} rc
  shift || true
  ctl status --json "$@" >"$f" 2>"$f.err"
  rc=$?
  [ "$rc" = 0 ] || { cat "$f.err" >&2; d_fail "pop3ctl status --json exited $rc"; }
  "$PYTHON" -c 'import json,sys; json.load(open(sys.argv[1]))' "$f" 2>"$f.err" ||
    { cat "$f" "$f.err" >&2; d_fail "pop3ctl status --json: not JSON"; }
}

# jq_py FILE EXPR: print the python expression EXPR, where d is the JSON document in FILE
# and acc(NAME) is the account NAME's object (None if absent). Non-strings are printed as
# JSON (true/false/null).
jq_py() {
  "$PYTHON" - "$1" "$2" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
def acc(name):
    for a in d.get("accounts", []):
        if a.get("name") == name:
            return a
    return None
v = eval(sys.argv[2])
print(v if isinstance(v, str) else json.dumps(v))
EOF
}

# wait_until SECS CMD...: run CMD every 0.1 s until it succeeds; 1 after SECS seconds.
wait_until() {
  local secs=$1 i
  shift
  for ((i = 0; i < secs * 10; i++)); do
    "$@" && return 0
    sleep 0.1
  done
  "$@"
}

_maildir_has() {
  [ "$(t_maildir_count "$1")" -ge "$2" ]
}

# wait_maildir DIR N SECS: until DIR holds at least N messages (1 on timeout).
wait_maildir() {
  wait_until "$3" _maildir_has "$1" "$2"
}

# same_messages ORIGDIR MAILDIR [--subset]: the sha256 multiset of the files in ORIGDIR
# equals that of MAILDIR/new + MAILDIR/cur (--subset: every delivered file is one of the
# originals, each at most once). Prints the differences on stderr.
same_messages() {
  "$PYTHON" - "$@" <<'EOF'
import collections, hashlib, os, sys
orig, md = sys.argv[1], sys.argv[2]
subset = "--subset" in sys.argv[3:]
def digests(dirs):
    c = collections.Counter()
    names = {}
    for d in dirs:
        if not os.path.isdir(d):
            continue
        for n in sorted(os.listdir(d)):
            p = os.path.join(d, n)
            if n.startswith(".") or not os.path.isfile(p):
                continue
            with open(p, "rb") as f:
                h = hashlib.sha256(f.read()).hexdigest()
            c[h] += 1
            names.setdefault(h, p)
    return c, names
want, wn = digests([orig])
got, gn = digests([os.path.join(md, "new"), os.path.join(md, "cur")])
bad = False
for h in got:
    if got[h] > want.get(h, 0):
        print("delivered %d time(s), expected %d: %s" % (got[h], want.get(h, 0), gn[h]),
              file=sys.stderr)
        bad = True
if not subset:
    for h in want:
        if got.get(h, 0) < want[h]:
            print("missing: %s" % wn[h], file=sys.stderr)
            bad = True
sys.exit(1 if bad else 0)
EOF
}

# covers_messages ORIGDIR MAILDIR: every original is in MAILDIR at least once and every
# delivered file is one of the originals (duplicates allowed).
covers_messages() {
  "$PYTHON" - "$@" <<'EOF'
import hashlib, os, sys
orig, md = sys.argv[1], sys.argv[2]
def digests(dirs):
    out = {}
    for d in dirs:
        for n in sorted(os.listdir(d)):
            p = os.path.join(d, n)
            if os.path.isfile(p) and not n.startswith("."):
                with open(p, "rb") as f:
                    out.setdefault(hashlib.sha256(f.read()).hexdigest(), p)
    return out
want = digests([orig])
got = digests([os.path.join(md, "new"), os.path.join(md, "cur")])
bad = False
for h, p in got.items():
    if h not in want:
        print("delivered file is no original (partial or corrupt?): %s" % p, file=sys.stderr)
        bad = True
for h, p in want.items():
    if h not in got:
        print("never delivered: %s" % p, file=sys.stderr)
        bad = True
sys.exit(1 if bad else 0)
EOF
}

# sum of the sizes of the delivered files of MAILDIR.
maildir_bytes() {
  local n=0 f
  for f in "$1"/new/* "$1"/cur/*; do
    [ -f "$f" ] && n=$((n + $(stat -c %s "$f")))
  done
  echo "$n"
}

# maildir_tmp_empty DIR: true when DIR/tmp holds no file.
maildir_tmp_empty() {
  [ -z "$(find "$1/tmp" -type f 2>/dev/null)" ]
}

_daemon_gone() {
  ! t_alive "$1"
}

# daemon_kill9: SIGKILL the daemon and wait (bounded) until it is gone. The job is disowned
# first so that bash does not print "Killed" for it.
daemon_kill9() {
  local pid=$DAEMON_PID
  [ -n "$pid" ] || return 0
  disown "$pid" 2>/dev/null
  kill -KILL "$pid" 2>/dev/null
  wait_until 10 _daemon_gone "$pid" || t_fail "pop3syncd $pid survived SIGKILL"
  DAEMON_PID=
}

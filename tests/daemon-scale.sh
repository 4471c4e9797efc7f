#!/bin/bash
# daemon-scale.sh -- one pop3syncd with 50 accounts and max_parallel = 4:
#   - `pop3ctl fetch --all` runs every account: each gets exactly its own 3 messages, and the
#     status shows every account with last_run ok and the expected totals;
#   - max_parallel holds: the fake servers' session records (start, duration) never show more
#     than 4 sessions at once, and no status taken during the runs shows more than 4 accounts
#     fetching.
# The fake server has one mailbox lock (a second concurrent login gets [IN-USE]), so every
# account has a fake server of its own: 50 fakepop3d servers (in one python process).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-120}
t_init daemon-scale
. "$top_srcdir/tests/lib/daemon.sh"
daemon_require

N=50
PAR=4
# Each command is answered 50 ms late, so a session lasts a few hundred ms: a fifth session
# at once would overlap the others by far more than the clock slop allowed below.
LATENCY=50
SLOP=0.05

# 3 messages per account, different for each (seed = 100 + account number).
"$PYTHON" - "$top_srcdir/tests/lib" "$T" "$N" <<'EOF' || t_fail "generating the messages"
import os, shutil, sys
sys.path.insert(0, sys.argv[1])
import genmail
t, n = sys.argv[2], int(sys.argv[3])
for i in range(1, n + 1):
    orig = os.path.join(t, "orig", "%02d" % i)
    genmail.generate(orig, 3, seed=100 + i, varied=True)
    shutil.copytree(orig, os.path.join(t, "srv", "%02d" % i))
EOF

# The 50 servers run in one python process (fakepop3d's own Server class, one instance per
# account, each with its own port, mailbox lock and record): 50 interpreters would take
# longer to start than the whole test on a loaded machine.
cat >"$T/multi.py" <<'EOF2'
import asyncio, os, signal, sys
sys.path.insert(0, sys.argv[1])
import fakepop3d
t, n, latency = sys.argv[2], int(sys.argv[3]), sys.argv[4]
async def run():
    srvs = []
    for i in range(1, n + 1):
        opts = fakepop3d.parse_args([
            "--maildir", os.path.join(t, "srv", "%02d" % i), "--latency", latency,
            "--port-file", os.path.join(t, "srv-%02d.port" % i),
            "--record", os.path.join(t, "srv-%02d.rec" % i), "--lifetime", "300"])
        srvs.append(fakepop3d.Server(opts))
    tasks = [asyncio.create_task(s.main()) for s in srvs]
    while any(s.stop is None for s in srvs):
        await asyncio.sleep(0.01)
    # Each Server.main took SIGTERM for itself; one signal must stop them all.
    def stop_all():
        for s in srvs:
            s.stop.set()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_all)
    await asyncio.gather(*tasks)
asyncio.run(run())
EOF2
t_bg "$PYTHON" "$T/multi.py" "$top_srcdir/tests" "$T" "$N" "$LATENCY" \
  >/dev/null 2>"$T/servers.log" </dev/null
SERVERS_PID=$T_BG_PID
_all_ports() {
  local i
  t_alive "$SERVERS_PID" || { cat "$T/servers.log" >&2; t_fail "the fake servers died"; }
  for i in $(seq -w 1 $N); do
    [ -s "$T/srv-$i.port" ] || return 1
  done
}
wait_until 30 _all_ports || t_fail "the fake servers did not start within 30 s"

CONF=$T/etc/pop3sync.conf
mkdir -p "$T/etc"
{
  daemon_conf_globals
  echo "interval = 3600;"
  echo "max_parallel = $PAR;"
  echo "accounts = ("
  sep=
  for i in $(seq -w 1 $N); do
    printf '%s  { name = "acct%s"; server = "tcp:test@127.0.0.1:%s"; maildir = "%s";\n' \
      "$sep" "$i" "$(cat "$T/srv-$i.port")" "$T/mail/$i"
    printf '    password_command = "echo secret"; }\n'
    sep=,
  done
  echo ");"
} | daemon_conf "$CONF"

daemon_start "$CONF"

# fetch --all in the background; meanwhile sample the status.
"$POP3CTL" -s "$DAEMON_SOCK" fetch --all >"$T/fetch.out" 2>"$T/fetch.err" &
FETCH_PID=$!
t_on_exit "t_kill $FETCH_PID"
max_fetching=0
samples=0
while t_alive "$FETCH_PID"; do
  if ctl status --json >"$T/sample.json" 2>/dev/null; then
    n=$(jq_py "$T/sample.json" "sum(1 for a in d['accounts'] if a['state'] == 'fetching')")
    [ "$n" -gt "$max_fetching" ] && max_fetching=$n
    samples=$((samples + 1))
  fi
  sleep 0.05
done
wait "$FETCH_PID"
rc=$?
t_log "status sampled $samples times during the runs; at most $max_fetching accounts fetching"
t_assert_eq "$rc" 0 "fetch --all: exit status ($(head -n 5 "$T/fetch.err"))"
[ "$max_fetching" -le "$PAR" ] || d_fail "$max_fetching accounts fetching at once (max_parallel $PAR)"
t_assert_eq "$(wc -l <"$T/fetch.out")" "$N" "fetch --all: result lines"
# An account whose first scheduled poll was already running reports the run after it (0).
bad=$(grep -Ev '^acct[0-9]+: ok, (3|0) messages, [0-9]+ bytes$' "$T/fetch.out")
[ -z "$bad" ] || d_fail "fetch --all: unexpected result lines: $bad"

# Every account has exactly its own messages, the servers kept none, and the status shows
# every account ok with the totals of what was delivered.
daemon_status_json "$T/status.json"
"$PYTHON" - "$T/status.json" "$T" "$N" <<'EOF' || d_fail "deliveries or status after fetch --all"
import collections, hashlib, json, os, sys
d = json.load(open(sys.argv[1]))
t, n = sys.argv[2], int(sys.argv[3])
def files(*dirs):
    out = []
    for x in dirs:
        if os.path.isdir(x):
            out += [os.path.join(x, f) for f in sorted(os.listdir(x))
                    if os.path.isfile(os.path.join(x, f))]
    return out
def digests(paths):
    return collections.Counter(hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths)
accts = {a["name"]: a for a in d["accounts"]}
names = ["acct%02d" % i for i in range(1, n + 1)]
bad = []
if sorted(accts) != names:
    bad.append("accounts in the status: %s" % sorted(accts))
for i, name in enumerate(names, 1):
    md = os.path.join(t, "mail", "%02d" % i)
    got = files(os.path.join(md, "new"), os.path.join(md, "cur"))
    want = files(os.path.join(t, "orig", "%02d" % i))
    if digests(got) != digests(want):
        bad.append("%s: delivered %d files, not exactly its 3 originals" % (name, len(got)))
    if os.listdir(os.path.join(t, "srv", "%02d" % i)):
        bad.append("%s: messages left on the server" % name)
    a = accts.get(name)
    if a is None:
        continue
    size = sum(os.path.getsize(p) for p in got)
    lr = a["last_run"] or {}
    if lr.get("result") != "ok":
        bad.append("%s: last_run %r" % (name, lr))
    if a["state"] != "idle":
        bad.append("%s: state %r" % (name, a["state"]))
    if (a["total_messages"], a["total_bytes"]) != (len(got), size):
        bad.append("%s: totals %r %r, delivered %d %d" % (name, a["total_messages"],
                                                        a["total_bytes"], len(got), size))
    if a["consecutive_failures"] != 0:
        bad.append("%s: consecutive_failures %r" % (name, a["consecutive_failures"]))
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF

# The servers' view: a session is recorded when it ends; wait until each server has one.
_all_recs() {
  local i
  for i in $(seq -w 1 $N); do
    [ -s "$T/srv-$i.rec" ] || return 1
  done
}
wait_until 20 _all_recs || d_fail "some server recorded no session"
# Stop the daemon first, so that no session is still open while the records are read.
daemon_stop 30
t_assert_eq "$?" 0 "exit status after SIGTERM"
"$PYTHON" - "$T" "$N" "$PAR" "$SLOP" <<'EOF' || t_fail "max_parallel was not respected"
import glob, json, os, sys
t, n, par, slop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
sessions = []
for i in range(1, n + 1):
    recs = [json.loads(l) for l in open(os.path.join(t, "srv-%02d.rec" % i))]
    got = sum(len(r["retrieved"]) for r in recs if r["committed"])
    if got != 3:
        sys.exit("server %02d: %d messages retrieved in committed sessions, expected 3" % (i, got))
    for r in recs:
        if not r["authenticated"]:
            sys.exit("server %02d: a session did not log in: %r" % (i, r))
        sessions.append((r["start"], r["start"] + r["duration"], i))
# Sweep: at each session start, count the sessions that started before it and end later
# than it by more than the slop (two processes' clocks are one clock, but each notices the
# end of its connection a little late).
worst = 0
for s, e, i in sessions:
    live = [x for x in sessions if x[0] <= s and x[1] - slop > s]
    if len(live) > worst:
        worst, at = len(live), (s, sorted(x[2] for x in live))
print("# %d sessions; at most %d at once" % (len(sessions), worst), file=sys.stderr)
if worst > par:
    sys.exit("%d sessions at once at %.3f (servers %s); max_parallel is %d" % (worst, at[0], at[1], par))
if len(sessions) < n:
    sys.exit("only %d sessions" % len(sessions))
EOF
t_log "daemon-scale: all checks passed"
exit 0

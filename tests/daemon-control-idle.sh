#!/bin/bash
# daemon-control-idle.sh -- the control socket's table under load (doc/control-protocol.md,
# "Limits and timeouts"), against a running pop3syncd with its real timeouts (10 s idle):
#   - of 33 clients sending `fetch ACCOUNT` during a long run, exactly one is refused at once
#     ("waiting for a run", exit 75); the 32 others wait;
#   - with those 32 waiting, 100 idle connections do not lock `pop3ctl status` out: it answers
#     (exit 0, the status document) within 15 s;
#   - an idle connection is closed by the daemon about 10 s after it connected (EOF, not
#     earlier: not evicted), and so is every idle connection of the flood;
#   - the waiting clients are not dropped by the idle timer: each gets its fetch result, more
#     than 10 s after asking.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-180}
t_init daemon-control-idle
. "$top_srcdir/tests/lib/daemon.sh"
daemon_require

# The fake server answers each command 2.5 s late: a run takes well over the idle timeout.
mkdir -p "$T/srv" "$T/etc"
mail_gen "$T/srv" 2 --seed 11
fake_start slow --maildir "$T/srv" --latency 2500
{
  daemon_conf_globals
  cat <<EOF
interval = 3600;
accounts = (
  { name = "slow";
    server = "tcp:test@127.0.0.1:$FAKE_PORT";
    maildir = "$T/mail/slow";
    password_command = "echo secret"; }
);
EOF
} | daemon_conf "$T/etc/pop3sync.conf"
daemon_start "$T/etc/pop3sync.conf"

cat >"$T/idle.py" <<'EOF'
import json, select, socket, subprocess, sys, time

sock_path, pop3ctl, account = sys.argv[1], sys.argv[2], sys.argv[3]
IDLE = 10.0      # the daemon's idle timeout
WAITING = 32     # clients that may wait for a run
FLOOD = 100

def fail(msg):
    print("FAIL: daemon-control-idle: " + msg, file=sys.stderr)
    sys.exit(1)

def note(msg):
    print("# " + msg, file=sys.stderr)

def connect():
    # Non-blocking: with the listen backlog full a Unix socket says EAGAIN at once, where a
    # blocking connect could wait for ever; retry for up to 5 s.
    deadline = time.monotonic() + 5
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(sock_path)
            return s
        except BlockingIOError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)

def read_line(s, timeout):
    """One line (bytes, with its newline), None on EOF/reset, "timeout" after timeout s."""
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout"
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return "timeout"
        except (ConnectionResetError, BrokenPipeError):
            return None
        if not chunk:
            return None
        buf += chunk
    return buf

# ---- 33 fetches: one is refused at once, whichever the daemon reads last.
request = ("fetch %s\n" % account).encode()
waiters = []
for i in range(WAITING + 1):
    s = connect()
    s.sendall(request)
    waiters.append((s, time.monotonic()))
answered = []
deadline = time.monotonic() + 3
while time.monotonic() < deadline and len(answered) < 2:
    ready, _, _ = select.select([w[0] for w in waiters if w[0] not in answered], [], [], 0.1)
    for s in ready:
        answered.append(s)
if len(answered) != 1:
    fail("%d of %d fetch clients were answered at once, expected exactly 1"
         % (len(answered), WAITING + 1))
line = read_line(answered[0], 5)
if not isinstance(line, bytes):
    fail("the refused fetch client got no line: %r" % (line,))
reply = json.loads(line)
if reply.get("exit") != 75 or "waiting for a run" not in reply.get("error", ""):
    fail("the 33rd fetch client: unexpected reply %r" % line)
note("33rd waiter: %s" % line.decode().strip())
# It is still served: a quick request on the same connection works.
answered[0].sendall(b"status\n")
line = read_line(answered[0], 10)
if not isinstance(line, bytes) or json.loads(line).get("accounts") is None:
    fail("the refused fetch client: status on the same connection: %r" % (line,))
answered[0].close()
waiters = [w for w in waiters if w[0] is not answered[0]]

# ---- 100 idle connections, then pop3ctl status within 15 s.
flood = []
for i in range(FLOOD):
    try:
        flood.append((connect(), time.monotonic()))
    except OSError as e:
        fail("idle connection %d: connect: %s" % (i, e))
start = time.monotonic()
ok = False
last = ""
while time.monotonic() - start < 15:
    try:
        p = subprocess.run([pop3ctl, "-s", sock_path, "status", "--json"], capture_output=True,
                           timeout=max(1, 15 - (time.monotonic() - start)))
    except subprocess.TimeoutExpired:
        last = "timed out"
        break
    last = "exit %d: %s" % (p.returncode, p.stderr.decode().strip())
    if p.returncode == 0:
        try:
            doc = json.loads(p.stdout)
            names = [a["name"] for a in doc["accounts"]]
        except (ValueError, KeyError, TypeError) as e:
            fail("pop3ctl status --json: not a status document (%s): %r" % (e, p.stdout[:200]))
        if names != [account] or not isinstance(doc["daemon"]["pid"], int):
            fail("pop3ctl status --json: unexpected content %r" % p.stdout[:300])
        ok = True
        break
    time.sleep(0.2)
took = time.monotonic() - start
if not ok:
    fail("pop3ctl status failed for %.1f s with %d idle connections open (%s)"
         % (took, FLOOD, last))
note("pop3ctl status answered after %.2f s with %d idle connections open" % (took, FLOOD))

# ---- an idle connection is closed by the daemon after about 10 s, not before.
probe = connect()
t0 = time.monotonic()
line = read_line(probe, IDLE + 8)
took = time.monotonic() - t0
if line == "timeout":
    fail("an idle connection was still open after %.1f s" % took)
if line is not None:
    fail("an idle connection got an unasked-for line: %r" % line)
if took < IDLE - 1:
    fail("an idle connection was closed after %.1f s, before the idle timeout" % took)
note("an idle connection was closed after %.2f s" % took)
probe.close()

# Every connection of the flood is closed by now (evicted, or idle for 10 s).
still = 0
for s, t in flood:
    if read_line(s, max(0.1, t + IDLE + 3 - time.monotonic())) == "timeout":
        still += 1
    s.close()
if still:
    fail("%d of %d idle connections still open %.0f s after they connected"
         % (still, FLOOD, IDLE + 3))

# ---- the waiting clients are still there and get their results.
slowest = 0.0
for s, t in waiters:
    line = read_line(s, max(1, t + 120 - time.monotonic()))
    if line is None:
        fail("a client waiting for a fetch was disconnected after %.1f s" % (time.monotonic() - t))
    if line == "timeout":
        fail("a client waiting for a fetch got no reply within 120 s")
    reply = json.loads(line)
    results = reply.get("results") or [{}]
    if results[0].get("name") != account or "exit" not in reply:
        fail("fetch reply: %r" % line)
    slowest = max(slowest, time.monotonic() - t)
    s.close()
if slowest < IDLE + 1:
    fail("the fetches took only %.1f s: the case needs runs longer than the idle timeout"
         % slowest)
note("%d waiting clients got their results, the last after %.1f s" % (len(waiters), slowest))
EOF

"$PYTHON" "$T/idle.py" "$DAEMON_SOCK" "$POP3CTL" slow || d_fail "see above"
t_alive "$DAEMON_PID" || d_fail "the daemon died"
ctl status >/dev/null 2>&1 || d_fail "pop3ctl status after the test"
grep -q 'closing the one idle' "$DAEMON_LOG" || d_fail "no eviction in the daemon's log"
daemon_stop 30
t_assert_eq "$?" 0 "exit status after SIGTERM"
t_log "daemon-control-idle: all checks passed"
exit 0

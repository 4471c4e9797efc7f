#!/bin/bash
# delayproxy.sh -- the benchmark's latency proxy (bench/delayproxy.c) delays what it should.
#
# Through the proxy at RTT=200 ms, to a small server that greets on accept and echoes:
#   - connect + greeting takes >= 2 RTT (the connect is charged one RTT, the greeting one);
#   - a request/response round trip takes >= RTT;
#   - 1 MB sent in 64 KiB writes comes back intact, in well under one RTT per chunk (data in
#     flight keeps flowing: the proxy is a pipe of length RTT/2, not a sleep per chunk);
#   - on SIGTERM the totals line counts every byte in both directions.
# Prints how far above the ideal each measured time is.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-60}
t_init delayproxy

PROXY=${DELAYPROXY:-$top_builddir/bench/delayproxy}
[ -x "$PROXY" ] || t_fail "$PROXY not built (make bench/delayproxy)"
[ -n "$PYTHON" ] || t_skip "python3 not found"
RTT=200

# The server: greets each connection with "HELLO\n", then echoes every byte back.
cat >"$T/server.py" <<'EOF'
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(8)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("%d\n" % s.getsockname()[1])
import os
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.sendall(b"HELLO\n")
    while True:
        b = c.recv(65536)
        if not b:
            break
        c.sendall(b)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
EOF

cat >"$T/client.py" <<'EOF'
import hashlib, os, socket, sys, time
port, rtt = int(sys.argv[1]), float(sys.argv[2]) / 1000
fails = []
def check(what, took, lo, hi):
    print("# %-34s %7.1f ms (ideal %6.1f ms, +%.1f ms)" % (what, took * 1000, lo * 1000,
                                                           (took - lo) * 1000))
    if took < lo:
        fails.append("%s took %.1f ms < %.1f ms" % (what, took * 1000, lo * 1000))
    if took > hi:
        fails.append("%s took %.1f ms > %.1f ms" % (what, took * 1000, hi * 1000))
def recv_exact(c, n):
    parts, got = [], 0
    while got < n:
        b = c.recv(min(1 << 20, n - got))
        if not b:
            raise SystemExit("FAIL: connection closed after %d of %d bytes" % (got, n))
        parts.append(b)
        got += len(b)
    return b"".join(parts)
t0 = time.monotonic()
c = socket.create_connection(("127.0.0.1", port), timeout=20)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
g = recv_exact(c, 6)
t1 = time.monotonic()
assert g == b"HELLO\n", g
check("connect + greeting (2 RTT)", t1 - t0, 2 * rtt, 2 * rtt + 1.0)
for i in range(3):
    t2 = time.monotonic()
    c.sendall(b"PING %d\n" % i)
    r = recv_exact(c, 7)
    t3 = time.monotonic()
    assert r == b"PING %d\n" % i, r
    check("request/response %d (1 RTT)" % i, t3 - t2, rtt, rtt + 1.0)
data = os.urandom(1 << 20)
t4 = time.monotonic()
# Send in 64 KiB writes while reading the echo (sendall of 1 MB could fill both directions'
# buffers and block before anything is read back).
import threading
def sender():
    for off in range(0, len(data), 65536):
        c.sendall(data[off:off + 65536])
th = threading.Thread(target=sender)
th.start()
back = recv_exact(c, len(data))
th.join()
t5 = time.monotonic()
if hashlib.sha256(back).digest() != hashlib.sha256(data).digest():
    fails.append("1 MB echo differs")
# A proxy that slept RTT/2 per chunk would need 16 chunks x 2 directions x 100 ms.
check("1 MB echo (1 RTT + transfer)", t5 - t4, rtt, rtt + 1.5)
c.close()
for f in fails:
    print("FAIL: " + f)
sys.exit(1 if fails else 0)
EOF

t_bg "$PYTHON" "$T/server.py" "$T/server.port"
for _ in $(seq 1 100); do [ -s "$T/server.port" ] && break; sleep 0.05; done
[ -s "$T/server.port" ] || t_fail "echo server did not start"
SPORT=$(cat "$T/server.port")

t_bg "$PROXY" --rtt "$RTT" --port-file "$T/proxy.port" --stats "$T/stats" \
  "127.0.0.1:$SPORT" >"$T/proxy.out" 2>"$T/proxy.err"
PROXY_PID=$T_BG_PID
for _ in $(seq 1 100); do [ -s "$T/proxy.port" ] && break; sleep 0.05; done
[ -s "$T/proxy.port" ] || { cat "$T/proxy.err" >&2; t_fail "proxy did not start"; }
PPORT=$(cat "$T/proxy.port")
t_assert_eq "$(head -1 "$T/proxy.out")" "$PPORT" "port printed on stdout"

"$PYTHON" "$T/client.py" "$PPORT" "$RTT" >&2 || t_fail "timings or data through the proxy"

# Totals: c2s = 3 x 7 bytes of PING + 1 MiB; s2c = that plus the 6-byte greeting.
kill -TERM "$PROXY_PID"
for _ in $(seq 1 50); do t_alive "$PROXY_PID" || break; sleep 0.1; done
t_alive "$PROXY_PID" && t_fail "proxy still running 5 s after SIGTERM"
wait "$PROXY_PID" 2>/dev/null
rc=$?
t_assert_eq "$rc" 0 "proxy exit status after SIGTERM"
t_assert_eq "$(cat "$T/stats")" "connections 1 c2s $((21 + 1048576)) s2c $((27 + 1048576))" \
  "proxy totals"

# Usage errors are 64.
"$PROXY" --rtt -5 127.0.0.1:1 >/dev/null 2>&1
t_assert_eq "$?" 64 "exit status for a negative RTT"
"$PROXY" >/dev/null 2>&1
t_assert_eq "$?" 64 "exit status without a target"
echo "# delayproxy: ok"
exit 0

#!/bin/bash
# dl-drip.sh -- a server that drips one byte every 0.5 s cannot hold `pop3 dl --timeout 2`:
# a dripped greeting, status line (of PASS, of RETR), RETR body, UIDL listing, and TLS
# handshake each end the run with 75 ("timed out") within 3 x 2 s plus a start-up margin,
# without QUIT, nothing deleted on the server and nothing (not even a partial file) in the
# Maildir.  A slow but adequate body (4 KiB/s, over the 1 KiB/s floor) still completes.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
t_init dl-drip
. "$top_srcdir/tests/lib/fake.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"

PW=(--password-command 'echo secret')
P3_LIMIT=30
LIMIT_MS=8000 # 3 x --timeout, plus 2 s for starting processes on a slow machine

mkmsgs "$T/orig" 5

serve() { # serve NAME ARGS...: a fresh copy of the originals, served by a new fakepop3d
  local name=$1
  shift
  rm -rf "$T/$name.srv"
  cp -a "$T/orig" "$T/$name.srv"
  fake_start "$name" --maildir "$T/$name.srv" "$@"
}

# dripped NAME PHRASE SPEC [OPTIONS...]: pop3 dl --timeout 2 SPEC into $T/md-NAME must end
# with 75 in time, saying "timed out" and PHRASE, having saved and deleted nothing.
dripped() {
  local name=$1 phrase=$2 spec=$3 t0 ms
  shift 3
  t0=$(date +%s%N)
  p3 dl "${PW[@]}" --timeout 2 "$@" "$spec" "$T/md-$name"
  ms=$((($(date +%s%N) - t0) / 1000000))
  p3_expect 75 "$name"
  t_log "$name: exit 75 after $ms ms: $(head -1 "$T/err")"
  [ "$ms" -le "$LIMIT_MS" ] || t_fail "$name: took $ms ms, more than $LIMIT_MS"
  grep -q "timed out" "$T/err" || t_fail "$name: no 'timed out' on stderr: $(cat "$T/err")"
  grep -qF "$phrase" "$T/err" || t_fail "$name: no '$phrase' on stderr: $(cat "$T/err")"
  t_assert_eq "$(t_maildir_count "$T/md-$name")" 0 "$name: files delivered"
  [ -z "$(ls -A "$T/md-$name/tmp" 2>/dev/null)" ] ||
    t_fail "$name: partial files left in tmp/: $(ls -A "$T/md-$name/tmp" | head -3)"
  t_assert_eq "$(ls "$T/$name.srv" | wc -l)" 5 "$name: files on the server"
}

# The fake server records a session when it ends: the client's close ends the drip.
no_quit() {
  fake_wait_sessions 1
  t_assert_eq "$(fake_rec '[r["quit"], r["committed"], r["deleted"]]' 1)" "[false, false, []]" \
    "$1: [quit, committed, deleted]"
}

LINE="the status line was not complete within 2 s"
BODY="less than 1 KiB/s for 2 s"

# --- drips over plain TCP --------------------------------------------------------------------
serve greeting --drip greeting
dripped greeting "$LINE" "tcp:test@127.0.0.1:$FAKE_PORT"
no_quit greeting
fake_stop

serve pass --drip status --drip-cmd PASS
dripped pass "$LINE" "tcp:test@127.0.0.1:$FAKE_PORT"
no_quit pass
fake_stop

serve retrstatus --drip status --drip-cmd RETR
dripped retrstatus "$LINE" "tcp:test@127.0.0.1:$FAKE_PORT"
no_quit retrstatus
t_assert_eq "$(fake_rec 'r["retrieved"][:1]' 1)" "[1]" "retrstatus: RETR 1 answered"
fake_stop

serve body --drip body
dripped body "$BODY" "tcp:test@127.0.0.1:$FAKE_PORT"
no_quit body
fake_stop

serve uidl --drip body --drip-cmd UIDL
dripped uidl "$BODY" "tcp:test@127.0.0.1:$FAKE_PORT"
no_quit uidl
fake_stop

# --- a TLS handshake dripped by a proxy (server to client, one byte every 0.5 s) -------------
if command -v openssl >/dev/null; then
  C=$T/certs
  sh "$top_srcdir/tests/lib/mkcert.sh" "$C" || t_fail "mkcert.sh failed"
  cat >"$T/dripproxy.py" <<'EOF'
import os, socket, sys, threading, time
backend, portfile = int(sys.argv[1]), sys.argv[2]
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
with open(portfile + ".tmp", "w") as f:
    f.write("%d\n" % s.getsockname()[1])
os.rename(portfile + ".tmp", portfile)
def pipe(src, dst, drip):
    try:
        while True:
            b = src.recv(1 if drip else 65536)
            if not b:
                break
            dst.sendall(b)
            if drip:
                time.sleep(0.5)
    except OSError:
        pass
    for x in (src, dst):
        try:
            x.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
while True:
    c, _ = s.accept()
    b = socket.create_connection(("127.0.0.1", backend))
    threading.Thread(target=pipe, args=(c, b, False), daemon=True).start()
    threading.Thread(target=pipe, args=(b, c, True), daemon=True).start()
EOF
  serve handshake --ssl "$C/server.pem" "$C/server.key"
  t_bg "$PYTHON" "$T/dripproxy.py" "$FAKE_PORT" "$T/proxy.port"
  proxy_pid=$T_BG_PID
  for ((i = 0; i < 100; i++)); do
    [ -s "$T/proxy.port" ] && break
    sleep 0.05
  done
  [ -s "$T/proxy.port" ] || t_fail "the drip proxy did not start"
  dripped handshake "the TLS handshake did not complete within 2 s" \
    "ssl:test@127.0.0.1!localhost:$(cat "$T/proxy.port")" --ca-file "$C/ca.pem"
  t_kill "$proxy_pid"
  fake_stop
  # The fake server sees a session only once its handshake completed: never here.
  if [ -s "$FAKE_REC" ]; then
    t_assert_eq "$(fake_rec 'any(x["authenticated"] for x in recs)')" false \
      "handshake: a session logged in"
  fi
else
  t_log "TLS handshake drip skipped: no openssl"
fi

# --- slow but adequate: 4 KiB/s bodies complete ----------------------------------------------
mkmsgs "$T/slow" 2 10000
rm -rf "$T/slow.srv"
cp -a "$T/slow" "$T/slow.srv"
fake_start slow --maildir "$T/slow.srv" --body-rate 4096
t0=$(date +%s%N)
p3 dl "${PW[@]}" --timeout 2 "tcp:test@127.0.0.1:$FAKE_PORT" "$T/md-slow"
ms=$((($(date +%s%N) - t0) / 1000000))
p3_expect 0 "4 KiB/s bodies"
t_log "slow: 2 x 10 KB at 4 KiB/s delivered in $ms ms"
[ "$ms" -ge 3000 ] || t_fail "slow: took only $ms ms: --body-rate did not slow the bodies"
t_assert_eq "$(t_maildir_count "$T/md-slow")" 2 "slow: delivered"
t_assert_eq "$(ls -A "$T/slow.srv" | wc -l)" 0 "slow: files left on the server"
maildir_check "$T/md-slow"
check_no_loss slow "$T/slow" "$T/slow.srv" "$T/md-slow"
fake_stop

t_log "ok"

#!/bin/bash
# shellcheck disable=SC2119 # dovecot_count without arguments means user "test"
# dovecot-smoke.sh -- proves the real-server harness: a private Dovecot answers POP3 on its
# plaintext (+STLS) and implicit-TLS ports, lists the filled messages in order, retrieves them
# byte for byte, deletes them, refuses a wrong password, and stops without leftovers.
# Uses python's poplib only (not our client).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
t_init dovecot-smoke
. "$top_srcdir/tests/lib/dovecot.sh"

dovecot_start

# 20 messages: headers, an empty body line, a dot-leading line (dot-stuffing), a long body.
mkdir "$T/src"
for i in $(seq -w 1 20); do
  {
    printf 'From: sender%s@example.org\nTo: test@localhost\nSubject: message %s\n' "$i" "$i"
    printf 'Message-ID: <smoke-%s@pop3sync.test>\n\n' "$i"
    printf 'body of message %s\n.leading dot\n\n' "$i"
    seq 0 $((10#$i * 20 - 1)) | sed "s/.*/line & of message $i/"
  } >"$T/src/msg$i"
done
dovecot_fill "$T/src"
t_assert_eq "$(t_maildir_count "$DOVECOT_MAILDIR_TEST")" 20 "maildir file count after fill"
t_assert_eq "$(dovecot_count)" 20 "doveadm message count after fill"

# $1 = mode (plain|stls|pop3s), $2 = action (check|delete|badpass|badhost).
pop() {
  "$PYTHON" - "$@" <<'EOF'
import os, poplib, ssl, sys

mode, action = sys.argv[1], sys.argv[2]
host = "127.0.0.1"
ctx = ssl.create_default_context(cafile=os.environ["DOVECOT_CA"])
name = "wrong.example" if action == "badhost" else "localhost"
if mode == "plain":
    p = poplib.POP3(host, int(os.environ["DOVECOT_POP3_PORT"]), timeout=20)
elif mode == "stls":
    p = poplib.POP3(host, int(os.environ["DOVECOT_POP3_PORT"]), timeout=20)
    caps = p.capa()
    assert "STLS" in caps, caps
    # poplib.stls() has no server_hostname argument: it uses the host given above, an IP.
    # Wrap by hand so the name checked is "localhost", as our client will do.
    p._tls_established = False
    resp = p._shortcmd("STLS")
    p.sock = ctx.wrap_socket(p.sock, server_hostname=name)
    p.file = p.sock.makefile("rb")
    p._tls_established = True
else:
    import socket
    raw = socket.create_connection((host, int(os.environ["DOVECOT_POP3S_PORT"])), timeout=20)
    try:
        s = ctx.wrap_socket(raw, server_hostname=name)
    except ssl.SSLCertVerificationError as e:
        if action == "badhost":
            print("ok: wrong host name refused:", e.verify_message)
            sys.exit(0)
        raise
    if action == "badhost":
        sys.exit("certificate accepted for wrong.example")
    p = poplib.POP3.__new__(poplib.POP3)
    p.host, p.port, p._tls_established = host, s.getpeername()[1], True
    p.sock, p.file, p._debugging = s, s.makefile("rb"), 0
    p.welcome = p._getresp()

if action == "badpass":
    p.user(os.environ["DOVECOT_USER"])
    try:
        p.pass_("not-the-password")
    except poplib.error_proto as e:
        print("ok: wrong password refused:", e)
        sys.exit(0)
    sys.exit("wrong password accepted")

p.user(os.environ["DOVECOT_USER"])
p.pass_(os.environ["DOVECOT_PASS"])
count, size = p.stat()
src = os.path.join(os.environ["T"], "src")
names = sorted(os.listdir(src))
if action == "empty":
    assert count == 0, count
    p.quit()
    sys.exit(0)
assert count == len(names), (count, len(names))
_, listing, _ = p.list()
_, uidls, _ = p.uidl()
assert len(listing) == count and len(uidls) == count
assert len(set(u.split()[1] for u in uidls)) == count, "UIDLs not unique"
for i, n in enumerate(names, 1):
    with open(os.path.join(src, n), "rb") as f:
        want = f.read()
    _, lines, octets = p.retr(i)
    got = b"".join(l + b"\n" for l in lines)   # poplib strips CRLF and dot-stuffing
    if got != want:
        sys.exit("%s: message %d differs from %s" % (mode, i, n))
    # LIST size counts CRLF line ends.
    lsize = int(listing[i - 1].split()[1])
    assert lsize == len(want) + want.count(b"\n"), (i, lsize, len(want))
if action == "delete":
    for i in range(1, count + 1):
        p.dele(i)
p.quit()
print("ok: %s %s: %d messages" % (mode, action, count))
EOF
}

export T
pop plain check || t_fail "plaintext POP3 check"
pop stls check || t_fail "STLS check"
pop pop3s check || t_fail "pop3s check"
pop pop3s badhost || t_fail "certificate name check"
pop plain badpass || t_fail "wrong password check"
pop stls badpass || t_fail "wrong password check over STLS"
t_assert_eq "$(dovecot_count)" 20 "nothing deleted yet"
pop pop3s delete || t_fail "pop3s delete"
t_assert_eq "$(dovecot_count)" 0 "messages left after DELE+QUIT"
t_assert_eq "$(t_maildir_count "$DOVECOT_MAILDIR_TEST")" 0 "maildir files left after DELE+QUIT"
pop plain empty || t_fail "empty mailbox check"

# A second fill after the first was synced lists after it, still in name order.
dovecot_fill "$T/src"
pop stls check || t_fail "refill check"

# Stop: the master and every process it started must be gone.
pid=$DOVECOT_PID
kids=$(_t_descendants "$pid")
[ -n "$kids" ] || t_fail "dovecot master $pid has no children?"
dovecot_stop
for k in $pid $kids; do
  if t_alive "$k"; then
    ps -o pid,ppid,stat,user,args -p "$k" >&2
    t_fail "dovecot process $k still running after dovecot_stop"
  fi
done
t_port_open "$DOVECOT_POP3_PORT" && t_fail "port $DOVECOT_POP3_PORT still open after stop"
t_log "dovecot-smoke: all checks passed"
exit 0

#!/bin/bash
# torture-order.sh -- the durability order, seen from the system calls: `pop3 dl` under strace
# against 5 messages (plaintext, so the commands are visible in the socket writes). For each
# message: fsync(its tmp/ file) < rename into new/ < write of its "D ..." record to the journal
# (the --state file) < write of "DELE n" to the socket; before QUIT: fsync(new/, opened
# O_DIRECTORY) < write of the "B ..." line < fsync(journal) < write of "QUIT". The log is
# parsed by tests/lib/verify.py order (fds mapped through openat/socket/close).
# Also once with --window 1 --pipelining=off (one message at a time).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-120}
t_init torture-order
. "$top_srcdir/tests/lib/torture.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"
command -v strace >/dev/null || t_skip "strace is not installed"
strace -f -o /dev/null true 2>/dev/null || t_skip "strace cannot trace here (ptrace refused)"

tt_gen "$T/orig" 5
# The password from a netrc file: no password command, so no child process whose fds would
# mix with ours in the log.
printf 'machine 127.0.0.1 login test password secret\n' >"$T/netrc"
chmod 600 "$T/netrc"

SYSCALLS=fsync,fdatasync,rename,renameat,renameat2,link,linkat,unlink,write,writev,sendto,sendmsg
SYSCALLS=$SYSCALLS,openat,open,socket,close

order_case() {
  local name=$1
  shift
  tt_serve "$name" "$T/orig"
  echo 0 >"$T/$name.rcs"
  # LeakSanitizer cannot run under ptrace: in sanitizer builds, leaks are
  # checked by every other test.
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
    strace -f -tt -s 4096 -o "$T/$name.strace" \
    -e "trace=$SYSCALLS" \
    "$POP3" dl --netrc "$T/netrc" --state "$T/$name.state" "$@" \
    "tcp:test@127.0.0.1:$TT_PORT" "$T/$name.md" </dev/null >"$T/$name.out" 2>"$T/$name.err" ||
    { cat "$T/$name.err" >&2; t_fail "$name: pop3 dl under strace exited $?"; }
  tt_check "$name" "$T/orig"
  tt_verify order "$T/$name.strace" "$T/$name.state" "$T/$name.md" "$T/orig" >"$T/$name.order" ||
    { cat "$T/$name.order" >&2; t_fail "$name: durability order violated (log: $T/$name.strace)"; }
  sed "s/^/# $name: /" "$T/$name.order" >&2
  tt_unserve "$name"
}

order_case pipelined
order_case lockstep --window 1 --pipelining=off

# The checker must be able to fail: the same log without any fsync.
grep -v 'fsync' "$T/pipelined.strace" >"$T/bad.strace"
if tt_verify order "$T/bad.strace" "$T/pipelined.state" "$T/pipelined.md" "$T/orig" \
  >/dev/null 2>"$T/bad.err"; then
  t_fail "the order checker accepts a log without fsync"
fi
grep -q "never fsynced" "$T/bad.err" && grep -q "no fsync of the journal" "$T/bad.err" ||
  { cat "$T/bad.err" >&2; t_fail "checker: wrong complaint"; }
exit 0

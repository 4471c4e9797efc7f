#!/bin/bash
# torture-server.sh -- servers that misbehave, and nothing may be lost or delivered twice:
#   - -ERR on one RETR in the middle of the pipeline, in every session: the others are
#     delivered and deleted, that one stays; after 3 failed runs it is reported "stuck" and a
#     4th run does not RETR it at all, and exits 75 while it is stuck;
#   - a RETR reply cut in the middle of a line (--truncate-retr): 75, then a rerun completes;
#   - a reply that never ends (--stall-after-bytes, --timeout 2): "timed out", 75, rerun ok;
#   - no greeting (--timeout 2): 75; a close right after PASS: 75;
#   - a UID that comes back with other content (--uid-mode number, server restarted so the
#     numbering starts again, new message of another size): it is delivered;
#   - a desync on a server without PIPELINING (--dup-reply): nothing unsaved deleted; the next
#     session is lock-step (one command per round in the record, "lock-step" in -v);
#   - a server without UIDL: works, -v says so.
# After each case: reruns until the server is empty, then the exactly-once invariant.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-180}
t_init torture-server
. "$top_srcdir/tests/lib/torture.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"
start=$SECONDS

tt_gen "$T/orig" 20
tt_gen "$T/orig10" 10 --seed 7

expect_rc() { # expect_rc NAME RC WHAT
  [ "$TT_RC" = "$2" ] || tt_fail "$1" "$1: $3: pop3 exited $TT_RC, expected $2"
}

# ---- -ERR on RETR 7, every session ------------------------------------------------------------
name=err7
tt_serve $name "$T/orig" --err-on-retr 7 --fault-sessions all
tt_dl $name
expect_rc $name 75 "-ERR on RETR 7"
grep -q 'simulated failure' "$T/$name.lasterr" ||
  tt_fail $name "$name: stderr does not give the server's reason"
t_assert_eq "$(ls "$T/$name.srv")" 0007.eml "$name: left on the server"
t_assert_eq "$(t_maildir_count "$T/$name.md")" 19 "$name: delivered"
tt_verify deleted "$T/orig" "$T/$name.md" "$T/$name.rec" || tt_fail $name "$name: deleted unsaved"
# From now on the message is number 1: fail RETR 1 in every session, on the same port.
tt_restart $name --err-on-retr 1 --fault-sessions all
for run in 2 3; do
  tt_dl $name
  expect_rc $name 75 "run $run with -ERR on the RETR"
  t_assert_eq "$(ls "$T/$name.srv")" 0007.eml "$name: left on the server after run $run"
done
grep -q "stuck after 3 attempts" "$T/$name.lasterr" ||
  tt_fail $name "$name: run 3 does not report the message as stuck"
grep -q "A .* 3 " "$T/$name.state" || tt_fail $name "$name: no A record with 3 attempts"
tt_dl $name -v
expect_rc $name 75 "run 4, with a stuck message"
grep -q "stuck" "$T/$name.lasterr" || tt_fail $name "$name: run 4 does not report it stuck"
tt_wait_sessions $name 3
t_assert_eq "$(tt_rec $name '[c for c in r["commands"] if c.startswith("RETR")]')" "[]" \
  "$name: RETR commands in run 4"
t_assert_eq "$(tt_rec $name 'r["deleted"]')" "[]" "$name: deleted in run 4"
t_assert_eq "$(t_maildir_count "$T/$name.md")" 19 "$name: delivered after run 4"
# Once the server behaves again: a stuck message stays stuck (it is left alone), so the check
# is only that nothing was lost and nothing delivered twice.
tt_lost $name "$T/orig"
tt_verify check "$T/orig" "$T/$name.md" --what $name 2>&1 |
  grep -q "1 originals not delivered: 0007.eml" ||
  tt_fail $name "$name: not exactly the stuck message missing"
tt_unserve $name
t_log "$name: ok (75 75 75 75; stuck reported on run 3 and 4; run 4 sent no RETR)"

# ---- a RETR reply cut mid-line ---------------------------------------------------------------
name=trunc
tt_serve $name "$T/orig" --truncate-retr 5
tt_dl $name
expect_rc $name 75 "RETR 5 truncated"
tt_lost $name "$T/orig"
tt_verify deleted "$T/orig" "$T/$name.md" "$T/$name.rec" || tt_fail $name "$name: deleted unsaved"
tt_converge $name 3
tt_check $name "$T/orig"
tt_unserve $name
t_log "$name: ok ($(tr '\n' ' ' <"$T/$name.rcs"))"

# ---- a reply that never ends ---------------------------------------------------------------
name=stall
tt_serve $name "$T/orig" --stall-after-bytes 9000
t0=$SECONDS
tt_dl $name --timeout 2
expect_rc $name 75 "stalled reply"
grep -qi "timed out" "$T/$name.lasterr" || tt_fail $name "$name: no 'timed out' in the error"
[ $((SECONDS - t0)) -le 10 ] || tt_fail $name "$name: took $((SECONDS - t0)) s with --timeout 2"
tt_lost $name "$T/orig"
tt_converge $name 3
tt_check $name "$T/orig"
tt_unserve $name
t_log "$name: ok ($(tr '\n' ' ' <"$T/$name.rcs"); $(grep -i 'timed out' "$T/$name.err" | head -1))"

# ---- no greeting; close after PASS -----------------------------------------------------------
name=nogreet
tt_serve $name "$T/orig10" --no-greeting
tt_dl $name --timeout 2
expect_rc $name 75 "no greeting"
grep -qi "timed out" "$T/$name.lasterr" || tt_fail $name "$name: no 'timed out' in the error"
t_assert_eq "$(tt_left $name)" 10 "$name: messages on the server"
tt_converge $name 3
tt_check $name "$T/orig10"
tt_unserve $name
t_log "$name: ok"

name=closepass
tt_serve $name "$T/orig10" --close-after-pass
tt_dl $name
expect_rc $name 75 "close after PASS"
t_assert_eq "$(tt_left $name)" 10 "$name: messages on the server"
tt_converge $name 3
tt_check $name "$T/orig10"
tt_unserve $name
t_log "$name: ok"

# ---- the same UID with other content ---------------------------------------------------------
name=reuse
mkdir -p "$T/reuse.orig" "$T/reuse.all"
cp "$T/orig10/0001.eml" "$T/reuse.orig/0001.eml"
tt_serve $name "$T/reuse.orig" --uid-mode number
tt_dl $name
expect_rc $name 0 "first message"
# The server confirmed the deletion (QUIT +OK): the record goes, so that a
# later message with the same UID cannot be taken for it.
grep -q "^D [^ ]* 1 " "$T/$name.state" && tt_fail $name "$name: the record of deleted UID 1 is still in the journal"
t_assert_eq "$(tt_left $name)" 0 "$name: left after the first run"
# A restarted server numbers from 1 again: the new message gets UID "1", with another size.
cp "$T/orig10/0002.eml" "$T/$name.srv/0002.eml"
[ "$(stat -c %s "$T/orig10/0001.eml")" != "$(stat -c %s "$T/orig10/0002.eml")" ] ||
  t_fail "$name: the two messages have the same size"
tt_restart $name --uid-mode number
tt_dl $name -v
expect_rc $name 0 "second message with the same UID"
t_assert_eq "$(tt_rec $name 'r["retrieved"]')" "[1]" "$name: RETR of the new message with UID 1"
cp "$T/orig10/0001.eml" "$T/orig10/0002.eml" "$T/reuse.all/"
tt_check $name "$T/reuse.all"
tt_unserve $name
t_log "$name: ok (UID 1 reused with another size: delivered)"

# ---- desync on a server without PIPELINING ---------------------------------------------------
name=desync
tt_serve $name "$T/orig10" --no-pipelining --latency 10
tt_dl $name
expect_rc $name 0 "reference run"
tt_wait_sessions $name 1
retr3=$(tt_rec $name 'r["commands"].index("RETR 3") + 1')
tt_unserve $name
rm -rf "$T/$name.md" "$T/$name.state" "$T/$name.rec" "$T/$name.rcs"
tt_serve $name "$T/orig10" --no-pipelining --latency 10 --dup-reply "$retr3"
tt_dl $name -v
expect_rc $name 75 "duplicated reply to RETR 3 (command $retr3)"
grep -qi "desync" "$T/$name.lasterr" || tt_fail $name "$name: the error does not say desync"
tt_wait_sessions $name 1
tt_lost $name "$T/orig10"
tt_verify deleted "$T/orig10" "$T/$name.md" "$T/$name.rec" || tt_fail $name "$name: deleted unsaved"
t_assert_eq "$(tt_rec $name 'r["committed"]' 1)" false \
  "$name: session 1 committed (QUIT after a desync)"
grep -q "^L [^ ]* on " "$T/$name.state" || tt_fail $name "$name: no 'L ... on' record"
# What the desynchronised session saved may hold the wrong message (a shifted reply): the
# engine forgets those records and fetches them again ("when in doubt, deliver"), so each may
# be delivered twice; nothing else may.
saved1=$(t_maildir_count "$T/$name.md")
tt_dl $name -v
expect_rc $name 0 "the session after the desync"
tt_wait_sessions $name 2
grep -q "lock-step" "$T/$name.lasterr" || tt_fail $name "$name: -v does not say lock-step"
# Lock-step: the server waited for the client before each command of the transaction.
ncmd=$(tt_rec $name \
  'len([c for c in r["commands"] if c.split()[0] in ("RETR", "DELE", "UIDL", "LIST")])' 2)
rounds=$(tt_rec $name 'r["rounds_txn"]' 2)
[ "$rounds" -ge "$ncmd" ] ||
  tt_fail $name "$name: session 2 is not lock-step: $rounds rounds for $ncmd transaction commands"
tt_converge $name 3
tt_check $name "$T/orig10" --allow-dups "$saved1"
tt_unserve $name
t_log "$name: ok (session 2: $rounds rounds for $ncmd commands;" \
  "$saved1 saved in the desynchronised session)"

# ---- no UIDL ---------------------------------------------------------------------------------
name=nouidl
tt_serve $name "$T/orig10" --no-uidl
tt_dl $name -v
expect_rc $name 0 "server without UIDL"
grep -qi "no UIDL" "$T/$name.lasterr" || tt_fail $name "$name: -v does not say there is no UIDL"
t_assert_eq "$(tt_left $name)" 0 "$name: left on the server"
tt_verify check "$T/orig10" "$T/$name.md" --server "$T/$name.srv" --what $name ||
  tt_fail $name "$name: invariant"
tt_unserve $name
t_log "$name: ok"

t_log "all server cases passed in $((SECONDS - start)) s"
exit 0

#!/bin/bash
# dl-flight.sh -- the one flight after the greeting (issue 11) against fakepop3d, whose CAPA
# changes between runs (the server is restarted on the same port: the memory is keyed by
# USER@HOST:PORT).  With `pop3 dl --state FILE -v`:
#   - cold run: CAPA, then USER+PASS, then UIDL+LIST (7 round trips); warm run: CAPA, USER,
#     PASS, UIDL, LIST in one write right after the greeting (5 round trips);
#   - USER gone, SASL PLAIN offered: the first flight is exactly CAPA, USER test, PASS, UIDL,
#     LIST (the remembered CAPA offered USER); the server refuses USER and PASS (and UIDL and
#     LIST before a login); then the same session logs in with AUTH PLAIN and fetches: the
#     run delivers everything, and PASS is sent once (in the flight, before the fresh CAPA
#     was known), never after; the memory now lacks USER and pipelining is no longer "yes",
#     so the next run is cold (CAPA, then AUTH PLAIN; no USER, no PASS), and the one after it
#     warm again with AUTH PLAIN in the flight;
#   - PIPELINING gone (--pipelining=auto): the flight's commands are answered in order, the transfer goes
#     lock-step (no "UIDL n" before RETR), everything is delivered, the next run is cold;
#   - USER gone and nothing else offered: the flight (with its one PASS) is refused, the run
#     ends with 69 and sends nothing more; the next run is cold and ends with 69 before any
#     USER or PASS;
#   - a server that drops what was pipelined behind PASS (fakepop3d --profile courier-drop,
#     here with another IMPLEMENTATION): the warm run's flight listing gets no reply; after
#     max(3 s, 4 x the greeting's wait) the session ends without QUIT (nothing fetched or
#     deleted), the run retries once cold in the same run (its round trips added: 3 + 7) and
#     delivers everything; the memory then says flight-listing no and the next run's flight
#     ends with the login (6 round trips); a server whose CAPA says IMPLEMENTATION Courier
#     never gets the listing in the flight;
#   - implicit TLS, resumed (fakepop3d --ssl): the flight goes out right behind the client's
#     Finished, before the greeting (5 round trips instead of 8 cold); when the server drops
#     the connection before the greeting the memory says early-flight no, and the next
#     resumed run sends the flight after the greeting (6);
#   - every message is delivered exactly once (verify.py check).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-120}
t_init dl-flight
. "$top_srcdir/tests/lib/torture.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"

for i in 1 2 3 4 5 6 7; do
  tt_gen "$T/batch$i" 3 --start $((i * 10))
done
mkdir -p "$T/all"

# add I: batch I arrives on the server (and in the reference set).
add() {
  cp "$T/batch$1"/* "$T/$name.srv/"
  cp "$T/batch$1"/* "$T/all/"
}
# dl WHAT RC [OPTIONS]: one run, expecting exit RC.
dl() {
  tt_dl $name -v "${@:3}"
  [ "$TT_RC" = "$2" ] || tt_fail $name "$1: pop3 exited $TT_RC, expected $2"
  tt_wait_sessions $name "$((++sessions))"
}
trips() {
  sed -n 's/^pop3: .*: \([0-9][0-9]*\) round trips\{0,1\}$/\1/p' "$T/$name.lasterr" | tail -n 1
}
# last EXPR [INDEX]: python EXPR of the last session's record r (INDEX -2: the one before;
# a restarted server numbers its sessions from 1 again, so not tt_rec's highest number).
last() {
  "$PYTHON" - "$T/$name.rec" "$1" "${2:--1}" <<'EOF'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1]) if l.strip()][int(sys.argv[3])]
print(json.dumps(eval(sys.argv[2], {"r": r})))
EOF
}
# cmds N: the first N commands of the last session, as a JSON list.
cmds() {
  last "r[\"commands\"][:$1]"
}
mem() {
  cat "$T/$name.state.server"
}

name=flight
sessions=0
tt_serve $name ""

# ---- cold, then warm with USER/PASS
add 1
dl "cold" 0
t_assert_eq "$(trips)" 7 "round trips, cold"
t_assert_eq "$(cmds 2)" '["CAPA", "USER test"]' "cold: CAPA alone first"
mem | grep -q '^pipelining yes$' || tt_fail $name "memory: pipelining not remembered"
grep -q 'one flight' "$T/$name.lasterr" && tt_fail $name "cold: a flight without a memory"
add 2
dl "warm" 0
t_assert_eq "$(trips)" 5 "round trips, warm (the one flight)"
t_assert_eq "$(cmds 5)" '["CAPA", "USER test", "PASS ***", "UIDL", "LIST"]' "warm: the flight"
grep -q 'one flight: the remembered capabilities offer user' "$T/$name.lasterr" ||
  tt_fail $name "warm: -v does not say the flight went out"
grep -q 'secret' "$T/$name.lasterr" && tt_fail $name "warm: the password shows in -v"

# ---- USER gone, SASL PLAIN offered: fall back in the same session
tt_restart $name --no-user --sasl PLAIN
add 3
dl "user gone" 0
t_assert_eq "$(cmds 8)" \
  '["CAPA", "USER test", "PASS ***", "UIDL", "LIST", "AUTH PLAIN ***", "UIDL", "LIST"]' \
  "user gone: the flight, then AUTH PLAIN"
t_assert_eq "$(last '[c for c in r["commands"] if c.startswith("PASS")]')" '["PASS ***"]' \
  "user gone: PASS only in the flight"
t_assert_eq "$(last 'r["auth_attempts"]')" '["user:fail", "plain:ok"]' \
  "user gone: login attempts"
grep -q "the server's capabilities changed since the last session" "$T/$name.lasterr" ||
  tt_fail $name "user gone: -v does not say the capabilities changed"
mem | grep -q '^capa-pre .*\bUSER\b' && tt_fail $name "user gone: memory still offers USER"
mem | grep -q '^pipelining yes$' && tt_fail $name "user gone: memory still says pipelining yes"
add 4
dl "after user gone" 0
t_assert_eq "$(trips)" 7 "round trips, cold after the change"
t_assert_eq "$(cmds 4)" '["CAPA", "AUTH PLAIN ***", "UIDL", "LIST"]' "after user gone: cold"
t_assert_eq "$(last '[c for c in r["commands"] if c[:4] in ("USER", "PASS")]')" '[]' \
  "after user gone: no USER, no PASS"
add 5
dl "warm plain" 0
t_assert_eq "$(trips)" 5 "round trips, warm with AUTH PLAIN"
t_assert_eq "$(cmds 4)" '["CAPA", "AUTH PLAIN ***", "UIDL", "LIST"]' "warm plain: the flight"

# ---- PIPELINING gone (with --pipelining=auto; the default, on, pipelines anyway): the
# flight's replies in order, then lock-step
tt_restart $name --no-user --sasl PLAIN --no-pipelining
add 6
dl "pipelining gone" 0 --pipelining=auto
t_assert_eq "$(cmds 4)" '["CAPA", "AUTH PLAIN ***", "UIDL", "LIST"]' "no pipelining: the flight"
t_assert_eq "$(last 'len([c for c in r["commands"] if c.startswith("UIDL ")])')" 0 \
  "no pipelining: lock-step transfer (no UIDL n)"
mem | grep -q '^pipelining yes$' && tt_fail $name "no pipelining: memory still says yes"
add 7
dl "after pipelining gone" 0 --pipelining=auto
t_assert_eq "$(cmds 3)" '["CAPA", "AUTH PLAIN ***", "UIDL"]' "after pipelining gone: cold"
grep -q 'one flight' "$T/$name.lasterr" && tt_fail $name "after pipelining gone: a flight"
t_assert_eq "$(tt_left $name)" 0 "server empty"
tt_check $name "$T/all"

# ---- USER gone, nothing else offered: 69 after the flight, then 69 before any secret
name=nologin
sessions=0
tt_serve $name ""
cp "$T/batch1"/* "$T/$name.srv/"
dl "cold" 0
cp "$T/batch2"/* "$T/$name.srv/"
dl "warm" 0
tt_restart $name --no-user
cp "$T/batch3"/* "$T/$name.srv/"
dl "user gone, nothing else" 69
t_assert_eq "$(last 'r["commands"]')" '["CAPA", "USER test", "PASS ***", "UIDL", "LIST"]' \
  "nothing else: the flight and nothing more"
t_assert_eq "$(tt_left $name)" 3 "nothing else: the server keeps its messages"
dl "next run" 69
t_assert_eq "$(last '[c for c in r["commands"] if c[:4] in ("USER", "PASS")]')" '[]' \
  "next run: no USER, no PASS"
t_assert_eq "$(tt_left $name)" 3 "next run: the server keeps its messages"

# ---- a server that loses what follows the login (Courier's pop3login hands the connection
# to pop3d) without saying it is Courier: the warm run's flight listing stalls, the run
# retries cold at once and delivers everything; the memory says flight-listing no, and the
# next run's flight ends with the login
name=drop
sessions=0
tt_serve $name "" --profile courier-drop --implementation "Hidden POP3"
cp "$T/batch1"/* "$T/$name.srv/"
dl "cold" 0
t_assert_eq "$(trips)" 7 "drop: round trips, cold"
mem | grep -q '^flight-listing unknown$' || tt_fail $name "drop: memory after cold: $(mem)"
cp "$T/batch2"/* "$T/$name.srv/"
dl "warm, stalls" 0
((++sessions))
tt_wait_sessions $name "$sessions"
t_assert_eq "$(last 'r["dropped_after_login"]' -2)" 3 "drop: the server lost UTF8, UIDL and LIST"
t_assert_eq "$(last '[r["commands"], r["retrieved"], r["deleted"], r["quit"]]' -2)" \
  '[["CAPA", "USER test", "PASS ***", "UTF8", "UIDL", "LIST"], [], [], false]' \
  "drop: the stalled session fetched and deleted nothing"
t_assert_eq "$(cmds 3)" '["CAPA", "USER test", "PASS ***"]' "drop: the retry is cold"
t_assert_eq "$(last 'r["dropped_after_login"]')" 0 "drop: the retry lost nothing"
grep -q 'the server drops what follows the login' "$T/$name.lasterr" ||
  tt_fail $name "drop: -v does not say why"
grep -q 'retrying once, cold' "$T/$name.lasterr" || tt_fail $name "drop: -v: no retry"
# 3 (connect, greeting, the flight) + 7 (the cold session).
t_assert_eq "$(trips)" 10 "drop: round trips of both sessions"
mem | grep -q '^flight-listing no$' || tt_fail $name "drop: memory: $(mem)"
t_assert_eq "$(tt_left $name)" 0 "drop: server empty"
cp "$T/batch3"/* "$T/$name.srv/"
dl "warm again" 0
t_assert_eq "$(cmds 5)" '["CAPA", "USER test", "PASS ***", "UTF8", "UIDL"]' \
  "drop: the flight ends with the login"
t_assert_eq "$(last 'r["dropped_after_login"]')" 0 "drop: nothing lost"
t_assert_eq "$(trips)" 6 "drop: round trips, warm without the listing"
grep -q 'drops what follows' "$T/$name.lasterr" && tt_fail $name "drop: stalled again"
mem | grep -q '^flight-listing no$' || tt_fail $name "drop: memory forgot: $(mem)"
cp -a "$T/batch1" "$T/drop.all"
cp "$T/batch2"/* "$T/batch3"/* "$T/drop.all/"
tt_check $name "$T/drop.all"

# ---- a server that loses only the first command behind the login: the replies that do come
# no longer match (desync), nothing is retrieved or deleted, the memory says flight-listing no
# and the run retries once, cold, in the same run
name=partial
sessions=0
tt_serve $name "" --profile courier-drop --drop-after-login-count 1 --implementation "Hidden POP3"
cp "$T/batch1"/* "$T/$name.srv/"
dl "cold" 0
cp "$T/batch2"/* "$T/$name.srv/"
dl "warm, half the listing lost" 0
((++sessions))
tt_wait_sessions $name "$sessions"
t_assert_eq "$(last 'r["dropped_after_login"]' -2)" 1 "partial: the server lost one command"
t_assert_eq "$(last '[r["retrieved"], r["deleted"]]' -2)" '[[], []]' \
  "partial: the broken session fetched and deleted nothing"
t_assert_eq "$(cmds 3)" '["CAPA", "USER test", "PASS ***"]' "partial: the retry is cold"
grep -q 'retrying once, cold' "$T/$name.lasterr" || tt_fail $name "partial: -v: no retry"
mem | grep -q '^flight-listing no$' || tt_fail $name "partial: memory: $(mem)"
t_assert_eq "$(tt_left $name)" 0 "partial: server empty"
cp -a "$T/batch1" "$T/partial.all"
cp "$T/batch2"/* "$T/partial.all/"
tt_check $name "$T/partial.all"

# ---- Courier saying so (IMPLEMENTATION Courier Mail Server): never the listing in the
# flight, not even once
name=courier
sessions=0
tt_serve $name "" --profile courier-drop
cp "$T/batch1"/* "$T/$name.srv/"
dl "cold" 0
mem | grep -q '^capa-pre .*IMPLEMENTATION Courier' || tt_fail $name "courier: memory: $(mem)"
cp "$T/batch2"/* "$T/$name.srv/"
dl "warm" 0
t_assert_eq "$(cmds 5)" '["CAPA", "USER test", "PASS ***", "UTF8", "UIDL"]' \
  "courier: the flight ends with the login"
t_assert_eq "$(trips)" 6 "courier: round trips, warm"
t_assert_eq "$(last 'r["dropped_after_login"]')" 0 "courier: nothing lost"
mem | grep -q '^flight-listing unknown$' || tt_fail $name "courier: memory: $(mem)"
cp -a "$T/batch1" "$T/courier.all"
cp "$T/batch2"/* "$T/courier.all/"
tt_check $name "$T/courier.all"

# ---- implicit TLS, resumed: the flight goes out right behind the client's Finished, before
# the greeting; a server that breaks it (here the connection drops inside the greeting) is
# remembered, and later runs wait for the greeting
sh "$top_srcdir/tests/lib/mkcert.sh" "$T/ssl" >"$T/mkcert.log" 2>&1 ||
  { cat "$T/mkcert.log" >&2; t_fail "mkcert.sh failed"; }
TT_SCHEME=ssl TT_HOST='127.0.0.1!localhost'
CA=(--ca-file "$T/ssl/ca.pem")
name=early
sessions=0
tt_serve $name "" --ssl "$T/ssl/server.pem" "$T/ssl/server.key" --drop-after-bytes 5 \
  --fault-sessions 3
cp "$T/batch1"/* "$T/$name.srv/"
dl "cold" 0 "${CA[@]}"
t_assert_eq "$(trips)" 8 "early: round trips, cold TLS"
cp "$T/batch2"/* "$T/$name.srv/"
dl "resumed" 0 "${CA[@]}"
grep -q 'TLS session resumed$' "$T/$name.lasterr" || tt_fail $name "early: not resumed"
grep -q 'one flight before the greeting: the remembered capabilities offer user' \
  "$T/$name.lasterr" || tt_fail $name "early: no flight before the greeting"
t_assert_eq "$(cmds 5)" '["CAPA", "USER test", "PASS ***", "UIDL", "LIST"]' "early: the flight"
t_assert_eq "$(trips)" 5 "early: round trips, resumed TLS with the early flight"
mem | grep -q '^early-flight yes$' || tt_fail $name "early: memory: $(mem)"
cp "$T/batch3"/* "$T/$name.srv/"
dl "dropped" 75 "${CA[@]}"
t_assert_eq "$(last 'r["end"]')" '"fault:drop-after-bytes"' "early: the server dropped it"
mem | grep -q '^early-flight no$' || tt_fail $name "early: memory after the drop: $(mem)"
dl "after the drop" 0 "${CA[@]}"
grep -q 'TLS session resumed$' "$T/$name.lasterr" || tt_fail $name "after the drop: not resumed"
grep -q 'before the greeting' "$T/$name.lasterr" && tt_fail $name "after the drop: early again"
grep -q 'one flight: the remembered' "$T/$name.lasterr" || tt_fail $name "after the drop: no flight"
t_assert_eq "$(trips)" 6 "early: round trips, resumed TLS, flight after the greeting"
mem | grep -q '^early-flight no$' || tt_fail $name "early: memory forgot: $(mem)"
cp -a "$T/batch1" "$T/early.all"
cp "$T/batch2"/* "$T/batch3"/* "$T/early.all/"
tt_check $name "$T/early.all"
t_log "ok: the one flight, its fallbacks when the CAPA changed, and servers that break it"

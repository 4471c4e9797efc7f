#!/bin/bash
# dl-courier.sh -- `pop3 dl` against Courier's ways (fakepop3d --profile courier, issue 9):
#   - UTF8 (RFC 6856) is advertised: pop3 sends it and receives the original of a message
#     with UTF-8 headers; delivered byte for byte, exit 0;
#   - --no-utf8: Courier serves that message rewritten (LIST gives the original size, RETR
#     announces and sends the rewritten one): delivered as served, no desync, exit 0, in
#     pipelined and lock-step mode; with --keep, four runs: the earlier messages are not
#     delivered again, every run exits 0;
#   - Courier over STLS dropping the connection instead of answering QUIT (ASCII messages
#     only): exit 75, a sentence
#     saying the deletions may not have been applied, nothing lost; the next run delivers
#     nothing twice and empties the server.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-180}
t_init dl-courier
. "$top_srcdir/tests/lib/torture.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"
command -v openssl >/dev/null || t_skip "no openssl"
PAR=${PAR:-2}

C=$T/certs
sh "$top_srcdir/tests/lib/mkcert.sh" "$C" || t_fail "mkcert.sh failed"

# Six messages; the fourth has a UTF-8 Subject and From.
O=$T/orig
for i in 1 2 3 5 6; do
  tt_msg "$O/000$i.eml" "ascii$i" "plain message $i" "body of message $i"
done
tt_msg "$O/0004.eml" utf8 $'Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln \xe2\x80\x94 caf\xc3\xa9' \
  $'Unicode body: \xe2\x9c\x93 na\xc3\xafve'
sed -i $'s/^From: Sender/From: J\xc3\xbcrgen/' "$O/0004.eml"
# What Courier serves for 0004.eml to a client that has not sent UTF8 (fakepop3d's rewrite).
mkdir -p "$T/asserved"
cp "$O"/* "$T/asserved/"
"$PYTHON" - "$top_srcdir/tests/fakepop3d.py" "$O/0004.eml" "$T/asserved/0004.eml" <<'EOF' ||
import importlib.util, sys
spec = importlib.util.spec_from_file_location("fakepop3d", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
raw = open(sys.argv[2], "rb").read()
assert m.has_8bit_header(raw)
open(sys.argv[3], "wb").write(m.courier_rewrite(raw))
EOF
  t_fail "cannot compute Courier's rewrite"
[ "$(stat -c %s "$T/asserved/0004.eml")" -gt "$(stat -c %s "$O/0004.eml")" ] ||
  t_fail "the rewrite is not larger than the original"
# The ASCII ones alone (the QUIT case is about QUIT only).
mkdir -p "$T/ascii"
cp "$O"/000[12356].eml "$T/ascii/"

expect_rc() { # expect_rc NAME RC WHAT
  [ "$TT_RC" = "$2" ] || tt_fail "$1" "$1: $3: pop3 exited $TT_RC, expected $2"
}
retrs() { # retrs NAME SESSION
  tt_rec "$1" '[c for c in r["commands"] if c.upper().startswith("RETR")]' "$2"
}

# ---- UTF8 sent: the original ------------------------------------------------------------------
case_utf8() {
  local name=utf8
  tt_serve "$name" "$O" --profile courier
  tt_dl "$name"
  expect_rc "$name" 0 "Courier with UTF8"
  tt_wait_sessions "$name" 1
  t_assert_eq "$(tt_rec "$name" 'r["utf8"]' 1)" true "$name: UTF8 sent"
  tt_check "$name" "$O"
  tt_pass "$name" "UTF8 sent, the original delivered"
}

# ---- --no-utf8: the rewrite, without a desync ------------------------------------------------
case_no_utf8() {
  local mode=$1 name=no-utf8-$1
  tt_serve "$name" "$O" --profile courier
  tt_dl "$name" --no-utf8 --pipelining="$mode"
  expect_rc "$name" 0 "--no-utf8 --pipelining=$mode (RETR size differs from LIST for 0004)"
  tt_wait_sessions "$name" 1
  t_assert_eq "$(tt_rec "$name" 'r["utf8"]' 1)" false "$name: UTF8 sent despite --no-utf8"
  tt_check "$name" "$T/asserved"
  tt_pass "$name" "delivered as served"
}

case_no_utf8_keep() {
  local name=no-utf8-keep run
  tt_serve "$name" "$O" --profile courier
  for run in 1 2 3 4; do
    tt_dl "$name" --keep --no-utf8
    expect_rc "$name" 0 "--keep --no-utf8, run $run"
    tt_wait_sessions "$name" "$run"
    if [ "$run" = 1 ]; then
      t_assert_eq "$(retrs "$name" 1 | tr -d ' ')" \
        '["RETR1","RETR2","RETR3","RETR4","RETR5","RETR6"]' "$name: RETR in run 1"
    else
      t_assert_eq "$(retrs "$name" "$run")" "[]" "$name: RETR in run $run"
    fi
    t_assert_eq "$(t_maildir_count "$T/$name.md")" 6 "$name: files after run $run"
  done
  t_assert_eq "$(tt_left "$name")" 6 "$name: messages on the server"
  tt_verify check "$T/asserved" "$T/$name.md" --state "$T/$name.state" --what "$name" ||
    tt_fail "$name" "$name: not each message delivered once, as served"
  tt_pass "$name" "4 runs, each message once"
}

# ---- STLS, and the connection dropped instead of the QUIT reply ------------------------------
case_quit_drop() {
  local name=quit-drop
  tt_serve "$name" "$T/ascii" --profile courier --stls "$C/server.pem" "$C/server.key" --drop-at-quit
  TT_SCHEME=starttls TT_HOST='127.0.0.1!localhost' tt_dl "$name" --ca-file "$C/ca.pem"
  expect_rc "$name" 75 "the server dropped the connection instead of answering QUIT"
  tt_wait_sessions "$name" 1
  t_assert_eq "$(tt_rec "$name" '[r["tls"], r["end"], r["committed"]]' 1)" \
    '["stls", "fault:drop-at-quit", false]' "$name: [tls, end, committed] of session 1"
  grep -Eqi '(may|might) not have been applied|delet[a-z]* (may|might) not|not (been )?applied' \
    "$T/$name.lasterr" ||
    tt_fail "$name" "$name: stderr does not say that the deletions may not have been applied:" \
      "$(cat "$T/$name.lasterr")"
  [ ! -s "$T/$name.out" ] ||
    tt_fail "$name" "$name: a summary on stdout beside exit 75: $(cat "$T/$name.out")"
  tt_lost "$name" "$T/ascii"
  t_assert_eq "$(t_maildir_count "$T/$name.md")" 5 "$name: delivered in run 1"
  t_assert_eq "$(tt_left "$name")" 5 "$name: on the server after run 1 (no UPDATE state)"
  TT_SCHEME=starttls TT_HOST='127.0.0.1!localhost' tt_dl "$name" --ca-file "$C/ca.pem"
  expect_rc "$name" 0 "the run after the dropped QUIT"
  tt_wait_sessions "$name" 2
  t_assert_eq "$(retrs "$name" 2)" "[]" "$name: RETR in run 2"
  tt_check "$name" "$T/ascii"
  tt_pass "$name" "$(grep '^pop3:' "$T/$name.err" | head -1)"
}

tt_case "$PAR" utf8 case_utf8
tt_case "$PAR" no-utf8-on case_no_utf8 on
tt_case "$PAR" no-utf8-off case_no_utf8 off
tt_case "$PAR" no-utf8-keep case_no_utf8_keep
tt_case "$PAR" quit-drop case_quit_drop
tt_cases_done
[ "$TT_FAILS" = 0 ] || t_fail "$TT_FAILS cases failed"
exit 0

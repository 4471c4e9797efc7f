#!/bin/bash
# torture-drops.sh -- exactly-once delivery when the connection drops anywhere: 200 small
# --varied messages served by fakepop3d --maildir; a clean reference session gives the total
# bytes the server sends; then for TORTURE_CUTS offsets (default 100; `make torture`: 1000)
# spread over [0, total] (the greeting and login,
# mid-RETR, between replies, among the DELE replies, just before and after QUIT's reply) a
# fresh case: `pop3 dl` against --drop-after-bytes OFFSET (session 1 only), which must exit 75
# (0 once the offset is past the whole session) and lose nothing, then clean reruns with the
# same --state until the server is empty; then every original is delivered exactly once.
# Also checks once that a delivered file is byte-identical to its original (popref.py).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-$((240 + 2 * ${NOFFSETS:-${TORTURE_CUTS:-100}}))}
t_init torture-drops
. "$top_srcdir/tests/lib/torture.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"

NOFFSETS=${NOFFSETS:-$TORTURE_CUTS}
PAR=${PAR:-4}
start=$SECONDS

tt_gen "$T/orig" 200

# The assumption behind the invariant: what an RFC 1939 client receives for these
# originals, served by fakepop3d --maildir, is the original bytes.
tt_serve popref "$T/orig"
"$PYTHON" "$top_srcdir/tests/lib/popref.py" 127.0.0.1 "$TT_PORT" test secret "$T/popref.out" \
  --timeout 30 >/dev/null 2>"$T/popref.err" || { cat "$T/popref.err" >&2; t_fail "popref.py"; }
tt_unserve popref
tt_verify same "$T/orig" "$T/popref.out" ||
  t_fail "popref.py does not receive the original bytes: the invariant's assumption is wrong"

# The reference: a clean session.
tt_serve ref "$T/orig"
tt_dl ref
[ "$TT_RC" = 0 ] || tt_fail ref "reference run exited $TT_RC"
tt_wait_sessions ref 1
tt_check ref "$T/orig"
tt_unserve ref
total=$(tt_rec ref 'r["bytes_out"]')
t_log "reference session: $total bytes sent by the server," \
  "$(tt_rec ref 'len(r["commands"])') commands"

mapfile -t offsets < <(tt_verify offsets "$total" "$T/ref.rec" "$NOFFSETS")
[ "${#offsets[@]}" -ge "$NOFFSETS" ] || t_fail "only ${#offsets[@]} offsets"

# drop_case K: one offset, in a subshell: $T/res/K holds "ok" or the failure.
drop_case() {
  local k=$1 name=d$1 want
  trap 'tt_unserve d'"$k" EXIT
  tt_serve "$name" "$T/orig" --drop-after-bytes "$k"
  tt_dl "$name"
  want=75
  [ "$k" -ge "$total" ] && want=0
  [ "$TT_RC" = "$want" ] ||
    tt_fail "$name" \
      "$name: the run with a drop after $k of $total bytes exited $TT_RC, expected $want"
  if [ "$want" = 75 ]; then
    grep -q "^pop3: tcp:" "$T/$name.lasterr" || tt_fail "$name" "$name: no error message"
  fi
  tt_lost "$name" "$T/orig"
  tt_converge "$name" 5
  tt_check "$name" "$T/orig"
  echo "ok runs=$(wc -l <"$T/$name.rcs") rcs=$(tr '\n' ' ' <"$T/$name.rcs")" >"$T/res/$k"
}

run_case() {
  (drop_case "$1") >"$T/res/$1.log" 2>&1
}

mkdir -p "$T/res"
for k in "${offsets[@]}"; do
  tt_spawn "$PAR" run_case "$k"
done
tt_wait_all

fails=0
for k in "${offsets[@]}"; do
  if [ -f "$T/res/$k" ]; then
    t_log "drop after $k bytes: $(cat "$T/res/$k")"
  else
    fails=$((fails + 1))
    echo "---- drop after $k bytes: FAILED" >&2
    tail -n 40 "$T/res/$k.log" >&2
  fi
done
t_log "${#offsets[@]} offsets in $((SECONDS - start)) s, $fails failed"
[ "$fails" = 0 ] || t_fail "$fails of ${#offsets[@]} drop offsets broke exactly-once delivery"
exit 0

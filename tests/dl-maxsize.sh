#!/bin/bash
# dl-maxsize.sh -- `pop3 dl --max-size` against fakepop3d (issue 12, size limits):
#   - delete mode: the messages over the limit stay on the server, undeleted and unfetched;
#     exit 0 with the summary and "N messages over LIMIT left on the server" on stdout; the
#     same limit again fetches nothing; a raised limit fetches them, each exactly once;
#   - keep mode: nothing is recorded for them, so a raised limit fetches them later (exactly
#     once, "1 message" in the singular on the way); a run without keep and with the old limit
#     then deletes the delivered large ones (the journal proves them) without fetching;
#   - -v says up front what the listing holds: "N messages (SIZE) on the server";
#   - bad sizes are usage errors (64).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
t_init dl-maxsize
. "$top_srcdir/tests/lib/fake.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"

PW=(--password-command 'echo secret')

# Three small messages (about 2000 bytes) and two large ones (about 100 and 200 KB).
mkmsgs "$T/orig" 3
"$PYTHON" "$top_srcdir/tests/lib/genmail.py" "$T/orig" 1 --size 100000 --start 4 >/dev/null &&
  "$PYTHON" "$top_srcdir/tests/lib/genmail.py" "$T/orig" 1 --size 200000 --start 5 >/dev/null ||
  t_fail "genmail.py failed"
t_assert_eq "$(ls "$T/orig" | tr '\n' ' ')" "0001.eml 0002.eml 0003.eml 0004.eml 0005.eml " \
  "the originals"
for f in 0001 0002 0003; do
  [ "$(wc -c <"$T/orig/$f.eml")" -lt 65536 ] || t_fail "$f.eml is not small"
done
[ "$(wc -c <"$T/orig/0004.eml")" -gt $((90 * 1024)) ] && [ "$(wc -c <"$T/orig/0004.eml")" -lt $((150 * 1024)) ] ||
  t_fail "0004.eml is not between 90 and 150 KiB"
[ "$(wc -c <"$T/orig/0005.eml")" -gt $((150 * 1024)) ] || t_fail "0005.eml is not over 150 KiB"
mkdir "$T/small" "$T/big4"
cp "$T"/orig/000[123].eml "$T/small/"
cp "$T/orig/0004.eml" "$T/big4/"

# serve NAME: a fresh copy of the five messages, served by a new fakepop3d.
serve() {
  rm -rf "$T/$1.srv"
  cp -a "$T/orig" "$T/$1.srv"
  fake_start "$1" --maildir "$T/$1.srv"
  SPEC=tcp:test@127.0.0.1:$FAKE_PORT
}

# same_as WHAT DIR MAILDIR: the Maildir holds exactly the messages of DIR, each once.
same_as() {
  sums "$2" >"$T/want.sums"
  sums "$3/new" "$3/cur" >"$T/got.sums"
  cmp -s "$T/want.sums" "$T/got.sums" ||
    { diff "$T/want.sums" "$T/got.sums" | head >&2; t_fail "$1: the Maildir differs from $2"; }
}

# summary WHAT N [OVERLINE]: stdout is the summary line with N messages, then OVERLINE if given.
summary() {
  local want=1
  [ -n "${3:-}" ] && want=2
  t_assert_eq "$(wc -l <"$T/out" | tr -d ' ')" "$want" "$1: lines on stdout ($(cat "$T/out"))"
  head -n 1 "$T/out" | grep -Eq "^$SPEC: $2 messages, ([0-9.]+ [KMG]iB \()?[0-9]+ bytes\)? in [0-9.]+ s\$" ||
    t_fail "$1: summary line: $(head -n 1 "$T/out")"
  [ -z "${3:-}" ] || t_assert_eq "$(sed -n 2p "$T/out")" "$SPEC: $3" "$1: second line"
}

server_files() {
  ls "$T/$1.srv" | tr '\n' ' '
}

# --- bad sizes -------------------------------------------------------------------------------
for bad in 0 10X -5 1.5M "" 10MB 99999999999999999999; do
  p3 dl "${PW[@]}" --max-size "$bad" tcp:test@127.0.0.1:1 "$T/md-bad"
  p3_expect 64 "--max-size '$bad'"
  grep -qF "pop3: --max-size \`$bad' is not a size" "$T/err" ||
    t_fail "--max-size '$bad': message: $(cat "$T/err")"
  [ ! -s "$T/out" ] || t_fail "--max-size '$bad': stdout: $(cat "$T/out")"
done
[ ! -e "$T/md-bad" ] || t_fail "a usage error created the Maildir"

# --- delete mode ----------------------------------------------------------------------------
serve del
p3 dl "${PW[@]}" --max-size 64K "$SPEC" "$T/md-del"
p3_expect 0 "delete mode, 64K"
summary "delete mode, 64K" 3 "2 messages over 64 KiB left on the server"
same_as "delete mode, 64K" "$T/small" "$T/md-del"
t_assert_eq "$(server_files del)" "0004.eml 0005.eml " "delete mode, 64K: left on the server"
fake_wait_sessions 1
t_assert_eq "$(fake_rec 'r["retrieved"]')" "[1, 2, 3]" "delete mode, 64K: RETR"
t_assert_eq "$(fake_rec 'r["deleted"]')" "[1, 2, 3]" "delete mode, 64K: DELE"
# Never so much as asked for (RETR) either.
t_assert_eq "$(fake_rec '[c for c in r["commands"] if c.split()[0] in ("RETR", "TOP", "DELE") and c.split()[1] in ("4", "5")]')" \
  "[]" "delete mode, 64K: RETR, TOP or DELE of the large ones"

# The same limit again: nothing to fetch, the large ones still said.
p3 dl "${PW[@]}" --max-size 64K "$SPEC" "$T/md-del"
p3_expect 0 "delete mode, 64K again"
summary "delete mode, 64K again" 0 "2 messages over 64 KiB left on the server"
t_assert_eq "$(server_files del)" "0004.eml 0005.eml " "delete mode, 64K again: on the server"

# Raised: both now, exactly once; nothing over the limit, so no second line.
p3 dl "${PW[@]}" --max-size 1M "$SPEC" "$T/md-del"
p3_expect 0 "delete mode, 1M"
summary "delete mode, 1M" 2
same_as "delete mode, 1M" "$T/orig" "$T/md-del"
t_assert_eq "$(server_files del)" "" "delete mode, 1M: left on the server"
p3 dl "${PW[@]}" "$SPEC" "$T/md-del"
p3_expect 0 "delete mode, no limit"
summary "delete mode, no limit" 0
same_as "delete mode, no limit" "$T/orig" "$T/md-del"
fake_stop

# --- keep mode ------------------------------------------------------------------------------
serve keep
# -v: the listing up front (the LIST sizes are the CRLF form: one more octet per line).
total=$("$PYTHON" - "$T"/orig/*.eml <<'PY'
import sys
n = sum(len(b) + b.count(b"\n") for b in (open(p, "rb").read() for p in sys.argv[1:]))
v, u = n / 1024, 0
while u < 2 and v >= 1023.95:
    v, u = v / 1024, u + 1
print("%.1f %s" % (v, ["KiB", "MiB", "GiB"][u]))
PY
)
p3 -v dl "${PW[@]}" --keep --max-size 64k "$SPEC" "$T/md-keep"
p3_expect 0 "keep mode, 64k"
summary "keep mode, 64k" 3 "2 messages over 64 KiB left on the server"
grep -qx "pop3: $SPEC: 5 messages ($total) on the server" "$T/err" ||
  t_fail "keep mode: no '5 messages ($total) on the server' line: $(grep 'on the server' "$T/err")"
grep -q "message 4 (UID [0-9a-f]*): larger than max_size: left on the server" "$T/err" ||
  t_fail "keep mode: -v does not say why message 4 stays: $(grep 'message 4' "$T/err")"
same_as "keep mode, 64k" "$T/small" "$T/md-keep"
t_assert_eq "$(server_files keep)" "0001.eml 0002.eml 0003.eml 0004.eml 0005.eml " \
  "keep mode: on the server"
# Nothing recorded for the large ones: the journal names three UIDs.
journal=$(ls "$T"/state/pop3sync/*"$FAKE_PORT"*.state)
for f in 0004 0005; do
  uid=$(sha1sum "$T/orig/$f.eml" | cut -c1-20)
  ! grep -q "$uid" "$journal" || t_fail "keep mode: the journal records the over-size $f ($uid)"
done
for f in 0001 0002 0003; do
  uid=$(sha1sum "$T/orig/$f.eml" | cut -c1-20)
  grep -q "$uid" "$journal" || t_fail "keep mode: the journal lacks $f ($uid): $(cat "$journal")"
done

p3 dl "${PW[@]}" --keep --max-size 64KiB "$SPEC" "$T/md-keep"
p3_expect 0 "keep mode, 64KiB again"
summary "keep mode, 64KiB again" 0 "2 messages over 64 KiB left on the server"
same_as "keep mode, 64KiB again" "$T/small" "$T/md-keep"

# Raised past the first large one only: the singular.
p3 dl "${PW[@]}" --keep --max-size 150K "$SPEC" "$T/md-keep"
p3_expect 0 "keep mode, 150K"
summary "keep mode, 150K" 1 "1 message over 150 KiB left on the server"
mkdir -p "$T/four"
cp "$T"/orig/000[1234].eml "$T/four/"
same_as "keep mode, 150K" "$T/four" "$T/md-keep"

# No limit: the last one, once; then nothing.
p3 dl "${PW[@]}" --keep "$SPEC" "$T/md-keep"
p3_expect 0 "keep mode, no limit"
summary "keep mode, no limit" 1
same_as "keep mode, no limit" "$T/orig" "$T/md-keep"
p3 dl "${PW[@]}" --keep --max-size 1G "$SPEC" "$T/md-keep"
p3_expect 0 "keep mode, 1G"
summary "keep mode, 1G" 0
same_as "keep mode, 1G" "$T/orig" "$T/md-keep"
t_assert_eq "$(server_files keep)" "0001.eml 0002.eml 0003.eml 0004.eml 0005.eml " \
  "keep mode, 1G: on the server"

# Without keep, the old limit: the large ones were delivered, so they are deleted (not
# "over size"), and nothing is fetched again.
p3 dl "${PW[@]}" --max-size 64K "$SPEC" "$T/md-keep"
p3_expect 0 "delete after keep, 64K"
summary "delete after keep, 64K" 0
same_as "delete after keep, 64K" "$T/orig" "$T/md-keep"
t_assert_eq "$(server_files keep)" "" "delete after keep, 64K: on the server"
fake_stop

t_log "ok: over-size messages stay, are said, and come exactly once when the limit allows"

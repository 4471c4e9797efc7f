#!/bin/bash
# dl-content.sh -- `pop3 dl` delivers exactly what a lock-step RFC 1939 client receives: the
# hostile corpus (0-byte message, leading dots, "." and ".." lines, no final newline, 8-bit and
# NUL bytes, bare CR, CRLF) compared with popref.py by sha256; a 50 MiB message (sha256 of the
# delivered file; peak RSS of pop3 below 32 MiB).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
t_init dl-content
. "$top_srcdir/tests/lib/fake.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"

PW=(--password-command 'echo secret')
P3_LIMIT=120

# --- hostile corpus --------------------------------------------------------------------------
N=38 # every kind of genmail --hostile at least twice
"$PYTHON" "$top_srcdir/tests/lib/genmail.py" "$T/orig" "$N" --hostile || t_fail "genmail.py"
popref_expect "$T/orig" "$T/ref"
t_assert_eq "$(find "$T/ref" -type f | wc -l)" "$N" "popref: messages received"

# Cross-check the reference where the transform is obvious (no CR in the original): the
# message itself, plus a LF when it does not end with one (an empty message stays empty).
"$PYTHON" - "$T/orig" "$T/ref" <<'PY' || t_fail "popref.py disagrees with the obvious transform"
import hashlib, os, sys
orig, ref = sys.argv[1], sys.argv[2]
have = set(hashlib.sha256(open(os.path.join(ref, n), "rb").read()).hexdigest()
           for n in os.listdir(ref))
kinds = {"empty": 0, "nofinalnl": 0, "nul": 0, "dotonly": 0}
for n in sorted(os.listdir(orig)):
    b = open(os.path.join(orig, n), "rb").read()
    if b"\r" in b:
        continue
    want = b if (not b or b.endswith(b"\n")) else b + b"\n"
    if hashlib.sha256(want).hexdigest() not in have:
        sys.exit("no reference file for %s" % n)
    if not b:
        kinds["empty"] += 1
    elif not b.endswith(b"\n"):
        kinds["nofinalnl"] += 1
    elif b"\0" in b:
        kinds["nul"] += 1
    elif b == b".\n":
        kinds["dotonly"] += 1
missing = [k for k, v in kinds.items() if not v]
if missing:
    sys.exit("corpus lacks kinds %s" % missing)
PY

cp -a "$T/orig" "$T/srv"
fake_start hostile --maildir "$T/srv"
p3 dl "${PW[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/md"
p3_expect 0 "hostile corpus"
t_assert_eq "$(t_maildir_count "$T/md")" "$N" "hostile corpus: messages delivered"
sums "$T/ref" >"$T/want.sums"
sums "$T/md/new" "$T/md/cur" >"$T/got.sums"
if ! cmp -s "$T/want.sums" "$T/got.sums"; then
  # Name the originals whose expected form is missing, to make the failure readable.
  "$PYTHON" - "$T/ref" "$T/popref.stdout" "$T/got.sums" "$T/orig" <<'PY' >&2
import hashlib, os, sys
ref, listing, got, orig = sys.argv[1:]
got = set(open(got).read().split())
names = sorted(os.listdir(orig))
for line in open(listing):
    num, uid, name, size = line.split()
    h = hashlib.sha256(open(os.path.join(ref, name), "rb").read()).hexdigest()
    if h not in got:
        print("not delivered as expected: message %s (%s, %s bytes expected)"
              % (num, names[int(num) - 1], size))
PY
  t_fail "hostile corpus: delivered files differ from popref.py's"
fi
maildir_check "$T/md"
fake_wait_sessions 1
t_assert_eq "$(fake_rec 'r["deleted"] == list(range(1, r["messages"] + 1)) and r["committed"]')" \
  true "hostile corpus: all deleted at QUIT"
t_assert_eq "$(ls -A "$T/srv" | wc -l)" 0 "hostile corpus: files left on the server"
bytes=$(cat "$T"/md/new/* | wc -c)
grep -Eq "^tcp:test@127\.0\.0\.1:$FAKE_PORT: $N messages, ([0-9.]+ [KMG]iB \()?$bytes bytes\)? in [0-9.]+ s\$" "$T/out" ||
  t_fail "hostile corpus: summary line: $(cat "$T/out") (expected $bytes bytes)"
fake_stop

# --- a 50 MiB message ------------------------------------------------------------------------
mkdir "$T/big"
"$PYTHON" - "$T/big/0001.eml" <<'PY' || t_fail "cannot write the 50 MiB message"
import sys
target = 50 * 1024 * 1024
head = (b"From: big@example.org\nTo: test@example.net\nSubject: fifty mebibytes\n"
        b"Message-ID: <big.1@pop3sync.test>\n\n")
parts = [head]
total = len(head)
n = 0
seed = 12345
while total < target:
    n += 1
    seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
    if n % 997 == 0:
        line = b"."
    elif n % 7 == 0:
        line = b"." + b"dot-stuffed line %d " % n + b"x" * (seed % 90)
    elif n % 13 == 0:
        line = b".." + b"y" * (seed % 200)
    else:
        line = b"line %d " % n + bytes(97 + (seed >> k) % 26 for k in range(seed % 120))
    parts.append(line + b"\n")
    total += len(line) + 1
open(sys.argv[1], "wb").write(b"".join(parts))
PY
want=$(sha256sum "$T/big/0001.eml" | awk '{print $1}')
size=$(stat -c %s "$T/big/0001.eml")
fake_start big --maildir "$T/big"
rss_cmd=()
if [ -x /usr/bin/time ]; then
  rss_cmd=(/usr/bin/time -f '%M' -o "$T/rss")
fi
P3_RC=0
timeout -k 5 "$P3_LIMIT" "${rss_cmd[@]}" "$POP3" dl "${PW[@]}" \
  "tcp:test@127.0.0.1:$FAKE_PORT" "$T/mdbig" </dev/null >"$T/out" 2>"$T/err" || P3_RC=$?
p3_sanitizer_check "(50 MiB message)"
p3_expect 0 "50 MiB message"
t_assert_eq "$(t_maildir_count "$T/mdbig")" 1 "50 MiB message: delivered"
got=$(cat "$T"/mdbig/new/* | sha256sum | awk '{print $1}')
t_assert_eq "$got" "$want" "50 MiB message: sha256 of the delivered file"
maildir_check "$T/mdbig"
fake_wait_sessions 1
t_assert_eq "$(fake_rec 'r["deleted"] == [1] and r["committed"]')" true "50 MiB message: deleted"
grep -Eq "^tcp:test@127\.0\.0\.1:$FAKE_PORT: 1 messages?, ([0-9.]+ [KMG]iB \()?$size bytes\)? in [0-9.]+ s\$" "$T/out" ||
  t_fail "50 MiB message: summary line: $(cat "$T/out") (expected $size bytes)"
fake_stop

# Peak RSS: meaningless under a sanitizer or valgrind (shadow memory), so only for a plain
# binary and only when GNU time could measure it.
if grep -aq -e __asan_init -e __msan_init -e __tsan_init "$POP3" 2>/dev/null; then
  t_log "peak RSS not checked: $POP3 is built with a sanitizer"
elif [ ! -s "$T/rss" ] || ! grep -Eq '^[0-9]+$' "$T/rss"; then
  t_log "peak RSS not checked: /usr/bin/time unavailable or gave no figure"
else
  rss=$(cat "$T/rss")
  t_log "peak RSS of pop3 for a 50 MiB message: $rss KiB"
  [ "$rss" -lt 32768 ] || t_fail "50 MiB message: peak RSS $rss KiB >= 32 MiB (buffered whole?)"
fi

t_log "dl-content: all checks passed"
exit 0

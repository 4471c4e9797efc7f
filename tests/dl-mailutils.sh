#!/bin/bash
# dl-mailutils.sh -- `pop3 dl --keep` against GNU Mailutils' ways (fakepop3d --profile
# mailutils, issue 9): it serves every message with an X-UIDL header that changes with each
# session, and at QUIT adds X-UID/Status/X-IMAPbase headers to the messages it keeps, so a
# kept message's LIST size grows while its UID stays; it advertises "EXPIRENEVER".
#   - --keep three times: +10, then +0 (no RETR: the size changed but TOP n 0 gives the same
#     header digest), then exactly the 3 new messages; a fourth --keep: +0; then a run without
#     --keep deletes them all without fetching anything again;
#   - --keep once, then straight away a run without --keep: the grown messages are probed
#     (TOP n 0) and deleted, not fetched again;
#   - the same against a server without TOP: a changed size cannot be checked, so the
#     messages are fetched again (a duplicate rather than a loss), exit 0;
#   - without --keep: everything delivered (as served, with X-UIDL) and deleted.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-180}
t_init dl-mailutils
. "$top_srcdir/tests/lib/torture.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"
PAR=${PAR:-2}

tt_gen "$T/orig" 10
tt_gen "$T/more" 3 --start 11
mkdir -p "$T/all"
cp "$T/orig"/* "$T/more"/* "$T/all/"

expect_rc() { # expect_rc NAME RC WHAT
  [ "$TT_RC" = "$2" ] || tt_fail "$1" "$1: $3: pop3 exited $TT_RC, expected $2"
}
retrs() { # retrs NAME SESSION: the RETR commands of the session, as "1 2 3"
  tt_rec "$1" '" ".join(c.split()[1] for c in r["commands"] if c.upper().startswith("RETR "))' \
    "$2"
}

# as_served ORIG NAME [DUPS]: the Maildir holds each file of ORIG once (DUPS: up to that many
# more copies), as Mailutils serves it: the original with one "X-UIDL: <time>.<session>"
# field added at the end of its header block (fakepop3d's add_headers), whatever its value;
# the X-UID, Status and X-IMAPbase fields are not compared.
as_served() {
  "$PYTHON" - "$top_srcdir/tests/fakepop3d.py" "$1" "$T/$2.md" "${3:-0}" <<'EOF' ||
import collections, importlib.util, os, re, sys
spec = importlib.util.spec_from_file_location("fakepop3d", sys.argv[1])
fake = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fake)
orig, md, dups = sys.argv[2], sys.argv[3], int(sys.argv[4])
X = "0000000000.000000"


def norm(b):
    """Without the fields Mailutils adds at QUIT (a message fetched again has them)."""
    head, sep, body = fake.split_header(b)
    fields = [f for n, f in fake.header_fields(head) if n not in ("x-uid", "status", "x-imapbase")]
    return b"".join(fields) + sep + body


want = collections.Counter(
    norm(fake.add_headers(open(os.path.join(orig, n), "rb").read(), [("X-UIDL", X)]))
    for n in os.listdir(orig))
got = collections.Counter()
for d in ("new", "cur"):
    for n in os.listdir(os.path.join(md, d)):
        b = open(os.path.join(md, d, n), "rb").read()
        b = re.sub(rb"(?m)^(X-UIDL: )\d{10}\.\d{6}$", rb"\g<1>" + X.encode(), b, count=1)
        got[norm(b)] += 1
missing = want - got
extra = got - want
bad = 0
for b in missing:
    print("not delivered: %r" % b[:60], file=sys.stderr)
for b in extra:
    if b not in want:
        print("delivered, but not as served: %r" % b[:60], file=sys.stderr)
        bad += 1
ndups = sum(k for b, k in extra.items() if b in want)
if ndups > dups:
    print("%d duplicates (at most %d allowed)" % (ndups, dups), file=sys.stderr)
sys.exit(1 if bad or missing or ndups > dups else 0)
EOF
    tt_fail "$2" "$2: not delivered as served"
}

case_keep() {
  local name=keep
  tt_serve "$name" "$T/orig" --profile mailutils
  tt_dl "$name" --keep
  expect_rc "$name" 0 "--keep run 1"
  tt_wait_sessions "$name" 1
  t_assert_eq "$(retrs "$name" 1)" "1 2 3 4 5 6 7 8 9 10" "$name: RETR in run 1"
  as_served "$T/orig" "$name"
  # Mailutils has now added X-UID, Status and X-IMAPbase: every LIST size changed.
  tt_dl "$name" --keep
  expect_rc "$name" 0 "--keep run 2 (sizes grew, UIDs the same)"
  tt_wait_sessions "$name" 2
  t_assert_eq "$(retrs "$name" 2)" "" "$name: RETR in run 2"
  t_assert_eq "$(t_maildir_count "$T/$name.md")" 10 "$name: files after run 2"
  cp "$T/more"/* "$T/$name.srv/"
  tt_dl "$name" --keep
  expect_rc "$name" 0 "--keep run 3 (3 new messages)"
  tt_wait_sessions "$name" 3
  t_assert_eq "$(retrs "$name" 3)" "11 12 13" "$name: RETR in run 3"
  tt_dl "$name" --keep
  expect_rc "$name" 0 "--keep run 4"
  tt_wait_sessions "$name" 4
  t_assert_eq "$(retrs "$name" 4)" "" "$name: RETR in run 4"
  as_served "$T/all" "$name"
  t_assert_eq "$(tt_left "$name")" 13 "$name: messages on the server"
  tt_dl "$name"
  expect_rc "$name" 0 "run 5, without --keep"
  tt_wait_sessions "$name" 5
  t_assert_eq "$(retrs "$name" 5)" "" "$name: RETR in run 5"
  t_assert_eq "$(tt_rec "$name" 'len(r["deleted"])' 5)" 13 "$name: deleted in run 5"
  as_served "$T/all" "$name"
  tt_pass "$name" "+10, +0, +3, +0, then all 13 deleted without RETR"
}

# Kept once (the sizes grow at that QUIT), then a run without --keep: the grown messages
# are the same ones (TOP n 0 digest), deleted without RETR.
case_keep_then_delete() {
  local name=keep-delete
  tt_serve "$name" "$T/orig" --profile mailutils
  tt_dl "$name" --keep
  expect_rc "$name" 0 "--keep run 1"
  tt_wait_sessions "$name" 1
  tt_dl "$name"
  expect_rc "$name" 0 "run 2, without --keep"
  tt_wait_sessions "$name" 2
  t_assert_eq "$(retrs "$name" 2)" "" "$name: RETR in run 2"
  t_assert_eq "$(tt_rec "$name" 'len(r["deleted"])' 2)" 10 "$name: deleted in run 2"
  t_assert_eq "$(tt_left "$name")" 0 "$name: messages on the server"
  as_served "$T/orig" "$name"
  tt_pass "$name" "+10 kept, then all 10 deleted without RETR"
}

case_no_top() {
  local name=no-top
  tt_serve "$name" "$T/orig" --profile mailutils --no-top
  tt_dl "$name" --keep
  expect_rc "$name" 0 "--keep run 1"
  tt_dl "$name" --keep
  expect_rc "$name" 0 "--keep run 2 (sizes grew, no TOP to check them)"
  tt_wait_sessions "$name" 2
  t_assert_eq "$(retrs "$name" 2)" "1 2 3 4 5 6 7 8 9 10" "$name: RETR in run 2"
  as_served "$T/orig" "$name" 10
  tt_pass "$name" "fetched again when the size changed and there is no TOP"
}

case_plain() {
  local name=plain
  tt_serve "$name" "$T/orig" --profile mailutils
  tt_dl "$name"
  expect_rc "$name" 0 "a run without --keep"
  t_assert_eq "$(tt_left "$name")" 0 "$name: messages on the server"
  as_served "$T/orig" "$name"
  tt_dl "$name"
  expect_rc "$name" 0 "the run after"
  as_served "$T/orig" "$name"
  tt_pass "$name" "delivered as served and deleted"
}

tt_case "$PAR" keep case_keep
tt_case "$PAR" keep-delete case_keep_then_delete
tt_case "$PAR" no-top case_no_top
tt_case "$PAR" plain case_plain
tt_cases_done
[ "$TT_FAILS" = 0 ] || t_fail "$TT_FAILS cases failed"
exit 0

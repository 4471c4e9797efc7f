#!/bin/bash
# dl-servers.sh -- exactly once against what real servers do with UIDs (issue 9), with the
# fakepop3d profiles that mirror them:
#   - popa3d and solid-pop3d hash some header lines into the UID (--profile popa3d|solid):
#     a message fetched and deleted, then an identical copy arrives: the copy is fetched
#     again (RETR), never deleted unseen;
#   - --keep fetches A; B with the same headers and size arrives (same UID: the UID is twice
#     in the listing); a run without --keep delivers B: no message is deleted unseen;
#   - two messages sharing a UID in one listing: both delivered, exit 0, a note on stderr;
#   - --keep, then the UID comes back with another size and other headers: fetched;
#   - UID reuse (--uid-mode msgnum): a new message under a retired UID is fetched;
#   - UIDs of 100 and 512 characters are journalled (--keep twice: nothing fetched twice);
#     a 600-character UID for one message: the others still work;
#   - the stdout summary appears only on exit 0; a failure says "failed after N of M
#     messages (B bytes saved)" on stderr.
# Each case runs on its own (tt_case) and reports PASS or its failure; the test fails if any
# case failed.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-180}
t_init dl-servers
. "$top_srcdir/tests/lib/torture.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"
PAR=${PAR:-2}

expect_rc() { # expect_rc NAME RC WHAT
  [ "$TT_RC" = "$2" ] || tt_fail "$1" "$1: $3: pop3 exited $TT_RC, expected $2"
}

# has_file NAME FILE: a file byte-identical to FILE is in NAME's Maildir.
has_file() {
  local f
  for f in "$T/$1.md"/new/* "$T/$1.md"/cur/*; do
    [ -f "$f" ] && cmp -s "$f" "$2" && return 0
  done
  return 1
}

# unseen_deletes NAME SESSION: message numbers the session deleted without retrieving them.
unseen_deletes() {
  tt_rec "$1" 'sorted(set(r["deleted"]) - set(r["retrieved"]))' "$2"
}

# note NAME: the last run's stderr, without the -v protocol trace.
note() {
  grep -v '^pop3: [<>] ' "$T/$1.lasterr"
}

# dup_notes NAME: the lines of the last run that say that the listing had a UID more than once.
dup_notes() {
  note "$1" | grep -Ei '\bUIDs?\b.*(same|share|unique|duplicate|more than once|twice)|(same|shared|duplicate) UID'
}
dup_note() {
  dup_notes "$1" >/dev/null
}

# ---- popa3d / solid-pop3d: an identical copy arrives after a fetch and QUIT ------------------
case_redeliver() {
  local prof=$1 name=redeliver-$1
  tt_msg "$T/$name.orig/0001.eml" one 'first message' 'the body of the first message'
  tt_msg "$T/$name.orig/0002.eml" two 'second message' 'the body of the second message'
  tt_serve "$name" "$T/$name.orig" --profile "$prof"
  tt_dl "$name"
  expect_rc "$name" 0 "run 1"
  t_assert_eq "$(tt_left "$name")" 0 "$name: left on the server after run 1"
  # The same message arrives again (a resent mail, a mailing-list copy): same UID, same size.
  cp "$T/$name.orig/0001.eml" "$T/$name.srv/0003.eml"
  tt_dl "$name"
  expect_rc "$name" 0 "run 2, an identical copy under a committed UID"
  tt_wait_sessions "$name" 2
  t_assert_eq "$(unseen_deletes "$name" 2)" "[]" \
    "$name: messages deleted without RETR in run 2 (the copy was lost)"
  t_assert_eq "$(tt_rec "$name" 'r["retrieved"]' 2)" "[1]" "$name: RETR in run 2"
  t_assert_eq "$(t_maildir_count "$T/$name.md")" 3 "$name: files delivered after run 2"
  t_assert_eq "$(tt_left "$name")" 0 "$name: left on the server after run 2"
  tt_pass "$name" "the identical copy was fetched again"
}

# ---- --keep A; B (same headers, same size) arrives; a run without --keep ---------------------
case_keep_same() {
  local prof=$1 name=keep-same-$1
  tt_msg "$T/$name.a/0001.eml" same 'same headers' 'body of message A, 32 octets.'
  tt_msg "$T/$name.b/0002.eml" same 'same headers' 'body of message B, 32 octets.'
  cmp -s "$T/$name.a/0001.eml" "$T/$name.b/0002.eml" && t_fail "$name: A and B are equal"
  [ "$(stat -c %s "$T/$name.a/0001.eml")" = "$(stat -c %s "$T/$name.b/0002.eml")" ] ||
    t_fail "$name: A and B differ in size"
  tt_serve "$name" "$T/$name.a" --profile "$prof"
  tt_dl "$name" --keep
  expect_rc "$name" 0 "run 1 (--keep)"
  cp "$T/$name.b/0002.eml" "$T/$name.srv/"
  tt_dl "$name" -v
  expect_rc "$name" 0 "run 2 (no --keep; A and B share a UID)"
  tt_wait_sessions "$name" 2
  t_assert_eq "$(unseen_deletes "$name" 2)" "[]" "$name: messages deleted without RETR in run 2"
  has_file "$name" "$T/$name.b/0002.eml" || tt_fail "$name" "$name: B was not delivered"
  has_file "$name" "$T/$name.a/0001.eml" || tt_fail "$name" "$name: A is not in the Maildir"
  dup_note "$name" ||
    tt_fail "$name" "$name: no note on stderr that a UID is in the listing twice"
  tt_pass "$name" "B delivered ($(t_maildir_count "$T/$name.md") files), nothing deleted unseen"
}

# ---- two messages share a UID in one listing -------------------------------------------------
case_dup_uid() {
  local prof=$1 name=dup-uid-$1
  tt_msg "$T/$name.orig/0001.eml" twin 'twin' 'the first twin'
  tt_msg "$T/$name.orig/0002.eml" twin 'twin' 'the second twin, longer than the first'
  tt_msg "$T/$name.orig/0003.eml" other 'another message' 'a message of its own'
  tt_serve "$name" "$T/$name.orig" --profile "$prof"
  tt_dl "$name" -v
  expect_rc "$name" 0 "two messages with one UID in the listing"
  tt_wait_sessions "$name" 1
  dup_note "$name" ||
    tt_fail "$name" "$name: no note on stderr that a UID is in the listing twice"
  local said
  said=$(dup_notes "$name" | head -1)
  t_assert_eq "$(unseen_deletes "$name" 1)" "[]" "$name: deleted without RETR"
  tt_check "$name" "$T/$name.orig"
  tt_dl "$name"
  expect_rc "$name" 0 "the run after"
  tt_check "$name" "$T/$name.orig"
  tt_pass "$name" "both delivered, note: $said"
}

# ---- --keep A; then its UID comes back with another size and other headers -------------------
case_keep_newsize() {
  local name=keep-newsize
  tt_msg "$T/$name.a/0001.eml" same 'the first subject' 'body A'
  tt_msg "$T/$name.b/0002.eml" same 'another subject, other headers' 'body B is longer than A'
  tt_serve "$name" "$T/$name.a" --profile popa3d
  tt_dl "$name" --keep
  expect_rc "$name" 0 "run 1 (--keep)"
  rm -f "$T/$name.srv/0001.eml"
  cp "$T/$name.b/0002.eml" "$T/$name.srv/"
  tt_dl "$name" --keep
  expect_rc "$name" 0 "run 2 (--keep; the UID with another size and Subject)"
  has_file "$name" "$T/$name.b/0002.eml" || tt_fail "$name" "$name: B was not delivered"
  tt_pass "$name" "B (same UID, other size and headers) delivered"
}

# ---- UID reuse: --uid-mode msgnum ------------------------------------------------------------
case_msgnum() {
  local name=msgnum
  tt_msg "$T/$name.a/0001.eml" aaaaa 'message A' 'this is the body of A'
  tt_msg "$T/$name.b/0002.eml" bbbbb 'message B' 'this is the body of B'
  [ "$(stat -c %s "$T/$name.a/0001.eml")" = "$(stat -c %s "$T/$name.b/0002.eml")" ] ||
    t_fail "$name: A and B differ in size"
  tt_serve "$name" "$T/$name.a" --uid-mode msgnum
  tt_dl "$name"
  expect_rc "$name" 0 "run 1"
  t_assert_eq "$(tt_left "$name")" 0 "$name: left after run 1"
  cp "$T/$name.b/0002.eml" "$T/$name.srv/"
  tt_dl "$name"
  expect_rc "$name" 0 "run 2 (B under A's old UID \"1\", same size)"
  tt_wait_sessions "$name" 2
  t_assert_eq "$(unseen_deletes "$name" 2)" "[]" "$name: deleted without RETR in run 2"
  has_file "$name" "$T/$name.b/0002.eml" || tt_fail "$name" "$name: B was not delivered"
  tt_pass "$name" "B under a reused UID delivered"
}

# ---- long UIDs -------------------------------------------------------------------------------
case_long_uids() {
  local name=long-uids
  tt_gen "$T/$name.orig" 4
  tt_serve "$name" "$T/$name.orig" --uid-len 0002.eml=100 --uid-len 0003.eml=512
  tt_dl "$name" --keep
  expect_rc "$name" 0 "run 1 (--keep), UIDs of 100 and 512 characters"
  tt_verify check "$T/$name.orig" "$T/$name.md" --state "$T/$name.state" --what "$name" ||
    tt_fail "$name" "$name: run 1 did not deliver each message once"
  tt_dl "$name" --keep
  expect_rc "$name" 0 "run 2 (--keep)"
  tt_wait_sessions "$name" 2
  t_assert_eq "$(tt_rec "$name" '[c for c in r["commands"] if c.startswith("RETR")]' 2)" \
    "[]" "$name: RETR in run 2 (the long UIDs were not journalled)"
  tt_dl "$name"
  expect_rc "$name" 0 "run 3 (no --keep)"
  tt_wait_sessions "$name" 3
  t_assert_eq "$(tt_rec "$name" '[c for c in r["commands"] if c.startswith("RETR")]' 3)" \
    "[]" "$name: RETR in run 3"
  tt_check "$name" "$T/$name.orig"
  tt_pass "$name" "UIDs of 100 and 512 characters journalled"
}

case_uid600() {
  local name=uid600
  tt_gen "$T/$name.orig" 3
  tt_serve "$name" "$T/$name.orig" --uid-len 0002.eml=600
  tt_dl "$name" --keep
  # --keep: the two others are delivered and journalled whatever happens to message 2.
  if ! has_file "$name" "$T/$name.orig/0001.eml" || ! has_file "$name" "$T/$name.orig/0003.eml"
  then
    tt_fail "$name" "$name: a 600-character UID blocked the others (--keep run exited $TT_RC)"
  fi
  tt_dl "$name" --keep
  tt_wait_sessions "$name" 2
  tt_rec "$name" '[c for c in r["commands"] if c.startswith("RETR")]' 2 | grep -Eq 'RETR [13]"' &&
    tt_fail "$name" "$name: the messages with good UIDs were fetched twice with --keep"
  tt_unserve "$name"
  # Without --keep: everything delivered (message 2 as a message without a UID), exit 0.
  name=uid600b
  tt_serve "$name" "$T/uid600.orig" --uid-len 0002.eml=600
  tt_dl "$name"
  expect_rc "$name" 0 "a run with one 600-character UID"
  tt_check "$name" "$T/uid600.orig"
  tt_pass uid600 "a 600-character UID affects only its message"
}

# ---- the summary only on success -------------------------------------------------------------
case_summary() {
  local name=summary bytes
  tt_gen "$T/$name.orig" 5
  tt_serve "$name" "$T/$name.orig" --err-on-retr 3
  tt_dl "$name"
  expect_rc "$name" 75 "-ERR on RETR 3"
  [ ! -s "$T/$name.out" ] ||
    tt_fail "$name" "$name: stdout has a summary beside exit 75: $(cat "$T/$name.out")"
  bytes=$(cat "$T/$name.md"/new/* | wc -c)
  grep -q "failed after 4 of 5 messages ($bytes bytes saved)" "$T/$name.lasterr" ||
    tt_fail "$name" "$name: stderr lacks 'failed after 4 of 5 messages ($bytes bytes saved)'"
  tt_dl "$name"
  expect_rc "$name" 0 "the rerun"
  grep -q ": 1 messages\?, " "$T/$name.out" ||
    tt_fail "$name" "$name: no summary on stdout after exit 0: '$(cat "$T/$name.out")'"
  tt_check "$name" "$T/$name.orig"
  # A connection that fails (69): no summary either.
  port=$(tt_port "$name")
  tt_unserve "$name"
  tt_dl "$name"
  expect_rc "$name" 69 "nobody listening"
  [ ! -s "$T/$name.out" ] ||
    tt_fail "$name" "$name: stdout has a summary beside exit 69: $(cat "$T/$name.out")"
  tt_pass "$name" "$(grep 'failed after' "$T/$name.err" | head -1)"
}

for prof in popa3d solid; do
  tt_case "$PAR" "redeliver-$prof" case_redeliver "$prof"
  tt_case "$PAR" "keep-same-$prof" case_keep_same "$prof"
  tt_case "$PAR" "dup-uid-$prof" case_dup_uid "$prof"
done
tt_case "$PAR" keep-newsize case_keep_newsize
tt_case "$PAR" msgnum case_msgnum
tt_case "$PAR" long-uids case_long_uids
tt_case "$PAR" uid600 case_uid600
tt_case "$PAR" summary case_summary
tt_cases_done
[ "$TT_FAILS" = 0 ] || t_fail "$TT_FAILS cases failed"
exit 0

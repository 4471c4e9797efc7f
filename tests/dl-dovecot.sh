#!/bin/bash
# shellcheck disable=SC2119 # dovecot_count without arguments means user "test"
# dl-dovecot.sh -- `pop3 dl` against a real private Dovecot 2.3.
#
# 500 varied messages (genmail.py --varied, fixed seed) over tcp:, starttls: and ssl: each: the
# delivered files are exactly what a lock-step RFC 1939 client (popref.py) receives from the same
# mailbox, the server is empty afterwards, the summary line counts the bytes written; a second run
# finds nothing. A wrong password (77) and an untrusted certificate (69) leave the mailbox
# untouched. UID state: a refill of the same files gets new UIDs and is delivered again; --keep
# fetches only new UIDs, and a later normal run deletes what was kept without delivering it twice.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
t_init dl-dovecot
. "$top_srcdir/tests/lib/dovecot.sh"
. "$top_srcdir/tests/lib/fake.sh" # p3, p3_expect, sums, maildir_check (no fake server used)

# Skips (77) only when Dovecot is missing and CI is not "true".
dovecot_start
[ -x "$POP3" ] || t_fail "$POP3 not built"

PW=(--password-command 'echo secret')
GENMAIL=$top_srcdir/tests/lib/genmail.py
POPREF=$top_srcdir/tests/lib/popref.py
SEED=1939

"$PYTHON" "$GENMAIL" "$T/src500" 500 --varied --seed "$SEED" >/dev/null || t_fail "genmail 500"
"$PYTHON" "$GENMAIL" "$T/src50" 50 --varied --seed "$((SEED + 1))" >/dev/null ||
  t_fail "genmail 50"
"$PYTHON" "$GENMAIL" "$T/src30" 30 --varied --seed "$((SEED + 2))" >/dev/null ||
  t_fail "genmail 30"

# fill SRC N: the server mailbox is empty, then holds the N messages of SRC.
fill() {
  t_assert_eq "$(dovecot_count)" 0 "server mailbox empty before filling it with $1"
  dovecot_fill "$1"
  t_assert_eq "$(dovecot_count)" "$2" "server messages after filling it with $1"
}

# empty_server: expunge whatever is left (after the cases that must leave messages there).
empty_server() {
  dovecot_doveadm expunge -u "$DOVECOT_USER" mailbox INBOX all ||
    t_fail "doveadm expunge failed"
  t_assert_eq "$(dovecot_count)" 0 "server mailbox after expunge"
}

# popref_run OUT PORT [OPTS...]: what a lock-step client receives now from the server (no
# DELE) into OUT, its listing ("number uid name octets") in OUT.list; OPTS pick TLS.
popref_run() {
  local out=$1 port=$2
  shift 2
  rm -rf "$out"
  "$PYTHON" "$POPREF" 127.0.0.1 "$port" "$DOVECOT_USER" "$DOVECOT_PASS" "$out" --timeout 30 \
    "$@" >"$out.list" 2>"$T/popref.err" || { cat "$T/popref.err" >&2; t_fail "popref.py $*"; }
}

# count_new MD: files in MD/new (0 when MD/new does not exist).
count_new() {
  if [ -d "$1/new" ]; then
    find "$1/new" -type f | wc -l | tr -d ' '
  else
    echo 0
  fi
}

# check_summary WHAT SPEC N BYTES: stdout is exactly the line "SPEC: N messages, SIZE (BYTES
# bytes) in S s" (SIZE in KiB, MiB or GiB; "BYTES bytes" alone below 1 KiB; S a number of seconds).
check_summary() {
  local what=$1 spec=$2 n=$3 bytes=$4 line prefix rest
  t_assert_eq "$(wc -l <"$T/out" | tr -d ' ')" 1 \
    "$what: lines on stdout ($(head -c 500 "$T/out"))"
  line=$(cat "$T/out")
  prefix="$spec: $n messages, "
  rest=${line#"$prefix"}
  if [ "$rest" = "$line" ] ||
    ! [[ $rest =~ ^([0-9.]+\ [KMG]iB\ \($bytes\ bytes\)|$bytes\ bytes)\ in\ [0-9]+(\.[0-9]+)?\ s$ ]]; then
    t_fail "$what: summary line '$line', expected '${prefix}S s'"
  fi
}

# size_of MD: total bytes of the files in MD/new and MD/cur.
size_of() {
  local d
  for d in "$1/new" "$1/cur"; do
    [ -d "$d" ] && find "$d" -type f -print0
  done | xargs -0 -r cat | wc -c | tr -d ' '
}

# same_sums WHAT WANTFILE GOTFILE: two sorted sha256 lists are equal.
same_sums() {
  if ! cmp -s "$2" "$3"; then
    echo "--- missing from the Maildir / extra in the Maildir:" >&2
    diff "$2" "$3" | head -10 >&2
    t_fail "$1: delivered files differ from what a lock-step client receives"
  fi
}

# --- 500 messages in each transport mode -----------------------------------------------------
# mode NAME SPEC POP3_ARGS -- POPREF_ARGS
mode() {
  local name=$1 spec=$2 md=$T/md-$1 st=$T/$1.state ref=$T/ref-$1 bytes
  shift 2
  local dl_args=() ref_args=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    dl_args+=("$1")
    shift
  done
  shift
  ref_args=("$@")
  t_log "$name: 500 messages"

  fill "$T/src500" 500
  popref_run "$ref" "${ref_args[@]}"
  t_assert_eq "$(find "$ref" -type f | wc -l | tr -d ' ')" 500 "$name: popref files"
  t_assert_eq "$(dovecot_count)" 500 "$name: popref (without DELE) left every message"
  # The corpus is Dovecot-safe: the lock-step client receives the originals unchanged.
  sums "$T/src500" >"$T/src500.sums"
  sums "$ref" >"$ref.sums"
  same_sums "$name: popref vs originals (harness check)" "$T/src500.sums" "$ref.sums"

  p3 dl "${PW[@]}" --state "$st" "${dl_args[@]}" "$spec" "$md"
  p3_expect 0 "$name: 500 messages"
  t_assert_eq "$(count_new "$md")" 500 "$name: files in new/"
  t_assert_eq "$(t_maildir_count "$md")" 500 "$name: files in new/ and cur/"
  sums "$md/new" >"$md.sums"
  same_sums "$name" "$ref.sums" "$md.sums"
  maildir_check "$md"
  bytes=$(size_of "$md")
  check_summary "$name" "$spec" 500 "$bytes"
  t_assert_eq "$(dovecot_count)" 0 "$name: server messages after pop3 dl"
  [ -s "$st" ] || t_fail "$name: state file $st not written"
}

mode tcp "tcp:test@127.0.0.1:$DOVECOT_POP3_PORT" -- "$DOVECOT_POP3_PORT"

# A second run right after: nothing to fetch, nothing changes.
spec="tcp:test@127.0.0.1:$DOVECOT_POP3_PORT"
p3 dl "${PW[@]}" --state "$T/tcp.state" "$spec" "$T/md-tcp"
p3_expect 0 "second run on the emptied mailbox"
check_summary "second run" "$spec" 0 0
t_assert_eq "$(t_maildir_count "$T/md-tcp")" 500 "second run: Maildir unchanged"
t_assert_eq "$(dovecot_count)" 0 "second run: server mailbox"

mode starttls "starttls:test@127.0.0.1!localhost:$DOVECOT_POP3_PORT" --ca-file "$DOVECOT_CA" \
  -- "$DOVECOT_POP3_PORT" --starttls --cafile "$DOVECOT_CA" --servername localhost
mode ssl "ssl:test@127.0.0.1!localhost:$DOVECOT_POP3S_PORT" --ca-file "$DOVECOT_CA" \
  -- "$DOVECOT_POP3S_PORT" --ssl --cafile "$DOVECOT_CA" --servername localhost

# --- refusals leave the mailbox alone --------------------------------------------------------
fill "$T/src30" 30

t_log "wrong password"
p3 dl --password-command 'echo not-the-password' --state "$T/badpw.state" \
  "tcp:test@127.0.0.1:$DOVECOT_POP3_PORT" "$T/md-badpw"
p3_expect 77 "wrong password"
grep -qi 'login' "$T/err" ||
  t_fail "wrong password: stderr does not mention the login: $(cat "$T/err")"
t_log "wrong password: $(head -c 300 "$T/err")"
t_assert_eq "$(dovecot_count)" 30 "wrong password: server messages"
t_assert_eq "$(t_maildir_count "$T/md-badpw")" 0 "wrong password: delivered"

t_log "starttls with an untrusted certificate"
p3 dl "${PW[@]}" --state "$T/badca.state" "starttls:test@127.0.0.1!localhost:$DOVECOT_POP3_PORT" \
  "$T/md-badca"
p3_expect 69 "starttls without --ca-file (test CA not trusted)"
t_log "starttls untrusted: $(head -c 300 "$T/err")"
t_assert_eq "$(dovecot_count)" 30 "starttls untrusted: server messages"
t_assert_eq "$(t_maildir_count "$T/md-badca")" 0 "starttls untrusted: delivered"

t_log "ssl with an untrusted certificate"
p3 dl "${PW[@]}" --state "$T/badca2.state" "ssl:test@127.0.0.1!localhost:$DOVECOT_POP3S_PORT" \
  "$T/md-badca2"
p3_expect 69 "ssl without --ca-file (test CA not trusted)"
t_assert_eq "$(dovecot_count)" 30 "ssl untrusted: server messages"
t_assert_eq "$(t_maildir_count "$T/md-badca2")" 0 "ssl untrusted: delivered"

empty_server

# --- state: the same files refilled get new UIDs and are new messages ------------------------
t_log "state: refill of the same 50 files"
spec="tcp:test@127.0.0.1:$DOVECOT_POP3_PORT"
md=$T/md-state
fill "$T/src50" 50
popref_run "$T/ref-s1" "$DOVECOT_POP3_PORT"
p3 dl "${PW[@]}" --state "$T/s.state" "$spec" "$md"
p3_expect 0 "state: first 50"
t_assert_eq "$(count_new "$md")" 50 "state: files after the first run"
check_summary "state: first 50" "$spec" 50 "$(size_of "$md")"
t_assert_eq "$(dovecot_count)" 0 "state: server after the first run"

fill "$T/src50" 50
popref_run "$T/ref-s2" "$DOVECOT_POP3_PORT"
# The premise: Dovecot gave the refilled messages UIDs it had not used before.
uids1=$(awk '{print $2}' "$T/ref-s1.list" | sort)
uids2=$(awk '{print $2}' "$T/ref-s2.list" | sort)
t_assert_eq "$(comm -12 <(echo "$uids1") <(echo "$uids2") | wc -l | tr -d ' ')" 0 \
  "state: UIDs shared by the first fill and the refill"
bytes0=$(size_of "$md")
p3 dl "${PW[@]}" --state "$T/s.state" "$spec" "$md"
p3_expect 0 "state: refilled 50"
t_assert_eq "$(count_new "$md")" 100 "state: files after the refill run"
check_summary "state: refilled 50" "$spec" 50 "$(($(size_of "$md") - bytes0))"
sums "$T/ref-s1" "$T/ref-s2" >"$T/ref-s.sums"
sums "$md/new" >"$T/md-state.sums"
same_sums "state: both runs" "$T/ref-s.sums" "$T/md-state.sums"
t_assert_eq "$(dovecot_count)" 0 "state: server after the refill run"

# --- --keep: fetch only new UIDs; a later normal run deletes without delivering again --------
t_log "keep mode"
md=$T/md-keep
fill "$T/src30" 30
popref_run "$T/ref-k" "$DOVECOT_POP3_PORT"
sums "$T/ref-k" >"$T/ref-k.sums"

p3 dl "${PW[@]}" --keep --state "$T/s2.state" "$spec" "$md"
p3_expect 0 "keep: first run"
t_assert_eq "$(count_new "$md")" 30 "keep: files after the first run"
sums "$md/new" >"$T/md-keep.sums"
same_sums "keep: first run" "$T/ref-k.sums" "$T/md-keep.sums"
check_summary "keep: first run" "$spec" 30 "$(size_of "$md")"
t_assert_eq "$(dovecot_count)" 30 "keep: server after the first run"

p3 dl "${PW[@]}" --keep --state "$T/s2.state" "$spec" "$md"
p3_expect 0 "keep: second run"
check_summary "keep: second run" "$spec" 0 0
t_assert_eq "$(t_maildir_count "$md")" 30 "keep: files after the second run"
t_assert_eq "$(dovecot_count)" 30 "keep: server after the second run"

p3 dl "${PW[@]}" --state "$T/s2.state" "$spec" "$md"
p3_expect 0 "keep: normal run after keep"
check_summary "keep: normal run after keep" "$spec" 0 0
t_assert_eq "$(t_maildir_count "$md")" 30 "keep: files after the normal run (no redelivery)"
sums "$md/new" "$md/cur" >"$T/md-keep.sums"
same_sums "keep: after the normal run" "$T/ref-k.sums" "$T/md-keep.sums"
t_assert_eq "$(dovecot_count)" 0 "keep: server after the normal run"

t_log "dl-dovecot: all checks passed"
exit 0

#!/bin/bash
# dl-tls.sh -- `pop3 dl` over TLS against fakepop3d: ssl: with --ca-file and !name delivers;
# a wrong certificate name, an untrusted CA, a wrong --tls-fingerprint fail (69) before any
# USER/PASS; the right fingerprint works with no CA and no name; ssl: to an IP literal without
# !name or pin is a usage error; starttls: delivers, and fails without STLS or with a wrong
# name before PASS is sent.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
t_init dl-tls
. "$top_srcdir/tests/lib/fake.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"
command -v openssl >/dev/null || t_skip "no openssl"

PW=(--password-command 'echo secret')
C=$T/certs
sh "$top_srcdir/tests/lib/mkcert.sh" "$C" || t_fail "mkcert.sh failed"
fp=$(openssl x509 -noout -fingerprint -sha256 -in "$C/server.pem" | sed 's/^[^=]*=//')
[ ${#fp} = 95 ] || t_fail "unexpected fingerprint format: $fp"
# The same fingerprint with its last hex digit changed.
last=${fp: -1}
if [ "$last" = 0 ]; then wrongfp=${fp%?}1; else wrongfp=${fp%?}0; fi

mkmsgs "$T/orig" 10
sums "$T/orig" >"$T/want.sums"

serve() { # serve NAME ARGS...: a fresh copy of the originals, served by a new fakepop3d
  local name=$1
  shift
  rm -rf "$T/$name.srv"
  cp -a "$T/orig" "$T/$name.srv"
  fake_start "$name" --maildir "$T/$name.srv" "$@"
}

delivered_all() { # delivered_all NAME MAILDIR TLS-MODE
  sums "$2/new" "$2/cur" >"$T/got.sums"
  cmp -s "$T/want.sums" "$T/got.sums" || t_fail "$1: delivered files differ from the originals"
  maildir_check "$2"
  fake_wait_sessions 1
  t_assert_eq "$(fake_rec '[r["tls"], r["committed"], len(r["deleted"])]')" "[\"$3\", true, 10]" \
    "$1: [tls, committed, deleted]"
  t_assert_eq "$(ls -A "$T/$1.srv" | wc -l)" 0 "$1: files left on the server"
}

# never_sent NAME WORD...: after fake_stop, no session of $FAKE_REC saw a command WORD.
never_sent() {
  local name=$1 w
  shift
  [ -s "$FAKE_REC" ] || return 0
  for w in "$@"; do
    t_assert_eq "$(fake_rec "any(c.upper().startswith('$w') for x in recs for c in x['commands'])")" \
      false "$name: the server received $w"
  done
}

# --- ssl: with --ca-file and !name -----------------------------------------------------------
serve ssl --ssl "$C/server.pem" "$C/server.key"
p3 dl "${PW[@]}" --ca-file "$C/ca.pem" "ssl:test@127.0.0.1!localhost:$FAKE_PORT" "$T/md-ssl"
p3_expect 0 "ssl: with --ca-file"
delivered_all ssl "$T/md-ssl" implicit
grep -Eq "^ssl:test@127\.0\.0\.1!localhost:$FAKE_PORT: 10 messages, ([0-9.]+ [KMG]iB \()?[0-9]+ bytes\)? in [0-9.]+ s\$" \
  "$T/out" || t_fail "ssl: summary line: $(cat "$T/out")"
fake_stop

# --- a certificate for the wrong name ---------------------------------------------------------
serve wrongname --ssl "$C/wrong.pem" "$C/wrong.key"
p3 dl "${PW[@]}" --ca-file "$C/ca.pem" "ssl:test@127.0.0.1!localhost:$FAKE_PORT" "$T/md-wrongname"
p3_expect 69 "ssl: certificate for wrong.example"
grep -qi "certificate" "$T/err" || t_fail "wrong name: stderr does not mention the certificate: $(cat "$T/err")"
fake_stop
never_sent wrongname USER PASS
t_assert_eq "$(t_maildir_count "$T/md-wrongname")" 0 "wrong name: delivered"

# --- an untrusted CA (the system bundle) -----------------------------------------------------
serve untrusted --ssl "$C/server.pem" "$C/server.key"
p3 dl "${PW[@]}" "ssl:test@127.0.0.1!localhost:$FAKE_PORT" "$T/md-untrusted"
p3_expect 69 "ssl: certificate from an untrusted CA"
grep -qi "certificate" "$T/err" || t_fail "untrusted: stderr does not mention the certificate: $(cat "$T/err")"
fake_stop
never_sent untrusted USER PASS
# The error is actionable: who the certificate says it is, its fingerprint as
# --tls-fingerprint takes it (the one openssl gives, colons dropped), and both ways forward.
want_pin="sha256:$(echo "$fp" | tr -d : | tr A-F a-f)"
grep -qF "subject \`CN=localhost', issuer \`CN=pop3sync test CA'" "$T/err" ||
  t_fail "untrusted: no subject and issuer: $(cat "$T/err")"
got_pin=$(grep -o 'fingerprint sha256:[0-9a-f]*' "$T/err" | head -1 | sed 's/^fingerprint //')
t_assert_eq "$got_pin" "$want_pin" "untrusted: the fingerprint printed"
grep -qF -- "--ca-file FILE" "$T/err" || t_fail "untrusted: no --ca-file hint: $(cat "$T/err")"
grep -qF -- "--tls-fingerprint $want_pin" "$T/err" ||
  t_fail "untrusted: no --tls-fingerprint hint: $(cat "$T/err")"
# Following the advice works.
serve untrusted-pin --ssl "$C/server.pem" "$C/server.key"
p3 dl "${PW[@]}" --tls-fingerprint "$got_pin" "ssl:test@127.0.0.1!localhost:$FAKE_PORT" \
  "$T/md-untrusted-pin"
p3_expect 0 "ssl: with the fingerprint the error printed"
delivered_all untrusted-pin "$T/md-untrusted-pin" implicit
fake_stop

# --- the wrong scheme: a hint, not just a TLS or timeout error ---------------------------------
# ssl: to a plaintext server: its greeting is no TLS record.
fake_start plainport
p3 dl "${PW[@]}" "ssl:test@127.0.0.1!localhost:$FAKE_PORT" "$T/md-plainport"
p3_expect 69 "ssl: to a plaintext port"
grep -qF "use starttls: or tcp: instead of ssl:" "$T/err" ||
  t_fail "ssl: to a plaintext port: no hint about the scheme: $(cat "$T/err")"
fake_stop
# tcp: to a TLS server: no greeting comes.
serve tlsport --ssl "$C/server.pem" "$C/server.key"
p3 dl "${PW[@]}" --timeout 2 "tcp:test@127.0.0.1:$FAKE_PORT" "$T/md-tlsport"
p3_expect 75 "tcp: to a TLS port"
grep -qF "no POP3 greeting: if port $FAKE_PORT expects TLS first, use ssl: instead of tcp:" \
  "$T/err" || t_fail "tcp: to a TLS port: no hint about the scheme: $(cat "$T/err")"
fake_stop
never_sent tlsport USER PASS

# --- --tls-fingerprint -----------------------------------------------------------------------
serve pin --ssl "$C/server.pem" "$C/server.key"
p3 dl "${PW[@]}" --tls-fingerprint "sha256:$fp" "ssl:test@127.0.0.1:$FAKE_PORT" "$T/md-pin"
p3_expect 0 "ssl: right fingerprint, no CA, no name"
delivered_all pin "$T/md-pin" implicit
fake_stop

# The same pin without colons and in lower case.
serve pin2 --ssl "$C/server.pem" "$C/server.key"
p3 dl "${PW[@]}" --tls-fingerprint "sha256:$(echo "$fp" | tr -d : | tr A-F a-f)" \
  "ssl:test@127.0.0.1:$FAKE_PORT" "$T/md-pin2"
p3_expect 0 "ssl: right fingerprint, lower case, no colons"
delivered_all pin2 "$T/md-pin2" implicit
fake_stop

serve wrongpin --ssl "$C/server.pem" "$C/server.key"
p3 dl "${PW[@]}" --tls-fingerprint "sha256:$wrongfp" "ssl:test@127.0.0.1:$FAKE_PORT" \
  "$T/md-wrongpin"
p3_expect 69 "ssl: wrong fingerprint"
fake_stop
never_sent wrongpin USER PASS
t_assert_eq "$(ls "$T/wrongpin.srv" | wc -l)" 10 "wrong pin: server files"

# A pin for another certificate next to the right one: one match is enough.
serve twopins --ssl "$C/server.pem" "$C/server.key"
p3 dl "${PW[@]}" --tls-fingerprint "sha256:$wrongfp" --tls-fingerprint "sha256:$fp" \
  "ssl:test@127.0.0.1:$FAKE_PORT" "$T/md-twopins"
p3_expect 0 "ssl: two pins, the second one right"
delivered_all twopins "$T/md-twopins" implicit
fake_stop

# --- ssl: to an IP literal with neither !name nor a pin: usage error ---------------------------
serve ipliteral --ssl "$C/server.pem" "$C/server.key"
p3 dl "${PW[@]}" --ca-file "$C/ca.pem" "ssl:test@127.0.0.1:$FAKE_PORT" "$T/md-ipliteral"
p3_expect 64 "ssl: to an IP literal without a name"
grep -q "^pop3: " "$T/err" || t_fail "IP literal: no error message: $(cat "$T/err")"
fake_stop
never_sent ipliteral USER PASS

# --- starttls: -------------------------------------------------------------------------------
serve stls --stls "$C/server.pem" "$C/server.key"
p3 dl "${PW[@]}" --ca-file "$C/ca.pem" "starttls:test@127.0.0.1!localhost:$FAKE_PORT" "$T/md-stls"
p3_expect 0 "starttls:"
delivered_all stls "$T/md-stls" stls
t_assert_eq "$(fake_rec 'r["stls_discarded"]')" 0 "starttls: plaintext sent after STLS"
fake_stop

serve nostls
p3 dl "${PW[@]}" --ca-file "$C/ca.pem" "starttls:test@127.0.0.1!localhost:$FAKE_PORT" \
  "$T/md-nostls"
p3_expect 69 "starttls: against a server without STLS"
grep -q "^pop3: " "$T/err" || t_fail "no STLS: no error message"
fake_stop
never_sent nostls PASS
t_assert_eq "$(ls "$T/nostls.srv" | wc -l)" 10 "no STLS: server files"

serve stlswrong --stls "$C/wrong.pem" "$C/wrong.key"
p3 dl "${PW[@]}" --ca-file "$C/ca.pem" "starttls:test@127.0.0.1!localhost:$FAKE_PORT" \
  "$T/md-stlswrong"
p3_expect 69 "starttls: certificate for the wrong name"
grep -qi "certificate" "$T/err" || t_fail "starttls wrong name: stderr: $(cat "$T/err")"
fake_stop
never_sent stlswrong PASS
t_assert_eq "$(t_maildir_count "$T/md-stlswrong")" 0 "starttls wrong name: delivered"

t_log "dl-tls: all checks passed"
exit 0

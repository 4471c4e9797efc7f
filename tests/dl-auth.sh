#!/bin/bash
# dl-auth.sh -- `pop3 dl --auth METHOD` against fakepop3d (issue 10): how `auto` chooses (USER
# where offered, SASL PLAIN on TLS and where USER is not offered, APOP only when nothing else
# is); every forced method logs in; a forced method the server does not offer fails with 69
# before any secret is sent; no PASS is ever sent to a server whose CAPA lacks USER; OAuth
# tokens of 3 KiB in the two-step form; a refused token is fetched once more from the
# password command and the login retried once in a new session (with the server's failure
# challenge, and with a plain -ERR); -v never shows a secret (the raw one, its base64 payload,
# or any 16-character piece of that).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
t_init dl-auth
. "$top_srcdir/tests/lib/fake.sh"

[ -x "$POP3" ] || t_skip "$POP3 not built"
[ -n "$PYTHON" ] || t_skip "no python3"
"$POP3" dl --help 2>&1 | grep -q -- '--auth' || t_fail "pop3 dl has no --auth option"

export HOME=$T/home
mkdir -m 700 "$HOME"
unset NETRC

PASSWORD='Qz7-auth-test-passphrase'
PW=(--password-command "echo $PASSWORD")
mkmsgs "$T/orig" 5 800

# serve NAME ARGS...: a fresh copy of the 5 messages, served by fakepop3d with ARGS.
serve() {
  local name=$1
  shift
  rm -rf "$T/srv-$name" "$T/md-$name" "$XDG_STATE_HOME"
  cp -a "$T/orig" "$T/srv-$name"
  fake_start "$name" --maildir "$T/srv-$name" --password "$PASSWORD" "$@"
}

# delivered NAME: all 5 messages arrived.
delivered() {
  t_assert_eq "$(t_maildir_count "$T/md-$1")" 5 "$1: delivered"
}

# no_pass WHAT: no session of the current server received PASS.
no_pass() {
  if grep -q '"PASS \*\*\*"' "$FAKE_REC"; then
    t_fail "$1: PASS was sent"
  fi
}

# no_secret WHAT SECRET [PAYLOAD]: neither SECRET nor PAYLOAD nor any 16-character piece of
# PAYLOAD appears in pop3's output.
no_secret() {
  local what=$1 secret=$2 payload=${3:-}
  if grep -qF -- "$secret" "$T/err" "$T/out"; then
    t_fail "$what: the secret appears in the output"
  fi
  [ -n "$payload" ] || return 0
  "$PYTHON" - "$payload" "$T/err" "$T/out" <<'EOF' || t_fail "$what: the base64 payload (or a piece of it) appears in the output"
import sys
payload = sys.argv[1]
text = "".join(open(f, encoding="latin-1").read() for f in sys.argv[2:])
pieces = {payload[i:i + 16] for i in range(max(1, len(payload) - 15))}
sys.exit(1 if any(p in text for p in pieces) else 0)
EOF
}

b64() {
  "$PYTHON" -c 'import base64, sys; print(base64.b64encode(sys.argv[1].encode("latin-1").decode("unicode_escape").encode("latin-1")).decode())' "$1"
}

# --- auto ------------------------------------------------------------------------------------
# Plaintext, USER listed, an APOP timestamp and SASL PLAIN too: USER/PASS.
serve auto-user --apop --sasl PLAIN
p3 -v dl "${PW[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/md-auto-user"
p3_expect 0 "auto, plaintext with USER"
delivered auto-user
t_assert_eq "$(fake_rec 'r["auth"]')" user "auto, plaintext with USER: method"
grep -q "USER test" "$T/err" || t_fail "auto, plaintext with USER: no USER in the trace"
no_secret "auto, plaintext with USER" "$PASSWORD"
fake_stop

# Plaintext, no USER (Cyrus with allowplaintext: no), SASL PLAIN: PLAIN, and never PASS.
serve auto-nouser --no-user --sasl PLAIN
p3 -v dl "${PW[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/md-auto-nouser"
p3_expect 0 "auto, no USER, SASL PLAIN"
delivered auto-nouser
t_assert_eq "$(fake_rec 'r["auth"]')" plain "auto, no USER, SASL PLAIN: method"
no_pass "auto, no USER, SASL PLAIN"
grep -q "AUTH PLAIN" "$T/err" || t_fail "auto, no USER: no AUTH PLAIN in the trace"
no_secret "auto, no USER" "$PASSWORD" "$(b64 "\\x00test\\x00$PASSWORD")"
fake_stop

# Neither USER nor SASL, a timestamp: APOP.
serve auto-apop --no-user --apop
p3 -v dl "${PW[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/md-auto-apop"
p3_expect 0 "auto, only APOP"
delivered auto-apop
t_assert_eq "$(fake_rec 'r["auth"]')" apop "auto, only APOP: method"
no_pass "auto, only APOP"
grep -q "APOP test \*\*\*\*\*\*\*\*" "$T/err" || t_fail "auto, only APOP: the trace lacks a masked APOP"
grep -Eq "APOP test [0-9a-f]{32}" "$T/err" && t_fail "auto, only APOP: the digest is in the trace"
no_secret "auto, only APOP" "$PASSWORD"
fake_stop

# Nothing offered at all: 69, no secret sent.
serve auto-none --no-user
p3 dl "${PW[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/md-auto-none"
p3_expect 69 "auto, nothing offered"
no_pass "auto, nothing offered"
fake_stop

# No CAPA at all: USER/PASS.
serve auto-nocapa --no-capa
p3 dl "${PW[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/md-auto-nocapa"
p3_expect 0 "auto, no CAPA"
delivered auto-nocapa
t_assert_eq "$(fake_rec 'r["auth"]')" user "auto, no CAPA: method"
fake_stop

# Implicit TLS with USER and SASL PLAIN: PLAIN.
if command -v openssl >/dev/null; then
  C=$T/certs
  sh "$top_srcdir/tests/lib/mkcert.sh" "$C" || t_fail "mkcert.sh failed"
  serve auto-tls --ssl "$C/server.pem" "$C/server.key" --sasl PLAIN,LOGIN
  p3 -v dl "${PW[@]}" --ca-file "$C/ca.pem" "ssl:test@127.0.0.1!localhost:$FAKE_PORT" \
    "$T/md-auto-tls"
  p3_expect 0 "auto over TLS"
  delivered auto-tls
  t_assert_eq "$(fake_rec 'r["auth"]')" plain "auto over TLS: method"
  no_pass "auto over TLS"
  no_secret "auto over TLS" "$PASSWORD" "$(b64 "\\x00test\\x00$PASSWORD")"
  fake_stop
else
  t_log "auto over TLS not checked: no openssl"
fi

# --- every forced method ---------------------------------------------------------------------
TOKEN=$("$PYTHON" -c 'import hashlib; print("".join(hashlib.sha256(b"%d" % i).hexdigest() for i in range(48)))')
[ ${#TOKEN} -ge 3000 ] || t_fail "test token too short"
for m in user apop plain login xoauth2 oauthbearer; do
  secret=$PASSWORD
  case $m in
    xoauth2 | oauthbearer) secret=$TOKEN ;;
  esac
  serve "forced-$m" --apop --sasl PLAIN,LOGIN,XOAUTH2,OAUTHBEARER --token "$TOKEN"
  p3 -v dl --auth "$m" --password-command "echo $secret" "tcp:test@127.0.0.1:$FAKE_PORT" \
    "$T/md-forced-$m"
  p3_expect 0 "--auth $m"
  delivered "forced-$m"
  t_assert_eq "$(fake_rec 'r["auth"]')" "$m" "--auth $m: method"
  case $m in
    user) grep -q "PASS \*\*\*\*\*\*\*\*" "$T/err" || t_fail "--auth user: no masked PASS" ;;
    apop) grep -q "APOP test \*\*\*\*\*\*\*\*" "$T/err" || t_fail "--auth apop: no masked APOP"; no_pass "--auth apop" ;;
    plain) grep -q "AUTH PLAIN" "$T/err" || t_fail "--auth plain: no AUTH PLAIN"; no_pass "--auth plain"
      no_secret "--auth plain" "$secret" "$(b64 "\\x00test\\x00$secret")" ;;
    login) grep -q "AUTH LOGIN" "$T/err" || t_fail "--auth login: no AUTH LOGIN"; no_pass "--auth login"
      no_secret "--auth login" "$secret" "$(b64 "$secret")" ;;
    xoauth2) grep -q "AUTH XOAUTH2" "$T/err" || t_fail "--auth xoauth2: no AUTH XOAUTH2"
      t_assert_eq "$(fake_rec 'r["oauth_tokens"]')" "[\"len:${#TOKEN}\"]" "--auth xoauth2: token"
      no_secret "--auth xoauth2" "$secret" "$(b64 "user=test\\x01auth=Bearer $secret\\x01\\x01")" ;;
    oauthbearer) grep -q "AUTH OAUTHBEARER" "$T/err" || t_fail "--auth oauthbearer: no AUTH OAUTHBEARER"
      t_assert_eq "$(fake_rec 'r["oauth_host"]')" "127.0.0.1:$FAKE_PORT" "--auth oauthbearer: host and port"
      no_secret "--auth oauthbearer" "$secret" ;;
  esac
  no_secret "--auth $m" "$secret"
  fake_stop
done

# --- a forced method that is not offered: 69 before any secret -------------------------------
serve notoffered --sasl PLAIN,LOGIN --apop
p3 dl --auth xoauth2 --password-command "echo $TOKEN" "tcp:test@127.0.0.1:$FAKE_PORT" \
  "$T/md-notoffered"
p3_expect 69 "--auth xoauth2 not offered"
grep -qF "server does not offer SASL XOAUTH2 (it offers: PLAIN LOGIN)" "$T/err" ||
  t_fail "--auth xoauth2 not offered: message: $(cat "$T/err")"
t_assert_eq "$(fake_rec 'r["commands"]')" '["CAPA"]' "--auth xoauth2 not offered: commands"
no_secret "--auth xoauth2 not offered" "$TOKEN"
fake_stop
serve notoffered-apop --sasl PLAIN
p3 dl --auth apop "${PW[@]}" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/md-notoffered-apop"
p3_expect 69 "--auth apop without a timestamp"
t_assert_eq "$(fake_rec 'r["commands"]')" '["CAPA"]' "--auth apop not offered: commands"
fake_stop

# --- OAuth token refresh: one more run of the token command, one more session ----------------
# tokcmd FILE TOKEN...: a password command that prints the Nth TOKEN on its Nth call, counting
# the calls in FILE.
tokcmd() {
  local f=$1
  shift
  printf '%s\n' "$@" >"$f.tokens"
  : >"$f"
  echo "echo x >> '$f'; sed -n \"\$(wc -l < '$f')p\" '$f.tokens'"
}
for mode in challenge err; do
  for m in xoauth2 oauthbearer; do
    # An expired token, then a valid one.
    serve "refresh-$m-$mode" --sasl "$(echo $m | tr a-z A-Z)" --token "$TOKEN" --oauth-fail "$mode"
    cmd=$(tokcmd "$T/calls-$m-$mode" "expired-$TOKEN" "$TOKEN")
    p3 dl --auth "$m" --password-command "$cmd" "tcp:test@127.0.0.1:$FAKE_PORT" \
      "$T/md-refresh-$m-$mode"
    p3_expect 0 "$m ($mode): expired then valid token"
    delivered "refresh-$m-$mode"
    t_assert_eq "$(wc -l <"$T/calls-$m-$mode")" 2 "$m ($mode): token command calls"
    t_assert_eq "$(fake_sessions)" 2 "$m ($mode): sessions"
    t_assert_eq "$(fake_rec 'r["auth_attempts"]' 1)" "[\"$m:fail\"]" "$m ($mode): first session"
    if [ $mode = challenge ]; then
      t_assert_eq "$(fake_rec 'r["oauth_ack"]' 1)" true "$m ($mode): the challenge's answer"
    fi
    t_assert_eq "$(fake_rec 'r["auth"]' 2)" "$m" "$m ($mode): second session"
    no_secret "$m ($mode)" "$TOKEN"
    fake_stop

    # Two invalid tokens: 77, the command run twice, two sessions.
    serve "refused-$m-$mode" --sasl "$(echo $m | tr a-z A-Z)" --token "$TOKEN" --oauth-fail "$mode"
    cmd=$(tokcmd "$T/calls2-$m-$mode" "bad1-$TOKEN" "bad2-$TOKEN")
    p3 dl --auth "$m" --password-command "$cmd" "tcp:test@127.0.0.1:$FAKE_PORT" \
      "$T/md-refused-$m-$mode"
    p3_expect 77 "$m ($mode): two invalid tokens"
    t_assert_eq "$(wc -l <"$T/calls2-$m-$mode")" 2 "$m ($mode): token command calls (refused)"
    t_assert_eq "$(fake_sessions)" 2 "$m ($mode): sessions (refused)"
    grep -q "invalid token" "$T/err" || t_fail "$m ($mode): the server's words are missing: $(cat "$T/err")"
    no_secret "$m ($mode), refused" "bad2-$TOKEN"
    fake_stop
  done
done

# A refused password login is not retried.
serve wrongpass --sasl PLAIN --no-user
p3 dl --auth plain --password-command "echo wrong" "tcp:test@127.0.0.1:$FAKE_PORT" "$T/md-wrongpass"
p3_expect 77 "--auth plain, wrong password"
t_assert_eq "$(fake_sessions)" 1 "--auth plain, wrong password: sessions"
fake_stop

t_log "dl-auth: all checks passed"
exit 0

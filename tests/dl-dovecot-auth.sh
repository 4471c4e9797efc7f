#!/bin/bash
# dl-dovecot-auth.sh -- `pop3 dl --auth METHOD` against a real private Dovecot 2.3 (issue 10).
#
# Dovecot offers auth_mechanisms = plain login apop xoauth2 oauthbearer: the passwd-file passdb
# (plaintext passwords, so APOP works) serves plain login apop, and Dovecot's own oauth2 passdb
# serves xoauth2 oauthbearer, validating each token with one POST to a token-introspection
# server on loopback (tests/lib/oauth-introspect.py: a fixed set of tokens, every request
# counted). Checked:
#  - a python client proves the harness: CAPA lists the mechanisms, the greeting has an APOP
#    timestamp, one XOAUTH2 login costs one introspection request;
#  - every --auth method (user apop plain login xoauth2 oauthbearer) and auto (plaintext: USER,
#    implicit TLS: SASL PLAIN) delivers the mailbox byte for byte and empties it; Dovecot logs
#    the login with that method; the -v trace shows the expected USER/PASS, APOP or AUTH
#    command and never the secret: not the raw secret, not the whole base64 payload, not any
#    16-character piece of it (nor of the token's base64 at any alignment);
#  - OAuth with a 3 KiB token goes over the two-step form (the AUTH line carries no payload);
#  - a token command that prints an expired token, then a valid one: exit 0, the command run
#    exactly twice, two introspection requests (inactive, then active), two sessions;
#  - two invalid tokens: exit 77 with Dovecot's words, the command run exactly twice, two
#    introspection requests, the mailbox untouched;
#  - a second Dovecot offering only auth_mechanisms = plain: a forced login, apop, xoauth2 or
#    oauthbearer fails with 69 before any secret is sent (the trace has nothing after CAPA but
#    QUIT, Dovecot logs no authentication attempt, no introspection request), while --auth
#    plain still works there.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
t_init dl-dovecot-auth
. "$top_srcdir/tests/lib/dovecot.sh"
. "$top_srcdir/tests/lib/fake.sh" # p3, p3_expect, sums, maildir_check (no fake server used)

[ -x "$POP3" ] || t_fail "$POP3 not built"
"$POP3" dl --help 2>&1 | grep -q -- '--auth' || t_fail "pop3 dl has no --auth option"
[ -x "$DOVECOT_BIN" ] || t_skip "dovecot not installed ($DOVECOT_BIN); apt-get install dovecot-pop3d"
[ -n "$PYTHON" ] || t_skip "python3 not found"

export HOME=$T/home
mkdir -m 700 "$HOME"
unset NETRC

# User "mel" of both Dovecot instances; a password that appears nowhere else.
U=mel
PASSWORD='Qz7-dovecot-auth-passphrase'
PW=(--password-command "echo $PASSWORD")
# A valid 3 KiB token (3,072 characters), and the token file of the introspection server.
TOKEN=$("$PYTHON" -c 'import hashlib; print("".join(hashlib.sha256(b"dovecot-%d" % i).hexdigest() for i in range(48)))')
[ ${#TOKEN} = 3072 ] || t_fail "test token has ${#TOKEN} characters, expected 3072"
TOKEN2="second-$TOKEN"
printf '%s %s\n' "$TOKEN" "$U" "$TOKEN2" "$U" >"$T/tokens"

# --- the token-introspection server ----------------------------------------------------------
IP_LOG=$T/introspect.log
t_bg "$PYTHON" "$top_srcdir/tests/lib/oauth-introspect.py" --port-file "$T/introspect.port" \
  --tokens "$T/tokens" --log "$IP_LOG" --lifetime "${T_TIMEOUT:-300}" \
  2>"$T/introspect.err"
IP_PID=$T_BG_PID
for ((i = 0; i < 100; i++)); do
  [ -s "$T/introspect.port" ] && break
  t_alive "$IP_PID" || break
  sleep 0.05
done
[ -s "$T/introspect.port" ] || { cat "$T/introspect.err" >&2; t_fail "oauth-introspect.py did not start"; }
IP_PORT=$(cat "$T/introspect.port")
t_log "introspection server: pid $IP_PID, http://127.0.0.1:$IP_PORT/introspect"

# ip_count: introspection requests so far. ip_actives FROM: the "active" answers of the requests
# after the first FROM, space-separated.
ip_count() {
  grep -c '' "$IP_LOG"
}
ip_actives() {
  tail -n +"$(($1 + 1))" "$IP_LOG" | "$PYTHON" -c '
import json, sys
print(" ".join("true" if json.loads(l)["active"] else "false" for l in sys.stdin if l.strip()))'
}

# Dovecot's oauth2 passdb (readable by its auth process, which runs as root or as us).
mkdir -p "$T/oauth"
chmod 0755 "$T/oauth"
cat >"$T/oauth/dovecot-oauth2.conf.ext" <<EOF
introspection_mode = post
introspection_url = http://127.0.0.1:$IP_PORT/introspect
active_attribute = active
active_value = true
username_attribute = username
timeout_msecs = 10000
EOF
chmod 0644 "$T/oauth/dovecot-oauth2.conf.ext"

# --- Dovecot with every mechanism ------------------------------------------------------------
DOVECOT_INSTANCE=dovecot-all
DOVECOT_AUTH_MECHANISMS="plain login apop xoauth2 oauthbearer"
DOVECOT_PASSWD_MECHANISMS="plain login apop"
DOVECOT_EXTRA_USERS="$U:$PASSWORD"
DOVECOT_EXTRA_CONF="passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $T/oauth/dovecot-oauth2.conf.ext
}"
dovecot_start

GENMAIL=$top_srcdir/tests/lib/genmail.py
"$PYTHON" "$GENMAIL" "$T/src" 12 --varied --seed 1034 >/dev/null || t_fail "genmail"
sums "$T/src" >"$T/src.sums"

# --- harness check: the mechanisms, the APOP timestamp, one introspection POST per login ------
export U TOKEN
"$PYTHON" - "$DOVECOT_POP3_PORT" >"$T/harness.out" 2>&1 <<'PYEOF' || { cat "$T/harness.out" >&2; t_fail "harness check (python client)"; }
import base64, os, re, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
f = s.makefile("rb")
greeting = f.readline()
assert re.search(rb"<[^<>@]+@[^<>]+>", greeting), greeting
s.sendall(b"CAPA\r\n")
assert f.readline().startswith(b"+OK")
caps = []
while True:
    line = f.readline()
    assert line, "EOF in CAPA"
    if line == b".\r\n":
        break
    caps.append(line.strip().decode())
sasl = [c for c in caps if c.startswith("SASL ")]
assert sasl and set(sasl[0].split()[1:]) == {"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"}, caps
assert "USER" in caps, caps
payload = base64.b64encode(("user=%s\x01auth=Bearer %s\x01\x01" % (os.environ["U"], os.environ["TOKEN"])).encode())
assert len(payload) > 4096, len(payload)
s.sendall(b"AUTH XOAUTH2\r\n")
assert f.readline().startswith(b"+ "), "no empty challenge"
s.sendall(payload + b"\r\n")
answer = f.readline()
assert answer.startswith(b"+OK"), answer
s.sendall(b"QUIT\r\n")
f.readline()
print("ok:", sasl[0])
PYEOF
t_assert_eq "$(ip_count)" 1 "harness check: introspection requests for one XOAUTH2 login"
t_assert_eq "$(ip_actives 0)" true "harness check: introspection answer"

# --- helpers ---------------------------------------------------------------------------------
# fill: the mailbox of $U holds the 12 messages.
fill() {
  t_assert_eq "$(dovecot_count "$U")" 0 "mailbox of $U empty before filling"
  dovecot_fill "$T/src" "$U"
  t_assert_eq "$(dovecot_count "$U")" 12 "mailbox of $U after filling"
}

# delivered WHAT MD: MD holds exactly the 12 originals (byte for byte), the mailbox is empty.
delivered() {
  t_assert_eq "$(t_maildir_count "$2")" 12 "$1: delivered files"
  sums "$2/new" "$2/cur" >"$2.sums"
  if ! cmp -s "$T/src.sums" "$2.sums"; then
    diff "$T/src.sums" "$2.sums" | head -10 >&2
    t_fail "$1: delivered files differ from the originals"
  fi
  maildir_check "$2"
  t_assert_eq "$(dovecot_count "$U")" 0 "$1: mailbox after pop3 dl"
}

# untouched WHAT MD: nothing delivered, the 12 messages still on the server.
untouched() {
  t_assert_eq "$(t_maildir_count "$2")" 0 "$1: delivered files"
  t_assert_eq "$(dovecot_count "$U")" 12 "$1: mailbox"
}

# no_secret WHAT SECRET [PAYLOAD...]: neither SECRET, nor a PAYLOAD, nor any 16-character piece
# of a PAYLOAD or of SECRET's base64 (at any of the three alignments) is in pop3's output.
no_secret() {
  local what=$1
  shift
  "$PYTHON" - "$T/err" "$T/out" "$@" <<'PYEOF' || t_fail "$what: a secret (or a piece of its base64) is in the output"
import base64, sys
text = "".join(open(f, encoding="latin-1").read() for f in sys.argv[1:3])
secret, payloads = sys.argv[3], sys.argv[4:]
bad = []
if secret in text:
    bad.append("the raw secret")
raw = secret.encode("latin-1")
for k in range(3):
    # The base64 characters that depend on the secret's bytes alone, whatever precedes it.
    enc = base64.b64encode(b"\0" * k + raw).decode()
    payloads.append(enc[4 if k else 0:len(enc) - 4])
for p in payloads:
    if len(p) >= 16 and p in text:
        bad.append("a whole base64 payload")
    for i in range(max(1, len(p) - 15)):
        piece = p[i:i + 16]
        if len(piece) == 16 and piece in text:
            bad.append("the 16 characters %r" % piece)
            break
if bad:
    sys.stderr.write("found: %s\n" % "; ".join(bad[:5]))
    sys.exit(1)
PYEOF
}

# b64 STRING: base64 of STRING, with \xNN escapes.
b64() {
  "$PYTHON" -c 'import base64, sys; print(base64.b64encode(sys.argv[1].encode("latin-1").decode("unicode_escape").encode("latin-1")).decode())' "$1"
}

# dlog_count ERE: the lines of Dovecot's log matching ERE.
dlog_count() {
  grep -cE -- "$1" "$DOVECOT_LOG" || true
}

# dlog_expect ERE N WHAT: Dovecot's log has N lines matching ERE, waiting (bounded) for the log
# process to catch up when it has fewer.
dlog_expect() {
  local i
  for ((i = 0; i < 100; i++)); do
    [ "$(dlog_count "$1")" -ge "$2" ] && break
    sleep 0.05
  done
  t_assert_eq "$(dlog_count "$1")" "$2" "$3"
}

# Dovecot's lines for a login of $U with METHOD, and for a session with one failed attempt.
login_re() {
  echo "Login: user=<$U>, method=$1,"
}
failed_re() {
  echo "\\(auth failed, 1 attempts in [0-9]+ secs\\): user=<$U>, method=$1,"
}

# --- every method ----------------------------------------------------------------------------
# login_ok NAME SPEC [POP3 ARGS...]: fill, pop3 -v dl, everything delivered.
login_ok() {
  local name=$1 spec=$2
  shift 2
  fill
  p3 -v dl "$@" --state "$T/$name.state" "$spec" "$T/md-$name"
  p3_expect 0 "$name"
  delivered "$name" "$T/md-$name"
}

SPEC="tcp:$U@127.0.0.1:$DOVECOT_POP3_PORT"
SPEC_SSL="ssl:$U@127.0.0.1!localhost:$DOVECOT_POP3S_PORT"

for m in user apop plain login xoauth2 oauthbearer; do
  t_log "--auth $m"
  secret=$PASSWORD
  case $m in
    xoauth2 | oauthbearer) secret=$TOKEN ;;
  esac
  method=${m^^}
  [ "$m" = user ] && method=PLAIN # Dovecot logs USER/PASS as method=PLAIN
  before_logins=$(dlog_count "$(login_re "$method")")
  before_ip=$(ip_count)
  login_ok "$m" "$SPEC" --auth "$m" --password-command "echo $secret"
  dlog_expect "$(login_re "$method")" "$((before_logins + 1))" \
    "--auth $m: Dovecot's logins with method=$method"
  case $m in
    user)
      grep -q "USER $U" "$T/err" || t_fail "--auth user: no USER in the trace"
      grep -q "PASS \*\*\*\*\*\*\*\*" "$T/err" || t_fail "--auth user: no masked PASS in the trace"
      grep -q "AUTH \|APOP " "$T/err" && t_fail "--auth user: AUTH or APOP in the trace"
      no_secret "--auth user" "$secret"
      ;;
    apop)
      grep -q "APOP $U \*\*\*\*\*\*\*\*" "$T/err" || t_fail "--auth apop: no masked APOP in the trace"
      grep -Eq "APOP $U [0-9a-fA-F]{32}" "$T/err" && t_fail "--auth apop: the digest is in the trace"
      grep -q "PASS \|AUTH " "$T/err" && t_fail "--auth apop: PASS or AUTH in the trace"
      no_secret "--auth apop" "$secret"
      ;;
    plain)
      grep -q "AUTH PLAIN" "$T/err" || t_fail "--auth plain: no AUTH PLAIN in the trace"
      grep -q "PASS \|APOP " "$T/err" && t_fail "--auth plain: PASS or APOP in the trace"
      no_secret "--auth plain" "$secret" "$(b64 "\\x00$U\\x00$secret")"
      ;;
    login)
      grep -q "AUTH LOGIN" "$T/err" || t_fail "--auth login: no AUTH LOGIN in the trace"
      grep -q "PASS \|APOP " "$T/err" && t_fail "--auth login: PASS or APOP in the trace"
      no_secret "--auth login" "$secret" "$(b64 "$secret")"
      ;;
    xoauth2)
      grep -q "AUTH XOAUTH2" "$T/err" || t_fail "--auth xoauth2: no AUTH XOAUTH2 in the trace"
      # The two-step form: the AUTH line itself carries no initial response.
      grep -Eq "AUTH XOAUTH2 [^ ]" "$T/err" && t_fail "--auth xoauth2: initial response on the AUTH line"
      no_secret "--auth xoauth2" "$secret" "$(b64 "user=$U\\x01auth=Bearer $secret\\x01\\x01")"
      ;;
    oauthbearer)
      grep -q "AUTH OAUTHBEARER" "$T/err" || t_fail "--auth oauthbearer: no AUTH OAUTHBEARER in the trace"
      grep -Eq "AUTH OAUTHBEARER [^ ]" "$T/err" &&
        t_fail "--auth oauthbearer: initial response on the AUTH line"
      no_secret "--auth oauthbearer" "$secret" \
        "$(b64 "n,a=$U,\\x01host=127.0.0.1\\x01port=$DOVECOT_POP3_PORT\\x01auth=Bearer $secret\\x01\\x01")"
      ;;
  esac
  case $m in
    xoauth2 | oauthbearer)
      t_assert_eq "$(ip_count)" "$((before_ip + 1))" "--auth $m: introspection requests"
      t_assert_eq "$(ip_actives "$before_ip")" true "--auth $m: introspection answer"
      ;;
    *)
      t_assert_eq "$(ip_count)" "$before_ip" "--auth $m: introspection requests (none)"
      ;;
  esac
done

# auto: USER/PASS on the plaintext port, SASL PLAIN over implicit TLS.
t_log "auto, plaintext"
before=$(dlog_count "$(login_re PLAIN)")
login_ok auto-tcp "$SPEC" "${PW[@]}"
grep -q "USER $U" "$T/err" || t_fail "auto, plaintext: no USER in the trace"
grep -q "AUTH \|APOP " "$T/err" && t_fail "auto, plaintext: AUTH or APOP in the trace"
no_secret "auto, plaintext" "$PASSWORD"
dlog_expect "$(login_re PLAIN)" "$((before + 1))" "auto, plaintext: Dovecot's logins"
t_log "auto, implicit TLS"
login_ok auto-ssl "$SPEC_SSL" --auth auto --ca-file "$DOVECOT_CA" "${PW[@]}"
grep -q "AUTH PLAIN" "$T/err" || t_fail "auto over TLS: no AUTH PLAIN in the trace"
grep -q "PASS \|APOP " "$T/err" && t_fail "auto over TLS: PASS or APOP in the trace"
no_secret "auto over TLS" "$PASSWORD" "$(b64 "\\x00$U\\x00$PASSWORD")"
# OAuth over TLS too (the token is no less secret there).
t_log "--auth oauthbearer over implicit TLS"
login_ok oauth-ssl "$SPEC_SSL" --auth oauthbearer --ca-file "$DOVECOT_CA" \
  --password-command "echo $TOKEN"
no_secret "--auth oauthbearer over TLS" "$TOKEN"

# --- OAuth token refresh: one more run of the token command, one more session ----------------
# tokcmd FILE TOKEN...: a password command printing the Nth TOKEN on its Nth call, each call
# appending a line to FILE.
tokcmd() {
  local f=$1
  shift
  printf '%s\n' "$@" >"$f.tokens"
  : >"$f"
  echo "echo x >> '$f'; sed -n \"\$(wc -l < '$f')p\" '$f.tokens'"
}

for m in xoauth2 oauthbearer; do
  method=${m^^}
  t_log "$m: an expired token, then a valid one"
  fill
  before_ip=$(ip_count)
  before_logins=$(dlog_count "$(login_re "$method")")
  before_fail=$(dlog_count "$(failed_re "$method")")
  cmd=$(tokcmd "$T/calls-$m" "expired-$TOKEN" "$TOKEN2")
  p3 -v dl --auth "$m" --password-command "$cmd" --state "$T/refresh-$m.state" "$SPEC" \
    "$T/md-refresh-$m"
  p3_expect 0 "$m: expired then valid token"
  delivered "$m: expired then valid token" "$T/md-refresh-$m"
  t_assert_eq "$(wc -l <"$T/calls-$m" | tr -d ' ')" 2 "$m: token command calls"
  t_assert_eq "$(ip_count)" "$((before_ip + 2))" "$m: introspection requests"
  t_assert_eq "$(ip_actives "$before_ip")" "false true" "$m: introspection answers"
  dlog_expect "$(login_re "$method")" "$((before_logins + 1))" "$m: Dovecot's logins"
  dlog_expect "$(failed_re "$method")" "$((before_fail + 1))" "$m: Dovecot's failed sessions"
  t_assert_eq "$(grep -c "AUTH $method" "$T/err")" 2 "$m: AUTH commands in the trace (two sessions)"
  no_secret "$m: expired then valid" "$TOKEN2"
  no_secret "$m: expired then valid (the expired token)" "expired-$TOKEN"

  t_log "$m: two invalid tokens"
  fill
  before_ip=$(ip_count)
  before_logins=$(dlog_count "$(login_re "$method")")
  before_fail=$(dlog_count "$(failed_re "$method")")
  cmd=$(tokcmd "$T/calls2-$m" "bad1-$TOKEN" "bad2-$TOKEN")
  p3 -v dl --auth "$m" --password-command "$cmd" --state "$T/refused-$m.state" "$SPEC" \
    "$T/md-refused-$m"
  p3_expect 77 "$m: two invalid tokens"
  untouched "$m: two invalid tokens" "$T/md-refused-$m"
  t_assert_eq "$(wc -l <"$T/calls2-$m" | tr -d ' ')" 2 "$m: token command calls (refused)"
  t_assert_eq "$(ip_count)" "$((before_ip + 2))" "$m: introspection requests (refused)"
  t_assert_eq "$(ip_actives "$before_ip")" "false false" "$m: introspection answers (refused)"
  dlog_expect "$(failed_re "$method")" "$((before_fail + 2))" "$m: Dovecot's failed sessions (refused)"
  t_assert_eq "$(dlog_count "$(login_re "$method")")" "$before_logins" "$m: Dovecot's logins (refused)"
  t_assert_eq "$(grep -c "AUTH $method" "$T/err")" 2 "$m: AUTH commands (refused)"
  grep -q "Authentication failed" "$T/err" ||
    t_fail "$m: Dovecot's words are not in the error: $(tail -c 600 "$T/err")"
  no_secret "$m: refused (first token)" "bad1-$TOKEN"
  no_secret "$m: refused (second token)" "bad2-$TOKEN"
  dovecot_doveadm expunge -u "$U" mailbox INBOX all || t_fail "doveadm expunge failed"
done

# A refused password is not retried: one session, the command run once.
t_log "--auth plain, wrong password"
fill
cmd=$(tokcmd "$T/calls-wrong" "wrong-$PASSWORD" "$PASSWORD")
before_ip=$(ip_count)
p3 -v dl --auth plain --password-command "$cmd" --state "$T/wrong.state" "$SPEC" "$T/md-wrong"
p3_expect 77 "--auth plain, wrong password"
untouched "--auth plain, wrong password" "$T/md-wrong"
t_assert_eq "$(wc -l <"$T/calls-wrong" | tr -d ' ')" 1 "--auth plain, wrong password: command calls"
t_assert_eq "$(grep -c "AUTH PLAIN" "$T/err")" 1 "--auth plain, wrong password: AUTH commands"
t_assert_eq "$(ip_count)" "$before_ip" "--auth plain, wrong password: introspection requests"
no_secret "--auth plain, wrong password" "wrong-$PASSWORD" "$(b64 "\\x00$U\\x00wrong-$PASSWORD")"
dovecot_doveadm expunge -u "$U" mailbox INBOX all || t_fail "doveadm expunge failed"
dovecot_stop

# --- a Dovecot that offers only PLAIN: a forced other method fails with 69, no secret sent ---
DOVECOT_INSTANCE=dovecot-plain
DOVECOT_AUTH_MECHANISMS=plain
DOVECOT_PASSWD_MECHANISMS=
DOVECOT_EXTRA_CONF=
dovecot_start
SPEC="tcp:$U@127.0.0.1:$DOVECOT_POP3_PORT"
"$PYTHON" - "$DOVECOT_POP3_PORT" >"$T/harness2.out" 2>&1 <<'PYEOF' || { cat "$T/harness2.out" >&2; t_fail "harness check of the PLAIN-only Dovecot"; }
import re, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
f = s.makefile("rb")
greeting = f.readline()
assert greeting.startswith(b"+OK") and not re.search(rb"<[^<>]*@[^<>]*>", greeting), greeting
s.sendall(b"CAPA\r\n")
caps = []
assert f.readline().startswith(b"+OK")
while True:
    line = f.readline()
    assert line
    if line == b".\r\n":
        break
    caps.append(line.strip())
assert b"SASL PLAIN" in caps, caps
s.sendall(b"QUIT\r\n")
f.readline()
PYEOF

fill
before_ip=$(ip_count)
for m in login apop xoauth2 oauthbearer; do
  t_log "PLAIN-only Dovecot: --auth $m"
  secret=$PASSWORD
  case $m in
    xoauth2 | oauthbearer) secret=$TOKEN ;;
  esac
  lines_before=$(grep -c '' "$DOVECOT_LOG" || true)
  lines_noauth=$(dlog_count "\\(no auth attempts in [0-9]+ secs\\)")
  p3 -v dl --auth "$m" --password-command "echo $secret" --state "$T/no-$m.state" "$SPEC" \
    "$T/md-no-$m"
  p3_expect 69 "PLAIN-only Dovecot: --auth $m"
  untouched "PLAIN-only Dovecot: --auth $m" "$T/md-no-$m"
  if [ "$m" = apop ]; then
    grep -q "does not offer APOP" "$T/err" ||
      t_fail "--auth apop not offered: message: $(tail -c 600 "$T/err")"
  else
    mech=${m^^}
    grep -qF "server does not offer SASL $mech (it offers: PLAIN)" "$T/err" ||
      t_fail "--auth $m not offered: message: $(tail -c 600 "$T/err")"
  fi
  # The client's commands (trace lines "pop3: > ..."): CAPA, then at most QUIT.
  cmds=$(sed -n 's/^pop3: > //p' "$T/err" | tr '\n' ' ')
  case $cmds in
    "CAPA " | "CAPA QUIT ") ;;
    *) t_fail "--auth $m not offered: the client sent '$cmds', expected CAPA and at most QUIT" ;;
  esac
  no_secret "--auth $m not offered" "$secret"
  # Dovecot saw one more session, without an authentication attempt.
  dlog_expect "\\(no auth attempts in [0-9]+ secs\\)" "$((lines_noauth + 1))" \
    "--auth $m not offered: Dovecot's sessions without an authentication attempt"
  tail -n +"$((lines_before + 1))" "$DOVECOT_LOG" >"$T/dlog-$m"
  if grep -Eq "auth failed|Login: |[0-9]+ attempts" "$T/dlog-$m"; then
    cat "$T/dlog-$m" >&2
    t_fail "--auth $m not offered: Dovecot logged an authentication attempt"
  fi
done
t_assert_eq "$(ip_count)" "$before_ip" "PLAIN-only Dovecot: introspection requests"

# The same instance logs in with what it offers.
t_log "PLAIN-only Dovecot: --auth plain"
p3 -v dl --auth plain "${PW[@]}" --state "$T/plain-only.state" "$SPEC" "$T/md-plain-only"
p3_expect 0 "PLAIN-only Dovecot: --auth plain"
delivered "PLAIN-only Dovecot: --auth plain" "$T/md-plain-only"
no_secret "PLAIN-only Dovecot: --auth plain" "$PASSWORD" "$(b64 "\\x00$U\\x00$PASSWORD")"
dovecot_stop

t_log "dl-dovecot-auth: all checks passed"
exit 0

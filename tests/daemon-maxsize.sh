#!/bin/bash
# daemon-maxsize.sh -- pop3syncd's max_size (issue 12, size limits):
#   - a global max_size = "64K" applies to an account that sets none: its large message stays
#     on the server, the run is ok (exit 0), and `pop3ctl status --json` lists it in
#     last_run.over_size ({"number","uid","size"}) with over_size_count and over_size_bytes;
#   - max_size = 0 in an account lifts the global limit;
#   - a bad max_size is a FILE:LINE config error (78);
#   - after a reload with a higher limit, a fetch brings the large message, exactly once, and
#     last_run.over_size is empty again.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
T_TIMEOUT=${T_TIMEOUT:-90}
t_init daemon-maxsize
. "$top_srcdir/tests/lib/daemon.sh"
daemon_require

mail_gen "$T/orig" 2
mail_gen "$T/orig" 1 --size 100000 --start 3
t_assert_eq "$(ls "$T/orig" | tr '\n' ' ')" "0001.eml 0002.eml 0003.eml " "the originals"
# What LIST says (the CRLF form) and the UID fakepop3d gives it (SHA-1 of the bytes).
BIG_SIZE=$("$PYTHON" -c 'import sys; b = open(sys.argv[1], "rb").read(); print(len(b) + b.count(b"\n"))' \
  "$T/orig/0003.eml")
BIG_UID=$(sha1sum "$T/orig/0003.eml" | cut -c1-20)
[ "$BIG_SIZE" -gt 65536 ] || t_fail "0003.eml is not over 64 KiB ($BIG_SIZE)"
mkdir "$T/small"
cp "$T"/orig/000[12].eml "$T/small/"
cp -r "$T/orig" "$T/srv-lim"
cp -r "$T/orig" "$T/srv-free"
fake_start lim --maildir "$T/srv-lim"
PORT_LIM=$FAKE_PORT
fake_start free --maildir "$T/srv-free"
PORT_FREE=$FAKE_PORT

# write_conf LIMIT_LINE: the config, with LIMIT_LINE in account lim.
CONF=$T/etc/pop3sync.conf
mkdir -p "$T/etc"
write_conf() {
  {
    daemon_conf_globals
    cat <<EOF
interval = 3600;
max_size = "64K";
accounts = (
  { name = "lim";
    server = "tcp:test@127.0.0.1:$PORT_LIM";
    maildir = "$T/mail/lim";
    $1
    password = "secret"; },
  { name = "free";
    server = "tcp:test@127.0.0.1:$PORT_FREE";
    maildir = "$T/mail/free";
    max_size = 0;
    password = "secret"; }
);
EOF
  } | daemon_conf "$CONF"
}

# ---- a bad max_size: FILE:LINE, 78
write_conf 'max_size = "10X";'
line=$(grep -n 'max_size = "10X"' "$CONF" | cut -d: -f1)
out=$("$DAEMON" --check-config -c "$CONF" 2>&1)
rc=$?
t_assert_eq "$rc" 78 "--check-config with max_size = \"10X\": exit status ($out)"
echo "$out" | grep -qF "$CONF:$line: max_size \`10X' is not a size" ||
  t_fail "--check-config with max_size = \"10X\": no '$CONF:$line: max_size ...' in: $out"
write_conf 'max_size = -1;'
out=$("$DAEMON" --check-config -c "$CONF" 2>&1)
t_assert_eq "$?" 78 "--check-config with max_size = -1: exit status ($out)"
echo "$out" | grep -qF "$CONF:$line: \`max_size' must be between 0 and" ||
  t_fail "--check-config with max_size = -1: no '$CONF:$line: ...' in: $out"

# ---- the global limit
write_conf ''
out=$("$DAEMON" --check-config -c "$CONF" 2>&1) || t_fail "--check-config of the good file: $out"
daemon_start "$CONF"
out=$(ctl fetch lim 2>&1) || d_fail "pop3ctl fetch lim: $out"
out=$(ctl fetch free 2>&1) || d_fail "pop3ctl fetch free: $out"
wait_maildir "$T/mail/lim" 2 10 || d_fail "lim: the small messages did not arrive"
same_messages "$T/small" "$T/mail/lim" || d_fail "lim: the Maildir is not the two small messages"
same_messages "$T/orig" "$T/mail/free" || d_fail "free: the Maildir is not all three messages"
t_assert_eq "$(ls "$T/srv-lim" | tr '\n' ' ')" "0003.eml " "lim: left on the server"
t_assert_eq "$(ls "$T/srv-free" | wc -l)" 0 "free: left on the server"

daemon_status_json
t_assert_eq "$(jq_py "$T/status.json" 'acc("lim")["last_run"]["result"]')" ok "lim: last_run.result"
t_assert_eq "$(jq_py "$T/status.json" 'acc("lim")["last_run"]["exit"]')" 0 "lim: last_run.exit"
# The number is 3 when the fetch joined the run made at startup, else 1 (the run after it).
t_assert_eq "$(jq_py "$T/status.json" '[dict(o, number=o["number"] in (1, 3)) for o in acc("lim")["last_run"]["over_size"]]')" \
  "[{\"number\": true, \"uid\": \"$BIG_UID\", \"size\": $BIG_SIZE}]" "lim: last_run.over_size"
t_assert_eq "$(jq_py "$T/status.json" 'acc("lim")["last_run"]["over_size_count"]')" 1 \
  "lim: last_run.over_size_count"
t_assert_eq "$(jq_py "$T/status.json" 'acc("lim")["last_run"]["over_size_bytes"]')" "$BIG_SIZE" \
  "lim: last_run.over_size_bytes"
t_assert_eq "$(jq_py "$T/status.json" 'acc("free")["last_run"]["over_size"]')" "[]" \
  "free: last_run.over_size"
# The table's notes say it too (human_bytes of the LIST size).
big_h=$("$PYTHON" -c 'import sys; print("%.1f KiB" % (int(sys.argv[1]) / 1024))' "$BIG_SIZE")
out=$(ctl status 2>&1) || d_fail "pop3ctl status: $out"
echo "$out" | grep -qx "lim: 1 message ($big_h) over max_size left on the server" ||
  d_fail "pop3ctl status: no note for lim's over-size message in: $out"
echo "$out" | grep -q "^free: .*max_size" && d_fail "pop3ctl status: a note for free in: $out"
grep -q "lim: 1 message over 64 KiB left on the server" "$DAEMON_LOG" ||
  d_fail "the log does not say what lim left on the server"

# ---- a higher limit, by reload: the large message comes, once
write_conf 'max_size = "1M";'
out=$(ctl reload 2>&1) || d_fail "pop3ctl reload: $out"
out=$(ctl fetch lim 2>&1) || d_fail "pop3ctl fetch lim after the reload: $out"
t_assert_eq "$out" "lim: ok, 1 message, $(wc -c <"$T/orig/0003.eml") bytes" "fetch lim after the reload"
same_messages "$T/orig" "$T/mail/lim" || d_fail "lim: the Maildir is not all three messages, once"
t_assert_eq "$(ls "$T/srv-lim" | wc -l)" 0 "lim: left on the server after the reload"
daemon_status_json
t_assert_eq "$(jq_py "$T/status.json" 'acc("lim")["last_run"]["over_size"]')" "[]" \
  "lim: last_run.over_size after the reload"
t_assert_eq "$(jq_py "$T/status.json" 'acc("lim")["last_run"]["over_size_count"]')" 0 \
  "lim: last_run.over_size_count after the reload"

daemon_stop || d_fail "pop3syncd did not stop cleanly"
t_log "ok: max_size leaves large messages on the server and says so in the status"

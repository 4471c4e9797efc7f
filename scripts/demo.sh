#!/bin/bash
# The demo: installs the build dependencies if missing, builds pop3sync,
# starts the project's own test POP3 server on a loopback port with a few
# dozen generated messages, fetches them with `pop3 dl` into demo/Maildir,
# and shows what was delivered.  Needs no account and no network.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
echo "demo: checking the build dependencies (apt-get installs any that are missing)"
bash "$top/scripts/deps.sh" build
echo "demo: building pop3sync in $top/build (a minute the first time)"
bash "$top/scripts/build.sh" "$top/build"
demo=$top/demo
rm -rf "$demo"
mkdir -p "$demo"
portfile=$demo/server.port
python3 "$top/tests/fakepop3d.py" --generate 40:3000 --user demo --password demo-secret \
  --latency 100 --lifetime 120 >"$portfile" 2>"$demo/server.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q '^PORT ' "$portfile" 2>/dev/null && break
  sleep 0.1
done
port=$(awk '/^PORT /{print $2; exit}' "$portfile")
[ -n "$port" ] || { echo "demo: the test server did not start" >&2; cat "$demo/server.log" >&2; exit 1; }
echo "demo: test POP3 server on 127.0.0.1:$port with 40 messages, 100 ms one-way latency"
echo "demo: pop3 dl tcp:demo@127.0.0.1:$port $demo/Maildir"
"$top/build/pop3" dl --password-command 'echo demo-secret' --state "$demo/state" \
  "tcp:demo@127.0.0.1:$port" "$demo/Maildir"
echo
echo "demo: delivered into $demo/Maildir/new:"
for f in "$demo"/Maildir/new/*; do
  subj=$(grep -m1 '^Subject:' "$f" | cut -c1-60)
  printf '  %-58s %s\n' "$(basename "$f" | cut -c1-58)" "$subj"
done | head -50
echo "demo: $(ls "$demo/Maildir/new" | wc -l) files in new/"
echo "demo: a second run finds the server mailbox empty:"
"$top/build/pop3" dl --password-command 'echo demo-secret' --state "$demo/state" \
  "tcp:demo@127.0.0.1:$port" "$demo/Maildir"

#!/bin/bash
# completion.sh -- the bash completion scripts (completions/pop3, pop3ctl, pop3syncd):
#   - each one passes `bash -n' and registers its function with bash-completion loaded;
#   - `pop3ctl fe<TAB>' is fetch; `pop3ctl <TAB>' lists every command; `-<TAB>' the options;
#   - `pop3ctl fetch/status/watch <TAB>' offers the account names of the config file the
#     daemon reads ($XDG_CONFIG_HOME/pop3sync/pop3sync.conf), or of `-c FILE' when given,
#     and not other `name'-like keys (hostname) or commented-out accounts;
#   - `pop3 <TAB>' is dl, help and info (`pop3 info' takes its own options and one SPEC, no
#     MAILDIR), `pop3 dl --pi<TAB>' is --pipelining=, and `pop3syncd --ch<TAB>' is
#     --check-config.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}/tests/lib/common.sh"
t_init completion

BC=${BASH_COMPLETION:-/usr/share/bash-completion/bash_completion}
[ -r "$BC" ] || t_skip "bash-completion not installed ($BC)"
C=$top_srcdir/completions

for f in pop3 pop3ctl pop3syncd; do
  bash -n "$C/$f" || t_fail "completions/$f: bash -n"
done

# The file the daemon reads: XDG for a user, /etc/pop3sync/pop3sync.conf for root (here
# $T/etc/pop3sync.conf, through the completion's _POP3SYNC_SYSTEM_CONF).
mkdir -p "$T/xdg/pop3sync" "$T/etc"
if [ "$(id -u)" = 0 ]; then
  CONF=$T/etc/pop3sync.conf
  printf 'accounts = ( { name = "user-only"; server = "h"; maildir = "/m"; } );\n' \
    >"$T/xdg/pop3sync/pop3sync.conf"
else
  CONF=$T/xdg/pop3sync/pop3sync.conf
  printf 'accounts = ( { name = "root-only"; server = "h"; maildir = "/m"; } );\n' \
    >"$T/etc/pop3sync.conf"
fi
cat >"$CONF" <<'CONF'
interval = 300;
hostname = "not-an-account";
accounts = (
  { name = "work";
    server = "me@mail.example.com"; maildir = "~/Maildir"; },
  {
    name="play.2_x-y"; server = "h"; maildir = "/m"; },
  # { name = "commented"; server = "h"; maildir = "/m"; },
  { name : "colon"; server = "h"; maildir = "/m"; enabled = false; }
);
CONF
printf 'accounts = ( { name = "other"; server = "h"; maildir = "/m"; } );\n' >"$T/other.conf"

# complete LINE: the sorted COMPREPLY for the command line LINE (cursor at its end),
# in a fresh interactive-like bash with bash-completion and the three scripts.
complete_line() {
  HOME=$T XDG_CONFIG_HOME=$T/xdg _POP3SYNC_SYSTEM_CONF=$T/etc/pop3sync.conf bash --norc --noprofile -c '
    . "$1" >/dev/null 2>&1 || exit 90
    compopt() { :; } # only inside a real completion; COMPREPLY is what is checked
    for f in pop3 pop3ctl pop3syncd; do . "$2/$f" || exit 91; done
    line=$3
    read -r -a words <<<"$line"
    [[ $line == *" " ]] && words+=("")
    cmd=${words[0]}
    spec=$(complete -p "$cmd" 2>/dev/null) || exit 92
    fn=${spec#*-F }; fn=${fn%% *}
    COMP_LINE=$line COMP_POINT=${#line}
    COMP_WORDS=("${words[@]}") COMP_CWORD=$((${#words[@]} - 1))
    COMPREPLY=()
    "$fn" "$cmd" "${words[COMP_CWORD]}" "${words[COMP_CWORD - 1]}"
    printf "%s\n" "${COMPREPLY[@]}" | sort
  ' complete_line "$BC" "$C" "$1"
}

expect() {
  local line=$1 want=$2 got
  got=$(complete_line "$line")
  local rc=$?
  [ "$rc" = 0 ] || t_fail "\`$line<TAB>': the completion shell exited $rc"
  t_assert_eq "$got" "$want" "\`$line<TAB>'"
}

nl() { printf '%s\n' "$@" | sort; }

expect "pop3ctl fe" fetch
expect "pop3ctl " "$(nl fetch help reload status watch)"
expect "pop3ctl --" "$(nl --config --help --socket --version)"
expect "pop3ctl -s /run/x.sock st" status
expect "pop3ctl fetch " "$(nl colon play.2_x-y work)"
expect "pop3ctl fetch w" work
expect "pop3ctl status p" play.2_x-y
expect "pop3ctl watch " "$(nl colon play.2_x-y work)"
expect "pop3ctl fetch --" "$(nl --all --no-wait)"
expect "pop3ctl status --" --json
expect "pop3ctl -c $T/other.conf fetch " other
expect "pop3ctl reload " ""
expect "pop3 " "$(nl dl help info)"
expect "pop3 help " "$(nl dl info)"
expect "pop3 info --t" "$(nl --timeout --tls-fingerprint)"
expect "pop3 info " "$(nl ssl: starttls: tcp:)"
expect "pop3 info ssl:h " ""
expect "pop3 dl --pi" --pipelining=
expect "pop3 dl --auth x" xoauth2
expect "pop3syncd --ch" --check-config

# Without a config file there are no names, and no error.
rm "$CONF"
expect "pop3ctl fetch " ""
exit 0

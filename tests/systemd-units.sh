#!/bin/bash
# systemd-units.sh -- the unit templates in systemd/ become valid units: placeholders are
# substituted as Makefile.am does, `systemd-analyze verify` accepts the system unit and
# (with --user) the user unit without a word about them, and the lines the daemon's contract
# depends on are there.  Prints the `systemd-analyze security` exposure of the system unit
# where systemd can evaluate it offline.  Needs systemd-analyze (Debian: the systemd package);
# never starts a unit, so no running systemd is needed.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

if [ -z "${top_srcdir:-}" ]; then
  top_srcdir=$(cd "$(dirname "$0")/.." && pwd)
fi
# Run by hand from the source tree: the configured tree is build/.
if [ -z "${top_builddir:-}" ] && [ -x "$top_srcdir/build/pop3syncd" ]; then
  top_builddir=$top_srcdir/build
fi
. "$top_srcdir/tests/lib/common.sh"
t_init systemd-units

command -v systemd-analyze >/dev/null 2>&1 ||
  t_skip "systemd-analyze not found; install the systemd package (apt-get install systemd)"

bindir=$top_builddir
[ -x "$bindir/pop3syncd" ] || t_fail "$bindir/pop3syncd is not built (verify checks ExecStart=)"

# Makefile.am's substitution.  sysconfdir only appears in comments.
subst() {
  sed -e "s|@bindir@|$bindir|g" -e "s|@sysconfdir@|/etc|g" "$1" >"$2" ||
    t_fail "cannot substitute $1"
  if grep -n '@[A-Za-z_]*@' "$2" >&2; then
    t_fail "$1 uses a placeholder that Makefile.am does not substitute"
  fi
}

mkdir -p "$T/system" "$T/user" "$T/xdg"
chmod 700 "$T/xdg"
sys=$T/system/pop3syncd.service
usr=$T/user/pop3syncd.service # installed under this name in the user unit dir
subst "$top_srcdir/systemd/pop3syncd.service.in" "$sys"
subst "$top_srcdir/systemd/pop3syncd-user.service.in" "$usr"

# $1 = unit file, rest = extra systemd-analyze options.  verify loads the unit in a manager
# in test mode; it prints problems on stderr and fails on errors.  --man=no: the man pages
# of Documentation= are not installed yet (checked against doc/ below instead).  Lines about
# other units (the host's own) are shown but do not count.
verify() {
  local unit=$1 out rc
  shift
  out=$(systemd-analyze verify --man=no "$@" "$unit" 2>&1)
  rc=$?
  [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/# verify: /' >&2
  [ $rc -eq 0 ] || t_fail "systemd-analyze verify ${*:+$* }$unit exited $rc"
  if printf '%s\n' "$out" | grep -q 'pop3syncd'; then
    t_fail "systemd-analyze verify ${*:+$* }complains about $unit"
  fi
}

verify "$sys"
# A user manager needs $XDG_RUNTIME_DIR, which a test runner (or CI) may not have.
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "$XDG_RUNTIME_DIR" ] || [ ! -w "$XDG_RUNTIME_DIR" ]; then
  XDG_RUNTIME_DIR=$T/xdg
fi
XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR verify "$usr" --user

# $1 = file, $2 = the exact line (no leading or trailing blanks).
has_line() {
  grep -qxF -- "$2" "$1" || t_fail "$(basename "$(dirname "$1")") unit lacks the line \`$2'"
}
for u in "$sys" "$usr"; do
  has_line "$u" "Type=notify"
  has_line "$u" "ExecStart=$bindir/pop3syncd"
  has_line "$u" 'ExecReload=/bin/kill -HUP $MAINPID'
  has_line "$u" "Restart=on-failure"
  has_line "$u" "NoNewPrivileges=yes"
  has_line "$u" "RuntimeDirectory=pop3sync"
  has_line "$u" "StateDirectory=pop3sync"
  # 78 (bad config) must never be restarted: it cannot fix itself.
  grep -qE '^RestartPreventExitStatus=(.* )?78( |$)' "$u" ||
    t_fail "$(basename "$(dirname "$u")") unit does not prevent restarts on exit 78"
  # The daemon exits within 10 s of SIGTERM; systemd must not kill it sooner.
  stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\{0,1\}$/\1/p' "$u")
  if [ -z "$stop" ] || [ "$stop" -le 10 ]; then
    t_fail "$u: TimeoutStopSec= must be over 10 s"
  fi
  # Every man page named in Documentation= is in doc/.
  for page in $(sed -n 's/^Documentation=//p' "$u"); do
    case $page in
      man:*) f=${page#man:}; name=${f%(*}; sec=${f#*(}; sec=${sec%)} ;;
      *) continue ;;
    esac
    [ -f "$top_srcdir/doc/$name.$sec" ] || t_fail "$u names $page, but doc/$name.$sec is missing"
  done
done
has_line "$sys" "WantedBy=multi-user.target"
has_line "$usr" "WantedBy=default.target"
has_line "$sys" "ProtectSystem=strict"
has_line "$sys" "ProtectHome=read-only"

# Privilege separation: the workers become each account's user, so the unit keeps
# exactly the capabilities for that and none for writing as root into users' files.
caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$sys")
for c in CAP_SETUID CAP_SETGID CAP_KILL; do
  case " $caps " in
    *" $c "*) ;;
    *) t_fail "system unit: CapabilityBoundingSet= lacks $c" ;;
  esac
done
for c in CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_SYS_ADMIN; do
  case " $caps " in
    *" $c "*) t_fail "system unit: CapabilityBoundingSet= still grants $c" ;;
  esac
done
# ~@privileged denies setgroups/setresuid; a later allow line must bring @setuid back.
setuid_ok=$(awk '
  /^SystemCallFilter=/ {
    v = substr($0, length("SystemCallFilter=") + 1)
    if (v == "") { ok = 1; next }
    deny = (substr(v, 1, 1) == "~")
    if (deny && v ~ /@privileged|@setuid/) ok = 0
    else if (!deny && v ~ /@setuid/) ok = 1
  }
  BEGIN { ok = 1 }
  END { print ok }' "$sys")
[ "$setuid_ok" = 1 ] || t_fail "system unit: SystemCallFilter= denies @setuid, which the workers need"
has_line "$sys" "PrivateTmp=yes"
# What needs CAP_CHOWN runs before, with full privileges, at start and at reload.
has_line "$sys" "ExecStartPre=+$bindir/pop3syncd --prepare-state"
has_line "$sys" "ExecReload=+$bindir/pop3syncd --prepare-state"
grep -E '^SystemCallFilter=.*@chown' "$sys" && t_fail "system unit: SystemCallFilter= still allows @chown"

# The exposure score (systemd >= 250 can evaluate a unit file offline): never above 2.2.
if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
  score=$(systemd-analyze security --offline=true --no-pager "$sys" 2>/dev/null |
    sed -n 's/^.*Overall exposure level for [^:]*: *\([0-9.]*\).*/\1/p')
  t_log "systemd-analyze security: system unit exposure ${score:-unknown}"
  if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s > 2.2) }'; then
    t_fail "system unit exposure $score is above 2.2"
  fi
else
  t_log "systemd-analyze security --offline is not available here; no exposure score"
fi

echo "PASS: systemd-units"
exit 0

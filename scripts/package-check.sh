#!/bin/bash
# The Debian package, end to end (as root, on Debian 12; a few minutes):
#   1. copies the tree (the files git knows, committed or not, no build
#      output) into a temporary directory, runs `dpkg-source -b .' there and
#      builds with `dpkg-buildpackage -us -uc -b' (offline: dh_autoreconf,
#      configure, make, the unit tests);
#   2. runs lintian on the .changes: any error fails;
#   3. installs it with `apt-get install ./pop3sync_*.deb' and checks that
#      pop3, pop3ctl and pop3syncd run, that a config made from the example
#      is valid, that both units are where systemd looks and pass
#      `systemd-analyze verify', and that nothing was enabled or started;
#   4. runs the daemon once (--prepare-state, then a few seconds in the
#      background with pop3ctl status), so that it creates /var/lib/pop3sync
#      and /run/pop3sync;
#   5. purges the package and checks that every file it installed and every
#      one the daemon created are gone, and that only the config the admin
#      wrote is left in /etc/pop3sync.
# It refuses to run where pop3sync is installed, or /etc/pop3sync or
# /var/lib/pop3sync exist: it would purge a real installation.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
say() { echo "package-check: $*"; }
fail() {
  echo "package-check: FAIL: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || fail "needs root (it installs and purges the package)"
if dpkg-query -W -f='${Status}' pop3sync 2>/dev/null | grep -qv "not-installed"; then
  fail "pop3sync is installed (or left config files): this check would purge it"
fi
for d in /etc/pop3sync /var/lib/pop3sync /run/pop3sync; do
  [ ! -e "$d" ] || fail "$d exists: this check would remove it"
done
bash "$top/scripts/deps.sh" package

work=$(mktemp -d /tmp/pop3sync-package.XXXXXX)
chmod 711 "$work" # nobody reads $work/user.conf
daemon=
cleanup() {
  [ -z "$daemon" ] || kill "$daemon" 2>/dev/null || true
  if dpkg-query -W -f='${Status}' pop3sync 2>/dev/null | grep -qv "not-installed"; then
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq pop3sync >/dev/null 2>&1 || true
  fi
  rm -rf /etc/pop3sync /var/lib/pop3sync /run/pop3sync "$work"
}
trap cleanup EXIT

# ---- 1. build from a clean copy
src=$work/pop3sync
mkdir -p "$src"
if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Tracked and new files, not what .gitignore names (build trees, configure).
  git -C "$top" ls-files -z --cached --others --exclude-standard |
    (cd "$top" && tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -C "$src" -xf -
else
  (cd "$top" && tar --exclude=./build --exclude='./build-*' --exclude=./demo -cf - .) | tar -C "$src" -xf -
fi
# A native package: debian/changelog's version is configure.ac's, no revision.
deb_version=$(cd "$src" && dpkg-parsechangelog -S Version)
ac_version=$(sed -n 's/^AC_INIT(\[pop3sync\], \[\([^]]*\)\].*/\1/p' "$src/configure.ac")
[ "$deb_version" = "$ac_version" ] ||
  fail "debian/changelog says $deb_version, configure.ac's AC_INIT $ac_version"
say "dpkg-source -b . in $src"
(cd "$src" && dpkg-source -b . >"$work/source.log" 2>&1) || { cat "$work/source.log"; fail "dpkg-source -b ."; }
say "dpkg-buildpackage -us -uc -b (log: $work/build.log)"
start=$(date +%s)
(cd "$src" && dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1) ||
  { tail -60 "$work/build.log"; fail "dpkg-buildpackage"; }
say "built in $(($(date +%s) - start)) s: $(cd "$work" && echo pop3sync_*.deb)"
grep -E '^(PASS|FAIL|ERROR|SKIP|# TOTAL)' "$work/build.log" | sed 's/^/  /' | tail -3

# ---- 2. lintian
changes=$(echo "$work"/pop3sync_*.changes)
say "lintian $(basename "$changes")"
# (as nobody: lintian does not want root)
mkdir -p "$work/lintian-home"
chown nobody:nogroup "$work/lintian-home"
setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME="$work/lintian-home" \
  lintian --fail-on error --display-info "$changes" >"$work/lintian.log" 2>&1 ||
  { cat "$work/lintian.log"; fail "lintian reports errors"; }
sed 's/^/  /' "$work/lintian.log"

# ---- 3. install and check
wants_before=$(find /etc/systemd -path '*.wants/*' 2>/dev/null | sort)
say "apt-get install ./$(cd "$work" && echo pop3sync_*.deb)"
(cd "$work" && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ./pop3sync_*.deb) >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; fail "apt-get install"; }
dpkg -L pop3sync | sort >"$work/files"

for p in pop3 pop3ctl pop3syncd; do
  v=$("$p" --version) || fail "$p --version"
  case $v in "$p (pop3sync) "[0-9]*) say "$v" ;; *) fail "$p --version printed: $v" ;; esac
done

example=/usr/share/doc/pop3sync/examples/pop3sync.conf.example
[ -f "$example" ] || fail "$example missing"
# The wake-up examples (pop3syncd(8), WAKING UP), ready to copy into place.
for f in pop3sync-wakeup 90-pop3sync pop3sync-resume; do
  [ -x "/usr/share/pop3sync/examples/$f" ] || fail "/usr/share/pop3sync/examples/$f missing or not executable"
  sh -n "/usr/share/pop3sync/examples/$f" || fail "sh -n /usr/share/pop3sync/examples/$f"
done
for m in pop3.1 pop3ctl.1 pop3syncd.8 pop3sync.conf.5; do
  [ -f "/usr/share/man/man${m##*.}/$m.gz" ] || fail "man page $m missing"
done
for c in pop3 pop3ctl pop3syncd; do
  f=/usr/share/bash-completion/completions/$c
  [ -f "$f" ] || fail "bash completion $f missing"
  bash -n "$f" || fail "bash -n $f"
done
# The example as a user's config (its Maildirs in a home of the user's own; the
# first run creates them, --check-config writes nothing): valid as it is.
home=$work/home
mkdir -p "$home"
chown nobody:nogroup "$home"
sed "s|/home/me/|$home/|" "$example" >"$work/user.conf"
chmod 644 "$work/user.conf"
setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME="$home" \
  pop3syncd --check-config -c "$work/user.conf" || fail "the example is not a valid config for a user"
# The admin's config for the system daemon, made from the example: as root every
# account names its local user.
mkdir -p /etc/pop3sync
sed -e 's/^\( *\)#user = "alice";/\1user = "nobody";/' \
  -e 's/^\( *\)name = "home";/&\n\1user = "nobody";/' "$example" >/etc/pop3sync/pop3sync.conf
chmod 600 /etc/pop3sync/pop3sync.conf
conf_sum=$(sha256sum </etc/pop3sync/pop3sync.conf)
pop3syncd --check-config || fail "pop3syncd --check-config on /etc/pop3sync/pop3sync.conf"
say "pop3syncd --check-config: the example is valid for a user, and with user keys for root"

sysunit=/usr/lib/systemd/system/pop3syncd.service
userunit=/usr/lib/systemd/user/pop3syncd.service
[ -f "$sysunit" ] || fail "$sysunit missing"
[ -f "$userunit" ] || fail "$userunit missing"
grep -q '^ExecStart=/usr/bin/pop3syncd$' "$sysunit" || fail "$sysunit: ExecStart is not /usr/bin/pop3syncd"
grep -q '^ExecStart=/usr/bin/pop3syncd$' "$userunit" || fail "$userunit: ExecStart is not /usr/bin/pop3syncd"
systemd-analyze verify "$sysunit" || fail "systemd-analyze verify $sysunit"
systemd-analyze --user verify "$userunit" 2>/dev/null || systemd-analyze verify "$userunit" ||
  fail "systemd-analyze verify $userunit"
say "units in /usr/lib/systemd/{system,user}, systemd-analyze verify passes"

enabled=$(find /etc/systemd -path '*.wants/*' -name 'pop3syncd*' 2>/dev/null)
[ -z "$enabled" ] || fail "enabled by installing: $enabled"
[ "$wants_before" = "$(find /etc/systemd -path '*.wants/*' 2>/dev/null | sort)" ] ||
  fail "installing changed /etc/systemd/*/*.wants"
if [ -d /run/systemd/system ]; then
  ! systemctl is-active --quiet pop3syncd || fail "pop3syncd was started by installing"
fi
say "nothing enabled or started"

# ---- 4. the daemon, once
pop3syncd --prepare-state || fail "pop3syncd --prepare-state"
[ -d /var/lib/pop3sync/nobody ] || fail "--prepare-state did not create /var/lib/pop3sync/nobody"
pop3syncd >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 50); do
  [ -S /run/pop3sync/control.sock ] && break
  sleep 0.1
done
pop3ctl status >"$work/status.log" 2>&1 || { cat "$work/daemon.log" "$work/status.log"; fail "pop3ctl status"; }
kill -TERM "$daemon"
wait "$daemon" || { cat "$work/daemon.log"; fail "pop3syncd did not exit 0 on SIGTERM"; }
daemon=
say "the daemon ran: $(find /var/lib/pop3sync /run/pop3sync 2>/dev/null | wc -l) paths under /var/lib/pop3sync and /run/pop3sync"

# ---- 5. purge
say "apt-get purge pop3sync"
DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq pop3sync >"$work/purge.log" 2>&1 ||
  { cat "$work/purge.log"; fail "apt-get purge"; }
! dpkg-query -W -f='${Status}' pop3sync 2>/dev/null | grep -qv "not-installed" || fail "still known to dpkg after purge"
left=""
while read -r f; do
  # Directories other packages share (/usr/bin, ...) stay; the package's own go.
  if [ -d "$f" ]; then
    case $f in *pop3sync*) left="$left $f" ;; esac
  elif [ -e "$f" ] || [ -L "$f" ]; then
    left="$left $f"
  fi
done <"$work/files"
[ -z "$left" ] || fail "left after purge:$left"
for d in /var/lib/pop3sync /run/pop3sync; do
  [ ! -e "$d" ] || fail "$d left after purge"
done
stray=$(find /etc/systemd /var/lib/systemd /usr/lib/systemd -name '*pop3syncd*' 2>/dev/null)
[ -z "$stray" ] || fail "left after purge: $stray"
[ "$(ls -A /etc/pop3sync)" = pop3sync.conf ] || fail "/etc/pop3sync holds more than the admin's config: $(ls -A /etc/pop3sync)"
[ "$(sha256sum </etc/pop3sync/pop3sync.conf)" = "$conf_sum" ] || fail "purge changed the admin's config"
say "purged: $(wc -l <"$work/files") installed paths, /var/lib/pop3sync and /run/pop3sync gone; /etc/pop3sync/pop3sync.conf (the admin's) kept"
say "OK"

#!/bin/bash
# Installs what pop3sync needs on Debian 12, with apt-get, only if missing.
#   deps.sh build   the build dependencies
#   deps.sh test    the build dependencies plus what the test suite runs
#                   (Dovecot, openssl, python3, strace, setpriv)
#   deps.sh interop the build dependencies plus the POP3 servers of `make interop'
#   deps.sh package the build dependencies plus debian/control's Build-Depends
#                   and what scripts/package-check.sh runs (lintian)
set -eu
want="build-essential autoconf automake pkg-config libuv1-dev libmbedtls-dev libconfig-dev python3"
case "${1:-build}" in
  build) ;;
  test) want="$want dovecot-pop3d dovecot-core openssl strace util-linux procps systemd clang-14 libclang-rt-14-dev clang-format-14" ;;
  # make interop: the servers that install beside Dovecot (tests/interop/run.sh unpacks the
  # conflicting courier-pop, popa3d, solid-pop3d and cyrus-pop3d itself).
  interop) want="$want mailutils-pop3d courier-base courier-authdaemon cyrus-common sasl2-bin socat liblockfile1" ;;
  # debian/control's Build-Depends, dpkg-buildpackage (dpkg-dev, fakeroot) and lintian.
  package) want="$want debhelper pkgconf systemd bash-completion dpkg-dev fakeroot lintian" ;;
  *) echo "usage: deps.sh build|test|interop|package" >&2; exit 64 ;;
esac
missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "deps.sh: missing Debian packages:$missing (run as root to install them)" >&2
  exit 1
fi
echo "deps.sh: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Dovecot's postinst would start the system service; we only want the binaries.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.pop3sync
if [ ! -e /usr/sbin/policy-rc.d ]; then
  cp /usr/sbin/policy-rc.d.pop3sync /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
rm -f /usr/sbin/policy-rc.d.pop3sync
apt-get install -y -qq --no-install-recommends $missing >/dev/null

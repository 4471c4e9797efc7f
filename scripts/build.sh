#!/bin/bash
# Configures and builds pop3sync in a build directory (default: build/).
#   build.sh [BUILDDIR] [configure options...]
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
builddir=${1:-$top/build}
shift || true
cd "$top"
if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
  echo "build: autoreconf -fi (generates configure)"
  autoreconf -fi >/dev/null 2>&1 || autoreconf -fi
fi
mkdir -p "$builddir"
cd "$builddir"
if [ ! -f Makefile ] || [ "$top/configure" -nt Makefile ] || [ -n "${RECONFIGURE:-}" ]; then
  echo "build: configure${*:+ $*} in $builddir (log: configure.out)"
  "$top/configure" "$@" >configure.out 2>&1 || { cat configure.out; exit 1; }
fi
echo "build: make -j$(nproc) in $builddir (log: make.out)"
make -j"$(nproc)" >make.out 2>&1 || { cat make.out; exit 1; }

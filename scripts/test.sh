#!/bin/bash
# Installs what the tests need (Dovecot included), builds pop3sync, and runs
# every test: the normal build with -Werror, then the same suite under
# AddressSanitizer + UndefinedBehaviorSanitizer, then each libFuzzer target
# for 15 s, then `make distcheck', then the Debian package
# (scripts/package-check.sh).  SKIP_ASAN=1 / SKIP_FUZZ=1 / SKIP_DISTCHECK=1 /
# SKIP_PACKAGE=1 skip those steps.  After the plain `make check', `make interop' runs
# pop3 against real servers (SKIP_INTEROP=1 skips it).  First of all, clang-format
# --dry-run --Werror checks the C sources against .clang-format.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
bash "$top/scripts/deps.sh" test
status=0
# The committed .clang-format is the one voice: every C file must already obey it.
fmt=$(command -v clang-format-14 || command -v clang-format || true)
if [ -n "$fmt" ]; then
  (cd "$top" && "$fmt" --dry-run --Werror src/*.c src/*.h tests/unit/*.c tests/fuzz/*.c bench/*.c) ||
    { status=1; echo "clang-format: the files above do not follow .clang-format (run clang-format -i)"; }
else
  status=1
  echo "clang-format not found"
fi
RECONFIGURE=1 bash "$top/scripts/build.sh" "$top/build" --enable-werror --enable-crash-points
make -C "$top/build" -j2 check || { status=1; cat "$top/build/test-suite.log"; }
# Real POP3 servers from Debian's packages (tests/interop; needs root), once, on the plain
# build only: not under ASan, not in distcheck. SKIP_INTEROP=1 skips it.
rm -f "$top/build/interop-suite.log"
if [ -z "${SKIP_INTEROP:-}" ]; then
  make -C "$top/build" interop || status=1
fi
if [ -z "${SKIP_ASAN:-}" ]; then
  RECONFIGURE=1 bash "$top/scripts/build.sh" "$top/build-asan" --enable-werror --enable-crash-points \
    CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
    LDFLAGS="-fsanitize=address,undefined"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
    make -C "$top/build-asan" -j2 check || { status=1; cat "$top/build-asan/test-suite.log"; }
fi
# libFuzzer targets, each for FUZZ_SECONDS (15 in CI), under ASan+UBSan.
if [ -z "${SKIP_FUZZ:-}" ]; then
  if RECONFIGURE=1 bash "$top/scripts/build.sh" "$top/build-fuzz" --enable-fuzzer CC=clang-14; then
    FUZZ_SECONDS=${FUZZ_SECONDS:-15} bash "$top/scripts/fuzz.sh" "$top/build-fuzz" || status=1
  else
    status=1
  fi
fi
# The release tarball builds, installs, and passes the suite on its own.
if [ -z "${SKIP_DISTCHECK:-}" ]; then
  make -C "$top/build" -j2 distcheck >"$top/build/distcheck.out" 2>&1 ||
    { status=1; tail -60 "$top/build/distcheck.out"; }
fi
# The Debian package: built from a clean copy of the tree, lintian, installed,
# checked, run once and purged (scripts/package-check.sh, about a minute; needs
# root).  SKIP_PACKAGE=1 skips it.  Its result is one test in
# build/package-suite.log, which .ci/run counts.
rm -f "$top/build/package-suite.log" "$top/build/package-check.out"
if [ -z "${SKIP_PACKAGE:-}" ]; then
  if bash "$top/scripts/package-check.sh" >"$top/build/package-check.out" 2>&1; then
    printf '# TOTAL: 1\n# PASS:  1\n# FAIL:  0\n' >"$top/build/package-suite.log"
  else
    status=1
    printf '# TOTAL: 1\n# PASS:  0\n# FAIL:  1\nFAIL: scripts/package-check.sh\n' >"$top/build/package-suite.log"
    tail -60 "$top/build/package-check.out"
  fi
fi
exit $status

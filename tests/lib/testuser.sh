# tests/lib/testuser.sh -- a throw-away local user for the tests that need root (bash only).
# Source after common.sh and t_init.
#
#   testuser_require           exit 77 unless root and (CI=true or POP3SYNC_ROOT_TESTS=1): these
#                              tests create users, which a package build or distcheck must not
#   testuser_create            creates user $TU (uid $TU_UID, gid $TU_GID) with home $TU_HOME
#                              under $TU_BASE, a world-traversable directory in /tmp (never the
#                              build tree, which may be 0700), and an extra group $TU_GROUP
#                              that the user is a member of; both are removed at exit
#   as_user CMD...             run CMD as $TU with the user's groups and HOME
#
# shellcheck shell=bash disable=SC2154 # T comes from common.sh

TU=
TU_UID=
TU_GID=
TU_HOME=
TU_BASE=
TU_GROUP=

testuser_require() {
  if [ "$(id -u)" != 0 ]; then
    echo "SKIP: ${T_NAME:-test}: needs root (it creates a local user)" >&2
    exit 77
  fi
  if [ "${CI:-}" != true ] && [ "${POP3SYNC_ROOT_TESTS:-}" != 1 ]; then
    echo "SKIP: ${T_NAME:-test}: creates local users; runs with CI=true or POP3SYNC_ROOT_TESTS=1" >&2
    exit 77
  fi
  local b
  for b in useradd userdel groupadd groupdel setpriv; do
    command -v "$b" >/dev/null 2>&1 || t_fail "$b not found (Debian: passwd, util-linux)"
  done
}

_testuser_remove() {
  [ -n "$TU" ] && pkill -KILL -u "$TU" 2>/dev/null
  [ -n "$TU" ] && userdel "$TU" >/dev/null 2>&1
  [ -n "$TU_GROUP" ] && groupdel "$TU_GROUP" >/dev/null 2>&1
  [ -n "$TU_BASE" ] && rm -rf "$TU_BASE"
  return 0
}

testuser_create() {
  local tag
  tag=$(printf '%04x%04x' $((RANDOM)) $$ | cut -c1-8)
  TU=p3t$tag
  TU_GROUP=p3g$tag
  TU_BASE=$(mktemp -d /tmp/pop3sync-user.XXXXXX) || t_fail "mktemp failed"
  chmod 0755 "$TU_BASE"
  TU_HOME=$TU_BASE/home
  t_on_exit _testuser_remove
  groupadd "$TU_GROUP" || t_fail "groupadd $TU_GROUP failed"
  useradd -M -U -d "$TU_HOME" -s /bin/sh -G "$TU_GROUP" "$TU" || t_fail "useradd $TU failed"
  TU_UID=$(id -u "$TU")
  TU_GID=$(id -g "$TU")
  mkdir -m 0700 "$TU_HOME" && chown "$TU:$TU" "$TU_HOME" || t_fail "cannot make $TU_HOME"
}

as_user() {
  HOME=$TU_HOME USER=$TU LOGNAME=$TU setpriv --reuid="$TU_UID" --regid="$TU_GID" --init-groups \
    -- "$@"
}

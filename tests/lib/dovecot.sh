# shellcheck shell=bash
# tests/lib/dovecot.sh -- a private Dovecot 2.3 POP3 server for the tests (bash only).
#
# Source after common.sh and t_init:
#
#   . "$top_srcdir/tests/lib/dovecot.sh"
#   dovecot_start                      # or t_skip/t_fail inside when it cannot
#   dovecot_fill "$srcdir_of_messages" # one file per message, delivered in name order
#   n=$(dovecot_count)
#   dovecot_stop                       # also registered to run at exit
#
# Functions: dovecot_start, dovecot_stop (idempotent), dovecot_fill SRCDIR [USER],
# dovecot_count [USER] (prints the number; inside $(...) a failure only ends the subshell, so
# compare the result), dovecot_doveadm ARGS... (doveadm -c our config), dovecot_dump_log.
# dovecot_start skips (exit 77) when Dovecot is not installed, and fails instead when CI=true.
#
# The instance lives in $T/dovecot: its own config, base_dir, state_dir, log, users, Maildirs
# and certificates. It listens on 127.0.0.1 only, on two ports probed with t_free_port (Dovecot
# cannot take port 0, so a lost race for a port is retried with new ones). It never touches the
# system Dovecot (/etc/dovecot, /run/dovecot, ports 110/995) and does not use systemd.
#
# Exported after dovecot_start:
#   DOVECOT_POP3_PORT    plaintext POP3 with STLS
#   DOVECOT_POP3S_PORT   POP3 over implicit TLS
#   DOVECOT_CA           CA certificate (PEM) that signed the server certificate (DNS:localhost)
#   DOVECOT_SSL_DIR      the directory with ca.pem server.pem server.key wrong.pem wrong.key
#   DOVECOT_MAILDIR_TEST Maildir of user "test" (password "secret"); DOVECOT_MAILDIR_OTHER for
#                        user "other" (password "other")
#   DOVECOT_USER DOVECOT_PASS   "test" and "secret"
#   DOVECOT_CONF DOVECOT_DIR DOVECOT_LOG DOVECOT_PID
#   DOVECOT_MAIL_UID DOVECOT_MAIL_GID   owner of the Maildirs (the mail processes run as it)
#
# Optional, set before dovecot_start (the defaults give the configuration above):
#   DOVECOT_INSTANCE           directory name under $T (default "dovecot"), so that a test can
#                              run another instance with another configuration after stopping
#                              the first
#   DOVECOT_AUTH_MECHANISMS    auth_mechanisms (default "plain login")
#   DOVECOT_PASSWD_MECHANISMS  when set, the passwd-file passdb serves only these mechanisms
#   DOVECOT_EXTRA_CONF         text appended to the configuration (e.g. another passdb)
#   DOVECOT_EXTRA_USERS        more users, "name:password" separated by spaces (no spaces or
#                              colons in either); each gets a Maildir $DOVECOT_DIR/mail/NAME
#
# Who runs what: as root, the mail processes run as nobody:nogroup (Dovecot refuses uid 0 for
# mail unless first_valid_uid=0, and a root-owned mail process would hide permission bugs),
# login processes as dovenull and internal ones as dovecot (both created by the Debian
# package). As another user, everything runs as that user and chroots are switched off.

: "${top_srcdir:?source common.sh first}"
DOVECOT_BIN=${DOVECOT_BIN:-/usr/sbin/dovecot}
DOVEADM_BIN=${DOVEADM_BIN:-/usr/bin/doveadm}
DOVECOT_USER="test"
DOVECOT_PASS="secret"
DOVECOT_PID=
DOVECOT_START_TIMEOUT=${DOVECOT_START_TIMEOUT:-20}

# Print the end of the Dovecot logs to stderr (for failure reports).
dovecot_dump_log() {
  local f
  for f in "$DOVECOT_DIR/master.out" "$DOVECOT_LOG"; do
    if [ -s "$f" ]; then
      echo "---- $f (last 60 lines)" >&2
      tail -n 60 "$f" >&2
    fi
  done
}

_dovecot_die() {
  dovecot_dump_log
  t_fail "dovecot: $*"
}

# The certificates: tests/lib/mkcert.sh when it exists, else an equivalent openssl recipe.
_dovecot_certs() {
  local dir=$1 mk=$top_srcdir/tests/lib/mkcert.sh
  mkdir -p "$dir"
  if [ -f "$mk" ]; then
    sh "$mk" "$dir" >"$dir/mkcert.log" 2>&1 || {
      cat "$dir/mkcert.log" >&2
      t_fail "dovecot: $mk failed"
    }
  else
    _dovecot_certs_openssl "$dir" >"$dir/mkcert.log" 2>&1 || {
      cat "$dir/mkcert.log" >&2
      t_fail "dovecot: openssl certificate generation failed"
    }
  fi
  local f
  for f in ca.pem server.pem server.key; do
    [ -s "$dir/$f" ] || t_fail "dovecot: certificate file $dir/$f missing"
  done
}

_dovecot_certs_openssl() {
  local dir=$1 name
  command -v openssl >/dev/null || return 1
  (
    set -e
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=pop3sync test CA" \
      -keyout ca.key -out ca.pem \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    for name in server:localhost wrong:wrong.example; do
      openssl req -newkey rsa:2048 -nodes -subj "/CN=${name#*:}" \
        -keyout "${name%%:*}.key" -out "${name%%:*}.csr"
      printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' \
        "${name#*:}" >"${name%%:*}.ext"
      openssl x509 -req -in "${name%%:*}.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -days 3650 -sha256 -extfile "${name%%:*}.ext" -out "${name%%:*}.pem"
      rm -f "${name%%:*}.csr" "${name%%:*}.ext"
    done
  )
}

# _dovecot_write_conf POP3_PORT POP3S_PORT
_dovecot_write_conf() {
  local D=$DOVECOT_DIR p=$1 ps=$2 login_chroot anvil_chroot internal_user internal_group
  local login_user
  if [ "$(id -u)" = 0 ]; then
    internal_user=dovecot
    internal_group=dovecot
    login_user=dovenull
    login_chroot=login
    anvil_chroot=empty
  else
    internal_user=$(id -un)
    internal_group=$(id -gn)
    login_user=$internal_user
    login_chroot=
    anvil_chroot=
  fi
  cat >"$DOVECOT_CONF" <<EOF
# Generated by tests/lib/dovecot.sh for one test run. Not the system configuration.
base_dir = $D/run
state_dir = $D/state
instance_name = pop3sync-test-$$
protocols = pop3
listen = 127.0.0.1
shutdown_clients = yes

log_path = $D/dovecot.log
auth_verbose = yes
auth_verbose_passwords = no

default_internal_user = $internal_user
default_internal_group = $internal_group
default_login_user = $login_user
first_valid_uid = $DOVECOT_MAIL_UID
first_valid_gid = $DOVECOT_MAIL_GID
mail_uid = $DOVECOT_MAIL_UID
mail_gid = $DOVECOT_MAIL_GID

mail_location = maildir:$D/mail/%u
mail_fsync = optimized
pop3_uidl_format = %08Xu%08Xv
# The tests open many sessions from 127.0.0.1 in a short time.
mail_max_userip_connections = 200

disable_plaintext_auth = no
auth_mechanisms = ${DOVECOT_AUTH_MECHANISMS:-plain login}
# Keep wrong-password tests fast (the default is 2 s per failure).
auth_failure_delay = 0
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $D/users${DOVECOT_PASSWD_MECHANISMS:+
  mechanisms = $DOVECOT_PASSWD_MECHANISMS}
}
userdb {
  driver = passwd-file
  args = username_format=%u $D/users
}

ssl = yes
ssl_cert = <$DOVECOT_SSL_DIR/server.pem
ssl_key = <$DOVECOT_SSL_DIR/server.key
ssl_min_protocol = TLSv1.2

# Same listener names as the built-in defaults so that those (110, 995) are replaced.
service pop3-login {
  chroot = $login_chroot
  inet_listener pop3 {
    address = 127.0.0.1
    port = $p
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = $ps
    ssl = yes
  }
}
service anvil {
  chroot = $anvil_chroot
  # No auth penalty: after a failed login Dovecot would delay every later login from
  # 127.0.0.1 by 2..15 s (documented way to turn it off).
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
${DOVECOT_EXTRA_CONF:-}
EOF
}

# dovecot_start: create and start the instance; returns when both ports accept connections.
dovecot_start() {
  local p ps waited rc
  [ -n "${T:-}" ] || t_fail "dovecot_start: call t_init first"
  if [ ! -x "$DOVECOT_BIN" ] || [ ! -x "$DOVEADM_BIN" ]; then
    t_skip "dovecot not installed ($DOVECOT_BIN); apt-get install dovecot-pop3d"
  fi
  [ -n "$PYTHON" ] || t_skip "python3 not found"

  DOVECOT_DIR=$T/${DOVECOT_INSTANCE:-dovecot}
  DOVECOT_CONF=$DOVECOT_DIR/dovecot.conf
  DOVECOT_LOG=$DOVECOT_DIR/dovecot.log
  DOVECOT_SSL_DIR=$DOVECOT_DIR/ssl
  DOVECOT_CA=$DOVECOT_SSL_DIR/ca.pem
  DOVECOT_MAILDIR_TEST=$DOVECOT_DIR/mail/test
  DOVECOT_MAILDIR_OTHER=$DOVECOT_DIR/mail/other
  if [ "$(id -u)" = 0 ]; then
    DOVECOT_MAIL_UID=$(id -u nobody) || t_fail "dovecot: no user nobody"
    DOVECOT_MAIL_GID=$(getent group nogroup | cut -d: -f3)
    [ -n "$DOVECOT_MAIL_GID" ] || DOVECOT_MAIL_GID=$(id -g nobody)
    if ! id dovecot >/dev/null 2>&1 || ! id dovenull >/dev/null 2>&1; then
      t_fail "dovecot: users dovecot/dovenull missing (broken dovecot-core install?)"
    fi
  else
    DOVECOT_MAIL_UID=$(id -u)
    DOVECOT_MAIL_GID=$(id -g)
  fi
  export DOVECOT_DIR DOVECOT_CONF DOVECOT_LOG DOVECOT_SSL_DIR DOVECOT_CA DOVECOT_MAILDIR_TEST \
    DOVECOT_MAILDIR_OTHER DOVECOT_MAIL_UID DOVECOT_MAIL_GID DOVECOT_USER DOVECOT_PASS

  # The mail processes (nobody) must reach $T/dovecot/mail, and the auth process the users file.
  chmod 0711 "$T"
  mkdir -p "$DOVECOT_DIR/run" "$DOVECOT_DIR/state" "$DOVECOT_DIR/home"
  chmod 0711 "$DOVECOT_DIR"
  _dovecot_certs "$DOVECOT_SSL_DIR"
  chmod 0755 "$DOVECOT_SSL_DIR"
  chmod 0644 "$DOVECOT_SSL_DIR"/*.pem
  chmod 0600 "$DOVECOT_SSL_DIR"/*.key

  local u pw
  : >"$DOVECOT_DIR/users"
  for u in test:secret other:other ${DOVECOT_EXTRA_USERS:-}; do
    pw=${u#*:}
    u=${u%%:*}
    echo "$u:{PLAIN}$pw:$DOVECOT_MAIL_UID:$DOVECOT_MAIL_GID::$DOVECOT_DIR/home/$u::" \
      >>"$DOVECOT_DIR/users"
    mkdir -p "$DOVECOT_DIR/home/$u" "$DOVECOT_DIR/mail/$u/new" "$DOVECOT_DIR/mail/$u/cur" \
      "$DOVECOT_DIR/mail/$u/tmp"
  done
  chmod 0644 "$DOVECOT_DIR/users"
  mkdir -p "$DOVECOT_DIR/mail"
  chmod 0700 "$DOVECOT_DIR/home"/* "$DOVECOT_DIR/mail"/*
  chown -R "$DOVECOT_MAIL_UID:$DOVECOT_MAIL_GID" "$DOVECOT_DIR/home" "$DOVECOT_DIR/mail"

  for _ in 1 2 3 4 5; do
    p=$(t_free_port) || t_fail "dovecot: no free port"
    ps=$(t_free_port) || t_fail "dovecot: no free port"
    [ "$p" != "$ps" ] || continue
    _dovecot_write_conf "$p" "$ps"
    : >"$DOVECOT_DIR/master.out"
    # -F: the master stays our child, so its pid is known and the cleanup can reach it.
    t_bg "$DOVECOT_BIN" -F -c "$DOVECOT_CONF" >"$DOVECOT_DIR/master.out" 2>&1 </dev/null
    DOVECOT_PID=$T_BG_PID
    waited=0
    rc=
    while ((waited < DOVECOT_START_TIMEOUT * 10)); do
      if ! kill -0 "$DOVECOT_PID" 2>/dev/null; then
        wait "$DOVECOT_PID" 2>/dev/null
        rc=$?
        break
      fi
      if t_port_open "$p" && t_port_open "$ps"; then
        DOVECOT_POP3_PORT=$p
        DOVECOT_POP3S_PORT=$ps
        export DOVECOT_POP3_PORT DOVECOT_POP3S_PORT DOVECOT_PID
        t_on_exit dovecot_stop
        t_log "dovecot started: pid $DOVECOT_PID, pop3 127.0.0.1:$p, pop3s 127.0.0.1:$ps"
        return 0
      fi
      sleep 0.1
      waited=$((waited + 1))
    done
    if [ -z "$rc" ]; then
      _dovecot_kill_all
      _dovecot_die "not listening on ports $p/$ps after ${DOVECOT_START_TIMEOUT}s"
    fi
    if grep -q -i 'address already in use' "$DOVECOT_DIR/master.out" "$DOVECOT_LOG" \
      2>/dev/null; then
      t_log "dovecot: port $p or $ps taken meanwhile, retrying"
      : >"$DOVECOT_LOG"
      continue
    fi
    _dovecot_die "exited with status $rc while starting"
  done
  _dovecot_die "could not bind free ports after 5 tries"
}

# Kill the master and everything it started (TERM, bounded wait, KILL).
_dovecot_kill_all() {
  [ -n "$DOVECOT_PID" ] || return 0
  t_kill "$DOVECOT_PID"
  DOVECOT_PID=
}

# dovecot_stop: stop the instance (idempotent). The master shuts its children down on TERM;
# t_kill then KILLs whatever of ours is left.
dovecot_stop() {
  [ -n "${DOVECOT_PID:-}" ] || return 0
  _dovecot_kill_all
}

# dovecot_doveadm ARGS...: doveadm against the private instance.
dovecot_doveadm() {
  timeout 60 "$DOVEADM_BIN" -c "$DOVECOT_CONF" "$@"
}

# dovecot_fill SRCDIR [USER]: deliver each file of SRCDIR (name order) into USER's Maildir
# (default test). POP3 then lists them in that order.
dovecot_fill() {
  local src=$1 user=${2:-test}
  "$PYTHON" "$top_srcdir/tests/lib/dovecot-fill.py" --uid "$DOVECOT_MAIL_UID" \
    --gid "$DOVECOT_MAIL_GID" "$DOVECOT_DIR/mail/$user" "$src" ||
    t_fail "dovecot_fill: dovecot-fill.py failed"
}

# dovecot_count [USER]: number of messages in USER's INBOX, as Dovecot sees it.
dovecot_count() {
  local user=${1:-test} out
  out=$(dovecot_doveadm mailbox status -u "$user" messages INBOX 2>&1) || {
    echo "$out" >&2
    _dovecot_die "doveadm mailbox status failed"
  }
  out=${out##*messages=}
  echo "${out%%[!0-9]*}"
}

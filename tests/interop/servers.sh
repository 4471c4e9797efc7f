# shellcheck shell=bash disable=SC2034 # SRV_PORT, SRV_PICK_*: read by run.sh
# tests/interop/servers.sh -- five real POP3 servers from Debian 12 on loopback ports, for
# tests/interop/run.sh (bash only; source after common.sh and t_init).
#
# For each server S in popa3d solid mailutils courier cyrus:
#   srv_S_start        start it on a free 127.0.0.1 port: sets SRV_PORT (set S=S first)
#   srv_S_fill MSG...  put message files into the mailbox of $IU the server's own way
#                      (popa3d, solid-pop3d, mailutils: mbox spool; Courier: Maildir;
#                      Cyrus: LMTP to its lmtpd)
#   iop_stop S         stop it; iop_cleanup (at exit) stops all and undoes the rest
#   SRV_PICK_S         mailtool.py pick flags: what of the varied test mail it can store as is
# Inputs: $X (the root where the conflicting packages were extracted), $IU, $IU_HOME (the
# test user and its home), $MAILTOOL, $PYTHON.
#
# Who runs what: every server starts as root and switches to $IU after the login, as it does
# in production. popa3d, solid-pop3d, Mailutils and Courier are inetd-style: socat accepts
# and, with `nofork', execs the server with the TCP socket as its stdin/stdout (solid-pop3d
# and popa3d look at getpeername(0) and run standalone on port 110 when it is not TCP).
# Cyrus's own master process listens and runs pop3d and lmtpd. Logins are PAM logins of
# $IU everywhere: directly (popa3d, solid-pop3d, Mailutils), through courier-authdaemon's
# authpam (Courier), through saslauthd -a pam (Cyrus).

SRV_PORT=
SRV_PICK_popa3d="--no-from-lines --message-id"
SRV_PICK_solid="--no-from-lines --message-id"
SRV_PICK_mailutils="--no-from-lines"
SRV_PICK_courier="--ascii-headers"
SRV_PICK_cyrus=""

# iop_sysuser NAME USERADD-ARGS...: make sure the system user NAME exists (popa3d and
# solid-pop3d drop to it before the login); one we create is removed at exit.
iop_sysuser() {
  local name=$1
  shift
  getent passwd "$name" >/dev/null && return 0
  useradd -r -M -s /usr/sbin/nologin "$@" "$name" || t_fail "useradd $name failed"
  iop_on_exit "userdel $name >/dev/null 2>&1"
}

# iop_inetd NAME SCRIPT: serve SCRIPT inetd-style with socat on a free loopback port (probed,
# retried when somebody else took it first); its stderr goes to $T/NAME.log.
iop_inetd() {
  local name=$1 script=$2 port try
  chmod 0755 "$script"
  for try in 1 2 3; do
    port=$(t_free_port) || t_fail "$name: no free port"
    iop_bg socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" "EXEC:$script,nofork" \
      2>>"$T/$name.log"
    if t_wait_port "$port" 5; then
      SRV_PORT=$port
      return 0
    fi
    t_kill "$T_BG_PID"
  done
  t_fail "$name: socat did not listen"
}

# srv_S_start runs in a subshell (a t_fail there must end only that server's cases), so what
# it starts and what it must undo go to files that the main shell reads:
# iop_bg CMD...: t_bg, and the pid into $T/pids.$S (iop_stop and the exit cleanup kill it).
iop_bg() {
  t_bg "$@"
  echo "$T_BG_PID" >>"$T/pids.$S"
}

# iop_on_exit CMD: like t_on_exit, into $T/cleanup (run by iop_cleanup, last line first).
iop_on_exit() {
  echo "$*" >>"$T/cleanup"
}

# iop_stop S: stop what srv_S_start started (and what those processes started).
iop_stop() {
  local p
  [ -f "$T/pids.$1" ] || return 0
  for p in $(tac "$T/pids.$1"); do
    t_kill "$p"
  done
  rm -f "$T/pids.$1"
}

# iop_cleanup: at exit, stop every server, then undo what the starts registered.
iop_cleanup() {
  local f line
  for f in "$T"/pids.*; do
    [ -f "$f" ] && iop_stop "${f#"$T"/pids.}"
  done
  [ -f "$T/cleanup" ] || return 0
  while IFS= read -r line; do
    eval "$line"
  done < <(tac "$T/cleanup")
  rm -f "$T/cleanup"
}

# iop_file_for_user PATH MODE: an empty file owned by $IU.
iop_file_for_user() {
  install -m "$2" -o "$IU" -g mail /dev/null "$1" || t_fail "cannot create $1"
}

# ---- popa3d 1.0.3: /var/mail/USER and /var/lib/popa3d are compiled in ----------------------
srv_popa3d_start() {
  local spool=/var/mail/$IU
  iop_sysuser popa3d -d /var/lib/popa3d
  if [ ! -d /var/lib/popa3d ]; then
    mkdir -m 0755 /var/lib/popa3d || t_fail "cannot create /var/lib/popa3d"
    iop_on_exit "rmdir /var/lib/popa3d"
  fi
  [ ! -e "$spool" ] || t_fail "$spool exists already"
  iop_on_exit "rm -f $spool $spool.lock"
  iop_file_for_user "$spool" 0660
  printf '#!/bin/sh\nexec %s\n' "$X/usr/sbin/popa3d" >"$T/popa3d.sh"
  iop_inetd popa3d "$T/popa3d.sh"
}

srv_popa3d_fill() {
  "$PYTHON" "$MAILTOOL" mbox "/var/mail/$IU" "$@"
}

# ---- solid-pop3d 0.15: drops to the user spop3d; our own config file, spool in $IU_HOME ----
srv_solid_start() {
  iop_sysuser spop3d -g mail -d /nonexistent
  iop_file_for_user "$IU_HOME/solid.mbox" 0600
  cat >"$T/spop3d.conf" <<EOF
<Global>
	MailDropName	"$IU_HOME/solid.mbox"
	MailDropType	mailbox
	LogStatistics	no
	AddBulletins	no
</Global>
EOF
  printf '#!/bin/sh\nexec %s -f %s\n' "$X/usr/sbin/solid-pop3d" "$T/spop3d.conf" >"$T/solid.sh"
  iop_inetd solid "$T/solid.sh"
}

srv_solid_fill() {
  "$PYTHON" "$MAILTOOL" mbox "$IU_HOME/solid.mbox" "$@"
}

# ---- GNU Mailutils 3.15 pop3d --inetd: our own config, PAM logins, mbox in $IU_HOME ---------
srv_mailutils_start() {
  iop_file_for_user "$IU_HOME/mailutils.mbox" 0600
  cat >"$T/mailutils.conf" <<EOF
logging { syslog no; };
mailbox { mailbox-pattern "mbox://$IU_HOME/mailutils.mbox"; };
auth { authentication pam; authorization system; };
pam { service "pop3d"; };
EOF
  /usr/sbin/pop3d --config-file="$T/mailutils.conf" --config-lint >>"$T/mailutils.log" 2>&1 ||
    t_fail "mailutils: pop3d --config-lint failed: $(tail -3 "$T/mailutils.log")"
  printf '#!/bin/sh\nexec /usr/sbin/pop3d --config-file=%s --inetd\n' "$T/mailutils.conf" \
    >"$T/mailutils.sh"
  iop_inetd mailutils "$T/mailutils.sh"
}

srv_mailutils_fill() {
  "$PYTHON" "$MAILTOOL" mbox "$IU_HOME/mailutils.mbox" "$@"
}

# ---- Courier 1.0.16 courierpop3login + courierpop3d, courier-authdaemon (authpam) ----------
# authdaemond's socket path is compiled in (/run/courier/authdaemon/socket): we start the
# daemon only when none answers there, and then remove the socket it leaves behind.
COURIER_AUTHSOCK=/run/courier/authdaemon/socket

srv_courier_start() {
  local md=$IU_HOME/Maildir i
  if ! "$PYTHON" -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' \
    "$COURIER_AUTHSOCK" 2>/dev/null; then
    iop_on_exit "rm -f $COURIER_AUTHSOCK $COURIER_AUTHSOCK.lock"
    iop_bg /usr/lib/courier/courier-authlib/authdaemond >>"$T/authdaemond.log" 2>&1
    for ((i = 0; i < 100; i++)); do
      [ -S "$COURIER_AUTHSOCK" ] && break
      t_alive "$T_BG_PID" || break
      sleep 0.1
    done
    [ -S "$COURIER_AUTHSOCK" ] ||
      t_fail "courier: authdaemond did not start: $(tail -3 "$T/authdaemond.log")"
  fi
  mkdir -m 0700 "$md" "$md/tmp" "$md/new" "$md/cur" || t_fail "cannot create $md"
  chown -R "$IU:" "$md" || t_fail "cannot chown $md"
  # What /etc/courier/pop3d and the init script would set; TCPREMOTEIP/TCPREMOTEPORT are
  # what couriertcpd passes (courierpop3login logs and limits by them).
  cat >"$T/courier.sh" <<EOF
#!/bin/sh
TCPREMOTEIP=\${SOCAT_PEERADDR:-127.0.0.1} TCPREMOTEPORT=\${SOCAT_PEERPORT:-0}
TCPLOCALIP=\${SOCAT_SOCKADDR:-127.0.0.1} TCPLOCALPORT=\${SOCAT_SOCKPORT:-0}
POP3AUTH="" POP3AUTH_TLS="" POP3_PROXY=0 MAILDIRPATH=Maildir
MIME_UNICODE_MESSAGE_TYPE=message/global
export TCPREMOTEIP TCPREMOTEPORT TCPLOCALIP TCPLOCALPORT POP3AUTH POP3AUTH_TLS POP3_PROXY
export MAILDIRPATH MIME_UNICODE_MESSAGE_TYPE
exec $X/usr/lib/courier/courier/courierpop3login $X/usr/lib/courier/courier/courierpop3d Maildir
EOF
  iop_inetd courier "$T/courier.sh"
}

srv_courier_fill() {
  "$PYTHON" "$MAILTOOL" maildir "$IU_HOME/Maildir" "$@" && chown -R "$IU:" "$IU_HOME/Maildir"
}

# ---- Cyrus 3.6.1: master (cyrus-common) runs the extracted pop3d and lmtpd; saslauthd -a pam
# Everything lives in $T/cyrus (owned by cyrus:mail); LMTP on a Unix socket there.
# duplicatesuppression: 0, or lmtpd drops a re-delivered identical message; popminpoll: 0,
# or a second login within a minute is refused; autocreate_post creates the INBOX on the
# first delivery.
srv_cyrus_start() {
  local C=$T/cyrus port try i
  mkdir -p "$C/conf" "$C/spool" "$C/sock" "$C/sasl" || t_fail "cannot create $C"
  chown cyrus:mail "$C/conf" "$C/spool" "$C/sock" && chmod 0750 "$C/conf" "$C/spool" "$C/sock"
  # Own sessions for saslauthd and master: both signal their whole process group on exit.
  iop_bg setsid -w saslauthd -a pam -m "$C/sasl" -n 1 -d >>"$T/saslauthd.log" 2>&1
  for ((i = 0; i < 100; i++)); do
    [ -S "$C/sasl/mux" ] && break
    sleep 0.1
  done
  [ -S "$C/sasl/mux" ] || t_fail "cyrus: saslauthd did not start: $(tail -3 "$T/saslauthd.log")"
  cat >"$C/imapd.conf" <<EOF
configdirectory: $C/conf
partition-default: $C/spool
defaultpartition: default
proc_path: $C/conf/proc
mboxname_lockpath: $C/conf/lock
lmtpsocket: $C/sock/lmtp
idlesocket: $C/sock/idle
notifysocket: $C/sock/notify
altnamespace: no
unixhierarchysep: no
lmtp_downcase_rcpt: yes
hashimapspool: false
allowplaintext: yes
popminpoll: 0
autocreate_quota: 0
autocreate_post: yes
duplicatesuppression: 0
sasl_pwcheck_method: saslauthd
sasl_saslauthd_path: $C/sasl/mux
sasl_mech_list: PLAIN LOGIN
umask: 077
syslog_prefix: pop3sync-interop-cyrus
EOF
  for try in 1 2 3; do
    port=$(t_free_port) || t_fail "cyrus: no free port"
    cat >"$C/cyrus.conf" <<EOF
START {
  recover cmd="ctl_cyrusdb -C $C/imapd.conf -r"
}
SERVICES {
  pop3 cmd="$X/usr/lib/cyrus/bin/pop3d -C $C/imapd.conf" listen="127.0.0.1:$port" prefork=0 maxchild=10
  lmtpunix cmd="lmtpd -C $C/imapd.conf" listen="$C/sock/lmtp" prefork=0 maxchild=5
}
EVENTS {
}
EOF
    iop_bg setsid -w /usr/lib/cyrus/bin/master -C "$C/imapd.conf" -M "$C/cyrus.conf" -p "$C/master.pid" \
      -L "$C/master.log"
    if t_wait_port "$port" 10; then
      for ((i = 0; i < 100; i++)); do
        [ -S "$C/sock/lmtp" ] && break
        sleep 0.1
      done
      [ -S "$C/sock/lmtp" ] || t_fail "cyrus: no LMTP socket"
      SRV_PORT=$port
      return 0
    fi
    t_kill "$T_BG_PID"
  done
  t_fail "cyrus: master did not listen: $(tail -3 "$C/master.log")"
}

srv_cyrus_fill() {
  "$PYTHON" "$MAILTOOL" lmtp "$T/cyrus/sock/lmtp" "$IU" "$@"
}

# shellcheck shell=bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End-to-end harness: private instances of clamd, Dovecot 2.3 and Postfix on loopback, and a
# SoftHSM2 token, for pec's end-to-end tests. Source it from bash (set -euo pipefail is fine):
#
#     . tests/e2e/lib.sh
#
# Every function takes an instance directory (one per daemon instance, created if missing) and
# explicit ports, so that several tests can run side by side. Run as root (Postfix's master
# needs it; clamd and Dovecot drop to their own users). The directories must be reachable by
# the daemons' users (clamav, mail, postfix): e2e_tmpdir makes a suitable parent.
#
# Nothing sleeps for a fixed time: every wait polls with a deadline (seconds, decimals allowed)
# every E2E_POLL seconds. On failure a function prints what went wrong and the tail of the
# daemon's log on stderr, and returns non-zero.
#
# Functions (arguments in order; [..] optional):
#   e2e_tmpdir                          new temp dir (mode 0755) on stdout
#   e2e_free_ports N                    N distinct free loopback TCP ports, one per line
#   e2e_poll DEADLINE CMD...            until CMD succeeds (CMD returning 3 gives up)
#   e2e_log MSG / e2e_fail MSG          time-stamped message on stderr (e2e_fail returns 1)
#   e2e_show_log FILE [LINES]           tail of a log on stderr
#   e2e_eicar                           the EICAR test file on stdout
#   wait_for_port HOST PORT DEADLINE
#   wait_for_file_match FILE REGEX DEADLINE       (grep -E)
#   clamd_start DIR PORT                clamd with the test DB (EICAR .hdb, PEC-TEST-VIRUS-MARKER .ndb)
#   clamd_ping PORT                     zPING → PONG
#   clamd_stop DIR
#   dovecot_start DIR LMTP_PORT IMAP_PORT
#   dovecot_stop DIR
#   postfix_start [--sasl-path SOCKET] DIR NAME SUBMISSION_PORT SMTP_PORT REINJECT_PORT
#                 FILTER_PORT MILTER_PORT LMTP_PORT DOMAINS...
#   postfix_route DIR DOMAIN HOST:PORT
#   postfix_wait_queue_empty DIR DEADLINE
#   postfix_stop DIR
#   softhsm_token DIR LABEL PIN KEY CERT KEYLABEL [KEY CERT KEYLABEL]  SOFTHSM2_CONF path on stdout
#   slapd_start DIR PORT                slapd on ldap://127.0.0.1:PORT/, suffix o=postacert,
#                                       PEC schema (etc/ldap/pec.schema), rootdn
#                                       cn=admin,o=postacert password "secret", anonymous read
#   slapd_stop DIR
#
# Environment: E2E_POLL (poll interval, default 0.05), E2E_START_DEADLINE (seconds a daemon
# may take to start or stop, default 30), CLAMD_EXTRA_CONF (extra clamd.conf lines, e.g.
# "StreamMaxLength 1M"), CLAMD_NO_MARKER=1 (clamd_start leaves the PEC-TEST-VIRUS-MARKER
# signature out: an antivirus that misses it).

E2E_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_REPO=$(cd "$E2E_LIB_DIR/../.." && pwd)
E2E_POLL=${E2E_POLL:-0.05}
E2E_START_DEADLINE=${E2E_START_DEADLINE:-30}
# The Debian interpreter: the python3 first on PATH may be another one.
E2E_PYTHON=${E2E_PYTHON:-/usr/bin/python3}

E2E_T0=${EPOCHREALTIME//[.,]/}
# Messages on stderr, stamped with the seconds since lib.sh was sourced.
e2e_log() {
  local ms=$(( ($(_e2e_now_us) - 10#$E2E_T0) / 1000 ))
  printf 'e2e [%d.%03d]: %s\n' $((ms / 1000)) $((ms % 1000)) "$*" >&2
}
e2e_fail() {
  e2e_log "ERROR: $*"
  return 1
}

# Prints the last lines of FILE on stderr, framed, when it exists.
e2e_show_log() {
  local file=$1 lines=${2:-40}
  if [ -s "$file" ]; then
    printf -- '----- last %s lines of %s -----\n' "$lines" "$file" >&2
    tail -n "$lines" "$file" | tr -d '\r' >&2
    printf -- '----- end of %s -----\n' "$file" >&2
  fi
}

# Current time in microseconds.
_e2e_now_us() {
  local t=${EPOCHREALTIME//[.,]/}
  printf '%s' "$((10#$t))"
}

# Seconds (decimals allowed) → microseconds.
_e2e_secs_us() {
  local s=$1 int frac
  if [[ ! $s =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
    e2e_fail "invalid number of seconds \"$s\""
    return 1
  fi
  int=${s%%.*}
  frac=0
  if [[ $s == *.* ]]; then
    frac=${s#*.}000000
    frac=${frac:0:6}
  fi
  printf '%s' "$((10#$int * 1000000 + 10#$frac))"
}

# e2e_poll DEADLINE CMD...: runs CMD every E2E_POLL seconds until it succeeds (return 0), the
# deadline passes (return 1), or CMD returns 3, which means "give up" (return 3). CMD runs at
# least once.
e2e_poll() {
  local deadline_us end rc
  deadline_us=$(_e2e_secs_us "$1") || return 1
  shift
  end=$(($(_e2e_now_us) + deadline_us))
  while true; do
    rc=0
    "$@" || rc=$?
    if [ "$rc" -eq 0 ]; then return 0; fi
    if [ "$rc" -eq 3 ]; then return 3; fi
    if [ "$(_e2e_now_us)" -ge "$end" ]; then return 1; fi
    sleep "$E2E_POLL"
  done
}

# A fresh temporary directory that the daemons' users can traverse.
e2e_tmpdir() {
  local d
  d=$(mktemp -d "${TMPDIR:-/tmp}/pec-e2e.XXXXXX")
  chmod 0755 "$d"
  printf '%s\n' "$d"
}

# N distinct loopback TCP ports that are free now, picked at random below the kernel's
# ephemeral range (so that outgoing connections cannot take them meanwhile).
e2e_free_ports() {
  "$E2E_PYTHON" - "$1" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except OSError:
    low = 32768
top = max(low - 1, 11000)
held, ports = [], []
for _ in range(10000):
    if len(ports) == n:
        break
    p = random.randint(10000, top)
    if p in ports:
        continue
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close()
        continue
    held.append(s)
    ports.append(p)
if len(ports) < n:
    sys.exit("e2e_free_ports: not enough free ports")
for s in held:
    s.close()
print("\n".join(map(str, ports)))
PY
}

_e2e_port_open() {
  local fd
  { exec {fd}<>"/dev/tcp/$1/$2"; } 2>/dev/null || return 1
  exec {fd}>&-
  return 0
}

# wait_for_port HOST PORT DEADLINE: until something accepts TCP connections on HOST:PORT.
wait_for_port() {
  if [ $# -ne 3 ]; then e2e_fail "usage: wait_for_port HOST PORT DEADLINE"; return 2; fi
  e2e_poll "$3" _e2e_port_open "$1" "$2" ||
    e2e_fail "nothing listens on $1:$2 after $3 s"
}

_e2e_file_matches() { [ -f "$1" ] && grep -Eq -- "$2" "$1"; }

# wait_for_file_match FILE REGEX DEADLINE: until FILE exists and has a line matching REGEX.
wait_for_file_match() {
  if [ $# -ne 3 ]; then e2e_fail "usage: wait_for_file_match FILE REGEX DEADLINE"; return 2; fi
  e2e_poll "$3" _e2e_file_matches "$1" "$2" ||
    e2e_fail "no line matching \"$2\" in $1 after $3 s"
}

# Whether PID is a live process (a zombie counts as gone).
_e2e_alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ "$state" != Z ]
}
_e2e_dead() { ! _e2e_alive "$1"; }

# _e2e_stop_pid NAME PID [LOG]: SIGTERM, wait for the exit with a deadline, then SIGKILL.
_e2e_stop_pid() {
  local name=$1 pid=$2 log=${3:-}
  if ! _e2e_alive "$pid"; then
    wait "$pid" 2>/dev/null || true
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  if ! e2e_poll "$E2E_START_DEADLINE" _e2e_dead "$pid"; then
    e2e_log "$name (pid $pid) still running after $E2E_START_DEADLINE s: SIGKILL"
    [ -z "$log" ] || e2e_show_log "$log"
    kill -KILL "$pid" 2>/dev/null || true
    e2e_poll 5 _e2e_dead "$pid" || true
  fi
  # reap it when it is our child, so that it leaves no zombie
  wait "$pid" 2>/dev/null || true
}

# _e2e_check_reachable USER DIR: whether USER can enter DIR (a daemon dropping to USER must).
_e2e_check_reachable() {
  local user=$1 dir=$2
  if ! runuser -u "$user" -- test -x "$dir" 2>/dev/null; then
    e2e_fail "user $user cannot enter $dir: make its parents world-traversable (e2e_tmpdir does)"
    return 1
  fi
}

# ---------------------------------------------------------------------------------------------
# clamd

# The EICAR test file, byte-exact (68 bytes).
e2e_eicar() {
  # shellcheck disable=SC2016 # literal bytes, nothing to expand
  printf '%s' 'X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
}

# clamd_ping PORT: zPING → PONG on 127.0.0.1:PORT.
clamd_ping() {
  local fd reply=""
  { exec {fd}<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'zPING\0' >&"$fd" || { exec {fd}>&-; return 1; }
  IFS= read -r -t 2 -d '' reply <&"$fd" || true
  exec {fd}>&-
  [ "$reply" = PONG ]
}

_e2e_clamd_ready() {
  _e2e_alive "$1" || return 3
  clamd_ping "$2"
}

# clamd_start DIR PORT: clamd on 127.0.0.1:PORT and unix socket DIR/run/clamd.sock, with a
# database of two signatures: the EICAR file (DIR/db/test.hdb, reported as
# "Eicar-Test-Signature.UNOFFICIAL") and the string PEC-TEST-VIRUS-MARKER anywhere, also
# inside a decoded MIME part (DIR/db/test.ndb, "PEC.Test.Marker.UNOFFICIAL").
clamd_start() {
  if [ $# -ne 2 ]; then e2e_fail "usage: clamd_start DIR PORT"; return 2; fi
  local dir=$1 port=$2 pid rc
  mkdir -p "$dir/db" "$dir/run"
  dir=$(cd "$dir" && pwd)
  e2e_eicar > "$dir/eicar.com"
  printf '%s:68:Eicar-Test-Signature\n' "$(md5sum < "$dir/eicar.com" | cut -d' ' -f1)" \
    > "$dir/db/test.hdb"
  rm -f "$dir/db/test.ndb"
  if [ "${CLAMD_NO_MARKER:-0}" != 1 ]; then
    printf 'PEC.Test.Marker:0:*:%s\n' \
      "$(printf '%s' PEC-TEST-VIRUS-MARKER | od -An -tx1 | tr -d ' \n')" > "$dir/db/test.ndb"
  fi
  cat > "$dir/clamd.conf" <<EOF
DatabaseDirectory $dir/db
LocalSocket $dir/run/clamd.sock
TCPSocket $port
TCPAddr 127.0.0.1
Foreground yes
LogFile $dir/clamd.log
LogTime yes
PidFile $dir/run/clamd.pid
User clamav
${CLAMD_EXTRA_CONF:-}
EOF
  chown -R clamav:clamav "$dir"
  _e2e_check_reachable clamav "$dir" || return 1
  clamd -c "$dir/clamd.conf" < /dev/null > "$dir/clamd.out" 2>&1 &
  pid=$!
  printf '%s\n' "$pid" > "$dir/pid"
  rc=0
  e2e_poll "$E2E_START_DEADLINE" _e2e_clamd_ready "$pid" "$port" || rc=$?
  if [ "$rc" -ne 0 ] || ! _e2e_alive "$pid"; then
    e2e_show_log "$dir/clamd.out"
    e2e_show_log "$dir/clamd.log"
    if _e2e_alive "$pid"; then
      _e2e_stop_pid clamd "$pid"
      e2e_fail "clamd did not answer PING on 127.0.0.1:$port within $E2E_START_DEADLINE s"
    else
      wait "$pid" 2>/dev/null || true
      e2e_fail "clamd exited during start-up ($dir/clamd.conf)"
    fi
    return 1
  fi
  e2e_log "clamd up on 127.0.0.1:$port (pid $pid, $dir)"
}

clamd_stop() {
  local dir=$1
  [ -f "$dir/pid" ] || return 0
  _e2e_stop_pid clamd "$(cat "$dir/pid")" "$dir/clamd.log"
  rm -f "$dir/pid"
}

# ---------------------------------------------------------------------------------------------
# Dovecot 2.3

# dovecot_start DIR LMTP_PORT IMAP_PORT: LMTP and IMAP on 127.0.0.1, any user with the
# password "test", Maildir in DIR/mail/<domain>/<user>, and an auth socket for Postfix's SASL
# at DIR/run/auth-postfix. DOVECOT_QUOTA (e.g. 30K) gives every mailbox that storage quota.
# DOVECOT_UNKNOWN_USERS (space-separated addresses): users the userdb does not know, to whom
# LMTP answers 550 5.1.1 (every other address exists). DOVECOT_TLS_CERT and
# DOVECOT_TLS_KEY (PEM): IMAP offers STARTTLS (ssl = required: a login in clear is refused,
# except from the server's own address, which Dovecot counts as secured: every client
# here); without them, no TLS.
# DOVECOT_EXTRA: configuration lines appended as they are.
# DOVECOT_SIEVE=1: Pigeonhole Sieve at LMTP delivery with the shipped dovecot/40-pec-sieve.conf
# (!include'd as it is), its sieve_global moved to DIR/sieve-global, which holds the shipped
# dovecot/pec-receipts.sieve compiled with sievec; homes (where each mailbox's own Sieve
# scripts live) are DIR/home/<domain>/<user>, apart from the Maildirs, which stay in
# DIR/mail/<domain>/<user>.
dovecot_start() {
  if [ $# -ne 3 ]; then e2e_fail "usage: dovecot_start DIR LMTP_PORT IMAP_PORT"; return 2; fi
  local dir=$1 lmtp=$2 imap=$3 pid
  mkdir -p "$dir/run" "$dir/state" "$dir/mail"
  dir=$(cd "$dir" && pwd)
  chown -R mail:mail "$dir/mail"
  _e2e_check_reachable mail "$dir/mail" || return 1
  # DOVECOT_UNKNOWN_USERS: a passwd-file userdb before the static one that fails the lookup
  # when it finds the user (result_success = return-fail).
  local unknown_userdb="" u home="$dir/mail/%d/%n"
  if [ "${DOVECOT_SIEVE:-0}" = 1 ]; then
    home="$dir/home/%d/%n"
    mkdir -p "$dir/home" "$dir/sieve-global"
    chown mail:mail "$dir/home"
    cp "$E2E_REPO/dovecot/pec-receipts.sieve" "$dir/sieve-global/"
    if ! sievec "$dir/sieve-global/pec-receipts.sieve" 2> "$dir/sievec.out"; then
      e2e_show_log "$dir/sievec.out"
      e2e_fail "sievec could not compile dovecot/pec-receipts.sieve"
      return 1
    fi
  fi
  if [ -n "${DOVECOT_UNKNOWN_USERS:-}" ]; then
    : > "$dir/unknown-users"
    for u in $DOVECOT_UNKNOWN_USERS; do printf '%s::::::\n' "$u" >> "$dir/unknown-users"; done
    unknown_userdb="userdb {
  driver = passwd-file
  args = username_format=%u $dir/unknown-users
  result_success = return-fail
  result_failure = continue
}"
  fi
  local tls="ssl = no
disable_plaintext_auth = no"
  if [ -n "${DOVECOT_TLS_CERT:-}" ]; then
    tls="ssl = required
ssl_cert = <$DOVECOT_TLS_CERT
ssl_key = <$DOVECOT_TLS_KEY
disable_plaintext_auth = yes"
  fi
  cat > "$dir/dovecot.conf" <<EOF
# Dovecot 2.3 syntax (Debian 12); private instance for the pec end-to-end tests.
protocols = lmtp imap
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/dovecot.log
listen = 127.0.0.1
$tls
auth_mechanisms = plain login
mail_location = maildir:$dir/mail/%d/%n
mail_uid = mail
mail_gid = mail
first_valid_uid = 8
last_valid_uid = 0
passdb {
  driver = static
  args = password=test
}
$unknown_userdb
userdb {
  driver = static
  args = uid=mail gid=mail home=$home allow_all_users=yes
}
service auth {
  unix_listener auth-postfix {
    mode = 0666
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $lmtp
  }
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $imap
  }
  inet_listener imaps {
    port = 0
  }
}
protocol lmtp {
  postmaster_address = postmaster@localhost
}
EOF
  if [ "${DOVECOT_SIEVE:-0}" = 1 ]; then
    # The namespace as Debian's 10-mail.conf has it (the snippet sets its separator).
    cat >> "$dir/dovecot.conf" <<EOF
namespace inbox {
  inbox = yes
}
!include $E2E_REPO/dovecot/40-pec-sieve.conf
plugin {
  sieve_global = $dir/sieve-global
}
EOF
  fi
  if [ -n "${DOVECOT_QUOTA:-}" ]; then
    # Every mailbox gets this storage quota (e.g. 30K); LMTP refuses what does not fit with
    # a permanent 552 5.2.2 (quota_full_tempfail = no).
    cat >> "$dir/dovecot.conf" <<EOF
mail_plugins = \$mail_plugins quota
plugin {
  quota = count:User quota
  quota_rule = *:storage=$DOVECOT_QUOTA
  quota_full_tempfail = no
  quota_vsizes = yes
}
EOF
  fi
  # DOVECOT_EXTRA: lines appended to the configuration as they are.
  if [ -n "${DOVECOT_EXTRA:-}" ]; then printf '%s\n' "$DOVECOT_EXTRA" >> "$dir/dovecot.conf"; fi
  dovecot -F -c "$dir/dovecot.conf" < /dev/null > "$dir/dovecot.out" 2>&1 &
  pid=$!
  printf '%s\n' "$pid" > "$dir/pid"
  if ! e2e_poll "$E2E_START_DEADLINE" _e2e_dovecot_ready "$pid" "$dir" "$lmtp" "$imap" ||
    ! _e2e_alive "$pid"; then
    e2e_show_log "$dir/dovecot.out"
    e2e_show_log "$dir/dovecot.log"
    if _e2e_alive "$pid"; then
      _e2e_stop_pid dovecot "$pid"
      e2e_fail "dovecot did not open LMTP $lmtp, IMAP $imap and $dir/run/auth-postfix within $E2E_START_DEADLINE s"
    else
      wait "$pid" 2>/dev/null || true
      e2e_fail "dovecot exited during start-up ($dir/dovecot.conf)"
    fi
    return 1
  fi
  e2e_log "dovecot up: LMTP 127.0.0.1:$lmtp, IMAP 127.0.0.1:$imap (pid $pid, $dir)"
}

_e2e_dovecot_ready() {
  _e2e_alive "$1" || return 3
  [ -S "$2/run/auth-postfix" ] && _e2e_port_open 127.0.0.1 "$3" && _e2e_port_open 127.0.0.1 "$4"
}

dovecot_stop() {
  local dir=$1
  [ -f "$dir/pid" ] || return 0
  _e2e_stop_pid dovecot "$(cat "$dir/pid")" "$dir/dovecot.log"
  rm -f "$dir/pid"
}

# ---------------------------------------------------------------------------------------------
# Postfix

# _e2e_postfix DIR ARGS...: the postfix command on the instance in DIR. It prints its errors
# only when stderr is a tty, so it runs under script(1); on failure its output and the
# instance's maillog are shown.
_e2e_postfix() {
  local dir=$1 cmd out rc=0
  shift
  printf -v cmd '%q ' postfix -c "$dir/etc" "$@"
  out=$(script -eqc "$cmd" /dev/null < /dev/null 2>&1) || rc=$?
  if [ "$rc" -ne 0 ]; then
    printf '%s\n' "$out" | tr -d '\r' >&2
    e2e_show_log "$dir/maillog"
    e2e_fail "\"postfix $*\" failed (exit $rc) for $dir"
    return 1
  fi
}

# Postfix reads a texthash: table only once the file is a second old (it takes a younger
# file for one being written, and re-reads it every 0.3 s), which would delay the first
# message after every change by one to two seconds: back-date the file instead.
_e2e_age_file() {
  touch -m -d "@$(($(date +%s) - 2))" "$1"
}

_e2e_postfix_master_pid() {
  local f=$1/spool/pid/master.pid
  [ -f "$f" ] || return 1
  tr -d ' \n' < "$f"
}

# postfix_start [--sasl-path SOCKET] DIR NAME SUBMISSION_PORT SMTP_PORT REINJECT_PORT
#               FILTER_PORT MILTER_PORT LMTP_PORT DOMAIN...
#
# A private Postfix in DIR (config DIR/etc, queue DIR/spool, log DIR/maillog, syslog name
# postfix-NAME, no chroot), listening on 127.0.0.1 only:
#   SMTP_PORT        smtpd for other providers and the Internet, with the content filter
#   SUBMISSION_PORT  smtpd for users: SASL through Dovecot (--sasl-path, e.g.
#                    DOVECOT_DIR/run/auth-postfix; plaintext AUTH allowed, no TLS), the
#                    milter and the content filter
#   REINJECT_PORT    smtpd for what pec's filter and milter inject: no filter, no milter,
#                    XFORWARD allowed from 127.0.0.0/8
#   FILTER_PORT      after-queue content filter: pecfilter:[127.0.0.1]:FILTER_PORT
#   MILTER_PORT      smtpd_milters = inet:127.0.0.1:MILTER_PORT (submission only),
#                    milter_default_action = tempfail
#   LMTP_PORT        Dovecot LMTP, the transport for the DOMAINs (virtual_mailbox_domains)
# An empty SUBMISSION_PORT, REINJECT_PORT, FILTER_PORT or MILTER_PORT leaves that part out.
# myhostname is mx.<first DOMAIN>. Other domains bounce at once (default_transport = error)
# unless routed with postfix_route. Retries are fast (queue_run_delay 1s, backoff 1s..5s).
# TLS, as postfix/*.snippet ship it, when POSTFIX_TLS_CERT, POSTFIX_TLS_KEY (the server
# certificate and key, PEM) and POSTFIX_TLS_CA (the CA file the client trusts) are set:
# SMTP_PORT offers STARTTLS (may), SUBMISSION_PORT requires it before AUTH (encrypt,
# smtpd_tls_auth_only), the SMTP client uses TLS when offered (may) and, when
# POSTFIX_TLS_POLICY names a file, smtp_tls_policy_maps = texthash:POSTFIX_TLS_POLICY
# (`pec index tls-policy` writes it: verified TLS to the certified domains).
postfix_start() {
  local sasl_path=""
  while [ $# -gt 0 ]; do
    case $1 in
      --sasl-path) sasl_path=$2; shift 2 ;;
      --) shift; break ;;
      *) break ;;
    esac
  done
  if [ $# -lt 9 ]; then
    e2e_fail "usage: postfix_start [--sasl-path SOCKET] DIR NAME SUBMISSION_PORT SMTP_PORT REINJECT_PORT FILTER_PORT MILTER_PORT LMTP_PORT DOMAIN..."
    return 2
  fi
  local dir=$1 name=$2 submission=$3 smtp=$4 reinject=$5 filter=$6 milter=$7 lmtp=$8
  shift 8
  local domains=("$@") filter_opt="" milter_opt="" port
  if [ -z "$smtp" ] || [ -z "$lmtp" ]; then
    e2e_fail "postfix_start: SMTP_PORT and LMTP_PORT are required"
    return 2
  fi
  if [ -n "$submission" ] && [ -z "$sasl_path" ]; then
    e2e_fail "postfix_start: a submission port needs --sasl-path (Dovecot's auth-postfix socket)"
    return 2
  fi
  mkdir -p "$dir/etc" "$dir/spool" "$dir/data"
  dir=$(cd "$dir" && pwd)
  _e2e_check_reachable postfix "$dir/spool" || return 1
  chown postfix:postfix "$dir/data"
  : > "$dir/etc/transport"
  _e2e_age_file "$dir/etc/transport"
  [ -z "$filter" ] || filter_opt="-o content_filter=pecfilter:[127.0.0.1]:$filter"
  [ -z "$milter" ] || milter_opt="-o smtpd_milters=inet:127.0.0.1:$milter"
  local tls_main="" sub_tls=(smtpd_tls_security_level=none smtpd_tls_auth_only=no)
  if [ -n "${POSTFIX_TLS_CERT:-}" ]; then
    tls_main="smtpd_tls_cert_file = $POSTFIX_TLS_CERT
smtpd_tls_key_file = $POSTFIX_TLS_KEY
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
smtp_tls_security_level = may
smtp_tls_CAfile = $POSTFIX_TLS_CA
smtp_tls_loglevel = 1"
    [ -z "${POSTFIX_TLS_POLICY:-}" ] || tls_main="$tls_main
smtp_tls_policy_maps = texthash:$POSTFIX_TLS_POLICY"
    sub_tls=(smtpd_tls_security_level=encrypt smtpd_tls_auth_only=yes)
  fi

  cat > "$dir/etc/main.cf" <<EOF
# Private Postfix instance "$name" for the pec end-to-end tests (written by tests/e2e/lib.sh).
compatibility_level = 3.6
queue_directory = $dir/spool
data_directory = $dir/data
syslog_name = postfix-$name
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
myhostname = mx.${domains[0]}
mydomain = ${domains[0]}
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
readme_directory = no
smtpd_banner = \$myhostname ESMTP
smtputf8_enable = no
disable_mime_output_conversion = yes
virtual_mailbox_domains = ${domains[*]}
virtual_transport = lmtp:inet:127.0.0.1:$lmtp
transport_maps = texthash:$dir/etc/transport
default_transport = error:no route to this domain in the e2e harness (see postfix_route)
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
milter_default_action = tempfail
milter_mail_macros = i {auth_type} {auth_authen} {auth_author} {mail_addr}
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 5s
$tls_main
EOF

  {
    cat <<'EOF'
# service type  private unpriv  chroot  wakeup  maxproc command + args
EOF
    printf '127.0.0.1:%s inet n - n - - smtpd\n' "$smtp"
    [ -z "$filter_opt" ] || printf '  %s\n' "$filter_opt"
    if [ -n "$submission" ]; then
      printf '127.0.0.1:%s inet n - n - - smtpd\n' "$submission"
      printf '  -o %s\n' \
        "syslog_name=postfix-$name/submission" \
        smtpd_sasl_auth_enable=yes \
        smtpd_sasl_type=dovecot \
        "smtpd_sasl_path=$sasl_path" \
        smtpd_sasl_security_options=noanonymous \
        "${sub_tls[@]}" \
        smtpd_client_restrictions= \
        smtpd_relay_restrictions=permit_sasl_authenticated,reject \
        milter_macro_daemon_name=ORIGINATING
      [ -z "$milter_opt" ] || printf '  %s\n' "$milter_opt"
      [ -z "$filter_opt" ] || printf '  %s\n' "$filter_opt"
    fi
    if [ -n "$reinject" ]; then
      printf '127.0.0.1:%s inet n - n - 10 smtpd\n' "$reinject"
      printf '  -o %s\n' \
        "syslog_name=postfix-$name/reinject" \
        content_filter= \
        smtpd_milters= \
        receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters \
        smtpd_authorized_xforward_hosts=127.0.0.0/8 \
        mynetworks=127.0.0.0/8 \
        smtpd_tls_security_level=none
    fi
    if [ -n "$filter" ]; then
      printf 'pecfilter unix - - n - 10 smtp\n'
      printf '  -o %s\n' smtp_send_xforward_command=yes disable_mime_output_conversion=yes \
        smtp_tls_security_level=none smtp_tls_policy_maps=
    fi
    cat <<'EOF'
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
# qmgr wakes every 5 s (stock: 300 s), as the short backoff times above: a queue file that
# Postfix put back in incoming after a lost content-filter connection (pec killed mid-DATA)
# is retried without waiting for new mail to wake the queue manager.
qmgr      unix  n       -       n       5       1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
  } > "$dir/etc/master.cf"

  # "postfix start" runs the same checks as "postfix check" first (and creates the spool)
  _e2e_postfix "$dir" start || return 1
  for port in "$smtp" "$submission" "$reinject"; do
    [ -n "$port" ] || continue
    if ! wait_for_port 127.0.0.1 "$port" "$E2E_START_DEADLINE"; then
      e2e_show_log "$dir/maillog"
      return 1
    fi
  done
  e2e_log "postfix-$name up: smtp $smtp${submission:+, submission $submission}${reinject:+, reinject $reinject} (master pid $(_e2e_postfix_master_pid "$dir"), $dir)"
}

# postfix_route DIR DOMAIN HOST:PORT: mail for DOMAIN goes by SMTP to HOST:PORT (no MX
# lookup), e.g. another instance's SMTP_PORT. Reloads Postfix and waits for the reload.
# DOMAIN may also be an address (user@domain). The next hop stays the recipient domain, as
# with MX routing on the Internet, so that smtp_tls_policy_maps (keyed by the next hop)
# applies and the peer's certificate is checked against that name: the transport is a
# service "route-PORT" (an smtp client with smtp_tcp_port = PORT, chrooted into the spool)
# that resolves the domain through the spool's etc/hosts (HOST, an IP address).
postfix_route() {
  if [ $# -ne 3 ]; then e2e_fail "usage: postfix_route DIR DOMAIN HOST:PORT"; return 2; fi
  local dir=$1 domain=$2 hostport=$3 host port before
  host=${hostport%:*}
  port=${hostport##*:}
  if [ -z "$host" ] || [ -z "$port" ] || [ "$host" = "$hostport" ]; then
    e2e_fail "postfix_route: expected HOST:PORT, got \"$hostport\""
    return 2
  fi
  local name=${domain##*@} spool
  spool=$(postconf -c "$dir/etc" -h queue_directory)
  mkdir -p "$spool/etc"
  [ -f "$spool/etc/nsswitch.conf" ] || printf 'hosts: files\n' > "$spool/etc/nsswitch.conf"
  grep -qsx "$host $name" "$spool/etc/hosts" || printf '%s %s\n' "$host" "$name" >> "$spool/etc/hosts"
  if ! grep -q "^route-$port " "$dir/etc/master.cf"; then
    printf 'route-%s unix - - y - - smtp\n  -o smtp_tcp_port=%s\n' "$port" "$port" >> "$dir/etc/master.cf"
  fi
  printf '%s route-%s:\n' "$domain" "$port" >> "$dir/etc/transport"
  _e2e_age_file "$dir/etc/transport"
  before=$(_e2e_count_reloads "$dir")
  _e2e_postfix "$dir" reload || return 1
  if ! e2e_poll "$E2E_START_DEADLINE" _e2e_reloaded_since "$dir" "$before"; then
    e2e_show_log "$dir/maillog"
    e2e_fail "postfix in $dir did not log its reload"
    return 1
  fi
}

_e2e_count_reloads() {
  local n
  n=$(grep -c 'postfix[^ ]*/master\[[0-9]*\]: reload' "$1/maillog" 2>/dev/null) || true
  printf '%s' "${n:-0}"
}
_e2e_reloaded_since() { [ "$(_e2e_count_reloads "$1")" -gt "$2" ]; }

_e2e_queue_empty() {
  local out
  out=$(postqueue -c "$1/etc" -p 2>&1) || return 1
  [[ $out == *"Mail queue is empty"* ]]
}

# postfix_wait_queue_empty DIR DEADLINE: until postqueue -p reports an empty queue.
postfix_wait_queue_empty() {
  if [ $# -ne 2 ]; then e2e_fail "usage: postfix_wait_queue_empty DIR DEADLINE"; return 2; fi
  if ! e2e_poll "$2" _e2e_queue_empty "$1"; then
    postqueue -c "$1/etc" -p >&2 || true
    e2e_show_log "$1/maillog"
    e2e_fail "queue of $1 not empty after $2 s"
    return 1
  fi
}

# postfix_stop DIR: stops the instance by its master's pid (the master takes its children
# down with it) and waits until the master has exited. "postfix stop" would do the same, but
# sleeps a whole second when the master is not gone at once.
postfix_stop() {
  local dir=$1 pid
  pid=$(_e2e_postfix_master_pid "$dir") || return 0
  _e2e_stop_pid "postfix master" "$pid" "$dir/maillog"
}

# ---------------------------------------------------------------------------------------------
# SoftHSM2

# softhsm_token DIR LABEL PIN KEY CERT KEYLABEL: a SoftHSM2 token LABEL in DIR holding the key
# and certificate (PEM files) under KEYLABEL, and a second key (the seal key) when given
# (see tests/pki/make-token.sh). Prints the SOFTHSM2_CONF path; export it in the process
# that loads the PKCS#11 module.
softhsm_token() {
  if [ $# -ne 6 ] && [ $# -ne 9 ]; then
    e2e_fail "usage: softhsm_token DIR LABEL PIN KEY CERT KEYLABEL [KEY CERT KEYLABEL]"; return 2
  fi
  sh "$E2E_REPO/tests/pki/make-token.sh" "$@"
}

# ---------------------------------------------------------------------------------------------
# Test time-stamping authority (tests/tsa/)

# tsa_start DIR PKIDIR: the test TSA (make-tsa.sh in DIR, certificates from PKIDIR) over
# HTTPS with basic authentication (user "pec", password in DIR/password), as accredited
# TSAs are reached; DIR/mode plays faults (tsa.py: "down", …; absent: answers), DIR/offset
# moves its clock (tsa_offset). Prints its port; its pid is in DIR/tsa.pid (tsa_stop).
tsa_start() {
  local dir=$1 pki=$2 _
  sh "$E2E_REPO/tests/tsa/make-tsa.sh" "$dir" "$pki" >/dev/null 2>&1 || { e2e_fail "make-tsa.sh failed"; return 1; }
  /usr/bin/python3 "$E2E_REPO/tests/tsa/tsa.py" "$dir/tsa.cnf" --tls "$dir/server.pem" "$dir/server.key" \
    --user pec "$dir/password" --mode-file "$dir/mode" --offset-file "$dir/offset" --until-killed \
    > "$dir/port" 2> "$dir/tsa.log" &
  echo $! > "$dir/tsa.pid"
  for _ in $(seq 1 100); do
    if [ -s "$dir/port" ]; then head -n 1 "$dir/port"; return 0; fi
    sleep 0.1
  done
  e2e_fail "the test TSA did not start: $(cat "$dir/tsa.log")"
}

# tsa_offset DIR SECONDS: the test TSA of tsa_start in DIR dates its tokens SECONDS (an
# integer, negative for the past) away from the real clock from its next request on (tsa.py
# adds it to its clock); 0 puts it back on the real clock. For the tests that move
# pec's clock (`pec timers run --now`, under `faketime` too: pec's TSA client wants a token
# within 10 min of its own clock, and XAdES one no earlier than the signing time).
tsa_offset() {
  if [ $# -ne 2 ] || ! [[ $2 =~ ^-?[0-9]+$ ]]; then e2e_fail "usage: tsa_offset DIR SECONDS"; return 2; fi
  if [ "$2" = 0 ]; then rm -f "$1/offset"; else printf '%s\n' "$2" > "$1/offset"; fi
}

# tsa_stop DIR: stops the test TSA of tsa_start (by pid).
tsa_stop() {
  local pid
  pid=$(cat "$1/tsa.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------
# OpenLDAP slapd (the provider index, spec §7)

_e2e_slapd_ready() {
  _e2e_alive "$1" || return 3
  ldapsearch -x -H "ldap://127.0.0.1:$2/" -b "" -s base -LLL namingContexts >/dev/null 2>&1
}

# slapd_start DIR PORT: a private slapd (slapd.conf style) on ldap://127.0.0.1:PORT/ with the
# database in DIR/db, suffix o=postacert (the entry itself is created), the PEC schema,
# rootdn cn=admin,o=postacert / secret, anonymous read. Pid in DIR/pid.
slapd_start() {
  if [ $# -ne 2 ]; then e2e_fail "usage: slapd_start DIR PORT"; return 2; fi
  local dir=$1 port=$2 pid rc
  mkdir -p "$dir/db"
  dir=$(cd "$dir" && pwd)
  cp "$E2E_REPO/etc/ldap/pec.schema" "$dir/pec.schema"
  cat > "$dir/slapd.conf" <<EOF
include /etc/ldap/schema/core.schema
include $dir/pec.schema
pidfile $dir/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 104857600
suffix "o=postacert"
rootdn "cn=admin,o=postacert"
rootpw secret
directory $dir/db
access to * by * read
EOF
  chown -R openldap:openldap "$dir"
  _e2e_check_reachable openldap "$dir" || return 1
  slapd -f "$dir/slapd.conf" -h "ldap://127.0.0.1:$port/" -u openldap -g openldap -d 0 \
    < /dev/null > "$dir/slapd.log" 2>&1 &
  pid=$!
  printf '%s\n' "$pid" > "$dir/pid"
  rc=0
  e2e_poll "$E2E_START_DEADLINE" _e2e_slapd_ready "$pid" "$port" || rc=$?
  if [ "$rc" -ne 0 ] || ! _e2e_alive "$pid"; then
    e2e_show_log "$dir/slapd.log"
    if _e2e_alive "$pid"; then _e2e_stop_pid slapd "$pid"; fi
    wait "$pid" 2>/dev/null || true
    e2e_fail "slapd did not answer on 127.0.0.1:$port within $E2E_START_DEADLINE s"
    return 1
  fi
  printf 'dn: o=postacert\nobjectClass: organization\nobjectClass: LDIFLocationURLObject\no: postacert\n' |
    ldapadd -x -H "ldap://127.0.0.1:$port/" -D cn=admin,o=postacert -w secret >/dev/null ||
    { e2e_fail "slapd: cannot create o=postacert"; return 1; }
  e2e_log "slapd up on 127.0.0.1:$port (pid $pid, $dir)"
}

slapd_stop() {
  local dir=$1
  [ -f "$dir/pid" ] || return 0
  _e2e_stop_pid slapd "$(cat "$dir/pid")" "$dir/slapd.log"
  rm -f "$dir/pid"
}

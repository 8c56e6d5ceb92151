#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, the installation guide (docs/install.md) on the system Postfix and Dovecot:
# installs the .deb and runs the guide's command blocks VERBATIM, as an administrator would,
# then checks what the guide promises and undoes everything.
#
# The blocks come from the document itself: every fenced block opened by "```sh guide-test"
# runs, in order, in one bash (set -euo pipefail, each command echoed), from a directory that
# holds the .deb; "```sh guide-test uninstall" blocks run at the end. Nothing of the guide is
# copied here. The test adds only what stands outside the guide:
#   before: the machine the guide starts from: Postfix configured as Debian's "Internet
#     Site" (mail name pec.example.it, the trap of section 3), Postfix, Dovecot and clamd
#     running as system services (`service`; with its signatures: a two-signature test
#     database stands in for freshclam, which needs the network), the certificate and key
#     in /root/pec-signing.{pem,key} and the seal's in /root/pec-seal.{pem,key} (the test CA
#     of tests/pki/make-pki.sh), the TSA's CA and password in /root/pec-tsa-ca.pem and
#     /root/pec-tsa-password (the guide's TSA is never reached: no day closes during the
#     test, and only a seal asks for a time stamp);
#   during: before the block that reads the receipts, a wait until they are there;
#   after: the checks (every receipt verifies and is of the right kind; the store belongs
#     to pec; the PEC domain is not in mydestination; clamd takes a 30 MB stream; the
#     post-crash duplicate check works as user pec; the purge removed /etc/pec and kept the
#     legal log), then the undo: the package purged, the pec and vmail users removed, and
#     /etc/postfix, /etc/dovecot, /etc/clamav, /var/lib/clamav, /var/lib/dovecot,
#     /var/lib/softhsm/tokens, /etc/mailname, /etc/aliases* and Postfix's debconf answers
#     put back as they were; the services this test started are stopped.
#
# It changes the system Postfix and Dovecot while it runs, so it runs only with
# PEC_E2E_GUIDE=1 (scripts/test.sh passes it on; .ci/run sets it), as root, on a machine
# where pec is not installed and the system Postfix, Dovecot and clamd are not running.
# The package: PACKAGE_DEB=FILE, or the newest target/debian/pec_*.deb (tests/e2e/package.sh
# builds it just before in the suite), or one built here with scripts/build-deb.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
guide=$root/docs/install.md

[ "${PEC_E2E_GUIDE:-0}" = 1 ] || e2e_fail "this test changes the system Postfix and Dovecot: run it with PEC_E2E_GUIDE=1"
[ "$(id -u)" -eq 0 ] || e2e_fail "run as root"
if dpkg-query -W -f='${Status}' pec 2>/dev/null | grep -q "install ok installed"; then
  e2e_fail "pec is already installed on this machine: the guide test would replace it"
fi
# The system instances (not the suite's private ones) write these pid files.
for pidfile in /var/spool/postfix/pid/master.pid /run/dovecot/master.pid /run/clamav/clamd.pid; do
  if [ -s "$pidfile" ] && kill -0 "$(tr -dc 0-9 < "$pidfile")" 2>/dev/null; then
    e2e_fail "a system daemon is running ($pidfile): this test would change it under its feet"
  fi
done
getent passwd vmail >/dev/null && e2e_fail "a vmail user exists already: the guide creates it"
getent passwd pec >/dev/null && e2e_fail "a pec user exists already: the package creates it"

work=$(e2e_tmpdir)
t0=$SECONDS

# ---- the machine as it was: saved before anything changes -----------------------------------
saved=(/etc/postfix /etc/dovecot /etc/clamav /var/lib/clamav /var/lib/dovecot
  /var/lib/softhsm/tokens /etc/mailname /etc/aliases /etc/aliases.db)
present=()
for p in "${saved[@]}"; do [ -e "$p" ] && present+=("$p"); done
tar -C / -cpf "$work/saved.tar" "${present[@]#/}"
debconf-show postfix 2>/dev/null | sed -n 's/^[* ] postfix\/\(main_mailer_type\|mailname\): \(.*\)$/\1\t\2/p' \
  > "$work/debconf" || true
started=()

restore() {
  local status=$? p
  set +e
  e2e_log "undo: stop what runs, purge, put the machine back"
  [ -x /etc/init.d/pec ] && service pec stop >/dev/null 2>&1
  dpkg-query -W -f='${Status}' pec 2>/dev/null | grep -q "install ok installed" \
    && { dpkg --purge pec >/dev/null 2>&1 || { echo "guide: dpkg --purge pec failed" >&2; status=1; }; }
  for s in "${started[@]}"; do
    [ "$s" = postfix ] && postsuper -d ALL >/dev/null 2>&1
    service "$s" stop >/dev/null 2>&1
  done
  getent passwd pec >/dev/null && deluser --system --quiet pec >/dev/null 2>&1
  getent group pec >/dev/null && delgroup --system --quiet pec >/dev/null 2>&1
  getent passwd vmail >/dev/null && userdel vmail >/dev/null 2>&1
  getent group vmail >/dev/null && groupdel vmail >/dev/null 2>&1
  rm -rf /var/lib/pec /var/log/pec /run/pec /etc/pec /var/vmail \
    /root/pec-signing.pem /root/pec-signing.key /root/pec-so-pin \
    /root/pec-seal.pem /root/pec-seal.key /root/pec-tsa-ca.pem /root/pec-tsa-password
  for p in "${saved[@]}"; do rm -rf "$p"; done
  tar -C / -xpf "$work/saved.tar"
  while IFS=$'\t' read -r key value; do
    printf 'postfix postfix/%s %s %s\n' "$key" "$([ "$key" = main_mailer_type ] && echo select || echo string)" "$value"
  done < "$work/debconf" | debconf-set-selections
  if [ "$status" -ne 0 ]; then
    echo "---- pec log" >&2; tail -n 40 /var/log/pec/pec.log >&2 2>/dev/null || tail -n 40 "$work/pec.log" >&2 2>/dev/null
    echo "---- mail log" >&2; tail -n 40 "$work/mail.log" >&2 2>/dev/null
    echo "guide: FAIL after $((SECONDS - t0)) s (work dir kept: $work)" >&2
  else
    if [ -n "${GUIDE_KEEP:-}" ]; then echo "guide: output kept in $work" >&2; else rm -rf "$work"; fi
  fi
  exit "$status"
}
trap restore EXIT

# ---- the package -----------------------------------------------------------------------
if [ -n "${PACKAGE_DEB:-}" ]; then
  deb=$PACKAGE_DEB
elif ls "$root"/target/debian/pec_*.deb >/dev/null 2>&1; then
  deb=$(ls -t "$root"/target/debian/pec_*.deb | head -n 1)
else
  e2e_log "build the package"
  (cd "$root" && scripts/build-deb.sh) >"$work/build.log" 2>&1 || { tail -n 30 "$work/build.log" >&2; e2e_fail "build-deb.sh failed"; }
  deb=$(ls -t "$root"/target/debian/pec_*.deb | head -n 1)
fi
mkdir -p "$work/download"
cp "$deb" "$work/download/"
e2e_log "package: $(basename "$deb")"

# ---- the machine the guide starts from ---------------------------------------------------
e2e_log "before the guide: Postfix as Debian's \"Internet Site\", Postfix, Dovecot and clamd running"
printf '%s\n' 'postfix postfix/main_mailer_type select Internet Site' \
  'postfix postfix/mailname string pec.example.it' | debconf-set-selections
rm -f /etc/postfix/main.cf
DEBIAN_FRONTEND=noninteractive dpkg-reconfigure -f noninteractive postfix >"$work/reconfigure.log" 2>&1 \
  || { cat "$work/reconfigure.log" >&2; e2e_fail "dpkg-reconfigure postfix"; }
# The mail log: there may be no syslog daemon (a container); Postfix's own postlogd writes it.
postconf -e maillog_file=/var/log/mail.log
# freshclam needs the network: two test signatures stand in for its databases (the init
# script wants main and daily to exist).
e2e_eicar > "$work/eicar.com"
printf '%s:68:Eicar-Test-Signature\n' "$(md5sum < "$work/eicar.com" | cut -d' ' -f1)" > /var/lib/clamav/test.hdb
mkdir -p /var/lib/clamav/main.inc /var/lib/clamav/daily.inc
chown -R clamav:clamav /var/lib/clamav
for s in clamav-daemon dovecot postfix; do
  service "$s" start >"$work/start-$s.log" 2>&1 || { cat "$work/start-$s.log" >&2; e2e_fail "service $s start"; }
  started+=("$s")
done
wait_for_unix_socket() { local i; for i in $(seq 1 300); do [ -S "$1" ] && return 0; sleep 0.1; done; return 1; }
wait_for_unix_socket /run/clamav/clamd.ctl || e2e_fail "clamd did not open /run/clamav/clamd.ctl"
sh "$root/tests/pki/make-pki.sh" "$work/pki" >/dev/null 2>&1 || e2e_fail "make-pki.sh"
install -m 0644 "$work/pki/it.pem" /root/pec-signing.pem
install -m 0600 "$work/pki/it.key" /root/pec-signing.key
install -m 0644 "$work/pki/it-seal.pem" /root/pec-seal.pem
install -m 0600 "$work/pki/it-seal.key" /root/pec-seal.key
install -m 0644 "$work/pki/ca.pem" /root/pec-tsa-ca.pem
printf 'test-password\n' > /root/pec-tsa-password
chmod 0600 /root/pec-tsa-password

# ---- the guide's blocks ----------------------------------------------------------------
# extract TAG: the blocks opened by "```sh TAG" exactly, in order, each preceded by a call
# of the test's hook with the block's number and first line.
extract() {
  awk -v tag="$1" '
    $0 == "```sh " tag { inside = 1; n++; first = 1; next }
    inside && $0 == "```" { inside = 0; print ""; next }
    inside { if (first) { q = $0; gsub(/\047/, "\047\\\047\047", q); printf "guide_hook %d \047%s\047\n", n, q; first = 0 }
             print }' "$guide"
}
# Before the block that reads the receipts: wait until they are there (at most 120 s).
cat > "$work/hooks.sh" <<'EOF'
guide_hook() {
  printf '\n### guide block %s: %s\n' "$1" "$2" >&2
  case $2 in
    "doveadm fetch"*)
      local i
      for i in $(seq 1 240); do
        [ "$(doveadm search -u alice@pec.example.it mailbox INBOX ALL 2>/dev/null | wc -l)" -ge 2 ] \
          && [ "$(doveadm search -u bob@pec.example.it mailbox INBOX ALL 2>/dev/null | wc -l)" -ge 1 ] && return 0
        sleep 0.5
      done
      echo "guide test: the receipts did not arrive within 120 s" >&2
      return 1 ;;
    "runuser -u pec -- pec status"*)
      # This container's kernel clock is the host's, which nothing here disciplines: when
      # pec status says so, accept it knowingly (the guide's prerequisite is a synchronised
      # clock), and say so.
      # (Its output in a file first: pec status exits 1 then, which pipefail would take for
      # the test; and not in a variable, which the trace would copy into the guide's output,
      # where a FAILED line counts.)
      local status
      status=$(mktemp)
      runuser -u pec -- pec status -c /etc/pec/pec.toml > "$status" 2>&1 || true
      if grep -q '^clock: FAILED' "$status"; then
        echo "guide test: the clock is not synchronised here: [clock] unsynchronised = \"warn\"" >&2
        printf '\n[clock]\nunsynchronised = "warn"\n' >> /etc/pec/pec.toml
      fi
      rm -f "$status" ;;
  esac
}
EOF
{ echo 'set -euo pipefail'; echo ". $work/hooks.sh"; echo 'set -x'; extract guide-test; } > "$work/guide.sh"
{ echo 'set -euo pipefail'; echo ". $work/hooks.sh"; echo 'set -x'; extract "guide-test uninstall"; } > "$work/uninstall.sh"
blocks=$(grep -c '^guide_hook ' "$work/guide.sh")
[ "$blocks" -ge 10 ] || e2e_fail "only $blocks guide-test blocks found in $guide"
e2e_log "run the guide: $blocks blocks of $guide"
g0=$SECONDS
(cd "$work/download" && bash "$work/guide.sh") > "$work/guide.out" 2>&1 \
  || { tail -n 60 "$work/guide.out" >&2; cp /var/log/mail.log "$work/mail.log" 2>/dev/null; cp /var/log/pec/pec.log "$work/pec.log" 2>/dev/null; e2e_fail "the guide failed (output: $work/guide.out)"; }
e2e_log "the guide ran in $((SECONDS - g0)) s"

# ---- what the guide promises ---------------------------------------------------------------
e2e_log "check: receipts, store, Postfix, clamd, duplicate check"
grep -q "^postfix reinjection: " "$work/guide.out" || e2e_fail "check-config --live did not run"
if grep -E '^[a-z ]+: FAILED' "$work/guide.out" | grep -v '^postfix reinjection: ' >&2; then
  e2e_fail "check-config --live before the start: something other than the reinjection listener failed"
fi
postconf -h mydestination | grep -qw pec.example.it && e2e_fail "the PEC domain is still in mydestination"
[ "$(stat -c %U /var/lib/pec/pec.db)" = pec ] || e2e_fail "the store is not owned by pec"
kinds=""
for f in /var/vmail/pec.example.it/alice/Maildir/new/* /var/vmail/pec.example.it/alice/Maildir/cur/* \
  /var/vmail/pec.example.it/bob/Maildir/new/* /var/vmail/pec.example.it/bob/Maildir/cur/*; do
  [ -f "$f" ] || continue
  out=$(pec verify --trust /root/pec-signing.pem "$f") || { echo "$out" >&2; e2e_fail "$f does not verify"; }
  kinds="$kinds $(sed -n 's/^kind: //p' <<<"$out" | cut -d' ' -f2)"
done
for k in accettazione avvenuta-consegna envelope; do
  grep -q -- "$k" <<<"$kinds" || e2e_fail "no $k among the messages ($kinds)"
done
# clamd takes a stream larger than Debian's 25 MB (StreamMaxLength raised by the guide).
/usr/bin/python3 - <<'EOF' || e2e_fail "clamd refused a 30 MB stream"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect("/run/clamav/clamd.ctl"); s.settimeout(120)
s.sendall(b"zINSTREAM\0"); chunk = b"x" * (1 << 20)
for _ in range(30): s.sendall(struct.pack(">I", len(chunk)) + chunk)
s.sendall(struct.pack(">I", 0)); reply = s.recv(200).decode(errors="replace").strip("\0\n")
print("clamd:", reply, file=sys.stderr); sys.exit(0 if reply.endswith("OK") else 1)
EOF
# The post-crash duplicate check of pec.toml, as user pec, finds Bob's message.
msgid=$(doveadm fetch -u bob@pec.example.it hdr.message-id mailbox INBOX ALL | sed -n 's/^hdr.message-id: *<\(.*\)>.*/\1/p' | head -n 1)
[ -n "$msgid" ] || e2e_fail "no Message-ID in Bob's mailbox"
found=$(runuser -u pec -- doveadm -o stats_writer_socket_path= search -S /run/dovecot/doveadm-server -u bob@pec.example.it header Message-ID "$msgid") \
  || e2e_fail "the duplicate check does not run as user pec"
[ -n "$found" ] || e2e_fail "the duplicate check as user pec does not find Bob's message"

# pec verify against the configured index (the store's copy), as user pec.
mkdir -p "$work/verify" && cp /var/vmail/pec.example.it/alice/Maildir/*/* "$work/verify/" && chown -R pec "$work/verify"
runuser -u pec -- pec verify -c /etc/pec/pec.toml "$work"/verify/* > "$work/verify.out" \
  || { cat "$work/verify.out" >&2; e2e_fail "pec verify -c (the configured index) does not verify Alice's receipts"; }
grep -q "^signer provider: .*PEC Example IT S.p.A." "$work/verify.out" \
  || { cat "$work/verify.out" >&2; e2e_fail "pec verify -c did not name the provider of the index"; }

# What stopped the walkthrough, broken on purpose: pec status (as pec, without the PIN)
# names it and says what to do; then it is put back.
e2e_log "check: pec status names a store pec cannot write, clamd's 25 MB limit, the domain in mydestination"
expect_status_failure() { # WHAT PATTERN
  local out
  if out=$(runuser -u pec -- pec status -c /etc/pec/pec.toml 2>&1); then
    echo "$out" >&2; e2e_fail "pec status passed with $1"
  fi
  grep -E -- "$2" <<<"$out" >&2 || { echo "$out" >&2; e2e_fail "pec status did not name $1"; }
}
chown root:root /var/lib/pec/pec.db
expect_status_failure "a store owned by root" "^store files: FAILED: .*cannot write /var/lib/pec/pec.db.*chown pec"
chown pec:pec /var/lib/pec/pec.db
cp -p /etc/clamav/clamd.conf "$work/clamd.conf"
sed -i 's/^StreamMaxLength .*/StreamMaxLength 25M/' /etc/clamav/clamd.conf
expect_status_failure "clamd's 25 MB stream limit" "^clamd stream limit: FAILED: .*StreamMaxLength"
cp -p "$work/clamd.conf" /etc/clamav/clamd.conf
postconf -e 'mydestination = pec.example.it, localhost'
expect_status_failure "the PEC domain in mydestination" "^postfix mydestination: FAILED: mydestination lists pec.example.it"
postconf -e 'mydestination = $myhostname, localhost'
runuser -u pec -- pec status -c /etc/pec/pec.toml > "$work/status.out" \
  || { cat "$work/status.out" >&2; e2e_fail "pec status fails after the repairs"; }

e2e_log "the guide's uninstall blocks"
(cd "$work/download" && bash "$work/uninstall.sh") > "$work/uninstall.out" 2>&1 \
  || { cat "$work/uninstall.out" >&2; e2e_fail "the uninstall blocks failed"; }
[ ! -e /etc/pec ] || e2e_fail "the purge left /etc/pec"
[ ! -e /var/log/pec ] || e2e_fail "the purge left /var/log/pec"
[ -e /var/lib/pec/pec.db ] || e2e_fail "the purge removed the legal log"
echo "guide: PASS in $((SECONDS - t0)) s (the guide's blocks: $((SECONDS - g0)) s with the checks)"

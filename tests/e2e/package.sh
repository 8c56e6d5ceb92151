#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, the Debian package: builds it (scripts/build-deb.sh: a release build and
# cargo-deb), installs it with dpkg on this machine (as root; CI machines are disposable),
# and checks what an administrator gets:
#
#  1. the files: /usr/bin/pec, the systemd unit (checked with systemd-analyze verify when
#     systemd is there), /etc/pec/pec.toml.sample, the Postfix and Dovecot snippets, the man
#     pages pec(8) and pec.toml(5), the operator guide; the postinst created the pec user and
#     /var/lib/pec;
#  2. the sample configuration passes the installed `pec check-config`, and the shipped
#     Postfix snippets point at the sample's listeners (milter, content filter, LMTP proxy,
#     reinjection) and parse with postconf;
#  3. two providers run the installed /usr/bin/pec (the unit's ExecStart by hand: no systemd
#     here), provider A's Postfix with the shipped main.cf snippet applied (ports of this
#     test substituted); Alice sends Bob one PEC message and every receipt verifies.
#
# The machine is left as it was: the package is purged at the end, and the pec user and
# /var/lib/pec the postinst created are removed (an administrator's purge keeps them: the
# legal log lives there). A machine where pec is already installed is refused, not
# overwritten. Usage: tests/e2e/package.sh   (as root; PACKAGE_DEB=FILE installs that
# package instead of building one)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"
mail=(/usr/bin/python3 "$here/pecmail.py")

if dpkg-query -W -f='${Status}' pec 2>/dev/null | grep -q "install ok installed"; then
  e2e_fail "pec is already installed on this machine: the package test would replace it (PEC_E2E_PACKAGE=0 skips it)"
fi
had_user=0 had_state=0
getent passwd pec >/dev/null && had_user=1
[ -e /var/lib/pec ] && had_state=1

work=$(e2e_tmpdir)
installed=0
cleanup() {
  status=$?
  provider_down "$work/a"
  provider_down "$work/b"
  if [ "$installed" = 1 ]; then
    dpkg --purge pec >/dev/null 2>&1 || { echo "package: dpkg --purge pec failed" >&2; status=1; }
    [ "$had_user" = 1 ] || deluser --system --quiet pec >/dev/null 2>&1 || true
    [ "$had_user" = 1 ] || delgroup --system --quiet pec >/dev/null 2>&1 || true
    [ "$had_state" = 1 ] || rm -rf /var/lib/pec
  fi
  if [ "$status" -ne 0 ]; then
    for p in a b; do
      echo "---- $p: pec log" >&2; tail -n 30 "$work/$p/pec.log" >&2 2>/dev/null || true
    done
    echo "package: FAIL (work dir kept: $work)" >&2
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT

if [ -n "${PACKAGE_DEB:-}" ]; then
  deb=$PACKAGE_DEB
else
  e2e_log "build the package"
  (cd "$root" && scripts/build-deb.sh) >"$work/build.log" 2>&1 || { tail -n 30 "$work/build.log" >&2; e2e_fail "build-deb.sh failed"; }
  deb=$(ls -t "$root"/target/debian/pec_*.deb | head -n 1)
fi
e2e_log "install $deb"
installed=1
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >&2

e2e_log "what the package installed"
for f in /usr/bin/pec /lib/systemd/system/pec.service /etc/pec/pec.toml.sample \
  /usr/share/pec/postfix/main.cf.snippet /usr/share/pec/postfix/master.cf.snippet \
  /usr/share/pec/dovecot/10-pec-auth.conf /usr/share/pec/dovecot/20-pec-lmtp.conf \
  /usr/share/pec/dovecot/30-pec-virtual-users.conf /usr/share/pec/dovecot/40-pec-sieve.conf \
  /usr/share/pec/dovecot/pec-receipts.sieve /usr/share/doc/pec/examples/grafana-dashboard.json \
  /usr/share/pec/ldap/pec.schema \
  /etc/init.d/pec /usr/share/man/man8/pec.8.gz \
  /usr/share/man/man5/pec.toml.5.gz /usr/share/doc/pec/operator-guide.md \
  /usr/share/doc/pec/install.md /usr/share/doc/pec/examples/make-pki.sh; do
  [ -f "$f" ] || e2e_fail "$f not installed"
done
getent passwd pec >/dev/null || e2e_fail "the postinst did not create the pec user"
[ "$(stat -c %U /var/lib/pec)" = pec ] || e2e_fail "/var/lib/pec is not owned by pec"
[ "$(stat -c %U /var/log/pec)" = pec ] || e2e_fail "/var/log/pec is not owned by pec"
if getent group softhsm >/dev/null; then
  id -nG pec | tr ' ' '\n' | grep -qx softhsm || e2e_fail "the postinst did not put pec in group softhsm"
fi
dpkg-query -W -f='${Depends}' pec | grep -q sqlite3 || e2e_fail "the package does not depend on sqlite3"
# Nothing enabled by surprise: no boot links, no wanted-by symlink.
if ls /etc/rc2.d/S*pec /etc/systemd/system/multi-user.target.wants/pec.service >/dev/null 2>&1; then
  e2e_fail "the package enabled pec at boot"
fi
/usr/bin/pec --version >&2
# Shipped stripped; the line tables went into the dbgsym package beside the .deb.
if readelf -S /usr/bin/pec | grep '\.debug_line' >/dev/null; then e2e_fail "/usr/bin/pec is not stripped"; fi
ls "$(dirname "$deb")"/pec-dbgsym_*.ddeb >/dev/null 2>&1 || [ -n "${PACKAGE_DEB:-}" ] \
  || e2e_fail "no pec-dbgsym package beside $deb"
zgrep -q "^\.SH \"PEC STATUS\"" /usr/share/man/man8/pec.8.gz || e2e_fail "pec(8) lacks pec status"
zgrep -q "^\[metrics\]" /usr/share/man/man5/pec.toml.5.gz || e2e_fail "pec.toml(5) lacks [metrics]"
# One page: the subcommands are its sections, not pages of their own (pec-verify(8)).
if zgrep -n 'pec\\-[a-z\\-]*([0-9])' /usr/share/man/man8/pec.8.gz >&2; then
  e2e_fail "pec(8) names pages that do not exist"
fi
if command -v systemd-analyze >/dev/null; then
  # Only the unit's own problems count (in a container without systemd running,
  # systemd-analyze also reports the host's units), and the Documentation= man pages only
  # where man itself is installed.
  out=$(systemd-analyze verify /lib/systemd/system/pec.service 2>&1 || true)
  if grep "pec\.service" <<<"$out" | { command -v man >/dev/null && cat || grep -v "Command 'man "; } >&2; then
    e2e_fail "systemd-analyze verify finds problems in pec.service"
  fi
  e2e_log "systemd-analyze verify: no problem in pec.service"
  # The sandbox: "OK" (below 2.0) in systemd-analyze security (8.5 "EXPOSED" before issue 18).
  score=$(systemd-analyze security --offline=true /lib/systemd/system/pec.service 2>/dev/null \
    | sed -n 's/.*Overall exposure level for pec.service: \([0-9.]*\).*/\1/p')
  e2e_log "systemd-analyze security: pec.service exposure ${score:-unknown}"
  [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s < 2.0) }' \
    || e2e_fail "pec.service's exposure is ${score:-unknown}, not below 2.0"
else
  e2e_log "systemd-analyze not available: unit not verified"
fi

e2e_log "the sample configuration and the Postfix snippets agree"
/usr/bin/pec check-config -c /etc/pec/pec.toml.sample >&2
sample_value() { # SECTION KEY
  awk -v s="[$1]" -v k="$2" '$0 == s { in_s = 1; next } /^\[/ { in_s = 0 }
    in_s && $1 == k { gsub(/"/, "", $3); print $3 }' /etc/pec/pec.toml.sample
}
main=/usr/share/pec/postfix/main.cf.snippet master=/usr/share/pec/postfix/master.cf.snippet
grep -q "^virtual_transport = lmtp:inet:$(sample_value delivery listen)\$" "$main" \
  || e2e_fail "main.cf.snippet's virtual_transport is not delivery.listen"
grep -q "^content_filter = pecfilter:\[127.0.0.1\]:$(sample_value filter listen | cut -d: -f2)\$" "$main" \
  || e2e_fail "main.cf.snippet's content_filter is not filter.listen"
grep -q -- "-o smtpd_milters=$(sample_value access listen)\$" "$master" \
  || e2e_fail "master.cf.snippet's smtpd_milters is not access.listen"
grep -q "^$(sample_value access reinject) inet" "$master" \
  || e2e_fail "master.cf.snippet's reinjection listener is not access.reinject"
mkdir -p "$work/postconf"
cp /etc/postfix/master.cf "$work/postconf/master.cf" 2>/dev/null || : > "$work/postconf/master.cf"
grep -v '^submission' "$work/postconf/master.cf" > "$work/postconf/master.tmp" || true
cat "$work/postconf/master.tmp" "$master" > "$work/postconf/master.cf"
cp "$main" "$work/postconf/main.cf"
postconf -c "$work/postconf" -n >/dev/null 2>"$work/postconf/err" || e2e_fail "postconf: main.cf.snippet"
postconf -c "$work/postconf" -M >/dev/null 2>>"$work/postconf/err" || e2e_fail "postconf: master.cf.snippet"
if grep -i "fatal\|error" "$work/postconf/err" >&2; then e2e_fail "postconf rejects the snippets"; fi

e2e_log "two providers on the installed /usr/bin/pec"
export PEC_BIN=/usr/bin/pec PROVIDER_PKI=$work/pki PROVIDER_LMTP_PROXY=1
provider_up "$work/a" pec.example.it it
a_submission=$submission a_smtp=$smtp a_imap=$imap
a_filter=$filter a_milter=$milter a_delivery=$delivery
provider_up "$work/b" pec.example.net net
b_smtp=$smtp b_imap=$imap
postfix_route "$work/a/postfix" pec.example.net "127.0.0.1:$b_smtp"
postfix_route "$work/b/postfix" pec.example.it "127.0.0.1:$a_smtp"
ps -o args= -p "$(cat "$work/a/pec.pid")" | grep -q "^/usr/bin/pec serve" \
  || e2e_fail "provider A does not run the installed binary"

e2e_log "provider A: the shipped main.cf snippet applied (this test's ports)"
sed -e "s/127\.0\.0\.1:10025/127.0.0.1:$a_delivery/" \
  -e "s/\[127\.0\.0\.1\]:10026/[127.0.0.1]:$a_filter/" \
  -e "s/127\.0\.0\.1:10030/127.0.0.1:$a_milter/" \
  -e "s/^virtual_mailbox_domains = .*/virtual_mailbox_domains = pec.example.it example.com/" \
  -e "s|texthash:/var/lib/pec/tls_policy|texthash:$work/a/tls_policy|" \
  -e "s|^smtp_tls_CAfile = .*|smtp_tls_CAfile = $work/pki/ca.pem|" \
  "$main" >> "$work/a/postfix/etc/main.cf"
postfix -c "$work/a/postfix/etc" reload >&2

e2e_log "alice@pec.example.it → bob@pec.example.net"
printf 'From: Alice <alice@pec.example.it>\r\nTo: bob@pec.example.net\r\nSubject: Pacchetto\r\nDate: %s\r\nMessage-ID: <package-%s@client.example.it>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nInstallato dal pacchetto.\r\n' \
  "$(date -R)" "$$" > "$work/message.eml"
"${mail[@]}" send --port "$a_submission" --user alice@pec.example.it --password test \
  --from alice@pec.example.it --to bob@pec.example.net "$work/message.eml" >&2
"${mail[@]}" fetch --port "$a_imap" --user alice@pec.example.it --password test --count 2 \
  --dir "$work/alice" --deadline 120 >&2
"${mail[@]}" fetch --port "$b_imap" --user bob@pec.example.net --password test --count 1 \
  --dir "$work/bob" --deadline 120 >&2
kinds=""
for f in "$work"/alice/* "$work"/bob/*; do
  out=$(/usr/bin/pec verify --trust "$work/pki/it.pem" --trust "$work/pki/net.pem" "$f") \
    || { echo "$out" >&2; e2e_fail "$f does not verify"; }
  kinds="$kinds $(sed -n 's/^kind: //p' <<<"$out" | cut -d' ' -f2)"
done
grep -q "accettazione" <<<"$kinds" || e2e_fail "no acceptance receipt for Alice ($kinds)"
grep -q "avvenuta-consegna" <<<"$kinds" || e2e_fail "no delivery receipt for Alice ($kinds)"
echo "package: PASS"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, the REM routing interface (ETSI EN 319 532-4 C.2.3.2; C.2.3.3.3 pre-relay
# steps 1-2) on a real DNS server: a private dnsmasq (tests/e2e/lib_rem.sh) serving the
# zones of the EN's informative examples (COMMON_SERVICE_INTERFACE/dns_cfg_*.txt: the
# domains of REM services A, B and C and their MX hosts) and a few faulty ones, and an HTTPS
# file server (test CA) publishing service B's Trusted List. The test fetches the Trusted
# List over HTTPS, takes service B's supply points from it, and runs
# `pec rem check-domain DOMAIN --supply-point ... --resolver 127.0.0.1:PORT`.
#
# Checks (exit status and the line printed): B's domains are served (0); C's domain, a
# domain with no MX, a null MX and a domain with a backup MX outside B are not served (1);
# an unknown domain is NXDOMAIN (1); a domain whose servers never answer, and every domain
# once the DNS server is down, are temporary failures (75). The DNS server's query log
# shows each lookup really reached it. The HTTPS server serves the file byte-exact and
# plays "down" (503). And Postfix itself routes by MX on the test zones: a private Postfix
# relays to rb-rems.rem through the MX host a second dnsmasq (port 53 of a loopback address
# of its own) gives, to a second Postfix listening as that host (lib_rem.sh,
# postfix_route_dns).
#
# Without ../shared/rem-kit (PEC_REM_KIT) the Trusted List is a stand-in written here with
# the same supply points, and the test says SKIPPED for the kit's file.
#
# Usage: tests/e2e/rem_dns.sh   (as root: Postfix, port 53; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/lib_rem.sh
. "$here/lib_rem.sh"

pec=${PEC_BIN:-$root/target/debug/pec}
[ -x "$pec" ] || { echo "rem_dns: $pec not built (cargo build)" >&2; exit 2; }
command -v dnsmasq >/dev/null || { echo "rem_dns: dnsmasq missing (scripts/install-deps.sh)" >&2; exit 2; }

work=$(e2e_tmpdir)
cleanup() {
  status=$?
  https_files_stop "$work/https" >/dev/null 2>&1 || true
  postfix_stop "$work/pf-a" >/dev/null 2>&1 || true
  postfix_stop "$work/pf-b" >/dev/null 2>&1 || true
  dns_stop "$work/dns53" >/dev/null 2>&1 || true
  dns_stop "$work/dns" >/dev/null 2>&1 || true
  if [ "$status" -ne 0 ]; then
    e2e_show_log "$work/dns/dnsmasq.log" 30
    echo "rem_dns: FAIL (work dir kept: $work)" >&2
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT

kit=${PEC_REM_KIT:-$root/../shared/rem-kit}
csi_dir=$kit/etsi-en-319-532-4/INFORMATIVE-EXAMPLES/COMMON_SERVICE_INTERFACE

# The Trusted List of service B, published over HTTPS.
mkdir -p "$work/www"
if [ -f "$csi_dir/TL_CCB.xml" ]; then
  cp "$csi_dir/TL_CCB.xml" "$csi_dir/CSI_CCB.xml" "$work/www/"
else
  echo "SKIPPED: ../shared/rem-kit absent ($kit): serving a stand-in Trusted List" >&2
  cat > "$work/www/TL_CCB.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<TrustServiceStatusList xmlns="http://uri.etsi.org/02231/v2#"><ServiceSupplyPoints>
<ServiceSupplyPoint>smtp:mx.rb-rems.rem:25</ServiceSupplyPoint>
<ServiceSupplyPoint>https://rem-provider-b-service.ccb/CapabilityAndSecurityMetadata.xml</ServiceSupplyPoint>
</ServiceSupplyPoints></TrustServiceStatusList>
EOF
  printf '<?xml version="1.0"?><CapabilityAndSecurityInformation/>\n' > "$work/www/CSI_CCB.xml"
fi
sh "$root/tests/pki/make-pki.sh" "$work/pki" >/dev/null 2>&1 || e2e_fail "make-pki.sh"
https_port=$(https_files_start "$work/https" "$work/www" "$work/pki/it-tls.pem" "$work/pki/it-tls.key")
tl_url="https://127.0.0.1:$https_port/TL_CCB.xml"
curl -sS --fail --cacert "$work/pki/ca.pem" -o "$work/tl.xml" "$tl_url" ||
  e2e_fail "GET $tl_url"
cmp -s "$work/tl.xml" "$work/www/TL_CCB.xml" || e2e_fail "the TL served is not the file"
curl -sS --fail --cacert "$work/pki/ca.pem" -o /dev/null "https://127.0.0.1:$https_port/CSI_CCB.xml" ||
  e2e_fail "GET CSI_CCB.xml"
code=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$work/pki/ca.pem" \
  "https://127.0.0.1:$https_port/../pki/it-tls.key")
[ "$code" = 404 ] || e2e_fail "a path out of the root answered $code"
echo down > "$work/https/mode"
code=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$work/pki/ca.pem" "$tl_url")
[ "$code" = 503 ] || e2e_fail "mode down answered $code"
rm -f "$work/https/mode"
e2e_log "Trusted List served over HTTPS on 127.0.0.1:$https_port"

# Service B's supply points, as the Trusted List writes them (the kit's TL_CCB.xml lists
# the three services A, B and C: B's entry is the one whose smtp point is mx.rb-rems.rem).
mapfile -t points < <(sed -n 's|.*<ServiceSupplyPoint>\([^<]*\)</ServiceSupplyPoint>.*|\1|p' "$work/tl.xml" |
  grep -E 'rb-rems|provider-b' | sort -u)
[ ${#points[@]} -ge 2 ] || e2e_fail "no supply points of service B in the TL: ${points[*]:-none}"
printf '%s\n' "${points[@]}" | grep -qx 'smtp:mx.rb-rems.rem:25' ||
  e2e_fail "service B's smtp supply point is not smtp:mx.rb-rems.rem:25: ${points[*]}"
sp_args=()
for p in "${points[@]}"; do sp_args+=(--supply-point "$p"); done

# The zones of the EN's dns_cfg_*.txt, and the faulty ones.
mapfile -t ports < <(e2e_free_ports 1)
dns_port=${ports[0]}
dns_start "$work/dns" "$dns_port" \
  "sa-rems.rem MX 10 mx.sa-rems.rem" "senderdomain.rem MX 10 mx.sa-rems.rem" \
  "rb-rems.rem MX 10 mx.rb-rems.rem" "rcp2domain.rem MX 10 mx.rb-rems.rem" \
  "rc-rems.rem MX 10 mx.rc-rems.rem" \
  "mx.sa-rems.rem A 127.0.0.1" "mx.rb-rems.rem A 127.0.0.1" "mx.rc-rems.rem A 127.0.0.1" \
  "aonly.rem A 127.0.0.1" "null.rem MX 0 ." \
  "mixed.rem MX 10 mx.rb-rems.rem" "mixed.rem MX 20 backup.elsewhere.rem" \
  "dead.rem UNREACHABLE"

# check DOMAIN STATUS REGEX [RESOLVER]: pec rem check-domain exits STATUS and prints a line
# matching REGEX.
check() {
  local domain=$1 want=$2 regex=$3 resolver=${4:-127.0.0.1:$dns_port} out rc=0
  out=$("$pec" rem check-domain "$domain" "${sp_args[@]}" --resolver "$resolver" --timeout 1 2>&1) || rc=$?
  if [ "$rc" -ne "$want" ] || ! grep -Eq -- "$regex" <<< "$out"; then
    e2e_fail "check-domain $domain: exit $rc (want $want): $out (want /$regex/)"
    return 1
  fi
  e2e_log "ok: $out (exit $rc)"
}
queried() { grep -Eq "query\[MX\] $1 from 127.0.0.1" "$work/dns/dnsmasq.log"; }

check rb-rems.rem 0 '^rb-rems.rem: served: mx mx.rb-rems.rem \(supply point smtp:mx.rb-rems.rem:25\)$'
check rcp2domain.rem 0 '^rcp2domain.rem: served: mx mx.rb-rems.rem '
check RB-REMS.REM. 0 'served: mx mx.rb-rems.rem '
check rc-rems.rem 1 '^rc-rems.rem: not served: mx mx.rc-rems.rem not among the supply points'
check sa-rems.rem 1 'not served: mx mx.sa-rems.rem not among'
check aonly.rem 1 '^aonly.rem: not served: no mx record$'
check null.rem 1 '^null.rem: not served: null mx'
check mixed.rem 1 '^mixed.rem: not served: mx backup.elsewhere.rem not among the supply points \(mx: mx.rb-rems.rem, backup.elsewhere.rem\)$'
check nope.rem 1 '^nope.rem: nxdomain: the domain does not exist$'
check dead.rem 75 '^dead.rem: tempfail: dns lookup of "dead.rem" failed, try again later'
for d in rb-rems.rem rc-rems.rem aonly.rem null.rem mixed.rem nope.rem dead.rem; do
  queried "$d" || e2e_fail "dnsmasq never saw the MX query for $d"
done
queried rcp2domain.rem || e2e_fail "dnsmasq never saw the MX query for rcp2domain.rem"

# Usage errors: an invalid domain, a malformed smtp supply point, a bad resolver address.
rc=0; "$pec" rem check-domain 'a..b.rem' "${sp_args[@]}" --resolver "127.0.0.1:$dns_port" >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || e2e_fail "an invalid domain exited $rc, want 2"
rc=0; "$pec" rem check-domain rb-rems.rem --supply-point smtp://mx.rb-rems.rem:0 --resolver "127.0.0.1:$dns_port" >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || e2e_fail "a malformed supply point exited $rc, want 2"
rc=0; "$pec" rem check-domain rb-rems.rem "${sp_args[@]}" --resolver localhost >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || e2e_fail "a bad --resolver exited $rc, want 2"

# Postfix routes REM mail by MX on the same zones: A's Postfix relays to rb-rems.rem through
# the MX host that a dnsmasq on port 53 of a loopback address of its own gives, and B's
# Postfix (listening as mx.rb-rems.rem) takes the message.
mapfile -t pf < <(e2e_free_ports 4)
dns53=127.53.$((dns_port / 256 % 256)).$((dns_port % 256))
DNS_ADDR=$dns53 dns_start "$work/dns53" 53 \
  "rb-rems.rem MX 10 mx.rb-rems.rem" "mx.rb-rems.rem A 127.0.0.1"
postfix_start "$work/pf-a" rem-a "" "${pf[0]}" "" "" "" "${pf[1]}" sa-rems.rem
postfix_start "$work/pf-b" rem-b "" "${pf[2]}" "" "" "" "${pf[3]}" rb-rems.rem
postfix_route_dns "$work/pf-a" rb-rems.rem "$dns53" "${pf[2]}"
printf 'Subject: rem routing\n\nhello\n' |
  sendmail -C "$work/pf-a/etc" -f alice@sa-rems.rem bob@rb-rems.rem
wait_for_file_match "$work/pf-a/maillog" \
  "to=<bob@rb-rems.rem>, relay=mx.rb-rems.rem\\[127.0.0.1\\]:${pf[2]},.* status=sent" 30 ||
  { e2e_show_log "$work/pf-a/maillog"; e2e_fail "A's Postfix did not relay by MX"; }
wait_for_file_match "$work/pf-b/maillog" "from=<alice@sa-rems.rem>" 30 ||
  e2e_fail "B's Postfix did not receive the message"
grep -q 'query\[MX\] rb-rems.rem from 127.0.0.1' "$work/dns53/dnsmasq.log" ||
  e2e_fail "Postfix's MX query did not reach the test DNS server"
e2e_log "ok: Postfix relayed to rb-rems.rem by its MX on the test DNS"
postfix_stop "$work/pf-a"
postfix_stop "$work/pf-b"
dns_stop "$work/dns53"

# The DNS server down: a temporary failure, never "not served".
dns_stop "$work/dns"
check rb-rems.rem 75 '^rb-rems.rem: tempfail: '
check nope.rem 75 '^nope.rem: tempfail: '

https_files_stop "$work/https"
e2e_log "rem_dns: all checks passed"

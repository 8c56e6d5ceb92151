#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, the provider index over LDAP (spec §7): a private slapd with the PEC schema
# (etc/ldap/pec.schema) holding both test providers; `pec index sync` / `pec index lookup`
# with the built binary.
#
# Checks: before any sync the configured LDIF file is used; sync stores both providers
# (lookup by domain and by certificate file); a domain added in LDAP is seen after a resync;
# an entry whose providerCertificateHash does not match its certificate is refused and the
# last good copy stays; so does a source that is down, and an empty directory (unless
# --force). Then runs the test binary of tests/index/ldap.rs (INDEX_LDAP_TEST, or the newest
# built under CARGO_TARGET_DIR) with PEC_E2E_LDAP set; without it those tests print SKIPPED.
#
# Usage: tests/e2e/index.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"
# shellcheck source=tests/e2e/lib_pg.sh
. "$here/lib_pg.sh"

pec=${PEC_BIN:-$root/target/debug/pec}
[ -x "$pec" ] || { echo "index: $pec not built (cargo build)" >&2; exit 2; }

work=$(e2e_tmpdir)
cleanup() {
  status=$?
  if [ -n "${serve_pid:-}" ] && kill -0 "$serve_pid" 2>/dev/null; then kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true; fi
  slapd_stop "$work/ldap" >/dev/null 2>&1 || true
  slapd_stop "$work/ldap-empty" >/dev/null 2>&1 || true
  pg_stop "$work/pg" >/dev/null 2>&1 || true
  if [ "$status" -ne 0 ]; then
    echo "---- slapd log" >&2; tail -n 20 "$work/ldap/slapd.log" >&2 2>/dev/null || true
    echo "index: FAIL (work dir kept: $work)" >&2
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT

mapfile -t ports < <(e2e_free_ports 1)
port=${ports[0]}
url="ldap://127.0.0.1:$port"
sh "$root/tests/pki/make-pki.sh" "$work/pki" >/dev/null 2>&1
slapd_start "$work/ldap" "$port"
{
  provider_index_entry "PEC Example IT S.p.A." "$work/pki/it.pem" ricevute@pec.example.it pec.example.it
  provider_index_entry "PEC Example NET S.p.A." "$work/pki/net.pem" ricevute@pec.example.net pec.example.net
} > "$work/providers.ldif"
ldapadd -x -H "$url" -D cn=admin,o=postacert -w secret -f "$work/providers.ldif" >/dev/null

# The fallback file knows only us.
{ printf 'version: 1\n\n'; provider_index_entry "PEC Example IT S.p.A." "$work/pki/it.pem" ricevute@pec.example.it pec.example.it; } \
  > "$work/index.ldif"
store=$(e2e_store_toml "$work" pec)
cat > "$work/pec.toml" <<EOF
[provider]
name = "PEC Example IT S.p.A."
service_address = "posta-certificata@pec.example.it"
mail_receipt = "ricevute@pec.example.it"
domains = ["pec.example.it"]

[signing]
backend = "pem"
key_file = "$work/pki/it.key"
cert_file = "$work/pki/it.pem"
seal_key_file = "$work/pki/it-seal.key"
seal_cert_file = "$work/pki/it-seal.pem"

[store]
$store

[index]
ldif = "$work/index.ldif"
ldap_url = "$url"
timeout = "5s"

[antivirus]
clamd = "tcp:127.0.0.1:1"

[log]
# The index is tested here: no day is sealed, no time stamp.
dev_insecure_no_tsa = true
EOF
p() { "$pec" "$@" -c "$work/pec.toml"; }
expect() { # STATUS DESCRIPTION COMMAND...: runs COMMAND, checks its exit status, output in $out
  local want=$1 what=$2 rc=0; shift 2
  out=$("$@" 2>&1) || rc=$?
  [ "$rc" -eq "$want" ] || { echo "$out" >&2; e2e_fail "$what: exit $rc, expected $want"; return 1; }
}

e2e_log "1. before a sync: the configured file (pec.example.net unknown)"
expect 1 "lookup before sync" p index lookup pec.example.net
grep -q "esterno" <<<"$out" || e2e_fail "pec.example.net should be esterno before the sync"

e2e_log "2. sync from slapd: both providers"
expect 0 "sync" p index sync
e2e_log "   $(tail -n 1 <<<"$out")"
grep -q "stored 2 providers from $url" <<<"$out" || e2e_fail "sync did not store 2 providers"
expect 0 "lookup NET" p index lookup dan@PEC.Example.NET
grep -q "provider: PEC Example NET S.p.A." <<<"$out" && grep -q "mailReceipt: ricevute@pec.example.net" <<<"$out" \
  || { echo "$out" >&2; e2e_fail "lookup of pec.example.net"; }
expect 0 "lookup by certificate" p index lookup "$work/pki/net.pem"
grep -q "provider: PEC Example NET S.p.A." <<<"$out" || { echo "$out" >&2; e2e_fail "lookup by certificate"; }
expect 1 "lookup outsider certificate" p index lookup "$work/pki/outsider.pem"
expect 0 "show" p index show
grep -q "^2 providers, from store (from $url" <<<"$out" || { echo "$out" >&2; e2e_fail "show"; }

e2e_log "3. update: a domain added in LDAP is seen after a resync"
expect 1 "lookup new domain before resync" p index lookup cert.example.net
printf 'dn: providerName=PEC Example NET S.p.A.,o=postacert\nchangetype: modify\nadd: managedDomains\nmanagedDomains: cert.example.net\n' |
  ldapmodify -x -H "$url" -D cn=admin,o=postacert -w secret >/dev/null
expect 0 "resync" p index sync
expect 0 "lookup new domain" p index lookup cert.example.net

e2e_log "3b. pec serve refreshes by itself (refresh = 1s)"
mapfile -t sp < <(e2e_free_ports 3)
sed -e 's|^timeout = "5s"|timeout = "5s"\nrefresh = "1s"|' "$work/pec.toml" > "$work/serve.toml"
printf '\n[access]\nlisten = "inet:127.0.0.1:%s"\nreinject = "127.0.0.1:%s"\n\n[filter]\nlisten = "127.0.0.1:%s"\nreinject = "127.0.0.1:%s"\n' \
  "${sp[0]}" "${sp[1]}" "${sp[2]}" "${sp[1]}" >> "$work/serve.toml"
PEC_LOG=info "$pec" serve -c "$work/serve.toml" 2> "$work/serve.log" &
serve_pid=$!
wait_for_file_match "$work/serve.log" "provider index synchronised" 30
printf 'dn: providerName=PEC Example NET S.p.A.,o=postacert\nchangetype: modify\nadd: managedDomains\nmanagedDomains: serve.example.net\n' |
  ldapmodify -x -H "$url" -D cn=admin,o=postacert -w secret >/dev/null
# The next refresh stores the new domain.
_lookup_ok() { p index lookup serve.example.net >/dev/null 2>&1; }
e2e_poll 30 _lookup_ok || e2e_fail "pec serve did not store the new domain"
kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true

e2e_log "4. bad data (a hash that is not the certificate's): refused, last good copy kept"
printf 'dn: providerName=PEC Example NET S.p.A.,o=postacert\nchangetype: modify\nreplace: providerCertificateHash\nproviderCertificateHash: 0000000000000000000000000000000000000000\n' |
  ldapmodify -x -H "$url" -D cn=admin,o=postacert -w secret >/dev/null
expect 1 "sync of bad data" p index sync
grep -q "invalid" <<<"$out" || { echo "$out" >&2; e2e_fail "bad data: no reason given"; }
expect 0 "lookup after refused sync" p index lookup cert.example.net

e2e_log "5. source down: sync fails, last good copy kept"
slapd_stop "$work/ldap"
expect 1 "sync with slapd down" p index sync
expect 0 "lookup with slapd down" p index lookup cert.example.net

e2e_log "6. an empty directory: refused, accepted with --force"
slapd_start "$work/ldap-empty" "$port"
expect 1 "sync of an empty directory" p index sync
grep -q "refused: no provider" <<<"$out" || { echo "$out" >&2; e2e_fail "empty: no reason given"; }
expect 0 "lookup after refused empty sync" p index lookup cert.example.net
expect 0 "forced sync" p index sync --force
expect 1 "lookup after forced empty sync" p index lookup cert.example.net
slapd_stop "$work/ldap-empty"

e2e_log "8. publish our record as a signed LDIF, sync another store from it"
expect 0 "publish" p index publish -o "$work/our.ldif.p7m"
openssl cms -verify -inform DER -in "$work/our.ldif.p7m" -CAfile "$work/pki/ca.pem" -purpose any \
  -out "$work/our.ldif" 2>/dev/null || e2e_fail "openssl cms -verify refused our .p7m"
grep -q "^managedDomains: pec.example.it" "$work/our.ldif" || e2e_fail "our .p7m lacks our domain"
# The same configuration with the signed LDIF as source and a store of its own.
signed_store=$(e2e_store_toml "$work" signed)
SIGNED_STORE=$signed_store LDIF=$work/our.ldif.p7m CERT=$work/pki/it.pem awk '
  /^\[/ { in_store = ($0 == "[store]") }
  /^ldap_url = / { print "signed_ldif = \"" ENVIRON["LDIF"] "\""; print "signer_cert = \"" ENVIRON["CERT"] "\""; next }
  in_store && /^(path|backend|url) = / { if (!done) print ENVIRON["SIGNED_STORE"]; done = 1; next }
  { print }' "$work/pec.toml" > "$work/signed.toml"
expect 0 "sync from the signed LDIF" "$pec" index sync -c "$work/signed.toml"
grep -q "stored 1 providers from $work/our.ldif.p7m" <<<"$out" || { echo "$out" >&2; e2e_fail "signed sync"; }
sed -e "s|signer_cert = .*|signer_cert = \"$work/pki/net.pem\"|" "$work/signed.toml" > "$work/wrong.toml"
expect 1 "sync from the signed LDIF with the wrong signer" "$pec" index sync -c "$work/wrong.toml"

# The test binary of tests/index/ (its ldap module runs here): INDEX_LDAP_TEST, else the
# newest one built (cargo test --test index --no-run), else none.
if [ -z "${INDEX_LDAP_TEST:-}" ]; then
  INDEX_LDAP_TEST=$(find "${CARGO_TARGET_DIR:-$root/target}/debug/deps" -maxdepth 1 -type f \
    -name 'index-*' -perm -u+x -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -n 1 | cut -d' ' -f2-) || true
  [ -n "$INDEX_LDAP_TEST" ] || e2e_log "7. Rust tests against slapd: SKIPPED (build them: cargo test --test index --no-run)"
fi
if [ -n "${INDEX_LDAP_TEST:-}" ]; then
  e2e_log "7. Rust tests against slapd ($INDEX_LDAP_TEST)"
  slapd_start "$work/ldap-rust" "$port"
  ldapadd -x -H "$url" -D cn=admin,o=postacert -w secret -f "$work/providers.ldif" >/dev/null
  rc=0
  PEC_E2E_LDAP=$url PEC_E2E_LDAP_PKI=$work/pki "$INDEX_LDAP_TEST" ldap:: --test-threads 1 > "$work/rust.out" 2>&1 || rc=$?
  slapd_stop "$work/ldap-rust"
  tail -n 3 "$work/rust.out" >&2
  [ "$rc" -eq 0 ] || { cat "$work/rust.out" >&2; e2e_fail "index_ldap tests failed"; }
  ! grep -q SKIPPED "$work/rust.out" || e2e_fail "index_ldap tests skipped"
fi
echo "index: PASS"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, TLS to PostgreSQL ([store] tls, ca_file): a private PostgreSQL 15 with
# ssl = on, its certificate issued for localhost by a test CA made here, accepting TCP
# connections over TLS only (pg_hba hostssl); one that also authenticates clients by
# certificate ([store] cert_file and key_file; pg_hba "hostssl … cert", that is
# clientcert=verify-full, the CN the user name); and one without TLS.
#
#  1. the store contract (tests/store/contract.rs and tests/store/nodes.rs) on
#     the TLS server with tls = "verify-full" and ca_file = the test CA;
#  2. tests/store/tls.rs: verify-full and verify-ca with the right CA, a wrong CA, a host
#     name the certificate does not name, require, a server without TLS, a CA file that is
#     missing or holds no certificate; on the server that authenticates by certificate,
#     pec's client certificate accepted, no certificate and one from another CA refused,
#     a client certificate or key file missing, empty or not matching named;
#  3. `pec check-config --live` reports the TLS session of the store (protocol and cipher),
#     and fails, naming TLS, with a wrong CA and with a server that has no TLS.
#
# The test binary of tests/store/ (modules contract, nodes, tls): STORE_TLS_TESTS (a
# directory holding it), else the newest built under CARGO_TARGET_DIR
# (cargo test --test store --no-run); without it the script fails.
#
# Usage: tests/e2e/store_tls.sh   (as root or not; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/lib_pg.sh
. "$here/lib_pg.sh"

pec=${PEC_BIN:-$root/target/debug/pec}
[ -x "$pec" ] || { echo "store_tls: $pec not built (cargo build)" >&2; exit 2; }

work=$(e2e_tmpdir)
cleanup() {
  status=$?
  pg_stop "$work/tls" >/dev/null 2>&1 || true
  pg_stop "$work/plain" >/dev/null 2>&1 || true
  pg_stop "$work/cert" >/dev/null 2>&1 || true
  if [ "$status" -ne 0 ]; then
    echo "---- TLS server log" >&2; tail -n 20 "$work/tls/server.log" >&2 2>/dev/null || true
    echo "store_tls: FAIL (work dir kept: $work)" >&2
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT

test_bin() { # NAME: the test binary of tests/NAME/
  local b
  if [ -n "${STORE_TLS_TESTS:-}" ]; then
    b=$(find "$STORE_TLS_TESTS" -maxdepth 1 -type f -name "$1-*" -perm -u+x | head -n 1)
  else
    b=$(find "${CARGO_TARGET_DIR:-$root/target}/debug/deps" -maxdepth 1 -type f -name "$1-*" \
      -perm -u+x -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -n 1 | cut -d' ' -f2-)
  fi
  [ -n "$b" ] || { e2e_fail "no test binary for tests/$1/ (cargo test --test $1 --no-run)"; return 1; }
  printf '%s\n' "$b"
}
store_bin=$(test_bin store)

e2e_log "test PKI: a CA, the server's certificate for localhost, another CA, client certificates"
pki=$work/pki
mkdir -p "$pki"
ca() { # NAME
  openssl req -x509 -new -newkey rsa:2048 -nodes -days 2 -subj "/O=PEC Test/CN=$1" \
    -keyout "$pki/$2.key" -out "$pki/$2.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
ca "PEC Test Store CA" ca
ca "PEC Test Other CA" other-ca
openssl req -new -newkey rsa:2048 -nodes -subj "/O=PEC Test/CN=localhost" \
  -keyout "$pki/server.key" -out "$pki/server.csr" 2>/dev/null
printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
  "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost" > "$pki/server.ext"
openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 2 -extfile "$pki/server.ext" -out "$pki/server.pem" 2>/dev/null
openssl verify -CAfile "$pki/ca.pem" "$pki/server.pem" >/dev/null
client() { # NAME CA: a client certificate for the user postgres, signed by CA
  openssl req -new -newkey rsa:2048 -nodes -subj "/O=PEC Test/CN=postgres" \
    -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=clientAuth" > "$pki/$1.ext"
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/$2.pem" -CAkey "$pki/$2.key" -CAcreateserial \
    -days 2 -extfile "$pki/$1.ext" -out "$pki/$1.pem" 2>/dev/null
}
client client ca
client other-client other-ca
openssl verify -CAfile "$pki/ca.pem" "$pki/client.pem" >/dev/null
chmod 755 "$pki"
chmod 644 "$pki"/*.pem

e2e_log "PostgreSQL with TLS only, with TLS and client certificates, without TLS"
mapfile -t ports < <(e2e_free_ports 3)
PG_SSL_CERT=$pki/server.pem PG_SSL_KEY=$pki/server.key PG_OPTS="-c fsync=off" \
  pg_start "$work/tls" "${ports[0]}" >/dev/null
PG_OPTS="-c fsync=off" pg_start "$work/plain" "${ports[1]}" >/dev/null
PG_SSL_CERT=$pki/server.pem PG_SSL_KEY=$pki/server.key PG_SSL_CLIENT_CA=$pki/ca.pem \
  PG_OPTS="-c fsync=off" pg_start "$work/cert" "${ports[2]}" >/dev/null
tls_url="postgres://postgres@localhost:${ports[0]}/pec"
plain_url="postgres://postgres@127.0.0.1:${ports[1]}/pec"
cert_url="postgres://postgres@localhost:${ports[2]}/pec"

run_tests() { # MODULE: runs the store binary's tests of that module, fails on a failure,
  # a SKIPPED PostgreSQL test or no test at all
  local name=$1 rc=0
  "$store_bin" "$name::" > "$work/$name.out" 2>&1 || rc=$?
  tail -n 2 "$work/$name.out" | grep -v '^$' >&2 || true
  [ "$rc" -eq 0 ] || { grep -E "panicked|FAILED|failed" "$work/$name.out" | head -n 20 >&2; e2e_fail "$name failed"; return 1; }
  ! grep -q SKIPPED "$work/$name.out" || { grep SKIPPED "$work/$name.out" >&2; e2e_fail "$name skipped tests"; return 1; }
  ! grep -q "^running 0 tests" "$work/$name.out" || { e2e_fail "no test of module $name ran"; return 1; }
}

e2e_log "1. the store contract over TLS (verify-full, the test CA)"
export PEC_TEST_PG_TLS=verify-full PEC_TEST_PG_TLS_CA=$pki/ca.pem
PEC_TEST_PG_URL=$tls_url run_tests contract
PEC_TEST_PG_URL=$tls_url run_tests nodes
unset PEC_TEST_PG_TLS PEC_TEST_PG_TLS_CA

e2e_log "2. TLS settings, right and wrong"
PEC_TEST_PG_TLS_URL=$tls_url PEC_TEST_PG_PLAIN_URL=$plain_url PEC_TEST_PG_TLS_PKI=$pki \
  PEC_TEST_PG_CERT_URL=$cert_url run_tests tls

e2e_log "3. pec check-config --live"
config() { # FILE URL [STORE LINES...]
  local file=$1 url=$2; shift 2
  {
    printf '%s\n' "[provider]" 'name = "PEC Example IT S.p.A."' \
      'service_address = "posta-certificata@pec.example.it"' 'mail_receipt = "ricevute@pec.example.it"' \
      'domains = ["pec.example.it"]' "" "[signing]" 'backend = "pem"' \
      "key_file = \"$pki/server.key\"" "cert_file = \"$pki/server.pem\"" \
      "seal_key_file = \"$pki/other-ca.key\"" "seal_cert_file = \"$pki/other-ca.pem\"" "" \
      "[store]" 'backend = "postgres"' "url = \"$url\"" "$@" "" \
      "[index]" "ldif = \"$work/none.ldif\"" "" "[antivirus]" 'clamd = "tcp:127.0.0.1:1"' "" \
      "[log]" "# Only the store is checked here: no time stamp." "dev_insecure_no_tsa = true"
  } > "$file"
}
store_line() { # CONFIG: the "store" line of check-config --live
  "$pec" check-config --live -c "$1" 2>&1 | grep -E "store" || true
}
config "$work/good.toml" "$tls_url" 'tls = "verify-full"' "ca_file = \"$pki/ca.pem\""
"$pec" check-config -c "$work/good.toml" >/dev/null || e2e_fail "check-config refused the TLS settings"
line=$(store_line "$work/good.toml")
e2e_log "   verify-full: $line"
grep -qE "TLS TLSv1\.[23] " <<<"$line" && grep -q 'tls = "verify-full"' <<<"$line" ||
  e2e_fail "check-config --live does not report the TLS session: $line"
config "$work/wrong-ca.toml" "$tls_url" 'tls = "verify-full"' "ca_file = \"$pki/other-ca.pem\""
line=$(store_line "$work/wrong-ca.toml")
e2e_log "   wrong CA: $line"
grep -q "TLS" <<<"$line" && grep -q "certificate verify failed" <<<"$line" ||
  e2e_fail "check-config --live with a wrong CA: $line"
config "$work/no-tls.toml" "$plain_url" 'tls = "require"'
line=$(store_line "$work/no-tls.toml")
e2e_log "   server without TLS: $line"
grep -q "server does not support TLS" <<<"$line" || e2e_fail "check-config --live without TLS: $line"
config "$work/client.toml" "$cert_url" 'tls = "verify-full"' "ca_file = \"$pki/ca.pem\"" \
  "cert_file = \"$pki/client.pem\"" "key_file = \"$pki/client.key\""
"$pec" check-config -c "$work/client.toml" >/dev/null || e2e_fail "check-config refused cert_file/key_file"
line=$(store_line "$work/client.toml")
e2e_log "   client certificate: $line"
grep -qE "TLS TLSv1\.[23] " <<<"$line" && grep -q "cert_file \"$pki/client.pem\"" <<<"$line" ||
  e2e_fail "check-config --live with a client certificate: $line"
config "$work/no-client.toml" "$cert_url" 'tls = "verify-full"' "ca_file = \"$pki/ca.pem\""
line=$(store_line "$work/no-client.toml")
e2e_log "   no client certificate: $line"
grep -q "certificate" <<<"$line" && ! grep -q "store: ok" <<<"$line" ||
  e2e_fail "check-config --live without a client certificate: $line"
config "$work/sslmode.toml" "$tls_url?sslmode=require"
out=$("$pec" check-config -c "$work/sslmode.toml" 2>&1) && e2e_fail "check-config accepted sslmode in the URL"
grep -q "store.tls" <<<"$out" || e2e_fail "check-config on sslmode: $out"
echo "store_tls: PASS"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Installs the Debian packages that pec's build and test suite need. Idempotent: packages
# already present are not reinstalled, and apt-get update runs only when something is missing.
# Also the cargo tools of the test suite (cargo-fuzz, cargo-deb), unless --no-cargo-tools
# (the demo needs neither).
set -euo pipefail
cargo_tools=1
[ "${1:-}" = --no-cargo-tools ] && cargo_tools=0

packages=(
  # build
  pkg-config libssl-dev
  # signing and verification in tests: SoftHSM2 token, PKCS#11 tools, the openssl CLI
  softhsm2 opensc gnutls-bin openssl ca-certificates
  # time travel for certificate validity tests and for pec's clock in the e2e tests
  faketime
  # the test RFC 3161 time-stamping authority of the legal-log tests (tests/tsa/tsa.py:
  # its tokens built and signed in-process with the cryptography package)
  python3-minimal python3-cryptography
  # REM evidences (XAdES) checked by an independent implementation: xmlsec1 verifies what
  # we sign and gives the canonical bytes we compare ours with (tests/model/xades.rs)
  xmlsec1
  # the PostgreSQL store's tests: a private PostgreSQL 15 (tests/e2e/lib_pg.sh)
  postgresql
  # the Debian package (scripts/build-deb.sh): objcopy splits the debug symbols out
  binutils
  # REM: the DNS server of the test zones (tests/e2e/lib_rem.sh; the binary only, no
  # service), and curl to fetch Trusted Lists from the test HTTPS server
  dnsmasq-base curl
  # REM: xmllint validates our evidences and our CSI document against the EN 319 532-4 schema, with the W3C
  # (xml, xmldsig, xenc) and SAML schemas it imports
  libxml2-utils xmltooling-schemas opensaml-schemas
)

# cargo-fuzz for scripts/fuzz.sh, from crates.io (about 85 s of CPU to build; it is
# installed once per machine).
if [ "$cargo_tools" = 1 ] && ! cargo fuzz --version >/dev/null 2>&1; then
  echo "install-deps: cargo install cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# cargo-deb for scripts/build-deb.sh and the package test (tests/e2e/package.sh).
if [ "$cargo_tools" = 1 ] && ! cargo deb --version >/dev/null 2>&1; then
  echo "install-deps: cargo install cargo-deb"
  cargo install cargo-deb --locked
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# No daemon may start during installation; the policy in place before comes back at the end.
# shellcheck source=scripts/no-service-starts.sh
. "$(dirname "${BASH_SOURCE[0]}")/no-service-starts.sh"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"

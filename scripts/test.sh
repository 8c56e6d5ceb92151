#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, checks formatting and lints,
# builds once, runs every test at its three depths (unit and golden; in-process protocol
# tests; end to end with real Postfix, Dovecot, clamd and SoftHSM2; the Debian package),
# and lints the benchmarks with everything else. Run as root (the end-to-end tests start
# private Postfix instances).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
tests/e2e/install.sh

# Real provider samples live beside the checkout (../shared/pec-samples); tests that need
# them print SKIPPED loudly when they are absent.
if [ -z "${PEC_SAMPLES:-}" ] && [ -d ../shared/pec-samples ]; then
  export PEC_SAMPLES="$(cd ../shared/pec-samples && pwd)"
fi
if [ -z "${PEC_SAMPLES:-}" ]; then
  echo "WARNING: ../shared/pec-samples not found: tests against real provider samples will be SKIPPED" >&2
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (every target, the benchmarks included: they are checked, not built)"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test (the store tests on SQLite and on a private PostgreSQL 15)"
# shellcheck source=tests/e2e/lib_pg.sh
. tests/e2e/lib_pg.sh
pg_dir=$(mktemp -d /tmp/pec-test-pg.XXXXXX)
chmod 755 "$pg_dir"
trap 'pg_stop "$pg_dir/pg" || true; rm -rf "$pg_dir"' EXIT
pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PEC_TEST_PG_URL=$(PG_OPTS="-c fsync=off" pg_start "$pg_dir/pg" "$pg_port")
export PEC_TEST_PG_URL
cargo test --locked

echo "== fuzz (every target of fuzz/ for a bounded time; FUZZ_SECONDS each)"
scripts/fuzz.sh "${FUZZ_SECONDS:-20}"

echo "== end to end (real Postfix, Dovecot, clamd, SoftHSM2, slapd)"
target=${CARGO_TARGET_DIR:-target}
export PEC_BIN="$(cd "$target/debug" && pwd)/pec"
e2e=(tests/e2e/smoke.sh tests/e2e/access_point.sh tests/e2e/reception.sh tests/e2e/delivery.sh
  tests/e2e/delivery_receipts.sh
  tests/e2e/timers.sh tests/e2e/index.sh tests/e2e/log_request.sh tests/e2e/scale_out.sh
  tests/e2e/relay.sh tests/e2e/proof.sh tests/e2e/faults.sh)
# proof.sh: PROOF_N transactions (1,000 here; PROOF_N=10000 is the full proof, by hand);
# faults.sh: 400 transactions through 20 kill -9 of pec serve and five other faults.
# The package test builds the release .deb (a release build: several minutes on two cores),
# installs it with dpkg, runs two providers on it and purges it; PEC_E2E_PACKAGE=0 skips it.
if [ "${PEC_E2E_PACKAGE:-1}" = 1 ]; then e2e+=(tests/e2e/package.sh); fi
# The reception test includes a load run: 2,000 envelopes between the two providers, none lost.
export RECEPTION_LOAD_N=${RECEPTION_LOAD_N:-2000}
passed=0 failed=0
for t in "${e2e[@]}"; do
  if bash "$t"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $t" >&2; fi
done
# The delivery receipts, the timers and the owner self-service again with the providers'
# stores in PostgreSQL.
for t in tests/e2e/delivery_receipts.sh tests/e2e/timers.sh tests/e2e/log_request.sh; do
  if PROVIDER_STORE=pg bash "$t"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)); echo "FAILED: PROVIDER_STORE=pg $t" >&2
  fi
done
echo "e2e: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

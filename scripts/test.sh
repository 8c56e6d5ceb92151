#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, checks formatting and lints,
# builds once, runs every test at its three depths (unit and golden; in-process protocol
# tests; end to end with real Postfix, Dovecot, clamd and SoftHSM2), and checks that the
# benchmarks compile. Run as root (the end-to-end tests start private Postfix instances).
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
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== benches compile"
cargo bench --locked --no-run
echo "== cargo test"
cargo test --locked

echo "== fuzz (every target of fuzz/ for a bounded time; FUZZ_SECONDS each)"
scripts/fuzz.sh "${FUZZ_SECONDS:-20}"

echo "== end to end (real Postfix, Dovecot, clamd, SoftHSM2, slapd)"
target=${CARGO_TARGET_DIR:-target}
export PEC_BIN="$(cd "$target/debug" && pwd)/pec"
e2e=(tests/e2e/smoke.sh tests/e2e/access_point.sh tests/e2e/reception.sh tests/e2e/delivery.sh
  tests/e2e/delivery_receipts.sh
  tests/e2e/timers.sh tests/e2e/index.sh tests/e2e/relay.sh)
# The reception test includes a load run: 2,000 envelopes between the two providers, none lost.
export RECEPTION_LOAD_N=${RECEPTION_LOAD_N:-2000}
passed=0 failed=0
for t in "${e2e[@]}"; do
  if bash "$t"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $t" >&2; fi
done
echo "e2e: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

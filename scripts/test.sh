#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, checks formatting and lints,
# builds once, runs every test (unit, golden, PKCS#11 on SoftHSM2, CLI), and checks that
# the benchmarks compile.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

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
echo "== cargo test"
cargo test --locked
echo "== benches compile"
cargo bench --locked --no-run

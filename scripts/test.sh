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
echo "== cargo test"
cargo test --locked

echo "== end to end (real Postfix, Dovecot, clamd, SoftHSM2, slapd)"
target=${CARGO_TARGET_DIR:-target}
export PEC_BIN="$(cd "$target/debug" && pwd)/pec"
bash tests/e2e/smoke.sh
bash tests/e2e/access_point.sh
bash tests/e2e/timers.sh
# slapd; also runs the index_ldap test binary that cargo test built
bash tests/e2e/index.sh
echo "== benches compile"
cargo bench --locked --no-run

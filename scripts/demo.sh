#!/usr/bin/env bash
# The main job available today, end to end on this machine: two providers, each with its
# signing key in its own SoftHSM2 token, exchange one PEC message through the protocol core
# (transport envelope, acceptance, take-charge and delivery receipts), and `pec verify`
# checks every message as a recipient would, against both providers' certificates.
#
# Usage: scripts/demo.sh [OUTDIR]   (default: ./demo-out; removed and recreated)
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-demo-out}
scripts/install-deps.sh
echo "== building pec (release)"
cargo build --release --locked --bin pec --example demo

rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)

echo "== test CA, provider certificates and SoftHSM2 tokens in $out"
sh tests/pki/make-pki.sh "$out/pki" >/dev/null
conf=$(sh tests/pki/make-token.sh "$out/hsm" pec-a 1234 "$out/pki/it.key" "$out/pki/it.pem" signer)
sh tests/pki/make-token.sh "$out/hsm" pec-b 1234 "$out/pki/net.key" "$out/pki/net.pem" signer >/dev/null
export SOFTHSM2_CONF=$conf

target=${CARGO_TARGET_DIR:-target}
echo "== provider A (pec.example.it) and provider B (pec.example.net) exchange a PEC message"
"$target/release/examples/demo" --out "$out/messages" \
    --original tests/fixtures/originals/contratto.eml \
    --cert-a "$out/pki/it.pem" --cert-b "$out/pki/net.pem"

echo
echo "== pec verify, as the recipients of these messages would run it"
status=0
for f in "$out"/messages/*.eml; do
    echo "---- $(basename "$f")"
    "$target/release/pec" verify --trust "$out/pki/it.pem" --trust "$out/pki/net.pem" "$f" || status=$?
done
echo
if [ "$status" -eq 0 ]; then
    echo "demo: every message verified; files in $out/messages"
else
    echo "demo: some message did not verify (exit $status)" >&2
fi
exit "$status"

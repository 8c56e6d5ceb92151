#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Access-point throughput as a ratio, measured in one run on this machine:
#
#   baseline  N submissions (SASL, 10 KB) through a Postfix instance with no milter and no
#             content filter, delivered by Dovecot LMTP: N deliveries;
#   pec       the same N through the same kind of instance with the pec milter and the
#             after-queue filter (`pec serve`, signing on SoftHSM2, clamd scanning): each
#             submission is wrapped into a signed transport envelope and produces a signed
#             acceptance receipt; the recipient is on the same provider, so the reception
#             point also verifies the envelope and issues a signed presa in carico to our
#             mailReceipt: 3N deliveries.
#
# Each run is timed from the first submission until the last message is in its Maildir.
# ratio = (N / t_pec) / (N / t_baseline). Three deliveries per PEC submission put the
# ceiling set by Postfix and Dovecot at 0.33 (the 0.4 target was set when there were two).
#
# Usage: benches/access_point.sh [N] [CONCURRENCY]   (as root; PEC_BIN: a release build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$root/tests/e2e/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$root/tests/e2e/provider.sh"

n=${1:-1000}
concurrency=${2:-10}
export PEC_BIN=${PEC_BIN:-$root/target/release/pec}
[ -x "$PEC_BIN" ] || { echo "access_point bench: build first: cargo build --release" >&2; exit 2; }
mail=(/usr/bin/python3 "$root/tests/e2e/pecmail.py")

work=$(e2e_tmpdir)
cleanup() {
  status=$?
  provider_down "$work/pec"
  postfix_stop "$work/base/postfix" >/dev/null 2>&1 || true
  dovecot_stop "$work/base/dovecot" >/dev/null 2>&1 || true
  [ "$status" -eq 0 ] && rm -rf "$work" || echo "work dir kept: $work" >&2
  exit "$status"
}
trap cleanup EXIT

# Baseline: Postfix + Dovecot, no pec.
mkdir -p "$work/base" "$work/pec"
mapfile -t ports < <(e2e_free_ports 4)
dovecot_start "$work/base/dovecot" "${ports[2]}" "${ports[3]}"
postfix_start --sasl-path "$work/base/dovecot/run/auth-postfix" "$work/base/postfix" base \
  "${ports[0]}" "${ports[1]}" "" "" "" "${ports[2]}" pec.example.it example.com
e2e_log "baseline: $n submissions, concurrency $concurrency"
base=$("${mail[@]}" load --port "${ports[0]}" --user alice@pec.example.it --from alice@pec.example.it \
  --to bob@pec.example.it --count "$n" --concurrency "$concurrency" --size 10240 \
  --maildir "$work/base/dovecot/mail/pec.example.it/bob" --expect "$n" | sed 's/seconds=//')
postfix_stop "$work/base/postfix" >/dev/null
dovecot_stop "$work/base/dovecot" >/dev/null

# The same with pec.
PEC_LOG=warn provider_up "$work/pec"
e2e_log "pec: $n submissions, concurrency $concurrency"
pec_t=$("${mail[@]}" load --port "$submission" --user alice@pec.example.it --from alice@pec.example.it \
  --to bob@pec.example.it --count "$n" --concurrency "$concurrency" --size 10240 \
  --maildir "$work/pec/dovecot/mail/pec.example.it/bob" \
  --maildir "$work/pec/dovecot/mail/pec.example.it/alice" \
  --maildir "$work/pec/dovecot/mail/pec.example.it/ricevute" --expect $((3 * n)) | sed 's/seconds=//')

python3 - "$n" "$base" "$pec_t" <<'EOF'
import sys
n, base, pec = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"baseline (Postfix + Dovecot):          {n} messages in {base:.2f} s = {n / base:.1f} msg/s")
print(f"pec (envelope, acceptance, presa in carico): {n} submissions in {pec:.2f} s = {n / pec:.1f} submissions/s")
print(f"ratio pec / baseline: {base / pec:.3f}  (ceiling 0.33: three deliveries per submission; the 0.4 target was set for two)")
EOF

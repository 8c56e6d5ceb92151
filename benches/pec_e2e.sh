#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End-to-end PEC throughput and latency between two providers on this machine, as ratios
# against plain mail measured in the same run:
#
#   baseline  N plain messages A-user → B-user through two Postfix + Dovecot instances with
#             no pec (submission at A, SMTP to B, LMTP into B's Dovecot): N deliveries;
#   pec       N complete PEC transactions alice@pec.example.it → bob@pec.example.net
#             (tests/e2e/proof_lib.sh: milter and after-queue filter at A, reception point
#             and LMTP proxy at B, clamd, SoftHSM2): the envelope to bob, the acceptance
#             and the delivery receipt to alice, and B's presa in carico, which A's filter
#             consumes: four deliveries per transaction, so 0.25 is the ceiling set by
#             Postfix and Dovecot.
#
# The pec run is timed from the first submission until alice holds N acceptances and N
# delivery receipts, bob N envelopes and A consumed N presa in carico; then, once both
# queues are empty, the audit of tests/e2e/audit.py checks that every transaction is
# complete once. ratio = (N / t_pec) / (N / t_baseline).
#
# Latency: then N_LAT (default N/2) more transactions paced at half the measured PEC rate
# (BENCH_LAT_RATE overrides it): submission → acceptance in alice's Maildir and submission
# → delivery receipt in alice's Maildir, p50 / p90 / p99.
#
# pec against its cryptographic floor (issue 22), in the same run, after the pec part:
# `pec capacity` on A's and B's configurations (the same tokens and keys pec serve used)
# times the four signatures and four verifications of a transaction; printed: pec's CPU per
# transaction (pec-a + pec-b), the floor (A's sender side + B's recipient side) and the
# ratio (target <= 1.5); then the Postfix queue passes per transaction counted from both
# Postfix logs over the pec run (tests/e2e/proof_lib.sh proof_queue_passes).
#
# Environment:
#   BENCH_KEY=rsa2048|rsa3072|p256  both providers' PEC message keys (default: the test PKI's,
#                    A RSA-3072 and B RSA-2048);
#   BENCH_BASELINE=0 skip the plain-mail baseline (no pec / baseline ratio);
#   BENCH_LATENCY=0  skip the latency part (BENCH_LAT_N=0 too);
#   BENCH_KEEP=1     keep the work directory (perf data, logs, stores) after a good run;
#   BENCH_PERF=1     `perf record` on both pec serve during the pec run, then the top shared
#                    objects and symbols of each (the rates of such a run are perf's too);
#   BENCH_FLOOR_COUNT  operations timed by pec capacity (default 200);
#   BENCH_LAT_N, BENCH_LAT_RATE  the latency part's count and rate.
#
# REM against PEC in one run: benches/rem_e2e.sh.
#
# Usage: benches/pec_e2e.sh [N] [CONCURRENCY]   (as root; PEC_BIN: a release build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$root/tests/e2e/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$root/tests/e2e/provider.sh"
# shellcheck source=tests/e2e/proof_lib.sh
. "$root/tests/e2e/proof_lib.sh"

n=${1:-1000}
concurrency=${2:-20}
export PEC_BIN=${PEC_BIN:-$root/target/release/pec}
[ -x "$PEC_BIN" ] || { echo "pec_e2e bench: build first: cargo build --release" >&2; exit 2; }
mail=("$E2E_PYTHON" "$root/tests/e2e/pecmail.py")
export PROOF_KEY=${BENCH_KEY:-}

work=$(e2e_tmpdir)
cleanup() {
  status=$?
  proof_perf_stop
  proof_pair_down "$work/pec"
  for b in a b; do
    postfix_stop "$work/base/$b/postfix" >/dev/null 2>&1 || true
    dovecot_stop "$work/base/$b/dovecot" >/dev/null 2>&1 || true
  done
  [ "$status" -eq 0 ] && [ "${BENCH_KEEP:-0}" != 1 ] && rm -rf "$work" || echo "work dir kept: $work" >&2
  exit "$status"
}
trap cleanup EXIT

# Baseline: the same topology without pec.
base=
if [ "${BENCH_BASELINE:-1}" != 0 ]; then
mkdir -p "$work/base/a" "$work/base/b"
mapfile -t p < <(e2e_free_ports 7)
dovecot_start "$work/base/a/dovecot" "${p[0]}" "${p[1]}"
dovecot_start "$work/base/b/dovecot" "${p[2]}" "${p[3]}"
postfix_start --sasl-path "$work/base/a/dovecot/run/auth-postfix" "$work/base/a/postfix" base-a \
  "${p[4]}" "${p[5]}" "" "" "" "${p[0]}" pec.example.it
postfix_start "$work/base/b/postfix" base-b "" "${p[6]}" "" "" "" "${p[2]}" pec.example.net
postfix_route "$work/base/a/postfix" pec.example.net "127.0.0.1:${p[6]}"
e2e_log "baseline: $n plain messages, concurrency $concurrency"
base=$("${mail[@]}" load --port "${p[4]}" --user alice@pec.example.it --from alice@pec.example.it \
  --to bob@pec.example.net --count "$n" --concurrency "$concurrency" --size 4096 \
  --maildir "$work/base/b/dovecot/mail/pec.example.net/bob" --expect "$n" | sed -n 's/^seconds=//p')
for b in a b; do
  postfix_stop "$work/base/$b/postfix" >/dev/null
  dovecot_stop "$work/base/$b/dovecot" >/dev/null
done
fi

# PEC.
PEC_LOG=${PEC_LOG:-info} proof_pair_up "$work/pec"
w=$work/pec
proof_maillog_mark "$w" "$w/maillog.mark"
proof_cpu_snapshot "$w" "$w/cpu0.json"
proof_perf_start "$w" pec
e2e_log "pec: $n transactions, concurrency $concurrency (keys: ${BENCH_KEY:-A RSA-3072, B RSA-2048})"
t0=${EPOCHREALTIME}
"${mail[@]}" load --port "$a_submission" --user alice@pec.example.it --from alice@pec.example.it \
  --to bob@pec.example.net --count "$n" --concurrency "$concurrency" --size 4096 \
  --maildir "$alice_md" --maildir "$bob_md" --expect $((3 * n)) --deadline $((300 + n)) \
  --accepted "$w/accepted" --tag bench >/dev/null
e2e_poll 120 proof_consumed_at_least "$w" "$n" || e2e_fail "A consumed only $(proof_consumed "$w") presa in carico"
t1=${EPOCHREALTIME}
pec_t=$(awk -v s="$t0" -v e="$t1" 'BEGIN { printf "%.3f", e - s }')
proof_cpu_snapshot "$w" "$w/cpu1.json"
proof_perf_stop
proof_wait_settled "$w" "$n" 120
proof_queue_passes "$w" "$w/maillog.mark" "$n" > "$w/passes.out"
proof_audit "$w" "$w/accepted" 20 > "$w/audit.out" || { cat "$w/audit.out" >&2; e2e_fail "audit failed"; }

python3 - "$n" "${base:-0}" "$pec_t" <<'PY'
import sys
n, base, pec = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
if base > 0:
    print(f"baseline (plain, Postfix A -> Postfix B -> Dovecot): {n} messages in {base:.2f} s = {n / base:.1f} msg/s")
else:
    print("baseline: skipped (BENCH_BASELINE=0)")
print(f"pec (envelope, acceptance, presa in carico, delivery receipt): {n} transactions in {pec:.2f} s = {n / pec:.1f} transactions/s")
if base > 0:
    print(f"ratio pec / baseline: {base / pec:.3f}  (ceiling 0.25: four deliveries per transaction; target 0.2)")
PY

echo "where the time goes during the pec run (CPU of each daemon and its processes):"
proof_cpu_report "$w/cpu0.json" "$w/cpu1.json" "$pec_t" "$n"
proof_floor "$w" "$w/cpu0.json" "$w/cpu1.json" "$n" "$w/floor"
echo "Postfix queue passes during the pec run (both logs, queue files with a qmgr from= line):"
cat "$w/passes.out"
proof_perf_show "$w" pec

[ "${BENCH_LATENCY:-1}" != 0 ] && [ "${BENCH_LAT_N:-1}" != 0 ] || exit 0

# Latency at half the measured rate.
n_lat=${BENCH_LAT_N:-$((n / 2))}
rate=${BENCH_LAT_RATE:-$(awk -v n="$n" -v t="$pec_t" 'BEGIN { printf "%.2f", n / t / 2 }')}
e2e_log "latency: $n_lat transactions paced at $rate/s"
"${mail[@]}" load --port "$a_submission" --user alice@pec.example.it --from alice@pec.example.it \
  --to bob@pec.example.net --count "$n_lat" --concurrency "$concurrency" --size 4096 --rate "$rate" \
  --maildir "$alice_md" --expect 0 --accepted "$w/accepted-lat" --tag lat >/dev/null
proof_wait_settled "$w" $((n + n_lat)) $((120 + n_lat))
echo "latency at $rate transactions/s (half the rate above), $n_lat transactions:"
"$E2E_PYTHON" "$root/tests/e2e/audit.py" latency --accepted "$w/accepted-lat" --sender-maildir "$alice_md"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End-to-end REM throughput against PEC in the same run (BENCHMARKS.md: REM transactions per
# second as a ratio to PEC transactions, target >= 0.7, with a local TSA). Two providers on
# this machine (tests/e2e/proof_lib.sh: A pec.example.it and B pec.example.net, Postfix,
# Dovecot behind pec's delivery point, clamd, SoftHSM2, each its test TSA), both speaking
# REM beside PEC (proof_rem_up: a Trusted List over HTTPS granting both, a dnsmasq giving
# their MX for the REM routing check, mode auto):
#
#   pec  N complete PEC transactions alice@pec.example.it → bob@pec.example.net (alice has
#        no sender identity: PEC): the envelope to bob, the acceptance and the delivery
#        receipt to alice, B's presa in carico consumed by A's filter;
#   rem  N complete REM transactions carla@pec.example.it → dora@pec.example.net (carla has
#        a sender identity: REM): the dispatch to dora with A's SubmissionAcceptance
#        evidence, the SubmissionAcceptance receipt to carla, B's RelayAcceptance consumed by
#        A's filter, the ContentConsignment receipt from B's delivery point to carla.
#
# Each is timed from its first submission until the sender holds 2N receipts, the recipient
# N messages and A consumed N receipts from B; the same four deliveries per transaction in
# both. The PEC run is audited (tests/e2e/audit.py check) before the REM run, the REM run
# checked afterwards (audit.py rem-check: every transaction complete exactly once in the mailboxes and
# in both stores' evidences, `pec evidence list`). Then:
#   ratio = (N / t_rem) / (N / t_pec)
# and, for each run, the CPU seconds of every daemon and its processes (the test TSAs
# included) and the evidences (one time stamp each) per transaction.
# A single REM transaction (carla → dora, subject "load probe.0") runs between the two,
# untimed, to check the route; it is counted in the REM checks.
# REM_NO_CONSIGNMENT=1: the delivery point issues no ContentConsignment (a build without
# it): the REM run then waits for one receipt per transaction at carla, and says so loudly.
#
# BENCH_PERF=1: `perf record -g` (499 Hz) on both pec serve during each run, then the top
# shared objects and symbols of each (proof_lib.sh proof_perf_*, as benches/pec_e2e.sh);
# the rates of such a run are perf's too.
#
# BENCH_KEEP=1 keeps the work directory (logs, Maildirs, stores) after a good run.
#
# pec against its cryptographic floor (issue 22), after both runs: `pec capacity` on A's and
# B's configurations (their tokens, keys and TSAs) times what a PEC and a REM transaction
# sign and verify; printed for each run: pec's CPU per transaction (pec-a + pec-b), the
# floor (A's sender side + B's recipient side), their ratio (target <= 1.5), and the Postfix
# queue passes per transaction from both logs. BENCH_KEY=rsa2048|rsa3072|p256: both
# providers' PEC message keys (default: A RSA-3072, B RSA-2048); BENCH_FLOOR_COUNT: runs of
# each operation (default 100 here: every XAdES-B-T signature asks the test TSA).
#
# Usage: benches/rem_e2e.sh [N] [CONCURRENCY]   (as root; PEC_BIN: a release build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$root/tests/e2e/lib.sh"
# shellcheck source=tests/e2e/lib_rem.sh
. "$root/tests/e2e/lib_rem.sh"
# shellcheck source=tests/e2e/provider.sh
. "$root/tests/e2e/provider.sh"
# shellcheck source=tests/e2e/proof_lib.sh
. "$root/tests/e2e/proof_lib.sh"

n=${1:-200}
concurrency=${2:-10}
export PEC_BIN=${PEC_BIN:-$root/target/release/pec}
[ -x "$PEC_BIN" ] || { echo "rem_e2e bench: build first: cargo build --release" >&2; exit 2; }
command -v dnsmasq >/dev/null || { echo "rem_e2e bench: dnsmasq missing (scripts/install-deps.sh)" >&2; exit 2; }
command -v xmlsec1 >/dev/null || { echo "rem_e2e bench: xmlsec1 missing (scripts/install-deps.sh)" >&2; exit 2; }
mail=("$E2E_PYTHON" "$root/tests/e2e/pecmail.py")
export PROOF_KEY=${BENCH_KEY:-}
consignment=1 per_sender=2
if [ "${REM_NO_CONSIGNMENT:-0}" = 1 ]; then
  consignment=0 per_sender=1
  echo "rem_e2e bench: WITHOUT ContentConsignment (REM_NO_CONSIGNMENT=1): 3 deliveries per REM transaction" >&2
fi

work=$(e2e_tmpdir)
cleanup() {
  status=$?
  proof_perf_stop
  proof_pair_down "$work"
  if [ "$status" -eq 0 ] && [ "${BENCH_KEEP:-0}" != 1 ]; then rm -rf "$work"; else echo "work dir kept: $work" >&2; fi
  exit "$status"
}
trap cleanup EXIT

# The CSIs are published once both providers are up (proof_pair_up): pec serve must refresh
# the list and the CSIs to send REM (rem.mode = "auto" needs a CSI saying REM baseline);
# every 10 s here (proof_rem_up's default is 2 s), to keep the refresh out of the figures.
export PROVIDER_REM_TL_REFRESH=${PROVIDER_REM_TL_REFRESH:-10s}
proof_rem_up "$work"
PEC_LOG=${PEC_LOG:-info} proof_pair_up "$work"
trusted() {
  "$PEC_BIN" rem trust show -c "$work/$1/pec.toml" 2>/dev/null | grep -q "smtp:mx.pec.example.${2}:25"
}
e2e_poll 60 trusted a net || e2e_fail "A did not accept the Trusted List"
e2e_poll 60 trusted b it || e2e_fail "B did not accept the Trusted List"
rem_baseline() { grep -q "rem peers view updated granted=2 rem_baseline=2" "$work/$1/pec.log"; }
e2e_poll 60 rem_baseline a || e2e_fail "A does not see both peers' CSI (REM baseline)"
e2e_poll 60 rem_baseline b || e2e_fail "B does not see both peers' CSI (REM baseline)"

count() { _proof_maildir_count "$@"; }
at_least() { [ "$(count "${@:2}")" -ge "$1" ]; }
evidences_issued() { # P: EvidenzaREMEmessa records in P's legal log so far
  "$PEC_BIN" log export -c "$work/$1/pec.toml" --format json -o "$work/$1/legal-now.json" >/dev/null
  "$E2E_PYTHON" -c 'import json, sys; print(sum(1 for r in json.load(open(sys.argv[1])) if r["kind"] == "EvidenzaREMEmessa"))' \
    "$work/$1/legal-now.json"
}

# PEC.
proof_maillog_mark "$work" "$work/maillog-pec.mark"
proof_cpu_snapshot "$work" "$work/cpu-pec0.json"
proof_perf_start "$work" pec
e2e_log "pec: $n transactions alice → bob, concurrency $concurrency"
t0=${EPOCHREALTIME}
"${mail[@]}" load --port "$a_submission" --user alice@pec.example.it --from alice@pec.example.it \
  --to bob@pec.example.net --count "$n" --concurrency "$concurrency" --size 4096 \
  --maildir "$alice_md" --maildir "$bob_md" --expect $((3 * n)) --deadline $((300 + 2 * n)) \
  --accepted "$work/accepted" --tag pec >/dev/null
e2e_poll 120 proof_consumed_at_least "$work" "$n" || e2e_fail "A consumed only $(proof_consumed "$work") presa in carico"
t1=${EPOCHREALTIME}
pec_t=$(awk -v s="$t0" -v e="$t1" 'BEGIN { printf "%.3f", e - s }')
proof_cpu_snapshot "$work" "$work/cpu-pec1.json"
proof_perf_stop
proof_wait_settled "$work" "$n" 120
proof_queue_passes "$work" "$work/maillog-pec.mark" "$n" > "$work/passes-pec.out"
# Audited before any REM transaction: its checks of the legal logs know PEC only.
proof_audit "$work" "$work/accepted" 20 > "$work/audit.out" || { cat "$work/audit.out" >&2; e2e_fail "pec audit failed"; }

# The route, once, untimed: carla → dora must go as REM and complete.
e2e_log "probe: one REM transaction carla → dora"
printf 'From: carla@pec.example.it\r\nTo: dora@pec.example.net\r\nSubject: load probe.0\r\nDate: %s\r\nMessage-ID: <load.probe.0.0@pecmail.test>\r\n\r\nprobe\r\n' \
  "$(date -R)" > "$work/probe.eml"
t=$(date +%s.%N)
"${mail[@]}" send --port "$a_submission" --user carla@pec.example.it --password test \
  --from carla@pec.example.it --to dora@pec.example.net "$work/probe.eml" >/dev/null
printf 'load probe.0\t%s\t%s\tdora@pec.example.net\n' "$t" "$(date +%s.%N)" > "$work/accepted-rem"
e2e_poll 60 at_least 1 "$dora_md" || e2e_fail "the probe dispatch did not reach dora"
e2e_poll 60 at_least "$per_sender" "$carla_md" || e2e_fail "carla holds $(count "$carla_md") of $per_sender receipts of the probe"
e2e_poll 60 proof_rem_consumed_at_least "$work" 1 || e2e_fail "A did not consume B's RelayAcceptance of the probe"
grep -rqs "^REM-MessageType: http://uri.etsi.org/19522/v1#/ERDMessageType/dispatch" "$dora_md" ||
  e2e_fail "what dora holds is no REM dispatch: the route is not REM"


# REM.
ev_a0=$(evidences_issued a) ev_b0=$(evidences_issued b)
consumed0=$(proof_rem_consumed "$work")
sender0=$(count "$carla_md") rcpt0=$(count "$dora_md")
proof_maillog_mark "$work" "$work/maillog-rem.mark"
proof_cpu_snapshot "$work" "$work/cpu-rem0.json"
proof_perf_start "$work" rem
e2e_log "rem: $n transactions carla → dora, concurrency $concurrency"
t0=${EPOCHREALTIME}
"${mail[@]}" load --port "$a_submission" --user carla@pec.example.it --from carla@pec.example.it \
  --to dora@pec.example.net --count "$n" --concurrency "$concurrency" --size 4096 \
  --maildir "$carla_md" --maildir "$dora_md" --expect $((sender0 + rcpt0 + (per_sender + 1) * n)) \
  --deadline $((300 + 4 * n)) --accepted "$work/accepted-rem-load" --tag rem >/dev/null
e2e_poll 120 proof_rem_consumed_at_least "$work" $((consumed0 + n)) ||
  e2e_fail "A consumed only $(($(proof_rem_consumed "$work") - consumed0)) of $n RelayAcceptance"
t1=${EPOCHREALTIME}
rem_t=$(awk -v s="$t0" -v e="$t1" 'BEGIN { printf "%.3f", e - s }')
proof_cpu_snapshot "$work" "$work/cpu-rem1.json"
proof_perf_stop
cat "$work/accepted-rem-load" >> "$work/accepted-rem"
postfix_wait_queue_empty "$work/a/postfix" 120
postfix_wait_queue_empty "$work/b/postfix" 120
ev_a=$(($(evidences_issued a) - ev_a0)) ev_b=$(($(evidences_issued b) - ev_b0))
proof_queue_passes "$work" "$work/maillog-rem.mark" "$n" rem > "$work/passes-rem.out"

# Every transaction complete, exactly once.
no_cc=()
[ "$consignment" = 1 ] || no_cc=(--no-consignment)
proof_rem_audit "$work" "$work/accepted-rem" "${no_cc[@]}" > "$work/rem-audit.out" ||
  { cat "$work/rem-audit.out" >&2; e2e_fail "rem check failed"; }
cat "$work/rem-audit.out"

"$E2E_PYTHON" - "$n" "$pec_t" "$rem_t" "$ev_a" "$ev_b" <<'PY'
import sys
n, pec, rem, ev_a, ev_b = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
print(f"pec (envelope, acceptance, presa in carico, delivery receipt): {n} transactions in {pec:.2f} s = {n / pec:.2f} transactions/s")
print(f"rem (dispatch, SubmissionAcceptance, RelayAcceptance, ContentConsignment): {n} transactions in {rem:.2f} s = {n / rem:.2f} transactions/s")
print(f"evidences issued during the rem run (one XAdES signature and one time stamp each): A {ev_a}, B {ev_b} = {(ev_a + ev_b) / n:.2f} per transaction")
print(f"ratio rem_tps / pec_tps: {pec / rem:.3f}  (target >= 0.7)")
PY
echo "where the time goes, pec run:"
proof_cpu_report "$work/cpu-pec0.json" "$work/cpu-pec1.json" "$pec_t" "$n"
echo "where the time goes, rem run:"
proof_cpu_report "$work/cpu-rem0.json" "$work/cpu-rem1.json" "$rem_t" "$n"
BENCH_FLOOR_COUNT=${BENCH_FLOOR_COUNT:-100} proof_floor_measure "$work" "$work/floor"
echo "pec run:"
proof_floor_report "$work/cpu-pec0.json" "$work/cpu-pec1.json" "$n" "$work/floor" pec
echo "Postfix queue passes during the pec run (both logs, queue files with a qmgr from= line):"
cat "$work/passes-pec.out"
echo "rem run:"
proof_floor_report "$work/cpu-rem0.json" "$work/cpu-rem1.json" "$n" "$work/floor" rem
echo "Postfix queue passes during the rem run (both logs, queue files with a qmgr from= line):"
cat "$work/passes-rem.out"
proof_perf_show "$work" pec
proof_perf_show "$work" rem

#!/usr/bin/env bash
# End to end, zero loss under load (spec §8 audit invariants): PROOF_N PEC transactions
# (default 1000; the full proof is PROOF_N=10000) from A's alice to B's bob at concurrency
# PROOF_CONCURRENCY (default 20), between two providers on this machine (tests/e2e/proof_lib.sh:
# Postfix, Dovecot behind pec's LMTP proxy, clamd, SoftHSM2, `pec serve` each).
#
# Afterwards, for every accepted submission: alice holds exactly one acceptance and exactly
# one delivery receipt, bob exactly one transport envelope; A's legal log has exactly one
# BustaTrasporto and one Accettazione, B's names bob exactly once in a PresaInCarico and
# exactly once in a Consegna; nothing exists for a message never accepted; A consumed every
# presa in carico (none reached a service mailbox); PROOF_VERIFY messages (default 100; -1:
# all) pass `pec verify`; `pec log verify` passes on both providers.
#
# Usage: tests/e2e/proof.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"
# shellcheck source=tests/e2e/proof_lib.sh
. "$here/proof_lib.sh"

export PEC_BIN=${PEC_BIN:-$root/target/debug/pec}
[ -x "$PEC_BIN" ] || { echo "proof: $PEC_BIN not built (cargo build)" >&2; exit 2; }
n=${PROOF_N:-1000}
concurrency=${PROOF_CONCURRENCY:-20}

work=$(e2e_tmpdir)
cleanup() {
  status=$?
  proof_pair_down "$work"
  if [ "$status" -ne 0 ]; then
    for p in a b; do
      echo "---- $p: pec log" >&2; tail -n 30 "$work/$p/pec.log" >&2 2>/dev/null || true
    done
    echo "proof: FAIL (work dir kept: $work)" >&2
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT

proof_pair_up "$work"
e2e_log "load: $n PEC transactions alice@pec.example.it → bob@pec.example.net, concurrency $concurrency"
t0=${EPOCHREALTIME}
"$E2E_PYTHON" "$here/pecmail.py" load --port "$a_submission" --user alice@pec.example.it \
  --from alice@pec.example.it --to bob@pec.example.net --count "$n" --concurrency "$concurrency" \
  --size 4096 --maildir "$alice_md" --expect 0 --accepted "$work/accepted" --tag proof >&2
[ "$(wc -l < "$work/accepted")" -eq "$n" ] || e2e_fail "only $(wc -l < "$work/accepted") of $n submissions accepted"
proof_wait_settled "$work" "$n" $((60 + n / 5))
t1=${EPOCHREALTIME}
e2e_poll 60 proof_consumed_at_least "$work" "$n" ||
  e2e_fail "A consumed $(proof_consumed "$work") presa in carico, expected $n"
consumed=$(proof_consumed "$work")
[ "$consumed" -eq "$n" ] || e2e_fail "A consumed $consumed presa in carico, expected $n"
awk -v s="$t0" -v e="$t1" -v n="$n" 'BEGIN { printf "proof: %d transactions settled in %.1f s (%.1f/s)\n", n, e-s, n/(e-s) }'

e2e_log "audit: mailboxes, legal logs, signatures"
proof_audit "$work" "$work/accepted" "${PROOF_VERIFY:-100}"
echo "proof: PASS"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, zero loss under load (spec §8 audit invariants): PROOF_N PEC transactions
# (default 1000; the full proof is PROOF_N=10000) from A's alice at concurrency
# PROOF_CONCURRENCY (default 20), between two providers on this machine (tests/e2e/proof_lib.sh:
# Postfix, Dovecot behind pec's LMTP proxy, clamd, SoftHSM2, `pec serve` each). Of every five
# messages, three go to B's bob, one to A's ugo (same provider) and one to both (one local
# and one remote recipient: proof_rcpt_sets).
#
# Once settled, the clock is moved past 12 h and past 24 h (`pec timers run --now <now + 13 h>`
# and `<now + 25 h>` on each provider): every recipient has its outcome, so no pass may send
# a notice. Then, for every accepted submission: alice holds exactly one acceptance and
# exactly one delivery receipt per recipient and no timer notice, each recipient exactly one
# transport envelope; A's legal log has exactly one BustaTrasporto and one Accettazione, the
# log of each recipient's provider names it exactly once in a PresaInCarico and exactly once
# in a Consegna, A's log correlates B's receipt for bob exactly once; each log holds at most
# one final outcome per message and recipient, no timer notice after an outcome, no notice
# for a recipient not among the envelope's destinatari nor with another sender or subject
# (audit.py); nothing exists for a message never accepted; A consumed every presa in carico
# of B, and its own (same provider) are in its receipt mailbox, one per message, B's receipt
# mailbox is empty; PROOF_VERIFY messages (default 100; -1: all) pass `pec verify`; `pec log
# verify` passes on both providers.
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
e2e_log "load: $n PEC transactions from alice@pec.example.it to bob@pec.example.net, ugo@pec.example.it or both, concurrency $concurrency"
t0=${EPOCHREALTIME}
"$E2E_PYTHON" "$here/pecmail.py" load --port "$a_submission" --user alice@pec.example.it \
  --from alice@pec.example.it "${proof_rcpt_sets[@]}" --count "$n" --concurrency "$concurrency" \
  --size 4096 --maildir "$alice_md" --expect 0 --accepted "$work/accepted" --tag proof >&2
[ "$(wc -l < "$work/accepted")" -eq "$n" ] || e2e_fail "only $(wc -l < "$work/accepted") of $n submissions accepted"
proof_wait_settled "$work" "$n" $((60 + n / 4)) "$work/accepted"
t1=${EPOCHREALTIME}
read -r _ _ _ _ remote < <(proof_expected "$work/accepted")
e2e_poll 60 proof_consumed_at_least "$work" "$remote" ||
  e2e_fail "A consumed $(proof_consumed "$work") presa in carico, expected $remote"
consumed=$(proof_consumed "$work")
[ "$consumed" -eq "$remote" ] || e2e_fail "A consumed $consumed presa in carico, expected $remote"
awk -v s="$t0" -v e="$t1" -v n="$n" 'BEGIN { printf "proof: %d transactions settled in %.1f s (%.1f/s)\n", n, e-s, n/(e-s) }'

e2e_log "timers: past 12 h and past 24 h, nothing may be due"
timers_ok=1
proof_timers "$work" 13 || timers_ok=0
proof_timers "$work" 25 || timers_ok=0

e2e_log "audit: mailboxes, legal logs, signatures"
proof_audit "$work" "$work/accepted" "${PROOF_VERIFY:-100}"
[ "$timers_ok" -eq 1 ] || e2e_fail "the timers sent notices for recipients that have an outcome"
echo "proof: PASS"

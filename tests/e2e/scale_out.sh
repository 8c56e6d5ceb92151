#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, scale-out on one PostgreSQL store: provider A runs two nodes, a1 and a2 (each
# with its own Postfix, Dovecot behind pec's LMTP proxy, clamd, SoftHSM2 token and
# `pec serve`), sharing one PostgreSQL 15 database; provider B runs one node on SQLite
# (on a PostgreSQL of its own with PEC_E2E_STORE=pg).
#
# Alice submits through a1 alone, then through a1 and a2 at once, to bob@pec.example.net
# (B). B routes everything back to A through a1 only, so a1 consumes the receipts of the
# envelopes a2 accepted (tracking rows a2 wrote). Checked afterwards: every envelope has
# exactly one transport-envelope record and one acceptance in A's log, B issued exactly one
# delivery receipt per envelope, every tracking row in the database is delivered, the
# queues are empty, and `pec log verify` on the PostgreSQL store finds one intact chain.
# Prints the throughput of the two-node run against the one-node run (same run, same
# machine: a ratio, not a benchmark figure to compare across machines).
#
# Usage: tests/e2e/scale_out.sh   (as root; PEC_BIN names the pec binary; SCALE_OUT_N
# envelopes per run, default 100)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"
# shellcheck source=tests/e2e/lib_pg.sh
. "$here/lib_pg.sh"

provider_script scale_out a1 a2 b
n=${SCALE_OUT_N:-100}
half=$((n / 2))
n=$((half * 2))
on_exit() {
  pg_stop "$work/pg"
}

e2e_log "PostgreSQL for provider A"
pg_port=$(e2e_free_ports 1)
url=$(pg_start "$work/pg" "$pg_port")
sql() { _pg_as "$PG_BIN/psql" -h "$work/pg" -p "$pg_port" -U postgres -d pec -At -c "$1"; }
delivered_is() { [ "$(sql "SELECT count(*) FROM tracking WHERE state = 'delivered'")" -eq "$1" ]; }
export PROVIDER_PKI=$work/pki PROVIDER_LMTP_PROXY=1
PROVIDER_STORE=pg PROVIDER_PG_URL=$url PROVIDER_NODE=1 provider_up "$work/a1" pec.example.it it
a1_submission=$submission a1_smtp=$smtp
PROVIDER_STORE=pg PROVIDER_PG_URL=$url PROVIDER_NODE=2 provider_up "$work/a2" pec.example.it it
a2_submission=$submission
provider_up "$work/b" pec.example.net net
b_smtp=$smtp
postfix_route "$work/a1/postfix" pec.example.net "127.0.0.1:$b_smtp"
postfix_route "$work/a2/postfix" pec.example.net "127.0.0.1:$b_smtp"
postfix_route "$work/b/postfix" pec.example.it "127.0.0.1:$a1_smtp"
bob=$work/b/dovecot/mail/pec.example.net/bob

load() { # SUBMISSION_PORT COUNT EXPECT CONCURRENCY OUT
  "${mail[@]}" load --port "$1" --user alice@pec.example.it --from alice@pec.example.it \
    --to bob@pec.example.net --count "$2" --concurrency "$4" --size 2048 \
    --maildir "$bob" --expect "$3" --deadline 900 > "$5"
}
log_count() { e2e_plain "$1" | grep -cE "$2" || true; }
seconds() { echo "$2 $1" | awk '{printf "%.3f", $1 - $2}'; }
# Injections that waited 60 s for a reinjection greeting (Postfix's reinject listener has
# 10 processes, and the injectors keep connections open) stretch a run: count them.
stalls() { cat "$work"/a1/pec.log "$work"/a2/pec.log "$work"/b/pec.log | log_count /dev/stdin "no reply to greeting"; }

# A run ends when every envelope is in bob's mailbox, its delivery receipt has moved A's
# tracking row to delivered (whichever node wrote it), and every queue is empty.
settle() { # DELIVERED
  e2e_poll 600 delivered_is "$1" \
    || e2e_fail "A's tracking: $(sql "SELECT count(*) FROM tracking WHERE state = 'delivered'") delivered, expected $1"
  for p in a1 a2 b; do postfix_wait_queue_empty "$work/$p/postfix" 300; done
}

e2e_log "1. $n envelopes through a1 alone"
t0=${EPOCHREALTIME}
load "$a1_submission" "$n" "$n" 10 "$work/load1.out"
settle "$n"
t1=${EPOCHREALTIME}
stalls1=$(stalls)

e2e_log "2. $n envelopes through a1 and a2 at once ($half each; the same 10 clients in all)"
t2=${EPOCHREALTIME}
load "$a1_submission" "$half" $((2 * n)) 5 "$work/load2a.out" &
l1=$!
load "$a2_submission" "$half" $((2 * n)) 5 "$work/load2b.out" &
l2=$!
wait "$l1" || e2e_fail "load through a1 failed"
wait "$l2" || e2e_fail "load through a2 failed"
settle $((2 * n))
t3=${EPOCHREALTIME}
stalls2=$(($(stalls) - stalls1))

e2e_log "3. exactly once across the nodes"
total=$((2 * n))
search() { # CONFIG KIND: the identificativo column of the matching records, one per line
  "$pec" log search -c "$1" --kind "$2" --format csv | tail -n +2 | cut -d, -f6
}
for kind in BustaTrasporto Accettazione; do
  all=$(search "$work/a1/pec.toml" "$kind" | wc -l)
  unique=$(search "$work/a1/pec.toml" "$kind" | sort -u | wc -l)
  e2e_log "A: $all $kind records, $unique envelopes"
  [ "$all" -eq "$total" ] && [ "$unique" -eq "$total" ] \
    || e2e_fail "A: $all $kind records for $unique envelopes, expected $total once each"
done
consegna=$(search "$work/b/pec.toml" Consegna | wc -l)
consegna_unique=$(search "$work/b/pec.toml" Consegna | sort -u | wc -l)
e2e_log "B: $consegna delivery receipts for $consegna_unique envelopes"
[ "$consegna" -eq "$total" ] && [ "$consegna_unique" -eq "$total" ] \
  || e2e_fail "B: $consegna delivery receipts for $consegna_unique envelopes, expected $total once each"
# Every receipt came back through a1: it moved the rows a2 wrote as well.
by_a2=$(sql "SELECT count(*) FROM tracking WHERE state = 'delivered' AND pec_id LIKE 'opec2.%'")
e2e_log "A: $total tracking rows delivered, $by_a2 of them written by a2 and moved by a1"
[ "$by_a2" -eq "$half" ] || e2e_fail "a2's envelopes delivered: $by_a2, expected $half"

e2e_log "4. one chain on PostgreSQL"
# Both nodes' daily sealers ran; every record is from today and the log starts with its
# first record, so no day is due (the empty days before it are not sealed: issue 18; that
# a day is sealed once across processes is tests/store/legal_log.rs's). Nothing may be reported
# but seals without a time stamp (no TSA here).
"$pec" log verify -c "$work/a2/pec.toml" > "$work/verify.out" || true
e2e_log "$(tail -n 1 "$work/verify.out")"
other=$(grep -cvE '^(seal [0-9-]+: not time-stamped|[0-9]+ records, [0-9]+ seals checked: .*)$' \
  "$work/verify.out" || true)
[ "$other" -eq 0 ] || { cat "$work/verify.out" >&2; e2e_fail "pec log verify found problems"; }
# Per envelope, A logs the envelope, the acceptance, and the two receipts received from B
# (presa in carico, consegna).
grep -qE "^$((4 * total)) records, 0 seals checked" "$work/verify.out" \
  || e2e_fail "pec log verify: expected $((4 * total)) records and no seal: $(tail -n 1 "$work/verify.out")"

one=$(seconds "$t0" "$t1")
two=$(seconds "$t2" "$t3")
awk -v n="$n" -v one="$one" -v two="$two" -v s1="$stalls1" -v s2="$stalls2" 'BEGIN {
  printf "scale-out: %d envelopes A -> B, one node %.1f s (%.1f/s, %d reinjection stalls), two nodes %.1f s (%.1f/s, %d stalls): two/one throughput ratio %.2f\n",
    n, one, n / one, s1, two, n / two, s2, one / two }'
echo "scale_out: PASS"

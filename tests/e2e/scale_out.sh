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
# machine, every process sharing its cores: a ratio, not a scale-out figure; that is
# benches/scale_out.sh, which gives each node a CPU budget of its own).
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

# shellcheck source=tests/e2e/scale_out_lib.sh
. "$here/scale_out_lib.sh"

provider_script scale_out a1 a2 b
n=${SCALE_OUT_N:-100}
half=$((n / 2))
n=$((half * 2))
on_exit() {
  pg_stop "$work/pg"
}

scale_out_up a1
seconds() { echo "$2 $1" | awk '{printf "%.3f", $1 - $2}'; }

e2e_log "1. $n envelopes through a1 alone"
t0=${EPOCHREALTIME}
scale_out_load "$a1_submission" "$n" "$n" 10 "$work/load1.out"
scale_out_settle "$n"
t1=${EPOCHREALTIME}
stalls1=$(scale_out_stalls)

e2e_log "2. $n envelopes through a1 and a2 at once ($half each; the same 10 clients in all)"
t2=${EPOCHREALTIME}
scale_out_load "$a1_submission" "$half" $((2 * n)) 5 "$work/load2a.out" &
l1=$!
scale_out_load "$a2_submission" "$half" $((2 * n)) 5 "$work/load2b.out" &
l2=$!
wait "$l1" || e2e_fail "load through a1 failed"
wait "$l2" || e2e_fail "load through a2 failed"
scale_out_settle $((2 * n))
t3=${EPOCHREALTIME}
stalls2=$(($(scale_out_stalls) - stalls1))

e2e_log "3. exactly once across the nodes, one chain on PostgreSQL"
# Every receipt came back through a1: it moved the rows a2 wrote as well.
scale_out_check $((2 * n)) "$half"

one=$(seconds "$t0" "$t1")
two=$(seconds "$t2" "$t3")
awk -v n="$n" -v one="$one" -v two="$two" -v s1="$stalls1" -v s2="$stalls2" 'BEGIN {
  printf "scale-out: %d envelopes A -> B, one node %.1f s (%.1f/s, %d reinjection stalls), two nodes %.1f s (%.1f/s, %d stalls): two/one throughput ratio %.2f\n",
    n, one, n / one, s1, two, n / two, s2, one / two }'
echo "scale_out: PASS"

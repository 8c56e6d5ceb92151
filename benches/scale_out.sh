#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Scale-out under fixed CPU budgets: provider A's throughput with two nodes against one node,
# each node with the same CPU budget, PostgreSQL with its own (issue 22, item 4).
#
# The nodes are those of tests/e2e/scale_out.sh (tests/e2e/scale_out_lib.sh): A as nodes a1
# and a2 (each its own Postfix, Dovecot behind pec's LMTP proxy, clamd, SoftHSM2 token and
# `pec serve`) on one PostgreSQL 15, B one node on SQLite. Each is started from a shell moved
# into a cgroup v1 cpu (and cpuacct) group of its own, so that every daemon and every process
# they fork is in it:
#
#   pec-scale-PID-a1, -a2   SCALE_A_CPU CPUs each (default 0.35): cpu.cfs_quota_us over
#                           cpu.cfs_period_us (SCALE_PERIOD_US, default 10000: a short period,
#                           so that a process throttled while it holds a lock or a
#                           connection stops the others for at most a few ms, as a slower CPU
#                           would, rather than for the rest of a 100 ms period)
#   pec-scale-PID-pg        SCALE_PG_CPU (default 0.35): PostgreSQL
#   pec-scale-PID-b         SCALE_B_CPU (default 0.8): provider B, sized never to be the
#                           bottleneck (checked: its throttling is printed)
#   pec-scale-PID-load      no quota: the load generator, the PostgreSQL sampler, the balancer
#
# SCALE_POOL: each A node's [store] pool_size (default 8, as the test harness has it).
#
# Runs (release build):
#   1. N transactions through a1 alone (B's receipts to A go to a1 only);
#   2. 2N through a1 and a2 at once (N each; B's receipts to A spread over a1 and a2 by a TCP
#      balancer, connection by connection in turn, as equal-preference MX hosts would);
# each with CONCURRENCY submission clients per node and timed until every tracking row is
# delivered and every queue is empty (scale_out_settle). Then the exactly-once checks of the
# test (scale_out_check) and the report: two/one throughput, and where the rest goes:
#   - each cgroup's CPU used over its quota during each run (cpuacct.usage), and its
#     throttling (cpu.stat: periods throttled, throttled time);
#   - PostgreSQL sampled every 0.5 s (psql \watch on one connection): the mean number of
#     backends per state and wait event and statement, e.g. waiting (Lock:transactionid) on
#     the legal log's chain head row (`SELECT … FROM chain_head … FOR UPDATE`);
#   - pec's waits for a pooled store connection (pec_store_pool_wait_seconds, per node);
#   - Postfix reinjection stalls (scale_out_stalls).
#
# Usage: benches/scale_out.sh [N] [CONCURRENCY]   (as root, cgroup v1 cpu and cpuacct mounted
# under /sys/fs/cgroup; PEC_BIN: a release build; defaults N=200, CONCURRENCY=8)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$root/tests/e2e/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$root/tests/e2e/provider.sh"
# shellcheck source=tests/e2e/lib_pg.sh
. "$root/tests/e2e/lib_pg.sh"
# shellcheck source=tests/e2e/scale_out_lib.sh
. "$root/tests/e2e/scale_out_lib.sh"

n=${1:-200}
concurrency=${2:-8}
a_cpu=${SCALE_A_CPU:-0.35}
pg_cpu=${SCALE_PG_CPU:-0.35}
b_cpu=${SCALE_B_CPU:-0.8}
period=${SCALE_PERIOD_US:-10000}
export PEC_BIN=${PEC_BIN:-$root/target/release/pec}
[ -x "$PEC_BIN" ] || { echo "scale_out bench: build first: cargo build --release --bin pec" >&2; exit 2; }
for h in cpu cpuacct; do
  [ -w "/sys/fs/cgroup/$h" ] || { echo "scale_out bench: /sys/fs/cgroup/$h (cgroup v1) not writable" >&2; exit 2; }
done

# The shell (and so everything it starts from now on) into group G; "" back to the root.
into() {
  local h
  for h in cpu cpuacct; do
    if [ -n "$1" ]; then
      echo "$BASHPID" > "/sys/fs/cgroup/$h/$(cg "$1")/cgroup.procs"
    else
      echo "$BASHPID" > "/sys/fs/cgroup/$h/cgroup.procs"
    fi
  done
}
scale_out_enter() { into "$1"; }

balancer_pid="" sampler_pid=""
stop_helpers() {
  local p
  for p in "$balancer_pid" "$sampler_pid"; do
    [ -n "$p" ] || continue
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  balancer_pid="" sampler_pid=""
}
groups=(a1 a2 pg b load)
cg() { echo "pec-scale-$$-$1"; }
on_exit() {
  stop_helpers
  pg_stop "$work/pg"
  into ""
  local g h
  for g in "${groups[@]}"; do
    for h in cpu cpuacct; do
      rmdir "/sys/fs/cgroup/$h/$(cg "$g")" 2>/dev/null \
        || echo "scale_out bench: cgroup /sys/fs/cgroup/$h/$(cg "$g") kept (tasks: $(tr '\n' ' ' < "/sys/fs/cgroup/$h/$(cg "$g")/tasks"))" >&2
    done
  done
}
provider_script scale_out_bench a1 a2 b
for g in "${groups[@]}"; do
  mkdir "/sys/fs/cgroup/cpu/$(cg "$g")" "/sys/fs/cgroup/cpuacct/$(cg "$g")"
done
quota_of() { case $1 in a1 | a2) echo "$a_cpu" ;; pg) echo "$pg_cpu" ;; b) echo "$b_cpu" ;; *) echo -1 ;; esac; }
for g in "${groups[@]}"; do
  q=$(quota_of "$g")
  echo "$period" > "/sys/fs/cgroup/cpu/$(cg "$g")/cpu.cfs_period_us"
  if [ "$q" = -1 ]; then
    echo -1 > "/sys/fs/cgroup/cpu/$(cg "$g")/cpu.cfs_quota_us"
  else
    awk -v q="$q" -v p="$period" 'BEGIN { printf "%d\n", q * p }' > "/sys/fs/cgroup/cpu/$(cg "$g")/cpu.cfs_quota_us"
  fi
done

export PROVIDER_PG_POOL=${SCALE_POOL:-8}
balance_port=$(e2e_free_ports 1)
scale_out_up "$balance_port"
into load

# The balancer (B → A): TARGET_PORT... (a1 alone in run 1, a1 and a2 in run 2).
balance() {
  local to=() p
  for p in "$@"; do to+=(--to "$p"); done
  [ -z "$balancer_pid" ] || { kill "$balancer_pid"; wait "$balancer_pid" 2>/dev/null || true; }
  "${mail[@]}" balance --listen "$balance_port" "${to[@]}" > "$work/balance-$#.out" &
  balancer_pid=$!
  wait_for_port 127.0.0.1 "$balance_port" 10
}

# PostgreSQL sampled every 0.5 s on one connection: epoch|state|wait|statement per
# non-idle backend of pec's database.
"$PG_BIN/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d pec -At -F '|' > "$work/pg_samples" 2>&1 <<'SQL' &
SELECT extract(epoch FROM clock_timestamp())::numeric(16,3), state,
       coalesce(wait_event_type || ':' || wait_event, 'running'),
       left(regexp_replace(query, '\s+', ' ', 'g'), 70)
FROM pg_stat_activity
WHERE datname = 'pec' AND state <> 'idle' AND pid <> pg_backend_pid()
UNION ALL SELECT extract(epoch FROM clock_timestamp())::numeric(16,3), 'sample', '', ''
\watch 0.5
SQL
sampler_pid=$!

# cgroup counters: "GROUP usage_ns nr_periods nr_throttled throttled_ns", one line per group.
cg_snapshot() {
  local g
  for g in "${groups[@]}"; do
    printf '%s %s %s\n' "$g" "$(cat "/sys/fs/cgroup/cpuacct/$(cg "$g")/cpuacct.usage")" \
      "$(awk '{ v[$1] = $2 } END { print v["nr_periods"], v["nr_throttled"], v["throttled_time"] }' \
        "/sys/fs/cgroup/cpu/$(cg "$g")/cpu.stat")"
  done > "$1"
}
pool_wait() { # NODE: seconds waited for a store connection, waits (from the metrics endpoint)
  echo "$(provider_metric "$work/$1" pec_store_pool_wait_seconds_sum) $(provider_metric "$work/$1" pec_store_pool_wait_seconds_count)"
}

run() { # NAME SUBMISSION_PORT... : N through each port at once, until all settled
  local name=$1 total_before pids=() p i=0
  shift
  total_before=$(scale_out_sql "SELECT count(*) FROM tracking WHERE state = 'delivered'")
  local bob_before
  bob_before=$( (find "$bob/new" "$bob/cur" -type f 2>/dev/null || true) | wc -l)
  local expect=$((bob_before + n * $#))
  cg_snapshot "$work/cg-$name-0"
  for p in a1 a2; do pool_wait "$p" > "$work/pool-$name-$p-0"; done
  local s0
  s0=$(scale_out_stalls)
  local t0=${EPOCHREALTIME}
  for p in "$@"; do
    i=$((i + 1))
    scale_out_load "$p" "$n" "$expect" "$concurrency" "$work/load-$name-$i.out" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || e2e_fail "$name: a load failed"; done
  scale_out_settle $((total_before + n * $#))
  local t1=${EPOCHREALTIME}
  cg_snapshot "$work/cg-$name-1"
  for p in a1 a2; do pool_wait "$p" > "$work/pool-$name-$p-1"; done
  echo "$t0 $t1 $(($(scale_out_stalls) - s0))" > "$work/time-$name"
}

e2e_log "1. $n transactions through a1 alone (a1 ${a_cpu} CPU, PostgreSQL ${pg_cpu}, B ${b_cpu})"
balance "$a1_smtp"
run one "$a1_submission"
e2e_log "2. $((2 * n)) transactions through a1 and a2 at once ($n each)"
balance "$a1_smtp" "$a2_smtp"
run two "$a1_submission" "$a2_submission"
stop_helpers

e2e_log "3. exactly once across the nodes, one chain on PostgreSQL"
scale_out_check $((3 * n)) "$n"

echo "PostgreSQL deadlocks detected (each aborts a transaction, retried): $(grep -c "deadlock detected" "$work/pg/server.log" || true)"
echo "scale-out bench: N=$n, concurrency $concurrency per node, A pool_size $PROVIDER_PG_POOL, budgets: A node $a_cpu CPU, PostgreSQL $pg_cpu, B $b_cpu, load unlimited; cfs period ${period} us"
python3 - "$work" "$n" "$a_cpu" "$pg_cpu" "$b_cpu" "$a1_smtp" "$a2_smtp" <<'PY'
import sys
work, n = sys.argv[1], int(sys.argv[2])
quota = {"a1": float(sys.argv[3]), "a2": float(sys.argv[3]), "pg": float(sys.argv[4]),
         "b": float(sys.argv[5]), "load": None}
a1_port, a2_port = sys.argv[6], sys.argv[7]

def snap(path):
    out = {}
    for line in open(path):
        g, usage, periods, thr, thr_ns = line.split()
        out[g] = (int(usage), int(periods), int(thr), int(thr_ns))
    return out

times, rates = {}, {}
for i, name in enumerate(["one", "two"]):
    t0, t1, stalls = open(f"{work}/time-{name}").read().split()
    t0, t1, stalls = float(t0), float(t1), int(stalls)
    count = n * (i + 1)
    times[name] = (t0, t1)
    rates[name] = count / (t1 - t0)
    print(f"run {name}: {count} transactions in {t1 - t0:.1f} s = {rates[name]:.2f}/s, reinjection stalls {stalls}")
    a, b = snap(f"{work}/cg-{name}-0"), snap(f"{work}/cg-{name}-1")
    dur = t1 - t0
    print("  cgroup  CPU used  quota  used/quota  periods throttled  throttled time")
    for g in ["a1", "a2", "pg", "b", "load"]:
        used = (b[g][0] - a[g][0]) / 1e9 / dur
        periods = b[g][1] - a[g][1]
        thr = b[g][2] - a[g][2]
        thr_s = (b[g][3] - a[g][3]) / 1e9
        q = quota[g]
        qs = f"{q:.2f}" if q else "none"
        uq = f"{used / q:.2f}" if q else "-"
        tp = f"{thr}/{periods} ({100 * thr / periods:.0f} %)" if periods else "-"
        print(f"  {g:<6}  {used:8.3f}  {qs:>5}  {uq:>10}  {tp:>17}  {thr_s:.1f} s")
    for node in ["a1", "a2"]:
        s0, c0 = map(float, open(f"{work}/pool-{name}-{node}-0").read().split())
        s1, c1 = map(float, open(f"{work}/pool-{name}-{node}-1").read().split())
        waits = c1 - c0
        mean = (s1 - s0) / waits * 1e3 if waits else 0.0
        print(f"  {node}: {waits:.0f} store connections taken from the pool, {s1 - s0:.2f} s waited in all ({mean:.2f} ms each)")

# PostgreSQL: mean backends per (state, wait, statement) over each run's samples.
samples = {"one": 0, "two": 0}
rows = {"one": {}, "two": {}}
for line in open(f"{work}/pg_samples"):
    parts = line.rstrip("\n").split("|")
    if len(parts) != 4:
        continue
    try:
        t = float(parts[0])
    except ValueError:
        continue
    for name, (t0, t1) in times.items():
        if t0 <= t <= t1:
            if parts[1] == "sample":
                samples[name] += 1
            else:
                key = (parts[1], parts[2], parts[3])
                rows[name][key] = rows[name].get(key, 0) + 1
for name in ["one", "two"]:
    s = samples[name] or 1
    print(f"PostgreSQL during run {name} ({samples[name]} samples): mean non-idle backends by state, wait, statement")
    total = sum(rows[name].values()) / s
    print(f"  all: {total:.2f}")
    for (state, wait, query), c in sorted(rows[name].items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {c / s:5.2f}  {state:<20} {wait:<28} {query}")
    waits = {}
    for (state, wait, query), c in rows[name].items():
        waits[wait] = waits.get(wait, 0) + c
    print("  by wait event: " + ", ".join(f"{w} {c / s:.2f}" for w, c in sorted(waits.items(), key=lambda kv: -kv[1])))

for i, name in [(1, "one"), (2, "two")]:
    ports = [l.strip() for l in open(f"{work}/balance-{i}.out")]
    print(f"B -> A connections through the balancer, run {name}: a1 {ports.count(a1_port)}, a2 {ports.count(a2_port)}")
print(f"two/one throughput: {rates['two'] / rates['one']:.2f}  (target >= 1.7)")
PY

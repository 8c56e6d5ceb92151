#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Size and fan-out through real Postfix + Dovecot + pec (one provider, pec.example.it; its
# delivery point in front of Dovecot), measured in one run on this machine:
#
#   size     one message of SIZE_MB (default 100) MB, an attachment, from alice to bob:
#            acceptance receipt, transport envelope, presa in carico, delivery to bob
#            through the LMTP proxy and the (completa) delivery receipt carrying the
#            original all reach their mailboxes. Peak memory per role: each role runs in
#            its own `pec serve` process (serve.roles: the access point's milter, the
#            content filter and reception point, the delivery point's LMTP proxy), and the
#            figure is its VmHWM at the end minus its VmHWM when idle, over the size.
#            Target: under 3 × the message size for each role.
#   fan-out  one 10 KB message to 1, 100 and 500 recipients (the seed providers' limit):
#            the time from the submission until the acceptance, every delivery receipt and
#            the presa in carico are in their mailboxes; time per extra recipient between
#            1 and 100 and between 100 and 500. Target: flat.
#
# Postfix's message_size_limit, clamd's stream limit and pec's access limits are raised for
# the run.
#
# Usage: benches/size_fanout.sh [SIZE_MB] [FANOUT...]   (as root; PEC_BIN: the binary,
#        a release build by default)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$root/tests/e2e/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$root/tests/e2e/provider.sh"

size_mb=${1:-100}
shift || true
fanout=("$@")
[ ${#fanout[@]} -gt 0 ] || fanout=(1 100 500)
export PEC_BIN=${PEC_BIN:-$root/target/release/pec}
[ -x "$PEC_BIN" ] || { echo "size_fanout bench: build first: cargo build --release" >&2; exit 2; }

work=$(e2e_tmpdir)
role_pids=()
cleanup() {
  status=$?
  for p in "${role_pids[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  provider_down "$work/pec"
  [ "$status" -eq 0 ] && rm -rf "$work" || echo "work dir kept: $work" >&2
  exit "$status"
}
trap cleanup EXIT

limit_mb=$((size_mb * 3 + 64))
export PROVIDER_LMTP_PROXY=1
# clamd scans the submission and the envelope whole (its default stream limit is 100M).
export CLAMD_EXTRA_CONF="StreamMaxLength ${limit_mb}M
MaxScanSize ${limit_mb}M
MaxFileSize ${limit_mb}M"
export PROVIDER_ACCESS_EXTRA="max_total_size = \"$((size_mb + 16))MB\"
hard_size_limit = \"$((size_mb + 32))MB\""
PEC_LOG=warn provider_up "$work/pec"
# Postfix queues the envelope and the completa receipt, each carrying the whole original.
# (pec's filter.max_size keeps its default, 160MB: SIZE_MB up to about 140.)
postconf -c "$work/pec/postfix/etc" -e "message_size_limit = $((limit_mb * 1024 * 1024))" \
  "mailbox_size_limit = 0" "virtual_mailbox_limit = 0"
postfix -c "$work/pec/postfix/etc" reload >/dev/null 2>&1
mail=$work/pec/dovecot/mail/pec.example.it

# One `pec serve` per role, on the same store, token and ports, instead of the one that
# provider_up started: each process's peak is then its role's.
kill "$pec_pid"
wait "$pec_pid" 2>/dev/null || true
roles=(access filter delivery)
declare -A role_port=([access]=$milter [filter]=$filter [delivery]=$delivery)
# One at a time: SoftHSM processes opening the token at the same moment may not see it.
for role in "${roles[@]}"; do
  # Without [metrics] (the last section): one endpoint port cannot serve three processes.
  sed '/^\[metrics\]/,$d' "$work/pec/pec.toml" > "$work/pec/pec-$role.toml"
  printf '\n[serve]\nroles = ["%s"]\n' "$role" >> "$work/pec/pec-$role.toml"
  SOFTHSM2_CONF=$conf PEC_E2E_PIN=1234 PEC_LOG=warn "$PEC_BIN" serve -c "$work/pec/pec-$role.toml" \
    2> "$work/pec/pec-$role.log" &
  role_pids+=("$!")
  wait_for_port 127.0.0.1 "${role_port[$role]}" 30
done

# measure PORT MESSAGE_FILE DEADLINE RCPT,RCPT... MAILDIR=N...: submits as alice, waits until
# each MAILDIR has N more messages; prints the submission time and the total time.
measure() {
  /usr/bin/python3 - "$@" <<'EOF'
import os, smtplib, ssl, sys, time
port, msgfile, deadline = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
rcpts = sys.argv[4].split(",")
expect = [(p.rsplit("=", 1)[0], int(p.rsplit("=", 1)[1])) for p in sys.argv[5:]]
def count(d):
    return sum(len(os.listdir(os.path.join(d, s))) for s in ("new", "cur") if os.path.isdir(os.path.join(d, s)))
before = {d: count(d) for d, _ in expect}
data = open(msgfile, "rb").read()
t0 = time.monotonic()
s = smtplib.SMTP("127.0.0.1", port, timeout=900)
s.ehlo("bench.test")
# Submission requires STARTTLS (provider.sh: certificates from the test CA).
s.starttls(context=ssl.create_default_context(cafile=os.environ["PECMAIL_CAFILE"]))
s.ehlo("bench.test")
s.user, s.password = "alice@pec.example.it", "test"
s.auth("PLAIN", s.auth_plain, initial_response_ok=True)
refused = s.sendmail("alice@pec.example.it", rcpts, data)
s.quit()
if refused:
    sys.exit(f"refused: {refused}")
t_sub = time.monotonic() - t0
end = t0 + deadline
while True:
    missing = [(d, n - (count(d) - before[d])) for d, n in expect if count(d) - before[d] < n]
    if not missing:
        break
    if time.monotonic() > end:
        sys.exit(f"deadline: still missing {missing}")
    time.sleep(0.05)
print(f"{t_sub:.3f} {time.monotonic() - t0:.3f}")
EOF
}

# hwm_kb: the VmHWM of each role's process, in kB, in the order of roles.
hwm_kb() {
  local p
  for p in "${role_pids[@]}"; do awk '/^VmHWM/ {printf "%s ", $2}' "/proc/$p/status"; done
}

# --- size -------------------------------------------------------------------------------
big=$work/big.eml
/usr/bin/python3 - "$big" "$size_mb" <<'EOF'
import base64, os, sys
path, mb = sys.argv[1], int(sys.argv[2])
target = mb * 1024 * 1024
raw = os.urandom(target * 3 // 4 - 4096)
with open(path, "wb") as f:
    f.write(b"From: alice@pec.example.it\r\nTo: bob@pec.example.it\r\nSubject: grande\r\n"
            b"Date: Mon, 23 Nov 2026 08:00:00 +0100\r\nMessage-ID: <big@bench.test>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
            b"--b\r\nContent-Type: text/plain\r\n\r\nallegato grande\r\n--b\r\n"
            b"Content-Type: application/octet-stream; name=\"big.bin\"\r\n"
            b"Content-Disposition: attachment; filename=\"big.bin\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n")
    enc = base64.b64encode(raw)
    for i in range(0, len(enc), 76):
        f.write(enc[i:i + 76] + b"\r\n")
    f.write(b"--b--\r\n")
EOF
bytes=$(stat -c %s "$big")
idle_hwm=$(hwm_kb)
e2e_log "size: one message of $bytes bytes"
read -r big_sub big_total < <(measure "$submission" "$big" 1800 bob@pec.example.it \
  "$mail/alice=2" "$mail/bob=1" "$mail/ricevute=1")
peak_hwm=$(hwm_kb)

# --- fan-out ----------------------------------------------------------------------------
small=$work/small.eml
fan_results=()
for n in "${fanout[@]}"; do
  rcpts=$(seq -f "u%g@pec.example.it" 1 "$n" | paste -sd,)
  to_header=$(seq -f "u%g@pec.example.it" 1 "$n" | paste -sd, | sed 's/,/,\r\n /g')
  {
    printf 'From: alice@pec.example.it\r\nTo: %s\r\nSubject: fan-out %s\r\n' "$to_header" "$n"
    printf 'Date: Mon, 23 Nov 2026 08:00:00 +0100\r\nMessage-ID: <fan%s@bench.test>\r\n\r\n' "$n"
    head -c 7500 /dev/zero | tr '\0' 'x' | fold -w 76 | sed 's/$/\r/'
  } > "$small"
  e2e_log "fan-out: $n recipients"
  read -r _ t < <(measure "$submission" "$small" 1800 "$rcpts" "$mail/alice=$((n + 1))" "$mail/ricevute=1")
  fan_results+=("$n=$t")
done

/usr/bin/python3 - "$bytes" "$idle_hwm" "$peak_hwm" "$big_sub" "$big_total" "$PEC_BIN" "${fan_results[@]}" <<'EOF'
import sys
size, sub, total, binary = int(sys.argv[1]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
idle = [int(x) for x in sys.argv[2].split()]
peak = [int(x) for x in sys.argv[3].split()]
fan = [(int(a), float(b)) for a, b in (x.split("=") for x in sys.argv[7:])]
mb = size / 1048576
print(f"binary: {binary}")
print(f"size: {mb:.1f} MB message: submitted in {sub:.1f} s, every receipt and delivery in {total:.1f} s")
print("  one pec serve per role, VmHWM (idle -> peak) and (peak - idle) / message size, target < 3:")
for role, i, p in zip(("access", "filter", "delivery"), idle, peak):
    print(f"  {role:9s} {i / 1024:7.1f} MB -> {p / 1024:7.1f} MB   {(p - i) * 1024 / size:.2f}   (peak / size {p * 1024 / size:.2f})")
print("fan-out (10 KB message; submission until acceptance, every delivery receipt and the presa in carico):")
for n, t in fan:
    print(f"  {n:4d} recipients: {t:7.2f} s")
for (n0, t0), (n1, t1) in zip(fan, fan[1:]):
    print(f"  per extra recipient {n0}->{n1}: {(t1 - t0) / (n1 - n0) * 1000:.1f} ms")
if len(fan) >= 3:
    (a, ta), (b, tb), (c, tc) = fan[0], fan[1], fan[2]
    r1, r2 = (tb - ta) / (b - a), (tc - tb) / (c - b)
    print(f"  ratio (per extra recipient {b}->{c}) / ({a}->{b}): {r2 / r1:.2f}   target: flat (about 1)")
EOF

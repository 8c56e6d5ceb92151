# shellcheck shell=bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Two providers for the load proofs (tests/e2e/proof.sh, tests/e2e/faults.sh) and the
# end-to-end benchmark (benches/pec_e2e.sh): A (pec.example.it) and B (pec.example.net),
# each with Postfix, Dovecot behind pec's LMTP proxy, clamd, SoftHSM2 and `pec serve`,
# routing each other's domain to the other's port 25. Source after lib.sh and provider.sh.
#
# proof_pair_up WORK     starts both (WORK/a, WORK/b; PKI in WORK/pki; PROOF_STORE_B: B's
#                        store path). Sets a_submission a_smtp a_imap a_lmtp a_clamd
#                        a_milter a_filter a_delivery, the same b_*, and the Maildirs
#                        alice_md (A's alice), bob_md (B's bob), ugo_md (A's ugo, a
#                        recipient of the sender's own provider), ricevute_a_md,
#                        ricevute_b_md.
# proof_rcpt_sets        pecmail.py load options for a mixed load: of every 5 messages, 3 to
#                        B's bob, one to A's ugo (same provider) and one to both (one local
#                        and one remote recipient).
# proof_pair_down WORK   stops both (and what proof_rem_up started).
# proof_rem_up WORK      (before proof_pair_up; source lib_rem.sh first) REM beside PEC on
#                        both providers (provider.sh PROVIDER_REM=1, mode auto): the test PKI,
#                        a dnsmasq on port 53 of a loopback address of its own giving the MX of
#                        both domains (pec serve's resolver: PROVIDER_RESOLV_CONF), a Trusted
#                        List signed by a test scheme operator (the outsider key) granting both
#                        providers' REM services (their PEC certificates; supply points
#                        smtp:mx.DOMAIN:25), served over HTTPS and fetched by pec serve at start.
#                        carla@pec.example.it (A) and dora@pec.example.net (B) get a sender
#                        identity, alice and bob none: alice → bob stays PEC, carla → dora goes
#                        REM. Sets carla_md and dora_md (their Maildirs) after proof_pair_up.
#                        Returns 2 when pec serve cannot have a resolv.conf of its own
#                        (provider_resolv_ok).
# proof_rem_consumed WORK
#                        how many peer REM receipts A's filter correlated and consumed (its
#                        log); proof_rem_consumed_at_least WORK N: whether N or more.
# proof_rem_audit WORK ACCEPTED [rem-check option...]
#                        tests/e2e/audit.py rem-check on carla's and dora's Maildirs and
#                        `pec evidence list` on both providers: every accepted REM transaction
#                        complete exactly once.
# proof_keys PKI [KEY]    re-issues both providers' PEC message keys (it, net) in PKI with KEY:
#                        rsa2048, rsa3072 or p256 (once per PKI); without KEY (PROOF_KEY
#                        empty) the make-pki.sh keys stay: A RSA-3072, B RSA-2048.
#                        proof_pair_up and proof_rem_up apply PROOF_KEY.
# proof_cpu_snapshot WORK OUT
#                        CPU seconds (user + system) of each daemon of the pair and all its
#                        processes, live and reaped, by role, as JSON in OUT.
# proof_cpu_report BEFORE AFTER SECONDS N
#                        prints the CPU between two snapshots: per daemon, share, per transaction.
# proof_maillog_mark WORK OUT
#                        the line counts of both Postfix logs now, in OUT (the start of a
#                        window for proof_queue_passes).
# proof_queue_passes WORK MARK N [pec|rem]
#                        Postfix queue passes per transaction since MARK, from both logs:
#                        distinct queue ids with a qmgr `from=` line, per instance, each by
#                        the way it entered (submission, port 25 from the other provider,
#                        pec's reinjection listener, pickup), divided by N.
# proof_floor WORK CPU0 CPU1 N OUT
#                        proof_floor_measure WORK OUT, then proof_floor_report ... pec.
# proof_floor_measure WORK OUT
#                        `pec capacity --json` on A's and B's configurations (their tokens
#                        and keys; BENCH_FLOOR_COUNT runs of each operation, default 200)
#                        into OUT.a.json and OUT.b.json.
# proof_floor_report CPU0 CPU1 N OUT pec|rem
#                        prints pec's CPU per transaction (pec-a + pec-b between the two
#                        proof_cpu_snapshot files), the floor per transaction (A's sender
#                        side + B's recipient side, from OUT.*.json) and their ratio
#                        (target <= 1.5).
# proof_perf_start WORK RUN / proof_perf_stop / proof_perf_show WORK RUN
#                        with BENCH_PERF=1: `perf record` (499 Hz) on both pec serve, then
#                        the top shared objects and symbols of each (perf report).
# proof_wait_settled WORK N DEADLINE [ACCEPTED]
#                        until alice holds 2N messages (acceptance + delivery receipt each)
#                        and bob N, and both Postfix queues are empty; with ACCEPTED (the
#                        load's --accepted file, recipients in its fourth column), until
#                        alice holds an acceptance and a receipt per recipient, bob and ugo
#                        an envelope per message to them, and A's receipt mailbox its own
#                        presa in carico per message with a recipient of A.
# proof_expected ACCEPTED
#                        from that file: "SENDER BOB UGO OWN REMOTE": the messages alice,
#                        bob, ugo and A's receipt mailbox must hold, and how many messages
#                        have a recipient of B (B's presa in carico, consumed by A).
# proof_consumed WORK    how many presa in carico A's filter consumed (its log);
#                        proof_consumed_at_least WORK N: whether N or more.
# proof_timers WORK HOURS
#                        `pec timers run --now <now + HOURS h>` on both providers: every
#                        recipient has its outcome, so each pass must send nothing, no PEC
#                        notice ("0 sent (12h: 0, 24h: 0), 0 failed") and no REM receipt (no
#                        RB22 or RD03 sent or failed); returns 1 otherwise (after the queues
#                        emptied, so that the audit finds the false notices too).
# proof_audit WORK ACCEPTED [VERIFY_SAMPLE [AUDIT_OPTION...]]
#                        exports both legal logs, runs tests/e2e/audit.py check (the spec §8
#                        invariants, mailboxes and logs), and `pec log verify` on both.

proof_pair_up() {
  local work=$1
  export PROVIDER_PKI=$work/pki PROVIDER_LMTP_PROXY=1
  mkdir -p "$work"
  sh "$E2E_REPO/tests/pki/make-pki.sh" "$PROVIDER_PKI" >/dev/null 2>&1
  proof_keys "$PROVIDER_PKI" "${PROOF_KEY:-}" || return 1
  PROVIDER_REM_IDENTITIES=carla@pec.example.it PROVIDER_REM_CSI_URL=${proof_rem_base:-}/csi-it.xml \
    provider_up "$work/a" pec.example.it it
  a_submission=$submission a_smtp=$smtp a_imap=$imap a_lmtp=$lmtp a_clamd=$clamd_port
  a_milter=$milter a_filter=$filter a_delivery=$delivery
  PROVIDER_REM_IDENTITIES=dora@pec.example.net PROVIDER_REM_CSI_URL=${proof_rem_base:-}/csi-net.xml \
    PROVIDER_STORE_PATH=${PROOF_STORE_B:-$work/b/pec.sqlite} provider_up "$work/b" pec.example.net net
  b_smtp=$smtp b_imap=$imap b_lmtp=$lmtp b_clamd=$clamd_port
  b_milter=$milter b_filter=$filter b_delivery=$delivery
  postfix_route "$work/a/postfix" pec.example.net "127.0.0.1:$b_smtp"
  postfix_route "$work/b/postfix" pec.example.it "127.0.0.1:$a_smtp"
  alice_md=$work/a/dovecot/mail/pec.example.it/alice
  bob_md=$work/b/dovecot/mail/pec.example.net/bob
  ugo_md=$work/a/dovecot/mail/pec.example.it/ugo
  ricevute_a_md=$work/a/dovecot/mail/pec.example.it/ricevute
  ricevute_b_md=$work/b/dovecot/mail/pec.example.net/ricevute
  carla_md=$work/a/dovecot/mail/pec.example.it/carla
  dora_md=$work/b/dovecot/mail/pec.example.net/dora
  if [ "${PROVIDER_REM:-0}" = 1 ] && [ -d "$work/rem/www" ]; then
    # Both REM services publish their CSI where their Trusted List entry points.
    SOFTHSM2_CONF=$work/a/hsm/softhsm2.conf PEC_E2E_PIN=1234 "${PEC_BIN:-$E2E_REPO/target/debug/pec}" \
      rem csi publish -c "$work/a/pec.toml" --out "$work/rem/www/csi-it.xml" >/dev/null ||
      { e2e_fail "pec rem csi publish on A"; return 1; }
    SOFTHSM2_CONF=$work/b/hsm/softhsm2.conf PEC_E2E_PIN=1234 "${PEC_BIN:-$E2E_REPO/target/debug/pec}" \
      rem csi publish -c "$work/b/pec.toml" --out "$work/rem/www/csi-net.xml" >/dev/null ||
      { e2e_fail "pec rem csi publish on B"; return 1; }
    # Until each pec serve has fetched and stored both CSIs, auto routes the peer as PEC;
    # once stored, a restarted pec serve loads them before serving.
    local p
    for p in a b; do
      e2e_poll 60 _proof_rem_view_ready "$work/$p/pec.log" ||
        { e2e_fail "$p: the peers' CSI not in its REM view (rem peers view updated ... rem_baseline=2)"; return 1; }
    done
  fi
}

proof_keys() {
  local pki=$1 key=${2:-} spec
  [ -n "$key" ] || return 0
  case $key in
    rsa2048) spec=rsa:2048 ;;
    rsa3072) spec=rsa:3072 ;;
    p256) spec=ec:P-256 ;;
    *) e2e_fail "proof_keys: unknown key \"$key\" (rsa2048, rsa3072 or p256)"; return 2 ;;
  esac
  [ -f "$pki/.keys-$key" ] && return 0
  sh "$E2E_REPO/tests/pki/issue-leaf.sh" "$pki" it "$spec" 20200101000000Z 20400101000000Z \
    pec.example.it "PEC Example IT S.p.A." 2>/dev/null || { e2e_fail "proof_keys: issue-leaf.sh it $spec"; return 1; }
  sh "$E2E_REPO/tests/pki/issue-leaf.sh" "$pki" net "$spec" 20200101000000Z 20400101000000Z \
    pec.example.net "PEC Example NET S.p.A." 2>/dev/null || { e2e_fail "proof_keys: issue-leaf.sh net $spec"; return 1; }
  touch "$pki/.keys-$key"
}

# Whether the last peers view pec serve logged in LOG holds both services with their CSI
# saying REM baseline.
_proof_rem_view_ready() {
  grep "rem peers view updated" "$1" | tail -n 1 | grep -q "granted=2 rem_baseline=2"
}

# shellcheck disable=SC2034 # used by the scripts
proof_rcpt_sets=(--rcpt-set bob@pec.example.net --rcpt-set ugo@pec.example.it
  --rcpt-set bob@pec.example.net --rcpt-set "bob@pec.example.net,ugo@pec.example.it"
  --rcpt-set bob@pec.example.net)

proof_pair_down() {
  provider_down "$1/a"
  provider_down "$1/b"
  if [ -d "$1/rem" ]; then
    https_files_stop "$1/rem/https" >/dev/null 2>&1 || true
    dns_stop "$1/rem/dns" >/dev/null 2>&1 || true
  fi
}

proof_rem_up() {
  local work=$1 p dns_addr
  declare -F rem_tl_write >/dev/null || { e2e_fail "proof_rem_up: source tests/e2e/lib_rem.sh first"; return 2; }
  provider_resolv_ok || { echo "proof_rem_up: unshare -m not permitted: pec serve cannot have the test resolver" >&2; return 2; }
  export PROVIDER_PKI=$work/pki
  mkdir -p "$work/rem/www"
  sh "$E2E_REPO/tests/pki/make-pki.sh" "$PROVIDER_PKI" >/dev/null 2>&1
  proof_keys "$PROVIDER_PKI" "${PROOF_KEY:-}" || return 1
  mapfile -t p < <(e2e_free_ports 1)
  dns_addr=127.53.$((p[0] / 256 % 256)).$((p[0] % 256))
  DNS_ADDR=$dns_addr dns_start "$work/rem/dns" 53 \
    "pec.example.it MX 10 mx.pec.example.it" "pec.example.net MX 10 mx.pec.example.net" \
    "mx.pec.example.it A 127.0.0.1" "mx.pec.example.net A 127.0.0.1" >/dev/null
  printf 'nameserver %s\noptions attempts:2 timeout:2\n' "$dns_addr" > "$work/rem/resolv.conf"
  proof_rem_base=https://127.0.0.1:$(https_files_start "$work/rem/https" "$work/rem/www" \
    "$PROVIDER_PKI/it-tls.pem" "$PROVIDER_PKI/it-tls.key")
  rem_tl_write "$work/rem/www/TL-IT.xml" "$PROVIDER_PKI/outsider.key" "$PROVIDER_PKI/outsider.pem" \
    "PEC Example IT S.p.A.|$PROVIDER_PKI/it.pem|smtp:mx.pec.example.it:25 $proof_rem_base/csi-it.xml" \
    "PEC Example NET S.p.A.|$PROVIDER_PKI/net.pem|smtp:mx.pec.example.net:25 $proof_rem_base/csi-net.xml"
  # The CSIs are published once both providers are up (proof_pair_up): pec serve refreshes
  # the list and the CSIs every 2 s (rem.mode = "auto" sends REM only to a peer whose CSI
  # says REM baseline), unless the caller chose another period.
  export PROVIDER_REM_TL_REFRESH=${PROVIDER_REM_TL_REFRESH:-2s}
  export PROVIDER_REM=1 PROVIDER_RESOLV_CONF=$work/rem/resolv.conf \
    PROVIDER_REM_TL_URL=$proof_rem_base/TL-IT.xml PROVIDER_REM_TL_SIGNER=$PROVIDER_PKI/outsider.pem
}

proof_rem_consumed() {
  sed 's/\x1b\[[0-9;]*m//g' "$1/a/pec.log" | grep -c "reception: rem receipt from .* correlated" || true
}

proof_rem_consumed_at_least() { [ "$(proof_rem_consumed "$1")" -ge "$2" ]; }

proof_rem_audit() {
  local work=$1 accepted=$2
  "$E2E_PYTHON" "$E2E_REPO/tests/e2e/audit.py" rem-check --accepted "$accepted" \
    --sender-maildir "$carla_md" --recipient-maildir "$dora_md" \
    --pec "${PEC_BIN:-$E2E_REPO/target/debug/pec}" \
    --config-a "$work/a/pec.toml" --config-b "$work/b/pec.toml" "${@:3}"
}

proof_cpu_snapshot() {
  local w=$1 p args=()
  for p in a b; do
    args+=("pec-$p=$(cat "$w/$p/pec.pid")" "postfix-$p=$(cat "$w/$p/postfix/spool/pid/master.pid")"
      "dovecot-$p=$(cat "$w/$p/dovecot/pid")" "clamd-$p=$(cat "$w/$p/clamd/pid")"
      "tsa-$p=$(cat "$w/$p/tsa/tsa.pid")")
  done
  [ -f "$w/rem/dns/pid" ] && args+=("dnsmasq=$(cat "$w/rem/dns/pid")")
  "$E2E_PYTHON" - "$2" "${args[@]}" <<'PY'
import json, os, sys
hz = os.sysconf("SC_CLK_TCK")
stat = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stat[int(d)] = (int(f[1]), int(f[11]) + int(f[12]), int(f[13]) + int(f[14]))
kids = {}
for pid, (ppid, _, _) in stat.items():
    kids.setdefault(ppid, []).append(pid)
out = {}
for arg in sys.argv[2:]:
    name, pid = arg.split("=")
    pid = int(pid.strip())
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        if p in stat:
            total += stat[p][1] + stat[p][2]
        todo += kids.get(p, [])
    out[name] = total / hz
json.dump(out, open(sys.argv[1], "w"))
PY
}

proof_cpu_report() {
  "$E2E_PYTHON" - "$@" <<'PY'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
t, n = float(sys.argv[3]), int(sys.argv[4])
d = {k: b[k] - a[k] for k in a}
tot = sum(d.values())
print(f"  cpu ({t:.1f} s wall, 2 cores = {2 * t:.1f} cpu-s available): {tot:.1f} cpu-s by these daemons, {1000 * tot / n:.1f} ms per transaction")
for k, v in sorted(d.items(), key=lambda x: -x[1]):
    print(f"    {k:10s} {v:7.1f} cpu-s  {100 * v / max(tot, 1e-9):5.1f} %  {1000 * v / n:6.2f} ms per transaction")
PY
}

_proof_maildir_count() {
  local n=0 d
  for d in "$@"; do
    n=$((n + $(find "$d/new" "$d/cur" -type f 2>/dev/null | wc -l)))
  done
  printf '%s' "$n"
}

proof_expected() {
  awk -F'\t' '{
    if (NF >= 4 && $4 != "") n = split($4, r, ","); else { n = 1; r[1] = "bob@pec.example.net" }
    sender += 1 + n; own_msg = 0; remote_msg = 0
    for (i = 1; i <= n; i++) {
      if (r[i] == "bob@pec.example.net") bob++
      if (r[i] == "ugo@pec.example.it") ugo++
      if (r[i] ~ /@pec\.example\.it$/) own_msg = 1; else remote_msg = 1
    }
    own += own_msg; remote += remote_msg
  } END { print sender + 0, bob + 0, ugo + 0, own + 0, remote + 0 }' "$1"
}

# _proof_settled WORK SENDER BOB UGO OWN: the mailboxes hold that many, the queues are empty.
_proof_settled() {
  local work=$1
  [ "$(_proof_maildir_count "$alice_md")" -ge "$2" ] || return 1
  [ "$(_proof_maildir_count "$bob_md")" -ge "$3" ] || return 1
  [ "$(_proof_maildir_count "$ugo_md")" -ge "$4" ] || return 1
  [ "$(_proof_maildir_count "$ricevute_a_md")" -ge "$5" ] || return 1
  _e2e_queue_empty "$work/a/postfix" && _e2e_queue_empty "$work/b/postfix"
}

proof_wait_settled() {
  local work=$1 n=$2 deadline=$3 accepted=${4:-} want
  want=($((2 * n)) "$n" 0 0)
  if [ -n "$accepted" ]; then read -r -a want < <(proof_expected "$accepted"); fi
  if ! e2e_poll "$deadline" _proof_settled "$work" "${want[@]:0:4}"; then
    e2e_log "after $deadline s: alice holds $(_proof_maildir_count "$alice_md") of ${want[0]}, bob $(_proof_maildir_count "$bob_md") of ${want[1]}, ugo $(_proof_maildir_count "$ugo_md") of ${want[2]}, A's receipt mailbox $(_proof_maildir_count "$ricevute_a_md") of ${want[3]}"
    postqueue -c "$work/a/postfix/etc" -p | tail -n 5 >&2 || true
    postqueue -c "$work/b/postfix/etc" -p | tail -n 5 >&2 || true
    e2e_fail "the load did not settle"
    return 1
  fi
}

proof_consumed() {
  sed 's/\x1b\[[0-9;]*m//g' "$1/a/pec.log" | grep -c "presa-in-carico received" || true
}

proof_consumed_at_least() { [ "$(proof_consumed "$1")" -ge "$2" ]; }

proof_timers() {
  local work=$1 hours=$2 p at out rc=0
  at=$(date -u -d "@$(( $(date -u +%s) + hours * 3600 ))" +%Y-%m-%dT%H:%M:%SZ)
  for p in a b; do
    out=$(SOFTHSM2_CONF=$work/$p/hsm/softhsm2.conf PEC_E2E_PIN=1234 \
      "${PEC_BIN:-$E2E_REPO/target/debug/pec}" timers run -c "$work/$p/pec.toml" --now "$at" 2>&1) || true
    printf '%s\n' "$out" >> "$work/$p/timers.out"
    e2e_log "$p: +$hours h: $(tail -n 1 <<<"$out")"
    # The PEC summary is the last line; the REM waits' summary, when any wait was due, a line
    # "rem waits at T: N sent (RB22: .., RD03: ..), M closed by our records, F failed"
    # (some builds folded the REM counts into the PEC line instead).
    if [[ $(tail -n 1 <<<"$out") != *": 0 sent (12h: 0, 24h: 0), 0 failed" &&
      $(tail -n 1 <<<"$out") != *": 0 sent (12h: 0, 24h: 0, rem RB22: 0, rem RD03: 0), 0 failed" ]] ||
      grep -qE '^rem waits at [^ ]+: ([1-9][0-9]* sent|.*, [1-9][0-9]* failed$)' <<<"$out"; then
      head -n 20 <<<"$out" >&2
      e2e_fail "$p: the timers at +$hours h sent notices for recipients that have an outcome"
      rc=1
    fi
  done
  if [ "$rc" -ne 0 ]; then
    postfix_wait_queue_empty "$work/a/postfix" 120 || true
    postfix_wait_queue_empty "$work/b/postfix" 120 || true
  fi
  return "$rc"
}

proof_audit() {
  local work=$1 accepted=$2 sample=${3:-50} p pec=${PEC_BIN:-$E2E_REPO/target/debug/pec} rc=0
  for p in a b; do
    "$pec" log export -c "$work/$p/pec.toml" --format json -o "$work/$p/legal.json" ||
      { e2e_fail "pec log export failed on $p"; return 1; }
  done
  "$E2E_PYTHON" "$E2E_REPO/tests/e2e/audit.py" check --accepted "$accepted" \
    --sender-maildir "$alice_md" --recipient-maildir "$bob_md" --recipient bob@pec.example.net \
    --sender alice@pec.example.it --mailbox "ugo@pec.example.it=$ugo_md" \
    --log-a "$work/a/legal.json" --log-b "$work/b/legal.json" \
    --own-receipts "$ricevute_a_md" --empty "$ricevute_b_md" \
    --pec "$pec" --trust "$work/pki/it.pem" --trust "$work/pki/net.pem" --verify-sample "$sample" \
    "${@:4}" || rc=1
  # The hash chain and every seal's signature must verify; a seal of a past day would be
  # reported "not time-stamped" only while its TSA is down (none is, here), and only that
  # is tolerated.
  for p in a b; do
    "$pec" log verify -c "$work/$p/pec.toml" --ca "$work/pki/ca.pem" > "$work/$p/log-verify.out" 2>&1 || true
    if grep -vE "^seal [0-9-]+: not time-stamped$|^[0-9]+ records, [0-9]+ seals checked: " "$work/$p/log-verify.out" | grep -q . ||
      ! grep -qE "^[0-9]+ records, " "$work/$p/log-verify.out"; then
      cat "$work/$p/log-verify.out" >&2
      e2e_fail "pec log verify failed on $p"
      rc=1
    else
      e2e_log "$p: pec log verify: $(tail -n 1 "$work/$p/log-verify.out")"
    fi
  done
  return "$rc"
}

proof_maillog_mark() {
  local p
  for p in a b; do
    printf '%s %s\n' "$p" "$(wc -l < "$1/$p/postfix/maillog" 2>/dev/null || echo 0)"
  done > "$2"
}

proof_queue_passes() {
  local work=$1 mark=$2 n=$3 kind=${4:-pec}
  "$E2E_PYTHON" - "$work" "$mark" "$n" "$kind" <<'PY'
import re, sys
work, mark, n, kind = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
start = dict(l.split() for l in open(mark))
line = re.compile(r" postfix-[^/\s]+(?:/([^/\s\[]+))?/(smtpd|qmgr|pickup)\[\d+\]: ([0-9A-Za-z]+): (.*)$")
names = {"submission": "submission (alice's client)", "smtpd": "port 25 (from the other provider)",
         "reinject": "pec's reinjection listener", "pickup": "pickup (local submission)"}
explain = {
    "a": "A: alice's submission (the milter wraps it in the envelope); the envelope reinjected by "
         "A's after-queue filter towards B; the acceptance receipt to alice; B's presa in carico "
         "and delivery receipt arriving on port 25; the delivery receipt reinjected by A's filter "
         "towards alice's mailbox (the presa in carico is consumed by the filter: no further pass)",
    "b": "B: the envelope arriving on port 25; the envelope reinjected by B's filter (reception "
         "point) towards the delivery point; the presa in carico and the delivery receipt to A",
}
if kind == "rem":
    explain = {
        "a": "A: carla's submission (the milter makes the dispatch); the dispatch reinjected by A's "
             "filter towards B; the SubmissionAcceptance receipt to carla; B's RelayAcceptance and "
             "ContentConsignment arriving on port 25; the ContentConsignment reinjected by A's filter "
             "towards carla's mailbox (the RelayAcceptance is consumed by the filter)",
        "b": "B: the dispatch arriving on port 25; the dispatch reinjected by B's filter towards the "
             "delivery point; the RelayAcceptance and the ContentConsignment to A",
    }
total = 0.0
for p in ("a", "b"):
    entered, queued = {}, set()
    try:
        lines = open(f"{work}/{p}/postfix/maillog", errors="replace").read().splitlines()[int(start.get(p, 0)):]
    except OSError:
        lines = []
    for l in lines:
        m = line.search(l)
        if not m:
            continue
        svc, prog, qid, rest = m.groups()
        if prog == "smtpd" and rest.startswith("client="):
            entered[qid] = svc or "smtpd"
        elif prog == "pickup" and "from=<" in rest:
            entered[qid] = "pickup"
        elif prog == "qmgr" and rest.startswith("from=<"):
            queued.add(qid)
    by = {}
    for q in queued:
        k = entered.get(q, "other")
        by[k] = by.get(k, 0) + 1
    total += len(queued) / n
    parts = ", ".join(f"{names.get(k, k)} {v / n:.2f}" for k, v in sorted(by.items(), key=lambda x: -x[1]))
    print(f"  postfix-{p}: {len(queued)} queue files, {len(queued) / n:.2f} per transaction ({parts})")
    print(f"    {explain[p]}")
print(f"  Postfix queue passes per transaction, A + B: {total:.2f}")
PY
}

proof_floor() {
  proof_floor_measure "$1" "$5" && proof_floor_report "$2" "$3" "$4" "$5" pec
}

proof_floor_measure() {
  local work=$1 out=$2 p
  for p in a b; do
    SOFTHSM2_CONF=$work/$p/hsm/softhsm2.conf PEC_E2E_PIN=1234 "${PEC_BIN:-$E2E_REPO/target/debug/pec}" \
      capacity -c "$work/$p/pec.toml" --count "${BENCH_FLOOR_COUNT:-200}" --json > "$out.$p.json" ||
      { e2e_fail "pec capacity on $p"; return 1; }
  done
}

proof_floor_report() {
  "$E2E_PYTHON" - "$@" <<'PY'
import json, sys
c0, c1 = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
n, out, kind = int(sys.argv[3]), sys.argv[4], sys.argv[5]
fa, fb = json.load(open(out + ".a.json")), json.load(open(out + ".b.json"))
what = {"pec": "PEC", "rem": "REM"}[kind]
if fa[kind] is None or fb[kind] is None:
    print(f"{what} floor: not measured ([rem] not enabled on both providers)")
    sys.exit(0)
pec = {p: 1000 * (c1[f"pec-{p}"] - c0[f"pec-{p}"]) / n for p in ("a", "b")}
print(f"pec's CPU per {what} transaction against its cryptographic floor (pec capacity, {fa['count']} runs of each operation, same keys and tokens, after the run):")
for name, f, side in (("A", fa, "sender"), ("B", fb, "recipient")):
    print(f"  {name}: key {f['key']} ({f['backend']}, {f['digest']}), verification: {f['verification']}")
    for o in f[kind]["operations"]:
        if o["side"] == side:
            print(f"    {o['role']:<22} {o['name']:<42} {o['bytes']:>7} bytes {o['cpu_ms']:8.3f} ms cpu {o['wall_ms']:8.3f} ms wall")
    if kind == "rem":
        ts = f["rem"]["time_stamp"]
        print(f"    (of each XAdES-B-T signature, the time stamp request: {ts['cpu_ms']:.3f} ms cpu here, {ts['wall_ms']:.3f} ms wall)")
sa, rb = fa[kind]["sender"]["cpu_ms"], fb[kind]["recipient"]["cpu_ms"]
floor = sa + rb
tot = pec["a"] + pec["b"]
print(f"  floor per transaction: A's sender side {sa:.2f} ms + B's recipient side {rb:.2f} ms = {floor:.2f} ms "
      f"({fa[kind]['sender']['signatures'] + fb[kind]['recipient']['signatures']} signatures, "
      f"{fa[kind]['sender']['verifications'] + fb[kind]['recipient']['verifications']} verifications)")
print(f"  pec CPU per transaction: pec-a {pec['a']:.2f} ms + pec-b {pec['b']:.2f} ms = {tot:.2f} ms")
print(f"  ratio pec CPU / floor: {tot / floor if floor else float('nan'):.2f}  (target <= 1.5)")
print(f"  pec beyond the floor: {tot - floor:.2f} ms per transaction")
if kind == "rem" and "tsa-a" in c0:
    tsa = sum(1000 * (c1[k] - c0[k]) / n for k in ("tsa-a", "tsa-b"))
    print(f"  the test TSAs (their own processes, not in pec's CPU nor in the floor): {tsa:.2f} ms per transaction")
for name, f in (("A", fa), ("B", fb)):
    p = f[kind]
    print(f"  {name}'s own ceiling, the cryptography alone, per core: {p['sender']['transactions_per_second_per_core']:.0f} {what} tx/s as sender, "
          f"{p['recipient']['transactions_per_second_per_core']:.0f} as recipient, {p['transaction']['transactions_per_second_per_core']:.0f} as both")
PY
}

proof_perf_pids=()
proof_perf_start() {
  [ "${BENCH_PERF:-0}" = 1 ] || return 0
  local p
  proof_perf_pids=()
  for p in a b; do
    perf record -F 499 -g -o "$1/perf-$2-$p.data" -p "$(cat "$1/$p/pec.pid")" >/dev/null 2>&1 &
    proof_perf_pids+=($!)
  done
}

proof_perf_stop() {
  local pid
  for pid in "${proof_perf_pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  proof_perf_pids=()
}

proof_perf_show() {
  [ "${BENCH_PERF:-0}" = 1 ] || return 0
  local p
  for p in a b; do
    echo "perf, $2 run, pec serve $p: shared objects, then symbols (self)"
    perf report -i "$1/perf-$2-$p.data" --no-children --sort dso -g none --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -n 10 || true
    perf report -i "$1/perf-$2-$p.data" --no-children --sort dso,sym -g none --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -n 30 || true
  done
}

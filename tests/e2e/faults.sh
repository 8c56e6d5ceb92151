#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, faults under load: while FAULTS_N PEC transactions (default 400) go from A's
# alice to B's bob, to A's ugo (same provider) or to both (of every five, three to bob, one
# to ugo, one to both: proof_rcpt_sets) (tests/e2e/proof_lib.sh: two providers, B's store on
# a small tmpfs, the index from a real slapd refreshed every second), paced at FAULTS_RATE per
# second (default 5) over 20 connections that retry temporary refusals as a mail client does:
#
#   1. `kill -9` of `pec serve` FAULTS_KILLS times (default 20), A and B in turn, each after a
#      random number (1..6) of further deliveries, restarting it at once;
#   2. B's Dovecot stopped until B's delivery point has answered Postfix 4xx for it;
#   3. B's clamd stopped until B's reception point has failed to scan;
#   4. slapd stopped until both providers' index refresh has failed;
#   5. A's HSM key gone (its object file moved out of the SoftHSM2 token) until signing has
#      failed; then the file is put back and `pec serve` restarted (SoftHSM2 reads its token
#      directory at initialisation only);
#   6. B's store disk full (the tmpfs filled) until a store write has failed; then freed.
#      With PEC_E2E_STORE=pg (both stores in PostgreSQL, each its own server) B's
#      PostgreSQL server is stopped instead until a store operation has failed, then
#      started again: the database server going away is what a shared store meets.
#   7. after the audit, A's TSA down for a while (issue 19): today is sealed (with the clock
#      a day ahead, faketime) while the TSA answers 503: the seal is made without its stamp
#      and `pec log seal` exits 1 saying so; `pec status` (two days ahead) fails on the day
#      without its stamp; once the TSA is back `pec log stamp` (or pec serve's retry) adds
#      the stamp, once, and `pec log verify` passes over the stamped seal: nothing lost.
#   8. (run first, while the load certainly runs) the CRL server down (both providers check the chain and revocation: [verify] anchors
#      = the test CA, whose leaves name a CRL on a local HTTP server) until both have failed
#      to refresh the CRL; the cached CRL still answers, so every envelope stays valid PEC
#      (no anomaly envelope: the audit below), then the server comes back.
#
# Each fault waits (with a deadline) for its trace in the logs, so every one is shown to have
# hit the mail path. Afterwards, once the queues are empty, the clock is moved past 12 h and
# past 24 h (`pec timers run --now <now + 13 h>`, `<now + 25 h>` on each provider): no pass
# may send a notice, every recipient having its outcome. Then every accepted submission is
# complete — alice holds its acceptance and a delivery receipt per recipient, each recipient
# its envelope, the legal logs exactly one BustaTrasporto, one Accettazione, and per
# recipient one PresaInCarico and one Consegna (tests/e2e/audit.py), at most one final
# outcome per recipient in each log and no timer notice after one — no receipt exists for a
# message never accepted, every message in the mailboxes verifies (pec verify), and `pec log
# verify` passes on both providers.
# Nothing may be there twice, whatever instant a kill -9 hits: no receipt issued twice (the
# outbox stages every generated message with its event before injecting it, and a restart
# re-injects the same bytes), no message stored twice in a mailbox (the delivery point
# records each delivery and asks the mailbox with doveadm after an unrecorded one), no
# BustaTrasporto record for a submission Postfix never queued (it is logged after queue,
# with the acceptance). See src/store/outbox.rs. FAULTS_KNOWN=1 runs the audit with
# --known-crash-effects (those effects reported as KNOWN instead of failing), to compare.
#
# REM (issue 20), after all that: both providers speak REM beside PEC from the start
# (proof_lib.sh proof_rem_up: a Trusted List over HTTPS granting both, a dnsmasq for the
# REM routing check; alice has no sender identity, so everything above is PEC), and
#   9. FAULTS_REM_N REM transactions (default 60) from A's carla (a sender identity) to
#      B's dora at FAULTS_REM_RATE per second (default 3) over 10 connections retrying
#      temporary refusals, while `pec serve` is killed (-9) FAULTS_REM_KILLS times (default
#      6), A and B in turn, each after a random number (1..40) of further deliveries (three
#      per transaction: spread over the load), and restarted at once. Then everything arrives and every evidence is there exactly once
#      (tests/e2e/audit.py rem-check): per accepted submission one dispatch in dora's
#      Maildir, one SubmissionAcceptance and one ContentConsignment in carla's, no
#      REM-Evidence-ID or Message-ID twice in a mailbox, and `pec evidence list` on each
#      provider naming each evidence of the dispatch once (A: SubmissionAcceptance issued,
#      RelayAcceptance and ContentConsignment received; B the converse), once the queues
#      are empty (A consumed every receipt from B); past 24 h (`pec timers run --now` +25 h) no
#      RelayFailure RB22 nor ContentConsignmentFailure RD03 is due.
#      Without unshare -m, dnsmasq or xmlsec1 the REM part says SKIPPED (and why) and the
#      PEC part runs alone. FAULTS_REM=0 leaves it out; FAULTS_REM_NO_CONSIGNMENT=1 expects
#      no ContentConsignment (a build whose delivery point does not issue it), loudly.
#
# Usage: tests/e2e/faults.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"
# shellcheck source=tests/e2e/lib_rem.sh
. "$here/lib_rem.sh"
# shellcheck source=tests/e2e/proof_lib.sh
. "$here/proof_lib.sh"

export PEC_BIN=${PEC_BIN:-$root/target/debug/pec}
[ -x "$PEC_BIN" ] || { echo "faults: $PEC_BIN not built (cargo build)" >&2; exit 2; }
n=${FAULTS_N:-400}
rate=${FAULTS_RATE:-5}
kills=${FAULTS_KILLS:-20}
rem_n=${FAULTS_REM_N:-60}
rem_rate=${FAULTS_REM_RATE:-3}
rem_kills=${FAULTS_REM_KILLS:-6}
rem_skip=""
if [ "${FAULTS_REM:-1}" = 0 ]; then rem_skip="FAULTS_REM=0"
elif ! command -v dnsmasq >/dev/null; then rem_skip="dnsmasq missing (scripts/install-deps.sh)"
elif ! command -v xmlsec1 >/dev/null; then rem_skip="xmlsec1 missing (scripts/install-deps.sh)"
elif ! provider_resolv_ok; then rem_skip="unshare -m not permitted (pec serve cannot have the test resolver)"
fi

work=$(e2e_tmpdir)
load_pid=""
cleanup() {
  status=$?
  if [ -n "$load_pid" ] && kill -0 "$load_pid" 2>/dev/null; then
    kill "$load_pid" 2>/dev/null || true
    wait "$load_pid" 2>/dev/null || true
  fi
  proof_pair_down "$work"
  [ -f "$work/crl-http.pid" ] && { crl_down >/dev/null 2>&1 || true; }
  slapd_stop "$work/ldap" >/dev/null 2>&1 || true
  if [ -d "$work/bstore" ] && mountpoint -q "$work/bstore"; then umount "$work/bstore" || true; fi
  if [ "$status" -ne 0 ]; then
    for p in a b; do
      echo "---- $p: pec log" >&2; e2e_plain "$work/$p/pec.log" 2>/dev/null | grep -E "WARN|ERROR" | tail -n 20 >&2 || true
    done
    echo "faults: FAIL (work dir kept: $work)" >&2
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT

# lines of FILE (after the first SKIP lines) matching REGEX
count_since() { # FILE SKIP REGEX
  tail -n +"$(($2 + 1))" "$1" | sed 's/\x1b\[[0-9;]*m//g' | grep -cE "$3" || true
}
lines() { wc -l < "$1"; }
seen_since() { [ "$(count_since "$1" "$2" "$3")" -gt 0 ]; }

# The CRL of the test CA on a local HTTP server; both providers verify the chain and
# revocation, refetching the CRL at most every second (refresh_before longer than its life).
mapfile -t crl_port < <(e2e_free_ports 1)
export PKI_CRL_URL="http://127.0.0.1:${crl_port[0]}/crl.der"
crl_up() {
  "$E2E_PYTHON" -m http.server --bind 127.0.0.1 --directory "$work/pki" "${crl_port[0]}" \
    >> "$work/crl-http.log" 2>&1 &
  echo $! > "$work/crl-http.pid"
  wait_for_port 127.0.0.1 "${crl_port[0]}" 30
}
crl_down() { _e2e_stop_pid "crl http server" "$(cat "$work/crl-http.pid")"; }
export PROVIDER_VERIFY_EXTRA="[verify]
anchors = [\"$work/pki/ca.pem\"]
crl_cache = \"$work/crl-cache\"
fetch_timeout = \"2s\"
retry_after = \"1s\"
refresh_before = \"3650d\"
ocsp = false"

# The index in a real slapd, refreshed every second.
export PROVIDER_PKI=$work/pki
sh "$root/tests/pki/make-pki.sh" "$PROVIDER_PKI" >/dev/null 2>&1
crl_up
mapfile -t ldap_port < <(e2e_free_ports 1)
slapd_start "$work/ldap" "${ldap_port[0]}"
{
  provider_index_entry "PEC Example IT S.p.A." "$PROVIDER_PKI/it.pem" ricevute@pec.example.it pec.example.it
  provider_index_entry "PEC Example NET S.p.A." "$PROVIDER_PKI/net.pem" ricevute@pec.example.net pec.example.net
} > "$work/providers.ldif"
ldapadd -x -H "ldap://127.0.0.1:${ldap_port[0]}" -D cn=admin,o=postacert -w secret \
  -f "$work/providers.ldif" >/dev/null
export PROVIDER_LDAP_URL="ldap://127.0.0.1:${ldap_port[0]}" PROVIDER_INDEX_EXTRA='refresh = "1s"'
if [ -z "$rem_skip" ]; then
  proof_rem_up "$work" || e2e_fail "REM setup failed"
else
  echo "faults: SKIPPED: the REM load (part 9): $rem_skip" >&2
fi
if [ "${PEC_E2E_STORE:-sqlite}" = pg ]; then
  # shellcheck source=tests/e2e/lib_pg.sh
  . "$here/lib_pg.sh"
  proof_pair_up "$work"
else
  # B's store on a small file system of its own, to fill.
  mkdir -p "$work/bstore"
  mount -t tmpfs -o size=64m tmpfs "$work/bstore"
  PROOF_STORE_B=$work/bstore/pec.sqlite proof_pair_up "$work"
fi

# `pec serve` of provider P (a or b) again, as provider_up starts it, its log appended.
pec_start() { # P
  local p=$1 pid ns=()
  if [ -n "${PROVIDER_RESOLV_CONF:-}" ]; then
    # As provider_up: pec's own /etc/resolv.conf (the REM MX check), `exec` keeps the pid.
    # shellcheck disable=SC2016 # expanded by that sh
    ns=(unshare -m sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$PROVIDER_RESOLV_CONF")
  fi
  SOFTHSM2_CONF=$work/$p/hsm/softhsm2.conf PEC_E2E_PIN=1234 PEC_LOG=info \
    "${ns[@]}" "$PEC_BIN" serve -c "$work/$p/pec.toml" 2>> "$work/$p/pec.log" &
  pid=$!
  echo "$pid" > "$work/$p/pec.pid"
  local m f d
  if [ "$p" = a ]; then m=$a_milter f=$a_filter d=$a_delivery; else m=$b_milter f=$b_filter d=$b_delivery; fi
  wait_for_port 127.0.0.1 "$m" 30 && wait_for_port 127.0.0.1 "$f" 30 && wait_for_port 127.0.0.1 "$d" 30
}
pec_kill9() { # P
  local pid
  pid=$(cat "$work/$1/pec.pid")
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
}
pec_stop() { # P
  _e2e_stop_pid "pec serve" "$(cat "$work/$1/pec.pid")"
}
delivered() { _proof_maildir_count "$alice_md" "$bob_md"; }
delivered_beyond() { [ "$(delivered)" -ge "$1" ]; }

e2e_log "load: $n transactions at $rate/s, concurrency 20, retrying temporary refusals"
"$E2E_PYTHON" "$here/pecmail.py" load --port "$a_submission" --user alice@pec.example.it \
  --from alice@pec.example.it "${proof_rcpt_sets[@]}" --count "$n" --concurrency 20 \
  --size 4096 --rate "$rate" --retry --deadline 900 --maildir "$alice_md" --expect 0 \
  --accepted "$work/accepted" --tag faults > "$work/load.out" 2> "$work/load.err" &
load_pid=$!

e2e_log "7. CRL server down (first, while the load certainly runs)"
crl_cached() { compgen -G "$work/crl-cache/*.crl" > /dev/null; }
e2e_poll 60 crl_cached || e2e_fail "no CRL fetched"
skip_a=$(lines "$work/a/pec.log") skip_b=$(lines "$work/b/pec.log")
crl_down
e2e_poll 120 seen_since "$work/a/pec.log" "$skip_a" "revocation: cannot refresh the crl" ||
  e2e_fail "CRL server down: A did not notice"
e2e_poll 120 seen_since "$work/b/pec.log" "$skip_b" "revocation: cannot refresh the crl" ||
  e2e_fail "CRL server down: B did not notice"
crl_up
[ "$(count_since "$work/a/pec.log" 0 "revocation status unknown")" -eq 0 ] &&
  [ "$(count_since "$work/b/pec.log" 0 "revocation status unknown")" -eq 0 ] ||
  e2e_fail "CRL server down: a status was unknown although the cached CRL was current"

e2e_log "1. kill -9 of pec serve, $kills times"
for i in $(seq 1 "$kills"); do
  p=$([ $((i % 2)) -eq 1 ] && echo a || echo b)
  target=$(($(delivered) + 1 + RANDOM % 6))
  e2e_poll 120 delivered_beyond "$target" || e2e_fail "no progress before kill $i"
  pec_kill9 "$p"
  pec_start "$p"
done
e2e_log "killed and restarted $kills times"

e2e_log "2. B's Dovecot down"
skip=$(lines "$work/b/postfix/maillog")
dovecot_stop "$work/b/dovecot"
e2e_poll 120 seen_since "$work/b/postfix/maillog" "$skip" "relay=127\.0\.0\.1\[127\.0\.0\.1\]:$b_delivery.*status=deferred.*4\.[0-9]\.[0-9]" ||
  e2e_fail "Dovecot down: no deferral by B's delivery point"
dovecot_start "$work/b/dovecot" "$b_lmtp" "$b_imap"

e2e_log "3. B's clamd down"
skip=$(lines "$work/b/pec.log")
clamd_stop "$work/b/clamd"
e2e_poll 120 seen_since "$work/b/pec.log" "$skip" "scan failed" || e2e_fail "clamd down: no scan failure in B's log"
clamd_start "$work/b/clamd" "$b_clamd"

e2e_log "4. slapd down"
skip_a=$(lines "$work/a/pec.log") skip_b=$(lines "$work/b/pec.log")
slapd_stop "$work/ldap"
e2e_poll 60 seen_since "$work/a/pec.log" "$skip_a" "provider index: sync failed" || e2e_fail "slapd down: A did not notice"
e2e_poll 60 seen_since "$work/b/pec.log" "$skip_b" "provider index: sync failed" || e2e_fail "slapd down: B did not notice"
slapd -f "$work/ldap/slapd.conf" -h "ldap://127.0.0.1:${ldap_port[0]}/" -u openldap -g openldap -d 0 \
  < /dev/null >> "$work/ldap/slapd.log" 2>&1 &
echo $! > "$work/ldap/pid"
e2e_poll 30 _e2e_slapd_ready "$(cat "$work/ldap/pid")" "${ldap_port[0]}" || e2e_fail "slapd did not come back"

e2e_log "5. A's HSM key unavailable"
token=$(dirname "$(ls "$work"/a/hsm/tokens/*/token.object)")
mkdir -p "$work/hsm-off"
skip=$(lines "$work/a/pec.log")
for f in "$token"/*.object; do
  [ "$(basename "$f")" = token.object ] || mv "$f" "$work/hsm-off/"
done
e2e_poll 120 seen_since "$work/a/pec.log" "$skip" "signing: pkcs#11" || e2e_fail "HSM away: no signing failure in A's log"
mv "$work"/hsm-off/*.object "$token/"
pec_stop a
pec_start a

if [ "${PEC_E2E_STORE:-sqlite}" = pg ]; then
  e2e_log "6. B's PostgreSQL down"
  skip=$(lines "$work/b/pec.log")
  pg_stop "$work/b/pg"
  e2e_poll 120 seen_since "$work/b/pec.log" "$skip" "store: .*(connect|connection|closed|terminat)" ||
    e2e_fail "PostgreSQL down: no store failure in B's log"
  pg_restart "$work/b/pg"
else
  e2e_log "6. B's store disk full"
  skip=$(lines "$work/b/pec.log")
  dd if=/dev/zero of="$work/bstore/fill" bs=64k 2>/dev/null || true
  e2e_poll 120 seen_since "$work/b/pec.log" "$skip" "full" || e2e_fail "disk full: no store failure in B's log"
  rm -f "$work/bstore/fill"
fi

e2e_log "faults done; waiting for the load to finish"
wait "$load_pid" || { cat "$work/load.err" >&2; load_pid=""; e2e_fail "the load failed"; }
load_pid=""
cat "$work/load.out" >&2
accepted=$(wc -l < "$work/accepted")
[ "$accepted" -eq "$n" ] || e2e_fail "$accepted of $n submissions accepted"
proof_wait_settled "$work" "$n" 300 "$work/accepted"
read -r _ _ _ _ remote < <(proof_expected "$work/accepted")
e2e_poll 60 proof_consumed_at_least "$work" "$remote" ||
  e2e_fail "A consumed $(proof_consumed "$work") presa in carico, expected $remote"

e2e_log "timers: past 12 h and past 24 h, nothing may be due"
timers_ok=1
proof_timers "$work" 13 || timers_ok=0
proof_timers "$work" 25 || timers_ok=0

e2e_log "audit: nothing lost, nothing false, nothing twice"
# Strict: a copy stored twice, a receipt issued twice or a record for a message never
# queued fails the test.
known=()
[ "${FAULTS_KNOWN:-0}" = 1 ] && known=(--known-crash-effects)
proof_audit "$work" "$work/accepted" -1 "${known[@]}" | tee "$work/audit.out" >&2
[ "${PIPESTATUS[0]}" -eq 0 ] || e2e_fail "audit failed"
[ "$timers_ok" -eq 1 ] || e2e_fail "the timers sent notices for recipients that have an outcome"
e2e_log "7. A's TSA down for a while"
today=$(TZ=Europe/Rome date +%F)
echo down > "$work/a/tsa/mode"
a_pec() { SOFTHSM2_CONF=$work/a/hsm/softhsm2.conf PEC_E2E_PIN=1234 "$@" -c "$work/a/pec.toml"; }
rc=0
out=$(a_pec faketime -f "+26h" "$PEC_BIN" log seal --day "$today" 2>&1) || rc=$?
e2e_log "   $out"
if [ "$rc" -ne 1 ] || ! grep -q "^sealed $today: .*NOT time-stamped yet (.*503" <<<"$out"; then
  e2e_fail "seal with the TSA down: exit $rc, expected 1 and the seal made without its stamp"
fi
rc=0
out=$(a_pec faketime -f "+50h" "$PEC_BIN" status 2>&1) || rc=$?
if [ "$rc" -ne 1 ] || ! grep -q "^legal log time stamps: FAILED: days sealed without a time stamp .*$today" <<<"$out"; then
  echo "$out" >&2; e2e_fail "pec status does not fail on the day without its stamp (exit $rc)"
fi
rm -f "$work/a/tsa/mode"
out=$(a_pec "$PEC_BIN" log stamp 2>&1) || { echo "$out" >&2; e2e_fail "pec log stamp with the TSA back"; }
e2e_log "   $(tr '\n' ' ' <<<"$out")"
grep -qE "^(stamped $today|$today: already stamped by another process)$" <<<"$out" \
  || e2e_fail "pec log stamp did not stamp $today: $out"
out=$(a_pec "$PEC_BIN" log stamp 2>&1) || e2e_fail "a second pec log stamp failed: $out"
grep -q "^0 seals without a time stamp" <<<"$out" || e2e_fail "a second pec log stamp found seals to stamp: $out"
out=$(a_pec "$PEC_BIN" log verify --ca "$work/pki/ca.pem" 2>&1) || true
if grep -q "^seal $today: " <<<"$out" || ! grep -qE "seals checked" <<<"$out"; then
  echo "$out" >&2; e2e_fail "pec log verify on A after the stamp"
fi
out=$(a_pec faketime -f "+50h" "$PEC_BIN" status 2>&1) || true
grep -q "^legal log time stamps: ok" <<<"$out" || { echo "$out" >&2; e2e_fail "pec status after the stamp"; }

if [ -z "$rem_skip" ]; then
  e2e_log "9. REM: $rem_n transactions carla → dora at $rem_rate/s, kill -9 of pec serve $rem_kills times"
  rem_cc=2 rem_opts=()
  if [ "${FAULTS_REM_NO_CONSIGNMENT:-0}" = 1 ]; then
    rem_cc=1 rem_opts=(--no-consignment)
    echo "faults: REM part WITHOUT ContentConsignment (FAULTS_REM_NO_CONSIGNMENT=1)" >&2
  fi
  rem_delivered() { _proof_maildir_count "$carla_md" "$dora_md"; }
  rem_delivered_beyond() { [ "$(rem_delivered)" -ge "$1" ]; }
  "$E2E_PYTHON" "$here/pecmail.py" load --port "$a_submission" --user carla@pec.example.it \
    --from carla@pec.example.it --to dora@pec.example.net --count "$rem_n" --concurrency 10 \
    --size 4096 --rate "$rem_rate" --retry --deadline 600 --maildir "$carla_md" --expect 0 \
    --accepted "$work/accepted-rem" --tag remfaults > "$work/load-rem.out" 2> "$work/load-rem.err" &
  load_pid=$!
  # Each kill after 1 to span more deliveries, span such that every target stays below
  # what the whole load delivers ((rem_cc + 1) per transaction): a target past the end of
  # the load would wait for deliveries that never come.
  rem_span=$(((rem_cc + 1) * rem_n / (rem_kills + 1)))
  for i in $(seq 1 "$rem_kills"); do
    p=$([ $((i % 2)) -eq 1 ] && echo a || echo b)
    target=$(($(rem_delivered) + 1 + RANDOM % rem_span))
    e2e_poll 120 rem_delivered_beyond "$target" || e2e_fail "REM: no progress before kill $i"
    pec_kill9 "$p"
    pec_start "$p"
  done
  e2e_log "REM: killed and restarted $rem_kills times; waiting for the load to finish"
  wait "$load_pid" || { cat "$work/load-rem.err" >&2; load_pid=""; e2e_fail "the REM load failed"; }
  load_pid=""
  cat "$work/load-rem.out" >&2
  accepted=$(wc -l < "$work/accepted-rem")
  [ "$accepted" -eq "$rem_n" ] || e2e_fail "REM: $accepted of $rem_n submissions accepted"
  e2e_poll 300 rem_delivered_beyond $(((rem_cc + 1) * rem_n)) ||
    e2e_fail "REM: carla holds $(_proof_maildir_count "$carla_md"), dora $(_proof_maildir_count "$dora_md") after 300 s"
  postfix_wait_queue_empty "$work/a/postfix" 120 || e2e_fail "A's queue did not empty"
  postfix_wait_queue_empty "$work/b/postfix" 120 || e2e_fail "B's queue did not empty"
  # Past relay_wait and consignment_wait (24 h): every wait was closed by its evidence, so
  # no RelayFailure RB22 and no ContentConsignmentFailure RD03 is due.
  rem_timers_ok=1
  proof_timers "$work" 25 || rem_timers_ok=0
  proof_rem_audit "$work" "$work/accepted-rem" "${rem_opts[@]}" | tee "$work/rem-audit.out" >&2
  [ "${PIPESTATUS[0]}" -eq 0 ] || e2e_fail "REM audit failed"
  [ "$rem_timers_ok" -eq 1 ] || e2e_fail "the timers sent REM receipts for dispatches that have their outcome"
fi

for p in a b; do
  e2e_log "$p: $(e2e_plain "$work/$p/pec.log" | grep -c "pec serving") starts, $(e2e_plain "$work/$p/pec.log" | grep -cE " (WARN|ERROR) ") warnings and errors"
done
if [ -n "$rem_skip" ]; then echo "faults: PASS (REM part SKIPPED: $rem_skip)"; else echo "faults: PASS"; fi

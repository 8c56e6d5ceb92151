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
# proof_pair_down WORK   stops both.
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
#                        recipient has its outcome, so each pass must send nothing ("0 sent
#                        (12h: 0, 24h: 0), 0 failed"); returns 1 otherwise (after the queues
#                        emptied, so that the audit finds the false notices too).
# proof_audit WORK ACCEPTED [VERIFY_SAMPLE [AUDIT_OPTION...]]
#                        exports both legal logs, runs tests/e2e/audit.py check (the spec §8
#                        invariants, mailboxes and logs), and `pec log verify` on both.

proof_pair_up() {
  local work=$1
  export PROVIDER_PKI=$work/pki PROVIDER_LMTP_PROXY=1
  mkdir -p "$work"
  sh "$E2E_REPO/tests/pki/make-pki.sh" "$PROVIDER_PKI" >/dev/null 2>&1
  provider_up "$work/a" pec.example.it it
  a_submission=$submission a_smtp=$smtp a_imap=$imap a_lmtp=$lmtp a_clamd=$clamd_port
  a_milter=$milter a_filter=$filter a_delivery=$delivery
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
}

# shellcheck disable=SC2034 # used by the scripts
proof_rcpt_sets=(--rcpt-set bob@pec.example.net --rcpt-set ugo@pec.example.it
  --rcpt-set bob@pec.example.net --rcpt-set "bob@pec.example.net,ugo@pec.example.it"
  --rcpt-set bob@pec.example.net)

proof_pair_down() {
  provider_down "$1/a"
  provider_down "$1/b"
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
    if [[ $(tail -n 1 <<<"$out") != *": 0 sent (12h: 0, 24h: 0), 0 failed" ]]; then
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

# shellcheck shell=bash
# Two providers for the load proofs (tests/e2e/proof.sh, tests/e2e/faults.sh) and the
# end-to-end benchmark (benches/pec_e2e.sh): A (pec.example.it) and B (pec.example.net),
# each with Postfix, Dovecot behind pec's LMTP proxy, clamd, SoftHSM2 and `pec serve`,
# routing each other's domain to the other's port 25. Source after lib.sh and provider.sh.
#
# proof_pair_up WORK     starts both (WORK/a, WORK/b; PKI in WORK/pki; PROOF_STORE_B: B's
#                        store path). Sets a_submission a_smtp a_imap a_lmtp a_clamd
#                        a_milter a_filter a_delivery, the same b_*, and the Maildirs
#                        alice_md (A's alice), bob_md (B's bob), ricevute_a_md,
#                        ricevute_b_md.
# proof_pair_down WORK   stops both.
# proof_wait_settled WORK N DEADLINE
#                        until alice holds 2N messages (acceptance + delivery receipt each)
#                        and bob N, and both Postfix queues are empty.
# proof_consumed WORK    how many presa in carico A's filter consumed (its log);
#                        proof_consumed_at_least WORK N: whether N or more.
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
  ricevute_a_md=$work/a/dovecot/mail/pec.example.it/ricevute
  ricevute_b_md=$work/b/dovecot/mail/pec.example.net/ricevute
}

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

_proof_settled() {
  local work=$1 n=$2
  [ "$(_proof_maildir_count "$alice_md")" -ge $((2 * n)) ] || return 1
  [ "$(_proof_maildir_count "$bob_md")" -ge "$n" ] || return 1
  _e2e_queue_empty "$work/a/postfix" && _e2e_queue_empty "$work/b/postfix"
}

proof_wait_settled() {
  local work=$1 n=$2 deadline=$3
  if ! e2e_poll "$deadline" _proof_settled "$work" "$n"; then
    e2e_log "after $deadline s: alice holds $(_proof_maildir_count "$alice_md") of $((2 * n)), bob $(_proof_maildir_count "$bob_md") of $n"
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

proof_audit() {
  local work=$1 accepted=$2 sample=${3:-50} p pec=${PEC_BIN:-$E2E_REPO/target/debug/pec} rc=0
  for p in a b; do
    "$pec" log export -c "$work/$p/pec.toml" --format json -o "$work/$p/legal.json" ||
      { e2e_fail "pec log export failed on $p"; return 1; }
  done
  "$E2E_PYTHON" "$E2E_REPO/tests/e2e/audit.py" check --accepted "$accepted" \
    --sender-maildir "$alice_md" --recipient-maildir "$bob_md" --recipient bob@pec.example.net \
    --log-a "$work/a/legal.json" --log-b "$work/b/legal.json" \
    --empty "$ricevute_a_md" --empty "$ricevute_b_md" \
    --pec "$pec" --trust "$work/pki/it.pem" --trust "$work/pki/net.pem" --verify-sample "$sample" \
    "${@:4}" || rc=1
  # The hash chain and every seal's signature must verify; the test providers have no TSA,
  # so their seals of the (empty) past days are reported "not time-stamped", and only that
  # is tolerated.
  for p in a b; do
    "$pec" log verify -c "$work/$p/pec.toml" --ca "$work/pki/ca.pem" > "$work/$p/log-verify.out" 2>&1 || true
    if grep -vE "^seal [0-9-]+: not time-stamped$|^[0-9]+ records, [0-9]+ seals checked: " "$work/$p/log-verify.out" | grep -q . ||
      ! grep -qE "^[0-9]+ records, " "$work/$p/log-verify.out"; then
      cat "$work/$p/log-verify.out" >&2
      e2e_fail "pec log verify failed on $p"
      rc=1
    else
      e2e_log "$p: pec log verify: $(tail -n 1 "$work/$p/log-verify.out") (all of them: no time stamp, no TSA here)"
    fi
  done
  return "$rc"
}

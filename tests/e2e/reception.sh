#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, the reception point between two providers on one machine: A (pec.example.it,
# key it.pem) and B (pec.example.net, key net.pem), each with its own Postfix, Dovecot,
# clamd, SoftHSM2 token, store and `pec serve`, the same index listing both; each routes the
# other's domain to the other's port-25 listener. A's clamd lacks the PEC-TEST-VIRUS-MARKER
# signature (an antivirus that misses a virus), B's has it.
#
# Checks:
#   1. A's alice → B's bob: bob holds the transport envelope; B's presa in carico goes to
#      ricevute@pec.example.it and is consumed by A (A's log: tracking moved), never
#      delivered to a mailbox;
#   2. ordinary mail from the "Internet" straight to B's port 25 → bob gets a signed
#      anomaly envelope (X-Trasporto: errore) carrying it;
#   3. alice sends the virus marker to bob: A misses it, B detects it in the envelope →
#      rilevazione virus to A's mailReceipt (consumed) → A gives alice the signed mancata
#      consegna per virus; bob gets nothing;
#   4. load: N envelopes (RECEPTION_LOAD_N, default 200) A → B; every one reaches bob, and
#      every message B's Postfix handed to B's filter is accounted for in B's log;
#   5. same provider: A's alice → A's ugo: ugo holds the envelope, A's own presa in carico
#      lands in A's ricevute mailbox and A's tracking row moved when it was issued.
#   Kept, not only logged (issue 21.5):
#   1b. the presa in carico A consumed is kept signed beside its record: `pec log receipts
#       --export` writes it byte-exact, and openssl smime -verify accepts it; the SASL login
#       of alice's submission is in its BustaTrasporto record;
#   3b. B took the infected envelope in charge too (spec §5.2) and A consumed that presa in
#       carico; `pec quarantine list|show|export` on B gives the envelope back byte-exact
#       (A's signature still verifies);
#   6. EICAR (real clamd) submitted to A: refused, quarantined, `pec quarantine export`
#      gives the message with the EICAR string;
#   7. A's pec serve runs the retention purge every log.purge_interval (2 s here): a
#      quarantined message older than 30 months, planted in the store, goes, and the purge
#      is in the legal log (polled with a deadline).
#
# Usage: tests/e2e/reception.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"

provider_script reception a b
load_n=${RECEPTION_LOAD_N:-200}
on_exit() {
  slapd_stop "$work/ldap"
}

t_start=${EPOCHREALTIME}
export PROVIDER_PKI=$work/pki
# The providers learn each other through a real slapd holding the national index (spec §7).
sh "$root/tests/pki/make-pki.sh" "$PROVIDER_PKI" >/dev/null 2>&1
mapfile -t ldap_port < <(e2e_free_ports 1)
slapd_start "$work/ldap" "${ldap_port[0]}"
{
  provider_index_entry "PEC Example IT S.p.A." "$PROVIDER_PKI/it.pem" ricevute@pec.example.it pec.example.it
  provider_index_entry "PEC Example NET S.p.A." "$PROVIDER_PKI/net.pem" ricevute@pec.example.net pec.example.net
} > "$work/providers.ldif"
ldapadd -x -H "ldap://127.0.0.1:${ldap_port[0]}" -D cn=admin,o=postacert -w secret \
  -f "$work/providers.ldif" >/dev/null
export PROVIDER_LDAP_URL="ldap://127.0.0.1:${ldap_port[0]}"
PROVIDER_LOG_EXTRA='purge_interval = "2s"' PROVIDER_CLAMD_NO_MARKER=1 provider_up "$work/a" pec.example.it it
a_submission=$submission a_smtp=$smtp a_imap=$imap
provider_up "$work/b" pec.example.net net
b_smtp=$smtp b_imap=$imap b_filter=$filter
postfix_route "$work/a/postfix" pec.example.net "127.0.0.1:$b_smtp"
postfix_route "$work/b/postfix" pec.example.it "127.0.0.1:$a_smtp"
t_up=${EPOCHREALTIME}

fetch() { e2e_fetch "$@"; } # IMAP_PORT USER COUNT DIR
count() { e2e_count "$@"; } # IMAP_PORT USER
verify() { e2e_verify "$1" "$3" "$2"; } # FILE TRUST_PEM KIND
msg() { # FILE SUBJECT BODY
  printf 'From: alice@pec.example.it\r\nTo: bob@pec.example.net\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s-%s@client.example.it>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n%s\r\n' \
    "$2" "$(date -R)" "$2" "$$" "$3" > "$1"
}
send_a() { # FILE
  "${mail[@]}" send --port "$a_submission" --user alice@pec.example.it --password test \
    --from alice@pec.example.it --to bob@pec.example.net "$1"
}
log_has() { # FILE REGEX
  # Not grep -q: stopping early would end `plain` with SIGPIPE, a failure under pipefail.
  e2e_plain "$1" | grep -E "$2" > /dev/null
}
log_count() { # FILE REGEX
  e2e_plain "$1" | grep -cE "$2" || true
}

e2e_log "1. A's alice → B's bob: envelope delivered, presa in carico consumed by A"
msg "$work/uno.eml" uno "Buongiorno Bob."
send_a "$work/uno.eml"
fetch "$b_imap" bob@pec.example.net 1 "$work/bob"
fetch "$a_imap" alice@pec.example.it 1 "$work/alice"
verify "$work/bob/$(ls "$work/bob" | head -n1)" "$work/pki/it.pem" "transport envelope"
e2e_poll 60 log_has "$work/a/pec.log" "presa-in-carico received.*tracking_updated=1" \
  || e2e_fail "A did not consume B's presa in carico"
log_has "$work/b/pec.log" "transport envelope taken in charge" || e2e_fail "B's log: no presa in carico"

e2e_log "1b. the consumed presa in carico is kept signed; the SASL login is in the record"
pec_at() { # a|b COMMAND…: a pec command on that provider's store
  local who=$1; shift
  "$pec" "$@" -c "$work/$who/pec.toml"
}
uno_id=$(pec_at a log search --kind Ricezione | awk 'NR == 1 { print $5 }')
[ -n "$uno_id" ] || e2e_fail "A logged no Ricezione record"
pec_at a log receipts --pec-id "$uno_id" --export "$work/kept" > "$work/kept.out"
grep -q " presa-in-carico " "$work/kept.out" || e2e_fail "pec log receipts: $(cat "$work/kept.out")"
kept=$(ls "$work"/kept/*.eml | head -n1)
grep -q "^X-Ricevuta: presa-in-carico" "$kept" || e2e_fail "$kept is not a presa in carico"
openssl smime -verify -in "$kept" -CAfile "$work/pki/ca.pem" -purpose any -out /dev/null 2>/dev/null \
  || e2e_fail "openssl smime -verify refused the kept presa in carico"
verify "$kept" "$work/pki/net.pem" "receipt: presa-in-carico"
pec_at a log search --pec-id "$uno_id" --kind BustaTrasporto --format csv > "$work/uno.csv"
grep -q "login SASL: alice@pec.example.it" "$work/uno.csv" \
  || e2e_fail "the transport envelope's record has no SASL login: $(cat "$work/uno.csv")"

e2e_log "2. ordinary mail from the Internet to B's port 25: anomaly envelope"
printf 'From: someone@example.org\r\nTo: bob@pec.example.net\r\nSubject: ordinaria\r\nDate: %s\r\nMessage-ID: <ordinaria-%s@example.org>\r\nX-Ricevuta: avvenuta-consegna\r\n\r\nPosta ordinaria.\r\n' \
  "$(date -R)" "$$" > "$work/ordinaria.eml"
"${mail[@]}" send --port "$b_smtp" --from someone@example.org --to bob@pec.example.net "$work/ordinaria.eml"
fetch "$b_imap" bob@pec.example.net 2 "$work/bob2"
anomaly=$(grep -l "^X-Trasporto: errore" "$work"/bob2/* | head -n1 || true)
[ -n "$anomaly" ] || e2e_fail "bob has no anomaly envelope"
grep -q "Posta ordinaria." "$anomaly" || e2e_fail "the anomaly envelope does not carry the original"
openssl smime -verify -in "$anomaly" -CAfile "$work/pki/ca.pem" -purpose any -out /dev/null 2>/dev/null \
  || e2e_fail "openssl smime -verify refused the anomaly envelope"

e2e_log "3. virus missed by A, found by B: rilevazione virus → mancata consegna per virus"
msg "$work/virus.eml" virus "Allegato: PEC-TEST-VIRUS-MARKER"
send_a "$work/virus.eml"
# alice: acceptance 1 + acceptance 2 + the mancata consegna per virus.
fetch "$a_imap" alice@pec.example.it 3 "$work/alice3"
nd=$(grep -l "^X-VerificaSicurezza: errore" "$work"/alice3/* | head -n1 || true)
[ -n "$nd" ] || e2e_fail "alice has no mancata consegna per virus"
grep -q "^X-Ricevuta: errore-consegna" "$nd" || e2e_fail "$nd is not errore-consegna"
verify "$nd" "$work/pki/it.pem" "receipt: errore-consegna"
log_has "$work/b/pec.log" "quarantined" || e2e_fail "B did not quarantine the envelope"

e2e_log "3b. B took the infected envelope in charge; its quarantine exports it byte-exact"
e2e_poll 60 eval '[ "$(log_count "$work/a/pec.log" "presa-in-carico received.*tracking_updated=1")" -eq 2 ]' \
  || e2e_fail "A did not consume B's presa in carico for the infected envelope"
pec_at b quarantine list > "$work/quarantine-b.txt"
[ "$(wc -l < "$work/quarantine-b.txt")" -eq 1 ] || e2e_fail "B's quarantine: $(cat "$work/quarantine-b.txt")"
qid=$(awk '{ print $1 }' "$work/quarantine-b.txt")
pec_at b quarantine show "$qid" > "$work/quarantine-show.txt"
grep -q "^X-Trasporto: posta-certificata" "$work/quarantine-show.txt" \
  || e2e_fail "pec quarantine show: $(cat "$work/quarantine-show.txt")"
pec_at b quarantine export "$qid" -o "$work/quarantined.eml"
grep -q "PEC-TEST-VIRUS-MARKER" "$work/quarantined.eml" || e2e_fail "the export has no virus marker"
openssl smime -verify -in "$work/quarantined.eml" -CAfile "$work/pki/ca.pem" -purpose any -out /dev/null 2>/dev/null \
  || e2e_fail "A's signature does not verify over the exported envelope: not byte-exact"
if pec_at b quarantine export 999999 -o "$work/none.eml" 2> "$work/none.err"; then
  e2e_fail "pec quarantine export of an unknown id succeeded"
fi
grep -q "no quarantined message 999999" "$work/none.err" || e2e_fail "unknown id: $(cat "$work/none.err")"

e2e_log "4. load: $load_n envelopes A → B"
t_load=${EPOCHREALTIME}
"${mail[@]}" load --port "$a_submission" --user alice@pec.example.it --from alice@pec.example.it \
  --to bob@pec.example.net --count "$load_n" --concurrency 10 --size 2048 \
  --maildir "$work/b/dovecot/mail/pec.example.net/bob" --expect $((load_n + 2)) --deadline 600 \
  > "$work/load.out"
t_load_done=${EPOCHREALTIME}
postfix_wait_queue_empty "$work/a/postfix" 120
postfix_wait_queue_empty "$work/b/postfix" 120
# Every message B's Postfix handed to the filter was answered: 250 (reinjected or consumed)
# or refused; none is left in a queue and none was lost.
to_filter=$(log_count "$work/b/postfix/maillog" "relay=127\.0\.0\.1\[127\.0\.0\.1\]:$b_filter.*status=sent")
bounced=$(log_count "$work/b/postfix/maillog" "relay=127\.0\.0\.1\[127\.0\.0\.1\]:$b_filter.*status=bounced")
handled=$(log_count "$work/b/pec.log" "reception: (TakenInCharge|Virus|Receipt|NotPec|AlreadyTakenInCharge) \{|after queue: passed through")
taken=$(log_count "$work/b/pec.log" "transport envelope taken in charge")
consumed=$(log_count "$work/a/pec.log" "presa-in-carico received.*tracking_updated=1")
bob_total=$(count "$b_imap" bob@pec.example.net)
e2e_log "B: $to_filter to the filter (+$bounced refused), $handled handled, $taken taken in charge; A consumed $consumed; bob holds $bob_total"
[ "$to_filter" -eq "$handled" ] || e2e_fail "B's filter: $to_filter in, $handled handled"
[ "$bounced" -eq 0 ] || e2e_fail "B's filter refused $bounced messages"
[ "$taken" -eq $((load_n + 1)) ] || e2e_fail "B took $taken envelopes in charge, expected $((load_n + 1))"
# + 1: the presa in carico of the infected envelope (3b).
[ "$consumed" -eq $((load_n + 2)) ] || e2e_fail "A consumed $consumed presa in carico, expected $((load_n + 2))"
[ "$bob_total" -eq $((load_n + 2)) ] || e2e_fail "bob holds $bob_total, expected $((load_n + 2))"

e2e_log "service mailboxes and stray messages"
[ "$(count "$a_imap" ricevute@pec.example.it)" -eq 0 ] || e2e_fail "a receipt reached A's ricevute mailbox"
[ "$(count "$b_imap" ricevute@pec.example.net)" -eq 0 ] || e2e_fail "a receipt reached B's ricevute mailbox"
[ "$(count "$a_imap" alice@pec.example.it)" -eq $((load_n + 3)) ] \
  || e2e_fail "alice holds $(count "$a_imap" alice@pec.example.it), expected $((load_n + 3))"

e2e_log "5. same provider: alice → ugo@pec.example.it, full flow on A"
printf 'From: alice@pec.example.it\r\nTo: ugo@pec.example.it\r\nSubject: interna\r\nDate: %s\r\nMessage-ID: <interna-%s@client.example.it>\r\n\r\nCiao Ugo.\r\n' \
  "$(date -R)" "$$" > "$work/interna.eml"
"${mail[@]}" send --port "$a_submission" --user alice@pec.example.it --password test \
  --from alice@pec.example.it --to ugo@pec.example.it "$work/interna.eml"
fetch "$a_imap" ugo@pec.example.it 1 "$work/ugo"
verify "$work/ugo/$(ls "$work/ugo" | head -n1)" "$work/pki/it.pem" "transport envelope"
# Our own presa in carico goes to our mailReceipt on the no-filter port: it lands in the
# service mailbox, and the tracking row moved when it was issued (in the same store
# transaction that stages it: tests/roles/reception.rs checks the row itself).
fetch "$a_imap" ricevute@pec.example.it 1 "$work/ricevute-a"
verify "$work/ricevute-a/$(ls "$work/ricevute-a" | head -n1)" "$work/pki/it.pem" "receipt: presa-in-carico"
log_has "$work/a/pec.log" "same provider: our presa in carico recorded directly" \
  || e2e_fail "A did not record its own presa in carico"

e2e_log "6. EICAR (real clamd) at A's access point: refused, quarantined, exported"
# The EICAR file as an attachment (clamd decodes MIME and matches the decoded part).
eicar64=$(e2e_eicar | base64 -w0)
printf 'From: alice@pec.example.it\r\nTo: bob@pec.example.net\r\nSubject: eicar\r\nDate: %s\r\nMessage-ID: <eicar-%s@client.example.it>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nIn allegato.\r\n--b\r\nContent-Type: application/octet-stream; name="eicar.com"\r\nContent-Disposition: attachment; filename="eicar.com"\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n--b--\r\n' \
  "$(date -R)" "$$" "$eicar64" > "$work/eicar.eml"
send_a "$work/eicar.eml" > /dev/null
# A's quarantine held nothing before (its clamd misses the marker of step 3).
e2e_poll 60 eval 'pec_at a quarantine list | grep -q .' || e2e_fail "A did not quarantine the EICAR submission"
pec_at a quarantine list > "$work/quarantine-a.txt"
[ "$(wc -l < "$work/quarantine-a.txt")" -eq 1 ] || e2e_fail "A's quarantine: $(cat "$work/quarantine-a.txt")"
eid=$(awk '{ print $1 }' "$work/quarantine-a.txt")
pec_at a quarantine export "$eid" > "$work/eicar-out.eml"
grep -qF "$eicar64" "$work/eicar-out.eml" || e2e_fail "the exported message lacks the EICAR attachment"
grep -q "^Subject: eicar" "$work/eicar-out.eml" || e2e_fail "the exported message is not the submission"
# Its records carry alice's SASL login.
eicar_id=$(awk '{ print $3 }' "$work/quarantine-a.txt")
pec_at a log search --pec-id "$eicar_id" --kind Quarantena --format csv | grep -q "login SASL: alice@pec.example.it" \
  || e2e_fail "the quarantine record has no SASL login"

e2e_log "7. the retention purge runs from pec serve (log.purge_interval = 2s)"
if [ "${PROVIDER_STORE:-${PEC_E2E_STORE:-sqlite}}" = sqlite ]; then
  # A message quarantined 31 months ago (the quarantine is not chained: a plain row).
  old=$(( $(date +%s) - 31 * 31 * 86400 ))
  sqlite3 "$work/a/pec.sqlite" "INSERT INTO quarantine (pec_id, at, reason, message, expires_at)
    VALUES ('opec.old@pec.example.it', $old, 'Old-Virus', X'696e666574746f', $old + 1)"
  e2e_poll 60 eval '! pec_at a quarantine list --pec-id opec.old@pec.example.it | grep -q .' \
    || e2e_fail "pec serve did not purge the old quarantined message"
  e2e_poll 30 eval 'pec_at a log search --kind Cancellazione | grep -q .' \
    || e2e_fail "the purge is not in the legal log"
  pec_at a quarantine list | grep -q "^$eid " || e2e_fail "the purge deleted a recent quarantined message"
  pec_at a log verify > /dev/null || e2e_fail "the chain does not verify after the purge"
else
  e2e_log "SKIPPED 7 on PostgreSQL: the old row is planted with sqlite3 (tests/store/kept.rs covers both backends)"
fi

t_end=${EPOCHREALTIME}
awk -v s="$t_start" -v u="$t_up" -v l="$t_load" -v d="$t_load_done" -v e="$t_end" -v n="$load_n" \
  'BEGIN { printf "reception: timings: setup %.1f s, scenarios %.1f s, load %d in %.1f s (%.1f/s), total %.1f s\n", u-s, l-u, n, d-l, n/(d-l), e-s }'
echo "reception: PASS"

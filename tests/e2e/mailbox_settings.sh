#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, the per-mailbox settings and the provider-wide suspension (issue 21), with
# real parts: Postfix (submission with SASL, the pec milter, the after-queue filter),
# Dovecot behind pec's LMTP proxy, clamd, SoftHSM2 and `pec serve`; the settings are set
# with the pec commands while it runs (every transaction reads them from the store).
#
# Checks: a mailbox set to breve gets a breve delivery receipt for a message sent without
# X-TipoRicevuta; over its daily quota the next message gets a signed non-acceptance; a
# suspended mailbox cannot send (non-acceptance) nor receive (the sender gets a signed
# non-delivery notice "5.2.1 … casella disattivata"); while the provider is suspended a
# submission is refused with 451 4.3.2 and the reason, and after `pec resume` it goes
# through; `pec stats agid` for today counts the acceptances and lists the outage; ordinary
# mail for a mailbox with policy `discard` is dropped and logged, with `folder` it lands in
# that IMAP folder unchanged (Dovecot's lmtp_save_to_detail_mailbox).
#
# Usage: tests/e2e/mailbox_settings.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"

provider_script mailbox_settings .

# The `folder` policy's delivery to user+NAME@domain, as dovecot/20-pec-lmtp.conf sets it.
DOVECOT_EXTRA=$(grep -E '^(recipient_delimiter|lmtp_save_to_detail_mailbox|lda_mailbox_autocreate) ' \
  "$here/../../dovecot/20-pec-lmtp.conf") PROVIDER_LMTP_PROXY=1 provider_up "$work"
cfg=(-c "$work/pec.toml")
run_pec() { SOFTHSM2_CONF=$conf "$pec" "$@"; }

fetch() { e2e_fetch "$imap" "$@"; } # USER COUNT DIR
kind_of() { "$pec" verify --trust "$work/pki/it.pem" "$1" | sed -n 's/^kind: //p'; }
# why FILE: the daticert errore-esteso of FILE (the text is quoted-printable in the body).
why() { "$pec" verify --trust "$work/pki/it.pem" "$1" | sed -n 's/^ *errore-esteso: //p'; }
msg() { # FILE FROM TO
  printf 'From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s-%s@client.example.it>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nBuongiorno.\r\n' \
    "$2" "$3" "$(basename "$1" .eml)" "$(date -R)" "$(basename "$1" .eml)" "$$" > "$1"
}
send() { # USER FILE TO [pecmail options]
  local user=$1 f=$2 to=$3
  shift 3
  e2e_send "$submission" "$user" "$f" --to "$to" "$@"
}
# has KIND_PREFIX DIR: one message of DIR is of that kind.
has() {
  local f
  for f in "$2"/*; do
    [[ $(kind_of "$f") == "$1"* ]] && { echo "$f"; return 0; }
  done
  return 1
}

e2e_log "1. alice's default receipt type is breve: a breve delivery receipt without X-TipoRicevuta"
grep -q "receipt-type: breve" <<<"$(run_pec mailbox set "${cfg[@]}" alice@pec.example.it --receipt-type breve)" \
  || e2e_fail "pec mailbox set did not report the receipt type"
msg "$work/uno.eml" alice@pec.example.it bob@pec.example.it
send alice@pec.example.it "$work/uno.eml" bob@pec.example.it >/dev/null
fetch bob@pec.example.it 1 "$work/bob"
fetch alice@pec.example.it 2 "$work/alice1"
has "receipt: accettazione" "$work/alice1" >/dev/null || e2e_fail "alice: no acceptance"
has "receipt: avvenuta-consegna (breve)" "$work/alice1" >/dev/null \
  || e2e_fail "alice: the delivery receipt is not breve"

e2e_log "2. daily quota 1: the second message of the day gets a non-acceptance"
run_pec mailbox set "${cfg[@]}" alice@pec.example.it --daily-quota 1 >/dev/null
msg "$work/due.eml" alice@pec.example.it bob@pec.example.it
send alice@pec.example.it "$work/due.eml" bob@pec.example.it >/dev/null
fetch alice@pec.example.it 3 "$work/alice2"
f=$(e2e_newest "$work/alice2")
[[ $(kind_of "$f") == "receipt: non-accettazione"* ]] || e2e_fail "over quota: not a non-acceptance"
[ "$(why "$f")" = "superato il limite di 1 messaggi nelle 24 ore per la casella" ] || e2e_fail "over quota: the notice does not say why"
run_pec mailbox set "${cfg[@]}" alice@pec.example.it --daily-quota default >/dev/null

e2e_log "3. dave suspended: cannot send (non-acceptance), cannot receive (5.2.1 non-delivery)"
grep -q "dave@pec.example.it: suspended" <<<"$(run_pec mailbox state "${cfg[@]}" dave@pec.example.it suspended)" \
  || e2e_fail "pec mailbox state did not report the state"
grep -q "^state: suspended" <<<"$(run_pec mailbox show "${cfg[@]}" dave@pec.example.it)" \
  || e2e_fail "pec mailbox show does not show the state"
msg "$work/da-dave.eml" dave@pec.example.it bob@pec.example.it
send dave@pec.example.it "$work/da-dave.eml" bob@pec.example.it >/dev/null
# The notice reaches dave all the same: receipts still reach a suspended mailbox.
fetch dave@pec.example.it 1 "$work/dave"
f=$(e2e_newest "$work/dave")
[[ $(kind_of "$f") == "receipt: non-accettazione"* ]] || e2e_fail "suspended sender: not a non-acceptance"
[ "$(why "$f")" = "casella sospesa: l'invio non e' consentito" ] || e2e_fail "suspended sender: the notice does not say why"
msg "$work/a-dave.eml" alice@pec.example.it dave@pec.example.it
send alice@pec.example.it "$work/a-dave.eml" dave@pec.example.it >/dev/null
fetch alice@pec.example.it 5 "$work/alice3"
f=$(has "receipt: errore-consegna" "$work/alice3") || e2e_fail "alice: no non-delivery notice for dave"
[ "$(why "$f")" = "5.2.1 - PEC Example IT S.p.A. - casella disattivata" ] || e2e_fail "non-delivery: not casella disattivata"
postfix_wait_queue_empty "$work/postfix" 60
[ "$(e2e_count "$imap" dave@pec.example.it)" -eq 1 ] || e2e_fail "dave received the envelope"
[ "$(e2e_count "$imap" bob@pec.example.it)" -eq 1 ] || e2e_fail "bob received a refused message"

e2e_log "4. provider suspended: submissions tempfail with the reason; resumed: accepted"
run_pec suspend "${cfg[@]}" --reason "manutenzione straordinaria" --kind incident >/dev/null
msg "$work/tre.eml" alice@pec.example.it bob@pec.example.it
out=$(send alice@pec.example.it "$work/tre.eml" bob@pec.example.it --expect-reject)
grep -q "451.*4.3.2.*servizio temporaneamente sospeso (manutenzione straordinaria)" <<<"$out" \
  || e2e_fail "suspended provider: unexpected answer: $out"
grep -q "service resumed" <<<"$(run_pec resume "${cfg[@]}")" || e2e_fail "pec resume failed"
send alice@pec.example.it "$work/tre.eml" bob@pec.example.it >/dev/null
fetch bob@pec.example.it 2 "$work/bob2"
postfix_wait_queue_empty "$work/postfix" 60

e2e_log "5. pec stats agid for today"
today=$(TZ=Europe/Rome date +%F)
tomorrow=$(TZ=Europe/Rome date -d tomorrow +%F)
run_pec stats agid "${cfg[@]}" --from "$today" --to "$tomorrow" > "$work/agid.csv"
cat "$work/agid.csv" >&2
# One domain; 3 acceptances (uno, a-dave, tre: the refused ones are not messages out); a
# presa in carico for each envelope taken in charge; no virus.
sed -n 1p "$work/agid.csv" | grep -q "^periodo_da,periodo_a,domini,caselle,messaggi_inviati,messaggi_ricevuti"   || e2e_fail "agid: unexpected header"
IFS=, read -r _ _ domains mailboxes out in vin vout _ sla < <(sed -n 2p "$work/agid.csv" | tr -d '\r')
[ "$domains" = 1 ] && [ "$out" = 3 ] && [ "$vin" = 0 ] && [ "$vout" = 0 ] && [ "$mailboxes" -ge 1 ] \
  && [ "$in" -le 3 ] && [ "$sla" = si ] || e2e_fail "agid: unexpected counts"
sed -n 5p "$work/agid.csv" | grep -q ",incidente,[0-9]*,si,\"manutenzione straordinaria\"" \
  || e2e_fail "agid: the outage is not listed"

e2e_log "6. ordinary mail: discard for erin (logged), folder Posta-ordinaria for frank"
grep -q "erin@pec.example.it: discard" <<<"$(run_pec mailbox policy "${cfg[@]}" erin@pec.example.it discard)" \
  || e2e_fail "pec mailbox policy discard"
run_pec mailbox policy "${cfg[@]}" frank@pec.example.it folder --folder Posta-ordinaria >/dev/null
printf 'From: someone@example.org\r\nTo: erin@pec.example.it, frank@pec.example.it\r\nSubject: ordinaria\r\nDate: %s\r\nMessage-ID: <ord-%s@example.org>\r\n\r\nPosta ordinaria.\r\n' \
  "$(date -R)" "$$" > "$work/ordinary.eml"
"${mail[@]}" send --port "$smtp" --from someone@example.org --to erin@pec.example.it \
  --to frank@pec.example.it "$work/ordinary.eml" >/dev/null
"${mail[@]}" fetch --port "$imap" --user frank@pec.example.it --password test \
  --mailbox Posta-ordinaria --count 1 --dir "$work/frank" --deadline 60
grep -q "Posta ordinaria." "$(e2e_newest "$work/frank")" || e2e_fail "frank: not the original"
grep -qi "^X-Trasporto" "$(e2e_newest "$work/frank")" && e2e_fail "frank: wrapped, not the original"
postfix_wait_queue_empty "$work/postfix" 60
[ "$(e2e_count "$imap" erin@pec.example.it)" -eq 0 ] || e2e_fail "erin received discarded mail"
[ "$(e2e_count "$imap" frank@pec.example.it)" -eq 0 ] || e2e_fail "frank's INBOX got the ordinary mail"
grep -q "erin@pec.example.it" <<<"$(run_pec log search "${cfg[@]}" --kind Scarto)" \
  || e2e_fail "the discard is not in the legal log"
grep -q "frank@pec.example.it" <<<"$(run_pec log search "${cfg[@]}" --kind ConsegnaCartella)" \
  || e2e_fail "the folder delivery is not in the legal log"
run_pec log verify "${cfg[@]}" >/dev/null || e2e_fail "the legal log does not verify"
echo "mailbox_settings: PASS"

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
# through; `pec stats agid` for today counts the acceptances and lists the outage.
#
# Usage: tests/e2e/mailbox_settings.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"

provider_script mailbox_settings .

PROVIDER_LMTP_PROXY=1 provider_up "$work"
cfg=(-c "$work/pec.toml")
run_pec() { SOFTHSM2_CONF=$conf "$pec" "$@"; }

fetch() { e2e_fetch "$imap" "$@"; } # USER COUNT DIR
kind_of() { "$pec" verify --trust "$work/pki/it.pem" "$1" | sed -n 's/^kind: //p'; }
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
run_pec mailbox set "${cfg[@]}" alice@pec.example.it --receipt-type breve | grep -q "receipt-type: breve" \
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
grep -q "limite di 1 messaggi nelle 24 ore" "$f" || e2e_fail "over quota: the notice does not say why"
run_pec mailbox set "${cfg[@]}" alice@pec.example.it --daily-quota default >/dev/null

e2e_log "3. dave suspended: cannot send (non-acceptance), cannot receive (5.2.1 non-delivery)"
run_pec mailbox state "${cfg[@]}" dave@pec.example.it suspended | grep -q "dave@pec.example.it: suspended" \
  || e2e_fail "pec mailbox state did not report the state"
run_pec mailbox show "${cfg[@]}" dave@pec.example.it | grep -q "^state: suspended" \
  || e2e_fail "pec mailbox show does not show the state"
msg "$work/da-dave.eml" dave@pec.example.it bob@pec.example.it
send dave@pec.example.it "$work/da-dave.eml" bob@pec.example.it >/dev/null
# The notice reaches dave all the same: receipts still reach a suspended mailbox.
fetch dave@pec.example.it 1 "$work/dave"
f=$(e2e_newest "$work/dave")
[[ $(kind_of "$f") == "receipt: non-accettazione"* ]] || e2e_fail "suspended sender: not a non-acceptance"
grep -q "casella sospesa" "$f" || e2e_fail "suspended sender: the notice does not say why"
msg "$work/a-dave.eml" alice@pec.example.it dave@pec.example.it
send alice@pec.example.it "$work/a-dave.eml" dave@pec.example.it >/dev/null
fetch alice@pec.example.it 5 "$work/alice3"
f=$(has "receipt: errore-consegna" "$work/alice3") || e2e_fail "alice: no non-delivery notice for dave"
grep -q "5.2.1 - .* - casella disattivata" "$f" || e2e_fail "non-delivery: not casella disattivata"
postfix_wait_queue_empty "$work/postfix" 60
[ "$(e2e_count "$imap" dave@pec.example.it)" -eq 1 ] || e2e_fail "dave received the envelope"
[ "$(e2e_count "$imap" bob@pec.example.it)" -eq 1 ] || e2e_fail "bob received a refused message"

e2e_log "4. provider suspended: submissions tempfail with the reason; resumed: accepted"
run_pec suspend "${cfg[@]}" --reason "manutenzione straordinaria" --kind incident >/dev/null
msg "$work/tre.eml" alice@pec.example.it bob@pec.example.it
out=$(send alice@pec.example.it "$work/tre.eml" bob@pec.example.it --expect-reject)
grep -q "451.*4.3.2.*servizio temporaneamente sospeso (manutenzione straordinaria)" <<<"$out" \
  || e2e_fail "suspended provider: unexpected answer: $out"
run_pec resume "${cfg[@]}" | grep -q "service resumed" || e2e_fail "pec resume failed"
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
run_pec log verify "${cfg[@]}" >/dev/null || e2e_fail "the legal log does not verify"
echo "mailbox_settings: PASS"

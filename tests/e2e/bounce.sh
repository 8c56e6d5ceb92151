#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, the bounce of one of our envelopes (issue 21.4): provider A (pec.example.it)
# and provider B (pec.example.net) with real Postfix, Dovecot and pec, TLS between them.
# B's Postfix refuses ghost@pec.example.net at RCPT (550 5.1.1, an access map).
#
# alice@A writes To bob@B and ghost@B. A's Postfix bounces the envelope for ghost back to
# alice, through pec's delivery point (Postfix does not filter the bounces it writes), which
# turns the report into an A-signed avviso di mancata consegna (no-dest, with B's reply)
# instead of delivering it; bob gets the envelope and alice B's CONSEGNA. alice ends with
# exactly: the acceptance, bob's CONSEGNA, the notice. A's legal log records the
# non-delivery; past 25 h A's timers send nothing; `pec status` counts nobody waiting.
# (no-dominio and the reports that are not ours: tests/roles/certified_outcomes.rs.)
#
# Usage: tests/e2e/bounce.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"

provider_script bounce a b

export PROVIDER_PKI=$work/pki PROVIDER_LMTP_PROXY=1
provider_up "$work/a" pec.example.it it
a_submission=$submission a_smtp=$smtp a_imap=$imap a_conf=$conf
provider_up "$work/b" pec.example.net net
b_smtp=$smtp b_imap=$imap
e2e_log "B's Postfix refuses ghost at RCPT (550 5.1.1)"
rejects=$work/b/postfix/etc/rejects
printf 'ghost@pec.example.net 550 5.1.1 Recipient address rejected: User unknown in virtual mailbox table\n' \
  > "$rejects"
_e2e_age_file "$rejects" # Postfix waits on a texthash file younger than a second
postconf -c "$work/b/postfix/etc" -e "smtpd_recipient_restrictions = check_recipient_access texthash:$rejects"
postfix_route "$work/a/postfix" pec.example.net "127.0.0.1:$b_smtp"
postfix_route "$work/b/postfix" pec.example.it "127.0.0.1:$a_smtp" # reloads B with the map

e2e_log "alice writes to bob and ghost"
msg=$work/alice.eml
printf 'From: alice@pec.example.it\r\nTo: bob@pec.example.net, ghost@pec.example.net\r\nSubject: bounce-%s\r\nDate: %s\r\nMessage-ID: <bounce-%s@client.example.it>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nIl contratto.\r\n' \
  "$$" "$(date -R)" "$$" > "$msg"
e2e_send "$a_submission" alice@pec.example.it "$msg" \
  --to bob@pec.example.net --to ghost@pec.example.net >/dev/null
e2e_fetch "$b_imap" bob@pec.example.net 1 "$work/bob" 90 >/dev/null
e2e_fetch "$a_imap" alice@pec.example.it 3 "$work/alice" 90 >/dev/null ||
  e2e_fail "alice does not hold 3 messages (acceptance, CONSEGNA, the notice)"
postfix_wait_queue_empty "$work/a/postfix" 60
postfix_wait_queue_empty "$work/b/postfix" 60

e2e_log "what alice holds"
notices=0 consegna=0 acceptance=0
for f in "$work"/alice/*.eml; do
  case "$(grep -m1 -i '^X-Ricevuta:' "$f" | tr -d '\r' | awk '{print $2}')" in
    accettazione) acceptance=$((acceptance + 1)) ;;
    avvenuta-consegna) consegna=$((consegna + 1)) ;;
    errore-consegna)
      notices=$((notices + 1))
      e2e_verify "$f" "receipt: errore-consegna" "$work/pki/it.pem"
      v=$("$pec" verify --trust "$work/pki/it.pem" "$f")
      grep -q "mittente: alice@pec.example.it" <<<"$v" || { echo "$v" >&2; e2e_fail "a notice not about alice's message"; }
      grep -q "consegna: ghost@pec.example.net" <<<"$v" || { echo "$v" >&2; e2e_fail "a notice not about ghost"; }
      grep -q "errore: no-dest" <<<"$v" || { echo "$v" >&2; e2e_fail "ghost's notice is not no-dest"; }
      grep -q "errore-esteso: 5.1.1 - .*550 5.1.1" <<<"$v" || { echo "$v" >&2; e2e_fail "ghost's notice does not carry the remote reply"; }
      ;;
    *) e2e_fail "alice received something else: $(grep -m1 -i '^Subject:' "$f")" ;;
  esac
done
[ "$acceptance/$consegna/$notices" = 1/1/1 ] ||
  e2e_fail "alice holds $acceptance acceptance, $consegna CONSEGNA, $notices notices; want 1/1/1"
! grep -l "ANOMALIA MESSAGGIO" "$work"/alice/*.eml >/dev/null 2>&1 || e2e_fail "a report reached alice as an anomaly"

"$pec" log search -c "$work/a/pec.toml" --kind MancataConsegna --format csv > "$work/nondelivery.txt" || true
for who in ghost@pec.example.net; do
  grep "$who" "$work/nondelivery.txt" | grep -q "DSN" ||
    { cat "$work/nondelivery.txt" >&2; e2e_fail "A's legal log has no non-delivery for $who"; }
done

e2e_log "past 25 h: no timer notice, nobody waiting"
at=$(date -u -d "@$(( $(date +%s) + 25 * 3600 ))" +%Y-%m-%dT%H:%M:%SZ)
out=$(SOFTHSM2_CONF=$a_conf PEC_E2E_PIN=1234 "$pec" timers run -c "$work/a/pec.toml" --now "$at")
! grep -q '^sent ' <<<"$out" || { echo "$out" >&2; e2e_fail "A's timers sent notices after the bounces"; }
status=$(SOFTHSM2_CONF=$a_conf PEC_E2E_PIN=1234 "$pec" status -c "$work/a/pec.toml" 2>&1 || true)
grep -q " 0 certified recipients waiting" <<<"$status" ||
  { echo "$status" >&2; e2e_fail "pec status counts recipients waiting"; }
echo "bounce: PASS"

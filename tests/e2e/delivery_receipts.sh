#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, delivery receipts across two providers (spec §3.6), every role real: provider A
# (pec.example.it) and provider B (pec.example.net), each with Postfix, Dovecot behind pec's
# LMTP proxy, clamd, SoftHSM2 and `pec serve`.
#
# Alice sends one message asking for short receipts (X-TipoRicevuta: breve) with two
# attachments, To b1@pec.example.net and carol@example.com (ordinary mail), Cc
# b2@pec.example.net. Alice must then hold exactly: the acceptance (b1 and b2 "certificato",
# carol "esterno"), a breve delivery receipt for b1 whose .hash parts carry the SHA-1 of each
# attachment as transmitted, and a sintetica one for b2 (a Cc recipient) — nothing for carol.
# b1 and b2 hold the transport envelope; every message verifies with pec verify and openssl.
# A third recipient, full@pec.example.net, is over quota (B's Dovecot gives every mailbox
# 40 KiB and full's is already nearly full): Alice gets the signed non-delivery notice
# (errore-consegna, "casella piena") for full, and Postfix sends no plain bounce.
#
# Usage: tests/e2e/delivery_receipts.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"

provider_script delivery_receipts a b

export PROVIDER_PKI=$work/pki PROVIDER_LMTP_PROXY=1
provider_up "$work/a" pec.example.it it
a_submission=$submission a_smtp=$smtp a_imap=$imap a_conf=$conf a_pid=$pec_pid
DOVECOT_QUOTA=40K provider_up "$work/b" pec.example.net net
b_smtp=$smtp b_imap=$imap
postfix_route "$work/a/postfix" pec.example.net "127.0.0.1:$b_smtp"
postfix_route "$work/b/postfix" pec.example.it "127.0.0.1:$a_smtp"

fetch() { e2e_fetch "$1" "$2" "$3" "$4" 90; } # IMAP_PORT USER COUNT DIR
trust=(--trust "$work/pki/it.pem" --trust "$work/pki/net.pem")
kind_of() { "$pec" verify "${trust[@]}" "$1" | sed -n 's/^kind: //p'; }

e2e_log "fill full@pec.example.net's mailbox (ordinary mail, wrapped as an anomaly envelope)"
{
  printf 'From: someone@example.org\r\nTo: full@pec.example.net\r\nSubject: riempitivo\r\nDate: %s\r\n\r\n' "$(date -R)"
  head -c 30000 /dev/zero | tr '\0' 'x' | fold -w 76 | sed 's/$/\r/'
} > "$work/filler.eml"
"${mail[@]}" send --port "$b_smtp" --from someone@example.org --to full@pec.example.net "$work/filler.eml" >/dev/null
fetch "$b_imap" full@pec.example.net 1 "$work/full"

e2e_log "alice → b1 (To, breve), carol (To, ordinary), full (To), b2 (Cc), two attachments"
pdf=$(printf '%%PDF-1.4 contratto di prova\n%%%%EOF\n' | base64 -w0)
txt=$(printf 'Fattura n. 7, totale 100 euro\n' | base64 -w0)
printf 'From: Alice <alice@pec.example.it>\r\nTo: b1@pec.example.net, carol@example.com, full@pec.example.net\r\nCc: b2@pec.example.net\r\nSubject: Contratto e fattura\r\nDate: %s\r\nMessage-ID: <receipts-%s@client.example.it>\r\nX-TipoRicevuta: breve\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nIn allegato contratto e fattura.\r\n--b\r\nContent-Type: application/pdf; name="contratto.pdf"\r\nContent-Disposition: attachment; filename="contratto.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n--b\r\nContent-Type: text/plain; name="fattura.txt"\r\nContent-Disposition: attachment; filename="fattura.txt"\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n--b--\r\n' \
  "$(date -R)" "$$" "$pdf" "$txt" > "$work/message.eml"
"${mail[@]}" send --port "$a_submission" --user alice@pec.example.it --password test \
  --from alice@pec.example.it --to b1@pec.example.net --to carol@example.com \
  --to full@pec.example.net --to b2@pec.example.net "$work/message.eml" >/dev/null

fetch "$a_imap" alice@pec.example.it 4 "$work/alice"
fetch "$b_imap" b1@pec.example.net 1 "$work/b1"
fetch "$b_imap" b2@pec.example.net 1 "$work/b2"
fetch "$a_imap" carol@example.com 1 "$work/carol"
postfix_wait_queue_empty "$work/a/postfix" 60
postfix_wait_queue_empty "$work/b/postfix" 60

for f in "$work"/b1/* "$work"/b2/* "$work"/carol/*; do
  [[ $(kind_of "$f") == "transport envelope"* ]] || e2e_fail "$f is not the transport envelope"
done

acceptance="" breve="" sintetica="" failed="" other=0
for f in "$work"/alice/*; do
  openssl smime -verify -in "$f" -CAfile "$work/pki/ca.pem" -purpose any -out /dev/null 2>/dev/null \
    || e2e_fail "openssl smime -verify refused $f"
  case "$(kind_of "$f")" in
    "receipt: accettazione"*) acceptance=$f ;;
    "receipt: avvenuta-consegna (breve)"*) breve=$f ;;
    "receipt: avvenuta-consegna (sintetica)"*) sintetica=$f ;;
    "receipt: errore-consegna"*) failed=$f ;;
    *) other=$((other + 1)) ;;
  esac
done
[ -n "$acceptance" ] && [ -n "$breve" ] && [ -n "$sintetica" ] && [ -n "$failed" ] && [ "$other" -eq 0 ] \
  || e2e_fail "alice should hold one acceptance, one breve and one sintetica receipt, one non-delivery notice"
out=$("$pec" verify "${trust[@]}" "$failed")
grep -q "consegna: full@pec.example.net" <<<"$out" || e2e_fail "the non-delivery notice is not for full"
grep -qi "casella piena" <<<"$out" || { echo "$out" >&2; e2e_fail "the non-delivery notice does not say the mailbox is full"; }
[ "$(ls "$work/full")" = "1.eml" ] || e2e_fail "full's mailbox changed"

json=$("$pec" verify --json "${trust[@]}" "$acceptance")
/usr/bin/python3 - "$json" <<'PY' || e2e_fail "acceptance: wrong recipient types"
import json, sys
r = json.loads(sys.argv[1])
d = r.get("daticert") or {}
types = {x["address"]: x["tipo"] for x in d.get("destinatari", [])}
want = {"b1@pec.example.net": "certificato", "b2@pec.example.net": "certificato",
        "full@pec.example.net": "certificato", "carol@example.com": "esterno"}
sys.exit(0 if types == want else 1)
PY
grep -q "consegna: b1@pec.example.net" <<<"$("$pec" verify "${trust[@]}" "$breve")" \
  || e2e_fail "breve receipt is not for b1"
grep -q "consegna: b2@pec.example.net" <<<"$("$pec" verify "${trust[@]}" "$sintetica")" \
  || e2e_fail "sintetica receipt is not for b2"
grep -q "postacert.eml" "$sintetica" && e2e_fail "the sintetica receipt carries the original"

# The breve receipt's .hash parts: SHA-1 (hex) of each attachment body as transmitted.
/usr/bin/python3 - "$work/message.eml" "$breve" <<'PY' || e2e_fail "breve hashes do not match the attachments"
import base64, email, hashlib, re, sys
orig = open(sys.argv[1], "rb").read()
want = {}
for name in ("contratto.pdf", "fattura.txt"):
    m = re.search(rb'filename="' + name.encode() + rb'"\r\nContent-Transfer-Encoding: base64\r\n\r\n(.*?)\r\n--b', orig, re.S)
    want[name + ".hash"] = hashlib.sha1(m.group(1)).hexdigest()
receipt = email.message_from_bytes(open(sys.argv[2], "rb").read())
got = {}
for part in receipt.walk():
    fn = part.get_filename()
    if fn and fn.endswith(".hash"):
        got[fn] = part.get_payload(decode=True).decode().strip()
if got != want:
    print("want", want, "got", got, file=sys.stderr)
    sys.exit(1)
PY
e2e_log "metrics: the traffic shows on both providers' endpoints"
metric_at_least() { # WORK SAMPLE MIN
  local v
  v=$(provider_metric "$1" "$2")
  /usr/bin/python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)' "$v" "$3" \
    || e2e_fail "metrics of $1: $2 is $v, expected at least $3"
}
metric_at_least "$work/a" 'pec_messages_total{role="access",kind="submission",outcome="accepted"}' 1
metric_at_least "$work/a" 'pec_messages_total{role="filter",kind="acceptance_receipt",outcome="emitted"}' 1
metric_at_least "$work/a" 'pec_latency_seconds_count{role="access"}' 1
metric_at_least "$work/b" 'pec_messages_total{role="filter",kind="transport_envelope",outcome="taken_in_charge"}' 1
metric_at_least "$work/b" 'pec_messages_total{role="delivery",kind="transport_envelope",outcome="delivered"}' 2
metric_at_least "$work/b" 'pec_messages_total{role="delivery",kind="transport_envelope",outcome="not_delivered"}' 1
metric_at_least "$work/b" 'pec_latency_seconds_count{role="delivery"}' 1
metric_at_least "$work/a" 'pec_up' 1

e2e_log "SIGHUP: provider A reloads its configuration"
kill -HUP "$a_pid"
wait_for_file_match "$work/a/pec.log" "configuration reloaded" 30
metric_at_least "$work/a" 'pec_config_reloads_total{outcome="ok"}' 1
grep -Eq '^.*delivery\{queue_id="[0-9A-F]+" msgid="opec' "$work/b/pec.log" \
  || e2e_fail "the delivery point's log lines do not carry the queue id and the PEC msgid"

e2e_log "pec status of provider A"
SOFTHSM2_CONF=$a_conf PEC_E2E_PIN=1234 "$pec" status -c "$work/a/pec.toml" >&2 \
  || e2e_fail "pec status reports a problem on provider A"

echo "delivery_receipts: PASS"

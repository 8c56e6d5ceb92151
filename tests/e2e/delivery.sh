#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, the delivery point (punto di consegna) with real parts: Postfix delivers its
# virtual mailboxes over LMTP to pec's LMTP proxy (PROVIDER_LMTP_PROXY=1), which forwards to
# Dovecot's LMTP; everything else as in access_point.sh (submission + milter, after-queue
# filter, reinjection, SoftHSM2 signing).
#
# Checks, in this branch:
#   1. a PEC message alice → bob (same provider) reaches bob through the proxy as the signed
#      transport envelope, intact; alice gets her acceptance receipt;
#   2. ordinary mail from the Internet (port 25) reaches its mailbox through the proxy with
#      the body byte for byte (dot-stuffed lines, long lines);
#   3. the reception point verified and took the envelope in charge (a same-provider
#      message gets the full flow), so alice gets exactly one signed ricevuta di avvenuta
#      consegna for bob, besides her acceptance receipt.
#
# Usage: tests/e2e/delivery.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"

provider_script delivery .

PROVIDER_LMTP_PROXY=1 provider_up "$work"

fetch() { e2e_fetch "$imap" "$@"; } # USER COUNT DIR
verify() { e2e_verify "$1" "$2" "$work/pki/it.pem"; } # FILE KIND
body() { # FILE: everything after the first empty line
  /usr/bin/python3 -c 'import sys; d=open(sys.argv[1],"rb").read().replace(b"\r\n",b"\n"); sys.stdout.buffer.write(d.split(b"\n\n",1)[1])' "$1"
}

e2e_log "1. PEC alice -> bob through the LMTP proxy"
printf 'From: Alice <alice@pec.example.it>\r\nTo: bob@pec.example.it\r\nSubject: consegna\r\nDate: %s\r\nMessage-ID: <consegna-%s@client.example.it>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nBuongiorno Bob.\r\n.riga con punto\r\n' \
  "$(date -R)" "$$" > "$work/pec.eml"
"${mail[@]}" send --port "$submission" --user alice@pec.example.it --password test \
  --from alice@pec.example.it --to bob@pec.example.it "$work/pec.eml"
fetch bob@pec.example.it 1 "$work/bob"
f=$(e2e_newest "$work/bob")
verify "$f" "transport envelope"
grep -q "^\.riga con punto" "$f" || e2e_fail "envelope: the dot line of the original was altered"
wait_for_file_match "$work/pec.log" "delivery point: .*bob@pec.example.it" 30 \
  || e2e_fail "the envelope did not go through pec's delivery point"

e2e_log "2. ordinary mail from the Internet, byte for byte"
{
  printf 'From: someone@example.org\r\nTo: carol@example.com\r\nSubject: ordinaria\r\nDate: %s\r\nMessage-ID: <ord-%s@example.org>\r\n\r\n' "$(date -R)" "$$"
  printf '.inizia con un punto\r\n..due punti\r\n.\r\n \r\n'
  head -c 900 /dev/zero | tr '\0' 'y'; printf '\r\n'
  printf 'fine\r\n'
} > "$work/ordinary.eml"
"${mail[@]}" send --port "$smtp" --from someone@example.org --to carol@example.com "$work/ordinary.eml"
fetch carol@example.com 1 "$work/carol"
cmp <(body "$work/ordinary.eml") <(body "$(e2e_newest "$work/carol")") \
  || e2e_fail "ordinary mail: the body changed on the way"
wait_for_file_match "$work/pec.log" "delivery point: .*carol@example.com" 30 \
  || e2e_fail "the ordinary mail did not go through pec's delivery point"

e2e_log "3. receipts for alice"
postfix_wait_queue_empty "$work/postfix" 60
fetch alice@pec.example.it 2 "$work/alice"
n=0
for f in "$work"/alice/*; do
  kind=$("$pec" verify --trust "$work/pki/it.pem" "$f" | grep "^kind:") || true
  if [[ $kind == *"receipt: avvenuta-consegna"* ]]; then
    grep -q "bob@pec.example.it" "$f" || e2e_fail "$f: delivery receipt does not name bob"
    n=$((n + 1))
  fi
done
[ "$n" -eq 1 ] || e2e_fail "expected one delivery receipt for bob, got $n"
fetch alice@pec.example.it 2 "$work/alice-final"
[ "$(ls "$work/alice-final" | wc -l)" -eq 2 ] || e2e_fail "alice: unexpected extra messages"
echo "delivery: PASS"

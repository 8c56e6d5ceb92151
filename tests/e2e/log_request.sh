#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, the owner self-service of the legal log with real parts: Postfix (submission
# with SASL, the pec milter, the after-queue filter, the reinjection listener), Dovecot,
# clamd and `pec serve` signing on SoftHSM2. Users are ordinary mail clients (SMTP + IMAP).
#
# Checks: alice and carol each send a PEC message; alice then writes to
# registro@pec.example.it naming yesterday and today; she receives over IMAP a PEC message
# from registro@ that `pec verify` accepts as a transport envelope, whose postacert.eml
# carries a CSV with her own message and nothing of carol's; her request is in the legal
# log (`pec log search`); a second request naming no period gets a signed reply explaining
# the forms; a third naming filters and PDF ("inviati a:bob@… PDF") gets only what she sent
# to bob, as CSV and PDF; the request messages themselves are stored nowhere.
#
# Usage: tests/e2e/log_request.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"

provider_script log_request .

provider_up "$work"

msg() { # FILE FROM TO SUBJECT BODY
  printf 'From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s-%s@client.example.it>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n%s\r\n' \
    "$2" "$3" "$4" "$(date -R)" "$(basename "$1" .eml)" "$$" "$5" > "$1"
}
send() { e2e_send "$submission" "$2" "$1" --to "$3" >/dev/null; } # FILE USER TO
fetch() { e2e_fetch "$imap" "$@" >/dev/null; } # USER COUNT DIR
# The message of DIR_NEW that DIR_OLD (an earlier fetch of the same mailbox) lacks.
new_message() {
  local f
  for f in "$2"/*; do
    [ -e "$1/$(basename "$f")" ] || { echo "$f"; return 0; }
  done
  return 1
}
# The decoded text parts (text/plain, text/csv) of the postacert.eml inside a reply, on
# stdout; with --csv only the CSV attachment (and exit 1 without one).
parts_of() {
  /usr/bin/python3 - "$@" <<'EOF'
import email, sys
from email import policy
csv_only = sys.argv[1] == "--csv"
msg = email.message_from_binary_file(open(sys.argv[-1], "rb"), policy=policy.compat32)
found = False
for part in msg.walk():
    name = part.get_filename() or ""
    if part.get_content_type() not in ("text/plain", "text/csv"):
        continue
    if csv_only and not name.endswith(".csv"):
        continue
    found = True
    sys.stdout.write(part.get_payload(decode=True).decode(part.get_content_charset() or "latin-1"))
sys.exit(0 if found else "nothing found in " + sys.argv[-1])
EOF
}

e2e_log "1. alice and carol each send a PEC message"
msg "$work/alice.eml" alice@pec.example.it bob@pec.example.it "contratto-alice-$$" "Per bob."
send "$work/alice.eml" alice@pec.example.it bob@pec.example.it
msg "$work/carol.eml" carol@pec.example.it dave@pec.example.it "segreto-carol-$$" "Per dave."
send "$work/carol.eml" carol@pec.example.it dave@pec.example.it
fetch alice@pec.example.it 1 "$work/alice-1"   # her acceptance receipt
fetch bob@pec.example.it 1 "$work/bob"
fetch dave@pec.example.it 1 "$work/dave"

e2e_log "2. alice asks registro@ for yesterday and today"
period="$(TZ=Europe/Rome date -d yesterday +%F) $(TZ=Europe/Rome date +%F)"
msg "$work/request.eml" alice@pec.example.it registro@pec.example.it "Registro $period" "Grazie."
send "$work/request.eml" alice@pec.example.it registro@pec.example.it
fetch alice@pec.example.it 2 "$work/alice-2"
reply=$(new_message "$work/alice-1" "$work/alice-2") || e2e_fail "no reply in alice's mailbox"
out=$("$pec" verify --trust "$work/pki/it.pem" "$reply") || { echo "$out" >&2; e2e_fail "pec verify refused the reply"; }
grep -q "kind: transport envelope" <<<"$out" || { echo "$out" >&2; e2e_fail "the reply is not a transport envelope"; }
openssl smime -verify -in "$reply" -CAfile "$work/pki/ca.pem" -purpose any -out /dev/null 2>/dev/null \
  || e2e_fail "openssl smime -verify refused the reply"
grep -q '^From: "Per conto di: registro@pec.example.it"' "$reply" || e2e_fail "the reply is not from registro@"
csv=$(parts_of --csv "$reply")
grep -q "contratto-alice-$$" <<<"$csv" || { echo "$csv" >&2; e2e_fail "alice's message is not in her extract"; }
grep -q "BustaTrasporto" <<<"$csv" || e2e_fail "no envelope record in the extract"
grep -q "RichiestaRegistro" <<<"$csv" || e2e_fail "her request is not in the extract"
if grep -q -e "segreto-carol" -e "carol@" -e "dave@" <<<"$csv"; then
  echo "$csv" >&2; e2e_fail "carol's message is in alice's extract"
fi
"$pec" log search -c "$work/pec.toml" --mailbox alice@pec.example.it --kind RichiestaRegistro > "$work/requests.txt"
grep -q "esito=accepted" "$work/requests.txt" || { cat "$work/requests.txt" >&2; e2e_fail "the request is not in the legal log"; }
"$pec" log search -c "$work/pec.toml" --mailbox alice@pec.example.it --kind EstrattoRegistro > "$work/extracts.txt"
grep -q "esito=ok" "$work/extracts.txt" || { cat "$work/extracts.txt" >&2; e2e_fail "the reply is not in the legal log"; }

e2e_log "3. a request naming no period gets a signed reply explaining the forms"
msg "$work/bad.eml" alice@pec.example.it registro@pec.example.it "registro per favore" "Il registro, grazie."
send "$work/bad.eml" alice@pec.example.it registro@pec.example.it
fetch alice@pec.example.it 3 "$work/alice-3"
bad=$(new_message "$work/alice-2" "$work/alice-3") || e2e_fail "no reply to the bad request"
"$pec" verify --trust "$work/pki/it.pem" "$bad" >/dev/null || e2e_fail "pec verify refused the bad-period reply"
parts_of "$bad" | tr -s ' \r\n' '   ' | grep -q "nessun periodo indicato" \
  || e2e_fail "the reply does not say what was wrong"

e2e_log "4. a request with filters and PDF: what alice sent to bob, as CSV and PDF"
msg "$work/filtered.eml" alice@pec.example.it registro@pec.example.it \
  "Registro $period inviati a:bob@pec.example.it PDF" "Grazie."
send "$work/filtered.eml" alice@pec.example.it registro@pec.example.it
fetch alice@pec.example.it 4 "$work/alice-4"
filtered=$(new_message "$work/alice-3" "$work/alice-4") || e2e_fail "no reply to the filtered request"
"$pec" verify --trust "$work/pki/it.pem" "$filtered" >/dev/null || e2e_fail "pec verify refused the filtered reply"
csv=$(parts_of --csv "$filtered")
grep -q "contratto-alice-$$" <<<"$csv" || { echo "$csv" >&2; e2e_fail "alice's message to bob is not in the filtered extract"; }
! grep -q "RichiestaRegistro" <<<"$csv" || { echo "$csv" >&2; e2e_fail "the filter 'a:bob' kept her requests"; }
/usr/bin/python3 - "$filtered" <<'EOF2' || e2e_fail "the filtered reply has no PDF with alice's message"
import email, sys
from email import policy
msg = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=policy.compat32)
pdfs = [p.get_payload(decode=True) for p in msg.walk() if (p.get_filename() or "").endswith(".pdf")]
sys.exit(0 if len(pdfs) == 1 and pdfs[0].startswith(b"%PDF-") and b"contratto-alice" in pdfs[0] else 1)
EOF2

postfix_wait_queue_empty "$work/postfix" 60
[ ! -d "$work/dovecot/mail/pec.example.it/registro" ] || e2e_fail "a request was stored in a registro mailbox"
echo "log_request: PASS"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, the access point with real parts: Postfix (submission with SASL through
# Dovecot, the pec milter, the after-queue content filter, the reinjection listener),
# Dovecot (auth, LMTP, IMAP), clamd with the test signature database, and `pec serve`
# signing on a SoftHSM2 token. A real SMTP client submits; the mailboxes are read over IMAP.
#
# Checks: an accepted message gives the sender a valid acceptance receipt and every
# recipient (same provider and external) a valid transport envelope whose postacert.eml is
# the original; a spoofed From, a Bcc and an EICAR attachment each give the right signed
# notice and no envelope; an oversize message is refused in SMTP with no notice; a program
# in a zip archive gives a non-acceptance notice naming it and no envelope; a Word document
# with macros is accepted, its envelopes carrying X-Pec-Attachment-Warning and the courtesy
# notice (issue 21; the files are built here with Python's zipfile, not by pec).
#
# Usage: tests/e2e/access_point.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"

provider_script access_point .

PROVIDER_ACCESS_EXTRA=$'max_total_size = "1MB"\nhard_size_limit = "2MB"' provider_up "$work"

msg() { # FILE FROM_HEADER EXTRA_HEADERS BODY
  printf 'From: %s\r\nTo: bob@pec.example.it, carol@example.com\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s@client.example.it>\r\n%bMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n%s\r\n' \
    "$2" "$(basename "$1" .eml)" "$(date -R)" "$(basename "$1" .eml)-$$" "$3" "$4" > "$1"
}
send() { # FILE [pecmail send options]: alice to bob and carol
  local f=$1
  shift
  e2e_send "$submission" alice@pec.example.it "$f" --to bob@pec.example.it --to carol@example.com "$@"
}
fetch() { e2e_fetch "$imap" "$@"; } # USER COUNT DIR
verify() { e2e_verify "$1" "$2" "$work/pki/it.pem"; } # FILE KIND

e2e_log "1. accepted: acceptance receipt to the sender, envelope to each recipient"
msg "$work/contratto.eml" "Alice <alice@pec.example.it>" "" "Buongiorno, ecco il contratto."
send "$work/contratto.eml"
fetch alice@pec.example.it 1 "$work/alice"
fetch bob@pec.example.it 1 "$work/bob"
fetch carol@example.com 1 "$work/carol"
verify "$(e2e_newest "$work/alice")" "receipt: accettazione"
for f in "$work"/bob/* "$work"/carol/*; do
  verify "$f" "transport envelope"
  grep -q "^X-Trasporto: posta-certificata" "$f" || e2e_fail "$f: no X-Trasporto"
  grep -q "Buongiorno, ecco il contratto." "$f" || e2e_fail "$f: original body not in postacert.eml"
  grep -q "^X-Riferimento-Message-ID: <contratto-$$@client.example.it>" "$f" || e2e_fail "$f: no X-Riferimento-Message-ID"
done
"$pec" verify --json --trust "$work/pki/it.pem" "$(e2e_newest "$work/alice")" > "$work/acceptance.json"
grep -q '"certificato"' "$work/acceptance.json" && grep -q '"esterno"' "$work/acceptance.json" \
  || e2e_fail "acceptance does not list bob as certificato and carol as esterno"

e2e_log "2. spoofed From: non-acceptance notice, no envelope"
msg "$work/spoofed.eml" "Mallory <mallory@pec.example.it>" "" "Sono Alice, davvero."
send "$work/spoofed.eml"
fetch alice@pec.example.it 2 "$work/alice"
verify "$(e2e_newest "$work/alice")" "receipt: non-accettazione"
grep -q "diverso dall'indirizzo del campo From" "$(e2e_newest "$work/alice")" \
  || grep -q "campo From" "$(e2e_newest "$work/alice")" || e2e_fail "spoofed From: notice does not say why"

e2e_log "3. Bcc: non-acceptance notice, no envelope"
# As a real client does: the blind recipient is in RCPT TO and in a Bcc header. Postfix's
# cleanup strips the Bcc header before any milter sees it, so the refusal comes from the
# RCPT TO = To + Cc rule and names the blind recipient.
msg "$work/bcc.eml" "alice@pec.example.it" "Bcc: eve@pec.example.it\r\n" "Copia nascosta."
send "$work/bcc.eml" --to eve@pec.example.it
fetch alice@pec.example.it 3 "$work/alice"
verify "$(e2e_newest "$work/alice")" "receipt: non-accettazione"
grep -q "eve@pec.example.it" "$(e2e_newest "$work/alice")" || e2e_fail "Bcc: the notice does not name the blind recipient"

e2e_log "4. EICAR: non-acceptance for virus, quarantined"
# The EICAR file as an attachment (clamd decodes MIME and matches the decoded part).
printf 'From: alice@pec.example.it\r\nTo: bob@pec.example.it, carol@example.com\r\nSubject: virus\r\nDate: %s\r\nMessage-ID: <virus-%s@client.example.it>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nIn allegato.\r\n--b\r\nContent-Type: application/octet-stream; name="eicar.com"\r\nContent-Disposition: attachment; filename="eicar.com"\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n--b--\r\n' \
  "$(date -R)" "$$" "$(e2e_eicar | base64 -w0)" > "$work/virus.eml"
send "$work/virus.eml"
fetch alice@pec.example.it 4 "$work/alice"
verify "$(e2e_newest "$work/alice")" "receipt: non-accettazione"
grep -qi "^X-VerificaSicurezza: errore" "$(e2e_newest "$work/alice")" || e2e_fail "virus notice without X-VerificaSicurezza"

e2e_log "5. oversize: refused in SMTP, no notice"
{
  printf 'From: alice@pec.example.it\r\nTo: bob@pec.example.it, carol@example.com\r\nSubject: grande\r\nDate: %s\r\n\r\n' "$(date -R)"
  head -c 2400000 /dev/zero | tr '\0' 'x' | fold -w 76 | sed 's/$/\r/'
} > "$work/big.eml"
send "$work/big.eml" --expect-reject

attachments() { # FILE SUBJECT NAME KIND: alice to bob and carol, one attachment built here
  /usr/bin/python3 - "$@" "$$" <<'PY'
import base64, io, sys, zipfile, email.utils
path, subject, name, kind, pid = sys.argv[1:]
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    if kind == "program":
        # a Windows program's start: MZ, e_lfanew, PE signature
        pe = bytearray(512)
        pe[0:2] = b"MZ"; pe[0x3C:0x40] = (0x80).to_bytes(4, "little"); pe[0x80:0x84] = b"PE\0\0"
        z.writestr("leggimi.txt", "ciao")
        z.writestr("strumenti/setup.exe", bytes(pe))
    else:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        z.writestr("word/document.xml", '<?xml version="1.0"?><w:document/>')
        z.writestr("word/vbaProject.bin", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(1528))
data = base64.encodebytes(buf.getvalue()).decode().replace("\n", "\r\n")
msg = (
    "From: alice@pec.example.it\r\nTo: bob@pec.example.it, carol@example.com\r\n"
    f"Subject: {subject}\r\nDate: {email.utils.formatdate(localtime=True)}\r\n"
    f"Message-ID: <{subject}-{pid}@client.example.it>\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
    "In allegato.\r\n--b\r\n"
    f'Content-Type: application/octet-stream; name="{name}"\r\n'
    f'Content-Disposition: attachment; filename="{name}"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    f"{data}--b--\r\n"
)
open(path, "w", newline="").write(msg)
PY
}

e2e_log "6. a program in a zip archive: non-acceptance notice naming it, no envelope"
attachments "$work/programma.eml" programma strumenti.zip program
send "$work/programma.eml"
fetch alice@pec.example.it 5 "$work/alice"
verify "$(e2e_newest "$work/alice")" "receipt: non-accettazione"
grep -q "X-VerificaSicurezza" "$(e2e_newest "$work/alice")" && e2e_fail "a blocked file is not a virus"
"$pec" verify --json --trust "$work/pki/it.pem" "$(e2e_newest "$work/alice")" > "$work/blocked.json"
grep -q 'strumenti.zip > strumenti/setup.exe' "$work/blocked.json" \
  || { cat "$work/blocked.json" >&2; e2e_fail "the notice does not name the blocked file"; }

e2e_log "7. a document with macros: accepted, envelopes with the warning header and notice"
attachments "$work/macro.eml" macro bilancio.docm macro
send "$work/macro.eml"
fetch alice@pec.example.it 6 "$work/alice"
verify "$(e2e_newest "$work/alice")" "receipt: accettazione"
fetch bob@pec.example.it 2 "$work/bob"
fetch carol@example.com 2 "$work/carol"
for f in "$(e2e_newest "$work/bob")" "$(e2e_newest "$work/carol")"; do
  verify "$f" "transport envelope"
  grep -q "^X-Pec-Attachment-Warning: macro" "$f" || e2e_fail "$f: no X-Pec-Attachment-Warning"
  grep -q "Attenzione: il messaggio contiene allegati con macro" "$f" || e2e_fail "$f: no courtesy notice"
  grep -q "^- bilancio.docm" "$f" || e2e_fail "$f: the notice does not name the document"
done
grep -q "X-Pec-Attachment-Warning" "$work"/bob/1.eml && e2e_fail "the first envelope has a warning"

postfix_wait_queue_empty "$work/postfix" 60
# Nothing else arrived: the refused messages produced no envelope and no further notice.
[ "$(ls "$work/bob" | wc -l)" -eq 2 ] || e2e_fail "bob received more than the two envelopes"
"${mail[@]}" fetch --port "$imap" --user eve@pec.example.it --password test --count 0 --dir "$work/eve" --deadline 5
[ -z "$(ls -A "$work/eve" 2>/dev/null)" ] || e2e_fail "the blind recipient received something"
fetch bob@pec.example.it 2 "$work/bob-final"
fetch carol@example.com 2 "$work/carol-final"
fetch alice@pec.example.it 6 "$work/alice-final"
[ "$(ls "$work/bob-final" | wc -l)" -eq 2 ] && [ "$(ls "$work/carol-final" | wc -l)" -eq 2 ] \
  && [ "$(ls "$work/alice-final" | wc -l)" -eq 6 ] || e2e_fail "unexpected extra messages"
echo "access_point: PASS"

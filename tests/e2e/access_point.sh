#!/usr/bin/env bash
# End to end, the access point with real parts: Postfix (submission with SASL through
# Dovecot, the pec milter, the after-queue content filter, the reinjection listener),
# Dovecot (auth, LMTP, IMAP), clamd with the test signature database, and `pec serve`
# signing on a SoftHSM2 token. A real SMTP client submits; the mailboxes are read over IMAP.
#
# Checks: an accepted message gives the sender a valid acceptance receipt and every
# recipient (same provider and external) a valid transport envelope whose postacert.eml is
# the original; a spoofed From, a Bcc and an EICAR attachment each give the right signed
# notice and no envelope; an oversize message is refused in SMTP with no notice.
#
# Usage: tests/e2e/access_point.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"

pec=${PEC_BIN:-$root/target/debug/pec}
[ -x "$pec" ] || { echo "access_point: $pec not built (cargo build)" >&2; exit 2; }
mail=(/usr/bin/python3 "$here/pecmail.py")

work=$(e2e_tmpdir)
pec_pid=""
cleanup() {
  status=$?
  if [ -n "$pec_pid" ] && kill -0 "$pec_pid" 2>/dev/null; then
    kill "$pec_pid" 2>/dev/null || true
    wait "$pec_pid" 2>/dev/null || true
  fi
  postfix_stop "$work/postfix" >/dev/null 2>&1 || true
  dovecot_stop "$work/dovecot" >/dev/null 2>&1 || true
  clamd_stop "$work/clamd" >/dev/null 2>&1 || true
  if [ "$status" -ne 0 ]; then
    echo "---- pec log" >&2; tail -n 40 "$work/pec.log" >&2 2>/dev/null || true
    echo "---- postfix log" >&2; tail -n 40 "$work/postfix/maillog" >&2 2>/dev/null || true
    echo "access_point: FAIL (work dir kept: $work)" >&2
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT

read -r submission smtp reinject filter milter lmtp imap clamd_port < <(e2e_free_ports 8 | tr '\n' ' ')

e2e_log "test PKI and SoftHSM2 token"
sh "$root/tests/pki/make-pki.sh" "$work/pki" >/dev/null 2>&1
conf=$(softhsm_token "$work/hsm" pec-e2e 1234 "$work/pki/it.key" "$work/pki/it.pem" signer)
chmod -R a+rX "$work/hsm"

# The provider index: us (pec.example.it) and another provider (pec.example.net).
cert_b64() { openssl x509 -in "$1" -outform DER | base64 -w0; }
cert_sha1() { openssl x509 -in "$1" -outform DER | sha1sum | cut -d' ' -f1 | tr a-f A-F; }
cat > "$work/index.ldif" <<EOF
version: 1

dn: providerName=PEC Example IT S.p.A.,o=postacert
objectclass: top
objectclass: provider
providerName: PEC Example IT S.p.A.
providerCertificateHash: $(cert_sha1 "$work/pki/it.pem")
providerCertificate;binary:: $(cert_b64 "$work/pki/it.pem")
mailReceipt: ricevute@pec.example.it
managedDomains: pec.example.it

dn: providerName=PEC Example NET S.p.A.,o=postacert
objectclass: top
objectclass: provider
providerName: PEC Example NET S.p.A.
providerCertificateHash: $(cert_sha1 "$work/pki/net.pem")
providerCertificate;binary:: $(cert_b64 "$work/pki/net.pem")
mailReceipt: ricevute@pec.example.net
managedDomains: pec.example.net
EOF

e2e_log "clamd, Dovecot, Postfix"
clamd_start "$work/clamd" "$clamd_port"
dovecot_start "$work/dovecot" "$lmtp" "$imap"
# example.com stands for the Internet: delivered locally, but not a PEC domain.
postfix_start --sasl-path "$work/dovecot/run/auth-postfix" "$work/postfix" pec-a \
  "$submission" "$smtp" "$reinject" "$filter" "$milter" "$lmtp" pec.example.it example.com

cat > "$work/pec.toml" <<EOF
[provider]
name = "PEC Example IT S.p.A."
service_address = "posta-certificata@pec.example.it"
mail_receipt = "ricevute@pec.example.it"
domains = ["pec.example.it"]

[signing]
backend = "pkcs11"
module = "$(ls /usr/lib/softhsm/libsofthsm2.so)"
token_label = "pec-e2e"
key_label = "signer"
pin_env = "PEC_E2E_PIN"

[store]
path = "$work/pec.sqlite"

[index]
ldif = "$work/index.ldif"

[antivirus]
clamd = "tcp:127.0.0.1:$clamd_port"
timeout = "30s"

[access]
listen = "inet:127.0.0.1:$milter"
reinject = "127.0.0.1:$reinject"
max_total_size = "1MB"
hard_size_limit = "2MB"

[filter]
listen = "127.0.0.1:$filter"
reinject = "127.0.0.1:$reinject"
EOF
"$pec" check-config -c "$work/pec.toml" >/dev/null

e2e_log "pec serve"
SOFTHSM2_CONF=$conf PEC_E2E_PIN=1234 PEC_LOG=info "$pec" serve -c "$work/pec.toml" 2> "$work/pec.log" &
pec_pid=$!
wait_for_port 127.0.0.1 "$milter" 30
wait_for_port 127.0.0.1 "$filter" 30

msg() { # FILE FROM_HEADER EXTRA_HEADERS BODY
  printf 'From: %s\r\nTo: bob@pec.example.it, carol@example.com\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s@client.example.it>\r\n%sMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n%s\r\n' \
    "$2" "$(basename "$1" .eml)" "$(date -R)" "$(basename "$1" .eml)-$$" "$3" "$4" > "$1"
}
send() { # FILE [pecmail send options]
  local f=$1; shift
  "${mail[@]}" send --port "$submission" --user alice@pec.example.it --password test \
    --from alice@pec.example.it --to bob@pec.example.it --to carol@example.com "$@" "$f"
}
fetch() { # USER COUNT DIR
  "${mail[@]}" fetch --port "$imap" --user "$1" --password test --count "$2" --dir "$3" --deadline 60
}
verify() { # FILE EXPECTED_KIND_SUBSTRING
  local out
  out=$("$pec" verify --trust "$work/pki/it.pem" "$1") || { echo "$out" >&2; e2e_fail "pec verify refused $1"; return 1; }
  grep -q "kind: $2" <<<"$out" || { echo "$out" >&2; e2e_fail "$1 is not \"$2\""; return 1; }
  openssl smime -verify -in "$1" -CAfile "$work/pki/ca.pem" -purpose any -out /dev/null 2>/dev/null \
    || e2e_fail "openssl smime -verify refused $1"
}
newest() { ls -t "$1"/* | head -n 1; }

e2e_log "1. accepted: acceptance receipt to the sender, envelope to each recipient"
msg "$work/contratto.eml" "Alice <alice@pec.example.it>" "" "Buongiorno, ecco il contratto."
send "$work/contratto.eml"
fetch alice@pec.example.it 1 "$work/alice"
fetch bob@pec.example.it 1 "$work/bob"
fetch carol@example.com 1 "$work/carol"
verify "$(newest "$work/alice")" "receipt: accettazione"
for f in "$work"/bob/* "$work"/carol/*; do
  verify "$f" "transport envelope"
  grep -q "^X-Trasporto: posta-certificata" "$f" || e2e_fail "$f: no X-Trasporto"
  grep -q "Buongiorno, ecco il contratto." "$f" || e2e_fail "$f: original body not in postacert.eml"
  grep -q "^X-Riferimento-Message-ID: <contratto-$$@client.example.it>" "$f" || e2e_fail "$f: no X-Riferimento-Message-ID"
done
"$pec" verify --json --trust "$work/pki/it.pem" "$(newest "$work/alice")" > "$work/acceptance.json"
grep -q '"certificato"' "$work/acceptance.json" && grep -q '"esterno"' "$work/acceptance.json" \
  || e2e_fail "acceptance does not list bob as certificato and carol as esterno"

e2e_log "2. spoofed From: non-acceptance notice, no envelope"
msg "$work/spoofed.eml" "Mallory <mallory@pec.example.it>" "" "Sono Alice, davvero."
send "$work/spoofed.eml"
fetch alice@pec.example.it 2 "$work/alice"
verify "$(newest "$work/alice")" "receipt: non-accettazione"
grep -q "diverso dall'indirizzo del campo From" "$(newest "$work/alice")" \
  || grep -q "campo From" "$(newest "$work/alice")" || e2e_fail "spoofed From: notice does not say why"

e2e_log "3. Bcc: non-acceptance notice, no envelope"
msg "$work/bcc.eml" "alice@pec.example.it" "Bcc: eve@pec.example.it\r\n" "Copia nascosta."
send "$work/bcc.eml"
fetch alice@pec.example.it 3 "$work/alice"
verify "$(newest "$work/alice")" "receipt: non-accettazione"

e2e_log "4. EICAR: non-acceptance for virus, quarantined"
msg "$work/virus.eml" "alice@pec.example.it" "" "$(e2e_eicar)"
send "$work/virus.eml"
fetch alice@pec.example.it 4 "$work/alice"
verify "$(newest "$work/alice")" "receipt: non-accettazione"
grep -qi "^X-VerificaSicurezza: errore" "$(newest "$work/alice")" || e2e_fail "virus notice without X-VerificaSicurezza"

e2e_log "5. oversize: refused in SMTP, no notice"
{
  printf 'From: alice@pec.example.it\r\nTo: bob@pec.example.it, carol@example.com\r\nSubject: grande\r\nDate: %s\r\n\r\n' "$(date -R)"
  head -c 2400000 /dev/zero | tr '\0' 'x' | fold -w 76 | sed 's/$/\r/'
} > "$work/big.eml"
send "$work/big.eml" --expect-reject

postfix_wait_queue_empty "$work/postfix" 60
# Nothing else arrived: the refused messages produced no envelope and no further notice.
[ "$(ls "$work/bob" | wc -l)" -eq 1 ] || e2e_fail "bob received more than the one envelope"
fetch bob@pec.example.it 1 "$work/bob-final"
fetch carol@example.com 1 "$work/carol-final"
fetch alice@pec.example.it 4 "$work/alice-final"
[ "$(ls "$work/bob-final" | wc -l)" -eq 1 ] && [ "$(ls "$work/carol-final" | wc -l)" -eq 1 ] \
  && [ "$(ls "$work/alice-final" | wc -l)" -eq 4 ] || e2e_fail "unexpected extra messages"
echo "access_point: PASS"

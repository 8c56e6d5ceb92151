#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, signing key rollover without a restart (issue 19, point 5), every role real:
# provider A (pec.example.it) with Postfix, Dovecot, clamd, a SoftHSM2 token and `pec serve`.
#
# Alice sends to carol@example.com (ordinary mail): she gets the acceptance, carol the
# transport envelope, both signed with the RSA-3072 key "signer". A second key, ECDSA P-256
# with its certificate, is put on the same token under "signer-2027" while pec runs; the
# configuration is pointed at it and pec serve gets SIGHUP. The next message's acceptance
# and envelope carry the new certificate (openssl cms shows ecdsa-with-SHA256) and verify
# against the CA; the first ones still verify with the old certificate. A reload naming a
# key and a certificate that do not belong together is refused and the new key stays.
#
# Usage: tests/e2e/rollover.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"

provider_script rollover a

export PROVIDER_PKI=$work/pki
provider_up "$work/a" pec.example.it it
a_submission=$submission a_imap=$imap a_conf=$conf a_pid=$pec_pid

fetch() { e2e_fetch "$1" "$2" "$3" "$4" 90; } # IMAP_PORT USER COUNT DIR
signer_of() { # FILE: the signer certificate's SHA-1 (upper-case hex), from openssl
  openssl smime -pk7out -in "$1" 2>/dev/null | openssl pkcs7 -print_certs 2>/dev/null \
    | openssl x509 -outform DER 2>/dev/null | sha1sum | cut -d' ' -f1 | tr a-f A-F
}
sha1_of() { openssl x509 -in "$1" -outform DER | sha1sum | cut -d' ' -f1 | tr a-f A-F; }
send() { # N
  printf 'From: Alice <alice@pec.example.it>\r\nTo: carol@example.com\r\nSubject: rollover %s\r\nDate: %s\r\nMessage-ID: <rollover-%s-%s@client.example.it>\r\n\r\nmessaggio %s\r\n' \
    "$1" "$(date -R)" "$1" "$$" "$1" > "$work/m$1.eml"
  "${mail[@]}" send --port "$a_submission" --user alice@pec.example.it --password test \
    --from alice@pec.example.it --to carol@example.com "$work/m$1.eml" >/dev/null
}
verify_all() { # DIR CERT: every message in DIR verifies with openssl (CA) and pec (--trust CERT)
  local f
  for f in "$1"/*; do
    openssl smime -verify -in "$f" -CAfile "$work/pki/ca.pem" -purpose any -out /dev/null 2>/dev/null \
      || e2e_fail "openssl smime -verify refused $f"
    "$pec" verify --trust "$2" "$f" >/dev/null || e2e_fail "pec verify --trust $2 refused $f"
  done
}

e2e_log "before the rollover: one message, signed with the RSA-3072 key"
send 1
fetch "$a_imap" alice@pec.example.it 1 "$work/alice1"
fetch "$a_imap" carol@example.com 1 "$work/carol1"
old=$(sha1_of "$work/pki/it.pem")
for f in "$work"/alice1/* "$work"/carol1/*; do
  [ "$(signer_of "$f")" = "$old" ] || e2e_fail "$f is not signed with the old certificate"
done
verify_all "$work/alice1" "$work/pki/it.pem"
verify_all "$work/carol1" "$work/pki/it.pem"

e2e_log "a new ECDSA P-256 key and certificate on the running token, under signer-2027"
sh "$E2E_REPO/tests/pki/issue-leaf.sh" "$work/pki" next ec:P-256 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in "$work/pki/next.key" -out "$work/next.p8"
openssl x509 -in "$work/pki/next.pem" -outform DER -out "$work/next.der"
SOFTHSM2_CONF=$a_conf softhsm2-util --import "$work/next.p8" --token pec-e2e --label signer-2027 \
  --id 2027 --pin 1234 >/dev/null
SOFTHSM2_CONF=$a_conf pkcs11-tool --module "$(ls /usr/lib/softhsm/libsofthsm2.so)" --token-label pec-e2e \
  --login --pin 1234 --write-object "$work/next.der" --type cert --label signer-2027 --id 2027 >/dev/null 2>&1

e2e_log "SIGHUP with a key and a certificate that do not belong together: refused"
sed -i 's/^key_label = "signer"$/key_label = "signer-2027"\ncert_label = "signer"/' "$work/a/pec.toml"
kill -HUP "$a_pid"
wait_for_file_match "$work/a/pec.log" "configuration not reloaded" 30
grep -Eq "(does not match|is of type).*the running signing key stays" "$work/a/pec.log" \
  || { cat "$work/a/pec.log" >&2; e2e_fail "the refused rollover does not say why"; }

e2e_log "SIGHUP with signer-2027: rollover"
sed -i '/^cert_label = "signer"$/d' "$work/a/pec.toml"
grep -q '^key_label = "signer-2027"$' "$work/a/pec.toml" || e2e_fail "pec.toml not edited"
kill -HUP "$a_pid"
wait_for_file_match "$work/a/pec.log" "signing key rollover" 30
wait_for_file_match "$work/a/pec.log" "configuration reloaded" 30
kill -0 "$a_pid" || e2e_fail "pec serve stopped"

e2e_log "after the rollover: the next message carries the new certificate"
send 2
fetch "$a_imap" alice@pec.example.it 2 "$work/alice2"
fetch "$a_imap" carol@example.com 2 "$work/carol2"
new=$(sha1_of "$work/pki/next.pem")
n_new=0
for f in "$work"/alice2/* "$work"/carol2/*; do
  case "$(signer_of "$f")" in
    "$new") n_new=$((n_new + 1))
      openssl smime -pk7out -in "$f" | openssl cms -cmsout -print -inform PEM 2>/dev/null \
        | grep -q "ecdsa-with-SHA256" || e2e_fail "$f: signatureAlgorithm is not ecdsa-with-SHA256"
      openssl smime -verify -in "$f" -CAfile "$work/pki/ca.pem" -purpose any -out /dev/null 2>/dev/null \
        || e2e_fail "openssl smime -verify refused $f"
      "$pec" verify --trust "$work/pki/next.pem" "$f" >/dev/null || e2e_fail "pec verify refused $f" ;;
    "$old")
      # The first message's, still verifying with the old certificate.
      "$pec" verify --trust "$work/pki/it.pem" "$f" >/dev/null || e2e_fail "pec verify refused $f" ;;
    *) e2e_fail "$f: unknown signer" ;;
  esac
done
[ "$n_new" -eq 2 ] || e2e_fail "$n_new messages with the new certificate, expected 2 (acceptance and envelope)"

e2e_log "pec keys shows the new key"
out=$(SOFTHSM2_CONF=$a_conf PEC_E2E_PIN=1234 "$pec" keys -c "$work/a/pec.toml" 2>&1 || true)
grep -q "^  key: ECDSA P-256$" <<<"$out" || { echo "$out" >&2; e2e_fail "pec keys does not show the ECDSA key"; }

echo "rollover: PASS"

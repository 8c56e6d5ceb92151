# shellcheck shell=bash
# One PEC provider on this machine, for the end-to-end tests and the load benchmarks:
# a test PKI and SoftHSM2 token, a provider index (LDIF) with us (pec.example.it) and another
# provider (pec.example.net), clamd, Dovecot, a Postfix instance wired to pec (submission with
# SASL and the milter, the after-queue filter, the reinjection listener), and `pec serve`.
# Source after lib.sh; call provider_up WORK, and provider_down WORK in an EXIT trap.
#
# provider_up WORK       sets: submission smtp reinject filter milter lmtp imap clamd_port
#                        delivery, conf (SOFTHSM2_CONF), pec_pid; WORK/pki holds the
#                        certificates, WORK/dovecot/mail/<domain>/<user> the mailboxes. PEC_BIN
#                        names the binary; PROVIDER_ACCESS_EXTRA adds lines to [access] of
#                        pec.toml. pec's delivery point (LMTP proxy) listens on $delivery and
#                        forwards to Dovecot's LMTP ($lmtp); Postfix delivers to Dovecot
#                        directly unless PROVIDER_LMTP_PROXY=1, which points Postfix's
#                        virtual_transport at the proxy instead.
# provider_down WORK     stops pec, Postfix, Dovecot and clamd (by pid).

_provider_cert_b64() { openssl x509 -in "$1" -outform DER | base64 -w0; }
_provider_cert_sha1() { openssl x509 -in "$1" -outform DER | sha1sum | cut -d' ' -f1 | tr a-f A-F; }

# provider_index_entry NAME CERT_PEM MAIL_RECEIPT DOMAIN: one provider in LDIF (spec §7.1).
provider_index_entry() {
  cat <<EOF
dn: providerName=$1,o=postacert
objectclass: top
objectclass: provider
providerName: $1
providerCertificateHash: $(_provider_cert_sha1 "$2")
providerCertificate;binary:: $(_provider_cert_b64 "$2")
mailReceipt: $3
managedDomains: $4

EOF
}

provider_up() {
  local work=$1 root pec ports
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  pec=${PEC_BIN:-$root/target/debug/pec}
  mapfile -t ports < <(e2e_free_ports 9)
  submission=${ports[0]} smtp=${ports[1]} reinject=${ports[2]} filter=${ports[3]}
  milter=${ports[4]} lmtp=${ports[5]} imap=${ports[6]} clamd_port=${ports[7]}
  delivery=${ports[8]}
  local postfix_lmtp=$lmtp
  if [ "${PROVIDER_LMTP_PROXY:-0}" = 1 ]; then postfix_lmtp=$delivery; fi

  e2e_log "test PKI and SoftHSM2 token"
  sh "$root/tests/pki/make-pki.sh" "$work/pki" >/dev/null 2>&1
  conf=$(softhsm_token "$work/hsm" pec-e2e 1234 "$work/pki/it.key" "$work/pki/it.pem" signer)
  {
    printf 'version: 1\n\n'
    provider_index_entry "PEC Example IT S.p.A." "$work/pki/it.pem" ricevute@pec.example.it pec.example.it
    provider_index_entry "PEC Example NET S.p.A." "$work/pki/net.pem" ricevute@pec.example.net pec.example.net
  } > "$work/index.ldif"

  e2e_log "clamd, Dovecot, Postfix"
  clamd_start "$work/clamd" "$clamd_port"
  dovecot_start "$work/dovecot" "$lmtp" "$imap"
  # example.com stands for the Internet: delivered locally, but not a PEC domain.
  postfix_start --sasl-path "$work/dovecot/run/auth-postfix" "$work/postfix" pec-a \
    "$submission" "$smtp" "$reinject" "$filter" "$milter" "$postfix_lmtp" pec.example.it example.com

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
${PROVIDER_ACCESS_EXTRA:-}

[filter]
listen = "127.0.0.1:$filter"
reinject = "127.0.0.1:$reinject"

[delivery]
listen = "127.0.0.1:$delivery"
dovecot = "127.0.0.1:$lmtp"
reinject = "127.0.0.1:$reinject"
EOF
  "$pec" check-config -c "$work/pec.toml" >/dev/null

  e2e_log "pec serve"
  SOFTHSM2_CONF=$conf PEC_E2E_PIN=1234 PEC_LOG=${PEC_LOG:-info} "$pec" serve -c "$work/pec.toml" 2> "$work/pec.log" &
  pec_pid=$!
  wait_for_port 127.0.0.1 "$milter" 30
  wait_for_port 127.0.0.1 "$filter" 30
  wait_for_port 127.0.0.1 "$delivery" 30
}

provider_down() {
  local work=$1
  if [ -n "${pec_pid:-}" ] && kill -0 "$pec_pid" 2>/dev/null; then
    kill "$pec_pid" 2>/dev/null || true
    wait "$pec_pid" 2>/dev/null || true
  fi
  postfix_stop "$work/postfix" >/dev/null 2>&1 || true
  dovecot_stop "$work/dovecot" >/dev/null 2>&1 || true
  clamd_stop "$work/clamd" >/dev/null 2>&1 || true
}

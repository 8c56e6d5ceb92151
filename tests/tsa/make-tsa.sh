#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# Test time-stamping authority for pec (tests only; never use these keys for real).
#
# Usage: make-tsa.sh OUTDIR PKIDIR
#
# PKIDIR is a test PKI made by tests/pki/make-pki.sh. Creates in OUTDIR:
#   tsa.key, tsa.pem   "PEC Test TSA": RSA-2048 leaf issued by the test CA, with
#                      extendedKeyUsage critical timeStamping and keyUsage digitalSignature
#                      (RFC 3161 §2.3);
#   tsa.cnf            the [tsa] section `openssl ts -reply` reads (SHA-256, policy
#                      1.3.6.1.4.1.99999.1.1, accuracy 1 s, nonce echoed, ESS cert id v2);
#   tsaserial          the serial number file of the tokens.
# Nothing is written outside OUTDIR.
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 OUTDIR PKIDIR" >&2
    exit 2
fi
out=$1
pki=$2
mkdir -p "$out"
out=$(cd "$out" && pwd)
pki=$(cd "$pki" && pwd)

cat > "$out/tsa.ext" <<'EXT'
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EXT

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$out/tsa.key" 2>/dev/null
openssl req -new -key "$out/tsa.key" -subj "/C=IT/O=PEC Test/CN=PEC Test TSA" \
    -out "$out/tsa.csr"
openssl x509 -req -in "$out/tsa.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
    -set_serial 0x3001 -days 3650 -sha256 -extfile "$out/tsa.ext" -extensions ext \
    -out "$out/tsa.pem" 2>/dev/null
rm -f "$out/tsa.csr"

echo 01 > "$out/tsaserial"
cat > "$out/tsa.cnf" <<CNF
[tsa]
default_tsa = test_tsa

[test_tsa]
dir = $out
serial = \$dir/tsaserial
crypto_device = builtin
signer_cert = \$dir/tsa.pem
certs = $pki/ca.pem
signer_key = \$dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
CNF
chmod 600 "$out/tsa.key"
echo "make-tsa: test TSA written to $out" >&2

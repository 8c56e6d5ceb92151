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
#   tsaserial          the serial number file of the tokens;
#   expired.key, expired.pem  a TSA certificate of the same profile valid 2020-01-01 ..
#                      2021-01-01 only, and the [expired_tsa] section of tsa.cnf signing
#                      with it (a TSA answering with an expired certificate);
#   server.key, server.pem    HTTPS server certificate for 127.0.0.1 and localhost;
#   client.key, client.pem    TLS client certificate (tsa.py --client-ca);
#   password           the basic authentication password of user "pec" (tsa.py --user).
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

# Certificates with explicit validity (openssl 3.0's x509 has no -not_before): openssl ca.
mkdir -p "$out/db/new"
: > "$out/db/index.txt"
cat > "$out/db/ca.cnf" <<CNF
[ca]
default_ca = test
[test]
database = $out/db/index.txt
new_certs_dir = $out/db/new
serial = $out/db/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[anything]
countryName = optional
organizationName = optional
commonName = supplied
CNF
issue() { # NAME SUBJECT SERIAL EXTFILE START END
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$out/$1.key" 2>/dev/null
    openssl req -new -key "$out/$1.key" -subj "$2" -out "$out/$1.csr"
    echo "$3" > "$out/db/serial"
    openssl ca -batch -notext -config "$out/db/ca.cnf" -in "$out/$1.csr" -out "$out/$1.pem" \
        -preserveDN -startdate "$5" -enddate "$6" -extfile "$4" -extensions ext \
        -cert "$pki/ca.pem" -keyfile "$pki/ca.key" 2>/dev/null
    rm -f "$out/$1.csr"
}
issue expired "/C=IT/O=PEC Test/CN=PEC Test TSA expired" 3002 "$out/tsa.ext" \
    20200101000000Z 20210101000000Z
cat > "$out/server.ext" <<'EXT'
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
EXT
issue server "/C=IT/O=PEC Test/CN=localhost" 3003 "$out/server.ext" \
    20200101000000Z 20450101000000Z
cat > "$out/client.ext" <<'EXT'
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
EXT
issue client "/C=IT/O=PEC Test/CN=pec tsa client" 3004 "$out/client.ext" \
    20200101000000Z 20450101000000Z
openssl rand -hex 12 > "$out/password"

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

[expired_tsa]
dir = $out
serial = \$dir/tsaserial
crypto_device = builtin
signer_cert = \$dir/expired.pem
certs = $pki/ca.pem
signer_key = \$dir/expired.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
CNF
chmod 600 "$out"/*.key "$out/password"
echo "make-tsa: test TSA written to $out" >&2

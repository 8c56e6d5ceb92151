#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# Test PKI with revocation for pec (tests only; never use these keys for real mail).
#
# Usage: make-revocation-pki.sh OUTDIR CRL_URL OCSP_URL
#
# Creates in OUTDIR, with openssl only:
#   ca.key, ca.pem      "Revocation Test CA" (stands in for AgID CA1): critical
#                       nameConstraints permitting only the rfc822 domain pec.example.it
#   good.pem/.key       leaf, serial 0x11, CRL_URL and OCSP_URL, not revoked
#   revoked.pem/.key    leaf, serial 0x12, CRL_URL and OCSP_URL, revoked (keyCompromise)
#                       on 2024-06-01
#   ocspgood.pem/.key   leaf, serial 0x13, OCSP_URL only, not revoked
#   ocsprev.pem/.key    leaf, serial 0x14, OCSP_URL only, revoked on 2024-06-01
#   outside.pem/.key    leaf, serial 0x15, posta-certificata@pec.other.it: outside the
#                       CA's name constraints
#   noeku.pem/.key      leaf, serial 0x16, CRL_URL, no extendedKeyUsage
#   crl.der             current CRL (lastUpdate now, nextUpdate in 30 days) listing 0x12, 0x14
#   crl-expired.der     CRL of 2023 (nextUpdate 2023-02-01), listing nothing
#   crl-wrong-ca.der    a CRL with the CA's name signed by another key, listing nothing
#   index.txt           the CA database, for `openssl ocsp -index`
# Every leaf: validity 2020-01-01 .. 2040-01-01, the provider profile of make-pki.sh.
set -eu

if [ $# -ne 3 ]; then
    echo "usage: $0 OUTDIR CRL_URL OCSP_URL" >&2
    exit 2
fi
out=$1 crl_url=$2 ocsp_url=$3
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$out"

key() {
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1.key" 2>/dev/null
}

mkdir -p db/new
: > db/index.txt
echo "unique_subject = no" > db/index.txt.attr
cat > db/ca.cnf <<CNF
[ca]
default_ca = test
[test]
database = $out/db/index.txt
new_certs_dir = $out/db/new
serial = $out/db/serial
crlnumber = $out/db/crlnumber
default_md = sha256
default_crl_days = 30
policy = anything
unique_subject = no
copy_extensions = none
[anything]
countryName = optional
organizationName = optional
commonName = supplied
[crl_ext]
authorityKeyIdentifier = keyid:always
CNF
echo 01 > db/crlnumber

cat > ca.ext <<'EXT'
[ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
nameConstraints = critical, permitted;email:pec.example.it
EXT

leaf_ext() { # FILE DOMAIN CRL(yes/no) OCSP(yes/no) EKU(yes/no)
    {
        echo "[ext]"
        echo "keyUsage = critical, digitalSignature"
        echo "authorityKeyIdentifier = keyid:always"
        echo "subjectKeyIdentifier = hash"
        echo "subjectAltName = email:posta-certificata@$2"
        [ "$5" = yes ] && echo "extendedKeyUsage = emailProtection"
        [ "$3" = yes ] && echo "crlDistributionPoints = URI:$crl_url"
        [ "$4" = yes ] && echo "authorityInfoAccess = OCSP;URI:$ocsp_url"
        true
    } > "$1"
}

sign() { # CSR OUT SERIAL EXTFILE START END [extra]
    csr=$1 certout=$2 serial=$3 extfile=$4 start=$5 end=$6
    shift 6
    echo "$serial" > db/serial
    openssl ca -batch -notext -config db/ca.cnf -in "$csr" -out "$certout" -preserveDN \
        -startdate "$start" -enddate "$end" -extfile "$extfile" -extensions ext "$@" 2>/dev/null
}

key ca
openssl req -new -key ca.key -subj "/C=IT/O=PEC Test/CN=Revocation Test CA" -out ca.csr
sign ca.csr ca.pem 01 ca.ext 20200101000000Z 20450101000000Z -selfsign -keyfile ca.key

issue() { # NAME DOMAIN SERIAL CRL OCSP EKU
    key "$1"
    leaf_ext "$1.ext" "$2" "$4" "$5" "$6"
    openssl req -new -key "$1.key" -subj "/C=IT/O=PEC Example IT S.p.A./CN=Posta Certificata $1" \
        -out "$1.csr"
    sign "$1.csr" "$1.pem" "$3" "$1.ext" 20200101000000Z 20400101000000Z -cert ca.pem -keyfile ca.key
}

issue good pec.example.it 11 yes yes yes
issue revoked pec.example.it 12 yes yes yes
issue ocspgood pec.example.it 13 no yes yes
issue ocsprev pec.example.it 14 no yes yes
issue outside pec.other.it 15 yes yes yes
issue noeku pec.example.it 16 yes no no

# The expired CRL first, while nothing is revoked.
openssl ca -batch -gencrl -config db/ca.cnf -cert ca.pem -keyfile ca.key -crlexts crl_ext \
    -crl_lastupdate 20230101000000Z -crl_nextupdate 20230201000000Z -out crl-expired.pem 2>/dev/null
openssl crl -in crl-expired.pem -outform DER -out crl-expired.der

# A CRL with the CA's name, signed by a key that is not the CA's.
key impostor
openssl req -new -x509 -key impostor.key -subj "/C=IT/O=PEC Test/CN=Revocation Test CA" \
    -days 3650 -out impostor.pem 2>/dev/null
openssl ca -batch -gencrl -config db/ca.cnf -cert impostor.pem -keyfile impostor.key \
    -out crl-wrong-ca.pem 2>/dev/null
openssl crl -in crl-wrong-ca.pem -outform DER -out crl-wrong-ca.der

# Revoke 0x12 and 0x14 (on 2024-06-01, key compromise), then the current CRL.
for n in revoked ocsprev; do
    openssl ca -batch -config db/ca.cnf -cert ca.pem -keyfile ca.key -revoke "$n.pem" \
        -crl_reason keyCompromise 2>/dev/null
done
# openssl ca records the revocation at "now"; the date the tests rely on is 2024-06-01.
sed -i 's/^\(R\t[0-9]*Z\t\)[0-9]*Z,/\1240601000000Z,/' db/index.txt
openssl ca -batch -gencrl -config db/ca.cnf -cert ca.pem -keyfile ca.key -crlexts crl_ext \
    -out crl.pem 2>/dev/null
openssl crl -in crl.pem -outform DER -out crl.der
cp db/index.txt index.txt
chmod 600 ./*.key
echo "make-revocation-pki: written to $out" >&2

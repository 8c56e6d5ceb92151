#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# Issues one more provider leaf from the test CA of make-pki.sh (development and tests only).
#
# Usage: issue-leaf.sh PKIDIR NAME KEYSPEC [START END [DOMAIN PROVIDER]]
#
#   KEYSPEC  rsa:2048, rsa:3072, rsa:4096, ec:P-256 or ec:P-384
#   START, END  validity as openssl ca takes it (YYYYMMDDHHMMSSZ); default
#            20200101000000Z .. 20400101000000Z
#   DOMAIN, PROVIDER  default pec.example.it, "PEC Example IT S.p.A."
#
# Writes PKIDIR/NAME.key (PKCS#8) and PKIDIR/NAME.pem with the provider profile of
# make-pki.sh, signed by PKIDIR/ca.key, with a random serial. Overwrites NAME.* if present.
set -eu

if [ $# -ne 3 ] && [ $# -ne 5 ] && [ $# -ne 7 ]; then
    echo "usage: $0 PKIDIR NAME KEYSPEC [START END [DOMAIN PROVIDER]]" >&2
    exit 2
fi
dir=$1 name=$2 spec=$3
start=${4:-20200101000000Z} end=${5:-20400101000000Z}
domain=${6:-pec.example.it} provider=${7:-PEC Example IT S.p.A.}
[ -f "$dir/ca.key" ] && [ -f "$dir/ca.pem" ] || { echo "issue-leaf: no CA in $dir (run make-pki.sh)" >&2; exit 2; }

work=$(mktemp -d "$dir/.leaf.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

case $spec in
    rsa:2048|rsa:3072|rsa:4096)
        openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:${spec#rsa:}" -out "$work/key" 2>/dev/null ;;
    ec:P-256|ec:P-384)
        openssl genpkey -algorithm EC -pkeyopt "ec_paramgen_curve:${spec#ec:}" \
            -pkeyopt ec_param_enc:named_curve -out "$work/key" 2>/dev/null ;;
    *) echo "issue-leaf: unknown key spec \"$spec\"" >&2; exit 2 ;;
esac

cat > "$work/ext" <<EXT
[ext]
keyUsage = critical, digitalSignature
authorityKeyIdentifier = keyid:always
subjectKeyIdentifier = hash
subjectAltName = email:posta-certificata@$domain
extendedKeyUsage = emailProtection
EXT
mkdir -p "$work/db/new"
: > "$work/db/index.txt"
openssl rand -hex 8 | sed 's/^./4/' > "$work/db/serial"
cat > "$work/db/ca.cnf" <<CNF
[ca]
default_ca = test
[test]
database = $work/db/index.txt
new_certs_dir = $work/db/new
serial = $work/db/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[anything]
countryName = optional
organizationName = optional
commonName = supplied
CNF
openssl req -new -key "$work/key" -subj "/C=IT/O=$provider/CN=Posta Certificata $provider" \
    -out "$work/csr"
openssl ca -batch -notext -config "$work/db/ca.cnf" -in "$work/csr" -out "$work/pem" -preserveDN \
    -startdate "$start" -enddate "$end" -extfile "$work/ext" -extensions ext \
    -cert "$dir/ca.pem" -keyfile "$dir/ca.key" 2>/dev/null
mv "$work/key" "$dir/$name.key"
chmod 600 "$dir/$name.key"
mv "$work/pem" "$dir/$name.pem"
echo "issue-leaf: $spec leaf $dir/$name.pem" >&2

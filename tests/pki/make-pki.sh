#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# Test PKI for pec (development and tests only; never use these keys for real mail).
#
# Usage: make-pki.sh OUTDIR
#
# Creates in OUTDIR, with openssl only:
#   ca.key, ca.pem            "PEC Test CA": self-signed RSA-3072 root standing in for the
#                             national PEC CA (AgID CA1). CA:TRUE, pathlen 0, and critical
#                             nameConstraints permitting only the rfc822 domains
#                             pec.example.it and pec.example.net (spec §2.2).
#   chain.pem                 the CA certificate again, as the "chain" a provider puts in its CMS.
#   it.key, it.pem            provider leaf for pec.example.it   (PKCS#8 key, RSA-3072: the
#                             default for new keys from 2027, ETSI TS 119 312)
#   it-pkcs1.key              the same key in PKCS#1 ("BEGIN RSA PRIVATE KEY") form
#   net.key, net.pem          provider leaf for pec.example.net  (RSA-2048, as peers sign today)
#   outsider.key, outsider.pem  self-signed leaf with the provider profile, not issued by the CA
#   expired.key, expired.pem  leaf for pec.example.it issued by the CA, valid 2020-01-01..2021-01-01
#   it-tls.key, it-tls.pem    TLS server (and client) certificate of provider A's mail server,
#   net-tls.key, net-tls.pem  and of B's, issued by the CA: subjectAltName DNS mx.<domain>,
#                             DNS <domain>, IP 127.0.0.1; extendedKeyUsage serverAuth,
#                             clientAuth (the servers' STARTTLS; spec §5.2)
#   rogue-ca.key, rogue-ca.pem  "PEC Rogue CA": another self-signed CA, trusted by nobody
#   net-rogue-tls.key, net-rogue-tls.pem  a TLS certificate for pec.example.net as above,
#                             issued by the rogue CA (an impostor, or a misconfigured peer)
#   net-wrongname-tls.key, net-wrongname-tls.pem  a TLS certificate issued by the CA for
#                             mx.other.example.org (DNS) and 127.0.0.1 only: the wrong name
#   it-seal.key, it-seal.pem, net-seal.key, net-seal.pem
#                             the seal keys of the legal log of each provider (not the PEC
#                             message keys): Subject C=IT, O=<provider>, CN=Sigillo registro
#                             <provider>; keyUsage digitalSignature, nonRepudiation (critical);
#                             no subjectAltName, no extendedKeyUsage
#   crl.der                   only with PKI_CRL_URL set: the CA's CRL (nothing revoked, valid
#                             30 days); the leaves it issues then name PKI_CRL_URL as their
#                             CRL distribution point (tests/e2e/faults.sh, "CRL server down")
#   (outsider and expired are RSA-2048 too.)
#
# Further leaves of other key types (RSA-4096, ECDSA P-256/P-384) and validity periods:
# issue-leaf.sh, with the CA written here.
#
# Environment: PEC_TEST_RSA_BITS, the size of the CA and "it" keys (default 3072).
#
# Leaves follow the provider certificate profile of spec §2.2 exactly:
#   Subject C=IT, O=<provider name>, CN=Posta Certificata <provider name>;
#   subjectAltName rfc822Name posta-certificata@<domain>; keyUsage digitalSignature (critical);
#   authorityKeyIdentifier; subjectKeyIdentifier; extendedKeyUsage emailProtection;
#   no basicConstraints.
#
# Idempotent: when OUTDIR already holds a complete set it is left untouched (delete the
# directory, or its .complete stamp, to regenerate). Nothing is written outside OUTDIR.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd)

files="ca.key ca.pem chain.pem it.key it-pkcs1.key it.pem net.key net.pem outsider.key outsider.pem expired.key expired.pem
    it-tls.key it-tls.pem net-tls.key net-tls.pem rogue-ca.key rogue-ca.pem net-rogue-tls.key net-rogue-tls.pem
    net-wrongname-tls.key net-wrongname-tls.pem it-seal.key it-seal.pem net-seal.key net-seal.pem"
[ -n "${PKI_CRL_URL:-}" ] && files="$files crl.der"
if [ -f "$out/.complete" ]; then
    complete=yes
    for f in $files; do
        [ -f "$out/$f" ] || complete=no
    done
    if [ "$complete" = yes ]; then
        echo "make-pki: $out already complete" >&2
        exit 0
    fi
fi
rm -f "$out/.complete"

work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

bits=${PEC_TEST_RSA_BITS:-3072}

key() { # NAME [BITS]
    openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:${2:-2048}" -out "$work/$1.key" 2>/dev/null
}

# Extensions. OpenSSL reads the [ext] section of each file.
cat > "$work/ca.ext" <<'EXT'
[ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
nameConstraints = critical, permitted;email:pec.example.it, permitted;email:pec.example.net
EXT

leaf_ext() { # FILE DOMAIN AKI
    cat > "$1" <<EXT
[ext]
keyUsage = critical, digitalSignature
authorityKeyIdentifier = $3
subjectKeyIdentifier = hash
subjectAltName = email:posta-certificata@$2
extendedKeyUsage = emailProtection
EXT
    if [ -n "${PKI_CRL_URL:-}" ]; then
        echo "crlDistributionPoints = URI:$PKI_CRL_URL" >> "$1"
    fi
}

subject() { # PROVIDER
    printf '/C=IT/O=%s/CN=Posta Certificata %s' "$1" "$1"
}

# Every certificate is issued with `openssl ca`, which takes explicit -startdate/-enddate
# (openssl 3.0's x509 has no -not_before/-not_after): validity starts in 2020 so that tests
# can sign and verify at fixed instants in the past (golden files use June 2025).
mkdir -p "$work/db/new"
: > "$work/db/index.txt"
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

sign() { # CSR OUT SERIAL EXTFILE START END [extra openssl-ca arguments]
    csr=$1 certout=$2 serial=$3 extfile=$4 start=$5 end=$6
    shift 6
    echo "$serial" | sed 's/^0x//' > "$work/db/serial"
    openssl ca -batch -notext -config "$work/db/ca.cnf" -in "$csr" -out "$certout" -preserveDN \
        -startdate "$start" -enddate "$end" -extfile "$extfile" -extensions ext "$@" 2>/dev/null
}

# The CA (a root: OpenSSL needs a self-signed trust anchor for -CAfile).
key ca "$bits"
openssl req -new -key "$work/ca.key" -subj "/C=IT/O=PEC Test/CN=PEC Test CA" -out "$work/ca.csr"
sign "$work/ca.csr" "$work/ca.pem" 01 "$work/ca.ext" 20200101000000Z 20450101000000Z \
    -selfsign -keyfile "$work/ca.key"
cp "$work/ca.pem" "$work/chain.pem"

issue() { # NAME PROVIDER DOMAIN SERIAL BITS
    key "$1" "$5"
    leaf_ext "$work/$1.ext" "$3" keyid:always
    openssl req -new -key "$work/$1.key" -subj "$(subject "$2")" -out "$work/$1.csr"
    sign "$work/$1.csr" "$work/$1.pem" "$4" "$work/$1.ext" 20200101000000Z 20400101000000Z \
        -cert "$work/ca.pem" -keyfile "$work/ca.key"
}

issue it "PEC Example IT S.p.A." pec.example.it 0x1001 "$bits"
issue net "PEC Example NET S.p.A." pec.example.net 0x1002 2048
openssl rsa -in "$work/it.key" -traditional -out "$work/it-pkcs1.key" 2>/dev/null

# Outsider: the same profile, self-signed (AKI = own SKI), unknown to the test CA.
key outsider
leaf_ext "$work/outsider.ext" pec.example.it keyid:always
openssl req -new -x509 -sha256 -days 1825 -key "$work/outsider.key" \
    -subj "$(subject "PEC Outsider S.p.A.")" -set_serial 0x2001 \
    -config "$work/outsider.ext" -extensions ext -out "$work/outsider.pem"

# Expired leaf: valid 2020-01-01 .. 2021-01-01.
key expired
leaf_ext "$work/expired.ext" pec.example.it keyid:always
openssl req -new -key "$work/expired.key" -subj "$(subject "PEC Example IT S.p.A.")" \
    -out "$work/expired.csr"
sign "$work/expired.csr" "$work/expired.pem" 1003 "$work/expired.ext" 20200101000000Z 20210101000000Z \
    -cert "$work/ca.pem" -keyfile "$work/ca.key"

# TLS server certificates (the mail servers' STARTTLS), not the signing profile above.
tls_ext() { # FILE DNSNAME...
    f=$1
    shift
    san=""
    for n in "$@"; do san="${san}DNS:$n, "; done
    cat > "$f" <<EXT
[ext]
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
authorityKeyIdentifier = keyid:always
subjectKeyIdentifier = hash
subjectAltName = ${san}IP:127.0.0.1
EXT
}
tls_issue() { # NAME PROVIDER SERIAL DNSNAME...
    name=$1 provider=$2 serial=$3
    shift 3
    key "$name"
    tls_ext "$work/$name.ext" "$@"
    openssl req -new -key "$work/$name.key" -subj "/C=IT/O=$provider/CN=$1" -out "$work/$name.csr"
    sign "$work/$name.csr" "$work/$name.pem" "$serial" "$work/$name.ext" 20200101000000Z 20400101000000Z \
        -cert "$work/ca.pem" -keyfile "$work/ca.key"
}
tls_issue it-tls "PEC Example IT S.p.A." 0x1101 mx.pec.example.it pec.example.it
tls_issue net-tls "PEC Example NET S.p.A." 0x1102 mx.pec.example.net pec.example.net
tls_issue net-wrongname-tls "PEC Example NET S.p.A." 0x1103 mx.other.example.org

# The rogue CA and its certificate for pec.example.net (openssl x509 -req: its own serials).
key rogue-ca
openssl req -new -x509 -sha256 -days 9000 -key "$work/rogue-ca.key" \
    -subj "/C=IT/O=PEC Rogue/CN=PEC Rogue CA" -set_serial 0x3001 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$work/rogue-ca.pem"
key net-rogue-tls
tls_ext "$work/net-rogue-tls.ext" mx.pec.example.net pec.example.net
openssl req -new -key "$work/net-rogue-tls.key" -subj "/C=IT/O=PEC Rogue/CN=mx.pec.example.net" \
    -out "$work/net-rogue-tls.csr"
openssl x509 -req -sha256 -days 9000 -in "$work/net-rogue-tls.csr" -CA "$work/rogue-ca.pem" \
    -CAkey "$work/rogue-ca.key" -set_serial 0x3002 -extfile "$work/net-rogue-tls.ext" -extensions ext \
    -out "$work/net-rogue-tls.pem" 2>/dev/null
# Seal keys: a key of their own, a certificate that is not a PEC signing certificate.
cat > "$work/seal.ext" <<'EXT'
[ext]
keyUsage = critical, digitalSignature, nonRepudiation
authorityKeyIdentifier = keyid:always
subjectKeyIdentifier = hash
EXT
seal() { # NAME PROVIDER SERIAL
    key "$1"
    openssl req -new -key "$work/$1.key" -subj "/C=IT/O=$2/CN=Sigillo registro $2" -out "$work/$1.csr"
    sign "$work/$1.csr" "$work/$1.pem" "$3" "$work/seal.ext" 20200101000000Z 20400101000000Z \
        -cert "$work/ca.pem" -keyfile "$work/ca.key"
}
seal it-seal "PEC Example IT S.p.A." 1011
seal net-seal "PEC Example NET S.p.A." 1012
if [ -n "${PKI_CRL_URL:-}" ]; then
    echo 01 > "$work/db/crlnumber"
    sed -i "s|^\[test\]|[test]\ncrlnumber = $work/db/crlnumber|" "$work/db/ca.cnf"
    openssl ca -batch -gencrl -crldays 30 -config "$work/db/ca.cnf" -cert "$work/ca.pem" \
        -keyfile "$work/ca.key" -out "$work/crl.pem" 2>/dev/null
    openssl crl -in "$work/crl.pem" -outform DER -out "$work/crl.der"
fi

for f in $files; do
    mv "$work/$f" "$out/$f"
done
chmod 600 "$out"/*.key
touch "$out/.complete"
echo "make-pki: test PKI written to $out" >&2

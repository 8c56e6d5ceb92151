#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# SoftHSM2 token for pec tests (development and tests only).
#
# Usage: make-token.sh OUTDIR LABEL PIN KEYFILE CERTFILE KEYLABEL [KEYFILE CERTFILE KEYLABEL]
#
# Writes OUTDIR/softhsm2.conf (token directory OUTDIR/tokens), (re)creates the token LABEL
# with user PIN PIN, and imports the private key KEYFILE (PEM, PKCS#1 or PKCS#8; RSA or EC,
# softhsm2-util imports either from PKCS#8) and the certificate CERTFILE (PEM) on it, both
# with CKA_LABEL KEYLABEL and CKA_ID 01. A second KEYFILE CERTFILE KEYLABEL (the seal key of
# the legal log) is imported too, with CKA_ID 02.
# Several tokens may live in one OUTDIR: run the script once per token. A token that already
# has LABEL is deleted and recreated, so the script is idempotent.
#
# Prints the SOFTHSM2_CONF path on stdout (and nothing else); diagnostics go to stderr.
# Set SOFTHSM2_CONF to that path in the process that loads the module, before its first
# PKCS#11 call: SoftHSM reads the configuration (and finds its tokens) at C_Initialize.
#
# Environment: PKCS11_MODULE (default: the Debian softhsm2 module), SO_PIN (default 12345678).
set -eu

if [ $# -ne 6 ] && [ $# -ne 9 ]; then
    echo "usage: $0 OUTDIR LABEL PIN KEYFILE CERTFILE KEYLABEL [KEYFILE CERTFILE KEYLABEL]" >&2
    exit 2
fi
out=$1 label=$2 pin=$3 keyfile=$4 certfile=$5 keylabel=$6
if [ $# -eq 9 ]; then
    keyfile2=$7 certfile2=$8 keylabel2=$9
else
    keyfile2="" certfile2="" keylabel2=""
fi
so_pin=${SO_PIN:-12345678}

for tool in softhsm2-util pkcs11-tool openssl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "make-token: \"$tool\" not found: install softhsm2, opensc and openssl" >&2
        exit 3
    fi
done

module=${PKCS11_MODULE:-}
if [ -z "$module" ]; then
    for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
        /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
        if [ -f "$m" ]; then module=$m; break; fi
    done
fi
if [ -z "$module" ] || [ ! -f "$module" ]; then
    echo "make-token: softhsm2 pkcs#11 module not found (set PKCS11_MODULE)" >&2
    exit 3
fi

mkdir -p "$out/tokens"
out=$(cd "$out" && pwd)
conf="$out/softhsm2.conf"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
    "$out" > "$conf"
SOFTHSM2_CONF=$conf
export SOFTHSM2_CONF

if softhsm2-util --show-slots 2>/dev/null | grep -q "Label: *$label *\$"; then
    softhsm2-util --delete-token --token "$label" >&2
fi
softhsm2-util --init-token --free --label "$label" --so-pin "$so_pin" --pin "$pin" >&2

work=$(mktemp -d "$out/.token.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
openssl pkcs8 -topk8 -nocrypt -in "$keyfile" -out "$work/key.p8"
openssl x509 -in "$certfile" -outform DER -out "$work/cert.der"
softhsm2-util --import "$work/key.p8" --token "$label" --label "$keylabel" --id 01 --pin "$pin" >&2
pkcs11-tool --module "$module" --token-label "$label" --login --pin "$pin" \
    --write-object "$work/cert.der" --type cert --label "$keylabel" --id 01 >&2
if [ -n "$keyfile2" ]; then
    openssl pkcs8 -topk8 -nocrypt -in "$keyfile2" -out "$work/key2.p8"
    openssl x509 -in "$certfile2" -outform DER -out "$work/cert2.der"
    softhsm2-util --import "$work/key2.p8" --token "$label" --label "$keylabel2" --id 02 --pin "$pin" >&2
    pkcs11-tool --module "$module" --token-label "$label" --login --pin "$pin" \
        --write-object "$work/cert2.der" --type cert --label "$keylabel2" --id 02 >&2
fi

echo "$conf"

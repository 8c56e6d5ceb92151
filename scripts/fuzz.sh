#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Runs every cargo-fuzz target of fuzz/ for a bounded time: SECONDS each (default 25, what
# CI uses; run longer by hand, e.g. scripts/fuzz.sh 600). Seeds come from the project's
# own fixtures (tests/fixtures); the growing corpus, the seeds and any crash artifacts are
# kept under the target directory, never in the source tree. Exits non-zero when a target
# finds a crash, naming the artifact to reproduce it with:
#   cargo fuzz run --target-dir DIR TARGET ARTIFACT
#
# cargo-fuzz needs nightly compiler flags; with the stable toolchain, RUSTC_BOOTSTRAP=1
# allows them. AddressSanitizer is on by default; FUZZ_SANITIZER=none builds faster (the
# code under test is safe Rust).
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (cargo-fuzz: scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds=${1:-25}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(mime classify daticert breve smtp_session lmtp_session attachments xmldsig rem_evidence rem_message)

export RUSTC_BOOTSTRAP=1
target_dir=${CARGO_TARGET_DIR:-$root/target}/fuzz
work=$target_dir/pec-fuzz
sanitizer=${FUZZ_SANITIZER:-address}
fuzz=(cargo fuzz)
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is missing: run scripts/install-deps.sh" >&2
  exit 2
fi

# --- seeds from the fixtures ---------------------------------------------------------------
seeds=$work/seeds
rm -rf "$seeds"
mkdir -p "$seeds"/{mime,classify,daticert,breve,smtp_session,lmtp_session,attachments,xmldsig,rem_evidence,rem_message}
fx=tests/fixtures
for f in "$fx"/originals/*.eml; do
  cp "$f" "$seeds/mime/"
  cp "$f" "$seeds/breve/"
  cp "$f" "$seeds/attachments/"
done
for d in "$fx"/*/; do
  name=$(basename "$d")
  [ -f "$d/expected-daticert.xml" ] && cp "$d/expected-daticert.xml" "$seeds/daticert/$name.xml"
  [ -f "$d/expected-headers.txt" ] || continue
  # The classify target reads its input as the top-level header followed by the signed
  # entity: the fixture's expected header, then the usual multipart/mixed.
  {
    grep -v '^Content-Type: multipart/signed' "$d/expected-headers.txt" | sed 's/$/\r/'
    printf 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
    printf 'Content-Type: text/plain; charset=UTF-8\r\n\r\n'
    [ -f "$d/expected-text.txt" ] && sed 's/$/\r/' "$d/expected-text.txt"
    if [ -f "$d/expected-daticert.xml" ]; then
      printf '\r\n--b\r\nContent-Type: application/xml; name="daticert.xml"\r\n'
      printf 'Content-Disposition: inline; filename="daticert.xml"\r\n\r\n'
      sed 's/$/\r/' "$d/expected-daticert.xml"
    fi
    printf '\r\n--b\r\nContent-Type: message/rfc822; name="postacert.eml"\r\n'
    printf 'Content-Disposition: inline; filename="postacert.eml"\r\n\r\n'
    cat "$fx/originals/contratto.eml"
    printf '\r\n--b--\r\n'
  } > "$seeds/classify/$name.eml"
done
# The xmldsig target: the daticert documents, and the evidences of the REM kit when it is
# there (read where they are, written only into the seed directory).
cp "$seeds"/daticert/* "$seeds/xmldsig/" 2>/dev/null || true
rem_kit=${PEC_REM_KIT:-$root/../shared/rem-kit}
if [ -d "$rem_kit" ]; then
  python3 - "$rem_kit" "$seeds/xmldsig" <<'PY'
import email, pathlib, sys
n = 0
for path in sorted(pathlib.Path(sys.argv[1]).rglob("*.eml")):
    for part in email.message_from_bytes(path.read_bytes()).walk():
        if part.get("REM-Section-Type", "").strip() == "rem_message/xml_evidence" and n < 40:
            pathlib.Path(sys.argv[2], "evidence-%d.xml" % n).write_bytes(part.get_payload(decode=True))
            n += 1
PY
else
  echo "fuzz: SKIPPED the REM kit evidences as xmldsig seeds: $rem_kit absent" >&2
fi
# REM: a minimal receipt, and the AgID examples when the REM kit is at hand (read where it
# is, copied only into the seed directory under the target directory).
{
  printf 'REM-MetadataVersion: EN31953203V010201\r\nREM-ApplicablePolicy: http://uri.etsi.org/19532/v1#/REMbaseline\r\n'
  printf 'REM-MessageType: http://uri.etsi.org/19522/v1#/ERDMessageType/receipt\r\n'
  printf 'REM-EventIdentifier: http://uri.etsi.org/19522/Event/RelayAcceptance\r\n'
  printf 'REM-ReasonIdentifier: http://uri.etsi.org/19522/EventReason/S_ERDS_MessageSuccessfullyRelayed\r\n'
  printf 'REM-DigestAlgorithm: http://www.w3.org/2001/04/xmlenc#sha256\r\nREM-DigestValue: AAAA\r\n'
  printf 'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; boundary="s"\r\n\r\n'
  printf -- '--s\r\nContent-Type: multipart/mixed; boundary="m"\r\n\r\n'
  printf -- '--m\r\nREM-Section-Type: rem_message/introduction\r\nContent-Type: multipart/alternative; boundary="a"\r\n\r\n'
  printf -- '--a\r\nContent-Type: text/plain\r\n\r\nhi\r\n--a\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--a--\r\n'
  printf -- '--m\r\nContent-Type: application/xml; name="RelayAcceptance.xml"\r\nContent-Transfer-Encoding: base64\r\n'
  printf 'REM-Section-Type: rem_message/xml_evidence\r\n\r\nPGEvPg==\r\n--m--\r\n'
  printf -- '--s\r\nContent-Type: application/pkcs7-signature\r\n\r\nAAAA\r\n--s--\r\n'
} > "$seeds/rem_message/receipt.eml"
rem_kit=${PEC_REM_KIT:-$root/../shared/rem-kit}
if [ -d "$rem_kit/agid-rem-policy-it/Intra-REM-flow" ]; then
  cp "$rem_kit"/agid-rem-policy-it/Intra-REM-flow/*.eml "$seeds/rem_message/"
else
  echo "fuzz: SKIPPED the REM kit seeds: ../shared/rem-kit absent" >&2
fi
session() { # session GREETING_VERB > file: one whole transaction, pipelined
  printf '%s client.example\r\n' "$1"
  [ "$1" = EHLO ] && printf 'XFORWARD NAME=client.example ADDR=192.0.2.1 IDENT=4F1A2B3C4D\r\n'
  printf 'MAIL FROM:<alice@pec.example.it> BODY=8BITMIME SIZE=100\r\n'
  printf 'RCPT TO:<bob@pec.example.net>\r\nRCPT TO:<carol@example.com>\r\nDATA\r\n'
  printf 'Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n'
}
# An unsigned ERDS evidence of our own, every component present once.
cat > "$seeds/rem_evidence/evidence.xml" <<'XML'
<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<tns:Evidence xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:elp="http://eidas.europa.eu/attributes/legalperson" xmlns:enp="http://eidas.europa.eu/attributes/naturalperson" xmlns:ext="http://uri.etsi.org/19532/v1#" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:tns="http://uri.etsi.org/19522/v1#" version="EN319522v1.1.1">
<tns:EvidenceIdentifier>ev1@rem.example.it</tns:EvidenceIdentifier>
<tns:ERDSEventId>http://uri.etsi.org/19522/Event/RelayFailure</tns:ERDSEventId>
<tns:EventReasons><tns:EventReason><Code>http://uri.etsi.org/19522/EventReason/R_ERDS_Unreachable</Code><Details>RB09</Details><Details>x &amp; y</Details></tns:EventReason></tns:EventReasons>
<EventTime>2026-12-06T10:11:12Z</EventTime>
<tns:EvidenceIssuerPolicyID><PolicyID>http://uri.etsi.org/19532/v1#/REMbaseline</PolicyID></tns:EvidenceIssuerPolicyID>
<tns:EvidenceIssuerDetails><tns:Identity><saml:Attribute FriendlyName="LegalName" Name="http://eidas.europa.eu/attributes/legalperson/LegalName"><saml:AttributeValue xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="elp:LegalNameType">P</saml:AttributeValue></saml:Attribute></tns:Identity></tns:EvidenceIssuerDetails>
<tns:SenderDetails><Identifier IdentifierSchemeName="mailto">a@rem.example.it</Identifier><AssuranceLevelsDetails><GlobalAssuranceLevel><AssuranceLevel>http://eidas.europa.eu/LoA/substantial</AssuranceLevel></GlobalAssuranceLevel><tns:AuthenticationDetails><AuthenticationTime>2026-12-06T10:01:00Z</AuthenticationTime><AuthenticationMethod>urn:x</AuthenticationMethod></tns:AuthenticationDetails></AssuranceLevelsDetails></tns:SenderDetails>
<tns:RecipientDetails><Identifier IdentifierSchemeName="mailto">b@rem.example.net</Identifier></tns:RecipientDetails>
<tns:SubmissionTime>2026-12-06T10:11:00Z</tns:SubmissionTime><EvidenceRefersToRecipient>1</EvidenceRefersToRecipient>
<tns:MessageIdentifier>m1@rem.example.it</tns:MessageIdentifier>
<tns:UserContentInfo><AppLayerIdentifier>&lt;u@x&gt;</AppLayerIdentifier><ComposingParts>1</ComposingParts><tns:PartsInfo><tns:PartInfo><Identifier>urn:oid:1.3.6.1.7</Identifier><ContentType>message/rfc822</ContentType><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue>AAAA</ds:DigestValue></tns:PartInfo></tns:PartsInfo></tns:UserContentInfo>
<ForwardedToExternalSystem>mx.example.com</ForwardedToExternalSystem>
<tns:ExternalERDSDetails><tns:Identity/></tns:ExternalERDSDetails>
<tns:Extensions><tns:Extension isCritical="false"><ext:GeneralEvidenceInfo><ext:Subject>s</ext:Subject><ext:UntrustedPathToRecipient>1</ext:UntrustedPathToRecipient></ext:GeneralEvidenceInfo></tns:Extension><tns:Extension isCritical="false"><ext:RelayEvidenceInfo><ext:RelayEvidenceRefersTo>1</ext:RelayEvidenceRefersTo></ext:RelayEvidenceInfo></tns:Extension></tns:Extensions>
<ds:Signature/></tns:Evidence>
XML
session EHLO > "$seeds/smtp_session/transaction"
session LHLO > "$seeds/lmtp_session/transaction"

# --- build once, then run each target --------------------------------------------------------
echo "== fuzz: building ${#targets[@]} targets (sanitizer: $sanitizer)"
start=$(date +%s)
"${fuzz[@]}" build --target-dir "$target_dir" --sanitizer "$sanitizer"
echo "== fuzz: built in $(($(date +%s) - start)) s"

failed=()
for t in "${targets[@]}"; do
  corpus=$work/corpus/$t
  artifacts=$work/artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  echo "== fuzz: $t for $seconds s"
  if ! "${fuzz[@]}" run --target-dir "$target_dir" --sanitizer "$sanitizer" "$t" \
    "$corpus" "$seeds/$t" -- \
    -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 > "$work/$t.log" 2>&1; then
    failed+=("$t")
    tail -40 "$work/$t.log" >&2
    echo "fuzz: $t FAILED; artifacts in $artifacts" >&2
  else
    grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$work/$t.log" | tail -2 || true
  fi
done
echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]

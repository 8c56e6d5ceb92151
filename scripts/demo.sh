#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# The main job, on this machine: two PEC providers exchange a certified message.
#
# It installs the Debian packages it needs, builds pec, and starts two providers on loopback
# ports — each with its own Postfix instance, Dovecot, clamd (local signature database),
# SoftHSM2 token and `pec serve` (access point, reception point, delivery point), both
# listed in one provider index. Alice (pec.example.it, provider A) sends Bob
# (pec.example.net, provider B) a message with an attachment, asking for a short delivery
# receipt. The demo then prints what each side received — the kind of message, its time and
# the verdict of `pec verify` — and stops everything it started.
#
# Usage: scripts/demo.sh        (as root: Postfix's master runs as root)
#        DEMO_KEEP=1 scripts/demo.sh   keeps the providers' files (not the processes)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/install-deps.sh --no-cargo-tools
tests/e2e/install.sh
echo "== building pec (release)"
cargo build --release --locked --bin pec
target=${CARGO_TARGET_DIR:-target}
export PEC_BIN="$(cd "$target/release" && pwd)/pec"

# shellcheck source=tests/e2e/lib.sh
. tests/e2e/lib.sh
# shellcheck source=tests/e2e/provider.sh
. tests/e2e/provider.sh
mail=(/usr/bin/python3 "$root/tests/e2e/pecmail.py")

work=$(e2e_tmpdir)
cleanup() {
  status=$?
  provider_down "$work/a"
  provider_down "$work/b"
  if [ "$status" -ne 0 ] || [ -n "${DEMO_KEEP:-}" ]; then
    echo "demo: files kept in $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT

echo "== starting provider A (pec.example.it) and provider B (pec.example.net)"
export PROVIDER_PKI=$work/pki PROVIDER_LMTP_PROXY=1
provider_up "$work/a" pec.example.it it >/dev/null 2>&1
a_submission=$submission a_smtp=$smtp a_imap=$imap a_conf=$conf
provider_up "$work/b" pec.example.net net >/dev/null 2>&1
b_smtp=$smtp b_imap=$imap
postfix_route "$work/a/postfix" pec.example.net "127.0.0.1:$b_smtp"
postfix_route "$work/b/postfix" pec.example.it "127.0.0.1:$a_smtp"

echo "== alice@pec.example.it sends bob@pec.example.net a message with an attachment"
printf 'From: Alice <alice@pec.example.it>\r\nTo: bob@pec.example.net\r\nSubject: Contratto di fornitura\r\nDate: %s\r\nMessage-ID: <demo-%s@client.example.it>\r\nX-TipoRicevuta: breve\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nBuongiorno Bob, in allegato il contratto.\r\n--b\r\nContent-Type: application/pdf; name="contratto.pdf"\r\nContent-Disposition: attachment; filename="contratto.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n--b--\r\n' \
  "$(date -R)" "$$" "$(printf '%%PDF-1.4 demo contract\n' | base64 -w0)" > "$work/message.eml"
"${mail[@]}" send --port "$a_submission" --user alice@pec.example.it --password test \
  --from alice@pec.example.it --to bob@pec.example.net "$work/message.eml" >/dev/null

# Alice: the acceptance receipt (A) and the delivery receipt (B). Bob: the envelope.
"${mail[@]}" fetch --port "$a_imap" --user alice@pec.example.it --password test --count 2 \
  --dir "$work/alice" --deadline 120 >/dev/null
"${mail[@]}" fetch --port "$b_imap" --user bob@pec.example.net --password test --count 1 \
  --dir "$work/bob" --deadline 120 >/dev/null

show() { # WHO FILE
  local out kind date verdict
  out=$("$PEC_BIN" verify --trust "$work/pki/it.pem" --trust "$work/pki/net.pem" "$2" || true)
  kind=$(sed -n 's/^kind: //p' <<<"$out")
  date=$(sed -n 's/^  data: //p' <<<"$out")
  verdict=$(sed -n 's/^verdict: //p' <<<"$out")
  printf '  %-6s %-45s %-28s %s\n' "$1" "$kind" "$date" "$verdict"
}
echo
echo "== what each side received (pec verify against both providers' certificates)"
printf '  %-6s %-45s %-28s %s\n' who kind "time (Italian legal time)" verdict
for f in "$work"/alice/*; do show alice "$f"; done
for f in "$work"/bob/*; do show bob "$f"; done
echo
status=0
for f in "$work"/alice/* "$work"/bob/*; do
  "$PEC_BIN" verify --trust "$work/pki/it.pem" --trust "$work/pki/net.pem" "$f" >/dev/null || status=1
done

# What the operators see: each provider's Prometheus endpoint ([metrics] listen).
echo "== metrics: messages counted by each provider (GET /metrics)"
for p in a b; do
  for sample in \
    'pec_messages_total{role="access",kind="submission",outcome="accepted"}' \
    'pec_messages_total{role="filter",kind="acceptance_receipt",outcome="emitted"}' \
    'pec_messages_total{role="filter",kind="transport_envelope",outcome="taken_in_charge"}' \
    'pec_messages_total{role="delivery",kind="transport_envelope",outcome="delivered"}'; do
    v=$(provider_metric "$work/$p" "$sample")
    [ "$v" = 0 ] || printf '  %s  %s %s\n' "$p" "$sample" "$v"
  done
done
[ "$(provider_metric "$work/a" 'pec_messages_total{role="access",kind="submission",outcome="accepted"}')" != 0 ] \
  && [ "$(provider_metric "$work/b" 'pec_messages_total{role="delivery",kind="transport_envelope",outcome="delivered"}')" != 0 ] \
  || { echo "demo: the metrics do not show the message" >&2; status=1; }
echo "== pec status of provider A"
SOFTHSM2_CONF=$a_conf PEC_E2E_PIN=1234 "$PEC_BIN" status -c "$work/a/pec.toml" | sed 's/^/  /' \
  || { echo "demo: pec status reports a problem" >&2; status=1; }
echo
if [ "$status" -eq 0 ]; then
  echo "demo: every message verified"
else
  echo "demo: some message did not verify, or a check failed" >&2
fi
exit "$status"

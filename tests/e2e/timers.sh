#!/usr/bin/env bash
# End to end, the 12 h / 24 h timers (spec §5.4) with real parts: one provider
# (provider_up: Postfix, Dovecot, clamd, `pec serve` on SoftHSM2). Alice sends to a
# certified recipient of the other provider, whose domain is routed to a dead port, so no
# presa in carico ever comes back. Time is moved by the test: `pec timers run --now`.
#
# Checks: nothing before 12 h; at +13 h Alice gets one signed 12 h notice
# (preavviso-errore-consegna, errore-esteso 4.4.7); nothing more at +20 h (the 24 h notice
# is not sent before 22 h); at +25 h the 24 h notice (errore-esteso 5.4.1); nothing more
# at +30 h; both notices are in the legal log.
#
# Usage: tests/e2e/timers.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"

provider_script timers .

provider_up "$work"
mapfile -t dead < <(e2e_free_ports 1)
postfix_route "$work/postfix" pec.example.net "127.0.0.1:${dead[0]}"

fetch() { # COUNT DIR
  "${mail[@]}" fetch --port "$imap" --user alice@pec.example.it --password test --count "$1" --dir "$2" --deadline 60 >/dev/null
}
# The last message fetched (pecmail.py numbers them in mailbox order).
newest() { printf '%s/%s\n' "$1" "$(ls "$1" | sort -n | tail -n 1)"; }
# timers_run HOURS: one pass at t0 + HOURS; prints the summary line.
timers_run() {
  local at
  at=$(date -u -d "@$(( t0 + $1 * 3600 ))" +%Y-%m-%dT%H:%M:%SZ)
  SOFTHSM2_CONF=$conf PEC_E2E_PIN=1234 "$pec" timers run -c "$work/pec.toml" --now "$at" | tee -a "$work/timers.out" | tail -n 1
}
expect_sent() { # HOURS SUMMARY_SUBSTRING
  local out
  out=$(timers_run "$1")
  e2e_log "+$1 h: $out"
  [[ $out == *"$2"* ]] || e2e_fail "+$1 h: expected \"$2\", got \"$out\""
}
check_notice() { # FILE CODE_PREFIX
  local out
  grep -q "^X-Ricevuta: preavviso-errore-consegna" "$1" || e2e_fail "$1: not a preavviso-errore-consegna"
  grep -q "^Subject: AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: scadenza" "$1" || e2e_fail "$1: subject"
  out=$("$pec" verify --trust "$work/pki/it.pem" "$1") || { echo "$out" >&2; e2e_fail "pec verify refused $1"; return 1; }
  grep -q "kind: receipt: preavviso-errore-consegna" <<<"$out" || { echo "$out" >&2; e2e_fail "$1: kind"; }
  grep -q "errore-esteso: $2 - PEC Example IT S.p.A. - " <<<"$out" || { echo "$out" >&2; e2e_fail "$1: errore-esteso is not $2"; }
  grep -q "consegna: dan@pec.example.net" <<<"$out" || { echo "$out" >&2; e2e_fail "$1: consegna"; }
}

e2e_log "1. alice sends to dan@pec.example.net (routed to a dead port)"
t0=$(date -u +%s)
printf 'From: alice@pec.example.it\r\nTo: dan@pec.example.net\r\nSubject: scadenza\r\nDate: %s\r\nMessage-ID: <scadenza-%s@client.example.it>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nNessuno risponde.\r\n' \
  "$(date -R)" "$$" > "$work/scadenza.eml"
"${mail[@]}" send --port "$submission" --user alice@pec.example.it --password test \
  --from alice@pec.example.it --to dan@pec.example.net "$work/scadenza.eml" >/dev/null
fetch 1 "$work/alice1"
grep -q "^X-Ricevuta: accettazione" "$(newest "$work/alice1")" || e2e_fail "no acceptance receipt"

e2e_log "2. before 12 h: nothing"
expect_sent 11 ": 0 sent"

e2e_log "3. +13 h: the 12 h notice"
expect_sent 13 ": 1 sent (12h: 1, 24h: 0), 0 failed"
fetch 2 "$work/alice2"
check_notice "$(newest "$work/alice2")" 4.4.7

e2e_log "4. +20 h: nothing (not before 22 h), and the 12 h notice not again"
expect_sent 20 ": 0 sent"

e2e_log "5. +25 h: the 24 h notice"
expect_sent 25 ": 1 sent (12h: 0, 24h: 1), 0 failed"
fetch 3 "$work/alice3"
check_notice "$(newest "$work/alice3")" 5.4.1

e2e_log "6. +30 h: tracking stopped"
expect_sent 30 ": 0 sent"
fetch 3 "$work/alice-final"
[ "$(ls "$work/alice-final" | wc -l)" -eq 3 ] || e2e_fail "alice has more than 3 messages"
# Through pec log search, which reads either store (PEC_E2E_STORE=sqlite or pg).
n=0
for kind in MancataConsegna12h MancataConsegna24h; do
  k=$("$pec" log search -c "$work/pec.toml" --kind "$kind" | wc -l)
  [ "$k" -eq 1 ] || e2e_fail "legal log has $k $kind records, expected 1"
  n=$((n + k))
done
[ "$n" -eq 2 ] || e2e_fail "legal log has $n timer notices, expected 2"
# pec serve runs the timers itself too (with the real clock: nothing was due for it).
grep -q "timers running" "$work/pec.log" || e2e_fail "pec serve did not start its timers"
echo "timers: PASS"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, the 12 h / 24 h timers (spec §5.4), and that they never certify what did not
# happen (issue 16): two providers with every part real (provider_up: Postfix, Dovecot
# behind pec's delivery point, PROVIDER_LMTP_PROXY=1, clamd, `pec serve` on SoftHSM2), A
# (pec.example.it) and B (pec.example.net). The index also lists muto.example.net as B's,
# but A routes that domain to a dead port: a peer that never answers. Time is moved by the
# test: `pec timers run --now`, one pass per checkpoint for every message at once.
#
# Alice (A) sends six messages up front:
#   a. same provider, delivered: To bob@pec.example.it;
#   b. same provider, not delivered: To ghost@pec.example.it, whom A's Dovecot does not
#      know (550 5.1.1): A's delivery point sends the signed avviso di mancata consegna;
#   c. cross-provider, delivered: To bob@pec.example.net;
#   d. To carla@pec.example.it and Cc dora@pec.example.it (two local mailboxes);
#   e. To ugo@pec.example.it and dan@pec.example.net (one local, one remote recipient);
#   f. To dan@muto.example.net (the dead peer): the true positive.
#
# Checks, once alice holds the 6 acceptances and the 7 receipts and notices of a-e: `pec
# status` counts only dan@muto as waiting; nothing at +11 h; at +13 h exactly one notice,
# the 12 h one for dan@muto (preavviso-errore-consegna, errore-esteso 4.4.7), none for a-e;
# nothing at +20 h (the 24 h notice is not sent before 22 h); at +25 h exactly one, the 24 h
# notice for dan@muto (5.4.1), none for a-e; nothing at +30 h; nobody waiting then; B's
# timers send nothing. Alice's mailbox holds exactly those two timer notices. The legal logs
# (`pec log search --format json` on both providers, tests/e2e/audit.py outcomes) hold, for
# each recipient of a-e, exactly one final outcome where it was delivered (Consegna or
# MancataConsegna), for c and e's dan@pec.example.net also exactly one correlated Ricezione
# of B's receipt on A, and no MancataConsegna12h/24h; for dan@muto exactly one 12 h and one
# 24 h notice; and the spec §8 invariants of audit.py hold over both logs.
#
# Usage: tests/e2e/timers.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"

provider_script timers a b

export PROVIDER_PKI=$work/pki PROVIDER_LMTP_PROXY=1 PROVIDER_NET_EXTRA_DOMAINS=muto.example.net
DOVECOT_UNKNOWN_USERS=ghost@pec.example.it provider_up "$work/a" pec.example.it it
a_submission=$submission a_smtp=$smtp a_imap=$imap a_conf=$conf
provider_up "$work/b" pec.example.net net
b_smtp=$smtp b_conf=$conf
mapfile -t dead < <(e2e_free_ports 1)
postfix_route "$work/a/postfix" pec.example.net "127.0.0.1:$b_smtp"
postfix_route "$work/a/postfix" muto.example.net "127.0.0.1:${dead[0]}"
postfix_route "$work/b/postfix" pec.example.it "127.0.0.1:$a_smtp"

fetch() { e2e_fetch "$a_imap" "$1" "$2" "$3" 90 >/dev/null; } # USER COUNT DIR
# timers_run P HOURS: one pass of provider P at t0 + HOURS; prints the summary line.
timers_run() {
  local p=$1 at c
  at=$(date -u -d "@$(( t0 + $2 * 3600 ))" +%Y-%m-%dT%H:%M:%SZ)
  if [ "$p" = a ]; then c=$a_conf; else c=$b_conf; fi
  SOFTHSM2_CONF=$c PEC_E2E_PIN=1234 "$pec" timers run -c "$work/$p/pec.toml" --now "$at" |
    tee -a "$work/$p/timers.out" | tail -n 1
}
expect_sent() { # HOURS SUMMARY_SUBSTRING [P]
  local out
  out=$(timers_run "${3:-a}" "$1")
  e2e_log "${3:-a} +$1 h: $out"
  [[ $out == *"$2"* ]] || { grep '^sent ' "$work/${3:-a}/timers.out" >&2 || true; e2e_fail "${3:-a} +$1 h: expected \"$2\", got \"$out\""; }
}
# Every notice sent so far by A's timers was about dan@muto.example.net.
only_dead_notified() {
  local other
  other=$(grep '^sent ' "$work/a/timers.out" | grep -v ' for dan@muto\.example\.net$' || true)
  [ -z "$other" ] || { printf '%s\n' "$other" >&2; e2e_fail "timer notices for recipients that have an outcome"; }
}
waiting() { # P: how many certified recipients pec status counts as waiting
  local c
  if [ "$1" = a ]; then c=$a_conf; else c=$b_conf; fi
  SOFTHSM2_CONF=$c PEC_E2E_PIN=1234 "$pec" status -c "$work/$1/pec.toml" 2>&1 |
    sed -n 's/.* \([0-9][0-9]*\) certified recipients waiting.*/\1/p' | head -n 1
}
expect_waiting() { # N WHEN
  local n
  n=$(waiting a)
  e2e_log "pec status $2: ${n:-?} certified recipients waiting"
  [ "$n" = "$1" ] || e2e_fail "pec status $2: ${n:-no} certified recipients waiting, expected $1 (dan@muto.example.net only)"
}
check_notice() { # FILE CODE_PREFIX
  local out
  grep -q "^X-Ricevuta: preavviso-errore-consegna" "$1" || e2e_fail "$1: not a preavviso-errore-consegna"
  grep -q "^Subject: AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: f scadenza" "$1" || e2e_fail "$1: subject"
  out=$("$pec" verify --trust "$work/pki/it.pem" "$1") || { echo "$out" >&2; e2e_fail "pec verify refused $1"; return 1; }
  grep -q "kind: receipt: preavviso-errore-consegna" <<<"$out" || { echo "$out" >&2; e2e_fail "$1: kind"; }
  grep -q "errore-esteso: $2 - PEC Example IT S.p.A. - " <<<"$out" || { echo "$out" >&2; e2e_fail "$1: errore-esteso is not $2"; }
  grep -q "consegna: dan@muto.example.net" <<<"$out" || { echo "$out" >&2; e2e_fail "$1: consegna"; }
}
queue_count() { # POSTFIX_DIR: messages in the queue
  postqueue -c "$1/etc" -p 2>/dev/null | awk '/^-- .* in [0-9]+ Requests?\./ { n = $(NF - 1) } END { print n + 0 }'
}
only_dead_queued() { [ "$(queue_count "$work/a/postfix")" -eq 1 ] && _e2e_queue_empty "$work/b/postfix"; }
send() { # SUBJECT TO_HEADER CC_HEADER RCPT...: alice submits one message
  local subject=$1 to=$2 cc=$3 f rcpts=() r
  shift 3
  f=$work/msg-${subject%% *}.eml
  {
    printf 'From: alice@pec.example.it\r\nTo: %s\r\n' "$to"
    [ -z "$cc" ] || printf 'Cc: %s\r\n' "$cc"
    printf 'Subject: %s\r\nDate: %s\r\nMessage-ID: <timers-%s-%s@client.example.it>\r\n' \
      "$subject" "$(date -R)" "${subject%% *}" "$$"
    printf 'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nCaso %s.\r\n' "$subject"
  } > "$f"
  for r in "$@"; do rcpts+=(--to "$r"); done
  "${mail[@]}" send --port "$a_submission" --user alice@pec.example.it --password test \
    --from alice@pec.example.it "${rcpts[@]}" "$f" >/dev/null
}

e2e_log "1. alice sends six messages: same provider delivered and not, cross-provider, To+Cc, mixed, dead peer"
t0=$(date -u +%s)
send "a stesso gestore" bob@pec.example.it "" bob@pec.example.it
send "b casella inesistente" ghost@pec.example.it "" ghost@pec.example.it
send "c altro gestore" bob@pec.example.net "" bob@pec.example.net
send "d to e cc" carla@pec.example.it dora@pec.example.it carla@pec.example.it dora@pec.example.it
send "e misto" "ugo@pec.example.it, dan@pec.example.net" "" ugo@pec.example.it dan@pec.example.net
send "f scadenza" dan@muto.example.net "" dan@muto.example.net
# 6 acceptances, then a: 1 delivery receipt, b: 1 non-delivery notice, c: 1, d: 2, e: 2.
fetch alice@pec.example.it 13 "$work/alice1"
# A's own presa in carico of a, b, d and e lands in its receipt mailbox; B's of c and e are
# consumed by A. Settled: only f's envelope left in A's queue (deferred: dead port), B's
# queue empty.
fetch ricevute@pec.example.it 4 "$work/ricevute-a"
e2e_poll 90 only_dead_queued || e2e_fail "queues not settled: A holds $(queue_count "$work/a/postfix") (expected 1, the dead peer's), B $(queue_count "$work/b/postfix")"
n_ok=0 n_ko=0
for f in "$work"/alice1/*; do
  case "$(sed -n 's/^X-Ricevuta: //p' "$f" | tr -d '\r' | head -n 1)" in
    accettazione) ;;
    avvenuta-consegna) n_ok=$((n_ok + 1)) ;;
    errore-consegna) n_ko=$((n_ko + 1)) ;;
    *) e2e_fail "alice: unexpected message $f" ;;
  esac
done
[ "$n_ok/$n_ko" = 6/1 ] || e2e_fail "alice holds $n_ok delivery receipts and $n_ko non-delivery notices, expected 6 and 1"
grep -l "^X-Ricevuta: errore-consegna" "$work"/alice1/* | xargs grep -l "ghost@pec.example.it" >/dev/null ||
  e2e_fail "the non-delivery notice is not about ghost@pec.example.it"

e2e_log "2. before the timers: only dan@muto waits for a receipt; nothing due at +11 h"
expect_waiting 1 "after delivery"
expect_sent 11 ": 0 sent (12h: 0, 24h: 0), 0 failed"

e2e_log "3. +13 h: the 12 h notice for dan@muto only"
expect_sent 13 ": 1 sent (12h: 1, 24h: 0), 0 failed"
only_dead_notified
fetch alice@pec.example.it 14 "$work/alice2"
check_notice "$(e2e_newest "$work/alice2")" 4.4.7

e2e_log "4. +20 h: nothing (not before 22 h), and the 12 h notice not again"
expect_sent 20 ": 0 sent (12h: 0, 24h: 0), 0 failed"

e2e_log "5. +25 h: the 24 h notice for dan@muto only"
expect_sent 25 ": 1 sent (12h: 0, 24h: 1), 0 failed"
only_dead_notified
fetch alice@pec.example.it 15 "$work/alice3"
check_notice "$(e2e_newest "$work/alice3")" 5.4.1
expect_sent 25 ": 0 sent (12h: 0, 24h: 0), 0 failed" b

e2e_log "6. +30 h: tracking stopped, nobody waiting"
expect_sent 30 ": 0 sent (12h: 0, 24h: 0), 0 failed"
expect_waiting 0 "after the 24 h notice"
fetch alice@pec.example.it 15 "$work/alice-final"
[ "$(grep -l "^X-Ricevuta: preavviso-errore-consegna" "$work"/alice-final/* | wc -l)" -eq 2 ] ||
  e2e_fail "alice does not hold exactly two timer notices"

e2e_log "7. the legal logs: one final outcome per recipient, timer notices for dan@muto only"
# Through pec log search, which reads either store (PEC_E2E_STORE=sqlite or pg).
for p in a b; do
  "$pec" log search -c "$work/$p/pec.toml" --format json -o "$work/$p/legal.json"
done
"$E2E_PYTHON" "$here/audit.py" outcomes \
  --log pec.example.it="$work/a/legal.json" --log pec.example.net="$work/b/legal.json" \
  --expect "a stesso gestore" bob@pec.example.it delivered \
  --expect "b casella inesistente" ghost@pec.example.it failed \
  --expect "c altro gestore" bob@pec.example.net delivered \
  --expect "d to e cc" carla@pec.example.it delivered \
  --expect "d to e cc" dora@pec.example.it delivered \
  --expect "e misto" ugo@pec.example.it delivered \
  --expect "e misto" dan@pec.example.net delivered \
  --expect "f scadenza" dan@muto.example.net timeout >&2 ||
  e2e_fail "legal logs: see the violations above"
# pec serve runs the timers itself too (with the real clock: nothing was due for it).
grep -q "timers running" "$work/a/pec.log" || e2e_fail "pec serve did not start its timers"
echo "timers: PASS"

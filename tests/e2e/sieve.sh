#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, the shipped Sieve filter (dovecot/pec-receipts.sieve) with a real Pigeonhole:
# one provider (provider_up: Postfix, Dovecot behind pec's delivery point,
# PROVIDER_LMTP_PROXY=1, clamd, `pec serve` on SoftHSM2), its Dovecot started with the
# shipped dovecot/40-pec-sieve.conf (DOVECOT_SIEVE=1, lib.sh) and the script compiled with
# sievec. The filter is enabled for alice@pec.example.it only, as the operator guide says
# (`doveadm sieve put -a` of a script that includes the global one), and for the service
# mailbox ricevute@pec.example.it; bob@pec.example.it is the control, without it.
#
#   1. sievec compiles the shipped script, and refuses a copy without the "mailbox"
#      extension (the compile check can fail);
#   2. one message of each class, with the class fields as pec writes them, delivered by
#      LMTP to alice and bob in one transaction: alice's land in the folders of the script's
#      table (the seven X-Ricevuta types, the anomaly envelope in Anomalie; the transport
#      envelope, plain mail, an unknown X-Ricevuta value and an envelope whose attached
#      original carries "X-Ricevuta: accettazione" stay in INBOX), each exactly once in the
#      whole mailbox; bob's all stay in INBOX and bob has no other folder; pec's duplicate
#      check (doveadm search over every folder, header Message-ID and class) still finds a
#      filed receipt; real receipts of another provider (PEC_SAMPLES) land the same way;
#   3. the real flow through pec: alice sends to bob (acceptance, delivery receipt; the
#      presa in carico goes to the service mailbox ricevute@, filtered too), to
#      ghost (unknown to Dovecot: non-delivery notice), with a From that is not hers
#      (non-acceptance notice) and to a dead peer (the 12 h notice, `pec timers run --now`);
#      bob sends to alice (a transport envelope) and the Internet writes to her (an anomaly
#      envelope). Every one goes through the delivery point; each lands in its folder;
#      alice's IMAP client lists the folders under "/" and reads the receipts in them;
#   4. disabled again (`doveadm sieve deactivate`), a receipt stays in alice's INBOX.
#
# Usage: tests/e2e/sieve.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"

provider_script sieve .

command -v sievec >/dev/null || { e2e_fail "sievec not found: install dovecot-sieve (tests/e2e/install.sh)"; exit 1; }

export PROVIDER_LMTP_PROXY=1 PROVIDER_NET_EXTRA_DOMAINS=muto.example.net
DOVECOT_SIEVE=1 DOVECOT_UNKNOWN_USERS=ghost@pec.example.it provider_up "$work"
mapfile -t dead < <(e2e_free_ports 1)
postfix_route "$work/postfix" muto.example.net "127.0.0.1:${dead[0]}"

dv() { doveadm -c "$work/dovecot/dovecot.conf" "$@"; }
# held USER FOLDER MSGID: how many messages of FOLDER (every folder: "") have that Message-ID
# (0 when FOLDER does not exist).
held() {
  local where=()
  [ -z "$2" ] || where=(mailbox "$2")
  { dv search -u "$1" "${where[@]}" header Message-ID "$3" 2>/dev/null || true; } | wc -l
}
# expect USER FOLDER MSGID: the message is in FOLDER, and nowhere else in the mailbox.
expect() {
  local n all
  n=$(held "$1" "$2" "$3")
  all=$(held "$1" "" "$3")
  [ "$n" = 1 ] && [ "$all" = 1 ] && return 0
  e2e_fail "$1: $3 is $n time(s) in \"$2\" and $all time(s) in the whole mailbox, expected once, there"
}
folders() { dv mailbox list -u "$1" | LC_ALL=C sort | paste -sd'|'; }

e2e_log "1. the shipped script compiles with sievec; a broken copy does not"
sievec "$here/../../dovecot/pec-receipts.sieve" "$work/pec-receipts.svbin"
sieve-dump "$work/pec-receipts.svbin" > "$work/pec-receipts.dump"
grep -q 'fileinto' "$work/pec-receipts.dump" || e2e_fail "the compiled script has no fileinto"
sed 's/require \["fileinto", "mailbox"\];/require "fileinto";/' "$here/../../dovecot/pec-receipts.sieve" \
  > "$work/broken.sieve"
! grep -q '"mailbox"' "$work/broken.sieve" || e2e_fail "the broken copy still requires mailbox"
if sievec "$work/broken.sieve" "$work/broken.svbin" 2>/dev/null; then
  e2e_fail "sievec compiled a script that uses :create without the mailbox extension"
fi

e2e_log "enable the filter for alice and the service mailbox ricevute@ (not for bob)"
for u in alice@pec.example.it ricevute@pec.example.it; do
  printf 'require "include";\ninclude :global "pec-receipts";\n' | dv sieve put -u "$u" -a pec
done
grep -q '^pec ACTIVE' <(dv sieve list -u alice@pec.example.it) || e2e_fail "alice's script pec is not active"
[ -z "$(dv sieve list -u bob@pec.example.it)" ] || e2e_fail "bob has a Sieve script"

e2e_log "2. one message of each class by LMTP to alice (filter on) and bob (filter off)"
# lmtp_deliver FILE: FILE to alice and bob over Dovecot's LMTP, both accepted.
lmtp_deliver() {
  local out
  out=$(swaks --server "127.0.0.1:$lmtp" --protocol LMTP --from posta-certificata@pec.example.it \
    --to alice@pec.example.it,bob@pec.example.it --data "$1" 2>&1) || true
  [ "$(grep -c '^<-  250 2\.0\.0 <' <<<"$out")" = 2 ] \
    || { printf '%s\n' "$out" >&2; e2e_fail "LMTP did not accept $1 for both"; }
}
# built NAME FIELDS [BODY]: a message with those top-level fields (\r\n-separated), as pec
# writes receipts: From posta-certificata@, the class fields, Message-ID <NAME-PID@pec.example.it>.
built() {
  printf 'Date: %s\r\nFrom: posta-certificata@pec.example.it\r\nTo: alice@pec.example.it\r\nSubject: %s\r\nMessage-ID: <%s-%s@pec.example.it>\r\nX-Riferimento-Message-ID: <orig-%s@client.example.it>\r\n%bMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n%b\r\n' \
    "$(date -R)" "$1" "$1" "$$" "$$" "$2" "${3:-Ricevuta di prova.}" > "$work/$1.eml"
  lmtp_deliver "$work/$1.eml"
}
cases=(
  # name | class fields | alice's folder
  "accettazione|X-Ricevuta: accettazione\r\n|Ricevute/Accettazione"
  "presa|X-Ricevuta: presa-in-carico\r\n|Ricevute/Presa in carico"
  "consegna|X-Ricevuta: avvenuta-consegna\r\nX-TipoRicevuta: breve\r\n|Ricevute/Consegna"
  "nonacc|X-Ricevuta: non-accettazione\r\n|Avvisi/Non accettazione"
  "nonaccvirus|X-Ricevuta: non-accettazione\r\nX-VerificaSicurezza: errore\r\n|Avvisi/Non accettazione"
  "mancata|X-Ricevuta: errore-consegna\r\n|Avvisi/Mancata consegna"
  "tempo|X-Ricevuta: preavviso-errore-consegna\r\n|Avvisi/Superamento tempo massimo"
  "virus|X-Ricevuta: rilevazione-virus\r\nX-Mittente: alice@pec.example.it\r\n|Avvisi/Rilevazione virus"
  "anomalia|X-Trasporto: errore\r\n|Anomalie"
  "busta|X-Trasporto: posta-certificata\r\n|INBOX"
  "ignota|X-Ricevuta: ricevuta-ignota\r\n|INBOX"
  "ordinaria||INBOX"
)
for c in "${cases[@]}"; do
  IFS='|' read -r name fields _ <<<"$c"
  built "$name" "$fields"
done
# A transport envelope whose attached original claims to be a receipt: only the top-level
# fields count (spec §10).
built inner "X-Trasporto: posta-certificata\r\n" \
  "Messaggio di posta certificata\r\n\r\nX-Ricevuta: accettazione\r\nSubject: finta ricevuta"
cases+=("inner||INBOX")
for c in "${cases[@]}"; do
  IFS='|' read -r name _ folder <<<"$c"
  expect alice@pec.example.it "$folder" "<$name-$$@pec.example.it>"
  expect bob@pec.example.it INBOX "<$name-$$@pec.example.it>"
done
want="Anomalie|Avvisi|Avvisi/Mancata consegna|Avvisi/Non accettazione|Avvisi/Rilevazione virus|Avvisi/Superamento tempo massimo|INBOX|Ricevute|Ricevute/Accettazione|Ricevute/Consegna|Ricevute/Presa in carico"
[ "$(folders alice@pec.example.it)" = "$want" ] \
  || e2e_fail "alice's folders are \"$(folders alice@pec.example.it)\", expected \"$want\""
[ "$(folders bob@pec.example.it)" = INBOX ] \
  || e2e_fail "bob (no filter) has folders \"$(folders bob@pec.example.it)\""
e2e_log "pec's duplicate check finds a filed receipt (doveadm search over every folder)"
found=$(dv search -u alice@pec.example.it header Message-ID "<accettazione-$$@pec.example.it>" \
  header X-Ricevuta accettazione | wc -l)
[ "$found" = 1 ] || e2e_fail "the duplicate check's search found $found copies of a filed receipt"

if [ -n "${PEC_SAMPLES:-}" ] && [ -d "$PEC_SAMPLES" ]; then
  e2e_log "real receipts of another provider (Aruba, PEC_SAMPLES)"
  for s in aruba-2014-ricevuta-accettazione.eml:Ricevute/Accettazione \
      aruba-2014-ricevuta-avvenuta-consegna-completa.eml:Ricevute/Consegna \
      aruba-2014-busta-trasporto-1.eml:INBOX; do
    f=$PEC_SAMPLES/${s%%:*}
    id=$(grep -i -m1 '^Message-ID:' "$f" | sed 's/^[^:]*: *//' | tr -d '\r')
    [ -n "$id" ] || e2e_fail "$f has no Message-ID"
    lmtp_deliver "$f"
    expect alice@pec.example.it "${s#*:}" "$id"
    expect bob@pec.example.it INBOX "$id"
  done
else
  echo "sieve.sh: SKIPPED the real provider samples: PEC_SAMPLES is not set (../shared/pec-samples)" >&2
fi

e2e_log "3. the real flow through pec's delivery point"
# count USER FOLDER: messages in FOLDER.
count() { { dv search -u "$1" mailbox "$2" ALL 2>/dev/null || true; } | wc -l; }
at_least() { [ "$(count "$1" "$2")" -ge "$3" ]; } # USER FOLDER N
wait_in() { # USER FOLDER N: until FOLDER holds at least N messages (90 s)
  e2e_poll 90 at_least "$1" "$2" "$3" || e2e_fail "$1: \"$2\" holds $(count "$1" "$2") messages after 90 s, expected $3"
}
before_acc=$(count alice@pec.example.it Ricevute/Accettazione)
before_con=$(count alice@pec.example.it Ricevute/Consegna)
before_mc=$(count alice@pec.example.it "Avvisi/Mancata consegna")
before_na=$(count alice@pec.example.it "Avvisi/Non accettazione")
before_tm=$(count alice@pec.example.it "Avvisi/Superamento tempo massimo")
before_an=$(count alice@pec.example.it Anomalie)
before_in=$(count alice@pec.example.it INBOX)
send() { # FILE FROM_HEADER TO SUBJECT [pecmail options]: alice submits one message
  local f=$work/flow-$1.eml
  printf 'From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <flow-%s-%s@client.example.it>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nProva %s.\r\n' \
    "$2" "$3" "$4" "$(date -R)" "$1" "$$" "$1" > "$f"
  "${mail[@]}" send --port "$submission" --user alice@pec.example.it --password test \
    --from alice@pec.example.it --to "$3" "${@:5}" "$f" >/dev/null
}
t0=$(date -u +%s)
send bob alice@pec.example.it bob@pec.example.it "a bob"
send ghost alice@pec.example.it ghost@pec.example.it "a nessuno"
send spoof "Mallory <mallory@pec.example.it>" bob@pec.example.it "falso mittente"
send muto alice@pec.example.it dan@muto.example.net "scadenza"
printf 'From: bob@pec.example.it\r\nTo: alice@pec.example.it\r\nSubject: da bob\r\nDate: %s\r\nMessage-ID: <flow-bob2alice-%s@client.example.it>\r\n\r\nCiao Alice.\r\n' \
  "$(date -R)" "$$" > "$work/flow-bob2alice.eml"
"${mail[@]}" send --port "$submission" --user bob@pec.example.it --password test \
  --from bob@pec.example.it --to alice@pec.example.it "$work/flow-bob2alice.eml" >/dev/null
printf 'From: someone@example.org\r\nTo: alice@pec.example.it\r\nSubject: ordinaria\r\nDate: %s\r\nMessage-ID: <flow-internet-%s@example.org>\r\n\r\nPosta ordinaria.\r\n' \
  "$(date -R)" "$$" > "$work/flow-internet.eml"
"${mail[@]}" send --port "$smtp" --from someone@example.org --to alice@pec.example.it \
  "$work/flow-internet.eml" >/dev/null
# Acceptances: bob, ghost, muto (the spoofed one gets a non-acceptance instead).
wait_in alice@pec.example.it Ricevute/Accettazione $((before_acc + 3))
wait_in alice@pec.example.it Ricevute/Consegna $((before_con + 1))
wait_in alice@pec.example.it "Avvisi/Mancata consegna" $((before_mc + 1))
wait_in alice@pec.example.it "Avvisi/Non accettazione" $((before_na + 1))
wait_in alice@pec.example.it Anomalie $((before_an + 1))
wait_in alice@pec.example.it INBOX $((before_in + 1))
e2e_log "the 12 h notice for dan@muto.example.net (pec timers run --now +13 h)"
SOFTHSM2_CONF=$conf PEC_E2E_PIN=1234 "$pec" timers run -c "$work/pec.toml" \
  --now "$(date -u -d "@$((t0 + 13 * 3600))" +%Y-%m-%dT%H:%M:%SZ)" > "$work/timers.out"
wait_in alice@pec.example.it "Avvisi/Superamento tempo massimo" $((before_tm + 1))
# What landed is what was expected: the class of each new message of each folder, and the
# path through pec's delivery point.
class_of() { # USER FOLDER: the class fields of the folder's messages, counted
  { dv fetch -u "$1" hdr mailbox "$2" ALL 2>/dev/null || true; } |
    { grep -i '^X-Ricevuta:\|^X-Trasporto:' || true; } | tr -d '\r' | sort | uniq -c
}
check_class_of() { # USER FOLDER FIELD: FOLDER holds messages, all of them with FIELD
  local classes
  classes=$(class_of "$1" "$2")
  [ -n "$classes" ] && ! grep -qiv "$3" <<<"$classes" && return 0
  printf '%s\n' "$classes" >&2
  e2e_fail "$1: \"$2\" holds something else than $3, or nothing"
}
check_class() { check_class_of alice@pec.example.it "$@"; } # FOLDER FIELD
check_class Ricevute/Accettazione "X-Ricevuta: accettazione"
check_class Ricevute/Consegna "X-Ricevuta: avvenuta-consegna"
check_class "Avvisi/Mancata consegna" "X-Ricevuta: errore-consegna"
check_class "Avvisi/Non accettazione" "X-Ricevuta: non-accettazione"
check_class "Avvisi/Superamento tempo massimo" "X-Ricevuta: preavviso-errore-consegna"
check_class Anomalie "X-Trasporto: errore"
[ -n "$(dv search -u alice@pec.example.it mailbox INBOX header X-Trasporto posta-certificata \
  header Subject "POSTA CERTIFICATA: da bob" 2>/dev/null)" ] \
  || e2e_fail "bob's transport envelope is not in alice's INBOX"
grep -q "delivery point: .*rcpt=alice@pec.example.it" <(e2e_plain "$work/pec.log") \
  || e2e_fail "nothing reached alice through pec's delivery point"
for t in accettazione presa-in-carico avvenuta-consegna errore-consegna rilevazione-virus; do
  # (a substring search: non-accettazione and preavviso-errore-consegna are covered too)
  [ -z "$(dv search -u alice@pec.example.it mailbox INBOX header X-Ricevuta "$t" 2>/dev/null)" ] \
    || e2e_fail "a receipt with X-Ricevuta ...$t is in alice's INBOX"
done
wait_in ricevute@pec.example.it "Ricevute/Presa in carico" 1
check_class_of ricevute@pec.example.it "Ricevute/Presa in carico" "X-Ricevuta: presa-in-carico"

e2e_log "what alice's IMAP client sees: the folders under / and the receipts in them"
list=$(/usr/bin/python3 - "$imap" <<'PY'
import imaplib, sys
m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
m.login("alice@pec.example.it", "test")
print("\n".join(d.decode() for d in m.list()[1]))
m.logout()
PY
)
for f in Ricevute/Accettazione '"Ricevute/Presa in carico"' Ricevute/Consegna '"Avvisi/Mancata consegna"' \
    '"Avvisi/Superamento tempo massimo"' Anomalie; do
  grep -qF "\"/\" $f" <<<"$list" || { printf '%s\n' "$list" >&2; e2e_fail "IMAP LIST does not show $f under \"/\""; }
done
n=$(count alice@pec.example.it Ricevute/Accettazione)
"${mail[@]}" fetch --port "$imap" --user alice@pec.example.it --password test \
  --mailbox Ricevute/Accettazione --count "$n" --dir "$work/imap-acc" --deadline 10 >/dev/null
for f in "$work"/imap-acc/*.eml; do
  grep -qi '^X-Ricevuta: accettazione' "$f" || e2e_fail "IMAP: $f in Ricevute/Accettazione is no acceptance"
done

e2e_log "4. disabled again: a receipt stays in alice's INBOX"
dv sieve deactivate -u alice@pec.example.it
built dopo "X-Ricevuta: accettazione\r\n"
expect alice@pec.example.it INBOX "<dopo-$$@pec.example.it>"

e2e_log "sieve: all checks passed"

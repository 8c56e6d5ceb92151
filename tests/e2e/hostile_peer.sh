#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, a hostile peer (issue 16, "never certify what did not happen"): provider A
# (pec.example.it) and provider B (pec.example.net) as in reception.sh, both delivering
# through pec's delivery point. The attacker holds B's genuine key (net.key/net.pem of
# tests/pki/make-pki.sh): it takes genuine messages produced by real flows, edits them, signs
# them again with B's key (tests/e2e/craft.py: openssl cms, detached, the layout pec writes),
# or replays them unchanged to other mailboxes, over plain SMTP to a provider's port 25.
#
# Genuine traffic first: alice@A → bob@B (envelope E1; bob holds it, alice holds B's CONSEGNA
# C1), mallory@B → ugo@A (B's envelope M1), then alice → bob again (envelope E2) with A's route
# to bob pointed at a closed port, so that bob stays "waiting" (no outcome) in A's tracking.
#
# Cases (numbers of issue 16; every "nothing" is checked once both queues have settled):
#   2. after C1, a B-signed rilevazione-virus about bob for E1 to A's mailReceipt → A signs
#      nothing (no new record but the received notice; alice and ricevute get nothing) and
#      logs the notice with outcome "late";
#   3. a B-signed rilevazione-virus correlated with E2 (identificativo, X-Riferimento-
#      Message-ID) naming carol@pec.example.net, never a recipient → A signs nothing, logs
#      it "uncorrelated";
#   4. a B-signed rilevazione-virus about bob for E2 whose daticert names dave@pec.example.it
#      as mittente with a forged oggetto/Subject → the A-signed mancata consegna per virus
#      goes to alice, with E2's own subject and data; dave gets nothing;
#   5. E1 (signed by A) replayed to B's port 25 for carol@pec.example.net → carol gets a
#      B-signed anomaly envelope, B issues no presa in carico and no CONSEGNA (A receives
#      nothing); replayed to A's port 25 for dave@pec.example.it → dave gets an A-signed
#      anomaly envelope, A issues no presa in carico and no CONSEGNA;
#   6. B-signed envelopes derived from M1, each with a fresh identificativo, to A: a control
#      with every field consistent is taken in charge (proves the crafting); one whose
#      top-level Message-ID differs from the identificativo, one whose X-Riferimento-
#      Message-ID differs from the daticert msgid, one whose daticert mittente is mallory
#      while the top-level From says "Per conto di: alice@pec.example.it" and postacert.eml's
#      From is alice, one whose daticert destinatari disagree with To → each an anomaly
#      envelope, no presa in carico, no CONSEGNA;
#   7. C1 (B-signed, genuine) replayed to dave@pec.example.it → dave gets an anomaly
#      envelope, not the receipt.
# Every crafted message is first checked with `pec verify --trust net.pem`: the notices must be
# valid rilevazione-virus receipts and the control envelope a valid transport envelope, so a
# failure is pec's and not the crafting's.
#
# Every case runs even when an earlier one failed; the script lists the failed checks and
# exits 1 if there is any.
#
# Usage: tests/e2e/hostile_peer.sh   (as root; PEC_BIN names the pec binary,
#        PEC_E2E_STORE=pg runs both providers on PostgreSQL)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"

provider_script hostile_peer a b
craft=(/usr/bin/python3 "$here/craft.py")
t_start=${EPOCHREALTIME}

export PROVIDER_PKI=$work/pki PROVIDER_LMTP_PROXY=1
provider_up "$work/a" pec.example.it it
a_submission=$submission a_smtp=$smtp a_imap=$imap a_conf=$conf
provider_up "$work/b" pec.example.net net
b_submission=$submission b_smtp=$smtp b_imap=$imap b_conf=$conf
postfix_route "$work/a/postfix" pec.example.net "127.0.0.1:$b_smtp"
postfix_route "$work/b/postfix" pec.example.it "127.0.0.1:$a_smtp"
t_up=${EPOCHREALTIME}
pki=$work/pki
sign_b=(--cert "$pki/net.pem" --key "$pki/net.key" --certfile "$pki/chain.pem")
# The one recipient A's queue may hold on purpose (see E2); none until then.
held=nobody@invalid

# ---- helpers --------------------------------------------------------------------------------
imap_port() { if [ "$1" = a ]; then echo "$a_imap"; else echo "$b_imap"; fi; }
fetch() { e2e_fetch "$(imap_port "$1")" "$2" "$3" "$4" "${5:-30}" > /dev/null; } # a|b USER COUNT DIR [DEADLINE]
count() { e2e_count "$(imap_port "$1")" "$2"; } # a|b USER
# fetch_new a|b USER BEFORE: waits for message number BEFORE+1 of USER, prints its file.
fetch_new() {
  local d
  d=$(mktemp -d "$work/new.XXXX")
  fetch "$1" "$2" $(($3 + 1)) "$d" "${4:-30}" || return 1
  e2e_newest "$d"
}
send() { # PORT MAIL_FROM RCPT_TO FILE
  "${mail[@]}" send --port "$1" --from "$2" --to "$3" "$4" > /dev/null
}
submit() { # a|b USER TO SUBJECT
  local port=$a_submission f
  [ "$1" = a ] || port=$b_submission
  f=$(mktemp "$work/orig.XXXX")
  printf 'From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s.%s@client.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nTesto di prova.\r\n' \
    "$2" "$3" "$4" "$(date -R)" "${4// /-}" "$$" > "$f"
  "${mail[@]}" send --port "$port" --user "$2" --password test --from "$2" --to "$3" "$f" > /dev/null
}
field() { "${craft[@]}" field "$1" "$2"; }
dc() { "${craft[@]}" dc "$1" "$2"; }
unbracket() { local v=${1#<}; printf '%s' "${v%>}"; }
pick() { # DIR HEADER VALUE: the message whose top-level HEADER is VALUE
  local f
  for f in "$1"/*.eml; do
    if [ "$(field "$f" "$2")" = "$3" ]; then printf '%s\n' "$f"; return 0; fi
  done
  return 1
}
fresh_id() { printf 'hostile-%s.%s.%s@pec.example.net' "$1" "$$" "$RANDOM"; }
verify_out() { # FILE KEY(it|net)
  "$pec" verify --trust "$pki/$2.pem" "$1" 2>&1 || true
}
# is_kind FILE KEY KIND: pec verify says FILE is a valid KIND signed by KEY's provider.
is_kind() {
  local out
  out=$(verify_out "$1" "$2")
  grep -q "^kind: $3" <<<"$out" && grep -q "^verdict: valid PEC message" <<<"$out"
}
# is_anomaly FILE KEY: FILE is an anomaly envelope (top-level X-Trasporto: errore) signed by
# KEY's provider, with a signature openssl accepts.
is_anomaly() {
  local out
  [ "$(field "$1" X-Trasporto)" = errore ] || return 1
  [ -z "$(field "$1" X-Ricevuta)" ] || return 1
  out=$(verify_out "$1" "$2")
  grep -q "^signer email: posta-certificata@pec.example.$2\$" <<<"$out" || return 1
  grep -q "^signer provider: in the trusted set" <<<"$out" || return 1
  openssl smime -verify -in "$1" -CAfile "$pki/ca.pem" -purpose any -out /dev/null 2>/dev/null
}
describe() { # FILE: what FILE is, for a failure message
  printf 'X-Trasporto "%s", X-Ricevuta "%s", %s' "$(field "$1" X-Trasporto)" "$(field "$1" X-Ricevuta)" \
    "$("$pec" verify --trust "$pki/it.pem" --trust "$pki/net.pem" "$1" 2>&1 |
      grep -E '^(kind|signer email):' | tr '\n' ' ')"
}
events() { # a|b: the whole legal log, JSON
  SOFTHSM2_CONF=$([ "$1" = a ] && echo "$a_conf" || echo "$b_conf") \
    "$pec" log search -c "$work/$1/pec.toml" --format json
}
max_id() { events "$1" | "${craft[@]}" max-id; }
since() { events "$1" | "${craft[@]}" events-since "$2"; }
# has_event a|b BASE REGEX: a record after BASE matches REGEX (events-since line format:
# "kind receipt_type outcome pec_id sender related_ids | subject | reason").
has_event() { since "$1" "$2" | grep -Eq -- "$3"; }

queue_only_held() {
  postqueue -c "$work/a/postfix/etc" -j 2>/dev/null | "${craft[@]}" queue-only "$held"
}
queues_settled() {
  _e2e_queue_empty "$work/b/postfix" && queue_only_held && _e2e_queue_empty "$work/b/postfix"
}
# settle: until neither provider has anything in flight (A may keep the held envelope E2).
settle() {
  e2e_poll 60 queues_settled || {
    postqueue -c "$work/a/postfix/etc" -p >&2 || true
    postqueue -c "$work/b/postfix/etc" -p >&2 || true
    e2e_fail "the queues did not settle within 60 s"
  }
}

failures=()
case_no=""
bad() {
  failures+=("case $case_no: $*")
  e2e_log "FAIL case $case_no: $*"
}
run_case() { # N FUNCTION: runs one case; a failed check is recorded and the next case runs
  case_no=$1
  e2e_log "case $1"
  "$2" || true
  settle || bad "the queues did not settle after the case"
}

# virus_notice TEMPLATE OUT ARGS...: a B-signed avviso di rilevazione virus (spec §3.8) to A's
# mailReceipt, derived from TEMPLATE (a receipt of B's) and ARGS (craft.py resign options:
# the data it claims).
virus_notice() {
  local tpl=$1 out=$2
  shift 2
  "${craft[@]}" resign --in "$tpl" --out "$out" "${sign_b[@]}" \
    --header "X-Ricevuta: rilevazione-virus" --header "To: ricevute@pec.example.it" \
    --header "Message-ID: <$(fresh_id rv)>" \
    --dc tipo=rilevazione-virus --dc errore=virus --dc ricevuta= \
    --dc errore-esteso=Eicar-Test-Signature --no-postacert \
    --text "Problema di sicurezza: nel messaggio e' stato rilevato un virus (Eicar-Test-Signature)." \
    "$@"
}

# ---- genuine traffic ------------------------------------------------------------------------
e2e_log "genuine: alice@A → bob@B (E1), B's CONSEGNA to alice (C1)"
subj1="Contratto uno"
submit a alice@pec.example.it bob@pec.example.net "$subj1"
fetch b bob@pec.example.net 1 "$work/bob" 60
fetch a alice@pec.example.it 2 "$work/alice1" 60
e1=$work/e1.eml c1=$work/c1.eml
"${craft[@]}" strip --in "$(e2e_newest "$work/bob")" --out "$e1"
"${craft[@]}" strip --in "$(pick "$work/alice1" X-Ricevuta avvenuta-consegna)" --out "$c1"
is_kind "$e1" it "transport envelope" || e2e_fail "bob's E1 is not A's transport envelope"
is_kind "$c1" net "receipt: avvenuta-consegna" || e2e_fail "C1 is not B's CONSEGNA"
id1=$(unbracket "$(field "$e1" Message-ID)")
[ "$(dc "$c1" consegna)" = bob@pec.example.net ] || e2e_fail "C1 is not about bob"

e2e_log "genuine: mallory@B → ugo@A (M1, B's envelope)"
submit b mallory@pec.example.net ugo@pec.example.it "Preventivo"
fetch a ugo@pec.example.it 1 "$work/ugo" 60
m1=$work/m1.eml
"${craft[@]}" strip --in "$(e2e_newest "$work/ugo")" --out "$m1"
is_kind "$m1" net "transport envelope" || e2e_fail "ugo's M1 is not B's transport envelope"
settle

# The crafting itself: C1 and M1 signed again by the attacker with nothing changed must still
# be B's valid CONSEGNA and transport envelope.
"${craft[@]}" resign --in "$c1" --out "$work/c1-resigned.eml" "${sign_b[@]}" --keep-date
is_kind "$work/c1-resigned.eml" net "receipt: avvenuta-consegna" ||
  e2e_fail "crafting broken: C1 signed again unchanged is not a valid CONSEGNA: $(verify_out "$work/c1-resigned.eml" net)"
"${craft[@]}" resign --in "$m1" --out "$work/m1-resigned.eml" "${sign_b[@]}"
is_kind "$work/m1-resigned.eml" net "transport envelope" ||
  e2e_fail "crafting broken: M1 signed again unchanged is not a valid envelope: $(verify_out "$work/m1-resigned.eml" net)"

e2e_log "genuine: alice → bob (E2) held in A's queue: bob stays waiting"
dead=$(e2e_free_ports 1)
postfix_route "$work/a/postfix" bob@pec.example.net "127.0.0.1:$dead"
held=bob@pec.example.net
subj2="Contratto due"
alice_before=$(count a alice@pec.example.it)
submit a alice@pec.example.it bob@pec.example.net "$subj2"
acc2=$(fetch_new a alice@pec.example.it "$alice_before")
[ "$(field "$acc2" X-Ricevuta)" = accettazione ] || e2e_fail "alice's second message is not the acceptance"
id2=$(dc "$acc2" identificativo)
msgid2=$(dc "$acc2" msgid)
settle
postqueue -c "$work/a/postfix/etc" -p | grep -q bob@pec.example.net || e2e_fail "E2 is not held in A's queue"
t_genuine=${EPOCHREALTIME}

# ---- the cases ------------------------------------------------------------------------------
case_2() {
  local f=$work/c2.eml base alice0 ric0 mid new
  virus_notice "$c1" "$f" --header "Subject: PROBLEMA DI SICUREZZA: $subj1" \
    --header "X-Mittente: alice@pec.example.it"
  is_kind "$f" net "receipt: rilevazione-virus" ||
    { bad "crafting: the notice is not a valid B-signed rilevazione-virus: $(verify_out "$f" net | grep -E '^(kind|reason)')"; return 1; }
  base=$(max_id a) alice0=$(count a alice@pec.example.it) ric0=$(count a ricevute@pec.example.it)
  mid=$(unbracket "$(field "$f" Message-ID)")
  send "$a_smtp" posta-certificata@pec.example.net ricevute@pec.example.it "$f" ||
    { bad "A refused the notice in SMTP"; return 1; }
  e2e_poll 30 has_event a "$base" "^Ricezione rilevazione-virus .* $mid " ||
    { bad "A did not log the received notice"; return 1; }
  settle || return 1
  new=$(since a "$base")
  e2e_log "case 2: A's new records: $new"
  grep -Eq -- "^Ricezione rilevazione-virus late $id1 .*$mid" <<<"$new" ||
    bad "A's record of the notice does not have outcome \"late\": $(grep Ricezione <<<"$new")"
  if grep -v '^Ricezione ' <<<"$new" | grep -q .; then
    bad "A issued something after a late notice: $(grep -v '^Ricezione ' <<<"$new" | tr '\n' ';')"
  fi
  [ "$(count a alice@pec.example.it)" -eq "$alice0" ] || bad "alice received something (a mancata consegna per virus?)"
  [ "$(count a ricevute@pec.example.it)" -eq "$ric0" ] || bad "the notice reached A's ricevute mailbox"
}

case_3() {
  local f=$work/c3.eml base alice0 mid new
  virus_notice "$c1" "$f" --header "Subject: PROBLEMA DI SICUREZZA: $subj2" \
    --header "X-Mittente: alice@pec.example.it" --header "X-Riferimento-Message-ID: $msgid2" \
    --dc "identificativo=$id2" --dc "msgid=$msgid2" --dc "oggetto=$subj2" \
    --dc consegna=carol@pec.example.net
  is_kind "$f" net "receipt: rilevazione-virus" ||
    { bad "crafting: the notice is not a valid B-signed rilevazione-virus"; return 1; }
  base=$(max_id a) alice0=$(count a alice@pec.example.it)
  mid=$(unbracket "$(field "$f" Message-ID)")
  send "$a_smtp" posta-certificata@pec.example.net ricevute@pec.example.it "$f" ||
    { bad "A refused the notice in SMTP"; return 1; }
  e2e_poll 30 has_event a "$base" "^Ricezione rilevazione-virus .* $mid " ||
    { bad "A did not log the received notice"; return 1; }
  settle || return 1
  new=$(since a "$base")
  e2e_log "case 3: A's new records: $new"
  grep -Eq -- "^Ricezione rilevazione-virus uncorrelated $id2 .*$mid" <<<"$new" ||
    bad "A's record of the notice does not have outcome \"uncorrelated\": $(grep Ricezione <<<"$new")"
  if grep -v '^Ricezione ' <<<"$new" | grep -q .; then
    bad "A issued something for a notice about carol: $(grep -v '^Ricezione ' <<<"$new" | tr '\n' ';')"
  fi
  [ "$(count a alice@pec.example.it)" -eq "$alice0" ] || bad "alice received something (a mancata consegna per virus about carol?)"
}

case_4() {
  local f=$work/c4.eml base dave0 mid new n forged="Bonifico urgente: nuovo IBAN"
  virus_notice "$c1" "$f" --header "Subject: PROBLEMA DI SICUREZZA: $forged" \
    --header "X-Mittente: dave@pec.example.it" --header "X-Riferimento-Message-ID: $msgid2" \
    --dc "identificativo=$id2" --dc "msgid=$msgid2" --dc "oggetto=$forged" \
    --dc mittente=dave@pec.example.it --dc risposte=dave@pec.example.it \
    --dc consegna=bob@pec.example.net
  is_kind "$f" net "receipt: rilevazione-virus" ||
    { bad "crafting: the notice is not a valid B-signed rilevazione-virus"; return 1; }
  base=$(max_id a) dave0=$(count a dave@pec.example.it)
  local alice0
  alice0=$(count a alice@pec.example.it)
  mid=$(unbracket "$(field "$f" Message-ID)")
  send "$a_smtp" posta-certificata@pec.example.net ricevute@pec.example.it "$f" ||
    { bad "A refused the notice in SMTP"; return 1; }
  if n=$(fetch_new a alice@pec.example.it "$alice0" 30); then
    is_kind "$n" it "receipt: errore-consegna" || bad "alice's new message is not A's errore-consegna"
    [ "$(field "$n" X-VerificaSicurezza)" = errore ] || bad "alice's notice has no X-VerificaSicurezza: errore"
    [ "$(field "$n" Subject)" = "AVVISO DI MANCATA CONSEGNA PER VIRUS: $subj2" ] ||
      bad "alice's notice has subject \"$(field "$n" Subject)\", expected E2's"
    [ "$(dc "$n" mittente)" = alice@pec.example.it ] || bad "alice's notice names mittente $(dc "$n" mittente)"
    [ "$(dc "$n" oggetto)" = "$subj2" ] || bad "alice's notice has oggetto \"$(dc "$n" oggetto)\""
    [ "$(dc "$n" consegna)" = bob@pec.example.net ] || bad "alice's notice is about $(dc "$n" consegna)"
    [ "$(dc "$n" identificativo)" = "$id2" ] || bad "alice's notice is not about E2"
  else
    bad "alice got no mancata consegna per virus"
  fi
  settle || return 1
  [ "$(count a dave@pec.example.it)" -eq "$dave0" ] || bad "dave received something (the forged mittente)"
  new=$(since a "$base")
  e2e_log "case 4: A's new records: $new"
  grep -Eq -- "^MancataConsegnaVirus - [a-z]+ $id2 alice@pec.example.it .*\| $subj2 \|" <<<"$new" ||
    bad "A's log has no MancataConsegnaVirus for E2 from alice with E2's subject"
  if grep -q "dave@pec.example.it" <<<"$(grep -v '^Ricezione ' <<<"$new")"; then
    bad "A's records name dave: $(grep dave <<<"$new" | tr '\n' ';')"
  fi
}

case_5() {
  local base_a base_b alice0 carol0 dave0 ric0 n new
  # At B: A's genuine envelope E1 for a B mailbox that is not among its recipients.
  base_a=$(max_id a) base_b=$(max_id b) alice0=$(count a alice@pec.example.it)
  carol0=$(count b carol@pec.example.net)
  send "$b_smtp" alice@pec.example.it carol@pec.example.net "$e1" ||
    { bad "B refused E1 for carol in SMTP"; return 1; }
  if n=$(fetch_new b carol@pec.example.net "$carol0" 30); then
    is_anomaly "$n" net || bad "at B, carol got $(describe "$n"), not B's anomaly envelope"
  else
    bad "at B, carol got nothing"
  fi
  settle || return 1
  new=$(since b "$base_b")
  e2e_log "case 5 (B): B's new records: $new"
  if grep -Eq '^(PresaInCarico|Consegna) ' <<<"$new"; then
    bad "B issued $(grep -E '^(PresaInCarico|Consegna) ' <<<"$new" | cut -d' ' -f1 | tr '\n' ' ')for carol"
  fi
  new=$(since a "$base_a")
  [ -z "$new" ] || bad "A received something about carol: $(tr '\n' ';' <<<"$new")"
  [ "$(count a alice@pec.example.it)" -eq "$alice0" ] || bad "alice received something (a CONSEGNA for carol?)"

  # At A: the same envelope, signed by A itself, for an A mailbox that is not a recipient.
  base_a=$(max_id a) alice0=$(count a alice@pec.example.it) dave0=$(count a dave@pec.example.it)
  ric0=$(count a ricevute@pec.example.it)
  send "$a_smtp" alice@pec.example.it dave@pec.example.it "$e1" ||
    { bad "A refused E1 for dave in SMTP"; return 1; }
  if n=$(fetch_new a dave@pec.example.it "$dave0" 30); then
    is_anomaly "$n" it || bad "at A, dave got $(describe "$n"), not A's anomaly envelope"
  else
    bad "at A, dave got nothing"
  fi
  settle || return 1
  new=$(since a "$base_a")
  e2e_log "case 5 (A): A's new records: $new"
  if grep -Eq '^(PresaInCarico|Consegna) ' <<<"$new"; then
    bad "A issued $(grep -E '^(PresaInCarico|Consegna) ' <<<"$new" | cut -d' ' -f1 | tr '\n' ' ')for dave"
  fi
  [ "$(count a alice@pec.example.it)" -eq "$alice0" ] || bad "alice received something (a CONSEGNA for dave?)"
  [ "$(count a ricevute@pec.example.it)" -eq "$ric0" ] || bad "A's ricevute mailbox received something (A's presa in carico for dave?)"
}

case_6() {
  local v f id to n base new
  local -A ids=()
  base=$(max_id a)
  for v in ctl mid rif from dest; do
    f=$work/c6-$v.eml id=$(fresh_id "6$v") to=h6$v@pec.example.it
    ids[$v]=$id
    local extra=()
    case $v in
      mid) extra=(--header "Message-ID: <$(fresh_id 6other)>") ;;
      rif) extra=(--header "X-Riferimento-Message-ID: <hostile-other.$$@client.example>") ;;
      from) extra=(--header 'From: "Per conto di: alice@pec.example.it" <posta-certificata@pec.example.net>'
                   --header "Reply-To: alice@pec.example.it" --pc-header "From: alice@pec.example.it") ;;
      dest) extra=(--dc "destinatari=$to,dave@pec.example.it") ;;
    esac
    "${craft[@]}" resign --in "$m1" --out "$f" "${sign_b[@]}" --id "$id" \
      --msgid "<hostile-6$v.$$@client.example>" --to "$to" "${extra[@]}"
    if [ "$v" = ctl ]; then
      is_kind "$f" net "transport envelope" ||
        { bad "crafting: the control is not a valid B-signed transport envelope: $(verify_out "$f" net | grep -E '^(kind|reason)')"; return 1; }
    fi
    send "$a_smtp" mallory@pec.example.net "$to" "$f" || bad "A refused variant $v in SMTP"
  done
  for v in ctl mid rif from dest; do
    to=h6$v@pec.example.it
    if ! n=$(fetch_new a "$to" 0 30); then
      bad "variant $v: $to got nothing"
      continue
    fi
    if [ "$v" = ctl ]; then
      is_kind "$n" net "transport envelope" ||
        bad "control: $to did not get the envelope itself (crafting or setup broken)"
    else
      is_anomaly "$n" it ||
        bad "variant $v: $to got $(describe "$n"), not A's anomaly envelope"
    fi
  done
  settle || return 1
  new=$(since a "$base")
  e2e_log "case 6: A's new records: $new"
  grep -Eq "^PresaInCarico - [a-z]+ ${ids[ctl]} " <<<"$new" ||
    bad "control: A did not take the consistent envelope in charge (crafting or setup broken)"
  for v in mid rif from dest; do
    if grep -Eq "^(PresaInCarico|Consegna) .* ${ids[$v]} " <<<"$new"; then
      bad "variant $v: A issued $(grep -E "^(PresaInCarico|Consegna) .* ${ids[$v]} " <<<"$new" | cut -d' ' -f1 | tr '\n' ' ')"
    fi
  done
}

case_7() {
  local base dave0 alice0 n new
  base=$(max_id a) dave0=$(count a dave@pec.example.it) alice0=$(count a alice@pec.example.it)
  send "$a_smtp" posta-certificata@pec.example.net dave@pec.example.it "$c1" ||
    { bad "A refused C1 for dave in SMTP"; return 1; }
  if n=$(fetch_new a dave@pec.example.it "$dave0" 30); then
    is_anomaly "$n" it ||
      bad "dave got $(describe "$n"), not A's anomaly envelope"
  else
    bad "dave got nothing"
  fi
  settle || return 1
  new=$(since a "$base")
  e2e_log "case 7: A's new records: $new"
  if grep -Eq '^(PresaInCarico|Consegna|MancataConsegna[A-Za-z0-9]*) ' <<<"$new"; then
    bad "A issued $(grep -E '^(PresaInCarico|Consegna|MancataConsegna[A-Za-z0-9]*) ' <<<"$new" | cut -d' ' -f1 | tr '\n' ' ')"
  fi
  [ "$(count a alice@pec.example.it)" -eq "$alice0" ] || bad "alice received something"
}

for c in 2 3 4 5 6 7; do run_case "$c" "case_$c"; done

t_end=${EPOCHREALTIME}
awk -v s="$t_start" -v u="$t_up" -v g="$t_genuine" -v e="$t_end" \
  'BEGIN { printf "hostile_peer: timings: setup %.1f s, genuine traffic %.1f s, cases %.1f s, total %.1f s\n", u-s, g-u, e-g, e-s }'
if [ "${#failures[@]}" -gt 0 ]; then
  printf 'hostile_peer: %d failed check(s):\n' "${#failures[@]}" >&2
  printf '  %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "hostile_peer: PASS"

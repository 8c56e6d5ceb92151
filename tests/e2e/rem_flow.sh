#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, REM (ETSI EN 319 532-4 REM baseline, issue 20) through the three roles with
# every part real: three providers (provider_up: Postfix, Dovecot behind pec's delivery
# point, clamd, SoftHSM2, the test TSA, `pec serve`), a private dnsmasq for the test zones
# (lib_rem.sh) as the resolver of A's and B's pec (the REM MX check), and a Trusted List
# signed by a test scheme operator (xmlsec1), served over HTTPS with both REM services' CSI
# (`pec rem csi publish`), fetched by pec serve at start.
#   A  pec.example.it   REM and PEC; alice has a sender identity.
#   B  pec.example.net  REM and PEC; bob has a sender identity; every mailbox has a 100 KiB
#                       quota and full@ is filled up to it. The index also lists muto.example.net
#                       as B's, its MX is B's REM supply point, but A routes it to a dead
#                       port: a REM peer that never answers.
#   C  pec.example.org  PEC only: in the index (B's provider entry, B's key), not a REM supply
#                       point (its MX is mx.pec.example.org).
#   example.com         an ordinary Internet domain (A's Postfix delivers it to A's Dovecot
#                       directly, not through pec's delivery point).
# Scenarios, each asserting the REM-MessageType / REM-EventIdentifier / reason of the
# messages found in the Maildirs, `pec evidence list` / `show` on each side and the legal
# logs (`pec log search --format json`, EvidenzaREMEmessa / EvidenzaREMRicevuta):
#   a. alice → bob@pec.example.net: the dispatch in bob's Maildir; alice holds the
#      SubmissionAcceptance and the ContentConsignment receipts; B's RelayAcceptance is
#      consumed by A (stored as received); every evidence exactly once on each side; `pec
#      verify` says valid on what bob and alice got.
#   b. alice → full@pec.example.net (mailbox over quota): ContentConsignmentFailure RD04.
#   c. alice → carol@pec.example.org (PEC only): PEC (accettazione, envelope, consegna).
#   d. alice → dave@example.com (ordinary address): RelayToNonERDS to alice.
#   e. ordinary mail from someone@example.com → bob (a REM mailbox): ReceivedFromNonERDS.
#   f. alice → ugo@muto.example.net (peer never answers), relay_wait its default 24 h, on a
#      test clock: `pec timers run` on A sends nothing now and at +13 h; at +25 h exactly
#      one RelayFailure RB22 to alice (REM-MessageType receipt, `pec verify` valid, once in
#      `pec evidence list` and in A's legal log); again at +25 h and at +30 h nothing.
#   g. alice → bob@pec.example.net with delivery held at B (B's Postfix defer_transports =
#      lmtp, after B's relay acceptance): B's timers send nothing now and at +13 h; at
#      +25 h exactly one ContentConsignmentFailure RD03 to alice (consignment_wait, default
#      24 h); again at +25 h and +30 h nothing; once delivery resumes, bob gets the dispatch
#      and no ContentConsignment is issued for it.
#   The test clock of f and g: `pec timers run --now T` run under faketime at T, with the
#   provider's test TSA moved to T as well (tsa_offset, lib.sh): every evidence of the pass
#   is signed, time-stamped and checked at T (a TSA on the real clock would stamp it before
#   its signing time, which XAdES rightly refuses). pec serve's own timers run on the real
#   clock: nothing of f or g is due on it for 24 h.
# Scenarios whose feature is not merged yet are listed in REM_FLOW_SKIP with the reason and
# print "SKIPPED"; the script says so at the end (and does not pass silently).
#
# Usage: tests/e2e/rem_flow.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/lib_rem.sh
. "$here/lib_rem.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"

# Scenario (or part: a.cc, a's ContentConsignment) → why it is skipped, for a feature not
# merged yet: REM_FLOW_SKIP="f=why a.cc=why" (underscores print as spaces); none by default.
default_skip=""
declare -A skip=()
for s in ${REM_FLOW_SKIP-$default_skip}; do skip[${s%%=*}]=${s#*=}; done
skipped=()

command -v dnsmasq >/dev/null || { echo "rem_flow: dnsmasq missing (scripts/install-deps.sh)" >&2; exit 2; }
command -v xmlsec1 >/dev/null || { echo "rem_flow: xmlsec1 missing (scripts/install-deps.sh)" >&2; exit 2; }
command -v faketime >/dev/null || { echo "rem_flow: faketime missing (scripts/install-deps.sh)" >&2; exit 2; }

provider_script rem_flow a b c
on_exit() {
  https_files_stop "$work/https"
  dns_stop "$work/dns"
}

# ---- trust: PKI, DNS, Trusted List over HTTPS ---------------------------------------------
export PROVIDER_PKI=$work/pki PROVIDER_LMTP_PROXY=1 PROVIDER_NET_EXTRA_DOMAINS="muto.example.net pec.example.org"
sh "$root/tests/pki/make-pki.sh" "$work/pki" >/dev/null 2>&1 || e2e_fail "make-pki.sh"
# C's mail server certificate (the CA's name constraints bind e-mail names, not DNS names).
cat > "$work/pki/org-tls.ext" <<'EOF'
[ext]
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:mx.pec.example.org, DNS:pec.example.org, IP:127.0.0.1
EOF
openssl req -new -newkey rsa:2048 -nodes -keyout "$work/pki/org-tls.key" \
  -subj "/C=IT/O=PEC Example ORG/CN=mx.pec.example.org" -out "$work/pki/org-tls.csr" 2>/dev/null
openssl x509 -req -sha256 -days 3650 -in "$work/pki/org-tls.csr" -CA "$work/pki/ca.pem" \
  -CAkey "$work/pki/ca.key" -set_serial 0x4001 -extfile "$work/pki/org-tls.ext" -extensions ext \
  -out "$work/pki/org-tls.pem" 2>/dev/null
chmod 0644 "$work/pki/org-tls.key"

# The test zones, on port 53 of a loopback address of our own (glibc and hickory take no
# port): A's and B's pec ask it for the MX check.
mapfile -t p < <(e2e_free_ports 1)
dns_addr=127.53.$((p[0] / 256 % 256)).$((p[0] % 256))
DNS_ADDR=$dns_addr dns_start "$work/dns" 53 \
  "pec.example.it MX 10 mx.pec.example.it" "pec.example.net MX 10 mx.pec.example.net" \
  "muto.example.net MX 10 mx.pec.example.net" "pec.example.org MX 10 mx.pec.example.org" \
  "example.com MX 10 mx.example.com" \
  "mx.pec.example.it A 127.0.0.1" "mx.pec.example.net A 127.0.0.1" \
  "mx.pec.example.org A 127.0.0.1" "mx.example.com A 127.0.0.1"
printf 'nameserver %s\noptions attempts:2 timeout:2\n' "$dns_addr" > "$work/resolv.conf"
# pec serve of A and B gets that resolver in a mount namespace of its own: its REM MX checks
# (routing at submission, the peer's receipts at reception) ask the test zones.
provider_resolv_ok || { e2e_fail "unshare -m is not permitted here: pec serve cannot get the test resolver"; exit 1; }
export PROVIDER_RESOLV_CONF=$work/resolv.conf

mkdir -p "$work/www"
https_port=$(https_files_start "$work/https" "$work/www" "$work/pki/it-tls.pem" "$work/pki/it-tls.key")
base=https://127.0.0.1:$https_port
# The scheme operator signs with a key of its own (the outsider leaf: nobody's PEC key).
rem_tl_write "$work/www/TL-IT.xml" "$work/pki/outsider.key" "$work/pki/outsider.pem" \
  "PEC Example IT S.p.A.|$work/pki/it.pem|smtp:mx.pec.example.it:25 $base/csi-it.xml" \
  "PEC Example NET S.p.A.|$work/pki/net.pem|smtp:mx.pec.example.net:25 $base/csi-net.xml"
export PROVIDER_REM_TL_URL=$base/TL-IT.xml PROVIDER_REM_TL_SIGNER=$work/pki/outsider.pem
# The CSIs are published once both providers are up (each needs its own configuration and
# token): pec serve refreshes the list and the CSIs every 2 s until they are there.
export PROVIDER_REM_TL_REFRESH=2s

# ---- providers -------------------------------------------------------------------------------
# relay_wait and consignment_wait are their defaults (24 h): f and g move the clock past them.
PROVIDER_REM=1 PROVIDER_REM_IDENTITIES=alice@pec.example.it PROVIDER_REM_CSI_URL=$base/csi-it.xml \
  provider_up "$work/a" pec.example.it it example.com
a_submission=$submission a_smtp=$smtp a_conf=$conf a_lmtp=$lmtp
PROVIDER_REM=1 PROVIDER_REM_IDENTITIES=bob@pec.example.net PROVIDER_REM_CSI_URL=$base/csi-net.xml \
  DOVECOT_QUOTA=100K provider_up "$work/b" pec.example.net net
b_smtp=$smtp b_conf=$conf b_lmtp=$lmtp
PROVIDER_RESOLV_CONF='' PROVIDER_TLS_NAME=org-tls provider_up "$work/c" pec.example.org net
c_smtp=$smtp
mapfile -t dead < <(e2e_free_ports 1)
postfix_route "$work/a/postfix" pec.example.net "127.0.0.1:$b_smtp"
postfix_route "$work/a/postfix" pec.example.org "127.0.0.1:$c_smtp"
postfix_route "$work/a/postfix" muto.example.net "127.0.0.1:${dead[0]}"
postfix_route "$work/b/postfix" pec.example.it "127.0.0.1:$a_smtp"
postfix_route "$work/c/postfix" pec.example.it "127.0.0.1:$a_smtp"
# example.com stands for the Internet: its mailboxes are not A's certified ones, Postfix
# hands them to Dovecot directly (not through pec's delivery point).
postfix_route_lmtp "$work/a/postfix" example.com "$a_lmtp"

# Both REM services publish their CSI where their Trusted List entry points.
SOFTHSM2_CONF=$a_conf PEC_E2E_PIN=1234 "$pec" rem csi publish -c "$work/a/pec.toml" \
  --out "$work/www/csi-it.xml" >/dev/null || e2e_fail "pec rem csi publish on A"
SOFTHSM2_CONF=$b_conf PEC_E2E_PIN=1234 "$pec" rem csi publish -c "$work/b/pec.toml" \
  --out "$work/www/csi-net.xml" >/dev/null || e2e_fail "pec rem csi publish on B"
for f in TL-IT.xml csi-it.xml csi-net.xml; do
  curl -sS --fail --cacert "$work/pki/ca.pem" -o "$work/got-$f" "$base/$f" || e2e_fail "GET $base/$f"
  cmp -s "$work/got-$f" "$work/www/$f" || e2e_fail "$f served is not the file"
done
# pec serve fetched and accepted the list at start (both REM services granted).
for x in a b; do
  out=$("$pec" rem trust show -c "$work/$x/pec.toml" 2>&1) || { echo "$out" >&2; e2e_fail "pec rem trust show on $x"; }
  grep -q "smtp:mx.pec.example.net:25" <<<"$out" || { echo "$out" >&2; e2e_fail "$x: B's service not in the trusted list"; }
  grep -q "smtp:mx.pec.example.it:25" <<<"$out" || { echo "$out" >&2; e2e_fail "$x: A's service not in the trusted list"; }
done
# auto sends REM only to a peer whose CSI says REM baseline: both views hold both services'.
for x in a b; do
  wait_for_file_match "$work/$x/pec.log" "rem peers view updated granted=2 rem_baseline=2" 60
done
e2e_log "trust: the Trusted List and both CSI served over HTTPS, accepted by A and B"

# ---- helpers ---------------------------------------------------------------------------------
maildir() { echo "$work/$1/dovecot/mail/${2#*@}/${2%@*}"; } # P ADDR
# count_in P ADDR: messages in ADDR's Maildir (new and cur) at provider P.
count_in() {
  local d
  d=$(maildir "$1" "$2")
  { find "$d/new" "$d/cur" -type f 2>/dev/null || true; } | wc -l
}
_has_n() { [ "$(count_in "$1" "$2")" -ge "$3" ]; }
# wait_n P ADDR N: until ADDR holds N messages (90 s), and no more.
wait_n() {
  e2e_poll 90 _has_n "$1" "$2" "$3" || e2e_fail "$2 holds $(count_in "$1" "$2") messages, expected $3"
  [ "$(count_in "$1" "$2")" -eq "$3" ] || e2e_fail "$2 holds $(count_in "$1" "$2") messages, expected exactly $3"
}
# newer P ADDR SINCE_FILE: the messages of ADDR not listed in SINCE_FILE, one path a line.
listing() { local d; d=$(maildir "$1" "$2"); { find "$d/new" "$d/cur" -type f 2>/dev/null || true; } | sort; }
newer() { listing "$1" "$2" | comm -13 "$3" -; }
# hdr FILE FIELD: the field's values (unfolded, one a line).
hdr() {
  "$E2E_PYTHON" -c '
import sys, email
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=policy.compat32)
for v in m.get_all(sys.argv[2]) or []:
    print(" ".join(str(v).split()))' "$1" "$2"
}
EV=http://uri.etsi.org/19522/Event/
DISPATCH=http://uri.etsi.org/19522/v1#/ERDMessageType/dispatch
RECEIPT=http://uri.etsi.org/19522/v1#/ERDMessageType/receipt
# of_event < FILES (one a line): "EVENT FILE" per file (EVENT the REM-EventIdentifier's name, or
# "pec:<X-Ricevuta>" / "pec:<X-Trasporto>" for PEC messages, "-" otherwise).
of_event() {
  local f e
  while IFS= read -r f; do
    e=$(hdr "$f" REM-EventIdentifier | head -n 1)
    if [ -n "$e" ]; then e=${e#"$EV"}; else
      e=$(hdr "$f" X-Ricevuta | head -n 1)
      [ -n "$e" ] || e=$(hdr "$f" X-Trasporto | head -n 1)
      e=${e:+pec:$e}
    fi
    echo "${e:--} $f"
  done
}
# one EVENT LISTING: the only file of LISTING ("EVENT FILE" lines) with EVENT; fails unless
# exactly one.
one() {
  local n
  n=$(awk -v e="$1" '$1 == e' <<<"$2" | wc -l)
  [ "$n" -eq 1 ] || { echo "$2" >&2; e2e_fail "expected exactly one $1, found $n"; return 1; }
  awk -v e="$1" '$1 == e { print $2 }' <<<"$2"
}
# reason FILE: the REM-ReasonIdentifier of FILE, its last path segment (the reason's name).
reason() { hdr "$1" REM-ReasonIdentifier | head -n 1 | sed 's|.*/||'; }
# The names of the reason codes checked here (EN 319 522-2 / AgID REM-Policy-IT, rem::codes).
declare -A reason_name=([RD04]=MessageNotConsignedForQuota
  [RB22]=S_ERDSP_ReceivedNoRelayAcceptanceInfoFromR_ERDSP
  [RD03]=S_ERDSP_ReceivedNoDeliveryInfoFromR_ERDSP)
# expect_reason FILE CODE: FILE's REM-ReasonIdentifier is CODE's.
expect_reason() {
  [ "$(reason "$1")" = "${reason_name[$2]}" ] ||
    e2e_fail "$1: REM-ReasonIdentifier $(reason "$1"), expected ${reason_name[$2]} ($2)"
}
msgtype() { hdr "$1" REM-MessageType | head -n 1; }
# rem_verify FILE: `pec verify` on its own (the test CA as REM and time-stamp anchor, the
# Trusted List as published, its signer) says FILE is valid.
rem_verify() {
  local out rc=0
  out=$("$pec" verify --rem-anchors "$work/pki/ca.pem" --tsa-anchors "$work/pki/ca.pem" \
    --trusted-list "$work/www/TL-IT.xml" --tl-signer "$work/pki/outsider.pem" "$1" 2>&1) || rc=$?
  [ "$rc" -eq 0 ] || { echo "$out" >&2; e2e_fail "pec verify refused $1 (exit $rc)"; return 1; }
  grep -q "^verdict: valid rem " <<<"$out" || { echo "$out" >&2; e2e_fail "pec verify: $1 not said valid"; }
}
# evidences P MSGID: `pec evidence list --message MSGID` on provider P.
evidences() { "$pec" evidence list -c "$work/$1/pec.toml" --message "$2"; }
# legal P: provider P's legal log as JSON (pec log search), in $work/P/legal.json.
legal() { "$pec" log search -c "$work/$1/pec.toml" --format json -o "$work/$1/legal.json"; }
# log_evidence_count P MSGID KIND EVENT [REASON]: records of KIND (EvidenzaREMEmessa|Ricevuta)
# about MSGID whose reason names EVENT (and the reason REASON, by name).
log_evidence_count() {
  "$E2E_PYTHON" - "$work/$1/legal.json" "$2" "$3" "$4" "${5:-}" <<'PY'
import json, sys
path, pec_id, kind, event, code = sys.argv[1:6]
text = open(path).read()
try:
    data = json.loads(text)
    recs = data if isinstance(data, list) else data.get("records", data.get("events", []))
except ValueError:
    recs = [json.loads(l) for l in text.splitlines() if l.strip()]
n = 0
for r in recs:
    s = json.dumps(r)
    if pec_id not in s or kind not in s:
        continue
    reason = str(r.get("reason") or r.get("motivo") or s)
    if ("Event/" + event + ";") not in reason:
        continue
    if code and ("EventReason/" + code + ";") not in reason:
        continue
    n += 1
print(n)
PY
}
expect_log() { # P MSGID KIND EVENT CODE N
  local n
  n=$(log_evidence_count "$1" "$2" "$3" "$4" "${5:+${reason_name[$5]:-$5}}")
  [ "$n" = "$6" ] || e2e_fail "$1's legal log: $n $3 records of $4${5:+ $5} about $2, expected $6"
}
# expect_evidence P MSGID EVENT N: `pec evidence list` on P names EVENT N times for MSGID.
expect_evidence() {
  local out n
  out=$(evidences "$1" "$2" 2>&1) || true
  n=$(grep -c -- "/Event/$3 " <<<"$out" || true)
  [ "$n" = "$4" ] || { echo "$out" >&2; e2e_fail "$1: pec evidence list --message $2: $3 $n times, expected $4"; }
}
submit() { # SUBJECT TO: alice submits a plain message
  local f=$work/msg-$RANDOM.eml
  printf 'From: alice@pec.example.it\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <rem-flow-%s-%s@client.example.it>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nCaso: %s.\r\n' \
    "$2" "$1" "$(date -R)" "$RANDOM" "$$" "$1" > "$f"
  e2e_send "$a_submission" alice@pec.example.it "$f" --to "$2" >/dev/null
}
scenario() { # LETTER TITLE: 0 to run it, 1 when skipped (said loudly)
  if [ -n "${skip[$1]:-}" ]; then
    echo "rem_flow: SKIPPED scenario $1 ($2): ${skip[$1]//_/ }" >&2
    skipped+=("$1")
    return 1
  fi
  e2e_log "scenario $1: $2"
}
snap() { listing "$1" "$2" > "$work/snap-$3"; } # P ADDR NAME
# part KEY TITLE: 0 to check that part of a scenario, 1 when skipped (said loudly).
part() {
  if [ -n "${skip[$1]:-}" ]; then
    echo "rem_flow: SKIPPED part $1 ($2): ${skip[$1]//_/ }" >&2
    skipped+=("$1")
    return 1
  fi
}
# has_evidence P MSGID EVENT: pec evidence list on P names EVENT for MSGID.
has_evidence() { evidences "$1" "$2" 2>/dev/null | grep -q -- "/Event/$3 "; }
# pec_id_of P SUBJECT: the PEC msgid of the message with SUBJECT in P's legal log (its first
# record).
pec_id_of() {
  legal "$1"
  "$E2E_PYTHON" -c '
import json, sys
for r in json.load(open(sys.argv[1])):
    if r.get("subject") == sys.argv[2]:
        print(r["pec_id"]); break' "$work/$1/legal.json" "$2"
}
# The test clock of f and g: t0 (epoch seconds) is set by the scenario.
t0=0
# timers P [HOURS]: one pass of P's timers (`pec timers run`), on the real clock, or at t0 +
# HOURS: `--now` that instant, pec itself under faketime at it, and P's test TSA dating its
# tokens then (tsa_offset) for the pass only. Its output in $work/P/timers.out (and
# appended to $work/P/timers.all).
timers() {
  local c now=() clock=() at off=0 rc=0
  if [ $# -ge 2 ]; then
    at=$((t0 + $2 * 3600))
    off=$((at - $(date -u +%s)))
    now=(--now "$(date -u -d "@$at" +%Y-%m-%dT%H:%M:%SZ)")
    clock=(faketime -f "+${off}s")
  fi
  if [ "$1" = a ]; then c=$a_conf; else c=$b_conf; fi
  tsa_offset "$work/$1/tsa" "$off"
  SOFTHSM2_CONF=$c PEC_E2E_PIN=1234 "${clock[@]}" "$pec" timers run -c "$work/$1/pec.toml" "${now[@]}" \
    > "$work/$1/timers.out" || rc=$?
  tsa_offset "$work/$1/tsa" 0
  cat "$work/$1/timers.out" >> "$work/$1/timers.all"
  [ "$rc" -eq 0 ] || { cat "$work/$1/timers.out" >&2; e2e_fail "pec timers run on $1 ${2:+at +$2 h} (exit $rc)"; }
}
sent() { grep -c '^sent ' "$work/$1/timers.out" || true; } # P: notices sent by the last pass
# quiet P [HOURS]: a pass of P's timers (at +HOURS) sends nothing and fails nothing.
quiet() {
  timers "$@"
  if [ "$(sent "$1")" != 0 ] || grep -q '^FAILED ' "$work/$1/timers.out"; then
    cat "$work/$1/timers.out" >&2
    e2e_fail "$1's timers did something${2:+ at +$2 h}"
  fi
}
# sends_one P HOURS CODE: a pass of P's timers at +HOURS sends exactly one notice, the REM
# receipt with CODE (RB22, RD03), and fails nothing.
sends_one() {
  timers "$1" "$2"
  if [ "$(sent "$1")" != 1 ] || ! grep -q "^sent rem $3 receipt " "$work/$1/timers.out" ||
    grep -q '^FAILED ' "$work/$1/timers.out"; then
    cat "$work/$1/timers.out" >&2
    e2e_fail "$1's timers at +$2 h: expected the $3 receipt and nothing else"
  fi
  e2e_log "$1 +$2 h: $(grep "^sent rem $3 receipt " "$work/$1/timers.out")"
}

# Full mailbox at B (every mailbox there has 100 KiB): filled straight through B's Dovecot
# LMTP with 26 KB messages (a dispatch's size) until Dovecot refuses one (552 5.2.2).
e2e_log "fill full@pec.example.net's mailbox up to its quota"
"$E2E_PYTHON" - "$b_lmtp" <<'PY' || e2e_fail "cannot fill full@pec.example.net's mailbox"
import smtplib, sys
body = ("Subject: riempitivo\r\n\r\n" + ("x" * 76 + "\r\n") * 333).encode()
for _ in range(10):
    lmtp = smtplib.LMTP("127.0.0.1", int(sys.argv[1]))
    try:
        lmtp.sendmail("filler@pec.example.net", ["full@pec.example.net"], body)
    except smtplib.SMTPRecipientsRefused as e:
        code = list(e.recipients.values())[0][0]
        sys.exit(0 if code == 552 else "refused with %s" % code)
    except smtplib.SMTPDataError as e:
        sys.exit(0 if e.smtp_code == 552 else "refused with %s" % e.smtp_code)
    finally:
        lmtp.close()
sys.exit("never refused: no quota?")
PY
full_n=$(count_in b full@pec.example.net)

# ---- a. REM A → REM B ------------------------------------------------------------------------
if scenario a "REM A → REM B: dispatch, SubmissionAcceptance, RelayAcceptance, ContentConsignment"; then
  snap a alice@pec.example.it a
  submit "a rem verso rem" bob@pec.example.net
  wait_n b bob@pec.example.net 1
  dispatch=$(listing b bob@pec.example.net | head -n 1)
  [ "$(msgtype "$dispatch")" = "$DISPATCH" ] || e2e_fail "bob's message is not a REM dispatch: $(msgtype "$dispatch")"
  [ "$(hdr "$dispatch" REM-EventIdentifier | head -n 1)" = "${EV}SubmissionAcceptance" ] ||
    e2e_fail "the dispatch does not carry the SubmissionAcceptance"
  mid=$(hdr "$dispatch" Message-ID | head -n 1 | tr -d '<>')
  [ "$mid" = "$(pec_id_of a "a rem verso rem")" ] || e2e_fail "the dispatch's Message-ID $mid is not A's msgid"
  rem_verify "$dispatch"
  # A routed it as REM through the MX check: its pec asked the test DNS for B's MX.
  grep -q 'query\[MX\] pec.example.net from' "$work/dns/dnsmasq.log" ||
    e2e_fail "A's pec never asked the test DNS for pec.example.net's MX"
  # B's RelayAcceptance reached A (received evidence) and was consumed there.
  e2e_poll 90 has_evidence a "$mid" RelayAcceptance || e2e_fail "A never received B's RelayAcceptance"
  postfix_wait_queue_empty "$work/b/postfix" 60
  postfix_wait_queue_empty "$work/a/postfix" 60
  ! grep -rl "^REM-EventIdentifier: ${EV}RelayAcceptance" "$work/a/dovecot/mail" >/dev/null 2>&1 ||
    e2e_fail "B's RelayAcceptance landed in a mailbox at A"
  n=2
  part a.cc "ContentConsignment at B's delivery point" || n=1
  wait_n a alice@pec.example.it "$n"
  got=$(newer a alice@pec.example.it "$work/snap-a" | of_event)
  sa=$(one SubmissionAcceptance "$got")
  [ "$(msgtype "$sa")" = "$RECEIPT" ] || e2e_fail "$sa is not a REM receipt: $(msgtype "$sa")"
  rem_verify "$sa"
  for x in a b; do
    expect_evidence $x "$mid" SubmissionAcceptance 1
    expect_evidence $x "$mid" RelayAcceptance 1
  done
  legal a; legal b
  expect_log a "$mid" EvidenzaREMEmessa SubmissionAcceptance "" 1
  expect_log a "$mid" EvidenzaREMRicevuta RelayAcceptance "" 1
  expect_log b "$mid" EvidenzaREMRicevuta SubmissionAcceptance "" 1
  expect_log b "$mid" EvidenzaREMEmessa RelayAcceptance "" 1
  if [ "$n" = 2 ]; then
    cc=$(one ContentConsignment "$got")
    [ "$(msgtype "$cc")" = "$RECEIPT" ] || e2e_fail "$cc is not a REM receipt: $(msgtype "$cc")"
    rem_verify "$cc"
    expect_evidence a "$mid" ContentConsignment 1
    expect_evidence b "$mid" ContentConsignment 1
    expect_log a "$mid" EvidenzaREMRicevuta ContentConsignment "" 1
    expect_log b "$mid" EvidenzaREMEmessa ContentConsignment "" 1
    # pec evidence show on each side names the event.
    id=$(hdr "$cc" REM-Evidence-ID | head -n 1 | tr -d '<>')
    "$pec" evidence show -c "$work/b/pec.toml" "$id" | grep -q "Event/ContentConsignment" ||
      e2e_fail "B: pec evidence show $id"
    "$pec" evidence show -c "$work/a/pec.toml" "$id" | grep -q "Event/ContentConsignment" ||
      e2e_fail "A: pec evidence show $id"
  fi
  id=$(hdr "$sa" REM-Evidence-ID | head -n 1 | tr -d '<>')
  "$pec" evidence show -c "$work/a/pec.toml" "$id" | grep -q "Event/SubmissionAcceptance" ||
    e2e_fail "A: pec evidence show $id"
  e2e_log "ok a: dispatch $mid in bob's mailbox, SubmissionAcceptance${cc:+ and ContentConsignment} to alice, RelayAcceptance consumed by A, each evidence once"
fi

# ---- b. full mailbox at B → ContentConsignmentFailure RD04 ----------------------------------
if scenario b "full mailbox at B → ContentConsignmentFailure RD04"; then
  snap a alice@pec.example.it b
  n0=$(count_in a alice@pec.example.it)
  submit "b casella piena" full@pec.example.net
  wait_n a alice@pec.example.it $((n0 + 2))
  postfix_wait_queue_empty "$work/b/postfix" 60
  postfix_wait_queue_empty "$work/a/postfix" 60
  wait_n a alice@pec.example.it $((n0 + 2))
  got=$(newer a alice@pec.example.it "$work/snap-b" | of_event)
  one SubmissionAcceptance "$got" >/dev/null
  ccf=$(one ContentConsignmentFailure "$got")
  expect_reason "$ccf" RD04
  rem_verify "$ccf"
  [ "$(count_in b full@pec.example.net)" -eq "$full_n" ] || e2e_fail "full@ got the dispatch despite its quota"
  mid=$(pec_id_of a "b casella piena")
  legal a; legal b
  expect_log b "$mid" EvidenzaREMEmessa ContentConsignmentFailure RD04 1
  expect_log a "$mid" EvidenzaREMRicevuta ContentConsignmentFailure RD04 1
  expect_log b "$mid" EvidenzaREMEmessa ContentConsignment "" 0
  for x in a b; do
    expect_evidence $x "$mid" RelayAcceptance 1
    expect_evidence $x "$mid" ContentConsignmentFailure 1
    expect_evidence $x "$mid" ContentConsignment 0
  done
  e2e_log "ok b: ContentConsignmentFailure RD04 to alice, full@ untouched"
fi

# ---- c. REM A → PEC-only C → PEC -------------------------------------------------------------
if scenario c "REM A → PEC-only C: PEC envelope, accettazione, consegna"; then
  snap a alice@pec.example.it c
  n0=$(count_in a alice@pec.example.it)
  submit "c rem verso pec" carol@pec.example.org
  wait_n c carol@pec.example.org 1
  env=$(listing c carol@pec.example.org | head -n 1)
  [ "$(hdr "$env" X-Trasporto)" = posta-certificata ] || e2e_fail "carol's message is not a PEC envelope"
  [ -z "$(msgtype "$env")" ] || e2e_fail "carol got REM"
  wait_n a alice@pec.example.it $((n0 + 2))
  got=$(newer a alice@pec.example.it "$work/snap-c" | of_event)
  one pec:accettazione "$got" >/dev/null
  one pec:avvenuta-consegna "$got" >/dev/null
  grep -q 'query\[MX\] pec.example.org from' "$work/dns/dnsmasq.log" ||
    e2e_fail "A's pec never asked the test DNS for pec.example.org's MX"
  e2e_verify "$env" "transport envelope" "$work/pki/net.pem" "$work/pki/it.pem"
  e2e_log "ok c: PEC to carol@pec.example.org (envelope, accettazione, avvenuta-consegna)"
fi

# ---- d. REM A → ordinary address → RelayToNonERDS -------------------------------------------
if scenario d "REM A → ordinary address: RelayToNonERDS"; then
  snap a alice@pec.example.it d
  n0=$(count_in a alice@pec.example.it)
  submit "d rem verso ordinaria" dave@example.com
  wait_n a dave@example.com 1
  wait_n a alice@pec.example.it $((n0 + 2))
  # Settled (nothing more on its way: dave's mailbox is no certified one, no consignment).
  postfix_wait_queue_empty "$work/a/postfix" 60
  wait_n a alice@pec.example.it $((n0 + 2))
  got=$(newer a alice@pec.example.it "$work/snap-d" | of_event)
  one SubmissionAcceptance "$got" >/dev/null
  r2n=$(one RelayToNonERDS "$got")
  [ "$(msgtype "$r2n")" = "$RECEIPT" ] || e2e_fail "$r2n is not a REM receipt"
  rem_verify "$r2n"
  # dave got the dispatch itself (the original inside, with A's evidence).
  plain=$(listing a dave@example.com | head -n 1)
  [ "$(msgtype "$plain")" = "$DISPATCH" ] || e2e_fail "dave's message is not the REM dispatch"
  mid=$(pec_id_of a "d rem verso ordinaria")
  [ "$(hdr "$plain" Message-ID | head -n 1 | tr -d '<>')" = "$mid" ] || e2e_fail "dave's dispatch is not A's $mid"
  expect_evidence a "$mid" SubmissionAcceptance 1
  expect_evidence a "$mid" RelayToNonERDS 1
  expect_log a "$mid" EvidenzaREMEmessa SubmissionAcceptance "" 1
  expect_log a "$mid" EvidenzaREMEmessa RelayToNonERDS "" 1
  e2e_log "ok d: RelayToNonERDS to alice, dave@example.com got the message"
fi

# ---- e. ordinary mail → REM mailbox at B → ReceivedFromNonERDS ------------------------------
if scenario e "ordinary mail → REM mailbox at B: ReceivedFromNonERDS"; then
  snap b bob@pec.example.net e
  n0=$(count_in b bob@pec.example.net)
  printf 'From: someone@example.com\r\nTo: bob@pec.example.net\r\nSubject: e ordinaria\r\nDate: %s\r\nMessage-ID: <rem-flow-e-%s@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nCiao.\r\n' \
    "$(date -R)" "$$" > "$work/ordinary.eml"
  "${mail[@]}" send --port "$b_smtp" --from someone@example.com --to bob@pec.example.net "$work/ordinary.eml" >/dev/null
  wait_n b bob@pec.example.net $((n0 + 1))
  got=$(newer b bob@pec.example.net "$work/snap-e" | of_event)
  rfn=$(one ReceivedFromNonERDS "$got")
  rem_verify "$rfn"
  mid=$(pec_id_of b "e ordinaria")
  legal b
  expect_log b "$mid" EvidenzaREMEmessa ReceivedFromNonERDS "" 1
  e2e_log "ok e: ReceivedFromNonERDS in bob's mailbox"
fi

# ---- f. a peer that never answers → RelayFailure RB22 past relay_wait (test clock) ----------
if scenario f "peer never answers: RelayFailure RB22 past relay_wait (24 h, test clock), exactly once"; then
  snap a alice@pec.example.it f
  n0=$(count_in a alice@pec.example.it)
  submit "f peer muto" ugo@muto.example.net
  # The SubmissionAcceptance only; the dispatch stays in A's queue (dead port).
  wait_n a alice@pec.example.it $((n0 + 1))
  t0=$(date -u +%s)
  got=$(newer a alice@pec.example.it "$work/snap-f" | of_event)
  one SubmissionAcceptance "$got" >/dev/null
  mid=$(pec_id_of a "f peer muto")
  # Before relay_wait: nothing (no 12 h notice for REM either).
  quiet a
  quiet a 13
  # Past it: exactly one RelayFailure RB22, to alice.
  sends_one a 25 RB22
  wait_n a alice@pec.example.it $((n0 + 2))
  got=$(newer a alice@pec.example.it "$work/snap-f" | of_event)
  rf=$(one RelayFailure "$got")
  [ "$(msgtype "$rf")" = "$RECEIPT" ] || e2e_fail "$rf is not a REM receipt: $(msgtype "$rf")"
  expect_reason "$rf" RB22
  rem_verify "$rf"
  # Again, and with the clock moved on: nothing.
  quiet a 25
  quiet a 30
  [ "$(count_in a alice@pec.example.it)" -eq $((n0 + 2)) ] || e2e_fail "alice holds more than the SubmissionAcceptance and one RelayFailure"
  legal a
  expect_log a "$mid" EvidenzaREMEmessa RelayFailure RB22 1
  expect_evidence a "$mid" RelayFailure 1
  e2e_log "ok f: one RelayFailure RB22 at +25 h (relay_wait 24 h), none at +0 h / +13 h, none again at +25 h / +30 h"
fi

# ---- g. delivery held at B → ContentConsignmentFailure RD03 past consignment_wait ------------
# b_defer TRANSPORTS: B's Postfix defer_transports (lmtp: deliveries to the mailboxes held in
# its queue; empty: none); reloads it and waits for the reload.
b_defer() {
  local before
  postconf -c "$work/b/postfix/etc" -e "defer_transports = $1"
  before=$(_e2e_count_reloads "$work/b/postfix")
  _e2e_postfix "$work/b/postfix" reload
  e2e_poll 30 _e2e_reloaded_since "$work/b/postfix" "$before" || e2e_fail "B's Postfix did not reload"
}
# a_queue_only_muto: A's queue holds nothing but f's dispatch to the silent peer (if any).
a_queue_only_muto() {
  local out
  out=$(postqueue -c "$work/a/postfix/etc" -j 2>/dev/null) || return 1
  ! grep -v '"address": "ugo@muto.example.net"' <<<"$out" | grep -q .
}
held_at_b() { grep -q 'to=<bob@pec.example.net>.*status=deferred (deferred transport)' "$work/b/postfix/maillog"; }
if scenario g "delivery held at B: ContentConsignmentFailure RD03 past consignment_wait (24 h, test clock), exactly once"; then
  b_defer lmtp
  snap a alice@pec.example.it g
  snap b bob@pec.example.net g-bob
  n0=$(count_in a alice@pec.example.it)
  nb=$(count_in b bob@pec.example.net)
  submit "g consegna trattenuta" bob@pec.example.net
  wait_n a alice@pec.example.it $((n0 + 1))
  mid=$(pec_id_of a "g consegna trattenuta")
  # B relay-accepted it (its consignment wait begins), and holds it in its queue.
  e2e_poll 90 has_evidence a "$mid" RelayAcceptance || e2e_fail "A never received B's RelayAcceptance"
  t0=$(date -u +%s)
  e2e_poll 60 held_at_b || e2e_fail "B's Postfix does not hold the dispatch (defer_transports)"
  [ "$(count_in b bob@pec.example.net)" -eq "$nb" ] || e2e_fail "bob got the dispatch while B's deliveries were held"
  # Before consignment_wait: nothing.
  quiet b
  quiet b 13
  # Past it: exactly one ContentConsignmentFailure RD03, to alice.
  sends_one b 25 RD03
  wait_n a alice@pec.example.it $((n0 + 2))
  got=$(newer a alice@pec.example.it "$work/snap-g" | of_event)
  one SubmissionAcceptance "$got" >/dev/null
  ccf=$(one ContentConsignmentFailure "$got")
  [ "$(msgtype "$ccf")" = "$RECEIPT" ] || e2e_fail "$ccf is not a REM receipt: $(msgtype "$ccf")"
  expect_reason "$ccf" RD03
  rem_verify "$ccf"
  quiet b 25
  quiet b 30
  # Delivery resumes: bob gets the dispatch; its outcome is decided (RD03): no
  # ContentConsignment.
  b_defer ""
  postqueue -c "$work/b/postfix/etc" -f
  wait_n b bob@pec.example.net $((nb + 1))
  held=$(newer b bob@pec.example.net "$work/snap-g-bob")
  [ "$(msgtype "$held")" = "$DISPATCH" ] || e2e_fail "bob's new message is not a REM dispatch"
  [ "$(hdr "$held" Message-ID | head -n 1 | tr -d '<>')" = "$mid" ] || e2e_fail "bob's new message is not the dispatch $mid"
  postfix_wait_queue_empty "$work/b/postfix" 60
  e2e_poll 60 a_queue_only_muto || { postqueue -c "$work/a/postfix/etc" -p >&2; e2e_fail "A's queue holds more than f's dispatch"; }
  for x in a b; do
    expect_evidence $x "$mid" RelayAcceptance 1
    expect_evidence $x "$mid" ContentConsignmentFailure 1
    expect_evidence $x "$mid" ContentConsignment 0
  done
  [ "$(count_in a alice@pec.example.it)" -eq $((n0 + 2)) ] || e2e_fail "alice holds more than the SubmissionAcceptance and one ContentConsignmentFailure"
  legal a; legal b
  expect_log b "$mid" EvidenzaREMEmessa ContentConsignmentFailure RD03 1
  expect_log a "$mid" EvidenzaREMRicevuta ContentConsignmentFailure RD03 1
  expect_log b "$mid" EvidenzaREMEmessa ContentConsignment "" 0
  e2e_log "ok g: one ContentConsignmentFailure RD03 at +25 h (consignment_wait 24 h), none before or again; bob got the dispatch once delivery resumed, no ContentConsignment"
fi

if [ ${#skipped[@]} -gt 0 ]; then
  echo "rem_flow: PASS with scenarios SKIPPED: ${skipped[*]} (see the SKIPPED lines above)"
else
  echo "rem_flow: PASS"
fi

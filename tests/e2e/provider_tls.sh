#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, TLS between providers (spec §5.2), every part real: provider A (pec.example.it)
# and provider B (pec.example.net) as tests/e2e/provider.sh starts them, each Postfix
# presenting a server certificate from the test CA and trusting that CA, A's outbound mail
# going through the TLS policy map that `pec index tls-policy` wrote from the index.
#
#   1. A's map lists B's certified domain with "verify", and neither A's own domain nor an
#      ordinary one; B's IMAP offers STARTTLS with a certificate from the test CA.
#   2. alice@A → bob@B: delivered, A's Postfix logs a verified TLS connection to
#      pec.example.net.
#   3. B presents a certificate from another CA (tests/pki: net-rogue-tls), then one from
#      the test CA for another name (net-wrongname-tls), then no STARTTLS at all: each time
#      the next PEC message to bob stays deferred in A's queue with a TLS reason and B
#      receives nothing (never sent in clear, never to the wrong server); once B presents
#      its own certificate again, a flush of A's queue delivers it, exactly once.
#
# Usage: tests/e2e/provider_tls.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"

provider_script provider_tls a b

export PROVIDER_PKI=$work/pki
provider_up "$work/a" pec.example.it it
a_submission=$submission a_smtp=$smtp
provider_up "$work/b" pec.example.net net
b_smtp=$smtp b_imap=$imap
postfix_route "$work/a/postfix" pec.example.net "127.0.0.1:$b_smtp"
postfix_route "$work/b/postfix" pec.example.it "127.0.0.1:$a_smtp"
a_log=$work/a/postfix/maillog b_log=$work/b/postfix/maillog

e2e_log "1. A's TLS policy map"
policy=$(grep -v '^#' "$work/a/tls_policy")
[ "$policy" = "pec.example.net verify" ] || e2e_fail "A's TLS policy map is not just B's domain: $policy"
[ "$(postconf -c "$work/a/postfix/etc" -h smtp_tls_policy_maps)" = "texthash:$work/a/tls_policy" ] ||
  e2e_fail "A's Postfix does not use the map"

# (Dovecot counts a client on the server's own address as secured and lets it log in in
# clear even with ssl = required: the refusal of a login in clear cannot be shown here.)
e2e_log "1. B's IMAP offers STARTTLS, with B's certificate from the test CA"
/usr/bin/python3 - "$b_imap" "$PECMAIL_CAFILE" <<'EOF' || e2e_fail "B's IMAP TLS"
import imaplib, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
imap = imaplib.IMAP4("127.0.0.1", port, timeout=10)
assert "STARTTLS" in imap.capabilities, imap.capabilities
imap.starttls(ssl.create_default_context(cafile=cafile))
imap.login("bob@pec.example.net", "test")
imap.logout()
EOF

n=0
send() { # alice → bob, message number $n
  n=$((n + 1))
  printf 'From: alice@pec.example.it\r\nTo: bob@pec.example.net\r\nSubject: tls %s\r\nDate: %s\r\nMessage-ID: <tls-%s-%s@client.example.it>\r\n\r\nprova %s\r\n' \
    "$n" "$(date -R)" "$n" "$$" "$n" > "$work/m$n.eml"
  e2e_send "$a_submission" alice@pec.example.it "$work/m$n.eml" --to bob@pec.example.net >/dev/null
}
lines() { wc -l < "$1"; }
# seen_since FILE SKIP REGEX: a line after the first SKIP lines of FILE matches REGEX.
seen_since() { tail -n +"$(($2 + 1))" "$1" | grep -Eq "$3"; }

e2e_log "2. alice → bob over verified TLS"
send
e2e_fetch "$b_imap" bob@pec.example.net 1 "$work/bob1" 90 >/dev/null
postfix_wait_queue_empty "$work/a/postfix" 60
grep -Eq "Verified TLS connection established to pec\.example\.net\[127\.0\.0\.1\]:$b_smtp" "$a_log" ||
  e2e_fail "A did not log a verified TLS connection to B"
grep -Eq "to=<bob@pec\.example\.net>, relay=pec\.example\.net\[127\.0\.0\.1\]:$b_smtp,.*status=sent" "$a_log" ||
  e2e_fail "A did not log the delivery to B"

# b_server CERT [OPTION...]: B's Postfix presents CERT (a name of tests/pki, KEY.pem and
# KEY.key) and takes the main.cf OPTIONs; reloads it and waits for the reload.
b_server() {
  local cert=$1 before
  shift
  postconf -c "$work/b/postfix/etc" -e "smtpd_tls_cert_file = $work/pki/$cert.pem" \
    "smtpd_tls_key_file = $work/pki/$cert.key" "$@"
  before=$(_e2e_count_reloads "$work/b/postfix")
  _e2e_postfix "$work/b/postfix" reload
  e2e_poll 30 _e2e_reloaded_since "$work/b/postfix" "$before" || e2e_fail "B's Postfix did not reload"
}

delivered=1
# refused CASE REASON_REGEX CERT [OPTION...]: B presents CERT (with OPTIONs); the next
# message stays deferred in A's queue with a reason matching REASON_REGEX and B accepts
# nothing from A; then B is put right and a flush delivers it.
refused() {
  local case=$1 reason=$2 a_skip b_skip queue
  shift 2
  e2e_log "3. $case: PEC mail to B is deferred, not sent"
  b_server "$@"
  a_skip=$(lines "$a_log") b_skip=$(lines "$b_log")
  send
  e2e_poll 90 seen_since "$a_log" "$a_skip" "to=<bob@pec\.example\.net>, relay=pec\.example\.net.*status=deferred \(.*($reason)" || {
    tail -n +"$((a_skip + 1))" "$a_log" >&2
    e2e_fail "$case: no deferral with a TLS reason in A's log"
  }
  e2e_log "$case: $(tail -n +"$((a_skip + 1))" "$a_log" | grep -E 'status=deferred' | tail -n 1 | sed 's/.*status=//')"
  queue=$(postqueue -c "$work/a/postfix/etc" -p)
  grep -q "bob@pec.example.net" <<<"$queue" || e2e_fail "$case: the message is not in A's queue: $queue"
  grep -Eq "$reason" <<<"$queue" || e2e_fail "$case: A's queue does not give the TLS reason: $queue"
  if seen_since "$b_log" "$b_skip" "smtpd\[[0-9]+\]: [0-9A-F]+: client=localhost"; then
    e2e_fail "$case: B accepted a message from A"
  fi
  [ "$(e2e_count "$b_imap" bob@pec.example.net)" -eq "$delivered" ] || e2e_fail "$case: bob got the message"

  e2e_log "3. $case: B presents its own certificate again, the flush delivers"
  b_server net-tls "smtpd_tls_security_level = may"
  postqueue -c "$work/a/postfix/etc" -f
  delivered=$((delivered + 1))
  e2e_fetch "$b_imap" bob@pec.example.net "$delivered" "$work/bob$delivered" 90 >/dev/null
  postfix_wait_queue_empty "$work/a/postfix" 60
}

refused "a certificate from another CA" "Server certificate not verified" net-rogue-tls
refused "a certificate for another name" "Server certificate not verified" net-wrongname-tls
refused "no STARTTLS" "TLS is required" net-tls "smtpd_tls_security_level = none"
[ "$(e2e_count "$b_imap" bob@pec.example.net)" -eq 4 ] || e2e_fail "bob does not hold exactly the 4 messages"
e2e_log "provider_tls: PASS"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, the bounce of one of our envelopes (issue 21.4): provider A (pec.example.it)
# and provider B (pec.example.net) with real Postfix, Dovecot and pec. A's route to
# ghost@pec.example.net goes to an MTA that refuses it at RCPT (550 5.1.1, a small SMTP
# responder of this script), and so does its route to the domain lost.example.net (certified:
# in the index), whose recipients it refuses with 550 5.1.2 (domain not found).
#
# alice@A writes To bob@B, ghost@B and eve@lost.example.net. A's Postfix bounces the
# envelope for ghost and eve back to alice, through pec's delivery point (Postfix does not
# filter the bounces it writes), which turns the report into two
# A-signed avvisi di mancata consegna (no-dest for ghost with the remote reply, no-dominio
# for eve) instead of an anomaly envelope; bob gets the envelope and alice B's CONSEGNA.
# alice ends with exactly: the acceptance, bob's CONSEGNA, the two notices. A's legal log
# records both non-deliveries; past 25 h A's timers send nothing for anybody; `pec status`
# counts nobody waiting.
#
# Usage: tests/e2e/bounce.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"

provider_script bounce a b
refuser_pid=
on_exit() { [ -z "$refuser_pid" ] || kill "$refuser_pid" 2>/dev/null || true; }

export PROVIDER_PKI=$work/pki PROVIDER_LMTP_PROXY=1 PROVIDER_NET_EXTRA_DOMAINS=lost.example.net
provider_up "$work/a" pec.example.it it
a_submission=$submission a_smtp=$smtp a_imap=$imap a_conf=$conf
provider_up "$work/b" pec.example.net net
b_smtp=$smtp b_imap=$imap
postfix_route "$work/a/postfix" pec.example.net "127.0.0.1:$b_smtp"
postfix_route "$work/b/postfix" pec.example.it "127.0.0.1:$a_smtp"

e2e_log "an MTA that refuses every recipient at RCPT"
mapfile -t ports < <(e2e_free_ports 1)
/usr/bin/python3 - "${ports[0]}" > "$work/refuser.log" 2>&1 <<'EOF' &
import socket, sys, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(8)
def session(c):
    f = c.makefile("rb")
    c.sendall(b"220 mx.refuser.example ESMTP\r\n")
    for line in f:
        cmd = line[:4].upper()
        if cmd in (b"EHLO", b"HELO"):
            c.sendall(b"250 mx.refuser.example\r\n")
        elif cmd == b"RCPT":
            rcpt = line.split(b":", 1)[1].strip()
            if b"@lost.example.net" in rcpt.lower():
                c.sendall(b"550 5.1.2 " + rcpt + b": Recipient address rejected: Domain not found\r\n")
            else:
                c.sendall(b"550 5.1.1 " + rcpt + b": Recipient address rejected: User unknown in virtual mailbox table\r\n")
        elif cmd == b"QUIT":
            c.sendall(b"221 2.0.0 Bye\r\n")
            break
        else:
            c.sendall(b"250 2.0.0 Ok\r\n")
    c.close()
print("listening", flush=True)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=session, args=(conn,), daemon=True).start()
EOF
refuser_pid=$!
e2e_poll 10 grep -q listening "$work/refuser.log" || e2e_fail "the refusing MTA did not start"
# An address route beside its domain's (transport(5) looks up the full address first).
postfix_route "$work/a/postfix" ghost@pec.example.net "127.0.0.1:${ports[0]}"
postfix_route "$work/a/postfix" lost.example.net "127.0.0.1:${ports[0]}"

e2e_log "alice writes to bob, ghost and eve"
msg=$work/alice.eml
printf 'From: alice@pec.example.it\r\nTo: bob@pec.example.net, ghost@pec.example.net, eve@lost.example.net\r\nSubject: bounce-%s\r\nDate: %s\r\nMessage-ID: <bounce-%s@client.example.it>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nIl contratto.\r\n' \
  "$$" "$(date -R)" "$$" > "$msg"
e2e_send "$a_submission" alice@pec.example.it "$msg" \
  --to bob@pec.example.net --to ghost@pec.example.net --to eve@lost.example.net >/dev/null
e2e_fetch "$b_imap" bob@pec.example.net 1 "$work/bob" 90 >/dev/null
e2e_fetch "$a_imap" alice@pec.example.it 4 "$work/alice" 90 >/dev/null ||
  e2e_fail "alice does not hold 4 messages (acceptance, CONSEGNA, two notices)"
postfix_wait_queue_empty "$work/a/postfix" 60
postfix_wait_queue_empty "$work/b/postfix" 60

e2e_log "what alice holds"
notices=0 consegna=0 acceptance=0
for f in "$work"/alice/*.eml; do
  case "$(grep -m1 -i '^X-Ricevuta:' "$f" | tr -d '\r' | awk '{print $2}')" in
    accettazione) acceptance=$((acceptance + 1)) ;;
    avvenuta-consegna) consegna=$((consegna + 1)) ;;
    errore-consegna)
      notices=$((notices + 1))
      e2e_verify "$f" "receipt: errore-consegna" "$work/pki/it.pem"
      v=$("$pec" verify --trust "$work/pki/it.pem" "$f")
      grep -q "mittente: alice@pec.example.it" <<<"$v" || { echo "$v" >&2; e2e_fail "a notice not about alice's message"; }
      if grep -q "consegna: ghost@pec.example.net" <<<"$v"; then
        grep -q "errore: no-dest" <<<"$v" || { echo "$v" >&2; e2e_fail "ghost's notice is not no-dest"; }
        grep -q "errore-esteso: 5.1.1 - .*550 5.1.1" <<<"$v" || { echo "$v" >&2; e2e_fail "ghost's notice does not carry the remote reply"; }
      else
        grep -q "consegna: eve@lost.example.net" <<<"$v" || { echo "$v" >&2; e2e_fail "a notice about neither ghost nor eve"; }
        grep -q "errore: no-dominio" <<<"$v" || { echo "$v" >&2; e2e_fail "eve's notice is not no-dominio"; }
      fi
      ;;
    *) e2e_fail "alice received something else: $(grep -m1 -i '^Subject:' "$f")" ;;
  esac
done
[ "$acceptance/$consegna/$notices" = 1/1/2 ] ||
  e2e_fail "alice holds $acceptance acceptance, $consegna CONSEGNA, $notices notices; want 1/1/2"
! grep -l "ANOMALIA MESSAGGIO" "$work"/alice/*.eml >/dev/null 2>&1 || e2e_fail "a report reached alice as an anomaly"

"$pec" log search -c "$work/a/pec.toml" --kind MancataConsegna --format csv > "$work/nondelivery.txt" || true
for who in ghost@pec.example.net eve@lost.example.net; do
  grep "$who" "$work/nondelivery.txt" | grep -q "DSN" ||
    { cat "$work/nondelivery.txt" >&2; e2e_fail "A's legal log has no non-delivery for $who"; }
done

e2e_log "past 25 h: no timer notice, nobody waiting"
at=$(date -u -d "@$(( $(date +%s) + 25 * 3600 ))" +%Y-%m-%dT%H:%M:%SZ)
out=$(SOFTHSM2_CONF=$a_conf PEC_E2E_PIN=1234 "$pec" timers run -c "$work/a/pec.toml" --now "$at")
! grep -q '^sent ' <<<"$out" || { echo "$out" >&2; e2e_fail "A's timers sent notices after the bounces"; }
status=$(SOFTHSM2_CONF=$a_conf PEC_E2E_PIN=1234 "$pec" status -c "$work/a/pec.toml" 2>&1 || true)
grep -q " 0 certified recipients waiting" <<<"$status" ||
  { echo "$status" >&2; e2e_fail "pec status counts recipients waiting"; }
echo "bounce: PASS"

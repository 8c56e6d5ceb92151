#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End to end, open-relay attempts against one provider (real Postfix, Dovecot and pec):
#
#   * submission without authentication: every recipient refused, local or not, in clear
#     (where AUTH is not even offered: STARTTLS first) and over TLS;
#   * port 25 offers STARTTLS;
#   * port 25 from a client outside mynetworks (made with Postfix XCLIENT, which the test
#     instance allows from loopback only for this check): a recipient outside the provider's
#     domains is refused with "Relay access denied", a local one is accepted;
#   * pec's own listeners (milter, content filter, delivery point) listen on loopback only.
#
# Usage: tests/e2e/relay.sh   (as root; PEC_BIN names the pec binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$here/lib.sh"
# shellcheck source=tests/e2e/provider.sh
. "$here/provider.sh"

provider_script relay .

provider_up "$work"
postconf -c "$work/postfix/etc" -e "smtpd_authorized_xclient_hosts = 127.0.0.1"
postfix -c "$work/postfix/etc" reload >/dev/null 2>&1
# The reload is done when a new smtpd answers XCLIENT in its EHLO reply.
e2e_poll 30 /usr/bin/python3 -c "
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', $smtp, timeout=10); s.ehlo('x')
sys.exit(0 if s.has_extn('xclient') else 1)"

/usr/bin/python3 - "$submission" "$smtp" "$PECMAIL_CAFILE" <<'EOF'
import smtplib, ssl, sys
submission, smtp, cafile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
failures = []

def check(what, ok):
    print(("ok:   " if ok else "FAIL: ") + what)
    if not ok:
        failures.append(what)

# 1. Submission without AUTH: in clear, AUTH is not even offered and nothing is accepted
# before STARTTLS; after STARTTLS (verified against the test CA), still nothing without AUTH.
for tls in (False, True):
    s = smtplib.SMTP("127.0.0.1", submission, timeout=30)
    s.ehlo("spammer.example")
    how = "over TLS" if tls else "in clear"
    if tls:
        s.starttls(context=ssl.create_default_context(cafile=cafile))
        s.ehlo("spammer.example")
    else:
        check("submission offers STARTTLS", s.has_extn("starttls"))
    check(f"AUTH offered {how}: {s.has_extn('auth')}", s.has_extn("auth") == tls)
    code, _ = s.mail("alice@pec.example.it")
    for rcpt in ("victim@example.org", "bob@pec.example.it"):
        rc, resp = s.rcpt(rcpt)
        check(f"unauthenticated submission {how} to {rcpt} refused ({rc} {resp.decode()})", 500 <= rc < 600 or code >= 500)
    s.quit()

# 2. Port 25 from an outside client.
s = smtplib.SMTP("127.0.0.1", smtp, timeout=30)
s.ehlo("spammer.example")
check("port 25 offers STARTTLS", s.has_extn("starttls"))
rc, resp = s.docmd("XCLIENT", "ADDR=192.0.2.99 NAME=spammer.example")
check(f"XCLIENT accepted ({rc})", rc == 220)
s.ehlo("spammer.example")
rc, _ = s.mail("spammer@example.org")
check("MAIL FROM accepted", rc == 250)
rc, resp = s.rcpt("victim@example.org")
check(f"relay to victim@example.org refused ({rc} {resp.decode()})", rc == 554 and b"Relay access denied" in resp)
rc, resp = s.rcpt("bob@pec.example.it")
check(f"local recipient bob@pec.example.it accepted ({rc})", rc == 250)
s.rset()
s.quit()
if failures:
    sys.exit(f"{len(failures)} check(s) failed")
EOF

# 3. pec listens on loopback only.
listening=$(ss -ltnpH | grep "pid=$pec_pid," | awk '{print $4}')
[ -n "$listening" ] || e2e_fail "no listening socket found for pec serve (pid $pec_pid)"
while read -r addr; do
  case $addr in
    127.0.0.1:*) echo "ok:   pec listens on $addr" ;;
    *) e2e_fail "pec listens on $addr, not on loopback" ;;
  esac
done <<<"$listening"
e2e_log "relay: PASS"

# shellcheck shell=bash
# SPDX-License-Identifier: GPL-3.0-or-later
# End-to-end harness for REM (ETSI EN 319 532-4): a real DNS server for the test zones and an
# HTTPS file server for Trusted Lists and CSI files. Source it after tests/e2e/lib.sh:
#
#     . tests/e2e/lib.sh; . tests/e2e/lib_rem.sh
#
# Functions (arguments in order; [..] optional):
#   dns_start DIR PORT RECORD...        dnsmasq on DNS_ADDR:PORT (UDP and TCP; DNS_ADDR default
#                                       127.0.0.1, another loopback address such as 127.53.0.1
#                                       to listen on port 53 beside a system resolver), pid in DIR/pid,
#                                       queries logged in DIR/dnsmasq.log. RECORDs, one word
#                                       list each (quote them):
#                                         "DOMAIN MX PREF HOST"   an MX record (HOST "." is the
#                                                                 null MX of RFC 7505)
#                                         "NAME A IP"             an address record
#                                         "DOMAIN UNREACHABLE"    the domain is delegated to a
#                                                                 server that never answers:
#                                                                 lookups time out (tempfail)
#                                       The server is authoritative for the last label of every
#                                       name given (e.g. "rem"): any other name under it is
#                                       NXDOMAIN, a known name without the asked type NODATA;
#                                       names outside those labels are refused. Nothing is
#                                       forwarded to the Internet.
#   dns_stop DIR
#   https_files_start DIR ROOT CERT KEY serves ROOT over HTTPS on 127.0.0.1 (tests/e2e/
#                                       https_files.py; CERT/KEY PEM, e.g. tests/pki/make-pki.sh's
#                                       it-tls.pem, which names 127.0.0.1). Prints the port; pid
#                                       in DIR/pid; DIR/mode plays faults ("down", "garbage").
#   https_files_stop DIR
#   postfix_route_dns DIR DOMAIN DNS_ADDR PORT
#                                       mail for DOMAIN goes by SMTP, on PORT, to the MX hosts
#                                       that the DNS server on DNS_ADDR:53 gives (Postfix's own
#                                       MX and address lookups: a real REM route)
#   rem_tl_write OUT KEY CERT ENTRY...  a Trusted List (ETSI TS 119 612, territory IT, issued now,
#                                       next update in a year) in OUT, signed (enveloped
#                                       XML-DSig, exclusive c14n, RSA-SHA256, xmlsec1) with KEY
#                                       and CERT (PEM: the scheme operator's). One provider per
#                                       ENTRY, "NAME|CERT_PEM|SUPPLY_POINT..." (space-separated
#                                       points, e.g. smtp:mx.pec.example.net:25 and the https URL
#                                       of its CSI): one REM/Q service granted since 2020-01-01
#                                       whose digital identity is that certificate.
#   postfix_route_lmtp DIR DOMAIN PORT  mail for DOMAIN goes straight to LMTP on 127.0.0.1:PORT
#                                       (Dovecot's, past pec's delivery point)
#
# pec asks the DNS server itself (`--resolver`, its resolver address) for the REM routing
# check. Postfix's resolver (glibc) takes no port: for Postfix to route by MX on the test
# zones, start dnsmasq on port 53 of another loopback address (DNS_ADDR=127.53.x.y) and use
# postfix_route_dns; postfix_route (lib.sh) stays for routes without DNS.

# dns_start DIR PORT RECORD...
dns_start() {
  if [ $# -lt 2 ]; then e2e_fail "usage: dns_start DIR PORT RECORD..."; return 2; fi
  local dir=$1 port=$2 addr=${DNS_ADDR:-127.0.0.1} rec name type tld pid rc
  shift 2
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local conf=$dir/dnsmasq.conf
  local -A tlds=()
  {
    printf '# Private dnsmasq for the pec REM end-to-end tests (written by tests/e2e/lib_rem.sh).\n'
    printf 'port=%s\nlisten-address=%s\nbind-interfaces\n' "$port" "$addr"
    printf 'no-resolv\nno-hosts\nno-poll\nlog-queries\ncache-size=0\n'
  } > "$conf"
  for rec in "$@"; do
    read -r name type _ <<< "$rec"
    local -a w
    read -r -a w <<< "$rec"
    case $type in
      MX)
        [ ${#w[@]} -eq 4 ] || { e2e_fail "dns_start: bad record \"$rec\""; return 2; }
        printf 'mx-host=%s,%s,%s\n' "$name" "${w[3]}" "${w[2]}" >> "$conf" ;;
      A)
        [ ${#w[@]} -eq 3 ] || { e2e_fail "dns_start: bad record \"$rec\""; return 2; }
        printf 'host-record=%s,%s\n' "$name" "${w[2]}" >> "$conf" ;;
      UNREACHABLE)
        # Port 9 (discard) on loopback: nothing answers DNS there.
        printf 'server=/%s/127.0.0.1#9\n' "$name" >> "$conf" ;;
      *) e2e_fail "dns_start: unknown record type in \"$rec\""; return 2 ;;
    esac
    tld=${name##*.}
    tlds[$tld]=1
  done
  for tld in "${!tlds[@]}"; do printf 'local=/%s/\n' "$tld" >> "$conf"; done
  dnsmasq --conf-file="$conf" --keep-in-foreground --log-facility=- \
    --pid-file="$dir/dnsmasq.pid" --user="$(id -un)" < /dev/null > "$dir/dnsmasq.log" 2>&1 &
  pid=$!
  printf '%s\n' "$pid" > "$dir/pid"
  rc=0
  e2e_poll "$E2E_START_DEADLINE" _e2e_dns_ready "$pid" "$addr" "$port" || rc=$?
  if [ "$rc" -ne 0 ]; then
    e2e_show_log "$dir/dnsmasq.log"
    if _e2e_alive "$pid"; then _e2e_stop_pid dnsmasq "$pid"; fi
    wait "$pid" 2>/dev/null || true
    e2e_fail "dnsmasq did not answer on $addr:$port within $E2E_START_DEADLINE s"
    return 1
  fi
  e2e_log "dnsmasq up on $addr:$port (pid $pid, $dir)"
}

_e2e_dns_ready() {
  _e2e_alive "$1" || return 3
  _e2e_port_open "$2" "$3"
}

dns_stop() {
  local dir=$1
  [ -f "$dir/pid" ] || return 0
  _e2e_stop_pid dnsmasq "$(cat "$dir/pid")" "$dir/dnsmasq.log"
  rm -f "$dir/pid"
}

# https_files_start DIR ROOT CERT KEY: prints the port.
https_files_start() {
  if [ $# -ne 4 ]; then e2e_fail "usage: https_files_start DIR ROOT CERT KEY"; return 2; fi
  local dir=$1 root=$2 cert=$3 key=$4 pid
  mkdir -p "$dir"
  : > "$dir/port"
  "$E2E_PYTHON" "$E2E_REPO/tests/e2e/https_files.py" "$root" "$cert" "$key" \
    --mode-file "$dir/mode" < /dev/null > "$dir/port" 2> "$dir/https.log" &
  pid=$!
  printf '%s\n' "$pid" > "$dir/pid"
  if ! e2e_poll "$E2E_START_DEADLINE" _e2e_https_ready "$pid" "$dir/port"; then
    e2e_show_log "$dir/https.log"
    if _e2e_alive "$pid"; then _e2e_stop_pid https_files "$pid"; fi
    e2e_fail "the HTTPS file server did not start"
    return 1
  fi
  head -n 1 "$dir/port"
}

_e2e_https_ready() {
  _e2e_alive "$1" || return 3
  [ -s "$2" ] && _e2e_port_open 127.0.0.1 "$(head -n 1 "$2")"
}

https_files_stop() {
  local dir=$1
  [ -f "$dir/pid" ] || return 0
  _e2e_stop_pid https_files "$(cat "$dir/pid")" "$dir/https.log"
  rm -f "$dir/pid"
}

# postfix_route_dns DIR DOMAIN DNS_ADDR PORT: a transport "remdns-PORT" (an smtp client
# chrooted into the spool, as postfix_route's, with DNS lookups on and smtp_tcp_port PORT),
# DOMAIN routed to it with the recipient domain as next hop (MX lookup), and the spool's
# etc/resolv.conf naming DNS_ADDR (the chrooted client reads that one: one DNS server per
# instance). Reloads Postfix and waits for the reload.
postfix_route_dns() {
  if [ $# -ne 4 ]; then e2e_fail "usage: postfix_route_dns DIR DOMAIN DNS_ADDR PORT"; return 2; fi
  local dir=$1 domain=$2 addr=$3 port=$4 spool before
  spool=$(postconf -c "$dir/etc" -h queue_directory)
  mkdir -p "$spool/etc"
  printf 'nameserver %s\noptions attempts:1 timeout:2\n' "$addr" > "$spool/etc/resolv.conf"
  if ! grep -q "^remdns-$port " "$dir/etc/master.cf"; then
    printf 'remdns-%s unix - - y - - smtp\n  -o smtp_dns_support_level=enabled\n  -o smtp_host_lookup=dns\n  -o smtp_tcp_port=%s\n' \
      "$port" "$port" >> "$dir/etc/master.cf"
  fi
  printf '%s remdns-%s:\n' "$domain" "$port" >> "$dir/etc/transport"
  _e2e_age_file "$dir/etc/transport"
  before=$(_e2e_count_reloads "$dir")
  _e2e_postfix "$dir" reload || return 1
  if ! e2e_poll "$E2E_START_DEADLINE" _e2e_reloaded_since "$dir" "$before"; then
    e2e_show_log "$dir/maillog"
    e2e_fail "postfix in $dir did not log its reload"
    return 1
  fi
}

# rem_tl_write OUT KEY CERT ENTRY...
rem_tl_write() {
  if [ $# -lt 4 ]; then e2e_fail "usage: rem_tl_write OUT KEY CERT ENTRY..."; return 2; fi
  local out=$1 key=$2 cert=$3
  shift 3
  command -v xmlsec1 >/dev/null || { e2e_fail "rem_tl_write: xmlsec1 missing (scripts/install-deps.sh)"; return 2; }
  "$E2E_PYTHON" - "$out.unsigned" "$@" <<'PY' || { e2e_fail "rem_tl_write: cannot write the list"; return 1; }
import base64, datetime, ssl, sys
from xml.sax.saxutils import escape
out, entries = sys.argv[1], sys.argv[2:]
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
fmt = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")
tsps = []
for e in entries:
    name, cert, points = e.split("|", 2)
    der = ssl.PEM_cert_to_DER_cert(open(cert).read())
    sp = "".join("<ServiceSupplyPoint>%s</ServiceSupplyPoint>" % escape(p) for p in points.split())
    tsps.append(
        "<TrustServiceProvider><TSPInformation><TSPName><Name xml:lang=\"en\">%s</Name></TSPName>"
        "</TSPInformation><TSPServices><TSPService><ServiceInformation>"
        "<ServiceTypeIdentifier>http://uri.etsi.org/TrstSvc/Svctype/EDS/REM/Q</ServiceTypeIdentifier>"
        "<ServiceName><Name xml:lang=\"en\">%s REM</Name></ServiceName>"
        "<ServiceDigitalIdentity><DigitalId><X509Certificate>%s</X509Certificate></DigitalId></ServiceDigitalIdentity>"
        "<ServiceStatus>http://uri.etsi.org/TrstSvc/TrustedList/Svcstatus/granted</ServiceStatus>"
        "<StatusStartingTime>2020-01-01T00:00:00Z</StatusStartingTime>"
        "<ServiceSupplyPoints>%s</ServiceSupplyPoints>"
        "</ServiceInformation></TSPService></TSPServices></TrustServiceProvider>\n"
        % (escape(name), escape(name), base64.b64encode(der).decode(), sp))
doc = (
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<TrustServiceStatusList xmlns=\"http://uri.etsi.org/02231/v2#\" Id=\"tsl\" TSLTag=\"http://uri.etsi.org/19612/TSLTag\">\n"
    "<SchemeInformation><TSLVersionIdentifier>5</TSLVersionIdentifier><TSLSequenceNumber>1</TSLSequenceNumber>"
    "<TSLType>http://uri.etsi.org/TrstSvc/TrustedList/TSLType/EUgeneric</TSLType>"
    "<SchemeOperatorName><Name xml:lang=\"en\">pec e2e scheme operator</Name></SchemeOperatorName>"
    "<SchemeTerritory>IT</SchemeTerritory>"
    "<ListIssueDateTime>%s</ListIssueDateTime><NextUpdate><dateTime>%s</dateTime></NextUpdate>"
    "</SchemeInformation>\n<TrustServiceProviderList>\n%s</TrustServiceProviderList>\n"
    "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" Id=\"tl-signature\"><ds:SignedInfo>"
    "<ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>"
    "<ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/>"
    "<ds:Reference URI=\"\"><ds:Transforms>"
    "<ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>"
    "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/></ds:Transforms>"
    "<ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><ds:DigestValue/></ds:Reference>"
    "</ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo><ds:X509Data><ds:X509Certificate/></ds:X509Data></ds:KeyInfo>"
    "</ds:Signature></TrustServiceStatusList>\n"
) % (fmt(now - datetime.timedelta(hours=1)), fmt(now + datetime.timedelta(days=365)), "".join(tsps))
open(out, "w").write(doc)
PY
  xmlsec1 --sign --privkey-pem "$key,$cert" --output "$out" "$out.unsigned" 2> "$out.xmlsec.log" ||
    { e2e_show_log "$out.xmlsec.log"; e2e_fail "rem_tl_write: xmlsec1 could not sign"; return 1; }
  rm -f "$out.unsigned" "$out.xmlsec.log"
}

# postfix_route_lmtp DIR DOMAIN PORT: mail for DOMAIN goes straight to the LMTP server on
# 127.0.0.1:PORT (e.g. Dovecot's, past pec's delivery point: mailboxes that are not
# certified, such as the ordinary addresses standing for the Internet). Reloads Postfix and
# waits for the reload.
postfix_route_lmtp() {
  if [ $# -ne 3 ]; then e2e_fail "usage: postfix_route_lmtp DIR DOMAIN PORT"; return 2; fi
  local dir=$1 domain=$2 port=$3 before
  printf '%s lmtp:inet:127.0.0.1:%s\n' "$domain" "$port" >> "$dir/etc/transport"
  _e2e_age_file "$dir/etc/transport"
  before=$(_e2e_count_reloads "$dir")
  _e2e_postfix "$dir" reload || return 1
  if ! e2e_poll "$E2E_START_DEADLINE" _e2e_reloaded_since "$dir" "$before"; then
    e2e_show_log "$dir/maillog"
    e2e_fail "postfix in $dir did not log its reload"
    return 1
  fi
}

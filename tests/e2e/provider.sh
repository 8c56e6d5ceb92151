# shellcheck shell=bash
# SPDX-License-Identifier: GPL-3.0-or-later
# One PEC provider on this machine, for the end-to-end tests and the load benchmarks:
# a test PKI and SoftHSM2 token, a provider index (LDIF) with provider A (pec.example.it) and
# provider B (pec.example.net), clamd, Dovecot, a Postfix instance wired to pec (submission
# with SASL and the milter, the after-queue filter on port 25 and submission, the
# reinjection listener), and `pec serve`. Two calls with different WORK dirs, DOMAINs and
# KEYs give two providers that can exchange mail (route them with postfix_route).
# Source after lib.sh; call provider_up WORK, and provider_down WORK in an EXIT trap.
#
# provider_up WORK [DOMAIN KEY [EXTRA_DOMAIN...]]
#                        DOMAIN defaults to pec.example.it and KEY (it | net: the key
#                        KEY.key/KEY.pem of tests/pki/make-pki.sh) to it; EXTRA_DOMAINs are
#                        delivered locally but are not PEC domains (default: example.com,
#                        standing for the Internet, for pec.example.it only).
#                        Sets: submission smtp reinject filter milter lmtp imap clamd_port,
#                        conf (SOFTHSM2_CONF), pec_pid (also in WORK/pec.pid); WORK/pki (or
#                        PROVIDER_PKI, shared by both providers) holds the certificates,
#                        WORK/dovecot/mail/<domain>/<user> the mailboxes. PEC_BIN names the
#                        binary; PROVIDER_ACCESS_EXTRA adds lines to [access] of pec.toml;
#                        PROVIDER_CLAMD_NO_MARKER=1 leaves PEC-TEST-VIRUS-MARKER out of this
#                        provider's clamd database (EICAR only); PROVIDER_LDAP_URL makes the
#                        provider sync its index from that LDAP server (spec §7) before it
#                        starts, its local fallback file listing only itself. Also sets delivery: pec's
#                        delivery point (LMTP proxy) listens there and forwards to Dovecot's
#                        LMTP ($lmtp); Postfix delivers to Dovecot directly unless
#                        PROVIDER_LMTP_PROXY=1 points its virtual_transport at the proxy.
#                        PROVIDER_STORE=pg keeps the store in PostgreSQL: in the database
#                        PROVIDER_PG_URL when set (several nodes of one provider share it;
#                        PROVIDER_NODE gives each its node number; PROVIDER_PG_POOL its
#                        [store] pool_size, default 8), else in a private
#                        PostgreSQL 15 started in WORK/pg (or PROVIDER_PG_DIR;
#                        tests/e2e/lib_pg.sh) and stopped by provider_down. PROVIDER_STORE
#                        defaults to PEC_E2E_STORE (sqlite or pg: the switch of the whole
#                        suite). PROVIDER_STORE_PATH puts a SQLite store elsewhere than
#                        WORK/pec.sqlite.
#                        PROVIDER_INDEX_EXTRA adds lines to [index] (e.g. refresh = "1s");
#                        PROVIDER_LOG_EXTRA to [log] (e.g. purge_interval = "2s").
#                        PROVIDER_VERIFY_EXTRA is appended to pec.toml (a [verify] table).
#                        PROVIDER_NET_EXTRA_DOMAINS (space-separated) are listed in the
#                        index file as managed by provider B too, besides pec.example.net
#                        (certified domains that nobody serves: route them to a dead port).
#                        DOVECOT_UNKNOWN_USERS (lib.sh) names addresses this provider's
#                        Dovecot does not know (LMTP 550 5.1.1).
#                        Also sets metrics_port: pec's Prometheus endpoint ([metrics]).
#                        TLS as the shipped snippets say: the provider's Postfix presents
#                        KEY-tls.pem (make-pki.sh, from the test CA) on port 25 (STARTTLS
#                        offered) and on submission (STARTTLS required before AUTH), trusts
#                        the test CA as a client, and sends to the certified domains with
#                        verified TLS only, through WORK/tls_policy ([index]
#                        tls_policy_map, written by `pec index tls-policy` / `sync`).
#                        Dovecot's IMAP offers STARTTLS (ssl = required), same certificate.
#                        PROVIDER_TLS_NAME names another pair of WORK/pki (NAME.pem, NAME.key)
#                        for both, e.g. one issued for a third provider's domain.
#                        Exports PECMAIL_CAFILE (the test CA) for pecmail.py's STARTTLS.
#                        Also starts a test TSA (tests/tsa/, HTTPS with basic
#                        authentication) in WORK/tsa, the [log] tsa_* of pec.toml; writing
#                        "down" to WORK/tsa/mode makes it answer 503 (tsa.py); its port is
#                        tsa_port. The token holds the PEC key ("signer") and the seal key
#                        ("seal", KEY-seal.key/pem of make-pki.sh).
#                        REM (ETSI EN 319 532-4) beside PEC, off unless PROVIDER_REM=1:
#                        [rem] enabled, mode PROVIDER_REM_MODE (default auto), the REM PKI
#                        anchor and the evidence time stamps' anchor (both the test CA, which
#                        issues the PEC keys and the test TSA), relay_wait/consignment_wait
#                        default; PROVIDER_REM_DOMAINS ("domain=rem other=pec", space-separated)
#                        fills [rem.domains]; PROVIDER_REM_TL_URL and PROVIDER_REM_TL_SIGNER
#                        (PEM) fill [rem.trust] (fetched by pec serve at start and every
#                        PROVIDER_REM_TL_REFRESH, default 1d, with the peers' CSI; HTTPS trusted
#                        through the test CA; lib_rem.sh rem_tl_write makes a signed list);
#                        [rem.csi] is filled so that `pec rem csi publish` works
#                        (distribution point PROVIDER_REM_CSI_URL, default
#                        https://mx.DOMAIN/CapabilityAndSecurityMetadata.xml);
#                        PROVIDER_REM_IDENTITIES (space-separated mailboxes) get a sender
#                        identity record (`pec mailbox identity set`) before pec serve starts;
#                        PROVIDER_REM_EXTRA adds lines to [rem]. PROVIDER_RESOLV_CONF (any
#                        provider) runs pec serve in a mount namespace of its own where that
#                        file is /etc/resolv.conf (the REM MX check uses the system resolver:
#                        point it at a dnsmasq of lib_rem.sh; needs `unshare -m`, see
#                        provider_resolv_ok). Without PROVIDER_REM nothing of this is written.
# provider_down WORK     stops pec, Postfix, Dovecot and clamd (by pid).
# provider_metric WORK SAMPLE
#                        prints the value of SAMPLE (name and labels, as on the endpoint,
#                        e.g. 'pec_up') from WORK's metrics endpoint; 0 when absent.

_provider_cert_b64() { openssl x509 -in "$1" -outform DER | base64 -w0; }
_provider_cert_sha1() { openssl x509 -in "$1" -outform DER | sha1sum | cut -d' ' -f1 | tr a-f A-F; }

# provider_index_entry NAME CERT_PEM MAIL_RECEIPT DOMAIN...: one provider in LDIF (spec
# §7.1), managing every DOMAIN.
provider_index_entry() {
  local d
  cat <<EOF
dn: providerName=$1,o=postacert
objectclass: top
objectclass: provider
providerName: $1
providerCertificateHash: $(_provider_cert_sha1 "$2")
providerCertificate;binary:: $(_provider_cert_b64 "$2")
mailReceipt: $3
EOF
  for d in "${@:4}"; do printf 'managedDomains: %s\n' "$d"; done
  printf '\n'
}

# The provider name of a test domain, as in the index.
provider_name_of() {
  case $1 in
    pec.example.it) echo "PEC Example IT S.p.A." ;;
    pec.example.net) echo "PEC Example NET S.p.A." ;;
    *) echo "PEC $1" ;;
  esac
}

# provider_resolv_ok: whether pec serve can get a resolv.conf of its own (PROVIDER_RESOLV_CONF:
# a private mount namespace, root with CAP_SYS_ADMIN).
provider_resolv_ok() {
  unshare -m sh -c 'mount --bind /etc/hostname /etc/resolv.conf' 2>/dev/null
}

# The [rem] tables of pec.toml for PROVIDER_REM=1 (see provider_up); nothing otherwise.
_provider_rem_conf() {
  local domain=$1 key=$2 pki=$3 d
  [ "${PROVIDER_REM:-0}" = 1 ] || return 0
  cat <<EOF
[rem]
enabled = true
mode = "${PROVIDER_REM_MODE:-auto}"
anchors = ["$pki/ca.pem"]
tsa_anchors = ["$pki/ca.pem"]
${PROVIDER_REM_EXTRA:-}

[rem.domains]
EOF
  for d in ${PROVIDER_REM_DOMAINS:-}; do printf '"%s" = "%s"\n' "${d%%=*}" "${d#*=}"; done
  if [ -n "${PROVIDER_REM_TL_URL:-}" ]; then
    cat <<EOF

[rem.trust]
tl_urls = ["$PROVIDER_REM_TL_URL"]
tl_signer_files = ["$PROVIDER_REM_TL_SIGNER"]
tls_ca_file = "$pki/ca.pem"
timeout = "10s"
refresh = "${PROVIDER_REM_TL_REFRESH:-1d}"
EOF
  fi
  cat <<EOF

[rem.csi]
street = "Via di prova 1"
locality = "Roma"
information_uri = "https://mx.$domain/rem/"
policy_uri = "https://mx.$domain/rem/policy.html"
pointer_to_tl = "${PROVIDER_REM_TL_URL:-https://tl.example.it/TL.xml}"
distribution_point = "${PROVIDER_REM_CSI_URL:-https://mx.$domain/CapabilityAndSecurityMetadata.xml}"
erds_id = "https://mx.$domain/"
erds_domain = "mx.$domain"
tls_certificate = "$pki/${PROVIDER_TLS_NAME:-$key-tls}.pem"
EOF
}

provider_up() {
  local work=$1 domain=${2:-pec.example.it} key=${3:-it} root pec ports pki name
  local extra=("${@:4}")
  if [ $# -lt 4 ] && [ "$domain" = pec.example.it ]; then extra=(example.com); fi
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  pec=${PEC_BIN:-$root/target/debug/pec}
  pki=${PROVIDER_PKI:-$work/pki}
  name=$(provider_name_of "$domain")
  mapfile -t ports < <(e2e_free_ports 10)
  submission=${ports[0]} smtp=${ports[1]} reinject=${ports[2]} filter=${ports[3]}
  milter=${ports[4]} lmtp=${ports[5]} imap=${ports[6]} clamd_port=${ports[7]}
  delivery=${ports[8]} metrics_port=${ports[9]}
  local postfix_lmtp=$lmtp
  if [ "${PROVIDER_LMTP_PROXY:-0}" = 1 ]; then postfix_lmtp=$delivery; fi

  e2e_log "$domain: test PKI and SoftHSM2 token"
  mkdir -p "$work"
  local tls=${PROVIDER_TLS_NAME:-$key-tls}
  { [ -f "$pki/$key-tls.pem" ] && [ -f "$pki/$key-seal.pem" ]; } ||
    sh "$root/tests/pki/make-pki.sh" "$pki" >/dev/null 2>&1
  pki=$(cd "$pki" && pwd)
  export PECMAIL_CAFILE=$pki/ca.pem
  local tls_policy
  tls_policy=$(cd "$work" && pwd)/tls_policy
  conf=$(softhsm_token "$work/hsm" pec-e2e 1234 "$pki/$key.key" "$pki/$key.pem" signer \
    "$pki/$key-seal.key" "$pki/$key-seal.pem" seal)
  e2e_log "$domain: test TSA (HTTPS, basic authentication)"
  tsa_port=$(tsa_start "$work/tsa" "$pki")
  local index_ldap=""
  if [ -n "${PROVIDER_LDAP_URL:-}" ]; then
    index_ldap="ldap_url = \"$PROVIDER_LDAP_URL\""
    # The provider learns the others from the LDAP index; its fallback file knows only itself.
    { printf 'version: 1\n\n'; provider_index_entry "$name" "$pki/$key.pem" "ricevute@$domain" "$domain"; } \
      > "$work/index.ldif"
  else
    {
      printf 'version: 1\n\n'
      provider_index_entry "PEC Example IT S.p.A." "$pki/it.pem" ricevute@pec.example.it pec.example.it
      # shellcheck disable=SC2086 # a list of domains
      provider_index_entry "PEC Example NET S.p.A." "$pki/net.pem" ricevute@pec.example.net pec.example.net \
        ${PROVIDER_NET_EXTRA_DOMAINS:-}
    } > "$work/index.ldif"
  fi

  e2e_log "$domain: clamd, Dovecot, Postfix"
  # PROVIDER_CLAMD_NO_MARKER=1: this provider's antivirus misses the marker (a virus its
  # database does not know yet).
  CLAMD_NO_MARKER=${PROVIDER_CLAMD_NO_MARKER:-0} clamd_start "$work/clamd" "$clamd_port"
  DOVECOT_TLS_CERT=$pki/$tls.pem DOVECOT_TLS_KEY=$pki/$tls.key \
    dovecot_start "$work/dovecot" "$lmtp" "$imap"
  # Empty until pec writes it from the index below (Postfix needs the file to exist).
  : > "$tls_policy"
  POSTFIX_TLS_CERT=$pki/$tls.pem POSTFIX_TLS_KEY=$pki/$tls.key POSTFIX_TLS_CA=$pki/ca.pem \
    POSTFIX_TLS_POLICY=$tls_policy \
    postfix_start --sasl-path "$work/dovecot/run/auth-postfix" "$work/postfix" "pec-${domain%%.*}-${key}" \
    "$submission" "$smtp" "$reinject" "$filter" "$milter" "$postfix_lmtp" "$domain" "${extra[@]}"

  local store_conf="path = \"${PROVIDER_STORE_PATH:-$work/pec.sqlite}\""
  if [ "${PROVIDER_STORE:-${PEC_E2E_STORE:-sqlite}}" = pg ]; then
    local pg_url=${PROVIDER_PG_URL:-}
    if [ -z "$pg_url" ]; then
      # shellcheck source=tests/e2e/lib_pg.sh
      . "$root/tests/e2e/lib_pg.sh"
      e2e_log "$domain: private PostgreSQL"
      pg_url=$(pg_start "${PROVIDER_PG_DIR:-$work/pg}" "$(e2e_free_ports 1)")
    fi
    store_conf="backend = \"postgres\"
url = \"$pg_url\"
pool_size = ${PROVIDER_PG_POOL:-8}"
  fi

  cat > "$work/pec.toml" <<EOF
[provider]
node = ${PROVIDER_NODE:-1}
name = "$name"
service_address = "posta-certificata@$domain"
mail_receipt = "ricevute@$domain"
domains = ["$domain"]

[signing]
backend = "pkcs11"
module = "$(ls /usr/lib/softhsm/libsofthsm2.so)"
token_label = "pec-e2e"
key_label = "signer"
seal_key_label = "seal"
pin_env = "PEC_E2E_PIN"

[store]
$store_conf

[index]
ldif = "$work/index.ldif"
tls_policy_map = "$tls_policy"
$index_ldap
${PROVIDER_INDEX_EXTRA:-}

[antivirus]
clamd = "tcp:127.0.0.1:$clamd_port"
timeout = "30s"

[access]
listen = "inet:127.0.0.1:$milter"
reinject = "127.0.0.1:$reinject"
${PROVIDER_ACCESS_EXTRA:-}

[filter]
listen = "127.0.0.1:$filter"
reinject = "127.0.0.1:$reinject"

[delivery]
listen = "127.0.0.1:$delivery"
dovecot = "127.0.0.1:$lmtp"
reinject = "127.0.0.1:$reinject"
duplicate_check = ["doveadm", "-c", "$(cd "$work/dovecot" && pwd)/dovecot.conf", "search", "-u", "%u", "header", "Message-ID", "%m", "%c"]

[metrics]
listen = "127.0.0.1:$metrics_port"

[log]
tsa_url = "https://127.0.0.1:$tsa_port/tsa"
tsa_ca_file = "$pki/ca.pem"
tsa_tls_ca_file = "$pki/ca.pem"
tsa_policy = "1.3.6.1.4.1.99999.1.1"
tsa_username = "pec"
tsa_password_file = "$(cd "$work/tsa" && pwd)/password"
tsa_retry = "${PROVIDER_TSA_RETRY:-1s}"
${PROVIDER_LOG_EXTRA:-}
${PROVIDER_VERIFY_EXTRA:-}
$(_provider_rem_conf "$domain" "$key" "$pki")

# The e2e hosts are containers whose (host) kernel clock no daemon of theirs disciplines:
# pec status reports it as a warning here instead of failing every run.
[clock]
unsynchronised = "warn"
EOF
  echo "$metrics_port" > "$work/metrics.port"
  "$pec" check-config -c "$work/pec.toml" >/dev/null
  if [ -n "${PROVIDER_LDAP_URL:-}" ]; then
    "$pec" index sync -c "$work/pec.toml" >/dev/null
  else
    "$pec" index tls-policy -c "$work/pec.toml" >/dev/null
  fi
  _e2e_age_file "$tls_policy"

  if [ "${PROVIDER_REM:-0}" = 1 ]; then
    local who
    for who in ${PROVIDER_REM_IDENTITIES:-}; do
      "$pec" mailbox identity set -c "$work/pec.toml" "$who" \
        --attr "http://eidas.europa.eu/attributes/naturalperson/PersonIdentifier=IT/IT/TEST-${who%%@*}" \
        --attr "http://eidas.europa.eu/attributes/naturalperson/CurrentFamilyName=${who%%@*}" \
        --level http://eidas.europa.eu/LoA/substantial --proofing in-person --by provider.sh >/dev/null
    done
  fi

  e2e_log "$domain: pec serve"
  local ns=()
  if [ -n "${PROVIDER_RESOLV_CONF:-}" ]; then
    # pec's own /etc/resolv.conf (its REM MX check asks the system resolver): a private
    # mount namespace where the file is bound over it; `exec` keeps pec's pid.
    # shellcheck disable=SC2016 # expanded by that sh
    ns=(unshare -m sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$PROVIDER_RESOLV_CONF")
  fi
  SOFTHSM2_CONF=$conf PEC_E2E_PIN=1234 PEC_LOG=${PEC_LOG:-info} "${ns[@]}" "$pec" serve -c "$work/pec.toml" 2> "$work/pec.log" &
  pec_pid=$!
  echo "$pec_pid" > "$work/pec.pid"
  wait_for_port 127.0.0.1 "$milter" 30
  wait_for_port 127.0.0.1 "$filter" 30
  wait_for_port 127.0.0.1 "$delivery" 30
}

provider_down() {
  local work=$1 pid
  pid=$(cat "$work/pec.pid" 2>/dev/null || echo "${pec_pid:-}")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  postfix_stop "$work/postfix" >/dev/null 2>&1 || true
  dovecot_stop "$work/dovecot" >/dev/null 2>&1 || true
  clamd_stop "$work/clamd" >/dev/null 2>&1 || true
  tsa_stop "$work/tsa"
  local pg_dir=${PROVIDER_PG_DIR:-$work/pg}
  if [ -f "$pg_dir/data/postmaster.pid" ]; then
    # shellcheck source=tests/e2e/lib_pg.sh
    . "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib_pg.sh"
    pg_stop "$pg_dir" >/dev/null 2>&1 || true
  fi
}

provider_metric() {
  local work=$1 sample=$2
  /usr/bin/python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
    "http://127.0.0.1:$(cat "$work/metrics.port")/metrics" |
    awk -v s="$sample" 'index($0, s " ") == 1 { v = $2 } END { print (v == "" ? 0 : v) }'
}

# provider_script NAME DIR... : the start of a test script run on providers in $work/DIR
# (`.` for $work itself). Sets `pec` (the binary, checked built), `mail` (pecmail.py) and
# `work` (a fresh directory), and traps EXIT: stops those providers, then calls `on_exit`
# when the script defines it (for what it started besides them: slapd, PostgreSQL, …); on
# failure prints the tail of each provider's pec and Postfix logs and keeps $work, on
# success removes it. The script's `here` is where pecmail.py lives.
provider_script() {
  e2e_script=$1
  shift
  e2e_providers=("$@")
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  pec=${PEC_BIN:-$root/target/debug/pec}
  [ -x "$pec" ] || { echo "$e2e_script: $pec not built (cargo build)" >&2; exit 2; }
  # shellcheck disable=SC2034 # used by the scripts
  mail=(/usr/bin/python3 "$(dirname "${BASH_SOURCE[0]}")/pecmail.py")
  work=$(e2e_tmpdir)
  trap provider_script_exit EXIT
}

# ---- helpers the scripts share -------------------------------------------------------------
# e2e_fetch PORT USER COUNT DIR [DEADLINE]: waits (DEADLINE seconds, 60 by default) until
# USER's mailbox (IMAP on PORT, password "test") holds COUNT messages and writes them to DIR,
# each named by its IMAP uid (pecmail.py).
e2e_fetch() {
  "${mail[@]}" fetch --port "$1" --user "$2" --password test --count "$3" --dir "$4" \
    --deadline "${5:-60}"
}
# e2e_count PORT USER: how many messages USER holds now.
e2e_count() {
  local d
  d=$(mktemp -d "$work/count.XXXX")
  # fetch writes every message, then complains that there are more than 0: expected here.
  "${mail[@]}" fetch --port "$1" --user "$2" --password test --count 0 --dir "$d" --deadline 1 \
    >/dev/null 2>&1 || true
  find "$d" -name '*.eml' | wc -l
  rm -rf "$d"
}
# e2e_newest DIR: the message of DIR with the highest IMAP uid.
e2e_newest() {
  find "$1" -maxdepth 1 -name '*.eml' -printf '%f\n' | sort -n | tail -n 1 | sed "s|^|$1/|"
}
# e2e_verify FILE KIND TRUST_PEM...: `pec verify`, trusting the TRUST_PEMs, says FILE is KIND
# (a substring of its "kind:" line), and openssl's S/MIME verifies it against the test CA.
e2e_verify() {
  local f=$1 kind=$2 out t trust=()
  shift 2
  for t in "$@"; do trust+=(--trust "$t"); done
  out=$("$pec" verify "${trust[@]}" "$f") || { echo "$out" >&2; e2e_fail "pec verify refused $f"; return 1; }
  grep -q "kind: $kind" <<<"$out" || { echo "$out" >&2; e2e_fail "$f is not \"$kind\""; return 1; }
  openssl smime -verify -in "$f" -CAfile "$work/pki/ca.pem" -purpose any -out /dev/null 2>/dev/null \
    || e2e_fail "openssl smime -verify refused $f"
}
# e2e_plain FILE: FILE (pec's log) without colour escapes.
e2e_plain() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }
# e2e_send PORT USER FILE [pecmail send options]: USER (password "test") submits FILE, sending
# as themselves.
e2e_send() {
  local port=$1 user=$2 f=$3
  shift 3
  "${mail[@]}" send --port "$port" --user "$user" --password test --from "$user" "$@" "$f"
}

provider_script_exit() {
  local status=$? p d
  for p in "${e2e_providers[@]}"; do
    d=$work/$p
    [ "$p" = . ] && d=$work
    provider_down "$d"
  done
  if declare -F on_exit >/dev/null; then on_exit >/dev/null 2>&1 || true; fi
  if [ "$status" -ne 0 ]; then
    for p in "${e2e_providers[@]}"; do
      d=$work/$p
      [ "$p" = . ] && d=$work
      echo "---- $p: pec log" >&2; tail -n 30 "$d/pec.log" >&2 2>/dev/null || true
      echo "---- $p: postfix log" >&2; tail -n 30 "$d/postfix/maillog" >&2 2>/dev/null || true
    done
    echo "$e2e_script: FAIL (work dir kept: $work)" >&2
  else
    rm -rf "$work"
  fi
  exit "$status"
}

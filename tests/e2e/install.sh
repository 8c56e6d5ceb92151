#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Installs the Debian packages that the end-to-end suite (tests/e2e) needs: a private Postfix,
# a private Dovecot 2.3 (LMTP + IMAP), clamd (offline, with the suite's own signature DB),
# SoftHSM2 with the PKCS#11 tools, and swaks. Idempotent: packages already present are not
# reinstalled, and apt-get update runs only when something is missing.
#
# No daemon may start during installation: the suite starts private instances itself on
# loopback ports, so a policy-rc.d that denies every start is put in place while apt-get
# runs, and whatever was there before (another policy, or none) is put back at the end.
# Postfix is preseeded to "No configuration": the system instance stays unconfigured and
# every test writes its own main.cf/master.cf.
set -euo pipefail

packages=(
  postfix
  dovecot-core dovecot-lmtpd dovecot-imapd
  # Pigeonhole Sieve: the shipped receipts filter (dovecot/pec-receipts.sieve, tests/e2e/sieve.sh)
  dovecot-sieve
  clamav-daemon
  softhsm2 opensc
  swaks
  # the provider index tests: a private slapd, ldapadd/ldapmodify
  slapd ldap-utils
  # the free-port helper and pecmail.py use the Debian interpreter (/usr/bin/python3)
  python3
  # the installation guide's test (install_guide.sh): the package depends on sqlite3, and
  # the guide's first message goes out with swaks over STARTTLS (Net::SSLeay)
  sqlite3 libnet-ssleay-perl
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "e2e install: all ${#packages[@]} packages present"
  exit 0
fi

echo "e2e install: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# No daemon may start during installation; the policy in place before comes back at the end.
# shellcheck source=scripts/no-service-starts.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/no-service-starts.sh"

printf '%s\n' \
  'postfix postfix/main_mailer_type select No configuration' \
  'postfix postfix/mailname string localhost' \
  | $SUDO debconf-set-selections

$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Installs the Debian packages that the end-to-end suite (tests/e2e) needs: a private Postfix,
# a private Dovecot 2.3 (LMTP + IMAP), clamd (offline, with the suite's own signature DB),
# SoftHSM2 with the PKCS#11 tools, and swaks. Idempotent: packages already present are not
# reinstalled, and apt-get update runs only when something is missing.
#
# No daemon may start during installation: the suite starts private instances itself on
# loopback ports, so a policy-rc.d that denies every start is put in place when absent.
# Postfix is preseeded to "No configuration": the system instance stays unconfigured and
# every test writes its own main.cf/master.cf.
set -euo pipefail

packages=(
  postfix
  dovecot-core dovecot-lmtpd dovecot-imapd
  clamav-daemon
  softhsm2 opensc
  swaks
  # the provider index tests: a private slapd, ldapadd/ldapmodify
  slapd ldap-utils
  # the free-port helper and pecmail.py use the Debian interpreter (/usr/bin/python3)
  python3
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

if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
fi

printf '%s\n' \
  'postfix postfix/main_mailer_type select No configuration' \
  'postfix postfix/mailname string localhost' \
  | $SUDO debconf-set-selections

$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"

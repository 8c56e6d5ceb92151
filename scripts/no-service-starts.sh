# shellcheck shell=bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Sourced by scripts/install-deps.sh and tests/e2e/install.sh before they run apt-get: no
# daemon may start during installation (the test suite starts private instances itself), so
# a policy-rc.d that denies every start is put in place for the rest of the sourcing script;
# whatever was there before (another policy, or none) is put back when it ends, even on
# failure (an EXIT trap). Uses $SUDO ("" or "sudo").
policy=/usr/sbin/policy-rc.d
policy_saved=$(mktemp /tmp/policy-rc.d.XXXXXX)
if [ -e "$policy" ]; then $SUDO cp -p "$policy" "$policy_saved"; had_policy=1; else had_policy=0; fi
restore_policy() {
  if [ "$had_policy" = 1 ]; then $SUDO cp -p "$policy_saved" "$policy"; else $SUDO rm -f "$policy"; fi
  rm -f "$policy_saved"
}
trap restore_policy EXIT
printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
$SUDO chmod +x "$policy"

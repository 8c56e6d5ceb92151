#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Builds the Debian package (target/debian/pec_*.deb) with cargo-deb: the release binary,
# the systemd unit, the sample configuration, the Postfix and Dovecot snippets and the man
# pages generated from the CLI. The binary is stripped, as Debian ships binaries; its debug
# symbols (the release profile keeps line tables) go into pec-dbgsym_*.ddeb beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
cargo build --release --locked --bin pec
target=${CARGO_TARGET_DIR:-target}
mkdir -p target/man
"$target/release/pec" generate-man target/man
if [ "$target" != target ]; then
  mkdir -p target/release && cp "$target/release/pec" target/release/pec
fi
rm -f target/debian/pec_*.deb target/debian/pec-dbgsym_*.ddeb
cargo deb --no-build --locked --dbgsym --output target/debian/
ls -1 target/debian/*.deb target/debian/*.ddeb

// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec rem`: the REM side (ETSI EN 319 532-4). Each command's code is in a file of its own
//! (`rem_trust.rs`: trust, csi; `rem_routing.rs`: check-domain).

use clap::Subcommand;

use super::rem_routing::{self, CheckDomainArgs};
use super::rem_trust::{self, CsiCommand, TrustCommand};

#[derive(Debug, Subcommand)]
pub enum RemCommand {
    /// The Trusted Lists of the REM peers (`[rem.trust]`; `pec serve` refreshes them every
    /// `rem.trust.refresh`).
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Our Capability and Security Information document (`[rem.csi]`).
    #[command(subcommand)]
    Csi(CsiCommand),
    /// Whether DOMAIN is served by the REM service of the given supply points: every MX host
    /// of the domain must be the host of an `smtp://` (or `smtp:`) supply point (EN 319
    /// 532-4 C.2.3.2 and C.2.3.3.3, pre-relay steps 1 and 2). Prints one line.
    ///
    /// Exit status: 0 served, 1 not served (no MX, null MX, an MX host that is no supply
    /// point, or the domain does not exist), 2 usage error, 75 DNS temporary failure (try
    /// again later).
    CheckDomain(CheckDomainArgs),
}

/// Runs one `pec rem` command; returns the exit status.
pub fn run(command: &RemCommand) -> i32 {
    match command {
        RemCommand::Trust(command) => rem_trust::trust(command),
        RemCommand::Csi(command) => rem_trust::csi(command),
        RemCommand::CheckDomain(args) => rem_routing::run(args),
    }
}

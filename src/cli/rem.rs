// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec rem`: the REM side (ETSI EN 319 532-4). Each command's code is in a file of its own
//! (`rem_routing.rs`: check-domain).

use clap::Subcommand;

use super::rem_routing::{self, CheckDomainArgs};

#[derive(Debug, Subcommand)]
pub enum RemCommand {
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
        RemCommand::CheckDomain(args) => rem_routing::run(args),
    }
}

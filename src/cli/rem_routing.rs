// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec rem check-domain`: the REM routing check of a recipient domain (ETSI EN 319 532-4
//! C.2.3.2) against a REM service's supply points, on the real DNS.

use std::net::SocketAddr;
use std::time::Duration;

use super::error::{exit, CliError};
use crate::dns::{DnsResolver, DEFAULT_ATTEMPTS};
use crate::rem::dns::{self, DnsError, Routing};

/// Exit status of a DNS temporary failure (EX_TEMPFAIL of sysexits.h, as Postfix reads it).
pub const EXIT_TEMPFAIL: i32 = 75;

#[derive(Debug, clap::Args)]
pub struct CheckDomainArgs {
    /// The recipient domain.
    pub domain: String,
    /// A service supply point of the Trusted List entry (repeat it for several; `https://`
    /// ones are ignored).
    #[arg(long = "supply-point", value_name = "URI", required = true)]
    pub supply_points: Vec<String>,
    /// Ask this DNS server (IP:PORT, e.g. 127.0.0.1:53) instead of those of
    /// /etc/resolv.conf.
    #[arg(long, value_name = "IP:PORT")]
    pub resolver: Option<String>,
    /// Seconds one DNS query may take (with --resolver).
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub timeout: u64,
}

/// Runs `pec rem check-domain`; returns the exit status.
pub fn run(args: &CheckDomainArgs) -> i32 {
    exit("pec rem check-domain", check_domain(args))
}

fn check_domain(args: &CheckDomainArgs) -> Result<i32, CliError> {
    for p in &args.supply_points {
        match dns::parse_smtp_supply_point(p) {
            Ok(_) | Err(dns::SupplyPointError::NotSmtp(_)) => {}
            Err(e) => return Err(CliError::usage(e)),
        }
    }
    if args.timeout == 0 {
        return Err(CliError::usage("--timeout must be at least 1 second"));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::usage(format!("cannot start the runtime: {e}")))?;
    let outcome = runtime.block_on(async {
        let resolver = match &args.resolver {
            Some(addr) => {
                let addr: SocketAddr = addr.parse().map_err(|_| {
                    CliError::usage(format!("--resolver \"{addr}\": expected IP:PORT"))
                })?;
                DnsResolver::at(addr, Duration::from_secs(args.timeout), DEFAULT_ATTEMPTS)
            }
            None => DnsResolver::system(),
        }
        .map_err(CliError::usage)?;
        Ok::<_, CliError>(dns::check_domain(&resolver, &args.domain, &args.supply_points).await)
    })?;
    match outcome {
        Ok(routing) => {
            println!("{}: {routing}", args.domain);
            Ok(i32::from(!matches!(routing, Routing::Served { .. })))
        }
        Err(e @ (DnsError::InvalidDomain { .. } | DnsError::Setup(_))) => Err(CliError::usage(e)),
        Err(e @ DnsError::Temporary { .. }) => {
            println!("{}: tempfail: {e}", args.domain);
            Ok(EXIT_TEMPFAIL)
        }
    }
}

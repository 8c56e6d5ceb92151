// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec rem trust sync|show` and `pec rem csi publish`: the REM trust data (Trusted Lists
//! of the peers) and our Capability and Security Information document.

use std::sync::Arc;

use clap::Subcommand;

use super::args::ConfigArgs;
use super::error::{exit, CliError};
use super::index::with_store;
use crate::config::Config;
use crate::message::time::{Clock, Instant, SystemClock};
use crate::rem::trust::XmlDsig;
use crate::rem_sync::{self, HttpFetch};
use crate::store::LogStore;

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Fetch every list of `rem.trust.tl_urls`, check it (signed by a certificate of
    /// `rem.trust.tl_signer_files`, NextUpdate not past, sequence not older than the
    /// stored copy) and store it with its history; then fetch the Capability and Security
    /// Information (CSI) of every REM service granted now from the https:// supply point
    /// of its entry, check it (signed with the service's identity in the list,
    /// CSINextUpdate not past, sequence not older than the stored copy) and store it with
    /// its history.
    ///
    /// Exit status: 0 every list and CSI stored or unchanged, 1 some list or CSI could not
    /// be fetched or was refused (its stored copy stays), 2 configuration or store error.
    Sync(ConfigArgs),
    /// Print the stored lists in use, the REM services they grant now, what each one's
    /// stored CSI says, and whether `rem.mode = "auto"` sends it REM.
    Show(TrustShowArgs),
}

#[derive(Debug, clap::Args)]
pub struct TrustShowArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print every stored version (lists, then CSI documents), not only the current ones.
    #[arg(long)]
    pub history: bool,
    /// The instant of the trust decisions (RFC 3339 or YYYY-MM-DD; default now).
    #[arg(long, value_name = "WHEN")]
    pub at: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CsiCommand {
    /// Write our CSI document from `[rem.csi]`, with our signing certificate as its
    /// domain signature certificate, signed with our key (enveloped XML-DSig), for
    /// publication at `rem.csi.distribution_point`.
    Publish(CsiPublishArgs),
}

#[derive(Debug, clap::Args)]
pub struct CsiPublishArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Output file.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: std::path::PathBuf,
}

/// Runs one `pec rem trust` command; returns the exit status.
pub fn trust(command: &TrustCommand) -> i32 {
    match command {
        TrustCommand::Sync(args) => with_store(args, "pec rem trust sync", sync),
        TrustCommand::Show(args) => {
            with_store(&args.config, "pec rem trust show", |c, s| show(args, c, s))
        }
    }
}

/// Runs one `pec rem csi` command; returns the exit status.
pub fn csi(command: &CsiCommand) -> i32 {
    match command {
        CsiCommand::Publish(args) => exit("pec rem csi publish", publish(args)),
    }
}

fn trust_settings(config: &Config) -> Result<rem_sync::TrustSettings, CliError> {
    config
        .settings()
        .map_err(CliError::usage)?
        .rem_trust
        .ok_or_else(|| CliError::usage("no trusted list: set rem.trust.tl_urls"))
}

fn sync(config: &Config, store: Arc<dyn LogStore>) -> Result<i32, CliError> {
    let settings = trust_settings(config)?;
    let fetch = HttpFetch {
        timeout: settings.timeout,
        tls_ca_file: settings.tls_ca_file.clone(),
    };
    let now = SystemClock.now();
    let results =
        rem_sync::sync_all(&*store, &fetch, &XmlDsig, &settings, now).map_err(CliError::usage)?;
    let mut status = 0;
    let stored = |new: bool| if new { ", stored" } else { ", unchanged" };
    for (url, r) in results {
        match r {
            Ok(s) => println!(
                "{url}: {} sequence {}{}",
                s.version.territory,
                s.version.sequence,
                stored(s.new)
            ),
            Err(e) => {
                eprintln!("pec rem trust sync: {e}");
                status = 1;
            }
        }
    }
    // The CSI of every peer the stored lists grant now.
    let (peers, _) = rem_sync::load_peers(&*store, &XmlDsig, &settings).map_err(CliError::usage)?;
    for (url, r) in rem_sync::sync_csi(&*store, &fetch, &peers, now).map_err(CliError::usage)? {
        match r {
            Ok(s) => println!(
                "{url}: csi of {} sequence {}{}",
                s.version.service,
                s.version.sequence,
                stored(s.new)
            ),
            Err(e) => {
                eprintln!("pec rem trust sync: csi: {e}");
                status = 1;
            }
        }
    }
    Ok(status)
}

fn when(t: Option<Instant>) -> String {
    t.map(Instant::rfc3339)
        .unwrap_or_else(|| "none (closed)".into())
}

fn show(args: &TrustShowArgs, config: &Config, store: Arc<dyn LogStore>) -> Result<i32, CliError> {
    let settings = trust_settings(config)?;
    let now = match &args.at {
        Some(s) => Instant::parse_cli(s)
            .ok_or_else(|| CliError::usage(format!("--at \"{s}\": not a date or instant")))?,
        None => SystemClock.now(),
    };
    if args.history {
        for v in store.trusted_list_history().map_err(CliError::usage)? {
            println!(
                "{} {} sequence {}: issued {}, next update {}, fetched {}, last checked {}",
                v.source,
                v.territory,
                v.sequence,
                v.issued_at.rfc3339(),
                when(v.next_update),
                v.fetched_at.rfc3339(),
                v.checked_at.rfc3339()
            );
        }
        for v in store.peer_csi_history().map_err(CliError::usage)? {
            println!(
                "{} csi of {} sequence {}: issued {}, next update {}, profile {}, fetched {}, last checked {}",
                v.source,
                v.service,
                v.sequence,
                v.issued_at.rfc3339(),
                v.next_update.map(Instant::rfc3339).unwrap_or_else(|| "none".into()),
                v.profile,
                v.fetched_at.rfc3339(),
                v.checked_at.rfc3339()
            );
        }
        return Ok(0);
    }
    let (lists, left_out) =
        rem_sync::load_lists(&*store, &XmlDsig, &settings).map_err(CliError::usage)?;
    for why in &left_out {
        eprintln!("pec rem trust show: not used: {why}");
    }
    if lists.is_empty() {
        println!("no trusted list stored: run pec rem trust sync");
        return Ok(0);
    }
    for list in &lists {
        let state = match list.next_update {
            Some(n) if n <= now => "expired",
            _ => "in force",
        };
        println!(
            "{} sequence {} ({}): issued {}, next update {} — {state}",
            list.territory,
            list.sequence,
            list.operator,
            list.issued_at.rfc3339(),
            when(list.next_update)
        );
    }
    let mut peers = crate::rem::trust::RemPeers::new(&lists);
    for why in rem_sync::attach_csi(&*store, &mut peers).map_err(CliError::usage)? {
        eprintln!("pec rem trust show: csi not used: {why}");
    }
    for p in peers.all() {
        let s = &p.service;
        println!(
            "{} / {} [{}]: {}",
            p.provider,
            s.name,
            p.territory,
            if p.trusted_at(now) {
                "trusted"
            } else {
                "not trusted"
            }
        );
        println!(
            "  status {} since {}",
            s.status.rsplit('/').next().unwrap_or(&s.status),
            s.status_since.rfc3339()
        );
        for c in &s.identity.certificates {
            let name = openssl::x509::X509::from_der(c)
                .map(|x| crate::rem::trust::subject(&x))
                .unwrap_or_default();
            println!(
                "  certificate: {name} (SHA-1 {})",
                crate::index::sha1_hex_upper(c)
            );
        }
        for sp in &s.supply_points {
            println!("  supply point: {sp}");
        }
        match (s.csi_url(), peers.csi_of(p)) {
            (None, _) => {}
            (Some(_), None) => println!("  csi: none fetched and verified"),
            (Some(_), Some(c)) => println!(
                "  csi: sequence {}, {}, next update {}{}",
                c.sequence,
                if c.rem_baseline {
                    "REM baseline"
                } else {
                    "not the REM baseline"
                },
                c.next_update
                    .map(Instant::rfc3339)
                    .unwrap_or_else(|| "none".into()),
                if c.in_force_at(now) {
                    ""
                } else {
                    " — expired"
                }
            ),
        }
        if peers.rem_baseline_at(now).any(|q| std::ptr::eq(q, p)) {
            println!("  routing (rem.mode = auto): REM");
        }
    }
    Ok(0)
}

fn publish(args: &CsiPublishArgs) -> Result<i32, CliError> {
    let config = args.config.load()?;
    let settings = config.settings().map_err(CliError::usage)?;
    let signer = crate::wiring::open_signer(&config).map_err(CliError::usage)?;
    let csi = config
        .rem
        .csi
        .settings(
            &config.provider.name,
            &config.provider.service_address,
            &settings.rem.policies,
            signer.certificate_der().to_vec(),
            settings.csi_validity,
            SystemClock.now(),
        )
        .map_err(CliError::usage)?;
    let xml = crate::rem::csi::sign(&csi, &*signer).map_err(CliError::usage)?;
    std::fs::write(&args.out, &xml)
        .map_err(|e| CliError::usage(format!("{}: {e}", args.out.display())))?;
    println!(
        "wrote {} ({} bytes): CSI sequence {} for {}, valid until {}",
        args.out.display(),
        xml.len(),
        csi.sequence,
        csi.erds_domain,
        csi.next_update.rfc3339()
    );
    Ok(0)
}

// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec log seal|verify|search|export|receipts|package|purge`.
//!
//! Exit status: 0 done (for `verify`: everything holds), 1 problems found or the
//! operation failed, 2 usage or configuration error.

use std::io::Write;
use std::path::PathBuf;

use super::args::ConfigArgs;
use super::error::{exit, CliError};
use clap::{Args, Subcommand, ValueEnum};

use crate::log::VerifyOptions;
use crate::message::time::{Clock, Instant, SystemClock};
use crate::store::{LogQuery, LogStore};

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Seal a closed day (default: yesterday, Italian legal day): sign its canonical export
    /// with the provider key and time-stamp it at the configured TSA. A TSA that fails does
    /// not stop the seal: it is stored without its stamp (exit status 1) and `pec serve` or
    /// `pec log stamp` adds the stamp later.
    Seal(SealArgs),
    /// Time-stamp the seals made while the TSA was failing (exit status 1 while one still
    /// cannot be stamped).
    Stamp(PurgeArgs),
    /// Verify the hash chain and the seals (signature and time stamp); every altered,
    /// deleted or inserted record is reported with its id.
    Verify(VerifyArgs),
    /// Search the legal log.
    Search(SearchArgs),
    /// Export records to CSV or JSON.
    Export(SearchArgs),
    /// The receipts kept beside the records of a PEC msgid: each presa in carico and
    /// rilevazione virus another provider sent about it, signed, as received. Lists them;
    /// with --export DIR writes each, byte-exact, as DIR/<record id>.eml.
    Receipts(ReceiptsArgs),
    /// Delete the records (with their kept receipts), seals and quarantined messages past
    /// retention (sealed days only). `pec serve` runs it every log.purge_interval.
    Purge(PurgeArgs),
    /// Write a sealed day as one package for long-term preservation (conservazione a
    /// norma): records, CSV, seal signature, time stamp, certificates and a manifest of
    /// hashes, in a tar archive that `pec log verify --package` checks offline.
    Package(PackageArgs),
}

#[derive(Debug, Args)]
pub struct PackageArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The sealed day, YYYY-MM-DD.
    #[arg(long)]
    pub day: String,
    /// The package file (default: pec-registro-DAY.tar in the current directory).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SealArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The day to seal, YYYY-MM-DD (default: yesterday).
    #[arg(long)]
    pub day: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// From this day (YYYY-MM-DD) or instant (RFC 3339).
    #[arg(long)]
    pub from: Option<String>,
    /// Up to this day, inclusive, or instant, exclusive.
    #[arg(long)]
    pub to: Option<String>,
    /// PEM CA of the provider certificate, to verify the seal signatures' chain.
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Check this preservation package (pec log package) offline instead of the store;
    /// the configuration is not read.
    #[arg(long, value_name = "FILE")]
    pub package: Option<PathBuf>,
    /// With --package: PEM CA of the time-stamping authority (without it only the token's
    /// imprint and its own signature are checked).
    #[arg(long = "tsa-ca", value_name = "PEM", requires = "package")]
    pub tsa_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Csv,
    Json,
    /// A readable PDF document (A4, one block per record).
    Pdf,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Records of this mailbox's messages only (as sender or recipient).
    #[arg(long)]
    pub mailbox: Option<String>,
    #[arg(long)]
    pub sender: Option<String>,
    #[arg(long)]
    pub recipient: Option<String>,
    /// From this day (YYYY-MM-DD) or instant (RFC 3339).
    #[arg(long)]
    pub from: Option<String>,
    /// Up to this day, inclusive, or instant, exclusive.
    #[arg(long)]
    pub to: Option<String>,
    /// Event label: BustaTrasporto, Accettazione, Consegna, …
    #[arg(long)]
    pub kind: Option<String>,
    /// Text in the subject.
    #[arg(long)]
    pub subject: Option<String>,
    /// PEC msgid.
    #[arg(long = "pec-id")]
    pub pec_id: Option<String>,
    #[arg(long)]
    pub limit: Option<usize>,
    /// Output format (search: text; export: csv); pdf for people, best with --output.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Write to this file instead of standard output.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReceiptsArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// PEC msgid of the envelope the receipts are about.
    #[arg(long = "pec-id")]
    pub pec_id: String,
    /// Write each receipt into this directory as <record id>.eml (created if missing).
    #[arg(long, value_name = "DIR")]
    pub export: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

fn open(
    config: &ConfigArgs,
) -> Result<(crate::config::Config, std::sync::Arc<dyn LogStore>), CliError> {
    let cfg = crate::config::load(&config.config).map_err(CliError::usage)?;
    let store = crate::wiring::open_store(&cfg).map_err(CliError::failed)?;
    Ok((cfg, store))
}

/// `--from` and `--to` as instants.
pub(super) fn bounds(
    from: &Option<String>,
    to: &Option<String>,
) -> Result<(Option<Instant>, Option<Instant>), CliError> {
    let parse = |s: &Option<String>, end: bool| match s {
        None => Ok(None),
        Some(v) => crate::log::parse_bound(v, end).map(Some).ok_or_else(|| {
            CliError::usage(format!(
                "invalid date \"{v}\": expected YYYY-MM-DD or RFC 3339"
            ))
        }),
    };
    Ok((parse(from, false)?, parse(to, true)?))
}

/// Runs one `pec log` command; returns the exit status.
pub fn run(command: &LogCommand) -> i32 {
    exit("pec log", run_inner(command))
}

fn run_inner(command: &LogCommand) -> Result<i32, CliError> {
    match command {
        LogCommand::Seal(args) => {
            let (cfg, store) = open(&args.config)?;
            let settings = cfg.settings().map_err(CliError::usage)?;
            let now = SystemClock.now();
            let day = match &args.day {
                Some(d) => crate::log::parse_day(d).ok_or_else(|| {
                    CliError::usage(format!("invalid day \"{d}\": expected YYYY-MM-DD"))
                })?,
                None => crate::log::yesterday(now),
            };
            let signer = crate::wiring::open_seal_signer(&cfg).map_err(CliError::failed)?;
            let crate::log::Sealed { seal, stamp_error } =
                crate::log::seal_day(&*store, signer.as_ref(), settings.tsa.as_ref(), day, now)
                    .map_err(CliError::failed)?;
            let stamp = match (&seal.tst, &stamp_error) {
                (Some(_), _) => "time-stamped".to_string(),
                (None, Some(e)) => {
                    format!("NOT time-stamped yet ({e}); pec serve retries, or run pec log stamp")
                }
                (None, None) => "not time-stamped (no log.tsa_url)".to_string(),
            };
            println!(
                "sealed {}: {} records, sha-256 {}, {stamp}",
                seal.day,
                seal.count,
                hex::encode(&seal.export_sha256),
            );
            // The seal is stored; its missing stamp is a failure until it is added.
            Ok(i32::from(stamp_error.is_some()))
        }
        LogCommand::Stamp(args) => {
            let (cfg, store) = open(&args.config)?;
            let settings = cfg.settings().map_err(CliError::usage)?;
            let tsa = settings
                .tsa
                .ok_or_else(|| CliError::usage("no log.tsa_url: nothing to stamp with"))?;
            let pending =
                crate::log::unstamped(&*store, i64::MIN, i64::MAX).map_err(CliError::failed)?;
            let mut failed = 0;
            for seal in &pending {
                match crate::log::stamp_seal(&*store, &tsa, seal) {
                    Ok(true) => println!("stamped {}", seal.day),
                    Ok(false) => println!("{}: already stamped by another process", seal.day),
                    Err(e) => {
                        failed += 1;
                        println!("{}: {e}", seal.day)
                    }
                }
            }
            println!(
                "{} seals without a time stamp, {} stamped now",
                pending.len(),
                pending.len() - failed
            );
            Ok(i32::from(failed > 0))
        }
        LogCommand::Verify(args) if args.package.is_some() => verify_package(args),
        LogCommand::Verify(args) => {
            let (cfg, store) = open(&args.config)?;
            let (from, to) = bounds(&args.from, &args.to)?;
            let opts = VerifyOptions {
                tsa_ca: cfg.log.tsa_ca_file.clone(),
                signer_ca: args.ca.clone(),
            };
            let report = crate::log::verify(&*store, from, to, &opts).map_err(CliError::failed)?;
            for p in &report.problems {
                println!("{p}");
            }
            println!(
                "{} records, {} seals checked: {}",
                report.records,
                report.seals,
                if report.problems.is_empty() {
                    "ok".to_string()
                } else {
                    format!("{} problems", report.problems.len())
                }
            );
            Ok(i32::from(!report.problems.is_empty()))
        }
        LogCommand::Package(args) => {
            let (cfg, store) = open(&args.config)?;
            let day = crate::log::parse_day(&args.day).ok_or_else(|| {
                CliError::usage(format!("invalid day \"{}\": expected YYYY-MM-DD", args.day))
            })?;
            let path = args
                .output
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("pec-registro-{day}.tar")));
            // Written beside, then renamed: a package that exists is whole.
            let partial = path.with_extension("tar.partial");
            let file = std::fs::File::create(&partial).map_err(|e| {
                CliError::failed(format!("cannot create \"{}\": {e}", partial.display()))
            })?;
            let written = crate::log::package::write(
                &*store,
                day,
                &cfg.provider.name,
                SystemClock.now(),
                std::io::BufWriter::new(file),
            );
            let manifest = match written {
                Ok(m) => m,
                Err(e) => {
                    let _ = std::fs::remove_file(&partial);
                    return Err(CliError::failed(e));
                }
            };
            std::fs::rename(&partial, &path).map_err(|e| {
                CliError::failed(format!("cannot rename to \"{}\": {e}", path.display()))
            })?;
            println!(
                "{}: day {}, {} records, sha-256 {}, {}",
                path.display(),
                manifest.day,
                manifest.records,
                manifest.export_sha256,
                if manifest.files.iter().any(|f| f.name == "marca.tsr") {
                    "time-stamped"
                } else {
                    "NOT time-stamped"
                }
            );
            Ok(0)
        }
        LogCommand::Receipts(args) => receipts(args),
        LogCommand::Search(args) => search(args, Format::Text),
        LogCommand::Export(args) => search(args, Format::Csv),
        LogCommand::Purge(args) => {
            let (cfg, store) = open(&args.config)?;
            let report = crate::log::purge(
                &*store,
                cfg.log.retention_months,
                cfg.quarantine.retention_months,
                SystemClock.now(),
                &cfg.provider.name,
            )
            .map_err(CliError::failed)?;
            println!(
                "purged {} records, {} seals, {} quarantined messages, {} kept receipts",
                report.events, report.seals, report.quarantined, report.receipts
            );
            if let Some(why) = report.stopped_at {
                println!("the log purge stopped early: {why} (run pec log seal)");
            }
            Ok(0)
        }
    }
}

/// `pec log receipts`: one line per kept receipt (record id, instant, type, Message-ID,
/// size); with `--export`, each written byte-exact as `<record id>.eml`.
fn receipts(args: &ReceiptsArgs) -> Result<i32, CliError> {
    let (_, store) = open(&args.config)?;
    let kept = store
        .kept_receipts(&args.pec_id)
        .map_err(CliError::failed)?;
    if let Some(dir) = &args.export {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::failed(format!("cannot create \"{}\": {e}", dir.display())))?;
    }
    for k in &kept {
        let mut line = format!(
            "{} {} {} {} {} bytes",
            k.event_id,
            Instant::from_unix(k.at).rfc3339(),
            k.kind,
            k.message_id.as_deref().unwrap_or("-"),
            k.message.len()
        );
        if let Some(dir) = &args.export {
            let path = dir.join(format!("{}.eml", k.event_id));
            std::fs::write(&path, &k.message).map_err(|e| {
                CliError::failed(format!("cannot write \"{}\": {e}", path.display()))
            })?;
            line.push_str(&format!(" {}", path.display()));
        }
        println!("{line}");
    }
    Ok(0)
}

/// `pec log verify --package FILE`: offline, no configuration.
fn verify_package(args: &VerifyArgs) -> Result<i32, CliError> {
    let Some(path) = &args.package else {
        return Err(CliError::usage("no package"));
    };
    let file = std::fs::File::open(path)
        .map_err(|e| CliError::failed(format!("cannot open \"{}\": {e}", path.display())))?;
    let opts = VerifyOptions {
        tsa_ca: args.tsa_ca.clone(),
        signer_ca: args.ca.clone(),
    };
    let report = crate::log::package::verify(std::io::BufReader::new(file), &opts)
        .map_err(CliError::failed)?;
    for p in &report.problems {
        println!("{p}");
    }
    let day = report.manifest.as_ref().map_or("?", |m| m.day.as_str());
    println!(
        "package of {day}: {} records: {}",
        report.records,
        if report.problems.is_empty() {
            "ok".to_string()
        } else {
            format!("{} problems", report.problems.len())
        }
    );
    Ok(i32::from(!report.problems.is_empty()))
}

fn search(args: &SearchArgs, default: Format) -> Result<i32, CliError> {
    let (_, store) = open(&args.config)?;
    let (from, to) = bounds(&args.from, &args.to)?;
    let query = LogQuery {
        mailbox: args.mailbox.clone(),
        sender: args.sender.clone(),
        recipient: args.recipient.clone(),
        from,
        to,
        kind: args.kind.clone(),
        subject: args.subject.clone(),
        pec_id: args.pec_id.clone(),
        limit: args.limit,
    };
    let events = store.search_events(&query).map_err(CliError::failed)?;
    let text = match args.format.unwrap_or(default) {
        Format::Csv => crate::log::to_csv(&events),
        Format::Json => crate::log::to_json(&events) + "\n",
        Format::Pdf => {
            let title = match &args.mailbox {
                Some(m) => format!("Registro dei messaggi - casella {m}"),
                None => "Registro dei messaggi".to_string(),
            };
            let now = crate::message::time::Clock::now(&crate::message::time::SystemClock);
            return write_output(args, &crate::log::pdf::to_pdf(&events, &title, now))
                .map_err(CliError::failed);
        }
        Format::Text => {
            let mut out = String::new();
            for e in &events {
                let ev = &e.event;
                let legal = ev.at.legal();
                out.push_str(&format!(
                    "{} {} {}{} {} {} mittente={} destinatari={} oggetto={:?} esito={}\n",
                    e.id,
                    legal.giorno(),
                    legal.ora(),
                    legal.zona(),
                    ev.kind.label(),
                    ev.pec_id,
                    ev.sender,
                    ev.recipients
                        .iter()
                        .map(|(a, _)| a.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    ev.subject,
                    ev.outcome
                ));
            }
            out
        }
    };
    write_output(args, text.as_bytes()).map_err(CliError::failed)
}

/// Writes `bytes` to `--output` or standard output.
fn write_output(args: &SearchArgs, bytes: &[u8]) -> Result<i32, String> {
    match &args.output {
        Some(path) => std::fs::write(path, bytes)
            .map_err(|e| format!("cannot write \"{}\": {e}", path.display())),
        None => std::io::stdout()
            .write_all(bytes)
            .map_err(|e| e.to_string()),
    }?;
    Ok(0)
}

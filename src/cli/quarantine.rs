// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec quarantine list|show|export`: the infected messages kept 30 months (spec §8), for
//! the authorities. `export` writes a message byte-exact, as submitted or received.
//!
//! Exit status: 0 done, 1 no such message or the operation failed, 2 usage or
//! configuration error.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::args::ConfigArgs;
use super::error::{exit, CliError};
use crate::message::time::Instant;
use crate::store::{LogStore, QuarantineEntry, QuarantineQuery};

#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// List the quarantined messages, oldest first: id, instant, PEC msgid, size, verdict.
    List(ListArgs),
    /// Show one quarantined message: its record and its headers.
    Show(IdArgs),
    /// Write one quarantined message, byte-exact (to standard output by default).
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Only the messages of this PEC msgid.
    #[arg(long = "pec-id")]
    pub pec_id: Option<String>,
    /// From this day (YYYY-MM-DD) or instant (RFC 3339).
    #[arg(long)]
    pub from: Option<String>,
    /// Up to this day, inclusive, or instant, exclusive.
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The message's id in the quarantine (first column of `pec quarantine list`).
    pub id: i64,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The message's id in the quarantine (first column of `pec quarantine list`).
    pub id: i64,
    /// Write to this file instead of standard output.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

/// Runs one `pec quarantine` command; returns the exit status.
pub fn run(command: &QuarantineCommand) -> i32 {
    exit("pec quarantine", run_inner(command))
}

fn open(config: &ConfigArgs) -> Result<std::sync::Arc<dyn LogStore>, CliError> {
    let cfg = config.load()?;
    crate::wiring::open_store(&cfg).map_err(CliError::failed)
}

fn when(at: i64) -> String {
    Instant::from_unix(at).rfc3339()
}

fn line(e: &QuarantineEntry) -> String {
    format!(
        "{} {} {} {} bytes {:?} expires {}",
        e.id,
        when(e.at),
        e.pec_id,
        e.size,
        e.reason,
        when(e.expires_at)
    )
}

/// The message `id`, or "no such message" (exit 1).
fn message(store: &dyn LogStore, id: i64) -> Result<(QuarantineEntry, Vec<u8>), CliError> {
    store
        .quarantine_message(id)
        .map_err(CliError::failed)?
        .ok_or_else(|| CliError::failed(format!("no quarantined message {id}")))
}

fn run_inner(command: &QuarantineCommand) -> Result<i32, CliError> {
    match command {
        QuarantineCommand::List(args) => {
            let store = open(&args.config)?;
            let (from, to) = super::log::bounds(&args.from, &args.to)?;
            let query = QuarantineQuery {
                pec_id: args.pec_id.clone(),
                from: from.map(Instant::unix),
                to: to.map(Instant::unix),
                limit: args.limit,
            };
            let entries = store.quarantine_list(&query).map_err(CliError::failed)?;
            let mut out = String::new();
            for e in &entries {
                out.push_str(&line(e));
                out.push('\n');
            }
            std::io::stdout()
                .write_all(out.as_bytes())
                .map_err(|e| CliError::failed(e.to_string()))?;
            Ok(0)
        }
        QuarantineCommand::Show(args) => {
            let store = open(&args.config)?;
            let (entry, bytes) = message(&*store, args.id)?;
            // The header section only: the content is the infected part.
            let end = crate::message::mime::find(&bytes, b"\r\n\r\n")
                .or_else(|| crate::message::mime::find(&bytes, b"\n\n"))
                .unwrap_or(bytes.len());
            let mut out = format!(
                "id: {}\nquarantined: {}\npec-id: {}\nverdict: {}\nsize: {} bytes\nexpires: {}\n\n",
                entry.id,
                when(entry.at),
                entry.pec_id,
                entry.reason,
                entry.size,
                when(entry.expires_at)
            );
            out.push_str(&String::from_utf8_lossy(&bytes[..end]));
            out.push('\n');
            std::io::stdout()
                .write_all(out.as_bytes())
                .map_err(|e| CliError::failed(e.to_string()))?;
            Ok(0)
        }
        QuarantineCommand::Export(args) => {
            let store = open(&args.config)?;
            let (_, bytes) = message(&*store, args.id)?;
            match &args.output {
                Some(path) => std::fs::write(path, &bytes).map_err(|e| {
                    CliError::failed(format!("cannot write \"{}\": {e}", path.display()))
                })?,
                None => std::io::stdout()
                    .write_all(&bytes)
                    .map_err(|e| CliError::failed(e.to_string()))?,
            }
            Ok(0)
        }
    }
}

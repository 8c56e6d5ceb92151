// SPDX-License-Identifier: GPL-3.0-or-later
//! The REM records of the store (issue 20): `pec evidence show|export|list`, the ERDS
//! evidences we issued or received, exported byte-exact; `pec mailbox identity
//! set|show|clear`, the identity a mailbox's sender is named with in REM evidences, each
//! change kept with who made it and when.
//!
//! Exit status: 0 done, 1 no such evidence or identity, or the operation failed, 2 usage
//! or configuration error.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::args::ConfigArgs;
use super::error::{exit, CliError};
use crate::message::time::{Clock, SystemClock};
use crate::store::{IdentityAttribute, LogStore, SenderIdentity, StoredEvidence};

#[derive(Debug, Subcommand)]
pub enum EvidenceCommand {
    /// Show one evidence: event, reason, time, direction, issuer, recipient, the SHA-256
    /// of its XML and its legal-log record; --xml prints the XML after them.
    Show(ShowArgs),
    /// Write one evidence's XML, byte-exact as issued or received (to standard output by
    /// default).
    Export(ExportArgs),
    /// List the evidences about one REM message, in the order they were recorded.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The evidence id (REM-Evidence-ID).
    pub id: String,
    /// Print the evidence XML too.
    #[arg(long)]
    pub xml: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The evidence id (REM-Evidence-ID).
    pub id: String,
    /// Write to this file instead of standard output.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The REM message identifier.
    #[arg(long = "message", value_name = "ID")]
    pub message: String,
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Set (replace) MAILBOX's sender identity: its attributes (SAML attribute names, e.g.
    /// http://eidas.europa.eu/attributes/naturalperson/PersonIdentifier), the assurance
    /// level and how it was proofed. Who set it (--by, else the user running the command)
    /// and when are recorded.
    Set(IdentitySetArgs),
    /// Show MAILBOX's sender identity and every change made to it.
    Show(IdentityArgs),
    /// Remove MAILBOX's sender identity (the change is recorded with who made it).
    Clear(IdentityClearArgs),
}

#[derive(Debug, Args)]
pub struct IdentitySetArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    pub mailbox: String,
    /// An attribute, NAME=VALUE (repeatable, at least one).
    #[arg(long = "attr", value_name = "NAME=VALUE", required = true)]
    pub attrs: Vec<String>,
    /// The assurance level URI (e.g. http://eidas.europa.eu/LoA/substantial).
    #[arg(long, value_name = "URI")]
    pub level: String,
    /// How the identity was proofed (e.g. spid, cie, in-person).
    #[arg(long, value_name = "METHOD")]
    pub proofing: String,
    /// The identifier of the assurance policy followed.
    #[arg(long, value_name = "ID")]
    pub policy: Option<String>,
    /// Who sets it (default: the user running the command).
    #[arg(long, value_name = "NAME")]
    pub by: Option<String>,
}

#[derive(Debug, Args)]
pub struct IdentityArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    pub mailbox: String,
}

#[derive(Debug, Args)]
pub struct IdentityClearArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    pub mailbox: String,
    /// Who clears it (default: the user running the command).
    #[arg(long, value_name = "NAME")]
    pub by: Option<String>,
}

fn open(config: &ConfigArgs) -> Result<std::sync::Arc<dyn LogStore>, CliError> {
    let cfg = config.load()?;
    crate::wiring::open_store(&cfg).map_err(CliError::failed)
}

fn print(text: &[u8]) -> Result<(), CliError> {
    std::io::stdout()
        .write_all(text)
        .map_err(|e| CliError::failed(e.to_string()))
}

/// The evidence `id`, or "no such evidence" (exit 1).
fn evidence(store: &dyn LogStore, id: &str) -> Result<StoredEvidence, CliError> {
    store
        .evidence(id)
        .map_err(CliError::failed)?
        .ok_or_else(|| CliError::failed(format!("no evidence \"{id}\"")))
}

/// The fields of `pec evidence show`, one per line.
fn details(s: &StoredEvidence) -> String {
    let e = &s.evidence;
    format!(
        "evidence: {}\nmessage: {}\nevent: {}\nreason: {}\ntime: {}\ndirection: {}\n\
         issuer: {}\nrecipient: {}\nsha256: {}\nsize: {} bytes\nlog record: {}\n",
        e.id,
        e.message_id,
        e.event,
        e.reason.as_deref().unwrap_or("-"),
        e.at.rfc3339(),
        e.direction.as_str(),
        e.issuer,
        e.recipient.as_deref().unwrap_or("-"),
        hex::encode(&s.sha256),
        e.xml.len(),
        s.event_id
    )
}

/// Runs one `pec evidence` command; returns the exit status.
pub fn evidence_command(command: &EvidenceCommand) -> i32 {
    exit("pec evidence", run_evidence(command))
}

fn run_evidence(command: &EvidenceCommand) -> Result<i32, CliError> {
    match command {
        EvidenceCommand::Show(args) => {
            let store = open(&args.config)?;
            let s = evidence(&*store, &args.id)?;
            let mut out = details(&s).into_bytes();
            if args.xml {
                out.push(b'\n');
                out.extend_from_slice(&s.evidence.xml);
                if !s.evidence.xml.ends_with(b"\n") {
                    out.push(b'\n');
                }
            }
            print(&out)?;
            Ok(0)
        }
        EvidenceCommand::Export(args) => {
            let store = open(&args.config)?;
            let s = evidence(&*store, &args.id)?;
            match &args.out {
                Some(path) => std::fs::write(path, &s.evidence.xml).map_err(|e| {
                    CliError::failed(format!("cannot write \"{}\": {e}", path.display()))
                })?,
                None => print(&s.evidence.xml)?,
            }
            Ok(0)
        }
        EvidenceCommand::List(args) => {
            let store = open(&args.config)?;
            let list = store
                .evidences_for(&args.message)
                .map_err(CliError::failed)?;
            let mut out = String::new();
            for s in &list {
                let e = &s.evidence;
                out.push_str(&format!(
                    "{} {} {} {} reason {} recipient {}\n",
                    e.id,
                    e.at.rfc3339(),
                    e.direction.as_str(),
                    e.event,
                    e.reason.as_deref().unwrap_or("-"),
                    e.recipient.as_deref().unwrap_or("-"),
                ));
            }
            print(out.as_bytes())?;
            Ok(0)
        }
    }
}

/// Who runs the command: `--by`, else the user who ran sudo, else the user.
fn operator(by: &Option<String>) -> Result<String, CliError> {
    let who = by
        .clone()
        .or_else(|| std::env::var("SUDO_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_default();
    if who.trim().is_empty() {
        return Err(CliError::usage(
            "who makes the change is unknown: give --by NAME",
        ));
    }
    Ok(who)
}

/// One `--attr NAME=VALUE`: a name without spaces, a non-empty value.
fn attribute(a: &str) -> Result<IdentityAttribute, CliError> {
    let bad = || CliError::usage(format!("--attr \"{a}\": expected NAME=VALUE"));
    let (name, value) = a.split_once('=').ok_or_else(bad)?;
    if name.is_empty() || name.chars().any(char::is_whitespace) || value.trim().is_empty() {
        return Err(bad());
    }
    Ok(IdentityAttribute {
        name: name.to_string(),
        value: value.to_string(),
    })
}

/// Runs one `pec mailbox identity` command; returns the exit status.
pub fn identity_command(command: &IdentityCommand) -> i32 {
    exit("pec mailbox identity", run_identity(command))
}

fn run_identity(command: &IdentityCommand) -> Result<i32, CliError> {
    match command {
        IdentityCommand::Set(args) => {
            super::admin::admin_address("mailbox", &args.mailbox)?;
            let attributes = args
                .attrs
                .iter()
                .map(|a| attribute(a))
                .collect::<Result<Vec<_>, _>>()?;
            let uri = |v: &str| {
                v.split_once(':')
                    .is_some_and(|(s, r)| !s.is_empty() && !r.is_empty())
            };
            if !uri(&args.level) || args.level.chars().any(char::is_whitespace) {
                return Err(CliError::usage(format!(
                    "--level \"{}\": expected a URI",
                    args.level
                )));
            }
            if args.proofing.trim().is_empty() {
                return Err(CliError::usage("--proofing must not be empty"));
            }
            let identity = SenderIdentity {
                attributes,
                level: args.level.clone(),
                policy: args.policy.clone().filter(|p| !p.trim().is_empty()),
                proofing: args.proofing.clone(),
                set_at: SystemClock.now(),
                set_by: operator(&args.by)?,
            };
            let store = open(&args.config)?;
            store
                .set_sender_identity(&args.mailbox, &identity)
                .map_err(CliError::failed)?;
            show(&*store, &args.mailbox)
        }
        IdentityCommand::Show(args) => {
            let store = open(&args.config)?;
            show(&*store, &args.mailbox)
        }
        IdentityCommand::Clear(args) => {
            let by = operator(&args.by)?;
            let store = open(&args.config)?;
            let mailbox = args.mailbox.to_ascii_lowercase();
            if store
                .clear_sender_identity(&mailbox, SystemClock.now(), &by)
                .map_err(CliError::failed)?
            {
                println!("{mailbox}: sender identity cleared by {by}");
                Ok(0)
            } else {
                Err(CliError::failed(format!(
                    "{mailbox} has no sender identity"
                )))
            }
        }
    }
}

/// Prints `mailbox`'s identity and its changes; exit 1 when it has none.
fn show(store: &dyn LogStore, mailbox: &str) -> Result<i32, CliError> {
    let mailbox = mailbox.to_ascii_lowercase();
    let identity = store.sender_identity(&mailbox).map_err(CliError::failed)?;
    let changes = store
        .sender_identity_changes(&mailbox)
        .map_err(CliError::failed)?;
    let mut out = format!("mailbox: {mailbox}\n");
    if let Some(i) = &identity {
        for a in &i.attributes {
            out.push_str(&format!("attribute: {} = {}\n", a.name, a.value));
        }
        out.push_str(&format!(
            "level: {}\npolicy: {}\nproofing: {}\nset: {} by {}\n",
            i.level,
            i.policy.as_deref().unwrap_or("-"),
            i.proofing,
            i.set_at.rfc3339(),
            i.set_by
        ));
    } else {
        out.push_str("identity: none\n");
    }
    for c in &changes {
        out.push_str(&format!(
            "change: {} {} by {}\n",
            c.action,
            c.at.rfc3339(),
            c.by
        ));
    }
    print(out.as_bytes())?;
    Ok(if identity.is_some() { 0 } else { 1 })
}

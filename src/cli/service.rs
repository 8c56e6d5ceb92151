// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec suspend`, `pec resume` (provider-wide suspension of the service for an incident or
//! a planned outage) and `pec stats agid` (the statistics AgID asks for).

use clap::Subcommand;

use super::args::ConfigArgs;
use super::error::{exit, CliError};
use super::index::with_store;
use crate::log::agid;
use crate::message::time::{Clock, Instant, SystemClock};
use crate::store::{EventKind, LogEvent, LogQuery, Outage, OutageKind};

#[derive(Debug, clap::Args)]
pub struct SuspendArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Why, shown to the clients in the temporary failure and kept in the legal log.
    #[arg(long)]
    pub reason: String,
    /// The outage type in the AgID statistics: incident, planned or malfunction.
    #[arg(long, default_value = "incident", value_parser = ["incident", "planned", "malfunction"])]
    pub kind: String,
}

#[derive(Debug, Subcommand)]
pub enum StatsCommand {
    /// The AgID statistics of [--from, --to) as CSV on standard output: domains, active
    /// mailboxes, messages out (acceptances), messages in (presa in carico), viruses in and
    /// out, availability against 99.8 % (planned outages excluded); then one line per
    /// outage (date, type, minutes, SLA respected). The rule is per four months: give a
    /// four-month period (e.g. --from 2026-01-01 --to 2026-05-01).
    Agid {
        #[command(flatten)]
        config: ConfigArgs,
        /// Start, inclusive: YYYY-MM-DD (midnight Italian time) or RFC 3339.
        #[arg(long)]
        from: String,
        /// End, exclusive.
        #[arg(long)]
        to: String,
    },
}

fn service_event(kind: EventKind, at: Instant, provider: &str, reason: String) -> LogEvent {
    LogEvent {
        pec_id: String::new(),
        at,
        kind,
        sender: String::new(),
        recipients: Vec::new(),
        subject: String::new(),
        related_ids: Vec::new(),
        provider: provider.to_string(),
        queue_id: None,
        outcome: "ok".into(),
        reason: Some(reason),
    }
}

/// Runs `pec suspend`.
pub fn suspend(args: &SuspendArgs) -> i32 {
    let reason = args.reason.trim();
    if reason.is_empty() || reason.chars().any(char::is_control) {
        let e = CliError::usage("--reason: give a one-line text");
        return exit("pec suspend", Err(e));
    }
    let Some(kind) = OutageKind::parse(&args.kind) else {
        let e = CliError::usage(format!("--kind: unknown type \"{}\"", args.kind));
        return exit("pec suspend", Err(e));
    };
    with_store(&args.config, "pec suspend", |config, store| {
        let at = SystemClock.now();
        let outage = Outage {
            kind,
            reason: reason.to_string(),
            start: at,
            end: None,
        };
        let event = service_event(
            EventKind::ProviderSuspended,
            at,
            &config.provider.name,
            format!("{}: {reason}", kind.label()),
        );
        if store
            .suspend_provider(&outage, &event)
            .map_err(CliError::usage)?
        {
            println!(
                "service suspended at {} ({}): {reason}",
                at.rfc3339(),
                kind.label()
            );
            return Ok(0);
        }
        let open = store.provider_suspension().map_err(CliError::usage)?;
        Err(CliError::usage(format!(
            "the service is suspended already{}",
            open.map(|o| format!(" since {}: {}", o.start.rfc3339(), o.reason))
                .unwrap_or_default()
        )))
    })
}

/// Runs `pec resume`.
pub fn resume(args: &ConfigArgs) -> i32 {
    with_store(args, "pec resume", |config, store| {
        let at = SystemClock.now();
        let event = service_event(
            EventKind::ProviderResumed,
            at,
            &config.provider.name,
            "service resumed".into(),
        );
        match store.resume_provider(&event).map_err(CliError::usage)? {
            Some(o) => {
                println!(
                    "service resumed at {} after {} minutes ({}: {})",
                    at.rfc3339(),
                    (at.unix() - o.start.unix() + 59) / 60,
                    o.kind.label(),
                    o.reason
                );
                Ok(0)
            }
            None => Err(CliError::usage("the service is not suspended")),
        }
    })
}

/// Runs `pec stats …`.
pub fn stats(command: &StatsCommand) -> i32 {
    let StatsCommand::Agid { config, from, to } = command;
    let period = match (Instant::parse_cli(from), Instant::parse_cli(to)) {
        (Some(f), Some(t)) if f < t => Ok((f, t)),
        (Some(_), Some(_)) => Err(CliError::usage("--from must be before --to")),
        (None, _) => Err(CliError::usage(format!("--from: invalid date \"{from}\""))),
        (_, None) => Err(CliError::usage(format!("--to: invalid date \"{to}\""))),
    };
    let (from, to) = match period {
        Ok(p) => p,
        Err(e) => return exit("pec stats agid", Err(e)),
    };
    with_store(config, "pec stats agid", |config, store| {
        let query = LogQuery {
            from: Some(from),
            to: Some(to),
            ..LogQuery::default()
        };
        let events: Vec<LogEvent> = store
            .search_events(&query)
            .map_err(CliError::usage)?
            .into_iter()
            .map(|e| e.event)
            .collect();
        let outages = store.outages(from, to).map_err(CliError::usage)?;
        let mut domains = config.provider.domains.clone();
        domains.extend(store.extra_domains().map_err(CliError::usage)?);
        domains.sort();
        domains.dedup();
        let stats = agid::compute(&events, &outages, &domains, from, to);
        print!("{}", stats.csv());
        Ok(0)
    })
}

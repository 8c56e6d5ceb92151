// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec timers run`: one pass of the 12 h / 24 h delivery timers.

use std::sync::Arc;

use clap::Subcommand;

use super::args::ConfigArgs;
use super::error::{exit, CliError};
use crate::message::kind::Timeout;
use crate::message::time::{Clock, FixedClock, Instant, SystemClock};
use crate::store::RemWaitKind;

/// The receipt a REM wait ends with.
fn rem_label(which: RemWaitKind) -> &'static str {
    match which {
        RemWaitKind::Relay => "RB22",
        RemWaitKind::Consignment => "RD03",
    }
}

#[derive(Debug, Subcommand)]
pub enum TimersCommand {
    /// Run one pass: send every due 12 h / 24 h notice and, with `[rem] enabled`, every due
    /// REM receipt (RelayFailure RB22 after `rem.relay_wait`, ContentConsignmentFailure
    /// RD03 after `rem.consignment_wait`); print one line per notice.
    ///
    /// Exit status: 0 every due notice was sent (or none was due), 1 some could not be sent
    /// (they are retried by the next pass), 2 configuration, store or signer error.
    Run(TimersRunArgs),
}

#[derive(Debug, clap::Args)]
pub struct TimersRunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Run the pass as if it were this instant (RFC 3339, e.g. `2026-01-02T10:00:00Z`)
    /// instead of now: for tests, and to catch up by hand.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
}

/// Runs one `pec timers` command; returns the exit status.
pub fn run(command: &TimersCommand) -> i32 {
    let TimersCommand::Run(args) = command;
    exit("pec timers run", run_once(args))
}

fn run_once(args: &TimersRunArgs) -> Result<i32, CliError> {
    let now = match &args.now {
        None => SystemClock.now(),
        Some(s) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => Instant::from_utc(t.with_timezone(&chrono::Utc)),
            Err(e) => {
                return Err(CliError::usage(format!(
                    "--now \"{s}\": not an RFC 3339 instant: {e}"
                )))
            }
        },
    };
    let config = args.config.load()?;
    let timers = crate::wiring::open_timers(&config, Arc::new(FixedClock::new(now)))
        .map_err(CliError::usage)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::usage(format!("cannot start the runtime: {e}")))?;
    let report = runtime
        .block_on(timers.run_once(now))
        .map_err(CliError::usage)?;
    let hours = |w: Timeout| if w == Timeout::Hours12 { "12h" } else { "24h" };
    for s in &report.sent {
        println!(
            "sent {} notice {} to the sender of {} for {}",
            hours(s.which),
            s.notice_id,
            s.pec_id,
            s.recipient
        );
    }
    for f in &report.failed {
        println!(
            "FAILED {} notice for {} of {}: {}",
            hours(f.which),
            f.recipient,
            f.pec_id,
            f.reason
        );
    }
    for r in &report.rem {
        match &r.notice_id {
            Some(id) => println!(
                "sent rem {} receipt {} to the sender of {} for {}",
                rem_label(r.which),
                id,
                r.message_id,
                r.recipient
            ),
            None => println!(
                "closed rem {} wait of {} for {}: outcome recorded, nothing sent",
                r.which.as_str(),
                r.message_id,
                r.recipient
            ),
        }
    }
    for f in &report.rem_failed {
        println!(
            "FAILED rem {} receipt for {} of {}: {}",
            rem_label(f.which),
            f.recipient,
            f.message_id,
            f.reason
        );
    }
    if !report.rem.is_empty() || !report.rem_failed.is_empty() {
        println!(
            "rem waits at {}: {} sent (RB22: {}, RD03: {}), {} closed by our records, {} failed",
            now.utc().to_rfc3339(),
            report.rem_count(RemWaitKind::Relay) + report.rem_count(RemWaitKind::Consignment),
            report.rem_count(RemWaitKind::Relay),
            report.rem_count(RemWaitKind::Consignment),
            report.rem.iter().filter(|r| r.notice_id.is_none()).count(),
            report.rem_failed.len()
        );
    }
    // The PEC summary stays the last line (scripts read it).
    println!(
        "timers at {}: {} sent (12h: {}, 24h: {}), {} failed",
        now.utc().to_rfc3339(),
        report.sent.len(),
        report.count(Timeout::Hours12),
        report.count(Timeout::Hours24),
        report.failed.len()
    );
    Ok(i32::from(
        !report.failed.is_empty() || !report.rem_failed.is_empty(),
    ))
}

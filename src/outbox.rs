// SPDX-License-Identifier: GPL-3.0-or-later
//! Emitting generated messages exactly once across crashes, and the outbox sweep (see
//! [`crate::store::outbox`] for the protocol and the tables).
//!
//! Every role emits a receipt, notice or anomaly envelope the same way
//! ([`crate::issuing::Issuing::emit`]): built and signed, staged with its
//! [`crate::store::Effect`] in one store transaction, injected, and marked injected. The
//! sweep ([`sweep_once`],
//! run by `pec serve` every [`SWEEP_EVERY`], first at start-up) injects the rows staged
//! but never marked injected: those of a process that died (or failed to inject) between
//! the two steps, whoever staged them (the after-queue acceptance, the access point's
//! non-acceptance, the timers, where nobody would retry).

use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info};

use crate::issuing::blocking;
use crate::message::time::{Clock, Instant};
use crate::smtp::Injector;
use crate::store::{Store, StoreError};

/// How often the sweep runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// A staged row is taken over by the sweep when its last injection attempt is older than
/// this (an emitter normally marks it within milliseconds).
pub const SWEEP_GRACE_SECONDS: i64 = 30;
/// Rows swept per pass.
pub const SWEEP_BATCH: usize = 100;
/// Injected outbox rows and delivery records are kept this long: longer than Postfix keeps
/// retrying a message (`maximal_queue_lifetime`, 5 days by default).
pub const KEEP_DAYS: i64 = 30;

/// One sweep pass: injects the staged rows left unsent (see the module documentation).
/// Returns how many were injected.
pub async fn sweep_once(
    store: &Arc<dyn Store>,
    injector: &dyn Injector,
    clock: &dyn Clock,
) -> Result<usize, StoreError> {
    let now = clock.now();
    let before = Instant::from_unix(now.unix() - SWEEP_GRACE_SECONDS);
    let s = store.clone();
    let rows = blocking(move || s.claim_unsent(before, now, SWEEP_BATCH))
        .await
        .map_err(|e| StoreError::Database(e.to_string()))??;
    let mut sent = 0;
    for row in rows {
        match injector
            .inject(&row.mail_from, &row.rcpt_to, &row.data)
            .await
        {
            Ok(()) => {
                let (s, key, at) = (store.clone(), row.key.clone(), clock.now());
                blocking(move || s.outbound_injected(&key, at))
                    .await
                    .map_err(|e| StoreError::Database(e.to_string()))??;
                info!(key = %row.key, message_id = %row.message_id, "outbox: staged message injected by the sweep");
                sent += 1;
            }
            Err(e) => {
                error!(key = %row.key, message_id = %row.message_id, "outbox: sweep could not inject, tries again later: {e}");
            }
        }
    }
    Ok(sent)
}

/// The sweep task of `pec serve`: a pass at start-up and every [`SWEEP_EVERY`], and once an
/// hour the purge of rows older than [`KEEP_DAYS`], until `stop` resolves.
pub async fn run(
    store: Arc<dyn Store>,
    injector: Arc<dyn Injector>,
    clock: Arc<dyn Clock>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    let mut last_purge: Option<i64> = None;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = sweep_once(&store, &*injector, &*clock).await {
            error!("outbox: sweep failed: {e}");
        }
        let now = clock.now().unix();
        if last_purge.is_none_or(|t| now - t >= 3600) {
            last_purge = Some(now);
            let s = store.clone();
            let before = Instant::from_unix(now - KEEP_DAYS * 86_400);
            match blocking(move || s.purge_outbox(before)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => info!(rows = n, "outbox: old outbox and delivery records purged"),
                Ok(Err(e)) => error!("outbox: purge failed: {e}"),
                Err(e) => error!("outbox: purge failed: {e}"),
            }
        }
    }
}

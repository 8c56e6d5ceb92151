// SPDX-License-Identifier: GPL-3.0-or-later
//! The provider index refresh that `pec serve` runs: a sync from the configured source
//! every `index.refresh` (one node at a time, through a lease in the store), and the
//! copies other nodes store picked up in between.

use std::future::Future;
use std::sync::Arc;

use tracing::{error, info, warn};

use super::sync;
use super::tls_policy::Target;
use super::{IndexHandle, ProviderIndex};
use crate::message::time::{Clock, SystemClock};
use crate::store::{ledger, LogStore};

/// Synchronises the index from `source` now and then every `every`, until `shutdown`;
/// a failed or refused sync keeps the current copy. Every new copy, synchronised here or
/// stored by someone else, rewrites the TLS policy map when `tls_policy` is given.
pub async fn run(
    store: Arc<dyn LogStore>,
    index: Arc<IndexHandle>,
    source: sync::Source,
    every: std::time::Duration,
    force: bool,
    tls_policy: Option<Target>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A copy stored by someone else (`pec index sync`, another `pec serve` on the same
    // store) is picked up within a minute.
    let mut look = tokio::time::interval(std::time::Duration::from_secs(60));
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: Option<(i64, String)> = None;
    // Nodes sharing a store take turns through a lease: one of them fetches, the others
    // load the copy it stored (a lone node always holds it).
    let owner = ledger::node_owner();
    let lease = i64::try_from(every.as_secs())
        .unwrap_or(i64::MAX / 2)
        .saturating_mul(3)
        / 2
        + 60;
    tokio::pin!(shutdown);
    loop {
        let sync_now = tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => true,
            _ = look.tick() => false,
        };
        if sync_now {
            let (st, owner) = (store.clone(), owner.clone());
            let leader = tokio::task::spawn_blocking(move || {
                st.try_lease("index-refresh", &owner, SystemClock.now(), lease)
            })
            .await;
            match leader {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => continue,
                Ok(Err(e)) => {
                    warn!("provider index: cannot take the refresh lease: {e}");
                    continue;
                }
                Err(e) => {
                    error!("provider index: {e}");
                    continue;
                }
            }
            match sync::refresh(store.clone(), &index, &source, force, SystemClock.now()).await {
                Ok(stored) => {
                    crate::metrics::index_sync(true);
                    info!(providers = stored.providers, source = %stored.source, "provider index synchronised");
                    if let Some(t) = &tls_policy {
                        t.write_logged(&index.current());
                    }
                    seen = Some((stored.fetched_at.unix(), stored.source));
                }
                Err(e) => {
                    crate::metrics::index_sync(false);
                    warn!("provider index: sync failed, keeping the current copy: {e}")
                }
            }
            continue;
        }
        let st = store.clone();
        let stored = match tokio::task::spawn_blocking(move || st.stored_index()).await {
            Ok(Ok(Some(s))) => s,
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => {
                warn!("provider index: cannot read the stored copy: {e}");
                continue;
            }
            Err(e) => {
                error!("provider index: {e}");
                continue;
            }
        };
        let key = (stored.fetched_at.unix(), stored.source.clone());
        if seen.as_ref() == Some(&key) {
            continue;
        }
        match ProviderIndex::parse(&stored.ldif) {
            Ok(i) => {
                if seen.is_some() {
                    info!(providers = stored.providers, source = %stored.source, "provider index: newer stored copy loaded");
                }
                if let Some(t) = &tls_policy {
                    t.write_logged(&i);
                }
                index.replace(i);
                seen = Some(key);
            }
            Err(e) => error!(
                "provider index: the stored copy does not parse, keeping the current one: {e}"
            ),
        }
    }
}

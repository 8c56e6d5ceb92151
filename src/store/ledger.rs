// SPDX-License-Identifier: GPL-3.0-or-later
//! The store as `pec serve` and the `pec log` / `pec store` commands open it from the
//! configuration: the [`Store`] trait plus the legal log's own operations (chain
//! verification, export, seals, purge) and the leases of the tasks that run on one node at a
//! time. Implemented by [`super::SqliteStore`] (one host) and [`super::PgStore`] (several
//! nodes on one PostgreSQL database); [`super::open`] opens the configured one.

use super::report::{
    Export, Health, KeptReceipt, PurgeReport, QuarantineEntry, QuarantineQuery, SealRecord,
    VerifyReport,
};
use super::{LogEvent, Store, StoreError};
use crate::message::time::Instant;

/// A [`Store`] with the legal log's operations. Their one implementation, for both
/// backends, is in [`super::sql`] and documents their semantics.
pub trait LogStore: Store {
    /// Verifies the hash chain over the records with `from <= at < to`.
    fn verify_chain(
        &self,
        from: Option<Instant>,
        to: Option<Instant>,
    ) -> Result<VerifyReport, StoreError>;
    /// The canonical export of the records with `from_at <= at < to_at`.
    fn export_range(&self, from_at: i64, to_at: i64) -> Result<Export, StoreError>;
    /// Claims the sealing of `day` (exactly one process seals a day).
    fn claim_seal(&self, day: &str, owner: &str, now: Instant) -> Result<bool, StoreError>;
    /// Releases a seal claim after a failed attempt.
    fn release_seal_claim(&self, day: &str) -> Result<(), StoreError>;
    /// Stores a seal; sealing a day twice is an error.
    fn insert_seal(&self, seal: &SealRecord) -> Result<(), StoreError>;
    /// Adds the time-stamp token to the seal of `day` stored without one (the only change a
    /// seal accepts, schema version 13). Returns false when the seal has a token already.
    fn add_seal_stamp(&self, day: &str, tst: &[u8], tsa_url: &str) -> Result<bool, StoreError>;
    /// The seals whose day overlaps `from_at <= t < to_at`.
    fn seals(&self, from_at: i64, to_at: i64) -> Result<Vec<SealRecord>, StoreError>;
    /// Appends many events in one transaction.
    fn log_batch(&self, events: &[LogEvent]) -> Result<(), StoreError>;
    /// Retention: deletes what is past the cutoffs (sealed days only), keeping the chain
    /// verifiable.
    fn purge(
        &self,
        log_cutoff: Instant,
        quarantine_cutoff: Instant,
        now: Instant,
        provider: &str,
    ) -> Result<PurgeReport, StoreError>;
    /// Takes (or renews) the lease `name` for `owner` until `now + seconds`: true when
    /// `owner` holds it now, false when another holder's lease is still running. A store
    /// that only one host uses has nothing to share: the SQLite store always answers true.
    fn try_lease(
        &self,
        name: &str,
        owner: &str,
        now: Instant,
        seconds: i64,
    ) -> Result<bool, StoreError> {
        let _ = (name, owner, now, seconds);
        Ok(true)
    }
    /// The receipts kept beside the legal-log records about `pec_id` (see
    /// [`Store::record_receipt_received`]), in log order.
    fn kept_receipts(&self, pec_id: &str) -> Result<Vec<KeptReceipt>, StoreError>;
    /// The quarantined messages matching `query`, oldest first, without their bytes.
    fn quarantine_list(&self, query: &QuarantineQuery) -> Result<Vec<QuarantineEntry>, StoreError>;
    /// The quarantined message `id` with its bytes, byte-exact; `None` when there is none
    /// (never stored, or purged).
    fn quarantine_message(&self, id: i64)
        -> Result<Option<(QuarantineEntry, Vec<u8>)>, StoreError>;
    /// Which store this is, for messages (`sqlite:PATH`, `postgres://HOST/DB`).
    fn describe(&self) -> String;
    /// The health figures of `pec status` and of the metrics endpoint.
    fn health(&self) -> Result<Health, StoreError>;
    /// The PEC domains added with `pec domain add`, sorted.
    fn extra_domains(&self) -> Result<Vec<String>, StoreError>;
    /// Adds a PEC domain (lower-cased); `false` when it was already there.
    fn add_domain(&self, domain: &str, at: i64) -> Result<bool, StoreError>;
    /// Removes a PEC domain added with [`LogStore::add_domain`]; `false` when absent.
    fn remove_domain(&self, domain: &str) -> Result<bool, StoreError>;
}

/// A name for this process among the nodes (`host:pid`), for claims and leases.
pub fn node_owner() -> String {
    format!(
        "{}:{}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        std::process::id()
    )
}

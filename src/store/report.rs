// SPDX-License-Identifier: GPL-3.0-or-later
//! What the legal log's operations report, whichever backend ran them: chain verification,
//! seals, exports, purges and the health figures of `pec status`.

/// Something wrong found by [`crate::store::LogStore::verify_chain`] or by the seal checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Id of the record where it shows (for a seal: its first record, if any).
    pub id: Option<i64>,
    /// The seal's day, for seal problems.
    pub day: Option<String>,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.day, self.id) {
            (Some(d), _) => write!(f, "seal {d}: {}", self.what),
            (None, Some(id)) => write!(f, "record {id}: {}", self.what),
            (None, None) => f.write_str(&self.what),
        }
    }
}

/// Outcome of a chain verification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records checked.
    pub records: u64,
    /// Seals checked.
    pub seals: u64,
    pub problems: Vec<Problem>,
}

/// One row of `seals`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealRecord {
    /// `YYYY-MM-DD`, Italian legal day.
    pub day: String,
    pub from_at: i64,
    pub to_at: i64,
    pub count: i64,
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
    pub export_sha256: Vec<u8>,
    pub signature: Vec<u8>,
    pub tst: Option<Vec<u8>>,
    pub tsa_url: Option<String>,
    pub sealed_at: i64,
}

/// The canonical export of a range of records (a seal's content).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Export {
    /// One canonical line per record, in id order.
    pub bytes: Vec<u8>,
    pub count: i64,
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
}

/// A purge's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Records deleted, and the id of the last one (the new anchor).
    pub events: u64,
    pub anchor_id: Option<i64>,
    pub seals: u64,
    pub quarantined: u64,
    /// Received receipts kept beside the deleted records (deleted with them).
    pub receipts: u64,
    /// REM evidences kept beside the deleted records (deleted with them).
    pub evidences: u64,
    /// Why the purge of the log stopped before the cutoff (an unsealed day), if it did.
    pub stopped_at: Option<String>,
}

/// The last sealed day of the legal log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastSeal {
    /// `YYYY-MM-DD`, legal day in Europe/Rome.
    pub day: String,
    /// Start of that day, unix seconds.
    pub from_at: i64,
    /// When it was sealed, unix seconds.
    pub sealed_at: i64,
    /// Whether the seal carries an RFC 3161 time stamp.
    pub timestamped: bool,
}

/// What the store says about the service's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Tracked (envelope, certified recipient) pairs still waiting for a receipt whose
    /// 24 h notice has not gone out yet: the timers' queue.
    pub pending_timers: u64,
    /// Messages in quarantine.
    pub quarantined: u64,
    /// The last sealed day, if any.
    pub last_seal: Option<LastSeal>,
    /// The stored index copy: fetched at (unix seconds), source, providers.
    pub index: Option<(i64, String, u64)>,
    /// Records in the legal log.
    pub log_records: u64,
    /// Instant of the oldest record, unix seconds.
    pub oldest_record_at: Option<i64>,
}

/// A receipt from another provider kept beside its legal-log record (presa in carico,
/// rilevazione virus addressed to our `mailReceipt`), as the reception point received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptReceipt {
    /// Id of its legal-log record (kind `Ricezione`).
    pub event_id: i64,
    /// PEC msgid of the envelope it is about.
    pub pec_id: String,
    /// Its `X-Ricevuta` value (`presa-in-carico`, `rilevazione-virus`).
    pub kind: String,
    /// Its Message-ID, when it has one.
    pub message_id: Option<String>,
    /// Received at, unix seconds.
    pub at: i64,
    /// The message as received, byte-exact (S/MIME signed).
    pub message: Vec<u8>,
}

/// One quarantined message, without its bytes (`pec quarantine list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineEntry {
    /// Its id in the quarantine (what `pec quarantine show|export` take).
    pub id: i64,
    /// PEC msgid of the refused submission or of the infected envelope.
    pub pec_id: String,
    /// Quarantined at, unix seconds.
    pub at: i64,
    /// The antivirus verdict.
    pub reason: String,
    /// Size of the message, bytes.
    pub size: u64,
    /// When the purge may delete it, unix seconds.
    pub expires_at: i64,
}

/// Which quarantined messages [`super::LogStore::quarantine_list`] lists: every set
/// criterion must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuarantineQuery {
    pub pec_id: Option<String>,
    /// Quarantined at or after, unix seconds.
    pub from: Option<i64>,
    /// Quarantined before, unix seconds.
    pub to: Option<i64>,
    /// At most this many, oldest first.
    pub limit: Option<usize>,
}

// SPDX-License-Identifier: GPL-3.0-or-later
//! The hash chain of the legal log (spec §8 integrity): the canonical, versioned encoding of
//! a record and its SHA-256.
//!
//! Encoding version 1 of a record is one JSON object, keys in this fixed order, no spaces:
//!
//! ```text
//! {"v":1,"id":…,"pec_id":"…","at":…,"kind":"…","receipt_type":…,"sender":"…",
//!  "recipients":"…","subject":"…","related_ids":"…","provider":"…","queue_id":…,
//!  "outcome":"…","reason":…,"prev_hash":"<64 hex>"}
//! ```
//!
//! The values are the stored column values (`recipients` and `related_ids` are the JSON
//! text of their columns, as strings; absent values are `null`; `at` is unix seconds).
//! `hash = SHA-256("pec-log/1\n" || encoding)`. Because the id and the previous record's
//! hash are inside, altering, deleting, inserting or swapping records breaks the chain at
//! the first affected position. The daily seal's export is the same object with
//! `,"hash":"<64 hex>"` appended, one line per record in id order.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::codec::{decode_kind, decode_recipients, encode_kind, recipients_json, related_json};
use super::report::{Export, Problem, PurgeReport, VerifyReport};
use super::{EventKind, LogEvent, LoggedEvent, StoreError};
use crate::message::time::Instant;

/// The `events` columns every backend reads for chain verification, export and search, in
/// [`ChainRecord`]'s field order, then the stored `hash`.
pub const COLUMNS: &str = "id, pec_id, at, kind, receipt_type, sender, recipients, subject, \
                           related_ids, provider, queue_id, outcome, reason, prev_hash, hash";

/// Version of the canonical encoding written by this program.
pub const ENCODING_VERSION: u32 = 1;

/// `prev_hash` of the very first record (no predecessor, no purge anchor).
pub const GENESIS: [u8; 32] = [0; 32];

/// The columns of one `events` row, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRecord {
    pub id: i64,
    pub pec_id: String,
    pub at: i64,
    pub kind: String,
    pub receipt_type: Option<String>,
    pub sender: String,
    pub recipients: String,
    pub subject: String,
    pub related_ids: String,
    pub provider: String,
    pub queue_id: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub prev_hash: Vec<u8>,
}

#[derive(Serialize)]
struct Encoding<'a> {
    v: u32,
    id: i64,
    pec_id: &'a str,
    at: i64,
    kind: &'a str,
    receipt_type: Option<&'a str>,
    sender: &'a str,
    recipients: &'a str,
    subject: &'a str,
    related_ids: &'a str,
    provider: &'a str,
    queue_id: Option<&'a str>,
    outcome: &'a str,
    reason: Option<&'a str>,
    prev_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
}

impl ChainRecord {
    fn encoding(&self, hash: Option<&[u8]>) -> Vec<u8> {
        let e = Encoding {
            v: ENCODING_VERSION,
            id: self.id,
            pec_id: &self.pec_id,
            at: self.at,
            kind: &self.kind,
            receipt_type: self.receipt_type.as_deref(),
            sender: &self.sender,
            recipients: &self.recipients,
            subject: &self.subject,
            related_ids: &self.related_ids,
            provider: &self.provider,
            queue_id: self.queue_id.as_deref(),
            outcome: &self.outcome,
            reason: self.reason.as_deref(),
            prev_hash: hex::encode(&self.prev_hash),
            hash: hash.map(hex::encode),
        };
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_vec(&e).unwrap_or_default()
    }

    /// The canonical encoding (version 1), without the hash.
    pub fn canonical(&self) -> Vec<u8> {
        self.encoding(None)
    }

    /// SHA-256 of the record: `SHA-256("pec-log/1\n" || canonical)`.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"pec-log/1\n");
        h.update(self.canonical());
        h.finalize().into()
    }

    /// The record's line in a seal export: the canonical object with its hash, and `\n`.
    pub fn export_line(&self, hash: &[u8]) -> Vec<u8> {
        let mut line = self.encoding(Some(hash));
        line.push(b'\n');
        line
    }

    /// The record that appends `event` after `tail` (`(id, hash)` of the last record, see
    /// [`tail`]): the next id, chained to that hash. The backend inserts it with its
    /// [`ChainRecord::hash`], in the transaction that holds the tail.
    pub fn next(
        event: &LogEvent,
        (last_id, prev_hash): (i64, Vec<u8>),
    ) -> Result<Self, StoreError> {
        let (label, receipt) = encode_kind(event.kind);
        Ok(ChainRecord {
            id: last_id + 1,
            pec_id: event.pec_id.clone(),
            at: event.at.unix(),
            kind: label.to_string(),
            receipt_type: receipt.map(str::to_string),
            sender: event.sender.clone(),
            recipients: recipients_json(&event.recipients)?,
            subject: event.subject.clone(),
            related_ids: related_json(&event.related_ids)?,
            provider: event.provider.clone(),
            queue_id: event.queue_id.clone(),
            outcome: event.outcome.clone(),
            reason: event.reason.clone(),
            prev_hash,
        })
    }

    /// The stored row read back as an event; errors name the row.
    pub fn event(self) -> Result<LogEvent, StoreError> {
        let id = self.id;
        let corrupt = |what: String| StoreError::Corrupt(format!("events row {id}: {what}"));
        let kind = decode_kind(&self.kind, self.receipt_type.as_deref()).ok_or_else(|| {
            corrupt(format!(
                "unknown kind \"{}\" (receipt type {:?})",
                self.kind, self.receipt_type
            ))
        })?;
        let recipients =
            decode_recipients(&self.recipients).map_err(|e| corrupt(format!("recipients: {e}")))?;
        let related_ids: Vec<String> = serde_json::from_str(&self.related_ids)
            .map_err(|e| corrupt(format!("related ids: {e}")))?;
        Ok(LogEvent {
            pec_id: self.pec_id,
            at: Instant::from_unix(self.at),
            kind,
            sender: self.sender,
            recipients,
            subject: self.subject,
            related_ids,
            provider: self.provider,
            queue_id: self.queue_id,
            outcome: self.outcome,
            reason: self.reason,
        })
    }

    /// The stored row and its stored hash read back as a logged event.
    pub fn logged(self, hash: Option<Vec<u8>>) -> Result<LoggedEvent, StoreError> {
        let id = self.id;
        Ok(LoggedEvent {
            id,
            event: self.event()?,
            hash: hash.unwrap_or_default(),
        })
    }
}

/// A line of a seal export read back (offline checks of a preservation package): the
/// record and its hash. The line must be exactly what [`ChainRecord::export_line`] writes
/// for them (no other spelling of the same object), version 1, without its `\n`.
pub fn parse_export_line(line: &[u8]) -> Result<(ChainRecord, Vec<u8>), String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        v: u32,
        id: i64,
        pec_id: String,
        at: i64,
        kind: String,
        receipt_type: Option<String>,
        sender: String,
        recipients: String,
        subject: String,
        related_ids: String,
        provider: String,
        queue_id: Option<String>,
        outcome: String,
        reason: Option<String>,
        prev_hash: String,
        hash: String,
    }
    let l: Line = serde_json::from_slice(line).map_err(|e| format!("not a record: {e}"))?;
    if l.v != ENCODING_VERSION {
        return Err(format!(
            "encoding version {} is not {ENCODING_VERSION}",
            l.v
        ));
    }
    let hex32 = |s: &str, what: &str| {
        hex::decode(s)
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| format!("{what} \"{s}\" is not 64 hex digits"))
    };
    let record = ChainRecord {
        id: l.id,
        pec_id: l.pec_id,
        at: l.at,
        kind: l.kind,
        receipt_type: l.receipt_type,
        sender: l.sender,
        recipients: l.recipients,
        subject: l.subject,
        related_ids: l.related_ids,
        provider: l.provider,
        queue_id: l.queue_id,
        outcome: l.outcome,
        reason: l.reason,
        prev_hash: hex32(&l.prev_hash, "prev_hash")?,
    };
    let hash = hex32(&l.hash, "hash")?;
    let mut again = record.export_line(&hash);
    again.pop();
    if again != line {
        return Err("not in canonical form".into());
    }
    Ok((record, hash))
}

/// The id and hash the next record chains to: the last record (`last`, with its stored
/// hash), else the purge anchor, else the genesis (id 0, zero hash).
pub fn tail(
    last: Option<(i64, Option<Vec<u8>>)>,
    anchor: Option<(i64, Vec<u8>)>,
) -> Result<(i64, Vec<u8>), StoreError> {
    match (last, anchor) {
        (Some((id, Some(hash))), _) => Ok((id, hash)),
        (Some((id, None)), _) => Err(StoreError::Corrupt(format!(
            "events row {id}: no hash (not chained)"
        ))),
        (None, Some((id, hash))) => Ok((id, hash)),
        (None, None) => Ok((0, GENESIS.to_vec())),
    }
}

/// Adds `record` (with its stored hash) to `export`, records fed in id order.
pub fn export(export: &mut Export, record: &ChainRecord, hash: Option<&[u8]>) {
    export
        .bytes
        .extend_from_slice(&record.export_line(hash.unwrap_or_default()));
    export.count += 1;
    export.first_id.get_or_insert(record.id);
    export.last_id = Some(record.id);
}

/// Chain verification, fed the rows in id order by the backend. Each record's hash is
/// recomputed and its `prev_hash` compared with the previous record's hash (or the purge
/// anchor). Every mismatch is reported with the id where it shows: an altered record at
/// its own id, a deleted one at the id after the gap, an inserted or swapped one at its id
/// and the next.
#[derive(Debug)]
pub struct Verifier {
    prev_id: i64,
    prev_hash: Vec<u8>,
    report: VerifyReport,
}

impl Verifier {
    /// Starts after `before` (the record just before the range, with its stored hash), else
    /// after the purge anchor, else after the genesis.
    pub fn after(before: Option<(i64, Option<Vec<u8>>)>, anchor: Option<(i64, Vec<u8>)>) -> Self {
        let (prev_id, prev_hash) = match before {
            Some((id, h)) => (id, h.unwrap_or_default()),
            None => anchor.unwrap_or((0, GENESIS.to_vec())),
        };
        Verifier {
            prev_id,
            prev_hash,
            report: VerifyReport::default(),
        }
    }

    /// Checks the next record and its stored hash.
    pub fn check(&mut self, record: &ChainRecord, stored: Option<Vec<u8>>) {
        let report = &mut self.report;
        let prev_id = self.prev_id;
        report.records += 1;
        let id = record.id;
        let problem = |what: String| Problem {
            id: Some(id),
            day: None,
            what,
        };
        if id != prev_id + 1 {
            report.problems.push(problem(format!(
                "ids jump from {prev_id} to {id}: records deleted or ids altered"
            )));
        }
        if record.prev_hash != self.prev_hash {
            report.problems.push(problem(format!(
                "chain broken: prev_hash does not match the hash of record {prev_id} \
                 (a record deleted, inserted or moved before this one)"
            )));
        }
        let computed = record.hash();
        if stored.as_deref() != Some(&computed[..]) {
            report.problems.push(problem(
                "hash mismatch: the record was altered (or forged)".into(),
            ));
        }
        self.prev_id = id;
        self.prev_hash = stored.unwrap_or_default();
    }

    /// What was found.
    pub fn report(self) -> VerifyReport {
        self.report
    }
}

/// Why a purge stops before its cutoff: the record `id` at `at` (unix seconds) lies in a day
/// that is not sealed.
pub fn unsealed(id: i64, at: i64) -> String {
    format!(
        "record {id} at {} is not sealed",
        Instant::from_unix(at).rfc3339()
    )
}

/// The [`EventKind::Purged`] record a purge appends (in its transaction, after the new
/// anchor), `None` when it deleted nothing. `boundary` is where the purge of the log stopped
/// (unix seconds).
pub fn purge_event(
    report: &PurgeReport,
    boundary: i64,
    quarantine_cutoff: Instant,
    now: Instant,
    provider: &str,
) -> Option<LogEvent> {
    (report.events + report.seals + report.quarantined > 0).then(|| LogEvent {
        pec_id: String::new(),
        at: now,
        kind: EventKind::Purged,
        sender: String::new(),
        recipients: Vec::new(),
        subject: String::new(),
        related_ids: Vec::new(),
        provider: provider.to_string(),
        queue_id: None,
        outcome: "ok".into(),
        reason: Some(
            format!(
                "retention: {} records (up to id {}) before {}, {} seals, \
             {} quarantined messages before {}",
                report.events,
                report
                    .anchor_id
                    .map_or_else(|| "-".to_string(), |i| i.to_string()),
                Instant::from_unix(boundary).rfc3339(),
                report.seals,
                report.quarantined,
                quarantine_cutoff.rfc3339()
            ) + &if report.receipts > 0 {
                format!(", {} kept receipts with their records", report.receipts)
            } else {
                String::new()
            } + &if report.evidences > 0 {
                format!(", {} REM evidences with their records", report.evidences)
            } else {
                String::new()
            },
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ChainRecord {
        ChainRecord {
            id: 1,
            pec_id: "opec.1@pec.example.it".into(),
            at: 1_705_314_605,
            kind: "Accettazione".into(),
            receipt_type: None,
            sender: "mario@pec.example.it".into(),
            recipients: r#"[{"address":"a@b.it","tipo":"certificato"}]"#.into(),
            subject: "Fattura \"12\" — è urgente".into(),
            related_ids: "[]".into(),
            provider: "P".into(),
            queue_id: Some("4Xy".into()),
            outcome: "ok".into(),
            reason: None,
            prev_hash: GENESIS.to_vec(),
        }
    }

    #[test]
    fn the_encoding_is_fixed() {
        let want = concat!(
            r#"{"v":1,"id":1,"pec_id":"opec.1@pec.example.it","at":1705314605,"#,
            r#""kind":"Accettazione","receipt_type":null,"sender":"mario@pec.example.it","#,
            r#""recipients":"[{\"address\":\"a@b.it\",\"tipo\":\"certificato\"}]","#,
            r#""subject":"Fattura \"12\" — è urgente","related_ids":"[]","provider":"P","#,
            r#""queue_id":"4Xy","outcome":"ok","reason":null,"prev_hash":""#,
            "0000000000000000000000000000000000000000000000000000000000000000\"}"
        );
        assert_eq!(String::from_utf8(record().canonical()).unwrap(), want);
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = record().hash();
        let mut changed: Vec<ChainRecord> = Vec::new();
        let r = record;
        changed.push(ChainRecord { id: 2, ..r() });
        changed.push(ChainRecord {
            pec_id: "x".into(),
            ..r()
        });
        changed.push(ChainRecord { at: 0, ..r() });
        changed.push(ChainRecord {
            kind: "Consegna".into(),
            ..r()
        });
        changed.push(ChainRecord {
            receipt_type: Some("breve".into()),
            ..r()
        });
        changed.push(ChainRecord {
            sender: "x".into(),
            ..r()
        });
        changed.push(ChainRecord {
            recipients: "[]".into(),
            ..r()
        });
        changed.push(ChainRecord {
            subject: "x".into(),
            ..r()
        });
        changed.push(ChainRecord {
            related_ids: "[\"a\"]".into(),
            ..r()
        });
        changed.push(ChainRecord {
            provider: "Q".into(),
            ..r()
        });
        changed.push(ChainRecord {
            queue_id: None,
            ..r()
        });
        changed.push(ChainRecord {
            outcome: "virus".into(),
            ..r()
        });
        changed.push(ChainRecord {
            reason: Some(String::new()),
            ..r()
        });
        changed.push(ChainRecord {
            prev_hash: vec![1; 32],
            ..r()
        });
        for c in changed {
            assert_ne!(c.hash(), base, "{c:?}");
        }
    }
}

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

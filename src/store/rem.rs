// SPDX-License-Identifier: GPL-3.0-or-later
//! What the store keeps for REM (ETSI EN 319 532-4, issue 20): the ERDS evidences we
//! issued or received, each beside its legal-log record, and the sender identity of each
//! mailbox (the attributes a REM evidence names the sender with). The values only; their
//! queries are in [`super::sql`], the evidence XML itself in [`crate::rem`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{EventKind, LogEvent, StoreError};
use crate::message::kind::RecipientType;
use crate::message::time::Instant;

/// Whether we issued an evidence or received it from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvidenceDirection {
    /// Issued and signed by us.
    Issued,
    /// Received from another REM provider (its signature verified by the caller).
    Received,
}

impl EvidenceDirection {
    /// The `direction` column value.
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceDirection::Issued => "issued",
            EvidenceDirection::Received => "received",
        }
    }

    /// Inverse of [`EvidenceDirection::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [EvidenceDirection::Issued, EvidenceDirection::Received]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

/// One ERDS evidence (EN 319 522-2), as stored: its identity and the fields the store is
/// searched and shown by, and its XML byte-exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The evidence identifier (`REM-Evidence-ID`, the evidence's `EvidenceIdentifier`):
    /// unique in the store.
    pub id: String,
    /// The REM message identifier the evidence is about.
    pub message_id: String,
    /// The event URI (`EventCode`), e.g.
    /// `http://uri.etsi.org/REM/Event#SubmissionAcceptance`.
    pub event: String,
    /// The reason code (`ReasonCode`), when the evidence has one.
    pub reason: Option<String>,
    /// The recipient it is about, when it names one.
    pub recipient: Option<String>,
    /// Who issued it: our provider, or the subject of the peer's signing certificate.
    pub issuer: String,
    /// The event time the evidence states.
    pub at: Instant,
    pub direction: EvidenceDirection,
    /// The signed evidence XML, byte-exact.
    pub xml: Vec<u8>,
}

impl Evidence {
    /// SHA-256 of [`Evidence::xml`].
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.xml).into()
    }

    /// The legal-log record of this evidence (kind [`EventKind::RemEvidence`]): its
    /// `pec_id` is the REM message identifier, its one related id the evidence id, its
    /// `outcome` `ok`, and its `reason` the event URI, the reason code and the XML's SHA-256
    /// ([`Evidence::log_reason`]). The record's other fields come from the message:
    /// `sender`, `recipients`, `subject`, `provider` (ours for issued evidences, the
    /// peer's for received ones) and the Postfix queue id.
    pub fn log_event(
        &self,
        sender: &str,
        recipients: Vec<(String, RecipientType)>,
        subject: &str,
        provider: &str,
        queue_id: Option<&str>,
    ) -> LogEvent {
        LogEvent {
            pec_id: self.message_id.clone(),
            at: self.at,
            kind: EventKind::RemEvidence(self.direction),
            sender: sender.to_string(),
            recipients,
            subject: subject.to_string(),
            related_ids: vec![self.id.clone()],
            provider: provider.to_string(),
            queue_id: queue_id.map(str::to_string),
            outcome: "ok".into(),
            reason: Some(self.log_reason()),
        }
    }

    /// What the legal-log record says of the evidence, in its `reason` field (so that the
    /// chain's canonical encoding stays version 1, as for the SASL login):
    /// `evento <URI>; motivo <code>; sha256 <hex>` (`motivo` left out when there is none).
    pub fn log_reason(&self) -> String {
        let mut s = format!("evento {}", self.event);
        if let Some(r) = &self.reason {
            s.push_str("; motivo ");
            s.push_str(r);
        }
        s.push_str("; sha256 ");
        s.push_str(&hex::encode(self.sha256()));
        s
    }
}

/// Which REM wait (EN 319 532-4 Annex D) a [`RemWait`] row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemWaitKind {
    /// Sender side: our dispatch waits for the recipient's provider to relay-accept it
    /// (`[rem] relay_wait`); none in time → RelayFailure RB22 to our sender.
    Relay,
    /// Recipient side: a dispatch we took in (relay-accepted, or our own to our own
    /// recipient) waits for its consignment outcome (`[rem] consignment_wait`); none in time
    /// → ContentConsignmentFailure RD03 to the sender.
    Consignment,
}

impl RemWaitKind {
    /// The `which` column value.
    pub fn as_str(self) -> &'static str {
        match self {
            RemWaitKind::Relay => "relay",
            RemWaitKind::Consignment => "consignment",
        }
    }

    /// Inverse of [`RemWaitKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [RemWaitKind::Relay, RemWaitKind::Consignment]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A REM wait begun for one recipient of one REM message (written with the event that
/// begins it, [`super::Effect::RemWaits`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemWait {
    pub which: RemWaitKind,
    /// The REM message identifier.
    pub message_id: String,
    /// The recipient (stored lower case).
    pub recipient: String,
    pub started_at: Instant,
}

/// A REM wait as the store holds it ([`super::Store::rem_waits_for`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemWaitState {
    pub wait: RemWait,
    /// The REM receipt that closed it (the timer's, or the consignment outcome's).
    pub notice_id: Option<String>,
    /// When it was closed; `None` while open.
    pub settled_at: Option<Instant>,
}

/// Which REM waits [`super::Store::claim_rem_waits`] claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemWaitClaim {
    pub which: RemWaitKind,
    /// Waits begun at or before this instant are due.
    pub started_up_to: Instant,
    /// The claim instant written on the rows.
    pub now: Instant,
    /// Claims older than this are taken over.
    pub stale_before: Instant,
    pub limit: usize,
}

/// A claimed REM wait: its row id, what it is, and the claim instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemDue {
    pub id: i64,
    pub wait: RemWait,
    pub claimed_at: Instant,
}

/// An evidence as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvidence {
    pub evidence: Evidence,
    /// The SHA-256 stored with it (checked against the bytes on reading).
    pub sha256: Vec<u8>,
    /// The id of its legal-log record.
    pub event_id: i64,
}

/// One identity attribute of a sender: a SAML attribute name (e.g.
/// `http://eidas.europa.eu/attributes/naturalperson/PersonIdentifier`) and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityAttribute {
    pub name: String,
    pub value: String,
}

/// The identity a mailbox's sender is known by in REM evidences (EN 319 522-2 sender
/// details, the AgID profile's identity assurance): set by the operator after proofing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderIdentity {
    /// Identity attributes, in the order given.
    pub attributes: Vec<IdentityAttribute>,
    /// The assurance level URI (e.g. `http://eidas.europa.eu/LoA/substantial`).
    pub level: String,
    /// The identifier of the assurance policy followed, when there is one.
    pub policy: Option<String>,
    /// How the identity was proofed (e.g. `spid`, `cie`, `in-person`).
    pub proofing: String,
    /// When and by whom it was set.
    pub set_at: Instant,
    pub set_by: String,
}

/// One change of a sender identity (`pec mailbox identity set|clear`), kept for audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityChange {
    /// `set` or `clear`.
    pub action: String,
    pub at: Instant,
    pub by: String,
}

/// The `attributes` column: JSON `[{"name": "…", "value": "…"}]`.
pub(in crate::store) fn attributes_json(
    attributes: &[IdentityAttribute],
) -> Result<String, StoreError> {
    serde_json::to_string(attributes)
        .map_err(|e| StoreError::Database(format!("encode identity attributes: {e}")))
}

/// Inverse of [`attributes_json`]; `mailbox` names the row in the error.
pub(in crate::store) fn decode_attributes(
    mailbox: &str,
    json: &str,
) -> Result<Vec<IdentityAttribute>, StoreError> {
    serde_json::from_str(json).map_err(|e| {
        StoreError::Corrupt(format!("sender identity of \"{mailbox}\": attributes: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence() -> Evidence {
        Evidence {
            id: "ev-1".into(),
            message_id: "msg-1".into(),
            event: "http://uri.etsi.org/REM/Event#SubmissionAcceptance".into(),
            reason: None,
            recipient: None,
            issuer: "provider".into(),
            at: Instant::from_unix(1_700_000_000),
            direction: EvidenceDirection::Issued,
            xml: b"<x/>".to_vec(),
        }
    }

    #[test]
    fn the_log_reason_names_the_event_the_reason_and_the_digest() {
        let mut e = evidence();
        let digest = hex::encode(Sha256::digest(b"<x/>"));
        assert_eq!(
            e.log_reason(),
            format!("evento http://uri.etsi.org/REM/Event#SubmissionAcceptance; sha256 {digest}")
        );
        e.reason = Some("http://uri.etsi.org/REM/RejectionReason#MalwareFound".into());
        assert_eq!(
            e.log_reason(),
            format!(
                "evento http://uri.etsi.org/REM/Event#SubmissionAcceptance; \
                 motivo http://uri.etsi.org/REM/RejectionReason#MalwareFound; sha256 {digest}"
            )
        );
        let event = e.log_event("a@x.it", vec![], "s", "P", None);
        assert_eq!(
            event.kind,
            EventKind::RemEvidence(EvidenceDirection::Issued)
        );
        assert_eq!(event.pec_id, "msg-1");
        assert_eq!(event.related_ids, vec!["ev-1".to_string()]);
    }

    #[test]
    fn directions_round_trip() {
        for d in [EvidenceDirection::Issued, EvidenceDirection::Received] {
            assert_eq!(EvidenceDirection::parse(d.as_str()), Some(d));
        }
        assert_eq!(EvidenceDirection::parse("sent"), None);
    }
}

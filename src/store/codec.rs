// SPDX-License-Identifier: GPL-3.0-or-later
//! The store's neutral codec: how the model's values are written in the columns of both
//! backends (event kinds and their labels, tracking states, the recipients and related-ids
//! JSON, certification data) and read back, with the corrupt-row errors; and the timer
//! SQL fragments both backends' `claim_timeouts` use. No driver here: the backends and
//! the chain rules call these on plain values.

use chrono::Months;
use serde::{Deserialize, Serialize};

use super::{
    EventKind, EvidenceDirection, MailboxPolicy, StoreError, TrackingState, RETENTION_MONTHS,
};
use crate::message::build::Certification;
use crate::message::kind::{MessageKind, ReceiptType, RecipientType, Ricevuta, Timeout};
use crate::message::time::Instant;

/// `at` plus `months` calendar months in UTC, time of day kept; a day past the end of the
/// target month is clamped to its last day (31 August + 6 months = 28 or 29 February).
/// `None` past chrono's range.
pub(in crate::store) fn add_months(at: Instant, months: u32) -> Option<Instant> {
    at.utc()
        .checked_add_months(Months::new(months))
        .map(Instant::from_utc)
}

/// One element of the `recipients` JSON column.
#[derive(Serialize, Deserialize)]
struct RecipientJson {
    address: String,
    tipo: RecipientType,
}

pub(in crate::store) fn recipients_json(
    recipients: &[(String, RecipientType)],
) -> Result<String, StoreError> {
    let list: Vec<RecipientJson> = recipients
        .iter()
        .map(|(address, tipo)| RecipientJson {
            address: address.clone(),
            tipo: *tipo,
        })
        .collect();
    serde_json::to_string(&list)
        .map_err(|e| StoreError::Database(format!("encode recipients: {e}")))
}

/// Inverse of [`recipients_json`].
pub(in crate::store) fn decode_recipients(
    json: &str,
) -> Result<Vec<(String, RecipientType)>, serde_json::Error> {
    let list: Vec<RecipientJson> = serde_json::from_str(json)?;
    Ok(list.into_iter().map(|r| (r.address, r.tipo)).collect())
}

pub(in crate::store) fn cert_recipients(cert: &Certification) -> Vec<(String, RecipientType)> {
    cert.destinatari
        .iter()
        .map(|d| (d.address.clone(), d.tipo))
        .collect()
}

/// The `kind` label and `receipt_type` columns of an event kind.
pub(in crate::store) fn encode_kind(kind: EventKind) -> (&'static str, Option<&'static str>) {
    let receipt = match kind {
        EventKind::Issued(MessageKind::Delivery(r)) => Some(r.as_str()),
        EventKind::Received(r) => Some(r.as_str()),
        _ => None,
    };
    (kind.label(), receipt)
}

/// Inverse of [`encode_kind`].
pub(in crate::store) fn decode_kind(label: &str, receipt: Option<&str>) -> Option<EventKind> {
    let issued = [
        MessageKind::TransportEnvelope,
        MessageKind::Acceptance,
        MessageKind::NonAcceptance,
        MessageKind::NonAcceptanceVirus,
        MessageKind::TakeCharge,
        MessageKind::NonDelivery,
        MessageKind::NonDeliveryVirus,
        MessageKind::Timeout(Timeout::Hours12),
        MessageKind::Timeout(Timeout::Hours24),
        MessageKind::VirusDetection,
        MessageKind::AnomalyEnvelope,
    ];
    if let Some(k) = issued.into_iter().find(|k| k.log_label() == label) {
        return receipt.is_none().then_some(EventKind::Issued(k));
    }
    match (label, receipt) {
        ("Consegna", Some(r)) => ReceiptType::ALL
            .into_iter()
            .find(|t| t.as_str() == r)
            .map(|t| EventKind::Issued(MessageKind::Delivery(t))),
        ("Quarantena", None) => Some(EventKind::Quarantined),
        ("RifiutoSmtp", None) => Some(EventKind::RejectedInSmtp),
        ("Cancellazione", None) => Some(EventKind::Purged),
        ("Ricezione", Some(r)) => Ricevuta::parse(r).map(EventKind::Received),
        ("RichiestaRegistro", None) => Some(EventKind::LogRequest),
        ("EstrattoRegistro", None) => Some(EventKind::LogExtract),
        ("Inoltro", None) => Some(EventKind::Forwarded),
        ("Scarto", None) => Some(EventKind::Discarded),
        ("ConsegnaCartella", None) => Some(EventKind::Filed),
        ("SospensioneServizio", None) => Some(EventKind::ProviderSuspended),
        ("RipresaServizio", None) => Some(EventKind::ProviderResumed),
        ("EvidenzaREMEmessa", None) => Some(EventKind::RemEvidence(EvidenceDirection::Issued)),
        ("EvidenzaREMRicevuta", None) => Some(EventKind::RemEvidence(EvidenceDirection::Received)),
        _ => None,
    }
}

pub(in crate::store) fn state_str(state: TrackingState) -> &'static str {
    match state {
        TrackingState::Sent => "sent",
        TrackingState::TakenInCharge => "taken-in-charge",
        TrackingState::Delivered => "delivered",
        TrackingState::Failed => "failed",
    }
}

pub(in crate::store) fn parse_state(value: &str) -> Option<TrackingState> {
    [
        TrackingState::Sent,
        TrackingState::TakenInCharge,
        TrackingState::Delivered,
        TrackingState::Failed,
    ]
    .into_iter()
    .find(|s| state_str(*s) == value)
}

/// `now` minus `months` calendar months (UTC), for retention cutoffs.
pub fn months_before(now: Instant, months: u32) -> Option<Instant> {
    now.utc()
        .checked_sub_months(Months::new(months))
        .map(Instant::from_utc)
}

/// The JSON text of `related_ids`.
pub(in crate::store) fn related_json(related: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(related)
        .map_err(|e| StoreError::Database(format!("encode related ids: {e}")))
}

/// The certification data stored with a pending acceptance, read back; `seq` names the row
/// in the error.
pub(in crate::store) fn decode_cert(seq: i64, cert: &str) -> Result<Certification, StoreError> {
    serde_json::from_str(cert).map_err(|e| {
        StoreError::Corrupt(format!("pending_acceptance row {seq}: certification: {e}"))
    })
}

/// The `policy` and `forward_to` columns of a mailbox policy.
pub(in crate::store) fn policy_columns(policy: &MailboxPolicy) -> (&'static str, Option<String>) {
    let forward_to = match policy {
        MailboxPolicy::Forward(to) | MailboxPolicy::Folder(to) => Some(to.clone()),
        _ => None,
    };
    (policy.label(), forward_to)
}

/// Inverse of [`policy_columns`]; `mailbox` names the row in the error.
pub(in crate::store) fn decode_policy(
    mailbox: &str,
    policy: String,
    forward_to: Option<String>,
) -> Result<MailboxPolicy, StoreError> {
    match (policy.as_str(), forward_to) {
        ("anomaly", _) => Ok(MailboxPolicy::Anomaly),
        ("refuse", _) => Ok(MailboxPolicy::Refuse),
        ("forward", Some(to)) => Ok(MailboxPolicy::Forward(to)),
        ("discard", None) => Ok(MailboxPolicy::Discard),
        ("folder", Some(f)) => Ok(MailboxPolicy::Folder(f)),
        (p, to) => Err(StoreError::Corrupt(format!(
            "mailbox_policy of \"{mailbox}\": policy \"{p}\" forward_to {to:?}"
        ))),
    }
}

/// When a message quarantined at `at` expires: [`RETENTION_MONTHS`] later.
pub(in crate::store) fn quarantine_expiry(
    pec_id: &str,
    at: Instant,
) -> Result<Instant, StoreError> {
    add_months(at, RETENTION_MONTHS).ok_or_else(|| {
        StoreError::Database(format!("quarantine expiry of \"{pec_id}\" is out of range"))
    })
}

/// The `from_at`, `to_at` and `problem` columns of a log request's period.
pub(in crate::store) fn period_columns(
    period: &Result<(Instant, Instant), String>,
) -> (Option<i64>, Option<i64>, Option<String>) {
    match period {
        Ok((f, t)) => (Some(f.unix()), Some(t.unix()), None),
        Err(p) => (None, None, Some(p.clone())),
    }
}

/// Inverse of [`period_columns`]; `id` names the request in the error.
pub(in crate::store) fn decode_period(
    id: &str,
    (from_at, to_at, problem): (Option<i64>, Option<i64>, Option<String>),
) -> Result<Result<(Instant, Instant), String>, StoreError> {
    match (from_at, to_at, problem) {
        (Some(f), Some(t), _) => Ok(Ok((Instant::from_unix(f), Instant::from_unix(t)))),
        (_, _, Some(p)) => Ok(Err(p)),
        _ => Err(StoreError::Corrupt(format!(
            "log request \"{id}\": neither a period nor a problem"
        ))),
    }
}

/// The states, as an SQL list, a tracking row may be in for `state` to replace it (states
/// only move forward); `None` for `Sent`, which replaces nothing.
pub(in crate::store) fn forward_from(state: TrackingState) -> Option<&'static str> {
    match state {
        TrackingState::Sent => None,
        TrackingState::TakenInCharge => Some("('sent')"),
        TrackingState::Delivered | TrackingState::Failed => Some("('sent', 'taken-in-charge')"),
    }
}

/// Claim column, notice-id column and the states that still call for the notice.
pub(in crate::store) fn timeout_columns(
    which: Timeout,
) -> (&'static str, &'static str, &'static str) {
    match which {
        Timeout::Hours12 => ("notice12_claimed_at", "notice12_id", "'sent'"),
        Timeout::Hours24 => (
            "notice24_claimed_at",
            "notice24_id",
            "'sent', 'taken-in-charge'",
        ),
    }
}

/// The tracking row's `state` once the notice `which` is sent, as an SQL expression:
/// after the 24 h notice tracking stops (the row fails), unless an outcome arrived
/// meanwhile.
pub(in crate::store) fn timeout_state(which: Timeout) -> &'static str {
    match which {
        Timeout::Hours12 => "state",
        Timeout::Hours24 => {
            "CASE WHEN state IN ('sent', 'taken-in-charge') THEN 'failed' ELSE state END"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn utc(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> Instant {
        Instant::from_utc(Utc.with_ymd_and_hms(y, m, d, h, mi, s).unwrap())
    }

    #[test]
    fn add_months_clamps_the_day_and_keeps_the_time() {
        let cases = [
            (utc(2024, 1, 15, 10, 30, 5), 1, utc(2024, 2, 15, 10, 30, 5)),
            (
                utc(2024, 1, 31, 23, 59, 59),
                1,
                utc(2024, 2, 29, 23, 59, 59),
            ),
            (utc(2023, 1, 31, 0, 0, 0), 1, utc(2023, 2, 28, 0, 0, 0)),
            (utc(2020, 8, 31, 12, 0, 0), 30, utc(2023, 2, 28, 12, 0, 0)),
            (utc(2021, 8, 31, 12, 0, 0), 30, utc(2024, 2, 29, 12, 0, 0)),
            (utc(2024, 5, 31, 0, 0, 0), 30, utc(2026, 11, 30, 0, 0, 0)),
            (utc(2024, 11, 30, 8, 0, 0), 2, utc(2025, 1, 30, 8, 0, 0)),
            (utc(2024, 3, 1, 0, 0, 0), 0, utc(2024, 3, 1, 0, 0, 0)),
        ];
        for (from, months, want) in cases {
            assert_eq!(add_months(from, months), Some(want), "{from:?} + {months}");
        }
    }

    #[test]
    fn every_event_kind_round_trips_through_its_columns() {
        let mut kinds: Vec<EventKind> = MessageKind::ALL
            .into_iter()
            .map(EventKind::Issued)
            .collect();
        kinds.extend([
            EventKind::Quarantined,
            EventKind::RejectedInSmtp,
            EventKind::Purged,
            EventKind::LogRequest,
            EventKind::LogExtract,
            EventKind::Forwarded,
            EventKind::Discarded,
            EventKind::Filed,
            EventKind::ProviderSuspended,
            EventKind::ProviderResumed,
            EventKind::RemEvidence(EvidenceDirection::Issued),
            EventKind::RemEvidence(EvidenceDirection::Received),
        ]);
        kinds.extend(Ricevuta::ALL.into_iter().map(EventKind::Received));
        for kind in kinds {
            let (label, receipt) = encode_kind(kind);
            assert_eq!(decode_kind(label, receipt), Some(kind), "{kind:?}");
        }
        assert_eq!(decode_kind("Consegna", None), None);
        assert_eq!(decode_kind("Accettazione", Some("breve")), None);
        assert_eq!(decode_kind("Nonsense", None), None);
        assert_eq!(decode_kind("Ricezione", None), None);
        assert_eq!(decode_kind("Ricezione", Some("nonsense")), None);
    }

    #[test]
    fn tracking_states_round_trip() {
        for s in [
            TrackingState::Sent,
            TrackingState::TakenInCharge,
            TrackingState::Delivered,
            TrackingState::Failed,
        ] {
            assert_eq!(parse_state(state_str(s)), Some(s));
        }
    }
}

// SPDX-License-Identifier: GPL-3.0-or-later
//! What our records say of one recipient of a REM dispatch (ETSI EN 319 532-4 Annex D):
//! whether its relay was decided (a RelayAcceptance, RelayRejection or RelayFailure
//! evidence names it) and whether its consignment was (a ContentConsignment or
//! ContentConsignmentFailure evidence names it). Read from the evidences the store holds
//! for the dispatch ([`crate::store::Store::evidences_for`]), issued by us or received
//! from the peer (received ones are stored only once verified and correlated with our
//! dispatch, by the reception point): the timers ask it before RB22 / RD03, the reception
//! point before taking a peer's outcome (the first one stands, a second is a replay).

use super::codes::Event;
use super::evidence::Evidence;
use crate::store::StoredEvidence;

/// The recipients an evidence is about: those `RelayEvidenceRefersTo` names (relay
/// evidences; an empty list names them all), else the one `RecipientReferredTo` names,
/// else its only recipient; empty when it names none of them.
pub fn named_recipients(ev: &Evidence) -> Vec<String> {
    let at = |n: u32| -> Option<String> {
        let u = ev.recipients.get((n as usize).checked_sub(1)?)?;
        u.identifier.as_ref().map(|i| i.value.clone())
    };
    if let Some(r) = &ev.relay_info {
        if r.refers_to.is_empty() {
            return ev
                .recipients
                .iter()
                .filter_map(|u| u.identifier.as_ref().map(|i| i.value.clone()))
                .collect();
        }
        return r.refers_to.iter().filter_map(|&n| at(n)).collect();
    }
    if let Some(n) = ev.refers_to_recipient {
        return at(n).into_iter().collect();
    }
    match ev.recipients.as_slice() {
        [only] => only.identifier.iter().map(|i| i.value.clone()).collect(),
        _ => Vec::new(),
    }
}

/// One decided step of a recipient: the event and the evidence that states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub event: Event,
    pub evidence_id: String,
}

/// What the evidences of a dispatch say of one recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecipientOutcome {
    /// The first RelayAcceptance, RelayRejection or RelayFailure naming it.
    pub relay: Option<Decided>,
    /// The first ContentConsignment or ContentConsignmentFailure naming it.
    pub consignment: Option<Decided>,
}

/// Whether `event` decides the relay of the recipients it names.
pub fn is_relay_outcome(event: Event) -> bool {
    matches!(
        event,
        Event::RelayAcceptance | Event::RelayRejection | Event::RelayFailure
    )
}

/// Whether `event` decides the consignment of the recipient it names.
pub fn is_consignment_outcome(event: Event) -> bool {
    matches!(
        event,
        Event::ContentConsignment | Event::ContentConsignmentFailure
    )
}

/// What `evidences` (of one dispatch, in the order recorded) say of `recipient`
/// (compared case-insensitively). An evidence whose XML cannot be read says nothing.
pub fn of(evidences: &[StoredEvidence], recipient: &str) -> RecipientOutcome {
    let mut out = RecipientOutcome::default();
    for s in evidences {
        let Some(event) = Event::from_uri(&s.evidence.event) else {
            continue;
        };
        let slot = if is_relay_outcome(event) {
            &mut out.relay
        } else if is_consignment_outcome(event) {
            &mut out.consignment
        } else {
            continue;
        };
        if slot.is_some() {
            continue;
        }
        let names = match &s.evidence.recipient {
            Some(r) => vec![r.clone()],
            None => match Evidence::parse(&s.evidence.xml) {
                Ok(ev) => named_recipients(&ev),
                Err(_) => continue,
            },
        };
        if names.iter().any(|n| n.eq_ignore_ascii_case(recipient)) {
            *slot = Some(Decided {
                event,
                evidence_id: s.evidence.id.clone(),
            });
        }
    }
    out
}

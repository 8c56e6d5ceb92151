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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::time::Instant;
    use crate::rem::codes::Reason;
    use crate::rem::issue::{evidence, relay_evidence, EvidenceInput, RelayInput};
    use crate::store::{Evidence as Row, EvidenceDirection};

    fn dispatch() -> Evidence {
        evidence(
            &EvidenceInput {
                event: Event::SubmissionAcceptance,
                reason: Reason::by_code("RA01").unwrap(),
                message_id: "opec1.x@pec.example.it".into(),
                event_time: Instant::from_unix(1_700_000_000),
                submission_time: Some(Instant::from_unix(1_700_000_000)),
                sender: "alice@pec.example.it".into(),
                identity: None,
                authentication: None,
                recipients: vec!["dan@pec.example.net".into(), "eve@pec.example.net".into()],
                refers_to_recipient: None,
                ua_message_id: None,
                digest: Some("ZGlnZXN0".into()),
                subject: "s".into(),
                policies: vec!["p".into()],
                provider: "P".into(),
            },
            "ev-0",
        )
    }

    fn relay(event: Event, code: &str, refers_to: Vec<u32>, id: &str) -> Evidence {
        relay_evidence(
            &RelayInput {
                about: dispatch(),
                event,
                reason: Reason::by_code(code).unwrap(),
                refers_to,
                event_time: Instant::from_unix(1_700_000_100),
                policies: vec!["p".into()],
                provider: "Peer".into(),
            },
            id,
        )
    }

    /// The store's row of `ev` (recipient column as the reception point fills it).
    fn row(ev: &Evidence) -> StoredEvidence {
        let named = named_recipients(ev);
        StoredEvidence {
            evidence: Row {
                id: ev.evidence_id.clone(),
                message_id: "opec1.x@pec.example.it".into(),
                event: ev.event.uri(),
                reason: None,
                recipient: match named.as_slice() {
                    [one] => Some(one.clone()),
                    _ => None,
                },
                issuer: "Peer".into(),
                at: Instant::from_unix(1_700_000_100),
                direction: EvidenceDirection::Received,
                xml: ev.to_xml(),
            },
            sha256: Vec::new(),
            event_id: 1,
        }
    }

    #[test]
    fn relay_evidences_name_their_recipients_and_an_empty_list_names_all() {
        let one = relay(Event::RelayAcceptance, "RB01", vec![2], "ev-1");
        assert_eq!(named_recipients(&one), vec!["eve@pec.example.net"]);
        let all = relay(Event::RelayAcceptance, "RB01", Vec::new(), "ev-2");
        assert_eq!(
            named_recipients(&all),
            vec!["dan@pec.example.net", "eve@pec.example.net"]
        );
        // Read back from the XML (a relay evidence about both has no recipient column).
        let rows = vec![row(&all)];
        assert_eq!(rows[0].evidence.recipient, None);
        for r in ["dan@pec.example.net", "EVE@pec.example.net"] {
            let o = of(&rows, r);
            assert_eq!(
                o.relay.map(|d| d.event),
                Some(Event::RelayAcceptance),
                "{r}"
            );
            assert_eq!(o.consignment, None);
        }
        assert_eq!(
            of(&rows, "bob@pec.example.net"),
            RecipientOutcome::default()
        );
    }

    #[test]
    fn the_first_outcome_of_a_recipient_stands() {
        let mut cc = relay(Event::ContentConsignment, "RD01", Vec::new(), "ev-3");
        cc.relay_info = None;
        cc.refers_to_recipient = Some(1);
        let mut cf = relay(Event::ContentConsignmentFailure, "RD04", Vec::new(), "ev-4");
        cf.relay_info = None;
        cf.refers_to_recipient = Some(1);
        let rejected = relay(Event::RelayRejection, "RB21", vec![2], "ev-5");
        let rows = vec![row(&dispatch()), row(&cc), row(&cf), row(&rejected)];
        assert_eq!(
            rows[1].evidence.recipient.as_deref(),
            Some("dan@pec.example.net")
        );
        let dan = of(&rows, "dan@pec.example.net");
        assert_eq!(dan.relay, None);
        assert_eq!(
            dan.consignment,
            Some(Decided {
                event: Event::ContentConsignment,
                evidence_id: "ev-3".into()
            })
        );
        let eve = of(&rows, "eve@pec.example.net");
        assert_eq!(eve.relay.map(|d| d.event), Some(Event::RelayRejection));
        assert_eq!(eve.consignment, None);
    }
}

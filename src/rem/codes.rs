// SPDX-License-Identifier: GPL-3.0-or-later
//! The ERDS events and the reasons that explain them: their URIs, the REM baseline "details
//! code" (RA01 …) and the texts the evidence and the introduction of a REM receipt carry.
//!
//! Sources: ETSI EN 319 522-1 table 1 and EN 319 522-3 §5.2.2.3 (events and their URIs),
//! EN 319 522-2 tables 7–12 (reasons, English wording), EN 319 532-4 table C.28 (REM
//! baseline: the reasons used, RB21, RB22 and RD21 added), AgID REM-Policy-IT 1.2 (RA51,
//! RF51; the Italian introduction texts of its `Intra-REM-flow` examples).

use std::fmt;

const EVENT_BASE: &str = "http://uri.etsi.org/19522/Event/";
const REASON_BASE: &str = "http://uri.etsi.org/19522/EventReason/";

/// An ERDS event (EN 319 522-1 table 1): what an evidence attests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A.1: the sender's provider accepted the submission (≈ PEC ricevuta di accettazione).
    SubmissionAcceptance,
    /// A.2: the sender's provider refused the submission (≈ avviso di non accettazione).
    SubmissionRejection,
    /// B.1: the recipient's provider took the message in charge (≈ presa in carico).
    RelayAcceptance,
    /// B.2: the recipient's provider refused the relayed message.
    RelayRejection,
    /// B.3: the message could not be relayed (or no answer came in time).
    RelayFailure,
    /// C.1 (not used by the REM baseline).
    NotificationForAcceptance,
    /// C.2 (not used by the REM baseline).
    NotificationForAcceptanceFailure,
    /// C.3 (not used by the REM baseline).
    ConsignmentAcceptance,
    /// C.4 (not used by the REM baseline).
    ConsignmentRejection,
    /// C.5 (not used by the REM baseline).
    AcceptanceRejectionExpiry,
    /// D.1: the message reached the recipient's mailbox (≈ ricevuta di avvenuta consegna).
    ContentConsignment,
    /// D.2: it did not (≈ avviso di mancata consegna).
    ContentConsignmentFailure,
    /// D.3 (not used by the REM baseline).
    ConsignmentNotification,
    /// D.4 (not used by the REM baseline).
    ConsignmentNotificationFailure,
    /// E.1 (not used by the REM baseline).
    ContentHandover,
    /// E.2 (not used by the REM baseline).
    ContentHandoverFailure,
    /// F.1: relayed to a system outside the ERDS (plain email).
    RelayToNonERDS,
    /// F.2: the relay to a system outside the ERDS failed.
    RelayToNonERDSFailure,
    /// F.3: received from a system outside the ERDS.
    ReceivedFromNonERDS,
}

impl Event {
    /// Every event of EN 319 522-3, in the order of its table.
    pub const ALL: [Event; 19] = [
        Event::SubmissionAcceptance,
        Event::SubmissionRejection,
        Event::RelayAcceptance,
        Event::RelayRejection,
        Event::RelayFailure,
        Event::NotificationForAcceptance,
        Event::NotificationForAcceptanceFailure,
        Event::ConsignmentAcceptance,
        Event::ConsignmentRejection,
        Event::AcceptanceRejectionExpiry,
        Event::ContentConsignment,
        Event::ContentConsignmentFailure,
        Event::ConsignmentNotification,
        Event::ConsignmentNotificationFailure,
        Event::ContentHandover,
        Event::ContentHandoverFailure,
        Event::RelayToNonERDS,
        Event::RelayToNonERDSFailure,
        Event::ReceivedFromNonERDS,
    ];

    /// The events the REM baseline (EN 319 532-4) issues evidence for.
    pub const REM_BASELINE: [Event; 10] = [
        Event::SubmissionAcceptance,
        Event::SubmissionRejection,
        Event::RelayAcceptance,
        Event::RelayRejection,
        Event::RelayFailure,
        Event::ContentConsignment,
        Event::ContentConsignmentFailure,
        Event::RelayToNonERDS,
        Event::RelayToNonERDSFailure,
        Event::ReceivedFromNonERDS,
    ];

    /// The name, as in the URI and in the `REM-EventIdentifier` header's last segment.
    pub fn name(self) -> &'static str {
        match self {
            Event::SubmissionAcceptance => "SubmissionAcceptance",
            Event::SubmissionRejection => "SubmissionRejection",
            Event::RelayAcceptance => "RelayAcceptance",
            Event::RelayRejection => "RelayRejection",
            Event::RelayFailure => "RelayFailure",
            Event::NotificationForAcceptance => "NotificationForAcceptance",
            Event::NotificationForAcceptanceFailure => "NotificationForAcceptanceFailure",
            Event::ConsignmentAcceptance => "ConsignmentAcceptance",
            Event::ConsignmentRejection => "ConsignmentRejection",
            Event::AcceptanceRejectionExpiry => "AcceptanceRejectionExpiry",
            Event::ContentConsignment => "ContentConsignment",
            Event::ContentConsignmentFailure => "ContentConsignmentFailure",
            Event::ConsignmentNotification => "ConsignmentNotification",
            Event::ConsignmentNotificationFailure => "ConsignmentNotificationFailure",
            Event::ContentHandover => "ContentHandover",
            Event::ContentHandoverFailure => "ContentHandoverFailure",
            Event::RelayToNonERDS => "RelayToNonERDS",
            Event::RelayToNonERDSFailure => "RelayToNonERDSFailure",
            Event::ReceivedFromNonERDS => "ReceivedFromNonERDS",
        }
    }

    /// `http://uri.etsi.org/19522/Event/<name>`.
    pub fn uri(self) -> String {
        format!("{EVENT_BASE}{}", self.name())
    }

    /// The event a URI names, exactly (no case folding: URIs are compared as strings).
    pub fn from_uri(uri: &str) -> Option<Event> {
        Event::from_name(uri.strip_prefix(EVENT_BASE)?)
    }

    pub fn from_name(name: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The reasons that may explain this event (REM baseline and AgID policy).
    pub fn reasons(self) -> impl Iterator<Item = &'static Reason> {
        REASONS.iter().filter(move |r| r.events.contains(&self))
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One reason of the REM baseline or of the AgID policy.
#[derive(Debug, PartialEq, Eq)]
pub struct Reason {
    /// The "details code", written as the first `Details` of the `EventReason`: `RA01`.
    pub code: &'static str,
    /// The last segment of the reason URI (`MessageAccepted`).
    pub name: &'static str,
    /// The events this reason may explain.
    pub events: &'static [Event],
    /// The English "reason details" of EN 319 522-2 / EN 319 532-4 table C.28, the second
    /// `Details` of the `EventReason` (as the AgID examples write it).
    pub details: &'static str,
    /// How the introduction of an AgID receipt says it, in Italian ("a causa di …").
    pub intro_it: &'static str,
    /// The same in English.
    pub intro_en: &'static str,
}

impl Reason {
    /// `http://uri.etsi.org/19522/EventReason/<name>`.
    pub fn uri(&self) -> String {
        format!("{REASON_BASE}{}", self.name)
    }

    pub fn allowed_with(&self, event: Event) -> bool {
        self.events.contains(&event)
    }

    /// The reason of a details code (`RB21`), exactly.
    pub fn by_code(code: &str) -> Option<&'static Reason> {
        REASONS.iter().find(|r| r.code == code)
    }

    /// The first reason whose URI is `uri`. RA51 and RF51 share one URI: use
    /// [`Reason::by_uri_for`] when the event is known.
    pub fn by_uri(uri: &str) -> Option<&'static Reason> {
        let name = uri.strip_prefix(REASON_BASE)?;
        REASONS.iter().find(|r| r.name == name)
    }

    /// The reason with this URI that may explain `event`.
    pub fn by_uri_for(event: Event, uri: &str) -> Option<&'static Reason> {
        let name = uri.strip_prefix(REASON_BASE)?;
        REASONS
            .iter()
            .find(|r| r.name == name && r.allowed_with(event))
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

use Event::*;

const RELAY_NEGATIVE: &[Event] = &[RelayRejection, RelayFailure];

/// The reasons, in code order. The Italian and English introduction phrases are those of
/// the AgID `Intra-REM-flow` receipts where the kit has one (every code but RA04, RD02 and
/// the RF codes, whose phrases are ours, in the same style).
pub static REASONS: [Reason; 30] = [
    Reason {
        code: "RA01",
        name: "MessageAccepted",
        events: &[SubmissionAcceptance],
        details: "Message accepted",
        intro_it: "è stato accettato dal sistema REM",
        intro_en: "was accepted by the REM system",
    },
    Reason {
        code: "RA02",
        name: "InvalidMessageFormat",
        events: &[SubmissionRejection],
        details: "Invalid message format",
        intro_it: "a causa di un formato non valido",
        intro_en: "due to an invalid format",
    },
    Reason {
        code: "RA03",
        name: "MalwareFound",
        events: &[SubmissionRejection],
        details: "Malware found in ERD original message",
        intro_it: "a causa di presenza malware",
        intro_en: "due to the presence of malware",
    },
    Reason {
        code: "RA04",
        name: "SenderSigningCertExpiredOrRevoked",
        events: &[SubmissionRejection],
        details: "Sender's signing certificate expired or revoked",
        intro_it: "a causa del certificato di firma del mittente scaduto o revocato",
        intro_en: "due to the sender's signing certificate expired or revoked",
    },
    Reason {
        code: "RA05",
        name: "S_ERDS_PolicyViolation",
        events: &[SubmissionRejection],
        details: "Sender's ERDS provider's policy violation, e.g.: max message size exceeded, invalid attachment formats, etc.",
        intro_it: "a causa di violazione della policy",
        intro_en: "due to the policy violation",
    },
    Reason {
        code: "RA51",
        name: "S_ERDS_Malfunction",
        events: &[SubmissionRejection],
        details: "Sender's ERDSP malfunction",
        intro_it: "a causa di un malfunzionamento generale",
        intro_en: "due to a general malfunction",
    },
    Reason {
        code: "RB01",
        name: "S_ERDS_MessageSuccessfullyRelayed",
        events: &[RelayAcceptance],
        details: "ERD message successfully relayed to the Recipient's ERDSP",
        intro_it: "è stato preso in carico dal REM service ricevente per il/gli utente/i di sua competenza",
        intro_en: "was accepted by the recipient REM service for the user(s) of its competence",
    },
    Reason {
        code: "RB02",
        name: "R_ERDS_MessageRejected",
        events: RELAY_NEGATIVE,
        details: "ERD message successfully relayed to, but rejected by, the Recipient's ERDSP for: Invalid message format",
        intro_it: "a causa del formato non valido",
        intro_en: "due to the invalid format",
    },
    Reason {
        code: "RB03",
        name: "R_ERDS_MessageRejectedForMalware",
        events: RELAY_NEGATIVE,
        details: "ERD message successfully relayed to, but rejected by, the Recipient's ERDSP for: Malware found in ERD message",
        intro_it: "per Malware",
        intro_en: "due to Malware",
    },
    Reason {
        code: "RB04",
        name: "R_ERDS_MessageRejectedForInvalidSignature",
        events: RELAY_NEGATIVE,
        details: "ERD message successfully relayed to, but rejected by, the Recipient's ERDSP for: Invalid ERDS signature format or signature policy violation",
        intro_it: "per firma digitale non valida",
        intro_en: "due to invalid digital signature",
    },
    Reason {
        code: "RB05",
        name: "R_ERDS_MessageRejectedForInvalidCertificate",
        events: RELAY_NEGATIVE,
        details: "ERD message successfully relayed to, but rejected by, the Recipient's ERDSP for: ERDS signing certificate in the signature of ERD message or ERDS evidence expired or revoked",
        intro_it: "per certificato digitale non valido",
        intro_en: "due to invalid digital certificate",
    },
    Reason {
        code: "RB06",
        name: "R_ERDS_PolicyViolation",
        events: RELAY_NEGATIVE,
        details: "ERD message successfully relayed to, but rejected by, the Recipient's ERDSP for: Recipient's ERDSP policy or ERDSP policy violation, e.g.: max message size exceeded, invalid attachment formats, relaying ERDSP not accepted",
        intro_it: "per violazione della policy",
        intro_en: "due to policy violation",
    },
    Reason {
        code: "RB07",
        name: "R_ERDS_Malfunction",
        events: &[RelayFailure],
        details: "ERD message not relayed to the Recipient's ERDSP for: Recipient's ERDSP malfunction",
        intro_it: "per un malfunzionamento generale",
        intro_en: "due to a general malfunction",
    },
    Reason {
        code: "RB08",
        name: "R_ERDS_NotIdentified",
        events: &[RelayFailure],
        details: "ERD message not relayed to the Recipient's ERDSP for: Recipient's ERDSP not identified in the Internet",
        intro_it: "perché non identificabile",
        intro_en: "because it is not identifiable",
    },
    Reason {
        code: "RB09",
        name: "R_ERDS_Unreachable",
        events: &[RelayFailure],
        details: "ERD message not relayed to the Recipient's ERDSP for: Recipient's ERDSP unreachable",
        intro_it: "perché non raggiungibile",
        intro_en: "because it is unreachable",
    },
    Reason {
        code: "RB10",
        name: "UnknownRecipient",
        events: &[RelayFailure],
        details: "ERD message not relayed to the Recipient's ERDSP for: Unknown Recipient",
        intro_it: "per destinatario sconosciuto",
        intro_en: "for unknown recipient",
    },
    Reason {
        code: "RB21",
        name: "MessageNotAcceptedForUnregisteredRecipient",
        events: RELAY_NEGATIVE,
        details: "ERD message successfully relayed to, but rejected by, the Recipient's ERDSP for: Unregistered recipient to Recipient's ERDSP",
        intro_it: "per utente destinatario non registrato presso il REM service provider",
        intro_en: "due to unregistered recipient to the REM service provider",
    },
    Reason {
        code: "RB22",
        name: "S_ERDSP_ReceivedNoRelayAcceptanceInfoFromR_ERDSP",
        events: &[RelayFailure],
        details: "The sender's ERDSP received within a given period no information on relay acceptance from the recipient's ERDSP",
        intro_it: "non ha prodotto nei tempi previsti le informazioni di evidenza di inoltro",
        intro_en: "was not produced in the required time the evidence of relay",
    },
    Reason {
        code: "RD01",
        name: "MessageConsignedToRecipient",
        events: &[ContentConsignment],
        details: "Message successfully consigned to the recipient",
        intro_it: "è stato consegnato nella mailbox del destinatario",
        intro_en: "was consigned in the recipient's mailbox",
    },
    Reason {
        code: "RD02",
        name: "MessageConsignedToDelegate",
        events: &[ContentConsignment],
        details: "Message successfully consigned to a recipient's delegate",
        intro_it: "è stato consegnato nella mailbox del delegato del destinatario",
        intro_en: "was consigned in the mailbox of the recipient's delegate",
    },
    Reason {
        code: "RD03",
        name: "S_ERDSP_ReceivedNoDeliveryInfoFromR_ERDSP",
        events: &[ContentConsignmentFailure],
        details: "The sender's ERDSP received within a given period no information on consignment from the recipient's ERDSP",
        intro_it: "non ha prodotto nei tempi previsti le informazioni di evidenza di consegna",
        intro_en: "was not produced in the required time the evidence of consignment",
    },
    Reason {
        code: "RD04",
        name: "MessageNotConsignedForQuota",
        events: &[ContentConsignmentFailure],
        details: "Not consigned for excessing recipient quota",
        intro_it: "a causa di mancanza di spazio in casella",
        intro_en: "due to quota issues on the mailbox",
    },
    Reason {
        code: "RD05",
        name: "MessageNotConsignedForMalfunction",
        events: &[ContentConsignmentFailure],
        details: "Not consigned for technical malfunction",
        intro_it: "a causa di un malfunzionamento generale",
        intro_en: "due to a general malfunction",
    },
    Reason {
        code: "RD06",
        name: "MessageNotConsignedForUnallowedType",
        events: &[ContentConsignmentFailure],
        details: "Not consigned for message type not accepted by recipient",
        intro_it: "a causa di un tipo messaggio non ammesso",
        intro_en: "due to message type not allowed",
    },
    Reason {
        code: "RD21",
        name: "MessageNotConsignedForUnregisteredRecipient",
        events: &[ContentConsignmentFailure],
        details: "ERD message not consigned for: Unregistered recipient to Recipient's ERDSP",
        intro_it: "per destinatario non registrato",
        intro_en: "due to unregistered recipient",
    },
    Reason {
        code: "RF01",
        name: "MessageRelayedToNonERDS",
        events: &[RelayToNonERDS],
        details: "Successful relay to non ERDS",
        intro_it: "è stato inoltrato a un sistema di posta non REM",
        intro_en: "was relayed to a non-REM mail system",
    },
    Reason {
        code: "RF02",
        name: "ExternalSystemUnreachable",
        events: &[RelayToNonERDSFailure],
        details: "External system unreachable",
        intro_it: "perché il sistema esterno non è raggiungibile",
        intro_en: "because the external system is unreachable",
    },
    Reason {
        code: "RF03",
        name: "MessageRejectedByExternalSystem",
        events: &[RelayToNonERDSFailure],
        details: "External system rejected submission",
        intro_it: "perché il sistema esterno lo ha rifiutato",
        intro_en: "because the external system rejected it",
    },
    Reason {
        code: "RF04",
        name: "MessageReceivedFromNonERDS",
        events: &[ReceivedFromNonERDS],
        details: "Received from non ERDS",
        intro_it: "è stato ricevuto da un sistema di posta non REM",
        intro_en: "was received from a non-REM mail system",
    },
    // AgID policy: the sender's provider's own malfunction when relaying outside the ERDS,
    // the counterpart of RA51. The kit has no RF51 example: URI and wording follow RA51.
    Reason {
        code: "RF51",
        name: "S_ERDS_Malfunction",
        events: &[RelayToNonERDSFailure],
        details: "Sender's ERDSP malfunction",
        intro_it: "a causa di un malfunzionamento generale",
        intro_en: "due to a general malfunction",
    },
];

/// The ContentConsignmentFailure reason of a mailbox server's permanent refusal, by its
/// enhanced status code (`None`: the reply carried none): quota or a message larger than
/// the mailbox takes → RD04; unknown, invalid or disabled mailbox (retired, suspended) →
/// RD21 (not a recipient that can be consigned to here); a content the mailbox refuses
/// (media, security) → RD06; anything else → RD05 (technical malfunction).
pub fn consignment_failure(enhanced: Option<&str>) -> &'static str {
    let code = enhanced.unwrap_or("");
    match code {
        "5.2.2" | "5.2.3" | "5.3.4" => "RD04",
        "5.2.1" => "RD21",
        c if c.starts_with("5.1.") => "RD21",
        c if c.starts_with("5.6.") || c.starts_with("5.7.") => "RD06",
        _ => "RD05",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mailbox_refusal_maps_to_its_consignment_failure_reason() {
        for (code, want) in [
            (Some("5.2.2"), "RD04"),
            (Some("5.2.3"), "RD04"),
            (Some("5.1.1"), "RD21"),
            (Some("5.2.1"), "RD21"),
            (Some("5.6.0"), "RD06"),
            (Some("5.3.0"), "RD05"),
            (None, "RD05"),
        ] {
            let got = consignment_failure(code);
            assert_eq!(got, want, "{code:?}");
            assert!(Reason::by_code(got)
                .unwrap()
                .allowed_with(Event::ContentConsignmentFailure));
        }
    }

    #[test]
    fn events_round_trip_through_their_uris() {
        for e in Event::ALL {
            assert_eq!(Event::from_uri(&e.uri()), Some(e));
            assert_eq!(e.to_string(), e.name());
        }
        assert_eq!(
            Event::SubmissionAcceptance.uri(),
            "http://uri.etsi.org/19522/Event/SubmissionAcceptance"
        );
        assert_eq!(
            Event::from_uri("http://uri.etsi.org/19522/Event/Nope"),
            None
        );
        assert_eq!(Event::from_uri("SubmissionAcceptance"), None);
    }

    #[test]
    fn the_reason_table_is_consistent() {
        let codes = [
            "RA01", "RA02", "RA03", "RA04", "RA05", "RA51", "RB01", "RB02", "RB03", "RB04", "RB05",
            "RB06", "RB07", "RB08", "RB09", "RB10", "RB21", "RB22", "RD01", "RD02", "RD03", "RD04",
            "RD05", "RD06", "RD21", "RF01", "RF02", "RF03", "RF04", "RF51",
        ];
        assert_eq!(REASONS.iter().map(|r| r.code).collect::<Vec<_>>(), codes);
        for r in &REASONS {
            assert_eq!(Reason::by_code(r.code), Some(r));
            assert!(!r.events.is_empty(), "{r}");
            for &e in r.events {
                assert!(Event::REM_BASELINE.contains(&e), "{r} with {e}");
                assert_eq!(Reason::by_uri_for(e, &r.uri()), Some(r));
            }
        }
        // Every baseline event has at least one reason; the others none.
        for e in Event::ALL {
            assert_eq!(
                e.reasons().next().is_some(),
                Event::REM_BASELINE.contains(&e),
                "{e}"
            );
        }
        let ra51 = Reason::by_code("RA51").unwrap();
        assert_eq!(
            ra51.uri(),
            "http://uri.etsi.org/19522/EventReason/S_ERDS_Malfunction"
        );
        assert_eq!(Reason::by_uri(&ra51.uri()).unwrap().code, "RA51");
        assert_eq!(
            Reason::by_uri_for(Event::RelayToNonERDSFailure, &ra51.uri())
                .unwrap()
                .code,
            "RF51"
        );
        assert!(Reason::by_code("RB02")
            .unwrap()
            .allowed_with(Event::RelayFailure));
        assert!(!Reason::by_code("RB07")
            .unwrap()
            .allowed_with(Event::RelayRejection));
        assert_eq!(Reason::by_code("rb02"), None);
    }
}

// SPDX-License-Identifier: GPL-3.0-or-later
//! The one place an evidence we issue is made (issue 20): from OUR records only (the
//! submission we accepted or refused, the sender identity the operator proofed, the
//! authentication our SMTP session saw) an [`Evidence`] is built, written, signed XAdES-B-B
//! with the PEC signing key of the issuing kit and stamped to B-T by the evidence TSA
//! (`[rem] evidence_tsa_*`, else `[log]`'s). A TSA failure is an error: the caller fails
//! temporarily (milter tempfail, filter 4xx), it never hands out an unstamped evidence.
//!
//! The evidence is stored by the caller in the same store transaction as the message that
//! carries it ([`crate::store::Effect::WithEvidences`], or with the acceptance record):
//! [`Issued::stored`] gives the store's row and its legal-log record.

use std::sync::Arc;

use thiserror::Error;

use super::codes::{Event, Reason};
use super::evidence::{
    AssuranceLevels, EventReason, Evidence, GeneralEvidenceInfo, PartInfo, SamlAttribute,
    UserContentInfo, UserDetails, NAME_FORMAT_URI, NS_ELP, NS_ENP, VERSION,
};
use super::xades::{self, XadesError};
use crate::crypto::tsa::TsaSettings;
use crate::crypto::Signer;
use crate::issuing::{blocking, IssueError, Issuing};
use crate::message::ids::rem_id;
use crate::message::kind::RecipientType;
use crate::message::time::Instant;
use crate::store::{EvidenceDirection, LogEvent, SenderIdentity};

#[derive(Debug, Error)]
pub enum RemIssueError {
    /// Signing or time-stamping failed (the TSA down, slow, or answering something else).
    #[error("evidence signature: {0}")]
    Sign(#[from] XadesError),
    /// No evidence TSA is configured (`[rem] evidence_tsa_url` nor `[log] tsa_url`).
    #[error("evidence signature: no time-stamping service configured")]
    NoTsa,
    #[error(transparent)]
    Task(#[from] IssueError),
}

/// The authentication of the sender's session, as the access point saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    pub at: Instant,
    /// The method (e.g. `SMTP AUTH`).
    pub method: String,
}

/// Everything an evidence we issue states, from our own records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceInput {
    pub event: Event,
    pub reason: &'static Reason,
    /// The REM message identifier (our PEC msgid of the submission), without brackets.
    pub message_id: String,
    /// The event's instant.
    pub event_time: Instant,
    /// When the message was submitted.
    pub submission_time: Option<Instant>,
    /// The sender's address, and its identity record when one is set.
    pub sender: String,
    pub identity: Option<SenderIdentity>,
    pub authentication: Option<Authentication>,
    /// Every recipient, in order.
    pub recipients: Vec<String>,
    /// 1-based index of the recipient the evidence is about.
    pub refers_to_recipient: Option<u32>,
    /// The sender client's Message-ID, with brackets (`REM-UAMessageIdentifier`).
    pub ua_message_id: Option<String>,
    /// `REM-DigestValue` of the prepared original, when the evidence is about one.
    pub digest: Option<String>,
    pub subject: String,
    /// `REM-ApplicablePolicy` values: the evidence's `EvidenceIssuerPolicyID`.
    pub policies: Vec<String>,
    /// Our provider name (the issuer's `LegalName`).
    pub provider: String,
}

/// A signed, stamped evidence of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub model: Evidence,
    /// The XAdES-B-T evidence, byte for byte as it travels and is stored.
    pub xml: Vec<u8>,
}

/// The SAML attribute of one identity record attribute: the eIDAS ones in their typed
/// form, any other by name with an untyped value.
fn attribute(a: &crate::store::IdentityAttribute) -> SamlAttribute {
    let friendly = a.name.rsplit('/').next().unwrap_or(&a.name);
    let (np, lp) = (format!("{NS_ENP}/"), format!("{NS_ELP}/"));
    let typed = if a.name.starts_with(&np) {
        match friendly {
            "PersonIdentifier" => Some(SamlAttribute::person_identifier(&a.value)),
            "FamilyName" => Some(SamlAttribute::family_name(&a.value)),
            "FirstName" => Some(SamlAttribute::first_name(&a.value)),
            _ => None,
        }
    } else if a.name.starts_with(&lp) {
        match friendly {
            "LegalName" => Some(SamlAttribute::legal_name(&a.value)),
            "LegalPersonIdentifier" => Some(SamlAttribute::legal_person_identifier(&a.value)),
            _ => None,
        }
    } else {
        None
    };
    typed.unwrap_or_else(|| SamlAttribute {
        name: a.name.clone(),
        friendly_name: Some(friendly.to_string()),
        name_format: Some(NAME_FORMAT_URI.to_string()),
        values: vec![super::evidence::AttributeValue {
            xsi_type: None,
            text: a.value.clone(),
        }],
    })
}

/// The unsigned evidence `input` describes, with identifier `evidence_id`.
pub fn evidence(input: &EvidenceInput, evidence_id: &str) -> Evidence {
    let mut sender = UserDetails::mailto(&input.sender);
    if let Some(identity) = &input.identity {
        sender.identity = identity.attributes.iter().map(attribute).collect();
        if let Some(auth) = &input.authentication {
            sender.assurance = Some(AssuranceLevels {
                level: identity.level.clone(),
                policy_id: identity.policy.clone(),
                authentication_time: auth.at.utc(),
                authentication_method: auth.method.clone(),
            });
        }
    }
    Evidence {
        version: VERSION.to_string(),
        xml_id: None,
        evidence_id: evidence_id.to_string(),
        event: input.event,
        reasons: vec![EventReason::of(input.reason)],
        event_time: input.event_time.utc(),
        issuer_policy_ids: input.policies.clone(),
        issuer: vec![SamlAttribute::legal_name(&input.provider)],
        sender,
        recipients: input
            .recipients
            .iter()
            .map(|r| UserDetails::mailto(r))
            .collect(),
        submission_time: input.submission_time.map(Instant::utc),
        refers_to_recipient: input.refers_to_recipient,
        message_id: Some(input.message_id.clone()),
        user_content: Some(UserContentInfo {
            app_layer_identifier: input.ua_message_id.clone(),
            composing_parts: input.digest.as_ref().map(|_| 1),
            parts: input
                .digest
                .iter()
                .map(|d| PartInfo::original_message(d))
                .collect(),
        }),
        external_system: None,
        external_erds: None,
        general_info: Some(GeneralEvidenceInfo {
            subject: Some(input.subject.clone()),
            untrusted_path_to_recipient: Vec::new(),
        }),
        relay_info: None,
        has_signature: false,
    }
}

/// Writes and signs `model` (B-B with `signer` at `at`, B-T with `tsa`). Blocking: the TSA
/// round trip and, with PKCS#11, the token.
pub fn sign(
    model: Evidence,
    signer: &dyn Signer,
    tsa: &TsaSettings,
    at: Instant,
) -> Result<Issued, RemIssueError> {
    let unsigned = String::from_utf8_lossy(&model.to_xml()).into_owned();
    let signed = xades::sign(&unsigned, signer, at, tsa)?;
    Ok(Issued {
        model,
        xml: signed.into_bytes(),
    })
}

/// Builds, signs and stamps the evidence of `input` on the blocking pool, with a new
/// identifier of our service address ([`rem_id`]).
pub async fn issue(
    kit: &Issuing,
    tsa: Option<&TsaSettings>,
    input: EvidenceInput,
) -> Result<Issued, RemIssueError> {
    let at = input.event_time;
    sign_new(kit, tsa, at, move |id| evidence(&input, id)).await
}

/// A relay evidence we issue (EN 319 532-4 C.4.5.2): about the message of an evidence we
/// judged valid (the dispatch's SubmissionAcceptance, or our own one of the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayInput {
    /// The evidence the new one is about: its message identifier, sender, recipients,
    /// submission time, subject and the digest of the original are copied from it (C.4.5.2
    /// c): the digest method and value "by copy").
    pub about: Evidence,
    pub event: Event,
    pub reason: &'static Reason,
    /// `RelayEvidenceRefersTo`: 1-based positions among `about`'s recipients.
    pub refers_to: Vec<u32>,
    pub event_time: Instant,
    /// `EvidenceIssuerPolicyID` values (`[rem] policies`).
    pub policies: Vec<String>,
    /// Our provider name (the issuer's `LegalName`).
    pub provider: String,
}

/// The unsigned relay evidence `input` describes, with identifier `evidence_id`.
pub fn relay_evidence(input: &RelayInput, evidence_id: &str) -> Evidence {
    let a = &input.about;
    Evidence {
        version: VERSION.to_string(),
        xml_id: None,
        evidence_id: evidence_id.to_string(),
        event: input.event,
        reasons: vec![EventReason::of(input.reason)],
        event_time: input.event_time.utc(),
        issuer_policy_ids: input.policies.clone(),
        issuer: vec![SamlAttribute::legal_name(&input.provider)],
        sender: a.sender.clone(),
        recipients: a.recipients.clone(),
        submission_time: a.submission_time,
        refers_to_recipient: None,
        message_id: a.message_id.clone(),
        user_content: a.user_content.clone(),
        external_system: None,
        external_erds: None,
        general_info: Some(GeneralEvidenceInfo {
            subject: a.general_info.as_ref().and_then(|g| g.subject.clone()),
            untrusted_path_to_recipient: Vec::new(),
        }),
        relay_info: Some(super::evidence::RelayEvidenceInfo {
            refers_to: input.refers_to.clone(),
        }),
        has_signature: false,
    }
}

/// [`issue`] for a relay evidence ([`relay_evidence`]).
pub async fn issue_relay(
    kit: &Issuing,
    tsa: Option<&TsaSettings>,
    input: RelayInput,
) -> Result<Issued, RemIssueError> {
    let at = input.event_time;
    sign_new(kit, tsa, at, move |id| relay_evidence(&input, id)).await
}

/// A consignment evidence we issue (ContentConsignment, ContentConsignmentFailure, EN 319
/// 532-4 C.4.6): about one recipient of a message whose evidence we hold (our
/// RelayAcceptance of a peer's dispatch, or our SubmissionAcceptance of our own). Its
/// message identifier, sender, recipients, submission time, subject and digest are copied
/// from `about`, as for a relay evidence; `EvidenceRefersToRecipient` names the recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsignmentInput {
    pub about: Evidence,
    pub event: Event,
    pub reason: &'static Reason,
    /// 1-based position of the recipient among `about`'s recipients.
    pub recipient: u32,
    pub event_time: Instant,
    pub policies: Vec<String>,
    pub provider: String,
}

/// The unsigned consignment evidence `input` describes, with identifier `evidence_id`.
pub fn consignment_evidence(input: &ConsignmentInput, evidence_id: &str) -> Evidence {
    let mut ev = relay_evidence(
        &RelayInput {
            about: input.about.clone(),
            event: input.event,
            reason: input.reason,
            refers_to: Vec::new(),
            event_time: input.event_time,
            policies: input.policies.clone(),
            provider: input.provider.clone(),
        },
        evidence_id,
    );
    ev.relay_info = None;
    ev.refers_to_recipient = Some(input.recipient);
    ev
}

/// [`issue`] for a consignment evidence ([`consignment_evidence`]).
pub async fn issue_consignment(
    kit: &Issuing,
    tsa: Option<&TsaSettings>,
    input: ConsignmentInput,
) -> Result<Issued, RemIssueError> {
    let at = input.event_time;
    sign_new(kit, tsa, at, move |id| consignment_evidence(&input, id)).await
}

/// Builds the evidence `make` gives for a new identifier, signs and stamps it on the
/// blocking pool.
async fn sign_new<F>(
    kit: &Issuing,
    tsa: Option<&TsaSettings>,
    event_time: Instant,
    make: F,
) -> Result<Issued, RemIssueError>
where
    F: FnOnce(&str) -> Evidence + Send + 'static,
{
    let tsa = tsa.cloned().ok_or(RemIssueError::NoTsa)?;
    let signer: Arc<dyn Signer> = kit.signer.clone();
    let id = rem_id(event_time, &kit.issuer.service_address);
    let at = kit.clock.now();
    blocking(move || sign(make(&id), &*signer, &tsa, at)).await?
}

impl Issued {
    pub fn id(&self) -> &str {
        &self.model.evidence_id
    }

    /// The store's row of this evidence and its legal-log record: `sender`, `recipients`,
    /// `subject` of the message it is about, our `provider`, the Postfix queue id.
    pub fn stored(
        &self,
        sender: &str,
        recipients: Vec<(String, RecipientType)>,
        queue_id: Option<&str>,
    ) -> (crate::store::Evidence, LogEvent) {
        let m = &self.model;
        let recipient = m
            .refers_to_recipient
            .and_then(|i| m.recipients.get((i as usize).checked_sub(1)?))
            .and_then(|r| r.identifier.as_ref())
            .map(|i| i.value.clone());
        let provider = m
            .issuer
            .first()
            .and_then(|a| a.value())
            .unwrap_or_default()
            .to_string();
        let row = crate::store::Evidence {
            id: m.evidence_id.clone(),
            message_id: m.message_id.clone().unwrap_or_default(),
            event: m.event.uri(),
            reason: m.reason().map(|r| r.uri()),
            recipient,
            issuer: provider.clone(),
            at: Instant::from_utc(m.event_time),
            direction: EvidenceDirection::Issued,
            xml: self.xml.clone(),
        };
        let subject = m
            .general_info
            .as_ref()
            .and_then(|g| g.subject.clone())
            .unwrap_or_default();
        let event = row.log_event(sender, recipients, &subject, &provider, queue_id);
        (row, event)
    }
}

/// What a REM receipt says besides its evidence: the other provider it names, the
/// recipient it is about, and the relay date (all `None` for the sender's own receipts).
#[derive(Debug, Clone, Default)]
pub struct Regarding {
    pub other_provider: Option<String>,
    pub recipient: Option<String>,
    pub relay_date: Option<Instant>,
}

/// The REM receipt to the sender of `sub` carrying `issued` (its event, reason `code`),
/// composed and signed by us as `provider_name` at `at`: the one composer of our receipts
/// (access point, reception, delivery point, timers).
pub async fn compose_receipt(
    kit: &Issuing,
    provider_name: &str,
    sub: &super::compose::Submission,
    issued: &Issued,
    code: &'static str,
    regarding: Regarding,
    at: Instant,
) -> Result<super::compose::Composed, String> {
    use super::compose::{Composer, Provider, Receipt};
    let provider = Provider {
        name: provider_name.to_string(),
        service_address: kit.issuer.service_address.clone(),
    };
    let message_id = rem_id(at, &kit.issuer.service_address);
    let (signer, sub, xml, event, evidence_id) = (
        kit.signer.clone(),
        sub.clone(),
        issued.xml.clone(),
        issued.model.event,
        issued.id().to_string(),
    );
    blocking(move || {
        let r = Receipt {
            event,
            code,
            message_id: &message_id,
            evidence_id: &evidence_id,
            to: &sub.from,
            rcpt_to: &sub.sender,
            other_provider: regarding.other_provider.as_deref(),
            recipient: regarding.recipient.as_deref(),
            relay_date: regarding.relay_date,
        };
        Composer {
            provider: &provider,
            signer: &*signer,
        }
        .receipt(&sub, &r, &xml, &[], at)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::IdentityAttribute;

    fn input() -> EvidenceInput {
        EvidenceInput {
            event: Event::SubmissionAcceptance,
            reason: Reason::by_code("RA01").unwrap(),
            message_id: "opec1.x@pec.example.it".into(),
            event_time: Instant::from_unix(1_700_000_000),
            submission_time: Some(Instant::from_unix(1_700_000_000)),
            sender: "alice@pec.example.it".into(),
            identity: Some(SenderIdentity {
                attributes: vec![
                    IdentityAttribute {
                        name: format!("{NS_ENP}/PersonIdentifier"),
                        value: "IT/IT/RSSMRA80A01H501U".into(),
                    },
                    IdentityAttribute {
                        name: "urn:example:custom".into(),
                        value: "x".into(),
                    },
                ],
                level: "http://eidas.europa.eu/LoA/substantial".into(),
                policy: None,
                proofing: "spid".into(),
                set_at: Instant::from_unix(1),
                set_by: "op".into(),
            }),
            authentication: Some(Authentication {
                at: Instant::from_unix(1_699_999_990),
                method: "SMTP AUTH".into(),
            }),
            recipients: vec!["bob@rem.example.net".into()],
            refers_to_recipient: None,
            ua_message_id: Some("<1@client>".into()),
            digest: Some("AAAA".into()),
            subject: "Contratto".into(),
            policies: vec!["http://uri.etsi.org/19532/v1#/REMbaseline".into()],
            provider: "REM Example".into(),
        }
    }

    #[test]
    fn the_evidence_states_our_records_and_reads_back() {
        let ev = evidence(&input(), "ID.1.rem-service@pec.example.it");
        let back = Evidence::parse(&ev.to_xml()).unwrap();
        assert_eq!(back.evidence_id, "ID.1.rem-service@pec.example.it");
        assert_eq!(back.event, Event::SubmissionAcceptance);
        assert_eq!(back.reason().unwrap().code, "RA01");
        assert_eq!(back.message_id.as_deref(), Some("opec1.x@pec.example.it"));
        assert_eq!(back.issuer[0].value(), Some("REM Example"));
        let sender = &back.sender;
        assert_eq!(
            sender.identity[0],
            SamlAttribute::person_identifier("IT/IT/RSSMRA80A01H501U")
        );
        assert_eq!(sender.identity[1].name, "urn:example:custom");
        assert_eq!(sender.identity[1].value(), Some("x"));
        let a = sender.assurance.as_ref().unwrap();
        assert_eq!(
            a.authentication_time,
            Instant::from_unix(1_699_999_990).utc()
        );
        assert_eq!(a.authentication_method, "SMTP AUTH");
        let parts = &back.user_content.as_ref().unwrap().parts;
        assert_eq!(parts[0].digest_value.as_deref(), Some("AAAA"));
    }

    #[test]
    fn without_identity_or_authentication_none_is_stated() {
        let mut i = input();
        i.authentication = None;
        let ev = evidence(&i, "a");
        assert!(ev.sender.assurance.is_none());
        assert!(!ev.sender.identity.is_empty());
        i.identity = None;
        let ev = evidence(&i, "a");
        assert!(ev.sender.identity.is_empty());
        assert_eq!(
            ev.sender.identifier.as_ref().map(|i| i.value.as_str()),
            Some("alice@pec.example.it")
        );
    }
}

// SPDX-License-Identifier: GPL-3.0-or-later
//! REM messages (ETSI EN 319 532-3 §6 MIME mapping, EN 319 532-4 REM baseline, AgID
//! REM-Policy-IT): is a message REM, what it says, and is it intact.
//!
//! A REM message is an S/MIME `multipart/signed` over a `multipart/mixed` whose parts are
//! tagged by `REM-Section-Type`:
//!
//! * `rem_message/introduction`: `multipart/alternative` of `text/plain` and `text/html`;
//! * `rem_message/original`: the sender's message as `message/rfc822` (dispatch only);
//! * `rem_message/xml_evidence` (one or more): the signed ERDS evidence, kept here as opaque
//!   decoded bytes (`super::evidence` reads and verifies it);
//! * `rem_message/extension` (any number): extensions agreed between providers.
//!
//! The top-level header carries the REM metadata (`REM-MessageType`, `REM-EventIdentifier`,
//! `REM-ReasonIdentifier`, `REM-DigestValue` …). The digest binds a receipt to the original
//! message: base64 of the hash of the original's exact bytes, CRLF line ends, ending with
//! exactly one CRLF (the CRLF before the next delimiter belongs to the delimiter, RFC 2046
//! §5.1.1; EN 319 532-4 C.4.5.1 and the kit's POINTS_OF_ATTENTION). The bytes hashed here
//! are the bytes of the signed entity, never a re-serialisation.
//!
//! Nothing here panics on hostile input: every malformed message is a [`RemError`].

use base64::Engine;
use thiserror::Error;

use super::codes::{Event, Reason};
use crate::crypto::verify::{verify_smime_with, Verified, VerifyOptions, MAX_MESSAGE_BYTES};
use crate::crypto::VerifyError;
use crate::message::mime::{self, clip, Entity, RawField};

/// `REM-MetadataVersion` of EN 319 532-3 V1.2.1, the version the kit and we write.
pub const METADATA_VERSION: &str = "EN31953203V010201";
/// `REM-MessageType` URIs (EN 319 522-3 §4.3.5).
pub const MESSAGE_TYPE_DISPATCH: &str = "http://uri.etsi.org/19522/v1#/ERDMessageType/dispatch";
pub const MESSAGE_TYPE_RECEIPT: &str = "http://uri.etsi.org/19522/v1#/ERDMessageType/receipt";
/// The REM baseline policy (EN 319 532-4), always among the `REM-ApplicablePolicy` values.
pub const POLICY_REM_BASELINE: &str = "http://uri.etsi.org/19532/v1#/REMbaseline";
/// The Italian profile (AgID REM-Policy-IT).
pub const POLICY_AGID: &str = "https://eidas.agid.gov.it/REM/rem-policy-it";
/// `REM-ModeOfConsignment` of the baseline.
pub const CONSIGNMENT_BASIC: &str = "http://uri.etsi.org/19522/v1#/consignment/basic";

/// `REM-Section-Type` values (EN 319 532-3 Tables 5, 8, 9, 10).
pub const SECTION_INTRODUCTION: &str = "rem_message/introduction";
pub const SECTION_ORIGINAL: &str = "rem_message/original";
pub const SECTION_XML_EVIDENCE: &str = "rem_message/xml_evidence";
pub const SECTION_PDF_EVIDENCE: &str = "rem_message/pdf_evidence";
pub const SECTION_EXTENSION: &str = "rem_message/extension";

/// Most `REM-*` header fields read from one message; more is hostile.
const MAX_REM_FIELDS: usize = 256;

/// Why a message is not a readable REM message.
#[derive(Debug, Error)]
pub enum RemError {
    /// No REM metadata at the top level: ordinary mail, a PEC message, an original.
    #[error("not a rem message: {0}")]
    NotRem(String),
    /// A REM header field missing, repeated or unreadable.
    #[error("rem header: {0}")]
    Header(String),
    /// The MIME layout is not the one of EN 319 532-3 §6.2.
    #[error("rem structure: {0}")]
    Structure(String),
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// The S/MIME signature does not verify.
    #[error("rem signature: {0}")]
    Signature(#[from] VerifyError),
    /// The original does not match `REM-DigestValue`.
    #[error("rem digest: {0}")]
    Digest(#[from] DigestError),
}

/// The original message against `REM-DigestValue`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("unsupported digest algorithm \"{0}\"")]
    UnsupportedAlgorithm(String),
    #[error("rem-digestvalue \"{0}\" is not base64 of a digest of the algorithm")]
    BadValue(String),
    /// The classic interoperability bug (kit POINTS_OF_ATTENTION): the digest was computed
    /// over the original without its final CRLF.
    #[error(
        "rem-digestvalue was computed without the original's final crlf (expected \"{expected}\")"
    )]
    FinalCrlfOmitted { expected: String },
    #[error("rem-digestvalue \"{stated}\" does not match the original (\"{actual}\")")]
    Mismatch { stated: String, actual: String },
}

/// Digest algorithms of `REM-DigestAlgorithm` (RFC 6931 URIs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl DigestAlgorithm {
    pub fn uri(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "http://www.w3.org/2001/04/xmlenc#sha256",
            DigestAlgorithm::Sha384 => "http://www.w3.org/2001/04/xmldsig-more#sha384",
            DigestAlgorithm::Sha512 => "http://www.w3.org/2001/04/xmlenc#sha512",
        }
    }

    pub fn from_uri(uri: &str) -> Option<Self> {
        [Self::Sha256, Self::Sha384, Self::Sha512]
            .into_iter()
            .find(|a| a.uri() == uri.trim())
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            DigestAlgorithm::Sha256 => sha2::Sha256::digest(data).to_vec(),
            DigestAlgorithm::Sha384 => sha2::Sha384::digest(data).to_vec(),
            DigestAlgorithm::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    /// `REM-DigestValue` of `data`: base64 of its digest.
    pub fn digest_value(self, data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.digest(data))
    }
}

/// `REM-MessageType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// REM dispatch: the original with the SubmissionAcceptance evidence.
    Dispatch,
    /// REM receipt: evidence for the sender (or the sender's provider), never the original.
    Receipt,
}

impl MessageType {
    pub fn uri(self) -> &'static str {
        match self {
            MessageType::Dispatch => MESSAGE_TYPE_DISPATCH,
            MessageType::Receipt => MESSAGE_TYPE_RECEIPT,
        }
    }
}

/// Every `REM-*` field of the top-level header, as written (unfolded, trimmed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemHeaders {
    /// `REM-MetadataVersion` (MD01).
    pub metadata_version: String,
    /// `REM-RelayDate` (MD02).
    pub relay_date: Option<String>,
    /// `REM-ExpirationDate` (MD03).
    pub expiration_date: Option<String>,
    /// `REM-RecipientAssuranceLevel` (MD04).
    pub recipient_assurance_level: Option<String>,
    /// `REM-ApplicablePolicy` (MD05), one per field, in order.
    pub applicable_policies: Vec<String>,
    /// `REM-ModeOfConsignment` (MD06).
    pub mode_of_consignment: Option<String>,
    /// `REM-ScheduledDelivery` (MD07).
    pub scheduled_delivery: Option<String>,
    /// `REM-MD08`: the sender's identifier (`"Name" <address>` in the kit).
    pub md08: Option<String>,
    /// `REM-MessageType` (MD13).
    pub message_type: String,
    /// `REM-DigestAlgorithm` (MD14).
    pub digest_algorithm: Option<String>,
    /// `REM-DigestValue` (MD14), base64.
    pub digest_value: Option<String>,
    /// `REM-UAMessageIdentifier` (MD11): the Message-ID the sender's client gave.
    pub ua_message_identifier: Option<String>,
    /// `REM-EventIdentifier` (G03).
    pub event_identifier: String,
    /// `REM-Evidence-ID`.
    pub evidence_id: Option<String>,
    /// `REM-ReasonIdentifier`, one per field, in order.
    pub reason_identifiers: Vec<String>,
    /// Any other `REM-*` field (name as written, value), in order.
    pub others: Vec<(String, String)>,
}

/// One body part of the signed `multipart/mixed`, with its header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// `REM-Section-Type`, lower case; `None` when absent.
    pub section_type: Option<String>,
    /// Lower-case `type/subtype`.
    pub mime_type: String,
    /// `filename` of Content-Disposition, else `name` of Content-Type.
    pub name: Option<String>,
    /// Header field names of the part, in order, as written.
    pub field_names: Vec<String>,
    /// The body, transfer-decoded (for the original: its exact bytes).
    pub body: Vec<u8>,
}

/// The readable introduction (`multipart/alternative`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introduction {
    /// Decoded `text/plain` (UTF-8, lossy).
    pub plain: String,
    /// Decoded `text/html` (UTF-8, lossy).
    pub html: String,
}

/// A REM message read from its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemMessage {
    pub rem: RemHeaders,
    pub message_type: MessageType,
    /// The event of `REM-EventIdentifier`.
    pub event: Event,
    /// Top-level `Message-ID`, without angle brackets.
    pub message_id: Option<String>,
    /// Top-level `Subject`, RFC 2047 decoded.
    pub subject: Option<String>,
    /// Top-level `From`, `To`, `Date` as written (unfolded).
    pub from: Option<String>,
    pub to: Option<String>,
    pub date: Option<String>,
    /// Top-level header field names, in order, as written.
    pub field_names: Vec<String>,
    pub introduction: Introduction,
    /// The original message's exact bytes (dispatch only).
    pub original: Option<Vec<u8>>,
    /// Every `rem_message/xml_evidence` part, decoded, in order.
    pub evidences: Vec<Section>,
    /// Every `rem_message/extension` part, in order.
    pub extensions: Vec<Section>,
    /// The parts of the signed `multipart/mixed`, in order (for structural comparison).
    pub sections: Vec<Section>,
}

/// What the message is, for routing and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub message_type: MessageType,
    /// The event of `REM-EventIdentifier` (`SubmissionAcceptance`).
    pub event: Event,
    /// The reason of the first `REM-ReasonIdentifier` that may explain the event (EN 319
    /// 532-4 Table C.28, AgID REM-Policy-IT); `None` when absent or unknown.
    pub reason: Option<&'static Reason>,
    /// Its code (`RA01`, `RB21` …).
    pub code: Option<&'static str>,
    pub with_original: bool,
}

/// Whether the top-level header of `raw` announces a REM message: a `REM-MessageType` or
/// `REM-MetadataVersion` field. Anything nested (a REM message inside an original) does not
/// count.
pub fn is_rem(raw: &[u8]) -> bool {
    let (header, _) = mime::split_header_body(raw);
    mime::scan_fields(header)
        .iter()
        .any(|f| f.is("REM-MessageType") || f.is("REM-MetadataVersion"))
}

/// Reads `raw` as a REM message without checking its signature: the structure of the
/// `multipart/signed` first part, canonicalised to CRLF as a verifier hashes it.
pub fn parse(raw: &[u8]) -> Result<RemMessage, RemError> {
    if raw.len() > MAX_MESSAGE_BYTES {
        return Err(RemError::TooLarge {
            size: raw.len(),
            limit: MAX_MESSAGE_BYTES,
        });
    }
    let (header, body) = mime::split_header_body(raw);
    let fields = mime::scan_fields(header);
    let top = Entity::parse(raw);
    let (rem, message_type, event) = rem_headers(&fields)?;
    if top.mime_type() != "multipart/signed" {
        return Err(RemError::Structure(format!(
            "top-level content type is \"{}\", expected multipart/signed",
            clip(top.mime_type())
        )));
    }
    let boundary = top
        .boundary()
        .filter(|b| mime::valid_boundary(b))
        .ok_or_else(|| RemError::Structure("multipart/signed without a valid boundary".into()))?;
    let mp = mime::split_multipart(body, &boundary)
        .filter(|m| m.is_closed())
        .ok_or_else(|| RemError::Structure("multipart/signed has no closing delimiter".into()))?;
    let [content, _signature] = mp.parts.as_slice() else {
        return Err(RemError::Structure(format!(
            "multipart/signed has {} body parts, expected 2",
            mp.parts.len()
        )));
    };
    let content = mime::canonical_crlf(content);
    read(&fields, rem, message_type, event, &content)
}

/// A REM message whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRem {
    pub verified: Verified,
    pub message: RemMessage,
}

/// Verifies the S/MIME signature of `raw` with `opts` (give it a chain policy with the
/// REM anchors and no provider index: [`VerifyOptions::without_index`] plus
/// [`VerifyOptions::with_chain`], `enforce` set), reads the signed content, and checks the
/// original against `REM-DigestValue` when the message carries one.
///
/// Whose signature it is stays the caller's decision: [`Verified::signer_der`] must be the
/// digital identity of a REM service in the Trusted List (`super::trust`) before anything
/// the message says is believed.
pub fn verify(raw: &[u8], opts: &VerifyOptions<'_>) -> Result<VerifiedRem, RemError> {
    if !is_rem(raw) {
        return Err(RemError::NotRem(
            "no REM-MessageType or REM-MetadataVersion header field".into(),
        ));
    }
    let verified = verify_smime_with(raw, opts)?;
    let (header, _) = mime::split_header_body(raw);
    let fields = mime::scan_fields(header);
    let (rem, message_type, event) = rem_headers(&fields)?;
    let message = read(&fields, rem, message_type, event, &verified.content)?;
    message.check_digest()?;
    Ok(VerifiedRem { verified, message })
}

impl RemMessage {
    /// The digest algorithm named by `REM-DigestAlgorithm`.
    pub fn digest_algorithm(&self) -> Result<DigestAlgorithm, DigestError> {
        let uri = self.rem.digest_algorithm.as_deref().unwrap_or_default();
        DigestAlgorithm::from_uri(uri).ok_or_else(|| DigestError::UnsupportedAlgorithm(clip(uri)))
    }

    /// Checks the carried original against `REM-DigestValue`; without an original there is
    /// nothing to check here (a receipt's digest is checked against the sender's own copy,
    /// [`check_digest_of`]).
    pub fn check_digest(&self) -> Result<(), DigestError> {
        match &self.original {
            Some(original) => check_digest_of(
                self.digest_algorithm()?,
                self.rem.digest_value.as_deref().unwrap_or_default(),
                original,
            ),
            None => Ok(()),
        }
    }

    /// What the message is.
    pub fn classify(&self) -> Classification {
        let reason = self
            .rem
            .reason_identifiers
            .first()
            .and_then(|r| Reason::by_uri_for(self.event, r));
        Classification {
            message_type: self.message_type,
            event: self.event,
            reason,
            code: reason.map(|r| r.code),
            with_original: self.original.is_some(),
        }
    }
}

/// Checks `original` (the exact bytes carried or kept) against `stated`, the base64
/// `REM-DigestValue`, telling the final-CRLF bug apart from any other mismatch.
pub fn check_digest_of(
    alg: DigestAlgorithm,
    stated: &str,
    original: &[u8],
) -> Result<(), DigestError> {
    let stated = stated.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(stated)
        .map_err(|_| DigestError::BadValue(clip(stated)))?;
    let actual = alg.digest(original);
    if decoded.len() != actual.len() {
        return Err(DigestError::BadValue(clip(stated)));
    }
    if decoded == actual {
        return Ok(());
    }
    if let Some(shorter) = original.strip_suffix(b"\r\n") {
        if alg.digest(shorter) == decoded {
            return Err(DigestError::FinalCrlfOmitted {
                expected: alg.digest_value(original),
            });
        }
    }
    Err(DigestError::Mismatch {
        stated: clip(stated),
        actual: alg.digest_value(original),
    })
}

/// Whether `data` ends with exactly one CRLF (not an empty line).
pub fn ends_with_one_crlf(data: &[u8]) -> bool {
    data.ends_with(b"\r\n") && !data.ends_with(b"\r\n\r\n")
}

/// The `REM-*` fields of the top-level header and the message type they announce.
fn rem_headers(fields: &[RawField<'_>]) -> Result<(RemHeaders, MessageType, Event), RemError> {
    if !fields
        .iter()
        .any(|f| f.is("REM-MessageType") || f.is("REM-MetadataVersion"))
    {
        return Err(RemError::NotRem(
            "no REM-MessageType or REM-MetadataVersion header field".into(),
        ));
    }
    let rem_fields: Vec<&RawField<'_>> = fields
        .iter()
        .filter(|f| f.name.len() > 4 && f.name[..4].eq_ignore_ascii_case("REM-"))
        .collect();
    if rem_fields.len() > MAX_REM_FIELDS {
        return Err(RemError::Header(format!(
            "{} REM-* header fields, at most {MAX_REM_FIELDS} accepted",
            rem_fields.len()
        )));
    }
    let mut h = RemHeaders::default();
    let mut seen: Vec<String> = Vec::new();
    for f in rem_fields {
        let value = f.unfolded().trim().to_string();
        let key = f.name.to_ascii_lowercase();
        let repeatable = matches!(
            key.as_str(),
            "rem-applicablepolicy" | "rem-reasonidentifier"
        );
        if !repeatable && seen.contains(&key) {
            return Err(RemError::Header(format!(
                "{} appears more than once",
                f.name
            )));
        }
        seen.push(key.clone());
        match key.as_str() {
            "rem-metadataversion" => h.metadata_version = value,
            "rem-relaydate" => h.relay_date = Some(value),
            "rem-expirationdate" => h.expiration_date = Some(value),
            "rem-recipientassurancelevel" => h.recipient_assurance_level = Some(value),
            "rem-applicablepolicy" => h.applicable_policies.push(value),
            "rem-modeofconsignment" => h.mode_of_consignment = Some(value),
            "rem-scheduleddelivery" => h.scheduled_delivery = Some(value),
            "rem-md08" => h.md08 = Some(value),
            "rem-messagetype" => h.message_type = value,
            "rem-digestalgorithm" => h.digest_algorithm = Some(value),
            "rem-digestvalue" => h.digest_value = Some(value),
            "rem-uamessageidentifier" => h.ua_message_identifier = Some(value),
            "rem-eventidentifier" => h.event_identifier = value,
            "rem-evidence-id" => h.evidence_id = Some(value),
            "rem-reasonidentifier" => h.reason_identifiers.push(value),
            _ => h.others.push((f.name.to_string(), value)),
        }
    }
    if h.metadata_version.is_empty() {
        return Err(RemError::Header("REM-MetadataVersion missing".into()));
    }
    let message_type = match h.message_type.as_str() {
        MESSAGE_TYPE_DISPATCH => MessageType::Dispatch,
        MESSAGE_TYPE_RECEIPT => MessageType::Receipt,
        "" => return Err(RemError::Header("REM-MessageType missing".into())),
        other => {
            return Err(RemError::Header(format!(
                "REM-MessageType \"{}\" is neither dispatch nor receipt",
                clip(other)
            )))
        }
    };
    if h.event_identifier.is_empty() {
        return Err(RemError::Header("REM-EventIdentifier missing".into()));
    }
    let event = Event::from_uri(&h.event_identifier).ok_or_else(|| {
        RemError::Header(format!(
            "REM-EventIdentifier \"{}\" is not an ERDS event URI",
            clip(&h.event_identifier)
        ))
    })?;
    if h.digest_value.is_none() || h.digest_algorithm.is_none() {
        return Err(RemError::Header(
            "REM-DigestAlgorithm and REM-DigestValue are required".into(),
        ));
    }
    if h.applicable_policies.is_empty() {
        return Err(RemError::Header("no REM-ApplicablePolicy".into()));
    }
    Ok((h, message_type, event))
}

/// One part of a multipart entity, with its REM section type.
fn section(raw: &[u8]) -> Result<(Section, Entity<'_>), RemError> {
    let e = Entity::parse(raw);
    let section_type = e
        .value("REM-Section-Type")
        .map(|v| v.trim().to_ascii_lowercase());
    let field_names = e
        .fields
        .iter()
        .filter(|f| !f.name.is_empty())
        .map(|f| f.name.to_string())
        .collect();
    let cte = e.value("content-transfer-encoding");
    let body = if e.is_multipart() {
        Vec::new()
    } else {
        match cte
            .as_deref()
            .map(|c| c.trim().to_ascii_lowercase())
            .as_deref()
        {
            // The original travels "binary": its exact bytes.
            None | Some("binary") | Some("7bit") | Some("8bit") => e.body.to_vec(),
            _ => mime::decode_transfer(e.body, cte.as_deref()).map_err(|err| {
                RemError::Structure(format!(
                    "part \"{}\": {err}",
                    clip(&e.file_name().unwrap_or_default())
                ))
            })?,
        }
    };
    let s = Section {
        section_type,
        mime_type: e.mime_type().to_string(),
        name: e.file_name().map(|n| n.trim().to_string()),
        field_names,
        body,
    };
    Ok((s, e))
}

/// The parts of a multipart entity (closed).
fn children<'a>(e: &Entity<'a>) -> Result<Vec<&'a [u8]>, RemError> {
    let b = e
        .boundary()
        .filter(|b| mime::valid_boundary(b))
        .ok_or_else(|| {
            RemError::Structure(format!("{} without a valid boundary", e.mime_type()))
        })?;
    match mime::split_multipart(e.body, &b) {
        Some(mp) if mp.is_closed() => Ok(mp.parts),
        _ => Err(RemError::Structure(format!(
            "{} has no closing delimiter",
            e.mime_type()
        ))),
    }
}

/// Reads the signed entity `content` (CRLF) of a message whose top-level fields are
/// `fields`.
fn read(
    fields: &[RawField<'_>],
    rem: RemHeaders,
    message_type: MessageType,
    event: Event,
    content: &[u8],
) -> Result<RemMessage, RemError> {
    let mixed = Entity::parse(content);
    if mixed.mime_type() != "multipart/mixed" {
        return Err(RemError::Structure(format!(
            "signed content is \"{}\", expected multipart/mixed",
            clip(mixed.mime_type())
        )));
    }
    let mut introduction: Option<Introduction> = None;
    let mut original: Option<Vec<u8>> = None;
    let mut evidences = Vec::new();
    let mut extensions = Vec::new();
    let mut sections = Vec::new();
    for (i, raw) in children(&mixed)?.into_iter().enumerate() {
        let (s, e) = section(raw)?;
        match s.section_type.as_deref() {
            Some(SECTION_INTRODUCTION) => {
                if introduction.is_some() {
                    return Err(RemError::Structure("more than one introduction".into()));
                }
                if i != 0 {
                    return Err(RemError::Structure(
                        "the introduction is not the first part".into(),
                    ));
                }
                introduction = Some(read_introduction(&e)?);
            }
            Some(SECTION_ORIGINAL) => {
                if original.is_some() {
                    return Err(RemError::Structure("more than one original".into()));
                }
                if s.mime_type != "message/rfc822" {
                    return Err(RemError::Structure(format!(
                        "the original is \"{}\", expected message/rfc822",
                        clip(&s.mime_type)
                    )));
                }
                original = Some(s.body.clone());
            }
            Some(SECTION_XML_EVIDENCE) => {
                if !matches!(s.mime_type.as_str(), "application/xml" | "text/xml") {
                    return Err(RemError::Structure(format!(
                        "xml evidence \"{}\" is \"{}\", expected application/xml",
                        clip(s.name.as_deref().unwrap_or_default()),
                        clip(&s.mime_type)
                    )));
                }
                evidences.push(s.clone());
            }
            Some(SECTION_EXTENSION) | Some(SECTION_PDF_EVIDENCE) => extensions.push(s.clone()),
            Some(other) => {
                return Err(RemError::Structure(format!(
                    "unknown REM-Section-Type \"{}\"",
                    clip(other)
                )))
            }
            None => {
                return Err(RemError::Structure(format!(
                    "part {} (\"{}\") has no REM-Section-Type",
                    i + 1,
                    clip(&s.mime_type)
                )))
            }
        }
        sections.push(s);
    }
    let introduction =
        introduction.ok_or_else(|| RemError::Structure("no introduction part".into()))?;
    if evidences.is_empty() {
        return Err(RemError::Structure("no xml evidence part".into()));
    }
    match (message_type, original.is_some()) {
        (MessageType::Dispatch, false) => {
            return Err(RemError::Structure(
                "a rem dispatch must carry the original message".into(),
            ))
        }
        (MessageType::Receipt, true) => {
            return Err(RemError::Structure(
                "a rem receipt must not carry the original message".into(),
            ))
        }
        _ => {}
    }
    let value = |n: &str| mime::first_value(fields, n).map(|v| v.trim().to_string());
    Ok(RemMessage {
        rem,
        message_type,
        event,
        message_id: value("Message-ID").map(|v| crate::message::ids::unbracketed(&v).to_string()),
        subject: mime::first(fields, "Subject").map(|f| decode_words(f.value)),
        from: value("From"),
        to: value("To"),
        date: value("Date"),
        field_names: fields
            .iter()
            .filter(|f| !f.name.is_empty())
            .map(|f| f.name.to_string())
            .collect(),
        introduction,
        original,
        evidences,
        extensions,
        sections,
    })
}

fn read_introduction(e: &Entity<'_>) -> Result<Introduction, RemError> {
    if e.mime_type() != "multipart/alternative" {
        return Err(RemError::Structure(format!(
            "the introduction is \"{}\", expected multipart/alternative",
            clip(e.mime_type())
        )));
    }
    let parts = children(e)?;
    let mut texts = Vec::new();
    for p in parts {
        let (s, _) = section(p)?;
        texts.push(s);
    }
    match texts.as_slice() {
        [plain, html] if plain.mime_type == "text/plain" && html.mime_type == "text/html" => {
            Ok(Introduction {
                plain: String::from_utf8_lossy(&plain.body).into_owned(),
                html: String::from_utf8_lossy(&html.body).into_owned(),
            })
        }
        other => Err(RemError::Structure(format!(
            "the introduction is multipart/alternative of [{}], expected [text/plain, text/html]",
            other
                .iter()
                .map(|s| s.mime_type.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// An unstructured header value, RFC 2047 words decoded.
fn decode_words(value: &[u8]) -> String {
    let mut line = b"Subject:".to_vec();
    line.extend_from_slice(value);
    line.extend_from_slice(b"\r\n\r\n");
    mail_parser::MessageParser::default()
        .parse_headers(&line)
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_else(|| mime::unfold(value).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_rule_and_the_final_crlf_bug() {
        let alg = DigestAlgorithm::Sha256;
        let original = b"From: a@b\r\n\r\nbody\r\n";
        let good = alg.digest_value(original);
        assert_eq!(check_digest_of(alg, &good, original), Ok(()));
        let bug = alg.digest_value(&original[..original.len() - 2]);
        assert!(matches!(
            check_digest_of(alg, &bug, original),
            Err(DigestError::FinalCrlfOmitted { expected }) if expected == good
        ));
        let other = alg.digest_value(b"x");
        assert!(matches!(
            check_digest_of(alg, &other, original),
            Err(DigestError::Mismatch { .. })
        ));
        assert!(matches!(
            check_digest_of(alg, "not base64!", original),
            Err(DigestError::BadValue(_))
        ));
        assert!(matches!(
            check_digest_of(alg, "AAAA", original),
            Err(DigestError::BadValue(_))
        ));
        assert!(ends_with_one_crlf(original));
        assert!(!ends_with_one_crlf(b"body\r\n\r\n"));
        assert!(!ends_with_one_crlf(b"body"));
        assert_eq!(
            DigestAlgorithm::from_uri("http://www.w3.org/2001/04/xmlenc#sha256"),
            Some(DigestAlgorithm::Sha256)
        );
        assert_eq!(DigestAlgorithm::from_uri("md5"), None);
    }

    #[test]
    fn hostile_inputs_are_defined_errors() {
        let mut inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"\r\n\r\n".to_vec(),
            b"REM-MessageType: x\r\n\r\n".to_vec(),
            b"REM-MetadataVersion: EN31953203V010201\r\nREM-MessageType: http://uri.etsi.org/19522/v1#/ERDMessageType/dispatch\r\n\r\n".to_vec(),
            b"REM-MetadataVersion: v\r\nREM-MetadataVersion: v\r\n\r\n".to_vec(),
        ];
        let head = "REM-MetadataVersion: EN31953203V010201\r\nREM-ApplicablePolicy: p\r\nREM-MessageType: http://uri.etsi.org/19522/v1#/ERDMessageType/receipt\r\nREM-EventIdentifier: http://uri.etsi.org/19522/Event/RelayFailure\r\nREM-DigestAlgorithm: http://www.w3.org/2001/04/xmlenc#sha256\r\nREM-DigestValue: AAAA\r\n";
        for body in [
            "Content-Type: text/plain\r\n\r\nhello\r\n",
            "Content-Type: multipart/signed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n",
            "Content-Type: multipart/signed; boundary=b\r\n\r\n--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\n\r\n--c--\r\n--b\r\n\r\nsig\r\n--b--\r\n",
            "Content-Type: multipart/signed; boundary=b\r\n\r\n--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\nREM-Section-Type: rem_message/introduction\r\nContent-Type: text/plain\r\n\r\nhi\r\n--c--\r\n--b\r\n\r\nsig\r\n--b--\r\n",
            "Content-Type: multipart/signed; boundary=b\r\n\r\n--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\nREM-Section-Type: rem_message/xml_evidence\r\nContent-Type: application/xml\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!\r\n--c--\r\n--b\r\n\r\nsig\r\n--b--\r\n",
        ] {
            inputs.push(format!("{head}{body}").into_bytes());
        }
        for raw in &inputs {
            assert!(parse(raw).is_err(), "{}", String::from_utf8_lossy(raw));
            let opts = VerifyOptions::without_index(crate::message::time::Instant::from_unix(0));
            assert!(verify(raw, &opts).is_err());
        }
        assert!(matches!(
            parse(b"From: a\r\n\r\nx"),
            Err(RemError::NotRem(_))
        ));
        assert!(!is_rem(b"From: a\r\n\r\nREM-MessageType: x\r\n"));
    }
}

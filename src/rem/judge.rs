// SPDX-License-Identifier: GPL-3.0-or-later
//! The one verdict on a REM message or a standalone ERDS evidence: what `pec verify` prints
//! and what the reception point answers (a RelayRejection with the reason of the first
//! failure, [`Verdict::rejection`]).
//!
//! A pure function over explicit inputs ([`Inputs`]): the raw bytes, the S/MIME chain
//! anchors (REM PKI), the time-stamp anchors, an optional Trusted List peers view and the
//! instant. Nothing here reads files, the store or the clock.
//!
//! For a REM message ([`judge_message`]) every check runs and every failure is recorded:
//!
//! * the S/MIME signature and the signer's chain ([`super::message`]);
//! * the structure and headers of the REM message;
//! * the digest of the original (dispatch) = `REM-DigestValue` = the `DigestValue` of the
//!   original in every evidence;
//! * each evidence: its reader ([`super::evidence::Evidence::parse`]), its XAdES-B-T
//!   signature and time stamp ([`super::xades::verify`]), its signer = the S/MIME signer;
//! * headers against the evidences: the event and reason of `REM-EventIdentifier` and
//!   `REM-ReasonIdentifier` are those of the evidence `REM-Evidence-ID` names, every
//!   evidence names the same message, a dispatch's evidence names its `Message-ID`, no
//!   `EvidenceIdentifier` twice in one message;
//! * with a peers view: the signer is the digital identity of a REM service granted on the
//!   Trusted List at the signing time (the earliest evidence time stamp, which proves it;
//!   else the S/MIME `signingTime`).
//!
//! A standalone evidence ([`judge_evidence`]) gets the reader, the XAdES-B-T checks, the
//! signer's chain at the time stamp's time and, with a peers view, the trust decision.

use std::path::PathBuf;

use openssl::x509::X509;

use super::codes::{Event, Reason};
use super::evidence::{Evidence, ORIGINAL_MESSAGE_PART};
use super::message::{self, MessageType, RemMessage};
use super::trust::RemPeers;
use super::xades::{self, VerifiedEvidence, XadesError};
use crate::crypto::verify::{self as smime, ChainPolicy, ChainStatus, Verified, VerifyOptions};
use crate::crypto::VerifyError;
use crate::message::time::Instant;

/// What a verdict is judged against.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Anchors of the REM PKI: the S/MIME signer (and an evidence's signer) must chain to
    /// them. Enforced whatever `chain.enforce` says.
    pub chain: &'a ChainPolicy,
    /// PEM files of time-stamp anchors, each tried on its own (the kit's two roots share a
    /// name, so OpenSSL would pick the wrong one of a file holding both).
    pub tsa_anchors: &'a [PathBuf],
    /// The REM services of the accepted Trusted Lists; `None`: trust not checked.
    pub peers: Option<&'a RemPeers>,
    /// The instant of the verification (certificate validity).
    pub at: Instant,
}

/// One reason a message or evidence is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Not a readable REM message (structure, headers, size).
    Malformed(String),
    /// The S/MIME signature does not verify.
    Signature(String),
    /// The signer's certificate: chain, validity, revocation.
    Certificate(String),
    /// The signer is not a REM service granted on the Trusted List at the signing time.
    NotTrusted(String),
    /// An evidence cannot be read (`index` 1-based, in the message's order).
    Evidence { index: usize, reason: String },
    /// An evidence's XAdES signature does not verify.
    EvidenceSignature { index: usize, reason: String },
    /// An evidence has no valid signature time stamp.
    TimeStamp { index: usize, reason: String },
    /// An evidence was signed by another certificate than the message.
    SignerMismatch { index: usize },
    /// The original, `REM-DigestValue` and an evidence's `DigestValue` disagree.
    Digest(String),
    /// Two evidences of one message share an `EvidenceIdentifier`.
    DuplicateEvidenceId(String),
    /// The headers and the evidences disagree (event, reason, identifiers).
    Inconsistent(String),
}

impl Failure {
    /// The RelayRejection reason the reception point answers this failure with (EN 319
    /// 522-2 table 8, EN 319 532-4 C.28, AgID REM-Policy-IT):
    ///
    /// * RB02 (invalid message format): unreadable message or evidence, the message's
    ///   metadata against its content (digest, event, identifiers, duplicates);
    /// * RB04 (invalid ERDS signature format or signature policy violation): the S/MIME
    ///   signature, an evidence's XAdES signature or time stamp, an evidence signed by
    ///   another certificate than the message;
    /// * RB05 (ERDS signing certificate expired or revoked): the signer's certificate;
    /// * RB06 (policy violation: relaying ERDSP not accepted): the signer is not a REM
    ///   service granted on the Trusted List.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Malformed(_)
            | Failure::Evidence { .. }
            | Failure::Digest(_)
            | Failure::DuplicateEvidenceId(_)
            | Failure::Inconsistent(_) => "RB02",
            Failure::Signature(_)
            | Failure::EvidenceSignature { .. }
            | Failure::TimeStamp { .. }
            | Failure::SignerMismatch { .. } => "RB04",
            Failure::Certificate(_) => "RB05",
            Failure::NotTrusted(_) => "RB06",
        }
    }

    /// The table entry of [`Failure::code`].
    pub fn reason(&self) -> Option<&'static Reason> {
        Reason::by_code(self.code())
    }

    /// Order in which failures explain a rejection: what makes the rest meaningless first.
    fn rank(&self) -> u8 {
        match self {
            Failure::Malformed(_) => 0,
            Failure::Signature(_) => 1,
            Failure::Certificate(_) => 2,
            Failure::NotTrusted(_) => 3,
            Failure::Evidence { .. } => 4,
            Failure::EvidenceSignature { .. } => 5,
            Failure::TimeStamp { .. } => 6,
            Failure::SignerMismatch { .. } => 7,
            Failure::Digest(_) => 8,
            Failure::DuplicateEvidenceId(_) => 9,
            Failure::Inconsistent(_) => 10,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Malformed(s) => write!(f, "malformed: {s}"),
            Failure::Signature(s) => write!(f, "signature: {s}"),
            Failure::Certificate(s) => write!(f, "certificate: {s}"),
            Failure::NotTrusted(s) => write!(f, "not trusted: {s}"),
            Failure::Evidence { index, reason } => write!(f, "evidence {index}: {reason}"),
            Failure::EvidenceSignature { index, reason } => {
                write!(f, "evidence {index} signature: {reason}")
            }
            Failure::TimeStamp { index, reason } => {
                write!(f, "evidence {index} time stamp: {reason}")
            }
            Failure::SignerMismatch { index } => write!(
                f,
                "evidence {index} is signed by another certificate than the message"
            ),
            Failure::Digest(s) => write!(f, "digest: {s}"),
            Failure::DuplicateEvidenceId(id) => {
                write!(f, "evidence identifier \"{id}\" appears more than once")
            }
            Failure::Inconsistent(s) => write!(f, "inconsistent: {s}"),
        }
    }
}

/// What was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Message(MessageType),
    Evidence,
}

/// The signer, as far as it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub der: Vec<u8>,
    /// One line, RFC 2253 order.
    pub subject: String,
    /// Upper-case hex SHA-256 of the certificate.
    pub sha256: String,
}

impl Signer {
    fn of(der: &[u8]) -> Signer {
        let subject = X509::from_der(der)
            .map(|c| smime::name_one_line(c.subject_name()))
            .unwrap_or_else(|_| "(unreadable certificate)".into());
        use sha2::Digest;
        Signer {
            der: der.to_vec(),
            subject,
            sha256: hex::encode_upper(sha2::Sha256::digest(der)),
        }
    }
}

/// The trust decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// No peers view was given.
    NotChecked,
    /// A REM service granted at the signing time.
    Granted {
        territory: String,
        provider: String,
        service: String,
    },
    /// Not on the Trusted List as a granted REM service then.
    NotGranted,
}

/// What one evidence said and how it fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceReport {
    /// `EvidenceIdentifier`.
    pub id: Option<String>,
    pub event: Option<Event>,
    pub code: Option<&'static str>,
    pub message_id: Option<String>,
    /// `DigestValue` of the original message part.
    pub digest: Option<String>,
    pub signer: Option<Signer>,
    pub signing_time: Option<Instant>,
    /// `genTime` of the earliest signature time stamp.
    pub time_stamp_time: Option<Instant>,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub kind: Kind,
    /// The event of the message (`REM-EventIdentifier`) or of the evidence.
    pub event: Option<Event>,
    /// The reason code it states (`RA01`, `RB21` …).
    pub code: Option<&'static str>,
    /// The message's S/MIME signer, or the evidence's signer.
    pub signer: Option<Signer>,
    /// The S/MIME `signingTime`, or the evidence's `SigningTime`.
    pub signing_time: Option<Instant>,
    /// The earliest evidence time stamp.
    pub time_stamp_time: Option<Instant>,
    /// `REM-DigestValue`, or the evidence's digest of the original.
    pub digest: Option<String>,
    pub trust: Trust,
    pub evidences: Vec<EvidenceReport>,
    /// Every failure, in the order found.
    pub failures: Vec<Failure>,
}

impl Verdict {
    pub fn valid(&self) -> bool {
        self.failures.is_empty()
    }

    /// The failure that explains a rejection (the first by rank).
    pub fn first_failure(&self) -> Option<&Failure> {
        self.failures.iter().min_by_key(|f| f.rank())
    }

    /// The RelayRejection reason the reception point answers with; `None` when valid.
    pub fn rejection(&self) -> Option<&'static Reason> {
        self.first_failure().and_then(Failure::reason)
    }

    fn new(kind: Kind) -> Verdict {
        Verdict {
            kind,
            event: None,
            code: None,
            signer: None,
            signing_time: None,
            time_stamp_time: None,
            digest: None,
            trust: Trust::NotChecked,
            evidences: Vec::new(),
            failures: Vec::new(),
        }
    }
}

/// The S/MIME error as a failure.
fn smime_failure(e: VerifyError) -> Failure {
    match e {
        VerifyError::NotSigned(s) | VerifyError::Malformed(s) => Failure::Malformed(s),
        e @ VerifyError::TooLarge { .. } => Failure::Malformed(e.to_string()),
        e @ (VerifyError::BadSignature(_)
        | VerifyError::UnsupportedDigest(_)
        | VerifyError::MultipleSigners { .. }) => Failure::Signature(e.to_string()),
        e => Failure::Certificate(e.to_string()),
    }
}

/// The XAdES error as a failure of evidence `index`.
fn xades_failure(index: usize, e: XadesError) -> Failure {
    use crate::crypto::xmldsig::XmlDsigError;
    let reason = e.to_string();
    match e {
        XadesError::Tsa(_) => Failure::TimeStamp { index, reason },
        XadesError::Structure(s) if s.contains("time stamp") || s.contains("B-T") => {
            Failure::TimeStamp { index, reason }
        }
        XadesError::Dsig(XmlDsigError::Gate(_) | XmlDsigError::Parse(_)) => {
            Failure::Evidence { index, reason }
        }
        _ => Failure::EvidenceSignature { index, reason },
    }
}

/// XAdES-B-T of one evidence against each TSA anchor file; the first that verifies wins.
fn verify_xades(raw: &[u8], tsa: &[PathBuf]) -> Result<VerifiedEvidence, XadesError> {
    let mut first_err = None;
    for anchor in tsa {
        match xades::verify(raw, anchor) {
            Ok(v) => return Ok(v),
            Err(e) => {
                // An error before the time stamp is the same with every anchor.
                let tsa_only = matches!(e, XadesError::Tsa(_));
                if first_err.is_none() {
                    first_err = Some(e);
                }
                if !tsa_only {
                    break;
                }
            }
        }
    }
    Err(first_err.unwrap_or_else(|| {
        XadesError::Tsa(crate::crypto::tsa::TsaError::Token(
            "no time-stamp anchors configured".into(),
        ))
    }))
}

/// The `DigestValue` of the original message part of an evidence.
fn evidence_digest(e: &Evidence) -> Option<String> {
    e.user_content.as_ref().and_then(|u| {
        u.parts
            .iter()
            .find(|p| p.identifier == ORIGINAL_MESSAGE_PART)
            .or_else(|| u.parts.first())
            .and_then(|p| p.digest_value.clone())
    })
}

fn unbracket(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(s)
}

/// One evidence: reader, XAdES-B-T; failures pushed with `index`.
fn judge_one(
    raw: &[u8],
    index: usize,
    tsa: &[PathBuf],
    failures: &mut Vec<Failure>,
) -> (Option<Evidence>, Option<VerifiedEvidence>, EvidenceReport) {
    let parsed = match Evidence::parse(raw) {
        Ok(e) => Some(e),
        Err(e) => {
            failures.push(Failure::Evidence {
                index,
                reason: e.to_string(),
            });
            None
        }
    };
    let verified = match verify_xades(raw, tsa) {
        Ok(v) => Some(v),
        Err(e) => {
            failures.push(xades_failure(index, e));
            None
        }
    };
    let report = EvidenceReport {
        id: parsed.as_ref().map(|e| e.evidence_id.clone()),
        event: parsed.as_ref().map(|e| e.event),
        code: parsed.as_ref().and_then(|e| e.reason()).map(|r| r.code),
        message_id: parsed.as_ref().and_then(|e| e.message_id.clone()),
        digest: parsed.as_ref().and_then(evidence_digest),
        signer: verified.as_ref().map(|v| Signer::of(&v.signer)),
        signing_time: verified.as_ref().map(|v| v.signing_time),
        time_stamp_time: verified.as_ref().map(|v| v.time_stamp.gen_time),
    };
    (parsed, verified, report)
}

/// The trust decision for `signer` at `when`.
fn trust_of(peers: Option<&RemPeers>, signer: &[u8], when: Instant) -> Trust {
    let Some(peers) = peers else {
        return Trust::NotChecked;
    };
    match peers.by_certificate(signer, when) {
        Some(p) => Trust::Granted {
            territory: p.territory.clone(),
            provider: p.provider.clone(),
            service: p.service.name.clone(),
        },
        None => Trust::NotGranted,
    }
}

/// Judges a REM message.
pub fn judge_message(raw: &[u8], inputs: &Inputs<'_>) -> Verdict {
    let mut v = Verdict::new(Kind::Message(MessageType::Receipt));
    let chain = ChainPolicy {
        enforce: true,
        ..inputs.chain.clone()
    };
    let opts = VerifyOptions::without_index(inputs.at).with_chain(&chain);

    // The signature first: what it covers is what the rest reads.
    let verified: Option<Verified> = match message::verify(raw, &opts) {
        Ok(vr) => Some(vr.verified),
        Err(message::RemError::Signature(e)) => {
            v.failures.push(smime_failure(e));
            None
        }
        Err(message::RemError::Digest(_)) => {
            // Signature good; the digest is checked below with the rest.
            crate::crypto::verify::verify_smime_with(raw, &opts).ok()
        }
        Err(e @ message::RemError::TooLarge { .. }) => {
            v.failures.push(Failure::Malformed(e.to_string()));
            return v;
        }
        Err(e) => {
            v.failures.push(Failure::Malformed(e.to_string()));
            return v;
        }
    };
    // Read what the message says, signed or not, to report every failure.
    let m: RemMessage = match message::parse(raw) {
        Ok(m) => m,
        Err(e) => {
            v.failures.push(Failure::Malformed(e.to_string()));
            return v;
        }
    };
    let c = m.classify();
    v.kind = Kind::Message(m.message_type);
    v.event = Some(m.event);
    v.code = c.code;
    v.digest = m.rem.digest_value.clone();
    if let Some(ver) = &verified {
        v.signer = Some(Signer::of(&ver.signer_der));
        v.signing_time = ver.signing_time;
    }

    // The original against REM-DigestValue.
    if let Err(e) = m.check_digest() {
        v.failures.push(Failure::Digest(e.to_string()));
    }
    let stated_digest = m.rem.digest_value.as_deref().map(str::trim);

    // Each evidence.
    let mut ids: Vec<String> = Vec::new();
    let mut named: Option<Evidence> = None;
    let header_id = m.rem.evidence_id.as_deref().map(unbracket);
    for (i, section) in m.evidences.iter().enumerate() {
        let index = i + 1;
        let (parsed, xv, report) =
            judge_one(&section.body, index, inputs.tsa_anchors, &mut v.failures);
        if let (Some(xv), Some(ver)) = (&xv, &verified) {
            if xv.signer != ver.signer_der {
                v.failures.push(Failure::SignerMismatch { index });
            }
        }
        if let Some(t) = report.time_stamp_time {
            if v.time_stamp_time.is_none_or(|f| t < f) {
                v.time_stamp_time = Some(t);
            }
        }
        if let Some(e) = parsed {
            if ids.contains(&e.evidence_id) {
                v.failures
                    .push(Failure::DuplicateEvidenceId(e.evidence_id.clone()));
            } else {
                ids.push(e.evidence_id.clone());
            }
            match (evidence_digest(&e), stated_digest) {
                (Some(d), Some(s)) if d.trim() == s => {}
                (Some(d), s) => v.failures.push(Failure::Digest(format!(
                    "evidence {index} states the digest \"{}\", the message \"{}\"",
                    d.trim(),
                    s.unwrap_or("-")
                ))),
                (None, _) => v.failures.push(Failure::Digest(format!(
                    "evidence {index} carries no digest of the original"
                ))),
            }
            if m.message_type == MessageType::Dispatch
                && e.message_id.as_deref().map(unbracket) != m.message_id.as_deref()
            {
                v.failures.push(Failure::Inconsistent(format!(
                    "evidence {index} names the message \"{}\", the dispatch is \"{}\"",
                    e.message_id.as_deref().unwrap_or("-"),
                    m.message_id.as_deref().unwrap_or("-")
                )));
            }
            if header_id == Some(e.evidence_id.as_str()) && named.is_none() {
                named = Some(e);
            } else if let Some(first) = v.evidences.first().and_then(|r| r.message_id.clone()) {
                if e.message_id.is_some() && e.message_id.as_deref() != Some(first.as_str()) {
                    v.failures.push(Failure::Inconsistent(format!(
                        "evidence {index} names another message than evidence 1"
                    )));
                }
            }
        }
        v.evidences.push(report);
    }

    // The headers against the evidence REM-Evidence-ID names.
    match (header_id, &named) {
        (None, _) => v
            .failures
            .push(Failure::Inconsistent("no REM-Evidence-ID".into())),
        (Some(id), None) => {
            // Unread evidences were reported already; only a real absence is new.
            if v.evidences.iter().all(|r| r.id.is_some()) {
                v.failures.push(Failure::Inconsistent(format!(
                    "REM-Evidence-ID \"{id}\" names no evidence of the message"
                )));
            }
        }
        (Some(_), Some(e)) => {
            if e.event != m.event {
                v.failures.push(Failure::Inconsistent(format!(
                    "REM-EventIdentifier is {}, the evidence says {}",
                    m.event, e.event
                )));
            }
            let stated: Vec<String> = m
                .rem
                .reason_identifiers
                .iter()
                .map(|r| r.trim().to_string())
                .collect();
            let evidence_reasons: Vec<String> = e
                .reasons
                .iter()
                .map(|r| r.code.trim().to_string())
                .collect();
            if stated != evidence_reasons {
                v.failures.push(Failure::Inconsistent(format!(
                    "REM-ReasonIdentifier [{}], the evidence [{}]",
                    stated.join(", "),
                    evidence_reasons.join(", ")
                )));
            }
        }
    }

    // Trust: the S/MIME signer is a granted REM service at the signing time, the one the
    // evidences' time stamps prove (the S/MIME signingTime is only claimed), else the
    // claimed one, else the instant of the verification.
    let signed_at = v.time_stamp_time.or(v.signing_time).unwrap_or(inputs.at);
    if let Some(ver) = &verified {
        v.trust = trust_of(inputs.peers, &ver.signer_der, signed_at);
        if v.trust == Trust::NotGranted {
            v.failures.push(Failure::NotTrusted(format!(
                "\"{}\" is not a REM service granted on the Trusted List at {}",
                v.signer.as_ref().map(|s| s.subject.as_str()).unwrap_or("-"),
                signed_at.rfc3339()
            )));
        }
    }
    v
}

/// Judges a standalone evidence.
pub fn judge_evidence(raw: &[u8], inputs: &Inputs<'_>) -> Verdict {
    let mut v = Verdict::new(Kind::Evidence);
    let (_, xv, report) = judge_one(raw, 1, inputs.tsa_anchors, &mut v.failures);
    v.event = report.event;
    v.code = report.code;
    v.digest = report.digest.clone();
    v.signer = report.signer.clone();
    v.signing_time = report.signing_time;
    v.time_stamp_time = report.time_stamp_time;
    if let Some(xv) = &xv {
        // The time stamp proves when the signature existed: the chain and the trust then.
        let when = xv.time_stamp.gen_time;
        let untrusted: Vec<Vec<u8>> = xv
            .certificates
            .iter()
            .filter(|c| **c != xv.signer)
            .cloned()
            .collect();
        let chain = ChainPolicy {
            enforce: true,
            ..inputs.chain.clone()
        };
        match smime::certificate_chain(&xv.signer, &untrusted, &chain, when) {
            Ok(ChainStatus::Valid) => {}
            Ok(ChainStatus::Invalid(r)) => v.failures.push(Failure::Certificate(r)),
            Ok(ChainStatus::NotChecked) => v
                .failures
                .push(Failure::Certificate("no trust anchors configured".into())),
            Err(e) => v.failures.push(smime_failure(e)),
        }
        v.trust = trust_of(inputs.peers, &xv.signer, when);
        if v.trust == Trust::NotGranted {
            v.failures.push(Failure::NotTrusted(format!(
                "\"{}\" is not a REM service granted on the Trusted List at {}",
                report
                    .signer
                    .as_ref()
                    .map(|s| s.subject.as_str())
                    .unwrap_or("-"),
                when.rfc3339()
            )));
        }
    }
    v.evidences.push(report);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_maps_to_a_relay_rejection_reason() {
        let s = || "x".to_string();
        let cases = [
            (Failure::Malformed(s()), "RB02"),
            (Failure::Signature(s()), "RB04"),
            (Failure::Certificate(s()), "RB05"),
            (Failure::NotTrusted(s()), "RB06"),
            (
                Failure::Evidence {
                    index: 1,
                    reason: s(),
                },
                "RB02",
            ),
            (
                Failure::EvidenceSignature {
                    index: 1,
                    reason: s(),
                },
                "RB04",
            ),
            (
                Failure::TimeStamp {
                    index: 1,
                    reason: s(),
                },
                "RB04",
            ),
            (Failure::SignerMismatch { index: 1 }, "RB04"),
            (Failure::Digest(s()), "RB02"),
            (Failure::DuplicateEvidenceId(s()), "RB02"),
            (Failure::Inconsistent(s()), "RB02"),
        ];
        for (f, code) in &cases {
            assert_eq!(f.code(), *code, "{f}");
            let r = f.reason().unwrap();
            assert!(r.allowed_with(Event::RelayRejection), "{f}");
        }
        // The first by rank explains the rejection, whatever the order found.
        let mut v = Verdict::new(Kind::Evidence);
        v.failures = vec![Failure::Digest(s()), Failure::Signature(s())];
        assert_eq!(v.rejection().unwrap().code, "RB04");
        assert!(!v.valid());
    }
}

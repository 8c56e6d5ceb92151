// SPDX-License-Identifier: GPL-3.0-or-later
//! Builds REM messages (EN 319 532-3 §6.2, EN 319 532-4, AgID REM-Policy-IT) the way the
//! ETSI and AgID examples look: the REM dispatch (the original with the SubmissionAcceptance
//! evidence) and each REM receipt (evidence only, never the original), signed as CAdES-B
//! S/MIME through [`crate::crypto::smime`].
//!
//! The evidence arrives already signed (opaque bytes, `super::evidence` writes it). The
//! original is attached byte-exact: [`prepare_original`] brings it to CRLF line ends and
//! exactly one final CRLF before its digest is taken, so that `REM-DigestValue` holds for
//! the bytes a receiver finds between the part header and the next delimiter.

use thiserror::Error;

use super::codes::{Event, Reason};
use super::message::{
    DigestAlgorithm, MessageType, CONSIGNMENT_BASIC, METADATA_VERSION, SECTION_EXTENSION,
    SECTION_INTRODUCTION, SECTION_ORIGINAL, SECTION_XML_EVIDENCE,
};
use crate::crypto::smime::{self, Layout};
use crate::crypto::{SignError, Signer};
use crate::message::ids::{bracketed, unbracketed};
use crate::message::mime::{self, clip};
use crate::message::time::Instant;

#[derive(Debug, Error)]
pub enum ComposeError {
    #[error("original message: {0}")]
    Original(String),
    #[error("rem message: {0}")]
    Input(String),
    #[error("signing: {0}")]
    Sign(#[from] SignError),
}

/// The provider issuing the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// Name shown in the introduction (`REM service provider: "…"`).
    pub name: String,
    /// Service address (`rem-service@…`), the signer certificate's rfc822Name.
    pub service_address: String,
}

/// What every REM message about one dispatch says, read from the prepared original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The REM message identifier (the prepared original's `Message-ID`), without brackets.
    pub message_id: String,
    /// `REM-UAMessageIdentifier`: the sender client's Message-ID, with brackets.
    pub ua_message_identifier: Option<String>,
    /// The sender's address.
    pub sender: String,
    /// `From` of the original as written: `REM-MD08` and the dispatch's `Reply-To`.
    pub from: String,
    /// `To` and `Cc` of the original as written (the dispatch copies them).
    pub to: Option<String>,
    pub cc: Option<String>,
    /// `In-Reply-To` of the original.
    pub in_reply_to: Option<String>,
    /// Every recipient address, in order.
    pub recipients: Vec<String>,
    /// Subject of the original, decoded.
    pub subject: String,
    /// `REM-ApplicablePolicy` values (the baseline first).
    pub policies: Vec<String>,
    pub digest: DigestAlgorithm,
    /// `REM-DigestValue` of the prepared original.
    pub digest_value: String,
}

impl Submission {
    /// The REM data of the message evidence `ev` is about, from the evidence alone (our
    /// records: our own evidence of a dispatch, or a peer's one we judged valid): what a
    /// receipt about it states in its headers and introduction.
    pub fn from_evidence(ev: &super::evidence::Evidence, policies: Vec<String>) -> Submission {
        let address = |u: &super::evidence::UserDetails| {
            u.identifier
                .as_ref()
                .map(|i| i.value.clone())
                .unwrap_or_default()
        };
        let sender = address(&ev.sender);
        let recipients: Vec<String> = ev.recipients.iter().map(address).collect();
        let part = ev.user_content.as_ref().and_then(|u| u.parts.first());
        let digest = part
            .and_then(|p| p.digest_method.as_deref())
            .and_then(DigestAlgorithm::from_uri)
            .unwrap_or(DigestAlgorithm::Sha256);
        Submission {
            message_id: ev.message_id.clone().unwrap_or_default(),
            ua_message_identifier: ev
                .user_content
                .as_ref()
                .and_then(|u| u.app_layer_identifier.clone()),
            from: format!("<{sender}>"),
            sender,
            to: Some(recipients.join(", ")),
            cc: None,
            in_reply_to: None,
            recipients,
            subject: ev
                .general_info
                .as_ref()
                .and_then(|g| g.subject.clone())
                .unwrap_or_default(),
            policies,
            digest,
            digest_value: part
                .and_then(|p| p.digest_value.clone())
                .unwrap_or_default(),
        }
    }

    /// Reads the certification data from `original`, prepared with [`prepare_original`],
    /// and computes its digest.
    pub fn from_original(
        original: &[u8],
        policies: Vec<String>,
        digest: DigestAlgorithm,
    ) -> Result<Self, ComposeError> {
        if !super::message::ends_with_one_crlf(original)
            || mime::normalize_crlf(original).len() != original.len()
        {
            return Err(ComposeError::Original(
                "not prepared: crlf line ends and exactly one final crlf required".into(),
            ));
        }
        let parsed = mail_parser::MessageParser::default()
            .parse_headers(original)
            .ok_or_else(|| ComposeError::Original("unreadable header".into()))?;
        let (header, _) = mime::split_header_body(original);
        let fields = mime::fields(header).map_err(ComposeError::Original)?;
        let raw = |n: &str| mime::first_value(&fields, n).map(|v| v.trim().to_string());
        let message_id = raw("Message-ID")
            .map(|v| unbracketed(&v).to_string())
            .ok_or_else(|| ComposeError::Original("no Message-ID".into()))?;
        let from = raw("From").ok_or_else(|| ComposeError::Original("no From".into()))?;
        let sender = first_address(parsed.from()).ok_or_else(|| {
            ComposeError::Original(format!("no address in From \"{}\"", clip(&from)))
        })?;
        let mut recipients = Vec::new();
        for a in [parsed.to(), parsed.cc()].into_iter().flatten() {
            recipients.extend(a.iter().filter_map(|x| x.address().map(str::to_string)));
        }
        if recipients.is_empty() {
            return Err(ComposeError::Original("no recipient in To or Cc".into()));
        }
        if policies.is_empty() {
            return Err(ComposeError::Input("no applicable policy".into()));
        }
        Ok(Submission {
            message_id,
            ua_message_identifier: raw("REM-UAMessageIdentifier"),
            sender,
            from,
            to: raw("To"),
            cc: raw("Cc"),
            in_reply_to: raw("In-Reply-To"),
            recipients,
            subject: parsed.subject().unwrap_or_default().to_string(),
            policies,
            digest,
            digest_value: digest.digest_value(original),
        })
    }
}

fn first_address(a: Option<&mail_parser::Address<'_>>) -> Option<String> {
    a?.first()?.address().map(str::to_string)
}

/// The original as the sender's provider attaches it (kit: `original_message.clean_from_user`
/// → `…to_attach_to_dispatch`): CRLF line ends, exactly one final CRLF, its `Message-ID`
/// replaced by the REM message identifier and the client's one moved to
/// `REM-UAMessageIdentifier` right after it (EN 319 532-3 §4.2 note 2). A
/// `REM-UAMessageIdentifier` the sender wrote is dropped: only the provider states it.
pub fn prepare_original(raw: &[u8], rem_message_id: &str) -> Result<Vec<u8>, ComposeError> {
    let crlf = mime::normalize_crlf(raw);
    let mut end = crlf.len();
    while end >= 2 && &crlf[end - 2..end] == b"\r\n" {
        end -= 2;
    }
    let trimmed = &crlf[..end];
    let (header, body) = mime::split_header_body(trimmed);
    let fields = mime::fields(header).map_err(ComposeError::Original)?;
    if fields.is_empty() {
        return Err(ComposeError::Original("no header".into()));
    }
    let mut out = Vec::with_capacity(trimmed.len() + 200);
    let mut replaced = false;
    // The last field may lack its line end when the trimmed data end with the header.
    let line = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(bytes);
        if !bytes.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    };
    for f in fields.iter().filter(|f| !f.is("REM-UAMessageIdentifier")) {
        if f.is("Message-ID") {
            if !replaced {
                replaced = true;
                let id = format!("Message-ID: {}\r\n", bracketed(rem_message_id));
                line(&mut out, id.as_bytes());
                let mut ua = b"REM-UAMessageIdentifier:".to_vec();
                ua.extend_from_slice(f.value);
                line(&mut out, &ua);
            }
        } else {
            line(&mut out, f.raw);
        }
    }
    if !replaced {
        let id = format!("Message-ID: {}\r\n", bracketed(rem_message_id));
        line(&mut out, id.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    Ok(out)
}

/// A signed evidence to attach (opaque; its event names the part, `<Event>.xml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvidenceAttachment<'a> {
    /// The event the evidence attests (it names the part: `SubmissionAcceptance.xml`).
    pub event: Event,
    pub xml: &'a [u8],
}

/// An extension part (EN 319 532-3 §6.2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension<'a> {
    /// `application/xml` or `application/octet-stream`.
    pub mime_type: &'a str,
    pub name: &'a str,
    pub code: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub data: &'a [u8],
}

/// A composed, signed REM message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    pub message_type: MessageType,
    /// `Message-ID` without angle brackets.
    pub message_id: String,
    /// SMTP envelope.
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// Header fields: name and value (folded, no final CRLF).
    pub headers: Vec<(String, String)>,
    /// The `multipart/signed` body.
    pub body: Vec<u8>,
}

impl Composed {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 2048);
        for (n, v) in &self.headers {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One REM receipt to compose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt<'a> {
    pub event: Event,
    /// Reason code (`RB01`); with the event it gives `REM-ReasonIdentifier` and the
    /// introduction's sentence.
    pub code: &'a str,
    /// `Message-ID` of the receipt, without brackets.
    pub message_id: &'a str,
    /// `REM-Evidence-ID` (the evidence's identifier), without brackets.
    pub evidence_id: &'a str,
    /// `To` as written and the SMTP recipient: the sender (`"Name" <address>`), or the
    /// sender's provider for relay receipts.
    pub to: &'a str,
    pub rcpt_to: &'a str,
    /// The other provider named in relay and consignment sentences.
    pub other_provider: Option<&'a str>,
    /// The recipient a consignment receipt is about.
    pub recipient: Option<&'a str>,
    /// `REM-RelayDate`, when the message was relayed.
    pub relay_date: Option<Instant>,
}

/// Builds and signs REM messages for one provider.
pub struct Composer<'a> {
    pub provider: &'a Provider,
    pub signer: &'a dyn Signer,
}

impl Composer<'_> {
    /// The REM dispatch: `original` prepared with [`prepare_original`], the signed
    /// SubmissionAcceptance `evidence`, its identifier.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch(
        &self,
        original: &[u8],
        sub: &Submission,
        evidence: &EvidenceAttachment<'_>,
        evidence_id: &str,
        extensions: &[Extension<'_>],
        relay_date: Option<Instant>,
        at: Instant,
    ) -> Result<Composed, ComposeError> {
        self.dispatch_as(
            Event::SubmissionAcceptance,
            "RA01",
            original,
            sub,
            evidence,
            evidence_id,
            extensions,
            relay_date,
            at,
        )
    }

    /// The REM dispatch that carries mail from outside any ERDS to our recipients
    /// (ReceivedFromNonERDS, EN 319 532-4 TUC3): `original` prepared with
    /// [`prepare_original`], our signed ReceivedFromNonERDS `evidence` (RF04), its
    /// identifier; `sub.recipients` the mailboxes it is delivered to.
    pub fn received_from_non_erds(
        &self,
        original: &[u8],
        sub: &Submission,
        evidence: &EvidenceAttachment<'_>,
        evidence_id: &str,
        at: Instant,
    ) -> Result<Composed, ComposeError> {
        self.dispatch_as(
            Event::ReceivedFromNonERDS,
            "RF04",
            original,
            sub,
            evidence,
            evidence_id,
            &[],
            None,
            at,
        )
    }

    /// A REM dispatch whose first evidence is of `event` with reason `code`.
    #[allow(clippy::too_many_arguments)]
    fn dispatch_as(
        &self,
        event: Event,
        code: &str,
        original: &[u8],
        sub: &Submission,
        evidence: &EvidenceAttachment<'_>,
        evidence_id: &str,
        extensions: &[Extension<'_>],
        relay_date: Option<Instant>,
        at: Instant,
    ) -> Result<Composed, ComposeError> {
        if sub.digest.digest_value(original) != sub.digest_value {
            return Err(ComposeError::Original(
                "the original is not the one the submission data were read from".into(),
            ));
        }
        let reason = reason_for(event, code)?;
        let text = Introduction::dispatch(self.provider, sub, evidence.event, at);
        let entity = entity(&text, Some(original), &[*evidence], extensions);
        let mut headers = vec![("Reply-To".to_string(), sub.from.clone())];
        headers.push((
            "From".to_string(),
            format!(
                "{} <{}>",
                mime::quoted_string(&format!("On behalf of: {}", sub.sender)),
                self.provider.service_address
            ),
        ));
        if let Some(to) = &sub.to {
            headers.push(("To".to_string(), to.clone()));
        }
        if let Some(cc) = &sub.cc {
            headers.push(("Cc".to_string(), cc.clone()));
        }
        headers.push((
            "Subject".to_string(),
            mime::encode_prefixed_subject("REM Dispatch: ", &sub.subject),
        ));
        headers.push(("Date".to_string(), at.rfc5322()));
        headers.push(("Message-ID".to_string(), bracketed(&sub.message_id)));
        if let Some(irt) = &sub.in_reply_to {
            headers.push(("In-Reply-To".to_string(), irt.clone()));
        }
        rem_headers(
            &mut headers,
            sub,
            MessageType::Dispatch,
            event,
            evidence_id,
            reason,
            relay_date,
            true,
        );
        self.finish(
            MessageType::Dispatch,
            &sub.message_id,
            sub.sender.clone(),
            sub.recipients.clone(),
            headers,
            entity,
            at,
        )
    }

    /// A REM receipt about `sub`: the signed `evidence` of `r.event`, never the original.
    pub fn receipt(
        &self,
        sub: &Submission,
        r: &Receipt<'_>,
        evidence: &[u8],
        extensions: &[Extension<'_>],
        at: Instant,
    ) -> Result<Composed, ComposeError> {
        let reason = reason_for(r.event, r.code)?;
        let text = Introduction::receipt(self.provider, sub, r, reason, at)?;
        let ev = EvidenceAttachment {
            event: r.event,
            xml: evidence,
        };
        let entity = entity(&text, None, &[ev], extensions);
        let mut headers = vec![
            (
                "From".to_string(),
                format!("<{}>", self.provider.service_address),
            ),
            ("To".to_string(), r.to.to_string()),
            (
                "Subject".to_string(),
                mime::encode_prefixed_subject(&format!("REM {}: ", r.event.name()), &sub.subject),
            ),
            ("Date".to_string(), at.rfc5322()),
            ("Message-ID".to_string(), bracketed(r.message_id)),
        ];
        rem_headers(
            &mut headers,
            sub,
            MessageType::Receipt,
            r.event,
            r.evidence_id,
            reason,
            r.relay_date,
            false,
        );
        self.finish(
            MessageType::Receipt,
            r.message_id,
            self.provider.service_address.clone(),
            vec![r.rcpt_to.to_string()],
            headers,
            entity,
            at,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        message_type: MessageType,
        message_id: &str,
        mail_from: String,
        rcpt_to: Vec<String>,
        mut headers: Vec<(String, String)>,
        entity: Vec<u8>,
        at: Instant,
    ) -> Result<Composed, ComposeError> {
        let sealed = smime::seal_owned_as(self.signer, entity, at, Layout::Rem)?;
        headers.extend(sealed.headers);
        Ok(Composed {
            message_type,
            message_id: unbracketed(message_id).to_string(),
            mail_from,
            rcpt_to,
            headers,
            body: sealed.body,
        })
    }
}

/// The reason of `code`, which must be one that may explain `event`.
fn reason_for(event: Event, code: &str) -> Result<&'static Reason, ComposeError> {
    Reason::by_code(code)
        .filter(|r| r.allowed_with(event))
        .ok_or_else(|| {
            ComposeError::Input(format!(
                "reason code \"{}\" does not go with event \"{event}\"",
                clip(code)
            ))
        })
}

/// The `REM-*` fields in the kit's order.
#[allow(clippy::too_many_arguments)]
fn rem_headers(
    h: &mut Vec<(String, String)>,
    sub: &Submission,
    t: MessageType,
    event: Event,
    evidence_id: &str,
    reason: &Reason,
    relay_date: Option<Instant>,
    consignment_mode: bool,
) {
    let mut push = |n: &str, v: String| h.push((n.to_string(), v));
    push("REM-MetadataVersion", METADATA_VERSION.to_string());
    if let Some(d) = relay_date {
        push(
            "REM-RelayDate",
            d.utc()
                .format("%a, %d %b %Y %H:%M:%S +0000 (UTC)")
                .to_string(),
        );
    }
    for p in &sub.policies {
        push("REM-ApplicablePolicy", p.clone());
    }
    if consignment_mode && relay_date.is_some() {
        push("REM-ModeOfConsignment", CONSIGNMENT_BASIC.to_string());
    }
    push("REM-MessageType", t.uri().to_string());
    push("REM-DigestAlgorithm", sub.digest.uri().to_string());
    push("REM-DigestValue", sub.digest_value.clone());
    if let Some(ua) = &sub.ua_message_identifier {
        push("REM-UAMessageIdentifier", ua.clone());
    }
    push("REM-EventIdentifier", event.uri());
    push("REM-Evidence-ID", bracketed(evidence_id));
    push("REM-ReasonIdentifier", reason.uri());
    push("REM-MD08", sub.from.clone());
}

/// The signed `multipart/mixed`: introduction, original, evidences, extensions.
fn entity(
    text: &Introduction,
    original: Option<&[u8]>,
    evidences: &[EvidenceAttachment<'_>],
    extensions: &[Extension<'_>],
) -> Vec<u8> {
    let intro = text.part();
    let mut parts: Vec<Vec<u8>> = vec![intro];
    let mut original_part: Option<(Vec<u8>, &[u8])> = None;
    if let Some(o) = original {
        let head = format!(
            "Content-Type: message/rfc822; name=AttachedMimeMessage\r\nContent-Transfer-Encoding: binary\r\nContent-Disposition: attachment; filename=AttachedMimeMessage\r\nREM-Section-Type: {SECTION_ORIGINAL}\r\n\r\n"
        );
        original_part = Some((head.into_bytes(), o));
    }
    let mut tail: Vec<Vec<u8>> = Vec::new();
    for ev in evidences {
        let name = format!("{}.xml", ev.event.name());
        let mut p = format!(
            "Content-Type: application/xml; charset=UTF-8; name=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nREM-Section-Type: {SECTION_XML_EVIDENCE}\r\n\r\n"
        )
        .into_bytes();
        p.extend_from_slice(&mime::base64_lines(ev.xml));
        tail.push(p);
    }
    for x in extensions {
        let charset = if x.mime_type == "application/xml" {
            "; charset=UTF-8"
        } else {
            ""
        };
        let name = mime::quoted_string(x.name);
        let mut p = format!(
            "Content-Type: {}{charset}; name={name}\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename={name}\r\nREM-Section-Type: {SECTION_EXTENSION}\r\n",
            x.mime_type
        );
        if let Some(c) = x.code {
            p.push_str(&format!("REM-Extension-Code: {c}\r\n"));
        }
        if let Some(n) = x.namespace {
            p.push_str(&format!("REM-Extension-Namespace-URI: {n}\r\n"));
        }
        p.push_str("\r\n");
        let mut p = p.into_bytes();
        p.extend_from_slice(&mime::base64_lines(x.data));
        tail.push(p);
    }
    let mut all: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    if let Some((h, o)) = &original_part {
        all.push(h);
        all.push(o);
    }
    all.extend(tail.iter().map(Vec::as_slice));
    let b = mime::boundary(&all);
    let total: usize = all.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(total + 512 + smime::SEAL_HEADROOM);
    out.extend_from_slice(
        format!("Content-Type: multipart/mixed;\r\n\tboundary=\"{b}\"\r\n\r\n").as_bytes(),
    );
    let write = |out: &mut Vec<u8>, pieces: &[&[u8]]| {
        out.extend_from_slice(format!("--{b}\r\n").as_bytes());
        for p in pieces {
            out.extend_from_slice(p);
        }
        // Every part ends with its own CRLF; this one belongs to the next delimiter.
        out.extend_from_slice(b"\r\n");
    };
    for p in parts.drain(..) {
        write(&mut out, &[&p]);
    }
    if let Some((h, o)) = &original_part {
        write(&mut out, &[h, o]);
    }
    for p in &tail {
        write(&mut out, &[p]);
    }
    out.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    out
}

/// The readable introduction, Italian then English, as the AgID examples write it.
struct Introduction {
    plain: String,
    html: String,
}

/// `dd-mm-yyyy`, `hh:mm:ss (+hhmm)`.
fn day_hour(at: Instant) -> (String, String) {
    let l = at.legal();
    (
        format!("{:02}-{:02}-{:04}", l.day, l.month, l.year),
        format!("{} ({})", l.ora(), l.zona()),
    )
}

fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            _ => o.push(c),
        }
    }
    o
}

const RULE: &str =
    "-----------------------------------------------------------------------------------------";

/// The receipt sentence in Italian and English, as the AgID examples frame the reason's
/// phrase (`super::codes`) for each event; `{p}` is the other provider, `{r}` the recipient.
fn sentence(event: Event, reason: &Reason) -> Option<(String, String)> {
    use Event::*;
    let (it, en) = (reason.intro_it, reason.intro_en);
    let (fit, fen) = match (event, reason.code) {
        (SubmissionAcceptance | RelayToNonERDS | ReceivedFromNonERDS, _) => ("{f}", "{f}"),
        (SubmissionRejection, _) => (
            "è stato rifiutato dal sistema REM {f}",
            "was rejected by the REM system {f}",
        ),
        (RelayAcceptance, _) => (
            "ed inoltrato al REM service provider '{p}' {f}",
            "and relayed to the '{p}' REM service provider {f}",
        ),
        (RelayRejection | RelayFailure, "RB07" | "RB08" | "RB09") => (
            "non è stato inoltrato al REM service provider '{p}' {f}",
            "was not relayed to the '{p}' REM service provider {f}",
        ),
        (RelayRejection | RelayFailure, "RB10") => (
            "non è stato inoltrato {f} presso il REM service provider '{p}'",
            "was not relayed {f} to the '{p}' REM service provider",
        ),
        (RelayFailure, "RB22") => (
            "{f} verso il REM service provider '{p}'",
            "{f} to the '{p}' REM service provider",
        ),
        (RelayRejection | RelayFailure, _) => (
            "ed inoltrato al REM service provider '{p}' è stato rifiutato {f}",
            "and relayed to the '{p}' REM service provider was rejected {f}",
        ),
        (ContentConsignment, _) => ("{f} {r}", "{f} {r}"),
        (ContentConsignmentFailure, "RD03") => (
            "{f} nella mailbox del destinatario, {r}, presso il REM service provider '{p}'",
            "{f} in the recipient's mailbox, {r}, to '{p}' REM service provider",
        ),
        (ContentConsignmentFailure, "RD21") => (
            "non è stato consegnato nella mailbox del destinatario {r} {f} presso il REM service provider '{p}'",
            "was not consigned in the recipient's mailbox {r} {f} to the '{p}' REM service provider",
        ),
        (ContentConsignmentFailure, _) => (
            "non è stato consegnato nella mailbox del destinatario {r}, presso il REM service provider '{p}', {f}",
            "was not consigned in the recipient's mailbox {r}, to '{p}' REM service provider, {f}",
        ),
        (RelayToNonERDSFailure, _) => ("non è stato inoltrato {f}", "was not relayed {f}"),
        _ => return None,
    };
    Some((fit.replace("{f}", it), fen.replace("{f}", en)))
}

impl Introduction {
    /// Both texts ending with exactly one line end, as the kit's do (the line end before
    /// the next delimiter belongs to the delimiter).
    fn ending_once(plain: String, html: String) -> Self {
        let once = |s: String| format!("{}\r\n", s.trim_end_matches("\r\n"));
        Introduction {
            plain: once(plain),
            html: once(html),
        }
    }

    fn dispatch(p: &Provider, sub: &Submission, evidence_event: Event, at: Instant) -> Self {
        let (day, hour) = day_hour(at);
        let id = &sub.message_id;
        let ev = format!("{}.xml", evidence_event.name());
        let mut t = String::new();
        let mut h = String::new();
        for it in [true, false] {
            let (title, when, msg, sent, to, attached, ident, note) = if it {
                (
                    "Messaggio REM",
                    format!("Il giorno {day} alle ore {hour}"),
                    "il messaggio:",
                    "è stato inviato da",
                    "ed indirizzato a:",
                    "Il messaggio originale è incluso in allegato.",
                    "Identificativo messaggio:",
                    format!(
                        "L'allegato {ev} contiene informazioni di servizio sulla trasmissione."
                    ),
                )
            } else {
                (
                    "REM Dispatch",
                    format!("On {day} at {hour}"),
                    "the message:",
                    "was sent by",
                    "and addressed to:",
                    "The original message is attached.",
                    "Message identifier:",
                    format!(
                        "The {ev} attachment contains service information on the transmission."
                    ),
                )
            };
            if !it {
                t.push_str(&format!("{RULE}\r\n\r\n"));
                h.push_str("<HR/>\r\n\r\n");
            }
            t.push_str(&format!(
                "{title}\r\n{when}\r\n{msg} \"{}\" {sent} \"{}\"\r\n{to}\r\n",
                sub.subject, sub.sender
            ));
            for r in &sub.recipients {
                t.push_str(r);
                t.push_str("\r\n");
            }
            t.push_str(&format!(
                "\r\n{attached}\r\n\r\n{ident} \"{id}\"\r\nREM service provider: \"{}\"\r\n\r\n{note}\r\n\r\n",
                p.name
            ));
            h.push_str(&format!(
                "<h1>{title}</h1>\r\n<p>{when} </p>\r\n<p>{msg} \"<B>{}</B>\" {sent} \"<a href=\"mailto:{s}\">{s}</a>\"<br />{to}<BR>\r\n{}</p>\r\n\r\n{attached}\r\n\r\n<p>{ident} <a href=\"mailto:{i}\">{i}</a><BR>\r\nREM service provider: \"{}\"</p>\r\n\r\n{}\r\n\r\n",
                html_escape(&sub.subject),
                sub.recipients.iter().map(|r| html_escape(r)).collect::<Vec<_>>().join("<BR>"),
                html_escape(&p.name),
                html_escape(&note),
                s = html_escape(&sub.sender),
                i = html_escape(id),
            ));
        }
        Introduction::ending_once(t, h)
    }

    fn receipt(
        p: &Provider,
        sub: &Submission,
        r: &Receipt<'_>,
        reason: &Reason,
        at: Instant,
    ) -> Result<Self, ComposeError> {
        let (it_sentence, en_sentence) = sentence(r.event, reason).ok_or_else(|| {
            ComposeError::Input(format!(
                "no rem receipt for event \"{}\" in the rem baseline",
                r.event
            ))
        })?;
        let (it_sentence, en_sentence) = (it_sentence.as_str(), en_sentence.as_str());
        let fill = |s: &str, esc: bool| {
            let e = |v: &str| if esc { html_escape(v) } else { v.to_string() };
            s.replace("{p}", &e(r.other_provider.unwrap_or("")))
                .replace("{r}", &e(r.recipient.unwrap_or("")))
        };
        if it_sentence.contains("{p}") && r.other_provider.is_none()
            || it_sentence.contains("{r}") && r.recipient.is_none()
        {
            return Err(ComposeError::Input(format!(
                "code \"{}\" needs the other provider's name and the recipient",
                r.code
            )));
        }
        let (day, hour) = day_hour(at);
        let id = &sub.message_id;
        let mut t = String::new();
        let mut h = String::new();
        for it in [true, false] {
            let (title, when, msg, sent, to, sentence, code, ident) = if it {
                (
                    format!("Ricevuta di {}", r.event),
                    format!("Il giorno {day} alle ore {hour}"),
                    "il messaggio:",
                    "inviato da",
                    "ed indirizzato a:",
                    it_sentence,
                    "Codice",
                    "Identificativo messaggio:",
                )
            } else {
                (
                    format!("Receipt of {}", r.event),
                    format!("On {day} at {hour}"),
                    "the message:",
                    "sent by",
                    "and addressed to:",
                    en_sentence,
                    "Code",
                    "Message identifier:",
                )
            };
            if !it {
                t.push_str(&format!("{RULE}\r\n\r\n"));
                h.push_str("<HR/>\r\n\r\n");
            }
            t.push_str(&format!(
                "{title}\r\n{when}\r\n{msg} \"{}\" {sent} \"{}\"\r\n{to}\r\n",
                sub.subject, sub.sender
            ));
            for rc in &sub.recipients {
                t.push_str(rc);
                t.push_str("\r\n");
            }
            t.push_str(&format!(
                "\r\n{} ({code} {}).\r\n\r\n{ident} \"{id}\"\r\nREM service provider: \"{}\".\r\n\r\n",
                fill(sentence, false),
                r.code,
                p.name
            ));
            h.push_str(&format!(
                "<h1>{}</h1>\r\n<p>{when} </p>\r\n<p>{msg} \"<B>{}</B>\" {sent} \"<a href=\"mailto:{s}\">{s}</a>\"<br />{to}<BR>\r\n{}</p>\r\n\r\n<p>{} ({code} {}).</p>\r\n\r\n<p>{ident} <a href=\"mailto:{i}\">{i}</a><BR>\r\nREM service provider: \"{}\".</p>\r\n\r\n",
                html_escape(&title),
                html_escape(&sub.subject),
                sub.recipients.iter().map(|x| html_escape(x)).collect::<Vec<_>>().join("<BR>"),
                fill(sentence, true),
                r.code,
                html_escape(&p.name),
                s = html_escape(&sub.sender),
                i = html_escape(id),
            ));
        }
        Ok(Introduction::ending_once(t, h))
    }

    /// The `multipart/alternative` part, headers included, UTF-8 quoted-printable.
    fn part(&self) -> Vec<u8> {
        let plain = mime::quoted_printable(self.plain.as_bytes());
        let html = mime::quoted_printable(self.html.as_bytes());
        let b = mime::boundary(&[&plain, &html]);
        let mut out = Vec::with_capacity(plain.len() + html.len() + 512);
        out.extend_from_slice(
            format!(
                "REM-Section-Type: {SECTION_INTRODUCTION}\r\nContent-Type: multipart/alternative;\r\n\tboundary=\"{b}\"\r\n\r\n"
            )
            .as_bytes(),
        );
        for (sub, body) in [("plain", &plain), ("html", &html)] {
            out.extend_from_slice(
                format!(
                    "--{b}\r\nContent-Type: text/{sub};\r\n\tcharset=\"UTF-8\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                )
                .as_bytes(),
            );
            out.extend_from_slice(body);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{b}--\r\n").as_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preparing_the_original() {
        let raw = b"From: A <a@x.it>\nTo: b@y.it\nMessage-ID: <c1@x.it>\nSubject: s\n\nbody\n\n\n";
        let p = prepare_original(raw, "rem1@s.it").unwrap();
        assert_eq!(
            p,
            b"From: A <a@x.it>\r\nTo: b@y.it\r\nMessage-ID: <rem1@s.it>\r\nREM-UAMessageIdentifier: <c1@x.it>\r\nSubject: s\r\n\r\nbody\r\n"
        );
        // A REM-UAMessageIdentifier of the sender's own is not kept: the provider writes it.
        let forged =
            b"From: a@x.it\r\nREM-UAMessageIdentifier: <f@x>\r\nMessage-ID: <c@x>\r\n\r\nb\r\n";
        assert_eq!(
            prepare_original(forged, "r@s").unwrap(),
            b"From: a@x.it\r\nMessage-ID: <r@s>\r\nREM-UAMessageIdentifier: <c@x>\r\n\r\nb\r\n"
        );
        // No final line end at all: one is added.
        let p = prepare_original(b"From: a@x.it\r\nMessage-ID: <m@x>\r\n\r\nbody", "r@s").unwrap();
        assert!(p.ends_with(b"\r\n\r\nbody\r\n"));
        assert!(prepare_original(b"", "r@s").is_err());
        let sub = Submission::from_original(
            &prepare_original(raw, "rem1@s.it").unwrap(),
            vec![super::super::message::POLICY_REM_BASELINE.into()],
            DigestAlgorithm::Sha256,
        )
        .unwrap();
        assert_eq!(sub.message_id, "rem1@s.it");
        assert_eq!(sub.ua_message_identifier.as_deref(), Some("<c1@x.it>"));
        assert_eq!(sub.sender, "a@x.it");
        assert_eq!(sub.recipients, ["b@y.it"]);
        // Not prepared: refused.
        assert!(Submission::from_original(raw, vec!["p".into()], DigestAlgorithm::Sha256).is_err());
    }

    #[test]
    fn every_baseline_reason_has_its_sentence() {
        for event in Event::REM_BASELINE {
            for reason in event.reasons() {
                let (it, en) =
                    sentence(event, reason).unwrap_or_else(|| panic!("{event} {reason}"));
                assert!(it.contains(reason.intro_it) && en.contains(reason.intro_en));
                assert_eq!(reason_for(event, reason.code).unwrap(), reason);
            }
        }
        assert!(reason_for(Event::RelayAcceptance, "RA01").is_err());
        assert!(reason_for(Event::RelayAcceptance, "XX99").is_err());
    }
}

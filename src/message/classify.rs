// SPDX-License-Identifier: GPL-3.0-or-later
//! What an incoming message is (spec §5.2, §10).
//!
//! The reception point sorts every incoming message into one of four outcomes:
//!
//! 1. not signed, unknown signer, bad signature, expired certificate → ordinary mail
//!    ([`Classification::NotPec`]); class headers on such mail never count (§10 item 1);
//! 2. signed by a provider of the index, then the formal checks of §5.2 item 4 on the
//!    **top-level** header of the signed message and on the signed content:
//!    * exactly one class header, `X-Trasporto: posta-certificata` or `X-Ricevuta: <one of
//!      seven>` (an `X-Trasporto: errore` anomaly envelope coming from outside is wrong);
//!    * the signed content is `multipart/mixed`, its first part `text/plain` or
//!      `multipart/alternative` (`text/plain`, `text/html`);
//!    * exactly one `daticert.xml`, which parses, passes the per-`tipo` rules and whose
//!      `tipo` is the one the header announces;
//!    * `postacert.eml` present exactly where the type requires it;
//!    * for envelopes, the domain of daticert `<mittente>` is managed by the signer's
//!      provider (when the index has its record; for receipts this is only logged, §11);
//!
//!    any violation → [`Classification::SignedButWrong`] (→ busta di anomalia);
//! 3. otherwise a transport envelope or a receipt.
//!
//! Anything nested (a "receipt" inside `postacert.eml`) is content and never looked at.

use bytes::Bytes;
use mail_parser::MessageParser;

use std::collections::BTreeSet;

use super::build::OriginalInfo;
use super::daticert::Daticert;
use super::ids::unbracketed;
use super::kind::{ReceiptType, Ricevuta, Trasporto};
use super::mime::{self, clip, Entity, RawField};
use super::time::Instant;
use crate::crypto::verify::{verify_smime_shared, verify_smime_with, Verified, VerifyOptions};
use crate::index::TrustSet;

/// Outcome of the reception-point classification (spec §5.2 table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    /// Busta di trasporto (`X-Trasporto: posta-certificata`), valid.
    TransportEnvelope(PecMessage),
    /// A receipt or notice (`X-Ricevuta`), valid.
    Receipt(Ricevuta, PecMessage),
    /// Signed by a provider of the index but not formally correct: wrap in a busta di
    /// anomalia with `reason`.
    SignedButWrong {
        verified: Box<Verified>,
        reason: String,
    },
    /// Ordinary mail (not signed, unknown signer, bad signature, expired…).
    NotPec { reason: String },
}

impl Classification {
    /// The verified signature, for every outcome but [`Classification::NotPec`].
    pub fn verified(&self) -> Option<&Verified> {
        match self {
            Classification::TransportEnvelope(m) | Classification::Receipt(_, m) => {
                Some(&m.verified)
            }
            Classification::SignedButWrong { verified, .. } => Some(verified),
            Classification::NotPec { .. } => None,
        }
    }

    /// The message data of a correct envelope or receipt.
    pub fn pec(&self) -> Option<&PecMessage> {
        match self {
            Classification::TransportEnvelope(m) | Classification::Receipt(_, m) => Some(m),
            _ => None,
        }
    }

    /// Why the message is not a correct PEC message.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Classification::SignedButWrong { reason, .. } | Classification::NotPec { reason } => {
                Some(reason)
            }
            _ => None,
        }
    }
}

/// A correctly signed, formally correct PEC envelope or receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PecMessage {
    pub verified: Verified,
    pub daticert: Daticert,
    /// Top-level `Message-ID`, without angle brackets.
    pub message_id: Option<String>,
    /// `X-Riferimento-Message-ID` as written (with its angle brackets).
    pub riferimento_message_id: Option<String>,
    /// Top-level `Subject`, RFC 2047 decoded.
    pub subject: Option<String>,
    /// Address of the top-level `From`.
    pub from: Option<String>,
    /// `X-TipoRicevuta` (any case of the name); `None` when absent or unreadable.
    pub tipo_ricevuta: Option<ReceiptType>,
    /// `X-Mittente` (avviso di rilevazione virus).
    pub mittente_header: Option<String>,
    /// `X-VerificaSicurezza: errore`.
    pub security_flag: bool,
    /// Whether the signed content carries `postacert.eml`.
    pub has_postacert: bool,
    /// Checks skipped or only logged (e.g. the provider record is unknown), for the log.
    pub notes: Vec<String>,
}

/// Classifies `raw` against the provider index at instant `at`.
pub fn classify(raw: &[u8], trust: &TrustSet, at: Instant) -> Classification {
    classify_with(raw, &VerifyOptions::new(trust, at))
}

/// As [`classify`] on data held in a [`Bytes`]: the verified content of the result shares
/// it instead of copying the signed entity ([`verify_smime_shared`]).
pub fn classify_shared(raw: &Bytes, trust: &TrustSet, at: Instant) -> Classification {
    match verify_smime_shared(raw, &VerifyOptions::new(trust, at)) {
        Ok(verified) => classify_verified(raw, verified),
        Err(e) => Classification::NotPec {
            reason: e.to_string(),
        },
    }
}

/// As [`classify_shared`] with explicit verification options (chain policy).
pub fn classify_shared_with(raw: &Bytes, opts: &VerifyOptions<'_>) -> Classification {
    match verify_smime_shared(raw, opts) {
        Ok(verified) => classify_verified(raw, verified),
        Err(e) => Classification::NotPec {
            reason: e.to_string(),
        },
    }
}

/// As [`classify`] with explicit verification options (chain policy, or no index at all:
/// then the formal checks still run, and [`Verified::trusted`] is false — the caller must
/// not take the result for a PEC message).
pub fn classify_with(raw: &[u8], opts: &VerifyOptions<'_>) -> Classification {
    match verify_smime_with(raw, opts) {
        Ok(verified) => classify_verified(raw, verified),
        Err(e) => Classification::NotPec {
            reason: e.to_string(),
        },
    }
}

/// The formal checks of spec §5.2 item 4 on `raw`, whose signature has already been
/// verified as `verified` (its [`Verified::content`] is the signed entity looked at).
/// Never [`Classification::NotPec`].
pub fn classify_verified(raw: &[u8], verified: Verified) -> Classification {
    match formal(raw, &verified) {
        Ok(f) => {
            let msg = PecMessage {
                verified,
                daticert: f.daticert,
                message_id: f.headers.message_id,
                riferimento_message_id: f.headers.riferimento_message_id,
                subject: f.headers.subject,
                from: f.headers.from,
                tipo_ricevuta: f.headers.tipo_ricevuta,
                mittente_header: f.headers.mittente,
                security_flag: f.headers.security_flag,
                has_postacert: f.has_postacert,
                notes: f.notes,
            };
            match f.class {
                HeaderClass::Envelope => Classification::TransportEnvelope(msg),
                HeaderClass::Receipt(r) => Classification::Receipt(r, msg),
            }
        }
        Err(reason) => Classification::SignedButWrong {
            verified: Box::new(verified),
            reason,
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderClass {
    Envelope,
    Receipt(Ricevuta),
}

#[derive(Debug, Default)]
struct TopHeaders {
    message_id: Option<String>,
    riferimento_message_id: Option<String>,
    subject: Option<String>,
    from: Option<String>,
    tipo_ricevuta: Option<ReceiptType>,
    mittente: Option<String>,
    security_flag: bool,
    /// The sender named by the `From` display name "Per conto di: <sender>" (spec §3.1).
    on_behalf_of: Option<String>,
}

struct Formal {
    class: HeaderClass,
    daticert: Daticert,
    headers: TopHeaders,
    has_postacert: bool,
    notes: Vec<String>,
}

/// One body part of the signed `multipart/mixed`.
struct Part<'a> {
    /// Lower-case `type/subtype`; `text/plain` when absent (RFC 2045 default).
    mime: String,
    /// `filename` of Content-Disposition, else `name` of Content-Type.
    name: Option<String>,
    cte: Option<String>,
    boundary: Option<Vec<u8>>,
    body: &'a [u8],
}

impl<'a> Part<'a> {
    fn new(raw: &'a [u8]) -> Part<'a> {
        let e = Entity::parse(raw);
        Part {
            mime: e.mime_type().to_string(),
            name: e.file_name().map(|n| n.trim().to_string()),
            cte: e.value("content-transfer-encoding"),
            boundary: e.boundary(),
            body: e.body,
        }
    }

    fn named(&self, n: &str) -> bool {
        self.name
            .as_deref()
            .is_some_and(|x| x.eq_ignore_ascii_case(n))
    }

    /// Sub-parts of a multipart part.
    fn children(&self) -> Result<Vec<Part<'a>>, String> {
        let boundary = self
            .boundary
            .as_ref()
            .filter(|b| mime::valid_boundary(b))
            .ok_or_else(|| format!("{} without a valid boundary", self.mime))?;
        match mime::split_multipart(self.body, boundary) {
            Some(mp) if mp.is_closed() => Ok(mp.parts.into_iter().map(Part::new).collect()),
            _ => Err(format!("{} has no closing delimiter", self.mime)),
        }
    }
}

fn formal(raw: &[u8], v: &Verified) -> Result<Formal, String> {
    let (header, _) = mime::split_header_body(raw);
    let fields = mime::scan_fields(header);
    let class = header_class(&fields)?;
    let headers = top_headers(header, &fields);
    let mut notes = Vec::new();
    if let Some(value) = mime::first_value(&fields, "x-tiporicevuta") {
        if headers.tipo_ricevuta.is_none() {
            notes.push(format!(
                "X-TipoRicevuta value \"{}\" is not completa/breve/sintetica: ignored",
                clip(&value)
            ));
        }
    }

    // The signed content: multipart/mixed { text, daticert.xml, [postacert.eml], … }.
    let content = Part::new(&v.content);
    if content.mime != "multipart/mixed" {
        return Err(format!(
            "signed content is \"{}\", expected multipart/mixed",
            clip(&content.mime)
        ));
    }
    let parts = content.children()?;
    let Some((first, rest)) = parts.split_first() else {
        return Err("signed multipart/mixed has no parts".into());
    };
    match first.mime.as_str() {
        "text/plain" => {}
        "multipart/alternative" => {
            let alt = first.children()?;
            let kinds: Vec<&str> = alt.iter().map(|p| p.mime.as_str()).collect();
            if kinds != ["text/plain", "text/html"] {
                return Err(format!(
                    "first part is multipart/alternative of [{}], expected [text/plain, text/html]",
                    kinds.join(", ")
                ));
            }
        }
        other => {
            return Err(format!(
                "first part of the signed content is \"{}\", expected text/plain or multipart/alternative",
                clip(other)
            ))
        }
    }

    let daticert_parts: Vec<&Part<'_>> = rest.iter().filter(|p| p.named("daticert.xml")).collect();
    let dp = match daticert_parts.as_slice() {
        [one] => *one,
        [] => return Err("no daticert.xml part".into()),
        many => {
            return Err(format!(
                "{} daticert.xml parts, exactly one expected",
                many.len()
            ))
        }
    };
    if !matches!(dp.mime.as_str(), "application/xml" | "text/xml") {
        return Err(format!(
            "daticert.xml has content type \"{}\", expected application/xml",
            clip(&dp.mime)
        ));
    }
    let xml = mime::decode_transfer(dp.body, dp.cte.as_deref())
        .map_err(|e| format!("daticert.xml: {e}"))?;
    let daticert = Daticert::parse(&xml).map_err(|e| format!("daticert.xml: {e}"))?;
    daticert
        .check_for_tipo()
        .map_err(|e| format!("daticert.xml: {e}"))?;
    let expected = match class {
        HeaderClass::Envelope => super::kind::Tipo::PostaCertificata,
        HeaderClass::Receipt(r) => r.tipo(),
    };
    if daticert.tipo != expected {
        return Err(format!(
            "daticert.xml tipo \"{}\" does not match the header ({})",
            daticert.tipo,
            class_header_text(class)
        ));
    }

    let postacert: Vec<&Part<'_>> = rest.iter().filter(|p| p.named("postacert.eml")).collect();
    if postacert.len() > 1 {
        return Err(format!(
            "{} postacert.eml parts, at most one expected",
            postacert.len()
        ));
    }
    if let Some(p) = postacert.first() {
        if p.mime != "message/rfc822" {
            return Err(format!(
                "postacert.eml has content type \"{}\", expected message/rfc822",
                clip(&p.mime)
            ));
        }
    }
    let has_postacert = !postacert.is_empty();
    let (must, what) = match class {
        HeaderClass::Envelope => (Some(true), "a transport envelope".to_string()),
        HeaderClass::Receipt(Ricevuta::AvvenutaConsegna) => {
            let t = daticert.ricevuta.unwrap_or_default();
            (
                Some(t != ReceiptType::Sintetica),
                format!("an avvenuta-consegna receipt ({t})"),
            )
        }
        HeaderClass::Receipt(Ricevuta::ErroreConsegna) => (None, String::new()),
        HeaderClass::Receipt(r) => (Some(false), format!("a {} message", r.as_str())),
    };
    match must {
        Some(true) if !has_postacert => {
            return Err(format!("{what} must carry the original (postacert.eml)"))
        }
        Some(false) if has_postacert => {
            return Err(format!(
                "{what} must not carry the original (postacert.eml)"
            ))
        }
        _ => {}
    }

    // Provider domain check (spec §5.2 item 4, §11 last row).
    match class {
        HeaderClass::Envelope => match &v.provider {
            Some(p) => {
                let dom = domain_of(&daticert.mittente).ok_or_else(|| {
                    format!(
                        "daticert mittente \"{}\" has no domain",
                        clip(&daticert.mittente)
                    )
                })?;
                if !p.manages(&dom) {
                    return Err(format!(
                        "sender domain \"{dom}\" (daticert mittente) is not managed by the signing provider \"{}\"",
                        p.name
                    ));
                }
            }
            None => notes.push(
                "provider record unknown: managed-domain check of daticert mittente skipped".into(),
            ),
        },
        HeaderClass::Receipt(_) => {
            if let (Some(p), Some(dom)) = (&v.provider, headers.from.as_deref().and_then(domain_of))
            {
                if !p.manages(&dom) {
                    tracing::info!(
                        provider = %p.name,
                        domain = %dom,
                        "receipt From domain not among the provider's managed domains (log only)"
                    );
                    notes.push(format!(
                        "From domain \"{dom}\" is not a managed domain of provider \"{}\" (logged only)",
                        p.name
                    ));
                }
            }
        }
    }

    agreement(
        class,
        &daticert,
        header,
        &headers,
        postacert.first().copied(),
    )?;

    Ok(Formal {
        class,
        daticert,
        headers,
        has_postacert,
        notes,
    })
}

/// The copies of the certification data must agree with the signed daticert (spec §3.1,
/// §2.3; hostile input, tests/HOSTILE.md): every role keys on the daticert, so a message
/// whose header or carried original says something else would be taken in charge for one
/// identity and delivered or answered for another.
///
/// * `X-Riferimento-Message-ID` = daticert `msgid` (when both are present; every message
///   type);
/// * transport envelopes: `Message-ID` = daticert `identificativo`; the sender named in the
///   `From` display name "Per conto di: …" = daticert `mittente`; every daticert
///   `destinatari` among the `To` and `Cc` addresses of the envelope and of
///   `postacert.eml` (case-insensitive); the `From` address of `postacert.eml` = daticert
///   `mittente`.
fn agreement(
    class: HeaderClass,
    d: &Daticert,
    header: &[u8],
    top: &TopHeaders,
    postacert: Option<&Part<'_>>,
) -> Result<(), String> {
    let same_id = |a: &str, b: &str| unbracketed(a) == unbracketed(b);
    if let (Some(r), Some(m)) = (&top.riferimento_message_id, &d.msgid) {
        if !same_id(r, m) {
            return Err(format!(
                "X-Riferimento-Message-ID \"{}\" differs from the daticert msgid \"{}\"",
                clip(r),
                clip(m)
            ));
        }
    }
    if class != HeaderClass::Envelope {
        return Ok(());
    }
    match &top.message_id {
        Some(id) if same_id(id, &d.identificativo) => {}
        Some(id) => {
            return Err(format!(
                "Message-ID \"{}\" differs from the daticert identificativo \"{}\"",
                clip(id),
                clip(&d.identificativo)
            ))
        }
        None => return Err("transport envelope without a Message-ID".into()),
    }
    if let Some(sender) = &top.on_behalf_of {
        if !sender.eq_ignore_ascii_case(d.mittente.trim()) {
            return Err(format!(
                "From says \"Per conto di: {}\", the daticert mittente is \"{}\"",
                clip(sender),
                clip(&d.mittente)
            ));
        }
    }
    let certified: BTreeSet<String> = d
        .destinatari
        .iter()
        .map(|x| x.address.trim().to_ascii_lowercase())
        .collect();
    let shown = |info: &OriginalInfo| -> BTreeSet<String> {
        info.to.iter().chain(&info.cc).cloned().collect()
    };
    // Every certified recipient is one the message shows (a recipient certified but not
    // shown would be a blind copy, which PEC forbids, spec §5.1); the reception point
    // also requires each RCPT to be certified.
    let unshown = |info: &OriginalInfo| -> Option<String> {
        let shown = shown(info);
        let missing: BTreeSet<String> = certified.difference(&shown).cloned().collect();
        (!missing.is_empty()).then(|| join(&missing))
    };
    let envelope = OriginalInfo::parse(header).map_err(|e| format!("envelope header: {e}"))?;
    if let Some(missing) = unshown(&envelope) {
        return Err(format!(
            "daticert destinatari not in the To/Cc of the envelope: {}",
            clip(&missing)
        ));
    }
    if let Some(p) = postacert {
        // Only the header of the carried original is read: no copy of its body unless it
        // is transfer-encoded (which message/rfc822 should not be, RFC 2046 §5.2.1).
        let decoded;
        let raw = match p
            .cte
            .as_deref()
            .map(|c| c.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("7bit" | "8bit" | "binary") => p.body,
            Some(_) => {
                decoded = mime::decode_transfer(p.body, p.cte.as_deref())
                    .map_err(|e| format!("postacert.eml: {e}"))?;
                &decoded[..]
            }
        };
        let (original_header, _) = mime::split_header_body(raw);
        let original =
            OriginalInfo::parse(original_header).map_err(|e| format!("postacert.eml: {e}"))?;
        let from = original.from.first().map(String::as_str).unwrap_or("");
        if !from.eq_ignore_ascii_case(d.mittente.trim()) {
            return Err(format!(
                "postacert.eml is from \"{}\", the daticert mittente is \"{}\"",
                clip(from),
                clip(&d.mittente)
            ));
        }
        if let Some(missing) = unshown(&original) {
            return Err(format!(
                "daticert destinatari not in the To/Cc of postacert.eml: {}",
                clip(&missing)
            ));
        }
    }
    Ok(())
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

fn header_class(fields: &[RawField<'_>]) -> Result<HeaderClass, String> {
    let t: Vec<String> = mime::all(fields, "x-trasporto")
        .map(RawField::unfolded)
        .collect();
    let r: Vec<String> = mime::all(fields, "x-ricevuta")
        .map(RawField::unfolded)
        .collect();
    match (t.as_slice(), r.as_slice()) {
        ([], []) => Err("neither X-Trasporto nor X-Ricevuta in the top-level header".into()),
        ([t], []) => match Trasporto::parse(t) {
            Some(Trasporto::PostaCertificata) => Ok(HeaderClass::Envelope),
            Some(Trasporto::Errore) => Err(
                "anomaly envelope (X-Trasporto: errore) from outside: only transport envelopes and receipts are accepted"
                    .into(),
            ),
            None => Err(format!(
                "X-Trasporto value \"{}\" is not posta-certificata",
                clip(t)
            )),
        },
        ([], [r]) => Ricevuta::parse(r)
            .map(HeaderClass::Receipt)
            .ok_or_else(|| {
                format!(
                    "X-Ricevuta value \"{}\" is not one of the seven receipt types",
                    clip(r)
                )
            }),
        (t, r) => Err(format!(
            "{} X-Trasporto and {} X-Ricevuta headers, exactly one class header expected",
            t.len(),
            r.len()
        )),
    }
}

fn class_header_text(c: HeaderClass) -> String {
    match c {
        HeaderClass::Envelope => "X-Trasporto: posta-certificata".into(),
        HeaderClass::Receipt(r) => format!("X-Ricevuta: {}", r.as_str()),
    }
}

fn top_headers(header: &[u8], fields: &[RawField<'_>]) -> TopHeaders {
    let mut h = TopHeaders {
        riferimento_message_id: mime::first_value(fields, "x-riferimento-message-id"),
        tipo_ricevuta: mime::first_value(fields, "x-tiporicevuta")
            .as_deref()
            .and_then(ReceiptType::parse),
        mittente: mime::first_value(fields, "x-mittente"),
        security_flag: mime::first_value(fields, "x-verificasicurezza")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("errore")),
        ..TopHeaders::default()
    };
    if let Some(m) = MessageParser::default().parse_headers(header) {
        h.message_id = m.message_id().map(str::to_string);
        h.subject = m.subject().map(str::to_string);
        let first = m.from().and_then(|a| a.first());
        h.from = first.and_then(|a| a.address()).map(str::to_string);
        h.on_behalf_of = first.and_then(|a| a.name()).and_then(on_behalf_of);
    }
    h
}

/// The sender in a display name "Per conto di: <sender>" (any case, quotes and spaces
/// trimmed); `None` for any other display name.
fn on_behalf_of(name: &str) -> Option<String> {
    let name = name.trim().trim_matches('"').trim();
    let prefix = "per conto di:";
    let head = name.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let sender = name[prefix.len()..]
        .trim()
        .trim_matches(|c| c == '<' || c == '>');
    (!sender.is_empty()).then(|| sender.to_string())
}

/// Lower-case domain of an address (`a@B.it` → `b.it`).
fn domain_of(addr: &str) -> Option<String> {
    let a = addr.trim().trim_start_matches('<').trim_end_matches('>');
    let (_, d) = a.rsplit_once('@')?;
    let d = d.trim();
    (!d.is_empty()).then(|| d.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Instant {
        Instant::parse_cli("2025-01-01").unwrap()
    }

    #[test]
    fn class_headers_on_unsigned_mail_never_count() {
        let trust = TrustSet::new();
        for raw in [
            &b"From: posta-certificata@pec.example.it\nX-Ricevuta: avvenuta-consegna\nContent-Type: text/plain\n\nforged\n"[..],
            b"X-Trasporto: posta-certificata\n\n",
            b"",
            b"\x00\xff garbage",
        ] {
            match classify(raw, &trust, at()) {
                Classification::NotPec { reason } => assert!(reason.starts_with("not signed")),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn header_class_rules() {
        let f = |s: &'static str| mime::scan_fields(s.as_bytes());
        assert_eq!(
            header_class(&f("x-trasporto: Posta-Certificata\n")),
            Ok(HeaderClass::Envelope)
        );
        assert_eq!(
            header_class(&f("X-RICEVUTA: presa-in-carico\n")),
            Ok(HeaderClass::Receipt(Ricevuta::PresaInCarico))
        );
        assert!(header_class(&f("X-Trasporto: errore\n"))
            .unwrap_err()
            .contains("anomaly"));
        assert!(header_class(&f("X-Ricevuta: consegna\n")).is_err());
        assert!(header_class(&f(
            "X-Ricevuta: accettazione\nX-Trasporto: posta-certificata\n"
        ))
        .is_err());
        assert!(header_class(&f("X-Ricevuta: accettazione\nX-Ricevuta: accettazione\n")).is_err());
        assert!(header_class(&f("Subject: x\n")).is_err());
    }

    use crate::crypto::verify::testing::{signed_message, signer, wrap_base64};
    use crate::index::ProviderInfo;

    fn daticert(tipo: &str, extra: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<postacert tipo=\"{tipo}\" errore=\"nessuno\">\n<intestazione><mittente>mario@pec.example.it</mittente><destinatari tipo=\"certificato\">anna@pec.other.it</destinatari><risposte>mario@pec.example.it</risposte><oggetto>Prova</oggetto></intestazione>\n<dati><gestore-emittente>Example PEC S.p.A.</gestore-emittente><data zona=\"+0100\"><giorno>05/01/2025</giorno><ora>10:00:00</ora></data><identificativo>opec1.20250105100000.1.1@pec.example.it</identificativo><msgid>&lt;abc@client&gt;</msgid>{extra}</dati>\n</postacert>\n"
        )
    }

    fn text_part() -> String {
        "Content-Type: text/plain; charset=\"iso-8859-1\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nMessaggio di posta certificata: --MIX nel testo =E8 contenuto\r\n".into()
    }

    fn daticert_part(xml: &str) -> String {
        format!(
            "Content-Type: application/xml; name=\"daticert.xml\"\r\nContent-Disposition: inline; filename=\"daticert.xml\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            wrap_base64(xml.as_bytes())
        )
    }

    fn postacert_part(inner_headers: &str) -> String {
        format!(
            "Content-Type: message/rfc822; name=\"postacert.eml\"\r\nContent-Disposition: inline; filename=\"postacert.eml\"\r\n\r\n{inner_headers}From: mario@pec.example.it\r\nTo: Anna <ANNA@pec.other.it>\r\nSubject: Prova\r\n\r\ncorpo\r\n"
        )
    }

    fn mixed(parts: &[String]) -> Vec<u8> {
        let mut m = String::from("Content-Type: multipart/mixed; boundary=\"MIX\"\r\n\r\nThis is a multi-part message in MIME format...\r\n");
        for p in parts {
            m.push_str("\r\n--MIX\r\n");
            m.push_str(p);
        }
        m.push_str("\r\n--MIX--\r\n");
        m.into_bytes()
    }

    struct Fixture {
        cert: openssl::x509::X509,
        key: openssl::pkey::PKey<openssl::pkey::Private>,
        trust: TrustSet,
    }

    fn fixture(domains: &[&str]) -> Fixture {
        let (cert, key) = signer(42);
        let mut trust = TrustSet::new();
        trust.add(
            cert.to_der().unwrap(),
            Some(ProviderInfo {
                name: "Example PEC S.p.A.".into(),
                mail_receipt: "ricevute@pec.example.it".into(),
                managed_domains: domains.iter().map(|d| d.to_string()).collect(),
            }),
        );
        Fixture { cert, key, trust }
    }

    fn run(f: &Fixture, class_header: &str, content: &[u8]) -> Classification {
        let headers = format!(
            "From: posta-certificata@pec.example.it\r\nTo: anna@pec.other.it\r\nSubject: =?UTF-8?Q?POSTA_CERTIFICATA:_Prova_=C3=A8?=\r\nMessage-ID: <opec1.20250105100000.1.1@pec.example.it>\r\nX-Riferimento-Message-ID: <abc@client>\r\n{class_header}"
        );
        let raw = signed_message(&headers, content, &f.cert, &f.key);
        classify(&raw, &f.trust, at())
    }

    fn wrong(c: Classification) -> String {
        match c {
            Classification::SignedButWrong { reason, .. } => reason,
            other => panic!("expected SignedButWrong, got {other:?}"),
        }
    }

    #[test]
    fn synthetic_envelope_and_receipts() {
        let f = fixture(&["pec.example.it"]);
        let env = mixed(&[
            text_part(),
            daticert_part(&daticert(
                "posta-certificata",
                "<ricevuta tipo=\"completa\" />",
            )),
            // A forged receipt inside the original is just content.
            postacert_part("X-Ricevuta: avvenuta-consegna\r\n"),
        ]);
        match run(
            &f,
            "X-Trasporto: posta-certificata\r\nX-TipoRicevuta: breve\r\n",
            &env,
        ) {
            Classification::TransportEnvelope(m) => {
                assert!(m.has_postacert);
                assert!(m.notes.is_empty(), "{:?}", m.notes);
                assert_eq!(
                    m.subject.as_deref(),
                    Some("POSTA CERTIFICATA: Prova \u{e8}")
                );
                assert_eq!(
                    m.message_id.as_deref(),
                    Some("opec1.20250105100000.1.1@pec.example.it")
                );
                assert_eq!(m.riferimento_message_id.as_deref(), Some("<abc@client>"));
                assert_eq!(m.tipo_ricevuta, Some(ReceiptType::Breve));
                assert_eq!(m.from.as_deref(), Some("posta-certificata@pec.example.it"));
                assert_eq!(m.daticert.msgid.as_deref(), Some("<abc@client>"));
            }
            other => panic!("{other:?}"),
        }

        // Sintetica: no original; virus notice headers.
        let sint = mixed(&[
            text_part(),
            daticert_part(&daticert(
                "avvenuta-consegna",
                "<ricevuta tipo=\"sintetica\" /><consegna>anna@pec.other.it</consegna>",
            )),
        ]);
        assert!(matches!(
            run(&f, "X-Ricevuta: avvenuta-consegna\r\n", &sint),
            Classification::Receipt(Ricevuta::AvvenutaConsegna, _)
        ));
        let virus = mixed(&[
            text_part(),
            daticert_part(
                &daticert(
                    "rilevazione-virus",
                    "<consegna>anna@pec.other.it</consegna><errore-esteso>Eicar</errore-esteso>",
                )
                .replace("errore=\"nessuno\"", "errore=\"virus\""),
            ),
        ]);
        match run(
            &f,
            "X-Ricevuta: rilevazione-virus\r\nX-Mittente: mario@pec.example.it\r\nX-VerificaSicurezza: errore\r\n",
            &virus,
        ) {
            Classification::Receipt(Ricevuta::RilevazioneVirus, m) => {
                assert_eq!(m.mittente_header.as_deref(), Some("mario@pec.example.it"));
                assert!(m.security_flag);
                assert!(!m.has_postacert);
            }
            other => panic!("{other:?}"),
        }

        // multipart/alternative first part, daticert as text/xml quoted-printable.
        let alt = "Content-Type: multipart/alternative; boundary=\"ALT\"\r\n\r\n--ALT\r\nContent-Type: text/plain\r\n\r\ntesto\r\n--ALT\r\nContent-Type: text/html\r\n\r\n<p>testo</p>\r\n--ALT--\r\n".to_string();
        let xml = daticert("accettazione", "");
        let qp = format!(
            "Content-Type: text/xml; name=daticert.xml\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{}",
            xml.replace('=', "=3D")
        );
        assert!(matches!(
            run(&f, "x-ricevuta: accettazione\r\n", &mixed(&[alt, qp])),
            Classification::Receipt(Ricevuta::Accettazione, _)
        ));
    }

    #[test]
    fn synthetic_formal_violations() {
        let f = fixture(&["pec.example.it"]);
        let env_xml = daticert("posta-certificata", "<ricevuta tipo=\"completa\" />");
        let acc_xml = daticert("accettazione", "");
        let env = "X-Trasporto: posta-certificata\r\n";
        let acc = "X-Ricevuta: accettazione\r\n";

        let r = wrong(run(
            &f,
            env,
            &mixed(&[text_part(), daticert_part(&env_xml)]),
        ));
        assert!(r.contains("must carry the original"), "{r}");

        let r = wrong(run(
            &f,
            acc,
            &mixed(&[text_part(), daticert_part(&acc_xml), postacert_part("")]),
        ));
        assert!(r.contains("must not carry the original"), "{r}");

        let sint_xml = daticert(
            "avvenuta-consegna",
            "<ricevuta tipo=\"sintetica\" /><consegna>anna@pec.other.it</consegna>",
        );
        let r = wrong(run(
            &f,
            "X-Ricevuta: avvenuta-consegna\r\n",
            &mixed(&[text_part(), daticert_part(&sint_xml), postacert_part("")]),
        ));
        assert!(r.contains("(sintetica) must not carry"), "{r}");

        let compl_xml = daticert(
            "avvenuta-consegna",
            "<ricevuta tipo=\"completa\" /><consegna>anna@pec.other.it</consegna>",
        );
        let r = wrong(run(
            &f,
            "X-Ricevuta: avvenuta-consegna\r\n",
            &mixed(&[text_part(), daticert_part(&compl_xml)]),
        ));
        assert!(r.contains("(completa) must carry"), "{r}");

        let r = wrong(run(
            &f,
            acc,
            &mixed(&[
                text_part(),
                daticert_part(&acc_xml),
                daticert_part(&acc_xml),
            ]),
        ));
        assert!(r.contains("2 daticert.xml parts"), "{r}");

        let r = wrong(run(&f, acc, &mixed(&[text_part()])));
        assert!(r.contains("no daticert.xml"), "{r}");

        let r = wrong(run(&f, acc, &mixed(&[daticert_part(&acc_xml)])));
        assert!(r.contains("first part"), "{r}");

        let html_only = "Content-Type: multipart/alternative; boundary=\"ALT\"\r\n\r\n--ALT\r\nContent-Type: text/html\r\n\r\nx\r\n--ALT--\r\n".to_string();
        let r = wrong(run(&f, acc, &mixed(&[html_only, daticert_part(&acc_xml)])));
        assert!(r.contains("multipart/alternative of [text/html]"), "{r}");

        let r = wrong(run(&f, acc, b"Content-Type: text/plain\r\n\r\nciao"));
        assert!(r.contains("expected multipart/mixed"), "{r}");

        let r = wrong(run(
            &f,
            acc,
            &mixed(&[text_part(), daticert_part(&env_xml)]),
        ));
        assert!(r.contains("does not match the header"), "{r}");

        let r = wrong(run(
            &f,
            acc,
            &mixed(&[text_part(), daticert_part("<postacert")]),
        ));
        assert!(r.starts_with("daticert.xml:"), "{r}");

        let bad_type = "Content-Type: application/octet-stream; name=\"daticert.xml\"\r\n\r\nx\r\n"
            .to_string();
        let r = wrong(run(&f, acc, &mixed(&[text_part(), bad_type])));
        assert!(r.contains("expected application/xml"), "{r}");

        let r = wrong(run(&f, "X-Trasporto: errore\r\n", &mixed(&[text_part()])));
        assert!(r.contains("anomaly envelope"), "{r}");

        // Unclosed inner multipart.
        let mut open = mixed(&[text_part(), daticert_part(&acc_xml)]);
        open.truncate(open.len() - "--\r\n".len());
        let r = wrong(run(&f, acc, &open));
        assert!(r.contains("no closing delimiter"), "{r}");
    }

    #[test]
    fn synthetic_provider_domain_check() {
        let env = mixed(&[
            text_part(),
            daticert_part(&daticert(
                "posta-certificata",
                "<ricevuta tipo=\"completa\" />",
            )),
            postacert_part(""),
        ]);
        let f = fixture(&["other.example.it"]);
        let r = wrong(run(&f, "X-Trasporto: posta-certificata\r\n", &env));
        assert!(
            r.contains("\"pec.example.it\"") && r.contains("not managed"),
            "{r}"
        );
        let f = fixture(&["PEC.Example.IT"]);
        assert!(matches!(
            run(&f, "X-Trasporto: posta-certificata\r\n", &env),
            Classification::TransportEnvelope(_)
        ));
    }

    /// Case 6 of the certification bugs (tests/HOSTILE.md): a signed envelope whose
    /// header or carried original disagrees with its daticert is not formally correct.
    #[test]
    fn copies_of_the_certification_data_must_agree_with_the_daticert() {
        let f = fixture(&["pec.example.it"]);
        let xml = daticert("posta-certificata", "<ricevuta tipo=\"completa\" />");
        let env = |postacert_headers: &str, from: &str| {
            mixed(&[
                text_part(),
                daticert_part(&xml),
                format!(
                    "Content-Type: message/rfc822; name=\"postacert.eml\"\r\nContent-Disposition: inline; filename=\"postacert.eml\"\r\n\r\n{postacert_headers}From: {from}\r\nSubject: Prova\r\n\r\ncorpo\r\n"
                ),
            ])
        };
        let good = env("To: anna@pec.other.it\r\n", "mario@pec.example.it");
        let sign = |top: &str, content: &[u8]| {
            let raw = signed_message(top, content, &f.cert, &f.key);
            classify(&raw, &f.trust, at())
        };
        let top = |message_id: &str, riferimento: &str, from: &str, to: &str| {
            format!("From: {from}\r\nTo: {to}\r\nSubject: POSTA CERTIFICATA: Prova\r\nMessage-ID: {message_id}\r\nX-Riferimento-Message-ID: {riferimento}\r\nX-Trasporto: posta-certificata\r\n")
        };
        let id = "<opec1.20250105100000.1.1@pec.example.it>";
        let on_behalf = "\"Per conto di: Mario@PEC.example.it\" <posta-certificata@pec.example.it>";
        assert!(matches!(
            sign(
                &top(id, "<abc@client>", on_behalf, "anna@pec.other.it"),
                &good
            ),
            Classification::TransportEnvelope(_)
        ));
        let cases = [
            (
                top(
                    "<opec1.other@pec.example.it>",
                    "<abc@client>",
                    on_behalf,
                    "anna@pec.other.it",
                ),
                good.clone(),
                "differs from the daticert identificativo",
            ),
            (
                top(id, "<other@client>", on_behalf, "anna@pec.other.it"),
                good.clone(),
                "differs from the daticert msgid",
            ),
            (
                top(
                    id,
                    "<abc@client>",
                    "\"Per conto di: alice@pec.example.it\" <posta-certificata@pec.example.it>",
                    "anna@pec.other.it",
                ),
                good.clone(),
                "Per conto di: alice@pec.example.it",
            ),
            (
                top(id, "<abc@client>", on_behalf, "bob@pec.other.it"),
                good.clone(),
                "not in the To/Cc of the envelope: anna@pec.other.it",
            ),
            (
                top(id, "<abc@client>", on_behalf, "anna@pec.other.it"),
                env("To: bob@pec.other.it\r\n", "mario@pec.example.it"),
                "not in the To/Cc of postacert.eml: anna@pec.other.it",
            ),
            (
                top(id, "<abc@client>", on_behalf, "anna@pec.other.it"),
                env("To: anna@pec.other.it\r\n", "alice@pec.example.it"),
                "postacert.eml is from \"alice@pec.example.it\"",
            ),
        ];
        for (headers, content, want) in cases {
            let why = wrong(sign(&headers, &content));
            assert!(why.contains(want), "{why} does not say {want}");
        }
        // Receipts: X-Riferimento-Message-ID is the original's msgid.
        let receipt = mixed(&[
            text_part(),
            daticert_part(&daticert(
                "avvenuta-consegna",
                "<ricevuta tipo=\"sintetica\" /><consegna>anna@pec.other.it</consegna>",
            )),
        ]);
        let head = |riferimento: &str| {
            format!("From: posta-certificata@pec.example.it\r\nTo: mario@pec.example.it\r\nMessage-ID: <r1@pec.example.it>\r\nX-Riferimento-Message-ID: {riferimento}\r\nX-Ricevuta: avvenuta-consegna\r\n")
        };
        assert!(matches!(
            sign(&head("<abc@client>"), &receipt),
            Classification::Receipt(Ricevuta::AvvenutaConsegna, _)
        ));
        assert!(wrong(sign(&head("<zzz@client>"), &receipt)).contains("msgid"));
    }

    #[test]
    fn on_behalf_of_reads_the_display_name() {
        assert_eq!(
            on_behalf_of("Per conto di: a@b.it"),
            Some("a@b.it".to_string())
        );
        assert_eq!(
            on_behalf_of("\"PER CONTO DI:  <a@b.it> \""),
            Some("a@b.it".to_string())
        );
        assert_eq!(on_behalf_of("Per conto di:"), None);
        assert_eq!(on_behalf_of("Mario Rossi"), None);
        assert_eq!(on_behalf_of("Per"), None);
    }

    #[test]
    fn domains() {
        assert_eq!(domain_of(" A.B@Pec.IT "), Some("pec.it".into()));
        assert_eq!(domain_of("<x@y.it>"), Some("y.it".into()));
        assert_eq!(domain_of("nodomain"), None);
        assert_eq!(domain_of("x@"), None);
    }
}

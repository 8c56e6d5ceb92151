// SPDX-License-Identifier: GPL-3.0-or-later
//! Builders for every generated message (spec §2–§3): transport and anomaly envelopes,
//! receipts and notices, each signed as S/MIME `multipart/signed` around `multipart/mixed`.
//!
//! Inputs are typed: the original message bytes and SMTP envelope at the access point, the
//! [`Certification`] data (daticert `intestazione` plus identifiers) for everything issued
//! about a transport envelope, the transaction [`Instant`], error codes. The output is a
//! [`Generated`] message ready for injection: its SMTP envelope, header fields and body.

use bytes::Bytes;
use mail_parser::{HeaderValue, MessageParser};
use thiserror::Error;

use super::breve;
use super::daticert::{DataCert, Daticert, Destinatario};
use super::ids::{bracketed, unbracketed, MsgIdSource};
use super::kind::{
    Errore, MessageKind, Placement, ReceiptType, RecipientType, Timeout, Tipo, Trasporto,
};
use super::mime::{self, RawField};
use super::time::Instant;
use crate::crypto::{smime, SignError, Signer};

#[derive(Debug, Error)]
pub enum BuildError {
    #[error("original message: {0}")]
    Original(String),
    #[error("breve receipt: {0}")]
    Breve(String),
    #[error("signing: {0}")]
    Sign(#[from] SignError),
}

/// Our header on a transport envelope whose attachments carry a [`Caution`], for the
/// receiving provider and the recipient's client: the kinds found, comma separated
/// (`macro`, `encrypted`, `not-inspected`). [UNVERIFIED] Our extension: no PEC source
/// defines such a header (spec §12.4); receivers keep unknown `X-` headers and never
/// classify by them. It sits on the outer header, outside the signed content.
pub const ATTACHMENT_WARNING_HEADER: &str = "X-Pec-Attachment-Warning";

/// What the access point warns the recipient about in an accepted submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CautionKind {
    /// A document with macros (VBA).
    Macro,
    /// Encrypted or password protected: the antivirus could not look inside.
    Encrypted,
    /// Not inspected in full: a bound of the attachment checks (depth, entries, size,
    /// time) stopped the walk, or the container could not be read.
    NotInspected,
}

impl CautionKind {
    /// The value in [`ATTACHMENT_WARNING_HEADER`].
    pub fn as_str(self) -> &'static str {
        match self {
            CautionKind::Macro => "macro",
            CautionKind::Encrypted => "encrypted",
            CautionKind::NotInspected => "not-inspected",
        }
    }

    /// The courtesy notice's sentence, before the attachments' names.
    fn sentence(self) -> &'static str {
        match self {
            CautionKind::Macro => {
                "Attenzione: il messaggio contiene allegati con macro, che possono eseguire \
                 codice quando vengono aperti; aprirli solo se si conosce e si attende il mittente:"
            }
            CautionKind::Encrypted => {
                "Attenzione: il messaggio contiene allegati cifrati o protetti da password, \
                 sui quali non è stato possibile il controllo antivirus:"
            }
            CautionKind::NotInspected => {
                "Attenzione: non è stato possibile esaminare per intero questi allegati \
                 (superati i limiti di controllo del gestore):"
            }
        }
    }
}

/// One attachment warned about; `name` is its path in the message (containers first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caution {
    pub kind: CautionKind,
    pub name: String,
}

/// Most attachments named per kind in the courtesy notice.
const MAX_NAMED: usize = 10;

/// The provider issuing messages: `gestore-emittente` and service address (spec §1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    /// `providerName` as in the index and in the certificate Subject.
    pub provider_name: String,
    /// Service address, e.g. `posta-certificata@pec.example.it`; equals the certificate's
    /// rfc822Name so that mail clients validate the signature (spec §2.3).
    pub service_address: String,
    /// Add `Sender:` (same value as `From:`) to envelopes, as the technical rules say.
    /// Aruba and Namirial do not; receivers accept both.
    pub envelope_sender_header: bool,
}

/// What every message about one transport envelope certifies: the daticert `intestazione`,
/// the PEC msgid and the client msgid.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Certification {
    /// Sender (SMTP reverse path).
    pub mittente: String,
    /// Every recipient, certified or external.
    pub destinatari: Vec<Destinatario>,
    /// Reply-To of the original, or the sender.
    pub risposte: String,
    /// Decoded subject of the original.
    pub oggetto: String,
    /// PEC msgid of the transport envelope, without angle brackets.
    pub identificativo: String,
    /// Client msgid of the original, with angle brackets.
    pub msgid: Option<String>,
    /// Delivery receipt type requested by the sender (`X-TipoRicevuta`).
    pub requested: ReceiptType,
    /// `To:` and `Cc:` address lists of the original, lower-cased, for the To/Cc rule.
    pub to: Vec<String>,
    pub cc: Vec<String>,
}

impl Certification {
    /// Certification data for a submission: `mail_from` and the classified RCPT TO list
    /// are the certified data (spec §2.3); subject, Reply-To, To/Cc and the client msgid come
    /// from the original's header.
    pub fn for_submission(
        original: &OriginalInfo,
        mail_from: &str,
        recipients: &[(String, RecipientType)],
        pec_id: &str,
    ) -> Self {
        Certification {
            mittente: mail_from.to_string(),
            destinatari: recipients
                .iter()
                .map(|(a, t)| Destinatario {
                    address: a.clone(),
                    tipo: *t,
                })
                .collect(),
            risposte: original
                .reply_to
                .clone()
                .unwrap_or_else(|| mail_from.to_string()),
            oggetto: original.subject.clone(),
            identificativo: unbracketed(pec_id).to_string(),
            // [UNVERIFIED] spec §5.1: when the client supplied no Message-ID, the PEC msgid
            // stands in as the reference, so every receipt still correlates.
            msgid: Some(
                original
                    .message_id
                    .as_deref()
                    .map(bracketed)
                    .unwrap_or_else(|| bracketed(pec_id)),
            ),
            requested: original.tipo_ricevuta.unwrap_or_default(),
            to: original.to.clone(),
            cc: original.cc.clone(),
        }
    }

    /// Certification data carried by a received transport envelope's daticert, with the
    /// To/Cc lists of the original inside it (for the completa/breve/sintetica rule).
    pub fn from_envelope(d: &Daticert, to: Vec<String>, cc: Vec<String>) -> Self {
        Certification {
            mittente: d.mittente.clone(),
            destinatari: d.destinatari.clone(),
            risposte: d.risposte.clone(),
            oggetto: d.oggetto.clone().unwrap_or_default(),
            identificativo: d.identificativo.clone(),
            msgid: d.msgid.clone(),
            requested: d.ricevuta.unwrap_or_default(),
            to,
            cc,
        }
    }

    /// To vs Cc placement of one recipient (spec §3.6): only-Cc is carbon copy; To, both or
    /// neither count as primary.
    pub fn placement(&self, recipient: &str) -> Placement {
        let r = recipient.to_ascii_lowercase();
        let in_to = self.to.contains(&r);
        let in_cc = self.cc.contains(&r);
        if in_cc && !in_to {
            Placement::CarbonCopy
        } else {
            Placement::Primary
        }
    }

    /// `X-Riferimento-Message-ID` value for every message about this envelope.
    pub fn riferimento(&self) -> String {
        self.msgid
            .clone()
            .unwrap_or_else(|| bracketed(&self.identificativo))
    }

    fn daticert(&self, tipo: Tipo, errore: Errore, issuer: &Issuer, at: Instant) -> Daticert {
        Daticert {
            tipo,
            errore,
            mittente: self.mittente.clone(),
            destinatari: self.destinatari.clone(),
            risposte: self.risposte.clone(),
            oggetto: Some(self.oggetto.clone()),
            gestore_emittente: issuer.provider_name.clone(),
            data: DataCert::from_instant(at),
            identificativo: self.identificativo.clone(),
            msgid: self.msgid.clone(),
            ricevuta: None,
            consegna: None,
            ricezione: Vec::new(),
            errore_esteso: None,
        }
    }
}

/// The original carried in a signed entity (the `multipart/mixed` content of a verified
/// envelope): the body of its `postacert.eml` part, byte-exact.
pub fn carried_original(entity: &[u8]) -> Option<Vec<u8>> {
    with_carried_original(entity, <[u8]>::to_vec)
}

/// `f` of the original carried in `entity` (see [`carried_original`]), borrowed: no copy
/// when the entity is already CRLF.
pub fn with_carried_original<R>(entity: &[u8], f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    let entity = mime::normalize_crlf(entity);
    let top = mime::Entity::parse(&entity);
    let parts = mime::split_multipart(top.body, &top.boundary()?)?;
    let body = parts.parts.iter().find_map(|part| {
        let p = mime::Entity::parse(part);
        (p.mime_type() == "message/rfc822" && p.file_name().as_deref() == Some("postacert.eml"))
            .then_some(p.body)
    })?;
    Some(f(body))
}

impl Certification {
    /// Certification data of a verified transport envelope, with the original it carries
    /// (`None` when the envelope carries no readable `postacert.eml`). The original shares
    /// the entity (a slice, no copy) when the entity is CRLF already.
    pub fn from_verified_envelope(
        daticert: &Daticert,
        entity: &Bytes,
    ) -> Option<(Certification, Bytes)> {
        let original = with_carried_original(entity, |o| crate::crypto::verify::share(entity, o))?;
        let info = OriginalInfo::parse(&original).ok()?;
        Some((
            Certification::from_envelope(daticert, info.to, info.cc),
            original,
        ))
    }

    /// As [`Certification::from_verified_envelope`], without a copy of the original.
    pub fn of_verified_envelope(daticert: &Daticert, entity: &[u8]) -> Option<Certification> {
        let info = with_carried_original(entity, OriginalInfo::parse)?.ok()?;
        Some(Certification::from_envelope(daticert, info.to, info.cc))
    }
}

/// What the builders need from an original message's header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OriginalInfo {
    /// Decoded subject (RFC 2047), empty when absent.
    pub subject: String,
    /// Client msgid without angle brackets.
    pub message_id: Option<String>,
    /// First Reply-To address.
    pub reply_to: Option<String>,
    /// Addresses of every `To:` field, lower-cased, in order.
    pub to: Vec<String>,
    /// Addresses of every `Cc:` field, lower-cased, in order.
    pub cc: Vec<String>,
    /// Addresses of every `From:` field.
    pub from: Vec<String>,
    /// Number of `From:` fields.
    pub from_fields: usize,
    /// Addresses of `Bcc:` fields (must be empty in PEC).
    pub bcc: Vec<String>,
    /// `X-TipoRicevuta`, when present and valid.
    pub tipo_ricevuta: Option<ReceiptType>,
}

impl OriginalInfo {
    /// Reads the header of `raw`. Fails only when the header cannot be read at all.
    pub fn parse(raw: &[u8]) -> Result<Self, BuildError> {
        let raw = mime::normalize_crlf(raw);
        let (header, _) = mime::split_header_body(&raw);
        let fields = mime::fields(header).map_err(BuildError::Original)?;
        let msg = MessageParser::default()
            .parse_headers(header)
            .ok_or_else(|| BuildError::Original("no header".into()))?;
        let addresses = |name: &str| -> Vec<String> {
            msg.header_values(name)
                .flat_map(|v| match v {
                    HeaderValue::Address(a) => a
                        .iter()
                        .filter_map(|x| x.address())
                        .map(|s| s.trim().to_ascii_lowercase())
                        .collect::<Vec<_>>(),
                    _ => Vec::new(),
                })
                .collect()
        };
        let tipo_ricevuta = fields
            .iter()
            .rev()
            .find(|f| f.is("X-TipoRicevuta"))
            .and_then(|f| ReceiptType::parse(&f.unfolded()));
        Ok(OriginalInfo {
            subject: msg.subject().unwrap_or_default().trim().to_string(),
            message_id: msg.message_id().map(|s| s.trim().to_string()),
            reply_to: addresses("Reply-To").into_iter().next(),
            to: addresses("To"),
            cc: addresses("Cc"),
            from: addresses("From"),
            from_fields: fields.iter().filter(|f| f.is("From")).count(),
            bcc: addresses("Bcc"),
            tipo_ricevuta,
        })
    }
}

/// A generated message, ready for injection (or, for the transport envelope at the access
/// point, for rewriting the queued message in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub kind: MessageKind,
    /// `Message-ID` without angle brackets.
    pub message_id: String,
    /// SMTP reverse path.
    pub mail_from: String,
    /// SMTP forward paths.
    pub rcpt_to: Vec<String>,
    /// Header fields kept byte-exact from the original (envelopes only), each with CRLF.
    pub inherited: Vec<Vec<u8>>,
    /// New header fields: name and encoded, possibly folded value (no final CRLF).
    pub headers: Vec<(String, String)>,
    /// The body after the empty line: the `multipart/signed` content.
    pub body: Vec<u8>,
}

impl Generated {
    /// The whole message, CRLF, 7-bit.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.head();
        out.extend_from_slice(&self.body);
        out
    }

    /// The header and the empty line after it: the message is `head()` then `body`
    /// (injected as those two parts, it is never joined in memory).
    pub fn head(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2048);
        for f in &self.inherited {
            out.extend_from_slice(f);
        }
        for (n, v) in &self.headers {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Value of a new header field (not the inherited ones).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Header fields a transport or anomaly envelope keeps from the message it wraps
/// (spec §3.1, §3.11). The anomaly envelope also keeps `Message-ID`.
pub const ENVELOPE_INHERITED: [&str; 5] = ["Received", "Return-Path", "To", "Cc", "Reply-To"];

/// A message before signing: everything but the signature.
struct Draft {
    kind: MessageKind,
    message_id: String,
    mail_from: String,
    rcpt_to: Vec<String>,
    inherited: Vec<Vec<u8>>,
    headers: Vec<(String, String)>,
    entity: Vec<u8>,
}

/// Builds and signs every message a provider issues.
pub struct Builder<'a> {
    pub issuer: &'a Issuer,
    pub signer: &'a dyn Signer,
    pub ids: &'a dyn MsgIdSource,
}

/// The readable part: a title and lines, rendered as text/plain and an equivalent
/// text/html without active content (spec §2.4).
struct Readable {
    title: String,
    lines: Vec<String>,
}

impl Readable {
    fn new(title: &str) -> Self {
        Readable {
            title: title.to_string(),
            lines: Vec::new(),
        }
    }

    fn line(&mut self, s: impl Into<String>) -> &mut Self {
        self.lines.push(s.into());
        self
    }

    /// `Il giorno dd/mm/yyyy alle ore hh:mm:ss (+hhmm) ` (spec §2.4: zone as `+hhmm`).
    fn when(at: Instant) -> String {
        let l = at.legal();
        format!(
            "Il giorno {} alle ore {} ({})",
            l.giorno(),
            l.ora(),
            l.zona()
        )
    }

    fn plain(&self) -> String {
        let mut s = format!("{}\r\n\r\n", self.title);
        for l in &self.lines {
            s.push_str(l);
            s.push_str("\r\n");
        }
        s
    }

    fn html(&self) -> String {
        let mut s = String::from("<html>\r\n<head>\r\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=iso-8859-1\">\r\n<title>");
        s.push_str(&html_escape(&self.title));
        s.push_str("</title>\r\n</head>\r\n<body>\r\n<h3>");
        s.push_str(&html_escape(&self.title));
        s.push_str("</h3>\r\n<p>\r\n");
        for l in &self.lines {
            s.push_str(&html_escape(l));
            s.push_str("<br>\r\n");
        }
        s.push_str("</p>\r\n</body>\r\n</html>\r\n");
        s
    }

    /// The `multipart/alternative` part, headers included.
    fn part(&self) -> Vec<u8> {
        let plain = mime::quoted_printable(&mime::to_latin1(&self.plain()));
        let html = mime::quoted_printable(&mime::to_latin1(&self.html()));
        let b = mime::boundary(&[&plain, &html]);
        let mut out = Vec::with_capacity(plain.len() + html.len() + 512);
        out.extend_from_slice(
            format!("Content-Type: multipart/alternative;\r\n boundary=\"{b}\"\r\n\r\n").as_bytes(),
        );
        for (sub, body) in [("plain", &plain), ("html", &html)] {
            out.extend_from_slice(
                format!(
                    "--{b}\r\nContent-Type: text/{sub}; charset=\"iso-8859-1\"\r\nContent-Disposition: inline\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
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

/// `il messaggio` or `nel messaggio` in the opening sentence.
#[derive(Clone, Copy)]
enum Preposition {
    Il,
    Nel,
}

/// Whom the opening sentence says the message was addressed to.
enum Addressed<'a> {
    /// Every recipient.
    All(&'a [Destinatario]),
    /// Every recipient, each followed by `("posta certificata")` / `("posta ordinaria")`.
    AllTyped(&'a [Destinatario]),
    /// The recipients taken in charge.
    Taken(&'a [String]),
    /// The one recipient this notice is about.
    One(&'a str),
}

impl Readable {
    /// Title plus the opening sentence every receipt and notice shares: day, time, zone,
    /// subject, sender, recipients (spec §3).
    fn about(
        title: &str,
        at: Instant,
        cert: &Certification,
        p: Preposition,
        to: Addressed<'_>,
    ) -> Self {
        let mut t = Readable::new(title);
        let p = match p {
            Preposition::Il => "il",
            Preposition::Nel => "nel",
        };
        t.line(format!("{} {p} messaggio", Readable::when(at)))
            .line(format!(
                "\"{}\" proveniente da \"{}\"",
                cert.oggetto, cert.mittente
            ));
        match to {
            Addressed::All(dest) => {
                t.line("ed indirizzato a:");
                for d in dest {
                    t.line(d.address.clone());
                }
            }
            Addressed::AllTyped(dest) => {
                t.line("ed indirizzato a:");
                for d in dest {
                    t.line(format!("{} (\"{}\")", d.address, d.tipo.label()));
                }
            }
            Addressed::Taken(taken) => {
                t.line("ed indirizzato a:");
                for a in taken {
                    t.line(a.clone());
                }
            }
            Addressed::One(r) => {
                t.line(format!("ed indirizzato a \"{r}\""));
            }
        }
        t
    }
}

/// A receipt or notice before signing (see [`Builder::notice`]).
struct Notice<'a> {
    kind: MessageKind,
    cert: &'a Certification,
    to: &'a str,
    extra_headers: Vec<(String, String)>,
    daticert: Daticert,
    text: Readable,
    /// The original to attach as `postacert.eml`, carried form (borrowed when the caller's
    /// copy already is).
    original: Option<std::borrow::Cow<'a, [u8]>>,
}

impl<'a> Notice<'a> {
    fn to_sender(
        kind: MessageKind,
        cert: &'a Certification,
        daticert: Daticert,
        text: Readable,
    ) -> Self {
        Notice {
            kind,
            cert,
            to: &cert.mittente,
            extra_headers: Vec::new(),
            daticert,
            text,
            original: None,
        }
    }
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

fn daticert_part(d: &Daticert) -> Vec<u8> {
    let mut out = b"Content-Type: application/xml; name=\"daticert.xml\"\r\nContent-Disposition: inline; filename=\"daticert.xml\"\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    out.extend_from_slice(&mime::base64_lines(d.to_xml().as_bytes()));
    out
}

/// The carried message is 7-bit safe except when a received message had 8-bit or NUL
/// bytes in its header, which are kept (see [`super::sevenbit`]): then it is labelled
/// `8bit`, never `7bit` over bytes that are not.
///
/// The header of that part; the message follows it in the entity. `message` is the
/// carried message in pieces, each cut at the start of a line (see [`mixed_entity`]).
fn postacert_head(message: &[&[u8]]) -> Vec<u8> {
    let cte = if message.iter().all(|p| mime::is_seven_bit_safe(p)) {
        "7bit"
    } else {
        "8bit"
    };
    format!("Content-Type: message/rfc822; name=\"postacert.eml\"\r\nContent-Disposition: inline; filename=\"postacert.eml\"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n").into_bytes()
}

/// The signed entity: `multipart/mixed` with the given parts (each with its headers),
/// each part given as the pieces it is made of, written once into one buffer that keeps
/// room for the signature ([`smime::SEAL_HEADROOM`]). Every piece but a part's last ends
/// with a line end, so that no boundary can straddle two pieces.
fn mixed_entity(parts: &[&[&[u8]]]) -> Vec<u8> {
    let pieces: Vec<&[u8]> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    let b = mime::boundary(&pieces);
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(total + 512 + smime::SEAL_HEADROOM);
    out.extend_from_slice(
        format!(
            "Content-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\nThis is a multi-part message in MIME format.\r\n\r\n"
        )
        .as_bytes(),
    );
    for p in parts {
        out.extend_from_slice(format!("--{b}\r\n").as_bytes());
        for piece in p.iter() {
            out.extend_from_slice(piece);
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    out
}

/// Prepares a message to travel inside a generated one: CRLF line ends and 7-bit safe.
fn carried(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    // The common case, a canonical 7-bit message, is neither copied nor rewritten.
    match mime::normalize_crlf(raw) {
        Cow::Borrowed(b) => super::sevenbit::make_seven_bit(b),
        Cow::Owned(v) => Cow::Owned(super::sevenbit::make_seven_bit(&v).into_owned()),
    }
}

/// The original as it travels in `postacert.eml` (spec §3.1): its `Message-ID` replaced by
/// the PEC msgid and `X-Riferimento-Message-ID` added, every other byte kept.
pub fn postacert_original(
    raw: &[u8],
    pec_id: &str,
    riferimento: &str,
) -> Result<Vec<u8>, BuildError> {
    let raw = carried(raw);
    let (mut out, body) = postacert_pieces(&raw, pec_id, riferimento)?;
    out.extend_from_slice(body);
    Ok(out)
}

/// [`postacert_original`] of a message already in carried form, in two pieces: the new
/// header with its empty line, and the body, borrowed.
fn postacert_pieces<'r>(
    raw: &'r [u8],
    pec_id: &str,
    riferimento: &str,
) -> Result<(Vec<u8>, &'r [u8]), BuildError> {
    let (header, body) = mime::split_header_body(raw);
    let fields = mime::fields(header).map_err(BuildError::Original)?;
    let mut out = Vec::with_capacity(header.len() + 200);
    for f in fields.iter().filter(|f| !f.is("Message-ID")) {
        out.extend_from_slice(f.raw);
    }
    out.extend_from_slice(format!("Message-ID: {}\r\n", bracketed(pec_id)).as_bytes());
    out.extend_from_slice(format!("X-Riferimento-Message-ID: {riferimento}\r\n").as_bytes());
    out.extend_from_slice(b"\r\n");
    Ok((out, body))
}

fn inherited_fields(fields: &[RawField<'_>], with_message_id: bool) -> Vec<Vec<u8>> {
    fields
        .iter()
        .filter(|f| {
            ENVELOPE_INHERITED.iter().any(|n| f.is(n)) || (with_message_id && f.is("Message-ID"))
        })
        .map(|f| f.raw.to_vec())
        .collect()
}

impl Builder<'_> {
    fn subject(kind: MessageKind, original_subject: &str) -> String {
        mime::encode_prefixed_subject(kind.subject_prefix(), original_subject)
    }

    /// `"Per conto di: <sender>" <service address>` (spec §2.3).
    fn on_behalf_of(&self, sender: &str) -> String {
        format!(
            "{} <{}>",
            mime::quoted_string(&format!("Per conto di: {sender}")),
            self.issuer.service_address
        )
    }

    /// Signs the draft's entity and completes the message.
    fn finish(&self, d: Draft, at: Instant) -> Result<Generated, BuildError> {
        let sealed = smime::seal_owned(self.signer, d.entity, at)?;
        let mut headers = d.headers;
        headers.extend(sealed.headers);
        Ok(Generated {
            kind: d.kind,
            message_id: d.message_id,
            mail_from: d.mail_from,
            rcpt_to: d.rcpt_to,
            inherited: d.inherited,
            headers,
            body: sealed.body,
        })
    }

    /// Busta di trasporto (spec §3.1). `original` is the message as submitted; the SMTP
    /// envelope is kept unchanged (`mail_from` = the certified sender, RCPT TO = every
    /// recipient of `cert`).
    pub fn transport_envelope(
        &self,
        original: &[u8],
        cert: &Certification,
        at: Instant,
    ) -> Result<Generated, BuildError> {
        self.transport_envelope_with(original, cert, at, &[])
    }

    /// The transport envelope with the access point's attachment warnings: for each kind a
    /// courtesy notice in the readable text, before the identifier, and the kinds in
    /// [`ATTACHMENT_WARNING_HEADER`]. Without cautions, the same bytes as
    /// [`Builder::transport_envelope`].
    pub fn transport_envelope_with(
        &self,
        original: &[u8],
        cert: &Certification,
        at: Instant,
        cautions: &[Caution],
    ) -> Result<Generated, BuildError> {
        let kind = MessageKind::TransportEnvelope;
        let carried = carried(original);
        let (header, _) = mime::split_header_body(&carried);
        let fields = mime::fields(header).map_err(BuildError::Original)?;
        let inherited = inherited_fields(&fields, false);
        let has_reply_to = fields.iter().any(|f| f.is("Reply-To"));
        let riferimento = cert.riferimento();

        let mut d = cert.daticert(Tipo::PostaCertificata, Errore::Nessuno, self.issuer, at);
        d.ricevuta = Some(cert.requested);

        let mut text = Readable::new(kind.title());
        text.line(format!("{} il messaggio", Readable::when(at)))
            .line(format!(
                "\"{}\" è stato inviato da \"{}\"",
                cert.oggetto, cert.mittente
            ))
            .line("indirizzato a:");
        for dst in &cert.destinatari {
            text.line(dst.address.clone());
        }
        text.line("Il messaggio originale è incluso in allegato.");
        let mut kinds: Vec<CautionKind> = cautions.iter().map(|c| c.kind).collect();
        kinds.sort();
        kinds.dedup();
        for k in &kinds {
            let names: Vec<&str> = cautions
                .iter()
                .filter(|c| c.kind == *k)
                .map(|c| c.name.as_str())
                .collect();
            text.line(k.sentence());
            for n in names.iter().take(MAX_NAMED) {
                text.line(format!("- {n}"));
            }
            if names.len() > MAX_NAMED {
                text.line(format!("- e altri {}", names.len() - MAX_NAMED));
            }
        }
        text.line(format!("Identificativo messaggio: {}", cert.identificativo));

        // The original goes into the entity straight from the submission: its new header
        // and its body, borrowed.
        let (head, body) = postacert_pieces(&carried, &cert.identificativo, &riferimento)?;
        let entity = mixed_entity(&[
            &[&text.part()],
            &[&daticert_part(&d)],
            &[&postacert_head(&[&head, body]), &head, body],
        ]);
        drop(carried);

        let from = self.on_behalf_of(&cert.mittente);
        let mut headers = vec![
            ("Subject".to_string(), Self::subject(kind, &cert.oggetto)),
            ("X-Riferimento-Message-ID".to_string(), riferimento),
            ("Date".to_string(), at.rfc5322()),
            ("Message-ID".to_string(), bracketed(&cert.identificativo)),
        ];
        if !has_reply_to {
            headers.push(("Reply-To".to_string(), cert.mittente.clone()));
        }
        headers.push((
            "X-Trasporto".to_string(),
            Trasporto::PostaCertificata.as_str().into(),
        ));
        headers.push(("From".to_string(), from.clone()));
        if self.issuer.envelope_sender_header {
            headers.push(("Sender".to_string(), from));
        }
        headers.push(("X-TipoRicevuta".to_string(), cert.requested.as_str().into()));
        if !kinds.is_empty() {
            let value: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            headers.push((ATTACHMENT_WARNING_HEADER.to_string(), value.join(", ")));
        }
        self.finish(
            Draft {
                kind,
                message_id: cert.identificativo.clone(),
                mail_from: cert.mittente.clone(),
                rcpt_to: cert.destinatari.iter().map(|d| d.address.clone()).collect(),
                inherited,
                headers,
                entity,
            },
            at,
        )
    }

    /// Common shape of receipts and notices: `From: <service address>`, one recipient,
    /// a new Message-ID, `X-Riferimento-Message-ID`, the class header (spec §2.3, §3). The
    /// readable text ends with the PEC identifier.
    fn notice(&self, n: Notice<'_>, at: Instant) -> Result<Generated, BuildError> {
        let Notice {
            kind,
            cert,
            to,
            extra_headers,
            daticert,
            mut text,
            original,
        } = n;
        text.line(format!("Identificativo messaggio: {}", cert.identificativo));
        let message_id = self.ids.next_id(at);
        let (text, daticert_part) = (text.part(), daticert_part(&daticert));
        let entity = match &original {
            None => mixed_entity(&[&[&text], &[&daticert_part]]),
            Some(o) => mixed_entity(&[&[&text], &[&daticert_part], &[&postacert_head(&[o]), o]]),
        };
        drop(original);
        let class = kind.class();
        let mut headers = vec![
            ("Subject".to_string(), Self::subject(kind, &cert.oggetto)),
            ("X-Riferimento-Message-ID".to_string(), cert.riferimento()),
            ("Date".to_string(), at.rfc5322()),
            ("Message-ID".to_string(), bracketed(&message_id)),
            ("To".to_string(), to.to_string()),
            ("From".to_string(), self.issuer.service_address.clone()),
            (
                class.header_name().to_string(),
                class.header_value().to_string(),
            ),
        ];
        if kind.security_flag() {
            headers.push(("X-VerificaSicurezza".to_string(), "errore".to_string()));
        }
        headers.extend(extra_headers);
        self.finish(
            Draft {
                kind,
                message_id,
                mail_from: self.issuer.service_address.clone(),
                rcpt_to: vec![to.to_string()],
                inherited: Vec::new(),
                headers,
                entity,
            },
            at,
        )
    }

    /// A notice to the sender about one recipient (`consegna`), with `errore` and an
    /// `errore-esteso` that the text repeats after `problem`.
    fn about_recipient(
        &self,
        kind: MessageKind,
        cert: &Certification,
        at: Instant,
        recipient: &str,
        errore: Errore,
        detail: &str,
    ) -> (Daticert, Readable) {
        // Receipts and timeouts speak of "il messaggio", error notices of "nel messaggio".
        let p = match kind {
            MessageKind::Delivery(_) | MessageKind::Timeout(_) => Preposition::Il,
            _ => Preposition::Nel,
        };
        let tipo = kind.tipo().unwrap_or(Tipo::ErroreConsegna);
        let mut d = cert.daticert(tipo, errore, self.issuer, at);
        d.consegna = Some(recipient.to_string());
        d.errore_esteso = Some(detail.to_string());
        let text = Readable::about(kind.title(), at, cert, p, Addressed::One(recipient));
        (d, text)
    }

    /// Ricevuta di accettazione (spec §3.2), to the sender.
    pub fn acceptance(&self, cert: &Certification, at: Instant) -> Result<Generated, BuildError> {
        let kind = MessageKind::Acceptance;
        let mut text = Readable::about(
            kind.title(),
            at,
            cert,
            Preposition::Il,
            Addressed::AllTyped(&cert.destinatari),
        );
        text.line("è stato accettato dal sistema ed inoltrato.");
        let daticert = cert.daticert(Tipo::Accettazione, Errore::Nessuno, self.issuer, at);
        self.notice(Notice::to_sender(kind, cert, daticert, text), at)
    }

    /// Avviso di non accettazione per eccezioni formali (spec §3.3), to the sender. The
    /// original is never attached; `reason` goes to `errore-esteso` and the text.
    pub fn non_acceptance(
        &self,
        cert: &Certification,
        at: Instant,
        reason: &str,
    ) -> Result<Generated, BuildError> {
        self.refusal(MessageKind::NonAcceptance, Errore::Altro, cert, at, reason)
    }

    /// Avviso di non accettazione per virus (spec §3.4), to the sender, with
    /// `X-VerificaSicurezza: errore`. `virus` names what the antivirus found.
    pub fn non_acceptance_virus(
        &self,
        cert: &Certification,
        at: Instant,
        virus: &str,
    ) -> Result<Generated, BuildError> {
        self.refusal(
            MessageKind::NonAcceptanceVirus,
            Errore::Virus,
            cert,
            at,
            virus,
        )
    }

    fn refusal(
        &self,
        kind: MessageKind,
        errore: Errore,
        cert: &Certification,
        at: Instant,
        detail: &str,
    ) -> Result<Generated, BuildError> {
        let mut daticert = cert.daticert(Tipo::NonAccettazione, errore, self.issuer, at);
        daticert.errore_esteso = Some(detail.to_string());
        let mut text = Readable::about(
            kind.title(),
            at,
            cert,
            Preposition::Nel,
            Addressed::All(&cert.destinatari),
        );
        if errore == Errore::Virus {
            text.line(format!(
                "è stato rilevato un problema di sicurezza: {detail}"
            ));
        } else {
            text.line("è stato rilevato un problema che ne impedisce l'accettazione")
                .line(format!("a causa di: {detail}"));
        }
        text.line("Il messaggio non è stato accettato.");
        self.notice(Notice::to_sender(kind, cert, daticert, text), at)
    }

    /// Ricevuta di presa in carico (spec §3.5): one per transaction, listing every local
    /// recipient taken in charge, to the sending provider's `mailReceipt`.
    pub fn take_charge(
        &self,
        cert: &Certification,
        at: Instant,
        taken: &[String],
        mail_receipt: &str,
    ) -> Result<Generated, BuildError> {
        let kind = MessageKind::TakeCharge;
        let mut daticert = cert.daticert(Tipo::PresaInCarico, Errore::Nessuno, self.issuer, at);
        daticert.ricezione = taken.to_vec();
        let mut text = Readable::about(
            kind.title(),
            at,
            cert,
            Preposition::Il,
            Addressed::Taken(taken),
        );
        text.line("è stato accettato dal sistema.");
        let mut n = Notice::to_sender(kind, cert, daticert, text);
        n.to = mail_receipt;
        self.notice(n, at)
    }

    /// Ricevuta di avvenuta consegna (spec §3.6) for one recipient, to the sender. The
    /// type issued follows the To/Cc rule; `postacert` is the original as carried inside
    /// the transport envelope (needed for completa and breve).
    pub fn delivery(
        &self,
        cert: &Certification,
        at: Instant,
        recipient: &str,
        postacert: &[u8],
    ) -> Result<Generated, BuildError> {
        let issued = cert.requested.issued_for(cert.placement(recipient));
        let kind = MessageKind::Delivery(issued);
        let (mut daticert, mut text) =
            self.about_recipient(kind, cert, at, recipient, Errore::Nessuno, "");
        daticert.errore_esteso = None;
        daticert.ricevuta = Some(issued);
        text.line("è stato consegnato nella casella di destinazione.");
        let original = match issued {
            ReceiptType::Completa => {
                text.line("Il messaggio originale è incluso in allegato.");
                Some(carried(postacert))
            }
            ReceiptType::Breve => {
                text.line("Il messaggio originale è incluso in allegato; i suoi allegati sono sostituiti dalla loro impronta SHA-1 (file .hash).");
                let b = breve::breve_original(&carried(postacert))
                    .map_err(|e| BuildError::Breve(e.to_string()))?;
                Some(std::borrow::Cow::Owned(carried(&b.message).into_owned()))
            }
            ReceiptType::Sintetica => None,
        };
        let mut n = Notice::to_sender(kind, cert, daticert, text);
        n.original = original;
        self.notice(n, at)
    }

    /// Avviso di mancata consegna (spec §3.7) for one recipient, to the sender.
    /// `errore_esteso` is the coded reason (`5.1.1 - <provider> - indirizzo non valido`).
    pub fn non_delivery(
        &self,
        cert: &Certification,
        at: Instant,
        recipient: &str,
        errore: Errore,
        errore_esteso: &str,
    ) -> Result<Generated, BuildError> {
        let kind = MessageKind::NonDelivery;
        let (daticert, mut text) =
            self.about_recipient(kind, cert, at, recipient, errore, errore_esteso);
        text.line(format!("è stato rilevato un errore: {errore_esteso}"))
            .line("Il messaggio è stato rifiutato dal sistema.");
        self.notice(Notice::to_sender(kind, cert, daticert, text), at)
    }

    /// Avviso di mancata consegna per virus (spec §3.9), issued by the sender's provider to
    /// its user on a rilevazione virus from the recipient's provider.
    pub fn non_delivery_virus(
        &self,
        cert: &Certification,
        at: Instant,
        recipient: &str,
        errore_esteso: &str,
    ) -> Result<Generated, BuildError> {
        let kind = MessageKind::NonDeliveryVirus;
        let (daticert, mut text) =
            self.about_recipient(kind, cert, at, recipient, Errore::Virus, errore_esteso);
        text.line(format!(
            "è stato rilevato un problema di sicurezza: {errore_esteso}"
        ))
        .line("Il messaggio non è stato consegnato.");
        self.notice(Notice::to_sender(kind, cert, daticert, text), at)
    }

    /// Avviso di mancata consegna per superamento dei tempi massimi (spec §3.10), 12 h or
    /// 24 h, for one recipient, to the sender. `errore_esteso` carries the code (the 24 h
    /// notice starts with `5.4.1`, spec §3.10).
    pub fn timeout(
        &self,
        cert: &Certification,
        at: Instant,
        recipient: &str,
        which: Timeout,
        errore_esteso: &str,
    ) -> Result<Generated, BuildError> {
        let kind = MessageKind::Timeout(which);
        // [UNVERIFIED] spec §4.3: `errore="altro"` with the NOTA 12 code in errore-esteso.
        let (daticert, mut text) =
            self.about_recipient(kind, cert, at, recipient, Errore::Altro, errore_esteso);
        match which {
            Timeout::Hours12 => {
                text.line("non è stato consegnato nelle prime 12 ore dal suo invio.")
                    .line("La consegna potrebbe ancora avvenire, ma si consiglia di considerare la possibilità che non vada a buon fine.")
                    .line("Se nelle prossime 12 ore non perverrà la ricevuta di avvenuta consegna, verrà inviato un ulteriore avviso.");
            }
            Timeout::Hours24 => {
                text.line("non è stato consegnato entro 24 ore dal suo invio.")
                    .line("La transazione è da considerarsi conclusa con esito negativo.");
            }
        }
        self.notice(Notice::to_sender(kind, cert, daticert, text), at)
    }

    /// Avviso di rilevazione virus (spec §3.8): one per recipient, to the sending
    /// provider's `mailReceipt`, with `X-Mittente`; never carries the original.
    pub fn virus_detection(
        &self,
        cert: &Certification,
        at: Instant,
        recipient: &str,
        virus: &str,
        mail_receipt: &str,
    ) -> Result<Generated, BuildError> {
        let kind = MessageKind::VirusDetection;
        let (daticert, mut text) =
            self.about_recipient(kind, cert, at, recipient, Errore::Virus, virus);
        text.line(format!(
            "è stato rilevato un problema di sicurezza: {virus}"
        ))
        .line("Il messaggio non è stato consegnato.");
        let mut n = Notice::to_sender(kind, cert, daticert, text);
        n.to = mail_receipt;
        n.extra_headers = vec![("X-Mittente".to_string(), cert.mittente.clone())];
        self.notice(n, at)
    }

    /// Busta di anomalia (spec §3.11): wraps a received message that is not valid PEC for
    /// delivery to `rcpt_to`, keeping its routing and `Message-ID`. No daticert.
    pub fn anomaly_envelope(
        &self,
        received: &[u8],
        mail_from: &str,
        rcpt_to: &[String],
        at: Instant,
        reason: &str,
    ) -> Result<Generated, BuildError> {
        let kind = MessageKind::AnomalyEnvelope;
        let carried = carried(received);
        let (header, _) = mime::split_header_body(&carried);
        // A message whose header cannot be scanned is still wrapped whole: nothing is
        // inherited then, and a new Message-ID is assigned.
        let fields = mime::fields(header).unwrap_or_default();
        let inherited = inherited_fields(&fields, true);
        let info = OriginalInfo::parse(&carried).unwrap_or_default();
        let has_reply_to = fields.iter().any(|f| f.is("Reply-To"));
        let message_id = match &info.message_id {
            Some(id) if fields.iter().any(|f| f.is("Message-ID")) => id.clone(),
            _ => self.ids.next_id(at),
        };
        let sender = info
            .from
            .first()
            .cloned()
            .unwrap_or_else(|| mail_from.to_string());
        let mut text = Readable::new(kind.title());
        text.line(format!("{} è stato ricevuto", Readable::when(at)))
            .line(format!(
                "il messaggio \"{}\" proveniente da \"{}\"",
                info.subject, sender
            ))
            .line("ed indirizzato a:");
        for r in rcpt_to {
            text.line(r.clone());
        }
        text.line("Tali dati non sono stati certificati per il seguente errore:")
            .line(reason.to_string())
            .line("Il messaggio originale è incluso in allegato.");
        let entity = mixed_entity(&[&[&text.part()], &[&postacert_head(&[&carried]), &carried]]);
        let from = self.on_behalf_of(&sender);
        let mut headers = vec![
            ("Subject".to_string(), Self::subject(kind, &info.subject)),
            ("Date".to_string(), at.rfc5322()),
        ];
        if !fields.iter().any(|f| f.is("Message-ID")) {
            headers.push(("Message-ID".to_string(), bracketed(&message_id)));
        }
        if !has_reply_to {
            headers.push(("Reply-To".to_string(), sender.clone()));
        }
        headers.push(("X-Trasporto".to_string(), Trasporto::Errore.as_str().into()));
        headers.push(("From".to_string(), from));
        self.finish(
            Draft {
                kind,
                message_id,
                mail_from: mail_from.to_string(),
                rcpt_to: rcpt_to.to_vec(),
                inherited,
                headers,
                entity,
            },
            at,
        )
    }
}

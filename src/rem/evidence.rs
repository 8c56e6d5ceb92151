// SPDX-License-Identifier: GPL-3.0-or-later
//! The ERDS evidence (EN 319 522-3 XML, REM baseline profile of EN 319 532-4 Annex C):
//! the model, the writer of its unsigned form and the reader.
//!
//! The writer produces the shape of the kit's evidences (ETSI scenarios and AgID
//! `Intra-REM-flow`): the same prefixes (`tns`, `ds`, `saml`, `ext`, `enp`, `elp`), the
//! `version` attribute, the element order of the `Components` group, ERDS global elements
//! qualified and local ones unqualified. The XAdES signature is added by
//! `crate::rem::xades`, as the last child of the root.
//!
//! The reader goes through [`check_plain`] first, then reads by namespace and local name (any
//! prefix; ERDS local elements qualified or not), ignores `ds:Signature` but records that it
//! is there, ignores elements it does not know unless they sit in an extension marked
//! critical, and refuses what it cannot act on (an unknown event, a missing mandatory
//! component, a bad time or number).

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use quick_xml::escape::resolve_xml_entity;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event as XmlEvent};
use quick_xml::name::{QName, ResolveResult};
use quick_xml::{NsReader, Writer, XmlVersion};

use super::codes::{Event, Reason};
use crate::xml::{check_plain, XmlGateError};

/// `http://uri.etsi.org/19522/v1#`, the ERDS evidence namespace (`tns`).
pub const NS_ERDS: &str = "http://uri.etsi.org/19522/v1#";
/// `http://uri.etsi.org/19532/v1#`, the REM baseline extensions (`ext`).
pub const NS_EXT: &str = "http://uri.etsi.org/19532/v1#";
pub const NS_DS: &str = "http://www.w3.org/2000/09/xmldsig#";
pub const NS_SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
/// eIDAS natural person attributes (`enp`).
pub const NS_ENP: &str = "http://eidas.europa.eu/attributes/naturalperson";
/// eIDAS legal person attributes (`elp`).
pub const NS_ELP: &str = "http://eidas.europa.eu/attributes/legalperson";
pub const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// The `version` the kit's evidences carry.
pub const VERSION: &str = "EN319522v1.1.1";
/// SHA-256 as XML-DSig names it, the digest of the REM baseline.
pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
/// The part identifier of the original message (`urn:oid:1.3.6.1.7`, RFC 822 message).
pub const ORIGINAL_MESSAGE_PART: &str = "urn:oid:1.3.6.1.7";
/// The SAML attribute name format of the eIDAS attributes.
pub const NAME_FORMAT_URI: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri";

/// How deep the reader lets elements nest (an evidence needs 7).
pub const MAX_DEPTH: usize = 32;

/// Why an evidence could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EvidenceError {
    #[error("evidence refused: {0}")]
    Gate(#[from] XmlGateError),
    #[error("evidence is not well-formed xml at byte {position}: {reason}")]
    Syntax { position: u64, reason: String },
    #[error("evidence is truncated: {0}")]
    Truncated(String),
    #[error("evidence nests deeper than {MAX_DEPTH} elements at <{0}>")]
    TooDeep(String),
    #[error("evidence has no root element")]
    NoRoot,
    #[error("root element is <{0}>, not an erds <Evidence>")]
    NotEvidence(String),
    #[error("evidence lacks {0}")]
    Missing(&'static str),
    #[error("evidence repeats {0}")]
    Repeated(&'static str),
    #[error("evidence names an unknown event {0:?}")]
    UnknownEvent(String),
    #[error("evidence {element}: bad value {value:?}: {reason}")]
    BadValue {
        element: &'static str,
        value: String,
        reason: String,
    },
    #[error("evidence carries a critical extension it does not understand: <{0}>")]
    CriticalExtension(String),
    #[error("evidence {0}: unsupported form")]
    Unsupported(&'static str),
}

/// One SAML attribute of an identity (EN 319 522-3 §5.2.2.13: eIDAS attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlAttribute {
    /// `Name`: the attribute's URI.
    pub name: String,
    pub friendly_name: Option<String>,
    pub name_format: Option<String>,
    pub values: Vec<AttributeValue>,
}

/// A `saml:AttributeValue` with its `xsi:type`, namespace resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeValue {
    /// (namespace, local name) of the `xsi:type`.
    pub xsi_type: Option<(String, String)>,
    pub text: String,
}

impl SamlAttribute {
    fn eidas(ns: &str, friendly: &str, type_name: &str, value: &str) -> SamlAttribute {
        SamlAttribute {
            name: format!("{ns}/{friendly}"),
            friendly_name: Some(friendly.to_owned()),
            name_format: Some(NAME_FORMAT_URI.to_owned()),
            values: vec![AttributeValue {
                xsi_type: Some((ns.to_owned(), type_name.to_owned())),
                text: value.to_owned(),
            }],
        }
    }

    /// eIDAS `LegalName` (a provider's name, in the issuer's identity).
    pub fn legal_name(name: &str) -> SamlAttribute {
        SamlAttribute::eidas(NS_ELP, "LegalName", "LegalNameType", name)
    }

    /// eIDAS legal person `LegalPersonIdentifier`.
    pub fn legal_person_identifier(id: &str) -> SamlAttribute {
        SamlAttribute::eidas(
            NS_ELP,
            "LegalPersonIdentifier",
            "LegalPersonIdentifierType",
            id,
        )
    }

    /// eIDAS natural person `PersonIdentifier` (`IT/IT/<id>`).
    pub fn person_identifier(id: &str) -> SamlAttribute {
        SamlAttribute::eidas(NS_ENP, "PersonIdentifier", "PersonIdentifierType", id)
    }

    /// eIDAS natural person `FamilyName`.
    pub fn family_name(name: &str) -> SamlAttribute {
        SamlAttribute::eidas(NS_ENP, "FamilyName", "CurrentFamilyNameType", name)
    }

    /// eIDAS natural person `FirstName`.
    pub fn first_name(name: &str) -> SamlAttribute {
        SamlAttribute::eidas(NS_ENP, "FirstName", "CurrentGivenNameType", name)
    }

    /// The first value's text.
    pub fn value(&self) -> Option<&str> {
        self.values.first().map(|v| v.text.as_str())
    }
}

/// `Identifier` with its `IdentifierSchemeName` (`mailto` for an address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifier {
    pub scheme: String,
    pub value: String,
}

impl Identifier {
    pub fn mailto(address: &str) -> Identifier {
        Identifier {
            scheme: "mailto".to_owned(),
            value: address.to_owned(),
        }
    }
}

/// `AssuranceLevelsDetails` in the form the REM baseline uses: a global level and the
/// authentication time and method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssuranceLevels {
    /// `GlobalAssuranceLevel/AssuranceLevel` (e.g. `http://eidas.europa.eu/LoA/substantial`).
    pub level: String,
    /// `GlobalAssuranceLevel/PolicyID`.
    pub policy_id: Option<String>,
    pub authentication_time: DateTime<Utc>,
    pub authentication_method: String,
}

/// `SenderDetails` / `RecipientDetails` (`UserDetailsType`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserDetails {
    /// The identity attributes; empty when the element has no `Identity`.
    pub identity: Vec<SamlAttribute>,
    pub identifier: Option<Identifier>,
    pub assurance: Option<AssuranceLevels>,
}

impl UserDetails {
    /// A recipient known only by address.
    pub fn mailto(address: &str) -> UserDetails {
        UserDetails {
            identifier: Some(Identifier::mailto(address)),
            ..UserDetails::default()
        }
    }
}

/// One `EventReason`: the reason URI and its `Details` (the REM baseline writes the details
/// code first, then the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventReason {
    pub code: String,
    pub details: Vec<String>,
}

impl EventReason {
    /// The reason as the REM baseline writes it: URI, details code, details text.
    pub fn of(reason: &Reason) -> EventReason {
        EventReason {
            code: reason.uri(),
            details: vec![reason.code.to_owned(), reason.details.to_owned()],
        }
    }

    /// The table entry this reason is, for `event`: by its details code when that code's
    /// URI is this one, else by URI.
    pub fn reason(&self, event: Event) -> Option<&'static Reason> {
        if let Some(r) = self.details.first().and_then(|c| Reason::by_code(c.trim())) {
            if r.uri() == self.code {
                return Some(r);
            }
        }
        Reason::by_uri_for(event, &self.code).or_else(|| Reason::by_uri(&self.code))
    }
}

/// `PartInfo`: one part of the user content and its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub identifier: String,
    pub content_type: String,
    /// `ds:DigestMethod/@Algorithm`.
    pub digest_method: Option<String>,
    /// `ds:DigestValue`, base64 as written.
    pub digest_value: Option<String>,
}

impl PartInfo {
    /// The original message, with the SHA-256 of its bytes in base64 (`REM-DigestValue`).
    pub fn original_message(digest_b64: &str) -> PartInfo {
        PartInfo {
            identifier: ORIGINAL_MESSAGE_PART.to_owned(),
            content_type: "message/rfc822".to_owned(),
            digest_method: Some(SHA256.to_owned()),
            digest_value: Some(digest_b64.to_owned()),
        }
    }
}

/// `UserContentInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserContentInfo {
    /// The user agent's `Message-ID` with its angle brackets (`REM-UAMessageIdentifier`).
    pub app_layer_identifier: Option<String>,
    pub composing_parts: Option<u32>,
    pub parts: Vec<PartInfo>,
}

/// `ext:GeneralEvidenceInfo` (EN 319 532-4 extension).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GeneralEvidenceInfo {
    /// The original message's subject.
    pub subject: Option<String>,
    /// 1-based indexes into the recipients whose reachability by CSI is not verified.
    pub untrusted_path_to_recipient: Vec<u32>,
}

/// `ext:RelayEvidenceInfo`: the recipients a relay evidence is about (1-based; empty: all).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelayEvidenceInfo {
    pub refers_to: Vec<u32>,
}

/// An ERDS evidence (EN 319 522-3 `Evidence`, components of EN 319 532-4 tables 19–23).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The `version` attribute ([`VERSION`]).
    pub version: String,
    /// The root's optional `Id` attribute.
    pub xml_id: Option<String>,
    /// `EvidenceIdentifier` (also `REM-Evidence-ID`, without the angle brackets).
    pub evidence_id: String,
    /// `ERDSEventId`.
    pub event: Event,
    /// `EventReasons` (empty: absent).
    pub reasons: Vec<EventReason>,
    pub event_time: DateTime<Utc>,
    /// `EvidenceIssuerPolicyID/PolicyID` (empty: absent).
    pub issuer_policy_ids: Vec<String>,
    /// `EvidenceIssuerDetails/Identity`.
    pub issuer: Vec<SamlAttribute>,
    pub sender: UserDetails,
    /// `RecipientDetails`, one or more.
    pub recipients: Vec<UserDetails>,
    pub submission_time: Option<DateTime<Utc>>,
    /// `EvidenceRefersToRecipient`: 1-based index into `recipients`.
    pub refers_to_recipient: Option<u32>,
    /// `MessageIdentifier`: the REM message's identifier.
    pub message_id: Option<String>,
    pub user_content: Option<UserContentInfo>,
    /// `ForwardedToExternalSystem` (EN 319 522-3's `ExternalSystem`, M04): the non-ERDS
    /// system involved (its MX, or the `Received` header of a message from outside).
    pub external_system: Option<String>,
    /// `ExternalERDSDetails/Identity`: the other provider of a relay.
    pub external_erds: Option<Vec<SamlAttribute>>,
    pub general_info: Option<GeneralEvidenceInfo>,
    pub relay_info: Option<RelayEvidenceInfo>,
    /// Set by the reader when a `ds:Signature` is present; the writer never writes one.
    pub has_signature: bool,
}

impl Evidence {
    /// The first reason's table entry, if it is one of ours.
    pub fn reason(&self) -> Option<&'static Reason> {
        self.reasons.first().and_then(|r| r.reason(self.event))
    }

    /// The unsigned evidence. A character XML 1.0 cannot carry (a C0 control but tab, line
    /// feed and carriage return; U+FFFE, U+FFFF) is written as U+FFFD.
    pub fn to_xml(&self) -> Vec<u8> {
        let mut w = Out(Writer::new_with_indent(Vec::new(), b' ', 2));
        w.write(XmlEvent::Decl(BytesDecl::new(
            "1.0",
            Some("UTF-8"),
            Some("no"),
        )));
        let mut root = BytesStart::new("tns:Evidence");
        for (prefix, ns) in [
            ("ds", NS_DS),
            ("elp", NS_ELP),
            ("enp", NS_ENP),
            ("ext", NS_EXT),
            ("saml", NS_SAML),
            ("tns", NS_ERDS),
        ] {
            push_attr(&mut root, &format!("xmlns:{prefix}"), ns);
        }
        push_attr(&mut root, "version", &self.version);
        if let Some(id) = &self.xml_id {
            push_attr(&mut root, "Id", id);
        }
        w.write(XmlEvent::Start(root));
        w.leaf("tns:EvidenceIdentifier", &self.evidence_id);
        w.leaf("tns:ERDSEventId", &self.event.uri());
        if !self.reasons.is_empty() {
            w.open("tns:EventReasons");
            for r in &self.reasons {
                w.open("tns:EventReason");
                w.leaf("Code", &r.code);
                for d in &r.details {
                    w.leaf("Details", d);
                }
                w.close("tns:EventReason");
            }
            w.close("tns:EventReasons");
        }
        w.leaf("EventTime", &time(&self.event_time));
        if !self.issuer_policy_ids.is_empty() {
            w.open("tns:EvidenceIssuerPolicyID");
            for p in &self.issuer_policy_ids {
                w.leaf("PolicyID", p);
            }
            w.close("tns:EvidenceIssuerPolicyID");
        }
        w.open("tns:EvidenceIssuerDetails");
        w.identity(&self.issuer);
        w.close("tns:EvidenceIssuerDetails");
        w.user("tns:SenderDetails", &self.sender);
        for r in &self.recipients {
            w.user("tns:RecipientDetails", r);
        }
        if let Some(t) = &self.submission_time {
            w.leaf("tns:SubmissionTime", &time(t));
        }
        if let Some(n) = self.refers_to_recipient {
            w.leaf("EvidenceRefersToRecipient", &n.to_string());
        }
        if let Some(m) = &self.message_id {
            w.leaf("tns:MessageIdentifier", m);
        }
        if let Some(u) = &self.user_content {
            w.open("tns:UserContentInfo");
            if let Some(a) = &u.app_layer_identifier {
                w.leaf("AppLayerIdentifier", a);
            }
            if let Some(n) = u.composing_parts {
                w.leaf("ComposingParts", &n.to_string());
            }
            w.open("tns:PartsInfo");
            for p in &u.parts {
                w.open("tns:PartInfo");
                w.leaf("Identifier", &p.identifier);
                w.leaf("ContentType", &p.content_type);
                if let Some(m) = &p.digest_method {
                    let mut s = BytesStart::new("ds:DigestMethod");
                    push_attr(&mut s, "Algorithm", m);
                    w.write(XmlEvent::Empty(s));
                }
                if let Some(v) = &p.digest_value {
                    w.leaf("ds:DigestValue", v);
                }
                w.close("tns:PartInfo");
            }
            w.close("tns:PartsInfo");
            w.close("tns:UserContentInfo");
        }
        if let Some(x) = &self.external_system {
            w.leaf("ForwardedToExternalSystem", x);
        }
        if let Some(x) = &self.external_erds {
            w.open("tns:ExternalERDSDetails");
            w.identity(x);
            w.close("tns:ExternalERDSDetails");
        }
        if self.general_info.is_some() || self.relay_info.is_some() {
            w.open("tns:Extensions");
            if let Some(g) = &self.general_info {
                w.extension_open();
                w.open("ext:GeneralEvidenceInfo");
                if let Some(s) = &g.subject {
                    w.leaf("ext:Subject", s);
                }
                for n in &g.untrusted_path_to_recipient {
                    w.leaf("ext:UntrustedPathToRecipient", &n.to_string());
                }
                w.close("ext:GeneralEvidenceInfo");
                w.close("tns:Extension");
            }
            if let Some(r) = &self.relay_info {
                w.extension_open();
                w.open("ext:RelayEvidenceInfo");
                for n in &r.refers_to {
                    w.leaf("ext:RelayEvidenceRefersTo", &n.to_string());
                }
                w.close("ext:RelayEvidenceInfo");
                w.close("tns:Extension");
            }
            w.close("tns:Extensions");
        }
        w.close("tns:Evidence");
        w.0.into_inner()
    }

    /// Reads an evidence (signed or not; the signature is not checked here).
    pub fn parse(raw: &[u8]) -> Result<Evidence, EvidenceError> {
        let text = check_plain(raw)?;
        let root = build_tree(text)?;
        from_tree(&root)
    }
}

/// `xs:dateTime` in UTC, `Z`, fractions only when there are some.
fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

// ---------------------------------------------------------------------------------------
// Writer

/// Escapes for element content (`attr` false) or a double-quoted attribute value; a
/// character XML 1.0 cannot carry becomes U+FFFD; CR is kept as a reference so that it
/// survives the reader's line-end normalization.
fn escape(s: &str, attr: bool) -> Cow<'_, str> {
    let needs = |c: char| {
        matches!(c, '&' | '<' | '>' | '\r')
            || (attr && matches!(c, '"' | '\t' | '\n'))
            || !is_xml_char(c)
    };
    if !s.chars().any(needs) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            '"' if attr => out.push_str("&quot;"),
            '\t' if attr => out.push_str("&#9;"),
            '\n' if attr => out.push_str("&#10;"),
            c if !is_xml_char(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn push_attr(s: &mut BytesStart<'_>, key: &str, value: &str) {
    s.push_attribute(Attribute {
        key: QName(key),
        value: Cow::Owned(escape(value, true).into_owned()),
    });
}

struct Out(Writer<Vec<u8>>);

impl Out {
    fn write(&mut self, ev: XmlEvent<'_>) {
        // Writing into a Vec cannot fail.
        let _ = self.0.write_event(ev);
    }

    fn open(&mut self, name: &str) {
        self.write(XmlEvent::Start(BytesStart::new(name)));
    }

    fn close(&mut self, name: &str) {
        self.write(XmlEvent::End(BytesEnd::new(name)));
    }

    fn leaf(&mut self, name: &str, text: &str) {
        self.open(name);
        self.write(XmlEvent::Text(BytesText::from_escaped(escape(text, false))));
        self.close(name);
    }

    fn extension_open(&mut self) {
        let mut s = BytesStart::new("tns:Extension");
        push_attr(&mut s, "isCritical", "false");
        self.write(XmlEvent::Start(s));
    }

    fn identity(&mut self, attrs: &[SamlAttribute]) {
        self.open("tns:Identity");
        for a in attrs {
            let mut s = BytesStart::new("saml:Attribute");
            if let Some(f) = &a.friendly_name {
                push_attr(&mut s, "FriendlyName", f);
            }
            push_attr(&mut s, "Name", &a.name);
            if let Some(f) = &a.name_format {
                push_attr(&mut s, "NameFormat", f);
            }
            self.write(XmlEvent::Start(s));
            for v in &a.values {
                let mut s = BytesStart::new("saml:AttributeValue");
                if let Some((ns, local)) = &v.xsi_type {
                    push_attr(&mut s, "xmlns:xsi", NS_XSI);
                    let prefix = match ns.as_str() {
                        NS_ELP => "elp",
                        NS_ENP => "enp",
                        NS_ERDS => "tns",
                        NS_EXT => "ext",
                        NS_SAML => "saml",
                        NS_DS => "ds",
                        // No default namespace is ever declared: unprefixed is none.
                        "" => "",
                        other => {
                            push_attr(&mut s, "xmlns:t", other);
                            "t"
                        }
                    };
                    let qname = if prefix.is_empty() {
                        local.clone()
                    } else {
                        format!("{prefix}:{local}")
                    };
                    push_attr(&mut s, "xsi:type", &qname);
                }
                self.write(XmlEvent::Start(s));
                self.write(XmlEvent::Text(BytesText::from_escaped(escape(
                    &v.text, false,
                ))));
                self.close("saml:AttributeValue");
            }
            self.close("saml:Attribute");
        }
        self.close("tns:Identity");
    }

    fn user(&mut self, name: &str, u: &UserDetails) {
        self.open(name);
        if !u.identity.is_empty() {
            self.identity(&u.identity);
        }
        if let Some(i) = &u.identifier {
            let mut s = BytesStart::new("Identifier");
            push_attr(&mut s, "IdentifierSchemeName", &i.scheme);
            self.write(XmlEvent::Start(s));
            self.write(XmlEvent::Text(BytesText::from_escaped(escape(
                &i.value, false,
            ))));
            self.close("Identifier");
        }
        if let Some(a) = &u.assurance {
            self.open("AssuranceLevelsDetails");
            self.open("GlobalAssuranceLevel");
            self.leaf("AssuranceLevel", &a.level);
            if let Some(p) = &a.policy_id {
                self.leaf("PolicyID", p);
            }
            self.close("GlobalAssuranceLevel");
            self.open("tns:AuthenticationDetails");
            self.leaf("AuthenticationTime", &time(&a.authentication_time));
            self.leaf("AuthenticationMethod", &a.authentication_method);
            self.close("tns:AuthenticationDetails");
            self.close("AssuranceLevelsDetails");
        }
        self.close(name);
    }
}

// ---------------------------------------------------------------------------------------
// Reader: a namespace-resolved tree first, then the model.

#[derive(Debug, Default)]
struct Node {
    ns: String,
    name: String,
    /// (namespace, local name, value); an `xsi:type` value is stored as `{ns}local`.
    attrs: Vec<(String, String, String)>,
    children: Vec<Node>,
    text: String,
}

impl Node {
    /// An ERDS element: in the ERDS namespace, or unqualified (local elements).
    fn erds(&self, name: &str) -> bool {
        self.name == name && (self.ns == NS_ERDS || self.ns.is_empty())
    }

    fn is(&self, ns: &str, name: &str) -> bool {
        self.name == name && self.ns == ns
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(ns, n, _)| ns.is_empty() && n == name)
            .map(|(_, _, v)| v.as_str())
    }

    fn label(&self) -> String {
        if self.ns.is_empty() {
            self.name.clone()
        } else {
            format!("{{{}}}{}", self.ns, self.name)
        }
    }

    /// The text, surrounding XML white space removed (URIs, identifiers, times, numbers).
    fn trimmed(&self) -> &str {
        self.text.trim_matches([' ', '\t', '\n', '\r'])
    }
}

fn namespace_of(r: &ResolveResult<'_>) -> Result<String, String> {
    match r {
        ResolveResult::Unbound => Ok(String::new()),
        ResolveResult::Bound(ns) => Ok(ns.as_ref().to_owned()),
        ResolveResult::Unknown(p) => Err(format!("undeclared namespace prefix {p:?}")),
    }
}

fn node_from(reader: &NsReader<&[u8]>, start: &BytesStart<'_>) -> Result<Node, EvidenceError> {
    let position = reader.buffer_position();
    let syntax = |reason: String| EvidenceError::Syntax { position, reason };
    let (ns, local) = reader.resolver().resolve_element(start.name());
    let mut node = Node {
        ns: namespace_of(&ns).map_err(syntax)?,
        name: local.as_ref().to_owned(),
        ..Node::default()
    };
    for a in start.attributes() {
        let a = a.map_err(|e| syntax(format!("attribute on <{}>: {e}", node.name)))?;
        if a.key.as_ref() == "xmlns" || a.key.as_ref().starts_with("xmlns:") {
            // quick-xml takes a namespace name as written, references unresolved: a name
            // is a URI, so refuse what no URI carries rather than read another namespace
            // than the one declared.
            check_chars(&a.value, position)?;
            if a.value
                .chars()
                .any(|c| matches!(c, '&' | '<' | '>' | '"' | '\'' | ' ' | '\t' | '\n' | '\r'))
            {
                return Err(syntax(format!(
                    "namespace declaration {:?} is not a plain uri",
                    a.key.as_ref()
                )));
            }
            continue;
        }
        let (ans, alocal) = reader.resolver().resolve_attribute(a.key);
        let ans = namespace_of(&ans).map_err(syntax)?;
        let mut value = a
            .normalized_value_with(XmlVersion::Implicit1_0, 1, resolve_xml_entity)
            .map_err(|e| syntax(format!("attribute {:?}: {e}", a.key.as_ref())))?
            .into_owned();
        check_chars(&value, position)?;
        if ans == NS_XSI && alocal.as_ref() == "type" {
            let q = QName(value.trim());
            let tns = namespace_of(&reader.resolver().resolve_prefix(q.prefix(), true))
                .map_err(syntax)?;
            value = format!("{{{tns}}}{}", q.local_name().as_ref());
        }
        node.attrs.push((ans, alocal.as_ref().to_owned(), value));
    }
    Ok(node)
}

fn build_tree(text: &str) -> Result<Node, EvidenceError> {
    let mut reader = NsReader::from_str(text);
    reader.config_mut().check_comments = true;
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let syntax = |reader: &NsReader<&[u8]>, e: quick_xml::Error| EvidenceError::Syntax {
        position: reader.error_position(),
        reason: e.to_string(),
    };
    loop {
        let ev = reader.read_event().map_err(|e| syntax(&reader, e))?;
        match ev {
            XmlEvent::Start(s) | XmlEvent::Empty(s) if root.is_some() => {
                return Err(EvidenceError::Syntax {
                    position: reader.buffer_position(),
                    reason: format!("element <{}> after the root", s.name().as_ref()),
                })
            }
            XmlEvent::Start(s) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(EvidenceError::TooDeep(s.name().as_ref().to_owned()));
                }
                stack.push(node_from(&reader, &s)?);
            }
            XmlEvent::Empty(s) => {
                let node = node_from(&reader, &s)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            XmlEvent::End(_) => {
                if let Some(node) = stack.pop() {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(node),
                        None => root = Some(node),
                    }
                }
            }
            XmlEvent::Text(t) => text_into(&mut stack, &t.xml10_content(), &reader)?,
            XmlEvent::CData(c) => text_into(&mut stack, &c.xml10_content(), &reader)?,
            XmlEvent::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) if is_xml_char(c) => c.to_string(),
                        _ => {
                            return Err(EvidenceError::Syntax {
                                position: reader.buffer_position(),
                                reason: format!("bad character reference &{};", &*r),
                            })
                        }
                    }
                } else {
                    match resolve_xml_entity(&r) {
                        Some(v) => v.to_owned(),
                        None => {
                            return Err(XmlGateError::ExternalReference.into());
                        }
                    }
                };
                text_into(&mut stack, &resolved, &reader)?;
            }
            XmlEvent::DocType(_) => return Err(XmlGateError::Doctype.into()),
            XmlEvent::Decl(_) | XmlEvent::PI(_) | XmlEvent::Comment(_) => {}
            XmlEvent::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(EvidenceError::Truncated(format!(
            "end of input inside <{}>",
            open.name
        )));
    }
    root.ok_or(EvidenceError::NoRoot)
}

/// XML 1.0 allows no C0 control but tab, line feed and carriage return, and neither U+FFFE
/// nor U+FFFF; quick-xml does not check.
fn check_chars(s: &str, position: u64) -> Result<(), EvidenceError> {
    match s.chars().find(|&c| !is_xml_char(c)) {
        Some(c) => Err(EvidenceError::Syntax {
            position,
            reason: format!("character U+{:04X} is not allowed in xml", u32::from(c)),
        }),
        None => Ok(()),
    }
}

fn text_into(stack: &mut [Node], s: &str, reader: &NsReader<&[u8]>) -> Result<(), EvidenceError> {
    check_chars(s, reader.buffer_position())?;
    match stack.last_mut() {
        Some(top) => {
            top.text.push_str(s);
            Ok(())
        }
        None if s.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r')) => Ok(()),
        None => Err(EvidenceError::Syntax {
            position: reader.buffer_position(),
            reason: "text outside the root element".to_owned(),
        }),
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, what: &'static str) -> Result<(), EvidenceError> {
    if slot.is_some() {
        return Err(EvidenceError::Repeated(what));
    }
    *slot = Some(value);
    Ok(())
}

fn parse_time(n: &Node, element: &'static str) -> Result<DateTime<Utc>, EvidenceError> {
    DateTime::parse_from_rfc3339(n.trimmed())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| EvidenceError::BadValue {
            element,
            value: n.trimmed().to_owned(),
            reason: e.to_string(),
        })
}

fn parse_int(n: &Node, element: &'static str) -> Result<u32, EvidenceError> {
    let t = n.trimmed();
    t.strip_prefix('+')
        .unwrap_or(t)
        .parse::<u32>()
        .map_err(|e| EvidenceError::BadValue {
            element,
            value: t.to_owned(),
            reason: e.to_string(),
        })
}

fn read_identity(n: &Node) -> Vec<SamlAttribute> {
    n.children
        .iter()
        .filter(|c| c.is(NS_SAML, "Attribute"))
        .map(|a| SamlAttribute {
            name: a.attr("Name").unwrap_or_default().to_owned(),
            friendly_name: a.attr("FriendlyName").map(str::to_owned),
            name_format: a.attr("NameFormat").map(str::to_owned),
            values: a
                .children
                .iter()
                .filter(|v| v.is(NS_SAML, "AttributeValue"))
                .map(|v| AttributeValue {
                    xsi_type: v
                        .attrs
                        .iter()
                        .find(|(ns, n, _)| ns == NS_XSI && n == "type")
                        .and_then(|(_, _, t)| {
                            let (ns, local) = t.strip_prefix('{')?.split_once('}')?;
                            Some((ns.to_owned(), local.to_owned()))
                        }),
                    text: v.text.clone(),
                })
                .collect(),
        })
        .collect()
}

/// `EvidenceIssuerDetails` / `ExternalERDSDetails`: the `Identity`'s attributes.
fn read_entity(n: &Node, what: &'static str) -> Result<Vec<SamlAttribute>, EvidenceError> {
    let mut identity = None;
    for c in &n.children {
        if c.erds("Identity") {
            set_once(&mut identity, read_identity(c), what)?;
        }
    }
    identity.ok_or(EvidenceError::Missing(what))
}

fn read_user(n: &Node) -> Result<UserDetails, EvidenceError> {
    let mut identity = None;
    let mut identifier = None;
    let mut assurance = None;
    for c in &n.children {
        if c.erds("Identity") {
            set_once(&mut identity, read_identity(c), "Identity")?;
        } else if c.erds("Identifier") {
            let id = Identifier {
                scheme: c
                    .attr("IdentifierSchemeName")
                    .unwrap_or_default()
                    .to_owned(),
                value: c.trimmed().to_owned(),
            };
            set_once(&mut identifier, id, "Identifier")?;
        } else if c.erds("AssuranceLevelsDetails") {
            set_once(&mut assurance, read_assurance(c)?, "AssuranceLevelsDetails")?;
        }
    }
    Ok(UserDetails {
        identity: identity.unwrap_or_default(),
        identifier,
        assurance,
    })
}

fn read_assurance(n: &Node) -> Result<AssuranceLevels, EvidenceError> {
    const WHAT: &str = "AssuranceLevelsDetails";
    let global = n
        .children
        .iter()
        .find(|c| c.erds("GlobalAssuranceLevel"))
        .ok_or(EvidenceError::Unsupported(WHAT))?;
    let auth = n
        .children
        .iter()
        .find(|c| c.erds("AuthenticationDetails"))
        .ok_or(EvidenceError::Unsupported(WHAT))?;
    let level = global
        .children
        .iter()
        .find(|c| c.erds("AssuranceLevel"))
        .ok_or(EvidenceError::Missing("AssuranceLevel"))?
        .trimmed()
        .to_owned();
    let policy_id = global
        .children
        .iter()
        .find(|c| c.erds("PolicyID"))
        .map(|c| c.trimmed().to_owned());
    let time = auth
        .children
        .iter()
        .find(|c| c.erds("AuthenticationTime"))
        .ok_or(EvidenceError::Unsupported("AuthenticationDetails"))?;
    let method = auth
        .children
        .iter()
        .find(|c| c.erds("AuthenticationMethod"))
        .ok_or(EvidenceError::Unsupported("AuthenticationDetails"))?;
    Ok(AssuranceLevels {
        level,
        policy_id,
        authentication_time: parse_time(time, "AuthenticationTime")?,
        authentication_method: method.trimmed().to_owned(),
    })
}

fn read_user_content(n: &Node) -> Result<UserContentInfo, EvidenceError> {
    let mut u = UserContentInfo::default();
    for c in &n.children {
        if c.erds("AppLayerIdentifier") {
            set_once(
                &mut u.app_layer_identifier,
                c.text.clone(),
                "AppLayerIdentifier",
            )?;
        } else if c.erds("ComposingParts") {
            set_once(
                &mut u.composing_parts,
                parse_int(c, "ComposingParts")?,
                "ComposingParts",
            )?;
        } else if c.erds("PartsInfo") {
            for p in c.children.iter().filter(|p| p.erds("PartInfo")) {
                let mut identifier = None;
                let mut content_type = None;
                let mut digest_method = None;
                let mut digest_value = None;
                for f in &p.children {
                    if f.erds("Identifier") {
                        set_once(
                            &mut identifier,
                            f.trimmed().to_owned(),
                            "PartInfo/Identifier",
                        )?;
                    } else if f.erds("ContentType") {
                        set_once(&mut content_type, f.trimmed().to_owned(), "ContentType")?;
                    } else if f.is(NS_DS, "DigestMethod") {
                        let alg = f.attr("Algorithm").unwrap_or_default().to_owned();
                        set_once(&mut digest_method, alg, "ds:DigestMethod")?;
                    } else if f.is(NS_DS, "DigestValue") {
                        set_once(&mut digest_value, f.trimmed().to_owned(), "ds:DigestValue")?;
                    }
                }
                u.parts.push(PartInfo {
                    identifier: identifier.ok_or(EvidenceError::Missing("PartInfo/Identifier"))?,
                    content_type: content_type.ok_or(EvidenceError::Missing("ContentType"))?,
                    digest_method,
                    digest_value,
                });
            }
        }
    }
    Ok(u)
}

fn read_extensions(
    n: &Node,
    general: &mut Option<GeneralEvidenceInfo>,
    relay: &mut Option<RelayEvidenceInfo>,
) -> Result<(), EvidenceError> {
    for ext in n.children.iter().filter(|c| c.erds("Extension")) {
        let critical = matches!(ext.attr("isCritical").map(str::trim), Some("true" | "1"));
        for c in &ext.children {
            if c.is(NS_EXT, "GeneralEvidenceInfo") {
                let mut g = GeneralEvidenceInfo::default();
                for f in &c.children {
                    if f.is(NS_EXT, "Subject") {
                        set_once(&mut g.subject, f.text.clone(), "ext:Subject")?;
                    } else if f.is(NS_EXT, "UntrustedPathToRecipient") {
                        g.untrusted_path_to_recipient
                            .push(parse_int(f, "UntrustedPathToRecipient")?);
                    }
                }
                set_once(general, g, "ext:GeneralEvidenceInfo")?;
            } else if c.is(NS_EXT, "RelayEvidenceInfo") {
                let mut r = RelayEvidenceInfo::default();
                for f in c
                    .children
                    .iter()
                    .filter(|f| f.is(NS_EXT, "RelayEvidenceRefersTo"))
                {
                    r.refers_to.push(parse_int(f, "RelayEvidenceRefersTo")?);
                }
                set_once(relay, r, "ext:RelayEvidenceInfo")?;
            } else if critical {
                return Err(EvidenceError::CriticalExtension(c.label()));
            }
        }
    }
    Ok(())
}

fn from_tree(root: &Node) -> Result<Evidence, EvidenceError> {
    if !root.erds("Evidence") {
        return Err(EvidenceError::NotEvidence(root.label()));
    }
    let version = root
        .attr("version")
        .ok_or(EvidenceError::Missing("the version attribute"))?
        .to_owned();
    let mut evidence_id = None;
    let mut event = None;
    let mut reasons: Option<Vec<EventReason>> = None;
    let mut event_time = None;
    let mut policy_ids: Option<Vec<String>> = None;
    let mut issuer = None;
    let mut sender = None;
    let mut recipients = Vec::new();
    let mut submission_time = None;
    let mut refers_to_recipient = None;
    let mut message_id = None;
    let mut user_content = None;
    let mut external_system = None;
    let mut external_erds = None;
    let mut general_info = None;
    let mut relay_info = None;
    let mut has_signature = false;
    for c in &root.children {
        if c.erds("EvidenceIdentifier") {
            set_once(
                &mut evidence_id,
                c.trimmed().to_owned(),
                "EvidenceIdentifier",
            )?;
        } else if c.erds("ERDSEventId") {
            let e = Event::from_uri(c.trimmed())
                .ok_or_else(|| EvidenceError::UnknownEvent(c.trimmed().to_owned()))?;
            set_once(&mut event, e, "ERDSEventId")?;
        } else if c.erds("EventReasons") {
            let mut list = Vec::new();
            for r in c.children.iter().filter(|r| r.erds("EventReason")) {
                let code = r
                    .children
                    .iter()
                    .find(|f| f.erds("Code"))
                    .ok_or(EvidenceError::Missing("EventReason/Code"))?;
                list.push(EventReason {
                    code: code.trimmed().to_owned(),
                    details: r
                        .children
                        .iter()
                        .filter(|f| f.erds("Details"))
                        .map(|f| f.text.clone())
                        .collect(),
                });
            }
            set_once(&mut reasons, list, "EventReasons")?;
        } else if c.erds("EventTime") {
            set_once(&mut event_time, parse_time(c, "EventTime")?, "EventTime")?;
        } else if c.erds("EvidenceIssuerPolicyID") {
            let list = c
                .children
                .iter()
                .filter(|p| p.erds("PolicyID"))
                .map(|p| p.trimmed().to_owned())
                .collect();
            set_once(&mut policy_ids, list, "EvidenceIssuerPolicyID")?;
        } else if c.erds("EvidenceIssuerDetails") {
            let id = read_entity(c, "EvidenceIssuerDetails/Identity")?;
            set_once(&mut issuer, id, "EvidenceIssuerDetails")?;
        } else if c.erds("SenderDetails") {
            set_once(&mut sender, read_user(c)?, "SenderDetails")?;
        } else if c.erds("RecipientDetails") {
            recipients.push(read_user(c)?);
        } else if c.erds("SubmissionTime") {
            let t = parse_time(c, "SubmissionTime")?;
            set_once(&mut submission_time, t, "SubmissionTime")?;
        } else if c.erds("EvidenceRefersToRecipient") {
            let n = parse_int(c, "EvidenceRefersToRecipient")?;
            set_once(&mut refers_to_recipient, n, "EvidenceRefersToRecipient")?;
        } else if c.erds("MessageIdentifier") {
            set_once(&mut message_id, c.trimmed().to_owned(), "MessageIdentifier")?;
        } else if c.erds("UserContentInfo") {
            set_once(&mut user_content, read_user_content(c)?, "UserContentInfo")?;
        } else if c.erds("ForwardedToExternalSystem") || c.erds("ExternalSystem") {
            set_once(
                &mut external_system,
                c.text.clone(),
                "ForwardedToExternalSystem",
            )?;
        } else if c.erds("ExternalERDSDetails") {
            let id = read_entity(c, "ExternalERDSDetails/Identity")?;
            set_once(&mut external_erds, id, "ExternalERDSDetails")?;
        } else if c.erds("Extensions") {
            read_extensions(c, &mut general_info, &mut relay_info)?;
        } else if c.is(NS_DS, "Signature") {
            if has_signature {
                return Err(EvidenceError::Repeated("ds:Signature"));
            }
            has_signature = true;
        }
    }
    if recipients.is_empty() {
        return Err(EvidenceError::Missing("RecipientDetails"));
    }
    Ok(Evidence {
        version,
        xml_id: root.attr("Id").map(str::to_owned),
        evidence_id: evidence_id.ok_or(EvidenceError::Missing("EvidenceIdentifier"))?,
        event: event.ok_or(EvidenceError::Missing("ERDSEventId"))?,
        reasons: reasons.unwrap_or_default(),
        event_time: event_time.ok_or(EvidenceError::Missing("EventTime"))?,
        issuer_policy_ids: policy_ids.unwrap_or_default(),
        issuer: issuer.ok_or(EvidenceError::Missing("EvidenceIssuerDetails"))?,
        sender: sender.ok_or(EvidenceError::Missing("SenderDetails"))?,
        recipients,
        submission_time,
        refers_to_recipient,
        message_id,
        user_content,
        external_system,
        external_erds,
        general_info,
        relay_info,
        has_signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes_are_escaped_for_their_place() {
        assert!(matches!(escape("plain text", false), Cow::Borrowed(_)));
        assert_eq!(
            escape("a&b<c>d'\"e\r\n\t", false),
            "a&amp;b&lt;c&gt;d'\"e&#13;\n\t"
        );
        assert_eq!(
            escape("a&b<c>\"\r\n\t", true),
            "a&amp;b&lt;c&gt;&quot;&#13;&#10;&#9;"
        );
        // What XML 1.0 cannot carry at all becomes U+FFFD.
        assert_eq!(
            escape("x\u{0}y\u{1B}z\u{FFFE}", false),
            "x\u{FFFD}y\u{FFFD}z\u{FFFD}"
        );
    }

    #[test]
    fn characters_xml_cannot_carry_are_refused_by_the_reader() {
        for doc in [
            "<a>x\u{0}y</a>",
            "<a b=\"\u{1}\"/>",
            "<a><![CDATA[\u{FFFE}]]></a>",
        ] {
            assert!(
                matches!(build_tree(doc), Err(EvidenceError::Syntax { .. })),
                "{doc:?}"
            );
        }
        assert!(build_tree("<a b=\"\t\">x\ty\u{10000}</a>").is_ok());
        for doc in [
            "<a xmlns:p=\"urn:&#120;\"/>",
            "<a xmlns=\"urn:\u{0}\"/>",
            "<a xmlns:p=\"urn:<\"/>",
            "<a xmlns:p='urn:\"'/>",
        ] {
            assert!(
                matches!(build_tree(doc), Err(EvidenceError::Syntax { .. })),
                "{doc:?}"
            );
        }
    }

    #[test]
    fn times_are_written_in_utc_with_fractions_only_when_present() {
        let t = DateTime::parse_from_rfc3339("2022-08-03T16:22:11+02:00").unwrap();
        assert_eq!(time(&t.with_timezone(&Utc)), "2022-08-03T14:22:11Z");
        let t = DateTime::parse_from_rfc3339("2022-08-03T14:22:11.5Z").unwrap();
        assert_eq!(time(&t.with_timezone(&Utc)), "2022-08-03T14:22:11.500Z");
    }
}

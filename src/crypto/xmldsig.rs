// SPDX-License-Identifier: GPL-3.0-or-later
//! Enveloped XML signatures (W3C XML Signature 1.1), the part ERDS evidences (XAdES, see
//! `rem::xades`), Trusted Lists and CSI files have in common.
//!
//! What is supported, and nothing else (anything else is an error, not a skipped check):
//! - one `ds:Signature`, a child of the document element, the only one in the document;
//! - references to the same document: `URI=""` (the whole document without comments) and
//!   `URI="#id"` (the element whose `Id` attribute is `id`; an `Id` value used twice is an
//!   error, so a reference cannot be pointed elsewhere by a copy);
//! - transforms: the enveloped-signature transform, the XPath Filter 2.0 "subtract" of
//!   `/descendant::ds:Signature` (the only XPath accepted), exclusive c14n 1.0 (with an
//!   `InclusiveNamespaces PrefixList` or without), inclusive c14n 1.0 and 1.1, each with or
//!   without comments; at most [`MAX_TRANSFORMS`] per reference, [`MAX_REFERENCES`]
//!   references;
//! - digests SHA-256/384/512 (SHA-1 read only, for old Trusted Lists);
//! - signature methods rsa-sha256/384/512, ecdsa-sha256/384 (rsa-sha1 read only); the
//!   XML-DSig ECDSA value is the raw `r‖s`, converted to and from DER here;
//! - the key: the certificates of `KeyInfo/X509Data`. [`verify`] returns them and which one
//!   verified; whether that certificate is trusted is the caller's decision.
//!
//! Canonicalization is `bergshamra-c14n` over the `uppsala` parser (depth bounded, no DTD).
//! Every document from outside passes [`crate::xml::check_plain`] first. Signing goes
//! through [`Signer`] (PKCS#11 or PEM): no private key is handled here.

use std::collections::HashMap;

use base64::Engine as _;
use bergshamra_c14n::C14nMode;
use bergshamra_xml::NodeSet;
use thiserror::Error;
use uppsala::{Document, NodeId, NodeKind};

use super::{Curve, DigestAlg, KeyKind, SignError, Signer};
use crate::xml::{check_plain, XmlGateError};

/// The XML-DSig namespace.
pub const NS_DS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// The XPath Filter 2.0 namespace (and transform URI).
pub const NS_FILTER2: &str = "http://www.w3.org/2002/06/xmldsig-filter2";
/// The exclusive c14n namespace (of `InclusiveNamespaces`) and algorithm URI.
pub const NS_EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
/// The enveloped-signature transform.
pub const ENVELOPED_SIGNATURE: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
/// The only XPath Filter 2.0 expression accepted (with `ds` bound to [`NS_DS`]).
pub const SUBTRACT_SIGNATURES: &str = "/descendant::ds:Signature";

/// Most references a `SignedInfo` may carry.
pub const MAX_REFERENCES: usize = 16;
/// Most transforms a reference may carry.
pub const MAX_TRANSFORMS: usize = 4;
/// Most certificates read from `KeyInfo`.
pub const MAX_CERTIFICATES: usize = 8;

#[derive(Debug, Error)]
pub enum XmlDsigError {
    #[error(transparent)]
    Gate(#[from] XmlGateError),
    #[error("xml: {0}")]
    Parse(String),
    #[error("xml signature: {0}")]
    Structure(String),
    #[error("xml signature: unsupported {0}")]
    Unsupported(String),
    #[error("xml signature: the digest of reference \"{0}\" does not match")]
    Digest(String),
    #[error("xml signature: the signature value does not verify with any key info certificate")]
    BadSignature,
    #[error("xml signature: certificate: {0}")]
    Certificate(String),
    #[error("xml signature: {0}")]
    Sign(#[from] SignError),
}

fn structure(msg: impl Into<String>) -> XmlDsigError {
    XmlDsigError::Structure(msg.into())
}

/// A canonicalization algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum C14n {
    /// Exclusive c14n 1.0, with the `InclusiveNamespaces PrefixList` (`#default` for the
    /// default namespace).
    Exclusive {
        with_comments: bool,
        prefixes: Vec<String>,
    },
    /// Canonical XML 1.0.
    Inclusive10 { with_comments: bool },
    /// Canonical XML 1.1.
    Inclusive11 { with_comments: bool },
}

impl C14n {
    /// Exclusive c14n 1.0 without comments and without a prefix list.
    pub const EXCLUSIVE: C14n = C14n::Exclusive {
        with_comments: false,
        prefixes: Vec::new(),
    };

    /// The algorithm of `uri` with the `prefixes` of an `InclusiveNamespaces` element
    /// (ignored unless exclusive).
    pub fn from_uri(uri: &str, prefixes: Vec<String>) -> Option<Self> {
        let mode = C14nMode::from_uri(uri)?;
        let with_comments = mode.with_comments();
        Some(match mode {
            C14nMode::Exclusive | C14nMode::ExclusiveWithComments => C14n::Exclusive {
                with_comments,
                prefixes,
            },
            C14nMode::Inclusive | C14nMode::InclusiveWithComments => {
                C14n::Inclusive10 { with_comments }
            }
            C14nMode::Inclusive11 | C14nMode::Inclusive11WithComments => {
                C14n::Inclusive11 { with_comments }
            }
        })
    }

    pub fn uri(&self) -> &'static str {
        self.mode().uri()
    }

    fn mode(&self) -> C14nMode {
        match self {
            C14n::Exclusive {
                with_comments: false,
                ..
            } => C14nMode::Exclusive,
            C14n::Exclusive { .. } => C14nMode::ExclusiveWithComments,
            C14n::Inclusive10 {
                with_comments: false,
            } => C14nMode::Inclusive,
            C14n::Inclusive10 { .. } => C14nMode::InclusiveWithComments,
            C14n::Inclusive11 {
                with_comments: false,
            } => C14nMode::Inclusive11,
            C14n::Inclusive11 { .. } => C14nMode::Inclusive11WithComments,
        }
    }

    fn prefixes(&self) -> &[String] {
        match self {
            C14n::Exclusive { prefixes, .. } => prefixes,
            _ => &[],
        }
    }

    /// Canonicalizes the nodes of `set` in `doc`.
    fn run(&self, doc: &Document<'_>, set: &NodeSet) -> Result<Vec<u8>, XmlDsigError> {
        bergshamra_c14n::canonicalize_doc(doc, self.mode(), Some(set), self.prefixes())
            .map_err(|e| structure(format!("canonicalization: {e}")))
    }
}

/// A digest algorithm of `DigestMethod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestMethod {
    /// Read only (old Trusted Lists).
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl DigestMethod {
    pub fn uri(self) -> &'static str {
        match self {
            DigestMethod::Sha1 => "http://www.w3.org/2000/09/xmldsig#sha1",
            DigestMethod::Sha256 => "http://www.w3.org/2001/04/xmlenc#sha256",
            DigestMethod::Sha384 => "http://www.w3.org/2001/04/xmldsig-more#sha384",
            DigestMethod::Sha512 => "http://www.w3.org/2001/04/xmlenc#sha512",
        }
    }

    pub fn from_uri(uri: &str) -> Option<Self> {
        [
            DigestMethod::Sha1,
            DigestMethod::Sha256,
            DigestMethod::Sha384,
            DigestMethod::Sha512,
        ]
        .into_iter()
        .find(|d| d.uri() == uri)
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            DigestMethod::Sha1 => sha1::Sha1::digest(data).to_vec(),
            DigestMethod::Sha256 => sha2::Sha256::digest(data).to_vec(),
            DigestMethod::Sha384 => sha2::Sha384::digest(data).to_vec(),
            DigestMethod::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    fn message_digest(self) -> openssl::hash::MessageDigest {
        use openssl::hash::MessageDigest;
        match self {
            DigestMethod::Sha1 => MessageDigest::sha1(),
            DigestMethod::Sha256 => MessageDigest::sha256(),
            DigestMethod::Sha384 => MessageDigest::sha384(),
            DigestMethod::Sha512 => MessageDigest::sha512(),
        }
    }
}

/// A `SignatureMethod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureMethod {
    /// Read only (old Trusted Lists).
    RsaSha1,
    RsaSha256,
    RsaSha384,
    RsaSha512,
    EcdsaSha256,
    EcdsaSha384,
}

impl SignatureMethod {
    const ALL: [SignatureMethod; 6] = [
        SignatureMethod::RsaSha1,
        SignatureMethod::RsaSha256,
        SignatureMethod::RsaSha384,
        SignatureMethod::RsaSha512,
        SignatureMethod::EcdsaSha256,
        SignatureMethod::EcdsaSha384,
    ];

    pub fn uri(self) -> &'static str {
        match self {
            SignatureMethod::RsaSha1 => "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
            SignatureMethod::RsaSha256 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            SignatureMethod::RsaSha384 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
            SignatureMethod::RsaSha512 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
            SignatureMethod::EcdsaSha256 => "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
            SignatureMethod::EcdsaSha384 => "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
        }
    }

    pub fn from_uri(uri: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.uri() == uri)
    }

    pub fn digest(self) -> DigestMethod {
        match self {
            SignatureMethod::RsaSha1 => DigestMethod::Sha1,
            SignatureMethod::RsaSha256 | SignatureMethod::EcdsaSha256 => DigestMethod::Sha256,
            SignatureMethod::RsaSha384 | SignatureMethod::EcdsaSha384 => DigestMethod::Sha384,
            SignatureMethod::RsaSha512 => DigestMethod::Sha512,
        }
    }

    pub fn is_ecdsa(self) -> bool {
        matches!(
            self,
            SignatureMethod::EcdsaSha256 | SignatureMethod::EcdsaSha384
        )
    }

    /// The method a signer signs with: its key type, and SHA-384 when it is configured for
    /// it, else SHA-256 (never SHA-1 for a new signature).
    pub fn for_signer(signer: &dyn Signer) -> Result<(Self, DigestAlg), SignError> {
        let digest = match signer.digest() {
            DigestAlg::Sha384 => DigestAlg::Sha384,
            DigestAlg::Sha1 | DigestAlg::Sha256 => DigestAlg::Sha256,
        };
        let method = match (signer.key_kind()?, digest) {
            (KeyKind::Rsa { .. }, DigestAlg::Sha384) => SignatureMethod::RsaSha384,
            (KeyKind::Rsa { .. }, _) => SignatureMethod::RsaSha256,
            (KeyKind::Ecdsa(_), DigestAlg::Sha384) => SignatureMethod::EcdsaSha384,
            (KeyKind::Ecdsa(_), _) => SignatureMethod::EcdsaSha256,
        };
        Ok((method, digest))
    }
}

/// An ECDSA signature as DER `ECDSA-Sig-Value` → the XML-DSig raw `r‖s`, each integer
/// left-padded to `field_len` bytes (32 for P-256, 48 for P-384).
pub fn ecdsa_der_to_raw(der: &[u8], field_len: usize) -> Result<Vec<u8>, XmlDsigError> {
    let sig = openssl::ecdsa::EcdsaSig::from_der(der)
        .map_err(|e| structure(format!("malformed ecdsa signature: {e}")))?;
    let mut out = Vec::with_capacity(2 * field_len);
    for n in [sig.r(), sig.s()] {
        let bytes = n
            .to_vec_padded(field_len as i32)
            .map_err(|e| structure(format!("ecdsa integer too long: {e}")))?;
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

/// The XML-DSig raw `r‖s` → DER `ECDSA-Sig-Value`.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, XmlDsigError> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 2 * 66 {
        return Err(structure(format!(
            "ecdsa signature value of {} bytes is not r||s",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let bn = |b: &[u8]| openssl::bn::BigNum::from_slice(b);
    let sig = bn(r)
        .and_then(|r| bn(s).and_then(|s| openssl::ecdsa::EcdsaSig::from_private_components(r, s)))
        .and_then(|sig| sig.to_der())
        .map_err(|e| structure(format!("ecdsa signature value: {e}")))?;
    Ok(sig)
}

/// One reference that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReference {
    /// Its `Id` attribute.
    pub id: Option<String>,
    /// `""` or `#id`.
    pub uri: String,
    /// Its `Type` attribute.
    pub type_uri: Option<String>,
    pub digest_method: DigestMethod,
    /// Whether it covers the whole document but the signature (`URI=""`, or `#id` of the
    /// document element, with the enveloped-signature or filter2 subtract transform).
    pub whole_document: bool,
}

/// What [`verify`] established: every reference's digest and the signature value hold
/// with the key of `certificates[signer]`. Nothing is said of trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `Id` of `ds:Signature`.
    pub signature_id: Option<String>,
    pub signature_method: SignatureMethod,
    pub references: Vec<VerifiedReference>,
    /// DER of the `KeyInfo/X509Data/X509Certificate` certificates, in document order.
    pub certificates: Vec<Vec<u8>>,
    /// Index in `certificates` of the one whose key verified the signature value.
    pub signer: usize,
}

impl Verified {
    /// DER of the certificate whose key verified the signature.
    pub fn signer_certificate(&self) -> &[u8] {
        &self.certificates[self.signer]
    }

    /// Whether some reference covers the whole document except the signature.
    pub fn covers_document(&self) -> bool {
        self.references.iter().any(|r| r.whole_document)
    }
}

/// Parses `text` (already through the gate) with the DTD refused and the nesting bounded.
pub(crate) fn parse(text: &str) -> Result<Document<'_>, XmlDsigError> {
    uppsala::Parser::new()
        .with_forbid_dtd(true)
        .with_forbid_entities(true)
        .parse(text)
        .map_err(|e| XmlDsigError::Parse(e.to_string()))
}

/// Canonical bytes of the whole document `raw` (from outside: it passes the gate).
pub fn canonicalize(raw: &[u8], c14n: &C14n) -> Result<Vec<u8>, XmlDsigError> {
    let text = check_plain(raw)?;
    let doc = parse(text)?;
    let set = if c14n.mode().with_comments() {
        NodeSet::all(&doc)
    } else {
        NodeSet::all_without_comments(&doc)
    };
    c14n.run(&doc, &set)
}

/// Canonical bytes of the subtree of element `node` of `doc`.
pub(crate) fn canonicalize_element(
    doc: &Document<'_>,
    node: NodeId,
    c14n: &C14n,
) -> Result<Vec<u8>, XmlDsigError> {
    c14n.run(doc, &NodeSet::tree_with_comments(node, doc))
}

// ---- tree helpers ----

pub(crate) fn is_element(doc: &Document<'_>, node: NodeId, ns: &str, local: &str) -> bool {
    doc.element(node)
        .is_some_and(|e| e.matches_name_ns(ns, local))
}

/// The element children of `node`; text other than white space is an error.
pub(crate) fn element_children(
    doc: &Document<'_>,
    node: NodeId,
) -> Result<Vec<NodeId>, XmlDsigError> {
    let mut out = Vec::new();
    for child in doc.children_iter(node) {
        match doc.node_kind(child) {
            Some(NodeKind::Element(_)) => out.push(child),
            Some(NodeKind::Text(t)) | Some(NodeKind::CData(t)) if !t.trim().is_empty() => {
                return Err(structure("unexpected text in a signature element"));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The text content of `node` (text and CDATA children).
pub(crate) fn text_of(doc: &Document<'_>, node: NodeId) -> String {
    let mut out = String::new();
    for child in doc.children_iter(node) {
        if let Some(NodeKind::Text(t)) | Some(NodeKind::CData(t)) = doc.node_kind(child) {
            out.push_str(t);
        }
    }
    out
}

/// Base64 with white space anywhere (XML-DSig values are often wrapped).
pub(crate) fn base64_value(text: &str) -> Result<Vec<u8>, XmlDsigError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| structure(format!("malformed base64: {e}")))
}

fn attr<'d>(doc: &'d Document<'_>, node: NodeId, name: &str) -> Option<&'d str> {
    let e = doc.element(node)?;
    e.attributes
        .iter()
        .find(|a| a.name.namespace_uri.is_none() && a.name.local_name == name)
        .map(|a| &*a.value)
}

/// The namespace bound to `prefix` at `node`.
fn lookup_prefix(doc: &Document<'_>, node: NodeId, prefix: &str) -> Option<String> {
    let mut at = Some(node);
    while let Some(n) = at {
        if let Some(e) = doc.element(n) {
            if let Some((_, uri)) = e
                .namespace_declarations
                .iter()
                .find(|(p, _)| p.as_ref() == prefix)
            {
                return Some(uri.to_string());
            }
        }
        at = doc.parent(n);
    }
    None
}

/// Elements by `Id` attribute; an `Id` used twice is an error.
pub(crate) fn id_map(doc: &Document<'_>) -> Result<HashMap<String, NodeId>, XmlDsigError> {
    let mut map = HashMap::new();
    for node in doc.descendants(doc.root()) {
        if let Some(id) = attr(doc, node, "Id") {
            if map.insert(id.to_string(), node).is_some() {
                return Err(structure(format!("Id \"{id}\" is used twice")));
            }
        }
    }
    Ok(map)
}

/// The one `ds:Signature` of the document, a child of the document element.
pub(crate) fn the_signature(doc: &Document<'_>) -> Result<NodeId, XmlDsigError> {
    let sigs: Vec<NodeId> = doc
        .descendants(doc.root())
        .into_iter()
        .filter(|n| is_element(doc, *n, NS_DS, "Signature"))
        .collect();
    let [sig] = sigs.as_slice() else {
        return Err(structure(format!(
            "expected one ds:Signature, found {}",
            sigs.len()
        )));
    };
    if doc.parent(*sig) != doc.document_element() {
        return Err(structure(
            "ds:Signature is not a child of the document element",
        ));
    }
    Ok(*sig)
}

// ---- references ----

#[derive(Debug, Clone, PartialEq, Eq)]
enum Transform {
    Enveloped,
    SubtractSignatures,
    C14n(C14n),
}

#[derive(Debug, Clone)]
struct Reference {
    id: Option<String>,
    uri: String,
    type_uri: Option<String>,
    transforms: Vec<Transform>,
    digest_method: DigestMethod,
    digest_value: Vec<u8>,
}

/// The algorithm of a `CanonicalizationMethod` or c14n `Transform` element.
fn read_c14n(doc: &Document<'_>, node: NodeId, uri: &str) -> Result<C14n, XmlDsigError> {
    let mut prefixes = Vec::new();
    for child in element_children(doc, node)? {
        if is_element(doc, child, NS_EXC_C14N, "InclusiveNamespaces") {
            let list = attr(doc, child, "PrefixList").unwrap_or("");
            prefixes.extend(list.split_ascii_whitespace().map(str::to_string));
        } else {
            return Err(XmlDsigError::Unsupported(
                "parameter of a canonicalization method".into(),
            ));
        }
    }
    C14n::from_uri(uri, prefixes)
        .ok_or_else(|| XmlDsigError::Unsupported(format!("canonicalization method {uri}")))
}

fn read_transform(doc: &Document<'_>, node: NodeId) -> Result<Transform, XmlDsigError> {
    if !is_element(doc, node, NS_DS, "Transform") {
        return Err(structure("unexpected element in ds:Transforms"));
    }
    let alg =
        attr(doc, node, "Algorithm").ok_or_else(|| structure("transform without algorithm"))?;
    match alg {
        ENVELOPED_SIGNATURE => {
            if !element_children(doc, node)?.is_empty() {
                return Err(structure("enveloped-signature transform with parameters"));
            }
            Ok(Transform::Enveloped)
        }
        NS_FILTER2 => {
            let children = element_children(doc, node)?;
            let [xpath] = children.as_slice() else {
                return Err(XmlDsigError::Unsupported(
                    "xpath filter 2.0 with several expressions".into(),
                ));
            };
            if !is_element(doc, *xpath, NS_FILTER2, "XPath")
                || attr(doc, *xpath, "Filter") != Some("subtract")
                || text_of(doc, *xpath).trim() != SUBTRACT_SIGNATURES
                || lookup_prefix(doc, *xpath, "ds").as_deref() != Some(NS_DS)
            {
                return Err(XmlDsigError::Unsupported(format!(
                    "xpath filter 2.0 other than subtract {SUBTRACT_SIGNATURES}"
                )));
            }
            Ok(Transform::SubtractSignatures)
        }
        other => Ok(Transform::C14n(read_c14n(doc, node, other)?)),
    }
}

fn read_reference(doc: &Document<'_>, node: NodeId) -> Result<Reference, XmlDsigError> {
    let uri = attr(doc, node, "URI")
        .ok_or_else(|| XmlDsigError::Unsupported("reference without URI".into()))?
        .to_string();
    let mut children = element_children(doc, node)?.into_iter().peekable();
    let mut transforms = Vec::new();
    if let Some(t) = children.next_if(|c| is_element(doc, *c, NS_DS, "Transforms")) {
        let list = element_children(doc, t)?;
        if list.is_empty() || list.len() > MAX_TRANSFORMS {
            return Err(structure(format!(
                "a reference has {} transforms (1 to {MAX_TRANSFORMS})",
                list.len()
            )));
        }
        for t in list {
            transforms.push(read_transform(doc, t)?);
        }
    }
    let method = children
        .next()
        .filter(|c| is_element(doc, *c, NS_DS, "DigestMethod"))
        .ok_or_else(|| structure("reference without ds:DigestMethod"))?;
    let value = children
        .next()
        .filter(|c| is_element(doc, *c, NS_DS, "DigestValue"))
        .ok_or_else(|| structure("reference without ds:DigestValue"))?;
    if children.next().is_some() {
        return Err(structure("unexpected element in ds:Reference"));
    }
    let alg = attr(doc, method, "Algorithm").unwrap_or("");
    let digest_method = DigestMethod::from_uri(alg)
        .ok_or_else(|| XmlDsigError::Unsupported(format!("digest method {alg}")))?;
    Ok(Reference {
        id: attr(doc, node, "Id").map(str::to_string),
        uri,
        type_uri: attr(doc, node, "Type").map(str::to_string),
        transforms,
        digest_method,
        digest_value: base64_value(&text_of(doc, value))?,
    })
}

/// The octets a reference digests: its node set through its transforms, canonicalized.
fn reference_octets(
    doc: &Document<'_>,
    signature: NodeId,
    ids: &HashMap<String, NodeId>,
    reference: &Reference,
) -> Result<Vec<u8>, XmlDsigError> {
    let mut set = if reference.uri.is_empty() {
        NodeSet::all_without_comments(doc)
    } else if let Some(id) = reference.uri.strip_prefix('#') {
        let node = ids
            .get(id)
            .ok_or_else(|| structure(format!("reference to unknown Id \"{id}\"")))?;
        NodeSet::tree_without_comments(*node, doc)
    } else {
        return Err(XmlDsigError::Unsupported(format!(
            "reference URI \"{}\" (same-document references only)",
            reference.uri
        )));
    };
    let mut transforms = reference.transforms.iter().peekable();
    while let Some(t) = transforms.next() {
        match t {
            // One signature in the document: "the signature containing the transform" and
            // "every ds:Signature" are the same subtree.
            Transform::Enveloped | Transform::SubtractSignatures => {
                set = set.subtract(&NodeSet::tree_with_comments(signature, doc));
            }
            Transform::C14n(c14n) => {
                if transforms.peek().is_some() {
                    return Err(XmlDsigError::Unsupported(
                        "transform after a canonicalization".into(),
                    ));
                }
                return c14n.run(doc, &set);
            }
        }
    }
    // A node set left at the end is serialized with Canonical XML 1.0.
    C14n::Inclusive10 {
        with_comments: false,
    }
    .run(doc, &set)
}

// ---- verification ----

struct ParsedSignature {
    signature: NodeId,
    signed_info: NodeId,
    c14n: C14n,
    method: SignatureMethod,
    references: Vec<Reference>,
    value: Vec<u8>,
    certificates: Vec<Vec<u8>>,
}

fn read_signature(doc: &Document<'_>) -> Result<ParsedSignature, XmlDsigError> {
    let signature = the_signature(doc)?;
    let mut parts = element_children(doc, signature)?.into_iter();
    let signed_info = parts
        .next()
        .filter(|n| is_element(doc, *n, NS_DS, "SignedInfo"))
        .ok_or_else(|| structure("ds:Signature does not start with ds:SignedInfo"))?;
    let value_node = parts
        .next()
        .filter(|n| is_element(doc, *n, NS_DS, "SignatureValue"))
        .ok_or_else(|| structure("ds:SignatureValue missing"))?;
    let mut certificates = Vec::new();
    for rest in parts {
        if is_element(doc, rest, NS_DS, "KeyInfo") {
            for data in element_children(doc, rest)? {
                if !is_element(doc, data, NS_DS, "X509Data") {
                    continue;
                }
                for cert in element_children(doc, data)? {
                    if is_element(doc, cert, NS_DS, "X509Certificate") {
                        if certificates.len() == MAX_CERTIFICATES {
                            return Err(structure(format!(
                                "more than {MAX_CERTIFICATES} certificates in ds:KeyInfo"
                            )));
                        }
                        certificates.push(base64_value(&text_of(doc, cert))?);
                    }
                }
            }
        } else if !is_element(doc, rest, NS_DS, "Object") {
            return Err(structure("unexpected element in ds:Signature"));
        }
    }

    let mut info = element_children(doc, signed_info)?.into_iter();
    let c14n_node = info
        .next()
        .filter(|n| is_element(doc, *n, NS_DS, "CanonicalizationMethod"))
        .ok_or_else(|| structure("ds:CanonicalizationMethod missing"))?;
    let c14n = read_c14n(
        doc,
        c14n_node,
        attr(doc, c14n_node, "Algorithm").unwrap_or(""),
    )?;
    let method_node = info
        .next()
        .filter(|n| is_element(doc, *n, NS_DS, "SignatureMethod"))
        .ok_or_else(|| structure("ds:SignatureMethod missing"))?;
    if !element_children(doc, method_node)?.is_empty() {
        return Err(XmlDsigError::Unsupported(
            "signature method parameters".into(),
        ));
    }
    let alg = attr(doc, method_node, "Algorithm").unwrap_or("");
    let method = SignatureMethod::from_uri(alg)
        .ok_or_else(|| XmlDsigError::Unsupported(format!("signature method {alg}")))?;
    let mut references = Vec::new();
    for r in info {
        if !is_element(doc, r, NS_DS, "Reference") {
            return Err(structure("unexpected element in ds:SignedInfo"));
        }
        if references.len() == MAX_REFERENCES {
            return Err(structure(format!("more than {MAX_REFERENCES} references")));
        }
        references.push(read_reference(doc, r)?);
    }
    if references.is_empty() {
        return Err(structure("ds:SignedInfo without references"));
    }
    Ok(ParsedSignature {
        signature,
        signed_info,
        c14n,
        method,
        references,
        value: base64_value(&text_of(doc, value_node))?,
        certificates,
    })
}

/// Whether `signature` (as XML-DSig encodes it) over `data` verifies with `cert_der`'s key.
fn signature_holds(
    cert_der: &[u8],
    method: SignatureMethod,
    data: &[u8],
    signature: &[u8],
) -> Result<bool, XmlDsigError> {
    let cert = openssl::x509::X509::from_der(cert_der)
        .map_err(|e| XmlDsigError::Certificate(format!("cannot parse: {e}")))?;
    let key = cert
        .public_key()
        .map_err(|e| XmlDsigError::Certificate(format!("cannot read the public key: {e}")))?;
    let wanted = if method.is_ecdsa() {
        openssl::pkey::Id::EC
    } else {
        openssl::pkey::Id::RSA
    };
    if key.id() != wanted {
        return Ok(false);
    }
    let der;
    let signature = if method.is_ecdsa() {
        der = match ecdsa_raw_to_der(signature) {
            Ok(d) => d,
            Err(_) => return Ok(false),
        };
        &der[..]
    } else {
        signature
    };
    let mut verifier = openssl::sign::Verifier::new(method.digest().message_digest(), &key)
        .map_err(|e| XmlDsigError::Certificate(format!("cannot use the public key: {e}")))?;
    verifier
        .update(data)
        .map_err(|e| XmlDsigError::Certificate(format!("cannot verify: {e}")))?;
    Ok(verifier.verify(signature).unwrap_or(false))
}

/// Whether `reference` selects the whole document (`URI=""`, or `#id` of the document
/// element) less the signature (an enveloped or filter2 subtract transform).
fn covers_whole_document(
    doc: &Document<'_>,
    ids: &HashMap<String, NodeId>,
    reference: &Reference,
) -> bool {
    let whole = reference.uri.is_empty()
        || reference
            .uri
            .strip_prefix('#')
            .and_then(|id| ids.get(id))
            .is_some_and(|n| Some(*n) == doc.document_element());
    whole
        && reference
            .transforms
            .iter()
            .any(|t| matches!(t, Transform::Enveloped | Transform::SubtractSignatures))
}

/// Verifies the enveloped signature of `raw` (a document from outside: it passes the gate
/// first): every reference's digest, then the signature value over the canonical
/// `SignedInfo` with the key of a `KeyInfo` certificate. Whether that certificate is
/// trusted, and whether the references cover what the caller needs, is the caller's.
pub fn verify(raw: &[u8]) -> Result<Verified, XmlDsigError> {
    let text = check_plain(raw)?;
    let doc = parse(text)?;
    verify_parsed(&doc)
}

/// [`verify`] on a document already parsed with [`parse`].
pub(crate) fn verify_parsed(doc: &Document<'_>) -> Result<Verified, XmlDsigError> {
    let sig = read_signature(doc)?;
    let ids = id_map(doc)?;
    let mut references = Vec::with_capacity(sig.references.len());
    for r in &sig.references {
        let octets = reference_octets(doc, sig.signature, &ids, r)?;
        if r.digest_method.digest(&octets) != r.digest_value {
            return Err(XmlDsigError::Digest(if r.uri.is_empty() {
                r.id.clone().unwrap_or_default()
            } else {
                r.uri.clone()
            }));
        }
        references.push(VerifiedReference {
            id: r.id.clone(),
            uri: r.uri.clone(),
            type_uri: r.type_uri.clone(),
            digest_method: r.digest_method,
            whole_document: covers_whole_document(doc, &ids, r),
        });
    }
    let signed_info = canonicalize_element(doc, sig.signed_info, &sig.c14n)?;
    let mut signer = None;
    for (i, cert) in sig.certificates.iter().enumerate() {
        if signature_holds(cert, sig.method, &signed_info, &sig.value)? {
            signer = Some(i);
            break;
        }
    }
    let signer = signer.ok_or(XmlDsigError::BadSignature)?;
    Ok(Verified {
        signature_id: attr(doc, sig.signature, "Id").map(str::to_string),
        signature_method: sig.method,
        references,
        certificates: sig.certificates,
        signer,
    })
}

/// The octets an XML signature's digests and signature value are computed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreDigest {
    /// Each reference's canonical octets, in `SignedInfo` order.
    pub references: Vec<Vec<u8>>,
    /// The canonical `SignedInfo`.
    pub signed_info: Vec<u8>,
}

/// The octets of each reference of the signature of `raw` and of its `SignedInfo`,
/// computed as [`verify`] does but without checking anything: for diagnostics and for
/// comparing with other implementations (`xmlsec1 --store-references`).
pub fn pre_digest(raw: &[u8]) -> Result<PreDigest, XmlDsigError> {
    let text = check_plain(raw)?;
    let doc = parse(text)?;
    let sig = read_signature(&doc)?;
    let ids = id_map(&doc)?;
    let references = sig
        .references
        .iter()
        .map(|r| reference_octets(&doc, sig.signature, &ids, r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PreDigest {
        references,
        signed_info: canonicalize_element(&doc, sig.signed_info, &sig.c14n)?,
    })
}

// ---- signing ----

/// How the reference to the whole document leaves the signature out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Enveloped {
    /// XPath Filter 2.0 subtract of [`SUBTRACT_SIGNATURES`] (what the REM kit uses).
    #[default]
    Filter2Subtract,
    /// The classic enveloped-signature transform (what Trusted Lists use).
    EnvelopedSignature,
}

/// A further reference, to an element of the signature's `ds:Object` by its `Id`, with the
/// exclusive c14n transform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectReference {
    /// The `Id` of the referenced element (the URI is `#` + it).
    pub target_id: String,
    /// The reference's `Type` attribute.
    pub type_uri: Option<String>,
    /// The reference's `Id` attribute.
    pub id: Option<String>,
}

/// What [`sign_enveloped`] writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SignSpec {
    /// `Id` of `ds:Signature`.
    pub signature_id: Option<String>,
    /// `Id` of `ds:SignatureValue`.
    pub signature_value_id: Option<String>,
    /// `Id` of the reference to the whole document.
    pub document_reference_id: Option<String>,
    pub enveloped: Enveloped,
    /// Digest of every reference.
    pub digest: Option<DigestMethod>,
    /// References to elements of `object`, after the one to the document.
    pub object_references: Vec<ObjectReference>,
    /// The content of one `ds:Object` (XML; the `ds` prefix is bound to [`NS_DS`]).
    pub object: Option<String>,
}

fn escape_attr(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
}

fn id_attr(name: &str, value: &Option<String>) -> String {
    value
        .as_ref()
        .map(|v| format!(" {name}=\"{}\"", escape_attr(v)))
        .unwrap_or_default()
}

/// Placeholders of the digest and signature values while they are computed; they are
/// only ever replaced inside the signature element (the document may contain anything).
const DIGEST_MARK: &str = "@@pec-digest-";
const VALUE_MARK: &str = "@@pec-signature-value@@";

/// Signs `xml` (our own document) with an enveloped signature appended as the last child
/// of the document element: a reference to the whole document (less the signature), the
/// references of `spec.object_references`, exclusive c14n of `SignedInfo`, the signer's
/// certificate and chain in `KeyInfo/X509Data`. The signature is made by `signer` (PKCS#11
/// or PEM) and the result verified before it is returned.
pub fn sign_enveloped(
    xml: &str,
    signer: &dyn Signer,
    spec: &SignSpec,
) -> Result<String, XmlDsigError> {
    let text = check_plain(xml.as_bytes())?;
    let doc = parse(text)?;
    let root = doc
        .document_element()
        .ok_or_else(|| structure("document without an element"))?;
    if doc
        .descendants(root)
        .into_iter()
        .any(|n| is_element(&doc, n, NS_DS, "Signature"))
    {
        return Err(structure("the document is already signed"));
    }
    let declare_ds = match lookup_prefix(&doc, root, "ds") {
        Some(ns) if ns == NS_DS => false,
        Some(_) => return Err(structure("prefix ds is bound to another namespace")),
        None => true,
    };
    let range = doc
        .node_range(root)
        .ok_or_else(|| structure("no source range for the document element"))?;
    let element_src = &text[range.clone()];
    let (head, tail) = if element_src.ends_with("/>") {
        let name = doc
            .element(root)
            .map(|e| e.name.prefixed_name().to_string())
            .unwrap_or_default();
        (
            format!("{}>", &text[..range.end - 2]),
            format!("</{name}>{}", &text[range.end..]),
        )
    } else {
        let close = element_src
            .rfind("</")
            .ok_or_else(|| structure("no end tag for the document element"))?;
        (
            text[..range.start + close].to_string(),
            text[range.start + close..].to_string(),
        )
    };
    let (method, sign_digest) = SignatureMethod::for_signer(signer)?;
    let digest = spec.digest.unwrap_or(DigestMethod::Sha256);
    if digest == DigestMethod::Sha1 {
        return Err(XmlDsigError::Unsupported("sha1 for a new signature".into()));
    }

    let exc = C14n::EXCLUSIVE.uri();
    let mut sig = String::new();
    sig.push_str("<ds:Signature");
    if declare_ds {
        sig.push_str(&format!(" xmlns:ds=\"{NS_DS}\""));
    }
    sig.push_str(&id_attr("Id", &spec.signature_id));
    sig.push_str(&format!(
        "><ds:SignedInfo><ds:CanonicalizationMethod Algorithm=\"{exc}\"/><ds:SignatureMethod Algorithm=\"{}\"/>",
        method.uri()
    ));
    let enveloped = match spec.enveloped {
        Enveloped::Filter2Subtract => format!(
            "<ds:Transform Algorithm=\"{NS_FILTER2}\"><dsig-filter2:XPath xmlns:dsig-filter2=\"{NS_FILTER2}\" Filter=\"subtract\">{SUBTRACT_SIGNATURES}</dsig-filter2:XPath></ds:Transform>"
        ),
        Enveloped::EnvelopedSignature => {
            format!("<ds:Transform Algorithm=\"{ENVELOPED_SIGNATURE}\"/>")
        }
    };
    let reference = |n: usize,
                     id: &Option<String>,
                     uri: &str,
                     type_uri: &Option<String>,
                     first: &str| {
        format!(
            "<ds:Reference{}{} URI=\"{}\"><ds:Transforms>{first}<ds:Transform Algorithm=\"{exc}\"/></ds:Transforms><ds:DigestMethod Algorithm=\"{}\"/><ds:DigestValue>{DIGEST_MARK}{n}@@</ds:DigestValue></ds:Reference>",
            id_attr("Id", id),
            id_attr("Type", type_uri),
            escape_attr(uri),
            digest.uri()
        )
    };
    sig.push_str(&reference(
        0,
        &spec.document_reference_id,
        "",
        &None,
        &enveloped,
    ));
    for (i, r) in spec.object_references.iter().enumerate() {
        sig.push_str(&reference(
            i + 1,
            &r.id,
            &format!("#{}", r.target_id),
            &r.type_uri,
            "",
        ));
    }
    sig.push_str("</ds:SignedInfo>");
    sig.push_str(&format!(
        "<ds:SignatureValue{}>{VALUE_MARK}</ds:SignatureValue><ds:KeyInfo><ds:X509Data>",
        id_attr("Id", &spec.signature_value_id)
    ));
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    for cert in std::iter::once(signer.certificate_der())
        .chain(signer.chain_der().iter().map(Vec::as_slice))
    {
        sig.push_str(&format!(
            "<ds:X509Certificate>{}</ds:X509Certificate>",
            b64(cert)
        ));
    }
    sig.push_str("</ds:X509Data></ds:KeyInfo>");
    if let Some(object) = &spec.object {
        sig.push_str(&format!("<ds:Object>{object}</ds:Object>"));
    }
    sig.push_str("</ds:Signature>");
    let whole = |sig: &str| format!("{head}{sig}{tail}");

    // The digests, computed the way verification will.
    let digests = {
        let out = whole(&sig);
        let doc = parse(&out)?;
        let parsed = read_signature_unchecked_values(&doc)?;
        let ids = id_map(&doc)?;
        parsed
            .iter()
            .map(|r| {
                reference_octets(&doc, the_signature(&doc)?, &ids, r).map(|o| digest.digest(&o))
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    for (n, d) in digests.iter().enumerate() {
        sig = sig.replacen(&format!("{DIGEST_MARK}{n}@@"), &b64(d), 1);
    }
    let signed_info = {
        let out = whole(&sig);
        let doc = parse(&out)?;
        let sig_node = the_signature(&doc)?;
        let info = element_children(&doc, sig_node)?
            .into_iter()
            .next()
            .ok_or_else(|| structure("no ds:SignedInfo"))?;
        canonicalize_element(&doc, info, &C14n::EXCLUSIVE)?
    };
    let mut value = signer.sign(sign_digest, &signed_info)?;
    if let KeyKind::Ecdsa(curve) = signer.key_kind()? {
        let field = match curve {
            Curve::P256 => 32,
            Curve::P384 => 48,
        };
        value = ecdsa_der_to_raw(&value, field)?;
    }
    let out = whole(&sig.replacen(VALUE_MARK, &b64(&value), 1));
    // What we hand out verifies, with our own certificate.
    let verified = verify(out.as_bytes())?;
    if verified.signer_certificate() != signer.certificate_der() {
        return Err(structure("the signature verifies with another certificate"));
    }
    Ok(out)
}

/// The references of the document's signature, digest values not read (placeholders).
fn read_signature_unchecked_values(doc: &Document<'_>) -> Result<Vec<Reference>, XmlDsigError> {
    let signature = the_signature(doc)?;
    let signed_info = element_children(doc, signature)?
        .into_iter()
        .next()
        .ok_or_else(|| structure("no ds:SignedInfo"))?;
    let mut out = Vec::new();
    for r in element_children(doc, signed_info)? {
        if !is_element(doc, r, NS_DS, "Reference") {
            continue;
        }
        let mut copy = Vec::new();
        let uri = attr(doc, r, "URI").unwrap_or("").to_string();
        for child in element_children(doc, r)? {
            if is_element(doc, child, NS_DS, "Transforms") {
                for t in element_children(doc, child)? {
                    copy.push(read_transform(doc, t)?);
                }
            }
        }
        out.push(Reference {
            id: None,
            uri,
            type_uri: None,
            transforms: copy,
            digest_method: DigestMethod::Sha256,
            digest_value: Vec::new(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::{PKey, Private};

    /// A signer over an in-memory key with a self-signed certificate (tests only).
    struct MemSigner {
        key: PKey<Private>,
        cert: Vec<u8>,
        chain: Vec<Vec<u8>>,
    }

    impl MemSigner {
        fn new(key: PKey<Private>) -> Self {
            let mut name = openssl::x509::X509NameBuilder::new().unwrap();
            name.append_entry_by_text("CN", "xmldsig test").unwrap();
            let name = name.build();
            let mut b = openssl::x509::X509Builder::new().unwrap();
            b.set_version(2).unwrap();
            b.set_subject_name(&name).unwrap();
            b.set_issuer_name(&name).unwrap();
            b.set_pubkey(&key).unwrap();
            b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
                .unwrap();
            b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
                .unwrap();
            b.sign(&key, openssl::hash::MessageDigest::sha256())
                .unwrap();
            let cert = b.build().to_der().unwrap();
            MemSigner {
                key,
                cert,
                chain: Vec::new(),
            }
        }
    }

    impl Signer for MemSigner {
        fn certificate_der(&self) -> &[u8] {
            &self.cert
        }
        fn chain_der(&self) -> &[Vec<u8>] {
            &self.chain
        }
        fn digest(&self) -> DigestAlg {
            DigestAlg::Sha256
        }
        fn sign(&self, digest: DigestAlg, data: &[u8]) -> Result<Vec<u8>, SignError> {
            let mut s = openssl::sign::Signer::new(digest.message_digest(), &self.key)
                .map_err(|e| SignError::Key(e.to_string()))?;
            s.update(data).map_err(|e| SignError::Key(e.to_string()))?;
            s.sign_to_vec().map_err(|e| SignError::Key(e.to_string()))
        }
    }

    fn rsa() -> MemSigner {
        MemSigner::new(PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap())
    }

    const DOC: &str = "<r xmlns=\"urn:r\" Id=\"root\"><a>1</a><!-- c --><b x=\"y\"/></r>";

    #[test]
    fn ecdsa_values_convert_both_ways() {
        let group =
            openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
        let key = openssl::ec::EcKey::generate(&group).unwrap();
        for _ in 0..20 {
            let der = openssl::ecdsa::EcdsaSig::sign(&[7; 32], &key)
                .unwrap()
                .to_der()
                .unwrap();
            let raw = ecdsa_der_to_raw(&der, 32).unwrap();
            assert_eq!(raw.len(), 64);
            assert_eq!(ecdsa_raw_to_der(&raw).unwrap(), der);
        }
        assert!(ecdsa_raw_to_der(&[1; 63]).is_err());
        assert!(ecdsa_raw_to_der(&[]).is_err());
    }

    #[test]
    fn a_signed_document_verifies_and_tampering_fails() {
        let signer = rsa();
        for enveloped in [Enveloped::Filter2Subtract, Enveloped::EnvelopedSignature] {
            let spec = SignSpec {
                enveloped,
                ..Default::default()
            };
            let xml = sign_enveloped(DOC, &signer, &spec).unwrap();
            let v = verify(xml.as_bytes()).unwrap();
            assert!(v.covers_document());
            assert_eq!(v.signature_method, SignatureMethod::RsaSha256);
            // A comment is outside the digest (URI=""), content is not.
            assert!(verify(xml.replace("<!-- c -->", "<!-- d -->").as_bytes()).is_ok());
            assert!(matches!(
                verify(xml.replace("<a>1</a>", "<a>2</a>").as_bytes()),
                Err(XmlDsigError::Digest(_))
            ));
            // The signature value changed: no certificate verifies it.
            let at = xml.find("<ds:SignatureValue>").unwrap() + 19;
            let mut bad = xml.clone().into_bytes();
            bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
            assert!(matches!(verify(&bad), Err(XmlDsigError::BadSignature)));
        }
        // A document quoting the placeholders (a subject is sender-chosen): untouched.
        let quoting = "<r><s>@@pec-digest-0@@ @@pec-signature-value@@</s></r>";
        let xml = sign_enveloped(quoting, &signer, &SignSpec::default()).unwrap();
        assert!(xml.starts_with("<r><s>@@pec-digest-0@@ @@pec-signature-value@@</s>"));
        assert!(verify(xml.as_bytes()).is_ok());
        // An empty document element, and a document already signed.
        let xml = sign_enveloped("<r/>", &signer, &SignSpec::default()).unwrap();
        assert!(xml.starts_with("<r><ds:Signature xmlns:ds="), "{xml}");
        assert!(verify(xml.as_bytes()).is_ok());
        assert!(sign_enveloped(&xml, &signer, &SignSpec::default()).is_err());
    }

    #[test]
    fn a_reference_to_the_root_id_covers_the_document() {
        let signer = rsa();
        let xml = sign_enveloped(
            DOC,
            &signer,
            &SignSpec {
                enveloped: Enveloped::EnvelopedSignature,
                ..Default::default()
            },
        )
        .unwrap();
        // Re-point the reference at #root and re-sign by hand: the digest is the same
        // (bare-name references drop comments too), the SignedInfo changes.
        let doc = parse(&xml).unwrap();
        let sig = read_signature(&doc).unwrap();
        let ids = id_map(&doc).unwrap();
        let mut r = sig.references[0].clone();
        r.uri = "#root".into();
        assert!(covers_whole_document(&doc, &ids, &r));
        assert_eq!(
            reference_octets(&doc, sig.signature, &ids, &r).unwrap(),
            reference_octets(&doc, sig.signature, &ids, &sig.references[0]).unwrap()
        );
        let mut partial = r.clone();
        partial
            .transforms
            .retain(|t| matches!(t, Transform::C14n(_)));
        assert!(!covers_whole_document(&doc, &ids, &partial));
    }

    #[test]
    fn unsupported_constructs_are_refused() {
        let signer = rsa();
        let xml = sign_enveloped(DOC, &signer, &SignSpec::default()).unwrap();
        let cases = [
            (
                xml.replace(
                    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
                    "http://www.w3.org/2000/09/xmldsig#hmac-sha1",
                ),
                "signature method",
            ),
            (
                xml.replace("URI=\"\"", "URI=\"http://example.org/\""),
                "same-document",
            ),
            (
                xml.replace("Filter=\"subtract\"", "Filter=\"intersect\""),
                "xpath",
            ),
            (
                xml.replacen(
                    "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
                    "<ds:Transform Algorithm=\"http://www.w3.org/TR/1999/REC-xslt-19991116\"/>",
                    1,
                ),
                "canonicalization",
            ),
        ];
        for (doc, what) in cases {
            match verify(doc.as_bytes()) {
                Err(XmlDsigError::Unsupported(m)) => assert!(m.contains(what), "{m}"),
                other => panic!("{what}: {other:?}"),
            }
        }
        let five = xml.replacen(
            "<ds:Transforms>",
            &format!(
                "<ds:Transforms>{}",
                format!("<ds:Transform Algorithm=\"{ENVELOPED_SIGNATURE}\"/>").repeat(4)
            ),
            1,
        );
        assert!(matches!(
            verify(five.as_bytes()),
            Err(XmlDsigError::Structure(_))
        ));
    }

    #[test]
    fn canonical_forms() {
        let doc = "<?xml version=\"1.0\"?><p:r xmlns:p=\"urn:p\" xmlns:q=\"urn:q\" b='2' a=\"1\"><p:x/><!-- c --></p:r>";
        assert_eq!(
            canonicalize(doc.as_bytes(), &C14n::EXCLUSIVE).unwrap(),
            b"<p:r xmlns:p=\"urn:p\" a=\"1\" b=\"2\"><p:x></p:x></p:r>"
        );
        assert_eq!(
            canonicalize(
                doc.as_bytes(),
                &C14n::Exclusive {
                    with_comments: true,
                    prefixes: vec!["q".into()]
                }
            )
            .unwrap(),
            b"<p:r xmlns:p=\"urn:p\" xmlns:q=\"urn:q\" a=\"1\" b=\"2\"><p:x></p:x><!-- c --></p:r>"
        );
        assert_eq!(
            canonicalize(
                doc.as_bytes(),
                &C14n::Inclusive10 {
                    with_comments: false
                }
            )
            .unwrap(),
            b"<p:r xmlns:p=\"urn:p\" xmlns:q=\"urn:q\" a=\"1\" b=\"2\"><p:x></p:x></p:r>"
        );
        assert!(matches!(
            canonicalize(b"<!DOCTYPE r><r/>", &C14n::EXCLUSIVE),
            Err(XmlDsigError::Gate(_))
        ));
    }
}

// SPDX-License-Identifier: GPL-3.0-or-later
//! The XAdES signature of an ERDS evidence (ETSI EN 319 522-3 §6, EN 319 532-4): XAdES-B-B
//! augmented to B-T, in the shape of the REM kit's evidences:
//!
//! ```text
//! ds:Signature Id="id-…"
//!   SignedInfo: exclusive c14n; rsa-sha256 (ecdsa-sha256 for an EC key, -sha384 for a
//!     signer configured for SHA-384);
//!     Reference Id="r-id-…-1" URI="": filter2 subtract /descendant::ds:Signature, exc c14n
//!     Reference Type="…#SignedProperties" URI="#xades-id-…": exc c14n
//!   SignatureValue Id="value-id-…"
//!   KeyInfo/X509Data: the signing certificate and its chain
//!   Object/xades:QualifyingProperties Target="#id-…"
//!     SignedProperties Id="xades-id-…": SigningTime, SigningCertificateV2 (CertDigest
//!       SHA-512, IssuerSerialV2), DataObjectFormat of the evidence reference
//!     UnsignedProperties/UnsignedSignatureProperties/SignatureTimeStamp: exc c14n,
//!       EncapsulatedTimeStamp = RFC 3161 token over SHA-256 of the c14n of SignatureValue
//! ```
//!
//! [`sign`] never returns an evidence without its time stamp: a TSA that is down, slow or
//! answering something else is an error (the caller fails temporarily). [`verify`] checks a
//! foreign evidence and returns what the trust decision needs; it decides no trust itself.

use std::path::Path;

use base64::Engine as _;
use thiserror::Error;
use uppsala::{Document, NodeId};

use crate::crypto::asn1::tlv;
use crate::crypto::tsa::{self, TsaError, TsaSettings, TstInfo, MAX_CLOCK_SKEW_SECONDS};
use crate::crypto::xmldsig::{
    self, base64_value, element_children, is_element, text_of, C14n, DigestMethod, Enveloped,
    ObjectReference, SignSpec, XmlDsigError, NS_DS,
};
use crate::crypto::Signer;
use crate::message::time::Instant;

/// XAdES 1.3.2 namespace.
pub const NS_XADES: &str = "http://uri.etsi.org/01903/v1.3.2#";
/// `Type` of the reference to the signed properties.
pub const SIGNED_PROPERTIES_TYPE: &str = "http://uri.etsi.org/01903#SignedProperties";
/// Most signature time stamps read from one evidence.
const MAX_TIME_STAMPS: usize = 4;

#[derive(Debug, Error)]
pub enum XadesError {
    #[error(transparent)]
    Dsig(#[from] XmlDsigError),
    #[error("evidence time stamp: {0}")]
    Tsa(#[from] TsaError),
    #[error("xades: {0}")]
    Structure(String),
    #[error("xades: signing certificate: {0}")]
    Certificate(String),
}

fn structure(msg: impl Into<String>) -> XadesError {
    XadesError::Structure(msg.into())
}

/// What [`verify`] established about a foreign evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEvidence {
    /// DER of the `KeyInfo` certificates, in document order.
    pub certificates: Vec<Vec<u8>>,
    /// DER of the certificate whose key verified the signature, the one the signed
    /// `SigningCertificateV2` names.
    pub signer: Vec<u8>,
    /// The signed `SigningTime`.
    pub signing_time: Instant,
    /// The signature time stamp (its `genTime` is the time the signature existed by).
    pub time_stamp: TstInfo,
}

/// DER of `IssuerSerial` (RFC 5035) of a certificate: `{ { directoryName issuer }, serial }`,
/// the content of `IssuerSerialV2`.
pub fn issuer_serial_der(cert_der: &[u8]) -> Result<Vec<u8>, XadesError> {
    use der::{Decode, Encode};
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|e| XadesError::Certificate(format!("cannot parse: {e}")))?;
    let issuer = cert
        .tbs_certificate
        .issuer
        .to_der()
        .map_err(|e| XadesError::Certificate(e.to_string()))?;
    let serial = cert
        .tbs_certificate
        .serial_number
        .to_der()
        .map_err(|e| XadesError::Certificate(e.to_string()))?;
    let general_names = tlv(0x30, &tlv(0xa4, &issuer));
    Ok(tlv(0x30, &[general_names, serial].concat()))
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Signs the unsigned evidence `xml` (our own, from `rem::evidence`) into XAdES-B-B with
/// `signer` and `signing_time`, then B-T with a time stamp from `tsa`. The result has been
/// verified (the token against `tsa.ca_file` when configured) before it is returned. Any
/// failure of the TSA is an error: there is no evidence without its time stamp.
pub fn sign(
    xml: &str,
    signer: &dyn Signer,
    signing_time: Instant,
    tsa: &TsaSettings,
) -> Result<String, XadesError> {
    let signed = sign_b_b(xml, signer, signing_time)?;
    let digest = signature_value_digest(&signed)?;
    let token = tsa::timestamp(tsa, &digest)?;
    let stamped = add_time_stamp(&signed, &token)?;
    verify_with(stamped.as_bytes(), tsa.ca_file.as_deref())?;
    Ok(stamped)
}

/// XAdES-B-B: the signature without its time stamp. Not an evidence to hand out (see
/// [`sign`]); public for measurements and tests.
pub fn sign_b_b(
    xml: &str,
    signer: &dyn Signer,
    signing_time: Instant,
) -> Result<String, XadesError> {
    let id = format!("id-{}", hex::encode(rand::random::<[u8; 16]>()));
    let cert = signer.certificate_der();
    let cert_digest = DigestMethod::Sha512;
    let properties = format!(
        concat!(
            "<xades:QualifyingProperties xmlns:xades=\"{ns}\" Target=\"#{id}\">",
            "<xades:SignedProperties Id=\"xades-{id}\"><xades:SignedSignatureProperties>",
            "<xades:SigningTime>{time}</xades:SigningTime>",
            "<xades:SigningCertificateV2><xades:Cert><xades:CertDigest>",
            "<ds:DigestMethod Algorithm=\"{alg}\"/><ds:DigestValue>{digest}</ds:DigestValue>",
            "</xades:CertDigest><xades:IssuerSerialV2>{issuer_serial}</xades:IssuerSerialV2>",
            "</xades:Cert></xades:SigningCertificateV2></xades:SignedSignatureProperties>",
            "<xades:SignedDataObjectProperties><xades:DataObjectFormat ObjectReference=\"#r-{id}-1\">",
            "<xades:MimeType>application/octet-stream</xades:MimeType></xades:DataObjectFormat>",
            "</xades:SignedDataObjectProperties></xades:SignedProperties>",
            "</xades:QualifyingProperties>"
        ),
        ns = NS_XADES,
        id = id,
        time = signing_time.rfc3339(),
        alg = cert_digest.uri(),
        digest = b64(&cert_digest.digest(cert)),
        issuer_serial = b64(&issuer_serial_der(cert)?),
    );
    let spec = SignSpec {
        signature_id: Some(id.clone()),
        signature_value_id: Some(format!("value-{id}")),
        document_reference_id: Some(format!("r-{id}-1")),
        enveloped: Enveloped::Filter2Subtract,
        digest: Some(DigestMethod::Sha256),
        object_references: vec![ObjectReference {
            target_id: format!("xades-{id}"),
            type_uri: Some(SIGNED_PROPERTIES_TYPE.to_string()),
            id: None,
        }],
        object: Some(properties),
    };
    Ok(xmldsig::sign_enveloped(xml, signer, &spec)?)
}

/// SHA-256 of the exclusive c14n of `ds:SignatureValue` of our own signed evidence: what
/// the signature time stamp covers.
fn signature_value_digest(signed: &str) -> Result<[u8; 32], XadesError> {
    let doc = xmldsig::parse(signed)?;
    let value = signature_value(&doc)?;
    let octets = xmldsig::canonicalize_element(&doc, value, &C14n::EXCLUSIVE)?;
    Ok(sha256(&octets))
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// Adds the `UnsignedProperties` with the signature time stamp `token` after the
/// `SignedProperties` of our own signed evidence.
fn add_time_stamp(signed: &str, token: &[u8]) -> Result<String, XadesError> {
    const END: &str = "</xades:SignedProperties>";
    // The signature is the last element of the document: its SignedProperties end is the
    // last one in the text.
    let at = signed
        .rfind(END)
        .ok_or_else(|| structure("no SignedProperties in our own signature"))?
        + END.len();
    let uid = hex::encode(rand::random::<[u8; 16]>());
    let unsigned = format!(
        concat!(
            "<xades:UnsignedProperties><xades:UnsignedSignatureProperties>",
            "<xades:SignatureTimeStamp Id=\"TS-{uid}\">",
            "<ds:CanonicalizationMethod Algorithm=\"{c14n}\"/>",
            "<xades:EncapsulatedTimeStamp Id=\"ETS-{uid}\">{token}</xades:EncapsulatedTimeStamp>",
            "</xades:SignatureTimeStamp></xades:UnsignedSignatureProperties>",
            "</xades:UnsignedProperties>"
        ),
        uid = uid,
        c14n = C14n::EXCLUSIVE.uri(),
        token = b64(token),
    );
    Ok(format!("{}{unsigned}{}", &signed[..at], &signed[at..]))
}

/// Verifies a foreign evidence `raw` (it passes the XML gate first): the XML signature
/// (every reference, the whole document covered, the value with the `KeyInfo` key), the
/// signed properties (the reference to them, `SigningCertificateV2` naming the certificate
/// that verified), and the signature time stamp (its imprint over `ds:SignatureValue`, its
/// signature and its signer chaining to `tsa_anchors` with the timeStamping purpose at the
/// token's time). Whether the signer's certificate is trusted at `signing_time` is the
/// caller's decision.
pub fn verify(raw: &[u8], tsa_anchors: &Path) -> Result<VerifiedEvidence, XadesError> {
    verify_with(raw, Some(tsa_anchors))
}

/// Verifies an evidence we signed ourselves (read back from a message of ours in our own
/// queue): signature and time stamp as [`sign`] checked them before returning it
/// (`tsa_anchors` its `ca_file`), and the signer is `certificate_der`, our signing
/// certificate.
pub fn verify_own(
    raw: &[u8],
    certificate_der: &[u8],
    tsa_anchors: Option<&Path>,
) -> Result<VerifiedEvidence, XadesError> {
    let v = verify_with(raw, tsa_anchors)?;
    if v.signer != certificate_der {
        return Err(XadesError::Certificate(
            "the evidence is not signed with our signing certificate".into(),
        ));
    }
    Ok(v)
}

fn verify_with(raw: &[u8], tsa_anchors: Option<&Path>) -> Result<VerifiedEvidence, XadesError> {
    let text = crate::xml::check_plain(raw).map_err(XmlDsigError::from)?;
    let doc = xmldsig::parse(text)?;
    let dsig = xmldsig::verify_parsed(&doc)?;
    if !dsig.covers_document() {
        return Err(structure("no reference covers the evidence"));
    }
    let signature = xmldsig::the_signature(&doc)?;
    let signature_id = dsig
        .signature_id
        .as_deref()
        .ok_or_else(|| structure("ds:Signature without Id"))?;

    // QualifyingProperties: in a ds:Object of our signature, targeting it.
    let qualifying = descendants_named(&doc, signature, NS_XADES, "QualifyingProperties");
    let [qualifying] = qualifying.as_slice() else {
        return Err(structure("expected one xades:QualifyingProperties"));
    };
    let object = doc.parent(*qualifying);
    if object
        .is_none_or(|o| !is_element(&doc, o, NS_DS, "Object") || doc.parent(o) != Some(signature))
    {
        return Err(structure(
            "xades:QualifyingProperties is not in a ds:Object",
        ));
    }
    if attribute(&doc, *qualifying, "Target") != Some(format!("#{signature_id}").as_str()) {
        return Err(structure(
            "xades:QualifyingProperties does not target the signature",
        ));
    }
    let signed_props = child(&doc, *qualifying, NS_XADES, "SignedProperties")?
        .ok_or_else(|| structure("no xades:SignedProperties"))?;
    if descendants_named(&doc, doc.root(), NS_XADES, "SignedProperties").len() != 1 {
        return Err(structure("more than one xades:SignedProperties"));
    }
    let props_id = attribute(&doc, signed_props, "Id")
        .ok_or_else(|| structure("xades:SignedProperties without Id"))?;
    if !dsig.references.iter().any(|r| {
        r.uri == format!("#{props_id}") && r.type_uri.as_deref() == Some(SIGNED_PROPERTIES_TYPE)
    }) {
        return Err(structure(
            "no signed reference of type SignedProperties to xades:SignedProperties",
        ));
    }
    let sig_props = child(&doc, signed_props, NS_XADES, "SignedSignatureProperties")?
        .ok_or_else(|| structure("no xades:SignedSignatureProperties"))?;

    let time_node = child(&doc, sig_props, NS_XADES, "SigningTime")?
        .ok_or_else(|| structure("no xades:SigningTime"))?;
    let time_text = text_of(&doc, time_node);
    let signing_time = chrono::DateTime::parse_from_rfc3339(time_text.trim())
        .map(|t| Instant::from_utc(t.with_timezone(&chrono::Utc)))
        .map_err(|_| structure(format!("malformed SigningTime \"{}\"", time_text.trim())))?;

    let signer = dsig.signer_certificate().to_vec();
    check_signing_certificate(&doc, sig_props, &signer)?;

    // B-T: the signature time stamps over the SignatureValue element.
    let unsigned = child(&doc, *qualifying, NS_XADES, "UnsignedProperties")?
        .ok_or_else(|| structure("no xades:UnsignedProperties: not a B-T signature"))?;
    let usp = child(&doc, unsigned, NS_XADES, "UnsignedSignatureProperties")?
        .ok_or_else(|| structure("no xades:UnsignedSignatureProperties"))?;
    let stamps: Vec<NodeId> = element_children(&doc, usp)?
        .into_iter()
        .filter(|n| is_element(&doc, *n, NS_XADES, "SignatureTimeStamp"))
        .collect();
    if stamps.is_empty() {
        return Err(structure(
            "no xades:SignatureTimeStamp: not a B-T signature",
        ));
    }
    if stamps.len() > MAX_TIME_STAMPS {
        return Err(structure("too many signature time stamps"));
    }
    let value = signature_value(&doc)?;
    let mut first: Option<TstInfo> = None;
    for stamp in stamps {
        let info = check_time_stamp(&doc, stamp, value, tsa_anchors)?;
        if info.gen_time.unix() + MAX_CLOCK_SKEW_SECONDS < signing_time.unix() {
            return Err(structure(format!(
                "the time stamp ({}) precedes the signing time ({})",
                info.gen_time.rfc3339(),
                signing_time.rfc3339()
            )));
        }
        if first
            .as_ref()
            .is_none_or(|f| info.gen_time.unix() < f.gen_time.unix())
        {
            first = Some(info);
        }
    }
    let time_stamp = first.ok_or_else(|| structure("no signature time stamp"))?;
    Ok(VerifiedEvidence {
        certificates: dsig.certificates.clone(),
        signer,
        signing_time,
        time_stamp,
    })
}

/// `SigningCertificateV2` (or the older `SigningCertificate`) names `signer`: a `Cert`
/// whose `CertDigest` is its digest and whose `IssuerSerialV2`, when present, is its issuer
/// and serial number.
fn check_signing_certificate(
    doc: &Document<'_>,
    sig_props: NodeId,
    signer: &[u8],
) -> Result<(), XadesError> {
    let holder = match child(doc, sig_props, NS_XADES, "SigningCertificateV2")? {
        Some(n) => n,
        None => child(doc, sig_props, NS_XADES, "SigningCertificate")?
            .ok_or_else(|| XadesError::Certificate("no xades:SigningCertificateV2".into()))?,
    };
    let certs = element_children(doc, holder)?;
    if certs.is_empty() || certs.len() > xmldsig::MAX_CERTIFICATES {
        return Err(XadesError::Certificate(format!(
            "{} certificates named",
            certs.len()
        )));
    }
    let issuer_serial = issuer_serial_der(signer)?;
    for cert in certs {
        if !is_element(doc, cert, NS_XADES, "Cert") {
            return Err(structure(
                "unexpected element in xades:SigningCertificateV2",
            ));
        }
        let digest = child(doc, cert, NS_XADES, "CertDigest")?
            .ok_or_else(|| structure("xades:Cert without CertDigest"))?;
        let method = child(doc, digest, NS_DS, "DigestMethod")?
            .ok_or_else(|| structure("xades:CertDigest without ds:DigestMethod"))?;
        let alg = attribute(doc, method, "Algorithm").unwrap_or_default();
        let method = DigestMethod::from_uri(alg)
            .ok_or_else(|| XmlDsigError::Unsupported(format!("digest method {alg}")))?;
        let value = child(doc, digest, NS_DS, "DigestValue")?
            .ok_or_else(|| structure("xades:CertDigest without ds:DigestValue"))?;
        if base64_value(&text_of(doc, value))? != method.digest(signer) {
            continue;
        }
        if let Some(is) = child(doc, cert, NS_XADES, "IssuerSerialV2")? {
            if base64_value(&text_of(doc, is))? != issuer_serial {
                return Err(XadesError::Certificate(
                    "IssuerSerialV2 does not name the signing certificate".into(),
                ));
            }
        }
        return Ok(());
    }
    Err(XadesError::Certificate(
        "the signed CertDigest is not that of the certificate that verified".into(),
    ))
}

/// Checks one `SignatureTimeStamp`: its token time-stamps the c14n of `value` and chains to
/// `anchors`.
fn check_time_stamp(
    doc: &Document<'_>,
    stamp: NodeId,
    value: NodeId,
    anchors: Option<&Path>,
) -> Result<TstInfo, XadesError> {
    let mut c14n = C14n::Inclusive10 {
        with_comments: false,
    };
    let mut token = None;
    for part in element_children(doc, stamp)? {
        if is_element(doc, part, NS_DS, "CanonicalizationMethod") {
            let alg = attribute(doc, part, "Algorithm").unwrap_or_default();
            c14n = C14n::from_uri(alg, Vec::new()).ok_or_else(|| {
                XmlDsigError::Unsupported(format!("canonicalization method {alg}"))
            })?;
        } else if is_element(doc, part, NS_XADES, "EncapsulatedTimeStamp") {
            if token.is_some() {
                return Err(structure("several tokens in one SignatureTimeStamp"));
            }
            token = Some(base64_value(&text_of(doc, part))?);
        } else {
            return Err(XmlDsigError::Unsupported(
                "signature time stamp other than an encapsulated RFC 3161 token".into(),
            )
            .into());
        }
    }
    let token = token.ok_or_else(|| structure("SignatureTimeStamp without a token"))?;
    let octets = xmldsig::canonicalize_element(doc, value, &c14n)?;
    Ok(tsa::verify_token(&token, &sha256(&octets), anchors)?)
}

fn signature_value(doc: &Document<'_>) -> Result<NodeId, XadesError> {
    let signature = xmldsig::the_signature(doc)?;
    child(doc, signature, NS_DS, "SignatureValue")?.ok_or_else(|| structure("no ds:SignatureValue"))
}

/// The only child element `ns:local` of `node`, if any (two are an error).
fn child(
    doc: &Document<'_>,
    node: NodeId,
    ns: &str,
    local: &str,
) -> Result<Option<NodeId>, XadesError> {
    let found: Vec<NodeId> = element_children(doc, node)?
        .into_iter()
        .filter(|n| is_element(doc, *n, ns, local))
        .collect();
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => Err(structure(format!("several {local} elements"))),
    }
}

fn descendants_named(doc: &Document<'_>, node: NodeId, ns: &str, local: &str) -> Vec<NodeId> {
    doc.descendants(node)
        .into_iter()
        .filter(|n| is_element(doc, *n, ns, local))
        .collect()
}

fn attribute<'d>(doc: &'d Document<'_>, node: NodeId, name: &str) -> Option<&'d str> {
    doc.element(node)?
        .attributes
        .iter()
        .find(|a| a.name.namespace_uri.is_none() && a.name.local_name == name)
        .map(|a| &*a.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_short_and_long() {
        // A short length and a long one.
        assert_eq!(tlv(0x30, &[1, 2]), [0x30, 2, 1, 2]);
        let long = tlv(0x04, &[0; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }
}

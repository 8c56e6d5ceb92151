// SPDX-License-Identifier: GPL-3.0-or-later
//! Capability and Security Information (CSI, ETSI EN 319 532-4 Annex C.2.3.4): the signed
//! XML document a REM provider publishes at the `https://` supply point of its Trusted
//! List entry, naming what it supports (the REM baseline profile, policies, assurance
//! levels, consignment modes) and the certificates of its TLS and domain signature.
//!
//! [`parse`] reads a peer's document (after [`crate::xml::check_plain`]); [`verify`]
//! checks that its enveloped signature was made with the peer's Trusted List identity;
//! [`write`] builds ours from [`CsiSettings`] and [`sign`] signs it with our key.

use base64::Engine as _;
use serde::Deserialize;
use thiserror::Error;

use super::trust::{base64_text, date, names, Element, RemPeer, DSIG_NS, TSL_NS};
use crate::crypto::xmldsig::{sign_enveloped, Enveloped, SignSpec, XmlDsigError};
use crate::crypto::Signer;
use crate::message::time::Instant;
use crate::xml::{check_plain, XmlGateError};

/// Namespace of the CSI document (EN 319 532-4).
pub const CSI_NS: &str = "http://uri.etsi.org/19532/v1#";
/// Namespace of the ERDS metadata (EN 319 522-3).
pub const ERDS_NS: &str = "http://uri.etsi.org/19522/v1#";
/// `ERDSProfileSupported` of the REM baseline.
pub const REM_BASELINE: &str = "http://uri.etsi.org/19532/v1#/REMbaseline";
/// The basic consignment mode.
pub const CONSIGNMENT_BASIC: &str = "http://uri.etsi.org/19522/v1#/consignment/basic";

#[derive(Debug, Error)]
pub enum CsiError {
    #[error("csi: {0}")]
    Gate(#[from] XmlGateError),
    #[error("csi: not well-formed xml: {0}")]
    Syntax(String),
    #[error("csi: {0}")]
    Invalid(String),
    #[error("csi: no signature")]
    Unsigned,
    #[error("csi: signature: {0}")]
    Signature(String),
    #[error("csi: signed by a certificate that is not the provider's trusted list identity")]
    NotThePeer,
    #[error("csi: sign: {0}")]
    Sign(#[from] XmlDsigError),
}

/// A CSI document as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csi {
    /// `CSISequenceNumber`.
    pub sequence: u64,
    /// `CSISchemeOperatorName` (English when there is one).
    pub operator: String,
    /// `CSIPointerToTL`.
    pub pointer_to_tl: String,
    /// `CSIIssueDateTime` and `CSINextUpdate` (`None`: no further update).
    pub issued_at: Instant,
    pub next_update: Option<Instant>,
    pub distribution_points: Vec<String>,
    pub erds: ErdsMetadata,
    /// `TLSCertificate` and `DomainSignCertificate` (DER, as published: not checked).
    pub tls_certificate: Vec<u8>,
    pub domain_sign_certificate: Option<Vec<u8>>,
    /// Whether it carries an enveloped `ds:Signature`.
    pub signed: bool,
}

/// `ERDSMetadata` (EN 319 522-3): the capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErdsMetadata {
    /// `ERDSId` and its `IdentifierSchemeName`.
    pub id: String,
    pub id_scheme: String,
    /// `ERDSDomain`: the boundary mail host.
    pub domain: String,
    pub governing_body: String,
    /// `ERDSProfileSupported`.
    pub profile: String,
    pub expiry_support: bool,
    pub scheduled_delivery_support: bool,
    /// `ERDSAssuranceLevelsSupported/AssuranceLevel`.
    pub assurance_levels: Vec<String>,
    /// `ERDSPolicySupport/PolicyID`.
    pub policies: Vec<String>,
    /// `ERDSSupportedConsignmentModes`.
    pub consignment_mode: Option<String>,
}

impl Csi {
    /// Whether the provider declares the REM baseline profile.
    pub fn supports_rem_baseline(&self) -> bool {
        self.erds.profile == REM_BASELINE
    }
}

/// Reads a CSI document (after the XML gate), its signature not checked.
pub fn parse(raw: &[u8]) -> Result<Csi, CsiError> {
    let text = check_plain(raw)?;
    let root = Element::parse(text).map_err(CsiError::Syntax)?;
    read(&root).map_err(CsiError::Invalid)
}

/// Reads a peer's CSI document and checks its enveloped signature: it verifies, covers
/// the whole document, and was made with a certificate of `peer`'s Trusted List identity.
pub fn verify(raw: &[u8], peer: &RemPeer) -> Result<Csi, CsiError> {
    let csi = parse(raw)?;
    if !csi.signed {
        return Err(CsiError::Unsigned);
    }
    let v = crate::crypto::xmldsig::verify(raw).map_err(|e| CsiError::Signature(e.to_string()))?;
    if !v.covers_document() {
        return Err(CsiError::Signature(
            "no reference covers the whole document".into(),
        ));
    }
    let signer = v.signer_certificate();
    if !peer
        .service
        .identity
        .certificates
        .iter()
        .any(|c| c == signer)
    {
        return Err(CsiError::NotThePeer);
    }
    Ok(csi)
}

fn read(root: &Element) -> Result<Csi, String> {
    if !root.is(CSI_NS, "CapabilityAndSecurityInformation") {
        return Err(format!(
            "root element is <{}>, not a CapabilityAndSecurityInformation of {CSI_NS}",
            root.name
        ));
    }
    let scheme = root.need("SchemeData")?;
    let sequence = scheme
        .need_text("CSISequenceNumber")?
        .parse::<u64>()
        .map_err(|_| "CSISequenceNumber is not a number".to_string())?;
    let operator = scheme
        .child("CSISchemeOperatorName")
        .map(names)
        .unwrap_or_default();
    let pointer_to_tl = scheme.need_text("CSIPointerToTL")?.to_string();
    let issued_at = date(scheme.need_text("CSIIssueDateTime")?)?;
    let next_update = match scheme.need("CSINextUpdate")?.child_ns(TSL_NS, "dateTime") {
        Some(d) => Some(date(d.text())?),
        None => None,
    };
    let distribution_points = scheme
        .child("CSIDistributionPoints")
        .map(|d| {
            d.children
                .iter()
                .filter(|u| u.is(TSL_NS, "URI"))
                .map(|u| u.text().to_string())
                .collect()
        })
        .unwrap_or_default();
    let meta = root
        .need("CapabilityMetadata")?
        .child_ns(ERDS_NS, "ERDSMetadata")
        .ok_or("<CapabilityMetadata> has no ERDSMetadata")?;
    // The children of ERDSMetadata are unqualified (EN 319 522-3's schema has no
    // elementFormDefault).
    let local = |name: &str| meta.children.iter().find(|c| c.name == name);
    let need = |name: &str| {
        local(name)
            .map(|e| e.text().to_string())
            .ok_or_else(|| format!("<ERDSMetadata> has no <{name}>"))
    };
    let flag = |name: &str| -> Result<bool, String> {
        match need(name)?.as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            v => Err(format!("<{name}> is \"{v}\", not a boolean")),
        }
    };
    let id_el = local("ERDSId").ok_or("<ERDSMetadata> has no <ERDSId>")?;
    let erds = ErdsMetadata {
        id: id_el.text().to_string(),
        id_scheme: id_el.attr("IdentifierSchemeName").unwrap_or("").to_string(),
        domain: need("ERDSDomain")?,
        governing_body: need("ERDSGoverningBody")?,
        profile: need("ERDSProfileSupported")?,
        expiry_support: flag("ERDSExpiryDateAndTimeSupport")?,
        scheduled_delivery_support: flag("ERDSScheduledDeliverySupport")?,
        assurance_levels: local("ERDSAssuranceLevelsSupported")
            .map(|a| {
                a.children
                    .iter()
                    .filter(|c| c.name == "AssuranceLevel")
                    .map(|c| c.text().to_string())
                    .collect()
            })
            .unwrap_or_default(),
        policies: local("ERDSPolicySupport")
            .map(|a| {
                a.children
                    .iter()
                    .filter(|c| c.name == "PolicyID")
                    .map(|c| c.text().to_string())
                    .collect()
            })
            .unwrap_or_default(),
        consignment_mode: local("ERDSSupportedConsignmentModes").map(|e| e.text().to_string()),
    };
    let security = root
        .need("SecurityMetadata")?
        .child_ns(CSI_NS, "CapabilityBasedSecurity")
        .ok_or("<SecurityMetadata> has no CapabilityBasedSecurity")?;
    let tls_certificate = base64_text(security.need_text("TLSCertificate")?)
        .map_err(|e| format!("TLSCertificate: {e}"))?;
    let domain_sign_certificate = match security.child("DomainSignCertificate") {
        Some(c) => Some(base64_text(c.text()).map_err(|e| format!("DomainSignCertificate: {e}"))?),
        None => None,
    };
    let signed = root.children.iter().any(|c| c.is(DSIG_NS, "Signature"));
    Ok(Csi {
        sequence,
        operator,
        pointer_to_tl,
        issued_at,
        next_update,
        distribution_points,
        erds,
        tls_certificate,
        domain_sign_certificate,
        signed,
    })
}

// ---------------------------------------------------------------------------------------
// Our own CSI
// ---------------------------------------------------------------------------------------

/// `[rem.csi]`: what our CSI document says. Every URL is ours to publish; the
/// certificates are read from files when the document is written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CsiConfig {
    /// `CSISequenceNumber`: raise it with each new publication (default 1).
    #[serde(default = "one")]
    pub sequence: u64,
    /// `CSISchemeOperatorName` (English); default `provider.name`.
    #[serde(default)]
    pub operator_name: Option<String>,
    /// `CSISchemeOperatorAddress`: street, locality, postal code, country.
    #[serde(default)]
    pub street: String,
    #[serde(default)]
    pub locality: String,
    #[serde(default)]
    pub postal_code: Option<String>,
    /// Default `IT`.
    #[serde(default = "italy")]
    pub country: String,
    /// `ElectronicAddress` URIs (`mailto:…`, `https://…`); default `mailto:` + provider.admin.
    #[serde(default)]
    pub electronic_addresses: Vec<String>,
    /// `CSISchemeInformationURI`.
    #[serde(default)]
    pub information_uri: String,
    /// `CSISchemePolicyCommunityRules`.
    #[serde(default)]
    pub policy_uri: String,
    /// `CSIPointerToTL`: the Trusted List we are listed in.
    #[serde(default)]
    pub pointer_to_tl: String,
    /// `CSIDistributionPoints`: where this document is published.
    #[serde(default)]
    pub distribution_point: String,
    /// `ERDSId` (an `http(s)` URI).
    #[serde(default)]
    pub erds_id: String,
    /// `ERDSDomain`: our boundary MX host, as in our Trusted List supply point.
    #[serde(default)]
    pub erds_domain: String,
    /// `ERDSAssuranceLevelsSupported/AssuranceLevel` (one; default eIDAS substantial).
    #[serde(default = "substantial")]
    pub assurance_level: String,
    /// PEM file of our SMTP server's TLS certificate (`TLSCertificate`).
    #[serde(default)]
    pub tls_certificate: Option<std::path::PathBuf>,
    /// How long a published document stays valid (`CSINextUpdate`), default `365d`.
    #[serde(default = "year")]
    pub validity: String,
}

impl Default for CsiConfig {
    fn default() -> Self {
        CsiConfig {
            sequence: one(),
            operator_name: None,
            street: String::new(),
            locality: String::new(),
            postal_code: None,
            country: italy(),
            electronic_addresses: Vec::new(),
            information_uri: String::new(),
            policy_uri: String::new(),
            pointer_to_tl: String::new(),
            distribution_point: String::new(),
            erds_id: String::new(),
            erds_domain: String::new(),
            assurance_level: substantial(),
            tls_certificate: None,
            validity: year(),
        }
    }
}

impl CsiConfig {
    /// The settings of our document, `policies` its `ERDSPolicySupport` (`rem.policies`,
    /// those our evidences name): every URL and the address given, the TLS
    /// certificate read (PEM); the operator and governing body default to
    /// `provider_name`, the electronic address to `mailto:` + `service_address`. Errors
    /// name the `rem.csi` key.
    pub fn settings(
        &self,
        provider_name: &str,
        service_address: &str,
        policies: &[String],
        domain_sign_certificate: Vec<u8>,
        validity: std::time::Duration,
        now: Instant,
    ) -> Result<CsiSettings, String> {
        let need = |key: &str, v: &str| {
            if v.trim().is_empty() {
                Err(format!("rem.csi.{key} is required to publish our csi"))
            } else {
                Ok(v.trim().to_string())
            }
        };
        let tls = self
            .tls_certificate
            .as_ref()
            .ok_or("rem.csi.tls_certificate is required to publish our csi")?;
        let tls_certificate = std::fs::read(tls)
            .map_err(|e| e.to_string())
            .and_then(|pem| {
                openssl::x509::X509::from_pem(&pem)
                    .and_then(|c| c.to_der())
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| format!("rem.csi.tls_certificate \"{}\": {e}", tls.display()))?;
        let operator_name = self
            .operator_name
            .clone()
            .unwrap_or_else(|| provider_name.to_string());
        let electronic_addresses = if self.electronic_addresses.is_empty() {
            vec![format!("mailto:{service_address}")]
        } else {
            self.electronic_addresses.clone()
        };
        let secs = i64::try_from(validity.as_secs()).unwrap_or(i64::MAX / 2);
        Ok(CsiSettings {
            sequence: self.sequence.max(1),
            governing_body: operator_name.clone(),
            operator_name,
            street: need("street", &self.street)?,
            locality: need("locality", &self.locality)?,
            postal_code: self.postal_code.clone(),
            country: need("country", &self.country)?,
            electronic_addresses,
            information_uri: need("information_uri", &self.information_uri)?,
            policy_uri: need("policy_uri", &self.policy_uri)?,
            pointer_to_tl: need("pointer_to_tl", &self.pointer_to_tl)?,
            distribution_point: need("distribution_point", &self.distribution_point)?,
            erds_id: need("erds_id", &self.erds_id)?,
            erds_domain: need("erds_domain", &self.erds_domain)?,
            assurance_level: self.assurance_level.clone(),
            policies: policies.to_vec(),
            tls_certificate,
            domain_sign_certificate,
            issued_at: now,
            next_update: Instant::from_unix(now.unix().saturating_add(secs)),
        })
    }
}

fn one() -> u64 {
    1
}
fn italy() -> String {
    "IT".into()
}
fn substantial() -> String {
    "http://eidas.europa.eu/LoA/substantial".into()
}
fn year() -> String {
    "365d".into()
}

/// Everything [`write`] needs, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsiSettings {
    pub sequence: u64,
    pub operator_name: String,
    pub street: String,
    pub locality: String,
    pub postal_code: Option<String>,
    pub country: String,
    pub electronic_addresses: Vec<String>,
    pub information_uri: String,
    pub policy_uri: String,
    pub pointer_to_tl: String,
    pub distribution_point: String,
    pub erds_id: String,
    pub erds_domain: String,
    pub governing_body: String,
    pub assurance_level: String,
    pub policies: Vec<String>,
    /// DER of our TLS certificate and of our signing certificate.
    pub tls_certificate: Vec<u8>,
    pub domain_sign_certificate: Vec<u8>,
    pub issued_at: Instant,
    pub next_update: Instant,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Our CSI document, unsigned ([`sign`] appends the signature).
pub fn write(s: &CsiSettings) -> String {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let time = |t: Instant| t.rfc3339();
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<tns:CapabilityAndSecurityInformation xmlns:tns=\"{CSI_NS}\" xmlns:tl=\"{TSL_NS}\" \
         xmlns:ci=\"{ERDS_NS}\" version=\"EN319532v1\" Id=\"csi-{}\">\n",
        s.sequence
    ));
    x.push_str("<tns:SchemeData>\n");
    x.push_str("<tns:CSIVersionIdentifier>1</tns:CSIVersionIdentifier>\n");
    x.push_str(&format!(
        "<tns:CSISequenceNumber>{}</tns:CSISequenceNumber>\n",
        s.sequence
    ));
    x.push_str(&format!(
        "<tns:CSISchemeOperatorName><tl:Name xml:lang=\"en\">{}</tl:Name></tns:CSISchemeOperatorName>\n",
        esc(&s.operator_name)
    ));
    x.push_str(
        "<tns:CSISchemeOperatorAddress><tl:PostalAddresses><tl:PostalAddress xml:lang=\"en\">",
    );
    x.push_str(&format!(
        "<tl:StreetAddress>{}</tl:StreetAddress><tl:Locality>{}</tl:Locality>",
        esc(&s.street),
        esc(&s.locality)
    ));
    if let Some(pc) = &s.postal_code {
        x.push_str(&format!("<tl:PostalCode>{}</tl:PostalCode>", esc(pc)));
    }
    x.push_str(&format!(
        "<tl:CountryName>{}</tl:CountryName></tl:PostalAddress></tl:PostalAddresses>\n<tl:ElectronicAddress>",
        esc(&s.country)
    ));
    for uri in &s.electronic_addresses {
        x.push_str(&format!("<tl:URI xml:lang=\"en\">{}</tl:URI>", esc(uri)));
    }
    x.push_str("</tl:ElectronicAddress></tns:CSISchemeOperatorAddress>\n");
    x.push_str(&format!(
        "<tns:CSISchemeInformationURI><tl:URI xml:lang=\"en\">{}</tl:URI></tns:CSISchemeInformationURI>\n",
        esc(&s.information_uri)
    ));
    x.push_str(&format!(
        "<tns:CSISchemePolicyCommunityRules><tl:URI xml:lang=\"en\">{}</tl:URI></tns:CSISchemePolicyCommunityRules>\n",
        esc(&s.policy_uri)
    ));
    x.push_str(&format!(
        "<tns:CSIPointerToTL>{}</tns:CSIPointerToTL>\n",
        esc(&s.pointer_to_tl)
    ));
    x.push_str(&format!(
        "<tns:CSIIssueDateTime>{}</tns:CSIIssueDateTime>\n",
        time(s.issued_at)
    ));
    x.push_str(&format!(
        "<tns:CSINextUpdate><tl:dateTime>{}</tl:dateTime></tns:CSINextUpdate>\n",
        time(s.next_update)
    ));
    x.push_str(&format!(
        "<tns:CSIDistributionPoints><tl:URI>{}</tl:URI></tns:CSIDistributionPoints>\n",
        esc(&s.distribution_point)
    ));
    x.push_str("</tns:SchemeData>\n<tns:CapabilityMetadata>\n");
    // Unqualified children: no default namespace is in scope here.
    x.push_str("<ci:ERDSMetadata version=\"EN319522v1.1.1\">\n");
    let scheme = s.erds_id.split(':').next().unwrap_or("http");
    x.push_str(&format!(
        "<ERDSId IdentifierSchemeName=\"{}\">{}</ERDSId>\n",
        esc(scheme),
        esc(&s.erds_id)
    ));
    x.push_str(&format!(
        "<ERDSDomain>{}</ERDSDomain>\n",
        esc(&s.erds_domain)
    ));
    x.push_str(&format!(
        "<ERDSGoverningBody>{}</ERDSGoverningBody>\n",
        esc(&s.governing_body)
    ));
    x.push_str(&format!(
        "<ERDSProfileSupported>{REM_BASELINE}</ERDSProfileSupported>\n"
    ));
    x.push_str("<ERDSExpiryDateAndTimeSupport>false</ERDSExpiryDateAndTimeSupport>\n");
    x.push_str("<ERDSScheduledDeliverySupport>false</ERDSScheduledDeliverySupport>\n");
    if !s.assurance_level.is_empty() {
        x.push_str(&format!(
            "<ERDSAssuranceLevelsSupported><AssuranceLevel>{}</AssuranceLevel>\
             </ERDSAssuranceLevelsSupported>\n",
            esc(&s.assurance_level)
        ));
    }
    if !s.policies.is_empty() {
        x.push_str("<ERDSPolicySupport>");
        for p in &s.policies {
            x.push_str(&format!("<PolicyID>{}</PolicyID>", esc(p)));
        }
        x.push_str("</ERDSPolicySupport>\n");
    }
    x.push_str(&format!(
        "<ERDSSupportedConsignmentModes>{CONSIGNMENT_BASIC}</ERDSSupportedConsignmentModes>\n"
    ));
    x.push_str("</ci:ERDSMetadata>\n</tns:CapabilityMetadata>\n<tns:SecurityMetadata>\n");
    x.push_str("<tns:CapabilityBasedSecurity version=\"EN319532v1\">\n");
    x.push_str(&format!(
        "<tns:TLSCertificate>{}</tns:TLSCertificate>\n",
        b64(&s.tls_certificate)
    ));
    x.push_str(&format!(
        "<tns:DomainSignCertificate>{}</tns:DomainSignCertificate>\n",
        b64(&s.domain_sign_certificate)
    ));
    x.push_str("</tns:CapabilityBasedSecurity>\n</tns:SecurityMetadata>\n");
    x.push_str("</tns:CapabilityAndSecurityInformation>\n");
    x
}

/// Our CSI document ([`write`]) signed with `signer` (enveloped XML-DSig, exclusive c14n,
/// the XPath Filter 2.0 subtract of the kit's examples), the signature the last child of
/// the root as the schema wants.
pub fn sign(s: &CsiSettings, signer: &dyn Signer) -> Result<String, CsiError> {
    let spec = SignSpec {
        signature_id: Some(format!("csi-signature-{}", s.sequence)),
        enveloped: Enveloped::Filter2Subtract,
        ..SignSpec::default()
    };
    Ok(sign_enveloped(&write(s), signer, &spec)?)
}

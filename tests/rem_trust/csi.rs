// SPDX-License-Identifier: GPL-3.0-or-later
//! CSI documents: the kit's three read with their capabilities (their signatures are
//! placeholders and do not verify); ours written, signed, read back, verified against our
//! Trusted List identity, and valid against the EN 319 532-4 schema (xmllint).

use std::path::{Path, PathBuf};
use std::process::Command;

use pec::message::time::Instant;
use pec::rem::csi::{self, CsiError, CsiSettings, REM_BASELINE};
use pec::rem::trust::{DigitalIdentity, RemPeer, TrustService, SERVICE_TYPE_REM_Q, STATUS_GRANTED};

use super::lists::SignedKit;
use super::samples::rem_kit_dir;

fn kit_dir() -> Option<PathBuf> {
    Some(rem_kit_dir()?.join("etsi-en-319-532-4"))
}

fn at(s: &str) -> Instant {
    Instant::parse_cli(s).unwrap()
}

fn peer_with(cert: Vec<u8>) -> RemPeer {
    RemPeer {
        territory: "IT".into(),
        list_next_update: None,
        provider: "Test".into(),
        service: TrustService {
            service_type: SERVICE_TYPE_REM_Q.into(),
            name: "Test REM".into(),
            status: STATUS_GRANTED.into(),
            status_since: at("2020-01-01T00:00:00Z"),
            identity: DigitalIdentity {
                certificates: vec![cert],
                ..DigitalIdentity::default()
            },
            supply_points: vec![],
            history: vec![],
        },
    }
}

#[test]
fn the_kit_csi_documents_are_read() {
    let Some(dir) = kit_dir() else { return };
    for (file, domain, body, operator) in [
        (
            "CSI_CCA.xml",
            "mx.sa-rems.rem",
            "SA-REMS provider",
            "CCA REMID authority",
        ),
        (
            "CSI_CCB.xml",
            "mx.rb-rems.rem",
            "RB-REMS provider",
            "CCB REMID authority",
        ),
        (
            "CSI_CCC.xml",
            "mx.rc-rems.rem",
            "RC-REMS provider",
            "CCC REMID authority",
        ),
    ] {
        let raw = std::fs::read(
            dir.join("INFORMATIVE-EXAMPLES/COMMON_SERVICE_INTERFACE")
                .join(file),
        )
        .unwrap();
        let c = csi::parse(&raw).unwrap();
        assert_eq!(c.sequence, 3, "{file}");
        assert_eq!(c.operator, operator);
        assert_eq!(c.issued_at, at("2021-01-16T07:30:00Z"));
        assert_eq!(c.next_update, Some(at("2021-10-03T06:59:59Z")));
        assert_eq!(c.erds.domain, domain);
        assert_eq!(c.erds.governing_body, body);
        assert_eq!(c.erds.id_scheme, "http");
        assert!(c.supports_rem_baseline());
        assert_eq!(c.erds.profile, REM_BASELINE);
        assert!(!c.erds.expiry_support);
        assert!(!c.erds.scheduled_delivery_support);
        assert_eq!(
            c.erds.assurance_levels,
            ["http://eidas.europa.eu/LoA/substantial"]
        );
        assert_eq!(
            c.erds.consignment_mode.as_deref(),
            Some("http://uri.etsi.org/19522/v1#/consignment/basic")
        );
        // A placeholder value in the kit ("ABC123\n"), not a certificate.
        assert_eq!(c.tls_certificate, b"ABC123\n");
        assert!(c.signed);
        // The kit's signature is a placeholder ("XuGc+x... signature value here"): it
        // does not verify, whoever the peer is.
        let e = csi::verify(&raw, &peer_with(vec![1, 2, 3])).unwrap_err();
        assert!(matches!(e, CsiError::Signature(_)), "{file}: {e}");
    }
}

#[test]
fn hostile_csi_documents_are_refused() {
    for (doc, want) in [
        ("<!DOCTYPE a><a/>", "document type"),
        ("<tns:CapabilityAndSecurityInformation xmlns:tns=\"http://uri.etsi.org/19532/v1#\">&x;</tns:CapabilityAndSecurityInformation>", "entity reference"),
        ("<tns:CapabilityAndSecurityInformation xmlns:tns=\"http://uri.etsi.org/19532/v1#\"/>", "no <SchemeData>"),
        ("<CapabilityAndSecurityInformation/>", "not a CapabilityAndSecurityInformation"),
    ] {
        let e = csi::parse(doc.as_bytes()).unwrap_err();
        assert!(e.to_string().contains(want), "{doc}: {e}");
    }
}

pub fn our_settings(domain_sign: Vec<u8>, tls: Vec<u8>) -> CsiSettings {
    CsiSettings {
        sequence: 4,
        operator_name: "Example PEC & REM S.p.A.".into(),
        street: "Via Roma 1".into(),
        locality: "Roma".into(),
        postal_code: Some("00100".into()),
        country: "IT".into(),
        electronic_addresses: vec!["mailto:admin@example.it".into()],
        information_uri: "https://rem.example.it/csi-info.html".into(),
        policy_uri: "https://rem.example.it/policy.html".into(),
        pointer_to_tl: "https://tl.example.it/TL-IT.xml".into(),
        distribution_point: "https://rem.example.it/CapabilityAndSecurityMetadata.xml".into(),
        erds_id: "https://rem.example.it/".into(),
        erds_domain: "mx.example.it".into(),
        governing_body: "Example PEC & REM S.p.A.".into(),
        assurance_level: "http://eidas.europa.eu/LoA/substantial".into(),
        policies: vec![REM_BASELINE.into()],
        tls_certificate: tls,
        domain_sign_certificate: domain_sign,
        issued_at: at("2026-12-06T12:00:00Z"),
        next_update: at("2027-12-06T12:00:00Z"),
    }
}

#[test]
fn our_csi_is_signed_read_back_and_verified_with_our_identity() {
    let Some(kit) = SignedKit::new() else { return };
    let signer = pec::crypto::PemSigner::from_files(
        &kit.pki.it_key,
        &kit.pki.it_cert,
        None,
        pec::crypto::DigestAlg::Sha256,
    )
    .unwrap();
    let s = our_settings(kit.signer.clone(), kit.other.clone());
    let signed = csi::sign(&s, &signer).unwrap();
    let c = csi::verify(signed.as_bytes(), &peer_with(kit.signer.clone())).unwrap();
    assert_eq!(c.sequence, 4);
    assert_eq!(c.operator, "Example PEC & REM S.p.A.");
    assert_eq!(c.erds.domain, "mx.example.it");
    assert_eq!(c.erds.id_scheme, "https");
    assert!(c.supports_rem_baseline());
    assert_eq!(c.erds.policies, [REM_BASELINE]);
    assert_eq!(c.tls_certificate, kit.other);
    assert_eq!(
        c.domain_sign_certificate.as_deref(),
        Some(kit.signer.as_slice())
    );
    assert_eq!(
        c.distribution_points,
        ["https://rem.example.it/CapabilityAndSecurityMetadata.xml"]
    );
    // Someone else's identity, a tampered document, an unsigned one.
    let e = csi::verify(signed.as_bytes(), &peer_with(kit.other.clone())).unwrap_err();
    assert!(matches!(e, CsiError::NotThePeer), "{e}");
    let tampered = signed.replace("mx.example.it", "mx.evil.it");
    let e = csi::verify(tampered.as_bytes(), &peer_with(kit.signer.clone())).unwrap_err();
    assert!(matches!(e, CsiError::Signature(_)), "{e}");
    let e = csi::verify(csi::write(&s).as_bytes(), &peer_with(kit.signer.clone())).unwrap_err();
    assert!(matches!(e, CsiError::Unsigned), "{e}");
}

/// The W3C and OASIS schemas the CSI schema imports, from Debian's xmltooling-schemas and
/// opensaml-schemas packages.
const SYSTEM_SCHEMAS: [&str; 4] = [
    "/usr/share/xml/xmltooling/xml.xsd",
    "/usr/share/xml/xmltooling/xmldsig-core-schema.xsd",
    "/usr/share/xml/xmltooling/xenc-schema.xsd",
    "/usr/share/xml/opensaml/saml-schema-assertion-2.0.xsd",
];

/// EN 319 522-3's `ERDSMetadata` (clause on ERDS metadata) and the types it uses, as the
/// standard's text defines them; the rest of that schema is not needed here. Its local
/// elements are unqualified (the standard's schema sets no elementFormDefault).
const ERDS_METADATA_XSD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<xs:schema targetNamespace="http://uri.etsi.org/19522/v1#"
    xmlns="http://uri.etsi.org/19522/v1#" xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <xs:element name="ERDSMetadata" type="ERDSMetadataType"/>
  <xs:complexType name="ERDSMetadataType"><xs:sequence>
    <xs:element name="ERDSId" type="EntityIdentifierType"/>
    <xs:element name="ERDSDomain" type="xs:string"/>
    <xs:element name="ERDSGoverningBody" type="xs:string"/>
    <xs:element name="ERDSProfileSupported" type="xs:anyURI"/>
    <xs:element name="ERDSMetadataRepository" type="xs:anyURI" minOccurs="0"/>
    <xs:element name="ERDSEUQualifiedIndicator" type="xs:boolean" minOccurs="0"/>
    <xs:element name="ERDSTLSLocation" type="xs:anyURI" minOccurs="0"/>
    <xs:element name="ERDSRootCACertLocation" type="xs:anyURI" minOccurs="0"/>
    <xs:element name="ERDSExpiryDateAndTimeSupport" type="xs:boolean"/>
    <xs:element name="ERDSScheduledDeliverySupport" type="xs:boolean"/>
    <xs:element name="ERDSAssuranceLevelsSupported" type="AssuranceLevelDetailsType" minOccurs="0"/>
    <xs:element name="ERDSPolicySupport" type="ERDSPolicyIDType" minOccurs="0"/>
    <xs:element name="ERDSSupportedConsignmentModes" type="ConsigmentModeType" minOccurs="0"/>
  </xs:sequence><xs:attribute name="version" use="required"/></xs:complexType>
  <xs:simpleType name="NonEmptyStringType"><xs:restriction base="xs:string"><xs:minLength value="1"/></xs:restriction></xs:simpleType>
  <xs:complexType name="EntityIdentifierType"><xs:simpleContent><xs:extension base="NonEmptyStringType">
    <xs:attribute name="IdentifierSchemeName" type="NonEmptyStringType" use="required"/>
  </xs:extension></xs:simpleContent></xs:complexType>
  <xs:complexType name="AssuranceLevelDetailsType"><xs:sequence>
    <xs:element name="AssuranceLevel" type="xs:anyURI"/>
    <xs:element name="PolicyID" type="xs:anyURI" minOccurs="0"/>
    <xs:element name="PolicyIDDetails" type="xs:string" minOccurs="0"/>
  </xs:sequence></xs:complexType>
  <xs:complexType name="ERDSPolicyIDType"><xs:sequence>
    <xs:element name="PolicyID" type="xs:anyURI" maxOccurs="unbounded"/>
  </xs:sequence></xs:complexType>
  <xs:simpleType name="ConsigmentModeType"><xs:restriction base="xs:anyURI">
    <xs:enumeration value="http://uri.etsi.org/19522/v1#/consignment/basic"/>
    <xs:enumeration value="http://uri.etsi.org/19522/v1#/consignment/consent"/>
    <xs:enumeration value="http://uri.etsi.org/19522/v1#/consignment/signed"/>
    <xs:enumeration value="http://uri.etsi.org/19522/v1#/consignment/other"/>
  </xs:restriction></xs:simpleType>
</xs:schema>
"#;

/// The CSI schema with everything it imports, in `dir`, the remote locations pointed at
/// the local copies; `None` (SKIPPED) without xmllint or the Debian schema packages.
fn schema_set(dir: &Path) -> Option<PathBuf> {
    let kit = kit_dir()?;
    if Command::new("xmllint").arg("--version").output().is_err() {
        eprintln!("SKIPPED: xmllint absent (Debian package libxml2-utils)");
        return None;
    }
    if let Some(missing) = SYSTEM_SCHEMAS.iter().find(|p| !Path::new(p).exists()) {
        eprintln!(
            "SKIPPED: {missing} absent (Debian packages xmltooling-schemas, opensaml-schemas)"
        );
        return None;
    }
    let local = |text: String| {
        text.replace("http://www.w3.org/2001/xml.xsd", "xml.xsd")
            .replace(
                "http://www.w3.org/TR/2002/REC-xmldsig-core-20020212/xmldsig-core-schema.xsd",
                "xmldsig-core-schema.xsd",
            )
            .replace(
                "http://www.w3.org/TR/2002/REC-xmlenc-core-20021210/xenc-schema.xsd",
                "xenc-schema.xsd",
            )
    };
    let copy = |from: &Path| {
        let text = std::fs::read_to_string(from).unwrap();
        std::fs::write(dir.join(from.file_name().unwrap()), local(text)).unwrap();
    };
    for p in SYSTEM_SCHEMAS {
        copy(Path::new(p));
    }
    copy(&kit.join("NORMATIVE-XSD/CSI19352v117-202201.xsd"));
    copy(&rem_kit_dir()?.join("ts-119-612-xsd/ts_119612v020201_201601xsd.xsd"));
    std::fs::write(
        dir.join("ERDS19522v111-201902v0.0.5.xsd"),
        ERDS_METADATA_XSD,
    )
    .unwrap();
    Some(dir.join("CSI19352v117-202201.xsd"))
}

fn xmllint(schema: &Path, doc: &Path) -> (bool, String) {
    let out = Command::new("xmllint")
        .args(["--nonet", "--noout", "--schema"])
        .arg(schema)
        .arg(doc)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn our_csi_validates_against_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let Some(schema) = schema_set(dir.path()) else {
        return;
    };
    let Some(kit) = SignedKit::new() else { return };
    let signer = pec::crypto::PemSigner::from_files(
        &kit.pki.it_key,
        &kit.pki.it_cert,
        None,
        pec::crypto::DigestAlg::Sha256,
    )
    .unwrap();
    let signed = csi::sign(
        &our_settings(kit.signer.clone(), kit.other.clone()),
        &signer,
    )
    .unwrap();
    let doc = dir.path().join("ours.xml");
    std::fs::write(&doc, &signed).unwrap();
    let (ok, err) = xmllint(&schema, &doc);
    assert!(ok, "{err}\n{signed}");
    // The check can fail: the same document with its elements out of order does not
    // validate, nor does one with a qualified ERDSMetadata child.
    let swapped = signed.replace(
        "<tns:CSIVersionIdentifier>1</tns:CSIVersionIdentifier>\n<tns:CSISequenceNumber>4</tns:CSISequenceNumber>",
        "<tns:CSISequenceNumber>4</tns:CSISequenceNumber>\n<tns:CSIVersionIdentifier>1</tns:CSIVersionIdentifier>",
    );
    assert_ne!(swapped, signed);
    std::fs::write(&doc, &swapped).unwrap();
    assert!(!xmllint(&schema, &doc).0);
    let qualified = signed
        .replace("<ERDSDomain>", "<ci:ERDSDomain>")
        .replace("</ERDSDomain>", "</ci:ERDSDomain>");
    std::fs::write(&doc, &qualified).unwrap();
    assert!(!xmllint(&schema, &doc).0);
}

// SPDX-License-Identifier: GPL-3.0-or-later
//! Trusted Lists: the kit's three lists read with their REM services, certificates and
//! supply points; the peers view at an instant; acceptance (signature by a configured
//! signer, NextUpdate, sequence) and hostile documents.

use std::path::PathBuf;

use pec::message::time::Instant;
use pec::rem::trust::{
    self, accept, smtp_host, RemPeers, SignatureCheck, TrustError, SERVICE_TYPE_REM_Q,
    STATUS_GRANTED,
};

use super::samples::rem_kit_dir;

fn csi_dir() -> Option<PathBuf> {
    Some(rem_kit_dir()?.join("etsi-en-319-532-4/INFORMATIVE-EXAMPLES/COMMON_SERVICE_INTERFACE"))
}

fn kit_cert(name: &str) -> Vec<u8> {
    let dir = rem_kit_dir().unwrap();
    let pem = std::fs::read(
        dir.join("etsi-en-319-532-4/INFORMATIVE-EXAMPLES/CERTIFICATES")
            .join(format!("{name}-CERTIFICATE.crt")),
    )
    .unwrap();
    openssl::x509::X509::from_pem(&pem)
        .unwrap()
        .to_der()
        .unwrap()
}

fn at(s: &str) -> Instant {
    Instant::parse_cli(s).unwrap()
}

#[test]
fn the_kit_lists_name_the_three_rem_services() {
    let Some(dir) = csi_dir() else { return };
    let (a, b, c) = (
        kit_cert("S-REMS-A"),
        kit_cert("R-REMS-B"),
        kit_cert("R-REMS-C"),
    );
    for (file, territory, provider) in [
        ("TL_CCA.xml", "CCA", "S-REMS-A provider"),
        ("TL_CCB.xml", "CCB", "R-REMS-B provider"),
        ("TL_CCC.xml", "CCC", "R-REMS-C provider"),
    ] {
        let raw = std::fs::read(dir.join(file)).unwrap();
        let list = trust::parse(&raw).unwrap();
        assert_eq!(list.territory, territory, "{file}");
        assert_eq!(list.sequence, 1);
        assert_eq!(list.operator, format!("{territory} Supervision Agency"));
        assert_eq!(list.issued_at, at("2020-10-03T08:30:00Z"));
        assert_eq!(list.next_update, Some(at("2021-10-03T08:29:59Z")));
        // The kit's lists carry their signature only as a comment.
        assert!(!list.signed, "{file}");
        assert_eq!(list.providers.len(), 1);
        assert_eq!(list.providers[0].name, provider);
        let services = &list.providers[0].services;
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["SA-REMS provider", "RB-REMS provider", "RC-REMS provider"]
        );
        for (s, cert, host, csi) in [
            (
                &services[0],
                &a,
                "mx.sa-rems.rem",
                "https://rem-provider-a-service.cca/CapabilityAndSecurityMetadata.xml",
            ),
            (
                &services[1],
                &b,
                "mx.rb-rems.rem",
                "https://rem-provider-b-service.ccb/CapabilityAndSecurityMetadata.xml",
            ),
            (
                &services[2],
                &c,
                "mx.rc-rems.rem",
                "https://rem-provider-c-service.ccc/CapabilityAndSecurityMetadata.xml",
            ),
        ] {
            assert_eq!(s.service_type, SERVICE_TYPE_REM_Q);
            assert!(s.is_rem());
            assert_eq!(s.status, STATUS_GRANTED);
            assert_eq!(s.status_since, at("2021-12-30T22:00:00Z"));
            assert_eq!(s.identity.certificates, vec![cert.clone()], "{}", s.name);
            assert_eq!(
                s.identity.subject_names,
                [format!(
                    "C=CC, O=GlobalERDS, OU=GlobalERDS test services, CN={}",
                    s.name
                )]
            );
            // The SKI is the certificate's subject key identifier.
            let x = openssl::x509::X509::from_der(cert).unwrap();
            assert_eq!(
                s.identity.skis,
                [x.subject_key_id().unwrap().as_slice().to_vec()]
            );
            assert_eq!(s.smtp_hosts(), [host]);
            assert_eq!(s.csi_url(), Some(csi));
            // <ServiceHistory> holds only a comment in the kit.
            assert!(s.history.is_empty());
        }
    }
}

#[test]
fn supply_point_hosts() {
    assert_eq!(
        smtp_host("smtp:mx.sa-rems.rem:25").as_deref(),
        Some("mx.sa-rems.rem")
    );
    assert_eq!(
        smtp_host("smtp://MX.Example.it.:25/").as_deref(),
        Some("mx.example.it")
    );
    assert_eq!(
        smtp_host("smtp:mx.example.it").as_deref(),
        Some("mx.example.it")
    );
    assert_eq!(smtp_host("https://mx.example.it/"), None);
    assert_eq!(smtp_host("smtp:"), None);
    assert_eq!(smtp_host("smtp://user@host"), None);
}

/// The kit's TL_CCA with its dates moved: `NextUpdate` and the status start time.
fn kit_list_with(next_update: &str, since: &str) -> Option<String> {
    let text = std::fs::read_to_string(csi_dir()?.join("TL_CCA.xml")).unwrap();
    Some(
        text.replace("2021-10-03T08:29:59Z", next_update)
            .replace("2021-12-30T22:00:00Z", since),
    )
}

#[test]
fn the_peers_view_answers_by_certificate_and_by_mail_host_at_an_instant() {
    let Some(dir) = csi_dir() else { return };
    // As published, the kit's list expires (2021-10-03) before its services are granted
    // (2021-12-30): at no instant is any of them trusted.
    let kit = trust::parse(&std::fs::read(dir.join("TL_CCA.xml")).unwrap()).unwrap();
    let peers = RemPeers::new(std::slice::from_ref(&kit));
    let a = kit_cert("S-REMS-A");
    assert_eq!(peers.all().len(), 3);
    for when in ["2021-06-01T00:00:00Z", "2022-06-01T00:00:00Z"] {
        assert_eq!(peers.trusted_at(at(when)).count(), 0, "{when}");
        assert!(peers.by_certificate(&a, at(when)).is_none());
        assert!(peers.by_mail_host("mx.sa-rems.rem", at(when)).is_none());
    }

    // The same list with a NextUpdate in 2031: granted from 2021-12-30 until then.
    let list = trust::parse(
        kit_list_with("2031-10-03T08:29:59Z", "2021-12-30T22:00:00Z")
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let peers = RemPeers::new(&[list]);
    let now = at("2026-12-06T12:00:00Z");
    assert_eq!(peers.trusted_at(now).count(), 3);
    let p = peers.by_certificate(&a, now).unwrap();
    assert_eq!(p.service.name, "SA-REMS provider");
    assert_eq!(p.territory, "CCA");
    assert_eq!(
        peers
            .by_certificate(&kit_cert("R-REMS-C"), now)
            .unwrap()
            .service
            .name,
        "RC-REMS provider"
    );
    assert_eq!(
        peers
            .by_mail_host("MX.RB-REMS.REM.", now)
            .unwrap()
            .service
            .name,
        "RB-REMS provider"
    );
    assert!(peers.by_mail_host("mx.unknown.rem", now).is_none());
    // Before the grant, after the list's NextUpdate: not trusted.
    assert!(peers
        .by_certificate(&a, at("2021-12-30T21:59:59Z"))
        .is_none());
    assert!(peers
        .by_certificate(&a, at("2031-10-03T08:29:59Z"))
        .is_none());
    assert!(peers
        .by_certificate(&a, at("2031-10-03T08:29:58Z"))
        .is_some());
    // A certificate that is not a service's identity (the intermediate CA).
    let pem = std::fs::read(
        rem_kit_dir()
            .unwrap()
            .join("etsi-en-319-532-4/INFORMATIVE-EXAMPLES/CERTIFICATES/REM-INTERMEDIATE-CA.crt"),
    )
    .unwrap();
    let ca = openssl::x509::X509::from_pem(&pem)
        .unwrap()
        .to_der()
        .unwrap();
    assert!(peers.by_certificate(&ca, now).is_none());
}

#[test]
fn a_withdrawn_service_and_its_history() {
    let Some(text) = kit_list_with("2031-10-03T08:29:59Z", "2026-01-01T00:00:00Z") else {
        return;
    };
    // Service A withdrawn from 2026-01-01, granted from 2022-01-01 before that.
    let history = "<ServiceHistory><ServiceHistoryInstance>\
        <ServiceTypeIdentifier>http://uri.etsi.org/TrstSvc/Svctype/EDS/REM/Q</ServiceTypeIdentifier>\
        <ServiceName><Name xml:lang=\"en\">SA-REMS provider</Name></ServiceName>\
        <ServiceDigitalIdentity><DigitalId><X509SKI>9dFgTuDdtVky75pbmD87SnPbLNg=</X509SKI></DigitalId></ServiceDigitalIdentity>\
        <ServiceStatus>http://uri.etsi.org/TrstSvc/TrustedList/Svcstatus/granted</ServiceStatus>\
        <StatusStartingTime>2022-01-01T00:00:00Z</StatusStartingTime>\
        </ServiceHistoryInstance></ServiceHistory>";
    let first = text.find("<ServiceHistory>").unwrap();
    let end = first + text[first..].find("</ServiceHistory>").unwrap() + "</ServiceHistory>".len();
    let text = format!("{}{history}{}", &text[..first], &text[end..]).replacen(
        "Svcstatus/granted</ServiceStatus>\n            <StatusStartingTime>2026-01-01",
        "Svcstatus/withdrawn</ServiceStatus>\n            <StatusStartingTime>2026-01-01",
        1,
    );
    let list = trust::parse(text.as_bytes()).unwrap();
    let a = &list.providers[0].services[0];
    assert!(a.status.ends_with("/withdrawn"));
    assert_eq!(a.history.len(), 1);
    assert!(a.granted_at(at("2025-06-01T00:00:00Z")));
    assert!(!a.granted_at(at("2026-06-01T00:00:00Z")));
    assert!(!a.granted_at(at("2021-06-01T00:00:00Z")));
    let peers = RemPeers::new(&[list]);
    let cert = kit_cert("S-REMS-A");
    // In force in 2025 only through its history entry, whose identity names no
    // certificate: the byte comparison has nothing to match.
    assert!(peers
        .by_certificate(&cert, at("2026-06-01T00:00:00Z"))
        .is_none());
    assert!(peers
        .by_mail_host("mx.sa-rems.rem", at("2025-06-01T00:00:00Z"))
        .is_some());
    assert!(peers
        .by_mail_host("mx.sa-rems.rem", at("2026-06-01T00:00:00Z"))
        .is_none());
}

/// A signature check double: reports the signer it was built with, or an error.
struct Fixed(Result<Vec<u8>, String>);

impl SignatureCheck for Fixed {
    fn verify(&self, _xml: &str) -> Result<Vec<u8>, String> {
        self.0.clone()
    }
}

fn signed(text: &str) -> String {
    text.replace(
        "</TrustServiceProviderList>",
        "</TrustServiceProviderList><dsig:Signature/>",
    )
}

#[test]
fn acceptance_needs_a_configured_signer_a_future_next_update_and_no_rollback() {
    let Some(text) = kit_list_with("2031-10-03T08:29:59Z", "2021-12-30T22:00:00Z") else {
        return;
    };
    let now = at("2026-12-06T12:00:00Z");
    let signer = kit_cert("S-REMS-A");
    let other = kit_cert("R-REMS-B");
    let good = Fixed(Ok(signer.clone()));
    let raw = signed(&text);
    let list = accept(
        raw.as_bytes(),
        &good,
        std::slice::from_ref(&signer),
        now,
        None,
    )
    .unwrap();
    assert!(list.signed);
    assert_eq!(list.territory, "CCA");
    // Same or newer sequence than the stored copy: fine; older: refused.
    accept(
        raw.as_bytes(),
        &good,
        std::slice::from_ref(&signer),
        now,
        Some(1),
    )
    .unwrap();
    let e = accept(
        raw.as_bytes(),
        &good,
        std::slice::from_ref(&signer),
        now,
        Some(2),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            TrustError::Rollback {
                got: 1,
                have: 2,
                ..
            }
        ),
        "{e}"
    );
    // Unsigned (the kit's list as published).
    let e = accept(
        text.as_bytes(),
        &good,
        std::slice::from_ref(&signer),
        now,
        None,
    )
    .unwrap_err();
    assert!(matches!(e, TrustError::Unsigned), "{e}");
    // Signed by someone else.
    let e = accept(
        raw.as_bytes(),
        &good,
        std::slice::from_ref(&other),
        now,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(e, TrustError::UnknownSigner(ref s) if s.contains("SA-REMS provider")),
        "{e}"
    );
    // A signature that does not verify.
    let bad = Fixed(Err("digest mismatch".into()));
    let e = accept(
        raw.as_bytes(),
        &bad,
        std::slice::from_ref(&signer),
        now,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(e, TrustError::Signature(ref s) if s == "digest mismatch"),
        "{e}"
    );
    // Past its NextUpdate.
    let e = accept(
        raw.as_bytes(),
        &good,
        std::slice::from_ref(&signer),
        at("2031-10-03T08:29:59Z"),
        None,
    )
    .unwrap_err();
    assert!(matches!(e, TrustError::Expired { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "trusted list of CCA (sequence 1): next update 2031-10-03T08:29:59Z is past"
    );
    // A closed list (an empty NextUpdate): refused, and its services not trusted.
    let closed = raw.replace("<dateTime>2031-10-03T08:29:59Z</dateTime>", "");
    assert_ne!(closed, raw);
    let e = accept(
        closed.as_bytes(),
        &good,
        std::slice::from_ref(&signer),
        now,
        None,
    )
    .unwrap_err();
    assert!(matches!(e, TrustError::Closed { .. }), "{e}");
    let list = trust::parse(closed.as_bytes()).unwrap();
    assert_eq!(list.next_update, None);
    assert_eq!(RemPeers::new(&[list]).trusted_at(now).count(), 0);
}

#[test]
fn hostile_and_broken_lists_are_refused() {
    let good = Fixed(Ok(vec![1]));
    let now = at("2026-12-06T12:00:00Z");
    let cases: [(&str, &str); 8] = [
        ("<!DOCTYPE x [<!ENTITY a \"b\">]><TrustServiceStatusList/>", "document type"),
        ("<TrustServiceStatusList xmlns=\"http://uri.etsi.org/02231/v2#\">&xxe;</TrustServiceStatusList>", "entity reference"),
        ("<TrustServiceStatusList xmlns=\"http://uri.etsi.org/02231/v2#\">", "not well-formed"),
        ("<a:TrustServiceStatusList/>", "not well-formed"),
        ("<TrustServiceStatusList/>", "not a TrustServiceStatusList"),
        ("<TrustServiceStatusList xmlns=\"http://uri.etsi.org/02231/v2#\"/>", "no <SchemeInformation>"),
        ("<TrustServiceStatusList xmlns=\"http://uri.etsi.org/02231/v2#\"><SchemeInformation><TSLSequenceNumber>x</TSLSequenceNumber></SchemeInformation></TrustServiceStatusList>", "not a number"),
        ("<TrustServiceStatusList xmlns=\"http://uri.etsi.org/02231/v2#\"><SchemeInformation><TSLSequenceNumber>1</TSLSequenceNumber><SchemeTerritory>IT</SchemeTerritory><ListIssueDateTime>yesterday</ListIssueDateTime></SchemeInformation></TrustServiceStatusList>", "not an xsd:dateTime"),
    ];
    for (doc, want) in cases {
        let e = accept(doc.as_bytes(), &good, &[vec![1]], now, None).unwrap_err();
        assert!(e.to_string().contains(want), "{doc}: {e}");
    }
    // Nesting bomb: refused at a bounded depth, no stack exhaustion.
    let deep = format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000));
    let e = trust::parse(deep.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("nested deeper"), "{e}");
    // Width bomb: bounded element count.
    let wide = format!("<a>{}</a>", "<b/>".repeat(300_000));
    let e = trust::parse(wide.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("more than 250000 elements"), "{e}");
    // A service certificate that is not one.
    let Some(text) = kit_list_with("2031-10-03T08:29:59Z", "2021-12-30T22:00:00Z") else {
        return;
    };
    let broken = text.replacen("<X509Certificate>MIIGyjCC", "<X509Certificate>QUJD", 1);
    let e = trust::parse(broken.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("X509Certificate"), "{e}");
}

/// A test PKI (tests/pki) and the kit's TL_CCA with a NextUpdate in 2031, signed by the
/// `pec.example.it` test key as a scheme operator would (enveloped signature).
pub struct SignedKit {
    pub _dir: tempfile::TempDir,
    pub pki: pec::crypto::testing::TestPki,
    /// The signer's certificate (DER) and an unrelated one.
    pub signer: Vec<u8>,
    pub other: Vec<u8>,
    pub unsigned: String,
}

impl SignedKit {
    pub fn new() -> Option<SignedKit> {
        let unsigned = kit_list_with("2031-10-03T08:29:59Z", "2021-12-30T22:00:00Z")?;
        let dir = tempfile::tempdir().unwrap();
        let pki = pec::crypto::testing::make_test_pki(dir.path()).unwrap();
        let der = |p: &std::path::Path| {
            openssl::x509::X509::from_pem(&std::fs::read(p).unwrap())
                .unwrap()
                .to_der()
                .unwrap()
        };
        Some(SignedKit {
            signer: der(&pki.it_cert),
            other: der(&pki.net_cert),
            pki,
            _dir: dir,
            unsigned,
        })
    }

    /// `text` signed with the `pec.example.it` key.
    pub fn sign(&self, text: &str) -> String {
        sign_with(text, &self.pki.it_key, &self.pki.it_cert)
    }
}

pub fn sign_with(text: &str, key: &std::path::Path, cert: &std::path::Path) -> String {
    use pec::crypto::xmldsig::{sign_enveloped, Enveloped, SignSpec};
    let signer =
        pec::crypto::PemSigner::from_files(key, cert, None, pec::crypto::DigestAlg::Sha256)
            .unwrap();
    let spec = SignSpec {
        signature_id: Some("tl-signature".into()),
        enveloped: Enveloped::EnvelopedSignature,
        ..SignSpec::default()
    };
    sign_enveloped(text, &signer, &spec).unwrap()
}

#[test]
fn signed_lists_verify_and_tampered_or_foreign_ones_are_refused() {
    let Some(kit) = SignedKit::new() else { return };
    let now = at("2026-12-06T12:00:00Z");
    let signers = std::slice::from_ref(&kit.signer);
    let signed = kit.sign(&kit.unsigned);
    let list = accept(signed.as_bytes(), &trust::XmlDsig, signers, now, None).unwrap();
    assert!(list.signed);
    assert_eq!(list.providers[0].services.len(), 3);
    // Tampered after signing: a supply point changed.
    let tampered = signed.replace("smtp:mx.rb-rems.rem:25", "smtp:mx.evil.rem:25");
    assert_ne!(tampered, signed);
    let e = accept(tampered.as_bytes(), &trust::XmlDsig, signers, now, None).unwrap_err();
    assert!(matches!(e, TrustError::Signature(_)), "{e}");
    // Signed by a key that is not a configured signer.
    let foreign = sign_with(&kit.unsigned, &kit.pki.net_key, &kit.pki.net_cert);
    let e = accept(foreign.as_bytes(), &trust::XmlDsig, signers, now, None).unwrap_err();
    assert!(matches!(e, TrustError::UnknownSigner(_)), "{e}");
    accept(
        foreign.as_bytes(),
        &trust::XmlDsig,
        std::slice::from_ref(&kit.other),
        now,
        None,
    )
    .unwrap();
    // Unsigned.
    let e = accept(kit.unsigned.as_bytes(), &trust::XmlDsig, signers, now, None).unwrap_err();
    assert!(matches!(e, TrustError::Unsigned), "{e}");
    // Signed, but past its NextUpdate.
    let e = accept(
        signed.as_bytes(),
        &trust::XmlDsig,
        signers,
        at("2031-10-04T00:00:00Z"),
        None,
    )
    .unwrap_err();
    assert!(matches!(e, TrustError::Expired { .. }), "{e}");
}

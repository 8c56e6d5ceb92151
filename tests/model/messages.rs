// SPDX-License-Identifier: GPL-3.0-or-later
//! Golden tests: every PEC message type we build, signed through SoftHSM2, checked for its
//! exact header set, MIME layout, readable text and daticert.xml against the files in
//! `tests/fixtures/<scenario>/`, verified by the system `openssl`, and classified by our own
//! verifier.
//!
//! `UPDATE_GOLDEN=1 cargo test --test messages` rewrites the expected files (review the diff).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use mail_parser::{MessageParser, MimeHeaders, PartType};
use pec::index::{ProviderInfo, TrustSet};
use pec::message::build::{Builder, Certification, Generated, Issuer, OriginalInfo};
use pec::message::classify::{classify, Classification};
use pec::message::daticert::Daticert;
use pec::message::ids::SequentialIds;
use pec::message::kind::{
    Errore, MessageKind, ReceiptType, RecipientType, Ricevuta, Timeout, Tipo,
};
use pec::message::mime;
use pec::message::time::Instant;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn at() -> Instant {
    // 3 June 2025, 10:11:12 Italian summer time.
    Instant::parse_cli("2025-06-03T08:11:12Z").unwrap()
}

fn issuer() -> Issuer {
    Issuer {
        provider_name: "PEC Example IT S.p.A.".into(),
        service_address: "posta-certificata@pec.example.it".into(),
        envelope_sender_header: true,
    }
}

const PEC_ID: &str = "opec1.20250603101112.1.1.test@pec.example.it";

fn original() -> Vec<u8> {
    std::fs::read(fixtures().join("originals/contratto.eml")).unwrap()
}

fn certification() -> Certification {
    let raw = original();
    let info = OriginalInfo::parse(&raw).unwrap();
    Certification::for_submission(
        &info,
        "alice@pec.example.it",
        &[
            ("bob@pec.example.net".into(), RecipientType::Certificato),
            ("carol@example.com".into(), RecipientType::Esterno),
            ("dave@pec.example.net".into(), RecipientType::Certificato),
        ],
        PEC_ID,
    )
}

/// One scenario: a name (the fixture folder) and the message it builds.
struct Scenario {
    name: &'static str,
    kind: MessageKind,
    build: fn(&Builder<'_>) -> Generated,
    rcpt: &'static str,
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "transport-envelope",
            kind: MessageKind::TransportEnvelope,
            build: |b| {
                b.transport_envelope(&original(), &certification(), at())
                    .unwrap()
            },
            rcpt: "bob@pec.example.net carol@example.com dave@pec.example.net",
        },
        Scenario {
            name: "acceptance",
            kind: MessageKind::Acceptance,
            build: |b| b.acceptance(&certification(), at()).unwrap(),
            rcpt: "alice@pec.example.it",
        },
        Scenario {
            name: "non-acceptance",
            kind: MessageKind::NonAcceptance,
            build: |b| {
                b.non_acceptance(
                    &certification(),
                    at(),
                    "destinatario di busta non presente negli header To/Cc",
                )
                .unwrap()
            },
            rcpt: "alice@pec.example.it",
        },
        Scenario {
            name: "non-acceptance-virus",
            kind: MessageKind::NonAcceptanceVirus,
            build: |b| {
                b.non_acceptance_virus(&certification(), at(), "Eicar-Test-Signature")
                    .unwrap()
            },
            rcpt: "alice@pec.example.it",
        },
        Scenario {
            name: "take-charge",
            kind: MessageKind::TakeCharge,
            build: |b| {
                b.take_charge(
                    &certification(),
                    at(),
                    &["bob@pec.example.net".into(), "dave@pec.example.net".into()],
                    "ricevute@pec.example.it",
                )
                .unwrap()
            },
            rcpt: "ricevute@pec.example.it",
        },
        Scenario {
            name: "delivery-completa",
            kind: MessageKind::Delivery(ReceiptType::Completa),
            build: |b| {
                let mut cert = certification();
                cert.requested = ReceiptType::Completa;
                b.delivery(&cert, at(), "bob@pec.example.net", &postacert())
                    .unwrap()
            },
            rcpt: "alice@pec.example.it",
        },
        Scenario {
            name: "delivery-breve",
            kind: MessageKind::Delivery(ReceiptType::Breve),
            build: |b| {
                b.delivery(&certification(), at(), "bob@pec.example.net", &postacert())
                    .unwrap()
            },
            rcpt: "alice@pec.example.it",
        },
        Scenario {
            name: "delivery-sintetica-cc",
            kind: MessageKind::Delivery(ReceiptType::Sintetica),
            build: |b| {
                b.delivery(&certification(), at(), "dave@pec.example.net", &postacert())
                    .unwrap()
            },
            rcpt: "alice@pec.example.it",
        },
        Scenario {
            name: "non-delivery",
            kind: MessageKind::NonDelivery,
            build: |b| {
                b.non_delivery(
                    &certification(),
                    at(),
                    "bob@pec.example.net",
                    Errore::NoDest,
                    "5.1.1 - PEC Example IT S.p.A. - indirizzo non valido",
                )
                .unwrap()
            },
            rcpt: "alice@pec.example.it",
        },
        Scenario {
            name: "non-delivery-virus",
            kind: MessageKind::NonDeliveryVirus,
            build: |b| {
                b.non_delivery_virus(
                    &certification(),
                    at(),
                    "bob@pec.example.net",
                    "5.5.1 - PEC Example IT S.p.A. - presenza di un virus nel messaggio",
                )
                .unwrap()
            },
            rcpt: "alice@pec.example.it",
        },
        Scenario {
            name: "timeout-12h",
            kind: MessageKind::Timeout(Timeout::Hours12),
            build: |b| {
                b.timeout(
                    &certification(),
                    at(),
                    "bob@pec.example.net",
                    Timeout::Hours12,
                    "4.4.7 - PEC Example IT S.p.A. - messaggio non consegnato entro 12 ore",
                )
                .unwrap()
            },
            rcpt: "alice@pec.example.it",
        },
        Scenario {
            name: "timeout-24h",
            kind: MessageKind::Timeout(Timeout::Hours24),
            build: |b| {
                b.timeout(
                    &certification(),
                    at(),
                    "bob@pec.example.net",
                    Timeout::Hours24,
                    "5.4.1 - PEC Example IT S.p.A. - messaggio non consegnato entro 24 ore",
                )
                .unwrap()
            },
            rcpt: "alice@pec.example.it",
        },
        Scenario {
            name: "virus-detection",
            kind: MessageKind::VirusDetection,
            build: |b| {
                b.virus_detection(
                    &certification(),
                    at(),
                    "bob@pec.example.net",
                    "Eicar-Test-Signature",
                    "ricevute@pec.example.it",
                )
                .unwrap()
            },
            rcpt: "ricevute@pec.example.it",
        },
        Scenario {
            name: "anomaly-envelope",
            kind: MessageKind::AnomalyEnvelope,
            build: |b| {
                let raw = std::fs::read(fixtures().join("originals/ordinary.eml")).unwrap();
                b.anomaly_envelope(
                    &raw,
                    "mario@example.org",
                    &["bob@pec.example.net".into()],
                    at(),
                    "firma non presente o non autentica",
                )
                .unwrap()
            },
            rcpt: "bob@pec.example.net",
        },
    ]
}

/// The original as it travels inside the envelope.
fn postacert() -> Vec<u8> {
    pec::message::build::postacert_original(
        &original(),
        PEC_ID,
        "<20250603101109.12345@client.example.it>",
    )
    .unwrap()
}

/// Replaces the random parts (boundaries) so that header values can be compared.
fn normalise_header(name: &str, value: &str) -> String {
    let v = mime::unfold(value.as_bytes());
    if name.eq_ignore_ascii_case("Content-Type") {
        if let Some(p) = v.find("boundary=") {
            return format!("{}boundary=\"<boundary>\"", &v[..p]);
        }
    }
    v
}

fn header_lines(bytes: &[u8]) -> String {
    let (header, _) = mime::split_header_body(bytes);
    let mut out = String::new();
    for f in mime::fields(header).unwrap() {
        out.push_str(&format!(
            "{}: {}\n",
            f.name,
            normalise_header(f.name, &String::from_utf8_lossy(f.value))
        ));
    }
    out
}

fn golden(dir: &Path, file: &str, actual: &str) {
    let path = dir.join(file);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "{} differs from the golden file",
        path.display()
    );
}

#[test]
fn every_message_type_matches_its_golden_files_and_verifies() {
    let pki = common::pki::shared();
    let ids = SequentialIds::new("opec1.20250603101112.test", "pec.example.it");
    let iss = issuer();
    let builder = Builder {
        issuer: &iss,
        signer: pki.hsm_signer(),
        ids: &ids,
    };
    let mut trust = TrustSet::new();
    trust.add(
        pki.provider_a_cert_der(),
        Some(ProviderInfo {
            name: iss.provider_name.clone(),
            mail_receipt: "ricevute@pec.example.it".into(),
            managed_domains: vec!["pec.example.it".into()],
        }),
    );

    let all = scenarios();
    let mut kinds_seen = std::collections::HashSet::new();
    for s in &all {
        let generated = (s.build)(&builder);
        assert_eq!(generated.kind, s.kind, "{}", s.name);
        kinds_seen.insert(s.kind);
        let bytes = generated.to_bytes();
        let dir = fixtures().join(s.name);
        check_structure(s, &generated, &bytes);
        golden(&dir, "expected-headers.txt", &header_lines(&bytes));
        let parsed = MessageParser::default().parse(&bytes).unwrap();
        let texts = readable_texts(&parsed);
        golden(&dir, "expected-text.txt", &texts.0);
        if let Some(xml) = daticert_xml(&parsed) {
            golden(&dir, "expected-daticert.xml", &xml);
        }
        assert_eq!(
            generated.rcpt_to.join(" "),
            s.rcpt,
            "{}: SMTP recipients",
            s.name
        );

        // Independent check: the system openssl verifies the signature and the chain.
        let file = pki.dir().join(format!("{}.eml", s.name));
        std::fs::write(&file, &bytes).unwrap();
        let out = Command::new("openssl")
            .args(["smime", "-verify", "-in"])
            .arg(&file)
            .args(["-CAfile"])
            .arg(pki.ca_pem())
            .args(["-purpose", "any", "-out", "/dev/null"])
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "{}: openssl smime -verify: {}",
            s.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("openssl")
            .args(["cms", "-verify", "-in"])
            .arg(&file)
            .args(["-CAfile"])
            .arg(pki.ca_pem())
            .args(["-purpose", "any", "-out", "/dev/null"])
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "{}: openssl cms -verify: {}",
            s.name,
            String::from_utf8_lossy(&out.stderr)
        );

        // Our own verifier classifies it as what it is.
        match (s.kind, classify(&bytes, &trust, at())) {
            (MessageKind::TransportEnvelope, Classification::TransportEnvelope(m)) => {
                assert_eq!(m.daticert.tipo, Tipo::PostaCertificata);
                assert_eq!(m.daticert.identificativo, PEC_ID);
            }
            (MessageKind::AnomalyEnvelope, Classification::SignedButWrong { reason, .. }) => {
                assert!(
                    reason.contains("errore") || reason.contains("anomal"),
                    "{reason}"
                );
            }
            (k, Classification::Receipt(r, m)) => {
                assert_eq!(Some(r.tipo()), k.tipo(), "{}", s.name);
                assert_eq!(m.daticert.identificativo, PEC_ID);
                assert_eq!(m.security_flag, k.security_flag(), "{}", s.name);
            }
            (k, other) => panic!("{}: {k:?} classified as {other:?}", s.name),
        }
    }
    assert_eq!(
        kinds_seen.len(),
        MessageKind::ALL.len(),
        "a scenario per message kind"
    );
}

/// Structural checks on every header and part (spec §2–§3).
fn check_structure(s: &Scenario, g: &Generated, bytes: &[u8]) {
    let name = s.name;
    assert!(mime::is_seven_bit_safe(bytes), "{name}: not 7-bit safe");
    assert!(
        matches!(mime::normalize_crlf(bytes), std::borrow::Cow::Borrowed(_)),
        "{name}: bare LF or CR"
    );
    let m = MessageParser::default().parse(bytes).unwrap();

    // Subject prefix and class header.
    let subject = m.subject().unwrap();
    assert!(
        subject.starts_with(s.kind.subject_prefix()),
        "{name}: subject {subject:?}"
    );
    assert!(
        subject.ends_with("Contratto di fornitura n° 42 — firma")
            || s.kind == MessageKind::AnomalyEnvelope,
        "{name}: {subject}"
    );
    let class = s.kind.class();
    assert_eq!(
        g.header(class.header_name()),
        Some(class.header_value()),
        "{name}"
    );
    let other = if class.header_name() == "X-Trasporto" {
        "X-Ricevuta"
    } else {
        "X-Trasporto"
    };
    assert!(g.header(other).is_none(), "{name}: both class headers");
    assert_eq!(
        g.header("X-VerificaSicurezza").is_some(),
        s.kind.security_flag(),
        "{name}"
    );
    assert_eq!(
        g.header("X-Mittente").is_some(),
        s.kind == MessageKind::VirusDetection,
        "{name}"
    );
    assert_eq!(
        m.date().unwrap().to_rfc3339(),
        "2025-06-03T10:11:12+02:00",
        "{name}"
    );

    // From / To rules (spec §2.3).
    let from = g.header("From").unwrap();
    match s.kind {
        MessageKind::TransportEnvelope => {
            assert_eq!(
                from,
                "\"Per conto di: alice@pec.example.it\" <posta-certificata@pec.example.it>"
            );
            assert_eq!(g.header("Sender"), Some(from));
            assert_eq!(g.header("Message-ID"), Some(format!("<{PEC_ID}>").as_str()));
            assert_eq!(g.header("X-TipoRicevuta"), Some("breve"));
            assert_eq!(g.mail_from, "alice@pec.example.it");
        }
        MessageKind::AnomalyEnvelope => {
            assert_eq!(
                from,
                "\"Per conto di: mario@example.org\" <posta-certificata@pec.example.it>"
            );
            // Keeps the received message's id (spec §3.11).
            assert_eq!(m.message_id(), Some("abc123@mail.example.org"));
            assert_eq!(g.mail_from, "mario@example.org");
        }
        _ => {
            assert_eq!(from, "posta-certificata@pec.example.it");
            assert_eq!(g.header("To"), Some(s.rcpt));
            assert_eq!(g.mail_from, "posta-certificata@pec.example.it");
            assert_eq!(
                g.header("X-Riferimento-Message-ID"),
                Some("<20250603101109.12345@client.example.it>")
            );
            assert_ne!(
                g.message_id, PEC_ID,
                "{name}: a receipt has its own Message-ID"
            );
        }
    }

    // multipart/signed ( multipart/mixed , smime.p7s ).
    let root = &m.parts[0];
    let ct = root.content_type().unwrap();
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("multipart", Some("signed")),
        "{name}"
    );
    assert_eq!(
        ct.attribute("protocol"),
        Some("application/x-pkcs7-signature")
    );
    assert_eq!(ct.attribute("micalg"), Some("sha-256"));
    let PartType::Multipart(children) = &root.body else {
        panic!("{name}")
    };
    assert_eq!(children.len(), 2, "{name}");
    let sig = &m.parts[children[1] as usize];
    assert_eq!(
        sig.content_type().unwrap().subtype(),
        Some("x-pkcs7-signature")
    );
    assert_eq!(sig.attachment_name(), Some("smime.p7s"));
    let mixed = &m.parts[children[0] as usize];
    assert_eq!(
        mixed.content_type().unwrap().subtype(),
        Some("mixed"),
        "{name}"
    );
    let PartType::Multipart(inner) = &mixed.body else {
        panic!("{name}")
    };
    let expected_parts = match s.kind {
        MessageKind::AnomalyEnvelope => 2,
        k if k.carries_original() => 3,
        _ => 2,
    };
    assert_eq!(
        inner.len(),
        expected_parts,
        "{name}: parts of multipart/mixed"
    );
    let alt = &m.parts[inner[0] as usize];
    assert_eq!(
        alt.content_type().unwrap().subtype(),
        Some("alternative"),
        "{name}: readable part first"
    );
    let PartType::Multipart(alts) = &alt.body else {
        panic!("{name}")
    };
    assert_eq!(alts.len(), 2);
    for (i, sub) in [(0, "plain"), (1, "html")] {
        let p = &m.parts[alts[i] as usize];
        let ct = p.content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("text", Some(sub)), "{name}");
        assert_eq!(ct.attribute("charset"), Some("iso-8859-1"), "{name}");
    }
    let html = m.parts[alts[1] as usize]
        .text_contents()
        .unwrap()
        .to_ascii_lowercase();
    for active in [
        "<script", "<img", "<link", "<style", "src=", "href=", "url(", "<iframe", "<object",
    ] {
        assert!(!html.contains(active), "{name}: html has {active}");
    }
    if s.kind != MessageKind::AnomalyEnvelope {
        let d = &m.parts[inner[1] as usize];
        let ct = d.content_type().unwrap();
        assert_eq!(
            (ct.ctype(), ct.subtype()),
            ("application", Some("xml")),
            "{name}"
        );
        assert_eq!(ct.attribute("name"), Some("daticert.xml"));
        assert_eq!(
            d.content_disposition().unwrap().attribute("filename"),
            Some("daticert.xml")
        );
        assert_eq!(d.content_disposition().unwrap().ctype(), "inline");
        let xml = d.contents();
        let dc = Daticert::parse(xml).unwrap_or_else(|e| panic!("{name}: {e}"));
        dc.check_for_tipo()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(Some(dc.tipo), s.kind.tipo());
        check_daticert(s, &dc);
    }
    if expected_parts == 3 || s.kind == MessageKind::AnomalyEnvelope {
        let p = &m.parts[inner[inner.len() - 1] as usize];
        let ct = p.content_type().unwrap();
        assert_eq!(
            (ct.ctype(), ct.subtype()),
            ("message", Some("rfc822")),
            "{name}"
        );
        assert_eq!(ct.attribute("name"), Some("postacert.eml"));
        let raw = &bytes[p.offset_body as usize..p.offset_end as usize];
        let carried = raw;
        match s.kind {
            MessageKind::TransportEnvelope | MessageKind::Delivery(ReceiptType::Completa) => {
                assert_eq!(
                    String::from_utf8_lossy(carried),
                    String::from_utf8_lossy(&postacert()),
                    "{name}: postacert.eml is the original"
                );
                let o = std::str::from_utf8(carried).unwrap();
                assert!(o.contains(&format!("\r\nMessage-ID: <{PEC_ID}>\r\n")));
                assert!(o.contains(
                    "\r\nX-Riferimento-Message-ID: <20250603101109.12345@client.example.it>\r\n"
                ));
                assert!(!o.contains(
                    "Message-ID: <20250603101109.12345@client.example.it>\r\nX-TipoRicevuta"
                ));
            }
            MessageKind::Delivery(ReceiptType::Breve) => {
                let o = std::str::from_utf8(carried).unwrap();
                assert!(o.contains("contratto.pdf.hash"), "{name}");
                assert!(o.contains("fattura.txt.hash"), "{name}");
                assert!(
                    o.contains("in allegato il contratto e la fattura."),
                    "{name}: text kept"
                );
                assert!(
                    !o.contains("JVBER"),
                    "{name}: attachment bytes must be gone"
                );
            }
            MessageKind::AnomalyEnvelope => {
                let o = std::str::from_utf8(carried).unwrap();
                assert!(
                    o.starts_with("Return-Path: <mario@example.org>\r\n"),
                    "{name}"
                );
                assert!(
                    o.contains("X-Ricevuta: avvenuta-consegna"),
                    "{name}: the whole message is carried"
                );
                assert!(
                    o.contains("quoted-printable"),
                    "{name}: 8-bit body made 7-bit"
                );
            }
            k => panic!("{name}: {k:?} must not carry the original"),
        }
    }
}

fn check_daticert(s: &Scenario, d: &Daticert) {
    let name = s.name;
    assert_eq!(d.mittente, "alice@pec.example.it");
    let dest: Vec<(&str, RecipientType)> = d
        .destinatari
        .iter()
        .map(|x| (x.address.as_str(), x.tipo))
        .collect();
    assert_eq!(
        dest,
        vec![
            ("bob@pec.example.net", RecipientType::Certificato),
            ("carol@example.com", RecipientType::Esterno),
            ("dave@pec.example.net", RecipientType::Certificato)
        ],
        "{name}"
    );
    assert_eq!(d.risposte, "alice@pec.example.it");
    assert_eq!(
        d.oggetto.as_deref(),
        Some("Contratto di fornitura n° 42 — firma")
    );
    assert_eq!(d.gestore_emittente, "PEC Example IT S.p.A.");
    assert_eq!(
        (
            d.data.giorno.as_str(),
            d.data.ora.as_str(),
            d.data.zona.as_str()
        ),
        ("03/06/2025", "10:11:12", "+0200")
    );
    assert_eq!(d.identificativo, PEC_ID);
    assert_eq!(
        d.msgid.as_deref(),
        Some("<20250603101109.12345@client.example.it>")
    );
    let (ricevuta, consegna, errore) = match s.kind {
        MessageKind::TransportEnvelope => (Some(ReceiptType::Breve), None, Errore::Nessuno),
        MessageKind::Delivery(t) => (Some(t), Some("bob@pec.example.net"), Errore::Nessuno),
        MessageKind::NonAcceptance => (None, None, Errore::Altro),
        MessageKind::NonAcceptanceVirus => (None, None, Errore::Virus),
        MessageKind::NonDelivery => (None, Some("bob@pec.example.net"), Errore::NoDest),
        MessageKind::NonDeliveryVirus | MessageKind::VirusDetection => {
            (None, Some("bob@pec.example.net"), Errore::Virus)
        }
        MessageKind::Timeout(_) => (None, Some("bob@pec.example.net"), Errore::Altro),
        _ => (None, None, Errore::Nessuno),
    };
    let consegna = if s.name == "delivery-sintetica-cc" {
        Some("dave@pec.example.net")
    } else {
        consegna
    };
    assert_eq!(d.ricevuta, ricevuta, "{name}");
    assert_eq!(d.consegna.as_deref(), consegna, "{name}");
    assert_eq!(d.errore, errore, "{name}");
    if s.kind == MessageKind::TakeCharge {
        assert_eq!(
            d.ricezione,
            vec!["bob@pec.example.net", "dave@pec.example.net"]
        );
    } else {
        assert!(d.ricezione.is_empty(), "{name}");
    }
    let _ = Ricevuta::ALL;
}

/// The decoded text/plain (Latin-1 decoded) of the readable part, and the HTML.
fn readable_texts(m: &mail_parser::Message<'_>) -> (String, String) {
    let plain = m
        .body_text(0)
        .map(|t| t.replace("\r\n", "\n"))
        .unwrap_or_default();
    let html = m.body_html(0).map(|t| t.to_string()).unwrap_or_default();
    (plain, html)
}

fn daticert_xml(m: &mail_parser::Message<'_>) -> Option<String> {
    m.attachments()
        .find(|a| a.attachment_name() == Some("daticert.xml"))
        .map(|a| String::from_utf8(a.contents().to_vec()).unwrap())
}

/// The access point's attachment warnings (issue 21): the header and the courtesy notice in
/// the signed readable text, the rest of the envelope unchanged; no warnings, same bytes.
#[test]
fn the_envelope_carries_attachment_warnings_only_when_there_are_some() {
    use pec::message::build::{Caution, CautionKind, ATTACHMENT_WARNING_HEADER};
    let pki = common::pki::shared();
    let ids = SequentialIds::new("opec1.20250603101112.test", "pec.example.it");
    let iss = issuer();
    let builder = Builder {
        issuer: &iss,
        signer: pki.hsm_signer(),
        ids: &ids,
    };
    let plain = builder
        .transport_envelope(&original(), &certification(), at())
        .unwrap();
    let none = builder
        .transport_envelope_with(&original(), &certification(), at(), &[])
        .unwrap();
    // (boundaries differ from build to build; the golden test pins the bytes)
    let fixed = |g: &Generated| -> Vec<(String, String)> {
        g.headers
            .iter()
            .filter(|(n, _)| n != "Content-Type")
            .cloned()
            .collect()
    };
    assert_eq!(fixed(&plain), fixed(&none));
    let text_of = |g: &Generated| {
        let bytes = g.to_bytes();
        let m = MessageParser::default().parse(&bytes).unwrap();
        m.body_text(0).unwrap().into_owned()
    };
    assert_eq!(text_of(&plain), text_of(&none));
    assert!(!plain
        .headers
        .iter()
        .any(|(n, _)| n == ATTACHMENT_WARNING_HEADER));

    let mut cautions: Vec<Caution> = (0..12)
        .map(|n| Caution {
            kind: CautionKind::Macro,
            name: format!("documento{n}.docm"),
        })
        .collect();
    cautions.push(Caution {
        kind: CautionKind::Encrypted,
        name: "riservato.zip > estratto.pdf".into(),
    });
    let warned = builder
        .transport_envelope_with(&original(), &certification(), at(), &cautions)
        .unwrap();
    let before = fixed(&plain);
    let extra: Vec<_> = fixed(&warned)
        .into_iter()
        .filter(|h| !before.contains(h))
        .collect();
    assert_eq!(
        extra,
        [(
            ATTACHMENT_WARNING_HEADER.to_string(),
            "macro, encrypted".to_string()
        )]
    );
    let bytes = warned.to_bytes();
    let parsed = MessageParser::default().parse(&bytes).unwrap();
    let text = parsed.body_text(0).unwrap().replace("\r\n", "\n");
    let expected_tail = "Il messaggio originale è incluso in allegato.\n\
Attenzione: il messaggio contiene allegati con macro, che possono eseguire codice quando vengono aperti; aprirli solo se si conosce e si attende il mittente:\n\
- documento0.docm\n- documento1.docm\n- documento2.docm\n- documento3.docm\n- documento4.docm\n\
- documento5.docm\n- documento6.docm\n- documento7.docm\n- documento8.docm\n- documento9.docm\n\
- e altri 2\n\
Attenzione: il messaggio contiene allegati cifrati o protetti da password, sui quali non è stato possibile il controllo antivirus:\n\
- riservato.zip > estratto.pdf\n\
Identificativo messaggio: ";
    assert!(text.contains(expected_tail), "{text}");
    // still a valid signed envelope
    let mut trust = TrustSet::new();
    trust.add(
        pki.provider_a_cert_der(),
        Some(ProviderInfo {
            name: iss.provider_name.clone(),
            mail_receipt: "ricevute@pec.example.it".into(),
            managed_domains: vec!["pec.example.it".into()],
        }),
    );
    assert!(matches!(
        classify(&bytes, &trust, at()),
        Classification::TransportEnvelope(_)
    ));
}

// SPDX-License-Identifier: GPL-3.0-or-later
//! The provider index in LDIF form (spec §7.1/§7.2): parsing, checks, and the round trip.

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use pec::crypto::testing;
use pec::index::ldif::{parse_ldif, write_ldif};
use pec::index::{sha1_hex_upper, IndexError, ProviderIndex, ProviderInfo, ProviderRecord};
use pec::message::kind::RecipientType;

/// Two provider certificates (DER) from the test PKI, made once per test binary.
fn certs() -> &'static (Vec<u8>, Vec<u8>) {
    static CERTS: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let pki = testing::make_test_pki(&dir.path().join("pki")).unwrap();
        let der = |p: &std::path::Path| {
            openssl::x509::X509::from_pem(&std::fs::read(p).unwrap())
                .unwrap()
                .to_der()
                .unwrap()
        };
        (der(&pki.it_cert), der(&pki.net_cert))
    })
}

/// Folds an LDIF line at `width` columns, the way exporters do.
fn fold(line: &str, width: usize) -> String {
    let mut out = String::new();
    let mut rest = line;
    let mut w = width;
    while rest.len() > w {
        let (h, t) = rest.split_at(w);
        out.push_str(h);
        out.push_str("\n ");
        rest = t;
        w = width - 1;
    }
    out.push_str(rest);
    out.push('\n');
    out
}

/// The spec §7.2 example entry, with a real certificate and its hash.
fn example_entry(cert: &[u8]) -> String {
    format!(
        "dn: providerName=Example PEC S.p.A.,o=postacert\n\
         objectclass: top\n\
         objectclass: provider\n\
         providerName: Example PEC S.p.A.\n\
         providerCertificateHash: {}\n\
         {}\
         mailReceipt: ricevute@pec.example.it\n\
         LDIFLocationURL: https://pec.example.it/igpec/example.ldif.p7m\n\
         managedDomains: pec.example.it\n\
         managedDomains: cert.customer.example.it\n\
         description: PEC service of Example\n",
        sha1_hex_upper(cert),
        fold(
            &format!("providerCertificate;binary:: {}", BASE64.encode(cert)),
            76
        ),
    )
}

fn example_record(cert: &[u8]) -> ProviderRecord {
    ProviderRecord {
        info: ProviderInfo {
            name: "Example PEC S.p.A.".into(),
            mail_receipt: "ricevute@pec.example.it".into(),
            managed_domains: vec!["pec.example.it".into(), "cert.customer.example.it".into()],
        },
        certificates: vec![cert.to_vec()],
    }
}

fn provider_error(text: &str) -> (usize, String, String) {
    match parse_ldif(text) {
        Err(IndexError::Provider {
            line,
            provider,
            message,
        }) => (line, provider, message),
        other => panic!("expected a provider error, got {other:?}"),
    }
}

fn syntax_error(text: &str) -> (usize, String) {
    match parse_ldif(text) {
        Err(IndexError::Syntax { line, message }) => (line, message),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn spec_example_with_directory_entry_and_version() {
    let (a, _) = certs();
    let text = format!(
        "version: 1\n\n\
         # the whole directory\n\
         dn: o=postacert\n\
         objectclass: organization\n\
         objectclass: LDIFLocationURLObject\n\
         o: postacert\n\
         LDIFLocationURL: https://index.example.it/igpec.ldif.p7m\n\
         \n{}",
        example_entry(a)
    );
    let records = parse_ldif(&text).unwrap();
    assert_eq!(records, vec![example_record(a)]);
}

#[test]
fn round_trip() {
    let (a, b) = certs();
    let records = vec![
        ProviderRecord {
            info: ProviderInfo {
                name: "Example PEC S.p.A.".into(),
                mail_receipt: "ricevute@pec.example.it".into(),
                managed_domains: vec!["pec.example.it".into(), "cert.customer.example.it".into()],
            },
            // renewal overlap: two certificates
            certificates: vec![a.clone(), b.clone()],
        },
        ProviderRecord {
            info: ProviderInfo {
                name: "Gestore, Più \"Certo\" + Sicuro ".into(),
                mail_receipt: "posta@pec.gestore.example.net".into(),
                managed_domains: vec!["pec.gestore.example.net".into()],
            },
            certificates: vec![b.clone()],
        },
        // a secondary environment of the first provider
        ProviderRecord {
            info: ProviderInfo {
                name: "Example PEC S.p.A.".into(),
                mail_receipt: "ricevute@pec2.example.it".into(),
                managed_domains: vec!["pec2.example.it".into()],
            },
            certificates: vec![b.clone()],
        },
    ];
    let text = write_ldif(&records);
    assert!(text.starts_with("version: 1\n\n"), "{text}");
    assert!(text.lines().all(|l| l.len() <= 76), "{text}");
    assert!(
        text.contains("providerUnit=pec2.example.it,providerName=Example PEC S.p.A.,o=postacert")
    );
    // the trailing space of the second name needs base64 in providerName; the DN escapes it
    let parsed = parse_ldif(&text).unwrap();
    // trailing spaces are not kept: values are trimmed on reading
    let mut expected = records.clone();
    expected[1].info.name = expected[1].info.name.trim().to_string();
    assert_eq!(parsed, expected);
    assert_eq!(parse_ldif(&write_ldif(&parsed)).unwrap(), parsed);
    assert_eq!(write_ldif(&[]), "version: 1\n");
}

#[test]
fn folded_lines_comments_and_crlf() {
    let (a, _) = certs();
    // fold everything at 20 columns, add a folded comment, and use CRLF line endings
    let mut text = String::from("# provider index\n #  continued comment\n");
    for l in example_entry(a).lines() {
        text.push_str(&fold(l, 20));
    }
    let text = text.replace('\n', "\r\n");
    assert_eq!(parse_ldif(&text).unwrap(), vec![example_record(a)]);
}

#[test]
fn base64_values() {
    let (a, _) = certs();
    let b64 = |s: &str| BASE64.encode(s.as_bytes());
    let text = example_entry(a)
        .replace(
            "dn: providerName=Example PEC S.p.A.,o=postacert",
            &format!("dn:: {}", b64("providerName=Gestore Qualità,o=postacert")),
        )
        .replace(
            "providerName: Example PEC S.p.A.",
            &format!("providerName:: {}", b64("Gestore Qualità")),
        )
        .replace(
            "mailReceipt: ricevute@pec.example.it",
            &format!("mailReceipt::{}", b64("ricevute@pec.example.it")),
        );
    let records = parse_ldif(&text).unwrap();
    assert_eq!(records[0].info.name, "Gestore Qualità");
    assert_eq!(records[0].info.mail_receipt, "ricevute@pec.example.it");

    let bad = example_entry(a).replace("mailReceipt: ricevute@pec.example.it", "mailReceipt:: %%%");
    let (line, message) = syntax_error(&bad);
    assert!(message.contains("invalid base64"), "{message}");
    assert_eq!(bad.lines().nth(line - 1).unwrap(), "mailReceipt:: %%%");
}

#[test]
fn hash_mismatch_names_the_provider() {
    let (a, b) = certs();
    let wrong = sha1_hex_upper(b);
    let text = example_entry(a).replace(&sha1_hex_upper(a), &wrong);
    let (line, provider, message) = provider_error(&text);
    assert_eq!(provider, "Example PEC S.p.A.");
    assert_eq!(line, 5, "the providerCertificateHash line");
    assert!(message.contains(&wrong), "{message}");
    let shown = parse_ldif(&text).unwrap_err().to_string();
    assert!(
        shown.starts_with("line 5: provider \"Example PEC S.p.A.\": providerCertificateHash"),
        "{shown}"
    );

    // lower-case hashes are fine (caseIgnoreIA5Match)
    let text = example_entry(a).replace(&sha1_hex_upper(a), &sha1_hex_upper(a).to_lowercase());
    assert_eq!(parse_ldif(&text).unwrap(), vec![example_record(a)]);
    // no hash at all: the attribute is required
    let text: String = example_entry(a)
        .lines()
        .filter(|l| !l.starts_with("providerCertificateHash"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (_, _, message) = provider_error(&text);
    assert_eq!(message, "missing providerCertificateHash");
}

#[test]
fn missing_or_repeated_required_attributes() {
    let (a, _) = certs();
    let without = |prefix: &str| -> String {
        example_entry(a)
            .lines()
            .filter(|l| !l.starts_with(prefix))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let text = format!("version: 1\n\n{}", without("mailReceipt"));
    let (line, provider, message) = provider_error(&text);
    assert_eq!((line, provider.as_str()), (3, "Example PEC S.p.A."));
    assert_eq!(message, "missing mailReceipt");

    let (_, _, message) = provider_error(&without("managedDomains"));
    assert_eq!(message, "missing managedDomains");
    let (_, _, message) = provider_error(&without("providerCertificate;"));
    assert_eq!(message, "missing providerCertificate");
    let (_, provider, message) = provider_error(&without("providerName"));
    assert_eq!(provider, "providerName=Example PEC S.p.A.,o=postacert");
    assert_eq!(message, "missing providerName");

    let twice = example_entry(a).replace(
        "mailReceipt: ricevute@pec.example.it\n",
        "mailReceipt: ricevute@pec.example.it\nmailReceipt: altro@pec.example.it\n",
    );
    let (_, _, message) = provider_error(&twice);
    assert!(message.contains("single-valued"), "{message}");

    let bracketed = example_entry(a).replace(
        "mailReceipt: ricevute@pec.example.it",
        "mailReceipt: <ricevute@pec.example.it>",
    );
    let (_, _, message) = provider_error(&bracketed);
    assert!(message.contains("not a bare address"), "{message}");

    let junk_cert = example_entry(a).replace(
        &fold(
            &format!("providerCertificate;binary:: {}", BASE64.encode(a)),
            76,
        ),
        "providerCertificate;binary:: aGVsbG8=\n",
    );
    let (_, _, message) = provider_error(&junk_cert);
    assert!(message.contains("not a DER X.509 certificate"), "{message}");
}

#[test]
fn attribute_names_are_case_insensitive() {
    let (a, _) = certs();
    let text = format!(
        "DN: providerName=Example PEC S.p.A.,o=postacert\n\
         OBJECTCLASS: top\n\
         objectClass: Provider\n\
         PROVIDERNAME: Example PEC S.p.A.\n\
         providercertificatehash: {}\n\
         ProviderCertificate;BINARY:: {}\n\
         MailReceipt: ricevute@pec.example.it\n\
         MANAGEDDOMAINS: PEC.Example.IT\n\
         1.3.6.1.4.1.16572.2.2.5: Cert.Customer.Example.IT\n",
        sha1_hex_upper(a).to_lowercase(),
        BASE64.encode(a),
    );
    assert_eq!(parse_ldif(&text).unwrap(), vec![example_record(a)]);
}

#[test]
fn secondary_entry_is_a_record() {
    let (a, b) = certs();
    let secondary = format!(
        "dn: providerUnit=Ambiente 2,providerName=Example PEC S.p.A.,o=postacert\n\
         objectclass: top\n\
         objectclass: provider\n\
         providerName: Example PEC S.p.A.\n\
         providerUnit: Ambiente 2\n\
         providerCertificateHash: {}\n\
         providerCertificate;binary:: {}\n\
         mailReceipt: ricevute@pec2.example.it\n\
         managedDomains: pec2.example.it\n",
        sha1_hex_upper(b),
        BASE64.encode(b)
    );
    let text = format!("{}\n\n\n{secondary}", example_entry(a));
    let records = parse_ldif(&text).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].info.name, "Example PEC S.p.A.");
    assert_eq!(records[1].info.mail_receipt, "ricevute@pec2.example.it");
    assert_eq!(records[1].certificates, vec![b.clone()]);

    let index = ProviderIndex::from_records(records);
    assert_eq!(
        index
            .provider_for_domain("PEC2.example.it")
            .unwrap()
            .mail_receipt,
        "ricevute@pec2.example.it"
    );
    assert_eq!(
        index
            .provider_for_domain("pec.example.it")
            .unwrap()
            .mail_receipt,
        "ricevute@pec.example.it"
    );
    assert_eq!(
        index.recipient_type("x@pec2.example.it"),
        RecipientType::Certificato
    );
    assert_eq!(
        index.recipient_type("x@example.com"),
        RecipientType::Esterno
    );
    assert_eq!(index.trust().len(), 2);
    assert!(index.trust().find(b).is_some());
}

#[test]
fn syntax_errors_carry_line_numbers() {
    let (a, _) = certs();
    let entry = example_entry(a);

    let (line, m) = syntax_error(" leading continuation\n");
    assert_eq!(line, 1, "{m}");
    let (line, m) = syntax_error(&format!("{entry}\n no line to continue\n"));
    assert!(line > 10 && m.contains("continuation"), "{line} {m}");
    let (line, m) = syntax_error(&entry.replace("objectclass: top", "objectclass top"));
    assert_eq!(line, 2, "{m}");
    let (line, m) = syntax_error("version: 2\n\n");
    assert_eq!(line, 1, "{m}");
    let (line, m) = syntax_error(&format!("\n\n{}", entry.replace("dn: ", "cn: ")));
    assert!(line == 3 && m.contains("dn:"), "{line} {m}");
    let (line, m) = syntax_error(&entry.replace("objectclass: top\n", "changetype: add\n"));
    assert!(line == 2 && m.contains("change records"), "{line} {m}");
    let (line, m) = syntax_error(&entry.replace(
        "description: PEC service of Example",
        "description:< file:///etc/passwd",
    ));
    assert!(m.contains("URL"), "{line} {m}");
    let (line, m) = syntax_error(&format!("{entry}\n{entry}"));
    assert!(m.contains("duplicate entry"), "{line} {m}");
    // two entries without a blank line between them
    let (_, m) = syntax_error(&format!("{entry}{entry}"));
    assert!(m.contains("second \"dn:\""), "{m}");

    // a provider DN without the provider objectclass is an error, not silently skipped
    let (line, _, m) = provider_error(&entry.replace("objectclass: provider\n", ""));
    assert!(line == 1 && m.contains("objectclass: provider"), "{m}");
}

#[test]
fn load_ldif_names_file_and_line() {
    let (a, _) = certs();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("index.ldif");
    std::fs::write(&good, write_ldif(&[example_record(a)])).unwrap();
    let index = ProviderIndex::load_ldif(&good).unwrap();
    assert_eq!(index.providers().len(), 1);
    assert!(index.trust().find(a).is_some());

    let bad = dir.path().join("bad.ldif");
    let text = example_entry(a).replace("mailReceipt:", "mailReceipt");
    let line = 1 + text
        .lines()
        .position(|l| l.starts_with("mailReceipt"))
        .unwrap();
    std::fs::write(&bad, &text).unwrap();
    let e = ProviderIndex::load_ldif(&bad).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: line {line}: expected", bad.display())),
        "{e}"
    );

    let e = ProviderIndex::load_ldif(dir.path().join("missing.ldif"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing.ldif") && e.starts_with("cannot read"),
        "{e}"
    );
}

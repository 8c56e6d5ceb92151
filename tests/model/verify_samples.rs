// SPDX-License-Identifier: GPL-3.0-or-later
//! S/MIME verification and classification against the real provider samples
//! (`shared/pec-samples`, see its README "Verification facts").

use crate::samples;
use samples::{namirial_envelope, NAMIRIAL};

use std::path::Path;

use openssl::x509::X509;
use pec::crypto::verify::{
    verify_smime, verify_smime_with_chain, ChainPolicy, ChainStatus, VerifyError,
};
use pec::index::{ProviderInfo, TrustSet};
use pec::message::classify::{classify, Classification};
use pec::message::kind::{ReceiptType, RecipientType, Ricevuta, Tipo};
use pec::message::time::{Clock, Instant, SystemClock};
use sha1::{Digest, Sha1};

const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Envelope,
    Receipt(Ricevuta),
}

struct Sample {
    file: &'static str,
    pem: &'static str,
    /// The message's own date (Date: header), as for `--at`.
    at: &'static str,
    /// README: SHA-1 of the signed content (= messageDigest).
    content_sha1: &'static str,
    /// README: SHA-1 of the signer certificate.
    signer_sha1: &'static str,
    expect: Expect,
    identificativo: &'static str,
    mittente: &'static str,
}

const ARUBA_SHA1: &str = "AAA71BFD2DBC9FE67AA23C9F33AAF3316DF1AA66";
const NAMIRIAL_SHA1: &str = "61A9E2865EEEE6C42CB8756B86567337C64CDEC3";

const SAMPLES: [Sample; 5] = [
    Sample {
        file: "aruba-2014-busta-trasporto-1.eml",
        pem: "aruba-2014-signer-chain.pem",
        at: "2014-11-07T15:52:00Z",
        content_sha1: "03e5d9a91e97e0eb7a3373edc713ca1cf8e08526",
        signer_sha1: ARUBA_SHA1,
        expect: Expect::Envelope,
        identificativo: "opec275.20141107165200.03048.08.1.17@pec.aruba.it",
        mittente: "thinkstudio@pec.it",
    },
    Sample {
        file: "aruba-2014-busta-trasporto-2.eml",
        pem: "aruba-2014-signer-chain.pem",
        at: "2014-11-27T14:12:16Z",
        content_sha1: "6e831389f7e51c9410070eb3c12a597847750d87",
        signer_sha1: ARUBA_SHA1,
        expect: Expect::Envelope,
        identificativo: "opec275.20141127151216.06559.08.1.17@pec.aruba.it",
        mittente: "thinkstudio@pec.it",
    },
    Sample {
        file: "aruba-2014-ricevuta-accettazione.eml",
        pem: "aruba-2014-signer-chain.pem",
        at: "2014-11-14T17:26:32Z",
        content_sha1: "c305c765605fbcf6d4391272dd67e4dabd839915",
        signer_sha1: ARUBA_SHA1,
        expect: Expect::Receipt(Ricevuta::Accettazione),
        identificativo: "opec275.20141114182632.23219.07.1.48@pec.aruba.it",
        mittente: "l.battistini@pec.it",
    },
    Sample {
        file: "aruba-2014-ricevuta-avvenuta-consegna-completa.eml",
        pem: "aruba-2014-signer-chain.pem",
        at: "2014-11-14T17:26:32Z",
        content_sha1: "f866ec2d866ef8aff2b19a3c7f8e9b8f77e3114d",
        signer_sha1: ARUBA_SHA1,
        expect: Expect::Receipt(Ricevuta::AvvenutaConsegna),
        identificativo: "opec275.20141114182632.23219.07.1.48@pec.aruba.it",
        mittente: "l.battistini@pec.it",
    },
    Sample {
        file: NAMIRIAL,
        pem: "namirial-2024-signer-chain.pem",
        at: "2024-12-04T23:02:10Z",
        content_sha1: "98c56aec067a25b47c74e8d3aebf28f208ca2cbc",
        signer_sha1: NAMIRIAL_SHA1,
        expect: Expect::Envelope,
        identificativo: "opec21192.20241205000210.24820.46.1.184@sicurezzapostale.it",
        mittente: "altea.l@namirialpec.it",
    },
];

fn instant(s: &str) -> Instant {
    Instant::parse_cli(s).unwrap_or_else(|| panic!("bad instant {s}"))
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The message as classified: the file, or for Namirial the rebuilt envelope.
fn message(dir: &Path, s: &Sample) -> Vec<u8> {
    if s.file == NAMIRIAL {
        namirial_envelope(dir)
    } else {
        read(dir, s.file)
    }
}

fn pem_certs(dir: &Path, pem: &str) -> Vec<Vec<u8>> {
    X509::stack_from_pem(&read(dir, pem))
        .unwrap()
        .iter()
        .map(|c| c.to_der().unwrap())
        .collect()
}

fn signer_der(dir: &Path, s: &Sample) -> Vec<u8> {
    pem_certs(dir, s.pem).remove(0)
}

fn trust_of(ders: &[Vec<u8>]) -> TrustSet {
    let mut t = TrustSet::new();
    for d in ders {
        t.add(d.clone(), None);
    }
    t
}

fn sha1_hex(b: &[u8]) -> String {
    hex::encode(Sha1::digest(b))
}

/// Positions in a multipart/signed sample, found line by line (LF or CRLF).
struct Layout {
    /// Start of the signed content (after the first delimiter line).
    start: usize,
    /// End of the signed content (before the line break of the second delimiter line).
    end: usize,
    /// Start of the signature part (after the second delimiter line).
    sig_start: usize,
    /// End of the signature part (before the line break of the close delimiter line).
    sig_end: usize,
    /// Line break used after the close delimiter.
    newline: &'static str,
    boundary: String,
}

fn layout(raw: &[u8]) -> Layout {
    let text = String::from_utf8_lossy(raw);
    let ct_at = text.find("multipart/signed").unwrap();
    let b_at = ct_at + text[ct_at..].find("boundary=\"").unwrap() + "boundary=\"".len();
    let boundary = text[b_at..b_at + text[b_at..].find('"').unwrap()].to_string();
    let open = format!("--{boundary}");
    let close = format!("--{boundary}--");
    // (line start, next line start, line break length before the line)
    let mut delims = Vec::new();
    let mut pos = 0;
    let mut newline = "\n";
    while pos < raw.len() {
        let next = raw[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| pos + i + 1);
        let line = text.get(pos..next).unwrap_or("");
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if trimmed == open || trimmed == close {
            let brk = if pos >= 2 && &raw[pos - 2..pos] == b"\r\n" {
                2
            } else {
                1
            };
            if line.ends_with("\r\n") {
                newline = "\r\n";
            }
            delims.push((pos, next, brk));
        }
        pos = next;
    }
    assert!(delims.len() >= 3, "not a multipart/signed sample");
    Layout {
        start: delims[0].1,
        end: delims[1].0 - delims[1].2,
        sig_start: delims[1].1,
        sig_end: delims[2].0 - delims[2].2,
        newline,
        boundary,
    }
}

fn crlf(lf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lf.len() * 2);
    let mut prev = 0;
    for &b in lf {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

fn lf_only(raw: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(raw)
        .replace("\r\n", "\n")
        .into_bytes()
}

#[test]
fn every_signed_sample_verifies_and_classifies() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    for s in &SAMPLES {
        let raw = message(&dir, s);
        let signer = signer_der(&dir, s);
        let trust = trust_of(std::slice::from_ref(&signer));
        let c = classify(&raw, &trust, instant(s.at));
        let m = match (&c, s.expect) {
            (Classification::TransportEnvelope(m), Expect::Envelope) => m,
            (Classification::Receipt(r, m), Expect::Receipt(e)) if *r == e => m,
            _ => panic!("{}: {c:?}", s.file),
        };
        let v = &m.verified;
        assert_eq!(sha1_hex(&v.content), s.content_sha1, "{}", s.file);
        assert_eq!(v.signer_sha1, s.signer_sha1, "{}", s.file);
        assert_eq!(v.signer_der, signer, "{}: CMS signer = PEM", s.file);
        assert!(v.trusted);
        assert_eq!(v.digest, "sha1");
        assert_eq!(v.chain, ChainStatus::NotChecked);
        assert!(v.signing_time.is_some());
        assert!(v.not_before <= instant(s.at) && instant(s.at) <= v.not_after);

        let d = &m.daticert;
        assert_eq!(d.identificativo, s.identificativo, "{}", s.file);
        assert_eq!(d.mittente, s.mittente, "{}", s.file);
        assert_eq!(d.errore.as_str(), "nessuno");
        assert_eq!(m.riferimento_message_id, d.msgid, "{}", s.file);
        match s.expect {
            Expect::Envelope => {
                assert_eq!(d.tipo, Tipo::PostaCertificata);
                assert_eq!(d.ricevuta, Some(ReceiptType::Completa));
                assert!(m.has_postacert);
                // The envelope's Message-ID is the PEC identifier.
                assert_eq!(m.message_id.as_deref(), Some(s.identificativo));
                assert!(m.notes.iter().any(|n| n.contains("managed-domain check")));
            }
            Expect::Receipt(Ricevuta::Accettazione) => {
                assert_eq!(d.tipo, Tipo::Accettazione);
                assert!(!m.has_postacert);
                assert_eq!(d.ricevuta, None);
                assert_eq!(d.destinatari[0].address, "thinkstudio@pec.it");
                assert_eq!(d.destinatari[0].tipo, RecipientType::Certificato);
            }
            Expect::Receipt(_) => {
                assert_eq!(d.tipo, Tipo::AvvenutaConsegna);
                assert_eq!(d.ricevuta, Some(ReceiptType::Completa));
                assert_eq!(d.consegna.as_deref(), Some("thinkstudio@pec.it"));
                assert!(m.has_postacert);
            }
        }
        if s.file.starts_with("aruba") {
            assert_eq!(d.gestore_emittente, "ARUBA PEC S.p.A.");
            assert_eq!(
                v.signer_email.as_deref(),
                Some("posta-certificata@pec.aruba.it")
            );
            assert_eq!(m.from.as_deref(), Some("posta-certificata@pec.aruba.it"));
        } else {
            assert_eq!(d.gestore_emittente, "Namirial S.p.A.");
            assert_eq!(d.destinatari.len(), 7);
            assert!(d
                .destinatari
                .iter()
                .all(|x| x.tipo == RecipientType::Esterno));
            assert_eq!(d.oggetto.as_deref(), Some("Norah Colly"));
            assert_eq!(m.subject.as_deref(), Some("POSTA CERTIFICATA: Norah Colly"));
            assert_eq!(
                v.signer_email.as_deref(),
                Some("posta-certificata@sicurezzapostale.it")
            );
            assert!(v
                .signer_subject
                .starts_with("CN=Posta Certificata Namirial S.p.A., "));
        }
    }
}

#[test]
fn aruba_envelope_headers() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    let s = &SAMPLES[0];
    let trust = trust_of(&[signer_der(&dir, s)]);
    let c = classify(&read(&dir, s.file), &trust, instant(s.at));
    let Classification::TransportEnvelope(m) = c else {
        panic!("{c:?}");
    };
    // Aruba writes `X-Tiporicevuta` (header names are case-insensitive).
    assert_eq!(m.tipo_ricevuta, Some(ReceiptType::Completa));
    assert_eq!(
        m.subject.as_deref(),
        Some("POSTA CERTIFICATA: Re: archetipo")
    );
    assert_eq!(m.daticert.oggetto.as_deref(), Some("Re: archetipo"));
    assert!(!m.security_flag);
    assert_eq!(m.mittente_header, None);
    // Envelope 2 has no X-TipoRicevuta at all.
    let s2 = &SAMPLES[1];
    let c = classify(&read(&dir, s2.file), &trust, instant(s2.at));
    assert_eq!(c.pec().map(|m| m.tipo_ricevuta), Some(None));
}

#[test]
fn namirial_signed_entity_alone_has_no_class_header() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    let s = &SAMPLES[4];
    let trust = trust_of(&[signer_der(&dir, s)]);
    match classify(&read(&dir, NAMIRIAL), &trust, instant(s.at)) {
        Classification::SignedButWrong { verified, reason } => {
            assert_eq!(verified.signer_sha1, NAMIRIAL_SHA1);
            assert!(
                reason.contains("neither X-Trasporto nor X-Ricevuta"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn lf_and_crlf_inputs_give_the_same_signed_content() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    for s in &SAMPLES {
        let raw = message(&dir, s);
        let trust = trust_of(&[signer_der(&dir, s)]);
        for variant in [crlf(&raw), lf_only(&raw)] {
            let v = verify_smime(&variant, &trust, instant(s.at))
                .unwrap_or_else(|e| panic!("{}: {e}", s.file));
            assert_eq!(sha1_hex(&v.content), s.content_sha1, "{}", s.file);
            assert!(
                classify(&variant, &trust, instant(s.at)).pec().is_some(),
                "{}",
                s.file
            );
        }
    }
}

#[test]
fn chain_to_system_roots_at_the_message_date() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    let Ok(bundle) = std::fs::read(CA_BUNDLE) else {
        eprintln!("SKIPPED: chain check, {CA_BUNDLE} not found");
        return;
    };
    // Today's providers (Namirial: AgID CA1 -> Actalis) must carry emailProtection; the
    // 2014 Aruba certificate (DigitPA CA1, no extendedKeyUsage) verifies under the same
    // roots given as archive anchors.
    let policy = ChainPolicy::from_pem(&bundle, true).unwrap();
    let archive = ChainPolicy {
        enforce: true,
        ..ChainPolicy::default()
    }
    .with_archive_pem(&bundle)
    .unwrap();
    for s in &SAMPLES {
        let raw = message(&dir, s);
        let trust = trust_of(&[signer_der(&dir, s)]);
        let p = if s.file.starts_with("aruba") {
            &archive
        } else {
            &policy
        };
        let v = verify_smime_with_chain(&raw, &trust, instant(s.at), p)
            .unwrap_or_else(|e| panic!("{}: {e}", s.file));
        assert_eq!(v.chain, ChainStatus::Valid, "{}", s.file);
        if s.file.starts_with("aruba") {
            match verify_smime_with_chain(&raw, &trust, instant(s.at), &policy) {
                Err(VerifyError::Chain(r)) => assert!(r.contains("extendedKeyUsage"), "{r}"),
                other => panic!("{other:?}"),
            }
        }
    }
    // Aruba's signer does not chain to AgID CA1 alone.
    let agid = pem_certs(&dir, "namirial-2024-signer-chain.pem").remove(1);
    let wrong = ChainPolicy {
        anchors: vec![agid],
        enforce: true,
        ..ChainPolicy::default()
    };
    let s = &SAMPLES[2];
    let raw = read(&dir, s.file);
    let trust = trust_of(&[signer_der(&dir, s)]);
    let wrong = ChainPolicy {
        archive_anchors: wrong.anchors.clone(),
        ..wrong
    };
    match verify_smime_with_chain(&raw, &trust, instant(s.at), &wrong) {
        Err(VerifyError::Chain(r)) => assert!(r.contains("issuer"), "{r}"),
        other => panic!("{other:?}"),
    }
    // Reported, not fatal, when not enforced.
    let lenient = ChainPolicy {
        enforce: false,
        ..wrong
    };
    let v = verify_smime_with_chain(&raw, &trust, instant(s.at), &lenient).unwrap();
    assert!(matches!(v.chain, ChainStatus::Invalid(_)));
}

#[test]
fn expired_at_today_is_not_pec() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    // Namirial's certificate is valid until 2026-09-27: use today or a later date.
    let after_namirial = instant("2026-09-28");
    let now = SystemClock.now().max(after_namirial);
    for s in &SAMPLES {
        let trust = trust_of(&[signer_der(&dir, s)]);
        match classify(&message(&dir, s), &trust, now) {
            Classification::NotPec { reason } => {
                assert!(reason.contains("expired"), "{}: {reason}", s.file)
            }
            other => panic!("{}: {other:?}", s.file),
        }
    }
    // And before the validity.
    let s = &SAMPLES[4];
    let trust = trust_of(&[signer_der(&dir, s)]);
    let r = verify_smime(&message(&dir, s), &trust, instant("2023-01-01"));
    assert!(matches!(r, Err(VerifyError::NotYetValid { .. })), "{r:?}");
}

#[test]
fn unknown_signer_is_not_pec() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    let empty = TrustSet::new();
    for (i, s) in SAMPLES.iter().enumerate() {
        let raw = message(&dir, s);
        match classify(&raw, &empty, instant(s.at)) {
            Classification::NotPec { reason } => {
                assert!(reason.starts_with("unknown signer"), "{reason}");
                assert!(reason.contains(s.signer_sha1), "{reason}");
            }
            other => panic!("{}: {other:?}", s.file),
        }
        // The other provider's certificate does not help.
        let other = &SAMPLES[(i + 4) % SAMPLES.len()];
        if other.pem != s.pem {
            let trust = trust_of(&[signer_der(&dir, other)]);
            let r = verify_smime(&raw, &trust, instant(s.at));
            assert!(matches!(r, Err(VerifyError::UnknownSigner { .. })), "{r:?}");
        }
        // Neither does the issuing CA (trust is the provider certificate itself).
        let ca = pem_certs(&dir, s.pem).remove(1);
        let r = verify_smime(&raw, &trust_of(&[ca]), instant(s.at));
        assert!(matches!(r, Err(VerifyError::UnknownSigner { .. })), "{r:?}");
    }
}

#[test]
fn one_byte_changed_in_the_signed_content_is_refused() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    for s in &SAMPLES {
        let raw = message(&dir, s);
        let Layout { start, end, .. } = layout(&raw);
        let trust = trust_of(&[signer_der(&dir, s)]);
        // A letter near the middle, then one in the first line of the content.
        for pos in [(start + end) / 2, start + 3] {
            let pos = (pos..end).find(|&i| raw[i].is_ascii_alphabetic()).unwrap();
            let mut t = raw.clone();
            t[pos] ^= 0x20; // flip case
            match classify(&t, &trust, instant(s.at)) {
                Classification::NotPec { reason } => {
                    assert!(
                        reason.starts_with("bad signature: content altered"),
                        "{}: {reason}",
                        s.file
                    )
                }
                other => panic!("{}: {other:?}", s.file),
            }
        }
    }
}

#[test]
fn signature_swapped_with_another_sample_is_refused() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    let mut all = Vec::new();
    for s in &SAMPLES {
        all.push(signer_der(&dir, s));
    }
    let trust = trust_of(&all);
    for (i, s) in SAMPLES.iter().enumerate() {
        let a = message(&dir, s);
        let donor = &SAMPLES[(i + 1) % SAMPLES.len()];
        let b = message(&dir, donor);
        let la = layout(&a);
        let lb = layout(&b);
        // a's message up to and including its second delimiter line, then b's smime.p7s
        // part, then a's close delimiter.
        let mut t = a[..la.sig_start].to_vec();
        t.extend_from_slice(&b[lb.sig_start..lb.sig_end]);
        t.extend_from_slice(format!("{nl}--{}--{nl}", la.boundary, nl = la.newline).as_bytes());
        let r = verify_smime(&t, &trust, instant(s.at));
        assert!(
            matches!(&r, Err(VerifyError::BadSignature(m)) if m.contains("content altered")),
            "{} with {}: {r:?}",
            s.file,
            donor.file
        );
        assert!(matches!(
            classify(&t, &trust, instant(s.at)),
            Classification::NotPec { .. }
        ));
    }
}

#[test]
fn mailman_wrapped_envelope_is_not_signed_at_top_level() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    let s = &SAMPLES[4];
    let trust = trust_of(&[signer_der(&dir, s)]);
    let raw = read(&dir, "namirial-2024-busta-trasporto-via-mailman.eml");
    match classify(&raw, &trust, instant(s.at)) {
        Classification::NotPec { reason } => {
            assert!(reason.starts_with("not signed"), "{reason}");
            assert!(reason.contains("multipart/mixed"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unsigned_mail_with_class_headers_is_not_pec() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    let s = &SAMPLES[3];
    let trust = trust_of(&[signer_der(&dir, s)]);
    // The receipt's own header and readable text, without the signature wrapper.
    let raw = read(&dir, s.file);
    let text = String::from_utf8_lossy(&raw);
    let header_end = text.find("Content-Type: multipart/signed").unwrap();
    let forged = format!(
        "{}Content-Type: text/plain\n\nIl giorno 14/11/2014 il messaggio e' stato consegnato\n",
        &text[..header_end]
    );
    assert!(forged.contains("X-Ricevuta: avvenuta-consegna"));
    match classify(forged.as_bytes(), &trust, instant(s.at)) {
        Classification::NotPec { reason } => assert!(reason.starts_with("not signed"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

/// Headers are not signed: changing them on a genuine receipt keeps the signature valid but
/// breaks the formal checks.
#[test]
fn edited_class_headers_on_signed_messages_are_signed_but_wrong() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    let s = &SAMPLES[2]; // accettazione
    let trust = trust_of(&[signer_der(&dir, s)]);
    let raw = String::from_utf8(lf_only(&read(&dir, s.file))).unwrap();
    let cases = [
        (
            raw.replace("X-Ricevuta: accettazione", "X-Ricevuta: avvenuta-consegna"),
            "does not match the header",
        ),
        (
            raw.replace(
                "X-Ricevuta: accettazione",
                "X-Ricevuta: accettazione\nX-Trasporto: posta-certificata",
            ),
            "exactly one class header",
        ),
        (
            raw.replace("X-Ricevuta: accettazione", "X-Trasporto: errore"),
            "anomaly envelope",
        ),
        (
            raw.replace("X-Ricevuta: accettazione", "X-Ricevuta: consegna"),
            "not one of the seven",
        ),
        (raw.replace("X-Ricevuta: accettazione\n", ""), "neither"),
    ];
    for (msg, want) in cases {
        match classify(msg.as_bytes(), &trust, instant(s.at)) {
            Classification::SignedButWrong { reason, .. } => {
                assert!(reason.contains(want), "want {want:?}, got {reason}")
            }
            other => panic!("{other:?}"),
        }
    }
    // Lower-case header name and value: still the same receipt.
    let lower = raw.replace("X-Ricevuta: accettazione", "x-ricevuta: Accettazione");
    assert!(matches!(
        classify(lower.as_bytes(), &trust, instant(s.at)),
        Classification::Receipt(Ricevuta::Accettazione, _)
    ));
}

#[test]
fn provider_managed_domains() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    let aruba = |domains: &[&str]| {
        let mut t = TrustSet::new();
        t.add(
            signer_der(&dir, &SAMPLES[0]),
            Some(ProviderInfo {
                name: "ARUBA PEC S.p.A.".into(),
                mail_receipt: "posta-certificata@pec.aruba.it".into(),
                managed_domains: domains.iter().map(|d| d.to_string()).collect(),
            }),
        );
        t
    };
    let s = &SAMPLES[0];
    let good = aruba(&["pec.aruba.it", "pec.it"]);
    match classify(&read(&dir, s.file), &good, instant(s.at)) {
        Classification::TransportEnvelope(m) => {
            assert!(m.notes.is_empty(), "{:?}", m.notes);
            assert_eq!(
                m.verified.provider.as_ref().map(|p| p.name.as_str()),
                Some("ARUBA PEC S.p.A.")
            );
        }
        other => panic!("{other:?}"),
    }
    let bad = aruba(&["other.example.it"]);
    match classify(&read(&dir, s.file), &bad, instant(s.at)) {
        Classification::SignedButWrong { reason, .. } => {
            assert!(
                reason.contains("\"pec.it\"") && reason.contains("not managed"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    // Receipts: logged only.
    let r = &SAMPLES[2];
    match classify(&read(&dir, r.file), &bad, instant(r.at)) {
        Classification::Receipt(_, m) => {
            assert!(
                m.notes.iter().any(|n| n.contains("logged only")),
                "{:?}",
                m.notes
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn truncated_samples_never_verify_and_never_panic() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    for s in &SAMPLES {
        let raw = message(&dir, s);
        let trust = trust_of(&[signer_der(&dir, s)]);
        // Cut everywhere after the signed content (signature part damaged or close
        // delimiter missing) and at a coarse stride before it.
        let Layout { start, end, .. } = layout(&raw);
        let cuts = (0..end)
            .step_by(211)
            .chain(end..raw.len().saturating_sub(4))
            .chain([start, end]);
        for cut in cuts {
            let r = verify_smime(&raw[..cut], &trust, instant(s.at));
            assert!(r.is_err(), "{} cut at {cut}", s.file);
        }
    }
}

/// The real samples with revocation checking on, under the default grace policy, at their
/// dates. Offline (no CRL or OCSP server reachable, the usual case here) every chain's
/// status is unknown and accepted within the grace window; the Aruba certificate names no
/// distribution point or responder at all, so under the strict policy it is not verified.
#[test]
fn samples_verify_at_their_dates_with_revocation_checking() {
    use pec::crypto::revocation::{
        RevocationChecker, RevocationMode, RevocationSettings, RevocationStatus,
    };
    use std::sync::Arc;
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    let Ok(bundle) = std::fs::read(CA_BUNDLE) else {
        eprintln!("SKIPPED: revocation on the samples, {CA_BUNDLE} not found");
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let settings = |mode| RevocationSettings {
        mode,
        cache_dir: Some(cache.path().to_path_buf()),
        fetch_timeout: std::time::Duration::from_secs(3),
        ..RevocationSettings::default()
    };
    let checker = Arc::new(RevocationChecker::new(settings(RevocationMode::Grace)));
    let today = ChainPolicy::from_pem(&bundle, true)
        .unwrap()
        .with_revocation(checker.clone());
    let archive = ChainPolicy {
        enforce: true,
        ..ChainPolicy::default()
    }
    .with_archive_pem(&bundle)
    .unwrap()
    .with_revocation(checker);
    for s in &SAMPLES {
        let raw = message(&dir, s);
        let trust = trust_of(&[signer_der(&dir, s)]);
        let aruba = s.file.starts_with("aruba");
        let p = if aruba { &archive } else { &today };
        let v = verify_smime_with_chain(&raw, &trust, instant(s.at), p)
            .unwrap_or_else(|e| panic!("{}: {e}", s.file));
        assert_eq!(v.chain, ChainStatus::Valid, "{}", s.file);
        match (&v.revocation, aruba) {
            (RevocationStatus::Unknown { reason }, true) => assert!(
                reason.contains("Posta Certificata ARUBA PEC")
                    && reason.contains("names no crl distribution point"),
                "{reason}"
            ),
            (RevocationStatus::Unknown { .. } | RevocationStatus::Good { .. }, false) => {}
            (other, _) => panic!("{}: {other:?}", s.file),
        }
    }
    let strict = ChainPolicy {
        enforce: true,
        ..ChainPolicy::default()
    }
    .with_archive_pem(&bundle)
    .unwrap()
    .with_revocation(Arc::new(RevocationChecker::new(settings(
        RevocationMode::Strict,
    ))));
    let s = &SAMPLES[0];
    let trust = trust_of(&[signer_der(&dir, s)]);
    match verify_smime_with_chain(&message(&dir, s), &trust, instant(s.at), &strict) {
        Err(VerifyError::RevocationUnknown(r)) => assert!(r.contains("strict"), "{r}"),
        other => panic!("{other:?}"),
    }
}

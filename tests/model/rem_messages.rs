// SPDX-License-Identifier: GPL-3.0-or-later
//! REM messages against the ETSI EN 319 532-4 and AgID REM-Policy-IT examples
//! (`../shared/rem-kit`, or `$PEC_REM_KIT`): every message classified as its file name
//! says, its S/MIME verified with the kit PKI, its digest checked; altered copies refused;
//! the original's preparation and digest reproduced; what we compose compared with the
//! kit's and verified by the system `openssl`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use pec::crypto::verify::{ChainPolicy, ChainStatus, VerifyOptions};
use pec::crypto::VerifyError;
use pec::message::time::Instant;
use pec::rem::codes::Event;
use pec::rem::compose::{
    prepare_original, Composer, EvidenceAttachment, Extension, Provider, Receipt, Submission,
};
use pec::rem::message::{
    self, check_digest_of, is_rem, DigestAlgorithm, DigestError, MessageType, RemError,
    POLICY_AGID, POLICY_REM_BASELINE,
};

fn kit() -> Option<PathBuf> {
    crate::samples::rem_kit_dir()
}

fn agid(kit: &Path) -> PathBuf {
    kit.join("agid-rem-policy-it/Intra-REM-flow")
}

fn etsi(kit: &Path) -> PathBuf {
    kit.join("etsi-en-319-532-4/INFORMATIVE-EXAMPLES")
}

/// Anchors of the message's PKI: the kit's root and intermediate.
fn chain_for(kit: &Path, file: &Path) -> ChainPolicy {
    let (root, inter) = if file.starts_with(kit.join("agid-rem-policy-it")) {
        let c = kit.join("agid-rem-policy-it/certificates");
        (
            c.join("REM-ROOT-CA.crt"),
            c.join("REM-POLICY-IT-INTERMEDIATE-CERTIFICATE.crt"),
        )
    } else {
        let c = etsi(kit).join("CERTIFICATES");
        (c.join("REM-ROOT-CA.crt"), c.join("REM-INTERMEDIATE-CA.crt"))
    };
    let mut pem = std::fs::read(root).unwrap();
    pem.extend(std::fs::read(inter).unwrap());
    ChainPolicy::from_pem(&pem, true).unwrap()
}

fn at() -> Instant {
    // Within every kit certificate's validity (2022–2035).
    Instant::parse_cli("2025-01-01T00:00:00Z").unwrap()
}

fn emls(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            emls(&p, out);
        } else if p.extension().is_some_and(|x| x == "eml") {
            out.push(p);
        }
    }
}

/// Expected (message type, event, code) from a kit file name: `REM_Dispatch.RA01.eml`,
/// `REM_RelayFailure1,2.RB07.eml`, `TRY...REM_RelayAcceptance3.RB01.eml`; `None` for an
/// original (not REM).
fn expected(file: &Path) -> Option<(MessageType, Event, String)> {
    let name = file.file_name()?.to_str()?;
    let name = name.strip_suffix(".eml")?;
    let start = name.find("REM_")?;
    let (event, code) = name[start + 4..].rsplit_once('.')?;
    let event: String = event
        .chars()
        .filter(|c| !c.is_ascii_digit() && *c != ',')
        .collect();
    Some(if event == "Dispatch" {
        (
            MessageType::Dispatch,
            Event::SubmissionAcceptance,
            code.into(),
        )
    } else {
        (MessageType::Receipt, Event::from_name(&event)?, code.into())
    })
}

/// The prepared original of the scenario `file` belongs to (its digest is in every REM
/// message of the scenario).
fn scenario_original(kit: &Path, file: &Path) -> Vec<u8> {
    if file.starts_with(kit.join("agid-rem-policy-it")) {
        return std::fs::read(agid(kit).join("original_message.to_attach_to_dispatch.eml"))
            .unwrap();
    }
    let scenarios = etsi(kit).join("SCENARIOS");
    let rel = file.strip_prefix(&scenarios).unwrap();
    let scenario = scenarios.join(rel.components().next().unwrap());
    let prep = std::fs::read_dir(&scenario)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("2a.") && n.contains("Original-message_preparation"))
        })
        .unwrap();
    std::fs::read(prep.join("prepared_original_message.eml.to_attach.eml.txt")).unwrap()
}

/// `raw` with the first `needle` after `from` changed in its first byte.
fn altered(raw: &[u8], needle: &[u8], from: usize) -> Vec<u8> {
    let pos = from
        + raw[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("needle present");
    let mut v = raw.to_vec();
    v[pos] ^= 0x01;
    v
}

fn header_end(raw: &[u8]) -> usize {
    raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4
}

#[test]
fn every_kit_message_is_classified_verified_and_its_digest_holds() {
    let Some(kit) = kit() else { return };
    let mut files = Vec::new();
    emls(&kit, &mut files);
    files.sort();
    let (mut rem_etsi, mut rem_agid, mut not_rem, mut dispatches) = (0, 0, 0, 0);
    let (mut same_original, mut other_runs) = (0, Vec::new());
    for f in &files {
        let raw = std::fs::read(f).unwrap();
        let name = f.display();
        let Some((mtype, event, code)) = expected(f) else {
            assert!(!is_rem(&raw), "{name}: an original is not REM");
            assert!(
                matches!(message::parse(&raw), Err(RemError::NotRem(_))),
                "{name}"
            );
            let chain = chain_for(&kit, f);
            let opts = VerifyOptions::without_index(at()).with_chain(&chain);
            assert!(matches!(
                message::verify(&raw, &opts),
                Err(RemError::NotRem(_))
            ));
            not_rem += 1;
            continue;
        };
        assert!(is_rem(&raw), "{name}");
        let chain = chain_for(&kit, f);
        let opts = VerifyOptions::without_index(at()).with_chain(&chain);
        let v = message::verify(&raw, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.verified.chain, ChainStatus::Valid, "{name}");
        assert_eq!(v.verified.digest, "sha256", "{name}");
        let m = &v.message;
        assert_eq!(m, &message::parse(&raw).unwrap(), "{name}: parse = verify");
        let c = m.classify();
        assert_eq!(c.message_type, mtype, "{name}");
        assert_eq!(c.event, event, "{name}");
        assert_eq!(c.code, Some(code.as_str()), "{name}");
        assert_eq!(c.with_original, mtype == MessageType::Dispatch, "{name}");
        assert!(
            m.rem
                .applicable_policies
                .iter()
                .any(|p| p == POLICY_REM_BASELINE),
            "{name}"
        );
        assert_eq!(m.evidences.len(), 1, "{name}");
        assert_eq!(
            m.evidences[0].name.as_deref(),
            Some(format!("{}.xml", event.name()).as_str()),
            "{name}"
        );
        assert!(
            m.evidences[0].body.starts_with(b"<?xml"),
            "{name}: evidence decoded"
        );
        assert!(m.introduction.plain.contains("REM"), "{name}");
        assert!(m.introduction.html.contains("<h1>"), "{name}");
        // The digest binds every receipt of the scenario to the prepared original; a
        // dispatch carries its original, checked by `verify` (S7 has three dispatch runs
        // with their own identifiers, so their originals differ from the prepared one).
        let original = scenario_original(&kit, f);
        match &m.original {
            Some(o) => {
                if o == &original {
                    same_original += 1;
                } else {
                    other_runs.push(f.display().to_string());
                }
                dispatches += 1;
            }
            None => check_digest_of(
                m.digest_algorithm().unwrap(),
                m.rem.digest_value.as_deref().unwrap(),
                &original,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}")),
        }

        // A byte changed inside the signed content: the signature fails.
        let body = header_end(&raw);
        let bad = altered(&raw, b"REM-Section-Type: rem_message/introduction", body);
        assert!(
            matches!(
                message::verify(&bad, &opts),
                Err(RemError::Signature(VerifyError::BadSignature(_)))
            ),
            "{name}: altered introduction"
        );
        if mtype == MessageType::Dispatch {
            // A byte of the original: the signature fails too.
            let orig_at = raw
                .windows(b"rem_message/original".len())
                .position(|w| w == b"rem_message/original")
                .unwrap();
            let bad = altered(&raw, b"body", orig_at);
            assert!(
                matches!(message::verify(&bad, &opts), Err(RemError::Signature(_))),
                "{name}: altered original"
            );
            // The unsigned REM-DigestValue altered: the digest fails.
            let pos = raw
                .windows(17)
                .position(|w| w == b"REM-DigestValue: ")
                .unwrap()
                + 17;
            let mut bad = raw.clone();
            bad[pos + 3] = if bad[pos + 3] == b'A' { b'B' } else { b'A' };
            assert!(
                matches!(
                    message::verify(&bad, &opts),
                    Err(RemError::Digest(DigestError::Mismatch { .. }))
                ),
                "{name}: altered digest"
            );
        }
        if f.starts_with(kit.join("agid-rem-policy-it")) {
            assert!(m.rem.applicable_policies.iter().any(|p| p == POLICY_AGID));
            rem_agid += 1;
        } else {
            rem_etsi += 1;
        }
    }
    eprintln!(
        "rem kit: {rem_etsi} ETSI and {rem_agid} AgID REM messages ({dispatches} dispatches), {not_rem} originals"
    );
    assert_eq!((rem_etsi, rem_agid), (172, 36));
    assert_eq!(not_rem, 9);
    eprintln!("dispatches carrying another run's original: {other_runs:?}");
    assert_eq!(dispatches, 40);
    assert!(other_runs.len() <= 2 && other_runs.iter().all(|f| f.contains("/S7/")));
    assert_eq!(same_original + other_runs.len(), dispatches);
}

#[test]
fn the_digest_without_the_final_crlf_is_a_defined_error() {
    let Some(kit) = kit() else { return };
    let original =
        std::fs::read(agid(&kit).join("original_message.to_attach_to_dispatch.eml")).unwrap();
    let alg = DigestAlgorithm::Sha256;
    let wrong = alg.digest_value(&original[..original.len() - 2]);
    assert!(matches!(
        check_digest_of(alg, &wrong, &original),
        Err(DigestError::FinalCrlfOmitted { .. })
    ));
    // In a message: the kit's dispatch with that digest in its (unsigned) header.
    let raw = std::fs::read(agid(&kit).join("REM_Dispatch.RA01.eml")).unwrap();
    let text = String::from_utf8(raw.clone()).unwrap();
    let good = std::fs::read_to_string(
        agid(&kit).join("original_message.to_attach_to_dispatch.digest.txt"),
    )
    .unwrap();
    let bad = text.replacen(good.trim(), &wrong, 1);
    let chain = chain_for(&kit, &agid(&kit));
    let opts = VerifyOptions::without_index(at()).with_chain(&chain);
    assert!(matches!(
        message::verify(bad.as_bytes(), &opts),
        Err(RemError::Digest(DigestError::FinalCrlfOmitted { .. }))
    ));
}

#[test]
fn the_original_is_prepared_and_digested_as_the_kit_does() {
    let Some(kit) = kit() else { return };
    let dir = agid(&kit);
    let clean = std::fs::read(dir.join("original_message.clean_from_user.eml")).unwrap();
    let attach = std::fs::read(dir.join("original_message.to_attach_to_dispatch.eml")).unwrap();
    let digest =
        std::fs::read_to_string(dir.join("original_message.to_attach_to_dispatch.digest.txt"))
            .unwrap();
    let id = "26A0CF65.00566CE0.242DDC3F.85251369.rem-service@s1-rems-only-for-test.it";
    assert_eq!(prepare_original(&clean, id).unwrap(), attach);
    assert_eq!(DigestAlgorithm::Sha256.digest_value(&attach), digest.trim());

    let s1 = etsi(&kit).join(
        "SCENARIOS/S1/2a.(Ante).Original-message_preparation_and_Trust_Capabilities_Validation",
    );
    let clean = std::fs::read(s1.join("_original_message.clean_from_user.eml_.txt")).unwrap();
    let attach = std::fs::read(s1.join("prepared_original_message.eml.to_attach.eml.txt")).unwrap();
    let digest =
        std::fs::read_to_string(s1.join("prepared_original_message.eml.to_attach.digest.txt"))
            .unwrap();
    let id = "26A0CF65.00566CE0.D36E846D.85251369.rem-service@sa-rems.rem";
    assert_eq!(prepare_original(&clean, id).unwrap(), attach);
    assert_eq!(DigestAlgorithm::Sha256.digest_value(&attach), digest.trim());
    // The same data with LF line ends and extra empty lines at the end: the same bytes.
    let mut lf: Vec<u8> = clean.iter().copied().filter(|&b| b != b'\r').collect();
    lf.extend_from_slice(b"\n\n");
    assert_eq!(prepare_original(&lf, id).unwrap(), attach);
}

fn s1_provider() -> Provider {
    Provider {
        name: "S-REMS-1 provider".into(),
        service_address: "rem-service@s1-rems-only-for-test.it".into(),
    }
}

fn agid_submission(kit: &Path) -> (Vec<u8>, Submission) {
    let attach =
        std::fs::read(agid(kit).join("original_message.to_attach_to_dispatch.eml")).unwrap();
    let sub = Submission::from_original(
        &attach,
        vec![POLICY_REM_BASELINE.into(), POLICY_AGID.into()],
        DigestAlgorithm::Sha256,
    )
    .unwrap();
    (attach, sub)
}

/// One part's section type, media type, name and header names.
type PartShape = (Option<String>, String, Option<String>, Vec<String>);

/// Structure of a message: top header names (trace fields left out), each part's shape.
fn structure(m: &message::RemMessage) -> (Vec<String>, Vec<PartShape>) {
    (
        m.field_names
            .iter()
            .filter(|n| {
                !n.eq_ignore_ascii_case("Received") && !n.eq_ignore_ascii_case("Return-Path")
            })
            .cloned()
            .collect(),
        m.sections
            .iter()
            .map(|s| {
                (
                    s.section_type.clone(),
                    s.mime_type.clone(),
                    s.name.clone(),
                    s.field_names.clone(),
                )
            })
            .collect(),
    )
}

fn openssl_verifies(dir: &Path, name: &str, bytes: &[u8], ca: &Path) {
    let file = dir.join(name);
    std::fs::write(&file, bytes).unwrap();
    let out = Command::new("openssl")
        .args(["smime", "-verify", "-in"])
        .arg(&file)
        .arg("-CAfile")
        .arg(ca)
        .args(["-purpose", "any", "-out", "/dev/null"])
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{name}: openssl smime -verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// NFC for the decomposed letters some of the kit's texts have (è, é).
fn nfc(s: &str) -> String {
    s.replace("e\u{300}", "è").replace("e\u{301}", "é")
}

#[test]
fn the_agid_submission_acceptance_is_rebuilt_as_the_kit_has_it() {
    let Some(kit) = kit() else { return };
    let pki = common::pki::shared();
    let (_attach, sub) = agid_submission(&kit);
    let provider = s1_provider();
    let composer = Composer {
        provider: &provider,
        signer: pki.hsm_signer(),
    };
    let when = Instant::parse_cli("2022-08-03T14:22:12Z").unwrap();
    // A stand-in evidence: the evidences are written by `rem::evidence`.
    let evidence = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Evidence/>\n";
    let r = Receipt {
        event: Event::SubmissionAcceptance,
        code: "RA01",
        message_id: "46A0CF65.00566CE0.025BE6B4.85251369.rem-service@s1-rems-only-for-test.it",
        evidence_id: "16A0CF65.00566CE0.242DDC3F.03B4A2C1.rem-service@s1-rems-only-for-test.it",
        to: "\"Sender name\" <sender@sender-own-domain-only-for-test.it>",
        rcpt_to: "sender@sender-own-domain-only-for-test.it",
        other_provider: None,
        recipient: None,
        relay_date: None,
    };
    let ours = composer.receipt(&sub, &r, evidence, &[], when).unwrap();
    let bytes = ours.to_bytes();
    let theirs_raw = std::fs::read(agid(&kit).join("REM_SubmissionAcceptance.RA01.eml")).unwrap();
    let theirs = message::parse(&theirs_raw).unwrap();

    let pem = std::fs::read(pki.ca_pem()).unwrap();
    let chain = ChainPolicy::from_pem(&pem, true).unwrap();
    let v = message::verify(
        &bytes,
        &VerifyOptions::without_index(when).with_chain(&chain),
    )
    .unwrap();
    assert_eq!(v.verified.chain, ChainStatus::Valid);
    let m = v.message;
    assert_eq!(structure(&m), structure(&theirs));
    assert_eq!(m.classify(), theirs.classify());
    // Every REM field as the kit has it; the kit's REM-UAMessageIdentifier names "@it"
    // where its own original says "@de" (an inconsistency of the example): ours follows the
    // original.
    let mut kit_rem = theirs.rem.clone();
    assert_eq!(
        kit_rem.ua_message_identifier.as_deref(),
        Some("<30be01d30072$242ddc3f$f9b72bf0$@it>")
    );
    kit_rem.ua_message_identifier = Some("<30be01d30072$242ddc3f$f9b72bf0$@de>".into());
    assert_eq!(m.rem, kit_rem);
    for h in ["from", "to", "subject"] {
        let theirs_v = match h {
            "from" => &theirs.from,
            "to" => &theirs.to,
            _ => &theirs.subject,
        };
        let ours_v = match h {
            "from" => &m.from,
            "to" => &m.to,
            _ => &m.subject,
        };
        assert_eq!(ours_v, theirs_v, "{h}");
    }
    assert_eq!(m.message_id, theirs.message_id);
    let date =
        |d: &Option<String>| chrono::DateTime::parse_from_rfc2822(d.as_deref().unwrap()).unwrap();
    assert_eq!(date(&m.date), date(&theirs.date));
    // The introduction, word for word.
    assert_eq!(m.introduction.plain, nfc(&theirs.introduction.plain));
    assert_eq!(m.introduction.html, nfc(&theirs.introduction.html));
    assert_eq!(m.evidences[0].body, evidence);
    // The signature framing: the top Content-Type's parameters and the signature part.
    let ct = |raw: &[u8]| {
        let e = pec::message::mime::Entity::parse(raw);
        let c = e.content_type.unwrap();
        (c.mime.clone(), c.param("protocol"), c.param("micalg"))
    };
    assert_eq!(ct(&bytes), ct(&theirs_raw));
    let sig_head = |raw: &[u8]| {
        let s = String::from_utf8_lossy(raw).into_owned();
        let i = s
            .rfind("Content-Type: application/pkcs7-signature")
            .unwrap();
        s[i..i + s[i..].find("\r\n\r\n").unwrap()].to_string()
    };
    assert_eq!(sig_head(&bytes), sig_head(&theirs_raw));

    openssl_verifies(
        pki.dir(),
        "rem-submission-acceptance.eml",
        &bytes,
        pki.ca_pem(),
    );
}

#[test]
fn composed_dispatch_and_receipts_verify_and_read_back() {
    let Some(kit) = kit() else { return };
    let pki = common::pki::shared();
    let (attach, mut sub) = agid_submission(&kit);
    // The kit's dispatch answers a message of the sender the original does not name.
    sub.in_reply_to = Some(
        "<44B2DA88.03101965.A809D2BE.16011966.sender@sender-own-domain-only-for-test.it>".into(),
    );
    let provider = s1_provider();
    let composer = Composer {
        provider: &provider,
        signer: pki.hsm_signer(),
    };
    let when = Instant::parse_cli("2022-08-03T14:22:11Z").unwrap();
    let pem = std::fs::read(pki.ca_pem()).unwrap();
    let chain = ChainPolicy::from_pem(&pem, true).unwrap();
    let opts = VerifyOptions::without_index(when).with_chain(&chain);
    let evidence = b"<?xml version=\"1.0\"?><Evidence>SubmissionAcceptance</Evidence>\n";
    let ext = Extension {
        mime_type: "application/xml",
        name: "Extension.xml",
        code: Some("I06"),
        namespace: Some("urn:example"),
        data: b"<x/>",
    };
    let dispatch = composer
        .dispatch(
            &attach,
            &sub,
            &EvidenceAttachment {
                event: Event::SubmissionAcceptance,
                xml: evidence,
            },
            "16A0CF65.00566CE0.242DDC3F.03B4A2C1.rem-service@s1-rems-only-for-test.it",
            &[ext],
            None,
            when,
        )
        .unwrap();
    let bytes = dispatch.to_bytes();
    assert_eq!(
        dispatch.header("From"),
        Some("\"On behalf of: sender@sender-own-domain-only-for-test.it\" <rem-service@s1-rems-only-for-test.it>")
    );
    assert_eq!(
        dispatch
            .header("Subject")
            .map(|s| pec::message::mime::unfold(s.as_bytes()))
            .as_deref(),
        Some("REM Dispatch: Oggetto dell'original message - Subject of the original message")
    );
    let v = message::verify(&bytes, &opts).unwrap();
    let m = &v.message;
    assert_eq!(m.original.as_deref(), Some(attach.as_slice()));
    let c = m.classify();
    assert_eq!(c.message_type, MessageType::Dispatch);
    assert_eq!(
        (c.event, c.code),
        (Event::SubmissionAcceptance, Some("RA01"))
    );
    assert_eq!(m.extensions.len(), 1);
    assert_eq!(m.extensions[0].body, b"<x/>");
    assert!(m.extensions[0]
        .field_names
        .iter()
        .any(|n| n == "REM-Extension-Code"));
    // The kit's dispatch has the same structure (it has no extension part).
    let theirs =
        message::parse(&std::fs::read(agid(&kit).join("REM_Dispatch.RA01.eml")).unwrap()).unwrap();
    let (our_names, mut our_parts) = structure(m);
    our_parts.pop();
    assert_eq!((our_names, our_parts), structure(&theirs));
    assert_eq!(m.rem.digest_value, theirs.rem.digest_value);
    assert_eq!(m.introduction.plain, theirs.introduction.plain);
    openssl_verifies(pki.dir(), "rem-dispatch.eml", &bytes, pki.ca_pem());

    // A consignment receipt and a relay failure, as R-REMS-2 and S-REMS-1 write them.
    for (event, code, recipient, file) in [
        (
            Event::ContentConsignment,
            "RD01",
            Some("recC@r2-rems-only-for-test.it"),
            "REM_ContentConsignment1.RD01.eml",
        ),
        (
            Event::RelayFailure,
            "RB22",
            None,
            "REM_RelayFailure.RB22.eml",
        ),
        (
            Event::RelayAcceptance,
            "RB01",
            None,
            "REM_RelayAcceptance.RB01.eml",
        ),
    ] {
        let theirs_raw = std::fs::read(agid(&kit).join(file)).unwrap();
        let theirs = message::parse(&theirs_raw).unwrap();
        let prov = Provider {
            name: if file.contains("RB22") {
                "S-REMS-1 provider"
            } else {
                "R-REMS-2 provider"
            }
            .into(),
            service_address: "rem-service@r2-rems-only-for-test.it".into(),
        };
        let c = Composer {
            provider: &prov,
            signer: pki.hsm_signer(),
        };
        let r = Receipt {
            event,
            code,
            message_id: "66A0CF65.1@r2-rems-only-for-test.it",
            evidence_id: "56A0CF65.1@r2-rems-only-for-test.it",
            to: theirs.to.as_deref().unwrap(),
            rcpt_to: "sender@sender-own-domain-only-for-test.it",
            other_provider: Some("R-REMS provider"),
            recipient,
            relay_date: Some(when),
        };
        let t = chrono::DateTime::parse_from_rfc2822(theirs.date.as_deref().unwrap()).unwrap();
        let t = Instant::from_unix(t.timestamp());
        let out = c.receipt(&sub, &r, evidence, &[], t).unwrap();
        let bytes = out.to_bytes();
        assert!(
            !bytes.windows(20).any(|w| w == b"rem_message/original"),
            "{file}: a receipt never carries the original"
        );
        let v = message::verify(&bytes, &opts).unwrap();
        let cl = v.message.classify();
        assert_eq!((cl.event, cl.code), (event, Some(code)), "{file}");
        assert!(!cl.with_original);
        assert_eq!(structure(&v.message), structure(&theirs), "{file}");
        assert_eq!(
            v.message.introduction.plain,
            nfc(&theirs.introduction.plain),
            "{file}"
        );
        assert_eq!(
            v.message.introduction.html,
            nfc(&theirs.introduction.html),
            "{file}"
        );
        openssl_verifies(pki.dir(), &format!("rem-{code}.eml"), &bytes, pki.ca_pem());
    }

    // Wrong inputs are refused, not composed.
    let bad = Receipt {
        event: Event::RelayAcceptance,
        code: "RD01",
        message_id: "x@y",
        evidence_id: "e@y",
        to: "<a@b>",
        rcpt_to: "a@b",
        other_provider: None,
        recipient: None,
        relay_date: None,
    };
    assert!(composer.receipt(&sub, &bad, evidence, &[], when).is_err());
    let needs_provider = Receipt {
        event: Event::RelayFailure,
        code: "RB09",
        ..bad
    };
    assert!(composer
        .receipt(&sub, &needs_provider, evidence, &[], when)
        .is_err());
    let mut unprepared = attach.clone();
    unprepared.extend_from_slice(b"\r\n");
    assert!(composer
        .dispatch(
            &unprepared,
            &sub,
            &EvidenceAttachment {
                event: Event::SubmissionAcceptance,
                xml: evidence
            },
            "e@y",
            &[],
            None,
            when,
        )
        .is_err());
    assert!(Submission::from_original(
        &unprepared,
        vec![POLICY_REM_BASELINE.into()],
        DigestAlgorithm::Sha256
    )
    .is_err());
}

/// Every AgID receipt (35 of them, every event and reason code of the profile) rebuilt from
/// the kit's original and its own header data: the same REM fields, the same parts with
/// the same part headers, the same introduction word for word.
#[test]
fn every_agid_receipt_is_rebuilt_as_the_kit_has_it() {
    let Some(kit) = kit() else { return };
    let pki = common::pki::shared();
    let (_attach, sub) = agid_submission(&kit);
    let pem = std::fs::read(pki.ca_pem()).unwrap();
    let chain = ChainPolicy::from_pem(&pem, true).unwrap();
    let evidence = b"<?xml version=\"1.0\"?><Evidence/>\n";
    let mut files: Vec<PathBuf> = std::fs::read_dir(agid(&kit))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.starts_with("REM_") && !n.starts_with("REM_Dispatch")
        })
        .collect();
    files.sort();
    for f in &files {
        let file = f.file_name().unwrap().to_str().unwrap();
        let theirs_raw = std::fs::read(f).unwrap();
        let theirs = message::parse(&theirs_raw).unwrap();
        let c = theirs.classify();
        let from = theirs.from.clone().unwrap();
        let provider = Provider {
            name: if from.contains("@s1-") {
                "S-REMS-1 provider"
            } else {
                "R-REMS-2 provider"
            }
            .into(),
            service_address: from.trim_matches(|c| c == '<' || c == '>').into(),
        };
        let composer = Composer {
            provider: &provider,
            signer: pki.hsm_signer(),
        };
        let t = chrono::DateTime::parse_from_rfc2822(theirs.date.as_deref().unwrap()).unwrap();
        let t = Instant::from_unix(t.timestamp());
        let recipient = if file.contains("1.RD") {
            Some("recC@r2-rems-only-for-test.it")
        } else if file.contains("2.RD") {
            Some("recD@r2-rems-only-for-test.it")
        } else {
            None
        };
        let unbracket = |v: &Option<String>| {
            v.as_deref()
                .unwrap()
                .trim_matches(|c| c == '<' || c == '>')
                .to_string()
        };
        let evidence_id = unbracket(&theirs.rem.evidence_id);
        let r = Receipt {
            event: c.event,
            code: c.code.unwrap(),
            message_id: theirs.message_id.as_deref().unwrap(),
            evidence_id: &evidence_id,
            to: theirs.to.as_deref().unwrap(),
            rcpt_to: "sender@sender-own-domain-only-for-test.it",
            other_provider: Some("R-REMS provider"),
            recipient,
            relay_date: theirs.rem.relay_date.as_ref().map(|_| t),
        };
        let ours = composer.receipt(&sub, &r, evidence, &[], t).unwrap();
        let bytes = ours.to_bytes();
        let v = message::verify(&bytes, &VerifyOptions::without_index(t).with_chain(&chain))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let m = v.message;
        assert_eq!(structure(&m), structure(&theirs), "{file}");
        let mut kit_rem = theirs.rem.clone();
        kit_rem.ua_message_identifier = m.rem.ua_message_identifier.clone();
        assert_eq!(m.rem, kit_rem, "{file}");
        assert_eq!(
            (&m.from, &m.to, &m.subject),
            (&theirs.from, &theirs.to, &theirs.subject),
            "{file}"
        );
        assert_eq!(
            m.introduction.plain,
            nfc(&theirs.introduction.plain),
            "{file}"
        );
        assert_eq!(
            m.introduction.html,
            nfc(&theirs.introduction.html),
            "{file}"
        );
    }
    assert_eq!(files.len(), 35);
}

/// Truncated, byte-flipped and relabelled kit messages: every outcome is a defined error
/// (or, for bytes outside what is read, the same message), never a panic.
#[test]
fn mangled_kit_messages_are_defined_errors() {
    let Some(kit) = kit() else { return };
    let dispatch = std::fs::read(agid(&kit).join("REM_Dispatch.RA01.eml")).unwrap();
    let receipt = std::fs::read(agid(&kit).join("REM_RelayFailure.RB22.eml")).unwrap();
    for raw in [&dispatch, &receipt] {
        assert!(message::parse(raw).is_ok());
        for i in (0..raw.len()).step_by(61) {
            let _ = message::parse(&raw[..i]);
            let mut v = raw.clone();
            v[i] ^= 0x20;
            if let Ok(m) = message::parse(&v) {
                // Only a byte the reader does not keep (a letter's case in a header name,
                // base64 of the signature, a body byte) may leave a message readable.
                let _ = m.classify();
            }
        }
        assert!(message::parse(&raw[..raw.len() / 2]).is_err());
    }
    // The unsigned message type relabelled: a receipt carrying the original, a dispatch
    // without it.
    let relabel = |raw: &[u8], from: &str, to: &str| {
        String::from_utf8(raw.to_vec())
            .unwrap()
            .replacen(from, to, 1)
            .into_bytes()
    };
    let as_receipt = relabel(
        &dispatch,
        "ERDMessageType/dispatch",
        "ERDMessageType/receipt",
    );
    assert!(matches!(
        message::parse(&as_receipt),
        Err(RemError::Structure(m)) if m.contains("must not carry the original")
    ));
    let as_dispatch = relabel(
        &receipt,
        "ERDMessageType/receipt",
        "ERDMessageType/dispatch",
    );
    assert!(matches!(
        message::parse(&as_dispatch),
        Err(RemError::Structure(m)) if m.contains("must carry the original")
    ));
    let unknown_event = relabel(&receipt, "Event/RelayFailure", "Event/Teleported");
    assert!(matches!(
        message::parse(&unknown_event),
        Err(RemError::Header(_))
    ));
    let two_types = relabel(
        &receipt,
        "REM-MessageType:",
        "REM-MessageType: x\r\nREM-MessageType:",
    );
    assert!(matches!(
        message::parse(&two_types),
        Err(RemError::Header(_))
    ));
}

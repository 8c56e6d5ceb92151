// SPDX-License-Identifier: GPL-3.0-or-later
//! The verdict on REM messages and standalone evidences (`rem::judge`): every REM message
//! of the kit (`../shared/rem-kit` or `$PEC_REM_KIT`) judged valid with the kit anchors and
//! the kit's TSA roots at its own date, and invalid once altered, with the RelayRejection
//! reason the reception point would answer.

use std::path::{Path, PathBuf};

use pec::crypto::verify::ChainPolicy;
use pec::message::time::Instant;
use pec::rem::judge::{self, Failure, Inputs, Kind, Trust};
use pec::rem::message::{self, is_rem};
use pec::rem::trust::RemPeers;

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

fn rem_files(kit: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    emls(kit, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let raw = std::fs::read(&f).unwrap();
            (f, raw)
        })
        .filter(|(_, raw)| is_rem(raw))
        .collect()
}

/// Both REM PKIs of the kit (AgID and ETSI), roots and intermediates.
fn kit_chain(kit: &Path, dir: &Path) -> ChainPolicy {
    let pem = std::fs::read(crate::samples::rem_kit_anchors(kit, dir)).unwrap();
    ChainPolicy::from_pem(&pem, true).unwrap()
}

/// The message's own date (its `Date` field).
fn own_date(raw: &[u8]) -> Instant {
    let m = message::parse(raw).unwrap();
    let date = m.date.unwrap();
    let date = match date.find('(') {
        Some(i) => date[..i].trim().to_string(),
        None => date,
    };
    let t = chrono::DateTime::parse_from_rfc2822(&date).unwrap();
    Instant::from_unix(t.timestamp())
}

struct Kit {
    files: Vec<(PathBuf, Vec<u8>)>,
    chain: ChainPolicy,
    tsa: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

fn kit() -> Option<Kit> {
    let kit = crate::samples::rem_kit_dir()?;
    let files = rem_files(&kit);
    let dir = tempfile::tempdir().unwrap();
    let tsa = crate::samples::rem_kit_tsa_anchors(&kit, dir.path());
    Some(Kit {
        chain: kit_chain(&kit, dir.path()),
        files,
        tsa,
        _dir: dir,
    })
}

fn inputs<'a>(k: &'a Kit, at: Instant, peers: Option<&'a RemPeers>) -> Inputs<'a> {
    Inputs {
        chain: &k.chain,
        tsa_anchors: &k.tsa,
        peers,
        at,
    }
}

/// `raw` with the byte at `at` changed.
fn flip(raw: &[u8], at: usize) -> Vec<u8> {
    let mut out = raw.to_vec();
    out[at] = if out[at] == b'A' { b'B' } else { b'A' };
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn every_kit_message_is_valid_at_its_date_and_invalid_once_altered() {
    let Some(k) = kit() else { return };
    let (mut etsi, mut agid) = (0, 0);
    for (f, raw) in &k.files {
        let name = f.display();
        let at = own_date(raw);
        let v = judge::judge_message(raw, &inputs(&k, at, None));
        assert!(v.valid(), "{name}: {:?}", v.failures);
        assert!(matches!(v.kind, Kind::Message(_)), "{name}");
        assert_eq!(v.trust, Trust::NotChecked);
        assert!(v.signer.is_some() && v.time_stamp_time.is_some(), "{name}");
        assert!(v.rejection().is_none());
        assert!(!v.evidences.is_empty());
        let stated = message::parse(raw).unwrap().classify().code;
        assert_eq!(v.code, stated, "{name}");
        if f.to_string_lossy().contains("agid-rem-policy-it") {
            agid += 1;
        } else {
            etsi += 1;
        }

        // A letter of the introduction's plain text altered: the S/MIME signature fails.
        let intro = find(raw, b"rem_message/introduction").unwrap();
        let plain = find(&raw[intro..], b"text/plain").unwrap() + intro;
        let text = find(&raw[plain..], b"\n\n")
            .or_else(|| find(&raw[plain..], b"\r\n\r\n"))
            .unwrap()
            + plain
            + 2;
        let at_byte = (text..raw.len())
            .find(|&i| raw[i].is_ascii_alphabetic())
            .unwrap();
        let altered = flip(raw, at_byte);
        let bad = judge::judge_message(&altered, &inputs(&k, at, None));
        assert!(!bad.valid(), "{name}: altered copy judged valid");
        assert!(
            bad.failures
                .iter()
                .any(|f| matches!(f, Failure::Signature(_))),
            "{name}: {:?}",
            bad.failures
        );
        assert_eq!(bad.rejection().unwrap().code, "RB04", "{name}");
    }
    assert_eq!(agid, 36, "the AgID REM messages");
    assert_eq!(etsi, 172, "the ETSI REM messages");
    eprintln!("judged {etsi} ETSI and {agid} AgID REM messages");
}

fn agid_file<'a>(k: &'a Kit, name: &str) -> &'a [u8] {
    &k.files
        .iter()
        .find(|(f, _)| f.ends_with(name))
        .unwrap_or_else(|| panic!("{name} in the kit"))
        .1
}

#[test]
fn an_altered_original_is_a_digest_mismatch() {
    let Some(k) = kit() else { return };
    let raw = agid_file(&k, "Intra-REM-flow/REM_Dispatch.RA01.eml");
    let at = own_date(raw);
    let start = find(raw, b"rem_message/original").unwrap();
    let subject = find(&raw[start..], b"Subject:").unwrap() + start + 10;
    let altered = flip(raw, subject);
    let v = judge::judge_message(&altered, &inputs(&k, at, None));
    let digest: Vec<&Failure> = v
        .failures
        .iter()
        .filter(|f| matches!(f, Failure::Digest(_)))
        .collect();
    assert!(!digest.is_empty(), "{:?}", v.failures);
    assert_eq!(digest[0].code(), "RB02");
    assert_eq!(digest[0].reason().unwrap().name, "R_ERDS_MessageRejected");
    // The signature covers the original too: it fails first.
    assert_eq!(v.rejection().unwrap().code, "RB04");

    // The unsigned REM-DigestValue changed: the signature holds, the original and every
    // evidence disagree with the header, and the answer is RB02.
    let text = String::from_utf8_lossy(raw).into_owned();
    let stated = message::parse(raw).unwrap().rem.digest_value.unwrap();
    let other = pec::rem::message::DigestAlgorithm::Sha256.digest_value(b"another original");
    let relabelled = text.replacen(&stated, &other, 1);
    let v = judge::judge_message(relabelled.as_bytes(), &inputs(&k, at, None));
    assert!(
        v.failures.iter().all(|f| matches!(f, Failure::Digest(_))),
        "{:?}",
        v.failures
    );
    assert_eq!(v.failures.len(), 2, "the original, then the evidence");
    assert_eq!(v.rejection().unwrap().code, "RB02");
}

#[test]
fn a_signer_not_on_the_trusted_list_is_not_trusted() {
    let Some(k) = kit() else { return };
    let raw = agid_file(&k, "Intra-REM-flow/REM_RelayAcceptance.RB01.eml");
    let at = own_date(raw);
    let empty = RemPeers::default();
    let v = judge::judge_message(raw, &inputs(&k, at, Some(&empty)));
    assert_eq!(v.trust, Trust::NotGranted);
    assert!(matches!(v.first_failure(), Some(Failure::NotTrusted(_))));
    assert_eq!(v.rejection().unwrap().code, "RB06");
    // The same for a standalone evidence.
    let ev = message::parse(raw).unwrap().evidences[0].body.clone();
    let v = judge::judge_evidence(&ev, &inputs(&k, at, Some(&empty)));
    assert_eq!(v.trust, Trust::NotGranted);
    assert_eq!(v.rejection().unwrap().code, "RB06");
}

#[test]
fn a_duplicate_evidence_identifier_is_an_error() {
    let Some(k) = kit() else { return };
    let raw = agid_file(&k, "Intra-REM-flow/REM_RelayAcceptance.RB01.eml");
    let at = own_date(raw);
    // The evidence part repeated inside the signed multipart/mixed.
    let text = String::from_utf8_lossy(raw).into_owned();
    let ev = text
        .find("REM-Section-Type: rem_message/xml_evidence")
        .unwrap();
    let part_start = text[..ev].rfind("\n--").unwrap() + 1;
    let part_end = part_start + 1 + text[part_start + 1..].find("\n--").unwrap() + 1;
    let part = &text[part_start..part_end];
    let doubled = format!("{}{}{}", &text[..part_end], part, &text[part_end..]);
    let v = judge::judge_message(doubled.as_bytes(), &inputs(&k, at, None));
    assert!(
        v.failures
            .iter()
            .any(|f| matches!(f, Failure::DuplicateEvidenceId(_))),
        "{:?}",
        v.failures
    );
    assert_eq!(v.evidences.len(), 2);
}

#[test]
fn standalone_evidences_valid_unstamped_and_wrongly_stamped() {
    let Some(k) = kit() else { return };
    let a = agid_file(&k, "Intra-REM-flow/REM_RelayAcceptance.RB01.eml");
    let b = agid_file(&k, "Intra-REM-flow/REM_Dispatch.RA01.eml");
    let at = own_date(a);
    let ev_a = message::parse(a).unwrap().evidences[0].body.clone();
    let ev_b = message::parse(b).unwrap().evidences[0].body.clone();

    let v = judge::judge_evidence(&ev_a, &inputs(&k, at, None));
    assert!(v.valid(), "{:?}", v.failures);
    assert_eq!(v.kind, Kind::Evidence);
    assert_eq!(v.code, Some("RB01"));
    assert!(v.time_stamp_time.is_some() && v.signer.is_some() && v.digest.is_some());

    // Without its time stamp.
    let text = String::from_utf8(ev_a.clone()).unwrap();
    let from = text.find("<xades:UnsignedProperties").unwrap();
    let end = "</xades:UnsignedProperties>";
    let to = text.find(end).unwrap() + end.len();
    let stripped = format!("{}{}", &text[..from], &text[to..]);
    let v = judge::judge_evidence(stripped.as_bytes(), &inputs(&k, at, None));
    assert!(
        matches!(v.first_failure(), Some(Failure::TimeStamp { .. })),
        "{:?}",
        v.failures
    );
    assert_eq!(v.rejection().unwrap().code, "RB04");

    // With another evidence's token.
    let token = |t: &str| {
        let s = t.find("EncapsulatedTimeStamp").unwrap();
        let f = s + t[s..].find('>').unwrap() + 1;
        (f, f + t[f..].find('<').unwrap())
    };
    let text_b = String::from_utf8(ev_b).unwrap();
    let (fa, ta) = token(&text);
    let (fb, tb) = token(&text_b);
    let swapped = format!("{}{}{}", &text[..fa], &text_b[fb..tb], &text[ta..]);
    let v = judge::judge_evidence(swapped.as_bytes(), &inputs(&k, at, None));
    assert!(
        matches!(v.first_failure(), Some(Failure::TimeStamp { .. })),
        "{:?}",
        v.failures
    );
}

#[test]
fn hostile_xml_and_mail_are_defined_verdicts() {
    let Some(k) = kit() else { return };
    let at = Instant::parse_cli("2025-01-01T00:00:00Z").unwrap();
    let hostile: [&[u8]; 5] = [
        b"",
        b"<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY x \"xx\"><!ENTITY y \"&x;&x;&x;\">]><a>&y;</a>",
        b"<a><b><c>",
        &[0xff, 0xfe, 0x00],
        b"<tns:Evidence xmlns:tns=\"http://uri.etsi.org/19522/v1#\"/>",
    ];
    for raw in hostile {
        let v = judge::judge_evidence(raw, &inputs(&k, at, None));
        assert!(!v.valid());
        assert!(
            matches!(v.first_failure(), Some(Failure::Evidence { .. })),
            "{:?}",
            v.failures
        );
        assert_eq!(v.rejection().unwrap().code, "RB02");
        let m = judge::judge_message(raw, &inputs(&k, at, None));
        assert!(matches!(m.first_failure(), Some(Failure::Malformed(_))));
    }
    let deep = format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000));
    assert!(!judge::judge_evidence(deep.as_bytes(), &inputs(&k, at, None)).valid());
}

/// The kit's TL_CCA (S-REMS-A, R-REMS-B, R-REMS-C) with `NextUpdate` in 2031 and the
/// services granted from `since`.
fn kit_peers(since: &str) -> RemPeers {
    let kit = crate::samples::rem_kit_dir().unwrap();
    let text = std::fs::read_to_string(
        kit.join("etsi-en-319-532-4/INFORMATIVE-EXAMPLES/COMMON_SERVICE_INTERFACE/TL_CCA.xml"),
    )
    .unwrap()
    .replace("2021-10-03T08:29:59Z", "2031-10-03T08:29:59Z")
    .replace("2021-12-30T22:00:00Z", since);
    RemPeers::new(&[pec::rem::trust::parse(text.as_bytes()).unwrap()])
}

#[test]
fn a_service_granted_on_the_trusted_list_at_the_signing_time_is_trusted() {
    let Some(k) = kit() else { return };
    let raw = &k
        .files
        .iter()
        .find(|(f, _)| f.ends_with("S1/2a.Issued_by_S-REMS-A/REM_Dispatch.RA01.eml"))
        .unwrap()
        .1;
    let at = own_date(raw);
    // Granted since before the message (2021-12-01): trusted.
    let peers = kit_peers("2021-11-23T00:00:00Z");
    let v = judge::judge_message(raw, &inputs(&k, at, Some(&peers)));
    assert!(v.valid(), "{:?}", v.failures);
    assert!(
        matches!(&v.trust, Trust::Granted { territory, provider, .. }
            if territory == "CCA" && provider == "S-REMS-A provider"),
        "{:?}",
        v.trust
    );
    // Granted only after the message was signed (the kit's own date, 2021-12-30): the
    // same signer is not trusted for it.
    let later = kit_peers("2021-12-30T22:00:00Z");
    let v = judge::judge_message(raw, &inputs(&k, at, Some(&later)));
    assert_eq!(v.trust, Trust::NotGranted);
    assert_eq!(v.rejection().unwrap().code, "RB06");
    // An AgID provider is not on that list at all.
    let agid = agid_file(&k, "Intra-REM-flow/REM_Dispatch.RA01.eml");
    let v = judge::judge_message(agid, &inputs(&k, own_date(agid), Some(&peers)));
    assert_eq!(v.trust, Trust::NotGranted);
}

#[test]
fn unsigned_rem_headers_that_contradict_the_evidence_are_inconsistent() {
    let Some(k) = kit() else { return };
    let raw = agid_file(&k, "Intra-REM-flow/REM_RelayAcceptance.RB01.eml");
    let at = own_date(raw);
    let text = String::from_utf8_lossy(raw).into_owned();
    for (from, to) in [
        ("Event/RelayAcceptance", "Event/RelayRejection"),
        (
            "EventReason/S_ERDS_MessageSuccessfullyRelayed",
            "EventReason/R_ERDS_MessageRejected",
        ),
        ("REM-Evidence-ID: <", "REM-Evidence-ID: <X"),
    ] {
        assert!(text.contains(from), "{from}");
        let changed = text.replacen(from, to, 1);
        let v = judge::judge_message(changed.as_bytes(), &inputs(&k, at, None));
        assert!(
            matches!(v.first_failure(), Some(Failure::Inconsistent(_))),
            "{from}: {:?}",
            v.failures
        );
        assert_eq!(v.rejection().unwrap().code, "RB02");
    }
}

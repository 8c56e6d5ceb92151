// SPDX-License-Identifier: GPL-3.0-or-later
//! The ERDS evidence (src/rem/evidence.rs) and its code table (src/rem/codes.rs): every
//! evidence of the REM kit read, our writer's output for every event and reason read back
//! and (where the schemas are at hand) validated, the AgID SubmissionAcceptance rebuilt
//! from its values, hostile input refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, TimeZone, Utc};
use mail_parser::MessageParser;
use pec::rem::codes::{Event, Reason};
use pec::rem::evidence::{
    AssuranceLevels, EventReason, Evidence, EvidenceError, GeneralEvidenceInfo, Identifier,
    PartInfo, RelayEvidenceInfo, SamlAttribute, UserContentInfo, UserDetails, MAX_DEPTH, VERSION,
};
use pec::xml::XmlGateError;
use quick_xml::events::Event as X;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use crate::samples::rem_kit_dir;

// ---------------------------------------------------------------------------------------
// The kit

fn emls(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            emls(&p, out);
        } else if p.extension().is_some_and(|e| e == "eml") {
            out.push(p);
        }
    }
}

struct KitEvidence {
    path: PathBuf,
    event_header: Option<String>,
    reason_header: Option<String>,
    xml: Vec<u8>,
}

fn header(raw: &[u8], headers: &[mail_parser::Header<'_>], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| {
            String::from_utf8_lossy(&raw[h.offset_start as usize..h.offset_end as usize])
                .trim()
                .to_owned()
        })
}

/// Every part tagged `REM-Section-Type: rem_message/xml_evidence` of every message of the kit.
fn kit_evidences(kit: &Path) -> Vec<KitEvidence> {
    let mut files = Vec::new();
    emls(kit, &mut files);
    let mut out = Vec::new();
    for path in files {
        let raw = std::fs::read(&path).unwrap();
        let m = MessageParser::default()
            .parse(&raw)
            .unwrap_or_else(|| panic!("{}: not a message", path.display()));
        let top = m.parts[0].headers.as_slice();
        let event_header = header(&raw, top, "REM-EventIdentifier");
        let reason_header = header(&raw, top, "REM-ReasonIdentifier");
        for part in &m.parts {
            let tag = header(&raw, &part.headers, "REM-Section-Type");
            if tag.as_deref() == Some("rem_message/xml_evidence") {
                out.push(KitEvidence {
                    path: path.clone(),
                    event_header: event_header.clone(),
                    reason_header: reason_header.clone(),
                    xml: part.contents().to_vec(),
                });
            }
        }
    }
    out
}

#[test]
fn every_evidence_of_the_kit_parses_and_agrees_with_its_message() {
    let Some(kit) = rem_kit_dir() else { return };
    let all = kit_evidences(&kit);
    assert!(
        all.len() >= 200,
        "only {} evidences found in the kit",
        all.len()
    );
    let mut events = std::collections::BTreeSet::new();
    let mut codes = std::collections::BTreeSet::new();
    for k in &all {
        let name = k.path.strip_prefix(&kit).unwrap().display().to_string();
        let e = Evidence::parse(&k.xml).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert!(e.has_signature, "{name}: signature not seen");
        assert_eq!(e.version, VERSION, "{name}");
        assert_eq!(
            Some(e.event.uri()),
            k.event_header,
            "{name}: REM-EventIdentifier"
        );
        assert_eq!(e.reasons.len(), 1, "{name}");
        assert_eq!(
            Some(&e.reasons[0].code),
            k.reason_header.as_ref(),
            "{name}: REM-ReasonIdentifier"
        );
        let reason = e
            .reason()
            .unwrap_or_else(|| panic!("{name}: reason {:?} unknown", e.reasons[0]));
        assert!(
            reason.allowed_with(e.event),
            "{name}: {reason} with {}",
            e.event
        );
        assert_eq!(e.reasons[0].details[0], reason.code, "{name}");
        if name.starts_with("agid-rem-policy-it") {
            // The AgID examples write the table's wording; the ETSI ones say REM/REMSP.
            assert_eq!(e.reasons[0].details[1], reason.details, "{name}");
        }
        assert!(!e.recipients.is_empty(), "{name}");
        assert!(!e.issuer.is_empty(), "{name}");
        let sender = e.sender.identifier.as_ref().unwrap();
        assert_eq!(sender.scheme, "mailto", "{name}");
        assert!(e.sender.assurance.is_some(), "{name}");
        let part = &e.user_content.as_ref().unwrap().parts[0];
        assert_eq!(part.content_type, "message/rfc822", "{name}");
        assert_eq!(part.digest_value.as_ref().unwrap().len(), 44, "{name}");
        if let Some(n) = e.refers_to_recipient {
            assert!(n >= 1 && n as usize <= e.recipients.len(), "{name}");
        }
        // What we read, we write back and read again the same (the signature aside).
        let again = Evidence::parse(&e.to_xml()).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(
            again,
            Evidence {
                has_signature: false,
                ..e.clone()
            },
            "{name}"
        );
        events.insert(e.event.name());
        codes.insert(reason.code);
    }
    eprintln!(
        "rem kit: {} evidences, events {:?}, reasons {:?}",
        all.len(),
        events,
        codes
    );
    // The kit covers every relay and consignment outcome of the REM baseline.
    assert_eq!(events.len(), 7, "{events:?}");
    // Every REM baseline and AgID reason but RA04, RD02 and the non-ERDS ones (RF..).
    assert_eq!(codes.len(), 23, "{codes:?}");
}

// ---------------------------------------------------------------------------------------
// Our writer, every event, every reason

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A full evidence for `event`, with the components EN 319 532-4 table C.21 asks of it.
fn sample(event: Event, reason: Option<&Reason>) -> Evidence {
    let relay = matches!(
        event,
        Event::RelayAcceptance | Event::RelayRejection | Event::RelayFailure
    );
    let consignment = matches!(
        event,
        Event::ContentConsignment | Event::ContentConsignmentFailure
    );
    let non_erds = matches!(
        event,
        Event::RelayToNonERDS | Event::RelayToNonERDSFailure | Event::ReceivedFromNonERDS
    );
    Evidence {
        version: VERSION.to_owned(),
        xml_id: None,
        evidence_id: format!("ev-{}@rem.example.it", event.name()),
        event,
        reasons: reason.map(EventReason::of).into_iter().collect(),
        event_time: at("2026-12-06T10:11:12.345Z"),
        issuer_policy_ids: vec![
            "http://uri.etsi.org/19532/v1#/REMbaseline".to_owned(),
            "https://eidas.agid.gov.it/REM/rem-policy-it#evidence-issuer-policy".to_owned(),
        ],
        issuer: vec![SamlAttribute::legal_name(
            "Gestore <REM> & \"figli\" S.p.A.",
        )],
        sender: UserDetails {
            identity: vec![
                SamlAttribute::person_identifier("IT/IT/ABCDEF0123"),
                SamlAttribute::family_name("D'Annunzio"),
                SamlAttribute::first_name("Gabriele"),
            ],
            identifier: Some(Identifier::mailto("mittente@rem.example.it")),
            assurance: Some(AssuranceLevels {
                level: "http://eidas.europa.eu/LoA/substantial".to_owned(),
                policy_id: Some(
                    "https://eidas.agid.gov.it/REM/rem-policy-it#assurance-level-policy".to_owned(),
                ),
                authentication_time: at("2026-12-06T10:01:00Z"),
                authentication_method:
                    "https://eidas.agid.gov.it/REM/rem-policy-it#authentication-method".to_owned(),
            }),
        },
        recipients: vec![
            UserDetails {
                identity: vec![SamlAttribute::person_identifier("IT/IT/99")],
                ..UserDetails::mailto("uno@altro.example.it")
            },
            UserDetails::mailto("due@altro.example.it"),
        ],
        submission_time: Some(at("2026-12-06T10:11:00Z")),
        refers_to_recipient: consignment.then_some(2),
        message_id: Some("msg-1@rem.example.it".to_owned()),
        user_content: Some(UserContentInfo {
            app_layer_identifier: Some("<ua-1@client.example>".to_owned()),
            composing_parts: Some(1),
            parts: vec![PartInfo::original_message(
                "ePggZQ9/Uwbe6ui/mqn+moZJcfkdFVIluG1B4a3ov9k=",
            )],
        }),
        external_system: non_erds.then(|| "mx.plain.example.com".to_owned()),
        external_erds: relay.then(|| vec![SamlAttribute::legal_name("Altro gestore")]),
        general_info: Some(GeneralEvidenceInfo {
            subject: Some(
                "Oggetto <prova> & \"virgolette\" l'apostrofo è\r\nriga due\t·".to_owned(),
            ),
            untrusted_path_to_recipient: if non_erds { vec![2] } else { vec![] },
        }),
        relay_info: relay.then(|| RelayEvidenceInfo {
            refers_to: vec![1, 2],
        }),
        has_signature: false,
    }
}

/// Every event with each reason allowed with it (and the events outside the baseline with
/// none).
fn every_case() -> Vec<Evidence> {
    let mut out = Vec::new();
    for event in Event::ALL {
        let reasons: Vec<_> = event.reasons().collect();
        if reasons.is_empty() {
            out.push(sample(event, None));
        }
        for r in reasons {
            out.push(sample(event, Some(r)));
        }
    }
    out
}

#[test]
fn every_event_and_reason_round_trips() {
    let cases = every_case();
    assert_eq!(
        cases.len(),
        9 + 36,
        "events without reasons + (event, reason) pairs"
    );
    for e in cases {
        let xml = e.to_xml();
        let back = Evidence::parse(&xml)
            .unwrap_or_else(|err| panic!("{}: {err}\n{}", e.event, String::from_utf8_lossy(&xml)));
        assert_eq!(back, e);
        if let Some(r) = e.reason() {
            assert!(r.allowed_with(e.event));
        }
    }
}

/// The schemas the normative evidence XSD imports, looked up in `$PEC_REM_XSD_DIR`, the
/// kit, and Debian's `opensaml-schemas` / `xmltooling-schemas`; copied with a catalog into
/// a temporary directory so that xmllint runs with `--nonet`. `Err` names what is missing.
fn schema_set(kit: &Path, into: &Path) -> Result<PathBuf, Vec<String>> {
    let normative = kit.join("etsi-en-319-532-4/NORMATIVE-XSD");
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("PEC_REM_XSD_DIR") {
        dirs.push(PathBuf::from(d));
    }
    dirs.extend([
        normative.clone(),
        kit.join("ts-119-612-xsd"),
        PathBuf::from("/usr/share/xml/xmltooling"),
        PathBuf::from("/usr/share/xml/opensaml"),
    ]);
    let main = std::fs::read_to_string(normative.join("EVIDENCE19352v117-202201.xsd")).unwrap();
    // Without the comments, which name the schemas' web addresses.
    let mut uncommented = String::new();
    let mut rest = main.as_str();
    while let Some(a) = rest.find("<!--") {
        uncommented.push_str(&rest[..a]);
        rest = rest[a..].split_once("-->").map_or("", |(_, r)| r);
    }
    uncommented.push_str(rest);
    let mut wanted: Vec<String> = uncommented
        .split("schemaLocation=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_owned)
        .collect();
    wanted.push("EVIDENCE19352v117-202201.xsd".to_owned());
    let mut missing = Vec::new();
    for name in &wanted {
        match dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
            Some(p) => {
                std::fs::copy(&p, into.join(name)).unwrap();
            }
            None => missing.push(name.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(missing);
    }
    // The imported schemas import the W3C ones by their web address.
    let mut catalog = String::from(
        "<?xml version=\"1.0\"?>\n<catalog xmlns=\"urn:oasis:names:tc:entity:xmlns:xml:catalog\">\n",
    );
    for (url, file) in [
        ("http://www.w3.org/2001/xml.xsd", "xml.xsd"),
        (
            "http://www.w3.org/TR/2002/REC-xmldsig-core-20020212/xmldsig-core-schema.xsd",
            "xmldsig-core-schema.xsd",
        ),
        (
            "http://www.w3.org/TR/2002/REC-xmlenc-core-20021210/xenc-schema.xsd",
            "xenc-schema.xsd",
        ),
    ] {
        let path = into.join(file).display().to_string();
        catalog.push_str(&format!(
            "<system systemId=\"{url}\" uri=\"file://{path}\"/><uri name=\"{url}\" uri=\"file://{path}\"/>\n"
        ));
    }
    catalog.push_str("</catalog>\n");
    std::fs::write(into.join("catalog.xml"), catalog).unwrap();
    Ok(into.join("EVIDENCE19352v117-202201.xsd"))
}

fn xmllint_present() -> bool {
    Command::new("xmllint")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn every_event_and_reason_validates_against_the_normative_schema() {
    let Some(kit) = rem_kit_dir() else { return };
    if !xmllint_present() {
        eprintln!("SKIPPED: xmllint absent (apt-get install libxml2-utils)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let xsd = match schema_set(&kit, tmp.path()) {
        Ok(x) => x,
        Err(missing) => {
            eprintln!(
                "SKIPPED: schema validation: the evidence XSD imports {missing:?}, found neither \
                 in the kit nor in Debian's opensaml-schemas/xmltooling-schemas; put them in \
                 $PEC_REM_XSD_DIR"
            );
            return;
        }
    };
    for e in every_case() {
        let file = tmp.path().join(format!(
            "{}-{}.xml",
            e.event,
            e.reason().map_or("none", |r| r.code)
        ));
        std::fs::write(&file, e.to_xml()).unwrap();
        let out = Command::new("xmllint")
            .env("XML_CATALOG_FILES", tmp.path().join("catalog.xml"))
            .args(["--noout", "--nonet", "--schema"])
            .arg(&xsd)
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------
// The AgID SubmissionAcceptance, rebuilt from its values

/// A namespace-resolved element: (namespace, local name), attributes other than namespace
/// declarations, trimmed text, children.
#[derive(Debug, PartialEq)]
struct El {
    name: (String, String),
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<El>,
}

fn tree(xml: &[u8]) -> El {
    let mut r = NsReader::from_str(std::str::from_utf8(xml).unwrap());
    let mut stack: Vec<El> = Vec::new();
    let ns = |r: ResolveResult<'_>| match r {
        ResolveResult::Bound(n) => n.as_ref().to_owned(),
        _ => String::new(),
    };
    loop {
        let (res, ev) = r.read_resolved_event().unwrap();
        let res = ns(res);
        match ev {
            X::Start(ref s) | X::Empty(ref s) => {
                let mut attrs: Vec<(String, String)> = s
                    .attributes()
                    .map(|a| a.unwrap())
                    .filter(|a| !a.key.as_ref().starts_with("xmlns"))
                    .map(|a| {
                        (
                            a.key.as_ref().to_owned(),
                            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                .unwrap()
                                .into_owned(),
                        )
                    })
                    .collect();
                attrs.sort();
                let el = El {
                    name: (res, s.local_name().as_ref().to_owned()),
                    attrs,
                    text: String::new(),
                    children: Vec::new(),
                };
                if matches!(ev, X::Empty(_)) {
                    stack.last_mut().unwrap().children.push(el);
                } else {
                    stack.push(el);
                }
            }
            X::End(_) => {
                let mut el = stack.pop().unwrap();
                el.text = el.text.trim().to_owned();
                match stack.last_mut() {
                    Some(p) => p.children.push(el),
                    None => return el,
                }
            }
            X::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            X::GeneralRef(g) => {
                let v = match g.resolve_char_ref().unwrap() {
                    Some(c) => c.to_string(),
                    None => quick_xml::escape::resolve_xml_entity(&g)
                        .unwrap()
                        .to_owned(),
                };
                stack.last_mut().unwrap().text.push_str(&v);
            }
            X::Eof => panic!("no root"),
            _ => {}
        }
    }
}

#[test]
fn the_agid_submission_acceptance_is_rebuilt_from_its_values() {
    let Some(kit) = rem_kit_dir() else { return };
    let path = kit.join("agid-rem-policy-it/Intra-REM-flow/REM_SubmissionAcceptance.RA01.eml");
    let theirs = kit_evidences(path.parent().unwrap())
        .into_iter()
        .find(|k| k.path == path)
        .unwrap()
        .xml;
    let policy = "https://eidas.agid.gov.it/REM/rem-policy-it";
    let ours = Evidence {
        version: VERSION.to_owned(),
        xml_id: None,
        evidence_id: "16A0CF65.00566CE0.242DDC3F.03B4A2C1.rem-service@s1-rems-only-for-test.it"
            .to_owned(),
        event: Event::SubmissionAcceptance,
        reasons: vec![EventReason::of(Reason::by_code("RA01").unwrap())],
        event_time: Utc.with_ymd_and_hms(2022, 8, 3, 14, 22, 11).unwrap(),
        issuer_policy_ids: vec![
            "http://uri.etsi.org/19532/v1#/REMbaseline".to_owned(),
            format!("{policy}#evidence-issuer-policy"),
        ],
        issuer: vec![SamlAttribute::legal_name("S-REMS-1 provider")],
        sender: UserDetails {
            identity: vec![SamlAttribute::person_identifier(
                "IT/IT/FF298B2314731420A414483F97CFFA6E4C2EA296C22BEFBC3D5D48EF46A9BD7B",
            )],
            identifier: Some(Identifier::mailto(
                "sender@sender-own-domain-only-for-test.it",
            )),
            assurance: Some(AssuranceLevels {
                level: "http://eidas.europa.eu/LoA/substantial".to_owned(),
                policy_id: Some(format!("{policy}#assurance-level-policy")),
                authentication_time: Utc.with_ymd_and_hms(2022, 8, 3, 14, 17, 11).unwrap(),
                authentication_method: format!("{policy}#authentication-method"),
            }),
        },
        recipients: vec![
            UserDetails::mailto("recC@r2-rems-only-for-test.it"),
            UserDetails::mailto("recD@r2-rems-only-for-test.it"),
        ],
        submission_time: Some(Utc.with_ymd_and_hms(2022, 8, 3, 14, 22, 11).unwrap()),
        refers_to_recipient: None,
        message_id: Some(
            "26A0CF65.00566CE0.242DDC3F.85251369.rem-service@s1-rems-only-for-test.it".to_owned(),
        ),
        user_content: Some(UserContentInfo {
            app_layer_identifier: Some("<30be01d30072$242ddc3f$f9b72bf0$@it>".to_owned()),
            composing_parts: Some(1),
            parts: vec![PartInfo::original_message(
                "ePggZQ9/Uwbe6ui/mqn+moZJcfkdFVIluG1B4a3ov9k=",
            )],
        }),
        external_system: None,
        external_erds: None,
        general_info: Some(GeneralEvidenceInfo {
            subject: Some(
                "Oggetto dell'original message - Subject of the original message".to_owned(),
            ),
            untrusted_path_to_recipient: vec![],
        }),
        relay_info: None,
        has_signature: false,
    };
    let mut kit_tree = tree(&theirs);
    let sig = kit_tree
        .children
        .iter()
        .position(|c| c.name.1 == "Signature")
        .expect("the kit's evidence is signed");
    kit_tree.children.remove(sig);
    let our_tree = tree(&ours.to_xml());
    // Element by element, so that a difference names its place.
    assert_eq!(our_tree.name, kit_tree.name);
    assert_eq!(our_tree.attrs, kit_tree.attrs);
    assert_eq!(our_tree.children.len(), kit_tree.children.len());
    for (o, k) in our_tree.children.iter().zip(&kit_tree.children) {
        assert_eq!(o, k, "<{}>", k.name.1);
    }
    assert_eq!(our_tree, kit_tree);
    // And the reader gives back the same model from the kit's signed evidence.
    assert_eq!(
        Evidence::parse(&theirs).unwrap(),
        Evidence {
            has_signature: true,
            ..ours
        }
    );
}

/// Where the schemas cannot be had, the kit's evidences are the reference shape: every
/// element our writer emits, for every event and reason, sits under the same parent with
/// the same namespace in some evidence of the kit, and siblings come in the kit's order.
#[test]
fn every_element_we_write_has_the_kits_place_and_order() {
    let Some(kit) = rem_kit_dir() else { return };
    type Name = (String, String);
    fn walk(
        el: &El,
        path: &mut Vec<Name>,
        places: &mut std::collections::BTreeSet<Vec<Name>>,
        order: &mut std::collections::BTreeSet<(Vec<Name>, Name, Name)>,
    ) {
        path.push(el.name.clone());
        places.insert(path.clone());
        let kids: Vec<&El> = el
            .children
            .iter()
            .filter(|c| c.name.1 != "Signature")
            .collect();
        for (i, a) in kids.iter().enumerate() {
            for b in &kids[i + 1..] {
                if a.name != b.name {
                    order.insert((path.clone(), a.name.clone(), b.name.clone()));
                }
            }
            walk(a, path, places, order);
        }
        path.pop();
    }
    let (mut kit_places, mut kit_order) = Default::default();
    for k in kit_evidences(&kit) {
        walk(
            &tree(&k.xml),
            &mut Vec::new(),
            &mut kit_places,
            &mut kit_order,
        );
    }
    for e in every_case() {
        let (mut places, mut order) = Default::default();
        walk(&tree(&e.to_xml()), &mut Vec::new(), &mut places, &mut order);
        for p in &places {
            let last = &p.last().unwrap().1;
            // Not in the kit (no non-ERDS example); EN 319 532-4 §C.3.4 names it.
            if last == "ForwardedToExternalSystem" {
                continue;
            }
            assert!(
                kit_places.contains(p),
                "{} {}: {:?} is nowhere in the kit",
                e.event,
                e.reason().map_or("", |r| r.code),
                p.iter()
                    .map(|(ns, n)| format!("{{{ns}}}{n}"))
                    .collect::<Vec<_>>()
            );
        }
        for (parent, a, b) in &order {
            assert!(
                !kit_order.contains(&(parent.clone(), b.clone(), a.clone())),
                "{}: {a:?} before {b:?} under {:?}; the kit has them the other way",
                e.event,
                parent.last()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Hostile input

#[test]
fn declarations_entities_and_inclusions_are_refused() {
    let good = String::from_utf8(sample(Event::SubmissionAcceptance, None).to_xml()).unwrap();
    let body = good.split_once("?>").unwrap().1;
    let cases = [
        (
            format!("<!DOCTYPE x [<!ENTITY e \"boom\">]>{body}"),
            XmlGateError::Doctype,
        ),
        (
            body.replace("msg-1@rem", "&xxe;@rem"),
            XmlGateError::ExternalReference,
        ),
        (
            body.replace(
                "<tns:MessageIdentifier>",
                "<xi:include xmlns:xi=\"http://www.w3.org/2001/XInclude\" href=\"/etc/passwd\"/><tns:MessageIdentifier>",
            ),
            XmlGateError::XInclude,
        ),
    ];
    for (doc, want) in cases {
        assert_eq!(
            Evidence::parse(doc.as_bytes()),
            Err(EvidenceError::Gate(want))
        );
    }
}

#[test]
fn truncated_garbage_and_deep_input_give_errors() {
    let xml = sample(Event::RelayFailure, Reason::by_code("RB09")).to_xml();
    assert!(Evidence::parse(&xml).is_ok());
    // Every prefix of the document (but the whole) is an error, never a panic.
    let end = xml.len() - 1 - xml.iter().rev().position(|&b| b == b'>').unwrap();
    for cut in (0..end).step_by(7) {
        assert!(Evidence::parse(&xml[..cut]).is_err(), "cut at {cut}");
    }
    for junk in [
        &b""[..],
        b"\x00\x01\x02",
        b"\xFF\xFE<",
        b"<<<>>>",
        b"<a></b>",
        b"not xml at all",
        b"<tns:Evidence xmlns:tns=\"http://uri.etsi.org/19522/v1#\"/>",
        b"<Evidence/>",
    ] {
        assert!(Evidence::parse(junk).is_err(), "{junk:?}");
    }
    let deep = format!(
        "<tns:Evidence xmlns:tns=\"http://uri.etsi.org/19522/v1#\" version=\"1\">{}{}</tns:Evidence>",
        "<a>".repeat(100_000),
        "</a>".repeat(100_000)
    );
    assert!(matches!(
        Evidence::parse(deep.as_bytes()),
        Err(EvidenceError::TooDeep(_))
    ));
    let shallow = "<a>".repeat(MAX_DEPTH - 1);
    assert!(!matches!(
        Evidence::parse(format!("{shallow}x").as_bytes()),
        Err(EvidenceError::TooDeep(_))
    ));
}

#[test]
fn what_cannot_be_acted_upon_is_refused() {
    let good = String::from_utf8(sample(Event::ContentConsignment, None).to_xml()).unwrap();
    let swap = |from: &str, to: &str| {
        assert!(good.contains(from), "{from}");
        Evidence::parse(good.replacen(from, to, 1).as_bytes())
    };
    assert_eq!(
        swap("Event/ContentConsignment<", "Event/Nonsense<"),
        Err(EvidenceError::UnknownEvent(
            "http://uri.etsi.org/19522/Event/Nonsense".to_owned()
        ))
    );
    assert!(matches!(
        swap("2026-12-06T10:11:12.345Z", "yesterday"),
        Err(EvidenceError::BadValue {
            element: "EventTime",
            ..
        })
    ));
    assert!(matches!(
        swap(
            "<EvidenceRefersToRecipient>2<",
            "<EvidenceRefersToRecipient>-2<"
        ),
        Err(EvidenceError::BadValue { .. })
    ));
    // A start tag renamed leaves its end tag unmatched.
    assert!(matches!(
        swap("<tns:SenderDetails>", "<tns:Nope>"),
        Err(EvidenceError::Syntax { .. })
    ));
    // A critical extension we do not know is refused; a non-critical one is ignored.
    let ext = |critical: &str| {
        good.replacen(
            "<tns:Extensions>",
            &format!(
                "<tns:Extensions><tns:Extension isCritical=\"{critical}\"><x:Other xmlns:x=\"urn:x\"/></tns:Extension>"
            ),
            1,
        )
    };
    assert_eq!(
        Evidence::parse(ext("true").as_bytes()),
        Err(EvidenceError::CriticalExtension("{urn:x}Other".to_owned()))
    );
    assert_eq!(
        Evidence::parse(ext("false").as_bytes()).unwrap(),
        Evidence::parse(good.as_bytes()).unwrap()
    );
    // Mandatory components.
    let without = |start: &str, end: &str| {
        let a = good.find(start).unwrap();
        let b = good.find(end).unwrap() + end.len();
        Evidence::parse(format!("{}{}", &good[..a], &good[b..]).as_bytes())
    };
    assert_eq!(
        without("<EventTime>", "</EventTime>"),
        Err(EvidenceError::Missing("EventTime"))
    );
    assert_eq!(
        without("<tns:SenderDetails>", "</tns:SenderDetails>"),
        Err(EvidenceError::Missing("SenderDetails"))
    );
    assert_eq!(
        without(
            "<tns:EvidenceIssuerDetails>",
            "</tns:EvidenceIssuerDetails>"
        ),
        Err(EvidenceError::Missing("EvidenceIssuerDetails"))
    );
    // Prefixes are the writer's choice, not the reader's concern.
    let renamed = good
        .replace("tns:", "erds:")
        .replace("xmlns:tns=", "xmlns:erds=");
    assert_eq!(
        Evidence::parse(renamed.as_bytes()).unwrap(),
        Evidence::parse(good.as_bytes()).unwrap()
    );
    // An undeclared prefix is an error.
    assert!(matches!(
        Evidence::parse(good.replace("xmlns:tns=", "xmlns:zzz=").as_bytes()),
        Err(EvidenceError::Syntax { .. })
    ));
}

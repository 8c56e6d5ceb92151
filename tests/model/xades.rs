// SPDX-License-Identifier: GPL-3.0-or-later
//! XML-DSig and XAdES: every evidence of the REM kit verifies (and fails once altered), our
//! canonical bytes equal xmlsec1's, what we sign verifies with xmlsec1.

use std::path::{Path, PathBuf};

use pec::crypto::xmldsig;

use crate::samples::rem_kit_dir;

/// Every `.eml` under `dir`, recursively, sorted.
fn emls(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "eml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn collect_evidences(message: &mail_parser::Message<'_>, out: &mut Vec<Vec<u8>>) {
    for part in &message.parts {
        let tagged = part.headers.iter().any(|h| {
            h.name().eq_ignore_ascii_case("REM-Section-Type")
                && h.value()
                    .as_text()
                    .is_some_and(|v| v.trim() == "rem_message/xml_evidence")
        });
        if tagged {
            out.push(part.contents().to_vec());
        }
        if let Some(inner) = part.message() {
            collect_evidences(inner, out);
        }
    }
}

/// `(file, evidence XML)` of every evidence part of every kit message.
fn kit_evidences(kit: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for path in emls(kit) {
        let raw = std::fs::read(&path).unwrap();
        let message = mail_parser::MessageParser::default().parse(&raw).unwrap();
        let mut found = Vec::new();
        collect_evidences(&message, &mut found);
        out.extend(found.into_iter().map(|e| (path.clone(), e)));
    }
    out
}

#[test]
fn every_kit_evidence_signature_verifies() {
    let Some(kit) = rem_kit_dir() else { return };
    let evidences = kit_evidences(&kit);
    assert!(evidences.len() >= 200, "{} evidences", evidences.len());
    for (path, xml) in &evidences {
        let v = xmldsig::verify(xml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(v.covers_document(), "{}", path.display());
    }
}

// SPDX-License-Identifier: GPL-3.0-or-later
//! Locates the read-only real PEC samples (spec §14). They are never copied into the
//! project: tests read them where they are.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `$PEC_SAMPLES` if set, else `<crate>/../shared/pec-samples`. When the directory is
/// absent, prints a loud `SKIPPED:` line on stderr and returns `None`.
pub fn samples_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("PEC_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/pec-samples"
            ))
        });
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: pec-samples not found at {}", dir.display());
        None
    }
}

/// The signed entity of the Namirial sample.
pub const NAMIRIAL: &str = "namirial-2024-busta-trasporto-signed-entity.eml";

/// The signed entity of the Namirial sample carries no PEC header: the headers are not
/// signed and were left in the Mailman-archived outer message. Rebuilds the envelope as it
/// left Namirial: its original header fields (taken from the archived message, Subject
/// without the list's prefixes) followed by the signed entity.
pub fn namirial_envelope(dir: &Path) -> Vec<u8> {
    let outer = std::fs::read(dir.join("namirial-2024-busta-trasporto-via-mailman.eml")).unwrap();
    let text = String::from_utf8_lossy(&outer);
    let header = text.split("\n\n").next().unwrap_or_default();
    let keep = [
        "x-riferimento-message-id",
        "date",
        "message-id",
        "to",
        "x-trasporto",
        "from",
        "mime-version",
    ];
    let mut out = String::new();
    let mut keeping = false;
    for line in header.lines() {
        if line.starts_with([' ', '\t']) {
            if keeping {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        keeping = keep.contains(&name.as_str());
        if keeping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("Subject: POSTA CERTIFICATA: Norah Colly\n");
    let mut raw = out.into_bytes();
    raw.extend(std::fs::read(dir.join(NAMIRIAL)).unwrap());
    raw
}

/// `$PEC_REM_KIT` if set, else `<crate>/../shared/rem-kit` (the ETSI and AgID REM
/// examples, read where they are). When absent, prints a loud `SKIPPED:` line on stderr and
/// returns `None`.
pub fn rem_kit_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("PEC_REM_KIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/rem-kit"))
        });
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: ../shared/rem-kit absent (looked at {})",
            dir.display()
        );
        None
    }
}

/// SHA-256 of the two self-signed "root-ca, Nowina Solutions, PKI-TEST" roots the REM
/// kit's time-stamp tokens chain to (the AgID flow's and the ETSI scenarios'). The kit's
/// own `TSA.NOWNTSTS202004.pem` is a third key that anchors none of them.
pub const REM_KIT_TSA_ROOTS: [&str; 2] = [
    "604a8fb227777c40b8c72b54d435a81f3f7d61d1c6612b543318af7b59a39c78",
    "6a44637636d83b9806ce1c8c6d7d070e51f66364c257814ef65b54250238ff4d",
];

/// The REM kit's TSA anchors: the certificates carried by its tokens whose fingerprints are
/// pinned in [`REM_KIT_TSA_ROOTS`], written one per file under `out` (`tsa-root-N.pem`):
/// both are named "root-ca", so OpenSSL would pick the first of a file holding both.
pub fn rem_kit_tsa_anchors(kit: &Path, out: &Path) -> Vec<PathBuf> {
    use base64::Engine as _;
    use sha2::Digest;
    let mut files = Vec::new();
    let mut found: Vec<String> = Vec::new();
    for sub in [
        "agid-rem-policy-it/Intra-REM-flow/REM_RelayAcceptance.RB01.eml",
        "etsi-en-319-532-4/INFORMATIVE-EXAMPLES/SCENARIOS/S1/2a.Issued_by_S-REMS-A/REM_Dispatch.RA01.eml",
    ] {
        let raw = std::fs::read(kit.join(sub)).unwrap();
        for ev in pec::rem::message::parse(&raw).unwrap().evidences {
            let text = String::from_utf8(ev.body).unwrap();
            let start = text.find("EncapsulatedTimeStamp").unwrap();
            let from = start + text[start..].find('>').unwrap() + 1;
            let to = from + text[from..].find('<').unwrap();
            let b64: String = text[from..to].split_whitespace().collect();
            let token = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            let p7 = openssl::pkcs7::Pkcs7::from_der(&token).unwrap();
            for cert in p7.signed().and_then(|s| s.certificates()).unwrap() {
                let fp = hex::encode(sha2::Sha256::digest(cert.to_der().unwrap()));
                if REM_KIT_TSA_ROOTS.contains(&fp.as_str()) && !found.contains(&fp) {
                    let path = out.join(format!("tsa-root-{}.pem", found.len()));
                    std::fs::write(&path, cert.to_pem().unwrap()).unwrap();
                    files.push(path);
                    found.push(fp);
                }
            }
        }
    }
    assert_eq!(found.len(), 2, "both pinned TSA roots in the kit's tokens");
    files
}

/// The REM kit's two PKIs (AgID and ETSI), roots and intermediates, in one PEM file
/// written under `out`.
pub fn rem_kit_anchors(kit: &Path, out: &Path) -> PathBuf {
    let mut pem = Vec::new();
    for p in [
        "agid-rem-policy-it/certificates/REM-ROOT-CA.crt",
        "agid-rem-policy-it/certificates/REM-POLICY-IT-INTERMEDIATE-CERTIFICATE.crt",
        "etsi-en-319-532-4/INFORMATIVE-EXAMPLES/CERTIFICATES/REM-ROOT-CA.crt",
        "etsi-en-319-532-4/INFORMATIVE-EXAMPLES/CERTIFICATES/REM-INTERMEDIATE-CA.crt",
    ] {
        pem.extend(std::fs::read(kit.join(p)).unwrap());
        pem.push(b'\n');
    }
    let path = out.join("rem-anchors.pem");
    std::fs::write(&path, pem).unwrap();
    path
}

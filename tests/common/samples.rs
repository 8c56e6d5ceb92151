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

/// The REM reference kit: `$PEC_REM_KIT` if set, else `<crate>/../shared/rem-kit`. When the
/// directory is absent, prints a loud `SKIPPED:` line on stderr and returns `None`.
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

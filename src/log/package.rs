// SPDX-License-Identifier: GPL-3.0-or-later
//! Hand-over of a sealed day to long-term preservation (conservazione a norma, the seed
//! providers' manuals: the legal log goes to an accredited preservation service): one
//! self-describing package that a preservation service, an auditor or a judge checks
//! offline with `pec log verify --package FILE`, without our store or configuration.
//!
//! The package is a POSIX tar archive (`pec-registro-<day>.tar`) holding, in this order:
//!
//! | file | what |
//! | --- | --- |
//! | `LEGGIMI.txt` | what the package is and how to check it by hand with `openssl` |
//! | `manifest.json` | format, provider, day, bounds, count, ids, SHA-256 of the export, sealing instant, TSA, and name + size + SHA-256 of every other file |
//! | `registro.jsonl` | the day's canonical export, byte for byte what the seal signs: one record per line with its hash and the previous record's |
//! | `registro.csv` | the same records as CSV (for people; not signed, hashed in the manifest) |
//! | `sigillo.p7s` | the seal: detached CMS signature (DER) over `registro.jsonl` |
//! | `marca.tsr` | the RFC 3161 time-stamp token (DER) over the export's SHA-256, when the seal has one |
//! | `certificati.pem` | the certificates the signature and the token carry |
//!
//! Verification checks every file against the manifest (and that no other file is
//! there), the export's SHA-256 and count, every line's canonical form and hash, the chain
//! between consecutive ids, the signature over the export (its signer chained to `--ca`
//! as of the sealing when given) and the token's imprint and signature (`--tsa-ca`).

use std::io::{Read, Write};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{day_bounds, to_csv, verify_signature, LogError, VerifyOptions};
use crate::crypto::tsa;
use crate::message::time::Instant;
use crate::store::chain::parse_export_line;
use crate::store::{Export, LogQuery, LogStore, SealRecord};

/// The `format` of the manifests this program writes.
pub const FORMAT: &str = "pec-log-package/1";

/// The export's name in the package.
pub const EXPORT: &str = "registro.jsonl";
const CSV: &str = "registro.csv";
const SIGNATURE: &str = "sigillo.p7s";
const TOKEN: &str = "marca.tsr";
const CERTIFICATES: &str = "certificati.pem";
const README: &str = "LEGGIMI.txt";
const MANIFEST: &str = "manifest.json";

/// Largest file a package may hold when read back (a day's export of 10 million records
/// is about 5 GB; a package is checked by streaming nothing larger than this in memory).
pub const MAX_FILE: u64 = 8 << 30;

/// One file of the package as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    /// The provider (gestore) whose log this is.
    pub provider: String,
    /// Italian legal day, `YYYY-MM-DD`.
    pub day: String,
    /// `[from, to)` of the day, RFC 3339 UTC.
    pub from: String,
    pub to: String,
    pub records: i64,
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
    /// SHA-256 of `registro.jsonl`, lower-case hex.
    pub export_sha256: String,
    /// When the seal was made, RFC 3339 UTC.
    pub sealed_at: String,
    pub tsa_url: Option<String>,
    /// When this package was written, RFC 3339 UTC.
    pub packaged_at: String,
    pub files: Vec<FileEntry>,
}

/// Writes the package of sealed `day` to `out`; returns its manifest. The day must be
/// sealed and its records must still match the seal.
pub fn write(
    store: &dyn LogStore,
    day: NaiveDate,
    provider: &str,
    now: Instant,
    out: impl Write,
) -> Result<Manifest, LogError> {
    let (from, to) = day_bounds(day);
    let seal = store
        .seals(from, to)?
        .into_iter()
        .find(|s| s.day == day.to_string())
        .ok_or_else(|| LogError::Usage(format!("day {day} is not sealed (pec log seal)")))?;
    let Export {
        bytes: export,
        count,
        first_id,
        last_id,
    } = store.export_range(seal.from_at, seal.to_at)?;
    let sha: [u8; 32] = Sha256::digest(&export).into();
    if sha[..] != seal.export_sha256[..] || (count, first_id, last_id) != ids(&seal) {
        return Err(LogError::Usage(format!(
            "the records of {day} no longer match its seal (pec log verify names them): not packaged"
        )));
    }
    let events = store.search_events(&LogQuery {
        from: Some(Instant::from_unix(seal.from_at)),
        to: Some(Instant::from_unix(seal.to_at)),
        ..LogQuery::default()
    })?;
    let csv = to_csv(&events);
    let mut certificates = certificates_of(&seal.signature);
    if let Some(token) = &seal.tst {
        certificates.push_str(&certificates_of(token));
    }
    let mut files: Vec<(&str, Vec<u8>)> = vec![
        (EXPORT, export),
        (CSV, csv.into_bytes()),
        (SIGNATURE, seal.signature.clone()),
    ];
    if let Some(token) = &seal.tst {
        files.push((TOKEN, token.clone()));
    }
    files.push((CERTIFICATES, certificates.into_bytes()));
    // First in the archive, before the manifest, so that a person opening it reads it first.
    let readme = readme(&day.to_string(), seal.tst.is_some()).into_bytes();
    let manifest = Manifest {
        format: FORMAT.into(),
        provider: provider.into(),
        day: day.to_string(),
        from: Instant::from_unix(seal.from_at).rfc3339(),
        to: Instant::from_unix(seal.to_at).rfc3339(),
        records: count,
        first_id,
        last_id,
        export_sha256: hex::encode(sha),
        sealed_at: Instant::from_unix(seal.sealed_at).rfc3339(),
        tsa_url: seal.tsa_url.clone(),
        packaged_at: now.rfc3339(),
        files: std::iter::once(&(README, readme.clone()))
            .chain(&files)
            .map(|(name, bytes)| FileEntry {
                name: name.to_string(),
                size: bytes.len() as u64,
                sha256: hex::encode(Sha256::digest(bytes)),
            })
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| LogError::Usage(format!("manifest: {e}")))?;
    let mut tar = tar::Builder::new(out);
    let mtime = now.unix().max(0) as u64;
    let mut add = |name: &str, bytes: &[u8]| -> Result<(), LogError> {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o444);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, bytes)
            .map_err(|e| LogError::Usage(format!("writing the package: {e}")))
    };
    add(README, &readme)?;
    add(MANIFEST, &json)?;
    for (name, bytes) in &files {
        add(name, bytes)?;
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| LogError::Usage(format!("writing the package: {e}")))?;
    Ok(manifest)
}

fn ids(seal: &SealRecord) -> (i64, Option<i64>, Option<i64>) {
    (seal.count, seal.first_id, seal.last_id)
}

/// The certificates a CMS SignedData (a signature or a time-stamp token) carries, PEM.
fn certificates_of(der: &[u8]) -> String {
    let Ok(p7) = openssl::pkcs7::Pkcs7::from_der(der) else {
        return String::new();
    };
    let Some(certs) = p7.signed().and_then(|s| s.certificates()) else {
        return String::new();
    };
    certs
        .iter()
        .filter_map(|c| c.to_pem().ok())
        .map(|p| String::from_utf8_lossy(&p).into_owned())
        .collect()
}

fn readme(day: &str, stamped: bool) -> String {
    format!(
        "Pacchetto di versamento del registro dei messaggi PEC, giorno {day} (ora legale \
italiana).\n\
Legal log of a PEC provider for the Italian legal day {day}: a package for long-term \
preservation.\n\n\
manifest.json    what the package holds: provider, day, records, SHA-256 of every file\n\
registro.jsonl   the day's records, one per line, each with its hash and the previous \
record's (the signed content)\n\
registro.csv     the same records as CSV, for reading\n\
sigillo.p7s      the provider's detached CMS signature over registro.jsonl\n\
{}\
certificati.pem  the certificates the signature{} carries\n\n\
Check with pec:      pec log verify --package pec-registro-{day}.tar [--ca CA.pem] [--tsa-ca TSA-CA.pem]\n\
Check with openssl:  openssl cms -verify -binary -inform DER -in sigillo.p7s -content \
registro.jsonl -CAfile CA.pem -out /dev/null\n\
{}",
        if stamped {
            "marca.tsr        the RFC 3161 time stamp of SHA-256(registro.jsonl)\n"
        } else {
            ""
        },
        if stamped { " and the time stamp" } else { "" },
        if stamped {
            "                     openssl ts -reply -token_in -in marca.tsr -text  (its imprint is \
the export_sha256 of manifest.json)\n"
        } else {
            ""
        }
    )
}

/// What `pec log verify --package` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageReport {
    /// The manifest, when it could be read.
    pub manifest: Option<Manifest>,
    /// Records read from the export.
    pub records: i64,
    /// Empty when everything holds.
    pub problems: Vec<String>,
}

/// Reads a package from `input` and checks it offline (see the module documentation).
/// Only an unreadable archive is an error; everything else is a problem in the report.
pub fn verify(input: impl Read, opts: &VerifyOptions) -> Result<PackageReport, LogError> {
    let mut report = PackageReport::default();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut archive = tar::Archive::new(input);
    let entries = archive
        .entries()
        .map_err(|e| LogError::Usage(format!("not a package: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| LogError::Usage(format!("not a package: {e}")))?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(|e| LogError::Usage(format!("not a package: {e}")))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            report.problems.push(format!("{name}: not a regular file"));
            continue;
        }
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size > MAX_FILE {
            report
                .problems
                .push(format!("{name}: {size} bytes, over {MAX_FILE}"));
            continue;
        }
        let mut bytes = Vec::with_capacity(size as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| LogError::Usage(format!("not a package: {name}: {e}")))?;
        if files.iter().any(|(n, _)| *n == name) {
            report
                .problems
                .push(format!("{name}: twice in the package"));
            continue;
        }
        files.push((name, bytes));
    }
    let get = |name: &str| files.iter().find(|(n, _)| n == name).map(|(_, b)| b);
    let Some(json) = get(MANIFEST) else {
        report.problems.push(format!("no {MANIFEST}"));
        return Ok(report);
    };
    let manifest: Manifest = match serde_json::from_slice(json) {
        Ok(m) => m,
        Err(e) => {
            report.problems.push(format!("{MANIFEST}: {e}"));
            return Ok(report);
        }
    };
    if manifest.format != FORMAT {
        report.problems.push(format!(
            "{MANIFEST}: format \"{}\" is not \"{FORMAT}\"",
            manifest.format
        ));
    }
    for f in &manifest.files {
        match get(&f.name) {
            None => report
                .problems
                .push(format!("{}: listed but missing", f.name)),
            Some(b) => {
                let sha = hex::encode(Sha256::digest(b));
                if b.len() as u64 != f.size || sha != f.sha256 {
                    report.problems.push(format!(
                        "{}: does not match the manifest (size {}, sha-256 {sha})",
                        f.name,
                        b.len()
                    ));
                }
            }
        }
    }
    for (name, _) in &files {
        if name != MANIFEST && !manifest.files.iter().any(|f| f.name == *name) {
            report.problems.push(format!("{name}: not in the manifest"));
        }
    }
    let Some(export) = get(EXPORT) else {
        report.problems.push(format!("no {EXPORT}"));
        report.manifest = Some(manifest);
        return Ok(report);
    };
    let sha: [u8; 32] = Sha256::digest(export).into();
    if hex::encode(sha) != manifest.export_sha256 {
        report
            .problems
            .push(format!("{EXPORT}: its sha-256 is not the sealed one"));
    }
    check_records(export, &manifest, &mut report);
    let sealed_at = Instant::parse_cli(&manifest.sealed_at)
        .map(Instant::unix)
        .unwrap_or_else(|| {
            report
                .problems
                .push(format!("{MANIFEST}: sealed_at \"{}\"", manifest.sealed_at));
            0
        });
    match get(SIGNATURE) {
        None => report.problems.push(format!("no {SIGNATURE}")),
        Some(sig) => {
            if let Err(e) = verify_signature(sig, sealed_at, export, opts) {
                report.problems.push(format!("{SIGNATURE}: {e}"));
            }
        }
    }
    match get(TOKEN) {
        None => report.problems.push("not time-stamped".into()),
        Some(token) => {
            let sealed: [u8; 32] = hex::decode(&manifest.export_sha256)
                .ok()
                .and_then(|b| b.try_into().ok())
                .unwrap_or(sha);
            if let Err(e) = tsa::verify_token(token, &sealed, opts.tsa_ca.as_deref()) {
                report.problems.push(format!("{TOKEN}: {e}"));
            }
        }
    }
    report.manifest = Some(manifest);
    Ok(report)
}

/// Every line canonical with its own hash, consecutive ids chained, inside the day, and the
/// count and ids the manifest states.
fn check_records(export: &[u8], manifest: &Manifest, report: &mut PackageReport) {
    let (from, to) = match (
        Instant::parse_cli(&manifest.from),
        Instant::parse_cli(&manifest.to),
    ) {
        (Some(f), Some(t)) => (f.unix(), t.unix()),
        _ => {
            report.problems.push(format!("{MANIFEST}: from/to"));
            (i64::MIN, i64::MAX)
        }
    };
    let mut prev: Option<(i64, Vec<u8>)> = None;
    let (mut first, mut last) = (None, None);
    let body = export.strip_suffix(b"\n").unwrap_or(export);
    if !export.is_empty() && !export.ends_with(b"\n") {
        report
            .problems
            .push(format!("{EXPORT}: the last line has no end"));
    }
    for (n, line) in body.split(|b| *b == b'\n').enumerate() {
        if export.is_empty() {
            break;
        }
        report.records += 1;
        let (record, hash) = match parse_export_line(line) {
            Ok(r) => r,
            Err(e) => {
                report
                    .problems
                    .push(format!("{EXPORT} line {}: {e}", n + 1));
                prev = None;
                continue;
            }
        };
        if record.hash()[..] != hash[..] {
            report.problems.push(format!(
                "record {}: altered (its hash does not match its content)",
                record.id
            ));
        }
        if let Some((pid, phash)) = &prev {
            if record.id != pid + 1 {
                report.problems.push(format!(
                    "record {}: follows record {pid} (ids not consecutive)",
                    record.id
                ));
            } else if record.prev_hash != *phash {
                report
                    .problems
                    .push(format!("record {}: not chained to record {pid}", record.id));
            }
        }
        if !(from..to).contains(&record.at) {
            report
                .problems
                .push(format!("record {}: outside the day", record.id));
        }
        first.get_or_insert(record.id);
        last = Some(record.id);
        prev = Some((record.id, hash));
    }
    if (report.records, first, last) != (manifest.records, manifest.first_id, manifest.last_id) {
        report.problems.push(format!(
            "{EXPORT}: {} records (ids {:?}..{:?}), the manifest says {} ({:?}..{:?})",
            report.records, first, last, manifest.records, manifest.first_id, manifest.last_id
        ));
    }
}

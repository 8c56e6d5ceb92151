// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec verify` on REM messages and standalone ERDS evidences: the verdict of
//! [`crate::rem::judge`], as text or one JSON object per file, beside the PEC report.
//!
//! The REM anchors come from `--rem-anchors`, `--tsa-anchors` and, with `-c`, `[rem]
//! anchors` and `tsa_anchors`; the Trusted List peers view from `--trusted-list` (each
//! accepted with a `--tl-signer` certificate at the instant checked) and, with `-c`, the
//! lists in the store. Without a peers view the signer is not checked against a Trusted
//! List and the file counts as not valid, as a PEC message without `--trust`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::CliError;
use super::verify::VerifyArgs;
use crate::crypto::verify::ChainPolicy;
use crate::message::time::Instant;
use crate::rem::judge::{self, Inputs, Kind, Trust, Verdict};
use crate::rem::message::MessageType;
use crate::rem::trust::{self, RemPeers, TrustedList, XmlDsig};

/// Verdict when everything verifies but no Trusted List was given.
pub const UNCHECKED_VERDICT: &str =
    "signatures valid, signer not checked against a Trusted List (use --trusted-list or -c)";

/// What the REM verdicts are judged against, built once per run.
pub struct RemContext {
    pub chain: ChainPolicy,
    pub tsa_anchors: Vec<PathBuf>,
    pub peers: Option<RemPeers>,
    /// Lists named but not used, and why.
    pub notes: Vec<String>,
}

fn read(what: &str, f: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(f)
        .map_err(|e| CliError::usage(format!("{what}: cannot read \"{}\": {e}", f.display())))
}

fn pem_certs(what: &str, f: &Path) -> Result<Vec<Vec<u8>>, CliError> {
    let pem = read(what, f)?;
    let ders = ChainPolicy::from_pem(&pem, true)
        .map_err(|e| CliError::usage(format!("{what}: \"{}\": {e}", f.display())))?
        .anchors;
    if ders.is_empty() {
        return Err(CliError::usage(format!(
            "{what}: no certificate in \"{}\"",
            f.display()
        )));
    }
    Ok(ders)
}

impl RemContext {
    pub fn new(args: &VerifyArgs, at: Instant) -> Result<RemContext, CliError> {
        let config = match &args.config {
            Some(path) => Some(crate::config::load(path)?),
            None => None,
        };
        let mut anchors: Vec<(&str, PathBuf)> = args
            .rem_anchors
            .iter()
            .map(|f| ("--rem-anchors", f.clone()))
            .collect();
        let mut tsa: Vec<(&str, PathBuf)> = args
            .tsa_anchors
            .iter()
            .map(|f| ("--tsa-anchors", f.clone()))
            .collect();
        if let Some(c) = &config {
            anchors.extend(c.rem.anchors.iter().map(|f| ("rem.anchors", f.clone())));
            tsa.extend(
                c.rem
                    .tsa_anchors
                    .iter()
                    .map(|f| ("rem.tsa_anchors", f.clone())),
            );
        }
        let mut chain = ChainPolicy {
            enforce: true,
            ..ChainPolicy::default()
        };
        for (what, f) in &anchors {
            chain.anchors.extend(pem_certs(what, f)?);
        }
        let mut tsa_anchors = Vec::with_capacity(tsa.len());
        for (what, f) in tsa {
            pem_certs(what, &f)?;
            tsa_anchors.push(f);
        }
        let mut notes = Vec::new();
        let mut lists: Vec<TrustedList> = Vec::new();
        if !args.trusted_list.is_empty() {
            if args.tl_signer.is_empty() {
                return Err(CliError::usage(
                    "--trusted-list needs --tl-signer (the certificate that signs the list)",
                ));
            }
            let mut signers = Vec::new();
            for f in &args.tl_signer {
                signers.extend(pem_certs("--tl-signer", f)?);
            }
            for f in &args.trusted_list {
                let raw = read("--trusted-list", f)?;
                let list = trust::accept(&raw, &XmlDsig, &signers, at, None).map_err(|e| {
                    CliError::usage(format!("--trusted-list \"{}\": {e}", f.display()))
                })?;
                lists.push(list);
            }
        }
        let mut peers = None;
        if let Some(c) = &config {
            let settings = c.settings().map_err(CliError::usage)?;
            if let Some(ts) = settings.rem_trust {
                let store = crate::wiring::open_store(c).map_err(CliError::usage)?;
                let (stored, left_out) =
                    crate::rem_sync::load_lists(&*store, &XmlDsig, &ts).map_err(CliError::usage)?;
                notes.extend(left_out);
                lists.extend(stored);
                peers = Some(RemPeers::new(&lists));
            }
        }
        if peers.is_none() && !args.trusted_list.is_empty() {
            peers = Some(RemPeers::new(&lists));
        }
        Ok(RemContext {
            chain,
            tsa_anchors,
            peers,
            notes,
        })
    }

    fn inputs(&self, at: Instant) -> Inputs<'_> {
        Inputs {
            chain: &self.chain,
            tsa_anchors: &self.tsa_anchors,
            peers: self.peers.as_ref(),
            at,
        }
    }
}

/// Whether `raw` looks like an XML document (a standalone evidence) rather than mail.
pub fn looks_like_xml(file: &Path, raw: &[u8]) -> bool {
    let start = raw.strip_prefix(b"\xef\xbb\xbf").unwrap_or(raw);
    let first = start.iter().find(|b| !b.is_ascii_whitespace());
    first == Some(&b'<')
        || file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("xml"))
}

/// Everything printed about one REM file; the JSON form is this struct (the fields of the
/// PEC report where they mean the same: `file`, `kind`, `valid`, `verdict`, `reason`).
#[derive(Debug, Serialize)]
pub struct RemReport {
    pub file: String,
    /// `rem dispatch`, `rem receipt`, `erds evidence`.
    pub kind: String,
    pub valid: bool,
    pub verdict: String,
    /// The first failure, when not valid.
    pub reason: Option<String>,
    /// The event (`SubmissionAcceptance` …) and the reason code it states (`RA01` …).
    pub event: Option<String>,
    pub reason_code: Option<String>,
    pub signer: Option<String>,
    /// Upper-case hex SHA-256 of the signer's certificate.
    pub signer_sha256: Option<String>,
    pub signing_time: Option<String>,
    pub time_stamp_time: Option<String>,
    pub digest: Option<String>,
    /// `not checked`, `granted: PROVIDER / SERVICE (TERRITORY)`, `not granted`.
    pub trust: String,
    /// The RelayRejection code the reception point answers with (`RB02` …), when not valid.
    pub rejection_code: Option<String>,
    /// Every failure.
    pub failures: Vec<String>,
    /// Identifiers of the evidences, in order.
    pub evidences: Vec<String>,
    pub notes: Vec<String>,
}

impl RemReport {
    fn new(file: &Path, v: &Verdict, notes: &[String]) -> RemReport {
        let kind = match v.kind {
            Kind::Message(MessageType::Dispatch) => "rem dispatch",
            Kind::Message(MessageType::Receipt) => "rem receipt",
            Kind::Evidence => "erds evidence",
        };
        let trust = match &v.trust {
            Trust::NotChecked => "not checked".to_string(),
            Trust::Granted {
                territory,
                provider,
                service,
            } => format!("granted: {provider} / {service} ({territory})"),
            Trust::NotGranted => "not granted".to_string(),
        };
        let (valid, verdict) = match (v.valid(), &v.trust) {
            (true, Trust::NotChecked) => (false, UNCHECKED_VERDICT.to_string()),
            (true, _) => (true, format!("valid {kind}")),
            (false, _) => (
                false,
                format!(
                    "invalid: rejected with {}",
                    v.rejection()
                        .map(|r| format!("{} ({})", r.code, r.name))
                        .unwrap_or_else(|| "-".into())
                ),
            ),
        };
        RemReport {
            file: file.display().to_string(),
            kind: kind.to_string(),
            valid,
            verdict,
            reason: v.first_failure().map(ToString::to_string),
            event: v.event.map(|e| e.name().to_string()),
            reason_code: v.code.map(str::to_string),
            signer: v.signer.as_ref().map(|s| s.subject.clone()),
            signer_sha256: v.signer.as_ref().map(|s| s.sha256.clone()),
            signing_time: v.signing_time.map(Instant::rfc3339),
            time_stamp_time: v.time_stamp_time.map(Instant::rfc3339),
            digest: v.digest.clone(),
            trust,
            rejection_code: v.rejection().map(|r| r.code.to_string()),
            failures: v.failures.iter().map(ToString::to_string).collect(),
            evidences: v
                .evidences
                .iter()
                .map(|e| e.id.clone().unwrap_or_else(|| "(unreadable)".into()))
                .collect(),
            notes: notes.to_vec(),
        }
    }

    pub fn write_text(&self, w: &mut impl Write) -> std::io::Result<()> {
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        writeln!(w, "file: {}", self.file)?;
        writeln!(w, "kind: {}", self.kind)?;
        writeln!(w, "event: {}", opt(&self.event))?;
        writeln!(w, "reason code: {}", opt(&self.reason_code))?;
        writeln!(w, "signer: {}", opt(&self.signer))?;
        writeln!(w, "signer sha256: {}", opt(&self.signer_sha256))?;
        writeln!(w, "signing time: {}", opt(&self.signing_time))?;
        writeln!(w, "time stamp: {}", opt(&self.time_stamp_time))?;
        writeln!(w, "digest: {}", opt(&self.digest))?;
        writeln!(w, "trust: {}", self.trust)?;
        for e in &self.evidences {
            writeln!(w, "evidence: {e}")?;
        }
        for f in &self.failures {
            writeln!(w, "failure: {f}")?;
        }
        for n in &self.notes {
            writeln!(w, "note: {n}")?;
        }
        writeln!(w, "verdict: {}", self.verdict)?;
        if let Some(r) = &self.reason {
            writeln!(w, "reason: {r}")?;
        }
        Ok(())
    }
}

/// The report on a REM message (`evidence` false) or a standalone evidence.
pub fn report(file: &Path, raw: &[u8], evidence: bool, ctx: &RemContext, at: Instant) -> RemReport {
    let inputs = ctx.inputs(at);
    let v = if evidence {
        judge::judge_evidence(raw, &inputs)
    } else {
        judge::judge_message(raw, &inputs)
    };
    RemReport::new(file, &v, &ctx.notes)
}

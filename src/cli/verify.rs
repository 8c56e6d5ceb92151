// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec verify FILE…`: signature, signer, daticert and kind of each message, as text or
//! JSON (one object per line).
//!
//! With `--trust PEM` the certificates of the PEM files stand in for the provider index (no
//! provider records, so the managed-domain check is skipped and noted); with `-c FILE` the
//! provider index that configuration uses is the trust set, as at the reception point. Without `--trust`
//! the signature and the validity period are still checked and the message is classified,
//! but no trust decision can be made: the verdict is "signature valid, signer not checked
//! against a provider index (use --trust)" and the file counts as not valid (exit 1).
//!
//! A REM message (`REM-MessageType` at the top level) or a standalone ERDS evidence (an
//! XML file) gets the verdict of `rem::judge` instead (`super::verify_rem`).
//!
//! Exit status: 0 every file is a valid PEC or REM message, 1 at least one is not, 2 usage or I/O
//! error (unreadable file, bad `--at`, bad PEM).

use std::io::Write;
use std::path::{Path, PathBuf};

use openssl::x509::X509;
use serde::Serialize;

use super::error::{exit, CliError};
use super::verify_rem::{self, RemContext, RemReport};
use std::sync::Arc;

use crate::crypto::revocation::{
    RevocationChecker, RevocationMode, RevocationSettings, RevocationStatus,
};
use crate::crypto::verify::{ChainPolicy, ChainStatus, Verified, VerifyOptions};
use crate::index::TrustSet;
use crate::message::classify::{classify_with, Classification, PecMessage};
use crate::message::daticert::Daticert;
use crate::message::kind::Ricevuta;
use crate::message::time::{Clock, Instant, SystemClock};

/// Verdict when the signature verifies but no provider index was given.
pub const UNCHECKED_VERDICT: &str =
    "signature valid, signer not checked against a provider index (use --trust)";

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Messages to verify (RFC 5322 files, `.eml`).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// PEM file with one or more trusted provider certificates: the signer must be one of
    /// them, as if they were the provider index. Repeatable.
    ///
    /// Without --trust the signature and the certificate validity are still verified and
    /// the message is classified, but the signer is not checked against a provider index:
    /// the verdict is "signature valid, signer not checked against a provider index (use
    /// --trust)" and the file counts as not valid (exit status 1).
    #[arg(long = "trust", value_name = "PEM")]
    pub trust: Vec<PathBuf>,
    /// Check certificate validity at this time instead of now: `YYYY-MM-DD` or an RFC 3339
    /// instant (for archived mail).
    #[arg(long = "at", value_name = "DATE")]
    pub at: Option<String>,
    /// Print one JSON object per file instead of text.
    #[arg(long)]
    pub json: bool,
    /// Check the signer against the provider index this configuration uses (the copy in
    /// its store, or its [index] ldif file), as the reception point does; --trust adds to
    /// it.
    #[arg(long = "config", short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// PEM file with trust anchors (AgID CA1 or its root): the signer certificate must
    /// chain to one of them at the instant checked, within the CAs' name constraints, with
    /// emailProtection, and not revoked. Repeatable; adds to the configuration's
    /// verify.anchors.
    #[arg(long = "anchors", value_name = "PEM")]
    pub anchors: Vec<PathBuf>,
    /// PEM file with anchors of archived mail (DigitPA CA1 and its root): as --anchors,
    /// but a signer certificate without extendedKeyUsage is accepted. Repeatable.
    #[arg(long = "archive-anchors", value_name = "PEM")]
    pub archive_anchors: Vec<PathBuf>,
    /// What an unknown revocation status means: grace (accepted within the grace window,
    /// reported), strict (not verified) or off (revocation not checked). Default: the
    /// configuration's verify.revocation, else grace.
    #[arg(long = "revocation", value_name = "MODE")]
    pub revocation: Option<String>,
    /// Directory of the CRL cache. Default: the configuration's verify.crl_cache; without
    /// -c, none (CRLs are fetched for this run only).
    #[arg(long = "crl-cache", value_name = "DIR")]
    pub crl_cache: Option<PathBuf>,
    /// REM: PEM file with anchors of the REM PKI; the S/MIME signer of a REM message and
    /// the signer of an evidence must chain to one of them. Repeatable; adds to the
    /// configuration's rem.anchors.
    #[arg(long = "rem-anchors", value_name = "PEM")]
    pub rem_anchors: Vec<PathBuf>,
    /// REM: PEM file with a time-stamp anchor of the evidences; each file is tried on its
    /// own. Repeatable; adds to the configuration's rem.tsa_anchors.
    #[arg(long = "tsa-anchors", value_name = "PEM")]
    pub tsa_anchors: Vec<PathBuf>,
    /// REM: a local copy of a Trusted List (ETSI TS 119 612): the signer must be the
    /// digital identity of a REM service granted on it at the signing time. The list must
    /// be signed by a --tl-signer certificate and in force at the instant checked.
    /// Repeatable; adds to the lists in the configuration's store.
    #[arg(long = "trusted-list", value_name = "XML")]
    pub trusted_list: Vec<PathBuf>,
    /// REM: PEM file with the certificate allowed to sign the --trusted-list files.
    /// Repeatable.
    #[arg(long = "tl-signer", value_name = "PEM")]
    pub tl_signer: Vec<PathBuf>,
}

/// The provider index a configuration uses: the copy in its store, or its `[index] ldif`
/// when there is no store yet (a missing SQLite store is not created here).
fn configured_index(path: &Path) -> Result<crate::index::ProviderIndex, CliError> {
    let config = crate::config::load(path)?;
    let no_store =
        config.store.backend == crate::config::StoreBackend::Sqlite && !config.store.path.exists();
    if no_store {
        return crate::index::ProviderIndex::load_ldif(&config.index.ldif)
            .map_err(|e| CliError::usage(format!("{}: {e}", config.index.ldif.display())));
    }
    if config.store.backend == crate::config::StoreBackend::Sqlite {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(&config.store.path).map(|m| m.uid()).ok();
        let me = crate::preflight::effective_uid();
        if me == Some(0) && owner.is_some_and(|o| o != 0) {
            // SQLite may leave journal files behind owned by root, which pec serve could
            // then not write (every message refused temporarily).
            return Err(CliError::usage(format!(
                "{}: not opened as root (it belongs to uid {}): run as that user, e.g. `runuser -u pec -- pec verify -c {} ...`",
                config.store.path.display(),
                owner.unwrap_or_default(),
                path.display()
            )));
        }
    }
    let store = crate::wiring::open_store(&config).map_err(CliError::usage)?;
    crate::index::sync::load_current(&*store, &config.index.ldif)
        .map(|(index, _)| index)
        .map_err(CliError::usage)
}

/// Runs `pec verify`; returns the exit status.
pub fn run(args: &VerifyArgs) -> i32 {
    exit("pec verify", verify(args))
}

fn verify(args: &VerifyArgs) -> Result<i32, CliError> {
    let at = match &args.at {
        Some(s) => Instant::parse_cli(s).ok_or_else(|| {
            CliError::usage(format!(
                "--at: invalid date \"{s}\" (expected YYYY-MM-DD or an RFC 3339 instant)"
            ))
        })?,
        None => SystemClock.now(),
    };
    let mut trust = match &args.config {
        Some(path) => configured_index(path)?.trust().clone(),
        None => TrustSet::new(),
    };
    load_trust(&mut trust, &args.trust).map_err(CliError::Usage)?;
    let policy = chain_policy(args)?;
    let mut opts = if args.trust.is_empty() && args.config.is_none() {
        VerifyOptions::without_index(at)
    } else {
        VerifyOptions::new(&trust, at)
    };
    if let Some(p) = &policy {
        opts = opts.with_chain(p);
    }

    let mut status = 0;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut rem: Option<RemContext> = None;
    for (i, file) in args.files.iter().enumerate() {
        let report = match std::fs::read(file) {
            Ok(raw) => {
                let is_rem = crate::rem::message::is_rem(&raw);
                if is_rem || verify_rem::looks_like_xml(file, &raw) {
                    if rem.is_none() {
                        rem = Some(RemContext::new(args, at)?);
                    }
                    let ctx = rem.as_ref().ok_or_else(|| CliError::usage("rem context"))?;
                    AnyReport::Rem(Box::new(verify_rem::report(file, &raw, !is_rem, ctx, at)))
                } else {
                    AnyReport::Pec(Box::new(Report::new(file, &classify_with(&raw, &opts))))
                }
            }
            Err(e) => {
                status = 2;
                let msg = format!("cannot read \"{}\": {e}", file.display());
                eprintln!("pec verify: {msg}");
                AnyReport::Pec(Box::new(Report::io_error(file, msg)))
            }
        };
        if !report.valid() && status == 0 {
            status = 1;
        }
        let written = if args.json {
            report
                .json()
                .map_err(std::io::Error::other)
                .and_then(|s| writeln!(out, "{s}"))
        } else {
            if i > 0 {
                let _ = writeln!(out);
            }
            report.write_text(&mut out)
        };
        written.map_err(|e| CliError::usage(format!("cannot write output: {e}")))?;
    }
    Ok(status)
}

/// The chain policy of `--anchors`, `--archive-anchors`, `--revocation`, `--crl-cache`
/// and the configuration's `[verify]`; `None` without any anchor.
fn chain_policy(args: &VerifyArgs) -> Result<Option<ChainPolicy>, CliError> {
    let config = match &args.config {
        Some(path) => Some(crate::config::load(path)?),
        None => None,
    };
    let mut settings = match &config {
        Some(c) => {
            c.settings()
                .map_err(|e| CliError::usage(e.to_string()))?
                .revocation
        }
        None => RevocationSettings::default(),
    };
    if let Some(m) = &args.revocation {
        settings.mode = RevocationMode::parse(m).ok_or_else(|| {
            CliError::usage(format!(
                "--revocation: invalid mode \"{m}\" (expected grace, strict or off)"
            ))
        })?;
    }
    if let Some(dir) = &args.crl_cache {
        settings.cache_dir = Some(dir.clone());
    }
    let mut policy = ChainPolicy {
        enforce: true,
        ..ChainPolicy::default()
    };
    let (mut anchors, mut archive) = (args.anchors.clone(), args.archive_anchors.clone());
    if let Some(c) = &config {
        anchors.extend(c.verify.anchors.iter().cloned());
        archive.extend(c.verify.archive_anchors.iter().cloned());
    }
    for (list, what, archived) in [
        (&anchors, "--anchors", false),
        (&archive, "--archive-anchors", true),
    ] {
        for f in list {
            let pem = std::fs::read(f).map_err(|e| {
                CliError::usage(format!("{what}: cannot read \"{}\": {e}", f.display()))
            })?;
            let ders = ChainPolicy::from_pem(&pem, true)
                .map_err(|e| CliError::usage(format!("{what}: \"{}\": {e}", f.display())))?
                .anchors;
            if ders.is_empty() {
                return Err(CliError::usage(format!(
                    "{what}: no certificate in \"{}\"",
                    f.display()
                )));
            }
            if archived {
                policy.archive_anchors.extend(ders);
            } else {
                policy.anchors.extend(ders);
            }
        }
    }
    if policy.anchors.is_empty() && policy.archive_anchors.is_empty() {
        return Ok(None);
    }
    Ok(Some(policy.with_revocation(Arc::new(
        RevocationChecker::new(settings),
    ))))
}

fn load_trust(trust: &mut TrustSet, files: &[PathBuf]) -> Result<(), String> {
    for f in files {
        let pem = std::fs::read(f)
            .map_err(|e| format!("--trust: cannot read \"{}\": {e}", f.display()))?;
        let certs = X509::stack_from_pem(&pem).map_err(|e| {
            format!(
                "--trust: \"{}\" is not a PEM certificate file: {e}",
                f.display()
            )
        })?;
        if certs.is_empty() {
            return Err(format!("--trust: no certificate in \"{}\"", f.display()));
        }
        for c in certs {
            let der = c
                .to_der()
                .map_err(|e| format!("--trust: \"{}\": {e}", f.display()))?;
            trust.add(der, None);
        }
    }
    Ok(())
}

/// A PEC or a REM report.
enum AnyReport {
    Pec(Box<Report>),
    Rem(Box<RemReport>),
}

impl AnyReport {
    fn valid(&self) -> bool {
        match self {
            AnyReport::Pec(r) => r.valid,
            AnyReport::Rem(r) => r.valid,
        }
    }

    fn json(&self) -> serde_json::Result<String> {
        match self {
            AnyReport::Pec(r) => serde_json::to_string(&**r),
            AnyReport::Rem(r) => serde_json::to_string(&**r),
        }
    }

    fn write_text(&self, w: &mut impl Write) -> std::io::Result<()> {
        match self {
            AnyReport::Pec(r) => r.write_text(w),
            AnyReport::Rem(r) => r.write_text(w),
        }
    }
}

/// Everything printed about one file; the JSON form is this struct.
#[derive(Debug, Serialize)]
pub struct Report {
    pub file: String,
    /// e.g. `transport envelope (busta di trasporto)`, `receipt: avvenuta-consegna (completa)`.
    pub kind: String,
    pub valid: bool,
    pub verdict: String,
    pub reason: Option<String>,
    pub signer: Option<SignerReport>,
    pub headers: Option<HeadersReport>,
    pub daticert: Option<DaticertReport>,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SignerReport {
    pub subject: String,
    pub sha1: String,
    pub email: Option<String>,
    pub provider: Option<String>,
    pub in_index: bool,
    pub not_before: String,
    pub not_after: String,
    pub signing_time: Option<String>,
    pub digest: String,
    pub chain: String,
    /// `not checked`, `good (SOURCES)` or `unknown, accepted within the grace window: …`.
    pub revocation: String,
}

#[derive(Debug, Serialize)]
pub struct HeadersReport {
    pub message_id: Option<String>,
    pub riferimento_message_id: Option<String>,
    pub subject: Option<String>,
    pub from: Option<String>,
    pub tipo_ricevuta: Option<String>,
    pub x_mittente: Option<String>,
    pub security_flag: bool,
    pub has_postacert: bool,
}

#[derive(Debug, Serialize)]
pub struct DestinatarioReport {
    pub address: String,
    pub tipo: String,
}

#[derive(Debug, Serialize)]
pub struct DaticertReport {
    pub tipo: String,
    pub errore: String,
    pub mittente: String,
    pub destinatari: Vec<DestinatarioReport>,
    pub risposte: String,
    pub oggetto: Option<String>,
    pub gestore_emittente: String,
    pub giorno: String,
    pub ora: String,
    pub zona: String,
    pub identificativo: String,
    pub msgid: Option<String>,
    pub ricevuta: Option<String>,
    pub consegna: Option<String>,
    pub ricezione: Vec<String>,
    pub errore_esteso: Option<String>,
}

impl Report {
    pub fn new(file: &Path, c: &Classification) -> Report {
        let file = file.display().to_string();
        let signer = c.verified().map(SignerReport::new);
        let trusted = c.verified().is_some_and(|v| v.trusted);
        let (kind, valid, verdict, reason) = match c {
            Classification::TransportEnvelope(m) | Classification::Receipt(_, m) => {
                let kind = kind_text(c, m);
                if trusted {
                    (kind, true, "valid PEC message".to_string(), None)
                } else {
                    (kind, false, UNCHECKED_VERDICT.to_string(), None)
                }
            }
            Classification::SignedButWrong { reason, .. } => (
                "signed, not a correct PEC message".to_string(),
                false,
                if trusted {
                    "invalid: signed by a PEC provider but not formally correct (busta di anomalia)"
                        .to_string()
                } else {
                    format!("invalid: not formally correct; {UNCHECKED_VERDICT}")
                },
                Some(reason.clone()),
            ),
            Classification::NotPec { reason } => (
                "not a PEC message".to_string(),
                false,
                "invalid: not a PEC message (ordinary mail)".to_string(),
                Some(reason.clone()),
            ),
        };
        let pec = c.pec();
        Report {
            file,
            kind,
            valid,
            verdict,
            reason,
            signer,
            headers: pec.map(HeadersReport::new),
            daticert: pec.map(|m| DaticertReport::new(&m.daticert)),
            notes: pec.map(|m| m.notes.clone()).unwrap_or_default(),
        }
    }

    fn io_error(file: &Path, msg: String) -> Report {
        Report {
            file: file.display().to_string(),
            kind: "unreadable".into(),
            valid: false,
            verdict: "error".into(),
            reason: Some(msg),
            signer: None,
            headers: None,
            daticert: None,
            notes: Vec::new(),
        }
    }

    pub fn write_text(&self, w: &mut impl Write) -> std::io::Result<()> {
        writeln!(w, "file: {}", self.file)?;
        writeln!(w, "kind: {}", self.kind)?;
        if let Some(s) = &self.signer {
            writeln!(w, "signer: {}", s.subject)?;
            writeln!(w, "signer sha1: {}", s.sha1)?;
            writeln!(w, "signer email: {}", s.email.as_deref().unwrap_or("-"))?;
            writeln!(
                w,
                "signer provider: {}",
                match (&s.provider, s.in_index) {
                    (Some(p), _) => p.as_str(),
                    (None, true) => "in the trusted set (no provider record)",
                    (None, false) => "not checked (no --trust)",
                }
            )?;
            writeln!(w, "validity: {} .. {}", s.not_before, s.not_after)?;
            writeln!(
                w,
                "signing time: {}",
                s.signing_time.as_deref().unwrap_or("-")
            )?;
            writeln!(w, "digest: {}", s.digest)?;
            if s.chain != "not checked" {
                writeln!(w, "chain: {}", s.chain)?;
            }
            if s.revocation != "not checked" {
                writeln!(w, "revocation: {}", s.revocation)?;
            }
        }
        if let Some(h) = &self.headers {
            let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
            writeln!(w, "message-id: {}", opt(&h.message_id))?;
            writeln!(
                w,
                "x-riferimento-message-id: {}",
                opt(&h.riferimento_message_id)
            )?;
            writeln!(w, "subject: {}", opt(&h.subject))?;
            writeln!(w, "from: {}", opt(&h.from))?;
            if let Some(t) = &h.tipo_ricevuta {
                writeln!(w, "x-tiporicevuta: {t}")?;
            }
            if let Some(m) = &h.x_mittente {
                writeln!(w, "x-mittente: {m}")?;
            }
            if h.security_flag {
                writeln!(w, "x-verificasicurezza: errore")?;
            }
            writeln!(
                w,
                "postacert.eml: {}",
                if h.has_postacert { "yes" } else { "no" }
            )?;
        }
        if let Some(d) = &self.daticert {
            writeln!(w, "daticert:")?;
            writeln!(w, "  tipo: {}", d.tipo)?;
            writeln!(w, "  errore: {}", d.errore)?;
            writeln!(w, "  mittente: {}", d.mittente)?;
            for dest in &d.destinatari {
                writeln!(w, "  destinatario: {} ({})", dest.address, dest.tipo)?;
            }
            writeln!(w, "  risposte: {}", d.risposte)?;
            if let Some(o) = &d.oggetto {
                writeln!(w, "  oggetto: {o}")?;
            }
            writeln!(w, "  gestore-emittente: {}", d.gestore_emittente)?;
            writeln!(w, "  data: {} {} ({})", d.giorno, d.ora, d.zona)?;
            writeln!(w, "  identificativo: {}", d.identificativo)?;
            if let Some(m) = &d.msgid {
                writeln!(w, "  msgid: {m}")?;
            }
            if let Some(r) = &d.ricevuta {
                writeln!(w, "  ricevuta: {r}")?;
            }
            if let Some(c) = &d.consegna {
                writeln!(w, "  consegna: {c}")?;
            }
            for r in &d.ricezione {
                writeln!(w, "  ricezione: {r}")?;
            }
            if let Some(e) = &d.errore_esteso {
                writeln!(w, "  errore-esteso: {e}")?;
            }
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

fn kind_text(c: &Classification, m: &PecMessage) -> String {
    match c {
        Classification::TransportEnvelope(_) => "transport envelope (busta di trasporto)".into(),
        Classification::Receipt(Ricevuta::AvvenutaConsegna, _) => format!(
            "receipt: avvenuta-consegna ({})",
            m.daticert.ricevuta.unwrap_or_default()
        ),
        Classification::Receipt(r, _) => format!("receipt: {}", r.as_str()),
        _ => String::new(),
    }
}

impl SignerReport {
    fn new(v: &Verified) -> SignerReport {
        SignerReport {
            subject: v.signer_subject.clone(),
            sha1: v.signer_sha1.clone(),
            email: v.signer_email.clone(),
            provider: v.provider.as_ref().map(|p| p.name.clone()),
            in_index: v.trusted,
            not_before: v.not_before.rfc3339(),
            not_after: v.not_after.rfc3339(),
            signing_time: v.signing_time.map(Instant::rfc3339),
            digest: v.digest.clone(),
            chain: match &v.chain {
                ChainStatus::NotChecked => "not checked".into(),
                ChainStatus::Valid => "valid".into(),
                ChainStatus::Invalid(r) => format!("invalid: {r}"),
            },
            revocation: match &v.revocation {
                RevocationStatus::NotChecked => "not checked".into(),
                RevocationStatus::Good { source } => format!("good ({source})"),
                RevocationStatus::Unknown { reason } => {
                    format!("unknown, accepted within the grace window: {reason}")
                }
            },
        }
    }
}

impl HeadersReport {
    fn new(m: &PecMessage) -> HeadersReport {
        HeadersReport {
            message_id: m.message_id.clone(),
            riferimento_message_id: m.riferimento_message_id.clone(),
            subject: m.subject.clone(),
            from: m.from.clone(),
            tipo_ricevuta: m.tipo_ricevuta.map(|t| t.as_str().to_string()),
            x_mittente: m.mittente_header.clone(),
            security_flag: m.security_flag,
            has_postacert: m.has_postacert,
        }
    }
}

impl DaticertReport {
    fn new(d: &Daticert) -> DaticertReport {
        DaticertReport {
            tipo: d.tipo.as_str().into(),
            errore: d.errore.as_str().into(),
            mittente: d.mittente.clone(),
            destinatari: d
                .destinatari
                .iter()
                .map(|x| DestinatarioReport {
                    address: x.address.clone(),
                    tipo: x.tipo.as_str().into(),
                })
                .collect(),
            risposte: d.risposte.clone(),
            oggetto: d.oggetto.clone(),
            gestore_emittente: d.gestore_emittente.clone(),
            giorno: d.data.giorno.clone(),
            ora: d.data.ora.clone(),
            zona: d.data.zona.clone(),
            identificativo: d.identificativo.clone(),
            msgid: d.msgid.clone(),
            ricevuta: d.ricevuta.map(|r| r.as_str().into()),
            consegna: d.consegna.clone(),
            ricezione: d.ricezione.clone(),
            errore_esteso: d.errore_esteso.clone(),
        }
    }
}

// SPDX-License-Identifier: GPL-3.0-or-later
//! `pec capacity`: this node's cryptographic floor, measured with its own key, token and
//! provider index (the configuration `pec serve` uses).
//!
//! A PEC transaction (one recipient at another provider) needs, per side, exactly these
//! signatures and verifications (read from the roles' code):
//!
//! * sender's provider: the access point (milter) signs the transport envelope
//!   ([`crate::access`]); the after-queue filter signs the acceptance receipt once the
//!   envelope is queued ([`crate::access::acceptance`]); its reception point verifies the
//!   presa in carico and the delivery receipt coming back (S/MIME, provider index, and the
//!   chain when `[verify]` names anchors: [`crate::reception`]);
//! * recipient's provider: the reception point verifies the envelope (index, chain) and
//!   signs the presa in carico; the delivery point verifies the envelope a second time
//!   (index only, [`crate::delivery`]: the store says verified, the classification gives
//!   the daticert and the original) and signs the delivery receipt (completa by default:
//!   it carries the original).
//!
//! Nothing else on the PEC path signs or verifies (the acceptance and delivery receipts
//! reach the sender's mailbox through the delivery point, which only checks the store).
//! Each operation is timed with the same functions the roles call ([`smime::seal`] over the
//! entity the builder signs, [`verify_smime_shared`] with the reception point's options), in
//! CPU time of this process (user + system: SoftHSM2 runs in it; [`cpu_seconds`]) and in
//! wall time.

use std::sync::Arc;
use std::time::Instant as WallInstant;

use bytes::Bytes;

use super::args::ConfigArgs;
use super::error::{exit, CliError};
use crate::config::{Config, SigningConfig};
use crate::crypto::verify::{verify_smime_shared, verify_smime_with, VerifyOptions};
use crate::crypto::{smime, ChainPolicy, Signer};
use crate::index::TrustSet;
use crate::message::build::{Builder, Certification, Issuer, OriginalInfo};
use crate::message::classify::{classify_shared, Classification};
use crate::message::ids::IdGenerator;
use crate::message::kind::RecipientType;
use crate::message::time::{Clock, Instant, SystemClock};

#[derive(Debug, clap::Args)]
pub struct CapacityArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// How many times each operation is timed (after two untimed runs).
    #[arg(long, default_value_t = 200)]
    pub count: u32,
    /// Size in bytes of the original message of the timed transaction (the envelope and the
    /// completa delivery receipt carry it).
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Which provider of a transaction does the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Sender,
    Recipient,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Sender => "sender",
            Side::Recipient => "recipient",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sign,
    Verify,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sign => "sign",
            Kind::Verify => "verify",
        }
    }
}

/// The messages of a PEC transaction that are signed or verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    Envelope,
    Acceptance,
    TakeCharge,
    Delivery,
    /// REM: an evidence signed XAdES-B-T (the TSA round trip and the self-check included).
    Evidence,
    /// REM: our own evidence read back and verified (signer = our certificate).
    OwnEvidence,
    /// REM: a dispatch (the original and an evidence), S/MIME in the REM layout.
    Dispatch,
    /// REM: a receipt (an evidence), S/MIME in the REM layout.
    RemReceipt,
}

/// One cryptographic operation of a PEC transaction.
#[derive(Debug)]
pub struct Operation {
    pub name: &'static str,
    pub role: &'static str,
    pub side: Side,
    pub kind: Kind,
    /// How many times one transaction (one recipient) does it.
    pub per_transaction: u32,
    subject: Subject,
    /// Verification with the chain policy of `[verify]` (the reception point), or the
    /// provider index alone (the delivery point).
    with_chain: bool,
}

/// Every signature and verification of one PEC transaction, in the order they happen.
pub const PEC_OPERATIONS: [Operation; 8] = [
    Operation {
        name: "sign the transport envelope",
        role: "access point (milter)",
        side: Side::Sender,
        kind: Kind::Sign,
        per_transaction: 1,
        subject: Subject::Envelope,
        with_chain: false,
    },
    Operation {
        name: "sign the acceptance receipt",
        role: "after-queue filter",
        side: Side::Sender,
        kind: Kind::Sign,
        per_transaction: 1,
        subject: Subject::Acceptance,
        with_chain: false,
    },
    Operation {
        name: "verify the transport envelope",
        role: "reception point",
        side: Side::Recipient,
        kind: Kind::Verify,
        per_transaction: 1,
        subject: Subject::Envelope,
        with_chain: true,
    },
    Operation {
        name: "sign the presa in carico",
        role: "reception point",
        side: Side::Recipient,
        kind: Kind::Sign,
        per_transaction: 1,
        subject: Subject::TakeCharge,
        with_chain: false,
    },
    Operation {
        name: "verify the transport envelope again",
        role: "delivery point",
        side: Side::Recipient,
        kind: Kind::Verify,
        per_transaction: 1,
        subject: Subject::Envelope,
        with_chain: false,
    },
    Operation {
        name: "sign the delivery receipt (completa)",
        role: "delivery point",
        side: Side::Recipient,
        kind: Kind::Sign,
        per_transaction: 1,
        subject: Subject::Delivery,
        with_chain: false,
    },
    Operation {
        name: "verify the presa in carico",
        role: "reception point",
        side: Side::Sender,
        kind: Kind::Verify,
        per_transaction: 1,
        subject: Subject::TakeCharge,
        with_chain: true,
    },
    Operation {
        name: "verify the delivery receipt",
        role: "reception point",
        side: Side::Sender,
        kind: Kind::Verify,
        per_transaction: 1,
        subject: Subject::Delivery,
        with_chain: true,
    },
];

const fn rem_op(
    name: &'static str,
    role: &'static str,
    side: Side,
    kind: Kind,
    subject: Subject,
) -> Operation {
    Operation {
        name,
        role,
        side,
        kind,
        per_transaction: 1,
        subject,
        with_chain: true,
    }
}

/// Every signature and verification of one REM transaction (one recipient at a REM peer,
/// `[rem] enabled`): three evidences issued (SubmissionAcceptance at the sender,
/// RelayAcceptance and ContentConsignment at the recipient), each signed XAdES-B-T and
/// carried in a signed REM message, and each judged by the other side (S/MIME with the
/// chain to `[rem] anchors`, XAdES with its time stamp to `[rem] tsa_anchors`).
pub const REM_OPERATIONS: [Operation; 14] = [
    rem_op(
        "sign the SubmissionAcceptance (XAdES-B-T)",
        "access point (milter)",
        Side::Sender,
        Kind::Sign,
        Subject::Evidence,
    ),
    rem_op(
        "sign the dispatch (S/MIME)",
        "access point (milter)",
        Side::Sender,
        Kind::Sign,
        Subject::Dispatch,
    ),
    rem_op(
        "verify the SubmissionAcceptance read back",
        "after-queue filter",
        Side::Sender,
        Kind::Verify,
        Subject::OwnEvidence,
    ),
    rem_op(
        "sign the SubmissionAcceptance receipt",
        "after-queue filter",
        Side::Sender,
        Kind::Sign,
        Subject::RemReceipt,
    ),
    rem_op(
        "verify the dispatch (S/MIME, chain)",
        "reception point",
        Side::Recipient,
        Kind::Verify,
        Subject::Dispatch,
    ),
    rem_op(
        "verify its SubmissionAcceptance (XAdES)",
        "reception point",
        Side::Recipient,
        Kind::Verify,
        Subject::Evidence,
    ),
    rem_op(
        "sign the RelayAcceptance (XAdES-B-T)",
        "reception point",
        Side::Recipient,
        Kind::Sign,
        Subject::Evidence,
    ),
    rem_op(
        "sign the RelayAcceptance receipt",
        "reception point",
        Side::Recipient,
        Kind::Sign,
        Subject::RemReceipt,
    ),
    rem_op(
        "sign the ContentConsignment (XAdES-B-T)",
        "delivery point",
        Side::Recipient,
        Kind::Sign,
        Subject::Evidence,
    ),
    rem_op(
        "sign the ContentConsignment receipt",
        "delivery point",
        Side::Recipient,
        Kind::Sign,
        Subject::RemReceipt,
    ),
    rem_op(
        "verify the RelayAcceptance receipt",
        "reception point",
        Side::Sender,
        Kind::Verify,
        Subject::RemReceipt,
    ),
    rem_op(
        "verify the RelayAcceptance (XAdES)",
        "reception point",
        Side::Sender,
        Kind::Verify,
        Subject::Evidence,
    ),
    rem_op(
        "verify the ContentConsignment receipt",
        "reception point",
        Side::Sender,
        Kind::Verify,
        Subject::RemReceipt,
    ),
    rem_op(
        "verify the ContentConsignment (XAdES)",
        "reception point",
        Side::Sender,
        Kind::Verify,
        Subject::Evidence,
    ),
];

/// An operation as measured: bytes signed (the entity) or verified (the whole message),
/// CPU and wall milliseconds per operation.
#[derive(Debug)]
pub struct Measured {
    pub op: &'static Operation,
    pub bytes: usize,
    pub cpu_ms: f64,
    pub wall_ms: f64,
}

/// What the floor is measured with.
pub struct Setup<'a> {
    pub signer: &'a dyn Signer,
    pub issuer: &'a Issuer,
    pub ids: &'a IdGenerator,
    pub trust: &'a TrustSet,
    pub chain: Option<&'a ChainPolicy>,
    pub mail_receipt: &'a str,
    pub domain: &'a str,
}

/// The measured operations of one kind of transaction.
#[derive(Debug)]
pub struct Transaction {
    pub operations: Vec<Measured>,
}

impl Transaction {
    /// CPU milliseconds per transaction of one side.
    pub fn side_cpu_ms(&self, side: Side) -> f64 {
        self.operations
            .iter()
            .filter(|m| m.op.side == side)
            .map(|m| m.cpu_ms * f64::from(m.op.per_transaction))
            .sum()
    }

    /// How many operations of `kind` one side does per transaction.
    pub fn side_count(&self, side: Side, kind: Kind) -> u32 {
        self.operations
            .iter()
            .filter(|m| m.op.side == side && m.op.kind == kind)
            .map(|m| m.op.per_transaction)
            .sum()
    }

    fn to_json(&self) -> serde_json::Value {
        let (s, r) = (
            self.side_cpu_ms(Side::Sender),
            self.side_cpu_ms(Side::Recipient),
        );
        let side = |side: Side, ms: f64| {
            serde_json::json!({
                "cpu_ms": ms,
                "signatures": self.side_count(side, Kind::Sign),
                "verifications": self.side_count(side, Kind::Verify),
                "transactions_per_second_per_core": per_second(ms),
            })
        };
        serde_json::json!({
            "operations": self.operations.iter().map(|m| serde_json::json!({
                "name": m.op.name,
                "role": m.op.role,
                "side": m.op.side.as_str(),
                "kind": m.op.kind.as_str(),
                "per_transaction": m.op.per_transaction,
                "bytes": m.bytes,
                "cpu_ms": m.cpu_ms,
                "wall_ms": m.wall_ms,
            })).collect::<Vec<_>>(),
            "sender": side(Side::Sender, s),
            "recipient": side(Side::Recipient, r),
            "transaction": {
                "cpu_ms": s + r,
                "transactions_per_second_per_core": per_second(s + r),
            },
        })
    }

    fn write_text(&self, out: &mut String, what: &str) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "\n{what}, one recipient at another provider: what each side signs and verifies"
        );
        let _ = writeln!(
            out,
            "  {:<9} {:<22} {:<42} {:>6} {:>7} {:>8} {:>8}",
            "side", "role", "operation", "per tx", "bytes", "cpu ms", "wall ms"
        );
        for m in &self.operations {
            let _ = writeln!(
                out,
                "  {:<9} {:<22} {:<42} {:>6} {:>7} {:>8.3} {:>8.3}",
                m.op.side.as_str(),
                m.op.role,
                m.op.name,
                m.op.per_transaction,
                m.bytes,
                m.cpu_ms,
                m.wall_ms
            );
        }
        let (s, r) = (
            self.side_cpu_ms(Side::Sender),
            self.side_cpu_ms(Side::Recipient),
        );
        let _ = writeln!(out, "floor per {what} (CPU):");
        for (side, ms) in [(Side::Sender, s), (Side::Recipient, r)] {
            let _ = writeln!(
                out,
                "  {} side: {:.3} ms ({} signatures, {} verifications)",
                side.as_str(),
                ms,
                self.side_count(side, Kind::Sign),
                self.side_count(side, Kind::Verify)
            );
        }
        let _ = writeln!(out, "  whole transaction: {:.3} ms", s + r);
        let _ = writeln!(
            out,
            "ceiling, {what}s per second per core (the cryptography alone): sender side {:.0}, recipient side {:.0}, a node that is both sides {:.0}",
            per_second(s),
            per_second(r),
            per_second(s + r)
        );
    }
}

/// The floor of this node: PEC always, REM when `[rem]` is enabled.
#[derive(Debug)]
pub struct Floor {
    pub key: String,
    pub digest: String,
    pub backend: String,
    pub verification: String,
    pub count: u32,
    pub size: usize,
    pub pec: Transaction,
    /// The REM operations, and the time stamp request alone (CPU ms, wall ms: part of
    /// each XAdES-B-T signature, shown on its own).
    pub rem: Option<(Transaction, f64, f64)>,
}

impl Floor {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "key": self.key,
            "digest": self.digest,
            "backend": self.backend,
            "verification": self.verification,
            "count": self.count,
            "size": self.size,
            "pec": self.pec.to_json(),
            "rem": self.rem.as_ref().map(|(t, cpu, wall)| {
                let mut v = t.to_json();
                v["time_stamp"] = serde_json::json!({"cpu_ms": cpu, "wall_ms": wall});
                v
            }),
        })
    }

    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "cryptographic floor of this node: key {}, {}, {}; verification: {}",
            self.key, self.digest, self.backend, self.verification
        );
        let _ = writeln!(
            out,
            "each operation timed {} times, a {}-byte original; CPU = user + system time of this process (a PKCS#11 module such as SoftHSM2 runs in it)",
            self.count, self.size
        );
        self.pec.write_text(&mut out, "PEC transaction");
        match &self.rem {
            None => {
                let _ = writeln!(out, "\nREM: not enabled ([rem] enabled = false)");
            }
            Some((t, cpu, wall)) => {
                t.write_text(&mut out, "REM transaction");
                let _ = writeln!(
                    out,
                    "  of each XAdES-B-T signature, the time stamp request alone: {cpu:.3} ms CPU here, {wall:.3} ms wall (the TSA's own CPU is not this process's)"
                );
            }
        }
        out
    }
}

fn per_second(ms: f64) -> f64 {
    if ms > 0.0 {
        1000.0 / ms
    } else {
        0.0
    }
}

/// CPU seconds (user + system) of this process so far, every thread (a PKCS#11 module
/// such as SoftHSM2 runs in it): `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`, what getrusage
/// reports, to the nanosecond.
fn cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// CPU and wall milliseconds per call of `f`, over `count` calls after two untimed ones.
fn time(count: u32, mut f: impl FnMut() -> Result<(), CliError>) -> Result<(f64, f64), CliError> {
    f()?;
    f()?;
    let (cpu0, wall0) = (cpu_seconds(), WallInstant::now());
    for _ in 0..count {
        f()?;
    }
    let n = f64::from(count.max(1));
    Ok((
        (cpu_seconds() - cpu0) * 1000.0 / n,
        wall0.elapsed().as_secs_f64() * 1000.0 / n,
    ))
}

/// An original of about `size` bytes, as `pecmail.py load --size` sends: plain text.
fn sample_original(size: usize, from: &str, to: &str) -> Vec<u8> {
    let mut m = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: pec capacity\r\nMessage-ID: <capacity@{}>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
        from.rsplit_once('@').map(|(_, d)| d).unwrap_or("localhost")
    )
    .into_bytes();
    let line = b"pec capacity: the cryptographic floor of a PEC transaction, measured.\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m
}

fn failed(what: &str) -> impl Fn(String) -> CliError + '_ {
    move |e| CliError::failed(format!("{what}: {e}"))
}

/// Builds the four messages of a transaction with this node's key, then times each
/// operation of [`PEC_OPERATIONS`] `count` times.
pub fn measure_pec(setup: &Setup<'_>, count: u32, size: usize) -> Result<Vec<Measured>, CliError> {
    let at: Instant = SystemClock.now();
    let sender = format!("capacity-sender@{}", setup.domain);
    let rcpt = format!("capacity-recipient@{}", setup.domain);
    let original = sample_original(size, &sender, &rcpt);
    let info = OriginalInfo::parse(&original).map_err(|e| failed("original")(e.to_string()))?;
    let cert = Certification::for_submission(
        &info,
        &sender,
        &[(rcpt.clone(), RecipientType::Certificato)],
        &setup.ids.next(at),
    );
    let b = Builder {
        issuer: setup.issuer,
        signer: setup.signer,
        ids: setup.ids,
    };
    let build = |what: &str, r: Result<crate::message::build::Generated, _>| {
        r.map(|g: crate::message::build::Generated| Bytes::from(g.to_bytes()))
            .map_err(|e: crate::message::build::BuildError| failed(what)(e.to_string()))
    };
    let envelope = build("envelope", b.transport_envelope(&original, &cert, at))?;
    let acceptance = build("acceptance", b.acceptance(&cert, at))?;
    let take_charge = build(
        "presa in carico",
        b.take_charge(&cert, at, std::slice::from_ref(&rcpt), setup.mail_receipt),
    )?;
    // The delivery receipt as the delivery point builds it: from the classified envelope.
    let (delivered, postacert) = match classify_shared(&envelope, setup.trust, at) {
        Classification::TransportEnvelope(m) => {
            Certification::from_verified_envelope(&m.daticert, &m.verified.content)
                .ok_or_else(|| CliError::failed("the envelope carries no original"))?
        }
        other => {
            return Err(CliError::failed(format!(
                "the envelope signed with this key does not classify as a transport envelope: {}",
                other.reason().unwrap_or("not a transport envelope")
            )))
        }
    };
    let delivery = build(
        "delivery receipt",
        b.delivery(&delivered, at, &rcpt, &postacert),
    )?;
    let message = |s: Subject| match s {
        Subject::Acceptance => &acceptance,
        Subject::TakeCharge => &take_charge,
        Subject::Delivery => &delivery,
        _ => &envelope,
    };
    // The signed entity of each: what the builder hands to the signer.
    let mut entities = Vec::new();
    for s in [
        Subject::Envelope,
        Subject::Acceptance,
        Subject::TakeCharge,
        Subject::Delivery,
    ] {
        let v = verify_smime_with(message(s), &VerifyOptions::without_index(at))
            .map_err(|e| failed("reading back the signed entity")(e.to_string()))?;
        entities.push((s, v.content.to_vec()));
    }
    let entity = |s: Subject| {
        entities
            .iter()
            .find(|(k, _)| *k == s)
            .map(|(_, e)| e.as_slice())
            .unwrap_or_default()
    };

    let mut out = Vec::new();
    for op in &PEC_OPERATIONS {
        let (bytes, (cpu_ms, wall_ms)) = match op.kind {
            Kind::Sign => {
                let e = entity(op.subject);
                let t = time(count, || {
                    smime::seal(setup.signer, e, at)
                        .map(|_| ())
                        .map_err(|e| failed("signing")(e.to_string()))
                })?;
                (e.len(), t)
            }
            Kind::Verify => {
                let raw = message(op.subject);
                let mut opts = VerifyOptions::new(setup.trust, at);
                if let (true, Some(chain)) = (op.with_chain, setup.chain) {
                    opts = opts.with_chain(chain);
                }
                let t = time(count, || {
                    let v = verify_smime_shared(raw, &opts)
                        .map_err(|e| failed(op.name)(e.to_string()))?;
                    if v.trusted {
                        Ok(())
                    } else {
                        Err(CliError::failed(format!("{}: signer not trusted", op.name)))
                    }
                })?;
                (raw.len(), t)
            }
        };
        out.push(Measured {
            op,
            bytes,
            cpu_ms,
            wall_ms,
        });
    }
    Ok(out)
}

/// What the REM floor is measured with (`[rem]`).
pub struct RemSetup<'a> {
    pub signer: &'a dyn Signer,
    pub tsa: &'a crate::crypto::tsa::TsaSettings,
    /// The chain to `[rem] anchors` ([`crate::wiring::rem_chain`]).
    pub chain: &'a ChainPolicy,
    pub tsa_anchors: &'a [std::path::PathBuf],
}

/// An unsigned ERDS evidence of about the size of ours and the REM kit's (4 KB): what this
/// command and `benches/signing.rs` sign, so that their figures are of the same work.
pub fn unsigned_evidence() -> String {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><tns:Evidence \
         xmlns:tns=\"http://uri.etsi.org/19522/v1#\" version=\"EN319522v1.1.1\">\n",
    );
    for i in 0..40 {
        xml.push_str(&format!(
            "  <tns:Detail n=\"{i}\">recipient-{i}@pec.example.net accepted</tns:Detail>\n"
        ));
    }
    xml.push_str("</tns:Evidence>");
    xml
}

/// A `multipart/mixed` entity: a text part, then each attachment (`message/rfc822` as is,
/// anything else base64, as the REM composer writes the evidences).
fn mixed_entity(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let b = "capacity-boundary";
    let mut e = format!(
        "Content-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\n--{b}\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\npec capacity\r\n"
    )
    .into_bytes();
    for (ct, body) in parts {
        if *ct == "message/rfc822" {
            e.extend_from_slice(format!("--{b}\r\nContent-Type: {ct}\r\n\r\n").as_bytes());
            e.extend_from_slice(body);
        } else {
            e.extend_from_slice(
                format!("--{b}\r\nContent-Type: {ct}\r\nContent-Transfer-Encoding: base64\r\n\r\n")
                    .as_bytes(),
            );
            e.extend_from_slice(&crate::message::mime::base64_lines(body));
        }
        e.extend_from_slice(b"\r\n");
    }
    e.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    e
}

/// Times each operation of [`REM_OPERATIONS`] `count` times (each XAdES-B-T signature asks
/// the configured TSA for a stamp), and the time stamp request alone.
pub fn measure_rem(
    setup: &RemSetup<'_>,
    count: u32,
    size: usize,
) -> Result<(Transaction, f64, f64), CliError> {
    let at: Instant = SystemClock.now();
    let unsigned = unsigned_evidence();
    let signed = crate::rem::xades::sign(&unsigned, setup.signer, at, setup.tsa)
        .map_err(|e| failed("signing an evidence")(e.to_string()))?;
    let tsa_anchor = setup.tsa_anchors.first().ok_or_else(|| {
        CliError::usage("[rem] tsa_anchors is empty: a peer's evidence cannot be verified")
    })?;
    let original = sample_original(size, "capacity-sender@rem.invalid", "capacity@rem.invalid");
    let dispatch_entity = mixed_entity(&[
        ("message/rfc822", &original),
        ("application/xml", signed.as_bytes()),
    ]);
    let receipt_entity = mixed_entity(&[("application/xml", signed.as_bytes())]);
    let sealed = |entity: &[u8]| -> Result<Bytes, CliError> {
        let s = smime::seal_owned_as(setup.signer, entity.to_vec(), at, smime::Layout::Rem)
            .map_err(|e| failed("signing a rem message")(e.to_string()))?;
        let mut raw = Vec::new();
        for (name, value) in &s.headers {
            raw.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(&s.body);
        Ok(Bytes::from(raw))
    };
    let dispatch = sealed(&dispatch_entity)?;
    let receipt = sealed(&receipt_entity)?;
    let opts = VerifyOptions::without_index(at).with_chain(setup.chain);
    let cert = setup.signer.certificate_der();

    let mut out = Vec::new();
    for op in &REM_OPERATIONS {
        let (bytes, t) = match (op.kind, op.subject) {
            (Kind::Sign, Subject::Evidence) => (
                unsigned.len(),
                time(count, || {
                    crate::rem::xades::sign(&unsigned, setup.signer, at, setup.tsa)
                        .map(|_| ())
                        .map_err(|e| failed(op.name)(e.to_string()))
                })?,
            ),
            (Kind::Sign, s) => {
                let e = if s == Subject::Dispatch {
                    &dispatch_entity
                } else {
                    &receipt_entity
                };
                (
                    e.len(),
                    time(count, || {
                        smime::seal_owned_as(setup.signer, e.to_vec(), at, smime::Layout::Rem)
                            .map(|_| ())
                            .map_err(|e| failed(op.name)(e.to_string()))
                    })?,
                )
            }
            (Kind::Verify, Subject::OwnEvidence) => (
                signed.len(),
                time(count, || {
                    crate::rem::xades::verify_own(signed.as_bytes(), cert, None)
                        .map(|_| ())
                        .map_err(|e| failed(op.name)(e.to_string()))
                })?,
            ),
            (Kind::Verify, Subject::Evidence) => (
                signed.len(),
                time(count, || {
                    crate::rem::xades::verify(signed.as_bytes(), tsa_anchor)
                        .map(|_| ())
                        .map_err(|e| failed(op.name)(e.to_string()))
                })?,
            ),
            (Kind::Verify, s) => {
                let raw = if s == Subject::Dispatch {
                    &dispatch
                } else {
                    &receipt
                };
                (
                    raw.len(),
                    time(count, || {
                        verify_smime_with(raw, &opts)
                            .map(|_| ())
                            .map_err(|e| failed(op.name)(e.to_string()))
                    })?,
                )
            }
        };
        out.push(Measured {
            op,
            bytes,
            cpu_ms: t.0,
            wall_ms: t.1,
        });
    }
    let digest = [0x5au8; 32];
    let (stamp_cpu, stamp_wall) = time(count, || {
        crate::crypto::tsa::timestamp(setup.tsa, &digest)
            .map(|_| ())
            .map_err(|e| failed("time stamp")(e.to_string()))
    })?;
    Ok((Transaction { operations: out }, stamp_cpu, stamp_wall))
}

/// Measures the floor with the configuration's key, index and `[verify]` policy.
pub fn measure(config: &Config, count: u32, size: usize) -> Result<Floor, CliError> {
    let signer: Arc<dyn Signer> = crate::wiring::open_signer(config).map_err(CliError::usage)?;
    let identity = crate::wiring::Identity::of(config);
    let loaded = match crate::wiring::open_store(config) {
        Ok(store) => crate::index::sync::load_current(&*store, &config.index.ldif)
            .map(|(i, _)| i)
            .map_err(|e| e.to_string()),
        Err(_) => {
            crate::index::ProviderIndex::load_ldif(&config.index.ldif).map_err(|e| e.to_string())
        }
    };
    let index = loaded.map_err(|e| CliError::usage(format!("provider index: {e}")))?;
    if index.trust().find(signer.certificate_der()).is_none() {
        return Err(CliError::usage(
            "the signing certificate is not in the provider index: the verifications cannot be timed as the reception point does them",
        ));
    }
    let chain = crate::wiring::chain_policy(config).map_err(CliError::usage)?;
    let key = signer.key_kind().map_err(CliError::usage)?.describe();
    let setup = Setup {
        signer: &*signer,
        issuer: &identity.issuer,
        ids: &identity.ids,
        trust: index.trust(),
        chain: chain.as_deref(),
        mail_receipt: &config.provider.mail_receipt,
        domain: &identity.domain,
    };
    let operations = measure_pec(&setup, count, size)?;
    let settings = config.settings().map_err(CliError::usage)?;
    let rem = match (settings.rem.enabled, &settings.rem.evidence_tsa) {
        (false, _) => None,
        (true, None) => return Err(CliError::usage(
            "[rem] is enabled without a time-stamp authority (rem.evidence_tsa_url or log.tsa_url)",
        )),
        (true, Some(tsa)) => {
            let rem_chain = crate::wiring::rem_chain(config).map_err(CliError::usage)?;
            let rem_setup = RemSetup {
                signer: &*signer,
                tsa,
                chain: &rem_chain,
                tsa_anchors: &config.rem.tsa_anchors,
            };
            Some(measure_rem(&rem_setup, count, size)?)
        }
    };
    let verification = match &chain {
        None => "provider index".to_string(),
        Some(c) => format!(
            "provider index; at the reception point also the chain to {} anchor(s) and revocation",
            c.anchors.len()
        ),
    };
    Ok(Floor {
        key,
        digest: signer.digest().micalg().to_string(),
        backend: match &config.signing {
            SigningConfig::Pkcs11 { .. } => "PKCS#11".to_string(),
            SigningConfig::Pem { .. } => "PEM key file".to_string(),
        },
        verification,
        count,
        size,
        pec: Transaction { operations },
        rem,
    })
}

pub fn run(args: &CapacityArgs) -> i32 {
    let result = args.config.load().and_then(|config| {
        if args.count == 0 {
            return Err(CliError::usage("--count must be at least 1"));
        }
        let floor = measure(&config, args.count, args.size)?;
        if args.json {
            println!("{}", floor.to_json());
        } else {
            print!("{}", floor.to_text());
        }
        Ok(0)
    });
    exit("pec capacity", result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pec_transaction_is_four_signatures_and_four_verifications() {
        let count = |side: Side, kind: Kind| {
            PEC_OPERATIONS
                .iter()
                .filter(|o| o.side == side && o.kind == kind)
                .map(|o| o.per_transaction)
                .sum::<u32>()
        };
        assert_eq!(count(Side::Sender, Kind::Sign), 2);
        assert_eq!(count(Side::Sender, Kind::Verify), 2);
        assert_eq!(count(Side::Recipient, Kind::Sign), 2);
        assert_eq!(count(Side::Recipient, Kind::Verify), 2);
        // The envelope is verified twice at the recipient (reception point with the chain,
        // delivery point with the index only); every receipt is verified with the chain.
        let envelope: Vec<_> = PEC_OPERATIONS
            .iter()
            .filter(|o| o.kind == Kind::Verify && o.subject == Subject::Envelope)
            .map(|o| (o.role, o.with_chain))
            .collect();
        assert_eq!(
            envelope,
            [("reception point", true), ("delivery point", false)]
        );
    }

    #[test]
    fn a_rem_transaction_issues_three_evidences_and_judges_each_once() {
        let count = |side: Side, kind: Kind, subject: Option<Subject>| {
            REM_OPERATIONS
                .iter()
                .filter(|o| o.side == side && o.kind == kind)
                .filter(|o| subject.is_none_or(|s| o.subject == s))
                .map(|o| o.per_transaction)
                .sum::<u32>()
        };
        let evidence = Some(Subject::Evidence);
        // XAdES-B-T: the SubmissionAcceptance at the sender, the RelayAcceptance and the
        // ContentConsignment at the recipient.
        assert_eq!(count(Side::Sender, Kind::Sign, evidence), 1);
        assert_eq!(count(Side::Recipient, Kind::Sign, evidence), 2);
        // Each in its signed REM message: the dispatch and three receipts.
        assert_eq!(count(Side::Sender, Kind::Sign, None), 3);
        assert_eq!(count(Side::Recipient, Kind::Sign, None), 4);
        // Each evidence judged by the other side, S/MIME and XAdES; the sender reads its own
        // back once.
        assert_eq!(count(Side::Recipient, Kind::Verify, evidence), 1);
        assert_eq!(count(Side::Sender, Kind::Verify, evidence), 2);
        assert_eq!(
            count(Side::Sender, Kind::Verify, Some(Subject::OwnEvidence)),
            1
        );
        assert_eq!(count(Side::Sender, Kind::Verify, None), 5);
        assert_eq!(count(Side::Recipient, Kind::Verify, None), 2);
    }
}

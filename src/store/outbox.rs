// SPDX-License-Identifier: GPL-3.0-or-later
//! The outbox of generated messages and the delivery point's record of what it delivered:
//! what `pec` keeps so that a crash at any instant leaves no receipt issued twice and no
//! message stored twice in a mailbox.
//!
//! **Outbox.** Every generated message (acceptance, presa in carico, delivery receipt and
//! non-delivery notice, non-acceptance, 12 h / 24 h notice, virus notices, anomaly
//! envelope, log reply, arrival notice) is built and signed first; then ONE store transaction records its claim (the row that says
//! the event happened, e.g. the pending acceptance closed), its legal-log events **and its
//! signed bytes** ([`super::Store::stage_outbound`], keyed by what the message is about);
//! only then is it injected into Postfix, and marked injected afterwards
//! ([`super::Store::outbound_injected`]). A crash between the transaction and the mark
//! leaves a staged row that nobody retries by building anew: the claim is taken, so every
//! retry finds it and builds nothing; the outbox sweep ([`crate::outbox`]) re-injects the
//! **same bytes** (same Message-ID). A crash between the injection and the mark makes the
//! sweep inject the same bytes a second time: the copy has the same Message-ID, and the
//! delivery point stores it once (below).
//!
//! The key names the event, so that a retry finds it and another event does not (the
//! `*_key` functions below): a Postfix retry of the same queue file gets the same key (the
//! anomaly envelope is keyed by queue id, message digest and recipients), the same
//! envelope handed over again by the sender's provider too (virus notices and the presa in
//! carico by PEC msgid and recipient). The access point's non-acceptance is keyed by the
//! submission's PEC msgid: a client that submits again is a new submission; what the
//! outbox gives there is the notice and its records written together, and the refusal
//! answered once they are, even when the injection fails (the sweep sends the notice).
//!
//! **Deliveries.** The delivery point records, per (Message-ID, recipient), an intent
//! before handing the message to Dovecot and the completion after Dovecot's 250
//! ([`super::Store::begin_deliveries`], [`super::Store::deliveries_done`]). A Postfix
//! retry that finds a completion answers 250 without delivering again; one that finds only
//! an intent asks the mailbox (see [`crate::delivery::dedup`]).
//!
//! **Across nodes.** An intent carries its owner ([`super::ledger::node_owner`], `host:pid`)
//! and when it was taken. Several `pec serve` on one store may get the same message for
//! the same mailbox at once (two Postfix queue files of one message); an intent of
//! ANOTHER owner that is still alive ([`intent_is_live`]) means "being delivered now", and
//! the delivery point answers 4xx for that recipient ([`DeliveryMark::Busy`]), as it does
//! for a delivery in flight in its own process. An intent of a dead owner (same host and
//! its process gone, e.g. after `kill -9`), or older than [`DELIVERY_LEASE_SECS`], is
//! taken over (owner and time updated) and handled as an unrecorded outcome.

use sha2::{Digest, Sha256};

use crate::message::build::Certification;
use crate::message::kind::{MessageKind, RecipientType, Timeout};
use crate::message::time::Instant;

use super::{DueNotice, EventKind, Evidence, LogEvent, Refused, RemDue, RemWait, TrackingState};

/// A generated message in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// What the message is about, unique: `acceptance:<pec msgid>`,
    /// `delivery:<pec msgid>:<recipient>`, `take-charge:<pec msgid>:<recipients>`, …
    pub key: String,
    /// Its Message-ID (without angle brackets).
    pub message_id: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The signed message, byte for byte as injected.
    pub data: Vec<u8>,
    /// When it was staged.
    pub created_at: Instant,
    /// When it was handed to the MTA, once it was.
    pub injected_at: Option<Instant>,
}

/// What a generated message records, in the transaction that stages it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Legal-log records only (generated messages whose event has no claim of its own).
    Log(Vec<LogEvent>),
    /// Ricevuta di accettazione, after queue: closes the pending acceptance of `pec_id`
    /// (receipt `receipt_id`) and logs the transport envelope (BustaTrasporto: only now is it
    /// known queued) and the acceptance, both at `at`. Nothing when it is not pending.
    Acceptance {
        pec_id: String,
        receipt_id: String,
        at: Instant,
    },
    /// Delivery receipt or non-delivery notice: the (`event.pec_id`, `recipient`) claim of
    /// [`super::Store::claim_delivery_notice`] and `event`, and, when the envelope is our
    /// own (same provider: the sender's tracking row exists), that row closed with the
    /// outcome ([`notice_outcome`]). Nothing when claimed already.
    DeliveryNotice { recipient: String, event: LogEvent },
    /// Presa in carico: `event.pec_id` verified for `recipients` (as
    /// [`super::Store::record_verified`]), `event` logged and, when `tracking`, their
    /// tracking rows moved to taken in charge (same provider).
    TakenInCharge {
        recipients: Vec<String>,
        event: LogEvent,
        tracking: bool,
    },
    /// Avviso di non accettazione (access point): the records of the refusal and, for a
    /// virus, the quarantined message, as [`super::Store::record_refused`]
    /// ([`refused_events`]). Always recorded: the submission is its own event.
    Refused(Box<Refused>),
    /// 12 h / 24 h notice `notice_id` for the claimed `due`, at `at`: recorded on its
    /// tracking row and logged, as [`super::Store::timeout_sent`] ([`timeout_event`]).
    /// Nothing when the row has that notice already.
    Timeout {
        due: Box<DueNotice>,
        notice_id: String,
        at: Instant,
    },
    /// Reply to an owner's log request: closes request `event.pec_id` and logs `event`, as
    /// [`super::Store::log_request_answered`]. Nothing when it was answered already.
    LogReply(LogEvent),
    /// A notice that settles tracking rows of `event.pec_id` (the mancata consegna per
    /// virus to our user): each `(recipient, state)` row moved forward (as
    /// [`super::Store::update_tracking`]) and `event` logged. The claim is that at least one
    /// row moved: a recipient that has its outcome already (or is no certified recipient of
    /// ours) gets no notice, and nothing is recorded.
    Tracking {
        updates: Vec<(String, TrackingState)>,
        event: LogEvent,
    },
    /// A REM message (issue 20): `effect`, and, when it claims, the evidences the message
    /// carries, each recorded with its legal-log record (as
    /// [`super::Store::record_evidence`]) in the same transaction. An evidence recorded
    /// already with the same bytes is left as it is; with other bytes the staging fails.
    WithEvidences {
        effect: Box<Effect>,
        evidences: Vec<(Evidence, LogEvent)>,
    },
    /// `effect`, and, when it claims, the REM waits it begins (EN 319 532-4 Annex D; a
    /// wait begun already is left as it is): the SubmissionAcceptance of our dispatch
    /// begins the relay waits, our RelayAcceptance the consignment waits.
    RemWaits {
        effect: Box<Effect>,
        waits: Vec<RemWait>,
    },
    /// A REM recipient's consignment outcome (ContentConsignment or
    /// ContentConsignmentFailure, the REM receipt `notice_id` at `at`): the same
    /// (`message_id`, `recipient`) claim as [`Effect::DeliveryNotice`] (one outcome per
    /// recipient, `kind` the event name), and the recipient's consignment wait closed. Its
    /// legal-log record is the evidence's (wrap it in [`Effect::WithEvidences`]). Nothing
    /// when the outcome was decided already.
    RemOutcome {
        message_id: String,
        recipient: String,
        kind: String,
        notice_id: String,
        at: Instant,
    },
    /// The REM receipt `notice_id` a timer sends for the claimed wait `due` (RelayFailure
    /// RB22), at `at`: the wait closed with it. Nothing when it was closed already.
    RemWaitNotice {
        due: Box<RemDue>,
        notice_id: String,
        at: Instant,
    },
}

/// What [`super::Store::stage_outbound`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staged {
    /// Recorded: the claim, the events and the message. Inject it now.
    New,
    /// A message with that key was staged already (a retry, or a concurrent emitter):
    /// nothing written; this is it. Never build another one.
    Existing(Outbound),
    /// The claim was taken without an outbox row (recorded by an older version, or the
    /// acceptance is not pending): nothing written, nothing to inject.
    Claimed,
}

/// The delivery point's record for one (Message-ID, recipient).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMark {
    /// Handed to Dovecot; its answer was not recorded.
    Intent,
    /// Dovecot answered 250.
    Done,
    /// Handed to Dovecot by another live node ([`intent_is_live`]): it is being delivered
    /// now. Nothing was written; try again later.
    Busy,
}

/// How long an intent taken by a node on another host counts as "being delivered now":
/// 15 minutes, longer than Postfix's `lmtp_data_done_timeout` (600 s), so that a delivery
/// still running is never taken over, and short enough that a retry after a node is lost
/// for good is not held for long. Intents of this host are judged by their process.
pub const DELIVERY_LEASE_SECS: i64 = 15 * 60;

/// Whether the intent `holder` took at `taken` belongs to a delivery still running, as
/// `owner` sees it at `now`: not when it is `owner`'s own or has no owner (recorded before
/// owners were), nor when older than [`DELIVERY_LEASE_SECS`]; otherwise, on the same host,
/// while that process exists (`/proc/<pid>`), and on another host, always (within the
/// lease).
pub fn intent_is_live(holder: Option<&str>, taken: Instant, owner: &str, now: Instant) -> bool {
    let Some(holder) = holder else {
        return false;
    };
    if holder == owner || now.unix().saturating_sub(taken.unix()) >= DELIVERY_LEASE_SECS {
        return false;
    }
    let host = |o: &str| o.rsplit_once(':').map(|(h, _)| h.to_string());
    match (holder.rsplit_once(':'), host(owner)) {
        (Some((h, pid)), Some(mine)) if h == mine => pid
            .parse::<u32>()
            .is_ok_and(|pid| pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()),
        _ => true,
    }
}

/// The outcome a delivery receipt or non-delivery notice (`event`, an
/// [`EventKind::Issued`] record) decides for its recipient's tracking row: delivered or
/// failed; `None` for any other record.
pub fn notice_outcome(event: &LogEvent) -> Option<TrackingState> {
    match event.kind {
        EventKind::Issued(MessageKind::Delivery(_)) => Some(TrackingState::Delivered),
        EventKind::Issued(MessageKind::NonDelivery | MessageKind::NonDeliveryVirus) => {
            Some(TrackingState::Failed)
        }
        _ => None,
    }
}

/// Schema migration 12 of both backends (the same SQL): the tracking rows of recipients
/// whose delivery receipt or non-delivery notice is already recorded (`delivery_notices`,
/// written with its legal-log record) are closed, delivered or failed. Before version 12
/// nothing closed the sender's row of a same-provider recipient, and the 24 h timer sent a
/// false notice after every same-provider delivery ([`notice_outcome`] now closes it where
/// the notice is staged).
pub(crate) const CLOSE_DECIDED_ROWS: &str = "
UPDATE tracking
SET state = CASE (SELECT d.kind FROM delivery_notices d
                  WHERE d.pec_id = tracking.pec_id AND d.recipient = lower(tracking.recipient))
            WHEN 'Consegna' THEN 'delivered' ELSE 'failed' END
WHERE state IN ('sent', 'taken-in-charge')
  AND EXISTS (SELECT 1 FROM delivery_notices d
              WHERE d.pec_id = tracking.pec_id AND d.recipient = lower(tracking.recipient));
";

/// The record of a received receipt as the transaction that logs it finds things: a
/// receipt that correlates (outcome `correlated`) but moves none of the tracking rows it
/// speaks of (`updates` not empty, `moved` 0) came after those recipients' outcome, or
/// after a concurrent copy of itself: its outcome is `late`. Decided in the transaction,
/// so that two copies at once never both count as the outcome.
pub fn received_record<'a>(
    event: &'a LogEvent,
    updates: &[(String, TrackingState)],
    moved: usize,
) -> std::borrow::Cow<'a, LogEvent> {
    if event.outcome == "correlated" && !updates.is_empty() && moved == 0 {
        std::borrow::Cow::Owned(LogEvent {
            outcome: "late".into(),
            ..event.clone()
        })
    } else {
        std::borrow::Cow::Borrowed(event)
    }
}

/// The outbox key of a delivery receipt or non-delivery notice.
pub fn delivery_key(pec_id: &str, recipient: &str) -> String {
    format!("delivery:{pec_id}:{}", recipient.to_ascii_lowercase())
}

/// The outbox key of an acceptance receipt.
pub fn acceptance_key(pec_id: &str) -> String {
    format!("acceptance:{pec_id}")
}

/// The outbox key of a presa in carico for `recipients` (order and case do not matter).
pub fn take_charge_key(pec_id: &str, recipients: &[String]) -> String {
    let mut r: Vec<String> = recipients.iter().map(|r| r.to_ascii_lowercase()).collect();
    r.sort();
    r.dedup();
    format!("take-charge:{pec_id}:{}", r.join(","))
}

/// The outbox key of a 12 h / 24 h notice about `recipient` of `pec_id`.
pub fn timer_key(pec_id: &str, recipient: &str, which: Timeout) -> String {
    let hours = match which {
        Timeout::Hours12 => "12h",
        Timeout::Hours24 => "24h",
    };
    format!("timer:{pec_id}:{}:{hours}", recipient.to_ascii_lowercase())
}

/// The outbox key of a non-acceptance notice: the submission's PEC msgid, new for each
/// SMTP transaction (a client that submits again after a 4xx is a new submission, with a
/// notice of its own).
pub fn non_acceptance_key(pec_id: &str) -> String {
    format!("non-acceptance:{pec_id}")
}

/// The outbox key of the reply to the owner's log request `request_id`.
pub fn log_reply_key(request_id: &str) -> String {
    format!("log-reply:{request_id}")
}

/// The outbox key of the rilevazione virus about `recipient` of envelope `pec_id` (the
/// same envelope handed over again, or retried by Postfix, gets no second one).
pub fn virus_key(pec_id: &str, recipient: &str) -> String {
    format!("virus:{pec_id}:{}", recipient.to_ascii_lowercase())
}

/// The outbox key of the avviso di mancata consegna to our user about `recipient` of our
/// envelope `pec_id` that an MTA bounced (the same report retried gets no second one).
pub fn bounce_key(pec_id: &str, recipient: &str) -> String {
    format!("bounce:{pec_id}:{}", recipient.to_ascii_lowercase())
}

/// The outbox key of the mancata consegna per virus to our user about `recipient` of our
/// envelope `pec_id` (whichever way the virus became known).
pub fn virus_non_delivery_key(pec_id: &str, recipient: &str) -> String {
    format!(
        "virus-non-delivery:{pec_id}:{}",
        recipient.to_ascii_lowercase()
    )
}

/// The outbox key of the REM relay receipt answering the peer's dispatch `message_id` for
/// `recipients` (order and case do not matter) with `answer` (its event and reason code,
/// e.g. `RelayAcceptance.RB01`): the same dispatch handed over again gets no second one.
pub fn rem_relay_key(message_id: &str, answer: &str, recipients: &[String]) -> String {
    let mut r: Vec<String> = recipients.iter().map(|r| r.to_ascii_lowercase()).collect();
    r.sort();
    r.dedup();
    format!("rem-relay:{message_id}:{answer}:{}", r.join(","))
}

/// The outbox key of the RelayFailure REM receipt to our sender that answers the peer's
/// RelayRejection evidence `evidence_id` about our dispatch `message_id`.
pub fn rem_relay_failure_key(message_id: &str, evidence_id: &str) -> String {
    format!("rem-relay-failure:{message_id}:{evidence_id}")
}

/// The outbox key of the REM receipt a timer sends when the `which` wait of `recipient`
/// for `message_id` ran out (RelayFailure RB22).
pub fn rem_wait_key(message_id: &str, recipient: &str, which: super::RemWaitKind) -> String {
    format!(
        "rem-wait:{message_id}:{}:{}",
        recipient.to_ascii_lowercase(),
        which.as_str()
    )
}

/// The outbox key of a peer's REM receipt about our dispatch `message_id` passed on to our
/// user: `class` (`consignment` for a ContentConsignment or its failure: one outcome per
/// recipient, whichever comes first; else the event and the evidence id) and the
/// `recipients` it is about (order and case do not matter).
pub fn rem_receipt_key(message_id: &str, class: &str, recipients: &[String]) -> String {
    let mut r: Vec<String> = recipients.iter().map(|r| r.to_ascii_lowercase()).collect();
    r.sort();
    r.dedup();
    format!("rem-receipt:{message_id}:{class}:{}", r.join(","))
}

/// The outbox key of an arrival notice about the delivery of `pec_id` to `recipient`.
pub fn arrival_key(pec_id: &str, recipient: &str) -> String {
    format!("arrival:{pec_id}:{}", recipient.to_ascii_lowercase())
}

/// The outbox key of the anomaly envelope wrapping `data` (mail that is not valid PEC) for
/// `recipients`: the Postfix queue id it came in (`-` when unknown), a digest of its
/// bytes and the recipients (order and case do not matter). A Postfix retry of the same
/// queue file finds the same key; another message, or the same one arriving again in
/// another queue file, does not.
pub fn anomaly_key(queue_id: Option<&str>, data: &[u8], recipients: &[String]) -> String {
    let mut r: Vec<String> = recipients.iter().map(|r| r.to_ascii_lowercase()).collect();
    r.sort();
    r.dedup();
    let digest = Sha256::digest(data);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("anomaly:{}:{hex}:{}", queue_id.unwrap_or("-"), r.join(","))
}

/// The outbox key of the ReceivedFromNonERDS REM message carrying mail from outside any
/// ERDS to our REM mailboxes `recipients` (order and case do not matter): the original's
/// `Message-ID` when it has one (the same message arriving again gets no second one), else
/// a digest of its bytes.
pub fn rem_non_erds_key(message_id: Option<&str>, data: &[u8], recipients: &[String]) -> String {
    let mut r: Vec<String> = recipients.iter().map(|r| r.to_ascii_lowercase()).collect();
    r.sort();
    r.dedup();
    let id = match message_id {
        Some(id) => id.to_string(),
        None => {
            let digest = Sha256::digest(data);
            digest[..16].iter().map(|b| format!("{b:02x}")).collect()
        }
    };
    format!("rem-non-erds:{id}:{}", r.join(","))
}

/// The records of a refused submission: the non-acceptance (outcome `virus` or
/// `refused`), then, with a quarantined message, its [`EventKind::Quarantined`].
pub fn refused_events(refused: &Refused) -> Vec<LogEvent> {
    let base = LogEvent {
        pec_id: refused.pec_id.clone(),
        at: refused.at,
        kind: EventKind::Issued(refused.kind),
        sender: refused.cert.mittente.clone(),
        recipients: super::codec::cert_recipients(&refused.cert),
        subject: refused.cert.oggetto.clone(),
        related_ids: vec![refused.notice_id.clone()],
        provider: refused.provider.clone(),
        queue_id: refused.queue_id.clone(),
        outcome: if refused.kind == MessageKind::NonAcceptanceVirus {
            "virus".into()
        } else {
            "refused".into()
        },
        reason: with_login(
            Some(&refused.reason),
            refused.login.as_deref(),
            refused.auth_at,
        ),
    };
    let mut events = vec![base.clone()];
    if refused.quarantine.is_some() {
        events.push(LogEvent {
            kind: EventKind::Quarantined,
            related_ids: Vec::new(),
            outcome: "ok".into(),
            ..base
        });
    }
    events
}

/// The record of the timer notice `notice_id` for `due`, issued at `at`.
pub fn timeout_event(due: &DueNotice, notice_id: &str, at: Instant) -> LogEvent {
    LogEvent {
        pec_id: due.pec_id.clone(),
        at,
        kind: EventKind::Issued(MessageKind::Timeout(due.which)),
        sender: due.cert.mittente.clone(),
        recipients: vec![(due.recipient.clone(), RecipientType::Certificato)],
        subject: due.cert.oggetto.clone(),
        related_ids: vec![notice_id.to_string()],
        provider: due.provider.clone(),
        queue_id: due.queue_id.clone(),
        outcome: "ok".into(),
        reason: None,
    }
}

/// The record of a log request refused by the rate limit: `event` with outcome
/// `rate-limited` and the reason (in Italian, for the owner): `recent` requests since
/// `since`, `limit` allowed.
pub fn rate_limited(event: &LogEvent, recent: i64, limit: u32, since: Instant) -> LogEvent {
    LogEvent {
        outcome: "rate-limited".into(),
        reason: Some(format!(
            "{recent} richieste dal {}, limite {limit}",
            since.rfc3339()
        )),
        ..event.clone()
    }
}

/// The reason of a submission's legal-log record with the sender's SASL login in it:
/// `login SASL: <login>`, after `reason` when there is one (`<reason>; login SASL: …`),
/// and the instant the session authenticated when it is known
/// (`login SASL: <login>; autenticazione: <RFC 3339 UTC>`).
/// The login goes in the reason, a field every record has, so that the chain's canonical
/// encoding (version 1, [`super::chain`]) stays the one of every record already written:
/// no new field, no second encoding for verifiers, exports and packages to tell apart.
pub fn with_login(
    reason: Option<&str>,
    login: Option<&str>,
    auth_at: Option<Instant>,
) -> Option<String> {
    let login = login.filter(|l| !l.is_empty()).map(|l| match auth_at {
        Some(at) => format!("login SASL: {l}; autenticazione: {}", at.rfc3339()),
        None => format!("login SASL: {l}"),
    });
    match (reason, login) {
        (r, None) => r.map(str::to_string),
        (None, Some(l)) => Some(l),
        (Some(r), Some(l)) => Some(format!("{r}; {l}")),
    }
}

/// The two records of an acceptance after queue: the transport envelope (its Message-ID is
/// the PEC msgid), then the acceptance receipt, both with the certification data of the
/// pending acceptance (`cert`, `provider`, `queue_id`), `reason` (the sender's SASL login
/// and authentication time, [`with_login`]) and the emission instant `at`.
pub fn acceptance_events(
    pec_id: &str,
    receipt_id: &str,
    at: Instant,
    cert: &Certification,
    provider: &str,
    queue_id: Option<&str>,
    reason: Option<String>,
) -> [LogEvent; 2] {
    let event = |kind, related: &str| LogEvent {
        pec_id: pec_id.to_string(),
        at,
        kind,
        sender: cert.mittente.clone(),
        recipients: super::codec::cert_recipients(cert),
        subject: cert.oggetto.clone(),
        related_ids: vec![related.to_string()],
        provider: provider.to_string(),
        queue_id: queue_id.map(str::to_string),
        outcome: "ok".into(),
        reason: reason.clone(),
    };
    [
        event(EventKind::Issued(MessageKind::TransportEnvelope), pec_id),
        event(EventKind::Issued(MessageKind::Acceptance), receipt_id),
    ]
}

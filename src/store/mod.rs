// SPDX-License-Identifier: GPL-3.0-or-later
//! The store: the legal log (registro dei messaggi, spec §8), per-recipient tracking for the
//! timers (spec §5.4), pending acceptance receipts, quarantine of infected messages, and the
//! login → sender mapping of the access point. One trait, implemented once over SQL
//! ([`sql`]) for two backends: SQLite (WAL), embedded, and PostgreSQL, shared by nodes.
//!
//! Every method is one transaction: what it records is all written or not at all. The
//! methods are blocking (call them from `spawn_blocking` in async code).

use thiserror::Error;

use crate::message::build::Certification;
use crate::message::kind::{MessageKind, ReceiptType, RecipientType, Ricevuta, Timeout};
use crate::message::time::Instant;

pub mod chain;
pub mod codec;
pub mod report;
pub mod settings;
pub mod sql;
pub mod sqlite;

pub use sqlite::SqliteStore;

pub mod copy;
pub mod ledger;
pub mod outbox;
pub mod postgres;
pub mod rem;

pub use codec::months_before;
pub use ledger::LogStore;
pub use outbox::{DeliveryMark, Effect, Outbound, Staged};
pub use postgres::PgStore;
pub use rem::{
    Evidence, EvidenceDirection, IdentityAttribute, IdentityChange, RemDue, RemWait, RemWaitClaim,
    RemWaitKind, RemWaitState, SenderIdentity, StoredEvidence,
};
pub use report::{
    Export, Health, KeptReceipt, LastSeal, Problem, PurgeReport, QuarantineEntry, QuarantineQuery,
    SealRecord, VerifyReport,
};

/// Opens the store the configuration names (`store.backend`), bringing its schema up to
/// date.
pub fn open(
    config: &crate::store::settings::StoreConfig,
) -> Result<std::sync::Arc<dyn LogStore>, StoreError> {
    match config.backend {
        crate::store::settings::StoreBackend::Sqlite => {
            Ok(std::sync::Arc::new(SqliteStore::open(&config.path)?))
        }
        crate::store::settings::StoreBackend::Postgres => {
            Ok(std::sync::Arc::new(PgStore::open_config(config)?))
        }
    }
}

/// How long the legal log and the quarantine keep their records: 30 months (spec §8;
/// DPR 68/2005).
pub const RETENTION_MONTHS: u32 = 30;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Database(String),
    #[error("store: corrupt record: {0}")]
    Corrupt(String),
    /// An evidence id already recorded with other bytes ([`Store::record_evidence`]).
    #[error("store: evidence \"{0}\" is already recorded with other bytes")]
    EvidenceConflict(String),
}

/// What a legal-log record is about (spec §8 "event type").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A message we generated and handed to the MTA (envelope, receipt, notice).
    Issued(MessageKind),
    /// An infected message put in quarantine.
    Quarantined,
    /// A message refused in SMTP without a notice: a submission far over the size limit
    /// (access point), or mail that is not valid PEC carrying a virus or refused by the
    /// mailbox policy (reception point).
    RejectedInSmtp,
    /// Records of the legal log and/or quarantined messages past their retention were
    /// purged (`pec log purge`, spec §8: 30 months).
    Purged,
    /// A receipt or notice from another provider, received and correlated (or not) by the
    /// reception point; its type is in the `receipt_type` column.
    Received(Ricevuta),
    /// A mailbox owner asked for the extract of their log records through the mail client
    /// (`registro@<domain>`, [`crate::log::request`]); `outcome` says whether it was
    /// accepted or refused (rate limit).
    LogRequest,
    /// The extract asked for by a [`EventKind::LogRequest`] was sent to the owner.
    LogExtract,
    /// Mail that is not valid PEC, forwarded unchanged by the recipient's mailbox policy.
    Forwarded,
    /// Mail that is not valid PEC, dropped by the recipient's mailbox policy (`discard`).
    Discarded,
    /// Mail that is not valid PEC, delivered unchanged into a folder of the mailbox by its
    /// policy (`folder`).
    Filed,
    /// The provider suspended its service (`pec suspend`, an incident or a planned
    /// outage): the start of an outage; its `reason` says why and of which type.
    ProviderSuspended,
    /// The service resumed (`pec resume`): the end of the outage begun by the last
    /// [`EventKind::ProviderSuspended`].
    ProviderResumed,
    /// A REM evidence (ETSI EN 319 522-2) we issued or received; the record's `pec_id` is
    /// the REM message identifier, its related id the evidence id, its reason the event,
    /// the reason code and the XML's SHA-256 ([`rem::Evidence::log_event`]).
    RemEvidence(EvidenceDirection),
}

impl EventKind {
    /// The label written in the log (TMail `PEC_Milter` vocabulary for issued messages).
    pub fn label(self) -> &'static str {
        match self {
            EventKind::Issued(k) => k.log_label(),
            EventKind::Quarantined => "Quarantena",
            EventKind::RejectedInSmtp => "RifiutoSmtp",
            EventKind::Purged => "Cancellazione",
            EventKind::Received(_) => "Ricezione",
            EventKind::LogRequest => "RichiestaRegistro",
            EventKind::LogExtract => "EstrattoRegistro",
            EventKind::Forwarded => "Inoltro",
            EventKind::Discarded => "Scarto",
            EventKind::Filed => "ConsegnaCartella",
            EventKind::ProviderSuspended => "SospensioneServizio",
            EventKind::ProviderResumed => "RipresaServizio",
            EventKind::RemEvidence(EvidenceDirection::Issued) => "EvidenzaREMEmessa",
            EventKind::RemEvidence(EvidenceDirection::Received) => "EvidenzaREMRicevuta",
        }
    }
}

/// One legal-log record (spec §8 fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// PEC msgid of the transport envelope the event is about.
    pub pec_id: String,
    pub at: Instant,
    pub kind: EventKind,
    /// Sender of the original (reverse path).
    pub sender: String,
    pub recipients: Vec<(String, RecipientType)>,
    /// Decoded subject of the original.
    pub subject: String,
    /// Message-IDs of the messages generated by this event (receipts, notices).
    pub related_ids: Vec<String>,
    /// Provider that sent the message (ours for submissions).
    pub provider: String,
    /// Postfix queue id, when known.
    pub queue_id: Option<String>,
    /// `ok`, `refused`, `virus`, …
    pub outcome: String,
    pub reason: Option<String>,
}

/// An accepted submission whose acceptance receipt is still to be emitted after queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// PEC msgid = Message-ID of the transport envelope.
    pub pec_id: String,
    /// Postfix queue id at the access point.
    pub queue_id: Option<String>,
    /// The transaction instant: the acceptance receipt carries it too (one instant per
    /// transaction, spec §2.3).
    pub at: Instant,
    pub cert: Certification,
    /// SASL login of the sender.
    pub login: String,
    /// When the sender's SMTP session authenticated with that login, as the milter saw it
    /// ([`crate::access::Submission::auth_at`]); written beside the login in the
    /// submission's legal-log records ([`outbox::with_login`]).
    pub auth_at: Option<Instant>,
    /// Our provider name, for the log.
    pub provider: String,
}

/// A refused submission: the non-acceptance notice was generated (and, for a virus, the
/// message goes to quarantine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub pec_id: String,
    pub queue_id: Option<String>,
    pub at: Instant,
    pub cert: Certification,
    /// `NonAcceptance` or `NonAcceptanceVirus`.
    pub kind: MessageKind,
    pub reason: String,
    /// Message-ID of the notice.
    pub notice_id: String,
    /// The infected message, kept 30 months (spec §8).
    pub quarantine: Option<Vec<u8>>,
    pub provider: String,
    /// SASL login of the sender, written in the reason of the refusal's records
    /// ([`outbox::with_login`]); `None` when the submission had none.
    pub login: Option<String>,
    /// When the session authenticated with `login` (see [`Accepted::auth_at`]).
    pub auth_at: Option<Instant>,
}

/// State of one certified recipient of an envelope we sent (timers, spec §5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackingState {
    /// Sent, nothing heard yet.
    Sent,
    /// Presa in carico received.
    TakenInCharge,
    /// Avvenuta consegna received.
    Delivered,
    /// Mancata consegna received, or the 24 h notice was sent.
    Failed,
}

/// One tracking row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracking {
    pub pec_id: String,
    pub recipient: String,
    pub sent_at: Instant,
    pub state: TrackingState,
}

/// What the reception point does with mail for a mailbox that is not valid PEC (spec §5.2
/// last row, §3.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxPolicy {
    /// Wrap it in a signed busta di anomalia and deliver it (the default).
    Anomaly,
    /// Refuse it in SMTP (Postfix bounces it to the sender).
    Refuse,
    /// Forward it unchanged to this ordinary address.
    Forward(String),
    /// Drop it, with a legal-log record ([`EventKind::Discarded`]).
    Discard,
    /// Deliver it unchanged into this folder of the mailbox: it is reinjected for
    /// `local+FOLDER@domain`, which Dovecot's LMTP files into FOLDER with
    /// `lmtp_save_to_detail_mailbox = yes` (dovecot/10-pec-lmtp.conf); a legal-log record
    /// ([`EventKind::Filed`]). Folder names: [`MailboxPolicy::valid_folder`].
    Folder(String),
}

impl MailboxPolicy {
    /// The `policy` column / configuration value: `anomaly`, `refuse`, `forward`.
    pub fn label(&self) -> &'static str {
        match self {
            MailboxPolicy::Anomaly => "anomaly",
            MailboxPolicy::Refuse => "refuse",
            MailboxPolicy::Forward(_) => "forward",
            MailboxPolicy::Discard => "discard",
            MailboxPolicy::Folder(_) => "folder",
        }
    }

    /// Whether `name` may be a folder of [`MailboxPolicy::Folder`]: 1 to 64 ASCII letters,
    /// digits, `-`, `_` or `.` (not first), so that it fits an address's local part.
    pub fn valid_folder(name: &str) -> bool {
        (1..=64).contains(&name.len())
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    }

    /// The address that delivers into `folder` of `mailbox`: `local+folder@domain`.
    pub fn folder_address(mailbox: &str, folder: &str) -> String {
        match mailbox.rsplit_once('@') {
            Some((local, domain)) => format!("{local}+{folder}@{domain}"),
            None => format!("{mailbox}+{folder}"),
        }
    }
}

/// Whether a mailbox may send and receive (`pec mailbox state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MailboxState {
    /// Sends and receives (the default).
    #[default]
    Active,
    /// Neither sends nor receives: a submission gets a non-acceptance notice, a message
    /// for it a non-delivery notice ("casella disattivata", 5.2.1).
    Suspended,
    /// Reading only (the manuals' rule when a provider ceases): no sending, no receiving,
    /// the messages stay readable through IMAP/POP.
    ReadOnly,
}

impl MailboxState {
    pub const ALL: [MailboxState; 3] = [
        MailboxState::Active,
        MailboxState::Suspended,
        MailboxState::ReadOnly,
    ];

    /// The `state` column / CLI value: `active`, `suspended`, `read-only`.
    pub fn label(self) -> &'static str {
        match self {
            MailboxState::Active => "active",
            MailboxState::Suspended => "suspended",
            MailboxState::ReadOnly => "read-only",
        }
    }

    /// Inverse of [`MailboxState::label`].
    pub fn parse(s: &str) -> Option<MailboxState> {
        MailboxState::ALL.into_iter().find(|m| m.label() == s)
    }
}

/// The settings of one mailbox kept in the store (`pec mailbox set`), read by the access
/// and delivery points on every transaction. `None` means "the provider's value".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxSettings {
    /// Receipt type for messages sent without `X-TipoRicevuta` (ordinary mail clients
    /// cannot set it); `None`: completa (spec §3.6).
    pub receipt_type: Option<ReceiptType>,
    /// Overrides `access.max_recipients`.
    pub max_recipients: Option<u64>,
    /// Overrides `access.max_total_size` (size × recipients, bytes).
    pub max_total_size: Option<u64>,
    /// Messages the mailbox may send in 24 hours (accepted ones); `None`: no quota.
    pub daily_quota: Option<u64>,
    pub state: MailboxState,
}

/// A retired address (`pec mailbox retire`): it is never given to another holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    pub mailbox: String,
    /// The holder's identifier (e.g. a tax code), as the operator gave it.
    pub holder: String,
    pub at: Instant,
}

/// Type of an outage in the AgID statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutageKind {
    /// Announced beforehand (programmato).
    Planned,
    /// An incident (incidente).
    Incident,
    /// A malfunction (malfunzionamento).
    Malfunction,
}

impl OutageKind {
    pub const ALL: [OutageKind; 3] = [
        OutageKind::Planned,
        OutageKind::Incident,
        OutageKind::Malfunction,
    ];

    /// The column / CLI value: `planned`, `incident`, `malfunction`.
    pub fn label(self) -> &'static str {
        match self {
            OutageKind::Planned => "planned",
            OutageKind::Incident => "incident",
            OutageKind::Malfunction => "malfunction",
        }
    }

    /// Inverse of [`OutageKind::label`].
    pub fn parse(s: &str) -> Option<OutageKind> {
        OutageKind::ALL.into_iter().find(|k| k.label() == s)
    }
}

/// A provider-wide suspension of the service (`pec suspend` … `pec resume`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    pub kind: OutageKind,
    pub reason: String,
    pub start: Instant,
    /// `None` while the service is still suspended.
    pub end: Option<Instant>,
}

/// Optional per-mailbox arrival notice (avviso di arrivo, a service some providers offer):
/// when a PEC message is delivered to the mailbox, a short plain message (sender, subject,
/// time; never the content) goes to an ordinary address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrivalNotice {
    /// Ordinary address(es) the notice is sent to, separated by commas (the `To:` of the
    /// notice).
    pub notify: String,
    /// Only for messages from these senders (lower case); empty = every sender.
    pub senders: Vec<String>,
}

impl ArrivalNotice {
    /// The addresses of [`ArrivalNotice::notify`], one per recipient of the notice.
    pub fn addresses(&self) -> Vec<String> {
        self.notify
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Whether a message from `sender` gets a notice.
    pub fn applies_to(&self, sender: &str) -> bool {
        self.senders.is_empty() || self.senders.iter().any(|s| s.eq_ignore_ascii_case(sender))
    }
}

/// The store.
pub trait Store: Send + Sync {
    /// Whether `login` may send as `address`: an explicit mapping, or by default the login
    /// is the address itself (case-insensitive).
    fn sender_allowed(&self, login: &str, address: &str) -> Result<bool, StoreError>;
    /// Adds a login → sender mapping.
    fn allow_sender(&self, login: &str, address: &str) -> Result<(), StoreError>;

    /// Access point, accepted: one tracking row per certified recipient and the pending
    /// acceptance, in one transaction. Recording the same `pec_id` twice is an error. No
    /// legal-log record yet: a milter's accept does not prove that Postfix queued the
    /// message; the transport envelope is logged with the acceptance, after queue
    /// ([`Store::acceptance_emitted`], [`Effect::Acceptance`]).
    fn record_accepted(&self, accepted: &Accepted) -> Result<(), StoreError>;
    /// After queue: the pending acceptance for `pec_id`, if it has not been emitted yet.
    fn pending_acceptance(&self, pec_id: &str) -> Result<Option<Accepted>, StoreError>;
    /// After queue: the acceptance receipt `receipt_id` was handed to the MTA; logs the
    /// transport envelope and the acceptance and closes the pending acceptance, in one
    /// transaction. Returns false when it
    /// was already closed (a concurrent or repeated delivery), so that the caller knows.
    fn acceptance_emitted(
        &self,
        pec_id: &str,
        receipt_id: &str,
        at: Instant,
    ) -> Result<bool, StoreError>;

    /// Access point, refused: the non-acceptance event and, for a virus, the quarantined
    /// message, in one transaction.
    fn record_refused(&self, refused: &Refused) -> Result<(), StoreError>;

    /// Appends one legal-log record.
    fn log(&self, event: &LogEvent) -> Result<(), StoreError>;
    /// Every record about `pec_id`, oldest first.
    fn events_for(&self, pec_id: &str) -> Result<Vec<LogEvent>, StoreError>;
    /// Tracking rows of `pec_id`.
    fn tracking_for(&self, pec_id: &str) -> Result<Vec<Tracking>, StoreError>;
    /// Quarantined messages about `pec_id` (their bytes).
    fn quarantined(&self, pec_id: &str) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Reception point: the transport envelope `pec_id` was verified and taken in charge
    /// for `recipients` (our local mailboxes); `event` is the presa-in-carico event. One
    /// transaction. The delivery point relies on [`Store::is_verified`], never on a header.
    /// Recording a recipient twice (a retry) is not an error.
    fn record_verified(
        &self,
        pec_id: &str,
        recipients: &[String],
        event: &LogEvent,
    ) -> Result<(), StoreError>;
    /// Whether the reception point verified envelope `pec_id` for `recipient`
    /// (case-insensitive address).
    fn is_verified(&self, pec_id: &str, recipient: &str) -> Result<bool, StoreError>;
    /// Receipts heard back (reception point): moves the tracking row of `recipient` of our
    /// envelope `pec_id` to `state`. States only move forward (sent → taken in charge →
    /// delivered | failed); a late presa in carico never undoes a delivery. Returns whether
    /// a row changed (false: unknown envelope or recipient, or already further on).
    fn update_tracking(
        &self,
        pec_id: &str,
        recipient: &str,
        state: TrackingState,
    ) -> Result<bool, StoreError>;
    /// Puts `message` in quarantine for 30 months with `event` (kind
    /// [`EventKind::Quarantined`], its `reason` the antivirus verdict), in one transaction;
    /// nothing when the quarantine holds these very bytes for `event.pec_id` already (the
    /// same envelope handed over again, by a Postfix retry or by another node at once).
    fn record_quarantine(&self, event: &LogEvent, message: &[u8]) -> Result<(), StoreError>;
    /// The policy set for `mailbox` (case-insensitive), `None` when it has none (the
    /// configured default applies).
    fn mailbox_policy(&self, mailbox: &str) -> Result<Option<MailboxPolicy>, StoreError>;
    /// Sets (replaces) the policy of `mailbox`.
    fn set_mailbox_policy(&self, mailbox: &str, policy: &MailboxPolicy) -> Result<(), StoreError>;
    /// The certification data of our envelope `pec_id`, as recorded at acceptance
    /// ([`Store::record_accepted`]), whether or not its acceptance receipt was emitted;
    /// `None` when `pec_id` is not one of ours. The reception point correlates receipts
    /// with it (`X-Riferimento-Message-ID`).
    fn envelope_certification(&self, pec_id: &str) -> Result<Option<Certification>, StoreError>;

    // ---- Delivery point (spec §3.6, §3.7, §5.3) ----

    /// Delivery point: the Message-ID of the delivery receipt or non-delivery notice already
    /// recorded for (`pec_id`, `recipient`), if any.
    fn delivery_notice(&self, pec_id: &str, recipient: &str) -> Result<Option<String>, StoreError>;

    /// Delivery point, exactly once: records that the notice of `event` (an
    /// [`EventKind::Issued`] delivery receipt or non-delivery notice; its Message-ID is
    /// `event.related_ids[0]`) was handed to the MTA for (`event.pec_id`, `recipient`), and
    /// logs `event`, in one transaction. Returns true only the first time for that pair;
    /// afterwards it records nothing and returns false.
    fn claim_delivery_notice(&self, recipient: &str, event: &LogEvent) -> Result<bool, StoreError>;

    // ---- Arrival notices (optional, per mailbox) ----

    /// Sets (`Some`) or removes (`None`) the arrival notice of `mailbox` (compared in ASCII
    /// lower case).
    fn set_arrival_notice(
        &self,
        mailbox: &str,
        notice: Option<&ArrivalNotice>,
    ) -> Result<(), StoreError>;

    /// The arrival notice configured for `mailbox`, if any.
    fn arrival_notice(&self, mailbox: &str) -> Result<Option<ArrivalNotice>, StoreError>;

    // ---- Mailbox settings, retired addresses, provider suspension ----

    /// The settings of `mailbox` (compared in ASCII lower case); the defaults when none
    /// were set.
    fn mailbox_settings(&self, mailbox: &str) -> Result<MailboxSettings, StoreError>;
    /// Replaces the settings of `mailbox`.
    fn set_mailbox_settings(
        &self,
        mailbox: &str,
        settings: &MailboxSettings,
    ) -> Result<(), StoreError>;
    /// How many transport envelopes `sender` (ASCII case-insensitive) had accepted at or
    /// after `since`: the pending acceptances recorded by the access point
    /// ([`Store::record_accepted`]), whose certification names the sender.
    fn accepted_since(&self, sender: &str, since: Instant) -> Result<u64, StoreError>;
    /// Retires `retired.mailbox` for good; false when it was retired already (the first
    /// record stays).
    fn retire_mailbox(&self, retired: &Retired) -> Result<bool, StoreError>;
    /// The retirement record of `mailbox`, if it was retired.
    fn retired_mailbox(&self, mailbox: &str) -> Result<Option<Retired>, StoreError>;
    /// Suspends the service: opens `outage` (its `end` ignored) and logs `event` (kind
    /// [`EventKind::ProviderSuspended`]) in one transaction. False, recording nothing,
    /// when an outage is open already.
    fn suspend_provider(&self, outage: &Outage, event: &LogEvent) -> Result<bool, StoreError>;
    /// Resumes the service: closes the open outage at `event.at` and logs `event` (kind
    /// [`EventKind::ProviderResumed`]) in one transaction; the closed outage, or `None`
    /// (nothing recorded) when none was open.
    fn resume_provider(&self, event: &LogEvent) -> Result<Option<Outage>, StoreError>;
    /// The open outage, if the service is suspended now.
    fn provider_suspension(&self) -> Result<Option<Outage>, StoreError>;
    /// The outages that overlap `[from, to)`, oldest first (open ones included).
    fn outages(&self, from: Instant, to: Instant) -> Result<Vec<Outage>, StoreError>;

    // ---- Timers and the provider index ----

    /// Timers (spec §5.4): claims, in one transaction, the tracking rows whose `which`
    /// notice is due and returns them with what is needed to build the notice. A row is due
    /// when its envelope was really queued (its pending acceptance is closed), it was sent
    /// at or before `claim.sent_up_to`, its state still calls for the notice (12 h: `Sent`;
    /// 24 h: `Sent` or `TakenInCharge`), the notice was not sent, and it is not claimed, or
    /// its claim is older than `claim.stale_before` (a process died between claim and
    /// confirmation). Claimed rows carry the claim instant `claim.now`. At most
    /// `claim.limit` rows, oldest first.
    fn claim_timeouts(&self, claim: &TimeoutClaim) -> Result<Vec<DueNotice>, StoreError>;
    /// Timers: the notice for `due` could not be sent: clears the claim (if it is still
    /// ours) so that the next pass tries again.
    fn release_timeout(&self, due: &DueNotice) -> Result<(), StoreError>;
    /// Provider index: the local copy, if one was stored.
    fn stored_index(&self) -> Result<Option<StoredIndex>, StoreError>;
    /// Provider index: replaces the local copy (one transaction: readers see the old copy
    /// or the new one). The caller has validated it.
    fn replace_index(&self, index: &StoredIndex) -> Result<(), StoreError>;

    // ---- REM trust data ----

    /// REM: keeps a Trusted List that [`crate::rem::trust::accept`] accepted. A version
    /// (source, sequence) not seen before is added to the history and becomes the
    /// source's current copy; one already stored only has its `checked_at` moved (its
    /// first text stays). True when the version is new.
    fn store_trusted_list(&self, list: &StoredTrustedList) -> Result<bool, StoreError>;
    /// REM: the current copy of each source (its highest sequence number), by source.
    fn trusted_lists(&self) -> Result<Vec<StoredTrustedList>, StoreError>;
    /// REM: every stored version, without its text: by source, newest first.
    fn trusted_list_history(&self) -> Result<Vec<TrustedListVersion>, StoreError>;

    // ---- Legal log ----

    /// Legal-log records matching `query`, in log order (`pec log search`, owner extracts).
    fn search_events(&self, query: &LogQuery) -> Result<Vec<LoggedEvent>, StoreError>;

    // ---- Receipts received, owner self-service ----

    /// Reception point: a receipt from another provider was received; moves each
    /// `(recipient, state)` tracking row of `event.pec_id` (as [`Store::update_tracking`])
    /// and logs `event` (kind [`EventKind::Received`]), its outcome `late` when it
    /// correlates but moves none of its rows ([`outbox::received_record`]). With `kept`,
    /// the receipt's bytes as received are stored beside that record (its id), kept and
    /// purged with it ([`LogStore::kept_receipts`]). Returns how many rows moved.
    /// One transaction.
    fn record_receipt_received(
        &self,
        event: &LogEvent,
        updates: &[(String, TrackingState)],
        kept: Option<&[u8]>,
    ) -> Result<usize, StoreError>;

    /// Access point, owner self-service: in one transaction, counts the requests of
    /// `request.owner` accepted at or after `since`; below `limit` it records `request` as
    /// pending and logs `event` with outcome `accepted`, else it logs `event` with outcome
    /// `rate-limited` and records nothing else. Returns whether the request was accepted.
    fn claim_log_request(
        &self,
        request: &LogRequest,
        limit: u32,
        since: Instant,
        event: &LogEvent,
    ) -> Result<bool, StoreError>;

    /// After queue: the request `id` and whether it was answered already; `None` when no
    /// such request was recorded.
    fn log_request(&self, id: &str) -> Result<Option<(LogRequest, bool)>, StoreError>;

    /// After queue: the reply to request `event.pec_id` (Message-ID `event.related_ids[0]`)
    /// was handed to the MTA; closes the request and logs `event` (kind
    /// [`EventKind::LogExtract`]) in one transaction. Returns false (and logs nothing) when
    /// it was closed already.
    fn log_request_answered(&self, event: &LogEvent) -> Result<bool, StoreError>;

    // ---- Outbox and deliveries (no duplicate after a crash, see [`outbox`]) ----

    /// Stages the signed message `out` with its `effect`, in one transaction (see
    /// [`Staged`]). The caller injects it only on [`Staged::New`].
    fn stage_outbound(&self, out: &Outbound, effect: &Effect) -> Result<Staged, StoreError>;

    /// The outbox row `key`, if any.
    fn outbound(&self, key: &str) -> Result<Option<Outbound>, StoreError>;

    /// The outbox row `key` was handed to the MTA at `at`.
    fn outbound_injected(&self, key: &str, at: Instant) -> Result<(), StoreError>;

    /// Outbox sweep: claims (in one transaction) at most `limit` rows not yet injected
    /// whose last attempt is older than `attempted_before`, stamping the attempt `now`, and
    /// returns them, oldest first.
    fn claim_unsent(
        &self,
        attempted_before: Instant,
        now: Instant,
        limit: usize,
    ) -> Result<Vec<Outbound>, StoreError>;

    /// Delivery point, before handing a message to Dovecot: for each recipient (compared in
    /// lower case), what was recorded for (`message_id`, recipient) before this call, and an
    /// intent of `owner` ([`ledger::node_owner`]) recorded for those with nothing. An intent
    /// of another live owner is [`DeliveryMark::Busy`] and left alone; one of a dead owner
    /// is taken over (owner and time set to `owner`, `at`) and answered
    /// [`DeliveryMark::Intent`] (see [`outbox`]). One transaction.
    fn begin_deliveries(
        &self,
        message_id: &str,
        recipients: &[String],
        owner: &str,
        at: Instant,
    ) -> Result<Vec<Option<DeliveryMark>>, StoreError>;

    /// Delivery point: Dovecot answered 250 for `recipients` of `message_id`.
    fn deliveries_done(
        &self,
        message_id: &str,
        recipients: &[String],
        at: Instant,
    ) -> Result<(), StoreError>;

    /// Deletes the delivery records and the injected outbox rows older than `before`
    /// (they only matter while Postfix may still retry). Returns how many rows went.
    fn purge_outbox(&self, before: Instant) -> Result<u64, StoreError>;

    // ---- REM (issue 20): evidences and sender identities, see [`rem`] ----

    /// Records `evidence` and logs `event` (kind [`EventKind::RemEvidence`] of the
    /// evidence's direction, built by [`rem::Evidence::log_event`]) in one transaction;
    /// the evidence is kept beside that record and purged with it. Returns true when
    /// recorded; false, recording nothing, when the store holds this evidence id with these
    /// very bytes already (a retry); [`StoreError::EvidenceConflict`] when it holds the id
    /// with other bytes.
    fn record_evidence(&self, evidence: &Evidence, event: &LogEvent) -> Result<bool, StoreError>;
    /// The evidence `id`, if recorded (and not purged).
    fn evidence(&self, id: &str) -> Result<Option<StoredEvidence>, StoreError>;
    /// The evidences about REM message `message_id`, in the order they were recorded.
    fn evidences_for(&self, message_id: &str) -> Result<Vec<StoredEvidence>, StoreError>;
    /// Sets (replaces) the sender identity of `mailbox` (compared in ASCII lower case),
    /// with an audit row (`set`, `identity.set_at`, `identity.set_by`), in one transaction.
    fn set_sender_identity(
        &self,
        mailbox: &str,
        identity: &SenderIdentity,
    ) -> Result<(), StoreError>;
    /// The sender identity of `mailbox`, if one is set.
    fn sender_identity(&self, mailbox: &str) -> Result<Option<SenderIdentity>, StoreError>;
    /// Removes the sender identity of `mailbox`, with an audit row (`clear`, `at`, `by`);
    /// false, recording nothing, when none was set.
    fn clear_sender_identity(
        &self,
        mailbox: &str,
        at: Instant,
        by: &str,
    ) -> Result<bool, StoreError>;
    /// The changes of `mailbox`'s sender identity, oldest first.
    fn sender_identity_changes(&self, mailbox: &str) -> Result<Vec<IdentityChange>, StoreError>;
    /// REM timers (EN 319 532-4 Annex D): claims, in one transaction, the open waits of
    /// `claim.which` begun at or before `claim.started_up_to`, not claimed or claimed before
    /// `claim.stale_before`, at most `claim.limit`, oldest first. A consignment wait whose
    /// recipient has its outcome already (`delivery_notices`) is closed instead of claimed.
    fn claim_rem_waits(&self, claim: &RemWaitClaim) -> Result<Vec<RemDue>, StoreError>;
    /// REM timers: the notice of `due` could not be sent: clears the claim (if still ours).
    fn release_rem_wait(&self, due: &RemDue) -> Result<(), StoreError>;
    /// REM timers: `due` needs no notice (its outcome is known from our records): closed
    /// at `at` without one. False when it was closed already.
    fn settle_rem_wait(&self, due: &RemDue, at: Instant) -> Result<bool, StoreError>;
    /// The REM waits of `message_id` (open or closed), with their notice id and when they
    /// closed, by row id.
    fn rem_waits_for(&self, message_id: &str) -> Result<Vec<RemWaitState>, StoreError>;
}

/// A mailbox owner's request for the extract of their log records (owner self-service,
/// [`crate::log::request`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRequest {
    /// Request id (a PEC msgid), also the `pec_id` of its log events.
    pub id: String,
    /// The mailbox (authenticated sender), lower case.
    pub owner: String,
    /// The service address it was sent to.
    pub address: String,
    /// When the access point accepted it.
    pub at: Instant,
    /// The period asked for, `[from, to)`; `Err` with the reason (in Italian, for the
    /// owner) when the message named none or a wrong one.
    pub period: Result<(Instant, Instant), String>,
    /// Subject of the request.
    pub subject: String,
    /// Postfix queue id at the access point.
    pub queue_id: Option<String>,
}

/// A Trusted List accepted for REM (ETSI TS 119 612), as fetched and signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTrustedList {
    pub version: TrustedListVersion,
    /// The list as fetched, signature included (it verifies again when loaded).
    pub xml: String,
}

/// One stored version of a Trusted List.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedListVersion {
    /// Where it was fetched from (`[rem.trust] tl_urls`).
    pub source: String,
    /// `SchemeTerritory`.
    pub territory: String,
    /// `TSLSequenceNumber`.
    pub sequence: u64,
    /// `ListIssueDateTime`.
    pub issued_at: Instant,
    /// `NextUpdate`; `None` for a closed list.
    pub next_update: Option<Instant>,
    /// When this version was first fetched and accepted.
    pub fetched_at: Instant,
    /// When it was last fetched and found unchanged.
    pub checked_at: Instant,
}

/// The stored local copy of the provider index (spec §7.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIndex {
    /// The index as LDIF ([`crate::index::ldif::write_ldif`] / the source's own text).
    pub ldif: String,
    /// Number of provider records.
    pub providers: usize,
    pub fetched_at: Instant,
    /// Where it came from (`ldap://…`, a file path).
    pub source: String,
}

/// Which timer notices [`Store::claim_timeouts`] claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutClaim {
    pub which: Timeout,
    /// Rows sent at or before this instant are due.
    pub sent_up_to: Instant,
    /// The claim instant written on the rows.
    pub now: Instant,
    /// Claims older than this are taken over.
    pub stale_before: Instant,
    pub limit: usize,
}

/// A claimed timer notice: one certified recipient of one envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueNotice {
    pub which: Timeout,
    pub pec_id: String,
    pub recipient: String,
    pub sent_at: Instant,
    /// The claim instant (the notice's instant).
    pub claimed_at: Instant,
    /// The certification data of the envelope (from the pending acceptance).
    pub cert: Certification,
    /// Postfix queue id of the envelope, for the log.
    pub queue_id: Option<String>,
    /// Our provider name, for the log.
    pub provider: String,
}

impl TrackingState {
    /// Order of the states: a row only moves to a higher rank.
    pub fn rank(self) -> u8 {
        match self {
            TrackingState::Sent => 0,
            TrackingState::TakenInCharge => 1,
            TrackingState::Delivered | TrackingState::Failed => 2,
        }
    }
}

/// A legal-log record as stored: its position in the chain and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    /// Position in the log (insertion order; never reused).
    pub id: i64,
    pub event: LogEvent,
    /// SHA-256 of the record's canonical encoding (see [`chain`]).
    pub hash: Vec<u8>,
}

/// A search of the legal log (`pec log search`). Every set criterion must match; address
/// comparisons are case-insensitive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Sender or any recipient.
    pub mailbox: Option<String>,
    pub sender: Option<String>,
    pub recipient: Option<String>,
    /// From this instant, inclusive.
    pub from: Option<Instant>,
    /// Up to this instant, exclusive.
    pub to: Option<Instant>,
    /// Event label ([`EventKind::label`]), e.g. `Consegna`.
    pub kind: Option<String>,
    /// Substring of the subject (case-insensitive for ASCII).
    pub subject: Option<String>,
    /// PEC msgid.
    pub pec_id: Option<String>,
    /// At most this many records (oldest first); `None` for all.
    pub limit: Option<usize>,
}

impl LogQuery {
    /// Whether `event` matches (the reference semantics; the backends' searches narrow with
    /// SQL, then filter with it).
    pub fn matches(&self, event: &LogEvent) -> bool {
        let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        let is_recipient = |addr: &str| event.recipients.iter().any(|(r, _)| eq(r, addr));
        self.mailbox
            .as_deref()
            .is_none_or(|m| eq(&event.sender, m) || is_recipient(m))
            && self.sender.as_deref().is_none_or(|s| eq(&event.sender, s))
            && self.recipient.as_deref().is_none_or(is_recipient)
            && self.from.is_none_or(|f| event.at >= f)
            && self.to.is_none_or(|t| event.at < t)
            && self.kind.as_deref().is_none_or(|k| event.kind.label() == k)
            && self
                .subject
                .as_deref()
                .is_none_or(|s| event.subject.to_lowercase().contains(&s.to_lowercase()))
            && self.pec_id.as_deref().is_none_or(|p| event.pec_id == p)
    }
}

// SPDX-License-Identifier: GPL-3.0-or-later
//! The after-queue content filter: the one dispatcher of every queued message. Postfix's
//! `content_filter` (on port 25 and on submission) hands each message to [`AfterQueue`]
//! through the SMTP server of [`crate::smtp::server`], which sends each duty to the role
//! it belongs to:
//!
//! * an owner's log request the access point accepted: the reply
//!   ([`crate::log::reply`]);
//! * one of our envelopes with a pending acceptance: the access point's ricevuta di
//!   accettazione (spec §3.2), after queue because a milter's accept does not prove that
//!   Postfix queued the message (design §1) ([`crate::access::acceptance`]);
//! * remote recipients (domains not in `provider.domains`): the message unchanged;
//! * local recipients: the reception point (punto di ricezione, spec §5.2,
//!   [`point`]): the message is classified (signature, provider index, formal checks) and
//!   handled per the table of spec §5.2: presa in carico and delivery of a valid envelope,
//!   quarantine, presa in carico and virus notices for an infected one, receipts judged against our records and delivered or
//!   consumed, and everything else wrapped in a busta di anomalia, refused or forwarded
//!   per mailbox policy.
//!
//! Everything generated is injected on Postfix's no-filter port; the filter answers 250
//! only after every injection was accepted (fail closed, design §3).

use std::sync::Arc;

use thiserror::Error;
use tracing::{error, info, warn};

use crate::antivirus::{Antivirus, AvError, ScanVerdict};
use crate::crypto::revocation::RevocationStatus;
use crate::crypto::Signer;
use crate::crypto::VerifyOptions;
use crate::index::{IndexHandle, ProviderInfo};
use crate::issuing::{Emitted, IssueError, Issuing};
use crate::log::request::RequestSettings;
use crate::message::build::{BuildError, Builder, Generated, Issuer};
use crate::message::classify::{classify_shared_with, Classification, PecMessage};
use crate::message::ids::{envelope_id, MsgIdSource};
use crate::message::kind::Ricevuta;
use crate::message::time::{Clock, Instant};
use crate::smtp::server::{FilterHandler, FilterReply, Transaction};
use crate::smtp::{InjectError, Injector};
use crate::store::{Effect, EventKind, MailboxPolicy, Store, StoreError};
use crate::BoxFuture;

mod point;
pub mod rem;

use crate::bounce::{self, Bounced};
use point::Correlation;

#[derive(Debug, Error)]
pub enum AfterQueueError {
    /// The store, signing, a generated message's injection (the issuing kit).
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// The message itself (passed on unchanged) was not taken by the reinjection listener.
    #[error("injecting the message: {0}")]
    Inject(InjectError),
    #[error(transparent)]
    Antivirus(#[from] AvError),
    /// The mailbox policy refuses mail that is not valid PEC.
    #[error("refused by mailbox policy: {0}")]
    Refused(String),
    /// Mail that is not valid PEC carries a virus: refused.
    #[error("virus in mail that is not valid PEC: {0}")]
    Infected(String),
    /// A REM evidence could not be signed and time-stamped, or its receipt composed.
    #[error("rem: {0}")]
    Rem(String),
}

impl From<StoreError> for AfterQueueError {
    fn from(e: StoreError) -> Self {
        AfterQueueError::Issue(e.into())
    }
}

/// What the reception point needs: the provider index, the antivirus, our domains and our
/// `mailReceipt`, and the default policy for mail that is not valid PEC.
#[derive(Clone)]
pub struct Reception {
    /// The provider index (signer certificate → provider); each transaction takes the copy
    /// current when it starts, so refreshes apply at once.
    pub index: Arc<IndexHandle>,
    /// Certificate validation beyond the index (`[verify]`: chain to the anchors, name
    /// constraints, emailProtection, revocation); `None`: the index alone.
    pub chain: Option<Arc<crate::crypto::ChainPolicy>>,
    /// Scans the content of valid transport envelopes (spec §5.2, §3.8).
    pub antivirus: Arc<dyn Antivirus>,
    /// Our PEC domains (`provider.domains`): their recipients are local.
    pub domains: Vec<String>,
    /// Our `mailReceipt` (`provider.mail_receipt`): presa in carico and rilevazione virus
    /// addressed to it are consumed, never delivered.
    pub mail_receipt: String,
    /// Policy of a mailbox without its own (`reception.default_policy`).
    pub default_policy: MailboxPolicy,
}

impl Reception {
    /// Whether `address` is one of our mailboxes (its domain is one of ours).
    pub fn is_local(&self, address: &str) -> bool {
        let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// What the filter did with one transaction (for the caller's log and for tests).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Our envelope: the acceptance receipt was injected (PEC msgid, receipt Message-ID).
    pub acceptance: Option<(String, String)>,
    /// An owner's log request, consumed: its id and the reply's Message-ID (`None` when
    /// a repeated delivery found it answered already).
    pub log_request: Option<(String, Option<String>)>,
    /// Recipients the message went to unchanged (remote ones, and local ones of a valid
    /// envelope or receipt).
    pub passed_on: Vec<String>,
    /// What the reception point did for the local recipients, if there were any.
    pub local: Option<Local>,
}

/// The reception point's decision for the local recipients (spec §5.2 table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// Valid transport envelope, clean: presa in carico `receipt_id` sent to `to`.
    TakenInCharge {
        pec_id: String,
        receipt_id: String,
        to: String,
    },
    /// Valid transport envelope with a virus: not delivered, quarantined, taken in charge
    /// (spec §5.2: the virus is the second phase), one rilevazione virus per recipient
    /// (`notices`).
    Virus {
        pec_id: String,
        virus: String,
        notices: Vec<String>,
    },
    /// Valid receipt or notice: tracking rows updated, delivered to the persons, consumed
    /// when addressed to our `mailReceipt`; `notices` generated (mancata consegna per
    /// virus).
    Receipt {
        kind: Ricevuta,
        pec_id: String,
        consumed: bool,
        tracking_updated: usize,
        notices: Vec<String>,
    },
    /// Not valid PEC: wrapped in the anomaly envelope `anomaly` (for the recipients with
    /// that policy) and/or forwarded to `forwarded`.
    NotPec {
        reason: String,
        anomaly: Option<String>,
        forwarded: Vec<String>,
        /// For our REM mailboxes with the anomaly policy: the ReceivedFromNonERDS REM
        /// message that carries it to them instead ([`rem`]).
        received_from_non_erds: Option<String>,
    },
    /// Valid transport envelope already taken in charge for every local recipient (a
    /// retry after a crash, or a second copy): passed on again, no second presa in carico.
    AlreadyTakenInCharge { pec_id: String },
    /// A bounce of our envelope `pec_id` ([`crate::bounce`]): `notices` (avvisi di mancata
    /// consegna) sent to its sender, the report consumed; `also` when it named recipients
    /// the envelope does not certify, and was delivered as ordinary mail too.
    Bounced {
        pec_id: String,
        notices: Vec<String>,
        also: Option<Box<Local>>,
    },
    /// A REM message ([`rem`]).
    Rem(rem::RemLocal),
}

/// The after-queue filter handler: acceptance receipts after queue, then the reception
/// point.
///
/// For each transaction:
///
/// 1. reads the top-level `Message-ID` and `X-Trasporto`; when the message is one of our
///    transport envelopes with a pending acceptance, builds and signs the acceptance
///    receipt with the pending record's certification data and **its** instant, injects it
///    and records that it was emitted (legal-log event, pending acceptance closed);
/// 2. splits the RCPT TO list into local recipients (our domains) and remote ones;
/// 3. classifies the message for the local recipients at `clock.now()` (the one instant of
///    this transaction) against the provider index; for mail that is not valid PEC, reads
///    each local mailbox's policy and scans it; when it is infected or one policy refuses,
///    answers Reject for the whole transaction before anything is injected (one SMTP reply
///    covers every recipient);
/// 4. injects the message unchanged for the remote recipients;
/// 5. acts for the local recipients (see [`Local`]): a valid envelope is scanned, then
///    either taken in charge (presa in carico to the sender's `mailReceipt`, recorded as
///    verified in the store, same-provider tracking rows updated, envelope injected) or
///    refused for a virus (quarantine, presa in carico, rilevazione virus per recipient);
///    a valid receipt updates our tracking rows and is delivered (or consumed, and kept
///    signed beside its legal-log record, when it is a presa in carico or rilevazione virus
///    for our `mailReceipt`); anything else follows the policy;
/// 6. answers Accept: only now does Postfix drop its copy.
///
/// Failures (fail closed, design §3): store, antivirus, signing, task or injection
/// 4xx/connection errors answer Tempfail, so Postfix keeps the message and retries. A 5xx
/// from the listener for a message we generated is also Tempfail (a fault on our side). A
/// 5xx for the message itself (injected unchanged) answers Reject with the listener's
/// reason, and Postfix bounces it to the sender.
///
/// Crashes and retries. The acceptance receipt and the presa in carico are staged in the
/// outbox with their claim and their legal-log events before they are injected
/// ([`crate::issuing::Issuing::emit`]; the transport envelope itself is logged with the acceptance,
/// only now that it is known queued): a retry finds the claim and builds nothing, and the
/// outbox sweep injects the staged bytes if the crash came before they were marked
/// injected. The other generated messages (virus notices, anomaly envelopes, log replies)
/// are still injected before they are recorded: a crash between the two may duplicate
/// them (the log shows it), never lose them.
pub struct AfterQueue {
    kit: Issuing,
    reception: Reception,
    log_requests: Option<RequestSettings>,
    /// Largest received receipt kept beside its legal-log record, bytes
    /// (`reception.kept_receipt_max_size`).
    kept_receipt_max: usize,
    /// The REM path (`[rem] enabled`); `None`: REM messages are classified as any other.
    rem: Option<Arc<rem::RemReception>>,
}

/// Default of [`AfterQueue::with_kept_receipt_max`] (`reception.kept_receipt_max_size`,
/// 1 MiB): a presa in carico or rilevazione virus is a few kilobytes; a larger one is
/// logged with its size and SHA-256, not kept.
pub const KEPT_RECEIPT_MAX: usize = 1 << 20;

impl AfterQueue {
    /// `injector` reaches Postfix's reinjection listener (no filter, no milter); `issuer`,
    /// `signer` and `ids` build every generated message; `reception` holds the index, the
    /// antivirus and our domains. Uses the system clock.
    pub fn new(
        store: Arc<dyn Store>,
        injector: Arc<dyn Injector>,
        issuer: Issuer,
        signer: Arc<dyn Signer>,
        ids: Arc<dyn MsgIdSource>,
        reception: Reception,
    ) -> Self {
        AfterQueue {
            kit: Issuing::new(store, injector, issuer, signer, ids),
            reception,
            log_requests: None,
            kept_receipt_max: KEPT_RECEIPT_MAX,
            rem: None,
        }
    }

    /// The REM path for REM messages to local recipients (`None`: off).
    pub fn with_rem(mut self, rem: Option<Arc<rem::RemReception>>) -> Self {
        self.rem = rem.filter(|r| r.settings.enabled);
        self
    }

    /// The largest presa in carico or rilevazione virus kept, signed and byte-exact, beside
    /// its legal-log record (default [`KEPT_RECEIPT_MAX`]). A larger one is still judged,
    /// logged and consumed; its record says it was not kept, with its size and SHA-256.
    pub fn with_kept_receipt_max(mut self, bytes: usize) -> Self {
        self.kept_receipt_max = bytes;
        self
    }

    /// Answers the owners' log requests the access point accepted (`None`: the marked
    /// messages are treated as any other).
    pub fn with_log_requests(mut self, settings: Option<RequestSettings>) -> Self {
        self.log_requests = settings;
        self
    }

    /// Replaces the clock (the instant of classification, of the legal-log events and of
    /// every message generated by the reception point).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.kit.clock = clock;
        self
    }

    /// Processes one transaction and says what to answer Postfix.
    pub async fn filter(&self, tx: &Transaction) -> FilterReply {
        let queue_id = tx.queue_id.as_deref().unwrap_or("-");
        let msgid = envelope_id(&tx.data);
        let shown = msgid.as_deref().unwrap_or("-");
        let started = std::time::Instant::now();
        let result = self.process(tx, msgid.as_deref()).await;
        crate::metrics::latency(crate::metrics::Role::Filter, started.elapsed());
        record(&result);
        match result {
            Ok(outcome) => {
                if let Some((pec_id, receipt)) = &outcome.acceptance {
                    info!(queue_id, msgid = %pec_id, receipt = %receipt, "after queue: acceptance receipt emitted");
                }
                match &outcome.local {
                    None => info!(
                        queue_id,
                        msgid = shown,
                        passed_on = outcome.passed_on.len(),
                        "after queue: passed through"
                    ),
                    Some(local) => info!(
                        queue_id,
                        msgid = shown,
                        passed_on = outcome.passed_on.len(),
                        "reception: {local:?}"
                    ),
                }
                FilterReply::Accept
            }
            Err(AfterQueueError::Inject(InjectError::Permanent { reason, .. })) => {
                warn!(
                    queue_id,
                    msgid = shown,
                    "after queue: refused by the reinjection listener: {reason}"
                );
                FilterReply::Reject(reason)
            }
            Err(AfterQueueError::Infected(virus)) => {
                warn!(
                    queue_id,
                    msgid = shown,
                    virus = %virus,
                    "reception: virus in mail that is not valid PEC: refused"
                );
                FilterReply::Reject(format!("Virus found: {}", one_line(&virus)))
            }
            Err(AfterQueueError::Refused(reason)) => {
                warn!(
                    queue_id,
                    msgid = shown,
                    "reception: refused by mailbox policy: {reason}"
                );
                FilterReply::Reject(format!(
                    "Not a valid certified (PEC) message, refused by the recipient's policy: {}",
                    one_line(&reason)
                ))
            }
            Err(e) => {
                error!(queue_id, msgid = shown, "after queue: tempfail: {e}");
                FilterReply::Tempfail(tempfail_text(&e))
            }
        }
    }

    /// The steps of the type documentation; `msgid` is the PEC msgid when the message
    /// looks like a transport envelope.
    pub async fn process(
        &self,
        tx: &Transaction,
        msgid: Option<&str>,
    ) -> Result<Outcome, AfterQueueError> {
        let answered = match &self.log_requests {
            Some(settings) => crate::log::reply::after_queue(&self.kit, settings, tx).await?,
            None => None,
        };
        if let Some(answered) = answered {
            return Ok(Outcome {
                log_request: Some(answered),
                ..Outcome::default()
            });
        }
        let mut outcome = Outcome {
            acceptance: crate::access::acceptance::after_queue(&self.kit, tx, msgid, &|r| {
                self.reception.is_local(r)
            })
            .await?,
            ..Outcome::default()
        };
        let (local, remote): (Vec<String>, Vec<String>) = tx
            .rcpt_to
            .iter()
            .cloned()
            .partition(|r| self.reception.is_local(r));
        if local.is_empty() {
            self.pass_on(tx, &remote).await?;
            outcome.passed_on = remote;
            return Ok(outcome);
        }

        let now = self.kit.clock.now();
        // REM before PEC: a REM message is never judged as PEC.
        if let Some(rem) = &self.rem {
            if crate::rem::message::is_rem(&tx.data) {
                let local = self
                    .rem(rem, tx, &local, &remote, now, &mut outcome.passed_on)
                    .await?;
                outcome.local = Some(local);
                return Ok(outcome);
            }
        }
        let class = {
            let index = self.reception.index.current();
            let mut opts = VerifyOptions::new(index.trust(), now);
            if let Some(chain) = &self.reception.chain {
                opts = opts.with_chain(chain);
            }
            crate::issuing::blocking_borrowed(|| classify_shared_with(&tx.data, &opts))
        };
        if let Some(m) = class.pec() {
            if let RevocationStatus::Unknown { reason } = &m.verified.revocation {
                // Accepted under the grace policy: said and counted.
                warn!(
                    queue_id = tx.queue_id.as_deref().unwrap_or(""),
                    signer = %m.verified.signer_subject,
                    "reception point: revocation status unknown, accepted within the grace window: {reason}"
                );
                crate::metrics::revocation_unknown_accepted();
            }
        }
        // Decide everything that may refuse the transaction before injecting anything.
        let plan = match class {
            Classification::TransportEnvelope(m) => match m.verified.provider.clone() {
                Some(provider) => match self.envelope_problem(&m, &provider, &local).await? {
                    None => Plan::Envelope(Box::new(m), provider),
                    Some(reason) => Plan::NotPec(reason, self.policies(&local).await?),
                },
                None => Plan::NotPec(
                    "certificato del gestore mittente senza record nell'indice".into(),
                    self.policies(&local).await?,
                ),
            },
            Classification::Receipt(kind, m) => {
                let found = self.correlate(kind, &m).await?;
                match self.receipt_problem(kind, &m, &found, &local) {
                    None => Plan::Receipt(kind, Box::new(m), found),
                    Some(reason) => Plan::NotPec(reason, self.policies(&local).await?),
                }
            }
            other => {
                let reason = other.reason().unwrap_or("messaggio non valido").to_string();
                match bounce::judge(&self.kit, &tx.mail_from, &local, &tx.data).await? {
                    Some(b) => Plan::Bounce(Box::new(b), reason),
                    None => Plan::NotPec(reason, self.policies(&local).await?),
                }
            }
        };
        if let Plan::NotPec(reason, policies) = &plan {
            // Infected ordinary mail is refused, as on the Internet (spec §5.2): never
            // wrapped, forwarded or delivered.
            if let ScanVerdict::Infected(virus) = self.reception.antivirus.scan(&tx.data).await? {
                self.log_not_pec(tx, &local, EventKind::RejectedInSmtp, "virus", &virus, now)
                    .await?;
                return Err(AfterQueueError::Infected(virus));
            }
            if policies.iter().any(|(_, p)| *p == MailboxPolicy::Refuse) {
                self.log_not_pec(
                    tx,
                    &local,
                    EventKind::RejectedInSmtp,
                    "refused",
                    reason,
                    now,
                )
                .await?;
                return Err(AfterQueueError::Refused(reason.clone()));
            }
        }

        self.pass_on(tx, &remote).await?;
        outcome.passed_on = remote;
        let local_outcome = match plan {
            Plan::Envelope(m, provider) => {
                self.envelope(tx, &m, &provider, &local, now, &mut outcome.passed_on)
                    .await?
            }
            Plan::Receipt(kind, m, found) => {
                self.receipt(tx, kind, &m, found, &local, now, &mut outcome.passed_on)
                    .await?
            }
            Plan::NotPec(reason, policies) => self.not_pec(tx, reason, policies, now).await?,
            Plan::Bounce(b, reason) => {
                let (client, queue_id) = (tx.client.as_deref(), tx.queue_id.as_deref());
                let notices = bounce::notify(&self.kit, &b, client, queue_id, now).await?;
                // Failures the envelope does not certify: the report itself goes on as
                // ordinary mail, so the sender still reads about them.
                let also = match b.uncertified {
                    false => None,
                    true => {
                        let policies = self.policies(&local).await?;
                        Some(Box::new(self.not_pec(tx, reason, policies, now).await?))
                    }
                };
                Local::Bounced {
                    pec_id: b.cert.identificativo.clone(),
                    notices,
                    also,
                }
            }
        };
        outcome.local = Some(local_outcome);
        Ok(outcome)
    }

    /// The policy of every local recipient (its own, else the default).
    async fn policies(
        &self,
        local: &[String],
    ) -> Result<Vec<(String, MailboxPolicy)>, AfterQueueError> {
        let local = local.to_vec();
        let default = self.reception.default_policy.clone();
        Ok(self
            .kit
            .store(move |s| {
                local
                    .into_iter()
                    .map(|r| {
                        let p = s.mailbox_policy(&r)?.unwrap_or_else(|| default.clone());
                        Ok((r, p))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .await?)
    }

    /// Injects the message unchanged, with its reverse path, for `rcpt_to` (nothing when
    /// empty).
    async fn pass_on(&self, tx: &Transaction, rcpt_to: &[String]) -> Result<(), AfterQueueError> {
        if rcpt_to.is_empty() {
            return Ok(());
        }
        self.kit
            .injector
            .inject(&tx.mail_from, rcpt_to, &tx.data)
            .await
            .map_err(AfterQueueError::Inject)
    }

    /// Stages `g` under `key` with `effect`, injects it and marks it (the issuing kit);
    /// `g` moves into its outbox row (an anomaly envelope carries the whole message).
    async fn emit(
        &self,
        key: String,
        g: Generated,
        effect: Effect,
        at: Instant,
    ) -> Result<Emitted, AfterQueueError> {
        Ok(self.kit.emit(key, g, effect, at).await?)
    }

    /// Builds and signs one message off the async workers (signing may block on PKCS#11).
    async fn build<F>(&self, f: F) -> Result<Generated, AfterQueueError>
    where
        F: FnOnce(&Builder<'_>) -> Result<Generated, BuildError> + Send + 'static,
    {
        Ok(self.kit.build(f).await?)
    }
}

/// The classification of one transaction for its local recipients, decided before any
/// injection.
enum Plan {
    Envelope(Box<PecMessage>, ProviderInfo),
    Receipt(Ricevuta, Box<PecMessage>, Correlation),
    NotPec(String, Vec<(String, MailboxPolicy)>),
    /// A report that an MTA bounced one of our envelopes ([`crate::bounce`]), and why it is not
    /// valid PEC (for the part delivered as ordinary mail).
    Bounce(Box<Bounced>, String),
}

/// `s` on one line, for an SMTP reply.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}

impl FilterHandler for AfterQueue {
    fn handle<'a>(&'a self, tx: &'a Transaction) -> BoxFuture<'a, FilterReply> {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "filter",
            queue_id = tx.queue_id.as_deref().unwrap_or("-"),
            msgid = envelope_id(&tx.data).as_deref().unwrap_or("-")
        );
        Box::pin(self.filter(tx).instrument(span))
    }
}

/// The metrics of one transaction of the after-queue filter.
fn record(result: &Result<Outcome, AfterQueueError>) {
    use crate::metrics::{message, tempfail, Role::Filter};
    match result {
        Ok(outcome) => {
            if outcome.acceptance.is_some() {
                message(Filter, "acceptance_receipt", "emitted");
            }
            match &outcome.local {
                None => message(Filter, "relay", "passed_on"),
                Some(Local::TakenInCharge { .. }) => {
                    message(Filter, "transport_envelope", "taken_in_charge")
                }
                Some(Local::AlreadyTakenInCharge { .. }) => {
                    message(Filter, "transport_envelope", "already_taken_in_charge")
                }
                Some(Local::Virus { .. }) => message(Filter, "transport_envelope", "virus"),
                Some(Local::Receipt { kind, consumed, .. }) => message(
                    Filter,
                    kind.as_str(),
                    if *consumed { "consumed" } else { "delivered" },
                ),
                Some(Local::NotPec {
                    anomaly,
                    received_from_non_erds,
                    ..
                }) => message(
                    Filter,
                    "not_pec",
                    if received_from_non_erds.is_some() && anomaly.is_none() {
                        "received_from_non_erds"
                    } else if anomaly.is_some() {
                        "anomaly"
                    } else {
                        "forwarded"
                    },
                ),
                Some(Local::Rem(r)) => message(
                    Filter,
                    "rem",
                    match r {
                        rem::RemLocal::Relayed { .. } => "relayed",
                        rem::RemLocal::Own { .. } => "own_dispatch",
                        rem::RemLocal::Rejected { .. } => "relay_rejected",
                        rem::RemLocal::Receipt { .. } => "receipt_consumed",
                        rem::RemLocal::Delivered { .. } => "receipt_delivered",
                        rem::RemLocal::Unverified { .. } => "unverified",
                    },
                ),
                Some(Local::Bounced { notices, .. }) => message(
                    Filter,
                    "bounce",
                    if notices.is_empty() {
                        "decided_already"
                    } else {
                        "non_delivery"
                    },
                ),
            }
        }
        Err(AfterQueueError::Inject(InjectError::Permanent { .. })) => {
            message(Filter, "message", "rejected")
        }
        Err(AfterQueueError::Infected(_)) => message(Filter, "not_pec", "virus_refused"),
        Err(AfterQueueError::Refused(_)) => message(Filter, "not_pec", "refused"),
        Err(e) => {
            message(Filter, "message", "tempfail");
            tempfail(
                Filter,
                match e {
                    AfterQueueError::Issue(IssueError::Store(_)) => "store",
                    AfterQueueError::Issue(IssueError::Build(_)) => "signer",
                    AfterQueueError::Antivirus(_) => "antivirus",
                    AfterQueueError::Rem(_) => "signer",
                    AfterQueueError::Inject(_) | AfterQueueError::Issue(IssueError::Staged(_)) => {
                        "reinjection"
                    }
                    _ => "internal",
                },
            );
        }
    }
}

/// What Postfix is told on a temporary failure (details stay in our log).
fn tempfail_text(e: &AfterQueueError) -> String {
    match e {
        AfterQueueError::Issue(IssueError::Store(_)) => "Store unavailable, try again later".into(),
        AfterQueueError::Issue(IssueError::Build(_)) => {
            "Cannot sign a receipt, try again later".into()
        }
        AfterQueueError::Antivirus(_) => "Antivirus unavailable, try again later".into(),
        AfterQueueError::Rem(_) => {
            "Cannot sign or time-stamp a REM evidence, try again later".into()
        }
        AfterQueueError::Refused(_) | AfterQueueError::Infected(_) => {
            "Refused, try again later".into()
        }
        AfterQueueError::Inject(_) | AfterQueueError::Issue(IssueError::Staged(_)) => {
            "Reinjection failed, try again later".into()
        }
        AfterQueueError::Issue(IssueError::Task(_)) => "Internal error, try again later".into(),
    }
}

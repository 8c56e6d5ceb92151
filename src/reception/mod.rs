//! After-queue content filter: the reception point (punto di ricezione, spec §5.2), plus the
//! acceptance receipts of our own envelopes after queue.
//!
//! The access point (milter) rewrites an accepted submission into the signed transport
//! envelope and records a pending acceptance; a milter's accept does not prove that Postfix
//! queued the message (design §1). Postfix's `content_filter` (on port 25 and on
//! submission) then hands every queued message to [`AfterQueue`] through the SMTP server of
//! [`crate::smtp::server`]:
//!
//! * when the message is one of our envelopes with a pending acceptance, the filter emits
//!   the signed ricevuta di accettazione (spec §3.2) first;
//! * remote recipients (domains not in `provider.domains`) get the message unchanged;
//! * for local recipients the message is classified (signature, provider index, formal
//!   checks) and handled per the table of spec §5.2: presa in carico and delivery of a valid
//!   envelope, virus notices and quarantine, receipts correlated with our tracking rows and
//!   delivered or consumed, and everything else wrapped in a busta di anomalia, refused or
//!   forwarded per mailbox policy.
//!
//! Everything generated is injected on Postfix's no-filter port; the filter answers 250
//! only after every injection was accepted (fail closed, design §3).

use std::sync::Arc;

use thiserror::Error;
use tracing::{error, info, warn};

use crate::antivirus::{Antivirus, AvError, ScanVerdict};
use crate::crypto::Signer;
use crate::index::{IndexHandle, ProviderInfo};
use crate::log::request::{self as log_request, RequestSettings, REQUEST_HEADER};
use crate::message::build::{BuildError, Builder, Certification, Generated, Issuer};
use crate::message::classify::{classify_shared, Classification, PecMessage};
use crate::message::ids::{envelope_id, unbracketed, MsgIdSource};
use crate::message::kind::{MessageKind, RecipientType, Ricevuta};
use crate::message::mime::{fields, normalize_crlf, split_header_body};
use crate::message::time::{Clock, Instant, SystemClock};
use crate::outbox::{outbound, EmitError, Emitted};
use crate::smtp::server::{FilterHandler, FilterReply, Transaction};
use crate::smtp::{InjectError, Injector};
use crate::store::outbox::{
    acceptance_key, anomaly_key, log_reply_key, take_charge_key, virus_key, virus_non_delivery_key,
};
use crate::store::{
    Accepted, Effect, EventKind, LogEvent, MailboxPolicy, Store, StoreError, TrackingState,
};
use crate::BoxFuture;

#[derive(Debug, Error)]
pub enum AfterQueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("building a generated message: {0}")]
    Build(#[from] BuildError),
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
    #[error("worker task: {0}")]
    Task(String),
    #[error("emitting a generated message: {0}")]
    Emit(#[from] EmitError),
}

/// What the reception point needs: the provider index, the antivirus, our domains and our
/// `mailReceipt`, and the default policy for mail that is not valid PEC.
#[derive(Clone)]
pub struct Reception {
    /// The provider index (signer certificate → provider); each transaction takes the copy
    /// current when it starts, so refreshes apply at once.
    pub index: Arc<IndexHandle>,
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
    /// Valid transport envelope with a virus: not delivered, quarantined, one rilevazione
    /// virus per recipient (`notices`).
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
    },
    /// Valid transport envelope already taken in charge for every local recipient (a
    /// retry after a crash, or a second copy): passed on again, no second presa in carico.
    AlreadyTakenInCharge { pec_id: String },
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
///    refused for a virus (rilevazione virus per recipient, quarantine); a valid receipt
///    updates our tracking rows and is delivered (or consumed, when it is a presa in carico
///    or rilevazione virus for our `mailReceipt`); anything else follows the policy;
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
/// ([`crate::outbox::emit`]; the transport envelope itself is logged with the acceptance,
/// only now that it is known queued): a retry finds the claim and builds nothing, and the
/// outbox sweep injects the staged bytes if the crash came before they were marked
/// injected. The other generated messages (virus notices, anomaly envelopes, log replies)
/// are still injected before they are recorded: a crash between the two may duplicate
/// them (the log shows it), never lose them.
pub struct AfterQueue {
    store: Arc<dyn Store>,
    injector: Arc<dyn Injector>,
    issuer: Issuer,
    signer: Arc<dyn Signer>,
    ids: Arc<dyn MsgIdSource>,
    clock: Arc<dyn Clock>,
    reception: Reception,
    log_requests: Option<RequestSettings>,
}

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
            store,
            injector,
            issuer,
            signer,
            ids,
            clock: Arc::new(SystemClock),
            reception,
            log_requests: None,
        }
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
        self.clock = clock;
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
        if let Some(answered) = self.log_request_after_queue(tx).await? {
            return Ok(Outcome {
                log_request: Some(answered),
                ..Outcome::default()
            });
        }
        let mut outcome = Outcome {
            acceptance: self.acceptance_after_queue(tx, msgid).await?,
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

        let now = self.clock.now();
        let class = {
            let index = self.reception.index.current();
            crate::blocking_borrowed(|| classify_shared(&tx.data, index.trust(), now))
        };
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
                Plan::NotPec(reason, self.policies(&local).await?)
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
        };
        outcome.local = Some(local_outcome);
        Ok(outcome)
    }

    /// Step 1: the acceptance receipt of our own envelope, once.
    async fn acceptance_after_queue(
        &self,
        tx: &Transaction,
        msgid: Option<&str>,
    ) -> Result<Option<(String, String)>, AfterQueueError> {
        let pending = match msgid {
            Some(id) => {
                let store = self.store.clone();
                let id = id.to_string();
                blocking(move || store.pending_acceptance(&id)).await??
            }
            None => None,
        };
        let Some(accepted) = pending else {
            return Ok(None);
        };

        let pec_id = accepted.pec_id.clone();
        let receipt = self.build_acceptance(accepted).await?;
        let queue_id = tx.queue_id.as_deref().unwrap_or("-");
        let at = self.clock.now();
        let receipt_id = receipt.message_id.clone();
        let effect = Effect::Acceptance {
            pec_id: pec_id.clone(),
            receipt_id: receipt_id.clone(),
            at,
        };
        match self
            .emit(acceptance_key(&pec_id), receipt, effect, at)
            .await?
        {
            Emitted::New(_) => info!(
                queue_id,
                msgid = %pec_id,
                receipt = %receipt_id,
                "after queue: acceptance receipt injected"
            ),
            other => {
                warn!(
                    queue_id,
                    msgid = %pec_id,
                    receipt = other.message_id().unwrap_or("-"),
                    "after queue: acceptance already emitted by a concurrent delivery: none sent"
                );
                return Ok(None);
            }
        }
        Ok(Some((pec_id, receipt_id)))
    }

    /// An owner's log request accepted by the access point (marked with
    /// [`REQUEST_HEADER`], every recipient the service address it was recorded with):
    /// builds the reply, injects it, and closes the request with its event; the request
    /// message itself is consumed. `None` when the message is not such a request (no
    /// mark, or a mark we did not record: a header anybody could write, treated as any
    /// other mail).
    async fn log_request_after_queue(
        &self,
        tx: &Transaction,
    ) -> Result<Option<(String, Option<String>)>, AfterQueueError> {
        let Some(settings) = &self.log_requests else {
            return Ok(None);
        };
        let Some(id) = request_id(&tx.data) else {
            return Ok(None);
        };
        let store = self.store.clone();
        let id2 = id.clone();
        let Some((request, answered)) = blocking(move || store.log_request(&id2)).await?? else {
            return Ok(None);
        };
        if !tx
            .rcpt_to
            .iter()
            .all(|r| r.eq_ignore_ascii_case(&request.address))
        {
            return Ok(None);
        }
        let queue_id = tx.queue_id.as_deref().unwrap_or("-");
        if answered {
            info!(queue_id, request = %id, "after queue: log request answered already: consumed");
            return Ok(Some((id, None)));
        }
        let content = match &request.period {
            Ok((from, to)) => {
                let (store, owner, (from, to), max) = (
                    self.store.clone(),
                    request.owner.clone(),
                    (*from, *to),
                    settings.max_records,
                );
                let (events, more) = blocking(move || {
                    log_request::owner_records(store.as_ref(), &owner, from, to, max)
                })
                .await??;
                log_request::extract(&events, more)
            }
            Err(why) => log_request::ReplyContent::BadPeriod(why.clone()),
        };
        let now = self.clock.now();
        let reply_id = self.ids.next_id(now);
        let (settings2, request2, content2, reply_id2) = (
            settings.clone(),
            request.clone(),
            content.clone(),
            reply_id.clone(),
        );
        let reply = self
            .build(move |b| {
                log_request::build_reply(b, &settings2, &request2, &content2, &reply_id2, now)
            })
            .await?;
        let event = log_request::extract_event(
            &request,
            &content,
            &reply.message_id,
            &self.issuer.provider_name,
            tx.queue_id.clone(),
            now,
        );
        // The request closed, its event and the reply staged in one transaction: a retry
        // (or a concurrent delivery) finds it answered and sends no second reply.
        let emitted = self
            .emit(log_reply_key(&id), reply, Effect::LogReply(event), now)
            .await?;
        match &emitted {
            Emitted::New(r) => {
                info!(queue_id, request = %id, reply = %r, owner = %request.owner, "after queue: log request answered")
            }
            other => {
                info!(queue_id, request = %id, reply = other.message_id().unwrap_or("-"), "after queue: log request answered by a concurrent delivery: no second reply")
            }
        }
        Ok(Some((id, emitted.message_id().map(str::to_string))))
    }

    /// The policy of every local recipient (its own, else the default).
    async fn policies(
        &self,
        local: &[String],
    ) -> Result<Vec<(String, MailboxPolicy)>, AfterQueueError> {
        let store = self.store.clone();
        let local = local.to_vec();
        let default = self.reception.default_policy.clone();
        blocking(move || {
            local
                .into_iter()
                .map(|r| {
                    let p = store.mailbox_policy(&r)?.unwrap_or_else(|| default.clone());
                    Ok((r, p))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await?
        .map_err(AfterQueueError::from)
    }

    /// A valid transport envelope for `local`: antivirus, then presa in carico and delivery,
    /// or virus notices and quarantine.
    async fn envelope(
        &self,
        tx: &Transaction,
        m: &PecMessage,
        provider: &ProviderInfo,
        local: &[String],
        now: Instant,
        passed_on: &mut Vec<String>,
    ) -> Result<Local, AfterQueueError> {
        let queue_id = tx.queue_id.as_deref().unwrap_or("-");
        let pec_id = m.daticert.identificativo.clone();
        let cert = Certification::of_verified_envelope(&m.daticert, &m.verified.content)
            .unwrap_or_else(|| Certification::from_envelope(&m.daticert, Vec::new(), Vec::new()));
        let ours = provider
            .mail_receipt
            .eq_ignore_ascii_case(&self.reception.mail_receipt);

        if let ScanVerdict::Infected(virus) = self.reception.antivirus.scan(&tx.data).await? {
            // The quarantine first, once: a retry of the same queue file (or the same
            // envelope handed over again) finds the message held and records nothing.
            let event = self.event(
                &cert,
                &pec_id,
                EventKind::Quarantined,
                Vec::new(),
                tx,
                &provider.name,
                "virus",
                Some(&virus),
                now,
            );
            let store = self.store.clone();
            let data = tx.data.clone();
            // Recorded once: a retry (or another node) finds these bytes held already.
            blocking(move || store.record_quarantine(&event, &data)).await??;
            let mut notices = Vec::new();
            for r in local {
                let (c, r2, v, to) = (
                    cert.clone(),
                    r.clone(),
                    virus.clone(),
                    provider.mail_receipt.clone(),
                );
                let notice = self
                    .build(move |b| b.virus_detection(&c, now, &r2, &v, &to))
                    .await?;
                let event = self.event(
                    &cert,
                    &pec_id,
                    EventKind::Issued(MessageKind::VirusDetection),
                    vec![notice.message_id.clone()],
                    tx,
                    &provider.name,
                    "virus",
                    Some(&virus),
                    now,
                );
                let emitted = self
                    .emit(virus_key(&pec_id, r), notice, Effect::Log(vec![event]), now)
                    .await?;
                notices.extend(emitted.message_id().map(str::to_string));
            }
            warn!(queue_id, msgid = %pec_id, virus = %virus, "reception: virus in a transport envelope: not delivered, quarantined");
            if ours {
                // Our own rilevazione virus goes to our mailReceipt on the no-filter port
                // and never comes back through here: act on it now.
                for r in local {
                    self.virus_for_our_user(tx, &cert, r, &virus, now).await?;
                }
            }
            return Ok(Local::Virus {
                pec_id,
                virus,
                notices,
            });
        }

        // A retry after a crash (we took the envelope in charge, then died before Postfix
        // read our 250), or the same envelope handed over twice by the sender's provider
        // after its own crash: the recipients already taken in charge get no second presa
        // in carico; the envelope is passed on again (the delivery point emits no second
        // delivery receipt either).
        let store = self.store.clone();
        let (id, all) = (pec_id.clone(), local.to_vec());
        let fresh: Vec<String> = blocking(move || -> Result<Vec<String>, StoreError> {
            let mut fresh = Vec::new();
            for r in all {
                if !store.is_verified(&id, &r)? {
                    fresh.push(r);
                }
            }
            Ok(fresh)
        })
        .await??;
        if fresh.is_empty() {
            info!(queue_id, msgid = %pec_id, "reception: transport envelope already taken in charge: no second presa in carico, passed on again");
            self.pass_on(tx, local).await?;
            passed_on.extend(local.iter().cloned());
            return Ok(Local::AlreadyTakenInCharge { pec_id });
        }
        let (all_local, local) = (local, &fresh[..]);

        let (c, taken, to) = (cert.clone(), local.to_vec(), provider.mail_receipt.clone());
        let receipt = self
            .build(move |b| b.take_charge(&c, now, &taken, &to))
            .await?;
        let event = self.event(
            &cert,
            &pec_id,
            EventKind::Issued(MessageKind::TakeCharge),
            vec![receipt.message_id.clone()],
            tx,
            &provider.name,
            "ok",
            None,
            now,
        );
        let effect = Effect::TakenInCharge {
            recipients: local.to_vec(),
            event,
            tracking: ours,
        };
        let receipt_id = receipt.message_id.clone();
        let emitted = self
            .emit(take_charge_key(&pec_id, local), receipt, effect, now)
            .await?;
        if !matches!(emitted, Emitted::New(_)) {
            // A concurrent delivery of the same envelope took it in charge first.
            info!(queue_id, msgid = %pec_id, "reception: transport envelope taken in charge by a concurrent delivery: no second presa in carico");
        } else if ours {
            info!(queue_id, msgid = %pec_id, "reception: same provider: our presa in carico recorded directly");
        }
        info!(queue_id, msgid = %pec_id, receipt = %receipt_id, to = %provider.mail_receipt, "reception: transport envelope taken in charge");
        self.pass_on(tx, all_local).await?;
        passed_on.extend(all_local.iter().cloned());
        Ok(Local::TakenInCharge {
            pec_id,
            receipt_id,
            to: provider.mail_receipt.clone(),
        })
    }

    /// Checks a valid transport envelope against our records before anything is taken in
    /// charge: `Some(reason)` when it must be treated as not valid PEC (anomaly or refusal
    /// by policy, never a presa in carico):
    ///
    /// * a local RCPT that is not among the daticert `destinatari` (the SMTP envelope is not
    ///   signed: a relay, or anyone replaying the envelope, could address it to somebody
    ///   else; the To/Cc headers and `postacert.eml` were checked against the daticert by
    ///   the classification);
    /// * an envelope of another provider whose `identificativo` is one of our own envelopes'
    ///   (our receipts, the tracking and the delivery point key on it).
    async fn envelope_problem(
        &self,
        m: &PecMessage,
        provider: &ProviderInfo,
        local: &[String],
    ) -> Result<Option<String>, AfterQueueError> {
        let d = &m.daticert;
        let stranger: Vec<&String> = local
            .iter()
            .filter(|r| {
                !d.destinatari
                    .iter()
                    .any(|x| x.address.trim().eq_ignore_ascii_case(r))
            })
            .collect();
        if !stranger.is_empty() {
            return Ok(Some(format!(
                "destinatario non presente nei dati di certificazione: {}",
                stranger
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let ours = provider
            .mail_receipt
            .eq_ignore_ascii_case(&self.reception.mail_receipt);
        if !ours {
            let (store, id) = (self.store.clone(), d.identificativo.clone());
            if blocking(move || store.envelope_certification(&id))
                .await??
                .is_some()
            {
                return Ok(Some(format!(
                    "identificativo {} di un messaggio di questo gestore in una busta firmata da {}",
                    d.identificativo, provider.name
                )));
            }
        }
        Ok(None)
    }

    /// Judges a receipt from another provider against our own records (see
    /// [`Correlation`]): our envelope's certification data and its tracking rows.
    async fn correlate(
        &self,
        kind: Ricevuta,
        m: &PecMessage,
    ) -> Result<Correlation, AfterQueueError> {
        let d = &m.daticert;
        let about: Vec<String> = match kind {
            Ricevuta::PresaInCarico => d.ricezione.clone(),
            _ => d.consegna.iter().cloned().collect(),
        };
        let (store, id) = (self.store.clone(), d.identificativo.clone());
        let (envelope, tracking) = blocking(move || -> Result<_, StoreError> {
            let envelope = store.envelope_certification(&id)?;
            let tracking = match envelope {
                Some(_) => store.tracking_for(&id)?,
                None => Vec::new(),
            };
            Ok((envelope, tracking))
        })
        .await??;
        let mut found = Correlation {
            envelope,
            about,
            ..Correlation::default()
        };
        let Some(c) = &found.envelope else {
            found.why_not = Some("not one of our envelopes".into());
            return Ok(found);
        };
        let provider = m.verified.provider.as_ref();
        let why_not = (|| {
            if !matches!(
                kind,
                Ricevuta::PresaInCarico
                    | Ricevuta::AvvenutaConsegna
                    | Ricevuta::ErroreConsegna
                    | Ricevuta::RilevazioneVirus
            ) {
                return Some(format!(
                    "a {} is never another provider's to send",
                    kind.as_str()
                ));
            }
            if m.riferimento_message_id
                .as_ref()
                .is_some_and(|r| unbracketed(r) != unbracketed(&c.riferimento()))
            {
                return Some("X-Riferimento-Message-ID of another message".into());
            }
            if found.about.is_empty() {
                return Some("about no recipient".into());
            }
            let certified = |a: &str| {
                c.destinatari.iter().any(|x| {
                    x.tipo == RecipientType::Certificato && x.address.eq_ignore_ascii_case(a)
                })
            };
            if let Some(r) = found.about.iter().find(|a| !certified(a)) {
                return Some(format!("{r} is not a certified recipient of the envelope"));
            }
            let managed = |a: &str| {
                let domain = a.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
                provider.is_some_and(|p| p.manages(domain))
            };
            found
                .about
                .iter()
                .find(|a| !managed(a))
                .map(|r| format!("{r} is not managed by the signer's provider"))
        })();
        if why_not.is_some() {
            found.why_not = why_not;
            return Ok(found);
        }
        found.correlated = true;
        // Still waiting for what the receipt reports: no presa in carico yet, or no
        // outcome yet (the 24 h notice is an outcome: tracking stops there, spec §5.4).
        let waiting = |state: TrackingState| match kind {
            Ricevuta::PresaInCarico => state == TrackingState::Sent,
            _ => state.rank() < TrackingState::Delivered.rank(),
        };
        found.late = !found.about.iter().any(|a| {
            tracking
                .iter()
                .any(|t| t.recipient.eq_ignore_ascii_case(a) && waiting(t.state))
        });
        Ok(found)
    }

    /// Whether the receipt may go to every local recipient as it is: consumed when it is a
    /// presa in carico or rilevazione virus for our `mailReceipt`, delivered to the person
    /// it is addressed to only when that is the sender it names (our record's sender when
    /// the envelope is ours, else the daticert `mittente`). `Some(reason)` otherwise: a
    /// receipt replayed or redirected to a third party is not valid PEC for that mailbox.
    fn receipt_problem(
        &self,
        kind: Ricevuta,
        m: &PecMessage,
        found: &Correlation,
        local: &[String],
    ) -> Option<String> {
        let sender = found
            .envelope
            .as_ref()
            .map_or(m.daticert.mittente.trim(), |c| c.mittente.as_str());
        let stranger: Vec<&str> = local
            .iter()
            .filter(|r| !(self.consumable(kind, r) || r.eq_ignore_ascii_case(sender)))
            .map(String::as_str)
            .collect();
        (!stranger.is_empty()).then(|| {
            format!(
                "{} indirizzata a {}, non al mittente {sender} del messaggio originale",
                kind.as_str(),
                stranger.join(", ")
            )
        })
    }

    /// A presa in carico or rilevazione virus for our `mailReceipt`: consumed, never
    /// delivered.
    fn consumable(&self, kind: Ricevuta, rcpt: &str) -> bool {
        matches!(kind, Ricevuta::PresaInCarico | Ricevuta::RilevazioneVirus)
            && rcpt.eq_ignore_ascii_case(&self.reception.mail_receipt)
    }

    /// A valid receipt or notice for `local` (each recipient checked by
    /// [`AfterQueue::receipt_problem`]): logged, our tracking rows moved when it correlates
    /// and they still wait for it, delivered to the sender, consumed when addressed to our
    /// `mailReceipt`. A rilevazione virus about a recipient still waiting gives our user the
    /// mancata consegna per virus, built from our own record of the envelope.
    #[allow(clippy::too_many_arguments)]
    async fn receipt(
        &self,
        tx: &Transaction,
        kind: Ricevuta,
        m: &PecMessage,
        found: Correlation,
        local: &[String],
        now: Instant,
        passed_on: &mut Vec<String>,
    ) -> Result<Local, AfterQueueError> {
        let queue_id = tx.queue_id.as_deref().unwrap_or("-");
        let d = &m.daticert;
        let pec_id = d.identificativo.clone();
        if let Some(why) = &found.why_not {
            warn!(
                queue_id,
                msgid = %pec_id,
                riferimento = m.riferimento_message_id.as_deref().unwrap_or("-"),
                "reception: {} about {:?} does not correlate ({why}): tracking left alone, nothing generated",
                kind.as_str(),
                found.about
            );
        } else if found.late {
            info!(queue_id, msgid = %pec_id, "reception: {} about {:?}, who have their outcome already: moves nothing, generates nothing", kind.as_str(), found.about);
        }
        let (consumed, persons): (Vec<String>, Vec<String>) = local
            .iter()
            .cloned()
            .partition(|r| self.consumable(kind, r));
        // What the receipt moves, in the transaction that logs it; a rilevazione virus moves
        // its rows with the notice it gives our user (below), so that a recipient whose
        // outcome is decided gets neither.
        let updates: Vec<(String, TrackingState)> = match kind {
            _ if !found.correlated => Vec::new(),
            Ricevuta::PresaInCarico => found
                .about
                .iter()
                .map(|r| (r.clone(), TrackingState::TakenInCharge))
                .collect(),
            Ricevuta::AvvenutaConsegna => found
                .about
                .iter()
                .map(|r| (r.clone(), TrackingState::Delivered))
                .collect(),
            Ricevuta::ErroreConsegna => found
                .about
                .iter()
                .map(|r| (r.clone(), TrackingState::Failed))
                .collect(),
            _ => Vec::new(),
        };
        let event = self.received_event(tx, kind, m, &found, &consumed, &persons, now);
        let store = self.store.clone();
        let tracking_updated =
            blocking(move || store.record_receipt_received(&event, &updates)).await??;
        info!(
            queue_id,
            msgid = %pec_id,
            riferimento = m.riferimento_message_id.as_deref().unwrap_or("-"),
            tracking_updated,
            outcome = found.outcome(),
            "reception: {} received",
            kind.as_str()
        );

        let mut notices = Vec::new();
        if let (Ricevuta::RilevazioneVirus, true, Some(cert)) =
            (kind, found.correlated, &found.envelope)
        {
            let virus = d
                .errore_esteso
                .as_deref()
                .map(one_line)
                .unwrap_or_else(|| "virus".into());
            for r in &found.about {
                notices.extend(self.virus_for_our_user(tx, cert, r, &virus, now).await?);
            }
        }

        if !persons.is_empty() {
            self.pass_on(tx, &persons).await?;
            passed_on.extend(persons);
        }
        Ok(Local::Receipt {
            kind,
            pec_id,
            consumed: !consumed.is_empty(),
            tracking_updated,
            notices,
        })
    }

    /// Logs what the reception point did with mail that is not valid PEC for `local`
    /// (refused in SMTP for a virus or by policy, forwarded by policy): about the
    /// message's own Message-ID (a new id when it has none).
    async fn log_not_pec(
        &self,
        tx: &Transaction,
        local: &[String],
        kind: EventKind,
        outcome: &str,
        reason: &str,
        now: Instant,
    ) -> Result<(), AfterQueueError> {
        let info = crate::message::build::OriginalInfo::parse(&tx.data).unwrap_or_default();
        let event = LogEvent {
            pec_id: info
                .message_id
                .clone()
                .unwrap_or_else(|| self.ids.next_id(now)),
            at: now,
            kind,
            sender: tx.mail_from.clone(),
            recipients: local
                .iter()
                .map(|r| (r.clone(), crate::message::kind::RecipientType::Certificato))
                .collect(),
            subject: info.subject,
            related_ids: Vec::new(),
            provider: String::new(),
            queue_id: tx.queue_id.clone(),
            outcome: outcome.to_string(),
            reason: Some(reason.to_string()),
        };
        let store = self.store.clone();
        blocking(move || store.log(&event)).await??;
        Ok(())
    }

    /// The [`EventKind::Received`] record of a receipt from another provider: about the
    /// envelope of its daticert (`envelope`: our certification data when it correlates
    /// with one of our envelopes), the receipt's Message-ID as the related id, the outcome
    /// `correlated` or `uncorrelated`, and in the reason whom it is about, whether it was
    /// consumed or delivered, and the provider's error text.
    #[allow(clippy::too_many_arguments)]
    fn received_event(
        &self,
        tx: &Transaction,
        kind: Ricevuta,
        m: &PecMessage,
        found: &Correlation,
        consumed: &[String],
        persons: &[String],
        now: Instant,
    ) -> LogEvent {
        let d = &m.daticert;
        // Our record of the envelope, when the receipt correlates with it; the receipt's
        // own words otherwise (its record then says "uncorrelated").
        let envelope = found.envelope.as_ref().filter(|_| found.correlated);
        let recipients = match envelope {
            Some(c) => &c.destinatari,
            None => &d.destinatari,
        };
        let mut reason = Vec::new();
        if !found.about.is_empty() {
            reason.push(format!("riguarda {}", found.about.join(", ")));
        }
        if let Some(why) = &found.why_not {
            reason.push(format!("non correlata: {why}"));
        }
        if let Some(c) = envelope {
            if !c.mittente.eq_ignore_ascii_case(d.mittente.trim()) {
                reason.push(format!("mittente dichiarato: {}", d.mittente));
            }
        }
        if !consumed.is_empty() {
            reason.push("consumata".to_string());
        }
        if !persons.is_empty() {
            reason.push(format!("consegnata a {}", persons.join(", ")));
        }
        if let Some(e) = &d.errore_esteso {
            reason.push(format!("errore: {e}"));
        }
        LogEvent {
            pec_id: d.identificativo.clone(),
            at: now,
            kind: EventKind::Received(kind),
            sender: envelope.map_or_else(|| d.mittente.clone(), |c| c.mittente.clone()),
            recipients: recipients
                .iter()
                .map(|x| (x.address.clone(), x.tipo))
                .collect(),
            subject: envelope.map_or_else(
                || d.oggetto.clone().unwrap_or_default(),
                |c| c.oggetto.clone(),
            ),
            related_ids: m.message_id.iter().cloned().collect(),
            provider: m
                .verified
                .provider
                .as_ref()
                .map_or_else(|| d.gestore_emittente.clone(), |p| p.name.clone()),
            queue_id: tx.queue_id.clone(),
            outcome: found.outcome().into(),
            reason: (!reason.is_empty()).then(|| reason.join("; ")),
        }
    }

    /// Avviso di mancata consegna per virus (spec §3.9) to our user about `recipient`, built
    /// from `cert`, our own record of the envelope, and the tracking row marked failed, in
    /// one transaction. Returns the notice's Message-ID; `None` when the recipient has its
    /// outcome already (nothing sent, nothing recorded).
    async fn virus_for_our_user(
        &self,
        tx: &Transaction,
        cert: &Certification,
        recipient: &str,
        virus: &str,
        now: Instant,
    ) -> Result<Option<String>, AfterQueueError> {
        let (c, r, v) = (cert.clone(), recipient.to_string(), virus.to_string());
        let notice = self
            .build(move |b| b.non_delivery_virus(&c, now, &r, &v))
            .await?;
        let provider = self.issuer.provider_name.clone();
        let event = self.event(
            cert,
            &cert.identificativo,
            EventKind::Issued(MessageKind::NonDeliveryVirus),
            vec![notice.message_id.clone()],
            tx,
            &provider,
            "virus",
            Some(virus),
            now,
        );
        // The tracking row failed, the event and the notice: one transaction, once per
        // (envelope, recipient) whichever way the virus became known.
        let effect = Effect::Tracking {
            updates: vec![(recipient.to_string(), TrackingState::Failed)],
            event,
        };
        let key = virus_non_delivery_key(&cert.identificativo, recipient);
        let Some(notice_id) = self
            .emit(key, notice, effect, now)
            .await?
            .message_id()
            .map(str::to_string)
        else {
            info!(
                queue_id = tx.queue_id.as_deref().unwrap_or("-"),
                msgid = %cert.identificativo,
                "reception: virus reported for {recipient}, who has an outcome already: no notice"
            );
            return Ok(None);
        };
        warn!(
            queue_id = tx.queue_id.as_deref().unwrap_or("-"),
            msgid = %cert.identificativo,
            notice = %notice_id,
            "reception: virus reported for {recipient}: mancata consegna per virus sent to {}",
            cert.mittente
        );
        Ok(Some(notice_id))
    }

    /// Not valid PEC: anomaly envelope or forward, per policy (refusals were handled
    /// before). No presa in carico, no delivery receipt.
    async fn not_pec(
        &self,
        tx: &Transaction,
        reason: String,
        policies: Vec<(String, MailboxPolicy)>,
        now: Instant,
    ) -> Result<Local, AfterQueueError> {
        let queue_id = tx.queue_id.as_deref().unwrap_or("-");
        let wrapped: Vec<String> = policies
            .iter()
            .filter(|(_, p)| *p == MailboxPolicy::Anomaly)
            .map(|(r, _)| r.clone())
            .collect();
        let mut anomaly = None;
        if !wrapped.is_empty() {
            let (data, from, rcpts, why) = (
                tx.data.clone(),
                tx.mail_from.clone(),
                wrapped.clone(),
                reason.clone(),
            );
            let env = self
                .build(move |b| b.anomaly_envelope(&data, &from, &rcpts, now, &why))
                .await?;
            let event = LogEvent {
                pec_id: env.message_id.clone(),
                at: now,
                kind: EventKind::Issued(MessageKind::AnomalyEnvelope),
                sender: tx.mail_from.clone(),
                recipients: wrapped
                    .iter()
                    .map(|r| (r.clone(), crate::message::kind::RecipientType::Certificato))
                    .collect(),
                subject: String::new(),
                related_ids: vec![env.message_id.clone()],
                provider: self.issuer.provider_name.clone(),
                queue_id: tx.queue_id.clone(),
                outcome: "anomaly".into(),
                reason: Some(reason.clone()),
            };
            // Keyed by the queue file, the bytes and the recipients: a Postfix retry of
            // the same queue file finds the staged envelope and builds none.
            let key = anomaly_key(tx.queue_id.as_deref(), &tx.data, &wrapped);
            let built_id = env.message_id.clone();
            let emitted = self.emit(key, env, Effect::Log(vec![event]), now).await?;
            let id = emitted.message_id().map_or(built_id, str::to_string);
            info!(queue_id, anomaly = %id, "reception: not valid PEC ({reason}): anomaly envelope for {wrapped:?}");
            anomaly = Some(id);
        }
        let mut forwarded = Vec::new();
        for (r, p) in &policies {
            if let MailboxPolicy::Forward(to) = p {
                if !forwarded.contains(to) {
                    self.pass_on(tx, std::slice::from_ref(to)).await?;
                    let why = format!("{reason}; inoltrato a {to} per la casella {r}");
                    self.log_not_pec(
                        tx,
                        std::slice::from_ref(r),
                        EventKind::Forwarded,
                        "forwarded",
                        &why,
                        now,
                    )
                    .await?;
                    info!(
                        queue_id,
                        "reception: not valid PEC ({reason}): {r} forwards to {to}"
                    );
                    forwarded.push(to.clone());
                }
            }
        }
        Ok(Local::NotPec {
            reason,
            anomaly,
            forwarded,
        })
    }

    /// Injects the message unchanged, with its reverse path, for `rcpt_to` (nothing when
    /// empty).
    async fn pass_on(&self, tx: &Transaction, rcpt_to: &[String]) -> Result<(), AfterQueueError> {
        if rcpt_to.is_empty() {
            return Ok(());
        }
        self.injector
            .inject(&tx.mail_from, rcpt_to, &tx.data)
            .await
            .map_err(AfterQueueError::Inject)
    }

    /// Stages `g` under `key` with `effect`, injects it and marks it (see [`crate::outbox`]);
    /// `g` moves into its outbox row (an anomaly envelope carries the whole message).
    async fn emit(
        &self,
        key: String,
        g: Generated,
        effect: Effect,
        at: Instant,
    ) -> Result<Emitted, AfterQueueError> {
        Ok(crate::outbox::emit(
            &self.store,
            &*self.injector,
            &*self.clock,
            outbound(key, g, at),
            effect,
        )
        .await?)
    }

    /// Builds and signs one message off the async workers (signing may block on PKCS#11).
    async fn build<F>(&self, f: F) -> Result<Generated, AfterQueueError>
    where
        F: FnOnce(&Builder<'_>) -> Result<Generated, BuildError> + Send + 'static,
    {
        let issuer = self.issuer.clone();
        let signer = self.signer.clone();
        let ids = self.ids.clone();
        let built = blocking(move || {
            let builder = Builder {
                issuer: &issuer,
                signer: &*signer,
                ids: &*ids,
            };
            f(&builder)
        })
        .await??;
        Ok(built)
    }

    /// Builds and signs the acceptance receipt.
    async fn build_acceptance(&self, accepted: Accepted) -> Result<Generated, AfterQueueError> {
        self.build(move |b| b.acceptance(&accepted.cert, accepted.at))
            .await
    }

    /// A legal-log record about envelope `pec_id`.
    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        cert: &Certification,
        pec_id: &str,
        kind: EventKind,
        related_ids: Vec<String>,
        tx: &Transaction,
        provider: &str,
        outcome: &str,
        reason: Option<&str>,
        at: Instant,
    ) -> LogEvent {
        LogEvent {
            pec_id: pec_id.to_string(),
            at,
            kind,
            sender: cert.mittente.clone(),
            recipients: cert
                .destinatari
                .iter()
                .map(|d| (d.address.clone(), d.tipo))
                .collect(),
            subject: cert.oggetto.clone(),
            related_ids,
            provider: provider.to_string(),
            queue_id: tx.queue_id.clone(),
            outcome: outcome.to_string(),
            reason: reason.map(str::to_string),
        }
    }
}

/// The classification of one transaction for its local recipients, decided before any
/// injection.
enum Plan {
    Envelope(Box<PecMessage>, ProviderInfo),
    Receipt(Ricevuta, Box<PecMessage>, Correlation),
    NotPec(String, Vec<(String, MailboxPolicy)>),
}

/// What a receipt from another provider is about, judged against our own records
/// ([`AfterQueue::correlate`]).
#[derive(Debug, Clone, Default)]
struct Correlation {
    /// Our certification data of the envelope named by the daticert `identificativo`, when
    /// it is one of ours.
    envelope: Option<Certification>,
    /// The recipients the receipt speaks of (daticert `ricezione` or `consegna`).
    about: Vec<String>,
    /// The receipt is about our envelope (identificativo and `X-Riferimento-Message-ID`),
    /// its type is one another provider may send us about it, and every recipient it speaks
    /// of is a certified recipient of that envelope in a domain the signer manages.
    correlated: bool,
    /// Correlated, but no recipient it speaks of is still waiting for what it reports.
    late: bool,
    /// Why it does not correlate, for the log.
    why_not: Option<String>,
}

impl Correlation {
    /// The legal-log outcome of the received receipt.
    fn outcome(&self) -> &'static str {
        match (self.correlated, self.late) {
            (false, _) => "uncorrelated",
            (true, true) => "late",
            (true, false) => "correlated",
        }
    }
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
                Some(Local::NotPec { anomaly, .. }) => message(
                    Filter,
                    "not_pec",
                    if anomaly.is_some() {
                        "anomaly"
                    } else {
                        "forwarded"
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
                    AfterQueueError::Store(_) => "store",
                    AfterQueueError::Build(_) => "signer",
                    AfterQueueError::Antivirus(_) => "antivirus",
                    AfterQueueError::Inject(_) | AfterQueueError::Emit(EmitError::Inject(_)) => {
                        "reinjection"
                    }
                    _ => "internal",
                },
            );
        }
    }
}

/// Runs blocking work (store, signing) off the async workers.
async fn blocking<T, F>(f: F) -> Result<T, AfterQueueError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AfterQueueError::Task(e.to_string()))
}

/// The id in the [`REQUEST_HEADER`] field of the top-level header, without angle
/// brackets.
pub fn request_id(data: &[u8]) -> Option<String> {
    let raw = normalize_crlf(data);
    let (header, _) = split_header_body(&raw);
    let fields = fields(header).ok()?;
    let id = fields.iter().find(|f| f.is(REQUEST_HEADER))?.unfolded();
    let id = unbracketed(id.trim());
    (!id.is_empty()).then(|| id.to_string())
}

/// What Postfix is told on a temporary failure (details stay in our log).
fn tempfail_text(e: &AfterQueueError) -> String {
    match e {
        AfterQueueError::Store(_) => "Store unavailable, try again later".into(),
        AfterQueueError::Build(_) => "Cannot sign a receipt, try again later".into(),
        AfterQueueError::Antivirus(_) => "Antivirus unavailable, try again later".into(),
        AfterQueueError::Refused(_) | AfterQueueError::Infected(_) => {
            "Refused, try again later".into()
        }
        AfterQueueError::Inject(_) => "Reinjection failed, try again later".into(),
        AfterQueueError::Task(_) => "Internal error, try again later".into(),
        AfterQueueError::Emit(EmitError::Inject(_)) => "Reinjection failed, try again later".into(),
        AfterQueueError::Emit(EmitError::Store(_)) => "Store unavailable, try again later".into(),
        AfterQueueError::Emit(EmitError::Task(_)) => "Internal error, try again later".into(),
    }
}

// SPDX-License-Identifier: GPL-3.0-or-later
//! The 12 h / 24 h timers of the sending provider (spec §5.4, notices §3.10).
//!
//! For each certified recipient of an envelope we dispatched (a tracking row whose pending
//! acceptance was emitted, i.e. Postfix really queued the envelope):
//!
//! * no presa in carico and no avvenuta consegna 12 h after dispatch → the signed 12 h
//!   "preavviso" notice to the sender;
//! * no avvenuta consegna (nor mancata consegna) [`NOTICE24_AFTER`] after dispatch → the
//!   24 h notice, and tracking stops (state `Failed`). The rules want it "not before 22 h
//!   and by 24 h": we send it from 23 h 50 min, which leaves the periodic pass (every minute
//!   by default) time to run before 24 h.
//!
//! The receipt handlers move the rows on ([`Store::update_tracking`]); external recipients
//! are never tracked.
//!
//! Each notice is sent once, across restarts and with several processes on one store: a
//! pass claims the due rows in one store transaction ([`Store::claim_timeouts`]), then
//! builds and signs each notice and emits it through the outbox ([`crate::issuing::Issuing::emit`],
//! key [`timer_key`]): one transaction records the notice on its row, writes its
//! legal-log event and stages its bytes ([`Effect::Timeout`]); then it is injected. A
//! build failure, or a store failure before staging, releases the claim, so the next pass
//! retries. Once staged the notice is never built again: an injection that fails, or a
//! crash before the injection is marked, leaves the staged row to the outbox sweep, which
//! injects the same bytes (same Message-ID).
//!
//! The 24 h notices are handled before the 12 h ones in a pass: a row found due for both
//! (the service was down for more than 12 h) gets only the 24 h notice, since a preavviso
//! announcing a further notice would then be wrong.
//!
//! # REM waits
//!
//! With `[rem] enabled` ([`Timers::with_rem`]), a pass also runs the waits of EN 319 532-4
//! Annex D (issue 20), kept in the store ([`Store::claim_rem_waits`]: begun in the
//! transaction of the event that starts them, claimed and closed as the notices above, so
//! exactly once across restarts and processes). REM recipients have no tracking row: no
//! 12 h / 24 h PEC notice, and no 12 h notice of any kind.
//!
//! * relay wait (`[rem] relay_wait`, from our dispatch's SubmissionAcceptance, for each
//!   recipient of a peer): closed when our records hold the peer's relay evidence about
//!   the recipient; otherwise the RelayFailure RB22 evidence, about our
//!   SubmissionAcceptance, in a REM receipt to our sender;
//! * consignment wait (`[rem] consignment_wait`, from our RelayAcceptance of a peer's
//!   dispatch, or our own dispatch's acceptance for our own recipients): closed by the
//!   recipient's consignment outcome at the delivery point; otherwise the
//!   ContentConsignmentFailure RD03, through the same one-outcome claim
//!   ([`crate::delivery::rem::emit_outcome`]).
//!
//! Each evidence is signed and stamped before staging; a TSA failure releases the claim,
//! and the next pass retries.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::config::RemSettings;
use crate::crypto::Signer;
use crate::issuing::{Emitted, IssueError, Issuing};
use crate::message::build::{Generated, Issuer};
use crate::message::codes::Code;
use crate::message::ids::MsgIdSource;
use crate::message::kind::RecipientType;
use crate::message::kind::Timeout;
use crate::message::time::{Clock, Instant};
use crate::rem::codes::{Event, Reason};
use crate::rem::compose::Submission;
use crate::rem::evidence::Evidence;
use crate::rem::issue::{self, RelayInput, RemIssueError};
use crate::rem::outcome;
use crate::smtp::Injector;
use crate::store::outbox::{rem_wait_key, timer_key};
use crate::store::{
    DueNotice, Effect, EvidenceDirection, Outbound, RemDue, RemWaitClaim, RemWaitKind, Store,
    StoredEvidence, TimeoutClaim,
};

/// Seconds after dispatch when the 12 h notice is due.
pub const NOTICE12_AFTER: i64 = 12 * 3600;
/// Seconds after dispatch when the 24 h notice is due: 23 h 50 min (not before 22 h, by
/// 24 h).
pub const NOTICE24_AFTER: i64 = 24 * 3600 - 10 * 60;
/// A claim not confirmed within this many seconds is taken over by the next pass.
pub const CLAIM_LEASE: i64 = 15 * 60;
/// Rows claimed per store transaction.
pub const BATCH: usize = 100;

/// Why a pass or a notice failed (the issuing kit's error).
pub type TimersError = IssueError;

/// One notice of a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub which: Timeout,
    pub pec_id: String,
    pub recipient: String,
    /// Message-ID of the notice.
    pub notice_id: String,
}

/// A notice that could not be sent in this pass (retried by the next one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub which: Timeout,
    pub pec_id: String,
    pub recipient: String,
    pub reason: String,
}

/// One REM wait a pass closed (see [`rem`](self#rem-waits)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemClosed {
    pub which: RemWaitKind,
    pub message_id: String,
    pub recipient: String,
    /// The REM receipt sent (RelayFailure RB22, ContentConsignmentFailure RD03); `None`
    /// when our records showed the outcome already (nothing sent).
    pub notice_id: Option<String>,
}

/// A REM wait whose receipt could not be sent in this pass (retried by the next one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemFailed {
    pub which: RemWaitKind,
    pub message_id: String,
    pub recipient: String,
    pub reason: String,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub sent: Vec<Sent>,
    pub failed: Vec<Failed>,
    /// REM waits closed (with or without a receipt).
    pub rem: Vec<RemClosed>,
    pub rem_failed: Vec<RemFailed>,
}

impl Report {
    /// Notices of kind `which` sent.
    pub fn count(&self, which: Timeout) -> usize {
        self.sent.iter().filter(|s| s.which == which).count()
    }

    /// REM receipts sent for waits of kind `which`.
    pub fn rem_count(&self, which: RemWaitKind) -> usize {
        self.rem
            .iter()
            .filter(|s| s.which == which && s.notice_id.is_some())
            .count()
    }
}

/// The timers: see the module documentation.
pub struct Timers {
    kit: Issuing,
    /// `[rem] enabled`: the REM waits.
    rem: Option<RemSettings>,
}

impl Timers {
    /// `injector` reaches Postfix's reinjection listener; `issuer`, `signer` and `ids`
    /// build the notices; `clock` dates the periodic passes of [`Timers::run`].
    pub fn new(
        store: Arc<dyn Store>,
        injector: Arc<dyn Injector>,
        issuer: Issuer,
        signer: Arc<dyn Signer>,
        ids: Arc<dyn MsgIdSource>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Timers {
            kit: Issuing {
                clock,
                ..Issuing::new(store, injector, issuer, signer, ids)
            },
            rem: None,
        }
    }

    /// Runs the REM waits too (`[rem] enabled`), with its waits and evidence TSA.
    pub fn with_rem(mut self, rem: Option<RemSettings>) -> Self {
        self.rem = rem;
        self
    }

    /// One pass at instant `now`: sends every due notice. Fails only when the store cannot
    /// be read; a notice that cannot be built or injected is reported in
    /// [`Report::failed`] and its claim released.
    pub async fn run_once(&self, now: Instant) -> Result<Report, TimersError> {
        let mut report = Report::default();
        for (which, after) in [
            (Timeout::Hours24, NOTICE24_AFTER),
            (Timeout::Hours12, NOTICE12_AFTER),
        ] {
            let claim = TimeoutClaim {
                which,
                sent_up_to: Instant::from_unix(now.unix() - after),
                now,
                stale_before: Instant::from_unix(now.unix() - CLAIM_LEASE),
                limit: BATCH,
            };
            loop {
                let due = self.kit.store(move |s| s.claim_timeouts(&claim)).await?;
                let full = due.len() == BATCH;
                let mut all_sent = true;
                for d in due {
                    let sent = self.send(&d, now).await;
                    let label = if which == Timeout::Hours12 {
                        "12h"
                    } else {
                        "24h"
                    };
                    crate::metrics::timer_notice(label, sent.is_ok());
                    match sent {
                        Ok(None) => {}
                        Ok(Some(notice_id)) => report.sent.push(Sent {
                            which,
                            pec_id: d.pec_id,
                            recipient: d.recipient,
                            notice_id,
                        }),
                        Err(e) => {
                            all_sent = false;
                            report.failed.push(Failed {
                                which,
                                pec_id: d.pec_id,
                                recipient: d.recipient,
                                reason: e.to_string(),
                            });
                        }
                    }
                }
                // A failed notice is released and would be claimed again at once.
                if !full || !all_sent {
                    break;
                }
            }
        }
        if let Some(rem) = &self.rem {
            self.rem_waits(rem, now, &mut report).await?;
        }
        Ok(report)
    }

    /// The REM waits due at `now` (see the module documentation): the relay waits, then
    /// the consignment waits.
    async fn rem_waits(
        &self,
        rem: &RemSettings,
        now: Instant,
        report: &mut Report,
    ) -> Result<(), TimersError> {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        for (which, wait) in [
            (RemWaitKind::Relay, rem.relay_wait),
            (RemWaitKind::Consignment, rem.consignment_wait),
        ] {
            let claim = RemWaitClaim {
                which,
                started_up_to: Instant::from_unix(now.unix().saturating_sub(secs(wait))),
                now,
                stale_before: Instant::from_unix(now.unix() - CLAIM_LEASE),
                limit: BATCH,
            };
            loop {
                let due = self.kit.store(move |s| s.claim_rem_waits(&claim)).await?;
                let full = due.len() == BATCH;
                let mut all_done = true;
                for d in due {
                    let done = self.rem_wait(rem, &d, now).await;
                    crate::metrics::timer_notice(
                        match which {
                            RemWaitKind::Relay => "rem_relay",
                            RemWaitKind::Consignment => "rem_consignment",
                        },
                        done.is_ok(),
                    );
                    match done {
                        Ok(notice_id) => report.rem.push(RemClosed {
                            which,
                            message_id: d.wait.message_id,
                            recipient: d.wait.recipient,
                            notice_id,
                        }),
                        Err(e) => {
                            all_done = false;
                            report.rem_failed.push(RemFailed {
                                which,
                                message_id: d.wait.message_id,
                                recipient: d.wait.recipient,
                                reason: e,
                            });
                        }
                    }
                }
                if !full || !all_done {
                    break;
                }
            }
        }
        Ok(())
    }

    /// One claimed REM wait: closed without a receipt when our records hold its outcome,
    /// else its receipt issued and emitted once; on a failure before staging, the claim is
    /// released (retried next pass).
    async fn rem_wait(
        &self,
        rem: &RemSettings,
        due: &RemDue,
        now: Instant,
    ) -> Result<Option<String>, String> {
        let w = &due.wait;
        let result = match w.which {
            RemWaitKind::Relay => self.relay_failure(rem, due, now).await,
            RemWaitKind::Consignment => self.consignment_failure(rem, due, now).await,
        };
        match result {
            Ok(Some(Emitted::New(id) | Emitted::Existing(id))) => {
                info!(msgid = %w.message_id, recipient = %w.recipient, notice = %id, wait = w.which.as_str(), "timers: rem wait ran out: receipt sent");
                Ok(Some(id))
            }
            Ok(Some(Emitted::Claimed)) | Ok(None) => {
                // Outcome known: closed, nothing sent (idempotent).
                let (d, at) = (due.clone(), now);
                if let Err(e) = self.kit.store(move |s| s.settle_rem_wait(&d, at)).await {
                    warn!(msgid = %w.message_id, recipient = %w.recipient, "timers: rem wait not closed (claimed again after the lease): {e}");
                }
                info!(msgid = %w.message_id, recipient = %w.recipient, wait = w.which.as_str(), "timers: rem wait closed by our records, nothing sent");
                Ok(None)
            }
            Err(RemIssueError::Task(e @ IssueError::Staged(_))) => {
                warn!(msgid = %w.message_id, recipient = %w.recipient, "timers: rem receipt staged, not injected (the outbox sweep sends it): {e}");
                Err(e.to_string())
            }
            Err(e) => {
                error!(msgid = %w.message_id, recipient = %w.recipient, wait = w.which.as_str(), "timers: rem receipt not staged, retried next pass: {e}");
                let d = due.clone();
                if let Err(e) = self.kit.store(move |s| s.release_rem_wait(&d)).await {
                    error!(msgid = %w.message_id, recipient = %w.recipient, "timers: cannot release the rem wait (taken over after the lease): {e}");
                }
                Err(e.to_string())
            }
        }
    }

    /// Relay wait ran out: `None` when the peer's relay evidence about the recipient is in
    /// our records (RelayAcceptance, RelayRejection answered already, a consignment), else
    /// the RelayFailure RB22 to our sender, about our SubmissionAcceptance.
    async fn relay_failure(
        &self,
        rem: &RemSettings,
        due: &RemDue,
        now: Instant,
    ) -> Result<Option<Emitted>, RemIssueError> {
        let w = due.wait.clone();
        let id = w.message_id.clone();
        let stored = self.kit.store(move |s| s.evidences_for(&id)).await?;
        if relay_decided(&stored, &w.recipient) {
            return Ok(None);
        }
        let ours = stored
            .iter()
            .filter(|s| {
                s.evidence.direction == EvidenceDirection::Issued
                    && s.evidence.event == Event::SubmissionAcceptance.uri()
            })
            .find_map(|s| Evidence::parse(&s.evidence.xml).ok());
        let Some(ours) = ours.as_ref() else {
            error!(msgid = %w.message_id, recipient = %w.recipient, "timers: relay wait without our submission acceptance: closed, nothing certified");
            return Ok(None);
        };
        let all: Vec<String> = ours
            .recipients
            .iter()
            .map(|u| {
                u.identifier
                    .as_ref()
                    .map(|i| i.value.clone())
                    .unwrap_or_default()
            })
            .collect();
        let Some(position) = all
            .iter()
            .position(|r| r.eq_ignore_ascii_case(&w.recipient))
            .and_then(|i| u32::try_from(i + 1).ok())
        else {
            error!(msgid = %w.message_id, recipient = %w.recipient, "timers: relay wait for a recipient our submission acceptance does not name: closed");
            return Ok(None);
        };
        let reason = Reason::by_code("RB22")
            .ok_or_else(|| IssueError::Task("reason RB22 unknown".into()))?;
        let issued = issue::issue_relay(
            &self.kit,
            rem.evidence_tsa.as_ref(),
            RelayInput {
                about: ours.clone(),
                event: Event::RelayFailure,
                reason,
                refers_to: vec![position],
                event_time: now,
                policies: rem.policies.clone(),
                provider: rem.provider_name.clone(),
            },
        )
        .await?;
        let sub = Submission::from_evidence(ours, rem.policies.clone());
        // The recipient's provider said nothing: named by the recipient's domain.
        let peer = w
            .recipient
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default();
        let regarding = crate::rem::issue::Regarding {
            other_provider: Some(peer),
            ..Default::default()
        };
        let composed = crate::rem::issue::compose_receipt(
            &self.kit,
            &rem.provider_name,
            &sub,
            &issued,
            "RB22",
            regarding,
            now,
        )
        .await
        .map_err(|e| IssueError::Task(format!("composing the rem receipt: {e}")))?;
        let recipients = sub
            .recipients
            .iter()
            .map(|r| (r.clone(), RecipientType::Esterno))
            .collect();
        let stored = issued.stored(&sub.sender, recipients, None);
        let effect = Effect::WithEvidences {
            effect: Box::new(Effect::RemWaitNotice {
                due: Box::new(due.clone()),
                notice_id: composed.message_id.clone(),
                at: now,
            }),
            evidences: vec![stored],
        };
        let out = Outbound {
            key: rem_wait_key(&w.message_id, &w.recipient, w.which),
            data: composed.to_bytes(),
            message_id: composed.message_id,
            mail_from: composed.mail_from,
            rcpt_to: composed.rcpt_to,
            created_at: now,
            injected_at: None,
        };
        Ok(Some(self.kit.emit_outbound(out, effect).await?))
    }

    /// Consignment wait ran out: the ContentConsignmentFailure RD03 to the sender, through
    /// the delivery point's one outcome per recipient (a consignment decided meanwhile
    /// wins: nothing sent).
    async fn consignment_failure(
        &self,
        rem: &RemSettings,
        due: &RemDue,
        now: Instant,
    ) -> Result<Option<Emitted>, RemIssueError> {
        let w = due.wait.clone();
        let (id, r) = (w.message_id.clone(), w.recipient.clone());
        let (decided, stored) = self
            .kit
            .store(move |s| Ok((s.delivery_notice(&id, &r)?, s.evidences_for(&id)?)))
            .await?;
        if decided.is_some() || outcome::of(&stored, &w.recipient).consignment.is_some() {
            return Ok(None);
        }
        let Some(about) = crate::delivery::rem::about(&stored, &w.recipient) else {
            error!(msgid = %w.message_id, recipient = %w.recipient, "timers: consignment wait our records do not explain: closed, nothing certified");
            return Ok(None);
        };
        let emitted = crate::delivery::rem::emit_outcome(
            &self.kit,
            rem,
            crate::delivery::rem::Outcome {
                about: &about,
                event: Event::ContentConsignmentFailure,
                code: "RD03",
                at: now,
                queue_id: None,
            },
        )
        .await?;
        Ok(Some(emitted))
    }

    /// Builds one claimed notice and emits it through the outbox; on a failure before it
    /// was staged, releases the claim. `None` when the notice was recorded already without
    /// an outbox row (nothing sent).
    async fn send(&self, due: &DueNotice, now: Instant) -> Result<Option<String>, TimersError> {
        let hours = hours(due.which);
        let notice = match self.build(due.clone(), now).await {
            Ok(n) => n,
            Err(e) => {
                error!(msgid = %due.pec_id, recipient = %due.recipient, "timers: {hours} h notice: {e}");
                self.release(due).await;
                return Err(e);
            }
        };
        let notice_id = notice.message_id.clone();
        let key = timer_key(&due.pec_id, &due.recipient, due.which);
        let effect = Effect::Timeout {
            due: Box::new(due.clone()),
            notice_id: notice_id.clone(),
            at: now,
        };
        match self.kit.emit(key, notice, effect, now).await {
            Ok(Emitted::New(id)) => {
                info!(msgid = %due.pec_id, recipient = %due.recipient, notice = %id, "timers: {hours} h notice sent");
                Ok(Some(id))
            }
            Ok(Emitted::Existing(id)) => {
                info!(msgid = %due.pec_id, recipient = %due.recipient, notice = %id, "timers: {hours} h notice staged already: none built");
                Ok(Some(id))
            }
            Ok(Emitted::Claimed) => {
                info!(msgid = %due.pec_id, recipient = %due.recipient, "timers: {hours} h notice recorded already: none sent");
                Ok(None)
            }
            Err(e @ IssueError::Staged(_)) => {
                // Staged with its record: the outbox sweep injects it.
                warn!(msgid = %due.pec_id, recipient = %due.recipient, notice = %notice_id, "timers: {hours} h notice staged, not injected (the outbox sweep sends it): {e}");
                Err(e)
            }
            Err(e) => {
                error!(msgid = %due.pec_id, recipient = %due.recipient, "timers: {hours} h notice not staged, retried next pass: {e}");
                self.release(due).await;
                Err(e)
            }
        }
    }

    async fn release(&self, due: &DueNotice) {
        let d = due.clone();
        if let Err(e) = self.kit.store(move |s| s.release_timeout(&d)).await {
            error!(msgid = %due.pec_id, recipient = %due.recipient, "timers: cannot release the claim (taken over after the lease): {e}")
        }
    }

    /// Builds and signs the notice (signing may block on PKCS#11).
    async fn build(&self, due: DueNotice, now: Instant) -> Result<Generated, TimersError> {
        let provider = self.kit.issuer.provider_name.clone();
        self.kit
            .build(move |b| {
                let code = Code::timeout(due.which).errore_esteso(&provider);
                b.timeout(&due.cert, now, &due.recipient, due.which, &code)
            })
            .await
    }

    /// Runs a pass every `interval` (the first at once) until `shutdown` completes.
    pub async fn run(&self, interval: Duration, shutdown: impl Future<Output = ()> + Send) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            let now = self.kit.clock.now();
            match self.run_once(now).await {
                Ok(r) if r.sent.is_empty() && r.failed.is_empty() => {}
                Ok(r) => info!(
                    sent12 = r.count(Timeout::Hours12),
                    sent24 = r.count(Timeout::Hours24),
                    failed = r.failed.len(),
                    "timers: pass done"
                ),
                Err(e) => error!("timers: pass failed: {e}"),
            }
        }
    }
}

/// Whether our records decide the relay of `recipient` among `stored` (the evidences of
/// its dispatch): a relay or consignment evidence naming it ([`outcome::of`]), or ours of
/// its relay outside the ERDS (RelayToNonERDS, RelayToNonERDSFailure: no peer answers).
fn relay_decided(stored: &[StoredEvidence], recipient: &str) -> bool {
    let o = outcome::of(stored, recipient);
    o.relay.is_some()
        || o.consignment.is_some()
        || stored.iter().any(|s| {
            [Event::RelayToNonERDS, Event::RelayToNonERDSFailure]
                .iter()
                .any(|e| e.uri() == s.evidence.event)
                && Evidence::parse(&s.evidence.xml).is_ok_and(|ev| {
                    outcome::named_recipients(&ev)
                        .iter()
                        .any(|n| n.eq_ignore_ascii_case(recipient))
                })
        })
}

fn hours(which: Timeout) -> u32 {
    match which {
        Timeout::Hours12 => 12,
        Timeout::Hours24 => 24,
    }
}

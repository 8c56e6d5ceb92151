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

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::crypto::Signer;
use crate::issuing::{Emitted, IssueError, Issuing};
use crate::message::build::{Generated, Issuer};
use crate::message::codes::Code;
use crate::message::ids::MsgIdSource;
use crate::message::kind::Timeout;
use crate::message::time::{Clock, Instant};
use crate::smtp::Injector;
use crate::store::outbox::timer_key;
use crate::store::{DueNotice, Effect, Store, TimeoutClaim};

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

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub sent: Vec<Sent>,
    pub failed: Vec<Failed>,
}

impl Report {
    /// Notices of kind `which` sent.
    pub fn count(&self, which: Timeout) -> usize {
        self.sent.iter().filter(|s| s.which == which).count()
    }
}

/// The timers: see the module documentation.
pub struct Timers {
    kit: Issuing,
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
        }
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
        Ok(report)
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

fn hours(which: Timeout) -> u32 {
    match which {
        Timeout::Hours12 => 12,
        Timeout::Hours24 => 24,
    }
}

//! After-queue content filter: emits acceptance receipts for our own envelopes after queue
//! (and, later, the reception point of spec §5.2).
//!
//! The access point (milter) rewrites an accepted submission into the signed transport
//! envelope and records a pending acceptance; a milter's accept does not prove that Postfix
//! queued the message (design §1). Postfix's `content_filter` then hands every queued
//! message to [`AfterQueue`] through the SMTP server of [`crate::smtp::server`]: when the
//! message is one of our envelopes with a pending acceptance, the filter emits the signed
//! ricevuta di accettazione (spec §3.2) and passes the envelope on; everything else passes
//! through untouched.

use std::sync::Arc;

use thiserror::Error;
use tracing::{error, info, warn};

use crate::crypto::Signer;
use crate::message::build::{BuildError, Builder, Generated, Issuer};
use crate::message::ids::{unbracketed, MsgIdSource};
use crate::message::mime::{fields, normalize_crlf, split_header_body};
use crate::message::time::{Clock, SystemClock};
use crate::smtp::server::{FilterHandler, FilterReply, Transaction};
use crate::smtp::{InjectError, Injector};
use crate::store::{Accepted, Store, StoreError};
use crate::BoxFuture;

#[derive(Debug, Error)]
pub enum AfterQueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("building the acceptance receipt: {0}")]
    Build(#[from] BuildError),
    #[error("injecting the acceptance receipt: {0}")]
    InjectReceipt(InjectError),
    #[error("injecting the message: {0}")]
    Inject(InjectError),
    #[error("worker task: {0}")]
    Task(String),
}

/// What the filter did with one transaction (for the caller's log and for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Our envelope: the acceptance receipt `receipt_id` was injected, then the envelope.
    AcceptanceEmitted { pec_id: String, receipt_id: String },
    /// Passed on unchanged (not our envelope, or its acceptance was already emitted).
    PassedThrough,
}

/// The after-queue filter handler (first part of the reception point).
///
/// For each transaction:
///
/// 1. reads the top-level `Message-ID` and `X-Trasporto`; a message that is not a transport
///    envelope (`X-Trasporto: posta-certificata`) or has no `Message-ID` is passed through;
/// 2. asks the store for the pending acceptance of that PEC msgid; none (ordinary mail, a
///    foreign envelope, or a Postfix retry after the acceptance went out) → pass through;
/// 3. builds and signs the acceptance receipt with the pending record's certification data
///    and **its** instant (one instant per transaction: the envelope's), and injects it;
/// 4. records in the store that the acceptance was emitted (legal-log event, pending
///    acceptance closed);
/// 5. injects the envelope unchanged, with the MAIL FROM and RCPT TO received;
/// 6. answers Accept: only now does Postfix drop its copy.
///
/// Pass-through is one injection of the unchanged message with the same envelope.
///
/// Failures (fail closed, design §3): store, signing, task or injection 4xx/connection
/// errors answer Tempfail, so Postfix keeps the message and retries. A 5xx from the
/// listener for the acceptance receipt (our own message) is also Tempfail: it is a fault
/// on our side, not a verdict on the sender's mail. A 5xx for the message itself
/// (pass-through, or the envelope in step 5) answers Reject with the listener's reason, and
/// Postfix bounces it to the sender.
///
/// Crashes and retries. The store is marked (step 4) as soon as the receipt is in the
/// MTA's hands, before the envelope is injected, so that a retry of the envelope never
/// emits the receipt again:
///
/// * crash or failure before step 3 completes: nothing was emitted; the retry starts over;
/// * crash or store failure between step 3 and step 4: the receipt is queued but the store
///   still says pending, so the retry emits **a second acceptance**. The design accepts
///   duplicates after a crash (the log shows them), never a missing receipt;
/// * failure after step 4 (envelope injection 4xx, crash): the retry finds no pending
///   acceptance and only passes the envelope on;
/// * crash after step 5 but before Postfix read our 250: the retry passes the envelope on a
///   second time (a duplicate delivery, again preferred over a lost message).
pub struct AfterQueue {
    store: Arc<dyn Store>,
    injector: Arc<dyn Injector>,
    issuer: Issuer,
    signer: Arc<dyn Signer>,
    ids: Arc<dyn MsgIdSource>,
    clock: Arc<dyn Clock>,
}

impl AfterQueue {
    /// `injector` reaches Postfix's reinjection listener (no filter, no milter); `issuer`,
    /// `signer` and `ids` build the acceptance receipts. Uses the system clock for the time
    /// of the legal-log event.
    pub fn new(
        store: Arc<dyn Store>,
        injector: Arc<dyn Injector>,
        issuer: Issuer,
        signer: Arc<dyn Signer>,
        ids: Arc<dyn MsgIdSource>,
    ) -> Self {
        AfterQueue {
            store,
            injector,
            issuer,
            signer,
            ids,
            clock: Arc::new(SystemClock),
        }
    }

    /// Replaces the clock that dates the "acceptance emitted" event.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Processes one transaction and says what to answer Postfix.
    pub async fn filter(&self, tx: &Transaction) -> FilterReply {
        let queue_id = tx.queue_id.as_deref().unwrap_or("-");
        let msgid = envelope_id(&tx.data);
        let shown = msgid.as_deref().unwrap_or("-");
        match self.process(tx, msgid.as_deref()).await {
            Ok(Outcome::AcceptanceEmitted { pec_id, receipt_id }) => {
                info!(
                    queue_id,
                    msgid = %pec_id,
                    receipt = %receipt_id,
                    "after queue: acceptance receipt emitted, envelope passed on"
                );
                FilterReply::Accept
            }
            Ok(Outcome::PassedThrough) => {
                info!(queue_id, msgid = shown, "after queue: passed through");
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
        let pending = match msgid {
            Some(id) => {
                let store = self.store.clone();
                let id = id.to_string();
                blocking(move || store.pending_acceptance(&id)).await??
            }
            None => None,
        };
        let Some(accepted) = pending else {
            self.pass_on(tx).await?;
            return Ok(Outcome::PassedThrough);
        };

        let pec_id = accepted.pec_id.clone();
        let receipt = self.build_acceptance(accepted).await?;
        let queue_id = tx.queue_id.as_deref().unwrap_or("-");
        self.injector
            .inject(&receipt.mail_from, &receipt.rcpt_to, &receipt.to_bytes())
            .await
            .map_err(AfterQueueError::InjectReceipt)?;
        info!(
            queue_id,
            msgid = %pec_id,
            receipt = %receipt.message_id,
            "after queue: acceptance receipt injected"
        );

        let store = self.store.clone();
        let at = self.clock.now();
        let (id, rid) = (pec_id.clone(), receipt.message_id.clone());
        let closed = blocking(move || store.acceptance_emitted(&id, &rid, at)).await??;
        if !closed {
            // Another delivery of the same envelope emitted it concurrently.
            warn!(
                queue_id,
                msgid = %pec_id,
                receipt = %receipt.message_id,
                "after queue: acceptance already emitted by a concurrent delivery: duplicate receipt"
            );
        }

        self.pass_on(tx).await?;
        Ok(Outcome::AcceptanceEmitted {
            pec_id,
            receipt_id: receipt.message_id,
        })
    }

    /// Injects the message unchanged, with the envelope it came with.
    async fn pass_on(&self, tx: &Transaction) -> Result<(), AfterQueueError> {
        self.injector
            .inject(&tx.mail_from, &tx.rcpt_to, &tx.data)
            .await
            .map_err(AfterQueueError::Inject)
    }

    /// Builds and signs the acceptance receipt (signing may block on PKCS#11).
    async fn build_acceptance(&self, accepted: Accepted) -> Result<Generated, AfterQueueError> {
        let issuer = self.issuer.clone();
        let signer = self.signer.clone();
        let ids = self.ids.clone();
        let built = blocking(move || {
            let builder = Builder {
                issuer: &issuer,
                signer: &*signer,
                ids: &*ids,
            };
            builder.acceptance(&accepted.cert, accepted.at)
        })
        .await??;
        Ok(built)
    }
}

impl FilterHandler for AfterQueue {
    fn handle<'a>(&'a self, tx: &'a Transaction) -> BoxFuture<'a, FilterReply> {
        Box::pin(self.filter(tx))
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

/// The PEC msgid of `data` if it looks like a transport envelope: the top-level
/// `Message-ID` (without angle brackets) when the top-level header also carries
/// `X-Trasporto: posta-certificata`.
pub fn envelope_id(data: &[u8]) -> Option<String> {
    let raw = normalize_crlf(data);
    let (header, _) = split_header_body(&raw);
    let fields = fields(header).ok()?;
    let is_envelope = fields
        .iter()
        .any(|f| f.is("X-Trasporto") && f.unfolded().eq_ignore_ascii_case("posta-certificata"));
    if !is_envelope {
        return None;
    }
    let id = fields.iter().find(|f| f.is("Message-ID"))?.unfolded();
    let id = unbracketed(&id);
    (!id.is_empty()).then(|| id.to_string())
}

/// What Postfix is told on a temporary failure (details stay in our log).
fn tempfail_text(e: &AfterQueueError) -> String {
    match e {
        AfterQueueError::Store(_) => "Store unavailable, try again later".into(),
        AfterQueueError::Build(_) => "Cannot sign the acceptance receipt, try again later".into(),
        AfterQueueError::InjectReceipt(_) | AfterQueueError::Inject(_) => {
            "Reinjection failed, try again later".into()
        }
        AfterQueueError::Task(_) => "Internal error, try again later".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_id_needs_the_transport_header() {
        let env = b"Message-ID: <opec1.x@pec.example.it>\r\nX-Trasporto: posta-certificata\r\n\r\nbody\r\n";
        assert_eq!(envelope_id(env).as_deref(), Some("opec1.x@pec.example.it"));
        let lf = b"X-Trasporto:  Posta-Certificata\nMessage-ID:\n <a@b>\n\nbody\n";
        assert_eq!(envelope_id(lf).as_deref(), Some("a@b"));
        let plain = b"Message-ID: <a@b>\r\nSubject: hi\r\n\r\nX-Trasporto: posta-certificata\r\n";
        assert_eq!(envelope_id(plain), None);
        let receipt = b"Message-ID: <a@b>\r\nX-Ricevuta: accettazione\r\n\r\n";
        assert_eq!(envelope_id(receipt), None);
        assert_eq!(envelope_id(b"garbage"), None);
    }
}

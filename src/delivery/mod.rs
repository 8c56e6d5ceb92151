//! Punto di consegna (delivery point, spec §3.6, §3.7, §5.3): an LMTP proxy between
//! Postfix (`virtual_transport = lmtp:…`) and Dovecot's LMTP.
//!
//! The protocol lives in [`lmtp`]; this module holds the PEC rules, in one per-message
//! session ([`DeliveryPoint::deliver`]):
//!
//! 1. the message goes to Dovecot unchanged, byte for byte, for every recipient
//!    (messages of every kind are stored unmodified, spec §5.3);
//! 2. for each recipient, a notice is due only when the message is a transport envelope
//!    (its top-level `Message-ID` = PEC msgid) **and the store says** that the reception
//!    point verified that envelope for that recipient ([`Store::is_verified`]; never a
//!    header). The message is then classified again (cheap) to get its daticert and the
//!    carried original; the classification must be a valid transport envelope with the
//!    same PEC msgid. Anomaly envelopes, receipts and ordinary mail get no notice: Dovecot's
//!    replies go back to Postfix unchanged;
//! 3. Dovecot 2xx → signed ricevuta di avvenuta consegna (completa / breve / sintetica by
//!    `X-TipoRicevuta` and the To/Cc rule, [`Builder::delivery`]) to the sender;
//!    Dovecot 5xx → signed avviso di mancata consegna with the coded reason of
//!    [`codes::non_delivery_reason`], and 250 to Postfix so that no plain DSN goes out in
//!    place of the PEC notice; Dovecot 4xx or unreachable → 4xx to Postfix, no notice;
//! 4. the notice is injected into Postfix's reinjection listener, then
//!    [`Store::claim_delivery_notice`] records it and its legal-log event in one
//!    transaction.
//!
//! 5. optionally ([`DeliveryPoint::with_arrival_notices`]), after a delivery receipt, a
//!    short plain arrival notice to the ordinary address configured for the mailbox
//!    ([`Store::arrival_notice`], [`arrival`]); best effort.
//!
//! Exactly once, and the crash windows. Before building a notice the session asks the
//! store whether one was already recorded for (envelope, recipient)
//! ([`Store::delivery_notice`]); if so it emits nothing and answers 250 (a Postfix retry
//! after a crash between Dovecot's 250 and our reply: Dovecot stores a duplicate copy, no
//! second receipt). The claim is written only after a successful injection, so a failed
//! injection (→ 4xx, Postfix retries) never blocks the retry's notice:
//!
//! * crash or failure before the injection: nothing emitted, nothing recorded; the retry
//!   starts over (for a 250, Dovecot stores a second copy);
//! * crash (or store failure) between the injection and the claim: the notice is queued
//!   but not recorded; we answer 4xx, and the retry emits a **second** notice, logged.
//!   The design prefers a duplicate after a crash to a missing receipt (design §3);
//! * crash after the claim but before Postfix reads our reply: the retry finds the claim
//!   and emits nothing;
//! * two concurrent deliveries of the same envelope (not something Postfix does): the
//!   claim decides which one is logged; the other is reported as a duplicate in the log.
//!
//! Fail closed: a store failure while deciding gives 4xx for every recipient before
//! anything is delivered; signing or injection failures give 4xx for that recipient.

use std::sync::Arc;

use thiserror::Error;
use tracing::{error, info, warn};

use crate::crypto::Signer;
use crate::index::IndexHandle;
use crate::message::build::{BuildError, Builder, Certification, Generated, Issuer};
use crate::message::classify::{classify, Classification};
use crate::message::ids::MsgIdSource;
use crate::message::kind::{MessageKind, RecipientType};
use crate::message::time::{Clock, Instant, SystemClock};
use crate::reception::envelope_id;
use crate::smtp::{InjectError, Injector};
use crate::store::{EventKind, LogEvent, Store, StoreError};
use crate::BoxFuture;

pub mod arrival;
pub mod codes;
pub mod lmtp;

use lmtp::{LmtpHandler, LocalDelivery, Reply, Transaction};

#[derive(Debug, Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("building the notice: {0}")]
    Build(#[from] BuildError),
    #[error("injecting the notice: {0}")]
    Inject(#[from] InjectError),
    #[error("worker task: {0}")]
    Task(String),
}

/// A verified transport envelope being delivered: what every notice about it needs.
struct Certified {
    pec_id: String,
    cert: Certification,
    /// The original carried in the envelope (`postacert.eml`), for completa / breve:
    /// shared by the notices of every recipient, never copied for one.
    original: Arc<Vec<u8>>,
    /// `verified[i]`: the store marks the envelope verified for recipient `i`.
    verified: Vec<bool>,
}

/// The delivery point.
pub struct DeliveryPoint {
    store: Arc<dyn Store>,
    injector: Arc<dyn Injector>,
    dovecot: Arc<dyn LocalDelivery>,
    index: Arc<IndexHandle>,
    issuer: Issuer,
    signer: Arc<dyn Signer>,
    ids: Arc<dyn MsgIdSource>,
    clock: Arc<dyn Clock>,
    arrival_notices: bool,
}

impl DeliveryPoint {
    /// `dovecot` delivers into the mailboxes; `injector` reaches Postfix's reinjection
    /// listener; `index` is the provider index used to re-classify envelopes (each
    /// transaction takes the copy current when it starts, so refreshes apply at once).
    pub fn new(
        store: Arc<dyn Store>,
        injector: Arc<dyn Injector>,
        dovecot: Arc<dyn LocalDelivery>,
        index: Arc<IndexHandle>,
        issuer: Issuer,
        signer: Arc<dyn Signer>,
        ids: Arc<dyn MsgIdSource>,
    ) -> Self {
        DeliveryPoint {
            store,
            injector,
            dovecot,
            index,
            issuer,
            signer,
            ids,
            clock: Arc::new(SystemClock),
            arrival_notices: false,
        }
    }

    /// Sends the optional per-mailbox arrival notices ([`arrival`]) configured in the
    /// store ([`Store::arrival_notice`]).
    pub fn with_arrival_notices(mut self, enabled: bool) -> Self {
        self.arrival_notices = enabled;
        self
    }

    /// Replaces the clock (delivery instant of the notices).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// One transaction: one reply per recipient for Postfix.
    pub async fn deliver(&self, tx: &Transaction) -> Vec<Reply> {
        let pec_id = envelope_id(&tx.data);
        let shown = pec_id.clone().unwrap_or_else(|| "-".into());
        let certified = match self.certified(tx, pec_id).await {
            Ok(c) => c,
            Err(e) => {
                error!(msgid = %shown, "delivery point: tempfail before delivery: {e}");
                return tx
                    .rcpt_to
                    .iter()
                    .map(|_| Reply::new(451, "4.3.0 Store unavailable, try again later"))
                    .collect();
            }
        };
        let replies = self
            .dovecot
            .deliver(&tx.mail_from, &tx.rcpt_to, &tx.data, tx.eight_bit)
            .await;
        let Some(c) = certified else {
            for (r, reply) in tx.rcpt_to.iter().zip(&replies) {
                info!(msgid = %shown, rcpt = %r, reply = %reply.line(), "delivery point: proxied");
            }
            return replies;
        };
        let at = self.clock.now();
        let mut out = Vec::with_capacity(replies.len());
        for (i, (rcpt, reply)) in tx.rcpt_to.iter().zip(replies).enumerate() {
            if !c.verified[i] || reply.class() == 4 {
                info!(msgid = %c.pec_id, rcpt = %rcpt, reply = %reply.line(), "delivery point: proxied, no notice");
                out.push(reply);
                continue;
            }
            let answer = match self.notify(&c, rcpt, &reply, at).await {
                Ok(Some(notice_id)) => {
                    info!(msgid = %c.pec_id, rcpt = %rcpt, dovecot = %reply.line(), notice = %notice_id, "delivery point: notice emitted");
                    if reply.class() == 2 {
                        self.arrival(&c, rcpt, at).await;
                        reply
                    } else {
                        Reply::new(
                            250,
                            format!("2.0.0 <{rcpt}> Non-delivery notice sent ({})", reply.line()),
                        )
                    }
                }
                Ok(None) => {
                    info!(msgid = %c.pec_id, rcpt = %rcpt, dovecot = %reply.line(), "delivery point: notice already emitted, none sent");
                    if reply.class() == 2 {
                        reply
                    } else {
                        Reply::new(250, format!("2.0.0 <{rcpt}> Non-delivery already notified"))
                    }
                }
                Err(e) => {
                    error!(msgid = %c.pec_id, rcpt = %rcpt, dovecot = %reply.line(), "delivery point: tempfail: {e}");
                    Reply::new(451, "4.3.0 Cannot emit the PEC notice, try again later")
                }
            };
            out.push(answer);
        }
        out
    }

    /// Step 2 of the module documentation: `None` when no recipient is due a notice.
    async fn certified(
        &self,
        tx: &Transaction,
        pec_id: Option<String>,
    ) -> Result<Option<Certified>, DeliveryError> {
        let Some(pec_id) = pec_id else {
            return Ok(None);
        };
        let store = self.store.clone();
        let (id, rcpts) = (pec_id.clone(), tx.rcpt_to.clone());
        let verified = blocking(move || {
            rcpts
                .iter()
                .map(|r| store.is_verified(&id, r))
                .collect::<Result<Vec<bool>, StoreError>>()
        })
        .await??;
        if !verified.iter().any(|v| *v) {
            return Ok(None);
        }
        let index = self.index.current();
        let at = self.clock.now();
        let class = blocking_borrowed(|| classify(&tx.data, index.trust(), at));
        let found = match &class {
            Classification::TransportEnvelope(m) if m.daticert.identificativo == pec_id => {
                Certification::from_verified_envelope(&m.daticert, &m.verified.content)
            }
            _ => None,
        };
        let Some((cert, original)) = found else {
            // The store says verified but the message does not classify as that envelope
            // now (e.g. the signer certificate expired since): deliver without a notice.
            error!(
                msgid = %pec_id,
                "delivery point: recorded as verified but not a valid transport envelope now ({}); no notice",
                class.reason().unwrap_or("other PEC msgid or no postacert.eml")
            );
            return Ok(None);
        };
        // The verified content is not needed once the original is out of it.
        drop(class);
        Ok(Some(Certified {
            pec_id,
            cert,
            original: Arc::new(original),
            verified,
        }))
    }

    /// Emits the notice for one recipient: `Some(notice id)`, or `None` when one was
    /// already recorded.
    async fn notify(
        &self,
        c: &Certified,
        rcpt: &str,
        reply: &Reply,
        at: Instant,
    ) -> Result<Option<String>, DeliveryError> {
        let store = self.store.clone();
        let (id, r) = (c.pec_id.clone(), rcpt.to_string());
        if blocking(move || store.delivery_notice(&id, &r))
            .await??
            .is_some()
        {
            return Ok(None);
        }
        let delivered = reply.class() == 2;
        let reason = (!delivered)
            .then(|| codes::non_delivery_reason(reply.enhanced(), &self.issuer.provider_name));
        let notice = {
            let (issuer, signer, ids) =
                (self.issuer.clone(), self.signer.clone(), self.ids.clone());
            let (cert, original, rcpt) = (c.cert.clone(), c.original.clone(), rcpt.to_string());
            let reason = reason.clone();
            blocking(move || -> Result<Generated, BuildError> {
                let b = Builder {
                    issuer: &issuer,
                    signer: &*signer,
                    ids: &*ids,
                };
                match reason {
                    None => b.delivery(&cert, at, &rcpt, &original),
                    Some((errore, text)) => b.non_delivery(&cert, at, &rcpt, errore, &text),
                }
            })
            .await??
        };
        let head = notice.head();
        self.injector
            .inject_parts(&notice.mail_from, &notice.rcpt_to, &[&head, &notice.body])
            .await?;
        let event = LogEvent {
            pec_id: c.pec_id.clone(),
            at,
            kind: EventKind::Issued(notice.kind),
            sender: c.cert.mittente.clone(),
            recipients: vec![(rcpt.to_string(), RecipientType::Certificato)],
            subject: c.cert.oggetto.clone(),
            related_ids: vec![notice.message_id.clone()],
            provider: self.issuer.provider_name.clone(),
            queue_id: None,
            outcome: if delivered {
                "ok".into()
            } else {
                "failed".into()
            },
            reason: reason
                .as_ref()
                .map(|(_, text)| format!("{text} (Dovecot: {})", reply.line())),
        };
        let store = self.store.clone();
        let r = rcpt.to_string();
        let first = blocking(move || store.claim_delivery_notice(&r, &event)).await??;
        if !first {
            warn!(
                msgid = %c.pec_id,
                rcpt = %rcpt,
                notice = %notice.message_id,
                kind = ?notice.kind,
                "delivery point: a concurrent delivery recorded a notice first: duplicate notice"
            );
        }
        debug_assert!(matches!(
            notice.kind,
            MessageKind::Delivery(_) | MessageKind::NonDelivery
        ));
        Ok(Some(notice.message_id))
    }
}

impl DeliveryPoint {
    /// The optional arrival notice for `rcpt`, after its delivery receipt went out (so once
    /// per delivery, like the receipt). Best effort: a failure is logged and changes no
    /// reply (a 4xx would only make Postfix store a second copy).
    async fn arrival(&self, c: &Certified, rcpt: &str, at: Instant) {
        if !self.arrival_notices {
            return;
        }
        let store = self.store.clone();
        let r = rcpt.to_string();
        let wanted = match blocking(move || store.arrival_notice(&r)).await {
            Ok(Ok(n)) => n.filter(|n| n.applies_to(&c.cert.mittente)),
            Ok(Err(e)) => {
                warn!(msgid = %c.pec_id, rcpt = %rcpt, "delivery point: arrival notice not sent: {e}");
                return;
            }
            Err(e) => {
                warn!(msgid = %c.pec_id, rcpt = %rcpt, "delivery point: arrival notice not sent: {e}");
                return;
            }
        };
        let Some(n) = wanted else {
            return;
        };
        let id = self.ids.next_id(at);
        let message = arrival::arrival_notice(
            &self.issuer.service_address,
            &n.notify,
            rcpt,
            &c.cert.mittente,
            &c.cert.oggetto,
            at,
            &id,
        );
        let to = [n.notify.clone()];
        match self
            .injector
            .inject(&self.issuer.service_address, &to, &message)
            .await
        {
            Ok(()) => {
                info!(msgid = %c.pec_id, rcpt = %rcpt, notify = %n.notify, "delivery point: arrival notice sent")
            }
            Err(e) => {
                warn!(msgid = %c.pec_id, rcpt = %rcpt, notify = %n.notify, "delivery point: arrival notice not sent: {e}")
            }
        }
    }
}

impl LmtpHandler for DeliveryPoint {
    fn deliver<'a>(&'a self, tx: &'a Transaction) -> BoxFuture<'a, Vec<Reply>> {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "delivery",
            queue_id = crate::metrics::received_queue_id(&tx.data)
                .as_deref()
                .unwrap_or("-"),
            msgid = envelope_id(&tx.data).as_deref().unwrap_or("-")
        );
        Box::pin(
            async move {
                let started = std::time::Instant::now();
                let replies = DeliveryPoint::deliver(self, tx).await;
                crate::metrics::latency(crate::metrics::Role::Delivery, started.elapsed());
                let pec = envelope_id(&tx.data).is_some();
                for reply in &replies {
                    record(pec, reply);
                }
                replies
            }
            .instrument(span),
        )
    }
}

/// The metrics of one recipient's reply (notices are counted by the 250 we give for them).
fn record(pec: bool, reply: &Reply) {
    use crate::metrics::{message, tempfail, Role::Delivery};
    let kind = if pec { "transport_envelope" } else { "other" };
    match reply.class() {
        2 if reply.text.contains("Non-delivery") => message(Delivery, kind, "not_delivered"),
        2 => message(Delivery, kind, "delivered"),
        4 => {
            message(Delivery, kind, "tempfail");
            tempfail(
                Delivery,
                if reply.text.contains("PEC notice") || reply.text.contains("Store") {
                    "pec"
                } else {
                    "dovecot"
                },
            );
        }
        _ => message(Delivery, kind, "failed"),
    }
}

/// Runs blocking work on data the caller only lends (a received message: verification,
/// classification) without copying it into a task: on a multi-threaded runtime the worker
/// hands its other tasks over while `f` runs; on a current-thread runtime (tests) `f`
/// runs in place.
pub(crate) fn blocking_borrowed<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Runs blocking work (store, signing, verification) off the async workers.
async fn blocking<T, F>(f: F) -> Result<T, DeliveryError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DeliveryError::Task(e.to_string()))
}

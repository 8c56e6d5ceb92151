// SPDX-License-Identifier: GPL-3.0-or-later
//! Punto di consegna (delivery point, spec §3.6, §3.7, §5.3): an LMTP proxy between
//! Postfix (`virtual_transport = lmtp:…`) and Dovecot's LMTP.
//!
//! The protocol lives in [`crate::smtp::lmtp`]; this module holds the PEC rules, in one per-message
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
//!    `X-TipoRicevuta` and the To/Cc rule, [`crate::message::build::Builder::delivery`]) to the sender;
//!    Dovecot 5xx → signed avviso di mancata consegna with the coded reason of
//!    [`crate::message::codes::non_delivery_reason`], and 250 to Postfix so that no plain DSN goes out in
//!    place of the PEC notice; Dovecot 4xx or unreachable → 4xx to Postfix, no notice;
//! 4. the notice is built and signed, then staged in the outbox together with its claim
//!    ([`Store::claim_delivery_notice`]'s key) and its legal-log event, in one transaction
//!    ([`crate::issuing::Issuing::emit`]); only then is it injected into Postfix's reinjection
//!    listener, and marked injected.
//!
//! REM dispatches (`[rem] enabled`) take the same steps with a consignment evidence in
//! place of the PEC receipt ([`rem`]).
//!
//! 5. optionally ([`DeliveryPoint::with_arrival_notices`]), after a delivery receipt, a
//!    short plain arrival notice to the ordinary address configured for the mailbox
//!    ([`Store::arrival_notice`], [`arrival`]); best effort.
//!
//! Exactly once, and the crash windows (see [`crate::store::outbox`]). Each message goes
//! to Dovecot once per (Message-ID, recipient) ([`dedup`]): an intent is recorded before,
//! the completion after Dovecot's 250; a second transaction of the same message running
//! in this process gets 4xx for that recipient meanwhile.
//!
//! * crash before Dovecot's answer is recorded: Postfix retries; the retry finds the
//!   intent and asks the mailbox (`delivery.duplicate_check`); held → 250 without storing
//!   again, not held or the check failing → delivered again (a copy rather than a loss);
//! * crash after the completion: the retry answers 250 from the record, stores nothing;
//! * crash before the notice is staged: nothing recorded; the retry builds it;
//! * crash (or injection failure, → 4xx) after staging: the claim is taken, so the retry
//!   builds nothing and answers 250; the outbox sweep injects the staged bytes (same
//!   Message-ID); if they were injected already but not marked, the second copy has the
//!   same Message-ID and the sender's delivery point stores it once;
//! * two concurrent deliveries of one envelope on two nodes: the claim decides which
//!   notice exists; the other is dropped, never injected.
//!
//! Fail closed: a store failure while deciding gives 4xx for every recipient before
//! anything is delivered; signing or injection failures give 4xx for that recipient.

use std::sync::Arc;

use bytes::Bytes;
use tracing::{error, info, warn};

use crate::bounce;
use crate::crypto::Signer;
use crate::index::IndexHandle;
use crate::issuing::{blocking_borrowed, Emitted, IssueError, Issuing};
use crate::message::build::{Certification, Issuer};
use crate::message::classify::{classify_shared, Classification};
use crate::message::ids::{envelope_id, MsgIdSource};
use crate::message::kind::{MessageKind, RecipientType};
use crate::message::time::{Clock, Instant};
use crate::smtp::Injector;
use crate::store::outbox::{arrival_key, delivery_key};
use crate::store::{
    DeliveryMark, Effect, EventKind, LogEvent, MailboxState, Outbound, Store, StoreError,
};
use crate::BoxFuture;

pub mod arrival;
pub mod dedup;
pub mod rem;

use crate::smtp::lmtp::{LmtpHandler, LocalDelivery, Reply, Transaction};
use dedup::MailboxProbe;

/// Why a notice could not be emitted (the issuing kit's error).
pub type DeliveryError = IssueError;

/// A verified transport envelope being delivered: what every notice about it needs.
struct Certified {
    pec_id: String,
    cert: Certification,
    /// The original carried in the envelope (`postacert.eml`), for completa / breve:
    /// shared by the notices of every recipient, never copied for one.
    original: Bytes,
    /// `verified[i]`: the store marks the envelope verified for recipient `i`, and the
    /// envelope's daticert names that recipient.
    verified: Vec<bool>,
}

/// The delivery point.
pub struct DeliveryPoint {
    kit: Issuing,
    dovecot: Arc<dyn LocalDelivery>,
    index: Arc<IndexHandle>,
    arrival_notices: bool,
    probe: Option<Arc<dyn MailboxProbe>>,
    /// (Message-ID, lower-case recipient) being delivered by this process now: a second
    /// delivery of the same message to the same recipient (two Postfix queue files of one
    /// message) waits (4xx) instead of racing it into the mailbox.
    in_flight: Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>>,
    /// This node among those sharing the store ([`crate::store::ledger::node_owner`]): the
    /// owner of its delivery intents, so that another node waits (4xx) instead of
    /// delivering the same message at the same time ([`crate::store::outbox`]).
    owner: String,
    /// `[rem] enabled`: the REM path ([`rem`]).
    rem: Option<rem::RemDelivery>,
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
            kit: Issuing::new(store, injector, issuer, signer, ids),
            dovecot,
            index,
            arrival_notices: false,
            probe: None,
            in_flight: Arc::default(),
            owner: crate::store::ledger::node_owner(),
            rem: None,
        }
    }

    /// Speaks REM ([`rem`]): the consignment evidences of REM dispatches.
    pub fn with_rem(mut self, rem: Option<rem::RemDelivery>) -> Self {
        self.rem = rem;
        self
    }

    /// Sends the optional per-mailbox arrival notices ([`arrival`]) configured in the
    /// store ([`Store::arrival_notice`]).
    pub fn with_arrival_notices(mut self, enabled: bool) -> Self {
        self.arrival_notices = enabled;
        self
    }

    /// Asks the mailbox with `probe` whether a delivery whose outcome was not recorded
    /// happened ([`dedup`]); without one, such a delivery is made again.
    pub fn with_duplicate_check(mut self, probe: Option<Arc<dyn MailboxProbe>>) -> Self {
        self.probe = probe;
        self
    }

    /// Replaces the owner of the delivery intents (by default this process,
    /// `host:pid`): for tests that run several nodes in one process.
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// Replaces the clock (delivery instant of the notices).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.kit.clock = clock;
        self
    }

    /// One transaction: one reply per recipient for Postfix.
    pub async fn deliver(&self, tx: &Transaction) -> Vec<Reply> {
        // Postfix's own bounce of one of our envelopes reaches the delivery point directly
        // (Postfix does not filter what it generates): signed notices instead ([`bounce`]).
        if let Some(replies) = self.bounce(tx).await {
            return replies;
        }
        if let Some(rem) = &self.rem {
            if crate::rem::message::is_rem(&tx.data) {
                return self.rem_deliver(rem, tx).await;
            }
        }
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
        let replies = match self.open_mailboxes(tx, &shown).await {
            Ok(r) => r,
            Err(e) => return self.tempfail_all(tx, &shown, &e.to_string()),
        };
        let Some(c) = certified else {
            for (r, reply) in tx.rcpt_to.iter().zip(&replies) {
                info!(msgid = %shown, rcpt = %r, reply = %reply.line(), "delivery point: proxied");
            }
            return replies;
        };
        let at = self.kit.clock.now();
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

    /// A bounce of one of our envelopes ([`bounce`]): the notices, and 250 for each
    /// recipient when the report is consumed (`None`: deliver the message as usual, also
    /// when the report names failures the envelope does not certify).
    async fn bounce(&self, tx: &Transaction) -> Option<Vec<Reply>> {
        let tempfail = |e: IssueError| {
            error!("delivery point: tempfail on a bounce report: {e}");
            Some(
                tx.rcpt_to
                    .iter()
                    .map(|_| Reply::new(451, "4.3.0 Cannot emit the PEC notice, try again later"))
                    .collect(),
            )
        };
        let b = match bounce::judge(&self.kit, &tx.mail_from, &tx.rcpt_to, &tx.data).await {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => return tempfail(e),
        };
        let now = self.kit.clock.now();
        let notices = match bounce::notify(&self.kit, &b, Some("Postfix (locale)"), None, now).await
        {
            Ok(n) => n,
            Err(e) => return tempfail(e),
        };
        info!(msgid = %b.cert.identificativo, notices = ?notices, also_delivered = b.uncertified, "delivery point: bounce of our envelope");
        if b.uncertified {
            return None;
        }
        Some(
            tx.rcpt_to
                .iter()
                .map(|r| {
                    Reply::new(
                        250,
                        format!("2.0.0 <{r}> Bounce of a PEC envelope: non-delivery notice sent"),
                    )
                })
                .collect(),
        )
    }

    /// Step 1 for the recipients whose mailbox receives ([`Store::mailbox_settings`],
    /// [`Store::retired_mailbox`]); a suspended, read-only or retired mailbox gets
    /// `550 5.2.1` without Dovecot ("casella disattivata": a non-delivery notice follows
    /// for a certified recipient). Receipts and notices (`X-Ricevuta`) still reach it: they
    /// answer what the mailbox sent, its own non-acceptance notices included.
    async fn open_mailboxes(
        &self,
        tx: &Transaction,
        shown: &str,
    ) -> Result<Vec<Reply>, DeliveryError> {
        if is_receipt(&tx.data) {
            return Ok(self.to_mailboxes(tx, shown).await);
        }
        let rcpts = tx.rcpt_to.clone();
        let closed: Vec<Option<&'static str>> = self
            .kit
            .store(move |s| {
                rcpts
                    .iter()
                    .map(|r| {
                        // A `folder` delivery (local+FOLDER@domain) is the mailbox's.
                        let r = &without_detail(r);
                        if s.retired_mailbox(r)?.is_some() {
                            return Ok(Some("retired"));
                        }
                        Ok(match s.mailbox_settings(r)?.state {
                            MailboxState::Active => None,
                            other => Some(other.label()),
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .await?;
        if closed.iter().all(Option::is_none) {
            return Ok(self.to_mailboxes(tx, shown).await);
        }
        let open = Transaction {
            mail_from: tx.mail_from.clone(),
            rcpt_to: tx
                .rcpt_to
                .iter()
                .zip(&closed)
                .filter(|(_, c)| c.is_none())
                .map(|(r, _)| r.clone())
                .collect(),
            eight_bit: tx.eight_bit,
            data: tx.data.clone(),
        };
        let mut got = if open.rcpt_to.is_empty() {
            Vec::new()
        } else {
            self.to_mailboxes(&open, shown).await
        }
        .into_iter();
        Ok(tx
            .rcpt_to
            .iter()
            .zip(closed)
            .map(|(r, c)| match c {
                Some(state) => {
                    info!(msgid = %shown, rcpt = %r, state, "delivery point: the mailbox does not receive");
                    Reply::new(550, format!("5.2.1 <{r}> Mailbox disabled ({state})"))
                }
                None => got.next().unwrap_or_else(|| {
                    Reply::new(451, "4.3.0 No reply from the mailbox server, try again later")
                }),
            })
            .collect())
    }

    /// Step 1, once per (Message-ID, recipient) ([`dedup`]): one reply per recipient.
    async fn to_mailboxes(&self, tx: &Transaction, shown: &str) -> Vec<Reply> {
        let Some(known) = dedup::identity(&tx.data) else {
            return self
                .dovecot
                .deliver(&tx.mail_from, &tx.rcpt_to, &tx.data, tx.eight_bit)
                .await;
        };
        // The key of its delivery records (an anomaly envelope's is not its envelope's).
        let mid = known.key();
        let at = self.kit.clock.now();
        let mut replies: Vec<Option<Reply>> = vec![None; tx.rcpt_to.len()];
        let guard = InFlight::take(&self.in_flight, &mid, &tx.rcpt_to);
        let mine: Vec<usize> = (0..tx.rcpt_to.len()).filter(|i| guard.held[*i]).collect();
        for (i, r) in tx.rcpt_to.iter().enumerate() {
            if !guard.held[i] {
                info!(msgid = %shown, message_id = %mid, rcpt = %r, "delivery point: the same message is being delivered now: try again later");
                replies[i] = Some(Reply::new(
                    451,
                    "4.2.0 The same message is being delivered now, try again later",
                ));
            }
        }
        let rcpts: Vec<String> = mine.iter().map(|&i| tx.rcpt_to[i].clone()).collect();
        let (id, owner) = (mid.clone(), self.owner.clone());
        let marks = match self
            .kit
            .store(move |s| s.begin_deliveries(&id, &rcpts, &owner, at))
            .await
        {
            Ok(m) => m,
            Err(e) => return self.tempfail_all(tx, shown, &e.to_string()),
        };
        let mut send = Vec::new();
        let mut found = Vec::new();
        for (i, mark) in mine.into_iter().zip(marks) {
            let rcpt = &tx.rcpt_to[i];
            match mark {
                None => send.push(i),
                Some(DeliveryMark::Busy) => {
                    info!(msgid = %shown, message_id = %mid, rcpt = %rcpt, "delivery point: the same message is being delivered now by another node: try again later");
                    replies[i] = Some(Reply::new(
                        451,
                        "4.2.0 The same message is being delivered now, try again later",
                    ));
                }
                Some(DeliveryMark::Done) => {
                    info!(msgid = %shown, message_id = %mid, rcpt = %rcpt, "delivery point: delivered before (a retry): not stored again");
                    replies[i] = Some(Reply::new(250, format!("2.0.0 <{rcpt}> Already delivered")));
                }
                Some(DeliveryMark::Intent) => {
                    let held = match &self.probe {
                        Some(p) => p.holds(rcpt, &known).await,
                        None => Err("no duplicate check configured".into()),
                    };
                    match held {
                        Ok(true) => {
                            info!(msgid = %shown, message_id = %mid, rcpt = %rcpt, "delivery point: outcome unrecorded, found in the mailbox: not stored again");
                            replies[i] =
                                Some(Reply::new(250, format!("2.0.0 <{rcpt}> Already delivered")));
                            found.push(rcpt.clone());
                        }
                        Ok(false) => send.push(i),
                        Err(e) => {
                            warn!(msgid = %shown, message_id = %mid, rcpt = %rcpt, "delivery point: outcome unrecorded and the mailbox cannot be checked ({e}): delivered again");
                            send.push(i);
                        }
                    }
                }
            }
        }
        if !send.is_empty() {
            let to: Vec<String> = send.iter().map(|&i| tx.rcpt_to[i].clone()).collect();
            let got = self
                .dovecot
                .deliver(&tx.mail_from, &to, &tx.data, tx.eight_bit)
                .await;
            for (k, &i) in send.iter().enumerate() {
                replies[i] = Some(got.get(k).cloned().unwrap_or_else(|| {
                    Reply::new(
                        451,
                        "4.3.0 No reply from the mailbox server, try again later",
                    )
                }));
            }
            found.extend(
                send.iter()
                    .filter(|&&i| replies[i].as_ref().is_some_and(|r| r.class() == 2))
                    .map(|&i| tx.rcpt_to[i].clone()),
            );
        }
        if !found.is_empty() {
            let (id, at) = (mid.clone(), self.kit.clock.now());
            if let Err(e) = self
                .kit
                .store(move |s| s.deliveries_done(&id, &found, at))
                .await
            {
                // Stored in the mailbox: the reply stays 250. A retry would ask the mailbox.
                warn!(msgid = %shown, message_id = %mid, "delivery point: delivery not recorded: {e}");
            }
        }
        replies
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Reply::new(451, "4.3.0 Internal error, try again later")))
            .collect()
    }

    fn tempfail_all(&self, tx: &Transaction, shown: &str, e: &str) -> Vec<Reply> {
        error!(msgid = %shown, "delivery point: tempfail before delivery: {e}");
        tx.rcpt_to
            .iter()
            .map(|_| Reply::new(451, "4.3.0 Store unavailable, try again later"))
            .collect()
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
        let (id, rcpts) = (pec_id.clone(), tx.rcpt_to.clone());
        let verified = self
            .kit
            .store(move |s| {
                rcpts
                    .iter()
                    .map(|r| s.is_verified(&id, r))
                    .collect::<Result<Vec<bool>, StoreError>>()
            })
            .await?;
        if !verified.iter().any(|v| *v) {
            return Ok(None);
        }
        let index = self.index.current();
        let at = self.kit.clock.now();
        let class = blocking_borrowed(|| classify_shared(&tx.data, index.trust(), at));
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
        // A notice only for a recipient the envelope certifies (the reception point took
        // in charge no other; this holds even for a record written before it checked).
        let verified = tx
            .rcpt_to
            .iter()
            .zip(verified)
            .map(|(r, v)| {
                v && cert
                    .destinatari
                    .iter()
                    .any(|d| d.address.trim().eq_ignore_ascii_case(r))
            })
            .collect();
        Ok(Some(Certified {
            pec_id,
            cert,
            original,
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
        let (id, r) = (c.pec_id.clone(), rcpt.to_string());
        if self
            .kit
            .store(move |s| s.delivery_notice(&id, &r))
            .await?
            .is_some()
        {
            return Ok(None);
        }
        let delivered = reply.class() == 2;
        let reason = (!delivered).then(|| {
            crate::message::codes::non_delivery_reason(
                reply.enhanced(),
                &self.kit.issuer.provider_name,
            )
        });
        let notice = {
            let (cert, original, rcpt) = (c.cert.clone(), c.original.clone(), rcpt.to_string());
            let reason = reason.clone();
            self.kit
                .build(move |b| match reason {
                    None => b.delivery(&cert, at, &rcpt, &original),
                    Some((errore, text)) => b.non_delivery(&cert, at, &rcpt, errore, &text),
                })
                .await?
        };
        let event = LogEvent {
            pec_id: c.pec_id.clone(),
            at,
            kind: EventKind::Issued(notice.kind),
            sender: c.cert.mittente.clone(),
            recipients: vec![(rcpt.to_string(), RecipientType::Certificato)],
            subject: c.cert.oggetto.clone(),
            related_ids: vec![notice.message_id.clone()],
            provider: self.kit.issuer.provider_name.clone(),
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
        let (notice_id, notice_kind) = (notice.message_id.clone(), notice.kind);
        // The notice is moved into its outbox row (a completa receipt is about the size of
        // the original): no second copy of it while it is staged.
        let effect = Effect::DeliveryNotice {
            recipient: rcpt.to_string(),
            event,
        };
        let emitted = self
            .kit
            .emit(delivery_key(&c.pec_id, rcpt), notice, effect, at)
            .await?;
        if !matches!(emitted, Emitted::New(_)) {
            warn!(
                msgid = %c.pec_id,
                rcpt = %rcpt,
                notice = %notice_id,
                kind = ?notice_kind,
                "delivery point: a concurrent delivery recorded a notice first: this one is dropped"
            );
            return Ok(None);
        }
        debug_assert!(matches!(
            notice_kind,
            MessageKind::Delivery(_) | MessageKind::NonDelivery
        ));
        Ok(Some(notice_id))
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
        let r = rcpt.to_string();
        let wanted = match self.kit.store(move |s| s.arrival_notice(&r)).await {
            Ok(n) => n.filter(|n| n.applies_to(&c.cert.mittente)),
            Err(e) => {
                warn!(msgid = %c.pec_id, rcpt = %rcpt, "delivery point: arrival notice not sent: {e}");
                return;
            }
        };
        let Some(n) = wanted else {
            return;
        };
        let id = self.kit.ids.next_id(at);
        let message = arrival::arrival_notice(
            &self.kit.issuer.service_address,
            &n.notify,
            rcpt,
            &c.cert.mittente,
            &c.cert.oggetto,
            at,
            &id,
        );
        // Through the outbox, keyed by the delivery it reports: a retry of the same
        // delivery sends no second notice. A plain notification: no legal-log record.
        let out = Outbound {
            key: arrival_key(&c.pec_id, rcpt),
            message_id: id.clone(),
            mail_from: self.kit.issuer.service_address.clone(),
            rcpt_to: n.addresses(),
            data: message,
            created_at: at,
            injected_at: None,
        };
        match self.kit.emit_outbound(out, Effect::Log(Vec::new())).await {
            Ok(Emitted::New(_)) => {
                info!(msgid = %c.pec_id, rcpt = %rcpt, notify = %n.notify, "delivery point: arrival notice sent")
            }
            Ok(_) => {
                info!(msgid = %c.pec_id, rcpt = %rcpt, notify = %n.notify, "delivery point: arrival notice staged already: none sent")
            }
            Err(e) => {
                warn!(msgid = %c.pec_id, rcpt = %rcpt, notify = %n.notify, "delivery point: arrival notice not sent: {e}")
            }
        }
    }
}

/// `local+detail@domain` without its `+detail` (the address of the mailbox).
fn without_detail(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => match local.split_once('+') {
            Some((base, _)) if !base.is_empty() => format!("{base}@{domain}"),
            _ => address.to_string(),
        },
        None => address.to_string(),
    }
}

/// Whether the message's header has an `X-Ricevuta` field: a receipt or notice (only the
/// reception point and our own roles hand such messages to the delivery point; ordinary
/// mail from outside arrives wrapped in an anomaly envelope).
fn is_receipt(data: &[u8]) -> bool {
    let (header, _) = crate::message::mime::split_header_body(data);
    crate::message::mime::fields(header)
        .is_ok_and(|f| crate::message::mime::first_value(&f, "x-ricevuta").is_some())
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

/// The (Message-ID, recipient) pairs one transaction delivers, held in
/// [`DeliveryPoint`]'s in-flight set until it is dropped (also when the task unwinds).
struct InFlight {
    set: Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>>,
    keys: Vec<(String, String)>,
    /// `held[i]`: recipient `i` is ours; false when another transaction holds it.
    held: Vec<bool>,
}

impl InFlight {
    fn take(
        set: &Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>>,
        message_id: &str,
        rcpts: &[String],
    ) -> Self {
        let mut s = set.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys = Vec::new();
        let held = rcpts
            .iter()
            .map(|r| {
                let key = (message_id.to_string(), r.to_ascii_lowercase());
                let ok = s.insert(key.clone());
                if ok {
                    keys.push(key);
                }
                ok
            })
            .collect();
        InFlight {
            set: set.clone(),
            keys,
            held,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.set.lock().unwrap_or_else(|e| e.into_inner());
        for k in &self.keys {
            s.remove(k);
        }
    }
}

//! Test doubles for the outside systems (style rule 7): an in-memory store, a scripted
//! antivirus and a recording injector. Tests inject them through constructors; nothing in
//! the service uses them.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::antivirus::{Antivirus, AvError, ScanVerdict};
use crate::message::kind::{MessageKind, RecipientType, Timeout};
use crate::message::time::Instant;
use crate::smtp::{InjectError, Injector};
use crate::store::{
    Accepted, ArrivalNotice, DueNotice, EventKind, LogEvent, LogQuery, LoggedEvent, MailboxPolicy,
    Refused, Store, StoreError, StoredIndex, TimeoutClaim, Tracking, TrackingState,
};
use crate::store::{DeliveryMark, Effect, Outbound, Staged};
use crate::BoxFuture;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An in-memory [`Store`] with the same semantics as the SQLite one; `fail` makes every
/// call fail, to test the fail-closed paths.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<Mem>,
    pub fail: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct Mem {
    senders: Vec<(String, String)>,
    events: Vec<LogEvent>,
    pending: HashMap<String, (Accepted, bool)>,
    tracking: Vec<Tracking>,
    quarantine: Vec<(String, Vec<u8>)>,
    verified: Vec<(String, String)>,
    policies: HashMap<String, MailboxPolicy>,
    /// (pec_id, lower-case recipient) → Message-ID of the delivery receipt / notice.
    notices: HashMap<(String, String), String>,
    /// Lower-case mailbox → arrival notice.
    arrivals: HashMap<String, ArrivalNotice>,
    /// Timer notices per (pec_id, recipient, which): claim instant and notice id.
    timeout_notices: HashMap<NoticeKey, (Option<Instant>, Option<String>)>,
    index: Option<StoredIndex>,
    /// The outbox, by key, with its last attempt.
    outbox: HashMap<String, (Outbound, Instant)>,
    /// (Message-ID, lower-case recipient) → delivered (true) or intent (false).
    deliveries: HashMap<(String, String), (bool, Instant)>,
    /// The owner of each delivery intent and when it took it.
    delivery_owners: HashMap<(String, String), (String, Instant)>,
}

/// (pec_id, recipient, is the 24 h notice).
type NoticeKey = (String, String, bool);

fn notice_key(pec_id: &str, recipient: &str, which: Timeout) -> NoticeKey {
    (
        pec_id.to_string(),
        recipient.to_string(),
        which == Timeout::Hours24,
    )
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            Err(StoreError::Database("test double set to fail".into()))
        } else {
            Ok(())
        }
    }

    /// Every event, oldest first.
    pub fn all_events(&self) -> Vec<LogEvent> {
        lock(&self.inner).events.clone()
    }

    /// The timer notice `notice_id` for `due` recorded on its row and logged.
    fn timeout_sent(
        &self,
        due: &DueNotice,
        notice_id: &str,
        at: Instant,
    ) -> Result<(), StoreError> {
        self.check()?;
        let mut m = lock(&self.inner);
        let entry = m
            .timeout_notices
            .entry(notice_key(&due.pec_id, &due.recipient, due.which))
            .or_insert((Some(due.claimed_at), None));
        if entry.1.is_none() {
            entry.1 = Some(notice_id.to_string());
        }
        if due.which == Timeout::Hours24 {
            for t in m.tracking.iter_mut() {
                if t.pec_id == due.pec_id
                    && t.recipient == due.recipient
                    && t.state.rank() < TrackingState::Delivered.rank()
                {
                    t.state = TrackingState::Failed;
                }
            }
        }
        m.events
            .push(crate::store::outbox::timeout_event(due, notice_id, at));
        Ok(())
    }
}

fn event(a: &Accepted, kind: MessageKind, related: &str, at: Instant) -> LogEvent {
    LogEvent {
        pec_id: a.pec_id.clone(),
        at,
        kind: EventKind::Issued(kind),
        sender: a.cert.mittente.clone(),
        recipients: a
            .cert
            .destinatari
            .iter()
            .map(|d| (d.address.clone(), d.tipo))
            .collect(),
        subject: a.cert.oggetto.clone(),
        related_ids: vec![related.to_string()],
        provider: a.provider.clone(),
        queue_id: a.queue_id.clone(),
        outcome: "ok".into(),
        reason: None,
    }
}

impl Store for MemStore {
    fn sender_allowed(&self, login: &str, address: &str) -> Result<bool, StoreError> {
        self.check()?;
        let m = lock(&self.inner);
        let (login, address) = (login.to_ascii_lowercase(), address.to_ascii_lowercase());
        let mapped: Vec<_> = m.senders.iter().filter(|(l, _)| *l == login).collect();
        Ok(if mapped.is_empty() {
            login == address
        } else {
            mapped.iter().any(|(_, a)| *a == address)
        })
    }

    fn allow_sender(&self, login: &str, address: &str) -> Result<(), StoreError> {
        self.check()?;
        lock(&self.inner)
            .senders
            .push((login.to_ascii_lowercase(), address.to_ascii_lowercase()));
        Ok(())
    }

    fn record_accepted(&self, a: &Accepted) -> Result<(), StoreError> {
        self.check()?;
        let mut m = lock(&self.inner);
        if m.pending.contains_key(&a.pec_id) {
            return Err(StoreError::Database(format!(
                "duplicate pec id \"{}\"",
                a.pec_id
            )));
        }
        for d in a
            .cert
            .destinatari
            .iter()
            .filter(|d| d.tipo == RecipientType::Certificato)
        {
            m.tracking.push(Tracking {
                pec_id: a.pec_id.clone(),
                recipient: d.address.clone(),
                sent_at: a.at,
                state: TrackingState::Sent,
            });
        }
        m.pending.insert(a.pec_id.clone(), (a.clone(), false));
        Ok(())
    }

    fn pending_acceptance(&self, pec_id: &str) -> Result<Option<Accepted>, StoreError> {
        self.check()?;
        Ok(lock(&self.inner)
            .pending
            .get(pec_id)
            .filter(|(_, emitted)| !emitted)
            .map(|(a, _)| a.clone()))
    }

    fn acceptance_emitted(
        &self,
        pec_id: &str,
        receipt_id: &str,
        at: Instant,
    ) -> Result<bool, StoreError> {
        self.check()?;
        let mut m = lock(&self.inner);
        let Some((a, emitted)) = m.pending.get_mut(pec_id) else {
            return Ok(false);
        };
        if *emitted {
            return Ok(false);
        }
        *emitted = true;
        let e = event(a, MessageKind::TransportEnvelope, pec_id, at);
        let r = event(a, MessageKind::Acceptance, receipt_id, at);
        m.events.push(e);
        m.events.push(r);
        Ok(true)
    }

    fn record_refused(&self, r: &Refused) -> Result<(), StoreError> {
        self.check()?;
        let mut m = lock(&self.inner);
        m.events.push(LogEvent {
            pec_id: r.pec_id.clone(),
            at: r.at,
            kind: EventKind::Issued(r.kind),
            sender: r.cert.mittente.clone(),
            recipients: r
                .cert
                .destinatari
                .iter()
                .map(|d| (d.address.clone(), d.tipo))
                .collect(),
            subject: r.cert.oggetto.clone(),
            related_ids: vec![r.notice_id.clone()],
            provider: r.provider.clone(),
            queue_id: r.queue_id.clone(),
            outcome: if r.kind == MessageKind::NonAcceptanceVirus {
                "virus"
            } else {
                "refused"
            }
            .into(),
            reason: Some(r.reason.clone()),
        });
        if let Some(q) = &r.quarantine {
            m.quarantine.push((r.pec_id.clone(), q.clone()));
            let mut e = m.events[m.events.len() - 1].clone();
            // As the SQLite store: no generated message, outcome ok.
            e.kind = EventKind::Quarantined;
            e.related_ids = Vec::new();
            e.outcome = "ok".into();
            m.events.push(e);
        }
        Ok(())
    }

    fn log(&self, event: &LogEvent) -> Result<(), StoreError> {
        self.check()?;
        lock(&self.inner).events.push(event.clone());
        Ok(())
    }

    fn events_for(&self, pec_id: &str) -> Result<Vec<LogEvent>, StoreError> {
        self.check()?;
        Ok(lock(&self.inner)
            .events
            .iter()
            .filter(|e| e.pec_id == pec_id)
            .cloned()
            .collect())
    }

    fn tracking_for(&self, pec_id: &str) -> Result<Vec<Tracking>, StoreError> {
        self.check()?;
        Ok(lock(&self.inner)
            .tracking
            .iter()
            .filter(|t| t.pec_id == pec_id)
            .cloned()
            .collect())
    }

    fn quarantined(&self, pec_id: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        self.check()?;
        Ok(lock(&self.inner)
            .quarantine
            .iter()
            .filter(|(id, _)| id == pec_id)
            .map(|(_, m)| m.clone())
            .collect())
    }

    fn record_verified(
        &self,
        pec_id: &str,
        recipients: &[String],
        event: &LogEvent,
    ) -> Result<(), StoreError> {
        self.check()?;
        let mut m = lock(&self.inner);
        m.events.push(event.clone());
        for r in recipients {
            let row = (pec_id.to_string(), r.to_ascii_lowercase());
            if !m.verified.contains(&row) {
                m.verified.push(row);
            }
        }
        Ok(())
    }

    fn is_verified(&self, pec_id: &str, recipient: &str) -> Result<bool, StoreError> {
        self.check()?;
        let row = (pec_id.to_string(), recipient.to_ascii_lowercase());
        Ok(lock(&self.inner).verified.contains(&row))
    }

    fn update_tracking(
        &self,
        pec_id: &str,
        recipient: &str,
        state: TrackingState,
    ) -> Result<bool, StoreError> {
        self.check()?;
        let allowed = |from: TrackingState| match state {
            TrackingState::Sent => false,
            TrackingState::TakenInCharge => from == TrackingState::Sent,
            TrackingState::Delivered | TrackingState::Failed => {
                matches!(from, TrackingState::Sent | TrackingState::TakenInCharge)
            }
        };
        let mut changed = false;
        for t in lock(&self.inner).tracking.iter_mut() {
            if t.pec_id == pec_id && t.recipient.eq_ignore_ascii_case(recipient) && allowed(t.state)
            {
                t.state = state;
                changed = true;
            }
        }
        Ok(changed)
    }

    fn record_quarantine(&self, event: &LogEvent, message: &[u8]) -> Result<(), StoreError> {
        self.check()?;
        let mut m = lock(&self.inner);
        if m.quarantine
            .iter()
            .any(|(id, held)| *id == event.pec_id && held[..] == *message)
        {
            return Ok(());
        }
        m.quarantine.push((event.pec_id.clone(), message.to_vec()));
        m.events.push(event.clone());
        Ok(())
    }

    fn mailbox_policy(&self, mailbox: &str) -> Result<Option<MailboxPolicy>, StoreError> {
        self.check()?;
        Ok(lock(&self.inner)
            .policies
            .get(&mailbox.to_ascii_lowercase())
            .cloned())
    }

    fn set_mailbox_policy(&self, mailbox: &str, policy: &MailboxPolicy) -> Result<(), StoreError> {
        self.check()?;
        lock(&self.inner)
            .policies
            .insert(mailbox.to_ascii_lowercase(), policy.clone());
        Ok(())
    }

    fn envelope_certification(
        &self,
        pec_id: &str,
    ) -> Result<Option<crate::message::build::Certification>, StoreError> {
        self.check()?;
        Ok(lock(&self.inner)
            .pending
            .get(pec_id)
            .map(|(a, _)| a.cert.clone()))
    }

    fn delivery_notice(&self, pec_id: &str, recipient: &str) -> Result<Option<String>, StoreError> {
        self.check()?;
        Ok(lock(&self.inner)
            .notices
            .get(&(pec_id.to_string(), recipient.to_ascii_lowercase()))
            .cloned())
    }

    fn claim_delivery_notice(&self, recipient: &str, event: &LogEvent) -> Result<bool, StoreError> {
        self.check()?;
        let mut m = lock(&self.inner);
        let key = (event.pec_id.clone(), recipient.to_ascii_lowercase());
        if m.notices.contains_key(&key) {
            return Ok(false);
        }
        let id = event.related_ids.first().cloned().unwrap_or_default();
        m.notices.insert(key, id);
        m.events.push(event.clone());
        drop(m);
        // Same provider: the notice closes our own tracking row (as the real stores).
        if let Some(state) = crate::store::outbox::notice_outcome(event) {
            self.update_tracking(&event.pec_id, recipient, state)?;
        }
        Ok(true)
    }

    fn set_arrival_notice(
        &self,
        mailbox: &str,
        notice: Option<&ArrivalNotice>,
    ) -> Result<(), StoreError> {
        self.check()?;
        let mut m = lock(&self.inner);
        let key = mailbox.to_ascii_lowercase();
        match notice {
            Some(n) => {
                let mut n = n.clone();
                n.senders = n.senders.iter().map(|s| s.to_ascii_lowercase()).collect();
                m.arrivals.insert(key, n);
            }
            None => {
                m.arrivals.remove(&key);
            }
        }
        Ok(())
    }

    fn arrival_notice(&self, mailbox: &str) -> Result<Option<ArrivalNotice>, StoreError> {
        self.check()?;
        Ok(lock(&self.inner)
            .arrivals
            .get(&mailbox.to_ascii_lowercase())
            .cloned())
    }
    fn claim_timeouts(&self, claim: &TimeoutClaim) -> Result<Vec<DueNotice>, StoreError> {
        self.check()?;
        let mut m = lock(&self.inner);
        let mut rows: Vec<Tracking> = m
            .tracking
            .iter()
            .filter(|t| {
                let open = match claim.which {
                    Timeout::Hours12 => t.state == TrackingState::Sent,
                    Timeout::Hours24 => t.state.rank() < TrackingState::Delivered.rank(),
                };
                open && t.sent_at <= claim.sent_up_to
                    && m.pending
                        .get(&t.pec_id)
                        .is_some_and(|(_, emitted)| *emitted)
            })
            .cloned()
            .collect();
        rows.sort_by_key(|t| t.sent_at);
        let mut due = Vec::new();
        for t in rows {
            if due.len() >= claim.limit {
                break;
            }
            let key = notice_key(&t.pec_id, &t.recipient, claim.which);
            let (claimed, id) = m.timeout_notices.get(&key).cloned().unwrap_or((None, None));
            if id.is_some() || claimed.is_some_and(|c| c >= claim.stale_before) {
                continue;
            }
            m.timeout_notices.insert(key, (Some(claim.now), None));
            let Some((a, _)) = m.pending.get(&t.pec_id) else {
                continue;
            };
            due.push(DueNotice {
                which: claim.which,
                pec_id: t.pec_id.clone(),
                recipient: t.recipient.clone(),
                sent_at: t.sent_at,
                claimed_at: claim.now,
                cert: a.cert.clone(),
                queue_id: a.queue_id.clone(),
                provider: a.provider.clone(),
            });
        }
        Ok(due)
    }

    fn release_timeout(&self, due: &DueNotice) -> Result<(), StoreError> {
        self.check()?;
        let mut m = lock(&self.inner);
        let key = notice_key(&due.pec_id, &due.recipient, due.which);
        if m.timeout_notices.get(&key) == Some(&(Some(due.claimed_at), None)) {
            m.timeout_notices.remove(&key);
        }
        Ok(())
    }

    fn stored_index(&self) -> Result<Option<StoredIndex>, StoreError> {
        self.check()?;
        Ok(lock(&self.inner).index.clone())
    }

    fn replace_index(&self, index: &StoredIndex) -> Result<(), StoreError> {
        self.check()?;
        lock(&self.inner).index = Some(index.clone());
        Ok(())
    }

    /// Same matching as the SQLite store; ids are positions from 1. The double does not
    /// chain: `hash` is empty.
    fn search_events(&self, query: &LogQuery) -> Result<Vec<LoggedEvent>, StoreError> {
        self.check()?;
        Ok(lock(&self.inner)
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| query.matches(e))
            .take(query.limit.unwrap_or(usize::MAX))
            .map(|(i, e)| LoggedEvent {
                id: i as i64 + 1,
                event: e.clone(),
                hash: Vec::new(),
            })
            .collect())
    }

    fn stage_outbound(&self, out: &Outbound, effect: &Effect) -> Result<Staged, StoreError> {
        self.check()?;
        if let Some((o, _)) = lock(&self.inner).outbox.get(&out.key) {
            return Ok(Staged::Existing(o.clone()));
        }
        // One lock per call below, as the other methods; the double is not used concurrently.
        let claimed = match effect {
            Effect::Log(events) => {
                lock(&self.inner).events.extend(events.iter().cloned());
                true
            }
            Effect::Acceptance {
                pec_id,
                receipt_id,
                at,
            } => self.acceptance_emitted(pec_id, receipt_id, *at)?,
            Effect::DeliveryNotice { recipient, event } => {
                self.claim_delivery_notice(recipient, event)?
            }
            Effect::TakenInCharge {
                recipients,
                event,
                tracking,
            } => {
                self.record_verified(&event.pec_id, recipients, event)?;
                if *tracking {
                    for r in recipients {
                        self.update_tracking(&event.pec_id, r, TrackingState::TakenInCharge)?;
                    }
                }
                true
            }
            Effect::Refused(r) => {
                self.record_refused(r)?;
                true
            }
            Effect::Timeout { due, notice_id, at } => {
                let done = lock(&self.inner)
                    .timeout_notices
                    .get(&notice_key(&due.pec_id, &due.recipient, due.which))
                    .is_some_and(|(_, id)| id.is_some());
                if !done {
                    self.timeout_sent(due, notice_id, *at)?;
                }
                !done
            }
            Effect::LogReply(event) => self.log_request_answered(event)?,
            Effect::Tracking { updates, event } => {
                let mut moved = false;
                for (r, state) in updates {
                    moved |= self.update_tracking(&event.pec_id, r, *state)?;
                }
                if moved {
                    self.log(event)?;
                }
                moved
            }
        };
        if !claimed {
            return Ok(Staged::Claimed);
        }
        lock(&self.inner)
            .outbox
            .insert(out.key.clone(), (out.clone(), out.created_at));
        Ok(Staged::New)
    }

    fn outbound(&self, key: &str) -> Result<Option<Outbound>, StoreError> {
        self.check()?;
        Ok(lock(&self.inner).outbox.get(key).map(|(o, _)| o.clone()))
    }

    fn outbound_injected(&self, key: &str, at: Instant) -> Result<(), StoreError> {
        self.check()?;
        if let Some((o, _)) = lock(&self.inner).outbox.get_mut(key) {
            o.injected_at.get_or_insert(at);
        }
        Ok(())
    }

    fn claim_unsent(
        &self,
        attempted_before: Instant,
        now: Instant,
        limit: usize,
    ) -> Result<Vec<Outbound>, StoreError> {
        self.check()?;
        let mut m = lock(&self.inner);
        let mut due: Vec<(Instant, String)> = m
            .outbox
            .iter()
            .filter(|(_, (o, attempted))| o.injected_at.is_none() && *attempted < attempted_before)
            .map(|(k, (_, attempted))| (*attempted, k.clone()))
            .collect();
        due.sort();
        due.truncate(limit);
        let mut out = Vec::new();
        for (_, k) in due {
            if let Some((o, attempted)) = m.outbox.get_mut(&k) {
                *attempted = now;
                out.push(o.clone());
            }
        }
        Ok(out)
    }

    fn begin_deliveries(
        &self,
        message_id: &str,
        recipients: &[String],
        owner: &str,
        at: Instant,
    ) -> Result<Vec<Option<DeliveryMark>>, StoreError> {
        self.check()?;
        let mut m = lock(&self.inner);
        Ok(recipients
            .iter()
            .map(|r| {
                let key = (message_id.to_string(), r.to_ascii_lowercase());
                let mark = match m.deliveries.get(&key) {
                    Some((true, _)) => Some(DeliveryMark::Done),
                    Some((false, _))
                        if m.delivery_owners.get(&key).is_some_and(|(o, t)| {
                            crate::store::outbox::intent_is_live(Some(o), *t, owner, at)
                        }) =>
                    {
                        return Some(DeliveryMark::Busy)
                    }
                    Some((false, _)) => Some(DeliveryMark::Intent),
                    None => None,
                };
                if mark != Some(DeliveryMark::Done) {
                    m.deliveries.insert(key.clone(), (false, at));
                    m.delivery_owners.insert(key, (owner.to_string(), at));
                }
                mark
            })
            .collect())
    }

    fn deliveries_done(
        &self,
        message_id: &str,
        recipients: &[String],
        at: Instant,
    ) -> Result<(), StoreError> {
        self.check()?;
        let mut m = lock(&self.inner);
        for r in recipients {
            m.deliveries
                .insert((message_id.to_string(), r.to_ascii_lowercase()), (true, at));
        }
        Ok(())
    }

    fn purge_outbox(&self, before: Instant) -> Result<u64, StoreError> {
        self.check()?;
        let mut m = lock(&self.inner);
        let n = m.outbox.len() + m.deliveries.len();
        m.outbox
            .retain(|_, (o, _)| o.injected_at.is_none_or(|at| at >= before));
        m.deliveries.retain(|_, (_, at)| *at >= before);
        let m = &mut *m;
        m.delivery_owners
            .retain(|k, _| m.deliveries.contains_key(k));
        Ok((n - m.outbox.len() - m.deliveries.len()) as u64)
    }
}

/// An antivirus that finds a virus wherever `marker` occurs, or is unreachable.
#[derive(Debug, Clone)]
pub struct MarkerAntivirus {
    pub marker: Vec<u8>,
    pub virus_name: String,
    pub unreachable: bool,
}

impl MarkerAntivirus {
    /// Finds `Eicar-Test-Signature` wherever the EICAR test string's start occurs.
    pub fn eicar() -> Self {
        MarkerAntivirus {
            marker: b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR".to_vec(),
            virus_name: "Eicar-Test-Signature".into(),
            unreachable: false,
        }
    }
}

impl Antivirus for MarkerAntivirus {
    fn scan<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, Result<ScanVerdict, AvError>> {
        Box::pin(async move {
            if self.unreachable {
                return Err(AvError::Unreachable {
                    addr: "test".into(),
                    reason: "test double set to fail".into(),
                });
            }
            Ok(
                if crate::message::mime::find(data, &self.marker).is_some() {
                    ScanVerdict::Infected(self.virus_name.clone())
                } else {
                    ScanVerdict::Clean
                },
            )
        })
    }
}

/// One message handed to a [`RecordingInjector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub message: Vec<u8>,
}

/// Records every injection; `fail_with` makes it fail instead.
#[derive(Debug, Default)]
pub struct RecordingInjector {
    pub sent: Mutex<Vec<Injected>>,
    pub fail_with: Mutex<Option<InjectError>>,
}

impl RecordingInjector {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn messages(&self) -> Vec<Injected> {
        lock(&self.sent).clone()
    }
}

impl Injector for RecordingInjector {
    fn inject<'a>(
        &'a self,
        mail_from: &'a str,
        rcpt_to: &'a [String],
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<(), InjectError>> {
        Box::pin(async move {
            if let Some(e) = lock(&self.fail_with).as_ref() {
                return Err(match e {
                    InjectError::Temporary { addr, reason } => InjectError::Temporary {
                        addr: addr.clone(),
                        reason: reason.clone(),
                    },
                    InjectError::Permanent { addr, reason } => InjectError::Permanent {
                        addr: addr.clone(),
                        reason: reason.clone(),
                    },
                });
            }
            lock(&self.sent).push(Injected {
                mail_from: mail_from.to_string(),
                rcpt_to: rcpt_to.to_vec(),
                message: message.to_vec(),
            });
            Ok(())
        })
    }
}

/// A signer whose token is unavailable: it has a certificate but every signature fails,
/// like a PKCS#11 token that was unplugged or a network HSM that is down.
pub struct UnavailableSigner {
    pub certificate: Vec<u8>,
}

impl crate::crypto::Signer for UnavailableSigner {
    fn certificate_der(&self) -> &[u8] {
        &self.certificate
    }
    fn chain_der(&self) -> &[Vec<u8>] {
        &[]
    }
    fn digest(&self) -> crate::crypto::DigestAlg {
        crate::crypto::DigestAlg::Sha256
    }
    fn sign_pkcs1(
        &self,
        _digest: crate::crypto::DigestAlg,
        _data: &[u8],
    ) -> Result<Vec<u8>, crate::crypto::SignError> {
        Err(crate::crypto::SignError::Pkcs11(
            "token not present (CKR_TOKEN_NOT_PRESENT)".into(),
        ))
    }
}

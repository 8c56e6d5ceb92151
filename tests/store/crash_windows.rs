// SPDX-License-Identifier: GPL-3.0-or-later
//! No duplicate after a crash (store::outbox, delivery::dedup): for each window where a
//! `pec serve` killed at the wrong instant used to leave a receipt issued twice, a message
//! stored twice or a legal-log record for a message never queued, the point is "crashed"
//! there (a panic in the middle of its work, or a failure) and dropped; a new one on the
//! same store takes the retry. Each test asserts exactly one receipt with one Message-ID,
//! one mailbox copy and one log record, on SQLite and (with PEC_TEST_PG_URL) PostgreSQL.

use crate::backends;
use crate::pem;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use backends::Backend;
use pec::crypto::Signer;
use pec::delivery::dedup::MailboxProbe;
use pec::delivery::DeliveryPoint;
use pec::index::{IndexHandle, ProviderIndex, ProviderInfo, ProviderRecord};
use pec::message::build::{Builder, Certification, OriginalInfo};
use pec::message::daticert::Destinatario;
use pec::message::ids::SequentialIds;
use pec::message::kind::{MessageKind, RecipientType};
use pec::message::time::{FixedClock, Instant};
use pec::smtp::lmtp::{LocalDelivery, Reply, Transaction};
use pec::smtp::{InjectError, Injector};
use pec::store::outbox::{acceptance_key, delivery_key};
use pec::store::{Accepted, DeliveryMark, Effect, EventKind, LogEvent, Outbound, Staged, Store};
use pec::BoxFuture;
use pem::{fixture, issuer, pki, PROVIDER};

const PEC_ID: &str = "opec1.20250603101112.1.1.crash@pec.example.it";
const SENDER: &str = "alice@pec.example.it";
const BOB: &str = "bob@pec.example.net";

fn at() -> Instant {
    Instant::parse_cli("2025-06-03T08:11:12Z").unwrap()
}

fn later(seconds: i64) -> Instant {
    Instant::from_unix(at().unix() + seconds)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn cert() -> Certification {
    let orig = fixture("contratto.eml");
    let info = OriginalInfo::parse(&orig).unwrap();
    Certification::for_submission(
        &info,
        SENDER,
        &[(BOB.to_string(), RecipientType::Certificato)],
        PEC_ID,
    )
}

/// The certification data of the envelope the delivery tests deliver: every To and Cc
/// address of contratto.eml, as the access point records them (the delivery point notifies
/// only recipients the daticert names).
fn delivered_cert() -> Certification {
    let mut c = cert();
    c.destinatari = vec![
        Destinatario {
            address: BOB.into(),
            tipo: RecipientType::Certificato,
        },
        Destinatario {
            address: "carol@example.com".into(),
            tipo: RecipientType::Esterno,
        },
        Destinatario {
            address: "dave@pec.example.net".into(),
            tipo: RecipientType::Certificato,
        },
    ];
    c
}

fn envelope() -> Vec<u8> {
    let ids = SequentialIds::new("opec1.envelope", "pec.example.it");
    let iss = issuer();
    Builder {
        issuer: &iss,
        signer: &*pki().signer,
        ids: &ids,
    }
    .transport_envelope(&fixture("contratto.eml"), &delivered_cert(), at())
    .unwrap()
    .to_bytes()
}

fn accepted() -> Accepted {
    Accepted {
        auth_at: None,
        pec_id: PEC_ID.into(),
        queue_id: Some("4AbCd".into()),
        at: at(),
        cert: cert(),
        login: SENDER.into(),
        provider: PROVIDER.into(),
    }
}

fn out(key: &str, message_id: &str) -> Outbound {
    Outbound {
        key: key.into(),
        message_id: message_id.into(),
        mail_from: "posta-certificata@pec.example.it".into(),
        rcpt_to: vec![SENDER.into()],
        data: format!("Message-ID: <{message_id}>\r\n\r\nbody\r\n").into_bytes(),
        created_at: at(),
        injected_at: None,
    }
}

fn kinds(store: &dyn Store) -> Vec<EventKind> {
    store
        .events_for(PEC_ID)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

fn count(kinds: &[EventKind], kind: MessageKind) -> usize {
    kinds
        .iter()
        .filter(|k| **k == EventKind::Issued(kind))
        .count()
}

// ---- the store ----------------------------------------------------------------------

/// Window 3: the milter records the pending acceptance but logs nothing; the transport
/// envelope and the acceptance are logged together once the envelope is seen queued.
/// Window 1: a retry with a newly built receipt finds the staged one and records nothing.
fn acceptance_is_logged_once_after_queue(b: &Backend) {
    let store = &b.store;
    store.record_accepted(&accepted()).unwrap();
    assert!(kinds(&**store).is_empty(), "nothing logged before queue");
    assert_eq!(store.tracking_for(PEC_ID).unwrap().len(), 1);

    let first = out(&acceptance_key(PEC_ID), "acc1@pec.example.it");
    let effect = |id: &str| Effect::Acceptance {
        pec_id: PEC_ID.into(),
        receipt_id: id.into(),
        at: later(5),
    };
    assert_eq!(
        store
            .stage_outbound(&first, &effect("acc1@pec.example.it"))
            .unwrap(),
        Staged::New
    );
    // The crash: never injected, never marked. The retry (another process) builds anew.
    let again = b.reopen();
    let second = out(&acceptance_key(PEC_ID), "acc2@pec.example.it");
    match again
        .stage_outbound(&second, &effect("acc2@pec.example.it"))
        .unwrap()
    {
        Staged::Existing(o) => {
            assert_eq!(o.message_id, "acc1@pec.example.it");
            assert_eq!(o.data, first.data);
            assert_eq!(o.rcpt_to, first.rcpt_to);
            assert_eq!(o.injected_at, None);
        }
        other => panic!("{other:?}"),
    }
    let k = kinds(&*again);
    assert_eq!(count(&k, MessageKind::TransportEnvelope), 1, "{k:?}");
    assert_eq!(count(&k, MessageKind::Acceptance), 1, "{k:?}");
    let events = again.events_for(PEC_ID).unwrap();
    assert_eq!(
        events[1].related_ids,
        vec!["acc1@pec.example.it".to_string()]
    );
    assert_eq!(events[0].queue_id.as_deref(), Some("4AbCd"));
    assert_eq!(again.pending_acceptance(PEC_ID).unwrap(), None);
}
both!(acceptance_is_logged_once_after_queue);

/// The sweep takes a staged row only once its last attempt is older than the grace, then
/// not again until that passes once more; an injected row never.
fn the_sweep_claims_unsent_rows(b: &Backend) {
    let store = &b.store;
    store.record_accepted(&accepted()).unwrap();
    let row = out(&acceptance_key(PEC_ID), "acc1@pec.example.it");
    let effect = Effect::Acceptance {
        pec_id: PEC_ID.into(),
        receipt_id: "acc1@pec.example.it".into(),
        at: at(),
    };
    assert_eq!(store.stage_outbound(&row, &effect).unwrap(), Staged::New);
    assert!(store.claim_unsent(at(), later(1), 10).unwrap().is_empty());
    let got = store.claim_unsent(later(31), later(31), 10).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, row.data);
    // Claimed at +31: another sweeper with the same cutoff gets nothing.
    assert!(b
        .reopen()
        .claim_unsent(later(31), later(32), 10)
        .unwrap()
        .is_empty());
    store.outbound_injected(&row.key, later(33)).unwrap();
    assert!(store
        .claim_unsent(later(1000), later(1000), 10)
        .unwrap()
        .is_empty());
    assert_eq!(
        store.outbound(&row.key).unwrap().unwrap().injected_at,
        Some(later(33))
    );
    // Purged once old; a pending row stays.
    assert_eq!(store.purge_outbox(later(34)).unwrap(), 1);
    assert_eq!(store.outbound(&row.key).unwrap(), None);
}
both!(the_sweep_claims_unsent_rows);

/// A delivery notice staged with its claim: a second notice (another Message-ID) for the
/// same (envelope, recipient) records nothing; a claim recorded without an outbox row (an
/// older version) stops a new notice too.
fn a_delivery_notice_is_claimed_once(b: &Backend) {
    let store = &b.store;
    let event = |id: &str| LogEvent {
        pec_id: PEC_ID.into(),
        at: at(),
        kind: EventKind::Issued(MessageKind::Delivery(
            pec::message::kind::ReceiptType::Completa,
        )),
        sender: SENDER.into(),
        recipients: vec![(BOB.into(), RecipientType::Certificato)],
        subject: "s".into(),
        related_ids: vec![id.into()],
        provider: PROVIDER.into(),
        queue_id: None,
        outcome: "ok".into(),
        reason: None,
    };
    let effect = |id: &str| Effect::DeliveryNotice {
        recipient: BOB.to_uppercase(),
        event: event(id),
    };
    let key = delivery_key(PEC_ID, BOB);
    assert_eq!(
        store
            .stage_outbound(&out(&key, "n1@x"), &effect("n1@x"))
            .unwrap(),
        Staged::New
    );
    assert!(matches!(
        store.stage_outbound(&out(&key, "n2@x"), &effect("n2@x")).unwrap(),
        Staged::Existing(o) if o.message_id == "n1@x"
    ));
    assert_eq!(
        store.delivery_notice(PEC_ID, BOB).unwrap().as_deref(),
        Some("n1@x")
    );
    assert_eq!(kinds(&**store).len(), 1);

    let other = "dave@pec.example.net";
    let mut e = event("n3@x");
    e.recipients = vec![(other.into(), RecipientType::Certificato)];
    assert!(store.claim_delivery_notice(other, &e).unwrap());
    let staged = store
        .stage_outbound(
            &out(&delivery_key(PEC_ID, other), "n4@x"),
            &Effect::DeliveryNotice {
                recipient: other.into(),
                event: event("n4@x"),
            },
        )
        .unwrap();
    assert_eq!(staged, Staged::Claimed);
    assert_eq!(store.outbound(&delivery_key(PEC_ID, other)).unwrap(), None);
    assert_eq!(kinds(&**store).len(), 2);
}
both!(a_delivery_notice_is_claimed_once);

/// Presa in carico: verified rows, the event and the same-provider tracking move, with
/// the message, once.
fn a_presa_in_carico_is_staged_once(b: &Backend) {
    let store = &b.store;
    store.record_accepted(&accepted()).unwrap();
    let rcpts = vec![BOB.to_string()];
    let key = pec::store::outbox::take_charge_key(PEC_ID, &rcpts);
    let effect = |id: &str| Effect::TakenInCharge {
        recipients: rcpts.clone(),
        event: LogEvent {
            pec_id: PEC_ID.into(),
            at: at(),
            kind: EventKind::Issued(MessageKind::TakeCharge),
            sender: SENDER.into(),
            recipients: vec![(BOB.into(), RecipientType::Certificato)],
            subject: "s".into(),
            related_ids: vec![id.into()],
            provider: PROVIDER.into(),
            queue_id: None,
            outcome: "ok".into(),
            reason: None,
        },
        tracking: true,
    };
    assert_eq!(
        store
            .stage_outbound(&out(&key, "t1@x"), &effect("t1@x"))
            .unwrap(),
        Staged::New
    );
    assert!(store.is_verified(PEC_ID, BOB).unwrap());
    assert_eq!(
        store.tracking_for(PEC_ID).unwrap()[0].state,
        pec::store::TrackingState::TakenInCharge
    );
    assert!(matches!(
        store.stage_outbound(&out(&key, "t2@x"), &effect("t2@x")).unwrap(),
        Staged::Existing(o) if o.message_id == "t1@x"
    ));
    assert_eq!(count(&kinds(&**store), MessageKind::TakeCharge), 1);
}
both!(a_presa_in_carico_is_staged_once);

fn deliveries_record_intent_then_done(b: &Backend) {
    let store = &b.store;
    let rcpts = vec![BOB.to_string(), "Dave@pec.example.net".to_string()];
    assert_eq!(
        store.begin_deliveries("m@x", &rcpts, ME, at()).unwrap(),
        vec![None, None]
    );
    assert_eq!(
        b.reopen()
            .begin_deliveries("m@x", &rcpts, ME, at())
            .unwrap(),
        vec![Some(DeliveryMark::Intent), Some(DeliveryMark::Intent)]
    );
    store
        .deliveries_done("m@x", &["dave@PEC.example.net".to_string()], later(1))
        .unwrap();
    assert_eq!(
        store.begin_deliveries("m@x", &rcpts, ME, later(2)).unwrap(),
        vec![Some(DeliveryMark::Intent), Some(DeliveryMark::Done)]
    );
    // Another message, same recipient: independent.
    assert_eq!(
        store
            .begin_deliveries("n@x", &rcpts[..1], ME, later(2))
            .unwrap(),
        vec![None]
    );
    // An intent found again is taken anew (its time moves to later(2)): kept by a purge
    // of what is older than later(2), gone with one of what is older than later(3).
    assert_eq!(store.purge_outbox(later(2)).unwrap(), 1);
    assert_eq!(store.purge_outbox(later(3)).unwrap(), 2);
    assert_eq!(
        store.begin_deliveries("m@x", &rcpts, ME, later(3)).unwrap(),
        vec![None, None]
    );
}
both!(deliveries_record_intent_then_done);

/// The owner of the intents of the tests above: a node on another host.
const ME: &str = "node-a.example:4242";

/// This host, for owners whose liveness is judged by their process.
fn this_host() -> String {
    let me = pec::store::ledger::node_owner();
    me.rsplit_once(':').unwrap().0.to_string()
}

/// Across nodes: an intent of another live owner is "being delivered now" (and left
/// alone); one of a dead owner (this host, process gone), of no owner, or older than the
/// lease is taken over, and then belongs to the taker.
fn an_intent_of_a_live_node_is_busy_a_dead_ones_is_taken_over(b: &Backend) {
    use pec::store::outbox::DELIVERY_LEASE_SECS;
    let store = &b.store;
    let other = b.reopen();
    let one = |s: &Arc<dyn pec::store::LogStore>, id: &str, owner: &str, t: Instant| {
        s.begin_deliveries(id, &[BOB.to_string()], owner, t)
            .unwrap()[0]
    };
    // Another host, within the lease: busy, for as long as the lease lasts.
    assert_eq!(one(store, "a@x", "node-a.example:1", at()), None);
    assert_eq!(
        one(&other, "a@x", "node-b.example:1", later(1)),
        Some(DeliveryMark::Busy)
    );
    assert_eq!(
        one(
            &other,
            "a@x",
            "node-b.example:1",
            later(DELIVERY_LEASE_SECS - 1)
        ),
        Some(DeliveryMark::Busy)
    );
    // The owner itself (a retry in the same process): an unrecorded outcome.
    assert_eq!(
        one(store, "a@x", "node-a.example:1", later(2)),
        Some(DeliveryMark::Intent)
    );
    // Past the lease (counted from the last taking, later(2)): taken over, then held by
    // the taker against the first owner.
    let expired = later(2 + DELIVERY_LEASE_SECS);
    assert_eq!(
        one(&other, "a@x", "node-b.example:1", expired),
        Some(DeliveryMark::Intent)
    );
    assert_eq!(
        one(
            store,
            "a@x",
            "node-a.example:1",
            Instant::from_unix(expired.unix() + 1)
        ),
        Some(DeliveryMark::Busy)
    );

    // This host: alive while its process exists, whatever the age within the lease.
    let host = this_host();
    let live = format!("{host}:{}", std::process::id());
    let dead = format!("{host}:999999999");
    assert_eq!(one(store, "b@x", &live, at()), None);
    assert_eq!(
        one(&other, "b@x", &format!("{host}:1"), later(60)),
        Some(DeliveryMark::Busy)
    );
    assert_eq!(one(store, "c@x", &dead, at()), None);
    assert_eq!(
        one(&other, "c@x", &live, later(1)),
        Some(DeliveryMark::Intent)
    );
    assert_eq!(
        one(store, "c@x", &dead, later(2)),
        Some(DeliveryMark::Busy),
        "taken over"
    );

    // A completion is a completion for everyone; other recipients are independent.
    store
        .deliveries_done("b@x", &[BOB.to_string()], later(61))
        .unwrap();
    assert_eq!(
        one(&other, "b@x", "node-b.example:1", later(62)),
        Some(DeliveryMark::Done)
    );
    assert_eq!(
        other
            .begin_deliveries(
                "a@x",
                &["dave@pec.example.net".to_string(), BOB.to_string()],
                "node-c.example:1",
                later(3)
            )
            .unwrap(),
        vec![None, Some(DeliveryMark::Busy)]
    );
}
both!(an_intent_of_a_live_node_is_busy_a_dead_ones_is_taken_over);

/// Intents recorded before owners were (migration 10) count as dead: taken over.
#[test]
fn an_intent_without_owner_is_taken_over() {
    let b = Backend::sqlite();
    b.store
        .begin_deliveries("m@x", &[BOB.to_string()], ME, at())
        .unwrap();
    let conn = rusqlite::Connection::open(b.path.as_ref().unwrap()).unwrap();
    conn.execute("UPDATE deliveries SET owner = NULL", [])
        .unwrap();
    let other = b.reopen();
    let got = |owner: &str, t: Instant| {
        other
            .begin_deliveries("m@x", &[BOB.to_string()], owner, t)
            .unwrap()
    };
    assert_eq!(
        got("node-b.example:1", later(1)),
        vec![Some(DeliveryMark::Intent)]
    );
    assert_eq!(got(ME, later(2)), vec![Some(DeliveryMark::Busy)]);
}

// ---- the delivery point -------------------------------------------------------------

/// Dovecot: stores every message (one copy per call and recipient); `crash` makes the
/// call die (panic) right after storing, as `pec serve` killed between Dovecot's 250 and
/// recording it.
#[derive(Default)]
struct Mailbox {
    copies: Mutex<Vec<(String, Vec<u8>)>>,
    crash: std::sync::atomic::AtomicBool,
}

impl Mailbox {
    fn copies_of(&self, rcpt: &str) -> usize {
        self.copies
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| r == rcpt)
            .count()
    }
}

impl LocalDelivery for Mailbox {
    fn deliver<'a>(
        &'a self,
        _from: &'a str,
        rcpt_to: &'a [String],
        data: &'a [u8],
        _eight_bit: bool,
    ) -> BoxFuture<'a, Vec<Reply>> {
        Box::pin(async move {
            for r in rcpt_to {
                self.copies.lock().unwrap().push((r.clone(), data.to_vec()));
            }
            if self.crash.load(Ordering::SeqCst) {
                panic!("killed after Dovecot's 250");
            }
            rcpt_to
                .iter()
                .map(|r| Reply::new(250, format!("2.0.0 <{r}> Saved")))
                .collect()
        })
    }
}

/// `doveadm search`: looks in the [`Mailbox`]; `broken` makes the check fail.
struct Probe(Arc<Mailbox>, bool);

impl MailboxProbe for Probe {
    fn holds<'a>(
        &'a self,
        user: &'a str,
        id: &'a pec::delivery::dedup::Identity,
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            if self.1 {
                return Err("doveadm: cannot connect".into());
            }
            Ok(self
                .0
                .copies
                .lock()
                .unwrap()
                .iter()
                .any(|(r, d)| r == user && pec::delivery::dedup::identity(d).as_ref() == Some(id)))
        })
    }
}

/// Postfix's reinjection listener: 0 accepts, 1 refuses (4xx), 2 accepts then the
/// process dies (panic) before the notice is marked injected; 3 accepts as many messages
/// as `got` holds fewer than `accept`, then refuses (4xx).
#[derive(Default)]
struct Postfix {
    got: Mutex<Vec<Vec<u8>>>,
    mode: AtomicU8,
    accept: std::sync::atomic::AtomicUsize,
}

impl Injector for Postfix {
    fn inject<'a>(
        &'a self,
        _from: &'a str,
        _rcpt_to: &'a [String],
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<(), InjectError>> {
        Box::pin(async move {
            let mode = match self.mode.load(Ordering::SeqCst) {
                3 if self.got.lock().unwrap().len() >= self.accept.load(Ordering::SeqCst) => 1,
                3 => 0,
                m => m,
            };
            match mode {
                1 => Err(InjectError::Temporary {
                    addr: "test".into(),
                    reason: "421 try later".into(),
                }),
                m => {
                    self.got.lock().unwrap().push(message.to_vec());
                    if m == 2 {
                        panic!("killed after the injection");
                    }
                    Ok(())
                }
            }
        })
    }
}

impl Postfix {
    fn message_ids(&self) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|m| pec::delivery::dedup::message_id(m).unwrap())
            .collect()
    }
}

fn index() -> ProviderIndex {
    ProviderIndex::from_records(vec![ProviderRecord {
        info: ProviderInfo {
            name: PROVIDER.into(),
            mail_receipt: "ricevute@pec.example.it".into(),
            managed_domains: vec!["pec.example.it".into()],
        },
        certificates: vec![pki().signer.certificate_der().to_vec()],
    }])
}

/// A delivery point on `store` (a new process after a crash: new objects, same store).
/// A delivery point on `store`, delivering through `dovecot`, at the tests' fixed clock.
fn bare_point(
    store: Arc<dyn Store>,
    dovecot: Arc<dyn LocalDelivery>,
    postfix: &Arc<Postfix>,
    ids: &str,
) -> DeliveryPoint {
    let signer: Arc<dyn Signer> = pki().signer.clone();
    DeliveryPoint::new(
        store,
        postfix.clone(),
        dovecot,
        Arc::new(IndexHandle::new(index())),
        issuer(),
        signer,
        Arc::new(SequentialIds::new(ids, "pec.example.it")),
    )
    .with_clock(Arc::new(FixedClock::new(later(8))))
}

fn point(
    store: Arc<dyn Store>,
    mailbox: &Arc<Mailbox>,
    postfix: &Arc<Postfix>,
    probe_broken: bool,
    ids: &str,
) -> Arc<DeliveryPoint> {
    Arc::new(
        bare_point(store, mailbox.clone(), postfix, ids)
            .with_duplicate_check(Some(Arc::new(Probe(mailbox.clone(), probe_broken)))),
    )
}

fn verified(store: &dyn Store) {
    let event = LogEvent {
        pec_id: PEC_ID.into(),
        at: at(),
        kind: EventKind::Issued(MessageKind::TakeCharge),
        sender: SENDER.into(),
        recipients: Vec::new(),
        subject: String::new(),
        related_ids: vec!["take-charge@pec.example.net".into()],
        provider: "test".into(),
        queue_id: None,
        outcome: "ok".into(),
        reason: None,
    };
    store
        .record_verified(PEC_ID, &[BOB.into()], &event)
        .unwrap();
}

fn tx() -> Transaction {
    Transaction {
        mail_from: SENDER.into(),
        rcpt_to: vec![BOB.into()],
        eight_bit: false,
        data: envelope().into(),
    }
}

/// Runs one delivery in a task of its own; `None` when it "crashed".
async fn deliver(dp: &Arc<DeliveryPoint>) -> Option<Vec<Reply>> {
    let dp = dp.clone();
    tokio::spawn(async move { dp.deliver(&tx()).await })
        .await
        .ok()
}

fn deliveries(store: &dyn Store) -> usize {
    count(
        &kinds(store),
        MessageKind::Delivery(pec::message::kind::ReceiptType::Completa),
    ) + count(
        &kinds(store),
        MessageKind::Delivery(pec::message::kind::ReceiptType::Breve),
    ) + count(
        &kinds(store),
        MessageKind::Delivery(pec::message::kind::ReceiptType::Sintetica),
    )
}

/// Window 2: killed between Dovecot's 250 and recording it; Postfix retries on a new
/// process: the mailbox is asked, holds the message: no second copy, one receipt.
fn killed_after_dovecot_stored_no_second_copy(b: &Backend) {
    runtime().block_on(async {
        verified(&*b.store);
        let (mailbox, postfix) = (Arc::new(Mailbox::default()), Arc::new(Postfix::default()));
        mailbox.crash.store(true, Ordering::SeqCst);
        let first = point(b.store.clone(), &mailbox, &postfix, false, "opec1.n1");
        assert!(deliver(&first).await.is_none(), "the first attempt dies");
        drop(first);
        assert_eq!(mailbox.copies_of(BOB), 1);
        assert!(postfix.got.lock().unwrap().is_empty());

        mailbox.crash.store(false, Ordering::SeqCst);
        let retry = point(b.reopen(), &mailbox, &postfix, false, "opec1.n2");
        let replies = deliver(&retry).await.unwrap();
        assert_eq!(replies[0].code, 250, "{replies:?}");
        assert_eq!(mailbox.copies_of(BOB), 1, "stored once");
        assert_eq!(postfix.message_ids().len(), 1, "one receipt");
        assert_eq!(deliveries(&*b.store), 1);

        // Postfix retries once more (our 250 was lost): recorded done, nothing asked.
        let again = point(b.reopen(), &mailbox, &postfix, true, "opec1.n3");
        let replies = deliver(&again).await.unwrap();
        assert_eq!(replies[0].code, 250, "{replies:?}");
        assert_eq!(mailbox.copies_of(BOB), 1);
        assert_eq!(postfix.message_ids().len(), 1);
        assert_eq!(deliveries(&*b.store), 1);
    });
}
both!(killed_after_dovecot_stored_no_second_copy);

/// Fail safe: when the mailbox cannot be asked, the message is delivered again (a copy,
/// never a loss); the receipt still goes out once.
fn an_unanswerable_check_delivers_again(b: &Backend) {
    runtime().block_on(async {
        verified(&*b.store);
        let (mailbox, postfix) = (Arc::new(Mailbox::default()), Arc::new(Postfix::default()));
        mailbox.crash.store(true, Ordering::SeqCst);
        let first = point(b.store.clone(), &mailbox, &postfix, true, "opec1.n1");
        assert!(deliver(&first).await.is_none());
        mailbox.crash.store(false, Ordering::SeqCst);
        let retry = point(b.reopen(), &mailbox, &postfix, true, "opec1.n2");
        assert_eq!(deliver(&retry).await.unwrap()[0].code, 250);
        assert_eq!(mailbox.copies_of(BOB), 2);
        assert_eq!(postfix.message_ids().len(), 1);
        assert_eq!(deliveries(&*b.store), 1);
    });
}
both!(an_unanswerable_check_delivers_again);

/// Window 1 at the delivery point: the receipt is staged with its claim; the injection
/// fails (4xx to Postfix) or the process dies right after it. The retry builds no new
/// receipt; the sweep injects the staged bytes (same Message-ID). A receipt injected twice
/// that way is stored once in the sender's mailbox.
fn killed_around_the_injection_one_receipt(b: &Backend) {
    runtime().block_on(async {
        verified(&*b.store);
        let (mailbox, postfix) = (Arc::new(Mailbox::default()), Arc::new(Postfix::default()));
        postfix.mode.store(1, Ordering::SeqCst);
        let first = point(b.store.clone(), &mailbox, &postfix, false, "opec1.n1");
        let replies = deliver(&first).await.unwrap();
        assert_eq!(replies[0].code, 451, "{replies:?}");
        assert!(postfix.got.lock().unwrap().is_empty());
        let staged = b
            .store
            .outbound(&delivery_key(PEC_ID, BOB))
            .unwrap()
            .expect("staged");
        assert_eq!(staged.injected_at, None);

        postfix.mode.store(0, Ordering::SeqCst);
        let retry = point(b.reopen(), &mailbox, &postfix, false, "opec1.n2");
        assert_eq!(deliver(&retry).await.unwrap()[0].code, 250);
        assert!(
            postfix.got.lock().unwrap().is_empty(),
            "no new receipt built"
        );
        assert_eq!(mailbox.copies_of(BOB), 1);

        let store: Arc<dyn Store> = b.reopen();
        let clock = FixedClock::new(later(8 + 31));
        let sent = pec::outbox::sweep_once(&store, &*postfix, &clock)
            .await
            .unwrap();
        assert_eq!(sent, 1);
        assert_eq!(postfix.message_ids(), vec![staged.message_id.clone()]);
        assert_eq!(postfix.got.lock().unwrap()[0], staged.data);
        assert_eq!(
            pec::outbox::sweep_once(&store, &*postfix, &clock)
                .await
                .unwrap(),
            0
        );
        assert_eq!(deliveries(&*b.store), 1);

        // Killed after the injection, before the mark: the sweep sends the same bytes
        // again; delivered to the sender, they are stored once.
        let other = "dave@pec.example.net";
        let mut t = tx();
        t.rcpt_to = vec![other.into()];
        b.store
            .record_verified(
                PEC_ID,
                &[other.into()],
                &b.store.events_for(PEC_ID).unwrap()[0],
            )
            .unwrap();
        postfix.mode.store(2, Ordering::SeqCst);
        let dp = point(b.reopen(), &mailbox, &postfix, false, "opec1.n3");
        let crashed = tokio::spawn(async move { dp.deliver(&t).await }).await;
        assert!(crashed.is_err());
        postfix.mode.store(0, Ordering::SeqCst);
        let clock = FixedClock::new(later(8 + 62));
        assert_eq!(
            pec::outbox::sweep_once(&store, &*postfix, &clock)
                .await
                .unwrap(),
            1
        );
        let ids = postfix.message_ids();
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[1], ids[2], "the same receipt, not a new one");
        // The sender's delivery point gets both copies.
        let sender_box = Arc::new(Mailbox::default());
        let sender_point = point(b.reopen(), &sender_box, &postfix, false, "opec1.s");
        let got: Vec<Vec<u8>> = postfix.got.lock().unwrap().clone();
        for data in got.into_iter().skip(1) {
            let t = Transaction {
                mail_from: String::new(),
                rcpt_to: vec![SENDER.into()],
                eight_bit: false,
                data: data.into(),
            };
            assert_eq!(sender_point.deliver(&t).await[0].code, 250);
        }
        assert_eq!(sender_box.copies_of(SENDER), 1);
    });
}
both!(killed_around_the_injection_one_receipt);

// ---- two nodes on one store ---------------------------------------------------------

/// Dovecot that holds the message until released: the first node "inside Dovecot".
struct Gate {
    mailbox: Arc<Mailbox>,
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl LocalDelivery for Gate {
    fn deliver<'a>(
        &'a self,
        from: &'a str,
        rcpt_to: &'a [String],
        data: &'a [u8],
        eight_bit: bool,
    ) -> BoxFuture<'a, Vec<Reply>> {
        Box::pin(async move {
            self.entered.notify_one();
            self.release.notified().await;
            self.mailbox.deliver(from, rcpt_to, data, eight_bit).await
        })
    }
}

/// A delivery point of node `owner` on `store`, delivering through `dovecot`.
fn node(
    store: Arc<dyn Store>,
    dovecot: Arc<dyn LocalDelivery>,
    mailbox: &Arc<Mailbox>,
    postfix: &Arc<Postfix>,
    ids: &str,
    owner: &str,
) -> Arc<DeliveryPoint> {
    Arc::new(
        bare_point(store, dovecot, postfix, ids)
            .with_duplicate_check(Some(Arc::new(Probe(mailbox.clone(), false))))
            .with_owner(owner),
    )
}

/// Two nodes get the same message for the same mailbox at once (two Postfix queue files):
/// while the first is inside Dovecot, the second answers 451 and stores nothing; Postfix's
/// retry after the first finished gets "already delivered". One copy, one receipt.
fn two_nodes_deliver_one_message_once(b: &Backend) {
    runtime().block_on(async {
        verified(&*b.store);
        let (mailbox, postfix) = (Arc::new(Mailbox::default()), Arc::new(Postfix::default()));
        let gate = Arc::new(Gate {
            mailbox: mailbox.clone(),
            entered: tokio::sync::Notify::new(),
            release: tokio::sync::Notify::new(),
        });
        let a = node(
            b.store.clone(),
            gate.clone(),
            &mailbox,
            &postfix,
            "opec1.a",
            "node-a.example:1",
        );
        let second = node(
            b.reopen(),
            mailbox.clone(),
            &mailbox,
            &postfix,
            "opec1.b",
            "node-b.example:2",
        );

        let first = tokio::spawn({
            let a = a.clone();
            async move { a.deliver(&tx()).await }
        });
        gate.entered.notified().await;
        let replies = deliver(&second).await.unwrap();
        assert_eq!(replies[0].code, 451, "{replies:?}");
        assert!(
            replies[0].text.contains("being delivered now"),
            "{replies:?}"
        );
        assert_eq!(
            mailbox.copies_of(BOB),
            0,
            "nothing stored by the second node"
        );
        assert!(
            postfix.got.lock().unwrap().is_empty(),
            "no notice for a 451"
        );

        gate.release.notify_one();
        let replies = first.await.unwrap();
        assert_eq!(replies[0].code, 250, "{replies:?}");
        let replies = deliver(&second).await.unwrap();
        assert_eq!(replies[0].code, 250, "{replies:?}");
        assert!(replies[0].text.contains("Already delivered"), "{replies:?}");
        assert_eq!(mailbox.copies_of(BOB), 1, "stored once");
        assert_eq!(postfix.message_ids().len(), 1, "one receipt");
        assert_eq!(deliveries(&*b.store), 1);
    });
}
both!(two_nodes_deliver_one_message_once);
// ---- every other generated message (non-acceptance, timers, log replies, virus notices,
// anomaly envelopes, arrival notices) -------------------------------------------------

use crate::two_providers;

use pec::doubles::MarkerAntivirus;
use pec::message::kind::Timeout;
use pec::outbox::sweep_once;
use pec::reception::{AfterQueue, Reception};
use pec::smtp::FilterReply;
use pec::store::outbox::{
    anomaly_key, arrival_key, log_reply_key, non_acceptance_key, timer_key, virus_key,
    virus_non_delivery_key,
};
use pec::store::{ArrivalNotice, LogRequest, MailboxPolicy, Refused, TrackingState};
use pec::timers::{Timers, CLAIM_LEASE};

/// A sweep pass at `at` plus the grace.
async fn sweep_after(store: Arc<dyn Store>, postfix: &Postfix, at: Instant) -> usize {
    let clock = FixedClock::new(Instant::from_unix(at.unix() + 31));
    sweep_once(&store, postfix, &clock).await.unwrap()
}

/// Non-acceptance: the refusal's records, the quarantined message and the notice, in one
/// transaction; the key found staged records nothing more.
fn a_refusal_is_recorded_with_its_notice(b: &Backend) {
    let store = &b.store;
    let refused = |id: &str| Refused {
        auth_at: None,
        pec_id: PEC_ID.into(),
        queue_id: Some("4AbCd".into()),
        at: at(),
        cert: cert(),
        kind: MessageKind::NonAcceptanceVirus,
        reason: "Eicar-Test-Signature".into(),
        notice_id: id.into(),
        quarantine: Some(b"infected".to_vec()),
        provider: PROVIDER.into(),
        login: None,
    };
    let key = non_acceptance_key(PEC_ID);
    assert_eq!(
        store
            .stage_outbound(
                &out(&key, "na1@x"),
                &Effect::Refused(Box::new(refused("na1@x")))
            )
            .unwrap(),
        Staged::New
    );
    assert!(matches!(
        b.reopen()
            .stage_outbound(&out(&key, "na2@x"), &Effect::Refused(Box::new(refused("na2@x"))))
            .unwrap(),
        Staged::Existing(o) if o.message_id == "na1@x"
    ));
    let events = store.events_for(PEC_ID).unwrap();
    let k: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        k,
        vec![
            EventKind::Issued(MessageKind::NonAcceptanceVirus),
            EventKind::Quarantined
        ]
    );
    assert_eq!(events[0].related_ids, vec!["na1@x".to_string()]);
    assert_eq!(events[0].outcome, "virus");
    assert_eq!(
        store.quarantined(PEC_ID).unwrap(),
        vec![b"infected".to_vec()]
    );
}
both!(a_refusal_is_recorded_with_its_notice);

/// Log reply: the request closed and its event with the reply; a retry finds the key, a
/// request answered without an outbox row (an older version) stops a new reply.
fn a_log_reply_is_staged_once(b: &Backend) {
    let store = &b.store;
    let request = |id: &str| LogRequest {
        id: id.into(),
        owner: SENDER.into(),
        address: "registro@pec.example.it".into(),
        at: at(),
        period: Ok((at(), later(60))),
        subject: "registro".into(),
        queue_id: None,
    };
    let event = |id: &str, kind: EventKind, related: &str| LogEvent {
        pec_id: id.into(),
        at: later(5),
        kind,
        sender: SENDER.into(),
        recipients: Vec::new(),
        subject: "registro".into(),
        related_ids: vec![related.into()],
        provider: PROVIDER.into(),
        queue_id: None,
        outcome: "ok".into(),
        reason: None,
    };
    for id in ["req1@pec.example.it", "req2@pec.example.it"] {
        assert!(store
            .claim_log_request(
                &request(id),
                10,
                at(),
                &event(id, EventKind::LogRequest, "")
            )
            .unwrap());
    }
    let id = "req1@pec.example.it";
    let reply = |r: &str| Effect::LogReply(event(id, EventKind::LogExtract, r));
    let key = log_reply_key(id);
    assert_eq!(
        store
            .stage_outbound(&out(&key, "r1@x"), &reply("r1@x"))
            .unwrap(),
        Staged::New
    );
    assert!(matches!(
        b.reopen().stage_outbound(&out(&key, "r2@x"), &reply("r2@x")).unwrap(),
        Staged::Existing(o) if o.message_id == "r1@x"
    ));
    assert_eq!(store.log_request(id).unwrap().map(|(_, a)| a), Some(true));
    let extracts = |id: &str| {
        store
            .events_for(id)
            .unwrap()
            .iter()
            .filter(|e| e.kind == EventKind::LogExtract)
            .count()
    };
    assert_eq!(extracts(id), 1);

    let id2 = "req2@pec.example.it";
    assert!(store
        .log_request_answered(&event(id2, EventKind::LogExtract, "r3@x"))
        .unwrap());
    let staged = store
        .stage_outbound(
            &out(&log_reply_key(id2), "r4@x"),
            &Effect::LogReply(event(id2, EventKind::LogExtract, "r4@x")),
        )
        .unwrap();
    assert_eq!(staged, Staged::Claimed);
    assert_eq!(extracts(id2), 1);
}
both!(a_log_reply_is_staged_once);

/// Mancata consegna per virus to our user: the tracking row failed and the event, with
/// the notice, once.
fn a_virus_non_delivery_is_staged_once(b: &Backend) {
    let store = &b.store;
    store.record_accepted(&accepted()).unwrap();
    let effect = |id: &str| Effect::Tracking {
        updates: vec![(BOB.to_uppercase(), TrackingState::Failed)],
        event: LogEvent {
            pec_id: PEC_ID.into(),
            at: at(),
            kind: EventKind::Issued(MessageKind::NonDeliveryVirus),
            sender: SENDER.into(),
            recipients: vec![(BOB.into(), RecipientType::Certificato)],
            subject: "s".into(),
            related_ids: vec![id.into()],
            provider: PROVIDER.into(),
            queue_id: None,
            outcome: "virus".into(),
            reason: Some("Eicar".into()),
        },
    };
    let key = virus_non_delivery_key(PEC_ID, BOB);
    assert_eq!(
        store
            .stage_outbound(&out(&key, "v1@x"), &effect("v1@x"))
            .unwrap(),
        Staged::New
    );
    assert_eq!(
        store.tracking_for(PEC_ID).unwrap()[0].state,
        TrackingState::Failed
    );
    assert!(matches!(
        b.reopen().stage_outbound(&out(&key, "v2@x"), &effect("v2@x")).unwrap(),
        Staged::Existing(o) if o.message_id == "v1@x"
    ));
    assert_eq!(count(&kinds(&**store), MessageKind::NonDeliveryVirus), 1);
}
both!(a_virus_non_delivery_is_staged_once);

/// Timers: the 12 h notice is staged with its record, then the process is killed right
/// after the injection, before the mark. A new process, even after the claim's lease,
/// builds none (the row has its notice); the sweep injects the same bytes; the log has
/// the notice once.
fn a_timer_notice_is_staged_once(b: &Backend) {
    runtime().block_on(async {
        let store = &b.store;
        store.record_accepted(&accepted()).unwrap();
        assert!(store
            .acceptance_emitted(PEC_ID, "acc@pec.example.it", at())
            .unwrap());
        let postfix = Arc::new(Postfix::default());
        let timers = |s: Arc<dyn Store>, ids: &str, now: Instant| {
            let signer: Arc<dyn Signer> = pki().signer.clone();
            Arc::new(Timers::new(
                s,
                postfix.clone(),
                issuer(),
                signer,
                Arc::new(SequentialIds::new(ids, "pec.example.it")),
                Arc::new(FixedClock::new(now)),
            ))
        };
        let due = later(13 * 3600);
        postfix.mode.store(2, Ordering::SeqCst);
        let first = timers(store.clone(), "opec1.t1", due);
        let crashed = tokio::spawn(async move { first.run_once(due).await }).await;
        assert!(crashed.is_err(), "killed after the injection");
        let staged = store
            .outbound(&timer_key(PEC_ID, BOB, Timeout::Hours12))
            .unwrap()
            .expect("staged");
        assert_eq!(staged.injected_at, None);

        postfix.mode.store(0, Ordering::SeqCst);
        let next = Instant::from_unix(due.unix() + CLAIM_LEASE + 60);
        let report = timers(b.reopen(), "opec1.t2", next)
            .run_once(next)
            .await
            .unwrap();
        assert!(
            report.sent.is_empty() && report.failed.is_empty(),
            "{report:?}"
        );
        assert_eq!(postfix.got.lock().unwrap().len(), 1);

        assert_eq!(sweep_after(b.reopen(), &postfix, due).await, 1);
        assert_eq!(sweep_after(b.reopen(), &postfix, next).await, 0);
        let got = postfix.got.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], staged.data);
        assert_eq!(got[1], staged.data, "the same notice, not a new one");
        let events: Vec<LogEvent> = store
            .events_for(PEC_ID)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EventKind::Issued(MessageKind::Timeout(Timeout::Hours12)))
            .collect();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].related_ids, vec![staged.message_id.clone()]);
    });
}
both!(a_timer_notice_is_staged_once);

/// The reception point (we are B) on the backend's store.
fn after_queue(store: Arc<dyn Store>, postfix: &Arc<Postfix>, ids: &str) -> AfterQueue {
    use two_providers::Provider;
    let we = Provider::B;
    AfterQueue::new(
        store,
        postfix.clone(),
        we.issuer(),
        we.signer(),
        Arc::new(SequentialIds::new(ids, we.domain())),
        Reception {
            chain: None,
            index: Arc::new(IndexHandle::new(two_providers::index())),
            antivirus: Arc::new(MarkerAntivirus {
                marker: two_providers::MARKER.to_vec(),
                virus_name: "PEC-Test-Virus".into(),
                unreachable: false,
            }),
            domains: vec![we.domain().into()],
            mail_receipt: we.mail_receipt(),
            default_policy: MailboxPolicy::Anomaly,
        },
    )
    .with_clock(Arc::new(FixedClock::new(two_providers::now())))
}

/// Anomaly envelope: the injection fails (4xx to Postfix) after staging; Postfix retries
/// the same queue file on a new process: no second envelope is built; the sweep injects
/// the staged one, once; its log record is there once. The same message in another
/// queue file is another arrival, with an envelope of its own.
fn an_anomaly_envelope_is_built_once_per_queue_file(b: &Backend) {
    runtime().block_on(async {
        let data = two_providers::fixture("ordinary.eml");
        let rcpt = ["bob@pec.example.net"];
        let tx = |queue: &str| {
            let mut t = two_providers::Rx::tx("someone@example.org", &rcpt, &data);
            t.queue_id = Some(queue.into());
            t
        };
        let postfix = Arc::new(Postfix::default());
        postfix.mode.store(1, Ordering::SeqCst);
        let first = after_queue(b.store.clone(), &postfix, "opec1.rx1");
        assert!(matches!(
            first.filter(&tx("4TESTQ")).await,
            FilterReply::Tempfail(_)
        ));
        let key = anomaly_key(Some("4TESTQ"), &data, &["BOB@pec.example.net".into()]);
        let staged = b.store.outbound(&key).unwrap().expect("staged");

        postfix.mode.store(0, Ordering::SeqCst);
        let retry = after_queue(b.reopen(), &postfix, "opec1.rx2");
        assert_eq!(retry.filter(&tx("4TESTQ")).await, FilterReply::Accept);
        assert!(postfix.got.lock().unwrap().is_empty(), "none built anew");
        let now = two_providers::now();
        assert_eq!(sweep_after(b.reopen(), &postfix, now).await, 1);
        assert_eq!(sweep_after(b.reopen(), &postfix, now).await, 0);
        assert_eq!(postfix.got.lock().unwrap()[0], staged.data);
        let events = b.store.events_for(&staged.message_id).unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            events[0].kind,
            EventKind::Issued(MessageKind::AnomalyEnvelope)
        );
        assert_eq!(events[0].related_ids, vec![staged.message_id.clone()]);

        assert_eq!(retry.filter(&tx("4OTHER")).await, FilterReply::Accept);
        assert_eq!(postfix.got.lock().unwrap().len(), 2);
        let other = anomaly_key(Some("4OTHER"), &data, &["bob@pec.example.net".into()]);
        assert_ne!(other, key);
        assert!(b
            .store
            .outbound(&other)
            .unwrap()
            .unwrap()
            .injected_at
            .is_some());
    });
}
both!(an_anomaly_envelope_is_built_once_per_queue_file);

/// Virus in a transport envelope for bob and dave: the presa in carico (spec §5.2: the
/// virus is the second phase) is staged, its injection fails (4xx to Postfix); the retry
/// builds no second one, sends bob's and dave's rilevazione virus and quarantines the
/// message once; the sweep sends the staged presa in carico. Another retry (our 250 lost)
/// sends nothing.
fn virus_notices_are_sent_once_per_recipient(b: &Backend) {
    use two_providers::{Provider, A_ID, MARKER};
    runtime().block_on(async {
        let mut original = b"From: alice@pec.example.it\r\nTo: bob@pec.example.net, dave@pec.example.net\r\nSubject: fattura\r\nMessage-ID: <v1@client>\r\n\r\nsee attachment ".to_vec();
        original.extend_from_slice(MARKER);
        original.extend_from_slice(b"\r\n");
        let info = OriginalInfo::parse(&original).unwrap();
        let cert = Certification::for_submission(
            &info,
            "alice@pec.example.it",
            &[
                ("bob@pec.example.net".into(), RecipientType::Certificato),
                ("dave@pec.example.net".into(), RecipientType::Certificato),
            ],
            A_ID,
        );
        let env = Provider::A
            .build(|b| {
                b.transport_envelope(&original, &cert, two_providers::at())
                    .unwrap()
            })
            .to_bytes();
        let rcpt = ["bob@pec.example.net", "dave@pec.example.net"];
        let tx = two_providers::Rx::tx("alice@pec.example.it", &rcpt, &env);
        let postfix = Arc::new(Postfix::default());
        postfix.mode.store(1, Ordering::SeqCst);
        let first = after_queue(b.store.clone(), &postfix, "opec1.rx1");
        assert!(matches!(first.filter(&tx).await, FilterReply::Tempfail(_)));
        let taken = b
            .store
            .outbound(&pec::store::outbox::take_charge_key(
                A_ID,
                &rcpt.map(String::from),
            ))
            .unwrap()
            .expect("staged");
        assert!(b
            .store
            .outbound(&virus_key(A_ID, "bob@pec.example.net"))
            .unwrap()
            .is_none());

        postfix.mode.store(0, Ordering::SeqCst);
        let retry = after_queue(b.reopen(), &postfix, "opec1.rx2");
        assert_eq!(retry.filter(&tx).await, FilterReply::Accept);
        assert_eq!(postfix.got.lock().unwrap().len(), 2, "bob's and dave's notices");
        assert_eq!(
            sweep_after(b.reopen(), &postfix, two_providers::now()).await,
            1
        );
        let again = after_queue(b.reopen(), &postfix, "opec1.rx3");
        assert_eq!(again.filter(&tx).await, FilterReply::Accept);
        let got = postfix.got.lock().unwrap().clone();
        assert_eq!(got.len(), 3, "one presa in carico, one notice per recipient");
        assert_eq!(got[2], taken.data);
        assert_ne!(
            pec::delivery::dedup::message_id(&got[0]),
            pec::delivery::dedup::message_id(&got[1])
        );
        let k: Vec<EventKind> = b
            .store
            .events_for(A_ID)
            .unwrap()
            .iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(count(&k, MessageKind::VirusDetection), 2, "{k:?}");
        assert_eq!(
            k.iter().filter(|k| **k == EventKind::Quarantined).count(),
            1,
            "{k:?}"
        );
        assert_eq!(b.store.quarantined(A_ID).unwrap(), vec![env.clone()]);
    });
}
both!(virus_notices_are_sent_once_per_recipient);

/// Arrival notice: the delivery receipt goes out, the arrival notice is staged but its
/// injection fails (the reply stays 250); Postfix retries the delivery (our 250 lost):
/// no second notice; the sweep sends the staged one, once.
fn an_arrival_notice_is_sent_once(b: &Backend) {
    runtime().block_on(async {
        verified(&*b.store);
        b.store
            .set_arrival_notice(
                BOB,
                Some(&ArrivalNotice {
                    notify: "bob@example.org".into(),
                    senders: Vec::new(),
                }),
            )
            .unwrap();
        let (mailbox, postfix) = (Arc::new(Mailbox::default()), Arc::new(Postfix::default()));
        postfix.mode.store(3, Ordering::SeqCst);
        postfix.accept.store(1, Ordering::SeqCst);
        let with_arrivals = |store: Arc<dyn Store>, ids: &str| {
            Arc::new(bare_point(store, mailbox.clone(), &postfix, ids).with_arrival_notices(true))
        };
        let first = with_arrivals(b.store.clone(), "opec1.n1");
        assert_eq!(deliver(&first).await.unwrap()[0].code, 250);
        assert_eq!(postfix.got.lock().unwrap().len(), 1, "the receipt");
        let staged = b
            .store
            .outbound(&arrival_key(PEC_ID, BOB))
            .unwrap()
            .expect("staged");
        assert_eq!(staged.rcpt_to, vec!["bob@example.org".to_string()]);

        postfix.mode.store(0, Ordering::SeqCst);
        let retry = with_arrivals(b.reopen(), "opec1.n2");
        assert_eq!(deliver(&retry).await.unwrap()[0].code, 250);
        assert_eq!(postfix.got.lock().unwrap().len(), 1);
        assert_eq!(sweep_after(b.reopen(), &postfix, later(8)).await, 1);
        assert_eq!(sweep_after(b.reopen(), &postfix, later(8)).await, 0);
        let got = postfix.got.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], staged.data);
        assert_eq!(mailbox.copies_of(BOB), 1);
    });
}
both!(an_arrival_notice_is_sent_once);

/// The keys: a retry finds the same one, another event another one.
#[test]
fn keys_name_what_the_message_is_about() {
    let data = b"Subject: x\r\n\r\nbody\r\n";
    let (b1, b2) = ("a@x.it".to_string(), "B@x.it".to_string());
    assert_eq!(
        anomaly_key(Some("4Q"), data, &[b1.clone(), b2.clone()]),
        anomaly_key(Some("4Q"), data, &[b2.to_lowercase(), b1.clone()])
    );
    assert_ne!(
        anomaly_key(Some("4Q"), data, std::slice::from_ref(&b1)),
        anomaly_key(Some("4R"), data, std::slice::from_ref(&b1))
    );
    assert_ne!(
        anomaly_key(Some("4Q"), data, std::slice::from_ref(&b1)),
        anomaly_key(Some("4Q"), b"other", std::slice::from_ref(&b1))
    );
    assert_ne!(
        anomaly_key(Some("4Q"), data, std::slice::from_ref(&b1)),
        anomaly_key(Some("4Q"), data, &[b1.clone(), b2.clone()])
    );
    assert_ne!(
        timer_key(PEC_ID, BOB, Timeout::Hours12),
        timer_key(PEC_ID, BOB, Timeout::Hours24)
    );
    assert_eq!(
        timer_key(PEC_ID, &BOB.to_uppercase(), Timeout::Hours12),
        timer_key(PEC_ID, BOB, Timeout::Hours12)
    );
    assert_ne!(virus_key(PEC_ID, BOB), virus_non_delivery_key(PEC_ID, BOB));
}

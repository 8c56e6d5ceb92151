//! No duplicate after a crash (store::outbox, delivery::dedup): for each window where a
//! `pec serve` killed at the wrong instant used to leave a receipt issued twice, a message
//! stored twice or a legal-log record for a message never queued, the point is "crashed"
//! there (a panic in the middle of its work, or a failure) and dropped; a new one on the
//! same store takes the retry. Each test asserts exactly one receipt with one Message-ID,
//! one mailbox copy and one log record, on SQLite and (with PEC_TEST_PG_URL) PostgreSQL.

#[path = "common/backends.rs"]
mod backends;
#[path = "common/pem.rs"]
mod pem;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use backends::Backend;
use pec::crypto::Signer;
use pec::delivery::dedup::MailboxProbe;
use pec::delivery::lmtp::{LocalDelivery, Reply, Transaction};
use pec::delivery::DeliveryPoint;
use pec::index::{IndexHandle, ProviderIndex, ProviderInfo, ProviderRecord};
use pec::message::build::{Builder, Certification, OriginalInfo};
use pec::message::ids::SequentialIds;
use pec::message::kind::{MessageKind, RecipientType};
use pec::message::time::{FixedClock, Instant};
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

fn envelope() -> Vec<u8> {
    let ids = SequentialIds::new("opec1.envelope", "pec.example.it");
    let iss = issuer();
    Builder {
        issuer: &iss,
        signer: &*pki().signer,
        ids: &ids,
    }
    .transport_envelope(&fixture("contratto.eml"), &cert(), at())
    .unwrap()
    .to_bytes()
}

fn accepted() -> Accepted {
    Accepted {
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
        store.begin_deliveries("m@x", &rcpts, at()).unwrap(),
        vec![None, None]
    );
    assert_eq!(
        b.reopen().begin_deliveries("m@x", &rcpts, at()).unwrap(),
        vec![Some(DeliveryMark::Intent), Some(DeliveryMark::Intent)]
    );
    store
        .deliveries_done("m@x", &["dave@PEC.example.net".to_string()], later(1))
        .unwrap();
    assert_eq!(
        store.begin_deliveries("m@x", &rcpts, later(2)).unwrap(),
        vec![Some(DeliveryMark::Intent), Some(DeliveryMark::Done)]
    );
    // Another message, same recipient: independent.
    assert_eq!(
        store
            .begin_deliveries("n@x", &rcpts[..1], later(2))
            .unwrap(),
        vec![None]
    );
    assert_eq!(store.purge_outbox(later(2)).unwrap(), 2);
    assert_eq!(
        store.begin_deliveries("m@x", &rcpts, later(3)).unwrap(),
        vec![None, None]
    );
}
both!(deliveries_record_intent_then_done);

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
    fn holds<'a>(&'a self, user: &'a str, id: &'a str) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            if self.1 {
                return Err("doveadm: cannot connect".into());
            }
            Ok(self.0.copies.lock().unwrap().iter().any(|(r, d)| {
                r == user && pec::delivery::dedup::message_id(d).as_deref() == Some(id)
            }))
        })
    }
}

/// Postfix's reinjection listener: 0 accepts, 1 refuses (4xx), 2 accepts then the
/// process dies (panic) before the notice is marked injected.
#[derive(Default)]
struct Postfix {
    got: Mutex<Vec<Vec<u8>>>,
    mode: AtomicU8,
}

impl Injector for Postfix {
    fn inject<'a>(
        &'a self,
        _from: &'a str,
        _rcpt_to: &'a [String],
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<(), InjectError>> {
        Box::pin(async move {
            match self.mode.load(Ordering::SeqCst) {
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
fn point(
    store: Arc<dyn Store>,
    mailbox: &Arc<Mailbox>,
    postfix: &Arc<Postfix>,
    probe_broken: bool,
    ids: &str,
) -> Arc<DeliveryPoint> {
    let signer: Arc<dyn Signer> = pki().signer.clone();
    Arc::new(
        DeliveryPoint::new(
            store,
            postfix.clone(),
            mailbox.clone(),
            Arc::new(IndexHandle::new(index())),
            issuer(),
            signer,
            Arc::new(SequentialIds::new(ids, "pec.example.it")),
        )
        .with_clock(Arc::new(FixedClock::new(later(8))))
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

// SPDX-License-Identifier: GPL-3.0-or-later
//! Never certify what did not happen (tests/HOSTILE.md, "what pec certifies"): a
//! recipient's outcome is decided once, where the receipt or notice that states it is
//! staged; every notice we sign is built from our own records; the reception point checks
//! what it is asked to certify. Each of the seven ways found to make pec sign or log a lie
//! has a test here, the crafted messages signed with provider B's genuine key, on SQLite and
//! (with PEC_TEST_PG_URL) PostgreSQL. The real parts are in tests/e2e/timers.sh and
//! tests/e2e/hostile_peer.sh.

use crate::backends;
use crate::two_providers;

use std::sync::Arc;

use backends::Backend;
use pec::delivery::DeliveryPoint;
use pec::doubles::{Injected, MarkerAntivirus, RecordingInjector};
use pec::index::IndexHandle;
use pec::message::build::{Certification, Generated, OriginalInfo};
use pec::message::classify::{classify, Classification};
use pec::message::ids::SequentialIds;
use pec::message::kind::{MessageKind, RecipientType, Ricevuta, Timeout};
use pec::message::time::{FixedClock, Instant};
use pec::reception::{AfterQueue, Local, Reception};
use pec::smtp::lmtp::{self, LocalDelivery, Reply};
use pec::smtp::FilterReply;
use pec::store::{Accepted, EventKind, LogEvent, MailboxPolicy, Store, TrackingState};
use pec::timers::Timers;
use pec::BoxFuture;
use two_providers::{fixture, header, index, Provider, A_ID, MARKER};

const ALICE: &str = "alice@pec.example.it";
const HOUR: i64 = 3600;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn at() -> Instant {
    two_providers::at()
}

fn plus(seconds: i64) -> Instant {
    Instant::from_unix(at().unix() + seconds)
}

/// What a fake Dovecot stored: (mailbox, class header) of each message.
type Stored = Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

/// Dovecot: stores the message, except for the mailboxes in `unknown` (5.1.1); `stored`
/// keeps (mailbox, class header) of each message stored.
struct Dovecot {
    unknown: Vec<&'static str>,
    stored: Stored,
}

impl LocalDelivery for Dovecot {
    fn deliver<'a>(
        &'a self,
        _mail_from: &'a str,
        rcpt_to: &'a [String],
        data: &'a [u8],
        _eight_bit: bool,
    ) -> BoxFuture<'a, Vec<Reply>> {
        Box::pin(async move {
            let class = header(data, "X-Trasporto").or_else(|| header(data, "X-Ricevuta"));
            rcpt_to
                .iter()
                .map(|r| {
                    if self.unknown.iter().any(|u| u.eq_ignore_ascii_case(r)) {
                        Reply::new(550, format!("5.1.1 <{r}> User doesn't exist: {r}"))
                    } else {
                        self.stored.lock().unwrap().push((r.clone(), class.clone()));
                        Reply::new(250, format!("2.0.0 <{r}> Saved"))
                    }
                })
                .collect()
        })
    }
}

/// One provider on the backend's store: its reception point, delivery point and timers,
/// all injecting into one recording Postfix.
struct Side {
    store: Arc<dyn Store>,
    /// What Dovecot stored: (mailbox, class header).
    stored: Stored,
    postfix: Arc<RecordingInjector>,
    filter: AfterQueue,
    delivery: DeliveryPoint,
    timers: Timers,
}

impl Side {
    fn new(we: Provider, store: Arc<dyn Store>, unknown: Vec<&'static str>) -> Side {
        let postfix = Arc::new(RecordingInjector::new());
        let stored = Arc::new(std::sync::Mutex::new(Vec::new()));
        let index = Arc::new(IndexHandle::new(index()));
        let clock = Arc::new(FixedClock::new(plus(8)));
        let ids = |p: &str| Arc::new(SequentialIds::new(p, we.domain()));
        let filter = AfterQueue::new(
            store.clone(),
            postfix.clone(),
            we.issuer(),
            we.signer(),
            ids("opec1.rx"),
            Reception {
                chain: None,
                index: index.clone(),
                antivirus: Arc::new(MarkerAntivirus {
                    marker: MARKER.to_vec(),
                    virus_name: "PEC-Test-Virus".into(),
                    unreachable: false,
                }),
                domains: vec![we.domain().into()],
                mail_receipt: we.mail_receipt(),
                default_policy: MailboxPolicy::Anomaly,
            },
        )
        .with_clock(clock.clone());
        let delivery = DeliveryPoint::new(
            store.clone(),
            postfix.clone(),
            Arc::new(Dovecot {
                unknown,
                stored: stored.clone(),
            }),
            index,
            we.issuer(),
            we.signer(),
            ids("opec1.dp"),
        )
        .with_clock(clock.clone());
        let timers = Timers::new(
            store.clone(),
            postfix.clone(),
            we.issuer(),
            we.signer(),
            ids("opec1.timer"),
            clock,
        );
        Side {
            store,
            stored,
            postfix,
            filter,
            delivery,
            timers,
        }
    }

    fn sent(&self) -> Vec<Injected> {
        self.postfix.messages()
    }

    /// The class headers of what Dovecot stored for `who`.
    fn stored_for(&self, who: &str) -> Vec<Option<String>> {
        self.stored
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| r.eq_ignore_ascii_case(who))
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// The after-queue filter on `data` from `from` to `rcpt`.
    async fn receive(&self, from: &str, rcpt: &[&str], data: &[u8]) -> FilterReply {
        self.filter
            .filter(&two_providers::Rx::tx(from, rcpt, data))
            .await
    }

    /// What the reception point decided for the local recipients.
    async fn local(&self, from: &str, rcpt: &[&str], data: &[u8]) -> Local {
        self.filter
            .process(&two_providers::Rx::tx(from, rcpt, data), None)
            .await
            .unwrap()
            .local
            .expect("a local decision")
    }

    /// The delivery point's replies for `rcpt`.
    async fn deliver(&self, rcpt: &[&str], data: &[u8]) -> Vec<Reply> {
        self.delivery
            .deliver(&lmtp::Transaction {
                mail_from: ALICE.into(),
                rcpt_to: rcpt.iter().map(|r| r.to_string()).collect(),
                eight_bit: false,
                data: data.to_vec().into(),
            })
            .await
    }

    fn state(&self, pec_id: &str, who: &str) -> TrackingState {
        self.store
            .tracking_for(pec_id)
            .unwrap()
            .into_iter()
            .find(|t| t.recipient.eq_ignore_ascii_case(who))
            .unwrap_or_else(|| panic!("no tracking row for {who}"))
            .state
    }

    /// The timer notices of one pass at `hours` after dispatch, as (which, recipient).
    async fn timers_at(&self, hours: i64) -> Vec<(Timeout, String)> {
        let report = self.timers.run_once(plus(hours * HOUR)).await.unwrap();
        assert!(report.failed.is_empty(), "{report:?}");
        report
            .sent
            .into_iter()
            .map(|s| (s.which, s.recipient))
            .collect()
    }
}

/// The legal-log records about `pec_id`.
fn events(store: &dyn Store, pec_id: &str) -> Vec<LogEvent> {
    store.events_for(pec_id).unwrap()
}

/// The final outcomes recorded for `who` of `pec_id` (spec §8 audit): a delivery receipt or
/// non-delivery notice we issued, a 24 h notice, or a correlated receipt from the
/// recipient's provider that states one.
fn outcomes(store: &dyn Store, pec_id: &str, who: &str) -> Vec<EventKind> {
    events(store, pec_id)
        .into_iter()
        .filter(|e| {
            let final_kind = matches!(
                e.kind,
                EventKind::Issued(
                    MessageKind::Delivery(_)
                        | MessageKind::NonDelivery
                        | MessageKind::NonDeliveryVirus
                        | MessageKind::Timeout(Timeout::Hours24)
                )
            ) || (matches!(
                e.kind,
                EventKind::Received(Ricevuta::AvvenutaConsegna | Ricevuta::ErroreConsegna)
            ) && e.outcome == "correlated");
            // An issued notice names its one recipient; a received receipt lists the
            // envelope's recipients and says whom it is about in its reason.
            let about = match e.kind {
                EventKind::Received(_) => e
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.contains(&format!("riguarda {who}"))),
                _ => e
                    .recipients
                    .iter()
                    .any(|(r, _)| r.eq_ignore_ascii_case(who)),
            };
            final_kind && about
        })
        .map(|e| e.kind)
        .collect()
}

/// An original from alice with this header block, and our certification data for it.
fn submission(
    headers: &str,
    certified: &[&str],
    external: &[&str],
    id: &str,
) -> (Vec<u8>, Certification) {
    let original = format!(
        "From: Alice <{ALICE}>\r\n{headers}Subject: Contratto\r\nMessage-ID: <{id}.client@example.it>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nIl contratto.\r\n"
    )
    .into_bytes();
    let info = OriginalInfo::parse(&original).unwrap();
    let recipients: Vec<(String, RecipientType)> = certified
        .iter()
        .map(|r| (r.to_string(), RecipientType::Certificato))
        .chain(
            external
                .iter()
                .map(|r| (r.to_string(), RecipientType::Esterno)),
        )
        .collect();
    let cert = Certification::for_submission(&info, ALICE, &recipients, id);
    (original, cert)
}

/// Provider A's access point accepted `cert` (tracking rows and the pending acceptance),
/// and its envelope, signed by A.
fn accepted_by_a(store: &dyn Store, original: &[u8], cert: &Certification) -> Vec<u8> {
    store
        .record_accepted(&Accepted {
            auth_at: None,
            pec_id: cert.identificativo.clone(),
            queue_id: Some("4ACC".into()),
            at: at(),
            cert: cert.clone(),
            login: ALICE.into(),
            provider: Provider::A.name().into(),
        })
        .unwrap();
    Provider::A
        .build(|b| b.transport_envelope(original, cert, at()).unwrap())
        .to_bytes()
}

/// Case 1: the false 24 h notice after every same-provider outcome. Alice writes To bob
/// (delivered) and erin (unknown to Dovecot: not delivered), Cc carol (delivered), all of
/// provider A, and To dan of provider B, who never answers. Our own delivery point decides
/// the local outcomes: the sender's rows close where the receipt and the notice are
/// staged. At +13 h and +25 h only dan gets his 12 h and 24 h notices; nobody else gets
/// anything, and each recipient has one final outcome.
fn same_provider_outcomes_close_the_senders_rows(b: &Backend) {
    runtime().block_on(async {
        let a = Side::new(Provider::A, b.store.clone(), vec!["erin@pec.example.it"]);
        let (bob, carol, erin, dan) = (
            "bob@pec.example.it",
            "carol@pec.example.it",
            "erin@pec.example.it",
            "dan@pec.example.net",
        );
        let (original, cert) = submission(
            &format!("To: {bob}, {erin}, {dan}\r\nCc: {carol}\r\n"),
            &[bob, carol, erin, dan],
            &[],
            A_ID,
        );
        let envelope = accepted_by_a(&*a.store, &original, &cert);
        assert_eq!(
            a.receive(ALICE, &[bob, carol, erin, dan], &envelope).await,
            FilterReply::Accept
        );
        for r in [bob, carol, erin] {
            assert_eq!(a.state(A_ID, r), TrackingState::TakenInCharge, "{r}");
        }
        let replies = a.deliver(&[bob, carol, erin], &envelope).await;
        assert!(replies.iter().all(|r| r.code == 250), "{replies:?}");
        assert_eq!(a.state(A_ID, bob), TrackingState::Delivered);
        assert_eq!(a.state(A_ID, carol), TrackingState::Delivered);
        assert_eq!(a.state(A_ID, erin), TrackingState::Failed);
        assert_eq!(a.state(A_ID, dan), TrackingState::Sent);
        let notices: Vec<Option<String>> = a
            .sent()
            .iter()
            .map(|m| header(&m.message, "X-Ricevuta"))
            .collect();
        assert_eq!(
            notices
                .iter()
                .filter(|n| n.as_deref() == Some("avvenuta-consegna"))
                .count(),
            2,
            "{notices:?}"
        );
        assert_eq!(
            notices
                .iter()
                .filter(|n| n.as_deref() == Some("errore-consegna"))
                .count(),
            1,
            "{notices:?}"
        );

        assert!(a.timers_at(11).await.is_empty());
        assert_eq!(
            a.timers_at(13).await,
            vec![(Timeout::Hours12, dan.to_string())]
        );
        assert!(a.timers_at(20).await.is_empty());
        assert_eq!(
            a.timers_at(25).await,
            vec![(Timeout::Hours24, dan.to_string())]
        );
        assert!(a.timers_at(30).await.is_empty());
        for r in [bob, carol, erin, dan] {
            assert_eq!(outcomes(&*a.store, A_ID, r).len(), 1, "{r}");
        }
        let timeouts = events(&*a.store, A_ID)
            .into_iter()
            .filter(|e| matches!(e.kind, EventKind::Issued(MessageKind::Timeout(_))))
            .flat_map(|e| e.recipients)
            .map(|(r, _)| r)
            .collect::<Vec<_>>();
        assert_eq!(timeouts, vec![dan.to_string(), dan.to_string()]);

        // The same envelope delivered again (a Postfix retry) decides nothing new.
        let before = a.sent().len();
        let replies = a.deliver(&[bob, erin], &envelope).await;
        assert!(replies.iter().all(|r| r.code == 250), "{replies:?}");
        assert_eq!(a.sent().len(), before);
        assert_eq!(outcomes(&*a.store, A_ID, bob).len(), 1);
    });
}
both!(same_provider_outcomes_close_the_senders_rows);

/// Runs `sql` on the backend's database directly (as an older version left it).
fn raw_sql(b: &Backend, sql: &str) {
    match (&b.path, &b.url) {
        (Some(path), _) => rusqlite::Connection::open(path)
            .unwrap()
            .execute_batch(sql)
            .unwrap(),
        (None, Some(url)) => {
            let (url, sql) = (url.clone(), sql.to_string());
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async {
                        let client = backends::connect_raw(&url).await.unwrap();
                        client.batch_execute(&sql).await.unwrap();
                    })
            })
            .join()
            .unwrap();
        }
        _ => unreachable!(),
    }
}

/// A store written before outcomes were decided at the delivery point: a same-provider
/// recipient delivered and one not delivered, their rows left taken in charge. Migration
/// 12 closes them, so the upgraded installation sends no false 24 h notice; a recipient
/// still waiting keeps its notice.
fn the_upgrade_closes_rows_whose_outcome_is_recorded(b: &Backend) {
    let (bob, erin, dan) = (
        "bob@pec.example.it",
        "Erin@pec.example.it",
        "dan@pec.example.net",
    );
    let (_, cert) = submission(
        &format!("To: {bob}, {erin}, {dan}\r\n"),
        &[bob, erin, dan],
        &[],
        A_ID,
    );
    b.store
        .record_accepted(&Accepted {
            auth_at: None,
            pec_id: A_ID.into(),
            queue_id: None,
            at: at(),
            cert,
            login: ALICE.into(),
            provider: Provider::A.name().into(),
        })
        .unwrap();
    b.store.acceptance_emitted(A_ID, "acc@x", plus(1)).unwrap();
    // As the version before left it: the notices recorded, the rows not moved (and none
    // of the later migrations applied).
    raw_sql(
        b,
        &format!(
            "UPDATE tracking SET state = 'taken-in-charge' WHERE recipient <> '{dan}';
             INSERT INTO delivery_notices (pec_id, recipient, kind, notice_id, at)
             VALUES ('{A_ID}', '{bob}', 'Consegna', 'c1@x', {t}),
                    ('{A_ID}', 'erin@pec.example.it', 'MancataConsegna', 'c2@x', {t});
             DELETE FROM schema_version WHERE version >= 12;",
            t = plus(5).unix()
        ),
    );
    let a = Side::new(Provider::A, b.reopen(), Vec::new());
    assert_eq!(a.state(A_ID, bob), TrackingState::Delivered);
    assert_eq!(a.state(A_ID, erin), TrackingState::Failed);
    assert_eq!(a.state(A_ID, dan), TrackingState::Sent);
    runtime().block_on(async {
        let sent = a.timers_at(25).await;
        assert!(
            sent.contains(&(Timeout::Hours24, dan.to_string())),
            "{sent:?}"
        );
        assert!(sent.iter().all(|(_, r)| r == dan), "{sent:?}");
    });
}
both!(the_upgrade_closes_rows_whose_outcome_is_recorded);

/// Alice's envelope A_ID to bob of provider B, accepted by A and its acceptance emitted.
fn alice_to_bob_at_b(a: &Side, id: &str) -> Certification {
    let bob = "bob@pec.example.net";
    let (original, cert) = submission(&format!("To: {bob}\r\n"), &[bob], &[], id);
    accepted_by_a(&*a.store, &original, &cert);
    a.store.acceptance_emitted(id, "acc@x", plus(1)).unwrap();
    cert
}

/// B's rilevazione virus about `who`, built from `cert` (B's words), to A's mailReceipt.
fn virus_from_b(cert: &Certification, who: &str) -> Generated {
    Provider::B.build(|b| {
        b.virus_detection(
            cert,
            plus(60),
            who,
            "Eicar-Test-Signature",
            &Provider::A.mail_receipt(),
        )
        .unwrap()
    })
}

fn received(store: &dyn Store, pec_id: &str, kind: Ricevuta) -> Vec<LogEvent> {
    events(store, pec_id)
        .into_iter()
        .filter(|e| e.kind == EventKind::Received(kind))
        .collect()
}

/// Cases 2, 3 and 4: a B-signed rilevazione virus after B's own delivery receipt for bob,
/// one naming carol (never a recipient), and one about a recipient still waiting whose
/// daticert names dave as the sender under a forged subject. Only the last gives a notice,
/// to alice, built from A's own record of the envelope.
fn peer_virus_notices_are_judged_on_our_records(b: &Backend) {
    runtime().block_on(async {
        let a = Side::new(Provider::A, b.store.clone(), Vec::new());
        let bob = "bob@pec.example.net";
        let cert = alice_to_bob_at_b(&a, A_ID);
        // B's genuine delivery receipt for bob, to alice: delivered, the row closes.
        let consegna = Provider::B.build(|b| {
            b.delivery(&cert, plus(30), bob, &fixture("ordinary.eml"))
                .unwrap()
        });
        assert!(matches!(
            a.local(&consegna.mail_from, &[ALICE], &consegna.to_bytes())
                .await,
            Local::Receipt {
                tracking_updated: 1,
                ..
            }
        ));
        assert_eq!(a.state(A_ID, bob), TrackingState::Delivered);
        // The same receipt again (a Postfix retry, or a concurrent copy): delivered to
        // alice, but not a second outcome.
        assert!(matches!(
            a.local(&consegna.mail_from, &[ALICE], &consegna.to_bytes())
                .await,
            Local::Receipt {
                tracking_updated: 0,
                ..
            }
        ));
        let outcomes_of = |kind| {
            received(&*a.store, A_ID, kind)
                .into_iter()
                .map(|e| e.outcome)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            outcomes_of(Ricevuta::AvvenutaConsegna),
            ["correlated", "late"]
        );
        let before = a.sent().len();

        // Case 2: a virus notice after the outcome moves nothing and generates nothing.
        let late = virus_from_b(&cert, bob);
        match a
            .local(
                &late.mail_from,
                &[&Provider::A.mail_receipt()],
                &late.to_bytes(),
            )
            .await
        {
            Local::Receipt {
                consumed,
                tracking_updated,
                notices,
                ..
            } => {
                assert!(consumed);
                assert_eq!(tracking_updated, 0);
                assert!(notices.is_empty(), "{notices:?}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(a.sent().len(), before, "nothing signed");
        assert_eq!(a.state(A_ID, bob), TrackingState::Delivered);
        let rx = received(&*a.store, A_ID, Ricevuta::RilevazioneVirus);
        assert_eq!(rx.len(), 1);
        assert_eq!(rx[0].outcome, "late");
        assert_eq!(outcomes(&*a.store, A_ID, bob).len(), 1);

        // Case 3: about carol, never a recipient: correlates with nothing.
        let carol = virus_from_b(&cert, "carol@pec.example.net");
        assert_eq!(
            a.receive(
                &carol.mail_from,
                &[&Provider::A.mail_receipt()],
                &carol.to_bytes()
            )
            .await,
            FilterReply::Accept
        );
        assert_eq!(a.sent().len(), before, "nothing signed");
        let rx = received(&*a.store, A_ID, Ricevuta::RilevazioneVirus);
        assert_eq!(rx.len(), 2);
        assert_eq!(rx[1].outcome, "uncorrelated");
        assert!(rx[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("not a certified recipient"));
        assert!(!events(&*a.store, A_ID)
            .iter()
            .any(|e| e.kind == EventKind::Issued(MessageKind::NonDeliveryVirus)));

        // Case 4: another envelope, bob still waiting; B's daticert says dave sent it,
        // under another subject. The notice goes to alice, with A's own record.
        let id = "opec1.20250603101112.1.2.a@pec.example.it";
        let ours = alice_to_bob_at_b(&a, id);
        let mut forged = ours.clone();
        forged.mittente = "dave@pec.example.it".into();
        forged.oggetto = "Fattura da pagare subito".into();
        let notice = virus_from_b(&forged, bob);
        match a
            .local(
                &notice.mail_from,
                &[&Provider::A.mail_receipt()],
                &notice.to_bytes(),
            )
            .await
        {
            Local::Receipt { notices, .. } => assert_eq!(notices.len(), 1),
            other => panic!("{other:?}"),
        }
        let sent = a.sent();
        assert_eq!(sent.len(), before + 1);
        let ours_notice = &sent[before];
        assert_eq!(ours_notice.rcpt_to, vec![ALICE.to_string()]);
        match classify(&ours_notice.message, index().trust(), plus(120)) {
            Classification::Receipt(Ricevuta::ErroreConsegna, m) => {
                assert_eq!(m.daticert.mittente, ALICE);
                assert_eq!(m.daticert.oggetto.as_deref(), Some("Contratto"));
                assert_eq!(m.daticert.consegna.as_deref(), Some(bob));
                assert_eq!(m.daticert.identificativo, id);
                assert_eq!(m.verified.provider.unwrap().name, Provider::A.name());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(a.state(id, bob), TrackingState::Failed);
        for e in events(&*a.store, id) {
            assert_eq!(e.sender, ALICE, "{e:?}");
            assert_eq!(e.subject, "Contratto", "{e:?}");
        }
        // The same notice again: nothing more.
        a.receive(
            &notice.mail_from,
            &[&Provider::A.mail_receipt()],
            &notice.to_bytes(),
        )
        .await;
        assert_eq!(a.sent().len(), before + 1);
        assert_eq!(outcomes(&*a.store, id, bob).len(), 1);
        // And no timer for either envelope.
        assert!(a.timers_at(25).await.is_empty());
    });
}
both!(peer_virus_notices_are_judged_on_our_records);

/// Asserts that `data` sent to `rcpt` came out as one anomaly envelope for it, with
/// nothing taken in charge or delivered with a receipt; returns the reason.
async fn assert_anomaly(side: &Side, from: &str, rcpt: &str, data: &[u8], pec_id: &str) -> String {
    let before = side.sent().len();
    let reason = match side.local(from, &[rcpt], data).await {
        Local::NotPec {
            reason, anomaly, ..
        } => {
            assert!(anomaly.is_some(), "{reason}");
            reason
        }
        other => panic!("{other:?}"),
    };
    let sent = side.sent();
    assert_eq!(sent.len(), before + 1, "only the anomaly envelope");
    assert_eq!(sent[before].rcpt_to, vec![rcpt.to_string()]);
    assert_eq!(
        header(&sent[before].message, "X-Trasporto").as_deref(),
        Some("errore")
    );
    assert!(!side.store.is_verified(pec_id, rcpt).unwrap());
    // The delivery point stores the anomaly envelope (it keeps the Message-ID of what it
    // wraps) and gives it no receipt.
    let anomaly = sent[before].message.clone();
    let replies = side.deliver(&[rcpt], &anomaly).await;
    assert_eq!(replies[0].code, 250);
    assert_eq!(side.sent().len(), before + 1, "no delivery receipt");
    assert_eq!(
        side.stored_for(rcpt).last(),
        Some(&Some("errore".to_string()))
    );
    reason
}

/// Case 5: alice's genuine envelope to bob, redirected in SMTP to a recipient it does not
/// certify: at B to carol, at A (our own envelope, same provider) to dave. Both get an
/// anomaly envelope; no presa in carico, no delivery receipt, nobody certified.
fn redirected_envelopes_are_anomalies(b: &Backend) {
    runtime().block_on(async {
        // At B.
        let store_b: Arc<dyn Store> = b.store.clone();
        let bob_b = "bob@pec.example.net";
        let side_b = Side::new(Provider::B, store_b, Vec::new());
        let (original, cert) = submission(&format!("To: {bob_b}\r\n"), &[bob_b], &[], A_ID);
        let envelope = Provider::A
            .build(|b| b.transport_envelope(&original, &cert, at()).unwrap())
            .to_bytes();
        let why = assert_anomaly(&side_b, ALICE, "carol@pec.example.net", &envelope, A_ID).await;
        assert!(why.contains("carol@pec.example.net"), "{why}");
        assert!(!events(&*side_b.store, A_ID)
            .iter()
            .any(|e| e.kind == EventKind::Issued(MessageKind::TakeCharge)));
        // The genuine transaction still works.
        assert!(matches!(
            side_b.local(ALICE, &[bob_b], &envelope).await,
            Local::TakenInCharge { .. }
        ));
    });
    // At A, on a store of its own.
    let b2 = match b.name {
        "sqlite" => Backend::sqlite(),
        _ => match Backend::postgres("redirected_envelopes_are_anomalies_a") {
            Some(b2) => b2,
            None => return,
        },
    };
    runtime().block_on(async {
        let a = Side::new(Provider::A, b2.store.clone(), Vec::new());
        let (bob, dave) = ("bob@pec.example.it", "dave@pec.example.it");
        let id = "opec1.20250603101112.1.3.a@pec.example.it";
        let (original, cert) = submission(&format!("To: {bob}\r\n"), &[bob], &[], id);
        let envelope = accepted_by_a(&*a.store, &original, &cert);
        assert_eq!(
            a.receive(ALICE, &[bob], &envelope).await,
            FilterReply::Accept
        );
        let before = a.sent().len();
        let why = assert_anomaly(&a, ALICE, dave, &envelope, id).await;
        assert!(why.contains(dave), "{why}");
        assert_eq!(a.sent().len(), before + 1);
        // Even a verification record for dave (written by an older version) gets him no
        // receipt: the daticert does not name him.
        let presa = events(&*a.store, id)
            .into_iter()
            .find(|e| e.kind == EventKind::Issued(MessageKind::TakeCharge))
            .unwrap();
        a.store.record_verified(id, &[dave.into()], &presa).unwrap();
        let replies = a.deliver(&[dave], &envelope).await;
        assert_eq!(replies[0].code, 250);
        assert_eq!(a.sent().len(), before + 1, "no CONSEGNA for dave");
        assert!(outcomes(&*a.store, id, dave).is_empty());
        assert!(!a
            .store
            .tracking_for(id)
            .unwrap()
            .iter()
            .any(|t| t.recipient == dave));
    });
}
both!(redirected_envelopes_are_anomalies);

/// Case 6: B-signed envelopes whose copies of the certification data disagree with the
/// daticert: the top-level Message-ID or X-Riferimento-Message-ID (outside the signature),
/// the "Per conto di" sender, the carried original's From, a certified recipient the
/// message does not show. Each is an anomaly for A's bob; none is taken in charge.
fn envelopes_whose_identifiers_disagree_are_anomalies(b: &Backend) {
    runtime().block_on(async {
        let a = Side::new(Provider::A, b.store.clone(), Vec::new());
        let bob = "bob@pec.example.it";
        let from_b = "mallory@pec.example.net";
        let b_id = "opec1.20250603101112.1.1.b@pec.example.net";
        let build = |original: &[u8], cert: &Certification| {
            Provider::B
                .build(|b| b.transport_envelope(original, cert, at()).unwrap())
                .to_bytes()
        };
        let original = |from: &str, to: &str| {
            format!("From: {from}\r\nTo: {to}\r\nSubject: Contratto\r\nMessage-ID: <m1@client.example.net>\r\n\r\nIl contratto.\r\n").into_bytes()
        };
        let cert_for = |original: &[u8], sender: &str, rcpts: &[&str]| {
            let info = OriginalInfo::parse(original).unwrap();
            let r: Vec<(String, RecipientType)> = rcpts
                .iter()
                .map(|x| (x.to_string(), RecipientType::Certificato))
                .collect();
            Certification::for_submission(&info, sender, &r, b_id)
        };
        let good_original = original(from_b, bob);
        let good = build(&good_original, &cert_for(&good_original, from_b, &[bob]));
        let text = |v: &[u8]| String::from_utf8(v.to_vec()).unwrap();
        let edit = |from: &str, to: &str| text(&good).replacen(from, to, 1).into_bytes();
        let riferimento = header(&good, "X-Riferimento-Message-ID").unwrap();
        let from_header = header(&good, "From").unwrap();
        assert!(
            from_header.contains(&format!("Per conto di: {from_b}")),
            "{from_header}"
        );

        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "Message-ID",
                edit(
                    &format!("Message-ID: <{b_id}>"),
                    "Message-ID: <opec1.other@pec.example.net>",
                ),
            ),
            (
                "X-Riferimento-Message-ID",
                edit(
                    &format!("X-Riferimento-Message-ID: {riferimento}"),
                    "X-Riferimento-Message-ID: <other@client.example.net>",
                ),
            ),
            (
                "Per conto di",
                edit(
                    &format!("Per conto di: {from_b}"),
                    &format!("Per conto di: {ALICE}"),
                ),
            ),
        ];
        // Signed by B, the daticert naming mallory while the original is alice's.
        let alices = original(ALICE, bob);
        cases.push(("postacert.eml is from", build(&alices, &cert_for(&alices, from_b, &[bob]))));
        // A certified recipient the message does not show.
        let shown = original(from_b, "carol@pec.example.it");
        cases.push((
            "destinatari not in the To/Cc",
            build(&shown, &cert_for(&shown, from_b, &[bob, "carol@pec.example.it"])),
        ));
        for (what, data) in cases {
            let why = assert_anomaly(&a, from_b, bob, &data, b_id).await;
            assert!(why.contains(what), "{what}: {why}");
        }
        assert!(!events(&*a.store, b_id)
            .iter()
            .any(|e| e.kind == EventKind::Issued(MessageKind::TakeCharge)));
        // The genuine envelope is taken in charge, stored and delivered with its receipt,
        // although anomaly envelopes with its Message-ID were stored in bob's mailbox
        // before: they never stand for it.
        assert!(matches!(
            a.local(from_b, &[bob], &good).await,
            Local::TakenInCharge { .. }
        ));
        let before = a.sent().len();
        let replies = a.deliver(&[bob], &good).await;
        assert_eq!(replies[0].code, 250, "{replies:?}");
        assert_eq!(
            a.stored_for(bob).last(),
            Some(&Some("posta-certificata".to_string())),
            "the envelope itself is stored"
        );
        assert_eq!(a.sent().len(), before + 1);
        assert_eq!(
            header(&a.sent()[before].message, "X-Ricevuta").as_deref(),
            Some("avvenuta-consegna")
        );
    });
}
both!(envelopes_whose_identifiers_disagree_are_anomalies);

/// An envelope of another provider that reuses one of our PEC msgids is an anomaly: our
/// receipts, tracking and delivery records key on it.
fn a_peer_envelope_with_our_msgid_is_an_anomaly(b: &Backend) {
    runtime().block_on(async {
        let a = Side::new(Provider::A, b.store.clone(), Vec::new());
        let bob = "bob@pec.example.it";
        let (original, cert) = submission(&format!("To: {bob}\r\n"), &[bob], &[], A_ID);
        accepted_by_a(&*a.store, &original, &cert);
        // B builds an envelope for its mallory to bob under A's msgid.
        let from_b = "mallory@pec.example.net";
        let theirs = format!("From: {from_b}\r\nTo: {bob}\r\nSubject: x\r\n\r\nx\r\n").into_bytes();
        let info = OriginalInfo::parse(&theirs).unwrap();
        let cert_b = Certification::for_submission(
            &info,
            from_b,
            &[(bob.into(), RecipientType::Certificato)],
            A_ID,
        );
        let data = Provider::B
            .build(|b| b.transport_envelope(&theirs, &cert_b, at()).unwrap())
            .to_bytes();
        let why = assert_anomaly(&a, from_b, bob, &data, A_ID).await;
        assert!(why.contains("di un messaggio di questo gestore"), "{why}");
    });
}
both!(a_peer_envelope_with_our_msgid_is_an_anomaly);

/// Case 7: alice's genuine delivery receipt from B, replayed to dave: an anomaly for dave,
/// nothing moved, nothing signed but the anomaly envelope.
fn a_receipt_replayed_to_a_third_party_is_an_anomaly(b: &Backend) {
    runtime().block_on(async {
        let a = Side::new(Provider::A, b.store.clone(), Vec::new());
        let bob = "bob@pec.example.net";
        let cert = alice_to_bob_at_b(&a, A_ID);
        let consegna = Provider::B
            .build(|b| {
                b.delivery(&cert, plus(30), bob, &fixture("ordinary.eml"))
                    .unwrap()
            })
            .to_bytes();
        assert_eq!(
            a.receive("posta-certificata@pec.example.net", &[ALICE], &consegna)
                .await,
            FilterReply::Accept
        );
        assert_eq!(a.sent().len(), 1, "delivered to alice");
        assert_eq!(a.sent()[0].message, consegna);
        let why = assert_anomaly(
            &a,
            "posta-certificata@pec.example.net",
            "dave@pec.example.it",
            &consegna,
            A_ID,
        )
        .await;
        assert!(
            why.contains("dave@pec.example.it") && why.contains(ALICE),
            "{why}"
        );
        assert_eq!(a.state(A_ID, bob), TrackingState::Delivered);
        assert_eq!(
            received(&*a.store, A_ID, Ricevuta::AvvenutaConsegna).len(),
            1,
            "the replay is not a second receipt"
        );
        assert_eq!(outcomes(&*a.store, A_ID, bob).len(), 1);
    });
}
both!(a_receipt_replayed_to_a_third_party_is_an_anomaly);

/// A delivery status notification as Postfix writes it, about the envelope whose header is
/// `returned`, with one group per `(recipient, action, status, diagnostic)`.
fn dsn(returned: &[u8], groups: &[(&str, &str, &str, &str)]) -> Vec<u8> {
    let header_end = two_providers::find(returned, b"\r\n\r\n").unwrap() + 2;
    let mut per_recipient = String::new();
    for (rcpt, action, status, diagnostic) in groups {
        per_recipient.push_str(&format!(
            "Final-Recipient: rfc822; {rcpt}\r\nOriginal-Recipient: rfc822;{rcpt}\r\n\
             Action: {action}\r\nStatus: {status}\r\nRemote-MTA: dns; mx.pec.example.net\r\n\
             Diagnostic-Code: smtp; {diagnostic}\r\n\r\n"
        ));
    }
    let mut out = format!(
        "From: MAILER-DAEMON@mx.pec.example.it (Mail Delivery System)\r\nTo: {ALICE}\r\n\
         Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"RB\"\r\n\r\n\
         --RB\r\nContent-Type: text/plain\r\n\r\nThis is the mail system at host mx.pec.example.it.\r\n\r\n\
         --RB\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.pec.example.it\r\n\
         X-Postfix-Queue-ID: 4BNC\r\n\r\n{per_recipient}--RB\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(&returned[..header_end]);
    out.extend_from_slice(b"\r\n--RB--\r\n");
    out
}

/// Issue 21.4: an MTA refuses or bounces our envelope. Alice writes to bob and dan of
/// provider B and to an ordinary address. The bounce for bob (550 5.1.1) gives alice a
/// signed mancata consegna (no-dest) built from A's record, with the remote reply, and
/// closes bob's row; the same bounce again gives nothing; dan's domain not found (5.4.4)
/// gives no-dominio, and the report, which also names the ordinary address, is delivered
/// to alice as well. Reports that are not the sender's own bounce of one of our envelopes
/// are ordinary mail. Past 24 h no timer notice for either.
fn bounces_of_our_envelopes_become_signed_non_delivery_notices(b: &Backend) {
    runtime().block_on(async {
        let a = Side::new(Provider::A, b.store.clone(), Vec::new());
        let (bob, dan, ext) = (
            "bob@pec.example.net",
            "dan@pec.example.net",
            "ext@example.com",
        );
        let (original, cert) = submission(
            &format!("To: {bob}, {dan}\r\nCc: {ext}\r\n"),
            &[bob, dan],
            &[ext],
            A_ID,
        );
        let envelope = accepted_by_a(&*a.store, &original, &cert);
        a.store.acceptance_emitted(A_ID, "acc@x", plus(1)).unwrap();
        let unknown = "550 5.1.1 <bob@pec.example.net>: Recipient address rejected: User unknown";
        let bounce = dsn(&envelope, &[(bob, "failed", "5.1.1", unknown)]);

        // Forgeries and strays first: each is ordinary mail, nothing signed.
        let other_sender = dsn(&envelope, &[(bob, "failed", "5.1.1", unknown)]);
        let stranger = String::from_utf8(envelope.clone())
            .unwrap()
            .replace(A_ID, "opec1.unknown@pec.example.it");
        eprintln!(
            "ENVELOPE HEADER: {}",
            String::from_utf8_lossy(
                &envelope[..two_providers::find(&envelope, b"\r\n\r\n").unwrap()]
            )
        );
        for (from, rcpt, data) in [
            ("someone@example.org", ALICE, bounce.clone()),
            ("", "carol@pec.example.it", other_sender),
            (
                "",
                ALICE,
                dsn(stranger.as_bytes(), &[(bob, "failed", "5.1.1", unknown)]),
            ),
            (
                "",
                ALICE,
                dsn(&envelope, &[(ext, "failed", "5.1.1", unknown)]),
            ),
            (
                "",
                ALICE,
                dsn(&envelope, &[(bob, "delayed", "4.4.1", "timeout")]),
            ),
        ] {
            match a.local(from, &[rcpt], &data).await {
                Local::NotPec { anomaly, .. } => assert!(anomaly.is_some()),
                other => panic!("{from} → {rcpt}: {other:?}"),
            }
            assert_eq!(a.state(A_ID, bob), TrackingState::Sent);
        }
        let before = a.sent().len();
        assert_eq!(before, 5, "the five anomaly envelopes");

        // Bob's bounce: one signed notice to alice, the row failed, the report consumed.
        let first = match a.local("", &[ALICE], &bounce).await {
            Local::Bounced {
                pec_id,
                notices,
                also,
            } => {
                assert_eq!(pec_id, A_ID);
                assert_eq!(notices.len(), 1);
                assert!(also.is_none());
                notices
            }
            other => panic!("{other:?}"),
        };
        let sent = a.sent();
        assert_eq!(sent.len(), before + 1, "the notice only");
        assert_eq!(sent[before].rcpt_to, [ALICE]);
        match classify(&sent[before].message, index().trust(), plus(120)) {
            Classification::Receipt(Ricevuta::ErroreConsegna, m) => {
                let d = &m.daticert;
                assert_eq!(d.mittente, ALICE);
                assert_eq!(d.oggetto.as_deref(), Some("Contratto"));
                assert_eq!(d.consegna.as_deref(), Some(bob));
                assert_eq!(d.identificativo, A_ID);
                assert_eq!(d.errore, pec::message::kind::Errore::NoDest);
                let esteso = d.errore_esteso.as_deref().unwrap();
                assert!(esteso.starts_with("5.1.1 - "), "{esteso}");
                assert!(esteso.contains("mx.pec.example.net: 550 5.1.1"), "{esteso}");
                assert_eq!(m.verified.provider.unwrap().name, Provider::A.name());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(a.state(A_ID, bob), TrackingState::Failed);
        assert_eq!(a.state(A_ID, dan), TrackingState::Sent);
        let logged: Vec<LogEvent> = events(&*a.store, A_ID)
            .into_iter()
            .filter(|e| e.kind == EventKind::Issued(MessageKind::NonDelivery))
            .collect();
        assert_eq!(logged.len(), 1);
        assert_eq!(
            logged[0].recipients,
            [(bob.to_string(), RecipientType::Certificato)]
        );
        assert!(logged[0].reason.as_deref().unwrap().contains("DSN"));

        // The same report again (a retry, a copy): nothing more.
        // The staged notice stands for it (a Postfix retry after a crash finds it).
        match a.local("", &[ALICE], &bounce).await {
            Local::Bounced { notices, .. } => assert_eq!(notices, first),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.sent().len(), before + 1);
        assert_eq!(outcomes(&*a.store, A_ID, bob).len(), 1);

        // Dan's domain is not found; the report also names the ordinary address.
        let both = dsn(
            &envelope,
            &[
                (dan, "failed", "5.4.4", "Host or domain name not found"),
                (ext, "failed", "5.1.1", "550 no such user"),
            ],
        );
        match a.local("", &[ALICE], &both).await {
            Local::Bounced { notices, also, .. } => {
                assert_eq!(notices.len(), 1);
                assert!(matches!(
                    also.as_deref(),
                    Some(Local::NotPec {
                        anomaly: Some(_),
                        ..
                    })
                ));
            }
            other => panic!("{other:?}"),
        }
        let sent = a.sent();
        assert_eq!(
            sent.len(),
            before + 3,
            "the notice and the report as an anomaly"
        );
        let notice = sent
            .iter()
            .skip(before + 1)
            .find(|m| header(&m.message, "X-Ricevuta").as_deref() == Some("errore-consegna"))
            .expect("dan's notice");
        match classify(&notice.message, index().trust(), plus(120)) {
            Classification::Receipt(Ricevuta::ErroreConsegna, m) => {
                assert_eq!(m.daticert.consegna.as_deref(), Some(dan));
                assert_eq!(m.daticert.errore, pec::message::kind::Errore::NoDominio);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(a.state(A_ID, dan), TrackingState::Failed);
        // Nothing waits any more: no 12 h or 24 h notice.
        assert!(a.timers_at(13).await.is_empty());
        assert!(a.timers_at(25).await.is_empty());

        // Postfix's own bounce goes to the delivery point (not through the filter): the
        // same judgement there; the report is consumed, Dovecot stores nothing.
        let id2 = "opec1.20250603101112.1.2.a@pec.example.it";
        let (original, cert2) = submission(&format!("To: {bob}\r\n"), &[bob], &[], id2);
        let envelope2 = accepted_by_a(&*a.store, &original, &cert2);
        let before = a.sent().len();
        let report = dsn(&envelope2, &[(bob, "failed", "5.1.1", unknown)]);
        let lmtp_tx = |data: &[u8]| lmtp::Transaction {
            mail_from: String::new(),
            rcpt_to: vec![ALICE.into()],
            eight_bit: false,
            data: data.to_vec().into(),
        };
        let replies = a.delivery.deliver(&lmtp_tx(&report)).await;
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].class(), 2, "{}", replies[0].line());
        assert!(replies[0].line().contains("non-delivery notice sent"));
        assert!(a.stored_for(ALICE).is_empty(), "the report is not stored");
        assert_eq!(a.sent().len(), before + 1);
        assert_eq!(a.state(id2, bob), TrackingState::Failed);
        // A report about another sender's envelope, or not a report: delivered as it is.
        let not_ours = dsn(&envelope, &[(bob, "failed", "5.1.1", unknown)]);
        let to_carol = lmtp::Transaction {
            rcpt_to: vec!["carol@pec.example.it".into()],
            ..lmtp_tx(&not_ours)
        };
        assert_eq!(a.delivery.deliver(&to_carol).await[0].class(), 2);
        assert_eq!(a.stored_for("carol@pec.example.it").len(), 1);
        assert_eq!(a.sent().len(), before + 1, "nothing signed for carol");
    });
}
both!(bounces_of_our_envelopes_become_signed_non_delivery_notices);

// SPDX-License-Identifier: GPL-3.0-or-later
//! The delivery point's REM path and the REM timers (issue 20 item 4, EN 319 532-4 C.4.6
//! and Annex D) in process, on the reception point's harness ([`crate::rem_reception`]:
//! the test PKI, the test TSA, a peer on a test Trusted List): a peer's dispatch relay-
//! accepted by our reception point and handed to the delivery point gets one
//! ContentConsignment (RD01) per recipient, and a replay nothing; Dovecot's quota refusal
//! RD04, its unknown user RD21; the TSA down a 4xx with nothing recorded; a dispatch our
//! records do not hold no evidence. The timers: relay_wait without the peer's
//! RelayAcceptance → one RelayFailure RB22 (none with it); consignment_wait without an
//! outcome → one ContentConsignmentFailure RD03 (none once consigned); nothing at 12 h.

use std::sync::{Arc, Mutex};

use pec::delivery::rem::RemDelivery;
use pec::delivery::DeliveryPoint;
use pec::doubles::RecordingInjector;
use pec::index::{IndexHandle, ProviderIndex};
use pec::issuing::Issuing;
use pec::message::kind::RecipientType;
use pec::message::time::{FixedClock, Instant};
use pec::rem::codes::{Event, Reason};
use pec::rem::evidence::Evidence;
use pec::rem::issue::{self, RelayInput};
use pec::smtp::lmtp::{LocalDelivery, Reply, Transaction};
use pec::store::{Effect, EvidenceDirection, Outbound, RemWait, RemWaitKind, Store};
use pec::timers::Timers;
use pec::BoxFuture;

use crate::rem_access::{at, closed_port, env, tsa};
use crate::rem_reception::{
    dispatch, harness, our_receipt, peer_dispatch, settings, tx, Harness, OUR_ID, PEER_ID,
    PEER_SERVICE,
};

const BOB: &str = "bob@pec.example.it";
const CAROL: &str = "carol@pec.example.it";
/// The peer's sender (the dispatch's evidence names it).
const PEER_SENDER: &str = "alice@pec.example.net";
const OUR_SENDER: &str = "alice@pec.example.it";
const DAN: &str = "dan@pec.example.net";
const HOUR: i64 = 3600;

fn plus(seconds: i64) -> Instant {
    Instant::from_unix(at().unix() + seconds)
}

/// Dovecot: refuses the mailboxes in `full` (5.2.2) and `unknown` (5.1.1), stores the
/// others and counts what it stored.
#[derive(Default)]
struct Dovecot {
    full: Vec<&'static str>,
    unknown: Vec<&'static str>,
    stored: Mutex<Vec<String>>,
}

impl LocalDelivery for Dovecot {
    fn deliver<'a>(
        &'a self,
        _mail_from: &'a str,
        rcpt_to: &'a [String],
        _data: &'a [u8],
        _eight_bit: bool,
    ) -> BoxFuture<'a, Vec<Reply>> {
        Box::pin(async move {
            rcpt_to
                .iter()
                .map(|r| {
                    if self.full.contains(&r.as_str()) {
                        Reply::new(552, format!("5.2.2 <{r}> Mailbox is full"))
                    } else if self.unknown.contains(&r.as_str()) {
                        Reply::new(550, format!("5.1.1 <{r}> User doesn't exist: {r}"))
                    } else {
                        self.stored.lock().unwrap().push(r.clone());
                        Reply::new(250, format!("2.0.0 <{r}> Saved"))
                    }
                })
                .collect()
        })
    }
}

/// Our delivery point on the harness's store, REM on with the evidence TSA at `tsa_url`;
/// its own recording Postfix.
fn delivery(
    h: &Harness,
    dovecot: Arc<Dovecot>,
    tsa_url: &str,
) -> (DeliveryPoint, Arc<RecordingInjector>) {
    let postfix = Arc::new(RecordingInjector::new());
    let dp = DeliveryPoint::new(
        h.store.clone(),
        postfix.clone(),
        dovecot,
        Arc::new(IndexHandle::new(ProviderIndex::from_records(Vec::new()))),
        h.kit.issuer.clone(),
        h.kit.signer.clone(),
        h.kit.ids.clone(),
    )
    .with_clock(Arc::new(FixedClock::new(plus(60))))
    .with_rem(Some(RemDelivery {
        settings: settings(Some(tsa(tsa_url))),
    }));
    (dp, postfix)
}

/// Our timers on the harness's store, REM on with the evidence TSA at `tsa_url`.
fn timers(h: &Harness, tsa_url: &str) -> (Timers, Arc<RecordingInjector>) {
    let postfix = Arc::new(RecordingInjector::new());
    let t = Timers::new(
        h.store.clone(),
        postfix.clone(),
        h.kit.issuer.clone(),
        h.kit.signer.clone(),
        h.kit.ids.clone(),
        Arc::new(FixedClock::new(at())),
    )
    .with_rem(Some(settings(Some(tsa(tsa_url)))));
    (t, postfix)
}

fn down() -> String {
    format!("http://127.0.0.1:{}/tsa", closed_port())
}

/// What Postfix hands the delivery point after our reception point relay-accepted it.
fn lmtp(data: &[u8], rcpt: &[&str]) -> Transaction {
    Transaction {
        mail_from: PEER_SENDER.into(),
        rcpt_to: rcpt.iter().map(|r| r.to_string()).collect(),
        eight_bit: false,
        data: data.to_vec().into(),
    }
}

/// A peer's dispatch to `rcpt`, relay-accepted by our reception point.
async fn relayed(h: &Harness, rcpt: &[&str]) -> Vec<u8> {
    let data = peer_dispatch(rcpt).await;
    h.filter
        .process(&tx(data.clone(), PEER_SENDER, rcpt), None)
        .await
        .unwrap();
    let issued: Vec<_> = h
        .store
        .evidences_for(PEER_ID)
        .unwrap()
        .into_iter()
        .filter(|s| {
            s.evidence.direction == EvidenceDirection::Issued
                && s.evidence.event == Event::RelayAcceptance.uri()
        })
        .collect();
    assert_eq!(issued.len(), 1, "relay-accepted by our reception point");
    data
}

/// Our evidences of `event` about `message_id`.
fn ours(h: &Harness, message_id: &str, event: Event) -> Vec<Evidence> {
    h.store
        .evidences_for(message_id)
        .unwrap()
        .into_iter()
        .filter(|s| {
            s.evidence.direction == EvidenceDirection::Issued && s.evidence.event == event.uri()
        })
        .map(|s| Evidence::parse(&s.evidence.xml).unwrap())
        .collect()
}

/// The one REM receipt `postfix` got: to `to`, its event and reason code, our evidence in it.
fn receipt(h: &Harness, postfix: &RecordingInjector, to: &str) -> (Event, String, Evidence) {
    let sent = postfix.messages();
    assert_eq!(sent.len(), 1, "one receipt");
    assert_eq!(sent[0].rcpt_to, vec![to.to_string()]);
    let (msg, ev) = our_receipt(h, &sent[0].message);
    let code = msg.classify().code.unwrap().to_string();
    assert_eq!(ev.reason().unwrap().code, code);
    (msg.event, code, ev)
}

#[tokio::test]
async fn a_relay_accepted_dispatch_gets_one_content_consignment_and_a_replay_nothing() {
    let h = harness(Some(tsa(&env().url)), true);
    let data = relayed(&h, &[BOB]).await;
    let dovecot = Arc::new(Dovecot::default());
    let (dp, postfix) = delivery(&h, dovecot.clone(), &env().url);
    let replies = dp.deliver(&lmtp(&data, &[BOB])).await;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].code, 250, "{}", replies[0].line());
    assert_eq!(*dovecot.stored.lock().unwrap(), vec![BOB.to_string()]);

    // ContentConsignment RD01 straight to the peer's sender, about bob.
    let (event, code, ev) = receipt(&h, &postfix, PEER_SENDER);
    assert_eq!((event, code.as_str()), (Event::ContentConsignment, "RD01"));
    assert_eq!(ev.event, Event::ContentConsignment);
    assert_eq!(ev.message_id.as_deref(), Some(PEER_ID));
    assert_eq!(ev.refers_to_recipient, Some(1));
    assert!(ev.relay_info.is_none());
    assert_eq!(
        ev.sender.identifier.as_ref().map(|i| i.value.as_str()),
        Some(PEER_SENDER)
    );
    // Digest by copy from our records (the dispatch's).
    let dispatched = pec::rem::message::parse(&data).unwrap();
    assert_eq!(
        ev.user_content.as_ref().unwrap().parts[0]
            .digest_value
            .as_deref(),
        dispatched.rem.digest_value.as_deref()
    );
    // Stored with the outcome and the closed consignment wait.
    assert_eq!(ours(&h, PEER_ID, Event::ContentConsignment).len(), 1);
    let notice = h.store.delivery_notice(PEER_ID, BOB).unwrap();
    assert!(notice.is_some());
    let waits = h.store.rem_waits_for(PEER_ID).unwrap();
    assert_eq!(waits.len(), 1);
    assert_eq!(waits[0].wait.which, RemWaitKind::Consignment);
    assert_eq!(waits[0].notice_id, notice);
    assert!(waits[0].settled_at.is_some(), "closed");

    // Handed over again (a replay, or Postfix retrying): nothing stored, nothing issued.
    let again = dp.deliver(&lmtp(&data, &[BOB])).await;
    assert_eq!(again[0].code, 250, "{}", again[0].line());
    assert_eq!(dovecot.stored.lock().unwrap().len(), 1);
    assert_eq!(postfix.messages().len(), 1);
    assert_eq!(ours(&h, PEER_ID, Event::ContentConsignment).len(), 1);
}

#[tokio::test]
async fn quota_is_rd04_and_an_unknown_user_rd21() {
    let h = harness(Some(tsa(&env().url)), true);
    let data = relayed(&h, &[BOB, CAROL]).await;
    let dovecot = Arc::new(Dovecot {
        full: vec![BOB],
        unknown: vec![CAROL],
        ..Dovecot::default()
    });
    let (dp, postfix) = delivery(&h, dovecot.clone(), &env().url);
    let replies = dp.deliver(&lmtp(&data, &[BOB, CAROL])).await;
    // The evidences stand for the bounce: no DSN from Postfix.
    for r in &replies {
        assert_eq!(r.code, 250, "{}", r.line());
        assert!(r.text.contains("Non-delivery"), "{}", r.line());
    }
    assert!(dovecot.stored.lock().unwrap().is_empty());
    let sent = postfix.messages();
    assert_eq!(sent.len(), 2);
    let mut got = Vec::new();
    for m in &sent {
        assert_eq!(m.rcpt_to, vec![PEER_SENDER.to_string()]);
        let (msg, ev) = our_receipt(&h, &m.message);
        assert_eq!(msg.event, Event::ContentConsignmentFailure);
        let who = ev.recipients[ev.refers_to_recipient.unwrap() as usize - 1]
            .identifier
            .as_ref()
            .unwrap()
            .value
            .clone();
        got.push((who, ev.reason().unwrap().code));
    }
    got.sort();
    assert_eq!(
        got,
        vec![(BOB.to_string(), "RD04"), (CAROL.to_string(), "RD21")]
    );
    assert_eq!(ours(&h, PEER_ID, Event::ContentConsignmentFailure).len(), 2);
    // Decided: again, nothing.
    dp.deliver(&lmtp(&data, &[BOB, CAROL])).await;
    assert_eq!(postfix.messages().len(), 2);
}

#[tokio::test]
async fn the_tsa_down_is_a_4xx_and_nothing_is_recorded_until_the_retry() {
    let h = harness(Some(tsa(&env().url)), true);
    let data = relayed(&h, &[BOB]).await;
    let dovecot = Arc::new(Dovecot::default());
    let (dp, postfix) = delivery(&h, dovecot.clone(), &down());
    let replies = dp.deliver(&lmtp(&data, &[BOB])).await;
    assert_eq!(replies[0].code, 451, "{}", replies[0].line());
    assert!(postfix.messages().is_empty());
    assert!(ours(&h, PEER_ID, Event::ContentConsignment).is_empty());
    assert_eq!(h.store.delivery_notice(PEER_ID, BOB).unwrap(), None);
    let waits = h.store.rem_waits_for(PEER_ID).unwrap();
    assert_eq!(waits[0].settled_at, None, "the consignment wait stays open");

    // Postfix retries with the TSA back: stored once, the evidence now.
    let (dp, postfix) = delivery(&h, dovecot.clone(), &env().url);
    let replies = dp.deliver(&lmtp(&data, &[BOB])).await;
    assert_eq!(replies[0].code, 250, "{}", replies[0].line());
    assert_eq!(dovecot.stored.lock().unwrap().len(), 1, "not stored twice");
    let (event, code, _) = receipt(&h, &postfix, PEER_SENDER);
    assert_eq!((event, code.as_str()), (Event::ContentConsignment, "RD01"));
}

#[tokio::test]
async fn a_dispatch_our_records_do_not_hold_gets_no_evidence() {
    let h = harness(Some(tsa(&env().url)), true);
    // Never through our reception point: no RelayAcceptance of ours.
    let data = peer_dispatch(&[BOB]).await;
    let dovecot = Arc::new(Dovecot::default());
    let (dp, postfix) = delivery(&h, dovecot.clone(), &env().url);
    let replies = dp.deliver(&lmtp(&data, &[BOB])).await;
    assert_eq!(replies[0].code, 250);
    assert_eq!(dovecot.stored.lock().unwrap().len(), 1);
    assert!(postfix.messages().is_empty());
    assert!(h.store.evidences_for(PEER_ID).unwrap().is_empty());

    // Relay-accepted for bob only: carol, named by the dispatch, gets none.
    let h = harness(Some(tsa(&env().url)), true);
    let data = relayed(&h, &[BOB]).await;
    let (dp, postfix) = delivery(&h, Arc::new(Dovecot::default()), &env().url);
    let replies = dp.deliver(&lmtp(&data, &[CAROL])).await;
    assert_eq!(replies[0].code, 250);
    assert!(postfix.messages().is_empty());
    // Another dispatch under the same identifier (its evidence not the one we judged):
    // delivered, no evidence, and bob's outcome still open for the real one.
    let other = peer_dispatch(&[BOB, CAROL]).await;
    assert_ne!(other, data);
    let replies = dp.deliver(&lmtp(&other, &[BOB])).await;
    assert_eq!(replies[0].code, 250);
    assert!(postfix.messages().is_empty());
    assert_eq!(h.store.delivery_notice(PEER_ID, BOB).unwrap(), None);
    dp.deliver(&lmtp(&data, &[BOB])).await;
    let (event, _, _) = receipt(&h, &postfix, PEER_SENDER);
    assert_eq!(event, Event::ContentConsignment);
}

/// Our dispatch to `DAN` (a peer's recipient), recorded as the access point does after
/// queue: our SubmissionAcceptance and the relay wait begun with it.
async fn our_dispatch_to_a_peer(h: &Harness) -> Evidence {
    let (_, issued) = dispatch(&h.kit, OUR_ID, OUR_SENDER, &[DAN]).await;
    let stored = issued.stored(OUR_SENDER, vec![(DAN.into(), RecipientType::Esterno)], None);
    let out = Outbound {
        key: format!("acceptance:{OUR_ID}"),
        message_id: "receipt.1@pec.example.it".into(),
        mail_from: "posta-certificata@pec.example.it".into(),
        rcpt_to: vec![OUR_SENDER.into()],
        data: b"the submission acceptance receipt".to_vec(),
        created_at: at(),
        injected_at: None,
    };
    let effect = Effect::WithEvidences {
        effect: Box::new(Effect::RemWaits {
            effect: Box::new(Effect::Log(Vec::new())),
            waits: vec![RemWait {
                which: RemWaitKind::Relay,
                message_id: OUR_ID.into(),
                recipient: DAN.into(),
                started_at: at(),
            }],
        }),
        evidences: vec![stored],
    };
    h.store.stage_outbound(&out, &effect).unwrap();
    issued.model
}

#[tokio::test]
async fn relay_wait_without_relay_acceptance_is_one_rb22() {
    let h = harness(Some(tsa(&env().url)), true);
    our_dispatch_to_a_peer(&h).await;
    let (t, postfix) = timers(&h, &env().url);
    // No 12 h notice for REM, and nothing before the wait runs out.
    let r = t.run_once(plus(12 * HOUR)).await.unwrap();
    assert!(r.sent.is_empty() && r.rem.is_empty() && r.rem_failed.is_empty());
    assert!(postfix.messages().is_empty());

    // Due with the TSA down: nothing sent, retried by the next pass.
    let (t_down, postfix_down) = timers(&h, &down());
    let r = t_down.run_once(plus(24 * HOUR)).await.unwrap();
    assert_eq!(r.rem_failed.len(), 1, "{r:?}");
    assert!(postfix_down.messages().is_empty());
    assert!(ours(&h, OUR_ID, Event::RelayFailure).is_empty());

    let r = t.run_once(plus(24 * HOUR + 60)).await.unwrap();
    assert_eq!(r.rem_count(RemWaitKind::Relay), 1, "{r:?}");
    assert!(r.rem_failed.is_empty());
    let (event, code, ev) = receipt(&h, &postfix, OUR_SENDER);
    assert_eq!((event, code.as_str()), (Event::RelayFailure, "RB22"));
    assert_eq!(ev.message_id.as_deref(), Some(OUR_ID));
    assert_eq!(ev.relay_info.as_ref().unwrap().refers_to, vec![1]);
    assert_eq!(ours(&h, OUR_ID, Event::RelayFailure).len(), 1);

    // A second pass, later: nothing.
    let r = t.run_once(plus(30 * HOUR)).await.unwrap();
    assert!(r.rem.is_empty() && r.rem_failed.is_empty(), "{r:?}");
    assert_eq!(postfix.messages().len(), 1);
}

#[tokio::test]
async fn a_relay_acceptance_received_before_means_no_rb22() {
    let h = harness(Some(tsa(&env().url)), true);
    let about = our_dispatch_to_a_peer(&h).await;
    // The peer's RelayAcceptance about dan, as the reception point stores it (received).
    let peer = Issuing {
        clock: Arc::new(FixedClock::new(plus(HOUR))),
        ..h.kit.clone()
    };
    let ra = issue::issue_relay(
        &peer,
        Some(&tsa(&env().url)),
        RelayInput {
            about,
            event: Event::RelayAcceptance,
            reason: Reason::by_code("RB01").unwrap(),
            refers_to: vec![1],
            event_time: plus(HOUR),
            policies: settings(None).policies,
            provider: "PEC Example NET S.p.A.".into(),
        },
    )
    .await
    .unwrap();
    let (mut row, _) = ra.stored(OUR_SENDER, vec![(DAN.into(), RecipientType::Esterno)], None);
    row.direction = EvidenceDirection::Received;
    let event = row.log_event(
        OUR_SENDER,
        vec![(DAN.into(), RecipientType::Esterno)],
        "Contratto",
        PEER_SERVICE,
        None,
    );
    assert!(h.store.record_evidence(&row, &event).unwrap());

    let (t, postfix) = timers(&h, &env().url);
    let r = t.run_once(plus(24 * HOUR)).await.unwrap();
    assert_eq!(r.rem.len(), 1, "{r:?}");
    assert_eq!(r.rem[0].notice_id, None, "closed by our records");
    assert!(postfix.messages().is_empty());
    assert!(ours(&h, OUR_ID, Event::RelayFailure).is_empty());
    let waits = h.store.rem_waits_for(OUR_ID).unwrap();
    assert!(waits[0].settled_at.is_some(), "closed");
    // And it stays closed.
    let r = t.run_once(plus(48 * HOUR)).await.unwrap();
    assert!(r.rem.is_empty());
}

#[tokio::test]
async fn consignment_wait_without_outcome_is_one_rd03_and_decides_the_outcome() {
    let h = harness(Some(tsa(&env().url)), true);
    let data = relayed(&h, &[BOB]).await;
    let (t, postfix) = timers(&h, &env().url);
    let r = t.run_once(plus(12 * HOUR)).await.unwrap();
    assert!(r.sent.is_empty() && r.rem.is_empty(), "{r:?}");
    let r = t.run_once(plus(24 * HOUR)).await.unwrap();
    assert_eq!(r.rem_count(RemWaitKind::Consignment), 1, "{r:?}");
    let (event, code, ev) = receipt(&h, &postfix, PEER_SENDER);
    assert_eq!(
        (event, code.as_str()),
        (Event::ContentConsignmentFailure, "RD03")
    );
    assert_eq!(ev.refers_to_recipient, Some(1));
    assert_eq!(ev.message_id.as_deref(), Some(PEER_ID));
    let r = t.run_once(plus(30 * HOUR)).await.unwrap();
    assert!(r.rem.is_empty(), "{r:?}");
    assert_eq!(postfix.messages().len(), 1);

    // The dispatch reaches the mailbox afterwards: stored, but the outcome was decided.
    let (dp, dp_postfix) = delivery(&h, Arc::new(Dovecot::default()), &env().url);
    let replies = dp.deliver(&lmtp(&data, &[BOB])).await;
    assert_eq!(replies[0].code, 250);
    assert!(dp_postfix.messages().is_empty());
    assert!(ours(&h, PEER_ID, Event::ContentConsignment).is_empty());
}

#[tokio::test]
async fn a_consigned_recipient_gets_no_rd03() {
    let h = harness(Some(tsa(&env().url)), true);
    let data = relayed(&h, &[BOB]).await;
    let (dp, _) = delivery(&h, Arc::new(Dovecot::default()), &env().url);
    assert_eq!(dp.deliver(&lmtp(&data, &[BOB])).await[0].code, 250);
    let (t, postfix) = timers(&h, &env().url);
    let r = t.run_once(plus(25 * HOUR)).await.unwrap();
    assert!(r.rem.is_empty() && r.rem_failed.is_empty(), "{r:?}");
    assert!(postfix.messages().is_empty());
    assert!(ours(&h, PEER_ID, Event::ContentConsignmentFailure).is_empty());
}

#[tokio::test]
async fn our_own_dispatch_to_our_own_user_gets_its_consignment_from_our_records() {
    let h = harness(Some(tsa(&env().url)), true);
    let (data, issued) = dispatch(&h.kit, OUR_ID, OUR_SENDER, &[BOB]).await;
    // Delivered before its acceptance is recorded: nothing of ours to consign.
    let (dp, postfix) = delivery(&h, Arc::new(Dovecot::default()), &env().url);
    assert_eq!(dp.deliver(&lmtp(&data, &[BOB])).await[0].code, 250);
    assert!(postfix.messages().is_empty());

    // As the access point records it after queue: our SubmissionAcceptance, and the
    // consignment wait of our own recipient.
    let h = harness(Some(tsa(&env().url)), true);
    let stored = issued.stored(OUR_SENDER, vec![(BOB.into(), RecipientType::Esterno)], None);
    h.store
        .stage_outbound(
            &Outbound {
                key: format!("acceptance:{OUR_ID}"),
                message_id: "receipt.2@pec.example.it".into(),
                mail_from: "posta-certificata@pec.example.it".into(),
                rcpt_to: vec![OUR_SENDER.into()],
                data: b"the submission acceptance receipt".to_vec(),
                created_at: at(),
                injected_at: None,
            },
            &Effect::WithEvidences {
                effect: Box::new(Effect::RemWaits {
                    effect: Box::new(Effect::Log(Vec::new())),
                    waits: vec![RemWait {
                        which: RemWaitKind::Consignment,
                        message_id: OUR_ID.into(),
                        recipient: BOB.into(),
                        started_at: at(),
                    }],
                }),
                evidences: vec![stored],
            },
        )
        .unwrap();
    let (dp, postfix) = delivery(&h, Arc::new(Dovecot::default()), &env().url);
    assert_eq!(dp.deliver(&lmtp(&data, &[BOB])).await[0].code, 250);
    let (event, code, ev) = receipt(&h, &postfix, OUR_SENDER);
    assert_eq!((event, code.as_str()), (Event::ContentConsignment, "RD01"));
    assert_eq!(ev.message_id.as_deref(), Some(OUR_ID));
    assert_eq!(ev.refers_to_recipient, Some(1));
    let waits = h.store.rem_waits_for(OUR_ID).unwrap();
    assert!(
        waits[0].settled_at.is_some(),
        "the consignment wait is closed"
    );
    // The timers have nothing to say about it.
    let (t, tpostfix) = timers(&h, &env().url);
    let r = t.run_once(plus(48 * HOUR)).await.unwrap();
    assert!(r.rem.is_empty() && r.rem_failed.is_empty(), "{r:?}");
    assert!(tpostfix.messages().is_empty());
}

#[tokio::test]
async fn a_delivery_to_a_detail_address_decides_the_mailbox_outcome() {
    let h = harness(Some(tsa(&env().url)), true);
    let data = relayed(&h, &[BOB]).await;
    let (dp, postfix) = delivery(&h, Arc::new(Dovecot::default()), &env().url);
    let detail = "bob+contratti@pec.example.it";
    assert_eq!(dp.deliver(&lmtp(&data, &[detail])).await[0].code, 250);
    let (event, _, ev) = receipt(&h, &postfix, PEER_SENDER);
    assert_eq!(event, Event::ContentConsignment);
    assert_eq!(ev.refers_to_recipient, Some(1));
    // Bob's outcome, and his consignment wait closed: no RD03 later.
    assert!(h.store.delivery_notice(PEER_ID, BOB).unwrap().is_some());
    let (t, tpostfix) = timers(&h, &env().url);
    let r = t.run_once(plus(25 * HOUR)).await.unwrap();
    assert!(r.rem.is_empty() && r.rem_failed.is_empty(), "{r:?}");
    assert!(tpostfix.messages().is_empty());
}

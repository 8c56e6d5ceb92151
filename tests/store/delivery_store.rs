// SPDX-License-Identifier: GPL-3.0-or-later
//! The delivery point's store methods, on SQLite and on the in-memory double alike:
//! verification records and the exactly-once claim of delivery notices.

use pec::doubles::TestStore;
use pec::message::kind::{MessageKind, ReceiptType, RecipientType};
use pec::message::time::Instant;
use pec::store::{ArrivalNotice, EventKind, LogEvent, SqliteStore, Store};

fn at() -> Instant {
    Instant::parse_cli("2025-06-03T08:11:12Z").unwrap()
}

fn event(kind: MessageKind, notice: &str) -> LogEvent {
    LogEvent {
        pec_id: "opec1.x@pec.example.it".into(),
        at: at(),
        kind: EventKind::Issued(kind),
        sender: "alice@pec.example.it".into(),
        recipients: vec![("bob@pec.example.net".into(), RecipientType::Certificato)],
        subject: "s".into(),
        related_ids: vec![notice.into()],
        provider: "P".into(),
        queue_id: None,
        outcome: "ok".into(),
        reason: None,
    }
}

fn exercise(store: &dyn Store) {
    let id = "opec1.x@pec.example.it";
    assert!(!store.is_verified(id, "bob@pec.example.net").unwrap());
    store
        .record_verified(
            id,
            &["Bob@PEC.example.net".into(), "dave@pec.example.net".into()],
            &event(MessageKind::TakeCharge, "tc1@pec.example.net"),
        )
        .unwrap();
    // Idempotent, case-insensitive.
    store
        .record_verified(
            id,
            &["bob@pec.example.net".into()],
            &event(MessageKind::TakeCharge, "tc2@pec.example.net"),
        )
        .unwrap();
    assert!(store.is_verified(id, "BOB@pec.example.net").unwrap());
    assert!(store.is_verified(id, "dave@pec.example.net").unwrap());
    assert!(!store.is_verified(id, "erin@pec.example.net").unwrap());
    assert!(!store.is_verified("other@x", "bob@pec.example.net").unwrap());

    assert_eq!(
        store.delivery_notice(id, "bob@pec.example.net").unwrap(),
        None
    );
    let first = event(
        MessageKind::Delivery(ReceiptType::Breve),
        "n1@pec.example.it",
    );
    assert!(store
        .claim_delivery_notice("bob@pec.example.net", &first)
        .unwrap());
    let again = event(MessageKind::NonDelivery, "n2@pec.example.it");
    assert!(!store
        .claim_delivery_notice("BOB@pec.example.net", &again)
        .unwrap());
    assert_eq!(
        store
            .delivery_notice(id, "bob@pec.example.net")
            .unwrap()
            .as_deref(),
        Some("n1@pec.example.it")
    );
    // Another recipient is independent.
    assert!(store
        .claim_delivery_notice("dave@pec.example.net", &again)
        .unwrap());
    // The two presa-in-carico events recorded with the verification come first.
    let events = store.events_for(id).unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(events[2..], [first, again]);

    // Arrival notices.
    assert_eq!(store.arrival_notice("bob@pec.example.net").unwrap(), None);
    let n = ArrivalNotice {
        notify: "bob@gmail.example".into(),
        senders: vec!["Alice@pec.example.it".into()],
    };
    store
        .set_arrival_notice("Bob@pec.example.net", Some(&n))
        .unwrap();
    let got = store
        .arrival_notice("bob@pec.example.net")
        .unwrap()
        .unwrap();
    assert_eq!(got.notify, "bob@gmail.example");
    assert!(got.applies_to("alice@PEC.example.it"));
    assert!(!got.applies_to("eve@pec.example.it"));
    store
        .set_arrival_notice("bob@pec.example.net", None)
        .unwrap();
    assert_eq!(store.arrival_notice("bob@pec.example.net").unwrap(), None);
}

#[test]
fn sqlite_records_verification_and_claims_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("pec.db")).unwrap();
    exercise(&store);
    // Survives reopening.
    drop(store);
    let store = SqliteStore::open(&dir.path().join("pec.db")).unwrap();
    assert!(store
        .is_verified("opec1.x@pec.example.it", "bob@pec.example.net")
        .unwrap());
}

#[test]
fn mem_store_has_the_same_semantics() {
    exercise(&TestStore::new());
}

/// Delivery intents across nodes (store::outbox): another live owner's intent is busy, a
/// dead owner's is taken over, a completion is final; the same on both stores.
fn intents_across_nodes(store: &dyn Store) {
    use pec::store::outbox::DELIVERY_LEASE_SECS;
    use pec::store::DeliveryMark;
    let bob = ["bob@pec.example.net".to_string()];
    let later = |s: i64| Instant::from_unix(at().unix() + s);
    let begin = |owner: &str, t: Instant| store.begin_deliveries("m@x", &bob, owner, t).unwrap();
    assert_eq!(begin("a.example:1", at()), vec![None]);
    assert_eq!(
        begin("b.example:1", later(1)),
        vec![Some(DeliveryMark::Busy)]
    );
    assert_eq!(
        begin("a.example:1", later(2)),
        vec![Some(DeliveryMark::Intent)]
    );
    let expired = later(2 + DELIVERY_LEASE_SECS);
    assert_eq!(
        begin("b.example:1", expired),
        vec![Some(DeliveryMark::Intent)]
    );
    assert_eq!(
        begin("a.example:1", Instant::from_unix(expired.unix() + 1)),
        vec![Some(DeliveryMark::Busy)]
    );
    store.deliveries_done("m@x", &bob, expired).unwrap();
    assert_eq!(
        begin("a.example:1", later(3 + DELIVERY_LEASE_SECS)),
        vec![Some(DeliveryMark::Done)]
    );
}

#[test]
fn delivery_intents_across_nodes_on_sqlite_and_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    intents_across_nodes(&SqliteStore::open(&dir.path().join("pec.db")).unwrap());
    intents_across_nodes(&TestStore::new());
}

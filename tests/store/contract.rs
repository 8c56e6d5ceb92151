// SPDX-License-Identifier: GPL-3.0-or-later
//! The store contract through the `Store` trait, on SQLite and on PostgreSQL (with
//! `PEC_TEST_PG_URL`): round trips, one transaction per method, exactly-once acceptance
//! under concurrency, several connections (processes, nodes) on one store.

use crate::backends;
use backends::Backend;

use std::sync::{Arc, Barrier};
use std::thread;

use pec::doubles::TestStore;
use pec::message::build::Certification;
use pec::message::daticert::Destinatario;
use pec::message::kind::{MessageKind, ReceiptType, RecipientType};
use pec::message::time::Instant;
use pec::store::{
    Accepted, EventKind, LogEvent, LogStore, MailboxPolicy, Refused, SqliteStore, Store,
    StoreError, TrackingState,
};

const PEC_ID: &str = "opec210312.20240115103005.12345.1.1@pec.example.it";

fn cert(recipients: &[(&str, RecipientType)]) -> Certification {
    Certification {
        mittente: "mario.rossi@pec.example.it".into(),
        destinatari: recipients
            .iter()
            .map(|(a, t)| Destinatario {
                address: a.to_string(),
                tipo: *t,
            })
            .collect(),
        risposte: "mario.rossi@pec.example.it".into(),
        oggetto: "Fattura n. 12 — è urgente".into(),
        identificativo: PEC_ID.into(),
        msgid: Some("<client.1@example.it>".into()),
        requested: ReceiptType::Breve,
        to: recipients.iter().map(|(a, _)| a.to_lowercase()).collect(),
        cc: Vec::new(),
    }
}

fn accepted(pec_id: &str) -> Accepted {
    Accepted {
        auth_at: None,
        pec_id: pec_id.into(),
        queue_id: Some("4XyZ1k2Q3".into()),
        at: Instant::from_unix(1_705_314_605),
        cert: cert(&[
            ("anna.bianchi@pec.altro.it", RecipientType::Certificato),
            ("luigi@gmail.com", RecipientType::Esterno),
            ("ufficio@pec.example.it", RecipientType::Certificato),
        ]),
        login: "mario.rossi@pec.example.it".into(),
        provider: "Example PEC S.p.A.".into(),
    }
}

fn refused(kind: MessageKind, quarantine: Option<Vec<u8>>) -> Refused {
    Refused {
        auth_at: None,
        pec_id: PEC_ID.into(),
        queue_id: Some("5ABCDE".into()),
        at: Instant::from_unix(1_705_314_700),
        cert: cert(&[("anna.bianchi@pec.altro.it", RecipientType::Certificato)]),
        kind,
        reason: "Eicar-Test-Signature".into(),
        notice_id: "notice.1@pec.example.it".into(),
        quarantine,
        provider: "Example PEC S.p.A.".into(),
        login: None,
    }
}

fn kinds(events: &[LogEvent]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

both!(record_accepted_writes_the_envelope_event_tracking_and_pending_acceptance);
fn record_accepted_writes_the_envelope_event_tracking_and_pending_acceptance(backend: &Backend) {
    let store = &*backend.store;
    let a = accepted(PEC_ID);
    store.record_accepted(&a).unwrap();

    // Nothing is logged before Postfix has queued the envelope: the transport envelope is
    // logged with the acceptance, after queue, with the data recorded here.
    assert!(store.events_for(PEC_ID).unwrap().is_empty());
    assert_eq!(store.pending_acceptance(PEC_ID).unwrap(), Some(a.clone()));
    assert!(store
        .acceptance_emitted(PEC_ID, "r@pec.example.it", a.at)
        .unwrap());
    let events = store.events_for(PEC_ID).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[..1].to_vec(),
        vec![LogEvent {
            pec_id: PEC_ID.into(),
            at: a.at,
            kind: EventKind::Issued(MessageKind::TransportEnvelope),
            sender: "mario.rossi@pec.example.it".into(),
            recipients: vec![
                (
                    "anna.bianchi@pec.altro.it".into(),
                    RecipientType::Certificato
                ),
                ("luigi@gmail.com".into(), RecipientType::Esterno),
                ("ufficio@pec.example.it".into(), RecipientType::Certificato),
            ],
            subject: "Fattura n. 12 — è urgente".into(),
            related_ids: vec![PEC_ID.into()],
            provider: "Example PEC S.p.A.".into(),
            queue_id: Some("4XyZ1k2Q3".into()),
            outcome: "ok".into(),
            reason: Some("login SASL: mario.rossi@pec.example.it".into()),
        }]
    );

    // External recipients are not tracked (spec §5.1): no receipts will come back.
    let tracking = store.tracking_for(PEC_ID).unwrap();
    let rows: Vec<(&str, i64, TrackingState)> = tracking
        .iter()
        .map(|t| (t.recipient.as_str(), t.sent_at.unix(), t.state))
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "anna.bianchi@pec.altro.it",
                a.at.unix(),
                TrackingState::Sent
            ),
            ("ufficio@pec.example.it", a.at.unix(), TrackingState::Sent),
        ]
    );
    assert!(tracking.iter().all(|t| t.pec_id == PEC_ID));

    assert_eq!(store.pending_acceptance(PEC_ID).unwrap(), None);
    assert_eq!(
        store.pending_acceptance("other@pec.example.it").unwrap(),
        None
    );
    assert!(store.quarantined(PEC_ID).unwrap().is_empty());
}

both!(only_external_recipients_means_nothing_tracked);
fn only_external_recipients_means_nothing_tracked(backend: &Backend) {
    let store = &*backend.store;
    let mut a = accepted(PEC_ID);
    a.cert = cert(&[
        ("luigi@gmail.com", RecipientType::Esterno),
        ("carla@example.org", RecipientType::Esterno),
    ]);
    store.record_accepted(&a).unwrap();
    assert!(store.tracking_for(PEC_ID).unwrap().is_empty());
    assert!(store
        .acceptance_emitted(PEC_ID, "r@pec.example.it", a.at)
        .unwrap());
    assert_eq!(store.events_for(PEC_ID).unwrap()[0].recipients.len(), 2);
}

both!(recipient_protocols_are_recorded_with_the_acceptance_or_not_at_all);
fn recipient_protocols_are_recorded_with_the_acceptance_or_not_at_all(backend: &Backend) {
    use pec::store::{Effect, Outbound, RecipientProtocol, Staged};
    let store = &*backend.store;
    let a = accepted(PEC_ID);
    let protocols = vec![
        (
            "Anna.Bianchi@pec.altro.it".to_string(),
            RecipientProtocol::Pec,
        ),
        ("luigi@gmail.com".to_string(), RecipientProtocol::NonErds),
        ("ufficio@pec.example.it".to_string(), RecipientProtocol::Rem),
    ];
    store.record_accepted_routed(&a, &protocols).unwrap();
    assert_eq!(
        store.recipient_protocols(PEC_ID).unwrap(),
        vec![
            (
                "anna.bianchi@pec.altro.it".to_string(),
                RecipientProtocol::Pec
            ),
            ("luigi@gmail.com".to_string(), RecipientProtocol::NonErds),
            ("ufficio@pec.example.it".to_string(), RecipientProtocol::Rem),
        ],
        "in recipient order, lower case"
    );
    assert_eq!(store.tracking_for(PEC_ID).unwrap().len(), 2);
    assert!(store.recipient_protocols("other@x").unwrap().is_empty());

    // Staged with a split submission's dispatch: both or neither.
    let other = "opec210312.20240115103005.12345.1.2@pec.example.it";
    let out = |key: &str| Outbound {
        key: key.into(),
        data: b"dispatch".to_vec(),
        message_id: other.into(),
        mail_from: "mario.rossi@pec.example.it".into(),
        rcpt_to: vec!["luigi@gmail.com".into()],
        created_at: a.at,
        injected_at: None,
    };
    let effect = |pec_id: &str| Effect::Accepted {
        accepted: Box::new(accepted(pec_id)),
        protocols: vec![("luigi@gmail.com".to_string(), RecipientProtocol::NonErds)],
    };
    assert_eq!(
        store
            .stage_outbound(&out("rem-dispatch:a"), &effect(other))
            .unwrap(),
        Staged::New
    );
    assert!(store.pending_acceptance(other).unwrap().is_some());
    assert_eq!(store.recipient_protocols(other).unwrap().len(), 1);
    // The same pec_id under another key: the acceptance is recorded already, nothing staged.
    assert!(store
        .stage_outbound(&out("rem-dispatch:b"), &effect(other))
        .is_err());
    assert_eq!(store.outbound("rem-dispatch:b").unwrap(), None);
}

both!(messages_staged_together_are_staged_all_or_none);
fn messages_staged_together_are_staged_all_or_none(backend: &Backend) {
    use pec::store::{Effect, Outbound, RecipientProtocol, Staged};
    // A split submission's REM dispatch with its acceptance, and its two receipts in the
    // same transaction (Effect::Also).
    let store = &*backend.store;
    let a = accepted(PEC_ID);
    let out = |key: &str, id: &str| Outbound {
        key: key.into(),
        data: format!("message {key}").into_bytes(),
        message_id: id.into(),
        mail_from: "mario.rossi@pec.example.it".into(),
        rcpt_to: vec!["luigi@gmail.com".into()],
        created_at: a.at,
        injected_at: None,
    };
    let effect = |pec_id: &str, also: Vec<(Outbound, Effect)>| Effect::Also {
        effect: Box::new(Effect::Accepted {
            accepted: Box::new(accepted(pec_id)),
            protocols: vec![("luigi@gmail.com".to_string(), RecipientProtocol::NonErds)],
        }),
        staged: also,
    };
    let receipts = || {
        vec![
            (out("rem-acceptance:x", "sa@x"), Effect::Log(Vec::new())),
            (out("relay-to-non-erds:x", "rf@x"), Effect::Log(Vec::new())),
        ]
    };
    assert_eq!(
        store
            .stage_outbound(&out("rem-dispatch:x", "d@x"), &effect(PEC_ID, receipts()))
            .unwrap(),
        Staged::New
    );
    for (key, id) in [
        ("rem-dispatch:x", "d@x"),
        ("rem-acceptance:x", "sa@x"),
        ("relay-to-non-erds:x", "rf@x"),
    ] {
        assert_eq!(store.outbound(key).unwrap(), Some(out(key, id)), "{key}");
    }
    assert!(store.pending_acceptance(PEC_ID).unwrap().is_some());
    // Staged again under the same key: that one, nothing written.
    let other = "opec210312.20240115103005.12345.1.3@pec.example.it";
    assert!(matches!(
        store
            .stage_outbound(&out("rem-dispatch:x", "d2@x"), &effect(other, receipts()))
            .unwrap(),
        Staged::Existing(o) if o.message_id == "d@x"
    ));
    assert_eq!(store.pending_acceptance(other).unwrap(), None);

    // A message staged with it that cannot be: none is staged, nor the acceptance.
    let bad = vec![
        (out("rem-acceptance:y", "sa@y"), Effect::Log(Vec::new())),
        (
            out("rem-other:y", "o@y"),
            // Its pec_id is recorded already: an error inside the transaction.
            Effect::Accepted {
                accepted: Box::new(accepted(PEC_ID)),
                protocols: Vec::new(),
            },
        ),
    ];
    assert!(store
        .stage_outbound(&out("rem-dispatch:y", "d@y"), &effect(other, bad))
        .is_err());
    for key in ["rem-dispatch:y", "rem-acceptance:y", "rem-other:y"] {
        assert_eq!(store.outbound(key).unwrap(), None, "{key}");
    }
    assert_eq!(store.pending_acceptance(other).unwrap(), None);
    assert!(store.recipient_protocols(other).unwrap().is_empty());
}

both!(a_duplicate_record_accepted_is_an_error_and_writes_nothing);
fn a_duplicate_record_accepted_is_an_error_and_writes_nothing(backend: &Backend) {
    let store = &*backend.store;
    let first = accepted(PEC_ID);
    store.record_accepted(&first).unwrap();

    // Same pec_id, another recipient and instant: the event and the tracking row are written
    // before the duplicate is detected, and must be rolled back with it.
    let mut second = accepted(PEC_ID);
    second.at = Instant::from_unix(first.at.unix() + 60);
    second.cert = cert(&[("nuovo@pec.altro.it", RecipientType::Certificato)]);
    let err = store.record_accepted(&second).unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    assert!(err.to_string().contains("already recorded"), "{err}");

    assert!(store.events_for(PEC_ID).unwrap().is_empty());
    let recipients: Vec<String> = store
        .tracking_for(PEC_ID)
        .unwrap()
        .into_iter()
        .map(|t| t.recipient)
        .collect();
    assert_eq!(
        recipients,
        ["anna.bianchi@pec.altro.it", "ufficio@pec.example.it"]
    );
    assert_eq!(store.pending_acceptance(PEC_ID).unwrap(), Some(first));
}

both!(acceptance_is_emitted_once_and_logged_with_the_stored_certification);
fn acceptance_is_emitted_once_and_logged_with_the_stored_certification(backend: &Backend) {
    let store = &*backend.store;
    let a = accepted(PEC_ID);
    store.record_accepted(&a).unwrap();
    let at = Instant::from_unix(a.at.unix() + 2);

    assert!(store
        .acceptance_emitted(PEC_ID, "receipt.1@pec.example.it", at)
        .unwrap());
    assert_eq!(store.pending_acceptance(PEC_ID).unwrap(), None);
    assert!(!store
        .acceptance_emitted(PEC_ID, "receipt.2@pec.example.it", at)
        .unwrap());
    assert!(!store
        .acceptance_emitted("unknown@pec.example.it", "receipt.3@pec.example.it", at)
        .unwrap());

    let events = store.events_for(PEC_ID).unwrap();
    assert_eq!(
        kinds(&events),
        [
            EventKind::Issued(MessageKind::TransportEnvelope),
            EventKind::Issued(MessageKind::Acceptance)
        ]
    );
    let acceptance = &events[1];
    assert_eq!(acceptance.at, at);
    assert_eq!(acceptance.related_ids, ["receipt.1@pec.example.it"]);
    assert_eq!(acceptance.sender, events[0].sender);
    assert_eq!(acceptance.recipients, events[0].recipients);
    assert_eq!(acceptance.subject, events[0].subject);
    assert_eq!(acceptance.queue_id, a.queue_id);
    assert_eq!(acceptance.provider, a.provider);
    assert_eq!(acceptance.outcome, "ok");
    assert!(store
        .events_for("unknown@pec.example.it")
        .unwrap()
        .is_empty());
}

/// Runs `acceptance_emitted` from `threads` threads spread over `stores`, all released at
/// once, and returns how many got `true`.
fn race(stores: &[Arc<dyn LogStore>], threads: usize) -> usize {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let store = Arc::clone(&stores[i % stores.len()]);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                store
                    .acceptance_emitted(
                        PEC_ID,
                        &format!("receipt.{i}@pec.example.it"),
                        Instant::from_unix(1_705_314_610),
                    )
                    .unwrap()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|won| *won)
        .count()
}

both!(eight_threads_racing_emit_the_acceptance_exactly_once);
fn eight_threads_racing_emit_the_acceptance_exactly_once(backend: &Backend) {
    let store = &*backend.store;
    store.record_accepted(&accepted(PEC_ID)).unwrap();
    assert_eq!(race(&[Arc::clone(&backend.store)], 8), 1);
    let acceptances = store
        .events_for(PEC_ID)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Issued(MessageKind::Acceptance))
        .count();
    assert_eq!(acceptances, 1);
}

both!(two_connections_racing_emit_the_acceptance_exactly_once);
fn two_connections_racing_emit_the_acceptance_exactly_once(backend: &Backend) {
    let (first, second) = (backend.store.clone(), backend.reopen());
    first.record_accepted(&accepted(PEC_ID)).unwrap();
    let stores = [first, second];
    assert_eq!(race(&stores, 8), 1);
    for store in &stores {
        assert_eq!(store.events_for(PEC_ID).unwrap().len(), 2);
    }
}

both!(two_stores_on_one_file_see_each_others_writes);
fn two_stores_on_one_file_see_each_others_writes(backend: &Backend) {
    let (a, b) = (backend.store.clone(), backend.reopen());

    a.record_accepted(&accepted(PEC_ID)).unwrap();
    assert_eq!(b.events_for(PEC_ID).unwrap().len(), 0);
    assert_eq!(b.tracking_for(PEC_ID).unwrap().len(), 2);
    assert!(b.pending_acceptance(PEC_ID).unwrap().is_some());

    assert!(b
        .acceptance_emitted(
            PEC_ID,
            "r@pec.example.it",
            Instant::from_unix(1_705_314_610)
        )
        .unwrap());
    assert_eq!(a.pending_acceptance(PEC_ID).unwrap(), None);
    assert_eq!(a.events_for(PEC_ID).unwrap().len(), 2);

    b.allow_sender("segreteria", "info@pec.example.it").unwrap();
    assert!(a
        .sender_allowed("segreteria", "info@pec.example.it")
        .unwrap());
}

both!(data_survive_reopening);
fn data_survive_reopening(backend: &Backend) {
    backend.store.record_accepted(&accepted(PEC_ID)).unwrap();
    let store = backend.reopen();
    assert_eq!(store.tracking_for(PEC_ID).unwrap().len(), 2);
    assert_eq!(
        store.pending_acceptance(PEC_ID).unwrap(),
        Some(accepted(PEC_ID))
    );
}

both!(a_formal_refusal_logs_one_event_and_quarantines_nothing);
fn a_formal_refusal_logs_one_event_and_quarantines_nothing(backend: &Backend) {
    let store = &*backend.store;
    let r = refused(MessageKind::NonAcceptance, None);
    store.record_refused(&r).unwrap();
    let events = store.events_for(PEC_ID).unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.kind, EventKind::Issued(MessageKind::NonAcceptance));
    assert_eq!(e.outcome, "refused");
    assert_eq!(e.reason.as_deref(), Some("Eicar-Test-Signature"));
    assert_eq!(e.related_ids, ["notice.1@pec.example.it"]);
    assert_eq!(e.queue_id.as_deref(), Some("5ABCDE"));
    assert_eq!(e.at, r.at);
    assert!(store.quarantined(PEC_ID).unwrap().is_empty());
    assert!(store.tracking_for(PEC_ID).unwrap().is_empty());
    assert_eq!(store.pending_acceptance(PEC_ID).unwrap(), None);
}

both!(a_virus_refusal_quarantines_the_message_and_logs_it);
fn a_virus_refusal_quarantines_the_message_and_logs_it(backend: &Backend) {
    let store = &*backend.store;
    let message = b"From: a@pec.example.it\r\n\r\nX5O!P%@AP[4\\PZX54(P^)7CC)7}\r\n".to_vec();
    store
        .record_refused(&refused(
            MessageKind::NonAcceptanceVirus,
            Some(message.clone()),
        ))
        .unwrap();
    let events = store.events_for(PEC_ID).unwrap();
    assert_eq!(
        kinds(&events),
        [
            EventKind::Issued(MessageKind::NonAcceptanceVirus),
            EventKind::Quarantined
        ]
    );
    assert_eq!(events[0].outcome, "virus");
    assert_eq!(events[1].reason.as_deref(), Some("Eicar-Test-Signature"));
    assert_eq!(store.quarantined(PEC_ID).unwrap(), vec![message]);
}

both!(logged_events_read_back_oldest_first);
fn logged_events_read_back_oldest_first(backend: &Backend) {
    let store = &*backend.store;
    let event = |at: i64, kind: EventKind| LogEvent {
        pec_id: PEC_ID.into(),
        at: Instant::from_unix(at),
        kind,
        sender: "mario.rossi@pec.example.it".into(),
        recipients: vec![(
            "anna.bianchi@pec.altro.it".into(),
            RecipientType::Certificato,
        )],
        subject: "s".into(),
        related_ids: vec!["a@x".into(), "b@x".into()],
        provider: "Altro PEC".into(),
        queue_id: None,
        outcome: "ok".into(),
        reason: Some("consegna=anna.bianchi@pec.altro.it".into()),
    };
    let later = event(
        200,
        EventKind::Issued(MessageKind::Delivery(ReceiptType::Breve)),
    );
    let earlier = event(100, EventKind::Issued(MessageKind::TakeCharge));
    let rejected = event(300, EventKind::RejectedInSmtp);
    store.log(&later).unwrap();
    store.log(&earlier).unwrap();
    store.log(&rejected).unwrap();
    assert_eq!(
        store.events_for(PEC_ID).unwrap(),
        vec![earlier, later, rejected]
    );
}

both!(a_login_sends_as_itself_unless_it_has_mappings);
fn a_login_sends_as_itself_unless_it_has_mappings(backend: &Backend) {
    let store = &*backend.store;
    // Default rule: no mapping, the login is the address (case-insensitive).
    assert!(store
        .sender_allowed("mario.rossi@pec.example.it", "Mario.Rossi@PEC.example.it")
        .unwrap());
    assert!(!store
        .sender_allowed("mario.rossi@pec.example.it", "other@pec.example.it")
        .unwrap());
    assert!(!store
        .sender_allowed("mario", "mario@pec.example.it")
        .unwrap());

    // An explicit mapping replaces the default; stored and compared in lower case.
    store
        .allow_sender("mario.rossi@pec.example.it", "Ufficio@PEC.Example.it")
        .unwrap();
    store
        .allow_sender("mario.rossi@pec.example.it", "ufficio@pec.example.it")
        .unwrap();
    assert!(store
        .sender_allowed("mario.rossi@pec.example.it", "UFFICIO@pec.example.it")
        .unwrap());
    assert!(!store
        .sender_allowed("mario.rossi@pec.example.it", "mario.rossi@pec.example.it")
        .unwrap());

    // A mapping for one login leaves the others on the default rule.
    assert!(store
        .sender_allowed("anna@pec.example.it", "anna@pec.example.it")
        .unwrap());
    store
        .allow_sender("mario.rossi@pec.example.it", "mario.rossi@pec.example.it")
        .unwrap();
    assert!(store
        .sender_allowed("mario.rossi@pec.example.it", "Mario.Rossi@pec.example.it")
        .unwrap());
}

both!(the_store_is_shareable_across_threads);
fn the_store_is_shareable_across_threads(backend: &Backend) {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SqliteStore>();
    assert_send_sync::<pec::store::PgStore>();
    let shared: Arc<dyn LogStore> = backend.store.clone();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let store = Arc::clone(&shared);
            thread::spawn(move || {
                store
                    .record_accepted(&accepted(&format!("id.{i}@pec.example.it")))
                    .unwrap()
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for i in 0..4 {
        let id = format!("id.{i}@pec.example.it");
        assert!(shared.pending_acceptance(&id).unwrap().is_some());
    }
}

#[test]
fn opening_in_a_missing_directory_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("pec.db");
    let err = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(err.starts_with("store: open \""), "{err}");
    assert!(err.contains("missing/pec.db"), "{err}");
}

#[test]
fn connections_opening_a_new_file_at_once_migrate_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = Arc::new(dir.path().join("pec.db"));
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let path = Arc::clone(&path);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                SqliteStore::open(&path).unwrap()
            })
        })
        .collect();
    let stores: Vec<SqliteStore> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let versions: Vec<u32> = stores.iter().map(|s| s.schema_version().unwrap()).collect();
    assert!(
        versions.iter().all(|v| *v == versions[0] && *v >= 1),
        "{versions:?}"
    );
    stores[0].record_accepted(&accepted(PEC_ID)).unwrap();
    assert!(stores[3].pending_acceptance(PEC_ID).unwrap().is_some());
}

/// The reception-point methods, with the same semantics in SQLite and in the double.
fn reception_methods(store: &dyn Store) {
    assert_eq!(store.envelope_certification(PEC_ID).unwrap(), None);
    store.record_accepted(&accepted(PEC_ID)).unwrap();
    assert_eq!(
        store.envelope_certification(PEC_ID).unwrap(),
        Some(accepted(PEC_ID).cert)
    );
    // Still there once the acceptance was emitted.
    store
        .acceptance_emitted(
            PEC_ID,
            "r0@pec.example.it",
            Instant::from_unix(1_705_314_606),
        )
        .unwrap();
    assert_eq!(
        store.envelope_certification(PEC_ID).unwrap(),
        Some(accepted(PEC_ID).cert)
    );
    let event = LogEvent {
        pec_id: "opec.other@pec.altro.it".into(),
        at: Instant::from_unix(1_705_314_700),
        kind: EventKind::Issued(MessageKind::TakeCharge),
        sender: "x@pec.altro.it".into(),
        recipients: vec![("ufficio@pec.example.it".into(), RecipientType::Certificato)],
        subject: "s".into(),
        related_ids: vec!["r1@pec.example.it".into()],
        provider: "Altro".into(),
        queue_id: Some("Q1".into()),
        outcome: "ok".into(),
        reason: None,
    };
    let rcpts = vec!["Ufficio@pec.example.it".to_string()];
    store
        .record_verified("opec.other@pec.altro.it", &rcpts, &event)
        .unwrap();
    // A retry records it again without error.
    store
        .record_verified("opec.other@pec.altro.it", &rcpts, &event)
        .unwrap();
    assert!(store
        .is_verified("opec.other@pec.altro.it", "ufficio@PEC.example.it")
        .unwrap());
    assert!(!store
        .is_verified("opec.other@pec.altro.it", "altro@pec.example.it")
        .unwrap());
    assert!(!store.is_verified(PEC_ID, "ufficio@pec.example.it").unwrap());
    assert_eq!(
        kinds(&store.events_for("opec.other@pec.altro.it").unwrap()),
        vec![
            EventKind::Issued(MessageKind::TakeCharge),
            EventKind::Issued(MessageKind::TakeCharge)
        ]
    );

    // Tracking only moves forward.
    let state = |who: &str| {
        store
            .tracking_for(PEC_ID)
            .unwrap()
            .into_iter()
            .find(|t| t.recipient == who)
            .unwrap()
            .state
    };
    let anna = "anna.bianchi@pec.altro.it";
    assert!(store
        .update_tracking(
            PEC_ID,
            "ANNA.bianchi@pec.altro.it",
            TrackingState::TakenInCharge
        )
        .unwrap());
    assert_eq!(state(anna), TrackingState::TakenInCharge);
    assert!(store
        .update_tracking(PEC_ID, anna, TrackingState::Delivered)
        .unwrap());
    assert!(!store
        .update_tracking(PEC_ID, anna, TrackingState::TakenInCharge)
        .unwrap());
    assert!(!store
        .update_tracking(PEC_ID, anna, TrackingState::Failed)
        .unwrap());
    assert_eq!(state(anna), TrackingState::Delivered);
    assert!(!store
        .update_tracking(PEC_ID, "nobody@pec.altro.it", TrackingState::Failed)
        .unwrap());
    assert!(!store
        .update_tracking("unknown", anna, TrackingState::Failed)
        .unwrap());
    assert!(store
        .update_tracking(PEC_ID, "ufficio@pec.example.it", TrackingState::Failed)
        .unwrap());

    // Quarantine with its event.
    let q = LogEvent {
        pec_id: "opec.virus@pec.altro.it".into(),
        kind: EventKind::Quarantined,
        outcome: "virus".into(),
        reason: Some("Eicar".into()),
        ..event.clone()
    };
    store.record_quarantine(&q, b"infected").unwrap();
    assert_eq!(
        store.quarantined("opec.virus@pec.altro.it").unwrap(),
        vec![b"infected".to_vec()]
    );
    assert_eq!(
        kinds(&store.events_for("opec.virus@pec.altro.it").unwrap()),
        vec![EventKind::Quarantined]
    );
    // The same bytes again (a retry, another node): nothing more; other bytes: held too.
    store.record_quarantine(&q, b"infected").unwrap();
    store.record_quarantine(&q, b"infected, other").unwrap();
    assert_eq!(
        store.quarantined("opec.virus@pec.altro.it").unwrap(),
        vec![b"infected".to_vec(), b"infected, other".to_vec()]
    );
    assert_eq!(
        kinds(&store.events_for("opec.virus@pec.altro.it").unwrap()),
        vec![EventKind::Quarantined, EventKind::Quarantined]
    );

    // Mailbox policies.
    assert_eq!(store.mailbox_policy("a@pec.example.it").unwrap(), None);
    store
        .set_mailbox_policy("A@pec.example.it", &MailboxPolicy::Refuse)
        .unwrap();
    assert_eq!(
        store.mailbox_policy("a@PEC.example.it").unwrap(),
        Some(MailboxPolicy::Refuse)
    );
    let fwd = MailboxPolicy::Forward("a.rossi@example.org".into());
    store.set_mailbox_policy("a@pec.example.it", &fwd).unwrap();
    assert_eq!(store.mailbox_policy("a@pec.example.it").unwrap(), Some(fwd));
    store
        .set_mailbox_policy("a@pec.example.it", &MailboxPolicy::Anomaly)
        .unwrap();
    assert_eq!(
        store.mailbox_policy("a@pec.example.it").unwrap(),
        Some(MailboxPolicy::Anomaly)
    );
}

both!(reception_methods_stored);
fn reception_methods_stored(backend: &Backend) {
    reception_methods(&*backend.store);
    // They survive a reopen (migration 2 applied once).
    let store = backend.reopen();
    assert!(store
        .is_verified("opec.other@pec.altro.it", "ufficio@pec.example.it")
        .unwrap());
}

#[test]
fn reception_methods_mem() {
    reception_methods(&TestStore::new());
}

fn fresh() -> (tempfile::TempDir, std::path::PathBuf, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pec.db");
    let store = SqliteStore::open(&path).unwrap();
    (dir, path, store)
}

/// A received receipt moves its tracking rows and is logged in one transaction (SQLite):
/// when the log write fails, no row moves.
#[test]
fn a_received_receipt_moves_tracking_and_is_logged_atomically() {
    use pec::message::kind::Ricevuta;
    let (_dir, path, store) = fresh();
    store.record_accepted(&accepted(PEC_ID)).unwrap();
    let event = LogEvent {
        pec_id: PEC_ID.into(),
        at: Instant::from_unix(1_705_314_700),
        kind: EventKind::Received(Ricevuta::PresaInCarico),
        sender: "mario.rossi@pec.example.it".into(),
        recipients: vec![(
            "anna.bianchi@pec.altro.it".into(),
            RecipientType::Certificato,
        )],
        subject: "Fattura".into(),
        related_ids: vec!["opec.pic.1@pec.altro.it".into()],
        provider: "Altro PEC".into(),
        queue_id: None,
        outcome: "correlated".into(),
        reason: None,
    };
    let updates = [(
        "Anna.Bianchi@pec.altro.it".to_string(),
        TrackingState::TakenInCharge,
    )];
    let state = |s: &SqliteStore| {
        s.tracking_for(PEC_ID)
            .unwrap()
            .into_iter()
            .find(|t| t.recipient == "anna.bianchi@pec.altro.it")
            .unwrap()
            .state
    };

    let side = rusqlite::Connection::open(&path).unwrap();
    side.execute_batch(
        "CREATE TRIGGER refuse_events BEFORE INSERT ON events
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    )
    .unwrap();
    assert!(store
        .record_receipt_received(&event, &updates, None)
        .is_err());
    assert_eq!(state(&store), TrackingState::Sent, "rolled back");

    side.execute_batch("DROP TRIGGER refuse_events;").unwrap();
    assert_eq!(
        store
            .record_receipt_received(&event, &updates, None)
            .unwrap(),
        1
    );
    assert_eq!(state(&store), TrackingState::TakenInCharge);
    let logged = store.events_for(PEC_ID).unwrap();
    assert_eq!(logged.last().unwrap(), &event);
    // A repeated receipt moves nothing and is logged again (the log shows duplicates).
    assert_eq!(
        store
            .record_receipt_received(&event, &updates, None)
            .unwrap(),
        0
    );
    assert_eq!(store.events_for(PEC_ID).unwrap().len(), logged.len() + 1);
}

both!(log_requests_are_rate_limited_answered_once_and_logged);
fn log_requests_are_rate_limited_answered_once_and_logged(backend: &Backend) {
    use pec::store::LogRequest;
    let store = &backend.store;
    let at = Instant::from_unix(1_705_314_700);
    let request = |id: &str| LogRequest {
        id: id.into(),
        owner: "mario.rossi@pec.example.it".into(),
        address: "registro@pec.example.it".into(),
        at,
        period: Ok((
            Instant::from_unix(1_704_063_600),
            Instant::from_unix(1_706_742_000),
        )),
        subject: "registro 2024-01".into(),
        queue_id: Some("4REQ".into()),
    };
    let event = |id: &str, kind: EventKind| LogEvent {
        pec_id: id.into(),
        at,
        kind,
        sender: "mario.rossi@pec.example.it".into(),
        recipients: vec![("registro@pec.example.it".into(), RecipientType::Certificato)],
        subject: "registro 2024-01".into(),
        related_ids: vec!["<reply.1@pec.example.it>".into()],
        provider: "PEC Example".into(),
        queue_id: Some("4REQ".into()),
        outcome: String::new(),
        reason: None,
    };
    let since = Instant::from_unix(at.unix() - 3600);
    assert!(store
        .claim_log_request(
            &request("req.1"),
            1,
            since,
            &event("req.1", EventKind::LogRequest)
        )
        .unwrap());
    // Over the limit: refused, logged, not recorded.
    assert!(!store
        .claim_log_request(
            &request("req.2"),
            1,
            since,
            &event("req.2", EventKind::LogRequest)
        )
        .unwrap());
    assert_eq!(store.log_request("req.2").unwrap(), None);
    let refused = store.events_for("req.2").unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].outcome, "rate-limited");

    let (got, answered) = store.log_request("req.1").unwrap().unwrap();
    assert_eq!((got, answered), (request("req.1"), false));
    let extract = event("req.1", EventKind::LogExtract);
    assert!(store.log_request_answered(&extract).unwrap());
    assert!(
        !store.log_request_answered(&extract).unwrap(),
        "closed once"
    );
    assert!(store.log_request("req.1").unwrap().unwrap().1);
    assert_eq!(
        kinds(&store.events_for("req.1").unwrap()),
        vec![EventKind::LogRequest, EventKind::LogExtract]
    );
    let report = store.verify_chain(None, None).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.records, 3);
}

both!(added_domains_are_kept_once);
fn added_domains_are_kept_once(backend: &Backend) {
    let store = &backend.store;
    assert!(store.add_domain("PEC2.example.it", 1_705_314_700).unwrap());
    assert!(!store.add_domain("pec2.example.it", 1_705_314_701).unwrap());
    assert!(store.add_domain("pec1.example.it", 1_705_314_702).unwrap());
    assert_eq!(
        store.extra_domains().unwrap(),
        vec!["pec1.example.it", "pec2.example.it"]
    );
    assert!(store.remove_domain("pec2.example.it").unwrap());
    assert!(!store.remove_domain("pec2.example.it").unwrap());
    assert_eq!(
        backend.reopen().extra_domains().unwrap(),
        vec!["pec1.example.it"]
    );
    assert_eq!(store.health().unwrap().log_records, 0);
}

// SPDX-License-Identifier: GPL-3.0-or-later
//! Receipts and quarantine kept, not only logged (issue 21.5), on both backends: the
//! received receipts beside their legal-log record and purged with it, the quarantine
//! listed and read back byte-exact, and the retention purge that `pec serve` schedules.

use crate::backends;
use backends::Backend;

use std::sync::Arc;
use std::time::Duration;

use pec::log::{scheduled_purge, PurgeSchedule, PURGE_LEASE};
use pec::message::build::Certification;
use pec::message::kind::{MessageKind, ReceiptType};
use pec::message::kind::{RecipientType, Ricevuta};
use pec::message::time::{FixedClock, Instant};
use pec::store::{
    Accepted, EventKind, LogEvent, LogQuery, LogStore, QuarantineQuery, Refused, SealRecord,
    TrackingState,
};

const PEC_ID: &str = "opec210312.20240115103005.12345.1.1@pec.example.it";

/// 2024-01-15T10:30:05Z.
const AT: i64 = 1_705_314_605;

fn received(pec_id: &str, at: i64, message_id: &str) -> LogEvent {
    LogEvent {
        pec_id: pec_id.into(),
        at: Instant::from_unix(at),
        kind: EventKind::Received(Ricevuta::PresaInCarico),
        sender: "mario.rossi@pec.example.it".into(),
        recipients: vec![(
            "anna.bianchi@pec.altro.it".into(),
            RecipientType::Certificato,
        )],
        subject: "Fattura".into(),
        related_ids: vec![message_id.into()],
        provider: "Altro PEC".into(),
        queue_id: None,
        outcome: "uncorrelated".into(),
        reason: Some("consumata".into()),
    }
}

fn quarantined(pec_id: &str, at: i64) -> LogEvent {
    LogEvent {
        pec_id: pec_id.into(),
        at: Instant::from_unix(at),
        kind: EventKind::Quarantined,
        sender: "mario.rossi@pec.example.it".into(),
        recipients: Vec::new(),
        subject: "Fattura".into(),
        related_ids: Vec::new(),
        provider: "Altro PEC".into(),
        queue_id: None,
        outcome: "virus".into(),
        reason: Some("Eicar-Test-Signature".into()),
    }
}

/// Bytes no text column would keep as they are: NUL, a lone CR, 8-bit, CRLF.
fn signed_bytes(n: u8) -> Vec<u8> {
    let mut b = b"MIME-Version: 1.0\r\nX-Ricevuta: presa-in-carico\r\n\r\n".to_vec();
    b.extend_from_slice(&[0, 13, 0xff, 0x80, n, b'\r', b'\n']);
    b
}

/// A seal over the day's export as stored (the purge needs a seal, not a signature).
fn fake_seal(store: &dyn LogStore, day: &str, from_at: i64, to_at: i64) -> SealRecord {
    use sha2::Digest;
    let export = store.export_range(from_at, to_at).unwrap();
    SealRecord {
        day: day.into(),
        from_at,
        to_at,
        count: export.count,
        first_id: export.first_id,
        last_id: export.last_id,
        export_sha256: sha2::Sha256::digest(&export.bytes).to_vec(),
        signature: b"not a signature".to_vec(),
        tst: None,
        tsa_url: None,
        sealed_at: to_at + 600,
    }
}

both!(received_receipts_are_kept_beside_their_record_and_purged_with_it);
fn received_receipts_are_kept_beside_their_record_and_purged_with_it(backend: &Backend) {
    let store = &backend.store;
    let bytes = signed_bytes(1);
    let updates: [(String, TrackingState); 0] = [];
    store
        .record_receipt_received(
            &received(PEC_ID, AT, "pic.1@pec.altro.it"),
            &updates,
            Some(&bytes),
        )
        .unwrap();
    // Without bytes (over the size bound): logged, nothing kept.
    store
        .record_receipt_received(
            &received(PEC_ID, AT + 1, "pic.2@pec.altro.it"),
            &updates,
            None,
        )
        .unwrap();
    let other = signed_bytes(2);
    store
        .record_receipt_received(
            &received("other@pec.example.it", AT + 2, "pic.3@pec.altro.it"),
            &updates,
            Some(&other),
        )
        .unwrap();

    let kept = store.kept_receipts(PEC_ID).unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].message, bytes, "byte-exact");
    assert_eq!(kept[0].kind, "presa-in-carico");
    assert_eq!(kept[0].message_id.as_deref(), Some("pic.1@pec.altro.it"));
    assert_eq!(kept[0].at, AT);
    let records = store
        .search_events(&LogQuery {
            pec_id: Some(PEC_ID.into()),
            ..LogQuery::default()
        })
        .unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(kept[0].event_id, records[0].id, "beside its own record");
    assert!(store
        .kept_receipts("nobody@pec.example.it")
        .unwrap()
        .is_empty());

    // The purge: a sealed day past the cutoff goes, its receipts with it; the chain stays
    // verifiable.
    let (from, to) = pec::log::day_bounds(pec::log::legal_day(Instant::from_unix(AT)));
    store
        .insert_seal(&fake_seal(&**store, "2024-01-15", from, to))
        .unwrap();
    let report = store
        .purge(
            Instant::from_unix(to),
            Instant::from_unix(to),
            Instant::from_unix(to + 86_400),
            "Example PEC",
        )
        .unwrap();
    assert_eq!(report.events, 3);
    assert_eq!(report.receipts, 2);
    assert!(store.kept_receipts(PEC_ID).unwrap().is_empty());
    assert!(store
        .kept_receipts("other@pec.example.it")
        .unwrap()
        .is_empty());
    assert!(store.verify_chain(None, None).unwrap().problems.is_empty());
    let purged = store
        .search_events(&LogQuery {
            kind: Some("Cancellazione".into()),
            ..LogQuery::default()
        })
        .unwrap();
    assert!(
        purged[0]
            .event
            .reason
            .as_deref()
            .unwrap()
            .contains("2 kept receipts"),
        "{purged:?}"
    );
}

both!(quarantine_is_listed_and_read_back_byte_exact);
fn quarantine_is_listed_and_read_back_byte_exact(backend: &Backend) {
    let store = &backend.store;
    let first = b"From: a\r\n\r\nX5O!P%@AP\x00\xff".to_vec();
    let second = b"From: b\r\n\r\ninfected".to_vec();
    store
        .record_quarantine(&quarantined(PEC_ID, AT), &first)
        .unwrap();
    store
        .record_quarantine(&quarantined("two@pec.example.it", AT + 100), &second)
        .unwrap();

    let all = store.quarantine_list(&QuarantineQuery::default()).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (
            all[0].pec_id.as_str(),
            all[0].at,
            all[0].size,
            all[0].reason.as_str()
        ),
        (PEC_ID, AT, first.len() as u64, "Eicar-Test-Signature")
    );
    assert!(all[0].expires_at > AT + 2 * 365 * 86_400, "30 months later");
    assert_eq!(all[1].pec_id, "two@pec.example.it");
    let by_id = |q: QuarantineQuery| -> Vec<String> {
        store
            .quarantine_list(&q)
            .unwrap()
            .into_iter()
            .map(|e| e.pec_id)
            .collect()
    };
    assert_eq!(
        by_id(QuarantineQuery {
            pec_id: Some("two@pec.example.it".into()),
            ..QuarantineQuery::default()
        }),
        ["two@pec.example.it"]
    );
    assert_eq!(
        by_id(QuarantineQuery {
            from: Some(AT + 1),
            ..QuarantineQuery::default()
        }),
        ["two@pec.example.it"]
    );
    assert_eq!(
        by_id(QuarantineQuery {
            to: Some(AT + 1),
            ..QuarantineQuery::default()
        }),
        [PEC_ID]
    );
    assert_eq!(
        by_id(QuarantineQuery {
            limit: Some(1),
            ..QuarantineQuery::default()
        }),
        [PEC_ID]
    );
    let (entry, bytes) = store.quarantine_message(all[0].id).unwrap().unwrap();
    assert_eq!(entry, all[0]);
    assert_eq!(bytes, first, "byte-exact");
    assert_eq!(
        store.quarantine_message(all[1].id).unwrap().unwrap().1,
        second
    );
    // Bad input: an id that was never stored.
    assert!(store.quarantine_message(-1).unwrap().is_none());
    assert!(store.quarantine_message(i64::MAX).unwrap().is_none());
}

both!(the_scheduled_purge_deletes_what_is_past_retention_and_holds_the_interval);
fn the_scheduled_purge_deletes_what_is_past_retention_and_holds_the_interval(backend: &Backend) {
    let store = backend.store.clone();
    // Quarantined 2024-01-15; "now" is 31 months later.
    store
        .record_quarantine(&quarantined(PEC_ID, AT), b"infected")
        .unwrap();
    let now = Instant::from_unix(AT + 31 * 31 * 86_400);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = rt.spawn(scheduled_purge(
        store.clone(),
        PurgeSchedule {
            every: Duration::from_secs(3600),
            log_months: 30,
            quarantine_months: 30,
            provider: "Example PEC".into(),
        },
        Arc::new(FixedClock::new(now)),
        rx,
    ));
    // Poll the store with a deadline: the first pass runs at start.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let logged = loop {
        let purged = store
            .search_events(&LogQuery {
                kind: Some("Cancellazione".into()),
                ..LogQuery::default()
            })
            .unwrap();
        if !purged.is_empty() {
            break purged;
        }
        assert!(std::time::Instant::now() < deadline, "no purge within 30 s");
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
    };
    stop.send(true).unwrap();
    rt.block_on(task).unwrap();
    assert!(store
        .quarantine_list(&QuarantineQuery::default())
        .unwrap()
        .is_empty());
    assert_eq!(logged.len(), 1);
    assert!(logged[0]
        .event
        .reason
        .as_deref()
        .unwrap()
        .contains("1 quarantined messages"));
    // The interval is held: on a store shared by nodes, another node does not purge in it
    // (a SQLite store serves one host and has no one to share with).
    let other = backend.reopen();
    let held_elsewhere = !other
        .try_lease(PURGE_LEASE, "other-node:1", now, 3600)
        .unwrap();
    assert_eq!(held_elsewhere, backend.name == "postgres");
}

fn cert(pec_id: &str) -> Certification {
    Certification {
        mittente: "mario.rossi@pec.example.it".into(),
        destinatari: Vec::new(),
        risposte: "mario.rossi@pec.example.it".into(),
        oggetto: "Fattura".into(),
        identificativo: pec_id.into(),
        msgid: None,
        requested: ReceiptType::Completa,
        to: Vec::new(),
        cc: Vec::new(),
    }
}

both!(the_sasl_login_of_a_submission_is_in_its_records);
fn the_sasl_login_of_a_submission_is_in_its_records(backend: &Backend) {
    let store = &backend.store;
    let at = Instant::from_unix(AT);
    store
        .record_accepted(&Accepted {
            auth_at: None,
            pec_id: PEC_ID.into(),
            queue_id: None,
            at,
            cert: cert(PEC_ID),
            login: "m.rossi".into(),
            provider: "Example PEC".into(),
        })
        .unwrap();
    assert!(store
        .acceptance_emitted(PEC_ID, "acc.1@pec.example.it", at)
        .unwrap());
    let refused = "opec.refused@pec.example.it";
    store
        .record_refused(&Refused {
            auth_at: None,
            pec_id: refused.into(),
            queue_id: None,
            at,
            cert: cert(refused),
            kind: MessageKind::NonAcceptanceVirus,
            reason: "Eicar-Test-Signature".into(),
            notice_id: "na.1@pec.example.it".into(),
            quarantine: Some(b"infected".to_vec()),
            provider: "Example PEC".into(),
            login: Some("m.rossi".into()),
        })
        .unwrap();
    let reasons = |id: &str| -> Vec<(String, Option<String>)> {
        store
            .events_for(id)
            .unwrap()
            .into_iter()
            .map(|e| (e.kind.label().to_string(), e.reason))
            .collect()
    };
    assert_eq!(
        reasons(PEC_ID),
        [
            ("BustaTrasporto".into(), Some("login SASL: m.rossi".into())),
            ("Accettazione".into(), Some("login SASL: m.rossi".into())),
        ]
    );
    let virus = Some("Eicar-Test-Signature; login SASL: m.rossi".to_string());
    assert_eq!(
        reasons(refused),
        [
            ("NonAccettazioneVirus".into(), virus.clone()),
            ("Quarantena".into(), virus),
        ]
    );
    // The quarantine keeps the verdict alone.
    assert_eq!(
        store.quarantine_list(&QuarantineQuery::default()).unwrap()[0].reason,
        "Eicar-Test-Signature"
    );
    // Encoding version 1 unchanged: the chain verifies.
    assert!(store.verify_chain(None, None).unwrap().problems.is_empty());
}

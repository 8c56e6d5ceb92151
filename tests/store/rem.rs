// SPDX-License-Identifier: GPL-3.0-or-later
//! The REM records of the store (issue 20, schema version 16) on both backends: evidences
//! beside their legal-log record (duplicate id refused unless the same bytes, purged with
//! the record), sender identities with their audit rows, and the SASL authentication
//! time of each submission in its records; the REM waits of the timers (version 18).

use crate::backends;
use backends::Backend;

use pec::message::build::Certification;
use pec::message::kind::{MessageKind, ReceiptType, RecipientType};
use pec::message::time::Instant;
use pec::store::{
    Accepted, EventKind, Evidence, EvidenceDirection, IdentityAttribute, LogQuery, LogStore,
    Refused, RemWait, RemWaitClaim, SealRecord, SenderIdentity, Store, StoreError,
};

/// 2024-01-15T10:30:05Z.
const AT: i64 = 1_705_314_605;
const MESSAGE: &str = "rem-msg-1@rem.example.it";
const ACCEPTANCE: &str = "http://uri.etsi.org/REM/Event#SubmissionAcceptance";

/// Bytes a text column would not keep: NUL, a lone CR, 8-bit, CRLF.
fn xml(n: u8) -> Vec<u8> {
    let mut b = b"<?xml version=\"1.0\"?>\r\n<Evidence Id=\"e\">".to_vec();
    b.extend_from_slice(&[0, 13, 0xff, 0x80, n, b'\r', b'\n']);
    b.extend_from_slice(b"</Evidence>");
    b
}

fn evidence(id: &str, message: &str, at: i64, direction: EvidenceDirection) -> Evidence {
    Evidence {
        id: id.into(),
        message_id: message.into(),
        event: ACCEPTANCE.into(),
        reason: None,
        recipient: Some("anna.bianchi@rem.altro.it".into()),
        issuer: "Example PEC".into(),
        at: Instant::from_unix(at),
        direction,
        xml: xml(1),
    }
}

fn record(store: &dyn LogStore, e: &Evidence) -> Result<bool, StoreError> {
    let event = e.log_event(
        "mario.rossi@pec.example.it",
        vec![(
            "anna.bianchi@rem.altro.it".into(),
            RecipientType::Certificato,
        )],
        "Fattura",
        "Example PEC",
        None,
    );
    store.record_evidence(e, &event)
}

both!(evidences_are_recorded_beside_their_log_record_and_read_back_byte_exact);
fn evidences_are_recorded_beside_their_log_record_and_read_back_byte_exact(backend: &Backend) {
    let store = &backend.store;
    let issued = evidence("ev-1", MESSAGE, AT, EvidenceDirection::Issued);
    let mut received = evidence("ev-2", MESSAGE, AT + 5, EvidenceDirection::Received);
    received.event = "http://uri.etsi.org/REM/Event#ContentConsignmentFailure".into();
    received.reason = Some("http://uri.etsi.org/REM/RejectionReason#MailboxFull".into());
    received.issuer = "CN=REM Altro, O=Altro S.p.A., C=IT".into();
    received.recipient = None;
    received.xml = xml(2);
    let other = evidence(
        "ev-3",
        "other@rem.example.it",
        AT + 9,
        EvidenceDirection::Issued,
    );
    assert!(record(&**store, &issued).unwrap());
    assert!(record(&**store, &received).unwrap());
    assert!(record(&**store, &other).unwrap());

    let got = store.evidence("ev-2").unwrap().unwrap();
    assert_eq!(got.evidence, received, "every field, the XML byte-exact");
    assert_eq!(got.sha256, received.sha256().to_vec());
    assert_eq!(store.evidence("nonexistent").unwrap(), None);

    let list = store.evidences_for(MESSAGE).unwrap();
    let ids: Vec<&str> = list.iter().map(|s| s.evidence.id.as_str()).collect();
    assert_eq!(ids, ["ev-1", "ev-2"], "in the order recorded");
    assert!(store.evidences_for("nobody").unwrap().is_empty());

    // Each beside its own legal-log record, which names the event, the reason and the
    // digest; the chain (encoding version 1) verifies.
    let records = store
        .search_events(&LogQuery {
            pec_id: Some(MESSAGE.into()),
            ..LogQuery::default()
        })
        .unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(list[0].event_id, records[0].id);
    assert_eq!(list[1].event_id, records[1].id);
    let e = &records[1].event;
    assert_eq!(e.kind, EventKind::RemEvidence(EvidenceDirection::Received));
    assert_eq!(e.kind.label(), "EvidenzaREMRicevuta");
    assert_eq!(records[0].event.kind.label(), "EvidenzaREMEmessa");
    assert_eq!(e.related_ids, ["ev-2"]);
    assert_eq!(
        e.reason.as_deref(),
        Some(
            format!(
                "evento http://uri.etsi.org/REM/Event#ContentConsignmentFailure; \
                 motivo http://uri.etsi.org/REM/RejectionReason#MailboxFull; sha256 {}",
                hex::encode(received.sha256())
            )
            .as_str()
        )
    );
    // The kind is searchable by its label.
    let by_kind = store
        .search_events(&LogQuery {
            kind: Some("EvidenzaREMEmessa".into()),
            ..LogQuery::default()
        })
        .unwrap();
    assert_eq!(by_kind.len(), 2);
    assert!(store.verify_chain(None, None).unwrap().problems.is_empty());
}

both!(a_duplicate_evidence_id_is_a_no_op_with_the_same_bytes_and_refused_with_others);
fn a_duplicate_evidence_id_is_a_no_op_with_the_same_bytes_and_refused_with_others(
    backend: &Backend,
) {
    let store = &backend.store;
    let first = evidence("ev-1", MESSAGE, AT, EvidenceDirection::Received);
    assert!(record(&**store, &first).unwrap());
    // The same bytes again (a retry): nothing recorded, no second log record.
    assert!(!record(&**store, &first).unwrap());
    // The same id with other bytes: a typed error, nothing recorded.
    let mut forged = first.clone();
    forged.xml = xml(9);
    match record(&**store, &forged) {
        Err(StoreError::EvidenceConflict(id)) => assert_eq!(id, "ev-1"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.evidence("ev-1").unwrap().unwrap().evidence.xml,
        xml(1)
    );
    let records = store
        .search_events(&LogQuery {
            pec_id: Some(MESSAGE.into()),
            ..LogQuery::default()
        })
        .unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    // A log record of another kind is refused, nothing written.
    let e = evidence("ev-4", MESSAGE, AT, EvidenceDirection::Issued);
    let mut event = e.log_event("a@pec.example.it", Vec::new(), "", "P", None);
    event.kind = EventKind::Quarantined;
    assert!(store.record_evidence(&e, &event).is_err());
    assert_eq!(store.evidence("ev-4").unwrap(), None);
}

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

both!(evidences_are_purged_with_their_records);
fn evidences_are_purged_with_their_records(backend: &Backend) {
    let store = &backend.store;
    record(
        &**store,
        &evidence("ev-old", MESSAGE, AT, EvidenceDirection::Issued),
    )
    .unwrap();
    let (from, to) = pec::log::day_bounds(pec::log::legal_day(Instant::from_unix(AT)));
    // A record of the next day, past the cutoff: stays.
    record(
        &**store,
        &evidence("ev-new", MESSAGE, to + 3600, EvidenceDirection::Issued),
    )
    .unwrap();
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
    assert_eq!(report.events, 1);
    assert_eq!(report.evidences, 1);
    assert_eq!(store.evidence("ev-old").unwrap(), None);
    assert!(store.evidence("ev-new").unwrap().is_some());
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
            .contains("1 REM evidences"),
        "{purged:?}"
    );
}

fn identity(set_at: i64, by: &str) -> SenderIdentity {
    SenderIdentity {
        attributes: vec![
            IdentityAttribute {
                name: "http://eidas.europa.eu/attributes/naturalperson/PersonIdentifier".into(),
                value: "IT/IT/RSSMRA80A01H501U".into(),
            },
            IdentityAttribute {
                name: "http://eidas.europa.eu/attributes/naturalperson/CurrentFamilyName".into(),
                value: "Rossi".into(),
            },
        ],
        level: "http://eidas.europa.eu/LoA/substantial".into(),
        policy: Some("agid-rem-1".into()),
        proofing: "spid".into(),
        set_at: Instant::from_unix(set_at),
        set_by: by.into(),
    }
}

both!(sender_identities_are_set_read_replaced_and_cleared_with_an_audit_trail);
fn sender_identities_are_set_read_replaced_and_cleared_with_an_audit_trail(backend: &Backend) {
    let store = &backend.store;
    let mailbox = "Mario.Rossi@pec.example.it";
    assert_eq!(store.sender_identity(mailbox).unwrap(), None);
    assert!(!store
        .clear_sender_identity(mailbox, Instant::from_unix(AT), "root")
        .unwrap());
    let first = identity(AT, "alice");
    store.set_sender_identity(mailbox, &first).unwrap();
    assert_eq!(
        store
            .sender_identity("mario.rossi@pec.example.it")
            .unwrap()
            .as_ref(),
        Some(&first),
        "case-insensitive, attributes in order"
    );
    let mut second = identity(AT + 60, "bob");
    second.policy = None;
    second.attributes.truncate(1);
    store.set_sender_identity(mailbox, &second).unwrap();
    assert_eq!(store.sender_identity(mailbox).unwrap(), Some(second));
    assert!(store
        .clear_sender_identity(mailbox, Instant::from_unix(AT + 120), "carol")
        .unwrap());
    assert_eq!(store.sender_identity(mailbox).unwrap(), None);
    let changes: Vec<(String, i64, String)> = store
        .sender_identity_changes(mailbox)
        .unwrap()
        .into_iter()
        .map(|c| (c.action, c.at.unix(), c.by))
        .collect();
    assert_eq!(
        changes,
        [
            ("set".into(), AT, "alice".into()),
            ("set".into(), AT + 60, "bob".into()),
            ("clear".into(), AT + 120, "carol".into()),
        ]
    );
    assert!(store
        .sender_identity_changes("nobody@pec.example.it")
        .unwrap()
        .is_empty());
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

both!(the_authentication_time_of_a_submission_is_in_its_records);
fn the_authentication_time_of_a_submission_is_in_its_records(backend: &Backend) {
    let store = &backend.store;
    let at = Instant::from_unix(AT);
    let auth = Instant::from_unix(AT - 42);
    let accepted = Accepted {
        pec_id: "opec.auth@pec.example.it".into(),
        queue_id: None,
        at,
        cert: cert("opec.auth@pec.example.it"),
        login: "m.rossi".into(),
        auth_at: Some(auth),
        provider: "Example PEC".into(),
    };
    store.record_accepted(&accepted).unwrap();
    assert_eq!(
        store.pending_acceptance(&accepted.pec_id).unwrap(),
        Some(accepted.clone()),
        "read back with its authentication time"
    );
    assert!(store
        .acceptance_emitted(&accepted.pec_id, "acc.1@pec.example.it", at)
        .unwrap());
    let refused = Refused {
        pec_id: "opec.refused@pec.example.it".into(),
        queue_id: None,
        at,
        cert: cert("opec.refused@pec.example.it"),
        kind: MessageKind::NonAcceptance,
        reason: "troppi destinatari".into(),
        notice_id: "na.1@pec.example.it".into(),
        quarantine: None,
        provider: "Example PEC".into(),
        login: Some("m.rossi".into()),
        auth_at: Some(auth),
    };
    store.record_refused(&refused).unwrap();
    let reasons = |id: &str| -> Vec<Option<String>> {
        store
            .events_for(id)
            .unwrap()
            .into_iter()
            .map(|e| e.reason)
            .collect()
    };
    let login = "login SASL: m.rossi; autenticazione: 2024-01-15T10:29:23Z";
    assert_eq!(
        reasons(&accepted.pec_id),
        [Some(login.to_string()), Some(login.to_string())]
    );
    assert_eq!(
        reasons(&refused.pec_id),
        [Some(format!("troppi destinatari; {login}"))]
    );
    assert!(store.verify_chain(None, None).unwrap().problems.is_empty());
}

#[test]
fn pec_store_copy_carries_the_rem_records() {
    let Some(pg) = Backend::postgres("copy_rem") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pec.db");
    let sqlite = pec::store::SqliteStore::open(&path).unwrap();
    let e = evidence("ev-1", MESSAGE, AT, EvidenceDirection::Received);
    record(&sqlite, &e).unwrap();
    let mailbox = "mario.rossi@pec.example.it";
    sqlite
        .set_sender_identity(mailbox, &identity(AT, "alice"))
        .unwrap();
    sqlite
        .clear_sender_identity(mailbox, Instant::from_unix(AT + 1), "bob")
        .unwrap();
    sqlite
        .set_sender_identity(mailbox, &identity(AT + 2, "carol"))
        .unwrap();
    let accepted = Accepted {
        pec_id: "opec.auth@pec.example.it".into(),
        queue_id: None,
        at: Instant::from_unix(AT),
        cert: cert("opec.auth@pec.example.it"),
        login: "m.rossi".into(),
        auth_at: Some(Instant::from_unix(AT - 5)),
        provider: "Example PEC".into(),
    };
    sqlite.record_accepted(&accepted).unwrap();
    sqlite
        .stage_outbound(
            &outbound("w1", "w1@pec.example.it"),
            &pec::store::Effect::RemWaits {
                effect: Box::new(pec::store::Effect::Log(Vec::new())),
                waits: vec![wait(
                    pec::store::RemWaitKind::Relay,
                    MESSAGE,
                    "anna@rem.altro.it",
                    AT,
                )],
            },
        )
        .unwrap();

    let dest = pec::store::PgStore::open_tls(pg.url.as_deref().unwrap(), 2, &backends::test_tls())
        .unwrap();
    let report = pec::store::copy::copy_from_sqlite(&path, &dest).unwrap();
    let rows = |t: &str| report.tables.iter().find(|(n, _)| *n == t).unwrap().1;
    assert_eq!(rows("rem_evidences"), 1);
    assert_eq!(rows("sender_identities"), 1);
    assert_eq!(rows("sender_identity_changes"), 3);
    assert_eq!(rows("acceptance_auth"), 1);
    assert_eq!(rows("rem_waits"), 1);
    assert_eq!(
        dest.rem_waits_for(MESSAGE).unwrap(),
        sqlite.rem_waits_for(MESSAGE).unwrap()
    );
    assert_eq!(
        dest.evidence("ev-1").unwrap(),
        sqlite.evidence("ev-1").unwrap()
    );
    assert_eq!(
        dest.sender_identity(mailbox).unwrap(),
        sqlite.sender_identity(mailbox).unwrap()
    );
    assert_eq!(
        dest.sender_identity_changes(mailbox).unwrap(),
        sqlite.sender_identity_changes(mailbox).unwrap()
    );
    assert_eq!(
        dest.pending_acceptance(&accepted.pec_id).unwrap(),
        Some(accepted)
    );
    assert!(dest.verify_chain(None, None).unwrap().problems.is_empty());
}

fn outbound(key: &str, message_id: &str) -> pec::store::Outbound {
    pec::store::Outbound {
        key: key.into(),
        message_id: message_id.into(),
        mail_from: "rem-service@pec.example.it".into(),
        rcpt_to: vec!["mario.rossi@pec.example.it".into()],
        data: b"REM-MessageType: receipt\r\n\r\nbody\r\n".to_vec(),
        created_at: Instant::from_unix(AT),
        injected_at: None,
    }
}

fn with_evidences(inner: pec::store::Effect, evidences: &[&Evidence]) -> pec::store::Effect {
    pec::store::Effect::WithEvidences {
        effect: Box::new(inner),
        evidences: evidences
            .iter()
            .map(|e| {
                let event = e.log_event(
                    "mario.rossi@pec.example.it",
                    vec![],
                    "Fattura",
                    "Example PEC",
                    Some("4F1A2B3C4D"),
                );
                ((*e).clone(), event)
            })
            .collect(),
    }
}

both!(an_evidence_is_staged_with_the_message_that_carries_it_in_one_transaction);
fn an_evidence_is_staged_with_the_message_that_carries_it_in_one_transaction(backend: &Backend) {
    use pec::store::{Effect, Staged};
    let store = &backend.store;
    let ev = evidence("ev-out-1", MESSAGE, AT, EvidenceDirection::Issued);
    let log = |what: &str| {
        let mut e = ev.log_event("mario.rossi@pec.example.it", vec![], what, "P", None);
        e.kind = EventKind::Issued(MessageKind::NonAcceptance);
        e
    };

    // Staged: the outbox row, the claim's records and the evidence beside its record.
    let staged = store
        .stage_outbound(
            &outbound("rem-receipt:1", "r1@pec.example.it"),
            &with_evidences(Effect::Log(vec![log("claim")]), &[&ev]),
        )
        .unwrap();
    assert_eq!(staged, Staged::New);
    let stored = store.evidence("ev-out-1").unwrap().expect("recorded");
    assert_eq!(stored.evidence, ev);
    assert!(store.outbound("rem-receipt:1").unwrap().is_some());
    let records = store
        .search_events(&LogQuery {
            pec_id: Some(MESSAGE.into()),
            ..LogQuery::default()
        })
        .unwrap();
    assert_eq!(records.len(), 2, "the claim's record and the evidence's");
    assert_eq!(stored.event_id, records[1].id);
    assert_eq!(
        records[1].event.kind,
        EventKind::RemEvidence(EvidenceDirection::Issued)
    );

    // A retry finds the row: nothing written again.
    let again = store
        .stage_outbound(
            &outbound("rem-receipt:1", "r1@pec.example.it"),
            &with_evidences(Effect::Log(vec![log("claim")]), &[&ev]),
        )
        .unwrap();
    assert!(matches!(again, Staged::Existing(o) if o.message_id == "r1@pec.example.it"));
    assert_eq!(store.evidences_for(MESSAGE).unwrap().len(), 1);

    // A claim taken already (no pending acceptance): nothing staged, no evidence.
    let other = evidence("ev-out-2", MESSAGE, AT, EvidenceDirection::Issued);
    let claimed = store
        .stage_outbound(
            &outbound("acceptance:none", "r2@pec.example.it"),
            &with_evidences(
                Effect::Acceptance {
                    pec_id: "not-pending@pec.example.it".into(),
                    receipt_id: "r2@pec.example.it".into(),
                    at: Instant::from_unix(AT),
                },
                &[&other],
            ),
        )
        .unwrap();
    assert_eq!(claimed, Staged::Claimed);
    assert_eq!(store.evidence("ev-out-2").unwrap(), None);

    // An evidence id recorded with other bytes: the whole staging fails, nothing kept
    // (no outbox row, no claim record).
    let mut conflicting = ev.clone();
    conflicting.xml = xml(9);
    let err = store
        .stage_outbound(
            &outbound("rem-receipt:3", "r3@pec.example.it"),
            &with_evidences(Effect::Log(vec![log("second claim")]), &[&conflicting]),
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::EvidenceConflict(ref id) if id == "ev-out-1"),
        "{err}"
    );
    assert!(store.outbound("rem-receipt:3").unwrap().is_none());
    let after = store
        .search_events(&LogQuery {
            pec_id: Some(MESSAGE.into()),
            ..LogQuery::default()
        })
        .unwrap();
    assert_eq!(after.len(), 2, "rolled back");
    assert_eq!(store.evidence("ev-out-1").unwrap().unwrap().evidence, ev);
}

fn wait(which: pec::store::RemWaitKind, message: &str, recipient: &str, at: i64) -> RemWait {
    RemWait {
        which,
        message_id: message.into(),
        recipient: recipient.into(),
        started_at: Instant::from_unix(at),
    }
}

fn claim(which: pec::store::RemWaitKind, up_to: i64, now: i64) -> RemWaitClaim {
    RemWaitClaim {
        which,
        started_up_to: Instant::from_unix(up_to),
        now: Instant::from_unix(now),
        stale_before: Instant::from_unix(now - 900),
        limit: 10,
    }
}

both!(rem_waits_begin_with_their_event_are_claimed_once_and_closed_by_the_outcome);
fn rem_waits_begin_with_their_event_are_claimed_once_and_closed_by_the_outcome(backend: &Backend) {
    use pec::store::{Effect, RemWaitKind::*, Staged};
    let store = &backend.store;
    let begin = |key: &str, waits: Vec<RemWait>| {
        store
            .stage_outbound(
                &outbound(key, &format!("{key}@pec.example.it")),
                &Effect::RemWaits {
                    effect: Box::new(Effect::Log(Vec::new())),
                    waits,
                },
            )
            .unwrap()
    };
    assert_eq!(
        begin(
            "w1",
            vec![
                wait(Relay, MESSAGE, "Anna@rem.altro.it", AT),
                wait(Consignment, MESSAGE, "bob@pec.example.it", AT),
                wait(Consignment, "other", "bob@pec.example.it", AT + 100),
            ]
        ),
        Staged::New
    );
    // Begun again (another event naming the same wait): kept as it was.
    begin(
        "w2",
        vec![wait(Relay, MESSAGE, "anna@rem.altro.it", AT + 50)],
    );
    let waits = store.rem_waits_for(MESSAGE).unwrap();
    assert_eq!(waits.len(), 2);
    assert_eq!(waits[0].wait, wait(Relay, MESSAGE, "anna@rem.altro.it", AT));

    // Not due yet; then due, claimed once until the lease runs out.
    assert!(store
        .claim_rem_waits(&claim(Relay, AT - 1, AT + 10))
        .unwrap()
        .is_empty());
    let due = store.claim_rem_waits(&claim(Relay, AT, AT + 10)).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].wait.recipient, "anna@rem.altro.it");
    assert!(store
        .claim_rem_waits(&claim(Relay, AT, AT + 20))
        .unwrap()
        .is_empty());
    // Released: claimed again at once; taken over after the lease.
    store.release_rem_wait(&due[0]).unwrap();
    let again = store.claim_rem_waits(&claim(Relay, AT, AT + 30)).unwrap();
    assert_eq!(again.len(), 1);
    let taken = store
        .claim_rem_waits(&claim(Relay, AT, AT + 30 + 901))
        .unwrap();
    assert_eq!(taken.len(), 1);
    // Its notice closes it, once.
    let notice = Effect::RemWaitNotice {
        due: Box::new(taken[0].clone()),
        notice_id: "rb22@pec.example.it".into(),
        at: Instant::from_unix(AT + 2000),
    };
    assert_eq!(
        store
            .stage_outbound(&outbound("rb22", "rb22@pec.example.it"), &notice)
            .unwrap(),
        Staged::New
    );
    assert_eq!(
        store
            .stage_outbound(&outbound("rb22-again", "x@pec.example.it"), &notice)
            .unwrap(),
        Staged::Claimed
    );
    let waits = store.rem_waits_for(MESSAGE).unwrap();
    assert_eq!(waits[0].notice_id.as_deref(), Some("rb22@pec.example.it"));
    assert_eq!(waits[0].settled_at, Some(Instant::from_unix(AT + 2000)));
    assert!(store
        .claim_rem_waits(&claim(Relay, AT + 9999, AT + 9999))
        .unwrap()
        .is_empty());

    // The consignment outcome is one per recipient and closes the wait.
    let outcome = |id: &str| Effect::RemOutcome {
        message_id: MESSAGE.into(),
        recipient: "BOB@pec.example.it".into(),
        kind: "ContentConsignment".into(),
        notice_id: id.into(),
        at: Instant::from_unix(AT + 60),
    };
    assert_eq!(
        store
            .stage_outbound(&outbound("rd01", "rd01@x"), &outcome("rd01@x"))
            .unwrap(),
        Staged::New
    );
    assert_eq!(
        store
            .stage_outbound(&outbound("rd03", "rd03@x"), &outcome("rd03@x"))
            .unwrap(),
        Staged::Claimed
    );
    assert_eq!(
        store
            .delivery_notice(MESSAGE, "bob@pec.example.it")
            .unwrap()
            .as_deref(),
        Some("rd01@x")
    );
    let waits = store.rem_waits_for(MESSAGE).unwrap();
    assert_eq!(waits[1].notice_id.as_deref(), Some("rd01@x"));
    // The other message's wait: due, and closed without a claim when its outcome is
    // decided before the pass.
    assert!(store
        .claim_rem_waits(&claim(Consignment, AT + 99, AT + 9999))
        .unwrap()
        .is_empty());
    assert!(store
        .stage_outbound(
            &outbound("rd01-other", "rd01o@x"),
            &Effect::RemOutcome {
                message_id: "other".into(),
                recipient: "bob@pec.example.it".into(),
                kind: "ContentConsignment".into(),
                notice_id: "rd01o@x".into(),
                at: Instant::from_unix(AT + 100),
            },
        )
        .is_ok());
    store
        .stage_outbound(
            &outbound("w3", "w3@x"),
            &Effect::RemWaits {
                effect: Box::new(Effect::Log(Vec::new())),
                waits: vec![wait(Consignment, "third", "carol@pec.example.it", AT)],
            },
        )
        .unwrap();
    let due = store
        .claim_rem_waits(&claim(Consignment, AT + 9999, AT + 9999))
        .unwrap();
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].wait.message_id, "third");
    assert!(store
        .settle_rem_wait(&due[0], Instant::from_unix(AT + 9999))
        .unwrap());
    assert!(!store
        .settle_rem_wait(&due[0], Instant::from_unix(AT + 9999))
        .unwrap());
    let other = store.rem_waits_for("other").unwrap();
    assert!(other[0].settled_at.is_some(), "closed by its outcome");
}

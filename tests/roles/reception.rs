// SPDX-License-Identifier: GPL-3.0-or-later
//! The reception point (spec §5.2) in process: `AfterQueue` with the in-memory store, a
//! recording injector in place of Postfix's reinjection listener, the marker antivirus and
//! the test PKI — `it` is provider A (pec.example.it), `net` is provider B
//! (pec.example.net). Unless a test says otherwise we are B, receiving from A.
//! The real samples of `shared/pec-samples` come in as mail from another provider.

use crate::samples;
use samples::{namirial_envelope, NAMIRIAL};

use std::path::Path;
use std::sync::Arc;

use openssl::x509::X509;
use pec::antivirus::Antivirus;
use pec::crypto::{smime, Signer};
use pec::doubles::MarkerAntivirus;
use pec::index::{ProviderIndex, ProviderInfo, ProviderRecord, TrustSet};
use pec::message::build::{Builder, Certification, Generated, OriginalInfo};
use pec::message::classify::{classify, Classification};
use pec::message::ids::SequentialIds;
use pec::message::kind::{Errore, MessageKind, RecipientType, Ricevuta, Tipo};
use pec::message::mime::base64_lines;
use pec::message::time::Instant;
use pec::reception::Local;
use pec::smtp::{FilterReply, InjectError, Transaction};
use pec::store::{Accepted, EventKind, LogQuery, LogStore, MailboxPolicy, Store, TrackingState};

use crate::two_providers;
use two_providers::*;

/// A transport envelope from A's alice to B's bob and dave (and carol, external).
fn envelope_a_to_b(original: &[u8]) -> (Generated, Certification) {
    let info = OriginalInfo::parse(original).unwrap();
    let cert = Certification::for_submission(
        &info,
        "alice@pec.example.it",
        &[
            ("bob@pec.example.net".into(), RecipientType::Certificato),
            ("dave@pec.example.net".into(), RecipientType::Certificato),
            ("carol@example.com".into(), RecipientType::Esterno),
        ],
        A_ID,
    );
    let env = Provider::A.build(|b| b.transport_envelope(original, &cert, at()).unwrap());
    (env, cert)
}

const RCPTS: [&str; 3] = [
    "bob@pec.example.net",
    "dave@pec.example.net",
    "carol@example.com",
];

#[tokio::test]
async fn valid_envelope_is_taken_in_charge_recorded_and_delivered() {
    let r = rx(Provider::B);
    let (env, _) = envelope_a_to_b(&fixture("contratto.eml"));
    let data = env.to_bytes();
    assert_eq!(
        r.run("alice@pec.example.it", &RCPTS, &data).await,
        FilterReply::Accept
    );
    let sent = r.sent();
    assert_eq!(sent.len(), 3, "{sent:?}");
    // Remote recipient first, unchanged.
    assert_eq!(sent[0].rcpt_to, vec!["carol@example.com"]);
    assert_eq!(sent[0].message, data);
    // One presa in carico to A's mailReceipt, listing both local recipients, signed by us.
    assert_eq!(sent[1].rcpt_to, vec!["ricevute@pec.example.it"]);
    match r.classify(&sent[1]) {
        Classification::Receipt(Ricevuta::PresaInCarico, m) => {
            assert_eq!(m.daticert.tipo, Tipo::PresaInCarico);
            assert_eq!(
                m.daticert.ricezione,
                vec!["bob@pec.example.net", "dave@pec.example.net"]
            );
            assert_eq!(m.daticert.identificativo, A_ID);
            assert_eq!(m.verified.provider.unwrap().name, Provider::B.name());
            assert_eq!(
                m.daticert.data,
                pec::message::daticert::DataCert::from_instant(now())
            );
        }
        other => panic!("{other:?}"),
    }
    // The envelope, unchanged, for the local recipients.
    assert_eq!(
        sent[2].rcpt_to,
        vec!["bob@pec.example.net", "dave@pec.example.net"]
    );
    assert_eq!(sent[2].message, data);
    assert_eq!(sent[2].mail_from, "alice@pec.example.it");
    // Verified for the delivery point, logged.
    assert!(r.store.is_verified(A_ID, "BOB@pec.example.net").unwrap());
    assert!(r.store.is_verified(A_ID, "dave@pec.example.net").unwrap());
    assert!(!r.store.is_verified(A_ID, "carol@example.com").unwrap());
    let events = r.store.events_for(A_ID).unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind.label()).collect::<Vec<_>>(),
        vec!["PresaInCarico"]
    );
    assert_eq!(events[0].queue_id.as_deref(), Some("4TESTQ"));
}

#[tokio::test]
async fn same_provider_envelope_gets_acceptance_take_charge_and_our_tracking_moves() {
    let r = rx(Provider::A);
    let original = String::from_utf8(fixture("contratto.eml"))
        .unwrap()
        .replace(
            "To: Bob Bianchi <bob@pec.example.net>, carol@example.com",
            "To: ugo@pec.example.it, Bob Bianchi <bob@pec.example.net>",
        )
        .into_bytes();
    let info = OriginalInfo::parse(&original).unwrap();
    let cert = Certification::for_submission(
        &info,
        "alice@pec.example.it",
        &[
            ("ugo@pec.example.it".into(), RecipientType::Certificato),
            ("bob@pec.example.net".into(), RecipientType::Certificato),
        ],
        A_ID,
    );
    let env = Provider::A.build(|b| b.transport_envelope(&original, &cert, at()).unwrap());
    r.store
        .record_accepted(&Accepted {
            auth_at: None,
            pec_id: A_ID.into(),
            queue_id: Some("4ACC".into()),
            at: at(),
            cert,
            login: "alice@pec.example.it".into(),
            provider: Provider::A.name().into(),
        })
        .unwrap();
    let data = env.to_bytes();
    let reply = r
        .run(
            "alice@pec.example.it",
            &["ugo@pec.example.it", "bob@pec.example.net"],
            &data,
        )
        .await;
    assert_eq!(reply, FilterReply::Accept);
    let sent = r.sent();
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert_eq!(
        header(&sent[0].message, "X-Ricevuta").as_deref(),
        Some("accettazione")
    );
    assert_eq!(sent[0].rcpt_to, vec!["alice@pec.example.it"]);
    assert_eq!(sent[1].rcpt_to, vec!["bob@pec.example.net"]);
    assert_eq!(sent[1].message, data);
    assert_eq!(
        header(&sent[2].message, "X-Ricevuta").as_deref(),
        Some("presa-in-carico")
    );
    assert_eq!(sent[2].rcpt_to, vec!["ricevute@pec.example.it"]);
    assert_eq!(sent[3].rcpt_to, vec!["ugo@pec.example.it"]);
    let tracking = r.store.tracking_for(A_ID).unwrap();
    let state = |who: &str| tracking.iter().find(|t| t.recipient == who).unwrap().state;
    assert_eq!(state("ugo@pec.example.it"), TrackingState::TakenInCharge);
    assert_eq!(state("bob@pec.example.net"), TrackingState::Sent);
    assert!(r.store.is_verified(A_ID, "ugo@pec.example.it").unwrap());
}

#[tokio::test]
async fn virus_in_a_valid_envelope_is_not_delivered_and_reported_per_recipient() {
    let r = rx(Provider::B);
    let mut original = b"From: alice@pec.example.it\r\nTo: bob@pec.example.net, dave@pec.example.net\r\nCc: carol@example.com\r\nSubject: fattura\r\nMessage-ID: <v1@client>\r\n\r\nsee attachment ".to_vec();
    original.extend_from_slice(MARKER);
    original.extend_from_slice(b"\r\n");
    let (env, _) = envelope_a_to_b(&original);
    let data = env.to_bytes();
    let reply = r
        .run(
            "alice@pec.example.it",
            &["bob@pec.example.net", "dave@pec.example.net"],
            &data,
        )
        .await;
    assert_eq!(reply, FilterReply::Accept);
    let sent = r.sent();
    assert_eq!(sent.len(), 3, "{sent:?}");
    // Taken in charge first (spec §5.2: the virus is the second phase), one presa in
    // carico for both, without verification: nothing reaches the delivery point.
    assert_eq!(sent[0].rcpt_to, vec!["ricevute@pec.example.it"]);
    match r.classify(&sent[0]) {
        Classification::Receipt(Ricevuta::PresaInCarico, p) => {
            assert_eq!(
                p.daticert.ricezione,
                vec!["bob@pec.example.net", "dave@pec.example.net"]
            );
            assert_eq!(p.daticert.identificativo, A_ID);
        }
        other => panic!("{other:?}"),
    }
    for (m, who) in sent[1..]
        .iter()
        .zip(["bob@pec.example.net", "dave@pec.example.net"])
    {
        assert_eq!(m.rcpt_to, vec!["ricevute@pec.example.it"]);
        assert_eq!(
            header(&m.message, "X-Mittente").as_deref(),
            Some("alice@pec.example.it")
        );
        assert!(
            find(&m.message, MARKER).is_none(),
            "original must not be attached"
        );
        match r.classify(m) {
            Classification::Receipt(Ricevuta::RilevazioneVirus, p) => {
                assert_eq!(p.daticert.consegna.as_deref(), Some(who));
                assert_eq!(p.daticert.errore, Errore::Virus);
                assert_eq!(p.daticert.identificativo, A_ID);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(r.store.quarantined(A_ID).unwrap(), vec![data.clone()]);
    assert!(!r.store.is_verified(A_ID, "bob@pec.example.net").unwrap());
    let kinds: Vec<_> = r
        .store
        .events_for(A_ID)
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&EventKind::Quarantined));
    assert!(kinds.contains(&EventKind::Issued(MessageKind::TakeCharge)));
    // A retry of the same queue file: nothing new (quarantine, presa in carico and
    // notices are each recorded once).
    let again = r
        .run(
            "alice@pec.example.it",
            &["bob@pec.example.net", "dave@pec.example.net"],
            &data,
        )
        .await;
    assert_eq!(again, FilterReply::Accept);
    assert_eq!(r.sent().len(), 3);
    assert_eq!(r.store.quarantined(A_ID).unwrap().len(), 1);
    assert_eq!(r.store.events_for(A_ID).unwrap().len(), kinds.len());
}

fn state_of(r: &Rx, who: &str) -> TrackingState {
    r.store
        .tracking_for(B_ID)
        .unwrap()
        .into_iter()
        .find(|t| t.recipient == who)
        .unwrap()
        .state
}

#[tokio::test]
async fn take_charge_for_our_mail_receipt_is_consumed_and_moves_tracking() {
    let r = rx(Provider::B);
    let cert = our_envelope_b_to_a(&r.store);
    let pic = Provider::A.build(|b| {
        b.take_charge(
            &cert,
            at(),
            &["alice@pec.example.it".into()],
            &r.we.mail_receipt(),
        )
        .unwrap()
    });
    let reply = r
        .run(
            &pic.mail_from,
            &pic.rcpt_to.iter().map(String::as_str).collect::<Vec<_>>(),
            &pic.to_bytes(),
        )
        .await;
    assert_eq!(reply, FilterReply::Accept);
    assert!(r.sent().is_empty(), "consumed, not delivered");
    assert_eq!(
        state_of(&r, "alice@pec.example.it"),
        TrackingState::TakenInCharge
    );
}

#[tokio::test]
async fn consumed_receipts_are_kept_signed_beside_their_record() {
    let r = rx(Provider::B);
    let cert = our_envelope_b_to_a(&r.store);
    let pic = Provider::A.build(|b| {
        b.take_charge(
            &cert,
            at(),
            &["alice@pec.example.it".into()],
            &r.we.mail_receipt(),
        )
        .unwrap()
    });
    let data = pic.to_bytes();
    let rcpt = [r.we.mail_receipt()];
    let rcpt: Vec<&str> = rcpt.iter().map(String::as_str).collect();
    assert_eq!(
        r.run(&pic.mail_from, &rcpt, &data).await,
        FilterReply::Accept
    );
    let kept = r.store.log_store().kept_receipts(B_ID).unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].message, data, "byte-exact, as received");
    assert_eq!(kept[0].kind, "presa-in-carico");
    assert_eq!(kept[0].message_id.as_deref(), Some(pic.message_id.as_str()));
    // Beside its record: the Ricezione record of the log carries that id.
    let logged = r
        .store
        .search_events(&LogQuery {
            pec_id: Some(B_ID.into()),
            kind: Some("Ricezione".into()),
            ..LogQuery::default()
        })
        .unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].id, kept[0].event_id);
    // Still a valid signed PEC receipt when read back.
    match classify(&kept[0].message, index().trust(), now()) {
        Classification::Receipt(Ricevuta::PresaInCarico, _) => {}
        other => panic!("{other:?}"),
    }
    // A rilevazione virus for our mailReceipt is kept too.
    let virus = Provider::A.build(|b| {
        b.virus_detection(
            &cert,
            at(),
            "alice@pec.example.it",
            "PEC-Test-Virus",
            &r.we.mail_receipt(),
        )
        .unwrap()
    });
    let vdata = virus.to_bytes();
    assert_eq!(
        r.run(&virus.mail_from, &rcpt, &vdata).await,
        FilterReply::Accept
    );
    let kept = r.store.log_store().kept_receipts(B_ID).unwrap();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[1].kind, "rilevazione-virus");
    assert_eq!(kept[1].message, vdata);
}

#[tokio::test]
async fn a_receipt_over_the_size_bound_is_logged_with_its_digest_not_kept() {
    let mut r = rx(Provider::B);
    r.aq = r.aq.with_kept_receipt_max(100);
    let cert = our_envelope_b_to_a(&r.store);
    let pic = Provider::A.build(|b| {
        b.take_charge(
            &cert,
            at(),
            &["alice@pec.example.it".into()],
            &r.we.mail_receipt(),
        )
        .unwrap()
    });
    let data = pic.to_bytes();
    let rcpt = [r.we.mail_receipt()];
    let rcpt: Vec<&str> = rcpt.iter().map(String::as_str).collect();
    assert_eq!(
        r.run(&pic.mail_from, &rcpt, &data).await,
        FilterReply::Accept
    );
    // Still judged and consumed: the tracking row moved.
    assert_eq!(
        state_of(&r, "alice@pec.example.it"),
        TrackingState::TakenInCharge
    );
    assert!(r.store.log_store().kept_receipts(B_ID).unwrap().is_empty());
    let record = r
        .store
        .events_for(B_ID)
        .unwrap()
        .into_iter()
        .find(|e| matches!(e.kind, EventKind::Received(_)))
        .unwrap();
    let reason = record.reason.unwrap();
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data));
    assert!(
        reason.contains(&format!(
            "non conservata: {} byte oltre il limite di 100 byte, sha-256 {digest}",
            data.len()
        )),
        "{reason}"
    );
}

#[tokio::test]
async fn delivery_and_non_delivery_receipts_update_tracking_and_reach_the_user() {
    let r = rx(Provider::B);
    let cert = our_envelope_b_to_a(&r.store);
    let original = fixture("ordinary.eml");
    let rcpt = ["bob@pec.example.net"];
    let delivered = Provider::A.build(|b| {
        b.delivery(&cert, at(), "alice@pec.example.it", &original)
            .unwrap()
    });
    assert_eq!(delivered.rcpt_to, rcpt);
    let data = delivered.to_bytes();
    assert_eq!(
        r.run(&delivered.mail_from, &rcpt, &data).await,
        FilterReply::Accept
    );
    assert_eq!(r.sent().len(), 1);
    assert_eq!(r.sent()[0].message, data, "delivered unchanged");
    assert_eq!(r.sent()[0].rcpt_to, rcpt);
    assert_eq!(
        state_of(&r, "alice@pec.example.it"),
        TrackingState::Delivered
    );

    // A later mancata consegna does not undo the delivery, and is still delivered.
    let failed = Provider::A.build(|b| {
        b.non_delivery(
            &cert,
            at(),
            "alice@pec.example.it",
            Errore::NoDest,
            "5.1.1 - x",
        )
        .unwrap()
    });
    assert_eq!(
        r.run(&failed.mail_from, &rcpt, &failed.to_bytes()).await,
        FilterReply::Accept
    );
    assert_eq!(r.sent().len(), 2);
    assert_eq!(
        state_of(&r, "alice@pec.example.it"),
        TrackingState::Delivered
    );
}

#[tokio::test]
async fn non_delivery_marks_failed() {
    let r = rx(Provider::B);
    let cert = our_envelope_b_to_a(&r.store);
    let failed = Provider::A.build(|b| {
        b.non_delivery(
            &cert,
            at(),
            "alice@pec.example.it",
            Errore::NoDest,
            "5.1.1 - x",
        )
        .unwrap()
    });
    r.run(
        &failed.mail_from,
        &["bob@pec.example.net"],
        &failed.to_bytes(),
    )
    .await;
    assert_eq!(state_of(&r, "alice@pec.example.it"), TrackingState::Failed);
    assert_eq!(r.sent().len(), 1);
}

#[tokio::test]
async fn receipt_about_another_providers_mailbox_moves_nothing() {
    // B signs a "delivery" to A's alice: B does not manage pec.example.it.
    let r = rx(Provider::B);
    let cert = our_envelope_b_to_a(&r.store);
    let forged = Provider::B.build(|b| {
        b.delivery(
            &cert,
            at(),
            "alice@pec.example.it",
            &fixture("ordinary.eml"),
        )
        .unwrap()
    });
    assert_eq!(
        r.run(
            &forged.mail_from,
            &["bob@pec.example.net"],
            &forged.to_bytes()
        )
        .await,
        FilterReply::Accept
    );
    assert_eq!(state_of(&r, "alice@pec.example.it"), TrackingState::Sent);
}

#[tokio::test]
async fn virus_detection_from_the_other_provider_gives_our_user_a_non_delivery_for_virus() {
    let r = rx(Provider::B);
    let cert = our_envelope_b_to_a(&r.store);
    let notice = Provider::A.build(|b| {
        b.virus_detection(
            &cert,
            at(),
            "alice@pec.example.it",
            "Eicar-Test-Signature",
            &r.we.mail_receipt(),
        )
        .unwrap()
    });
    assert_eq!(
        r.run(
            &notice.mail_from,
            &[r.we.mail_receipt().as_str()],
            &notice.to_bytes()
        )
        .await,
        FilterReply::Accept
    );
    let sent = r.sent();
    assert_eq!(
        sent.len(),
        1,
        "only our notice; the rilevazione is consumed"
    );
    assert_eq!(sent[0].rcpt_to, vec!["bob@pec.example.net"]);
    assert_eq!(
        header(&sent[0].message, "X-VerificaSicurezza").as_deref(),
        Some("errore")
    );
    match r.classify(&sent[0]) {
        Classification::Receipt(Ricevuta::ErroreConsegna, m) => {
            assert_eq!(m.daticert.errore, Errore::Virus);
            assert_eq!(m.daticert.consegna.as_deref(), Some("alice@pec.example.it"));
            assert_eq!(m.daticert.identificativo, B_ID);
            assert_eq!(m.verified.provider.unwrap().name, Provider::B.name());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state_of(&r, "alice@pec.example.it"), TrackingState::Failed);
}

/// Asserts that `data` for bob came out as one anomaly envelope carrying it, for `rcpt`.
async fn assert_anomaly(r: &Rx, from: &str, data: &[u8]) -> String {
    let before = r.sent().len();
    assert_eq!(
        r.run(from, &["bob@pec.example.net"], data).await,
        FilterReply::Accept
    );
    let sent = r.sent();
    assert_eq!(sent.len(), before + 1, "{:?}", &sent[before..]);
    let m = &sent[before];
    assert_eq!(m.rcpt_to, vec!["bob@pec.example.net"]);
    assert_eq!(m.mail_from, from);
    assert_eq!(header(&m.message, "X-Trasporto").as_deref(), Some("errore"));
    assert!(header(&m.message, "X-Ricevuta").is_none());
    // Signed by us and recognisable as such by the index.
    let v = r.classify(m);
    assert_eq!(
        v.verified()
            .and_then(|v| v.provider.clone())
            .map(|p| p.name),
        Some(Provider::B.name().to_string()),
        "{v:?}"
    );
    assert!(r
        .store
        .is_verified(A_ID, "bob@pec.example.net")
        .map(|v| !v)
        .unwrap());
    String::from_utf8_lossy(&m.message).into_owned()
}

#[tokio::test]
async fn ordinary_mail_gets_an_anomaly_envelope() {
    let r = rx(Provider::B);
    let text = assert_anomaly(&r, "someone@example.org", &fixture("ordinary.eml")).await;
    assert!(text.contains("ANOMALIA MESSAGGIO"));
}

#[tokio::test]
async fn forged_receipt_on_unsigned_mail_is_an_anomaly() {
    let r = rx(Provider::B);
    let cert = our_envelope_b_to_a(&r.store);
    let forged = b"From: posta-certificata@pec.example.it\r\nTo: bob@pec.example.net\r\nX-Ricevuta: avvenuta-consegna\r\nX-Riferimento-Message-ID: <x@y>\r\nSubject: CONSEGNA: hi\r\nMessage-ID: <forged@x>\r\n\r\nconsegnato\r\n";
    assert_anomaly(&r, "posta-certificata@pec.example.it", forged).await;
    assert_eq!(state_of(&r, "alice@pec.example.it"), TrackingState::Sent);
    let _ = cert;
}

#[tokio::test]
async fn tampered_unknown_signer_and_incoming_anomaly_envelopes_are_anomalies() {
    let r = rx(Provider::B);
    let (env, cert) = envelope_a_to_b(&fixture("contratto.eml"));
    // One byte of the signed content changed.
    let mut tampered = env.to_bytes();
    let pos = find(&tampered, b"Buongiorno").unwrap();
    tampered[pos] = b'b';
    assert_anomaly(&r, "alice@pec.example.it", &tampered).await;
    // Signed by a certificate that is not in the index.
    let ids = SequentialIds::new("opec1.x", "pec.example.it");
    let iss = Provider::A.issuer();
    let outsider = Builder {
        issuer: &iss,
        signer: &*pki().outsider,
        ids: &ids,
    }
    .transport_envelope(&fixture("contratto.eml"), &cert, at())
    .unwrap();
    assert_anomaly(&r, "alice@pec.example.it", &outsider.to_bytes()).await;
    // A's anomaly envelope arriving here (auto-forwarded): wrapped again.
    let anomaly = Provider::A.build(|b| {
        b.anomaly_envelope(
            &fixture("ordinary.eml"),
            "x@example.org",
            &["z@pec.example.it".into()],
            at(),
            "test",
        )
        .unwrap()
    });
    assert_anomaly(&r, "x@example.org", &anomaly.to_bytes()).await;
    assert!(!r.store.is_verified(A_ID, "bob@pec.example.net").unwrap());
}

#[tokio::test]
async fn an_index_refresh_applies_to_the_next_transaction() {
    // B's index does not know A yet: A's envelope is not valid PEC here.
    let only_b = ProviderIndex::from_records(vec![ProviderRecord {
        info: Provider::B.info(),
        certificates: vec![Provider::B.signer().certificate_der().to_vec()],
    }]);
    let r = rx_with(Provider::B, Arc::new(only_b), MailboxPolicy::Anomaly, now());
    let (env, _) = envelope_a_to_b(&fixture("contratto.eml"));
    let data = env.to_bytes();
    assert_anomaly(&r, "alice@pec.example.it", &data).await;
    // The refresh brings A in: the same envelope is now taken in charge, with no restart.
    r.index.replace(index());
    let before = r.sent().len();
    assert_eq!(
        r.run("alice@pec.example.it", &RCPTS, &data).await,
        FilterReply::Accept
    );
    let sent = &r.sent()[before..];
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(matches!(
        r.classify(&sent[1]),
        Classification::Receipt(Ricevuta::PresaInCarico, _)
    ));
    assert!(r.store.is_verified(A_ID, "bob@pec.example.net").unwrap());
}

/// A correctly signed (by A) envelope-shaped message whose daticert is `xml`.
fn signed_with_daticert(xml: &[u8]) -> Vec<u8> {
    let original = fixture("ordinary.eml");
    let mut entity = b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nMessaggio di posta certificata\r\n--b1\r\nContent-Type: message/rfc822; name=\"postacert.eml\"\r\nContent-Disposition: inline; filename=\"postacert.eml\"\r\n\r\n".to_vec();
    entity.extend_from_slice(&original);
    entity.extend_from_slice(b"\r\n--b1\r\nContent-Type: application/xml; name=\"daticert.xml\"\r\nContent-Disposition: inline; filename=\"daticert.xml\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    entity.extend_from_slice(&base64_lines(xml));
    entity.extend_from_slice(b"\r\n--b1--\r\n");
    let sealed = smime::seal(&*pki().it, &entity, at()).unwrap();
    let mut out = b"From: \"Per conto di: alice@pec.example.it\" <posta-certificata@pec.example.it>\r\nTo: bob@pec.example.net\r\nSubject: POSTA CERTIFICATA: x\r\nMessage-ID: <opec1.xxe@pec.example.it>\r\nX-Trasporto: posta-certificata\r\n".to_vec();
    for (n, v) in sealed.headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&sealed.body);
    out
}

#[tokio::test]
async fn daticert_with_external_entities_is_an_anomaly_and_nothing_is_fetched() {
    let r = rx(Provider::B);
    let xxe = br#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE postacert [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<postacert tipo="posta-certificata" errore="nessuno"><intestazione><mittente>alice@pec.example.it</mittente><destinatari tipo="certificato">bob@pec.example.net</destinatari><risposte>alice@pec.example.it</risposte><oggetto>&xxe;</oggetto></intestazione><dati><gestore-emittente>PEC Example IT S.p.A.</gestore-emittente><data zona="+0200"><giorno>03/06/2025</giorno><ora>10:11:12</ora></data><identificativo>opec1.xxe@pec.example.it</identificativo><msgid>&lt;x@y&gt;</msgid><ricevuta tipo="completa"/></dati></postacert>"#;
    let data = signed_with_daticert(xxe);
    let text = assert_anomaly(&r, "alice@pec.example.it", &data).await;
    assert!(!text.contains("root:x:0:0"));
    // It is the daticert that is refused, not the signature.
    let tx = Transaction {
        mail_from: "alice@pec.example.it".into(),
        rcpt_to: vec!["bob@pec.example.net".into()],
        data: data.into(),
        queue_id: None,
        client: None,
    };
    match r.aq.process(&tx, None).await.unwrap().local {
        Some(Local::NotPec { reason, .. }) => {
            assert!(reason.contains("daticert"), "{reason}");
            eprintln!("xxe reason: {reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn malformed_mime_and_huge_headers_never_panic() {
    let r = rx(Provider::B);
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\r\n".to_vec(),
        b"no header at all, just text".to_vec(),
        b"Content-Type: multipart/signed; boundary=\"x\"; protocol=\"application/pkcs7-signature\"\r\nX-Trasporto: posta-certificata\r\n\r\n--x\r\nbroken".to_vec(),
        b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!notbase64!!!\r\n".to_vec(),
        {
            let mut v = b"Subject: ".to_vec();
            v.extend(std::iter::repeat_n(b'a', 2_000_000));
            v.extend_from_slice(b"\r\n\r\nbody\r\n");
            v
        },
        {
            let mut v = Vec::new();
            for i in 0..20_000 {
                v.extend_from_slice(format!("X-H{i}: {i}\r\n").as_bytes());
            }
            v.extend_from_slice(b"\r\nbody\r\n");
            v
        },
        {
            let mut v = b"X-Folded: a".to_vec();
            for _ in 0..100_000 {
                v.extend_from_slice(b"\r\n b");
            }
            v.extend_from_slice(b"\r\n\r\nbody\r\n");
            v
        },
    ];
    for (i, data) in cases.iter().enumerate() {
        let before = r.sent().len();
        let reply = r.run("x@example.org", &["bob@pec.example.net"], data).await;
        assert_eq!(reply, FilterReply::Accept, "case {i}");
        let sent = r.sent();
        assert_eq!(sent.len(), before + 1, "case {i}");
        assert_eq!(
            header(&sent[before].message, "X-Trasporto").as_deref(),
            Some("errore"),
            "case {i}"
        );
    }
}

#[tokio::test]
async fn refuse_policy_rejects_in_smtp_and_injects_nothing() {
    let r = rx(Provider::B);
    r.store
        .set_mailbox_policy("Bob@pec.example.net", &MailboxPolicy::Refuse)
        .unwrap();
    let reply = r
        .run(
            "someone@example.org",
            &["bob@pec.example.net", "x@example.org"],
            &fixture("ordinary.eml"),
        )
        .await;
    assert!(
        matches!(reply, FilterReply::Reject(ref t) if t.contains("PEC")),
        "{reply:?}"
    );
    assert!(r.sent().is_empty());
    // A valid envelope is still taken: the policy is about mail that is not PEC.
    let (env, _) = envelope_a_to_b(&fixture("contratto.eml"));
    assert_eq!(
        r.run(
            "alice@pec.example.it",
            &["bob@pec.example.net"],
            &env.to_bytes()
        )
        .await,
        FilterReply::Accept
    );
    assert!(r.store.is_verified(A_ID, "bob@pec.example.net").unwrap());
}

#[tokio::test]
async fn refuse_as_default_and_forward_per_mailbox() {
    let r = rx_with(Provider::B, Arc::new(index()), MailboxPolicy::Refuse, now());
    assert!(matches!(
        r.run(
            "someone@example.org",
            &["bob@pec.example.net"],
            &fixture("ordinary.eml")
        )
        .await,
        FilterReply::Reject(_)
    ));
    r.store
        .set_mailbox_policy(
            "bob@pec.example.net",
            &MailboxPolicy::Forward("bob.rossi@example.org".into()),
        )
        .unwrap();
    let data = fixture("ordinary.eml");
    assert_eq!(
        r.run("someone@example.org", &["bob@pec.example.net"], &data)
            .await,
        FilterReply::Accept
    );
    let sent = r.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].rcpt_to, vec!["bob.rossi@example.org"]);
    assert_eq!(sent[0].mail_from, "someone@example.org");
    assert_eq!(sent[0].message, data);
}

#[tokio::test]
async fn internal_failures_tempfail() {
    // Antivirus down on a valid envelope.
    let av: Arc<dyn Antivirus> = Arc::new(MarkerAntivirus {
        marker: MARKER.to_vec(),
        virus_name: "v".into(),
        unreachable: true,
    });
    let r = rx_full(
        Provider::B,
        Arc::new(index()),
        MailboxPolicy::Anomaly,
        now(),
        av,
        vec!["pec.example.net".into()],
    );
    let (env, _) = envelope_a_to_b(&fixture("contratto.eml"));
    assert!(matches!(
        r.run(
            "alice@pec.example.it",
            &["bob@pec.example.net"],
            &env.to_bytes()
        )
        .await,
        FilterReply::Tempfail(_)
    ));
    assert!(!r.store.is_verified(A_ID, "bob@pec.example.net").unwrap());

    // Store down: nothing is injected.
    let r = rx(Provider::B);
    r.store
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        r.run(
            "x@example.org",
            &["bob@pec.example.net"],
            &fixture("ordinary.eml")
        )
        .await,
        FilterReply::Tempfail(_)
    ));
    assert!(r.sent().is_empty());

    // Reinjection refuses our presa in carico permanently: still a tempfail (our fault).
    let r = rx(Provider::B);
    *r.inj.fail_with.lock().unwrap() = Some(InjectError::Permanent {
        addr: "x".into(),
        reason: "554 no".into(),
    });
    assert!(matches!(
        r.run(
            "alice@pec.example.it",
            &["bob@pec.example.net"],
            &env.to_bytes()
        )
        .await,
        FilterReply::Tempfail(_)
    ));
}

#[tokio::test]
async fn outcome_names_what_was_done() {
    let r = rx(Provider::B);
    let (env, _) = envelope_a_to_b(&fixture("contratto.eml"));
    let tx = Transaction {
        mail_from: "alice@pec.example.it".into(),
        rcpt_to: vec!["bob@pec.example.net".into()],
        data: env.to_bytes().into(),
        queue_id: None,
        client: None,
    };
    let out = r.aq.process(&tx, None).await.unwrap();
    assert!(
        matches!(out.local, Some(Local::TakenInCharge { ref to, .. }) if to == "ricevute@pec.example.it")
    );
}

// ---- the real samples as incoming mail ----

struct RealSample {
    file: &'static str,
    pem: &'static str,
    at: &'static str,
}

const REAL: [RealSample; 4] = [
    RealSample {
        file: NAMIRIAL,
        pem: "namirial-2024-signer-chain.pem",
        at: "2024-12-04T23:02:10Z",
    },
    RealSample {
        file: "aruba-2014-busta-trasporto-1.eml",
        pem: "aruba-2014-signer-chain.pem",
        at: "2014-11-07T15:52:00Z",
    },
    RealSample {
        file: "aruba-2014-busta-trasporto-2.eml",
        pem: "aruba-2014-signer-chain.pem",
        at: "2014-11-27T14:12:16Z",
    },
    RealSample {
        file: "aruba-2014-ricevuta-avvenuta-consegna-completa.eml",
        pem: "aruba-2014-signer-chain.pem",
        at: "2014-11-14T17:26:32Z",
    },
];

fn sample_signer(dir: &Path, pem: &str) -> Vec<u8> {
    X509::stack_from_pem(&std::fs::read(dir.join(pem)).unwrap())
        .unwrap()
        .remove(0)
        .to_der()
        .unwrap()
}

/// Index holding the sample's signer as provider "Aruba" managing the sender's domain.
fn sample_index(dir: &Path, s: &RealSample, raw: &[u8]) -> (Arc<ProviderIndex>, Classification) {
    let der = sample_signer(dir, s.pem);
    let mut bare = TrustSet::new();
    bare.add(der.clone(), None);
    let first = classify(raw, &bare, Instant::parse_cli(s.at).unwrap());
    let d = first.pec().expect("sample classifies").daticert.clone();
    let domain_of = |a: &str| a.rsplit_once('@').unwrap().1.to_string();
    let index = ProviderIndex::from_records(vec![ProviderRecord {
        info: ProviderInfo {
            name: d.gestore_emittente.clone(),
            mail_receipt: format!("ricevute@{}", domain_of(&d.mittente)),
            managed_domains: vec![domain_of(&d.mittente)],
        },
        certificates: vec![der],
    }]);
    (Arc::new(index), first)
}

#[tokio::test]
async fn real_samples_as_incoming_mail() {
    let Some(dir) = samples::samples_dir() else {
        return;
    };
    for s in &REAL {
        let raw = if s.file == NAMIRIAL {
            namirial_envelope(&dir)
        } else {
            std::fs::read(dir.join(s.file)).unwrap()
        };
        let when = Instant::parse_cli(s.at).unwrap();
        let (index, first) = sample_index(&dir, s, &raw);
        let m = first.pec().unwrap().clone();
        let d = &m.daticert;
        match first {
            Classification::TransportEnvelope(_) => {
                // We are the recipient's provider (B's keys sign our messages).
                let rcpt = d.destinatari[0].address.clone();
                let domain = rcpt.rsplit_once('@').unwrap().1.to_string();
                let r = rx_full(
                    Provider::B,
                    index.clone(),
                    MailboxPolicy::Anomaly,
                    when,
                    Arc::new(MarkerAntivirus::eicar()),
                    vec![domain],
                );
                assert_eq!(
                    r.run(&d.mittente, &[rcpt.as_str()], &raw).await,
                    FilterReply::Accept,
                    "{}",
                    s.file
                );
                let sent = r.sent();
                assert_eq!(sent.len(), 2, "{}", s.file);
                assert_eq!(
                    header(&sent[0].message, "X-Ricevuta").as_deref(),
                    Some("presa-in-carico"),
                    "{}",
                    s.file
                );
                assert_eq!(
                    sent[0].rcpt_to,
                    vec![index.providers()[0].mail_receipt.clone()]
                );
                assert_eq!(sent[1].message, raw, "{}: delivered byte-exact", s.file);
                assert!(r.store.is_verified(&d.identificativo, &rcpt).unwrap());

                // The same sample one byte off: an anomaly, no presa in carico.
                let r = rx_full(
                    Provider::B,
                    index.clone(),
                    MailboxPolicy::Anomaly,
                    when,
                    Arc::new(MarkerAntivirus::eicar()),
                    vec![rcpt.rsplit_once('@').unwrap().1.to_string()],
                );
                let mut bad = raw.clone();
                let p = find(&bad, b"postacert.eml").unwrap() + 200;
                bad[p] ^= 0x01;
                assert_eq!(
                    r.run(&d.mittente, &[rcpt.as_str()], &bad).await,
                    FilterReply::Accept
                );
                let sent = r.sent();
                assert_eq!(sent.len(), 1, "{}", s.file);
                assert_eq!(
                    header(&sent[0].message, "X-Trasporto").as_deref(),
                    Some("errore")
                );
                assert!(!r.store.is_verified(&d.identificativo, &rcpt).unwrap());
            }
            Classification::Receipt(Ricevuta::AvvenutaConsegna, _) => {
                // We are the sender's provider: the receipt goes to our user, our row moves.
                let user = d.mittente.clone();
                let domain = user.rsplit_once('@').unwrap().1.to_string();
                let r = rx_full(
                    Provider::B,
                    index.clone(),
                    MailboxPolicy::Anomaly,
                    when,
                    Arc::new(MarkerAntivirus::eicar()),
                    vec![domain],
                );
                let info = OriginalInfo {
                    message_id: d
                        .msgid
                        .as_deref()
                        .map(|m| m.trim_matches(['<', '>']).to_string()),
                    ..OriginalInfo::default()
                };
                let consegna = d.consegna.clone().unwrap();
                let cert = Certification::for_submission(
                    &info,
                    &user,
                    &[(consegna.clone(), RecipientType::Certificato)],
                    &d.identificativo,
                );
                r.store
                    .record_accepted(&Accepted {
                        auth_at: None,
                        pec_id: d.identificativo.clone(),
                        queue_id: None,
                        at: when,
                        cert,
                        login: user.clone(),
                        provider: "us".into(),
                    })
                    .unwrap();
                assert_eq!(
                    r.run("posta-certificata@pec.aruba.it", &[user.as_str()], &raw)
                        .await,
                    FilterReply::Accept
                );
                let sent = r.sent();
                assert_eq!(sent.len(), 1);
                assert_eq!(sent[0].message, raw);
                let t = r.store.tracking_for(&d.identificativo).unwrap();
                assert_eq!(t[0].state, TrackingState::Delivered, "{}", s.file);
            }
            other => panic!("{}: {other:?}", s.file),
        }
    }
}

#[tokio::test]
async fn infected_ordinary_mail_is_refused_not_wrapped() {
    let r = rx(Provider::B);
    let mut data =
        b"From: x@example.org\r\nTo: bob@pec.example.net\r\nSubject: hi\r\n\r\n".to_vec();
    data.extend_from_slice(MARKER);
    data.extend_from_slice(b"\r\n");
    let reply = r
        .run(
            "x@example.org",
            &["bob@pec.example.net", "y@example.org"],
            &data,
        )
        .await;
    assert!(
        matches!(reply, FilterReply::Reject(ref t) if t.contains("PEC-Test-Virus")),
        "{reply:?}"
    );
    assert!(r.sent().is_empty());
}

#[tokio::test]
async fn same_provider_virus_is_handled_at_once_for_our_user() {
    let r = rx(Provider::A);
    let mut original = b"From: alice@pec.example.it\r\nTo: ugo@pec.example.it\r\nSubject: fattura\r\nMessage-ID: <v2@client>\r\n\r\nsee ".to_vec();
    original.extend_from_slice(MARKER);
    original.extend_from_slice(b"\r\n");
    let info = OriginalInfo::parse(&original).unwrap();
    let cert = Certification::for_submission(
        &info,
        "alice@pec.example.it",
        &[("ugo@pec.example.it".into(), RecipientType::Certificato)],
        A_ID,
    );
    let env = Provider::A.build(|b| b.transport_envelope(&original, &cert, at()).unwrap());
    r.store
        .record_accepted(&Accepted {
            auth_at: None,
            pec_id: A_ID.into(),
            queue_id: None,
            at: at(),
            cert,
            login: "alice@pec.example.it".into(),
            provider: Provider::A.name().into(),
        })
        .unwrap();
    assert_eq!(
        r.run(
            "alice@pec.example.it",
            &["ugo@pec.example.it"],
            &env.to_bytes()
        )
        .await,
        FilterReply::Accept
    );
    let sent = r.sent();
    let kinds: Vec<_> = sent
        .iter()
        .map(|m| (header(&m.message, "X-Ricevuta"), m.rcpt_to.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                Some("accettazione".into()),
                vec!["alice@pec.example.it".to_string()]
            ),
            (
                Some("presa-in-carico".into()),
                vec!["ricevute@pec.example.it".to_string()]
            ),
            (
                Some("rilevazione-virus".into()),
                vec!["ricevute@pec.example.it".to_string()]
            ),
            (
                Some("errore-consegna".into()),
                vec!["alice@pec.example.it".to_string()]
            ),
        ]
    );
    assert_eq!(
        r.store.tracking_for(A_ID).unwrap()[0].state,
        TrackingState::Failed
    );
    assert!(!r.store.is_verified(A_ID, "ugo@pec.example.it").unwrap());
}

#[tokio::test]
async fn receipt_with_another_riferimento_or_unknown_envelope_moves_nothing() {
    let r = rx(Provider::B);
    let mut cert = our_envelope_b_to_a(&r.store);
    cert.msgid = Some("<someone.else@client>".into());
    let delivered = Provider::A.build(|b| {
        b.delivery(
            &cert,
            at(),
            "alice@pec.example.it",
            &fixture("ordinary.eml"),
        )
        .unwrap()
    });
    let rcpt = ["bob@pec.example.net"];
    assert_eq!(
        r.run(&delivered.mail_from, &rcpt, &delivered.to_bytes())
            .await,
        FilterReply::Accept
    );
    assert_eq!(r.sent().len(), 1, "still delivered to the user");
    assert_eq!(state_of(&r, "alice@pec.example.it"), TrackingState::Sent);

    // A rilevazione virus about an envelope we never sent: consumed, no notice.
    cert.identificativo = "opec1.unknown@pec.example.net".into();
    let notice = Provider::A.build(|b| {
        b.virus_detection(
            &cert,
            at(),
            "alice@pec.example.it",
            "X",
            &r.we.mail_receipt(),
        )
        .unwrap()
    });
    assert_eq!(
        r.run(
            &notice.mail_from,
            &[r.we.mail_receipt().as_str()],
            &notice.to_bytes()
        )
        .await,
        FilterReply::Accept
    );
    assert_eq!(r.sent().len(), 1);
}

/// Every receipt received from another provider is a legal-log record (kind `Ricezione`,
/// its type in the receipt-type column): correlated or not, consumed or delivered.
#[tokio::test]
async fn received_receipts_are_legal_log_events() {
    let r = rx(Provider::B);
    let cert = our_envelope_b_to_a(&r.store);
    let received = |r: &Rx, id: &str| -> Vec<pec::store::LogEvent> {
        r.store
            .events_for(id)
            .unwrap()
            .into_iter()
            .filter(|e| matches!(e.kind, EventKind::Received(_)))
            .collect()
    };

    // Presa in carico to our mailReceipt: consumed, correlated.
    let pic = Provider::A.build(|b| {
        b.take_charge(
            &cert,
            at(),
            &["alice@pec.example.it".into()],
            &r.we.mail_receipt(),
        )
        .unwrap()
    });
    let rcpt: Vec<&str> = pic.rcpt_to.iter().map(String::as_str).collect();
    r.run(&pic.mail_from, &rcpt, &pic.to_bytes()).await;
    // Avvenuta consegna to bob: delivered to him, correlated.
    let delivered = Provider::A.build(|b| {
        b.delivery(
            &cert,
            at(),
            "alice@pec.example.it",
            &fixture("ordinary.eml"),
        )
        .unwrap()
    });
    r.run(
        &delivered.mail_from,
        &["bob@pec.example.net"],
        &delivered.to_bytes(),
    )
    .await;
    let events = received(&r, B_ID);
    assert_eq!(events.len(), 2, "{events:?}");
    let (a, b) = (&events[0], &events[1]);
    assert_eq!(a.kind, EventKind::Received(Ricevuta::PresaInCarico));
    assert_eq!(b.kind, EventKind::Received(Ricevuta::AvvenutaConsegna));
    for e in [a, b] {
        assert_eq!(e.outcome, "correlated");
        assert_eq!(e.sender, "bob@pec.example.net");
        assert_eq!(
            e.recipients,
            [(
                "alice@pec.example.it".to_string(),
                RecipientType::Certificato
            )]
        );
        assert_eq!(e.provider, Provider::A.name());
        assert_eq!(e.queue_id.as_deref(), Some("4TESTQ"));
        assert_eq!(e.related_ids.len(), 1, "the receipt's Message-ID");
    }
    assert_eq!(a.related_ids[0], pic.message_id);
    let why = a.reason.as_deref().unwrap();
    assert!(
        why.contains("riguarda alice@pec.example.it") && why.contains("consumata"),
        "{why}"
    );
    let why = b.reason.as_deref().unwrap();
    assert!(why.contains("consegnata a bob@pec.example.net"), "{why}");
    assert_eq!(
        state_of(&r, "alice@pec.example.it"),
        TrackingState::Delivered
    );

    // A receipt about an envelope we never sent is logged too, as uncorrelated.
    let mut other = cert.clone();
    other.identificativo = "opec1.unknown@pec.example.net".into();
    let failed = Provider::A.build(|b| {
        b.non_delivery(
            &other,
            at(),
            "alice@pec.example.it",
            Errore::NoDest,
            "5.1.1 - utente sconosciuto",
        )
        .unwrap()
    });
    r.run(
        &failed.mail_from,
        &["bob@pec.example.net"],
        &failed.to_bytes(),
    )
    .await;
    let events = received(&r, "opec1.unknown@pec.example.net");
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].kind,
        EventKind::Received(Ricevuta::ErroreConsegna)
    );
    assert_eq!(events[0].outcome, "uncorrelated");
    assert!(
        events[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("utente sconosciuto"),
        "{:?}",
        events[0].reason
    );
}

/// What the reception point does with mail that is not valid PEC is in the legal log too:
/// a refusal by policy, a refusal for a virus, a forward by policy.
#[tokio::test]
async fn refusals_and_forwards_of_mail_that_is_not_pec_are_logged() {
    let r = rx_with(Provider::B, Arc::new(index()), MailboxPolicy::Refuse, now());
    let data = fixture("ordinary.eml");
    let id = OriginalInfo::parse(&data).unwrap().message_id.unwrap();
    r.run("someone@example.org", &["bob@pec.example.net"], &data)
        .await;
    r.store
        .set_mailbox_policy(
            "bob@pec.example.net",
            &MailboxPolicy::Forward("bob.rossi@example.org".into()),
        )
        .unwrap();
    r.run("someone@example.org", &["bob@pec.example.net"], &data)
        .await;
    let mut infected = data.clone();
    infected.extend_from_slice(MARKER);
    infected.extend_from_slice(b"\r\n");
    r.run("someone@example.org", &["bob@pec.example.net"], &infected)
        .await;
    let events = r.store.events_for(&id).unwrap();
    let seen: Vec<(EventKind, &str)> = events
        .iter()
        .map(|e| (e.kind, e.outcome.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (EventKind::RejectedInSmtp, "refused"),
            (EventKind::Forwarded, "forwarded"),
            (EventKind::RejectedInSmtp, "virus"),
        ]
    );
    for e in &events {
        assert_eq!(e.sender, "someone@example.org");
        assert_eq!(e.recipients[0].0, "bob@pec.example.net");
        assert_eq!(e.queue_id.as_deref(), Some("4TESTQ"));
    }
    assert!(events[1]
        .reason
        .as_deref()
        .unwrap()
        .contains("inoltrato a bob.rossi@example.org"));
    assert_eq!(events[2].reason.as_deref(), Some("PEC-Test-Virus"));
}

#[tokio::test]
async fn an_envelope_handed_over_again_gets_no_second_presa_in_carico() {
    // Postfix hands the same envelope over again when we crashed after taking it in charge
    // but before it read our 250 (or the sender's provider sent it twice after its own
    // crash): the envelope is passed on again, but no second presa in carico is issued or
    // logged.
    let r = rx(Provider::B);
    let (env, _) = envelope_a_to_b(&fixture("contratto.eml"));
    let data = env.to_bytes();
    let local = ["bob@pec.example.net", "dave@pec.example.net"];
    assert_eq!(
        r.run("alice@pec.example.it", &local, &data).await,
        FilterReply::Accept
    );
    assert_eq!(r.sent().len(), 2);
    assert_eq!(
        r.run("alice@pec.example.it", &local, &data).await,
        FilterReply::Accept
    );
    let sent = r.sent();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[2].rcpt_to, local);
    assert_eq!(sent[2].message, data);
    let kinds = |id| {
        r.store
            .events_for(id)
            .unwrap()
            .iter()
            .map(|e| e.kind.label())
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(A_ID), vec!["PresaInCarico"]);

    // Taken in charge for bob only (dave was not a recipient of that transaction): the
    // next hand-over takes dave in charge, and only dave, and delivers to both.
    let r = rx(Provider::B);
    assert_eq!(
        r.run("alice@pec.example.it", &local[..1], &data).await,
        FilterReply::Accept
    );
    assert_eq!(
        r.run("alice@pec.example.it", &local, &data).await,
        FilterReply::Accept
    );
    let sent = r.sent();
    assert_eq!(sent.len(), 4, "{sent:?}");
    match r.classify(&sent[2]) {
        Classification::Receipt(Ricevuta::PresaInCarico, m) => {
            assert_eq!(m.daticert.ricezione, vec!["dave@pec.example.net"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sent[3].rcpt_to, local);
    let events = r.store.events_for(A_ID).unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e.kind.label() == "PresaInCarico"));
}

/// `discard` drops mail that is not valid PEC with a legal-log record; `folder` delivers
/// it unchanged to `local+FOLDER@domain` (Dovecot files it into FOLDER), logged too; a
/// mailbox with another policy in the same transaction keeps its own.
#[tokio::test]
async fn discard_and_folder_policies_for_mail_that_is_not_pec() {
    let r = rx(Provider::B);
    r.store
        .set_mailbox_policy("bob@pec.example.net", &MailboxPolicy::Discard)
        .unwrap();
    r.store
        .set_mailbox_policy(
            "Carol@pec.example.net",
            &MailboxPolicy::Folder("Posta-ordinaria".into()),
        )
        .unwrap();
    let data = fixture("ordinary.eml");
    let id = OriginalInfo::parse(&data).unwrap().message_id.unwrap();
    assert_eq!(
        r.run("someone@example.org", &["bob@pec.example.net"], &data)
            .await,
        FilterReply::Accept
    );
    assert!(r.sent().is_empty(), "discarded: nothing delivered");
    assert_eq!(
        r.run(
            "someone@example.org",
            &[
                "bob@pec.example.net",
                "carol@pec.example.net",
                "dan@pec.example.net"
            ],
            &data
        )
        .await,
        FilterReply::Accept
    );
    let sent = r.sent();
    // dan has the default (an anomaly envelope), carol's copy goes to her folder unchanged.
    let filed: Vec<_> = sent
        .iter()
        .filter(|s| s.rcpt_to == ["carol+Posta-ordinaria@pec.example.net"])
        .collect();
    assert_eq!(filed.len(), 1, "{sent:?}");
    assert_eq!(filed[0].mail_from, "someone@example.org");
    assert_eq!(filed[0].message, data);
    let anomaly: Vec<_> = sent
        .iter()
        .filter(|s| s.rcpt_to == ["dan@pec.example.net"])
        .collect();
    assert_eq!(anomaly.len(), 1);
    assert!(sent
        .iter()
        .all(|s| !s.rcpt_to.iter().any(|t| t.starts_with("bob"))));
    let seen: Vec<(EventKind, String, String)> = r
        .store
        .events_for(&id)
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.outcome, e.recipients[0].0.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                EventKind::Discarded,
                "discarded".into(),
                "bob@pec.example.net".into()
            ),
            (
                EventKind::Issued(MessageKind::AnomalyEnvelope),
                "anomaly".into(),
                "dan@pec.example.net".into()
            ),
            (
                EventKind::Discarded,
                "discarded".into(),
                "bob@pec.example.net".into()
            ),
            (
                EventKind::Filed,
                "filed".into(),
                "carol@pec.example.net".into()
            ),
        ]
    );
}

#[test]
fn folder_names_fit_an_address() {
    for ok in ["Posta-ordinaria", "Spam", "a.b_c-1"] {
        assert!(MailboxPolicy::valid_folder(ok), "{ok}");
    }
    let long = "x".repeat(65);
    for bad in [
        "",
        ".hidden",
        "Posta ordinaria",
        "a/b",
        "a@b",
        "à",
        "a+b",
        long.as_str(),
    ] {
        assert!(!MailboxPolicy::valid_folder(bad), "{bad}");
    }
    assert_eq!(
        MailboxPolicy::folder_address("bob@pec.example.net", "Spam"),
        "bob+Spam@pec.example.net"
    );
}

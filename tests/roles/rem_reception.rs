// SPDX-License-Identifier: GPL-3.0-or-later
//! The reception point's REM path (issue 20 item 4, R-REMS side) in process, with the test
//! PKI and the test TSA of [`crate::rem_access`]: a peer (`pec.example.net`, signing with
//! the second test certificate, put on a test Trusted List) sends a REM dispatch to our
//! user; the after-queue filter judges it, answers the sending REMS with a RelayAcceptance
//! (once, a replay builds nothing) and delivers it unchanged; an altered dispatch gets a
//! RelayRejection and is not delivered as REM; a signer not on the Trusted List RB06; a
//! retired mailbox RB21; the TSA down a tempfail with nothing recorded; a peer's
//! RelayRejection about our dispatch a RelayFailure to our sender, once.

use std::sync::Arc;

use pec::config::RemSettings;
use pec::crypto::tsa::TsaSettings;
use pec::crypto::verify::VerifyOptions;
use pec::crypto::{ChainPolicy, DigestAlg, PemSigner, Signer};
use pec::doubles::{MarkerAntivirus, RecordingInjector, TestStore};
use pec::index::{IndexHandle, ProviderIndex, ProviderInfo, ProviderRecord};
use pec::issuing::Issuing;
use pec::message::build::Issuer;
use pec::message::ids::{unbracketed, SequentialIds};
use pec::message::time::{FixedClock, Instant};
use pec::reception::rem::{RemLocal, RemReception};
use pec::reception::{AfterQueue, Local, Reception};
use pec::rem::codes::{Event, Reason};
use pec::rem::compose::{self, Composer, EvidenceAttachment, Provider, Receipt};
use pec::rem::evidence::Evidence;
use pec::rem::issue::{self, EvidenceInput, RelayInput};
use pec::rem::message::{self as rem_message, DigestAlgorithm, MessageType};
use pec::rem::trust::{
    DigitalIdentity, PeersHandle, RemPeers, ServiceProvider, TrustService, TrustedList,
    SERVICE_TYPE_REM, STATUS_GRANTED,
};
use pec::rem::xades;
use pec::smtp::server::FilterReply;
use pec::smtp::Transaction;
use pec::store::{EvidenceDirection, MailboxPolicy, Retired, Store};

use crate::rem_access::{at, closed_port, env, identity, tsa};

pub(crate) const PEER_ID: &str = "opec1.peer.1@pec.example.net";
pub(crate) const OUR_ID: &str = "opec1.test.1@pec.example.it";
pub(crate) const PEER_SERVICE: &str = "rem-service@pec.example.net";
pub(crate) const OUR_SERVICE: &str = "posta-certificata@pec.example.it";

fn pem_signer(key: &std::path::Path, cert: &std::path::Path) -> PemSigner {
    PemSigner::from_files(key, cert, None, DigestAlg::Sha256).unwrap()
}

fn our_signer() -> PemSigner {
    pem_signer(&env().pki.it_key, &env().pki.it_cert)
}

fn peer_signer() -> PemSigner {
    pem_signer(&env().pki.net_key, &env().pki.net_cert)
}

fn kit(
    signer: PemSigner,
    service: &str,
    provider: &str,
    domain: &str,
    store: Arc<TestStore>,
    injector: Arc<RecordingInjector>,
) -> Issuing {
    Issuing {
        store,
        injector,
        issuer: Issuer {
            provider_name: provider.into(),
            service_address: service.into(),
            envelope_sender_header: true,
        },
        signer: Arc::new(signer),
        ids: Arc::new(SequentialIds::new("opec1.test", domain)),
        clock: Arc::new(FixedClock::new(at())),
    }
}

fn peer_kit() -> Issuing {
    kit(
        peer_signer(),
        PEER_SERVICE,
        "PEC Example NET S.p.A.",
        "pec.example.net",
        Arc::new(TestStore::new()),
        Arc::new(RecordingInjector::new()),
    )
}

pub(crate) fn settings(tsa: Option<TsaSettings>) -> RemSettings {
    RemSettings {
        enabled: true,
        mode: pec::config::RemMode::Auto,
        domains: Default::default(),
        provider_name: "PEC Example IT S.p.A.".into(),
        policies: vec![
            pec::config::REM_BASELINE_POLICY.into(),
            pec::config::REM_POLICY_IT.into(),
        ],
        relay_wait: std::time::Duration::from_secs(24 * 3600),
        consignment_wait: std::time::Duration::from_secs(24 * 3600),
        evidence_tsa: tsa,
    }
}

/// A Trusted List granting a REM service whose identity is `cert_der`.
fn trusted_list(certs: Vec<Vec<u8>>) -> RemPeers {
    let since = Instant::parse_cli("2000-01-01T00:00:00Z").unwrap();
    RemPeers::new(&[TrustedList {
        territory: "IT".into(),
        sequence: 1,
        operator: "Test TL operator".into(),
        issued_at: since,
        next_update: Some(Instant::parse_cli("2100-01-01T00:00:00Z").unwrap()),
        signed: true,
        providers: vec![ServiceProvider {
            name: "PEC Example NET S.p.A.".into(),
            services: vec![TrustService {
                service_type: SERVICE_TYPE_REM.into(),
                name: "REM NET".into(),
                status: STATUS_GRANTED.into(),
                status_since: since,
                identity: DigitalIdentity {
                    certificates: certs,
                    ..DigitalIdentity::default()
                },
                supply_points: vec!["smtp:mx.pec.example.net".into()],
                history: Vec::new(),
            }],
        }],
    }])
}

fn peer_der() -> Vec<u8> {
    peer_signer().certificate_der().to_vec()
}

pub(crate) struct Harness {
    pub(crate) store: Arc<TestStore>,
    pub(crate) injector: Arc<RecordingInjector>,
    pub(crate) kit: Issuing,
    pub(crate) filter: AfterQueue,
}

/// Our reception point (`pec.example.it`), the peer on the Trusted List when `trusted`.
pub(crate) fn harness(tsa: Option<TsaSettings>, trusted: bool) -> Harness {
    harness_on(Arc::new(TestStore::new()), tsa, trusted)
}

/// [`harness`] on `store`.
pub(crate) fn harness_on(
    store: Arc<TestStore>,
    tsa: Option<TsaSettings>,
    trusted: bool,
) -> Harness {
    let injector = Arc::new(RecordingInjector::new());
    let kit = kit(
        our_signer(),
        OUR_SERVICE,
        "PEC Example IT S.p.A.",
        "pec.example.it",
        store.clone(),
        injector.clone(),
    );
    let index = ProviderIndex::from_records(vec![ProviderRecord {
        info: ProviderInfo {
            name: "PEC Example IT S.p.A.".into(),
            mail_receipt: "ricevute@pec.example.it".into(),
            managed_domains: vec!["pec.example.it".into()],
        },
        certificates: vec![kit.signer.certificate_der().to_vec()],
    }]);
    let reception = Reception {
        index: Arc::new(IndexHandle::new(index)),
        chain: None,
        antivirus: Arc::new(MarkerAntivirus::eicar()),
        domains: vec!["pec.example.it".into()],
        mail_receipt: "ricevute@pec.example.it".into(),
        default_policy: MailboxPolicy::Anomaly,
    };
    let pem = std::fs::read(&env().pki.ca_cert).unwrap();
    let chain = ChainPolicy::from_pem(&pem, true).unwrap();
    let peers = match trusted {
        true => trusted_list(vec![peer_der()]),
        // A list that grants somebody else.
        false => trusted_list(vec![b"not the peer".to_vec()]),
    };
    let rem = RemReception {
        settings: settings(tsa),
        chain,
        tsa_anchors: vec![env().pki.ca_cert.clone()],
        peers: Some(Arc::new(PeersHandle::new(peers))),
    };
    let filter = AfterQueue::new(
        store.clone(),
        injector.clone(),
        kit.issuer.clone(),
        kit.signer.clone(),
        kit.ids.clone(),
        reception,
    )
    .with_clock(Arc::new(FixedClock::new(at())))
    .with_rem(Some(Arc::new(rem)));
    Harness {
        store,
        injector,
        kit,
        filter,
    }
}

fn original(from: &str, to: &[&str]) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {}\r\nSubject: Contratto\r\nDate: Tue, 3 Jun 2025 10:11:09 +0200\r\nMessage-ID: <1@client.example.net>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nBuongiorno,\r\nin allegato il contratto.\r\n",
        to.join(", ")
    )
    .into_bytes()
}

/// A REM dispatch made by `kit` (its signer, its service address): the original prepared,
/// the SubmissionAcceptance evidence issued and stamped, composed and signed. Returns the
/// dispatch and its evidence.
pub(crate) async fn dispatch(
    kit: &Issuing,
    id: &str,
    from: &str,
    to: &[&str],
) -> (Vec<u8>, issue::Issued) {
    let policies = settings(None).policies;
    let original = compose::prepare_original(&original(from, to), id).unwrap();
    let sub =
        compose::Submission::from_original(&original, policies.clone(), DigestAlgorithm::Sha256)
            .unwrap();
    let input = EvidenceInput {
        event: Event::SubmissionAcceptance,
        reason: Reason::by_code("RA01").unwrap(),
        message_id: id.into(),
        event_time: at(),
        submission_time: Some(at()),
        sender: from.into(),
        identity: Some(identity()),
        authentication: None,
        recipients: sub.recipients.clone(),
        refers_to_recipient: None,
        ua_message_id: sub.ua_message_identifier.clone(),
        digest: Some(sub.digest_value.clone()),
        subject: sub.subject.clone(),
        policies,
        provider: kit.issuer.provider_name.clone(),
    };
    let issued = issue::issue(kit, Some(&tsa(&env().url)), input)
        .await
        .expect("the evidence is issued");
    let d = Composer {
        provider: &Provider {
            name: kit.issuer.provider_name.clone(),
            service_address: kit.issuer.service_address.clone(),
        },
        signer: &*kit.signer,
    }
    .dispatch(
        &original,
        &sub,
        &EvidenceAttachment {
            event: Event::SubmissionAcceptance,
            xml: &issued.xml,
        },
        issued.id(),
        &[],
        None,
        at(),
    )
    .unwrap();
    (d.to_bytes(), issued)
}

pub(crate) async fn peer_dispatch(to: &[&str]) -> Vec<u8> {
    dispatch(&peer_kit(), PEER_ID, "alice@pec.example.net", to)
        .await
        .0
}

pub(crate) fn tx(data: Vec<u8>, mail_from: &str, rcpt: &[&str]) -> Transaction {
    Transaction {
        mail_from: mail_from.into(),
        rcpt_to: rcpt.iter().map(|r| r.to_string()).collect(),
        data: data.into(),
        queue_id: Some("5A1B2C3D4E".into()),
        client: None,
    }
}

/// A REM receipt we sent, verified: our signature, its evidence ours and stamped.
pub(crate) fn our_receipt(h: &Harness, data: &[u8]) -> (rem_message::RemMessage, Evidence) {
    let opts = VerifyOptions::without_index(at());
    let v = rem_message::verify(data, &opts).expect("our receipt verifies");
    assert_eq!(v.verified.signer_der, h.kit.signer.certificate_der());
    assert_eq!(v.message.message_type, MessageType::Receipt);
    assert!(
        v.message.original.is_none(),
        "a receipt never carries the original"
    );
    let xml = &v.message.evidences[0].body;
    let x = xades::verify(xml, &env().pki.ca_cert).expect("its evidence verifies");
    assert_eq!(x.signer, h.kit.signer.certificate_der());
    let ev = Evidence::parse(xml).unwrap();
    (v.message, ev)
}

fn relay_code(l: &Option<Local>) -> Option<&'static str> {
    match l {
        Some(Local::Rem(RemLocal::Rejected { code, .. })) => Some(code),
        _ => None,
    }
}

#[tokio::test]
async fn a_valid_dispatch_is_accepted_once_and_delivered_unchanged() {
    let h = harness(Some(tsa(&env().url)), true);
    let data = peer_dispatch(&["bob@pec.example.it"]).await;
    let t = tx(
        data.clone(),
        "alice@pec.example.net",
        &["bob@pec.example.it"],
    );
    let out = h.filter.process(&t, None).await.unwrap();
    match &out.local {
        Some(Local::Rem(RemLocal::Relayed {
            message_id,
            acceptance,
            rejection,
            delivered,
            replay,
            ..
        })) => {
            assert_eq!(message_id, PEER_ID);
            assert!(acceptance.is_some());
            assert_eq!(rejection, &None);
            assert_eq!(delivered, &vec!["bob@pec.example.it".to_string()]);
            assert!(!replay);
        }
        other => panic!("not relayed: {other:?}"),
    }
    let sent = h.injector.messages();
    assert_eq!(sent.len(), 2, "the receipt and the dispatch");
    // The RelayAcceptance to the sending REMS.
    let receipt = sent
        .iter()
        .find(|m| m.rcpt_to == vec![PEER_SERVICE.to_string()])
        .expect("a receipt to the sending REMS");
    let (msg, ev) = our_receipt(&h, &receipt.message);
    assert_eq!(msg.event, Event::RelayAcceptance);
    assert_eq!(msg.classify().code, Some("RB01"));
    assert_eq!(ev.event, Event::RelayAcceptance);
    assert_eq!(ev.reason().unwrap().code, "RB01");
    assert_eq!(ev.message_id.as_deref(), Some(PEER_ID));
    assert_eq!(ev.relay_info.as_ref().unwrap().refers_to, vec![1]);
    // Digest copied from the dispatch's evidence, and it is the dispatch's header too.
    let parsed = rem_message::parse(&data).unwrap();
    let theirs = Evidence::parse(&parsed.evidences[0].body).unwrap();
    let digest = |e: &Evidence| {
        e.user_content.as_ref().unwrap().parts[0]
            .digest_value
            .clone()
    };
    assert_eq!(digest(&ev), digest(&theirs));
    assert_eq!(digest(&ev), parsed.rem.digest_value);
    // The dispatch itself to bob, byte for byte.
    let delivered = sent
        .iter()
        .find(|m| m.rcpt_to == vec!["bob@pec.example.it".to_string()])
        .expect("delivered to bob");
    assert_eq!(delivered.message, data);
    // Both evidences stored: the dispatch's as received, ours as issued.
    let stored = h.store.evidences_for(PEER_ID).unwrap();
    let mut kinds: Vec<(String, EvidenceDirection)> = stored
        .iter()
        .map(|s| (s.evidence.event.clone(), s.evidence.direction))
        .collect();
    kinds.sort_by_key(|k| k.0.clone());
    assert_eq!(
        kinds,
        vec![
            (Event::RelayAcceptance.uri(), EvidenceDirection::Issued),
            (
                Event::SubmissionAcceptance.uri(),
                EvidenceDirection::Received
            ),
        ]
    );
    let ours = stored
        .iter()
        .find(|s| s.evidence.direction == EvidenceDirection::Issued)
        .unwrap();
    assert_eq!(ours.evidence.xml, msg.evidences[0].body);

    // The same dispatch again: nothing new built, sent or stored; delivered again (the
    // delivery point stores it once).
    let again = h.filter.process(&t, None).await.unwrap();
    match &again.local {
        Some(Local::Rem(RemLocal::Relayed {
            replay, acceptance, ..
        })) => {
            assert!(*replay);
            assert_eq!(
                acceptance.as_deref(),
                Some(unbracketed(msg.message_id.as_deref().unwrap()))
            );
        }
        other => panic!("not relayed: {other:?}"),
    }
    let sent2 = h.injector.messages();
    assert_eq!(sent2.len(), 3);
    assert_eq!(sent2[2].rcpt_to, vec!["bob@pec.example.it".to_string()]);
    assert_eq!(sent2[2].message, data);
    assert_eq!(h.store.evidences_for(PEER_ID).unwrap().len(), 2);

    // Again with the TSA down: answered from the outbox, no time stamp asked for.
    let down = harness_on(
        h.store.clone(),
        Some(tsa(&format!("http://127.0.0.1:{}/tsa", closed_port()))),
        true,
    );
    let third = down.filter.process(&t, None).await.unwrap();
    assert!(
        matches!(
            &third.local,
            Some(Local::Rem(RemLocal::Relayed { replay: true, .. }))
        ),
        "{:?}",
        third.local
    );
    let sent3 = down.injector.messages();
    assert_eq!(sent3.len(), 1);
    assert_eq!(sent3[0].message, data);
    assert_eq!(h.store.evidences_for(PEER_ID).unwrap().len(), 2);
}

#[tokio::test]
async fn an_altered_dispatch_gets_a_relay_rejection_and_is_not_delivered_as_rem() {
    let h = harness(Some(tsa(&env().url)), true);
    let data = peer_dispatch(&["bob@pec.example.it"]).await;
    let text = String::from_utf8(data).unwrap();
    assert!(text.contains("in allegato il contratto."));
    let altered = text
        .replacen("in allegato il contratto.", "in allegato il contratta.", 1)
        .into_bytes();
    let t = tx(
        altered.clone(),
        "alice@pec.example.net",
        &["bob@pec.example.it"],
    );
    let out = h.filter.process(&t, None).await.unwrap();
    let code = relay_code(&out.local).expect("rejected");
    assert!(code == "RB02" || code == "RB04", "{code}");
    let sent = h.injector.messages();
    let receipt = sent
        .iter()
        .find(|m| m.rcpt_to == vec![PEER_SERVICE.to_string()])
        .expect("a receipt to the sending REMS");
    let (msg, ev) = our_receipt(&h, &receipt.message);
    assert_eq!(msg.event, Event::RelayRejection);
    assert_eq!(ev.reason().unwrap().code, code);
    assert_eq!(ev.relay_info.as_ref().unwrap().refers_to, vec![1]);
    // Bob gets no REM dispatch: the anomaly envelope of the mailbox policy.
    let to_bob: Vec<_> = sent
        .iter()
        .filter(|m| m.rcpt_to == vec!["bob@pec.example.it".to_string()])
        .collect();
    assert_eq!(to_bob.len(), 1);
    assert_ne!(to_bob[0].message, altered);
    assert!(!rem_message::is_rem(&to_bob[0].message));
    match &out.local {
        Some(Local::Rem(RemLocal::Rejected { handled, .. })) => {
            assert!(matches!(
                **handled,
                Local::NotPec {
                    anomaly: Some(_),
                    ..
                }
            ))
        }
        other => panic!("{other:?}"),
    }
    // Not valid: the peer's evidence is not kept as received; ours is.
    let stored = h.store.evidences_for(PEER_ID).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].evidence.direction, EvidenceDirection::Issued);
}

#[tokio::test]
async fn a_signer_not_on_the_trusted_list_gets_rb06() {
    let h = harness(Some(tsa(&env().url)), false);
    let data = peer_dispatch(&["bob@pec.example.it"]).await;
    let t = tx(
        data.clone(),
        "alice@pec.example.net",
        &["bob@pec.example.it"],
    );
    let out = h.filter.process(&t, None).await.unwrap();
    assert_eq!(relay_code(&out.local), Some("RB06"));
    let sent = h.injector.messages();
    assert!(
        !sent.iter().any(|m| m.message == data),
        "the dispatch is not delivered"
    );
    let receipt = sent
        .iter()
        .find(|m| m.rcpt_to == vec![PEER_SERVICE.to_string()])
        .expect("a receipt to the sending REMS");
    let (msg, _) = our_receipt(&h, &receipt.message);
    assert_eq!(msg.event, Event::RelayRejection);
    assert_eq!(msg.classify().code, Some("RB06"));
}

#[tokio::test]
async fn a_retired_mailbox_gets_rb21_and_the_others_the_dispatch() {
    let h = harness(Some(tsa(&env().url)), true);
    h.store
        .retire_mailbox(&Retired {
            mailbox: "carol@pec.example.it".into(),
            holder: "RSSCRL80A01H501U".into(),
            at: at(),
        })
        .unwrap();
    let rcpts = ["bob@pec.example.it", "carol@pec.example.it"];
    let data = peer_dispatch(&rcpts).await;
    let t = tx(data.clone(), "alice@pec.example.net", &rcpts);
    let out = h.filter.process(&t, None).await.unwrap();
    match &out.local {
        Some(Local::Rem(RemLocal::Relayed {
            delivered, unknown, ..
        })) => {
            assert_eq!(delivered, &vec!["bob@pec.example.it".to_string()]);
            assert_eq!(unknown, &vec!["carol@pec.example.it".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    let sent = h.injector.messages();
    let mut receipts: Vec<(Event, Option<&str>, Vec<u32>)> = sent
        .iter()
        .filter(|m| m.rcpt_to == vec![PEER_SERVICE.to_string()])
        .map(|m| {
            let (msg, ev) = our_receipt(&h, &m.message);
            (
                msg.event,
                msg.classify().code,
                ev.relay_info.unwrap().refers_to,
            )
        })
        .collect();
    receipts.sort_by_key(|r| r.1);
    assert_eq!(
        receipts,
        vec![
            (Event::RelayAcceptance, Some("RB01"), vec![1]),
            (Event::RelayRejection, Some("RB21"), vec![2]),
        ]
    );
    let delivered: Vec<_> = sent.iter().filter(|m| m.message == data).collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].rcpt_to, vec!["bob@pec.example.it".to_string()]);
}

#[tokio::test]
async fn the_tsa_down_is_a_tempfail_and_nothing_is_recorded() {
    let h = harness(
        Some(tsa(&format!("http://127.0.0.1:{}/tsa", closed_port()))),
        true,
    );
    let data = peer_dispatch(&["bob@pec.example.it"]).await;
    let t = tx(data, "alice@pec.example.net", &["bob@pec.example.it"]);
    let reply = h.filter.filter(&t).await;
    assert!(matches!(reply, FilterReply::Tempfail(_)), "{reply:?}");
    assert!(h.injector.messages().is_empty());
    assert!(h.store.evidences_for(PEER_ID).unwrap().is_empty());
}

/// A REM receipt from the peer to our service address: its `event` evidence (`code`,
/// about recipient 1) about the message `about` speaks of.
async fn peer_receipt(about: &Evidence, event: Event, code: &str, message_id: &str) -> Vec<u8> {
    let peer = peer_kit();
    let issued = issue::issue_relay(
        &peer,
        Some(&tsa(&env().url)),
        RelayInput {
            about: about.clone(),
            event,
            reason: Reason::by_code(code).unwrap(),
            refers_to: vec![1],
            event_time: at(),
            policies: settings(None).policies,
            provider: peer.issuer.provider_name.clone(),
        },
    )
    .await
    .unwrap();
    let id = about.message_id.clone().unwrap();
    let sub = compose::Submission {
        message_id: id,
        ua_message_identifier: None,
        sender: "alice@pec.example.it".into(),
        from: "<alice@pec.example.it>".into(),
        to: Some("dan@pec.example.net".into()),
        cc: None,
        in_reply_to: None,
        recipients: vec!["dan@pec.example.net".into()],
        subject: "Contratto".into(),
        policies: settings(None).policies,
        digest: DigestAlgorithm::Sha256,
        digest_value: about.user_content.as_ref().unwrap().parts[0]
            .digest_value
            .clone()
            .unwrap(),
    };
    Composer {
        provider: &Provider {
            name: peer.issuer.provider_name.clone(),
            service_address: PEER_SERVICE.into(),
        },
        signer: &*peer.signer,
    }
    .receipt(
        &sub,
        &Receipt {
            event,
            code,
            message_id,
            evidence_id: issued.id(),
            to: &format!("<{OUR_SERVICE}>"),
            rcpt_to: OUR_SERVICE,
            other_provider: Some("PEC Example IT S.p.A."),
            recipient: None,
            relay_date: Some(at()),
        },
        &issued.xml,
        &[],
        at(),
    )
    .unwrap()
    .to_bytes()
}

/// Our own dispatch to dan@pec.example.net, its SubmissionAcceptance recorded as the access
/// point does.
async fn our_dispatch(h: &Harness) -> issue::Issued {
    let (_, ours) = dispatch(
        &h.kit,
        OUR_ID,
        "alice@pec.example.it",
        &["dan@pec.example.net"],
    )
    .await;
    let (row, event) = ours.stored(
        "alice@pec.example.it",
        vec![(
            "dan@pec.example.net".into(),
            pec::message::kind::RecipientType::Esterno,
        )],
        None,
    );
    assert!(h.store.record_evidence(&row, &event).unwrap());
    ours
}

#[tokio::test]
async fn a_relay_rejection_from_the_peer_becomes_one_relay_failure_to_our_sender() {
    let h = harness(Some(tsa(&env().url)), true);
    let ours = our_dispatch(&h).await;
    // The peer refuses it: RelayRejection RB21 about recipient 1, to our service address.
    let receipt = peer_receipt(
        &ours.model,
        Event::RelayRejection,
        "RB21",
        "rr.1@pec.example.net",
    )
    .await;
    let t = tx(receipt, PEER_SERVICE, &[OUR_SERVICE]);
    let out = h.filter.process(&t, None).await.unwrap();
    match &out.local {
        Some(Local::Rem(RemLocal::Receipt {
            correlated,
            failure,
            message_id,
            ..
        })) => {
            assert!(correlated);
            assert!(failure.is_some());
            assert_eq!(message_id.as_deref(), Some(OUR_ID));
        }
        other => panic!("{other:?}"),
    }
    let sent = h.injector.messages();
    assert_eq!(sent.len(), 1, "the receipt is consumed; one relay failure");
    assert_eq!(sent[0].rcpt_to, vec!["alice@pec.example.it".to_string()]);
    let (msg, ev) = our_receipt(&h, &sent[0].message);
    assert_eq!(msg.event, Event::RelayFailure);
    assert_eq!(msg.classify().code, Some("RB21"));
    assert_eq!(ev.message_id.as_deref(), Some(OUR_ID));
    assert_eq!(ev.relay_info.as_ref().unwrap().refers_to, vec![1]);
    let stored = h.store.evidences_for(OUR_ID).unwrap();
    let mut kinds: Vec<(String, EvidenceDirection)> = stored
        .iter()
        .map(|s| (s.evidence.event.clone(), s.evidence.direction))
        .collect();
    kinds.sort_by_key(|k| k.0.clone());
    assert_eq!(
        kinds,
        vec![
            (Event::RelayFailure.uri(), EvidenceDirection::Issued),
            (Event::RelayRejection.uri(), EvidenceDirection::Received),
            (Event::SubmissionAcceptance.uri(), EvidenceDirection::Issued),
        ]
    );

    // The same receipt again: nothing new.
    h.filter.process(&t, None).await.unwrap();
    assert_eq!(h.injector.messages().len(), 1);
    assert_eq!(h.store.evidences_for(OUR_ID).unwrap().len(), 3);
}

#[tokio::test]
async fn a_receipt_about_no_dispatch_of_ours_is_consumed_and_never_certified() {
    let h = harness(Some(tsa(&env().url)), true);
    // A peer's RelayAcceptance about a dispatch we never sent.
    let (_, theirs) = dispatch(
        &peer_kit(),
        "opec1.unknown@pec.example.it",
        "alice@pec.example.it",
        &["dan@pec.example.net"],
    )
    .await;
    let receipt = peer_receipt(
        &theirs.model,
        Event::RelayAcceptance,
        "RB01",
        "ra.1@pec.example.net",
    )
    .await;
    let t = tx(receipt, PEER_SERVICE, &[OUR_SERVICE]);
    let out = h.filter.process(&t, None).await.unwrap();
    assert!(
        matches!(
            &out.local,
            Some(Local::Rem(RemLocal::Receipt {
                correlated: false,
                failure: None,
                ..
            }))
        ),
        "{:?}",
        out.local
    );
    assert!(h.injector.messages().is_empty());
    assert!(h
        .store
        .evidences_for("opec1.unknown@pec.example.it")
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn our_own_dispatch_to_our_own_user_is_delivered_without_relay_evidences() {
    let h = harness(Some(tsa(&env().url)), true);
    let (data, _) = dispatch(
        &h.kit,
        OUR_ID,
        "alice@pec.example.it",
        &["bob@pec.example.it"],
    )
    .await;
    let t = tx(
        data.clone(),
        "alice@pec.example.it",
        &["bob@pec.example.it"],
    );
    let out = h.filter.process(&t, None).await.unwrap();
    assert!(
        matches!(&out.local, Some(Local::Rem(RemLocal::Own { message_id, .. })) if message_id == OUR_ID),
        "{:?}",
        out.local
    );
    let sent = h.injector.messages();
    assert_eq!(sent.len(), 1, "no relay receipt");
    assert_eq!(sent[0].rcpt_to, vec!["bob@pec.example.it".to_string()]);
    assert_eq!(sent[0].message, data);
    assert!(h.store.evidences_for(OUR_ID).unwrap().is_empty());
}

#[tokio::test]
async fn a_local_recipient_the_dispatch_does_not_name_gets_the_mailbox_policy() {
    let h = harness(Some(tsa(&env().url)), true);
    let data = peer_dispatch(&["bob@pec.example.it"]).await;
    // The SMTP envelope is not signed: eve is not a recipient of this dispatch.
    let t = tx(
        data.clone(),
        "alice@pec.example.net",
        &["bob@pec.example.it", "eve@pec.example.it"],
    );
    let out = h.filter.process(&t, None).await.unwrap();
    match &out.local {
        Some(Local::Rem(RemLocal::Relayed {
            delivered, unknown, ..
        })) => {
            assert_eq!(delivered, &vec!["bob@pec.example.it".to_string()]);
            assert!(unknown.is_empty());
        }
        other => panic!("{other:?}"),
    }
    let sent = h.injector.messages();
    let receipts: Vec<_> = sent
        .iter()
        .filter(|m| m.rcpt_to == vec![PEER_SERVICE.to_string()])
        .collect();
    assert_eq!(receipts.len(), 1);
    let (msg, ev) = our_receipt(&h, &receipts[0].message);
    assert_eq!(msg.event, Event::RelayAcceptance);
    assert_eq!(ev.relay_info.unwrap().refers_to, vec![1]);
    let to_eve: Vec<_> = sent
        .iter()
        .filter(|m| m.rcpt_to == vec!["eve@pec.example.it".to_string()])
        .collect();
    assert_eq!(to_eve.len(), 1);
    assert_ne!(
        to_eve[0].message, data,
        "eve gets the anomaly envelope, not the dispatch"
    );
    assert!(sent
        .iter()
        .filter(|m| m.message == data)
        .all(|m| m.rcpt_to == vec!["bob@pec.example.it".to_string()]));
}

#[tokio::test]
async fn a_relay_rejection_about_another_original_is_not_correlated() {
    let h = harness(Some(tsa(&env().url)), true);
    let ours = our_dispatch(&h).await;
    // Our message identifier, another digest: not about what we sent.
    let mut other = ours.model.clone();
    other.user_content.as_mut().unwrap().parts[0].digest_value =
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into());
    let receipt = peer_receipt(
        &other,
        Event::RelayRejection,
        "RB21",
        "rr.2@pec.example.net",
    )
    .await;
    let t = tx(receipt, PEER_SERVICE, &[OUR_SERVICE]);
    let out = h.filter.process(&t, None).await.unwrap();
    assert!(
        matches!(
            &out.local,
            Some(Local::Rem(RemLocal::Receipt {
                correlated: false,
                failure: None,
                ..
            }))
        ),
        "{:?}",
        out.local
    );
    assert!(h.injector.messages().is_empty(), "no relay failure");
    assert_eq!(h.store.evidences_for(OUR_ID).unwrap().len(), 1, "ours only");
}

#[tokio::test]
async fn a_dispatch_with_malware_is_quarantined_and_rejected_rb03() {
    let h = harness(Some(tsa(&env().url)), true);
    let kit = peer_kit();
    let raw = String::from_utf8(original("alice@pec.example.net", &["bob@pec.example.it"]))
        .unwrap()
        .replace(
            "in allegato il contratto.",
            "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*",
        );
    // The peer's dispatch of that original, built as `dispatch` builds it.
    let policies = settings(None).policies;
    let prepared = compose::prepare_original(raw.as_bytes(), PEER_ID).unwrap();
    let sub =
        compose::Submission::from_original(&prepared, policies.clone(), DigestAlgorithm::Sha256)
            .unwrap();
    let issued = issue::issue(
        &kit,
        Some(&tsa(&env().url)),
        EvidenceInput {
            event: Event::SubmissionAcceptance,
            reason: Reason::by_code("RA01").unwrap(),
            message_id: PEER_ID.into(),
            event_time: at(),
            submission_time: Some(at()),
            sender: "alice@pec.example.net".into(),
            identity: None,
            authentication: None,
            recipients: sub.recipients.clone(),
            refers_to_recipient: None,
            ua_message_id: None,
            digest: Some(sub.digest_value.clone()),
            subject: sub.subject.clone(),
            policies,
            provider: kit.issuer.provider_name.clone(),
        },
    )
    .await
    .unwrap();
    let data = Composer {
        provider: &Provider {
            name: kit.issuer.provider_name.clone(),
            service_address: PEER_SERVICE.into(),
        },
        signer: &*kit.signer,
    }
    .dispatch(
        &prepared,
        &sub,
        &EvidenceAttachment {
            event: Event::SubmissionAcceptance,
            xml: &issued.xml,
        },
        issued.id(),
        &[],
        None,
        at(),
    )
    .unwrap()
    .to_bytes();
    let t = tx(
        data.clone(),
        "alice@pec.example.net",
        &["bob@pec.example.it"],
    );
    let out = h.filter.process(&t, None).await.unwrap();
    assert_eq!(relay_code(&out.local), Some("RB03"));
    let sent = h.injector.messages();
    assert_eq!(sent.len(), 1, "the rejection only: nothing delivered");
    assert_eq!(sent[0].rcpt_to, vec![PEER_SERVICE.to_string()]);
    let (msg, ev) = our_receipt(&h, &sent[0].message);
    assert_eq!(msg.event, Event::RelayRejection);
    assert_eq!(ev.reason().unwrap().code, "RB03");
    assert_eq!(
        h.store.quarantined(PEER_ID).unwrap(),
        vec![data],
        "the dispatch is quarantined"
    );
}

#[tokio::test]
async fn a_peer_receipt_goes_to_the_sender_it_names_and_to_nobody_else() {
    let h = harness(Some(tsa(&env().url)), true);
    let ours = our_dispatch(&h).await;
    // A valid receipt (here a RelayRejection) sent straight to users: alice is the sender
    // its evidence names, mallory is not.
    let receipt = peer_receipt(
        &ours.model,
        Event::RelayRejection,
        "RB21",
        "rr.3@pec.example.net",
    )
    .await;
    let t = tx(
        receipt.clone(),
        PEER_SERVICE,
        &["alice@pec.example.it", "mallory@pec.example.it"],
    );
    let out = h.filter.process(&t, None).await.unwrap();
    assert!(
        matches!(&out.local, Some(Local::Rem(RemLocal::Delivered { to, .. })) if to == &vec!["alice@pec.example.it".to_string()]),
        "{:?}",
        out.local
    );
    let sent = h.injector.messages();
    let to_alice: Vec<_> = sent.iter().filter(|m| m.message == receipt).collect();
    assert_eq!(to_alice.len(), 1);
    assert_eq!(
        to_alice[0].rcpt_to,
        vec!["alice@pec.example.it".to_string()]
    );
    let to_mallory: Vec<_> = sent
        .iter()
        .filter(|m| m.rcpt_to == vec!["mallory@pec.example.it".to_string()])
        .collect();
    assert_eq!(to_mallory.len(), 1);
    assert!(
        !rem_message::is_rem(&to_mallory[0].message),
        "an anomaly envelope"
    );
}

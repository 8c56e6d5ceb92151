// SPDX-License-Identifier: GPL-3.0-or-later
//! The reception point's REM path (issue 20 item 4, R-REMS side) in process, with the test
//! PKI and the test TSA of [`crate::rem_access`]: a peer (`pec.example.net`, signing with
//! the second test certificate, put on a test Trusted List) sends a REM dispatch to our
//! user; the after-queue filter judges it, answers the sending REMS with a RelayAcceptance
//! (once, a replay builds nothing) and delivers it unchanged; an altered dispatch gets a
//! RelayRejection and is not delivered as REM; a dispatch whose signature does not verify
//! to a granted REM service gets no answer at all (no backscatter); a retired mailbox RB21;
//! the TSA down a tempfail with nothing recorded; a peer's RelayRejection about our
//! dispatch a RelayFailure to our sender, once; a peer's ContentConsignment to our sender
//! delivered and stored once, only when signed by the service serving the recipient's
//! domain; ordinary mail to a REM mailbox a ReceivedFromNonERDS, once.

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
use pec::rem::dns::StaticMx;
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
    let peers = match trusted {
        true => trusted_list(vec![peer_der()]),
        // A list that grants somebody else.
        false => trusted_list(vec![b"not the peer".to_vec()]),
    };
    harness_with(store, tsa, peers)
}

/// [`harness_on`] with the Trusted List `peers`.
fn harness_with(store: Arc<TestStore>, tsa: Option<TsaSettings>, peers: RemPeers) -> Harness {
    harness_handle(store, tsa, Arc::new(PeersHandle::new(peers)))
}

/// [`harness_with`] with the peers `handle` (loaded or not).
fn harness_handle(
    store: Arc<TestStore>,
    tsa: Option<TsaSettings>,
    handle: Arc<PeersHandle>,
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
    let rem = RemReception {
        settings: settings(tsa),
        chain,
        tsa_anchors: vec![env().pki.ca_cert.clone()],
        peers: Some(handle),
        // The peer's domain is served by its REM service (its smtp supply point).
        mx: Some(Arc::new(
            StaticMx::new().with_mx("pec.example.net", &[(10, "mx.pec.example.net")]),
        )),
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
    dispatch_stating(kit, id, from, to, None).await
}

/// [`dispatch`] whose evidence states `digest` (else the original's own).
async fn dispatch_stating(
    kit: &Issuing,
    id: &str,
    from: &str,
    to: &[&str],
    digest: Option<&str>,
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
        digest: Some(digest.map_or_else(|| sub.digest_value.clone(), str::to_string)),
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
async fn before_any_trusted_list_is_loaded_a_dispatch_is_a_tempfail_and_nothing_is_answered() {
    // pec serve starting on a store without lists: no view yet. Judging against an empty
    // view would call a granted peer untrusted (a false RelayRejection, or its receipt
    // dropped): the message waits in Postfix's queue instead.
    let handle = Arc::new(PeersHandle::default());
    let h = harness_handle(
        Arc::new(TestStore::new()),
        Some(tsa(&env().url)),
        handle.clone(),
    );
    let data = peer_dispatch(&["bob@pec.example.it"]).await;
    let t = tx(
        data.clone(),
        "alice@pec.example.net",
        &["bob@pec.example.it"],
    );
    match h.filter.process(&t, None).await {
        Err(pec::reception::AfterQueueError::Rem(why)) => {
            assert!(why.contains("not loaded"), "{why}")
        }
        other => panic!("not a temporary failure: {other:?}"),
    }
    assert!(h.injector.messages().is_empty(), "nothing answered");
    assert!(h.store.evidences_for(PEER_ID).unwrap().is_empty());
    // The first refresh loads the list: the retry is accepted.
    handle.replace(trusted_list(vec![peer_der()]));
    let out = h.filter.process(&t, None).await.unwrap();
    assert!(
        matches!(
            &out.local,
            Some(Local::Rem(RemLocal::Relayed {
                acceptance: Some(_),
                ..
            }))
        ),
        "{:?}",
        out.local
    );
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
async fn a_granted_peers_dispatch_with_a_wrong_digest_gets_a_relay_rejection_rb02() {
    // Signed by the granted peer (the signature verifies), but its evidence states the
    // digest of another original: a content problem, answered to the verified signer.
    let h = harness(Some(tsa(&env().url)), true);
    let (altered, _) = dispatch_stating(
        &peer_kit(),
        PEER_ID,
        "alice@pec.example.net",
        &["bob@pec.example.it"],
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    )
    .await;
    let t = tx(
        altered.clone(),
        "alice@pec.example.net",
        &["bob@pec.example.it"],
    );
    let out = h.filter.process(&t, None).await.unwrap();
    let code = relay_code(&out.local).expect("rejected");
    assert_eq!(code, "RB02");
    let sent = h.injector.messages();
    let receipt = sent
        .iter()
        .find(|m| m.rcpt_to == vec![PEER_SERVICE.to_string()])
        .expect("a receipt to the sending REMS");
    let (msg, ev) = our_receipt(&h, &receipt.message);
    assert_eq!(msg.event, Event::RelayRejection);
    assert_eq!(ev.reason().unwrap().code, code);
    assert_eq!(ev.relay_info.as_ref().unwrap().refers_to, vec![1]);
    // Bob gets not the peer's dispatch but the mailbox policy: our ReceivedFromNonERDS.
    let to_bob: Vec<_> = sent
        .iter()
        .filter(|m| m.rcpt_to == vec!["bob@pec.example.it".to_string()])
        .collect();
    assert_eq!(to_bob.len(), 1);
    assert_ne!(to_bob[0].message, altered);
    non_erds(&h, &to_bob[0].message);
    match &out.local {
        Some(Local::Rem(RemLocal::Rejected { handled, .. })) => {
            assert!(matches!(
                **handled,
                Local::NotPec {
                    anomaly: None,
                    received_from_non_erds: Some(_),
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

const VICTIM: &str = "victim@elsewhere.example.org";

/// A dispatch signed by `signer` whose sending REMS (its `From`, the reverse path) is the
/// victim: the attacker's forgery.
async fn forged_dispatch(signer: PemSigner) -> Vec<u8> {
    let attacker = kit(
        signer,
        VICTIM,
        "Mallory S.p.A.",
        "pec.example.net",
        Arc::new(TestStore::new()),
        Arc::new(RecordingInjector::new()),
    );
    dispatch(
        &attacker,
        PEER_ID,
        "alice@pec.example.net",
        &["bob@pec.example.it"],
    )
    .await
    .0
}

/// The attacker's dispatch got nothing sent to the victim, nothing certified, and is
/// logged; bob's mailbox policy (anomaly) handled it as mail from outside an ERDS.
async fn assert_no_backscatter(h: &Harness, data: &[u8], want_code: &str) {
    let t = tx(data.to_vec(), VICTIM, &["bob@pec.example.it"]);
    let out = h.filter.process(&t, None).await.unwrap();
    match &out.local {
        Some(Local::Rem(RemLocal::Unverified { code, handled, .. })) => {
            assert_eq!(*code, want_code);
            assert!(
                matches!(
                    **handled,
                    Local::NotPec {
                        anomaly: None,
                        received_from_non_erds: Some(_),
                        ..
                    }
                ),
                "the mailbox policy: {handled:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let sent = h.injector.messages();
    assert!(
        !sent
            .iter()
            .any(|m| m.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(VICTIM))),
        "nothing goes to the sender the forgery names"
    );
    assert!(
        sent.iter()
            .all(|m| m.rcpt_to == vec!["bob@pec.example.it".to_string()]),
        "only bob's mailbox policy acted"
    );
    assert!(
        !sent.iter().any(|m| m.message == data),
        "not delivered as is"
    );
    // Bob gets it as mail from outside an ERDS, in our ReceivedFromNonERDS.
    let (_, ev) = non_erds(h, &sent[0].message);
    assert_eq!(ev.sender.identifier.as_ref().unwrap().value, VICTIM);
    assert!(
        h.store.evidences_for(PEER_ID).unwrap().is_empty(),
        "nothing certified about it"
    );
    assert!(
        h.store.all_events().iter().any(|e| e
            .reason
            .as_deref()
            .is_some_and(|r| r.contains(want_code) && r.contains("nessuna risposta"))
            && e.outcome == "received_from_non_erds"),
        "the event is logged with its reason: {:?}",
        h.store.all_events()
    );
}

#[tokio::test]
async fn a_dispatch_signed_off_the_trusted_list_sends_nothing_to_the_sender_it_names() {
    let h = harness(Some(tsa(&env().url)), false);
    let data = forged_dispatch(peer_signer()).await;
    assert_no_backscatter(&h, &data, "RB06").await;
}

#[tokio::test]
async fn a_dispatch_signed_by_an_unknown_ca_sends_nothing_to_the_sender_it_names() {
    let h = harness(Some(tsa(&env().url)), true);
    let data = forged_dispatch(pem_signer(
        &env().pki.outsider_key,
        &env().pki.outsider_cert,
    ))
    .await;
    assert_no_backscatter(&h, &data, "RB05").await;
}

#[tokio::test]
async fn a_dispatch_whose_signature_does_not_verify_sends_nothing_to_the_sender_it_names() {
    let h = harness(Some(tsa(&env().url)), true);
    let data = forged_dispatch(peer_signer()).await;
    // One byte of the signed content changed: the S/MIME signature no longer verifies.
    let at = data
        .windows(b"Buongiorno".len())
        .position(|w| w == b"Buongiorno")
        .expect("the original is in the dispatch");
    let mut bad = data.clone();
    bad[at] = b'b';
    assert_no_backscatter(&h, &bad, "RB04").await;
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
            // A consignment receipt names its recipient.
            recipient: matches!(
                event,
                Event::ContentConsignment | Event::ContentConsignmentFailure
            )
            .then_some("dan@pec.example.net"),
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
    assert_ne!(to_eve[0].message, data, "eve does not get the dispatch");
    // eve's mailbox policy (anomaly) for mail the dispatch does not name: ReceivedFromNonERDS.
    non_erds(&h, &to_eve[0].message);
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
    // mallory's mailbox policy: the REM busta di anomalia.
    non_erds(&h, &to_mallory[0].message);
}

/// A peer's REM receipt straight to our sender alice (as the kit sends ContentConsignment):
/// [`peer_receipt`] with the SMTP envelope to alice.
fn to_alice(receipt: &[u8]) -> Transaction {
    tx(receipt.to_vec(), PEER_SERVICE, &["alice@pec.example.it"])
}

#[tokio::test]
async fn a_content_consignment_to_our_sender_is_delivered_and_stored_once() {
    let h = harness(Some(tsa(&env().url)), true);
    let ours = our_dispatch(&h).await;
    let outcome_of_dan = |h: &Harness| {
        pec::rem::outcome::of(
            &h.store.evidences_for(OUR_ID).unwrap(),
            "dan@pec.example.net",
        )
    };
    assert_eq!(outcome_of_dan(&h), Default::default());

    // The peer's RelayAcceptance to our service address: the relay decided for dan.
    let ra = peer_receipt(
        &ours.model,
        Event::RelayAcceptance,
        "RB01",
        "ra.9@pec.example.net",
    )
    .await;
    h.filter
        .process(&tx(ra, PEER_SERVICE, &[OUR_SERVICE]), None)
        .await
        .unwrap();
    let o = outcome_of_dan(&h);
    assert_eq!(o.relay.map(|d| d.event), Some(Event::RelayAcceptance));
    assert_eq!(o.consignment, None);

    // Its ContentConsignment to alice: delivered unchanged, its evidence stored.
    let cc = peer_receipt(
        &ours.model,
        Event::ContentConsignment,
        "RD01",
        "cc.1@pec.example.net",
    )
    .await;
    let out = h.filter.process(&to_alice(&cc), None).await.unwrap();
    assert!(
        matches!(&out.local, Some(Local::Rem(RemLocal::Delivered { event: Event::ContentConsignment, to })) if to == &vec!["alice@pec.example.it".to_string()]),
        "{:?}",
        out.local
    );
    let delivered = |h: &Harness| {
        h.injector
            .messages()
            .iter()
            .filter(|m| m.rcpt_to == vec!["alice@pec.example.it".to_string()])
            .count()
    };
    assert_eq!(delivered(&h), 1);
    assert_eq!(
        h.injector
            .messages()
            .iter()
            .filter(|m| m.message == cc)
            .count(),
        1
    );
    let stored = h.store.evidences_for(OUR_ID).unwrap();
    let cc_row = stored
        .iter()
        .find(|s| s.evidence.event == Event::ContentConsignment.uri())
        .expect("the consignment evidence stored");
    assert_eq!(cc_row.evidence.direction, EvidenceDirection::Received);
    assert_eq!(
        cc_row.evidence.recipient.as_deref(),
        Some("dan@pec.example.net")
    );
    let o = outcome_of_dan(&h);
    assert_eq!(
        o.consignment.map(|d| d.event),
        Some(Event::ContentConsignment)
    );
    let count = stored.len();

    // The same message again (a Postfix retry): nothing new.
    let again = h.filter.process(&to_alice(&cc), None).await.unwrap();
    assert!(
        matches!(
            &again.local,
            Some(Local::Rem(RemLocal::Receipt { replay: true, .. }))
        ),
        "{:?}",
        again.local
    );
    // A second outcome for dan (another ContentConsignment, then a failure): a replay,
    // never delivered, never stored.
    for (event, code, id) in [
        (Event::ContentConsignment, "RD01", "cc.2@pec.example.net"),
        (
            Event::ContentConsignmentFailure,
            "RD04",
            "cf.1@pec.example.net",
        ),
    ] {
        let r = peer_receipt(&ours.model, event, code, id).await;
        let out = h.filter.process(&to_alice(&r), None).await.unwrap();
        assert!(
            matches!(
                &out.local,
                Some(Local::Rem(RemLocal::Receipt {
                    correlated: true,
                    replay: true,
                    ..
                }))
            ),
            "{:?}",
            out.local
        );
    }
    assert_eq!(delivered(&h), 1, "delivered once");
    assert_eq!(h.store.evidences_for(OUR_ID).unwrap().len(), count);
    assert_eq!(
        outcome_of_dan(&h).consignment.map(|d| d.event),
        Some(Event::ContentConsignment),
        "the first outcome stands"
    );
    assert!(
        h.store.all_events().iter().any(|e| e.outcome == "replay"),
        "the replays are logged"
    );
}

/// A Trusted List with two granted REM services: `pec.example.net`'s MX host served by one
/// whose identity is not the peer's certificate, and another provider (`other.example.org`)
/// whose identity is the peer's certificate.
fn two_services_list() -> RemPeers {
    let since = Instant::parse_cli("2000-01-01T00:00:00Z").unwrap();
    let service = |name: &str, cert: Vec<u8>, mx: &str| TrustService {
        service_type: SERVICE_TYPE_REM.into(),
        name: name.into(),
        status: STATUS_GRANTED.into(),
        status_since: since,
        identity: DigitalIdentity {
            certificates: vec![cert],
            ..DigitalIdentity::default()
        },
        supply_points: vec![format!("smtp:{mx}")],
        history: Vec::new(),
    };
    RemPeers::new(&[TrustedList {
        territory: "IT".into(),
        sequence: 1,
        operator: "Test TL operator".into(),
        issued_at: since,
        next_update: Some(Instant::parse_cli("2100-01-01T00:00:00Z").unwrap()),
        signed: true,
        providers: vec![
            ServiceProvider {
                name: "PEC Example NET S.p.A.".into(),
                services: vec![service(
                    "REM NET",
                    b"the real net".to_vec(),
                    "mx.pec.example.net",
                )],
            },
            ServiceProvider {
                name: "Other S.p.A.".into(),
                services: vec![service("REM OTHER", peer_der(), "mx.other.example.org")],
            },
        ],
    }])
}

#[tokio::test]
async fn a_receipt_signed_by_another_granted_provider_is_not_correlated() {
    let h = harness_with(
        Arc::new(TestStore::new()),
        Some(tsa(&env().url)),
        two_services_list(),
    );
    let ours = our_dispatch(&h).await;
    // Granted, signature good, about our dispatch to dan@pec.example.net: but signed by a
    // provider that does not serve pec.example.net.
    for (event, code, id, t) in [
        (
            Event::RelayAcceptance,
            "RB01",
            "ra.x@other.example.org",
            OUR_SERVICE,
        ),
        (
            Event::RelayRejection,
            "RB21",
            "rr.x@other.example.org",
            OUR_SERVICE,
        ),
        (
            Event::ContentConsignment,
            "RD01",
            "cc.x@other.example.org",
            "alice@pec.example.it",
        ),
    ] {
        let r = peer_receipt(&ours.model, event, code, id).await;
        let out = h
            .filter
            .process(&tx(r, PEER_SERVICE, &[t]), None)
            .await
            .unwrap();
        assert!(
            matches!(
                &out.local,
                Some(Local::Rem(RemLocal::Receipt {
                    correlated: false,
                    failure: None,
                    ..
                }))
            ),
            "{event}: {:?}",
            out.local
        );
    }
    assert!(
        h.injector.messages().is_empty(),
        "nothing delivered, no relay failure"
    );
    let stored = h.store.evidences_for(OUR_ID).unwrap();
    assert_eq!(stored.len(), 1, "only our own SubmissionAcceptance");
    assert_eq!(
        pec::rem::outcome::of(&stored, "dan@pec.example.net"),
        Default::default()
    );
    let logged = h
        .store
        .all_events()
        .into_iter()
        .filter(|e| e.outcome == "uncorrelated")
        .count();
    assert_eq!(logged, 3, "each logged");
}

#[tokio::test]
async fn a_dns_failure_while_checking_the_peer_is_a_tempfail_with_nothing_recorded() {
    let mut h = harness(Some(tsa(&env().url)), true);
    let ours = our_dispatch(&h).await;
    // Rebuild the filter with a resolver that fails for the recipient's domain.
    let rem = RemReception {
        settings: settings(Some(tsa(&env().url))),
        chain: ChainPolicy::from_pem(&std::fs::read(&env().pki.ca_cert).unwrap(), true).unwrap(),
        tsa_anchors: vec![env().pki.ca_cert.clone()],
        peers: Some(Arc::new(PeersHandle::new(trusted_list(vec![peer_der()])))),
        mx: Some(Arc::new(StaticMx::new().with(
            "pec.example.net",
            Err(pec::rem::dns::DnsError::Temporary {
                domain: "pec.example.net".into(),
                reason: "servfail".into(),
            }),
        ))),
    };
    h.filter = h.filter.with_rem(Some(Arc::new(rem)));
    let cc = peer_receipt(
        &ours.model,
        Event::ContentConsignment,
        "RD01",
        "cc.3@pec.example.net",
    )
    .await;
    let reply = h.filter.filter(&to_alice(&cc)).await;
    assert!(matches!(reply, FilterReply::Tempfail(_)), "{reply:?}");
    assert!(h.injector.messages().is_empty());
    assert_eq!(h.store.evidences_for(OUR_ID).unwrap().len(), 1);
}

/// Our ReceivedFromNonERDS REM message, verified: our S/MIME signature, a REM dispatch of
/// event ReceivedFromNonERDS (RF04) carrying the original, its evidence ours, stamped and
/// stored. Returns it and its evidence.
fn non_erds(h: &Harness, data: &[u8]) -> (rem_message::RemMessage, Evidence) {
    let opts = VerifyOptions::without_index(at());
    let v = rem_message::verify(data, &opts).expect("our REM message verifies");
    assert_eq!(v.verified.signer_der, h.kit.signer.certificate_der());
    let m = v.message;
    assert_eq!(m.message_type, MessageType::Dispatch);
    assert_eq!(m.event, Event::ReceivedFromNonERDS);
    assert_eq!(m.classify().code, Some("RF04"));
    assert!(m.original.is_some(), "it carries the message");
    let xml = &m.evidences[0].body;
    let x = xades::verify(xml, &env().pki.ca_cert).expect("its evidence verifies");
    assert_eq!(x.signer, h.kit.signer.certificate_der());
    let ev = Evidence::parse(xml).unwrap();
    assert_eq!(ev.event, Event::ReceivedFromNonERDS);
    assert_eq!(ev.reason().unwrap().code, "RF04");
    let id = ev.message_id.clone().unwrap();
    let stored = h.store.evidences_for(&id).unwrap();
    assert_eq!(stored.len(), 1, "stored once");
    assert_eq!(stored[0].evidence.direction, EvidenceDirection::Issued);
    assert_eq!(stored[0].evidence.id, ev.evidence_id);
    (m, ev)
}

#[tokio::test]
async fn ordinary_mail_to_a_rem_mailbox_becomes_received_from_non_erds_once() {
    let h = harness(Some(tsa(&env().url)), true);
    let plain = original("carol@example.org", &["bob@pec.example.it"]);
    let t = tx(plain.clone(), "carol@example.org", &["bob@pec.example.it"]);
    let out = h.filter.process(&t, None).await.unwrap();
    let id = match &out.local {
        Some(Local::NotPec {
            anomaly: None,
            received_from_non_erds: Some(id),
            ..
        }) => id.clone(),
        other => panic!("{other:?}"),
    };
    let sent = h.injector.messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].rcpt_to, vec!["bob@pec.example.it".to_string()]);
    assert_eq!(sent[0].mail_from, OUR_SERVICE, "bounces come back to us");
    let (m, ev) = non_erds(&h, &sent[0].message);
    assert_eq!(ev.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        ev.sender.identifier.as_ref().unwrap().value,
        "carol@example.org"
    );
    let original = String::from_utf8(m.original.unwrap()).unwrap();
    assert!(original.contains("in allegato il contratto."));
    assert!(h
        .store
        .all_events()
        .iter()
        .any(|e| e.pec_id == id && e.outcome == "received_from_non_erds" && e.reason.is_some()));
    let events = h.store.all_events().len();

    // The same message again (another queue file, same Message-ID): nothing new, no time
    // stamp asked (the TSA is down now).
    let h2 = harness_on(
        h.store.clone(),
        Some(tsa(&format!("http://127.0.0.1:{}/tsa", closed_port()))),
        true,
    );
    let mut again = tx(plain, "carol@example.org", &["bob@pec.example.it"]);
    again.queue_id = Some("6B2C3D4E5F".into());
    let out = h2.filter.process(&again, None).await.unwrap();
    assert!(
        matches!(&out.local, Some(Local::NotPec { received_from_non_erds: Some(i), .. }) if *i == id),
        "{:?}",
        out.local
    );
    assert!(h2.injector.messages().is_empty(), "nothing injected again");
    assert_eq!(h.store.all_events().len(), events, "nothing recorded again");
    assert_eq!(h.store.evidences_for(&id).unwrap().len(), 1);
}

#[tokio::test]
async fn received_from_non_erds_with_the_tsa_down_is_a_tempfail_and_nothing_is_recorded() {
    let h = harness(
        Some(tsa(&format!("http://127.0.0.1:{}/tsa", closed_port()))),
        true,
    );
    let plain = original("carol@example.org", &["bob@pec.example.it"]);
    let t = tx(plain, "carol@example.org", &["bob@pec.example.it"]);
    let reply = h.filter.filter(&t).await;
    assert!(matches!(reply, FilterReply::Tempfail(_)), "{reply:?}");
    assert!(h.injector.messages().is_empty());
    assert!(
        h.store.all_events().is_empty(),
        "{:?}",
        h.store.all_events()
    );
}

#[tokio::test]
async fn ordinary_mail_to_a_domain_set_to_pec_gets_the_anomaly_envelope() {
    // Our domain set to PEC in [rem] domains: its mailboxes are not REM mailboxes.
    let mut h = harness(Some(tsa(&env().url)), true);
    let mut s = settings(Some(tsa(&env().url)));
    s.domains
        .insert("pec.example.it".into(), pec::config::Protocol::Pec);
    let rem = RemReception {
        settings: s,
        chain: ChainPolicy::from_pem(&std::fs::read(&env().pki.ca_cert).unwrap(), true).unwrap(),
        tsa_anchors: vec![env().pki.ca_cert.clone()],
        peers: Some(Arc::new(PeersHandle::new(trusted_list(vec![peer_der()])))),
        mx: None,
    };
    h.filter = h.filter.with_rem(Some(Arc::new(rem)));
    let plain = original("carol@example.org", &["bob@pec.example.it"]);
    let t = tx(plain, "carol@example.org", &["bob@pec.example.it"]);
    let out = h.filter.process(&t, None).await.unwrap();
    assert!(
        matches!(
            &out.local,
            Some(Local::NotPec {
                anomaly: Some(_),
                received_from_non_erds: None,
                ..
            })
        ),
        "{:?}",
        out.local
    );
    let sent = h.injector.messages();
    assert_eq!(sent.len(), 1);
    assert!(
        !rem_message::is_rem(&sent[0].message),
        "the PEC busta di anomalia"
    );
}

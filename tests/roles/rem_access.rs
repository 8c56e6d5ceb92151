// SPDX-License-Identifier: GPL-3.0-or-later
//! The access point's REM path (issue 20) in process: the milter driven by
//! `indymilter-test`, the test PKI and the test TSA (`tests/tsa/tsa.py`): a submission from
//! a sender with an identity record to a REM domain becomes a REM dispatch that reads and
//! verifies, its SubmissionAcceptance evidence carrying the sender identity and the
//! authentication time; the REM receipt after queue goes once; the evidence is stored with
//! its legal-log record. Without identity: PEC (`auto`) or a SubmissionRejection (domain
//! forced to `rem`); the TSA down: tempfail and nothing recorded; a PEC submission as before.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use indymilter_test::Status;
use pec::access::rem::RemAccess;
use pec::access::{AccessPoint, Policy};
use pec::config::{Protocol, RemMode, RemSettings};
use pec::crypto::testing::{make_test_pki, TestPki};
use pec::crypto::tsa::TsaSettings;
use pec::crypto::verify::VerifyOptions;
use pec::crypto::{DigestAlg, PemSigner, Signer};
use pec::doubles::{MarkerAntivirus, RecordingInjector, TestStore};
use pec::index::{ProviderIndex, ProviderInfo, ProviderRecord};
use pec::issuing::Issuing;
use pec::message::build::Issuer;
use pec::message::classify::{classify, Classification};
use pec::message::ids::SequentialIds;
use pec::message::time::{FixedClock, Instant};
use pec::rem::codes::Event;
use pec::rem::evidence::Evidence;
use pec::rem::message::{self as rem_message, MessageType};
use pec::rem::xades;
use pec::store::{EventKind, IdentityAttribute, LogQuery, SenderIdentity, Store};
use tokio::net::TcpListener;

use crate::milter_client::{self, queued, Mail};
use crate::tsa;

const PEC_ID: &str = "opec1.test.1@pec.example.it";
/// A domain forced to REM (`[rem.domains]`).
const REM_DOMAIN: &str = "rem.example.net";
const PERSON_ID: &str = "IT/IT/RSSMRA80A01H501U";

pub(crate) fn at() -> Instant {
    Instant::parse_cli("2025-06-03T08:11:12Z").unwrap()
}

pub(crate) struct Env {
    _dir: tempfile::TempDir,
    pub(crate) pki: TestPki,
    _tsa: tsa::TsaProcess,
    pub(crate) url: String,
}

/// The test PKI and tsa.py, once per test binary.
pub(crate) fn env() -> &'static Env {
    static ENV: OnceLock<&'static Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let pki = make_test_pki(&dir.join("pki")).unwrap();
        let (tsa, url) = tsa::start(&dir.join("tsa"), &pki.dir, None);
        Box::leak(Box::new(Env {
            _dir: tmp,
            pki,
            _tsa: tsa,
            url,
        }))
    })
}

pub(crate) fn tsa(url: &str) -> TsaSettings {
    TsaSettings {
        ca_file: Some(env().pki.ca_cert.clone()),
        policy: Some("1.3.6.1.4.1.99999.1.1".into()),
        ..TsaSettings::new(url, Duration::from_secs(20))
    }
}

/// A port nothing listens on.
pub(crate) fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn rem_settings(tsa_url: &str) -> RemSettings {
    RemSettings {
        enabled: true,
        mode: RemMode::Auto,
        domains: BTreeMap::from([(REM_DOMAIN.to_string(), Protocol::Rem)]),
        provider_name: "REM Example IT S.p.A.".into(),
        policies: vec![
            pec::config::REM_BASELINE_POLICY.into(),
            pec::config::REM_POLICY_IT.into(),
        ],
        relay_wait: Duration::from_secs(24 * 3600),
        consignment_wait: Duration::from_secs(24 * 3600),
        evidence_tsa: Some(tsa(tsa_url)),
    }
}

struct Harness {
    addr: std::net::SocketAddr,
    store: Arc<TestStore>,
    injector: Arc<RecordingInjector>,
    kit: Issuing,
    index: Arc<ProviderIndex>,
    cert_der: Vec<u8>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

pub(crate) fn identity() -> SenderIdentity {
    SenderIdentity {
        attributes: vec![
            IdentityAttribute {
                name: "http://eidas.europa.eu/attributes/naturalperson/PersonIdentifier".into(),
                value: PERSON_ID.into(),
            },
            IdentityAttribute {
                name: "http://eidas.europa.eu/attributes/naturalperson/FamilyName".into(),
                value: "Rossi".into(),
            },
        ],
        level: "http://eidas.europa.eu/LoA/substantial".into(),
        policy: None,
        proofing: "spid".into(),
        set_at: at(),
        set_by: "operator".into(),
    }
}

async fn harness(tsa_url: &str, with_identity: bool) -> Harness {
    let pki = &env().pki;
    let signer = PemSigner::from_files(&pki.it_key, &pki.it_cert, None, DigestAlg::Sha256).unwrap();
    let cert_der = signer.certificate_der().to_vec();
    let index = Arc::new(ProviderIndex::from_records(vec![
        ProviderRecord {
            info: ProviderInfo {
                name: "PEC Example IT S.p.A.".into(),
                mail_receipt: "ricevute@pec.example.it".into(),
                managed_domains: vec!["pec.example.it".into()],
            },
            certificates: vec![cert_der.clone()],
        },
        ProviderRecord {
            info: ProviderInfo {
                name: "PEC Example NET S.p.A.".into(),
                mail_receipt: "ricevute@pec.example.net".into(),
                managed_domains: vec!["pec.example.net".into()],
            },
            certificates: vec![],
        },
    ]));
    let store = Arc::new(TestStore::new());
    if with_identity {
        store
            .set_sender_identity("alice@pec.example.it", &identity())
            .unwrap();
    }
    let injector = Arc::new(RecordingInjector::new());
    let kit = Issuing {
        store: store.clone(),
        injector: injector.clone(),
        issuer: Issuer {
            provider_name: "PEC Example IT S.p.A.".into(),
            service_address: "posta-certificata@pec.example.it".into(),
            envelope_sender_header: true,
        },
        signer: Arc::new(signer),
        ids: Arc::new(SequentialIds::new("opec1.test", "pec.example.it")),
        clock: Arc::new(FixedClock::new(at())),
    };
    let ap = Arc::new(AccessPoint {
        policy: Policy::default(),
        kit: kit.clone(),
        index: Arc::new(pec::index::IndexHandle::new((*index).clone())),
        antivirus: Arc::new(MarkerAntivirus::eicar()),
        log_requests: None,
        rem: Some(Arc::new(RemAccess {
            settings: rem_settings(tsa_url),
            domains: vec!["pec.example.it".into()],
            // No Trusted List, no resolver: other domains do not speak REM.
            peers: None,
            mx: None,
        })),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(pec::access::milter::run(listener, ap, async {
        let _ = rx.await;
    }));
    Harness {
        addr,
        store,
        injector,
        kit,
        index,
        cert_der,
        _shutdown: tx,
    }
}

fn mail(rcpt: &'static str, body: &str) -> Mail {
    Mail {
        login: Some("alice@pec.example.it"),
        mail_from: "alice@pec.example.it",
        rcpt: vec![rcpt],
        headers: vec![
            (
                "Received",
                "from client (client [192.0.2.1])\n\tby mx.pec.example.it".into(),
            ),
            ("From", "Alice <alice@pec.example.it>".into()),
            ("To", rcpt.to_string()),
            ("Subject", "Contratto".into()),
            ("Date", "Tue, 3 Jun 2025 10:11:09 +0200".into()),
            ("Message-ID", "<1@client.example.it>".into()),
            ("MIME-Version", "1.0".into()),
            ("Content-Type", "text/plain; charset=us-ascii".into()),
        ],
        body: body.into(),
    }
}

fn transaction(data: Vec<u8>, rcpt: &str) -> pec::smtp::Transaction {
    pec::smtp::Transaction {
        mail_from: "alice@pec.example.it".into(),
        rcpt_to: vec![rcpt.into()],
        data: data.into(),
        queue_id: Some("4F1A2B3C4D".into()),
        client: None,
    }
}

/// The evidence of a REM message, checked: parsed, signed by us, stamped by the test TSA.
fn checked_evidence(h: &Harness, xml: &[u8]) -> Evidence {
    let v = xades::verify(xml, &env().pki.ca_cert).expect("the evidence verifies");
    assert_eq!(v.signer, h.cert_der, "signed with our signing key");
    Evidence::parse(xml).unwrap()
}

#[tokio::test]
async fn a_rem_submission_becomes_a_verified_dispatch_and_its_receipt_goes_once() {
    let h = harness(&env().url, true).await;
    let rcpt = "bob@rem.example.net";
    let m = mail(rcpt, "Buongiorno,\r\nin allegato il contratto.\r\n");
    let (actions, status) = milter_client::submit(h.addr, &m, "4F1A2B3C4D").await;
    assert_eq!(status, Status::Accept);
    let dispatch = queued(&m, &actions);

    // A REM dispatch that reads and verifies: our signature, the digest of the original.
    let opts = VerifyOptions::without_index(at());
    let v = rem_message::verify(&dispatch, &opts).expect("the dispatch verifies");
    assert_eq!(v.verified.signer_der, h.cert_der);
    let msg = v.message;
    assert_eq!(msg.message_type, MessageType::Dispatch);
    assert_eq!(msg.event, Event::SubmissionAcceptance);
    assert_eq!(msg.message_id.as_deref(), Some(PEC_ID));
    msg.check_digest().unwrap();
    let original = msg.original.clone().expect("the original is carried");
    let text = String::from_utf8_lossy(&original);
    assert!(text.contains("in allegato il contratto."), "{text}");
    assert!(
        text.contains("REM-UAMessageIdentifier: <1@client.example.it>"),
        "{text}"
    );
    // The client's own header fields are gone from the top level (the dispatch's are
    // there once): only the trace field stays.
    let top = String::from_utf8_lossy(&dispatch);
    let head = &top[..top.find("\r\n\r\n").unwrap()];
    assert_eq!(
        head.matches("\nTo:").count() + head.starts_with("To:") as usize,
        1,
        "{head}"
    );
    assert!(head.contains("Received:"), "{head}");

    // Its evidence: ours, stamped, about this message, naming the sender's identity and
    // the authentication time of the session.
    assert_eq!(msg.evidences.len(), 1);
    let ev = checked_evidence(&h, &msg.evidences[0].body);
    assert_eq!(ev.event, Event::SubmissionAcceptance);
    assert_eq!(ev.reason().unwrap().code, "RA01");
    assert_eq!(ev.message_id.as_deref(), Some(PEC_ID));
    assert_eq!(
        ev.sender.identity.iter().find_map(|a| {
            (a.friendly_name.as_deref() == Some("PersonIdentifier")).then(|| a.value())
        }),
        Some(Some(PERSON_ID))
    );
    let assurance = ev.sender.assurance.clone().expect("authentication details");
    assert_eq!(assurance.authentication_time, at().utc());
    assert_eq!(assurance.level, "http://eidas.europa.eu/LoA/substantial");
    assert_eq!(
        ev.user_content.as_ref().unwrap().parts[0]
            .digest_value
            .as_deref(),
        msg.rem.digest_value.as_deref()
    );
    let evidence_id = ev.evidence_id.clone();
    assert_eq!(
        msg.rem
            .evidence_id
            .as_deref()
            .map(pec::message::ids::unbracketed),
        Some(evidence_id.as_str())
    );
    // Not recorded before Postfix has queued the dispatch.
    assert!(h.store.evidences_for(PEC_ID).unwrap().is_empty());
    assert!(h.injector.messages().is_empty());

    // After queue: the SubmissionAcceptance REM receipt to the sender, once.
    let tx = transaction(dispatch.clone(), rcpt);
    let msgid = pec::message::ids::envelope_id(&tx.data);
    assert_eq!(msgid.as_deref(), Some(PEC_ID));
    let sent = pec::access::acceptance::after_queue(&h.kit, &tx, msgid.as_deref(), &|_| false)
        .await
        .unwrap();
    let (id, receipt_id) = sent.expect("the receipt is sent");
    assert_eq!(id, PEC_ID);
    // The relay wait of each recipient (a peer's) begins with it (EN 319 532-4 Annex D).
    let waits = h.store.rem_waits_for(PEC_ID).unwrap();
    assert_eq!(waits.len(), 1, "{waits:?}");
    assert_eq!(waits[0].wait.recipient, rcpt);
    assert_eq!(waits[0].wait.which, pec::store::RemWaitKind::Relay);
    assert_eq!((&waits[0].notice_id, waits[0].settled_at), (&None, None));
    let injected = h.injector.messages();
    assert_eq!(injected.len(), 1);
    assert_eq!(
        injected[0].rcpt_to,
        vec!["alice@pec.example.it".to_string()]
    );
    let receipt = rem_message::verify(&injected[0].message, &opts).expect("the receipt verifies");
    assert_eq!(receipt.message.message_type, MessageType::Receipt);
    assert_eq!(receipt.message.event, Event::SubmissionAcceptance);
    assert_eq!(
        receipt.message.message_id.as_deref(),
        Some(receipt_id.as_str())
    );
    assert!(
        receipt.message.original.is_none(),
        "a receipt never carries the original"
    );
    assert_eq!(
        receipt.message.evidences[0].body, msg.evidences[0].body,
        "the same evidence as the dispatch"
    );

    // A retry (the same queue file again) sends nothing new.
    let again = pec::access::acceptance::after_queue(&h.kit, &tx, msgid.as_deref(), &|_| false)
        .await
        .unwrap();
    assert_eq!(again, None);
    assert_eq!(h.injector.messages().len(), 1);

    // Stored, byte-exact, beside its legal-log record; the acceptance is logged too.
    let stored = h.store.evidences_for(PEC_ID).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].evidence.id, evidence_id);
    assert_eq!(stored[0].evidence.xml, msg.evidences[0].body);
    let records = h
        .store
        .search_events(&LogQuery {
            pec_id: Some(PEC_ID.into()),
            ..LogQuery::default()
        })
        .unwrap();
    let rem_record = records
        .iter()
        .find(|r| r.id == stored[0].event_id)
        .expect("the evidence's record");
    assert_eq!(
        rem_record.event.kind,
        EventKind::RemEvidence(pec::store::EvidenceDirection::Issued)
    );
    assert_eq!(rem_record.event.related_ids, vec![evidence_id.clone()]);
    assert!(
        records.iter().any(|r| matches!(
            r.event.kind,
            EventKind::Issued(pec::message::kind::MessageKind::Acceptance)
        )),
        "the acceptance is logged with it"
    );
}

#[tokio::test]
async fn our_own_domain_speaks_rem_and_a_dispatch_has_no_pec_tracking_row() {
    let h = harness(&env().url, true).await;
    // `auto`: our own domain speaks REM; the sender has an identity.
    let m = mail("carol@pec.example.it", "Ciao.\r\n");
    let (actions, status) = milter_client::submit(h.addr, &m, "4F1A2B3C4D").await;
    assert_eq!(status, Status::Accept);
    let dispatch = queued(&m, &actions);
    let opts = VerifyOptions::without_index(at());
    let v = rem_message::verify(&dispatch, &opts).expect("a REM dispatch");
    assert_eq!(v.message.message_type, MessageType::Dispatch);
    // A PEC-certified address, but no PEC receipt comes back for a dispatch: no PEC
    // timer may wait for one.
    assert!(h.store.pending_acceptance(PEC_ID).unwrap().is_some());
    assert!(h.store.tracking_for(PEC_ID).unwrap().is_empty());

    // Past 12 h and 24 h the PEC timers find nothing of it to warn about.
    let before = h.injector.messages().len();
    let timers = pec::timers::Timers::new(
        h.kit.store.clone(),
        h.kit.injector.clone(),
        h.kit.issuer.clone(),
        h.kit.signer.clone(),
        h.kit.ids.clone(),
        h.kit.clock.clone(),
    );
    for hours in [13, 25] {
        let report = timers
            .run_once(Instant::from_unix(at().unix() + hours * 3600))
            .await
            .unwrap();
        assert!(report.sent.is_empty(), "+{hours} h: {:?}", report.sent);
        assert!(report.failed.is_empty(), "+{hours} h");
    }
    assert_eq!(h.injector.messages().len(), before);
}

#[tokio::test]
async fn without_identity_auto_sends_pec_and_a_forced_domain_gets_a_submission_rejection() {
    let h = harness(&env().url, false).await;
    // Our own domain speaks REM (auto), but the sender has no identity: PEC.
    let m = mail("carol@pec.example.it", "Ciao.\r\n");
    let (actions, status) = milter_client::submit(h.addr, &m, "4F1A2B3C4D").await;
    assert_eq!(status, Status::Accept);
    let rewritten = queued(&m, &actions);
    assert!(
        matches!(
            classify(&rewritten, h.index.trust(), at()),
            Classification::TransportEnvelope(_)
        ),
        "a PEC transport envelope"
    );
    assert!(!rem_message::is_rem(&rewritten));

    // A domain forced to REM: the SubmissionRejection REM receipt, RA05.
    let h = harness(&env().url, false).await;
    let m = mail("bob@rem.example.net", "Ciao.\r\n");
    let (_, status) = milter_client::submit(h.addr, &m, "4F1A2B3C4D").await;
    assert_eq!(status, Status::Discard);
    let injected = h.injector.messages();
    assert_eq!(injected.len(), 1);
    let opts = VerifyOptions::without_index(at());
    let receipt = rem_message::verify(&injected[0].message, &opts).expect("the receipt verifies");
    assert_eq!(receipt.message.event, Event::SubmissionRejection);
    assert_eq!(receipt.message.classify().code, Some("RA05"));
    let ev = checked_evidence(&h, &receipt.message.evidences[0].body);
    assert_eq!(ev.event, Event::SubmissionRejection);
    assert_eq!(ev.reason().unwrap().code, "RA05");
    let stored = h.store.evidences_for(PEC_ID).unwrap();
    assert_eq!(stored.len(), 1, "stored with the receipt's outbox row");
    assert_eq!(stored[0].evidence.xml, receipt.message.evidences[0].body);
}

#[tokio::test]
async fn a_formal_fault_or_a_virus_on_the_rem_path_is_a_submission_rejection() {
    let h = harness(&env().url, true).await;
    let mut m = mail("bob@rem.example.net", "Ciao.\r\n");
    m.headers.retain(|(n, _)| *n != "From");
    let (_, status) = milter_client::submit(h.addr, &m, "4F1A2B3C4D").await;
    assert_eq!(status, Status::Discard);
    let eicar = mail(
        "bob@rem.example.net",
        "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*\r\n",
    );
    let (_, status) = milter_client::submit(h.addr, &eicar, "4F1A2B3C4E").await;
    assert_eq!(status, Status::Discard);
    let opts = VerifyOptions::without_index(at());
    let codes: Vec<_> = h
        .injector
        .messages()
        .iter()
        .map(|i| {
            let r = rem_message::verify(&i.message, &opts).expect("a verified REM receipt");
            assert_eq!(r.message.event, Event::SubmissionRejection);
            r.message.classify().code
        })
        .collect();
    assert_eq!(codes, vec![Some("RA02"), Some("RA03")]);
}

#[tokio::test]
async fn the_tsa_down_is_a_tempfail_and_nothing_is_recorded() {
    let url = format!("http://127.0.0.1:{}/tsa", closed_port());
    let h = harness(&url, true).await;
    let m = mail("bob@rem.example.net", "Ciao.\r\n");
    let (_, status) = milter_client::submit(h.addr, &m, "4F1A2B3C4D").await;
    assert!(matches!(status, Status::Tempfail { .. }), "{status:?}");
    assert!(h.injector.messages().is_empty());
    assert!(h.store.evidences_for(PEC_ID).unwrap().is_empty());
    assert!(h.store.pending_acceptance(PEC_ID).unwrap().is_none());
    // Refusals need their evidence too: a forced domain without identity tempfails.
    let h = harness(&url, false).await;
    let (_, status) = milter_client::submit(h.addr, &m, "4F1A2B3C4D").await;
    assert!(matches!(status, Status::Tempfail { .. }), "{status:?}");
    assert!(h.injector.messages().is_empty());
    assert!(h.store.evidences_for(PEC_ID).unwrap().is_empty());
}

#[tokio::test]
async fn a_pec_submission_is_unchanged_with_rem_enabled() {
    let h = harness(&env().url, true).await;
    // A PEC provider's domain (not ours, no Trusted List): PEC, identity or not.
    let m = mail("bob@pec.example.net", "Ciao.\r\n");
    let (actions, status) = milter_client::submit(h.addr, &m, "4F1A2B3C4D").await;
    assert_eq!(status, Status::Accept);
    let rewritten = queued(&m, &actions);
    match classify(&rewritten, h.index.trust(), at()) {
        Classification::TransportEnvelope(e) => {
            assert_eq!(e.message_id.as_deref(), Some(PEC_ID))
        }
        other => panic!("not a transport envelope: {other:?}"),
    }
    assert!(h.store.evidences_for(PEC_ID).unwrap().is_empty());
}

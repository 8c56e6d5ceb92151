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
use pec::crypto::{ChainPolicy, DigestAlg, PemSigner, Signer};
use pec::doubles::{MarkerAntivirus, RecordingInjector, TestStore};
use pec::index::{ProviderIndex, ProviderInfo, ProviderRecord};
use pec::issuing::Issuing;
use pec::message::build::Issuer;
use pec::message::classify::{classify, Classification};
use pec::message::ids::SequentialIds;
use pec::message::time::{FixedClock, Instant};
use pec::reception::rem::RemReception;
use pec::reception::{AfterQueue, Local, Reception};
use pec::rem::codes::Event;
use pec::rem::evidence::Evidence;
use pec::rem::message::{self as rem_message, MessageType};
use pec::rem::xades;
use pec::store::{
    EventKind, IdentityAttribute, LogQuery, MailboxPolicy, RecipientProtocol, SenderIdentity, Store,
};
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
    /// The access point behind the milter.
    ap: Arc<AccessPoint>,
    store: Arc<TestStore>,
    injector: Arc<RecordingInjector>,
    kit: Issuing,
    index: Arc<ProviderIndex>,
    cert_der: Vec<u8>,
    /// `[rem]` as the access point has it.
    settings: RemSettings,
    /// The after-queue filter on the same store and injector, REM enabled.
    filter: AfterQueue,
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
    let filter = AfterQueue::new(
        store.clone(),
        injector.clone(),
        kit.issuer.clone(),
        kit.signer.clone(),
        kit.ids.clone(),
        Reception {
            index: Arc::new(pec::index::IndexHandle::new((*index).clone())),
            chain: None,
            antivirus: Arc::new(MarkerAntivirus::eicar()),
            domains: vec!["pec.example.it".into()],
            mail_receipt: "ricevute@pec.example.it".into(),
            default_policy: MailboxPolicy::Anomaly,
        },
    )
    .with_clock(Arc::new(FixedClock::new(at())))
    .with_rem(Some(Arc::new(RemReception {
        settings: rem_settings(tsa_url),
        chain: ChainPolicy::from_pem(&std::fs::read(&pki.ca_cert).unwrap(), true).unwrap(),
        tsa_anchors: vec![pki.ca_cert.clone()],
        peers: None,
        mx: None,
    })));
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
    tokio::spawn(pec::access::milter::run(listener, ap.clone(), async {
        let _ = rx.await;
    }));
    Harness {
        addr,
        ap,
        store,
        injector,
        kit,
        index,
        cert_der,
        settings: rem_settings(tsa_url),
        filter,
        _shutdown: tx,
    }
}

fn mail(rcpt: &'static str, body: &str) -> Mail {
    mail_to(vec![rcpt], body)
}

fn mail_to(rcpt: Vec<&'static str>, body: &str) -> Mail {
    let to = rcpt.join(", ");
    Mail {
        login: Some("alice@pec.example.it"),
        mail_from: "alice@pec.example.it",
        rcpt,
        headers: vec![
            (
                "Received",
                "from client (client [192.0.2.1])\n\tby mx.pec.example.it".into(),
            ),
            ("From", "Alice <alice@pec.example.it>".into()),
            ("To", to),
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
    transaction_to(data, "alice@pec.example.it", &[rcpt])
}

fn transaction_to(data: Vec<u8>, mail_from: &str, rcpt: &[&str]) -> pec::smtp::Transaction {
    pec::smtp::Transaction {
        mail_from: mail_from.into(),
        rcpt_to: rcpt.iter().map(|r| r.to_string()).collect(),
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

/// A delivery status notification as Postfix writes it about `returned` (its header
/// returned), one failed group per `(recipient, status, diagnostic)`.
fn postfix_bounce(returned: &[u8], failures: &[(&str, &str, &str)]) -> Vec<u8> {
    let text = String::from_utf8_lossy(returned);
    let header = &text[..text.find("\r\n\r\n").expect("a header") + 2];
    let groups: String = failures
        .iter()
        .map(|(r, status, diag)| {
            format!(
                "Final-Recipient: rfc822; {r}\r\nOriginal-Recipient: rfc822;{r}\r\n\
                 Action: failed\r\nStatus: {status}\r\nRemote-MTA: dns; mx.example.com\r\n\
                 Diagnostic-Code: smtp; {diag}\r\n\r\n"
            )
        })
        .collect();
    format!(
        "From: MAILER-DAEMON@mx.pec.example.it (Mail Delivery System)\r\n\
         To: alice@pec.example.it\r\nSubject: Undelivered Mail Returned to Sender\r\n\
         Message-ID: <20250603081500.B0@mx.pec.example.it>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"B1\"\r\n\r\n--B1\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n\
         --B1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.pec.example.it\r\n\
         X-Postfix-Queue-ID: 4ABC\r\n\r\n{groups}\
         --B1\r\nContent-Type: text/rfc822-headers\r\n\r\n{header}\r\n--B1--\r\n"
    )
    .into_bytes()
}

/// The REM receipts injected to the sender, verified: (event, reason code, evidence).
fn receipts_to_alice(h: &Harness) -> Vec<(Event, Option<&'static str>, Evidence)> {
    let opts = VerifyOptions::without_index(at());
    h.injector
        .messages()
        .iter()
        .filter(|i| i.rcpt_to == vec!["alice@pec.example.it".to_string()])
        .filter(|i| rem_message::is_rem(&i.message))
        .map(|i| {
            let r = rem_message::verify(&i.message, &opts).expect("a verified REM receipt");
            assert_eq!(r.message.message_type, MessageType::Receipt);
            let ev = checked_evidence(h, &r.message.evidences[0].body);
            assert_eq!(ev.event, r.message.event, "the receipt states its evidence");
            (r.message.event, r.message.classify().code, ev)
        })
        .collect()
}

#[tokio::test]
async fn a_dispatch_to_ordinary_addresses_is_relayed_with_one_relay_to_non_erds() {
    let h = harness(&env().url, true).await;
    // Neither ours, nor a REM peer's, nor in the PEC index: ordinary addresses.
    let rcpt = ["bob@example.com", "carol@example.org"];
    let m = mail_to(rcpt.to_vec(), "Buongiorno.\r\n");
    let (actions, status) = milter_client::submit(h.addr, &m, "4F1A2B3C4D").await;
    assert_eq!(status, Status::Accept);
    let dispatch = queued(&m, &actions);
    let opts = VerifyOptions::without_index(at());
    let v = rem_message::verify(&dispatch, &opts).expect("the REM dispatch itself is relayed");
    assert_eq!(v.message.message_type, MessageType::Dispatch);
    // Decided once, recorded with the acceptance.
    assert_eq!(
        h.store.recipient_protocols(PEC_ID).unwrap(),
        vec![
            ("bob@example.com".to_string(), RecipientProtocol::NonErds),
            ("carol@example.org".to_string(), RecipientProtocol::NonErds),
        ]
    );
    assert!(h.injector.messages().is_empty(), "nothing before queue");

    // After queue (the filter): the SubmissionAcceptance, then one RelayToNonERDS about
    // both addresses, and the dispatch goes on to them unchanged.
    let tx = transaction_to(dispatch.clone(), "alice@pec.example.it", &rcpt);
    let msgid = pec::message::ids::envelope_id(&tx.data);
    let outcome = h.filter.process(&tx, msgid.as_deref()).await.unwrap();
    assert_eq!(outcome.passed_on, rcpt.map(String::from).to_vec());
    assert!(outcome.acceptance.is_some());
    let got = receipts_to_alice(&h);
    let events: Vec<_> = got.iter().map(|(e, c, _)| (*e, *c)).collect();
    assert_eq!(
        events,
        vec![
            (Event::SubmissionAcceptance, Some("RA01")),
            (Event::RelayToNonERDS, Some("RF01")),
        ]
    );
    let relay = &got[1].2;
    assert_eq!(relay.reason().unwrap().code, "RF01");
    assert_eq!(relay.message_id.as_deref(), Some(PEC_ID));
    assert_eq!(relay.relay_info.as_ref().unwrap().refers_to, vec![1, 2]);
    assert_eq!(
        relay.user_content, got[0].2.user_content,
        "the digest of the dispatch's original, copied from our acceptance"
    );
    let passed: Vec<_> = h
        .injector
        .messages()
        .into_iter()
        .filter(|i| i.rcpt_to == rcpt.map(String::from).to_vec())
        .collect();
    assert_eq!(passed.len(), 1);
    assert_eq!(passed[0].message, dispatch, "relayed as queued");

    // The same queue file again: nothing new.
    let before = h.injector.messages().len();
    let again = h.filter.process(&tx, msgid.as_deref()).await.unwrap();
    assert_eq!(again.acceptance, None);
    let after: Vec<_> = h.injector.messages();
    assert_eq!(receipts_to_alice(&h).len(), 2, "no second receipt");
    assert_eq!(after.len(), before + 1, "only the dispatch passed on again");
    let ids: Vec<String> = h
        .store
        .evidences_for(PEC_ID)
        .unwrap()
        .into_iter()
        .map(|e| e.evidence.event)
        .collect();
    assert_eq!(
        ids,
        vec![
            Event::SubmissionAcceptance.uri(),
            Event::RelayToNonERDS.uri()
        ]
    );
}

#[tokio::test]
async fn a_bounce_of_the_relayed_dispatch_gets_one_relay_to_non_erds_failure_each() {
    let h = harness(&env().url, true).await;
    let rcpt = ["bob@example.com", "carol@example.org"];
    let m = mail_to(rcpt.to_vec(), "Buongiorno.\r\n");
    let (actions, status) = milter_client::submit(h.addr, &m, "4F1A2B3C4D").await;
    assert_eq!(status, Status::Accept);
    let dispatch = queued(&m, &actions);
    let tx = transaction_to(dispatch.clone(), "alice@pec.example.it", &rcpt);
    let msgid = pec::message::ids::envelope_id(&tx.data);
    h.filter.process(&tx, msgid.as_deref()).await.unwrap();
    assert_eq!(receipts_to_alice(&h).len(), 2);

    // Postfix's own bounce (the delivery point's hook): bob refused at RCPT (RF03),
    // carol's domain not found (RF02).
    let report = postfix_bounce(
        &dispatch,
        &[
            (
                "bob@example.com",
                "5.1.1",
                "550 5.1.1 <bob@example.com>: User unknown",
            ),
            (
                "carol@example.org",
                "5.4.4",
                "Host or domain name not found",
            ),
        ],
    );
    let local = vec!["alice@pec.example.it".to_string()];
    let handled = pec::access::nonerds::on_bounce(
        &h.kit,
        &h.settings,
        ("", &report, None),
        &local,
        Some("Postfix (locale)"),
    )
    .await
    .unwrap()
    .expect("a bounce of our dispatch");
    assert_eq!(handled.pec_id, PEC_ID);
    assert!(handled.consumed);
    assert_eq!(handled.receipts.len(), 2);
    let got = receipts_to_alice(&h);
    let failures: Vec<_> = got[2..]
        .iter()
        .map(|(e, c, ev)| {
            assert_eq!(ev.message_id.as_deref(), Some(PEC_ID));
            (*e, *c, ev.relay_info.as_ref().unwrap().refers_to.clone())
        })
        .collect();
    assert_eq!(
        failures,
        vec![
            (Event::RelayToNonERDSFailure, Some("RF03"), vec![1]),
            (Event::RelayToNonERDSFailure, Some("RF02"), vec![2]),
        ]
    );

    // The same report again (a retry, or a remote copy through the reception point):
    // nothing new, the report consumed.
    let again = pec::access::nonerds::on_bounce(
        &h.kit,
        &h.settings,
        ("", &report, None),
        &local,
        Some("Postfix (locale)"),
    )
    .await
    .unwrap()
    .expect("still ours");
    assert!(again.receipts.is_empty());
    let tx = transaction_to(report.clone(), "", &["alice@pec.example.it"]);
    let outcome = h.filter.process(&tx, None).await.unwrap();
    assert_eq!(
        outcome.local,
        Some(Local::Bounced {
            pec_id: PEC_ID.into(),
            notices: vec![],
            also: None
        })
    );
    assert_eq!(
        receipts_to_alice(&h).len(),
        4,
        "one failure receipt each, once"
    );
    assert_eq!(h.store.evidences_for(PEC_ID).unwrap().len(), 4);

    // A report to somebody else than the sender, or not from the null reverse path, or
    // about a recipient the dispatch did not relay outside: not ours to answer.
    for (from, to, r) in [
        ("", "dave@pec.example.it", "bob@example.com"),
        ("x@example.com", "alice@pec.example.it", "bob@example.com"),
        ("", "alice@pec.example.it", "erin@example.com"),
    ] {
        let report = postfix_bounce(&dispatch, &[(r, "5.1.1", "550 unknown")]);
        let got = pec::access::nonerds::on_bounce(
            &h.kit,
            &h.settings,
            (from, &report, None),
            &[to.to_string()],
            None,
        )
        .await
        .unwrap();
        assert_eq!(got, None, "{from} {to} {r}");
    }
    assert_eq!(receipts_to_alice(&h).len(), 4);
}

#[tokio::test]
async fn without_identity_an_ordinary_address_gets_the_pec_envelope_as_before() {
    let h = harness(&env().url, false).await;
    let m = mail("bob@example.com", "Ciao.\r\n");
    let (actions, status) = milter_client::submit(h.addr, &m, "4F1A2B3C4D").await;
    assert_eq!(status, Status::Accept);
    let rewritten = queued(&m, &actions);
    assert!(!rem_message::is_rem(&rewritten));
    assert!(matches!(
        classify(&rewritten, h.index.trust(), at()),
        Classification::TransportEnvelope(_)
    ));
    assert!(h.store.recipient_protocols(PEC_ID).unwrap().is_empty());
    // After queue: the PEC acceptance receipt only.
    let tx = transaction(rewritten, "bob@example.com");
    let msgid = pec::message::ids::envelope_id(&tx.data);
    let outcome = h.filter.process(&tx, msgid.as_deref()).await.unwrap();
    assert!(outcome.acceptance.is_some());
    assert!(h.store.evidences_for(PEC_ID).unwrap().is_empty());
}

/// A Dovecot that stores everything, counting.
struct CountingDovecot(std::sync::Mutex<usize>);

impl pec::smtp::lmtp::LocalDelivery for CountingDovecot {
    fn deliver<'a>(
        &'a self,
        _mail_from: &'a str,
        rcpt_to: &'a [String],
        _data: &'a [u8],
        _eight_bit: bool,
    ) -> pec::BoxFuture<'a, Vec<pec::smtp::lmtp::Reply>> {
        Box::pin(async move {
            *self.0.lock().unwrap() += rcpt_to.len();
            rcpt_to
                .iter()
                .map(|r| pec::smtp::lmtp::Reply::new(250, format!("2.0.0 <{r}> Saved")))
                .collect()
        })
    }
}

#[tokio::test]
async fn postfix_s_own_bounce_at_the_delivery_point_is_answered_and_consumed() {
    let h = harness(&env().url, true).await;
    let m = mail("bob@example.com", "Ciao.\r\n");
    let (actions, _) = milter_client::submit(h.addr, &m, "4F1A2B3C4D").await;
    let dispatch = queued(&m, &actions);
    let tx = transaction(dispatch.clone(), "bob@example.com");
    let msgid = pec::message::ids::envelope_id(&tx.data);
    h.filter.process(&tx, msgid.as_deref()).await.unwrap();
    assert_eq!(receipts_to_alice(&h).len(), 2);

    let dovecot = Arc::new(CountingDovecot(std::sync::Mutex::new(0)));
    let dp = pec::delivery::DeliveryPoint::new(
        h.store.clone(),
        h.injector.clone(),
        dovecot.clone(),
        Arc::new(pec::index::IndexHandle::new((*h.index).clone())),
        h.kit.issuer.clone(),
        h.kit.signer.clone(),
        Arc::new(SequentialIds::new("opec1.notice", "pec.example.it")),
    )
    .with_clock(Arc::new(FixedClock::new(at())))
    .with_rem_settings(Some(Arc::new(h.settings.clone())));
    let report = postfix_bounce(
        &dispatch,
        &[(
            "bob@example.com",
            "5.7.1",
            "554 5.7.1 <bob@example.com>: Relay access denied",
        )],
    );
    let bounce = pec::smtp::lmtp::Transaction {
        mail_from: String::new(),
        rcpt_to: vec!["alice@pec.example.it".into()],
        eight_bit: false,
        data: report.into(),
    };
    for _ in 0..2 {
        let replies = dp.deliver(&bounce).await;
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].code, 250, "{replies:?}");
    }
    assert_eq!(*dovecot.0.lock().unwrap(), 0, "the report is consumed");
    let got = receipts_to_alice(&h);
    assert_eq!(got.len(), 3, "one failure receipt, not two");
    assert_eq!(
        (got[2].0, got[2].1),
        (Event::RelayToNonERDSFailure, Some("RF03"))
    );
}

#[tokio::test]
async fn each_recipient_s_protocol_is_decided_by_mode_override_and_index() {
    let pec_domain = |d: &str| d == "pec.example.it" || d == "pec.example.net";
    let access = |mode| {
        let mut settings = rem_settings(&env().url);
        settings.mode = mode;
        RemAccess {
            settings,
            domains: vec!["pec.example.it".into()],
            peers: None,
            mx: None,
        }
    };
    let rcpt: Vec<String> = [
        "a@pec.example.it",
        "b@pec.example.net",
        "c@rem.example.net",
        "d@example.com",
        "e@EXAMPLE.com",
    ]
    .map(String::from)
    .to_vec();
    use RecipientProtocol::{NonErds, Pec, Rem};
    for (mode, want, forced) in [
        (RemMode::Auto, [Rem, Pec, Rem, NonErds, NonErds], true),
        (RemMode::Rem, [Rem, Rem, Rem, NonErds, NonErds], true),
        (RemMode::Pec, [Pec, Pec, Rem, Pec, Pec], true),
    ] {
        let r = access(mode).route(&rcpt, at(), &pec_domain).await.unwrap();
        let got: Vec<_> = r.recipients.iter().map(|(_, p)| *p).collect();
        assert_eq!(got, want, "{mode:?}");
        assert_eq!(r.forced, forced, "{mode:?}");
        assert_eq!(r.mixed(), want.contains(&Pec), "{mode:?}");
    }
    // Only ordinary addresses in `auto`, no override among them: not forced.
    let r = access(RemMode::Auto)
        .route(&rcpt[3..], at(), &pec_domain)
        .await
        .unwrap();
    assert!(!r.forced && !r.mixed() && !r.all_pec());
}

#[tokio::test]
async fn a_mixed_submission_is_split_into_one_envelope_and_one_dispatch() {
    let h = harness(&env().url, true).await;
    // A PEC provider's address, one of ours (REM), an ordinary address (REM, relayed).
    let rcpt = [
        "bob@pec.example.net",
        "carol@pec.example.it",
        "dave@example.com",
    ];
    let m = mail_to(rcpt.to_vec(), "Buongiorno a tutti.\r\n");
    let (actions, status) = milter_client::submit(h.addr, &m, "4F1A2B3C4D").await;
    assert_eq!(status, Status::Accept);
    // The queued message: the PEC envelope, its REM recipients removed.
    let envelope = queued(&m, &actions);
    match classify(&envelope, h.index.trust(), at()) {
        Classification::TransportEnvelope(e) => {
            assert_eq!(e.message_id.as_deref(), Some(PEC_ID))
        }
        other => panic!("not a transport envelope: {other:?}"),
    }
    assert_eq!(
        milter_client::removed(&actions),
        vec!["<carol@pec.example.it>", "<dave@example.com>"]
    );
    assert_eq!(
        h.store.recipient_protocols(PEC_ID).unwrap(),
        vec![
            ("bob@pec.example.net".to_string(), RecipientProtocol::Pec),
            ("carol@pec.example.it".to_string(), RecipientProtocol::Rem),
            ("dave@example.com".to_string(), RecipientProtocol::NonErds),
        ]
    );
    // PEC tracking for the PEC recipient only; the pending acceptance names only him.
    let tracked: Vec<_> = h
        .store
        .tracking_for(PEC_ID)
        .unwrap()
        .into_iter()
        .map(|t| t.recipient)
        .collect();
    assert_eq!(tracked, vec!["bob@pec.example.net".to_string()]);
    let pending = h.store.pending_acceptance(PEC_ID).unwrap().unwrap();
    let named: Vec<_> = pending
        .cert
        .destinatari
        .iter()
        .map(|d| &d.address)
        .collect();
    assert_eq!(named, vec!["bob@pec.example.net"]);

    // Through the outbox: one dispatch to the REM recipients, its SubmissionAcceptance
    // about them only, and the RelayToNonERDS for the ordinary address.
    let opts = VerifyOptions::without_index(at());
    let sent = h.injector.messages();
    let dispatches: Vec<_> = sent
        .iter()
        .filter(|i| i.rcpt_to != vec!["alice@pec.example.it".to_string()])
        .collect();
    assert_eq!(dispatches.len(), 1);
    assert_eq!(
        dispatches[0].rcpt_to,
        vec!["carol@pec.example.it", "dave@example.com"]
    );
    let d = rem_message::verify(&dispatches[0].message, &opts).expect("the dispatch verifies");
    assert_eq!(d.message.message_type, MessageType::Dispatch);
    assert_eq!(d.message.message_id.as_deref(), Some(PEC_ID));
    d.message.check_digest().unwrap();
    let sa = checked_evidence(&h, &d.message.evidences[0].body);
    let about: Vec<_> = sa
        .recipients
        .iter()
        .map(|r| r.identifier.as_ref().unwrap().value.clone())
        .collect();
    assert_eq!(about, vec!["carol@pec.example.it", "dave@example.com"]);
    let got = receipts_to_alice(&h);
    let events: Vec<_> = got.iter().map(|(e, c, _)| (*e, *c)).collect();
    assert_eq!(
        events,
        vec![
            (Event::SubmissionAcceptance, Some("RA01")),
            (Event::RelayToNonERDS, Some("RF01")),
        ]
    );
    assert_eq!(
        got[0].2.evidence_id, sa.evidence_id,
        "the dispatch's evidence"
    );
    assert_eq!(got[1].2.relay_info.as_ref().unwrap().refers_to, vec![2]);

    // After queue: the envelope's PEC acceptance receipt, naming only the PEC recipient;
    // nothing more on the REM side, also when the queue file comes again.
    let tx = transaction(envelope, "bob@pec.example.net");
    for _ in 0..2 {
        let outcome = h.filter.process(&tx, Some(PEC_ID)).await.unwrap();
        assert_eq!(outcome.passed_on, vec!["bob@pec.example.net".to_string()]);
    }
    let pec_receipts: Vec<_> = h
        .injector
        .messages()
        .into_iter()
        .filter(|i| i.rcpt_to == vec!["alice@pec.example.it".to_string()])
        .filter(|i| !rem_message::is_rem(&i.message))
        .collect();
    assert_eq!(pec_receipts.len(), 1, "one acceptance receipt");
    let text = String::from_utf8_lossy(&pec_receipts[0].message);
    assert!(text.contains("bob@pec.example.net"), "{text}");
    assert!(!text.contains("carol@pec.example.it"), "{text}");
    assert!(!text.contains("dave@example.com"), "{text}");
    assert_eq!(receipts_to_alice(&h).len(), 2);
    let evidences: Vec<_> = h
        .store
        .evidences_for(PEC_ID)
        .unwrap()
        .into_iter()
        .map(|e| e.evidence.event)
        .collect();
    assert_eq!(
        evidences,
        vec![
            Event::SubmissionAcceptance.uri(),
            Event::RelayToNonERDS.uri()
        ]
    );
}

/// `m` as the milter hands it to the access point (the SASL login, the envelope, the
/// header fields and the body as received).
fn submission(m: &Mail, queue_id: &str) -> pec::access::Submission {
    let mut message = Vec::new();
    for (n, v) in &m.headers {
        message.extend_from_slice(format!("{n}: {}\r\n", v.replace('\n', "\r\n")).as_bytes());
    }
    message.extend_from_slice(b"\r\n");
    message.extend_from_slice(m.body.as_bytes());
    pec::access::Submission {
        queue_id: Some(queue_id.into()),
        login: m.login.map(String::from),
        auth_at: Some(at()),
        mail_from: m.mail_from.into(),
        rcpt_to: m.rcpt.iter().map(|r| r.to_string()).collect(),
        size: message.len() as u64,
        message,
    }
}

const MIXED: [&str; 3] = [
    "bob@pec.example.net",
    "carol@pec.example.it",
    "dave@example.com",
];

/// The REM dispatches injected (to anyone but the sender).
fn dispatches(h: &Harness) -> Vec<pec::doubles::Injected> {
    h.injector
        .messages()
        .into_iter()
        .filter(|i| i.rcpt_to != vec!["alice@pec.example.it".to_string()])
        .collect()
}

fn events(h: &Harness) -> Vec<(Event, Option<&'static str>)> {
    receipts_to_alice(h)
        .into_iter()
        .map(|(e, c, _)| (e, c))
        .collect()
}

fn evidence_events(h: &Harness, pec_id: &str) -> Vec<String> {
    h.store
        .evidences_for(pec_id)
        .unwrap()
        .into_iter()
        .map(|e| e.evidence.event)
        .collect()
}

#[tokio::test]
async fn a_split_retried_after_a_failed_rewrite_has_one_dispatch_and_one_of_each_receipt() {
    let h = harness(&env().url, true).await;
    let m = mail_to(MIXED.to_vec(), "Buongiorno a tutti.\r\n");
    let one_of_each = vec![
        (Event::SubmissionAcceptance, Some("RA01")),
        (Event::RelayToNonERDS, Some("RF01")),
    ];
    let staged = vec![
        Event::SubmissionAcceptance.uri(),
        Event::RelayToNonERDS.uri(),
    ];

    // The first attempt: decided and staged, but the milter's rewrite fails (its split
    // decision is never applied), so the client gets a 4xx and the envelope is not queued.
    match h.ap.decide(submission(&m, "4F1A2B3C4D")).await {
        pec::access::Decision::Split { remove, .. } => {
            assert_eq!(remove, vec!["carol@pec.example.it", "dave@example.com"])
        }
        other => panic!("not split: {other:?}"),
    }
    // The REM part and both its receipts went out together, with their evidences.
    assert_eq!(dispatches(&h).len(), 1);
    assert_eq!(events(&h), one_of_each);
    assert_eq!(evidence_events(&h, PEC_ID), staged);

    // The client's retry of the same submission, through the milter: accepted, the
    // PEC part under a new identifier, the REM part found staged: nothing more.
    let (actions, status) = milter_client::submit(h.addr, &m, "5B2C3D4E5F").await;
    assert_eq!(status, Status::Accept);
    let retry_id = "opec1.test.2@pec.example.it";
    match classify(&queued(&m, &actions), h.index.trust(), at()) {
        Classification::TransportEnvelope(e) => {
            assert_eq!(e.message_id.as_deref(), Some(retry_id))
        }
        other => panic!("not a transport envelope: {other:?}"),
    }
    assert_eq!(
        milter_client::removed(&actions),
        vec!["<carol@pec.example.it>", "<dave@example.com>"]
    );
    let d = dispatches(&h);
    assert_eq!(d.len(), 1, "one dispatch");
    assert_eq!(
        d[0].rcpt_to,
        vec!["carol@pec.example.it", "dave@example.com"]
    );
    assert_eq!(events(&h), one_of_each, "one receipt of each");
    assert_eq!(evidence_events(&h, PEC_ID), staged);
    assert!(h.store.evidences_for(retry_id).unwrap().is_empty());
    let pending = h.store.pending_acceptance(retry_id).unwrap().unwrap();
    let named: Vec<_> = pending
        .cert
        .destinatari
        .iter()
        .map(|d| &d.address)
        .collect();
    assert_eq!(named, vec!["bob@pec.example.net"], "the retry's PEC part");

    // Another submission (its own Message-ID) to the same recipients is not a retry.
    let mut other = mail_to(MIXED.to_vec(), "Buongiorno a tutti.\r\n");
    for (n, v) in &mut other.headers {
        if *n == "Message-ID" {
            *v = "<2@client.example.it>".into();
        }
    }
    let (_, status) = milter_client::submit(h.addr, &other, "6C3D4E5F6A").await;
    assert_eq!(status, Status::Accept);
    assert_eq!(dispatches(&h).len(), 2);
    assert_eq!(receipts_to_alice(&h).len(), 4);
}

#[tokio::test]
async fn without_a_message_id_a_retried_split_is_sent_again_never_lost() {
    let h = harness(&env().url, true).await;
    let mut m = mail_to(MIXED.to_vec(), "Buongiorno a tutti.\r\n");
    m.headers.retain(|(n, _)| *n != "Message-ID");
    assert!(matches!(
        h.ap.decide(submission(&m, "4F1A2B3C4D")).await,
        pec::access::Decision::Split { .. }
    ));
    let (_, status) = milter_client::submit(h.addr, &m, "5B2C3D4E5F").await;
    assert_eq!(status, Status::Accept);
    // Not told from a new submission: the REM part again, under the retry's identifier.
    let d = dispatches(&h);
    assert_eq!(d.len(), 2);
    assert_ne!(d[0].message, d[1].message);
    assert_eq!(receipts_to_alice(&h).len(), 4);
}

#[tokio::test]
async fn a_store_failure_at_staging_a_split_is_a_tempfail_and_nothing_is_staged() {
    let h = harness(&env().url, true).await;
    let m = mail_to(MIXED.to_vec(), "Buongiorno a tutti.\r\n");
    h.store
        .stagings_left
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let (actions, status) = milter_client::submit(h.addr, &m, "4F1A2B3C4D").await;
    assert!(matches!(status, Status::Tempfail { .. }), "{status:?}");
    assert!(milter_client::removed(&actions).is_empty());
    h.store
        .stagings_left
        .store(u64::MAX, std::sync::atomic::Ordering::SeqCst);
    // Nothing sent, nothing in the outbox, no acceptance, protocol or evidence.
    assert!(h.injector.messages().is_empty());
    let far = Instant::from_unix(at().unix() + 365 * 86_400);
    assert!(h.store.claim_unsent(far, far, 100).unwrap().is_empty());
    assert!(h.store.pending_acceptance(PEC_ID).unwrap().is_none());
    assert!(h.store.recipient_protocols(PEC_ID).unwrap().is_empty());
    assert!(h.store.evidences_for(PEC_ID).unwrap().is_empty());

    // The client's retry: the whole split, once.
    let (actions, status) = milter_client::submit(h.addr, &m, "5B2C3D4E5F").await;
    assert_eq!(status, Status::Accept);
    assert_eq!(milter_client::removed(&actions).len(), 2);
    assert_eq!(dispatches(&h).len(), 1);
    assert_eq!(
        events(&h),
        vec![
            (Event::SubmissionAcceptance, Some("RA01")),
            (Event::RelayToNonERDS, Some("RF01")),
        ]
    );
}

#[tokio::test]
async fn a_split_s_receipts_are_staged_with_its_dispatch_not_after() {
    let h = harness(&env().url, true).await;
    let m = mail_to(MIXED.to_vec(), "Buongiorno a tutti.\r\n");
    // The store works for one staging and fails after it: the dispatch and both its
    // receipts are in that one, so none of them is lost.
    h.store
        .stagings_left
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let (_, status) = milter_client::submit(h.addr, &m, "4F1A2B3C4D").await;
    assert_eq!(status, Status::Accept);
    assert_eq!(dispatches(&h).len(), 1);
    assert_eq!(
        events(&h),
        vec![
            (Event::SubmissionAcceptance, Some("RA01")),
            (Event::RelayToNonERDS, Some("RF01")),
        ]
    );
    assert_eq!(
        evidence_events(&h, PEC_ID),
        vec![
            Event::SubmissionAcceptance.uri(),
            Event::RelayToNonERDS.uri()
        ]
    );
    // Staged, not only sent: the outbox holds all three, injected.
    let far = Instant::from_unix(at().unix() + 365 * 86_400);
    assert!(h.store.claim_unsent(far, far, 100).unwrap().is_empty());
    for key in [
        pec::store::outbox::rem_acceptance_key(PEC_ID),
        pec::store::outbox::relay_to_non_erds_key(PEC_ID),
    ] {
        let row = h.store.outbound(&key).unwrap().expect(&key);
        assert!(row.injected_at.is_some(), "{key}");
    }
}

// SPDX-License-Identifier: GPL-3.0-or-later
//! Owner self-service in process: a request submitted through the access-point milter
//! (driven by `indymilter-test`), the message as Postfix queues it after the milter's
//! actions, then the after-queue filter answering it, on one SQLite store. The owner gets
//! a signed PEC message with only their own records; the rate limit, a bad period, a
//! misaddressed request and a repeated delivery each have their outcome; every request is
//! in the legal log.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use indymilter_test::{EomAction, Status};
use mail_parser::{MessageParser, MimeHeaders};
use pec::access::{AccessPoint, Policy};
use pec::crypto::testing::{make_test_pki, TestPki};
use pec::crypto::{DigestAlg, PemSigner, Signer};
use pec::doubles::{MarkerAntivirus, RecordingInjector};
use pec::index::{IndexHandle, ProviderIndex, ProviderInfo, ProviderRecord};
use pec::issuing::Issuing;
use pec::log::request::{RequestSettings, REQUEST_HEADER};
use pec::message::build::{Certification, Issuer};
use pec::message::classify::{classify, Classification};
use pec::message::ids::SequentialIds;
use pec::message::kind::RecipientType;
use pec::message::time::{FixedClock, Instant};
use pec::reception::{AfterQueue, Reception};
use pec::smtp::{FilterReply, Transaction};
use pec::store::{EventKind, LogEvent, MailboxPolicy, SqliteStore, Store};
use tokio::net::TcpListener;

use crate::milter_client;
use milter_client::{queued, Mail};

const SERVICE: &str = "registro@pec.example.it";

fn now() -> Instant {
    Instant::parse_cli("2026-11-23T09:00:00Z").unwrap()
}

fn pki() -> &'static TestPki {
    static PKI: OnceLock<(tempfile::TempDir, TestPki)> = OnceLock::new();
    &PKI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_test_pki(dir.path()).unwrap();
        (dir, pki)
    })
    .1
}

fn issuer() -> Issuer {
    Issuer {
        provider_name: "PEC Example IT S.p.A.".into(),
        service_address: "posta-certificata@pec.example.it".into(),
        envelope_sender_header: true,
    }
}

fn settings() -> RequestSettings {
    RequestSettings {
        local_part: "registro".into(),
        domains: vec!["pec.example.it".into()],
        limit: 2,
        window: Duration::from_secs(3600),
        max_records: 1000,
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    store: Arc<SqliteStore>,
    injector: Arc<RecordingInjector>,
    clock: Arc<FixedClock>,
    aq: AfterQueue,
    index: Arc<ProviderIndex>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("pec.sqlite")).unwrap());
    let signer: Arc<dyn Signer> = Arc::new(
        PemSigner::from_files(&pki().it_key, &pki().it_cert, None, DigestAlg::Sha256).unwrap(),
    );
    let index = Arc::new(ProviderIndex::from_records(vec![ProviderRecord {
        info: ProviderInfo {
            name: "PEC Example IT S.p.A.".into(),
            mail_receipt: "ricevute@pec.example.it".into(),
            managed_domains: vec!["pec.example.it".into()],
        },
        certificates: vec![signer.certificate_der().to_vec()],
    }]));
    let injector = Arc::new(RecordingInjector::new());
    let clock = Arc::new(FixedClock::new(now()));
    let ap = Arc::new(AccessPoint {
        policy: Policy::default(),
        kit: Issuing {
            store: store.clone(),
            injector: injector.clone(),
            issuer: issuer(),
            signer: signer.clone(),
            ids: Arc::new(SequentialIds::new("opec1.ap", "pec.example.it")),
            clock: clock.clone(),
        },
        index: Arc::new(IndexHandle::new((*index).clone())),
        antivirus: Arc::new(MarkerAntivirus::eicar()),
        log_requests: Some(settings()),
        rem: None,
    });
    let aq = AfterQueue::new(
        store.clone(),
        injector.clone(),
        issuer(),
        signer,
        Arc::new(SequentialIds::new("opec1.aq", "pec.example.it")),
        Reception {
            chain: None,
            index: Arc::new(IndexHandle::from(index.clone())),
            antivirus: Arc::new(MarkerAntivirus::eicar()),
            domains: vec!["pec.example.it".into()],
            mail_receipt: "ricevute@pec.example.it".into(),
            default_policy: MailboxPolicy::Anomaly,
        },
    )
    .with_clock(clock.clone())
    .with_log_requests(Some(settings()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(pec::access::milter::run(listener, ap, async {
        let _ = rx.await;
    }));
    populate(&store);
    Harness {
        _dir: dir,
        addr,
        store,
        injector,
        clock,
        aq,
        index,
        _shutdown: tx,
    }
}

fn at(s: &str) -> Instant {
    Instant::parse_cli(s).unwrap()
}

fn ev(pec_id: &str, when: &str, sender: &str, rcpts: &[&str], subject: &str) -> LogEvent {
    LogEvent {
        pec_id: pec_id.into(),
        at: at(when),
        kind: EventKind::Issued(pec::message::kind::MessageKind::TransportEnvelope),
        sender: sender.into(),
        recipients: rcpts
            .iter()
            .map(|r| (r.to_string(), RecipientType::Certificato))
            .collect(),
        subject: subject.into(),
        related_ids: Vec::new(),
        provider: "PEC Example IT S.p.A.".into(),
        queue_id: None,
        outcome: "ok".into(),
        reason: None,
    }
}

/// Alice's records in November, and others' that her extract must not show.
fn populate(store: &SqliteStore) {
    for e in [
        ev(
            "opec.1@pec.example.it",
            "2026-11-05T10:00:00Z",
            "alice@pec.example.it",
            &["bob@pec.example.it"],
            "Contratto di alice",
        ),
        ev(
            "opec.2@pec.example.it",
            "2026-11-06T10:00:00Z",
            "carol@pec.example.it",
            &["dave@pec.example.it"],
            "Segreto di carol",
        ),
        ev(
            "opec.3@pec.example.it",
            "2026-11-07T10:00:00Z",
            "bob@pec.example.it",
            &["Alice@pec.example.it", "erin@pec.example.it"],
            "Risposta di bob",
        ),
        ev(
            "opec.4@pec.example.it",
            "2026-10-15T10:00:00Z",
            "alice@pec.example.it",
            &["bob@pec.example.it"],
            "Ottobre di alice",
        ),
        ev(
            "opec.5@pec.example.it",
            "2026-11-08T10:00:00Z",
            "bob@pec.example.it",
            &["erin@pec.example.it"],
            "Solo per erin",
        ),
    ] {
        store.log(&e).unwrap();
    }
}

fn request(subject: &str) -> Mail {
    Mail {
        login: Some("alice@pec.example.it"),
        mail_from: "alice@pec.example.it",
        rcpt: vec![SERVICE],
        headers: vec![
            ("From", "Alice <alice@pec.example.it>".into()),
            ("To", SERVICE.into()),
            ("Subject", subject.into()),
            ("Date", "Mon, 23 Nov 2026 10:00:00 +0100".into()),
            ("Message-ID", "<req@client.example.it>".into()),
            // A client-written mark is removed by the milter.
            (REQUEST_HEADER, "<forged@pec.example.it>".into()),
        ],
        body: "Buongiorno,\r\ngrazie.\r\n".into(),
    }
}

fn tx(m: &Mail, data: Vec<u8>) -> Transaction {
    Transaction {
        mail_from: m.mail_from.into(),
        rcpt_to: m.rcpt.iter().map(|r| r.to_string()).collect(),
        data: data.into(),
        queue_id: Some("4REQ1".into()),
        client: None,
    }
}

fn reply_text(status: &Status) -> String {
    match status {
        Status::Reject { message } | Status::Tempfail { message } => message
            .as_ref()
            .map(|m| m.to_string_lossy().into_owned())
            .unwrap_or_default(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// The reply: a valid transport envelope from the service address to `owner`; its
/// carried message's text and CSV attachment (if any).
fn open_reply(h: &Harness, raw: &[u8], owner: &str) -> (String, Option<String>) {
    let env = match classify(raw, h.index.trust(), now()) {
        Classification::TransportEnvelope(e) => e,
        other => panic!("the reply is not a valid transport envelope: {other:?}"),
    };
    assert_eq!(env.daticert.mittente, SERVICE);
    let dest: Vec<_> = env
        .daticert
        .destinatari
        .iter()
        .map(|d| d.address.as_str())
        .collect();
    assert_eq!(dest, [owner]);
    let (_, inner) = Certification::from_verified_envelope(&env.daticert, &env.verified.content)
        .expect("postacert.eml");
    let msg = MessageParser::default().parse(&inner).unwrap();
    let text = msg.body_text(0).unwrap().into_owned();
    let csv = msg.attachments().find_map(|a| {
        a.attachment_name()
            .filter(|n| n.ends_with(".csv"))
            .map(|_| String::from_utf8(a.contents().to_vec()).unwrap())
    });
    (text, csv)
}

fn kinds_of(store: &SqliteStore, id: &str) -> Vec<(EventKind, String)> {
    store
        .events_for(id)
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.outcome))
        .collect()
}

fn request_id(actions: &[EomAction]) -> String {
    actions
        .iter()
        .find_map(|a| match a {
            EomAction::AddHeader { name, value } if name.to_str().unwrap() == REQUEST_HEADER => {
                Some(
                    value
                        .to_str()
                        .unwrap()
                        .trim()
                        .trim_matches(['<', '>'])
                        .to_string(),
                )
            }
            _ => None,
        })
        .expect("the request is marked")
}

async fn submit(h: &Harness, m: &Mail) -> (Vec<EomAction>, Status) {
    milter_client::submit(h.addr, m, "4REQ1").await
}

#[tokio::test]
async fn the_owner_gets_a_signed_extract_of_only_their_own_records() {
    let h = harness().await;
    let m = request("Registro novembre 2026");
    let (actions, status) = submit(&h, &m).await;
    assert_eq!(status, Status::Accept);
    // The client's own mark is deleted and ours added; nothing else is touched.
    assert!(actions.iter().any(|a| matches!(a, EomAction::DeleteHeader { name, index: 1 } if name.to_str().unwrap() == REQUEST_HEADER)));
    assert_eq!(actions.len(), 2, "{actions:?}");
    let id = request_id(&actions);
    assert_ne!(id, "forged@pec.example.it");
    assert!(h.injector.messages().is_empty(), "nothing before queue");
    assert_eq!(
        kinds_of(&h.store, &id),
        [(EventKind::LogRequest, "accepted".to_string())]
    );

    // After queue: the reply goes to alice; the request itself is consumed.
    let data = queued(&m, &actions);
    assert_eq!(
        h.aq.filter(&tx(&m, data.clone())).await,
        FilterReply::Accept
    );
    let sent = h.injector.messages();
    assert_eq!(sent.len(), 1, "only the reply");
    assert_eq!(sent[0].rcpt_to, ["alice@pec.example.it"]);
    assert_eq!(sent[0].mail_from, SERVICE);
    let (text, csv) = open_reply(&h, &sent[0].message, "alice@pec.example.it");
    assert!(text.contains("01/11/2026"), "{text}");
    assert!(text.contains("30/11/2026"), "{text}");
    let csv = csv.expect("a CSV attachment");
    assert!(csv.starts_with(pec::log::CSV_HEADER), "{csv}");
    assert!(csv.contains("Contratto di alice"), "{csv}");
    assert!(csv.contains("Risposta di bob"), "{csv}");
    assert!(csv.contains("RichiestaRegistro"), "{csv}");
    for absent in [
        "Segreto di carol",
        "carol@",
        "Ottobre di alice",
        "Solo per erin",
        "erin@",
    ] {
        assert!(!csv.contains(absent), "{absent} in {csv}");
    }
    assert_eq!(
        kinds_of(&h.store, &id),
        [
            (EventKind::LogRequest, "accepted".to_string()),
            (EventKind::LogExtract, "ok".to_string())
        ]
    );
    let extract = &h.store.events_for(&id).unwrap()[1];
    assert_eq!(
        extract.related_ids,
        [pec::message::ids::unbracketed(&sent[0].message_id_header()).to_string()]
    );

    // A repeated delivery of the same queued request is consumed without a second reply.
    assert_eq!(h.aq.filter(&tx(&m, data)).await, FilterReply::Accept);
    assert_eq!(h.injector.messages().len(), 1);
    assert_eq!(h.store.events_for(&id).unwrap().len(), 2);
}

/// The reply's attachments by name: (name, bytes).
fn attachments_of(h: &Harness, raw: &[u8]) -> Vec<(String, Vec<u8>)> {
    let env = match classify(raw, h.index.trust(), now()) {
        Classification::TransportEnvelope(e) => e,
        other => panic!("the reply is not a valid transport envelope: {other:?}"),
    };
    let (_, inner) = Certification::from_verified_envelope(&env.daticert, &env.verified.content)
        .expect("postacert.eml");
    let msg = MessageParser::default().parse(&inner).unwrap();
    msg.attachments()
        .map(|a| {
            (
                a.attachment_name().unwrap_or_default().to_string(),
                a.contents().to_vec(),
            )
        })
        .collect()
}

#[tokio::test]
async fn filters_in_the_subject_narrow_the_extract_and_pdf_adds_a_pdf() {
    let h = harness().await;
    // Received from bob, as PDF too: bob's reply to alice only.
    let m = request("Registro novembre 2026 ricevuti da:Bob@pec.example.it PDF");
    let (actions, status) = submit(&h, &m).await;
    assert_eq!(status, Status::Accept);
    let id = request_id(&actions);
    assert_eq!(
        h.store.events_for(&id).unwrap()[0].reason.as_deref(),
        Some("periodo 01/11/2026 - 30/11/2026; messaggi ricevuti, con bob@pec.example.it; PDF")
    );
    let data = queued(&m, &actions);
    assert_eq!(h.aq.filter(&tx(&m, data)).await, FilterReply::Accept);
    let sent = h.injector.messages();
    assert_eq!(sent.len(), 1);
    let (text, csv) = open_reply(&h, &sent[0].message, "alice@pec.example.it");
    assert!(
        text.contains("Filtri richiesti: messaggi ricevuti, con bob@pec.example.it"),
        "{text}"
    );
    let csv = csv.expect("the CSV");
    assert!(csv.contains("Risposta di bob"), "{csv}");
    for absent in [
        "Contratto di alice",
        "Segreto di carol",
        "RichiestaRegistro",
        "erin@",
    ] {
        assert!(!csv.contains(absent), "{absent} in {csv}");
    }
    let files = attachments_of(&h, &sent[0].message);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "registro-alice_pec.example.it-20261101-20261130.csv",
            "registro-alice_pec.example.it-20261101-20261130.pdf"
        ]
    );
    let pdf = &files[1].1;
    assert!(pdf.starts_with(b"%PDF-1.4"), "not a PDF");
    let pdf_text = String::from_utf8_lossy(pdf);
    assert!(
        pdf_text.contains("Risposta di bob"),
        "the record is not in the PDF"
    );
    assert!(!pdf_text.contains("Contratto di alice"));
    assert_eq!(
        kinds_of(&h.store, &id)[1],
        (EventKind::LogExtract, "ok".to_string())
    );
    assert_eq!(
        h.store.events_for(&id).unwrap()[1].reason.as_deref(),
        Some("1 registrazioni, CSV e PDF")
    );

    // Sent, subject words: alice's contract only; no PDF unless asked.
    let mut m = request("Registro 2026-11 inviati oggetto:\"CONTRATTO di\"");
    m.headers[4].1 = "<req2@client.example.it>".into();
    let (actions, status) = submit(&h, &m).await;
    assert_eq!(status, Status::Accept);
    let data = queued(&m, &actions);
    assert_eq!(h.aq.filter(&tx(&m, data)).await, FilterReply::Accept);
    let sent = h.injector.messages();
    assert_eq!(sent.len(), 2);
    let (_, csv) = open_reply(&h, &sent[1].message, "alice@pec.example.it");
    let csv = csv.expect("the CSV");
    assert!(csv.contains("Contratto di alice"), "{csv}");
    for absent in ["Risposta di bob", "Ottobre di alice", "Segreto di carol"] {
        assert!(!csv.contains(absent), "{absent} in {csv}");
    }
    assert_eq!(attachments_of(&h, &sent[1].message).len(), 1, "no PDF");
}

trait MessageId {
    fn message_id_header(&self) -> String;
}

impl MessageId for pec::doubles::Injected {
    fn message_id_header(&self) -> String {
        let text = String::from_utf8_lossy(&self.message);
        text.split("\r\n")
            .take_while(|l| !l.is_empty())
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .unwrap()
            .to_string()
    }
}

#[tokio::test]
async fn a_bad_period_gets_a_helpful_reply_and_the_limit_a_450() {
    let h = harness().await;
    // 1: no period at all.
    let m = request("Registro, per favore");
    let (actions, status) = submit(&h, &m).await;
    assert_eq!(status, Status::Accept);
    let id = request_id(&actions);
    assert_eq!(
        h.aq.filter(&tx(&m, queued(&m, &actions))).await,
        FilterReply::Accept
    );
    let (text, csv) = open_reply(
        &h,
        &h.injector.messages()[0].message,
        "alice@pec.example.it",
    );
    assert!(csv.is_none(), "no extract for a bad period");
    assert!(text.contains("nessun periodo indicato"), "{text}");
    assert!(
        text.contains("2026-11-01 2026-11-23"),
        "the forms are explained: {text}"
    );
    assert_eq!(
        kinds_of(&h.store, &id),
        [
            (EventKind::LogRequest, "accepted".to_string()),
            (EventKind::LogExtract, "bad-period".to_string())
        ]
    );

    // 2: an impossible date, named as such.
    let m = request("Registro 2026-13");
    let (actions, status) = submit(&h, &m).await;
    assert_eq!(status, Status::Accept);
    h.aq.filter(&tx(&m, queued(&m, &actions))).await;
    let (text, _) = open_reply(
        &h,
        &h.injector.messages()[1].message,
        "alice@pec.example.it",
    );
    assert!(text.contains("data non valida: \"2026-13\""), "{text}");

    // 3: over the limit of two per hour: 450 4.7.1, nothing queued, logged.
    let m = request("Registro 2026-11");
    let (actions, status) = submit(&h, &m).await;
    let text = reply_text(&status);
    assert!(matches!(status, Status::Tempfail { .. }), "{status:?}");
    assert!(text.starts_with("450 4.7.1 "), "{text}");
    assert!(text.contains("limite di 2 richieste"), "{text}");
    assert!(actions.is_empty());
    let limited = h
        .store
        .search_events(&pec::store::LogQuery {
            kind: Some("RichiestaRegistro".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        limited
            .iter()
            .map(|e| e.event.outcome.as_str())
            .collect::<Vec<_>>(),
        ["accepted", "accepted", "rate-limited"]
    );

    // Another owner has their own allowance.
    let mut bob = request("Registro 2026-11");
    bob.login = Some("bob@pec.example.it");
    bob.mail_from = "bob@pec.example.it";
    bob.headers[0].1 = "bob@pec.example.it".into();
    let (actions, status) = submit(&h, &bob).await;
    assert_eq!(status, Status::Accept);
    h.aq.filter(&tx(&bob, queued(&bob, &actions))).await;
    let sent = h.injector.messages();
    let (_, csv) = open_reply(&h, &sent[2].message, "bob@pec.example.it");
    let csv = csv.unwrap();
    assert!(csv.contains("Solo per erin") && csv.contains("Contratto di alice"));
    assert!(!csv.contains("Segreto di carol"));

    // An hour later alice may ask again.
    h.clock.advance(3601);
    let m = request("Registro 2026-11");
    let (_, status) = submit(&h, &m).await;
    assert_eq!(status, Status::Accept);
}

#[tokio::test]
async fn misaddressed_and_unauthorised_requests_are_refused_in_smtp() {
    let h = harness().await;
    let mut m = request("Registro 2026-11");
    m.rcpt = vec![SERVICE, "bob@pec.example.it"];
    let (_, status) = submit(&h, &m).await;
    assert!(reply_text(&status).starts_with("550 5.1.1 "), "{status:?}");

    let mut m = request("Registro 2026-11");
    m.login = Some("mallory@pec.example.it");
    let (_, status) = submit(&h, &m).await;
    assert!(reply_text(&status).starts_with("550 5.7.1 "), "{status:?}");
    assert!(h.injector.messages().is_empty());
    // No request was recorded for either.
    let requests = h
        .store
        .search_events(&pec::store::LogQuery {
            kind: Some("RichiestaRegistro".into()),
            ..Default::default()
        })
        .unwrap();
    assert!(requests.is_empty());
}

#[tokio::test]
async fn a_forged_mark_from_outside_is_not_a_request() {
    let h = harness().await;
    // Mail from port 25 (no milter) with a mark nobody recorded: ordinary mail for the
    // service address (wrapped in an anomaly envelope), no extract for anyone.
    let m = request("Registro 2026-11");
    let data = queued(&m, &[]);
    assert_eq!(h.aq.filter(&tx(&m, data)).await, FilterReply::Accept);
    let sent = h.injector.messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].rcpt_to, [SERVICE]);
    assert!(
        String::from_utf8_lossy(&sent[0].message).contains("X-Trasporto: errore"),
        "not an anomaly envelope"
    );
}

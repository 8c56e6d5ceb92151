// SPDX-License-Identifier: GPL-3.0-or-later
//! The access-point milter in process, driven by `indymilter-test`: every check and outcome
//! (accept and rewrite, each refusal, tempfail on each unavailable dependency), with test
//! doubles for the store, the antivirus and the injection into Postfix.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use indymilter_test::EomAction;
use indymilter_test::Status;
use pec::access::{AccessPoint, Policy};
use pec::crypto::testing::make_test_pki;
use pec::crypto::{DigestAlg, PemSigner};
use pec::doubles::{MarkerAntivirus, RecordingInjector, TestStore};
use pec::index::{ProviderIndex, ProviderInfo, ProviderRecord};
use pec::issuing::Issuing;
use pec::message::build::Issuer;
use pec::message::classify::{classify, Classification};
use pec::message::ids::SequentialIds;
use pec::message::kind::{MessageKind, Ricevuta, Tipo};
use pec::message::time::{FixedClock, Instant};
use pec::smtp::InjectError;
use pec::store::{EventKind, Store, TrackingState};
use tokio::net::TcpListener;

use crate::milter_client;
use milter_client::{queued, Mail};

const PEC_ID: &str = "opec1.test.1@pec.example.it";

struct Harness {
    _dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    store: Arc<TestStore>,
    injector: Arc<RecordingInjector>,
    index: Arc<ProviderIndex>,
    cert_der: Vec<u8>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

fn at() -> Instant {
    Instant::parse_cli("2025-06-03T08:11:12Z").unwrap()
}

/// One test PKI for the whole test binary (key generation is the slow part).
fn pki() -> &'static pec::crypto::testing::TestPki {
    static PKI: std::sync::OnceLock<(tempfile::TempDir, pec::crypto::testing::TestPki)> =
        std::sync::OnceLock::new();
    &PKI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_test_pki(dir.path()).unwrap();
        (dir, pki)
    })
    .1
}

async fn harness(av: MarkerAntivirus, policy: Policy, store: TestStore) -> Harness {
    harness_with(av, policy, store, false).await
}

async fn harness_with(
    av: MarkerAntivirus,
    policy: Policy,
    store: TestStore,
    hsm_down: bool,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let signer = PemSigner::from_files(&pki.it_key, &pki.it_cert, None, DigestAlg::Sha256).unwrap();
    let cert_der = {
        use pec::crypto::Signer;
        signer.certificate_der().to_vec()
    };
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
    let store = Arc::new(store);
    let injector = Arc::new(RecordingInjector::new());
    let ap = Arc::new(AccessPoint {
        policy,
        kit: Issuing {
            store: store.clone(),
            injector: injector.clone(),
            issuer: Issuer {
                provider_name: "PEC Example IT S.p.A.".into(),
                service_address: "posta-certificata@pec.example.it".into(),
                envelope_sender_header: true,
            },
            signer: if hsm_down {
                Arc::new(pec::doubles::UnavailableSigner {
                    certificate: cert_der.clone(),
                })
            } else {
                Arc::new(signer)
            },
            ids: Arc::new(SequentialIds::new("opec1.test", "pec.example.it")),
            clock: Arc::new(FixedClock::new(at())),
        },
        index: Arc::new(pec::index::IndexHandle::new((*index).clone())),
        antivirus: Arc::new(av),
        log_requests: None,
        rem: None,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(pec::access::milter::run(listener, ap, async {
        let _ = rx.await;
    }));
    Harness {
        _dir: dir,
        addr,
        store,
        injector,
        index,
        cert_der,
        _shutdown: tx,
    }
}

/// Asserts a reject or tempfail reply starting with `prefix` (code and enhanced code).
fn assert_reply(status: &Status, prefix: &str) {
    let message = match status {
        Status::Reject { message } | Status::Tempfail { message } => message.clone(),
        other => panic!("expected a reply {prefix:?}, got {other:?}"),
    };
    let text = message
        .map(|m| m.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(
        text.starts_with(prefix),
        "reply {text:?} should start with {prefix:?}"
    );
    assert!(text.contains("PEC: "), "{text}");
}

fn good_mail() -> Mail {
    Mail {
        login: Some("alice@pec.example.it"),
        mail_from: "alice@pec.example.it",
        rcpt: vec!["bob@pec.example.net", "carol@example.com"],
        headers: vec![
            (
                "Received",
                "from client (client [192.0.2.1])\n\tby mx.pec.example.it".into(),
            ),
            ("From", "Alice <alice@pec.example.it>".into()),
            ("To", "bob@pec.example.net,\n carol@example.com".into()),
            ("Subject", "Contratto".into()),
            ("Date", "Tue, 3 Jun 2025 10:11:09 +0200".into()),
            ("Message-ID", "<1@client.example.it>".into()),
            ("MIME-Version", "1.0".into()),
            ("Content-Type", "text/plain; charset=us-ascii".into()),
        ],
        body: "Buongiorno,\r\nin allegato il contratto.\r\n".into(),
    }
}

/// The message as the client sent it (CRLF).
fn original(m: &Mail) -> Vec<u8> {
    let mut out = String::new();
    for (n, v) in &m.headers {
        out.push_str(&format!("{n}: {}\r\n", v.replace('\n', "\r\n")));
    }
    out.push_str("\r\n");
    out.push_str(&m.body);
    out.into_bytes()
}

fn notices(h: &Harness) -> Vec<(Ricevuta, pec::message::classify::PecMessage, Vec<String>)> {
    h.injector
        .messages()
        .into_iter()
        .map(|i| match classify(&i.message, h.index.trust(), at()) {
            Classification::Receipt(r, m) => (r, *Box::new(m), i.rcpt_to),
            other => panic!("injected message is not a valid receipt: {other:?}"),
        })
        .collect()
}

async fn submit(h: &Harness, m: &Mail) -> (Vec<EomAction>, Status) {
    milter_client::submit(h.addr, m, "4F1A2B3C4D").await
}

#[tokio::test]
async fn accepted_submission_becomes_the_signed_transport_envelope() {
    let h = harness(
        MarkerAntivirus::eicar(),
        Policy::default(),
        TestStore::new(),
    )
    .await;
    let m = good_mail();
    let (actions, status) = submit(&h, &m).await;
    assert_eq!(status, Status::Accept);
    // Every header the envelope does not inherit is deleted; Received and To stay.
    for name in [
        "From",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
    ] {
        assert!(
            actions.iter().any(|a| matches!(a, EomAction::DeleteHeader { name: n, index: 1 } if n.to_str().unwrap() == name)),
            "{name} not deleted"
        );
    }
    assert!(!actions.iter().any(|a| matches!(a, EomAction::DeleteHeader { name, .. } if ["Received", "To"].contains(&name.to_str().unwrap()))));
    assert!(actions.iter().any(|a| matches!(a, EomAction::AddHeader { name, value } if name.as_c_str() == c"X-Trasporto" && value.as_c_str() == c" posta-certificata")));

    let rewritten = queued(&m, &actions);
    let env = match classify(&rewritten, h.index.trust(), at()) {
        Classification::TransportEnvelope(e) => e,
        other => panic!("rewritten message is not a valid envelope: {other:?}"),
    };
    assert_eq!(env.message_id.as_deref(), Some(PEC_ID));
    assert_eq!(env.daticert.mittente, "alice@pec.example.it");
    assert_eq!(env.daticert.msgid.as_deref(), Some("<1@client.example.it>"));
    let dest: Vec<_> = env
        .daticert
        .destinatari
        .iter()
        .map(|d| (d.address.as_str(), d.tipo.as_str()))
        .collect();
    assert_eq!(
        dest,
        vec![
            ("bob@pec.example.net", "certificato"),
            ("carol@example.com", "esterno")
        ]
    );
    // postacert.eml is the original with only the Message-ID substituted.
    let (_, carried) = pec::message::build::Certification::from_verified_envelope(
        &env.daticert,
        &env.verified.content,
    )
    .unwrap();
    let expected =
        pec::message::build::postacert_original(&original(&m), PEC_ID, "<1@client.example.it>")
            .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&carried),
        String::from_utf8_lossy(&expected)
    );

    // Recorded for the after-queue acceptance, one tracking row per certified recipient.
    let pending = h
        .store
        .pending_acceptance(PEC_ID)
        .unwrap()
        .expect("pending acceptance");
    assert_eq!(pending.at, at());
    assert_eq!(pending.queue_id.as_deref(), Some("4F1A2B3C4D"));
    // The SASL login and when the session authenticated (the MAIL FROM that carried the
    // login, on the access point's clock), for the records written after queue.
    assert_eq!(pending.login, "alice@pec.example.it");
    assert_eq!(pending.auth_at, Some(at()));
    let tracking = h.store.tracking_for(PEC_ID).unwrap();
    assert_eq!(tracking.len(), 1);
    assert_eq!(
        (tracking[0].recipient.as_str(), tracking[0].state),
        ("bob@pec.example.net", TrackingState::Sent)
    );
    // Nothing logged before Postfix has queued it: the transport envelope is logged with
    // the acceptance, after queue.
    assert!(h.store.events_for(PEC_ID).unwrap().is_empty());
    // No receipt before queue.
    assert!(h.injector.messages().is_empty());
    let _ = h.cert_der.len();
}

async fn refused(m: Mail, expect: &str) -> Harness {
    let h = harness(
        MarkerAntivirus::eicar(),
        Policy::default(),
        TestStore::new(),
    )
    .await;
    let (actions, status) = submit(&h, &m).await;
    assert_eq!(status, Status::Discard, "{expect}");
    assert!(actions.is_empty(), "a refused original is never rewritten");
    let n = notices(&h);
    assert_eq!(n.len(), 1, "{expect}: one notice");
    let (kind, notice, rcpt) = &n[0];
    assert_eq!(*kind, Ricevuta::NonAccettazione);
    assert_eq!(
        rcpt,
        &vec![m.mail_from.to_string()],
        "notice goes to the reverse path"
    );
    assert_eq!(notice.daticert.tipo, Tipo::NonAccettazione);
    let reason = notice.daticert.errore_esteso.clone().unwrap_or_default();
    assert!(
        reason.contains(expect),
        "reason {reason:?} should mention {expect:?}"
    );
    assert!(!notice.has_postacert, "the original must never be attached");
    assert!(h.store.pending_acceptance(PEC_ID).unwrap().is_none());
    h
}

#[tokio::test]
async fn each_formal_error_yields_a_signed_non_acceptance_and_no_envelope() {
    let mut m = good_mail();
    m.headers.push(("Bcc", "eve@pec.example.net".into()));
    refused(m, "Bcc").await;

    let mut m = good_mail();
    m.rcpt.push("eve@pec.example.net");
    refused(m, "eve@pec.example.net").await;

    let mut m = good_mail();
    m.headers.retain(|(n, _)| *n != "To");
    m.headers
        .push(("Cc", "bob@pec.example.net, carol@example.com".into()));
    refused(m, "campo To").await;

    let mut m = good_mail();
    m.headers[1].1 = "Mallory <mallory@pec.example.it>".into();
    let h = refused(m, "diverso dall'indirizzo del campo From").await;
    let ev = h.store.events_for(PEC_ID).unwrap();
    assert_eq!(ev[0].kind, EventKind::Issued(MessageKind::NonAcceptance));
    assert_eq!(ev[0].outcome, "refused");
}

#[tokio::test]
async fn virus_yields_the_virus_notice_and_quarantine() {
    let mut m = good_mail();
    m.body = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*\r\n".into();
    let h = harness(
        MarkerAntivirus::eicar(),
        Policy::default(),
        TestStore::new(),
    )
    .await;
    let (_, status) = submit(&h, &m).await;
    assert_eq!(status, Status::Discard);
    let n = notices(&h);
    assert_eq!(n.len(), 1);
    assert!(n[0].1.security_flag, "X-VerificaSicurezza: errore");
    assert_eq!(n[0].1.daticert.errore.as_str(), "virus");
    assert_eq!(
        n[0].1.daticert.errore_esteso.as_deref(),
        Some("Eicar-Test-Signature")
    );
    let q = h.store.quarantined(PEC_ID).unwrap();
    assert_eq!(q.len(), 1);
    assert!(String::from_utf8_lossy(&q[0]).contains("EICAR-STANDARD-ANTIVIRUS-TEST-FILE"));
    let kinds: Vec<_> = h
        .store
        .events_for(PEC_ID)
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Issued(MessageKind::NonAcceptanceVirus),
            EventKind::Quarantined
        ]
    );
}

#[tokio::test]
async fn reject_in_smtp_policy_also_rejects_after_the_notice() {
    let policy = Policy {
        reject_in_smtp: true,
        ..Policy::default()
    };
    let h = harness(MarkerAntivirus::eicar(), policy, TestStore::new()).await;
    let mut m = good_mail();
    m.headers.push(("Bcc", "eve@pec.example.net".into()));
    let (_, status) = submit(&h, &m).await;
    assert_reply(&status, "550 5.7.0");
    assert_eq!(
        notices(&h).len(),
        1,
        "the signed notice is still the answer"
    );
}

#[tokio::test]
async fn unauthorised_sender_and_missing_login_are_rejected_without_notice() {
    let store = TestStore::new();
    store
        .allow_sender("alice@pec.example.it", "alice.rossi@pec.example.it")
        .unwrap();
    let h = harness(MarkerAntivirus::eicar(), Policy::default(), store).await;
    // alice may only send as alice.rossi now.
    let (_, status) = submit(&h, &good_mail()).await;
    assert_reply(&status, "550 5.7.1");
    let mut m = good_mail();
    m.login = None;
    let (_, status) = submit(&h, &m).await;
    assert_reply(&status, "530 5.7.0");
    assert!(
        h.injector.messages().is_empty(),
        "no notice to an address the user does not own"
    );
}

#[tokio::test]
async fn far_over_the_size_limit_is_rejected_in_smtp() {
    let policy = Policy {
        hard_size_limit: 1000,
        ..Policy::default()
    };
    let h = harness(MarkerAntivirus::eicar(), policy, TestStore::new()).await;
    let mut m = good_mail();
    m.body = "x".repeat(2000);
    let (_, status) = submit(&h, &m).await;
    assert_reply(&status, "552 5.3.4");
    assert!(h.injector.messages().is_empty());
    let all = h.store.all_events();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].kind, EventKind::RejectedInSmtp);
}

/// The text of a tempfail names the part that is down, never the error behind it (which is
/// logged): the end user sees it, and "attempt to write a readonly database" helps nobody
/// there (issue 18).
fn assert_plain_tempfail(status: &Status, expected: &str) {
    assert_reply(status, "451 4.3.0");
    let Status::Tempfail { message } = status else {
        panic!("{status:?}")
    };
    let text = message.as_ref().unwrap().to_string_lossy().into_owned();
    assert_eq!(text, format!("451 4.3.0 {expected}"));
}

#[tokio::test]
async fn every_unavailable_dependency_is_a_tempfail() {
    // Antivirus down.
    let mut av = MarkerAntivirus::eicar();
    av.unreachable = true;
    let h = harness(av, Policy::default(), TestStore::new()).await;
    assert_plain_tempfail(
        &submit(&h, &good_mail()).await.1,
        "PEC: antivirus non disponibile",
    );
    assert!(h.store.pending_acceptance(PEC_ID).unwrap().is_none());

    // Store down.
    let store = TestStore::new();
    store.fail.store(true, Ordering::SeqCst);
    let h = harness(MarkerAntivirus::eicar(), Policy::default(), store).await;
    let status = submit(&h, &good_mail()).await.1;
    assert_reply(&status, "451 4.3.0");
    let Status::Tempfail { message } = &status else {
        panic!("{status:?}")
    };
    let text = message.as_ref().unwrap().to_string_lossy().into_owned();
    assert!(
        text.ends_with(" non disponibile") && !text.contains('('),
        "no internals in the reply: {text}"
    );

    // Signing token unavailable: nothing can be wrapped, nothing is recorded.
    let h = harness_with(
        MarkerAntivirus::eicar(),
        Policy::default(),
        TestStore::new(),
        true,
    )
    .await;
    assert_reply(&submit(&h, &good_mail()).await.1, "451 4.3.0");
    assert!(h.store.pending_acceptance(PEC_ID).unwrap().is_none());
    assert!(h.store.all_events().is_empty());
}

/// Postfix reinjection down while a notice must go out: the notice was staged with its
/// record, so the refusal stands (a 4xx would make the client submit again and get a
/// second notice); the outbox sweep sends the staged notice, once.
#[tokio::test]
async fn a_notice_not_injected_is_staged_and_the_refusal_stands() {
    let h = harness(
        MarkerAntivirus::eicar(),
        Policy::default(),
        TestStore::new(),
    )
    .await;
    *h.injector.fail_with.lock().unwrap() = Some(InjectError::Temporary {
        addr: "127.0.0.1:10027".into(),
        reason: "connection refused".into(),
    });
    let mut m = good_mail();
    m.headers.push(("Bcc", "eve@pec.example.net".into()));
    assert_eq!(
        submit(&h, &m).await.1,
        Status::Discard,
        "refused, not a 4xx"
    );
    assert!(h.injector.messages().is_empty());
    let events = h.store.events_for(PEC_ID).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].kind,
        EventKind::Issued(MessageKind::NonAcceptance)
    );
    let staged = h
        .store
        .outbound(&pec::store::outbox::non_acceptance_key(PEC_ID))
        .unwrap()
        .expect("staged");
    assert_eq!(events[0].related_ids, vec![staged.message_id.clone()]);
    *h.injector.fail_with.lock().unwrap() = None;
    let store: Arc<dyn Store> = h.store.clone();
    let clock = FixedClock::new(Instant::from_unix(staged.created_at.unix() + 31));
    assert_eq!(
        pec::outbox::sweep_once(&store, &*h.injector, &clock)
            .await
            .unwrap(),
        1
    );
    assert_eq!(h.injector.messages().len(), 1);
    assert_eq!(
        pec::outbox::sweep_once(&store, &*h.injector, &clock)
            .await
            .unwrap(),
        0
    );
}

/// A submission from alice to bob carrying `raw` (a whole message built by
/// [`pec::access::testfiles`]): its header fields and body as the milter gets them.
fn mail_of(raw: &[u8]) -> Mail {
    let text = String::from_utf8(raw.to_vec()).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut headers: Vec<(&'static str, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().unwrap();
            last.1.push('\n');
            last.1.push_str(line);
        } else {
            let (n, v) = line.split_once(':').unwrap();
            headers.push((
                Box::leak(n.to_string().into_boxed_str()),
                v.trim_start().into(),
            ));
        }
    }
    Mail {
        login: Some("alice@pec.example.it"),
        mail_from: "alice@pec.example.it",
        rcpt: vec!["bob@pec.example.net"],
        headers,
        body: body.to_string(),
    }
}

#[tokio::test]
async fn a_blocked_attachment_yields_a_non_acceptance_naming_it() {
    use pec::access::testfiles::{message, pe, zip, Attachment, ZipFile};
    let archive = zip(&[
        ZipFile::deflated("leggimi.txt", b"ciao"),
        ZipFile::deflated("setup.exe", &pe()),
    ]);
    let raw = message(
        "programma",
        &[Attachment::new("archivio.zip", "application/zip", &archive)],
    );
    let h = refused(mail_of(&raw), "archivio.zip > setup.exe").await;
    let n = notices(&h);
    assert!(!n[0].1.security_flag, "a blocked file is no virus");
    assert_eq!(n[0].1.daticert.errore.as_str(), "altro");
    // a program renamed .pdf: refused by its content
    let raw = message(
        "fattura",
        &[Attachment::new("fattura.pdf", "application/pdf", &pe())],
    );
    refused(mail_of(&raw), "fattura.pdf (il contenuto è un programma").await;
}

#[tokio::test]
async fn a_virus_in_a_nested_part_is_a_virus_not_a_blocked_file() {
    use pec::access::testfiles::{forward, message, pe, Attachment};
    // the forwarded message carries both a program and the test virus (in a text part the
    // double can see): the virus decides
    let inner = message(
        "interno",
        &[
            Attachment::new("setup.exe", "application/octet-stream", &pe()),
            Attachment::new("nota.txt", "text/plain", b"x"),
        ],
    );
    let inner = String::from_utf8(inner).unwrap().replace(
        "In allegato.",
        "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*",
    );
    let raw = forward("inoltrato.eml", inner.as_bytes());
    let h = harness(
        MarkerAntivirus::eicar(),
        Policy::default(),
        TestStore::new(),
    )
    .await;
    let (_, status) = submit(&h, &mail_of(&raw)).await;
    assert_eq!(status, Status::Discard);
    let n = notices(&h);
    assert_eq!(n.len(), 1);
    assert!(n[0].1.security_flag, "X-VerificaSicurezza: errore");
    assert_eq!(n[0].1.daticert.errore.as_str(), "virus");
    assert_eq!(h.store.quarantined(PEC_ID).unwrap().len(), 1);
}

/// The readable text of an accepted envelope's rewrite, decoded enough to search: quoted-
/// printable soft breaks joined.
fn envelope_text(rewritten: &[u8]) -> String {
    String::from_utf8_lossy(rewritten).replace("=\r\n", "")
}

#[tokio::test]
async fn macros_and_encrypted_attachments_are_accepted_with_a_warning() {
    use pec::access::testfiles::{docx, message, zip, Attachment, ZipFile};
    let secret = zip(&[ZipFile::encrypted("estratto.pdf", b"\x01\x02")]);
    let raw = message(
        "bilancio",
        &[
            Attachment::new("bilancio.docm", "application/octet-stream", &docx(true)),
            Attachment::new("riservato.zip", "application/zip", &secret),
        ],
    );
    let m = mail_of(&raw);
    let h = harness(
        MarkerAntivirus::eicar(),
        Policy::default(),
        TestStore::new(),
    )
    .await;
    let (actions, status) = submit(&h, &m).await;
    assert_eq!(status, Status::Accept);
    assert!(
        actions.iter().any(|a| matches!(a, EomAction::AddHeader { name, value }
            if name.as_c_str() == c"X-Pec-Attachment-Warning" && value.as_c_str() == c" macro, encrypted")),
        "{actions:?}"
    );
    let rewritten = queued(&m, &actions);
    // still a valid, signed transport envelope, with the courtesy notice in its text
    match classify(&rewritten, h.index.trust(), at()) {
        Classification::TransportEnvelope(e) => assert_eq!(e.message_id.as_deref(), Some(PEC_ID)),
        other => panic!("not a valid envelope: {other:?}"),
    }
    let text = envelope_text(&rewritten);
    assert!(
        text.contains("Attenzione: il messaggio contiene allegati con macro"),
        "{text}"
    );
    assert!(text.contains("- bilancio.docm\r\n"), "{text}");
    assert!(
        text.contains("- riservato.zip > estratto.pdf\r\n"),
        "{text}"
    );
    assert!(h.store.pending_acceptance(PEC_ID).unwrap().is_some());
}

#[tokio::test]
async fn without_cautions_the_envelope_has_no_warning() {
    use pec::access::testfiles::{docx, message, pdf, Attachment};
    let raw = message(
        "contratto",
        &[
            Attachment::new("contratto.docx", "application/octet-stream", &docx(false)),
            Attachment::new("contratto.pdf", "application/pdf", &pdf(false)),
        ],
    );
    let m = mail_of(&raw);
    let h = harness(
        MarkerAntivirus::eicar(),
        Policy::default(),
        TestStore::new(),
    )
    .await;
    let (actions, status) = submit(&h, &m).await;
    assert_eq!(status, Status::Accept);
    assert!(!actions
        .iter()
        .any(|a| matches!(a, EomAction::AddHeader { name, .. }
        if name.as_c_str() == c"X-Pec-Attachment-Warning")));
    assert!(!envelope_text(&queued(&m, &actions)).contains("Attenzione:"));
}

// ---- Per-mailbox settings and the provider-wide suspension (issue 21 points 2, 3) ----

fn with_settings(s: pec::store::MailboxSettings) -> TestStore {
    let store = TestStore::new();
    store
        .set_mailbox_settings("Alice@pec.example.it", &s)
        .unwrap();
    store
}

#[tokio::test]
async fn the_mailbox_default_receipt_type_applies_without_x_tiporicevuta() {
    use pec::message::kind::ReceiptType;
    let settings = pec::store::MailboxSettings {
        receipt_type: Some(ReceiptType::Breve),
        ..Default::default()
    };
    let h = harness(
        MarkerAntivirus::eicar(),
        Policy::default(),
        with_settings(settings.clone()),
    )
    .await;
    let (actions, status) = submit(&h, &good_mail()).await;
    assert_eq!(status, Status::Accept);
    let pending = h.store.pending_acceptance(PEC_ID).unwrap().unwrap();
    assert_eq!(pending.cert.requested, ReceiptType::Breve);
    assert!(actions.iter().any(|a| matches!(a, EomAction::AddHeader { name, value } if name.as_c_str() == c"X-TipoRicevuta" && value.as_c_str() == c" breve")), "{actions:?}");

    // The header the sender set wins over the mailbox's default.
    let h = harness(
        MarkerAntivirus::eicar(),
        Policy::default(),
        with_settings(settings),
    )
    .await;
    let mut m = good_mail();
    m.headers.push(("X-TipoRicevuta", "sintetica".into()));
    assert_eq!(submit(&h, &m).await.1, Status::Accept);
    let pending = h.store.pending_acceptance(PEC_ID).unwrap().unwrap();
    assert_eq!(pending.cert.requested, ReceiptType::Sintetica);

    // Without a setting: completa, as before.
    let h = harness(
        MarkerAntivirus::eicar(),
        Policy::default(),
        TestStore::new(),
    )
    .await;
    assert_eq!(submit(&h, &good_mail()).await.1, Status::Accept);
    let pending = h.store.pending_acceptance(PEC_ID).unwrap().unwrap();
    assert_eq!(pending.cert.requested, ReceiptType::Completa);
}

/// Submits `m` to a harness on `store` and expects one non-acceptance whose reason
/// contains `expect`.
async fn refused_on(store: TestStore, m: &Mail, expect: &str) -> Harness {
    let h = harness(MarkerAntivirus::eicar(), Policy::default(), store).await;
    let (actions, status) = submit(&h, m).await;
    assert_eq!(status, Status::Discard, "{expect}");
    assert!(actions.is_empty());
    let n = notices(&h);
    assert_eq!(n.len(), 1, "{expect}: one notice");
    assert_eq!(n[0].0, Ricevuta::NonAccettazione);
    let reason = n[0].1.daticert.errore_esteso.clone().unwrap_or_default();
    assert!(
        reason.contains(expect),
        "reason {reason:?} should mention {expect:?}"
    );
    assert!(h.store.pending_acceptance(PEC_ID).unwrap().is_none());
    h
}

#[tokio::test]
async fn mailbox_limits_override_the_providers() {
    let few = pec::store::MailboxSettings {
        max_recipients: Some(1),
        ..Default::default()
    };
    refused_on(with_settings(few), &good_mail(), "superiore al limite di 1").await;
    let small = pec::store::MailboxSettings {
        max_total_size: Some(100),
        ..Default::default()
    };
    refused_on(
        with_settings(small),
        &good_mail(),
        "superiore al limite di 100 byte",
    )
    .await;
    // Another mailbox keeps the provider's limits.
    let store = TestStore::new();
    store
        .set_mailbox_settings(
            "bob@pec.example.it",
            &pec::store::MailboxSettings {
                max_recipients: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    let h = harness(MarkerAntivirus::eicar(), Policy::default(), store).await;
    assert_eq!(submit(&h, &good_mail()).await.1, Status::Accept);
}

#[tokio::test]
async fn over_the_daily_quota_a_non_acceptance() {
    let quota = pec::store::MailboxSettings {
        daily_quota: Some(2),
        ..Default::default()
    };
    let h = harness(
        MarkerAntivirus::eicar(),
        Policy::default(),
        with_settings(quota),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(submit(&h, &good_mail()).await.1, Status::Accept);
    }
    let (_, status) = submit(&h, &good_mail()).await;
    assert_eq!(status, Status::Discard);
    let n = notices(&h);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].0, Ricevuta::NonAccettazione);
    let reason = n[0].1.daticert.errore_esteso.clone().unwrap_or_default();
    assert!(
        reason.contains("limite di 2 messaggi nelle 24 ore"),
        "{reason}"
    );
    // Acceptances older than 24 hours do not count.
    let store = TestStore::new();
    store
        .set_mailbox_settings(
            "alice@pec.example.it",
            &pec::store::MailboxSettings {
                daily_quota: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    let mut old = h.store.pending_acceptance(PEC_ID).unwrap().unwrap();
    old.at = Instant::from_unix(at().unix() - 24 * 3600 - 1);
    old.pec_id = "opec1.yesterday@pec.example.it".into();
    store.record_accepted(&old).unwrap();
    let h = harness(MarkerAntivirus::eicar(), Policy::default(), store).await;
    let mut m = good_mail();
    m.headers[5].1 = "<2@client.example.it>".into();
    assert_eq!(submit(&h, &m).await.1, Status::Accept);
}

#[tokio::test]
async fn a_mailbox_that_may_not_send_gets_a_non_acceptance() {
    use pec::store::{MailboxSettings, MailboxState, Retired};
    for (state, expect) in [
        (MailboxState::Suspended, "casella sospesa"),
        (MailboxState::ReadOnly, "casella in sola lettura"),
    ] {
        let s = MailboxSettings {
            state,
            ..Default::default()
        };
        refused_on(with_settings(s), &good_mail(), expect).await;
    }
    let store = TestStore::new();
    store
        .retire_mailbox(&Retired {
            mailbox: "alice@pec.example.it".into(),
            holder: "RSSMRA80A01H501U".into(),
            at: at(),
        })
        .unwrap();
    refused_on(store, &good_mail(), "casella cessata").await;
    // A login that may not use the address is still rejected in SMTP, without a notice.
    let s = MailboxSettings {
        state: MailboxState::Suspended,
        ..Default::default()
    };
    let h = harness(
        MarkerAntivirus::eicar(),
        Policy::default(),
        with_settings(s),
    )
    .await;
    let mut m = good_mail();
    m.login = Some("mallory@pec.example.it");
    let (_, status) = submit(&h, &m).await;
    assert_reply(&status, "550 5.7.1");
    assert!(notices(&h).is_empty());
}

#[tokio::test]
async fn a_provider_suspension_tempfails_every_submission_until_resumed() {
    use pec::store::{LogEvent, Outage, OutageKind};
    let store = TestStore::new();
    let event = |kind| LogEvent {
        pec_id: String::new(),
        at: at(),
        kind,
        sender: String::new(),
        recipients: Vec::new(),
        subject: String::new(),
        related_ids: Vec::new(),
        provider: "P".into(),
        queue_id: None,
        outcome: "ok".into(),
        reason: None,
    };
    let outage = Outage {
        kind: OutageKind::Incident,
        reason: "guasto al disco\r\nsecondo rigo".into(),
        start: at(),
        end: None,
    };
    assert!(store
        .suspend_provider(&outage, &event(EventKind::ProviderSuspended))
        .unwrap());
    let h = harness(MarkerAntivirus::eicar(), Policy::default(), store).await;
    let (actions, status) = submit(&h, &good_mail()).await;
    assert!(actions.is_empty());
    assert_reply(&status, "451 4.3.2");
    let Status::Tempfail { message } = &status else {
        panic!("{status:?}")
    };
    let text = message.as_ref().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        text,
        "451 4.3.2 PEC: servizio temporaneamente sospeso (guasto al disco  secondo rigo); \
         riprovare piu' tardi"
    );
    assert!(h.injector.messages().is_empty());
    assert!(h.store.pending_acceptance(PEC_ID).unwrap().is_none());
    // Resumed: the next submission goes through.
    assert!(h
        .store
        .resume_provider(&event(EventKind::ProviderResumed))
        .unwrap()
        .is_some());
    assert_eq!(submit(&h, &good_mail()).await.1, Status::Accept);
}
